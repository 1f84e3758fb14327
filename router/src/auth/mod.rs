//! Workspace access control: the Hubify API's short-lived tokens and the router's own session.
//!
//! One step of the request policy ([`crate::front::Front::route`] calls [`Auth::check`] for a
//! path rule with `auth = "token"`), so every engine and both client protocols enforce it alike.
//! The router only verifies: the Hubify API is the only issuer of tokens (JWT, EdDSA or ES256,
//! keys from a JWKS file); the session cookie is the router's own HMAC-signed value, verifiable by
//! every replica that shares `HUBIFY_EDGE_SESSION_KEY`. No crypto is written here:
//! `jsonwebtoken` verifies tokens, `ring::hmac` signs and checks sessions. docs/auth.md is the
//! contract.

mod parse;
mod session;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::metrics::AuthResult;

pub use parse::{bearer, query_token, session_cookie, without_session_cookie, Credentials};
pub use session::{Session, SessionKeys, SESSION_COOKIE, SESSION_KEY_ENV};

/// The query parameter that carries a token on a browser's first visit.
pub const TOKEN_PARAM: &str = "hubify_token";

/// Why the JWKS file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("auth.jwks: cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("auth.jwks: {path} is not a JWKS (RFC 7517): {error}")]
    Parse { path: PathBuf, error: String },
    #[error("auth.jwks: {path}: key {index}: {why}")]
    Key {
        path: PathBuf,
        index: usize,
        why: String,
    },
    #[error("auth.jwks: {path} holds no usable key")]
    Empty { path: PathBuf },
}

/// One verification key.
struct Key {
    alg: Algorithm,
    key: DecodingKey,
}

/// The keys of one JWKS file, by `kid`.
#[derive(Default)]
pub struct Keys {
    by_kid: HashMap<String, Key>,
}

impl Keys {
    /// Parses a JWKS document. Keys must have a `kid` and be Ed25519 (`OKP`) or P-256 (`EC`)
    /// public keys of the right length; a key with `"use"` other than `"sig"`, an `alg` that does
    /// not fit its type, or another type is an error naming it (an operator's mistake must not
    /// silently drop a key or fail every token later).
    pub fn parse(path: &Path, text: &[u8]) -> Result<Keys, JwksError> {
        let set: JwkSet = serde_json::from_slice(text).map_err(|e| JwksError::Parse {
            path: path.to_owned(),
            error: e.to_string(),
        })?;
        let mut by_kid = HashMap::with_capacity(set.keys.len());
        for (index, jwk) in set.keys.iter().enumerate() {
            let why = |why: &str| JwksError::Key {
                path: path.to_owned(),
                index,
                why: why.to_string(),
            };
            let Some(kid) = jwk.common.key_id.clone().filter(|k| !k.is_empty()) else {
                return Err(why("no `kid` (every key needs one)"));
            };
            let len32 = |v: &str| URL_SAFE_NO_PAD.decode(v).is_ok_and(|b| b.len() == 32);
            let alg = match &jwk.algorithm {
                AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                    if !len32(&p.x) {
                        return Err(why("`x` is not a 32-byte base64url Ed25519 public key"));
                    }
                    Algorithm::EdDSA
                }
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                    if !len32(&p.x) || !len32(&p.y) {
                        return Err(why(
                            "`x` and `y` must be 32-byte base64url P-256 coordinates",
                        ));
                    }
                    Algorithm::ES256
                }
                _ => return Err(why("not an Ed25519 (OKP) or P-256 (EC) public key")),
            };
            if jwk
                .common
                .public_key_use
                .as_ref()
                .is_some_and(|u| *u != PublicKeyUse::Signature)
            {
                return Err(why("`use` is not \"sig\""));
            }
            if let Some(declared) = jwk.common.key_algorithm {
                let fits = matches!(
                    (declared, alg),
                    (KeyAlgorithm::EdDSA, Algorithm::EdDSA)
                        | (KeyAlgorithm::ES256, Algorithm::ES256)
                );
                if !fits {
                    return Err(why("its `alg` does not fit the key type (EdDSA for OKP Ed25519, ES256 for EC P-256)"));
                }
            }
            let key = DecodingKey::from_jwk(jwk).map_err(|e| why(&e.to_string()))?;
            if by_kid.insert(kid.clone(), Key { alg, key }).is_some() {
                return Err(why(&format!("`kid` {kid:?} appears twice")));
            }
        }
        if by_kid.is_empty() {
            return Err(JwksError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(Keys { by_kid })
    }

    /// Reads and parses the JWKS file.
    pub fn load(path: &Path) -> Result<Keys, JwksError> {
        let text = std::fs::read(path).map_err(|error| JwksError::Read {
            path: path.to_owned(),
            error,
        })?;
        Keys::parse(path, &text)
    }

    pub fn len(&self) -> usize {
        self.by_kid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_kid.is_empty()
    }
}

