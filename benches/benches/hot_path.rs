//! Question: what does the router's pure hot path cost per request — Host header → label
//! (normalize + classify), label → route from the warm Redis route cache, route + path →
//! forwarding decision — before any socket work? (Target: under 1 µs.) `gateway`,
//! `terminal_strip_prefix` and `mixed_case_host` repeat one workspace; `gateway/spread_100k`
//! visits 100 000 cached workspaces in turn.
//!
//! `full/*` is the whole pure path of issue 7's target (host parse + cache hit + decide + header
//! build): for a forwarded request, the decision plus the values of the headers the router adds
//! (request id, `x-forwarded-for`); for a replay answer, the decision plus the `fly-replay`
//! value. `full/*_spread_100k` does it over 100 000 cached workspaces.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use hubify_edge::decide::{decide, fly_replay_header, Decision, ListenerMode, RequestFacts};
use hubify_edge::front::rewrite::ip_header_value;
use hubify_edge::host::{classify, normalize_host, HostMatch};
use hubify_edge::request_id;
use hubify_edge::routes::{Lookup, RouteStore};
use hubify_edge_benches::{label, poll_once, warm_store};
use hubify_edge_config::{Config, Dispatch};

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

/// The whole pure path: host → label → cached route → decision → the header values the router
/// sends (forward: request id and `x-forwarded-for`; replay: `fly-replay`). Returns their total
/// length (0 when the request is not forwarded or replayed).
fn full_path(
    store: &RouteStore,
    config: &Config,
    mode: ListenerMode,
    host: &str,
    path: &str,
) -> usize {
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
    match decide(&route, &facts, &config.paths, mode) {
        Decision::Forward(f) => {
            let id = request_id::header_value(None);
            let xff = ip_header_value(black_box(std::net::Ipv4Addr::new(203, 0, 113, 7)).into());
            id.len() + xff.len() + usize::from(f.port)
        }
        Decision::Replay(to) => fly_replay_header(&to.app, &to.instance, &config.replay)
            .map(|v| v.len())
            .unwrap_or(0),
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

    let replay_config = Config::from_toml(
        &format!(
            "{CONFIG}\n[listeners.http]\naddress = \"127.0.0.1:8080\"\ndispatch = \"replay\"\n\
             [replay]\ntimeout = \"5s\"\nfallback = \"force_self\"\n"
        ),
        "bench.toml",
    )
    .expect("a valid replay config");
    let replay = ListenerMode::Plain(Dispatch::Replay);
    assert_eq!(
        full_path(
            &store,
            &config,
            ListenerMode::Tls,
            "ws-000042.hubify.com",
            "/api"
        ),
        32 + "203.0.113.7".len() + 3000
    );
    assert_eq!(
        full_path(
            &store,
            &replay_config,
            replay,
            "ws-000042.hubify.com",
            "/api"
        ),
        "app=hubify-workspace;instance=90801679a10038;timeout=5s;fallback=force_self".len()
    );
    let mut g = c.benchmark_group("full");
    g.bench_function("forward", |b| {
        b.iter(|| {
            full_path(
                &store,
                &config,
                ListenerMode::Tls,
                black_box("ws-000042.hubify.com"),
                black_box("/api/chat?stream=1"),
            )
        })
    });
    g.bench_function("replay", |b| {
        b.iter(|| {
            full_path(
                &store,
                &replay_config,
                replay,
                black_box("ws-000042.hubify.com"),
                black_box("/api/chat?stream=1"),
            )
        })
    });
    for (name, cfg, mode) in [
        ("forward_spread_100k", &config, ListenerMode::Tls),
        ("replay_spread_100k", &replay_config, replay),
    ] {
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || {
                    i = (i + 7919) % 100_000;
                    format!("{}.hubify.com", label(i))
                },
                |host| full_path(&store, cfg, mode, black_box(host.as_str()), "/api/chat"),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
