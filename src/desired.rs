//! Desired state: which credential every entitled user should hold, with subjects and SANs
//! expanded from their directory attributes.
//!
//! [`compute`] is pure: policy and directory snapshots in, [`Desired`] out. It does not look at
//! the inventory (that is the planner's job) and does no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::names::{DistinguishedName, SanValue, escape_value};
use crate::observe::snapshot::{DirectorySnapshot, UserRef};
use crate::policy::PolicySet;
use crate::policy::model::{
    CardTemplateSpec, CardType, KeyAlgorithm, KeyGeneration, ManagementKeyPolicy,
    OnEntitlementLoss, OnUserDisabled, SanTemplate, Slot, StockSelector,
};
use crate::policy::template::Var;

/// One certificate a credential should contain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredCert {
    /// The template's name for this certificate.
    pub name: String,
    /// Card slot.
    pub slot: Slot,
    /// Issuing authority (policy name).
    pub authority: String,
    /// CA profile.
    pub profile: String,
    /// Key algorithm.
    pub key_algorithm: KeyAlgorithm,
    /// Where the key is generated.
    pub key_generation: KeyGeneration,
    /// Whether a server-generated key is archived.
    pub archive: bool,
    /// Expanded subject.
    pub subject: DistinguishedName,
    /// Expanded SANs.
    pub sans: Vec<SanValue>,
    /// Requested validity in seconds.
    pub validity_secs: u64,
    /// Renewal window in seconds before notAfter.
    pub renew_before_secs: u64,
    /// The revision hash: see [`revision`].
    pub revision: String,
}

/// A credential (one card) a user should hold under one template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredCredential {
    /// The uid.
    pub user: String,
    /// The template.
    pub template: String,
    /// Card type of the template.
    pub card_type: CardType,
    /// Whether the account is disabled in the directory.
    pub user_disabled: bool,
    /// What to do when the account is disabled.
    pub on_user_disabled: OnUserDisabled,
    /// The certificates, by slot.
    pub certificates: BTreeMap<Slot, DesiredCert>,
    /// An explicit `CardBinding` for this user and card type, if any.
    pub bound_card: Option<String>,
    /// The stock a new card may be taken from (a stock of this card type with autoBind).
    pub stock: Option<String>,
    /// Length of the initial PIN.
    pub pin_length: u8,
    /// Length of the PUK.
    pub puk_length: u8,
    /// Management key policy.
    pub management_key: ManagementKeyPolicy,
    /// PIN and PUK tries set on the card at personalisation, when its type can
    /// ([`crate::policy::model::CardTemplateSpec::settable_retries`]).
    pub retries: Option<(u8, u8)>,
}

/// What the policy says about a template, kept for credentials that are no longer desired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateRules {
    /// Behaviour when entitlement is lost.
    pub on_entitlement_loss: OnEntitlementLoss,
    /// Behaviour when the account is disabled.
    pub on_user_disabled: OnUserDisabled,
    /// Management key policy (personalisation, and its recovery, which has no credentials).
    pub management_key: ManagementKeyPolicy,
    /// PIN and PUK tries set at personalisation, when the card type can
    /// ([`crate::policy::model::CardTemplateSpec::settable_retries`]).
    pub retries: Option<(u8, u8)>,
    /// Previous key-management keys kept in the card's retired slots (`keyHistory`).
    pub key_history: u8,
}

/// A card stock as the planner needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StockInfo {
    /// Stock name.
    pub name: String,
    /// Card type.
    pub card_type: CardType,
    /// Whether present unbound cards may be bound automatically.
    pub auto_bind: bool,
    /// For virtual stocks: cards are created on demand, up to this many (None: unlimited).
    pub virtual_max: Option<u32>,
    /// True for virtual stocks.
    pub is_virtual: bool,
}

/// A user entitled to two templates that cannot both be honoured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Conflict {
    /// The uid.
    pub user: String,
    /// The templates in conflict.
    pub templates: Vec<String>,
    /// Why.
    pub message: String,
}

/// A user whose credential could not be computed (a template variable the user lacks, a
/// subject that does not form a valid DN).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExpansionError {
    /// The uid.
    pub user: String,
    /// The template.
    pub template: String,
    /// What went wrong.
    pub message: String,
}

/// Every user the directories reported, with their disabled flag, sorted by uid. Compact:
/// one string buffer for all uids (a 100,000-user directory costs about 1.5 MiB here, not an
/// allocation per user). Serialized as a map from uid to the flag.
#[derive(Debug, Clone, Default)]
pub struct UserSet {
    text: String,
    /// (start, len, disabled) of each uid in `text`, sorted by uid.
    entries: Vec<(u32, u32, bool)>,
}

