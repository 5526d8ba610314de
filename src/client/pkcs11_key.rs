//! A TLS client key whose private half stays on a PKCS#11 token: rustls asks it to sign the
//! handshake (CertificateVerify) and the token signs.
//!
//! ```text
//!   rustls ──choose_scheme(offered)──► Pkcs11Key ──► Pkcs11Signer ──sign(msg)──►
//!      hash here (SHA-256/384/512) ──► C_Sign: CKM_ECDSA (raw r||s → DER)
//!                                           CKM_RSA_PKCS_PSS (rsa_pss_rsae_*)
//!                                           CKM_RSA_PKCS over a DigestInfo (rsa_pkcs1_*)
//! ```
//!
//! Only the schemes the token's mechanism list supports are offered. The certificate comes
//! from the token: the certificate object with the key's CKA_ID.

use std::sync::{Arc, Mutex};

use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use der::Decode;
use der::oid::ObjectIdentifier;
use rustls::pki_types::CertificateDer;
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use sha2::Digest as _;

use super::identity::{IdentityError, PinSource};
use crate::card::pkcs11::{Module, ObjectType, P11Error, Pkcs11Uri, Token, TokenInfo, return_code};

const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// DER prefix of DigestInfo for SHA-256 (RFC 8017 §9.2, note 1).
pub const DIGEST_INFO_SHA256: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0D, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
/// DER prefix of DigestInfo for SHA-384.
pub const DIGEST_INFO_SHA384: [u8; 19] = [
    0x30, 0x41, 0x30, 0x0D, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, 0x04, 0x30,
];
/// DER prefix of DigestInfo for SHA-512.
pub const DIGEST_INFO_SHA512: [u8; 19] = [
    0x30, 0x51, 0x30, 0x0D, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05,
    0x00, 0x04, 0x40,
];

/// The type of the key behind a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on P-256.
    EcP256,
    /// ECDSA on P-384.
    EcP384,
    /// RSA (any size).
    Rsa,
}

impl KeyKind {
    /// The key type of a DER certificate's public key.
    pub fn of_certificate(der: &[u8]) -> Result<KeyKind, String> {
        let cert = x509_cert::Certificate::from_der(der)
            .map_err(|e| format!("the certificate does not parse: {e}"))?;
        let alg = &cert.tbs_certificate().subject_public_key_info().algorithm;
        if alg.oid == RSA_ENCRYPTION {
            return Ok(KeyKind::Rsa);
        }
        if alg.oid != EC_PUBLIC_KEY {
            return Err(format!(
                "the certificate's key type {} is not EC or RSA",
                alg.oid
            ));
        }
        let curve: ObjectIdentifier = alg
            .parameters
            .as_ref()
            .ok_or("the certificate's EC key names no curve")?
            .decode_as()
            .map_err(|e| format!("the certificate's EC curve: {e}"))?;
        match curve {
            SECP256R1 => Ok(KeyKind::EcP256),
            SECP384R1 => Ok(KeyKind::EcP384),
            other => Err(format!(
                "the certificate's key is on curve {other}, not P-256 or P-384"
            )),
        }
    }

    fn name(self) -> &'static str {
        match self {
            KeyKind::EcP256 => "ECDSA P-256",
            KeyKind::EcP384 => "ECDSA P-384",
            KeyKind::Rsa => "RSA",
        }
    }
}

/// The TLS signature schemes a key of `kind` can make with these token mechanisms, in order
/// of preference (PSS before PKCS#1 v1.5; TLS 1.3 allows only PSS for RSA).
pub fn schemes_for(kind: KeyKind, mechanisms: &[MechanismType]) -> Vec<SignatureScheme> {
    let has = |m: MechanismType| mechanisms.contains(&m);
    match kind {
        KeyKind::EcP256 if has(MechanismType::ECDSA) => {
            vec![SignatureScheme::ECDSA_NISTP256_SHA256]
        }
        KeyKind::EcP384 if has(MechanismType::ECDSA) => {
            vec![SignatureScheme::ECDSA_NISTP384_SHA384]
        }
        KeyKind::EcP256 | KeyKind::EcP384 => Vec::new(),
        KeyKind::Rsa => {
            let mut out = Vec::new();
            if has(MechanismType::RSA_PKCS_PSS) {
                out.extend([
                    SignatureScheme::RSA_PSS_SHA256,
                    SignatureScheme::RSA_PSS_SHA384,
                    SignatureScheme::RSA_PSS_SHA512,
                ]);
            }
            if has(MechanismType::RSA_PKCS) {
                out.extend([
                    SignatureScheme::RSA_PKCS1_SHA256,
                    SignatureScheme::RSA_PKCS1_SHA384,
                    SignatureScheme::RSA_PKCS1_SHA512,
                ]);
            }
            out
        }
    }
}

