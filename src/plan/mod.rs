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
mod holds;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use time::OffsetDateTime;

pub use action::{Action, ActionKind, Reason, ReasonCode};

use crate::desired::{Conflict, Desired, DesiredCredential, ExpansionError, StockInfo};
use crate::inventory::{CardRecord, CardStatus, CertRecord, CertStatus, Inventory};
use crate::policy::model::{CardType, OnEntitlementLoss, OnUserDisabled, Slot};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
}

/// The safety valve's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
        let mut ctx = Ctx {
            desired,
            inventory,
            presence,
            index,
            now: opts.now,
            actions: Vec::new(),
            used_cards: BTreeSet::new(),
            new_cards: BTreeMap::new(),
        };
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
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .clamp(1, 8)
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
                        let mut local = Ctx {
                            desired,
                            inventory,
                            presence,
                            index,
                            now: opts.now,
                            actions: Vec::new(),
                            used_cards: BTreeSet::new(),
                            new_cards: BTreeMap::new(),
                        };
                        let mut claimed = Vec::with_capacity(part.len());
                        let mut issues = Vec::new();
                        for ((user, template), cred) in part {
                            let holder = index.holder(user, template);
                            if let Some(card) = holder {
                                claimed.push(card.id.as_str());
                            }
                            if frozen_ref.contains(user.as_str()) || !in_targets(opts, user) {
                                continue;
                            }
                            match holder {
                                None => issues.push(*cred),
                                Some(card) => local.plan_held(cred, card),
                            }
                        }
                        HeldPart {
                            actions: local.actions,
                            claimed,
                            issues,
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
            for cred in part.issues {
                ctx.plan_issue(cred);
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
        for card in &index.crowded {
            ctx.plan_superseded(card, |user| {
                !frozen.contains(user) && in_targets(opts, user)
            });
        }

        let mut actions = ctx.actions;
        actions.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
        actions.dedup();
        holds::hold(&mut actions, inventory);

        // Revoking a superseded certificate takes nobody's credential: not counted.
        let revoked_users: BTreeSet<&str> = actions
            .iter()
            .filter(|a| a.kind == ActionKind::Revoke && a.reason.code != ReasonCode::Superseded)
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
    issues: Vec<&'a DesiredCredential>,
}

/// The newest live certificate of each slot of one card (no allocation: planning visits
/// every card).
#[derive(Default, Clone, Copy)]
struct LiveSlots<'a>([Option<&'a CertRecord>; 4]);

const SLOTS: [Slot; 4] = [
    Slot::PivAuthentication,
    Slot::DigitalSignature,
    Slot::KeyManagement,
    Slot::CardAuthentication,
];

fn slot_index(slot: Slot) -> usize {
    match slot {
        Slot::PivAuthentication => 0,
        Slot::DigitalSignature => 1,
        Slot::KeyManagement => 2,
        Slot::CardAuthentication => 3,
    }
}

impl<'a> LiveSlots<'a> {
    fn get(&self, slot: Slot) -> Option<&'a CertRecord> {
        self.0[slot_index(slot)]
    }

    fn iter(&self) -> impl Iterator<Item = (Slot, &'a CertRecord)> + '_ {
        SLOTS
            .iter()
            .zip(self.0.iter())
            .filter_map(|(s, c)| c.map(|c| (*s, c)))
    }
}

/// FNV-style hashing for the planner's tables: SipHash dominated planning time. The keys are
/// uids, template names and card ids from the inventory; flooding these tables with colliding
/// keys would take write access to the directory and the inventory, where an attacker can do
/// far worse than slow the planner down.
#[derive(Default, Clone, Copy)]
struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            h = (h ^ u64::from_le_bytes(word))
                .wrapping_mul(0x0100_0000_01b3)
                .rotate_left(23);
        }
        self.0 = h;
    }
}

type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FastHasher>>;

/// Lookup tables over the inventory, built once per plan.
struct Index<'a> {
    holders: FastMap<(&'a str, &'a str), &'a CardRecord>,
    /// (user, card), sorted by user: one allocation instead of one per user.
    cards_by_user: Vec<(&'a str, &'a CardRecord)>,
    holders_count: usize,
    certs_by_card: FastMap<&'a str, CardCerts<'a>>,
    /// Cards with more than one live certificate in a slot, in id order (normally none).
    crowded: Vec<&'a str>,
    blanks_by_stock: BTreeMap<&'a str, Vec<&'a CardRecord>>,
    cards_per_stock: HashMap<&'a str, usize>,
}

/// The live certificates of one card: the newest per slot inline, any older live ones (which
/// should not exist) aside.
#[derive(Default)]
struct CardCerts<'a> {
    newest: LiveSlots<'a>,
    older: Vec<&'a CertRecord>,
}

