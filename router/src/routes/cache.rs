//! The in-process route cache: label → cached answer, bounded, with TTLs. Pure and synchronous:
//! every method takes `now`, nothing here awaits or does I/O.
//!
//! - **Bounded.** `capacity` entries at most, exactly: a global count is reserved before an entry
//!   is added. Entries live in up to 64 shards (each a read-write lock around an [`IndexMap`]).
//!   When the cache is full, an insertion evicts one entry with the CLOCK policy, in its own shard
//!   first (the next shards when that one is empty): a hit only sets the entry's `referenced` bit
//!   (when it is not set already); eviction sweeps the shard's hand, clearing bits, and evicts the
//!   first entry whose bit is clear (or that is past any use). Hot routes survive scans of one-off
//!   labels; the hit path stays a read lock and a hash lookup.
//! - **TTLs.** A route is fresh for `ttl` ±10 % (jitter, so entries written together do not expire
//!   together); "no such workspace" and malformed records for `negative_ttl` ±10 %.
//! - **Stale-while-revalidate, stale-if-error.** A route stays usable `max_stale` past its TTL:
//!   [`Probe::Expired`] asks the caller to serve it and refresh it in the background;
//!   [`Probe::Stale`] (read before an epoch bump) to revalidate first and serve it only if the
//!   store fails.
//! - **Epochs.** Every entry records the epoch it was read in; [`RouteCache::bump_epoch`] (after a
//!   pub/sub gap, when invalidations may have been lost) turns every older entry into one that
//!   needs revalidation, at no cost per entry.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hubify_edge_config::Route;
use indexmap::IndexMap;
use parking_lot::RwLock;
use rand::Rng;

use crate::metrics::RouteCacheMetrics;
use crate::routes::Lookup;

/// What the cache holds for a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    Found(Arc<Route>),
    /// The store has no such key.
    NotFound,
    /// The record is malformed; the detail names the key and the field.
    Invalid(Arc<str>),
}

impl Cached {
    pub fn to_lookup(&self) -> Lookup {
        match self {
            Cached::Found(r) => Lookup::Found(r.clone()),
            Cached::NotFound => Lookup::NotFound,
            Cached::Invalid(why) => Lookup::Invalid(why.to_string()),
        }
    }
}

/// The cache's answer for a label at an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Fresh: answer with this.
    Hit(Lookup),
    /// Past its TTL but within `max_stale`, and no event was missed since it was read: serve it
    /// now and re-read the store in the background (stale-while-revalidate), so a slow store
    /// never adds its timeout to a request for a cached label.
    Expired(Arc<Route>),
    /// Read before the last epoch bump (route events may have been missed) and within
    /// `max_stale`: read the store again, and serve this route only if that fails.
    Stale(Arc<Route>),
    /// Like `Stale`, but a revalidation failed moments ago: serve it without asking the store
    /// again until the retry time has passed.
    StaleBackoff(Arc<Route>),
    /// Nothing usable: read the store.
    Miss,
}

/// What the cache holds for a label, for an operator (`GET /routes/<label>` on the ops listener).
#[derive(Debug, Clone)]
pub struct Entry {
    pub value: Cached,
    /// Since the store was read.
    pub age: Duration,
    /// `fresh`, `expired` (served while re-read), `stale` (events may have been missed: re-read
    /// before serving), `backoff` (a re-read failed: served stale until the retry time), or
    /// `unusable` (past `max_stale`, or a negative entry past its TTL: read again).
    pub state: &'static str,
}

/// TTL settings.
#[derive(Debug, Clone, Copy)]
pub struct Ttls {
    pub ttl: Duration,
    pub negative_ttl: Duration,
    pub max_stale: Duration,
}

struct Slot {
    value: Cached,
    /// When the store was read for it.
    read_at: Instant,
    fresh_until: Instant,
    /// Past this, not even a fallback (equals `fresh_until` for negative entries).
    stale_until: Instant,
    /// A revalidation failed: do not ask the store again before this.
    retry_at: Option<Instant>,
    epoch: u64,
    referenced: AtomicBool,
}

/// A label stored inline (labels are at most 63 bytes), so that comparing keys on a lookup reads
/// the entry itself rather than following a pointer to the heap.
#[derive(Clone, Copy)]
struct Key {
    len: u8,
    bytes: [u8; MAX_LABEL],
}

