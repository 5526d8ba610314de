//! The embedded local CA: a self-signed ECDSA CA kept in a directory of the state dir, which
//! signs PIV certificates from verified CSRs, records every certificate it signs, revokes,
//! holds and releases them, and signs CRLs.
//!
//! ```text
//!   <dir>/ca.pem           the CA certificate (written last: its presence marks a complete CA)
//!   <dir>/ca.key.sealed    the CA's PKCS#8 private key, sealed with the master key (aad = CA name)
//!                          (absent when the key lives on a PKCS#11 token: `keyStore: pkcs11:`)
//!   <dir>/db.json          every issued certificate (serial, request id, status, PEM, ...) and
//!                          the CRL number; rewritten atomically (temp file, fsync, rename)
//!   <dir>/db.lock          advisory lock (flock) held while creating the CA or changing db.json
//! ```
//!
//! Several handles (threads or processes, e.g. `keyfleet ca crl` beside a running controller)
//! may use one directory: writers take the lock, and every handle reloads `db.json` when it
//! changed on disk, so no update is lost.
//!
//! Subjects: a [`DistinguishedName`] is written as RFC 4514 strings are read, so the *last*
//! attribute of the string (`O` in `CN=a,O=b`) is the first RDN in the certificate, and
//! `openssl x509 -subject -nameopt RFC2253` prints the string back. Each attribute type may
//! appear once per name (the X.509 library keeps one value per type); a repeated type is refused
//! rather than silently dropped.
//!
//! Once created, the CA's subject, key algorithm and validity are those on disk; later changes
//! to [`LocalCaConfig`] only affect the CRL distribution point and the CRL validity.
//!
//! This module does NOT decide what to issue or revoke, does not know users or cards, and does
//! not publish CRLs anywhere (`crate::apply::crl` writes them where they are served).

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use der::DecodePem;
use rand::Rng;
use rcgen::{
    CertificateParams, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod,
    KeyPair, KeyUsagePurpose, SanType,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use super::crl::{RevokedEntry, sign_crl};
use super::csr::{VerifiedPublicKey, verify_csr};
use super::{
    CaCapabilities, CaCertStatus, CaError, CertificateAuthority, EnrollRequest, IssuedCertificate,
    RevocationReason, normalize_serial, serial_hex,
};
use crate::keystore::TokenKey;
use crate::names::{DN_ATTRIBUTES, DistinguishedName, SanValue};
use crate::secrets::MasterKey;

/// The CA's signing key: in software (sealed in the state dir) or on a PKCS#11 token.
enum CaKey {
    Soft(KeyPair),
    Token(TokenKey),
}

impl CaKey {
    fn public_raw(&self) -> &[u8] {
        match self {
            CaKey::Soft(k) => k.public_key_raw(),
            CaKey::Token(k) => k.public_key().raw_bytes(),
        }
    }
}

impl rcgen::PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        match self {
            CaKey::Soft(k) => k.der_bytes(),
            CaKey::Token(k) => k.der_bytes(),
        }
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            CaKey::Soft(k) => rcgen::PublicKeyData::algorithm(k),
            CaKey::Token(k) => k.algorithm(),
        }
    }
}

impl rcgen::SigningKey for CaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self {
            CaKey::Soft(k) => k.sign(msg),
            CaKey::Token(k) => k.sign(msg),
        }
    }
}

/// CA certificate file name.
pub const CA_CERT_FILE: &str = "ca.pem";
/// Sealed CA key file name.
pub const CA_KEY_FILE: &str = "ca.key.sealed";
/// Certificate database file name.
pub const DB_FILE: &str = "db.json";
/// The profile recorded for TLS server certificates ([`LocalCa::enroll_tls_server`]).
pub const TLS_SERVER_PROFILE: &str = "tls-server";

const DB_VERSION: u32 = 1;
const UPN_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 311, 20, 2, 3];
const MS_SMARTCARD_LOGON: &[u64] = &[1, 3, 6, 1, 4, 1, 311, 20, 2, 2];
const PIV_CARD_AUTH: &[u64] = &[2, 16, 840, 1, 101, 3, 6, 8];

/// The profiles the local CA signs.
pub const PROFILES: &[&str] = &[
    "piv-auth",
    "piv-signature",
    "piv-key-management",
    "piv-card-auth",
];

/// The CA's own key type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CaKeyAlgorithm {
    /// ECDSA on NIST P-256 with SHA-256.
    EccP256,
    /// ECDSA on NIST P-384 with SHA-384.
    EccP384,
}

impl CaKeyAlgorithm {
    fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            CaKeyAlgorithm::EccP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            CaKeyAlgorithm::EccP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        }
    }
}

/// How to create the local CA (and, for the CRL fields, how to run it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCaConfig {
    /// The CA certificate's subject.
    pub subject: DistinguishedName,
    /// The CA key's algorithm.
    pub key_algorithm: CaKeyAlgorithm,
    /// Lifetime of the CA certificate in seconds.
    pub validity_secs: u64,
    /// URL put into issued certificates' CRL distribution point extension, if any.
    pub crl_distribution_point: Option<String>,
    /// Lifetime of each CRL (nextUpdate - thisUpdate) in seconds.
    pub crl_validity_secs: u64,
}

/// A certificate's state in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
enum RecordStatus {
    Active,
    Held {
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    Revoked {
        reason: RevocationReason,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

/// One issued certificate in `db.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CertRecord {
    serial: String,
    request_id: String,
    profile: String,
    subject: String,
    #[serde(with = "time::serde::rfc3339")]
    not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    not_after: OffsetDateTime,
    /// SHA-256 of the certified SubjectPublicKeyInfo, hex (to detect a reused request id).
    spki_sha256: String,
    status: RecordStatus,
    pem: String,
}

/// The content of `db.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Db {
    version: u32,
    ca_subject: DistinguishedName,
    ca_key_algorithm: CaKeyAlgorithm,
    /// The number of the last CRL signed (0: none yet).
    crl_number: u64,
    certificates: Vec<CertRecord>,
}

impl Db {
    fn find(&self, serial: &str) -> Option<&CertRecord> {
        self.certificates.iter().find(|c| c.serial == serial)
    }
    fn find_mut(&mut self, serial: &str) -> Option<&mut CertRecord> {
        self.certificates.iter_mut().find(|c| c.serial == serial)
    }
}

/// Which version of `db.json` is in memory: (inode, length, mtime in ns). Every write is a
/// rename of a new file, so any change by another process changes the stamp.
pub(crate) type Stamp = (u64, u64, i128);

pub(crate) fn stamp_of(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).ok().map(|m| {
        (
            m.ino(),
            m.len(),
            i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        )
    })
}

/// The in-memory database and the on-disk version it reflects.
#[derive(Debug)]
struct DbState {
    db: Db,
    stamp: Option<Stamp>,
}

/// Lock file serialising writers of `db.json` across processes (an advisory `flock`).
pub const DB_LOCK_FILE: &str = "db.lock";

