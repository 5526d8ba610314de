//! Reading a CRL back: decode it (DER or PEM), check that this CA signed it (issuer name and
//! ECDSA signature against the CA certificate), and return what a publisher needs to decide
//! whether it is still good: CRL number, thisUpdate, nextUpdate and the listed entries.
//!
//! This module does NOT sign CRLs ([`super::crl`] does), choose what a CRL should list
//! ([`super::local::LocalCa`] does) or decide when to publish (`crate::apply::crl` does). It
//! reads no files: callers pass the bytes.

use der::oid::ObjectIdentifier;
use der::{Decode, DecodePem, Encode};
use ecdsa::signature::hazmat::PrehashVerifier;
use sha2::{Digest, Sha256, Sha384};
use time::OffsetDateTime;
use x509_cert::crl::CertificateList;

use super::crl::RevokedEntry;

const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const CRL_NUMBER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.20");
const CRL_REASON: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.21");

/// Why a CRL cannot be taken as this CA's current CRL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrlReadError {
    /// The bytes are neither a DER nor a PEM `X509 CRL`.
    #[error("not a CRL: {0}")]
    Decode(String),
    /// The CA certificate given to check against does not decode.
    #[error("the CA certificate does not decode: {0}")]
    CaCertificate(String),
    /// The CRL names another issuer.
    #[error("issued by another CA")]
    OtherIssuer,
    /// The CRL's signature algorithm or the CA key type is not one the local CA uses.
    #[error("unsupported signature algorithm {0}")]
    Algorithm(String),
    /// The signature does not verify with the CA certificate's key.
    #[error("its signature does not verify with the CA certificate")]
    Signature,
}

/// One entry as listed in a CRL, in a form that compares equal to the entry the CA would list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListedEntry {
    /// Serial bytes, big-endian, leading zero bytes removed.
    pub serial: Vec<u8>,
    /// Revocation date, Unix seconds.
    pub at: i64,
    /// The CRLReason code, when the entry has one.
    pub reason: Option<u8>,
}

impl From<&RevokedEntry> for ListedEntry {
    fn from(e: &RevokedEntry) -> Self {
        ListedEntry {
            serial: strip_zeros(&e.serial),
            at: e.at.unix_timestamp(),
            reason: Some(e.reason.code()),
        }
    }
}

/// What a verified CRL says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlInfo {
    /// True when the bytes were PEM.
    pub pem: bool,
    /// The CRL number extension, if present and at most 64 bits.
    pub number: Option<u64>,
    /// thisUpdate.
    pub this_update: OffsetDateTime,
    /// nextUpdate, if present.
    pub next_update: Option<OffsetDateTime>,
    /// The entries, sorted.
    pub entries: Vec<ListedEntry>,
}

fn strip_zeros(b: &[u8]) -> Vec<u8> {
    let skip = b.iter().take_while(|x| **x == 0).count();
    b.get(skip..).map(<[u8]>::to_vec).unwrap_or_default()
}

fn to_time(t: x509_cert::time::Time) -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH + t.to_unix_duration()
}

/// Decodes `bytes` (DER, or PEM when they start with `-----BEGIN`), checks that the CA whose
/// certificate is `ca_cert_pem` issued and signed it, and returns its contents.
pub fn read_crl(bytes: &[u8], ca_cert_pem: &str) -> Result<CrlInfo, CrlReadError> {
    let pem = bytes.trim_ascii_start().starts_with(b"-----BEGIN");
    let crl: CertificateList = if pem {
        CertificateList::from_pem(bytes)
    } else {
        CertificateList::from_der(bytes)
    }
    .map_err(|e| CrlReadError::Decode(e.to_string()))?;
    let ca = x509_cert::Certificate::from_pem(ca_cert_pem.as_bytes())
        .map_err(|e| CrlReadError::CaCertificate(e.to_string()))?;
    let tbs = &crl.tbs_cert_list;
    if &tbs.issuer != ca.tbs_certificate().subject() {
        return Err(CrlReadError::OtherIssuer);
    }
    let tbs_der = tbs
        .to_der()
        .map_err(|e| CrlReadError::Decode(e.to_string()))?;
    let signature = crl
        .signature
        .as_bytes()
        .ok_or_else(|| CrlReadError::Decode("signature BIT STRING has unused bits".into()))?;
    verify(
        ca.tbs_certificate().subject_public_key_info(),
        crl.signature_algorithm.oid,
        &tbs_der,
        signature,
    )?;

    let number = tbs
        .crl_extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == CRL_NUMBER)
        .and_then(|e| der::asn1::Uint::from_der(e.extn_value.as_bytes()).ok())
        .and_then(|n| {
            let b = strip_zeros(n.as_bytes());
            (b.len() <= 8).then(|| b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
        });
    let mut entries: Vec<ListedEntry> = tbs
        .revoked_certificates
        .iter()
        .flatten()
        .map(|r| ListedEntry {
            serial: strip_zeros(r.serial_number.as_bytes()),
            at: to_time(r.revocation_date).unix_timestamp(),
            reason: r
                .crl_entry_extensions
                .iter()
                .flatten()
                .find(|e| e.extn_id == CRL_REASON)
                .and_then(|e| {
                    x509_cert::ext::pkix::crl::CrlReason::from_der(e.extn_value.as_bytes()).ok()
                })
                .and_then(|r| u8::try_from(r as u32).ok()),
        })
        .collect();
    entries.sort();
    Ok(CrlInfo {
        pem,
        number,
        this_update: to_time(tbs.this_update),
        next_update: tbs.next_update.map(to_time),
        entries,
    })
}

