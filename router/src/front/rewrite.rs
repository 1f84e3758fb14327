//! The upstream request head: which of the client's header fields a workspace receives, and the
//! fields the router writes itself. One rule for every engine — the HTTP/1.1 fast path, the
//! HTTP/2 stream loop and Pingora's proxy each walk the client's fields, ask [`keep`], and end
//! the head with [`RouterFields::write`]. `docs/http.md` states the same rules as a table.
//!
//! Never forwarded from a client:
//! - hop-by-hop fields (RFC 9110 §7.6.1): `Connection`, `Keep-Alive`, `Proxy-Connection`, `TE`,
//!   `Trailer`, `Upgrade`, `HTTP2-Settings`, and `Proxy-Authorization` (credentials for a proxy,
//!   not for the workspace), plus every field the client's `Connection` header nominates;
//! - every `Fly-*` field: Fly's edge sets them and workspaces trust them (behind Fly the router
//!   writes the one it trusts, `Fly-Client-IP`, itself);
//! - every field whose name contains `_` (Rack, WSGI and PHP read `Fly_Replay_Src` as
//!   `Fly-Replay-Src`, `Content_Length` as `Content-Length`);
//! - the fields the router writes: `Host`, `X-Forwarded-For`, `X-Forwarded-Host`,
//!   `X-Forwarded-Proto`, `X-Request-Id`.

use std::net::IpAddr;

/// Hop-by-hop field names, never forwarded (RFC 9110 §7.6.1; RFC 9113 §3.2.1 for
/// `HTTP2-Settings`; `Proxy-Authorization` is for the proxy, RFC 9110 §11.7.2).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "http2-settings",
    "proxy-authorization",
];

/// Fields the router writes itself on every forwarded request.
const ROUTER_SET: [&str; 5] = [
    "host",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-request-id",
];

/// Whether a hop-by-hop field (response or request side; see [`HOP_BY_HOP`]).
pub fn hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// Whether the client's field `name` goes upstream. `nominated`: the field names the client's
/// `Connection` header lists.
pub fn keep(name: &str, nominated: &[&str]) -> bool {
    let b = name.as_bytes();
    if b.contains(&b'_') {
        return false;
    }
    if b.len() >= 4 && b[..4].eq_ignore_ascii_case(b"fly-") {
        return false;
    }
    !(hop_by_hop(name)
        || ROUTER_SET.iter().any(|h| name.eq_ignore_ascii_case(h))
        || nominated.iter().any(|n| n.eq_ignore_ascii_case(name)))
}

/// A `Connection` header the router refuses (400): an element that is not a token (RFC 9110
/// §7.6.1 lists field names), or one that nominates a field the router cannot drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadConnection;

/// What the client's `Connection` header values say.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConnectionTokens<'a> {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
    /// The other field names listed (dropped before forwarding).
    pub nominated: Vec<&'a str>,
}

/// At most this many names nominated in `Connection` (nginx and HAProxy accept a handful; a
/// long list only serves to strip fields).
pub const MAX_NOMINATED: usize = 8;

impl<'a> ConnectionTokens<'a> {
    /// Adds one `Connection` field value. Refused: a non-token element (a quoted string, bytes
    /// outside `tchar`), a nominated `Host`, `Content-Length` or `Transfer-Encoding` (they frame
    /// and route the request), or more than [`MAX_NOMINATED`] names.
    pub fn add(&mut self, value: &'a [u8]) -> Result<(), BadConnection> {
        for t in value.split(|&b| b == b',') {
            let t = t.trim_ascii();
            if t.is_empty() {
                continue;
            }
            if !t.iter().all(|&b| is_tchar(b)) {
                return Err(BadConnection);
            }
            // tchar is ASCII: always UTF-8.
            let t = std::str::from_utf8(t).map_err(|_| BadConnection)?;
            if t.eq_ignore_ascii_case("close") {
                self.close = true;
            } else if t.eq_ignore_ascii_case("keep-alive") {
                self.keep_alive = true;
            } else if t.eq_ignore_ascii_case("upgrade") {
                self.upgrade = true;
            } else if ["host", "content-length", "transfer-encoding"]
                .iter()
                .any(|h| t.eq_ignore_ascii_case(h))
            {
                return Err(BadConnection);
            } else {
                if self.nominated.len() == MAX_NOMINATED {
                    return Err(BadConnection);
                }
                self.nominated.push(t);
            }
        }
        Ok(())
    }
}