/// The claims the router reads from a token.
#[derive(Debug, serde::Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    scope: String,
    exp: u64,
    iat: Option<u64>,
}

/// What a protected request may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The token's `sub`: sent upstream as `X-Hubify-User`.
    pub user: String,
    /// The scopes held (space-separated): sent upstream as `X-Hubify-Scopes`.
    pub scopes: String,
    /// How the request proved it.
    pub via: Via,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `Authorization: Bearer <jwt>` (removed before forwarding).
    Bearer,
    /// The router's session cookie (removed before forwarding).
    Session,
    /// `?hubify_token=` on a WebSocket handshake (removed from the target before forwarding).
    Query,
}

/// The verdict on a protected request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Forward, with these facts.
    Granted(Grant),
    /// A first visit with `?hubify_token=`: answer `303` to `location` with `Set-Cookie: cookie`.
    SetSession {
        location: String,
        cookie: String,
        grant: Grant,
    },
    /// Refused: 401 (missing, expired, invalid) or 403 (forbidden, origin).
    Refused(AuthResult),
}

/// What the check needs to know about a request (no I/O, no headers beyond these).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The workspace host, normalized (no port): the token's required `aud`.
    pub host: &'a str,
    /// The host as the client named it (with a port, if any): for `Origin` and the redirect.
    pub authority: &'a str,
    /// The scheme the client used.
    pub scheme: &'a str,
    pub path_and_query: &'a str,
    pub credentials: Credentials<'a>,
    /// A WebSocket handshake.
    pub upgrade: bool,
    /// A method that changes state (not GET, HEAD or OPTIONS): with the session cookie, its
    /// `Origin`, when present, must be the workspace's own (cross-site request forgery from a
    /// sibling workspace, which is same-site for `SameSite=Lax`).
    pub unsafe_method: bool,
    /// The rule's scope.
    pub scope: &'a str,
    /// The workspace's current auth epoch (route record `auth_epoch`).
    pub epoch: u64,
}

