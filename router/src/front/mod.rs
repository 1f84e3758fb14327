//! What a listener does with a request, whichever HTTP engine read it: the request id, host →
//! label, SNI/Host agreement, the route lookup and `decide`, as one [`Answer`]. The HTTP/1.1 fast
//! path (`h1.rs`), the HTTP/2 stream loop (`http2.rs`) and the Pingora phases (`proxy.rs`, for
//! everything those two hand over) all call [`Front::route`] and write the answer in their own
//! way, so all answer alike.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use hubify_edge_config::{Config, PathAuth, PathRule, Reserved};
use pingora_http::ResponseHeader;

use crate::auth::{self, Auth, Grant, Verdict, Via};
use crate::decide::{
    decide, fly_replay_header, match_rule, prefix_matches, replay_cache_ttl_secs, Body, Decision,
    ListenerMode, RequestFacts, Target,
};
use crate::fly::FlyNet;
use crate::host::{classify, normalize_host, HostMatch};
use crate::metrics::{self, AuthResult, LimitKind, Outcome, RequestMetrics, TlsVersion};
use crate::routes::{Lookup, RouteStore};
use crate::tls::Handshake;

pub mod rewrite;
pub mod view;

use rewrite::RouterFields;

/// A listener's current [`Front`]. A configuration reload (SIGHUP) stores a new one; each
/// request loads the one current when it starts and finishes under it.
pub type FrontSlot = arc_swap::ArcSwap<Front>;

/// Everything the listeners share: configuration and the route store.
pub struct Shared {
    pub config: Config,
    /// Shared with the configurations reloaded after this one when the store is Redis.
    pub routes: Arc<RouteStore>,
    /// 6PN resolver, Machines API client, wakes in flight.
    pub fly: Arc<FlyNet>,
    /// The access check of protected path rules (`[auth]`).
    pub auth: Option<Arc<Auth>>,
    /// Per-workspace limits: kept across reloads (`[limits]` is read per request).
    pub limits: Arc<crate::limits::Limiter>,
}

/// Header names read on every request, parsed once (a `&str` name is parsed on every lookup).
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const FLY_CLIENT_IP: HeaderName = HeaderName::from_static("fly-client-ip");
pub const FLY_REPLAY_SRC: HeaderName = HeaderName::from_static("fly-replay-src");
pub const FLY_REPLAY_FAILED: HeaderName = HeaderName::from_static("fly-replay-failed");
pub const ORIGIN: HeaderName = HeaderName::from_static("origin");
pub const X_HUBIFY_USER: HeaderName = HeaderName::from_static("x-hubify-user");
pub const X_HUBIFY_SCOPES: HeaderName = HeaderName::from_static("x-hubify-scopes");
pub const SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");

/// The Cookie fields of a request as the single field HTTP/1.1 allows, joined with `; ` (RFC 9113
/// §8.2.3); `None` without cookies.
pub fn cookie_field<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Option<Cow<'a, [u8]>> {
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(Cow::Borrowed(first));
    };
    let mut out = first.to_vec();
    for v in std::iter::once(second).chain(values) {
        out.extend_from_slice(b"; ");
        out.extend_from_slice(v);
    }
    Some(Cow::Owned(out))
}

/// Several Host headers, or one that is not text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadHost;

/// A request as [`Front::route`] needs to see it.
pub trait RequestView {
    fn method(&self) -> &str;
    fn path_and_query(&self) -> &str;
    /// The host the request names: the URI authority (HTTP/2 `:authority`, HTTP/1 absolute form)
    /// first, else the single Host header. `Err` when there are several Host headers or it is
    /// not text.
    fn host(&self) -> Result<Option<&str>, BadHost>;
    /// The first value of a header.
    fn header(&self, name: &HeaderName) -> Option<&[u8]>;
    fn has_header(&self, name: &HeaderName) -> bool {
        self.header(name).is_some()
    }
    fn is_upgrade(&self) -> bool;
    /// The Cookie fields, joined with `; ` when there are several (RFC 9113 §8.2.3).
    fn cookie(&self) -> Option<Cow<'_, [u8]>>;
    /// The client's protocol splits cookies into several fields (HTTP/2): the upstream head then
    /// always gets them joined into one.
    fn splits_cookies(&self) -> bool;
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
    fn protocol(&self) -> &'static str;
}

/// The connection facts every request needs, read once.
pub struct ConnInfo {
    pub peer: Option<IpAddr>,
    pub sni: Option<String>,
    /// The TLS version (`None` on plain connections).
    pub tls: Option<TlsVersion>,
}

impl ConnInfo {
    /// The client's address, the TLS server name and version of `io`'s connection.
    pub fn of(io: &pingora_core::protocols::Stream) -> ConnInfo {
        let peer = io
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        ConnInfo::with_tls(peer, io.get_ssl_digest().as_deref())
    }

    /// The facts of a connection whose TLS handshake (if any) is `ssl`.
    pub fn with_tls(
        peer: Option<IpAddr>,
        ssl: Option<&pingora_core::protocols::tls::SslDigest>,
    ) -> ConnInfo {
        let handshake = ssl.and_then(|d| d.extension.get::<Handshake>());
        ConnInfo {
            peer,
            sni: handshake.and_then(|h| h.sni.clone()),
            tls: ssl.map(|_| handshake.map_or(TlsVersion::None, |h| h.version)),
        }
    }
}

