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
//! [`metrics`], [`http`], `control_socket` (the socket's server side and the state it shares
//! with the loop), `record` (a pass's outcome into status and metrics); the state lock, the control socket's protocol and the status values
//! live below it, in [`crate::statedir`], shared with the CLI. The controller reuses `runtime`, `plan` and `apply`
//! exactly as `keyfleet apply` does and never calls the CLI; it prints nothing (it logs with
//! tracing).

mod api_backend;
pub mod backoff;
mod control_socket;
pub mod http;
pub mod metrics;
pub mod operator_host;
pub mod pass;
mod record;
pub mod sources;
pub mod triggers;
pub mod valve;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;

pub use self::control_socket::{OperatorContext, Shared, log_unauthorized, operator_offline};
use self::control_socket::{bind_socket, serve_control};
use self::metrics::Metrics;
use self::pass::{ObservationCache, PassState};
use self::record::record;
use self::triggers::{FileWatch, Trigger, Triggers, WatchSpec};
use crate::policy::Diagnostics;
use crate::policy::model::DirectorySpec;
use crate::runtime::{self, Environment, PassError};
use crate::statedir::control;
use crate::statedir::lock::{LockError, StateLock};
use crate::statedir::status::ControllerStatus;
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
    /// Serve the operator API (HTTPS, client certificates, `/api/v1`) on this address.
    pub api: Option<SocketAddr>,
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
    /// The operator API could not be set up (its CAs, trust or server certificate).
    #[error("the operator API: {0}")]
    Api(#[from] crate::api::ApiSetupError),
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
        card_work: Arc::default(),
        operators: Mutex::new(None),
        last_plan: Mutex::new(None),
        requests_recovered: AtomicBool::new(false),
    });

    let socket = bind_socket(&state_dir)?;
    tokio::spawn(serve_control(socket, shared.clone()));
    let operator_socket = env.policy.settings.spec.operators.socket.clone();
    if let Some(path) = &operator_socket {
        let listener = control_socket::bind_operator_socket(path)?;
        tracing::info!(path = %path.display(), "operator socket listening");
        tokio::spawn(serve_control(listener, shared.clone()));
    }
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
    if let Some(addr) = opts.api {
        start_api(
            addr,
            &env,
            &state_dir,
            &master,
            &audit,
            &shared,
            shutdown_rx.clone(),
        )
        .await?;
    }
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
        let card_work = shared.card_work.clone();
        let mut handle = tokio::task::spawn_blocking(move || {
            if let Some(PassHook(hook)) = hook {
                hook(number);
            }
            let _cards = card_work.lock().unwrap_or_else(|p| p.into_inner());
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
        operator_upkeep(&shared, &state).await;
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
    if let Some(path) = &operator_socket {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("controller stopped");
    drop(lock);
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Starts the operator API on `addr`: the local CAs of the operator templates (created when
/// missing), the client trust, the server certificate, then the HTTPS loop until shutdown.
async fn start_api(
    addr: SocketAddr,
    env: &Environment,
    state_dir: &Path,
    master: &Arc<crate::secrets::MasterKey>,
    audit: &Arc<crate::audit::AuditLog>,
    shared: &Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ControllerError> {
    crate::api::ensure_operator_cas(&env.policy, state_dir, master)?;
    let trust = crate::api::client_trust(&env.policy, state_dir)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ControllerError::Listen { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ControllerError::Listen { addr, source })?;
    let tls = crate::api::server_config(&env.policy, state_dir, master, audit, local, &trust)?;
    let state = Arc::new(crate::api::routes::ApiState {
        backend: Arc::new(api_backend::ControllerBackend(shared.clone())),
        trust: Arc::new(trust),
        limiter: crate::api::RateLimiter::new(env.policy.settings.spec.api.rate_limit),
    });
    tracing::info!(%local, "operator API listening");
    tokio::spawn(crate::api::serve(
        listener,
        tls,
        crate::api::routes::router(state),
        shutdown,
    ));
    Ok(())
}

/// After a pass: approved requests that have not run, run (level-triggered); then the
/// operator calls are decided with this pass's policy and directory groups. Until one upkeep
/// has recovered the requests the last stop interrupted (failed, never run twice), no
/// operator call is answered, so nothing else can be running one.
async fn operator_upkeep(shared: &Arc<Shared>, state: &PassState) {
    let groups = crate::operators::roles::RoleGroups::resolve(
        &state.env.policy,
        state.cache.operator_snapshot(&state.env.policy),
    );
    let ctx = OperatorContext {
        env: state.env.clone(),
        groups: Arc::new(groups),
        master: state.master.clone(),
    };
    let publish = ctx.clone();
    let shared2 = shared.clone();
    let first = !shared.requests_recovered.load(Ordering::SeqCst);
    let recovered = tokio::task::spawn_blocking(move || {
        let shared = shared2;
        let host = operator_host::RunningHost {
            shared: shared.clone(),
            env: ctx.env.clone(),
            master: ctx.master.clone(),
        };
        let ops = crate::operators::service::Operations {
            policy: &ctx.env.policy,
            store: &shared.store,
            audit: &shared.audit,
            groups: &ctx.groups,
            host: &host,
            now: OffsetDateTime::now_utc(),
        };
        match ops.upkeep(first) {
            Ok(open) => {
                shared.metrics.open_requests(open);
                true
            }
            Err(e) => {
                tracing::error!("requests upkeep failed: {e}");
                false
            }
        }
    })
    .await
    .unwrap_or(false);
    if first && !recovered {
        // Operator calls wait (503) until interrupted requests are recovered.
        return;
    }
    shared.requests_recovered.store(true, Ordering::SeqCst);
    if let Ok(mut o) = shared.operators.lock() {
        *o = Some(publish);
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
