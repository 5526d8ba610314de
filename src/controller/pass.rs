//! One controller pass, blocking (the loop runs it on tokio's blocking pool): observe (reusing
//! a directory snapshot whose data did not change), recover interrupted work when needed, plan
//! with `runtime`, take out what the safety valve holds and what is in backoff, then apply the
//! rest action by action with `apply`, stopping between two actions when shutdown is asked;
//! then bring the published CRLs up to date (`apply::crl`), even when the pass failed.
//!
//! It reuses exactly the planner and executors `keyfleet apply` uses and never calls the CLI.
//! It decides no policy of its own beyond the valve and backoff filters.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::backoff::{Backoff, ErrorClass, Failure};
use super::valve;
use crate::apply::{self, Context, CrashPoint, NoSink, RecoveryReport};
use crate::desired::{Desired, DirectoryObservation};
use crate::inventory::Inventory;
use crate::observe::directory::{parse_file_directory, read_directory_text};
use crate::plan::{ActionKind, Plan, renew_at};
use crate::policy::model::DirectorySpec;
use crate::runtime::{self, Environment};
use crate::secrets::MasterKey;
use crate::statedir::status::{HeldRevocation, PassSummary, PendingAction};
use crate::store::Store;

/// Directory snapshots kept between passes, with the fingerprint of the data each came from.
#[derive(Default)]
pub struct ObservationCache {
    fingerprints: BTreeMap<String, Option<[u8; 32]>>,
    observed: BTreeMap<String, DirectoryObservation>,
    /// LDAP directories whose change token moved (or that a resync wants re-read).
    stale: BTreeSet<String>,
}

impl ObservationCache {
    /// Fingerprint of a file directory's data (`None`: unreadable, or not a file directory).
    /// A data file that is part of the policy set has the fingerprint of the text read with
    /// the set: it changes only with a successful policy reload.
    pub fn fingerprint(env: &Environment, name: &str) -> Option<[u8; 32]> {
        if let Some(pinned) = env.policy_data.text(name) {
            return pinned.ok().map(|(_, fp)| fp);
        }
        let d = env.policy.directories.get(name)?;
        let DirectorySpec::File(f) = &d.spec else {
            return None;
        };
        // Streamed: checking a 10 MiB directory for a change needs no 10 MiB buffer.
        use std::io::Read;
        let mut file = std::fs::File::open(d.resolve_path(&f.path)).ok()?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => hasher.update(buf.get(..n)?),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        Some(hasher.finalize().into())
    }

    /// Whether the last snapshot of an LDAP directory can serve this pass: complete, and no
    /// change seen by its poller since.
    fn ldap_reusable(&self, env: &Environment, name: &str) -> bool {
        env.policy
            .directories
            .get(name)
            .is_some_and(|d| matches!(d.spec, DirectorySpec::Ldap(_)))
            && !self.stale.contains(name)
            && matches!(self.observed.get(name), Some(Ok(s)) if s.complete)
    }

    /// Marks an LDAP directory for re-observation (its poller saw the change token move).
    pub fn invalidate(&mut self, name: &str) {
        self.stale.insert(name.to_string());
    }

    /// The snapshot of the directory whose groups roles name (`Settings.spec.operators.
    /// directory`, or the only directory), if the last observation of it succeeded.
    pub fn operator_snapshot(
        &self,
        policy: &crate::policy::PolicySet,
    ) -> Option<&crate::observe::snapshot::DirectorySnapshot> {
        let name = match &policy.settings.spec.operators.directory {
            Some(d) => d.clone(),
            None if policy.directories.len() == 1 => policy.directories.keys().next()?.clone(),
            None => return None,
        };
        self.observed.get(&name)?.as_ref().ok()
    }

    /// Marks every directory for re-observation.
    pub fn invalidate_all(&mut self) {
        self.stale.extend(self.observed.keys().cloned());
        self.fingerprints.clear();
    }

    /// Whether the data of directory `name` differs from what the last pass observed.
    pub fn changed(&self, env: &Environment, name: &str) -> bool {
        if self.ldap_reusable(env, name) {
            return false;
        }
        let unchanged = matches!(
            (self.fingerprints.get(name), self.observed.get(name)),
            (Some(Some(before)), Some(Ok(_))) if Self::fingerprint(env, name).as_ref() == Some(before)
        );
        !unchanged
    }

