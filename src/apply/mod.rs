//! Executors: carry out a [`Plan`] against cards, CAs and the store, journalling every effect.
//!
//! The executor decides nothing the plan did not say. Each effect is written to the journal as
//! an open intent before it happens and closed after, so that [`recover`] can finish or
//! abandon whatever a crash interrupted before anything new is planned:
//!
//! ```text
//!   issue:  create card ─► bind ─► personalise (mgmt key, PIN, PUK, PIN mailer)
//!           per slot: key on card ─► CSR signed by the card ─► enrol (journal: request id)
//!                     ─► record cert (not installed) ─► write to card ─► installed
//!                     ─► supersede the slot's older certificate at the CA
//!   revoke / suspend / resume: per certificate, CA status change ─► record
//!   retire: wipe (keys replaced, certs deleted, PIN/PUK/mgmt key back to factory) ─► blank
//! ```
//!
//! A certificate the CA signed is recorded before anything else happens, so none is ever left
//! untracked: recovery asks the CA for the result of an open enrolment by its request id.
//!
//! An issuance is pipelined so that the card, the slow part, waits for nothing else: a
//! second thread enrols each slot's CSR and writes the records while the card makes the next
//! slot's key, and the certificates are written to the card once every CSR is made. An
//! installation is only noted in the journal (not flushed before the write): the record, not
//! yet installed, already tells the next plan what to redo.

mod ca_ops;
pub mod cards;
mod certificate;
pub mod crl;
mod error;
mod incidents;
mod issuance;
mod key_history;
mod pin_mailer;
mod recover;
mod recover_key;
mod slot;
mod unblock;

use std::collections::BTreeMap;
use std::path::PathBuf;

use time::OffsetDateTime;

pub use ca_ops::{CaRegistry, ca_time};
pub use cards::{
    CardAccessError, CardProvider, CardSession, Cards, CompositeCards, PcscCards, PivCard, Session,
    TokenCard, TokenStock, Tokens, VirtualCards, pcsc as pcsc_cards, tokens,
};
pub use error::ApplyError;
pub use incidents::retire_found_lost;
pub use pin_mailer::pin_mailer_name;
pub use recover::{RecoveryReport, recover};
pub use recover_key::{Destination, KeyRecovery, recover_key};
pub use unblock::{UnblockReport, release_puk, release_puk_to_mailer, rotate_puk, unblock};

use ca_ops::{ca, ca_status, revoke_all};
use certificate::install;
use issuance::{Beside, issue, issue_slots};

use crate::ca::CaError;
use crate::desired::{Desired, DesiredCredential};
use crate::inventory::{CardRecord, CardStatus};
use crate::plan::{Action, ActionKind, Plan, ReasonCode};
use crate::secrets::MasterKey;
use crate::store::journal::CaOp;
use crate::store::{
    HistoryEntry, HistoryResult, JournalEntry, JournalState, JournalStep, Recorded, Store,
};

/// Factory PIN, PUK of a blank PIV card.
pub const FACTORY_PIN: &str = "123456";
/// Factory PUK of a blank PIV card.
pub const FACTORY_PUK: &str = "12345678";

/// Kills the process (SIGKILL, like a crash or `kill -9`) right after the N-th journal write
/// when `KEYFLEET_CRASH_AFTER_STEP` is set: crash tests use it to interrupt an apply between
/// any two journal steps.
#[derive(Debug, Default)]
pub struct CrashPoint {
    after: Option<u64>,
    count: std::sync::atomic::AtomicU64,
}

impl CrashPoint {
    /// Reads `KEYFLEET_CRASH_AFTER_STEP`.
    pub fn from_env() -> Self {
        CrashPoint {
            after: std::env::var("KEYFLEET_CRASH_AFTER_STEP")
                .ok()
                .and_then(|v| v.parse().ok()),
            count: Default::default(),
        }
    }

    fn tick(&self) {
        let n = self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if self.after == Some(n) {
            eprintln!("keyfleet: KEYFLEET_CRASH_AFTER_STEP={n} reached, exiting");
            // A crash: the process is killed here, whatever its other threads are doing.
            // `std::process::exit` would run atexit handlers and library destructors while
            // the thread beside the card still uses them, which sometimes ended the process
            // by a signal and sometimes by the exit code.
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::KILL,
            );
            // Not reached: SIGKILL cannot be caught.
            std::process::abort();
        }
    }
}

