//! Turning a `PolicyTest`'s fixtures into what the planner takes: directory observations and
//! an inventory. The directory fixture goes through the `file` directory reader (inline users
//! and groups are written out in that format and parsed by the same code), so a fixture means
//! exactly what the data file would.
//!
//! Reads nothing but a fixture's data file; opens no store, directory, CA or card.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::desired::{Desired, DirectoryObservation};
use crate::inventory::{CardRecord, CardStatus, CertRecord, CertStatus, Inventory};
use crate::observe::directory::{parse_file_directory, read_file_directory};
use crate::policy::model::{CardTemplateSpec, KeyAlgorithm, Slot};
use crate::policy::test_model::{DirectoryFixture, HeldCredential, HeldStatus};
use crate::policy::{Object, PolicySet};

/// A fixture that cannot be turned into planner input.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// The fixture gives both a data file and inline users or groups.
    #[error("directory: give either `file` or `users`/`groups`, not both")]
    FileAndInline,
    /// The fixture names no directory and the policy set has several (or none).
    #[error(
        "directory: the policy set has {0} Directory objects; say which one the fixture stands for with `name`"
    )]
    AmbiguousDirectory(usize),
    /// The fixture names a directory the policy set does not have.
    #[error("directory: the policy set has no Directory named `{0}`")]
    UnknownDirectory(String),
    /// The directory data does not parse.
    #[error("directory: {0}")]
    Directory(#[from] crate::observe::directory::FileDirectoryError),
    /// The inline users and groups cannot be written out (should not happen).
    #[error("directory: cannot serialise the fixture: {0}")]
    Serialise(#[from] serde_yaml::Error),
    /// An inventory entry names a template the policy set does not have.
    #[error("inventory[{0}]: the policy set has no CardTemplate named `{1}`")]
    UnknownTemplate(usize, String),
    /// Two inventory entries use the same card.
    #[error("inventory[{0}]: card `{1}` is listed twice")]
    DuplicateCard(usize, String),
    /// A `notAfter` is not an RFC 3339 time.
    #[error("inventory[{0}].notAfter: {1:?} is not an RFC 3339 time")]
    BadTime(usize, String),
}

/// The directory observations of a test: the fixture stands for one `Directory` of the set;
/// the others cannot be read in a test (so the desired state is incomplete and nothing is
/// revoked, as when a directory is down).
pub fn observations(
    policy: &PolicySet,
    fixture: Option<&DirectoryFixture>,
    test_file: &Path,
) -> Result<BTreeMap<String, DirectoryObservation>, FixtureError> {
    let mut out: BTreeMap<String, DirectoryObservation> = policy
        .directories
        .keys()
        .map(|name| {
            let err = format!("directory {name} is not given by the test");
            (name.clone(), Err(err))
        })
        .collect();
    let Some(fixture) = fixture else {
        return Ok(out);
    };
    let name = match &fixture.name {
        Some(n) if policy.directories.contains_key(n) => n.clone(),
        Some(n) => return Err(FixtureError::UnknownDirectory(n.clone())),
        None if policy.directories.len() == 1 => policy
            .directories
            .keys()
            .next()
            .cloned()
            .unwrap_or_default(),
        None => return Err(FixtureError::AmbiguousDirectory(policy.directories.len())),
    };
    let inline = !fixture.users.is_empty() || !fixture.groups.is_empty();
    let snapshot = match &fixture.file {
        Some(_) if inline => return Err(FixtureError::FileAndInline),
        Some(file) => {
            let base = test_file.parent().unwrap_or(Path::new("."));
            read_file_directory(&base.join(file))?
        }
        None => {
            let text = serde_yaml::to_string(&serde_json::json!({
                "users": fixture.users,
                "groups": fixture.groups,
            }))?;
            parse_file_directory(test_file, &text)?
        }
    };
    out.insert(name, Ok(snapshot));
    Ok(out)
}

/// A stable serial for a fixture certificate (upper-case hex, as the inventory keeps them).
fn serial(card: &str, slot: Slot) -> String {
    let mut h = Sha256::new();
    h.update(card.as_bytes());
    h.update([0]);
    h.update(slot.hex().as_bytes());
    hex::encode_upper(&h.finalize()[..16])
}

fn parse_time(i: usize, s: &str) -> Result<OffsetDateTime, FixtureError> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| FixtureError::BadTime(i, s.to_string()))
}