/// A token character (RFC 9110 §5.6.2).
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// The fields the router writes at the end of every forwarded request head, in this order.
#[derive(Debug)]
pub struct RouterFields<'a> {
    /// The host the request named (validated): sent as `Host` and `X-Forwarded-Host`.
    pub host: Option<&'a str>,
    /// `X-Forwarded-For` (see `Front::forwarded_for`).
    pub forwarded_for: Option<http::HeaderValue>,
    pub proto: &'static str,
    pub request_id: &'a [u8],
    /// Behind Fly's http handler: the client address the router trusts, as `Fly-Client-IP`.
    pub fly_client_ip: Option<IpAddr>,
    /// A WebSocket (or other upgrade) handshake: the client's `Upgrade` value, sent with
    /// `Connection: upgrade`.
    pub upgrade: Option<&'a [u8]>,
}

impl RouterFields<'_> {
    /// Gives `Host` to `put` (first in the head, RFC 9112 §3.2).
    pub fn write_host(&self, put: &mut dyn FnMut(&'static str, &[u8])) {
        if let Some(host) = self.host {
            put("host", host.as_bytes());
        }
    }

    /// Gives the other fields to `put` (after the client's).
    pub fn write(&self, put: &mut dyn FnMut(&'static str, &[u8])) {
        if let Some(host) = self.host {
            put("x-forwarded-host", host.as_bytes());
        }
        if let Some(xff) = &self.forwarded_for {
            put("x-forwarded-for", xff.as_bytes());
        }
        put("x-forwarded-proto", self.proto.as_bytes());
        put("x-request-id", self.request_id);
        if let Some(ip) = self.fly_client_ip {
            put(
                "fly-client-ip",
                crate::proxy::ip_header_value(ip).as_bytes(),
            );
        }
        if let Some(up) = self.upgrade {
            put("connection", b"upgrade");
            put("upgrade", up);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_fields_kept_and_dropped() {
        for kept in [
            "accept",
            "cookie",
            "authorization",
            "x-custom",
            "flyer",
            "fl-y",
        ] {
            assert!(keep(kept, &[]), "{kept}");
        }
        for dropped in [
            "Connection",
            "keep-alive",
            "TE",
            "Upgrade",
            "HTTP2-Settings",
            "Proxy-Authorization",
            "Fly-Client-IP",
            "fly-force-instance",
            "FLY-REPLAY-SRC",
            "Fly_Replay_Src",
            "Content_Length",
            "x_anything",
            "Host",
            "X-Forwarded-For",
            "x-request-id",
        ] {
            assert!(!keep(dropped, &[]), "{dropped}");
        }
        assert!(!keep("X-Secret", &["x-secret"]));
        assert!(keep("X-Other", &["x-secret"]));
    }

    #[test]
    fn connection_tokens() {
        let mut c = ConnectionTokens::default();
        c.add(b"close, X-Foo").expect("valid");
        c.add(b"Upgrade").expect("valid");
        assert!(c.close && c.upgrade && !c.keep_alive);
        assert_eq!(c.nominated, vec!["X-Foo"]);
        for bad in [
            &b"\"x-foo\""[..],
            b"host",
            b"close, Content-Length",
            b"Transfer-Encoding",
            b"a b",
            b"a,b,c,d,e,f,g,h,i",
        ] {
            assert_eq!(
                ConnectionTokens::default().add(bad),
                Err(BadConnection),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut c = ConnectionTokens::default();
        c.add(b" , keep-alive ,, ")
            .expect("empty elements are allowed");
        assert!(c.keep_alive);
    }
}
