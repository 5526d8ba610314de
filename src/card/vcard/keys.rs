//! The slots' keys: GENERATE ASYMMETRIC KEY PAIR, IMPORT KEY, GET METADATA, and the key
//! operations (raw signatures, ECDH) the card does with them.

use p256::ecdsa::signature::hazmat::PrehashSigner as _;
use p256::elliptic_curve::Generate as _;
use p256::elliptic_curve::point::AffineCoordinates as _;
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use rsa::traits::{PrivateKeyParts as _, PublicKeyParts as _};

use super::state::{StoredKey, slot_key};
use super::{Key, ORIGIN_GENERATED, ORIGIN_IMPORTED, Sw, VirtualCard, key_slot, sw};
use crate::card::keys::{KeyAlg, left_pad};
use crate::card::tlv::{self, CommandApdu};

impl VirtualCard {
    /// The key in `slot`, after checking the algorithm and the slot's PIN policy.
    pub(super) fn usable_key(&mut self, alg: u8, slot: u8) -> Sw<Key> {
        if !key_slot(slot) {
            return Err(sw::BAD_P1P2);
        }
        let stored = self.state.keys.get(&slot_key(slot)).ok_or(sw::NOT_FOUND)?;
        if stored.alg != alg {
            return Err(sw::BAD_P1P2);
        }
        match slot {
            0x9E => {}
            0x9C => {
                if !(self.session.pin_verified && self.session.pin_always_ok) {
                    return Err(sw::SECURITY);
                }
                self.session.pin_always_ok = false;
            }
            _ => {
                if !self.session.pin_verified {
                    return Err(sw::SECURITY);
                }
            }
        }
        load_key(stored).ok_or(sw::CONDITIONS)
    }

    // ---- GENERATE, IMPORT, METADATA, SET MANAGEMENT KEY ----------------------------------

    pub(super) fn generate(&mut self, cmd: &CommandApdu) -> Sw<Vec<u8>> {
        if cmd.p1 != 0 || !key_slot(cmd.p2) {
            return Err(sw::BAD_P1P2);
        }
        if !self.session.mgmt_authed {
            return Err(sw::SECURITY);
        }
        let (template, trailing) = tlv::parse_one(&cmd.data).map_err(|_| sw::BAD_DATA)?;
        if template.tag != 0xAC || !trailing.is_empty() {
            return Err(sw::BAD_DATA);
        }
        let alg_id = match tlv::find(template.value, 0x80) {
            Ok(Some([id])) => *id,
            _ => return Err(sw::BAD_DATA),
        };
        let alg = KeyAlg::from_id(alg_id).ok_or(sw::BAD_DATA)?;
        let mut rng = rand::rng();
        let (key, pkcs8) = match alg {
            KeyAlg::EccP256 => {
                let k = p256::SecretKey::generate_from_rng(&mut rng);
                let der = k.to_pkcs8_der().map_err(|_| sw::CONDITIONS)?;
                (Key::P256(k), der.as_bytes().to_vec())
            }
            KeyAlg::EccP384 => {
                let k = p384::SecretKey::generate_from_rng(&mut rng);
                let der = k.to_pkcs8_der().map_err(|_| sw::CONDITIONS)?;
                (Key::P384(k), der.as_bytes().to_vec())
            }
            KeyAlg::Rsa2048 | KeyAlg::Rsa3072 => {
                let bits = alg.rsa_bytes().unwrap_or(256) * 8;
                let k = rsa::PrivateKey::new(&mut rng, bits).map_err(|_| sw::CONDITIONS)?;
                let der = k.to_pkcs8_der().map_err(|_| sw::CONDITIONS)?;
                (Key::Rsa(Box::new(k)), der.as_bytes().to_vec())
            }
        };
        self.state.keys.insert(
            slot_key(cmd.p2),
            StoredKey {
                alg: alg_id,
                origin: ORIGIN_GENERATED,
                pkcs8,
            },
        );
        let public = public_tlvs(&key)?;
        tlv::encode(0x7F49, &public).map_err(|_| sw::BAD_DATA)
    }