/// Where a forwarded request goes.
#[derive(Debug)]
pub struct Plan {
    pub addr: SocketAddr,
    pub rewritten: Option<String>,
    pub read_timeout: Duration,
    /// The path rule's idle timeout, for an upgrade request (a WebSocket).
    pub idle_timeout: Option<Duration>,
    /// What the access step changes in the forwarded head (only with `[auth]`).
    pub access: Option<Box<Access>>,
    /// The workspace's concurrent-request or WebSocket slot, held until the request ends.
    pub held: Option<crate::limits::Held>,
    /// How many milliseconds the request waited for its machine to start (`Server-Timing:
    /// wake`); a `u32` keeps `Answer` small.
    pub wake: Option<u32>,
}

/// What the access step changes in a forwarded request head.
#[derive(Debug, Default)]
pub struct Access {
    /// The request was authorized: `X-Hubify-User` and `X-Hubify-Scopes` go upstream.
    pub grant: Option<Grant>,
    /// The client's Cookie fields are replaced by this value (the router's session cookie
    /// removed; empty: no Cookie at all).
    pub cookie: Option<Vec<u8>>,
    /// The client's `Authorization` carried a token of the API's keys: it is not forwarded (on
    /// any path).
    pub drop_authorization: bool,
}

impl Access {
    /// The access step's changes for a request forwarded with `[auth]` configured.
    fn of(auth: &Auth, req: &impl RequestView, grant: Option<Grant>) -> Box<Access> {
        let bearer = grant.as_ref().is_some_and(|g| g.via == Via::Bearer);
        Box::new(Access {
            drop_authorization: bearer
                || req
                    .header(&http::header::AUTHORIZATION)
                    .is_some_and(|a| auth.carries_token(a)),
            grant,
            cookie: req.cookie().and_then(|c| auth::without_session_cookie(&c)),
        })
    }
}

/// One of the router's own answers: a page with a status.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    /// The metrics/access-log outcome.
    pub outcome: Outcome,
    /// The sentence the page shows.
    pub detail: Cow<'static, str>,
    /// Send `Retry-After` with this many seconds (a temporary condition).
    pub retry_after: Option<u32>,
    /// HTTP/1: the connection closes after this page (besides every 400).
    pub close: bool,
    /// `Refresh: <seconds>`: a browser loads the page again (the wake page).
    pub refresh: Option<u32>,
    /// A 401 of the access step: `WWW-Authenticate: Bearer`, and this login link on the page.
    pub challenge: Option<Challenge>,
}

/// The `WWW-Authenticate` challenge of a 401, and where a browser gets a token.
#[derive(Debug)]
pub struct Challenge {
    pub login: Option<String>,
}

/// The `Retry-After` seconds of a temporary condition (the route store, a waking machine, a
/// restart).
pub const RETRY_AFTER: u32 = 5;

/// Receives the headers of one of the router's own answers, one by one.
pub type PutHeader<'a> = &'a mut dyn FnMut(&'static str, &[u8]);

impl Page {
    pub fn new(status: u16, outcome: Outcome, detail: impl Into<Cow<'static, str>>) -> Page {
        Page {
            status,
            outcome,
            detail: detail.into(),
            retry_after: None,
            close: false,
            refresh: None,
            challenge: None,
        }
    }

    /// The page for an upstream failure answered with `status`.
    pub fn upstream_failure(status: u16) -> Page {
        Page::new(status, Outcome::Error, upstream_failure_detail(status))
    }

    /// Whether the connection closes after this page (HTTP/1): after a 400 the rest of the
    /// client's bytes cannot be trusted to be well-formed either (as nginx does).
    pub fn closes_connection(&self) -> bool {
        self.status == 400 || self.close
    }

    /// The page's body (HTML, or JSON when the client prefers it), its headers given to `put`:
    /// content type and length, `cache-control: no-store`, `retry-after: 5` when temporary. Both
    /// engines write these; each adds `x-request-id` (and HTTP/1 the connection's fate).
    pub fn render(&self, request_id: &str, json: bool, put: PutHeader<'_>) -> bytes::Bytes {
        let login = self.challenge.as_ref().and_then(|c| c.login.as_deref());
        let (content_type, body) =
            crate::pages::render(self.status, &self.detail, request_id, json, login);
        put("content-type", content_type.as_bytes());
        put("content-length", body.len().to_string().as_bytes());
        put("cache-control", b"no-store");
        if let Some(secs) = self.retry_after {
            put("retry-after", secs.to_string().as_bytes());
        }
        if let Some(secs) = self.refresh {
            put("refresh", secs.to_string().as_bytes());
        }
        if self.challenge.is_some() {
            put("www-authenticate", b"Bearer realm=\"hubify\"");
        }
        body
    }
}

/// The head of one of the router's own answers: `status`, the headers `headers` gives (shared
/// with the HTTP/1.1 fast path, `front.rs`), and the [`Stamp`].
pub(crate) fn own_head(
    status: u16,
    stamp: &Stamp<'_>,
    headers: impl FnOnce(PutHeader<'_>),
) -> pingora_error::Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(status, Some(6))?;
    let mut result = Ok(());
    headers(&mut |name, value| {
        if result.is_ok() {
            result = resp.insert_header(name, value);
        }
    });
    result?;
    stamp.insert(&mut resp)?;
    Ok(resp)
}

/// What the router puts on every response head of a listener, whoever answers (its own pages,
/// redirects, replays, or a workspace): `x-request-id`, and on the TLS listener with `[tls] hsts`,
/// `strict-transport-security`. A workspace's own values of these fields are replaced; over plain
/// HTTP a workspace's `strict-transport-security` is dropped (RFC 6797 §7.2).
#[derive(Clone, Copy)]
pub struct Stamp<'a> {
    pub request_id: &'a HeaderValue,
    hsts: Option<&'a HeaderValue>,
    /// The response goes over TLS.
    tls: bool,
    /// The request waited this many milliseconds for its machine to start: `Server-Timing:
    /// wake;dur=<ms>` on the response.
    wake_ms: Option<u32>,
}

