//! How an action fails: [`ApplyError`], and which failures are permanent.

use std::path::PathBuf;

use time::OffsetDateTime;

use super::CardAccessError;
use crate::ca::CaError;
use crate::card::piv::PivError;
use crate::card::pkcs11::P11Error;
use crate::inventory::{CardFacts, HolderPin, HolderPinCause, Suspicion};
use crate::secrets::SecretError;
use crate::store::StoreError;
/// An action failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log could not be written: the action does not run (before it starts), or
    /// is not reported done (when it ended).
    #[error("the audit log cannot be written: {0}")]
    Audit(#[from] crate::audit::AuditError),
    /// The card could not be reached.
    #[error(transparent)]
    CardAccess(#[from] CardAccessError),
    /// The key archive could not be used (no archive key, a record that does not open).
    #[error("the key archive: {0}")]
    Archive(#[from] crate::archive::ArchiveError),
    /// The card refused or failed a command.
    #[error("card {card}: {source}")]
    Card {
        /// Card id.
        card: String,
        /// What the card said.
        #[source]
        source: PivError,
    },
    /// A PKCS#11 token refused or failed an operation.
    #[error("card {card}: {source}")]
    Token {
        /// Card id.
        card: String,
        /// What the token said.
        #[source]
        source: P11Error,
    },
    /// A PKCS#11 token refused the user PIN Keyfleet set; Keyfleet counts these failures per
    /// card (reset by the next good login) so an operator sees a PIN going bad.
    #[error(
        "card {card}: the user PIN Keyfleet set was refused ({failures} failed login(s) counted by Keyfleet; changed by the holder?): {source}"
    )]
    TokenPin {
        /// Card id.
        card: String,
        /// Failed logins in a row, as counted by Keyfleet.
        failures: u32,
        /// What the token said.
        #[source]
        source: P11Error,
    },
    /// The stock's SO PIN could not be read.
    #[error("card {card}: cannot read the SO PIN of stock {stock}: {message}")]
    SoPin {
        /// Card id.
        card: String,
        /// The stock.
        stock: String,
        /// Why.
        message: String,
    },
    /// The CA refused or failed.
    #[error("CA {ca}: {source}")]
    Ca {
        /// Authority name.
        ca: String,
        /// What failed.
        #[source]
        source: CaError,
    },
    /// The policy names an authority Keyfleet has no connector for (yet).
    #[error("CA {0}: {1}")]
    CaUnavailable(String, String),
    /// A sealed secret could not be opened or made.
    #[error("secret {name}: {source}")]
    Secret {
        /// Secret name.
        name: String,
        /// Why.
        #[source]
        source: SecretError,
    },
    /// An open journal entry no longer holds the sealed secret its recovery needs (a store
    /// edited by hand: closed entries drop them, open ones keep them).
    #[error("journal entry {entry} holds no sealed PIN or PUK to finish the personalisation")]
    JournalSecretGone {
        /// The journal entry id.
        entry: u64,
    },
    /// The PIN mailer could not be written.
    #[error("PIN mailer {path}: {source}")]
    PinMailer {
        /// File.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The action no longer matches the state it was planned from.
    #[error("stale plan: {0}")]
    Stale(String),
    /// The holder changed the card's PIN: unattended key generation needs it.
    #[error(
        "card {0}: the PIN Keyfleet set no longer verifies (changed by the holder?); this action needs the holder present"
    )]
    PinUnknown(String),
    /// The PIN Keyfleet holds for the card cannot be used (refused once, too few tries left
    /// to risk it, or none stored): the action waits for the holder; nothing was made.
    #[error(
        "card {card}: the PIN Keyfleet holds cannot be used ({cause}{}); waiting for the holder",
        tries_left.map(|n| format!(", {n} tries left")).unwrap_or_default()
    )]
    HolderPin {
        /// Card id.
        card: String,
        /// Why.
        cause: HolderPinCause,
        /// Tries the card said were left.
        tries_left: Option<u8>,
    },
    /// The PIN the holder typed (`keyfleet apply --holder-pin`) was refused by the card, or
    /// not tried because a wrong try would leave fewer than 2: the action fails, the facts
    /// stay as they were, nothing was made.
    #[error(
        "card {card}: {}{}",
        if *tried { "the card refused the PIN the holder typed" } else { "the PIN the holder typed was not tried: a wrong try would leave fewer than 2" },
        tries_left.map(|n| format!(" ({n} tries left)")).unwrap_or_default()
    )]
    HolderPinRefused {
        /// Card id.
        card: String,
        /// Whether it was tried (the card refused it) or not (too few tries left).
        tried: bool,
        /// Tries the card said were left.
        tries_left: Option<u8>,
    },
    /// The card shows the identity of a card Keyfleet personalised but cannot prove the
    /// management key Keyfleet set on it (reset or cloned): nothing is sent to it.
    #[error("card {card} is suspect: it cannot prove the management key Keyfleet set ({reason})")]
    Suspect {
        /// Card id.
        card: String,
        /// What the card did.
        reason: String,
    },
    /// The management key Keyfleet stored for a card cannot be read (never replaced by the
    /// factory key).
    #[error("card {card}: cannot read the stored management key: {message}")]
    ManagementKey {
        /// Card id.
        card: String,
        /// Why.
        message: String,
    },
    /// Building the CSR failed.
    #[error("card {card}: cannot build the CSR: {message}")]
    Csr {
        /// Card id.
        card: String,
        /// Why.
        message: String,
    },
    /// The card kind cannot do what was asked (e.g. retired key slots on a PKCS#11 token), or
    /// the request does not fit the card (more retired keys than slots, a certificate that is
    /// not of its key).
    #[error("{0}")]
    Unsupported(String),
}

