//! Several card providers behind one.

use std::collections::BTreeSet;

use super::{CardAccessError, CardProvider, CardSession, Session};
use crate::plan::PresentBlank;

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