/// Everything the executors work with.
pub struct Context<'a> {
    /// The store.
    pub store: &'a Store,
    /// Master key for sealed secrets.
    pub master: &'a MasterKey,
    /// Certificate authorities.
    pub cas: &'a CaRegistry,
    /// Card access.
    pub cards: &'a dyn CardProvider,
    /// The desired state the plan was made from.
    pub desired: &'a Desired,
    /// The clock.
    pub clock: &'a (dyn Fn() -> OffsetDateTime + Sync),
    /// Who applies (recorded in the history).
    pub actor: String,
    /// Where PIN mailer files go.
    pub pin_mailer_dir: PathBuf,
    /// Crash injection for tests.
    pub crash: CrashPoint,
    /// The audit log: every action is logged before it starts and when it ends; an action
    /// whose entry cannot be written does not run (fail closed).
    pub audit: &'a crate::audit::AuditLog,
    /// The archive key, for keys of `archive: true` slots (loaded when first needed).
    pub archive: crate::archive::ArchiveKeys,
    /// PINs the holders typed for this apply only (`keyfleet apply --holder-pin`), by card:
    /// the actions of such a card that wait for the holder run, with this PIN instead of the
    /// stored one. Never stored, logged, journalled or audited; empty everywhere else.
    pub holder_pins: BTreeMap<String, zeroize::Zeroizing<String>>,
}

impl Context<'_> {
    /// The holder's PIN `action` runs with: only for an action that waits for the holder
    /// alone (its card present, not suspect) and whose card's holder typed a PIN.
    pub fn holder_pin_for(&self, action: &Action) -> Option<&str> {
        if !action.waiting_for_holder || action.waiting_for_card || action.card_suspect {
            return None;
        }
        self.holder_pins
            .get(action.card.as_deref()?)
            .map(|p| p.as_str())
    }

    /// Whether `action` runs in this apply: runnable, or waiting only for a holder who typed
    /// the PIN.
    pub fn runs(&self, action: &Action) -> bool {
        action.runnable() || self.holder_pin_for(action).is_some()
    }
}

/// How one action ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done; the certificates created or changed.
    Done(Vec<String>),
    /// Failed with this error.
    Failed(String),
    /// Not run: waiting for a card, or skipped after an earlier failure on the same card.
    Skipped(String),
}

/// Receives progress; the CLI renders it.
pub trait ApplySink {
    /// An action starts.
    fn started(&mut self, action: &Action);
    /// An action ended.
    fn finished(&mut self, action: &Action, outcome: &Outcome);
}

/// A sink that ignores everything.
pub struct NoSink;

impl ApplySink for NoSink {
    fn started(&mut self, _: &Action) {}
    fn finished(&mut self, _: &Action, _: &Outcome) {}
}

/// The result of applying a plan.
#[derive(Debug, Default, Clone)]
pub struct ApplyReport {
    /// Actions done.
    pub done: usize,
    /// Actions that failed, with the error.
    pub failed: Vec<(Action, String)>,
    /// Actions not run (waiting for a card, or after a failure on the same card).
    pub skipped: Vec<(Action, String)>,
    /// Actions not run because they wait for the holder (their PIN is unknown) or their
    /// card is suspect: pending, not failed, and no card to wait for.
    pub waiting: Vec<(Action, String)>,
    /// Ids of the failed actions whose error is permanent: retrying cannot help until the
    /// policy or the world changes (see [`ApplyError::is_permanent`]).
    pub permanent: std::collections::BTreeSet<String>,
    /// Why the audit log could not be written, if it could not: the action concerned failed
    /// and no later action ran (fail closed).
    pub audit_failure: Option<String>,
}

