//! What makes a pass run. Events only decide *when* a pass runs; the pass recomputes
//! everything (level-triggered).
//!
//! [`Triggers`] is a coalescing set: any number of sources [`Triggers::fire`] a [`Trigger`];
//! the controller takes the whole set at once, so a burst of a hundred events yields one or
//! two passes. Sources here: the policy and file-directory watch ([`FileWatch`], notify with a
//! debouncer on the *directories*, so atomic replaces, rename-on-save and `git checkout` are
//! seen; the debouncer is a thread that sleeps in a blocking receive between bursts, so an
//! idle controller does not wake for the watch at all). Card and token watchers and LDAP pollers plug in the same way: hold a clone of
//! [`Triggers`] and fire [`Trigger::Cards`] / [`Trigger::DirectoryChanged`]. This module runs
//! no pass.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::event::EventKind;
use notify::{RecursiveMode, Watcher};
use tokio::sync::Notify;

/// Why a pass should run.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Trigger {
    /// The controller started.
    Startup,
    /// A policy file changed: reload the policy, then pass.
    PolicyChanged,
    /// SIGHUP: reload the policy, then pass.
    Reload,
    /// The data of a directory (by policy name) may have changed.
    DirectoryChanged(String),
    /// A card or token was inserted or removed (source: `pcsc`, `pkcs11`, ...).
    Cards(String),
    /// A timer came due (`renewal`, `retry`, `resync`).
    Timer(&'static str),
    /// An operator approved held revocations.
    Approved,
}

impl Trigger {
    /// Whether the policy must be reloaded first.
    pub fn reloads_policy(&self) -> bool {
        matches!(self, Trigger::PolicyChanged | Trigger::Reload)
    }

    /// A short label for logs and status.
    pub fn label(&self) -> String {
        match self {
            Trigger::Startup => "startup".into(),
            Trigger::PolicyChanged => "policy-changed".into(),
            Trigger::Reload => "reload".into(),
            Trigger::DirectoryChanged(d) => format!("directory-changed:{d}"),
            Trigger::Cards(s) => format!("cards:{s}"),
            Trigger::Timer(t) => format!("timer:{t}"),
            Trigger::Approved => "approved".into(),
        }
    }
}

/// The coalescing set of pending triggers; cheap to clone, safe from any thread.
#[derive(Clone, Default)]
pub struct Triggers {
    inner: Arc<(Mutex<BTreeSet<Trigger>>, Notify)>,
}

impl Triggers {
    /// A new, empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a trigger and wakes the controller.
    pub fn fire(&self, trigger: Trigger) {
        if let Ok(mut set) = self.inner.0.lock() {
            set.insert(trigger);
        }
        self.inner.1.notify_one();
    }

    /// Waits until at least one trigger is pending (returns at once if one is).
    pub async fn wait(&self) {
        loop {
            if self.inner.0.lock().is_ok_and(|s| !s.is_empty()) {
                return;
            }
            self.inner.1.notified().await;
        }
    }

    /// Takes every pending trigger.
    pub fn take(&self) -> BTreeSet<Trigger> {
        self.inner
            .0
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }
}

/// What the file watch looks at.
#[derive(Debug, Clone, Default)]
pub struct WatchSpec {
    /// The policy directory (watched recursively).
    pub policy_dir: PathBuf,
    /// The state directory: its changes are ignored.
    pub state_dir: PathBuf,
    /// Data files of `file` directories outside the policy directory (directory sources),
    /// with the directory's policy name.
    pub data_files: BTreeMap<PathBuf, String>,
    /// Data files of `file` directories inside the policy directory: part of the policy set,
    /// so a change of one reloads the policy (whatever their name or extension).
    pub policy_data_files: BTreeSet<PathBuf>,
}

impl WatchSpec {
    /// What a changed path means: a directory's data, the policy, or nothing.
    pub fn classify(&self, path: &Path) -> Option<Trigger> {
        if let Some(name) = self.data_files.get(path) {
            return Some(Trigger::DirectoryChanged(name.clone()));
        }
        if self.policy_data_files.contains(path) {
            return Some(Trigger::PolicyChanged);
        }
        if path.starts_with(&self.state_dir) {
            return None;
        }
        let rel = path.strip_prefix(&self.policy_dir).ok()?;
        let hidden = rel.components().any(|c| match c {
            Component::Normal(s) => s.to_string_lossy().starts_with('.'),
            _ => false,
        });
        if hidden {
            return None;
        }
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => Some(Trigger::PolicyChanged),
            // A folder renamed or removed as a whole (e.g. a checkout swapping a tree).
            None if !rel.as_os_str().is_empty() => Some(Trigger::PolicyChanged),
            _ => None,
        }
    }
}

/// A running file watch; dropping it stops the watch (and its debounce thread).
pub struct FileWatch {
    _watcher: notify::RecommendedWatcher,
}

