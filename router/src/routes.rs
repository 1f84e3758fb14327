//! The route store: label → where the workspace lives.
//!
//! `static` routes come from the config file. The Redis-backed store ([`redis`]) sits behind the
//! same `lookup`: a bounded in-process [`cache`] in front of Redis, with single-flight reads,
//! invalidation over pub/sub and stale-if-error ([`cached`]).

pub mod admin;
pub mod cache;
pub mod cached;
pub mod redis;

use std::collections::HashMap;
use std::sync::Arc;

use hubify_edge_config::{Config, Route, RouteStore as StoreConfig};

use crate::routes::cached::CachedStore;

/// The answer of a route lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(Arc<Route>),
    /// No such workspace (404).
    NotFound,
    /// The store cannot answer now and nothing usable is cached (503 + Retry-After).
    Unavailable,
    /// The record exists but is malformed (502); the detail names the key.
    Invalid(String),
}

pub struct RouteStore {
    kind: Kind,
}

enum Kind {
    Static(HashMap<Box<str>, Arc<Route>>),
    Cached(Arc<CachedStore>),
}

impl RouteStore {
    /// Builds the store the config asks for. The Redis store starts its own `route-store`
    /// thread (connection, event listener); it connects in the background.
    pub fn from_config(config: &Config) -> Result<RouteStore, redis::RedisStoreError> {
        Ok(match &config.routes.store {
            StoreConfig::Static(routes) => RouteStore::from_static(routes),
            StoreConfig::Redis => RouteStore::cached(redis::start(config)?),
        })
    }

    /// A store backed by a cache in front of a source (Redis, or a test double).
    pub fn cached(store: Arc<CachedStore>) -> RouteStore {
        RouteStore {
            kind: Kind::Cached(store),
        }
    }

    /// The cached store behind this one, if it is one.
    pub fn cached_store(&self) -> Option<&Arc<CachedStore>> {
        match &self.kind {
            Kind::Cached(s) => Some(s),
            Kind::Static(_) => None,
        }
    }

    pub fn from_static(routes: &[(String, Route)]) -> RouteStore {
        let map = routes
            .iter()
            .map(|(label, route)| (Box::from(label.as_str()), Arc::new(route.clone())))
            .collect();
        RouteStore {
            kind: Kind::Static(map),
        }
    }

    /// Looks a (valid, lower-case) label up. A cache hit answers without awaiting anything.
    pub async fn lookup(&self, label: &str) -> Lookup {
        match &self.kind {
            Kind::Static(map) => match map.get(label) {
                Some(r) => Lookup::Found(r.clone()),
                None => Lookup::NotFound,
            },
            Kind::Cached(store) => store.lookup(label).await,
        }
    }

    /// What this replica holds for `label`, as JSON for the ops listener: `None` when nothing is
    /// known (not cached, or not a static route).
    pub fn inspect(&self, label: &str) -> Option<serde_json::Value> {
        use serde_json::json;
        match &self.kind {
            Kind::Static(map) => map.get(label).map(|r| {
                json!({"label": label, "store": "static", "state": "static", "answer": "found",
                       "record": record_json(r), "age_seconds": null})
            }),
            Kind::Cached(store) => {
                let now = tokio::time::Instant::now().into_std();
                let e = store.cache().entry(label, now)?;
                let (answer, record, detail) = match &e.value {
                    cache::Cached::Found(r) => ("found", record_json(r), None),
                    cache::Cached::NotFound => ("not_found", serde_json::Value::Null, None),
                    cache::Cached::Invalid(why) => {
                        ("invalid", serde_json::Value::Null, Some(why.to_string()))
                    }
                };
                Some(json!({"label": label, "store": "redis", "state": e.state,
                            "answer": answer, "record": record, "detail": detail,
                            "age_seconds": e.age.as_secs_f64()}))
            }
        }
    }

    /// Drops what this replica caches for `label` (the next request reads the store). `None`
    /// for static routes (they come from the file); else whether an entry was cached.
    pub fn purge(&self, label: &str) -> Option<bool> {
        match &self.kind {
            Kind::Static(_) => None,
            Kind::Cached(store) => {
                let cached = store
                    .cache()
                    .entry(label, std::time::Instant::now())
                    .is_some();
                store.invalidate(label);
                Some(cached)
            }
        }
    }

    /// True when the store can answer: always for static routes; for Redis, when Redis is
    /// reachable or the cache has routes to serve.
    pub fn is_ready(&self) -> bool {
        match &self.kind {
            Kind::Static(_) => true,
            Kind::Cached(store) => store.is_ready(),
        }
    }
}

/// A route record as JSON (the fields of docs/routes.md; absent ones `null`).
fn record_json(r: &Route) -> serde_json::Value {
    serde_json::json!({
        "app": r.app.as_deref(),
        "machine_id": r.machine_id.as_deref(),
        "region": r.region.as_deref(),
        "address": r.address.map(|a| a.to_string()),
        "auth_epoch": r.auth_epoch,
        "requests_per_second": r.limits.requests_per_second,
        "burst": r.limits.burst,
        "concurrent_requests": r.limits.concurrent_requests,
        "max_websockets": r.limits.websockets,
    })
}
