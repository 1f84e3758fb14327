//! Question: what does a route lookup cost when the route is cached — the per-request price of
//! the Redis route store once warm (label → `Arc<Route>`, no Redis, no await)?
//!
//! `lookup/hot` repeats one label (the entry stays in the CPU caches); `lookup/spread` walks
//! 100 000 cached labels (a realistic tenant count: the entry is mostly not in the CPU caches, so
//! this is bound by memory latency); `probe/hot` is the bare cache read under `lookup` (which adds
//! the clock read, the hit counter and the async wrapper).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use hubify_edge::routes::Lookup;
use hubify_edge_benches::{label, poll_once, warm_store};

const TENANTS: usize = 100_000;

fn route_cache(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    // A miss would need the runtime; a hit never does (the lookups below are polled once).
    let _context = runtime.enter();
    let store = warm_store(TENANTS, &runtime);
    let labels: Vec<String> = (0..TENANTS).map(label).collect();
    // The lookup must complete on its first poll, and find the route.
    assert!(matches!(
        poll_once(store.lookup("ws-000042")),
        Some(Lookup::Found(_))
    ));

    let mut g = c.benchmark_group("route_cache");
    g.bench_function("lookup/hot", |b| {
        b.iter(|| poll_once(store.lookup(black_box("ws-000042"))))
    });
    let mut i = 0usize;
    g.bench_function("lookup/spread", |b| {
        // A stride that visits every label, far apart in memory. The label is copied out before
        // the timed part, as a request's Host header is already in the CPU cache.
        b.iter_batched_ref(
            || {
                i = (i + 7919) % TENANTS;
                labels[i].clone()
            },
            |label| poll_once(store.lookup(black_box(label.as_str()))),
            BatchSize::SmallInput,
        )
    });
    let cached = store.cached_store().expect("a cached store");
    let now = std::time::Instant::now();
    g.bench_function("probe/hot", |b| {
        b.iter(|| cached.cache().probe(black_box("ws-000042"), now))
    });
    g.finish();
}

criterion_group!(benches, route_cache);
criterion_main!(benches);
