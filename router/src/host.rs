//! Host → workspace label. Pure: no allocation unless the host has upper-case letters.

use std::borrow::Cow;

use hubify_edge_config::is_valid_label;

/// What a request's host names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch<'a> {
    /// `<label>.<domain>`: a workspace (the label is lower case and valid RFC 1123).
    Workspace(Cow<'a, str>),
    /// `<domain>` itself.
    Apex,
    /// A well-formed name that is not one label under the domain (`evil.com`, `a.b.<domain>`,
    /// `-x.<domain>`, an IP literal).
    Outside,
}

/// The host without its port and trailing dot, lower-cased; `None` when it is malformed (empty,
/// bad characters, bad port).
pub fn normalize_host(raw: &str) -> Option<Cow<'_, str>> {
    if raw.is_empty() || raw.len() > 255 + 6 {
        return None;
    }
    let name = if let Some(rest) = raw.strip_prefix('[') {
        // IPv6 literal, `[::1]:443`.
        let end = rest.find(']')?;
        let after = &rest[end + 1..];
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(valid_port)) {
            return None;
        }
        if !rest[..end]
            .bytes()
            .all(|c| c.is_ascii_hexdigit() || c == b':' || c == b'.')
        {
            return None;
        }
        &raw[..end + 2]
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) => {
                if !valid_port(port) {
                    return None;
                }
                h
            }
            None => raw,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.starts_with('.') {
        return None;
    }
    // One pass (this runs on every request): no empty label (`..`), only name characters
    // outside an IPv6 literal, and whether anything needs lower-casing.
    let literal = name.starts_with('[');
    let mut upper = false;
    let mut prev_dot = false;
    for c in name.bytes() {
        let dot = c == b'.';
        if dot && prev_dot {
            return None;
        }
        prev_dot = dot;
        if !(literal || c.is_ascii_alphanumeric() || c == b'-' || dot || c == b'_') {
            return None;
        }
        upper |= c.is_ascii_uppercase();
    }
    if upper {
        Some(Cow::Owned(name.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(name))
    }
}

fn valid_port(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 5
        && p.bytes().all(|c| c.is_ascii_digit())
        && p.parse::<u16>().is_ok()
}

/// Classifies a normalized host (see [`normalize_host`]) against the configured domain.
pub fn classify<'a>(host: &Cow<'a, str>, domain: &str) -> HostMatch<'a> {
    let name: &str = host;
    if name == domain {
        return HostMatch::Apex;
    }
    let Some(label) = name
        .strip_suffix(domain)
        .and_then(|rest| rest.strip_suffix('.'))
    else {
        return HostMatch::Outside;
    };
    if !is_valid_label(label) {
        return HostMatch::Outside;
    }
    match host {
        Cow::Borrowed(b) => HostMatch::Workspace(Cow::Borrowed(&b[..label.len()])),
        Cow::Owned(_) => HostMatch::Workspace(Cow::Owned(label.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(raw: &str) -> Option<HostMatch<'_>> {
        normalize_host(raw).map(|h| match classify(&h, "hubify.com") {
            HostMatch::Workspace(l) => HostMatch::Workspace(Cow::Owned(l.into_owned())),
            HostMatch::Apex => HostMatch::Apex,
            HostMatch::Outside => HostMatch::Outside,
        })
    }

    fn ws(l: &str) -> Option<HostMatch<'static>> {
        Some(HostMatch::Workspace(Cow::Owned(l.to_string())))
    }

    #[test]
    fn workspaces() {
        assert_eq!(label("alice.hubify.com"), ws("alice"));
        assert_eq!(label("Alice.Hubify.COM"), ws("alice"));
        assert_eq!(label("alice.hubify.com."), ws("alice"));
        assert_eq!(label("alice.hubify.com:443"), ws("alice"));
        assert_eq!(label("alice.hubify.com.:8443"), ws("alice"));
        assert_eq!(label("a-1.hubify.com"), ws("a-1"));
    }

    #[test]
    fn apex_and_outside() {
        assert_eq!(label("hubify.com"), Some(HostMatch::Apex));
        assert_eq!(label("hubify.com:80"), Some(HostMatch::Apex));
        assert_eq!(label("a.b.hubify.com"), Some(HostMatch::Outside));
        assert_eq!(label("evil.com"), Some(HostMatch::Outside));
        assert_eq!(label("alicehubify.com"), Some(HostMatch::Outside));
        assert_eq!(label("-x.hubify.com"), Some(HostMatch::Outside));
        assert_eq!(label("a_b.hubify.com"), Some(HostMatch::Outside));
        assert_eq!(
            label(&format!("{}.hubify.com", "a".repeat(64))),
            Some(HostMatch::Outside)
        );
        assert_eq!(label("127.0.0.1"), Some(HostMatch::Outside));
        assert_eq!(label("[::1]:443"), Some(HostMatch::Outside));
    }

    /// The single-pass check above must accept and reject exactly what the original, plainer
    /// formulation did (kept here as the reference).
    #[test]
    fn single_pass_matches_reference() {
        fn reference(raw: &str) -> Option<Cow<'_, str>> {
            if raw.is_empty() || raw.len() > 255 + 6 {
                return None;
            }
            let name = if let Some(rest) = raw.strip_prefix('[') {
                let end = rest.find(']')?;
                let after = &rest[end + 1..];
                if !(after.is_empty() || after.strip_prefix(':').is_some_and(valid_port)) {
                    return None;
                }
                if !rest[..end]
                    .bytes()
                    .all(|c| c.is_ascii_hexdigit() || c == b':' || c == b'.')
                {
                    return None;
                }
                &raw[..end + 2]
            } else {
                match raw.rsplit_once(':') {
                    Some((h, port)) => {
                        if !valid_port(port) {
                            return None;
                        }
                        h
                    }
                    None => raw,
                }
            };
            let name = name.strip_suffix('.').unwrap_or(name);
            if name.is_empty() || name.starts_with('.') || name.contains("..") {
                return None;
            }
            if !name.starts_with('[')
                && !name
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_')
            {
                return None;
            }
            if name.bytes().any(|c| c.is_ascii_uppercase()) {
                Some(Cow::Owned(name.to_ascii_lowercase()))
            } else {
                Some(Cow::Borrowed(name))
            }
        }
        // Every string of up to 5 characters over an alphabet that hits each branch.
        let alphabet = ['a', 'B', '0', '-', '.', '_', ':', '[', ']', 'é', ' '];
        let mut inputs = vec![String::new()];
        let mut frontier = vec![String::new()];
        for _ in 0..5 {
            let mut next = Vec::new();
            for p in &frontier {
                for c in alphabet {
                    let mut s = p.clone();
                    s.push(c);
                    next.push(s);
                }
            }
            inputs.extend(next.iter().cloned());
            frontier = next;
        }
        inputs.extend(
            [
                "Alice.Hubify.COM.:8443",
                "[::1]:443",
                "[FDAA::3]",
                "a..b.hubify.com",
                "x.hubify.com..",
            ]
            .map(String::from),
        );
        for raw in &inputs {
            assert_eq!(normalize_host(raw), reference(raw), "{raw:?}");
        }
    }

    #[test]
    fn malformed() {
        for bad in [
            "",
            ":",
            ":443",
            "bad host!",
            "alice.hubify.com:",
            "alice.hubify.com:99999",
            "alice.hubify.com:x",
            "alice..hubify.com",
            ".",
            "..",
            "[::1",
            "[zz]",
            "a/b",
            "alice.hubify.com\0",
            "é.hubify.com",
        ] {
            assert_eq!(label(bad), None, "{bad:?}");
        }
    }
}
