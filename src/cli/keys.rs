//! `keyfleet keys list|recover`: the archive of encryption keys, locally (the controller's
//! socket, or the state directory) or with `--server`. Rendering only: the operations are
//! [`crate::operators::keys`].
//!
//! Exit codes: 0 done (a recovery answers with the request it made), 1 refused or failed.

use std::process::ExitCode;

use super::remote::RemoteArgs;
use super::{EXIT_FAILURE, EXIT_OK, GlobalArgs};
use crate::statedir::control::OperatorCall;

/// Long help of `keyfleet keys`.
pub const LONG_ABOUT: &str = "Encryption keys of `archive: true` slots are archived when they \
are made: each under its own data key, wrapped by the archive key (Settings.spec.archive.keyStore; \
never the master key). `keys list` shows the records, never key material, to holders of \
recover-key or view-inventory. `keys recover` asks for a user's keys as a PKCS#12 file: a \
recover-key request that needs Settings.spec.approvals.recover-key approvals (2 when not set) \
from holders of recover-key who are neither the requester nor the key's owner; with its last \
approval it runs once and the one-time password goes to the requester's file in the PIN-mailer \
folder.\n\nExit codes: 0 done, 1 refused or failed.";

/// Arguments of `keyfleet keys`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table for people.
    Text,
    /// JSON for scripts.
    Json,
}

/// `keyfleet keys` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysCommand {
    /// The archived keys you may see, newest first.
    List {
        /// Only this user's.
        #[arg(long, value_name = "UID")]
        user: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// A remote controller (`--server`) and your identity.
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Ask for the recovery of a user's archived keys (a recover-key request).
    #[command(group(clap::ArgGroup::new("destination").required(true)))]
    Recover {
        /// Whose keys.
        #[arg(long, value_name = "UID")]
        user: String,
        /// Only the key of this certificate (hex serial).
        #[arg(long, value_name = "HEX")]
        serial: Option<String>,
        /// Write them as a PKCS#12 file (on the controller's machine; must not exist).
        #[arg(long, value_name = "FILE", group = "destination")]
        pkcs12: Option<std::path::PathBuf>,
        /// Write them into the retired key slots of this card of the owner's (in a reader).
        #[arg(long, value_name = "CARD", group = "destination")]
        to_card: Option<String>,
        /// Record in the audit log that the owner is to be told (for a mail gateway).
        #[arg(long)]
        notify_owner: bool,
        /// Why (recorded; shown to approvers).
        #[arg(long, default_value = "")]
        reason: String,
        /// A remote controller (`--server`) and your identity.
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

/// Runs `keyfleet keys`.
pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let (call, remote, json) = match args.command {
        KeysCommand::List {
            user,
            format,
            remote,
        } => (
            OperatorCall::ListKeys { user },
            remote,
            format == Format::Json,
        ),
        KeysCommand::Recover {
            user,
            serial,
            pkcs12,
            to_card,
            notify_owner,
            reason,
            remote,
        } => {
            // A local file is named for the controller, whose working directory differs.
            let pkcs12 = match pkcs12 {
                Some(p) if remote.server.is_none() && p.is_relative() => {
                    Some(std::env::current_dir()?.join(p))
                }
                p => p,
            };
            let parameters = crate::archive::RecoverParameters {
                serial,
                pkcs12,
                to_card,
                notify_owner,
            };
            (
                OperatorCall::RecoverKey {
                    user,
                    parameters,
                    reason,
                },
                remote,
                false,
            )
        }
    };
    let Some(answer) = super::operator::call(global, &remote, &call)? else {
        return Ok(ExitCode::from(EXIT_FAILURE));
    };
    let value = match answer {
        Ok(v) => v,
        Err(r) => {
            eprintln!("{r}");
            return Ok(ExitCode::from(EXIT_FAILURE));
        }
    };
    match call {
        OperatorCall::ListKeys { .. } if json => {
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        OperatorCall::ListKeys { .. } => print!("{}", list_text(&value)),
        _ => print!(
            "{}",
            super::approve::outcome_text(&value, |r| match r["card"].as_str() {
                Some(card) => format!("Recovered {} onto card {card}\n", r["serials"]),
                None => format!(
                    "Recovered {} to {}; the password is in {}\n",
                    r["serials"],
                    r["pkcs12"].as_str().unwrap_or(""),
                    r["passwordFile"].as_str().unwrap_or("")
                ),
            })
        ),
    }
    Ok(ExitCode::from(EXIT_OK))
}

fn list_text(v: &serde_json::Value) -> String {
    use std::fmt::Write;
    let rows = v.as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        return "No archived keys.\n".into();
    }
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let mut out = format!(
        "{:<16} {:<16} {:<4} {:<34} {:<26} {}\n",
        "USER", "TEMPLATE", "SLOT", "SERIAL", "NOT AFTER", "ARCHIVED"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<16} {:<16} {:<4} {:<34} {:<26} {}",
            s(&r["user"]),
            s(&r["template"]),
            s(&r["slot"]),
            s(&r["serial"]),
            s(&r["notAfter"]),
            s(&r["archivedAt"])
        );
    }
    out
}