/// The certificate a fixture says is in `slot`: what `issued` (the policy set as checked in)
/// asks of the user, else what `current` asks, else the template's settings for the slot.
struct Issued {
    name: String,
    ca: String,
    profile: String,
    key_algorithm: KeyAlgorithm,
    subject: String,
    sans: Vec<crate::names::SanValue>,
    revision: String,
    validity_secs: u64,
}

fn issued_cert(
    desired: &[&Desired],
    template: &Object<CardTemplateSpec>,
    user: &str,
    slot: Slot,
) -> Issued {
    let key = (user.to_string(), template.name.clone());
    for d in desired {
        if let Some(c) = d
            .credentials
            .get(&key)
            .and_then(|cred| cred.certificates.get(&slot))
        {
            return Issued {
                name: c.name.clone(),
                ca: c.authority.clone(),
                profile: c.profile.clone(),
                key_algorithm: c.key_algorithm,
                subject: c.subject.to_string(),
                sans: c.sans.clone(),
                revision: c.revision.clone(),
                validity_secs: c.validity_secs,
            };
        }
    }
    let spec = template.spec.certificates.iter().find(|c| c.slot == slot);
    Issued {
        name: spec.map_or_else(|| format!("slot-{}", slot.hex()), |c| c.name.clone()),
        ca: spec.map(|c| c.authority.clone()).unwrap_or_default(),
        profile: spec.map(|c| c.profile.clone()).unwrap_or_default(),
        key_algorithm: spec.map_or(KeyAlgorithm::EccP256, |c| c.key_algorithm),
        subject: format!("CN={user}"),
        sans: Vec::new(),
        revision: "policy-test-fixture".to_string(),
        validity_secs: spec.map_or(365 * 86_400, |c| c.validity.as_secs()),
    }
}

/// The inventory a test's fixture describes. `desired` lists the desired states whose
/// certificates the fixture's certificates copy, in order of preference.
pub fn inventory(
    policy: &PolicySet,
    desired: &[&Desired],
    held: &[HeldCredential],
    now: OffsetDateTime,
) -> Result<Inventory, FixtureError> {
    let mut inv = Inventory::default();
    for (i, h) in held.iter().enumerate() {
        let template = policy
            .templates
            .get(&h.template)
            .ok_or_else(|| FixtureError::UnknownTemplate(i, h.template.clone()))?;
        if inv.cards.contains_key(&h.card) {
            return Err(FixtureError::DuplicateCard(i, h.card.clone()));
        }
        let (card_status, cert_status) = match h.status {
            HeldStatus::Active => (CardStatus::Active, CertStatus::Active),
            HeldStatus::Suspended => (CardStatus::Suspended, CertStatus::Suspended),
            HeldStatus::Revoked => (CardStatus::Revoked, CertStatus::Revoked),
            HeldStatus::Lost => (CardStatus::Lost, CertStatus::Revoked),
        };
        inv.cards.insert(
            h.card.clone(),
            CardRecord {
                id: h.card.clone(),
                card_type: template.spec.card_type,
                stock: None,
                user: Some(h.user.clone()),
                template: Some(h.template.clone()),
                status: card_status,
                created_at: now,
                updated_at: now,
                temporary: false,
            },
        );
        let slots: Vec<Slot> = if h.slots.is_empty() {
            template.spec.certificates.iter().map(|c| c.slot).collect()
        } else {
            h.slots.clone()
        };
        let not_after = h
            .not_after
            .as_deref()
            .map(|s| parse_time(i, s))
            .transpose()?;
        for slot in slots {
            let c = issued_cert(desired, template, &h.user, slot);
            let validity = time::Duration::seconds(i64::try_from(c.validity_secs).unwrap_or(0));
            let not_after = not_after.unwrap_or(now + validity);
            let serial = serial(&h.card, slot);
            inv.certs.insert(
                serial.clone(),
                CertRecord {
                    serial: serial.clone(),
                    user: h.user.clone(),
                    card: h.card.clone(),
                    template: h.template.clone(),
                    name: c.name,
                    slot,
                    ca: c.ca,
                    profile: c.profile,
                    key_algorithm: c.key_algorithm,
                    subject: c.subject,
                    sans: c.sans,
                    not_before: not_after - validity,
                    not_after,
                    revision: c.revision,
                    status: cert_status,
                    installed: true,
                    request_id: format!("policy-test-{serial}"),
                    enrolment: u64::try_from(i).unwrap_or(0) + 1,
                    updated_at: now,
                    pem: String::new(),
                    key_id: None,
                },
            );
        }
    }
    Ok(inv)
}
