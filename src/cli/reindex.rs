//! `keyfleet reindex`: rebuild the store's index of certificates by card.
//!
//! Exit codes: 0 done, 1 error (including a running controller holding the store).

use std::process::ExitCode;

use super::{EXIT_FAILURE, EXIT_OK, GlobalArgs};
use crate::store::{Store, StoreError};

/// The long help of `keyfleet reindex`.
pub const LONG_ABOUT: &str = "Rebuild the store's index of certificates by card from the \
certificate records. Keyfleet keeps the index itself and builds it when it first opens a store \
written by a version without it; run this only after an older Keyfleet wrote to the state \
directory again (a downgrade and upgrade), whose certificates the index would otherwise miss \
when a renewal looks for the certificates it supersedes. Stop the controller first: the store \
admits one process.\n\nExit codes: 0 done, 1 error.";

/// Arguments of `keyfleet reindex` (none beyond the global ones).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {}

/// Runs `keyfleet reindex`.
pub fn run(global: &GlobalArgs, _args: Args) -> anyhow::Result<ExitCode> {
    let Some(env) = super::load_env(global)? else {
        return Ok(ExitCode::from(EXIT_FAILURE));
    };
    let store = match Store::open(&env.state_dir) {
        Ok(store) => store,
        Err(e @ StoreError::Locked(_)) => {
            eprintln!("error: {e}; stop `keyfleet run` first");
            return Ok(ExitCode::from(EXIT_FAILURE));
        }
        Err(e) => return Err(e.into()),
    };
    let master = crate::runtime::master_key_for(&env)?;
    let audit = crate::runtime::audit_log(&env, &master)?;
    let n = super::audited(
        &audit,
        "reindex",
        &env.state_dir.display().to_string(),
        serde_json::json!({}),
        || Ok(store.reindex()?),
    )?;
    println!("Indexed {n} certificates by card.");
    Ok(ExitCode::from(EXIT_OK))
}
