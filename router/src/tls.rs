//! The TLS listener's settings: the hot-swappable certificate resolver, HTTP/2 + HTTP/1.1 by ALPN,
//! and the SNI each connection was opened for (kept for the Host/SNI agreement check). Completed
//! handshakes are counted here.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use hubify_edge_acme::CertResolver;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;

/// The server name the client sent in its TLS ClientHello, lower case without a trailing dot.
#[derive(Debug, Clone)]
pub struct Sni(pub String);

struct SniCapture;

#[async_trait]
impl TlsAccept for SniCapture {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        // Called once per completed handshake; failures and timeouts are counted by the
        // accept loop (`listen.rs`).
        crate::metrics::tls_handshake(crate::metrics::HandshakeResult::Ok);
        let name = tls.server_name()?;
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        Some(Arc::new(Sni(name)))
    }
}

/// TLS settings for the public listener.
pub fn settings(resolver: Arc<CertResolver>) -> pingora_error::Result<TlsSettings> {
    let mut tls = TlsSettings::with_callbacks(Box::new(SniCapture))?;
    tls.set_cert_resolver(resolver);
    tls.enable_h2();
    Ok(tls)
}
