//! The stored format of the journal and the history: types of their own, converted to and
//! from the planner's, policy's and journal's types explicitly.
//!
//! A value in the store outlives the code that wrote it, so its names are fixed here, not
//! borrowed from enums that change with the planner (`ActionKind`, `ReasonCode`) or the
//! policy (`Slot`, `CardType`, ...): renaming or re-serialising one of those leaves the store
//! as it is, and adding a variant fails to compile until it has a stored name here. The
//! names are those Keyfleet has always written (`format_tests` holds the bytes).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::journal::{
    CaOp, HistoryEntry, HistoryResult, JournalEntry, JournalState, JournalStep, SealBinding,
};
use crate::names::SanValue;
use crate::plan::{ActionKind, Reason, ReasonCode};
use crate::policy::model::{CardType, KeyAlgorithm, ManagementKeyAlgorithm, Slot};

/// Declares a stored enum of unit variants and its conversions both ways with a domain enum.
macro_rules! stored_enum {
    (
        $(#[$meta:meta])*
        $stored:ident <=> $domain:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $name:literal $(| $alias:literal)? ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        pub(super) enum $stored {
            $(
                $(#[$vmeta])*
                #[serde(rename = $name $(, alias = $alias)?)]
                $variant,
            )+
        }

        impl From<$domain> for $stored {
            fn from(v: $domain) -> Self {
                match v {
                    $( $domain::$variant => $stored::$variant, )+
                }
            }
        }

        impl From<$stored> for $domain {
            fn from(v: $stored) -> Self {
                match v {
                    $( $stored::$variant => $domain::$variant, )+
                }
            }
        }
    };
}

stored_enum! {
    /// A card type.
    StoredCardType <=> CardType {
        /// PIV over PC/SC.
        Piv = "piv",
        /// PKCS#11 token.
        Pkcs11 = "pkcs11",
        /// Virtual card.
        Virtual = "virtual",
    }
}

stored_enum! {
    /// A PIV slot (upper-case hex; lower case read too).
    StoredSlot <=> Slot {
        /// 9A.
        PivAuthentication = "9A" | "9a",
        /// 9C.
        DigitalSignature = "9C" | "9c",
        /// 9D.
        KeyManagement = "9D" | "9d",
        /// 9E.
        CardAuthentication = "9E" | "9e",
    }
}

stored_enum! {
    /// A key algorithm.
    StoredKeyAlgorithm <=> KeyAlgorithm {
        /// P-256.
        EccP256 = "ecc-p256",
        /// P-384.
        EccP384 = "ecc-p384",
        /// RSA 2048.
        Rsa2048 = "rsa-2048",
        /// RSA 3072.
        Rsa3072 = "rsa-3072",
    }
}

stored_enum! {
    /// A management key algorithm.
    StoredManagementKey <=> ManagementKeyAlgorithm {
        /// Triple DES.
        TripleDes = "3des",
        /// AES-128.
        Aes128 = "aes-128",
        /// AES-192.
        Aes192 = "aes-192",
        /// AES-256.
        Aes256 = "aes-256",
    }
}

stored_enum! {
    /// What a journal entry's seals are bound to.
    StoredSealBinding <=> SealBinding {
        /// The fixed tag of older entries.
        FixedTag = "fixed-tag",
        /// The card and the entry.
        CardAndEntry = "card-and-entry",
    }
}

impl Default for StoredSealBinding {
    /// Entries written before the binding existed were sealed under the fixed tag.
    fn default() -> Self {
        StoredSealBinding::FixedTag
    }
}

stored_enum! {
    /// A journal entry's state.
    StoredJournalState <=> JournalState {
        /// Open.
        Open = "open",
        /// Done.
        Done = "done",
        /// Failed.
        Failed = "failed",
        /// Abandoned.
        Abandoned = "abandoned",
    }
}

stored_enum! {
    /// What an applied action did.
    StoredActionKind <=> ActionKind {
        /// Issue.
        Issue = "issue",
        /// Renew.
        Renew = "renew",
        /// Reissue.
        Reissue = "reissue",
        /// Suspend.
        Suspend = "suspend",
        /// Resume.
        Resume = "resume",
        /// Revoke.
        Revoke = "revoke",
        /// Retire.
        Retire = "retire",
        /// A new PUK.
        RotatePuk = "rotate-puk",
        /// The key history.
        KeyHistory = "key-history",
    }
}

stored_enum! {
    /// Why an action was planned.
    StoredReasonCode <=> ReasonCode {
        /// Not issued.
        NotIssued = "not-issued",
        /// Interrupted issuance.
        InterruptedIssuance = "interrupted-issuance",
        /// Nearing expiry.
        NearingExpiry = "nearing-expiry",
        /// Expired.
        Expired = "expired",
        /// Template changed.
        TemplateChanged = "template-changed",
        /// Superseded.
        Superseded = "superseded",
        /// Slot added.
        SlotAdded = "slot-added",
        /// Slot removed.
        SlotRemoved = "slot-removed",
        /// User disabled.
        UserDisabled = "user-disabled",
        /// User enabled.
        UserEnabled = "user-enabled",
        /// No longer entitled.
        NoLongerEntitled = "no-longer-entitled",
        /// User gone.
        UserGone = "user-gone",
        /// Template removed.
        TemplateRemoved = "template-removed",
        /// Card revoked.
        CardRevoked = "card-revoked",
        /// Holder PIN unknown.
        HolderPinUnknown = "holder-pin-unknown",
        /// Card suspect.
        CardSuspect = "card-suspect",
        /// Slot key replaced, certificate removed.
        KeyReplaced = "key-replaced",
        /// Card lost.
        CardLost = "card-lost",
        /// Card damaged.
        CardDamaged = "card-damaged",
        /// Card forgotten.
        CardForgotten = "card-forgotten",
        /// Card found.
        CardFound = "card-found",
        /// Replaces a lost card.
        ReplacesLost = "replaces-lost",
        /// Replaces a damaged card.
        ReplacesDamaged = "replaces-damaged",
        /// Temporary card for a forgotten one.
        TemporaryForForgotten = "temporary-for-forgotten",
        /// Temporary card ended.
        TemporaryEnded = "temporary-ended",
        /// PUK rotation.
        RotatePuk = "rotate-puk",
        /// Key history.
        KeyHistory = "key-history",
    }
}

stored_enum! {
    /// An applied action's outcome.
    StoredHistoryResult <=> HistoryResult {
        /// Done.
        Ok = "ok",
        /// Failed.
        Failed = "failed",
        /// Finished by recovery.
        Recovered = "recovered",
    }
}

/// A subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value")]
pub(super) enum StoredSan {
    /// UPN.
    #[serde(rename = "upn")]
    Upn(String),
    /// rfc822Name.
    #[serde(rename = "email")]
    Email(String),
    /// dNSName.
    #[serde(rename = "dns")]
    Dns(String),
    /// URI.
    #[serde(rename = "uri")]
    Uri(String),
}

impl From<&SanValue> for StoredSan {
    fn from(v: &SanValue) -> Self {
        match v {
            SanValue::Upn(s) => StoredSan::Upn(s.clone()),
            SanValue::Email(s) => StoredSan::Email(s.clone()),
            SanValue::Dns(s) => StoredSan::Dns(s.clone()),
            SanValue::Uri(s) => StoredSan::Uri(s.clone()),
        }
    }
}

impl From<StoredSan> for SanValue {
    fn from(v: StoredSan) -> Self {
        match v {
            StoredSan::Upn(s) => SanValue::Upn(s),
            StoredSan::Email(s) => SanValue::Email(s),
            StoredSan::Dns(s) => SanValue::Dns(s),
            StoredSan::Uri(s) => SanValue::Uri(s),
        }
    }
}

/// A status change asked of a CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op")]
pub(super) enum StoredCaOp {
    /// Revoke.
    #[serde(rename = "revoke")]
    Revoke {
        /// RFC 5280 reason name.
        reason: String,
    },
    /// Hold.
    #[serde(rename = "hold")]
    Hold,
    /// Unhold.
    #[serde(rename = "unhold")]
    Unhold,
}

/// A journal step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step")]
pub(super) enum StoredStep {
    /// A card created or taken from stock (field names as first written: `card_type`).
    #[serde(rename = "create-card")]
    CreateCard {
        /// Card id.
        card: String,
        /// Stock.
        stock: Option<String>,
        /// Type.
        card_type: StoredCardType,
    },
    /// A card personalised.
    #[serde(rename = "personalize", rename_all = "camelCase")]
    Personalize {
        /// Card id.
        card: String,
        /// Holder.
        user: String,
        /// Sealed PIN, hex (open entries only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sealed_pin: Option<String>,
        /// Sealed PUK, hex (open entries only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sealed_puk: Option<String>,
        /// The seals' binding (absent: the fixed tag).
        #[serde(default)]
        sealed_for: StoredSealBinding,
        /// Management key algorithm.
        management_key: StoredManagementKey,
    },
    /// A slot's key about to be replaced.
    #[serde(rename = "replace-key")]
    ReplaceKey {
        /// Card.
        card: String,
        /// Slot.
        slot: StoredSlot,
        /// Serials recorded for the slot before.
        replaced: Vec<String>,
    },
    /// A CSR sent to a CA.
    #[serde(rename = "enroll", rename_all = "camelCase")]
    Enroll {
        /// Idempotency key.
        request_id: String,
        /// Authority.
        ca: String,
        /// Card.
        card: String,
        /// uid.
        user: String,
        /// Template.
        template: String,
        /// Certificate entry name.
        name: String,
        /// Slot.
        slot: StoredSlot,
        /// CA profile.
        profile: String,
        /// Key algorithm.
        key_algorithm: StoredKeyAlgorithm,
        /// Subject.
        subject: String,
        /// SANs.
        sans: Vec<StoredSan>,
        /// Template revision.
        revision: String,
    },
    /// A certificate written to its card.
    #[serde(rename = "install-cert")]
    InstallCert {
        /// Serial.
        serial: String,
        /// Card.
        card: String,
        /// Slot.
        slot: StoredSlot,
    },
    /// A status change at a CA.
    #[serde(rename = "ca-status")]
    CaStatus {
        /// Serial.
        serial: String,
        /// Authority.
        ca: String,
        /// The change.
        #[serde(flatten)]
        op: StoredCaOp,
    },
    /// A card wiped.
    #[serde(rename = "wipe-card")]
    WipeCard {
        /// Card.
        card: String,
    },
}

impl From<&JournalStep> for StoredStep {
    fn from(step: &JournalStep) -> Self {
        match step.clone() {
            JournalStep::CreateCard {
                card,
                stock,
                card_type,
            } => StoredStep::CreateCard {
                card,
                stock,
                card_type: card_type.into(),
            },
            JournalStep::Personalize {
                card,
                user,
                sealed_pin,
                sealed_puk,
                sealed_for,
                management_key,
            } => StoredStep::Personalize {
                card,
                user,
                sealed_pin,
                sealed_puk,
                sealed_for: sealed_for.into(),
                management_key: management_key.into(),
            },
            JournalStep::ReplaceKey {
                card,
                slot,
                replaced,
            } => StoredStep::ReplaceKey {
                card,
                slot: slot.into(),
                replaced,
            },
            JournalStep::Enroll {
                request_id,
                ca,
                card,
                user,
                template,
                name,
                slot,
                profile,
                key_algorithm,
                subject,
                sans,
                revision,
            } => StoredStep::Enroll {
                request_id,
                ca,
                card,
                user,
                template,
                name,
                slot: slot.into(),
                profile,
                key_algorithm: key_algorithm.into(),
                subject,
                sans: sans.iter().map(StoredSan::from).collect(),
                revision,
            },
            JournalStep::InstallCert { serial, card, slot } => StoredStep::InstallCert {
                serial,
                card,
                slot: slot.into(),
            },
            JournalStep::CaStatus { serial, ca, op } => StoredStep::CaStatus {
                serial,
                ca,
                op: match op {
                    CaOp::Revoke { reason } => StoredCaOp::Revoke { reason },
                    CaOp::Hold => StoredCaOp::Hold,
                    CaOp::Unhold => StoredCaOp::Unhold,
                },
            },
            JournalStep::WipeCard { card } => StoredStep::WipeCard { card },
        }
    }
}

impl From<StoredStep> for JournalStep {
    fn from(step: StoredStep) -> Self {
        match step {
            StoredStep::CreateCard {
                card,
                stock,
                card_type,
            } => JournalStep::CreateCard {
                card,
                stock,
                card_type: card_type.into(),
            },
            StoredStep::Personalize {
                card,
                user,
                sealed_pin,
                sealed_puk,
                sealed_for,
                management_key,
            } => JournalStep::Personalize {
                card,
                user,
                sealed_pin,
                sealed_puk,
                sealed_for: sealed_for.into(),
                management_key: management_key.into(),
            },
            StoredStep::ReplaceKey {
                card,
                slot,
                replaced,
            } => JournalStep::ReplaceKey {
                card,
                slot: slot.into(),
                replaced,
            },
            StoredStep::Enroll {
                request_id,
                ca,
                card,
                user,
                template,
                name,
                slot,
                profile,
                key_algorithm,
                subject,
                sans,
                revision,
            } => JournalStep::Enroll {
                request_id,
                ca,
                card,
                user,
                template,
                name,
                slot: slot.into(),
                profile,
                key_algorithm: key_algorithm.into(),
                subject,
                sans: sans.into_iter().map(SanValue::from).collect(),
                revision,
            },
            StoredStep::InstallCert { serial, card, slot } => JournalStep::InstallCert {
                serial,
                card,
                slot: slot.into(),
            },
            StoredStep::CaStatus { serial, ca, op } => JournalStep::CaStatus {
                serial,
                ca,
                op: match op {
                    StoredCaOp::Revoke { reason } => CaOp::Revoke { reason },
                    StoredCaOp::Hold => CaOp::Hold,
                    StoredCaOp::Unhold => CaOp::Unhold,
                },
            },
            StoredStep::WipeCard { card } => JournalStep::WipeCard { card },
        }
    }
}

/// A journal entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StoredJournalEntry {
    id: u64,
    action_id: String,
    step: StoredStep,
    state: StoredJournalState,
    #[serde(with = "time::serde::rfc3339")]
    opened_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option", default)]
    closed_at: Option<OffsetDateTime>,
    #[serde(default)]
    message: Option<String>,
}

impl From<&JournalEntry> for StoredJournalEntry {
    fn from(e: &JournalEntry) -> Self {
        StoredJournalEntry {
            id: e.id,
            action_id: e.action_id.clone(),
            step: StoredStep::from(&e.step),
            state: e.state.into(),
            opened_at: e.opened_at,
            closed_at: e.closed_at,
            message: e.message.clone(),
        }
    }
}

impl From<StoredJournalEntry> for JournalEntry {
    fn from(e: StoredJournalEntry) -> Self {
        JournalEntry {
            id: e.id,
            action_id: e.action_id,
            step: e.step.into(),
            state: e.state.into(),
            opened_at: e.opened_at,
            closed_at: e.closed_at,
            message: e.message,
        }
    }
}

/// Why an action was planned, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct StoredReason {
    code: StoredReasonCode,
    message: String,
}