/// How long the debouncer waits for a burst of file events to settle.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// The longest a continuous stream of events may hold its triggers back.
const DEBOUNCE_MAX: Duration = Duration::from_secs(2);

/// What the watcher hands the debounce thread.
type WatchEvent = Result<notify::Event, notify::Error>;

/// Starts watching the policy directory and the folders of the data files.
pub fn watch_files(spec: WatchSpec, triggers: Triggers) -> Result<FileWatch, notify::Error> {
    let (tx, rx) = std::sync::mpsc::channel::<WatchEvent>();
    let mut watcher = notify::recommended_watcher(move |event: WatchEvent| {
        // The receiver is gone only when the watch is being dropped.
        let _ = tx.send(event);
    })?;
    watcher.watch(&spec.policy_dir, RecursiveMode::Recursive)?;
    let mut watched: BTreeSet<PathBuf> = BTreeSet::new();
    for file in spec.data_files.keys() {
        if let Some(parent) = file.parent()
            && !parent.starts_with(&spec.policy_dir)
            && watched.insert(parent.to_path_buf())
        {
            watcher.watch(parent, RecursiveMode::NonRecursive)?;
        }
    }
    std::thread::Builder::new()
        .name("keyfleet-watch".into())
        .spawn(move || debounce(&spec, &rx, &triggers))
        .map_err(|e| notify::Error::generic(&format!("cannot start the watch thread: {e}")))?;
    Ok(FileWatch { _watcher: watcher })
}

/// Collects events until none came for [`DEBOUNCE`] (or [`DEBOUNCE_MAX`] passed), then fires
/// the triggers they mean, each once. Returns when the watcher is dropped.
fn debounce(spec: &WatchSpec, rx: &std::sync::mpsc::Receiver<WatchEvent>, triggers: &Triggers) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut pending: BTreeSet<Trigger> = BTreeSet::new();
    let add = |event: WatchEvent, pending: &mut BTreeSet<Trigger>| match event {
        Ok(event) => {
            if matches!(event.kind, EventKind::Access(_)) {
                return;
            }
            for path in &event.paths {
                if let Some(t) = spec.classify(path) {
                    tracing::debug!(path = %path.display(), trigger = %t.label(), "file change");
                    pending.insert(t);
                }
            }
        }
        Err(e) => {
            tracing::warn!("file watch error: {e}");
            // Events may have been lost: recheck everything.
            pending.insert(Trigger::PolicyChanged);
        }
    };
    // Blocks without a timeout between bursts: an idle watch costs no CPU.
    while let Ok(first) = rx.recv() {
        add(first, &mut pending);
        let started = std::time::Instant::now();
        loop {
            let left = DEBOUNCE_MAX.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            match rx.recv_timeout(DEBOUNCE.min(left)) {
                Ok(event) => add(event, &mut pending),
                Err(RecvTimeoutError::Timeout) => break,
                // The watch is being dropped (shutdown): what is pending no longer matters.
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        for t in std::mem::take(&mut pending) {
            triggers.fire(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> WatchSpec {
        WatchSpec {
            policy_dir: "/p".into(),
            state_dir: "/p/.keyfleet".into(),
            data_files: [(PathBuf::from("/data/hr.yaml"), "hr".to_string())].into(),
            policy_data_files: [
                PathBuf::from("/p/people.yaml"),
                PathBuf::from("/p/.data/staff.txt"),
            ]
            .into(),
        }
    }

    #[test]
    fn paths_are_classified() {
        let s = spec();
        let t = |p: &str| s.classify(Path::new(p));
        // A data file inside the policy directory is part of the policy set: it reloads the
        // policy, even hidden or not named .yaml.
        assert_eq!(t("/p/people.yaml"), Some(Trigger::PolicyChanged));
        assert_eq!(t("/p/.data/staff.txt"), Some(Trigger::PolicyChanged));
        assert_eq!(
            t("/data/hr.yaml"),
            Some(Trigger::DirectoryChanged("hr".into()))
        );
        assert_eq!(t("/p/templates/a.yaml"), Some(Trigger::PolicyChanged));
        assert_eq!(t("/p/templates"), Some(Trigger::PolicyChanged));
        assert_eq!(t("/p/a.yml"), Some(Trigger::PolicyChanged));
        assert_eq!(t("/p/.keyfleet/store/db"), None);
        assert_eq!(t("/p/.git/index"), None);
        assert_eq!(t("/p/.a.yaml.swp"), None);
        assert_eq!(t("/p/README.md"), None);
        assert_eq!(t("/data/other.yaml"), None);
    }

    #[tokio::test]
    async fn bursts_coalesce() {
        let t = Triggers::new();
        for _ in 0..100 {
            t.fire(Trigger::DirectoryChanged("people".into()));
        }
        t.fire(Trigger::PolicyChanged);
        t.wait().await;
        let taken = t.take();
        assert_eq!(taken.len(), 2);
        assert!(t.take().is_empty());
    }
}
