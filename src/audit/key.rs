//! The audit key: the ECDSA P-256 key that signs the audit log's checkpoints, kept like the
//! master key. With the file key store it is generated on first use and kept in
//! `<state>/audit/signing.key`, sealed by the master key (mode 0600); when `Settings.keyStore`
//! names a PKCS#11 token, it is the key pair labelled `<object>-audit` on that token
//! (generated there, never extractable).

use std::path::{Path, PathBuf};

use rcgen::{KeyPair, PublicKeyData as _, SigningKey as _};

use crate::card::keys::KeyAlg;
use crate::keystore::{KeyStore, KeyStoreError, TokenKey};
use crate::secrets::{MasterKey, SecretError};

/// The sealed software key, inside the audit folder.
pub const SIGNING_KEY_FILE: &str = "signing.key";
/// Associated data the software key is sealed under.
const SEAL_AAD: &[u8] = b"keyfleet-audit-signing-key-v1";

/// The audit key could not be loaded, made or used.
#[derive(Debug, thiserror::Error)]
pub enum AuditKeyError {
    /// The sealed key file could not be read or written.
    #[error("audit key {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The sealed key file does not open with this master key.
    #[error("audit key {}: {source}", path.display())]
    Sealed {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: SecretError,
    },
    /// The key file opened but holds no P-256 key.
    #[error("audit key {}: not a P-256 key ({message})", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
    /// The token holding the key could not be used.
    #[error("audit key: {0}")]
    Token(#[from] KeyStoreError),
    /// The key failed to sign.
    #[error("audit key: signing failed: {0}")]
    Sign(String),
}

/// The key that signs checkpoints.
pub enum AuditKey {
    /// A software key, sealed in the state directory.
    Software(KeyPair),
    /// A key pair on a PKCS#11 token.
    Token(TokenKey),
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditKey::Software(_) => f.write_str("AuditKey::Software"),
            AuditKey::Token(k) => f.debug_tuple("AuditKey::Token").field(&k.uri()).finish(),
        }
    }
}

impl AuditKey {
    /// Loads the audit key from where `store` (the Settings' `keyStore`) keeps keys, creating
    /// it on first use.
    pub fn load_or_create(
        store: &KeyStore,
        state_dir: &Path,
        master: &MasterKey,
    ) -> Result<AuditKey, AuditKeyError> {
        Self::load_with(store, state_dir, master, true)
    }

    /// Loads the audit key; `Ok(None)` when it was never made (for commands that only read).
    pub fn load(
        store: &KeyStore,
        state_dir: &Path,
        master: &MasterKey,
    ) -> Result<Option<AuditKey>, AuditKeyError> {
        if let KeyStore::File = store
            && !state_dir
                .join(super::AUDIT_DIR)
                .join(SIGNING_KEY_FILE)
                .exists()
        {
            return Ok(None);
        }
        Self::load_with(store, state_dir, master, false).map(Some)
    }

    fn load_with(
        store: &KeyStore,
        state_dir: &Path,
        master: &MasterKey,
        create: bool,
    ) -> Result<AuditKey, AuditKeyError> {
        match store {
            KeyStore::File => Self::software(&state_dir.join(super::AUDIT_DIR), master),
            KeyStore::Pkcs11(uri) => {
                let mut uri = (**uri).clone();
                uri.object = Some(format!(
                    "{}-audit",
                    uri.object.as_deref().unwrap_or("keyfleet")
                ));
                uri.id = None;
                Ok(AuditKey::Token(TokenKey::open(
                    &uri,
                    KeyAlg::EccP256,
                    create,
                )?))
            }
        }
    }

    fn software(dir: &Path, master: &MasterKey) -> Result<AuditKey, AuditKeyError> {
        let path = dir.join(SIGNING_KEY_FILE);
        let io = |source| AuditKeyError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::read(&path) {
            Ok(sealed) => {
                let pkcs8 =
                    master
                        .open(SEAL_AAD, &sealed)
                        .map_err(|source| AuditKeyError::Sealed {
                            path: path.clone(),
                            source,
                        })?;
                let key = KeyPair::from_pkcs8_der_and_sign_algo(
                    &pkcs8.as_slice().into(),
                    &rcgen::PKCS_ECDSA_P256_SHA256,
                )
                .map_err(|e| AuditKeyError::Malformed {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                Ok(AuditKey::Software(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                crate::fsutil::ensure_private_dir(dir)
                    .map_err(|e| io(std::io::Error::other(e.to_string())))?;
                let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .map_err(|e| AuditKeyError::Sign(e.to_string()))?;
                let pkcs8 = zeroize::Zeroizing::new(key.serialize_der());
                write_new(&path, &master.seal(SEAL_AAD, &pkcs8)).map_err(io)?;
                Ok(AuditKey::Software(key))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The public key, as DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Vec<u8> {
        match self {
            AuditKey::Software(k) => k.subject_public_key_info(),
            AuditKey::Token(k) => k.subject_public_key_info(),
        }
    }

    /// The public key, PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn public_pem(&self) -> String {
        let b64 = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(self.spki_der())
        };
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(chunk));
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        pem
    }

    /// Signs `msg` (ECDSA P-256 with SHA-256); the signature is DER.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, AuditKeyError> {
        match self {
            AuditKey::Software(k) => k.sign(msg),
            AuditKey::Token(k) => k.sign(msg),
        }
        .map_err(|e| AuditKeyError::Sign(e.to_string()))
    }
}

/// Writes a new file of its owner's alone, durably; never replaces one (two processes racing
/// to make the key: the loser fails, and its next start loads the winner's).
fn write_new(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// The `keyId` of a public key: lowercase hex SHA-256 of its DER SubjectPublicKeyInfo.
pub fn key_id(spki_der: &[u8]) -> String {
    super::sha256_hex(spki_der)
}
