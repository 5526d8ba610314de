//! `keyfleet apply`: recover interrupted work, plan, confirm, and carry the plan out.
//!
//! Exit codes: 0 everything runnable was done (actions waiting for an absent card stay
//! pending), 1 an action failed, the plan was refused by the safety valve, the operator
//! declined, or a CRL could not be published (`crate::apply::crl`).

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};

use super::plan::{plan_text, targets};
use super::{EXIT_FAILURE, EXIT_OK, GlobalArgs};
use crate::apply::{self, ApplySink, Context, CrashPoint, Outcome};
use crate::card::pcsc::{CardEvent, CardWatcher};
use crate::plan::Action;
use crate::runtime;
use crate::store::Store;

/// Arguments of `keyfleet apply`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    long_about = "Converge: finish any work a crash interrupted (from the journal), \
then plan as `keyfleet plan` does, show the plan, ask for confirmation (skip with --yes) and \
apply it. Actions waiting for an absent card stay pending; `keyfleet plan` lists them; with \
--wait-for-cards DURATION, apply waits for those cards to be inserted (PC/SC card events) and \
runs their actions as each appears.\n\n\
A plan that revokes the credentials of more users than the safety limits allow is refused \
unless --allow-mass-revocation is given.\n\n\
Afterwards, every local CA with `crlPublish` gets a fresh CRL file when its revocations, \
suspensions or resumptions changed, when none is published yet, or when the published one's \
nextUpdate is within refreshBefore. A CRL that cannot be written is reported and fails the run; \
the revocations stand and the next apply or controller pass publishes them.\n\n\
With PLANFILE (written by `keyfleet plan -out PLANFILE`), apply carries out exactly the saved \
actions after recovery, or refuses, naming what changed (policy, inventory, directory NAME), \
when what the plan was computed from is no longer what it saw (recovery that changed the \
inventory makes the plan stale too). The safety valve and the confirmation apply as for any \
apply.\n\n\
With --holder-pin (at an issuance station, the holders present), apply first asks, on the \
terminal and without echo, `PIN of card ID (holder UID): ` once for each present card whose \
actions wait for the holder (reason holder-pin-unknown), then runs those actions with the PIN \
typed instead of the stored one. An empty answer leaves that card's actions waiting. The PIN \
is never stored, logged, journalled or audited; a PIN the card refuses (or that is not tried \
because a wrong try would leave fewer than 2) fails that card's actions and changes nothing \
Keyfleet knows. Without a terminal, --holder-pin is an error.\n\n\
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
    /// After applying, wait up to DURATION (e.g. `5m`) for the cards that pending actions need
    /// (PC/SC insertions) and apply again as each appears.
    #[arg(long, value_name = "DURATION", conflicts_with = "plan_file")]
    pub wait_for_cards: Option<String>,
    /// A plan saved by `keyfleet plan -out FILE`: apply exactly its actions, or refuse when
    /// the policy, the inventory or a directory changed since it was made.
    #[arg(value_name = "PLANFILE", conflicts_with = "target")]
    pub plan_file: Option<std::path::PathBuf>,
    /// The holders are here: for each present card whose actions wait for its holder (the
    /// PIN Keyfleet holds cannot be used), ask the holder's PIN on the terminal (no echo)
    /// and run those actions with it. The PIN is never stored or logged.
    #[arg(long, conflicts_with = "plan_file")]
    pub holder_pin: bool,
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

/// The OS user: `$USER`, `$LOGNAME`, else the passwd entry of the process's uid.
pub(super) fn os_user() -> String {
    if let Some(u) = ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
    {
        return u;
    }
    use std::os::unix::fs::MetadataExt as _;
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return "unknown".to_string();
    };
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                (f.nth(1)? == uid.to_string()).then(|| name.to_string())
            })
        })
        .unwrap_or_else(|| format!("uid:{uid}"))
}

/// How one pass ended.
pub(super) struct PassOutcome {
    /// Stop with this exit code now (refusal, declined, nothing to do is not a stop).
    pub(super) stop: Option<u8>,
    /// The operator declined the plan (or gave no --yes without a terminal): nothing at all
    /// is written, not even a CRL refresh.
    pub(super) declined: bool,
    /// Actions that failed in this pass.
    pub(super) failed: usize,
    /// Actions left waiting for a card.
    pub(super) pending: usize,
}

