//! The controller: `keyfleet run`, a level-triggered reconciler (kube-runtime's controller and
//! cert-manager's controllers are the models: events only decide *when* a full pass runs; the
//! pass recomputes everything).
//!
//! ```text
//!  policy dir ─┐ notify (debounced, per directory)      ┌─► pass (blocking pool):
//!  data files ─┤                                         │   observe ─ plan ─ valve ─ backoff
//!  SIGHUP ─────┼─► Triggers (coalescing set) ─► loop ────┤   ─ apply action by action
//!  timers ─────┤   renewal point, retry due, CRL refresh │   ─ publish CRLs
//!              │   point, resync                         │
//!  cards/LDAP ─┘   (other watchers fire the same set)    └─► status + metrics
//!  control socket (plan/audit/inventory/history/status/approve)   HTTP /healthz /readyz /metrics
//! ```
//!
//! Submodules: [`triggers`] (what wakes the loop, file watch), [`pass`] (one pass),
//! [`backoff`] (per-object error policy), [`valve`] (held revocations and approvals),
//! [`metrics`], [`http`]; the state lock, the control socket's protocol and the status values
//! live below it, in [`crate::statedir`], shared with the CLI. The controller reuses `runtime`, `plan` and `apply`
//! exactly as `keyfleet apply` does and never calls the CLI; it prints nothing (it logs with
//! tracing).

pub mod backoff;
pub mod http;
pub mod metrics;
pub mod pass;
pub mod sources;
pub mod triggers;
pub mod valve;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use self::metrics::Metrics;
use self::pass::{ObservationCache, PassOutcome, PassState};
use self::triggers::{FileWatch, Trigger, Triggers, WatchSpec};
use crate::policy::Diagnostics;
use crate::policy::model::DirectorySpec;
use crate::runtime::{self, Environment, PassError};
use crate::statedir::control::{self, Request, Response};
use crate::statedir::lock::{LockError, StateLock};
use crate::statedir::status::{self, BackoffView, ControllerStatus, HeldRevocation};
use crate::store::{Store, StoreError};

/// How `keyfleet run` runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The policy directory.
    pub policy_dir: PathBuf,
    /// `--state-dir` / `KEYFLEET_STATE_DIR`.
    pub state_dir: Option<PathBuf>,
    /// Serve HTTP (`/healthz`, `/readyz`, `/metrics`) on this address.
    pub listen: Option<SocketAddr>,
    /// A full pass at least this often, even when nothing was seen to change.
    pub resync: Duration,
    /// Longest wait for the action in flight at shutdown.
    pub shutdown_grace: Duration,
    /// Name recorded in the history for the controller's actions.
    pub actor: String,
    /// Test instrumentation; `keyfleet run` sets none.
    pub pass_hook: Option<PassHook>,
}

/// Test instrumentation: called with each pass's number on the pass's thread, just before
/// the pass runs. `keyfleet run` never sets one (nothing a user writes or sets reaches it);
/// the tests use it to make a pass panic as a defect would.
#[derive(Clone)]
pub struct PassHook(pub Arc<dyn Fn(u64) + Send + Sync>);

impl std::fmt::Debug for PassHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PassHook")
    }
}

/// The controller could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The policy set is invalid at start (there is no last valid one to keep).
    #[error("the policy set is invalid:\n{0}")]
    Policy(Diagnostics),
    /// Preparing the environment failed.
    #[error(transparent)]
    Pass(PassError),
    /// Another process holds the state directory.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The policy directory cannot be resolved.
    #[error("policy directory {path}: {source}")]
    PolicyDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The control socket could not be created.
    #[error("control socket {path}: {source}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP endpoint could not listen.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// The async runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// Changing the approvals failed.
    #[error(transparent)]
    Approvals(#[from] valve::ApprovalError),
    /// A pass panicked (a defect in Keyfleet). The controller stops and `keyfleet run` exits
    /// non-zero, so that a supervisor restarts it; the journal finishes the interrupted work
    /// at the next start.
    #[error(
        "pass {number} failed internally ({message}); the controller stopped (this is a defect in Keyfleet: please report it)"
    )]
    PassPanicked {
        /// The pass.
        number: u64,
        /// The panic's message.
        message: String,
    },
}