/// Applies every runnable action of `plan`, in order. A failure is recorded and the remaining
/// actions of the same card are skipped; other cards proceed.
pub fn apply(ctx: &Context<'_>, plan: &Plan, sink: &mut dyn ApplySink) -> ApplyReport {
    let mut report = ApplyReport::default();
    let mut failed_cards: Vec<String> = Vec::new();
    let mut created: BTreeMap<String, String> = BTreeMap::new();
    for action in &plan.actions {
        if !ctx.runs(action) {
            let (why, list) = if action.card_suspect {
                ("held: the card is suspect", &mut report.waiting)
            } else if action.waiting_for_holder {
                ("waiting for the holder", &mut report.waiting)
            } else {
                ("waiting for the card", &mut report.skipped)
            };
            sink.finished(action, &Outcome::Skipped(why.to_string()));
            list.push((action.clone(), why.to_string()));
            continue;
        }
        let card_key = action.card.clone().unwrap_or_else(|| {
            format!(
                "new:{}:{}",
                action.user,
                action.template.clone().unwrap_or_default()
            )
        });
        if failed_cards.contains(&card_key) {
            let why = "an earlier action on this card failed".to_string();
            sink.finished(action, &Outcome::Skipped(why.clone()));
            report.skipped.push((action.clone(), why));
            continue;
        }
        if report.audit_failure.is_some() {
            let why = "not run: the audit log cannot be written".to_string();
            sink.finished(action, &Outcome::Skipped(why.clone()));
            report.skipped.push((action.clone(), why));
            continue;
        }
        sink.started(action);
        // Logged before it starts: an action whose entry cannot be written does not run.
        if let Err(e) = audit_action(ctx, action, None) {
            let e = ApplyError::from(e);
            tracing::error!("{}: not run: {e}", action.id());
            report.audit_failure = Some(e.to_string());
            sink.finished(action, &Outcome::Failed(e.to_string()));
            report.failed.push((action.clone(), e.to_string()));
            continue;
        }
        let mut result = run_action(ctx, action, &mut created);
        let mut outcome = match &result {
            Ok(serials) => Outcome::Done(serials.clone()),
            Err(e) => Outcome::Failed(e.to_string()),
        };
        let (result_kind, message, serials) = match &result {
            Ok(s) => (HistoryResult::Ok, None, s.clone()),
            Err(e) => (
                HistoryResult::Failed,
                Some(e.to_string()),
                action.serials.clone(),
            ),
        };
        let history = HistoryEntry {
            at: (ctx.clock)(),
            actor: ctx.actor.clone(),
            kind: action.kind,
            user: action.user.clone(),
            template: action.template.clone(),
            card: action
                .card
                .clone()
                .or_else(|| created.get(&card_key).cloned()),
            slots: action.slots.clone(),
            serials,
            reason: action.reason.clone(),
            result: result_kind,
            message,
        };
        if let Err(e) = ctx.store.append_history(&history) {
            tracing::error!("cannot record history: {e}");
        }
        // The action's records, journal closings and history become durable together, in
        // one flush at its end (its intents were flushed before their effects). If that
        // fails, the action is not reported done: recovery finishes it from its intents.
        if let Err(e) = ctx.store.sync() {
            tracing::error!("cannot make the records of {} durable: {e}", action.id());
            if result.is_ok() {
                let e = ApplyError::from(e);
                outcome = Outcome::Failed(e.to_string());
                result = Err(e);
            }
        }
        // Logged when it ends; if that fails, it is not reported done and nothing more runs.
        if let Err(e) = audit_action(ctx, action, Some(&result)) {
            let e = ApplyError::from(e);
            tracing::error!("{}: {e}", action.id());
            report.audit_failure = Some(e.to_string());
            if result.is_ok() {
                outcome = Outcome::Failed(e.to_string());
                result = Err(e);
            }
        }
        // What the card taught: the action waits (for the holder, or an operator) instead of
        // failing, and the fact holds it in every later plan. A PIN the holder typed teaches
        // nothing about the stored one: such an action fails and the facts stay.
        if let Err(e) = &result
            && ctx.holder_pin_for(action).is_none()
            && let Some((card, learned)) = e.card_fact((ctx.clock)())
        {
            let mut facts = ctx.store.card_facts(&card).unwrap_or_default();
            if learned.suspect.is_some() {
                tracing::warn!(card = %card, "{e}");
                facts.suspect = learned.suspect;
            } else if facts.holder_pin.is_none() {
                tracing::warn!(card = %card, "{e}");
                facts.holder_pin = learned.holder_pin;
            }
            match ctx.store.put_card_facts(&card, &facts) {
                Ok(()) => {
                    failed_cards.push(card_key);
                    let why = if facts.suspect.is_some() {
                        format!("held: {e}")
                    } else {
                        format!("waiting for the holder: {e}")
                    };
                    sink.finished(action, &Outcome::Skipped(why.clone()));
                    report.waiting.push((action.clone(), why));
                    continue;
                }
                Err(store) => tracing::error!("cannot record what card {card} taught: {store}"),
            }
        }
        match result {
            Ok(_) => report.done += 1,
            Err(e) => {
                failed_cards.push(card_key);
                if e.is_permanent() {
                    report.permanent.insert(action.id());
                }
                report.failed.push((action.clone(), e.to_string()));
            }
        }
        sink.finished(action, &outcome);
    }
    report
}

