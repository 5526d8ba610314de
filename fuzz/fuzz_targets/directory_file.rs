//! Fuzz target: the `file` directory reader must answer any text with a snapshot or an error,
//! never panic, and refuse anchors, aliases and deep nesting.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = keyfleet::observe::directory::parse_file_directory("people.yaml".as_ref(), text);
    }
});
