//! The policy set as git sees it: the policy files, and the data file of every `file`
//! directory that lives inside the policy directory. Such a data file is committed, reviewed
//! and checked out with the policy, so it is read with it, once, when the set loads
//! ([`load_set`]), and its text stays with that set ([`PolicyData`]): a half-finished edit (a
//! broken template and a group change in the same commit) takes no effect through the data
//! file while the policy files do not load. A data file outside the policy directory is a
//! directory source like LDAP: it is read at every observation, whatever the policy.
//!
//! [`load_set`] also refuses a set that changed while it was being read (the files' size,
//! times and inode before and after), so a `git checkout` in progress never yields new policy
//! files with an old data file or the reverse.
//!
//! This module parses no data file (that is `observe::directory`) and decides nothing about
//! what a pass does.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::desired::DirectoryObservation;
use crate::observe::directory::{parse_file_directory, read_directory_text};
use crate::policy::model::DirectorySpec;
use crate::policy::{self, Diagnostics, PolicySet};

/// How many times [`load_set`] reads a set that keeps changing before it gives up.
const ATTEMPTS: usize = 5;

/// Pause between two attempts (a checkout in progress finishes meanwhile).
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Loading the policy set failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadSetError {
    /// The policy set is invalid.
    #[error("the policy set is invalid:\n{0}")]
    Invalid(Diagnostics),
    /// The policy files or an in-policy data file kept changing while they were read.
    #[error(
        "the policy set in {} changed while it was read ({ATTEMPTS} attempts); try again when the edit or checkout is finished",
        .dir.display()
    )]
    Changing {
        /// The policy directory.
        dir: PathBuf,
    },
}

/// An absolute form of `path` with symbolic links and `..` resolved: canonical when it
/// exists; else its folder made canonical and its name joined; else `..` and `.` resolved
/// lexically.
pub fn resolve(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    if let (Some(parent), Some(name)) = (path.parent(), path.file_name())
        && let Ok(p) = std::fs::canonicalize(if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        })
    {
        return p.join(name);
    }
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Whether a data file belongs to the policy set: it lies under the policy directory. Both
/// paths must be [`resolve`]d; components are compared, so `/p2/x` is not inside `/p`.
pub fn is_inside(policy_dir: &Path, data_file: &Path) -> bool {
    data_file.starts_with(policy_dir) && data_file != policy_dir
}

/// The data files of the `file` directories of `policy` that lie inside its policy directory,
/// by directory name, resolved.
pub fn in_policy_data_files(policy: &PolicySet) -> BTreeMap<String, PathBuf> {
    let root = resolve(&policy.root);
    policy
        .directories
        .iter()
        .filter_map(|(name, d)| match &d.spec {
            DirectorySpec::File(f) => Some((name.clone(), resolve(&d.resolve_path(&f.path)))),
            DirectorySpec::Ldap(_) => None,
        })
        .filter(|(_, path)| is_inside(&root, path))
        .collect()
}

/// What identifies one version of a file without reading it: size, modification and change
/// times, inode (`None`: absent or unreadable).
type FileStamp = Option<(u64, i64, i64, i64, i64, u64)>;

fn stamp(path: &Path) -> FileStamp {
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        m.ino(),
    ))
}

/// The stamps of every policy file the loader reads under `dir`.
fn stamp_set(dir: &Path) -> Vec<(PathBuf, FileStamp)> {
    policy::load::policy_files(dir)
        .into_iter()
        .map(|p| {
            let s = stamp(&p);
            (p, s)
        })
        .collect()
}

/// One in-policy data file as it was read with its policy set.
#[derive(Debug, Clone, PartialEq)]
struct PinnedFile {
    /// Where it is (resolved), for errors.
    path: PathBuf,
    /// Its text and the SHA-256 of it, or why it could not be read.
    text: Result<(String, [u8; 32]), String>,
    /// Its stamp just before it was read.
    stamp: FileStamp,
}

