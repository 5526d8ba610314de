//! Reaching cards, whatever their kind: the [`CardProvider`] trait (connect, list, create) and
//! the [`CardSession`] trait the executors drive, in one place; the providers and sessions
//! live beside it and import only this module:
//!
//! ```text
//!   executor ──► CardProvider::open(card) ──► Box<dyn CardSession>
//!                 ├─ VirtualCards  (files in the state dir)   ├─ PivCard   (PIV APDUs)
//!                 ├─ PcscCards     (PC/SC readers)            └─ TokenCard (PKCS#11)
//!                 ├─ Tokens        (PKCS#11 stocks)
//!                 └─ CompositeCards / Cards (several behind one)
//! ```
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
//!
//! A session does what one card kind needs for one step (administrative login, the two halves
//! of personalisation, key generation or import, a CSR signed on the card, certificate objects,
//! wipe). It knows nothing of plans, the journal or the CA: the executors order the steps,
//! journal them, write the PIN mailer and seal the secrets.

mod composite;
pub mod pcsc;
mod piv;
pub mod tokens;
mod virtual_cards;

use std::collections::BTreeSet;

pub use composite::CompositeCards;
pub use pcsc::{Cards, PcscCards};
pub use piv::PivCard;
pub use tokens::{TokenCard, TokenStock, Tokens};
pub use virtual_cards::VirtualCards;

use super::{ApplyError, Context};
use crate::card::keys::{KeyAlg, PrivateKeyMaterial, PublicKey};
use crate::card::piv::PivClient;
use crate::card::transport::Transport;
use crate::desired::DesiredCredential;
use crate::plan::PresentBlank;
use crate::policy::model::{ManagementKeyAlgorithm, Slot};

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

/// What the executors need of a card, whatever its kind.
pub trait CardSession {
    /// Makes the card ready for commands (PIV: SELECT the applet; tokens: open a session).
    fn select(&mut self) -> Result<(), ApplyError>;

    /// Logs in with the administrative credential Keyfleet set (PIV: the diversified
    /// management key, else the factory one; tokens: the user PIN Keyfleet set). `cred` gives
    /// the template's settings when the card has none recorded yet. Returns whether Keyfleet's
    /// own credential worked.
    fn admin_login(
        &mut self,
        ctx: &Context<'_>,
        cred: Option<&DesiredCredential>,
    ) -> Result<bool, ApplyError>;

    /// Verifies the PIN Keyfleet holds before a slot is touched, without ever spending a
    /// holder's last tries (PIV: reads the retry counter first and tries only when a wrong
    /// try leaves at least `keep`). A refused or untried PIN is
    /// [`ApplyError::HolderPin`]. Default: nothing to do (tokens log in with the PIN in
    /// [`CardSession::admin_login`]).
    fn check_pin(&mut self, _ctx: &Context<'_>, _pin: &str, _keep: u8) -> Result<(), ApplyError> {
        Ok(())
    }

    /// Makes a personalised card prove the administrative credential Keyfleet set before it
    /// is sent any secret (PIV: 9B mutual authentication with the stored management key; a
    /// card that cannot is [`ApplyError::Suspect`]). Default: nothing to prove.
    fn prove(&mut self, _ctx: &Context<'_>) -> Result<(), ApplyError> {
        Ok(())
    }

    /// First half of personalisation, before any PIN is set (PIV: management key and CHUID;
    /// tokens: C_InitToken with the SO PIN and the holder's label). `fresh`: the card is known
    /// to be in factory state; otherwise (recovery) whatever was done already is accepted.
    fn prepare(
        &mut self,
        ctx: &Context<'_>,
        user: &str,
        mgmt_alg: ManagementKeyAlgorithm,
        fresh: bool,
    ) -> Result<(), ApplyError>;

    /// Second half: sets the PIN and PUK Keyfleet generated (tokens: the user PIN, set by the
    /// SO; tokens have no PUK, the SO PIN plays its part).
    fn set_pins(
        &mut self,
        ctx: &Context<'_>,
        pin: &str,
        puk: &str,
        fresh: bool,
    ) -> Result<(), ApplyError>;

