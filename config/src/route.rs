//! Workspace labels and route records: the one place that says what a valid route is, used for
//! static routes in the config file and for records read from Redis alike.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

/// True when `s` is one RFC 1123 DNS label in lower case: 1–63 bytes of `a-z`, `0-9` and `-`,
/// neither starting nor ending with `-`.
pub fn is_valid_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Where a workspace lives. Built only through [`Route::new`], so every value is safe to put into
/// a `fly-replay` header or a DNS name (no `;`, `=`, quotes, dots, spaces or control characters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Fly app of the workspace machine (`hubify-workspace-alice`).
    pub app: Option<Arc<str>>,
    /// Fly machine id (`90801679a10038`).
    pub machine_id: Option<Arc<str>>,
    /// Fly region the machine runs in (`iad`), informational.
    pub region: Option<Arc<str>>,
    /// Explicit address: used instead of a 6PN lookup (off-Fly deployments, local development).
    pub address: Option<IpAddr>,
    /// Sessions issued under another epoch are refused (`hubify-edge routes revoke` bumps it).
    pub auth_epoch: u64,
    /// This workspace's limits (each unset one: the `[limits]` default).
    pub limits: Limits,
}

/// Per-workspace limits, per replica: a token bucket of requests per second with a burst,
/// concurrent requests, open WebSockets. `None`: no limit (or, in a route record, the default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub requests_per_second: Option<u32>,
    /// Requests the bucket holds (default: the rate).
    pub burst: Option<u32>,
    pub concurrent_requests: Option<u32>,
    pub websockets: Option<u32>,
}

impl Limits {
    /// The largest value a limit may have.
    pub const MAX: u32 = 1_000_000;

    /// A limit's value as written in a route record or on the command line: a whole number from
    /// 1 to [`Limits::MAX`].
    pub fn parse(field: &'static str, value: &str) -> Result<u32, RouteError> {
        match value.trim().parse::<u32>() {
            Ok(n) if (1..=Limits::MAX).contains(&n) => Ok(n),
            _ => Err(RouteError {
                field,
                message: format!("{value:?} is not a whole number from 1 to {}", Limits::MAX),
            }),
        }
    }

    /// These limits, each unset one taken from `defaults`.
    pub fn or(self, defaults: &Limits) -> Limits {
        Limits {
            requests_per_second: self.requests_per_second.or(defaults.requests_per_second),
            burst: self.burst.or(defaults.burst),
            concurrent_requests: self.concurrent_requests.or(defaults.concurrent_requests),
            websockets: self.websockets.or(defaults.websockets),
        }
    }

    /// The rule between the fields: a `burst` needs the rate its bucket refills at.
    pub fn check(&self) -> Result<(), RouteError> {
        if self.burst.is_some() && self.requests_per_second.is_none() {
            return Err(RouteError {
                field: "burst",
                message: "needs requests_per_second (the rate the bucket refills at)".into(),
            });
        }
        Ok(())
    }

    /// Any limit set.
    pub fn any(&self) -> bool {
        *self != Limits::default()
    }
}

/// Why a route record is not usable; `field` is the record's field name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteError {
    pub field: &'static str,
    pub message: String,
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for RouteError {}

fn token(
    field: &'static str,
    value: Option<&str>,
    max: usize,
    allowed: fn(u8) -> bool,
    what: &str,
) -> Result<Option<Arc<str>>, RouteError> {
    let Some(v) = value else { return Ok(None) };
    if v.is_empty() || v.len() > max || !v.bytes().all(allowed) || v.starts_with('-') {
        return Err(RouteError {
            field,
            message: format!("{v:?} is not a valid {what}"),
        });
    }
    Ok(Some(Arc::from(v)))
}

fn lower_alnum_dash(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'
}

fn lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

impl Route {
    /// Validates the fields of a route record. A route needs an `address`, or both `app` and
    /// `machine_id` (the 6PN name `<machine_id>.vm.<app>.internal` and the replay target).
    pub fn new(
        app: Option<&str>,
        machine_id: Option<&str>,
        region: Option<&str>,
        address: Option<&str>,
    ) -> Result<Route, RouteError> {
        let app = token(
            "app",
            app,
            63,
            lower_alnum_dash,
            "Fly app name (a-z, 0-9, -)",
        )?;
        let machine_id = token(
            "machine_id",
            machine_id,
            32,
            lower_alnum,
            "machine id (a-z, 0-9)",
        )?;
        let region = token("region", region, 16, lower_alnum, "region code (a-z, 0-9)")?;
        let address = match address {
            None => None,
            Some(a) => Some(a.parse::<IpAddr>().map_err(|_| RouteError {
                field: "address",
                message: format!("{a:?} is not an IP address"),
            })?),
        };
        if address.is_none() && (app.is_none() || machine_id.is_none()) {
            let missing = if app.is_none() { "app" } else { "machine_id" };
            return Err(RouteError {
                field: missing,
                message: "missing: a route needs `address`, or both `app` and `machine_id`".into(),
            });
        }
        if app.is_some() != machine_id.is_some() {
            let missing = if app.is_none() { "app" } else { "machine_id" };
            return Err(RouteError {
                field: missing,
                message: "missing: `app` and `machine_id` go together".into(),
            });
        }
        Ok(Route {
            app,
            machine_id,
            region,
            address,
            auth_epoch: 0,
            limits: Limits::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for ok in ["alice", "a", "a-b", "x1", &"a".repeat(63)] {
            assert!(is_valid_label(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a.b",
            "a_b",
            "é",
            &"a".repeat(64),
            "a b",
        ] {
            assert!(!is_valid_label(bad), "{bad}");
        }
    }

    #[test]
    fn routes() {
        let r = Route::new(None, None, None, Some("127.0.0.1")).unwrap();
        assert_eq!(r.address, Some("127.0.0.1".parse().unwrap()));
        let r = Route::new(
            Some("hubify-ws-alice"),
            Some("90801679a10038"),
            Some("iad"),
            None,
        )
        .unwrap();
        assert_eq!(r.machine_id.as_deref(), Some("90801679a10038"));
        assert_eq!(Route::new(None, None, None, None).unwrap_err().field, "app");
        assert_eq!(
            Route::new(Some("a"), None, None, None).unwrap_err().field,
            "machine_id"
        );
        assert_eq!(
            Route::new(None, None, None, Some("nope"))
                .unwrap_err()
                .field,
            "address"
        );
        for inject in ["a;b", "a=b", "a\"b", "a\nb", "a b", "A", "a.b"] {
            assert_eq!(
                Route::new(Some(inject), Some("m1"), None, None)
                    .unwrap_err()
                    .field,
                "app"
            );
            assert_eq!(
                Route::new(Some("app"), Some(inject), None, None)
                    .unwrap_err()
                    .field,
                "machine_id"
            );
        }
    }
}
