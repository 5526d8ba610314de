//! Appending to the audit log and its checkpoints, from any number of processes (each append
//! holds an exclusive `flock` on the log file while it reads the head and writes its line).

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::key::{AuditKey, AuditKeyError, key_id};
use super::verify::{Checkpoint, checkpoint_message};
use super::{
    AUDIT_DIR, CHECKPOINT_EVERY, CHECKPOINT_FILE, CHECKPOINT_INTERVAL, GENESIS_PREV, LOG_FILE,
    sha256_hex,
};

/// One line of the audit log, fields in this order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditEntry {
    /// 1 for the first entry, one more for each next.
    pub seq: u64,
    /// When (RFC 3339, UTC).
    pub time: String,
    /// Who: an operator's name, `keyfleet` for the controller's own actions.
    pub actor: String,
    /// What: an operator call (`unblock`, `approve`, ...) or an applied action (`issue`, ...).
    pub kind: String,
    /// On what: a card, a user, a request, a serial.
    pub target: String,
    /// `done`, `failed`, `denied`, `skipped`, ...
    pub outcome: String,
    /// Anything else worth keeping (serials, reasons, messages); never a secret.
    pub details: serde_json::Value,
    /// Lowercase hex SHA-256 of the previous line's bytes; 64 zeros for the first.
    pub prev: String,
}

/// What a caller logs; the log adds `seq`, `time` and `prev`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEntry {
    /// See [`AuditEntry::actor`].
    pub actor: String,
    /// See [`AuditEntry::kind`].
    pub kind: String,
    /// See [`AuditEntry::target`].
    pub target: String,
    /// See [`AuditEntry::outcome`].
    pub outcome: String,
    /// See [`AuditEntry::details`].
    pub details: serde_json::Value,
}

