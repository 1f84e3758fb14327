//! The HTTP/1.1 fast path: the common requests — HTTP/1.1, origin-form target, no request body,
//! no upgrade — are read, answered or forwarded here, on the connection's own task, with one
//! read and one write per side when the messages fit. Everything else is handed, at a request
//! boundary and with the bytes already read put back, to Pingora's engine (`proxy.rs`): request
//! bodies, WebSockets, `Expect`, HTTP/1.0, absolute-form targets, unusual bytes in the path,
//! heads over 16 KiB and anything that does not parse. HTTP/2 connections go to `http2.rs`.
//!
//! Why: Pingora's per-request machinery (a ~14 KB boxed future per request, header maps built
//! and cloned, a `getpeername` per pooled upstream connection) puts its floor at ~0.6× nginx on
//! the plain forward and costs ~36 KiB per idle keep-alive connection (docs/performance.md).
//! Both engines route through [`Front::route`], so they give the same answers.
//!
//! Upstream connections of the fast path are pooled per worker thread (each worker runs its own
//! single-threaded runtime): at most `upstream.keepalive_pool` idle connections, the oldest
//! dropped first, none kept past `upstream.keepalive_timeout`. A request on a pooled connection
//! that fails before any byte of a response arrived is sent once more on a new connection (the
//! upstream closed the idle connection); fast-path requests have no body, so that is safe.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use http::HeaderName;
use pingora_core::apps::HttpServerApp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::front::rewrite::{self, hop_by_hop, ConnectionTokens};
use crate::front::{
    redirect_headers, replay_headers, upstream_failure_detail, Answer, BadHost, Finished, Front,
    Notes, Page, Plan, PutHeader, RequestView,
};
use crate::metrics::{self, Outcome, UpstreamErrorKind};
use crate::pages;
use crate::proxy::EdgeProxy;
use crate::request_id;
use crate::shutdown::InFlight;
use crate::tls::Sni;

/// Request heads the fast path serves are at most this large (larger ones go to Pingora).
const HEAD_LIMIT: usize = 16 * 1024;
/// Request heads larger than this are refused with 431 (nginx: 4 × 8 KiB; HAProxy: 16 KiB).
const HEAD_MAX: usize = 32 * 1024;
/// Request targets longer than this are refused with 414 (nginx's 8 KiB line buffer).
const TARGET_MAX: usize = 8 * 1024;
/// Request header fields the fast path parses in place (browsers send 10–25).
const MAX_HEADERS: usize = 40;
/// More request header fields than this: refused with 431.
const MAX_HEADERS_ANY: usize = 128;
/// Response heads from an upstream: at most this many headers and bytes.
const MAX_RESPONSE_HEADERS: usize = 128;
const RESPONSE_HEAD_LIMIT: usize = 64 * 1024;
/// How long a keep-alive connection may wait for its next request (Pingora's HTTP/1 default).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// After this long idle, a keep-alive connection gives its read buffer back while it waits.
const IDLE_SHRINK: Duration = Duration::from_secs(1);
/// How long one write to the client may block (nginx's `send_timeout`).
pub(crate) const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Read size for request heads; grows up to [`HEAD_MAX`] for larger heads.
const HEAD_READ: usize = 2048;
/// Read size for response bodies.
pub(crate) const BODY_READ: usize = 16 * 1024;

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

/// The connection facts every request needs, read once.
pub(crate) struct ConnInfo {
    pub peer: Option<IpAddr>,
    pub sni: Option<String>,
}

impl ConnInfo {
    /// The client's address and the TLS server name of `io`'s connection.
    pub fn of(io: &Stream) -> ConnInfo {
        ConnInfo {
            peer: io
                .get_socket_digest()
                .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip())),
            sni: io
                .get_ssl_digest()
                .and_then(|d| d.extension.get::<Sni>().map(|s| s.0.clone())),
        }
    }
}

