//! Planning from card incidents (see [`crate::inventory::incident`]) and from a released PUK.
//! Pure, like the rest of the planner.
//!
//! ```text
//!   lost ──────► Revoke (card-lost, keyCompromise); the card is never used again
//!                Issue to the holder, if still entitled (replaces-lost)
//!   damaged ───► Revoke (card-damaged, cessationOfOperation) + Retire (wipe if it answers)
//!                Issue to the holder, if still entitled (replaces-damaged)
//!   forgotten ─► Suspend (card-forgotten); no renewal; with `temporary:` an Issue of that
//!                template from stock (temporary-for-forgotten)
//!   found ─────► Resume (card-found)
//!   temporary card no longer needed (original found, or replaced) ─► Revoke + Retire
//!                (temporary-ended, cessationOfOperation; the card returns to stock)
//!   PUK released for an offline unblock ─► RotatePuk at the card's next contact (rotate-puk)
//! ```

use super::credential::Ctx;
use super::{Action, ActionKind, Reason, ReasonCode};
use crate::desired::DesiredCredential;
use crate::inventory::incident::{self, IncidentEventKind, REPORTED_BY_POLICY};
use crate::inventory::{CardRecord, CardStatus, CertStatus};
use crate::policy::model::IncidentKind;

impl<'a> Ctx<'a> {
    /// The incident in force on `card` now.
    pub(super) fn incident(&self, card: &CardRecord) -> Option<IncidentKind> {
        if self.inventory.facts.is_empty()
            && self.desired.incidents.is_empty()
            && matches!(card.status, CardStatus::Active | CardStatus::Suspended)
        {
            return None;
        }
        incident::effective(
            card,
            self.inventory.facts.get(&card.id),
            self.desired.incidents.get(&card.id).copied(),
            self.now,
            self.desired.forgotten_becomes_lost_after_secs,
        )
    }

    /// Whether a suspended `card` is on hold because it was forgotten and is found now: an
    /// operator's `found` after the hold, or git no longer declaring it forgotten.
    pub(super) fn found(&self, card: &CardRecord) -> bool {
        let Some(facts) = self.inventory.facts.get(&card.id) else {
            return false;
        };
        if facts.incident.as_ref().is_some_and(|i| {
            i.kind == IncidentKind::Forgotten && i.reported_by == REPORTED_BY_POLICY
        }) {
            return true;
        }
        facts
            .incidents
            .last()
            .is_some_and(|e| e.kind == IncidentEventKind::Found && e.at >= card.updated_at)
    }

