//! PKCS#11 tokens through the cryptoki crate: the module (dlopened once per process), token
//! discovery by serial or label, token and PIN initialisation, key pairs generated on the
//! token, signatures by the token, certificate objects, secret keys and AES-GCM by the token.
//!
//! ```text
//!   Module (libsofthsm2.so, opensc-pkcs11.so, a vendor HSM) ──► tokens() / token(serial)
//!        └─► Token (one R/W session) ──► login, keys (CKA_ID per slot), certs, AES-GCM
//!   TokenSigner: an rcgen SigningKey over a token key (hash in software, CKM_ECDSA/RSA_PKCS)
//! ```
//!
//! Tokens are always found by serial (or label), never by slot number: SoftHSM moves a token to
//! a new slot when it is initialised. `CKA_EC_POINT` is read DER-wrapped or raw; ECDSA is asked
//! of the token on a hash computed here, since many tokens (SoftHSM) lack `CKM_ECDSA_SHA256`.
//!
//! This module knows nothing of users, templates, the inventory or the journal: callers decide
//! what goes on a token. It does not decide PINs (the executors do).

mod objects;
pub mod uri;
pub mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, CertificateType, KeyType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use sha2::Digest as _;

use super::keys::{KeyAlg, PrivateKeyMaterial, PublicKey};

pub use objects::{return_code, rv_name};
pub use uri::{ObjectType, Pkcs11Uri, UriError};

/// Card ids of PKCS#11 tokens are this prefix and the token serial.
pub const CARD_PREFIX: &str = "p11-";

/// DER of the P-256 curve OID (CKA_EC_PARAMS).
const EC_PARAMS_P256: [u8; 10] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
/// DER of the P-384 curve OID (CKA_EC_PARAMS).
const EC_PARAMS_P384: [u8; 7] = [0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22];
/// DER prefix of DigestInfo for SHA-256 (RFC 8017 §9.2, note 1).
const DIGEST_INFO_SHA256: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0D, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// A token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum P11Error {
    /// The module could not be loaded or initialised.
    #[error("PKCS#11 module {path}: {source}")]
    Load {
        /// The module path.
        path: PathBuf,
        /// Why.
        #[source]
        source: CkError,
    },
    /// A PKCS#11 call failed.
    #[error("token {serial}: {op} failed: {source}")]
    Call {
        /// Token serial (`*` for module-wide calls).
        serial: String,
        /// What was attempted.
        op: &'static str,
        /// The module's answer.
        #[source]
        source: CkError,
    },
    /// No token with this serial (or label) is present.
    #[error("token {0} is not present")]
    NotPresent(String),
    /// The PIN was refused.
    #[error("token {serial}: wrong {who} PIN ({state})")]
    WrongPin {
        /// Token serial.
        serial: String,
        /// `user` or `SO`.
        who: &'static str,
        /// What the token says of its retry counter.
        state: String,
    },
    /// The PIN is locked (too many wrong tries).
    #[error("token {serial}: the {who} PIN is locked")]
    PinLocked {
        /// Token serial.
        serial: String,
        /// `user` or `SO`.
        who: &'static str,
    },
    /// One more wrong PIN would lock the token: Keyfleet does not try.
    #[error(
        "token {0}: the user PIN is on its final try; Keyfleet will not risk locking it (reset it with the SO PIN)"
    )]
    FinalTry(String),
    /// No key with this id is on the token.
    #[error("token {serial}: no {what} with id {id}")]
    NoObject {
        /// Token serial.
        serial: String,
        /// Which kind of object.
        what: &'static str,
        /// The CKA_ID in hex.
        id: String,
    },
    /// The token returned a public key or signature Keyfleet cannot use.
    #[error("token {serial}: {message}")]
    BadData {
        /// Token serial.
        serial: String,
        /// What is wrong.
        message: String,
    },
    /// The token label is too long (32 bytes at most).
    #[error("token label {0:?} is longer than 32 bytes")]
    LabelTooLong(String),
}

/// Where each token serial was last seen: a hint, always checked against the token's serial.
type SlotCache = Arc<Mutex<HashMap<String, Slot>>>;

