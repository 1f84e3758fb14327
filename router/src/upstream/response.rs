//! Upstream response heads: parsed once (httparse), framed as RFC 9112 §6.3 says, with the
//! fields a client may receive.

use crate::front::rewrite::hop_by_hop;
use crate::front::Stamp;
use crate::metrics::UpstreamErrorKind;

use super::Failure;

/// Response heads from an upstream: at most this many headers and bytes.
pub(crate) const MAX_RESPONSE_HEADERS: usize = 128;
const RESPONSE_HEAD_LIMIT: usize = 64 * 1024;
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
    /// The first `Upgrade` field (a `101`'s protocol).
    pub fn upgrade(&self) -> Option<&'b [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("upgrade"))
            .map(|h| h.value)
    }

    /// The headers to send on to the client: without hop-by-hop ones, those the router's
    /// [`Stamp`] sets, and a Content-Length beside a transfer coding (RFC 9112 §6.3); repeated
    /// equal lengths once.
    pub fn forwarded(&self, stamp: &Stamp<'_>, mut f: impl FnMut(&'b str, &'b [u8])) {
        let mut wrote_length = false;
        for h in self.headers.iter() {
            let name = h.name;
            if hop_by_hop(name)
                || stamp.replaces(name)
                || self
                    .connection_names
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(name))
            {
                continue;
            }
            let framing = name.eq_ignore_ascii_case("content-length")
                || name.eq_ignore_ascii_case("transfer-encoding");
            if framing && (100..200).contains(&self.status) {
                // A 1xx has no body (RFC 9110 §15.2): no framing fields.
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

/// Comma-separated tokens of a header value, trimmed.
fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}
