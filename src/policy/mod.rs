//! Policy: the declarative objects an organisation keeps in git, loaded from a directory of
//! YAML files and validated in two stages (JSON schema, then semantic checks).
//!
//! ```text
//!   *.yaml ─► size/UTF-8 caps ─► saphyr pre-pass (lines, alias budget) ─► serde_json::Value
//!          ─► jsonschema (shape) ─► typed Manifest<Spec> ─► PolicySet ─► semantic checks
//! ```
//!
//! This module owns parsing and validation only. It never contacts a directory, CA or card,
//! never reads secrets unless asked to (`validate --online`), and knows nothing of plans.

pub mod ca_changes;
pub mod diag;
pub mod duration;
pub mod load;
pub mod model;
pub mod schema;
pub mod secret;
pub mod template;
pub mod test_model;
pub mod tests_load;
pub mod validate;
pub use validate::GROUP_PREFIX;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use diag::{Diagnostic, Diagnostics, Severity, codes};
pub use duration::{Duration, DurationError};
pub use load::{MAX_FILE_BYTES, load_policy_set};
pub use model::*;
pub use secret::{SecretError, SecretRef, SecretRefError};
pub use template::{MissingVar, TemplateError, TextTemplate, Var};
pub use validate::check_online;

/// The only `apiVersion` this Keyfleet understands.
pub const API_VERSION: &str = "keyfleet.dev/v1";

/// The profiles the embedded (`local`) CA offers.
pub const LOCAL_CA_PROFILES: &[&str] = &[
    "piv-auth",
    "piv-signature",
    "piv-key-management",
    "piv-card-auth",
];

/// A loaded policy object: its name, where it was written, and its spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Object<S> {
    /// `metadata.name`.
    pub name: String,
    /// The file it came from (as found under the policy directory).
    pub file: PathBuf,
    /// The line its document starts on (0 for built-in defaults).
    pub line: usize,
    /// The validated spec.
    pub spec: S,
}

impl<S> Object<S> {
    /// Resolves a path written in this object: relative paths are relative to the folder of
    /// the policy file; absolute paths are kept.
    pub fn resolve_path(&self, p: &Path) -> PathBuf {
        match self.file.parent() {
            Some(dir) => dir.join(p),
            None => p.to_path_buf(),
        }
    }

    /// The folder relative paths are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        self.file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }
}

/// A whole, validated policy set.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySet {
    /// The policy directory it was loaded from.
    pub root: PathBuf,
    /// `CertificateAuthority` objects by name.
    pub authorities: BTreeMap<String, Object<CertificateAuthoritySpec>>,
    /// `Directory` objects by name.
    pub directories: BTreeMap<String, Object<DirectorySpec>>,
    /// `CardTemplate` objects by name.
    pub templates: BTreeMap<String, Object<CardTemplateSpec>>,
    /// `Assignment` objects by name.
    pub assignments: BTreeMap<String, Object<AssignmentSpec>>,
    /// `CardStock` objects by name.
    pub stocks: BTreeMap<String, Object<CardStockSpec>>,
    /// `CardBinding` objects by name.
    pub bindings: BTreeMap<String, Object<CardBindingSpec>>,
    /// `Role` objects by name.
    pub roles: BTreeMap<String, Object<RoleSpec>>,
    /// The `Settings` object, or defaults (name `default`, line 0) when there is none.
    pub settings: Object<SettingsSpec>,
    /// Warnings found while loading (the set is still valid).
    pub warnings: Vec<Diagnostic>,
}

impl PolicySet {
    /// An empty set rooted at `root`, with default settings.
    pub fn empty(root: &Path) -> Self {
        PolicySet {
            root: root.to_path_buf(),
            authorities: BTreeMap::new(),
            directories: BTreeMap::new(),
            templates: BTreeMap::new(),
            assignments: BTreeMap::new(),
            stocks: BTreeMap::new(),
            bindings: BTreeMap::new(),
            roles: BTreeMap::new(),
            settings: Object {
                name: "default".to_string(),
                file: root.to_path_buf(),
                line: 0,
                spec: SettingsSpec::default(),
            },
            warnings: Vec::new(),
        }
    }

    /// How many objects the set holds (a defaulted `Settings` does not count).
    pub fn object_count(&self) -> usize {
        self.authorities.len()
            + self.directories.len()
            + self.templates.len()
            + self.assignments.len()
            + self.stocks.len()
            + self.bindings.len()
            + self.roles.len()
            + usize::from(self.settings.line > 0)
    }
}
