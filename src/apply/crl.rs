//! CRL publication: keeps the CRL file of every local CA with `crlPublish` current. Used by
//! `keyfleet apply` after its passes and by the controller after each pass.
//!
//! Level-triggered like the rest of Keyfleet: nothing remembers "a revocation happened". Each
//! call reads the published file back ([`crate::ca::crl_read`]: this CA's issuer name and
//! signature, nextUpdate, entries) and compares it with what the CA would list now. A new CRL
//! is signed and written when
//!
//! - no CRL is published yet, or the file is not a CRL of this CA (deleted, replaced, corrupt,
//!   signed by an earlier CA with the same name);
//! - the CA's revoked and held certificates differ from the file's entries (a revocation,
//!   suspension or resumption by apply, the controller, recovery, or a run that crashed or
//!   failed to publish before);
//! - the file is in the other format than the policy asks for;
//! - its nextUpdate is within `refreshBefore`.
//!
//! The file is replaced atomically (temp file in the same folder, fsync, rename, fsync of the
//! folder; mode 0644): a relying party reading it sees the old CRL or the new one, never a
//! part. A failure to publish is reported in the returned [`CrlStatus`] and never undoes a
//! revocation: the CA and the inventory keep it, and the next call publishes it.
//!
//! This module does NOT decide what to revoke (the planner does), sign CRLs or choose their
//! entries (the local CA does), or serve the file (a web server next to it does).

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use time::{Duration, OffsetDateTime};

use super::CaRegistry;
use crate::ca::crl_read::{CrlInfo, ListedEntry, read_crl};
use crate::ca::{CaError, CertificateAuthority, LocalCa};
use crate::policy::PolicySet;
use crate::policy::model::{CertificateAuthoritySpec, CrlFormat};

/// Longest wait before trying again after a failed publication.
pub const MAX_RETRY_SECS: u64 = 60;

/// Mode of the published file: relying parties (a web server) must read it.
const FILE_MODE: u32 = 0o644;

/// One local CA whose CRL is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlTarget {
    /// The CertificateAuthority's name.
    pub ca: String,
    /// The CRL file (resolved against the policy file).
    pub path: PathBuf,
    /// The encoding.
    pub format: CrlFormat,
    /// Publish a new CRL this long before the published one's nextUpdate.
    pub refresh_before_secs: u64,
}

/// The local CAs of `policy` with `crlPublish`, by name.
pub fn targets(policy: &PolicySet) -> Vec<CrlTarget> {
    policy
        .authorities
        .iter()
        .filter_map(|(name, obj)| {
            let CertificateAuthoritySpec::Local(local) = &obj.spec else {
                return None;
            };
            let publish = local.crl_publish.as_ref()?;
            Some(CrlTarget {
                ca: name.clone(),
                path: obj.resolve_path(&publish.path),
                format: publish.format,
                refresh_before_secs: publish
                    .refresh_before_or_default(local.crl_validity)
                    .as_secs(),
            })
        })
        .collect()
}

/// What is at the CRL path now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// No file.
    Missing,
    /// A file that is not a CRL of this CA, or cannot be read; why.
    Unusable(String),
    /// A CRL of this CA.
    Crl(CrlInfo),
}

/// Why a new CRL is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishReason {
    /// No CRL file exists yet.
    Missing,
    /// The file is not a usable CRL of this CA (why).
    Unusable(String),
    /// The CA's revoked or held certificates differ from the published entries.
    Changed,
    /// The file is DER and the policy asks for PEM, or the other way round.
    Format,
    /// The published CRL's nextUpdate is within `refreshBefore` (or it has none).
    Due,
}

impl fmt::Display for PublishReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishReason::Missing => f.write_str("no CRL was published yet"),
            PublishReason::Unusable(why) => write!(f, "the file in place is unusable ({why})"),
            PublishReason::Changed => {
                f.write_str("certificates were revoked, suspended or resumed since")
            }
            PublishReason::Format => f.write_str("the file is in the other format"),
            PublishReason::Due => f.write_str("the published CRL's nextUpdate is near"),
        }
    }
}