/// Serves an HTTP/1 connection until it closes. Every request head is read and judged here
/// (the head deadline, the refusals of `docs/http.md`); with `fast`, simple requests are served
/// here too, and every other request is given, alone, to Pingora's engine (`pingora`), which
/// hands the connection back when it is done with it.
pub(crate) async fn serve(
    front: &Front,
    pingora: &Arc<HttpProxy<EdgeProxy>>,
    fast: bool,
    mut io: Stream,
    shutdown: &ShutdownWatch,
) {
    let info = ConnInfo::of(&io);
    let header_timeout = front.config().server.header_timeout;
    let mut shutdown = shutdown.clone();
    let mut buf = BytesMut::new();
    loop {
        let closing = *shutdown.borrow();
        let timed_out = match read_head(&mut io, &mut buf, &mut shutdown, header_timeout).await {
            HeadRead::Complete => false,
            HeadRead::Closed => {
                Shutdown::shutdown(&mut *io).await;
                return;
            }
            HeadRead::TimedOut => true,
        };
        // Boxed: an idle connection then holds only the small state of `read_head`, not the
        // ~3 KB of a request in progress (measured by `sizes::future_sizes`).
        let (next, consumed) = Box::pin(request(
            front, &mut io, &buf, &info, closing, fast, timed_out,
        ))
        .await;
        match next {
            Next::KeepAlive => buf.advance(consumed),
            Next::Close => {
                Shutdown::shutdown(&mut *io).await;
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
async fn read_head(
    io: &mut Stream,
    buf: &mut BytesMut,
    shutdown: &mut ShutdownWatch,
    header_timeout: Duration,
) -> HeadRead {
    // The head must arrive within `header_timeout` of its first bytes (no slow trickle).
    let mut deadline = None;
    loop {
        if head_complete(buf) || buf.len() > HEAD_MAX {
            return HeadRead::Complete;
        }
        if buf.is_empty() {
            if *shutdown.borrow() {
                return HeadRead::Closed;
            }
            match wait_idle(io, buf, shutdown).await {
                Idle::Data => continue,
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
    // The stream cannot peek (TLS): wait with a buffer.
    buf.reserve(HEAD_READ);
    let read = tokio::time::timeout(rest, io.read_buf(buf));
    let r = tokio::select! {
        r = read => r,
        _ = changed(shutdown) => return Idle::Closed,
    };
    match r {
        Ok(Ok(n)) if n > 0 => Idle::Data,
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
fn head_complete(buf: &[u8]) -> bool {
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
fn plain_path(path: &str) -> bool {
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
struct H1Request<'a> {
    method: &'a str,
    path: &'a str,
    headers: &'a [httparse::Header<'a>],
    host: Result<Option<&'a str>, BadHost>,
    /// What the client's `Connection` header says (hop-by-hop names, close).
    conn: ConnectionTokens<'a>,
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
        false
    }
}

/// Text as `HeaderValue::to_str` accepts it: visible ASCII, space and tab.
fn header_text(v: &[u8]) -> Option<&str> {
    if v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) {
        std::str::from_utf8(v).ok()
    } else {
        None
    }
}

/// Comma-separated tokens of a header value, trimmed.
fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// How the body of a request handed to Pingora's engine ends (so that Pingora reads exactly
/// that request, never the next one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReqBody {
    /// `Content-Length: n` (0 without a body).
    Length(u64),
    Chunked,
    /// An upgrade request: after its head, the bytes belong to whatever it is upgraded to.
    Tunnel,
}

/// A request the router refuses itself, with its own page; the connection closes after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refusal {
    status: u16,
    detail: &'static str,
}

const fn refuse(status: u16, detail: &'static str) -> Refusal {
    Refusal { status, detail }
}

/// What the head policy makes of a complete request head.
enum Verdict<'a> {
    /// Served by the fast path.
    Fast(H1Request<'a>),
    /// Served by Pingora's engine.
    /// Served by Pingora's engine; with a head to give it instead of the client's (an
    /// absolute-form target rewritten to origin form, its authority as `Host`).
    HandOver(ReqBody, Option<Vec<u8>>),
    Refuse(Refusal),
}

/// The facts of a head's fields the policy needs.
struct Fields<'a> {
    host: Result<Option<&'a str>, BadHost>,
    conn: ConnectionTokens<'a>,
    body: ReqBody,
    /// `Upgrade` or `Expect` present: never the fast path.
    special: bool,
}

/// Judges a head's fields (RFC 9112 §6: one framing, never both; nginx and HAProxy refuse the
/// same).
fn check_fields<'a>(
    version: u8,
    headers: &'a [httparse::Header<'a>],
) -> Result<Fields<'a>, Refusal> {
    const BAD_FRAMING: Refusal = refuse(400, "The request's body framing is malformed.");
    let mut host = Ok(None);
    let mut conn = ConnectionTokens::default();
    let mut length: Option<u64> = None;
    let mut te: Option<&[u8]> = None;
    let mut upgrade = false;
    let mut special = false;
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            for v in h.value.split(|&b| b == b',') {
                let v = v.trim_ascii();
                let n = std::str::from_utf8(v)
                    .ok()
                    .filter(|v| {
                        !v.is_empty() && v.len() <= 18 && v.bytes().all(|b| b.is_ascii_digit())
                    })
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or(BAD_FRAMING)?;
                if length.is_some_and(|l| l != n) {
                    return Err(BAD_FRAMING);
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if te.is_some() {
                return Err(BAD_FRAMING);
            }
            te = Some(h.value);
        } else if name.eq_ignore_ascii_case("connection") {
            conn.add(h.value)
                .map_err(|_| refuse(400, "The Connection header is malformed."))?;
        } else if name.eq_ignore_ascii_case("host") {
            host = match host {
                Ok(None) => header_text(h.value).map(Some).ok_or(BadHost),
                _ => Err(BadHost),
            };
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        } else if name.eq_ignore_ascii_case("expect") {
            special = true;
        }
    }
    let body = match (te, length) {
        (Some(_), Some(_)) => return Err(BAD_FRAMING),
        // Exactly `chunked`: no other coding, no list, no HTTP/1.0.
        (Some(v), None) if version == 1 && v.trim_ascii().eq_ignore_ascii_case(b"chunked") => {
            ReqBody::Chunked
        }
        (Some(_), None) => return Err(BAD_FRAMING),
        (None, n) => ReqBody::Length(n.unwrap_or(0)),
    };
    // Pingora tunnels any HTTP/1.1 request with an Upgrade field once the upstream answers 101.
    let body = if upgrade && version == 1 {
        ReqBody::Tunnel
    } else {
        body
    };
    Ok(Fields {
        host,
        conn,
        body,
        special: special || upgrade,
    })
}

/// Judges the head at the start of `buf` (complete, or over [`HEAD_MAX`]): the fast path takes
/// it (when `fast`), Pingora's engine takes it, or the router refuses it. Returns the verdict and
/// the head's length.
fn parse<'a>(
    buf: &'a [u8],
    headers: &'a mut [httparse::Header<'a>; MAX_HEADERS],
    fast: bool,
) -> (Verdict<'a>, usize) {
    let mut req = httparse::Request::new(headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= HEAD_MAX => len,
        Ok(_) if buf.len() > HEAD_MAX => {
            return (
                Verdict::Refuse(refuse(431, "The request's header section is too large.")),
                0,
            )
        }
        Err(httparse::Error::TooManyHeaders) => return many_headers(buf),
        _ => {
            return (
                Verdict::Refuse(refuse(400, "The request could not be read.")),
                0,
            )
        }
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return (
            Verdict::Refuse(refuse(400, "The request could not be read.")),
            0,
        );
    };
    let headers: &'a [httparse::Header<'a>] = req.headers;
    match judge(method, target, version, headers) {
        Err(r) => (Verdict::Refuse(r), len),
        Ok(f) => {
            let fast = fast
                && len <= HEAD_LIMIT
                && version == 1
                && !f.special
                && f.body == ReqBody::Length(0)
                && plain_path(target);
            if fast {
                let req = H1Request {
                    method,
                    path: target,
                    headers,
                    host: f.host,
                    conn: f.conn,
                };
                (Verdict::Fast(req), len)
            } else {
                match origin_form(method, target, version, headers) {
                    Ok(head) => (Verdict::HandOver(f.body, head), len),
                    Err(r) => (Verdict::Refuse(r), len),
                }
            }
        }
    }
}