/// The access checker: configuration, the current keys, the session keys.
pub struct Auth {
    config: hubify_edge_config::Auth,
    keys: ArcSwap<Keys>,
    sessions: SessionKeys,
    /// The JWKS file's identity when it was last read (size, mtime, inode).
    seen: parking_lot::Mutex<Option<FileStamp>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    ino: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        len: m.len(),
        modified: m.modified().ok(),
        ino: m.ino(),
    })
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Auth {
    /// Loads the JWKS file (an error names `auth.jwks`) and takes the session keys.
    pub fn new(config: hubify_edge_config::Auth, sessions: SessionKeys) -> Result<Auth, JwksError> {
        let before = stamp(&config.jwks);
        let keys = Keys::load(&config.jwks)?;
        Ok(Auth {
            config,
            keys: ArcSwap::from_pointee(keys),
            sessions,
            seen: parking_lot::Mutex::new(before),
        })
    }

    /// The session keys (a reloaded `[auth]` keeps them: the sessions issued stay valid).
    pub fn sessions(&self) -> &SessionKeys {
        &self.sessions
    }

    /// An access checker on keys already parsed (benchmarks, fuzzing); it never reloads.
    pub fn with_keys(config: hubify_edge_config::Auth, keys: Keys, sessions: SessionKeys) -> Auth {
        Auth {
            config,
            keys: ArcSwap::from_pointee(keys),
            sessions,
            seen: parking_lot::Mutex::new(None),
        }
    }

    /// Seals a session (benchmarks, tests: what a first visit sets).
    pub fn seal(&self, s: &Session) -> String {
        self.sessions.seal(s)
    }

    pub fn config(&self) -> &hubify_edge_config::Auth {
        &self.config
    }

    /// Re-reads the JWKS file when it changed since the last read. A file that cannot be read or
    /// parsed keeps the old keys and is logged. Returns whether new keys were loaded.
    pub fn reload_if_changed(&self) -> bool {
        let now = stamp(&self.config.jwks);
        {
            let mut seen = self.seen.lock();
            if *seen == now {
                return false;
            }
            *seen = now;
        }
        match Keys::load(&self.config.jwks) {
            Ok(keys) => {
                tracing::info!(path = %self.config.jwks.display(), keys = keys.len(), "auth.jwks: keys reloaded");
                self.keys.store(Arc::new(keys));
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "auth.jwks: the file changed but cannot be used; the previous keys stay in use");
                false
            }
        }
    }

    /// Watches the JWKS file on a thread of its own, checking it every `every`.
    pub fn watch(self: &Arc<Self>, every: Duration) -> std::io::Result<()> {
        let me = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("auth-jwks".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                match me.upgrade() {
                    Some(auth) => {
                        auth.reload_if_changed();
                    }
                    None => return,
                }
            })
            .map(|_| ())
    }

    /// Verifies a Hubify token for `host`: signature (a known `kid`), `aud`, `exp` (with the
    /// leeway), the lifetime bound, and a `sub`.
    pub fn verify_token(&self, token: &str, host: &str, now: u64) -> Result<Grant, AuthResult> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthResult::Invalid)?;
        let kid = header.kid.as_deref().ok_or(AuthResult::Invalid)?;
        let keys = self.keys.load();
        let key = keys.by_kid.get(kid).ok_or(AuthResult::Invalid)?;
        if key.alg != header.alg {
            return Err(AuthResult::Invalid);
        }
        let leeway = self.config.leeway.as_secs();
        let mut v = Validation::new(key.alg);
        v.leeway = leeway;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "aud", "sub"]);
        v.set_audience(&[host]);
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthResult::Expired,
                ErrorKind::InvalidAudience => AuthResult::Forbidden,
                _ => AuthResult::Invalid,
            }
        })?;
        let c = data.claims;
        let max = self.config.max_token_lifetime.as_secs();
        let issued = match c.iat {
            Some(iat) if iat > now.saturating_add(leeway) => return Err(AuthResult::Invalid),
            Some(iat) => iat,
            None => now,
        };
        if c.exp.saturating_sub(issued) > max {
            return Err(AuthResult::Invalid);
        }
        // `sub` becomes X-Hubify-User: non-empty, printable, nothing a trim would change.
        let sub_ok = header_safe(&c.sub, 256) && !c.sub.is_empty() && c.sub.trim() == c.sub;
        if !sub_ok || !header_safe(&c.scope, 1024) {
            return Err(AuthResult::Invalid);
        }
        Ok(Grant {
            user: c.sub,
            scopes: normalize_scopes(&c.scope),
            via: Via::Bearer,
        })
    }

    /// The access check of a protected request. Order: the WebSocket `Origin`; then
    /// `?hubify_token=` (a first visit: verified, answered with a session and a redirect; on a
    /// WebSocket handshake it authorizes that request); then `Authorization: Bearer` when it
    /// carries a token of one of the API's keys; then the session cookie.
    pub fn check(&self, r: &Request<'_>, now: u64) -> Verdict {
        if r.upgrade {
            if let Some(origin) = r.credentials.origin {
                if !same_origin(origin, r.scheme, r.authority) {
                    return Verdict::Refused(AuthResult::Origin);
                }
            }
        }
        if let Some((token, rest)) = query_token(r.path_and_query) {
            let grant = match self.token_grant(token, r, now) {
                Ok(g) => g,
                Err(e) => return Verdict::Refused(e),
            };
            if r.upgrade {
                return Verdict::Granted(Grant {
                    via: Via::Query,
                    ..grant
                });
            }
            // A session already held for this workspace and user keeps its other scopes, but not
            // past its own expiry (a scope the API stopped granting must not live on).
            let mut expires = now.saturating_add(self.config.session_ttl.as_secs());
            let scopes = match self.session_of(r, now) {
                Ok(s) if s.user == grant.user => {
                    expires = expires.min(s.expires);
                    merge_scopes(&s.scopes, &grant.scopes)
                }
                _ => grant.scopes.clone(),
            };
            let session = Session {
                host: r.host.to_string(),
                user: grant.user.clone(),
                scopes,
                expires,
                epoch: r.epoch,
            };
            let cookie = format!(
                "{SESSION_COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
                self.sessions.seal(&session),
                expires.saturating_sub(now)
            );
            return Verdict::SetSession {
                location: same_site_location(rest),
                cookie,
                grant: Grant {
                    via: Via::Session,
                    scopes: session.scopes,
                    ..grant
                },
            };
        }
        if let Some(token) = r.credentials.authorization.and_then(bearer) {
            if self.is_ours(token) {
                return match self.token_grant(token, r, now) {
                    Ok(g) => Verdict::Granted(g),
                    Err(e) => Verdict::Refused(e),
                };
            }
        }
        let foreign = r
            .credentials
            .origin
            .is_some_and(|o| !same_origin(o, r.scheme, r.authority));
        match self.session_of(r, now) {
            Ok(_) if r.unsafe_method && foreign => Verdict::Refused(AuthResult::Origin),
            Ok(s) if has_scope(&s.scopes, r.scope) => Verdict::Granted(Grant {
                user: s.user,
                scopes: s.scopes,
                via: Via::Session,
            }),
            Ok(_) => Verdict::Refused(AuthResult::Forbidden),
            Err(e) => Verdict::Refused(e),
        }
    }

    /// A verified token that holds the rule's scope.
    fn token_grant(&self, token: &str, r: &Request<'_>, now: u64) -> Result<Grant, AuthResult> {
        let grant = self.verify_token(token, r.host, now)?;
        if has_scope(&grant.scopes, r.scope) {
            Ok(grant)
        } else {
            Err(AuthResult::Forbidden)
        }
    }

    /// The request's session for this workspace: `Missing` without a cookie, `Expired` past its
    /// expiry, `Invalid` when forged, for another host, or from before a revocation.
    fn session_of(&self, r: &Request<'_>, now: u64) -> Result<Session, AuthResult> {
        let raw = r
            .credentials
            .cookie
            .and_then(session_cookie)
            .ok_or(AuthResult::Missing)?;
        let s = self.sessions.open(raw).ok_or(AuthResult::Invalid)?;
        if s.host != r.host {
            return Err(AuthResult::Forbidden);
        }
        if s.epoch != r.epoch {
            return Err(AuthResult::Invalid);
        }
        if s.expires <= now {
            return Err(AuthResult::Expired);
        }
        Ok(s)
    }

    /// Whether an `Authorization` value carries a token of the API's keys: such a field never
    /// reaches a workspace, on any path (a process on a public port must not collect tokens
    /// good for the terminal).
    pub fn carries_token(&self, authorization: &[u8]) -> bool {
        bearer(authorization).is_some_and(|t| self.is_ours(t))
    }

    /// Whether a bearer token names one of the API's keys (else it belongs to the workspace's
    /// own scheme and is left alone).
    fn is_ours(&self, token: &str) -> bool {
        jsonwebtoken::decode_header(token)
            .ok()
            .and_then(|h| h.kid)
            .is_some_and(|kid| self.keys.load().by_kid.contains_key(&kid))
    }

    /// The login link of a refusal page: `login_url?return_to=<the request's URL>`.
    pub fn login_link(
        &self,
        scheme: &str,
        authority: &str,
        path_and_query: &str,
    ) -> Option<String> {
        let base = self.config.login_url.as_deref()?;
        let target = format!("{scheme}://{authority}{}", strip_token(path_and_query));
        let sep = if base.contains('?') { '&' } else { '?' };
        Some(format!("{base}{sep}return_to={}", percent_encode(&target)))
    }
}

