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

pub mod cards;
pub mod crl;
pub mod pcsc_cards;
mod recover;
pub mod session;
pub mod tokens;
mod unblock;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

pub use cards::{CardAccessError, CardProvider, Session, VirtualCards};
pub use pcsc_cards::{Cards, PcscCards};
pub use recover::{RecoveryReport, recover};
pub use session::{CardSession, PivCard};
pub use tokens::{TokenCard, TokenStock, Tokens};
pub use unblock::{UnblockReport, unblock};

use crate::ca::{CaError, CertificateAuthority, EnrollRequest, RevocationReason};
use crate::card::keys::{KeyAlg, PublicKey};
use crate::card::piv::PivError;
use crate::card::pkcs11::P11Error;
use crate::desired::{Desired, DesiredCert, DesiredCredential};
use crate::inventory::{
    CardFacts, CardRecord, CardStatus, CertRecord, CertStatus, HolderPin, HolderPinCause, Suspicion,
};
use crate::names::SanValue;
use crate::plan::{Action, ActionKind, Plan, ReasonCode};
use crate::policy::model::{CardType, KeyAlgorithm, KeyGeneration, ManagementKeyAlgorithm, Slot};
use crate::secrets::{MasterKey, SecretError, generate_pin, generate_puk};
use crate::store::journal::CaOp;
use crate::store::{
    HistoryEntry, HistoryResult, JournalEntry, JournalState, JournalStep, Store, StoreError,
};

/// Factory PIN, PUK of a blank PIV card.
pub const FACTORY_PIN: &str = "123456";
/// Factory PUK of a blank PIV card.
pub const FACTORY_PUK: &str = "12345678";

/// An action failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The card could not be reached.
    #[error(transparent)]
    CardAccess(#[from] CardAccessError),
    /// The card refused or failed a command.
    #[error("card {card}: {source}")]
    Card {
        /// Card id.
        card: String,
        /// What the card said.
        #[source]
        source: PivError,
    },
    /// A PKCS#11 token refused or failed an operation.
    #[error("card {card}: {source}")]
    Token {
        /// Card id.
        card: String,
        /// What the token said.
        #[source]
        source: P11Error,
    },
    /// A PKCS#11 token refused the user PIN Keyfleet set; Keyfleet counts these failures per
    /// card (reset by the next good login) so an operator sees a PIN going bad.
    #[error(
        "card {card}: the user PIN Keyfleet set was refused ({failures} failed login(s) counted by Keyfleet; changed by the holder?): {source}"
    )]
    TokenPin {
        /// Card id.
        card: String,
        /// Failed logins in a row, as counted by Keyfleet.
        failures: u32,
        /// What the token said.
        #[source]
        source: P11Error,
    },
    /// The stock's SO PIN could not be read.
    #[error("card {card}: cannot read the SO PIN of stock {stock}: {message}")]
    SoPin {
        /// Card id.
        card: String,
        /// The stock.
        stock: String,
        /// Why.
        message: String,
    },
    /// The CA refused or failed.
    #[error("CA {ca}: {source}")]
    Ca {
        /// Authority name.
        ca: String,
        /// What failed.
        #[source]
        source: CaError,
    },
    /// The policy names an authority Keyfleet has no connector for (yet).
    #[error("CA {0}: {1}")]
    CaUnavailable(String, String),
    /// A sealed secret could not be opened or made.
    #[error("secret {name}: {source}")]
    Secret {
        /// Secret name.
        name: String,
        /// Why.
        #[source]
        source: SecretError,
    },
    /// The PIN mailer could not be written.
    #[error("PIN mailer {path}: {source}")]
    PinMailer {
        /// File.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The action no longer matches the state it was planned from.
    #[error("stale plan: {0}")]
    Stale(String),
    /// The holder changed the card's PIN: unattended key generation needs it.
    #[error(
        "card {0}: the PIN Keyfleet set no longer verifies (changed by the holder?); this action needs the holder present"
    )]
    PinUnknown(String),
    /// The PIN Keyfleet holds for the card cannot be used (refused once, too few tries left
    /// to risk it, or none stored): the action waits for the holder; nothing was made.
    #[error(
        "card {card}: the PIN Keyfleet holds cannot be used ({cause}{}); waiting for the holder",
        tries_left.map(|n| format!(", {n} tries left")).unwrap_or_default()
    )]
    HolderPin {
        /// Card id.
        card: String,
        /// Why.
        cause: HolderPinCause,
        /// Tries the card said were left.
        tries_left: Option<u8>,
    },
    /// The card shows the identity of a card Keyfleet personalised but cannot prove the
    /// management key Keyfleet set on it (reset or cloned): nothing is sent to it.
    #[error("card {card} is suspect: it cannot prove the management key Keyfleet set ({reason})")]
    Suspect {
        /// Card id.
        card: String,
        /// What the card did.
        reason: String,
    },
    /// The management key Keyfleet stored for a card cannot be read (never replaced by the
    /// factory key).
    #[error("card {card}: cannot read the stored management key: {message}")]
    ManagementKey {
        /// Card id.
        card: String,
        /// Why.
        message: String,
    },
    /// Building the CSR failed.
    #[error("card {card}: cannot build the CSR: {message}")]
    Csr {
        /// Card id.
        card: String,
        /// Why.
        message: String,
    },
}

