//! The server's self-service sessions: each runs the actions that wait for one holder on
//! their card with the executors (the same `apply::apply` as `keyfleet apply` and the
//! controller: journal, history, audit), on a thread of its own that has the cards to itself
//! ([`Host::with_cards`]), the card reached through the relay.
//!
//! ```text
//!   start ─► audit "started" ─► thread: with_cards { plan (card present, user only)
//!     │                                  ─► apply(waiting-for-holder actions of the card) }
//!     │                                  ─► audit "ended" ─► relay.finish(outcome)
//!     ▼
//!   first ToClient ─► SessionStep   step(answer) ─► next ToClient ─► SessionStep …
//! ```
//!
//! The plan is made again under the card lock, with the card present, for the holder alone:
//! what runs is what the planner gives that card now (a pass may have changed it since the
//! controller's last plan), and nothing else of the plan.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng as _;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::protocol::{ActionOutcome, ActionResult, Exchange, SessionOutcome, SessionStep};
use super::relay::{Relay, RelayCards, ToClient};
use crate::apply::{self, ApplySink, Outcome};
use crate::audit::{AuditLog, NewEntry};
use crate::operators::service::Host;
use crate::plan::{Action, ReasonCode};
use crate::runtime::{self, Environment};
use crate::secrets::MasterKey;
use crate::store::Store;

/// How long the relay waits for the workstation's answer to one command.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// What a session works with (from the API call that started it).
pub struct SessionWork {
    /// The policy in force.
    pub env: Arc<Environment>,
    /// The store.
    pub store: Arc<Store>,
    /// The master key.
    pub master: Arc<MasterKey>,
    /// The audit log.
    pub audit: Arc<AuditLog>,
    /// The machine's effects (the card lock).
    pub host: Arc<dyn Host>,
    /// The holder.
    pub user: String,
    /// The holder's card.
    pub card: String,
}

/// Why a session call failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No such session of this holder (or it ended).
    #[error("no self-service session of yours with this id is running")]
    NotFound,
    /// A session for the card runs already.
    #[error("a self-service session for card {0} is running already")]
    Busy(String),
    /// The session's executor did not go on in time.
    #[error("the session did not continue within {0} s")]
    Stalled(u64),
    /// The session could not be started or its audit entry written.
    #[error("{0}")]
    Failed(String),
}

struct Running {
    user: String,
    card: String,
    answers: mpsc::Sender<Vec<u8>>,
    out: Mutex<mpsc::Receiver<ToClient>>,
    touched: Mutex<Instant>,
}

