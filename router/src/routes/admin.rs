//! The `hubify-edge routes` commands: set, get, delete, revoke and list route records in Redis,
//! following the contract in [`super::redis`]. Every write is validated with [`Route::new`] first,
//! replaces the record atomically (keeping its `auth_epoch`) and publishes the label on the events
//! channel in the same transaction or script, so every router drops its cached entry as soon as
//! the change is visible.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::AsyncConnectionConfig;
use hubify_edge_config::{is_valid_label, Limits, Redis as RedisConfig, Route};

use crate::routes::cached::Fetched;
use crate::routes::redis::{
    client, events_channel, parse_record, route_key, route_key_pattern, FIELDS,
};

/// Why a `routes` command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0:?} is not a workspace label (one lower-case DNS label: a-z, 0-9 and '-', at most 63 characters)")]
    Label(String),
    #[error("invalid route: `--{flag}` ({field}): {message}")]
    Route {
        flag: &'static str,
        field: &'static str,
        message: String,
    },
    #[error("cannot connect to Redis ([redis] url): {0}")]
    Connect(String),
    #[error("Redis: {0}")]
    Redis(String),
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// A route record as stored.
#[derive(Debug)]
pub struct Record {
    pub key: String,
    /// The known fields in contract order, then any others sorted; values shown lossily as text.
    pub fields: Vec<(String, String)>,
    /// The route, or why the record is malformed (naming the key and the field).
    pub route: Result<Route, String>,
}

/// A connection to Redis for the `routes` commands.
pub struct Admin {
    conn: MultiplexedConnection,
    prefix: String,
    timeout: Duration,
}

/// Commands from the CLI get this long (they are not on a request path).
const CLI_TIMEOUT: Duration = Duration::from_secs(5);

async fn bounded<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = ::redis::RedisResult<T>>,
) -> Result<T, AdminError> {
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| AdminError::Timeout(timeout))?
        .map_err(|e| AdminError::Redis(e.to_string()))
}

fn check_label(label: &str) -> Result<(), AdminError> {
    if is_valid_label(label) {
        Ok(())
    } else {
        Err(AdminError::Label(label.to_string()))
    }
}

/// The CLI flag of a record field, for error messages.
fn flag_of(field: &str) -> &'static str {
    match field {
        "app" => "app",
        "machine_id" => "machine",
        "region" => "region",
        _ => "address",
    }
}

/// Validates a route given on the command line; the error names the flag and the field.
pub fn validate(
    app: &str,
    machine: &str,
    region: Option<&str>,
    address: Option<&str>,
) -> Result<Route, AdminError> {
    Route::new(Some(app), Some(machine), region, address).map_err(|e| AdminError::Route {
        flag: flag_of(e.field),
        field: e.field,
        message: e.message,
    })
}

/// The limits given on the command line (`--requests-per-second`, `--burst`,
/// `--concurrent-requests`, `--max-websockets`), each a whole number from 1 to
/// [`Limits::MAX`]; `--burst` needs a rate.
pub fn limits(
    requests_per_second: Option<&str>,
    burst: Option<&str>,
    concurrent_requests: Option<&str>,
    max_websockets: Option<&str>,
) -> Result<Limits, AdminError> {
    let one = |flag: &'static str, field: &'static str, v: Option<&str>| {
        v.map(|v| Limits::parse(field, v))
            .transpose()
            .map_err(|e| AdminError::Route {
                flag,
                field,
                message: e.message,
            })
    };
    let limits = Limits {
        requests_per_second: one(
            "requests-per-second",
            "requests_per_second",
            requests_per_second,
        )?,
        burst: one("burst", "burst", burst)?,
        concurrent_requests: one(
            "concurrent-requests",
            "concurrent_requests",
            concurrent_requests,
        )?,
        websockets: one("max-websockets", "max_websockets", max_websockets)?,
    };
    limits.check().map_err(|e| AdminError::Route {
        flag: "burst",
        field: e.field,
        message: e.message,
    })?;
    Ok(limits)
}

