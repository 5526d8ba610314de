//! One writer per state directory: an exclusive advisory lock (`flock`) on
//! `<state dir>/keyfleet.lock`, held for the life of `keyfleet run` or `keyfleet apply`.
//!
//! The holder writes its pid and role into the file, so that a second writer can refuse with
//! a message naming it. The lock is released by the kernel when the holder exits, however it
//! exits, so a crash never leaves a stale lock. This module does not decide what to do when
//! the lock is held (the CLI reaches a running controller through the control socket).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// File name of the lock inside the state directory.
pub const LOCK_FILE: &str = "keyfleet.lock";

/// Taking the state-directory lock failed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "the state directory {dir} is in use by {holder}; only one keyfleet run or apply may write it at a time"
    )]
    Held {
        /// The state directory.
        dir: PathBuf,
        /// Who holds it, as recorded in the lock file (`keyfleet run (pid 1234)`).
        holder: String,
        /// The holder's pid, when the lock file names one.
        pid: Option<u32>,
    },
    /// The state directory is open to others, or could not be created private.
    #[error(transparent)]
    StateDir(#[from] crate::fsutil::PrivateDirError),
    /// The lock file could not be created or locked.
    #[error("cannot lock {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Who holds a lock, as written in the lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Process id.
    pub pid: u32,
    /// `run` or `apply`.
    pub role: String,
}

impl Holder {
    /// Parses the lock file's content (`<pid> <role>`).
    pub fn parse(text: &str) -> Option<Holder> {
        let mut parts = text.split_whitespace();
        let pid = parts.next()?.parse().ok()?;
        let role = parts.next().unwrap_or("keyfleet").to_string();
        Some(Holder { pid, role })
    }
}

/// The held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct StateLock {
    file: File,
    path: PathBuf,
}

impl StateLock {
    /// Takes the exclusive lock on `state_dir` (created if missing) for `role` without
    /// waiting; refuses with [`LockError::Held`] naming the holder when another process has it.
    pub fn acquire(state_dir: &Path, role: &str) -> Result<StateLock, LockError> {
        let path = state_dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        // Created 0700 whatever the umask; refused when others may enter it.
        crate::fsutil::ensure_private_dir(state_dir)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        // The mode given at creation is narrowed by the umask, never widened; a file an older
        // version left 0644 is restricted too.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = Holder::parse(&text);
                return Err(LockError::Held {
                    dir: state_dir.to_path_buf(),
                    holder: match &holder {
                        Some(h) => format!("keyfleet {} (pid {})", h.role, h.pid),
                        None => "another keyfleet process (pid not yet recorded)".to_string(),
                    },
                    pid: holder.map(|h| h.pid),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{} {role}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(StateLock { file, path })
    }

    /// Who holds the lock of `state_dir` right now, if anyone (without taking it).
    pub fn holder(state_dir: &Path) -> Option<Holder> {
        let path = state_dir.join(LOCK_FILE);
        let file = File::open(&path).ok()?;
        match file.try_lock_shared() {
            Ok(()) => {
                let _ = file.unlock();
                None
            }
            Err(TryLockError::WouldBlock) => {
                let text = std::fs::read_to_string(&path).ok()?;
                Holder::parse(&text).or(Some(Holder {
                    pid: 0,
                    role: "keyfleet".into(),
                }))
            }
            Err(TryLockError::Error(_)) => None,
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_names_the_holder_and_release_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path(), "run").unwrap();
        // flock locks belong to the open file description: a second open in the same
        // process conflicts exactly as another process would.
        let err = StateLock::acquire(dir.path(), "apply").unwrap_err();
        match &err {
            LockError::Held { pid, holder, .. } => {
                assert_eq!(*pid, Some(std::process::id()));
                assert!(holder.contains("keyfleet run"), "{holder}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains(&std::process::id().to_string()));
        assert_eq!(
            StateLock::holder(dir.path()).map(|h| h.role),
            Some("run".to_string())
        );
        drop(first);
        assert_eq!(StateLock::holder(dir.path()), None);
        StateLock::acquire(dir.path(), "apply").unwrap();
    }

    #[test]
    fn holder_text_parses_defensively() {
        assert_eq!(
            Holder::parse("42 run\n"),
            Some(Holder {
                pid: 42,
                role: "run".into()
            })
        );
        assert_eq!(Holder::parse(""), None);
        assert_eq!(Holder::parse("x run"), None);
    }
}