/// The texts of a policy set's in-policy data files, by directory name, as read with the set.
/// Directories not named here (LDAP, data files outside the policy directory) are observed
/// from their source.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyData {
    files: BTreeMap<String, PinnedFile>,
}

impl PolicyData {
    /// Reads the in-policy data files of `policy` now. A file that cannot be read is kept as
    /// that error (its directory is then unobserved: nothing is revoked from it).
    pub fn read(policy: &PolicySet) -> PolicyData {
        let files = in_policy_data_files(policy)
            .into_iter()
            .map(|(name, path)| {
                let stamp = stamp(&path);
                let text = read_directory_text(&path)
                    .map(|t| {
                        let fp: [u8; 32] = Sha256::digest(t.as_bytes()).into();
                        (t, fp)
                    })
                    .map_err(|e| e.to_string());
                (name, PinnedFile { path, text, stamp })
            })
            .collect();
        PolicyData { files }
    }

    /// Whether directory `name`'s data belongs to the policy set (and is read only with it).
    pub fn contains(&self, name: &str) -> bool {
        self.files.contains_key(name)
    }

    /// The paths of the in-policy data files (resolved).
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.values().map(|f| f.path.as_path())
    }

    /// The text of directory `name`'s data as read with the set, with its SHA-256; `None`
    /// when the directory's data is not part of the set.
    pub fn text(&self, name: &str) -> Option<Result<(&str, [u8; 32]), String>> {
        let f = self.files.get(name)?;
        Some(match &f.text {
            Ok((t, fp)) => Ok((t.as_str(), *fp)),
            Err(e) => Err(e.clone()),
        })
    }

    /// Parses directory `name`'s data as read with the set; `None` when it is not part of it.
    pub fn observe(&self, name: &str) -> Option<DirectoryObservation> {
        let f = self.files.get(name)?;
        Some(match &f.text {
            Ok((t, _)) => parse_file_directory(&f.path, t).map_err(|e| e.to_string()),
            Err(e) => Err(e.clone()),
        })
    }

    /// Whether every data file still has the stamp it had when it was read.
    fn unchanged(&self) -> bool {
        self.files.values().all(|f| stamp(&f.path) == f.stamp)
    }
}

/// The content hash of one version of a policy set: `sha256:` and the hex SHA-256 over every
/// policy file the loader reads (its path relative to the policy directory and its bytes) and
/// the text of every in-policy data file (by directory name). A saved plan records it
/// (`crate::saved_plan`): any edit to the set, a comment included, changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyHash(pub String);

impl PolicyHash {
    fn of(dir: &Path, files: &[(PathBuf, FileStamp)], data: &PolicyData) -> PolicyHash {
        let mut h = Sha256::new();
        // Length-prefixed fields: no two different sets feed the same bytes.
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        field(b"keyfleet-policy-set-v1");
        for (path, _) in files {
            let rel = path.strip_prefix(dir).unwrap_or(path);
            field(b"file");
            field(rel.as_os_str().as_encoded_bytes());
            match std::fs::read(path) {
                Ok(bytes) => field(&bytes),
                Err(e) => field(format!("unreadable: {}", e.kind()).as_bytes()),
            }
        }
        for (name, f) in &data.files {
            field(b"data");
            field(name.as_bytes());
            match &f.text {
                Ok((text, _)) => field(text.as_bytes()),
                Err(e) => field(format!("unreadable: {e}").as_bytes()),
            }
        }
        PolicyHash(format!("sha256:{}", hex::encode(h.finalize())))
    }
}

/// Loads and validates the policy set in `dir` with the texts of its in-policy data files,
/// as one consistent version: when a policy file or such a data file changed while they were
/// read, it reads them again (up to [`ATTEMPTS`] times).
pub fn load_set(dir: &Path) -> Result<(PolicySet, PolicyData), LoadSetError> {
    load_set_hashed(dir).map(|(policy, data, _)| (policy, data))
}

