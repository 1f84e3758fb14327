//! The hot-swappable SNI certificate resolver.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

use crate::CertError;

/// What operators want to know about a loaded certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// DNS names of the leaf (SANs), lower case; wildcards as `*.example.com`.
    pub names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Serial number, upper-case hex.
    pub serial: String,
    /// SHA-256 of the leaf's DER, upper-case hex pairs separated by `:`.
    pub fingerprint: String,
    /// Where it came from: `self-signed`, `files`, `acme`.
    pub source: &'static str,
}

/// A certificate chain with its key, ready for handshakes, and what it says about itself.
#[derive(Clone, Debug)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
}

impl LoadedCert {
    /// Wraps a chain and key; fails when the key does not match the leaf or the leaf is unreadable.
    pub fn new(key: CertifiedKey, source: &'static str) -> Result<LoadedCert, CertError> {
        let leaf = key
            .cert
            .first()
            .ok_or_else(|| CertError::Invalid("empty certificate chain".into()))?;
        let info = describe(leaf.as_ref(), source)?;
        Ok(LoadedCert {
            key: Arc::new(key),
            info,
        })
    }

    fn covers(&self, sni: &str) -> bool {
        self.info.names.iter().any(|n| name_matches(n, sni))
    }
}

/// True when certificate name `pattern` (possibly `*.example.com`) covers host `name`. A wildcard
/// covers exactly one label, as in RFC 6125.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => match name.split_once('.') {
            Some((first, rest)) => !first.is_empty() && rest.eq_ignore_ascii_case(suffix),
            None => false,
        },
        None => pattern.eq_ignore_ascii_case(name),
    }
}

fn describe(der: &[u8], source: &'static str) -> Result<CertInfo, CertError> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| CertError::Invalid(format!("cannot parse the leaf certificate: {e}")))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    let to_time = |t: ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 {
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64)
        } else {
            SystemTime::UNIX_EPOCH
        }
    };
    Ok(CertInfo {
        names,
        not_before: to_time(cert.validity().not_before),
        not_after: to_time(cert.validity().not_after),
        serial: cert
            .raw_serial_as_string()
            .replace(':', "")
            .to_ascii_uppercase(),
        fingerprint: fingerprint(der),
        source,
    })
}

/// SHA-256 of DER bytes as `AB:CD:…`.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let mut out = String::with_capacity(digest.len() * 3);
    for (i, b) in digest.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02X}"));
    }
    out
}

/// The set of certificates the TLS listener serves, swapped atomically as a whole.
///
/// Selection per handshake: the first certificate whose names cover the SNI; without SNI (a
/// client connecting by IP) the first certificate. An SNI no certificate covers gets the first one
/// too — the client's own name check then fails, which is the honest answer. With no certificate
/// loaded yet, the handshake fails: nothing is better than a wrong certificate.
#[derive(Debug, Default)]
pub struct CertResolver {
    certs: ArcSwap<Vec<LoadedCert>>,
}

impl CertResolver {
    pub fn new() -> CertResolver {
        CertResolver::default()
    }

    /// Replaces every certificate served, at once.
    pub fn set(&self, certs: Vec<LoadedCert>) {
        self.certs.store(Arc::new(certs));
    }

    /// Replaces the certificates of one source, keeping the others.
    pub fn replace_source(&self, source: &'static str, cert: LoadedCert) {
        self.certs.rcu(|current| {
            let mut next: Vec<LoadedCert> = current
                .iter()
                .filter(|c| c.info.source != source)
                .cloned()
                .collect();
            next.insert(0, cert.clone());
            next
        });
    }

    /// What is loaded now.
    pub fn infos(&self) -> Vec<CertInfo> {
        self.certs.load().iter().map(|c| c.info.clone()).collect()
    }

    /// True once at least one certificate is loaded.
    pub fn is_ready(&self) -> bool {
        !self.certs.load().is_empty()
    }

    /// The certificate for an SNI (see the type's doc for the rules).
    pub fn select(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.load();
        let chosen = match sni {
            Some(name) => certs.iter().find(|c| c.covers(name)).or(certs.first()),
            None => certs.first(),
        };
        chosen.map(|c| c.key.clone())
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.select(hello.server_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matching() {
        assert!(name_matches("*.hubify.com", "alice.hubify.com"));
        assert!(name_matches("*.hubify.com", "ALICE.hubify.com"));
        assert!(!name_matches("*.hubify.com", "a.b.hubify.com"));
        assert!(!name_matches("*.hubify.com", "hubify.com"));
        assert!(!name_matches("*.hubify.com", ".hubify.com"));
        assert!(name_matches("hubify.com", "hubify.com"));
        assert!(!name_matches("hubify.com", "evil.com"));
    }

    #[test]
    fn select_by_sni_and_swap() {
        let r = CertResolver::new();
        assert!(r.select(Some("alice.a.test")).is_none());
        assert!(!r.is_ready());
        let (a, _) = crate::self_signed("a.test").unwrap();
        let (b, _) = crate::self_signed("b.test").unwrap();
        let a_fp = a.info.fingerprint.clone();
        let b_fp = b.info.fingerprint.clone();
        r.set(vec![a.clone(), b.clone()]);
        let fp = |k: Arc<CertifiedKey>| fingerprint(k.cert[0].as_ref());
        assert_eq!(fp(r.select(Some("x.b.test")).unwrap()), b_fp);
        assert_eq!(fp(r.select(Some("b.test")).unwrap()), b_fp);
        assert_eq!(fp(r.select(Some("x.a.test")).unwrap()), a_fp);
        assert_eq!(fp(r.select(None).unwrap()), a_fp);
        assert_eq!(fp(r.select(Some("other.test")).unwrap()), a_fp);
        r.set(vec![b]);
        assert_eq!(fp(r.select(Some("x.a.test")).unwrap()), b_fp);
    }
}