/// A head with more than [`MAX_HEADERS`] fields: judged with room for [`MAX_HEADERS_ANY`].
fn many_headers(buf: &[u8]) -> (Verdict<'static>, usize) {
    let refused = |r| (Verdict::Refuse(r), 0);
    let mut headers = vec![httparse::EMPTY_HEADER; MAX_HEADERS_ANY];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= HEAD_MAX => len,
        Err(httparse::Error::TooManyHeaders) => {
            return refused(refuse(431, "The request has too many header fields."))
        }
        Ok(_) if buf.len() > HEAD_MAX => {
            return refused(refuse(431, "The request's header section is too large."))
        }
        _ => return refused(refuse(400, "The request could not be read.")),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return refused(refuse(400, "The request could not be read."));
    };
    match judge(method, target, version, req.headers) {
        Err(r) => (Verdict::Refuse(r), len),
        Ok(f) => match origin_form(method, target, version, req.headers) {
            Ok(head) => (Verdict::HandOver(f.body, head), len),
            Err(r) => (Verdict::Refuse(r), len),
        },
    }
}

/// Whether `target` is in absolute form (`http://host/path`, RFC 9112 §3.2.2).
fn absolute_form(target: &str) -> bool {
    let t = target.as_bytes();
    (t.len() > 7 && t[..7].eq_ignore_ascii_case(b"http://"))
        || (t.len() > 8 && t[..8].eq_ignore_ascii_case(b"https://"))
}

/// For an absolute-form target: the head in origin form, the target's authority as the only
/// `Host` (RFC 9112 §3.2.2: the authority wins over a Host field). `None` for other forms.
fn origin_form(
    method: &str,
    target: &str,
    version: u8,
    headers: &[httparse::Header<'_>],
) -> Result<Option<Vec<u8>>, Refusal> {
    if !absolute_form(target) {
        return Ok(None);
    }
    let rest = target.split_once("://").map_or("", |(_, r)| r);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return Err(refuse(400, "The request target's authority is malformed."));
    }
    let mut out = Vec::with_capacity(target.len() + 256);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    if !path.starts_with('/') {
        out.push(b'/');
    }
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(if version == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    put_header(&mut out, "Host", authority.as_bytes());
    for h in headers {
        if !h.name.eq_ignore_ascii_case("host") {
            put_header(&mut out, h.name, h.value);
        }
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(out))
}

/// The request line and fields, judged: the target's bytes and form (RFC 9112 §3.2), then the
/// fields ([`check_fields`]).
fn judge<'a>(
    method: &str,
    target: &str,
    version: u8,
    headers: &'a [httparse::Header<'a>],
) -> Result<Fields<'a>, Refusal> {
    if target.len() > TARGET_MAX {
        return Err(refuse(414, "The request target is too long."));
    }
    if !target.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Err(refuse(400, "The request target contains bytes it may not."));
    }
    if method == "CONNECT" {
        return Err(refuse(405, "This router does not tunnel CONNECT requests."));
    }
    let origin = target.starts_with('/');
    let absolute = absolute_form(target);
    let asterisk = target == "*" && method == "OPTIONS";
    if !(origin || absolute || asterisk) {
        return Err(refuse(400, "The request target's form is not allowed."));
    }
    check_fields(version, headers)
}

/// One request: routed, answered or forwarded, counted. Returns what follows and the length
/// of its head.
async fn request(
    front: &Front,
    io: &mut Stream,
    buf: &[u8],
    info: &ConnInfo,
    closing: bool,
    fast: bool,
    timed_out: bool,
) -> (Next, usize) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let (verdict, len) = if timed_out {
        let r = refuse(408, "The request head did not arrive in time.");
        (Verdict::Refuse(r), 0)
    } else {
        parse(buf, &mut headers, fast)
    };
    let req = match verdict {
        Verdict::Fast(req) => req,
        Verdict::HandOver(body, head) => return (Next::HandOver(body, head), len),
        Verdict::Refuse(r) => {
            refused(front, io, info, r).await;
            return (Next::Close, len);
        }
    };
    let _in_flight = InFlight::enter();
    let start = Instant::now();
    let request_id = request_id::header_value_from(req.header(&crate::front::X_REQUEST_ID));
    let rid = request_id::as_str(&request_id);
    let close = req.conn.close || closing;
    let mut notes = Notes::default();
    let answer = front.route(&req, info.sni.as_deref(), &mut notes).await;
    // For X-Forwarded-For and the access log.
    let client = front.client_ip(&req, info.peer);
    let head_only = req.method == "HEAD";
    let mut done = Done {
        outcome: Outcome::Error,
        status: 0,
        bytes_sent: 0,
        close,
        error: "-",
    };
    let mut upstream = None;
    match answer {
        Answer::Page(p) => {
            done.outcome = p.outcome;
            done.close |= p.closes_connection();
            let json = pages::prefers_json(req.header(&http::header::ACCEPT));
            page(io, &mut done, &p, rid, json, head_only).await;
        }
        Answer::Redirect(location) => {
            done.outcome = Outcome::Redirect;
            small(io, &mut done, 308, rid, |put| {
                redirect_headers(&location, put)
            })
            .await;
        }
        Answer::Replay { value, cache_ttl } => {
            done.outcome = Outcome::Replay;
            small(io, &mut done, 307, rid, |put| {
                replay_headers(&value, cache_ttl, put)
            })
            .await;
        }
        Answer::Forward(plan) => {
            done.outcome = Outcome::Forward;
            upstream = Some(plan.addr);
            forward(front, io, &req, &plan, client, rid, &mut done).await;
        }
    }
    front.finish(&Finished {
        request_id: rid,
        method: req.method,
        label: notes.label.as_deref(),
        outcome: done.outcome,
        rule: notes.rule,
        status: done.status,
        elapsed: start.elapsed(),
        timed: true,
        upstream,
        bytes_sent: done.bytes_sent,
        bytes_received: 0,
        client,
        error: done.error,
    });
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
    let _in_flight = InFlight::enter();
    let start = Instant::now();
    let request_id = request_id::header_value_from(None);
    let rid = request_id::as_str(&request_id);
    let mut done = Done {
        outcome: Outcome::Refused,
        status: 0,
        bytes_sent: 0,
        close: true,
        error: "-",
    };
    let p = Page {
        status: r.status,
        outcome: Outcome::Refused,
        detail: r.detail.into(),
        retry_after: false,
    };
    page(io, &mut done, &p, rid, false, false).await;
    front.finish(&Finished {
        request_id: rid,
        method: "-",
        label: None,
        outcome: done.outcome,
        rule: None,
        status: done.status,
        elapsed: start.elapsed(),
        timed: true,
        upstream: None,
        bytes_sent: done.bytes_sent,
        bytes_received: 0,
        client: info.peer,
        error: done.error,
    });
}

