//! Holds: actions the facts Keyfleet learned about a card keep from running (see
//! [`crate::inventory::CardFacts`]). Pure, like the rest of the planner.
//!
//! ```text
//!   card suspect ───────────────► every action that needs the card: held, reason card-suspect
//!   holder's PIN unknown ───────► renewals and reissues (a CSR the card signs needs the PIN):
//!                                 waiting for the holder, reason holder-pin-unknown
//! ```
//!
//! The action stays in the plan every pass (level-triggered) until the fact is gone; the
//! original reason is kept in its message. Actions that need no PIN (installing a signed
//! certificate, a wipe through the PUK, CA status changes) are not held by an unknown PIN.

use super::{Action, ActionKind, Reason, ReasonCode};
use crate::inventory::Inventory;

/// Marks the actions of `actions` that facts about their card hold.
pub(super) fn hold(actions: &mut [Action], inventory: &Inventory) {
    if inventory.facts.is_empty() {
        return;
    }
    for action in actions {
        let Some(facts) = action.card.as_deref().and_then(|c| inventory.facts.get(c)) else {
            continue;
        };
        let card = action.card.as_deref().unwrap_or_default();
        if let Some(suspect) = &facts.suspect
            && action.kind.needs_card()
        {
            let message = format!(
                "{}; held: card {card} could not prove the management key Keyfleet set on it \
                 ({}): reset or cloned, nothing is sent to it",
                action.reason.message, suspect.reason
            );
            action.card_suspect = true;
            action.reason = Reason {
                code: ReasonCode::CardSuspect,
                message,
            };
        } else if facts.holder_pin.is_some() && needs_pin(action) {
            let message = format!(
                "{}; waiting for the holder: the PIN Keyfleet holds for card {card} cannot be \
                 used (changed by the holder?)",
                action.reason.message
            );
            action.waiting_for_holder = true;
            action.reason = Reason {
                code: ReasonCode::HolderPinUnknown,
                message,
            };
        }
    }
}

/// Whether the action needs the card's PIN: a new key's CSR is signed on the card.
fn needs_pin(action: &Action) -> bool {
    matches!(action.kind, ActionKind::Renew | ActionKind::Reissue)
        && action.reason.code != ReasonCode::SlotRemoved
}