/// State shared by the loop, the control socket and the HTTP endpoint.
pub struct Shared {
    store: Arc<Store>,
    status: Mutex<ControllerStatus>,
    metrics: Metrics,
    triggers: Triggers,
    approvals_lock: Arc<Mutex<()>>,
    /// The revocations the valve holds, published by the pass as soon as it has split its
    /// plan (before it runs anything), so that `approve` never sees a list that the pass in
    /// flight has already acted on.
    held: Arc<Mutex<Vec<HeldRevocation>>>,
    state_dir: PathBuf,
    ready: AtomicBool,
    sources: sources::SourceStates,
    /// The audit log (operator calls through the control socket are written to it).
    audit: Arc<crate::audit::AuditLog>,
}

impl Shared {
    /// True once the first pass completed.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn status(&self) -> ControllerStatus {
        let mut status = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        if let Ok(sources) = self.sources.lock() {
            status.sources = sources.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        }
        if let Ok(held) = self.held.lock() {
            status.held = held.clone();
        }
        status
    }

    /// Approves every revocation the valve holds now; returns them.
    fn approve(&self, actor: &str) -> Result<Vec<HeldRevocation>, valve::ApprovalError> {
        let held = self.status().held;
        if held.is_empty() {
            return Ok(held);
        }
        {
            let _guard = self.approvals_lock.lock();
            valve::log_approval(&self.audit, actor, &held)?;
            let mut ids = valve::load_approvals(&self.state_dir)?;
            ids.extend(held.iter().map(|h| h.id.clone()));
            valve::save_approvals(&self.state_dir, &ids)?;
        }
        tracing::warn!(
            actor,
            count = held.len(),
            "held revocations approved; they run in the next pass"
        );
        self.triggers.fire(Trigger::Approved);
        Ok(held)
    }
}

/// Runs the controller until SIGTERM or SIGINT. Builds its own tokio runtime.
pub fn run(opts: RunOptions) -> Result<(), ControllerError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ControllerError::Runtime)?;
    rt.block_on(serve(opts, Triggers::new()))
}

fn load(opts: &RunOptions, policy_dir: &Path) -> Result<Environment, ControllerError> {
    runtime::load(policy_dir, opts.state_dir.as_deref()).map_err(|e| match e {
        PassError::Policy(d) => ControllerError::Policy(d),
        other => ControllerError::Pass(other),
    })
}

fn watch_spec(env: &Environment, policy_dir: &Path, state_dir: &Path) -> WatchSpec {
    // Data files inside the policy directory are part of the policy set (read with it).
    let data_files = env
        .policy
        .directories
        .iter()
        .filter(|(name, _)| !env.policy_data.contains(name))
        .filter_map(|(name, d)| match &d.spec {
            DirectorySpec::File(f) => Some((absolute(&d.resolve_path(&f.path)), name.clone())),
            DirectorySpec::Ldap(_) => None,
        })
        .collect();
    WatchSpec {
        policy_dir: policy_dir.to_path_buf(),
        state_dir: state_dir.to_path_buf(),
        data_files,
        policy_data_files: env.policy_data.paths().map(Path::to_path_buf).collect(),
    }
}

/// An absolute path with its folder resolved (the file itself may be absent for a moment).
fn absolute(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        })
        .map(|p| p.join(name))
        .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

fn start_watch(spec: WatchSpec, triggers: &Triggers) -> Option<FileWatch> {
    match triggers::watch_files(spec, triggers.clone()) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!("cannot watch the policy and directory files: {e}; relying on resync");
            None
        }
    }
}

/// The timer that wakes the loop to checkpoint the audit log (no pass).
const AUDIT_TIMER: &str = "audit-checkpoint";

