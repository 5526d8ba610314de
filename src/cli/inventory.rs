//! `keyfleet inventory` and `keyfleet history`: what Keyfleet recorded, for people and scripts.

use std::process::ExitCode;

use super::{EXIT_FAILURE, EXIT_OK, GlobalArgs};
use crate::inventory::Inventory;

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

pub use crate::views::{display_status, key_uri};

/// The inventory as JSON: `{"cards": [...], "certificates": [...]}`.
pub fn inventory_json(inv: &Inventory, now: time::OffsetDateTime) -> serde_json::Value {
    serde_json::to_value(crate::views::InventoryView::of(inv, now)).unwrap_or_default()
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
