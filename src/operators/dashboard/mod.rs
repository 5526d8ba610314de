//! The operator console's fleet dashboard, as figures: cards by status, certificates expiring
//! per week for the next 26 weeks, the controller's last pass, pending and failed actions,
//! held revocations, open requests and drift.
//!
//! Pure: the caller hands in what the controller already holds (the inventory, the last plan,
//! the controller status, the drift findings, the requests the operator may see, the clock and
//! the operator's `view-inventory` scope) and gets a [`Dashboard`] value; nothing here reads a
//! store, a socket or the clock. The figures are the same code as the rest of Keyfleet:
//! a card's status is [`crate::inventory::shown_status`] (as `keyfleet inventory` shows it),
//! the controller's figures are the [`ControllerStatus`] `keyfleet status` prints, drift is
//! [`crate::drift::findings`] (as `keyfleet audit`), and the scope is cut by
//! [`super::scoped`] (as the API's inventory, plan and audit). The expiry chart is [`chart`].

use std::collections::BTreeMap;

use serde::Serialize;
use time::{Date, Duration, OffsetDateTime};

use super::requests::RequestState;
use super::roles::Scope;
use super::scoped::{self, ActionLists};
use super::service::RequestView;
use crate::drift::{DriftReport, Finding};
use crate::inventory::{Inventory, shown_status};
use crate::plan::Plan;
use crate::statedir::status::{
    BackoffView, ControllerStatus, HeldRevocation, PassSummary, PendingAction,
};

pub mod chart;

#[cfg(test)]
mod tests;

/// How many weeks ahead the expiry figures reach.
pub const EXPIRY_WEEKS: usize = 26;

/// What the dashboard is computed from: values the controller holds.
#[derive(Debug, Clone, Copy)]
pub struct DashboardInputs<'a> {
    /// The whole inventory (cut to `scope` here).
    pub inventory: &'a Inventory,
    /// The controller's last plan (None before its first pass planned).
    pub plan: Option<&'a Plan>,
    /// The controller's status (None while it starts).
    pub status: Option<&'a ControllerStatus>,
    /// The drift findings of `plan` ([`crate::drift::findings`], as `keyfleet audit` and
    /// `GET /api/v1/audit` compute them; cut to `scope` here). None when they could not be
    /// computed (no plan yet).
    pub findings: Option<&'a [Finding]>,
    /// The requests the operator may see (`Operations::requests`), as viewed at `now`.
    pub requests: &'a [RequestView],
    /// Now.
    pub now: OffsetDateTime,
    /// The operator's `view-inventory` scope.
    pub scope: &'a Scope,
}

/// The fleet dashboard.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Dashboard {
    /// When the figures were computed (RFC 3339).
    pub at: String,
    /// The templates the figures cover (null: every template).
    pub templates: Option<Vec<String>>,
    /// Cards by the status `keyfleet inventory` shows.
    pub cards: CardFigures,
    /// Live certificates by when they expire.
    pub expiry: ExpiryFigures,
    /// The controller's figures (null while it starts and has no status).
    pub controller: Option<ControllerFigures>,
    /// Requests waiting for approvals.
    pub requests: OpenRequests,
    /// The drift report within the scope (null before the first plan).
    pub drift: Option<DriftReport>,
}

/// Cards by status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CardFigures {
    /// Every card in scope.
    pub total: u32,
    /// The statuses present, each with its count, in life-cycle order (see [`STATUS_ORDER`]).
    pub by_status: Vec<StatusCount>,
}

/// How many cards show one status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusCount {
    /// The status (`active`, `temporary`, `forgotten`, `lost`, …).
    pub status: String,
    /// How many cards show it.
    pub count: u32,
}

/// The order in which statuses are listed: cards in use first, then those with an incident,
/// then those out of use. A status not listed here (none today) comes last.
pub const STATUS_ORDER: [&str; 10] = [
    "active",
    "temporary",
    "suspended",
    "forgotten",
    "suspect",
    "lost",
    "damaged",
    "revoked",
    "blank",
    "retired",
];

/// Live certificates (active or on hold, as `keyfleet audit`'s `expiring` finding counts
/// them) by when they expire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpiryFigures {
    /// The day week 0 starts (the date of `at`), `YYYY-MM-DD`.
    #[serde(serialize_with = "iso_date")]
    pub first_week: Date,
    /// Certificates expiring in each of the next [`EXPIRY_WEEKS`] weeks: week `k` holds
    /// those whose notAfter is at least `7k` days and less than `7(k+1)` days from now.
    pub weeks: Vec<u32>,
    /// Live certificates already past notAfter (`expired` in `keyfleet inventory`).
    pub expired: u32,
    /// Live certificates expiring after the last week.
    pub later: u32,
}

fn iso_date<S: serde::Serializer>(d: &Date, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!(
        "{:04}-{:02}-{:02}",
        d.year(),
        u8::from(d.month()),
        d.day()
    ))
}

/// What the controller reports, within the scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ControllerFigures {
    /// True once its first pass completed.
    pub ready: bool,
    /// The last pass.
    pub pass: PassFigures,
    /// Actions waiting for a card, the holder or an operator.
    pub pending: Vec<PendingAction>,
    /// Failed actions in backoff (and permanent failures).
    pub backoff: Vec<BackoffView>,
    /// Revocations the safety valve holds until they are approved.
    pub held: Vec<HeldRevocation>,
}

