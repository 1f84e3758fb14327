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

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::header::ACCEPT;
use http::{HeaderName, HeaderValue};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, OrErr, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::front::{
    own_head, redirect_headers, replay_headers, rewrite, Answer, ConnInfo, Finished, Front,
    FrontSlot, Notes, Page, Plan, Redirect, X_REQUEST_ID,
};
use crate::metrics::{self, Outcome};
use crate::pages;
use crate::request_id;
use crate::shutdown::InFlight;

use crate::front::view::PingoraRequest;
pub use crate::front::Shared;

/// The proxy of one listener (Pingora's engine: HTTP/2, and what the HTTP/1.1 fast path hands
/// over).
pub struct EdgeProxy {
    front: Arc<FrontSlot>,
}

impl EdgeProxy {
    pub fn new(front: Arc<FrontSlot>) -> EdgeProxy {
        EdgeProxy { front }
    }
}

fn view(session: &Session) -> PingoraRequest<'_> {
    PingoraRequest {
        req: session.req_header(),
        upgrade: session.is_upgrade_req(),
    }
}

/// Per-request state, filled phase by phase.
pub struct Ctx {
    /// The listener's Front when the request started: it finishes under that configuration.
    pub front: Arc<Front>,
    /// The request id as sent upstream and back (see [`request_id::header_value`]).
    pub request_id: HeaderValue,
    pub notes: Notes,
    pub outcome: Outcome,
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
    /// Writes one of the router's own pages and records it in the context.
    async fn respond(&self, session: &mut Session, ctx: &mut Ctx, page: &Page) -> Result<bool> {
        let json = pages::prefers_json(
            session
                .req_header()
                .headers
                .get(ACCEPT)
                .map(|v| v.as_bytes()),
        );
        let rid = ctx.request_id.clone();
        let mut body = None;
        let resp = own_head(page.status, &ctx.front.stamp(&rid), |put| {
            body = Some(page.render(request_id::as_str(&rid), json, put));
        })?;
        ctx.status = page.status;
        ctx.outcome = page.outcome;
        if page.closes_connection() {
            session.set_keepalive(None);
        }
        let head_only = session.req_header().method == http::Method::HEAD;
        // The stream ends with the body write (empty for HEAD): a HEAD answered from
        // `fail_to_proxy` with a head-only end of stream was reset on HTTP/2.
        session.write_response_header(Box::new(resp), false).await?;
        let body = if head_only { None } else { body };
        session.write_response_body(body, true).await?;
        Ok(true)
    }

    async fn redirect(&self, session: &mut Session, ctx: &mut Ctx, r: Redirect) -> Result<bool> {
        let stamp = ctx.front.stamp(&ctx.request_id);
        let resp = own_head(r.status, &stamp, |put| redirect_headers(&r, put))?;
        ctx.status = r.status;
        ctx.outcome = Outcome::Redirect;
        session.write_response_header(Box::new(resp), true).await?;
        Ok(true)
    }

    fn client_ip(&self, session: &Session, ctx: &Ctx) -> Option<IpAddr> {
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.front.client_ip(&view(session), peer)
    }

    /// Answers `307` with `fly-replay` (and the replay-cache headers when configured); no body,
    /// no `Location`.
    async fn replay(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        value: String,
        cache_ttl: Option<u64>,
    ) -> Result<bool> {
        // Fly keeps its own copy of the body to replay; reading ours (< 1 MiB, decided before)
        // keeps the connection from Fly's edge reusable. A failure only costs the keep-alive.
        if !session.is_body_empty() {
            session.set_total_drain_timeout(Some(ctx.front.config().upstream.read_timeout));
            if let Err(e) = session.drain_request_body().await {
                tracing::debug!(error = %e, "request body not drained before the replay");
            }
        }
        let resp = own_head(307, &ctx.front.stamp(&ctx.request_id), |put| {
            replay_headers(&value, cache_ttl, put)
        })?;
        ctx.status = 307;
        ctx.outcome = Outcome::Replay;
        session.write_response_header(Box::new(resp), true).await?;
        Ok(true)
    }
}

