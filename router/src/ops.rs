//! The ops listener: `/healthz` (alive), `/readyz` (can serve, with the failing check named) and
//! `/metrics` (Prometheus text exposition).

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use hubify_edge_acme::CertResolver;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use crate::proxy::Shared;

pub struct OpsApp {
    pub shared: Arc<Shared>,
    /// The TLS listener's certificates, when there is a TLS listener.
    pub certs: Option<Arc<CertResolver>>,
}

impl OpsApp {
    /// The readiness checks that fail, by name.
    pub fn failing_checks(&self) -> Vec<&'static str> {
        let mut failing = Vec::new();
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
}

fn text(status: u16, body: String) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body.into_bytes())
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

#[async_trait]
impl ServeHttp for OpsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        match path.as_str() {
            "/healthz" => text(200, "ok\n".into()),
            "/readyz" => {
                let failing = self.failing_checks();
                if failing.is_empty() {
                    text(200, "ready\n".into())
                } else {
                    text(503, format!("not ready: {}\n", failing.join(", ")))
                }
            }
            "/metrics" => text(200, crate::metrics::render()),
            _ => text(404, "not found: try /metrics, /healthz or /readyz\n".into()),
        }
    }
}