impl Admin {
    /// Connects with the `[redis]` settings (its connect timeout; commands get a few seconds).
    pub async fn connect(redis: &RedisConfig) -> Result<Admin, AdminError> {
        let client = client(&redis.url).map_err(|e| AdminError::Connect(e.to_string()))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(redis.connect_timeout)
            .set_response_timeout(CLI_TIMEOUT);
        let conn = tokio::time::timeout(
            redis.connect_timeout + Duration::from_millis(100),
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| AdminError::Connect(format!("timed out after {:?}", redis.connect_timeout)))?
        .map_err(|e| AdminError::Connect(e.to_string()))?;
        Ok(Admin {
            conn,
            prefix: redis.key_prefix.clone(),
            timeout: CLI_TIMEOUT,
        })
    }

    /// The key of `label` under this prefix.
    pub fn key(&self, label: &str) -> String {
        route_key(&self.prefix, label)
    }

    /// Replaces the record of `label` with `route` (DEL + HSET) and publishes the label, all in
    /// one transaction. Returns how many subscribers (routers) received the event.
    pub async fn set(&mut self, label: &str, route: &Route) -> Result<i64, AdminError> {
        check_label(label)?;
        let key = self.key(label);
        let address = route.address.map(|a| a.to_string());
        let l = &route.limits;
        let [rps, burst, concurrent, websockets] = [
            l.requests_per_second,
            l.burst,
            l.concurrent_requests,
            l.websockets,
        ]
        .map(|v| v.map(|n| n.to_string()));
        let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(8);
        for (name, value) in [
            ("app", route.app.as_deref()),
            ("machine_id", route.machine_id.as_deref()),
            ("region", route.region.as_deref()),
            ("address", address.as_deref()),
            ("requests_per_second", rps.as_deref()),
            ("burst", burst.as_deref()),
            ("concurrent_requests", concurrent.as_deref()),
            ("max_websockets", websockets.as_deref()),
        ] {
            if let Some(v) = value {
                pairs.push((name, v));
            }
        }
        // One script, so it is atomic: the record replaced, its `auth_epoch` kept (a
        // revocation must survive a route update), the label published.
        let script = ::redis::Script::new(
            r"local e = redis.call('HGET', KEYS[1], 'auth_epoch')
              redis.call('DEL', KEYS[1])
              redis.call('HSET', KEYS[1], unpack(ARGV, 2))
              if e then redis.call('HSET', KEYS[1], 'auth_epoch', e) end
              return redis.call('PUBLISH', KEYS[2], ARGV[1])",
        );
        let mut inv = script.key(&key);
        inv.key(events_channel(&self.prefix)).arg(label);
        for (name, value) in &pairs {
            inv.arg(*name).arg(*value);
        }
        let receivers: i64 = bounded(self.timeout, inv.invoke_async(&mut self.conn)).await?;
        Ok(receivers)
    }

    /// Revokes every session of `label`: bumps the record's `auth_epoch` and publishes the label,
    /// so every router drops the cached route and refuses sessions of the old epoch. Returns
    /// the new epoch and how many routers received the event; `None` when there is no record.
    pub async fn revoke(&mut self, label: &str) -> Result<Option<(u64, i64)>, AdminError> {
        check_label(label)?;
        let key = self.key(label);
        let script = ::redis::Script::new(
            r"if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
              local e = redis.call('HINCRBY', KEYS[1], 'auth_epoch', 1)
              return {e, redis.call('PUBLISH', KEYS[2], ARGV[1])}",
        );
        let mut inv = script.key(&key);
        inv.key(events_channel(&self.prefix)).arg(label);
        let (epoch, receivers): (i64, i64) =
            bounded(self.timeout, inv.invoke_async(&mut self.conn)).await?;
        Ok(u64::try_from(epoch).ok().map(|e| (e, receivers)))
    }