impl std::fmt::Display for HolderPinCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HolderPinCause::Refused => "the card refused it: changed by the holder?",
            HolderPinCause::TooFewTries => "not tried: a wrong try would leave fewer than 2",
            HolderPinCause::NotStored => "none stored",
        })
    }
}

impl ApplyError {
    /// The card fact this error teaches Keyfleet, if any: the holder's PIN is unknown, or the
    /// card is suspect. The action then waits instead of failing.
    fn card_fact(&self, now: OffsetDateTime) -> Option<(String, CardFacts)> {
        let holder = |card: &str, cause, tries_left| {
            let facts = CardFacts {
                holder_pin: Some(HolderPin {
                    since: now,
                    cause,
                    tries_left,
                }),
                suspect: None,
            };
            Some((card.to_string(), facts))
        };
        match self {
            ApplyError::HolderPin {
                card,
                cause,
                tries_left,
            } => holder(card, *cause, *tries_left),
            ApplyError::PinUnknown(card) => holder(card, HolderPinCause::Refused, None),
            ApplyError::TokenPin { card, .. } => holder(card, HolderPinCause::Refused, None),
            ApplyError::Suspect { card, reason } => Some((
                card.clone(),
                CardFacts {
                    holder_pin: None,
                    suspect: Some(Suspicion {
                        since: now,
                        reason: reason.clone(),
                    }),
                },
            )),
            _ => None,
        }
    }

    /// Whether retrying the same action cannot succeed until the policy or the world changes:
    /// the CA refused the request itself (bad CSR, unknown profile, name it cannot encode,
    /// unsupported operation), the template does not fit the card, the CA has no connector,
    /// or the holder must be present. Unreachable CAs and cards, storage and I/O failures are
    /// transient.
    pub fn is_permanent(&self) -> bool {
        match self {
            ApplyError::Ca { source, .. } => matches!(
                source,
                CaError::CsrDecode(_)
                    | CaError::CsrAlgorithm(_)
                    | CaError::CsrSignature
                    | CaError::UnknownProfile(_)
                    | CaError::InvalidName(_)
                    | CaError::NoValidity { .. }
                    | CaError::RequestIdReused(_)
                    | CaError::InvalidTransition { .. }
                    | CaError::Unsupported(_)
                    | CaError::KeyDecrypt { .. }
                    | CaError::Rejected(_)
            ),
            ApplyError::CaUnavailable(..)
            | ApplyError::Csr { .. }
            | ApplyError::PinUnknown(_)
            | ApplyError::HolderPin { .. }
            | ApplyError::Suspect { .. }
            | ApplyError::ManagementKey { .. }
            | ApplyError::TokenPin { .. }
            | ApplyError::SoPin { .. } => true,
            ApplyError::Store(_)
            | ApplyError::Token { .. }
            | ApplyError::CardAccess(_)
            | ApplyError::Card { .. }
            | ApplyError::Secret { .. }
            | ApplyError::PinMailer { .. }
            | ApplyError::Stale(_) => false,
        }
    }
}

/// Certificate authorities by policy name; a name maps to an error when its connector cannot
/// be built (so that actions that need it fail clearly and the rest proceed).
pub type CaRegistry = BTreeMap<String, Result<Box<dyn CertificateAuthority>, String>>;

/// Makes the process exit right after the N-th journal write when `KEYFLEET_CRASH_AFTER_STEP`
/// is set: crash tests use it to interrupt an apply between any two journal steps.
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
            std::process::exit(86);
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

/// Time this process spent inside CA calls (enrol, hold, unhold, revoke), for the
/// benchmarks' accounting: the CA's share of a pass is neither the card's nor Keyfleet's.
static CA_NANOS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn count_ca_time(d: std::time::Duration) {
    let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    CA_NANOS.fetch_add(nanos, std::sync::atomic::Ordering::Relaxed);
}

/// Time spent inside CA calls by this process so far.
pub fn ca_time() -> std::time::Duration {
    std::time::Duration::from_nanos(CA_NANOS.load(std::sync::atomic::Ordering::Relaxed))
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
}

