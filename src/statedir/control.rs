//! The control socket `<state dir>/keyfleet.sock` (mode 0600): while `keyfleet run` holds the
//! state directory (sled admits one process), the read commands (`plan`, `audit`,
//! `inventory`, `history`) get the store's records through it, and `status` and `approve`
//! talk to the controller. The commands render the answers exactly as they render what they
//! read themselves, so output and exit codes are the same either way.
//!
//! Protocol: one JSON [`Request`] line, one JSON [`Response`] line, then the server closes.
//! This module holds the protocol and the blocking client the CLI and `runtime` use
//! ([`request`], [`read_inventory`], [`read_history`]); the server's request handling is the
//! controller's. It plans and applies nothing.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::lock::StateLock;
use super::status::ControllerStatus;
use crate::inventory::Inventory;
use crate::store::{HistoryEntry, Store, StoreError};

/// File name of the socket inside the state directory.
pub const SOCKET_FILE: &str = "keyfleet.sock";

/// Longest time a client waits for an answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

/// The socket path of a state directory.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_FILE)
}

/// A request to the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// The recorded inventory.
    Inventory,
    /// The history.
    History,
    /// The controller's status.
    Status,
    /// An operator call, made as the peer's Unix user (SO_PEERCRED).
    Operator {
        /// The call.
        call: OperatorCall,
    },
}

/// An operator operation over the control socket (the API's operations, same names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "kebab-case")]
pub enum OperatorCall {
    /// Who the caller is to the controller.
    Whoami,
    /// Unblock a card's PIN.
    Unblock {
        /// The card.
        card: String,
        /// Why.
        #[serde(default)]
        reason: String,
    },
    /// One card, its certificates and incident history.
    ShowCard {
        /// The card.
        card: String,
    },
    /// Report a card incident.
    ReportIncident {
        /// The card.
        card: String,
        /// What happened.
        kind: crate::policy::model::IncidentKind,
        /// What the reporter says.
        #[serde(default)]
        comment: String,
    },
    /// A forgotten card was found.
    Found {
        /// The card.
        card: String,
        /// A comment.
        #[serde(default)]
        comment: String,
    },
    /// Wipe a lost card that turned up back to stock.
    RetireFoundLost {
        /// The card.
        card: String,
        /// A comment.
        #[serde(default)]
        comment: String,
    },
    /// Release a card's current PUK once (offline unblock).
    UnblockCode {
        /// The card.
        card: String,
        /// Why.
        #[serde(default)]
        reason: String,
    },
    /// The archived keys the caller may see.
    ListKeys {
        /// Only this user's.
        #[serde(default)]
        user: Option<String>,
    },
    /// Ask for the recovery of a user's archived keys (a `recover-key` request).
    RecoverKey {
        /// Whose keys.
        user: String,
        /// Which, and where to.
        parameters: crate::archive::RecoverParameters,
        /// Why.
        #[serde(default)]
        reason: String,
    },
    /// Approve the revocations the safety valve holds.
    ApproveHeld {
        /// Why.
        #[serde(default)]
        reason: String,
    },
    /// The requests the caller may see.
    ListRequests,
    /// One request.
    ShowRequest {
        /// Its id.
        id: String,
    },
    /// Make a request.
    CreateRequest {
        /// The operation.
        kind: crate::policy::model::OperationKind,
        /// Its target.
        target: String,
        /// Why.
        #[serde(default)]
        reason: String,
    },
    /// Approve a request.
    ApproveRequest {
        /// Its id.
        id: String,
        /// A comment.
        #[serde(default)]
        comment: Option<String>,
    },
    /// Deny a request.
    DenyRequest {
        /// Its id.
        id: String,
        /// A comment.
        #[serde(default)]
        comment: Option<String>,
    },
}

/// The controller's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    /// The inventory.
    Inventory {
        /// It.
        inventory: Inventory,
    },
    /// The history, oldest first.
    History {
        /// Entries.
        entries: Vec<HistoryEntry>,
    },
    /// The status.
    Status {
        /// It.
        status: Box<ControllerStatus>,
    },
    /// What an operator call gave.
    Operator {
        /// Its JSON answer.
        value: serde_json::Value,
    },
    /// An operator call was refused or failed.
    Refused {
        /// The API's error code (`unauthorized`, `forbidden`, `not-found`, `conflict`,
        /// `invalid`, `failed`, ...).
        code: String,
        /// Why.
        message: String,
    },
    /// The request failed.
    Error {
        /// Why.
        message: String,
    },
}

