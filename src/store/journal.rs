//! Journal and history records.
//!
//! The journal holds one entry per effect: written as `open` before the effect happens and
//! closed after, so that a crash leaves an open entry that recovery resolves. The history is
//! the append-only record of applied actions that operators read.
//!
//! These are the values Keyfleet works with; how they are stored is [`super::stored`]'s
//! business (the journal's types have no serde of their own, so they cannot be stored by
//! mistake in a format tied to them).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::names::SanValue;
use crate::plan::{ActionKind, Reason};
use crate::policy::model::{CardType, KeyAlgorithm, ManagementKeyAlgorithm, Slot};

/// A status change asked of a CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaOp {
    /// Revoke with a reason (RFC 5280 reason name).
    Revoke {
        /// Reason name.
        reason: String,
    },
    /// Put on hold.
    Hold,
    /// Release a hold.
    Unhold,
}

/// One effect, with what recovery needs to finish or undo it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalStep {
    /// A new card is created (virtual) or taken from stock.
    CreateCard {
        /// Card id.
        card: String,
        /// Its stock.
        stock: Option<String>,
        /// Its type.
        card_type: CardType,
    },
    /// A card gets its management key, PIN and PUK (sealed here for recovery; never plain).
    /// The sealed PIN and PUK are needed only while the entry is open: they are dropped when
    /// it closes (see [`JournalStep::drop_secrets`]).
    Personalize {
        /// Card.
        card: String,
        /// Its holder (for the PIN mailer).
        user: String,
        /// The new PIN, sealed with the master key (aad: [`SealBinding::aad`]), hex; `None`
        /// once the entry is closed.
        sealed_pin: Option<String>,
        /// The new PUK, sealed like the PIN, hex; `None` once the entry is closed.
        sealed_puk: Option<String>,
        /// What the seals are bound to (the fixed tag in entries written before the binding).
        sealed_for: SealBinding,
        /// Management key algorithm.
        management_key: ManagementKeyAlgorithm,
    },
    /// A slot's key is about to be replaced: from here until its new certificate is written,
    /// the certificate in the slot no longer matches its key. Closed once the new
    /// certificate is written or the stale one removed; recovery removes a certificate still
    /// in the slot that is one of those it replaced.
    ReplaceKey {
        /// Card.
        card: String,
        /// Slot.
        slot: Slot,
        /// Serials of the certificates recorded for the card's slot before the new key (the
        /// ones that cannot match it).
        replaced: Vec<String>,
    },
    /// A CSR is sent to a CA under an idempotency key.
    Enroll {
        /// Idempotency key the CA knows the request by.
        request_id: String,
        /// Authority name.
        ca: String,
        /// Card holding the key.
        card: String,
        /// uid.
        user: String,
        /// Template.
        template: String,
        /// Certificate entry name.
        name: String,
        /// Slot.
        slot: Slot,
        /// CA profile.
        profile: String,
        /// Key algorithm.
        key_algorithm: KeyAlgorithm,
        /// Subject as requested.
        subject: String,
        /// SANs as requested.
        sans: Vec<SanValue>,
        /// Template revision.
        revision: String,
    },
    /// A signed certificate is written to its card.
    InstallCert {
        /// Serial.
        serial: String,
        /// Card.
        card: String,
        /// Slot.
        slot: Slot,
    },
    /// A certificate's status changes at the CA.
    CaStatus {
        /// Serial.
        serial: String,
        /// Authority name.
        ca: String,
        /// The change.
        op: CaOp,
    },
    /// A card is wiped.
    WipeCard {
        /// Card.
        card: String,
    },
}

/// A secret a journal entry holds sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalSecret {
    /// The card's new PIN.
    Pin,
    /// The card's new PUK.
    Puk,
}

impl JournalSecret {
    /// Its name (`pin`, `puk`).
    pub const fn name(self) -> &'static str {
        match self {
            JournalSecret::Pin => "pin",
            JournalSecret::Puk => "puk",
        }
    }
}

/// What a journal entry's sealed secrets are bound to (the AEAD associated data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealBinding {
    /// Sealed by an older Keyfleet under a fixed tag (`journal-pin`, `journal-puk`): a blob
    /// opens in any entry. Read only to recover an entry that is still open.
    FixedTag,
    /// Bound to the card and the journal entry: a blob moved to another entry or card does
    /// not open.
    CardAndEntry,
}

impl SealBinding {
    /// The associated data `secret` of journal entry `entry` for `card` is sealed under.
    pub fn aad(self, secret: JournalSecret, card: &str, entry: u64) -> Vec<u8> {
        match self {
            SealBinding::FixedTag => format!("journal-{}", secret.name()).into_bytes(),
            // The entry id is digits and comes before the card id: no two (entry, card)
            // pairs give the same bytes.
            SealBinding::CardAndEntry => {
                format!("keyfleet-journal-{}:{entry}:{card}", secret.name()).into_bytes()
            }
        }
    }
}

impl JournalStep {
    /// Drops the secret material the step holds (the sealed PIN and PUK of a
    /// personalisation), keeping the facts. Returns whether there was any.
    pub fn drop_secrets(&mut self) -> bool {
        match self {
            JournalStep::Personalize {
                sealed_pin,
                sealed_puk,
                ..
            } => {
                let had = sealed_pin.is_some() || sealed_puk.is_some();
                *sealed_pin = None;
                *sealed_puk = None;
                had
            }
            _ => false,
        }
    }
}

/// Where a journal entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalState {
    /// Recorded, effect not known to be complete.
    Open,
    /// Effect complete and recorded.
    Done,
    /// Effect failed; nothing to resume.
    Failed,
    /// Recovery found the effect never happened.
    Abandoned,
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// Monotonic id.
    pub id: u64,
    /// The plan action it belongs to.
    pub action_id: String,
    /// The effect.
    pub step: JournalStep,
    /// Its state.
    pub state: JournalState,
    /// When it was opened.
    pub opened_at: OffsetDateTime,
    /// When it was closed.
    pub closed_at: Option<OffsetDateTime>,
    /// Error or note.
    pub message: Option<String>,
}

/// The outcome of an applied action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HistoryResult {
    /// Done.
    Ok,
    /// Failed; see the message.
    Failed,
    /// Finished by recovery after an interruption.
    Recovered,
}

/// One applied action, as operators read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub at: OffsetDateTime,
    /// Who: the OS user or the named operator.
    pub actor: String,
    /// What.
    pub kind: ActionKind,
    /// For whom.
    pub user: String,
    /// Template.
    pub template: Option<String>,
    /// Card.
    pub card: Option<String>,
    /// Slots.
    pub slots: Vec<Slot>,
    /// Certificates created or changed.
    pub serials: Vec<String>,
    /// Why.
    pub reason: Reason,
    /// Outcome.
    pub result: HistoryResult,
    /// Error text when failed.
    #[serde(default)]
    pub message: Option<String>,
}
