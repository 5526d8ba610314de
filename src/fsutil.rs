//! File-system helpers shared by everything Keyfleet writes: durable file replacement (the
//! local CA's files, published CRLs, virtual cards, PIN mailers), private directories (the
//! state directory: created 0700, refused when others may enter it) and the process's
//! file-creation mask.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// A directory that must be its owner's alone is open to others, or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PrivateDirError {
    /// Others (group or world) may read, write or enter it.
    #[error(
        "the state directory {path} is accessible to other users (mode {mode:04o}); it holds keys and secrets, so Keyfleet refuses it: restrict it with `chmod 700 {path}`",
        path = path.display()
    )]
    Exposed {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The path exists and is not a directory.
    #[error("the state directory {} is not a directory", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// It could not be created, inspected or restricted.
    #[error("state directory {}: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// What is at a state directory's path.
enum Found {
    /// Nothing.
    Absent,
    /// A directory of its owner's alone.
    Private,
    /// A directory others may enter, with nothing in it yet; its permission bits.
    OpenButEmpty(u32),
}

fn inspect(path: &Path) -> Result<Found, PrivateDirError> {
    let io = |source| PrivateDirError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Absent),
        Err(source) => return Err(io(source)),
    };
    if !meta.is_dir() {
        return Err(PrivateDirError::NotADirectory {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(Found::Private);
    }
    if fs::read_dir(path).map_err(io)?.next().is_none() {
        return Ok(Found::OpenButEmpty(mode));
    }
    Err(PrivateDirError::Exposed {
        path: path.to_path_buf(),
        mode,
    })
}

/// Checks, for reading, that the directory `path` is its owner's alone (no group or world
/// bits), or empty (nothing in it was exposed). `Ok(false)`: there is nothing at `path`.
pub fn check_private_dir(path: &Path) -> Result<bool, PrivateDirError> {
    Ok(!matches!(inspect(path)?, Found::Absent))
}

/// Makes sure `path` is a directory of its owner's alone before anything is written there:
/// creates it with mode 0700 exactly, whatever the umask (its missing parents as `mkdir -p`
/// would). An existing directory others may enter is refused with the fix (`chmod 700`),
/// unless it is still empty (made ready by `mkdir`, `install -d` or a temp-dir helper), which
/// is restricted to 0700 like a new one.
pub fn ensure_private_dir(path: &Path) -> Result<(), PrivateDirError> {
    let err = |source| PrivateDirError::Io {
        path: path.to_path_buf(),
        source,
    };
    match inspect(path)? {
        Found::Private => Ok(()),
        Found::OpenButEmpty(mode) => {
            fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(err)?;
            // Someone who could write there before the restriction may have put something in.
            match inspect(path)? {
                Found::Private if fs::read_dir(path).map_err(err)?.next().is_none() => Ok(()),
                _ => Err(PrivateDirError::Exposed {
                    path: path.to_path_buf(),
                    mode,
                }),
            }
        }
        Found::Absent => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent).map_err(err)?;
            }
            match fs::DirBuilder::new().mode(0o700).create(path) {
                // A narrower umask may have taken the owner's own bits.
                Ok(()) => fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(err),
                // Another process created it meanwhile: check what it made.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => ensure_private_dir(path),
                Err(e) => Err(err(e)),
            }
        }
    }
}

/// Sets the process's file-creation mask to 077, so that every file and directory created
/// from now on without an explicit mode (sled's store files among them) is its owner's alone.
/// Files meant for others (published CRLs) are written with an explicit mode.
pub fn restrict_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

use rand::Rng as _;

/// Replaces `path` with `data` atomically and durably: a private temp file (unique name, next
/// to the target) with exactly `mode` whatever the umask, fsync, rename over the target,
/// fsync of the folder. A reader sees the old content or the new one, never a mix; on
/// failure the target is untouched and the temp file removed.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut suffix = [0u8; 6];
    rand::rng().fill_bytes(&mut suffix);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", hex::encode(suffix)));
    let result = (|| -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed the mode given at creation.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_dirs_are_created_0700_and_open_ones_refused_with_the_fix() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/state");
        assert!(!check_private_dir(&dir).unwrap());
        ensure_private_dir(&dir).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        ensure_private_dir(&dir).unwrap();
        // An empty directory others may enter exposed nothing yet: restricted like a new one.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check_private_dir(&dir).unwrap());
        ensure_private_dir(&dir).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        // With something in it, it is refused, by readers and writers.
        fs::write(dir.join("master.key"), b"secret").unwrap();
        for open in [0o755, 0o750, 0o701, 0o720, 0o707] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(open)).unwrap();
            assert!(check_private_dir(&dir).is_err());
            let err = ensure_private_dir(&dir).unwrap_err();
            assert!(
                matches!(err, PrivateDirError::Exposed { mode, .. } if mode == open),
                "{err:?}"
            );
            assert!(
                err.to_string()
                    .contains(&format!("chmod 700 {}", dir.display())),
                "{err}"
            );
        }
        let file = root.path().join("f");
        fs::write(&file, b"").unwrap();
        assert!(matches!(
            ensure_private_dir(&file),
            Err(PrivateDirError::NotADirectory { .. })
        ));
    }

    #[test]
    fn replaces_with_the_mode_asked_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        std::fs::write(&path, b"old").unwrap();
        write_atomic(&path, b"new", 0o640).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // A target that cannot be replaced: the temp file goes too.
        let blocked = dir.path().join("sub");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("x"), b"").unwrap();
        assert!(write_atomic(&blocked, b"data", 0o600).is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
