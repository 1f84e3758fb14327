//! PROXY protocol v2 headers → `proxy_protocol::parse_v2`: never panics, and nothing without the
//! v2 signature is accepted.
#![no_main]
use libfuzzer_sys::fuzz_target;

const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

fuzz_target!(|data: &[u8]| {
    let r = hubify_edge::proxy_protocol::parse_v2(data);
    if !data.starts_with(SIGNATURE) {
        assert!(r.is_err(), "accepted without a signature: {r:?}");
    }
});
