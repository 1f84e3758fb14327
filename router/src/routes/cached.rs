//! A [`RouteCache`] in front of a slow, fallible [`Source`] (Redis): single-flight reads,
//! stale-if-error, invalidation.
//!
//! - **Hit path.** [`CachedStore::lookup`] probes the cache and, on a fresh entry, returns without
//!   awaiting anything.
//! - **Single-flight.** The first lookup of a label that needs the store starts one read, spawned
//!   as its own task on the store's runtime (so a cancelled request never strands the others);
//!   every lookup of that label meanwhile waits on the same flight and shares its answer.
//! - **Stale-while-revalidate.** A route past its TTL (no event missed since it was read) is
//!   served at once while one background read refreshes it.
//! - **Stale-if-error.** When the read fails or times out, a lookup that had a stale route (within
//!   `max_stale` past its TTL) serves it, and the entry is not re-read for a short back-off;
//!   without one, the answer is [`Lookup::Unavailable`]. Every read is bounded by `fetch_timeout`.
//! - **Invalidation.** [`CachedStore::invalidate`] drops a label's entry; a read of that label in
//!   flight at that moment is done again rather than caching a value that may predate the change.
//!   [`CachedStore::revalidate_all`] marks every entry as needing a re-read (after a pub/sub gap).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hubify_edge_config::Route;
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::metrics::RouteCacheMetrics;
use crate::routes::cache::{Cached, Probe, RouteCache};
use crate::routes::Lookup;

/// What the store says about a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    Found(Route),
    NotFound,
    /// Malformed record; the detail names the key and the field.
    Invalid(String),
}

/// Why the store could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Known to be unreachable right now (no connection).
    #[error("the route store is not connected")]
    Down,
    #[error("the route store did not answer in time")]
    Timeout,
    #[error("route store error: {0}")]
    Store(String),
}

/// The source of truth behind the cache.
#[async_trait]
pub trait Source: Send + Sync + 'static {
    /// Reads one label's record. Should bound itself; the caller bounds it too.
    async fn fetch(&self, label: &str) -> Result<Fetched, FetchError>;
    /// True while the source is reachable (for readiness).
    fn is_connected(&self) -> bool;
}

/// How long a failed revalidation keeps a stale route from being re-read.
pub const STALE_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
enum Outcome {
    Answer(Lookup),
    Failed,
}

struct Flight {
    tx: watch::Sender<Option<Outcome>>,
    /// Set by `invalidate` while the read is in flight.
    invalidated: AtomicBool,
}