/// The audit entry of an applied action: `started` before it runs (`result` `None`), then
/// `done` with the certificates it created or changed, or `failed` with the error.
fn audit_action(
    ctx: &Context<'_>,
    action: &Action,
    result: Option<&Result<Vec<String>, ApplyError>>,
) -> Result<u64, crate::audit::AuditError> {
    let (outcome, serials, error) = match result {
        None => ("started", &action.serials, None),
        Some(Ok(serials)) => ("done", serials, None),
        Some(Err(e)) => ("failed", &action.serials, Some(e.to_string())),
    };
    let mut details = serde_json::json!({
        "action": action.id(),
        "card": action.card,
        "template": action.template,
        "slots": action.slots.iter().chain(action.slot.iter()).map(|s| s.hex()).collect::<Vec<_>>(),
        "serials": serials,
        "reason": action.reason.code,
    });
    if let Some(e) = error {
        details["error"] = e.into();
    }
    ctx.audit.append(
        crate::audit::NewEntry {
            actor: ctx.actor.clone(),
            kind: action.kind.as_str().to_string(),
            target: action.user.clone(),
            outcome: outcome.to_string(),
            details,
        },
        (ctx.clock)(),
    )
}

fn run_action(
    ctx: &Context<'_>,
    action: &Action,
    created: &mut BTreeMap<String, String>,
) -> Result<Vec<String>, ApplyError> {
    match action.kind {
        ActionKind::Issue if action.reason.code == ReasonCode::InterruptedIssuance => {
            let card = card_of(action)?;
            let mut session = connect(ctx, card)?;
            let mut done = Vec::new();
            for serial in &action.serials {
                let cert = ctx
                    .store
                    .cert(serial)?
                    .ok_or_else(|| ApplyError::Stale(format!("certificate {serial} is unknown")))?;
                install(ctx, &action.id(), session.as_mut(), cert)?;
                done.push(serial.clone());
            }
            Ok(done)
        }
        ActionKind::Issue => {
            let serials = issue(ctx, action, created)?;
            // A new card (a replacement after a lost or damaged one, say) gets the holder's
            // key history at once; if that fails, the next plan asks for it again.
            let wants_history = action
                .template
                .as_deref()
                .and_then(|t| ctx.desired.templates.get(t))
                .is_some_and(|r| r.key_history > 0);
            let card_key = format!(
                "new:{}:{}",
                action.user,
                action.template.clone().unwrap_or_default()
            );
            if wants_history
                && let Some(card) = action
                    .card
                    .clone()
                    .or_else(|| created.get(&card_key).cloned())
            {
                let written = connect(ctx, &card)
                    .and_then(|mut session| key_history::write(ctx, &card, session.as_mut()));
                if let Err(e) = written {
                    tracing::warn!(card = %card, "key history not written yet: {e}");
                }
            }
            Ok(serials)
        }
        ActionKind::Renew | ActionKind::Reissue => {
            let card = card_of(action)?;
            let slot = action
                .slot
                .ok_or_else(|| ApplyError::Stale("renewal without a slot".into()))?;
            if action.reason.code == ReasonCode::SlotRemoved {
                let mut session = connect(ctx, card)?;
                session.admin_login(ctx, None)?;
                session.delete_certificate(slot)?;
                revoke_all(ctx, &action.id(), &action.serials, "superseded")?;
                return Ok(action.serials.clone());
            }
            let cred = credential(ctx, action)?;
            let session = connect(ctx, card)?;
            // One slot: nothing on the card to overlap the CA with.
            let action_id = action.id();
            issue_slots(
                ctx,
                &Beside::inline(),
                &action_id,
                session,
                card,
                cred,
                &[slot],
            )
        }
        ActionKind::Revoke if action.reason.code == ReasonCode::Superseded => {
            // Certificates their slots no longer hold: revoked at the CA; the card, which holds
            // the newer ones, is not touched.
            revoke_all(ctx, &action.id(), &action.serials, "superseded")?;
            Ok(action.serials.clone())
        }
        ActionKind::Suspend | ActionKind::Resume | ActionKind::Revoke => {
            let card = card_of(action)?;
            let op = match action.kind {
                ActionKind::Suspend => CaOp::Hold,
                ActionKind::Resume => CaOp::Unhold,
                _ => CaOp::Revoke {
                    reason: action
                        .revocation_reason()
                        .ok_or_else(|| {
                            ApplyError::Stale(format!("{} action without a reason", action.id()))
                        })?
                        .into(),
                },
            };
            if matches!(op, CaOp::Hold | CaOp::Unhold) {
                // A CA that cannot hold must fail the action, never revoke instead.
                for serial in &action.serials {
                    let cert = ctx.store.cert(serial)?.ok_or_else(|| {
                        ApplyError::Stale(format!("certificate {serial} is unknown"))
                    })?;
                    if !ca(ctx, &cert.ca)?.capabilities().hold {
                        return Err(ApplyError::Ca {
                            ca: cert.ca,
                            source: CaError::Unsupported("certificate hold (suspend/resume)"),
                        });
                    }
                }
            }
            for serial in &action.serials {
                ca_status(ctx, &action.id(), serial, op.clone())?;
            }
            let mut record = ctx
                .store
                .card(card)?
                .ok_or_else(|| ApplyError::Stale(format!("card {card} is unknown")))?;
            record.status = match (action.kind, action.reason.code) {
                (ActionKind::Suspend, _) => CardStatus::Suspended,
                (ActionKind::Resume, _) => CardStatus::Active,
                (_, ReasonCode::CardLost) => CardStatus::Lost,
                (_, ReasonCode::CardDamaged) => CardStatus::Damaged,
                _ => CardStatus::Revoked,
            };
            record.updated_at = (ctx.clock)();
            ctx.store.put_card(&record)?;
            incidents::record(ctx, action)?;
            Ok(action.serials.clone())
        }
        ActionKind::RotatePuk => {
            let card = card_of(action)?;
            let mut session = connect(ctx, card)?;
            unblock::rotate_puk(ctx, card, session.as_mut())?;
            Ok(Vec::new())
        }
        ActionKind::KeyHistory => {
            let card = card_of(action)?;
            let mut session = connect(ctx, card)?;
            key_history::write(ctx, card, session.as_mut())
        }
        ActionKind::Retire => {
            let card = card_of(action)?;
            let mut entry = journal_open(
                ctx,
                &action.id(),
                JournalStep::WipeCard { card: card.into() },
            )?;
            let mut blank = wipe(ctx, card)?;
            if action.reason.code == ReasonCode::CardDamaged {
                // Out of service for good; who held it stays on the record.
                let before = ctx.store.card(card)?;
                blank.status = CardStatus::Retired;
                blank.user = before.as_ref().and_then(|b| b.user.clone());
                blank.template = before.and_then(|b| b.template);
            }
            journal_close_recording(
                ctx,
                &mut entry,
                JournalState::Done,
                None,
                Recorded::Card(&blank),
            )?;
            forget_card(ctx, card)?;
            Ok(Vec::new())
        }
    }
}

