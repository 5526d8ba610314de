//! Pieces shared by the connectors to remote CAs (Entrust CA Gateway, cfssl): the retry policy
//! with exponential backoff and jitter, TLS client credentials (PEM or PKCS#12) and trust
//! bundles, decoding of issued certificates, and the connector's request log that makes
//! enrolment idempotent across crashes.
//!
//! It does NOT speak any CA's protocol (see [`super::entrust`], [`super::cfssl`]) and knows
//! nothing of the journal, cards or policy: callers hand it file paths and secrets already
//! resolved.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use der::{Decode, Encode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::serial_hex;

/// Failures of the shared pieces.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// A credential, bundle or log file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file holds nothing usable.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A PKCS#12 file could not be opened with its password or holds no key with a certificate.
    #[error("PKCS#12 file {path}: {reason}")]
    Pkcs12 {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the credential or trust anchors.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// A certificate returned by the CA does not decode.
    #[error("the CA returned a certificate that does not decode: {0}")]
    BadCertificate(String),
    /// A request log entry is corrupt.
    #[error("request log {path} is corrupt: {reason}")]
    CorruptLog {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Retries for idempotent calls: exponential backoff with full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total (1 = no retry).
    pub attempts: u32,
    /// Delay before the first retry (before jitter).
    pub base_delay: Duration,
    /// Upper bound of any delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1-based): uniformly random in
    /// `[d/2, d]` with `d = min(max, base * 2^(retry-1))`.
    pub fn delay(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        let d = self
            .base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay);
        let half = d / 2;
        let jitter_ns = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let extra = if jitter_ns == 0 {
            0
        } else {
            rand::random::<u64>() % (jitter_ns + 1)
        };
        half + Duration::from_nanos(extra)
    }
}

/// Whether an HTTP status is worth retrying: 429 and every 5xx, never another 4xx.
pub fn retryable_status(status: u16) -> bool {
    status == 429 || (500..=599).contains(&status)
}

/// A TLS client credential: certificate chain and private key.
#[derive(Debug)]
pub struct ClientIdentity {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The key.
    pub key: PrivateKeyDer<'static>,
}

fn read(path: &Path) -> Result<Vec<u8>, RemoteError> {
    std::fs::read(path).map_err(|source| RemoteError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads certificates from a PEM file; at least one.
pub fn load_pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, RemoteError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RemoteError::Pem {
            path: path.to_path_buf(),
            reason: format!("bad PEM certificate: {e}"),
        })?;
    if certs.is_empty() {
        return Err(RemoteError::Pem {
            path: path.to_path_buf(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// Reads a client credential from a PEM certificate (chain) file and a PEM key file (PKCS#8,
/// SEC1 or PKCS#1).
pub fn load_pem_identity(cert_file: &Path, key_file: &Path) -> Result<ClientIdentity, RemoteError> {
    let chain = load_pem_certificates(cert_file)?;
    let bytes = read(key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| RemoteError::Pem {
        path: key_file.to_path_buf(),
        reason: format!("no usable private key: {e}"),
    })?;
    Ok(ClientIdentity { chain, key })
}

/// Reads a client credential from a PKCS#12 file: its first key with its certificate chain.
pub fn load_pkcs12_identity(path: &Path, password: &str) -> Result<ClientIdentity, RemoteError> {
    let bytes = read(path)?;
    let err = |reason: String| RemoteError::Pkcs12 {
        path: path.to_path_buf(),
        reason,
    };
    let store = p12_keystore::KeyStore::from_pkcs12(
        &bytes,
        password,
        p12_keystore::Pkcs12ImportPolicy::Strict,
    )
    .map_err(|e| err(format!("cannot open (wrong password?): {e}")))?;
    let (_, chain) = store
        .private_key_chain()
        .ok_or_else(|| err("holds no private key with its certificate".into()))?;
    let certs: Vec<CertificateDer<'static>> = chain
        .certs()
        .iter()
        .map(|c| CertificateDer::from(c.as_der().to_vec()))
        .collect();
    if certs.is_empty() {
        return Err(err("the private key has no certificate".into()));
    }
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(chain.key().as_der().to_vec()));
    Ok(ClientIdentity { chain: certs, key })
}

/// A rustls client configuration (ring provider) trusting exactly `roots`, presenting
/// `identity` when the server asks for a client certificate.
pub fn tls_client_config(
    roots: &[CertificateDer<'static>],
    identity: Option<ClientIdentity>,
) -> Result<rustls::ClientConfig, RemoteError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store
            .add(r.clone())
            .map_err(|e| RemoteError::Tls(format!("trust anchor rejected: {e}")))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RemoteError::Tls(e.to_string()))?
        .with_root_certificates(store);
    match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain, id.key)
            .map_err(|e| RemoteError::Tls(format!("client certificate or key rejected: {e}"))),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The facts of an issued certificate Keyfleet records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCertificate {
    /// Upper-case hex serial without leading zero bytes (as openssl prints it).
    pub serial: String,
    /// DER.
    pub der: Vec<u8>,
    /// PEM.
    pub pem: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// SHA-256 of the SubjectPublicKeyInfo DER, hex.
    pub spki_sha256: String,
}

/// SHA-256 of a SubjectPublicKeyInfo DER, lower-case hex.
pub fn spki_fingerprint(spki_der: &[u8]) -> String {
    hex::encode(Sha256::digest(spki_der))
}

/// The serial of `bytes` as Keyfleet prints it: upper-case hex, leading zero bytes dropped.
pub fn serial_of_bytes(bytes: &[u8]) -> String {
    let start = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    serial_hex(bytes.get(start..).unwrap_or(bytes))
}

/// Decodes a DER certificate.
pub fn parse_certificate(der: &[u8]) -> Result<ParsedCertificate, RemoteError> {
    let bad = |e: der::Error| RemoteError::BadCertificate(e.to_string());
    let cert = x509_cert::Certificate::from_der(der).map_err(bad)?;
    let tbs = cert.tbs_certificate();
    let spki = tbs.subject_public_key_info().to_der().map_err(bad)?;
    let validity = tbs.validity();
    let at = |t: &x509_cert::time::Time| {
        let secs = i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX);
        OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    };
    let pem = der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, der)
        .map_err(|e| RemoteError::BadCertificate(e.to_string()))?;
    Ok(ParsedCertificate {
        serial: serial_of_bytes(tbs.serial_number().as_bytes()),
        der: der.to_vec(),
        pem,
        not_before: at(&validity.not_before),
        not_after: at(&validity.not_after),
        spki_sha256: spki_fingerprint(&spki),
    })
}

/// Decodes a certificate that a CA sent as Base64 DER or as PEM text.
pub fn decode_certificate_text(text: &str) -> Result<ParsedCertificate, RemoteError> {
    use base64::Engine as _;
    let t = text.trim();
    let der = if t.starts_with("-----BEGIN") {
        CertificateDer::from_pem_slice(t.as_bytes())
            .map_err(|e| RemoteError::BadCertificate(format!("bad PEM: {e}")))?
            .to_vec()
    } else {
        let compact: String = t.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map_err(|e| RemoteError::BadCertificate(format!("bad Base64: {e}")))?
    };
    parse_certificate(&der)
}

/// One enrolment as the connector remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    /// Keyfleet's request id.
    pub request_id: String,
    /// Fingerprint of the public key in the CSR ([`spki_fingerprint`]).
    pub spki_sha256: String,
    /// When the request was (about to be) sent.
    #[serde(with = "time::serde::rfc3339")]
    pub sent_at: OffsetDateTime,
    /// The serial, once the CA's answer was received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The certificate, PEM, for CAs that cannot be asked for it again (cfssl).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pem: Option<String>,
}

