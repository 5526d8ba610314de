//! The archive of encryption keys: every server-generated key of an `archive: true` slot,
//! kept so that mail and files encrypted to an old certificate stay readable after a renewal,
//! a lost card or a departure. Signing and authentication keys are never archived
//! (`validate` allows `archive` only with `keyGeneration: server`).
//!
//! ```text
//!   archive key (file `archive.key`, or an AES key on a token; never the master key)
//!     └─ wraps each record's own random data key (AES-256-GCM, bound to the key id)
//!          └─ encrypts the private key, PKCS#8 (AES-256-GCM, bound to the key id)
//! ```
//!
//! A record is written (and flushed) before its key goes onto the card, found by the key id
//! (SHA-256 of the public key), and joined with the inventory's certificates by their public
//! key: the certificate a record belongs to is the one whose key it holds, so no record
//! needs rewriting when the CA answers. The key exists in clear only in memory, while it is
//! imported or recovered; never at rest.

pub mod pkcs12;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::inventory::{CertRecord, Inventory};
use crate::policy::model::{KeyAlgorithm, Slot};
use crate::secrets::MasterKey;
use crate::store::{Store, StoreError};

/// The archive could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A record does not decode.
    #[error("archive record {0} does not decode: {1}")]
    Decode(String, String),
    /// A record's key cannot be unwrapped with this archive key.
    #[error("archive record {0} cannot be opened with this archive key (wrong key, or tampered)")]
    Unwrap(String),
    /// No archive key is configured or it could not be loaded.
    #[error("the archive key is unavailable: {0}")]
    NoKey(String),
}

/// One archived key, as stored: metadata in clear, the key only wrapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveRecord {
    /// SHA-256 of the public key's SubjectPublicKeyInfo, hex.
    pub key_id: String,
    /// The holder.
    pub user: String,
    /// The template.
    pub template: String,
    /// The slot it was made for.
    pub slot: Slot,
    /// The card it went onto.
    pub card: String,
    /// Its algorithm.
    pub key_algorithm: KeyAlgorithm,
    /// When it was archived.
    #[serde(with = "time::serde::rfc3339")]
    pub archived_at: OffsetDateTime,
    /// The record's data key, sealed by the archive key (AAD: the key id).
    #[serde(with = "hex::serde")]
    pub wrapped_data_key: Vec<u8>,
    /// Nonce of `encrypted_key`.
    #[serde(with = "hex::serde")]
    pub nonce: Vec<u8>,
    /// The private key (PKCS#8 DER), AES-256-GCM under the data key (AAD: the key id).
    #[serde(with = "hex::serde")]
    pub encrypted_key: Vec<u8>,
}

/// What `keyfleet keys list` shows of a record (never key material): `{"serial", "user",
/// "template", "slot", "card", "notBefore", "notAfter", "archivedAt"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArchivedKey {
    /// The certificate of the key (upper-case hex), or null when none was issued for it.
    pub serial: Option<String>,
    /// The holder.
    pub user: String,
    /// The template.
    pub template: String,
    /// The slot (hex).
    pub slot: String,
    /// The card it went onto.
    pub card: String,
    /// The certificate's validity (RFC 3339), when there is one.
    pub not_before: Option<String>,
    /// The certificate's end of validity (RFC 3339), when there is one.
    pub not_after: Option<String>,
    /// When the key was archived (RFC 3339).
    pub archived_at: String,
    /// The key id (SHA-256 of the public key, hex).
    pub key_id: String,
}

/// Where the archive key of a state directory comes from (`Settings.spec.archive.keyStore`),
/// loaded on first use and then kept for the life of the process (a token is opened once).
#[derive(Debug, Clone)]
pub struct ArchiveKeys {
    key_store: Option<String>,
    state_dir: std::path::PathBuf,
}

type Loaded =
    std::collections::HashMap<(std::path::PathBuf, Option<String>), std::sync::Arc<MasterKey>>;

static LOADED: std::sync::Mutex<Option<Loaded>> = std::sync::Mutex::new(None);

impl ArchiveKeys {
    /// The archive key of `state_dir` per the policy's settings.
    pub fn new(policy: &crate::policy::PolicySet, state_dir: &std::path::Path) -> Self {
        ArchiveKeys {
            key_store: policy.settings.spec.archive.key_store.clone(),
            state_dir: state_dir.to_path_buf(),
        }
    }

