//! PKCS#10 certificate requests: decoding, the proof-of-possession signature check, and the
//! requester's public key in the form rcgen signs over.
//!
//! Accepted: EC P-256 / P-384 keys signed with ECDSA-SHA256 or ECDSA-SHA384, and RSA keys of at
//! least 2048 bits signed with RSASSA-PKCS1-v1_5 SHA-256. Everything else is refused.
//!
//! This module does NOT look at the CSR's subject or extensions: the CA certifies the subject
//! and SANs that policy asks for, never what the requester wrote.

use der::oid::ObjectIdentifier;
use der::{Decode, Encode};
use ecdsa::signature::Verifier;
use ecdsa::signature::hazmat::PrehashVerifier;
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256, Sha384};
use spki::SubjectPublicKeyInfoRef;
use x509_cert::request::CertReq;

use super::CaError;

const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const RSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");

/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// The kind of key a CSR carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// EC on NIST P-256.
    EcP256,
    /// EC on NIST P-384.
    EcP384,
    /// RSA (modulus size in bits).
    Rsa(usize),
}

impl KeyKind {
    /// True for EC keys (key management certificates then get keyAgreement, not
    /// keyEncipherment).
    pub fn is_ec(self) -> bool {
        matches!(self, KeyKind::EcP256 | KeyKind::EcP384)
    }
}

/// A requester's public key after its CSR's signature was verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPublicKey {
    kind: KeyKind,
    /// The subjectPublicKey BIT STRING contents (EC point or PKCS#1 RSAPublicKey).
    key_bits: Vec<u8>,
    /// The whole SubjectPublicKeyInfo, DER.
    spki_der: Vec<u8>,
}

impl VerifiedPublicKey {
    /// The key type.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The SubjectPublicKeyInfo, DER, exactly as the CSR carried it.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }
}

