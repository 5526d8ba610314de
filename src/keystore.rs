//! Where Keyfleet's own keys live: the master key (Settings `keyStore`) and the local CA's
//! signing key (CertificateAuthority `local.keyStore`): in the state directory (`file`, the
//! default) or on a PKCS#11 token (`pkcs11:` URI, RFC 7512).
//!
//! ```text
//!   keyStore: pkcs11:token=keyfleet;object=kf-master?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=env:KEYFLEET_HSM_PIN
//!
//!   master key   AES-256 key `object` on the token (sensitive, never extractable) wraps the
//!                32-byte data key: <state>/master.key.p11 = 0x01 | IV | AES-GCM by the token.
//!                Without the token the file is useless; with it, MasterKey works as before.
//!   CA key       EC key pair `object` on the token; [`TokenKey`] is an rcgen SigningKey that
//!                has the token sign (hash in software).
//! ```
//!
//! The token's key never leaves it; the master key's 32-byte *data* key is unwrapped by the
//! token into memory for the life of the process (envelope encryption), so sealing, opening and
//! diversifying behave exactly as with the file store. This module does not seal secrets itself
//! (see [`crate::secrets`]) and does not sign certificates (the CA does, with a [`TokenKey`]).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rand::Rng as _;
use zeroize::Zeroizing;

use crate::card::keys::{KeyAlg, PublicKey};
use crate::card::pkcs11::{self, Module, P11Error, Pkcs11Uri, Token, UriError};
use crate::secrets::MasterKey;

/// File (in the state directory) holding the data key wrapped by the token.
pub const WRAPPED_MASTER_KEY_FILE: &str = "master.key.p11";

const WRAP_V1: u8 = 1;
const WRAP_AAD: &[u8] = b"keyfleet-master-key-v1";

/// A key store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// The `keyStore` value is neither `file` nor a `pkcs11:` URI.
    #[error("keyStore {0:?} is neither `file` nor a pkcs11: URI")]
    Unknown(String),
    /// The URI does not parse.
    #[error("keyStore URI: {0}")]
    Uri(#[from] UriError),
    /// The URI names no module.
    #[error("keyStore {0}: the URI needs ?module-path=<PKCS#11 module>")]
    NoModule(String),
    /// The URI names no object.
    #[error("keyStore {0}: the URI needs object=<label>")]
    NoObject(String),
    /// The PIN could not be read.
    #[error("keyStore {uri}: cannot read the PIN ({message})")]
    Pin {
        /// The URI (without a pin-value).
        uri: String,
        /// Why.
        message: String,
    },
    /// The token refused or failed.
    #[error("keyStore {uri}: {source}")]
    Token {
        /// The URI (without a pin-value).
        uri: String,
        /// What failed.
        #[source]
        source: P11Error,
    },
    /// The wrapped master key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A `pkcs11:` secret reference names something other than a data object.
    #[error("{0}: a pkcs11: secret reference names a data object (type=data or no type)")]
    NotData(String),
    /// No data object, or more than one, matches the URI.
    #[error("{uri}: {found} data objects match (exactly one must)")]
    DataObjects {
        /// The URI (without a pin-value).
        uri: String,
        /// How many matched.
        found: usize,
    },
    /// The wrapped master key file is damaged or was wrapped by another token key.
    #[error("{0}: not a master key wrapped by this token key")]
    Wrapped(PathBuf),
}

/// Where a key lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStore {
    /// In the state directory (the default).
    File,
    /// On a PKCS#11 token.
    Pkcs11(Box<Pkcs11Uri>),
}

impl KeyStore {
    /// Parses a `keyStore` value: absent or `file`, or a `pkcs11:` URI naming the module and
    /// the object.
    pub fn parse(value: Option<&str>) -> Result<Self, KeyStoreError> {
        match value {
            None | Some("file") => Ok(KeyStore::File),
            Some(v) if v.starts_with("pkcs11:") => {
                let uri = Pkcs11Uri::parse(v)?;
                if uri.module_path.is_none() {
                    return Err(KeyStoreError::NoModule(uri.to_string()));
                }
                if uri.object.is_none() {
                    return Err(KeyStoreError::NoObject(uri.to_string()));
                }
                Ok(KeyStore::Pkcs11(Box::new(uri)))
            }
            Some(v) => Err(KeyStoreError::Unknown(v.to_string())),
        }
    }
}

