//! The route store: label → where the workspace lives.
//!
//! `static` routes come from the config file. The Redis-backed store (cache, single-flight,
//! invalidation, stale-if-error) plugs in behind the same `lookup`.

use std::collections::HashMap;
use std::sync::Arc;

use hubify_edge_config::{Config, Route, RouteStore as StoreConfig};

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
}

impl RouteStore {
    /// Builds the store the config asks for. `None` when it needs a runtime piece that is not
    /// built here (the Redis store is constructed by its own module).
    pub fn from_config(config: &Config) -> RouteStore {
        match &config.routes.store {
            StoreConfig::Static(routes) => RouteStore::from_static(routes),
            StoreConfig::Redis => RouteStore::from_static(&[]),
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

    /// Looks a (valid, lower-case) label up.
    pub async fn lookup(&self, label: &str) -> Lookup {
        match &self.kind {
            Kind::Static(map) => match map.get(label) {
                Some(r) => Lookup::Found(r.clone()),
                None => Lookup::NotFound,
            },
        }
    }

    /// True when the store can answer (always, for static routes).
    pub fn is_ready(&self) -> bool {
        match &self.kind {
            Kind::Static(_) => true,
        }
    }
}
