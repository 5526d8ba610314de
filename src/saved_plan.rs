//! Saved plans: `keyfleet plan -out FILE` writes the plan with what it was computed from, and
//! `keyfleet apply FILE` carries out exactly those actions, or refuses when what they were
//! computed from changed (Terraform's reviewed-plan workflow).
//!
//! What a plan was computed from is its [`Basis`]: the content hash of the policy set
//! ([`crate::runtime::policy_set::PolicyHash`]), the inventory's generation
//! ([`Inventory::generation`]) and the content hash of each directory snapshot
//! ([`crate::observe::snapshot::DirectorySnapshot::content_hash`]). The file also records the
//! time planned for and the options (targets, `--allow-mass-revocation`), so that apply can
//! plan again from the same inputs and check that the saved actions are what they give
//! ([`SavedPlan::mismatch`]): an edited file is refused, not applied.
//!
//! A saved plan holds no secret: actions name users, templates, cards, slots and serials,
//! never a PIN, a key or a credential. The file is written owner-only (0600) all the same.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::desired::DirectoryObservation;
use crate::inventory::Inventory;
use crate::plan::{Action, Plan};

/// The value of the `format` field.
pub const FORMAT: &str = "keyfleet-plan";

/// The version of the file format this Keyfleet writes and reads.
pub const VERSION: u32 = 1;

/// The largest plan file read (a plan of 100,000 actions is about 60 MB).
const MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Reading or writing a saved plan failed.
#[derive(Debug, thiserror::Error)]
pub enum SavedPlanError {
    /// The file could not be read or written.
    #[error("saved plan {}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a saved plan Keyfleet can read.
    #[error("saved plan {}: not a Keyfleet plan file: {message}", .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The file was written in a format version this Keyfleet does not read.
    #[error(
        "saved plan {}: format version {found}, this Keyfleet reads version {VERSION}: plan again with this version",
        .path.display()
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
    /// The plan could not be encoded.
    #[error("cannot encode the plan: {0}")]
    Encode(serde_json::Error),
}

/// What a directory's observation was when the plan was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DirectoryBasis {
    /// The content hash of the snapshot; `None` when the observation failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Why the observation failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DirectoryBasis {
    /// The basis of one observation.
    pub fn of(observed: &DirectoryObservation) -> DirectoryBasis {
        match observed {
            Ok(snapshot) => DirectoryBasis {
                hash: Some(snapshot.content_hash()),
                error: None,
            },
            Err(e) => DirectoryBasis {
                hash: None,
                error: Some(e.clone()),
            },
        }
    }

    /// Same data seen: the same snapshot, or a failed observation both times (a failed
    /// directory gives no data to differ; the plan then revokes nothing from it).
    fn same(&self, other: &DirectoryBasis) -> bool {
        self.hash == other.hash
    }
}

/// What a plan was computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Basis {
    /// The content hash of the policy set.
    pub policy: String,
    /// The inventory's generation.
    pub inventory_generation: String,
    /// Every directory of the policy, by name.
    pub directories: BTreeMap<String, DirectoryBasis>,
}

impl Basis {
    /// The basis of a pass over `env`'s policy set, with these observations and inventory.
    pub fn of(
        env: &crate::runtime::Environment,
        observed: &BTreeMap<String, DirectoryObservation>,
        inventory: &Inventory,
    ) -> Basis {
        Basis {
            policy: env.policy_hash.0.clone(),
            inventory_generation: inventory.generation(),
            directories: observed
                .iter()
                .map(|(name, o)| (name.clone(), DirectoryBasis::of(o)))
                .collect(),
        }
    }

    /// What differs between this (planned) basis and `now`, in a stable order: the policy,
    /// the inventory, then each directory by name.
    pub fn changes(&self, now: &Basis) -> Vec<Change> {
        let mut out = Vec::new();
        if self.policy != now.policy {
            out.push(Change::Policy);
        }
        if self.inventory_generation != now.inventory_generation {
            out.push(Change::Inventory);
        }
        let names: BTreeSet<&String> = self
            .directories
            .keys()
            .chain(now.directories.keys())
            .collect();
        for name in names {
            let same = match (self.directories.get(name), now.directories.get(name)) {
                (Some(a), Some(b)) => a.same(b),
                _ => false,
            };
            if !same {
                out.push(Change::Directory(name.clone()));
            }
        }
        out
    }
}

/// One input of a saved plan that is no longer what the plan saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The policy set (a policy file or an in-policy data file).
    Policy,
    /// The inventory (another apply, the controller, recovery of interrupted work).
    Inventory,
    /// A directory's data (or the directory was added to or removed from the policy).
    Directory(String),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Policy => f.write_str("policy"),
            Change::Inventory => f.write_str("inventory"),
            Change::Directory(name) => write!(f, "directory {name}"),
        }
    }
}

