//! The PIV client: generic PIV commands (SP 800-73-4) over any [`Transport`].
//!
//! Owns: building C-APDUs, command chaining (CLA `10`) for data over 255 bytes, collecting
//! `61xx` answers with GET RESPONSE, mapping status words to [`PivError`], and parsing the card's
//! answers defensively (a malformed answer is an error, never a panic). Vendor commands are used
//! only as optional probes ([`PivClient::version`], [`PivClient::serial`]) and for the Yubico
//! SET MANAGEMENT KEY and IMPORT KEY, which Keyfleet's own virtual card answers.
//!
//! It does NOT decide what to put on a card (callers do), does not hash or pad data for
//! signatures (see [`super::signer`]), and keeps no state but the transport.

use thiserror::Error;

use super::keys::KeyError;
pub use super::keys::{KeyAlg, ManagementKey, MgmtAlg, PrivateKeyMaterial, PublicKey};
use super::tlv::{self, ApduError, CommandApdu, ResponseApdu, TlvError};
use super::transport::{Transport, TransportError};
use super::vcard::PIV_AID;

mod retired;
pub use retired::{KEY_HISTORY_TAG, KeyHistory, RETIRED_SLOTS, SlotKey, is_retired_slot};

/// Failures of PIV operations.
#[derive(Debug, Error)]
pub enum PivError {
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The card's answer was not a response APDU.
    #[error("malformed response APDU")]
    BadResponse(#[source] ApduError),
    /// The card's answer data was not the TLV structure expected.
    #[error("malformed {what} in the card's answer")]
    Malformed {
        /// Which structure.
        what: &'static str,
        /// The TLV failure, if any.
        #[source]
        source: Option<TlvError>,
    },
    /// A status word the operation does not expect.
    #[error("card answered {sw:04X} to INS {ins:02X}")]
    Status {
        /// The instruction.
        ins: u8,
        /// The status word.
        sw: u16,
    },
    /// The card refused for lack of PIN verification or management key authentication (`6982`).
    #[error("security status not satisfied for INS {ins:02X}")]
    SecurityStatus {
        /// The instruction.
        ins: u8,
    },
    /// The PIN was wrong; `retries_left` tries remain (0 means it is now blocked).
    #[error("wrong PIN, {retries_left} tries left")]
    WrongPin {
        /// Remaining tries.
        retries_left: u8,
    },
    /// The PIN is blocked (`6983`).
    #[error("PIN blocked")]
    PinBlocked,
    /// The PUK was wrong; `retries_left` tries remain.
    #[error("wrong PUK, {retries_left} tries left")]
    WrongPuk {
        /// Remaining tries.
        retries_left: u8,
    },
    /// The PUK is blocked.
    #[error("PUK blocked")]
    PukBlocked,
    /// A PIN or PUK that is not 6–8 bytes (checked before sending), or the card rejected it.
    #[error("PIN/PUK must be 6 to 8 bytes")]
    InvalidPin,
    /// The card rejected our management key (mutual authentication step 2 failed).
    #[error("management key rejected by the card")]
    WrongManagementKey,
    /// The card's answer to our challenge was wrong: it does not hold the same management key.
    #[error("card failed to prove the management key")]
    CardAuthFailed,
    /// A key operation on the client side failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A slot that has no certificate object (or is not a key slot).
    #[error("slot {0:02X} has no certificate object")]
    BadSlot(u8),
    /// An argument the client refuses before sending (e.g. a malformed expiry date).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// The certificate object is gzip-compressed, which this client does not inflate.
    #[error("certificate in slot {0:02X} is compressed")]
    CompressedCertificate(u8),
    /// The card kept answering `61xx` past any sane response size.
    #[error("response chaining did not end")]
    EndlessResponse,
}

/// The result of the VERIFY status form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinStatus {
    /// The PIN is verified in this session.
    Verified,
    /// Not verified; this many tries remain.
    NotVerified {
        /// Remaining tries.
        retries_left: u8,
    },
    /// The PIN is blocked.
    Blocked,
}

/// What [`PivClient::verify_pin_guarded`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinCheck {
    /// The PIN verified.
    Verified,
    /// The card refused it; this many tries are left.
    Refused {
        /// Remaining tries.
        retries_left: u8,
    },
    /// Not tried: a wrong try would leave fewer tries than the caller allows (0: blocked).
    TooFewTries {
        /// Remaining tries.
        retries_left: u8,
    },
}

/// What GET METADATA (Yubico `00 F7`) tells of the PIN or the PUK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinMetadata {
    /// Whether it still has its factory value.
    pub is_default: bool,
    /// The tries it is set to (what a correct try restores).
    pub total: u8,
    /// The tries left now.
    pub left: u8,
}

/// The PIN and PUK tries left, read without spending one (see [`PivClient::tries_left`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TriesLeft {
    /// PIN tries left (0: blocked); `None` when the card answers neither the VERIFY status
    /// form nor GET METADATA.
    pub pin: Option<u8>,
    /// PUK tries left (0: blocked); `None` when the card lacks GET METADATA: PIV has no
    /// standard way to read the PUK counter, and trying a PUK would spend a try.
    pub puk: Option<u8>,
}

/// The parts of a CHUID Keyfleet uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chuid {
    /// The card's GUID (tag 34).
    pub guid: [u8; 16],
    /// Expiry date `YYYYMMDD` (tag 35).
    pub expiry: String,
}