/// How a request went.
struct Done {
    outcome: Outcome,
    status: u16,
    /// Response body bytes written to the client.
    bytes_sent: usize,
    /// The connection closes after this response.
    close: bool,
    /// What failed, for the access log.
    error: &'static str,
}

/// Appends `name: value\r\n`.
pub(crate) fn put_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
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

/// Ends a head: the request id, the connection's fate (said explicitly, as nginx and Pingora
/// do), the empty line.
fn end_head(out: &mut Vec<u8>, rid: &str, close: bool) {
    put_header(out, "x-request-id", rid.as_bytes());
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
            done.error = "WriteError";
            false
        }
    }
}

/// One of the router's own pages.
async fn page(io: &mut Stream, done: &mut Done, p: &Page, rid: &str, json: bool, head_only: bool) {
    let mut out = Vec::with_capacity(512);
    status_line(&mut out, p.status, canonical_reason(p.status));
    let body = p.render(rid, json, &mut |name, value| {
        put_header(&mut out, name, value)
    });
    end_head(&mut out, rid, done.close);
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
    rid: &str,
    headers: impl FnOnce(PutHeader<'_>),
) {
    let mut out = Vec::with_capacity(256);
    status_line(&mut out, status, canonical_reason(status));
    headers(&mut |name, value| put_header(&mut out, name, value));
    end_head(&mut out, rid, done.close);
    done.status = status;
    send(io, &out, done).await;
}

/// The head policy's verdict on a request head, as plain data: what the fuzz targets and the
/// unit tests check the parser and policy through (no socket, no configuration).
#[derive(Debug, PartialEq, Eq)]
pub enum HeadVerdict {
    /// The fast path serves it: the head's length and the client fields that go upstream.
    Fast {
        len: usize,
        forwarded: Vec<(String, Vec<u8>)>,
    },
    /// Pingora's engine serves it: the head's length, and the head it is given instead of the
    /// client's (absolute form made origin form).
    HandOver { len: usize, head: Option<Vec<u8>> },
    /// The router's own page with this status.
    Refused(u16),
}

/// Judges the request head at the start of `buf` (complete, or over the head limit) as the
/// HTTP/1 loop does; `fast`: `server.fast_path`.
pub fn judge_head(buf: &[u8], fast: bool) -> HeadVerdict {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match parse(buf, &mut headers, fast) {
        (Verdict::Fast(req), len) => HeadVerdict::Fast {
            len,
            forwarded: req
                .headers
                .iter()
                .filter(|h| rewrite::keep(h.name, &req.conn.nominated))
                .map(|h| (h.name.to_owned(), h.value.to_vec()))
                .collect(),
        },
        (Verdict::HandOver(_, head), len) => HeadVerdict::HandOver { len, head },
        (Verdict::Refuse(r), _) => HeadVerdict::Refused(r.status),
    }
}

/// Whether `buf` holds a complete request head (the HTTP/1 loop's test before judging).
pub fn head_is_complete(buf: &[u8]) -> bool {
    head_complete(buf)
}

/// An upstream response head at the start of `buf`, as the router reads it: `Ok(None)` when
/// incomplete, else its status, body framing, reusability and length.
pub fn judge_response(
    buf: &[u8],
    head_only: bool,
) -> Result<Option<(u16, Framing, bool, usize)>, UpstreamErrorKind> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    match parse_response(buf, &mut headers, head_only) {
        Ok(Some(p)) => Ok(Some((p.status, p.framing, p.reusable, p.len))),
        Ok(None) => Ok(None),
        Err(f) => Err(f.kind),
    }
}

/// Where a chunked body fed in `pieces` ends (`Ok(Some(n))`: after `n` bytes in all), as the
/// router's decoder finds it, with the decoded body; `Err` for a malformed one.
pub fn chunked_end(pieces: &[&[u8]]) -> Result<(Option<usize>, Vec<u8>), ()> {
    let mut scan = Chunked::default();
    let mut at = 0;
    let mut body = Vec::new();
    for p in pieces {
        match scan.decode(p, |r| body.extend_from_slice(&p[r])) {
            Ok(Some(n)) => return Ok((Some(at + n), body)),
            Ok(None) => at += p.len(),
            Err(BadChunk) => return Err(()),
        }
    }
    Ok((None, body))
}

// ---------------------------------------------------------------------------------------------
// Forwarding.

/// An idle upstream connection.
struct Pooled {
    addr: SocketAddr,
    stream: TcpStream,
    since: Instant,
}

thread_local! {
    /// This worker's idle upstream connections, oldest first.
    static POOL: RefCell<VecDeque<Pooled>> = const { RefCell::new(VecDeque::new()) };
}

/// An idle connection to `addr`, the most recently used first; expired ones are dropped, and so
/// is one the upstream wrote to or closed while it sat idle ([`quiet`]).
fn checkout(addr: SocketAddr, max_idle: Duration) -> Option<TcpStream> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let now = Instant::now();
        while pool
            .front()
            .is_some_and(|c| now.duration_since(c.since) > max_idle)
        {
            pool.pop_front();
        }
        loop {
            let i = pool.iter().rposition(|c| c.addr == addr)?;
            let c = pool.remove(i)?;
            if quiet(&c.stream) {
                return Some(c.stream);
            }
        }
    })
}

/// Whether an idle upstream connection is still at a message boundary: nothing to read and not
/// closed. Bytes sent after a complete response (a late body, a second response) would be read
/// as the next request's response — another client's — so such a connection is never reused
/// (as Pingora's pool, nginx and HAProxy do).
fn quiet(stream: &TcpStream) -> bool {
    let mut one = [0u8; 1];
    matches!(stream.try_read(&mut one), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

pub(crate) fn checkin(addr: SocketAddr, stream: TcpStream, capacity: usize) {
    if capacity == 0 {
        return;
    }
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        pool.push_back(Pooled {
            addr,
            stream,
            since: Instant::now(),
        });
        while pool.len() > capacity {
            pool.pop_front();
        }
    })
}

/// Why forwarding failed.
#[derive(Debug)]
pub(crate) struct Failure {
    pub kind: UpstreamErrorKind,
    /// Nothing of a response arrived on a reused connection: worth one more try.
    pub retry: bool,
}