impl UserSet {
    /// The set of `users` (uid, disabled); of a uid given twice the first is kept.
    pub fn from_unsorted(mut users: Vec<(&str, bool)>) -> UserSet {
        users.sort_by(|a, b| a.0.cmp(b.0));
        users.dedup_by(|later, earlier| later.0 == earlier.0);
        let mut set = UserSet {
            text: String::with_capacity(users.iter().map(|u| u.0.len()).sum()),
            entries: Vec::with_capacity(users.len()),
        };
        for (uid, disabled) in users {
            set.push(uid, disabled);
        }
        set
    }

    fn push(&mut self, uid: &str, disabled: bool) {
        // Beyond 4 GiB of uids the offsets would wrap: such a user is left out of this set,
        // which only tells revocation reasons apart ("gone" or "no longer entitled").
        let (Ok(start), Ok(len)) = (u32::try_from(self.text.len()), u32::try_from(uid.len()))
        else {
            return;
        };
        if start.checked_add(len).is_none() {
            return;
        }
        self.text.push_str(uid);
        self.entries.push((start, len, disabled));
    }

    fn uid(&self, e: &(u32, u32, bool)) -> &str {
        let start = e.0 as usize;
        self.text
            .get(start..start + e.1 as usize)
            .unwrap_or_default()
    }

    fn find(&self, uid: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|e| self.uid(e).cmp(uid))
    }

    /// Whether a directory reported `uid`.
    pub fn contains_key(&self, uid: &str) -> bool {
        self.find(uid).is_ok()
    }

    /// The disabled flag of `uid`, when a directory reported them.
    pub fn get(&self, uid: &str) -> Option<bool> {
        self.find(uid)
            .ok()
            .and_then(|i| self.entries.get(i))
            .map(|e| e.2)
    }

    /// Adds or updates one user.
    pub fn insert(&mut self, uid: &str, disabled: bool) {
        match self.find(uid) {
            Ok(i) => self.entries[i].2 = disabled,
            Err(i) => {
                let before = self.entries.len();
                self.push(uid, disabled);
                if self.entries.len() > before
                    && let Some(e) = self.entries.pop()
                {
                    self.entries.insert(i, e);
                }
            }
        }
    }

    /// Removes one user.
    pub fn remove(&mut self, uid: &str) {
        if let Ok(i) = self.find(uid) {
            self.entries.remove(i);
            self.compact_if_sparse();
        }
    }

    /// Rebuilds the text buffer once more than half of it belongs to removed users (so a
    /// long run of updates does not grow it without bound).
    fn compact_if_sparse(&mut self) {
        let live: usize = self.entries.iter().map(|e| e.1 as usize).sum();
        if self.text.len() > 4096 && self.text.len() > 2 * live {
            let users: Vec<(&str, bool)> = self.iter().collect();
            let rebuilt = UserSet::from_unsorted(users);
            *self = rebuilt;
        }
    }

    /// Removes everyone.
    pub fn clear(&mut self) {
        self.text.clear();
        self.entries.clear();
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every user and their flag, by uid.
    pub fn iter(&self) -> impl Iterator<Item = (&str, bool)> + '_ {
        self.entries.iter().map(|e| (self.uid(e), e.2))
    }
}

/// Equal when they hold the same users with the same flags (however they were built).
impl PartialEq for UserSet {
    fn eq(&self, other: &UserSet) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for UserSet {}

impl<S: AsRef<str>> FromIterator<(S, bool)> for UserSet {
    fn from_iter<I: IntoIterator<Item = (S, bool)>>(iter: I) -> UserSet {
        let owned: Vec<(S, bool)> = iter.into_iter().collect();
        UserSet::from_unsorted(owned.iter().map(|(u, d)| (u.as_ref(), *d)).collect())
    }
}

impl Serialize for UserSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

/// The whole desired state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Desired {
    /// Credentials by (uid, template).
    pub credentials: BTreeMap<(String, String), DesiredCredential>,
    /// Every user any directory reported, with their disabled flag.
    pub users: UserSet,
    /// Template rules by template name (every template in the policy).
    pub templates: BTreeMap<String, TemplateRules>,
    /// Card stocks.
    pub stocks: Vec<StockInfo>,
    /// True only when every directory was observed completely: revocations need this.
    pub complete: bool,
    /// Users with conflicting entitlements: nothing is issued or revoked for them.
    pub conflicts: Vec<Conflict>,
    /// Users whose credentials could not be expanded: nothing is issued or revoked for them.
    pub errors: Vec<ExpansionError>,
    /// Problems observing directories (name and message).
    pub observation_errors: Vec<String>,
    /// The credentials of the temporary cards entitled users would get while their card is
    /// forgotten, by (uid, temporary template): expanded like the others, used only then.
    pub temporaries: BTreeMap<(String, String), DesiredCredential>,
    /// Each template's temporary template (`CardTemplate.spec.temporary`).
    pub temporary_of: BTreeMap<String, String>,
    /// Incidents declared in git (`CardBinding.spec.incident`), by card id.
    pub incidents: BTreeMap<String, crate::policy::model::IncidentKind>,
    /// `Settings.spec.incidents.forgottenBecomesLostAfter`, in seconds.
    pub forgotten_becomes_lost_after_secs: u64,
}