    /// Observes every directory, reusing a file directory's snapshot when its data is
    /// unchanged and an LDAP directory's when its poller saw no change (no copy is made: the
    /// snapshots live here).
    pub fn observe(&mut self, env: &Environment) -> &BTreeMap<String, DirectoryObservation> {
        let mut fingerprints = BTreeMap::new();
        let mut observed = BTreeMap::new();
        for (name, d) in &env.policy.directories {
            let ldap_reusable = self.ldap_reusable(env, name);
            let old = self.observed.remove(name);
            // Whatever is not reused is dropped before the new snapshot is built: holding both
            // doubles the peak memory of a pass over a large directory.
            let (fp, obs) = match &d.spec {
                DirectorySpec::Ldap(_) => match old {
                    Some(old) if ldap_reusable => (None, old),
                    stale => {
                        drop(stale);
                        (None, runtime::observe_directory(&env.policy, name, d))
                    }
                },
                // Read once: the fingerprint is that of the very text parsed, and an unchanged
                // text keeps the snapshot it gave last time. A data file that is part of the
                // policy set is not read here: its text is the one read with the set.
                DirectorySpec::File(f) => {
                    let path = d.resolve_path(&f.path);
                    let read = match env.policy_data.text(name) {
                        Some(pinned) => pinned.map(|(text, fp)| (Cow::Borrowed(text), fp)),
                        None => read_directory_text(&path)
                            .map(|text| {
                                let fp: [u8; 32] = Sha256::digest(text.as_bytes()).into();
                                (Cow::Owned(text), fp)
                            })
                            .map_err(|e| e.to_string()),
                    };
                    match read {
                        Err(e) => (None, Err(e)),
                        Ok((text, fp)) => match old {
                            Some(Ok(old)) if self.fingerprints.get(name) == Some(&Some(fp)) => {
                                (Some(fp), Ok(old))
                            }
                            stale => {
                                drop(stale);
                                let parsed = parse_file_directory(&path, &text);
                                (Some(fp), parsed.map_err(|e| e.to_string()))
                            }
                        },
                    }
                }
            };
            if let Ok(snapshot) = &obs {
                tracing::debug!(
                    directory = %name,
                    users = snapshot.users.len(),
                    groups = snapshot.groups.len(),
                    heap_bytes = snapshot.heap_bytes(),
                    "directory snapshot held"
                );
            }
            fingerprints.insert(name.clone(), fp);
            observed.insert(name.clone(), obs);
        }
        self.fingerprints = fingerprints;
        self.observed = observed;
        self.stale.clear();
        &self.observed
    }

    /// Forgets everything (the policy changed).
    pub fn clear(&mut self) {
        self.fingerprints.clear();
        self.observed.clear();
        self.stale.clear();
    }
}

/// What a pass works with; kept by the controller between passes.
pub struct PassState {
    /// The policy in force (the last valid one).
    pub env: Arc<Environment>,
    /// The store, shared with the control socket.
    pub store: Arc<Store>,
    /// The master key.
    pub master: Arc<MasterKey>,
    /// The audit log every applied action is written to.
    pub audit: Arc<crate::audit::AuditLog>,
    /// Objects in backoff.
    pub backoff: Backoff,
    /// Directory snapshots.
    pub cache: ObservationCache,
    /// Local CAs kept open between passes.
    pub authorities: runtime::AuthorityCache,
    /// The inventory the last pass ended with, and the store generation it reflects.
    pub inventory: Option<(u64, Inventory)>,
    /// Run recovery before the next plan.
    pub needs_recovery: bool,
    /// Name recorded in the history.
    pub actor: String,
    /// Set when the controller shuts down: the pass stops between two actions.
    pub stop: Arc<AtomicBool>,
    /// Serialises changes to the approvals file.
    pub approvals_lock: Arc<Mutex<()>>,
    /// Where the pass publishes the revocations it holds (read by `approve` and `status`).
    pub held: Arc<Mutex<Vec<HeldRevocation>>>,
    /// The state directory.
    pub state_dir: PathBuf,
}

