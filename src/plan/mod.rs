//! The planner: `plan(desired, actual, now, settings) -> Plan`, a pure function.
//!
//! It takes the desired state, the recorded inventory and what is present right now, and
//! returns the actions that make the two agree, each with the reason that caused it. It does
//! no I/O, reads no clock (time is a parameter) and is deterministic: the same inputs give the
//! same plan, in the same order. Applying a plan and planning again gives an empty plan (up to
//! actions still waiting for a card).
//!
//! Rules, in the order they are checked for each desired credential:
//!
//! ```text
//!  no live card for (user, template) ── user disabled? ── yes: nothing (never issue to a disabled account)
//!                                                     └── no: Issue (card from binding or stock)
//!  live card ── user disabled ── suspend: Suspend (if active) │ revoke: Revoke + Retire │ none: –
//!            └─ user enabled ── card suspended: Resume
//!                              per slot: missing → Reissue(slot-added) · not installed → Issue(interrupted)
//!                                        revision differs → Reissue · expired / past renew point → Renew
//!                              live cert in a slot the template dropped → Reissue(slot-removed)
//!  live card nobody should hold ── observation incomplete: nothing (never revoke blind)
//!                               └─ onEntitlementLoss revoke: Revoke + Retire │ none: –
//!  revoked card ── Retire (waits for the card)
//! ```
//!
//! Finally the safety valve counts the users whose credentials the plan revokes and marks the
//! plan refused when that exceeds the configured limits.

mod action;
mod credential;
mod holds;
mod incidents;
mod index;
pub mod json;
pub mod key_history;

use std::collections::BTreeSet;

use serde::Serialize;
use time::OffsetDateTime;

pub use action::{Action, ActionKind, Reason, ReasonCode};
pub use credential::renew_at;

use credential::Ctx;
use index::{FastHasher, Index};

use crate::desired::{Conflict, Desired, DesiredCredential, ExpansionError};
use crate::inventory::{CardRecord, CardStatus, Inventory};
use crate::policy::model::{CardType, OnEntitlementLoss, Slot};

/// A card that is present but not yet in the inventory (a blank PIV card in a reader).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PresentBlank {
    /// Its id.
    pub id: String,
    /// Its type.
    pub card_type: CardType,
    /// The stock it belongs to.
    pub stock: String,
}

/// What is attached right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presence {
    /// Ids of cards present (virtual cards are always present).
    pub cards: BTreeSet<String>,
    /// Present cards unknown to the inventory that a stock accepts.
    pub blanks: Vec<PresentBlank>,
}

/// The revocation limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SafetyLimits {
    /// Most users whose credentials one plan may revoke.
    pub max_revocations: u32,
    /// Most users, as a percentage of the users holding credentials, one plan may revoke.
    pub max_revocation_percent: u32,
}

impl Default for SafetyLimits {
    fn default() -> Self {
        SafetyLimits {
            max_revocations: 10,
            max_revocation_percent: 25,
        }
    }
}

/// Everything besides desired and actual state that the planner takes.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// The time to plan for.
    pub now: OffsetDateTime,
    /// Safety limits.
    pub limits: SafetyLimits,
    /// The operator allowed a plan over the limits.
    pub allow_mass_revocation: bool,
    /// Only plan for these users (`--target user=UID`); `None` plans for everyone.
    pub targets: Option<BTreeSet<String>>,
    /// Threads to plan large fleets on (the caller's choice: the planner reads nothing of
    /// the machine). Below 20,000 credentials one is used whatever this says.
    pub threads: usize,
}

/// The safety valve's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SafetyReport {
    /// The plan revokes more than the limits allow.
    pub tripped: bool,
    /// The operator allowed it anyway.
    pub allowed: bool,
    /// Users whose credentials the plan revokes.
    pub revoked_users: usize,
    /// Users holding credentials before the plan.
    pub holders: usize,
    /// The limits applied.
    pub limits: SafetyLimits,
}

/// A plan: the actions, the facts that constrained them, and the valve's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Whether every directory was observed completely (otherwise no revocation is planned).
    pub complete: bool,
    /// The actions, in execution order.
    pub actions: Vec<Action>,
    /// The safety valve.
    pub safety_valve: SafetyReport,
    /// Users with conflicting entitlements, left alone.
    pub conflicts: Vec<Conflict>,
    /// Users whose credentials could not be expanded, left alone.
    pub errors: Vec<ExpansionError>,
    /// Revocations not planned because the observation was incomplete.
    pub withheld_revocations: usize,
}

