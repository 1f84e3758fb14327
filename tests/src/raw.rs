//! Byte-level HTTP/1.1 on both sides of the router.
//!
//! - [`RawUpstream`]: a scripted TCP server on 127.0.0.1:0. For every request it reads (the head,
//!   then the body framed by `Content-Length` or `Transfer-Encoding: chunked`), it records the raw
//!   head bytes, the body bytes as they came on the wire and decoded, asks the test's script for a
//!   [`Reply`] and writes that reply's byte pieces exactly as given, one `write` + flush each, then
//!   keeps the connection for the next request or closes it. It counts the TCP connections it
//!   accepted.
//! - [`RawConn`]: one client connection (plain TCP or TLS with ALPN http/1.1) on which a test writes
//!   exact bytes and reads responses framed as RFC 9112 §6.3 says (no body for HEAD, 1xx, 204,
//!   304; chunked, decoded on the client side with extensions and trailers kept; Content-Length;
//!   else until the connection closes), interim 1xx responses collected separately.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::client::{tls_connect, BoxError, Trust, ALPN_H1};

/// Where `needle` first occurs in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `name: value` pairs of a head (the first line skipped), names as sent.
fn parse_header_lines(head: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(head);
    text.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_owned(), v.trim().to_owned()))
        .collect()
}

fn header_of<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    })
}

/// A byte source the chunked decoder and the framers read from: a buffer plus an `AsyncRead`.
struct Reader<'a, S> {
    io: &'a mut S,
    buf: &'a mut Vec<u8>,
}