/// Runs the controller on the current tokio runtime. `triggers` may already be shared with
/// other sources (card watchers, directory pollers); they fire into the same set.
pub async fn serve(opts: RunOptions, triggers: Triggers) -> Result<(), ControllerError> {
    let policy_dir =
        std::fs::canonicalize(&opts.policy_dir).map_err(|source| ControllerError::PolicyDir {
            path: opts.policy_dir.clone(),
            source,
        })?;
    let env = load(&opts, &policy_dir)?;
    let lock = StateLock::acquire(&env.state_dir, "run")?;
    let store = Arc::new(open_store(&env.state_dir).await?);
    let master = Arc::new(runtime::master_key_for(&env).map_err(ControllerError::Pass)?);
    let audit = Arc::new(runtime::audit_log(&env, &master).map_err(ControllerError::Pass)?);
    let state_dir = std::fs::canonicalize(&env.state_dir).unwrap_or(env.state_dir.clone());
    let mut sources = sources::Sources::new(triggers.clone());
    let shared = Arc::new(Shared {
        store: store.clone(),
        status: Mutex::new(ControllerStatus {
            pid: std::process::id(),
            started_at: Some(OffsetDateTime::now_utc()),
            policy_dir: policy_dir.display().to_string(),
            state_dir: state_dir.display().to_string(),
            ..ControllerStatus::default()
        }),
        metrics: Metrics::new(),
        triggers: triggers.clone(),
        approvals_lock: Arc::new(Mutex::new(())),
        held: Arc::default(),
        state_dir: state_dir.clone(),
        ready: AtomicBool::new(false),
        sources: sources.states(),
        audit: audit.clone(),
    });

    let socket = bind_socket(&state_dir)?;
    tokio::spawn(serve_control(socket, shared.clone()));
    if let Some(addr) = opts.listen {
        let (local, server) = http::bind(addr, shared.clone())
            .await
            .map_err(|source| ControllerError::Listen { addr, source })?;
        tracing::info!(%local, "HTTP endpoint listening");
        tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!("HTTP endpoint stopped: {e}");
            }
        });
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    install_signals(shutdown_tx, triggers.clone())?;

    let mut watch = start_watch(watch_spec(&env, &policy_dir, &state_dir), &triggers);
    sources.update(&env.policy, &source_inventory(&env, &store));
    sources.settle(crate::observe::ldap::CONNECT_TIMEOUT).await;
    let mut pass_state = Some(PassState {
        env: Arc::new(env),
        store,
        master,
        audit: audit.clone(),
        backoff: Default::default(),
        cache: ObservationCache::default(),
        authorities: Default::default(),
        inventory: None,
        needs_recovery: true,
        actor: opts.actor.clone(),
        stop: Arc::new(AtomicBool::new(false)),
        approvals_lock: shared.approvals_lock.clone(),
        held: shared.held.clone(),
        state_dir: state_dir.clone(),
    });
    tracing::info!(
        policy_dir = %policy_dir.display(),
        state_dir = %state_dir.display(),
        "controller started"
    );
    triggers.fire(Trigger::Startup);

    let mut number = 0u64;
    // An internal failure that stopped the loop: returned once everything is released.
    let mut failure: Option<ControllerError> = None;
    let mut next_wake: (OffsetDateTime, &'static str) =
        (OffsetDateTime::now_utc() + opts.resync, "resync");
    loop {
        let sleep_for = (next_wake.0 - OffsetDateTime::now_utc())
            .try_into()
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_millis(500));
        let mut rx = shutdown_rx.clone();
        tokio::select! {
            _ = triggers.wait() => {}
            _ = tokio::time::sleep(sleep_for) => triggers.fire(Trigger::Timer(next_wake.1)),
            _ = rx.wait_for(|s| *s) => break,
        }
        let fired = triggers.take();
        if fired.is_empty() {
            continue;
        }
        // Sign what the log gained since the last checkpoint, at most CHECKPOINT_INTERVAL on.
        if let Err(e) = audit.checkpoint_if_due(OffsetDateTime::now_utc()) {
            tracing::error!("cannot checkpoint the audit log: {e}");
        }
        let (entries, checkpointed) = audit.head();
        shared.metrics.audit_log(entries, checkpointed);
        if fired
            .iter()
            .all(|t| matches!(t, Trigger::Timer(AUDIT_TIMER)))
        {
            next_wake = (OffsetDateTime::now_utc() + opts.resync, "resync");
            continue;
        }
        let Some(mut state) = pass_state.take() else {
            break;
        };
        for t in &fired {
            match t {
                // An LDAP poller saw the change token move: observe that directory again.
                Trigger::DirectoryChanged(name) => state.cache.invalidate(name),
                // The periodic resync re-reads every directory.
                Trigger::Timer("resync") => state.cache.invalidate_all(),
                _ => {}
            }
        }
        if fired.iter().any(Trigger::reloads_policy) {
            reload(
                &opts,
                &policy_dir,
                &mut state,
                &shared,
                &triggers,
                &mut watch,
            );
        }
        let only_directories = fired
            .iter()
            .all(|t| matches!(t, Trigger::DirectoryChanged(_)));
        let policy_only = fired.iter().all(Trigger::reloads_policy);
        let nothing_changed = only_directories
            && fired.iter().all(|t| match t {
                Trigger::DirectoryChanged(name) => !state.cache.changed(&state.env, name),
                _ => true,
            });
        let policy_failed = policy_only && shared.status().policy_error.is_some();
        if nothing_changed || policy_failed {
            tracing::debug!(?fired, "no change that needs a pass");
            pass_state = Some(state);
            continue;
        }
        number += 1;
        let labels: Vec<String> = fired.iter().map(Trigger::label).collect();
        let stop = state.stop.clone();
        let hook = opts.pass_hook.clone();
        let mut handle = tokio::task::spawn_blocking(move || {
            if let Some(PassHook(hook)) = hook {
                hook(number);
            }
            let out = pass::run_pass(&mut state, number, labels);
            (state, out)
        });
        let mut rx = shutdown_rx.clone();
        let joined = tokio::select! {
            r = &mut handle => r,
            _ = rx.wait_for(|s| *s) => {
                tracing::info!("shutdown asked: finishing the action in flight");
                stop.store(true, Ordering::SeqCst);
                match tokio::time::timeout(opts.shutdown_grace, &mut handle).await {
                    Ok(_) => tracing::info!("pass stopped cleanly"),
                    Err(_) => tracing::warn!(
                        "the action in flight did not finish within {:?}; the journal will finish it at the next start",
                        opts.shutdown_grace
                    ),
                }
                break;
            }
        };
        let (state, out) = match joined {
            Ok(v) => v,
            Err(e) => {
                let message = if e.is_panic() {
                    runtime::panic_message(&*e.into_panic())
                } else {
                    e.to_string()
                };
                tracing::error!("pass {number} failed internally ({message}); stopping");
                failure = Some(ControllerError::PassPanicked { number, message });
                break;
            }
        };
        next_wake = record(&shared, &state, &out, opts.resync);
        let (entries, signed) = audit.head();
        let checkpoint_at = OffsetDateTime::now_utc() + crate::audit::CHECKPOINT_INTERVAL;
        if entries > signed && checkpoint_at < next_wake.0 {
            next_wake = (checkpoint_at, AUDIT_TIMER);
        }
        // Follow the policy in force (a reload may add or drop PIV, tokens or LDAP).
        sources.update(
            &state.env.policy,
            &source_inventory(&state.env, &state.store),
        );
        pass_state = Some(state);
    }
    drop(watch);
    drop(sources);
    // At shutdown: sign the log's head.
    if let Err(e) = audit.checkpoint(OffsetDateTime::now_utc()) {
        tracing::error!("cannot checkpoint the audit log at shutdown: {e}");
    }
    let _ = std::fs::remove_file(control::socket_path(&state_dir));
    tracing::info!("controller stopped");
    drop(lock);
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The inventory, when the sources need it to decide on PC/SC (a policy with PIV templates
/// or stocks decides alone, without reading it).
fn source_inventory(env: &Environment, store: &Store) -> crate::inventory::Inventory {
    let empty = crate::inventory::Inventory::default();
    if crate::apply::Cards::uses_piv(&env.policy, &empty) {
        return empty;
    }
    store.inventory().unwrap_or_default()
}

/// Opens the store. A command that read it just before we took the lock (`inventory`,
/// `history`, ... open it briefly without the lock) may still hold it: wait for it a while.
async fn open_store(state_dir: &Path) -> Result<Store, ControllerError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match Store::open(state_dir) {
            Err(StoreError::Locked(_)) if tokio::time::Instant::now() < deadline => {
                tracing::info!("the store is open in a reading command; waiting for it");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => return Ok(other?),
        }
    }
}