    /// Generates a key pair in `slot` on the card and returns its public key.
    fn generate_key(&mut self, slot: Slot, alg: KeyAlg) -> Result<PublicKey, ApplyError>;

    /// Imports a server-generated private key into `slot`.
    fn import_key(
        &mut self,
        slot: Slot,
        key: &PrivateKeyMaterial,
        public: &PublicKey,
    ) -> Result<(), ApplyError>;

    /// A CSR for `params`, signed on the card by the key in `slot` (`pin` unlocks it).
    fn sign_csr(
        &mut self,
        slot: Slot,
        public: PublicKey,
        pin: &str,
        params: &rcgen::CertificateParams,
    ) -> Result<Vec<u8>, ApplyError>;

    /// Writes the certificate of `slot`.
    fn write_certificate(&mut self, slot: Slot, der: &[u8]) -> Result<(), ApplyError>;

    /// Reads the certificate of `slot`, if any.
    fn read_certificate(&mut self, slot: Slot) -> Result<Option<Vec<u8>>, ApplyError>;

    /// Deletes the certificate of `slot`.
    fn delete_certificate(&mut self, slot: Slot) -> Result<(), ApplyError>;

    /// Destroys every key and certificate Keyfleet put on the card and returns the card to the
    /// state its stock accepts as blank. Re-entrant. The executor updates the inventory.
    fn wipe(&mut self, ctx: &Context<'_>) -> Result<(), ApplyError>;

    /// Resets a blocked (or forgotten) PIN to `new_pin` with the unblocking secret Keyfleet
    /// holds for the card (PIV: the PUK; PKCS#11: the stock's SO PIN). Returns the PIN tries
    /// that were left before, when the card tells.
    fn unblock(
        &mut self,
        ctx: &Context<'_>,
        puk: &str,
        new_pin: &str,
    ) -> Result<Option<u8>, ApplyError>;

    /// Writes the holder's previous encryption keys into the retired key-management slots,
    /// newest first (PIV: 82, 83, …, after the administrative login), each with its
    /// certificate; clears every retired slot beyond the list and writes the Key History
    /// object (`C1` = keys written, `C2` = 0). Re-entrant. Default: the card kind has no
    /// retired slots (PKCS#11 tokens).
    fn write_retired(
        &mut self,
        _ctx: &Context<'_>,
        _history: &[RetiredKey],
    ) -> Result<(), ApplyError> {
        Err(no_retired_slots())
    }

    /// The retired certificates the card announces (PIV: per the Key History object), as
    /// (slot, certificate DER), newest first. Default: the card kind has no retired slots.
    fn read_retired(&mut self) -> Result<Vec<(u8, Vec<u8>)>, ApplyError> {
        Err(no_retired_slots())
    }

    /// Replaces the PUK (PIV: CHANGE REFERENCE DATA `81`). Default: the card kind has no PUK
    /// (PKCS#11 tokens: the stock's SO PIN plays its part).
    fn change_puk(&mut self, _old: &str, _new: &str) -> Result<(), ApplyError> {
        Err(ApplyError::Stale(
            "this kind of card has no PUK Keyfleet could change".into(),
        ))
    }
}

/// The error of a card kind without retired key slots (PKCS#11 tokens).
fn no_retired_slots() -> ApplyError {
    ApplyError::Unsupported(
        "retired key slots are not supported for this card kind (PKCS#11 tokens have none)".into(),
    )
}

/// A previous encryption key for a retired key-management slot, with its certificate.
pub struct RetiredKey {
    /// The private key (from the archive).
    pub key: PrivateKeyMaterial,
    /// Its public key (the certificate's).
    pub public: PublicKey,
    /// The certificate, DER.
    pub certificate_der: Vec<u8>,
}

impl std::fmt::Debug for RetiredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetiredKey")
            .field("key", &self.key)
            .field("certificate_len", &self.certificate_der.len())
            .finish()
    }
}

/// The four PIV slots, in the order they are wiped.
pub const ALL_SLOTS: [Slot; 4] = [
    Slot::PivAuthentication,
    Slot::DigitalSignature,
    Slot::KeyManagement,
    Slot::CardAuthentication,
];