/// Verifies an ECDSA (P-256 / P-384) signature over `tbs` with the key of `spki`.
fn verify(
    spki: &spki::SubjectPublicKeyInfoOwned,
    sig_alg: ObjectIdentifier,
    tbs: &[u8],
    signature: &[u8],
) -> Result<(), CrlReadError> {
    if spki.algorithm.oid != EC_PUBLIC_KEY {
        return Err(CrlReadError::Algorithm(format!(
            "CA key type {}",
            spki.algorithm.oid
        )));
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    let hash: Vec<u8> = if sig_alg == ECDSA_SHA256 {
        Sha256::digest(tbs).to_vec()
    } else if sig_alg == ECDSA_SHA384 {
        Sha384::digest(tbs).to_vec()
    } else {
        return Err(CrlReadError::Algorithm(sig_alg.to_string()));
    };
    let point = spki
        .subject_public_key
        .as_bytes()
        .ok_or(CrlReadError::Signature)?;
    match curve {
        Some(c) if c == SECP256R1 => {
            let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map_err(|_| CrlReadError::CaCertificate("invalid P-256 key".into()))?;
            let sig =
                p256::ecdsa::Signature::from_der(signature).map_err(|_| CrlReadError::Signature)?;
            vk.verify_prehash(&hash, &sig)
                .map_err(|_| CrlReadError::Signature)
        }
        Some(c) if c == SECP384R1 => {
            let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map_err(|_| CrlReadError::CaCertificate("invalid P-384 key".into()))?;
            let sig =
                p384::ecdsa::Signature::from_der(signature).map_err(|_| CrlReadError::Signature)?;
            vk.verify_prehash(&hash, &sig)
                .map_err(|_| CrlReadError::Signature)
        }
        other => Err(CrlReadError::Algorithm(format!(
            "EC curve {}",
            other.map_or_else(|| "(none)".to_string(), |o| o.to_string())
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::RevocationReason;
    use crate::ca::crl::sign_crl;

    fn ca(alg: &'static rcgen::SignatureAlgorithm, cn: &str) -> (rcgen::KeyPair, String) {
        let key = rcgen::KeyPair::generate_for(alg).expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("self-signed");
        (key, cert.pem())
    }

    fn crl(key: &rcgen::KeyPair, cn: &str, entries: &[RevokedEntry]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let issuer = rcgen::Issuer::new(params, key);
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time");
        sign_crl(&issuer, entries, 258, t, t + time::Duration::hours(6)).expect("crl")
    }

    #[test]
    fn reads_back_what_was_signed_in_der_and_pem() {
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
        ] {
            let (key, pem) = ca(alg, "Read CA");
            let entry = RevokedEntry {
                serial: vec![0x01, 0x02],
                at: OffsetDateTime::from_unix_timestamp(1_699_999_000).expect("time"),
                reason: RevocationReason::KeyCompromise,
            };
            let der = crl(&key, "Read CA", std::slice::from_ref(&entry));
            let info = read_crl(&der, &pem).expect("valid CRL");
            assert!(!info.pem);
            assert_eq!(info.number, Some(258));
            assert_eq!(info.this_update.unix_timestamp(), 1_700_000_000);
            assert_eq!(
                info.next_update.map(|t| t.unix_timestamp()),
                Some(1_700_000_000 + 6 * 3600)
            );
            assert_eq!(info.entries, vec![ListedEntry::from(&entry)]);
            assert_eq!(info.entries[0].reason, Some(1));
            let text =
                der::pem::encode_string("X509 CRL", der::pem::LineEnding::LF, &der).expect("pem");
            let info = read_crl(text.as_bytes(), &pem).expect("valid PEM CRL");
            assert!(info.pem);
        }
    }

    #[test]
    fn refuses_other_issuers_forged_signatures_and_garbage() {
        let (key, pem) = ca(&rcgen::PKCS_ECDSA_P256_SHA256, "Read CA");
        let (other_key, other_pem) = ca(&rcgen::PKCS_ECDSA_P256_SHA256, "Other CA");
        assert_eq!(
            read_crl(&crl(&other_key, "Other CA", &[]), &pem),
            Err(CrlReadError::OtherIssuer)
        );
        // Same name, another key (a CA re-created after its state was lost).
        let (_, same_name_pem) = ca(&rcgen::PKCS_ECDSA_P256_SHA256, "Other CA");
        assert_eq!(
            read_crl(&crl(&other_key, "Other CA", &[]), &same_name_pem),
            Err(CrlReadError::Signature)
        );
        assert!(read_crl(&crl(&other_key, "Other CA", &[]), &other_pem).is_ok());
        assert!(matches!(read_crl(b"", &pem), Err(CrlReadError::Decode(_))));
        let der = crl(&key, "Read CA", &[]);
        for n in 0..der.len() {
            assert!(read_crl(&der[..n], &pem).is_err(), "truncated at {n}");
        }
        for i in 0..der.len() {
            let mut m = der.clone();
            m[i] ^= 0x01;
            // Any flipped bit breaks the decoding, the issuer match or the signature.
            assert!(read_crl(&m, &pem).is_err(), "bit flipped in byte {i}");
        }
    }
}
