//! HTTP/1 connections: the loop that reads and judges every request head ([`head`]) and serves
//! the common requests itself — HTTP/1.1, origin-form target, no request body, no upgrade —
//! on the connection's own task, with one read and one write per side when the messages fit.
//! Every other request (request bodies, WebSockets, `Expect`, HTTP/1.0, absolute form, unusual
//! target bytes, heads over 16 KiB; with `server.fast_path = false` every request) is given
//! alone to Pingora's engine ([`one::OneRequest`]: exactly its head and body bytes), which hands
//! the connection back; so heads are judged one way and pipelined requests are answered in
//! order whichever engine serves each.
//!
//! Why a fast path: Pingora's per-request machinery (a ~14 KB boxed future per request, header
//! maps built and cloned, a `getpeername` per pooled upstream connection) puts its floor at
//! ~0.6× nginx on the plain forward and costs ~36 KiB per idle keep-alive connection
//! (docs/performance.md). Both engines route, rewrite and count through `front`, so they give
//! the same answers; upstream connections come from `upstream`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use http::HeaderName;
use pingora_core::apps::HttpServerApp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{Shutdown, Stream};
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::conn::CLIENT_WRITE_TIMEOUT;
use crate::front::rewrite::ConnectionTokens;
use crate::front::{
    redirect_headers, replay_headers, Answer, BadHost, ConnInfo, Done, Front, FrontSlot, Notes,
    Page, Plan, PutHeader, RequestView, Served, Stamp,
};
use crate::metrics::{self, ClientError, Outcome, UpstreamErrorKind};
use crate::pages;
use crate::proxy::EdgeProxy;
use crate::request_id;
use crate::shutdown::InFlight;
use crate::tunnel;
use crate::upstream::chunked::{BadChunk, Chunked};
use crate::upstream::response::{parse_response, Framing, MAX_RESPONSE_HEADERS};
use crate::upstream::{
    checkin, end_upstream_head, error_name, put_header, read_response_head, read_some, send_head,
    start_upstream_head, Failure, Upstreams, BODY_READ,
};

mod head;
mod one;

pub use crate::upstream::chunked::chunked_end;
pub use crate::upstream::response::judge_response;
pub use head::{head_is_complete, judge_head, HeadVerdict};
use head::{parse, refuse, Refusal, ReqBody, Verdict, HEAD_MAX, MAX_HEADERS};
use one::OneRequest;

/// How long a keep-alive connection may wait for its next request (Pingora's HTTP/1 default).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// After this long idle, a keep-alive connection gives its read buffer back while it waits.
const IDLE_SHRINK: Duration = Duration::from_secs(1);
/// Read size for request heads; grows up to [`HEAD_MAX`] for larger heads.
const HEAD_READ: usize = 2048;

/// What became of one request.
enum Next {
    /// Served; the connection can take the next one.
    KeepAlive,
    /// Served (or failed); close the connection.
    Close,
    /// Not for the fast path: Pingora's engine serves this one request (with this head instead
    /// of the client's, when set).
    HandOver(ReqBody, Option<Vec<u8>>),
}

/// Serves an HTTP/1 connection until it closes. Every request head is read and judged here
/// (the head deadline, the refusals of `docs/http.md`); with `fast`, simple requests are served
/// here too, and every other request is given, alone, to Pingora's engine (`pingora`), which
/// hands the connection back when it is done with it.
pub(crate) async fn serve(
    slot: &FrontSlot,
    pingora: &Arc<HttpProxy<EdgeProxy>>,
    fast: bool,
    mut io: Stream,
    shutdown: &ShutdownWatch,
) {
    let info = ConnInfo::of(&io);
    // `[server]` needs a restart to change: the first Front's value holds for the connection.
    let header_timeout = slot.load().config().server.header_timeout;
    let mut shutdown = shutdown.clone();
    let mut buf = BytesMut::new();
    let mut first = true;
    loop {
        let read = read_head(&mut io, &mut buf, &mut shutdown, header_timeout, first).await;
        first = false;
        let timed_out = match read {
            HeadRead::Complete => false,
            HeadRead::Closed => {
                Shutdown::shutdown(&mut *io).await;
                return;
            }
            HeadRead::TimedOut => true,
        };
        let closing = *shutdown.borrow();
        // Boxed: an idle connection then holds only the small state of `read_head`, not the
        // ~3 KB of a request in progress (measured by `sizes::future_sizes`).
        // The listener's current Front: a reload applies from the next request on.
        let front = slot.load_full();
        let conn = Conn {
            info: &info,
            closing,
            fast,
            shutdown: &shutdown,
        };
        let (next, consumed) = Box::pin(request(&front, &mut io, &buf, &conn, timed_out)).await;
        match next {
            Next::KeepAlive => buf.advance(consumed),
            Next::Close => {
                // Bounded: a client that stopped reading never drains what is left to flush.
                let _ = tokio::time::timeout(CLOSE_BOUND, Shutdown::shutdown(&mut *io)).await;
                return;
            }
            Next::HandOver(body, head) => {
                let tunnel = body == ReqBody::Tunnel;
                let one = OneRequest::new(io, &mut buf, consumed, body, head);
                let mut session = ServerSession::new_http1(Box::new(one));
                session.set_keepalive(if closing { None } else { Some(60) });
                let Some(reused) = pingora.process_new_http(session, &shutdown).await else {
                    return;
                };
                let (stream, _) = reused.consume();
                let Ok(one) = stream.into_any().downcast::<OneRequest>() else {
                    return;
                };
                let (inner, stash) = one.into_parts();
                io = inner;
                if tunnel {
                    // An upgrade the upstream declined: bytes after it may belong to the
                    // tunnel the client expected, never to a request.
                    Shutdown::shutdown(&mut *io).await;
                    return;
                }
                buf.unsplit(stash);
            }
        }
    }
}

