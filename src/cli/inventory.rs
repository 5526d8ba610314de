//! `keyfleet inventory` and `keyfleet history`: what Keyfleet recorded, for people and scripts.

use std::process::ExitCode;

use serde::Serialize;

use super::{EXIT_FAILURE, EXIT_OK, GlobalArgs};
use crate::inventory::{CertRecord, CertStatus, Inventory};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table for people.
    Text,
    /// JSON for scripts.
    Json,
}

/// Arguments of `keyfleet inventory`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    long_about = "List every card and every certificate Keyfleet ever had signed \
(history is never dropped), with their status."
)]
pub struct InventoryArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// Arguments of `keyfleet history`.
#[derive(Debug, Clone, clap::Args)]
#[command(long_about = "Show every applied action: when, by whom, why, with what result.")]
pub struct HistoryArgs {
    /// Only this user's actions.
    #[arg(long, value_name = "UID")]
    pub user: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// A certificate's status as printed: `expired` when active (or suspended) past notAfter.
pub fn display_status(cert: &CertRecord, now: time::OffsetDateTime) -> &'static str {
    match cert.status {
        CertStatus::Active | CertStatus::Suspended if cert.not_after <= now => "expired",
        CertStatus::Active => "active",
        CertStatus::Suspended => "suspended",
        CertStatus::Revoked => "revoked",
        CertStatus::Superseded => "superseded",
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonCert<'a> {
    serial: &'a str,
    user: &'a str,
    card: &'a str,
    template: &'a str,
    name: &'a str,
    slot: &'a str,
    ca: &'a str,
    profile: &'a str,
    status: &'a str,
    subject: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    not_before: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    not_after: time::OffsetDateTime,
    revision: &'a str,
    installed: bool,
    /// RFC 7512 URI of the private key, for certificates on PKCS#11 tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    key_uri: Option<String>,
    pem: &'a str,
}

/// The RFC 7512 URI of a certificate's private key when its card is a PKCS#11 token (the
/// token is labelled with its holder's uid at issuance).
pub fn key_uri(cert: &CertRecord) -> Option<String> {
    let serial = crate::card::pkcs11::serial_of(&cert.card)?;
    Some(
        crate::apply::tokens::slot_uri(
            serial,
            &cert.user,
            cert.slot,
            crate::card::pkcs11::uri::ObjectType::Private,
        )
        .to_string(),
    )
}

/// The inventory as JSON: `{"cards": [...], "certificates": [...]}`.
pub fn inventory_json(inv: &Inventory, now: time::OffsetDateTime) -> serde_json::Value {
    let cards: Vec<serde_json::Value> = inv
        .cards
        .values()
        .map(|c| {
            serde_json::json!({
                "id": c.id,
                "type": c.card_type,
                "user": c.user,
                "template": c.template,
                "stock": c.stock,
                "status": c.status,
                "createdAt": c.created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                "updatedAt": c.updated_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            })
        })
        .collect();
    let certs: Vec<JsonCert<'_>> = inv
        .certs
        .values()
        .map(|c| JsonCert {
            serial: &c.serial,
            user: &c.user,
            card: &c.card,
            template: &c.template,
            name: &c.name,
            slot: c.slot.hex(),
            ca: &c.ca,
            profile: &c.profile,
            status: display_status(c, now),
            subject: &c.subject,
            not_before: c.not_before,
            not_after: c.not_after,
            revision: &c.revision,
            installed: c.installed,
            key_uri: key_uri(c),
            pem: &c.pem,
        })
        .collect();
    serde_json::json!({ "cards": cards, "certificates": certs })
}

/// Runs `keyfleet inventory`.
pub fn run_inventory(global: &GlobalArgs, args: InventoryArgs) -> anyhow::Result<ExitCode> {
    let Some(env) = super::load_env(global)? else {
        return Ok(ExitCode::from(EXIT_FAILURE));
    };
    // From the store, or through the control socket while the controller holds it.
    let inv = crate::statedir::control::read_inventory(&env.state_dir)?;
    let now = time::OffsetDateTime::now_utc();
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&inventory_json(&inv, now))?
        ),
        Format::Text => {
            println!("CARDS");
            println!(
                "{:<38} {:<8} {:<10} {:<16} TEMPLATE",
                "ID", "TYPE", "STATUS", "USER"
            );
            for c in inv.cards.values() {
                println!(
                    "{:<38} {:<8} {:<10} {:<16} {}",
                    c.id,
                    c.card_type.as_str(),
                    format!("{:?}", c.status).to_lowercase(),
                    c.user.as_deref().unwrap_or("-"),
                    c.template.as_deref().unwrap_or("-")
                );
            }
            println!("\nCERTIFICATES");
            println!(
                "{:<34} {:<16} {:<4} {:<11} {:<20} SUBJECT",
                "SERIAL", "USER", "SLOT", "STATUS", "NOT AFTER"
            );
            for c in inv.certs.values() {
                println!(
                    "{:<34} {:<16} {:<4} {:<11} {:<20} {}",
                    c.serial,
                    c.user,
                    c.slot.hex(),
                    display_status(c, now),
                    c.not_after.date().to_string(),
                    c.subject
                );
            }
        }
    }
    Ok(ExitCode::from(EXIT_OK))
}

/// Runs `keyfleet history`.
pub fn run_history(global: &GlobalArgs, args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let Some(env) = super::load_env(global)? else {
        return Ok(ExitCode::from(EXIT_FAILURE));
    };
    let entries: Vec<_> = crate::statedir::control::read_history(&env.state_dir)?
        .into_iter()
        .filter(|e| args.user.as_deref().is_none_or(|u| e.user == u))
        .collect();
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&entries)?),
        Format::Text => {
            for e in &entries {
                let at =
                    e.at.format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default();
                println!(
                    "{at} {:<10} {:<8} {:<16} {:<9} {}{}",
                    e.actor,
                    e.kind.as_str(),
                    e.user,
                    format!("{:?}", e.result).to_lowercase(),
                    e.reason.message,
                    e.message
                        .as_ref()
                        .map(|m| format!(" — {m}"))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(ExitCode::from(EXIT_OK))
}