/// What a pass did.
#[derive(Debug, Default)]
pub struct PassOutcome {
    /// Summary for status.
    pub summary: PassSummary,
    /// Actions waiting for a card.
    pub pending: Vec<PendingAction>,
    /// Revocations the valve holds.
    pub held: Vec<HeldRevocation>,
    /// (kind, outcome) -> count.
    pub counts: BTreeMap<(String, String), u64>,
    /// Directories observed successfully (names).
    pub observed_ok: Vec<String>,
    /// Live certificates expiring within 30 days.
    pub expiring_30d: i64,
    /// The next renewal point of a live certificate, if any is in the future.
    pub next_renewal: Option<OffsetDateTime>,
    /// Recovery, when it ran.
    pub recovery: Option<RecoveryReport>,
    /// The pass stopped early for shutdown.
    pub interrupted: bool,
    /// Approvals changed (for the log).
    pub approvals_used: usize,
    /// CRL publication, one entry per local CA with `crlPublish` (empty when the pass was
    /// stopped for shutdown: the next start publishes).
    pub crl: Vec<crate::apply::crl::CrlStatus>,
    /// The plan as `keyfleet plan` would show it (before the valve held anything).
    pub plan: Option<Arc<crate::plan::Plan>>,
}

/// Runs one pass. Never panics on bad input; a failure to prepare the pass is reported in
/// `summary.error`.
pub fn run_pass(state: &mut PassState, number: u64, triggers: Vec<String>) -> PassOutcome {
    let started = OffsetDateTime::now_utc();
    let clock_start = std::time::Instant::now();
    let (apdus_before, card_io_before) = crate::card::pcsc::transport_stats();
    // Nothing is held until this pass has split its plan: a pass that fails before that must
    // not leave the previous pass's list for `approve` to approve.
    if let Ok(mut published) = state.held.lock() {
        published.clear();
    }
    let ca_before = crate::apply::ca_time();
    let mut out = PassOutcome {
        summary: PassSummary {
            number,
            started_at: Some(started),
            triggers,
            ..PassSummary::default()
        },
        ..PassOutcome::default()
    };
    let env = state.env.clone();
    let cas = runtime::connect_authorities_cached(
        &env.policy,
        &env.state_dir,
        &state.master,
        started,
        &mut state.authorities,
    );
    let authorities_us = clock_start.elapsed().as_micros();
    if let Err(e) = pass_inner(state, &cas, started, &mut out) {
        out.summary.error = Some(e);
    }
    let publish = std::time::Instant::now();
    // Even after a failed pass: the CRLs must stay fresh, and they reflect whatever the CA
    // holds (revocations of this pass, of an earlier one whose publication failed, ...).
    if !state.stop.load(Ordering::SeqCst) {
        out.crl = crate::apply::crl::publish_all(&env.policy, &cas, OffsetDateTime::now_utc());
        out.summary.crl_errors = out
            .crl
            .iter()
            .filter_map(|c| {
                c.error
                    .as_ref()
                    .map(|e| format!("CRL of CA {} to {}: {e}", c.ca, c.path.display()))
            })
            .collect();
    }
    tracing::debug!(
        authorities_us,
        crl_us = publish.elapsed().as_micros(),
        "pass edges"
    );
    let elapsed = clock_start.elapsed();
    out.summary.duration_ms = elapsed.as_millis().min(u64::MAX as u128) as u64;
    out.summary.duration_us = elapsed.as_micros().min(u64::MAX as u128) as u64;
    let (apdus, card_io) = crate::card::pcsc::transport_stats();
    out.summary.apdus = apdus.saturating_sub(apdus_before);
    out.summary.ca_us = crate::apply::ca_time()
        .saturating_sub(ca_before)
        .as_micros()
        .min(u64::MAX as u128) as u64;
    out.summary.card_io_us = card_io
        .saturating_sub(card_io_before)
        .as_micros()
        .min(u64::MAX as u128) as u64;
    out
}