    /// The archive key (created on first use).
    pub fn key(&self) -> Result<std::sync::Arc<MasterKey>, ArchiveError> {
        let id = (self.state_dir.clone(), self.key_store.clone());
        let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
        let map = loaded.get_or_insert_with(Default::default);
        if let Some(k) = map.get(&id) {
            return Ok(k.clone());
        }
        let store = crate::keystore::KeyStore::parse(self.key_store.as_deref())
            .map_err(|e| ArchiveError::NoKey(e.to_string()))?;
        let key = crate::keystore::archive_key(&store, &self.state_dir)
            .map_err(|e| ArchiveError::NoKey(e.to_string()))?;
        let key = std::sync::Arc::new(key);
        map.insert(id, key.clone());
        Ok(key)
    }
}

/// What a `recover-key` request asks for (recorded in the request, given to its run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecoverParameters {
    /// Only the key of this certificate (hex); every archived key of the user otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The PKCS#12 file to write, an absolute path on the controller's machine that does not
    /// exist yet (or `toCard`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs12: Option<std::path::PathBuf>,
    /// The card (the key owner's, in a reader the controller reaches) whose retired slots get
    /// the keys (or `pkcs12`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_card: Option<String>,
    /// Recorded in the audit entries, for a mail gateway to tell the key's owner.
    #[serde(default)]
    pub notify_owner: bool,
}

/// The key id of a public key (its SubjectPublicKeyInfo DER).
pub fn key_id(spki_der: &[u8]) -> String {
    hex::encode(Sha256::digest(spki_der))
}

/// The key id of a certificate's public key: the one recorded, else from its PEM.
pub fn cert_key_id(cert: &CertRecord) -> Option<String> {
    if let Some(id) = &cert.key_id {
        return Some(id.clone());
    }
    der_key_id(&cert.der()?)
}

/// The key id of a certificate's public key, from its DER.
pub fn der_key_id(der: &[u8]) -> Option<String> {
    use der::{Decode, Encode};
    let parsed = x509_cert::Certificate::from_der(der).ok()?;
    let spki = parsed
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .ok()?;
    Some(key_id(&spki))
}

/// Where a key to archive comes from.
pub struct NewKey<'a> {
    /// The holder.
    pub user: &'a str,
    /// The template.
    pub template: &'a str,
    /// The slot.
    pub slot: Slot,
    /// The card.
    pub card: &'a str,
    /// The algorithm.
    pub key_algorithm: KeyAlgorithm,
    /// Its public key, SubjectPublicKeyInfo DER.
    pub spki_der: &'a [u8],
    /// The private key, PKCS#8 DER.
    pub pkcs8: &'a [u8],
}

/// Archives a key: a fresh data key encrypts it, the archive key wraps the data key; the
/// record is flushed before this returns.
pub fn archive(
    store: &Store,
    archive_key: &MasterKey,
    key: &NewKey<'_>,
    now: OffsetDateTime,
) -> Result<ArchiveRecord, ArchiveError> {
    let id = key_id(key.spki_der);
    let data_key = Zeroizing::new(rand::random::<[u8; 32]>());
    let nonce: [u8; 12] = rand::random();
    let cipher = Aes256Gcm::new_from_slice(data_key.as_slice())
        .map_err(|_| ArchiveError::Unwrap(id.clone()))?;
    let encrypted_key = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: key.pkcs8,
                aad: aad(&id).as_bytes(),
            },
        )
        .map_err(|_| ArchiveError::Unwrap(id.clone()))?;
    let record = ArchiveRecord {
        key_id: id.clone(),
        user: key.user.to_string(),
        template: key.template.to_string(),
        slot: key.slot,
        card: key.card.to_string(),
        key_algorithm: key.key_algorithm,
        archived_at: now,
        wrapped_data_key: archive_key.seal(aad(&id).as_bytes(), data_key.as_slice()),
        nonce: nonce.to_vec(),
        encrypted_key,
    };
    let bytes =
        serde_json::to_vec(&record).map_err(|e| ArchiveError::Decode(id.clone(), e.to_string()))?;
    store.put_archive_record(&id, &bytes)?;
    Ok(record)
}

fn key_algorithm(alg: crate::card::keys::KeyAlg) -> KeyAlgorithm {
    use crate::card::keys::KeyAlg;
    match alg {
        KeyAlg::EccP256 => KeyAlgorithm::EccP256,
        KeyAlg::EccP384 => KeyAlgorithm::EccP384,
        KeyAlg::Rsa2048 => KeyAlgorithm::Rsa2048,
        KeyAlg::Rsa3072 => KeyAlgorithm::Rsa3072,
    }
}

fn aad(key_id: &str) -> String {
    format!("keyfleet-archive-v1|{key_id}")
}

