//! Virtual cards as a [`CardProvider`]: one JSON file per card under `<state dir>/cards/`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{CardAccessError, CardProvider, Session};
use crate::card::piv::PivClient;
use crate::card::transport::InProcess;
use crate::card::vcard::VirtualCard;

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
