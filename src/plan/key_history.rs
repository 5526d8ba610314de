//! The key history on a card: the holder's previous key-management keys, from the archive,
//! in the card's retired slots (82, 83, …, newest first), up to the template's `keyHistory`.
//! Pure, like the rest of the planner; the executor writes what [`wanted`] says at the moment
//! it runs.
//!
//! ```text
//!   wanted(card) = the holder's archived 9D certificates (any card: a replacement gets the
//!                  history of the one it replaces), except the card's current 9D one,
//!                  newest first, at most keyHistory
//!   wanted ≠ what the card was last given (CardFacts::key_history) ─► KeyHistory (key-history)
//!   a 9D renewal or reissue planned for the card ─► KeyHistory after it (the replaced key
//!                  joins the history)
//! ```

use super::credential::Ctx;
use super::{Action, ActionKind, Reason, ReasonCode};
use crate::inventory::{CardRecord, CertRecord, Inventory};
use crate::policy::model::{CardType, Slot};

/// The serials whose keys a card held by `user` should carry in its retired slots, newest
/// first: `user`'s archived key-management certificates other than `current` (the card's 9D
/// certificate), the `n` newest and any `recovered` onto it (`keys recover --to-card`), at most
/// 20 (the retired slots there are).
pub fn wanted(
    inventory: &Inventory,
    user: &str,
    current: Option<&str>,
    n: u8,
    recovered: &[String],
) -> Vec<String> {
    wanted_of(
        inventory
            .certs
            .values()
            .filter(|c| is_archived_km(inventory, c)),
        user,
        current,
        n,
        recovered,
    )
}

/// Whether `c` is a key-management certificate whose key the archive holds.
pub(super) fn is_archived_km(inventory: &Inventory, c: &CertRecord) -> bool {
    c.slot == Slot::KeyManagement
        && c.key_id
            .as_ref()
            .is_some_and(|k| inventory.archived.contains(k))
}

/// [`wanted`] among `archived` (the archived key-management certificates to choose from).
fn wanted_of<'a>(
    archived: impl Iterator<Item = &'a CertRecord>,
    user: &str,
    current: Option<&str>,
    n: u8,
    recovered: &[String],
) -> Vec<String> {
    if n == 0 && recovered.is_empty() {
        return Vec::new();
    }
    let mut certs: Vec<&CertRecord> = archived
        .filter(|c| c.user == user && c.installed && Some(c.serial.as_str()) != current)
        .collect();
    certs.sort_by(|a, b| b.enrolment_order().cmp(&a.enrolment_order()));
    certs
        .into_iter()
        .enumerate()
        .filter(|(i, c)| *i < usize::from(n) || recovered.contains(&c.serial))
        .take(20)
        .map(|(_, c)| c.serial.clone())
        .collect()
}

impl Ctx<'_> {
    /// Plans the key history of a held card whose template keeps one (or that was given one).
    pub(super) fn plan_key_history(&mut self, card: &CardRecord, renewing_9d: bool) {
        // No archived key and nothing given to any card: nothing to want or to clear (the
        // common case; planning visits every held card).
        if self.inventory.archived.is_empty() && self.inventory.facts.is_empty() {
            return;
        }
        if !matches!(card.card_type, CardType::Piv | CardType::Virtual) {
            return;
        }
        let n = card
            .template
            .as_deref()
            .and_then(|t| self.desired.templates.get(t))
            .map_or(0, |r| r.key_history);
        let facts = self.inventory.facts.get(&card.id);
        let given: &[String] = facts.map_or(&[], |f| f.key_history.as_slice());
        let recovered: &[String] = facts.map_or(&[], |f| f.recovered_keys.as_slice());
        if n == 0 && given.is_empty() && recovered.is_empty() {
            return;
        }
        let user = card.user.as_deref().unwrap_or_default();
        let current = self.index.live_by_slot(&card.id).get(Slot::KeyManagement);
        let mut want = wanted_of(
            self.index.archived_of(user),
            user,
            current.map(|c| c.serial.as_str()),
            n,
            recovered,
        );
        if renewing_9d
            && let Some(c) = current
            && c.key_id
                .as_ref()
                .is_some_and(|k| self.inventory.archived.contains(k))
        {
            // After the renewal the current key is the newest previous one.
            want.insert(0, c.serial.clone());
            want.truncate(usize::from(n));
        }
        if want.as_slice() == given {
            return;
        }
        let message = if want.is_empty() {
            format!("card {} keeps no previous key-management key", card.id)
        } else {
            format!(
                "card {}'s retired key slots should hold the keys of {} (newest first; they \
                 hold {})",
                card.id,
                want.join(", "),
                if given.is_empty() {
                    "none".to_string()
                } else {
                    given.join(", ")
                }
            )
        };
        self.actions.push(Action {
            kind: ActionKind::KeyHistory,
            user: user.to_string(),
            template: card.template.clone(),
            card: Some(card.id.clone()),
            stock: None,
            slot: None,
            slots: Vec::new(),
            serials: want,
            reason: Reason {
                code: ReasonCode::KeyHistory,
                message,
            },
            waiting_for_card: !self.present(&card.id),
            waiting_for_holder: false,
            card_suspect: false,
        });
    }
}
