//! Fuzz target: cfssl's answers (the JSON envelope, the certificate in its result) and the
//! hex-to-decimal serial conversion must answer any input with an error, never panic. The
//! first two bytes are the HTTP status, the rest the body.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (status, body) = match data {
        [a, b, body @ ..] => (u16::from_be_bytes([*a, *b]), body),
        _ => (200, data),
    };
    let url = "https://cfssl.invalid/api/v1/cfssl/authsign";
    if let Ok(result) = keyfleet::ca::cfssl::decode_answer(url, status, body)
        && let Some(pem) = result
            .get("certificate")
            .and_then(serde_json::Value::as_str)
    {
        let _ = keyfleet::ca::remote::decode_certificate_text(pem);
    }
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = keyfleet::ca::cfssl::decimal_serial(text);
    }
});
