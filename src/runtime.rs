//! One reconcile pass, wired: load the policy, observe, compute desired state, read the
//! inventory, plan; and the connectors apply needs (store, master key, CAs, cards).
//!
//! The CLI (`plan`, `apply`, `audit`) and the controller use exactly these functions, so a
//! preview is what runs. This module holds no business rules: it only connects the pieces.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::apply::{CaRegistry, CardProvider, Cards, PcscCards, Tokens, VirtualCards};
use crate::ca::{CaKeyAlgorithm, CertificateAuthority, LocalCa, LocalCaConfig};
use crate::desired::{self, Desired, DirectoryObservation};
use crate::inventory::Inventory;
use crate::keystore::{KeyStore, TokenKey};
use crate::names::DistinguishedName;
use crate::observe::directory::read_file_directory;
use crate::observe::ldap;
use crate::plan::{self, Plan, PlanOptions, Presence, SafetyLimits};
use crate::policy::model::{CertificateAuthoritySpec, DirectorySpec, KeyAlgorithm};
use crate::policy::{Diagnostics, PolicySet};
use crate::secrets::MasterKey;
use crate::store::StoreError;

pub mod policy_set;

/// Name of the state directory used when neither `--state-dir`, `KEYFLEET_STATE_DIR` nor
/// `Settings.spec.stateDir` names one: created inside the policy directory.
pub const DEFAULT_STATE_DIR: &str = ".keyfleet";

