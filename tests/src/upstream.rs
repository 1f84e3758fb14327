//! Upstream servers the router forwards to: in-process tokio tasks on 127.0.0.1:<free port>.
//!
//! - [`Upstream::echo`]: answers 200 with a JSON body describing the request it received
//!   (`service`, `method`, `path` with query, `headers` lower-cased, `duplicate_headers`,
//!   `version`, `body_len`); a WebSocket upgrade request is accepted and the socket echoes text and
//!   binary frames (this is the ttyd stand-in); the paths of WebSocket requests are recorded.
//! - [`Upstream::slow`]: the same, after a delay.
//! - [`Upstream::black_hole`]: accepts connections, reads whatever comes, never answers.
//! - [`Upstream::refuse_upgrade`]: the echo, except that WebSocket handshakes get a fixed status
//!   and body instead of a `101`.
//! - [`Upstream::half_close`]: accepts a WebSocket handshake, then reads raw bytes until the peer
//!   shuts down its write side, records them, and only then writes [`HALF_CLOSE_REPLY`] (an
//!   unmasked text frame) and closes.
//! - [`Upstream::flood`]: accepts a WebSocket handshake, then writes binary frames of
//!   [`FLOOD_FRAME`] bytes (frame `i` filled with [`flood_byte`]`(i)`) as fast as the connection
//!   takes them, up to a total.
//!
//! The echo's WebSocket records the close code of every close frame it receives
//! ([`Upstream::ws_closes`]), and a text message `close-with:<code>` makes it start the close
//! handshake itself with that code.
//!
//! Every server records what it saw; [`Upstream::wait_for_requests`] lets a test wait for a request
//! to have arrived instead of sleeping.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// One request as an upstream received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query, exactly as received.
    pub path: String,
    /// Lower-cased names, in arrival order (duplicates kept).
    pub headers: Vec<(String, String)>,
    pub websocket: bool,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Copy, Debug)]
