//! [`CardSigner`]: an `rcgen` signing key whose private half stays inside a PIV card.
//!
//! Owns: hashing the to-be-signed bytes (SHA-256 for P-256 and RSA, SHA-384 for P-384), PKCS#1
//! v1.5 DigestInfo padding for RSA, and handing the result to the card through
//! [`PivClient::sign_digest`]. rcgen gets what it expects: a DER ECDSA signature or the raw k-byte
//! RSA signature. It does NOT build CSRs or certificates (rcgen does) and does not choose slots.

use std::cell::RefCell;

use sha2::Digest as _;

use super::keys::{KeyAlg, PublicKey};
use super::piv::PivClient;
use super::transport::Transport;

/// DER prefix of DigestInfo for SHA-256 (RFC 8017 §9.2, note 1).
const DIGEST_INFO_SHA256: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0D, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// Signs with the key in one card slot. Borrows the client only while signing.
pub struct CardSigner<'a, T: Transport> {
    client: &'a RefCell<PivClient<T>>,
    slot: u8,
    public: PublicKey,
    pin: Option<String>,
}

impl<T: Transport> std::fmt::Debug for CardSigner<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardSigner")
            .field("slot", &self.slot)
            .field("alg", &self.public.alg())
            .finish_non_exhaustive()
    }
}

impl<'a, T: Transport> CardSigner<'a, T> {
    /// A signer for the key in `slot` whose public key is `public` (as GENERATE returned it).
    /// The caller must have verified the PIN if the slot needs it.
    pub fn new(client: &'a RefCell<PivClient<T>>, slot: u8, public: PublicKey) -> Self {
        CardSigner {
            client,
            slot,
            public,
            pin: None,
        }
    }

    /// Verifies `pin` right before every signature (needed for the PIN-always slot 9C).
    pub fn with_pin(mut self, pin: impl Into<String>) -> Self {
        self.pin = Some(pin.into());
        self
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// What the card is asked to sign for `msg`: the hash (EC) or the padded block (RSA).
    fn card_input(&self, msg: &[u8]) -> Vec<u8> {
        match self.public.alg() {
            KeyAlg::EccP256 => sha2::Sha256::digest(msg).to_vec(),
            KeyAlg::EccP384 => sha2::Sha384::digest(msg).to_vec(),
            KeyAlg::Rsa2048 | KeyAlg::Rsa3072 => {
                let k = self.public.alg().rsa_bytes().unwrap_or(256);
                pkcs1_v15_sha256_block(&sha2::Sha256::digest(msg), k)
            }
        }
    }
}

/// EMSA-PKCS1-v1_5 encoding of a SHA-256 hash into a `k`-byte block:
/// `00 01 FF… 00 DigestInfo hash`.
pub fn pkcs1_v15_sha256_block(hash: &[u8], k: usize) -> Vec<u8> {
    let t_len = DIGEST_INFO_SHA256.len() + hash.len();
    let ps = k.saturating_sub(t_len + 3);
    let mut out = Vec::with_capacity(k);
    out.extend_from_slice(&[0x00, 0x01]);
    out.extend(std::iter::repeat_n(0xFF, ps));
    out.push(0x00);
    out.extend_from_slice(&DIGEST_INFO_SHA256);
    out.extend_from_slice(hash);
    out
}

impl<T: Transport> rcgen::PublicKeyData for CardSigner<'_, T> {
    fn der_bytes(&self) -> &[u8] {
        self.public.raw_bytes()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self.public.alg() {
            KeyAlg::EccP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlg::EccP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyAlg::Rsa2048 | KeyAlg::Rsa3072 => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

impl<T: Transport> rcgen::SigningKey for CardSigner<'_, T> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let input = self.card_input(msg);
        let mut client = self
            .client
            .try_borrow_mut()
            .map_err(|_| rcgen::Error::RemoteKeyError)?;
        if let Some(pin) = &self.pin {
            client
                .verify_pin(pin)
                .map_err(|_| rcgen::Error::RemoteKeyError)?;
        }
        client
            .sign_digest(self.slot, self.public.alg(), &input)
            .map_err(|_| rcgen::Error::RemoteKeyError)
    }
}
