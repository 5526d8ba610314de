//! `keyfleet approve`: approve the revocations the safety valve holds. With a controller
//! running, it approves what the controller holds now (through the control socket) and the
//! controller applies them at once; otherwise it records approval of the revocations the
//! current plan would hold, for the next `keyfleet run`.
//!
//! Exit codes: 0 done (including "nothing was held"), 1 error.

use std::process::ExitCode;

use super::{EXIT_FAILURE, EXIT_OK, GlobalArgs};
use crate::operators::service::NOTHING_HELD;
use crate::statedir::control::OperatorCall;
use crate::statedir::status::HeldRevocation;

/// Arguments of `keyfleet approve`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    long_about = "Approve the revocations the safety valve holds (a plan that revokes the \
credentials of more users than Settings.spec.safety allows). With `keyfleet run` running, the \
controller applies them in its next pass, right away; otherwise the approval is recorded in the \
state directory for the next `keyfleet run`. Revocations planned later are not covered: if the \
valve trips again, approve again. Needs the `approve-mass-revocation` permission (the state \
directory's owner has it); when Settings.spec.approvals lists approve-mass-revocation, this makes \
a request that others approve with `keyfleet requests approve`.\n\nExit codes: 0 done (also when \
nothing was held, or a request was made), 1 refused or failed."
)]
pub struct Args {
    /// Why (recorded in the audit log and shown to approvers).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// A remote controller (`--server`) and your identity.
    #[command(flatten)]
    pub remote: super::remote::RemoteArgs,
}

/// Runs `keyfleet approve`.
pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let call = OperatorCall::ApproveHeld {
        reason: args.reason,
    };
    let Some(answer) = super::operator::call(global, &args.remote, &call)? else {
        return Ok(ExitCode::from(EXIT_FAILURE));
    };
    match answer {
        Err(r) if r.code == "conflict" && r.message.contains(NOTHING_HELD) => {
            print!("{}", approved_text(&[]));
            Ok(ExitCode::from(EXIT_OK))
        }
        Err(r) => super::requests::refused(&r),
        Ok(value) => {
            print!(
                "{}",
                outcome_text(&value, |result| {
                    let held: Vec<HeldRevocation> = result
                        .get("revocations")
                        .cloned()
                        .and_then(|v| serde_json::from_value(v).ok())
                        .unwrap_or_default();
                    approved_text(&held)
                })
            );
            Ok(ExitCode::from(EXIT_OK))
        }
    }
}

/// The answer of an operation that may need approval, as text: `done` through `done_text`,
/// or the request that was made.
pub fn outcome_text(
    value: &serde_json::Value,
    done_text: impl FnOnce(&serde_json::Value) -> String,
) -> String {
    match value.get("state").and_then(|s| s.as_str()) {
        Some("pending") => {
            let r = &value["request"];
            format!(
                "Needs approval: request {} made ({} approval(s) needed; `keyfleet requests approve {}`).\n",
                r["id"].as_str().unwrap_or(""),
                r["required"],
                r["id"].as_str().unwrap_or("")
            )
        }
        _ => done_text(&value["result"]),
    }
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