/// A DER ECDSA-Sig-Value from the raw `r || s` a PKCS#11 token returns for CKM_ECDSA.
pub fn ecdsa_raw_to_der(kind: KeyKind, raw: &[u8]) -> Result<Vec<u8>, String> {
    let bad = |e: ecdsa::Error| format!("the token returned a bad ECDSA signature: {e}");
    match kind {
        KeyKind::EcP256 => Ok(p256::ecdsa::Signature::from_slice(raw)
            .map_err(bad)?
            .to_der()
            .as_bytes()
            .to_vec()),
        KeyKind::EcP384 => Ok(p384::ecdsa::Signature::from_slice(raw)
            .map_err(bad)?
            .to_der()
            .as_bytes()
            .to_vec()),
        KeyKind::Rsa => Err("an RSA key makes no ECDSA signature".into()),
    }
}

/// What the token is asked to sign for `scheme` over `message`: the mechanism and its input.
pub fn token_input(
    scheme: SignatureScheme,
    message: &[u8],
) -> Option<(Mechanism<'static>, Vec<u8>)> {
    let pss = |hash_alg, mgf, len: usize| {
        Mechanism::RsaPkcsPss(PkcsPssParams {
            hash_alg,
            mgf,
            s_len: (len as u64).into(),
        })
    };
    let with_prefix = |prefix: &[u8], hash: &[u8]| [prefix, hash].concat();
    Some(match scheme {
        SignatureScheme::ECDSA_NISTP256_SHA256 => {
            (Mechanism::Ecdsa, sha2::Sha256::digest(message).to_vec())
        }
        SignatureScheme::ECDSA_NISTP384_SHA384 => {
            (Mechanism::Ecdsa, sha2::Sha384::digest(message).to_vec())
        }
        SignatureScheme::RSA_PSS_SHA256 => (
            pss(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, 32),
            sha2::Sha256::digest(message).to_vec(),
        ),
        SignatureScheme::RSA_PSS_SHA384 => (
            pss(MechanismType::SHA384, PkcsMgfType::MGF1_SHA384, 48),
            sha2::Sha384::digest(message).to_vec(),
        ),
        SignatureScheme::RSA_PSS_SHA512 => (
            pss(MechanismType::SHA512, PkcsMgfType::MGF1_SHA512, 64),
            sha2::Sha512::digest(message).to_vec(),
        ),
        SignatureScheme::RSA_PKCS1_SHA256 => (
            Mechanism::RsaPkcs,
            with_prefix(&DIGEST_INFO_SHA256, &sha2::Sha256::digest(message)),
        ),
        SignatureScheme::RSA_PKCS1_SHA384 => (
            Mechanism::RsaPkcs,
            with_prefix(&DIGEST_INFO_SHA384, &sha2::Sha384::digest(message)),
        ),
        SignatureScheme::RSA_PKCS1_SHA512 => (
            Mechanism::RsaPkcs,
            with_prefix(&DIGEST_INFO_SHA512, &sha2::Sha512::digest(message)),
        ),
        _ => return None,
    })
}

/// The token session a key signs through (one at a time: a PKCS#11 session is not shared).
#[derive(Debug)]
struct Shared {
    token: Mutex<Token>,
    /// The key's CKA_ID.
    id: Vec<u8>,
    /// How the token is named in errors (label and serial).
    name: String,
}

impl Drop for Shared {
    /// Logs out when the last handshake user is gone: the card is not left with its PIN
    /// verified for whatever process talks to it next.
    fn drop(&mut self) {
        let token = self.token.get_mut().unwrap_or_else(|p| p.into_inner());
        let _ = token.logout();
    }
}

