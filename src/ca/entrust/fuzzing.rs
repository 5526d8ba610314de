//! Fuzzing entry point, not an API: every decoder the connector applies to a gateway answer,
//! run on one body, for `fuzz/fuzz_targets/cagw_answers.rs`. Bad input must come back as an
//! error (or a lenient default), never a panic.

use serde::Deserialize;

use super::client::Inner;
use super::error::GatewayError;
use super::wire::{
    Wanted, WireCa, WireCertificate, WireEnrollment, WireEvents, WireProfile, action_status,
    pem_of, profile_of, summary, wire_status,
};
use crate::ca::remote::decode_certificate_text;

/// Decodes `body` as each answer the gateway gives (error body, certificate action answer,
/// certificate and whether it confirms each action's wanted state, enrolment, certificate
/// events, CA, CA list, profile, profile list) the way the connector does, and returns how
/// many of those shapes it matched.
pub fn decode_answers(status: u16, body: &[u8]) -> usize {
    #[derive(Deserialize)]
    struct Cert {
        certificate: WireCertificate,
    }
    #[derive(Deserialize)]
    struct Enrollment {
        enrollment: WireEnrollment,
    }
    #[derive(Deserialize)]
    struct Ca {
        ca: WireCa,
    }
    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    struct Cas {
        ca_list: Vec<WireCa>,
    }
    #[derive(Deserialize)]
    struct OneProfile {
        profile: WireProfile,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Profiles {
        profiles: Vec<WireProfile>,
    }
    let mut matched = 0;
    let _ = Inner::gateway_error("GET", "https://cagw.invalid/v1", status, body).to_string();
    if let Some(s) = action_status(body) {
        matched += 1;
        let _ = GatewayError::ActionRejected {
            action: "RevokeAction",
            serial: "1001".into(),
            status: s,
        }
        .to_string();
    }
    if let Ok(r) = serde_json::from_slice::<Cert>(body) {
        matched += 1;
        let _ = wire_status(&r.certificate);
        for wanted in [Wanted::Revoked, Wanted::Held, Wanted::Released] {
            let _ = wanted.confirmed_by(&r.certificate);
        }
        if let Some(d) = &r.certificate.certificate_data {
            let _ = decode_certificate_text(d);
        }
    }
    if let Ok(r) = serde_json::from_slice::<Enrollment>(body) {
        matched += 1;
        if let Some(b) = r.enrollment.body.as_deref().map(str::trim) {
            let _ = decode_certificate_text(b);
        }
    }
    if let Ok(page) = serde_json::from_slice::<WireEvents>(body) {
        matched += 1;
        for ev in &page.events {
            if let Some(b64) = &ev.certificate {
                let _ = decode_certificate_text(b64);
            }
        }
    }
    if let Ok(r) = serde_json::from_slice::<Ca>(body) {
        matched += 1;
        let _ = summary(&r.ca);
        let _ = pem_of(&r.ca.certificate);
        for c in &r.ca.chain {
            let _ = pem_of(&Some(c.clone()));
        }
    }
    if let Ok(r) = serde_json::from_slice::<Cas>(body) {
        matched += 1;
        r.ca_list.iter().for_each(|c| drop(summary(c)));
    }
    if let Ok(r) = serde_json::from_slice::<OneProfile>(body) {
        matched += 1;
        let _ = profile_of(&r.profile);
    }
    if let Ok(r) = serde_json::from_slice::<Profiles>(body) {
        matched += 1;
        r.profiles.iter().for_each(|p| drop(profile_of(p)));
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::decode_answers;

    #[test]
    fn action_answers_and_read_backs_are_decoded() {
        // Any object matches the lenient list shapes (events, CA list, profile list); an
        // ActionResponse is one shape more, a certificate read back one more too.
        let base = decode_answers(200, b"{}");
        let action =
            br#"{"type":"ActionResponse","action":{"type":"RevokeAction","status":"COMPLETED"}}"#;
        assert_eq!(decode_answers(200, action), base + 1);
        let read_back = br#"{"certificate":{"status":"revoked","serialNumber":"1001","revocationInfo":{"reason":"superseded","revocationDate":"2026-12-07T09:00:00Z"}}}"#;
        assert_eq!(decode_answers(200, read_back), base + 1);
        assert_eq!(decode_answers(200, br#"{"action":{}}"#), base);
    }
}