/// Whether a path may mean another path to a server that decodes, merges slashes, resolves dot
/// segments, drops `;` parameters or ignores case: then [`canonical_path`] decides which rule's
/// access check applies.
pub fn needs_canonical(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or("");
    path.bytes()
        .any(|b| matches!(b, b'%' | b';' | b'\\') || b.is_ascii_uppercase())
        || path.contains("//")
        || path.contains("/.")
}

/// The path as a lenient server would read it: percent-decoded (bytes as Latin-1), `\` as `/`,
/// `;` parameters dropped, empty and `.` segments removed, `..` resolved, lower-cased.
pub fn canonical_path(path: &str) -> String {
    let path = path.split('?').next().unwrap_or("");
    let raw = path.as_bytes();
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match raw[i] {
            b'%' if i + 2 < raw.len() => match (hex(raw[i + 1]), hex(raw[i + 2])) {
                (Some(h), Some(l)) => {
                    decoded.push(char::from((h * 16 + l) as u8));
                    i += 3;
                    continue;
                }
                _ => decoded.push('%'),
            },
            b'\\' => decoded.push('/'),
            b => decoded.push(char::from(b)),
        }
        i += 1;
    }
    let mut segments: Vec<String> = Vec::new();
    for seg in decoded.split(['/', '\\']) {
        let seg = seg.split(';').next().unwrap_or("");
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s.to_ascii_lowercase()),
        }
    }
    let mut out = String::with_capacity(decoded.len() + 1);
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// The target without `hubify_token` (unchanged when it has none).
fn strip_token(path_and_query: &str) -> std::borrow::Cow<'_, str> {
    match query_token(path_and_query) {
        Some((_, rest)) => rest.into(),
        None => path_and_query.into(),
    }
}