/// A history entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StoredHistoryEntry {
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
    actor: String,
    kind: StoredActionKind,
    user: String,
    template: Option<String>,
    card: Option<String>,
    slots: Vec<StoredSlot>,
    serials: Vec<String>,
    reason: StoredReason,
    result: StoredHistoryResult,
    #[serde(default)]
    message: Option<String>,
}

impl From<&HistoryEntry> for StoredHistoryEntry {
    fn from(e: &HistoryEntry) -> Self {
        StoredHistoryEntry {
            at: e.at,
            actor: e.actor.clone(),
            kind: e.kind.into(),
            user: e.user.clone(),
            template: e.template.clone(),
            card: e.card.clone(),
            slots: e.slots.iter().copied().map(StoredSlot::from).collect(),
            serials: e.serials.clone(),
            reason: StoredReason {
                code: e.reason.code.into(),
                message: e.reason.message.clone(),
            },
            result: e.result.into(),
            message: e.message.clone(),
        }
    }
}

impl From<StoredHistoryEntry> for HistoryEntry {
    fn from(e: StoredHistoryEntry) -> Self {
        HistoryEntry {
            at: e.at,
            actor: e.actor,
            kind: e.kind.into(),
            user: e.user,
            template: e.template,
            card: e.card,
            slots: e.slots.into_iter().map(Slot::from).collect(),
            serials: e.serials,
            reason: Reason {
                code: e.reason.code.into(),
                message: e.reason.message,
            },
            result: e.result.into(),
            message: e.message,
        }
    }
}
