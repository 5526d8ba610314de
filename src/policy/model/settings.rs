//! CardBinding, Role and Settings.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An explicit user-to-card binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CardBindingSpec {
    /// The user's uid in the directory.
    #[schemars(length(min = 1))]
    pub user: String,
    /// The card id (GUID, serial or virtual card name).
    #[schemars(length(min = 1))]
    pub card: String,
}

/// An operator role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleSpec {
    /// What holders may do.
    #[schemars(length(min = 1))]
    pub permissions: Vec<Permission>,
    /// Who holds the role (operator identities, e.g. uids).
    #[serde(default)]
    pub members: Vec<String>,
}

/// Runtime operations an operator may be allowed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Permission {
    /// Unblock a PIN.
    Unblock,
    /// Report a card lost or damaged.
    ReportLost,
    /// Recover an archived key.
    RecoverKey,
    /// Bind a card to a user.
    Bind,
    /// Approve a plan over the safety limit.
    ApproveMassRevocation,
    /// Run issuance.
    Issue,
    /// Revoke a credential by hand.
    Revoke,
    /// Read the inventory.
    ViewInventory,
    /// Retire a card.
    Retire,
}

/// Global settings (at most one object of this kind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SettingsSpec {
    /// The state directory (relative to the policy file); `--state-dir` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// Limits on destructive plans.
    #[serde(default)]
    pub safety: Safety,
    /// How many cards the controller (`keyfleet run`) works on at once (1..=64, default 4):
    /// the actions of different cards run in parallel, a card's own actions in order.
    /// `keyfleet apply` runs one action at a time. Each CA connector also bounds its own
    /// calls (`maxConcurrency`).
    #[serde(default = "default_concurrency")]
    #[schemars(range(min = 1, max = 64))]
    pub concurrency: u32,
    /// Where the master key lives: `file` (default, in the state dir) or a `pkcs11:` URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^(file|pkcs11:.*)$"))]
    pub key_store: Option<String>,
}

impl Default for SettingsSpec {
    /// The settings used when the policy has no `Settings` object (same as `spec: {}`).
    fn default() -> Self {
        SettingsSpec {
            state_dir: None,
            safety: Safety::default(),
            concurrency: default_concurrency(),
            key_store: None,
        }
    }
}

fn default_concurrency() -> u32 {
    4
}

/// Safety limits: a plan revoking more than either limit is refused unless approved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Safety {
    /// Most revocations in one plan (default 10).
    #[serde(default = "default_max_revocations")]
    pub max_revocations: u32,
    /// Most revocations as a percentage of issued cards (0..=100, default 25).
    #[serde(default = "default_max_revocation_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub max_revocation_percent: u32,
}

impl Default for Safety {
    fn default() -> Self {
        Safety {
            max_revocations: default_max_revocations(),
            max_revocation_percent: default_max_revocation_percent(),
        }
    }
}

fn default_max_revocations() -> u32 {
    10
}
fn default_max_revocation_percent() -> u32 {
    25
}
