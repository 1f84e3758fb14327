//! Request ids: kept when the client sent a well-formed one, generated otherwise.

use http::HeaderValue;

/// True for 1–128 ASCII alphanumerics and `-_.:`.
pub fn is_well_formed(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
}

/// 128 random bits as 32 lower-case hex characters.
fn fresh() -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut n: u128 = rand::random();
    let mut out = [0u8; 32];
    for b in out.iter_mut().rev() {
        *b = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
    out
}

/// The id of a request as the header value the proxy sends on (upstream and back to the
/// client): the client's own value when well-formed (shared, not copied), else a fresh one.
pub fn header_value(value: Option<&HeaderValue>) -> HeaderValue {
    match value {
        Some(v) if is_well_formed(v.as_bytes()) => v.clone(),
        // Hex digits are always a valid header value; the fallback is never taken.
        _ => HeaderValue::from_bytes(&fresh()).unwrap_or(HeaderValue::from_static("-")),
    }
}

/// [`header_value`] from the raw bytes of the client's header.
pub fn header_value_from(value: Option<&[u8]>) -> HeaderValue {
    match value {
        Some(v) if is_well_formed(v) => {
            // Well-formed ids are visible ASCII: always a valid header value.
            HeaderValue::from_bytes(v).unwrap_or_else(|_| header_value(None))
        }
        _ => header_value(None),
    }
}

/// The text of an id made by [`header_value`] (always ASCII).
pub fn as_str(id: &HeaderValue) -> &str {
    id.to_str().unwrap_or("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_or_generate_from_bytes() {
        assert_eq!(
            header_value_from(Some(b"abc-123_x.y:z")),
            HeaderValue::from_static("abc-123_x.y:z")
        );
        for bad in [&b""[..], b"has space", b"<x>", &[b'a'; 129]] {
            let v = header_value_from(Some(bad));
            let id = as_str(&v);
            assert_eq!(id.len(), 32);
            assert!(id
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        }
        assert_ne!(header_value_from(None), header_value_from(None));
    }

    #[test]
    fn header_value_keeps_or_generates() {
        let kept = HeaderValue::from_static("abc-123_x.y:z");
        assert_eq!(header_value(Some(&kept)), kept);
        for bad in ["", "has space", "<x>"] {
            let id = header_value(Some(&HeaderValue::from_static(bad)));
            assert_eq!(id.len(), 32, "{bad:?}");
            assert!(as_str(&id)
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        }
        let fresh = header_value(None);
        assert_eq!(as_str(&fresh).len(), 32);
        assert_ne!(fresh, header_value(None));
    }
}
