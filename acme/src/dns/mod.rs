//! DNS-01 providers: where the `_acme-challenge` TXT values are published, and the propagation
//! check against the zone's authoritative servers.
//!
//! A provider only adds and removes single TXT values (never replaces the set: the wildcard and
//! the apex share one name and each needs its own value). Add a provider by implementing
//! [`DnsProvider`] and building it in [`from_config`].

mod client;
pub mod cloudflare;
pub mod rfc2136;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hubify_edge_config::{Acme, DnsProvider as ProviderKind};

pub use client::{exchange_udp, query_txt};

/// Why a DNS operation failed. The message says what to check.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{provider}: {message}")]
pub struct DnsError {
    pub provider: &'static str,
    pub message: String,
}

/// Publishes and removes TXT values for DNS-01.
#[async_trait]
pub trait DnsProvider: Send + Sync {
    /// `rfc2136`, `cloudflare`: for logs and errors.
    fn name(&self) -> &'static str;
    /// Adds one TXT value at `fqdn` (absolute, no trailing dot), keeping the others.
    async fn add_txt(&self, fqdn: &str, value: &str) -> Result<(), DnsError>;
    /// Removes that one TXT value (a value already gone is not an error).
    async fn remove_txt(&self, fqdn: &str, value: &str) -> Result<(), DnsError>;
    /// The authoritative servers to ask whether a value is visible yet.
    async fn authoritative_servers(&self) -> Result<Vec<SocketAddr>, DnsError>;
}

/// Builds the configured provider. Secrets come from the environment:
/// `HUBIFY_EDGE_TSIG_SECRET` (base64) for rfc2136, `CLOUDFLARE_API_TOKEN` for cloudflare.
pub fn from_config(
    acme: &Acme,
    tls: rustls::ClientConfig,
) -> Result<Arc<dyn DnsProvider>, crate::AcmeError> {
    let dns = &acme.dns;
    let cfg = |m: &str| crate::AcmeError::Config(m.to_string());
    match dns.provider {
        ProviderKind::Rfc2136 => {
            let server = dns.server.ok_or_else(|| cfg("acme.dns.server: missing"))?;
            let zone = dns
                .zone
                .clone()
                .ok_or_else(|| cfg("acme.dns.zone: missing"))?;
            let key_name = dns
                .tsig_key_name
                .clone()
                .ok_or_else(|| cfg("acme.dns.tsig_key_name: missing"))?;
            let algorithm = wire::TsigAlgorithm::parse(&dns.tsig_algorithm).ok_or_else(|| {
                cfg("acme.dns.tsig_algorithm: must be hmac-sha256 or hmac-sha512")
            })?;
            let secret = std::env::var("HUBIFY_EDGE_TSIG_SECRET").map_err(|_| {
                cfg("acme.dns: the rfc2136 provider needs the TSIG secret (base64) in the environment variable HUBIFY_EDGE_TSIG_SECRET")
            })?;
            let secret = base64_decode(secret.trim()).ok_or_else(|| {
                cfg("HUBIFY_EDGE_TSIG_SECRET is not valid base64 (the TSIG secret as knot/BIND print it)")
            })?;
            let key = wire::TsigKey::new(&key_name, algorithm, &secret);
            let mut p = rfc2136::Rfc2136::new(server, &zone, key);
            if let Some(check) = dns.propagation_server {
                p = p.with_check_servers(vec![check]);
            }
            Ok(Arc::new(p))
        }
        ProviderKind::Cloudflare => {
            let zone_id = dns
                .zone_id
                .clone()
                .ok_or_else(|| cfg("acme.dns.zone_id: missing"))?;
            let token = std::env::var("CLOUDFLARE_API_TOKEN").map_err(|_| {
                cfg("acme.dns: the cloudflare provider needs an API token (Zone.DNS edit) in the environment variable CLOUDFLARE_API_TOKEN")
            })?;
            let base = dns
                .api_base
                .clone()
                .unwrap_or_else(|| cloudflare::DEFAULT_API_BASE.to_string());
            Ok(Arc::new(cloudflare::Cloudflare::new(
                crate::http::JsonClient::new(tls),
                &base,
                &zone_id,
                token.trim(),
                dns.propagation_server,
            )))
        }
    }
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .ok()
        .or_else(|| {
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(s)
                .ok()
        })
        .filter(|k| !k.is_empty())
}

/// Waits until every value is visible at `fqdn` on every authoritative server, polling (100 ms,
/// doubling to 2 s) until `timeout`.
pub async fn wait_propagation(
    provider: &dyn DnsProvider,
    fqdn: &str,
    values: &[String],
    timeout: Duration,
) -> Result<(), DnsError> {
    let servers = provider.authoritative_servers().await?;
    if servers.is_empty() {
        return Err(DnsError {
            provider: provider.name(),
            message: "no authoritative server to check propagation against".into(),
        });
    }
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(100);
    loop {
        let mut missing = Vec::new();
        for server in &servers {
            match query_txt(*server, fqdn).await {
                Ok(seen) => {
                    if !values.iter().all(|v| seen.contains(v)) {
                        missing.push(format!(
                            "{server}: has {} of the {} values",
                            values.iter().filter(|v| seen.contains(v)).count(),
                            values.len()
                        ));
                    }
                }
                Err(e) => missing.push(format!("{server}: {e}")),
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() + delay > deadline {
            return Err(DnsError {
                provider: provider.name(),
                message: format!(
                    "TXT {fqdn} not visible on the authoritative servers after {timeout:?} ({}); raise acme.dns.propagation_timeout if the provider is slow",
                    missing.join("; ")
                ),
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}
