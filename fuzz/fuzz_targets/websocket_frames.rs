//! WebSocket frame tracking (`tunnel::frames::FrameScan`), the part of the tunnel that reads
//! untrusted bytes: the same bytes cut into chunks anywhere give the same boundaries and close
//! sightings as fed whole; `until_boundary` never reports an offset outside its input; never
//! panics.
#![no_main]
use hubify_edge::tunnel::frames::FrameScan;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let mut whole = FrameScan::default();
    whole.feed(bytes);
    let mut chunked = FrameScan::default();
    let step = usize::from(cut % 17) + 1;
    for chunk in bytes.chunks(step) {
        chunked.feed(chunk);
    }
    assert_eq!(whole.at_boundary(), chunked.at_boundary());
    assert_eq!(whole.close_seen(), chunked.close_seen());
    // Boundary by boundary, as the drain walks them.
    let mut walk = FrameScan::default();
    let mut rest = bytes;
    while let Some(k) = walk.until_boundary(rest) {
        assert!(k <= rest.len());
        if k == 0 {
            // At a boundary: one byte starts the next frame.
            if rest.is_empty() {
                break;
            }
            walk.feed(&rest[..1]);
            rest = &rest[1..];
        } else {
            rest = &rest[k..];
        }
    }
    // The walk passed every byte (or stopped where the framing broke, as `feed` does).
    assert_eq!(walk.close_seen(), whole.close_seen());
    assert_eq!(walk.at_boundary(), whole.at_boundary());
});