    pub(super) fn import_key(&mut self, cmd: &CommandApdu) -> Sw<Vec<u8>> {
        if !key_slot(cmd.p2) {
            return Err(sw::BAD_P1P2);
        }
        if !self.session.mgmt_authed {
            return Err(sw::SECURITY);
        }
        let alg = KeyAlg::from_id(cmd.p1).ok_or(sw::BAD_P1P2)?;
        let items = tlv::parse_all(&cmd.data).map_err(|_| sw::BAD_DATA)?;
        let get = |tag: u32| {
            items
                .iter()
                .find(|t| t.tag == tag)
                .map(|t| t.value)
                .ok_or(sw::BAD_DATA)
        };
        let pkcs8 = match alg {
            KeyAlg::EccP256 => p256::SecretKey::from_slice(get(0x06)?)
                .map_err(|_| sw::BAD_DATA)?
                .to_pkcs8_der(),
            KeyAlg::EccP384 => p384::SecretKey::from_slice(get(0x06)?)
                .map_err(|_| sw::BAD_DATA)?
                .to_pkcs8_der(),
            KeyAlg::Rsa2048 | KeyAlg::Rsa3072 => {
                let k = alg.rsa_bytes().unwrap_or(0);
                let half = k / 2;
                let part = |tag: u32| -> Sw<rsa::BoxedUint> {
                    let v = get(tag)?;
                    if v.is_empty() || v.len() > half + 1 {
                        return Err(sw::BAD_DATA);
                    }
                    Ok(rsa::BoxedUint::from_be_slice_vartime(v))
                };
                let key = rsa::PrivateKey::from_p_q(part(0x01)?, part(0x02)?, 65537u64.into())
                    .map_err(|_| sw::BAD_DATA)?;
                // The CRT exponent must belong to these primes (catches mixed-up parameters).
                let dp = part(0x03)?.to_be_bytes_trimmed_vartime();
                let ours = key.dp().map(rsa::BoxedUint::to_be_bytes_trimmed_vartime);
                if key.size() != k || ours.as_deref() != Some(&dp[..]) {
                    return Err(sw::BAD_DATA);
                }
                key.to_pkcs8_der()
            }
        }
        .map_err(|_| sw::BAD_DATA)?;
        self.state.keys.insert(
            slot_key(cmd.p2),
            StoredKey {
                alg: alg.id(),
                origin: ORIGIN_IMPORTED,
                pkcs8: pkcs8.as_bytes().to_vec(),
            },
        );
        Ok(Vec::new())
    }

    pub(super) fn metadata(&mut self, cmd: &CommandApdu) -> Sw<Vec<u8>> {
        if cmd.p1 != 0 {
            return Err(sw::BAD_P1P2);
        }
        let st = &self.state;
        let mut out = Vec::new();
        let mut put = |tag: u32, v: &[u8]| tlv::push(&mut out, tag, v).map_err(|_| sw::BAD_DATA);
        match cmd.p2 {
            0x9B => {
                put(0x01, &[st.mgmt_alg])?;
                put(0x02, &[0x00, 0x01])?;
                put(0x05, &[u8::from(st.mgmt_is_default)])?;
            }
            0x80 => {
                put(0x01, &[0xFF])?;
                put(0x05, &[u8::from(st.pin_is_default)])?;
                put(0x06, &[st.pin_retries_max, st.pin_retries_left])?;
            }
            0x81 => {
                put(0x01, &[0xFF])?;
                put(0x05, &[u8::from(st.puk_is_default)])?;
                put(0x06, &[st.puk_retries_max, st.puk_retries_left])?;
            }
            slot if key_slot(slot) => {
                let stored = st.keys.get(&slot_key(slot)).ok_or(sw::NOT_FOUND)?;
                let key = load_key(stored).ok_or(sw::CONDITIONS)?;
                let pin_policy = match slot {
                    0x9E => 0x01,
                    0x9C => 0x03,
                    _ => 0x02,
                };
                put(0x01, &[stored.alg])?;
                put(0x02, &[pin_policy, 0x01])?;
                put(0x03, &[stored.origin])?;
                put(0x04, &public_tlvs(&key)?)?;
            }
            _ => return Err(sw::REF_NOT_FOUND),
        }
        Ok(out)
    }
}

