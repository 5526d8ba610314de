//! Fuzz target: every decoder the Entrust CA Gateway connector applies to a gateway answer
//! (error bodies, certificate action answers, certificates with their status and whether they
//! confirm an action, enrolments, certificate events, CAs, profiles) must answer any body with
//! an error or a lenient default, never panic. The first two bytes are the HTTP status, the
//! rest the body.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (status, body) = match data {
        [a, b, body @ ..] => (u16::from_be_bytes([*a, *b]), body),
        _ => (200, data),
    };
    keyfleet::ca::entrust::fuzzing::decode_answers(status, body);
});
