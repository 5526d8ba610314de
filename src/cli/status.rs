//! `keyfleet status`: what the running controller is doing: the last pass, pending actions,
//! errors in backoff, held revocations, published CRLs (next refresh) and what it waits for.
//!
//! Exit codes: 0 a controller is running and answered, 3 no controller runs for this state
//! directory (like `systemctl status`), 1 error.

use std::process::ExitCode;

use super::{EXIT_FAILURE, EXIT_OK, GlobalArgs};
use crate::runtime;
use crate::statedir::control::{self, Request, Response};
use crate::statedir::lock::StateLock;
use crate::statedir::status::ControllerStatus;

/// Exit code: no controller is running.
pub const EXIT_NOT_RUNNING: u8 = 3;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Text for people.
    Text,
    /// JSON for scripts.
    Json,
}

/// Arguments of `keyfleet status`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    long_about = "Show what the running controller (`keyfleet run`) is doing: its last pass, \
actions waiting for a card, failed actions in backoff (and permanent failures), revocations \
held by the safety valve, the published CRLs with their next refresh, and what it waits for \
before the next pass.\n\n\
Exit codes: 0 running, 3 no controller is running for this state directory, 1 error."
)]
pub struct Args {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// Runs `keyfleet status`.
pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    // With --state-dir the policy need not be valid: status must work while the controller
    // reports a broken policy.
    let state_dir = match &global.state_dir {
        Some(dir) => dir.clone(),
        None => match runtime::load(&global.policy_dir, None) {
            Ok(env) => env.state_dir,
            Err(runtime::PassError::Policy(d)) => {
                eprintln!("{d}");
                return Ok(ExitCode::from(EXIT_FAILURE));
            }
            Err(e) => return Err(e.into()),
        },
    };
    let running = StateLock::holder(&state_dir).filter(|h| h.role == "run");
    if running.is_none() || !control::socket_path(&state_dir).exists() {
        match args.format {
            Format::Json => println!(
                "{}",
                serde_json::json!({"running": false, "stateDir": state_dir})
            ),
            Format::Text => println!(
                "No controller is running for {} (start one with `keyfleet run`).",
                state_dir.display()
            ),
        }
        return Ok(ExitCode::from(EXIT_NOT_RUNNING));
    }
    let status = match control::request(&state_dir, &Request::Status)? {
        Response::Status { status } => *status,
        other => return Err(control::unexpected(&state_dir, &other).into()),
    };
    match args.format {
        Format::Json => {
            let mut v = serde_json::to_value(&status)?;
            if let Some(obj) = v.as_object_mut() {
                obj.insert("running".into(), serde_json::Value::Bool(true));
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Text => print!("{}", status_text(&status)),
    }
    Ok(ExitCode::from(EXIT_OK))
}

fn time_text(t: Option<time::OffsetDateTime>) -> String {
    t.and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
    .unwrap_or_else(|| "-".into())
}

/// The status as text.
pub fn status_text(s: &ControllerStatus) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Controller pid {} since {}, {}",
        s.pid,
        time_text(s.started_at),
        if s.ready {
            "ready"
        } else {
            "first pass not complete"
        }
    );
    let _ = writeln!(out, "Policy: {}\nState:  {}", s.policy_dir, s.state_dir);
    if let Some(e) = &s.policy_error {
        let _ = writeln!(
            out,
            "\nPOLICY ERROR (the last valid policy stays in force):\n{e}"
        );
    }
    match &s.last_pass {
        None => out.push_str("\nNo pass has finished yet.\n"),
        Some(p) => {
            let _ = writeln!(
                out,
                "\nLast pass #{} at {} ({} ms, triggers: {}): {} planned, {} done, {} failed, \
{} waiting for a card, {} waiting for the holder, {} in backoff, {} held{}{}",
                p.number,
                time_text(p.started_at),
                p.duration_ms,
                p.triggers.join(", "),
                p.planned,
                p.done,
                p.failed,
                p.waiting_for_card,
                p.waiting_for_holder,
                p.in_backoff,
                p.held,
                if p.suspect_cards > 0 {
                    format!("; {} suspect card(s)", p.suspect_cards)
                } else {
                    String::new()
                },
                if p.complete {
                    ""
                } else {
                    " (directory observation incomplete)"
                }
            );
            if let Some(e) = &p.error {
                let _ = writeln!(out, "  error: {e}");
            }
            for e in &p.crl_errors {
                let _ = writeln!(out, "  CRL not published: {e}");
            }
        }
    }
    if !s.pending.is_empty() {
        let _ = writeln!(out, "\nPENDING");
        for a in &s.pending {
            let _ = writeln!(
                out,
                "  {:<8} {:<16} waiting for {}",
                a.kind, a.user, a.waiting_for
            );
        }
    }
    if !s.backoff.is_empty() {
        let _ = writeln!(out, "\nERRORS");
        for b in &s.backoff {
            let when = if b.permanent {
                "permanent: retried after the policy changes".to_string()
            } else {
                format!("retry at {}", time_text(b.retry_at))
            };
            let _ = writeln!(
                out,
                "  {:<8} {:<16} {} attempt(s), {when}: {}",
                b.kind, b.user, b.attempts, b.last_error
            );
        }
    }
    if !s.held.is_empty() {
        let _ = writeln!(
            out,
            "\nSAFETY VALVE: {} revocation(s) held until `keyfleet approve`",
            s.held.len()
        );
        for h in &s.held {
            let _ = writeln!(
                out,
                "  revoke   {:<16} {}",
                h.user,
                h.card.as_deref().unwrap_or("-")
            );
        }
    }
    if !s.crl.is_empty() {
        let _ = writeln!(out, "\nCRLs");
        for c in &s.crl {
            let number = c.number.map_or_else(|| "-".to_string(), |n| n.to_string());
            let _ = writeln!(
                out,
                "  {:<16} {} (number {number}, next update {}), next refresh {}",
                c.ca,
                c.path,
                time_text(c.next_update),
                time_text(c.next_refresh)
            );
            if let Some(e) = &c.error {
                let _ = writeln!(out, "  {:<16} ERROR: {e}", "");
            }
        }
    }
    if !s.sources.is_empty() {
        let _ = writeln!(out, "\nEvent sources:");
        for w in &s.sources {
            let _ = writeln!(out, "  - {w}");
        }
    }
    if !s.waiting_for.is_empty() {
        let _ = writeln!(out, "\nWaiting for:");
        for w in &s.waiting_for {
            let _ = writeln!(out, "  - {w}");
        }
    }
    out
}