    /// The card that holds `(user, template)`: the index's, unless it is lost or damaged, in
    /// which case another live card of the user under the template (its replacement), if any.
    pub(super) fn holder_of(&self, user: &str, template: &str) -> Option<&'a CardRecord> {
        let card = self.index.holder(user, template)?;
        if !matches!(
            self.incident(card),
            Some(IncidentKind::Lost | IncidentKind::Damaged)
        ) {
            return Some(card);
        }
        let mut others: Vec<&'a CardRecord> = self
            .index
            .cards_of(user)
            .filter(|c| {
                c.id != card.id
                    && c.holds_credential()
                    && c.template.as_deref() == Some(template)
                    && !matches!(
                        self.incident(c),
                        Some(IncidentKind::Lost | IncidentKind::Damaged)
                    )
            })
            .collect();
        others.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        others.first().copied()
    }

    /// Why a user who holds no card under `cred`'s template gets one, when it replaces a
    /// lost or damaged card: the newest of their cards under the template is one.
    pub(super) fn replacement_reason(&self, cred: &DesiredCredential) -> Option<Reason> {
        let last = self
            .index
            .cards_of(&cred.user)
            .filter(|c| c.template.as_deref() == Some(cred.template.as_str()))
            .max_by(|a, b| (a.updated_at, &a.id).cmp(&(b.updated_at, &b.id)))?;
        let (code, what) = match self.incident(last).or(match last.status {
            // A damaged card once wiped is retired, its holder kept on the record.
            CardStatus::Retired if self.was_damaged(last) => Some(IncidentKind::Damaged),
            _ => None,
        })? {
            IncidentKind::Lost => (ReasonCode::ReplacesLost, "lost"),
            IncidentKind::Damaged => (ReasonCode::ReplacesDamaged, "damaged"),
            IncidentKind::Forgotten => return None,
        };
        Some(Reason {
            code,
            message: format!(
                "card {} of {} under {:?} was reported {what}: a new card replaces it",
                last.id, cred.user, cred.template
            ),
        })
    }

    fn was_damaged(&self, card: &CardRecord) -> bool {
        self.inventory.facts.get(&card.id).is_some_and(|f| {
            f.incidents
                .last()
                .is_some_and(|e| e.kind == IncidentEventKind::Damaged)
        })
    }

    /// A forgotten card its holder is still entitled to: its active certificates on hold,
    /// nothing renewed, and the temporary card if the template names one.
    pub(super) fn plan_forgotten(&mut self, cred: &DesiredCredential, card: &CardRecord) {
        let serials = self.index.live_serials(&card.id, Some(CertStatus::Active));
        if card.status == CardStatus::Active || !serials.is_empty() {
            self.push_card_action(
                ActionKind::Suspend,
                card,
                serials,
                Reason {
                    code: ReasonCode::CardForgotten,
                    message: format!(
                        "card {} of {} was reported forgotten: its certificates are put on hold",
                        card.id, cred.user
                    ),
                },
            );
        }
        let desired = self.desired;
        let Some(temporary) = desired.temporary_of.get(&cred.template) else {
            return;
        };
        if self.index.holder(&cred.user, temporary).is_some() {
            return;
        }
        if let Some(tcred) = desired
            .temporaries
            .get(&(cred.user.clone(), temporary.clone()))
        {
            self.issues.push((
                tcred,
                Reason {
                    code: ReasonCode::TemporaryForForgotten,
                    message: format!(
                        "card {} of {} is forgotten: a temporary card under {temporary:?} is \
                         issued until it is found",
                        card.id, cred.user
                    ),
                },
            ));
        }
    }

    /// A card whose incident is lost or damaged: its live certificates revoked and, when
    /// damaged, the card retired. Returns whether the card was such a card.
    pub(super) fn plan_incident_card(&mut self, card: &CardRecord) -> bool {
        let kind = match self.incident(card) {
            Some(k @ (IncidentKind::Lost | IncidentKind::Damaged)) => k,
            _ => return false,
        };
        let serials = self.index.live_serials(&card.id, None);
        let (code, what) = match kind {
            IncidentKind::Lost => (ReasonCode::CardLost, "lost"),
            _ => (ReasonCode::CardDamaged, "damaged"),
        };
        let lapsed = kind == IncidentKind::Lost
            && self
                .inventory
                .incident(&card.id)
                .is_some_and(|i| i.kind == IncidentKind::Forgotten);
        let why = if lapsed {
            format!(
                "card {} has been forgotten longer than forgottenBecomesLostAfter: it is lost",
                card.id
            )
        } else {
            format!("card {} was reported {what}", card.id)
        };
        if card.holds_credential() || !serials.is_empty() {
            self.push_card_action(
                ActionKind::Revoke,
                card,
                serials,
                Reason {
                    code,
                    message: format!("{why}: its certificates are revoked"),
                },
            );
        }
        if kind == IncidentKind::Damaged {
            self.push_retire_for(
                card,
                Reason {
                    code,
                    message: format!("{why}: it is wiped, if it still answers, and retired"),
                },
            );
        }
        true
    }

    /// A temporary card: kept (and renewed) while its holder's own card is forgotten, or lost
    /// or damaged and not yet replaced; otherwise revoked and returned to stock. Returns
    /// whether the card was a temporary card holding a credential.
    pub(super) fn plan_temporary_card(&mut self, card: &'a CardRecord) -> bool {
        if !card.temporary || !card.holds_credential() {
            return false;
        }
        let (Some(user), Some(template)) = (card.user.as_deref(), card.template.as_deref()) else {
            return false;
        };
        if self.temporary_wanted(user, template) {
            let desired = self.desired;
            if let Some(cred) = desired
                .temporaries
                .get(&(user.to_string(), template.to_string()))
            {
                self.plan_held(cred, card);
            }
            return true;
        }
        let serials = self.index.live_serials(&card.id, None);
        let reason = Reason {
            code: ReasonCode::TemporaryEnded,
            message: format!(
                "temporary card {} of {user} is no longer needed (the card it stood in for \
                 was found or replaced): revoked, wiped and back to stock",
                card.id
            ),
        };
        self.push_card_action(ActionKind::Revoke, card, serials, reason.clone());
        self.push_retire_for(card, reason);
        true
    }

    /// Whether `user` still needs a temporary card under `temporary`.
    fn temporary_wanted(&self, user: &str, temporary: &str) -> bool {
        self.desired
            .temporary_of
            .iter()
            .filter(|(_, t)| t.as_str() == temporary)
            .any(|(template, _)| {
                let entitled = self
                    .desired
                    .credentials
                    .contains_key(&(user.to_string(), template.clone()));
                self.index
                    .cards_of(user)
                    .filter(|c| c.template.as_deref() == Some(template.as_str()))
                    .any(|c| match self.incident(c) {
                        Some(IncidentKind::Forgotten) => entitled,
                        Some(IncidentKind::Lost | IncidentKind::Damaged) => {
                            entitled && self.holder_of(user, template).is_none()
                        }
                        None => false,
                    })
            })
    }

    /// A card whose PUK was released: a new PUK at its next contact.
    pub(super) fn plan_rotate_puk(&mut self, card: &CardRecord) {
        let released = self
            .inventory
            .facts
            .get(&card.id)
            .and_then(|f| f.puk_released.as_ref());
        let Some(released) = released else {
            return;
        };
        if !card.holds_credential() {
            return;
        }
        self.actions.push(Action {
            kind: ActionKind::RotatePuk,
            user: card.user.clone().unwrap_or_default(),
            template: card.template.clone(),
            card: Some(card.id.clone()),
            stock: None,
            slot: None,
            slots: Vec::new(),
            serials: Vec::new(),
            reason: Reason {
                code: ReasonCode::RotatePuk,
                message: format!(
                    "the PUK of card {} was released to {} for an offline unblock: a new one \
                     is set at its next contact",
                    card.id, released.by
                ),
            },
            waiting_for_card: !self.present(&card.id),
            waiting_for_holder: false,
            card_suspect: false,
        });
    }

    /// A retire with its own reason.
    pub(super) fn push_retire_for(&mut self, card: &CardRecord, reason: Reason) {
        self.actions.push(Action {
            kind: ActionKind::Retire,
            user: card.user.clone().unwrap_or_default(),
            template: card.template.clone(),
            card: Some(card.id.clone()),
            stock: None,
            slot: None,
            slots: Vec::new(),
            serials: Vec::new(),
            reason,
            waiting_for_card: !self.present(&card.id),
            waiting_for_holder: false,
            card_suspect: false,
        });
    }
}