impl Failure {
    pub fn new(kind: UpstreamErrorKind) -> Failure {
        Failure { kind, retry: false }
    }

    pub fn status(&self) -> u16 {
        match self.kind {
            UpstreamErrorKind::ReadTimeout | UpstreamErrorKind::WriteTimeout => 504,
            _ => 502,
        }
    }
}

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, Failure> {
    let started = Instant::now();
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(Failure::new(UpstreamErrorKind::ConnectTimeout)),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(Failure::new(UpstreamErrorKind::ConnectRefused))
        }
        Ok(Err(_)) => return Err(Failure::new(UpstreamErrorKind::ConnectError)),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    metrics::upstream().connected(false, Some(started.elapsed()));
    Ok(stream)
}

/// The request head sent upstream: the client's fields the policy keeps
/// ([`rewrite::keep`]), then the router's ([`rewrite::RouterFields`]).
fn upstream_head(
    front: &Front,
    req: &H1Request<'_>,
    plan: &Plan,
    client: Option<IpAddr>,
    rid: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(plan.rewritten.as_deref().unwrap_or(req.path).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let fields = front.router_fields(req, client, rid.as_bytes());
    fields.write_host(&mut |name, value| put_header(&mut out, name, value));
    for h in req.headers {
        if rewrite::keep(h.name, &req.conn.nominated) {
            put_header(&mut out, h.name, h.value);
        }
    }
    end_upstream_head(&mut out, &fields);
    out
}

/// Ends a request head sent upstream (both client protocols): the router's fields, the empty
/// line.
pub(crate) fn end_upstream_head(out: &mut Vec<u8>, fields: &rewrite::RouterFields<'_>) {
    fields.write(&mut |name, value| put_header(out, name, value));
    out.extend_from_slice(b"\r\n");
}

/// How the body of a response is delimited.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes: sent on chunked (`rechunk`) or raw with the client closed.
    Eof {
        rechunk: bool,
    },
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
}

/// An upstream response head, parsed; shared by both client protocols.
pub(crate) struct Parsed<'b, 'h> {
    pub status: u16,
    pub reason: &'b str,
    headers: &'h [httparse::Header<'b>],
    pub framing: Framing,
    /// The upstream connection can be reused after the body.
    pub reusable: bool,
    /// A transfer coding was named (a Content-Length beside it is not sent on).
    te: bool,
    /// Header names listed in `Connection` (hop-by-hop, not sent on).
    connection_names: Vec<&'b str>,
    /// The length of the head in the upstream's buffer.
    pub len: usize,
}

impl<'b> Parsed<'b, '_> {
    /// The headers to send on to the client: without hop-by-hop ones, `x-request-id` (the
    /// router sets its own) and a Content-Length beside a transfer coding (RFC 9112 §6.3);
    /// repeated equal lengths once.
    pub fn forwarded(&self, mut f: impl FnMut(&'b str, &'b [u8])) {
        let mut wrote_length = false;
        for h in self.headers.iter() {
            let name = h.name;
            if hop_by_hop(name)
                || name.eq_ignore_ascii_case("x-request-id")
                || self
                    .connection_names
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(name))
            {
                continue;
            }
            if name.eq_ignore_ascii_case("content-length") {
                if self.te || wrote_length {
                    continue;
                }
                wrote_length = true;
            }
            f(name, h.value);
        }
    }
}

/// Parses an upstream response head at the start of `buf`, with `headers` as the header
/// storage. `Ok(None)`: incomplete. `Framing::Eof { rechunk }` says whether the body is
/// close-delimited without a transfer coding (`true`, HTTP/1.1 clients get it re-chunked) or
/// under a coding other than chunked (`false`).
pub(crate) fn parse_response<'b, 'h>(
    buf: &'b [u8],
    headers: &'h mut [httparse::Header<'b>],
    head_only: bool,
) -> Result<Option<Parsed<'b, 'h>>, Failure> {
    let invalid = || Failure::new(UpstreamErrorKind::InvalidResponse);
    let mut resp = httparse::Response::new(headers);
    // `Content-Length : 5` from an upstream is read as Pingora's engine reads it (accepted).
    let len = match httparse::ParserConfig::default()
        .allow_spaces_after_header_name_in_responses(true)
        .parse_response(&mut resp, buf)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < RESPONSE_HEAD_LIMIT => return Ok(None),
        _ => return Err(invalid()),
    };
    let status = resp.code.ok_or_else(invalid)?;
    let version = resp.version.ok_or_else(invalid)?;
    let mut keep_alive = version == 1;
    let mut chunked = false;
    let mut te = false;
    let mut length: Option<u64> = None;
    let mut connection_names: Vec<&str> = Vec::new();
    for h in resp.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("connection") {
            for t in tokens(h.value) {
                if t.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = keep_alive || version == 0;
                } else if let Ok(t) = std::str::from_utf8(t) {
                    connection_names.push(t);
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            te = true;
            chunked = tokens(h.value)
                .last()
                .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value.trim_ascii())
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(invalid)?;
            if length.is_some_and(|l| l != v) {
                return Err(invalid());
            }
            length = Some(v);
        }
    }
    let no_body = head_only || status == 204 || status == 304 || (100..200).contains(&status);
    let framing = if no_body {
        Framing::Empty
    } else if te {
        if chunked {
            Framing::Chunked
        } else {
            Framing::Eof { rechunk: false }
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::Eof { rechunk: true }
    };
    let reusable = keep_alive && !matches!(framing, Framing::Eof { .. });
    Ok(Some(Parsed {
        status,
        reason: resp.reason.unwrap_or(""),
        headers: resp.headers,
        framing,
        reusable,
        te,
        connection_names,
        len,
    }))
}

/// Parses an upstream response head at the start of `buf` and writes it for an HTTP/1.1
/// client. `Ok(None)`: incomplete.
fn response_head(
    buf: &[u8],
    head_only: bool,
    close: bool,
    rid: &str,
) -> Result<Option<ResponseHead>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let Some(parsed) = parse_response(buf, &mut headers, head_only)? else {
        return Ok(None);
    };
    let framing = parsed.framing;
    let close = close || framing == Framing::Eof { rechunk: false };
    let mut out = Vec::with_capacity(parsed.len + 64);
    status_line(&mut out, parsed.status, parsed.reason);
    parsed.forwarded(|name, value| put_header(&mut out, name, value));
    if framing == (Framing::Eof { rechunk: true }) {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if (100..200).contains(&parsed.status) {
        out.extend_from_slice(b"\r\n");
    } else {
        end_head(&mut out, rid, close);
    }
    Ok(Some(ResponseHead {
        out,
        status: parsed.status,
        framing,
        reusable: parsed.reusable,
        close,
        len: parsed.len,
    }))
}

