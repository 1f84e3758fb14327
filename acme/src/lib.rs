//! hubify-edge certificates: the SNI certificate resolver the TLS listener asks during every
//! handshake, and the sources that fill it (a self-signed development certificate, PEM files
//! watched on disk; ACME issuance lands here too).
//!
//! The resolver holds its certificates behind an atomic pointer: a source swaps in a new set and
//! the next handshake uses it, with no restart and no lock on the handshake path. This crate is
//! never on the request path beyond that one pointer load.

mod files;
mod resolver;
mod selfsigned;

pub use files::{load_pem_pair, FileWatcher};
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