impl std::fmt::Display for HolderPinCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HolderPinCause::Refused => "the card refused it: changed by the holder?",
            HolderPinCause::TooFewTries => "not tried: a wrong try would leave fewer than 2",
            HolderPinCause::NotStored => "none stored",
            HolderPinCause::HolderReset => {
                "the holder set a new one with a PUK released for an offline unblock"
            }
            HolderPinCause::HolderChanged => "the holder changed it on their workstation",
        })
    }
}

impl ApplyError {
    /// The card fact this error teaches Keyfleet, if any: the holder's PIN is unknown, or the
    /// card is suspect. The action then waits instead of failing.
    pub(crate) fn card_fact(&self, now: OffsetDateTime) -> Option<(String, CardFacts)> {
        let holder = |card: &str, cause, tries_left| {
            let facts = CardFacts {
                holder_pin: Some(HolderPin {
                    since: now,
                    cause,
                    tries_left,
                }),
                ..CardFacts::default()
            };
            Some((card.to_string(), facts))
        };
        match self {
            ApplyError::HolderPin {
                card,
                cause,
                tries_left,
            } => holder(card, *cause, *tries_left),
            ApplyError::PinUnknown(card) => holder(card, HolderPinCause::Refused, None),
            ApplyError::TokenPin { card, .. } => holder(card, HolderPinCause::Refused, None),
            ApplyError::Suspect { card, reason } => Some((
                card.clone(),
                CardFacts {
                    holder_pin: None,
                    suspect: Some(Suspicion {
                        since: now,
                        reason: reason.clone(),
                    }),
                    ..CardFacts::default()
                },
            )),
            _ => None,
        }
    }

    /// Whether retrying the same action cannot succeed until the policy or the world changes:
    /// the CA refused the request itself (bad CSR, unknown profile, name it cannot encode,
    /// unsupported operation), the template does not fit the card, the CA has no connector,
    /// or the holder must be present. Unreachable CAs and cards, storage and I/O failures are
    /// transient.
    pub fn is_permanent(&self) -> bool {
        match self {
            ApplyError::Ca { source, .. } => matches!(
                source,
                CaError::CsrDecode(_)
                    | CaError::CsrAlgorithm(_)
                    | CaError::CsrSignature
                    | CaError::UnknownProfile(_)
                    | CaError::InvalidName(_)
                    | CaError::NoValidity { .. }
                    | CaError::RequestIdReused(_)
                    | CaError::InvalidTransition { .. }
                    | CaError::Unsupported(_)
                    | CaError::KeyDecrypt { .. }
                    | CaError::Rejected(_)
            ),
            ApplyError::CaUnavailable(..)
            | ApplyError::Csr { .. }
            | ApplyError::Unsupported(_)
            | ApplyError::PinUnknown(_)
            | ApplyError::HolderPin { .. }
            | ApplyError::HolderPinRefused { .. }
            | ApplyError::Suspect { .. }
            | ApplyError::ManagementKey { .. }
            | ApplyError::TokenPin { .. }
            | ApplyError::SoPin { .. }
            | ApplyError::JournalSecretGone { .. } => true,
            ApplyError::Store(_)
            | ApplyError::Audit(_)
            | ApplyError::Archive(_)
            | ApplyError::Token { .. }
            | ApplyError::CardAccess(_)
            | ApplyError::Card { .. }
            | ApplyError::Secret { .. }
            | ApplyError::PinMailer { .. }
            | ApplyError::Stale(_) => false,
        }
    }
}