/// A clock: returns the current time.
pub type Clock = Box<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// The embedded CA. See the module docs for its files.
pub struct LocalCa {
    dir: PathBuf,
    name: String,
    crl_distribution_point: Option<String>,
    crl_validity_secs: u64,
    key: CaKey,
    ca_pem: String,
    ca_not_after: OffsetDateTime,
    db: Mutex<DbState>,
    clock: Clock,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa")
            .field("dir", &self.dir)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> CaError {
    CaError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Writes `data` to `path` atomically and privately (0600); see
/// [`crate::fsutil::write_atomic`].
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), CaError> {
    crate::fsutil::write_atomic(path, data, 0o600).map_err(io_err(path))
}

fn to_rcgen_dn(dn: &DistinguishedName) -> Result<rcgen::DistinguishedName, CaError> {
    if dn.0.is_empty() {
        return Err(CaError::InvalidName("empty subject".into()));
    }
    let mut out = rcgen::DistinguishedName::new();
    let mut seen: Vec<&str> = Vec::new();
    for rdn in dn.0.iter().rev() {
        if !DN_ATTRIBUTES.iter().any(|(a, _)| *a == rdn.attr) {
            return Err(CaError::InvalidName(format!(
                "unknown attribute type {:?}",
                rdn.attr
            )));
        }
        if seen.contains(&rdn.attr.as_str()) {
            return Err(CaError::InvalidName(format!(
                "attribute {} appears more than once in {dn}; the local CA supports each attribute type once",
                rdn.attr
            )));
        }
        seen.push(&rdn.attr);
        let bad =
            |e: rcgen::Error| CaError::InvalidName(format!("{}={:?}: {e}", rdn.attr, rdn.value));
        let value = match rdn.attr.as_str() {
            "C" | "SERIALNUMBER" => DnValue::PrintableString(
                rcgen::string::PrintableString::try_from(rdn.value.as_str()).map_err(bad)?,
            ),
            "DC" | "E" => DnValue::Ia5String(
                rcgen::string::Ia5String::try_from(rdn.value.as_str()).map_err(bad)?,
            ),
            _ => DnValue::Utf8String(rdn.value.clone()),
        };
        out.push(DnType::from_oid(rdn.oid()), value);
    }
    Ok(out)
}

fn to_rcgen_sans(sans: &[SanValue]) -> Result<Vec<SanType>, CaError> {
    let ia5 = |v: &str| {
        rcgen::string::Ia5String::try_from(v)
            .map_err(|e| CaError::InvalidName(format!("SAN {v:?}: {e}")))
    };
    sans.iter()
        .map(|san| {
            Ok(match san {
                SanValue::Upn(v) => SanType::OtherName((
                    UPN_OID.to_vec(),
                    rcgen::OtherNameValue::Utf8String(v.clone()),
                )),
                SanValue::Email(v) => SanType::Rfc822Name(ia5(v)?),
                SanValue::Dns(v) => SanType::DnsName(ia5(v)?),
                SanValue::Uri(v) => SanType::URI(ia5(v)?),
            })
        })
        .collect()
}

/// Key usages and EKUs of a profile for a key of this kind.
fn profile_usages(
    profile: &str,
    key: &VerifiedPublicKey,
) -> Result<(Vec<KeyUsagePurpose>, Vec<ExtendedKeyUsagePurpose>), CaError> {
    use ExtendedKeyUsagePurpose as E;
    use KeyUsagePurpose as K;
    Ok(match profile {
        "piv-auth" => (
            vec![K::DigitalSignature],
            vec![E::ClientAuth, E::Other(MS_SMARTCARD_LOGON.to_vec())],
        ),
        "piv-signature" => (
            vec![K::DigitalSignature, K::ContentCommitment],
            vec![E::EmailProtection],
        ),
        "piv-key-management" => {
            let ku = if key.kind().is_ec() {
                K::KeyAgreement
            } else {
                K::KeyEncipherment
            };
            (vec![ku], vec![E::EmailProtection])
        }
        "piv-card-auth" => (
            vec![K::DigitalSignature],
            vec![E::Other(PIV_CARD_AUTH.to_vec())],
        ),
        other => return Err(CaError::UnknownProfile(other.to_string())),
    })
}

/// Whole seconds only: certificates carry no fractions, and records must equal what is signed.
fn truncate_secs(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

fn add_secs(t: OffsetDateTime, secs: u64) -> Option<OffsetDateTime> {
    i64::try_from(secs)
        .ok()
        .and_then(|s| t.checked_add(Duration::seconds(s)))
}

/// A fresh serial: 16 random bytes, top bit clear (positive), first byte non-zero (so DER
/// needs no padding and `openssl` prints all 32 hex digits).
fn random_serial() -> [u8; 16] {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b[0] &= 0x7f;
    if b[0] == 0 {
        b[0] = 0x01;
    }
    b
}

fn ca_params(subject: &DistinguishedName) -> Result<CertificateParams, CaError> {
    let mut p = CertificateParams::default();
    p.distinguished_name = to_rcgen_dn(subject)?;
    p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.key_identifier_method = KeyIdMethod::Sha256;
    Ok(p)
}

impl LocalCa {
    /// Opens the CA in `dir`, creating it (key, self-signed certificate, empty database) if the
    /// directory holds no CA yet. `name` is the CA's policy name; it binds the sealed key.
    pub fn open_or_create(
        dir: &Path,
        name: &str,
        cfg: &LocalCaConfig,
        master: &MasterKey,
        now: OffsetDateTime,
    ) -> Result<LocalCa, CaError> {
        Self::open_or_create_with(dir, name, cfg, master, now, None)
    }

    /// [`LocalCa::open_or_create`] with the signing key on a PKCS#11 token (`token_key`)
    /// instead of sealed in `dir`. The key must match `ca.pem` when the CA exists already.
    pub fn open_or_create_with(
        dir: &Path,
        name: &str,
        cfg: &LocalCaConfig,
        master: &MasterKey,
        now: OffsetDateTime,
        token_key: Option<TokenKey>,
    ) -> Result<LocalCa, CaError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
        let cert_path = dir.join(CA_CERT_FILE);
        let db_path = dir.join(DB_FILE);
        if !cert_path.exists() {
            // Two processes starting at once must not both create a CA.
            let _lock = lock_dir(dir)?;
            if cert_path.exists() {
                return Self::open(dir, name, cfg, master, token_key);
            }
            // ca.pem is written last; without it no certificate can have been issued, unless
            // the database says otherwise.
            if db_path.exists() {
                let db = read_db(&db_path)?;
                if !db.certificates.is_empty() {
                    return Err(corrupt(
                        &cert_path,
                        "missing, but db.json lists issued certificates",
                    ));
                }
            }
            Self::create(dir, name, cfg, master, now, token_key.as_ref())?;
        }
        Self::open(dir, name, cfg, master, token_key)
    }

    fn create(
        dir: &Path,
        name: &str,
        cfg: &LocalCaConfig,
        master: &MasterKey,
        now: OffsetDateTime,
        token_key: Option<&TokenKey>,
    ) -> Result<(), CaError> {
        let now = truncate_secs(now);
        let not_after = add_secs(now, cfg.validity_secs)
            .filter(|t| *t > now)
            .ok_or(CaError::NoValidity {
                requested_secs: cfg.validity_secs,
                ca_not_after: now,
            })?;
        let mut params = ca_params(&cfg.subject)?;
        params.not_before = now;
        params.not_after = not_after;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&random_serial()));
        let cert = match token_key {
            Some(key) => params
                .self_signed(key)
                .map_err(|e| CaError::Signing(e.to_string()))?,
            None => {
                let key = KeyPair::generate_for(cfg.key_algorithm.rcgen())
                    .map_err(|e| CaError::Signing(e.to_string()))?;
                let cert = params
                    .self_signed(&key)
                    .map_err(|e| CaError::Signing(e.to_string()))?;
                let pkcs8 = zeroize::Zeroizing::new(key.serialize_der());
                write_atomic(
                    &dir.join(CA_KEY_FILE),
                    &master.seal(name.as_bytes(), &pkcs8),
                )?;
                cert
            }
        };
        let db = Db {
            version: DB_VERSION,
            ca_subject: cfg.subject.clone(),
            ca_key_algorithm: cfg.key_algorithm,
            crl_number: 0,
            certificates: Vec::new(),
        };
        write_db(&dir.join(DB_FILE), &db)?;
        write_atomic(&dir.join(CA_CERT_FILE), cert.pem().as_bytes())
    }

    fn open(
        dir: &Path,
        name: &str,
        cfg: &LocalCaConfig,
        master: &MasterKey,
        token_key: Option<TokenKey>,
    ) -> Result<LocalCa, CaError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let db_path = dir.join(DB_FILE);
        let ca_pem = fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?;
        let ca_cert = x509_cert::Certificate::from_pem(ca_pem.as_bytes())
            .map_err(|e| corrupt(&cert_path, e.to_string()))?;
        let stamp = stamp_of(&db_path);
        let db = read_db(&db_path)?;

        let key = match token_key {
            Some(k) => CaKey::Token(k),
            None => {
                let sealed = fs::read(&key_path).map_err(io_err(&key_path))?;
                let pkcs8 = master.open(name.as_bytes(), &sealed).map_err(|source| {
                    CaError::KeyDecrypt {
                        path: key_path.clone(),
                        source,
                    }
                })?;
                CaKey::Soft(
                    KeyPair::from_pkcs8_der_and_sign_algo(
                        &pkcs8.as_slice().into(),
                        db.ca_key_algorithm.rcgen(),
                    )
                    .map_err(|e| corrupt(&key_path, format!("sealed key does not decode: {e}")))?,
                )
            }
        };
        let cert_key = ca_cert
            .tbs_certificate()
            .subject_public_key_info()
            .subject_public_key
            .raw_bytes();
        if cert_key != key.public_raw() {
            let what = match &key {
                CaKey::Token(k) => format!("the token key {} does not match ca.pem", k.uri()),
                CaKey::Soft(_) => "key does not match ca.pem".to_string(),
            };
            return Err(corrupt(&key_path, what));
        }
        let ca_not_after = OffsetDateTime::UNIX_EPOCH
            + ca_cert
                .tbs_certificate()
                .validity()
                .not_after
                .to_unix_duration();

        Ok(LocalCa {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            crl_distribution_point: cfg.crl_distribution_point.clone(),
            crl_validity_secs: cfg.crl_validity_secs,
            key,
            ca_pem,
            ca_not_after,
            db: Mutex::new(DbState { db, stamp }),
            clock: Box::new(OffsetDateTime::now_utc),
        })
    }

    /// Issues a TLS server certificate (key usage digitalSignature, EKU serverAuth) for the
    /// key of the CSR, with `req.sans` and an IP address SAN for each of `ips`. Recorded like
    /// every other certificate (profile [`TLS_SERVER_PROFILE`]); `req.profile` is ignored.
    /// Not reachable through [`CertificateAuthority::enroll`]: no card template can ask for it.
    pub fn enroll_tls_server(
        &self,
        req: &EnrollRequest,
        ips: &[std::net::IpAddr],
    ) -> Result<IssuedCertificate, CaError> {
        let key = verify_csr(&req.csr_der)?;
        let usages = (
            vec![KeyUsagePurpose::DigitalSignature],
            vec![ExtendedKeyUsagePurpose::ServerAuth],
        );
        let req = EnrollRequest {
            profile: TLS_SERVER_PROFILE.to_string(),
            ..req.clone()
        };
        let ips = ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
        self.sign_request(&req, &key, usages, ips)
    }

    /// Signs (or finds again, by request id) a certificate for the verified key of `req`.
    fn sign_request(
        &self,
        req: &EnrollRequest,
        key: &VerifiedPublicKey,
        (key_usages, ekus): (Vec<KeyUsagePurpose>, Vec<ExtendedKeyUsagePurpose>),
        extra_sans: Vec<SanType>,
    ) -> Result<IssuedCertificate, CaError> {
        let spki_sha256 = hex::encode(Sha256::digest(key.spki_der()));
        let subject = to_rcgen_dn(&req.subject)?;
        let mut sans = to_rcgen_sans(&req.sans)?;
        sans.extend(extra_sans);

        let now = self.now();
        let (mut state, _lock) = self.write()?;
        if let Some(existing) = state
            .db
            .certificates
            .iter()
            .find(|c| c.request_id == req.request_id)
        {
            if existing.spki_sha256 != spki_sha256 {
                return Err(CaError::RequestIdReused(req.request_id.clone()));
            }
            return self.to_issued(existing);
        }

        let no_validity = CaError::NoValidity {
            requested_secs: req.validity_secs,
            ca_not_after: self.ca_not_after,
        };
        let not_after = add_secs(now, req.validity_secs)
            .map_or(self.ca_not_after, |t| t.min(self.ca_not_after));
        if req.validity_secs == 0 || not_after <= now {
            return Err(no_validity);
        }
        let serial = loop {
            let s = random_serial();
            if state.db.find(&serial_hex(&s)).is_none() {
                break s;
            }
        };

        let mut params = CertificateParams::default();
        params.distinguished_name = subject;
        params.subject_alt_names = sans;
        params.not_before = now;
        params.not_after = not_after;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = key_usages;
        params.extended_key_usages = ekus;
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        if let Some(url) = &self.crl_distribution_point {
            params.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
                uris: vec![url.clone()],
            }];
        }
        let cert = params
            .signed_by(key, &self.issuer(&state.db)?)
            .map_err(|e| CaError::Signing(e.to_string()))?;

        let record = CertRecord {
            serial: serial_hex(&serial),
            request_id: req.request_id.clone(),
            profile: req.profile.clone(),
            subject: req.subject.to_string(),
            not_before: now,
            not_after,
            spki_sha256,
            status: RecordStatus::Active,
            pem: cert.pem(),
        };
        let mut next = state.db.clone();
        next.certificates.push(record.clone());
        self.commit(&mut state, next)?;
        Ok(IssuedCertificate {
            serial: record.serial,
            der: cert.der().to_vec(),
            pem: record.pem,
            not_before: now,
            not_after,
            request_id: record.request_id,
        })
    }

    /// Replaces the clock used by trait methods (enrol, revoke, CRL); the default is the system
    /// clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The CA's name (the policy object's name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The directory holding the CA's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate's notAfter.
    pub fn not_after(&self) -> OffsetDateTime {
        self.ca_not_after
    }

    fn now(&self) -> OffsetDateTime {
        truncate_secs((self.clock)())
    }

    /// The database, reloaded first if another process changed `db.json`.
    fn read(&self) -> Result<MutexGuard<'_, DbState>, CaError> {
        // A panic while holding the lock cannot leave the state half-updated: every change is
        // persisted with one atomic write before it replaces the in-memory copy.
        let mut state = self.db.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.dir.join(DB_FILE);
        let stamp = stamp_of(&path);
        if stamp != state.stamp {
            state.db = read_db(&path)?;
            state.stamp = stamp;
        }
        Ok(state)
    }

    /// [`LocalCa::read`] for a change: also holds the cross-process lock file until the
    /// returned file is dropped, so no other process writes `db.json` meanwhile.
    fn write(&self) -> Result<(MutexGuard<'_, DbState>, fs::File), CaError> {
        let mut state = self.db.lock().unwrap_or_else(|p| p.into_inner());
        let lock = lock_dir(&self.dir)?;
        let path = self.dir.join(DB_FILE);
        let stamp = stamp_of(&path);
        if stamp != state.stamp {
            state.db = read_db(&path)?;
            state.stamp = stamp;
        }
        Ok((state, lock))
    }

    fn issuer(&self, db: &Db) -> Result<Issuer<'static, &CaKey>, CaError> {
        Ok(Issuer::new(ca_params(&db.ca_subject)?, &self.key))
    }

    /// Persists `next` and makes it the current state, or leaves both unchanged on failure.
    /// Call only while holding the lock from [`LocalCa::write`].
    fn commit(&self, state: &mut DbState, next: Db) -> Result<(), CaError> {
        let path = self.dir.join(DB_FILE);
        write_db(&path, &next)?;
        state.db = next;
        state.stamp = stamp_of(&path);
        Ok(())
    }

    /// Signs a fresh CRL listing every revoked and held certificate, with the next CRL number,
    /// thisUpdate now and nextUpdate now + the CRL validity. Returns DER.
    pub fn crl_der(&self) -> Result<Vec<u8>, CaError> {
        let now = self.now();
        let (mut state, _lock) = self.write()?;
        let next_update =
            add_secs(now, self.crl_validity_secs.max(1)).ok_or(CaError::NoValidity {
                requested_secs: self.crl_validity_secs,
                ca_not_after: self.ca_not_after,
            })?;
        let revoked = self.entries(&state.db)?;
        let mut next = state.db.clone();
        next.crl_number = state.db.crl_number.saturating_add(1);
        let issuer = self.issuer(&state.db)?;
        let der = sign_crl(&issuer, &revoked, next.crl_number, now, next_update)?;
        self.commit(&mut state, next)?;
        Ok(der)
    }

    /// What a CRL signed now would list: every revoked and held certificate, in database
    /// order. Signs nothing and changes nothing (CRL publication compares it with the
    /// published CRL).
    pub fn revoked_entries(&self) -> Result<Vec<RevokedEntry>, CaError> {
        let state = self.read()?;
        self.entries(&state.db)
    }

    fn entries(&self, db: &Db) -> Result<Vec<RevokedEntry>, CaError> {
        let mut revoked = Vec::new();
        for c in &db.certificates {
            let (reason, at) = match c.status {
                RecordStatus::Active => continue,
                RecordStatus::Held { at } => (RevocationReason::CertificateHold, at),
                RecordStatus::Revoked { reason, at } => (reason, at),
            };
            let serial = hex::decode(&c.serial)
                .map_err(|_| corrupt(&self.dir.join(DB_FILE), format!("serial {}", c.serial)))?;
            revoked.push(RevokedEntry { serial, at, reason });
        }
        Ok(revoked)
    }

    /// The lifetime of each CRL this handle signs (nextUpdate - thisUpdate), in seconds.
    pub fn crl_validity_secs(&self) -> u64 {
        self.crl_validity_secs.max(1)
    }

    /// [`LocalCa::crl_der`], PEM (`X509 CRL`).
    pub fn crl_pem(&self) -> Result<String, CaError> {
        let der = self.crl_der()?;
        der::pem::encode_string("X509 CRL", der::pem::LineEnding::LF, &der)
            .map_err(|e| CaError::Signing(e.to_string()))
    }

    /// Every certificate this CA issued, oldest first.
    pub fn issued(&self) -> Result<Vec<IssuedCertificate>, CaError> {
        let state = self.read()?;
        state
            .db
            .certificates
            .iter()
            .map(|r| self.to_issued(r))
            .collect()
    }

    fn to_issued(&self, r: &CertRecord) -> Result<IssuedCertificate, CaError> {
        let (_, der) = der::pem::decode_vec(r.pem.as_bytes()).map_err(|e| {
            corrupt(
                &self.dir.join(DB_FILE),
                format!("certificate {}: {e}", r.serial),
            )
        })?;
        Ok(IssuedCertificate {
            serial: r.serial.clone(),
            der,
            pem: r.pem.clone(),
            not_before: r.not_before,
            not_after: r.not_after,
            request_id: r.request_id.clone(),
        })
    }

    fn set_status(
        &self,
        serial: &str,
        change: impl FnOnce(RecordStatus, OffsetDateTime) -> Result<RecordStatus, &'static str>,
        operation: &'static str,
    ) -> Result<(), CaError> {
        let key = normalize_serial(serial).ok_or_else(|| CaError::UnknownSerial(serial.into()))?;
        let now = self.now();
        let (mut state, _lock) = self.write()?;
        let current = state
            .db
            .find(&key)
            .ok_or_else(|| CaError::UnknownSerial(key.clone()))?
            .status;
        let new = change(current, now).map_err(|state| CaError::InvalidTransition {
            serial: key.clone(),
            operation,
            state: state.to_string(),
        })?;
        if new == current {
            return Ok(());
        }
        let mut next = state.db.clone();
        if let Some(rec) = next.find_mut(&key) {
            rec.status = new;
        }
        self.commit(&mut state, next)
    }
}

