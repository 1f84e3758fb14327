//! Prometheus metrics (bounded labels only: listener, outcome, path rule, status class).
//!
//! For now only the route cache's counters ([`RouteCacheMetrics`], all `hubify_route_cache_*`);
//! they are plain atomics so the cache-hit path pays one relaxed increment and nothing else.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Counters and gauges of the route cache and its Redis store. One process-wide instance,
/// [`ROUTE_CACHE`]; tests give a cache its own (leaked) instance.
#[derive(Debug, Default)]
pub struct RouteCacheMetrics {
    /// Lookups answered from a fresh cache entry.
    pub hits: AtomicU64,
    /// Lookups with nothing usable cached (they wait for a store read).
    pub misses: AtomicU64,
    /// Lookups whose entry was past its TTL or from before a pub/sub gap (re-read from the store).
    pub revalidations: AtomicU64,
    /// Lookups answered with a route past its TTL because the store failed (stale-if-error).
    pub stale_served: AtomicU64,
    /// Lookups answered "unavailable" (store failed, nothing usable cached).
    pub unavailable: AtomicU64,
    /// Store reads started (one per single-flight, however many requests wait on it).
    pub fetches: AtomicU64,
    /// Store reads that failed or timed out.
    pub fetch_errors: AtomicU64,
    /// Entries evicted to stay within the capacity.
    pub evictions: AtomicU64,
    /// Invalidation events received (one per label published on the events channel).
    pub invalidations: AtomicU64,
    /// Pub/sub (re)subscriptions; each one marks every cached entry for revalidation.
    pub resubscribes: AtomicU64,
    /// Entries in the cache now.
    pub entries: AtomicI64,
    /// The configured capacity.
    pub capacity: AtomicI64,
    /// 1 while the invalidation subscription is up.
    pub subscribed: AtomicI64,
    /// 1 while the data connection to the store is up.
    pub connected: AtomicI64,
}

impl RouteCacheMetrics {
    pub const fn new() -> RouteCacheMetrics {
        RouteCacheMetrics {
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            revalidations: AtomicU64::new(0),
            stale_served: AtomicU64::new(0),
            unavailable: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
            fetch_errors: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            resubscribes: AtomicU64::new(0),
            entries: AtomicI64::new(0),
            capacity: AtomicI64::new(0),
            subscribed: AtomicI64::new(0),
            connected: AtomicI64::new(0),
        }
    }

    /// A fresh instance that lives for the rest of the process (for tests and benches).
    pub fn leak() -> &'static RouteCacheMetrics {
        Box::leak(Box::new(RouteCacheMetrics::new()))
    }

    /// Appends the text exposition of these metrics.
    pub fn render_into(&self, out: &mut String) {
        let counters: [(&str, &AtomicU64, &str); 10] = [
            (
                "hits",
                &self.hits,
                "Route lookups answered from a fresh cache entry.",
            ),
            (
                "misses",
                &self.misses,
                "Route lookups with nothing usable cached.",
            ),
            (
                "revalidations",
                &self.revalidations,
                "Route lookups that re-read an expired or suspect entry.",
            ),
            (
                "stale_served",
                &self.stale_served,
                "Routes served past their TTL because the store failed.",
            ),
            (
                "unavailable",
                &self.unavailable,
                "Route lookups answered unavailable (503).",
            ),
            (
                "fetches",
                &self.fetches,
                "Route store reads (one per single-flight).",
            ),
            (
                "fetch_errors",
                &self.fetch_errors,
                "Route store reads that failed or timed out.",
            ),
            (
                "evictions",
                &self.evictions,
                "Route cache entries evicted for capacity.",
            ),
            (
                "invalidations",
                &self.invalidations,
                "Route invalidation events received.",
            ),
            (
                "resubscribes",
                &self.resubscribes,
                "Route event (re)subscriptions.",
            ),
        ];
        for (name, v, help) in counters {
            let _ = writeln!(out, "# HELP hubify_route_cache_{name}_total {help}");
            let _ = writeln!(out, "# TYPE hubify_route_cache_{name}_total counter");
            let _ = writeln!(out, "hubify_route_cache_{name}_total {}", v.load(Relaxed));
        }
        let gauges: [(&str, &AtomicI64, &str); 4] = [
            ("entries", &self.entries, "Route cache entries."),
            ("capacity", &self.capacity, "Route cache capacity."),
            (
                "subscribed",
                &self.subscribed,
                "1 while the route event subscription is up.",
            ),
            (
                "connected",
                &self.connected,
                "1 while the route store connection is up.",
            ),
        ];
        for (name, v, help) in gauges {
            let _ = writeln!(out, "# HELP hubify_route_cache_{name} {help}");
            let _ = writeln!(out, "# TYPE hubify_route_cache_{name} gauge");
            let _ = writeln!(out, "hubify_route_cache_{name} {}", v.load(Relaxed));
        }
    }
}

/// The route cache metrics of this process.
pub static ROUTE_CACHE: RouteCacheMetrics = RouteCacheMetrics::new();

/// The text exposition of every registered metric.
pub fn render() -> String {
    let mut out = String::with_capacity(4096);
    ROUTE_CACHE.render_into(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_named_counters_and_gauges() {
        let m = RouteCacheMetrics::new();
        m.hits.fetch_add(3, Relaxed);
        m.entries.store(7, Relaxed);
        let mut s = String::new();
        m.render_into(&mut s);
        assert!(s.contains("hubify_route_cache_hits_total 3\n"), "{s}");
        assert!(
            s.contains("# TYPE hubify_route_cache_entries gauge\n"),
            "{s}"
        );
        assert!(s.contains("hubify_route_cache_entries 7\n"), "{s}");
    }
}