fn card_of(action: &Action) -> Result<&str, ApplyError> {
    action
        .card
        .as_deref()
        .ok_or_else(|| ApplyError::Stale(format!("{} action without a card", action.kind.as_str())))
}

fn credential<'a>(ctx: &Context<'a>, action: &Action) -> Result<&'a DesiredCredential, ApplyError> {
    let template = action.template.clone().unwrap_or_default();
    // An entitlement's credential, or a temporary card's (`Desired::credential`).
    ctx.desired
        .credential(&action.user, &template)
        .ok_or_else(|| {
            ApplyError::Stale(format!(
                "{} is no longer entitled to {template:?}",
                action.user
            ))
        })
}

fn connect(ctx: &Context<'_>, card: &str) -> Result<Box<dyn CardSession>, ApplyError> {
    let mut session = ctx.cards.open(card)?;
    session.select()?;
    Ok(session)
}

fn journal_open(
    ctx: &Context<'_>,
    action_id: &str,
    step: JournalStep,
) -> Result<JournalEntry, ApplyError> {
    let e = ctx.store.journal_open(action_id, step, (ctx.clock)())?;
    ctx.crash.tick();
    Ok(e)
}

/// Like [`journal_open`], the step made from the entry's id: see [`Store::journal_open_with`].
fn journal_open_with(
    ctx: &Context<'_>,
    action_id: &str,
    step: impl FnOnce(u64) -> JournalStep,
) -> Result<JournalEntry, ApplyError> {
    let e = ctx
        .store
        .journal_open_with(action_id, (ctx.clock)(), step)?;
    ctx.crash.tick();
    Ok(e)
}