pub const STRICT_TRANSPORT_SECURITY: HeaderName =
    HeaderName::from_static("strict-transport-security");

impl<'a> Stamp<'a> {
    /// `hsts` is only sent when `tls`.
    pub fn new(request_id: &'a HeaderValue, hsts: Option<&'a HeaderValue>, tls: bool) -> Stamp<'a> {
        Stamp {
            request_id,
            hsts: hsts.filter(|_| tls),
            tls,
            wake_ms: None,
        }
    }

    /// This stamp for the response of a request that waited `wake_ms` milliseconds for its
    /// machine to start.
    pub fn woken(self, wake_ms: Option<u32>) -> Stamp<'a> {
        Stamp { wake_ms, ..self }
    }

    fn server_timing(&self) -> Option<String> {
        self.wake_ms.map(|ms| format!("wake;dur={ms}"))
    }

    /// The request id as text.
    pub fn rid(&self) -> &str {
        crate::request_id::as_str(self.request_id)
    }

    /// Writes the fields to a head being serialized.
    pub fn put(&self, put: PutHeader<'_>) {
        put("x-request-id", self.request_id.as_bytes());
        if let Some(v) = self.hsts {
            put("strict-transport-security", v.as_bytes());
        }
        if let Some(t) = self.server_timing() {
            put("server-timing", t.as_bytes());
        }
    }

    /// Sets the fields on a head, replacing any value already there.
    pub fn insert(&self, resp: &mut ResponseHeader) -> pingora_error::Result<()> {
        resp.insert_header(X_REQUEST_ID, self.request_id.clone())?;
        if let Some(v) = self.hsts {
            resp.insert_header(STRICT_TRANSPORT_SECURITY, v.clone())?;
        } else if !self.tls {
            resp.remove_header(&STRICT_TRANSPORT_SECURITY);
        }
        if let Some(t) = self.server_timing() {
            // Beside the workspace's own Server-Timing fields.
            resp.append_header("server-timing", t)?;
        }
        Ok(())
    }

    /// Whether a workspace's response field `name` is dropped: the router sets it, or it must not
    /// go over plain HTTP.
    pub fn replaces(&self, name: &str) -> bool {
        name.eq_ignore_ascii_case("x-request-id")
            || ((self.hsts.is_some() || !self.tls)
                && name.eq_ignore_ascii_case("strict-transport-security"))
    }
}

/// A redirect: `308` for reserved labels, `303` with the session cookie after a first visit
/// with a token.
#[derive(Debug)]
pub struct Redirect {
    pub status: u16,
    pub location: String,
    pub set_cookie: Option<String>,
}

/// The headers of a redirect (no body).
pub fn redirect_headers(r: &Redirect, put: PutHeader<'_>) {
    put("location", r.location.as_bytes());
    put("content-length", b"0");
    if let Some(c) = &r.set_cookie {
        put("set-cookie", c.as_bytes());
        put("cache-control", b"no-store");
    }
}

/// The headers of a `307` replay answer (no body, no `Location`): `fly-replay`, and the
/// replay-cache headers when `cache_ttl` is set.
pub fn replay_headers(value: &str, cache_ttl: Option<u64>, put: PutHeader<'_>) {
    put("content-length", b"0");
    put("fly-replay", value.as_bytes());
    if let Some(ttl) = cache_ttl {
        put("fly-replay-cache", b"/*");
        put("fly-replay-cache-ttl-secs", ttl.to_string().as_bytes());
    }
}

/// What to do with a request.
#[derive(Debug)]
pub enum Answer {
    /// One of the router's own pages.
    Page(Page),
    /// A redirect (no body).
    Redirect(Redirect),
    /// `307` with `fly-replay: value` (and the replay-cache headers when `cache_ttl` is set).
    Replay {
        value: String,
        cache_ttl: Option<u64>,
    },
    /// Forward to the upstream.
    Forward(Plan),
}

impl Answer {
    fn page(status: u16, outcome: Outcome, detail: impl Into<Cow<'static, str>>) -> Answer {
        Answer::Page(Page::new(status, outcome, detail))
    }

    fn retry(status: u16, outcome: Outcome, detail: impl Into<Cow<'static, str>>) -> Answer {
        Answer::Page(Page {
            retry_after: Some(RETRY_AFTER),
            ..Page::new(status, outcome, detail)
        })
    }
}