/// The FASC-N used by non-federal issuers ("9999" agency code), as Yubico tools write it.
const NON_FEDERAL_FASCN: [u8; 25] = [
    0xD4, 0xE7, 0x39, 0xDA, 0x73, 0x9C, 0xED, 0x39, 0xCE, 0x73, 0x9D, 0x83, 0x68, 0x58, 0x21, 0x08,
    0x42, 0x10, 0x84, 0x21, 0xC8, 0x42, 0x10, 0xC3, 0xEB,
];

const MAX_RESPONSE_ROUNDS: usize = 256;

/// The data object holding the certificate for a key slot (9A, 9C, 9D, 9E and the retired
/// key-management slots 82…95, whose objects are 5FC10D…5FC120).
pub fn cert_object_tag(slot: u8) -> Option<u32> {
    match slot {
        0x9A => Some(0x5FC105),
        0x9C => Some(0x5FC10A),
        0x9D => Some(0x5FC10B),
        0x9E => Some(0x5FC101),
        0x82..=0x95 => Some(0x5FC10D + u32::from(slot - 0x82)),
        _ => None,
    }
}

fn malformed(what: &'static str) -> PivError {
    PivError::Malformed { what, source: None }
}

fn malformed_tlv(what: &'static str) -> impl Fn(TlvError) -> PivError {
    move |e| PivError::Malformed {
        what,
        source: Some(e),
    }
}

/// Encodes a PIN/PUK: 6–8 bytes, right-padded with `FF` to 8.
fn encode_pin(pin: &str) -> Result<[u8; 8], PivError> {
    let b = pin.as_bytes();
    if !(6..=8).contains(&b.len()) || b.contains(&0xFF) {
        return Err(PivError::InvalidPin);
    }
    let mut out = [0xFF; 8];
    out.iter_mut().zip(b).for_each(|(o, i)| *o = *i);
    Ok(out)
}

/// A PIV client over a transport.
#[derive(Debug)]
pub struct PivClient<T: Transport> {
    t: T,
}

impl<T: Transport> PivClient<T> {
    /// A client over `t` (call [`PivClient::select`] first).
    pub fn new(t: T) -> Self {
        PivClient { t }
    }

