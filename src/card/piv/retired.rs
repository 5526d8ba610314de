//! The retired key-management slots (82…95) and the Key History object (5FC10C), client side.
//!
//! Owns: [`RETIRED_SLOTS`], the [`KeyHistory`] codec (`C1 01 <on card>` `C2 01 <off card>`
//! [`F3 L <URL>`] `FE 00`), reading the retired certificates the history announces (as OpenSC
//! does: 82…82+n−1), and the two key operations an encryption key is used for (RSA decipher is
//! [`PivClient::sign_digest`] on a padded block; ECDH is [`PivClient::ecdh`]).
//!
//! It does NOT decide which keys go into the slots (the executors do); the planner and the
//! templates know only the four active slots, never these.

use super::{PivClient, PivError, malformed, malformed_tlv};
use crate::card::keys::KeyAlg;
use crate::card::tlv;
use crate::card::transport::Transport;

/// The Key History object's tag.
pub const KEY_HISTORY_TAG: u32 = 0x5FC10C;

/// The twenty retired key-management slots, oldest reference first (82 holds the newest key).
pub const RETIRED_SLOTS: [u8; 20] = [
    0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8B, 0x8C, 0x8D, 0x8E, 0x8F, 0x90, 0x91,
    0x92, 0x93, 0x94, 0x95,
];

/// Whether `slot` is a retired key-management slot.
pub fn is_retired_slot(slot: u8) -> bool {
    RETIRED_SLOTS.contains(&slot)
}

/// The Key History object (SP 800-73-4 §3.3.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyHistory {
    /// Retired keys with their private key on the card (slots 82…82+n−1).
    pub on_card: u8,
    /// Retired certificates whose key is not on the card (found at `url`).
    pub off_card: u8,
    /// Where off-card certificates are published.
    pub url: Option<String>,
}

impl KeyHistory {
    /// The object's value (inside the `53` wrapper). More than 20 keys on the card is refused.
    pub fn encode(&self) -> Result<Vec<u8>, PivError> {
        if usize::from(self.on_card) > RETIRED_SLOTS.len() {
            return Err(PivError::InvalidArgument(
                "at most 20 retired keys fit on a card",
            ));
        }
        let enc = malformed_tlv("key history");
        let mut v = Vec::new();
        tlv::push(&mut v, 0xC1, &[self.on_card]).map_err(&enc)?;
        tlv::push(&mut v, 0xC2, &[self.off_card]).map_err(&enc)?;
        if let Some(url) = &self.url {
            tlv::push(&mut v, 0xF3, url.as_bytes()).map_err(&enc)?;
        }
        tlv::push(&mut v, 0xFE, &[]).map_err(&enc)?;
        Ok(v)
    }

    /// Parses the object's value: `C1` and `C2` of one byte each are required, `C1` at most
    /// 20; a URL must be UTF-8. Anything else is [`PivError::Malformed`].
    pub fn parse(value: &[u8]) -> Result<Self, PivError> {
        let items = tlv::parse_all(value).map_err(malformed_tlv("key history"))?;
        let one = |tag: u32| match items.iter().find(|t| t.tag == tag).map(|t| t.value) {
            Some([n]) => Ok(*n),
            _ => Err(malformed("key history counts")),
        };
        let on_card = one(0xC1)?;
        let off_card = one(0xC2)?;
        if usize::from(on_card) > RETIRED_SLOTS.len() {
            return Err(malformed("key history counts"));
        }
        let url = match items.iter().find(|t| t.tag == 0xF3) {
            Some(t) => Some(
                String::from_utf8(t.value.to_vec()).map_err(|_| malformed("key history URL"))?,
            ),
            None => None,
        };
        Ok(KeyHistory {
            on_card,
            off_card,
            url,
        })
    }

    /// The slots the history says hold a key on the card (82, 83, …).
    pub fn slots(&self) -> &'static [u8] {
        RETIRED_SLOTS
            .get(..usize::from(self.on_card))
            .unwrap_or(&RETIRED_SLOTS)
    }
}