/// What routing learnt about a request besides the answer.
#[derive(Debug, Default)]
pub struct Notes {
    /// The workspace label, kept only when the access log is on (as the fields below).
    pub label: Option<String>,
    /// The host the request named, as sent (at most [`LOGGED_MAX`] bytes).
    pub host: Option<String>,
    /// The path without the query (`[log] paths`; at most [`LOGGED_MAX`] bytes).
    pub path: Option<String>,
    /// `User-Agent` (at most [`USER_AGENT_MAX`] bytes).
    pub user_agent: Option<String>,
    pub protocol: Option<&'static str>,
    pub tls: Option<TlsVersion>,
    /// The matched path rule.
    pub rule: Option<usize>,
    /// The access step's result and the user (protected rules only), for the access log.
    pub auth: Option<(metrics::AuthResult, Option<String>)>,
}

/// The longest host and path the access log keeps.
pub const LOGGED_MAX: usize = 1024;
/// The longest `User-Agent` the access log keeps.
pub const USER_AGENT_MAX: usize = 256;

/// `s`, cut to at most `max` bytes at a character boundary.
fn truncated(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Notes what the access log says of a request (the access log is on).
fn note(req: &impl RequestView, info: &ConnInfo, paths: bool, notes: &mut Notes) {
    // Never userinfo (`user:password@`) an absolute-form target or `:authority` may carry.
    notes.host = req.host().ok().flatten().map(|h| {
        let h = h.rsplit_once('@').map_or(h, |(_, host)| host);
        truncated(h, LOGGED_MAX)
    });
    if paths {
        let target = req.path_and_query();
        let path = target.split_once('?').map_or(target, |(p, _)| p);
        notes.path = Some(truncated(path, LOGGED_MAX));
    }
    notes.user_agent = req
        .header(&http::header::USER_AGENT)
        .map(|ua| truncated(&String::from_utf8_lossy(ua), USER_AGENT_MAX));
    notes.protocol = Some(req.protocol());
    notes.tls = info.tls;
}

/// The detail of the page for an upstream failure answered with `status`.
pub fn upstream_failure_detail(status: u16) -> &'static str {
    match status {
        502 => "The workspace refused the connection or could not be reached.",
        504 => "The workspace did not answer in time.",
        400 => "The request could not be read.",
        _ => "The request failed.",
    }
}

/// One listener's behaviour, shared by both HTTP engines.
pub struct Front {
    pub mode: ListenerMode,
    pub scheme: &'static str,
    /// The plain listener sits behind Fly's http handler: trust `Fly-Client-IP` and Fly's
    /// `X-Forwarded-Proto`.
    pub behind_fly: bool,
    pub shared: Arc<Shared>,
    pub metrics: RequestMetrics,
    /// `[tls] hsts` on the TLS listener.
    hsts: Option<HeaderValue>,
}

impl Front {
    pub fn new(mode: ListenerMode, shared: Arc<Shared>) -> Front {
        let (scheme, listener) = match mode {
            ListenerMode::Tls => ("https", metrics::Listener::Https),
            ListenerMode::Plain(_) => ("http", metrics::Listener::Http),
        };
        let rule_names: Vec<&str> = shared
            .config
            .paths
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        let metrics = RequestMetrics::new(listener, &rule_names);
        let behind_fly = matches!(mode, ListenerMode::Plain(_))
            && shared
                .config
                .listeners
                .http
                .as_ref()
                .is_some_and(|h| h.behind_fly);
        let hsts = match mode {
            ListenerMode::Tls => shared.config.tls.hsts.as_deref(),
            ListenerMode::Plain(_) => None,
        }
        .and_then(|v| HeaderValue::from_str(v).ok());
        Front {
            mode,
            scheme,
            behind_fly,
            shared,
            metrics,
            hsts,
        }
    }

    /// The fields every response to the request `request_id` carries.
    pub fn stamp<'a>(&'a self, request_id: &'a HeaderValue) -> Stamp<'a> {
        Stamp::new(
            request_id,
            self.hsts.as_ref(),
            self.mode == ListenerMode::Tls,
        )
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The client's IP: behind Fly's http handler, `Fly-Client-IP`; else the peer address (on
    /// the TLS listener with `proxy_protocol`, the address from the PROXY v2 header).
    pub fn client_ip(&self, req: &impl RequestView, peer: Option<IpAddr>) -> Option<IpAddr> {
        if self.behind_fly {
            let fly = req
                .header(&FLY_CLIENT_IP)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse::<IpAddr>().ok());
            if fly.is_some() {
                return fly;
            }
        }
        peer
    }

    /// The scheme the client used: behind Fly, Fly's `X-Forwarded-Proto` (Fly terminated TLS).
    pub fn client_scheme(&self, req: &impl RequestView) -> &'static str {
        if self.behind_fly {
            match req.header(&X_FORWARDED_PROTO) {
                Some(b"https") => return "https",
                Some(b"http") => return "http",
                _ => {}
            }
        }
        self.scheme
    }

