//! The actual state Keyfleet keeps: every card it knows and every certificate it ever had
//! signed.
//!
//! These are plain values. The `store` module persists them; the planner reads them. Nothing
//! here does I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::names::SanValue;
use crate::policy::model::{CardType, KeyAlgorithm, Slot};

pub mod incident;

pub use incident::{Incident, IncidentEvent, IncidentEventKind};

/// Where a card is in its life. Incidents (see [`incident`]) add `lost` and `damaged`:
///
/// ```text
///   blank ──issue──► active ◄──resume── suspended
///     ▲                │ └──suspend──────►┘
///     │             revoke ── lost ──────────► lost (refused if seen; only retire
///     │                ▼    └ damaged ─► damaged     --found-lost wipes it to blank)
///     └──retire (wipe)─ revoked                 └─ retire (wipe if it answers) ─► retired
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CardStatus {
    /// In stock, bound to nobody, holding no credential.
    Blank,
    /// Bound to a user, certificates valid.
    Active,
    /// Bound, certificates on hold at the CA (account disabled).
    Suspended,
    /// Certificates revoked; the card waits to be wiped when next seen.
    Revoked,
    /// Reported lost: its certificates are revoked; it is never used again.
    Lost,
    /// Reported damaged: its certificates are revoked; it is wiped, if it still answers,
    /// and retired.
    Damaged,
    /// Wiped and out of service.
    Retired,
}

/// One card (virtual, PIV or PKCS#11 token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CardRecord {
    /// Stable id: for PIV and virtual cards the CHUID GUID in hex, prefixed by kind.
    pub id: String,
    /// The kind of card.
    #[serde(rename = "type")]
    pub card_type: CardType,
    /// The stock it came from.
    #[serde(default)]
    pub stock: Option<String>,
    /// The uid it is bound to.
    #[serde(default)]
    pub user: Option<String>,
    /// The template its credential follows.
    #[serde(default)]
    pub template: Option<String>,
    /// Life-cycle state.
    pub status: CardStatus,
    /// When Keyfleet first recorded it.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When its status last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// A temporary card, issued while the holder's own card is forgotten
    /// (`CardTemplate.spec.temporary`): it is revoked and returns to stock when that ends.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub temporary: bool,
}

impl CardRecord {
    /// True for the states in which the card carries a live credential.
    pub fn holds_credential(&self) -> bool {
        matches!(self.status, CardStatus::Active | CardStatus::Suspended)
    }
}

/// A certificate's state as Keyfleet records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertStatus {
    /// Valid and in use.
    Active,
    /// On hold at the CA.
    Suspended,
    /// Revoked at the CA.
    Revoked,
    /// Replaced by a newer certificate (renewal, reissue) and revoked as superseded.
    Superseded,
}

/// One certificate Keyfleet had signed. Records are never deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertRecord {
    /// Upper-case hex, no separators (as `openssl x509 -serial` prints it).
    pub serial: String,
    /// The uid it was issued to.
    pub user: String,
    /// The card holding its key.
    pub card: String,
    /// The template it was issued under.
    pub template: String,
    /// The template's certificate entry name.
    pub name: String,
    /// The card slot.
    pub slot: Slot,
    /// The issuing authority (policy name).
    pub ca: String,
    /// The CA profile.
    pub profile: String,
    /// Key algorithm.
    pub key_algorithm: KeyAlgorithm,
    /// Subject DN as issued.
    pub subject: String,
    /// SANs as issued.
    #[serde(default)]
    pub sans: Vec<SanValue>,
    /// Validity start.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// Validity end.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// The template revision it was issued under (see `desired::revision`).
    pub revision: String,
    /// Recorded state.
    pub status: CertStatus,
    /// False while the certificate is signed but not yet written to its card (an interrupted
    /// issuance that the next pass completes).
    pub installed: bool,
    /// The idempotency key it was enrolled under.
    pub request_id: String,
    /// The id of the journal entry its enrolment was made under. Journal ids only grow, so
    /// this orders a slot's certificates by when Keyfleet asked for them, which neither the
    /// CA's serials (random) nor `notBefore` (whole seconds, maybe backdated) can. 0 for
    /// records written before Keyfleet kept it; they rank by `notBefore` below the rest.
    #[serde(default)]
    pub enrolment: u64,
    /// When the status last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// The leaf certificate, PEM.
    pub pem: String,
    /// SHA-256 of its public key (SubjectPublicKeyInfo DER), hex: how an archived key is
    /// matched with its certificate. Absent on records written before Keyfleet kept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

