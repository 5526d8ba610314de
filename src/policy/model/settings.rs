//! CardBinding, Role and Settings.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::policy::duration::Duration;

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
    /// A card incident declared in git, with the same effect as one reported by an operator
    /// (`keyfleet cards report`): `lost`, `damaged` or `forgotten`. When both say something
    /// the stronger wins (lost > damaged > forgotten); removing a declared `forgotten` is the
    /// card being found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<IncidentKind>,
}

/// What happened to a card (`CardBinding.spec.incident`, `keyfleet cards report`), weakest
/// first: the order is the strength, the stronger of two wins.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum IncidentKind {
    /// Left at home: its certificates are put on hold until it is found.
    Forgotten,
    /// Broken: its certificates are revoked (cessationOfOperation) and the card retired.
    Damaged,
    /// Lost or stolen: its certificates are revoked (keyCompromise); never used again.
    Lost,
}

impl IncidentKind {
    /// The lower-case name (`lost`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentKind::Forgotten => "forgotten",
            IncidentKind::Damaged => "damaged",
            IncidentKind::Lost => "lost",
        }
    }
}

impl std::fmt::Display for IncidentKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operator role: what its holders may do, optionally only for some templates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleSpec {
    /// What holders may do (a fixed vocabulary).
    #[schemars(length(min = 1))]
    pub permissions: Vec<Permission>,
    /// Who holds the role: directory users by uid (`alice`) and groups (`group:pki-admins`,
    /// nested groups included), from the directory `Settings.spec.operators.directory` names.
    #[serde(default)]
    pub members: Vec<String>,
    /// Limits the role to credentials of these templates (absent: every template). Reading
    /// the audit log and approving held mass revocations are not limited by template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templates: Option<Vec<String>>,
}

/// The operations an operator role may allow (the fixed vocabulary `validate` checks).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Permission {
    /// Read the inventory, cards, users and the plan.
    ViewInventory,
    /// Read the history of applied actions and the drift report.
    ViewHistory,
    /// Read the audit log.
    ViewAuditLog,
    /// Unblock a card's PIN.
    Unblock,
    /// Report a card incident (lost, damaged, forgotten).
    ReportIncident,
    /// End a card incident.
    ResolveIncident,
    /// Bind a card to a user.
    Bind,
    /// Put a certificate on hold by hand.
    Hold,
    /// Revoke a certificate by hand.
    Revoke,
    /// Recover an archived key.
    RecoverKey,
    /// Approve the revocations the safety valve holds.
    ApproveMassRevocation,
    /// Approve or deny other operators' requests.
    Approve,
    /// See every request and withdraw (deny) any pending one.
    ManageRequests,
}

impl Permission {
    /// Every permission, in vocabulary order.
    pub const ALL: [Permission; 13] = [
        Permission::ViewInventory,
        Permission::ViewHistory,
        Permission::ViewAuditLog,
        Permission::Unblock,
        Permission::ReportIncident,
        Permission::ResolveIncident,
        Permission::Bind,
        Permission::Hold,
        Permission::Revoke,
        Permission::RecoverKey,
        Permission::ApproveMassRevocation,
        Permission::Approve,
        Permission::ManageRequests,
    ];

    /// The permission's name in policy (`view-inventory`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::ViewInventory => "view-inventory",
            Permission::ViewHistory => "view-history",
            Permission::ViewAuditLog => "view-audit-log",
            Permission::Unblock => "unblock",
            Permission::ReportIncident => "report-incident",
            Permission::ResolveIncident => "resolve-incident",
            Permission::Bind => "bind",
            Permission::Hold => "hold",
            Permission::Revoke => "revoke",
            Permission::RecoverKey => "recover-key",
            Permission::ApproveMassRevocation => "approve-mass-revocation",
            Permission::Approve => "approve",
            Permission::ManageRequests => "manage-requests",
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The operations that can be put under approval (`Settings.spec.approvals`): each is done
/// only once enough other operators approved it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum OperationKind {
    /// Unblocking a card's PIN in a reader (target: the card).
    Unblock,
    /// Releasing a card's current PUK once, for an offline unblock (target: the card).
    UnblockCode,
    /// Approving the revocations the safety valve holds (target: `held-revocations`).
    ApproveMassRevocation,
    /// Recovering a user's archived encryption keys (target: the uid). Always under approval:
    /// `approvals.recover-key` approvers (2 when not set), holders of `recover-key`.
    RecoverKey,
}

impl OperationKind {
    /// Every kind.
    pub const ALL: [OperationKind; 4] = [
        OperationKind::Unblock,
        OperationKind::UnblockCode,
        OperationKind::ApproveMassRevocation,
        OperationKind::RecoverKey,
    ];

    /// How many approvals the operation needs under `approvals` (`None`: none, it runs at
    /// once). Key recovery always needs some: 2 when `approvals` does not list it.
    pub fn required_approvals(self, approvals: &BTreeMap<OperationKind, u32>) -> Option<u32> {
        match (approvals.get(&self), self) {
            (Some(n), _) => Some(*n),
            (None, OperationKind::RecoverKey) => Some(2),
            (None, _) => None,
        }
    }

