//! `keyfleet plan`: observe, compute the desired state and print what `apply` would do.
//!
//! Writes nothing: with no state directory yet, the inventory is empty. Exit codes: 0 nothing
//! to do, 2 changes pending (including actions waiting for a card), 1 error.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::Context as _;

use super::{EXIT_FAILURE, EXIT_OK, GlobalArgs};
use crate::plan::{Plan, ReasonCode};
use crate::runtime;

/// Exit code: changes pending.
pub const EXIT_CHANGES: u8 = 2;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table for people.
    Text,
    /// JSON for scripts.
    Json,
    /// Markdown for a merge-request comment: a summary, a table per action kind, the safety
    /// valve and the warnings; folded when long, at most 60,000 characters.
    Markdown,
}

/// Arguments of `keyfleet plan`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    long_about = "Show what `keyfleet apply` would do: observe the directory, cards and \
inventory, compute the desired state and print the plan, each action with its reason.\n\n\
With `-out FILE` (or `--out FILE`) the plan is also saved, with the content hash of the \
policy set, the inventory's generation, the content hash of each directory snapshot and the \
time: `keyfleet apply FILE` applies exactly those actions, or refuses if any of them changed.\n\n\
Exit codes: 0 nothing to do, 2 changes pending (including actions waiting for a card or for \
the holder), 1 error."
)]
pub struct Args {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Limit the plan to some users, e.g. `--target user=alice` (repeatable).
    #[arg(long, value_name = "user=UID")]
    pub target: Vec<String>,
    /// Plan as if the operator allowed revocations over the safety limits.
    #[arg(long)]
    pub allow_mass_revocation: bool,
    /// Also save the plan to FILE (mode 0600), with the hashes of the policy, the inventory
    /// and each directory it was computed from, for `keyfleet apply FILE` (also `-out FILE`).
    #[arg(long, value_name = "FILE")]
    pub out: Option<std::path::PathBuf>,
}

/// The command line with Terraform's single-dash `-out` spelled as clap reads it: every
/// `-out` / `-out=FILE` before a `--` becomes `--out` / `--out=FILE` (no Keyfleet command has
/// the short options `-o`, `-u`, `-t` it would otherwise read as).
pub fn terraform_style_out<I>(args: I) -> Vec<std::ffi::OsString>
where
    I: IntoIterator<Item = std::ffi::OsString>,
{
    let mut out = Vec::new();
    let mut options = true;
    for arg in args {
        if options && arg == "--" {
            options = false;
        }
        let rewritten = match arg.to_str() {
            Some("-out") if options => Some("--out".to_string()),
            Some(s) if options && s.starts_with("-out=") => Some(format!("-{s}")),
            _ => None,
        };
        out.push(rewritten.map_or(arg, Into::into));
    }
    out
}

/// Parses `--target user=UID` values.
pub fn targets(raw: &[String]) -> anyhow::Result<Option<BTreeSet<String>>> {
    if raw.is_empty() {
        return Ok(None);
    }
    raw.iter()
        .map(|t| {
            t.strip_prefix("user=")
                .filter(|u| !u.is_empty())
                .map(str::to_string)
                .with_context(|| format!("--target {t:?}: expected user=UID"))
        })
        .collect::<anyhow::Result<BTreeSet<_>>>()
        .map(Some)
}

pub use crate::plan::json::plan_json;

/// The plan as a table.
pub fn plan_text(plan: &Plan) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if plan.actions.is_empty() {
        out.push_str("No changes: every entitled user holds the credential they should.\n");
    } else {
        let _ = writeln!(
            out,
            "{:<8} {:<16} {:<20} {:<38} {:<6} REASON",
            "ACTION", "USER", "TEMPLATE", "CARD", "SLOTS"
        );
        for a in &plan.actions {
            let slots: Vec<&str> = a.slots.iter().map(|s| s.hex()).collect();
            let card = match (&a.card, &a.stock) {
                (Some(c), _) => c.clone(),
                (None, Some(s)) => format!("(new from {s})"),
                (None, None) => "(none)".to_string(),
            };
            let wait = if a.card_suspect {
                " [held: card suspect]"
            } else if a.waiting_for_holder {
                " [waiting for the holder]"
            } else if a.waiting_for_card {
                " [waiting for card]"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "{:<8} {:<16} {:<20} {:<38} {:<6} {}{}",
                a.kind.as_str(),
                a.user,
                a.template.as_deref().unwrap_or("-"),
                card,
                slots.join(","),
                a.reason.message,
                wait
            );
        }
        let waiting = plan.actions.iter().filter(|a| a.waiting_for_card).count();
        let holder = plan.actions.iter().filter(|a| a.waiting_for_holder).count();
        let suspect = plan.actions.iter().filter(|a| a.card_suspect).count();
        let _ = write!(
            out,
            "\n{} action(s), {} waiting for a card",
            plan.actions.len(),
            waiting
        );
        if holder > 0 {
            let _ = write!(out, ", {holder} waiting for the holder");
        }
        if suspect > 0 {
            let _ = write!(out, ", {suspect} held on a suspect card");
        }
        out.push_str(".\n");
    }
    if let Some(note) = incomplete_observation_note(plan) {
        let _ = writeln!(out, "{note}");
    }
    for c in &plan.conflicts {
        let _ = writeln!(out, "Conflict: {}", c.message);
    }
    for e in &plan.errors {
        let _ = writeln!(
            out,
            "Cannot compute {} / {}: {}",
            e.user, e.template, e.message
        );
    }
    let v = &plan.safety_valve;
    if v.tripped {
        let _ = writeln!(
            out,
            "SAFETY VALVE: the plan revokes the credentials of {} of {} users, over the limits \
({} users / {}%).{}",
            v.revoked_users,
            v.holders,
            v.limits.max_revocations,
            v.limits.max_revocation_percent,
            if v.allowed {
                " Allowed by --allow-mass-revocation."
            } else {
                " apply refuses it unless --allow-mass-revocation is given."
            }
        );
    }
    out
}

