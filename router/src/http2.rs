//! HTTP/2 connections: the router's own accept loop over Pingora's HTTP/2 session layer. Each
//! stream is accepted and validated by Pingora (`HttpSession::from_h2_conn`: HPACK, the
//! pseudo-headers, bytes in the target, Content-Length agreement). A stream without a request
//! body — most of a browser's requests — is then routed through [`Front::route`] and answered or
//! forwarded here, with the fast path's per-worker upstream pool (`h1.rs`); a stream with a body
//! (or a CONNECT) is given to Pingora's proxy (`proxy.rs`), as every stream was before.
//!
//! Why: in Pingora's engine an HTTP/2 request cost ~110 000 instructions, most of them its
//! per-request proxy machinery (a large future copied per request, header maps cloned, a
//! `getpeername` per pooled upstream connection), against a few thousand in the router's own
//! routing (docs/performance.md).
//!
//! What a stream gets here is what Pingora's proxy gives it: the same answers (pages, redirects,
//! replays), the same request rewrite for the HTTP/1.1 upstream (hop-by-hop headers and Fly's
//! routing headers dropped, `Host` from `:authority`, X-Forwarded-*, X-Request-Id; Cookie fields
//! joined with `; ` as RFC 9113 §8.2.3 requires), 1xx responses dropped (HTTP/2 can only carry
//! one response head per stream here), bodies sent under HTTP/2 flow control with the client's
//! write timeout, and a body cut short upstream ends the stream with RST_STREAM. The connection
//! loop follows Pingora's: GOAWAY on shutdown while the open streams finish, and the connection
//! is closed after [`MAX_REJECTED`] malformed streams.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method};
use pingora_core::apps::HttpServerApp;
use pingora_core::protocols::http::v2::server::{handshake, H2Accept, HttpSession};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Digest;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use pingora_http::ResponseHeader;
use tokio::net::TcpStream;

use crate::conn::EdgeApp;
use crate::conn::CLIENT_WRITE_TIMEOUT;
use crate::front::own_head;
use crate::front::view::PingoraRequest;
use crate::front::{
    redirect_headers, replay_headers, Answer, ConnInfo, Done, Front, Notes, Page, Plan,
    RequestView, Served, Stamp, X_REQUEST_ID,
};
use crate::metrics::{self, ClientError, Outcome, UpstreamErrorKind};
use crate::pages;
use crate::request_id;
use crate::shutdown::InFlight;
use crate::upstream::chunked::{BadChunk, Chunked};
use crate::upstream::response::{parse_response, Framing};
use crate::upstream::{
    checkin, end_upstream_head, error_name, put_header, read_response_head, read_some, send_head,
    start_upstream_head, Failure, Upstreams, BODY_READ,
};

/// Malformed streams a connection may open before it is closed (Pingora's budget).
pub const MAX_REJECTED: usize = 32;

/// Streams the client may reset before the router answered them, per connection; past this
/// the connection ends with GOAWAY `ENHANCE_YOUR_CALM` (the HTTP/2 "rapid reset" attack,
/// CVE-2023-44487). Browsers cancel a few streams per page at most.
pub const MAX_EARLY_RESETS: usize = 100;

/// Streams reset by the client before the application accepted them that h2 holds at once
/// (h2's own budget; GOAWAY beyond it).
const MAX_PENDING_ACCEPT_RESETS: usize = 20;

/// Streams the router may reset itself (malformed frames) before h2 ends the connection.
const MAX_LOCAL_RESETS: usize = 128;

/// The HTTP/2 settings and abuse budgets of every connection: Pingora's bounded defaults
/// (100 concurrent streams, a bounded header list) and the reset budgets above.
fn h2_options() -> pingora_core::protocols::http::v2::server::H2Options {
    let mut o = pingora_core::protocols::http::v2::server::default_h2_options();
    o.max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(Some(MAX_LOCAL_RESETS));
    o
}