/// Runs `keyfleet apply`.
pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    if args.holder_pin && !crate::tty::has_terminal() {
        eprintln!("keyfleet: --holder-pin needs a terminal");
        return Ok(ExitCode::from(EXIT_FAILURE));
    }
    // The PINs the holders typed, asked once per card for the whole run.
    let mut holder_pins = HolderPins::default();
    let targets = targets(&args.target)?;
    let Some(env) = super::load_env(global)? else {
        return Ok(ExitCode::from(EXIT_FAILURE));
    };
    // One writer per state directory: refuse (naming the holder) while `run` or another
    // `apply` holds it.
    let _lock = crate::statedir::lock::StateLock::acquire(&env.state_dir, "apply")?;
    let wait = args
        .wait_for_cards
        .as_deref()
        .map(crate::policy::duration::Duration::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--wait-for-cards: {e}"))?
        .map(|d| std::time::Duration::from_secs(d.as_secs()));
    let store = Store::open(&env.state_dir)?;
    let master = runtime::master_key_for(&env)?;
    // Every action is logged; without the log nothing is done.
    let audit = runtime::audit_log(&env, &master)?;
    let now = time::OffsetDateTime::now_utc();
    let cas = runtime::connect_authorities(&env.policy, &env.state_dir, &master, now);
    let cards = runtime::cards(&env, &store.inventory()?);

    // With --wait-for-cards, watch before the first pass: a card inserted while it runs is
    // then reported by the watcher instead of falling between the pass and the watch.
    let mut watcher = match (wait, cards.pcsc.as_ref().and_then(|p| p.context())) {
        (Some(_), Some(ctx)) => {
            let mut w = CardWatcher::new(ctx.clone());
            let _ = w.wait(std::time::Duration::ZERO)?;
            Some(w)
        }
        _ => None,
    };
    if let Some(file) = &args.plan_file {
        let ctx = super::apply_saved::Connected {
            env: &env,
            store: &store,
            master: &master,
            audit: &audit,
            cas: &cas,
            cards: &cards,
        };
        let outcome = super::apply_saved::run(&ctx, file, &args)?;
        let code = outcome.stop.unwrap_or(if outcome.failed == 0 {
            EXIT_OK
        } else {
            EXIT_FAILURE
        });
        let crl_ok = outcome.declined || publish_crls(&env, &cas);
        return Ok(ExitCode::from(if crl_ok { code } else { EXIT_FAILURE }));
    }
    let mut waited = std::time::Duration::ZERO;
    let mut outcome = one_pass(
        &env,
        &store,
        &master,
        &audit,
        &cas,
        &cards,
        &args,
        targets.clone(),
        &mut holder_pins,
    )?;
    if let Some(code) = outcome.stop {
        let crl_ok = outcome.declined || publish_crls(&env, &cas);
        return Ok(ExitCode::from(if crl_ok { code } else { EXIT_FAILURE }));
    }
    if let Some(wait) = wait
        && outcome.pending > 0
    {
        let deadline = std::time::Instant::now() + wait;
        let Some(watcher) = watcher.as_mut() else {
            eprintln!(
                "Not waiting for cards: PC/SC is unavailable ({}).",
                cards
                    .pcsc
                    .as_ref()
                    .and_then(|p| p.unavailable())
                    .unwrap_or("the policy uses no PIV cards")
            );
            return Ok(ExitCode::from(EXIT_FAILURE));
        };
        println!(
            "Waiting up to {} for {} pending card action(s)...",
            crate::policy::duration::Duration::from_secs(wait.as_secs()),
            outcome.pending
        );
        // Level-triggered fallback: a reader event can be missed (a card pulled and put back
        // between two looks, a driver reporting late), so every few seconds also look at which
        // cards are present and treat a newly present one as an insertion.
        let scan = || {
            cards
                .pcsc
                .as_ref()
                .and_then(|p| crate::apply::CardProvider::present(p).ok())
                .unwrap_or_default()
        };
        let mut last_present = scan();
        let mut last_scan = std::time::Instant::now();
        while outcome.pending > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let t = std::time::Instant::now();
            let events = watcher.wait(left.min(std::time::Duration::from_secs(1)))?;
            waited += t.elapsed();
            let inserted: Vec<&str> = events
                .iter()
                .filter_map(|e| match e {
                    CardEvent::Inserted { reader, .. } => Some(reader.as_str()),
                    _ => None,
                })
                .collect();
            if inserted.is_empty() {
                if last_scan.elapsed() < std::time::Duration::from_secs(3) {
                    continue;
                }
                last_scan = std::time::Instant::now();
                let present = scan();
                let new: Vec<String> = present.difference(&last_present).cloned().collect();
                last_present = present;
                if new.is_empty() {
                    continue;
                }
                println!(
                    "Card inserted: {} (found by a presence check).",
                    new.join(", ")
                );
            } else {
                println!("Card inserted in {}.", inserted.join(", "));
            }
            let next = one_pass(
                &env,
                &store,
                &master,
                &audit,
                &cas,
                &cards,
                &args,
                targets.clone(),
                &mut holder_pins,
            )?;
            if let Some(code) = next.stop {
                let crl_ok = next.declined || publish_crls(&env, &cas);
                return Ok(ExitCode::from(if crl_ok { code } else { EXIT_FAILURE }));
            }
            outcome = PassOutcome {
                stop: None,
                declined: false,
                failed: outcome.failed + next.failed,
                pending: next.pending,
            };
        }
        if outcome.pending > 0 {
            println!(
                "{} card action(s) still pending after waiting {}.",
                outcome.pending,
                crate::policy::duration::Duration::from_secs(wait.as_secs())
            );
        }
    }
    let (apdus, in_pcsc) = crate::card::pcsc::transport_stats();
    if apdus > 0 {
        // Time spent waiting for insertions is neither Keyfleet's work nor the card's.
        let total = started.elapsed().saturating_sub(waited);
        println!(
            "PC/SC: {apdus} APDUs; {:.0} ms in the card and transport of {:.0} ms working ({:.1} % Keyfleet's own work).",
            in_pcsc.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3,
            100.0 * (1.0 - in_pcsc.as_secs_f64() / total.as_secs_f64().max(1e-9))
        );
    }
    // After the passes: the CRLs reflect what they revoked, suspended or resumed (and are
    // refreshed when due). A failure here fails the run but undoes nothing.
    let crl_ok = publish_crls(&env, &cas);
    Ok(ExitCode::from(if outcome.failed == 0 && crl_ok {
        EXIT_OK
    } else {
        EXIT_FAILURE
    }))
}

