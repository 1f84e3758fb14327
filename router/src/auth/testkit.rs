//! A token issuer for tests, benchmarks and fuzzing: what the Hubify API does, with keys made on
//! the spot (Ed25519 or P-256). Not compiled into the router (feature `testkit`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

/// One signing key and its public JWK.
pub struct Issuer {
    pub kid: String,
    alg: Algorithm,
    key: EncodingKey,
    jwk: serde_json::Value,
}

impl Issuer {
    /// A new Ed25519 key (`EdDSA`).
    pub fn ed25519(kid: &str) -> Issuer {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("an Ed25519 key");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("the key just made");
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        Issuer {
            kid: kid.to_string(),
            alg: Algorithm::EdDSA,
            key: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk: serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"
            }),
        }
    }

    /// A new P-256 key (`ES256`).
    pub fn es256(kid: &str) -> Issuer {
        let rng = SystemRandom::new();
        let alg = &ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("a P-256 key");
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("the key just made");
        let point = pair.public_key().as_ref();
        Issuer {
            kid: kid.to_string(),
            alg: Algorithm::ES256,
            key: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: serde_json::json!({
                "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
            }),
        }
    }

    pub fn jwk(&self) -> &serde_json::Value {
        &self.jwk
    }

    /// A token with exactly these claims, signed with this key and its `kid`.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        self.sign_with_kid(claims, Some(&self.kid))
    }

    /// A token signed with this key under another (or no) `kid`.
    pub fn sign_with_kid(&self, claims: &serde_json::Value, kid: Option<&str>) -> String {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, &self.key).expect("a signed token")
    }

    /// A token for `host` with `scope`, issued now, valid for `lifetime` seconds.
    pub fn token(&self, host: &str, sub: &str, scope: &str, lifetime: u64) -> String {
        let now = super::now();
        self.sign(&serde_json::json!({
            "aud": host, "sub": sub, "scope": scope, "iat": now, "exp": now + lifetime,
        }))
    }
}

/// A JWKS document holding these issuers' public keys.
pub fn jwks(issuers: &[&Issuer]) -> String {
    let keys: Vec<&serde_json::Value> = issuers.iter().map(|i| &i.jwk).collect();
    serde_json::json!({ "keys": keys }).to_string()
}
