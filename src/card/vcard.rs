//! The virtual PIV card: a software card that answers APDUs like a standards-clean PIV card.
//!
//! Owns: the card's persistent state (keys as PKCS#8, data objects, PIN/PUK and counters,
//! management key, serial) in one JSON file, and its volatile session (PIN verified, 9B
//! authenticated, PIN-always grant, chaining buffers, pending GET RESPONSE data).
//!
//! ```text
//!   C-APDU ─► parse ─► command chaining (CLA 10) ─► dispatch(INS) ─► state changed?
//!                                                                   ├─ yes: write JSON atomically
//!                                                                   │       (fail ⇒ 6581, old state)
//!   R-APDU ◄─ response chaining (61xx / GET RESPONSE 00 C0) ◄────────┘
//! ```
//!
//! Commands: SELECT, GET/PUT DATA, VERIFY, CHANGE REFERENCE DATA, RESET RETRY COUNTER, GENERAL
//! AUTHENTICATE (9B mutual/external/challenge; ECDSA, RSA raw, ECDH), GENERATE ASYMMETRIC KEY
//! PAIR, and the Yubico extensions GET VERSION/SERIAL/METADATA, SET MANAGEMENT KEY, IMPORT KEY,
//! SET PIN RETRIES.
//! Every input yields a status word; no input panics. Private keys never leave the card.
//!
//! It does NOT speak vpcd or PC/SC (a transport serves it), does not know users or policies,
//! and does not implement Secure Messaging, the global PIN, touch, attestation or PIV reset.

use std::collections::BTreeMap;
use std::fs::{self};
use std::path::{Path, PathBuf};

use p256::ecdsa::signature::hazmat::PrehashSigner as _;
use p256::elliptic_curve::Generate as _;
use p256::elliptic_curve::point::AffineCoordinates as _;
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use rand::RngExt as _;
use rsa::traits::{PrivateKeyParts as _, PublicKeyParts as _};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::keys::{DEFAULT_MGMT_KEY, KeyAlg, ManagementKey, MgmtAlg, left_pad};
use super::tlv::{self, CommandApdu, ResponseApdu};

/// The full PIV application identifier.
pub const PIV_AID: [u8; 11] = [0xA0, 0, 0, 0x03, 0x08, 0, 0, 0x10, 0, 0x01, 0];

/// The card's answer to reset (T=1, historical bytes "VirtPIV1", correct TCK).
pub const ATR: [u8; 18] = [
    0x3B, 0xF8, 0x13, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x15, 0x56, 0x69, 0x72, 0x74, 0x50, 0x49, 0x56,
    0x31, 0xF7,
];

/// The firmware version GET VERSION reports (5.4.3: AES keys, metadata, `00 20 FF 80`).
pub const VERSION: [u8; 3] = [5, 4, 3];

/// Status words the card answers with.
pub mod sw {
    /// Success.
    pub const OK: u16 = 0x9000;
    /// Memory failure (the state could not be written).
    pub const MEMORY_FAILURE: u16 = 0x6581;
    /// Wrong length.
    pub const WRONG_LENGTH: u16 = 0x6700;
    /// Last command of a chain expected.
    pub const CHAIN_ERROR: u16 = 0x6883;
    /// Security status not satisfied.
    pub const SECURITY: u16 = 0x6982;
    /// Authentication method blocked.
    pub const BLOCKED: u16 = 0x6983;
    /// Conditions of use not satisfied.
    pub const CONDITIONS: u16 = 0x6985;
    /// Incorrect parameters in the data field.
    pub const BAD_DATA: u16 = 0x6A80;
    /// Function not supported.
    pub const NOT_SUPPORTED: u16 = 0x6A81;
    /// File or application not found.
    pub const NOT_FOUND: u16 = 0x6A82;
    /// Not enough memory.
    pub const NO_SPACE: u16 = 0x6A84;
    /// Incorrect P1/P2.
    pub const BAD_P1P2: u16 = 0x6A86;
    /// Referenced data not found.
    pub const REF_NOT_FOUND: u16 = 0x6A88;
    /// Instruction not supported.
    pub const INS_NOT_SUPPORTED: u16 = 0x6D00;
    /// Class not supported.
    pub const CLA_NOT_SUPPORTED: u16 = 0x6E00;
}

const DEFAULT_PIN: &[u8; 8] = b"123456\xFF\xFF";
const DEFAULT_PUK: &[u8; 8] = b"12345678";
const DEFAULT_RETRIES: u8 = 3;
const MAX_OBJECT: usize = 4096;
const MAX_CHAIN: usize = 8192;
const STATE_FORMAT: u32 = 1;
const ORIGIN_GENERATED: u8 = 1;
const ORIGIN_IMPORTED: u8 = 2;
/// Data objects readable only after PIN verification.
const PIN_PROTECTED: [u32; 5] = [0x5FC103, 0x5FC108, 0x5FC109, 0x5FC121, 0x5FC123];

