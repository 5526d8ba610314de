//! `keyfleet audit`: the drift report. What the plan would change, what is about to expire,
//! and where the CA and the inventory disagree.
//!
//! Exit codes: 0 clean, 2 drift found, 1 error.

use std::process::ExitCode;

use super::plan::EXIT_CHANGES;
use super::{EXIT_FAILURE, EXIT_OK, GlobalArgs};
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

pub use crate::drift::Finding;

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
    let master = runtime::master_key_for(&env)?;
    let cas = runtime::connect_authorities(&env.policy, &env.state_dir, &master, now);
    let findings =
        crate::drift::findings(&pass.plan, &pass.inventory, &cas, now, args.expiring_days);
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
            serde_json::to_string_pretty(&crate::drift::DriftReport {
                clean: findings.is_empty(),
                complete: pass.plan.complete,
                findings: findings.clone(),
            })?
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
