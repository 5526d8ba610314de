//! `keyfleet requests list|show|approve|deny`: operations waiting for approval.
//!
//! Exit codes: 0 done, 1 refused or failed (the message names the reason and its code).

use std::process::ExitCode;

use super::operator::Refusal;
use super::remote::RemoteArgs;
use super::{EXIT_FAILURE, EXIT_OK, GlobalArgs};
use crate::statedir::control::OperatorCall;

/// Long help of `keyfleet requests`.
pub const LONG_ABOUT: &str = "Operations listed in Settings.spec.approvals (e.g. unblock, \
approve-mass-revocation) become requests when an operator asks for them: they need that many \
approvals from distinct holders of the `approve` permission (within their template scope), \
none of them the requester or the user the request is about, before they run, once. One denial \
ends a request; one not approved within Settings.spec.approvalTimeout (default 24h) expires.\n\n\
With --server URL and an identity the requests of that controller are used through its API; \
otherwise those of this machine (through the running controller's control socket, as your Unix \
user, or directly as the state directory's owner).\n\nStates: pending, approved, denied, expired, \
done, failed.\n\nExit codes: 0 done, 1 refused or \
failed.";

/// Arguments of `keyfleet requests`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: RequestsCommand,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table for people.
    Text,
    /// JSON for scripts.
    Json,
}

/// `keyfleet requests` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum RequestsCommand {
    /// The requests you may see (yours, those you may approve; all with manage-requests).
    List {
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// A remote controller (`--server`) and your identity.
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// One request.
    Show {
        /// The request id.
        id: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// A remote controller (`--server`) and your identity.
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Approve a request; with its last approval it runs.
    Approve {
        /// The request id.
        id: String,
        /// A comment recorded with the approval.
        #[arg(long)]
        comment: Option<String>,
        /// A remote controller (`--server`) and your identity.
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Deny a request, which ends it.
    Deny {
        /// The request id.
        id: String,
        /// A comment recorded with the denial.
        #[arg(long)]
        comment: Option<String>,
        /// A remote controller (`--server`) and your identity.
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

/// Runs `keyfleet requests`.
pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let (call, format, remote) = match &args.command {
        RequestsCommand::List { format, remote } => (OperatorCall::ListRequests, *format, remote),
        RequestsCommand::Show { id, format, remote } => (
            OperatorCall::ShowRequest { id: id.clone() },
            *format,
            remote,
        ),
        RequestsCommand::Approve {
            id,
            comment,
            remote,
        } => (
            OperatorCall::ApproveRequest {
                id: id.clone(),
                comment: comment.clone(),
            },
            Format::Text,
            remote,
        ),
        RequestsCommand::Deny {
            id,
            comment,
            remote,
        } => (
            OperatorCall::DenyRequest {
                id: id.clone(),
                comment: comment.clone(),
            },
            Format::Text,
            remote,
        ),
    };
    let Some(answer) = super::operator::call(global, remote, &call)? else {
        return Ok(ExitCode::from(EXIT_FAILURE));
    };
    match answer {
        Err(refusal) => refused(&refusal),
        Ok(value) => {
            match (&args.command, format) {
                (_, Format::Json) => println!("{}", serde_json::to_string_pretty(&value)?),
                (RequestsCommand::List { .. }, Format::Text) => print!("{}", table(&value)),
                _ => print!("{}", one(&value)),
            }
            Ok(ExitCode::from(EXIT_OK))
        }
    }
}

/// Prints a refusal; exit 1.
pub fn refused(r: &Refusal) -> anyhow::Result<ExitCode> {
    eprintln!("refused: {r}");
    Ok(ExitCode::from(EXIT_FAILURE))
}

fn s<'a>(v: &'a serde_json::Value, k: &str) -> &'a str {
    v.get(k).and_then(|x| x.as_str()).unwrap_or("")
}

fn approvals(v: &serde_json::Value) -> String {
    let names: Vec<&str> = v
        .get("approvals")
        .and_then(|a| a.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    format!(
        "{}/{}{}",
        names.len(),
        v.get("required").and_then(|r| r.as_u64()).unwrap_or(0),
        if names.is_empty() {
            String::new()
        } else {
            format!(" ({})", names.join(", "))
        }
    )
}

fn table(v: &serde_json::Value) -> String {
    use std::fmt::Write;
    let rows = v.as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        return "No requests.\n".into();
    }
    let mut out = format!(
        "{:<10} {:<24} {:<28} {:<16} {:<9} {}\n",
        "ID", "KIND", "TARGET", "REQUESTER", "STATE", "APPROVALS"
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "{:<10} {:<24} {:<28} {:<16} {:<9} {}",
            s(r, "id"),
            s(r, "kind"),
            s(r, "target"),
            s(r, "requester"),
            s(r, "state"),
            approvals(r)
        );
    }
    out
}

/// One request as text.
pub fn one(r: &serde_json::Value) -> String {
    let mut out = format!(
        "Request {}: {} {} — {}\n  requested by {} at {}: {}\n  approvals {}; expires {}\n",
        s(r, "id"),
        s(r, "kind"),
        s(r, "target"),
        s(r, "state"),
        s(r, "requester"),
        s(r, "created"),
        s(r, "reason"),
        approvals(r),
        s(r, "expires"),
    );
    if let Some(by) = r.get("deniedBy").and_then(|b| b.as_str()) {
        out.push_str(&format!("  denied by {by}\n"));
    }
    if let Some(o) = r.get("outcome") {
        out.push_str(&format!("  outcome {o}\n"));
    }
    out
}