    /// The `X-Forwarded-For` value sent upstream: the client's chain with the client appended
    /// (on the TLS listener), or the client alone (behind Fly: Fly's chain describes its hops).
    pub fn forwarded_for(
        &self,
        req: &impl RequestView,
        ip: IpAddr,
    ) -> Result<http::HeaderValue, http::header::InvalidHeaderValue> {
        match req.header(&X_FORWARDED_FOR).map(std::str::from_utf8) {
            Some(Ok(prev)) if !prev.trim().is_empty() && !self.behind_fly => {
                http::HeaderValue::try_from(format!("{prev}, {ip}"))
            }
            _ => Ok(rewrite::ip_header_value(ip)),
        }
    }

    /// The fields the router writes at the end of a forwarded request head (see [`rewrite`]).
    pub fn router_fields<'a>(
        &self,
        req: &'a impl RequestView,
        plan: &'a Plan,
        client: Option<IpAddr>,
        request_id: &'a [u8],
    ) -> RouterFields<'a> {
        let access = plan.access.as_deref();
        let cookie = match access.and_then(|a| a.cookie.as_deref()) {
            Some(c) => Some(Cow::Borrowed(c)),
            None if req.splits_cookies() => req.cookie(),
            None => None,
        };
        let grant = access.and_then(|a| a.grant.as_ref());
        RouterFields {
            cookie,
            drop_authorization: access.is_some_and(|a| a.drop_authorization),
            user: grant.map(|g| (g.user.as_str(), g.scopes.as_str())),
            host: req.host().ok().flatten(),
            forwarded_for: client.and_then(|ip| self.forwarded_for(req, ip).ok()),
            proto: self.client_scheme(req),
            request_id,
            fly_client_ip: if self.behind_fly { client } else { None },
            upgrade: if req.is_upgrade() {
                req.header(&http::header::UPGRADE)
            } else {
                None
            },
        }
    }

    /// What to do with the request. `sni`: the server name the TLS client sent, if any.
    pub async fn route(
        &self,
        req: &impl RequestView,
        info: &ConnInfo,
        notes: &mut Notes,
    ) -> Answer {
        let config = &self.shared.config;
        let sni = info.sni.as_deref();
        if config.log.access {
            note(req, info, config.log.paths, notes);
        }
        if req.is_upgrade() && crate::shutdown::stopping() {
            // Open WebSockets are about to be drained: a new one would be cut at once.
            return Answer::Page(Page {
                retry_after: Some(RETRY_AFTER),
                close: true,
                ..Page::new(
                    503,
                    Outcome::Unavailable,
                    "This router is restarting; connect again in a moment.",
                )
            });
        }
        let raw_host = match req.host() {
            Ok(Some(h)) => h,
            Ok(None) => return Answer::page(400, Outcome::BadRequest, "The request has no Host."),
            Err(BadHost) => {
                return Answer::page(
                    400,
                    Outcome::BadRequest,
                    "The Host header is malformed or repeated.",
                )
            }
        };
        let Some(host) = normalize_host(raw_host) else {
            return Answer::page(400, Outcome::BadRequest, "The Host header is malformed.");
        };

        if self.mode == ListenerMode::Tls {
            if let Some(sni) = sni {
                if !sni.eq_ignore_ascii_case(host.as_ref()) {
                    let detail =
                        "This connection was opened for another host name; open a new connection.";
                    return Answer::page(421, Outcome::Misdirected, detail);
                }
            }
        }

        let label = match classify(&host, &config.domain) {
            HostMatch::Workspace(label) => label,
            HostMatch::Apex => {
                return match config.reserved.get("@") {
                    Some(r) => self.reserved(req, r, &host, raw_host, notes),
                    None => Answer::page(404, Outcome::NotFound, "No workspace at this address."),
                }
            }
            HostMatch::Outside => {
                let detail = "This router serves only its own workspace domain.";
                return Answer::page(404, Outcome::NotFound, detail);
            }
        };
        if let Some(r) = config.reserved.get(label.as_ref()) {
            return self.reserved(req, r, &host, raw_host, notes);
        }
        if config.log.access {
            notes.label = Some(label.to_string());
        }

        let lookup = self.shared.routes.lookup(&label).await;
        metrics::route_lookup(match &lookup {
            Lookup::Found(_) => metrics::LookupResult::Found,
            Lookup::NotFound => metrics::LookupResult::NotFound,
            Lookup::Unavailable => metrics::LookupResult::Unavailable,
            Lookup::Invalid(_) => metrics::LookupResult::Invalid,
        });
        let route = match lookup {
            Lookup::Found(r) => r,
            Lookup::NotFound => {
                let detail = format!("There is no workspace named {label:?}.");
                return Answer::page(404, Outcome::NotFound, detail);
            }
            Lookup::Unavailable => {
                let detail = "The route store is unavailable; try again shortly.";
                return Answer::retry(503, Outcome::Unavailable, detail);
            }
            Lookup::Invalid(why) => {
                tracing::error!(%label, error = %why, "malformed route record");
                let detail = "The workspace's route is misconfigured.";
                return Answer::page(502, Outcome::BadRoute, detail);
            }
        };

        let upgrade = req.is_upgrade();
        let method = req.method();
        let body = Body::classify(
            method,
            req.header(&http::header::CONTENT_LENGTH),
            req.has_header(&http::header::TRANSFER_ENCODING),
        );
        let untokened = self.untokened(req);
        let facts = RequestFacts {
            path_and_query: untokened.as_deref().unwrap_or(req.path_and_query()),
            upgrade,
            body,
            replay_src: req.has_header(&FLY_REPLAY_SRC),
            replay_failed: req
                .header(&FLY_REPLAY_FAILED)
                .map(|v| std::str::from_utf8(v).unwrap_or("")),
        };
        let access = |rule: Option<&PathRule>, notes: &mut Notes| match guarding_rule(
            &config.paths,
            rule,
            facts.path_and_query,
        ) {
            Some(rule) => self.access(req, &rule.auth, &host, raw_host, route.auth_epoch, notes),
            None => Ok(None),
        };
        match decide(&route, &facts, &config.paths, self.mode) {
            Decision::Respond(status) => {
                Answer::page(status, Outcome::NotFound, "No path rule matches this path.")
            }
            Decision::Replay(to) => {
                // Fly replays the request as it came: the router cannot strip what only it may
                // write.
                if req.has_header(&X_HUBIFY_USER) || req.has_header(&X_HUBIFY_SCOPES) {
                    let detail =
                        "X-Hubify-User and X-Hubify-Scopes are written by the router only.";
                    return Answer::page(400, Outcome::BadRequest, detail);
                }
                // Protected paths are checked before Fly is told where to replay.
                let rule = match_rule(&config.paths, facts.path_and_query).map(|(_, r)| r);
                if let Err(answer) = access(rule, notes) {
                    return answer;
                }
                match fly_replay_header(&to.app, &to.instance, &config.replay) {
                    Ok(value) => Answer::Replay {
                        value,
                        cache_ttl: replay_cache_ttl_secs(&config.replay),
                    },
                    Err(e) => {
                        tracing::error!(error = %e, "route cannot be replayed");
                        Answer::page(
                            502,
                            Outcome::BadRoute,
                            "The workspace's route is misconfigured.",
                        )
                    }
                }
            }
            Decision::Refuse(r) => Answer::page(r.status(), r.outcome(), r.detail()),
            Decision::ReplayFailed(reason) => {
                tracing::warn!(%label, reason = reason.as_str(), "fly-replay failed: answering the fallback request");
                Answer::retry(503, Outcome::ReplayFailed, reason.detail())
            }
            Decision::Forward(fwd) => {
                notes.rule = Some(fwd.rule_index);
                let grant = match access(Some(fwd.rule), notes) {
                    Ok(g) => g,
                    Err(answer) => return answer,
                };
                let access = self
                    .shared
                    .auth
                    .as_deref()
                    .map(|a| Access::of(a, req, grant));
                let limits = route.limits.or(&config.limits);
                let held = match self.shared.limits.admit(&label, &limits, upgrade) {
                    Ok(held) => held,
                    Err(limited) => return limited_page(limited),
                };
                let mut wake = None;
                let ip = match fwd.target {
                    Target::Address(ip) => ip,
                    Target::Machine => {
                        let (Some(app), Some(machine)) = (&route.app, &route.machine_id) else {
                            let detail =
                                "The workspace's route names neither an address nor a machine.";
                            return Answer::page(502, Outcome::BadRoute, detail);
                        };
                        let navigation = config.fly.wake_page && is_navigation(req);
                        match self
                            .shared
                            .fly
                            .address(app, machine, fwd.port, navigation)
                            .await
                        {
                            Ok((ip, woke)) => {
                                wake =
                                    woke.map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX));
                                IpAddr::V6(ip)
                            }
                            Err(e) => {
                                let (status, detail, outcome, retry) = e.answer();
                                if let crate::fly::FlyError::Dns(why) = &e {
                                    tracing::error!(%label, %app, %machine, error = %why, "6PN lookup failed");
                                }
                                let refresh = (e == crate::fly::FlyError::WakePage)
                                    .then_some(WAKE_PAGE_REFRESH);
                                return Answer::Page(Page {
                                    retry_after: retry.then_some(RETRY_AFTER),
                                    refresh,
                                    ..Page::new(status, outcome, detail)
                                });
                            }
                        }
                    }
                };
                // A WebSocket stays open while idle for the rule's idle timeout, on both sides.
                let idle_timeout = if upgrade { fwd.rule.idle_timeout } else { None };
                Answer::Forward(Plan {
                    addr: SocketAddr::new(ip, fwd.port),
                    rewritten: fwd.rewritten.or(untokened),
                    read_timeout: idle_timeout.unwrap_or(config.upstream.read_timeout),
                    idle_timeout,
                    access,
                    held,
                    wake,
                })
            }
        }
    }

    /// The target without the `hubify_token` parameter when `[auth]` is configured and the
    /// target has one: the router's credentials never reach a workspace, on any path.
    fn untokened(&self, req: &impl RequestView) -> Option<String> {
        self.shared.auth.as_ref()?;
        auth::query_token(req.path_and_query()).map(|(_, rest)| rest)
    }

    /// The access step of a path rule: `Ok(None)` for a public rule (or without `[auth]`),
    /// `Ok(Some(grant))` for an authorized request, else the answer (401, 403, or the 303 that
    /// sets the session).
    fn access(
        &self,
        req: &impl RequestView,
        rule: &PathAuth,
        host: &str,
        authority: &str,
        epoch: u64,
        notes: &mut Notes,
    ) -> Result<Option<Grant>, Answer> {
        let (Some(auth), PathAuth::Token { scope }) = (self.shared.auth.as_deref(), rule) else {
            return Ok(None);
        };
        let cookie = req.cookie();
        let scheme = self.client_scheme(req);
        let r = auth::Request {
            host,
            authority,
            scheme,
            path_and_query: req.path_and_query(),
            credentials: auth::Credentials {
                authorization: req.header(&http::header::AUTHORIZATION),
                cookie: cookie.as_deref(),
                origin: req.header(&ORIGIN),
            },
            upgrade: req.is_upgrade(),
            unsafe_method: !matches!(req.method(), "GET" | "HEAD" | "OPTIONS"),
            scope,
            epoch,
        };
        let verdict = auth.check(&r, auth::now());
        let result = match &verdict {
            Verdict::Granted(_) | Verdict::SetSession { .. } => AuthResult::Ok,
            Verdict::Refused(why) => *why,
        };
        metrics::auth(result);
        if self.shared.config.log.access {
            let user = match &verdict {
                Verdict::Granted(g) | Verdict::SetSession { grant: g, .. } => Some(g.user.clone()),
                Verdict::Refused(_) => None,
            };
            notes.auth = Some((result, user));
        }
        match verdict {
            Verdict::Granted(g) => Ok(Some(g)),
            Verdict::SetSession {
                location, cookie, ..
            } => Err(Answer::Redirect(Redirect {
                status: 303,
                location,
                set_cookie: Some(cookie),
            })),
            Verdict::Refused(why) => Err(Answer::Page(refusal_page(
                why,
                auth.login_link(scheme, authority, req.path_and_query()),
            ))),
        }
    }

    fn reserved(
        &self,
        req: &impl RequestView,
        r: &Reserved,
        host: &str,
        authority: &str,
        notes: &mut Notes,
    ) -> Answer {
        match r {
            Reserved::Redirect(base) => {
                // A token never follows a redirect to another host.
                let untokened = self.untokened(req);
                let target = untokened.as_deref().unwrap_or(req.path_and_query());
                Answer::Redirect(Redirect {
                    status: 308,
                    location: format!("{base}{target}"),
                    set_cookie: None,
                })
            }
            Reserved::Upstream { addr, auth: rule } => {
                // Protected like a path rule; a reserved name has no route record: epoch 0.
                let grant = match self.access(req, rule, host, authority, 0, notes) {
                    Ok(g) => g,
                    Err(answer) => return answer,
                };
                Answer::Forward(Plan {
                    addr: *addr,
                    rewritten: self.untokened(req),
                    read_timeout: self.shared.config.upstream.read_timeout,
                    idle_timeout: None,
                    access: self
                        .shared
                        .auth
                        .as_deref()
                        .map(|a| Access::of(a, req, grant)),
                    held: None,
                    wake: None,
                })
            }
        }
    }
}

