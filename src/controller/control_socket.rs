//! The control socket of a running controller (`<state dir>/control.sock`, 0600): the state
//! it shares with the loop and the HTTP endpoint, and the answers to `status`, `inventory`,
//! `history` and `approve`; and `approve` with no controller running.

use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::metrics::Metrics;
use super::operator_host::{OfflineHost, RunningHost};
use super::triggers::Triggers;
use super::{ControllerError, sources};
use crate::operators::calls;
use crate::operators::identity::{self, IdentityError, Operator};
use crate::operators::service::Operations;
use crate::runtime::{self, Environment};
use crate::statedir::control::{self, OperatorCall, Request, Response};
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
    /// Held by a pass and by operator work on cards (unblock), so they never meet on a card.
    pub(super) card_work: Arc<Mutex<()>>,
    /// What operator calls are decided with: the policy in force, the groups roles name
    /// (from the last pass's snapshot), the master key.
    pub(super) operators: Mutex<Option<OperatorContext>>,
    /// Set once an upkeep recovered the requests the last stop interrupted.
    pub(super) requests_recovered: AtomicBool,
    /// The last pass's plan (`GET /plan`, the drift report).
    pub(super) last_plan: Mutex<Option<Arc<crate::plan::Plan>>>,
}

/// The policy and directory groups operator calls are decided with, as of the last pass.
#[derive(Clone)]
pub struct OperatorContext {
    /// The environment in force.
    pub env: Arc<Environment>,
    /// Members of the groups roles name.
    pub groups: Arc<crate::operators::roles::RoleGroups>,
    /// The master key.
    pub master: Arc<crate::secrets::MasterKey>,
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

    /// The last pass's plan, once a pass planned.
    pub fn last_plan(&self) -> Option<Arc<crate::plan::Plan>> {
        self.last_plan.lock().ok().and_then(|p| p.clone())
    }

    /// The operator context, once the controller has one.
    pub fn operator_context(&self) -> Option<OperatorContext> {
        self.operators.lock().ok().and_then(|o| o.clone())
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

/// Binds the operator socket (`Settings.spec.operators.socket`) with mode 0666: every local
/// user may connect; who they are is their uid (SO_PEERCRED) through
/// `Settings.spec.operators.local`. A file in the way is replaced only when it is a socket.
pub(super) fn bind_operator_socket(path: &Path) -> Result<UnixListener, ControllerError> {
    use std::os::unix::fs::FileTypeExt as _;
    let err = |source| ControllerError::Socket {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).map_err(err)?,
        Ok(_) => {
            return Err(err(std::io::Error::other(
                "a file that is not a socket is in the way; remove it or choose another path",
            )));
        }
        Err(_) => {}
    }
    // Bound and opened up inside a folder of our own, then moved into place: nobody can
    // swap what is made 0666 for a link to something else.
    let parent = path.parent().unwrap_or(Path::new("/"));
    let private = parent.join(format!(
        ".keyfleet-socket-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(err)?;
    let tmp = private.join("socket");
    let result = UnixListener::bind(&tmp)
        .and_then(|listener| {
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o666))?;
            std::fs::rename(&tmp, path)?;
            Ok(listener)
        })
        .map_err(err);
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&private);
    let listener = result?;
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
    let peer = stream.peer_cred().ok().map(|c| c.uid());
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
            Ok(Request::Operator { call }) => {
                let shared = shared.clone();
                tokio::task::spawn_blocking(move || operator_call(&shared, peer, &call))
                    .await
                    .unwrap_or_else(|e| Response::Error {
                        message: format!("the operator call failed internally: {e}"),
                    })
            }
            Ok(req) => {
                let apart = {
                    let (shared, req) = (shared.clone(), req.clone());
                    tokio::task::spawn_blocking(move || non_owner_read(&shared, peer, &req))
                        .await
                        .unwrap_or_else(|e| {
                            Some(Response::Error {
                                message: format!("the read failed internally: {e}"),
                            })
                        })
                };
                match apart {
                    None => answer(req, &shared).await,
                    Some(answered) => answered,
                }
            }
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
        Request::Operator { .. } => Response::Error {
            message: "operator calls are answered apart".into(),
        },
    }
}