impl Desired {
    /// Users who must be left alone this pass (conflicts and expansion errors).
    /// The credential of `(user, template)`: an entitlement, or a temporary card's.
    pub fn credential(&self, user: &str, template: &str) -> Option<&DesiredCredential> {
        let key = (user.to_string(), template.to_string());
        self.credentials
            .get(&key)
            .or_else(|| self.temporaries.get(&key))
    }

    /// Users who must be left alone this pass (conflicts and expansion errors).
    pub fn frozen_users(&self) -> BTreeSet<&str> {
        self.conflicts
            .iter()
            .map(|c| c.user.as_str())
            .chain(self.errors.iter().map(|e| e.user.as_str()))
            .collect()
    }
}

/// Version of the revision hash's canonical form. Bumping it would reissue every credential,
/// so it only changes together with a migration that rewrites stored revisions.
pub const REVISION_VERSION: &str = "r1";

/// The template revision of one certificate: a hash over a canonical form of exactly the
/// fields whose change requires a new certificate (CA, profile, subject, SANs, slot, key
/// algorithm, key generation). Validity and renewal window are deliberately absent: changing
/// them takes effect at the next renewal, not by reissuing the fleet.
pub fn revision(
    slot: Slot,
    authority: &str,
    profile: &str,
    key_algorithm: KeyAlgorithm,
    key_generation: KeyGeneration,
    subject: &DistinguishedName,
    sans: &[SanValue],
) -> String {
    let mut h = Sha256::new();
    let mut field = |name: &str, value: &str| {
        // Length-prefixed so that no two different inputs share a canonical form.
        h.update(name.as_bytes());
        h.update((value.len() as u64).to_be_bytes());
        h.update(value.as_bytes());
    };
    field("version", REVISION_VERSION);
    field("slot", slot.hex());
    field("authority", authority);
    field("profile", profile);
    field("keyAlgorithm", key_algorithm_name(key_algorithm));
    field(
        "keyGeneration",
        match key_generation {
            KeyGeneration::OnCard => "on-card",
            KeyGeneration::Server => "server",
        },
    );
    field("subject", &subject.to_string());
    for san in sans {
        field("san", &san.to_string());
    }
    let digest = h.finalize();
    format!("{REVISION_VERSION}-{}", hex::encode(&digest[..12]))
}

/// The policy spelling of a key algorithm.
pub fn key_algorithm_name(alg: KeyAlgorithm) -> &'static str {
    match alg {
        KeyAlgorithm::EccP256 => "ecc-p256",
        KeyAlgorithm::EccP384 => "ecc-p384",
        KeyAlgorithm::Rsa2048 => "rsa-2048",
        KeyAlgorithm::Rsa3072 => "rsa-3072",
    }
}

/// The outcome of observing one directory: a snapshot or the reason there is none.
pub type DirectoryObservation = Result<DirectorySnapshot, String>;

