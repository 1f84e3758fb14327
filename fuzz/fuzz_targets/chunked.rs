//! Chunked bodies → `h1::chunked_end`: the answer does not depend on how the bytes arrive (whole,
//! split in two at a position taken from the first input byte, or one byte at a time); the end
//! and the decoded body stay inside the input.
#![no_main]
use hubify_edge::h1::chunked_end;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let whole = chunked_end(&[body]);
    if let Ok((end, decoded)) = &whole {
        if let Some(end) = end {
            assert!(*end <= body.len(), "end {end} > {}", body.len());
        }
        assert!(decoded.len() <= body.len());
    }
    let at = usize::from(first) % (body.len() + 1);
    let (a, b) = body.split_at(at);
    assert_eq!(chunked_end(&[a, b]), whole, "split at {at}");
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(chunked_end(&bytes), whole, "byte at a time");
});
