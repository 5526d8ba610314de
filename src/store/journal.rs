//! Journal and history records.
//!
//! The journal holds one entry per effect: written as `open` before the effect happens and
//! closed after, so that a crash leaves an open entry that recovery resolves. The history is
//! the append-only record of applied actions that operators read.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::names::SanValue;
use crate::plan::{ActionKind, Reason};
use crate::policy::model::{CardType, KeyAlgorithm, ManagementKeyAlgorithm, Slot};

/// A status change asked of a CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "op")]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "step")]
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
    #[serde(rename_all = "camelCase")]
    Personalize {
        /// Card.
        card: String,
        /// Its holder (for the PIN mailer).
        user: String,
        /// The new PIN, sealed with the master key (aad `journal-pin`), hex.
        sealed_pin: String,
        /// The new PUK, sealed (aad `journal-puk`), hex.
        sealed_puk: String,
        /// Management key algorithm.
        management_key: ManagementKeyAlgorithm,
    },
    /// A CSR is sent to a CA under an idempotency key.
    #[serde(rename_all = "camelCase")]
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
        #[serde(flatten)]
        op: CaOp,
    },
    /// A card is wiped.
    WipeCard {
        /// Card.
        card: String,
    },
}

/// Where a journal entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
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
    #[serde(with = "time::serde::rfc3339")]
    pub opened_at: OffsetDateTime,
    /// When it was closed.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub closed_at: Option<OffsetDateTime>,
    /// Error or note.
    #[serde(default)]
    pub message: Option<String>,
}

/// The outcome of an applied action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
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
