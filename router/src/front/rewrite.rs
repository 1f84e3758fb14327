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
//!   `X-Forwarded-Proto`, `X-Request-Id`, `X-Hubify-User`, `X-Hubify-Scopes`;
//! - with `[auth]`, the router's credentials: its session cookie (the other cookies pass), and an
//!   `Authorization` that carried the router's token ([`RouterFields::keeps`]).

use std::borrow::Cow;
use std::net::IpAddr;

use http::HeaderValue;

/// Hop-by-hop field names, never forwarded (RFC 9110 §7.6.1; RFC 9113 §3.2.1 for
/// `HTTP2-Settings`; `Proxy-Authorization` is for the proxy, RFC 9110 §11.7.2).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "http2-settings",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Fields the router writes itself on every forwarded request ([`keep`] has them in its length
/// table; the unit tests check that it drops each).
#[cfg(test)]
const ROUTER_SET: [&str; 7] = [
    "host",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-request-id",
    "x-hubify-user",
    "x-hubify-scopes",
];

/// Whether a hop-by-hop field (response or request side; see [`HOP_BY_HOP`]).
pub fn hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// Whether the client's field `name` goes upstream. `nominated`: the field names the client's
/// `Connection` header lists. (On every forwarded request's every field: the fixed names are
/// found by length first.)
pub fn keep(name: &str, nominated: &[&str]) -> bool {
    let b = name.as_bytes();
    if b.len() >= 4 && b[..4].eq_ignore_ascii_case(b"fly-") {
        return false;
    }
    if b.contains(&b'_') {
        return false;
    }
    let fixed: &[&str] = match b.len() {
        2 => &["te"],
        4 => &["host"],
        7 => &["trailer", "upgrade"],
        10 => &["connection", "keep-alive"],
        12 => &["x-request-id"],
        13 => &["x-hubify-user"],
        14 => &["http2-settings"],
        15 => &["x-forwarded-for", "x-hubify-scopes"],
        16 => &["proxy-connection", "x-forwarded-host"],
        17 => &["x-forwarded-proto"],
        18 => &["proxy-authenticate"],
        19 => &["proxy-authorization"],
        _ => &[],
    };
    !(fixed.iter().any(|h| name.eq_ignore_ascii_case(h))
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
    /// Elements seen in all `Connection` fields.
    elements: usize,
}

/// At most this many elements in all `Connection` fields together, `close` and repeats
/// included (Pingora's and Envoy's bound; a long list only serves to strip fields).
pub const MAX_CONNECTION_ELEMENTS: usize = 9;

/// Fields a `Connection` header may not nominate: the router writes or frames with them.
const NOT_NOMINABLE: [&str; 6] = [
    "host",
    "content-length",
    "transfer-encoding",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

impl<'a> ConnectionTokens<'a> {
    /// Adds one `Connection` field value. Refused: a non-token element (a quoted string, bytes
    /// outside `tchar`), a nominated field of [`NOT_NOMINABLE`] (the router routes and frames
    /// with them), or more than [`MAX_CONNECTION_ELEMENTS`] elements in all.
    pub fn add(&mut self, value: &'a [u8]) -> Result<(), BadConnection> {
        for t in value.split(|&b| b == b',') {
            let t = t.trim_ascii();
            if t.is_empty() {
                continue;
            }
            self.elements += 1;
            if self.elements > MAX_CONNECTION_ELEMENTS {
                return Err(BadConnection);
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
            } else if NOT_NOMINABLE.iter().any(|h| t.eq_ignore_ascii_case(h)) {
                return Err(BadConnection);
            } else {
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
    /// Replaces every client Cookie field (empty: none): HTTP/2's fields joined, or the cookies
    /// without the router's session.
    pub cookie: Option<Cow<'a, [u8]>>,
    /// The client's `Authorization` carried the router's token.
    pub drop_authorization: bool,
    /// An authorized request's user and scopes (`X-Hubify-User`, `X-Hubify-Scopes`).
    pub user: Option<(&'a str, &'a str)>,
}

impl RouterFields<'_> {
    /// Whether the client's field `name` goes upstream: [`keep`], and not a field this request's
    /// fields replace (Cookie) or the router consumed (`Authorization`).
    pub fn keeps(&self, name: &str, nominated: &[&str]) -> bool {
        keep(name, nominated)
            && !(self.cookie.is_some() && name.eq_ignore_ascii_case("cookie"))
            && !(self.drop_authorization && name.eq_ignore_ascii_case("authorization"))
    }

    /// Gives `Host` to `put` (first in the head, RFC 9112 §3.2).
    pub fn write_host(&self, mut put: impl FnMut(&'static str, &[u8])) {
        if let Some(host) = self.host {
            put("host", host.as_bytes());
        }
    }

    /// Gives the other fields to `put` (after the client's).
    pub fn write(&self, mut put: impl FnMut(&'static str, &[u8])) {
        if let Some(cookie) = self.cookie.as_deref().filter(|c| !c.is_empty()) {
            put("cookie", cookie);
        }
        if let Some((user, scopes)) = self.user {
            put("x-hubify-user", user.as_bytes());
            put("x-hubify-scopes", scopes.as_bytes());
        }
        if let Some(host) = self.host {
            put("x-forwarded-host", host.as_bytes());
        }
        if let Some(xff) = &self.forwarded_for {
            put("x-forwarded-for", xff.as_bytes());
        }
        put("x-forwarded-proto", self.proto.as_bytes());
        put("x-request-id", self.request_id);
        if let Some(ip) = self.fly_client_ip {
            put("fly-client-ip", ip_header_value(ip).as_bytes());
        }
        if let Some(up) = self.upgrade {
            put("connection", b"upgrade");
            put("upgrade", up);
        }
    }
}

/// An address as a header value; IPv4 (the usual client) without the formatting machinery.
pub fn ip_header_value(ip: IpAddr) -> HeaderValue {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::try_from(ip.to_string()).unwrap_or(HeaderValue::from_static("-"));
    };
    let mut buf = [0u8; 15];
    let mut n = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            buf[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            buf[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + octet % 10;
        n += 1;
    }
    // Digits and dots are always a valid header value; the fallback is never taken.
    HeaderValue::from_bytes(&buf[..n]).unwrap_or(HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_header_values_match_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "9.10.99.100",
            "255.255.255.255",
            "10.0.200.7",
            "::1",
            "fdaa:0:1::3",
        ] {
            let ip: IpAddr = ip.parse().expect("an address");
            assert_eq!(ip_header_value(ip).as_bytes(), ip.to_string().as_bytes());
        }
    }

    #[test]
    fn the_length_table_covers_every_fixed_name() {
        for name in HOP_BY_HOP.iter().chain(ROUTER_SET.iter()) {
            assert!(!keep(name, &[]), "{name}");
            assert!(!keep(&name.to_ascii_uppercase(), &[]), "{name}");
        }
    }

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
            b"a,b,c,d,e,f,g,h,i,j",
            b"close,close,close,close,close,close,close,close,close,close",
            b"x-forwarded-for",
            b"X-Forwarded-Proto",
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