/// A redirect target that stays on this host: `//evil.test/x` (protocol-relative) and `/\\x`
/// become `/evil.test/x` and `/x`.
fn same_site_location(path: String) -> String {
    let rest = path.trim_start_matches(['/', '\\']);
    if rest.len() + 1 == path.len() {
        path
    } else {
        format!("/{rest}")
    }
}

/// Visible ASCII and spaces only, at most `max` bytes: safe in a header value.
fn header_safe(s: &str, max: usize) -> bool {
    s.len() <= max && s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

fn normalize_scopes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for w in s.split(' ').filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

/// Whether the space-separated `scopes` hold `scope`.
pub fn has_scope(scopes: &str, scope: &str) -> bool {
    scopes.split(' ').any(|s| s == scope)
}

fn merge_scopes(old: &str, new: &str) -> String {
    let mut out = new.to_string();
    for s in old.split(' ').filter(|s| !s.is_empty()) {
        if !has_scope(&out, s) {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(s);
        }
    }
    out
}

/// `Origin` equals `<scheme>://<authority>` (ASCII case-insensitive).
fn same_origin(origin: &[u8], scheme: &str, authority: &str) -> bool {
    let o = origin.trim_ascii();
    o.len() == scheme.len() + 3 + authority.len()
        && o[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes())
        && &o[scheme.len()..scheme.len() + 3] == b"://"
        && o[scheme.len() + 3..].eq_ignore_ascii_case(authority.as_bytes())
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