enum HeadRead {
    Complete,
    Closed,
    /// The head did not arrive within `server.header_timeout` of its first byte (or it is
    /// larger than [`HEAD_MAX`], which `request` finds out).
    TimedOut,
}

/// Reads until `buf` holds a whole request head, or more than [`HEAD_MAX`] bytes of one.
/// Reads the next request head into `buf`. Between requests, shutting down closes the connection;
/// the `first` request of a connection is still awaited for [`FIRST_REQUEST_GRACE`] (a client
/// whose connection was accepted has sent, or is sending, its request: closing now would fail
/// it, typically during a handover to a new process).
async fn read_head(
    io: &mut Stream,
    buf: &mut BytesMut,
    shutdown: &mut ShutdownWatch,
    header_timeout: Duration,
    first: bool,
) -> HeadRead {
    // The head must arrive within `header_timeout` of its first bytes (no slow trickle).
    let mut deadline = None;
    loop {
        if head_complete(buf) || buf.len() > HEAD_MAX {
            return HeadRead::Complete;
        }
        if buf.is_empty() {
            if *shutdown.borrow() {
                if !first {
                    return HeadRead::Closed;
                }
                buf.reserve(HEAD_READ);
                match tokio::time::timeout(FIRST_REQUEST_GRACE, io.read_buf(buf)).await {
                    Ok(Ok(n)) if n > 0 => continue,
                    _ => return HeadRead::Closed,
                }
            }
            match wait_idle(io, buf, shutdown).await {
                Idle::Data => continue,
                // Shutting down now: the branch above gives a first request its grace.
                Idle::Closed if first && *shutdown.borrow() => continue,
                Idle::Closed => return HeadRead::Closed,
            }
        }
        let deadline =
            *deadline.get_or_insert_with(|| tokio::time::Instant::now() + header_timeout);
        buf.reserve(HEAD_READ);
        match tokio::time::timeout_at(deadline, io.read_buf(buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return HeadRead::Closed,
            Err(_) => return HeadRead::TimedOut,
            Ok(Ok(_)) => {}
        }
    }
}

/// How long closing a connection may wait for its last bytes to be flushed.
const CLOSE_BOUND: Duration = Duration::from_secs(5);

/// How long a new connection's first request is awaited once the router is shutting down.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(2);

enum Idle {
    /// Bytes of a request are in `buf` or ready to be read.
    Data,
    Closed,
}

/// Waits for the first bytes of the next request, at most [`KEEPALIVE_IDLE`]. A connection idle
/// for over [`IDLE_SHRINK`] waits without a read buffer (a 1-byte peek where the stream allows
/// it), so that idle keep-alive connections cost little memory.
async fn wait_idle(io: &mut Stream, buf: &mut BytesMut, shutdown: &mut ShutdownWatch) -> Idle {
    buf.reserve(HEAD_READ);
    let read = tokio::time::timeout(IDLE_SHRINK, io.read_buf(buf));
    let first = tokio::select! {
        r = read => r,
        _ = changed(shutdown) => return Idle::Closed,
    };
    match first {
        Ok(Ok(0)) | Ok(Err(_)) => return Idle::Closed,
        Ok(Ok(_)) => return Idle::Data,
        Err(_) => {}
    }
    *buf = BytesMut::new();
    let rest = KEEPALIVE_IDLE.saturating_sub(IDLE_SHRINK);
    let mut one = [0u8; 1];
    let peeked = tokio::select! {
        r = tokio::time::timeout(rest, io.try_peek(&mut one)) => r,
        _ = changed(shutdown) => return Idle::Closed,
    };
    match peeked {
        Ok(Ok(true)) => return Idle::Data,
        Ok(Ok(false)) => {}
        Ok(Err(_)) | Err(_) => return Idle::Closed,
    }
    // The stream cannot peek (TLS): wait for one byte, still without a buffer (the TLS layer
    // keeps the rest of its record; `read_head` reads it with one).
    let mut first = [0u8; 1];
    let read = tokio::time::timeout(rest, io.read(&mut first));
    let r = tokio::select! {
        r = read => r,
        _ = changed(shutdown) => return Idle::Closed,
    };
    match r {
        Ok(Ok(1)) => {
            buf.reserve(HEAD_READ);
            buf.extend_from_slice(&first);
            Idle::Data
        }
        _ => Idle::Closed,
    }
}

/// Resolves when the shutdown flag changes; never when its sender is gone.
async fn changed(shutdown: &mut ShutdownWatch) {
    if shutdown.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Whether `buf` holds the end of a head: an empty line (CRLF or a bare LF).
pub(super) fn head_complete(buf: &[u8]) -> bool {
    let mut from = 0;
    while let Some(i) = buf[from..].iter().position(|&b| b == b'\n') {
        let at = from + i + 1;
        match buf.get(at) {
            Some(b'\n') => return true,
            Some(b'\r') if buf.get(at + 1) == Some(&b'\n') => return true,
            _ => from = at,
        }
    }
    false
}

/// Bytes a path may carry on the fast path (RFC 3986 unreserved, sub-delims, `:@/?%`); others
/// go to Pingora, which decides about them as before.
pub(super) fn plain_path(path: &str) -> bool {
    path.starts_with('/')
        && path.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                        | b':'
                        | b'@'
                        | b'/'
                        | b'?'
                        | b'%'
                )
        })
}