/// The process-wide module contexts: C_Initialize may run only once per module and process.
fn modules() -> &'static Mutex<HashMap<PathBuf, (Pkcs11, SlotCache)>> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, (Pkcs11, SlotCache)>>> = OnceLock::new();
    MODULES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// What Keyfleet reads of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The slot it sits in now (changes on initialisation: never keep it).
    pub slot: Slot,
    /// Serial number (trimmed).
    pub serial: String,
    /// Label (trimmed).
    pub label: String,
    /// The user PIN is set.
    pub user_pin_initialized: bool,
    /// Wrong user PINs were entered since the last good one.
    pub user_pin_count_low: bool,
    /// The next wrong user PIN locks it.
    pub user_pin_final_try: bool,
    /// The user PIN is locked.
    pub user_pin_locked: bool,
}

impl TokenInfo {
    /// The Keyfleet card id of this token.
    pub fn card_id(&self) -> String {
        card_id(&self.serial)
    }

    fn pin_state(&self) -> String {
        if self.user_pin_locked {
            "the PIN is now locked".into()
        } else if self.user_pin_final_try {
            "one try left before the PIN locks".into()
        } else if self.user_pin_count_low {
            "the token counts failed tries".into()
        } else {
            "the token reports no failed tries".into()
        }
    }
}

/// The card id of the token with `serial`.
pub fn card_id(serial: &str) -> String {
    format!("{CARD_PREFIX}{serial}")
}

/// The token serial a card id names, if it is a PKCS#11 card id.
pub fn serial_of(card: &str) -> Option<&str> {
    card.strip_prefix(CARD_PREFIX).filter(|s| !s.is_empty())
}

/// A loaded PKCS#11 module.
#[derive(Clone, Debug)]
pub struct Module {
    ctx: Pkcs11,
    path: PathBuf,
    slots: SlotCache,
}

impl Module {
    /// Loads and initialises the module at `path`, or returns the context already loaded by
    /// this process.
    pub fn open(path: &Path) -> Result<Module, P11Error> {
        let load = |source| P11Error::Load {
            path: path.to_path_buf(),
            source,
        };
        let mut map = modules().lock().unwrap_or_else(|p| p.into_inner());
        if let Some((ctx, slots)) = map.get(path) {
            return Ok(Module {
                ctx: ctx.clone(),
                path: path.to_path_buf(),
                slots: slots.clone(),
            });
        }
        let ctx = Pkcs11::new(path).map_err(load)?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(load(e)),
        }
        let slots = SlotCache::default();
        map.insert(path.to_path_buf(), (ctx.clone(), slots.clone()));
        Ok(Module {
            ctx,
            path: path.to_path_buf(),
            slots,
        })
    }

    /// The module path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn context(&self) -> &Pkcs11 {
        &self.ctx
    }

    /// Every initialised token present now.
    pub fn tokens(&self) -> Result<Vec<TokenInfo>, P11Error> {
        let call = |op| {
            move |source| P11Error::Call {
                serial: "*".into(),
                op,
                source,
            }
        };
        let slots = self
            .ctx
            .get_slots_with_token()
            .map_err(call("C_GetSlotList"))?;
        let out: Vec<TokenInfo> = slots
            .into_iter()
            .filter_map(|slot| self.info(slot))
            .collect();
        let mut cache = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        cache.clear();
        cache.extend(out.iter().map(|t| (t.serial.clone(), t.slot)));
        Ok(out)
    }

    /// The initialised token in `slot`; None when there is none (or it was pulled meanwhile).
    fn info(&self, slot: Slot) -> Option<TokenInfo> {
        let info = self.ctx.get_token_info(slot).ok()?;
        info.token_initialized().then(|| TokenInfo {
            slot,
            serial: info.serial_number().trim().to_string(),
            label: info.label().trim().to_string(),
            user_pin_initialized: info.user_pin_initialized(),
            user_pin_count_low: info.user_pin_count_low(),
            user_pin_final_try: info.user_pin_final_try(),
            user_pin_locked: info.user_pin_locked(),
        })
    }

    /// The token with `serial`: first in the slot it was last seen in (listing every token
    /// costs one C_GetTokenInfo per slot, which adds up on a module with hundreds), else by a
    /// full listing.
    pub fn token(&self, serial: &str) -> Result<TokenInfo, P11Error> {
        let hint = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(serial)
            .copied();
        if let Some(info) = hint.and_then(|slot| self.info(slot))
            && info.serial == serial
        {
            return Ok(info);
        }
        self.tokens()?
            .into_iter()
            .find(|t| t.serial == serial)
            .ok_or_else(|| P11Error::NotPresent(serial.to_string()))
    }

    /// The token a URI names (by serial, else by label).
    pub fn token_for(&self, uri: &Pkcs11Uri) -> Result<TokenInfo, P11Error> {
        let tokens = self.tokens()?;
        let found = tokens.into_iter().find(|t| {
            uri.serial.as_deref().is_none_or(|s| s == t.serial)
                && uri.token.as_deref().is_none_or(|l| l == t.label)
        });
        found.ok_or_else(|| {
            P11Error::NotPresent(
                uri.serial
                    .clone()
                    .or_else(|| uri.token.clone())
                    .unwrap_or_else(|| "(any)".into()),
            )
        })
    }

    /// Initialises the token with `serial`: every object is erased, the label set, and the
    /// user PIN left unset. The SO PIN must match the one the token was first given.
    pub fn init_token(&self, serial: &str, so_pin: &str, label: &str) -> Result<(), P11Error> {
        if label.len() > 32 {
            return Err(P11Error::LabelTooLong(label.to_string()));
        }
        let info = self.token(serial)?;
        match self
            .ctx
            .init_token(info.slot, &AuthPin::from(so_pin.to_string()), label)
        {
            Ok(()) => Ok(()),
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => Err(P11Error::WrongPin {
                serial: serial.to_string(),
                who: "SO",
                state: "C_InitToken refused it".into(),
            }),
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(P11Error::PinLocked {
                serial: serial.to_string(),
                who: "SO",
            }),
            Err(source) => Err(P11Error::Call {
                serial: serial.to_string(),
                op: "C_InitToken",
                source,
            }),
        }
    }

    /// A read/write session to the token with `serial`.
    pub fn open_token(&self, serial: &str) -> Result<Token, P11Error> {
        let info = self.token(serial)?;
        let session = self
            .ctx
            .open_rw_session(info.slot)
            .map_err(|source| P11Error::Call {
                serial: serial.to_string(),
                op: "C_OpenSession",
                source,
            })?;
        Ok(Token {
            module: self.clone(),
            session,
            info,
        })
    }
}