/// Reads into `buf` (at most [`BODY_READ`] more) within `timeout`.
pub(crate) async fn read_some(
    up: &mut TcpStream,
    buf: &mut BytesMut,
    timeout: Duration,
) -> Result<usize, UpstreamErrorKind> {
    buf.reserve(BODY_READ);
    match tokio::time::timeout(timeout, up.read_buf(buf)).await {
        Err(_) => Err(UpstreamErrorKind::ReadTimeout),
        Ok(Err(_)) => Err(UpstreamErrorKind::ReadError),
        Ok(Ok(n)) => Ok(n),
    }
}

/// The upstream connections one request may use, in order: an idle pooled one when there is
/// one, then new ones. A request goes out again on the next one only after a failure marked
/// [`Failure::retry`] (a pooled connection the upstream had closed), so at most two are used.
/// Both client protocols forward through this.
pub(crate) struct Upstreams<'a> {
    addr: SocketAddr,
    conf: &'a hubify_edge_config::Upstream,
    pooled: Option<TcpStream>,
}

impl<'a> Upstreams<'a> {
    pub fn new(addr: SocketAddr, conf: &'a hubify_edge_config::Upstream) -> Upstreams<'a> {
        Upstreams {
            addr,
            conf,
            pooled: checkout(addr, conf.keepalive_timeout),
        }
    }

    /// The next connection, and whether it was pooled (reused).
    pub async fn next(&mut self) -> Result<(TcpStream, bool), Failure> {
        if let Some(c) = self.pooled.take() {
            metrics::upstream().connected(true, None);
            return Ok((c, true));
        }
        Ok((connect(self.addr, self.conf.connect_timeout).await?, false))
    }
}

/// Writes a request head upstream within `timeout`; a write error on a `reused` connection is
/// worth a retry.
pub(crate) async fn send_head(
    up: &mut TcpStream,
    head: &[u8],
    timeout: Duration,
    reused: bool,
) -> Result<(), Failure> {
    match tokio::time::timeout(timeout, up.write_all(head)).await {
        Err(_) => Err(Failure::new(UpstreamErrorKind::WriteTimeout)),
        Ok(Err(_)) => Err(Failure {
            kind: UpstreamErrorKind::WriteError,
            retry: reused,
        }),
        Ok(Ok(())) => Ok(()),
    }
}

/// Reads into `rbuf` until `parse` finds a response head at its start (`parse` is tried on what
/// is already there first). With `retryable`, a close or read error before any byte arrived is
/// marked for a retry.
pub(crate) async fn read_response_head<R>(
    up: &mut TcpStream,
    rbuf: &mut BytesMut,
    timeout: Duration,
    retryable: bool,
    mut parse: impl FnMut(&[u8]) -> Result<Option<R>, Failure>,
) -> Result<R, Failure> {
    let retry = |kind| Failure {
        kind,
        retry: retryable,
    };
    let mut got_any = false;
    loop {
        if !rbuf.is_empty() {
            if let Some(r) = parse(rbuf)? {
                return Ok(r);
            }
        }
        match read_some(up, rbuf, timeout).await {
            Ok(0) if !got_any => return Err(retry(UpstreamErrorKind::Closed)),
            Ok(0) => return Err(Failure::new(UpstreamErrorKind::Closed)),
            Ok(_) => got_any = true,
            Err(UpstreamErrorKind::ReadError) if !got_any => {
                return Err(retry(UpstreamErrorKind::ReadError))
            }
            Err(kind) => return Err(Failure::new(kind)),
        }
    }
}

#[allow(clippy::too_many_arguments)]
/// Sends the request on `up` and reads the response head (1xx heads are relayed on the way).
async fn exchange(
    io: &mut Stream,
    up: &mut TcpStream,
    head: &[u8],
    rbuf: &mut BytesMut,
    plan: &Plan,
    write_timeout: Duration,
    reused: bool,
    (head_only, close, rid): (bool, bool, &str),
    done: &mut Done,
) -> Result<ResponseHead, Failure> {
    send_head(up, head, write_timeout, reused).await?;
    // Once an interim head arrived, the upstream has answered: no retry after that.
    let mut retryable = reused;
    loop {
        let parse = |b: &[u8]| response_head(b, head_only, close, rid);
        let resp = read_response_head(up, rbuf, plan.read_timeout, retryable, parse).await?;
        if !(100..200).contains(&resp.status) {
            return Ok(resp);
        }
        if resp.status == 101 {
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

/// Forwards the request and relays the response.
async fn forward(
    front: &Front,
    io: &mut Stream,
    req: &H1Request<'_>,
    plan: &Plan,
    client: Option<IpAddr>,
    rid: &str,
    done: &mut Done,
) {
    let up_conf = &front.config().upstream;
    let head = upstream_head(front, req, plan, client, rid);
    let head_only = req.method == "HEAD";
    let mut rbuf = BytesMut::with_capacity(BODY_READ);
    let args = (head_only, done.close, rid);
    let wt = up_conf.write_timeout;
    let mut upstreams = Upstreams::new(plan.addr, up_conf);
    let (mut up, resp) = loop {
        let (mut up, reused) = match upstreams.next().await {
            Ok(c) => c,
            Err(f) => return failed(io, req, done, rid, f).await,
        };
        rbuf.clear();
        match exchange(io, &mut up, &head, &mut rbuf, plan, wt, reused, args, done).await {
            Ok(resp) => break (up, resp),
            Err(f) if f.retry => continue,
            Err(f) => return failed(io, req, done, rid, f).await,
        }
    };
    done.status = resp.status;
    done.close |= resp.close;
    rbuf.advance(resp.len);
    match relay(io, &mut up, rbuf, resp, plan.read_timeout, done).await {
        Ok(true) => checkin(plan.addr, up, up_conf.keepalive_pool),
        Ok(false) => {}
        Err(Cut::BeforeHead) => {
            let f = Failure::new(UpstreamErrorKind::InvalidResponse);
            failed(io, req, done, rid, f).await
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

/// The access log's name for a failure: Pingora's error type names, so both engines log alike.
pub(crate) fn error_name(kind: UpstreamErrorKind) -> &'static str {
    match kind {
        UpstreamErrorKind::ConnectRefused => "ConnectRefused",
        UpstreamErrorKind::ConnectTimeout => "ConnectTimedout",
        UpstreamErrorKind::ConnectError => "ConnectError",
        UpstreamErrorKind::Tls => "TLSHandshakeFailure",
        UpstreamErrorKind::ReadTimeout => "ReadTimedout",
        UpstreamErrorKind::WriteTimeout => "WriteTimedout",
        UpstreamErrorKind::Closed => "ConnectionClosed",
        UpstreamErrorKind::ReadError => "ReadError",
        UpstreamErrorKind::WriteError => "WriteError",
        UpstreamErrorKind::InvalidResponse => "InvalidHTTPHeader",
        UpstreamErrorKind::Other => "UnknownError",
    }
}

/// An upstream failure before any response went to the client: a 502/504 page.
async fn failed(io: &mut Stream, req: &H1Request<'_>, done: &mut Done, rid: &str, f: Failure) {
    metrics::upstream().error(f.kind);
    tracing::debug!(error = f.kind.as_str(), "upstream failed");
    let status = f.status();
    done.outcome = Outcome::Error;
    done.error = error_name(f.kind);
    let json = pages::prefers_json(req.header(&http::header::ACCEPT));
    let head_only = req.method == "HEAD";
    let p = Page {
        status,
        outcome: Outcome::Error,
        detail: upstream_failure_detail(status).into(),
        retry_after: false,
    };
    page(io, done, &p, rid, json, head_only).await;
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

/// Finds the end of a chunked body (RFC 9112 §7.1), fed in pieces.
#[derive(Debug, Default)]
pub(crate) struct Chunked {
    state: ChunkState,
    size: u64,
    digits: u8,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum ChunkState {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// In the trailer section, at the start of a line.
    TrailerLineStart,
    TrailerLine,
    EndLf,
}

#[derive(Debug)]
pub(crate) struct BadChunk;

impl Chunked {
    /// Feeds the next bytes; `Ok(Some(n))`: the body ends after `n` of them.
    fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, BadChunk> {
        self.decode(bytes, |_| {})
    }

    /// [`Chunked::feed`], giving `data` the ranges of `bytes` that are chunk data (the
    /// decoded body).
    pub(crate) fn decode(
        &mut self,
        bytes: &[u8],
        mut data: impl FnMut(std::ops::Range<usize>),
    ) -> Result<Option<usize>, BadChunk> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.state {
                ChunkState::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                        self.digits += 1;
                        if self.digits > 15 {
                            return Err(BadChunk);
                        }
                        self.size = self.size * 16 + d;
                    }
                    b';' | b' ' | b'\t' if self.digits > 0 => self.state = ChunkState::Extension,
                    b'\r' if self.digits > 0 => self.state = ChunkState::SizeLf,
                    b'\n' if self.digits > 0 => self.size_done(),
                    _ => return Err(BadChunk),
                },
                ChunkState::Extension => match b {
                    b'\r' => self.state = ChunkState::SizeLf,
                    b'\n' => self.size_done(),
                    _ => {}
                },
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return Err(BadChunk);
                    }
                    self.size_done();
                }
                ChunkState::Data => {
                    let take = (self.size).min((bytes.len() - i) as u64);
                    data(i..i + take as usize);
                    self.size -= take;
                    i += take as usize;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::DataCr => match b {
                    b'\r' => self.state = ChunkState::DataLf,
                    b'\n' => self.state = ChunkState::Size,
                    _ => return Err(BadChunk),
                },
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err(BadChunk);
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::TrailerLineStart => match b {
                    b'\r' => self.state = ChunkState::EndLf,
                    b'\n' => return Ok(Some(i + 1)),
                    _ => self.state = ChunkState::TrailerLine,
                },
                ChunkState::TrailerLine => {
                    if b == b'\n' {
                        self.state = ChunkState::TrailerLineStart;
                    }
                }
                ChunkState::EndLf => {
                    if b != b'\n' {
                        return Err(BadChunk);
                    }
                    return Ok(Some(i + 1));
                }
            }
            i += 1;
        }
        Ok(None)
    }

    fn size_done(&mut self) {
        self.state = if self.size == 0 {
            ChunkState::TrailerLineStart
        } else {
            ChunkState::Data
        };
        self.digits = 0;
    }
}

// ---------------------------------------------------------------------------------------------
// Handing a connection to Pingora.

/// One request's bytes, for Pingora's engine: the head and body bytes the router already read,
/// then the rest of that request's body from the connection — and nothing of the next request.
/// Bytes that arrive after the request's end are kept aside (`stash`) and go back to the
/// router's loop with the connection, so pipelined requests are answered in order, whichever
/// engine serves each.
#[derive(Debug)]
struct OneRequest {
    prefix: BytesMut,
    io: Stream,
    rest: Rest,
    /// Bytes read after the request's end.
    stash: BytesMut,
    /// The client closed its side after the request.
    eof: bool,
}

/// What remains of the request's body to read from the connection.
#[derive(Debug)]
enum Rest {
    Length(u64),
    Chunked(Chunked),
    /// An upgrade: everything.
    All,
    Done,
}

impl OneRequest {
    /// The request whose head is the first `head` bytes of `buf` with body `body`; `buf` keeps
    /// whatever follows that request.
    fn new(
        io: Stream,
        buf: &mut BytesMut,
        head: usize,
        body: ReqBody,
        new_head: Option<Vec<u8>>,
    ) -> OneRequest {
        let after_head = &buf[head..];
        let (taken, rest) = match body {
            ReqBody::Length(n) => {
                let take = (after_head.len() as u64).min(n);
                let left = n - take;
                let rest = if left == 0 {
                    Rest::Done
                } else {
                    Rest::Length(left)
                };
                (take as usize, rest)
            }
            ReqBody::Chunked => {
                let mut scan = Chunked::default();
                match scan.feed(after_head) {
                    Ok(Some(end)) => (end, Rest::Done),
                    Ok(None) => (after_head.len(), Rest::Chunked(scan)),
                    // Pingora reads the bad chunk and fails the request itself.
                    Err(BadChunk) => (after_head.len(), Rest::Done),
                }
            }
            ReqBody::Tunnel => (after_head.len(), Rest::All),
        };
        let mut prefix = buf.split_to(head + taken);
        if let Some(new_head) = new_head {
            let body = prefix.split_off(head);
            prefix = BytesMut::from(&new_head[..]);
            prefix.unsplit(body);
        }
        OneRequest {
            prefix,
            io,
            rest,
            stash: BytesMut::new(),
            eof: false,
        }
    }

    /// The connection and the bytes read past the request's end.
    fn into_parts(self) -> (Stream, BytesMut) {
        let mut stash = self.prefix;
        stash.unsplit(self.stash);
        (self.io, stash)
    }

    /// After the request's end: reads what comes into the stash (to notice a close, and to keep
    /// a pipelined request) and tells the reader only of a close.
    fn poll_after(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut chunk = [0u8; HEAD_READ];
        while !self.eof && self.stash.len() <= HEAD_MAX {
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if rb.filled().is_empty() => self.eof = true,
                Poll::Ready(Ok(())) => self.stash.extend_from_slice(rb.filled()),
            }
        }
        if self.eof && self.stash.is_empty() {
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }
}

impl AsyncRead for OneRequest {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        if matches!(this.rest, Rest::Done) {
            return this.poll_after(cx);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let got = buf.filled().len() - before;
        if got == 0 {
            return Poll::Ready(Ok(()));
        }
        let new = &buf.filled()[before..];
        let keep = match &mut this.rest {
            Rest::Length(left) => {
                let keep = (got as u64).min(*left);
                *left -= keep;
                if *left == 0 {
                    this.rest = Rest::Done;
                }
                keep as usize
            }
            Rest::Chunked(scan) => match scan.feed(new) {
                Ok(Some(end)) => {
                    this.rest = Rest::Done;
                    end
                }
                Ok(None) => got,
                Err(BadChunk) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "malformed chunked request body",
                    )))
                }
            },
            Rest::All | Rest::Done => got,
        };
        if keep < got {
            this.stash.extend_from_slice(&new[keep..]);
            buf.set_filled(before + keep);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for OneRequest {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for OneRequest {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.io).await
    }
}

impl UniqueID for OneRequest {
    fn id(&self) -> UniqueIDType {
        self.io.id()
    }
}

impl Ssl for OneRequest {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.io.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.io.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.io.selected_alpn_proto()
    }
}