fn reload(
    opts: &RunOptions,
    policy_dir: &Path,
    state: &mut PassState,
    shared: &Shared,
    triggers: &Triggers,
    watch: &mut Option<FileWatch>,
) {
    let result = load(opts, policy_dir).and_then(|env| {
        if env.state_dir != state.env.state_dir {
            Err(ControllerError::PolicyDir {
                path: env.state_dir,
                source: std::io::Error::other(format!(
                    "the state directory cannot change while the controller runs (it holds {}); restart it",
                    state.env.state_dir.display()
                )),
            })
        } else {
            Ok(env)
        }
    });
    match result {
        Ok(env) => {
            if state.env.policy != env.policy || state.env.policy_data != env.policy_data {
                tracing::info!("policy reloaded");
            }
            *watch = None;
            *watch = start_watch(watch_spec(&env, policy_dir, &state.state_dir), triggers);
            state.env = Arc::new(env);
            state.backoff.forget_permanent();
            state.cache.clear();
            if let Ok(mut s) = shared.status.lock() {
                s.policy_error = None;
            }
        }
        Err(e) => {
            shared.metrics.policy_reload_failures.inc();
            tracing::error!("policy reload failed; the last valid policy stays in force: {e}");
            if let Ok(mut s) = shared.status.lock() {
                s.policy_error = Some(e.to_string());
            }
        }
    }
}

