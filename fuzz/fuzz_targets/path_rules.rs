//! Path rules: any request path matches a rule (the default set has "/"), and a rewritten path
//! always starts with '/'; on the plain listener, replay and refusal follow the route and the
//! dispatch mode, whatever the path (the input also serves as a `fly-replay-failed` value).
#![no_main]
use hubify_edge::decide::{
    decide, Decision, ListenerMode, Refusal, ReplayFailure, ReplayTo, RequestFacts,
};
use hubify_edge_config::{Config, Dispatch, Route};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// The embedded default configuration and two routes: one by address, one to a Fly machine.
fn setup() -> &'static (Config, Route, Route) {
    static SETUP: OnceLock<(Config, Route, Route)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let config = Config::embedded_default().expect("embedded default config");
        let direct = Route::new(None, None, None, Some("127.0.0.1")).expect("direct route");
        let machine = Route::new(Some("hubify-ws-a"), Some("90801679a10038"), None, None)
            .expect("machine route");
        (config, direct, machine)
    })
}

fn forwarded(d: &Decision<'_>) {
    match d {
        Decision::Forward(f) => {
            if let Some(p) = &f.rewritten {
                assert!(p.starts_with('/'), "rewritten {p:?}");
            }
        }
        Decision::Respond(s) => panic!("the default rules include '/', got Respond({s})"),
        Decision::Replay(_) | Decision::Refuse(_) | Decision::ReplayFailed(_) => {
            panic!("expected a forward, got {d:?}")
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let (config, direct, machine) = setup();
    let rules = &config.paths;

    // The fallback after a failed replay: never replayed again, whatever its value.
    let mut failed = RequestFacts::new("/", false);
    failed.replay_failed = Some(path);
    for dispatch in [Dispatch::Replay, Dispatch::Auto] {
        assert_eq!(
            decide(machine, &failed, rules, ListenerMode::Plain(dispatch)),
            Decision::ReplayFailed(ReplayFailure::parse(path))
        );
    }

    if !path.starts_with('/') {
        return;
    }
    let facts = RequestFacts::new(path, false);
    for route in [direct, machine] {
        for mode in [ListenerMode::Tls, ListenerMode::Plain(Dispatch::Forward)] {
            forwarded(&decide(route, &facts, rules, mode));
        }
    }
    forwarded(&decide(
        direct,
        &facts,
        rules,
        ListenerMode::Plain(Dispatch::Auto),
    ));
    assert_eq!(
        decide(direct, &facts, rules, ListenerMode::Plain(Dispatch::Replay)),
        Decision::Refuse(Refusal::NoMachine)
    );
    for dispatch in [Dispatch::Replay, Dispatch::Auto] {
        match decide(machine, &facts, rules, ListenerMode::Plain(dispatch)) {
            Decision::Replay(ReplayTo { app, instance }) => {
                assert_eq!((&*app, &*instance), ("hubify-ws-a", "90801679a10038"));
            }
            d => panic!("expected a replay, got {d:?}"),
        }
    }
});