impl GetTimingDigest for OneRequest {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.io.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.io.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.io.get_write_pending_time()
    }
}

impl GetProxyDigest for OneRequest {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.io.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.io.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for OneRequest {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.io.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.io.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for OneRequest {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if self.prefix.len() >= buf.len() {
            buf.copy_from_slice(&self.prefix[..buf.len()]);
            return Ok(true);
        }
        Ok(false)
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
            Verdict::HandOver(..) => Ok(None),
            Verdict::Refuse(r) => Err(r.status),
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
        assert_eq!(verdict(two).map(|v| v.map(|t| t.1)), Ok(Some(Err(BadHost))));
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

    fn scan_all(body: &[u8], piece: usize) -> Result<Option<usize>, BadChunk> {
        let mut c = Chunked::default();
        let mut at = 0;
        for p in body.chunks(piece.max(1)) {
            if let Some(n) = c.feed(p)? {
                return Ok(Some(at + n));
            }
            at += p.len();
        }
        Ok(None)
    }

    #[test]
    fn chunked_end_is_found_in_any_pieces() {
        let body = b"5\r\nhello\r\n1;ext=1\r\n!\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        for piece in 1..body.len() {
            assert_eq!(scan_all(body, piece).expect("valid"), Some(end), "{piece}");
        }
        assert_eq!(scan_all(b"0\r\n\r\n", 100).expect("valid"), Some(5));
        assert_eq!(scan_all(b"3\r\nabc\r\n", 100).expect("valid"), None);
        assert!(scan_all(b"zz\r\n", 100).is_err());
        assert!(scan_all(b"3\r\nabcX\r\n", 100).is_err());
        assert!(scan_all(b"ffffffffffffffff\r\n", 100).is_err());
    }