/// Publishes a pass's outcome to metrics, status and the log; returns the next timer.
fn record(
    shared: &Shared,
    state: &PassState,
    out: &PassOutcome,
    resync: Duration,
) -> (OffsetDateTime, &'static str) {
    let now = OffsetDateTime::now_utc();
    let s = &out.summary;
    let m = &shared.metrics;
    m.count_pass(s.error.is_none(), s.duration_ms as f64 / 1000.0);
    for ((kind, outcome), n) in &out.counts {
        m.count_actions(kind, outcome, *n);
    }
    m.pending_card_actions
        .set(out.summary.waiting_for_card as i64);
    m.pending_holder_actions
        .set(out.summary.waiting_for_holder as i64);
    m.suspect_cards.set(out.summary.suspect_cards as i64);
    let (entries, checkpointed) = state.audit.head();
    m.audit_log(entries, checkpointed);
    let at = now.unix_timestamp_nanos() as f64 / 1e9;
    for name in &out.observed_ok {
        m.observed(&format!("directory/{name}"), at);
    }
    m.expiring_30d.set(out.expiring_30d);
    m.held_revocations.set(out.held.len() as i64);
    m.backoff_objects.set(state.backoff.entries().len() as i64);
    if s.valve_tripped {
        m.valve_trips.inc();
        tracing::warn!(
            held = out.held.len(),
            "safety valve tripped: revocations are held until `keyfleet approve` or the plan shrinks under the limits"
        );
    }
    if let Some(r) = &out.recovery
        && r.finished + r.abandoned > 0
    {
        tracing::info!(
            finished = r.finished,
            abandoned = r.abandoned,
            recovered = r.recovered_certificates.len(),
            "recovered interrupted work from the journal"
        );
    }
    match &s.error {
        Some(e) => tracing::error!(pass = s.number, "pass failed: {e}"),
        None => tracing::info!(
            pass = s.number,
            duration_ms = s.duration_ms,
            triggers = ?s.triggers,
            planned = s.planned,
            done = s.done,
            failed = s.failed,
            waiting_for_card = s.waiting_for_card,
            in_backoff = s.in_backoff,
            held = s.held,
            duration_us = s.duration_us,
            apdus = s.apdus,
            card_io_us = s.card_io_us,
            ca_us = s.ca_us,
            apply_us = s.apply_us,
            apply_card_io_us = s.apply_card_io_us,
            "pass complete"
        ),
    }
    if s.error.is_none() && !out.interrupted {
        shared.ready.store(true, Ordering::SeqCst);
        m.ready.set(1);
    }

    let crl_views = record_crl(shared, out);

    let retry = state.backoff.next_due(now);
    let resync_at = now + resync;
    let mut wake = (resync_at, "resync");
    if let Some(r) = out.next_renewal
        && r < wake.0
    {
        wake = (r, "renewal");
    }
    if let Some(r) = retry
        && r < wake.0
    {
        wake = (r, "retry");
    }
    if let Some(r) = out.crl.iter().map(|c| c.next_refresh).min()
        && r < wake.0
    {
        wake = (r, "crl");
    }

    let mut waiting = vec![format!(
        "a change of the policy in {}",
        shared.status().policy_dir
    )];
    for (name, d) in &state.env.policy.directories {
        if let DirectorySpec::File(f) = &d.spec
            && !state.env.policy_data.contains(name)
        {
            waiting.push(format!(
                "a change of directory {name} ({})",
                d.resolve_path(&f.path).display()
            ));
        }
    }
    for (name, d) in &state.env.policy.directories {
        if let DirectorySpec::Ldap(l) = &d.spec {
            waiting.push(format!(
                "a change of LDAP directory {name} (change token polled every {})",
                l.poll_interval.map_or_else(
                    || {
                        crate::policy::duration::Duration::from_secs(
                            sources::DEFAULT_POLL.as_secs(),
                        )
                        .to_string()
                    },
                    |p| p.to_string()
                )
            ));
        }
    }
    if !out.pending.is_empty() {
        waiting.push(format!(
            "cards to be presented for {} pending action(s)",
            out.pending.len()
        ));
    }
    if !out.held.is_empty() {
        waiting.push(format!(
            "`keyfleet approve` for {} held revocation(s)",
            out.held.len()
        ));
    }
    if let Some(r) = out.next_renewal {
        waiting.push(format!("the next renewal point at {}", rfc3339(r)));
    }
    if let Some(r) = retry {
        waiting.push(format!("the next retry at {}", rfc3339(r)));
    }
    for c in &out.crl {
        waiting.push(format!(
            "the next CRL {} of CA {} at {}",
            if c.error.is_some() {
                "publication attempt"
            } else {
                "refresh"
            },
            c.ca,
            rfc3339(c.next_refresh)
        ));
    }
    waiting.push(format!("the periodic resync at {}", rfc3339(resync_at)));

    if let Ok(mut st) = shared.status.lock() {
        st.ready = shared.is_ready();
        st.last_pass = Some(s.clone());
        st.pending = out.pending.clone();
        st.held = out.held.clone();
        st.backoff = state
            .backoff
            .entries()
            .iter()
            .map(|(id, e)| BackoffView {
                id: id.clone(),
                kind: e.kind.clone(),
                user: e.user.clone(),
                attempts: e.attempts,
                last_error: e.last_error.clone(),
                permanent: e.class == backoff::ErrorClass::Permanent,
                retry_at: e.retry_at,
            })
            .collect();
        st.waiting_for = waiting;
        st.crl = crl_views;
    }
    wake
}

