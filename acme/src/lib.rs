//! hubify-edge certificates: the SNI certificate resolver the TLS listener asks during every
//! handshake, and the sources that fill it: a self-signed development certificate, PEM files
//! watched on disk, and ACME (DNS-01 through RFC 2136 or Cloudflare; shared by every replica
//! through Redis, renewed and hot-swapped: see [`manager`]).
//!
//! The resolver holds its certificates behind an atomic pointer: a source swaps in a new set and
//! the next handshake uses it, with no restart and no lock on the handshake path. This crate is
//! never on the request path beyond that one pointer load.

pub mod dns;
mod files;
pub mod http;
pub mod issue;
pub mod manager;
pub mod metrics;
mod resolver;
mod selfsigned;
pub mod store;
#[cfg(feature = "testenv")]
pub mod testenv;

pub use files::{load_pem_pair, FileWatcher};
pub use manager::{renew_now, start, status, AcmeHandle, CertStatus};
pub use resolver::{CertInfo, CertResolver, LoadedCert};
pub use selfsigned::self_signed;

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("invalid certificate: {0}")]
    Invalid(String),
    #[error("certificate generation failed: {0}")]
    Generate(String),
}

/// Why an ACME operation failed. The message names the key or the step to look at.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("ACME: {0}")]
    Acme(String),
    #[error("DNS: {0}")]
    Dns(#[from] dns::DnsError),
    #[error("Redis: {0}")]
    Redis(String),
    #[error("storage: {0}")]
    Store(String),
}
