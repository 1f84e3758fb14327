//! Upstream response heads → `h1::judge_response`, for GET and HEAD requests: never panics, the
//! head's length stays inside the buffer, and `head_only` changes nothing but the body framing.
#![no_main]
use hubify_edge::h1::judge_response;
use hubify_edge::upstream::response::Framing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let get = judge_response(data, false);
    let head = judge_response(data, true);
    for r in [&get, &head] {
        if let Ok(Some((_, framing, reusable, len))) = r {
            assert!(*len <= data.len(), "head len {len} > {}", data.len());
            assert!(!(*reusable && matches!(framing, Framing::Eof { .. })));
        }
    }
    match (&get, &head) {
        (Ok(Some((s1, _, _, l1))), Ok(Some((s2, f2, _, l2)))) => {
            assert_eq!((s1, l1), (s2, l2));
            assert_eq!(*f2, Framing::Empty, "a HEAD response has no body");
        }
        (Ok(None), Ok(None)) => {}
        (Err(a), Err(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}")),
        _ => panic!("head_only changed more than framing: {get:?} vs {head:?}"),
    }
});
