//! `keyfleet apply`: recover interrupted work, plan, confirm, and carry the plan out.
//!
//! Exit codes: 0 everything runnable was done (actions waiting for an absent card stay
//! pending), 1 an action failed, the plan was refused by the safety valve, or the operator
//! declined.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};

use super::plan::{plan_text, targets};
use super::{EXIT_FAILURE, EXIT_OK, GlobalArgs};
use crate::apply::{self, ApplySink, Context, CrashPoint, Outcome};
use crate::plan::Action;
use crate::runtime;
use crate::store::Store;

/// Arguments of `keyfleet apply`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    long_about = "Converge: finish any work a crash interrupted (from the journal), \
then plan as `keyfleet plan` does, show the plan, ask for confirmation (skip with --yes) and \
apply it. Actions waiting for an absent card stay pending; `keyfleet plan` lists them.\n\n\
A plan that revokes the credentials of more users than the safety limits allow is refused \
unless --allow-mass-revocation is given.\n\n\
Exit codes: 0 done (pending card actions do not count as failures), 1 failure or refusal."
)]
pub struct Args {
    /// Apply without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Limit the run to some users, e.g. `--target user=alice` (repeatable).
    #[arg(long, value_name = "user=UID")]
    pub target: Vec<String>,
    /// Allow a plan that revokes more than the safety limits.
    #[arg(long)]
    pub allow_mass_revocation: bool,
    /// Name recorded in the history as the one who applied (default: the OS user).
    #[arg(long, value_name = "NAME", env = "KEYFLEET_OPERATOR")]
    pub operator: Option<String>,
}

struct Progress {
    bar: Option<ProgressBar>,
}

impl ApplySink for Progress {
    fn started(&mut self, action: &Action) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{} {}", action.kind.as_str(), action.user));
        }
    }

    fn finished(&mut self, action: &Action, outcome: &Outcome) {
        let line = match outcome {
            Outcome::Done(serials) if serials.is_empty() => {
                format!("  done    {} {}", action.kind.as_str(), action.user)
            }
            Outcome::Done(serials) => format!(
                "  done    {} {} ({})",
                action.kind.as_str(),
                action.user,
                serials.join(", ")
            ),
            Outcome::Failed(e) => {
                format!("  FAILED  {} {}: {e}", action.kind.as_str(), action.user)
            }
            Outcome::Skipped(why) => {
                format!("  pending {} {}: {why}", action.kind.as_str(), action.user)
            }
        };
        match &self.bar {
            Some(bar) => {
                bar.println(line);
                bar.inc(1);
            }
            None => println!("{line}"),
        }
    }
}

fn os_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_string())
}

/// Runs `keyfleet apply`.
pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let targets = targets(&args.target)?;
    let env = match runtime::load(&global.policy_dir, global.state_dir.as_deref()) {
        Ok(env) => env,
        Err(runtime::PassError::Policy(d)) => {
            eprintln!("{d}");
            return Ok(ExitCode::from(EXIT_FAILURE));
        }
        Err(e) => return Err(e.into()),
    };
    // One writer per state directory: refuse (naming the holder) while `run` or another
    // `apply` holds it.
    let _lock = crate::controller::lock::StateLock::acquire(&env.state_dir, "apply")?;
    let store = Store::open(&env.state_dir)?;
    let master = runtime::master_key(&env.state_dir)?;
    let now = time::OffsetDateTime::now_utc();
    let cas = runtime::connect_authorities(&env.policy, &env.state_dir, &master, now);
    let cards = runtime::virtual_cards(&env.state_dir);
    let clock = time::OffsetDateTime::now_utc;

    // Recovery first, with the desired state of this policy (needed to return cards to stock).
    let pre = runtime::plan_pass(&env, store.inventory()?, &cards, now, false, None)?;
    let ctx = Context {
        store: &store,
        master: &master,
        cas: &cas,
        cards: &cards,
        desired: &pre.desired,
        clock: &clock,
        actor: args.operator.clone().unwrap_or_else(os_user),
        pin_mailer_dir: env.state_dir.join("pin-mailer"),
        crash: CrashPoint::from_env(),
    };
    let recovered = apply::recover(&ctx)?;
    if recovered.finished + recovered.abandoned > 0 {
        println!(
            "Recovery: {} interrupted step(s) finished, {} abandoned, {} certificate(s) recorded from the CA.",
            recovered.finished,
            recovered.abandoned,
            recovered.recovered_certificates.len()
        );
    }
    for u in &recovered.unresolved {
        eprintln!("Recovery could not finish: {u}");
    }

    let pass = runtime::plan_pass(
        &env,
        store.inventory()?,
        &cards,
        time::OffsetDateTime::now_utc(),
        args.allow_mass_revocation,
        targets,
    )?;
    print!("{}", plan_text(&pass.plan));
    if pass.plan.refused() {
        eprintln!("Refusing to apply: the safety valve tripped (see above).");
        return Ok(ExitCode::from(EXIT_FAILURE));
    }
    let runnable = pass.plan.runnable().count();
    if runnable == 0 {
        return Ok(ExitCode::from(EXIT_OK));
    }
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            eprintln!("Not applying: standard input is not a terminal; pass --yes to apply.");
            return Ok(ExitCode::from(EXIT_FAILURE));
        }
        print!("Apply {runnable} action(s)? [y/N] ");
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("Not applied.");
            return Ok(ExitCode::from(EXIT_FAILURE));
        }
    }
    let ctx = Context {
        desired: &pass.desired,
        ..ctx
    };
    let bar = (pass.plan.actions.len() > 3 && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(pass.plan.actions.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let mut sink = Progress { bar };
    let report = apply::apply(&ctx, &pass.plan, &mut sink);
    if let Some(bar) = &sink.bar {
        bar.finish_and_clear();
    }
    println!(
        "Applied: {} done, {} failed, {} pending.",
        report.done,
        report.failed.len(),
        report.skipped.len()
    );
    Ok(ExitCode::from(if report.failed.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILURE
    }))
}
