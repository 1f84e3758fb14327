//! The ops listener: `/healthz` (alive), `/readyz` (can serve, with the failing check named) and
//! `/metrics` (Prometheus text exposition of the process's one registry).
//!
//! Readiness checks, each named in the 503 body when it fails:
//! - `listener_https`, `listener_http`, `listener_redirect`: the process is listening on the
//!   configured address (see [`crate::bound`]); once all are seen bound the check is not repeated;
//! - `certificate`: the TLS listener has at least one certificate loaded;
//! - `route_store`: the route store can answer (reachable, or its cache warm).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// The serving listeners, by check name (`listener_https`, …).
    pub listeners: Vec<(&'static str, SocketAddr)>,
    /// Set once every listener has been seen bound.
    pub all_bound: AtomicBool,
}

impl OpsApp {
    pub fn new(
        shared: Arc<Shared>,
        certs: Option<Arc<CertResolver>>,
        listeners: Vec<(&'static str, SocketAddr)>,
    ) -> OpsApp {
        OpsApp {
            shared,
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

#[async_trait]
impl ServeHttp for OpsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
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
                "not found: try /metrics, /healthz or /readyz\n".into(),
            ),
        }
    }
}