/// The facts of the plan besides its actions, which apply checks against the plan it
/// computes again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanFacts {
    /// Every directory was observed completely.
    pub complete: bool,
    /// Revocations not planned because an observation was incomplete.
    pub withheld_revocations: usize,
    /// The safety valve tripped (apply refuses it unless `--allow-mass-revocation`).
    pub safety_valve_tripped: bool,
}

impl PlanFacts {
    fn of(plan: &Plan) -> PlanFacts {
        PlanFacts {
            complete: plan.complete,
            withheld_revocations: plan.withheld_revocations,
            safety_valve_tripped: plan.safety_valve.tripped,
        }
    }
}

/// A saved plan file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SavedPlan {
    /// Always [`FORMAT`].
    pub format: String,
    /// The file format's version ([`VERSION`]).
    pub version: u32,
    /// The Keyfleet that wrote it.
    pub keyfleet_version: String,
    /// The time the plan was computed for.
    #[serde(with = "time::serde::rfc3339")]
    pub planned_at: OffsetDateTime,
    /// The users the plan was limited to (`--target`), if any.
    #[serde(default)]
    pub targets: Option<BTreeSet<String>>,
    /// What the plan was computed from.
    pub basis: Basis,
    /// The plan's facts besides its actions.
    pub facts: PlanFacts,
    /// The actions, in execution order.
    pub actions: Vec<Action>,
}

impl SavedPlan {
    /// A saved plan of `plan`, computed at `planned_at` for `targets` from `basis`.
    pub fn new(
        plan: &Plan,
        basis: Basis,
        planned_at: OffsetDateTime,
        targets: Option<BTreeSet<String>>,
    ) -> SavedPlan {
        SavedPlan {
            format: FORMAT.to_string(),
            version: VERSION,
            keyfleet_version: env!("CARGO_PKG_VERSION").to_string(),
            planned_at,
            targets,
            basis,
            facts: PlanFacts::of(plan),
            actions: plan.actions.clone(),
        }
    }

    /// Why `fresh` (the plan computed again from the same inputs, at [`SavedPlan::planned_at`])
    /// is not this saved plan, if it is not: the file was edited, or it came from a Keyfleet
    /// that plans differently. What waits for a card, and which present blank card an
    /// issuance takes, depend on the cards attached at the time and are not compared.
    pub fn mismatch(&self, fresh: &Plan) -> Option<String> {
        let facts = PlanFacts::of(fresh);
        if facts != self.facts {
            return Some(format!(
                "its facts {:?} are not those its inputs give ({facts:?})",
                self.facts
            ));
        }
        if self.actions.len() != fresh.actions.len() {
            return Some(format!(
                "it holds {} action(s), its inputs give {}",
                self.actions.len(),
                fresh.actions.len()
            ));
        }
        for (i, (saved, now)) in self.actions.iter().zip(&fresh.actions).enumerate() {
            let key = |a: &Action| {
                (
                    a.kind,
                    a.user.clone(),
                    a.template.clone(),
                    a.slot,
                    a.slots.clone(),
                    a.serials.clone(),
                    a.reason.code,
                )
            };
            let card = |a: &Action| (a.card.clone(), a.stock.clone());
            let presence_dependent =
                saved.kind == crate::plan::ActionKind::Issue && saved.stock.is_some();
            if key(saved) != key(now) || (!presence_dependent && card(saved) != card(now)) {
                return Some(format!(
                    "action {} is {}, its inputs give {}",
                    i + 1,
                    saved.id(),
                    now.id()
                ));
            }
        }
        None
    }

