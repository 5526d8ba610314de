//! PIV cards in PC/SC readers as a [`CardProvider`], and the composite provider that routes
//! card ids to the virtual-card or the PC/SC provider.
//!
//! Owns: how a physical card gets its inventory id, which present cards are offered to `piv`
//! stocks as blanks, and finding the reader that holds a card.
//!
//! ## Card identity
//!
//! - A card with a CHUID (non-zero GUID) is `piv-<GUID, 32 lower-case hex>`.
//! - A card without a CHUID is identified by the vendor serial probe (`00 F8`, answered by
//!   YubiKeys and Keyfleet's virtual card): its id is `piv-<G>` where `G` is the first 16 bytes
//!   of SHA-256(`keyfleet/piv-guid/v1` ‖ serial, big-endian). Issuance writes exactly `G` as
//!   the CHUID GUID (the executor derives the GUID it writes from the id, see [`guid_of`]), so
//!   the id is fixed before the first write and never changes: the card reads back as the same
//!   id after the CHUID exists, and an issuance interrupted before the CHUID was written is
//!   still found on the next insertion (by its serial).
//! - A card with neither cannot be identified reproducibly; it is listed by `keyfleet cards`
//!   but never offered to a stock. Give it a CHUID first (e.g. `piv-tool`), or use a card that
//!   answers the serial probe.
//!
//! ## Blanks
//!
//! A present card that the inventory does not know is offered (as [`PresentBlank`]) to the
//! first `piv` stock with `autoBind` whose selector accepts it: `guids` lists its GUID, `serials`
//! its serial (decimal), or `anyBlank` and the card holds no certificate in 9A/9C/9D/9E.
//!
//! It does NOT decide what to do with a card (the planner does) nor talk PIV beyond identity.

use std::collections::{BTreeMap, BTreeSet};

use sha2::Digest as _;

use super::{CardAccessError, CardProvider, Session, VirtualCards};
use crate::card::pcsc::{self, CardIdentity, PcscError, PcscTransport};
use crate::card::piv::PivClient;
use crate::inventory::Inventory;
use crate::plan::PresentBlank;
use crate::policy::PolicySet;
use crate::policy::model::{CardType, StockSelector};

/// The id prefix of PIV cards reached through PC/SC.
pub const PIV_PREFIX: &str = "piv-";

/// The inventory id of a card with this GUID.
pub fn piv_id(guid: &[u8; 16]) -> String {
    format!("{PIV_PREFIX}{}", hex::encode(guid))
}

/// The GUID a PIV card id encodes (what issuance writes into the CHUID).
pub fn guid_of(card: &str) -> Option<[u8; 16]> {
    let hex = card.strip_prefix(PIV_PREFIX)?;
    if hex.len() != 32 {
        return None;
    }
    hex::decode(hex).ok()?.try_into().ok()
}

/// The GUID Keyfleet gives a card without a CHUID, derived from its serial.
pub fn serial_guid(serial: u32) -> [u8; 16] {
    let mut h = sha2::Sha256::new();
    h.update(b"keyfleet/piv-guid/v1");
    h.update(serial.to_be_bytes());
    let digest = h.finalize();
    let mut guid = [0u8; 16];
    guid.iter_mut()
        .zip(digest.iter())
        .for_each(|(g, d)| *g = *d);
    guid
}

/// The inventory id of an identified card, `None` when it cannot be identified.
pub fn id_of(identity: &CardIdentity) -> Option<String> {
    identity
        .guid
        .or_else(|| identity.serial.map(serial_guid))
        .map(|g| piv_id(&g))
}

/// One reader with a card, as a scan saw it.
#[derive(Debug, Clone)]
pub struct ScannedCard {
    /// The reader.
    pub reader: String,
    /// The card's ATR.
    pub atr: Vec<u8>,
    /// Who it is, or why that could not be read.
    pub identity: Result<CardIdentity, String>,
}

impl ScannedCard {
    /// The card's inventory id, if it can be identified.
    pub fn id(&self) -> Option<String> {
        self.identity.as_ref().ok().and_then(id_of)
    }
}

/// PIV cards in PC/SC readers.
pub struct PcscCards {
    ctx: Result<::pcsc::Context, String>,
}

