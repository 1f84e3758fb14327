//! The ops listener: `/healthz` (alive), `/readyz` (can serve, with the failing check named) and
//! `/metrics` (Prometheus text exposition of the process's one registry).
//!
//! Readiness checks, each named in the 503 body when it fails:
//! - `listener_https`, `listener_http`, `listener_redirect`: the process is listening on the
//!   configured address (see [`crate::bound`]); once all are seen bound the check is not repeated;
//! - `certificate`: the TLS listener has at least one certificate loaded;
//! - `route_store`: the route store can answer (reachable, or its cache warm).
//!
//! A replica's own view of a workspace's route: `GET /routes/<label>` answers what this process
//! holds (JSON: `label`, `store`, `state`, `answer`, `record`, `detail`, `age_seconds`; 404 when
//! nothing is cached), and `POST /routes/<label>/purge` drops the cached entry so that the next
//! request reads the store (JSON `{"label", "purged"}`; 409 for static routes, which come from
//! the file).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use hubify_edge_acme::CertResolver;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use serde_json::json;

use crate::front::FrontSlot;
use crate::proxy::Shared;
use crate::routes::RouteStore;

pub struct OpsApp {
    pub shared: Arc<Shared>,
    /// A listener's current configuration (reloads replace it), for the route views.
    pub current: Option<Arc<FrontSlot>>,
    /// The TLS listener's certificates, when there is a TLS listener.
    pub certs: Option<Arc<CertResolver>>,
    /// The serving listeners, by check name (`listener_https`, …).
    pub listeners: Vec<(&'static str, SocketAddr)>,
    /// Set once every listener has been seen bound.
    pub all_bound: AtomicBool,
}

impl OpsApp {
    pub fn new(
        shared: Arc<Shared>,
        current: Option<Arc<FrontSlot>>,
        certs: Option<Arc<CertResolver>>,
        listeners: Vec<(&'static str, SocketAddr)>,
    ) -> OpsApp {
        OpsApp {
            shared,
            current,
            certs,
            listeners,
            all_bound: AtomicBool::new(false),
        }
    }

    /// The readiness checks that fail, by name.
    pub fn failing_checks(&self) -> Vec<&'static str> {
        let mut failing = Vec::new();
        if !self.all_bound.load(Ordering::Relaxed) {
            let wanted: Vec<SocketAddr> = self.listeners.iter().map(|(_, a)| *a).collect();
            let missing = crate::bound::not_bound(&wanted);
            if missing.is_empty() {
                self.all_bound.store(true, Ordering::Relaxed);
            }
            for (name, addr) in &self.listeners {
                if missing.contains(addr) {
                    failing.push(*name);
                }
            }
        }
        if let Some(certs) = &self.certs {
            if !certs.is_ready() {
                failing.push("certificate");
            }
        }
        if !self.shared.routes.is_ready() {
            failing.push("route_store");
        }
        failing
    }

    /// The route store in force (the one of the last configuration loaded).
    fn routes(&self) -> Arc<RouteStore> {
        match &self.current {
            Some(slot) => slot.load().shared.routes.clone(),
            None => self.shared.routes.clone(),
        }
    }

    /// `GET /routes/<label>` and `POST /routes/<label>/purge`.
    fn route_view(&self, method: &http::Method, rest: &str) -> Response<Vec<u8>> {
        let (label, purge) = match rest.strip_suffix("/purge") {
            Some(label) => (label, true),
            None => (rest, false),
        };
        if !hubify_edge_config::is_valid_label(label) {
            let body = json!({"error": "not a workspace label (one lower-case DNS label)"});
            return text(400, JSON, body.to_string());
        }
        let wanted = if purge {
            http::Method::POST
        } else {
            http::Method::GET
        };
        if method != wanted {
            let body = json!({"error": format!("use {wanted}")});
            let mut resp = text(405, JSON, body.to_string());
            if let Ok(v) = http::HeaderValue::from_str(wanted.as_str()) {
                resp.headers_mut().insert(http::header::ALLOW, v);
            }
            return resp;
        }
        let routes = self.routes();
        if purge {
            return match routes.purge(label) {
                Some(purged) => {
                    tracing::info!(%label, purged, "route cache entry purged (ops)");
                    text(200, JSON, json!({"label": label, "purged": purged}).to_string())
                }
                None => text(
                    409,
                    JSON,
                    json!({"error": "static routes come from the configuration file; nothing is cached"})
                        .to_string(),
                ),
            };
        }
        match routes.inspect(label) {
            Some(view) => text(200, JSON, view.to_string()),
            None => text(
                404,
                JSON,
                json!({"label": label, "error": "nothing cached for this label on this replica"})
                    .to_string(),
            ),
        }
    }

    /// The `/metrics` page; gauges read from other components are refreshed first.
    pub fn metrics(&self) -> String {
        if let Some(certs) = &self.certs {
            crate::metrics::set_certificates(&certs.infos());
        }
        crate::metrics::set_ready(self.failing_checks().is_empty());
        crate::metrics::render()
    }
}

fn text(status: u16, content_type: &str, body: String) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body.into_bytes())
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

const PLAIN: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

#[async_trait]
impl ServeHttp for OpsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path();
        if let Some(rest) = path.strip_prefix("/routes/") {
            return self.route_view(&session.req_header().method, rest);
        }
        match path {
            "/healthz" => text(200, PLAIN, "ok\n".into()),
            "/readyz" => {
                let failing = self.failing_checks();
                if failing.is_empty() {
                    text(200, PLAIN, "ready\n".into())
                } else {
                    text(503, PLAIN, format!("not ready: {}\n", failing.join(", ")))
                }
            }
            "/metrics" => text(200, crate::metrics::CONTENT_TYPE, self.metrics()),
            _ => text(
                404,
                PLAIN,
                "not found: try /metrics, /healthz, /readyz or /routes/<label>\n".into(),
            ),
        }
    }
}
