//! Certificates from PEM files, reloaded when the files change.
//!
//! The watcher polls (portable, works on every volume type) and compares contents, not mtimes.
//! A new pair is swapped in only when it parses and the key matches the leaf, so a half-written
//! update (the chain written, the key not yet) is skipped until the pair is whole again; the
//! certificate being served is never removed by a bad update.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::{CertError, CertResolver, LoadedCert};

fn file_err(path: &Path, message: impl Into<String>) -> CertError {
    CertError::File {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Parses a PEM chain and a PEM private key into a certificate ready to serve.
pub fn load_pem_pair(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
    source: &'static str,
) -> Result<LoadedCert, CertError> {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(cert_path, format!("bad PEM: {e}")))?;
    if chain.is_empty() {
        return Err(file_err(cert_path, "no CERTIFICATE block found"));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| file_err(key_path, format!("bad PEM: {e}")))?
        .ok_or_else(|| file_err(key_path, "no PRIVATE KEY block found"))?;
    let key = CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())
        .map_err(|e| file_err(key_path, format!("key does not fit the certificate: {e}")))?;
    LoadedCert::new(key, source)
}

/// Loads a cert/key pair from disk and keeps the resolver up to date with it.
pub struct FileWatcher {
    cert: PathBuf,
    key: PathBuf,
    resolver: Arc<CertResolver>,
    last: Option<(Vec<u8>, Vec<u8>)>,
}

impl FileWatcher {
    pub fn new(cert: PathBuf, key: PathBuf, resolver: Arc<CertResolver>) -> FileWatcher {
        FileWatcher {
            cert,
            key,
            resolver,
            last: None,
        }
    }

    /// Reads both files; when their contents changed and form a valid pair, swaps the pair in.
    /// Returns `Ok(true)` when a new certificate was installed, `Ok(false)` when nothing changed.
    pub fn poll(&mut self) -> Result<bool, CertError> {
        let cert_pem =
            std::fs::read(&self.cert).map_err(|e| file_err(&self.cert, e.to_string()))?;
        let key_pem = std::fs::read(&self.key).map_err(|e| file_err(&self.key, e.to_string()))?;
        if let Some((c, k)) = &self.last {
            if *c == cert_pem && *k == key_pem {
                return Ok(false);
            }
        }
        let loaded = load_pem_pair(&cert_pem, &key_pem, &self.cert, &self.key, "files");
        // Remember what we saw even when it is bad, so one bad pair is logged once, not each poll.
        self.last = Some((cert_pem, key_pem));
        let loaded = loaded?;
        tracing::info!(
            cert = %self.cert.display(),
            serial = %loaded.info.serial,
            fingerprint = %loaded.info.fingerprint,
            names = ?loaded.info.names,
            "certificate loaded from files"
        );
        self.resolver.replace_source("files", loaded);
        Ok(true)
    }

    /// Polls forever on the current thread (run it on a thread of its own).
    pub fn run(mut self, interval: Duration) {
        loop {
            std::thread::sleep(interval);
            if let Err(e) = self.poll() {
                tracing::warn!(error = %e, "certificate files not reloaded; the current certificate keeps serving");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(domain: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec![format!("*.{domain}")])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn reloads_good_pairs_and_keeps_serving_through_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let (c1, k1) = pair("one.test");
        std::fs::write(&c, &c1).unwrap();
        std::fs::write(&k, &k1).unwrap();
        let resolver = Arc::new(CertResolver::new());
        let mut w = FileWatcher::new(c.clone(), k.clone(), resolver.clone());
        assert!(w.poll().unwrap());
        assert!(!w.poll().unwrap(), "unchanged files are not reloaded");
        assert_eq!(resolver.infos()[0].names, vec!["*.one.test"]);

        // Half-written update: new chain, old key -> refused, old cert still served.
        let (c2, k2) = pair("two.test");
        std::fs::write(&c, &c2).unwrap();
        let e = w.poll().unwrap_err();
        assert!(e.to_string().contains("does not fit"), "{e}");
        assert_eq!(resolver.infos()[0].names, vec!["*.one.test"]);

        std::fs::write(&k, &k2).unwrap();
        assert!(w.poll().unwrap());
        assert_eq!(resolver.infos()[0].names, vec!["*.two.test"]);

        std::fs::write(&k, "garbage").unwrap();
        assert!(w.poll().is_err());
        assert_eq!(resolver.infos().len(), 1);
        assert_eq!(resolver.infos()[0].names, vec!["*.two.test"]);
    }
}
