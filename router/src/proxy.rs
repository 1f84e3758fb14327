//! Pingora glue: each phase of [`ProxyHttp`] does one job and keeps its result in [`Ctx`].
//!
//! - `request_filter`: request id, host → label, SNI/Host agreement, route lookup, `decide`; the
//!   router's own answers (404, 400, 421, 502, 503, redirects, `fly-replay` 307s) are written
//!   here, and a machine's 6PN address is found (and the machine woken) here, so every failure
//!   becomes a clean page.
//! - `upstream_peer`: turns the decision into an `HttpPeer` with the configured timeouts.
//! - `upstream_request_filter`: path rewrite, forwarded headers, request id, Fly header stripping.
//! - `connected_to_upstream`: upstream connection metrics (new or pooled, connect time).
//! - `response_filter`: the request id on the response; a forwarded `101` opens a WebSocket in
//!   the metrics until the session ends.
//! - `fail_to_proxy`: upstream failures become 502/504 pages (and upstream error metrics).
//! - `logging`: request metrics and the access-log line.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION};
use http::{HeaderName, HeaderValue};
use hubify_edge_config::{Config, Reserved};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, OrErr, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::decide::{
    decide, fly_replay_header, replay_cache_ttl_secs, Body, Decision, ListenerMode, ReplayTo,
    RequestFacts, Target,
};
use crate::fly::FlyNet;
use crate::host::{classify, normalize_host, HostMatch};
use crate::metrics::{self, RequestMetrics};
use crate::pages;
use crate::request_id;
use crate::routes::{Lookup, RouteStore};
use crate::shutdown::InFlight;
use crate::tls::Sni;

/// Everything the listeners share: configuration and the route store.
pub struct Shared {
    pub config: Config,
    pub routes: RouteStore,
    /// 6PN resolver, Machines API client, wakes in flight.
    pub fly: Arc<FlyNet>,
}

/// Header names read on every request, parsed once (a `&str` name is parsed on every lookup).
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const FLY_CLIENT_IP: HeaderName = HeaderName::from_static("fly-client-ip");
const FLY_REPLAY_SRC: HeaderName = HeaderName::from_static("fly-replay-src");
const FLY_REPLAY_FAILED: HeaderName = HeaderName::from_static("fly-replay-failed");

/// Headers a client must not be able to send to a workspace: Fly's replay and routing headers
/// (the workspace trusts them as coming from Fly's edge).
const STRIPPED_REQUEST_HEADERS: [HeaderName; 6] = [
    FLY_REPLAY_SRC,
    FLY_REPLAY_FAILED,
    HeaderName::from_static("fly-force-region"),
    HeaderName::from_static("fly-force-instance-id"),
    HeaderName::from_static("fly-prefer-region"),
    HeaderName::from_static("fly-prefer-instance-id"),
];

/// The proxy of one listener.
pub struct EdgeProxy {
    mode: ListenerMode,
    scheme: &'static str,
    /// The plain listener sits behind Fly's http handler: trust `Fly-Client-IP` and Fly's
    /// `X-Forwarded-Proto`.
    behind_fly: bool,
    shared: Arc<Shared>,
    metrics: RequestMetrics,
}

impl EdgeProxy {
    pub fn new(mode: ListenerMode, shared: Arc<Shared>) -> EdgeProxy {
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
        EdgeProxy {
            mode,
            scheme,
            behind_fly,
            shared,
            metrics,
        }
    }
}

/// Where a forwarded request goes.
#[derive(Debug)]
pub struct Plan {
    pub addr: SocketAddr,
    pub rewritten: Option<String>,
    pub read_timeout: Duration,
}

/// Per-request state, filled phase by phase.
pub struct Ctx {
    /// The request id as sent upstream and back (see [`request_id::header_value`]).
    pub request_id: HeaderValue,
    /// The workspace label, kept only for the access log.
    pub label: Option<String>,
    pub outcome: &'static str,
    pub rule: Option<usize>,
    pub plan: Option<Plan>,
    pub status: u16,
    pub start: Instant,
    /// Counts the request as in flight until the context is dropped.
    pub _in_flight: InFlight,
    /// When `upstream_peer` handed out the peer (fallback for the connect time).
    pub peer_at: Option<Instant>,
    /// Set while a forwarded WebSocket session is open; dropping it closes it in the metrics.
    pub websocket: Option<metrics::WebSocketOpen>,
}