fn pass_inner(
    state: &mut PassState,
    cas: &crate::apply::CaRegistry,
    now: OffsetDateTime,
    out: &mut PassOutcome,
) -> Result<(), String> {
    let env = state.env.clone();
    let store = state.store.clone();
    let master = state.master.clone();
    let phase = std::time::Instant::now();
    let (_, io_before) = crate::card::pcsc::transport_stats();
    let observed = state.cache.observe(&env);
    let observe_ms = phase.elapsed().as_millis();
    out.observed_ok = observed
        .iter()
        .filter(|(_, o)| o.as_ref().is_ok_and(|s| s.complete))
        .map(|(n, _)| n.clone())
        .collect();
    let clock = OffsetDateTime::now_utc;
    // The inventory the last pass ended with, if nothing was written since.
    let mut generation = state.store.inventory_generation();
    let inventory = match state.inventory.take() {
        Some((g, inventory)) if g == generation => inventory,
        _ => state.store.inventory().map_err(|e| e.to_string())?,
    };
    // Virtual cards, PIV cards in readers and PKCS#11 tokens, as `apply` sees them.
    let phase = std::time::Instant::now();
    let cards = runtime::cards(&env, &inventory);
    let cards_us = phase.elapsed().as_micros();
    let phase = std::time::Instant::now();
    let mut pass = runtime::plan_observed(&env, observed, inventory, &cards, now, false, None)
        .map_err(|e| e.to_string())?;
    tracing::debug!(
        observe_ms,
        cards_us,
        plan_ms = phase.elapsed().as_millis(),
        plan_us = phase.elapsed().as_micros(),
        card_io_us = crate::card::pcsc::transport_stats()
            .1
            .saturating_sub(io_before)
            .as_micros(),
        "observed and planned"
    );

    if state.needs_recovery {
        let ctx = context(
            &store,
            &master,
            &state.audit,
            &state.actor,
            &env,
            cas,
            &cards,
            &pass.desired,
            &clock,
        );
        let report = apply::recover(&ctx).map_err(|e| e.to_string())?;
        drop(ctx);
        state.needs_recovery = !report.unresolved.is_empty();
        if report.finished + report.abandoned > 0 {
            generation = state.store.inventory_generation();
            let inventory = state.store.inventory().map_err(|e| e.to_string())?;
            pass = runtime::plan_observed(&env, observed, inventory, &cards, now, false, None)
                .map_err(|e| e.to_string())?;
        }
        out.recovery = Some(report);
    }

    let approvals = valve::load_approvals(&state.state_dir).map_err(|e| e.to_string())?;
    let (plan, held) = valve::hold_revocations(&pass.plan, &approvals);
    out.summary.planned = pass.plan.actions.len();
    out.plan = Some(Arc::new(pass.plan.clone()));
    out.summary.valve_tripped = pass.plan.refused();
    out.summary.complete = pass.plan.complete;
    out.summary.held = held.len();
    for _ in &held {
        bump(out, "revoke", "held");
    }
    if let Ok(mut published) = state.held.lock() {
        published.clone_from(&held);
    }
    out.held = held;

    let ctx = context(
        &store,
        &master,
        &state.audit,
        &state.actor,
        &env,
        cas,
        &cards,
        &pass.desired,
        &clock,
    );
    // In plan order: what waits for a card or is in backoff is only counted; the rest runs,
    // grouped by card (a card's actions stay together and in order).
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group_of: std::collections::HashMap<String, usize> = Default::default();
    for (i, action) in plan.actions.iter().enumerate() {
        let id = action.id();
        let kind = action.kind.as_str();
        if action.waiting_for_card {
            out.summary.waiting_for_card += 1;
            bump(out, kind, "pending");
            out.pending.push(PendingAction {
                id,
                kind: kind.to_string(),
                user: action.user.clone(),
                waiting_for: match &action.card {
                    Some(card) => format!("card {card}"),
                    None => format!(
                        "a blank card of stock {}",
                        action.stock.as_deref().unwrap_or("(none)")
                    ),
                },
            });
            continue;
        }
        if action.waiting_for_holder || action.card_suspect {
            let card = action.card.as_deref().unwrap_or_default();
            let (outcome, waiting_for) = if action.card_suspect {
                ("held", format!("an operator: card {card} is suspect"))
            } else {
                out.summary.waiting_for_holder += 1;
                ("pending", format!("the holder of card {card} (their PIN)"))
            };
            bump(out, kind, outcome);
            out.pending.push(PendingAction {
                id,
                kind: kind.to_string(),
                user: action.user.clone(),
                waiting_for,
            });
            continue;
        }
        if state.backoff.blocks(&id, now) {
            out.summary.in_backoff += 1;
            bump(out, kind, "backoff");
            continue;
        }
        let card_key = action
            .card
            .clone()
            .unwrap_or_else(|| format!("new:{}", action.user));
        match group_of.get(&card_key) {
            Some(g) => groups[*g].push(i),
            None => {
                group_of.insert(card_key, groups.len());
                groups.push(vec![i]);
            }
        }
    }
    let workers = usize::try_from(env.policy.settings.spec.concurrency)
        .unwrap_or(1)
        .clamp(1, groups.len().max(1));
    let applying = std::time::Instant::now();
    let (_, io_before) = crate::card::pcsc::transport_stats();
    let ran = run_groups(&ctx, &plan, &groups, workers, &state.stop);
    out.summary.apply_us = u64::try_from(applying.elapsed().as_micros()).unwrap_or(u64::MAX);
    out.summary.apply_card_io_us = u64::try_from(
        crate::card::pcsc::transport_stats()
            .1
            .saturating_sub(io_before)
            .as_micros(),
    )
    .unwrap_or(u64::MAX);

    let mut done_revocations: BTreeSet<String> = BTreeSet::new();
    let mut changed = false;
    for (action, ran) in plan.actions.iter().zip(ran) {
        let id = action.id();
        let kind = action.kind.as_str();
        let report = match ran {
            Ran::NotRun => continue,
            Ran::Stopped => {
                out.interrupted = true;
                continue;
            }
            Ran::CardFailed => {
                bump(out, kind, "skipped");
                continue;
            }
            Ran::Applied(report) => report,
        };
        if report.done > 0 {
            changed = true;
            out.summary.done += 1;
            bump(out, kind, "done");
            state.backoff.record_success(&id);
            if action.kind == ActionKind::Revoke {
                done_revocations.insert(id);
            }
        } else if let Some((_, error)) = report.failed.first() {
            changed = true;
            out.summary.failed += 1;
            bump(out, kind, "failed");
            let class = if report.permanent.contains(&id) {
                ErrorClass::Permanent
            } else {
                ErrorClass::Transient
            };
            let entry = state.backoff.record_failure(
                Failure {
                    id: &id,
                    kind,
                    user: &action.user,
                    error,
                    class,
                },
                OffsetDateTime::now_utc(),
                rand::random::<f64>(),
            );
            tracing::warn!(
                action = %id,
                user = %action.user,
                attempts = entry.attempts,
                class = ?class,
                retry_at = ?entry.retry_at,
                "action failed: {error}"
            );
        }
    }
    drop(ctx);
    let planned: BTreeSet<String> = plan.actions.iter().map(|a| a.id()).collect();
    state.backoff.retain_planned(&planned);
    prune_approvals(state, &pass.plan, &done_revocations)?;
    out.approvals_used = done_revocations
        .iter()
        .filter(|id| approvals.contains(*id))
        .count();

    let inventory = if changed {
        generation = state.store.inventory_generation();
        state.store.inventory().map_err(|e| e.to_string())?
    } else {
        pass.inventory
    };
    let (expiring, next) = renewal_facts(&pass.desired, &inventory, now);
    out.expiring_30d = expiring;
    out.next_renewal = next;
    out.summary.suspect_cards = inventory
        .facts
        .values()
        .filter(|f| f.suspect.is_some())
        .count();
    // Kept for the next pass, which reads the store again if anything was written since.
    state.inventory = Some((generation, inventory));
    Ok(())
}

