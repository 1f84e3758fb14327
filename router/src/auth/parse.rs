//! The credentials of a request, read from untrusted bytes: the `hubify_token` query parameter,
//! `Authorization: Bearer`, the session cookie. Pure functions over slices (fuzzed by
//! `fuzz/fuzz_targets/auth.rs`): they never allocate except for the rewritten target and cookie.

use super::session::SESSION_COOKIE;
use super::TOKEN_PARAM;

/// The request fields the access check reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// `Authorization` (the first field).
    pub authorization: Option<&'a [u8]>,
    /// The Cookie fields, joined with `; ` when there were several.
    pub cookie: Option<&'a [u8]>,
    /// `Origin`.
    pub origin: Option<&'a [u8]>,
}

/// The first `hubify_token` query parameter's value, and the target without every
/// `hubify_token` parameter (the others and their order kept; no `?` when none is left).
/// `None` when the target has no such parameter.
pub fn query_token(path_and_query: &str) -> Option<(&str, String)> {
    let (path, query) = path_and_query.split_once('?')?;
    let is_token = |pair: &str| pair.split('=').next() == Some(TOKEN_PARAM);
    let token = query.split('&').find(|p| is_token(p))?;
    let value = token.split_once('=').map_or("", |(_, v)| v);
    let mut rest = String::with_capacity(path_and_query.len());
    rest.push_str(path);
    let mut first = true;
    for pair in query.split('&').filter(|p| !is_token(p)) {
        rest.push(if first { '?' } else { '&' });
        first = false;
        rest.push_str(pair);
    }
    Some((value, rest))
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive, RFC 6750 §2.1); `None`
/// for another scheme or a value that is not a token68.
pub fn bearer(value: &[u8]) -> Option<&str> {
    let v = value.trim_ascii();
    if v.len() < 7 || !v[..6].eq_ignore_ascii_case(b"bearer") || v[6] != b' ' {
        return None;
    }
    let token = v[7..].trim_ascii_start();
    let ok = !token.is_empty()
        && token
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b));
    if ok {
        std::str::from_utf8(token).ok()
    } else {
        None
    }
}

/// The pairs of a Cookie value (`a=1; b=2`), each trimmed.
fn pairs(cookie: &[u8]) -> impl Iterator<Item = &[u8]> {
    cookie
        .split(|&b| b == b';')
        .map(|p| p.trim_ascii())
        .filter(|p| !p.is_empty())
}

fn is_session(pair: &[u8]) -> bool {
    pair.len() > SESSION_COOKIE.len()
        && pair.starts_with(SESSION_COOKIE.as_bytes())
        && pair[SESSION_COOKIE.len()] == b'='
}

/// The value of the router's session cookie (the first one).
pub fn session_cookie(cookie: &[u8]) -> Option<&[u8]> {
    pairs(cookie)
        .find(|p| is_session(p))
        .map(|p| &p[SESSION_COOKIE.len() + 1..])
}

/// Whether a pair holds `__Host-hubify_session=` anywhere: whatever bytes a client put before
/// the name, a lenient cookie parser upstream must never find the router's session.
fn mentions_session(pair: &[u8]) -> bool {
    let needle = SESSION_COOKIE.as_bytes();
    pair.windows(needle.len() + 1)
        .any(|w| w[..needle.len()] == *needle && w[needle.len()] == b'=')
}

/// The Cookie value without the router's session cookie: `None` when it holds none (forward it
/// unchanged), else the other pairs joined with `; ` (empty: send no Cookie at all). A pair that
/// mentions the session cookie anywhere is dropped whole.
pub fn without_session_cookie(cookie: &[u8]) -> Option<Vec<u8>> {
    if !mentions_session(cookie) {
        return None;
    }
    let mut out = Vec::with_capacity(cookie.len());
    for p in pairs(cookie).filter(|p| !mentions_session(p)) {
        if !out.is_empty() {
            out.extend_from_slice(b"; ");
        }
        out.extend_from_slice(p);
    }
    Some(out)
}