/// The last pass as the operator may see it: its counts and errors span every template, so
/// an operator whose `view-inventory` is limited to some templates sees only when it ran (the
/// control socket's status, likewise, needs `view-inventory` for every template).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "view",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum PassFigures {
    /// Everything `keyfleet status` shows of it (an unscoped operator).
    Fleet {
        /// The last pass, as `keyfleet status` shows it (null: none finished yet).
        last_pass: Option<Box<PassSummary>>,
        /// The error of the last policy reload, while the last valid policy stays in force.
        policy_error: Option<String>,
    },
    /// When it ran and how long it took (an operator with a template scope).
    Scoped {
        /// The last pass (null: none finished yet).
        last_pass: Option<PassTiming>,
    },
}

/// When a pass ran and how long it took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PassTiming {
    /// Its number, from 1.
    pub number: u64,
    /// When it started (RFC 3339).
    pub started_at: Option<String>,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
}

/// Requests waiting for approvals.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenRequests {
    /// How many.
    pub count: u32,
    /// Them, oldest first.
    pub list: Vec<RequestView>,
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Dashboard {
    /// The dashboard of `inputs`.
    pub fn of(inputs: DashboardInputs<'_>) -> Dashboard {
        let DashboardInputs {
            inventory,
            plan,
            status,
            findings,
            requests,
            now,
            scope,
        } = inputs;
        Dashboard {
            at: crate::views::rfc3339(now),
            templates: match scope {
                Scope::All => None,
                Scope::Templates(t) => Some(t.iter().cloned().collect()),
            },
            cards: card_figures(inventory, scope),
            expiry: expiry_figures(inventory, scope, now),
            controller: status.map(|s| controller_figures(s, plan, scope)),
            requests: open_requests(requests),
            drift: plan.zip(findings).map(|(plan, findings)| {
                let findings = scoped::findings(findings.to_vec(), inventory, scope);
                DriftReport {
                    clean: findings.is_empty(),
                    complete: plan.complete,
                    findings,
                }
            }),
        }
    }
}

fn status_rank(status: &str) -> usize {
    STATUS_ORDER
        .iter()
        .position(|s| *s == status)
        .unwrap_or(STATUS_ORDER.len())
}

/// Cards in scope by their shown status.
pub fn card_figures(inventory: &Inventory, scope: &Scope) -> CardFigures {
    let mut by: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut total = 0;
    for card in inventory
        .cards
        .values()
        .filter(|c| scoped::card_in(c, scope))
    {
        total += 1;
        *by.entry(shown_status(card, inventory.facts.get(&card.id)))
            .or_default() += 1;
    }
    let mut by_status: Vec<StatusCount> = by
        .into_iter()
        .map(|(status, n)| StatusCount {
            status: status.to_string(),
            count: count(n),
        })
        .collect();
    by_status.sort_by_key(|s| (status_rank(&s.status), s.status.clone()));
    CardFigures {
        total: count(total),
        by_status,
    }
}

/// Live certificates in scope by the week they expire in, from `now`.
pub fn expiry_figures(inventory: &Inventory, scope: &Scope, now: OffsetDateTime) -> ExpiryFigures {
    let week = Duration::days(7).whole_seconds();
    let mut out = ExpiryFigures {
        first_week: now.date(),
        weeks: vec![0; EXPIRY_WEEKS],
        expired: 0,
        later: 0,
    };
    for cert in inventory
        .certs
        .values()
        .filter(|c| c.is_live() && scoped::cert_in(c, scope))
    {
        // Expired as `keyfleet inventory` says it: at notAfter.
        let left = (cert.not_after - now).whole_seconds();
        if left <= 0 {
            out.expired += 1;
            continue;
        }
        match usize::try_from(left / week)
            .ok()
            .and_then(|k| out.weeks.get_mut(k))
        {
            Some(n) => *n += 1,
            None => out.later += 1,
        }
    }
    out
}

fn controller_figures(
    status: &ControllerStatus,
    plan: Option<&Plan>,
    scope: &Scope,
) -> ControllerFigures {
    let lists = ActionLists {
        pending: status.pending.clone(),
        backoff: status.backoff.clone(),
        held: status.held.clone(),
    }
    .within(plan, scope);
    let pass = match scope {
        Scope::All => PassFigures::Fleet {
            last_pass: status.last_pass.clone().map(Box::new),
            policy_error: status.policy_error.clone(),
        },
        Scope::Templates(_) => PassFigures::Scoped {
            last_pass: status.last_pass.as_ref().map(|p| PassTiming {
                number: p.number,
                started_at: p.started_at.map(crate::views::rfc3339),
                duration_ms: p.duration_ms,
            }),
        },
    };
    ControllerFigures {
        ready: status.ready,
        pass,
        pending: lists.pending,
        backoff: lists.backoff,
        held: lists.held,
    }
}

/// The requests among `requests` that wait for approvals (as the controller's
/// `open_requests` metric counts them).
pub fn open_requests(requests: &[RequestView]) -> OpenRequests {
    let list: Vec<RequestView> = requests
        .iter()
        .filter(|r| r.state == RequestState::Pending)
        .cloned()
        .collect();
    OpenRequests {
        count: count(list.len()),
        list,
    }
}
