//! The values a plan is made of: actions and the reasons behind them.

use serde::{Deserialize, Serialize};

use crate::policy::model::Slot;

/// What an action does.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    /// Bind a card and enrol every slot (or finish an interrupted issuance).
    Issue,
    /// New key and certificate in a slot whose certificate nears expiry.
    Renew,
    /// New key and certificate because the template changed in a way that matters.
    Reissue,
    /// Put the credential's certificates on hold (account disabled).
    Suspend,
    /// Release the hold (account enabled again).
    Resume,
    /// Revoke the credential's certificates (entitlement lost, user gone).
    Revoke,
    /// Wipe a card whose credential is gone, when it is next seen.
    Retire,
    /// Set a new random PUK on a card whose PUK was released (offline unblock), at its next
    /// contact.
    RotatePuk,
    /// Write the holder's previous key-management keys (from the archive) into the card's
    /// retired slots.
    KeyHistory,
}

impl ActionKind {
    /// Every kind, in plan order.
    pub const ALL: [ActionKind; 9] = [
        ActionKind::Issue,
        ActionKind::Renew,
        ActionKind::Reissue,
        ActionKind::Suspend,
        ActionKind::Resume,
        ActionKind::Revoke,
        ActionKind::Retire,
        ActionKind::RotatePuk,
        ActionKind::KeyHistory,
    ];

    /// Whether the action needs the card to be present.
    pub fn needs_card(self) -> bool {
        matches!(
            self,
            ActionKind::Issue
                | ActionKind::Renew
                | ActionKind::Reissue
                | ActionKind::Retire
                | ActionKind::RotatePuk
                | ActionKind::KeyHistory
        )
    }

    /// The lower-case name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Issue => "issue",
            ActionKind::Renew => "renew",
            ActionKind::Reissue => "reissue",
            ActionKind::Suspend => "suspend",
            ActionKind::Resume => "resume",
            ActionKind::Revoke => "revoke",
            ActionKind::Retire => "retire",
            ActionKind::RotatePuk => "rotate-puk",
            ActionKind::KeyHistory => "key-history",
        }
    }
}

/// Why an action was planned: the desired or actual fact that caused it. Codes are stable.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ReasonCode {
    /// Entitled, but holds no credential under this template.
    NotIssued,
    /// A certificate was signed but never written to its card (interrupted issuance).
    InterruptedIssuance,
    /// The certificate reached its (jittered) renewal point.
    NearingExpiry,
    /// The certificate has expired.
    Expired,
    /// A field that matters (CA, profile, subject, SANs, algorithm, key generation) changed.
    TemplateChanged,
    /// A newer certificate replaced this one in its slot, and the CA has not confirmed its
    /// revocation yet: it is revoked as superseded.
    Superseded,
    /// The template gained a slot.
    SlotAdded,
    /// The template dropped a slot.
    SlotRemoved,
    /// The account is disabled.
    UserDisabled,
    /// The account is enabled again.
    UserEnabled,
    /// The user is no longer entitled to the template.
    NoLongerEntitled,
    /// The user is no longer in the directory.
    UserGone,
    /// The template no longer exists in the policy.
    TemplateRemoved,
    /// The card's credential was revoked; the card is wiped and returns to stock.
    CardRevoked,
    /// The action needs the card's PIN and the one Keyfleet holds cannot be used (the holder
    /// changed it): it waits for the holder.
    HolderPinUnknown,
    /// The card could not prove the management key Keyfleet set on it (reset or cloned):
    /// nothing is sent to it or written on it.
    CardSuspect,
    /// The slot's key was replaced and its new certificate never came (the CA failed, the
    /// write failed): the old certificate, which no longer matches the key, was removed from
    /// the card, and the slot is issued again.
    KeyReplaced,
    /// The card was reported lost (or stayed forgotten too long): its certificates are
    /// revoked with keyCompromise; the card is never used again.
    CardLost,
    /// The card was reported damaged: its certificates are revoked with
    /// cessationOfOperation and the card is retired (wiped if it still answers).
    CardDamaged,
    /// The card was reported forgotten: its certificates are put on hold.
    CardForgotten,
    /// The forgotten card was found: the hold is released.
    CardFound,
    /// A new card replaces one reported lost.
    ReplacesLost,
    /// A new card replaces one reported damaged.
    ReplacesDamaged,
    /// A temporary card while the holder's own card is forgotten.
    TemporaryForForgotten,
    /// The temporary card's time is over (the original was found, or replaced): its
    /// certificates are revoked and the card returns to stock.
    TemporaryEnded,
    /// The card's PUK was released for an offline unblock: a new one is set.
    RotatePuk,
    /// The card's retired key-management slots do not hold the holder's previous keys the
    /// template's `keyHistory` asks for.
    KeyHistory,
}

/// A reason code with a human message naming the facts.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Reason {
    /// Stable code.
    pub code: ReasonCode,
    /// Human explanation.
    pub message: String,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    /// What to do.
    pub kind: ActionKind,
    /// The uid concerned.
    pub user: String,
    /// The template concerned.
    pub template: Option<String>,
    /// The card concerned; `None` when a new card is to be taken from `stock`.
    pub card: Option<String>,
    /// The stock a new card comes from (issue only).
    pub stock: Option<String>,
    /// The slot, when the action concerns exactly one.
    pub slot: Option<Slot>,
    /// Every slot the action touches.
    pub slots: Vec<Slot>,
    /// Serials of the certificates the action changes the status of.
    pub serials: Vec<String>,
    /// Why.
    pub reason: Reason,
    /// True when the action needs a card that is not present: it stays pending.
    pub waiting_for_card: bool,
    /// True when the action needs the holder (their PIN): it stays pending until they come.
    #[serde(default)]
    pub waiting_for_holder: bool,
    /// True when the action's card is suspect: it is held, nothing is sent to the card.
    #[serde(default)]
    pub card_suspect: bool,
}

impl Action {
    /// The RFC 5280 reason the CA is asked to revoke this action's certificates with, for
    /// the actions that revoke: `superseded` for certificates a renewal, a reissue or a slot's
    /// removal replaced; `keyCompromise` for a lost card; `cessationOfOperation` for a user
    /// gone from the directory, a damaged card and a temporary card's end;
    /// `affiliationChanged` for any other loss of entitlement.
    pub fn revocation_reason(&self) -> Option<&'static str> {
        match (self.kind, self.reason.code) {
            (ActionKind::Revoke, ReasonCode::Superseded)
            | (ActionKind::Renew | ActionKind::Reissue, ReasonCode::SlotRemoved) => {
                Some("superseded")
            }
            (ActionKind::Revoke, ReasonCode::CardLost) => Some("keyCompromise"),
            (
                ActionKind::Revoke,
                ReasonCode::UserGone | ReasonCode::CardDamaged | ReasonCode::TemporaryEnded,
            ) => Some("cessationOfOperation"),
            (ActionKind::Revoke, _) => Some("affiliationChanged"),
            _ => None,
        }
    }

    /// Whether the action can run now: not waiting for a card or the holder, and its card
    /// is not suspect.
    pub fn runnable(&self) -> bool {
        !self.waiting_for_card && !self.waiting_for_holder && !self.card_suspect
    }

    /// A stable identity for journalling and approval: same action, same id.
    pub fn id(&self) -> String {
        let slots: Vec<&str> = self.slots.iter().map(|s| s.hex()).collect();
        format!(
            "{}:{}:{}:{}:{}",
            self.kind.as_str(),
            self.user,
            self.template.as_deref().unwrap_or("-"),
            self.card.as_deref().unwrap_or("new"),
            slots.join(",")
        )
    }
}
