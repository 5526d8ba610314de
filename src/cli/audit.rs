//! `keyfleet audit`: the drift report. What the plan would change, what is about to expire,
//! and where the CA and the inventory disagree.
//!
//! Exit codes: 0 clean, 2 drift found, 1 error.

use std::process::ExitCode;

use serde::Serialize;

use super::plan::EXIT_CHANGES;
use super::{EXIT_FAILURE, EXIT_OK, GlobalArgs};
use crate::ca::CaCertStatus;
use crate::inventory::CertStatus;
use crate::plan::{ActionKind, ReasonCode};
use crate::runtime;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Text for people.
    Text,
    /// JSON for scripts.
    Json,
    /// Markdown for a merge-request comment: a summary, a table per finding kind and the
    /// warnings; folded when long, at most 60,000 characters.
    Markdown,
}

/// Arguments of `keyfleet audit`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    long_about = "Report drift between policy, directory, inventory and CA: users \
entitled without a credential, credentials without entitlement, certificates expiring within \
the window, certificates revoked or held at the CA but active here (and the reverse), and \
credentials issued under an older template revision.\n\nExit codes: 0 clean, 2 drift, 1 error."
)]
pub struct Args {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Report certificates expiring within this many days.
    #[arg(long, default_value_t = 30)]
    pub expiring_days: i64,
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
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

/// Runs `keyfleet audit`.
pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let Some(env) = super::load_env(global)? else {
        return Ok(ExitCode::from(EXIT_FAILURE));
    };
    let now = time::OffsetDateTime::now_utc();
    // From the store, or through the control socket while the controller holds it.
    let inventory = crate::statedir::control::read_inventory(&env.state_dir)?;
    let cards = runtime::cards(&env, &inventory);
    let pass = runtime::plan_pass_cards(&env, inventory, &cards, now, true, None)?;
    let mut findings = Vec::new();
    for a in &pass.plan.actions {
        let kind = match (a.kind, a.reason.code) {
            (ActionKind::Issue, ReasonCode::NotIssued) => "entitled-without-credential",
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
    if pass.plan.withheld_revocations > 0 {
        findings.push(Finding {
            kind: "credential-without-entitlement",
            user: String::new(),
            card: None,
            serial: None,
            message: format!(
                "{} credential(s) may have lost their entitlement, but the directory observation was incomplete",
                pass.plan.withheld_revocations
            ),
        });
    }
    let horizon = now + time::Duration::days(args.expiring_days);
    let master = runtime::master_key_for(&env)?;
    let cas = runtime::connect_authorities(&env.policy, &env.state_dir, &master, now);
    // Expiry, then the CA's view: per CA, in batches, asked concurrently by the connector.
    let mut by_ca: std::collections::BTreeMap<&str, Vec<&crate::inventory::CertRecord>> =
        std::collections::BTreeMap::new();
    for cert in pass.inventory.certs.values() {
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
    match args.format {
        Format::Markdown => print!(
            "{}",
            super::markdown::audit_markdown(
                &findings,
                pass.plan.complete,
                &pass.desired.observation_errors
            )
        ),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "clean": findings.is_empty(),
                "complete": pass.plan.complete,
                "findings": findings,
            }))?
        ),
        Format::Text => {
            if findings.is_empty() {
                println!("No drift.");
            }
            for f in &findings {
                println!(
                    "{:<32} {:<16} {:<34} {}",
                    f.kind,
                    f.user,
                    f.serial.as_deref().or(f.card.as_deref()).unwrap_or("-"),
                    f.message
                );
            }
        }
    }
    Ok(ExitCode::from(if findings.is_empty() {
        EXIT_OK
    } else {
        EXIT_CHANGES
    }))
}