/// Brings the published CRL of every local CA with `crlPublish` up to date; prints what it
/// did. Returns false when one could not be published.
pub(super) fn publish_crls(env: &runtime::Environment, cas: &apply::CaRegistry) -> bool {
    let mut ok = true;
    for s in apply::crl::publish_all(&env.policy, cas, time::OffsetDateTime::now_utc()) {
        let info = s.current.as_ref().map(|c| {
            format!(
                "CRL number {}, next update {}",
                c.number.map_or_else(|| "-".to_string(), |n| n.to_string()),
                c.next_update
                    .and_then(|t| t
                        .format(&time::format_description::well_known::Rfc3339)
                        .ok())
                    .unwrap_or_else(|| "-".into())
            )
        });
        match (&s.error, &s.published) {
            (Some(e), _) => {
                ok = false;
                eprintln!(
                    "keyfleet: the CRL of CA {} could not be published to {}: {e}. Revocations stand in the CA and the inventory; the next apply or controller pass publishes them.",
                    s.ca,
                    s.path.display()
                );
            }
            (None, Some(reason)) => println!(
                "CRL of CA {} published to {} ({}): {reason}.",
                s.ca,
                s.path.display(),
                info.unwrap_or_default()
            ),
            (None, None) => {}
        }
    }
    ok
}

/// Finishes or abandons the work a crash interrupted (from the journal) and says what it did.
pub(super) fn recover(ctx: &Context<'_>) -> anyhow::Result<()> {
    let recovered = apply::recover(ctx)?;
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
    Ok(())
}

/// Recovery, plan, confirmation and apply, once.
fn one_pass(
    env: &runtime::Environment,
    store: &Store,
    master: &crate::secrets::MasterKey,
    audit: &crate::audit::AuditLog,
    cas: &apply::CaRegistry,
    cards: &apply::Cards,
    args: &Args,
    targets: Option<std::collections::BTreeSet<String>>,
    holder_pins: &mut HolderPins,
) -> anyhow::Result<PassOutcome> {
    let clock = time::OffsetDateTime::now_utc;

    // Recovery first. It needs only what the policy says (the stocks cards return to), so
    // neither the directories nor the readers are read for it.
    let pre = crate::desired::from_policy(&env.policy);
    let mut ctx = Context {
        store,
        master,
        cas,
        cards,
        desired: &pre,
        clock: &clock,
        actor: args.operator.clone().unwrap_or_else(os_user),
        pin_mailer_dir: env.state_dir.join("pin-mailer"),
        crash: CrashPoint::from_env(),
        audit,
        holder_pins: Default::default(),
        archive: crate::archive::ArchiveKeys::new(&env.policy, &env.state_dir),
    };
    recover(&ctx)?;

    let pass = runtime::plan_pass_cards(
        env,
        store.inventory()?,
        cards,
        time::OffsetDateTime::now_utc(),
        args.allow_mass_revocation,
        targets,
    )?;
    print!("{}", plan_text(&pass.plan));
    for e in &pass.desired.observation_errors {
        eprintln!("keyfleet: {e}");
    }
    // Only what waits for a card is worth waiting for here (not the holder, not a suspect card).
    let pending = pass
        .plan
        .actions
        .iter()
        .filter(|a| a.waiting_for_card)
        .count();
    if pass.plan.refused() {
        eprintln!("Refusing to apply: the safety valve tripped (see above).");
        return Ok(PassOutcome {
            stop: Some(EXIT_FAILURE),
            declined: false,
            failed: 0,
            pending,
        });
    }
    if args.holder_pin {
        ask_holder_pins(&pass.plan, holder_pins)?;
        ctx.holder_pins = holder_pins.typed.clone();
    }
    confirm_and_apply(ctx, &pass.desired, &pass.plan, args.yes, pending)
}