impl<S: AsyncRead + Unpin> Reader<'_, S> {
    /// Read more bytes into the buffer; `false` at end of stream.
    async fn fill(&mut self) -> Result<bool, BoxError> {
        let mut chunk = vec![0u8; 64 * 1024];
        let n = self.io.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// Take bytes up to and including the first `delim`.
    async fn take_until(&mut self, delim: &[u8], what: &str) -> Result<Vec<u8>, BoxError> {
        loop {
            if let Some(i) = find(self.buf, delim) {
                return Ok(self.buf.drain(..i + delim.len()).collect());
            }
            if !self.fill().await? {
                return Err(format!(
                    "stream ended while reading {what}; have {:?}",
                    String::from_utf8_lossy(self.buf)
                )
                .into());
            }
        }
    }

    async fn take_exact(&mut self, n: usize, what: &str) -> Result<Vec<u8>, BoxError> {
        while self.buf.len() < n {
            if !self.fill().await? {
                return Err(format!(
                    "stream ended while reading {what}: have {} of {n} bytes",
                    self.buf.len()
                )
                .into());
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn take_to_end(&mut self) -> Result<Vec<u8>, BoxError> {
        while self.fill().await? {}
        Ok(std::mem::take(self.buf))
    }

    /// A chunked body: (wire bytes, decoded bytes, chunk extensions, trailer lines).
    async fn take_chunked(&mut self) -> Result<Chunked, BoxError> {
        let mut out = Chunked::default();
        loop {
            let line = self.take_until(b"\r\n", "a chunk-size line").await?;
            out.wire.extend_from_slice(&line);
            let text = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
            let (size, ext) = match text.split_once(';') {
                Some((s, e)) => (s.trim().to_owned(), Some(e.to_owned())),
                None => (text.trim().to_owned(), None),
            };
            if let Some(e) = ext {
                out.extensions.push(e);
            }
            let size = usize::from_str_radix(&size, 16)
                .map_err(|e| format!("bad chunk size line {text:?}: {e}"))?;
            out.sizes.push(size);
            if size == 0 {
                loop {
                    let line = self.take_until(b"\r\n", "a trailer line").await?;
                    out.wire.extend_from_slice(&line);
                    if line == b"\r\n" {
                        return Ok(out);
                    }
                    out.trailers
                        .push(String::from_utf8_lossy(&line[..line.len() - 2]).into_owned());
                }
            }
            let data = self.take_exact(size + 2, "chunk data").await?;
            if &data[size..] != b"\r\n" {
                return Err(format!("chunk of {size} bytes not followed by CRLF").into());
            }
            out.wire.extend_from_slice(&data);
            out.decoded.extend_from_slice(&data[..size]);
        }
    }
}

/// A chunked body as read.
#[derive(Clone, Debug, Default)]
pub struct Chunked {
    pub wire: Vec<u8>,
    pub decoded: Vec<u8>,
    /// Chunk sizes in order, the final 0 included.
    pub sizes: Vec<usize>,
    /// The text after `;` on chunk-size lines that had one.
    pub extensions: Vec<String>,
    /// Trailer field lines, as sent.
    pub trailers: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// The scripted upstream

/// One request as the raw upstream read it.
#[derive(Clone, Debug)]
pub struct RawSeen {
    /// Which accepted connection (0-based) it came on.
    pub conn: usize,
    /// The request head exactly as received, final CRLFCRLF included.
    pub head: Vec<u8>,
    /// Body bytes as they came on the wire (chunk framing included).
    pub wire_body: Vec<u8>,
    /// The body, chunked framing removed.
    pub body: Vec<u8>,
    /// Chunk details when the body was chunked.
    pub chunked: Option<Chunked>,
}

impl RawSeen {
    /// The request line (without CRLF).
    pub fn request_line(&self) -> String {
        let text = self.head_text();
        text.split("\r\n").next().unwrap_or_default().to_owned()
    }

    /// The request target from the request line, byte-exact.
    pub fn target(&self) -> String {
        self.request_line()
            .split(' ')
            .nth(1)
            .unwrap_or_default()
            .to_owned()
    }
}

impl Head for RawSeen {
    fn head(&self) -> &[u8] {
        &self.head
    }
}

/// A message head as received: its text and header fields.
pub trait Head {
    /// The head exactly as received.
    fn head(&self) -> &[u8];

    fn head_text(&self) -> String {
        String::from_utf8_lossy(self.head()).into_owned()
    }

    /// Header fields, names as sent, in order.
    fn headers(&self) -> Vec<(String, String)> {
        parse_header_lines(self.head())
    }

    /// First value of `name` (case-insensitive).
    fn header(&self, name: &str) -> Option<String> {
        header_of(&self.headers(), name).map(str::to_owned)
    }

    /// Every value of `name` (case-insensitive), in order.
    fn header_all(&self, name: &str) -> Vec<String> {
        self.headers()
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }
}

/// What the raw upstream writes back for one request.
#[derive(Clone, Debug, Default)]
pub struct Reply {
    /// Written in order, one `write_all` + flush each, with a short pause between pieces so they
    /// leave as separate TCP segments.
    pub pieces: Vec<Vec<u8>>,
    /// Close the connection after writing (whatever the reply said about keep-alive).
    pub close: bool,
    /// The pause between two pieces (5 ms unless set).
    pub pause: Duration,
}

impl Reply {
    /// The whole reply in one write; the connection is kept.
    pub fn bytes(b: impl AsRef<[u8]>) -> Reply {
        Reply {
            pieces: vec![b.as_ref().to_vec()],
            close: false,
            pause: Duration::from_millis(5),
        }
    }

    /// The reply in several writes; the connection is kept.
    pub fn pieces<I, B>(pieces: I) -> Reply
    where
        I: IntoIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        Reply {
            pieces: pieces.into_iter().map(|p| p.as_ref().to_vec()).collect(),
            close: false,
            pause: Duration::from_millis(5),
        }
    }

    /// Pieces `pause` apart (e.g. bytes an upstream sends well after a complete response).
    pub fn with_pause(mut self, pause: Duration) -> Reply {
        self.pause = pause;
        self
    }

    /// Close the connection after this reply.
    pub fn then_close(mut self) -> Reply {
        self.close = true;
        self
    }

    /// `200 OK` with `Content-Length` and `body`.
    pub fn ok(body: &[u8]) -> Reply {
        let mut b =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        b.extend_from_slice(body);
        Reply::bytes(b)
    }
}

type Script = dyn Fn(usize, &RawSeen) -> Reply + Send + Sync;

#[derive(Default)]
struct RawState {
    seen: Mutex<Vec<RawSeen>>,
    connections: AtomicUsize,
    changed: Notify,
}

/// A scripted HTTP/1.1 upstream; stopped on drop.
pub struct RawUpstream {
    pub port: u16,
    state: Arc<RawState>,
    task: JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawUpstream {
    /// Start a server whose reply to the `i`-th request (0-based, counted over all connections)
    /// is `script(i, &seen)`.
    pub async fn start(script: impl Fn(usize, &RawSeen) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind raw upstream on 127.0.0.1:0");
        let port = listener
            .local_addr()
            .expect("raw upstream local_addr")
            .port();
        let state = Arc::new(RawState::default());
        let script: Arc<Script> = Arc::new(script);
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let conn = st.connections.fetch_add(1, Ordering::SeqCst);
                st.changed.notify_waiters();
                tokio::spawn(serve_raw(stream, conn, st.clone(), script.clone()));
            }
        });
        RawUpstream { port, state, task }
    }

    /// Every request answered the same way.
    pub async fn always(reply: Reply) -> Self {
        Self::start(move |_, _| reply.clone()).await
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<RawSeen> {
        self.state
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Wait (bounded) until `n` requests have been read.
    pub async fn wait_for_requests(&self, n: usize, bound: Duration) {
        let deadline = Instant::now() + bound;
        loop {
            let notified = self.state.changed.notified();
            if self.seen().len() >= n {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "raw upstream did not see {n} request(s) within {bound:?}: saw {:?}",
                self.seen()
                    .iter()
                    .map(RawSeen::head_text)
                    .collect::<Vec<_>>()
            );
            let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), notified).await;
        }
    }
}

async fn serve_raw(mut stream: TcpStream, conn: usize, state: Arc<RawState>, script: Arc<Script>) {
    let mut buf = Vec::new();
    loop {
        let mut r = Reader {
            io: &mut stream,
            buf: &mut buf,
        };
        // A peer that goes away between requests is the normal end of a connection.
        let Ok(head) = r.take_until(b"\r\n\r\n", "a request head").await else {
            return;
        };
        let headers = parse_header_lines(&head);
        let (wire_body, body, chunked) = if is_chunked(&headers) {
            match r.take_chunked().await {
                Ok(c) => (c.wire.clone(), c.decoded.clone(), Some(c)),
                Err(_) => return,
            }
        } else {
            let len = header_of(&headers, "content-length")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            match r.take_exact(len, "a request body").await {
                Ok(b) => (b.clone(), b, None),
                Err(_) => return,
            }
        };
        let seen = RawSeen {
            conn,
            head,
            wire_body,
            body,
            chunked,
        };
        let index = {
            let mut g = state.seen.lock().unwrap_or_else(|e| e.into_inner());
            g.push(seen.clone());
            g.len() - 1
        };
        state.changed.notify_waiters();
        let reply = script(index, &seen);
        let count = reply.pieces.len();
        for (i, piece) in reply.pieces.iter().enumerate() {
            if stream.write_all(piece).await.is_err() || stream.flush().await.is_err() {
                return;
            }
            if i + 1 < count {
                // Not a readiness wait: so the pieces leave as separate segments, or (a longer
                // pause) arrive after the router finished with the response.
                tokio::time::sleep(reply.pause).await;
            }
        }
        if reply.close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The raw client connection

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How a response body was delimited on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body by definition (HEAD, 1xx, 204, 304).
    NoBody,
    ContentLength(usize),
    Chunked,
    /// Read until the server closed the connection.
    Close,
}

/// One response read off a [`RawConn`].
#[derive(Clone, Debug)]
pub struct H1Resp {
    pub status: u16,
    /// The status line, e.g. `HTTP/1.1 200 OK`.
    pub status_line: String,
    /// The head exactly as received.
    pub head: Vec<u8>,
    /// Interim (1xx) response heads received before this one, as text.
    pub interim: Vec<String>,
    pub framing: Framing,
    /// Body bytes as on the wire.
    pub wire_body: Vec<u8>,
    /// The body, chunked framing removed.
    pub body: Vec<u8>,
    /// Chunk details when the body was chunked.
    pub chunked: Option<Chunked>,
}

impl Head for H1Resp {
    fn head(&self) -> &[u8] {
        &self.head
    }
}

impl H1Resp {
    /// Does a `Connection` header carry `token`?
    pub fn connection_has(&self, token: &str) -> bool {
        self.header_all("connection")
            .iter()
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Head and (the start of) the body, for messages.
    pub fn summary(&self) -> String {
        let body: String = self.text().chars().take(1000).collect();
        format!("{}{}", self.head_text(), body)
    }
}

/// How a connection ended when the test waited for it to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Orderly end of stream (FIN, or TLS close_notify then FIN).
    Eof,
    /// A read error (reset, or TLS stream ended without close_notify).
    Error(String),
    /// Bytes arrived instead.
    Data(Vec<u8>),
    /// Still open after the bound.
    Open,
}

/// One client connection to the router.
pub struct RawConn {
    io: Box<dyn Io>,
    buf: Vec<u8>,
    pub bound: Duration,
}

/// Generous bound for "answers rather than hangs".
pub const RAW_BOUND: Duration = Duration::from_secs(10);

impl RawConn {
    /// Plain TCP to 127.0.0.1:`port`.
    pub async fn plain(port: u16) -> RawConn {
        let tcp = tokio::time::timeout(RAW_BOUND, TcpStream::connect(("127.0.0.1", port)))
            .await
            .unwrap_or_else(|_| panic!("connect 127.0.0.1:{port}: timed out"))
            .unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"));
        let _ = tcp.set_nodelay(true);
        RawConn {
            io: Box::new(tcp),
            buf: Vec::new(),
            bound: RAW_BOUND,
        }
    }

    /// TLS (SNI `sni`, ALPN http/1.1, any certificate) to 127.0.0.1:`port`.
    pub async fn tls(port: u16, sni: &str) -> RawConn {
        let tls = tls_connect(port, sni, ALPN_H1, &Trust::any())
            .await
            .unwrap_or_else(|e| panic!("TLS connect 127.0.0.1:{port} SNI {sni}: {e}"));
        RawConn {
            io: Box::new(tls),
            buf: Vec::new(),
            bound: RAW_BOUND,
        }
    }

    /// Write `bytes` as they are.
    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        let bytes = bytes.as_ref();
        let fut = async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        };
        match tokio::time::timeout(self.bound, fut).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("write of {} bytes to the router failed: {e}", bytes.len()),
            Err(_) => panic!("write of {} bytes to the router timed out", bytes.len()),
        }
    }

    /// Write `bytes`, returning a write error instead of panicking.
    pub async fn try_send(&mut self, bytes: impl AsRef<[u8]>) -> Result<(), BoxError> {
        let bytes = bytes.as_ref();
        let fut = async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        };
        match tokio::time::timeout(self.bound, fut).await {
            Ok(r) => Ok(r?),
            Err(_) => Err("write timed out".into()),
        }
    }

    /// Read one final response (interim 1xx collected); `head_request` when it answers a HEAD.
    pub async fn try_read(&mut self, head_request: bool) -> Result<H1Resp, BoxError> {
        let bound = self.bound;
        match tokio::time::timeout(bound, self.read_inner(head_request)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no complete response within {bound:?}; buffered {:?}",
                String::from_utf8_lossy(&self.buf)
            )
            .into()),
        }
    }

    /// [`RawConn::try_read`], panicking on failure.
    pub async fn read(&mut self, head_request: bool) -> H1Resp {
        self.try_read(head_request)
            .await
            .unwrap_or_else(|e| panic!("reading a response from the router: {e}"))
    }

    /// Send a request and read its response.
    pub async fn roundtrip(&mut self, request: impl AsRef<[u8]>) -> H1Resp {
        let request = request.as_ref();
        let head_request = request.starts_with(b"HEAD ");
        self.send(request).await;
        self.read(head_request).await
    }

    async fn read_inner(&mut self, head_request: bool) -> Result<H1Resp, BoxError> {
        let mut r = Reader {
            io: &mut self.io,
            buf: &mut self.buf,
        };
        let mut interim = Vec::new();
        loop {
            let head = r.take_until(b"\r\n\r\n", "a response head").await?;
            let text = String::from_utf8_lossy(&head).into_owned();
            let status_line = text.split("\r\n").next().unwrap_or_default().to_owned();
            let status: u16 = status_line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad status line {status_line:?} in {text:?}"))?;
            if (100..200).contains(&status) && status != 101 {
                interim.push(text);
                continue;
            }
            let headers = parse_header_lines(&head);
            let (framing, wire_body, body, chunked) =
                if head_request || status == 204 || status == 304 || status == 101 {
                    (Framing::NoBody, Vec::new(), Vec::new(), None)
                } else if is_chunked(&headers) {
                    let c = r.take_chunked().await?;
                    (Framing::Chunked, c.wire.clone(), c.decoded.clone(), Some(c))
                } else if let Some(len) = header_of(&headers, "content-length") {
                    let len: usize = len
                        .parse()
                        .map_err(|e| format!("bad Content-Length {len:?}: {e}"))?;
                    let b = r.take_exact(len, "a response body").await?;
                    (Framing::ContentLength(len), b.clone(), b, None)
                } else {
                    let b = r.take_to_end().await?;
                    (Framing::Close, b.clone(), b, None)
                };
            return Ok(H1Resp {
                status,
                status_line,
                head,
                interim,
                framing,
                wire_body,
                body,
                chunked,
            });
        }
    }

    /// Read one response head only (any status, 1xx included), bounded by `bound`.
    pub async fn try_read_head(&mut self, bound: Duration) -> Result<String, BoxError> {
        let mut r = Reader {
            io: &mut self.io,
            buf: &mut self.buf,
        };
        match tokio::time::timeout(bound, r.take_until(b"\r\n\r\n", "a response head")).await {
            Ok(Ok(h)) => Ok(String::from_utf8_lossy(&h).into_owned()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no response head within {bound:?}").into()),
        }
    }

    /// Wait (bounded by `bound`) for the connection to end; bytes already buffered count as data.
    pub async fn end(&mut self, bound: Duration) -> End {
        if !self.buf.is_empty() {
            return End::Data(std::mem::take(&mut self.buf));
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(bound, self.io.read(&mut chunk)).await {
            Err(_) => End::Open,
            Ok(Ok(0)) => End::Eof,
            Ok(Ok(n)) => End::Data(chunk[..n].to_vec()),
            Ok(Err(e)) => End::Error(e.to_string()),
        }
    }

    /// Read whatever arrives until the connection ends or `bound` passes.
    pub async fn drain(&mut self, bound: Duration) -> (Vec<u8>, End) {
        let mut got = std::mem::take(&mut self.buf);
        let deadline = Instant::now() + bound;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.io.read(&mut chunk)).await {
                Err(_) => return (got, End::Open),
                Ok(Ok(0)) => return (got, End::Eof),
                Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => return (got, End::Error(e.to_string())),
            }
        }
    }
}