impl std::fmt::Debug for PcscCards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcscCards")
            .field("available", &self.ctx.is_ok())
            .finish()
    }
}

impl Default for PcscCards {
    fn default() -> Self {
        Self::new()
    }
}

impl PcscCards {
    /// Connects to the PC/SC service. Without one, every reader list is empty and
    /// [`PcscCards::unavailable`] says why.
    pub fn new() -> Self {
        PcscCards {
            ctx: pcsc::establish().map_err(|e| e.to_string()),
        }
    }

    /// Why PC/SC cannot be used, if it cannot.
    pub fn unavailable(&self) -> Option<&str> {
        self.ctx.as_ref().err().map(String::as_str)
    }

    /// The PC/SC context, if available.
    pub fn context(&self) -> Option<&::pcsc::Context> {
        self.ctx.as_ref().ok()
    }

    /// Every reader and its state.
    pub fn readers(&self) -> Result<Vec<pcsc::ReaderInfo>, PcscError> {
        match &self.ctx {
            Ok(ctx) => pcsc::readers(ctx),
            Err(_) => Ok(Vec::new()),
        }
    }

    /// Identifies the card in every reader; `read_certs` also reads which slots hold
    /// certificates (needed to tell blanks).
    pub fn scan(&self, read_certs: bool) -> Result<Vec<ScannedCard>, PcscError> {
        let Ok(ctx) = &self.ctx else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for reader in pcsc::readers(ctx)?.into_iter().filter(|r| r.present) {
            let identity = pcsc::identify(ctx, &reader.name, read_certs).map_err(|e| e.to_string());
            out.push(ScannedCard {
                reader: reader.name,
                atr: reader.atr,
                identity,
            });
        }
        Ok(out)
    }

    /// The PIN and PUK tries left of the card in `reader`, read without spending any; why
    /// not, when they cannot be read.
    pub fn tries(&self, reader: &str) -> Result<crate::card::piv::TriesLeft, String> {
        match &self.ctx {
            Ok(ctx) => pcsc::read_tries(ctx, reader).map_err(|e| e.to_string()),
            Err(e) => Err(e.clone()),
        }
    }

    /// The retired certificates (slot, DER) the card in `reader` announces in its Key
    /// History; why not, when they cannot be read.
    pub fn retired(&self, reader: &str) -> Result<Vec<(u8, Vec<u8>)>, String> {
        match &self.ctx {
            Ok(ctx) => pcsc::read_retired(ctx, reader).map_err(|e| e.to_string()),
            Err(e) => Err(e.clone()),
        }
    }

    fn scan_err(e: PcscError) -> CardAccessError {
        CardAccessError::Storage {
            card: "*".into(),
            message: e.to_string(),
        }
    }
}

/// The `piv` stocks with `autoBind` that accept `identity`, first by name.
pub fn stock_for(policy: &PolicySet, identity: &CardIdentity) -> Option<String> {
    policy.stocks.iter().find_map(|(name, stock)| {
        let StockSelector::Piv(sel) = &stock.spec.selector else {
            return None;
        };
        if !stock.spec.auto_bind || stock.spec.card_type != CardType::Piv {
            return None;
        }
        let by_guid = identity.guid.is_some_and(|g| {
            let h = hex::encode(g);
            sel.guids.iter().any(|w| w.eq_ignore_ascii_case(&h))
        });
        let by_serial = identity
            .serial
            .is_some_and(|s| sel.serials.iter().any(|w| w.trim() == s.to_string()));
        let blank = sel.any_blank && identity.looks_blank() == Some(true);
        (by_guid || by_serial || blank).then(|| name.clone())
    })
}

/// The present cards the inventory does not know that a `piv` stock accepts.
pub fn present_blanks(
    policy: &PolicySet,
    inventory: &Inventory,
    scanned: &[ScannedCard],
) -> Vec<PresentBlank> {
    let mut out = Vec::new();
    for card in scanned {
        let (Ok(identity), Some(id)) = (&card.identity, card.id()) else {
            continue;
        };
        if inventory.cards.contains_key(&id) || out.iter().any(|b: &PresentBlank| b.id == id) {
            continue;
        }
        if let Some(stock) = stock_for(policy, identity) {
            out.push(PresentBlank {
                id,
                card_type: CardType::Piv,
                stock,
            });
        }
    }
    out
}

