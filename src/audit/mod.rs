//! The audit log: every operator call, request, approval and applied action, one JSON line
//! each, hash-chained and checkpointed with a signature, so that nobody can quietly edit it.
//!
//! ```text
//!   <state>/audit/log.jsonl          {"seq","time","actor","kind","target","outcome","details","prev"}
//!                                    prev = lowercase hex SHA-256 of the previous line's bytes
//!                                    (without its newline); the first line's prev is 64 zeros
//!   <state>/audit/checkpoints.jsonl  {"seq","hash","time","keyId","signature"}
//!                                    hash = SHA-256 of line `seq`; signature = ECDSA P-256 over
//!                                    "keyfleet-audit-checkpoint-v1\n{seq}\n{hash}\n{time}\n"
//!                                    (DER, Base64); keyId = SHA-256 of the key's SPKI (hex)
//! ```
//!
//! The chain proves the order and content of the lines up to the last one; a checkpoint signs
//! the chain's head, so that a cut tail or a rewritten log (chain recomputed) shows. A
//! checkpoint is written every [`CHECKPOINT_EVERY`] entries, every [`CHECKPOINT_INTERVAL`]
//! when there are new entries, and when the process stops. Writing an entry fails loudly and
//! its caller fails closed: no operation succeeds without its entry.
//!
//! This module writes, signs and verifies; what gets logged is its callers' business.

mod key;
mod log;
mod verify;

pub use key::{AuditKey, AuditKeyError, SIGNING_KEY_FILE, key_id};
pub use log::{AuditEntry, AuditError, AuditLog, NewEntry, read_entries};
pub use verify::{Broken, Checkpoint, Verified, checkpoint_message, verify};

/// The folder of the audit log inside the state directory.
pub const AUDIT_DIR: &str = "audit";
/// The log file, inside [`AUDIT_DIR`].
pub const LOG_FILE: &str = "log.jsonl";
/// The checkpoint file, inside [`AUDIT_DIR`].
pub const CHECKPOINT_FILE: &str = "checkpoints.jsonl";
/// The `prev` of the first entry.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// A checkpoint is written at least every this many entries.
pub const CHECKPOINT_EVERY: u64 = 100;
/// A checkpoint is written at least this often while there are new entries.
pub const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}
