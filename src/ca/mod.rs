//! Certificate authorities as Keyfleet's executors see them: enrol a CSR, find what a request
//! produced, revoke, hold and release, ask for a certificate's status.
//!
//! [`CertificateAuthority`] is the one trait every CA connector implements (the embedded
//! [`local::LocalCa`], [`entrust::EntrustGateway`], [`cfssl::Cfssl`]). It speaks only of
//! CA operations: it knows nothing of users, cards, templates, plans or the journal, and it never
//! decides *whether* to issue or revoke — the planner does.
//!
//! Submodules: [`csr`] (PKCS#10 parsing and proof-of-possession check), [`local`] (the embedded
//! CA and its files), [`crl`] (CRL signing for the local CA), [`crl_read`] (reading one back),
//! [`entrust`] and [`cfssl`] (remote CAs),
//! [`remote`] (what the remote connectors share), [`connect`] (connectors from policy objects).

use time::OffsetDateTime;

use crate::names::{DistinguishedName, SanValue};

pub mod cfssl;
pub mod connect;
pub mod crl;
pub mod crl_read;
pub mod csr;
pub mod entrust;
pub mod local;
pub mod local_facts;
pub mod remote;

pub use local::{CaKeyAlgorithm, LocalCa, LocalCaConfig};

/// A request to sign one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollRequest {
    /// Idempotency key: enrolling the same id twice yields the same certificate.
    pub request_id: String,
    /// The PKCS#10 request, DER. Its signature is the proof of possession of the key; its
    /// subject and extensions are ignored.
    pub csr_der: Vec<u8>,
    /// The CA profile (for the local CA: `piv-auth`, `piv-signature`, `piv-key-management`,
    /// `piv-card-auth`).
    pub profile: String,
    /// The subject to certify (taken from policy, not from the CSR).
    pub subject: DistinguishedName,
    /// The subject alternative names to certify.
    pub sans: Vec<SanValue>,
    /// Requested lifetime in seconds (capped by the CA's own expiry).
    pub validity_secs: u64,
}

/// A certificate the CA signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// Serial number in upper-case hex without separators, as `openssl x509 -serial` prints it.
    pub serial: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// The certificate, PEM.
    pub pem: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// The request id that produced it.
    pub request_id: String,
}

/// Why a certificate was revoked (RFC 5280 CRLReason, the subset Keyfleet uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RevocationReason {
    /// unspecified (0).
    Unspecified,
    /// keyCompromise (1): the card was lost or the key exposed.
    KeyCompromise,
    /// affiliationChanged (3): the holder left or lost the entitlement.
    AffiliationChanged,
    /// superseded (4): replaced by a newer certificate.
    Superseded,
    /// cessationOfOperation (5): no longer needed (card retired).
    CessationOfOperation,
    /// certificateHold (6): temporarily suspended.
    CertificateHold,
}

impl RevocationReason {
    /// The RFC 5280 CRLReason code.
    pub fn code(self) -> u8 {
        match self {
            RevocationReason::Unspecified => 0,
            RevocationReason::KeyCompromise => 1,
            RevocationReason::AffiliationChanged => 3,
            RevocationReason::Superseded => 4,
            RevocationReason::CessationOfOperation => 5,
            RevocationReason::CertificateHold => 6,
        }
    }
}

/// What the CA says about one serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaCertStatus {
    /// Valid as far as the CA is concerned (expiry is not considered).
    Active,
    /// On hold (suspended); can be released.
    Held,
    /// Permanently revoked.
    Revoked {
        /// The reason given.
        reason: RevocationReason,
        /// When the CA revoked it.
        at: OffsetDateTime,
    },
    /// The CA has no certificate with this serial.
    Unknown,
}

/// Optional operations a CA supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaCapabilities {
    /// Whether [`CertificateAuthority::hold`] / [`CertificateAuthority::unhold`] work.
    pub hold: bool,
}

/// Failures of CA operations.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The CSR is not valid DER PKCS#10.
    #[error("CSR is not a valid PKCS#10 request: {0}")]
    CsrDecode(String),
    /// The CSR's key type or signature algorithm is not one the CA accepts.
    #[error("unsupported CSR algorithm: {0}")]
    CsrAlgorithm(String),
    /// The CSR's signature does not verify with its own public key (no proof of possession).
    #[error("CSR signature does not verify: the requester did not prove possession of the key")]
    CsrSignature,
    /// The requested profile is not one this CA knows.
    #[error("unknown certificate profile {0:?}")]
    UnknownProfile(String),
    /// The subject or a SAN cannot be encoded in a certificate.
    #[error("invalid subject or SAN: {0}")]
    InvalidName(String),
    /// The request asks for a validity of zero seconds, or the CA itself has expired.
    #[error("no validity left: requested {requested_secs}s, CA valid until {ca_not_after}")]
    NoValidity {
        /// The requested lifetime.
        requested_secs: u64,
        /// The CA certificate's notAfter.
        ca_not_after: OffsetDateTime,
    },
    /// The request id was used before with a different public key.
    #[error("request id {0:?} was already enrolled with a different public key")]
    RequestIdReused(String),
    /// The serial is not one this CA issued.
    #[error("unknown serial {0}")]
    UnknownSerial(String),
    /// The operation is not allowed in the certificate's current state.
    #[error("certificate {serial}: cannot {operation}: it is {state}")]
    InvalidTransition {
        /// The serial.
        serial: String,
        /// The operation attempted (`hold`, `unhold`).
        operation: &'static str,
        /// The current state.
        state: String,
    },
    /// The CA does not support this operation.
    #[error("this CA does not support {0}")]
    Unsupported(&'static str),
    /// Signing a certificate or CRL failed inside the X.509 library.
    #[error("signing failed: {0}")]
    Signing(String),
    /// The CA's files could not be read or written.
    #[error("CA storage {path}: {source}")]
    Io {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A CA file is corrupt or inconsistent with the others.
    #[error("CA storage {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The CA key could not be decrypted (wrong master key, or the file was altered).
    #[error(
        "cannot decrypt the CA key {path}: {source} (is this the master key the CA was created with?)"
    )]
    KeyDecrypt {
        /// The sealed key file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: crate::secrets::SecretError,
    },
    /// A remote CA could not be reached or answered with an error.
    #[error("CA unavailable: {0}")]
    Unavailable(String),
    /// A remote CA refused the request (a 4xx answer, kept with the CA's own message).
    #[error("the CA refused the request: {0}")]
    Rejected(String),
}