/// The PINs holders typed for `--holder-pin`, by card, and the cards already asked.
#[derive(Default)]
struct HolderPins {
    typed: std::collections::BTreeMap<String, zeroize::Zeroizing<String>>,
    asked: std::collections::BTreeSet<String>,
}

/// Asks, before anything is applied, the PIN of every present card with actions waiting for
/// its holder (once per card for the run; an empty answer leaves the card's actions waiting).
fn ask_holder_pins(plan: &crate::plan::Plan, pins: &mut HolderPins) -> anyhow::Result<()> {
    let waiting: std::collections::BTreeMap<&str, &str> = plan
        .actions
        .iter()
        .filter(|a| {
            a.waiting_for_holder
                && !a.waiting_for_card
                && !a.card_suspect
                && a.reason.code == crate::plan::ReasonCode::HolderPinUnknown
        })
        .filter_map(|a| Some((a.card.as_deref()?, a.user.as_str())))
        .collect();
    for (card, user) in waiting {
        if !pins.asked.insert(card.to_string()) {
            continue;
        }
        let pin = crate::tty::ask_secret(&format!("PIN of card {card} (holder {user}): "))
            .map_err(|e| anyhow::anyhow!("cannot read the PIN of card {card}: {e}"))?;
        if pin.is_empty() {
            println!("No PIN typed for card {card}: its actions keep waiting for the holder.");
            continue;
        }
        pins.typed.insert(card.to_string(), pin);
    }
    Ok(())
}

/// Asks for confirmation (unless `yes`), then applies the runnable actions of `plan` with the
/// desired state they were planned from. `ctx` is the recovery context.
pub(super) fn confirm_and_apply(
    ctx: Context<'_>,
    desired: &crate::desired::Desired,
    plan: &crate::plan::Plan,
    yes: bool,
    pending: usize,
) -> anyhow::Result<PassOutcome> {
    let runnable = plan.actions.iter().filter(|a| ctx.runs(a)).count();
    if runnable == 0 {
        return Ok(PassOutcome {
            stop: None,
            declined: false,
            failed: 0,
            pending,
        });
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            eprintln!("Not applying: standard input is not a terminal; pass --yes to apply.");
            return Ok(PassOutcome {
                stop: Some(EXIT_FAILURE),
                declined: true,
                failed: 0,
                pending,
            });
        }
        print!("Apply {runnable} action(s)? [y/N] ");
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("Not applied.");
            return Ok(PassOutcome {
                stop: Some(EXIT_FAILURE),
                declined: true,
                failed: 0,
                pending,
            });
        }
    }
    let ctx = Context { desired, ..ctx };
    let bar = (plan.actions.len() > 3 && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(plan.actions.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let mut sink = Progress { bar };
    let report = apply::apply(&ctx, plan, &mut sink);
    if let Some(bar) = &sink.bar {
        bar.finish_and_clear();
    }
    println!(
        "Applied: {} done, {} failed, {} pending.",
        report.done,
        report.failed.len(),
        report.skipped.len() + report.waiting.len()
    );
    if let Some(e) = &report.audit_failure {
        eprintln!("Stopped: {e}; no action runs without its audit entry.");
        return Ok(PassOutcome {
            stop: Some(EXIT_FAILURE),
            declined: false,
            failed: report.failed.len(),
            pending: report.skipped.len() + report.failed.len(),
        });
    }
    // Failed card actions wait for their card again (it was removed, or will be retried).
    Ok(PassOutcome {
        stop: None,
        declined: false,
        failed: report.failed.len(),
        pending: report.skipped.len() + report.failed.len(),
    })
}