/// Failures creating, opening or saving a virtual card's state file.
#[derive(Debug, Error)]
pub enum CardError {
    /// `create` was asked for a path that already exists.
    #[error("card state file {0} already exists")]
    AlreadyExists(PathBuf),
    /// The state file could not be read.
    #[error("cannot read card state {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The state file is not valid JSON of the expected shape.
    #[error("card state {path} is not valid")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// The state parsed but holds impossible values (bad PIN length, unknown algorithm, …).
    #[error("card state {path} is inconsistent: {what}")]
    Inconsistent {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
    /// The state could not be written (temp file, fsync or rename).
    #[error("cannot write card state {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The state could not be serialised.
    #[error("cannot serialise card state")]
    Serialise(#[source] serde_json::Error),
}

/// Hex (de)serialisation of byte vectors in the state file.
mod hex_bytes {
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
struct StoredKey {
    /// PIV algorithm id.
    alg: u8,
    /// 1 generated on card, 2 imported.
    origin: u8,
    /// PKCS#8 DER.
    #[serde(with = "hex_bytes")]
    pkcs8: Vec<u8>,
}

/// Everything that survives power-off.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CardState {
    format: u32,
    serial: u32,
    #[serde(with = "hex_bytes")]
    pin: Vec<u8>,
    #[serde(with = "hex_bytes")]
    puk: Vec<u8>,
    pin_retries_max: u8,
    pin_retries_left: u8,
    puk_retries_max: u8,
    puk_retries_left: u8,
    pin_is_default: bool,
    puk_is_default: bool,
    mgmt_alg: u8,
    #[serde(with = "hex_bytes")]
    mgmt_key: Vec<u8>,
    mgmt_is_default: bool,
    /// Slot (hex, e.g. "9a") → key.
    keys: BTreeMap<String, StoredKey>,
    /// Object tag (hex, e.g. "5fc105") → value inside the `53` wrapper, hex.
    objects: BTreeMap<String, String>,
}

impl CardState {
    fn factory() -> Self {
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

    fn check(&self) -> Result<(), &'static str> {
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

    fn mgmt(&self) -> Option<ManagementKey> {
        let alg = MgmtAlg::from_id(self.mgmt_alg)?;
        ManagementKey::new(alg, self.mgmt_key.clone()).ok()
    }
}

fn tag_key(tag: u32) -> String {
    format!("{tag:x}")
}

fn slot_key(slot: u8) -> String {
    format!("{slot:02x}")
}

/// A command chain being received.
#[derive(Clone)]
struct Chain {
    ins: u8,
    p1: u8,
    p2: u8,
    data: Vec<u8>,
}

/// Volatile state, cleared by every power event.
#[derive(Clone, Default)]
struct Session {
    pin_verified: bool,
    /// One PIN-always operation (slot 9C) granted by the last successful VERIFY.
    pin_always_ok: bool,
    mgmt_authed: bool,
    witness: Option<Vec<u8>>,
    challenge: Option<Vec<u8>>,
    chain: Option<Chain>,
    pending: Vec<u8>,
}

/// A loaded private key.
enum Key {
    P256(p256::SecretKey),
    P384(p384::SecretKey),
    Rsa(Box<rsa::PrivateKey>),
}

type Sw<T> = Result<T, u16>;

/// A software PIV card. See the module docs for what it answers.
pub struct VirtualCard {
    state: CardState,
    session: Session,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for VirtualCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualCard")
            .field("serial", &self.state.serial)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl VirtualCard {
    /// A new card in factory state that lives only in memory (tests, fuzzing).
    pub fn in_memory() -> Self {
        VirtualCard {
            state: CardState::factory(),
            session: Session::default(),
            path: None,
        }
    }

    /// Creates a new card in factory state and writes it to `path` (which must not exist).
    pub fn create(path: impl AsRef<Path>) -> Result<Self, CardError> {
        let path = path.as_ref().to_path_buf();
        if path.exists() {
            return Err(CardError::AlreadyExists(path));
        }
        let card = VirtualCard {
            state: CardState::factory(),
            session: Session::default(),
            path: Some(path),
        };
        card.persist()?;
        Ok(card)
    }

    /// Opens a card previously created at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CardError> {
        let path = path.as_ref().to_path_buf();
        let bytes = fs::read(&path).map_err(|source| CardError::Read {
            path: path.clone(),
            source,
        })?;
        let state: CardState =
            serde_json::from_slice(&bytes).map_err(|source| CardError::Parse {
                path: path.clone(),
                source,
            })?;
        if let Err(what) = state.check() {
            return Err(CardError::Inconsistent { path, what });
        }
        Ok(VirtualCard {
            state,
            session: Session::default(),
            path: Some(path),
        })
    }

    /// Opens the card at `path`, creating a factory-fresh one if the file does not exist.
    pub fn open_or_create(path: impl AsRef<Path>) -> Result<Self, CardError> {
        if path.as_ref().exists() {
            Self::open(path)
        } else {
            Self::create(path)
        }
    }

    /// The state file, if the card is persisted.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The card's serial number (as GET SERIAL reports it).
    pub fn serial(&self) -> u32 {
        self.state.serial
    }

    /// The answer to reset.
    pub fn atr(&self) -> &'static [u8] {
        &ATR
    }

    /// Power off: all volatile state is lost.
    pub fn power_off(&mut self) {
        self.session = Session::default();
    }

    /// Power on (cold): starts a fresh session with PIV selected.
    pub fn power_on(&mut self) {
        self.session = Session::default();
    }

    /// Warm reset: as power on.
    pub fn reset(&mut self) {
        self.session = Session::default();
    }

    /// Answers one command APDU with a response APDU (data ‖ SW1 SW2). Never panics.
    ///
    /// If the command changed persistent state, the state file is written (atomically) before
    /// this returns; if that fails the answer is `6581` and the state is as before the command.
    pub fn process_apdu(&mut self, apdu: &[u8]) -> Vec<u8> {
        let (data, sw) = self.process(apdu);
        ResponseApdu { data, sw }.to_bytes()
    }

    fn process(&mut self, bytes: &[u8]) -> (Vec<u8>, u16) {
        let Ok(cmd) = CommandApdu::parse(bytes) else {
            return (Vec::new(), sw::WRONG_LENGTH);
        };
        if cmd.cla & !0x10 != 0 {
            return (Vec::new(), sw::CLA_NOT_SUPPORTED);
        }
        if cmd.ins == 0xC0 && cmd.cla == 0 {
            return self.get_response(&cmd);
        }
        self.session.pending.clear();
        let header = (cmd.ins, cmd.p1, cmd.p2);
        let same = |c: &Chain| (c.ins, c.p1, c.p2) == header;
        if cmd.cla & 0x10 != 0 {
            let mut chain = match self.session.chain.take() {
                Some(c) if same(&c) => c,
                _ => Chain {
                    ins: cmd.ins,
                    p1: cmd.p1,
                    p2: cmd.p2,
                    data: Vec::new(),
                },
            };
            if chain.data.len() + cmd.data.len() > MAX_CHAIN {
                return (Vec::new(), sw::WRONG_LENGTH);
            }
            chain.data.extend_from_slice(&cmd.data);
            self.session.chain = Some(chain);
            return (Vec::new(), sw::OK);
        }
        let mut cmd = cmd;
        if let Some(chain) = self.session.chain.take()
            && same(&chain)
        {
            let mut data = chain.data;
            data.extend_from_slice(&cmd.data);
            cmd.data = data;
        }
        let state_before = self.state.clone();
        let session_before = self.session.clone();
        let result = self.dispatch(&cmd);
        if self.state != state_before && self.persist().is_err() {
            self.state = state_before;
            self.session = session_before;
            return (Vec::new(), sw::MEMORY_FAILURE);
        }
        match result {
            Ok(data) => self.respond(data, &cmd),
            Err(code) => (Vec::new(), code),
        }
    }

    fn respond(&mut self, mut data: Vec<u8>, cmd: &CommandApdu) -> (Vec<u8>, u16) {
        let limit = if cmd.extended { 65536 } else { 256 };
        if data.len() <= limit {
            return (data, sw::OK);
        }
        self.session.pending = data.split_off(limit);
        let sw = 0x6100 | (self.session.pending.len().min(256) & 0xFF) as u16;
        (data, sw)
    }

    fn get_response(&mut self, cmd: &CommandApdu) -> (Vec<u8>, u16) {
        if cmd.p1 != 0 || cmd.p2 != 0 {
            return (Vec::new(), sw::BAD_P1P2);
        }
        if self.session.pending.is_empty() {
            return (Vec::new(), sw::CONDITIONS);
        }
        let n = cmd
            .le
            .unwrap_or(256)
            .min(256)
            .min(self.session.pending.len());
        let rest = self.session.pending.split_off(n);
        let data = std::mem::replace(&mut self.session.pending, rest);
        let left = self.session.pending.len();
        let sw = if left == 0 {
            sw::OK
        } else {
            0x6100 | (left.min(256) & 0xFF) as u16
        };
        (data, sw)
    }

    fn persist(&self) -> Result<(), CardError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let bytes = serde_json::to_vec_pretty(&self.state).map_err(CardError::Serialise)?;
        write_atomic(path, &bytes).map_err(|source| CardError::Write {
            path: path.clone(),
            source,
        })
    }

    fn dispatch(&mut self, cmd: &CommandApdu) -> Sw<Vec<u8>> {
        match cmd.ins {
            0xA4 => self.select(cmd),
            0xCB => self.get_data(cmd),
            0xDB => self.put_data(cmd),
            0x20 => self.verify(cmd),
            0x24 => self.change_reference(cmd),
            0x2C => self.reset_retry_counter(cmd),
            0x87 => self.general_authenticate(cmd),
            0x47 => self.generate(cmd),
            0xFD => Ok(VERSION.to_vec()),
            0xF8 => Ok(self.state.serial.to_be_bytes().to_vec()),
            0xF7 => self.metadata(cmd),
            0xFF => self.set_management_key(cmd),
            0xFE => self.import_key(cmd),
            0xFA => self.set_pin_retries(cmd),
            _ => Err(sw::INS_NOT_SUPPORTED),
        }
    }

    // ---- SELECT, GET DATA, PUT DATA -------------------------------------------------------

    fn select(&mut self, cmd: &CommandApdu) -> Sw<Vec<u8>> {
        // Foreign applications and other selection methods: not found, state kept.
        if cmd.p1 != 0x04 || cmd.data.len() < 5 || !PIV_AID.starts_with(&cmd.data) {
            return Err(sw::NOT_FOUND);
        }
        if cmd.p2 != 0x00 {
            return Err(sw::BAD_P1P2);
        }
        let mut alloc = Vec::new();
        tlv::push(&mut alloc, 0x4F, &PIV_AID[..5]).map_err(|_| sw::BAD_DATA)?;
        let mut apt = Vec::new();
        tlv::push(&mut apt, 0x4F, &PIV_AID[5..]).map_err(|_| sw::BAD_DATA)?;
        tlv::push(&mut apt, 0x79, &alloc).map_err(|_| sw::BAD_DATA)?;
        tlv::encode(0x61, &apt).map_err(|_| sw::BAD_DATA)
    }

    fn discovery() -> Vec<u8> {
        let mut inner = Vec::new();
        let _ = tlv::push(&mut inner, 0x4F, &PIV_AID);
        let _ = tlv::push(&mut inner, 0x5F2F, &[0x40, 0x00]);
        tlv::encode(0x7E, &inner).unwrap_or_default()
    }

    fn object_tag(data: &[u8]) -> Sw<(u32, &[u8])> {
        let (t, rest) = tlv::parse_one(data).map_err(|_| sw::BAD_DATA)?;
        if t.tag != 0x5C || t.value.is_empty() || t.value.len() > 3 {
            return Err(sw::BAD_DATA);
        }
        let tag = t
            .value
            .iter()
            .fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
        Ok((tag, rest))
    }

    fn known_object(tag: u32) -> bool {
        matches!(tag, 0x5FC101..=0x5FC123 | 0x5FFF00..=0x5FFFFF | 0x7F61)
    }

    fn get_data(&mut self, cmd: &CommandApdu) -> Sw<Vec<u8>> {
        if (cmd.p1, cmd.p2) != (0x3F, 0xFF) {
            return Err(sw::BAD_P1P2);
        }
        let (tag, _) = Self::object_tag(&cmd.data)?;
        if tag == 0x7E {
            return Ok(Self::discovery());
        }
        if !Self::known_object(tag) {
            return Err(sw::NOT_FOUND);
        }
        if PIN_PROTECTED.contains(&tag) && !self.session.pin_verified {
            return Err(sw::SECURITY);
        }
        let value = self
            .state
            .objects
            .get(&tag_key(tag))
            .and_then(|h| hex::decode(h).ok())
            .filter(|v| !v.is_empty())
            .ok_or(sw::NOT_FOUND)?;
        let wrapper = if tag == 0x7F61 { 0x7F61 } else { 0x53 };
        tlv::encode(wrapper, &value).map_err(|_| sw::BAD_DATA)
    }

    fn put_data(&mut self, cmd: &CommandApdu) -> Sw<Vec<u8>> {
        if (cmd.p1, cmd.p2) != (0x3F, 0xFF) {
            return Err(sw::BAD_P1P2);
        }
        if !self.session.mgmt_authed {
            return Err(sw::SECURITY);
        }
        let (tag, rest) = Self::object_tag(&cmd.data)?;
        if tag == 0x7E {
            return Err(sw::NOT_SUPPORTED);
        }
        if !Self::known_object(tag) {
            return Err(sw::NOT_FOUND);
        }
        let (wrapped, trailing) = tlv::parse_one(rest).map_err(|_| sw::BAD_DATA)?;
        let want = if tag == 0x7F61 { 0x7F61 } else { 0x53 };
        if wrapped.tag != want || !trailing.is_empty() {
            return Err(sw::BAD_DATA);
        }
        if wrapped.value.is_empty() {
            self.state.objects.remove(&tag_key(tag));
        } else if wrapped.value.len() > MAX_OBJECT {
            return Err(sw::NO_SPACE);
        } else {
            self.state
                .objects
                .insert(tag_key(tag), hex::encode(wrapped.value));
        }
        Ok(Vec::new())
    }

    // ---- PIN and PUK ----------------------------------------------------------------------

    fn verify(&mut self, cmd: &CommandApdu) -> Sw<Vec<u8>> {
        if cmd.p2 != 0x80 {
            return Err(sw::REF_NOT_FOUND);
        }
        match (cmd.p1, cmd.data.len()) {
            (0xFF, 0) => {
                self.session.pin_verified = false;
                self.session.pin_always_ok = false;
                Ok(Vec::new())
            }
            (0x00, 0) => {
                if self.state.pin_retries_left == 0 {
                    Err(sw::BLOCKED)
                } else if self.session.pin_verified {
                    Ok(Vec::new())
                } else {
                    Err(retries_sw(self.state.pin_retries_left))
                }
            }
            (0x00, 8) => {
                if self.state.pin_retries_left == 0 {
                    return Err(sw::BLOCKED);
                }
                if ct_eq(&cmd.data, &self.state.pin) {
                    self.state.pin_retries_left = self.state.pin_retries_max;
                    self.session.pin_verified = true;
                    self.session.pin_always_ok = true;
                    Ok(Vec::new())
                } else {
                    self.state.pin_retries_left -= 1;
                    self.session.pin_verified = false;
                    self.session.pin_always_ok = false;
                    Err(retries_sw(self.state.pin_retries_left))
                }
            }
            (0x00, _) => Err(sw::BAD_DATA),
            _ => Err(sw::BAD_P1P2),
        }
    }

    fn change_reference(&mut self, cmd: &CommandApdu) -> Sw<Vec<u8>> {
        if cmd.p1 != 0 {
            return Err(sw::BAD_P1P2);
        }
        let is_pin = match cmd.p2 {
            0x80 => true,
            0x81 => false,
            _ => return Err(sw::REF_NOT_FOUND),
        };
        let (old, new) = split_16(&cmd.data)?;
        let st = &mut self.state;
        let (current, left, max) = if is_pin {
            (&mut st.pin, &mut st.pin_retries_left, st.pin_retries_max)
        } else {
            (&mut st.puk, &mut st.puk_retries_left, st.puk_retries_max)
        };
        if *left == 0 {
            return Err(sw::BLOCKED);
        }
        if !valid_reference_data(new) {
            return Err(sw::BAD_DATA);
        }
        if !ct_eq(old, current) {
            *left -= 1;
            if is_pin {
                self.session.pin_verified = false;
                self.session.pin_always_ok = false;
            }
            return Err(retries_sw(*left));
        }
        *current = new.to_vec();
        *left = max;
        if is_pin {
            st.pin_is_default = false;
        } else {
            st.puk_is_default = false;
        }
        Ok(Vec::new())
    }

    fn reset_retry_counter(&mut self, cmd: &CommandApdu) -> Sw<Vec<u8>> {
        if cmd.p1 != 0 {
            return Err(sw::BAD_P1P2);
        }
        if cmd.p2 != 0x80 {
            return Err(sw::REF_NOT_FOUND);
        }
        let (puk, new_pin) = split_16(&cmd.data)?;
        let st = &mut self.state;
        if st.puk_retries_left == 0 {
            return Err(sw::BLOCKED);
        }
        if !valid_reference_data(new_pin) {
            return Err(sw::BAD_DATA);
        }
        if !ct_eq(puk, &st.puk) {
            st.puk_retries_left -= 1;
            return Err(retries_sw(st.puk_retries_left));
        }
        st.puk_retries_left = st.puk_retries_max;
        st.pin = new_pin.to_vec();
        st.pin_retries_left = st.pin_retries_max;
        st.pin_is_default = false;
        self.session.pin_verified = false;
        self.session.pin_always_ok = false;
        Ok(Vec::new())
    }

    // ---- GENERAL AUTHENTICATE -------------------------------------------------------------

    fn general_authenticate(&mut self, cmd: &CommandApdu) -> Sw<Vec<u8>> {
        let (outer, trailing) = tlv::parse_one(&cmd.data).map_err(|_| sw::BAD_DATA)?;
        if outer.tag != 0x7C || !trailing.is_empty() {
            return Err(sw::BAD_DATA);
        }
        let items = tlv::parse_all(outer.value).map_err(|_| sw::BAD_DATA)?;
        let get = |tag: u32| items.iter().find(|t| t.tag == tag).map(|t| t.value);
        let (witness, challenge, response, exponent) = (get(0x80), get(0x81), get(0x82), get(0x85));
        if cmd.p2 == 0x9B {
            return self.auth_9b(cmd.p1, witness, challenge, response);
        }
        let key = self.usable_key(cmd.p1, cmd.p2)?;
        let out = match (response, challenge, exponent) {
            (Some([]), Some(input), None) => sign_raw(&key, input)?,
            (Some([]), None, Some(point)) => ecdh(&key, point)?,
            _ => return Err(sw::BAD_DATA),
        };
        let mut inner = Vec::new();
        tlv::push(&mut inner, 0x82, &out).map_err(|_| sw::BAD_DATA)?;
        tlv::encode(0x7C, &inner).map_err(|_| sw::BAD_DATA)
    }

    fn auth_9b(
        &mut self,
        p1: u8,
        witness: Option<&[u8]>,
        challenge: Option<&[u8]>,
        response: Option<&[u8]>,
    ) -> Sw<Vec<u8>> {
        let key = self.state.mgmt().ok_or(sw::CONDITIONS)?;
        if p1 != 0 && p1 != key.alg.id() {
            return Err(sw::BAD_P1P2);
        }
        let bs = key.alg.block_len();
        let wrap = |tag: u32, v: &[u8]| -> Sw<Vec<u8>> {
            let inner = tlv::encode(tag, v).map_err(|_| sw::BAD_DATA)?;
            tlv::encode(0x7C, &inner).map_err(|_| sw::BAD_DATA)
        };
        match (witness, challenge, response) {
            // Mutual authentication, step 1: send an encrypted witness.
            (Some([]), None, None) => {
                let w = random_bytes(bs);
                let enc = key.encrypt(&w).map_err(|_| sw::BAD_DATA)?;
                self.session.witness = Some(w);
                self.session.mgmt_authed = false;
                wrap(0x80, &enc)
            }
            // Mutual authentication, step 2: check the decrypted witness, answer the challenge.
            (Some(w), Some(c), None) if !w.is_empty() && !c.is_empty() => {
                let expected = self.session.witness.take();
                if expected.as_deref().is_none_or(|e| !ct_eq(e, w)) {
                    self.session.mgmt_authed = false;
                    return Err(sw::SECURITY);
                }
                if c.len() != bs {
                    return Err(sw::BAD_DATA);
                }
                let enc = key.encrypt(c).map_err(|_| sw::BAD_DATA)?;
                self.session.mgmt_authed = true;
                wrap(0x82, &enc)
            }
            // External authentication step 1, or GET CHALLENGE: send a plain challenge.
            (None, Some([]), None) => {
                let c = random_bytes(bs);
                self.session.challenge = Some(c.clone());
                self.session.mgmt_authed = false;
                wrap(0x81, &c)
            }
            // External authentication step 2: the host proves the key by encrypting it.
            (None, None, Some(r)) if !r.is_empty() => {
                let expected = self.session.challenge.take().ok_or(sw::SECURITY)?;
                let enc = key.encrypt(&expected).map_err(|_| sw::BAD_DATA)?;
                if !ct_eq(&enc, r) {
                    self.session.mgmt_authed = false;
                    return Err(sw::SECURITY);
                }
                self.session.mgmt_authed = true;
                Ok(Vec::new())
            }
            _ => Err(sw::BAD_DATA),
        }
    }

    /// The key in `slot`, after checking the algorithm and the slot's PIN policy.
    fn usable_key(&mut self, alg: u8, slot: u8) -> Sw<Key> {
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

    fn generate(&mut self, cmd: &CommandApdu) -> Sw<Vec<u8>> {
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

    fn import_key(&mut self, cmd: &CommandApdu) -> Sw<Vec<u8>> {
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

    fn metadata(&mut self, cmd: &CommandApdu) -> Sw<Vec<u8>> {
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

    fn set_management_key(&mut self, cmd: &CommandApdu) -> Sw<Vec<u8>> {
        if cmd.p1 != 0xFF || !matches!(cmd.p2, 0xFF | 0xFE) {
            return Err(sw::BAD_P1P2);
        }
        if !self.session.mgmt_authed {
            return Err(sw::SECURITY);
        }
        let (alg, key) = match cmd.data.as_slice() {
            [alg, 0x9B, len, key @ ..] if usize::from(*len) == key.len() => (*alg, key),
            _ => return Err(sw::BAD_DATA),
        };
        let alg = MgmtAlg::from_id(alg).ok_or(sw::BAD_DATA)?;
        let key = ManagementKey::new(alg, key.to_vec()).map_err(|_| sw::BAD_DATA)?;
        self.state.mgmt_is_default = key == ManagementKey::factory_default();
        self.state.mgmt_alg = alg.id();
        self.state.mgmt_key = key.key;
        Ok(Vec::new())
    }

    /// SET PIN RETRIES (Yubico `00 FA <pin tries> <puk tries>`): needs 9B authentication and
    /// a verified PIN; sets both counters and, as on a YubiKey, puts PIN and PUK back to their
    /// factory values. Tries are 1..=15 (what a `63Cx` answer can show).
    fn set_pin_retries(&mut self, cmd: &CommandApdu) -> Sw<Vec<u8>> {
        if !(1..=15).contains(&cmd.p1) || !(1..=15).contains(&cmd.p2) {
            return Err(sw::BAD_P1P2);
        }
        if !cmd.data.is_empty() {
            return Err(sw::BAD_DATA);
        }
        if !self.session.mgmt_authed || !self.session.pin_verified {
            return Err(sw::SECURITY);
        }
        let st = &mut self.state;
        (st.pin_retries_max, st.pin_retries_left) = (cmd.p1, cmd.p1);
        (st.puk_retries_max, st.puk_retries_left) = (cmd.p2, cmd.p2);
        st.pin = DEFAULT_PIN.to_vec();
        st.puk = DEFAULT_PUK.to_vec();
        st.pin_is_default = true;
        st.puk_is_default = true;
        self.session.pin_verified = false;
        self.session.pin_always_ok = false;
        Ok(Vec::new())
    }
}

/// `63Cx` with x = tries left (capped at 15).
fn retries_sw(left: u8) -> u16 {
    0x63C0 | u16::from(left.min(15))
}

/// Constant-time comparison of equal-length slices (false on different lengths).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.ct_eq(b))
}

fn split_16(data: &[u8]) -> Sw<(&[u8], &[u8])> {
    if data.len() != 16 {
        return Err(sw::BAD_DATA);
    }
    Ok(data.split_at(8))
}

/// PIN/PUK as sent: 6–8 bytes, right-padded with FF to 8, no FF inside.
fn valid_reference_data(b: &[u8]) -> bool {
    let len = b.iter().position(|&x| x == 0xFF).unwrap_or(b.len());
    b.len() == 8 && (6..=8).contains(&len) && b.iter().skip(len).all(|&x| x == 0xFF)
}

/// Key references that hold asymmetric keys: 9A, 9C, 9D, 9E and retired 82–95.
fn key_slot(slot: u8) -> bool {
    matches!(slot, 0x9A | 0x9C | 0x9D | 0x9E | 0x82..=0x95)
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut rng = rand::rng();
    (0..n).map(|_| rng.random::<u8>()).collect()
}

fn load_key(stored: &StoredKey) -> Option<Key> {
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
fn public_tlvs(key: &Key) -> Sw<Vec<u8>> {
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
fn sign_raw(key: &Key, input: &[u8]) -> Sw<Vec<u8>> {
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
fn ecdh(key: &Key, point: &[u8]) -> Sw<Vec<u8>> {
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

/// Writes `bytes` to `path` atomically and privately (0600); see
/// [`crate::fsutil::write_atomic`].
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::fsutil::write_atomic(path, bytes, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn send(card: &mut VirtualCard, apdu: &[u8]) -> (Vec<u8>, u16) {
        let r = ResponseApdu::parse(&card.process_apdu(apdu)).unwrap();
        (r.data, r.sw)
    }

    fn apdu(ins: u8, p1: u8, p2: u8, data: &[u8]) -> Vec<u8> {
        let mut c = CommandApdu::new(0, ins, p1, p2, data.to_vec());
        c.le = Some(256);
        c.to_short_bytes().unwrap()
    }

    /// Mutual authentication with the default 3DES key at the APDU level.
    fn admin(card: &mut VirtualCard) {
        let key = ManagementKey::factory_default();
        let (r, sw) = send(card, &apdu(0x87, 0x03, 0x9B, &[0x7C, 0x02, 0x80, 0x00]));
        assert_eq!(sw, 0x9000);
        assert_eq!(&r[..4], &[0x7C, 0x0A, 0x80, 0x08]);
        let w = key.decrypt(&r[4..12]).unwrap();
        let c = [9u8; 8];
        let mut req = vec![0x7C, 0x14, 0x80, 0x08];
        req.extend_from_slice(&w);
        req.extend_from_slice(&[0x81, 0x08]);
        req.extend_from_slice(&c);
        let (r, sw) = send(card, &apdu(0x87, 0x03, 0x9B, &req));
        assert_eq!(sw, 0x9000);
        assert_eq!(&r[4..], key.encrypt(&c).unwrap().as_slice());
    }

    fn pin(p: &[u8]) -> Vec<u8> {
        let mut v = p.to_vec();
        v.resize(8, 0xFF);
        v
    }

    #[test]
    fn select_matches_prefixes_and_refuses_foreign_aids() {
        let mut card = VirtualCard::in_memory();
        let apt = [
            0x61, 0x11, 0x4F, 0x06, 0, 0, 0x10, 0, 1, 0, 0x79, 0x07, 0x4F, 0x05, 0xA0, 0, 0, 3, 8,
        ];
        for len in [5, 9, 11] {
            let (r, sw) = send(&mut card, &apdu(0xA4, 4, 0, &PIV_AID[..len]));
            assert_eq!((r.as_slice(), sw), (&apt[..], 0x9000));
        }
        let otp = [0xA0, 0, 0, 5, 0x27, 0x20, 1, 1];
        assert_eq!(send(&mut card, &apdu(0xA4, 4, 0, &otp)).1, 0x6A82);
        assert_eq!(send(&mut card, &apdu(0xA4, 0, 0, &[0x3F, 0])).1, 0x6A82);
        assert_eq!(send(&mut card, &apdu(0xA4, 4, 0, &PIV_AID[..3])).1, 0x6A82);
    }

    #[test]
    fn factory_objects_and_vendor_commands() {
        let mut card = VirtualCard::in_memory();
        let (r, sw) = send(&mut card, &apdu(0xCB, 0x3F, 0xFF, &[0x5C, 0x01, 0x7E]));
        assert_eq!(sw, 0x9000);
        assert_eq!(&r[..4], &[0x7E, 0x12, 0x4F, 0x0B]);
        assert_eq!(&r[15..], &[0x5F, 0x2F, 0x02, 0x40, 0x00]);
        let get = |tag: &[u8]| {
            let mut d = vec![0x5C, tag.len() as u8];
            d.extend_from_slice(tag);
            apdu(0xCB, 0x3F, 0xFF, &d)
        };
        let (ccc, sw) = send(&mut card, &get(&[0x5F, 0xC1, 0x07]));
        assert_eq!((ccc[0], ccc[2], ccc[3], sw), (0x53, 0xF0, 0x15, 0x9000));
        assert_eq!(send(&mut card, &get(&[0x5F, 0xC1, 0x02])).1, 0x6A82);
        assert_eq!(send(&mut card, &get(&[0x5F, 0xC1, 0x05])).1, 0x6A82);
        assert_eq!(send(&mut card, &get(&[0x5F, 0xC1, 0x09])).1, 0x6982);
        assert_eq!(
            send(&mut card, &apdu(0xCB, 0, 0, &[0x5C, 1, 0x7E])).1,
            0x6A86
        );
        assert_eq!(
            send(&mut card, &apdu(0xCB, 0x3F, 0xFF, &[0x01, 0])).1,
            0x6A80
        );
        assert_eq!(
            send(&mut card, &apdu(0xFD, 0, 0, &[])),
            (vec![5, 4, 3], 0x9000)
        );
        let (serial, _) = send(&mut card, &apdu(0xF8, 0, 0, &[]));
        assert_eq!(serial, card.serial().to_be_bytes());
        let (md, sw) = send(&mut card, &apdu(0xF7, 0, 0x9B, &[]));
        assert_eq!((md, sw), (vec![1, 1, 3, 2, 2, 0, 1, 5, 1, 1], 0x9000));
        let (md, _) = send(&mut card, &apdu(0xF7, 0, 0x80, &[]));
        assert_eq!(md, vec![1, 1, 0xFF, 5, 1, 1, 6, 2, 3, 3]);
        assert_eq!(send(&mut card, &apdu(0xF7, 0, 0x9A, &[])).1, 0x6A82);
        assert_eq!(send(&mut card, &[0, 0x12, 0, 0]).1, 0x6D00);
        assert_eq!(send(&mut card, &[0x80, 0xCB, 0x3F, 0xFF]).1, 0x6E00);
    }

    #[test]
    fn verify_counts_down_blocks_and_puk_unblocks() {
        let mut card = VirtualCard::in_memory();
        let status = [0, 0x20, 0, 0x80];
        assert_eq!(send(&mut card, &status).1, 0x63C3);
        assert_eq!(
            send(&mut card, &apdu(0x20, 0, 0x80, &pin(b"000000"))).1,
            0x63C2
        );
        assert_eq!(
            send(&mut card, &apdu(0x20, 0, 0x80, &pin(b"123456"))).1,
            0x9000
        );
        assert_eq!(send(&mut card, &status).1, 0x9000);
        assert_eq!(send(&mut card, &[0, 0x20, 0xFF, 0x80]).1, 0x9000);
        assert_eq!(send(&mut card, &status).1, 0x63C3);
        for left in [0x63C2, 0x63C1, 0x63C0] {
            assert_eq!(
                send(&mut card, &apdu(0x20, 0, 0x80, &pin(b"999999"))).1,
                left
            );
        }
        assert_eq!(
            send(&mut card, &apdu(0x20, 0, 0x80, &pin(b"123456"))).1,
            0x6983
        );
        assert_eq!(send(&mut card, &status).1, 0x6983);
        assert_eq!(send(&mut card, &apdu(0x20, 0, 0x80, &[1, 2, 3])).1, 0x6A80);
        let mut unblock = b"12345670".to_vec();
        unblock.extend(pin(b"654321"));
        assert_eq!(send(&mut card, &apdu(0x2C, 0, 0x80, &unblock)).1, 0x63C2);
        unblock[..8].copy_from_slice(b"12345678");
        assert_eq!(send(&mut card, &apdu(0x2C, 0, 0x80, &unblock)).1, 0x9000);
        assert_eq!(
            send(&mut card, &apdu(0x20, 0, 0x80, &pin(b"654321"))).1,
            0x9000
        );
        // A new PIN must be 6–8 bytes: the card refuses without spending a try.
        let mut change = pin(b"654321");
        change.extend(pin(b"123"));
        assert_eq!(send(&mut card, &apdu(0x24, 0, 0x80, &change)).1, 0x6A80);
        assert_eq!(send(&mut card, &[0, 0x20, 0, 0x81]).1, 0x6A88);
    }

    #[test]
    fn management_key_paths() {
        let mut card = VirtualCard::in_memory();
        // Not authenticated: writes are refused.
        let put = apdu(
            0xDB,
            0x3F,
            0xFF,
            &[0x5C, 3, 0x5F, 0xC1, 0x02, 0x53, 1, 0xAA],
        );
        assert_eq!(send(&mut card, &put).1, 0x6982);
        // A wrong witness fails.
        send(
            &mut card,
            &apdu(0x87, 0x03, 0x9B, &[0x7C, 0x02, 0x80, 0x00]),
        );
        let mut bad = vec![0x7C, 0x14, 0x80, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0x81, 0x08];
        bad.extend([1; 8]);
        assert_eq!(send(&mut card, &apdu(0x87, 0x03, 0x9B, &bad)).1, 0x6982);
        assert_eq!(send(&mut card, &put).1, 0x6982);
        // Wrong algorithm for the 9B key.
        assert_eq!(
            send(&mut card, &apdu(0x87, 0x0A, 0x9B, &[0x7C, 2, 0x80, 0])).1,
            0x6A86
        );
        // External authentication, and GET CHALLENGE with P1 = 00.
        let key = ManagementKey::factory_default();
        let (r, sw) = send(
            &mut card,
            &apdu(0x87, 0x00, 0x9B, &[0x7C, 0x02, 0x81, 0x00]),
        );
        assert_eq!((sw, &r[..4]), (0x9000, &[0x7C, 0x0A, 0x81, 0x08][..]));
        let mut proof = vec![0x7C, 0x0A, 0x82, 0x08];
        proof.extend(key.encrypt(&r[4..]).unwrap());
        assert_eq!(
            send(&mut card, &apdu(0x87, 0x03, 0x9B, &proof)),
            (vec![], 0x9000)
        );
        assert_eq!(send(&mut card, &put).1, 0x9000);
        // Power events drop the authentication.
        card.reset();
        assert_eq!(send(&mut card, &put).1, 0x6982);
        admin(&mut card);
        let delete = apdu(0xDB, 0x3F, 0xFF, &[0x5C, 3, 0x5F, 0xC1, 0x02, 0x53, 0]);
        assert_eq!(send(&mut card, &delete).1, 0x9000);
        assert_eq!(
            send(
                &mut card,
                &apdu(0xCB, 0x3F, 0xFF, &[0x5C, 3, 0x5F, 0xC1, 0x02])
            )
            .1,
            0x6A82
        );
        // SET MANAGEMENT KEY to AES-128, then the old key no longer works.
        let mut set = vec![0x08, 0x9B, 0x10];
        set.extend([7u8; 16]);
        assert_eq!(send(&mut card, &apdu(0xFF, 0xFF, 0xFF, &set)).1, 0x9000);
        let (md, _) = send(&mut card, &apdu(0xF7, 0, 0x9B, &[]));
        assert_eq!(md, vec![1, 1, 8, 2, 2, 0, 1, 5, 1, 0]);
        let (r, _) = send(
            &mut card,
            &apdu(0x87, 0x08, 0x9B, &[0x7C, 0x02, 0x80, 0x00]),
        );
        assert_eq!(&r[..4], &[0x7C, 0x12, 0x80, 0x10]);
    }

    #[test]
    fn signing_follows_slot_pin_policy() {
        let mut card = VirtualCard::in_memory();
        admin(&mut card);
        for slot in [0x9A, 0x9C, 0x9E] {
            let (r, sw) = send(&mut card, &apdu(0x47, 0, slot, &[0xAC, 3, 0x80, 1, 0x11]));
            assert_eq!((sw, &r[..5]), (0x9000, &[0x7F, 0x49, 0x43, 0x86, 0x41][..]));
        }
        let mut sign = vec![0x7C, 0x24, 0x82, 0x00, 0x81, 0x20];
        sign.extend([0x55; 32]);
        assert_eq!(send(&mut card, &apdu(0x87, 0x11, 0x9E, &sign)).1, 0x9000);
        assert_eq!(send(&mut card, &apdu(0x87, 0x11, 0x9A, &sign)).1, 0x6982);
        assert_eq!(send(&mut card, &apdu(0x87, 0x14, 0x9A, &sign)).1, 0x6A86);
        assert_eq!(send(&mut card, &apdu(0x87, 0x11, 0x9D, &sign)).1, 0x6A82);
        send(&mut card, &apdu(0x20, 0, 0x80, &pin(b"123456")));
        assert_eq!(send(&mut card, &apdu(0x87, 0x11, 0x9A, &sign)).1, 0x9000);
        assert_eq!(send(&mut card, &apdu(0x87, 0x11, 0x9A, &sign)).1, 0x9000);
        assert_eq!(send(&mut card, &apdu(0x87, 0x11, 0x9C, &sign)).1, 0x9000);
        assert_eq!(send(&mut card, &apdu(0x87, 0x11, 0x9C, &sign)).1, 0x6982);
        card.power_off();
        card.power_on();
        assert_eq!(send(&mut card, &apdu(0x87, 0x11, 0x9A, &sign)).1, 0x6982);
        // ECDH with the card's own public key of 9E.
        let (md, _) = send(&mut card, &apdu(0xF7, 0, 0x9E, &[]));
        let point = tlv::find(tlv::find(&md, 0x04).unwrap().unwrap(), 0x86)
            .unwrap()
            .unwrap()
            .to_vec();
        let mut dh = vec![0x7C, 0x45, 0x82, 0x00, 0x85, 0x41];
        dh.extend(&point);
        let (r, sw) = send(&mut card, &apdu(0x87, 0x11, 0x9E, &dh));
        assert_eq!((sw, &r[..4]), (0x9000, &[0x7C, 0x22, 0x82, 0x20][..]));
    }

    #[test]
    fn persists_atomically_and_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("card");
        fs::create_dir(&sub).unwrap();
        let path = sub.join("card.json");
        let mut card = VirtualCard::create(&path).unwrap();
        assert!(matches!(
            VirtualCard::create(&path),
            Err(CardError::AlreadyExists(_))
        ));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            send(&mut card, &apdu(0x20, 0, 0x80, &pin(b"000000"))).1,
            0x63C2
        );
        // The decrement is on disk before the answer.
        let mut again = VirtualCard::open(&path).unwrap();
        assert_eq!(send(&mut again, &[0, 0x20, 0, 0x80]).1, 0x63C2);
        assert_eq!(again.serial(), card.serial());
        // A failed write answers 6581 and keeps the old state.
        admin(&mut card);
        fs::remove_dir_all(&sub).unwrap();
        let put = apdu(
            0xDB,
            0x3F,
            0xFF,
            &[0x5C, 3, 0x5F, 0xC1, 0x02, 0x53, 1, 0xAA],
        );
        assert_eq!(send(&mut card, &put).1, 0x6581);
        let get = apdu(0xCB, 0x3F, 0xFF, &[0x5C, 3, 0x5F, 0xC1, 0x02]);
        assert_eq!(send(&mut card, &get).1, 0x6A82);
        fs::create_dir(&sub).unwrap();
        assert_eq!(send(&mut card, &put).1, 0x9000);
        assert_eq!(send(&mut card, &get), (vec![0x53, 1, 0xAA], 0x9000));
        fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            VirtualCard::open(&path),
            Err(CardError::Parse { .. })
        ));
    }

    #[test]
    fn chains_commands_and_responses() {
        let mut card = VirtualCard::in_memory();
        admin(&mut card);
        let mut body = vec![0x5C, 3, 0x5F, 0xC1, 0x05, 0x53, 0x82, 0x02, 0x58];
        body.extend((0..600u32).map(|i| i as u8));
        let chunks: Vec<&[u8]> = body.chunks(255).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let cla = if i + 1 < chunks.len() { 0x10 } else { 0 };
            let mut c = CommandApdu::new(cla, 0xDB, 0x3F, 0xFF, chunk.to_vec());
            c.le = Some(256);
            let (r, sw) = send(&mut card, &c.to_short_bytes().unwrap());
            assert_eq!((r.len(), sw), (0, 0x9000));
        }
        let (first, sw) = send(
            &mut card,
            &apdu(0xCB, 0x3F, 0xFF, &[0x5C, 3, 0x5F, 0xC1, 0x05]),
        );
        assert_eq!((first.len(), sw), (256, 0x6100));
        let (second, sw) = send(&mut card, &[0, 0xC0, 0, 0, 0]);
        assert_eq!((second.len(), sw), (256, 0x615C));
        let (third, sw) = send(&mut card, &[0, 0xC0, 0, 0, 0x5C]);
        assert_eq!((third.len(), sw), (0x5C, 0x9000));
        let all = [first, second, third].concat();
        assert_eq!(&all[4..], &body[9..]);
        assert_eq!(send(&mut card, &[0, 0xC0, 0, 0, 0]).1, 0x6985);
        // Another command drops pending data; an interrupted chain is discarded.
        send(
            &mut card,
            &apdu(0xCB, 0x3F, 0xFF, &[0x5C, 3, 0x5F, 0xC1, 0x05]),
        );
        send(&mut card, &apdu(0xFD, 0, 0, &[]));
        assert_eq!(send(&mut card, &[0, 0xC0, 0, 0, 0]).1, 0x6985);
        let partial = CommandApdu::new(0x10, 0xDB, 0x3F, 0xFF, vec![0x5C, 3]);
        send(&mut card, &partial.to_short_bytes().unwrap());
        assert_eq!(send(&mut card, &apdu(0xFD, 0, 0, &[])).1, 0x9000);
        let rest = apdu(0xDB, 0x3F, 0xFF, &[0x5F, 0xC1, 0x02, 0x53, 1, 1]);
        assert_eq!(send(&mut card, &rest).1, 0x6A80);
    }

    #[test]
    fn garbage_gets_error_status_words() {
        let mut card = VirtualCard::in_memory();
        let cases: [&[u8]; 8] = [
            &[],
            &[0],
            &[0, 0x87, 0x11, 0x9A, 3, 0x7C, 0x05, 0x81],
            &[0, 0x47, 0, 0x9A, 2, 0xAC, 0x81],
            &[0, 0xDB, 0x3F, 0xFF, 2, 0x5C, 0x84],
            &[0, 0xFE, 0x11, 0x9A, 1, 0x06],
            &[0, 0xC0, 0, 0, 0],
            &[0, 0xFF, 0xFF, 0xFF, 3, 0x03, 0x9B, 0x18],
        ];
        for c in cases {
            let (_, sw) = send(&mut card, c);
            assert_ne!(sw, 0x9000, "{c:02X?}");
        }
    }

    fn arb_command() -> impl Strategy<Value = Vec<u8>> {
        let ins = prop::sample::select(vec![
            0xA4u8, 0xCB, 0xDB, 0x20, 0x24, 0x2C, 0x87, 0x47, 0xC0, 0xFD, 0xF8, 0xF7, 0xFF, 0xFE,
        ]);
        (
            prop::sample::select(vec![0u8, 0x10]),
            ins,
            prop::sample::select(vec![0u8, 0x03, 0x11, 0x14, 0x07, 0x3F, 0xFF]),
            prop::sample::select(vec![0x9Au8, 0x9B, 0x9C, 0x80, 0x81, 0xFF, 0x00]),
            prop::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(cla, ins, p1, p2, data)| {
                let mut c = CommandApdu::new(cla, ins, p1, p2, data);
                c.data.truncate(255);
                c.le = Some(256);
                c.to_short_bytes().unwrap_or_default()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_apdus_never_panic_the_card(
            raw in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..8),
            structured in prop::collection::vec(arb_command(), 1..16),
        ) {
            let mut card = VirtualCard::in_memory();
            admin(&mut card);
            for a in raw.iter().chain(&structured) {
                let r = card.process_apdu(a);
                prop_assert!(r.len() >= 2);
            }
        }
    }
}
