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
//! SET PIN RETRIES. Key slots are 9A, 9C, 9D, 9E and the retired key-management slots 82…95
//! (PIN once per session, as 9D; certificates in 5FC10D…5FC120, the Key History in 5FC10C,
//! always readable, written with the management key like every object).
//! Every input yields a status word; no input panics. Private keys never leave the card.
//!
//! It does NOT speak vpcd or PC/SC (a transport serves it), does not know users or policies,
//! and does not implement Secure Messaging, the global PIN, touch, attestation or PIV reset.
//!
//! Files: this one (the card, APDU framing, dispatch, data objects), `state` (what is
//! persisted), `auth` (PIN, PUK, management key, GENERAL AUTHENTICATE), `keys` (key
//! generation, import, metadata, signatures and ECDH), `tests`.

use std::fs::{self};
use std::path::{Path, PathBuf};

use rand::RngExt as _;
use thiserror::Error;

use super::tlv::{self, CommandApdu, ResponseApdu};

mod auth;
mod keys;
mod state;
#[cfg(test)]
mod tests;

use state::{CardState, tag_key};

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
}

/// Key references that hold asymmetric keys: 9A, 9C, 9D, 9E and retired 82–95.
fn key_slot(slot: u8) -> bool {
    matches!(slot, 0x9A | 0x9C | 0x9D | 0x9E | 0x82..=0x95)
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut rng = rand::rng();
    (0..n).map(|_| rng.random::<u8>()).collect()
}

/// Writes `bytes` to `path` atomically and privately (0600); see
/// [`crate::fsutil::write_atomic`].
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::fsutil::write_atomic(path, bytes, 0o600)
}