enum Behaviour {
    Echo,
    Slow(Duration),
    BlackHole,
    /// Every plain request gets this HTML page; WebSocket handshakes get the echo.
    Page(&'static str),
    /// WebSocket handshakes get this status and body; other requests the echo.
    RefuseUpgrade(u16, &'static str),
    /// WebSocket handshakes: raw bytes read until EOF, then [`HALF_CLOSE_REPLY`].
    HalfClose,
    /// WebSocket handshakes: binary frames, this many bytes of payload in all.
    Flood(u64),
}

/// What [`Upstream::half_close`] writes once it has read EOF: an unmasked text frame
/// `after-eof`.
pub const HALF_CLOSE_REPLY: &[u8] = b"\x81\x09after-eof";

/// The payload size of each frame [`Upstream::flood`] writes.
pub const FLOOD_FRAME: usize = 1 << 20;

/// The byte frame `i` of a flood is filled with.
pub fn flood_byte(i: u64) -> u8 {
    u8::try_from(i % 251).unwrap_or(0)
}

#[derive(Default)]
struct State {
    requests: Mutex<Vec<Seen>>,
    connections: AtomicUsize,
    changed: Notify,
    /// Close codes of the close frames the WebSocket handlers received (`None`: no code).
    ws_closes: Mutex<Vec<Option<u16>>>,
    /// [`Behaviour::HalfClose`]: the bytes each connection read before EOF.
    half_closed: Mutex<Vec<Vec<u8>>>,
    /// [`Behaviour::Flood`]: payload bytes written so far, all connections together.
    flooded: AtomicU64,
}

impl State {
    fn record(&self, seen: Seen) {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(seen);
        self.changed.notify_waiters();
    }
}

/// A running upstream server; stopped (its accept loop aborted) on drop.
pub struct Upstream {
    pub name: String,
    pub port: u16,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// An echo server (also a WebSocket echo server) named `name`.
    pub async fn echo(name: &str) -> Upstream {
        Self::start(name, Behaviour::Echo).await
    }

    /// An echo server that waits `delay` before answering each request.
    pub async fn slow(name: &str, delay: Duration) -> Upstream {
        Self::start(name, Behaviour::Slow(delay)).await
    }

    /// Serves `html` (text/html) for every request and echoes WebSockets: a page whose own
    /// script talks to the workspace, for the browser tests.
    pub async fn page(name: &str, html: &'static str) -> Upstream {
        Self::start(name, Behaviour::Page(html)).await
    }

    /// Accepts connections and never answers.
    pub async fn black_hole(name: &str) -> Upstream {
        Self::start(name, Behaviour::BlackHole).await
    }

    /// The echo, except that WebSocket handshakes get `status` with `body` (text/plain).
    pub async fn refuse_upgrade(name: &str, status: u16, body: &'static str) -> Upstream {
        Self::start(name, Behaviour::RefuseUpgrade(status, body)).await
    }

    /// Accepts WebSocket handshakes; reads until EOF, then writes [`HALF_CLOSE_REPLY`].
    pub async fn half_close(name: &str) -> Upstream {
        Self::start(name, Behaviour::HalfClose).await
    }

    /// Accepts WebSocket handshakes and writes `total` bytes of binary frames on each.
    pub async fn flood(name: &str, total: u64) -> Upstream {
        Self::start(name, Behaviour::Flood(total)).await
    }

    async fn start(name: &str, behaviour: Behaviour) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream on 127.0.0.1:0");
        let port = listener.local_addr().expect("upstream local_addr").port();
        let state = Arc::new(State::default());
        let task = tokio::spawn(accept_loop(
            listener,
            name.to_owned(),
            behaviour,
            state.clone(),
        ));
        Upstream {
            name: name.to_owned(),
            port,
            state,
            task,
        }
    }

    /// Every request received so far (HTTP requests and WebSocket handshakes).
    pub fn requests(&self) -> Vec<Seen> {
        self.state
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Paths (with query) of the WebSocket handshakes received so far.
    pub fn ws_paths(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|s| s.websocket)
            .map(|s| s.path)
            .collect()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// The close codes of the close frames received by WebSockets so far, in order (`None`: a
    /// close frame without a code).
    pub fn ws_closes(&self) -> Vec<Option<u16>> {
        self.state
            .ws_closes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Wait (bounded) until at least `n` close frames have been received; returns their codes.
    pub async fn wait_for_ws_closes(&self, n: usize, bound: Duration) -> Vec<Option<u16>> {
        self.wait_until(bound, &format!("{n} WebSocket close frame(s)"), || {
            self.ws_closes().len() >= n
        })
        .await;
        self.ws_closes()
    }

    /// [`Upstream::half_close`]: what each connection read before EOF, for those that saw it.
    pub fn half_closed(&self) -> Vec<Vec<u8>> {
        self.state
            .half_closed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Wait (bounded) until `n` connections of [`Upstream::half_close`] have read EOF.
    pub async fn wait_for_half_closed(&self, n: usize, bound: Duration) -> Vec<Vec<u8>> {
        self.wait_until(bound, &format!("EOF on {n} WebSocket(s)"), || {
            self.half_closed().len() >= n
        })
        .await;
        self.half_closed()
    }

    /// [`Upstream::flood`]: payload bytes written so far.
    pub fn flooded(&self) -> u64 {
        self.state.flooded.load(Ordering::SeqCst)
    }

    /// Wait (bounded) until at least `n` HTTP requests (or WebSocket handshakes) have arrived.
    pub async fn wait_for_requests(&self, n: usize, bound: Duration) {
        self.wait_until(bound, &format!("{n} request(s)"), || {
            self.requests().len() >= n
        })
        .await;
    }

    /// Wait (bounded) until at least `n` TCP connections have been accepted.
    pub async fn wait_for_connections(&self, n: usize, bound: Duration) {
        self.wait_until(bound, &format!("{n} connection(s)"), || {
            self.connections() >= n
        })
        .await;
    }

    async fn wait_until(&self, bound: Duration, what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + bound;
        loop {
            let notified = self.state.changed.notified();
            if done() {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "upstream {} did not see {what} within {bound:?} (saw {} request(s), {} connection(s))",
                    self.name,
                    self.requests().len(),
                    self.connections()
                );
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), notified).await;
        }
    }
}

async fn accept_loop(listener: TcpListener, name: String, behaviour: Behaviour, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        state.connections.fetch_add(1, Ordering::SeqCst);
        state.changed.notify_waiters();
        let name = name.clone();
        let state = state.clone();
        tokio::spawn(async move {
            match behaviour {
                Behaviour::BlackHole => {
                    let mut stream = stream;
                    let mut buf = [0u8; 4096];
                    // Read and discard until the peer goes away; never write a byte.
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                }
                Behaviour::Echo
                | Behaviour::Slow(_)
                | Behaviour::Page(_)
                | Behaviour::RefuseUpgrade(..)
                | Behaviour::HalfClose
                | Behaviour::Flood(_) => {
                    let service = service_fn(move |req| {
                        let name = name.clone();
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(req, &name, behaviour, &state).await) }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                }
            }
        });
    }
}

fn is_websocket_upgrade(req: &Request<Incoming>) -> bool {
    let has_token = |name: &str, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    has_token("upgrade", "websocket")
        && has_token("connection", "upgrade")
        && req.headers().contains_key("sec-websocket-key")
}

async fn handle(
    req: Request<Incoming>,
    name: &str,
    behaviour: Behaviour,
    state: &Arc<State>,
) -> Response<Full<Bytes>> {
    let delay = match behaviour {
        Behaviour::Slow(d) => Some(d),
        _ => None,
    };
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| req.uri().to_string());
    let version = format!("{:?}", req.version());
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let websocket = is_websocket_upgrade(&req);
    state.record(Seen {
        method: method.clone(),
        path: path.clone(),
        headers: headers.clone(),
        websocket,
    });

