//! Path rules: any request path matches a rule (the default set has "/"), and a rewritten path
//! always starts with '/'.
#![no_main]
use hubify_edge::decide::{decide, Decision, ListenerMode, RequestFacts};
use hubify_edge_config::{Config, Route};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    if !path.starts_with('/') {
        return;
    }
    let Ok(config) = Config::embedded_default() else { return };
    let Ok(route) = Route::new(None, None, None, Some("127.0.0.1")) else { return };
    let facts = RequestFacts::new(path, false);
    match decide(&route, &facts, &config.paths, ListenerMode::Tls) {
        Decision::Forward(f) => {
            if let Some(p) = f.rewritten {
                assert!(p.starts_with('/'));
            }
        }
        Decision::Respond(_) => panic!("the default rules include '/'"),
    }
});