/// When a CRL published at `this_update` and valid until `next_update` must be replaced:
/// `refresh_before_secs` before its nextUpdate, but never before one second after its
/// thisUpdate (so a misconfigured refresh window cannot make the controller republish without
/// pause). A CRL without nextUpdate is due at once.
pub fn refresh_at(
    this_update: OffsetDateTime,
    next_update: Option<OffsetDateTime>,
    refresh_before_secs: u64,
) -> OffsetDateTime {
    let Some(next) = next_update else {
        return this_update;
    };
    let before = Duration::seconds(i64::try_from(refresh_before_secs).unwrap_or(i64::MAX));
    let at = next.checked_sub(before).unwrap_or(this_update);
    at.max(this_update + Duration::seconds(1))
}

/// How long to wait before trying again after a failed publication: a third of the refresh
/// window (so a few attempts fit before the CRL in place expires), between 1 and
/// [`MAX_RETRY_SECS`] seconds.
pub fn retry_after_secs(refresh_before_secs: u64) -> u64 {
    (refresh_before_secs / 3).clamp(1, MAX_RETRY_SECS)
}

/// Whether to publish, given what is published, what the CA would list now (`wanted`,
/// sorted), the configured format and refresh window. Pure.
pub fn decide(
    published: &Published,
    wanted: &[ListedEntry],
    format: CrlFormat,
    refresh_before_secs: u64,
    now: OffsetDateTime,
) -> Option<PublishReason> {
    let info = match published {
        Published::Missing => return Some(PublishReason::Missing),
        Published::Unusable(why) => return Some(PublishReason::Unusable(why.clone())),
        Published::Crl(info) => info,
    };
    if info.entries != wanted {
        return Some(PublishReason::Changed);
    }
    if info.pem != (format == CrlFormat::Pem) {
        return Some(PublishReason::Format);
    }
    if now >= refresh_at(info.this_update, info.next_update, refresh_before_secs) {
        return Some(PublishReason::Due);
    }
    None
}