/// Runs `f` as the operator the peer is, with the operations of the controller's current
/// context; answers `unavailable` while the controller starts and `unauthorized` (audited) for
/// a peer who is no operator.
fn as_peer(
    shared: &Arc<Shared>,
    peer: Option<u32>,
    f: impl FnOnce(&Operations<'_>, &crate::operators::roles::Grants) -> Response,
) -> Response {
    let refuse = |code: &str, message: String| Response::Refused {
        code: code.into(),
        message,
    };
    let Some(ctx) = shared.operator_context() else {
        return refuse(
            "unavailable",
            "the controller is starting; try again".into(),
        );
    };
    let operator = match peer_operator(&shared.state_dir, peer, &ctx.env) {
        Ok(o) => o,
        Err(e) => {
            let actor = peer.map_or_else(|| "unknown".into(), |u| format!("uid:{u}"));
            return match log_unauthorized(&shared.audit, &actor, "control-socket", &e) {
                Ok(()) => refuse("unauthorized", e.to_string()),
                Err(m) => refuse("audit-log", m),
            };
        }
    };
    let host = RunningHost {
        shared: shared.clone(),
        env: ctx.env.clone(),
        master: ctx.master.clone(),
    };
    let ops = Operations {
        policy: &ctx.env.policy,
        store: &shared.store,
        audit: &shared.audit,
        groups: &ctx.groups,
        host: &host,
        now: OffsetDateTime::now_utc(),
    };
    let grants = ops.grants(&operator);
    f(&ops, &grants)
}

/// An operator call on the control socket, made as the peer's Unix user.
fn operator_call(shared: &Arc<Shared>, peer: Option<u32>, call: &OperatorCall) -> Response {
    let response = as_peer(shared, peer, |ops, grants| {
        let response = match calls::dispatch(ops, grants, call) {
            Ok(value) => Response::Operator { value },
            Err(e) => Response::Refused {
                code: calls::error_code(&e).0.into(),
                message: e.to_string(),
            },
        };
        if calls::changes_requests(call)
            && let Ok(open) = ops.open_requests()
        {
            shared.metrics.open_requests(open);
        }
        response
    });
    let outcome = match &response {
        Response::Refused { code, .. } => code.clone(),
        _ => "ok".into(),
    };
    shared.metrics.operator_call(&outcome);
    response
}

/// A read request (inventory, history, status) from anyone but the state directory's owner
/// (or root): answered through the operator service, as the operator the peer is, within
/// their permissions and template scope, audited. `None`: the owner, answered directly.
fn non_owner_read(shared: &Arc<Shared>, peer: Option<u32>, req: &Request) -> Option<Response> {
    let owner = identity::state_dir_owner(&shared.state_dir);
    if peer.is_some_and(|uid| identity::is_system_owner(uid, owner)) {
        return None;
    }
    let refuse = |code: &str, message: String| Response::Refused {
        code: code.into(),
        message,
    };
    Some(as_peer(shared, peer, |ops, g| {
        let answer = match req {
            Request::Inventory => ops
                .inventory(g)
                .map(|inventory| Response::Inventory { inventory }),
            Request::History => ops.history(g).map(|entries| Response::History { entries }),
            _ => {
                // The status names every held revocation and pending action: only for those
                // who may read the whole inventory.
                if let Some(crate::operators::roles::Scope::Templates(_)) =
                    g.scope(crate::policy::model::Permission::ViewInventory)
                {
                    return refuse(
                        "forbidden",
                        format!(
                            "{} has `view-inventory` for some templates only; the status needs it for all",
                            g.name()
                        ),
                    );
                }
                ops.view(g, "status").map(|()| Response::Status {
                    status: Box::new(shared.status()),
                })
            }
        };
        answer.unwrap_or_else(|e| refuse(calls::error_code(&e).0, e.to_string()))
    }))
}

/// The operator a control-socket peer is.
fn peer_operator(
    state_dir: &Path,
    peer: Option<u32>,
    env: &Environment,
) -> Result<Operator, IdentityError> {
    let owner = identity::state_dir_owner(state_dir);
    let uid = peer.unwrap_or(u32::MAX);
    let name = identity::unix_user_name(uid);
    let owner_name = identity::unix_user_name(owner);
    identity::from_peer(
        uid,
        name.as_deref(),
        owner,
        owner_name.as_deref(),
        &env.policy.settings.spec.operators,
    )
}

pub use crate::operators::service::log_unauthorized;

/// An operator call with no controller running: the command takes the state lock and acts
/// as the system owner (only the state directory's owner, or root, can open it), through the
/// same operations the controller runs.
pub fn operator_offline(
    env: &Environment,
    call: &OperatorCall,
) -> Result<Response, ControllerError> {
    let _lock = StateLock::acquire(&env.state_dir, "operator")?;
    let store = Store::open(&env.state_dir)?;
    let master = runtime::master_key_for(env).map_err(ControllerError::Pass)?;
    let audit = runtime::audit_log(env, &master).map_err(ControllerError::Pass)?;
    let host = OfflineHost {
        env,
        store: &store,
        master: &master,
        audit: &audit,
        held: std::sync::OnceLock::new(),
    };
    // Groups only matter to operators other than the system owner, who are never offline.
    let groups = crate::operators::roles::RoleGroups::default();
    let ops = Operations {
        policy: &env.policy,
        store: &store,
        audit: &audit,
        groups: &groups,
        host: &host,
        now: OffsetDateTime::now_utc(),
    };
    let uid = rustix::process::geteuid().as_raw();
    let operator = match peer_operator(&env.state_dir, Some(uid), env) {
        Ok(o) => o,
        Err(e) => {
            return Ok(
                match log_unauthorized(&audit, &format!("uid:{uid}"), "local", &e) {
                    Ok(()) => Response::Refused {
                        code: "unauthorized".into(),
                        message: e.to_string(),
                    },
                    Err(m) => Response::Refused {
                        code: "audit-log".into(),
                        message: m,
                    },
                },
            );
        }
    };
    let grants = ops.grants(&operator);
    let response = match calls::dispatch(&ops, &grants, call) {
        Ok(value) => Response::Operator { value },
        Err(e) => Response::Refused {
            code: calls::error_code(&e).0.into(),
            message: e.to_string(),
        },
    };
    // Whatever is approved and not yet run (this call's, or one interrupted) runs now.
    if let Err(e) = ops.upkeep(true) {
        tracing::warn!("requests upkeep: {e}");
    }
    Ok(response)
}