/// Encode `body` as chunks of the given sizes (cycled), with `ext` on every third chunk line.
pub fn chunk_encode(body: &[u8], sizes: &[usize], ext: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < body.len() {
        let size = sizes[i % sizes.len()].max(1).min(body.len() - at);
        out.extend_from_slice(format!("{size:x}").as_bytes());
        if let Some(e) = ext {
            if i % 3 == 0 {
                out.push(b';');
                out.extend_from_slice(e.as_bytes());
            }
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body[at..at + size]);
        out.extend_from_slice(b"\r\n");
        at += size;
        i += 1;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Deterministic pseudo-random bytes (xorshift), so large bodies are not compressible patterns.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A router whose every path goes to one raw upstream: `/terminal` (stripped) and `/`.
pub struct RawStack {
    pub up: RawUpstream,
    pub router: crate::Router,
    pub cfg: crate::EdgeConfig,
}

impl RawStack {
    pub async fn start(up: RawUpstream) -> RawStack {
        Self::start_with(up, |c| c).await
    }

    pub async fn start_with(
        up: RawUpstream,
        adjust: impl FnOnce(crate::EdgeConfig) -> crate::EdgeConfig,
    ) -> RawStack {
        use crate::PathRule;
        let cfg = adjust(
            crate::EdgeConfig::new()
                .path(PathRule::new("/terminal", up.port).strip())
                .path(PathRule::new("/", up.port)),
        );
        let router = crate::Router::start(&cfg).await;
        RawStack { up, router, cfg }
    }
}
