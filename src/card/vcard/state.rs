//! The card's persistent state (one JSON file): keys as PKCS#8, data objects, PIN/PUK and
//! their counters, the management key, the serial.

use std::collections::BTreeMap;

use rand::RngExt as _;
use serde::{Deserialize, Serialize};

use super::{DEFAULT_PIN, DEFAULT_PUK, DEFAULT_RETRIES, STATE_FORMAT};
use crate::card::keys::{DEFAULT_MGMT_KEY, ManagementKey, MgmtAlg};
use crate::card::tlv;

/// Hex (de)serialisation of byte vectors in the state file.
pub(super) mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

/// A key held in a slot.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct StoredKey {
    /// PIV algorithm id.
    pub(super) alg: u8,
    /// 1 generated on card, 2 imported.
    pub(super) origin: u8,
    /// PKCS#8 DER.
    #[serde(with = "hex_bytes")]
    pub(super) pkcs8: Vec<u8>,
}

/// Everything that survives power-off.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct CardState {
    pub(super) format: u32,
    pub(super) serial: u32,
    #[serde(with = "hex_bytes")]
    pub(super) pin: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub(super) puk: Vec<u8>,
    pub(super) pin_retries_max: u8,
    pub(super) pin_retries_left: u8,
    pub(super) puk_retries_max: u8,
    pub(super) puk_retries_left: u8,
    pub(super) pin_is_default: bool,
    pub(super) puk_is_default: bool,
    pub(super) mgmt_alg: u8,
    #[serde(with = "hex_bytes")]
    pub(super) mgmt_key: Vec<u8>,
    pub(super) mgmt_is_default: bool,
    /// Slot (hex, e.g. "9a") → key.
    pub(super) keys: BTreeMap<String, StoredKey>,
    /// Object tag (hex, e.g. "5fc105") → value inside the `53` wrapper, hex.
    pub(super) objects: BTreeMap<String, String>,
}

impl CardState {
    pub(super) fn factory() -> Self {
        let mut rng = rand::rng();
        let mut objects = BTreeMap::new();
        // CCC with a random card identifier (Yubico/PivApplet template).
        let mut card_id = vec![0xA0, 0, 0, 0x01, 0x16, 0xFF, 0x02];
        card_id.extend((0..14).map(|_| rng.random::<u8>()));
        let mut ccc = Vec::new();
        let _ = tlv::push(&mut ccc, 0xF0, &card_id);
        for (tag, value) in [
            (0xF1, &[0x21][..]),
            (0xF2, &[0x21]),
            (0xF3, &[]),
            (0xF4, &[0x00]),
            (0xF5, &[0x10]),
            (0xF6, &[]),
            (0xF7, &[]),
            (0xFA, &[]),
            (0xFB, &[]),
            (0xFC, &[]),
            (0xFD, &[]),
            (0xFE, &[]),
        ] {
            let _ = tlv::push(&mut ccc, tag, value);
        }
        objects.insert(tag_key(0x5FC107), hex::encode(ccc));
        CardState {
            format: STATE_FORMAT,
            serial: rng.random_range(1_000_000..100_000_000u32),
            pin: DEFAULT_PIN.to_vec(),
            puk: DEFAULT_PUK.to_vec(),
            pin_retries_max: DEFAULT_RETRIES,
            pin_retries_left: DEFAULT_RETRIES,
            puk_retries_max: DEFAULT_RETRIES,
            puk_retries_left: DEFAULT_RETRIES,
            pin_is_default: true,
            puk_is_default: true,
            mgmt_alg: MgmtAlg::TripleDes.id(),
            mgmt_key: DEFAULT_MGMT_KEY.to_vec(),
            mgmt_is_default: true,
            keys: BTreeMap::new(),
            objects,
        }
    }

    pub(super) fn check(&self) -> Result<(), &'static str> {
        if self.format != STATE_FORMAT {
            return Err("unknown state format");
        }
        if self.pin.len() != 8 || self.puk.len() != 8 {
            return Err("PIN and PUK must be 8 bytes");
        }
        let alg = MgmtAlg::from_id(self.mgmt_alg).ok_or("unknown management key algorithm")?;
        if self.mgmt_key.len() != alg.key_len() {
            return Err("management key length does not match its algorithm");
        }
        if self.pin_retries_left > self.pin_retries_max
            || self.puk_retries_left > self.puk_retries_max
        {
            return Err("retry counter above its maximum");
        }
        Ok(())
    }

    pub(super) fn mgmt(&self) -> Option<ManagementKey> {
        let alg = MgmtAlg::from_id(self.mgmt_alg)?;
        ManagementKey::new(alg, self.mgmt_key.clone()).ok()
    }
}

pub(super) fn tag_key(tag: u32) -> String {
    format!("{tag:x}")
}

pub(super) fn slot_key(slot: u8) -> String {
    format!("{slot:02x}")
}
