//! The TLS listener's settings: the hot-swappable certificate resolver, HTTP/2 + HTTP/1.1 by ALPN,
//! the server's cipher-suite preference, and the SNI each connection was opened for (kept for the
//! Host/SNI agreement check). Completed handshakes are counted here.
//!
//! Suite choice: the server's order wins, and it puts the SHA-256 suites first
//! (`TLS13_AES_128_GCM_SHA256`, then ChaCha20-Poly1305, then `TLS13_AES_256_GCM_SHA384`; the same
//! order for the TLS 1.2 ECDHE suites), which is also the order Go's TLS stack (Caddy) uses on
//! CPUs with AES instructions. All of them are AEAD suites with forward secrecy; the order only
//! decides which one a client that offers several gets. It matters for cost: every handshake
//! (and every resumption) runs the key schedule's HKDF, and ring computes SHA-256 with the CPU's
//! SHA instructions but SHA-384 with portable code on CPUs other than Intel's, where it showed as
//! 10 % of the router's CPU under a new-connection load from an OpenSSL client (which lists
//! AES-256 first). Without this the client's order would win (rustls's default), and Pingora's
//! `TlsSettings` offers no way to change it, so the acceptor's rustls configuration is built here.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use hubify_edge_acme::CertResolver;
use pingora_core::listeners::tls::{Acceptor, TlsSettings};
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use rustls::ServerConfig;

/// What a completed handshake said: the server name the client sent in its ClientHello (lower
/// case without a trailing dot) and the protocol version.
#[derive(Debug, Clone)]
pub struct Handshake {
    pub sni: Option<String>,
    pub version: crate::metrics::TlsVersion,
}

struct SniCapture;

#[async_trait]
impl TlsAccept for SniCapture {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        // Called once per completed handshake; failures and timeouts are counted by the
        // accept loop (`listen.rs`).
        let version = crate::metrics::TlsVersion::of(tls.version());
        crate::metrics::tls_handshake(crate::metrics::HandshakeResult::Ok, version);
        let sni = tls
            .server_name()
            .map(|name| name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase());
        Some(Arc::new(Handshake { sni, version }))
    }
}

/// The public listener's TLS acceptor: Pingora's (its handshake, the SNI capture callback) around
/// the rustls configuration of [`server_config`].
pub fn acceptor(resolver: Arc<CertResolver>) -> pingora_error::Result<Acceptor> {
    let mut tls = TlsSettings::with_callbacks(Box::new(SniCapture))?;
    tls.set_cert_resolver(resolver.clone());
    let mut acceptor = tls.build();
    acceptor.acceptor = pingora_core::tls::TlsAcceptor::from(Arc::new(server_config(resolver)?));
    Ok(acceptor)
}

/// The rustls configuration: TLS 1.2 and 1.3 on ring, certificates by SNI from `resolver`, ALPN
/// `h2` then `http/1.1`, and the suite order described in the module docs, the server's.
pub fn server_config(resolver: Arc<CertResolver>) -> pingora_error::Result<ServerConfig> {
    use rustls::crypto::ring::{cipher_suite as cs, default_provider};
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ],
        ..default_provider()
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| {
            pingora_error::Error::explain(
                pingora_error::ErrorType::InternalError,
                format!("TLS configuration: {e}"),
            )
        })?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.ignore_client_order = true;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
