//! The development certificate: a self-signed wildcard for `*.<domain>` and `<domain>`.

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use crate::{CertError, LoadedCert};

/// Generates a fresh ECDSA P-256 self-signed certificate for `*.<domain>` and `<domain>`, valid
/// for 90 days. Returns it with its PEM (so a caller can write it out for clients to trust).
pub fn self_signed(domain: &str) -> Result<(LoadedCert, String), CertError> {
    let gen = |e: rcgen::Error| CertError::Generate(e.to_string());
    let names = vec![format!("*.{domain}"), domain.to_string()];
    let mut params = rcgen::CertificateParams::new(names).map_err(gen)?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("hubify-edge development ({domain})"),
    );
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(3600)).into();
    params.not_after = (now + std::time::Duration::from_secs(90 * 86_400)).into();
    let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen)?;
    let cert = params.self_signed(&key_pair).map_err(gen)?;
    let pem = cert.pem();
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
    let chain = vec![CertificateDer::from(cert.der().to_vec())];
    let key = CertifiedKey::from_der(chain, key_der, &rustls::crypto::ring::default_provider())
        .map_err(|e| CertError::Generate(e.to_string()))?;
    Ok((LoadedCert::new(key, "self-signed")?, pem))
}

#[cfg(test)]
mod tests {
    #[test]
    fn covers_wildcard_and_apex() {
        let (c, pem) = super::self_signed("hubify.test").unwrap();
        assert_eq!(c.info.names, vec!["*.hubify.test", "hubify.test"]);
        assert_eq!(c.info.fingerprint.len(), 32 * 3 - 1);
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(c.info.not_after > std::time::SystemTime::now());
    }
}