/// Applies every runnable action of `plan`, in order. A failure is recorded and the remaining
/// actions of the same card are skipped; other cards proceed.
pub fn apply(ctx: &Context<'_>, plan: &Plan, sink: &mut dyn ApplySink) -> ApplyReport {
    let mut report = ApplyReport::default();
    let mut failed_cards: Vec<String> = Vec::new();
    let mut created: BTreeMap<String, String> = BTreeMap::new();
    for action in &plan.actions {
        if !action.runnable() {
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
        sink.started(action);
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
        // What the card taught: the action waits (for the holder, or an operator) instead of
        // failing, and the fact holds it in every later plan.
        if let Err(e) = &result
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
        ActionKind::Issue => issue(ctx, action, created),
        ActionKind::Renew | ActionKind::Reissue => {
            let card = card_of(action)?;
            let slot = action
                .slot
                .ok_or_else(|| ApplyError::Stale("renewal without a slot".into()))?;
            if action.reason.code == ReasonCode::SlotRemoved {
                let mut session = connect(ctx, card)?;
                session.admin_login(ctx, None)?;
                session.delete_certificate(slot)?;
                for serial in &action.serials {
                    ca_status(
                        ctx,
                        &action.id(),
                        serial,
                        CaOp::Revoke {
                            reason: "superseded".into(),
                        },
                    )?;
                }
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
        ActionKind::Suspend | ActionKind::Resume | ActionKind::Revoke => {
            let card = card_of(action)?;
            let op = match action.kind {
                ActionKind::Suspend => CaOp::Hold,
                ActionKind::Resume => CaOp::Unhold,
                _ => CaOp::Revoke {
                    reason: match action.reason.code {
                        ReasonCode::UserGone => "cessationOfOperation",
                        _ => "affiliationChanged",
                    }
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
            record.status = match action.kind {
                ActionKind::Suspend => CardStatus::Suspended,
                ActionKind::Resume => CardStatus::Active,
                _ => CardStatus::Revoked,
            };
            record.updated_at = (ctx.clock)();
            ctx.store.put_card(&record)?;
            Ok(action.serials.clone())
        }
        ActionKind::Retire => {
            let card = card_of(action)?;
            let mut entry = journal_open(
                ctx,
                &action.id(),
                JournalStep::WipeCard { card: card.into() },
            )?;
            wipe(ctx, card)?;
            journal_close(ctx, &mut entry, JournalState::Done, None)?;
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
    ctx.desired
        .credentials
        .get(&(action.user.clone(), template.clone()))
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

fn ca<'a>(ctx: &Context<'a>, name: &str) -> Result<&'a dyn CertificateAuthority, ApplyError> {
    match ctx.cas.get(name) {
        Some(Ok(ca)) => Ok(ca.as_ref()),
        Some(Err(e)) => Err(ApplyError::CaUnavailable(name.to_string(), e.clone())),
        None => Err(ApplyError::CaUnavailable(
            name.to_string(),
            "no such CertificateAuthority in the policy".into(),
        )),
    }
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

fn issue(
    ctx: &Context<'_>,
    action: &Action,
    created: &mut BTreeMap<String, String>,
) -> Result<Vec<String>, ApplyError> {
    let cred = credential(ctx, action)?;
    let now = (ctx.clock)();
    let card = match &action.card {
        Some(id) => id.clone(),
        None => {
            if cred.card_type != CardType::Virtual {
                return Err(ApplyError::Stale(
                    "only virtual cards are created on demand".into(),
                ));
            }
            // Journal first: an interrupted creation leaves a file recovery returns to stock.
            let provisional = format!("pending:{}", action.id());
            let mut entry = journal_open(
                ctx,
                &action.id(),
                JournalStep::CreateCard {
                    card: provisional,
                    stock: action.stock.clone(),
                    card_type: cred.card_type,
                },
            )?;
            let id = ctx.cards.create_virtual()?;
            ctx.store.put_card(&CardRecord {
                id: id.clone(),
                card_type: cred.card_type,
                stock: action.stock.clone(),
                user: None,
                template: None,
                status: CardStatus::Blank,
                created_at: now,
                updated_at: now,
            })?;
            journal_close(ctx, &mut entry, JournalState::Done, Some(id.clone()))?;
            id
        }
    };
    created.insert(
        format!(
            "new:{}:{}",
            action.user,
            action.template.clone().unwrap_or_default()
        ),
        card.clone(),
    );
    let pin = generate_pin(cred.pin_length);
    let puk = generate_puk(cred.puk_length);
    let personalize_started = std::time::Instant::now();
    let action_id = action.id();
    let step = JournalStep::Personalize {
        card: card.clone(),
        user: cred.user.clone(),
        sealed_pin: hex::encode(ctx.master.seal(b"journal-pin", pin.as_bytes())),
        sealed_puk: hex::encode(ctx.master.seal(b"journal-puk", puk.as_bytes())),
        management_key: cred.management_key.algorithm,
    };
    // One thread beside the card's for the whole issuance: the card, the slow part, waits
    // for no flush, no file and no CA call it can go on without. Not for a virtual card: its
    // time is this process's own work too, so a second thread would only compete with it
    // (and cost a malloc arena per worker, which a controller issuing hundreds of virtual
    // cards at once feels in its memory).
    std::thread::scope(|scope| {
        let beside = if cred.card_type == CardType::Virtual {
            Beside::inline()
        } else {
            Beside::start(scope)
        };
        // The binding and the intent are written (and flushed) while the card is being
        // connected to: connecting changes nothing on the card, and nothing below runs
        // before both are done.
        let intent = beside.run(|| {
            bind(ctx, action, cred, &card, now)?;
            journal_open(ctx, &action_id, step)
        });
        let session = connect(ctx, &card);
        let mut entry = beside.wait(intent)?;
        let mut session = match session {
            Ok(session) => session,
            Err(e) => {
                // Nothing happened to the card: the intent must not wait for it in recovery.
                journal_close(
                    ctx,
                    &mut entry,
                    JournalState::Abandoned,
                    Some(e.to_string()),
                )?;
                return Err(e);
            }
        };
        personalize(
            ctx,
            session.as_mut(),
            &card,
            &cred.user,
            &pin,
            &puk,
            cred.management_key.algorithm,
            true,
            Some(&beside),
        )?;
        journal_close(ctx, &mut entry, JournalState::Done, None)?;
        tracing::debug!(
            target: "keyfleet::timing",
            card,
            personalize_us = personalize_started.elapsed().as_micros() as u64,
            "card personalised"
        );
        issue_slots(
            ctx,
            &beside,
            &action_id,
            session,
            &card,
            cred,
            &action.slots,
        )
    })
}

/// A thread beside the card's, for the work of an issuance the card need not wait for
/// (flushes, the PIN mailer, enrolments, records). Jobs run one at a time, in the order
/// given; each answers through its own channel.
pub(crate) struct Beside<'scope> {
    /// `None`: no thread, each job runs when it is given (nothing to overlap it with).
    jobs: Option<std::sync::mpsc::Sender<Box<dyn FnOnce() + Send + 'scope>>>,
}

impl<'scope> Beside<'scope> {
    fn start<'env>(scope: &'scope std::thread::Scope<'scope, 'env>) -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send + 'scope>>();
        scope.spawn(move || {
            for job in queue {
                job();
            }
        });
        Beside { jobs: Some(jobs) }
    }

    /// Runs every job in place, when it is given.
    fn inline() -> Self {
        Beside { jobs: None }
    }

    /// Queues `job`; its result comes through the returned channel.
    fn run<T: Send + 'scope>(
        &self,
        job: impl FnOnce() -> Result<T, ApplyError> + Send + 'scope,
    ) -> std::sync::mpsc::Receiver<Result<T, ApplyError>> {
        let (answer, result) = std::sync::mpsc::sync_channel(1);
        let job: Box<dyn FnOnce() + Send + 'scope> = Box::new(move || {
            let _ = answer.send(job());
        });
        match &self.jobs {
            Some(jobs) => {
                if let Err(std::sync::mpsc::SendError(job)) = jobs.send(job) {
                    // The thread is gone (a job panicked, and the scope reports it).
                    job();
                }
            }
            None => job(),
        }
        result
    }

    /// The result of a queued job.
    fn wait<T>(
        &self,
        result: std::sync::mpsc::Receiver<Result<T, ApplyError>>,
    ) -> Result<T, ApplyError> {
        result.recv().unwrap_or_else(|_| {
            Err(ApplyError::Stale(
                "the issuance's bookkeeping thread stopped".into(),
            ))
        })
    }
}

/// Binds a blank card to the credential: from here on the card is the user's, even if the
/// issuance is interrupted.
fn bind(
    ctx: &Context<'_>,
    action: &Action,
    cred: &DesiredCredential,
    card: &str,
    now: OffsetDateTime,
) -> Result<(), ApplyError> {
    let mut record = ctx.store.card(card)?.unwrap_or(CardRecord {
        id: card.to_string(),
        card_type: cred.card_type,
        stock: action.stock.clone(),
        user: None,
        template: None,
        status: CardStatus::Blank,
        created_at: now,
        updated_at: now,
    });
    if record.status != CardStatus::Blank {
        return Err(ApplyError::Stale(format!("card {card} is not blank")));
    }
    record.user = Some(cred.user.clone());
    record.template = Some(cred.template.clone());
    record.status = CardStatus::Active;
    record.updated_at = now;
    ctx.store.put_card(&record)?;
    Ok(())
}

/// Issues the certificates of `slots`, pipelined: the card makes each slot's key and CSR
/// while the thread `beside` it has the CA sign the previous one (journal intent,
/// enrolment, record), and the certificates are installed once every CSR is made, in slot
/// order, their records written beside the card as well. The
/// card, the slow part, waits for neither the CA nor the journal's flushes, except for a
/// certificate not yet signed when its turn to be installed comes.
///
/// A failure stops the slots after it: the card's first error, or the CA's (the card then
/// makes no more keys). Enrolments already sent finish and are recorded; a certificate
/// recorded but not installed is installed by the next plan. Returns the new serials.
fn issue_slots<'s>(
    ctx: &'s Context<'_>,
    beside: &Beside<'s>,
    action_id: &'s str,
    session: Box<dyn CardSession>,
    card: &'s str,
    cred: &'s DesiredCredential,
    slots: &[Slot],
) -> Result<Vec<String>, ApplyError> {
    let mut session = Some(session);
    let mut enrolments = Vec::with_capacity(slots.len());
    let mut card_error = None;
    // Set by a failed enrolment: the card makes no more keys, the CA gets no more CSRs.
    let ca_failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for slot in slots {
        if ca_failed.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        let request = match session.take() {
            Some(s) => Ok(s),
            None => connect(ctx, card),
        }
        .and_then(|mut current| slot_request(ctx, current.as_mut(), card, cred, *slot));
        match request {
            Ok(request) => {
                let card_time = request.card_time;
                let failed = ca_failed.clone();
                let enrolled = beside.run(move || {
                    if failed.load(std::sync::atomic::Ordering::SeqCst) {
                        return Err(ApplyError::Stale("an earlier slot failed".into()));
                    }
                    let enrolled = enroll_slot(ctx, action_id, card, cred, request)
                        .and_then(|record| Ok((install_note(ctx, action_id, &record)?, record)));
                    if enrolled.is_err() {
                        failed.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    enrolled.map(|(note, record)| (record, note))
                });
                enrolments.push((enrolled, card_time));
            }
            Err(e) => {
                card_error = Some(e);
                break;
            }
        }
    }
    drop(session);

    // The certificates, in slot order, as their enrolments end. A failure stops the slots
    // after it; what was enrolled stays recorded (not installed) for the next plan.
    let mut serials = Vec::with_capacity(slots.len());
    let mut records = Vec::with_capacity(slots.len());
    let mut first_error = card_error;
    // Unlike one slot after the other, a card failing at slot k leaves the slots before it
    // signed and recorded but not installed (the next plan installs them).
    for (enrolled, card_time) in enrolments {
        let (record, mut note) = match beside.wait(enrolled) {
            Ok(r) => r,
            Err(e) => {
                first_error.get_or_insert(e);
                continue;
            }
        };
        if let Some(e) = &first_error {
            // Not written: the installation's note says so (the record stays not installed).
            let why = format!("not installed: {e}");
            journal_close(ctx, &mut note, JournalState::Abandoned, Some(why))?;
            continue;
        }
        let slot = record.slot;
        let install_started = std::time::Instant::now();
        let written =
            connect(ctx, card).and_then(|mut s| write_installed(ctx, s.as_mut(), &record));
        if let Err(e) = written {
            journal_close(ctx, &mut note, JournalState::Failed, Some(e.to_string()))?;
            first_error = Some(e);
            continue;
        }
        // Where an issuance spends its time (KEYFLEET_LOG=keyfleet::timing=debug): the card's
        // key generation and CSR signature, and the certificate write.
        tracing::debug!(
            target: "keyfleet::timing",
            card,
            slot = %slot,
            card_us = card_time.as_micros() as u64,
            install_us = install_started.elapsed().as_micros() as u64,
            "slot issued"
        );
        serials.push(record.serial.clone());
        records.push(beside.run(move || record_installed(ctx, action_id, record, note)));
    }
    for recorded in records {
        if let Err(e) = beside.wait(recorded) {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(serials),
    }
}

/// Sets the management key, PIN and PUK of a card and writes the PIN mailer. Re-entrant:
/// recovery runs it again with the same PIN and PUK after an interruption.
#[allow(clippy::too_many_arguments)]
pub(crate) fn personalize(
    ctx: &Context<'_>,
    session: &mut dyn CardSession,
    card: &str,
    user: &str,
    pin: &str,
    puk: &str,
    mgmt_alg: ManagementKeyAlgorithm,
    fresh: bool,
    beside: Option<&Beside<'_>>,
) -> Result<(), ApplyError> {
    // The mailer must be on disk before the PIN changes, so that a crash in between leaves a
    // mailer with the PIN that recovery then sets. Beside the card, it is written (and
    // synced) while the card takes its management key.
    match beside {
        Some(beside) => {
            let job = (
                ctx.pin_mailer_dir.clone(),
                user.to_string(),
                card.to_string(),
                pin.to_string(),
            );
            let mailer = beside.run(move || {
                let (dir, user, card, pin) = job;
                write_pin_mailer(&dir, &user, &card, &pin)
            });
            let prepared = session.prepare(ctx, user, mgmt_alg, fresh);
            let written = beside.wait(mailer);
            prepared.and(written)?;
        }
        None => {
            session.prepare(ctx, user, mgmt_alg, fresh)?;
            write_pin_mailer(&ctx.pin_mailer_dir, user, card, pin)?;
        }
    }
    // Staged, not flushed: until the action's end makes them durable, the open intent holds
    // them sealed and recovery stages them again.
    stage_secret(ctx, &format!("pin/{card}"), pin)?;
    stage_secret(ctx, &format!("puk/{card}"), puk)?;
    session.set_pins(ctx, pin, puk, fresh)
}

/// The file name of a PIN mailer: `<uid>-<card>.txt`, with every byte outside
/// `[A-Za-z0-9._-]` hex-escaped as `%XX`, so no uid can climb directories or hide the file.
pub fn pin_mailer_name(user: &str, card: &str) -> String {
    fn safe(s: &str) -> String {
        let mut out = String::new();
        for (i, b) in s.bytes().enumerate() {
            let ok = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
            if ok {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        if out.is_empty() {
            out.push_str("%00");
        }
        out
    }
    format!("{}-{}.txt", safe(user), safe(card))
}

fn write_pin_mailer(dir: &Path, user: &str, card: &str, pin: &str) -> Result<(), ApplyError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ApplyError::PinMailer { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err(dir))?;
    let path = dir.join(pin_mailer_name(user, card));
    let body = format!(
        "Keyfleet PIN mailer\nUser: {user}\nCard: {card}\nPIN: {pin}\n\nKeep this PIN secret. Change it at first use.\n"
    );
    crate::fsutil::write_atomic(&path, body.as_bytes(), 0o600).map_err(err(&path))
}

use std::os::unix::fs::DirBuilderExt;

fn key_alg(alg: KeyAlgorithm) -> KeyAlg {
    match alg {
        KeyAlgorithm::EccP256 => KeyAlg::EccP256,
        KeyAlgorithm::EccP384 => KeyAlg::EccP384,
        KeyAlgorithm::Rsa2048 => KeyAlg::Rsa2048,
        KeyAlgorithm::Rsa3072 => KeyAlg::Rsa3072,
    }
}

/// What the card made for one slot: the CSR its new key signed.
struct SlotRequest {
    slot: Slot,
    csr_der: Vec<u8>,
    card_time: std::time::Duration,
}

/// The card's part of a slot's issuance: a new key (on the card, or made here and imported)
/// and the CSR the card signs with it.
fn slot_request(
    ctx: &Context<'_>,
    session: &mut dyn CardSession,
    card: &str,
    cred: &DesiredCredential,
    slot: Slot,
) -> Result<SlotRequest, ApplyError> {
    let want = desired_cert(cred, slot)?;
    // An unusable CA fails the slot before the card makes a key for it.
    ca(ctx, &want.authority)?;
    let started = std::time::Instant::now();
    // Everything the slot needs is at hand before the slot is touched: the card proves the
    // management key Keyfleet set, and the PIN Keyfleet holds verifies (never a PIN the card
    // refused once, never one whose wrong try would leave the holder fewer than 2).
    let facts = ctx.store.card_facts(card)?;
    if let Some(s) = facts.suspect {
        return Err(ApplyError::Suspect {
            card: card.to_string(),
            reason: s.reason,
        });
    }
    if let Some(h) = facts.holder_pin {
        return Err(ApplyError::HolderPin {
            card: card.to_string(),
            cause: h.cause,
            tries_left: h.tries_left,
        });
    }
    let pin = open_secret(ctx, &format!("pin/{card}"))?.ok_or_else(|| ApplyError::HolderPin {
        card: card.to_string(),
        cause: HolderPinCause::NotStored,
        tries_left: None,
    })?;
    session.admin_login(ctx, Some(cred))?;
    session.check_pin(ctx, &pin)?;
    let public = match want.key_generation {
        KeyGeneration::OnCard => session.generate_key(slot, key_alg(want.key_algorithm))?,
        KeyGeneration::Server => server_key(ctx, session, card, want)?,
    };
    let csr_der = match build_csr(session, card, slot, public, &pin, want) {
        Ok(csr) => csr,
        Err(e) => {
            // The slot's key is new: its old certificate no longer matches it. The next pass
            // makes the slot again (the plan still asks for it).
            if let Err(d) = session.delete_certificate(slot) {
                tracing::warn!(card, slot = %slot, "cannot remove the stale certificate: {d}");
            }
            return Err(e);
        }
    };
    Ok(SlotRequest {
        slot,
        csr_der,
        card_time: started.elapsed(),
    })
}

fn desired_cert(cred: &DesiredCredential, slot: Slot) -> Result<&DesiredCert, ApplyError> {
    cred.certificates
        .get(&slot)
        .ok_or_else(|| ApplyError::Stale(format!("template has no slot {}", slot.hex())))
}

/// The CA's part of a slot's issuance: the enrolment intent (flushed before the CA is
/// asked), the enrolment, and the certificate's record (not yet installed).
fn enroll_slot(
    ctx: &Context<'_>,
    action_id: &str,
    card: &str,
    cred: &DesiredCredential,
    request: SlotRequest,
) -> Result<CertRecord, ApplyError> {
    let slot = request.slot;
    let want = desired_cert(cred, slot)?;
    let authority = ca(ctx, &want.authority)?;
    let request_id = format!("kf-{}", hex::encode(rand::random::<[u8; 12]>()));
    let mut entry = journal_open(
        ctx,
        action_id,
        JournalStep::Enroll {
            request_id: request_id.clone(),
            ca: want.authority.clone(),
            card: card.to_string(),
            user: cred.user.clone(),
            template: cred.template.clone(),
            name: want.name.clone(),
            slot,
            profile: want.profile.clone(),
            key_algorithm: want.key_algorithm,
            subject: want.subject.to_string(),
            sans: want.sans.clone(),
            revision: want.revision.clone(),
        },
    )?;
    let ca_started = std::time::Instant::now();
    let enrolled = authority.enroll(&EnrollRequest {
        request_id,
        csr_der: request.csr_der,
        profile: want.profile.clone(),
        subject: want.subject.clone(),
        sans: want.sans.clone(),
        validity_secs: want.validity_secs,
    });
    let ca_time = ca_started.elapsed();
    count_ca_time(ca_time);
    tracing::debug!(
        target: "keyfleet::timing",
        card,
        slot = %slot,
        ca_us = ca_time.as_micros() as u64,
        "slot enrolled"
    );
    let issued = match enrolled {
        Ok(i) => i,
        Err(source) => {
            let e = ApplyError::Ca {
                ca: want.authority.clone(),
                source,
            };
            journal_close(ctx, &mut entry, JournalState::Failed, Some(e.to_string()))?;
            return Err(e);
        }
    };
    let record = cert_record(
        &entry.step,
        issued.serial.clone(),
        issued.pem,
        issued.not_before,
        issued.not_after,
        (ctx.clock)(),
    )
    .ok_or_else(|| ApplyError::Stale("journal step is not an enrolment".into()))?;
    ctx.store.put_cert(&record)?;
    journal_close(ctx, &mut entry, JournalState::Done, Some(issued.serial))?;
    Ok(record)
}

/// Builds the inventory record of an enrolled certificate from its journal step.
pub(crate) fn cert_record(
    step: &JournalStep,
    serial: String,
    pem: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
) -> Option<CertRecord> {
    let JournalStep::Enroll {
        request_id,
        ca,
        card,
        user,
        template,
        name,
        slot,
        profile,
        key_algorithm,
        subject,
        sans,
        revision,
    } = step
    else {
        return None;
    };
    Some(CertRecord {
        serial,
        user: user.clone(),
        card: card.clone(),
        template: template.clone(),
        name: name.clone(),
        slot: *slot,
        ca: ca.clone(),
        profile: profile.clone(),
        key_algorithm: *key_algorithm,
        subject: subject.clone(),
        sans: sans.clone(),
        not_before,
        not_after,
        revision: revision.clone(),
        status: CertStatus::Active,
        installed: false,
        request_id: request_id.clone(),
        updated_at: now,
        pem,
    })
}

fn server_key(
    ctx: &Context<'_>,
    session: &mut dyn CardSession,
    card: &str,
    want: &DesiredCert,
) -> Result<PublicKey, ApplyError> {
    use crate::card::keys::PrivateKeyMaterial;
    let alg = key_alg(want.key_algorithm);
    let (pkcs8, public) =
        crate::card::keys::generate_software(alg).map_err(|e| ApplyError::Csr {
            card: card.to_string(),
            message: format!("server-side key generation failed: {e}"),
        })?;
    if want.archive {
        let name = format!(
            "archive/{card}/{}/{}",
            want.slot.hex(),
            hex::encode(rand::random::<[u8; 8]>())
        );
        let sealed = ctx.master.seal(name.as_bytes(), &pkcs8);
        ctx.store.put_secret(&name, &sealed)?;
    }
    let material =
        PrivateKeyMaterial::from_pkcs8_der(alg, &pkcs8).map_err(|e| ApplyError::Csr {
            card: card.to_string(),
            message: e.to_string(),
        })?;
    session.import_key(want.slot, &material, &public)?;
    Ok(public)
}

fn build_csr(
    session: &mut dyn CardSession,
    card: &str,
    slot: Slot,
    public: PublicKey,
    pin: &str,
    want: &DesiredCert,
) -> Result<Vec<u8>, ApplyError> {
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    for rdn in &want.subject.0 {
        dn.push(rcgen::DnType::from_oid(rdn.oid()), rdn.value.as_str());
    }
    params.distinguished_name = dn;
    for san in &want.sans {
        let value = match san {
            SanValue::Email(v) => {
                rcgen::string::Ia5String::try_from(v.as_str()).map(rcgen::SanType::Rfc822Name)
            }
            SanValue::Dns(v) => {
                rcgen::string::Ia5String::try_from(v.as_str()).map(rcgen::SanType::DnsName)
            }
            SanValue::Uri(v) => {
                rcgen::string::Ia5String::try_from(v.as_str()).map(rcgen::SanType::URI)
            }
            SanValue::Upn(v) => Ok(rcgen::SanType::OtherName((
                vec![1, 3, 6, 1, 4, 1, 311, 20, 2, 3],
                rcgen::OtherNameValue::Utf8String(v.clone()),
            ))),
        }
        .map_err(|e| ApplyError::Csr {
            card: card.to_string(),
            message: format!("SAN {san}: {e}"),
        })?;
        params.subject_alt_names.push(value);
    }
    session.sign_csr(slot, public, pin, &params)
}

/// Writes a recorded certificate to its card, marks it installed, and supersedes the slot's
/// older live certificates (revoked at the CA as superseded).
pub(crate) fn install(
    ctx: &Context<'_>,
    action_id: &str,
    session: &mut dyn CardSession,
    cert: CertRecord,
) -> Result<(), ApplyError> {
    let note = install_note(ctx, action_id, &cert)?;
    write_installed(ctx, session, &cert)?;
    record_installed(ctx, action_id, cert, note)
}

/// The journal entry of an installation: a note, not a flushed intent, because what a crash
/// interrupts here the record (not installed) already tells, and the next plan installs the
/// certificate again.
fn install_note(
    ctx: &Context<'_>,
    action_id: &str,
    cert: &CertRecord,
) -> Result<JournalEntry, ApplyError> {
    journal_note(
        ctx,
        action_id,
        JournalStep::InstallCert {
            serial: cert.serial.clone(),
            card: cert.card.clone(),
            slot: cert.slot,
        },
    )
}

/// The card's part of an installation: the certificate written to its slot.
fn write_installed(
    ctx: &Context<'_>,
    session: &mut dyn CardSession,
    cert: &CertRecord,
) -> Result<(), ApplyError> {
    let der = pem_to_der(&cert.pem).ok_or_else(|| {
        ApplyError::Stale(format!("certificate {} has no readable PEM", cert.serial))
    })?;
    session.admin_login(ctx, None)?;
    session.write_certificate(cert.slot, &der)?;
    Ok(())
}

/// The record of an installation: the certificate marked installed, its note closed, and
/// the slot's older live certificates superseded.
fn record_installed(
    ctx: &Context<'_>,
    action_id: &str,
    mut cert: CertRecord,
    mut entry: JournalEntry,
) -> Result<(), ApplyError> {
    cert.installed = true;
    cert.updated_at = (ctx.clock)();
    ctx.store.put_cert(&cert)?;
    journal_close(ctx, &mut entry, JournalState::Done, None)?;
    let older: Vec<String> = ctx
        .store
        .certs_of_card(&cert.card)?
        .iter()
        .filter(|c| {
            c.card == cert.card && c.slot == cert.slot && c.serial != cert.serial && c.is_live()
        })
        .map(|c| c.serial.clone())
        .collect();
    for serial in older {
        ca_status(
            ctx,
            action_id,
            &serial,
            CaOp::Revoke {
                reason: "superseded".into(),
            },
        )?;
    }
    Ok(())
}

fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    der::pem::decode_vec(pem.as_bytes())
        .ok()
        .map(|(_, der)| der)
}

/// Changes a certificate's status at its CA and records it. Idempotent at the CA.
pub(crate) fn ca_status(
    ctx: &Context<'_>,
    action_id: &str,
    serial: &str,
    op: CaOp,
) -> Result<(), ApplyError> {
    let mut cert = ctx
        .store
        .cert(serial)?
        .ok_or_else(|| ApplyError::Stale(format!("certificate {serial} is unknown")))?;
    let authority = ca(ctx, &cert.ca)?;
    let mut entry = journal_open(
        ctx,
        action_id,
        JournalStep::CaStatus {
            serial: serial.to_string(),
            ca: cert.ca.clone(),
            op: op.clone(),
        },
    )?;
    let ca_started = std::time::Instant::now();
    let (result, status) = match &op {
        CaOp::Hold => (authority.hold(serial), CertStatus::Suspended),
        CaOp::Unhold => (authority.unhold(serial), CertStatus::Active),
        CaOp::Revoke { reason } => {
            let (r, st) = match reason.as_str() {
                "superseded" => (RevocationReason::Superseded, CertStatus::Superseded),
                "cessationOfOperation" => {
                    (RevocationReason::CessationOfOperation, CertStatus::Revoked)
                }
                "keyCompromise" => (RevocationReason::KeyCompromise, CertStatus::Revoked),
                "affiliationChanged" => (RevocationReason::AffiliationChanged, CertStatus::Revoked),
                _ => (RevocationReason::Unspecified, CertStatus::Revoked),
            };
            (authority.revoke(serial, r), st)
        }
    };
    count_ca_time(ca_started.elapsed());
    if let Err(source) = result {
        let e = ApplyError::Ca {
            ca: cert.ca.clone(),
            source,
        };
        journal_close(ctx, &mut entry, JournalState::Failed, Some(e.to_string()))?;
        return Err(e);
    }
    cert.status = status;
    cert.updated_at = (ctx.clock)();
    ctx.store.put_cert(&cert)?;
    journal_close(ctx, &mut entry, JournalState::Done, None)
}

/// Wipes a card: new keys over every slot it used, certificates deleted, PIN, PUK and
/// management key back to the factory values, and the card back in its stock as blank.
/// Re-entrant.
pub(crate) fn wipe(ctx: &Context<'_>, card: &str) -> Result<(), ApplyError> {
    let mut session = connect(ctx, card)?;
    session.wipe(ctx)?;
    let mut record = ctx
        .store
        .card(card)?
        .ok_or_else(|| ApplyError::Stale(format!("card {card} is unknown")))?;
    record.status = CardStatus::Blank;
    record.user = None;
    record.template = None;
    record.updated_at = (ctx.clock)();
    ctx.store.put_card(&record)?;
    for name in ["pin", "puk", "mgmt-alg", "mgmt-key"] {
        ctx.store.remove_secret(&format!("{name}/{card}"))?;
    }
    // What Keyfleet learned about the holder's PIN ends with the credential.
    ctx.store.put_card_facts(card, &CardFacts::default())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::pin_mailer_name;

    #[test]
    fn pin_mailer_names_are_safe_for_any_uid() {
        assert_eq!(pin_mailer_name("alice", "vc-01ab"), "alice-vc-01ab.txt");
        for uid in [
            "../../etc/passwd",
            "/abs",
            ".hidden",
            "a/b",
            "*)(uid=*",
            "ö",
            "",
            "a\nb",
            "a b",
        ] {
            let name = pin_mailer_name(uid, "vc-1");
            assert!(
                !name.contains('/') && !name.starts_with('.'),
                "{uid:?} -> {name}"
            );
            assert!(
                name.chars().all(|c| c.is_ascii_graphic()),
                "{uid:?} -> {name}"
            );
            assert!(name.ends_with("-vc-1.txt"));
        }
        // Distinct uids never share a file.
        assert_ne!(pin_mailer_name("a/b", "c"), pin_mailer_name("a%2Fb", "c"));
    }
}