/// Takes the directory's exclusive advisory lock; it is released when the file is dropped.
fn lock_dir(dir: &Path) -> Result<fs::File, CaError> {
    let lock_path = dir.join(DB_LOCK_FILE);
    let lock = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io_err(&lock_path))?;
    lock.lock().map_err(io_err(&lock_path))?;
    Ok(lock)
}

fn read_db(path: &Path) -> Result<Db, CaError> {
    let text = fs::read(path).map_err(io_err(path))?;
    let db: Db = serde_json::from_slice(&text).map_err(|e| corrupt(path, e.to_string()))?;
    if db.version != DB_VERSION {
        return Err(corrupt(
            path,
            format!("database version {} (expected {DB_VERSION})", db.version),
        ));
    }
    Ok(db)
}

fn write_db(path: &Path, db: &Db) -> Result<(), CaError> {
    let json = serde_json::to_vec_pretty(db).map_err(|e| corrupt(path, e.to_string()))?;
    write_atomic(path, &json)
}

impl CertificateAuthority for LocalCa {
    fn capabilities(&self) -> CaCapabilities {
        CaCapabilities { hold: true }
    }

    fn enroll(&self, req: &EnrollRequest) -> Result<IssuedCertificate, CaError> {
        let key = verify_csr(&req.csr_der)?;
        let usages = profile_usages(&req.profile, &key)?;
        self.sign_request(req, &key, usages, Vec::new())
    }