/// Publishing a CRL failed.
#[derive(Debug, thiserror::Error)]
pub enum CrlPublishError {
    /// The CA's connector could not be built (key store unavailable, ...).
    #[error("the CA is unavailable: {0}")]
    NotConnected(String),
    /// The policy names no such CA, or it is not a local CA (should not happen: targets come
    /// from the same policy).
    #[error("not a local CA")]
    NotLocal,
    /// The CA could not list its revocations or sign the CRL.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The CRL could not be encoded as PEM.
    #[error("cannot encode the CRL as PEM: {0}")]
    Pem(String),
    /// The file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The CRL file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The outcome for one CA.
#[derive(Debug)]
pub struct CrlStatus {
    /// The CertificateAuthority's name.
    pub ca: String,
    /// The CRL file.
    pub path: PathBuf,
    /// A new CRL was written, and why.
    pub published: Option<PublishReason>,
    /// The CRL in place afterwards (`None` when there is none usable).
    pub current: Option<CrlInfo>,
    /// When the CRL must be looked at again: its refresh point, or a retry after a failure.
    pub next_refresh: OffsetDateTime,
    /// Why publishing failed, if it did.
    pub error: Option<CrlPublishError>,
}

/// Brings every published CRL of `policy` up to date with its CA (see the module docs).
/// Never fails as a whole: each CA's outcome, errors included, is in its [`CrlStatus`].
pub fn publish_all(policy: &PolicySet, cas: &CaRegistry, now: OffsetDateTime) -> Vec<CrlStatus> {
    targets(policy)
        .into_iter()
        .map(|target| {
            let ca = match cas.get(&target.ca) {
                Some(Ok(ca)) => ca.as_local().ok_or(CrlPublishError::NotLocal),
                Some(Err(e)) => Err(CrlPublishError::NotConnected(e.clone())),
                None => Err(CrlPublishError::NotLocal),
            };
            match ca {
                Ok(ca) => publish(&target, ca, now),
                Err(e) => failed(&target, None, now, e),
            }
        })
        .collect()
}

/// Largest file read back as a CRL (a CRL of a million entries is about 40 MB); anything
/// larger is taken as not this CA's CRL and replaced.
pub const MAX_CRL_BYTES: u64 = 128 * 1024 * 1024;

/// Reads what is published at `path`, checked against the CA certificate `ca_pem`.
pub fn published(path: &Path, ca_pem: &str) -> Published {
    if let Ok(m) = fs::metadata(path)
        && m.len() > MAX_CRL_BYTES
    {
        return Published::Unusable(format!(
            "{} bytes, more than a CRL of this CA can be",
            m.len()
        ));
    }
    match fs::read(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Published::Missing,
        Err(e) => Published::Unusable(e.to_string()),
        Ok(bytes) => match read_crl(&bytes, ca_pem) {
            Ok(info) => Published::Crl(info),
            Err(e) => Published::Unusable(e.to_string()),
        },
    }
}

/// Brings one CA's published CRL up to date.
pub fn publish(target: &CrlTarget, ca: &LocalCa, now: OffsetDateTime) -> CrlStatus {
    let ca_pem = match ca.ca_certificate_pem() {
        Ok(p) => p,
        Err(e) => return failed(target, None, now, e.into()),
    };
    let before = published(&target.path, &ca_pem);
    let current = match &before {
        Published::Crl(info) => Some(info.clone()),
        _ => None,
    };
    let wanted = match ca.revoked_entries() {
        Ok(entries) => {
            let mut w: Vec<ListedEntry> = entries.iter().map(ListedEntry::from).collect();
            w.sort();
            w
        }
        Err(e) => return failed(target, current, now, e.into()),
    };
    let Some(reason) = decide(
        &before,
        &wanted,
        target.format,
        target.refresh_before_secs,
        now,
    ) else {
        let next_refresh = current.as_ref().map_or(now, |c| {
            refresh_at(c.this_update, c.next_update, target.refresh_before_secs)
        });
        return CrlStatus {
            ca: target.ca.clone(),
            path: target.path.clone(),
            published: None,
            current,
            next_refresh,
            error: None,
        };
    };
    let written = sign(target, ca).and_then(|bytes| {
        write_atomic(&target.path, &bytes)?;
        Ok(bytes)
    });
    match written {
        Ok(bytes) => {
            // Read back what was written: the status reports the file as relying parties see it.
            let info = read_crl(&bytes, &ca_pem).ok();
            let next_refresh = info.as_ref().map_or(now, |c| {
                refresh_at(c.this_update, c.next_update, target.refresh_before_secs)
            });
            CrlStatus {
                ca: target.ca.clone(),
                path: target.path.clone(),
                published: Some(reason),
                current: info,
                next_refresh,
                error: None,
            }
        }
        Err(e) => failed(target, current, now, e),
    }
}

fn failed(
    target: &CrlTarget,
    current: Option<CrlInfo>,
    now: OffsetDateTime,
    error: CrlPublishError,
) -> CrlStatus {
    let retry = now
        + Duration::seconds(
            i64::try_from(retry_after_secs(target.refresh_before_secs)).unwrap_or(i64::MAX),
        );
    CrlStatus {
        ca: target.ca.clone(),
        path: target.path.clone(),
        published: None,
        current,
        next_refresh: retry,
        error: Some(error),
    }
}

/// Signs a fresh CRL in the target's format.
fn sign(target: &CrlTarget, ca: &LocalCa) -> Result<Vec<u8>, CrlPublishError> {
    let der = ca.crl_der()?;
    Ok(match target.format {
        CrlFormat::Der => der,
        CrlFormat::Pem => der::pem::encode_string("X509 CRL", der::pem::LineEnding::LF, &der)
            .map_err(|e| CrlPublishError::Pem(e.to_string()))?
            .into_bytes(),
    })
}

/// Replaces `path` with `data` atomically and readable by all (mode 0644); see
/// [`crate::fsutil::write_atomic`].
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), CrlPublishError> {
    crate::fsutil::write_atomic(path, data, FILE_MODE).map_err(|source| CrlPublishError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{CaKeyAlgorithm, LocalCaConfig, RevocationReason};
    use crate::names::DistinguishedName;
    use crate::secrets::MasterKey;

    fn t(secs: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + Duration::seconds(1_700_000_000 + secs)
    }

    fn info(this: i64, next: Option<i64>, entries: Vec<ListedEntry>) -> CrlInfo {
        CrlInfo {
            pem: false,
            number: Some(1),
            this_update: t(this),
            next_update: next.map(t),
            entries,
        }
    }

    fn entry(serial: u8, at: i64, reason: u8) -> ListedEntry {
        ListedEntry {
            serial: vec![serial],
            at: t(at).unix_timestamp(),
            reason: Some(reason),
        }
    }

    #[test]
    fn refresh_point_is_refresh_before_ahead_of_next_update() {
        assert_eq!(refresh_at(t(0), Some(t(6)), 3), t(3));
        assert_eq!(refresh_at(t(0), Some(t(7 * 86400)), 86400), t(6 * 86400));
        // A window as long as the CRL's validity (or longer) still leaves one second.
        assert_eq!(refresh_at(t(0), Some(t(6)), 6), t(1));
        assert_eq!(refresh_at(t(0), Some(t(6)), u64::MAX), t(1));
        // No nextUpdate: due at once.
        assert_eq!(refresh_at(t(0), None, 3), t(0));
    }

    #[test]
    fn retries_fit_in_the_refresh_window() {
        assert_eq!(retry_after_secs(3), 1);
        assert_eq!(retry_after_secs(0), 1);
        assert_eq!(retry_after_secs(90), 30);
        assert_eq!(retry_after_secs(86400), MAX_RETRY_SECS);
    }

    #[test]
    fn decides_from_the_published_file() {
        let e1 = entry(1, 0, 3);
        let fresh = Published::Crl(info(0, Some(6), vec![e1.clone()]));
        let want = vec![e1.clone()];
        let d =
            |p: &Published, w: &[ListedEntry], f: CrlFormat, now: i64| decide(p, w, f, 3, t(now));
        assert_eq!(
            d(&Published::Missing, &want, CrlFormat::Der, 0),
            Some(PublishReason::Missing)
        );
        assert!(matches!(
            d(&Published::Unusable("x".into()), &want, CrlFormat::Der, 0),
            Some(PublishReason::Unusable(_))
        ));
        // Up to date: nothing until the refresh point, then due.
        assert_eq!(d(&fresh, &want, CrlFormat::Der, 2), None);
        assert_eq!(
            d(&fresh, &want, CrlFormat::Der, 3),
            Some(PublishReason::Due)
        );
        // A new revocation, a resumption (entry gone), a hold made permanent (reason and
        // date change): all change the entries.
        let more = vec![e1, entry(2, 1, 3)];
        assert_eq!(
            d(&fresh, &more, CrlFormat::Der, 1),
            Some(PublishReason::Changed)
        );
        assert_eq!(
            d(&fresh, &[], CrlFormat::Der, 1),
            Some(PublishReason::Changed)
        );
        assert_eq!(
            d(&fresh, &[entry(1, 2, 6)], CrlFormat::Der, 1),
            Some(PublishReason::Changed)
        );
        // The policy switched to PEM.
        assert_eq!(
            d(&fresh, &want, CrlFormat::Pem, 1),
            Some(PublishReason::Format)
        );
    }

    fn local_ca(dir: &Path, crl_validity_secs: u64) -> LocalCa {
        let cfg = LocalCaConfig {
            subject: DistinguishedName::parse("CN=Publish Test CA,O=Example").expect("dn"),
            key_algorithm: CaKeyAlgorithm::EccP256,
            validity_secs: 86400 * 365,
            crl_distribution_point: None,
            crl_validity_secs,
        };
        LocalCa::open_or_create(
            dir,
            "test-ca",
            &cfg,
            &MasterKey::from_bytes([7; 32]),
            OffsetDateTime::now_utc() - Duration::minutes(1),
        )
        .expect("CA")
    }

    fn target(path: &Path, format: CrlFormat) -> CrlTarget {
        CrlTarget {
            ca: "test-ca".into(),
            path: path.to_path_buf(),
            format,
            refresh_before_secs: 3600,
        }
    }

    fn enroll(ca: &LocalCa, id: &str) -> String {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .expect("csr");
        ca.enroll(&crate::ca::EnrollRequest {
            request_id: id.into(),
            csr_der: csr.der().to_vec(),
            profile: "piv-auth".into(),
            subject: DistinguishedName::parse("CN=Someone").expect("dn"),
            sans: Vec::new(),
            validity_secs: 86400,
        })
        .expect("enroll")
        .serial
    }

    #[test]
    fn publishes_when_missing_changed_or_replaced_and_not_otherwise() {
        let tmp = tempfile::tempdir().expect("tmp");
        let ca = local_ca(&tmp.path().join("ca"), 86400);
        let path = tmp.path().join("ca.crl");
        let target = target(&path, CrlFormat::Der);
        let now = OffsetDateTime::now_utc();

        let first = publish(&target, &ca, now);
        assert!(first.error.is_none(), "{:?}", first.error);
        assert_eq!(first.published, Some(PublishReason::Missing));
        let n1 = first
            .current
            .as_ref()
            .and_then(|c| c.number)
            .expect("number");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(&path).expect("file").mode() & 0o777, 0o644);

        // Nothing changed: the file stays, and the next look is at its refresh point.
        let again = publish(&target, &ca, now);
        assert_eq!(again.published, None);
        let next_update = again
            .current
            .as_ref()
            .and_then(|c| c.next_update)
            .expect("nextUpdate");
        assert_eq!(again.next_refresh, next_update - Duration::hours(1));

        // A revocation: republished with the serial and a higher number.
        let serial = enroll(&ca, "r1");
        ca.revoke(&serial, RevocationReason::AffiliationChanged)
            .expect("revoke");
        let after = publish(&target, &ca, now);
        assert_eq!(after.published, Some(PublishReason::Changed));
        let info = after.current.expect("CRL");
        assert!(info.number.expect("number") > n1);
        assert_eq!(
            info.entries.first().map(|e| hex::encode_upper(&e.serial)),
            Some(serial)
        );
        assert_eq!(info.entries.first().and_then(|e| e.reason), Some(3));

        // Replaced by garbage, or by another CA's CRL: republished.
        fs::write(&path, b"not a CRL").expect("write");
        assert!(matches!(
            publish(&target, &ca, now).published,
            Some(PublishReason::Unusable(_))
        ));
        let other = local_ca(&tmp.path().join("other"), 86400);
        fs::write(&path, other.crl_der().expect("crl")).expect("write");
        assert!(matches!(
            publish(&target, &ca, now).published,
            Some(PublishReason::Unusable(_))
        ));
        assert_eq!(publish(&target, &ca, now).published, None);

        // PEM wanted now.
        let pem_target = CrlTarget {
            format: CrlFormat::Pem,
            ..target
        };
        assert_eq!(
            publish(&pem_target, &ca, now).published,
            Some(PublishReason::Format)
        );
        assert!(
            fs::read_to_string(&path)
                .expect("pem")
                .starts_with("-----BEGIN X509 CRL-----")
        );
        // Deleted: published again.
        fs::remove_file(&path).expect("rm");
        assert_eq!(
            publish(&pem_target, &ca, now).published,
            Some(PublishReason::Missing)
        );
        // Due: a look after the refresh point republishes.
        let later = publish(&pem_target, &ca, next_update);
        assert_eq!(later.published, Some(PublishReason::Due));
    }

    #[test]
    fn an_unwritable_path_is_an_error_with_a_retry_and_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().expect("tmp");
        let ca = local_ca(&tmp.path().join("ca"), 86400);
        let blocker = tmp.path().join("not-a-folder");
        fs::write(&blocker, b"x").expect("write");
        let now = OffsetDateTime::now_utc();
        let status = publish(&target(&blocker.join("ca.crl"), CrlFormat::Der), &ca, now);
        let err = status.error.expect("error").to_string();
        assert!(err.contains("not-a-folder/ca.crl"), "{err}");
        assert_eq!(status.published, None);
        assert_eq!(status.next_refresh, now + Duration::seconds(60));
        let leftovers: Vec<_> = fs::read_dir(tmp.path())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