/// The PIN a URI gives: `pin-value`, else `pin-source` (`env:NAME`, `file:/path` or a path).
fn pin_of(uri: &Pkcs11Uri) -> Result<String, KeyStoreError> {
    let err = |message: String| KeyStoreError::Pin {
        uri: uri.to_string(),
        message,
    };
    if let Some(v) = &uri.pin_value {
        return Ok(v.clone());
    }
    let source = uri
        .pin_source
        .as_deref()
        .ok_or_else(|| err("the URI has no pin-source or pin-value".into()))?;
    let pin = if let Some(name) = source.strip_prefix("env:") {
        std::env::var(name).map_err(|_| err(format!("environment variable {name} is not set")))?
    } else {
        let path = source.strip_prefix("file:").unwrap_or(source);
        std::fs::read_to_string(path)
            .map_err(|e| err(format!("{path}: {e}")))?
            .trim_end_matches(['\r', '\n'])
            .to_string()
    };
    if pin.is_empty() {
        return Err(err("the PIN is empty".into()));
    }
    Ok(pin)
}

/// Opens the token a URI names and logs in as the user.
pub fn open_token(uri: &Pkcs11Uri) -> Result<Token, KeyStoreError> {
    let tok = |source| KeyStoreError::Token {
        uri: uri.to_string(),
        source,
    };
    let module_path = uri
        .module_path
        .as_deref()
        .ok_or_else(|| KeyStoreError::NoModule(uri.to_string()))?;
    let module = Module::open(module_path).map_err(tok)?;
    let info = module.token_for(uri).map_err(tok)?;
    let token = module.open_token(&info.serial).map_err(tok)?;
    token.login_user(&pin_of(uri)?).map_err(tok)?;
    Ok(token)
}

/// Checks a `pkcs11:` secret reference without touching the token: it parses, names the
/// module (`?module-path=`), the object (`object=` label or `id=`), and no type but `data`.
pub fn check_data_object_uri(text: &str) -> Result<Pkcs11Uri, KeyStoreError> {
    let uri = Pkcs11Uri::parse(text)?;
    if uri.module_path.is_none() {
        return Err(KeyStoreError::NoModule(uri.to_string()));
    }
    if uri.object.is_none() && uri.id.is_none() {
        return Err(KeyStoreError::NoObject(uri.to_string()));
    }
    if uri
        .object_type
        .is_some_and(|t| t != pkcs11::ObjectType::Data)
    {
        return Err(KeyStoreError::NotData(uri.to_string()));
    }
    Ok(uri)
}

/// Reads the value (CKA_VALUE) of the one data object (CKO_DATA) a `pkcs11:` secret reference
/// names, by label and/or id. With a `pin-source` or `pin-value` it logs in as the user first
/// (private data objects), refusing when one more wrong PIN would lock the token.
pub fn read_data_object(text: &str) -> Result<Zeroizing<Vec<u8>>, KeyStoreError> {
    use cryptoki::object::{Attribute, AttributeType, ObjectClass};
    let uri = check_data_object_uri(text)?;
    let tok = |source| KeyStoreError::Token {
        uri: uri.to_string(),
        source,
    };
    let token = if uri.pin_value.is_some() || uri.pin_source.is_some() {
        open_token(&uri)?
    } else {
        let module_path = uri
            .module_path
            .as_deref()
            .ok_or_else(|| KeyStoreError::NoModule(uri.to_string()))?;
        let module = Module::open(module_path).map_err(tok)?;
        let info = module.token_for(&uri).map_err(tok)?;
        module.open_token(&info.serial).map_err(tok)?
    };
    let call = |op: &'static str| {
        let serial = token.serial().to_string();
        move |source| tok(P11Error::Call { serial, op, source })
    };
    // A session of our own (the login above is the application's, shared by its sessions).
    let session = token
        .module()
        .context()
        .open_ro_session(token.info().slot)
        .map_err(call("C_OpenSession"))?;
    let mut template = vec![Attribute::Class(ObjectClass::DATA)];
    if let Some(label) = &uri.object {
        template.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        template.push(Attribute::Id(id.clone()));
    }
    let found = session
        .find_objects(&template)
        .map_err(call("C_FindObjects"))?;
    let [handle] = found.as_slice() else {
        return Err(KeyStoreError::DataObjects {
            uri: uri.to_string(),
            found: found.len(),
        });
    };
    let attrs = session
        .get_attributes(*handle, &[AttributeType::Value])
        .map_err(call("C_GetAttributeValue"))?;
    let value = attrs.into_iter().find_map(|a| match a {
        Attribute::Value(v) => Some(Zeroizing::new(v)),
        _ => None,
    });
    value.ok_or(KeyStoreError::DataObjects {
        uri: uri.to_string(),
        found: 0,
    })
}