/// Logs and counts a pass's CRL publication; returns the status views (keeping when each CA's
/// CRL was last written).
fn record_crl(shared: &Shared, out: &PassOutcome) -> Vec<status::CrlView> {
    let now = OffsetDateTime::now_utc();
    let before = shared.status().crl;
    let mut samples = Vec::new();
    let mut views = Vec::new();
    for c in &out.crl {
        let next_update = c.current.as_ref().and_then(|i| i.next_update);
        let number = c.current.as_ref().and_then(|i| i.number);
        match (&c.error, &c.published) {
            (Some(e), _) => tracing::error!(
                ca = %c.ca,
                path = %c.path.display(),
                retry_at = %rfc3339(c.next_refresh),
                "cannot publish the CRL (the revocations stand): {e}"
            ),
            (None, Some(reason)) => tracing::info!(
                ca = %c.ca,
                path = %c.path.display(),
                number,
                next_update = %next_update.map(rfc3339).unwrap_or_default(),
                "CRL published: {reason}"
            ),
            (None, None) => {}
        }
        samples.push((
            c.ca.as_str(),
            next_update.map(|t| t.unix_timestamp_nanos() as f64 / 1e9),
            c.published.is_some(),
            c.error.is_some(),
        ));
        let last_published = if c.published.is_some() {
            Some(now)
        } else {
            before
                .iter()
                .find(|v| v.ca == c.ca)
                .and_then(|v| v.last_published)
        };
        views.push(status::CrlView {
            ca: c.ca.clone(),
            path: c.path.display().to_string(),
            number,
            next_update,
            next_refresh: Some(c.next_refresh),
            last_published,
            error: c.error.as_ref().map(ToString::to_string),
        });
    }
    shared.metrics.crl(&samples);
    views
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn install_signals(
    shutdown: watch::Sender<bool>,
    triggers: Triggers,
) -> Result<(), ControllerError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(ControllerError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ControllerError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(ControllerError::Signals)?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM received"); let _ = shutdown.send(true); }
                _ = int.recv() => { tracing::info!("SIGINT received"); let _ = shutdown.send(true); }
                _ = hup.recv() => { tracing::info!("SIGHUP received: reloading"); triggers.fire(Trigger::Reload); }
            }
        }
    });
    Ok(())
}

