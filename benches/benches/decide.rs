//! Question: what does the routing decision cost once the route is known — `decide` over the
//! request facts and the path rules (rule match, prefix strip, forward vs replay vs refusal)? The
//! cases: the TLS listener forwarding to the catch-all rule, to a prefix rule that strips (one
//! allocation for the rewritten path), the replay listener answering with a replay target, and
//! refusing a body too large to replay.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use hubify_edge::decide::{decide, Body, Decision, ListenerMode, RequestFacts};
use hubify_edge_config::{Config, Dispatch, Route};

const CONFIG: &str = r#"
domain = "hubify.com"
[listeners.https]
address = "127.0.0.1:8443"
[routes]
store = "static"
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

/// A short name for each outcome, so every case is checked before it is timed.
fn kind(d: &Decision<'_>) -> &'static str {
    match d {
        Decision::Forward(f) if f.rewritten.is_some() => "forward_rewritten",
        Decision::Forward(_) => "forward",
        Decision::Replay(_) => "replay",
        Decision::Refuse(_) => "refuse",
        Decision::Respond(_) => "respond",
        Decision::ReplayFailed(_) => "replay_failed",
    }
}

fn bench(c: &mut Criterion) {
    let config = Config::from_toml(CONFIG, "bench.toml").expect("a valid config");
    let route = Arc::new(
        Route::new(
            Some("hubify-workspace"),
            Some("90801679a10038"),
            Some("iad"),
            Some("127.0.0.1"),
        )
        .expect("a valid route"),
    );
    let replay = ListenerMode::Plain(Dispatch::Replay);
    let big_body = RequestFacts {
        body: Body::Length(5 << 20),
        ..RequestFacts::new("/upload", false)
    };
    let cases = [
        (
            "tls_forward",
            RequestFacts::new("/api/chat?stream=1", false),
            ListenerMode::Tls,
            "forward",
        ),
        (
            "tls_forward_strip_prefix",
            RequestFacts::new("/terminal/ws?token=abc", true),
            ListenerMode::Tls,
            "forward_rewritten",
        ),
        (
            "replay",
            RequestFacts::new("/api/chat", false),
            replay,
            "replay",
        ),
        ("replay_refused_body", big_body, replay, "refuse"),
    ];
    let mut g = c.benchmark_group("decide");
    for (name, facts, mode, expect) in cases {
        assert_eq!(kind(&decide(&route, &facts, &config.paths, mode)), expect);
        g.bench_function(name, |b| {
            b.iter(|| {
                kind(&decide(
                    black_box(&route),
                    black_box(&facts),
                    &config.paths,
                    mode,
                ))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
