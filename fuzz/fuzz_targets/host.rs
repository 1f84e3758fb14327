//! Host header → workspace label: never panics, and a label it returns is always valid.
#![no_main]
use hubify_edge::host::{classify, normalize_host, HostMatch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(h) = normalize_host(s) {
        if let HostMatch::Workspace(label) = classify(&h, "hubify.com") {
            assert!(hubify_edge_config::is_valid_label(&label));
        }
    }
    let _ = hubify_edge::request_id::header_value_from(Some(data));
    let _ = hubify_edge::pages::prefers_json(Some(data));
});