    /// The permission its approvers need: `recover-key` for key recovery (two-person control
    /// among key recovery officers), `approve` for the rest.
    pub fn approver_permission(self) -> Permission {
        match self {
            OperationKind::RecoverKey => Permission::RecoverKey,
            _ => Permission::Approve,
        }
    }

    /// The kind's name (`unblock`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Unblock => "unblock",
            OperationKind::UnblockCode => "unblock-code",
            OperationKind::ApproveMassRevocation => "approve-mass-revocation",
            OperationKind::RecoverKey => "recover-key",
        }
    }

    /// The permission the requester (and, within their template scope, no approver) needs.
    pub fn permission(self) -> Permission {
        match self {
            OperationKind::Unblock | OperationKind::UnblockCode => Permission::Unblock,
            OperationKind::ApproveMassRevocation => Permission::ApproveMassRevocation,
            OperationKind::RecoverKey => Permission::RecoverKey,
        }
    }
}

impl std::fmt::Display for OperationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who the operators are (`Settings.spec.operators`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operators {
    /// Templates whose certificates identify operators: a TLS client certificate Keyfleet
    /// issued under one of these, active in the inventory, is the login of the user it was
    /// issued to.
    #[serde(default)]
    pub templates: Vec<String>,
    /// Identities for automation: a certificate from `caFile` with exactly `subject`.
    #[serde(default)]
    pub external: Vec<ExternalOperator>,
    /// On the control socket: Unix user name to operator name. The state directory's owner
    /// (and root) is the system owner, with every permission.
    #[serde(default)]
    pub local: BTreeMap<String, String>,
    /// A socket for local operators other than the state directory's owner (an absolute path
    /// outside the state directory, e.g. `/run/keyfleet/operator.sock`): the controller makes
    /// it reachable by every local user (mode 0666) and names each caller by their Unix uid
    /// through `local`; unmapped users are refused. Absent: only the owner reaches the
    /// controller, through the control socket in the state directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// The directory whose groups `group:` role members name (needed when there are several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
}

/// An operator identified by a certificate from an outside CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalOperator {
    /// The operator name (what roles list as a member, and what the audit log records).
    #[schemars(length(min = 1))]
    pub name: String,
    /// PEM file of the CA certificate(s) that issue this identity (relative to the policy file).
    pub ca_file: PathBuf,
    /// The exact subject DN of the certificate (RFC 4514, e.g. `CN=ticketing,O=Example`).
    #[schemars(length(min = 1))]
    pub subject: String,
}

/// The operator API (`keyfleet run --api ADDR`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Api {
    /// The server certificate and key (PEM files, relative to the policy file); absent: the
    /// local CA of an operator template issues one for the listen address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ApiTls>,
    /// Most calls per identity per minute (default 120); more get 429.
    #[serde(default = "default_rate_limit")]
    #[schemars(range(min = 1))]
    pub rate_limit: u32,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            tls: None,
            rate_limit: default_rate_limit(),
        }
    }
}

fn default_rate_limit() -> u32 {
    120
}

/// The API server's certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiTls {
    /// PEM certificate chain, the server's certificate first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key_file: PathBuf,
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
    /// Who the operators are.
    #[serde(default)]
    pub operators: Operators,
    /// Operations that need approval, with how many distinct approvers each needs, e.g.
    /// `{unblock: 1, approve-mass-revocation: 2}`.
    #[serde(default)]
    pub approvals: BTreeMap<OperationKind, u32>,
    /// How long a request waits for its approvals before it expires (default 24h).
    #[serde(default = "default_approval_timeout")]
    pub approval_timeout: Duration,
    /// The operator API.
    #[serde(default)]
    pub api: Api,
    /// Card incidents.
    #[serde(default)]
    pub incidents: Incidents,
    /// The archive of encryption keys (`archive: true` slots).
    #[serde(default)]
    pub archive: ArchiveSettings,
}

/// `Settings.spec.archive`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArchiveSettings {
    /// Where the archive key lives (it wraps each archived key's own data key; it is never
    /// the master key): `file` (default: `archive.key` in the state directory) or a `pkcs11:`
    /// URI of an AES key on a token (a different object from the master key's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^(file|pkcs11:.*)$"))]
    pub key_store: Option<String>,
}

/// Card incidents (`Settings.spec.incidents`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Incidents {
    /// A card still forgotten this long after it was reported (or its certificates were put
    /// on hold) becomes lost: revoked with keyCompromise, and replaced (default 7d).
    #[serde(default = "default_forgotten_becomes_lost_after")]
    pub forgotten_becomes_lost_after: Duration,
}

impl Default for Incidents {
    fn default() -> Self {
        Incidents {
            forgotten_becomes_lost_after: default_forgotten_becomes_lost_after(),
        }
    }
}

fn default_forgotten_becomes_lost_after() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

impl Default for SettingsSpec {
    /// The settings used when the policy has no `Settings` object (same as `spec: {}`).
    fn default() -> Self {
        SettingsSpec {
            state_dir: None,
            safety: Safety::default(),
            concurrency: default_concurrency(),
            key_store: None,
            operators: Operators::default(),
            approvals: BTreeMap::new(),
            approval_timeout: default_approval_timeout(),
            api: Api::default(),
            incidents: Incidents::default(),
            archive: ArchiveSettings::default(),
        }
    }
}

fn default_approval_timeout() -> Duration {
    Duration::from_secs(24 * 3600)
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
