//! Request ids: kept when the client sent a well-formed one, generated otherwise.

/// True for 1–128 ASCII alphanumerics and `-_.:`.
pub fn is_well_formed(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
}

/// A fresh id: 128 random bits as 32 lower-case hex characters.
pub fn generate() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut n: u128 = rand::random();
    let mut out = [0u8; 32];
    for b in out.iter_mut().rev() {
        *b = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
    // Every byte is an ASCII hex digit.
    String::from_utf8_lossy(&out).into_owned()
}

/// The id of a request: the client's when well-formed, else a new one.
pub fn from_header(value: Option<&[u8]>) -> String {
    match value {
        Some(v) if is_well_formed(v) => String::from_utf8_lossy(v).into_owned(),
        _ => generate(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_or_generate() {
        assert_eq!(from_header(Some(b"abc-123_x.y:z")), "abc-123_x.y:z");
        for bad in [&b""[..], b"has space", b"<x>", &[b'a'; 129]] {
            let id = from_header(Some(bad));
            assert_eq!(id.len(), 32);
            assert!(id
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        }
        assert_ne!(generate(), generate());
    }
}