/// Computes the desired state from the policy and one observation per `Directory` (by name).
/// A directory missing from `observed` counts as failed. A panic in one of its workers (a
/// defect) is resumed in the calling thread: there is never a desired state that lacks the
/// users of a worker that failed.
pub fn compute(policy: &PolicySet, observed: &BTreeMap<String, DirectoryObservation>) -> Desired {
    let mut desired = from_policy(policy);
    desired.complete = true;
    let mut everyone: Vec<(&str, bool)> = Vec::new();
    for name in policy.directories.keys() {
        match observed.get(name) {
            Some(Ok(snapshot)) => {
                if !snapshot.complete {
                    desired.complete = false;
                    let why = if snapshot.problems.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", snapshot.problems.join("; "))
                    };
                    desired
                        .observation_errors
                        .push(format!("directory {name}: observation incomplete{why}"));
                }
                everyone.extend(snapshot.users.iter().map(|u| (u.uid(), u.disabled())));
            }
            Some(Err(e)) => {
                desired.complete = false;
                desired
                    .observation_errors
                    .push(format!("directory {name}: {e}"));
            }
            None => {
                desired.complete = false;
                desired
                    .observation_errors
                    .push(format!("directory {name}: not observed"));
            }
        }
    }

    desired.users = UserSet::from_unsorted(everyone);

    // Who is entitled to which template, through which directory (borrowed: no copies of
    // the directory's strings).
    let mut entitled: HashMap<&str, BTreeMap<&str, &str>> = HashMap::new();
    let mut unsearched = Vec::new();
    for a in policy.assignments.values() {
        let Some(Ok(snapshot)) = observed.get(&a.spec.directory) else {
            continue;
        };
        let mut grant = |uid: &str| {
            // Borrow the uid from the snapshot, which outlives this computation.
            if let Some(user) = snapshot.users.get(uid) {
                entitled
                    .entry(user.uid())
                    .or_default()
                    .insert(a.spec.template.as_str(), a.spec.directory.as_str());
            }
        };
        for g in &a.spec.groups {
            snapshot.for_each_member(&g.name, g.nested, &mut grant);
        }
        for u in &a.spec.users {
            grant(u);
        }
        if let Some(filter) = &a.spec.filter {
            match snapshot.filter_matches(filter) {
                Some(uids) => uids.for_each(&mut grant),
                // Nobody can be said to match (or not): revoking on that would be a guess.
                None => unsearched.push(format!(
                    "directory {}: the filter {filter:?} of Assignment {} was not searched",
                    a.spec.directory, a.name
                )),
            }
        }
    }
    if !unsearched.is_empty() {
        desired.complete = false;
        desired.observation_errors.extend(unsearched);
    }
    let mut uids: Vec<&str> = entitled.keys().copied().collect();
    uids.sort_unstable();

    // Expanding templates is the expensive part: spread users over the available cores.
    let bindings = bindings_by_user(policy);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let chunk = uids.len().div_ceil(threads).max(1);
    let results: Vec<Vec<UserResult>> = std::thread::scope(|scope| {
        let handles: Vec<_> = uids
            .chunks(chunk)
            .map(|part| {
                let (entitled, bindings) = (&entitled, &bindings);
                scope.spawn(move || {
                    part.iter()
                        .map(|uid| user_result(policy, observed, bindings, uid, &entitled[uid]))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        // A worker that panicked has no result for its users: carry on without them and
        // they would look no longer entitled. The panic goes on to the caller instead, whose
        // pass fails (`runtime` turns it into an error: no plan, no action).
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let mut credentials = Vec::with_capacity(uids.len());
    for r in results.into_iter().flatten() {
        credentials.extend(r.credentials);
        desired.temporaries.extend(r.temporaries);
        desired.conflicts.extend(r.conflict);
        desired.errors.extend(r.errors);
    }
    // Already sorted by (uid, template): the map is bulk-built.
    desired.credentials = credentials.into_iter().collect();
    desired
}

/// Recomputes the desired state of some users only (after a directory change that touched
/// them), leaving everyone else's as it was. The result equals a full [`compute`] over the
/// same inputs for every user, as long as only these users' directory data changed.
pub fn update_users(
    desired: &mut Desired,
    policy: &PolicySet,
    observed: &BTreeMap<String, DirectoryObservation>,
    users: &BTreeSet<String>,
) {
    let keys: Vec<(String, String)> = users
        .iter()
        .flat_map(|u| {
            desired
                .credentials
                .range((u.clone(), String::new())..)
                .take_while(move |((uu, _), _)| uu == u)
                .map(|(k, _)| k.clone())
        })
        .collect();
    for k in keys {
        desired.credentials.remove(&k);
    }
    desired.temporaries.retain(|(u, _), _| !users.contains(u));
    desired.conflicts.retain(|c| !users.contains(&c.user));
    desired.errors.retain(|e| !users.contains(&e.user));
    let bindings = bindings_by_user(policy);
    for uid in users {
        desired.users.remove(uid);
        let first = policy
            .directories
            .keys()
            .find_map(|name| match observed.get(name) {
                Some(Ok(snapshot)) => snapshot.users.get(uid),
                _ => None,
            });
        if let Some(user) = first {
            desired.users.insert(uid, user.disabled());
        }
        let mut templates: BTreeMap<&str, &str> = BTreeMap::new();
        for a in policy.assignments.values() {
            let Some(Ok(snapshot)) = observed.get(&a.spec.directory) else {
                continue;
            };
            if !snapshot.users.contains_key(uid) {
                continue;
            }
            let entitled = a.spec.users.iter().any(|u| u == uid)
                || a.spec
                    .groups
                    .iter()
                    .any(|g| snapshot.is_member(uid, &g.name, g.nested))
                || a.spec.filter.as_ref().is_some_and(|f| {
                    snapshot
                        .filtered
                        .get(f)
                        .is_some_and(|matched| matched.contains(uid))
                });
            if entitled {
                templates.insert(a.spec.template.as_str(), a.spec.directory.as_str());
            }
        }
        if !templates.is_empty() {
            let r = user_result(policy, observed, &bindings, uid, &templates);
            desired.credentials.extend(r.credentials);
            desired.temporaries.extend(r.temporaries);
            desired.conflicts.extend(r.conflict);
            desired.errors.extend(r.errors);
        }
    }
    desired.conflicts.sort_by(|a, b| a.user.cmp(&b.user));
    desired
        .errors
        .sort_by(|a, b| (&a.user, &a.template).cmp(&(&b.user, &b.template)));
}

fn bindings_by_user(policy: &PolicySet) -> BTreeMap<&str, Vec<&str>> {
    let mut bindings: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for b in policy.bindings.values() {
        bindings
            .entry(b.spec.user.as_str())
            .or_default()
            .push(b.spec.card.as_str());
    }
    bindings
}

/// Fault injection for tests only (compiled only with `cfg(test)`, so no input reaches it):
/// expanding a uid named here panics, as a defect in a worker would.
#[cfg(test)]
pub(crate) mod fault {
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    static PANIC_ON: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

    /// While alive, expanding `uid` panics.
    pub(crate) struct PanicOn(String);

    impl PanicOn {
        pub(crate) fn uid(uid: &str) -> PanicOn {
            PANIC_ON.lock().unwrap().insert(uid.to_string());
            PanicOn(uid.to_string())
        }
    }

    impl Drop for PanicOn {
        fn drop(&mut self) {
            if let Ok(mut set) = PANIC_ON.lock() {
                set.remove(&self.0);
            }
        }
    }

    /// Panics when a test asked for `uid`.
    pub(crate) fn check(uid: &str) {
        if PANIC_ON.lock().is_ok_and(|set| set.contains(uid)) {
            panic!("injected fault: expanding {uid} panics");
        }
    }
}

/// What one entitled user contributes to the desired state.
#[derive(Default)]
struct UserResult {
    credentials: Vec<((String, String), DesiredCredential)>,
    temporaries: Vec<((String, String), DesiredCredential)>,
    conflict: Option<Conflict>,
    errors: Vec<ExpansionError>,
}

/// The credentials of one entitled user (or a conflict, or expansion errors), in template
/// order.
fn user_result(
    policy: &PolicySet,
    observed: &BTreeMap<String, DirectoryObservation>,
    bindings: &BTreeMap<&str, Vec<&str>>,
    uid: &str,
    templates: &BTreeMap<&str, &str>,
) -> UserResult {
    #[cfg(test)]
    fault::check(uid);
    let mut out = UserResult::default();
    // Two templates of one card type for one user: which card gets which is a guess.
    let mut by_type: BTreeMap<CardType, Vec<&str>> = BTreeMap::new();
    for t in templates.keys() {
        if let Some(tpl) = policy.templates.get(*t) {
            by_type.entry(tpl.spec.card_type).or_default().push(t);
        }
    }
    if let Some((card_type, names)) = by_type.iter().find(|(_, v)| v.len() > 1) {
        out.conflict = Some(Conflict {
            user: uid.to_string(),
            templates: names.iter().map(|s| s.to_string()).collect(),
            message: format!(
                "{uid} is entitled to {} templates of card type {}: {}; fix the assignments",
                names.len(),
                card_type.as_str(),
                names.join(", ")
            ),
        });
        return out;
    }
    let mut user_bindings = bindings.get(uid).cloned().unwrap_or_default();
    for (template, directory) in templates {
        let Some(tpl) = policy.templates.get(*template) else {
            continue;
        };
        let Some(Ok(snapshot)) = observed.get(*directory) else {
            continue;
        };
        let Some(user) = snapshot.users.get(uid) else {
            continue;
        };
        let bound_card = if tpl.spec.card_type == CardType::Virtual || user_bindings.is_empty() {
            None
        } else {
            Some(user_bindings.remove(0).to_string())
        };
        match credential_for(user, template, &tpl.spec, policy) {
            Ok(mut cred) => {
                cred.bound_card = bound_card;
                out.credentials
                    .push(((uid.to_string(), template.to_string()), cred));
                // The temporary card's credential, ready for when the card is forgotten; a
                // user it cannot be expanded for gets no temporary card (`validate` expands
                // it against the sample user).
                if let Some(temporary) = &tpl.spec.temporary
                    && let Some(ttpl) = policy.templates.get(&temporary.template)
                    && let Ok(tcred) = credential_for(user, &temporary.template, &ttpl.spec, policy)
                {
                    out.temporaries
                        .push(((uid.to_string(), temporary.template.clone()), tcred));
                }
            }
            Err(message) => out.errors.push(ExpansionError {
                user: uid.to_string(),
                template: template.to_string(),
                message,
            }),
        }
    }
    out
}

/// What the policy alone says, before any directory is observed: template rules and card
/// stocks, no credentials, not complete (so nothing could be revoked from it). Recovery needs
/// no more than this.
pub fn from_policy(policy: &PolicySet) -> Desired {
    let mut desired = Desired::default();
    for (name, t) in &policy.templates {
        desired.templates.insert(
            name.clone(),
            TemplateRules {
                on_entitlement_loss: t.spec.on_entitlement_loss,
                on_user_disabled: t.spec.on_user_disabled,
                management_key: t.spec.management_key,
                retries: t.spec.settable_retries(),
                key_history: t.spec.effective_key_history(),
            },
        );
        if let Some(temporary) = &t.spec.temporary {
            desired
                .temporary_of
                .insert(name.clone(), temporary.template.clone());
        }
    }
    for b in policy.bindings.values() {
        if let Some(kind) = b.spec.incident {
            let e = desired.incidents.entry(b.spec.card.clone()).or_insert(kind);
            *e = (*e).max(kind);
        }
    }
    desired.forgotten_becomes_lost_after_secs = policy
        .settings
        .spec
        .incidents
        .forgotten_becomes_lost_after
        .as_secs();
    for (name, s) in &policy.stocks {
        desired.stocks.push(StockInfo {
            name: name.clone(),
            card_type: s.spec.card_type,
            auto_bind: s.spec.auto_bind,
            virtual_max: match &s.spec.selector {
                StockSelector::Virtual(v) => v.max,
                _ => None,
            },
            is_virtual: matches!(s.spec.selector, StockSelector::Virtual(_)),
        });
    }
    desired
}

/// The value of a template variable for a user.
pub fn lookup(user: UserRef<'_>, var: &Var) -> Option<String> {
    match var {
        Var::Uid => Some(user.uid().to_string()),
        Var::Cn => Some(user.cn().to_string()),
        Var::Mail => user.mail().map(str::to_string),
        Var::Upn => user.upn().map(str::to_string),
        Var::Dn => user.dn().map(str::to_string),
        Var::Attr(name) => user.attribute(name).map(str::to_string),
    }
}

fn credential_for(
    user: UserRef<'_>,
    template: &str,
    spec: &CardTemplateSpec,
    policy: &PolicySet,
) -> Result<DesiredCredential, String> {
    let mut certificates = BTreeMap::new();
    for c in &spec.certificates {
        let subject_text = c
            .subject
            .expand(|v| lookup(user, v), escape_value)
            .map_err(|e| format!("certificate {}: subject: {e}", c.name))?;
        let subject = DistinguishedName::parse(&subject_text)
            .map_err(|e| format!("certificate {}: subject {subject_text:?}: {e}", c.name))?;
        let mut sans = Vec::with_capacity(c.subject_alt_names.len());
        for san in &c.subject_alt_names {
            let (t, make): (_, fn(String) -> SanValue) = match san {
                SanTemplate::Upn(t) => (t, SanValue::Upn),
                SanTemplate::Email(t) => (t, SanValue::Email),
                SanTemplate::Dns(t) => (t, SanValue::Dns),
                SanTemplate::Uri(t) => (t, SanValue::Uri),
            };
            let value = t
                .expand(|v| lookup(user, v), |s| s.to_string())
                .map_err(|e| format!("certificate {}: subjectAltNames: {e}", c.name))?;
            if value.is_empty() || value.chars().any(char::is_control) {
                return Err(format!(
                    "certificate {}: subjectAltNames: {value:?} is empty or has control characters",
                    c.name
                ));
            }
            sans.push(make(value));
        }
        let revision = revision(
            c.slot,
            &c.authority,
            &c.profile,
            c.key_algorithm,
            c.key_generation,
            &subject,
            &sans,
        );
        certificates.insert(
            c.slot,
            DesiredCert {
                name: c.name.clone(),
                slot: c.slot,
                authority: c.authority.clone(),
                profile: c.profile.clone(),
                key_algorithm: c.key_algorithm,
                key_generation: c.key_generation,
                archive: c.archive,
                subject,
                sans,
                validity_secs: c.validity.as_secs(),
                renew_before_secs: c.renew_before.as_secs(),
                revision,
            },
        );
    }
    let stock = policy
        .stocks
        .iter()
        .find(|(_, s)| s.spec.card_type == spec.card_type && s.spec.auto_bind)
        .map(|(name, _)| name.clone());
    Ok(DesiredCredential {
        user: user.uid().to_string(),
        template: template.to_string(),
        card_type: spec.card_type,
        user_disabled: user.disabled(),
        on_user_disabled: spec.on_user_disabled,
        certificates,
        bound_card: None,
        stock,
        pin_length: spec.pin_policy.length,
        puk_length: spec.puk_policy.length,
        management_key: spec.management_key,
        retries: spec.settable_retries(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_set_keeps_the_first_of_a_repeat_and_updates_in_place() {
        let mut set = UserSet::from_unsorted(vec![("bob", true), ("alice", false), ("bob", false)]);
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [("alice", false), ("bob", true)]
        );
        assert!(set.contains_key("bob") && !set.contains_key("carol"));
        set.insert("carol", true);
        set.insert("alice", true);
        set.remove("bob");
        set.remove("nobody");
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [("alice", true), ("carol", true)]
        );
        assert_eq!(set.get("carol"), Some(true));
        assert_eq!(set.get("bob"), None);
        let rebuilt: UserSet = [("carol", true), ("alice", true)].into_iter().collect();
        assert_eq!(set, rebuilt);
        assert_eq!(
            serde_json::to_string(&set).unwrap(),
            r#"{"alice":true,"carol":true}"#
        );
    }

    #[test]
    fn user_set_text_stays_bounded_under_updates() {
        let uids: Vec<String> = (0..1000).map(|i| format!("user{i:05}")).collect();
        let mut set = UserSet::from_unsorted(uids.iter().map(|u| (u.as_str(), false)).collect());
        for round in 0..50 {
            for u in uids.iter().step_by(7) {
                set.remove(u);
                set.insert(u, round % 2 == 0);
            }
        }
        assert_eq!(set.len(), 1000);
        assert!(set.text.len() <= 2 * 9 * 1000 + 4096, "{}", set.text.len());
        assert_eq!(set.get("user00007"), Some(false));
    }
    use crate::observe::directory::parse_file_directory;

    const POLICY: &str = r#"
apiVersion: keyfleet.dev/v1
kind: CertificateAuthority
metadata: {name: lab}
spec: {local: {subject: "CN=Lab CA"}}
---
apiVersion: keyfleet.dev/v1
kind: Directory
metadata: {name: people}
spec: {file: {path: people.yaml}}
---
apiVersion: keyfleet.dev/v1
kind: CardTemplate
metadata: {name: employee}
spec:
  cardType: virtual
  certificates:
    - {name: auth, slot: 9A, authority: lab, profile: piv-auth, keyAlgorithm: ecc-p256, subject: "CN=${user.cn},O=Example", subjectAltNames: [{email: "${user.mail}"}]}
---
apiVersion: keyfleet.dev/v1
kind: CardTemplate
metadata: {name: other}
spec:
  cardType: virtual
  certificates:
    - {name: auth, slot: 9A, authority: lab, profile: piv-auth, keyAlgorithm: ecc-p256, subject: "CN=${user.attr.employeeNumber}"}
---
apiVersion: keyfleet.dev/v1
kind: Assignment
metadata: {name: staff}
spec: {directory: people, template: employee, groups: [{name: staff, nested: true}]}
---
apiVersion: keyfleet.dev/v1
kind: Assignment
metadata: {name: others}
spec: {directory: people, template: other, users: [carol]}
---
apiVersion: keyfleet.dev/v1
kind: CardStock
metadata: {name: virtual}
spec: {cardType: virtual, autoBind: true, virtual: {}}
"#;

    const PEOPLE: &str = r#"
users:
  - {uid: alice, cn: "Alice, \"the\" <Admin>+1", mail: alice@example.org}
  - {uid: bob, cn: Bob, mail: bob@example.org, disabled: true}
  - {uid: carol, cn: Carol, mail: carol@example.org}
  - {uid: dave, cn: Dave}
groups:
  - {name: staff, members: [alice], groups: [team]}
  - {name: team, members: [bob, carol, dave]}
"#;

    fn setup(
        people: &str,
    ) -> (
        tempfile::TempDir,
        PolicySet,
        BTreeMap<String, DirectoryObservation>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
        std::fs::write(dir.path().join("people.yaml"), people).unwrap();
        let policy = crate::policy::load_policy_set(dir.path()).unwrap();
        let snap = parse_file_directory(Path::new("people.yaml"), people).unwrap();
        (dir, policy, [("people".to_string(), Ok(snap))].into())
    }

    use std::path::Path;

    #[test]
    fn a_panicking_worker_fails_the_computation_instead_of_dropping_its_users() {
        // Users spread over several workers; one worker's expansion panics.
        let mut people = String::from("users:\n");
        let mut members = Vec::new();
        for i in 0..64 {
            let uid = if i == 40 {
                "panicky-desired-worker".to_string()
            } else {
                format!("worker-user-{i:02}")
            };
            people.push_str(&format!(
                "  - {{uid: {uid}, cn: U{i}, mail: u{i}@example.org}}\n"
            ));
            members.push(uid);
        }
        people.push_str(&format!(
            "groups:\n  - {{name: staff, members: [{}]}}\n",
            members.join(", ")
        ));
        let (_d, policy, observed) = setup(&people);
        assert_eq!(compute(&policy, &observed).credentials.len(), 64);
        let _fault = fault::PanicOn::uid("panicky-desired-worker");
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| compute(&policy, &observed)));
        // Never a desired state without that worker's users (they would look no longer
        // entitled): the panic reaches the caller, which fails the pass.
        let Err(payload) = outcome else {
            panic!("the worker's panic was swallowed: its users would look no longer entitled");
        };
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(message.contains("panicky-desired-worker"), "{message}");
    }

    #[test]
    fn entitlements_conflicts_and_expansion() {
        let (_d, policy, observed) = setup(PEOPLE);
        let d = compute(&policy, &observed);
        assert!(d.complete);
        let keys: Vec<_> = d.credentials.keys().cloned().collect();
        assert_eq!(
            keys,
            [
                ("alice".to_string(), "employee".to_string()),
                ("bob".into(), "employee".into())
            ]
        );
        // Hostile characters in an attribute stay one RDN value.
        let alice = &d.credentials[&("alice".into(), "employee".into())];
        let cert = &alice.certificates[&Slot::PivAuthentication];
        assert_eq!(cert.subject.get("CN"), Some("Alice, \"the\" <Admin>+1"));
        assert_eq!(cert.subject.0.len(), 2);
        assert!(d.credentials[&("bob".into(), "employee".into())].user_disabled);
        // carol: two virtual templates -> conflict, nothing computed for her.
        assert_eq!(d.conflicts.len(), 1);
        assert_eq!(d.conflicts[0].user, "carol");
        // dave has no mail: his SAN cannot be expanded -> an error, not a guess.
        assert_eq!(d.errors.len(), 1);
        assert_eq!(d.errors[0].user, "dave");
        assert!(
            d.errors[0].message.contains("mail"),
            "{}",
            d.errors[0].message
        );
        // A failed observation makes the state incomplete.
        let mut broken = observed;
        broken.insert("people".into(), Err("down".into()));
        assert!(!compute(&policy, &broken).complete);
    }

    #[test]
    fn updating_some_users_equals_a_full_computation() {
        let (_d, policy, observed) = setup(PEOPLE);
        let mut d = compute(&policy, &observed);
        let changed = PEOPLE
            .replace("members: [alice]", "members: [alice, dave]")
            .replace("members: [bob, carol, dave]", "members: [bob, carol]")
            .replace(
                "{uid: dave, cn: Dave}",
                "{uid: dave, cn: Dave, mail: d@example.org}",
            )
            .replace("disabled: true", "disabled: false");
        let (_d2, policy2, observed2) = setup(&changed);
        let users: BTreeSet<String> = ["dave".to_string(), "bob".to_string()].into();
        update_users(&mut d, &policy2, &observed2, &users);
        assert_eq!(d, compute(&policy2, &observed2));
        assert!(
            d.credentials
                .contains_key(&("dave".into(), "employee".into()))
        );
        // Removing a user entirely.
        let gone = changed
            .replace(
                "  - {uid: bob, cn: Bob, mail: bob@example.org, disabled: false}\n",
                "",
            )
            .replace("[bob, carol]", "[carol]");
        let (_d3, policy3, observed3) = setup(&gone);
        update_users(&mut d, &policy3, &observed3, &["bob".to_string()].into());
        assert_eq!(d, compute(&policy3, &observed3));
    }

    #[test]
    fn assignment_filters_entitle_what_the_directory_matched() {
        const F: &str = "(employeeType=contractor)";
        let (_d, mut policy, mut observed) = setup(PEOPLE);
        policy.assignments.remove("others");
        let staff = policy.assignments.get_mut("staff").expect("staff");
        staff.spec.groups.clear();
        staff.spec.filter = Some(F.into());
        // Not searched (an observation that did not know the filter): nobody is entitled
        // through it, and nothing may be revoked on that basis.
        let d = compute(&policy, &observed);
        assert!(d.credentials.is_empty());
        assert!(!d.complete);
        assert!(
            d.observation_errors[0].contains("was not searched"),
            "{:?}",
            d.observation_errors
        );
        let set = |observed: &mut BTreeMap<String, DirectoryObservation>, uids: &[&str]| {
            if let Some(Ok(s)) = observed.get_mut("people") {
                s.filtered
                    .insert(F.into(), uids.iter().map(|u| u.to_string()).collect());
            }
        };
        set(&mut observed, &["alice", "bob", "ghost"]);
        let mut d = compute(&policy, &observed);
        assert!(d.complete, "{:?}", d.observation_errors);
        let keys: Vec<_> = d.credentials.keys().map(|(u, _)| u.clone()).collect();
        assert_eq!(keys, ["alice", "bob"], "only users the snapshot has");
        // bob stops matching, carol starts: recomputing just them equals a full pass.
        set(&mut observed, &["alice", "carol"]);
        update_users(
            &mut d,
            &policy,
            &observed,
            &["bob".to_string(), "carol".to_string()].into(),
        );
        assert_eq!(d, compute(&policy, &observed));
        let keys: Vec<_> = d.credentials.keys().map(|(u, _)| u.clone()).collect();
        assert_eq!(keys, ["alice", "carol"]);
    }
}
