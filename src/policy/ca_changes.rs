//! A local CA's `subject`, `keyAlgorithm` and `validity` only shape the CA when it is created;
//! once it exists (its certificate in the state directory), a change to them in policy does
//! nothing. [`creation_only_changes`] compares the existing CA's certificate facts with the
//! policy and names each field that differs, so `validate` and `plan` can warn (not fail).
//!
//! Pure: the facts are read from the state directory by the caller
//! (`crate::ca::local::existing_ca_facts`).

use std::collections::BTreeMap;

use super::diag::{Diagnostic, codes};
use super::load::Locations;
use super::model::{CertificateAuthoritySpec, KeyAlgorithm, Kind, LocalCaSpec};
use super::{Object, PolicySet};
use crate::names::DistinguishedName;

/// What an existing local CA's certificate says of the creation-only settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingCaFacts {
    /// The certificate's subject, as an RFC 4514 string.
    pub subject: String,
    /// The CA key's algorithm (`ecc-p256` or `ecc-p384`).
    pub key_algorithm: KeyAlgorithm,
    /// notAfter − notBefore of the CA certificate, in seconds.
    pub validity_secs: u64,
}

/// One creation-only field of a local CA whose policy value differs from the existing CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreationOnlyChange {
    /// The field under `spec.local` (`subject`, `keyAlgorithm`, `validity`).
    pub field: &'static str,
    /// What the existing CA has.
    pub existing: String,
    /// What the policy says.
    pub policy: String,
}

/// The key algorithm a local CA is created with for `alg` (the local CA keys are ECDSA:
/// anything but P-384 is P-256, as the CA is opened).
fn ca_key(alg: KeyAlgorithm) -> KeyAlgorithm {
    match alg {
        KeyAlgorithm::EccP384 => KeyAlgorithm::EccP384,
        _ => KeyAlgorithm::EccP256,
    }
}

/// The fields of `spec` that differ from the existing CA (empty when nothing would change).
/// Subjects compare as parsed DNs (spacing and attribute spelling aside), else as text.
pub fn creation_only_changes(
    existing: &ExistingCaFacts,
    spec: &LocalCaSpec,
) -> Vec<CreationOnlyChange> {
    let mut out = Vec::new();
    let same_subject = match (
        DistinguishedName::parse(&existing.subject),
        DistinguishedName::parse(&spec.subject),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => existing.subject == spec.subject,
    };
    if !same_subject {
        out.push(CreationOnlyChange {
            field: "subject",
            existing: existing.subject.clone(),
            policy: spec.subject.clone(),
        });
    }
    if ca_key(spec.key_algorithm) != existing.key_algorithm {
        out.push(CreationOnlyChange {
            field: "keyAlgorithm",
            existing: existing.key_algorithm.to_string(),
            policy: spec.key_algorithm.to_string(),
        });
    }
    if spec.validity.as_secs() != existing.validity_secs {
        out.push(CreationOnlyChange {
            field: "validity",
            existing: super::Duration::from_secs(existing.validity_secs).to_string(),
            policy: spec.validity.to_string(),
        });
    }
    out
}

/// A warning per creation-only field that differs, for every local CA of `set` that exists
/// (`existing`, by CA name), at the field's line when `locations` has it.
pub fn creation_only_warnings(
    set: &PolicySet,
    locations: Option<&Locations>,
    existing: &BTreeMap<String, ExistingCaFacts>,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (name, ca) in &set.authorities {
        let (CertificateAuthoritySpec::Local(spec), Some(facts)) = (&ca.spec, existing.get(name))
        else {
            continue;
        };
        for change in creation_only_changes(facts, spec) {
            out.push(warning(ca, locations, &change));
        }
    }
    out
}

fn warning(
    ca: &Object<CertificateAuthoritySpec>,
    locations: Option<&Locations>,
    change: &CreationOnlyChange,
) -> Diagnostic {
    let pointer = format!("/spec/local/{}", change.field);
    let pos = locations
        .and_then(|l| l.get(&(Kind::CertificateAuthority, ca.name.clone())))
        .map(|m| m.locate(&pointer));
    let mut d = Diagnostic::error(
        codes::APPLIES_TO_NEW_CA,
        &ca.file,
        pos.map_or(ca.line, |p| p.line),
        format!(
            "the local CA `{}` exists with {} {}; the {} {} only applies to a new CA \
             (this one keeps its certificate)",
            ca.name, change.field, change.existing, change.field, change.policy
        ),
    )
    .for_object(Some(Kind::CertificateAuthority.as_str()), Some(&ca.name))
    .at_path(super::diag::pointer_to_path(&pointer))
    .warning();
    d.column = pos.map(|p| p.column);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(subject: &str, alg: KeyAlgorithm, validity: &str) -> LocalCaSpec {
        serde_yaml::from_str(&format!(
            "subject: \"{subject}\"\nkeyAlgorithm: {alg}\nvalidity: {validity}\n"
        ))
        .unwrap()
    }

    fn facts() -> ExistingCaFacts {
        ExistingCaFacts {
            subject: "CN=Lab CA,O=Example".into(),
            key_algorithm: KeyAlgorithm::EccP256,
            validity_secs: 10 * 365 * 86400,
        }
    }

    #[test]
    fn nothing_changed_gives_no_change() {
        let s = spec("CN=Lab CA, O=Example", KeyAlgorithm::EccP256, "3650d");
        assert_eq!(creation_only_changes(&facts(), &s), vec![]);
    }

    #[test]
    fn each_changed_field_is_named_with_both_values() {
        let s = spec("CN=New CA,O=Example", KeyAlgorithm::EccP384, "5y");
        let changes = creation_only_changes(&facts(), &s);
        let fields: Vec<&str> = changes.iter().map(|c| c.field).collect();
        assert_eq!(fields, ["subject", "keyAlgorithm", "validity"]);
        assert_eq!(changes[0].existing, "CN=Lab CA,O=Example");
        assert_eq!(changes[0].policy, "CN=New CA,O=Example");
        assert_eq!(changes[1].existing, "ecc-p256");
        assert_eq!(changes[1].policy, "ecc-p384");
        assert_eq!(changes[2].policy, "5y");
    }

    #[test]
    fn only_the_validity_changed() {
        let s = spec("CN=Lab CA,O=Example", KeyAlgorithm::EccP256, "1y");
        let changes = creation_only_changes(&facts(), &s);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].field, "validity");
    }
}
