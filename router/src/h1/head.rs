//! The HTTP/1 head policy: every request head a connection sends, whichever engine then serves
//! it, is judged here — refused with the router's own page (docs/http.md lists each refusal),
//! served by the fast path, or given to Pingora's engine (with its body's framing, so that
//! Pingora reads exactly that request).

use crate::front::rewrite::{self, ConnectionTokens};
use crate::front::BadHost;

use super::{head_complete, header_text, plain_path, put_header, H1Request};

/// Request heads the fast path serves are at most this large (larger ones go to Pingora).
const HEAD_LIMIT: usize = 16 * 1024;
/// Request heads larger than this are refused with 431 (nginx: 4 × 8 KiB; HAProxy: 16 KiB).
pub(super) const HEAD_MAX: usize = 32 * 1024;
/// Request targets longer than this are refused with 414 (nginx's 8 KiB line buffer).
const TARGET_MAX: usize = 8 * 1024;
/// Request header fields the fast path parses in place (browsers send 10–25).
pub(super) const MAX_HEADERS: usize = 40;
/// More request header fields than this: refused with 431.
const MAX_HEADERS_ANY: usize = 128;

/// How the body of a request handed to Pingora's engine ends (so that Pingora reads exactly
/// that request, never the next one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReqBody {
    /// `Content-Length: n` (0 without a body).
    Length(u64),
    Chunked,
    /// An upgrade request: after its head, the bytes belong to whatever it is upgraded to.
    Tunnel,
}

/// A request the router refuses itself, with its own page; the connection closes after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Refusal {
    pub(super) status: u16,
    pub(super) detail: &'static str,
}

pub(super) const fn refuse(status: u16, detail: &'static str) -> Refusal {
    Refusal { status, detail }
}

/// What the head policy makes of a complete request head.
pub(super) enum Verdict<'a> {
    /// Served by the fast path.
    Fast(H1Request<'a>),
    /// A WebSocket (or other protocol) upgrade without a body, in origin form: routed by the
    /// policy and, once the upstream answers 101, relayed by the router's own tunnel
    /// ([`crate::tunnel`]) whichever engine is configured.
    Upgrade(H1Request<'a>),
    /// Served by Pingora's engine; with a head to give it instead of the client's (an
    /// absolute-form target rewritten to origin form, its authority as `Host`).
    HandOver(ReqBody, Option<Vec<u8>>),
    Refuse(Refusal),
}

/// The facts of a head's fields the policy needs.
pub(super) struct Fields<'a> {
    host: Result<Option<&'a str>, BadHost>,
    conn: ConnectionTokens<'a>,
    body: ReqBody,
    /// `Upgrade` or `Expect` present: never the fast path.
    special: bool,
    /// An HTTP/1.1 `Upgrade` request without `Expect` or a body: the router's own tunnel.
    tunnel: bool,
}

/// Judges a head's fields (RFC 9112 §6: one framing, never both; nginx and HAProxy refuse the
/// same).
pub(super) fn check_fields<'a>(
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
            // One field with one value: a list or a repeated field reaches upstreams that read
            // it differently (nginx refuses it too). A comma is not a digit, so a list fails
            // the digits test.
            if length.is_some() {
                return Err(BAD_FRAMING);
            }
            let v = h.value.trim_ascii();
            if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
                return Err(BAD_FRAMING);
            }
            // 1–18 ASCII digits: always text, always below u64::MAX.
            let n = std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(BAD_FRAMING)?;
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if te.is_some() {
                return Err(BAD_FRAMING);
            }
            te = Some(h.value);
        } else if name.eq_ignore_ascii_case("connection") {
            conn.add(h.value)
                .map_err(|_| refuse(400, "The Connection header is malformed."))?;
        } else if name.eq_ignore_ascii_case("host") {
            // Several Host fields, or userinfo in one: refused before any engine reads them.
            if !matches!(host, Ok(None)) || h.value.contains(&b'@') {
                return Err(refuse(400, "The Host header is malformed or repeated."));
            }
            host = header_text(h.value).map(Some).ok_or(BadHost);
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
    // RFC 9110 §7.8: an upgrade names `upgrade` in Connection too.
    let tunnel = upgrade && conn.upgrade && version == 1 && !special && body == ReqBody::Length(0);
    // Pingora tunnels any HTTP/1.1 request with an Upgrade field once the upstream answers 101
    // (the rare upgrade with a body or `Expect` it is given).
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
        tunnel,
    })
}

const UNREADABLE: Refusal = refuse(400, "The request could not be read.");
const HEAD_TOO_LARGE: Refusal = refuse(431, "The request's header section is too large.");

/// The length of the head httparse found, or the refusal; `Ok(None)`: more fields than the
/// storage it was given.
fn head_len(parsed: httparse::Result<usize>, buf_len: usize) -> Result<Option<usize>, Refusal> {
    match parsed {
        Ok(httparse::Status::Complete(len)) if len <= HEAD_MAX => Ok(Some(len)),
        Err(httparse::Error::TooManyHeaders) => Ok(None),
        Ok(_) if buf_len > HEAD_MAX => Err(HEAD_TOO_LARGE),
        _ => Err(UNREADABLE),
    }
}