/// An open read/write session to one token.
#[derive(Debug)]
pub struct Token {
    module: Module,
    session: Session,
    info: TokenInfo,
}

impl Token {
    /// The token as it was when the session opened.
    pub fn info(&self) -> &TokenInfo {
        &self.info
    }

    /// The token serial.
    pub fn serial(&self) -> &str {
        &self.info.serial
    }

    /// The module this token belongs to.
    pub fn module(&self) -> &Module {
        &self.module
    }

    fn call(&self, op: &'static str) -> impl FnOnce(CkError) -> P11Error + '_ {
        move |source| P11Error::Call {
            serial: self.info.serial.clone(),
            op,
            source,
        }
    }

    fn login(&self, who: UserType, pin: &str) -> Result<(), P11Error> {
        let name = if matches!(who, UserType::So) {
            "SO"
        } else {
            "user"
        };
        match self
            .session
            .login(who, Some(&AuthPin::from(pin.to_string())))
        {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                let state = self
                    .module
                    .token(&self.info.serial)
                    .map(|t| t.pin_state())
                    .unwrap_or_else(|_| "token state unknown".into());
                Err(P11Error::WrongPin {
                    serial: self.info.serial.clone(),
                    who: name,
                    state,
                })
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(P11Error::PinLocked {
                serial: self.info.serial.clone(),
                who: name,
            }),
            Err(source) => Err(P11Error::Call {
                serial: self.info.serial.clone(),
                op: "C_Login",
                source,
            }),
        }
    }

    /// Logs in as the user. Refuses to try when the token says one more wrong PIN locks it.
    pub fn login_user(&self, pin: &str) -> Result<(), P11Error> {
        let now = self.module.token(&self.info.serial)?;
        if now.user_pin_locked {
            return Err(P11Error::PinLocked {
                serial: self.info.serial.clone(),
                who: "user",
            });
        }
        if now.user_pin_final_try {
            return Err(P11Error::FinalTry(self.info.serial.clone()));
        }
        self.login(UserType::User, pin)
    }

    /// Logs in as the security officer.
    pub fn login_so(&self, so_pin: &str) -> Result<(), P11Error> {
        self.login(UserType::So, so_pin)
    }

    /// Logs out (a session not logged in is fine).
    pub fn logout(&self) -> Result<(), P11Error> {
        match self.session.logout() {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserNotLoggedIn, _)) => Ok(()),
            Err(e) => Err(self.call("C_Logout")(e)),
        }
    }

    /// Sets the user PIN (C_InitPIN); the session must be logged in as SO.
    pub fn init_user_pin(&self, pin: &str) -> Result<(), P11Error> {
        self.session
            .init_pin(&AuthPin::from(pin.to_string()))
            .map_err(self.call("C_InitPIN"))
    }

    fn find(
        &self,
        template: &[Attribute],
    ) -> Result<Vec<cryptoki::object::ObjectHandle>, P11Error> {
        self.session
            .find_objects(template)
            .map_err(self.call("C_FindObjects"))
    }

    /// Generates a key pair on the token with CKA_ID `id` and label `label`. The private key
    /// is sensitive and never extractable. Earlier objects with that id are destroyed first.
    pub fn generate_key_pair(
        &self,
        id: &[u8],
        label: &str,
        alg: KeyAlg,
    ) -> Result<PublicKey, P11Error> {
        self.destroy_keys(id)?;
        let common_private = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Id(id.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        let mut common_public = vec![
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Id(id.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        let (mechanism, private) = match alg {
            KeyAlg::EccP256 | KeyAlg::EccP384 => {
                common_public.push(Attribute::EcParams(ec_params(alg).to_vec()));
                let mut private = common_private;
                private.push(Attribute::Derive(true));
                (Mechanism::EccKeyPairGen, private)
            }
            KeyAlg::Rsa2048 | KeyAlg::Rsa3072 => {
                let bits = alg.rsa_bytes().unwrap_or(256) as u64 * 8;
                common_public.push(Attribute::ModulusBits(bits.into()));
                common_public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
                common_public.push(Attribute::Encrypt(true));
                let mut private = common_private;
                private.push(Attribute::Decrypt(true));
                (Mechanism::RsaPkcsKeyPairGen, private)
            }
        };
        let (public, _private) = self
            .session
            .generate_key_pair(&mechanism, &common_public, &private)
            .map_err(self.call("C_GenerateKeyPair"))?;
        self.read_public(public, alg)
    }

    /// Imports a private key (server-generated keys) with CKA_ID `id`, and its public key.
    pub fn import_key(
        &self,
        id: &[u8],
        label: &str,
        key: &PrivateKeyMaterial,
        public: &PublicKey,
    ) -> Result<(), P11Error> {
        self.destroy_keys(id)?;
        let mut private = vec![
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Id(id.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        let mut pubattrs = vec![
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Id(id.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        match key {
            PrivateKeyMaterial::Ec { alg, scalar } => {
                private.extend([
                    Attribute::KeyType(KeyType::EC),
                    Attribute::EcParams(ec_params(*alg).to_vec()),
                    Attribute::Value(scalar.clone()),
                    Attribute::Derive(true),
                ]);
                pubattrs.extend([
                    Attribute::KeyType(KeyType::EC),
                    Attribute::EcParams(ec_params(*alg).to_vec()),
                    Attribute::EcPoint(der_octet_string(public.raw_bytes())),
                ]);
            }
            PrivateKeyMaterial::Rsa { .. } => {
                return Err(P11Error::BadData {
                    serial: self.info.serial.clone(),
                    message: "importing RSA keys into PKCS#11 tokens is not supported".into(),
                });
            }
        }
        self.session
            .create_object(&private)
            .map_err(self.call("C_CreateObject"))?;
        self.session
            .create_object(&pubattrs)
            .map_err(self.call("C_CreateObject"))?;
        Ok(())
    }

    fn read_public(
        &self,
        handle: cryptoki::object::ObjectHandle,
        alg: KeyAlg,
    ) -> Result<PublicKey, P11Error> {
        let bad = |message: String| P11Error::BadData {
            serial: self.info.serial.clone(),
            message,
        };
        match alg {
            KeyAlg::EccP256 | KeyAlg::EccP384 => {
                let attrs = self
                    .session
                    .get_attributes(handle, &[AttributeType::EcPoint])
                    .map_err(self.call("C_GetAttributeValue"))?;
                let point = attrs
                    .into_iter()
                    .find_map(|a| match a {
                        Attribute::EcPoint(p) => Some(p),
                        _ => None,
                    })
                    .ok_or_else(|| bad("the public key has no CKA_EC_POINT".into()))?;
                let point = unwrap_ec_point(&point, alg);
                PublicKey::from_ec_point(alg, point).map_err(|e| bad(e.to_string()))
            }
            KeyAlg::Rsa2048 | KeyAlg::Rsa3072 => {
                let attrs = self
                    .session
                    .get_attributes(
                        handle,
                        &[AttributeType::Modulus, AttributeType::PublicExponent],
                    )
                    .map_err(self.call("C_GetAttributeValue"))?;
                let (mut n, mut e) = (None, None);
                for a in attrs {
                    match a {
                        Attribute::Modulus(v) => n = Some(v),
                        Attribute::PublicExponent(v) => e = Some(v),
                        _ => {}
                    }
                }
                let (n, e) = n
                    .zip(e)
                    .ok_or_else(|| bad("the public key has no modulus or exponent".into()))?;
                PublicKey::from_rsa_parts(alg, &n, &e).map_err(|e| bad(e.to_string()))
            }
        }
    }

    /// The public key with CKA_ID `id`, if there is one.
    pub fn public_key(&self, id: &[u8], alg: KeyAlg) -> Result<Option<PublicKey>, P11Error> {
        let found = self.find(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Id(id.to_vec()),
        ])?;
        match found.first() {
            Some(h) => self.read_public(*h, alg).map(Some),
            None => Ok(None),
        }
    }

    fn private_key(&self, id: &[u8]) -> Result<cryptoki::object::ObjectHandle, P11Error> {
        self.find(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(id.to_vec()),
        ])?
        .first()
        .copied()
        .ok_or_else(|| P11Error::NoObject {
            serial: self.info.serial.clone(),
            what: "private key",
            id: hex::encode(id),
        })
    }

    /// Signs `msg` with the private key `id`: the hash is computed here (SHA-256 for P-256
    /// and RSA, SHA-384 for P-384) and the token signs it (CKM_ECDSA, or CKM_RSA_PKCS over a
    /// DigestInfo). Returns what X.509 expects: a DER ECDSA-Sig-Value, or the RSA signature.
    pub fn sign(&self, id: &[u8], alg: KeyAlg, msg: &[u8]) -> Result<Vec<u8>, P11Error> {
        let key = self.private_key(id)?;
        let bad = |message: String| P11Error::BadData {
            serial: self.info.serial.clone(),
            message,
        };
        match alg {
            KeyAlg::EccP256 => {
                let raw = self
                    .session
                    .sign(&Mechanism::Ecdsa, key, &sha2::Sha256::digest(msg))
                    .map_err(self.call("C_Sign"))?;
                let sig = p256::ecdsa::Signature::from_slice(&raw)
                    .map_err(|e| bad(format!("bad ECDSA signature: {e}")))?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
            KeyAlg::EccP384 => {
                let raw = self
                    .session
                    .sign(&Mechanism::Ecdsa, key, &sha2::Sha384::digest(msg))
                    .map_err(self.call("C_Sign"))?;
                let sig = p384::ecdsa::Signature::from_slice(&raw)
                    .map_err(|e| bad(format!("bad ECDSA signature: {e}")))?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
            KeyAlg::Rsa2048 | KeyAlg::Rsa3072 => {
                let mut input = DIGEST_INFO_SHA256.to_vec();
                input.extend_from_slice(&sha2::Sha256::digest(msg));
                self.session
                    .sign(&Mechanism::RsaPkcs, key, &input)
                    .map_err(self.call("C_Sign"))
            }
        }
    }

    /// Writes an X.509 certificate object with CKA_ID `id` and label `label`, replacing any
    /// certificate with that id.
    pub fn write_certificate(&self, id: &[u8], label: &str, der: &[u8]) -> Result<(), P11Error> {
        self.destroy_class(id, ObjectClass::CERTIFICATE)?;
        let (subject, issuer, serial) = cert_fields(der).ok_or_else(|| P11Error::BadData {
            serial: self.info.serial.clone(),
            message: "the certificate does not parse".into(),
        })?;
        self.session
            .create_object(&[
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::CertificateType(CertificateType::X_509),
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Id(id.to_vec()),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Subject(subject),
                Attribute::Issuer(issuer),
                Attribute::SerialNumber(serial),
                Attribute::Value(der.to_vec()),
            ])
            .map_err(self.call("C_CreateObject"))?;
        Ok(())
    }

    /// The DER of the certificate with CKA_ID `id`, if any.
    pub fn read_certificate(&self, id: &[u8]) -> Result<Option<Vec<u8>>, P11Error> {
        let found = self.find(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Id(id.to_vec()),
        ])?;
        let Some(h) = found.first() else {
            return Ok(None);
        };
        let attrs = self
            .session
            .get_attributes(*h, &[AttributeType::Value])
            .map_err(self.call("C_GetAttributeValue"))?;
        Ok(attrs.into_iter().find_map(|a| match a {
            Attribute::Value(v) => Some(v),
            _ => None,
        }))
    }

    fn destroy_class(&self, id: &[u8], class: ObjectClass) -> Result<usize, P11Error> {
        let found = self.find(&[Attribute::Class(class), Attribute::Id(id.to_vec())])?;
        for h in &found {
            self.session
                .destroy_object(*h)
                .map_err(self.call("C_DestroyObject"))?;
        }
        Ok(found.len())
    }

    /// Destroys the key pair with CKA_ID `id`. Returns how many objects went.
    pub fn destroy_keys(&self, id: &[u8]) -> Result<usize, P11Error> {
        Ok(self.destroy_class(id, ObjectClass::PRIVATE_KEY)?
            + self.destroy_class(id, ObjectClass::PUBLIC_KEY)?)
    }

    /// Destroys the certificate with CKA_ID `id`. Returns how many objects went.
    pub fn destroy_certificate(&self, id: &[u8]) -> Result<usize, P11Error> {
        self.destroy_class(id, ObjectClass::CERTIFICATE)
    }

    /// The handle of the secret key labelled `label`, if any.
    pub fn secret_key(
        &self,
        label: &str,
    ) -> Result<Option<cryptoki::object::ObjectHandle>, P11Error> {
        Ok(self
            .find(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(label.as_bytes().to_vec()),
            ])?
            .first()
            .copied())
    }

    /// Generates a 256-bit AES key labelled `label` on the token: sensitive, never
    /// extractable, usable only to encrypt and decrypt.
    pub fn generate_aes_key(
        &self,
        label: &str,
    ) -> Result<cryptoki::object::ObjectHandle, P11Error> {
        self.session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::ValueLen(32.into()),
                    Attribute::Label(label.as_bytes().to_vec()),
                ],
            )
            .map_err(self.call("C_GenerateKey"))
    }

    /// AES-GCM encryption by the token with a 128-bit tag. `iv` must be 12 random bytes.
    pub fn aes_gcm_encrypt(
        &self,
        key: cryptoki::object::ObjectHandle,
        iv: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, P11Error> {
        let mut iv = *iv;
        let params = GcmParams::new(&mut iv, aad, 128.into()).map_err(self.call("GCM params"))?;
        self.session
            .encrypt(&Mechanism::AesGcm(params), key, plaintext)
            .map_err(self.call("C_Encrypt"))
    }

    /// AES-GCM decryption by the token; fails when the tag does not verify.
    pub fn aes_gcm_decrypt(
        &self,
        key: cryptoki::object::ObjectHandle,
        iv: &[u8; 12],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, P11Error> {
        let mut iv = *iv;
        let params = GcmParams::new(&mut iv, aad, 128.into()).map_err(self.call("GCM params"))?;
        self.session
            .decrypt(&Mechanism::AesGcm(params), key, ciphertext)
            .map_err(self.call("C_Decrypt"))
    }

    /// Reads the boolean attributes Keyfleet promises on a private key (for checks and
    /// reports): (sensitive, extractable, always sensitive, never extractable).
    pub fn private_key_flags(&self, id: &[u8]) -> Result<(bool, bool, bool, bool), P11Error> {
        let key = self.private_key(id)?;
        let attrs = self
            .session
            .get_attributes(
                key,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                ],
            )
            .map_err(self.call("C_GetAttributeValue"))?;
        let mut out = (false, true, false, false);
        for a in attrs {
            match a {
                Attribute::Sensitive(v) => out.0 = v,
                Attribute::Extractable(v) => out.1 = v,
                Attribute::AlwaysSensitive(v) => out.2 = v,
                Attribute::NeverExtractable(v) => out.3 = v,
                _ => {}
            }
        }
        Ok(out)
    }
}

fn ec_params(alg: KeyAlg) -> &'static [u8] {
    match alg {
        KeyAlg::EccP384 => &EC_PARAMS_P384,
        _ => &EC_PARAMS_P256,
    }
}

/// The SEC1 point inside CKA_EC_POINT: DER-wrapped (an OCTET STRING, as the standard says and
/// SoftHSM does) or raw (as some tokens do). Told apart by length, never by content.
fn unwrap_ec_point(value: &[u8], alg: KeyAlg) -> &[u8] {
    let raw_len = 1 + 2 * alg.ec_bytes().unwrap_or(32);
    match value {
        [0x04, len, rest @ ..] if value.len() == raw_len + 2 && *len as usize == raw_len => rest,
        _ => value,
    }
}

/// DER OCTET STRING around a short value (EC points are under 128 bytes).
fn der_octet_string(v: &[u8]) -> Vec<u8> {
    let mut out = vec![0x04];
    if v.len() < 0x80 {
        out.push(v.len() as u8);
    } else {
        out.push(0x81);
        out.push(v.len().min(255) as u8);
    }
    out.extend_from_slice(v);
    out
}

/// Subject, issuer and serial number DER of a certificate (the attributes PKCS#11 tools show).
fn cert_fields(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    use der::{Decode as _, Encode as _};
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let tbs = cert.tbs_certificate();
    Some((
        tbs.subject().to_der().ok()?,
        tbs.issuer().to_der().ok()?,
        tbs.serial_number().to_der().ok()?,
    ))
}

/// An rcgen signing key whose private half stays on a token. Borrows the token session.
pub struct TokenSigner<'a> {
    token: &'a Token,
    id: Vec<u8>,
    public: PublicKey,
}

impl std::fmt::Debug for TokenSigner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("token", &self.token.serial())
            .field("id", &hex::encode(&self.id))
            .finish_non_exhaustive()
    }
}