/// What a key slot holds, as far as GET METADATA tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKey {
    /// No key.
    Empty,
    /// A key generated on the card.
    Generated,
    /// An imported key.
    Imported,
    /// The card does not say (no GET METADATA, or no origin in its answer).
    Unknown,
}

impl<T: Transport> PivClient<T> {
    /// Reads the Key History object; `None` if the card has none.
    pub fn read_key_history(&mut self) -> Result<Option<KeyHistory>, PivError> {
        match self.read_object(KEY_HISTORY_TAG)? {
            Some(v) => KeyHistory::parse(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Writes the Key History object (needs management key authentication).
    pub fn write_key_history(&mut self, history: &KeyHistory) -> Result<(), PivError> {
        let v = history.encode()?;
        self.write_object(KEY_HISTORY_TAG, &v)
    }

    /// Deletes the Key History object (needs management key authentication).
    pub fn delete_key_history(&mut self) -> Result<(), PivError> {
        self.write_object(KEY_HISTORY_TAG, &[])
    }

    /// The retired certificates the Key History object announces, as OpenSC reads them:
    /// slots 82…82+n−1 that hold one, newest first. No history: none.
    pub fn read_retired_certificates(&mut self) -> Result<Vec<(u8, Vec<u8>)>, PivError> {
        let Some(history) = self.read_key_history()? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for &slot in history.slots() {
            if let Some(der) = self.read_certificate(slot)? {
                out.push((slot, der));
            }
        }
        Ok(out)
    }

    /// What `slot` holds, from Yubico GET METADATA (origin tag `03`).
    pub fn slot_key(&mut self, slot: u8) -> Result<SlotKey, PivError> {
        let r = self.exchange(0xF7, 0x00, slot, &[], true)?;
        match r.sw {
            0x9000 => {}
            0x6A82 | 0x6A88 => return Ok(SlotKey::Empty),
            _ => return Ok(SlotKey::Unknown),
        }
        match tlv::find(&r.data, 0x03).map_err(malformed_tlv("key metadata"))? {
            Some([0x01]) => Ok(SlotKey::Generated),
            Some([0x02]) => Ok(SlotKey::Imported),
            Some(_) => Err(malformed("key metadata origin")),
            None => Ok(SlotKey::Unknown),
        }
    }

    /// ECDH with the EC key in `slot` (GENERAL AUTHENTICATE with `85`): the x coordinate of
    /// the shared point with `peer_point` (uncompressed SEC1).
    pub fn ecdh(&mut self, slot: u8, alg: KeyAlg, peer_point: &[u8]) -> Result<Vec<u8>, PivError> {
        let field = match alg {
            KeyAlg::EccP256 => 32,
            KeyAlg::EccP384 => 48,
            KeyAlg::Rsa2048 | KeyAlg::Rsa3072 => {
                return Err(PivError::InvalidArgument("ECDH needs an EC key"));
            }
        };
        let mut t = vec![0x82, 0x00];
        let enc = malformed_tlv("ECDH request");
        tlv::push(&mut t, 0x85, peer_point).map_err(&enc)?;
        let req = tlv::encode(0x7C, &t).map_err(&enc)?;
        let r = self.ok(0x87, alg.id(), slot, &req, true)?;
        let inner = super::dyn_auth(&r)?;
        tlv::find(inner, 0x82)
            .map_err(malformed_tlv("ECDH answer"))?
            .filter(|x| x.len() == field)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| malformed("ECDH answer"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::keys::ManagementKey;
    use crate::card::transport::{InProcess, TransportError};
    use crate::card::vcard::VirtualCard;

    #[test]
    fn key_history_round_trips_through_the_card() {
        let mut c = PivClient::new(InProcess::new(VirtualCard::in_memory()));
        c.select().unwrap();
        assert_eq!(c.read_key_history().unwrap(), None);
        assert!(c.read_retired_certificates().unwrap().is_empty());
        let h = KeyHistory {
            on_card: 2,
            off_card: 1,
            url: Some("http://pki.example/history".into()),
        };
        assert!(matches!(
            c.write_key_history(&h),
            Err(PivError::SecurityStatus { ins: 0xDB })
        ));
        c.authenticate(&ManagementKey::factory_default()).unwrap();
        c.write_key_history(&h).unwrap();
        // Always readable: a new session without PIN or management key reads it.
        c.transport_mut().card_mut().reset();
        c.select().unwrap();
        assert_eq!(c.read_key_history().unwrap(), Some(h.clone()));
        assert_eq!(h.slots(), &[0x82, 0x83]);
        c.authenticate(&ManagementKey::factory_default()).unwrap();
        c.write_certificate(0x83, &[0x30, 0x01, 0x00]).unwrap();
        c.write_certificate(0x84, &[0x30, 0x01, 0x01]).unwrap();
        // Only what the history announces is read (84 is beyond it).
        assert_eq!(
            c.read_retired_certificates().unwrap(),
            vec![(0x83, vec![0x30, 0x01, 0x00])]
        );
        c.delete_key_history().unwrap();
        assert_eq!(c.read_key_history().unwrap(), None);
        let too_many = KeyHistory {
            on_card: 21,
            ..KeyHistory::default()
        };
        assert!(matches!(
            c.write_key_history(&too_many),
            Err(PivError::InvalidArgument(_))
        ));
    }

    /// A card answering GET DATA with a fixed object value.
    struct Answers(Vec<u8>);

    impl Transport for Answers {
        fn transmit(&mut self, _: &[u8]) -> Result<Vec<u8>, TransportError> {
            Ok(self.0.clone())
        }
    }

    #[test]
    fn garbage_key_history_answers_are_errors() {
        let answers: [&[u8]; 10] = [
            // No 53 wrapper.
            &[0x54, 0x03, 0xC1, 0x01, 0x01, 0x90, 0x00],
            // Truncated TLV inside.
            &[0x53, 0x03, 0xC1, 0x05, 0x01, 0x90, 0x00],
            // C2 missing.
            &[0x53, 0x05, 0xC1, 0x01, 0x01, 0xFE, 0x00, 0x90, 0x00],
            // C1 two bytes long.
            &[0x53, 0x07, 0xC1, 0x02, 0, 1, 0xC2, 0x01, 0, 0x90, 0x00],
            // More than 20 on the card.
            &[0x53, 0x06, 0xC1, 0x01, 21, 0xC2, 0x01, 0, 0x90, 0x00],
            // A URL that is not UTF-8.
            &[
                0x53, 0x0A, 0xC1, 0x01, 1, 0xC2, 0x01, 0, 0xF3, 0x02, 0xFF, 0xFE, 0x90, 0x00,
            ],
            // Length beyond the data.
            &[0x53, 0x82, 0xFF, 0xFF, 0x90, 0x00],
            // An unexpected status word.
            &[0x6F, 0x00],
            // Not even a status word.
            &[0x90],
            &[],
        ];
        for a in answers {
            let mut c = PivClient::new(Answers(a.to_vec()));
            assert!(c.read_key_history().is_err(), "{a:02X?}");
            assert!(c.read_retired_certificates().is_err(), "{a:02X?}");
        }
        let ok = [
            0x53, 0x08, 0xC1, 0x01, 0, 0xC2, 0x01, 0, 0xFE, 0x00, 0x90, 0x00,
        ];
        let mut c = PivClient::new(Answers(ok.to_vec()));
        assert_eq!(c.read_key_history().unwrap(), Some(KeyHistory::default()));
    }

    #[test]
    fn ecdh_answers_are_checked() {
        let point = [0x04; 65];
        let mut c = PivClient::new(Answers(vec![0x7C, 0x04, 0x82, 0x02, 1, 2, 0x90, 0x00]));
        assert!(c.ecdh(0x82, KeyAlg::EccP256, &point).is_err());
        assert!(matches!(
            c.ecdh(0x82, KeyAlg::Rsa2048, &point),
            Err(PivError::InvalidArgument(_))
        ));
    }
}