    /// Writes the plan to `path`, owner-only (0600): to a new file beside it, then renamed
    /// over it, so a reader never sees half a plan.
    pub fn write(&self, path: &Path) -> Result<(), SavedPlanError> {
        let io = |source| SavedPlanError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut json = serde_json::to_vec_pretty(self).map_err(SavedPlanError::Encode)?;
        json.push(b'\n');
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "plan".into());
        let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(&json)?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        Ok(())
    }

    /// Reads a saved plan; refuses a file of another format or version.
    pub fn read(path: &Path) -> Result<SavedPlan, SavedPlanError> {
        use std::io::Read as _;
        let io = |source| SavedPlanError::Io {
            path: path.to_path_buf(),
            source,
        };
        let invalid = |message: String| SavedPlanError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .map_err(io)?
            .take(MAX_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > MAX_BYTES {
            return Err(invalid(format!("larger than {MAX_BYTES} bytes")));
        }
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
        if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(invalid(format!("no \"format\": \"{FORMAT}\"")));
        }
        match value.get("version").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(VERSION) => {}
            Some(v) => {
                return Err(SavedPlanError::Version {
                    path: path.to_path_buf(),
                    found: u32::try_from(v).unwrap_or(u32::MAX),
                });
            }
            None => return Err(invalid("no \"version\"".into())),
        }
        serde_json::from_value(value).map_err(|e| invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::snapshot::{DirectorySnapshot, DirectoryUser};

    fn user(uid: &str) -> DirectoryUser {
        DirectoryUser {
            uid: uid.into(),
            dn: None,
            cn: uid.into(),
            mail: None,
            upn: None,
            disabled: false,
            stable_id: None,
            attributes: BTreeMap::new(),
        }
    }

    fn basis(users: &[&str]) -> Basis {
        let snapshot = DirectorySnapshot::from_parts(users.iter().map(|u| user(u)), []);
        Basis {
            policy: "sha256:p".into(),
            inventory_generation: "sha256:i".into(),
            directories: [("people".to_string(), DirectoryBasis::of(&Ok(snapshot)))].into(),
        }
    }

    #[test]
    fn a_snapshot_hash_is_stable_and_follows_the_data() {
        let a = DirectorySnapshot::from_parts([user("alice"), user("bob")], []);
        let b = DirectorySnapshot::from_parts([user("bob"), user("alice")], []);
        assert_eq!(a.content_hash(), b.content_hash(), "order does not matter");
        let mut c = a.clone();
        c.complete = false;
        assert_ne!(a.content_hash(), c.content_hash());
        let d = DirectorySnapshot::from_parts([user("alice")], []);
        assert_ne!(a.content_hash(), d.content_hash());
    }

    #[test]
    fn changes_name_each_input_that_differs() {
        let planned = basis(&["alice"]);
        assert!(planned.changes(&planned.clone()).is_empty());
        let mut now = basis(&["alice", "bob"]);
        now.policy = "sha256:q".into();
        now.inventory_generation = "sha256:j".into();
        now.directories
            .insert("hr".into(), DirectoryBasis::of(&Err("down".into())));
        let changes = planned.changes(&now);
        assert_eq!(
            changes,
            [
                Change::Policy,
                Change::Inventory,
                Change::Directory("hr".into()),
                Change::Directory("people".into())
            ]
        );
        let shown: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["policy", "inventory", "directory hr", "directory people"]
        );
        // A directory that failed both times gives no data to differ.
        let mut failed = planned.clone();
        failed
            .directories
            .insert("people".into(), DirectoryBasis::of(&Err("timeout".into())));
        let mut still = failed.clone();
        still
            .directories
            .insert("people".into(), DirectoryBasis::of(&Err("refused".into())));
        assert!(failed.changes(&still).is_empty());
        assert_eq!(
            failed.changes(&planned),
            [Change::Directory("people".into())]
        );
    }

    #[test]
    fn a_plan_file_round_trips_owner_only_and_other_files_are_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("plan.json");
        let plan = Plan {
            complete: true,
            actions: Vec::new(),
            safety_valve: crate::plan::SafetyReport {
                tripped: false,
                allowed: false,
                revoked_users: 0,
                holders: 0,
                limits: crate::plan::SafetyLimits::default(),
            },
            conflicts: Vec::new(),
            errors: Vec::new(),
            withheld_revocations: 0,
        };
        let at = time::macros::datetime!(2026-12-07 10:00:00.123456789 UTC);
        let saved = SavedPlan::new(&plan, basis(&["alice"]), at, None);
        saved.write(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(SavedPlan::read(&path).unwrap(), saved);
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "no temp file left"
        );
        // Written again over an existing file.
        saved.write(&path).unwrap();
        assert_eq!(SavedPlan::read(&path).unwrap().planned_at, at);

        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("\"version\": 1", "\"version\": 9")).unwrap();
        assert!(matches!(
            SavedPlan::read(&path),
            Err(SavedPlanError::Version { found: 9, .. })
        ));
        std::fs::write(
            &path,
            text.replace("\"facts\"", "\"unknownField\": 1,\n  \"facts\""),
        )
        .unwrap();
        assert!(matches!(
            SavedPlan::read(&path),
            Err(SavedPlanError::Invalid { .. })
        ));
        for bad in [
            "",
            "{}",
            "[1]",
            "{\"format\": \"keyfleet-plan\"}",
            "\u{0}\u{ff}",
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(
                matches!(SavedPlan::read(&path), Err(SavedPlanError::Invalid { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            SavedPlan::read(&tmp.path().join("absent.json")),
            Err(SavedPlanError::Io { .. })
        ));
    }
}