/// [`load_set`], with the [`PolicyHash`] of the version it loaded.
pub fn load_set_hashed(dir: &Path) -> Result<(PolicySet, PolicyData, PolicyHash), LoadSetError> {
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(RETRY_PAUSE);
        }
        let before = stamp_set(dir);
        let policy = policy::load_policy_set(dir).map_err(LoadSetError::Invalid)?;
        let data = PolicyData::read(&policy);
        // Read between the two stamps: when they agree, these are the bytes loaded.
        let hash = PolicyHash::of(dir, &before, &data);
        if stamp_set(dir) == before && data.unchanged() {
            return Ok((policy, data, hash));
        }
        tracing::info!(dir = %dir.display(), "the policy set changed while it was read; reading it again");
    }
    Err(LoadSetError::Changing {
        dir: dir.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIRECTORY: &str = "apiVersion: keyfleet.dev/v1\nkind: Directory\nmetadata: {name: people}\nspec:\n  file: {path: people.yaml}\n";
    const OUTSIDE: &str = "apiVersion: keyfleet.dev/v1\nkind: Directory\nmetadata: {name: hr}\nspec:\n  file: {path: ../data/hr.yaml}\n";

    fn people(uids: &[&str]) -> String {
        let users: String = uids
            .iter()
            .map(|u| format!("  - {{uid: {u}, cn: {u}}}\n"))
            .collect();
        format!("users:\n{users}groups: []\n")
    }

    #[test]
    fn inside_is_decided_by_components() {
        let p = Path::new("/p");
        assert!(is_inside(p, Path::new("/p/people.yaml")));
        assert!(is_inside(p, Path::new("/p/data/people.yaml")));
        assert!(is_inside(p, Path::new("/p/.hidden/people.yaml")));
        assert!(!is_inside(p, Path::new("/p2/people.yaml")));
        assert!(!is_inside(p, Path::new("/data/people.yaml")));
        assert!(!is_inside(p, Path::new("/")));
        assert!(!is_inside(p, p));
    }

    #[test]
    fn resolve_follows_dot_dot_and_links() {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        std::fs::create_dir_all(root.join("policy")).unwrap();
        std::fs::create_dir_all(root.join("data")).unwrap();
        // Absent file, existing folder: the folder is made canonical.
        let up = resolve(&root.join("policy/../data/hr.yaml"));
        assert_eq!(up, root.join("data/hr.yaml"));
        assert!(!is_inside(&root.join("policy"), &up));
        // A link inside the policy directory to a file outside is outside.
        std::fs::write(root.join("data/hr.yaml"), "users: []\ngroups: []\n").unwrap();
        std::os::unix::fs::symlink(root.join("data/hr.yaml"), root.join("policy/hr.yaml")).unwrap();
        let linked = resolve(&root.join("policy/hr.yaml"));
        assert!(!is_inside(&root.join("policy"), &linked), "{linked:?}");
        // Nothing exists: lexical.
        assert_eq!(
            resolve(Path::new("/nonexistent-kf/a/../b/./c.yaml")),
            PathBuf::from("/nonexistent-kf/b/c.yaml")
        );
    }

    #[test]
    fn the_set_keeps_the_text_of_its_own_data_files_only() {
        let tmp = tempfile::tempdir().unwrap();
        let policy = tmp.path().join("policy");
        std::fs::create_dir_all(&policy).unwrap();
        std::fs::create_dir_all(tmp.path().join("data")).unwrap();
        std::fs::write(
            policy.join("directory.yaml"),
            format!("{DIRECTORY}---\n{OUTSIDE}"),
        )
        .unwrap();
        std::fs::write(policy.join("people.yaml"), people(&["alice", "bob"])).unwrap();
        std::fs::write(tmp.path().join("data/hr.yaml"), people(&["carol"])).unwrap();

        let (set, data) = load_set(&policy).unwrap();
        assert!(data.contains("people"));
        assert!(!data.contains("hr"), "outside the policy directory");
        assert_eq!(set.directories.len(), 2);
        assert_eq!(data.paths().count(), 1);

        // The file changes on disk: the set keeps what it was loaded with.
        std::fs::write(policy.join("people.yaml"), people(&["alice"])).unwrap();
        let (text, _) = data.text("people").unwrap().unwrap();
        assert!(text.contains("bob"));
        let snapshot = data.observe("people").unwrap().unwrap();
        assert_eq!(snapshot.users.len(), 2);
        assert!(data.observe("hr").is_none());

        // A new load takes the new text.
        let (_, again) = load_set(&policy).unwrap();
        assert_eq!(again.observe("people").unwrap().unwrap().users.len(), 1);
        assert_ne!(again, data);
    }

    #[test]
    fn a_data_file_removed_after_the_load_is_still_read_from_the_set() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("directory.yaml"), DIRECTORY).unwrap();
        std::fs::write(tmp.path().join("people.yaml"), people(&["alice"])).unwrap();
        let (_, data) = load_set(tmp.path()).unwrap();
        std::fs::remove_file(tmp.path().join("people.yaml")).unwrap();
        assert_eq!(data.observe("people").unwrap().unwrap().users.len(), 1);
        // The next load refuses the set that names a missing data file.
        assert!(matches!(
            load_set(tmp.path()),
            Err(LoadSetError::Invalid(_))
        ));
    }

    #[test]
    fn a_replaced_or_edited_policy_file_changes_the_stamp() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("directory.yaml"), DIRECTORY).unwrap();
        let before = stamp_set(tmp.path());
        assert_eq!(before.len(), 1);
        assert_eq!(stamp_set(tmp.path()), before, "nothing changed");
        // Replaced by rename (editors, git checkout): a new inode.
        std::fs::write(tmp.path().join(".tmp"), DIRECTORY).unwrap();
        std::fs::rename(tmp.path().join(".tmp"), tmp.path().join("directory.yaml")).unwrap();
        let replaced = stamp_set(tmp.path());
        assert_ne!(replaced, before);
        // A new file.
        std::fs::write(tmp.path().join("more.yaml"), "x: 1\n").unwrap();
        assert_ne!(stamp_set(tmp.path()), replaced);
    }

    #[test]
    fn the_policy_hash_follows_policy_files_and_in_policy_data() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("directory.yaml"), DIRECTORY).unwrap();
        std::fs::write(tmp.path().join("people.yaml"), people(&["alice"])).unwrap();
        let hash = |dir: &Path| load_set_hashed(dir).unwrap().2;
        let first = hash(tmp.path());
        assert!(first.0.starts_with("sha256:"), "{first:?}");
        assert_eq!(hash(tmp.path()), first, "nothing changed");
        // A comment in a policy file.
        std::fs::write(
            tmp.path().join("directory.yaml"),
            format!("# reviewed\n{DIRECTORY}"),
        )
        .unwrap();
        let commented = hash(tmp.path());
        assert_ne!(commented, first);
        // The in-policy data file.
        std::fs::write(tmp.path().join("people.yaml"), people(&["alice", "bob"])).unwrap();
        assert_ne!(hash(tmp.path()), commented);
        // The same bytes under another directory give the same hash.
        let other = tempfile::tempdir().unwrap();
        for f in ["directory.yaml", "people.yaml"] {
            std::fs::copy(tmp.path().join(f), other.path().join(f)).unwrap();
        }
        assert_eq!(hash(other.path()), hash(tmp.path()));
    }

    #[test]
    fn an_invalid_set_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("directory.yaml"), DIRECTORY).unwrap();
        std::fs::write(tmp.path().join("people.yaml"), people(&["alice"])).unwrap();
        std::fs::write(tmp.path().join("broken.yaml"), "kind: Nonsense\n").unwrap();
        assert!(matches!(
            load_set(tmp.path()),
            Err(LoadSetError::Invalid(_))
        ));
    }
}
