//! Question: what does turning a request's Host into a workspace label cost — `normalize_host`
//! (port, trailing dot, case, character checks) then `classify` against the router's domain —
//! for the hosts the router actually sees: a plain workspace host, one with a port, a mixed-case
//! one (the only case that allocates), the apex, a host outside the domain, and a malformed one?

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use hubify_edge::host::{classify, normalize_host, HostMatch};

const DOMAIN: &str = "hubify.com";

/// Host → label length (0 when the host names no workspace or is malformed).
fn label_len(raw: &str) -> usize {
    let Some(host) = normalize_host(raw) else {
        return 0;
    };
    match classify(&host, DOMAIN) {
        HostMatch::Workspace(label) => label.len(),
        HostMatch::Apex | HostMatch::Outside => 0,
    }
}

fn bench(c: &mut Criterion) {
    let cases = [
        ("workspace", "ws-000042.hubify.com", 9),
        ("workspace_port", "ws-000042.hubify.com:443", 9),
        ("mixed_case", "WS-000042.Hubify.COM", 9),
        ("apex", "hubify.com", 0),
        ("outside", "evil.example.net", 0),
        ("malformed", "ws-000042.hubify.com:99999", 0),
    ];
    let mut g = c.benchmark_group("host_to_label");
    for (name, host, expect) in cases {
        assert_eq!(label_len(host), expect, "{host}");
        g.bench_function(name, |b| b.iter(|| label_len(black_box(host))));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