/// Like [`journal_open`], not flushed: see [`Store::journal_note`].
fn journal_note(
    ctx: &Context<'_>,
    action_id: &str,
    step: JournalStep,
) -> Result<JournalEntry, ApplyError> {
    let e = ctx.store.journal_note(action_id, step, (ctx.clock)())?;
    ctx.crash.tick();
    Ok(e)
}

fn journal_close(
    ctx: &Context<'_>,
    entry: &mut JournalEntry,
    state: JournalState,
    message: Option<String>,
) -> Result<(), ApplyError> {
    ctx.store
        .journal_close(entry, state, message, (ctx.clock)())?;
    ctx.crash.tick();
    Ok(())
}

/// Like [`journal_close`], with the record the effect led to written in the same
/// transaction: see [`Store::journal_close_recording`].
fn journal_close_recording(
    ctx: &Context<'_>,
    entry: &mut JournalEntry,
    state: JournalState,
    message: Option<String>,
    record: Recorded<'_>,
) -> Result<(), ApplyError> {
    ctx.store
        .journal_close_recording(entry, state, message, (ctx.clock)(), record)?;
    ctx.crash.tick();
    Ok(())
}

/// Changes what Keyfleet recorded about `card` atomically (see
/// [`Store::update_card_facts`]): an operator's report written meanwhile is never lost to an
/// executor's older copy. `change` may refuse (a stale state, said in its message).
pub(crate) fn change_facts<T>(
    ctx: &Context<'_>,
    card: &str,
    change: impl FnMut(&mut crate::inventory::CardFacts) -> Result<T, String>,
) -> Result<T, ApplyError> {
    ctx.store
        .update_card_facts(card, change)?
        .map_err(ApplyError::Stale)
}

fn seal_secret(ctx: &Context<'_>, name: &str, value: &str) -> Result<(), ApplyError> {
    let sealed = ctx.master.seal(name.as_bytes(), value.as_bytes());
    ctx.store.put_secret(name, &sealed)?;
    Ok(())
}

/// Like [`seal_secret`], durable only with the next journal intent or the action's end.
fn stage_secret(ctx: &Context<'_>, name: &str, value: &str) -> Result<(), ApplyError> {
    let sealed = ctx.master.seal(name.as_bytes(), value.as_bytes());
    ctx.store.stage_secret(name, &sealed)?;
    Ok(())
}

pub(crate) fn open_secret(ctx: &Context<'_>, name: &str) -> Result<Option<String>, ApplyError> {
    let Some(sealed) = ctx.store.secret(name)? else {
        return Ok(None);
    };
    let plain = ctx
        .master
        .open(name.as_bytes(), &sealed)
        .map_err(|source| ApplyError::Secret {
            name: name.to_string(),
            source,
        })?;
    Ok(Some(String::from_utf8_lossy(&plain).into_owned()))
}

/// Wipes a card: new keys over every slot it used, certificates deleted, PIN, PUK and
/// management key back to the factory values, and the card back in its stock as blank.
/// Re-entrant.
/// Wipes the card and returns its record as blank, for the caller to write with the wipe's
/// journal closing (one transaction); [`forget_card`] then drops its secrets and facts.
pub(crate) fn wipe(ctx: &Context<'_>, card: &str) -> Result<CardRecord, ApplyError> {
    let mut session = connect(ctx, card)?;
    session.wipe(ctx)?;
    let mut record = ctx
        .store
        .card(card)?
        .ok_or_else(|| ApplyError::Stale(format!("card {card} is unknown")))?;
    record.status = CardStatus::Blank;
    record.user = None;
    record.template = None;
    record.temporary = false;
    record.updated_at = (ctx.clock)();
    Ok(record)
}

/// Drops the secrets Keyfleet held for a wiped card and what it learned about it. After the
/// blank record is written: a crash before leaves secrets that the next personalisation
/// replaces, never a card recorded as personalised without them.
pub(crate) fn forget_card(ctx: &Context<'_>, card: &str) -> Result<(), ApplyError> {
    for name in ["pin", "puk", "puk-next", "mgmt-alg", "mgmt-key"] {
        ctx.store.remove_secret(&format!("{name}/{card}"))?;
    }
    // What Keyfleet learned about the holder's PIN ends with the credential; the card's
    // incident history stays.
    let facts = ctx.store.card_facts(card)?;
    ctx.store.put_card_facts(card, &facts.after_wipe())?;
    Ok(())
}