    /// The record of `label`, `None` when there is no such key.
    pub async fn get(&mut self, label: &str) -> Result<Option<Record>, AdminError> {
        check_label(label)?;
        let key = self.key(label);
        let raw: HashMap<Vec<u8>, Vec<u8>> = {
            let mut cmd = ::redis::cmd("HGETALL");
            cmd.arg(&key);
            match bounded(self.timeout, cmd.query_async(&mut self.conn)).await {
                Ok(v) => v,
                Err(AdminError::Redis(e)) if e.contains("WRONGTYPE") => {
                    return Ok(Some(Record {
                        key: key.clone(),
                        fields: Vec::new(),
                        route: Err(format!("route record {key}: not a hash (WRONGTYPE)")),
                    }))
                }
                Err(e) => return Err(e),
            }
        };
        if raw.is_empty() {
            return Ok(None);
        }
        let mut fields: Vec<(String, String)> = Vec::with_capacity(raw.len());
        for name in FIELDS {
            if let Some(v) = raw.get(name.as_bytes()) {
                fields.push((name.to_string(), String::from_utf8_lossy(v).into_owned()));
            }
        }
        let mut others: Vec<(String, String)> = raw
            .iter()
            .filter(|(k, _)| !FIELDS.iter().any(|f| f.as_bytes() == k.as_slice()))
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect();
        others.sort();
        fields.extend(others);
        let route = match parse_record(&key, &raw) {
            Fetched::Found(r) => Ok(r),
            Fetched::Invalid(why) => Err(why),
            Fetched::NotFound => Err(format!("route record {key}: empty")),
        };
        Ok(Some(Record { key, fields, route }))
    }

    /// Deletes the record of `label` and publishes the label (also when there was no record, so
    /// that no router keeps a stale entry). Returns (whether a record was deleted, receivers).
    pub async fn delete(&mut self, label: &str) -> Result<(bool, i64), AdminError> {
        check_label(label)?;
        let key = self.key(label);
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(&key)
            .cmd("PUBLISH")
            .arg(events_channel(&self.prefix))
            .arg(label);
        let (deleted, receivers): (i64, i64) =
            bounded(self.timeout, pipe.query_async(&mut self.conn)).await?;
        Ok((deleted > 0, receivers))
    }

    /// Every label with a route key, sorted (SCAN with MATCH, never KEYS). Keys under the route
    /// prefix whose rest is not a label are returned separately.
    pub async fn list(&mut self) -> Result<(Vec<String>, Vec<String>), AdminError> {
        let pattern = route_key_pattern(&self.prefix);
        let strip = format!("{}:route:", self.prefix);
        let mut labels = BTreeSet::new();
        let mut odd = BTreeSet::new();
        let mut cursor: u64 = 0;
        loop {
            let mut cmd = ::redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            let (next, keys): (u64, Vec<Vec<u8>>) =
                bounded(self.timeout, cmd.query_async(&mut self.conn)).await?;
            for key in keys {
                let key = String::from_utf8_lossy(&key).into_owned();
                match key.strip_prefix(&strip) {
                    Some(label) if is_valid_label(label) => {
                        labels.insert(label.to_string());
                    }
                    _ => {
                        odd.insert(key);
                    }
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok((labels.into_iter().collect(), odd.into_iter().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_flag() {
        let e = validate("app", "m1", None, Some("nope")).expect_err("bad address");
        assert!(e.to_string().contains("`--address` (address)"), "{e}");
        let e = validate("Bad", "m1", None, None).expect_err("bad app");
        assert!(e.to_string().contains("`--app` (app)"), "{e}");
        let e = validate("app", "M-1", None, None).expect_err("bad machine");
        assert!(e.to_string().contains("`--machine` (machine_id)"), "{e}");
        let e = validate("app", "m1", Some("IAD"), None).expect_err("bad region");
        assert!(e.to_string().contains("`--region` (region)"), "{e}");
        assert!(validate("app", "m1", Some("iad"), Some("127.0.0.1")).is_ok());
    }
}