/// The running sessions of one API server.
pub struct Sessions {
    running: Mutex<BTreeMap<String, Arc<Running>>>,
    wait: Duration,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new(DEFAULT_WAIT)
    }
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    /// Sessions whose relay waits up to `wait` for each answer of the workstation.
    pub fn new(wait: Duration) -> Self {
        Sessions {
            running: Mutex::new(BTreeMap::new()),
            wait,
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Running>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a session for `work`'s holder and card; answers with the first command for
    /// the card, or how it ended when nothing waited. Blocks (call it off the async runtime).
    pub fn start(&self, work: SessionWork) -> Result<SessionStep, SessionError> {
        {
            let mut map = self.map();
            // A session untouched for twice the wait has lost its workstation: its executor
            // ended on the relay's timeout.
            let stale = self.wait * 2;
            map.retain(|_, r| {
                r.touched
                    .lock()
                    .map(|t| t.elapsed() < stale)
                    .unwrap_or(false)
            });
            if map.values().any(|r| r.card == work.card) {
                return Err(SessionError::Busy(work.card));
            }
        }
        let placeholder = Zeroizing::new(crate::secrets::generate_pin(8));
        let (relay, out, answers) =
            Relay::new(&placeholder, self.wait).map_err(SessionError::Failed)?;
        audit(&work, "started", serde_json::json!({}))?;
        let mut id = [0u8; 16];
        rand::rng().fill_bytes(&mut id);
        let id = hex::encode(id);
        let running = Arc::new(Running {
            user: work.user.clone(),
            card: work.card.clone(),
            answers,
            out: Mutex::new(out),
            touched: Mutex::new(Instant::now()),
        });
        self.map().insert(id.clone(), running.clone());
        let spawned = std::thread::Builder::new()
            .name("self-service".into())
            .spawn(move || {
                let outcome = run(&work, &relay, &placeholder);
                let details = serde_json::json!({
                    "actions": outcome.actions.iter().map(|a| serde_json::json!({
                        "action": a.action, "result": a.result,
                    })).collect::<Vec<_>>(),
                    "error": outcome.error,
                });
                if let Err(e) = audit(&work, "ended", details) {
                    tracing::error!(card = %work.card, "self-service session end: {e}");
                }
                relay.finish(outcome);
            });
        if let Err(e) = spawned {
            self.map().remove(&id);
            return Err(SessionError::Failed(format!(
                "cannot start the session's thread: {e}"
            )));
        }
        self.next(&id, &running)
    }

    /// Hands the card's answer to the last command of session `id` (of this holder and card)
    /// to its executor; answers with the next command or how the session ended.
    pub fn step(
        &self,
        id: &str,
        user: &str,
        card: &str,
        response: Vec<u8>,
    ) -> Result<SessionStep, SessionError> {
        let running = self
            .map()
            .get(id)
            .filter(|r| r.user == user && r.card == card)
            .cloned()
            .ok_or(SessionError::NotFound)?;
        if let Ok(mut t) = running.touched.lock() {
            *t = Instant::now();
        }
        if running.answers.send(response).is_err() {
            self.map().remove(id);
            return Err(SessionError::NotFound);
        }
        self.next(id, &running)
    }

    fn next(&self, id: &str, running: &Running) -> Result<SessionStep, SessionError> {
        let out = running
            .out
            .lock()
            .map_err(|_| SessionError::Failed("the session was poisoned".into()))?;
        // Planning (a directory read) comes before the first command: a little longer.
        let patience = self.wait + Duration::from_secs(30);
        let next = out.recv_timeout(patience);
        drop(out);
        if let Ok(mut t) = running.touched.lock() {
            *t = Instant::now();
        }
        match next {
            Ok(ToClient::Apdu { apdu, pin }) => Ok(SessionStep {
                session: Some(id.to_string()),
                exchange: Some(Exchange {
                    apdu: hex::encode_upper(apdu),
                    pin,
                }),
                outcome: None,
            }),
            Ok(ToClient::Done(outcome)) => {
                self.map().remove(id);
                Ok(SessionStep {
                    session: None,
                    exchange: None,
                    outcome: Some(outcome),
                })
            }
            Err(RecvTimeoutError::Timeout) => Err(SessionError::Stalled(patience.as_secs())),
            Err(RecvTimeoutError::Disconnected) => {
                self.map().remove(id);
                Err(SessionError::NotFound)
            }
        }
    }
}

/// The audit entry of a session's start or end: actor the holder, `via: self-service`.
fn audit(
    work: &SessionWork,
    outcome: &str,
    mut details: serde_json::Value,
) -> Result<(), SessionError> {
    details["via"] = "self-service".into();
    details["card"] = work.card.clone().into();
    work.audit
        .append(
            NewEntry {
                actor: work.user.clone(),
                kind: "self-service-session".into(),
                target: work.user.clone(),
                outcome: outcome.into(),
                details,
            },
            OffsetDateTime::now_utc(),
        )
        .map(|_| ())
        .map_err(|e| {
            SessionError::Failed(format!("not done: the audit log cannot be written: {e}"))
        })
}

/// Whether `action` is one the holder's session runs: it waits for the holder of `card`
/// alone (the PIN Keyfleet holds cannot be used), the card present and not suspect.
pub fn waits_for_holder(action: &Action, card: &str) -> bool {
    action.card.as_deref() == Some(card)
        && action.waiting_for_holder
        && !action.card_suspect
        && action.reason.code == ReasonCode::HolderPinUnknown
}

/// Plans and runs what waits for the holder on the card, the cards held.
fn run(work: &SessionWork, relay: &Arc<Relay>, placeholder: &str) -> SessionOutcome {
    let mut outcome = SessionOutcome::default();
    work.host
        .with_cards(&mut || outcome = run_held(work, relay, placeholder));
    outcome
}

fn run_held(work: &SessionWork, relay: &Arc<Relay>, placeholder: &str) -> SessionOutcome {
    let failed = |e: String| SessionOutcome {
        actions: Vec::new(),
        error: Some(e),
    };
    let now = OffsetDateTime::now_utc();
    let inventory = match work.store.inventory() {
        Ok(i) => i,
        Err(e) => return failed(format!("the inventory cannot be read: {e}")),
    };
    let pass =
        match runtime::plan_with_card_present(&work.env, inventory, &work.card, &work.user, now) {
            Ok(p) => p,
            Err(e) => return failed(format!("cannot plan: {e}")),
        };
    let mut plan = pass.plan.clone();
    plan.actions.retain(|a| waits_for_holder(a, &work.card));
    if plan.actions.is_empty() {
        return SessionOutcome::default();
    }
    let cas =
        runtime::connect_authorities(&work.env.policy, &work.env.state_dir, &work.master, now);
    let cards = RelayCards::new(&work.card, relay.clone());
    let clock = OffsetDateTime::now_utc;
    let ctx = apply::Context {
        store: &work.store,
        master: &work.master,
        cas: &cas,
        cards: &cards,
        desired: &pass.desired,
        clock: &clock,
        actor: work.user.clone(),
        pin_mailer_dir: work.env.state_dir.join("pin-mailer"),
        crash: apply::CrashPoint::default(),
        audit: &work.audit,
        holder_pins: [(work.card.clone(), Zeroizing::new(placeholder.to_string()))].into(),
        archive: crate::archive::ArchiveKeys::new(&work.env.policy, &work.env.state_dir),
    };
    let mut sink = Collect::default();
    let report = apply::apply(&ctx, &plan, &mut sink);
    SessionOutcome {
        actions: sink.0,
        error: report.audit_failure,
    }
}

/// Collects how each action ended.
#[derive(Default)]
struct Collect(Vec<ActionOutcome>);

impl ApplySink for Collect {
    fn started(&mut self, _: &Action) {}

    fn finished(&mut self, action: &Action, outcome: &Outcome) {
        let (result, serials, message) = match outcome {
            Outcome::Done(s) => (ActionResult::Done, s.clone(), None),
            Outcome::Failed(m) => (ActionResult::Failed, Vec::new(), Some(m.clone())),
            Outcome::Skipped(m) => (ActionResult::Skipped, Vec::new(), Some(m.clone())),
        };
        self.0.push(ActionOutcome {
            action: action.id(),
            kind: action.kind.as_str().to_string(),
            result,
            serials,
            message,
        });
    }
}
