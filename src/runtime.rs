//! One reconcile pass, wired: load the policy, observe, compute desired state, read the
//! inventory, plan; and the connectors apply needs (store, master key, CAs, cards).
//!
//! The CLI (`plan`, `apply`, `audit`) and the controller use exactly these functions, so a
//! preview is what runs. This module holds no business rules: it only connects the pieces.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::apply::{CaRegistry, CardProvider, VirtualCards};
use crate::ca::{CaKeyAlgorithm, CertificateAuthority, LocalCa, LocalCaConfig};
use crate::desired::{self, Desired, DirectoryObservation};
use crate::inventory::Inventory;
use crate::names::DistinguishedName;
use crate::observe::directory::read_file_directory;
use crate::observe::ldap;
use crate::plan::{self, Plan, PlanOptions, Presence, SafetyLimits};
use crate::policy::model::{CertificateAuthoritySpec, DirectorySpec, KeyAlgorithm};
use crate::policy::{self, Diagnostics, PolicySet};
use crate::secrets::MasterKey;
use crate::store::{Store, StoreError};

/// Name of the state directory used when neither `--state-dir`, `KEYFLEET_STATE_DIR` nor
/// `Settings.spec.stateDir` names one: created inside the policy directory.
pub const DEFAULT_STATE_DIR: &str = ".keyfleet";

