//! Question: what does the router's pure hot path cost per request — Host header → label
//! (normalize + classify), label → route from the warm Redis route cache, route + path →
//! forwarding decision — before any socket work? (Target: well under 1 µs.) `gateway`,
//! `terminal_strip_prefix` and `mixed_case_host` repeat one workspace; `gateway/spread_100k`
//! visits 100 000 cached workspaces in turn.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use hubify_edge::decide::{decide, Decision, ListenerMode, RequestFacts};
use hubify_edge::host::{classify, normalize_host, HostMatch};
use hubify_edge::routes::{Lookup, RouteStore};
use hubify_edge_benches::{label, poll_once, warm_store};
use hubify_edge_config::Config;

const CONFIG: &str = r#"
domain = "hubify.com"
[listeners.https]
address = "127.0.0.1:8443"
[redis]
url = "redis://127.0.0.1:6379/"
[routes]
store = "redis"
cache_ttl = "1h"
[[paths]]
prefix = "/terminal"
port = 8080
strip_prefix = true
idle_timeout = "1h"
[[paths]]
prefix = "/dashboard"
port = 3001
[[paths]]
prefix = "/"
port = 3000
"#;

/// The request path up to the decision; returns the upstream port (0 when not forwarded).
fn hot_path(store: &RouteStore, config: &Config, host: &str, path: &str) -> u16 {
    let Some(host) = normalize_host(host) else {
        return 0;
    };
    let HostMatch::Workspace(label) = classify(&host, &config.domain) else {
        return 0;
    };
    let Some(Lookup::Found(route)) = poll_once(store.lookup(&label)) else {
        return 0;
    };
    let facts = RequestFacts::new(path, false);
    match decide(&route, &facts, &config.paths, ListenerMode::Tls) {
        Decision::Forward(f) => f.port,
        _ => 0,
    }
}

fn bench(c: &mut Criterion) {
    let config = Config::from_toml(CONFIG, "bench.toml").expect("a valid config");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    // A miss would need the runtime; a hit never does (the lookups below are polled once).
    let _context = runtime.enter();
    let store = warm_store(100_000, &runtime);
    assert_eq!(
        hot_path(&store, &config, "ws-000042.hubify.com", "/api/x?y=1"),
        3000
    );
    assert_eq!(
        hot_path(&store, &config, "WS-000042.hubify.com:443", "/terminal/ws"),
        8080
    );

    let mut g = c.benchmark_group("hot_path");
    g.bench_function("gateway", |b| {
        b.iter(|| {
            hot_path(
                &store,
                &config,
                black_box("ws-000042.hubify.com"),
                black_box("/api/chat?stream=1"),
            )
        })
    });
    g.bench_function("terminal_strip_prefix", |b| {
        b.iter(|| {
            hot_path(
                &store,
                &config,
                black_box("ws-000042.hubify.com:443"),
                black_box("/terminal/ws?token=abc"),
            )
        })
    });
    g.bench_function("mixed_case_host", |b| {
        b.iter(|| {
            hot_path(
                &store,
                &config,
                black_box("WS-000042.Hubify.com"),
                black_box("/"),
            )
        })
    });
    let mut i = 0usize;
    g.bench_function("gateway/spread_100k", |b| {
        // A different workspace each time, among 100 000 cached ones (memory-latency bound);
        // the Host text is made before the timed part, as a request's header is in cache.
        b.iter_batched_ref(
            || {
                i = (i + 7919) % 100_000;
                format!("{}.hubify.com", label(i))
            },
            |host| {
                hot_path(
                    &store,
                    &config,
                    black_box(host.as_str()),
                    black_box("/api/chat"),
                )
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