/// The rule whose access check applies to `path`: the matched rule, unless the path — read as a
/// lenient server would (decoded, slashes merged, dot segments resolved, case ignored) — falls
/// under a protected rule: `//terminal`, `/%74erminal`, `/TERMINAL`, `/x/../terminal` are
/// checked as `/terminal`.
fn guarding_rule<'c>(
    rules: &'c [PathRule],
    matched: Option<&'c PathRule>,
    path: &str,
) -> Option<&'c PathRule> {
    let protected = |r: &PathRule| matches!(r.auth, PathAuth::Token { .. });
    if matched.is_some_and(protected) || !auth::needs_canonical(path) {
        return matched;
    }
    let canonical = auth::canonical_path(path);
    rules
        .iter()
        .filter(|r| protected(r))
        .find(|r| prefix_matches(&r.prefix.to_ascii_lowercase(), &canonical))
        .or(matched)
}

/// How often the wake page reloads itself (seconds).
const WAKE_PAGE_REFRESH: u32 = 2;

/// A browser's page load: a GET that is a navigation (`Sec-Fetch-Mode: navigate`) or, from a
/// browser without Fetch Metadata, asks for HTML first. Never an upgrade.
fn is_navigation(req: &impl RequestView) -> bool {
    if req.method() != "GET" || req.is_upgrade() {
        return false;
    }
    if let Some(mode) = req.header(&SEC_FETCH_MODE) {
        return mode.eq_ignore_ascii_case(b"navigate");
    }
    req.header(&http::header::ACCEPT)
        .and_then(|a| std::str::from_utf8(a).ok())
        .is_some_and(|a| {
            a.split(',')
                .next()
                .is_some_and(|first| first.trim().starts_with("text/html"))
        })
}

