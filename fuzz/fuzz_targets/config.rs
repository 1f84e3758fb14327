//! Config parsing: any text gives a Config or an error naming the file, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = hubify_edge_config::Config::from_toml(s, "fuzz.toml") {
        assert_eq!(e.file, "fuzz.toml");
    }
});
