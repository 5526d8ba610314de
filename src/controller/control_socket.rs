//! The control socket of a running controller (`<state dir>/control.sock`, 0600): the state
//! it shares with the loop and the HTTP endpoint, and the answers to `status`, `inventory`,
//! `history` and `approve`; and `approve` with no controller running.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::metrics::Metrics;
use super::triggers::{Trigger, Triggers};
use super::{ControllerError, sources, valve};
use crate::runtime::{self, Environment};
use crate::statedir::control::{self, Request, Response};
use crate::statedir::lock::StateLock;
use crate::statedir::status::{ControllerStatus, HeldRevocation};
use crate::store::Store;

/// State shared by the loop, the control socket and the HTTP endpoint.
pub struct Shared {
    pub(super) store: Arc<Store>,
    pub(super) status: Mutex<ControllerStatus>,
    pub(super) metrics: Metrics,
    pub(super) triggers: Triggers,
    pub(super) approvals_lock: Arc<Mutex<()>>,
    /// The revocations the valve holds, published by the pass as soon as it has split its
    /// plan (before it runs anything), so that `approve` never sees a list that the pass in
    /// flight has already acted on.
    pub(super) held: Arc<Mutex<Vec<HeldRevocation>>>,
    pub(super) state_dir: PathBuf,
    pub(super) ready: AtomicBool,
    pub(super) sources: sources::SourceStates,
    /// The audit log (operator calls through the control socket are written to it).
    pub(super) audit: Arc<crate::audit::AuditLog>,
}

impl Shared {
    /// True once the first pass completed.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub(super) fn status(&self) -> ControllerStatus {
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

/// Binds the control socket with mode 0600: bound under a temporary name, restricted, then
/// renamed into place, so that it is never reachable with looser permissions.
pub(super) fn bind_socket(state_dir: &Path) -> Result<UnixListener, ControllerError> {
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

pub(super) async fn serve_control(listener: UnixListener, shared: Arc<Shared>) {
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