/// The 429 of a request beyond one of its workspace's limits (counted by kind).
fn limited_page(limited: crate::limits::Limited) -> Answer {
    metrics::limited(limited.kind);
    let detail = match limited.kind {
        LimitKind::Rate => "This workspace is receiving too many requests; slow down.",
        LimitKind::Concurrency => "This workspace has too many requests in progress; try again.",
        LimitKind::Websockets => "This workspace has too many open terminal connections.",
    };
    Answer::Page(Page {
        retry_after: Some(limited.retry_after),
        ..Page::new(429, Outcome::Limited, detail)
    })
}

/// The page of a refused access check: 401 with a `Bearer` challenge (and the login link), or
/// 403.
fn refusal_page(why: AuthResult, login: Option<String>) -> Page {
    let detail = match why {
        AuthResult::Missing => "This part of the workspace needs a sign-in: open it from Hubify.",
        AuthResult::Expired => {
            "Your sign-in for this workspace has expired: open it from Hubify again."
        }
        AuthResult::Invalid => {
            "The sign-in token is not valid here: open the workspace from Hubify again."
        }
        AuthResult::Forbidden => "Your sign-in does not allow this part of this workspace.",
        AuthResult::Origin => {
            "A page from another site may not open a WebSocket or change anything in this \
             workspace's protected parts."
        }
        AuthResult::Ok => "Access denied.",
    };
    let status = match why {
        AuthResult::Forbidden | AuthResult::Origin => 403,
        _ => 401,
    };
    Page {
        challenge: (status == 401).then_some(Challenge { login }),
        ..Page::new(status, Outcome::Denied, detail)
    }
}

