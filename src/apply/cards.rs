//! Reaching cards: the [`CardProvider`] trait the executors use, and the virtual-card provider
//! whose cards live as files in the state directory.
//!
//! A provider connects to cards and creates virtual ones; it knows nothing of users,
//! templates or the life cycle.
//!
//! Card kinds: [`CardProvider::connect`] gives a PIV session (virtual cards, PC/SC readers);
//! [`CardProvider::open`] gives the executors a [`CardSession`] of whatever kind the card is.
//! Its default wraps `connect` in a [`PivCard`], so a PIV provider implements only `connect`;
//! providers of other kinds (PKCS#11 tokens) override `open`. [`CardProvider::blanks`] lists
//! present cards a stock accepts that the provider can recognise as blank (default: none).
//! [`CompositeCards`] puts several providers behind one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::session::{CardSession, PivCard};
use crate::card::piv::PivClient;
use crate::card::transport::{InProcess, Transport};
use crate::card::vcard::VirtualCard;
use crate::plan::PresentBlank;

/// A PIV session to a present card, whatever the transport.
pub type Session = PivClient<Box<dyn Transport>>;

/// Reaching a card failed.
#[derive(Debug, thiserror::Error)]
pub enum CardAccessError {
    /// The card is not attached.
    #[error("card {0} is not present")]
    NotPresent(String),
    /// The card's storage failed.
    #[error("card {card}: {message}")]
    Storage {
        /// Card id.
        card: String,
        /// What failed.
        message: String,
    },
    /// This provider cannot create cards of the kind asked.
    #[error("cannot create a card: {0}")]
    CannotCreate(String),
}

/// Connects to cards by id, lists the present ones, creates virtual ones.
pub trait CardProvider: Sync {
    /// Ids of the cards attached now.
    fn present(&self) -> Result<BTreeSet<String>, CardAccessError>;
    /// A session to a present card.
    fn connect(&self, card: &str) -> Result<Session, CardAccessError>;
    /// Creates a new virtual card in factory state and returns its id.
    fn create_virtual(&self) -> Result<String, CardAccessError>;
    /// Whether a card with this id exists (for recovery of an interrupted creation).
    fn exists(&self, card: &str) -> bool;
    /// A session of the card's kind to a present card (default: PIV over [`Self::connect`]).
    fn open(&self, card: &str) -> Result<Box<dyn CardSession>, CardAccessError> {
        Ok(Box::new(PivCard::new(card, self.connect(card)?)))
    }
    /// Present cards that a stock accepts as blank (default: none; virtual cards are created).
    fn blanks(&self) -> Result<Vec<PresentBlank>, CardAccessError> {
        Ok(Vec::new())
    }
}

/// Several providers behind one: a card belongs to the first provider for which
/// [`CardProvider::exists`] holds; presence and blanks are the union; virtual cards come from
/// the first provider that can create them.
pub struct CompositeCards {
    providers: Vec<Box<dyn CardProvider>>,
}

impl CompositeCards {
    /// The providers, in order of preference.
    pub fn new(providers: Vec<Box<dyn CardProvider>>) -> Self {
        CompositeCards { providers }
    }

    fn owner(&self, card: &str) -> Result<&dyn CardProvider, CardAccessError> {
        self.providers
            .iter()
            .find(|p| p.exists(card))
            .map(|p| p.as_ref())
            .ok_or_else(|| CardAccessError::NotPresent(card.to_string()))
    }
}

impl CardProvider for CompositeCards {
    fn present(&self) -> Result<BTreeSet<String>, CardAccessError> {
        let mut out = BTreeSet::new();
        for p in &self.providers {
            out.extend(p.present()?);
        }
        Ok(out)
    }

    fn connect(&self, card: &str) -> Result<Session, CardAccessError> {
        self.owner(card)?.connect(card)
    }

    fn create_virtual(&self) -> Result<String, CardAccessError> {
        let mut last = CardAccessError::CannotCreate("no provider creates virtual cards".into());
        for p in &self.providers {
            match p.create_virtual() {
                Ok(id) => return Ok(id),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn exists(&self, card: &str) -> bool {
        self.providers.iter().any(|p| p.exists(card))
    }

    fn open(&self, card: &str) -> Result<Box<dyn CardSession>, CardAccessError> {
        self.owner(card)?.open(card)
    }

    fn blanks(&self) -> Result<Vec<PresentBlank>, CardAccessError> {
        let mut out = Vec::new();
        for p in &self.providers {
            out.extend(p.blanks()?);
        }
        Ok(out)
    }
}

/// Virtual cards: one JSON file per card under `<state dir>/cards/`. They are always present.
pub struct VirtualCards {
    dir: PathBuf,
}

impl VirtualCards {
    /// Virtual cards stored in `dir`.
    pub fn new(dir: &Path) -> Self {
        VirtualCards {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, card: &str) -> Option<PathBuf> {
        // Ids are generated here as `vc-<32 hex>`; anything else is not one of ours and
        // must not become a path.
        let hex = card.strip_prefix("vc-")?;
        (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| self.dir.join(format!("{card}.json")))
    }

    /// The 16-byte GUID a virtual card id encodes.
    pub fn guid_of(card: &str) -> Option<[u8; 16]> {
        let bytes = hex::decode(card.strip_prefix("vc-")?).ok()?;
        bytes.try_into().ok()
    }
}

impl CardProvider for VirtualCards {
    fn present(&self) -> Result<BTreeSet<String>, CardAccessError> {
        let mut out = BTreeSet::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => {
                return Err(CardAccessError::Storage {
                    card: "*".into(),
                    message: format!("cannot list {}: {e}", self.dir.display()),
                });
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".json")
                && self.path(id).is_some()
            {
                out.insert(id.to_string());
            }
        }
        Ok(out)
    }

    fn connect(&self, card: &str) -> Result<Session, CardAccessError> {
        let path = self
            .path(card)
            .ok_or_else(|| CardAccessError::NotPresent(card.to_string()))?;
        if !path.exists() {
            return Err(CardAccessError::NotPresent(card.to_string()));
        }
        let vc = VirtualCard::open(&path).map_err(|e| CardAccessError::Storage {
            card: card.to_string(),
            message: e.to_string(),
        })?;
        Ok(PivClient::new(Box::new(InProcess::new(vc))))
    }

    fn create_virtual(&self) -> Result<String, CardAccessError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| CardAccessError::Storage {
            card: "*".into(),
            message: format!("cannot create {}: {e}", self.dir.display()),
        })?;
        let guid: [u8; 16] = rand::random();
        let id = format!("vc-{}", hex::encode(guid));
        let path = self
            .path(&id)
            .ok_or_else(|| CardAccessError::CannotCreate(id.clone()))?;
        VirtualCard::create(&path).map_err(|e| CardAccessError::Storage {
            card: id.clone(),
            message: e.to_string(),
        })?;
        Ok(id)
    }

    fn exists(&self, card: &str) -> bool {
        self.path(card).is_some_and(|p| p.exists())
    }
}
