//! What the certificate of a local CA that exists already says of the settings that only
//! apply when the CA is created (subject, key algorithm, validity): read from
//! `<state dir>/ca/<name>/ca.pem` for the warnings of `validate` and `plan`
//! ([`crate::policy::ca_changes`] compares them with the policy).

use std::path::Path;

use der::DecodePem;
use der::asn1::ObjectIdentifier;

use super::CaError;
use super::local::CA_CERT_FILE;
use crate::policy::ca_changes::ExistingCaFacts;
use crate::policy::model::KeyAlgorithm;

const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// The facts of the local CA in `dir`, or `None` when it does not exist yet (no `ca.pem`:
/// written last, its presence marks a complete CA).
pub fn existing_ca_facts(dir: &Path) -> Result<Option<ExistingCaFacts>, CaError> {
    let path = dir.join(CA_CERT_FILE);
    let pem = match std::fs::read_to_string(&path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CaError::Io { path, source }),
    };
    facts_of_pem(&pem)
        .map(Some)
        .map_err(|reason| CaError::Corrupt { path, reason })
}

/// The facts of a CA certificate in PEM.
fn facts_of_pem(pem: &str) -> Result<ExistingCaFacts, String> {
    let cert = x509_cert::Certificate::from_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
    let tbs = cert.tbs_certificate();
    let curve: ObjectIdentifier = tbs
        .subject_public_key_info()
        .algorithm
        .parameters
        .as_ref()
        .ok_or("CA key without curve parameters")?
        .decode_as()
        .map_err(|e| format!("CA key: {e}"))?;
    let key_algorithm = match curve {
        P256 => KeyAlgorithm::EccP256,
        P384 => KeyAlgorithm::EccP384,
        other => return Err(format!("CA key on an unknown curve {other}")),
    };
    let validity = tbs.validity();
    let validity_secs = validity
        .not_after
        .to_unix_duration()
        .checked_sub(validity.not_before.to_unix_duration())
        .ok_or("the CA certificate ends before it starts")?
        .as_secs();
    Ok(ExistingCaFacts {
        subject: tbs.subject().to_string(),
        key_algorithm,
        validity_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::local::{CaKeyAlgorithm, LocalCa, LocalCaConfig};
    use crate::names::DistinguishedName;
    use crate::secrets::MasterKey;

    #[test]
    fn the_facts_are_those_the_ca_was_created_with() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(existing_ca_facts(&dir.path().join("ca")).unwrap(), None);
        let cfg = LocalCaConfig {
            subject: DistinguishedName::parse("CN=Lab CA,OU=PKI,O=Example").unwrap(),
            key_algorithm: CaKeyAlgorithm::EccP384,
            validity_secs: 5 * 365 * 86400,
            crl_distribution_point: None,
            crl_validity_secs: 86400,
        };
        let master = MasterKey::load_or_create(dir.path()).unwrap();
        LocalCa::open_or_create(
            &dir.path().join("ca"),
            "lab",
            &cfg,
            &master,
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
        let facts = existing_ca_facts(&dir.path().join("ca")).unwrap().unwrap();
        assert_eq!(
            DistinguishedName::parse(&facts.subject).unwrap(),
            cfg.subject,
            "{}",
            facts.subject
        );
        assert_eq!(facts.key_algorithm, KeyAlgorithm::EccP384);
        assert_eq!(facts.validity_secs, cfg.validity_secs);
    }

    #[test]
    fn a_damaged_certificate_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CA_CERT_FILE), "not a certificate").unwrap();
        assert!(matches!(
            existing_ca_facts(dir.path()),
            Err(CaError::Corrupt { .. })
        ));
    }
}
