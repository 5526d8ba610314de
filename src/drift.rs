//! The drift report (`keyfleet audit`, the API's `GET /audit`): what the plan would change,
//! what is about to expire, and where the CA and the inventory disagree.

use schemars::JsonSchema;
use serde::Serialize;
use time::OffsetDateTime;

use crate::apply::CaRegistry;
use crate::ca::CaCertStatus;
use crate::inventory::{CertStatus, Inventory};
use crate::plan::{ActionKind, Plan, ReasonCode};

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// Stable kind: `entitled-without-credential`, `credential-without-entitlement`,
    /// `expiring`, `revoked-at-ca-active-here`, `held-at-ca-active-here`,
    /// `active-at-ca-revoked-here`, `unknown-at-ca`, `template-drift`, `ca-unreachable`,
    /// `superseded-still-valid` (a replaced certificate whose revocation is not confirmed).
    pub kind: &'static str,
    /// The uid.
    pub user: String,
    /// Card, if any.
    pub card: Option<String>,
    /// Certificate, if any.
    pub serial: Option<String>,
    /// Details.
    pub message: String,
}

/// How many serials are handed to a CA connector at once (it asks them concurrently, within
/// its own concurrency limit).
const AUDIT_BATCH: usize = 200;

/// The drift report as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct DriftReport {
    /// No finding.
    pub clean: bool,
    /// Whether every directory was observed completely.
    pub complete: bool,
    /// What was found.
    pub findings: Vec<Finding>,
}

/// The findings of a plan over `inventory`, with the CAs' view of every certificate.
pub fn findings(
    plan: &Plan,
    inventory: &Inventory,
    cas: &CaRegistry,
    now: OffsetDateTime,
    expiring_days: i64,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    for a in &plan.actions {
        let kind = match (a.kind, a.reason.code) {
            (ActionKind::Issue, ReasonCode::NotIssued) => "entitled-without-credential",
            (ActionKind::Revoke, ReasonCode::TemporaryEnded)
            | (ActionKind::Retire, ReasonCode::TemporaryEnded) => "temporary-card-ended",
            (
                _,
                ReasonCode::CardLost
                | ReasonCode::CardDamaged
                | ReasonCode::CardForgotten
                | ReasonCode::CardFound
                | ReasonCode::ReplacesLost
                | ReasonCode::ReplacesDamaged
                | ReasonCode::TemporaryForForgotten,
            ) => "card-incident",
            (ActionKind::RotatePuk, _) => "puk-to-rotate",
            (ActionKind::KeyHistory, _) => "key-history-drift",
            (ActionKind::Revoke, ReasonCode::Superseded) => "superseded-still-valid",
            (ActionKind::Revoke, _) => "credential-without-entitlement",
            (ActionKind::Reissue, _) => "template-drift",
            (ActionKind::Suspend, _) => "disabled-user-active",
            (ActionKind::Resume, _) => "enabled-user-suspended",
            (ActionKind::Issue, _) => "interrupted-issuance",
            (ActionKind::Retire, _) => "card-awaiting-wipe",
            (ActionKind::Renew, _) => continue,
        };
        findings.push(Finding {
            kind,
            user: a.user.clone(),
            card: a.card.clone(),
            serial: a.serials.first().cloned(),
            message: a.reason.message.clone(),
        });
    }
    if plan.withheld_revocations > 0 {
        findings.push(Finding {
            kind: "credential-without-entitlement",
            user: String::new(),
            card: None,
            serial: None,
            message: format!(
                "{} credential(s) may have lost their entitlement, but the directory observation was incomplete",
                plan.withheld_revocations
            ),
        });
    }
    let horizon = now + time::Duration::days(expiring_days);
    // Expiry, then the CA's view: per CA, in batches, asked concurrently by the connector.
    let mut by_ca: std::collections::BTreeMap<&str, Vec<&crate::inventory::CertRecord>> =
        std::collections::BTreeMap::new();
    for cert in inventory.certs.values() {
        if cert.is_live() && cert.not_after <= horizon {
            findings.push(Finding {
                kind: "expiring",
                user: cert.user.clone(),
                card: Some(cert.card.clone()),
                serial: Some(cert.serial.clone()),
                message: format!("expires at {}", cert.not_after),
            });
        }
        by_ca.entry(cert.ca.as_str()).or_default().push(cert);
    }
    for (ca_name, certs) in by_ca {
        let ca = match cas.get(ca_name) {
            Some(Ok(ca)) => ca,
            Some(Err(e)) => {
                for cert in certs {
                    findings.push(Finding {
                        kind: "ca-unreachable",
                        user: cert.user.clone(),
                        card: Some(cert.card.clone()),
                        serial: Some(cert.serial.clone()),
                        message: format!("CA {ca_name}: {e}"),
                    });
                }
                continue;
            }
            None => continue,
        };
        for batch in certs.chunks(AUDIT_BATCH) {
            let serials: Vec<String> = batch.iter().map(|c| c.serial.clone()).collect();
            let answers = ca.statuses(&serials);
            for (cert, answer) in batch.iter().zip(answers) {
                let at_ca = match answer {
                    Ok(s) => s,
                    // A CA that cannot report status (cfssl) is not drift.
                    Err(crate::ca::CaError::Unsupported(_)) => continue,
                    Err(e) => {
                        findings.push(Finding {
                            kind: "ca-unreachable",
                            user: cert.user.clone(),
                            card: Some(cert.card.clone()),
                            serial: Some(cert.serial.clone()),
                            message: format!("CA {ca_name}: {e}"),
                        });
                        continue;
                    }
                };
                let kind = match (cert.status, at_ca) {
                    (CertStatus::Active, CaCertStatus::Revoked { .. }) => {
                        "revoked-at-ca-active-here"
                    }
                    (CertStatus::Active, CaCertStatus::Held) => "held-at-ca-active-here",
                    (CertStatus::Revoked | CertStatus::Superseded, CaCertStatus::Active) => {
                        "active-at-ca-revoked-here"
                    }
                    (CertStatus::Suspended, CaCertStatus::Active) => "active-at-ca-suspended-here",
                    (_, CaCertStatus::Unknown) => "unknown-at-ca",
                    _ => continue,
                };
                findings.push(Finding {
                    kind,
                    user: cert.user.clone(),
                    card: Some(cert.card.clone()),
                    serial: Some(cert.serial.clone()),
                    message: format!(
                        "inventory says {:?}, CA {} says {:?}",
                        cert.status, cert.ca, at_ca
                    ),
                });
            }
        }
    }
    findings
}