/// Binds the control socket with mode 0600: bound under a temporary name, restricted, then
/// renamed into place, so that it is never reachable with looser permissions.
fn bind_socket(state_dir: &Path) -> Result<UnixListener, ControllerError> {
    let path = control::socket_path(state_dir);
    let tmp = state_dir.join(format!("{}.{}", control::SOCKET_FILE, std::process::id()));
    let err = |source| ControllerError::Socket {
        path: path.clone(),
        source,
    };
    // We hold the state lock: any socket file here is left over from a crash.
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(err)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    Ok(listener)
}

async fn serve_control(listener: UnixListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(handle_control(stream, shared.clone()));
            }
            Err(e) => {
                tracing::warn!("control socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Largest request accepted on the control socket.
const MAX_REQUEST: u64 = 64 * 1024;

async fn handle_control(stream: UnixStream, shared: Arc<Shared>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let read_result = BufReader::new(read.take(MAX_REQUEST))
        .read_line(&mut line)
        .await;
    let response = match read_result {
        Err(e) => Response::Error {
            message: format!("cannot read the request: {e}"),
        },
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Err(e) => Response::Error {
                message: format!("invalid request: {e}"),
            },
            Ok(req) => answer(req, &shared).await,
        },
    };
    let shared2 = shared.clone();
    let bytes = tokio::task::spawn_blocking(move || {
        drop(shared2);
        let mut v = serde_json::to_vec(&response).unwrap_or_default();
        v.push(b'\n');
        v
    })
    .await
    .unwrap_or_default();
    if let Err(e) = write.write_all(&bytes).await {
        tracing::debug!("control socket client went away: {e}");
    }
    let _ = write.shutdown().await;
}

async fn answer(req: Request, shared: &Arc<Shared>) -> Response {
    let store = shared.store.clone();
    match req {
        Request::Inventory => tokio::task::spawn_blocking(move || store.inventory())
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_or_else(
                |message| Response::Error { message },
                |inventory| Response::Inventory { inventory },
            ),
        Request::History => tokio::task::spawn_blocking(move || store.history())
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_or_else(
                |message| Response::Error { message },
                |entries| Response::History { entries },
            ),
        Request::Status => Response::Status {
            status: Box::new(shared.status()),
        },
        Request::Approve { actor } => match shared.approve(&actor) {
            Ok(approved) => Response::Approved { approved },
            Err(e) => Response::Error {
                message: e.to_string(),
            },
        },
    }
}

/// `keyfleet approve` with no controller running: takes the state lock, plans, and approves
/// every revocation the valve would hold, for the next `keyfleet run` to apply.
pub fn approve_offline(
    env: &Environment,
    actor: &str,
) -> Result<Vec<HeldRevocation>, ControllerError> {
    let _lock = StateLock::acquire(&env.state_dir, "approve")?;
    let inventory = if env.state_dir.join("store").exists() {
        Store::open(&env.state_dir)?.inventory()?
    } else {
        crate::inventory::Inventory::default()
    };
    let cards = runtime::cards(env, &inventory);
    let pass = runtime::plan_pass_cards(
        env,
        inventory,
        &cards,
        OffsetDateTime::now_utc(),
        false,
        None,
    )
    .map_err(ControllerError::Pass)?;
    let mut ids = valve::load_approvals(&env.state_dir)?;
    let (_, held) = valve::hold_revocations(&pass.plan, &ids);
    if !held.is_empty() {
        let master = runtime::master_key_for(env).map_err(ControllerError::Pass)?;
        let audit = runtime::audit_log(env, &master).map_err(ControllerError::Pass)?;
        valve::log_approval(&audit, actor, &held)?;
        ids.extend(held.iter().map(|h| h.id.clone()));
        valve::save_approvals(&env.state_dir, &ids)?;
    }
    Ok(held)
}
