//! `keyfleet approve`: approve the revocations the safety valve holds. With a controller
//! running, it approves what the controller holds now (through the control socket) and the
//! controller applies them at once; otherwise it records approval of the revocations the
//! current plan would hold, for the next `keyfleet run`.
//!
//! Exit codes: 0 done (including "nothing was held"), 1 error.

use std::process::ExitCode;

use super::{EXIT_FAILURE, EXIT_OK, GlobalArgs};
use crate::statedir::control::{self, Access, Request, Response};
use crate::statedir::status::HeldRevocation;

/// Arguments of `keyfleet approve`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    long_about = "Approve the revocations the safety valve holds (a plan that revokes the \
credentials of more users than Settings.spec.safety allows). With `keyfleet run` running, the \
controller applies them in its next pass, right away; otherwise the approval is recorded in the \
state directory for the next `keyfleet run`. Revocations planned later are not covered: if the \
valve trips again, approve again.\n\nExit codes: 0 done (also when nothing was held), 1 error."
)]
pub struct Args {
    /// Name logged as the approver (default: the OS user).
    #[arg(long, value_name = "NAME", env = "KEYFLEET_OPERATOR")]
    pub operator: Option<String>,
}

/// Runs `keyfleet approve`.
pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let Some(env) = super::load_env(global)? else {
        return Ok(ExitCode::from(EXIT_FAILURE));
    };
    let actor = args.operator.unwrap_or_else(|| {
        std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into())
    });
    let approved = match control::open_for_reading(&env.state_dir)? {
        Some(Access::Controller) => {
            match control::request(&env.state_dir, &Request::Approve { actor })? {
                Response::Approved { approved } => approved,
                other => return Err(control::unexpected(&env.state_dir, &other).into()),
            }
        }
        Some(Access::Local(store)) => {
            drop(store);
            crate::controller::approve_offline(&env, &actor)?
        }
        None => crate::controller::approve_offline(&env, &actor)?,
    };
    print!("{}", approved_text(&approved));
    Ok(ExitCode::from(EXIT_OK))
}

/// What was approved, as text.
pub fn approved_text(approved: &[HeldRevocation]) -> String {
    use std::fmt::Write;
    if approved.is_empty() {
        return "Nothing to approve: the safety valve holds no revocation.\n".into();
    }
    let mut out = format!("Approved {} revocation(s):\n", approved.len());
    for h in approved {
        let _ = writeln!(
            out,
            "  revoke {:<16} {:<38} {}",
            h.user,
            h.card.as_deref().unwrap_or("-"),
            h.reason
        );
    }
    out
}
