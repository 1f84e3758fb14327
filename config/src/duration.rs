//! Human durations in configuration: `"250ms"`, `"30s"`, `"5m"`, `"1h"`, `"1d"`, and sums of them
//! written together (`"1h30m"`).

use std::fmt;
use std::time::Duration;

/// Parses a duration string. The error says what was wrong, without the key (the caller adds it).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration (write e.g. \"250ms\", \"30s\", \"1h\")".into());
    }
    let bytes = s.as_bytes();
    let mut total: u128 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!(
                "invalid duration {text:?}: expected a number at byte {start} (write e.g. \"250ms\", \"30s\", \"1h\")"
            ));
        }
        let number: u128 = s[start..i]
            .parse()
            .map_err(|_| format!("invalid duration {text:?}: number too large"))?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let nanos_per_unit: u128 = match &s[unit_start..i] {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "d" => 86_400 * 1_000_000_000,
            "" => {
                return Err(format!(
                    "invalid duration {text:?}: missing unit (one of ms, s, m, h, d)"
                ))
            }
            other => {
                return Err(format!(
                    "invalid duration {text:?}: unknown unit {other:?} (one of ms, s, m, h, d)"
                ))
            }
        };
        total = number
            .checked_mul(nanos_per_unit)
            .and_then(|n| total.checked_add(n))
            .ok_or_else(|| format!("invalid duration {text:?}: too large"))?;
    }
    let secs = u64::try_from(total / 1_000_000_000)
        .map_err(|_| format!("invalid duration {text:?}: too large"))?;
    // The remainder of a division by 10^9 always fits in u32.
    let nanos = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// A duration as written in the file; deserializes from a string so serde reports the key path.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ConfDuration(pub Duration);

impl fmt::Debug for ConfDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ConfDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ConfDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"250ms\", \"30s\" or \"1h\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ConfDuration, E> {
                parse_duration(v).map(ConfDuration).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_sums() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "5",
            "s",
            "5 parsecs",
            "5parsecs",
            "-1s",
            "1.5s",
            "99999999999999999999999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