/// What `plan` says of an incomplete observation (in text and in Markdown), if it was.
pub fn incomplete_observation_note(plan: &Plan) -> Option<String> {
    if plan.complete {
        return None;
    }
    let mut note = format!(
        "Observation incomplete: no revocation planned ({} withheld).",
        plan.withheld_revocations
    );
    if plan
        .actions
        .iter()
        .any(|a| a.reason.code == ReasonCode::Superseded)
    {
        note.push_str(" Superseded certificates are still revoked: their slots hold newer ones.");
    }
    Some(note)
}

/// Runs `keyfleet plan`.
pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let targets = targets(&args.target)?;
    let Some(env) = super::load_env(global)? else {
        return Ok(ExitCode::from(EXIT_FAILURE));
    };
    // A local CA that exists keeps its subject, key algorithm and validity: say so.
    for w in super::ca_warnings::local_ca_warnings(&env.policy, None, &env.state_dir) {
        eprintln!("keyfleet: {w}");
    }
    let now = time::OffsetDateTime::now_utc();
    // From the store, or through the control socket while the controller holds it.
    let inventory = crate::statedir::control::read_inventory(&env.state_dir)?;
    let cards = runtime::cards(&env, &inventory);
    let observed = runtime::observe_environment(&env);
    let basis = crate::saved_plan::Basis::of(&env, &observed, &inventory);
    let pass = runtime::plan_observed(
        &env,
        &observed,
        inventory,
        &cards,
        now,
        args.allow_mass_revocation,
        targets.clone(),
    )?;
    if let Some(out) = &args.out {
        crate::saved_plan::SavedPlan::new(&pass.plan, basis, now, targets).write(out)?;
        eprintln!(
            "Plan saved to {}; apply exactly these actions with `keyfleet apply {}`.",
            out.display(),
            out.display()
        );
    }
    match args.format {
        Format::Markdown => print!(
            "{}",
            super::markdown::plan_markdown(&pass.plan, &pass.desired.observation_errors)
        ),
        Format::Json => {
            let mut json = plan_json(&pass.plan);
            json["observationErrors"] = serde_json::json!(pass.desired.observation_errors);
            println!("{}", serde_json::to_string_pretty(&json)?)
        }
        Format::Text => print!("{}", plan_text(&pass.plan)),
    }
    for e in &pass.desired.observation_errors {
        eprintln!("keyfleet: {e}");
    }
    // A plan from a failed or incomplete observation is shown (issuance for the users that
    // were seen still counts) but is not "nothing to do".
    Ok(ExitCode::from(if !pass.plan.is_empty() {
        EXIT_CHANGES
    } else if !pass.desired.observation_errors.is_empty() {
        EXIT_FAILURE
    } else {
        EXIT_OK
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser as _;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        let argv = terraform_style_out(args.iter().map(std::ffi::OsString::from));
        match Cli::try_parse_from(argv)?.command {
            Command::Plan(a) => Ok(a),
            other => panic!("not plan: {other:?}"),
        }
    }

    #[test]
    fn out_is_spelled_terraform_style_or_gnu_style() {
        for argv in [
            &["keyfleet", "plan", "-out", "p.json"][..],
            &["keyfleet", "plan", "--out", "p.json"],
            &["keyfleet", "plan", "-out=p.json"],
            &[
                "keyfleet", "-C", "x", "plan", "--format", "markdown", "-out", "p.json",
            ],
        ] {
            let a = parse(argv).unwrap();
            assert_eq!(
                a.out.as_deref(),
                Some(std::path::Path::new("p.json")),
                "{argv:?}"
            );
        }
        assert_eq!(
            parse(&["keyfleet", "plan", "--format", "markdown"])
                .unwrap()
                .format,
            Format::Markdown
        );
        assert!(
            parse(&["keyfleet", "plan", "-out"]).is_err(),
            "FILE is required"
        );
        // After `--` nothing is rewritten.
        let argv = terraform_style_out(["keyfleet", "--", "-out"].map(std::ffi::OsString::from));
        assert_eq!(argv.last().unwrap(), "-out");
    }
}