impl rcgen::PublicKeyData for VerifiedPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.key_bits
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self.kind {
            KeyKind::EcP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyKind::EcP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyKind::Rsa(_) => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

/// Decodes a DER PKCS#10 request and verifies its self-signature (proof of possession).
pub fn verify_csr(csr_der: &[u8]) -> Result<VerifiedPublicKey, CaError> {
    let req = CertReq::from_der(csr_der).map_err(|e| CaError::CsrDecode(e.to_string()))?;
    let tbs = req
        .info
        .to_der()
        .map_err(|e| CaError::CsrDecode(e.to_string()))?;
    let spki_der = req
        .info
        .public_key
        .to_der()
        .map_err(|e| CaError::CsrDecode(e.to_string()))?;
    let spki = SubjectPublicKeyInfoRef::from_der(&spki_der)
        .map_err(|e| CaError::CsrDecode(e.to_string()))?;
    let key_bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| CaError::CsrDecode("public key BIT STRING has unused bits".into()))?
        .to_vec();
    let signature = req
        .signature
        .as_bytes()
        .ok_or_else(|| CaError::CsrDecode("signature BIT STRING has unused bits".into()))?;
    let (key_oid, params) = spki
        .algorithm
        .oids()
        .map_err(|e| CaError::CsrAlgorithm(e.to_string()))?;
    let sig_oid = req.algorithm.oid;

    let kind = if key_oid == EC_PUBLIC_KEY {
        let hash: Vec<u8> = if sig_oid == ECDSA_SHA256 {
            Sha256::digest(&tbs).to_vec()
        } else if sig_oid == ECDSA_SHA384 {
            Sha384::digest(&tbs).to_vec()
        } else {
            return Err(CaError::CsrAlgorithm(format!(
                "signature algorithm {sig_oid} with an EC key"
            )));
        };
        match params {
            Some(curve) if curve == SECP256R1 => {
                let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&key_bits)
                    .map_err(|_| CaError::CsrDecode("invalid P-256 public key".into()))?;
                let sig = p256::ecdsa::Signature::from_der(signature)
                    .map_err(|_| CaError::CsrSignature)?;
                vk.verify_prehash(&hash, &sig)
                    .map_err(|_| CaError::CsrSignature)?;
                KeyKind::EcP256
            }
            Some(curve) if curve == SECP384R1 => {
                let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(&key_bits)
                    .map_err(|_| CaError::CsrDecode("invalid P-384 public key".into()))?;
                let sig = p384::ecdsa::Signature::from_der(signature)
                    .map_err(|_| CaError::CsrSignature)?;
                vk.verify_prehash(&hash, &sig)
                    .map_err(|_| CaError::CsrSignature)?;
                KeyKind::EcP384
            }
            other => {
                return Err(CaError::CsrAlgorithm(format!(
                    "EC curve {}",
                    other.map_or_else(|| "(none)".to_string(), |o| o.to_string())
                )));
            }
        }
    } else if key_oid == RSA_ENCRYPTION {
        if sig_oid != RSA_SHA256 {
            return Err(CaError::CsrAlgorithm(format!(
                "signature algorithm {sig_oid} with an RSA key (only sha256WithRSAEncryption)"
            )));
        }
        let pk = rsa::PublicKey::try_from(spki)
            .map_err(|e| CaError::CsrDecode(format!("invalid RSA public key: {e}")))?;
        let bits = pk.size() * 8;
        if bits < MIN_RSA_BITS {
            return Err(CaError::CsrAlgorithm(format!(
                "RSA key of {bits} bits (minimum {MIN_RSA_BITS})"
            )));
        }
        let vk = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(pk);
        let sig =
            rsa::pkcs1v15::Signature::try_from(signature).map_err(|_| CaError::CsrSignature)?;
        vk.verify(&tbs, &sig).map_err(|_| CaError::CsrSignature)?;
        KeyKind::Rsa(bits)
    } else {
        return Err(CaError::CsrAlgorithm(format!("public key type {key_oid}")));
    };

    Ok(VerifiedPublicKey {
        kind,
        key_bits,
        spki_der,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A CSR made by rcgen for a fresh key of `alg`.
    pub(crate) fn csr_for(alg: &'static rcgen::SignatureAlgorithm) -> (rcgen::KeyPair, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let params = rcgen::CertificateParams::new(vec!["ignored.example".to_string()]).unwrap();
        let csr = params.serialize_request(&key).unwrap();
        (key, csr.der().to_vec())
    }

    /// A fixed 2048-bit RSA key (PKCS#8 DER), made once per test run with the `rsa` crate.
    pub(crate) fn rsa_key() -> rcgen::KeyPair {
        use rsa::pkcs8::EncodePrivateKey;
        use std::sync::OnceLock;
        static DER: OnceLock<Vec<u8>> = OnceLock::new();
        let der = DER.get_or_init(|| {
            let key = rsa::PrivateKey::new(&mut rand::rng(), 2048).unwrap();
            key.to_pkcs8_der().unwrap().as_bytes().to_vec()
        });
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &der.as_slice().into(),
            &rcgen::PKCS_RSA_SHA256,
        )
        .unwrap()
    }

    #[test]
    fn accepts_ec_p256_and_p384() {
        let (key, der) = csr_for(&rcgen::PKCS_ECDSA_P256_SHA256);
        let pk = verify_csr(&der).unwrap();
        assert_eq!(pk.kind(), KeyKind::EcP256);
        assert_eq!(
            rcgen::PublicKeyData::der_bytes(&pk),
            rcgen::PublicKeyData::der_bytes(&key)
        );
        let (_, der) = csr_for(&rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(verify_csr(&der).unwrap().kind(), KeyKind::EcP384);
    }

    #[test]
    fn accepts_rsa_sha256() {
        let key = rsa_key();
        let params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let der = params.serialize_request(&key).unwrap().der().to_vec();
        let pk = verify_csr(&der).unwrap();
        assert_eq!(pk.kind(), KeyKind::Rsa(2048));
        assert!(!pk.kind().is_ec());
    }

    #[test]
    fn refuses_bad_signature_and_garbage() {
        let (_, mut der) = csr_for(&rcgen::PKCS_ECDSA_P256_SHA256);
        // Flip a bit inside the signed info (the subject's common name text).
        let pos = der
            .windows(6)
            .position(|w| w == b"rcgen ")
            .expect("rcgen default CN in CSR");
        der[pos] ^= 0x01;
        assert!(matches!(verify_csr(&der), Err(CaError::CsrSignature)));

        assert!(matches!(verify_csr(&[]), Err(CaError::CsrDecode(_))));
        assert!(matches!(
            verify_csr(&[0x30, 0x03, 0x02, 0x01, 0x00]),
            Err(CaError::CsrDecode(_))
        ));
    }

    #[test]
    fn refuses_signature_from_another_key() {
        // Same CSR body, signature taken from a CSR made with another key.
        let (_, a) = csr_for(&rcgen::PKCS_ECDSA_P256_SHA256);
        let (_, b) = csr_for(&rcgen::PKCS_ECDSA_P256_SHA256);
        let ra = CertReq::from_der(&a).unwrap();
        let rb = CertReq::from_der(&b).unwrap();
        let forged = CertReq {
            info: ra.info,
            algorithm: rb.algorithm,
            signature: rb.signature,
        };
        assert!(matches!(
            verify_csr(&forged.to_der().unwrap()),
            Err(CaError::CsrSignature)
        ));
    }

    #[test]
    fn never_panics_on_truncated_or_mangled_input() {
        let (_, der) = csr_for(&rcgen::PKCS_ECDSA_P384_SHA384);
        for n in 0..der.len() {
            assert!(verify_csr(&der[..n]).is_err(), "truncated at {n}");
        }
        for i in 0..der.len() {
            let mut m = der.clone();
            m[i] ^= 0xff;
            // Either rejected, or (if the byte was not covered by anything checked) accepted
            // with the same key; never a panic.
            let _ = verify_csr(&m);
        }
    }

    #[test]
    fn refuses_unsupported_algorithms() {
        let (_, der) = csr_for(&rcgen::PKCS_ED25519);
        assert!(matches!(verify_csr(&der), Err(CaError::CsrAlgorithm(_))));
    }
}