impl<'a> TokenSigner<'a> {
    /// A signer for the key with CKA_ID `id` whose public key is `public`.
    pub fn new(token: &'a Token, id: &[u8], public: PublicKey) -> Self {
        TokenSigner {
            token,
            id: id.to_vec(),
            public,
        }
    }
}

/// The rcgen algorithm for a key of `alg` (SHA-384 only with P-384).
pub fn rcgen_algorithm(alg: KeyAlg) -> &'static rcgen::SignatureAlgorithm {
    match alg {
        KeyAlg::EccP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyAlg::EccP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyAlg::Rsa2048 | KeyAlg::Rsa3072 => &rcgen::PKCS_RSA_SHA256,
    }
}

impl rcgen::PublicKeyData for TokenSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.public.raw_bytes()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        rcgen_algorithm(self.public.alg())
    }
}

impl rcgen::SigningKey for TokenSigner<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.token
            .sign(&self.id, self.public.alg(), msg)
            .map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_ids_round_trip() {
        assert_eq!(card_id("fb3e2f2d1656bf4a"), "p11-fb3e2f2d1656bf4a");
        assert_eq!(serial_of("p11-fb3e"), Some("fb3e"));
        assert_eq!(serial_of("p11-"), None);
        assert_eq!(serial_of("vc-00"), None);
    }

    #[test]
    fn ec_points_are_unwrapped_by_length() {
        let mut raw = vec![0x04];
        raw.extend([0x41; 64]); // X starts with 0x41: looks like a DER header, is not one
        assert_eq!(unwrap_ec_point(&raw, KeyAlg::EccP256), raw.as_slice());
        let wrapped = der_octet_string(&raw);
        assert_eq!(wrapped.len(), 67);
        assert_eq!(unwrap_ec_point(&wrapped, KeyAlg::EccP256), raw.as_slice());
    }
}