/// What became of one action of the plan in [`run_groups`].
enum Ran {
    /// Not given to the executors (waiting for a card, in backoff).
    NotRun,
    /// Applied; the executors' report.
    Applied(apply::ApplyReport),
    /// Not run: an earlier action on the same card failed.
    CardFailed,
    /// Not run: the controller is shutting down.
    Stopped,
}

/// Runs the groups of actions (each a card's actions, in plan order) on up to `workers`
/// threads: the cards are independent, so `Settings.concurrency` of them are worked on at
/// once, while a card's own actions run one after another and stop at its first failure.
/// Returns what became of every action of `plan`, by index. Between two actions each worker
/// checks `stop`, so a shutdown lets only the actions in flight finish.
fn run_groups(
    ctx: &Context<'_>,
    plan: &Plan,
    groups: &[Vec<usize>],
    workers: usize,
    stop: &AtomicBool,
) -> Vec<Ran> {
    let slots: Vec<Mutex<Ran>> = plan
        .actions
        .iter()
        .map(|_| Mutex::new(Ran::NotRun))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        while let Some(group) = groups.get(next.fetch_add(1, Ordering::SeqCst)) {
            let mut card_failed = false;
            for &i in group {
                let (Some(action), Some(slot)) = (plan.actions.get(i), slots.get(i)) else {
                    continue;
                };
                let ran = if card_failed {
                    Ran::CardFailed
                } else if stop.load(Ordering::SeqCst) {
                    Ran::Stopped
                } else {
                    let one = Plan {
                        actions: vec![action.clone()],
                        ..empty_like(plan)
                    };
                    let started = std::time::Instant::now();
                    let (_, io_before) = crate::card::pcsc::transport_stats();
                    let report = apply::apply(ctx, &one, &mut NoSink);
                    // Card time is counted process-wide: exact with one worker.
                    let (_, io_after) = crate::card::pcsc::transport_stats();
                    tracing::debug!(
                        action = %action.id(),
                        us = started.elapsed().as_micros(),
                        card_io_us = io_after.saturating_sub(io_before).as_micros(),
                        "action applied"
                    );
                    card_failed = report.done == 0 && !report.failed.is_empty();
                    Ran::Applied(report)
                };
                if let Ok(mut s) = slot.lock() {
                    *s = ran;
                }
            }
        }
    };
    if workers <= 1 {
        work();
    } else {
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(work);
            }
        });
    }
    slots
        .into_iter()
        .map(|s| s.into_inner().unwrap_or(Ran::NotRun))
        .collect()
}

