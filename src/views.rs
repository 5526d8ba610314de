//! What operators read, as JSON: the inventory's cards and certificates as
//! `keyfleet inventory --format json` prints them and the operator API serves them (one
//! definition, with its JSON Schema for the OpenAPI document).

use schemars::JsonSchema;
use serde::Serialize;
use time::OffsetDateTime;

use crate::inventory::{
    CardFacts, CardRecord, CertRecord, CertStatus, Incident, IncidentEvent, Inventory,
};
use crate::policy::model::CardType;

/// `t` in RFC 3339 (as every JSON view prints times).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A certificate's status as printed: `expired` when active (or suspended) past notAfter.
pub fn display_status(cert: &CertRecord, now: OffsetDateTime) -> &'static str {
    match cert.status {
        CertStatus::Active | CertStatus::Suspended if cert.not_after <= now => "expired",
        CertStatus::Active => "active",
        CertStatus::Suspended => "suspended",
        CertStatus::Revoked => "revoked",
        CertStatus::Superseded => "superseded",
    }
}

/// The RFC 7512 URI of a certificate's private key when its card is a PKCS#11 token (the
/// token is labelled with its holder's uid at issuance).
pub fn key_uri(cert: &CertRecord) -> Option<String> {
    let serial = crate::card::pkcs11::serial_of(&cert.card)?;
    Some(
        crate::apply::tokens::slot_uri(
            serial,
            &cert.user,
            cert.slot,
            crate::card::pkcs11::uri::ObjectType::Private,
        )
        .to_string(),
    )
}

/// A card.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CardView {
    /// Its id.
    pub id: String,
    /// Its type.
    #[serde(rename = "type")]
    pub card_type: CardType,
    /// Its holder.
    pub user: Option<String>,
    /// The template it was issued under.
    pub template: Option<String>,
    /// The stock it came from.
    pub stock: Option<String>,
    /// `blank`, `active`, `suspended`, `revoked`, `retired`, `lost`, `damaged`,
    /// `forgotten`, `temporary` or `suspect`.
    pub status: String,
    /// The incident in force (`{"kind", "reportedBy", "at", "comment"}`), or null.
    pub incident: Option<Incident>,
    /// When Keyfleet first saw it (RFC 3339).
    pub created_at: String,
    /// When its record last changed (RFC 3339).
    pub updated_at: String,
}

impl CardView {
    /// The view of a card record with what Keyfleet learned about it.
    pub fn of(c: &CardRecord, facts: Option<&CardFacts>) -> CardView {
        CardView {
            id: c.id.clone(),
            card_type: c.card_type,
            user: c.user.clone(),
            template: c.template.clone(),
            stock: c.stock.clone(),
            status: crate::inventory::shown_status(c, facts).to_string(),
            incident: facts.and_then(|f| f.incident.clone()),
            created_at: rfc3339(c.created_at),
            updated_at: rfc3339(c.updated_at),
        }
    }
}

/// A certificate.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertView {
    /// Serial (hex, as the CA printed it).
    pub serial: String,
    /// Holder.
    pub user: String,
    /// The card it is on.
    pub card: String,
    /// Template.
    pub template: String,
    /// The template's certificate name.
    pub name: String,
    /// PIV slot (hex).
    pub slot: String,
    /// The CA.
    pub ca: String,
    /// The CA profile.
    pub profile: String,
    /// `active`, `suspended`, `revoked`, `superseded`, or `expired`.
    pub status: String,
    /// Subject DN.
    pub subject: String,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
    /// The template revision it was issued under.
    pub revision: String,
    /// Whether it is written on the card.
    pub installed: bool,
    /// RFC 7512 URI of the private key, for certificates on PKCS#11 tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_uri: Option<String>,
    /// The certificate (PEM).
    pub pem: String,
}

impl CertView {
    /// The view of a certificate record at `now`.
    pub fn of(c: &CertRecord, now: OffsetDateTime) -> CertView {
        CertView {
            serial: c.serial.clone(),
            user: c.user.clone(),
            card: c.card.clone(),
            template: c.template.clone(),
            name: c.name.clone(),
            slot: c.slot.hex().to_string(),
            ca: c.ca.clone(),
            profile: c.profile.clone(),
            status: display_status(c, now).to_string(),
            subject: c.subject.clone(),
            not_before: rfc3339(c.not_before),
            not_after: rfc3339(c.not_after),
            revision: c.revision.clone(),
            installed: c.installed,
            key_uri: key_uri(c),
            pem: c.pem.clone(),
        }
    }
}

/// The inventory: `{"cards": [...], "certificates": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct InventoryView {
    /// Every card.
    pub cards: Vec<CardView>,
    /// Every certificate.
    pub certificates: Vec<CertView>,
}

impl InventoryView {
    /// The view of an inventory at `now`.
    pub fn of(inv: &Inventory, now: OffsetDateTime) -> InventoryView {
        InventoryView {
            cards: inv
                .cards
                .values()
                .map(|c| CardView::of(c, inv.facts.get(&c.id)))
                .collect(),
            certificates: inv.certs.values().map(|c| CertView::of(c, now)).collect(),
        }
    }
}

/// One card with its certificates.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct CardDetail {
    /// The card.
    pub card: CardView,
    /// Its certificates, every one Keyfleet had signed for it.
    pub certificates: Vec<CertView>,
    /// The incident in force, or null.
    pub incident: Option<Incident>,
    /// Its incident history, oldest first.
    pub incidents: Vec<IncidentEvent>,
    /// Its PUK was released for an offline unblock and is rotated at its next contact.
    #[serde(rename = "pukReleased")]
    pub puk_released: bool,
    /// The certificates (serials, newest first) whose keys its retired key slots hold.
    #[serde(rename = "keyHistory")]
    pub key_history: Vec<String>,
}

impl CardDetail {
    /// The detail of a card at `now`.
    pub fn of(
        card: &CardRecord,
        facts: &CardFacts,
        certs: &[CertRecord],
        now: OffsetDateTime,
    ) -> CardDetail {
        CardDetail {
            card: CardView::of(card, Some(facts)),
            certificates: certs.iter().map(|c| CertView::of(c, now)).collect(),
            incident: facts.incident.clone(),
            incidents: facts.incidents.clone(),
            puk_released: facts.puk_released.is_some(),
            key_history: facts.key_history.clone(),
        }
    }
}

/// One user's cards and certificates.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct UserDetail {
    /// The uid.
    pub uid: String,
    /// Their cards.
    pub cards: Vec<CardView>,
    /// Their certificates.
    pub certificates: Vec<CertView>,
}