/// The operations Keyfleet's executors need from a CA.
///
/// Every mutating operation is idempotent: repeating it after a crash or timeout is safe.
pub trait CertificateAuthority: Send + Sync {
    /// What optional operations this CA supports.
    fn capabilities(&self) -> CaCapabilities;
    /// Signs the CSR with the profile, subject and SANs of `req`. If `req.request_id` was
    /// enrolled before, returns that certificate instead of signing again.
    fn enroll(&self, req: &EnrollRequest) -> Result<IssuedCertificate, CaError>;
    /// Recovery after a crash: what, if anything, did this request id produce?
    fn find_by_request_id(&self, request_id: &str) -> Result<Option<IssuedCertificate>, CaError>;
    /// Revokes permanently. Revoking a revoked certificate succeeds and keeps the first reason;
    /// revoking a held certificate makes the revocation permanent with `reason`.
    fn revoke(&self, serial: &str, reason: RevocationReason) -> Result<(), CaError>;
    /// Puts a certificate on hold. Holding a held certificate succeeds; a revoked one fails.
    fn hold(&self, serial: &str) -> Result<(), CaError>;
    /// Releases a hold. Releasing an active certificate succeeds; a revoked one fails.
    fn unhold(&self, serial: &str) -> Result<(), CaError>;
    /// The CA's view of a serial.
    fn status(&self, serial: &str) -> Result<CaCertStatus, CaError>;
    /// The CA's view of many serials, in order. Remote connectors ask concurrently; the
    /// default asks one after the other.
    fn statuses(&self, serials: &[String]) -> Vec<Result<CaCertStatus, CaError>> {
        serials.iter().map(|s| self.status(s)).collect()
    }
    /// The CA certificate, PEM.
    fn ca_certificate_pem(&self) -> Result<String, CaError>;
    /// The embedded CA behind this connector, when it is one: CRL publication signs CRLs
    /// with it. Remote CAs publish their own CRLs and return `None`.
    fn as_local(&self) -> Option<&LocalCa> {
        None
    }
}

/// A shared CA (the controller keeps its local CAs open between passes).
impl<T: CertificateAuthority + ?Sized> CertificateAuthority for std::sync::Arc<T> {
    fn capabilities(&self) -> CaCapabilities {
        (**self).capabilities()
    }
    fn enroll(&self, req: &EnrollRequest) -> Result<IssuedCertificate, CaError> {
        (**self).enroll(req)
    }
    fn find_by_request_id(&self, request_id: &str) -> Result<Option<IssuedCertificate>, CaError> {
        (**self).find_by_request_id(request_id)
    }
    fn revoke(&self, serial: &str, reason: RevocationReason) -> Result<(), CaError> {
        (**self).revoke(serial, reason)
    }
    fn hold(&self, serial: &str) -> Result<(), CaError> {
        (**self).hold(serial)
    }
    fn unhold(&self, serial: &str) -> Result<(), CaError> {
        (**self).unhold(serial)
    }
    fn status(&self, serial: &str) -> Result<CaCertStatus, CaError> {
        (**self).status(serial)
    }
    fn statuses(&self, serials: &[String]) -> Vec<Result<CaCertStatus, CaError>> {
        (**self).statuses(serials)
    }
    fn ca_certificate_pem(&self) -> Result<String, CaError> {
        (**self).ca_certificate_pem()
    }
    fn as_local(&self) -> Option<&LocalCa> {
        (**self).as_local()
    }
}

/// Formats serial bytes as `openssl x509 -serial` does: upper-case hex, no separators.
pub fn serial_hex(bytes: &[u8]) -> String {
    hex::encode_upper(bytes)
}

/// Normalises a serial given by a caller: strips `:` separators and an optional `0x`,
/// upper-cases. Returns `None` if it is not hex.
pub fn normalize_serial(serial: &str) -> Option<String> {
    let s = serial.trim();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let s: String = s.chars().filter(|c| *c != ':').collect();
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(s.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_normalise() {
        assert_eq!(serial_hex(&[0x0a, 0xbc]), "0ABC");
        assert_eq!(normalize_serial("0a:bc").as_deref(), Some("0ABC"));
        assert_eq!(normalize_serial("0x0abc").as_deref(), Some("0ABC"));
        assert_eq!(normalize_serial("zz"), None);
        assert_eq!(normalize_serial(""), None);
    }

    #[test]
    fn reason_codes_follow_rfc5280() {
        assert_eq!(RevocationReason::KeyCompromise.code(), 1);
        assert_eq!(RevocationReason::AffiliationChanged.code(), 3);
        assert_eq!(RevocationReason::CertificateHold.code(), 6);
    }
}