impl EdgeProxy {
    /// Writes one of the router's own answers and records it in the context.
    async fn respond(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        status: u16,
        outcome: &'static str,
        detail: &str,
        extra: &[(http::HeaderName, String)],
    ) -> Result<bool> {
        let json = pages::prefers_json(
            session
                .req_header()
                .headers
                .get(ACCEPT)
                .map(|v| v.as_bytes()),
        );
        let (content_type, body) =
            pages::render(status, detail, request_id::as_str(&ctx.request_id), json);
        let mut resp = ResponseHeader::build(status, Some(4))?;
        resp.insert_header(CONTENT_TYPE, content_type)?;
        resp.insert_header(CONTENT_LENGTH, body.len().to_string())?;
        resp.insert_header("x-request-id", ctx.request_id.clone())?;
        resp.insert_header("cache-control", "no-store")?;
        for (name, value) in extra {
            resp.insert_header(name.clone(), value.as_str())?;
        }
        ctx.status = status;
        ctx.outcome = outcome;
        let head_only = session.req_header().method == http::Method::HEAD;
        session
            .write_response_header(Box::new(resp), head_only)
            .await?;
        if !head_only {
            session.write_response_body(Some(body), true).await?;
        }
        Ok(true)
    }

    async fn redirect(&self, session: &mut Session, ctx: &mut Ctx, base: &str) -> Result<bool> {
        let pq = session
            .req_header()
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let location = format!("{base}{pq}");
        let mut resp = ResponseHeader::build(308, Some(3))?;
        resp.insert_header(LOCATION, location.as_str())?;
        resp.insert_header(CONTENT_LENGTH, HeaderValue::from_static("0"))?;
        resp.insert_header("x-request-id", ctx.request_id.clone())?;
        ctx.status = 308;
        ctx.outcome = "redirect";
        session.write_response_header(Box::new(resp), true).await?;
        Ok(true)
    }

    /// The client's IP: behind Fly's http handler, `Fly-Client-IP`; else the peer address (on the
    /// TLS listener with `proxy_protocol`, the address from the PROXY v2 header).
    fn client_ip(&self, session: &Session) -> Option<IpAddr> {
        if self.behind_fly {
            let fly = session
                .req_header()
                .headers
                .get(&FLY_CLIENT_IP)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<IpAddr>().ok());
            if fly.is_some() {
                return fly;
            }
        }
        session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
    }

    /// The scheme the client used: behind Fly, Fly's `X-Forwarded-Proto` (Fly terminated TLS).
    fn client_scheme(&self, session: &Session) -> &'static str {
        if self.behind_fly {
            match session
                .req_header()
                .headers
                .get(&X_FORWARDED_PROTO)
                .map(|v| v.as_bytes())
            {
                Some(b"https") => return "https",
                Some(b"http") => return "http",
                _ => {}
            }
        }
        self.scheme
    }

    /// Answers `307` with `fly-replay` (and the replay-cache headers when configured); no body, no
    /// `Location`.
    async fn replay(&self, session: &mut Session, ctx: &mut Ctx, to: &ReplayTo) -> Result<bool> {
        let replay = &self.shared.config.replay;
        let value = match fly_replay_header(&to.app, &to.instance, replay) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "route cannot be replayed");
                let detail = "The workspace's route is misconfigured.";
                return self
                    .respond(session, ctx, 502, "bad_route", detail, &[])
                    .await;
            }
        };
        // Fly keeps its own copy of the body to replay; reading ours (< 1 MiB, decided before)
        // keeps the connection from Fly's edge reusable. A failure only costs the keep-alive.
        if !session.is_body_empty() {
            session.set_total_drain_timeout(Some(self.shared.config.upstream.read_timeout));
            if let Err(e) = session.drain_request_body().await {
                tracing::debug!(error = %e, "request body not drained before the replay");
            }
        }
        let mut resp = ResponseHeader::build(307, Some(5))?;
        resp.insert_header(CONTENT_LENGTH, HeaderValue::from_static("0"))?;
        // The String becomes the header value without a copy.
        resp.insert_header("fly-replay", value)?;
        if let Some(ttl) = replay_cache_ttl_secs(replay) {
            resp.insert_header("fly-replay-cache", HeaderValue::from_static("/*"))?;
            resp.insert_header("fly-replay-cache-ttl-secs", ttl)?;
        }
        resp.insert_header("x-request-id", ctx.request_id.clone())?;
        ctx.status = 307;
        ctx.outcome = "replay";
        session.write_response_header(Box::new(resp), true).await?;
        Ok(true)
    }
}

/// The host the request names: the URI authority (HTTP/2 `:authority`, HTTP/1 absolute form)
/// first, else the single Host header. `Err` when there are several Host headers or it is not
/// text.
fn request_host(req: &RequestHeader) -> std::result::Result<Option<&str>, ()> {
    if let Some(a) = req.uri.authority() {
        return Ok(Some(a.as_str()));
    }
    let mut hosts = req.headers.get_all(HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(());
    }
    match first {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| ()),
    }
}