/// Loads the master key from `store`: the file store as [`MasterKey::load_or_create`] does;
/// on a token, the data key in `<state_dir>/master.key.p11` decrypted by the token's AES key
/// (both created on first use).
pub fn master_key(store: &KeyStore, state_dir: &Path) -> Result<MasterKey, KeyStoreError> {
    let uri = match store {
        KeyStore::File => {
            return MasterKey::load_or_create(state_dir).map_err(|e| KeyStoreError::Io {
                path: state_dir.join(crate::secrets::MASTER_KEY_FILE),
                source: std::io::Error::other(e.to_string()),
            });
        }
        KeyStore::Pkcs11(uri) => uri,
    };
    token_data_key(uri, &state_dir.join(WRAPPED_MASTER_KEY_FILE), WRAP_AAD)
}

/// File (in the state directory) of the archive key (`Settings.spec.archive.keyStore: file`).
pub const ARCHIVE_KEY_FILE: &str = "archive.key";
/// File (in the state directory) of the archive key's data key wrapped by the token.
pub const WRAPPED_ARCHIVE_KEY_FILE: &str = "archive.key.p11";
const ARCHIVE_WRAP_AAD: &[u8] = b"keyfleet-archive-key-v1";

/// Loads the archive key (the key that wraps every archived key's own data key; never the
/// master key) from `store`, like the master key: `<state_dir>/archive.key` (0600, created on
/// first use) for `file`; on a token, the data key in `<state_dir>/archive.key.p11`
/// decrypted by the token's AES key `object` (a different object from the master key's).
pub fn archive_key(store: &KeyStore, state_dir: &Path) -> Result<MasterKey, KeyStoreError> {
    match store {
        KeyStore::File => {
            let path = state_dir.join(ARCHIVE_KEY_FILE);
            MasterKey::load_or_create_at(&path).map_err(|e| KeyStoreError::Io {
                path,
                source: std::io::Error::other(e.to_string()),
            })
        }
        KeyStore::Pkcs11(uri) => token_data_key(
            uri,
            &state_dir.join(WRAPPED_ARCHIVE_KEY_FILE),
            ARCHIVE_WRAP_AAD,
        ),
    }
}