/// The verdict for a head Pingora's engine serves: its body framing, and its head in origin
/// form when it came in absolute form.
fn handed_over(
    method: &str,
    target: &str,
    version: u8,
    headers: &[httparse::Header<'_>],
    body: ReqBody,
    len: usize,
) -> (Verdict<'static>, usize) {
    match origin_form(method, target, version, headers) {
        Ok(head) => (Verdict::HandOver(body, head), len),
        Err(r) => (Verdict::Refuse(r), len),
    }
}

/// Judges the head at the start of `buf` (complete, or over [`HEAD_MAX`]): the fast path takes
/// it (when `fast`), Pingora's engine takes it, or the router refuses it. Returns the verdict and
/// the head's length.
pub(super) fn parse<'a>(
    buf: &'a [u8],
    headers: &'a mut [httparse::Header<'a>; MAX_HEADERS],
    fast: bool,
) -> (Verdict<'a>, usize) {
    let mut req = httparse::Request::new(headers);
    let len = match head_len(req.parse(buf), buf.len()) {
        Ok(Some(len)) => len,
        Ok(None) => return many_headers(buf),
        Err(r) => return (Verdict::Refuse(r), 0),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return (Verdict::Refuse(UNREADABLE), 0);
    };
    let headers: &'a [httparse::Header<'a>] = req.headers;
    let f = match judge(method, target, version, headers) {
        Ok(f) => f,
        Err(r) => return (Verdict::Refuse(r), len),
    };
    // An upgrade in origin form takes the router's own tunnel on both engines.
    let tunnel = f.tunnel && plain_path(target);
    let fast = tunnel
        || (fast
            && len <= HEAD_LIMIT
            && version == 1
            && !f.special
            && f.body == ReqBody::Length(0)
            && plain_path(target));
    if !fast {
        return handed_over(method, target, version, headers, f.body, len);
    }
    let req = H1Request {
        method,
        path: target,
        headers,
        host: f.host,
        conn: f.conn,
        upgrade: tunnel,
    };
    if tunnel {
        (Verdict::Upgrade(req), len)
    } else {
        (Verdict::Fast(req), len)
    }
}

/// A head with more than [`MAX_HEADERS`] fields: judged with room for [`MAX_HEADERS_ANY`]
/// (never the fast path).
pub(super) fn many_headers(buf: &[u8]) -> (Verdict<'static>, usize) {
    let mut headers = vec![httparse::EMPTY_HEADER; MAX_HEADERS_ANY];
    let mut req = httparse::Request::new(&mut headers);
    let len = match head_len(req.parse(buf), buf.len()) {
        Ok(Some(len)) => len,
        Ok(None) => {
            return (
                Verdict::Refuse(refuse(431, "The request has too many header fields.")),
                0,
            )
        }
        Err(r) => return (Verdict::Refuse(r), 0),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return (Verdict::Refuse(UNREADABLE), 0);
    };
    match judge(method, target, version, req.headers) {
        Err(r) => (Verdict::Refuse(r), len),
        Ok(f) => handed_over(method, target, version, req.headers, f.body, len),
    }
}

/// Whether `target` is in absolute form (`http://host/path`, RFC 9112 §3.2.2).
pub(super) fn absolute_form(target: &str) -> bool {
    let t = target.as_bytes();
    (t.len() > 7 && t[..7].eq_ignore_ascii_case(b"http://"))
        || (t.len() > 8 && t[..8].eq_ignore_ascii_case(b"https://"))
}

/// For an absolute-form target: the head in origin form, the target's authority as the only
/// `Host` (RFC 9112 §3.2.2: the authority wins over a Host field). `None` for other forms.
pub(super) fn origin_form(
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
pub(super) fn judge<'a>(
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

/// The head policy's verdict on a request head, as plain data: what the fuzz targets and the
/// unit tests check the parser and policy through (no socket, no configuration).
#[derive(Debug, PartialEq, Eq)]
pub enum HeadVerdict {
    /// The fast path serves it: the head's length and the client fields that go upstream.
    Fast {
        len: usize,
        forwarded: Vec<(String, Vec<u8>)>,
    },
    /// The router's own upgrade path serves it (on both engines): the head's length and the
    /// client fields that go upstream (besides the router's `Connection: upgrade` and
    /// `Upgrade`).
    Upgrade {
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
    let forwarded = |req: &H1Request<'_>| {
        req.headers
            .iter()
            .filter(|h| rewrite::keep(h.name, &req.conn.nominated))
            .map(|h| (h.name.to_owned(), h.value.to_vec()))
            .collect()
    };
    match parse(buf, &mut headers, fast) {
        (Verdict::Fast(req), len) => HeadVerdict::Fast {
            len,
            forwarded: forwarded(&req),
        },
        (Verdict::Upgrade(req), len) => HeadVerdict::Upgrade {
            len,
            forwarded: forwarded(&req),
        },
        (Verdict::HandOver(_, head), len) => HeadVerdict::HandOver { len, head },
        (Verdict::Refuse(r), _) => HeadVerdict::Refused(r.status),
    }
}

/// Whether `buf` holds a complete request head (the HTTP/1 loop's test before judging).
pub fn head_is_complete(buf: &[u8]) -> bool {
    head_complete(buf)
}