/// Whether the client has already reset the stream (checked, not awaited).
fn reset_by_client(s: &mut HttpSession) -> bool {
    use futures_util::FutureExt;
    s.idle().now_or_never().is_some()
}

/// Response headers an upstream may send (as on the HTTP/1.1 path).
const MAX_RESPONSE_HEADERS: usize = 128;

/// Serves an HTTP/2 connection (ALPN `h2`) until it closes.
pub async fn serve(app: &Arc<EdgeApp>, io: Stream, shutdown: &ShutdownWatch) {
    let digest = Arc::new(Digest {
        ssl_digest: io.get_ssl_digest(),
        timing_digest: io.get_timing_digest(),
        proxy_digest: io.get_proxy_digest(),
        socket_digest: io.get_socket_digest(),
    });
    let info = Arc::new(ConnInfo::of(&io));
    let mut conn = match handshake(io, Some(h2_options())).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "HTTP/2 handshake failed");
            return;
        }
    };
    let mut shutdown = shutdown.clone();
    let mut closing = false;
    let mut rejected = 0usize;
    let early_resets = Arc::new(AtomicUsize::new(0));
    loop {
        if !closing && early_resets.load(Ordering::Relaxed) > MAX_EARLY_RESETS {
            tracing::debug!(client = ?info.peer, "HTTP/2 connection closed: too many reset streams");
            conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
            closing = true;
        }
        let next = if closing {
            HttpSession::from_h2_conn(&mut conn, digest.clone()).await
        } else {
            tokio::select! {
                biased;
                _ = shutdown.changed() => {
                    // GOAWAY; the streams already open (and any the client had in flight)
                    // are still served while the connection drains.
                    conn.graceful_shutdown();
                    closing = true;
                    continue;
                }
                next = HttpSession::from_h2_conn(&mut conn, digest.clone()) => next,
            }
        };
        match next {
            // Clients often just close the TCP connection.
            Err(e) => {
                tracing::debug!(error = %e, "HTTP/2 connection ended");
                return;
            }
            Ok(None) => return,
            Ok(Some(H2Accept::Rejected)) => {
                rejected += 1;
                if rejected > MAX_REJECTED {
                    tracing::debug!(client = ?info.peer, "HTTP/2 connection closed: too many malformed streams");
                    return;
                }
            }
            Ok(Some(H2Accept::Session(session))) => {
                let app = app.clone();
                let info = info.clone();
                let shutdown = shutdown.clone();
                let resets = early_resets.clone();
                tokio::spawn(async move {
                    if !stream(&app, session, &info, &shutdown).await {
                        resets.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        }
    }
}

/// One stream: served here when it has no request body (and `server.fast_path` is on), else
/// by Pingora's proxy. `false`: the client reset it before it was answered (nothing went
/// upstream after the reset was seen).
async fn stream(
    app: &Arc<EdgeApp>,
    mut s: HttpSession,
    info: &ConnInfo,
    shutdown: &ShutdownWatch,
) -> bool {
    if reset_by_client(&mut s) {
        return false;
    }
    if !app.fast() || !s.is_body_empty() || s.req_header().method == Method::CONNECT {
        app.pingora()
            .process_new_http(ServerSession::new_http2(s), shutdown)
            .await;
        return true;
    }
    let front = app.front();
    let _in_flight = InFlight::enter(front.metrics.listener());
    let start = Instant::now();
    s.set_write_timeout(Some(CLIENT_WRITE_TIMEOUT));

    // Everything the request is needed for, before the response borrows the session.
    let req = PingoraRequest {
        req: s.req_header(),
        upgrade: false,
    };
    let request_id = request_id::header_value_from(req.header(&X_REQUEST_ID));
    let mut notes = Notes::default();
    let answer = front.route(&req, info, &mut notes).await;
    let client = front.client_ip(&req, info.peer);
    let json = pages::prefers_json(req.header(&http::header::ACCEPT));
    let method = req.req.method.clone();
    let head_only = method == Method::HEAD;
    let upstream_head = match &answer {
        Answer::Forward(plan) => Some(upstream_head(&front, &req, plan, client, &request_id)),
        _ => None,
    };

    let mut done = Done::new(false);
    let mut upstream = None;
    let mut reset = false;
    let stamp = front.stamp(&request_id);
    match answer {
        Answer::Page(p) => {
            done.outcome = p.outcome;
            page(&mut s, &mut done, &p, &stamp, json, head_only).await;
        }
        Answer::Redirect(r) => {
            done.outcome = Outcome::Redirect;
            done.status = r.status;
            let head = own_head(r.status, &stamp, |put| redirect_headers(&r, put));
            write_head(&mut s, head, true, &mut done);
        }
        Answer::Replay { value, cache_ttl } => {
            done.outcome = Outcome::Replay;
            done.status = 307;
            let head = own_head(307, &stamp, |put| replay_headers(&value, cache_ttl, put));
            write_head(&mut s, head, true, &mut done);
        }
        Answer::Forward(_) if reset_by_client(&mut s) => {
            // Reset while it was routed: nothing goes upstream (rapid reset).
            done.outcome = Outcome::Error;
            done.error = Some(ClientError::Closed.as_str());
            reset = true;
        }
        Answer::Forward(plan) => {
            done.outcome = Outcome::Forward;
            upstream = Some(plan.addr);
            let head = upstream_head.unwrap_or_default();
            let forward = Forward {
                plan: &plan,
                head_only,
                json,
                stamp: stamp.woken(plan.wake),
            };
            forward.run(&front, &mut s, &head, &mut done).await;
        }
    }
    let served = Served {
        request_id: stamp.rid(),
        method: method.as_str(),
        notes: &notes,
        start,
        upstream,
        client,
    };
    front.finish_served(&served, &done);
    !reset
}

/// Sends a response head; a failure (the client reset the stream) is noted.
fn write_head(
    s: &mut HttpSession,
    head: pingora_error::Result<ResponseHeader>,
    end: bool,
    done: &mut Done,
) -> bool {
    match head.and_then(|h| s.write_response_header(Box::new(h), end)) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(error = %e, "HTTP/2 response head not sent");
            done.error = Some(ClientError::WriteError.as_str());
            false
        }
    }
}

/// Sends body bytes; a failure (reset, write timeout) is noted.
async fn write_body(s: &mut HttpSession, data: Bytes, end: bool, done: &mut Done) -> bool {
    let n = data.len();
    match s.write_body(data, end).await {
        Ok(()) => {
            done.bytes_sent += n;
            true
        }
        Err(e) => {
            tracing::debug!(error = %e, "HTTP/2 response body not sent");
            done.error = Some(ClientError::WriteError.as_str());
            false
        }
    }
}

/// One of the router's own pages.
async fn page(
    s: &mut HttpSession,
    done: &mut Done,
    p: &Page,
    stamp: &Stamp<'_>,
    json: bool,
    head_only: bool,
) {
    let mut body = Bytes::new();
    let head = own_head(p.status, stamp, |put| {
        body = p.render(stamp.rid(), json, put);
    });
    done.status = p.status;
    if write_head(s, head, head_only, done) && !head_only {
        write_body(s, body, true, done).await;
    }
}

/// The HTTP/1.1 request head sent upstream for an HTTP/2 request: the fields the policy keeps
/// (`RouterFields::keeps`), then the router's fields (the Cookie fields joined among them).
fn upstream_head(
    front: &Front,
    req: &PingoraRequest<'_>,
    plan: &Plan,
    client: Option<IpAddr>,
    rid: &HeaderValue,
) -> Vec<u8> {
    let r = req.req;
    let fields = front.router_fields(req, plan, client, rid.as_bytes());
    let target = plan.rewritten.as_deref().unwrap_or(req.path_and_query());
    let mut out = start_upstream_head(r.method.as_str(), target, &fields);
    for (name, value) in r.headers.iter() {
        if fields.keeps(name.as_str(), &[]) {
            put_header(&mut out, name.as_str(), value.as_bytes());
        }
    }
    end_upstream_head(&mut out, &fields);
    out
}

/// A forwarded stream.
struct Forward<'a> {
    plan: &'a Plan,
    head_only: bool,
    json: bool,
    stamp: Stamp<'a>,
}

