//! Question: what does building a replay answer's `fly-replay` header value cost — token checks
//! of the app and machine names, then one string with timeout and fallback (or, with Fly's replay
//! cache on, app and instance only, plus the `fly-replay-cache-ttl-secs` value)?

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use hubify_edge::decide::{fly_replay_header, replay_cache_ttl_secs};
use hubify_edge_config::{Fallback, Replay};

fn bench(c: &mut Criterion) {
    let plain = Replay {
        timeout: Some(Duration::from_secs(5)),
        fallback: Some(Fallback::ForceSelf),
        cache_ttl: Duration::ZERO,
        state: None,
    };
    let cached = Replay {
        timeout: None,
        fallback: None,
        cache_ttl: Duration::from_secs(300),
        state: None,
    };
    assert_eq!(
        fly_replay_header("hubify-workspace", "90801679a10038", &plain).as_deref(),
        Ok("app=hubify-workspace;instance=90801679a10038;timeout=5s;fallback=force_self")
    );
    assert_eq!(
        fly_replay_header("hubify-workspace", "90801679a10038", &cached).as_deref(),
        Ok("app=hubify-workspace;instance=90801679a10038")
    );
    assert_eq!(replay_cache_ttl_secs(&cached), Some(300));

    let mut g = c.benchmark_group("fly_replay_header");
    g.bench_function("timeout_fallback", |b| {
        b.iter(|| {
            fly_replay_header(
                black_box("hubify-workspace"),
                black_box("90801679a10038"),
                black_box(&plain),
            )
        })
    });
    g.bench_function("cached", |b| {
        b.iter(|| {
            let v = fly_replay_header(
                black_box("hubify-workspace"),
                black_box("90801679a10038"),
                black_box(&cached),
            );
            (v, replay_cache_ttl_secs(black_box(&cached)))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
