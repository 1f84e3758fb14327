//! Certificates for the tests: a CA and leaves made with rcgen; fingerprints, serials, names.

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::{Digest, Sha256};

/// A test CA.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A leaf certificate signed by a [`Ca`].
#[derive(Clone, Debug)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
    pub serial: u64,
}

impl Ca {
    pub fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, "hubify-edge test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-sign the CA");
        Ca { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A leaf for `names` (e.g. `*.hubify.test`, `hubify.test`) with serial number `serial`.
    pub fn leaf(&self, names: &[&str], serial: u64) -> Leaf {
        let mut params = CertificateParams::new(
            names
                .iter()
                .map(|n| (*n).to_owned())
                .collect::<Vec<String>>(),
        )
        .expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        params.is_ca = IsCa::NoCa;
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign the leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            serial,
        }
    }
}

impl Default for Ca {
    fn default() -> Self {
        Self::new()
    }
}

/// SHA-256 of a DER certificate as uppercase hex pairs separated by `:`.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The certificate's serial number as big-endian bytes without leading zeros.
pub fn serial_bytes(der: &[u8]) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("parse certificate");
    strip_zeros(cert.tbs_certificate.raw_serial())
}

/// `serial` as [`serial_bytes`] would report it.
pub fn serial_of(serial: u64) -> Vec<u8> {
    strip_zeros(&serial.to_be_bytes())
}

fn strip_zeros(b: &[u8]) -> Vec<u8> {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    b[first..].to_vec()
}

/// Is the certificate valid for `name` (WebPKI name matching, wildcards included)?
pub fn valid_for_name(der: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(parsed) = rustls::server::ParsedCertificate::try_from(der) else {
        return false;
    };
    let Ok(server_name) = ServerName::try_from(name.to_owned()) else {
        return false;
    };
    rustls::client::verify_server_name(&parsed, &server_name).is_ok()
}

/// Is the certificate inside its validity period now?
pub fn valid_now(der: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c.validity().is_valid())
        .unwrap_or(false)
}

/// Subject alternative DNS names, for messages.
pub fn dns_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|g| match g {
            x509_parser::extensions::GeneralName::DNSName(n) => Some((*n).to_owned()),
            _ => None,
        })
        .collect()
}

/// Replace `path` atomically: write a temp file beside it, then rename over it.
pub fn replace_file(path: &Path, contents: &[u8]) {
    let dir = path.parent().expect("file has a parent directory");
    let name = path.file_name().expect("file has a name").to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename temp file over the target");
}