const MAX_LABEL: usize = 63;

impl Key {
    fn new(label: &str) -> Option<Key> {
        let len = label.len();
        if len > MAX_LABEL {
            return None;
        }
        let mut bytes = [0u8; MAX_LABEL];
        bytes[..len].copy_from_slice(label.as_bytes());
        Some(Key {
            len: len as u8,
            bytes,
        })
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Key {}

/// Hashes exactly like [`Query`] (both hash the label's bytes as a `str` does).
impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(self.as_bytes());
        state.write_u8(0xff);
    }
}

/// A borrowed label to look a [`Key`] up with.
struct Query<'a>(&'a str);

impl std::hash::Hash for Query<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(self.0.as_bytes());
        state.write_u8(0xff);
    }
}

impl indexmap::Equivalent<Key> for Query<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.0.as_bytes() == key.as_bytes()
    }
}

struct ShardInner {
    map: IndexMap<Key, Slot, foldhash::fast::RandomState>,
    hand: usize,
}

/// One shard, on its own cache lines so that shards do not share a lock's line.
#[repr(align(128))]
struct Shard {
    inner: RwLock<ShardInner>,
}

/// The route cache. See the module documentation.
pub struct RouteCache {
    shards: Box<[Shard]>,
    /// log2 of the shard count.
    shard_bits: u32,
    capacity: usize,
    /// Entries now, plus insertions that reserved a place and are about to add theirs.
    count: AtomicUsize,
    hasher: foldhash::fast::RandomState,
    epoch: AtomicU64,
    ttls: Ttls,
    metrics: &'static RouteCacheMetrics,
}

const MAX_SHARDS: usize = 64;
/// Shards are only used when each holds at least this many entries.
const MIN_PER_SHARD: usize = 8;