    /// The transport.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.t
    }

    /// Gives the transport back.
    pub fn into_transport(self) -> T {
        self.t
    }

    fn transmit(&mut self, apdu: &CommandApdu) -> Result<ResponseApdu, PivError> {
        let bytes = apdu.to_short_bytes().map_err(PivError::BadResponse)?;
        let r = self.t.transmit(&bytes)?;
        ResponseApdu::parse(&r).map_err(PivError::BadResponse)
    }

    /// Sends a command (chained if over 255 bytes) and collects `61xx` data. `expect_data`
    /// adds `Le = 00`; without data and without it the APDU is case 1.
    fn exchange(
        &mut self,
        ins: u8,
        p1: u8,
        p2: u8,
        data: &[u8],
        expect_data: bool,
    ) -> Result<ResponseApdu, PivError> {
        let mut chunks: Vec<&[u8]> = data.chunks(255).collect();
        let last = chunks.pop().unwrap_or_default();
        for chunk in chunks {
            let r = self.transmit(&CommandApdu::new(0x10, ins, p1, p2, chunk.to_vec()))?;
            if r.sw != 0x9000 {
                return Ok(r);
            }
        }
        let mut cmd = CommandApdu::new(0x00, ins, p1, p2, last.to_vec());
        if expect_data {
            cmd.le = Some(256);
        }
        let mut r = self.transmit(&cmd)?;
        let mut rounds = 0;
        while r.sw >> 8 == 0x61 {
            rounds += 1;
            if rounds > MAX_RESPONSE_ROUNDS {
                return Err(PivError::EndlessResponse);
            }
            let mut gr = CommandApdu::new(0x00, 0xC0, 0x00, 0x00, Vec::new());
            gr.le = Some(match r.sw & 0xFF {
                0 => 256,
                n => usize::from(n as u8),
            });
            let next = self.transmit(&gr)?;
            r.data.extend_from_slice(&next.data);
            r.sw = next.sw;
        }
        Ok(r)
    }

    /// Sends and requires `9000`; `6982` becomes [`PivError::SecurityStatus`].
    fn ok(
        &mut self,
        ins: u8,
        p1: u8,
        p2: u8,
        data: &[u8],
        expect_data: bool,
    ) -> Result<Vec<u8>, PivError> {
        let r = self.exchange(ins, p1, p2, data, expect_data)?;
        match r.sw {
            0x9000 => Ok(r.data),
            0x6982 => Err(PivError::SecurityStatus { ins }),
            sw => Err(PivError::Status { ins, sw }),
        }
    }

    /// SELECTs the PIV application.
    pub fn select(&mut self) -> Result<(), PivError> {
        self.ok(0xA4, 0x04, 0x00, &PIV_AID, true).map(|_| ())
    }

    /// GET VERSION (Yubico extension) as an optional probe: `None` if the card does not know it.
    pub fn version(&mut self) -> Result<Option<[u8; 3]>, PivError> {
        let r = self.exchange(0xFD, 0, 0, &[], true)?;
        match (r.sw, r.data.as_slice()) {
            (0x9000, [a, b, c]) => Ok(Some([*a, *b, *c])),
            (0x9000, _) => Err(malformed("version")),
            _ => Ok(None),
        }
    }

    /// GET SERIAL (Yubico extension) as an optional probe: `None` if the card does not know it.
    pub fn serial(&mut self) -> Result<Option<u32>, PivError> {
        let r = self.exchange(0xF8, 0, 0, &[], true)?;
        match (r.sw, r.data.as_slice()) {
            (0x9000, [a, b, c, d]) => Ok(Some(u32::from_be_bytes([*a, *b, *c, *d]))),
            (0x9000, _) => Err(malformed("serial")),
            _ => Ok(None),
        }
    }

    /// GET DATA of an object: its value inside the `53` wrapper, `None` if absent (`6A82`).
    pub fn read_object(&mut self, tag: u32) -> Result<Option<Vec<u8>>, PivError> {
        let mut req = Vec::new();
        tlv::push(&mut req, 0x5C, &tag_bytes(tag)).map_err(malformed_tlv("object tag"))?;
        let r = self.exchange(0xCB, 0x3F, 0xFF, &req, true)?;
        match r.sw {
            0x9000 => {}
            0x6A82 => return Ok(None),
            0x6982 => return Err(PivError::SecurityStatus { ins: 0xCB }),
            sw => return Err(PivError::Status { ins: 0xCB, sw }),
        }
        let wrapper = match tag {
            0x7E => 0x7E,
            0x7F61 => 0x7F61,
            _ => 0x53,
        };
        let (t, _) = tlv::parse_one(&r.data).map_err(malformed_tlv("data object"))?;
        if t.tag != wrapper {
            return Err(malformed("data object wrapper"));
        }
        Ok(Some(t.value.to_vec()))
    }

    /// PUT DATA of an object (`value` goes inside the `53` wrapper; empty deletes).
    pub fn write_object(&mut self, tag: u32, value: &[u8]) -> Result<(), PivError> {
        let mut req = Vec::new();
        tlv::push(&mut req, 0x5C, &tag_bytes(tag)).map_err(malformed_tlv("object tag"))?;
        tlv::push(&mut req, 0x53, value).map_err(malformed_tlv("object value"))?;
        self.ok(0xDB, 0x3F, 0xFF, &req, false).map(|_| ())
    }

    /// Reads the CHUID's GUID and expiry, `None` if the card has no CHUID.
    pub fn read_chuid(&mut self) -> Result<Option<Chuid>, PivError> {
        let Some(value) = self.read_object(0x5FC102)? else {
            return Ok(None);
        };
        let items = tlv::parse_all(&value).map_err(malformed_tlv("CHUID"))?;
        let guid = items
            .iter()
            .find(|t| t.tag == 0x34)
            .and_then(|t| <[u8; 16]>::try_from(t.value).ok())
            .ok_or_else(|| malformed("CHUID GUID"))?;
        let expiry = items
            .iter()
            .find(|t| t.tag == 0x35)
            .map(|t| String::from_utf8_lossy(t.value).into_owned())
            .unwrap_or_default();
        Ok(Some(Chuid { guid, expiry }))
    }

    /// Writes a CHUID (non-federal FASC-N, `guid`, expiry `YYYYMMDD`, empty signature).
    pub fn write_chuid(&mut self, guid: [u8; 16], expiry_yyyymmdd: &str) -> Result<(), PivError> {
        if expiry_yyyymmdd.len() != 8 || !expiry_yyyymmdd.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PivError::InvalidArgument("CHUID expiry must be YYYYMMDD"));
        }
        let mut v = Vec::new();
        let enc = malformed_tlv("CHUID");
        tlv::push(&mut v, 0x30, &NON_FEDERAL_FASCN).map_err(&enc)?;
        tlv::push(&mut v, 0x34, &guid).map_err(&enc)?;
        tlv::push(&mut v, 0x35, expiry_yyyymmdd.as_bytes()).map_err(&enc)?;
        tlv::push(&mut v, 0x3E, &[]).map_err(&enc)?;
        tlv::push(&mut v, 0xFE, &[]).map_err(&enc)?;
        self.write_object(0x5FC102, &v)
    }

    /// The card's identity: the CHUID GUID in lower-case hex, `None` without a CHUID.
    pub fn card_id(&mut self) -> Result<Option<String>, PivError> {
        Ok(self.read_chuid()?.map(|c| hex::encode(c.guid)))
    }

    /// Mutual authentication with the management key (9B): both sides prove the key.
    pub fn authenticate(&mut self, key: &ManagementKey) -> Result<(), PivError> {
        let alg = key.alg.id();
        let bs = key.alg.block_len();
        let r = self.ok(0x87, alg, 0x9B, &[0x7C, 0x02, 0x80, 0x00], true)?;
        let inner = dyn_auth(&r)?;
        let enc_w = tlv::find(inner, 0x80)
            .map_err(malformed_tlv("witness"))?
            .filter(|w| w.len() == bs)
            .ok_or_else(|| malformed("witness"))?;
        let witness = key.decrypt(enc_w)?;
        let mut challenge = vec![0u8; bs];
        rand::fill(&mut challenge[..]);
        let mut t = Vec::new();
        let enc = malformed_tlv("authentication request");
        tlv::push(&mut t, 0x80, &witness).map_err(&enc)?;
        tlv::push(&mut t, 0x81, &challenge).map_err(&enc)?;
        let req = tlv::encode(0x7C, &t).map_err(&enc)?;
        let r = self.exchange(0x87, alg, 0x9B, &req, true)?;
        match r.sw {
            0x9000 => {}
            0x6982 | 0x6A80 => return Err(PivError::WrongManagementKey),
            sw => return Err(PivError::Status { ins: 0x87, sw }),
        }
        let inner = dyn_auth(&r.data)?;
        let resp = tlv::find(inner, 0x82)
            .map_err(malformed_tlv("challenge response"))?
            .ok_or_else(|| malformed("challenge response"))?;
        if resp != key.encrypt(&challenge)?.as_slice() {
            return Err(PivError::CardAuthFailed);
        }
        Ok(())
    }

    /// Replaces the management key (Yubico SET MANAGEMENT KEY; needs prior authentication).
    pub fn set_management_key(&mut self, new: &ManagementKey) -> Result<(), PivError> {
        let len = u8::try_from(new.key.len())
            .map_err(|_| PivError::InvalidArgument("management key too long"))?;
        let mut data = vec![new.alg.id(), 0x9B, len];
        data.extend_from_slice(&new.key);
        self.ok(0xFF, 0xFF, 0xFF, &data, false).map(|_| ())
    }

    /// VERIFY the PIN. Wrong: [`PivError::WrongPin`]; blocked: [`PivError::PinBlocked`].
    pub fn verify_pin(&mut self, pin: &str) -> Result<(), PivError> {
        let pin = encode_pin(pin)?;
        let r = self.exchange(0x20, 0x00, 0x80, &pin, false)?;
        pin_result(0x20, r.sw, true)
    }

    /// VERIFY status form: is the PIN verified, and how many tries remain.
    pub fn pin_retries(&mut self) -> Result<PinStatus, PivError> {
        let r = self.exchange(0x20, 0x00, 0x80, &[], false)?;
        match r.sw {
            0x9000 => Ok(PinStatus::Verified),
            0x6983 | 0x63C0 => Ok(PinStatus::Blocked),
            sw if sw & 0xFFF0 == 0x63C0 => Ok(PinStatus::NotVerified {
                retries_left: (sw & 0x0F) as u8,
            }),
            sw => Err(PivError::Status { ins: 0x20, sw }),
        }
    }

    /// VERIFY the PIN only if a wrong try would leave at least `keep` tries: reads the retry
    /// counter first (the status form; after logging out when the session is already
    /// verified, so that the counter shows). A card that answers neither counter form is
    /// not sent the PIN.
    pub fn verify_pin_guarded(&mut self, pin: &str, keep: u8) -> Result<PinCheck, PivError> {
        let mut status = self.pin_retries()?;
        if status == PinStatus::Verified {
            self.logout_pin()?;
            status = self.pin_retries()?;
        }
        let left = match status {
            PinStatus::NotVerified { retries_left } => retries_left,
            PinStatus::Blocked => 0,
            // Still verified after a logout: the counter cannot be read.
            PinStatus::Verified => return Err(malformed("PIN status after logout")),
        };
        if left <= keep {
            return Ok(PinCheck::TooFewTries { retries_left: left });
        }
        match self.verify_pin(pin) {
            Ok(()) => Ok(PinCheck::Verified),
            Err(PivError::WrongPin { retries_left }) => Ok(PinCheck::Refused { retries_left }),
            Err(PivError::PinBlocked) => Ok(PinCheck::TooFewTries { retries_left: 0 }),
            Err(e) => Err(e),
        }
    }

    /// The PIN and PUK tries left, never spending one: the PIN's from the VERIFY status form
    /// (after logging out when the session is verified, as [`Self::verify_pin_guarded`]
    /// does), else from GET METADATA `80`; the PUK's from GET METADATA `81` only.
    pub fn tries_left(&mut self) -> Result<TriesLeft, PivError> {
        let mut status = self.pin_retries();
        if matches!(status, Ok(PinStatus::Verified)) {
            status = self.logout_pin().and_then(|()| self.pin_retries());
        }
        let pin = match status {
            Ok(PinStatus::NotVerified { retries_left }) => Some(retries_left),
            Ok(PinStatus::Blocked) => Some(0),
            // Still verified, or no status form (or no logout): the metadata, if it answers.
            Ok(PinStatus::Verified) | Err(PivError::Status { .. }) => {
                self.pin_metadata(0x80)?.map(|m| m.left)
            }
            Err(e) => return Err(e),
        };
        let puk = self.pin_metadata(0x81)?.map(|m| m.left);
        Ok(TriesLeft { pin, puk })
    }

    /// VERIFY `FF`: forget the PIN verification of this session (SP 800-73-4 reset of the
    /// security status), so that the status form shows the tries left again.
    pub fn logout_pin(&mut self) -> Result<(), PivError> {
        let r = self.exchange(0x20, 0xFF, 0x80, &[], false)?;
        match r.sw {
            0x9000 => Ok(()),
            sw => Err(PivError::Status { ins: 0x20, sw }),
        }
    }

    /// SET PIN RETRIES (Yubico `00 FA`): the PIN and PUK try counters. Needs management key
    /// authentication and a verified PIN; the card then puts PIN and PUK back to their
    /// factory values (so set them after this). A card without the command answers
    /// [`PivError::Status`] (`6D00`).
    pub fn set_pin_retries(&mut self, pin_tries: u8, puk_tries: u8) -> Result<(), PivError> {
        self.ok(0xFA, pin_tries, puk_tries, &[], false).map(|_| ())
    }

    /// GET METADATA (Yubico `00 F7`, YubiKey 5.3 and later) of the PIN (`0x80`) or the PUK
    /// (`0x81`) as an optional probe: `None` if the card does not know the command.
    pub fn pin_metadata(&mut self, reference: u8) -> Result<Option<PinMetadata>, PivError> {
        if !matches!(reference, 0x80 | 0x81) {
            return Err(PivError::InvalidArgument("metadata of a PIN or PUK only"));
        }
        let r = self.exchange(0xF7, 0x00, reference, &[], true)?;
        if r.sw != 0x9000 {
            return Ok(None);
        }
        let default = tlv::find(&r.data, 0x05).map_err(malformed_tlv("PIN metadata"))?;
        let tries = tlv::find(&r.data, 0x06).map_err(malformed_tlv("PIN metadata"))?;
        match (default, tries) {
            (Some([d]), Some([total, left])) => Ok(Some(PinMetadata {
                is_default: *d != 0,
                total: *total,
                left: *left,
            })),
            _ => Err(malformed("PIN metadata")),
        }
    }

    /// CHANGE REFERENCE DATA for the PIN.
    pub fn change_pin(&mut self, old: &str, new: &str) -> Result<(), PivError> {
        let data = [encode_pin(old)?, encode_pin(new)?].concat();
        let r = self.exchange(0x24, 0x00, 0x80, &data, false)?;
        pin_result(0x24, r.sw, true)
    }

    /// CHANGE REFERENCE DATA for the PUK.
    pub fn change_puk(&mut self, old: &str, new: &str) -> Result<(), PivError> {
        let data = [encode_pin(old)?, encode_pin(new)?].concat();
        let r = self.exchange(0x24, 0x00, 0x81, &data, false)?;
        pin_result(0x24, r.sw, false)
    }

    /// RESET RETRY COUNTER: unblock the PIN with the PUK and set a new PIN.
    pub fn unblock_pin(&mut self, puk: &str, new_pin: &str) -> Result<(), PivError> {
        let data = [encode_pin(puk)?, encode_pin(new_pin)?].concat();
        let r = self.exchange(0x2C, 0x00, 0x80, &data, false)?;
        pin_result(0x2C, r.sw, false)
    }

    /// GENERATE ASYMMETRIC KEY PAIR in `slot` (needs management key authentication).
    pub fn generate_key(&mut self, slot: u8, alg: KeyAlg) -> Result<PublicKey, PivError> {
        let req = [0xAC, 0x03, 0x80, 0x01, alg.id()];
        let r = self.ok(0x47, 0x00, slot, &req, true)?;
        let (outer, _) = tlv::parse_one(&r).map_err(malformed_tlv("public key"))?;
        if outer.tag != 0x7F49 {
            return Err(malformed("public key template"));
        }
        let items = tlv::parse_all(outer.value).map_err(malformed_tlv("public key"))?;
        let get = |tag: u32| items.iter().find(|t| t.tag == tag).map(|t| t.value);
        match alg {
            KeyAlg::EccP256 | KeyAlg::EccP384 => {
                let point = get(0x86).ok_or_else(|| malformed("EC point"))?;
                Ok(PublicKey::from_ec_point(alg, point)?)
            }
            KeyAlg::Rsa2048 | KeyAlg::Rsa3072 => {
                let n = get(0x81).ok_or_else(|| malformed("RSA modulus"))?;
                let e = get(0x82).ok_or_else(|| malformed("RSA exponent"))?;
                Ok(PublicKey::from_rsa_parts(alg, n, e)?)
            }
        }
    }

    /// IMPORT KEY into `slot` (Yubico extension; needs management key authentication).
    pub fn import_key(&mut self, slot: u8, key: &PrivateKeyMaterial) -> Result<(), PivError> {
        let mut data = Vec::new();
        let enc = malformed_tlv("key material");
        match key {
            PrivateKeyMaterial::Ec { scalar, .. } => {
                tlv::push(&mut data, 0x06, scalar).map_err(&enc)?;
            }
            PrivateKeyMaterial::Rsa {
                p, q, dp, dq, qinv, ..
            } => {
                for (tag, v) in [(0x01, p), (0x02, q), (0x03, dp), (0x04, dq), (0x05, qinv)] {
                    tlv::push(&mut data, tag, v).map_err(&enc)?;
                }
            }
        }
        self.ok(0xFE, key.alg().id(), slot, &data, false)
            .map(|_| ())
    }

    /// GENERAL AUTHENTICATE with a private key: ECDSA over a hash (DER signature back) or raw
    /// RSA over a k-byte padded block (k bytes back).
    pub fn sign_digest(
        &mut self,
        slot: u8,
        alg: KeyAlg,
        digest_or_padded: &[u8],
    ) -> Result<Vec<u8>, PivError> {
        let mut t = vec![0x82, 0x00];
        let enc = malformed_tlv("signature request");
        tlv::push(&mut t, 0x81, digest_or_padded).map_err(&enc)?;
        let req = tlv::encode(0x7C, &t).map_err(&enc)?;
        let r = self.ok(0x87, alg.id(), slot, &req, true)?;
        let inner = dyn_auth(&r)?;
        tlv::find(inner, 0x82)
            .map_err(malformed_tlv("signature"))?
            .map(<[u8]>::to_vec)
            .ok_or_else(|| malformed("signature"))
    }

    /// Writes the certificate object of `slot` (`70` DER, `71 01 00`, `FE 00`).
    pub fn write_certificate(&mut self, slot: u8, der: &[u8]) -> Result<(), PivError> {
        let tag = cert_object_tag(slot).ok_or(PivError::BadSlot(slot))?;
        let mut v = Vec::new();
        let enc = malformed_tlv("certificate object");
        tlv::push(&mut v, 0x70, der).map_err(&enc)?;
        tlv::push(&mut v, 0x71, &[0x00]).map_err(&enc)?;
        tlv::push(&mut v, 0xFE, &[]).map_err(&enc)?;
        self.write_object(tag, &v)
    }

    /// Reads the certificate DER of `slot`, `None` if the slot has none.
    pub fn read_certificate(&mut self, slot: u8) -> Result<Option<Vec<u8>>, PivError> {
        let tag = cert_object_tag(slot).ok_or(PivError::BadSlot(slot))?;
        let Some(v) = self.read_object(tag)? else {
            return Ok(None);
        };
        let items = tlv::parse_all(&v).map_err(malformed_tlv("certificate object"))?;
        if let Some(info) = items.iter().find(|t| t.tag == 0x71)
            && info.value.first().is_some_and(|b| b & 0x81 != 0)
        {
            return Err(PivError::CompressedCertificate(slot));
        }
        match items.iter().find(|t| t.tag == 0x70) {
            Some(t) if !t.value.is_empty() => Ok(Some(t.value.to_vec())),
            _ => Ok(None),
        }
    }

    /// Deletes the certificate object of `slot` (PUT DATA `53 00`).
    pub fn delete_certificate(&mut self, slot: u8) -> Result<(), PivError> {
        let tag = cert_object_tag(slot).ok_or(PivError::BadSlot(slot))?;
        self.write_object(tag, &[])
    }
}

