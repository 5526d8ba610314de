//! A TLS client key whose private half stays on the holder's PIV card: rustls asks it to
//! sign the handshake and the card's PIV authentication key (slot 9A) signs, through the one
//! PC/SC connection the relay uses too (shared behind a mutex).
//!
//! ```text
//!   rustls ──choose_scheme──► CardKey ──► CardSigner::sign(msg)
//!            hash here (SHA-256 / SHA-384; RSA: PKCS#1 v1.5 block) ──► VERIFY PIN,
//!            GENERAL AUTHENTICATE 9A (PivClient::sign_digest)
//! ```
//!
//! The PIN is verified right before each signature (an executor step in between may have
//! reset the card's security status); it is kept in memory only, zeroed on drop.

use std::sync::{Arc, Mutex};

use der::Decode as _;
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use sha2::Digest as _;
use zeroize::Zeroizing;

use crate::card::keys::KeyAlg;
use crate::card::pcsc::PcscTransport;
use crate::card::piv::PivClient;
use crate::card::signer::pkcs1_v15_sha256_block;

/// The card, shared by the TLS signer and the relay.
pub type SharedCard = Arc<Mutex<PivClient<PcscTransport>>>;

/// The PIN the holder typed, shared by the signer and the command (which replaces it after
/// a PIN change).
pub type SharedPin = Arc<Mutex<Zeroizing<String>>>;

/// The PIV authentication slot.
pub const SLOT_9A: u8 = 0x9A;

/// The key type of a DER certificate's public key, as the card names it.
pub fn key_alg_of_certificate(der: &[u8]) -> Result<KeyAlg, String> {
    use crate::client::pkcs11_key::KeyKind;
    match KeyKind::of_certificate(der)? {
        KeyKind::EcP256 => Ok(KeyAlg::EccP256),
        KeyKind::EcP384 => Ok(KeyAlg::EccP384),
        KeyKind::Rsa => {
            let cert = x509_cert::Certificate::from_der(der)
                .map_err(|e| format!("the certificate does not parse: {e}"))?;
            let spki = cert.tbs_certificate().subject_public_key_info();
            let bits = spki
                .subject_public_key
                .as_bytes()
                .ok_or("the certificate's RSA key is not a whole number of bytes")?;
            let key = RsaPublicKey::from_der(bits)
                .map_err(|e| format!("the certificate's RSA key does not parse: {e}"))?;
            match key.modulus.as_bytes().len() {
                256 => Ok(KeyAlg::Rsa2048),
                384 => Ok(KeyAlg::Rsa3072),
                n => Err(format!(
                    "the certificate's RSA key has {} bits; PIV cards hold 2048 or 3072",
                    n * 8
                )),
            }
        }
    }
}

#[derive(der::Sequence)]
struct RsaPublicKey<'a> {
    modulus: der::asn1::UintRef<'a>,
    #[allow(dead_code)]
    exponent: der::asn1::UintRef<'a>,
}

/// The TLS signature scheme a card key of `alg` signs with.
pub fn scheme_of(alg: KeyAlg) -> SignatureScheme {
    match alg {
        KeyAlg::EccP256 => SignatureScheme::ECDSA_NISTP256_SHA256,
        KeyAlg::EccP384 => SignatureScheme::ECDSA_NISTP384_SHA384,
        // The card signs a PKCS#1 v1.5 block (TLS 1.2 only: TLS 1.3 wants PSS for RSA).
        KeyAlg::Rsa2048 | KeyAlg::Rsa3072 => SignatureScheme::RSA_PKCS1_SHA256,
    }
}

/// The card's 9A key as a rustls signing key.
pub struct CardKey {
    card: SharedCard,
    alg: KeyAlg,
    pin: SharedPin,
}

impl std::fmt::Debug for CardKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardKey")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl CardKey {
    /// The key of slot 9A of `card`, of type `alg`, unlocked with `pin`.
    pub fn new(card: SharedCard, alg: KeyAlg, pin: SharedPin) -> Self {
        CardKey { card, alg, pin }
    }
}

impl SigningKey for CardKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = scheme_of(self.alg);
        offered.contains(&scheme).then(|| {
            Box::new(CardSigner {
                card: self.card.clone(),
                alg: self.alg,
                pin: self.pin.clone(),
                scheme,
            }) as Box<dyn Signer>
        })
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.alg {
            KeyAlg::EccP256 | KeyAlg::EccP384 => SignatureAlgorithm::ECDSA,
            KeyAlg::Rsa2048 | KeyAlg::Rsa3072 => SignatureAlgorithm::RSA,
        }
    }
}

struct CardSigner {
    card: SharedCard,
    alg: KeyAlg,
    pin: SharedPin,
    scheme: SignatureScheme,
}

impl std::fmt::Debug for CardSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardSigner")
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

/// What the card is asked to sign for `message`: its hash (EC) or the padded block (RSA).
pub fn card_input(alg: KeyAlg, message: &[u8]) -> Vec<u8> {
    match alg {
        KeyAlg::EccP256 => sha2::Sha256::digest(message).to_vec(),
        KeyAlg::EccP384 => sha2::Sha384::digest(message).to_vec(),
        KeyAlg::Rsa2048 | KeyAlg::Rsa3072 => {
            let k = alg.rsa_bytes().unwrap_or(256);
            pkcs1_v15_sha256_block(&sha2::Sha256::digest(message), k)
        }
    }
}

impl Signer for CardSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let fail = |m: String| rustls::Error::General(format!("the card did not sign: {m}"));
        let input = card_input(self.alg, message);
        let pin = self
            .pin
            .lock()
            .map_err(|_| fail("the PIN was poisoned".into()))?
            .clone();
        let mut card = self
            .card
            .lock()
            .map_err(|_| fail("the card connection was poisoned".into()))?;
        card.verify_pin(&pin).map_err(|e| fail(e.to_string()))?;
        card.sign_digest(SLOT_9A, self.alg, &input)
            .map_err(|e| fail(e.to_string()))
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}
