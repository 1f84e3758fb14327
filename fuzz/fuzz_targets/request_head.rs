//! Request heads → the HTTP/1 head policy's verdict (`h1::judge_head`), on both engines
//! (`server.fast_path` on and off). Never panics; lengths stay inside the buffer; the fast path
//! never forwards a field the router must drop; an upgrade takes the router's tunnel on both
//! engines alike; refusals are the router's statuses and do not
//! depend on the engine.
//!
//! Judged as the HTTP/1 loop judges: only a complete head, or a buffer over the head limit. An
//! input without a complete head is repeated past that limit, so the over-limit paths (431) run
//! too without libFuzzer's `-max_len` being raised for every target.
#![no_main]
use hubify_edge::h1::{head_is_complete, judge_head, HeadVerdict};
use libfuzzer_sys::fuzz_target;

/// The router's read limit for a head (`HEAD_MAX` in h1.rs).
const HEAD_MAX: usize = 32 * 1024;

/// Field names a fast-path request never sends upstream (front/rewrite.rs).
const DROPPED: [&str; 13] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "http2-settings",
    "proxy-authorization",
    "host",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-request-id",
];

fn check(buf: &[u8]) {
    let fast = judge_head(buf, true);
    let slow = judge_head(buf, false);
    for v in [&fast, &slow] {
        match v {
            HeadVerdict::Fast { len, forwarded } | HeadVerdict::Upgrade { len, forwarded } => {
                assert!(*len <= buf.len(), "Fast len {len} > {}", buf.len());
                for (name, _) in forwarded {
                    let b = name.as_bytes();
                    assert!(!b.contains(&b'_'), "forwarded {name:?}: underscore");
                    assert!(
                        !(b.len() >= 4 && b[..4].eq_ignore_ascii_case(b"fly-")),
                        "forwarded {name:?}: fly-*"
                    );
                    assert!(
                        !DROPPED.iter().any(|d| name.eq_ignore_ascii_case(d)),
                        "forwarded {name:?}: hop-by-hop or router-set"
                    );
                }
            }
            HeadVerdict::HandOver { len, .. } => {
                assert!(*len <= buf.len(), "HandOver len {len} > {}", buf.len());
            }
            HeadVerdict::Refused(s) => {
                assert!(matches!(s, 400 | 405 | 408 | 414 | 431), "Refused({s})");
            }
        }
    }
    assert!(
        !matches!(slow, HeadVerdict::Fast { .. }),
        "fast path taken with fast_path off"
    );
    // One policy for both engines: the engine only decides who serves an accepted head.
    match (&fast, &slow) {
        (HeadVerdict::Refused(a), HeadVerdict::Refused(b)) => assert_eq!(a, b),
        (HeadVerdict::Refused(_), _) | (_, HeadVerdict::Refused(_)) => {
            panic!("refusal depends on the engine: {fast:?} vs {slow:?}")
        }
        (HeadVerdict::HandOver { .. }, _) | (HeadVerdict::Upgrade { .. }, _) => {
            assert_eq!(fast, slow)
        }
        (HeadVerdict::Fast { len, .. }, HeadVerdict::HandOver { len: l2, head }) => {
            assert_eq!(len, l2);
            assert!(head.is_none(), "an origin-form head was rewritten");
        }
        (HeadVerdict::Fast { .. }, _) => panic!("fast {fast:?} vs {slow:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    if head_is_complete(data) || data.len() > HEAD_MAX {
        check(data);
    } else if !data.is_empty() {
        let mut buf = Vec::with_capacity(HEAD_MAX + data.len());
        while buf.len() <= HEAD_MAX {
            buf.extend_from_slice(data);
        }
        check(&buf);
    }
});