/// See the module documentation.
pub struct CachedStore {
    cache: RouteCache,
    source: Arc<dyn Source>,
    flights: Mutex<HashMap<Box<str>, Arc<Flight>>>,
    spawner: Handle,
    fetch_timeout: Duration,
    metrics: &'static RouteCacheMetrics,
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl CachedStore {
    /// `spawner` runs the reads (the store's own runtime); `fetch_timeout` bounds each read.
    pub fn new(
        cache: RouteCache,
        source: Arc<dyn Source>,
        spawner: Handle,
        fetch_timeout: Duration,
        metrics: &'static RouteCacheMetrics,
    ) -> CachedStore {
        CachedStore {
            cache,
            source,
            flights: Mutex::new(HashMap::new()),
            spawner,
            fetch_timeout,
            metrics,
        }
    }

    pub fn cache(&self) -> &RouteCache {
        &self.cache
    }

    /// Looks a (valid, lower-case) label up. A fresh cache entry answers at once.
    pub async fn lookup(self: &Arc<Self>, label: &str) -> Lookup {
        let stale = match self.cache.probe(label, now()) {
            Probe::Hit(answer) => {
                self.metrics.hits.fetch_add(1, Relaxed);
                return answer;
            }
            Probe::StaleBackoff(route) => {
                self.metrics.stale_served.fetch_add(1, Relaxed);
                return Lookup::Found(route);
            }
            Probe::Expired(route) => {
                self.metrics.revalidations.fetch_add(1, Relaxed);
                self.metrics.stale_served.fetch_add(1, Relaxed);
                // The read's answer lands in the cache; nobody waits on it.
                let _ = self.flight(label);
                return Lookup::Found(route);
            }
            Probe::Stale(route) => {
                self.metrics.revalidations.fetch_add(1, Relaxed);
                Some(route)
            }
            Probe::Miss => {
                self.metrics.misses.fetch_add(1, Relaxed);
                None
            }
        };
        match self.join_flight(label).await {
            Outcome::Answer(answer) => answer,
            Outcome::Failed => match stale {
                Some(route) => {
                    self.metrics.stale_served.fetch_add(1, Relaxed);
                    Lookup::Found(route)
                }
                None => {
                    self.metrics.unavailable.fetch_add(1, Relaxed);
                    Lookup::Unavailable
                }
            },
        }
    }

    /// Waits on the read of `label` in flight, starting it if there is none.
    async fn join_flight(self: &Arc<Self>, label: &str) -> Outcome {
        let mut rx = match self.flight(label) {
            Ok(rx) => rx,
            Err(answer) => return Outcome::Answer(answer),
        };
        // The flight bounds its read by `fetch_timeout`; this outer bound only guards against a
        // runtime that stopped running it.
        let bound = self.fetch_timeout * 2 + Duration::from_millis(500);
        let outcome = match tokio::time::timeout(bound, rx.wait_for(Option::is_some)).await {
            Ok(Ok(v)) => v.clone().unwrap_or(Outcome::Failed),
            _ => Outcome::Failed,
        };
        outcome
    }

    /// The read of `label` in flight, started if there is none; `Err` with the answer when a
    /// flight finished just now and cached it.
    fn flight(self: &Arc<Self>, label: &str) -> Result<watch::Receiver<Option<Outcome>>, Lookup> {
        let (rx, start) = {
            let mut flights = self.flights.lock();
            match flights.get(label) {
                Some(flight) => (flight.tx.subscribe(), None),
                None => {
                    // A flight that just finished cached its answer before leaving the map.
                    if let Probe::Hit(answer) = self.cache.probe(label, now()) {
                        return Err(answer);
                    }
                    let (tx, rx) = watch::channel(None);
                    let flight = Arc::new(Flight {
                        tx,
                        invalidated: AtomicBool::new(false),
                    });
                    flights.insert(Box::from(label), flight.clone());
                    let guard = FlightGuard {
                        store: self.clone(),
                        label: label.to_owned(),
                        flight,
                        done: false,
                    };
                    (rx, Some(guard))
                }
            }
        };
        // Spawned outside the lock: a runtime that is shut down drops the task at once, and the
        // guard's drop takes the lock.
        if let Some(guard) = start {
            self.spawner.spawn(guard.run());
        }
        Ok(rx)
    }

    /// The record of `label` changed or was deleted: drop the cached entry now.
    pub fn invalidate(&self, label: &str) {
        let flights = self.flights.lock();
        if let Some(flight) = flights.get(label) {
            flight.invalidated.store(true, Relaxed);
        }
        self.cache.remove(label);
        drop(flights);
        self.metrics.invalidations.fetch_add(1, Relaxed);
    }

    /// Every entry cached so far needs a re-read before it is served fresh again (invalidations
    /// may have been lost).
    /// Reads in flight finish as they are: they recorded the epoch they started in, so what they
    /// cache is itself marked as needing revalidation.
    pub fn revalidate_all(&self) {
        self.cache.bump_epoch();
    }

    /// Ready when the source is reachable, or when the cache has something to serve.
    pub fn is_ready(&self) -> bool {
        self.source.is_connected() || !self.cache.is_empty()
    }
}

/// Runs one flight and, however it ends (even by panic or cancellation), removes it and answers
/// its waiters.
struct FlightGuard {
    store: Arc<CachedStore>,
    label: String,
    flight: Arc<Flight>,
    done: bool,
}

impl FlightGuard {
    async fn run(mut self) {
        let store = self.store.clone();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let epoch = store.cache.epoch();
            store.metrics.fetches.fetch_add(1, Relaxed);
            let result =
                match tokio::time::timeout(store.fetch_timeout, store.source.fetch(&self.label))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(FetchError::Timeout),
                };
            let flights = store.flights.lock();
            let invalidated = self.flight.invalidated.swap(false, Relaxed);
            if invalidated && attempt < 2 && result.is_ok() {
                // The record changed while it was being read: read it again.
                drop(flights);
                continue;
            }
            let outcome = match result {
                Ok(fetched) => {
                    let cached = match fetched {
                        Fetched::Found(route) => Cached::Found(Arc::new(route)),
                        Fetched::NotFound => Cached::NotFound,
                        Fetched::Invalid(why) => Cached::Invalid(why.into()),
                    };
                    let answer = cached.to_lookup();
                    if !invalidated {
                        store.cache.insert(&self.label, cached, now(), epoch);
                    }
                    Outcome::Answer(answer)
                }
                Err(e) => {
                    store.metrics.fetch_errors.fetch_add(1, Relaxed);
                    tracing::debug!(label = %self.label, error = %e, "route store read failed");
                    store.cache.note_error(&self.label, now(), STALE_RETRY);
                    Outcome::Failed
                }
            };
            self.finish(flights, outcome);
            return;
        }
    }

    fn finish(
        &mut self,
        mut flights: parking_lot::MutexGuard<'_, HashMap<Box<str>, Arc<Flight>>>,
        outcome: Outcome,
    ) {
        if flights
            .get(self.label.as_str())
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
        {
            flights.remove(self.label.as_str());
        }
        drop(flights);
        self.flight.tx.send_replace(Some(outcome));
        self.done = true;
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if !self.done {
            let store = self.store.clone();
            let flights = store.flights.lock();
            self.finish(flights, Outcome::Failed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::cache::Ttls;
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::Semaphore;

    const GATE_PERMITS: u32 = 1 << 20;

    /// An in-memory source: answers from a map, counts reads, can be gated, failed or hung.
    struct Fake {
        records: Mutex<HashMap<String, Fetched>>,
        reads: AtomicUsize,
        gate: Semaphore,
        fail: AtomicBool,
        hang: AtomicBool,
    }

    impl Fake {
        fn new() -> Arc<Fake> {
            Arc::new(Fake {
                records: Mutex::new(HashMap::new()),
                reads: AtomicUsize::new(0),
                gate: Semaphore::new(GATE_PERMITS as usize),
                fail: AtomicBool::new(false),
                hang: AtomicBool::new(false),
            })
        }
        fn set(&self, label: &str, ip: &str) {
            let route = Route::new(None, None, None, Some(ip)).expect("valid");
            self.records
                .lock()
                .insert(label.into(), Fetched::Found(route));
        }
        fn reads(&self) -> usize {
            self.reads.load(Relaxed)
        }
    }

    #[async_trait]
    impl Source for Fake {
        async fn fetch(&self, label: &str) -> Result<Fetched, FetchError> {
            self.reads.fetch_add(1, Relaxed);
            let _permit = self.gate.acquire().await.map_err(|_| FetchError::Down)?;
            if self.hang.load(Relaxed) {
                std::future::pending::<()>().await;
            }
            if self.fail.load(Relaxed) {
                return Err(FetchError::Down);
            }
            Ok(self
                .records
                .lock()
                .get(label)
                .cloned()
                .unwrap_or(Fetched::NotFound))
        }
        fn is_connected(&self) -> bool {
            !self.fail.load(Relaxed)
        }
    }

    fn store(fake: &Arc<Fake>, capacity: usize) -> (Arc<CachedStore>, &'static RouteCacheMetrics) {
        let m = RouteCacheMetrics::leak();
        let cache = RouteCache::new(
            capacity,
            Ttls {
                ttl: Duration::from_secs(30),
                negative_ttl: Duration::from_secs(5),
                max_stale: Duration::from_secs(3600),
            },
            m,
        );
        let source: Arc<dyn Source> = fake.clone();
        let s = CachedStore::new(
            cache,
            source,
            Handle::current(),
            Duration::from_millis(50),
            m,
        );
        (Arc::new(s), m)
    }

    fn ip(l: &Lookup) -> String {
        match l {
            Lookup::Found(r) => r.address.map(|a| a.to_string()).unwrap_or_default(),
            other => format!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn single_flight_one_read_for_many_waiters() {
        let fake = Fake::new();
        fake.set("alice", "127.0.0.1");
        let (s, m) = store(&fake, 100);
        // Hold the read until every lookup is waiting on it.
        let held = fake.gate.acquire_many(GATE_PERMITS).await.expect("permits");
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move { s.lookup("alice").await }));
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(fake.reads(), 1);
        drop(held);
        for t in tasks {
            assert_eq!(ip(&t.await.expect("task")), "127.0.0.1");
        }
        assert_eq!(fake.reads(), 1);
        assert_eq!(m.fetches.load(Relaxed), 1);
        // Now cached: no read, no await needed.
        assert_eq!(ip(&s.lookup("alice").await), "127.0.0.1");
        assert_eq!(fake.reads(), 1);
        assert_eq!(m.hits.load(Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn positive_ttl_with_jitter() {
        let fake = Fake::new();
        fake.set("alice", "127.0.0.1");
        let (s, _) = store(&fake, 100);
        s.lookup("alice").await;
        tokio::time::advance(Duration::from_secs(26)).await; // < 30 s − 10 %
        s.lookup("alice").await;
        assert_eq!(fake.reads(), 1);
        fake.set("alice", "127.0.0.2");
        // Past 30 s + 10 %, expired: served at once (stale-while-revalidate) while one background
        // read refreshes it.
        tokio::time::advance(Duration::from_secs(8)).await;
        assert_eq!(ip(&s.lookup("alice").await), "127.0.0.1");
        assert_eq!(ip(&s.lookup("alice").await), "127.0.0.1");
        settle().await;
        assert_eq!(fake.reads(), 2);
        assert_eq!(ip(&s.lookup("alice").await), "127.0.0.2");
        assert_eq!(fake.reads(), 2);
    }

    /// Lets spawned background reads run to completion (the fake answers without waiting).
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn negative_ttl() {
        let fake = Fake::new();
        let (s, _) = store(&fake, 100);
        assert_eq!(s.lookup("bob").await, Lookup::NotFound);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(s.lookup("bob").await, Lookup::NotFound);
        assert_eq!(fake.reads(), 1);
        fake.set("bob", "127.0.0.3");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(ip(&s.lookup("bob").await), "127.0.0.3");
        assert_eq!(fake.reads(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn stale_if_error_then_unavailable() {
        let fake = Fake::new();
        fake.set("alice", "127.0.0.1");
        let (s, m) = store(&fake, 100);
        s.lookup("alice").await;
        fake.fail.store(true, Relaxed);
        tokio::time::advance(Duration::from_secs(40)).await;
        // Past the TTL: the stale route is served at once; its background read fails.
        assert_eq!(ip(&s.lookup("alice").await), "127.0.0.1");
        settle().await;
        assert_eq!(fake.reads(), 2);
        // Within the back-off: served stale without asking the store again.
        assert_eq!(ip(&s.lookup("alice").await), "127.0.0.1");
        assert_eq!(fake.reads(), 2);
        assert_eq!(m.stale_served.load(Relaxed), 2);
        // A label never seen: unavailable, not a hang.
        assert_eq!(s.lookup("carol").await, Lookup::Unavailable);
        // Past max_stale: unavailable too.
        tokio::time::advance(Duration::from_secs(3700)).await;
        assert_eq!(s.lookup("alice").await, Lookup::Unavailable);
        // Recovery is automatic.
        fake.fail.store(false, Relaxed);
        assert_eq!(ip(&s.lookup("alice").await), "127.0.0.1");
        assert_eq!(s.lookup("carol").await, Lookup::NotFound);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_store_is_bounded() {
        let fake = Fake::new();
        fake.set("alice", "127.0.0.1");
        let (s, _) = store(&fake, 100);
        fake.hang.store(true, Relaxed);
        let start = tokio::time::Instant::now();
        assert_eq!(s.lookup("alice").await, Lookup::Unavailable);
        // The flight's own bound (50 ms here), measured on the paused clock.
        assert!(
            start.elapsed() <= Duration::from_millis(60),
            "{:?}",
            start.elapsed()
        );
        fake.hang.store(false, Relaxed);
        assert_eq!(ip(&s.lookup("alice").await), "127.0.0.1");
    }

    #[tokio::test(start_paused = true)]
    async fn invalidation_evicts_and_rereads_a_read_in_flight() {
        let fake = Fake::new();
        fake.set("alice", "127.0.0.1");
        let (s, _) = store(&fake, 100);
        s.lookup("alice").await;
        fake.set("alice", "127.0.0.2");
        s.invalidate("alice");
        assert_eq!(ip(&s.lookup("alice").await), "127.0.0.2");
        assert_eq!(fake.reads(), 2);

        // A change published while a read is in flight: that read is not trusted.
        let held = fake.gate.acquire_many(GATE_PERMITS).await.expect("permits");
        s.invalidate("alice");
        let t = {
            let s = s.clone();
            tokio::spawn(async move { s.lookup("alice").await })
        };
        for _ in 0..5 {
            tokio::task::yield_now().await;
        }
        fake.set("alice", "127.0.0.3");
        s.invalidate("alice");
        drop(held);
        assert_eq!(ip(&t.await.expect("task")), "127.0.0.3");
        assert_eq!(fake.reads(), 4, "the invalidated read is done again");
        assert_eq!(ip(&s.lookup("alice").await), "127.0.0.3");
    }

    #[tokio::test(start_paused = true)]
    async fn revalidate_all_after_a_gap() {
        let fake = Fake::new();
        fake.set("alice", "127.0.0.1");
        let (s, _) = store(&fake, 100);
        s.lookup("alice").await;
        fake.set("alice", "127.0.0.2"); // the event was lost
        s.revalidate_all();
        assert_eq!(ip(&s.lookup("alice").await), "127.0.0.2");
        assert_eq!(ip(&s.lookup("alice").await), "127.0.0.2");
        assert_eq!(fake.reads(), 2);
        // With the store down, a suspect entry still serves.
        s.revalidate_all();
        fake.fail.store(true, Relaxed);
        assert_eq!(ip(&s.lookup("alice").await), "127.0.0.2");
    }

    #[tokio::test(start_paused = true)]
    async fn eviction_keeps_the_store_correct() {
        let fake = Fake::new();
        for i in 0..50 {
            fake.set(&format!("w{i}"), "127.0.0.1");
        }
        let (s, m) = store(&fake, 10);
        for i in 0..50 {
            assert_eq!(ip(&s.lookup(&format!("w{i}")).await), "127.0.0.1");
            assert!(s.cache().len() <= 10);
        }
        assert!(m.evictions.load(Relaxed) >= 40);
        assert_eq!(m.entries.load(Relaxed), s.cache().len() as i64);
    }

    #[test]
    fn a_stopped_runtime_means_unavailable_not_a_hang() {
        let stopped = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let handle = stopped.handle().clone();
        drop(stopped);
        let fake = Fake::new();
        fake.set("alice", "127.0.0.1");
        let m = RouteCacheMetrics::leak();
        let ttls = Ttls {
            ttl: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(5),
            max_stale: Duration::from_secs(3600),
        };
        let source: Arc<dyn Source> = fake.clone();
        let s = Arc::new(CachedStore::new(
            RouteCache::new(10, ttls, m),
            source,
            handle,
            Duration::from_millis(50),
            m,
        ));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        assert_eq!(rt.block_on(s.lookup("alice")), Lookup::Unavailable);
        assert_eq!(rt.block_on(s.lookup("alice")), Lookup::Unavailable);
        assert_eq!(fake.reads(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn readiness() {
        let fake = Fake::new();
        fake.set("alice", "127.0.0.1");
        let (s, _) = store(&fake, 10);
        assert!(s.is_ready());
        fake.fail.store(true, Relaxed);
        assert!(!s.is_ready(), "unreachable and nothing cached");
        fake.fail.store(false, Relaxed);
        s.lookup("alice").await;
        fake.fail.store(true, Relaxed);
        assert!(s.is_ready(), "unreachable but warm");
    }
}