    fn find_by_request_id(&self, request_id: &str) -> Result<Option<IssuedCertificate>, CaError> {
        let state = self.read()?;
        state
            .db
            .certificates
            .iter()
            .find(|c| c.request_id == request_id)
            .map(|r| self.to_issued(r))
            .transpose()
    }

    fn revoke(&self, serial: &str, reason: RevocationReason) -> Result<(), CaError> {
        self.set_status(
            serial,
            |current, now| {
                Ok(match current {
                    RecordStatus::Revoked { .. } => current,
                    RecordStatus::Active | RecordStatus::Held { .. } => {
                        if reason == RevocationReason::CertificateHold {
                            RecordStatus::Held { at: now }
                        } else {
                            RecordStatus::Revoked { reason, at: now }
                        }
                    }
                })
            },
            "revoke",
        )
    }

    fn hold(&self, serial: &str) -> Result<(), CaError> {
        self.set_status(
            serial,
            |current, now| match current {
                RecordStatus::Active => Ok(RecordStatus::Held { at: now }),
                RecordStatus::Held { .. } => Ok(current),
                RecordStatus::Revoked { .. } => Err("revoked"),
            },
            "hold",
        )
    }

    fn unhold(&self, serial: &str) -> Result<(), CaError> {
        self.set_status(
            serial,
            |current, _| match current {
                RecordStatus::Active | RecordStatus::Held { .. } => Ok(RecordStatus::Active),
                RecordStatus::Revoked { .. } => Err("revoked"),
            },
            "unhold",
        )
    }