    if websocket {
        if let Behaviour::RefuseUpgrade(status, body) = behaviour {
            let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
            *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
            resp.headers_mut()
                .insert("content-type", HeaderValue::from_static("text/plain"));
            return resp;
        }
        return accept_websocket(req, behaviour, state.clone());
    }
    if let Behaviour::Page(html) = behaviour {
        let mut resp = Response::new(Full::new(Bytes::from_static(html.as_bytes())));
        resp.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        return resp;
    }

    let body_len = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().len(),
        Err(_) => 0,
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }

    let mut map = serde_json::Map::new();
    let mut duplicates = Vec::new();
    for (n, v) in &headers {
        if map.contains_key(n) {
            if !duplicates.contains(n) {
                duplicates.push(n.clone());
            }
            if let Some(serde_json::Value::String(prev)) = map.get_mut(n) {
                prev.push_str(", ");
                prev.push_str(v);
            }
        } else {
            map.insert(n.clone(), serde_json::Value::String(v.clone()));
        }
    }
    let body = serde_json::json!({
        "service": name,
        "method": method,
        "path": path,
        "headers": map,
        "duplicate_headers": duplicates,
        "version": version,
        "body_len": body_len,
    });
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(name) {
        resp.headers_mut().insert("x-upstream", v);
    }
    resp
}

fn accept_websocket(
    req: Request<Incoming>,
    behaviour: Behaviour,
    state: Arc<State>,
) -> Response<Full<Bytes>> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"missing key")));
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        return resp;
    };
    let accept = derive_accept_key(key.as_bytes());
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        match behaviour {
            Behaviour::HalfClose => return half_close(TokioIo::new(upgraded), &state).await,
            Behaviour::Flood(total) => return flood(TokioIo::new(upgraded), total, &state).await,
            _ => {}
        }
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            match msg {
                Message::Text(ref t) if t.starts_with("close-with:") => {
                    let code: u16 = t["close-with:".len()..].trim().parse().unwrap_or(1000);
                    let frame = CloseFrame {
                        code: CloseCode::from(code),
                        reason: "closed by the upstream".into(),
                    };
                    // Then the loop reads the peer's answer (recorded below).
                    if ws.close(Some(frame)).await.is_err() {
                        break;
                    }
                }
                Message::Text(_) | Message::Binary(_) => {
                    if ws.send(msg).await.is_err() {
                        break;
                    }
                }
                Message::Close(frame) => {
                    state
                        .ws_closes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(frame.map(|f| u16::from(f.code)));
                    state.changed.notify_waiters();
                    // The answer tungstenite queued (when the peer started the handshake) goes
                    // out on a flush; `close` would refuse to write after a close.
                    let _ = ws.flush().await;
                    break;
                }
                // Pings are answered by tungstenite itself on the next flush.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
                    let _ = ws.flush().await;
                }
            }
        }
        let _ = ws.close(None).await;
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert("upgrade", HeaderValue::from_static("websocket"));
    h.insert("connection", HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    resp
}

/// [`Behaviour::HalfClose`] after the `101`: everything until EOF is recorded, then the reply
/// goes out on the half-closed connection.
async fn half_close<S>(mut io: S, state: &State)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match io.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => return,
        }
    }
    state
        .half_closed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(got);
    state.changed.notify_waiters();
    if io.write_all(HALF_CLOSE_REPLY).await.is_ok() && io.flush().await.is_ok() {
        let _ = io.shutdown().await;
    }
}

/// [`Behaviour::Flood`] after the `101`: binary frames as fast as the connection takes them,
/// then whatever the peer sends is read until it goes away.
async fn flood<S>(mut io: S, total: u64, state: &State)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let len = FLOOD_FRAME as u64;
    let mut header = vec![0x82, 127];
    header.extend_from_slice(&len.to_be_bytes());
    let mut frame = vec![0u8; header.len() + FLOOD_FRAME];
    frame[..header.len()].copy_from_slice(&header);
    let mut i = 0u64;
    while i * len < total {
        frame[header.len()..].fill(flood_byte(i));
        if io.write_all(&frame).await.is_err() {
            return;
        }
        state.flooded.fetch_add(len, Ordering::SeqCst);
        i += 1;
    }
    let _ = io.flush().await;
    let mut buf = [0u8; 4096];
    while let Ok(n) = io.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}