impl RouteCache {
    /// A cache of at most `capacity` entries (at least 1).
    pub fn new(capacity: usize, ttls: Ttls, metrics: &'static RouteCacheMetrics) -> RouteCache {
        let capacity = capacity.max(1);
        let mut shards = 1usize;
        while shards * 2 <= MAX_SHARDS && capacity / (shards * 2) >= MIN_PER_SHARD {
            shards *= 2;
        }
        let shards_vec = (0..shards)
            .map(|_| Shard {
                inner: RwLock::new(ShardInner {
                    map: IndexMap::with_hasher(foldhash::fast::RandomState::default()),
                    hand: 0,
                }),
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        metrics.capacity.store(
            i64::try_from(capacity).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
        RouteCache {
            shards: shards_vec,
            shard_bits: shards.trailing_zeros(),
            capacity,
            count: AtomicUsize::new(0),
            hasher: foldhash::fast::RandomState::default(),
            epoch: AtomicU64::new(0),
            ttls,
            metrics,
        }
    }

    /// The most entries the cache holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn shard_index(&self, label: &str) -> usize {
        use std::hash::BuildHasher;
        let h = self.hasher.hash_one(label);
        let i = if self.shard_bits == 0 {
            0
        } else {
            (h >> (64 - self.shard_bits)) as usize
        };
        i & (self.shards.len() - 1)
    }

    fn shard(&self, label: &str) -> &Shard {
        &self.shards[self.shard_index(label)]
    }

    /// The cache's answer for `label` at `now`. Takes a read lock; never awaits, never allocates
    /// for a route (an `Arc` clone).
    pub fn probe(&self, label: &str, now: Instant) -> Probe {
        let shard = self.shard(label).inner.read();
        let Some(slot) = shard.map.get(&Query(label)) else {
            return Probe::Miss;
        };
        if !slot.referenced.load(Ordering::Relaxed) {
            slot.referenced.store(true, Ordering::Relaxed);
        }
        let current = slot.epoch == self.epoch.load(Ordering::Acquire);
        if current && now < slot.fresh_until {
            return Probe::Hit(slot.value.to_lookup());
        }
        match &slot.value {
            Cached::Found(route) if now < slot.stale_until => match slot.retry_at {
                Some(t) if now < t => Probe::StaleBackoff(route.clone()),
                _ if current => Probe::Expired(route.clone()),
                _ => Probe::Stale(route.clone()),
            },
            _ => Probe::Miss,
        }
    }

    /// What is cached for `label` at `now`, for inspection (no side effect on eviction).
    pub fn entry(&self, label: &str, now: Instant) -> Option<Entry> {
        let shard = self.shard(label).inner.read();
        let slot = shard.map.get(&Query(label))?;
        let current = slot.epoch == self.epoch.load(Ordering::Acquire);
        let state = if current && now < slot.fresh_until {
            "fresh"
        } else if matches!(slot.value, Cached::Found(_)) && now < slot.stale_until {
            match slot.retry_at {
                Some(t) if now < t => "backoff",
                _ if current => "expired",
                _ => "stale",
            }
        } else {
            "unusable"
        };
        Some(Entry {
            value: slot.value.clone(),
            age: now.saturating_duration_since(slot.read_at),
            state,
        })
    }

    /// Stores the store's answer for `label`, read in `epoch` (the epoch when the read started).
    /// A zero TTL for the kind of answer means "do not cache": any old entry is dropped.
    pub fn insert(&self, label: &str, value: Cached, now: Instant, epoch: u64) {
        let base = match value {
            Cached::Found(_) => self.ttls.ttl,
            Cached::NotFound | Cached::Invalid(_) => self.ttls.negative_ttl,
        };
        if base.is_zero() {
            self.remove(label);
            return;
        }
        // Labels are at most 63 bytes (validated before any lookup); anything else is not cached.
        let Some(key) = Key::new(label) else {
            return;
        };
        let ttl = jitter(base);
        let fresh_until = now + ttl;
        let stale_until = match value {
            Cached::Found(_) => fresh_until + self.ttls.max_stale,
            _ => fresh_until,
        };
        let home = self.shard_index(label);
        let update = |slot: &mut Slot, value: Cached| {
            slot.value = value;
            slot.fresh_until = fresh_until;
            slot.stale_until = stale_until;
            slot.retry_at = None;
            slot.epoch = epoch;
        };
        {
            let mut shard = self.shards[home].inner.write();
            if let Some(slot) = shard.map.get_mut(&Query(label)) {
                update(slot, value);
                return;
            }
        }
        self.reserve(home, now);
        let mut shard = self.shards[home].inner.write();
        if let Some(slot) = shard.map.get_mut(&Query(label)) {
            // Added meanwhile by another insertion: give the reserved place back.
            update(slot, value);
            self.count.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        shard.map.insert(
            key,
            Slot {
                value,
                read_at: now,
                fresh_until,
                stale_until,
                retry_at: None,
                epoch,
                referenced: AtomicBool::new(false),
            },
        );
        self.metrics.entries.fetch_add(1, Ordering::Relaxed);
    }

    /// Reserves a place for one new entry, evicting one first while the cache is full (from the
    /// `home` shard, else the next non-empty one). Takes one shard lock at a time.
    fn reserve(&self, home: usize, now: Instant) {
        loop {
            let n = self.count.load(Ordering::Acquire);
            if n < self.capacity {
                if self
                    .count
                    .compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return;
                }
                continue;
            }
            let mask = self.shards.len() - 1;
            for k in 0..self.shards.len() {
                let mut shard = self.shards[(home + k) & mask].inner.write();
                if self.evict_one(&mut shard, now) {
                    break;
                }
            }
        }
    }

    /// CLOCK: sweep from the hand, clearing `referenced` bits, and evict the first entry that is
    /// unreferenced (or no longer usable at all). At most two sweeps of the shard. False when the
    /// shard is empty.
    fn evict_one(&self, shard: &mut ShardInner, now: Instant) -> bool {
        let len = shard.map.len();
        for _ in 0..=2 * len {
            if shard.hand >= shard.map.len() {
                shard.hand = 0;
            }
            let Some((_, slot)) = shard.map.get_index(shard.hand) else {
                return false;
            };
            let dead = now >= slot.stale_until;
            if !dead && slot.referenced.swap(false, Ordering::Relaxed) {
                shard.hand += 1;
                continue;
            }
            // swap_remove moves the last entry here; the hand looks at it next.
            shard.map.swap_remove_index(shard.hand);
            self.count.fetch_sub(1, Ordering::AcqRel);
            self.metrics.entries.fetch_sub(1, Ordering::Relaxed);
            self.metrics.evictions.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Drops the entry of `label`; true when there was one.
    pub fn remove(&self, label: &str) -> bool {
        let removed = self
            .shard(label)
            .inner
            .write()
            .map
            .swap_remove(&Query(label))
            .is_some();
        if removed {
            self.count.fetch_sub(1, Ordering::AcqRel);
            self.metrics.entries.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// A revalidation of `label` failed at `now`: serve its stale route without asking again for
    /// `backoff`.
    pub fn note_error(&self, label: &str, now: Instant, backoff: Duration) {
        let mut shard = self.shard(label).inner.write();
        if let Some(slot) = shard.map.get_mut(&Query(label)) {
            slot.retry_at = Some(now + backoff);
        }
    }

    /// The current epoch (record it when a store read starts).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Marks every entry cached so far as needing revalidation.
    pub fn bump_epoch(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Entries now (counting insertions under way).
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `d` ±10 %, uniformly.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::thread_rng().gen_range(0.9..=1.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(ip: &str) -> Arc<Route> {
        Arc::new(Route::new(None, None, None, Some(ip)).expect("valid route"))
    }

    fn cache(capacity: usize) -> RouteCache {
        RouteCache::new(
            capacity,
            Ttls {
                ttl: Duration::from_secs(10),
                negative_ttl: Duration::from_secs(2),
                max_stale: Duration::from_secs(60),
            },
            RouteCacheMetrics::leak(),
        )
    }

    #[test]
    fn a_full_cache_holds_exactly_its_capacity() {
        let t0 = Instant::now();
        for cap in [1, 2, 7, 8, 17, 100, 1000, 20_000] {
            let c = cache(cap);
            assert_eq!(c.capacity(), cap);
            for i in 0..cap + cap / 2 + 3 {
                c.insert(&format!("l{i}"), Cached::NotFound, t0, 0);
                assert!(c.len() <= cap, "{cap}: {}", c.len());
            }
            assert_eq!(c.len(), cap);
            let stored: usize = c.shards.iter().map(|s| s.inner.read().map.len()).sum();
            assert_eq!(stored, cap);
        }
    }

    #[test]
    fn concurrent_inserts_stay_within_capacity() {
        let c = Arc::new(cache(64));
        let t0 = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        c.insert(&format!("t{t}-{}", i % 300), Cached::NotFound, t0, 0);
                        assert!(c.len() <= 64);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let stored: usize = c.shards.iter().map(|s| s.inner.read().map.len()).sum();
        assert_eq!(stored, c.len());
        assert!(stored <= 64);
    }

    #[test]
    fn ttl_then_stale_then_gone() {
        let c = cache(10);
        let t0 = Instant::now();
        let r = route("127.0.0.1");
        c.insert("a", Cached::Found(r.clone()), t0, c.epoch());
        assert_eq!(
            c.probe("a", t0 + Duration::from_secs(8)),
            Probe::Hit(Lookup::Found(r.clone()))
        );
        assert_eq!(
            c.probe("a", t0 + Duration::from_secs(12)),
            Probe::Expired(r.clone())
        );
        c.note_error("a", t0 + Duration::from_secs(12), Duration::from_secs(1));
        assert_eq!(
            c.probe("a", t0 + Duration::from_millis(12_500)),
            Probe::StaleBackoff(r.clone())
        );
        assert_eq!(
            c.probe("a", t0 + Duration::from_secs(14)),
            Probe::Expired(r.clone())
        );
        assert_eq!(c.probe("a", t0 + Duration::from_secs(72)), Probe::Miss);
        // An epoch bump (events possibly missed) makes the expired entry one to re-read first.
        c.bump_epoch();
        assert_eq!(c.probe("a", t0 + Duration::from_secs(14)), Probe::Stale(r));
    }

    #[test]
    fn negative_entries_expire_and_are_never_stale() {
        let c = cache(10);
        let t0 = Instant::now();
        c.insert("gone", Cached::NotFound, t0, c.epoch());
        assert_eq!(
            c.probe("gone", t0 + Duration::from_millis(1700)),
            Probe::Hit(Lookup::NotFound)
        );
        assert_eq!(
            c.probe("gone", t0 + Duration::from_millis(2300)),
            Probe::Miss
        );
        c.insert(
            "bad",
            Cached::Invalid("k: field `app`".into()),
            t0,
            c.epoch(),
        );
        assert_eq!(
            c.probe("bad", t0),
            Probe::Hit(Lookup::Invalid("k: field `app`".into()))
        );
        assert_eq!(c.probe("bad", t0 + Duration::from_secs(3)), Probe::Miss);
    }

    #[test]
    fn epoch_bump_forces_revalidation() {
        let c = cache(10);
        let t0 = Instant::now();
        let r = route("127.0.0.1");
        c.insert("a", Cached::Found(r.clone()), t0, c.epoch());
        c.insert("n", Cached::NotFound, t0, c.epoch());
        c.bump_epoch();
        assert_eq!(c.probe("a", t0), Probe::Stale(r.clone()));
        assert_eq!(c.probe("n", t0), Probe::Miss);
        c.insert("a", Cached::Found(r.clone()), t0, c.epoch());
        assert_eq!(c.probe("a", t0), Probe::Hit(Lookup::Found(r)));
    }

    #[test]
    fn read_started_before_a_bump_is_stored_as_suspect() {
        let c = cache(10);
        let t0 = Instant::now();
        let r = route("127.0.0.1");
        let started = c.epoch();
        c.bump_epoch();
        c.insert("a", Cached::Found(r.clone()), t0, started);
        assert_eq!(c.probe("a", t0), Probe::Stale(r));
    }

    #[test]
    fn capacity_is_a_hard_bound() {
        let m = RouteCacheMetrics::leak();
        let c = RouteCache::new(
            20,
            Ttls {
                ttl: Duration::from_secs(10),
                negative_ttl: Duration::from_secs(2),
                max_stale: Duration::from_secs(60),
            },
            m,
        );
        let t0 = Instant::now();
        for i in 0..500 {
            c.insert(&format!("l{i}"), Cached::NotFound, t0, 0);
            assert!(c.len() <= 20);
        }
        assert_eq!(c.len() as i64, m.entries.load(Ordering::Relaxed));
        assert!(m.evictions.load(Ordering::Relaxed) >= 480);
    }

    #[test]
    fn clock_keeps_referenced_entries() {
        let c = cache(4); // one shard of four
        let t0 = Instant::now();
        let r = route("127.0.0.1");
        for l in ["a", "b", "c", "d"] {
            c.insert(l, Cached::Found(r.clone()), t0, 0);
        }
        for l in ["a", "b", "d"] {
            assert!(matches!(c.probe(l, t0), Probe::Hit(_)));
        }
        c.insert("e", Cached::Found(r.clone()), t0, 0);
        assert_eq!(c.probe("c", t0), Probe::Miss, "the unreferenced entry goes");
        for l in ["a", "b", "d", "e"] {
            assert!(matches!(c.probe(l, t0), Probe::Hit(_)), "{l}");
        }
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn replace_and_remove() {
        let c = cache(10);
        let t0 = Instant::now();
        let (r1, r2) = (route("127.0.0.1"), route("127.0.0.2"));
        c.insert("a", Cached::Found(r1), t0, 0);
        c.insert("a", Cached::Found(r2.clone()), t0, 0);
        assert_eq!(c.len(), 1);
        assert_eq!(c.probe("a", t0), Probe::Hit(Lookup::Found(r2)));
        assert!(c.remove("a"));
        assert!(!c.remove("a"));
        assert_eq!(c.probe("a", t0), Probe::Miss);
        assert!(c.is_empty());
    }

    #[test]
    fn labels_are_keys_up_to_63_bytes() {
        let c = cache(10);
        let t0 = Instant::now();
        let (max, long) = ("a".repeat(63), "a".repeat(64));
        c.insert(&max, Cached::NotFound, t0, 0);
        c.insert(&long, Cached::NotFound, t0, 0);
        assert_eq!(c.probe(&max, t0), Probe::Hit(Lookup::NotFound));
        assert_eq!(c.probe(&long, t0), Probe::Miss);
        assert_eq!(c.probe(&"a".repeat(62), t0), Probe::Miss);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn zero_negative_ttl_caches_nothing() {
        let c = RouteCache::new(
            10,
            Ttls {
                ttl: Duration::from_secs(10),
                negative_ttl: Duration::ZERO,
                max_stale: Duration::ZERO,
            },
            RouteCacheMetrics::leak(),
        );
        let t0 = Instant::now();
        c.insert("a", Cached::Found(route("127.0.0.1")), t0, 0);
        c.insert("a", Cached::NotFound, t0, 0);
        assert_eq!(c.probe("a", t0), Probe::Miss);
        assert!(c.is_empty());
    }
}
