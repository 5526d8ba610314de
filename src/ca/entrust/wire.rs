//! The gateway's wire format: the JSON shapes it answers with (lenient: unknown fields
//! ignored, missing ones defaulted), certificate status and revocation reason strings, and the
//! answers to certificate actions.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{CaSummary, Profile, Requirement};
use crate::ca::remote::{ParsedCertificate, decode_certificate_text};
use crate::ca::{CaCertStatus, IssuedCertificate, RevocationReason};

// ---------------------------------------------------------------------------------------------
// Wire shapes (lenient: unknown fields ignored, missing ones defaulted).

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct ErrorBody {
    pub(super) error: Option<ErrorDetail>,
    pub(super) message: Option<MessageBody>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct ErrorDetail {
    pub(super) code: Option<String>,
    pub(super) message: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct MessageBody {
    pub(super) message: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct CertData {
    #[serde(rename = "certificateData")]
    pub(super) certificate_data: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct WireCa {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) properties: BTreeMap<String, Value>,
    pub(super) certificate: Option<CertData>,
    pub(super) chain: Vec<CertData>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct WireRequirement {
    pub(super) name: String,
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) description: String,
    pub(super) required: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct WireProfile {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) subject_variable_requirements: Vec<WireRequirement>,
    pub(super) subject_alt_name_requirements: Vec<WireRequirement>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct WireEnrollment {
    pub(super) id: String,
    pub(super) serial_number: String,
    pub(super) status: String,
    pub(super) body: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct WireRevocationInfo {
    pub(super) reason: Option<String>,
    pub(super) revocation_date: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct WireCertificate {
    pub(super) status: Option<String>,
    pub(super) serial_number: String,
    pub(super) certificate_data: Option<String>,
    pub(super) revocation_info: Option<WireRevocationInfo>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct WireEvent {
    pub(super) serial_number: Option<String>,
    pub(super) certificate: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct WireEvents {
    pub(super) events: Vec<WireEvent>,
    pub(super) next_page_index: Option<String>,
    pub(super) more_pages: Option<bool>,
    pub(super) has_more: Option<bool>,
}

/// The CAGW reason string of a revocation reason.
pub fn reason_string(reason: RevocationReason) -> &'static str {
    match reason {
        RevocationReason::Unspecified => "unspecified",
        RevocationReason::KeyCompromise => "keyCompromise",
        RevocationReason::AffiliationChanged => "affiliationChanged",
        RevocationReason::Superseded => "superseded",
        RevocationReason::CessationOfOperation => "cessationOfOperation",
        RevocationReason::CertificateHold => "certificateHold",
    }
}

/// The revocation reason of a CAGW reason string (case-insensitive); reasons Keyfleet does
/// not model read as `unspecified`.
pub fn parse_reason(s: &str) -> RevocationReason {
    match s.to_ascii_lowercase().as_str() {
        "keycompromise" => RevocationReason::KeyCompromise,
        "affiliationchanged" => RevocationReason::AffiliationChanged,
        "superseded" => RevocationReason::Superseded,
        "cessationofoperation" => RevocationReason::CessationOfOperation,
        "certificatehold" => RevocationReason::CertificateHold,
        _ => RevocationReason::Unspecified,
    }
}

/// The state a certificate action asks for, as the certificate read back must show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wanted {
    /// Revoked (for good, any reason but a hold).
    Revoked,
    /// On hold.
    Held,
    /// Valid again after a hold.
    Released,
}

impl Wanted {
    /// Whether the certificate read back shows this state, explicitly: a certificate with no
    /// status confirms nothing.
    pub(super) fn confirmed_by(self, c: &WireCertificate) -> bool {
        let Some(s) = c.status.as_deref() else {
            return false;
        };
        let s = s.to_ascii_lowercase();
        match (self, wire_status(c)) {
            (Wanted::Revoked, CaCertStatus::Revoked { .. }) => true,
            (Wanted::Held, CaCertStatus::Held) => true,
            (Wanted::Released, CaCertStatus::Active) => matches!(s.as_str(), "normal" | "active"),
            _ => false,
        }
    }
}

/// `action.status` of an `ActionResponse` body; `None` when the body is not one.
pub(super) fn action_status(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct A {
        status: String,
    }
    #[derive(Deserialize)]
    struct R {
        action: A,
    }
    serde_json::from_slice::<R>(body)
        .ok()
        .map(|r| r.action.status)
}

pub(super) fn wire_status(c: &WireCertificate) -> CaCertStatus {
    let s = c.status.as_deref().unwrap_or("normal").to_ascii_lowercase();
    match s.as_str() {
        "held" | "hold" | "suspended" | "onhold" => CaCertStatus::Held,
        "revoked" => {
            let info = c.revocation_info.clone().unwrap_or_default();
            let reason = info
                .reason
                .as_deref()
                .map(parse_reason)
                .unwrap_or(RevocationReason::Unspecified);
            if reason == RevocationReason::CertificateHold {
                return CaCertStatus::Held;
            }
            let at = info
                .revocation_date
                .as_deref()
                .and_then(|d| OffsetDateTime::parse(d, &Rfc3339).ok())
                .unwrap_or(OffsetDateTime::UNIX_EPOCH);
            CaCertStatus::Revoked { reason, at }
        }
        _ => CaCertStatus::Active,
    }
}

pub(super) fn to_issued(p: ParsedCertificate, request_id: &str) -> IssuedCertificate {
    IssuedCertificate {
        serial: p.serial,
        der: p.der,
        pem: p.pem,
        not_before: p.not_before,
        not_after: p.not_after,
        request_id: request_id.to_string(),
    }
}

pub(super) fn pem_of(data: &Option<CertData>) -> Option<String> {
    data.as_ref()
        .and_then(|c| c.certificate_data.as_deref())
        .and_then(|d| decode_certificate_text(d).ok())
        .map(|p| p.pem)
}

pub(super) fn summary(ca: &WireCa) -> CaSummary {
    CaSummary {
        id: ca.id.clone(),
        name: ca.name.clone(),
        properties: ca
            .properties
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
    }
}

pub(super) fn profile_of(p: &WireProfile) -> Profile {
    let req = |r: &WireRequirement| Requirement {
        name: if r.name.is_empty() {
            r.kind.clone()
        } else {
            r.name.clone()
        },
        description: r.description.clone(),
        required: r.required,
    };
    Profile {
        id: p.id.clone(),
        name: p.name.clone(),
        subject_variables: p.subject_variable_requirements.iter().map(req).collect(),
        subject_alt_names: p.subject_alt_name_requirements.iter().map(req).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::{
        Wanted, WireCertificate, WireRevocationInfo, action_status, parse_reason, reason_string,
        wire_status,
    };
    use crate::ca::{CaCertStatus, RevocationReason};
    #[test]
    fn reasons_round_trip() {
        for r in [
            RevocationReason::Unspecified,
            RevocationReason::KeyCompromise,
            RevocationReason::AffiliationChanged,
            RevocationReason::Superseded,
            RevocationReason::CessationOfOperation,
            RevocationReason::CertificateHold,
        ] {
            assert_eq!(parse_reason(reason_string(r)), r);
        }
        assert_eq!(
            parse_reason("KEYCOMPROMISE"),
            RevocationReason::KeyCompromise
        );
        assert_eq!(parse_reason("caCompromise"), RevocationReason::Unspecified);
    }

    #[test]
    fn statuses_parse_case_insensitively() {
        let c = |s: &str, reason: Option<&str>| WireCertificate {
            status: Some(s.into()),
            revocation_info: reason.map(|r| WireRevocationInfo {
                reason: Some(r.into()),
                revocation_date: Some("2024-03-05T22:43:23.429157524Z".into()),
            }),
            ..Default::default()
        };
        assert_eq!(wire_status(&c("normal", None)), CaCertStatus::Active);
        assert_eq!(wire_status(&c("HELD", None)), CaCertStatus::Held);
        assert_eq!(wire_status(&c("Suspended", None)), CaCertStatus::Held);
        assert!(matches!(
            wire_status(&c("REVOKED", Some("keyCompromise"))),
            CaCertStatus::Revoked {
                reason: RevocationReason::KeyCompromise,
                ..
            }
        ));
        assert_eq!(
            wire_status(&WireCertificate::default()),
            CaCertStatus::Active
        );
    }

    #[test]
    fn only_completed_or_a_read_back_confirms_an_action() {
        assert_eq!(
            action_status(br#"{"type":"ActionResponse","action":{"status":"COMPLETED"}}"#)
                .as_deref(),
            Some("COMPLETED")
        );
        for garbage in [
            &b"<html>ok</html>"[..],
            b"",
            b"{}",
            br#"{"action":{}}"#,
            b"null",
        ] {
            assert_eq!(action_status(garbage), None);
        }
        let c = |s: Option<&str>, reason: Option<&str>| WireCertificate {
            status: s.map(str::to_string),
            revocation_info: reason.map(|r| WireRevocationInfo {
                reason: Some(r.into()),
                revocation_date: None,
            }),
            ..WireCertificate::default()
        };
        assert!(Wanted::Revoked.confirmed_by(&c(Some("REVOKED"), Some("superseded"))));
        assert!(!Wanted::Revoked.confirmed_by(&c(Some("revoked"), Some("certificateHold"))));
        assert!(!Wanted::Revoked.confirmed_by(&c(Some("normal"), None)));
        assert!(Wanted::Held.confirmed_by(&c(Some("held"), None)));
        assert!(!Wanted::Held.confirmed_by(&c(Some("normal"), None)));
        assert!(Wanted::Released.confirmed_by(&c(Some("normal"), None)));
        assert!(
            !Wanted::Released.confirmed_by(&c(None, None)),
            "no status confirms nothing"
        );
        assert!(!Wanted::Released.confirmed_by(&c(Some("expired"), None)));
        assert!(!Wanted::Released.confirmed_by(&c(Some("held"), None)));
    }
}