/// A 32-byte data key kept in `path`, encrypted by the token's AES key the URI names (both
/// created on first use).
fn token_data_key(uri: &Pkcs11Uri, path: &Path, aad: &[u8]) -> Result<MasterKey, KeyStoreError> {
    let state_dir = path.parent().unwrap_or(Path::new("."));
    let label = uri
        .object
        .as_deref()
        .ok_or_else(|| KeyStoreError::NoObject(uri.to_string()))?;
    let tok = |source| KeyStoreError::Token {
        uri: uri.to_string(),
        source,
    };
    let token = open_token(uri)?;
    let path = path.to_path_buf();
    let io = |source| KeyStoreError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::read(&path) {
        Ok(blob) => {
            let key = token.secret_key(label).map_err(tok)?.ok_or_else(|| {
                tok(P11Error::NoObject {
                    serial: token.serial().to_string(),
                    what: "AES key",
                    id: label.to_string(),
                })
            })?;
            let (iv, ct) = match blob.split_first() {
                Some((&WRAP_V1, rest)) if rest.len() > 12 => rest.split_at(12),
                _ => return Err(KeyStoreError::Wrapped(path)),
            };
            let iv: [u8; 12] = iv
                .try_into()
                .map_err(|_| KeyStoreError::Wrapped(path.clone()))?;
            let plain = Zeroizing::new(
                token
                    .aes_gcm_decrypt(key, &iv, aad, ct)
                    .map_err(|_| KeyStoreError::Wrapped(path.clone()))?,
            );
            let bytes: [u8; 32] = plain
                .as_slice()
                .try_into()
                .map_err(|_| KeyStoreError::Wrapped(path.clone()))?;
            Ok(MasterKey::from_bytes(bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = match token.secret_key(label).map_err(tok)? {
                Some(k) => k,
                None => token.generate_aes_key(label).map_err(tok)?,
            };
            let mut data = Zeroizing::new([0u8; 32]);
            rand::rng().fill_bytes(data.as_mut_slice());
            let mut iv = [0u8; 12];
            rand::rng().fill_bytes(&mut iv);
            let ct = token
                .aes_gcm_encrypt(key, &iv, aad, data.as_slice())
                .map_err(tok)?;
            let mut blob = vec![WRAP_V1];
            blob.extend_from_slice(&iv);
            blob.extend_from_slice(&ct);
            std::fs::create_dir_all(state_dir).map_err(io)?;
            // create_new: two processes racing never overwrite each other's key.
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(io)?;
            f.write_all(&blob).map_err(io)?;
            f.sync_all().map_err(io)?;
            Ok(MasterKey::from_bytes(*data))
        }
        Err(e) => Err(io(e)),
    }
}

/// A signing key on a token, usable by rcgen (the local CA's key). Holds its own session.
pub struct TokenKey {
    token: Mutex<Token>,
    id: Vec<u8>,
    public: PublicKey,
    uri: String,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

impl TokenKey {
    /// The key pair labelled `object` on the token `uri` names; generated there (sensitive,
    /// never extractable) when `generate` and no such key exists.
    pub fn open(uri: &Pkcs11Uri, alg: KeyAlg, generate: bool) -> Result<TokenKey, KeyStoreError> {
        let label = uri
            .object
            .clone()
            .ok_or_else(|| KeyStoreError::NoObject(uri.to_string()))?;
        let tok = |source| KeyStoreError::Token {
            uri: uri.to_string(),
            source,
        };
        let token = open_token(uri)?;
        // The CKA_ID of a CA key is the SHA-256 of its label's bytes, truncated: stable, and
        // apart from the one-byte slot ids of issued tokens.
        let id = uri.id.clone().unwrap_or_else(|| {
            use sha2::Digest as _;
            sha2::Sha256::digest(label.as_bytes())
                .get(..8)
                .unwrap_or_default()
                .to_vec()
        });
        let public = match token.public_key(&id, alg).map_err(tok)? {
            Some(p) => p,
            None if generate => token.generate_key_pair(&id, &label, alg).map_err(tok)?,
            None => {
                return Err(tok(P11Error::NoObject {
                    serial: token.serial().to_string(),
                    what: "key pair",
                    id: hex::encode(&id),
                }));
            }
        };
        Ok(TokenKey {
            token: Mutex::new(token),
            id,
            public,
            uri: uri.to_string(),
        })
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The URI, for messages.
    pub fn uri(&self) -> &str {
        &self.uri
    }
}

impl rcgen::PublicKeyData for TokenKey {
    fn der_bytes(&self) -> &[u8] {
        self.public.raw_bytes()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        pkcs11::rcgen_algorithm(self.public.alg())
    }
}

impl rcgen::SigningKey for TokenKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let token = self
            .token
            .lock()
            .map_err(|_| rcgen::Error::RemoteKeyError)?;
        token
            .sign(&self.id, self.public.alg(), msg)
            .map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_key_store_values() {
        assert_eq!(KeyStore::parse(None).unwrap(), KeyStore::File);
        assert_eq!(KeyStore::parse(Some("file")).unwrap(), KeyStore::File);
        assert!(matches!(
            KeyStore::parse(Some("vault")),
            Err(KeyStoreError::Unknown(_))
        ));
        assert!(matches!(
            KeyStore::parse(Some("pkcs11:token=a;object=k")),
            Err(KeyStoreError::NoModule(_))
        ));
        assert!(matches!(
            KeyStore::parse(Some("pkcs11:token=a?module-path=/m.so")),
            Err(KeyStoreError::NoObject(_))
        ));
        let KeyStore::Pkcs11(uri) = KeyStore::parse(Some(
            "pkcs11:token=a;object=k?module-path=/m.so&pin-value=1234",
        ))
        .unwrap() else {
            panic!("not a token store");
        };
        assert_eq!(pin_of(&uri).unwrap(), "1234");
    }
}
