//! The HTTPS client of the ACME directory and the DNS provider APIs: hyper with TCP_NODELAY (the
//! default client leaves Nagle on, ~44 ms per ACME request), rustls with the ring provider, the
//! system roots plus the configured `acme.ca_bundle`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;

use crate::AcmeError;

pub type Connector = HttpsConnector<HttpConnector>;

/// Builds the TLS client settings: system roots (when any) and the PEM roots of `ca_bundle`.
pub fn tls_config(ca_bundle: Option<&Path>) -> Result<rustls::ClientConfig, AcmeError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_bundle {
        let pem = std::fs::read(path).map_err(|e| {
            AcmeError::Config(format!(
                "acme.ca_bundle: cannot read {}: {e}",
                path.display()
            ))
        })?;
        let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &pem[..])
            .collect::<Result<_, _>>()
            .map_err(|e| {
                AcmeError::Config(format!("acme.ca_bundle: {}: bad PEM: {e}", path.display()))
            })?;
        if certs.is_empty() {
            return Err(AcmeError::Config(format!(
                "acme.ca_bundle: {} holds no CERTIFICATE block",
                path.display()
            )));
        }
        for c in certs {
            roots.add(c).map_err(|e| {
                AcmeError::Config(format!("acme.ca_bundle: {}: {e}", path.display()))
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AcmeError::Config(format!("TLS client: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// A connector with TCP_NODELAY and the given TLS settings; plain `http://` is allowed (local
/// stand-ins in tests, a provider API behind a local proxy).
pub fn connector(tls: rustls::ClientConfig) -> Connector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http)
}

/// The client instant-acme drives.
pub fn acme_client(
    tls: rustls::ClientConfig,
) -> Client<Connector, instant_acme::BodyWrapper<Bytes>> {
    Client::builder(TokioExecutor::new()).build(connector(tls))
}

/// A small JSON-over-HTTPS client for provider APIs.
#[derive(Clone)]
pub struct JsonClient {
    client: Client<Connector, Full<Bytes>>,
    timeout: Duration,
}

/// An answer: status and body.
pub struct JsonResponse {
    pub status: u16,
    pub body: Bytes,
}

impl JsonClient {
    pub fn new(tls: rustls::ClientConfig) -> JsonClient {
        JsonClient {
            client: Client::builder(TokioExecutor::new()).build(connector(tls)),
            timeout: Duration::from_secs(30),
        }
    }

    pub async fn send(
        &self,
        method: http::Method,
        url: &str,
        bearer: &str,
        body: Option<serde_json::Value>,
    ) -> Result<JsonResponse, String> {
        let mut req = http::Request::builder()
            .method(method.clone())
            .uri(url)
            .header(http::header::AUTHORIZATION, format!("Bearer {bearer}"))
            .header(
                http::header::USER_AGENT,
                concat!("hubify-edge/", env!("CARGO_PKG_VERSION")),
            );
        let body = match body {
            Some(v) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(v.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req.body(body).map_err(|e| format!("{method} {url}: {e}"))?;
        let fut = async {
            let rsp = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("{method} {url}: {e}"))?;
            let status = rsp.status().as_u16();
            let body = rsp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("{method} {url}: reading the body: {e}"))?
                .to_bytes();
            Ok(JsonResponse { status, body })
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| format!("{method} {url}: no answer within {:?}", self.timeout))?
    }
}
