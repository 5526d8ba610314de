//! Desired state: which credential every entitled user should hold, with subjects and SANs
//! expanded from their directory attributes.
//!
//! [`compute`] is pure: policy and directory snapshots in, [`Desired`] out. It does not look at
//! the inventory (that is the planner's job) and does no I/O.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::names::{DistinguishedName, SanValue, escape_value};
use crate::observe::directory::{DirectorySnapshot, DirectoryUser};
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
}

/// What the policy says about a template, kept for credentials that are no longer desired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateRules {
    /// Behaviour when entitlement is lost.
    pub on_entitlement_loss: OnEntitlementLoss,
    /// Behaviour when the account is disabled.
    pub on_user_disabled: OnUserDisabled,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpansionError {
    /// The uid.
    pub user: String,
    /// The template.
    pub template: String,
    /// What went wrong.
    pub message: String,
}

/// The whole desired state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Desired {
    /// Credentials by (uid, template).
    pub credentials: BTreeMap<(String, String), DesiredCredential>,
    /// Every user any directory reported, with their disabled flag.
    pub users: BTreeMap<String, bool>,
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
}

impl Desired {
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
/// A directory missing from `observed` counts as failed.
pub fn compute(policy: &PolicySet, observed: &BTreeMap<String, DirectoryObservation>) -> Desired {
    let mut desired = Desired {
        complete: true,
        ..Desired::default()
    };
    for (name, t) in &policy.templates {
        desired.templates.insert(
            name.clone(),
            TemplateRules {
                on_entitlement_loss: t.spec.on_entitlement_loss,
                on_user_disabled: t.spec.on_user_disabled,
            },
        );
    }
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
                for (uid, user) in &snapshot.users {
                    desired.users.entry(uid.clone()).or_insert(user.disabled);
                }
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

    // Who is entitled to which template, through which directory.
    let mut entitled: BTreeMap<String, BTreeMap<String, &str>> = BTreeMap::new();
    for a in policy.assignments.values() {
        let Some(Ok(snapshot)) = observed.get(&a.spec.directory) else {
            continue;
        };
        let mut uids: BTreeSet<String> = BTreeSet::new();
        for g in &a.spec.groups {
            uids.extend(snapshot.members(&g.name, g.nested));
        }
        uids.extend(
            a.spec
                .users
                .iter()
                .filter(|u| snapshot.users.contains_key(*u))
                .cloned(),
        );
        for uid in uids {
            entitled
                .entry(uid)
                .or_default()
                .insert(a.spec.template.clone(), a.spec.directory.as_str());
        }
    }

    let mut bindings: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for b in policy.bindings.values() {
        bindings
            .entry(b.spec.user.as_str())
            .or_default()
            .push(b.spec.card.as_str());
    }

    for (uid, templates) in &entitled {
        // Two templates of one card type for one user: which card gets which is a guess.
        let mut by_type: BTreeMap<CardType, Vec<&str>> = BTreeMap::new();
        for t in templates.keys() {
            if let Some(tpl) = policy.templates.get(t) {
                by_type.entry(tpl.spec.card_type).or_default().push(t);
            }
        }
        if let Some((card_type, names)) = by_type.iter().find(|(_, v)| v.len() > 1) {
            desired.conflicts.push(Conflict {
                user: uid.clone(),
                templates: names.iter().map(|s| s.to_string()).collect(),
                message: format!(
                    "{uid} is entitled to {} templates of card type {}: {}; fix the assignments",
                    names.len(),
                    card_type.as_str(),
                    names.join(", ")
                ),
            });
            continue;
        }
        let mut user_bindings = bindings.get(uid.as_str()).cloned().unwrap_or_default();
        for (template, directory) in templates {
            let Some(tpl) = policy.templates.get(template) else {
                continue;
            };
            let Some(Ok(snapshot)) = observed.get(*directory) else {
                continue;
            };
            let Some(user) = snapshot.users.get(uid) else {
                continue;
            };
            let bound_card = if tpl.spec.card_type == CardType::Virtual || user_bindings.is_empty()
            {
                None
            } else {
                Some(user_bindings.remove(0).to_string())
            };
            match credential_for(user, template, &tpl.spec, policy) {
                Ok(mut cred) => {
                    cred.bound_card = bound_card;
                    desired
                        .credentials
                        .insert((uid.clone(), template.clone()), cred);
                }
                Err(message) => desired.errors.push(ExpansionError {
                    user: uid.clone(),
                    template: template.clone(),
                    message,
                }),
            }
        }
    }
    desired
}

/// The value of a template variable for a user.
pub fn lookup(user: &DirectoryUser, var: &Var) -> Option<String> {
    match var {
        Var::Uid => Some(user.uid.clone()),
        Var::Cn => Some(user.cn.clone()),
        Var::Mail => user.mail.clone(),
        Var::Upn => user.upn.clone(),
        Var::Dn => user.dn.clone(),
        Var::Attr(name) => user.attributes.get(name).cloned(),
    }
}

fn credential_for(
    user: &DirectoryUser,
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
        user: user.uid.clone(),
        template: template.to_string(),
        card_type: spec.card_type,
        user_disabled: user.disabled,
        on_user_disabled: spec.on_user_disabled,
        certificates,
        bound_card: None,
        stock,
        pin_length: spec.pin_policy.length,
        puk_length: spec.puk_policy.length,
        management_key: spec.management_key,
    })
}