/// A parsed fast-path request.
pub(super) struct H1Request<'a> {
    pub(super) method: &'a str,
    pub(super) path: &'a str,
    pub(super) headers: &'a [httparse::Header<'a>],
    pub(super) host: Result<Option<&'a str>, BadHost>,
    /// What the client's `Connection` header says (hop-by-hop names, close).
    pub(super) conn: ConnectionTokens<'a>,
    /// An upgrade request (a WebSocket handshake) for the router's tunnel.
    pub(super) upgrade: bool,
}

impl RequestView for H1Request<'_> {
    fn method(&self) -> &str {
        self.method
    }
    fn path_and_query(&self) -> &str {
        self.path
    }
    fn host(&self) -> Result<Option<&str>, BadHost> {
        self.host
    }
    fn header(&self, name: &HeaderName) -> Option<&[u8]> {
        let name = name.as_str();
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
    fn is_upgrade(&self) -> bool {
        self.upgrade
    }
    fn cookie(&self) -> Option<std::borrow::Cow<'_, [u8]>> {
        crate::front::cookie_field(
            self.headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
                .map(|h| h.value),
        )
    }
    fn splits_cookies(&self) -> bool {
        false
    }
    fn protocol(&self) -> &'static str {
        // The fast path takes HTTP/1.1 heads only.
        "HTTP/1.1"
    }
}

/// Text as `HeaderValue::to_str` accepts it: visible ASCII, space and tab.
pub(super) fn header_text(v: &[u8]) -> Option<&str> {
    if v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) {
        std::str::from_utf8(v).ok()
    } else {
        None
    }
}

/// What every request of a connection needs to know of it.
struct Conn<'a> {
    info: &'a ConnInfo,
    /// The router is shutting down: this is the connection's last request.
    closing: bool,
    /// `server.fast_path`.
    fast: bool,
    shutdown: &'a ShutdownWatch,
}

/// One request: routed, answered or forwarded, counted. Returns what follows and the length
/// of its head.
async fn request(
    front: &Front,
    io: &mut Stream,
    buf: &[u8],
    conn: &Conn<'_>,
    timed_out: bool,
) -> (Next, usize) {
    let (info, closing, fast) = (conn.info, conn.closing, conn.fast);
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let (verdict, len) = if timed_out {
        let r = refuse(408, "The request head did not arrive in time.");
        (Verdict::Refuse(r), 0)
    } else {
        parse(buf, &mut headers, fast)
    };
    let req = match verdict {
        Verdict::Fast(req) | Verdict::Upgrade(req) => req,
        Verdict::HandOver(ReqBody::Chunked, _) if chunked_end(&[&buf[len..]]).is_err() => {
            // What already arrived of the body is malformed: refused here, as any later part
            // is by `OneRequest` (Pingora's decoder is more lenient than the rule).
            let r = refuse(400, "The request's chunked body is malformed.");
            refused(front, io, info, r).await;
            return (Next::Close, len);
        }
        Verdict::HandOver(body, head) => return (Next::HandOver(body, head), len),
        Verdict::Refuse(r) => {
            refused(front, io, info, r).await;
            return (Next::Close, len);
        }
    };
    let _in_flight = InFlight::enter(front.metrics.listener());
    let start = Instant::now();
    let request_id = request_id::header_value_from(req.header(&crate::front::X_REQUEST_ID));
    let stamp = front.stamp(&request_id);
    let rid = stamp.rid();
    // After an upgrade request, the client's bytes belong to the protocol it asked for, never
    // to a request: whatever the answer, the connection ends with it.
    let close = req.conn.close || closing || req.upgrade;
    let mut notes = Notes::default();
    let answer = front.route(&req, info, &mut notes).await;
    // For X-Forwarded-For and the access log.
    let client = front.client_ip(&req, info.peer);
    let head_only = req.method == "HEAD";
    let mut done = Done::new(close);
    let mut upstream = None;
    match answer {
        Answer::Page(p) => {
            done.outcome = p.outcome;
            done.close |= p.closes_connection();
            let json = pages::prefers_json(req.header(&http::header::ACCEPT));
            page(io, &mut done, &p, &stamp, json, head_only).await;
        }
        Answer::Redirect(r) => {
            done.outcome = Outcome::Redirect;
            small(io, &mut done, r.status, &stamp, |put| {
                redirect_headers(&r, put)
            })
            .await;
        }
        Answer::Replay { value, cache_ttl } => {
            done.outcome = Outcome::Replay;
            small(io, &mut done, 307, &stamp, |put| {
                replay_headers(&value, cache_ttl, put)
            })
            .await;
        }
        Answer::Forward(plan) => {
            done.outcome = Outcome::Forward;
            upstream = Some(plan.addr);
            let fwd = Forwarding {
                front,
                req: &req,
                plan: &plan,
                client,
                stamp: &stamp.woken(plan.wake),
            };
            if req.upgrade {
                let early = &buf[len..];
                // Boxed: a plain request's future does not carry the tunnel's state.
                Box::pin(upgrade(
                    &fwd,
                    io,
                    early,
                    notes.rule,
                    conn.shutdown,
                    &mut done,
                ))
                .await;
            } else {
                forward(&fwd, io, &mut done).await;
            }
        }
    }
    let served = Served {
        request_id: rid,
        method: req.method,
        notes: &notes,
        start,
        upstream,
        client,
    };
    front.finish_served(&served, &done);
    let next = if done.close {
        Next::Close
    } else {
        Next::KeepAlive
    };
    (next, len)
}