impl Plan {
    /// True when there is nothing to do at all.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// True when the valve tripped and the operator did not allow it.
    pub fn refused(&self) -> bool {
        self.safety_valve.tripped && !self.safety_valve.allowed
    }

    /// Actions that can run now (not waiting for a card or the holder, card not suspect).
    pub fn runnable(&self) -> impl Iterator<Item = &Action> {
        self.actions.iter().filter(|a| a.runnable())
    }
}

/// Computes the plan. Pure: see the module docs for the rules.
pub fn plan(
    desired: &Desired,
    inventory: &Inventory,
    presence: &Presence,
    opts: &PlanOptions,
) -> Plan {
    Planner::new(inventory).plan(desired, presence, opts)
}

/// The planner with its lookup tables over one inventory, built once and reused: replanning
/// a few users (`PlanOptions::targets`) then costs time in proportion to those users only.
pub struct Planner<'a> {
    inventory: &'a Inventory,
    index: Index<'a>,
}

impl<'a> Planner<'a> {
    /// Indexes the inventory.
    pub fn new(inventory: &'a Inventory) -> Self {
        Planner {
            inventory,
            index: Index::new(inventory),
        }
    }

    /// Plans; with `opts.targets`, only for those users (and only their data is visited).
    pub fn plan(&self, desired: &Desired, presence: &Presence, opts: &PlanOptions) -> Plan {
        let index = &self.index;
        let inventory = self.inventory;
        let frozen = desired.frozen_users();
        let mut ctx = Ctx::new(desired, inventory, presence, index, opts.now);
        let credentials: Vec<(&(String, String), &DesiredCredential)> = match &opts.targets {
            Some(users) => users
                .iter()
                .flat_map(|u| {
                    desired
                        .credentials
                        .range((u.clone(), String::new())..)
                        .take_while(move |((user, _), _)| user == u)
                })
                .collect(),
            None => desired.credentials.iter().collect(),
        };

        // Credentials whose card exists are planned independently of each other: spread them
        // over the cores. Issuance picks cards from shared stock, so it stays sequential (in
        // credential order, for a deterministic choice of cards).
        let threads = if credentials.len() >= PARALLEL_THRESHOLD {
            opts.threads.clamp(1, 64)
        } else {
            1
        };
        let chunk = credentials.len().div_ceil(threads).max(1);
        let frozen_ref = &frozen;
        let parts: Vec<HeldPart<'_>> = std::thread::scope(|scope| {
            let handles: Vec<_> = credentials
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        let mut local = Ctx::new(desired, inventory, presence, index, opts.now);
                        let mut claimed = Vec::with_capacity(part.len());
                        for ((user, template), cred) in part {
                            let holder = local.holder_of(user, template);
                            if let Some(card) = holder {
                                claimed.push(card.id.as_str());
                            }
                            if frozen_ref.contains(user.as_str()) || !in_targets(opts, user) {
                                continue;
                            }
                            match holder {
                                None => local.queue_issue(cred),
                                Some(card) => local.plan_held(cred, card),
                            }
                        }
                        HeldPart {
                            actions: local.actions,
                            claimed,
                            issues: local.issues,
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        });
        let mut claimed: std::collections::HashSet<
            &str,
            std::hash::BuildHasherDefault<FastHasher>,
        > = std::collections::HashSet::with_capacity_and_hasher(
            credentials.len(),
            Default::default(),
        );
        for part in parts {
            ctx.actions.extend(part.actions);
            claimed.extend(part.claimed);
            for (cred, reason) in part.issues {
                ctx.plan_issue(cred, reason);
            }
        }