/// [`request_host`] as a header value: the Host header's own value (shared, not copied), or the
/// URI authority's.
fn request_host_value(req: &RequestHeader) -> Option<HeaderValue> {
    if let Some(a) = req.uri.authority() {
        return HeaderValue::from_str(a.as_str()).ok();
    }
    let mut hosts = req.headers.get_all(HOST).iter();
    let first = hosts.next()?;
    if hosts.next().is_some() || first.to_str().is_err() {
        return None;
    }
    Some(first.clone())
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

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            request_id: HeaderValue::from_static(""),
            label: None,
            outcome: "error",
            rule: None,
            plan: None,
            status: 0,
            start: Instant::now(),
            _in_flight: InFlight::enter(),
            peer_at: None,
            websocket: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let config = &self.shared.config;
        ctx.request_id = request_id::header_value(session.req_header().headers.get(&X_REQUEST_ID));

        let raw_host = match request_host(session.req_header()) {
            Ok(Some(h)) => h,
            missing_or_bad => {
                let detail = match missing_or_bad {
                    Ok(_) => "The request has no Host.",
                    Err(()) => "The Host header is malformed or repeated.",
                };
                return self
                    .respond(session, ctx, 400, "bad_request", detail, &[])
                    .await;
            }
        };
        let Some(host) = normalize_host(raw_host) else {
            return self
                .respond(
                    session,
                    ctx,
                    400,
                    "bad_request",
                    "The Host header is malformed.",
                    &[],
                )
                .await;
        };

        if self.mode == ListenerMode::Tls {
            let sni = session
                .digest()
                .and_then(|d| d.ssl_digest.as_ref())
                .and_then(|s| s.extension.get::<Sni>());
            if let Some(sni) = sni {
                if !sni.0.eq_ignore_ascii_case(host.as_ref()) {
                    let detail =
                        "This connection was opened for another host name; open a new connection.";
                    return self
                        .respond(session, ctx, 421, "misdirected", detail, &[])
                        .await;
                }
            }
        }

        let label = match classify(&host, &config.domain) {
            HostMatch::Workspace(label) => label,
            HostMatch::Apex => {
                return match config.reserved.get("@") {
                    Some(r) => self.reserved(session, ctx, r).await,
                    None => {
                        self.respond(
                            session,
                            ctx,
                            404,
                            "not_found",
                            "No workspace at this address.",
                            &[],
                        )
                        .await
                    }
                }
            }
            HostMatch::Outside => {
                let detail = "This router serves only its own workspace domain.";
                return self
                    .respond(session, ctx, 404, "not_found", detail, &[])
                    .await;
            }
        };
        if let Some(r) = config.reserved.get(label.as_ref()) {
            return self.reserved(session, ctx, r).await;
        }
        if config.log.access {
            ctx.label = Some(label.to_string());
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
                return self
                    .respond(session, ctx, 404, "not_found", &detail, &[])
                    .await;
            }
            Lookup::Unavailable => {
                let detail = "The route store is unavailable; try again shortly.";
                return self
                    .respond(
                        session,
                        ctx,
                        503,
                        "unavailable",
                        detail,
                        &[(http::header::RETRY_AFTER, "5".into())],
                    )
                    .await;
            }
            Lookup::Invalid(why) => {
                tracing::error!(%label, error = %why, "malformed route record");
                let detail = "The workspace's route is misconfigured.";
                return self
                    .respond(session, ctx, 502, "bad_route", detail, &[])
                    .await;
            }
        };

        let upgrade = session.is_upgrade_req();
        let req = session.req_header();
        let path_and_query = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let body = Body::classify(
            req.method.as_str(),
            req.headers.get(CONTENT_LENGTH).map(|v| v.as_bytes()),
            req.headers.contains_key(http::header::TRANSFER_ENCODING),
        );
        let facts = RequestFacts {
            path_and_query,
            upgrade,
            body,
            replay_src: req.headers.contains_key(&FLY_REPLAY_SRC),
            replay_failed: req
                .headers
                .get(&FLY_REPLAY_FAILED)
                .map(|v| v.to_str().unwrap_or("")),
        };
        let decision = decide(&route, &facts, &config.paths, self.mode);
        match decision {
            Decision::Respond(status) => {
                let detail = "No path rule matches this path.";
                self.respond(session, ctx, status, "not_found", detail, &[])
                    .await
            }
            Decision::Replay(to) => self.replay(session, ctx, &to).await,
            Decision::Refuse(r) => {
                self.respond(session, ctx, r.status(), r.outcome(), r.detail(), &[])
                    .await
            }
            Decision::ReplayFailed(reason) => {
                tracing::warn!(%label, reason = reason.as_str(), "fly-replay failed: answering the fallback request");
                let retry = [(http::header::RETRY_AFTER, "5".to_string())];
                self.respond(session, ctx, 503, "replay_failed", reason.detail(), &retry)
                    .await
            }
            Decision::Forward(fwd) => {
                ctx.rule = Some(fwd.rule_index);
                let ip = match fwd.target {
                    Target::Address(ip) => ip,
                    Target::Machine => {
                        let (Some(app), Some(machine)) = (&route.app, &route.machine_id) else {
                            let detail =
                                "The workspace's route names neither an address nor a machine.";
                            return self
                                .respond(session, ctx, 502, "bad_route", detail, &[])
                                .await;
                        };
                        match self.shared.fly.address(app, machine, fwd.port).await {
                            Ok(ip) => IpAddr::V6(ip),
                            Err(e) => {
                                let (status, detail, outcome, retry) = e.answer();
                                if let crate::fly::FlyError::Dns(why) = &e {
                                    tracing::error!(%label, %app, %machine, error = %why, "6PN lookup failed");
                                }
                                let extra: &[(http::HeaderName, String)] = if retry {
                                    &[(http::header::RETRY_AFTER, "5".to_string())]
                                } else {
                                    &[]
                                };
                                return self
                                    .respond(session, ctx, status, outcome, detail, extra)
                                    .await;
                            }
                        }
                    }
                };
                let mut read_timeout = config.upstream.read_timeout;
                if upgrade {
                    if let Some(idle) = fwd.rule.idle_timeout {
                        // A WebSocket stays open while idle for the rule's idle timeout, on both
                        // sides (Pingora's downstream default would cut it at 60 s).
                        read_timeout = idle;
                        session.set_read_timeout(Some(idle));
                    }
                }
                ctx.outcome = "forward";
                ctx.plan = Some(Plan {
                    addr: SocketAddr::new(ip, fwd.port),
                    rewritten: fwd.rewritten,
                    read_timeout,
                });
                Ok(false)
            }
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        ctx.peer_at = Some(Instant::now());
        let Some(plan) = &ctx.plan else {
            return Error::e_explain(ErrorType::InternalError, "no forwarding plan");
        };
        let up = &self.shared.config.upstream;
        let mut peer = HttpPeer::new(plan.addr, false, String::new());
        peer.options.connection_timeout = Some(up.connect_timeout);
        peer.options.total_connection_timeout = Some(up.connect_timeout);
        peer.options.read_timeout = Some(plan.read_timeout);
        peer.options.write_timeout = Some(up.write_timeout);
        peer.options.idle_timeout = Some(up.keepalive_timeout);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(plan) = &ctx.plan {
            if let Some(path) = &plan.rewritten {
                match http::Uri::try_from(path.as_str()) {
                    Ok(uri) => upstream.set_uri(uri),
                    Err(e) => {
                        return Error::e_explain(
                            ErrorType::InvalidHTTPHeader,
                            format!("rewritten path is not a URI: {e}"),
                        )
                    }
                }
            }
        }
        if let Some(host) = request_host_value(session.req_header()) {
            if upstream.headers.get(HOST).is_none() {
                upstream.insert_header(HOST, host.clone())?;
            }
            upstream.insert_header("x-forwarded-host", host)?;
        }
        if let Some(ip) = self.client_ip(session) {
            // Behind Fly, Fly's own chain describes its hops; the client is Fly-Client-IP.
            let xff = match upstream.headers.get(&X_FORWARDED_FOR).map(|v| v.to_str()) {
                Some(Ok(prev)) if !prev.trim().is_empty() && !self.behind_fly => {
                    HeaderValue::try_from(format!("{prev}, {ip}"))
                        .explain_err(ErrorType::InvalidHTTPHeader, |_| "x-forwarded-for")?
                }
                _ => ip_header_value(ip),
            };
            upstream.insert_header("x-forwarded-for", xff)?;
        }
        upstream.insert_header(
            "x-forwarded-proto",
            HeaderValue::from_static(self.client_scheme(session)),
        )?;
        upstream.insert_header("x-request-id", ctx.request_id.clone())?;
        // One pass over the names instead of six lookups, in the usual case of no `fly-` header.
        if upstream
            .headers
            .keys()
            .any(|k| k.as_str().starts_with("fly-"))
        {
            for h in &STRIPPED_REQUEST_HEADERS {
                upstream.remove_header(h);
            }
        }
        Ok(())
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Pingora measures the TCP connect itself (monotonic); fall back to the time since
        // `upstream_peer` when it did not.
        let measured = digest
            .and_then(|d| d.timing_digest.first())
            .and_then(|t| t.as_ref())
            .and_then(|t| t.establishment_duration);
        let connect = measured.or_else(|| ctx.peer_at.map(|t| t.elapsed()));
        metrics::upstream().connected(reused, connect);
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        upstream_response.insert_header("x-request-id", ctx.request_id.clone())?;
        ctx.status = upstream_response.status.as_u16();
        if ctx.status == 101 && session.is_upgrade_req() && ctx.websocket.is_none() {
            ctx.websocket = Some(self.metrics.websocket_opened(ctx.rule));
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        use ErrorType::*;
        let status = match e.etype() {
            HTTPStatus(code) => *code,
            ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError
            | TLSHandshakeFailure | SocketError | BindError => 502,
            ReadTimedout | WriteTimedout if e.esource() == &ErrorSource::Upstream => 504,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    WriteError | ReadError | ConnectionClosed | ReadTimedout | WriteTimedout => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if status != 0 && session.response_written().is_none() {
            let detail = match status {
                502 => "The workspace refused the connection or could not be reached.",
                504 => "The workspace did not answer in time.",
                400 => "The request could not be read.",
                _ => "The request failed.",
            };
            let _ = self
                .respond(session, ctx, status, "error", detail, &[])
                .await;
        }
        ctx.status = status;
        ctx.outcome = "error";
        if let Some(kind) = metrics::UpstreamErrorKind::of(e) {
            metrics::upstream().error(kind);
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(ctx.status);
        let elapsed = ctx.start.elapsed();
        // A WebSocket session's length is not a request latency: counted, not timed.
        let upgraded = ctx.websocket.take().is_some();
        let outcome = metrics::Outcome::from_name(ctx.outcome);
        self.metrics
            .request(outcome, ctx.rule, status, (!upgraded).then_some(elapsed));

        if !self.shared.config.log.access {
            return;
        }
        let rule = ctx
            .rule
            .and_then(|i| self.shared.config.paths.get(i))
            .map(|r| r.name.as_str())
            .unwrap_or(metrics::NO_RULE);
        // Never headers (cookies, authorization) nor the path: only what identifies the request.
        tracing::info!(
            target: "access",
            request_id = request_id::as_str(&ctx.request_id),
            listener = self.scheme,
            method = %session.req_header().method,
            label = ctx.label.as_deref().unwrap_or("-"),
            outcome = ctx.outcome,
            rule,
            status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            upstream = %OrDash(ctx.plan.as_ref().map(|p| p.addr)),
            bytes_sent = session.body_bytes_sent(),
            bytes_received = session.body_bytes_read(),
            client = %OrDash(self.client_ip(session)),
            error = e.map(|e| e.etype().as_str()).unwrap_or("-"),
            "request"
        );
    }
}

/// `Display` of an optional value: the value, or `-`.
struct OrDash<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for OrDash<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("-"),
        }
    }
}

