//! Planning one credential against the inventory: issue, renew, reissue, suspend, resume,
//! revoke, retire, and the revocation of superseded certificates.

use std::collections::{BTreeMap, BTreeSet};

use time::OffsetDateTime;

use super::index::Index;
use super::{Action, ActionKind, Presence, Reason, ReasonCode};
use crate::desired::{Desired, DesiredCredential, StockInfo};
use crate::inventory::{CardRecord, CardStatus, CertRecord, CertStatus, Inventory};
use crate::policy::model::{IncidentKind, OnUserDisabled, Slot};

pub(super) struct Ctx<'a> {
    pub(super) desired: &'a Desired,
    pub(super) inventory: &'a Inventory,
    pub(super) presence: &'a Presence,
    pub(super) index: &'a Index<'a>,
    pub(super) now: OffsetDateTime,
    pub(super) actions: Vec<Action>,
    /// Cards handed to a credential by this plan already.
    pub(super) used_cards: BTreeSet<String>,
    /// New virtual cards this plan creates, per stock.
    pub(super) new_cards: BTreeMap<String, usize>,
    /// Credentials to issue (after the held ones are planned: issuance takes cards from
    /// shared stock, in credential order), each with its reason.
    pub(super) issues: Vec<(&'a DesiredCredential, Reason)>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(
        desired: &'a Desired,
        inventory: &'a Inventory,
        presence: &'a Presence,
        index: &'a Index<'a>,
        now: OffsetDateTime,
    ) -> Self {
        Ctx {
            desired,
            inventory,
            presence,
            index,
            now,
            actions: Vec::new(),
            used_cards: BTreeSet::new(),
            new_cards: BTreeMap::new(),
            issues: Vec::new(),
        }
    }

    pub(super) fn present(&self, card: &str) -> bool {
        self.presence.cards.contains(card)
    }

    /// Plans the credential of a user who holds no card under it: an issue, queued with its
    /// reason (a replacement after a lost or damaged card, or a first issue).
    pub(super) fn queue_issue(&mut self, cred: &'a DesiredCredential) {
        if cred.user_disabled {
            return;
        }
        let reason = self.replacement_reason(cred).unwrap_or_else(|| Reason {
            code: ReasonCode::NotIssued,
            message: format!(
                "{} is entitled to {:?} and holds no credential under it",
                cred.user, cred.template
            ),
        });
        self.issues.push((cred, reason));
    }

    pub(super) fn plan_issue(&mut self, cred: &DesiredCredential, reason: Reason) {
        if cred.user_disabled {
            return;
        }
        let slots: Vec<Slot> = cred.certificates.keys().copied().collect();
        let (card, stock, waiting, note) = self.choose_card(cred);
        let Reason { code, mut message } = reason;
        if let Some(note) = note {
            message.push_str("; ");
            message.push_str(&note);
        }
        self.actions.push(Action {
            kind: ActionKind::Issue,
            user: cred.user.clone(),
            template: Some(cred.template.clone()),
            card,
            stock,
            slot: None,
            slots,
            serials: Vec::new(),
            reason: Reason { code, message },
            waiting_for_card: waiting,
            waiting_for_holder: false,
            card_suspect: false,
        });
    }

    /// Picks the card for a new credential: (card id, stock, waiting, note).
    pub(super) fn choose_card(
        &mut self,
        cred: &DesiredCredential,
    ) -> (Option<String>, Option<String>, bool, Option<String>) {
        if let Some(bound) = &cred.bound_card {
            let usable = self
                .inventory
                .cards
                .get(bound)
                .is_none_or(|c| c.status == CardStatus::Blank);
            if !usable || self.used_cards.contains(bound) {
                return (
                    Some(bound.clone()),
                    None,
                    true,
                    Some(format!("bound card {bound} is not blank")),
                );
            }
            self.used_cards.insert(bound.clone());
            let waiting = !self.present(bound);
            return (Some(bound.clone()), None, waiting, None);
        }
        let Some(stock) = cred
            .stock
            .as_deref()
            .and_then(|s| self.desired.stocks.iter().find(|st| st.name == s))
        else {
            return (
                None,
                None,
                true,
                Some(format!(
                    "no card stock with autoBind holds {:?} cards: bind a card with a CardBinding",
                    cred.card_type
                )),
            );
        };
        // A blank card of the stock, known to the inventory, that is present.
        let blank = self
            .index
            .blanks_by_stock
            .get(stock.name.as_str())
            .into_iter()
            .flatten()
            .find(|c| !self.used_cards.contains(&c.id) && self.present(&c.id))
            .map(|c| c.id.clone());
        if let Some(id) = blank {
            self.used_cards.insert(id.clone());
            return (Some(id), Some(stock.name.clone()), false, None);
        }
        if stock.is_virtual {
            return self.new_virtual(stock);
        }
        let fresh = self
            .presence
            .blanks
            .iter()
            .find(|b| b.stock == stock.name && !self.used_cards.contains(&b.id))
            .map(|b| b.id.clone());
        match fresh {
            Some(id) => {
                self.used_cards.insert(id.clone());
                (Some(id), Some(stock.name.clone()), false, None)
            }
            None => (
                None,
                Some(stock.name.clone()),
                true,
                Some(format!(
                    "waiting for a blank card of stock {:?}",
                    stock.name
                )),
            ),
        }
    }

    pub(super) fn new_virtual(
        &mut self,
        stock: &StockInfo,
    ) -> (Option<String>, Option<String>, bool, Option<String>) {
        let existing = self
            .index
            .cards_per_stock
            .get(stock.name.as_str())
            .copied()
            .unwrap_or(0);
        let planned = self.new_cards.entry(stock.name.clone()).or_default();
        if let Some(max) = stock.virtual_max
            && existing + *planned >= max as usize
        {
            return (
                None,
                Some(stock.name.clone()),
                true,
                Some(format!(
                    "virtual stock {:?} is exhausted ({max} cards)",
                    stock.name
                )),
            );
        }
        *planned += 1;
        (None, Some(stock.name.clone()), false, None)
    }

    pub(super) fn plan_held(&mut self, cred: &DesiredCredential, card: &CardRecord) {
        if cred.user_disabled {
            // An issuance a failure interrupted is finished first unless everything is
            // revoked: its certificate is signed for the key now in the slot (whose old
            // certificate may already be gone from the card), and installing it supersedes
            // the old one. Nothing new is issued to a disabled account.
            let installing = if cred.on_user_disabled == OnUserDisabled::Revoke {
                Vec::new()
            } else {
                self.finish_interrupted(cred, card)
            };
            match cred.on_user_disabled {
                OnUserDisabled::Suspend => {
                    // From the certificates, not only the card: a hold the CA refused (or an
                    // unhold that went half through) leaves some active on a suspended card.
                    // Not those the installations supersede (they are revoked).
                    let superseded = self.index.older_in_slots(&card.id, &installing);
                    let mut serials = self.index.live_serials(&card.id, Some(CertStatus::Active));
                    serials.retain(|s| !superseded.contains(&s.as_str()));
                    if card.status != CardStatus::Active && serials.is_empty() {
                        return;
                    }
                    self.push_card_action(
                        ActionKind::Suspend,
                        card,
                        serials,
                        Reason {
                            code: ReasonCode::UserDisabled,
                            message: format!("account {} is disabled", cred.user),
                        },
                    );
                }
                OnUserDisabled::Revoke => self.plan_revoke(
                    card,
                    Reason {
                        code: ReasonCode::UserDisabled,
                        message: format!(
                            "account {} is disabled and the template says revoke",
                            cred.user
                        ),
                    },
                ),
                _ => {}
            }
            return;
        }
        if self.incident(card) == Some(IncidentKind::Forgotten) {
            self.plan_forgotten(cred, card);
            return;
        }
        let held = self
            .index
            .live_serials(&card.id, Some(CertStatus::Suspended));
        if card.status == CardStatus::Suspended || !held.is_empty() {
            let serials = held;
            let reason = if self.found(card) {
                Reason {
                    code: ReasonCode::CardFound,
                    message: format!("card {} was found", card.id),
                }
            } else {
                Reason {
                    code: ReasonCode::UserEnabled,
                    message: format!("account {} is enabled again", cred.user),
                }
            };
            self.push_card_action(ActionKind::Resume, card, serials, reason);
        }
        let first_slot_action = self.actions.len();
        let live = self.index.live_by_slot(&card.id);
        for (slot, want) in &cred.certificates {
            let (kind, code, message, serials) = match live.get(*slot) {
                None => (
                    ActionKind::Reissue,
                    ReasonCode::SlotAdded,
                    format!("template {:?} now has slot {}", cred.template, slot.hex()),
                    vec![],
                ),
                Some(have) if !have.installed => (
                    ActionKind::Issue,
                    ReasonCode::InterruptedIssuance,
                    format!(
                        "certificate {} was signed but not yet written to the card",
                        have.serial
                    ),
                    vec![have.serial.clone()],
                ),
                Some(have) if self.emptied(&card.id, *slot, &have.serial) => (
                    ActionKind::Reissue,
                    ReasonCode::KeyReplaced,
                    format!(
                        "slot {} holds a new key that certificate {} does not match (its \
                         replacement was interrupted; the certificate was removed from the card)",
                        slot.hex(),
                        have.serial
                    ),
                    vec![have.serial.clone()],
                ),
                Some(have) if have.revision != want.revision => (
                    ActionKind::Reissue,
                    ReasonCode::TemplateChanged,
                    format!(
                        "slot {} was issued under revision {} and the template now gives {}",
                        slot.hex(),
                        have.revision,
                        want.revision
                    ),
                    vec![have.serial.clone()],
                ),
                Some(have) if self.now >= have.not_after => (
                    ActionKind::Renew,
                    ReasonCode::Expired,
                    format!("certificate {} expired at {}", have.serial, have.not_after),
                    vec![have.serial.clone()],
                ),
                Some(have) if renewal_due(have, want.renew_before_secs, self.now) => (
                    ActionKind::Renew,
                    ReasonCode::NearingExpiry,
                    format!(
                        "certificate {} expires at {} and its renewal point has passed",
                        have.serial, have.not_after
                    ),
                    vec![have.serial.clone()],
                ),
                Some(_) => continue,
            };
            self.push_slot_action(kind, cred, card, *slot, serials, code, message);
        }
        for (slot, have) in live.iter() {
            if !cred.certificates.contains_key(&slot) {
                self.push_slot_action(
                    ActionKind::Reissue,
                    cred,
                    card,
                    slot,
                    vec![have.serial.clone()],
                    ReasonCode::SlotRemoved,
                    format!(
                        "template {:?} no longer has slot {}",
                        cred.template,
                        slot.hex()
                    ),
                );
            }
        }
        let renewing_9d = self.actions[first_slot_action..].iter().any(|a| {
            a.slot == Some(Slot::KeyManagement)
                && matches!(a.kind, ActionKind::Renew | ActionKind::Reissue)
                && a.reason.code != ReasonCode::SlotRemoved
        });
        self.plan_key_history(card, renewing_9d);
    }

    /// Installs the certificates of `card` that were signed but not written (an issuance a
    /// failure interrupted); returns their slots.
    fn finish_interrupted(&mut self, cred: &DesiredCredential, card: &CardRecord) -> Vec<Slot> {
        let live = self.index.live_by_slot(&card.id);
        let mut slots = Vec::new();
        for (slot, have) in live.iter() {
            if !have.installed {
                self.push_slot_action(
                    ActionKind::Issue,
                    cred,
                    card,
                    slot,
                    vec![have.serial.clone()],
                    ReasonCode::InterruptedIssuance,
                    format!(
                        "certificate {} was signed but not yet written to the card",
                        have.serial
                    ),
                );
                slots.push(slot);
            }
        }
        slots
    }

    /// Whether `serial`, the newest live certificate of `card`'s `slot`, was removed from the
    /// card because a new key replaced its own ([`crate::inventory::CardFacts::emptied_slots`]).
    fn emptied(&self, card: &str, slot: Slot, serial: &str) -> bool {
        self.inventory
            .facts
            .get(card)
            .and_then(|f| f.emptied_slots.get(&slot))
            .is_some_and(|serials| serials.iter().any(|s| s == serial))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn push_slot_action(
        &mut self,
        kind: ActionKind,
        cred: &DesiredCredential,
        card: &CardRecord,
        slot: Slot,
        serials: Vec<String>,
        code: ReasonCode,
        message: String,
    ) {
        self.actions.push(Action {
            kind,
            user: cred.user.clone(),
            template: Some(cred.template.clone()),
            card: Some(card.id.clone()),
            stock: None,
            slot: Some(slot),
            slots: vec![slot],
            serials,
            reason: Reason { code, message },
            waiting_for_card: !self.present(&card.id),
            waiting_for_holder: false,
            card_suspect: false,
        });
    }

    pub(super) fn push_card_action(
        &mut self,
        kind: ActionKind,
        card: &CardRecord,
        serials: Vec<String>,
        reason: Reason,
    ) {
        let slots = self
            .index
            .live_by_slot(&card.id)
            .iter()
            .map(|(s, _)| s)
            .collect();
        self.actions.push(Action {
            kind,
            user: card.user.clone().unwrap_or_default(),
            template: card.template.clone(),
            card: Some(card.id.clone()),
            stock: None,
            slot: None,
            slots,
            serials,
            reason,
            waiting_for_card: kind.needs_card() && !self.present(&card.id),
            waiting_for_holder: false,
            card_suspect: false,
        });
    }

    pub(super) fn plan_revoke(&mut self, card: &CardRecord, reason: Reason) {
        let serials = self.index.live_serials(&card.id, None);
        self.push_card_action(ActionKind::Revoke, card, serials, reason);
        self.push_retire(card, "its credential is revoked in this plan");
    }

    /// Plans the revocation, as superseded, of the live certificates of `card` that its
    /// slots no longer hold ([`CardCerts::superseded`]): one action per holder and template
    /// (normally one), every pass until the CA has confirmed it. It depends on the inventory
    /// only, so an incomplete directory observation does not hold it back. It changes no
    /// slot of the card (`slots` is empty) and does not need the card.
    pub(super) fn plan_superseded(&mut self, card: &str, wanted: impl Fn(&str) -> bool) {
        let Some(certs) = self.index.certs_by_card.get(card) else {
            return;
        };
        let mut groups: BTreeMap<(&str, &str), Vec<(&CertRecord, &CertRecord)>> = BTreeMap::new();
        for (old, current) in certs.superseded() {
            if wanted(&old.user) {
                groups
                    .entry((old.user.as_str(), old.template.as_str()))
                    .or_default()
                    .push((old, current));
            }
        }
        for ((user, template), pairs) in groups {
            let replaced: Vec<String> = pairs
                .iter()
                .map(|(old, current)| {
                    format!(
                        "{} in slot {} (replaced by {})",
                        old.serial,
                        old.slot.hex(),
                        current.serial
                    )
                })
                .collect();
            let mut serials: Vec<String> = pairs.iter().map(|(o, _)| o.serial.clone()).collect();
            serials.sort();
            self.actions.push(Action {
                kind: ActionKind::Revoke,
                user: user.to_string(),
                template: Some(template.to_string()),
                card: Some(card.to_string()),
                stock: None,
                slot: None,
                slots: Vec::new(),
                serials,
                reason: Reason {
                    code: ReasonCode::Superseded,
                    message: format!(
                        "no longer held by card {card} and not yet revoked at the CA: {}",
                        replaced.join(", ")
                    ),
                },
                waiting_for_card: false,
                waiting_for_holder: false,
                card_suspect: false,
            });
        }
    }

    pub(super) fn push_retire(&mut self, card: &CardRecord, why: &str) {
        let reason = Reason {
            code: ReasonCode::CardRevoked,
            message: format!("card {} is wiped and returns to its stock: {why}", card.id),
        };
        self.push_retire_for(card, reason);
    }
}

/// Whether `now` is at or past [`renew_at`]; integer arithmetic with an early exit, since
/// planning asks this of every certificate.
pub(super) fn renewal_due(cert: &CertRecord, renew_before_secs: u64, now: OffsetDateTime) -> bool {
    let not_after = cert.not_after.unix_timestamp();
    let window = renew_before_secs.min(i64::MAX as u64) as i64;
    let now = now.unix_timestamp();
    if now < not_after.saturating_sub(window) {
        // Before the window opens, whatever the jitter.
        return false;
    }
    now >= renew_at(cert, renew_before_secs).unix_timestamp()
}

/// The moment a certificate should be renewed: a deterministic point in the first half of its
/// renewal window, seeded by its serial, so that a fleet issued on one day renews spread out.
pub fn renew_at(cert: &CertRecord, renew_before_secs: u64) -> OffsetDateTime {
    let lifetime = (cert.not_after - cert.not_before).whole_seconds().max(0) as u64;
    let window = renew_before_secs.min(lifetime);
    let jitter = fnv1a(cert.serial.as_bytes()) % (window / 2 + 1);
    let offset = window.saturating_sub(jitter);
    cert.not_after - time::Duration::seconds(offset.min(i64::MAX as u64) as i64)
}

pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