/// The contents of a `7C` dynamic authentication template.
fn dyn_auth(data: &[u8]) -> Result<&[u8], PivError> {
    let (t, _) = tlv::parse_one(data).map_err(malformed_tlv("authentication template"))?;
    if t.tag != 0x7C {
        return Err(malformed("authentication template"));
    }
    Ok(t.value)
}

/// Maps the status word of a PIN (`is_pin`) or PUK command.
fn pin_result(ins: u8, sw: u16, is_pin: bool) -> Result<(), PivError> {
    match sw {
        0x9000 => Ok(()),
        0x6983 if is_pin => Err(PivError::PinBlocked),
        0x6983 => Err(PivError::PukBlocked),
        0x6A80 => Err(PivError::InvalidPin),
        sw if sw & 0xFFF0 == 0x63C0 => {
            let retries_left = (sw & 0x0F) as u8;
            if is_pin {
                Err(PivError::WrongPin { retries_left })
            } else {
                Err(PivError::WrongPuk { retries_left })
            }
        }
        sw => Err(PivError::Status { ins, sw }),
    }
}

fn tag_bytes(tag: u32) -> Vec<u8> {
    let b = tag.to_be_bytes();
    let skip = b.iter().take(3).take_while(|&&x| x == 0).count();
    b.get(skip..).unwrap_or_default().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::transport::InProcess;
    use crate::card::vcard::VirtualCard;

    /// Records every APDU sent, to check chaining on the wire.
    struct Recorder {
        inner: InProcess,
        sent: Vec<Vec<u8>>,
    }

    impl Transport for Recorder {
        fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
            self.sent.push(apdu.to_vec());
            self.inner.transmit(apdu)
        }
    }

    fn client() -> PivClient<Recorder> {
        let mut c = PivClient::new(Recorder {
            inner: InProcess::new(VirtualCard::in_memory()),
            sent: Vec::new(),
        });
        c.select().unwrap();
        c
    }

    fn verify_p256(public: &PublicKey, hash: &[u8], der_sig: &[u8]) {
        use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
        use spki::DecodePublicKey as _;
        let vk = p256::ecdsa::VerifyingKey::from_public_key_der(public.spki_der()).unwrap();
        let sig = p256::ecdsa::Signature::from_der(der_sig).unwrap();
        vk.verify_prehash(hash, &sig).unwrap();
    }

    #[test]
    fn pin_puk_lifecycle() {
        let mut c = client();
        assert_eq!(
            c.pin_retries().unwrap(),
            PinStatus::NotVerified { retries_left: 3 }
        );
        assert!(matches!(
            c.verify_pin("000000"),
            Err(PivError::WrongPin { retries_left: 2 })
        ));
        c.verify_pin("123456").unwrap();
        assert_eq!(c.pin_retries().unwrap(), PinStatus::Verified);
        c.change_pin("123456", "24681357").unwrap();
        for left in [2, 1, 0] {
            assert!(matches!(
                c.verify_pin("123456"),
                Err(PivError::WrongPin { retries_left }) if retries_left == left
            ));
        }
        assert!(matches!(
            c.verify_pin("24681357"),
            Err(PivError::PinBlocked)
        ));
        assert_eq!(c.pin_retries().unwrap(), PinStatus::Blocked);
        assert!(matches!(
            c.unblock_pin("87654321", "111111"),
            Err(PivError::WrongPuk { retries_left: 2 })
        ));
        c.unblock_pin("12345678", "111111").unwrap();
        c.verify_pin("111111").unwrap();
        c.change_puk("12345678", "99887766").unwrap();
        assert!(matches!(
            c.change_puk("12345678", "11223344"),
            Err(PivError::WrongPuk { retries_left: 2 })
        ));
        assert!(matches!(c.verify_pin("12345"), Err(PivError::InvalidPin)));
        assert!(matches!(
            c.verify_pin("123456789"),
            Err(PivError::InvalidPin)
        ));
    }

    #[test]
    fn management_key_rotation_and_admin_commands() {
        let mut c = client();
        assert!(matches!(
            c.write_chuid([1; 16], "20300101"),
            Err(PivError::SecurityStatus { ins: 0xDB })
        ));
        let default = ManagementKey::factory_default();
        c.authenticate(&default).unwrap();
        let new = ManagementKey::new(MgmtAlg::Aes256, vec![0x42; 32]).unwrap();
        c.set_management_key(&new).unwrap();
        c.transport_mut().inner.card_mut().reset();
        c.select().unwrap();
        assert!(matches!(
            c.authenticate(&default),
            Err(PivError::Status { sw: 0x6A86, .. })
        ));
        let wrong = ManagementKey::new(MgmtAlg::Aes256, vec![0x43; 32]).unwrap();
        assert!(matches!(
            c.authenticate(&wrong),
            Err(PivError::WrongManagementKey)
        ));
        c.authenticate(&new).unwrap();
        assert_eq!(c.card_id().unwrap(), None);
        c.write_chuid([0xAB; 16], "20300101").unwrap();
        let chuid = c.read_chuid().unwrap().unwrap();
        assert_eq!(
            (chuid.guid, chuid.expiry.as_str()),
            ([0xAB; 16], "20300101")
        );
        assert_eq!(c.card_id().unwrap().unwrap(), "ab".repeat(16));
        assert!(matches!(
            c.write_chuid([0; 16], "2030-01-01"),
            Err(PivError::InvalidArgument(_))
        ));
        assert_eq!(c.version().unwrap(), Some([5, 4, 3]));
        let serial = c.transport_mut().inner.card().serial();
        assert_eq!(c.serial().unwrap(), Some(serial));
    }

    #[test]
    fn pin_retries_are_set_with_admin_and_pin_and_reset_both_secrets() {
        let mut c = client();
        c.change_pin("123456", "24681357").unwrap();
        assert!(matches!(
            c.set_pin_retries(5, 4),
            Err(PivError::SecurityStatus { ins: 0xFA })
        ));
        c.authenticate(&ManagementKey::factory_default()).unwrap();
        assert!(matches!(
            c.set_pin_retries(5, 4),
            Err(PivError::SecurityStatus { ins: 0xFA })
        ));
        c.verify_pin("24681357").unwrap();
        for bad in [(0, 3), (3, 0), (16, 3)] {
            assert!(matches!(
                c.set_pin_retries(bad.0, bad.1),
                Err(PivError::Status { sw: 0x6A86, .. })
            ));
        }
        c.set_pin_retries(5, 4).unwrap();
        assert_eq!(
            c.pin_retries().unwrap(),
            PinStatus::NotVerified { retries_left: 5 }
        );
        assert!(matches!(
            c.verify_pin("24681357"),
            Err(PivError::WrongPin { retries_left: 4 })
        ));
        c.verify_pin("123456").unwrap();
        assert_eq!(c.pin_retries().unwrap(), PinStatus::Verified);
        c.logout_pin().unwrap();
        assert_eq!(
            c.pin_retries().unwrap(),
            PinStatus::NotVerified { retries_left: 5 }
        );
        assert!(matches!(
            c.change_puk("00000000", "11223344"),
            Err(PivError::WrongPuk { retries_left: 3 })
        ));
        c.change_puk("12345678", "11223344").unwrap();
        // GET METADATA shows the counters set and whether each secret is the factory one.
        let pin = c.pin_metadata(0x80).unwrap().unwrap();
        assert_eq!((pin.is_default, pin.total, pin.left), (true, 5, 5));
        let puk = c.pin_metadata(0x81).unwrap().unwrap();
        assert_eq!((puk.is_default, puk.total, puk.left), (false, 4, 4));
        assert!(matches!(
            c.pin_metadata(0x9A),
            Err(PivError::InvalidArgument(_))
        ));
    }

    #[test]
    fn tries_are_read_without_spending_any() {
        let mut c = client();
        let all = TriesLeft {
            pin: Some(3),
            puk: Some(3),
        };
        assert_eq!(c.tries_left().unwrap(), all);
        assert!(c.verify_pin("000000").is_err());
        assert!(c.unblock_pin("00000000", "123456").is_err());
        let after = TriesLeft {
            pin: Some(2),
            puk: Some(2),
        };
        assert_eq!(c.tries_left().unwrap(), after);
        // Reading again spends nothing.
        assert_eq!(c.tries_left().unwrap(), after);
        // A verified session is logged out to show the counter (restored by the right PIN).
        c.verify_pin("123456").unwrap();
        assert_eq!(c.tries_left().unwrap().pin, Some(3));
        assert_eq!(
            c.pin_retries().unwrap(),
            PinStatus::NotVerified { retries_left: 3 }
        );
        for _ in 0..2 {
            assert!(c.unblock_pin("00000000", "123456").is_err());
        }
        assert_eq!(c.tries_left().unwrap().puk, Some(0));
    }

    /// A card without GET METADATA (`6D00`), like a PIV card of another vendor.
    struct NoMetadata(InProcess);

    impl Transport for NoMetadata {
        fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
            if apdu.get(1) == Some(&0xF7) {
                return Ok(vec![0x6D, 0x00]);
            }
            self.0.transmit(apdu)
        }
    }

    #[test]
    fn without_metadata_the_puk_tries_are_unknown() {
        let mut c = PivClient::new(NoMetadata(InProcess::new(VirtualCard::in_memory())));
        c.select().unwrap();
        assert!(c.verify_pin("000000").is_err());
        assert_eq!(
            c.tries_left().unwrap(),
            TriesLeft {
                pin: Some(2),
                puk: None
            }
        );
    }

    #[test]
    fn a_guarded_verify_reads_the_counter_and_never_spends_the_last_tries() {
        let mut c = client();
        assert_eq!(
            c.verify_pin_guarded("123456", 1).unwrap(),
            PinCheck::Verified
        );
        // Already verified: logs out to read the counter, then verifies again.
        assert_eq!(
            c.verify_pin_guarded("123456", 1).unwrap(),
            PinCheck::Verified
        );
        assert_eq!(
            c.verify_pin_guarded("654321", 1).unwrap(),
            PinCheck::Refused { retries_left: 2 }
        );
        let before = c.transport_mut().sent.len();
        assert_eq!(
            c.verify_pin_guarded("123456", 2).unwrap(),
            PinCheck::TooFewTries { retries_left: 2 }
        );
        // Only the status form went to the card: no PIN.
        let sent = &c.transport_mut().sent[before..];
        assert!(sent.iter().all(|a| a.len() == 4), "{sent:02X?}");
        assert_eq!(
            c.verify_pin_guarded("123456", 1).unwrap(),
            PinCheck::Verified
        );
    }

    #[test]
    fn long_put_data_is_chained_and_read_back() {
        let mut c = client();
        c.authenticate(&ManagementKey::factory_default()).unwrap();
        let blob: Vec<u8> = (0..1200u32).map(|i| (i * 7) as u8).collect();
        let before = c.transport_mut().sent.len();
        c.write_certificate(0x9D, &blob).unwrap();
        let sent = &c.transport_mut().sent[before..];
        assert!(sent.len() >= 5);
        assert!(sent[..sent.len() - 1].iter().all(|a| a[0] == 0x10));
        assert_eq!(sent.last().unwrap()[0], 0x00);
        let before = c.transport_mut().sent.len();
        assert_eq!(c.read_certificate(0x9D).unwrap().unwrap(), blob);
        let gets = c.transport_mut().sent[before..]
            .iter()
            .filter(|a| a[1] == 0xC0)
            .count();
        assert!(gets >= 4, "expected GET RESPONSE rounds, saw {gets}");
        c.delete_certificate(0x9D).unwrap();
        assert_eq!(c.read_certificate(0x9D).unwrap(), None);
        assert!(matches!(
            c.read_certificate(0x9B),
            Err(PivError::BadSlot(0x9B))
        ));
    }

    #[test]
    fn slot_9c_needs_a_fresh_verify_before_each_signature() {
        let mut c = client();
        c.authenticate(&ManagementKey::factory_default()).unwrap();
        let public = c.generate_key(0x9C, KeyAlg::EccP256).unwrap();
        let hash = [0x11u8; 32];
        assert!(matches!(
            c.sign_digest(0x9C, KeyAlg::EccP256, &hash),
            Err(PivError::SecurityStatus { ins: 0x87 })
        ));
        c.verify_pin("123456").unwrap();
        let sig = c.sign_digest(0x9C, KeyAlg::EccP256, &hash).unwrap();
        verify_p256(&public, &hash, &sig);
        assert!(matches!(
            c.sign_digest(0x9C, KeyAlg::EccP256, &hash),
            Err(PivError::SecurityStatus { ins: 0x87 })
        ));
        c.verify_pin("123456").unwrap();
        c.sign_digest(0x9C, KeyAlg::EccP256, &hash).unwrap();
    }

    #[test]
    fn imported_ec_key_signs() {
        use p256::elliptic_curve::Generate as _;
        use p256::pkcs8::EncodePrivateKey as _;
        let secret = p256::SecretKey::generate_from_rng(&mut rand::rng());
        let der = secret.to_pkcs8_der().unwrap();
        let material = PrivateKeyMaterial::from_pkcs8_der(KeyAlg::EccP256, der.as_bytes()).unwrap();
        let mut c = client();
        assert!(matches!(
            c.import_key(0x9D, &material),
            Err(PivError::SecurityStatus { ins: 0xFE })
        ));
        c.authenticate(&ManagementKey::factory_default()).unwrap();
        c.import_key(0x9D, &material).unwrap();
        c.verify_pin("123456").unwrap();
        let hash = [0x22u8; 32];
        let sig = c.sign_digest(0x9D, KeyAlg::EccP256, &hash).unwrap();
        let public =
            PublicKey::from_ec_point(KeyAlg::EccP256, &secret.public_key().to_sec1_bytes())
                .unwrap();
        verify_p256(&public, &hash, &sig);
    }

    /// A transport whose card answers garbage.
    struct Garbage(Vec<u8>);

    impl Transport for Garbage {
        fn transmit(&mut self, _: &[u8]) -> Result<Vec<u8>, TransportError> {
            Ok(self.0.clone())
        }
    }

    #[test]
    fn garbage_answers_are_errors() {
        let key = ManagementKey::factory_default();
        for answer in [vec![], vec![0x90], vec![0x7C, 0x90, 0x00], vec![0x61, 0x00]] {
            let mut c = PivClient::new(Garbage(answer));
            assert!(c.authenticate(&key).is_err());
            assert!(c.generate_key(0x9A, KeyAlg::EccP256).is_err());
            assert!(c.read_chuid().is_err());
            let _ = c.read_certificate(0x9A);
            let _ = c.pin_retries();
        }
        let mut c = PivClient::new(Garbage(vec![0x53, 0x05, 0x70, 0x90, 0x00]));
        assert!(c.read_certificate(0x9A).is_err());
        let mut c = PivClient::new(Garbage(vec![
            0x7F, 0x49, 0x03, 0x86, 0x01, 0x04, 0x90, 0x00,
        ]));
        assert!(matches!(
            c.generate_key(0x9A, KeyAlg::EccP256),
            Err(PivError::Key(KeyError::BadEcPoint(_)))
        ));
    }
}