impl CardProvider for PcscCards {
    fn present(&self) -> Result<BTreeSet<String>, CardAccessError> {
        Ok(self
            .scan(false)
            .map_err(Self::scan_err)?
            .iter()
            .filter_map(ScannedCard::id)
            .collect())
    }

    fn connect(&self, card: &str) -> Result<Session, CardAccessError> {
        let Ok(ctx) = &self.ctx else {
            return Err(CardAccessError::NotPresent(card.to_string()));
        };
        let scanned = self.scan(false).map_err(Self::scan_err)?;
        let reader = scanned
            .iter()
            .find(|c| c.id().as_deref() == Some(card))
            .map(|c| c.reader.clone())
            .ok_or_else(|| CardAccessError::NotPresent(card.to_string()))?;
        let transport = PcscTransport::connect(ctx, &reader).map_err(|e| match e {
            PcscError::Connect {
                source: ::pcsc::Error::RemovedCard | ::pcsc::Error::NoSmartcard,
                ..
            } => CardAccessError::NotPresent(card.to_string()),
            e => Self::scan_err(e),
        })?;
        Ok(PivClient::new(Box::new(transport)))
    }

    fn create_virtual(&self) -> Result<String, CardAccessError> {
        Err(CardAccessError::CannotCreate(
            "PIV cards in readers are not created, they are inserted".into(),
        ))
    }

    fn exists(&self, card: &str) -> bool {
        self.present().is_ok_and(|p| p.contains(card))
    }
}

/// Virtual cards plus, when the policy or inventory uses PIV cards, the PC/SC readers. Ids
/// route the calls: `piv-…` to PC/SC, everything else to the virtual cards.
pub struct Cards {
    /// The virtual cards of the state directory.
    pub virtual_cards: VirtualCards,
    /// PC/SC, when PIV cards are in use.
    pub pcsc: Option<PcscCards>,
    /// PKCS#11 tokens, when the policy has `pkcs11` stocks.
    pub tokens: Option<super::Tokens>,
}

impl Cards {
    /// Whether a policy or an inventory involves PIV cards (then PC/SC is consulted).
    pub fn uses_piv(policy: &PolicySet, inventory: &Inventory) -> bool {
        policy
            .templates
            .values()
            .any(|t| t.spec.card_type == CardType::Piv)
            || policy
                .stocks
                .values()
                .any(|s| s.spec.card_type == CardType::Piv)
            || inventory
                .cards
                .values()
                .any(|c| c.card_type == CardType::Piv)
    }

    /// The blanks present in readers (empty without PC/SC), and the scan they came from.
    pub fn scan_blanks(
        &self,
        policy: &PolicySet,
        inventory: &Inventory,
    ) -> Result<(Vec<PresentBlank>, Vec<ScannedCard>), CardAccessError> {
        let Some(p) = &self.pcsc else {
            return Ok((Vec::new(), Vec::new()));
        };
        let scanned = p.scan(true).map_err(PcscCards::scan_err)?;
        Ok((present_blanks(policy, inventory, &scanned), scanned))
    }
}

impl CardProvider for Cards {
    fn present(&self) -> Result<BTreeSet<String>, CardAccessError> {
        let mut out = self.virtual_cards.present()?;
        if let Some(p) = &self.pcsc {
            out.extend(p.present()?);
        }
        if let Some(t) = &self.tokens {
            out.extend(t.present()?);
        }
        Ok(out)
    }

    fn connect(&self, card: &str) -> Result<Session, CardAccessError> {
        if card.starts_with(PIV_PREFIX) {
            return match &self.pcsc {
                Some(p) => p.connect(card),
                None => Err(CardAccessError::NotPresent(card.to_string())),
            };
        }
        if card.starts_with(crate::card::pkcs11::CARD_PREFIX) {
            return match &self.tokens {
                Some(t) => t.connect(card),
                None => Err(CardAccessError::NotPresent(card.to_string())),
            };
        }
        self.virtual_cards.connect(card)
    }