/// Whether the upstream request still carries an absolute-form target (the client sent one);
/// the upstream gets origin form, with the authority as `Host`.
fn plan_uri_is_absolute(upstream: &RequestHeader) -> bool {
    upstream.uri.authority().is_some()
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        let front = self.front.load_full();
        let listener = front.metrics.listener();
        Ctx {
            front,
            request_id: HeaderValue::from_static(""),
            notes: Notes::default(),
            outcome: Outcome::Error,
            plan: None,
            status: 0,
            start: Instant::now(),
            _in_flight: InFlight::enter(listener),
            peer_at: None,
            websocket: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.request_id = request_id::header_value(session.req_header().headers.get(&X_REQUEST_ID));
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let ssl = session.digest().and_then(|d| d.ssl_digest.as_deref());
        let info = ConnInfo::with_tls(peer, ssl);
        let answer = ctx.front.route(&view(session), &info, &mut ctx.notes).await;
        match answer {
            Answer::Page(p) => self.respond(session, ctx, &p).await,
            Answer::Redirect(r) => self.redirect(session, ctx, r).await,
            Answer::Replay { value, cache_ttl } => {
                self.replay(session, ctx, value, cache_ttl).await
            }
            Answer::Forward(plan) => {
                if let Some(idle) = plan.idle_timeout {
                    // Pingora's downstream default would cut an idle WebSocket at 60 s.
                    session.set_read_timeout(Some(idle));
                }
                ctx.outcome = Outcome::Forward;
                ctx.plan = Some(plan);
                Ok(false)
            }
        }
    }

    /// What Pingora's own error lines say about a request: its id and workspace, never the
    /// path, the Host or a header (the access log's rule, docs/http.md).
    fn request_summary(&self, _session: &Session, ctx: &Ctx) -> String {
        format!(
            "request_id={} label={}",
            request_id::as_str(&ctx.request_id),
            ctx.notes.label.as_deref().unwrap_or("-")
        )
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        ctx.peer_at = Some(Instant::now());
        let Some(plan) = &ctx.plan else {
            return Error::e_explain(ErrorType::InternalError, "no forwarding plan");
        };
        let up = &ctx.front.config().upstream;
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
        // The policy's field rules (`front::rewrite`), as on every engine: drop what it does
        // not keep, then write the router's own fields.
        let down = session.req_header();
        if plan_uri_is_absolute(upstream) {
            let path = down.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let uri = http::Uri::try_from(path)
                .explain_err(ErrorType::InvalidHTTPHeader, |_| "request target")?;
            upstream.set_uri(uri);
        }
        let mut conn = rewrite::ConnectionTokens::default();
        for v in down.headers.get_all(http::header::CONNECTION) {
            // The HTTP/1 loop refused a malformed Connection header before Pingora read it.
            let _ = conn.add(v.as_bytes());
        }
        let Some(plan) = &ctx.plan else {
            return Error::e_explain(ErrorType::InternalError, "no forwarding plan");
        };
        let client = self.client_ip(session, ctx);
        let view = view(session);
        let fields = ctx
            .front
            .router_fields(&view, plan, client, ctx.request_id.as_bytes());
        // Every field out, then back in the one order of every engine: Host, the client's
        // fields the policy keeps, the router's (HTTP/2 Cookie fields joined among them).
        let names: Vec<HeaderName> = upstream.headers.keys().cloned().collect();
        let keep = |name: &str| fields.keeps(name, &conn.nominated);
        // The client's spelling of each name where Pingora kept it (HTTP/1), as the fast path
        // forwards it.
        let kept: Vec<(bytes::Bytes, HeaderValue)> = if upstream.has_case() {
            upstream
                .case_header_iter()
                .filter(|(n, _)| std::str::from_utf8(n.as_slice()).is_ok_and(keep))
                .map(|(n, v)| (bytes::Bytes::copy_from_slice(n.as_slice()), v.clone()))
                .collect()
        } else {
            upstream
                .headers
                .iter()
                .filter(|(n, _)| keep(n.as_str()))
                .map(|(n, v)| {
                    (
                        bytes::Bytes::copy_from_slice(n.as_str().as_bytes()),
                        v.clone(),
                    )
                })
                .collect()
        };
        for name in &names {
            upstream.remove_header(name);
        }
        let mut result = Ok(());
        fields.write_host(|name: &'static str, value: &[u8]| {
            if result.is_ok() {
                result = upstream.insert_header(name, value).map(|_| ());
            }
        });
        result?;
        for (name, value) in kept {
            upstream.append_header(name, value)?;
        }
        let mut result = Ok(());
        fields.write(|name: &'static str, value: &[u8]| {
            if result.is_ok() {
                result = upstream.append_header(name, value).map(|_| ());
            }
        });
        result
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
        if upstream_response.status.as_u16() == 101 && !session.is_upgrade_req() {
            // A switch of protocols nobody asked for: a broken upstream, as on the router's own
            // paths (a 502 page, never a tunnel).
            return Error::e_explain(
                ErrorType::HTTPStatus(502),
                "upstream answered 101 to a request without Upgrade",
            );
        }
        let wake = ctx.plan.as_ref().and_then(|p| p.wake);
        ctx.front
            .stamp(&ctx.request_id)
            .woken(wake)
            .insert(upstream_response)?;
        ctx.status = upstream_response.status.as_u16();
        if ctx.status == 101 && session.is_upgrade_req() && ctx.websocket.is_none() {
            ctx.websocket = Some(ctx.front.metrics.websocket_opened(ctx.notes.rule));
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
            let page = Page::upstream_failure(status);
            let _ = self.respond(session, ctx, &page).await;
        }
        ctx.status = status;
        ctx.outcome = Outcome::Error;
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
        // A WebSocket session's length is not a request latency: counted, not timed.
        let upgraded = ctx.websocket.take().is_some();
        ctx.front.finish(&Finished {
            request_id: request_id::as_str(&ctx.request_id),
            method: session.req_header().method.as_str(),
            notes: &ctx.notes,
            outcome: ctx.outcome,
            status,
            elapsed: ctx.start.elapsed(),
            timed: !upgraded,
            upstream: ctx.plan.as_ref().map(|p| p.addr),
            bytes_sent: session.body_bytes_sent(),
            bytes_received: session.body_bytes_read(),
            client: self.client_ip(session, ctx),
            error: e.map(metrics::error_name),
        });
    }
}