impl EdgeProxy {
    async fn reserved(&self, session: &mut Session, ctx: &mut Ctx, r: &Reserved) -> Result<bool> {
        match r {
            Reserved::Redirect(base) => self.redirect(session, ctx, base).await,
            Reserved::Upstream(addr) => {
                ctx.outcome = "forward";
                ctx.plan = Some(Plan {
                    addr: *addr,
                    rewritten: None,
                    read_timeout: self.shared.config.upstream.read_timeout,
                });
                Ok(false)
            }
        }
    }
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
    fn host_value_is_the_single_host_or_the_authority() {
        let mut req = RequestHeader::build("GET", b"/", None).expect("a request");
        assert_eq!(request_host_value(&req), None);
        req.insert_header(HOST, "a.example.com").expect("a header");
        assert_eq!(
            request_host_value(&req),
            Some(HeaderValue::from_static("a.example.com"))
        );
        req.append_header(HOST, "b.example.com").expect("a header");
        assert_eq!(request_host_value(&req), None, "two Host headers");
        let mut abs = RequestHeader::build("GET", b"/x", None).expect("a request");
        abs.set_uri(http::Uri::from_static("http://c.example.com:8080/x"));
        abs.insert_header(HOST, "ignored.example.com")
            .expect("a header");
        assert_eq!(request_host(&abs), Ok(Some("c.example.com:8080")));
        assert_eq!(
            request_host_value(&abs),
            Some(HeaderValue::from_static("c.example.com:8080"))
        );
    }
}
