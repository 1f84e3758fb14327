//! The router's session: `v1.<payload>.<tag>`, both base64url; the payload is JSON (host, user,
//! scopes, expiry, auth epoch), the tag its HMAC-SHA256 under the first session key. Any of the
//! configured keys verifies (rotation: add the new key first, keep the old one until every
//! session sealed with it has expired).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::hmac;

/// The cookie's name: `__Host-` makes browsers require `Secure`, `Path=/` and no `Domain`.
pub const SESSION_COOKIE: &str = "__Host-hubify_session";

/// The environment variable with the session keys: comma-separated, the first signs.
pub const SESSION_KEY_ENV: &str = "HUBIFY_EDGE_SESSION_KEY";

/// A session key must have at least this many bytes.
pub const MIN_KEY_LEN: usize = 32;

/// What a session says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Session {
    #[serde(rename = "h")]
    pub host: String,
    #[serde(rename = "u")]
    pub user: String,
    #[serde(rename = "s")]
    pub scopes: String,
    /// Unix seconds.
    #[serde(rename = "e")]
    pub expires: u64,
    #[serde(rename = "p")]
    pub epoch: u64,
}

/// The keys sessions are sealed and opened with.
#[derive(Clone)]
pub struct SessionKeys {
    keys: Vec<hmac::Key>,
    /// The keys were generated at start-up (no `HUBIFY_EDGE_SESSION_KEY`).
    pub ephemeral: bool,
}

/// Why the session keys cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{SESSION_KEY_ENV}: {0}")]
pub struct SessionKeyError(String);

const PREFIX: &str = "v1.";

impl SessionKeys {
    /// Keys from a comma-separated list, each at least [`MIN_KEY_LEN`] bytes.
    pub fn from_list(list: &str) -> Result<SessionKeys, SessionKeyError> {
        let mut keys = Vec::new();
        for (i, k) in list.split(',').enumerate() {
            let k = k.trim();
            if k.len() < MIN_KEY_LEN {
                return Err(SessionKeyError(format!(
                    "key {} has {} bytes; each key needs at least {MIN_KEY_LEN}",
                    i + 1,
                    k.len()
                )));
            }
            keys.push(hmac::Key::new(hmac::HMAC_SHA256, k.as_bytes()));
        }
        Ok(SessionKeys {
            keys,
            ephemeral: false,
        })
    }

    /// Keys from the environment; a random key when the variable is not set (`ephemeral`:
    /// sessions then hold only on this process).
    pub fn from_env() -> Result<SessionKeys, SessionKeyError> {
        match std::env::var(SESSION_KEY_ENV) {
            Ok(list) => SessionKeys::from_list(&list),
            Err(_) => {
                let rng = ring::rand::SystemRandom::new();
                let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
                    .map_err(|_| SessionKeyError("cannot generate a random key".into()))?;
                Ok(SessionKeys {
                    keys: vec![key],
                    ephemeral: true,
                })
            }
        }
    }

    /// The cookie value of `s`.
    pub fn seal(&self, s: &Session) -> String {
        let payload = serde_json::to_vec(s).unwrap_or_default();
        let mut out = String::with_capacity(PREFIX.len() + payload.len() * 4 / 3 + 48);
        out.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_string(&payload, &mut out);
        let tag = hmac::sign(&self.keys[0], out.as_bytes());
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(tag.as_ref(), &mut out);
        out
    }

    /// The session a cookie value holds, if one of the keys sealed it.
    pub fn open(&self, value: &[u8]) -> Option<Session> {
        if value.len() > 4096 || !value.starts_with(PREFIX.as_bytes()) {
            return None;
        }
        let dot = value.iter().rposition(|&b| b == b'.')?;
        let (signed, tag) = (&value[..dot], &value[dot + 1..]);
        let mut tag_bytes = [0u8; 32];
        match URL_SAFE_NO_PAD.decode_slice(tag, &mut tag_bytes) {
            Ok(32) => {}
            _ => return None,
        }
        if !self
            .keys
            .iter()
            .any(|k| hmac::verify(k, signed, &tag_bytes).is_ok())
        {
            return None;
        }
        let payload = URL_SAFE_NO_PAD.decode(signed.get(PREFIX.len()..)?).ok()?;
        serde_json::from_slice(&payload).ok()
    }
}