/// A private key on a PKCS#11 token, as rustls uses it to sign the TLS handshake.
#[derive(Debug, Clone)]
pub struct Pkcs11Key {
    shared: Arc<Shared>,
    kind: KeyKind,
    schemes: Vec<SignatureScheme>,
}

/// One signature scheme chosen for a handshake.
#[derive(Debug)]
struct Pkcs11Signer {
    shared: Arc<Shared>,
    kind: KeyKind,
    scheme: SignatureScheme,
}

impl Pkcs11Key {
    /// Opens the token a URI names, logs in with the PIN from the URI (or the terminal), finds
    /// the private key (by `id` and/or `object`) and its certificate, and reads the token's
    /// mechanisms. Returns the certified key for rustls.
    pub fn open(uri: &Pkcs11Uri) -> Result<CertifiedKey, IdentityError> {
        let shown = uri.to_string();
        let module_path = uri
            .module_path
            .as_deref()
            .ok_or_else(|| IdentityError::NoModule(shown.clone()))?;
        let token_err = |error: P11Error| IdentityError::Token {
            uri: shown.clone(),
            error,
        };
        check_attributes(uri)?;
        let module = Module::open(module_path).map_err(token_err)?;
        let info = one_token(module.tokens().map_err(token_err)?, uri)?;
        let name = format!("{:?} (serial {})", info.label, info.serial);
        let pin_source = PinSource::of(uri)?;
        let token = module
            .open_token_read_only(&info.serial)
            .map_err(token_err)?;
        let pin = pin_source.read(&name)?;
        token
            .login_user(&pin)
            .map_err(|e| login_error(&name, e, module.token(&info.serial).ok()))?;
        drop(pin);

        let id = find_key_id(&token, uri).map_err(|e| match e {
            Found::Token(e) => token_err(e),
            Found::None(reason) => IdentityError::Key {
                token: name.clone(),
                reason,
            },
        })?;
        let cert_err = |reason: String| IdentityError::Certificate {
            token: name.clone(),
            reason,
        };
        let cert = token
            .read_certificate(&id)
            .map_err(token_err)?
            .ok_or_else(|| {
                cert_err(format!(
                    "no certificate object with the key's id {}",
                    hex::encode(&id)
                ))
            })?;
        let kind = KeyKind::of_certificate(&cert).map_err(cert_err)?;
        let mechanisms = token
            .supported_mechanisms(&[
                MechanismType::ECDSA,
                MechanismType::RSA_PKCS_PSS,
                MechanismType::RSA_PKCS,
            ])
            .map_err(token_err)?;
        let schemes = schemes_for(kind, &mechanisms);
        if schemes.is_empty() {
            return Err(IdentityError::NoScheme {
                token: name,
                key: kind.name().into(),
            });
        }
        let key = Pkcs11Key {
            shared: Arc::new(Shared {
                token: Mutex::new(token),
                id,
                name,
            }),
            kind,
            schemes,
        };
        Ok(CertifiedKey::new(
            vec![CertificateDer::from(cert)],
            Arc::new(key),
        ))
    }

    /// The schemes this key offers.
    pub fn schemes(&self) -> &[SignatureScheme] {
        &self.schemes
    }
}

/// Refuses URI attributes the client would otherwise ignore: a token named by manufacturer or
/// model (name it by `token=` or `serial=`), and a `type` other than the key pair's.
fn check_attributes(uri: &Pkcs11Uri) -> Result<(), IdentityError> {
    let refuse = |reason: &str| {
        Err(IdentityError::Unsupported {
            uri: uri.to_string(),
            reason: reason.to_string(),
        })
    };
    if uri.manufacturer.is_some() || uri.model.is_some() {
        return refuse("name the token by token= (label) or serial=, not manufacturer= or model=");
    }
    match uri.object_type {
        None | Some(ObjectType::Private) | Some(ObjectType::Cert) => Ok(()),
        Some(other) => refuse(&format!(
            "type={} names no key pair (use type=private or type=cert, or leave it out)",
            other.as_str()
        )),
    }
}