/// Talking to the controller, or reading the store, failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nothing listens on the socket.
    #[error("cannot reach the controller at {path}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The exchange failed mid-way.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The answer is not valid.
    #[error("control socket {path}: unexpected answer: {message}")]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// The controller answered with an error.
    #[error("the controller says: {0}")]
    Remote(String),
    /// Another process (not a controller) holds the state directory.
    #[error(
        "the state directory {dir} is in use by keyfleet {role} (pid {pid}); try again when it has finished"
    )]
    Busy {
        /// The state directory.
        dir: PathBuf,
        /// Its role.
        role: String,
        /// Its pid.
        pid: u32,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The state directory is open to others.
    #[error(transparent)]
    StateDir(#[from] crate::fsutil::PrivateDirError),
}

/// Sends one request to the controller of `state_dir` and returns its answer.
pub fn request(state_dir: &Path, req: &Request) -> Result<Response, ControlError> {
    request_at(&socket_path(state_dir), req)
}

/// Sends one request over the socket at `path` (the control socket, or the operator socket of
/// `Settings.spec.operators.socket`).
pub fn request_at(path: &Path, req: &Request) -> Result<Response, ControlError> {
    let path = path.to_path_buf();
    let io = |source| ControlError::Io {
        path: path.clone(),
        source,
    };
    let mut stream = UnixStream::connect(&path).map_err(|source| ControlError::Connect {
        path: path.clone(),
        source,
    })?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
    let mut line = serde_json::to_vec(req).map_err(|e| ControlError::Protocol {
        path: path.clone(),
        message: e.to_string(),
    })?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    stream.flush().map_err(io)?;
    let mut answer = Vec::new();
    BufReader::new(&stream)
        .read_until(b'\n', &mut answer)
        .map_err(io)?;
    let resp: Response = serde_json::from_slice(&answer).map_err(|e| ControlError::Protocol {
        path: path.clone(),
        message: e.to_string(),
    })?;
    match resp {
        Response::Error { message } => Err(ControlError::Remote(message)),
        // An operator call's refusal is its answer; any other request refused is an error.
        Response::Refused { code, message } if !matches!(req, Request::Operator { .. }) => {
            Err(ControlError::Remote(format!("{message} ({code})")))
        }
        other => Ok(other),
    }
}

/// Who serves the store of a state directory right now.
pub enum Access {
    /// Nobody holds it: the caller opened it.
    Local(Box<Store>),
    /// A controller holds it: ask it.
    Controller,
}

/// Opens the store of `state_dir` for reading, or finds the running controller that holds
/// it. `None`: there is no store yet.
pub fn open_for_reading(state_dir: &Path) -> Result<Option<Access>, ControlError> {
    // Nothing is read from a state directory others may have changed.
    crate::fsutil::check_private_dir(state_dir)?;
    if let Some(holder) = StateLock::holder(state_dir) {
        if holder.role == "run" && socket_path(state_dir).exists() {
            return Ok(Some(Access::Controller));
        }
        return Err(ControlError::Busy {
            dir: state_dir.to_path_buf(),
            role: holder.role,
            pid: holder.pid,
        });
    }
    if !state_dir.join("store").exists() {
        return Ok(None);
    }
    match Store::open(state_dir) {
        Ok(store) => Ok(Some(Access::Local(Box::new(store)))),
        // A controller that started between the two checks.
        Err(StoreError::Locked(_)) if socket_path(state_dir).exists() => {
            Ok(Some(Access::Controller))
        }
        Err(e) => Err(e.into()),
    }
}

/// The inventory of `state_dir`: from the store, or from the controller holding it (empty
/// when there is no store yet).
pub fn read_inventory(state_dir: &Path) -> Result<Inventory, ControlError> {
    match open_for_reading(state_dir)? {
        None => Ok(Inventory::default()),
        Some(Access::Local(store)) => Ok(store.inventory()?),
        Some(Access::Controller) => match request(state_dir, &Request::Inventory)? {
            Response::Inventory { inventory } => Ok(inventory),
            other => Err(unexpected(state_dir, &other)),
        },
    }
}

/// The history of `state_dir`, oldest first: from the store or from the controller.
pub fn read_history(state_dir: &Path) -> Result<Vec<HistoryEntry>, ControlError> {
    match open_for_reading(state_dir)? {
        None => Ok(Vec::new()),
        Some(Access::Local(store)) => Ok(store.history()?),
        Some(Access::Controller) => match request(state_dir, &Request::History)? {
            Response::History { entries } => Ok(entries),
            other => Err(unexpected(state_dir, &other)),
        },
    }
}

/// An error for an answer of the wrong kind.
pub fn unexpected(state_dir: &Path, resp: &Response) -> ControlError {
    ControlError::Protocol {
        path: socket_path(state_dir),
        message: format!("{resp:?}").chars().take(200).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_have_a_stable_wire_form() {
        assert_eq!(
            serde_json::to_string(&Request::Operator {
                call: OperatorCall::ApproveRequest {
                    id: "REQ-0001".into(),
                    comment: None
                }
            })
            .unwrap(),
            r#"{"op":"operator","call":{"call":"approve-request","id":"REQ-0001","comment":null}}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"op":"status"}"#).unwrap(),
            Request::Status
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"drop-tables"}"#).is_err());
        let r = Response::Error {
            message: "x".into(),
        };
        let back: Response = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn a_free_state_dir_is_read_locally_and_an_absent_store_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_inventory(dir.path()).unwrap().cards.is_empty());
        drop(Store::open(dir.path()).unwrap());
        assert!(matches!(
            open_for_reading(dir.path()).unwrap(),
            Some(Access::Local(_))
        ));
    }

    #[test]
    fn an_apply_in_progress_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let _lock = StateLock::acquire(dir.path(), "apply").unwrap();
        let err = read_history(dir.path()).err().unwrap();
        assert!(err.to_string().contains("keyfleet apply"), "{err}");
    }
}