/// The connector's own log of enrolments, one small JSON file per request id under a folder of
/// the state directory. Written (and synced) before a request is sent, so that after a crash
/// the connector knows which public key to look for at the CA.
#[derive(Debug, Clone)]
pub struct RequestLog {
    dir: PathBuf,
}

impl RequestLog {
    /// A log in `dir` (created on first write).
    pub fn new(dir: &Path) -> Self {
        RequestLog {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, request_id: &str) -> PathBuf {
        // Request ids are Keyfleet's own (`kf-<hex>`); anything else is hex-encoded.
        let safe = request_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let name = if safe && !request_id.is_empty() {
            request_id.to_string()
        } else {
            format!("x-{}", hex::encode(request_id))
        };
        self.dir.join(format!("{name}.json"))
    }

    /// The record of `request_id`, if any.
    pub fn get(&self, request_id: &str) -> Result<Option<RequestRecord>, RemoteError> {
        let path = self.path(request_id);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(RemoteError::Io { path, source }),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RemoteError::CorruptLog {
                path,
                reason: e.to_string(),
            })
    }

    /// Writes `record` durably (temporary file, fsync, rename, fsync of the folder).
    pub fn put(&self, record: &RequestRecord) -> Result<(), RemoteError> {
        self.write(record, true)
    }

    /// Writes `record` without waiting for the disk: for facts that can be found again if
    /// lost (a serial the CA can be searched for), not for the record of a request about to be
    /// sent.
    pub fn put_lazy(&self, record: &RequestRecord) -> Result<(), RemoteError> {
        self.write(record, false)
    }

    fn write(&self, record: &RequestRecord, durable: bool) -> Result<(), RemoteError> {
        use std::io::Write as _;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RemoteError::Io { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let path = self.path(&record.request_id);
        let tmp = path.with_extension("tmp");
        let body = serde_json::to_vec_pretty(record).unwrap_or_default();
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&body).map_err(io(&tmp))?;
        if durable {
            f.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        if durable && let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        };
        for _ in 0..50 {
            let d1 = p.delay(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = p.delay(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            let d9 = p.delay(9);
            assert!(d9 >= Duration::from_millis(500) && d9 <= Duration::from_millis(1000));
            assert!(p.delay(64) <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn only_429_and_5xx_are_retried() {
        assert!(retryable_status(429));
        assert!(retryable_status(500));
        assert!(retryable_status(503));
        assert!(!retryable_status(400));
        assert!(!retryable_status(404));
        assert!(!retryable_status(409));
        assert!(!retryable_status(200));
    }

    #[test]
    fn serials_drop_leading_zero_bytes() {
        assert_eq!(serial_of_bytes(&[0x00, 0x8f, 0x01]), "8F01");
        assert_eq!(serial_of_bytes(&[0x00]), "00");
        assert_eq!(serial_of_bytes(&[0x12]), "12");
    }

    #[test]
    fn request_log_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let log = RequestLog::new(&dir.path().join("requests"));
        assert_eq!(log.get("kf-1").unwrap(), None);
        let rec = RequestRecord {
            request_id: "kf-1".into(),
            spki_sha256: "ab".into(),
            sent_at: OffsetDateTime::UNIX_EPOCH,
            serial: None,
            pem: None,
        };
        log.put(&rec).unwrap();
        assert_eq!(log.get("kf-1").unwrap(), Some(rec));
        // Odd ids cannot escape the folder.
        let odd = RequestRecord {
            request_id: "../x".into(),
            spki_sha256: "cd".into(),
            sent_at: OffsetDateTime::UNIX_EPOCH,
            serial: Some("01".into()),
            pem: None,
        };
        log.put(&odd).unwrap();
        assert_eq!(log.get("../x").unwrap(), Some(odd));
        assert!(!dir.path().join("x.json").exists());
    }
}