    #[test]
    fn chunked_end_is_found_for_generated_bodies() {
        // A small LCG (no dependency): 400 bodies of random chunk sizes (0–5000, hex in either
        // case), extensions and trailers, each fed in random pieces, followed by the next
        // message's bytes; the scanner must stop exactly at the body's end.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n.max(1)
        };
        for case in 0..400 {
            let mut body = Vec::new();
            for _ in 0..next(6) {
                let size = next(5000) + 1;
                let hex = if next(2) == 0 {
                    format!("{size:x}")
                } else {
                    format!("{size:X}")
                };
                body.extend_from_slice(hex.as_bytes());
                if next(3) == 0 {
                    body.extend_from_slice(b";name=\"v\"");
                }
                body.extend_from_slice(b"\r\n");
                body.extend((0..size).map(|i| (i % 251) as u8));
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n");
            for t in 0..next(3) {
                body.extend_from_slice(format!("x-t{t}: {case}\r\n").as_bytes());
            }
            body.extend_from_slice(b"\r\n");
            let end = body.len();
            body.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
            let mut scan = Chunked::default();
            let mut at = 0;
            let found = loop {
                assert!(at < body.len(), "case {case}: no end found");
                let piece = ((next(3000) + 1) as usize).min(body.len() - at);
                if let Some(n) = scan.feed(&body[at..at + piece]).expect("valid") {
                    break at + n;
                }
                at += piece;
            };
            assert_eq!(found, end, "case {case}");
        }
    }

    #[test]
    fn response_heads_are_framed() {
        let h = |raw: &[u8], head_only: bool| {
            response_head(raw, head_only, false, "rid")
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
            assert!(response_head(bad, false, false, "rid").is_err());
        }
        assert!(response_head(b"HTTP/1.1 200 OK\r\n", false, false, "r")
            .expect("valid")
            .is_none());
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
            routes,
            fly: Arc::new(fly),
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
        let idle = std::mem::size_of_val(&read_head(&mut io, &mut buf, &mut shutdown, timeout));
        assert!(idle < 1024, "read_head future: {idle} bytes");
    }
}