/// How one request went, filled in by the engine that served it.
#[derive(Debug)]
pub struct Done {
    pub outcome: Outcome,
    pub status: u16,
    /// Response body bytes written to the client (an upgraded connection: every byte after
    /// the `101` head).
    pub bytes_sent: usize,
    /// Request body bytes read from the client (an upgraded connection: every byte after the
    /// handshake head).
    pub bytes_received: usize,
    /// The request was upgraded (a WebSocket): its length is counted, not timed.
    pub upgraded: bool,
    /// HTTP/1: the connection closes after this response.
    pub close: bool,
    /// What failed, for the access log: an `UpstreamErrorKind` name as in
    /// `hubify_upstream_errors_total`, or a [`ClientError`] name.
    pub error: Option<&'static str>,
}

impl Done {
    /// Nothing answered yet: an error unless the engine says otherwise.
    pub fn new(close: bool) -> Done {
        Done {
            outcome: Outcome::Error,
            status: 0,
            bytes_sent: 0,
            bytes_received: 0,
            upgraded: false,
            close,
            error: None,
        }
    }
}

/// What the router's own engines know of a request when it ends, besides [`Done`].
pub struct Served<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub notes: &'a Notes,
    pub start: std::time::Instant,
    pub upstream: Option<SocketAddr>,
    pub client: Option<IpAddr>,
}

/// One finished request, for the metrics and the access log.
pub struct Finished<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    /// What the policy noted while routing (label, rule, access, the access log's fields).
    pub notes: &'a Notes,
    pub outcome: Outcome,
    pub status: u16,
    pub elapsed: Duration,
    /// `false` for an upgraded session (counted, not timed).
    pub timed: bool,
    pub upstream: Option<SocketAddr>,
    pub bytes_sent: usize,
    pub bytes_received: usize,
    pub client: Option<IpAddr>,
    pub error: Option<&'a str>,
}

impl Front {
    /// [`Front::finish`] for a request the router's own engines served.
    pub fn finish_served(&self, s: &Served<'_>, d: &Done) {
        self.finish(&Finished {
            request_id: s.request_id,
            method: s.method,
            notes: s.notes,
            outcome: d.outcome,
            status: d.status,
            elapsed: s.start.elapsed(),
            timed: !d.upgraded,
            upstream: s.upstream,
            bytes_sent: d.bytes_sent,
            bytes_received: d.bytes_received,
            client: s.client,
            error: d.error,
        });
    }

    /// Counts a finished request and writes its access-log line (when the access log is on).
    pub fn finish(&self, f: &Finished<'_>) {
        let n = f.notes;
        self.metrics
            .request(f.outcome, n.rule, f.status, f.timed.then_some(f.elapsed));
        if !self.shared.config.log.access {
            return;
        }
        let rule = n
            .rule
            .and_then(|i| self.shared.config.paths.get(i))
            .map(|r| r.name.as_str())
            .unwrap_or(metrics::NO_RULE);
        // Never cookies, credentials or the query (it may carry a token). A value the request
        // does not have is left out: absent in text, `null` in JSON (`logging.rs`). Field names:
        // docs/http.md, beside ECS's and OpenTelemetry's.
        tracing::info!(
            target: "access",
            request_id = f.request_id,
            listener = self.scheme,
            protocol = n.protocol,
            tls_version = n.tls.map(TlsVersion::as_str),
            method = f.method,
            host = n.host.as_deref(),
            path = n.path.as_deref(),
            label = n.label.as_deref(),
            outcome = f.outcome.as_str(),
            rule,
            status = f.status,
            duration_ms = f.elapsed.as_secs_f64() * 1000.0,
            upstream = f.upstream.map(tracing::field::display),
            bytes_sent = f.bytes_sent,
            bytes_received = f.bytes_received,
            client = f.client.map(tracing::field::display),
            user_agent = n.user_agent.as_deref(),
            error = f.error,
            auth = n.auth.as_ref().map(|a| tracing::field::display(AuthField(a))),
            "request"
        );
    }
}

/// The access log's `auth` on protected rules: the result and, when known, the user
/// (`ok:alice`); never the token.
struct AuthField<'a>(&'a (AuthResult, Option<String>));

impl std::fmt::Display for AuthField<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            (r, None) => f.write_str(r.as_str()),
            (r, Some(user)) => write!(f, "{}:{user}", r.as_str()),
        }
    }
}