/// What the upstream answered: its status, framing and the head for the client.
struct Response {
    head: ResponseHeader,
    framing: Framing,
    reusable: bool,
    len: usize,
}

/// A response head at the start of the upstream's buffer. (Returned once per head and moved,
/// not stored: boxing `Final` would only add an allocation per request.)
#[allow(clippy::large_enum_variant)]
enum Head {
    /// An informational (1xx) head of this length, skipped.
    Interim(usize),
    Final(Response),
}

impl Forward<'_> {
    /// Sends the request upstream (on a pooled connection when there is one, once more on a
    /// new one when a pooled connection turns out closed) and relays the response.
    async fn run(&self, front: &Front, s: &mut HttpSession, head: &[u8], done: &mut Done) {
        let up_conf = &front.config().upstream;
        let addr = self.plan.addr;
        let mut rbuf = BytesMut::with_capacity(BODY_READ);
        let wt = up_conf.write_timeout;
        let mut upstreams = Upstreams::new(addr, up_conf);
        let (mut up, resp) = loop {
            let (mut up, reused) = match upstreams.next().await {
                Ok(c) => c,
                Err(f) => return self.failed(s, done, f).await,
            };
            rbuf.clear();
            match self.exchange(&mut up, head, &mut rbuf, wt, reused).await {
                Ok(resp) => break (up, resp),
                Err(f) if f.retry => continue,
                Err(f) => return self.failed(s, done, f).await,
            }
        };
        done.status = resp.head.status.as_u16();
        rbuf.advance(resp.len);
        let empty = matches!(resp.framing, Framing::Empty | Framing::Length(0));
        if !write_head(s, Ok(resp.head), empty, done) {
            return;
        }
        match self.relay(s, &mut up, rbuf, resp.framing, done).await {
            Ok(true) if resp.reusable => checkin(addr, up, up_conf.keepalive_pool),
            Ok(_) => {}
            Err(kind) => {
                // The head went out: the client learns of it by the stream's reset.
                tracing::warn!(error = kind.as_str(), upstream = %addr, "response cut short");
                metrics::upstream().error(kind);
                s.shutdown();
                done.outcome = Outcome::Error;
                done.error = error_name(kind);
            }
        }
    }

    /// Writes the head upstream and reads the response head (1xx ones are skipped).
    async fn exchange(
        &self,
        up: &mut TcpStream,
        head: &[u8],
        rbuf: &mut BytesMut,
        write_timeout: std::time::Duration,
        reused: bool,
    ) -> Result<Response, Failure> {
        send_head(up, head, write_timeout, reused).await?;
        // Once an interim head arrived, the upstream has answered: no retry after that.
        let mut retryable = reused;
        loop {
            let parse = |b: &[u8]| self.response(b);
            match read_response_head(up, rbuf, self.plan.read_timeout, retryable, parse).await? {
                Head::Interim(len) => {
                    retryable = false;
                    rbuf.advance(len);
                }
                Head::Final(resp) => return Ok(resp),
            }
        }
    }

    /// Parses a response head at the start of `buf` (`None`: incomplete).
    fn response(&self, buf: &[u8]) -> Result<Option<Head>, Failure> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
        let Some(parsed) = parse_response(buf, &mut headers, self.head_only)? else {
            return Ok(None);
        };
        if (100..200).contains(&parsed.status) {
            if parsed.status == 101 {
                return Err(Failure::new(UpstreamErrorKind::InvalidResponse));
            }
            return Ok(Some(Head::Interim(parsed.len)));
        }
        let invalid = |_| Failure::new(UpstreamErrorKind::InvalidResponse);
        let mut head = ResponseHeader::build_no_case(parsed.status, Some(16)).map_err(invalid)?;
        let mut result = Ok(());
        parsed.forwarded(&self.stamp, |name, value| {
            if result.is_err() {
                return;
            }
            result = match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value),
            ) {
                (Ok(n), Ok(v)) => head.append_header(n, v).map(|_| ()).map_err(invalid),
                _ => Err(Failure::new(UpstreamErrorKind::InvalidResponse)),
            };
        });
        result?;
        self.stamp.insert(&mut head).map_err(invalid)?;
        Ok(Some(Head::Final(Response {
            head,
            framing: parsed.framing,
            reusable: parsed.reusable,
            len: parsed.len,
        })))
    }

    /// Relays the body after the head. `Ok(true)`: the upstream connection is at a message
    /// boundary (poolable when the response allows it); `Err`: cut short upstream.
    async fn relay(
        &self,
        s: &mut HttpSession,
        up: &mut TcpStream,
        mut rbuf: BytesMut,
        framing: Framing,
        done: &mut Done,
    ) -> Result<bool, UpstreamErrorKind> {
        let timeout = self.plan.read_timeout;
        match framing {
            Framing::Empty | Framing::Length(0) => Ok(rbuf.is_empty()),
            Framing::Length(total) => {
                let mut left = total;
                loop {
                    if !rbuf.is_empty() {
                        let take = (rbuf.len() as u64).min(left) as usize;
                        left -= take as u64;
                        let data = rbuf.split_to(take).freeze();
                        if !write_body(s, data, left == 0, done).await {
                            return Ok(false);
                        }
                        if left == 0 {
                            // More bytes than the length: out of step, not reused.
                            return Ok(rbuf.is_empty());
                        }
                    }
                    if read_some(up, &mut rbuf, timeout).await? == 0 {
                        return Err(UpstreamErrorKind::Closed);
                    }
                }
            }
            Framing::Chunked => {
                let mut scan = Chunked::default();
                let mut data = BytesMut::new();
                loop {
                    let end = scan
                        .decode(&rbuf, |r| data.extend_from_slice(&rbuf[r]))
                        .map_err(|BadChunk| UpstreamErrorKind::InvalidResponse)?;
                    if let Some(n) = end {
                        write_body(s, data.split().freeze(), true, done).await;
                        return Ok(n == rbuf.len());
                    }
                    if !data.is_empty() && !write_body(s, data.split().freeze(), false, done).await
                    {
                        return Ok(false);
                    }
                    rbuf.clear();
                    if read_some(up, &mut rbuf, timeout).await? == 0 {
                        return Err(UpstreamErrorKind::Closed);
                    }
                }
            }
            Framing::Eof { .. } => loop {
                if !rbuf.is_empty() && !write_body(s, rbuf.split().freeze(), false, done).await {
                    return Ok(false);
                }
                if read_some(up, &mut rbuf, timeout).await? == 0 {
                    write_body(s, Bytes::new(), true, done).await;
                    return Ok(false);
                }
            },
        }
    }

    /// An upstream failure before any response went to the client: a 502/504 page.
    async fn failed(&self, s: &mut HttpSession, done: &mut Done, f: Failure) {
        metrics::upstream().error(f.kind);
        tracing::debug!(error = f.kind.as_str(), "upstream failed");
        let status = f.status();
        done.outcome = Outcome::Error;
        done.error = error_name(f.kind);
        let p = Page::upstream_failure(status);
        page(s, done, &p, &self.stamp, self.json, self.head_only).await;
    }
}