impl<'a> Index<'a> {
    fn new(inv: &'a Inventory) -> Self {
        // The certificate table is independent of the card tables: build it alongside.
        std::thread::scope(|scope| {
            let certs = scope.spawn(|| Self::certs_by_card(inv));
            let mut holders: FastMap<(&str, &str), &CardRecord> =
                FastMap::with_capacity_and_hasher(inv.cards.len(), Default::default());
            let mut blanks_by_stock: BTreeMap<&str, Vec<&CardRecord>> = BTreeMap::new();
            let mut cards_per_stock: HashMap<&str, usize> = HashMap::new();
            let mut cards_by_user: Vec<(&str, &CardRecord)> = Vec::with_capacity(inv.cards.len());
            for card in inv.cards.values() {
                if let Some(u) = card.user.as_deref() {
                    cards_by_user.push((u, card));
                }
                if let Some(stock) = card.stock.as_deref() {
                    if card.status != CardStatus::Retired && card.status != CardStatus::Lost {
                        *cards_per_stock.entry(stock).or_default() += 1;
                    }
                    if card.status == CardStatus::Blank {
                        blanks_by_stock.entry(stock).or_default().push(card);
                    }
                }
                if !card.holds_credential() {
                    continue;
                }
                if let (Some(u), Some(t)) = (card.user.as_deref(), card.template.as_deref()) {
                    // With several live cards for one (user, template), the oldest is the
                    // credential; the others are planned away as no longer entitled.
                    holders
                        .entry((u, t))
                        .and_modify(|prev| {
                            if (card.created_at, &card.id) < (prev.created_at, &prev.id) {
                                *prev = card;
                            }
                        })
                        .or_insert(card);
                }
            }
            // Stable sort: a user's cards stay in id order.
            cards_by_user.sort_by(|a, b| a.0.cmp(b.0));
            let mut holders_count = 0;
            let mut last: Option<&str> = None;
            for (u, c) in &cards_by_user {
                if c.holds_credential() && last != Some(*u) {
                    holders_count += 1;
                    last = Some(*u);
                }
            }
            let (certs_by_card, crowded) = certs
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            Index {
                holders,
                cards_by_user,
                holders_count,
                certs_by_card,
                crowded,
                blanks_by_stock,
                cards_per_stock,
            }
        })
    }

    /// The live certificates by card, and the cards with more than one in a slot (sorted).
    fn certs_by_card(inv: &'a Inventory) -> (FastMap<&'a str, CardCerts<'a>>, Vec<&'a str>) {
        let mut certs_by_card: FastMap<&str, CardCerts<'_>> =
            FastMap::with_capacity_and_hasher(inv.cards.len(), Default::default());
        let mut crowded: Vec<&str> = Vec::new();
        for cert in inv.certs.values().filter(|c| c.is_live()) {
            let entry = certs_by_card.entry(cert.card.as_str()).or_default();
            let slot = &mut entry.newest.0[slot_index(cert.slot)];
            match slot {
                Some(prev) if prev.enrolment_order() >= cert.enrolment_order() => {
                    entry.older.push(cert);
                    crowded.push(cert.card.as_str());
                }
                Some(prev) => {
                    entry.older.push(prev);
                    *slot = Some(cert);
                    crowded.push(cert.card.as_str());
                }
                None => *slot = Some(cert),
            }
        }
        crowded.sort_unstable();
        crowded.dedup();
        (certs_by_card, crowded)
    }

    fn holder(&self, user: &str, template: &str) -> Option<&'a CardRecord> {
        self.holders.get(&(user, template)).copied()
    }

    /// The cards bound to `user`.
    fn cards_of<'s>(&'s self, user: &'s str) -> impl Iterator<Item = &'a CardRecord> + 's {
        let start = self.cards_by_user.partition_point(|(u, _)| *u < user);
        self.cards_by_user[start..]
            .iter()
            .take_while(move |(u, _)| *u == user)
            .map(|(_, c)| *c)
    }

    /// Live certificates of a card by slot, the newest per slot (older live ones should not
    /// exist; they are superseded when the slot is next reissued).
    fn live_by_slot(&self, card: &str) -> LiveSlots<'a> {
        self.certs_by_card
            .get(card)
            .map(|c| LiveSlots(c.newest.0))
            .unwrap_or_default()
    }

    /// Serials of the live certificates of a card the card should keep (the superseded ones
    /// are revoked on their own, see [`CardCerts::superseded`]), with `status` if given.
    fn live_serials(&self, card: &str, status: Option<CertStatus>) -> Vec<String> {
        let Some(certs) = self.certs_by_card.get(card) else {
            return Vec::new();
        };
        let superseded = certs.superseded();
        let mut v: Vec<String> = certs
            .newest
            .iter()
            .map(|(_, c)| c)
            .chain(certs.older.iter().copied())
            .filter(|c| status.is_none_or(|s| c.status == s))
            .filter(|c| !superseded.iter().any(|(o, _)| o.serial == c.serial))
            .map(|c| c.serial.clone())
            .collect();
        v.sort();
        v
    }
}