impl CertRecord {
    /// The certificate's DER, from its PEM (None: the PEM does not decode).
    pub fn der(&self) -> Option<Vec<u8>> {
        der::pem::decode_vec(self.pem.as_bytes())
            .ok()
            .map(|(_, der)| der)
    }

    /// The order in which a slot's certificates were asked for: by their enrolment's journal
    /// entry (records from before Keyfleet kept it have 0 and come first), then `notBefore`,
    /// then serial. Neither of the last two tells a renewal from its predecessor on its own:
    /// serials are random and `notBefore` has whole seconds.
    pub fn enrolment_order(&self) -> (u64, OffsetDateTime, &str) {
        (self.enrolment, self.not_before, self.serial.as_str())
    }

    /// True while the certificate is one the holder may use (or will again after a hold).
    pub fn is_live(&self) -> bool {
        matches!(self.status, CertStatus::Active | CertStatus::Suspended)
    }
}

/// What Keyfleet learned about a card by using it, beside its life-cycle state: facts that
/// hold its actions until a person acts. Empty for almost every card.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CardFacts {
    /// The PIN Keyfleet holds for the card cannot be used: actions that need it wait for the
    /// holder, and Keyfleet never tries it again (a refused PIN costs the holder a try).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_pin: Option<HolderPin>,
    /// The card showed the identity of a card Keyfleet personalised but could not prove the
    /// management key Keyfleet set on it (reset, or a clone): nothing is sent to it or
    /// written on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspect: Option<Suspicion>,
    /// Slots whose key was replaced while their certificate could not follow: the old
    /// certificates listed (serials) were removed from the card, since they no longer match
    /// its key. The slot is issued again; the fact goes when its new certificate is written.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub emptied_slots: BTreeMap<Slot, Vec<String>>,
    /// The incident an operator reported that is in force (see [`incident`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<Incident>,
    /// Every incident event of the card, oldest first (kept when the card is wiped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incidents: Vec<IncidentEvent>,
    /// The card's current PUK was released to an operator for an offline unblock: it is
    /// never released again, and a new one is set at the card's next contact (`rotate-puk`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub puk_released: Option<PukRelease>,
    /// The certificates (serials, newest first) whose keys Keyfleet wrote into the card's
    /// retired key-management slots (82, 83, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_history: Vec<String>,
    /// Certificates (serials) whose keys were recovered onto this card (`keys recover
    /// --to-card`): kept in its retired slots beside the `keyHistory` newest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recovered_keys: Vec<String>,
}

impl CardFacts {
    /// True when no fact is recorded.
    pub fn is_empty(&self) -> bool {
        self.holder_pin.is_none()
            && self.suspect.is_none()
            && self.emptied_slots.is_empty()
            && self.incident.is_none()
            && self.incidents.is_empty()
            && self.puk_released.is_none()
            && self.key_history.is_empty()
            && self.recovered_keys.is_empty()
    }

    /// The facts left once the card is wiped: its incident history only.
    pub fn after_wipe(&self) -> CardFacts {
        CardFacts {
            incidents: self.incidents.clone(),
            ..CardFacts::default()
        }
    }
}

/// A card's PUK released for an offline unblock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PukRelease {
    /// To whom.
    pub by: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// Why the PIN Keyfleet holds for a card cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HolderPinCause {
    /// The card refused it (the holder changed the PIN).
    Refused,
    /// Not tried: a wrong try would have left the holder fewer than 2 tries (or the PIN is
    /// blocked).
    TooFewTries,
    /// Keyfleet holds no PIN for the card.
    NotStored,
    /// The holder reset the PIN with a PUK released for an offline unblock.
    HolderReset,
    /// The holder changed the PIN on their workstation (`keyfleet self-service --change-pin`).
    HolderChanged,
}