/// The one token present that the URI's `token` (label) and `serial` match.
fn one_token(tokens: Vec<TokenInfo>, uri: &Pkcs11Uri) -> Result<TokenInfo, IdentityError> {
    let mut found: Vec<TokenInfo> = tokens
        .into_iter()
        .filter(|t| {
            uri.serial.as_deref().is_none_or(|s| s == t.serial)
                && uri.token.as_deref().is_none_or(|l| l == t.label)
        })
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(IdentityError::Token {
            uri: uri.to_string(),
            error: P11Error::NotPresent(
                uri.serial
                    .clone()
                    .or_else(|| uri.token.clone())
                    .unwrap_or_else(|| "(any token)".into()),
            ),
        }),
        n => Err(IdentityError::Unsupported {
            uri: uri.to_string(),
            reason: format!(
                "{n} tokens match ({}): name one with token= or serial=",
                found
                    .iter()
                    .map(|t| format!("{:?} serial {}", t.label, t.serial))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// A login failure naming the token and the PKCS#11 return code; `now` is the token as it
/// reports itself after the failure (its PIN flags).
fn login_error(token: &str, e: P11Error, now: Option<TokenInfo>) -> IdentityError {
    let (code, message) = match &e {
        P11Error::WrongPin { .. } => {
            let state = match now {
                Some(t) if t.user_pin_locked => "wrong PIN; the PIN is now locked",
                Some(t) if t.user_pin_final_try => "wrong PIN; one try left before it locks",
                Some(t) if t.user_pin_count_low => "wrong PIN; the token counts failed tries",
                _ => "wrong PIN",
            };
            ("CKR_PIN_INCORRECT".to_string(), state.to_string())
        }
        P11Error::PinLocked { .. } => (
            "CKR_PIN_LOCKED".to_string(),
            "the PIN is locked".to_string(),
        ),
        P11Error::FinalTry(_) => (
            "not tried".to_string(),
            "the PIN is on its final try; Keyfleet does not risk locking the card: unblock it \
             with the PUK first (keyfleet cards unblock)"
                .to_string(),
        ),
        P11Error::Call { source, .. } => (
            return_code(source).unwrap_or_else(|| "no return code".into()),
            e.to_string(),
        ),
        other => ("no return code".to_string(), other.to_string()),
    };
    IdentityError::Login {
        token: token.to_string(),
        code,
        message,
    }
}

enum Found {
    Token(P11Error),
    None(String),
}

/// The CKA_ID of the one private key the URI names: by `id` and/or `object` as the private
/// key's label, else by `object` as the label of a certificate whose id a private key shares.
fn find_key_id(token: &Token, uri: &Pkcs11Uri) -> Result<Vec<u8>, Found> {
    let id = uri.id.as_deref();
    let label = uri.object.as_deref();
    let mut keys = token.private_keys(id, label).map_err(Found::Token)?;
    if keys.is_empty() && label.is_some() {
        for (cert_id, _) in token.certificates(id, label).map_err(Found::Token)? {
            keys.extend(
                token
                    .private_keys(Some(&cert_id), None)
                    .map_err(Found::Token)?,
            );
        }
    }
    keys.dedup_by(|a, b| a.0 == b.0);
    let wanted = || {
        let mut parts = Vec::new();
        if let Some(id) = id {
            parts.push(format!("id {}", hex::encode(id)));
        }
        if let Some(l) = label {
            parts.push(format!("object {l:?}"));
        }
        if parts.is_empty() {
            "any id".to_string()
        } else {
            parts.join(" and ")
        }
    };
    match keys.as_slice() {
        [] => Err(Found::None(format!("no private key with {}", wanted()))),
        [(one, _)] => Ok(one.clone()),
        many => Err(Found::None(format!(
            "{} private keys match {} ({}): name one with id= or object=",
            many.len(),
            wanted(),
            many.iter()
                .map(|(id, l)| format!("id {} {l:?}", hex::encode(id)))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

impl SigningKey for Pkcs11Key {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = self.schemes.iter().find(|s| offered.contains(s))?;
        Some(Box::new(Pkcs11Signer {
            shared: self.shared.clone(),
            kind: self.kind,
            scheme: *scheme,
        }))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.kind {
            KeyKind::EcP256 | KeyKind::EcP384 => SignatureAlgorithm::ECDSA,
            KeyKind::Rsa => SignatureAlgorithm::RSA,
        }
    }
}

impl Signer for Pkcs11Signer {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let fail = |m: String| {
            rustls::Error::General(format!("token {} did not sign: {m}", self.shared.name))
        };
        let (mechanism, input) = token_input(self.scheme, message)
            .ok_or_else(|| fail(format!("scheme {:?} is not supported", self.scheme)))?;
        let token = self
            .shared
            .token
            .lock()
            .map_err(|_| fail("the token session was poisoned".into()))?;
        let sig = token
            .sign_with(&self.shared.id, &mechanism, &input)
            .map_err(|e| fail(e.to_string()))?;
        match self.kind {
            KeyKind::EcP256 | KeyKind::EcP384 => ecdsa_raw_to_der(self.kind, &sig).map_err(fail),
            KeyKind::Rsa => Ok(sig),
        }
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecdsa::signature::hazmat::PrehashVerifier;

    #[test]
    fn raw_ecdsa_becomes_der_that_verifies() {
        use p256::ecdsa::{SigningKey, VerifyingKey, signature::hazmat::PrehashSigner};
        let key = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let hash = sha2::Sha256::digest(b"handshake transcript");
        let sig: p256::ecdsa::Signature = key.sign_prehash(&hash).unwrap();
        let raw = sig.to_bytes();
        let der = ecdsa_raw_to_der(KeyKind::EcP256, &raw).unwrap();
        // SEQUENCE { INTEGER r, INTEGER s }.
        assert_eq!(der[0], 0x30);
        assert_eq!(usize::from(der[1]), der.len() - 2);
        let back = p256::ecdsa::Signature::from_der(&der).unwrap();
        VerifyingKey::from(&key)
            .verify_prehash(&hash, &back)
            .unwrap();
        // A high-bit r gets a leading zero byte: r = 0x80.. is 33 bytes in DER.
        let mut high = [0u8; 64];
        high[0] = 0x80;
        high[31] = 1;
        high[63] = 1;
        let der = ecdsa_raw_to_der(KeyKind::EcP256, &high).unwrap();
        assert_eq!(&der[..5], &[0x30, 0x26, 0x02, 0x21, 0x00]);
        assert_eq!(&der[der.len() - 3..], &[0x02, 0x01, 0x01]);
        // P-384 signatures are 96 bytes; the wrong length is refused, not truncated.
        let mut p384 = [0u8; 96];
        p384[47] = 5;
        p384[95] = 9;
        assert_eq!(
            ecdsa_raw_to_der(KeyKind::EcP384, &p384).unwrap(),
            vec![0x30, 0x06, 0x02, 0x01, 0x05, 0x02, 0x01, 0x09]
        );
        assert!(ecdsa_raw_to_der(KeyKind::EcP384, &raw).is_err());
        assert!(ecdsa_raw_to_der(KeyKind::EcP256, &[1u8; 10]).is_err());
        assert!(ecdsa_raw_to_der(KeyKind::Rsa, &raw).is_err());
    }

    #[test]
    fn digest_info_prefixes_match_the_rsa_crate() {
        use rsa::pkcs1v15::Pkcs1v15Sign;
        assert_eq!(
            &*Pkcs1v15Sign::new::<sha2::Sha256>().prefix,
            &DIGEST_INFO_SHA256[..]
        );
        assert_eq!(
            &*Pkcs1v15Sign::new::<sha2::Sha384>().prefix,
            &DIGEST_INFO_SHA384[..]
        );
        assert_eq!(
            &*Pkcs1v15Sign::new::<sha2::Sha512>().prefix,
            &DIGEST_INFO_SHA512[..]
        );
        let (mech, input) = token_input(SignatureScheme::RSA_PKCS1_SHA384, b"m").unwrap();
        assert!(matches!(mech, Mechanism::RsaPkcs));
        assert_eq!(input.len(), 19 + 48);
        assert_eq!(&input[19..], &sha2::Sha384::digest(b"m")[..]);
        let (mech, input) = token_input(SignatureScheme::RSA_PSS_SHA512, b"m").unwrap();
        assert!(matches!(mech, Mechanism::RsaPkcsPss(_)));
        assert_eq!(input, sha2::Sha512::digest(b"m").to_vec());
        let (mech, input) = token_input(SignatureScheme::ECDSA_NISTP384_SHA384, b"m").unwrap();
        assert!(matches!(mech, Mechanism::Ecdsa));
        assert_eq!(input.len(), 48);
        assert!(token_input(SignatureScheme::ED25519, b"m").is_none());
    }

    #[test]
    fn schemes_follow_the_token_mechanisms() {
        use MechanismType as M;
        use SignatureScheme as S;
        assert_eq!(
            schemes_for(KeyKind::EcP256, &[M::RSA_PKCS, M::ECDSA]),
            vec![S::ECDSA_NISTP256_SHA256]
        );
        assert_eq!(
            schemes_for(KeyKind::EcP384, &[M::ECDSA]),
            vec![S::ECDSA_NISTP384_SHA384]
        );
        assert!(schemes_for(KeyKind::EcP256, &[M::RSA_PKCS, M::ECDSA_SHA256]).is_empty());
        assert_eq!(
            schemes_for(KeyKind::Rsa, &[M::RSA_PKCS]),
            vec![
                S::RSA_PKCS1_SHA256,
                S::RSA_PKCS1_SHA384,
                S::RSA_PKCS1_SHA512
            ]
        );
        assert_eq!(
            schemes_for(KeyKind::Rsa, &[M::RSA_PKCS_PSS, M::RSA_PKCS]),
            vec![
                S::RSA_PSS_SHA256,
                S::RSA_PSS_SHA384,
                S::RSA_PSS_SHA512,
                S::RSA_PKCS1_SHA256,
                S::RSA_PKCS1_SHA384,
                S::RSA_PKCS1_SHA512
            ]
        );
        assert!(schemes_for(KeyKind::Rsa, &[M::ECDSA]).is_empty());
    }

    fn token(serial: &str, label: &str) -> TokenInfo {
        TokenInfo {
            slot: cryptoki::slot::Slot::try_from(1u64).unwrap(),
            serial: serial.into(),
            label: label.into(),
            user_pin_initialized: true,
            user_pin_count_low: false,
            user_pin_final_try: false,
            user_pin_locked: false,
        }
    }

    #[test]
    fn the_uri_names_one_token_and_a_key_pair() {
        let uri = |t: &str| Pkcs11Uri::parse(t).unwrap();
        let two = || vec![token("01", "alice"), token("02", "bob")];
        assert_eq!(
            one_token(two(), &uri("pkcs11:token=bob")).unwrap().serial,
            "02"
        );
        assert_eq!(
            one_token(two(), &uri("pkcs11:serial=01")).unwrap().label,
            "alice"
        );
        let e = one_token(two(), &uri("pkcs11:id=%01")).unwrap_err();
        assert!(e.to_string().contains("2 tokens match"), "{e}");
        let e = one_token(two(), &uri("pkcs11:token=carol")).unwrap_err();
        assert!(e.to_string().contains("carol is not present"), "{e}");
        assert!(check_attributes(&uri("pkcs11:id=%01;type=private")).is_ok());
        assert!(check_attributes(&uri("pkcs11:id=%01;type=cert")).is_ok());
        for bad in [
            "pkcs11:type=secret-key",
            "pkcs11:model=PIV",
            "pkcs11:manufacturer=x",
        ] {
            assert!(
                matches!(
                    check_attributes(&uri(bad)),
                    Err(IdentityError::Unsupported { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn key_kind_comes_from_the_certificate() {
        for (alg, kind) in [
            (&rcgen::PKCS_ECDSA_P256_SHA256, KeyKind::EcP256),
            (&rcgen::PKCS_ECDSA_P384_SHA384, KeyKind::EcP384),
        ] {
            let key = rcgen::KeyPair::generate_for(alg).unwrap();
            let cert = rcgen::CertificateParams::new(vec!["x".into()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            assert_eq!(KeyKind::of_certificate(cert.der()).unwrap(), kind);
        }
        assert!(KeyKind::of_certificate(b"not a certificate").is_err());
    }
}