/// The private key of a record (PKCS#8 DER), in memory only.
pub fn open_key(
    archive_key: &MasterKey,
    record: &ArchiveRecord,
) -> Result<Zeroizing<Vec<u8>>, ArchiveError> {
    let id = &record.key_id;
    let data_key = archive_key
        .open(aad(id).as_bytes(), &record.wrapped_data_key)
        .map_err(|_| ArchiveError::Unwrap(id.clone()))?;
    let cipher =
        Aes256Gcm::new_from_slice(&data_key).map_err(|_| ArchiveError::Unwrap(id.clone()))?;
    let nonce: [u8; 12] = record
        .nonce
        .as_slice()
        .try_into()
        .map_err(|_| ArchiveError::Unwrap(id.clone()))?;
    cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &record.encrypted_key,
                aad: aad(id).as_bytes(),
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| ArchiveError::Unwrap(id.clone()))
}

/// Every archive record, oldest first.
pub fn records(store: &Store) -> Result<Vec<ArchiveRecord>, ArchiveError> {
    let mut out = Vec::new();
    for (id, bytes) in store.archive_records()? {
        let r: ArchiveRecord = serde_json::from_slice(&bytes)
            .map_err(|e| ArchiveError::Decode(id.clone(), e.to_string()))?;
        out.push(r);
    }
    out.sort_by(|a, b| (a.archived_at, &a.key_id).cmp(&(b.archived_at, &b.key_id)));
    Ok(out)
}

/// The records with the certificate each belongs to (joined by public key), newest first.
pub fn with_certificates<'a>(
    records: &'a [ArchiveRecord],
    inventory: &'a Inventory,
) -> Vec<(&'a ArchiveRecord, Option<&'a CertRecord>)> {
    let mut by_key: std::collections::BTreeMap<String, &CertRecord> = Default::default();
    for cert in inventory.certs.values() {
        if let Some(id) = cert_key_id(cert) {
            by_key.insert(id, cert);
        }
    }
    let mut out: Vec<_> = records
        .iter()
        .map(|r| (r, by_key.get(&r.key_id).copied()))
        .collect();
    out.sort_by(|a, b| (b.0.archived_at, &b.0.key_id).cmp(&(a.0.archived_at, &a.0.key_id)));
    out
}

/// The view `keyfleet keys list` prints.
pub fn view(record: &ArchiveRecord, cert: Option<&CertRecord>) -> ArchivedKey {
    use crate::views::rfc3339;
    ArchivedKey {
        serial: cert.map(|c| c.serial.clone()),
        user: record.user.clone(),
        template: record.template.clone(),
        slot: record.slot.hex().to_string(),
        card: record.card.clone(),
        not_before: cert.map(|c| rfc3339(c.not_before)),
        not_after: cert.map(|c| rfc3339(c.not_after)),
        archived_at: rfc3339(record.archived_at),
        key_id: record.key_id.clone(),
    }
}

/// Moves keys older Keyfleet sealed under the master key (`archive/CARD/SLOT/…` secrets)
/// into the archive: each is decrypted, archived under its own data key with the holder and
/// template its card records, then its old secret removed. Returns how many were moved.
pub fn migrate(
    store: &Store,
    master: &MasterKey,
    archive_key: &MasterKey,
    now: OffsetDateTime,
) -> Result<usize, ArchiveError> {
    let mut moved = 0;
    for name in store.secret_names("archive/")? {
        let Some(sealed) = store.secret(&name)? else {
            continue;
        };
        let Ok(pkcs8) = master.open(name.as_bytes(), &sealed) else {
            tracing::warn!("secret {name} does not open with the master key: left as it is");
            continue;
        };
        let mut parts = name.split('/').skip(1);
        let (Some(card), Some(slot)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(slot) = Slot::from_hex(slot) else {
            continue;
        };
        let Some((alg, public)) = crate::card::keys::public_of_pkcs8(&pkcs8) else {
            tracing::warn!("secret {name} is not a key Keyfleet can read: left as it is");
            continue;
        };
        let spki = public.spki_der().to_vec();
        let record = store.card(card)?;
        let certs = store.certs_of_card(card)?;
        let id = key_id(&spki);
        let cert = certs
            .iter()
            .find(|c| cert_key_id(c).as_deref() == Some(id.as_str()));
        let user = cert
            .map(|c| c.user.clone())
            .or_else(|| record.as_ref().and_then(|r| r.user.clone()))
            .unwrap_or_default();
        let template = cert
            .map(|c| c.template.clone())
            .or_else(|| record.as_ref().and_then(|r| r.template.clone()))
            .unwrap_or_default();
        archive(
            store,
            archive_key,
            &NewKey {
                user: &user,
                template: &template,
                slot,
                card,
                key_algorithm: key_algorithm(alg),
                spki_der: &spki,
                pkcs8: &pkcs8,
            },
            now,
        )?;
        store.remove_secret(&name)?;
        moved += 1;
    }
    Ok(moved)
}

#[cfg(test)]
mod tests;