/// The PIN Keyfleet holds for a card cannot be used, since when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HolderPin {
    /// When Keyfleet learned it.
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// Why.
    pub cause: HolderPinCause,
    /// The tries the card said were left, when it said.
    #[serde(default)]
    pub tries_left: Option<u8>,
}

/// A card that could not prove the management key Keyfleet set on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Suspicion {
    /// When Keyfleet found it out.
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// What the card did.
    pub reason: String,
}

/// The whole recorded inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Cards by id.
    pub cards: BTreeMap<String, CardRecord>,
    /// Certificates by serial.
    pub certs: BTreeMap<String, CertRecord>,
    /// Facts learned about cards, by card id (only cards with a fact are listed).
    #[serde(default)]
    pub facts: BTreeMap<String, CardFacts>,
    /// Key ids (see [`CertRecord::key_id`]) of the keys the archive holds.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub archived: std::collections::BTreeSet<String>,
}

impl Inventory {
    /// Which version of the inventory this is, for a saved plan (`crate::saved_plan`):
    /// `sha256:` and the hex SHA-256 of its JSON form (cards, certificates and card facts,
    /// each sorted by key). Every card, certificate or fact written that changes a record
    /// changes it, whichever process wrote it: unlike [`crate::store::Store::inventory_generation`],
    /// which counts the writes of one open store only, it can be compared across runs.
    pub fn generation(&self) -> String {
        use sha2::{Digest, Sha256};
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("sha256:{}", hex::encode(Sha256::digest(&json)))
    }

    /// Whether the card is suspect (see [`CardFacts::suspect`]).
    pub fn is_suspect(&self, card: &str) -> bool {
        self.facts.get(card).is_some_and(|f| f.suspect.is_some())
    }

    /// The status shown to people and scripts: `suspect` for a suspect card, else its
    /// life-cycle state.
    pub fn shown_status(&self, card: &CardRecord) -> &'static str {
        shown_status(card, self.facts.get(&card.id))
    }

    /// The incident in force on a card, as recorded (`None` for most cards).
    pub fn incident(&self, card: &str) -> Option<&Incident> {
        self.facts.get(card).and_then(|f| f.incident.as_ref())
    }

    /// The live certificates of a card, by slot (the newest when several).
    pub fn live_certs_of(&self, card: &str) -> BTreeMap<Slot, &CertRecord> {
        let mut out: BTreeMap<Slot, &CertRecord> = BTreeMap::new();
        for c in self
            .certs
            .values()
            .filter(|c| c.card == card && c.is_live())
        {
            match out.get(&c.slot) {
                Some(prev) if prev.enrolment_order() >= c.enrolment_order() => {}
                _ => {
                    out.insert(c.slot, c);
                }
            }
        }
        out
    }
}

/// The status shown to people and scripts (`inventory --format json`, the API): `suspect`;
/// else the recorded incident (`lost`, `damaged`, `forgotten`); else `temporary` for a
/// temporary card in use; else the life-cycle state.
pub fn shown_status(card: &CardRecord, facts: Option<&CardFacts>) -> &'static str {
    if facts.is_some_and(|f| f.suspect.is_some()) {
        return "suspect";
    }
    let incident = facts
        .and_then(|f| f.incident.as_ref())
        .filter(|_| card.holds_credential());
    match (card.status, incident) {
        (CardStatus::Lost, _) => "lost",
        (CardStatus::Damaged, _) => "damaged",
        (_, Some(i)) => i.kind.as_str(),
        (CardStatus::Active | CardStatus::Suspended, None) if card.temporary => "temporary",
        (CardStatus::Blank, None) => "blank",
        (CardStatus::Active, None) => "active",
        (CardStatus::Suspended, None) => "suspended",
        (CardStatus::Revoked, None) => "revoked",
        (CardStatus::Retired, None) => "retired",
    }
}