/// The audit log could not be read or written. Whoever gets this must not report success.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A file of the log could not be read or written.
    #[error("audit log {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The audit folder is missing or open to others.
    #[error("audit log: {0}")]
    Dir(#[from] crate::fsutil::PrivateDirError),
    /// The last line does not end with a newline (a write was cut): nothing is chained onto it.
    #[error(
        "audit log {} ends in a partial line (a write was cut at byte {len}): nothing more is written until an operator checks it with `keyfleet audit-log verify`",
        path.display()
    )]
    Torn {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// The last line or checkpoint is not one Keyfleet wrote.
    #[error("audit log {}: {message}; check it with `keyfleet audit-log verify`", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The checkpoint could not be signed.
    #[error(transparent)]
    Key(#[from] AuditKeyError),
}

/// The head of the chain as this process last saw it.
#[derive(Debug, Clone)]
struct Head {
    /// The log file's length when read.
    len: u64,
    /// The last entry's `seq` (0: none).
    seq: u64,
    /// SHA-256 (hex) of the last line ([`GENESIS_PREV`] for none).
    hash: String,
    /// The last checkpoint's `seq` (0: none).
    checkpointed: u64,
    /// When this process last checkpointed (or opened the log).
    checkpointed_at: OffsetDateTime,
}

/// The audit log of a state directory, open for appending.
#[derive(Debug)]
pub struct AuditLog {
    log: PathBuf,
    checkpoints: PathBuf,
    key: AuditKey,
    head: Mutex<Option<Head>>,
    /// Whether this process appended an entry (it then signs the head when it ends).
    wrote: std::sync::atomic::AtomicBool,
}

impl AuditLog {
    /// Opens (creating on first use, 0700/0600) the audit log of `state_dir`, signing with
    /// `key`. Fails when the log cannot be read, ends in a partial line or in a line that is
    /// not an entry.
    pub fn open(state_dir: &Path, key: AuditKey) -> Result<AuditLog, AuditError> {
        let dir = state_dir.join(AUDIT_DIR);
        crate::fsutil::ensure_private_dir(&dir)?;
        let log = AuditLog {
            log: dir.join(LOG_FILE),
            checkpoints: dir.join(CHECKPOINT_FILE),
            key,
            head: Mutex::new(None),
            wrote: Default::default(),
        };
        let (file, _) = log.locked(&log.log)?;
        let head = log.read_head(&file, OffsetDateTime::now_utc())?;
        *log.head.lock().unwrap_or_else(|p| p.into_inner()) = Some(head);
        Ok(log)
    }

    /// The signing key (its public half verifies the checkpoints).
    pub fn key(&self) -> &AuditKey {
        &self.key
    }

    /// Appends one entry and returns its `seq`; also writes a checkpoint when one is due (every
    /// [`CHECKPOINT_EVERY`] entries, or [`CHECKPOINT_INTERVAL`] after the last). The line is on
    /// disk (fsync) when this returns `Ok`.
    pub fn append(&self, entry: NewEntry, now: OffsetDateTime) -> Result<u64, AuditError> {
        let mut guard = self.head.lock().unwrap_or_else(|p| p.into_inner());
        let (mut file, len) = self.locked(&self.log)?;
        let mut head = match guard.take() {
            Some(h) if h.len == len => h,
            _ => self.read_head(&file, now)?,
        };
        let line = AuditEntry {
            seq: head.seq + 1,
            time: rfc3339(now),
            actor: entry.actor,
            kind: entry.kind,
            target: entry.target,
            outcome: entry.outcome,
            details: entry.details,
            prev: head.hash.clone(),
        };
        let text = serde_json::to_string(&line).map_err(|e| AuditError::Corrupt {
            path: self.log.clone(),
            message: format!("entry does not serialise: {e}"),
        })?;
        let mut bytes = text.clone().into_bytes();
        bytes.push(b'\n');
        let io = |source| AuditError::Io {
            path: self.log.clone(),
            source,
        };
        file.write_all(&bytes).map_err(io)?;
        file.sync_data().map_err(io)?;
        self.wrote.store(true, std::sync::atomic::Ordering::SeqCst);
        head.len = len + bytes.len() as u64;
        head.seq = line.seq;
        head.hash = sha256_hex(text.as_bytes());
        let due = head.seq.is_multiple_of(CHECKPOINT_EVERY)
            || now - head.checkpointed_at >= CHECKPOINT_INTERVAL;
        let result = if due {
            self.write_checkpoint(&mut head, now)
        } else {
            Ok(())
        };
        *guard = Some(head);
        result.map(|()| line.seq)
    }

    /// Writes a checkpoint if there are entries since the last one and it was written
    /// [`CHECKPOINT_INTERVAL`] ago or more; returns the checkpointed `seq`. The controller
    /// calls it on a timer.
    pub fn checkpoint_if_due(&self, now: OffsetDateTime) -> Result<Option<u64>, AuditError> {
        self.checkpoint_when(now, |head| {
            now - head.checkpointed_at >= CHECKPOINT_INTERVAL
        })
    }

    /// Writes a checkpoint if there are entries since the last one (at shutdown, at the end of
    /// a command); returns the checkpointed `seq`.
    pub fn checkpoint(&self, now: OffsetDateTime) -> Result<Option<u64>, AuditError> {
        self.checkpoint_when(now, |_| true)
    }

    fn checkpoint_when(
        &self,
        now: OffsetDateTime,
        due: impl Fn(&Head) -> bool,
    ) -> Result<Option<u64>, AuditError> {
        let mut guard = self.head.lock().unwrap_or_else(|p| p.into_inner());
        let (file, len) = self.locked(&self.log)?;
        let mut head = match guard.take() {
            Some(h) if h.len == len => h,
            _ => self.read_head(&file, now)?,
        };
        let result = if head.seq > head.checkpointed && due(&head) {
            self.write_checkpoint(&mut head, now)
                .map(|()| Some(head.seq))
        } else {
            Ok(None)
        };
        *guard = Some(head);
        result
    }

    /// Every entry of the log, oldest first.
    pub fn entries(&self) -> Result<Vec<AuditEntry>, AuditError> {
        read_entries(&self.log)
    }

    /// The last entry's `seq` and the last checkpoint's (0: none), as this process knows them.
    pub fn head(&self) -> (u64, u64) {
        let guard = self.head.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().map_or((0, 0), |h| (h.seq, h.checkpointed))
    }

    /// Signs the head and appends the checkpoint (the log's lock is held by the caller).
    fn write_checkpoint(&self, head: &mut Head, now: OffsetDateTime) -> Result<(), AuditError> {
        let time = rfc3339(now);
        let msg = checkpoint_message(head.seq, &head.hash, &time);
        let signature = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(self.key.sign(msg.as_bytes())?)
        };
        let cp = Checkpoint {
            seq: head.seq,
            hash: head.hash.clone(),
            time,
            key_id: key_id(&self.key.spki_der()),
            signature,
        };
        let mut bytes = serde_json::to_vec(&cp).map_err(|e| AuditError::Corrupt {
            path: self.checkpoints.clone(),
            message: format!("checkpoint does not serialise: {e}"),
        })?;
        bytes.push(b'\n');
        let io = |source| AuditError::Io {
            path: self.checkpoints.clone(),
            source,
        };
        let mut f = open_append(&self.checkpoints).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_data().map_err(io)?;
        head.checkpointed = head.seq;
        head.checkpointed_at = now;
        Ok(())
    }

    /// Opens `path` for appending with an exclusive lock held until the file is dropped;
    /// returns it with its length.
    fn locked(&self, path: &Path) -> Result<(File, u64), AuditError> {
        let io = |source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = open_append(path).map_err(io)?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io(e.into()))?;
        let len = file.metadata().map_err(io)?.len();
        Ok((file, len))
    }

    /// Reads the head of the chain from the log (locked by the caller) and the last checkpoint.
    fn read_head(&self, file: &File, now: OffsetDateTime) -> Result<Head, AuditError> {
        let len = file
            .metadata()
            .map_err(|source| AuditError::Io {
                path: self.log.clone(),
                source,
            })?
            .len();
        let (seq, hash) = match last_line(file, len).map_err(|source| AuditError::Io {
            path: self.log.clone(),
            source,
        })? {
            LastLine::Empty => (0, GENESIS_PREV.to_string()),
            LastLine::Torn => {
                return Err(AuditError::Torn {
                    path: self.log.clone(),
                    len,
                });
            }
            LastLine::Line(bytes) => {
                let entry: AuditEntry =
                    serde_json::from_slice(&bytes).map_err(|e| AuditError::Corrupt {
                        path: self.log.clone(),
                        message: format!("the last line is not an audit entry ({e})"),
                    })?;
                (entry.seq, sha256_hex(&bytes))
            }
        };
        let checkpointed = match std::fs::File::open(&self.checkpoints) {
            Ok(f) => {
                let clen = f
                    .metadata()
                    .map_err(|source| AuditError::Io {
                        path: self.checkpoints.clone(),
                        source,
                    })?
                    .len();
                match last_line(&f, clen).map_err(|source| AuditError::Io {
                    path: self.checkpoints.clone(),
                    source,
                })? {
                    LastLine::Line(bytes) => serde_json::from_slice::<Checkpoint>(&bytes)
                        .map(|c| c.seq)
                        .map_err(|e| AuditError::Corrupt {
                            path: self.checkpoints.clone(),
                            message: format!("the last line is not a checkpoint ({e})"),
                        })?,
                    LastLine::Empty => 0,
                    LastLine::Torn => {
                        return Err(AuditError::Torn {
                            path: self.checkpoints.clone(),
                            len: clen,
                        });
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => {
                return Err(AuditError::Io {
                    path: self.checkpoints.clone(),
                    source,
                });
            }
        };
        Ok(Head {
            len,
            seq,
            hash,
            checkpointed,
            checkpointed_at: now,
        })
    }
}

impl Drop for AuditLog {
    /// A process that wrote entries signs the head when it ends (a crash leaves them chained
    /// but unsigned until the next checkpoint).
    fn drop(&mut self) {
        if !self.wrote.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.checkpoint(OffsetDateTime::now_utc()) {
            tracing::error!("cannot checkpoint the audit log: {e}");
        }
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(0o600)
        .open(path)
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

enum LastLine {
    /// The file is empty.
    Empty,
    /// The file does not end with a newline.
    Torn,
    /// The last line, without its newline.
    Line(Vec<u8>),
}

/// The last line of a file of `len` bytes, read backwards in chunks (lines can be long).
fn last_line(file: &File, len: u64) -> std::io::Result<LastLine> {
    if len == 0 {
        return Ok(LastLine::Empty);
    }
    let mut f = file;
    let mut end = [0u8; 1];
    f.seek(SeekFrom::Start(len - 1))?;
    f.read_exact(&mut end)?;
    if end[0] != b'\n' {
        return Ok(LastLine::Torn);
    }
    let body_end = len - 1;
    let mut start = body_end;
    let mut buf = Vec::new();
    const CHUNK: u64 = 8192;
    loop {
        let from = start.saturating_sub(CHUNK);
        let mut chunk = vec![0u8; (start - from) as usize];
        f.seek(SeekFrom::Start(from))?;
        f.read_exact(&mut chunk)?;
        if let Some(i) = memchr::memrchr(b'\n', &chunk) {
            chunk.drain(..=i);
            chunk.extend_from_slice(&buf);
            return Ok(LastLine::Line(chunk));
        }
        chunk.extend_from_slice(&buf);
        buf = chunk;
        start = from;
        if from == 0 {
            return Ok(LastLine::Line(buf));
        }
    }
}

/// Every entry of a log file, in order; a line that is not an entry is an error naming its
/// line number (for `audit-log show`: `verify` is the check).
pub fn read_entries(path: &Path) -> Result<Vec<AuditEntry>, AuditError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(AuditError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let mut out = Vec::new();
    for (i, line) in text.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        out.push(
            serde_json::from_slice(line).map_err(|e| AuditError::Corrupt {
                path: path.to_path_buf(),
                message: format!("line {} is not an audit entry ({e})", i + 1),
            })?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AuditKey {
        AuditKey::Software(rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap())
    }

    fn entry(n: u32) -> NewEntry {
        NewEntry {
            actor: "alice".into(),
            kind: "unblock".into(),
            target: format!("card-{n}"),
            outcome: "done".into(),
            details: serde_json::json!({"n": n}),
        }
    }

    #[test]
    fn lines_chain_and_a_checkpoint_comes_every_hundred_entries() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path(), key()).unwrap();
        let t0 = OffsetDateTime::now_utc();
        for n in 1..=150u32 {
            assert_eq!(log.append(entry(n), t0).unwrap(), u64::from(n));
        }
        let text = std::fs::read_to_string(dir.path().join("audit/log.jsonl")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 150);
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(first["prev"], GENESIS_PREV);
        assert!(lines[0].starts_with(r#"{"seq":1,"time":"#), "{}", lines[0]);
        for w in lines.windows(2) {
            let next: serde_json::Value = serde_json::from_str(w[1]).unwrap();
            assert_eq!(next["prev"], sha256_hex(w[0].as_bytes()));
        }
        let cps = std::fs::read_to_string(dir.path().join("audit/checkpoints.jsonl")).unwrap();
        let seqs: Vec<u64> = cps
            .lines()
            .map(|l| serde_json::from_str::<Checkpoint>(l).unwrap().seq)
            .collect();
        assert_eq!(seqs, [100]);
        assert_eq!(log.checkpoint(t0).unwrap(), Some(150));
        assert_eq!(log.checkpoint(t0).unwrap(), None, "nothing new");
        assert_eq!(log.head(), (150, 150));
        use std::os::unix::fs::PermissionsExt as _;
        for f in ["audit", "audit/log.jsonl", "audit/checkpoints.jsonl"] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{f}: {mode:o}");
        }
    }

    #[test]
    fn a_checkpoint_is_due_five_minutes_after_the_last_with_new_entries() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path(), key()).unwrap();
        let t0 = OffsetDateTime::now_utc();
        assert_eq!(
            log.checkpoint_if_due(t0 + CHECKPOINT_INTERVAL).unwrap(),
            None
        );
        log.append(entry(1), t0).unwrap();
        assert_eq!(log.checkpoint_if_due(t0).unwrap(), None);
        assert_eq!(
            log.checkpoint_if_due(t0 + CHECKPOINT_INTERVAL).unwrap(),
            Some(1)
        );
        // An entry long after the last checkpoint brings its own.
        log.append(entry(2), t0 + CHECKPOINT_INTERVAL * 3).unwrap();
        assert_eq!(log.head(), (2, 2));
    }

    #[test]
    fn two_writers_share_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let a = AuditLog::open(dir.path(), key()).unwrap();
        let b = AuditLog::open(dir.path(), key()).unwrap();
        let t = OffsetDateTime::now_utc();
        assert_eq!(a.append(entry(1), t).unwrap(), 1);
        assert_eq!(b.append(entry(2), t).unwrap(), 2);
        assert_eq!(a.append(entry(3), t).unwrap(), 3);
        let entries = read_entries(&dir.path().join("audit/log.jsonl")).unwrap();
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn nothing_is_chained_onto_a_cut_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path(), key()).unwrap();
        let t = OffsetDateTime::now_utc();
        log.append(entry(1), t).unwrap();
        let path = dir.path().join("audit/log.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"seq":2,"ti"#).unwrap();
        let err = log.append(entry(2), t).unwrap_err();
        assert!(matches!(err, AuditError::Torn { .. }), "{err}");
        assert!(err.to_string().contains("audit-log verify"), "{err}");
        assert!(matches!(
            AuditLog::open(dir.path(), key()),
            Err(AuditError::Torn { .. })
        ));
    }

    #[test]
    fn an_unwritable_log_fails_the_append() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path(), key()).unwrap();
        let path = dir.path().join("audit/log.jsonl");
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(matches!(
            log.append(entry(1), OffsetDateTime::now_utc()),
            Err(AuditError::Io { .. })
        ));
    }

    #[test]
    fn long_lines_are_read_back_as_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let t = OffsetDateTime::now_utc();
        {
            let log = AuditLog::open(dir.path(), key()).unwrap();
            let mut e = entry(1);
            e.details = serde_json::json!({"note": "x".repeat(20_000)});
            log.append(e.clone(), t).unwrap();
            log.append(e, t).unwrap();
        }
        let log = AuditLog::open(dir.path(), key()).unwrap();
        assert_eq!(log.append(entry(3), t).unwrap(), 3);
        let lines: Vec<String> = std::fs::read_to_string(dir.path().join("audit/log.jsonl"))
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        let third: AuditEntry = serde_json::from_str(&lines[2]).unwrap();
        assert_eq!(third.prev, sha256_hex(lines[1].as_bytes()));
    }
}