/// A head the router refuses (see [`judge`]): its own page, counted and logged, and the
/// connection closes (what follows the head cannot be trusted to start a request).
async fn refused(front: &Front, io: &mut Stream, info: &ConnInfo, r: Refusal) {
    let _in_flight = InFlight::enter(front.metrics.listener());
    let start = Instant::now();
    let request_id = request_id::header_value_from(None);
    let stamp = front.stamp(&request_id);
    let rid = stamp.rid();
    let mut done = Done::new(true);
    done.outcome = Outcome::Refused;
    let p = Page::new(r.status, Outcome::Refused, r.detail);
    page(io, &mut done, &p, &stamp, false, false).await;
    let served = Served {
        request_id: rid,
        method: "-",
        notes: &Notes::default(),
        start,
        upstream: None,
        client: info.peer,
    };
    front.finish_served(&served, &done);
}

fn status_line(out: &mut Vec<u8>, status: u16, reason: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    // Status codes have three digits (httparse and the router's own answers).
    out.extend_from_slice(&[
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]);
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The standard reason phrase of a status ("Bad Gateway").
fn canonical_reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

/// Ends a head: the [`Stamp`], the connection's fate (said explicitly, as nginx and Pingora
/// do), the empty line.
fn end_head(out: &mut Vec<u8>, stamp: &Stamp<'_>, close: bool) {
    stamp.put(&mut |name, value| put_header(out, name, value));
    out.extend_from_slice(if close {
        b"connection: close\r\n\r\n".as_slice()
    } else {
        b"connection: keep-alive\r\n\r\n".as_slice()
    });
}

/// Writes all of `bytes` to the client and flushes; a failure or timeout closes the connection.
async fn send(io: &mut Stream, bytes: &[u8], done: &mut Done) -> bool {
    let write = async {
        io.write_all(bytes).await?;
        io.flush().await
    };
    match tokio::time::timeout(CLIENT_WRITE_TIMEOUT, write).await {
        Ok(Ok(())) => true,
        _ => {
            done.close = true;
            done.error = Some(ClientError::WriteError.as_str());
            false
        }
    }
}

/// One of the router's own pages.
async fn page(
    io: &mut Stream,
    done: &mut Done,
    p: &Page,
    stamp: &Stamp<'_>,
    json: bool,
    head_only: bool,
) {
    let mut out = Vec::with_capacity(512);
    status_line(&mut out, p.status, canonical_reason(p.status));
    let body = p.render(stamp.rid(), json, &mut |name, value| {
        put_header(&mut out, name, value)
    });
    end_head(&mut out, stamp, done.close);
    if !head_only {
        out.extend_from_slice(&body);
    }
    done.status = p.status;
    if send(io, &out, done).await && !head_only {
        done.bytes_sent = body.len();
    }
}

/// A response without a body (redirects, replays), its headers from `headers`.
async fn small(
    io: &mut Stream,
    done: &mut Done,
    status: u16,
    stamp: &Stamp<'_>,
    headers: impl FnOnce(PutHeader<'_>),
) {
    let mut out = Vec::with_capacity(256);
    status_line(&mut out, status, canonical_reason(status));
    headers(&mut |name, value| put_header(&mut out, name, value));
    end_head(&mut out, stamp, done.close);
    done.status = status;
    send(io, &out, done).await;
}

/// The request head sent upstream: the client's fields the policy keeps
/// ([`RouterFields::keeps`](crate::front::rewrite::RouterFields::keeps)), then the router's.
fn upstream_head(
    front: &Front,
    req: &H1Request<'_>,
    plan: &Plan,
    client: Option<IpAddr>,
    rid: &str,
) -> Vec<u8> {
    let fields = front.router_fields(req, plan, client, rid.as_bytes());
    let target = plan.rewritten.as_deref().unwrap_or(req.path);
    let mut out = start_upstream_head(req.method, target, &fields);
    for h in req.headers {
        if fields.keeps(h.name, &req.conn.nominated) {
            put_header(&mut out, h.name, h.value);
        }
    }
    end_upstream_head(&mut out, &fields);
    out
}

/// The parts of an upstream response head the relay needs.
struct ResponseHead {
    /// The head as sent to the client.
    out: Vec<u8>,
    status: u16,
    framing: Framing,
    /// The upstream connection can be reused after the body.
    reusable: bool,
    /// The client connection must close after the body.
    close: bool,
    /// The length of the upstream's head in its buffer.
    len: usize,
    /// A `101`'s protocol (its `Upgrade` value).
    protocol: Option<Vec<u8>>,
}

/// Whether the client's `Upgrade` value offers `protocol` (a comma-separated list of
/// `name[/version]` tokens, RFC 9110 §7.8).
fn offers(offered: &[u8], protocol: &[u8]) -> bool {
    offered
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(protocol.trim_ascii()))
}

/// Parses an upstream response head at the start of `buf` and writes it for an HTTP/1.1
/// client. `Ok(None)`: incomplete.
fn response_head(
    buf: &[u8],
    head_only: bool,
    close: bool,
    stamp: &Stamp<'_>,
) -> Result<Option<ResponseHead>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let Some(parsed) = parse_response(buf, &mut headers, head_only)? else {
        return Ok(None);
    };
    let framing = parsed.framing;
    let close = close || framing == Framing::Eof { rechunk: false };
    let mut out = Vec::with_capacity(parsed.len + 64);
    status_line(&mut out, parsed.status, parsed.reason);
    parsed.forwarded(stamp, |name, value| put_header(&mut out, name, value));
    if framing == (Framing::Eof { rechunk: true }) {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    let mut switch = None;
    if parsed.status == 101 {
        // The switch the client asked for: the upstream's protocol, and the request id.
        let protocol = parsed
            .upgrade()
            .ok_or(Failure::new(UpstreamErrorKind::InvalidResponse))?;
        switch = Some(protocol.to_vec());
        stamp.put(&mut |name, value| put_header(&mut out, name, value));
        out.extend_from_slice(b"connection: upgrade\r\n");
        put_header(&mut out, "upgrade", protocol);
        out.extend_from_slice(b"\r\n");
    } else if (100..200).contains(&parsed.status) {
        out.extend_from_slice(b"\r\n");
    } else {
        end_head(&mut out, stamp, close);
    }
    Ok(Some(ResponseHead {
        out,
        status: parsed.status,
        framing,
        reusable: parsed.reusable,
        close,
        len: parsed.len,
        protocol: switch,
    }))
}

#[allow(clippy::too_many_arguments)]
/// Sends the request on `up` and reads the response head (1xx heads are relayed on the way).
async fn exchange(
    io: &mut Stream,
    up: &mut TcpStream,
    head: &[u8],
    rbuf: &mut BytesMut,
    (write_timeout, read_timeout): (Duration, Duration),
    reused: bool,
    (head_only, close, upgrade, stamp): (bool, bool, bool, &Stamp<'_>),
    done: &mut Done,
) -> Result<ResponseHead, Failure> {
    send_head(up, head, write_timeout, reused).await?;
    // Once an interim head arrived, the upstream has answered: no retry after that.
    let mut retryable = reused;
    loop {
        let parse = |b: &[u8]| response_head(b, head_only, close, stamp);
        let resp = read_response_head(up, rbuf, read_timeout, retryable, parse).await?;
        if !(100..200).contains(&resp.status) {
            return Ok(resp);
        }
        if resp.status == 101 {
            // The switch an upgrade request asked for; to any other request, a broken upstream.
            if upgrade {
                return Ok(resp);
            }
            return Err(Failure::new(UpstreamErrorKind::InvalidResponse));
        }
        // Informational (103 Early Hints): relayed, then the final response.
        retryable = false;
        rbuf.advance(resp.len);
        if !send(io, &resp.out, done).await {
            return Err(Failure::new(UpstreamErrorKind::Other));
        }
    }
}

/// A request on its way to a workspace.
struct Forwarding<'a> {
    front: &'a Front,
    req: &'a H1Request<'a>,
    plan: &'a Plan,
    client: Option<IpAddr>,
    stamp: &'a Stamp<'a>,
}

/// Sends the request upstream (a pooled connection first, retried on a fresh one when the
/// pooled one turns out closed) and reads the response head.
async fn send_request(
    fwd: &Forwarding<'_>,
    io: &mut Stream,
    done: &mut Done,
) -> Result<(TcpStream, ResponseHead, BytesMut), Failure> {
    let (front, req, plan, stamp) = (fwd.front, fwd.req, fwd.plan, fwd.stamp);
    let up_conf = &front.config().upstream;
    let head = upstream_head(front, req, plan, fwd.client, stamp.rid());
    let head_only = req.method == "HEAD";
    let mut rbuf = BytesMut::with_capacity(BODY_READ);
    let args = (head_only, done.close, req.upgrade, stamp);
    // An upgrade's answer is awaited like any response's; its idle timeout is the tunnel's.
    let timeouts = (
        up_conf.write_timeout,
        if req.upgrade {
            up_conf.read_timeout
        } else {
            plan.read_timeout
        },
    );
    let mut upstreams = Upstreams::new(plan.addr, up_conf);
    loop {
        let (mut up, reused) = upstreams.next().await?;
        rbuf.clear();
        match exchange(io, &mut up, &head, &mut rbuf, timeouts, reused, args, done).await {
            Ok(resp) => return Ok((up, resp, rbuf)),
            Err(f) if f.retry => continue,
            Err(f) => return Err(f),
        }
    }
}

/// Forwards the request and relays the response.
async fn forward(fwd: &Forwarding<'_>, io: &mut Stream, done: &mut Done) {
    let (up, resp, rbuf) = match send_request(fwd, io, done).await {
        Ok(r) => r,
        Err(f) => return failed(io, fwd.req, done, fwd.stamp, f).await,
    };
    respond(fwd, io, up, resp, rbuf, done).await;
}

/// Relays a (final) response after its head was read; pools the upstream connection when it
/// can be reused.
async fn respond(
    fwd: &Forwarding<'_>,
    io: &mut Stream,
    mut up: TcpStream,
    resp: ResponseHead,
    mut rbuf: BytesMut,
    done: &mut Done,
) {
    let plan = fwd.plan;
    done.status = resp.status;
    done.close |= resp.close;
    rbuf.advance(resp.len);
    match relay(io, &mut up, rbuf, resp, plan.read_timeout, done).await {
        Ok(true) if !fwd.req.upgrade => {
            checkin(plan.addr, up, fwd.front.config().upstream.keepalive_pool)
        }
        Ok(_) => {}
        Err(Cut::BeforeHead) => {
            let f = Failure::new(UpstreamErrorKind::InvalidResponse);
            failed(io, fwd.req, done, fwd.stamp, f).await
        }
        Err(Cut::After(kind)) => {
            // The head went out: the client can only learn of it by the connection closing.
            tracing::warn!(error = kind.as_str(), upstream = %plan.addr, "response cut short");
            metrics::upstream().error(kind);
            done.close = true;
            done.outcome = Outcome::Error;
            done.error = error_name(kind);
        }
    }
}

/// Forwards an upgrade request (a WebSocket handshake). A `101` is relayed and the connection
/// becomes a tunnel ([`tunnel::relay`]) until either side ends it, it idles for the path
/// rule's idle timeout, or shutdown drains it; any other answer is relayed as a response (and
/// the connection closes).
async fn upgrade(
    fwd: &Forwarding<'_>,
    io: &mut Stream,
    early: &[u8],
    rule: Option<usize>,
    shutdown: &ShutdownWatch,
    done: &mut Done,
) {
    let (mut up, resp, mut rbuf) = match send_request(fwd, io, done).await {
        Ok(r) => r,
        Err(f) => return failed(io, fwd.req, done, fwd.stamp, f).await,
    };
    if resp.status != 101 {
        return respond(fwd, io, up, resp, rbuf, done).await;
    }
    // The switch must be to a protocol the client offered (RFC 9110 §7.8).
    let offered = fwd.req.header(&http::header::UPGRADE).unwrap_or_default();
    let Some(protocol) = resp.protocol.as_deref().filter(|p| offers(offered, p)) else {
        let f = Failure::new(UpstreamErrorKind::InvalidResponse);
        return failed(io, fwd.req, done, fwd.stamp, f).await;
    };
    let websocket = protocol.eq_ignore_ascii_case(b"websocket");
    done.status = 101;
    rbuf.advance(resp.len);
    if !send(io, &resp.out, done).await {
        return;
    }
    let front = fwd.front;
    let _open = front.metrics.websocket_opened(rule);
    let bounds = tunnel::Bounds {
        idle: fwd.plan.read_timeout,
        drain: front.config().server.websocket_drain,
    };
    let pending = (early.to_vec(), rbuf.to_vec());
    drop(rbuf);
    let r = tunnel::relay(io, &mut up, pending, websocket, bounds, shutdown).await;
    done.upgraded = true;
    done.close = true;
    done.bytes_sent = usize::try_from(r.to_client).unwrap_or(usize::MAX);
    done.bytes_received = usize::try_from(r.from_client).unwrap_or(usize::MAX);
    done.error = r.end.error();
    if r.end.error().is_some() {
        tracing::debug!(error = r.end.error(), "upgraded connection ended");
    }
}

/// An upstream failure before any response went to the client: a 502/504 page.
async fn failed(
    io: &mut Stream,
    req: &H1Request<'_>,
    done: &mut Done,
    stamp: &Stamp<'_>,
    f: Failure,
) {
    metrics::upstream().error(f.kind);
    tracing::debug!(error = f.kind.as_str(), "upstream failed");
    let status = f.status();
    done.outcome = Outcome::Error;
    done.error = error_name(f.kind);
    let json = pages::prefers_json(req.header(&http::header::ACCEPT));
    let head_only = req.method == "HEAD";
    let p = Page::upstream_failure(status);
    page(io, done, &p, stamp, json, head_only).await;
}

/// How a relay failed.
enum Cut {
    /// The upstream's body was unusable before anything went to the client.
    BeforeHead,
    /// After the head went out.
    After(UpstreamErrorKind),
}

impl From<UpstreamErrorKind> for Cut {
    fn from(kind: UpstreamErrorKind) -> Cut {
        Cut::After(kind)
    }
}

/// Relays the body after the head. `Ok(true)`: the upstream connection can be pooled.
async fn relay(
    io: &mut Stream,
    up: &mut TcpStream,
    mut rbuf: BytesMut,
    resp: ResponseHead,
    read_timeout: Duration,
    done: &mut Done,
) -> Result<bool, Cut> {
    let mut out = resp.out;
    match resp.framing {
        Framing::Empty => {
            let ok = send(io, &out, done).await;
            Ok(ok && resp.reusable && rbuf.is_empty())
        }
        Framing::Length(total) => {
            let mut left = total;
            let first = (rbuf.len() as u64).min(left) as usize;
            out.extend_from_slice(&rbuf[..first]);
            rbuf.advance(first);
            left -= first as u64;
            // More bytes than the length: the connection is out of step; not reused.
            let extra = !rbuf.is_empty();
            if !send(io, &out, done).await {
                return Ok(false);
            }
            done.bytes_sent += first;
            while left > 0 {
                rbuf.clear();
                let n = read_some(up, &mut rbuf, read_timeout).await?;
                if n == 0 {
                    return Err(Cut::After(UpstreamErrorKind::Closed));
                }
                let take = (n as u64).min(left) as usize;
                if !send(io, &rbuf[..take], done).await {
                    return Ok(false);
                }
                done.bytes_sent += take;
                left -= take as u64;
                if take < n {
                    return Ok(false);
                }
            }
            Ok(resp.reusable && !extra)
        }
        Framing::Chunked => {
            let mut scan = Chunked::default();
            let mut body = rbuf.split();
            let mut head_sent = false;
            loop {
                let end = match scan.feed(&body) {
                    Ok(end) => end,
                    // Nothing went to the client yet: it gets a 502 page instead.
                    Err(BadChunk) if !head_sent => return Err(Cut::BeforeHead),
                    Err(BadChunk) => return Err(Cut::After(UpstreamErrorKind::InvalidResponse)),
                };
                let take = end.unwrap_or(body.len());
                out.extend_from_slice(&body[..take]);
                if !send(io, &out, done).await {
                    return Ok(false);
                }
                head_sent = true;
                done.bytes_sent += take;
                if end.is_some() {
                    return Ok(resp.reusable && take == body.len());
                }
                out.clear();
                body.clear();
                if read_some(up, &mut body, read_timeout).await? == 0 {
                    return Err(Cut::After(UpstreamErrorKind::Closed));
                }
            }
        }
        Framing::Eof { rechunk } => {
            let mut body = rbuf.split();
            loop {
                if !body.is_empty() {
                    if rechunk {
                        out.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
                        out.extend_from_slice(&body);
                        out.extend_from_slice(b"\r\n");
                    } else {
                        out.extend_from_slice(&body);
                    }
                    done.bytes_sent += body.len();
                }
                if !out.is_empty() && !send(io, &out, done).await {
                    return Ok(false);
                }
                out.clear();
                body.clear();
                if read_some(up, &mut body, read_timeout).await? == 0 {
                    if rechunk && !send(io, b"0\r\n\r\n", done).await {
                        return Ok(false);
                    }
                    return Ok(false);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_ends_at_an_empty_line() {
        assert!(!head_complete(b""));
        assert!(!head_complete(b"GET / HTTP/1.1\r\nHost: a\r\n"));
        assert!(head_complete(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(head_complete(b"GET / HTTP/1.1\nHost: a\n\n"));
        assert!(head_complete(b"GET / HTTP/1.1\r\nHost: a\n\r\n"));
        assert!(!head_complete(b"GET / HTTP/1.1\r\nHost: a\r\n\r"));
    }

    /// What the head policy says of `raw`: `Ok(Some((close, host)))` fast path, `Ok(None)`
    /// handed over, `Err(status)` refused.
    type FastFacts = (bool, Result<Option<String>, BadHost>);

    fn verdict(raw: &[u8]) -> Result<Option<FastFacts>, u16> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match parse(raw, &mut headers, true).0 {
            Verdict::Fast(r) => Ok(Some((r.conn.close, r.host.map(|h| h.map(String::from))))),
            Verdict::HandOver(..) | Verdict::Upgrade(_) => Ok(None),
            Verdict::Refuse(r) => Err(r.status),
        }
    }

    #[test]
    fn a_switch_must_be_to_an_offered_protocol() {
        assert!(offers(b"websocket", b"websocket"));
        assert!(offers(b"foo/2, WebSocket", b"websocket"));
        assert!(offers(b" websocket ", b"WEBSOCKET"));
        assert!(!offers(b"websocket", b"h2c"));
        assert!(!offers(b"", b"websocket"));
        assert!(!offers(b"websockets", b"websocket"));
    }

    #[test]
    fn upgrades_without_a_body_take_the_router_s_tunnel_on_both_engines() {
        let ws = b"GET /terminal/ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        for fast in [true, false] {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let (v, len) = parse(ws, &mut headers, fast);
            assert!(
                matches!(v, Verdict::Upgrade(ref r) if r.upgrade),
                "fast {fast}"
            );
            assert_eq!(len, ws.len());
        }
        // With a body, `Expect`, over HTTP/1.0 or in absolute form: Pingora's engine, as before.
        for other in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\nContent-Length: 3\r\n\r\nabc"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nExpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.0\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
        ] {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let (v, _) = parse(other, &mut headers, true);
            assert!(
                matches!(v, Verdict::HandOver(..)),
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn fast_path_takes_only_simple_requests() {
        let simple = b"GET /a?b=c HTTP/1.1\r\nHost: x.example.com\r\n\r\n";
        assert_eq!(
            verdict(simple),
            Ok(Some((false, Ok(Some("x.example.com".to_string())))))
        );
        assert!(
            verdict(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                .is_ok_and(|v| v.is_some_and(|(close, _)| close))
        );
        assert!(matches!(
            verdict(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"),
            Ok(Some(_))
        ));
        for handed in [
            &b"GET / HTTP/1.0\r\nHost: a\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /{x} HTTP/1.1\r\nHost: a\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert_eq!(
                verdict(handed),
                Ok(None),
                "{:?}",
                String::from_utf8_lossy(handed)
            );
        }
        let two = b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
        assert_eq!(verdict(two).map(|_| ()), Err(400));
        let userinfo = b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n";
        assert_eq!(verdict(userinfo).map(|_| ()), Err(400));
        let not_text = b"GET / HTTP/1.1\r\nHost: a\x80\r\n\r\n";
        assert_eq!(
            verdict(not_text).map(|v| v.map(|t| t.1)),
            Ok(Some(Err(BadHost)))
        );
    }

    #[test]
    fn heads_nginx_and_haproxy_refuse_are_refused() {
        let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
        let big_header = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
            "b".repeat(40_000)
        );
        let many: String = (0..130).map(|i| format!("X-{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        for (raw, status) in [
            (&b"GARBAGE\r\n\r\n"[..], 400),
            (b"GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET a HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET host:80 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 405),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Host\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: \"x\"\r\n\r\n", 400),
            (long_target.as_bytes(), 414),
            (big_header.as_bytes(), 431),
            (many.as_bytes(), 431),
        ] {
            assert_eq!(verdict(raw).map(|_| ()), Err(status), "{:?}", String::from_utf8_lossy(&raw[..raw.len().min(80)]));
        }
    }

    #[test]
    fn response_heads_are_framed() {
        let rid = http::HeaderValue::from_static("rid");
        let stamp = Stamp::new(&rid, None, true);
        let h = |raw: &[u8], head_only: bool| {
            response_head(raw, head_only, false, &stamp)
                .expect("valid")
                .expect("complete")
        };
        let r = h(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
            false,
        );
        assert_eq!(r.framing, Framing::Length(5));
        assert!(r.reusable && !r.close);
        let out = String::from_utf8(r.out).expect("text");
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(out.contains("Content-Length: 5\r\n") && out.contains("x-request-id: rid\r\n"));
        assert!(out.ends_with("connection: keep-alive\r\n\r\n"));
        assert_eq!(out.to_ascii_lowercase().matches("connection").count(), 1);

        let r = h(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
            false,
        );
        assert_eq!(r.framing, Framing::Chunked);
        assert!(!String::from_utf8(r.out)
            .expect("text")
            .contains("Content-Length"));

        let r = h(b"HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!(r.framing, Framing::Eof { rechunk: true });
        assert!(!r.reusable && !r.close);
        assert!(String::from_utf8(r.out)
            .expect("text")
            .contains("transfer-encoding: chunked"));

        let r = h(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true);
        assert_eq!(r.framing, Framing::Empty);
        let r = h(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false);
        assert!(!r.reusable);
        let r = h(b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n", false);
        assert_eq!(r.framing, Framing::Empty);
        assert!(r.reusable);

        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"NOPE\r\n\r\n",
        ] {
            assert!(response_head(bad, false, false, &stamp).is_err());
        }
        assert!(response_head(b"HTTP/1.1 200 OK\r\n", false, false, &stamp)
            .expect("valid")
            .is_none());
    }

    #[test]
    fn the_stamp_replaces_the_workspace_fields() {
        let rid = http::HeaderValue::from_static("rid");
        let hsts = http::HeaderValue::from_static("max-age=60");
        let raw = b"HTTP/1.1 200 OK\r\nStrict-Transport-Security: max-age=0\r\nX-Request-Id: up\r\nContent-Length: 0\r\n\r\n";
        let out = |stamp: &Stamp<'_>| {
            let r = response_head(raw, false, false, stamp)
                .expect("valid")
                .expect("complete");
            String::from_utf8(r.out).expect("text").to_ascii_lowercase()
        };
        let with = out(&Stamp::new(&rid, Some(&hsts), true));
        assert_eq!(with.matches("strict-transport-security").count(), 1);
        assert!(with.contains("strict-transport-security: max-age=60\r\n"));
        assert!(with.contains("x-request-id: rid\r\n") && !with.contains("x-request-id: up"));
        // Over TLS without [tls] hsts, the workspace's own value passes.
        let without = out(&Stamp::new(&rid, None, true));
        assert!(without.contains("strict-transport-security: max-age=0\r\n"));
        // Over plain HTTP, never (RFC 6797 §7.2), configured or not.
        for hsts in [None, Some(&hsts)] {
            let plain = out(&Stamp::new(&rid, hsts, false));
            assert!(!plain.contains("strict-transport-security"), "{plain}");
        }
    }

    #[test]
    fn plain_paths() {
        assert!(plain_path("/a%20b?x=1&y=%2F"));
        assert!(plain_path("//double"));
        assert!(!plain_path("*"));
        assert!(!plain_path("/a b"));
        assert!(!plain_path("/a\"b"));
    }
}

#[cfg(test)]
mod sizes {
    use super::*;
    use crate::decide::ListenerMode;
    use crate::front::Shared;
    use hubify_edge_config::{Config, EMBEDDED_DEFAULT};

    fn front() -> Front {
        let config = Config::from_toml(EMBEDDED_DEFAULT, "embedded").expect("embedded config");
        let fly = crate::fly::FlyNet::new(&config.fly, Duration::from_secs(1)).expect("fly");
        let routes = crate::routes::RouteStore::from_config(&config).expect("routes");
        let shared = Arc::new(Shared {
            config,
            routes: Arc::new(routes),
            fly: Arc::new(fly),
            auth: None,
            limits: Default::default(),
        });
        Front::new(
            ListenerMode::Plain(hubify_edge_config::Dispatch::Forward),
            shared,
        )
    }

    /// An idle keep-alive connection holds the `read_head` future (the request's state is
    /// boxed apart): it must stay small, as docs/performance.md's idle-connection figures assume.
    #[tokio::test]
    async fn idle_connection_state_is_small() {
        let front = front();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let tcp = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let mut io: Stream = Box::new(pingora_core::protocols::l4::stream::Stream::from(tcp));
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let mut shutdown = rx.clone();
        let mut buf = BytesMut::new();
        let timeout = front.config().server.header_timeout;
        let idle =
            std::mem::size_of_val(&read_head(&mut io, &mut buf, &mut shutdown, timeout, false));
        assert!(idle < 1024, "read_head future: {idle} bytes");
    }
}