fn bump(out: &mut PassOutcome, kind: &str, outcome: &str) {
    *out.counts
        .entry((kind.to_string(), outcome.to_string()))
        .or_default() += 1;
}

fn empty_like(plan: &Plan) -> Plan {
    Plan {
        complete: plan.complete,
        actions: Vec::new(),
        safety_valve: plan.safety_valve.clone(),
        conflicts: Vec::new(),
        errors: Vec::new(),
        withheld_revocations: plan.withheld_revocations,
    }
}

#[allow(clippy::too_many_arguments)]
fn context<'a>(
    store: &'a Store,
    master: &'a MasterKey,
    audit: &'a crate::audit::AuditLog,
    actor: &str,
    env: &Environment,
    cas: &'a crate::apply::CaRegistry,
    cards: &'a dyn crate::apply::CardProvider,
    desired: &'a Desired,
    clock: &'a (dyn Fn() -> OffsetDateTime + Sync),
) -> Context<'a> {
    Context {
        store,
        master,
        cas,
        cards,
        desired,
        clock,
        actor: actor.to_string(),
        pin_mailer_dir: env.state_dir.join("pin-mailer"),
        crash: CrashPoint::from_env(),
        audit,
        holder_pins: Default::default(),
        archive: crate::archive::ArchiveKeys::new(&env.policy, &env.state_dir),
    }
}

/// Drops approvals that were used, or that no longer match a planned revocation once the
/// plan is back under the limits.
fn prune_approvals(state: &PassState, plan: &Plan, done: &BTreeSet<String>) -> Result<(), String> {
    let _guard = state.approvals_lock.lock().map_err(|e| e.to_string())?;
    let before = valve::load_approvals(&state.state_dir).map_err(|e| e.to_string())?;
    if before.is_empty() {
        return Ok(());
    }
    let planned: BTreeSet<String> = plan
        .actions
        .iter()
        .filter(|a| a.kind == ActionKind::Revoke)
        .map(|a| a.id())
        .collect();
    let after: BTreeSet<String> = before
        .iter()
        .filter(|id| !done.contains(*id))
        .filter(|id| plan.safety_valve.tripped || planned.contains(*id))
        .cloned()
        .collect();
    if after != before {
        valve::save_approvals(&state.state_dir, &after).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Live certificates expiring within 30 days of `now`, and the next future renewal point of a
/// live certificate the desired state still wants (or the moment a forgotten card becomes
/// lost, when that comes first: the pass that revokes it runs then).
pub fn renewal_facts(
    desired: &Desired,
    inventory: &Inventory,
    now: OffsetDateTime,
) -> (i64, Option<OffsetDateTime>) {
    let horizon = now + time::Duration::days(30);
    let mut expiring = 0;
    let mut next: Option<OffsetDateTime> = None;
    for cert in inventory.certs.values().filter(|c| c.is_live()) {
        if cert.not_after <= horizon {
            expiring += 1;
        }
        let want = desired
            .credential(&cert.user, &cert.template)
            .and_then(|c| c.certificates.get(&cert.slot));
        let point = match want {
            Some(w) => renew_at(cert, w.renew_before_secs),
            None => cert.not_after,
        };
        if point > now {
            next = Some(next.map_or(point, |n| n.min(point)));
        }
    }
    let after = time::Duration::seconds(
        i64::try_from(desired.forgotten_becomes_lost_after_secs).unwrap_or(i64::MAX),
    );
    for facts in inventory.facts.values() {
        if let Some(i) = &facts.incident
            && i.kind == crate::policy::model::IncidentKind::Forgotten
            && let Some(point) = i.at.checked_add(after)
            && point > now
        {
            next = Some(next.map_or(point, |n| n.min(point)));
        }
    }
    (expiring, next)
}

#[cfg(test)]
mod tests;