    fn status(&self, serial: &str) -> Result<CaCertStatus, CaError> {
        let Some(key) = normalize_serial(serial) else {
            return Ok(CaCertStatus::Unknown);
        };
        let state = self.read()?;
        Ok(match state.db.find(&key).map(|c| c.status) {
            None => CaCertStatus::Unknown,
            Some(RecordStatus::Active) => CaCertStatus::Active,
            Some(RecordStatus::Held { .. }) => CaCertStatus::Held,
            Some(RecordStatus::Revoked { reason, at }) => CaCertStatus::Revoked { reason, at },
        })
    }

    fn ca_certificate_pem(&self) -> Result<String, CaError> {
        Ok(self.ca_pem.clone())
    }

    fn as_local(&self) -> Option<&LocalCa> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::csr::tests::{csr_for, rsa_key};
    use der::Decode;
    use std::process::Command;

    const OPENSSL: &str = "/usr/bin/openssl";

    /// Runs the real `openssl` CLI in `dir`; returns (success, stdout + stderr).
    fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
        let out = Command::new(OPENSSL)
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "these tests need the openssl CLI at {OPENSSL} (apt-get install openssl): {e}"
                )
            });
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    fn config() -> LocalCaConfig {
        LocalCaConfig {
            subject: DistinguishedName::parse("CN=Keyfleet Test CA,O=Example,C=DE").unwrap(),
            key_algorithm: CaKeyAlgorithm::EccP256,
            validity_secs: 10 * 365 * 86400,
            crl_distribution_point: Some("http://crl.example.test/local.crl".into()),
            crl_validity_secs: 7 * 86400,
        }
    }

    fn master() -> MasterKey {
        MasterKey::from_bytes([42; 32])
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc() - Duration::minutes(5)
    }

    fn open(dir: &Path) -> LocalCa {
        LocalCa::open_or_create(dir, "local", &config(), &master(), now()).unwrap()
    }

    fn request(id: &str, profile: &str, csr_der: Vec<u8>) -> EnrollRequest {
        EnrollRequest {
            request_id: id.into(),
            csr_der,
            profile: profile.into(),
            subject: DistinguishedName::parse("CN=Alice Example,OU=People,O=Example").unwrap(),
            sans: vec![
                SanValue::Upn("alice@example.test".into()),
                SanValue::Email("alice@example.test".into()),
            ],
            validity_secs: 365 * 86400,
        }
    }

    fn p256_request(id: &str, profile: &str) -> EnrollRequest {
        request(id, profile, csr_for(&rcgen::PKCS_ECDSA_P256_SHA256).1)
    }

    fn write(dir: &Path, name: &str, text: &str) {
        fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn local_ca_is_a_shareable_trait_object() {
        let dir = tempfile::tempdir().unwrap();
        let ca: std::sync::Arc<dyn CertificateAuthority + Send + Sync> =
            std::sync::Arc::new(open(&dir.path().join("ca")));
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let ca = ca.clone();
                std::thread::spawn(move || {
                    ca.enroll(&p256_request(&format!("t{i}"), "piv-auth"))
                        .unwrap()
                })
            })
            .collect();
        let serials: std::collections::BTreeSet<_> = handles
            .into_iter()
            .map(|h| h.join().unwrap().serial)
            .collect();
        assert_eq!(serials.len(), 4);
        // Every concurrent enrolment reached db.json.
        let reopened = open(&dir.path().join("ca"));
        assert_eq!(reopened.issued().unwrap().len(), 4);
    }

    #[test]
    fn tls_server_certificates_have_server_auth_and_ip_sans_and_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let ca = open(&dir.path().join("ca"));
        let mut req = p256_request("api/1", "ignored");
        req.sans = vec![SanValue::Dns("localhost".into())];
        let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let issued = ca.enroll_tls_server(&req, &[ip]).unwrap();
        write(dir.path(), "server.pem", &issued.pem);
        let (ok, text) = openssl(
            dir.path(),
            &["x509", "-in", "server.pem", "-noout", "-text"],
        );
        assert!(ok, "{text}");
        assert!(text.contains("TLS Web Server Authentication"), "{text}");
        assert!(!text.contains("TLS Web Client Authentication"), "{text}");
        assert!(text.contains("IP Address:127.0.0.1"), "{text}");
        assert!(text.contains("DNS:localhost"), "{text}");
        assert!(text.contains("Digital Signature"), "{text}");
        let records = ca.issued().unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].serial, issued.serial);
        let state = ca.read().unwrap();
        assert_eq!(state.db.certificates[0].profile, TLS_SERVER_PROFILE);
        drop(state);
        // No card template reaches it through enroll.
        assert!(matches!(
            ca.enroll(&p256_request("api/2", TLS_SERVER_PROFILE)),
            Err(CaError::UnknownProfile(_))
        ));
    }

    #[test]
    fn ca_certificate_has_rfc5280_ca_extensions() {
        let dir = tempfile::tempdir().unwrap();
        let ca = open(&dir.path().join("ca"));
        write(dir.path(), "ca.pem", &ca.ca_certificate_pem().unwrap());
        let (ok, text) = openssl(dir.path(), &["x509", "-in", "ca.pem", "-noout", "-text"]);
        assert!(ok, "{text}");
        assert!(
            text.contains("X509v3 Basic Constraints: critical"),
            "{text}"
        );
        assert!(text.contains("CA:TRUE"), "{text}");
        assert!(text.contains("X509v3 Key Usage: critical"), "{text}");
        assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");
        assert!(text.contains("X509v3 Subject Key Identifier"), "{text}");
        assert!(text.contains("ecdsa-with-SHA256"), "{text}");
        let (ok, subject) = openssl(
            dir.path(),
            &[
                "x509", "-in", "ca.pem", "-noout", "-subject", "-nameopt", "RFC2253",
            ],
        );
        assert!(ok);
        assert_eq!(subject.trim(), "subject=CN=Keyfleet Test CA,O=Example,C=DE");
        let (ok, text) = openssl(dir.path(), &["verify", "-CAfile", "ca.pem", "ca.pem"]);
        assert!(ok, "{text}");
    }

    #[test]
    fn piv_auth_certificate_verifies_and_carries_the_request_names() {
        let dir = tempfile::tempdir().unwrap();
        let ca = open(&dir.path().join("ca"));
        let cert = ca.enroll(&p256_request("r1", "piv-auth")).unwrap();
        write(dir.path(), "ca.pem", &ca.ca_certificate_pem().unwrap());
        write(dir.path(), "leaf.pem", &cert.pem);
        let (ok, text) = openssl(dir.path(), &["verify", "-CAfile", "ca.pem", "leaf.pem"]);
        assert!(ok, "{text}");
        assert!(text.contains("leaf.pem: OK"), "{text}");

        let (_, text) = openssl(dir.path(), &["x509", "-in", "leaf.pem", "-noout", "-text"]);
        for needle in [
            "X509v3 Key Usage: critical",
            "Digital Signature",
            "TLS Web Client Authentication",
            "Microsoft Smartcard Login",
            "X509v3 Authority Key Identifier",
            "X509v3 Subject Key Identifier",
            "X509v3 Basic Constraints: critical",
            "CA:FALSE",
            "othername: UPN::alice@example.test",
            "email:alice@example.test",
            "URI:http://crl.example.test/local.crl",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        let (_, subject) = openssl(
            dir.path(),
            &[
                "x509", "-in", "leaf.pem", "-noout", "-subject", "-nameopt", "RFC2253",
            ],
        );
        assert_eq!(
            subject.trim(),
            "subject=CN=Alice Example,OU=People,O=Example"
        );
        let (_, serial) = openssl(
            dir.path(),
            &["x509", "-in", "leaf.pem", "-noout", "-serial"],
        );
        assert_eq!(serial.trim(), format!("serial={}", cert.serial));
        // The record's DER and PEM agree.
        assert_eq!(
            der::pem::decode_vec(cert.pem.as_bytes()).unwrap().1,
            cert.der
        );
    }

    #[test]
    fn profiles_set_key_usages_for_each_key_type() {
        let dir = tempfile::tempdir().unwrap();
        let ca = open(&dir.path().join("ca"));
        write(dir.path(), "ca.pem", &ca.ca_certificate_pem().unwrap());
        let rsa = rsa_key();
        let rsa_csr = rcgen::CertificateParams::default()
            .serialize_request(&rsa)
            .unwrap()
            .der()
            .to_vec();
        let p384_csr = csr_for(&rcgen::PKCS_ECDSA_P384_SHA384).1;
        // (profile, CSR, texts `openssl x509 -text` must show, texts it must not show)
        type Case<'a> = (&'a str, Vec<u8>, &'a [&'a str], &'a [&'a str]);
        let cases: Vec<Case> = vec![
            (
                "piv-signature",
                p384_csr.clone(),
                &["Digital Signature, Non Repudiation", "E-mail Protection"],
                &["Client Authentication"],
            ),
            (
                "piv-key-management",
                p384_csr,
                &["Key Agreement", "E-mail Protection"],
                &["Key Encipherment", "Digital Signature"],
            ),
            (
                "piv-key-management",
                rsa_csr.clone(),
                &["Key Encipherment", "E-mail Protection", "rsaEncryption"],
                &["Key Agreement"],
            ),
            (
                "piv-card-auth",
                rsa_csr,
                &["Digital Signature", "2.16.840.1.101.3.6.8"],
                &["E-mail Protection"],
            ),
        ];
        for (i, (profile, csr, present, absent)) in cases.into_iter().enumerate() {
            let cert = ca
                .enroll(&request(&format!("r{i}"), profile, csr))
                .unwrap_or_else(|e| panic!("{profile}: {e}"));
            write(dir.path(), "leaf.pem", &cert.pem);
            let (ok, text) = openssl(dir.path(), &["verify", "-CAfile", "ca.pem", "leaf.pem"]);
            assert!(ok, "{profile}: {text}");
            let (_, text) = openssl(dir.path(), &["x509", "-in", "leaf.pem", "-noout", "-text"]);
            for p in present {
                assert!(text.contains(p), "{profile}: missing {p:?} in\n{text}");
            }
            for a in absent {
                assert!(!text.contains(a), "{profile}: unexpected {a:?} in\n{text}");
            }
        }
    }

    #[test]
    fn refuses_bad_csrs_unknown_profiles_and_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        let ca = open(&dir.path().join("ca"));
        let mut req = p256_request("r1", "piv-auth");
        let last = req.csr_der.len() - 1;
        req.csr_der[last] ^= 0x55;
        assert!(matches!(
            ca.enroll(&req),
            Err(CaError::CsrSignature | CaError::CsrDecode(_))
        ));
        // Flip a byte inside the signed part (the SPKI) instead: still no proof of possession.
        let mut req = p256_request("r1", "piv-auth");
        let spki_pos = req.csr_der.len() / 2;
        req.csr_der[spki_pos] ^= 0x01;
        assert!(ca.enroll(&req).is_err());

        assert!(matches!(
            ca.enroll(&p256_request("r2", "server-tls")),
            Err(CaError::UnknownProfile(p)) if p == "server-tls"
        ));
        let mut req = p256_request("r3", "piv-auth");
        req.subject = DistinguishedName::parse("CN=a,DC=example,DC=com").unwrap();
        assert!(matches!(ca.enroll(&req), Err(CaError::InvalidName(_))));
        let mut req = p256_request("r4", "piv-auth");
        req.sans = vec![SanValue::Email("jörg@example.test".into())];
        assert!(matches!(ca.enroll(&req), Err(CaError::InvalidName(_))));
        let mut req = p256_request("r5", "piv-auth");
        req.validity_secs = 0;
        assert!(matches!(ca.enroll(&req), Err(CaError::NoValidity { .. })));
        assert!(ca.issued().unwrap().is_empty());
    }

    #[test]
    fn serials_are_positive_unique_and_printed_like_openssl() {
        let dir = tempfile::tempdir().unwrap();
        let ca = open(&dir.path().join("ca"));
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..40 {
            let cert = ca
                .enroll(&p256_request(&format!("r{i}"), "piv-auth"))
                .unwrap();
            assert_eq!(cert.serial.len(), 32, "{}", cert.serial);
            assert!(
                cert.serial
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c))
            );
            let first = u8::from_str_radix(&cert.serial[..2], 16).unwrap();
            assert!(first > 0 && first < 0x80, "{}", cert.serial);
            assert!(seen.insert(cert.serial.clone()));
        }
    }

    #[test]
    fn enroll_is_idempotent_by_request_id() {
        let dir = tempfile::tempdir().unwrap();
        let ca = open(&dir.path().join("ca"));
        let req = p256_request("card-1/9a/1", "piv-auth");
        let a = ca.enroll(&req).unwrap();
        let b = ca.enroll(&req).unwrap();
        assert_eq!(a, b);
        assert_eq!(ca.issued().unwrap().len(), 1);
        assert_eq!(ca.find_by_request_id("card-1/9a/1").unwrap(), Some(a));
        assert_eq!(ca.find_by_request_id("other").unwrap(), None);
        // Same id, another key: refused, nothing new signed.
        let other = p256_request("card-1/9a/1", "piv-auth");
        assert!(matches!(
            ca.enroll(&other),
            Err(CaError::RequestIdReused(_))
        ));
        assert_eq!(ca.issued().unwrap().len(), 1);
    }

    #[test]
    fn not_after_never_exceeds_the_ca_and_clock_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
        let mut cfg = config();
        cfg.validity_secs = 30 * 86400;
        let ca = LocalCa::open_or_create(&dir.path().join("ca"), "local", &cfg, &master(), t0)
            .unwrap()
            .with_clock(Box::new(move || {
                t0 + Duration::days(1) + Duration::milliseconds(750)
            }));
        let mut req = p256_request("r1", "piv-auth");
        req.validity_secs = 365 * 86400;
        let cert = ca.enroll(&req).unwrap();
        assert_eq!(cert.not_before, t0 + Duration::days(1));
        assert_eq!(cert.not_after, ca.not_after());
        assert_eq!(ca.not_after(), t0 + Duration::days(30));
        let parsed = x509_cert::Certificate::from_der(&cert.der).unwrap();
        let na = parsed
            .tbs_certificate()
            .validity()
            .not_after
            .to_unix_duration();
        assert_eq!(na.as_secs() as i64, cert.not_after.unix_timestamp());
        // A CA past its end signs nothing.
        let late = ca.with_clock(Box::new(move || t0 + Duration::days(31)));
        assert!(matches!(
            late.enroll(&p256_request("r2", "piv-auth")),
            Err(CaError::NoValidity { .. })
        ));
    }

    #[test]
    fn revoke_hold_unhold_and_crl_with_openssl() {
        let dir = tempfile::tempdir().unwrap();
        let ca = open(&dir.path().join("ca"));
        let d = dir.path();
        write(d, "ca.pem", &ca.ca_certificate_pem().unwrap());
        let a = ca.enroll(&p256_request("a", "piv-auth")).unwrap();
        let b = ca.enroll(&p256_request("b", "piv-auth")).unwrap();
        write(d, "a.pem", &a.pem);
        write(d, "b.pem", &b.pem);
        let verify = |leaf: &str| {
            openssl(
                d,
                &[
                    "verify",
                    "-crl_check",
                    "-CRLfile",
                    "crl.pem",
                    "-CAfile",
                    "ca.pem",
                    leaf,
                ],
            )
        };

        // Empty CRL: both fine; CRL has number 1, nextUpdate and AKI.
        write(d, "crl.pem", &ca.crl_pem().unwrap());
        let (ok, text) = verify("a.pem");
        assert!(ok, "{text}");
        let (ok, text) = openssl(d, &["crl", "-in", "crl.pem", "-noout", "-text"]);
        assert!(ok, "{text}");
        assert!(text.contains("X509v3 CRL Number"), "{text}");
        assert!(text.contains("Next Update"), "{text}");
        assert!(text.contains("X509v3 Authority Key Identifier"), "{text}");
        assert!(text.contains("No Revoked Certificates"), "{text}");
        let (ok, text) = openssl(d, &["crl", "-in", "crl.pem", "-noout", "-crlnumber"]);
        assert!(ok);
        assert_eq!(text.trim(), "crlNumber=0x01");
        let (ok, text) = openssl(d, &["crl", "-in", "crl.pem", "-noout", "-CAfile", "ca.pem"]);
        assert!(ok && text.contains("verify OK"), "{text}");

        // Revoke a: a revoked, b fine; CRL number increases.
        ca.revoke(&a.serial, RevocationReason::AffiliationChanged)
            .unwrap();
        ca.revoke(&a.serial.to_lowercase(), RevocationReason::KeyCompromise)
            .unwrap();
        assert!(matches!(
            ca.status(&a.serial).unwrap(),
            CaCertStatus::Revoked {
                reason: RevocationReason::AffiliationChanged,
                ..
            }
        ));
        write(d, "crl.pem", &ca.crl_pem().unwrap());
        let (ok, text) = verify("a.pem");
        assert!(!ok && text.contains("certificate revoked"), "{text}");
        let (ok, text) = verify("b.pem");
        assert!(ok, "{text}");
        let (_, text) = openssl(d, &["crl", "-in", "crl.pem", "-noout", "-text"]);
        assert!(
            text.contains(&format!("Serial Number: {}", a.serial)),
            "{text}"
        );
        assert!(text.contains("Affiliation Changed"), "{text}");
        let (_, text) = openssl(d, &["crl", "-in", "crl.pem", "-noout", "-crlnumber"]);
        assert_eq!(text.trim(), "crlNumber=0x02");

        // Hold b: revoked with certificateHold; unhold: fine again.
        ca.hold(&b.serial).unwrap();
        ca.hold(&b.serial).unwrap();
        assert_eq!(ca.status(&b.serial).unwrap(), CaCertStatus::Held);
        write(d, "crl.pem", &ca.crl_pem().unwrap());
        let (ok, text) = verify("b.pem");
        assert!(!ok && text.contains("certificate revoked"), "{text}");
        let (_, text) = openssl(d, &["crl", "-in", "crl.pem", "-noout", "-text"]);
        assert!(text.contains("Certificate Hold"), "{text}");
        ca.unhold(&b.serial).unwrap();
        ca.unhold(&b.serial).unwrap();
        assert_eq!(ca.status(&b.serial).unwrap(), CaCertStatus::Active);
        write(d, "crl.pem", &ca.crl_pem().unwrap());
        let (ok, text) = verify("b.pem");
        assert!(ok, "{text}");

        // Revoking a held certificate makes it permanent; a revoked one cannot be released.
        ca.hold(&b.serial).unwrap();
        ca.revoke(&b.serial, RevocationReason::KeyCompromise)
            .unwrap();
        assert!(matches!(
            ca.unhold(&b.serial),
            Err(CaError::InvalidTransition {
                operation: "unhold",
                ..
            })
        ));
        assert!(matches!(
            ca.hold(&a.serial),
            Err(CaError::InvalidTransition {
                operation: "hold",
                ..
            })
        ));

        // Unknown serials.
        assert!(matches!(
            ca.revoke("0123", RevocationReason::Unspecified),
            Err(CaError::UnknownSerial(_))
        ));
        assert!(matches!(ca.hold("nothex"), Err(CaError::UnknownSerial(_))));
        assert!(matches!(ca.unhold("AB"), Err(CaError::UnknownSerial(_))));
        assert_eq!(ca.status("AB").unwrap(), CaCertStatus::Unknown);
    }

    #[test]
    fn state_persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cadir = dir.path().join("ca");
        let (pem, a, b) = {
            let ca = open(&cadir);
            let a = ca.enroll(&p256_request("a", "piv-auth")).unwrap();
            let b = ca.enroll(&p256_request("b", "piv-auth")).unwrap();
            ca.revoke(&a.serial, RevocationReason::Superseded).unwrap();
            ca.hold(&b.serial).unwrap();
            ca.crl_der().unwrap();
            (ca.ca_certificate_pem().unwrap(), a, b)
        };
        // A changed config does not re-create or alter the existing CA.
        let mut cfg = config();
        cfg.subject = DistinguishedName::parse("CN=Other").unwrap();
        let ca = LocalCa::open_or_create(&cadir, "local", &cfg, &master(), now()).unwrap();
        assert_eq!(ca.ca_certificate_pem().unwrap(), pem);
        assert!(matches!(
            ca.status(&a.serial).unwrap(),
            CaCertStatus::Revoked {
                reason: RevocationReason::Superseded,
                ..
            }
        ));
        assert_eq!(ca.status(&b.serial).unwrap(), CaCertStatus::Held);
        assert_eq!(ca.find_by_request_id("a").unwrap(), Some(a));
        assert_eq!(ca.issued().unwrap().len(), 2);
        // The CRL number continues.
        let crl = ca.crl_der().unwrap();
        let crl: x509_cert::crl::CertificateList = Decode::from_der(&crl).unwrap();
        let ext = crl.tbs_cert_list.crl_extensions.unwrap();
        let number = ext
            .iter()
            .find(|e| e.extn_id.to_string() == "2.5.29.20")
            .unwrap();
        assert_eq!(number.extn_value.as_bytes(), &[0x02, 0x01, 0x02]);
        assert_eq!(crl.tbs_cert_list.revoked_certificates.unwrap().len(), 2);
        // A leaf issued after reopening still verifies against the same CA.
        let c = ca.enroll(&p256_request("c", "piv-auth")).unwrap();
        write(dir.path(), "ca.pem", &pem);
        write(dir.path(), "c.pem", &c.pem);
        let (ok, text) = openssl(dir.path(), &["verify", "-CAfile", "ca.pem", "c.pem"]);
        assert!(ok, "{text}");
    }

    #[test]
    fn concurrent_first_opens_create_one_ca() {
        let dir = tempfile::tempdir().unwrap();
        let cadir = dir.path().join("ca");
        let pems: Vec<String> = (0..4)
            .map(|_| {
                let cadir = cadir.clone();
                std::thread::spawn(move || open(&cadir).ca_certificate_pem().unwrap())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        assert!(pems.iter().all(|p| *p == pems[0]));
        assert_eq!(open(&cadir).ca_certificate_pem().unwrap(), pems[0]);
    }

    #[test]
    fn two_handles_on_one_directory_see_each_others_changes() {
        // As when `keyfleet ca crl` runs beside a controller: no update may be lost.
        let dir = tempfile::tempdir().unwrap();
        let cadir = dir.path().join("ca");
        let first = open(&cadir);
        let second = open(&cadir);
        let a = first.enroll(&p256_request("a", "piv-auth")).unwrap();
        assert_eq!(second.find_by_request_id("a").unwrap(), Some(a));
        let b = second.enroll(&p256_request("b", "piv-auth")).unwrap();
        first
            .revoke(&b.serial, RevocationReason::KeyCompromise)
            .unwrap();
        assert!(matches!(
            second.status(&b.serial).unwrap(),
            CaCertStatus::Revoked { .. }
        ));
        second.crl_der().unwrap();
        first.crl_der().unwrap();
        let third = open(&cadir);
        assert_eq!(third.issued().unwrap().len(), 2);
        let crl: x509_cert::crl::CertificateList =
            Decode::from_der(&third.crl_der().unwrap()).unwrap();
        assert_eq!(crl.tbs_cert_list.revoked_certificates.unwrap().len(), 1);
        let state = third.read().unwrap();
        assert_eq!(state.db.crl_number, 3);
    }

    #[test]
    fn ca_key_is_sealed_and_bound_to_the_master_key() {
        let dir = tempfile::tempdir().unwrap();
        let cadir = dir.path().join("ca");
        let ca = open(&cadir);
        let CaKey::Soft(key) = &ca.key else {
            panic!("the default CA key is in software");
        };
        let pkcs8 = key.serialize_der();
        let sealed = fs::read(cadir.join(CA_KEY_FILE)).unwrap();
        assert!(!sealed.windows(pkcs8.len()).any(|w| w == pkcs8.as_slice()));
        // Not even the private scalar's bytes appear (take a 16-byte chunk from the middle).
        let chunk = &pkcs8[pkcs8.len() / 2..pkcs8.len() / 2 + 16];
        assert!(!sealed.windows(16).any(|w| w == chunk));
        drop(ca);

        let wrong = MasterKey::from_bytes([1; 32]);
        let err = LocalCa::open_or_create(&cadir, "local", &config(), &wrong, now()).unwrap_err();
        assert!(matches!(err, CaError::KeyDecrypt { .. }), "{err}");
        assert!(err.to_string().contains("master key"), "{err}");
        // The sealed key is bound to the CA name too.
        let err =
            LocalCa::open_or_create(&cadir, "renamed", &config(), &master(), now()).unwrap_err();
        assert!(matches!(err, CaError::KeyDecrypt { .. }), "{err}");
        // Nothing was overwritten by the failed opens.
        assert_eq!(fs::read(cadir.join(CA_KEY_FILE)).unwrap(), sealed);
    }

    #[test]
    fn files_are_private_and_corruption_is_reported() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cadir = dir.path().join("ca");
        drop(open(&cadir));
        for f in [CA_KEY_FILE, DB_FILE, CA_CERT_FILE, DB_LOCK_FILE] {
            let mode = fs::metadata(cadir.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        // Only the three files and the lock, no temporaries.
        assert_eq!(fs::read_dir(&cadir).unwrap().count(), 4);
        fs::write(cadir.join(DB_FILE), "{").unwrap();
        assert!(matches!(
            LocalCa::open_or_create(&cadir, "local", &config(), &master(), now()),
            Err(CaError::Corrupt { .. })
        ));
    }

    #[test]
    fn p384_ca_signs_with_sha384() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config();
        cfg.key_algorithm = CaKeyAlgorithm::EccP384;
        let ca = LocalCa::open_or_create(&dir.path().join("ca"), "p384", &cfg, &master(), now())
            .unwrap();
        let cert = ca.enroll(&p256_request("r", "piv-auth")).unwrap();
        write(dir.path(), "ca.pem", &ca.ca_certificate_pem().unwrap());
        write(dir.path(), "leaf.pem", &cert.pem);
        let (ok, text) = openssl(dir.path(), &["verify", "-CAfile", "ca.pem", "leaf.pem"]);
        assert!(ok, "{text}");
        let (_, text) = openssl(dir.path(), &["x509", "-in", "leaf.pem", "-noout", "-text"]);
        assert!(text.contains("ecdsa-with-SHA384"), "{text}");
    }
}