    fn open(&self, card: &str) -> Result<Box<dyn super::CardSession>, CardAccessError> {
        if card.starts_with(crate::card::pkcs11::CARD_PREFIX) {
            return match &self.tokens {
                Some(t) => t.open(card),
                None => Err(CardAccessError::NotPresent(card.to_string())),
            };
        }
        Ok(Box::new(super::PivCard::new(card, self.connect(card)?)))
    }

    fn create_virtual(&self) -> Result<String, CardAccessError> {
        self.virtual_cards.create_virtual()
    }

    fn exists(&self, card: &str) -> bool {
        if card.starts_with(PIV_PREFIX) {
            return self.pcsc.as_ref().is_some_and(|p| p.exists(card));
        }
        if card.starts_with(crate::card::pkcs11::CARD_PREFIX) {
            return self.tokens.as_ref().is_some_and(|t| t.exists(card));
        }
        self.virtual_cards.exists(card)
    }

    /// Blank tokens (PIV blanks need the policy and come from [`Cards::scan_blanks`]).
    fn blanks(&self) -> Result<Vec<PresentBlank>, CardAccessError> {
        match &self.tokens {
            Some(t) => t.blanks(),
            None => Ok(Vec::new()),
        }
    }
}

/// Scanned cards by id (for `keyfleet cards` and the wait loop).
pub fn by_id(scanned: &[ScannedCard]) -> BTreeMap<String, &ScannedCard> {
    scanned
        .iter()
        .filter_map(|c| c.id().map(|id| (id, c)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(guid: Option<[u8; 16]>, serial: Option<u32>, certs: Vec<u8>) -> CardIdentity {
        CardIdentity {
            reader: "r".into(),
            atr: vec![0x3B],
            guid,
            serial,
            cert_slots: Some(certs),
        }
    }

    #[test]
    fn ids_come_from_the_chuid_else_the_serial() {
        let g = [0xAB; 16];
        assert_eq!(
            id_of(&identity(Some(g), Some(7), vec![])).unwrap(),
            format!("piv-{}", "ab".repeat(16))
        );
        let derived = id_of(&identity(None, Some(7), vec![])).unwrap();
        assert_eq!(guid_of(&derived), Some(serial_guid(7)));
        assert_ne!(serial_guid(7), serial_guid(8));
        assert_eq!(id_of(&identity(None, None, vec![])), None);
        assert_eq!(guid_of("piv-12"), None);
        assert_eq!(guid_of("vc-".to_string().as_str()), None);
        assert_eq!(guid_of(&piv_id(&g)), Some(g));
    }

    fn policy(stock_yaml: &str) -> PolicySet {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("stock.yaml"),
            format!(
                "apiVersion: keyfleet.dev/v1\nkind: CardStock\nmetadata: {{name: s}}\nspec:\n  cardType: piv\n  autoBind: true\n{stock_yaml}"
            ),
        )
        .unwrap();
        crate::policy::load_policy_set(dir.path()).unwrap()
    }

    #[test]
    fn stocks_accept_blanks_guids_and_serials() {
        let any = policy("  piv: {anyBlank: true}\n");
        assert_eq!(
            stock_for(&any, &identity(None, Some(1), vec![])).as_deref(),
            Some("s")
        );
        assert_eq!(stock_for(&any, &identity(None, Some(1), vec![0x9A])), None);
        let listed = policy(&format!(
            "  piv: {{guids: [\"{}\"], serials: [\"42\"]}}\n",
            "AB".repeat(16)
        ));
        assert!(stock_for(&listed, &identity(Some([0xAB; 16]), None, vec![0x9A])).is_some());
        assert!(stock_for(&listed, &identity(None, Some(42), vec![])).is_some());
        assert!(stock_for(&listed, &identity(None, Some(43), vec![])).is_none());
        let scanned = vec![ScannedCard {
            reader: "r".into(),
            atr: vec![],
            identity: Ok(identity(None, Some(42), vec![])),
        }];
        let blanks = present_blanks(&listed, &Inventory::default(), &scanned);
        assert_eq!(blanks.len(), 1);
        assert_eq!(blanks[0].stock, "s");
        assert_eq!(guid_of(&blanks[0].id), Some(serial_guid(42)));
    }
}