/// Preparing a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// The policy set is invalid.
    #[error("the policy set is invalid:\n{0}")]
    Policy(Diagnostics),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The master key could not be loaded or created.
    #[error(transparent)]
    MasterKey(#[from] crate::secrets::SecretError),
    /// Card access failed.
    #[error(transparent)]
    Cards(#[from] crate::apply::CardAccessError),
}

/// A loaded policy with the state directory it governs.
pub struct Environment {
    /// The validated policy.
    pub policy: PolicySet,
    /// The state directory.
    pub state_dir: PathBuf,
}

/// Loads and validates the policy set and resolves the state directory: `override_dir`
/// (from `--state-dir` / `KEYFLEET_STATE_DIR`) wins over `Settings.spec.stateDir` (relative
/// to the Settings file), which wins over `<policy dir>/.keyfleet`.
pub fn load(policy_dir: &Path, override_dir: Option<&Path>) -> Result<Environment, PassError> {
    let policy = policy::load_policy_set(policy_dir).map_err(PassError::Policy)?;
    let state_dir = match (override_dir, &policy.settings.spec.state_dir) {
        (Some(dir), _) => dir.to_path_buf(),
        (None, Some(dir)) => policy.settings.resolve_path(dir),
        (None, None) => policy_dir.join(DEFAULT_STATE_DIR),
    };
    Ok(Environment { policy, state_dir })
}

/// Observes every directory of the policy. A directory that cannot be read yields an error
/// entry (the desired state is then incomplete and nothing is revoked). LDAP directories are
/// read on a private tokio runtime, so this must not be called from async code (which uses
/// [`crate::observe::ldap::observe_all`]).
pub fn observe_directories(policy: &PolicySet) -> BTreeMap<String, DirectoryObservation> {
    policy
        .directories
        .iter()
        .map(|(name, d)| {
            let obs = match &d.spec {
                DirectorySpec::File(f) => {
                    read_file_directory(&d.resolve_path(&f.path)).map_err(|e| e.to_string())
                }
                DirectorySpec::Ldap(_) => observe_ldap(policy, name, d),
            };
            (name.clone(), obs)
        })
        .collect()
}

fn observe_ldap(
    policy: &PolicySet,
    name: &str,
    d: &crate::policy::Object<DirectorySpec>,
) -> DirectoryObservation {
    let Some(dir) = ldap::LdapDirectory::from_policy(d) else {
        return Err(format!("directory {name} is not an ldap directory"));
    };
    let req = ldap::ObserveRequest::for_directory(policy, name);
    match ldap::block_on(dir.observe(&req)) {
        Ok(Ok(snapshot)) => Ok(snapshot),
        Ok(Err(e)) | Err(e) => Err(e.to_string()),
    }
}

/// The safety limits of the policy's Settings.
pub fn limits(policy: &PolicySet) -> SafetyLimits {
    SafetyLimits {
        max_revocations: policy.settings.spec.safety.max_revocations,
        max_revocation_percent: policy.settings.spec.safety.max_revocation_percent,
    }
}

/// The virtual-card provider of a state directory.
pub fn virtual_cards(state_dir: &Path) -> VirtualCards {
    VirtualCards::new(&state_dir.join("cards"))
}

/// Everything a pass observed, and its plan.
pub struct Pass {
    /// Desired state.
    pub desired: Desired,
    /// Recorded inventory.
    pub inventory: Inventory,
    /// Present cards.
    pub presence: Presence,
    /// The plan.
    pub plan: Plan,
}

/// Observes and plans from a given inventory. Writes nothing.
pub fn plan_pass(
    env: &Environment,
    inventory: Inventory,
    cards: &dyn CardProvider,
    now: OffsetDateTime,
    allow_mass_revocation: bool,
    targets: Option<std::collections::BTreeSet<String>>,
) -> Result<Pass, PassError> {
    let observed = observe_directories(&env.policy);
    let desired = desired::compute(&env.policy, &observed);
    let presence = Presence {
        cards: cards.present()?,
        blanks: Vec::new(),
    };
    let plan = plan::plan(
        &desired,
        &inventory,
        &presence,
        &PlanOptions {
            now,
            limits: limits(&env.policy),
            allow_mass_revocation,
            targets,
        },
    );
    Ok(Pass {
        desired,
        inventory,
        presence,
        plan,
    })
}

/// Plans without creating anything: with no store yet the inventory is empty.
pub fn plan_readonly(
    env: &Environment,
    now: OffsetDateTime,
    allow_mass_revocation: bool,
    targets: Option<std::collections::BTreeSet<String>>,
) -> Result<Pass, PassError> {
    let inventory = if env.state_dir.join("store").exists() {
        Store::open(&env.state_dir)?.inventory()?
    } else {
        Inventory::default()
    };
    let cards = virtual_cards(&env.state_dir);
    plan_pass(env, inventory, &cards, now, allow_mass_revocation, targets)
}

/// Loads (creating on first use) the master key of a state directory.
pub fn master_key(state_dir: &Path) -> Result<MasterKey, PassError> {
    Ok(MasterKey::load_or_create(state_dir)?)
}

/// Connects every CertificateAuthority of the policy. The local CA is created on first use
/// under `<state dir>/ca/<name>/`. Authorities without a connector map to an error.
pub fn connect_authorities(
    policy: &PolicySet,
    state_dir: &Path,
    master: &MasterKey,
    now: OffsetDateTime,
) -> CaRegistry {
    let mut out: CaRegistry = BTreeMap::new();
    for (name, obj) in &policy.authorities {
        let ca: Result<Box<dyn CertificateAuthority>, String> = match &obj.spec {
            CertificateAuthoritySpec::Local(spec) => local_ca(name, spec, state_dir, master, now)
                .map(|ca| Box::new(ca) as Box<dyn CertificateAuthority>),
            CertificateAuthoritySpec::Cfssl(_) => {
                Err("the cfssl connector is not available in this version".into())
            }
            CertificateAuthoritySpec::EntrustGateway(_) => {
                Err("the Entrust CA Gateway connector is not available in this version".into())
            }
        };
        out.insert(name.clone(), ca);
    }
    out
}

/// Opens (creating on first use) the local CA `name`.
pub fn local_ca(
    name: &str,
    spec: &crate::policy::model::LocalCaSpec,
    state_dir: &Path,
    master: &MasterKey,
    now: OffsetDateTime,
) -> Result<LocalCa, String> {
    let subject = DistinguishedName::parse(&spec.subject).map_err(|e| e.to_string())?;
    let key_algorithm = match spec.key_algorithm {
        KeyAlgorithm::EccP384 => CaKeyAlgorithm::EccP384,
        _ => CaKeyAlgorithm::EccP256,
    };
    let cfg = LocalCaConfig {
        subject,
        key_algorithm,
        validity_secs: spec.validity.as_secs(),
        crl_distribution_point: spec.crl_distribution_point.clone(),
        crl_validity_secs: spec.crl_validity.as_secs(),
    };
    LocalCa::open_or_create(&state_dir.join("ca").join(name), name, &cfg, master, now)
        .map_err(|e| e.to_string())
}