        let cards: Box<dyn Iterator<Item = &CardRecord>> = match &opts.targets {
            Some(users) => Box::new(users.iter().flat_map(|u| index.cards_of(u.as_str()))),
            None => Box::new(inventory.cards.values()),
        };
        let mut withheld = 0;
        for card in cards {
            let user = card.user.as_deref().unwrap_or("");
            if frozen.contains(user) || !in_targets(opts, user) {
                continue;
            }
            // A lost or damaged card gets nothing that touches it (not even a new PUK): its
            // certificates are revoked, and a damaged one is wiped.
            if ctx.plan_incident_card(card) {
                continue;
            }
            ctx.plan_rotate_puk(card);
            if ctx.plan_temporary_card(card) {
                continue;
            }
            if card.status == CardStatus::Revoked {
                ctx.push_retire(card, "its credential was revoked earlier");
                continue;
            }
            if !card.holds_credential() || claimed.contains(card.id.as_str()) {
                continue;
            }
            let template = card.template.as_deref().unwrap_or("");
            let rules = desired.templates.get(template);
            if rules.is_some_and(|r| r.on_entitlement_loss == OnEntitlementLoss::None) {
                continue;
            }
            if !desired.complete {
                withheld += 1;
                continue;
            }
            let reason = if rules.is_none() {
                Reason {
                    code: ReasonCode::TemplateRemoved,
                    message: format!("template {template:?} is no longer in the policy"),
                }
            } else if !desired.users.contains_key(user) {
                Reason {
                    code: ReasonCode::UserGone,
                    message: format!("user {user:?} is no longer in the directory"),
                }
            } else {
                Reason {
                    code: ReasonCode::NoLongerEntitled,
                    message: format!("no assignment entitles {user:?} to template {template:?}"),
                }
            };
            ctx.plan_revoke(card, reason);
        }
        // Temporary cards the card loop planned (and any issue it queued) come last.
        for (cred, reason) in std::mem::take(&mut ctx.issues) {
            ctx.plan_issue(cred, reason);
        }
        for card in &index.crowded {
            ctx.plan_superseded(card, |user| {
                !frozen.contains(user) && in_targets(opts, user)
            });
        }

        let mut actions = ctx.actions;
        actions.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
        actions.dedup();
        holds::hold(&mut actions, inventory);

        // Revoking a superseded certificate or a temporary card takes nobody's credential,
        // and an incident an operator reported is one person's decision about one card: not
        // counted. Incidents only declared in git are.
        let revoked_users: BTreeSet<&str> = actions
            .iter()
            .filter(|a| a.kind == ActionKind::Revoke && counts_for_valve(a, inventory))
            .map(|a| a.user.as_str())
            .collect();
        let holders = index.holders_count;
        let n = revoked_users.len();
        let tripped = n as u64 > u64::from(opts.limits.max_revocations)
            || (n > 0
                && (n as u64) * 100
                    > u64::from(opts.limits.max_revocation_percent) * holders as u64);
        let safety_valve = SafetyReport {
            tripped,
            allowed: opts.allow_mass_revocation,
            revoked_users: n,
            holders,
            limits: opts.limits,
        };
        Plan {
            complete: desired.complete,
            actions,
            safety_valve,
            conflicts: desired.conflicts.clone(),
            errors: desired.errors.clone(),
            withheld_revocations: withheld,
        }
    }
}

fn counts_for_valve(action: &Action, inventory: &Inventory) -> bool {
    match action.reason.code {
        ReasonCode::Superseded | ReasonCode::TemporaryEnded => false,
        // An incident an operator recorded (lost, damaged, or forgotten for too long) is a
        // person's decision about one card; one only git declares is counted.
        ReasonCode::CardLost | ReasonCode::CardDamaged => action
            .card
            .as_deref()
            .and_then(|c| inventory.incident(c))
            .is_none_or(|i| i.reported_by == crate::inventory::incident::REPORTED_BY_POLICY),
        _ => true,
    }
}

fn in_targets(opts: &PlanOptions, user: &str) -> bool {
    opts.targets.as_ref().is_none_or(|t| t.contains(user))
}

fn sort_key(a: &Action) -> (&str, Option<&str>, u8, Option<&str>, Option<Slot>) {
    // Per user and template: resume before renewals, revoke before retire, issue first.
    let order = match a.kind {
        ActionKind::Resume => 0,
        ActionKind::Issue => 1,
        ActionKind::Reissue => 2,
        ActionKind::Renew => 3,
        ActionKind::Suspend => 4,
        ActionKind::Revoke => 5,
        ActionKind::Retire => 6,
        ActionKind::RotatePuk => 7,
        ActionKind::KeyHistory => 8,
    };
    (
        a.user.as_str(),
        a.template.as_deref(),
        order,
        a.card.as_deref(),
        a.slot,
    )
}

/// Below this many credentials the planner runs on one thread (spawning costs more).
const PARALLEL_THRESHOLD: usize = 20_000;

/// What one planning thread found among the credentials whose card exists.
struct HeldPart<'a> {
    actions: Vec<Action>,
    claimed: Vec<&'a str>,
    issues: Vec<(&'a DesiredCredential, Reason)>,
}

#[cfg(test)]
mod tests;