impl<'a> CardCerts<'a> {
    /// The live certificates this card's slots should no longer hold: in each slot, every one
    /// older than the newest installed one. A renewal or reissue replaced them and the CA has
    /// not confirmed their revocation (it refused, or was unreachable, at that moment). A
    /// newer certificate not yet installed is an interrupted issuance: it is not the slot's
    /// certificate until it is written, and its installation supersedes the rest then.
    /// Each comes with the certificate that replaced it; ordered by slot, then serial.
    fn superseded(&self) -> Vec<(&'a CertRecord, &'a CertRecord)> {
        if self.older.is_empty() {
            return Vec::new();
        }
        let key = CertRecord::enrolment_order;
        let mut out: Vec<(&CertRecord, &CertRecord)> = Vec::new();
        for slot in SLOTS {
            let in_slot = || self.older.iter().copied().filter(move |c| c.slot == slot);
            let current = self.newest.get(slot).filter(|c| c.installed).or_else(|| {
                in_slot()
                    .filter(|c| c.installed)
                    .max_by(|a, b| key(a).cmp(&key(b)))
            });
            let Some(current) = current else {
                continue;
            };
            let start = out.len();
            out.extend(
                in_slot()
                    .filter(|c| key(c) < key(current))
                    .map(|c| (c, current)),
            );
            out[start..].sort_by(|a, b| a.0.serial.cmp(&b.0.serial));
        }
        out
    }
}

struct Ctx<'a> {
    desired: &'a Desired,
    inventory: &'a Inventory,
    presence: &'a Presence,
    index: &'a Index<'a>,
    now: OffsetDateTime,
    actions: Vec<Action>,
    /// Cards handed to a credential by this plan already.
    used_cards: BTreeSet<String>,
    /// New virtual cards this plan creates, per stock.
    new_cards: BTreeMap<String, usize>,
}

impl Ctx<'_> {
    fn present(&self, card: &str) -> bool {
        self.presence.cards.contains(card)
    }

    fn plan_issue(&mut self, cred: &DesiredCredential) {
        if cred.user_disabled {
            return;
        }
        let slots: Vec<Slot> = cred.certificates.keys().copied().collect();
        let (card, stock, waiting, note) = self.choose_card(cred);
        let mut message = format!(
            "{} is entitled to {:?} and holds no credential under it",
            cred.user, cred.template
        );
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
            reason: Reason {
                code: ReasonCode::NotIssued,
                message,
            },
            waiting_for_card: waiting,
            waiting_for_holder: false,
            card_suspect: false,
        });
    }

    /// Picks the card for a new credential: (card id, stock, waiting, note).
    fn choose_card(
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

    fn new_virtual(
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

    fn plan_held(&mut self, cred: &DesiredCredential, card: &CardRecord) {
        if cred.user_disabled {
            match cred.on_user_disabled {
                OnUserDisabled::Suspend => {
                    // From the certificates, not only the card: a hold the CA refused (or an
                    // unhold that went half through) leaves some active on a suspended card.
                    let serials = self.index.live_serials(&card.id, Some(CertStatus::Active));
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
        let held = self
            .index
            .live_serials(&card.id, Some(CertStatus::Suspended));
        if card.status == CardStatus::Suspended || !held.is_empty() {
            let serials = held;
            self.push_card_action(
                ActionKind::Resume,
                card,
                serials,
                Reason {
                    code: ReasonCode::UserEnabled,
                    message: format!("account {} is enabled again", cred.user),
                },
            );
        }
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
    }

    #[allow(clippy::too_many_arguments)]
    fn push_slot_action(
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

    fn push_card_action(
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

    fn plan_revoke(&mut self, card: &CardRecord, reason: Reason) {
        let serials = self.index.live_serials(&card.id, None);
        self.push_card_action(ActionKind::Revoke, card, serials, reason);
        self.push_retire(card, "its credential is revoked in this plan");
    }

    /// Plans the revocation, as superseded, of the live certificates of `card` that its
    /// slots no longer hold ([`CardCerts::superseded`]): one action per holder and template
    /// (normally one), every pass until the CA has confirmed it. It depends on the inventory
    /// only, so an incomplete directory observation does not hold it back. It changes no
    /// slot of the card (`slots` is empty) and does not need the card.
    fn plan_superseded(&mut self, card: &str, wanted: impl Fn(&str) -> bool) {
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

    fn push_retire(&mut self, card: &CardRecord, why: &str) {
        self.actions.push(Action {
            kind: ActionKind::Retire,
            user: card.user.clone().unwrap_or_default(),
            template: card.template.clone(),
            card: Some(card.id.clone()),
            stock: None,
            slot: None,
            slots: Vec::new(),
            serials: Vec::new(),
            reason: Reason {
                code: ReasonCode::CardRevoked,
                message: format!("card {} is wiped and returns to its stock: {why}", card.id),
            },
            waiting_for_card: !self.present(&card.id),
            waiting_for_holder: false,
            card_suspect: false,
        });
    }
}

/// Whether `now` is at or past [`renew_at`]; integer arithmetic with an early exit, since
/// planning asks this of every certificate.
fn renewal_due(cert: &CertRecord, renew_before_secs: u64, now: OffsetDateTime) -> bool {
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

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests;