pub(super) fn load_key(stored: &StoredKey) -> Option<Key> {
    match KeyAlg::from_id(stored.alg)? {
        KeyAlg::EccP256 => p256::SecretKey::from_pkcs8_der(&stored.pkcs8)
            .ok()
            .map(Key::P256),
        KeyAlg::EccP384 => p384::SecretKey::from_pkcs8_der(&stored.pkcs8)
            .ok()
            .map(Key::P384),
        KeyAlg::Rsa2048 | KeyAlg::Rsa3072 => rsa::PrivateKey::from_pkcs8_der(&stored.pkcs8)
            .ok()
            .map(|k| Key::Rsa(Box::new(k))),
    }
}

/// The public key as GENERATE and METADATA answer it (without the `7F49` wrapper).
pub(super) fn public_tlvs(key: &Key) -> Sw<Vec<u8>> {
    let mut out = Vec::new();
    let r = match key {
        Key::P256(k) => tlv::push(&mut out, 0x86, &k.public_key().to_sec1_bytes()),
        Key::P384(k) => tlv::push(&mut out, 0x86, &k.public_key().to_sec1_bytes()),
        Key::Rsa(k) => tlv::push(&mut out, 0x81, &k.n_bytes())
            .and_then(|()| tlv::push(&mut out, 0x82, &k.e_bytes())),
    };
    r.map_err(|_| sw::BAD_DATA)?;
    Ok(out)
}

/// ECDSA on a supplied hash (DER signature), or raw RSA on a k-byte block.
pub(super) fn sign_raw(key: &Key, input: &[u8]) -> Sw<Vec<u8>> {
    if input.is_empty() || input.len() > 512 {
        return Err(sw::BAD_DATA);
    }
    match key {
        Key::P256(k) => {
            let sig: p256::ecdsa::Signature = p256::ecdsa::SigningKey::from(k)
                .sign_prehash(input)
                .map_err(|_| sw::BAD_DATA)?;
            Ok(sig.to_der().as_bytes().to_vec())
        }
        Key::P384(k) => {
            let sig: p384::ecdsa::Signature = p384::ecdsa::SigningKey::from(k)
                .sign_prehash(input)
                .map_err(|_| sw::BAD_DATA)?;
            Ok(sig.to_der().as_bytes().to_vec())
        }
        Key::Rsa(k) => {
            let size = k.size();
            if input.len() != size {
                return Err(sw::BAD_DATA);
            }
            let c = rsa::BoxedUint::from_be_slice(input, k.n().as_ref().bits_precision())
                .map_err(|_| sw::BAD_DATA)?;
            let m = rsa::hazmat::rsa_decrypt_and_check(k.as_ref(), Some(&mut rand::rng()), &c)
                .map_err(|_| sw::BAD_DATA)?;
            let bytes = m.to_be_bytes();
            let tail = bytes
                .get(bytes.len().saturating_sub(size)..)
                .unwrap_or_default();
            Ok(left_pad(tail, size))
        }
    }
}

/// ECDH: the x coordinate of the shared point with the peer's public point.
pub(super) fn ecdh(key: &Key, point: &[u8]) -> Sw<Vec<u8>> {
    match key {
        Key::P256(k) => {
            let peer = p256::PublicKey::from_sec1_bytes(point).map_err(|_| sw::BAD_DATA)?;
            let shared = (peer.to_projective() * *k.to_nonzero_scalar()).to_affine();
            Ok(shared.x().to_vec())
        }
        Key::P384(k) => {
            let peer = p384::PublicKey::from_sec1_bytes(point).map_err(|_| sw::BAD_DATA)?;
            let shared = (peer.to_projective() * *k.to_nonzero_scalar()).to_affine();
            Ok(shared.x().to_vec())
        }
        Key::Rsa(_) => Err(sw::BAD_DATA),
    }
}
