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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::keys::{ManagementKey, MgmtAlg};
    use crate::card::piv::PivError;
    use crate::card::transport::{InProcess, TransportError};
    use crate::card::vcard::VirtualCard;
    use der::{Decode as _, Encode as _};
    use p256::ecdsa::signature::Verifier as _;
    use spki::DecodePublicKey as _;

    /// Records every APDU and answer.
    struct Recorder {
        inner: InProcess,
        sent: Vec<Vec<u8>>,
        received: Vec<Vec<u8>>,
    }

    impl Transport for Recorder {
        fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
            self.sent.push(apdu.to_vec());
            let r = self.inner.transmit(apdu)?;
            self.received.push(r.clone());
            Ok(r)
        }
    }

    fn recorder(card: VirtualCard) -> Recorder {
        Recorder {
            inner: InProcess::new(card),
            sent: Vec::new(),
            received: Vec::new(),
        }
    }

    /// Verifies `sig` over `msg` with the key in `spki` as rcgen's algorithm for `alg` says.
    fn verify(alg: KeyAlg, spki: &[u8], msg: &[u8], sig: &[u8]) {
        match alg {
            KeyAlg::EccP256 => {
                let vk = p256::ecdsa::VerifyingKey::from_public_key_der(spki).unwrap();
                let sig = p256::ecdsa::Signature::from_der(sig).unwrap();
                vk.verify(msg, &sig).unwrap();
            }
            KeyAlg::EccP384 => {
                let vk = p384::ecdsa::VerifyingKey::from_public_key_der(spki).unwrap();
                let sig = p384::ecdsa::Signature::from_der(sig).unwrap();
                vk.verify(msg, &sig).unwrap();
            }
            KeyAlg::Rsa2048 | KeyAlg::Rsa3072 => {
                let pk = rsa::PublicKey::from_public_key_der(spki).unwrap();
                assert_eq!(Some(sig.len()), alg.rsa_bytes());
                let vk = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(pk);
                let sig = rsa::pkcs1v15::Signature::try_from(sig).unwrap();
                vk.verify(msg, &sig).unwrap();
            }
        }
    }

    fn check_csr(alg: KeyAlg, signer: &CardSigner<'_, impl Transport>) {
        let params = rcgen::CertificateParams::new(vec!["card.example".to_string()]).unwrap();
        let csr = params.serialize_request(signer).unwrap();
        let req = x509_cert::request::CertReq::from_der(csr.der().as_ref()).unwrap();
        let spki = req.info.public_key.to_der().unwrap();
        assert_eq!(spki, signer.public_key().spki_der());
        let info = req.info.to_der().unwrap();
        verify(alg, &spki, &info, req.signature.raw_bytes());
    }

    #[test]
    fn csrs_signed_by_the_card_verify_for_all_algorithms() {
        let client = RefCell::new(PivClient::new(recorder(VirtualCard::in_memory())));
        {
            let mut c = client.borrow_mut();
            c.select().unwrap();
            c.authenticate(&ManagementKey::factory_default()).unwrap();
        }
        for (slot, alg) in [
            (0x9A, KeyAlg::EccP256),
            (0x9C, KeyAlg::EccP384),
            (0x9D, KeyAlg::Rsa2048),
            (0x9E, KeyAlg::Rsa3072),
        ] {
            let before = client.borrow_mut().transport_mut().sent.len();
            let public = client.borrow_mut().generate_key(slot, alg).unwrap();
            let sent = &client.borrow_mut().transport_mut().sent[before..].to_vec();
            // RSA public keys (269 / 397 bytes) come back through GET RESPONSE.
            let get_responses = sent.iter().filter(|a| a.get(1) == Some(&0xC0)).count();
            assert_eq!(get_responses > 0, alg.rsa_bytes().is_some(), "{alg:?}");
            client.borrow_mut().verify_pin("123456").unwrap();
            let signer = CardSigner::new(&client, slot, public).with_pin("123456");
            check_csr(alg, &signer);
        }
        // After a power cycle, without a VERIFY, the PIN-always slot refuses and rcgen sees a
        // remote key error.
        let public = {
            let mut c = client.borrow_mut();
            c.transport_mut().inner.card_mut().reset();
            c.select().unwrap();
            c.authenticate(&ManagementKey::factory_default()).unwrap();
            c.generate_key(0x9C, KeyAlg::EccP256).unwrap()
        };
        let params = rcgen::CertificateParams::new(vec!["x.example".to_string()]).unwrap();
        let err = params
            .serialize_request(&CardSigner::new(&client, 0x9C, public))
            .unwrap_err();
        assert!(matches!(err, rcgen::Error::RemoteKeyError));
    }

    #[test]
    fn full_issuance_flow_survives_reopening_the_card() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vcard.json");
        let client = RefCell::new(PivClient::new(recorder(
            VirtualCard::create(&path).unwrap(),
        )));
        let new_key = ManagementKey::new(MgmtAlg::Aes192, (1..=24).collect()).unwrap();
        let guid = [0x5A; 16];
        let (cert_der, public) = {
            let mut c = client.borrow_mut();
            c.select().unwrap();
            c.authenticate(&ManagementKey::factory_default()).unwrap();
            c.set_management_key(&new_key).unwrap();
            c.authenticate(&new_key).unwrap();
            c.write_chuid(guid, "20351231").unwrap();
            let public = c.generate_key(0x9A, KeyAlg::EccP256).unwrap();
            c.verify_pin("123456").unwrap();
            drop(c);
            let signer = CardSigner::new(&client, 0x9A, public.clone());
            check_csr(KeyAlg::EccP256, &signer);
            let params = rcgen::CertificateParams::new(vec!["alice.example".to_string()]).unwrap();
            let cert = params.self_signed(&signer).unwrap();
            let der = cert.der().to_vec();
            client.borrow_mut().write_certificate(0x9A, &der).unwrap();
            (der, public)
        };
        let rec = client.into_inner().into_transport();
        // The private key never crossed the APDU interface.
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let pkcs8 = hex::decode(state["keys"]["9a"]["pkcs8"].as_str().unwrap()).unwrap();
        let scalar = {
            use p256::pkcs8::DecodePrivateKey as _;
            p256::SecretKey::from_pkcs8_der(&pkcs8).unwrap().to_bytes()
        };
        assert!(
            rec.received
                .iter()
                .all(|r| !r.windows(scalar.len()).any(|w| w == scalar.as_slice()))
        );
        drop(rec);

        // "Remove" and "re-insert" the card: reopen it from disk.
        let mut c = PivClient::new(InProcess::new(VirtualCard::open(&path).unwrap()));
        c.select().unwrap();
        assert_eq!(c.card_id().unwrap().unwrap(), hex::encode(guid));
        let read = c.read_certificate(0x9A).unwrap().unwrap();
        assert_eq!(read, cert_der);
        let cert = x509_cert::Certificate::from_der(&read).unwrap();
        let spki = cert
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .unwrap();
        assert_eq!(spki, public.spki_der());
        assert!(matches!(
            c.authenticate(&ManagementKey::factory_default()),
            Err(PivError::Status { sw: 0x6A86, .. })
        ));
        c.authenticate(&new_key).unwrap();
        c.verify_pin("123456").unwrap();
        let msg = b"challenge from a relying party";
        let sig = c
            .sign_digest(0x9A, KeyAlg::EccP256, &sha2::Sha256::digest(msg))
            .unwrap();
        verify(KeyAlg::EccP256, &spki, msg, &sig);
    }

    #[test]
    fn pkcs1_block_layout() {
        let block = pkcs1_v15_sha256_block(&[0xAA; 32], 256);
        assert_eq!(block.len(), 256);
        assert_eq!(&block[..3], &[0, 1, 0xFF]);
        assert_eq!(block[256 - 32 - 19 - 1], 0);
        assert_eq!(&block[256 - 32 - 19..256 - 32], &DIGEST_INFO_SHA256);
    }
}