/// Preparing a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// The policy set is invalid.
    #[error("the policy set is invalid:\n{0}")]
    Policy(Diagnostics),
    /// The policy set kept changing while it was read.
    #[error(transparent)]
    PolicySet(policy_set::LoadSetError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The master key could not be loaded or created.
    #[error(transparent)]
    MasterKey(#[from] crate::secrets::SecretError),
    /// Card access failed.
    #[error(transparent)]
    Cards(#[from] crate::apply::CardAccessError),
    /// The key store (PKCS#11 token) of the master key failed.
    #[error(transparent)]
    KeyStore(#[from] crate::keystore::KeyStoreError),
    /// The audit log could not be opened, or its key loaded: nothing is done without it.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// The audit log's signing key could not be loaded or created.
    #[error(transparent)]
    AuditKey(#[from] crate::audit::AuditKeyError),
    /// Computing the desired state or the plan panicked (a defect in Keyfleet): the pass has
    /// no plan and does nothing.
    #[error(
        "computing the desired state and the plan failed: {0}; nothing was planned or done (this is a defect in Keyfleet: please report it)"
    )]
    Panicked(String),
    /// The state directory is open to others, or could not be created private.
    #[error(transparent)]
    StateDir(#[from] crate::fsutil::PrivateDirError),
    /// The store is held by a running controller that could not be reached.
    #[error(transparent)]
    Control(#[from] crate::statedir::control::ControlError),
}

/// A loaded policy with the state directory it governs.
pub struct Environment {
    /// The validated policy.
    pub policy: PolicySet,
    /// The state directory.
    pub state_dir: PathBuf,
    /// The texts of the policy set's in-policy data files, read with it
    /// ([`policy_set::load_set`]): their directories are observed from these, never from
    /// the files again.
    pub policy_data: policy_set::PolicyData,
    /// The content hash of the policy set as loaded (policy files and in-policy data files).
    pub policy_hash: policy_set::PolicyHash,
}

/// Loads and validates the policy set and resolves the state directory: `override_dir`
/// (from `--state-dir` / `KEYFLEET_STATE_DIR`) wins over `Settings.spec.stateDir` (relative
/// to the Settings file), which wins over `<policy dir>/.keyfleet`. The data files inside the
/// policy directory are read with the policy files, as one version of the set.
pub fn load(policy_dir: &Path, override_dir: Option<&Path>) -> Result<Environment, PassError> {
    let (policy, policy_data, policy_hash) =
        policy_set::load_set_hashed(policy_dir).map_err(|e| match e {
            policy_set::LoadSetError::Invalid(d) => PassError::Policy(d),
            changing => PassError::PolicySet(changing),
        })?;
    let state_dir = match (override_dir, &policy.settings.spec.state_dir) {
        (Some(dir), _) => dir.to_path_buf(),
        (None, Some(dir)) => policy.settings.resolve_path(dir),
        (None, None) => policy_dir.join(DEFAULT_STATE_DIR),
    };
    Ok(Environment {
        policy,
        state_dir,
        policy_data,
        policy_hash,
    })
}

/// Observes every directory of a loaded set: a directory whose data file is part of the
/// policy set from the text read with it ([`Environment::policy_data`]), the others from
/// their source ([`observe_directory`]).
pub fn observe_environment(env: &Environment) -> BTreeMap<String, DirectoryObservation> {
    env.policy
        .directories
        .iter()
        .map(|(name, d)| {
            let observed = env
                .policy_data
                .observe(name)
                .unwrap_or_else(|| observe_directory(&env.policy, name, d));
            (name.clone(), observed)
        })
        .collect()
}

/// Observes every directory of the policy. A directory that cannot be read yields an error
/// entry (the desired state is then incomplete and nothing is revoked). LDAP directories are
/// read on a private tokio runtime, so this must not be called from async code (which uses
/// [`crate::observe::ldap::observe_all`]).
pub fn observe_directories(policy: &PolicySet) -> BTreeMap<String, DirectoryObservation> {
    policy
        .directories
        .iter()
        .map(|(name, d)| (name.clone(), observe_directory(policy, name, d)))
        .collect()
}

/// Observes one directory of the policy (LDAP directories fetch only the attributes the
/// templates use).
pub fn observe_directory(
    policy: &PolicySet,
    name: &str,
    d: &crate::policy::Object<DirectorySpec>,
) -> DirectoryObservation {
    match &d.spec {
        DirectorySpec::File(f) => {
            read_file_directory(&d.resolve_path(&f.path)).map_err(|e| e.to_string())
        }
        DirectorySpec::Ldap(_) => observe_ldap(policy, name, d),
    }
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

/// Every card provider of a state directory: its virtual cards and, when the policy or the
/// inventory uses PIV cards, the PC/SC readers (so a policy without PIV never touches PC/SC).
pub fn cards(env: &Environment, inventory: &Inventory) -> Cards {
    Cards {
        virtual_cards: virtual_cards(&env.state_dir),
        pcsc: Cards::uses_piv(&env.policy, inventory).then(PcscCards::new),
        tokens: Tokens::from_policy(&env.policy),
    }
}

/// What is attached now, through every card provider: virtual cards, cards identified in
/// readers and tokens; unknown reader cards and tokens a stock accepts are offered as blanks.
pub fn presence(
    env: &Environment,
    inventory: &Inventory,
    cards: &Cards,
) -> Result<Presence, PassError> {
    let (mut blanks, scanned) = cards.scan_blanks(&env.policy, inventory)?;
    let mut present = cards.virtual_cards.present()?;
    present.extend(scanned.iter().filter_map(|c| c.id()));
    if let Some(tokens) = &cards.tokens {
        present.extend(tokens.present()?);
        // Blank tokens the inventory already knows are planned from the inventory.
        blanks.extend(
            tokens
                .blanks()?
                .into_iter()
                .filter(|b| !inventory.cards.contains_key(&b.id)),
        );
    }
    Ok(Presence {
        cards: present,
        blanks,
    })
}

/// Observes the directories and the cards and plans. Writes nothing.
pub fn plan_pass_cards(
    env: &Environment,
    inventory: Inventory,
    cards: &Cards,
    now: OffsetDateTime,
    allow_mass_revocation: bool,
    targets: Option<std::collections::BTreeSet<String>>,
) -> Result<Pass, PassError> {
    let observed = observe_environment(env);
    plan_observed(
        env,
        &observed,
        inventory,
        cards,
        now,
        allow_mass_revocation,
        targets,
    )
}

/// Plans from directory observations made by the caller (the controller keeps them between
/// passes and re-reads a directory only when it changed). Writes nothing.
pub fn plan_observed(
    env: &Environment,
    observed: &BTreeMap<String, DirectoryObservation>,
    inventory: Inventory,
    cards: &Cards,
    now: OffsetDateTime,
    allow_mass_revocation: bool,
    targets: Option<std::collections::BTreeSet<String>>,
) -> Result<Pass, PassError> {
    let presence = presence(env, &inventory, cards)?;
    plan_with_presence(
        env,
        observed,
        inventory,
        presence,
        now,
        allow_mass_revocation,
        targets,
    )
}

/// Plans for `user` alone with only `card` present: a self-service session, whose card is
/// in the holder's reader (reached through a relay, not a reader of this machine). Observes
/// the directories; writes nothing. Must not be called from async code (see
/// [`observe_directories`]).
pub fn plan_with_card_present(
    env: &Environment,
    inventory: Inventory,
    card: &str,
    user: &str,
    now: OffsetDateTime,
) -> Result<Pass, PassError> {
    let observed = observe_environment(env);
    let presence = Presence {
        cards: [card.to_string()].into(),
        blanks: Vec::new(),
    };
    plan_with_presence(
        env,
        &observed,
        inventory,
        presence,
        now,
        false,
        Some([user.to_string()].into()),
    )
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

/// Computes the desired state and plans against a given presence. A panic anywhere in that
/// computation, in the calling thread or in one of its workers, fails the pass with
/// [`PassError::Panicked`]: no plan, so nothing is done on a partial desired state.
fn plan_with_presence(
    env: &Environment,
    observed: &BTreeMap<String, DirectoryObservation>,
    inventory: Inventory,
    presence: Presence,
    now: OffsetDateTime,
    allow_mass_revocation: bool,
    targets: Option<std::collections::BTreeSet<String>>,
) -> Result<Pass, PassError> {
    // Unwind safety: whatever the closure built is dropped with the panic; what it borrows
    // it only reads.
    let computed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let desired = desired::compute(&env.policy, observed);
        let plan = plan::plan(
            &desired,
            &inventory,
            &presence,
            &PlanOptions {
                now,
                limits: limits(&env.policy),
                allow_mass_revocation,
                targets,
                threads: planning_threads(),
            },
        );
        (desired, plan)
    }));
    let (desired, plan) = computed.map_err(|panic| PassError::Panicked(panic_message(&*panic)))?;
    Ok(Pass {
        desired,
        inventory,
        presence,
        plan,
    })
}

/// The text of a panic's payload (`panic!` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (
        payload.downcast_ref::<&str>(),
        payload.downcast_ref::<String>(),
    ) {
        (Some(s), _) => format!("panic: {s}"),
        (None, Some(s)) => format!("panic: {s}"),
        (None, None) => "panic".to_string(),
    }
}

/// Plans without creating anything: with no store yet the inventory is empty.
pub fn plan_readonly(
    env: &Environment,
    now: OffsetDateTime,
    allow_mass_revocation: bool,
    targets: Option<std::collections::BTreeSet<String>>,
) -> Result<Pass, PassError> {
    // From the store, or through the control socket while the controller holds it.
    let inventory = crate::statedir::control::read_inventory(&env.state_dir)?;
    let cards = cards(env, &inventory);
    plan_pass_cards(env, inventory, &cards, now, allow_mass_revocation, targets)
}

/// Loads (creating on first use) the master key of a state directory.
pub fn master_key(state_dir: &Path) -> Result<MasterKey, PassError> {
    crate::fsutil::ensure_private_dir(state_dir)?;
    Ok(MasterKey::load_or_create(state_dir)?)
}

/// Loads (creating on first use) the master key from where `Settings.spec.keyStore` says:
/// the state directory, or wrapped by a key on a PKCS#11 token.
pub fn master_key_for(env: &Environment) -> Result<MasterKey, PassError> {
    let store = KeyStore::parse(env.policy.settings.spec.key_store.as_deref())?;
    crate::fsutil::ensure_private_dir(&env.state_dir)?;
    match store {
        KeyStore::File => master_key(&env.state_dir),
        store => Ok(crate::keystore::master_key(&store, &env.state_dir)?),
    }
}

/// Opens the audit log of `env`'s state directory with its signing key (kept where the
/// Settings' `keyStore` keeps the master key; created on first use).
pub fn audit_log(
    env: &Environment,
    master: &MasterKey,
) -> Result<crate::audit::AuditLog, PassError> {
    let store = KeyStore::parse(env.policy.settings.spec.key_store.as_deref())?;
    let key = crate::audit::AuditKey::load_or_create(&store, &env.state_dir, master)?;
    Ok(crate::audit::AuditLog::open(&env.state_dir, key)?)
}

/// Connects every CertificateAuthority of the policy. The local CA is created on first use
/// under `<state dir>/ca/<name>/`; remote connectors (cfssl, Entrust CA Gateway) are built
/// without contacting their server. An authority whose connector cannot be built maps to an
/// error.
pub fn connect_authorities(
    policy: &PolicySet,
    state_dir: &Path,
    master: &MasterKey,
    now: OffsetDateTime,
) -> CaRegistry {
    connect_authorities_with(policy, state_dir, master, now, None)
}

/// Local CAs kept open between a controller's passes: opening one reads its certificate and
/// unseals its key, about a millisecond each pass for nothing. An entry is used again while
/// its spec and its certificate and key files are unchanged (a CA whose key lives on a
/// token is opened each pass: the token may have gone). The CA itself reads its database
/// again whenever another process changed it.
#[derive(Default)]
pub struct AuthorityCache {
    local: BTreeMap<String, CachedLocalCa>,
}

struct CachedLocalCa {
    spec: crate::policy::model::LocalCaSpec,
    files: [Option<crate::ca::local::Stamp>; 2],
    ca: std::sync::Arc<LocalCa>,
}

impl AuthorityCache {
    /// The local CA `name`, kept open while its spec and files are unchanged. A CA whose key
    /// is on a token is opened every time.
    fn local_ca(
        &mut self,
        name: &str,
        spec: &crate::policy::model::LocalCaSpec,
        state_dir: &Path,
        master: &MasterKey,
        now: OffsetDateTime,
    ) -> Result<std::sync::Arc<LocalCa>, String> {
        let on_file = matches!(
            KeyStore::parse(spec.key_store.as_deref()),
            Ok(KeyStore::File)
        );
        if !on_file {
            return local_ca(name, spec, state_dir, master, now).map(std::sync::Arc::new);
        }
        let dir = state_dir.join("ca").join(name);
        let stamp = || {
            [
                crate::ca::local::stamp_of(&dir.join(crate::ca::local::CA_CERT_FILE)),
                crate::ca::local::stamp_of(&dir.join(crate::ca::local::CA_KEY_FILE)),
            ]
        };
        // Stamped before opening: a change while it opens shows at the next call.
        let mut files = stamp();
        if let Some(c) = self.local.get(name)
            && c.spec == *spec
            && c.files == files
        {
            return Ok(c.ca.clone());
        }
        self.local.remove(name);
        let ca = std::sync::Arc::new(local_ca(name, spec, state_dir, master, now)?);
        if files[0].is_none() {
            // Created just now: what is there after creation.
            files = stamp();
        }
        self.local.insert(
            name.to_string(),
            CachedLocalCa {
                spec: spec.clone(),
                files,
                ca: ca.clone(),
            },
        );
        Ok(ca)
    }
}

/// [`connect_authorities`], reusing the local CAs of `cache` that are still current.
pub fn connect_authorities_cached(
    policy: &PolicySet,
    state_dir: &Path,
    master: &MasterKey,
    now: OffsetDateTime,
    cache: &mut AuthorityCache,
) -> CaRegistry {
    connect_authorities_with(policy, state_dir, master, now, Some(cache))
}

fn connect_authorities_with(
    policy: &PolicySet,
    state_dir: &Path,
    master: &MasterKey,
    now: OffsetDateTime,
    mut cache: Option<&mut AuthorityCache>,
) -> CaRegistry {
    let mut out: CaRegistry = BTreeMap::new();
    if let Some(cache) = cache.as_deref_mut() {
        cache
            .local
            .retain(|name, _| policy.authorities.contains_key(name));
    }
    for (name, obj) in &policy.authorities {
        let ca: Result<Box<dyn CertificateAuthority>, String> = match &obj.spec {
            CertificateAuthoritySpec::Local(spec) => match cache.as_deref_mut() {
                Some(cache) => cache
                    .local_ca(name, spec, state_dir, master, now)
                    .map(|ca| Box::new(ca) as Box<dyn CertificateAuthority>),
                None => local_ca(name, spec, state_dir, master, now)
                    .map(|ca| Box::new(ca) as Box<dyn CertificateAuthority>),
            },
            CertificateAuthoritySpec::Cfssl(spec) => {
                crate::ca::connect::cfssl(obj, spec, state_dir)
                    .map(|ca| Box::new(ca) as Box<dyn CertificateAuthority>)
            }
            CertificateAuthoritySpec::EntrustGateway(spec) => {
                crate::ca::connect::entrust_gateway(obj, spec, state_dir)
                    .map(|ca| Box::new(ca) as Box<dyn CertificateAuthority>)
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
    let token_key = match KeyStore::parse(spec.key_store.as_deref()).map_err(|e| e.to_string())? {
        KeyStore::File => None,
        KeyStore::Pkcs11(uri) => {
            let alg = match key_algorithm {
                CaKeyAlgorithm::EccP384 => crate::card::keys::KeyAlg::EccP384,
                CaKeyAlgorithm::EccP256 => crate::card::keys::KeyAlg::EccP256,
            };
            Some(TokenKey::open(&uri, alg, true).map_err(|e| e.to_string())?)
        }
    };
    let cfg = LocalCaConfig {
        subject,
        key_algorithm,
        validity_secs: spec.validity.as_secs(),
        crl_distribution_point: spec.crl_distribution_point.clone(),
        crl_validity_secs: spec.crl_validity.as_secs(),
    };
    LocalCa::open_or_create_with(
        &state_dir.join("ca").join(name),
        name,
        &cfg,
        master,
        now,
        token_key,
    )
    .map_err(|e| e.to_string())
}

/// Operator work on one card with the executors (no directory observation, no plan, no CA):
/// what the controller's and an offline command's operator host do.
pub struct CardWork<'a> {
    /// The environment.
    pub env: &'a Environment,
    /// The store.
    pub store: &'a crate::store::Store,
    /// The master key.
    pub master: &'a MasterKey,
    /// The audit log.
    pub audit: &'a crate::audit::AuditLog,
}

impl CardWork<'_> {
    /// Unblocks the PIN of `card` with its stored PUK, for `actor`.
    pub fn unblock(&self, card: &str, actor: &str) -> Result<crate::apply::UnblockReport, String> {
        self.with_context(actor, |ctx| crate::apply::unblock(ctx, card))
    }

    /// An offline unblock: the PUK of `card` released to `actor`, returned, or written to a
    /// file for them (`to_mailer`, for an approved request) whose path is returned.
    pub fn unblock_code(
        &self,
        card: &str,
        actor: &str,
        to_mailer: bool,
    ) -> Result<serde_json::Value, String> {
        self.with_context(actor, |ctx| {
            Ok(if to_mailer {
                let path = crate::apply::release_puk_to_mailer(ctx, card, actor)?;
                serde_json::json!({"card": card, "unblockCodeFile": path.display().to_string()})
            } else {
                let puk = crate::apply::release_puk(ctx, card, actor)?;
                serde_json::json!({"card": card, "puk": puk.as_str()})
            })
        })
    }

    /// `keyfleet cards retire CARD --found-lost`: the lost card wiped back to stock.
    pub fn retire_found_lost(
        &self,
        card: &str,
        actor: &str,
        comment: &str,
    ) -> Result<serde_json::Value, String> {
        self.with_context(actor, |ctx| {
            let blank = crate::apply::retire_found_lost(ctx, card, actor, comment)?;
            Ok(serde_json::json!({"card": card, "status": "blank", "stock": blank.stock}))
        })
    }

    /// Recovers `user`'s archived keys for `requester` as a `recover-key` request's
    /// parameters say.
    pub fn recover_key(
        &self,
        requester: &str,
        user: &str,
        parameters: &serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let p: crate::archive::RecoverParameters = serde_json::from_value(parameters.clone())
            .map_err(|e| format!("the request's parameters: {e}"))?;
        let destination = match (p.pkcs12, p.to_card) {
            (Some(file), None) => crate::apply::Destination::Pkcs12(file),
            (None, Some(card)) => crate::apply::Destination::Card(card),
            _ => return Err("give exactly one of pkcs12 and toCard".into()),
        };
        let recovery = crate::apply::KeyRecovery {
            user: user.to_string(),
            serial: p.serial,
            destination,
            requester: requester.to_string(),
        };
        let mut v =
            self.with_context(requester, |ctx| crate::apply::recover_key(ctx, &recovery))?;
        v["notifyOwner"] = p.notify_owner.into();
        Ok(v)
    }

    /// Runs `f` with the executors' context: the template rules (the management key) and the
    /// cards.
    fn with_context<T>(
        &self,
        actor: &str,
        f: impl FnOnce(&crate::apply::Context<'_>) -> Result<T, crate::apply::ApplyError>,
    ) -> Result<T, String> {
        let inventory = self.store.inventory().map_err(|e| e.to_string())?;
        let cards = cards(self.env, &inventory);
        let desired = desired::from_policy(&self.env.policy);
        let cas = crate::apply::CaRegistry::new();
        let clock = OffsetDateTime::now_utc;
        let ctx = crate::apply::Context {
            store: self.store,
            master: self.master,
            cas: &cas,
            cards: &cards,
            desired: &desired,
            clock: &clock,
            actor: actor.to_string(),
            pin_mailer_dir: self.env.state_dir.join("pin-mailer"),
            crash: crate::apply::CrashPoint::default(),
            audit: self.audit,
            holder_pins: Default::default(),
            archive: crate::archive::ArchiveKeys::new(&self.env.policy, &self.env.state_dir),
        };
        f(&ctx).map_err(|e| format!("{e:#}"))
    }
}

/// The threads the planner may use on this machine (up to 8): the edge chooses, the planner
/// is told.
pub fn planning_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(cas: &CaRegistry, name: &str) -> *const LocalCa {
        let ca = cas[name].as_ref().expect("CA opens");
        ca.as_local().expect("a local CA")
    }

    #[test]
    fn a_panicking_desired_state_worker_fails_the_pass_with_no_plan() {
        use crate::observe::snapshot::{DirectorySnapshot, DirectoryUser};
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let state = tempfile::tempdir().unwrap();
        let env = load(&repo.join("examples/quickstart"), Some(state.path())).unwrap();
        let user = |uid: &str| DirectoryUser {
            uid: uid.into(),
            dn: None,
            cn: uid.into(),
            mail: Some(format!("{uid}@example.com")),
            upn: None,
            disabled: false,
            stable_id: None,
            attributes: [("employeeNumber".to_string(), "1".to_string())].into(),
        };
        let uids: Vec<String> = (0..40)
            .map(|i| format!("runtime-user-{i:02}"))
            .chain(["panicky-runtime-user".to_string()])
            .collect();
        let snapshot = DirectorySnapshot::from_parts(
            uids.iter().map(|u| user(u)),
            [("engineering".to_string(), uids.clone(), Vec::new())],
        );
        let observed: BTreeMap<String, DirectoryObservation> =
            [("people".to_string(), Ok(snapshot))].into();
        let inventory = Inventory::default();
        let cards = cards(&env, &inventory);
        let now = OffsetDateTime::now_utc();
        let pass =
            plan_observed(&env, &observed, inventory.clone(), &cards, now, false, None).unwrap();
        assert_eq!(pass.plan.actions.len(), uids.len(), "one issuance each");

        let _fault = crate::desired::fault::PanicOn::uid("panicky-runtime-user");
        match plan_observed(&env, &observed, inventory, &cards, now, false, None) {
            Err(PassError::Panicked(message)) => {
                assert!(message.contains("panicky-runtime-user"), "{message}");
                let shown = PassError::Panicked(message).to_string();
                assert!(shown.contains("nothing was planned or done"), "{shown}");
            }
            Err(other) => panic!("unexpected error {other}"),
            Ok(pass) => panic!(
                "a pass with a panicked worker planned {} actions",
                pass.plan.actions.len()
            ),
        }
    }

    #[test]
    fn the_authority_cache_reopens_a_local_ca_only_when_its_spec_or_files_change() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let state = tempfile::tempdir().unwrap();
        let mut env = load(&repo.join("examples/quickstart"), Some(state.path())).unwrap();
        let master = MasterKey::from_bytes([7; 32]);
        let now = OffsetDateTime::now_utc();
        let mut cache = AuthorityCache::default();
        let connect = |env: &Environment, cache: &mut AuthorityCache| {
            connect_authorities_cached(&env.policy, &env.state_dir, &master, now, cache)
        };

        // Registries stay alive to the end: an address compared is never reused.
        let first_cas = connect(&env, &mut cache);
        let first = local(&first_cas, "quickstart-ca");
        let again_cas = connect(&env, &mut cache);
        assert_eq!(
            first,
            local(&again_cas, "quickstart-ca"),
            "an unchanged CA is kept open"
        );

        // Another process rewrote the certificate file: opened again.
        let pem = state.path().join("ca/quickstart-ca/ca.pem");
        let text = std::fs::read(&pem).unwrap();
        std::fs::remove_file(&pem).unwrap();
        std::fs::write(&pem, text).unwrap();
        let reopened_cas = connect(&env, &mut cache);
        let reopened = local(&reopened_cas, "quickstart-ca");
        assert_ne!(reopened, first);
        let same_cas = connect(&env, &mut cache);
        assert_eq!(local(&same_cas, "quickstart-ca"), reopened);

        // A changed spec: opened again with it.
        let Some(obj) = env.policy.authorities.get_mut("quickstart-ca") else {
            panic!("quickstart-ca");
        };
        let CertificateAuthoritySpec::Local(spec) = &mut obj.spec else {
            panic!("local");
        };
        spec.crl_validity = crate::policy::duration::Duration::from_secs(3600);
        let cas = connect(&env, &mut cache);
        assert_ne!(local(&cas, "quickstart-ca"), reopened);
        assert_eq!(
            cas["quickstart-ca"]
                .as_ref()
                .unwrap()
                .as_local()
                .unwrap()
                .crl_validity_secs(),
            3600
        );
    }
}
