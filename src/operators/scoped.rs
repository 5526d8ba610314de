//! What an operator's `view-inventory` scope lets them see: the inventory, the last plan, the
//! drift findings and the controller's lists (pending, backoff, held), cut to the credentials
//! of the templates in scope. One definition, used by the operator service (`GET /inventory`),
//! the API (`GET /plan`, `GET /audit`) and the dashboard, so they never disagree.
//!
//! Pure: values in, values out. A credential of no template (a blank card) is outside every
//! template scope, as in [`super::roles::Grants::check`].

use std::collections::{BTreeMap, BTreeSet};

use super::roles::Scope;
use crate::drift::Finding;
use crate::inventory::{CardRecord, CertRecord, Inventory};
use crate::plan::Plan;
use crate::statedir::status::{BackoffView, HeldRevocation, PendingAction};

/// `inv` with only the cards and certificates of templates in `scope` (and those cards'
/// facts).
pub fn inventory(mut inv: Inventory, scope: &Scope) -> Inventory {
    if let Scope::Templates(_) = scope {
        inv.cards.retain(|_, c| card_in(c, scope));
        inv.certs.retain(|_, c| cert_in(c, scope));
        let cards: BTreeSet<String> = inv.cards.keys().cloned().collect();
        inv.facts.retain(|k, _| cards.contains(k));
    }
    inv
}

/// Whether `scope` reaches a card: every card for an unscoped operator, else a card of a
/// template in scope (a blank card has none).
pub fn card_in(card: &CardRecord, scope: &Scope) -> bool {
    match scope {
        Scope::All => true,
        Scope::Templates(t) => card.template.as_ref().is_some_and(|x| t.contains(x)),
    }
}

/// Whether `scope` reaches a certificate: one of a template in scope.
pub fn cert_in(cert: &CertRecord, scope: &Scope) -> bool {
    scope.allows(&cert.template)
}

/// `plan` with only the actions on credentials of templates in `scope`.
pub fn plan(mut plan: Plan, scope: &Scope) -> Plan {
    if let Scope::Templates(t) = scope {
        plan.actions
            .retain(|a| a.template.as_ref().is_some_and(|x| t.contains(x)));
    }
    plan
}

/// The drift findings about credentials of templates in `scope`: a finding's template is its
/// certificate's, else its card's, as `inventory` (the whole inventory, or one already cut to
/// the scope) records them. A finding about neither (e.g. the count of revocations withheld
/// for an incomplete observation) is kept only for an unscoped operator.
pub fn findings(mut findings: Vec<Finding>, inventory: &Inventory, scope: &Scope) -> Vec<Finding> {
    if let Scope::Templates(t) = scope {
        let template_of = |f: &Finding| {
            f.serial
                .as_ref()
                .and_then(|s| inventory.certs.get(s))
                .map(|c| c.template.clone())
                .or_else(|| {
                    f.card
                        .as_ref()
                        .and_then(|c| inventory.cards.get(c))
                        .and_then(|c| c.template.clone())
                })
        };
        findings.retain(|f| template_of(f).is_some_and(|x| t.contains(&x)));
    }
    findings
}

/// The templates of a plan's actions, by action id (what the controller's pending and backoff
/// lists name).
fn action_templates(plan: Option<&Plan>) -> BTreeMap<String, Option<&str>> {
    plan.map(|p| {
        p.actions
            .iter()
            .map(|a| (a.id(), a.template.as_deref()))
            .collect()
    })
    .unwrap_or_default()
}

/// The controller's lists of actions (pending, in backoff, held), cut to a scope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionLists {
    /// Actions waiting for a card, the holder or an operator.
    pub pending: Vec<PendingAction>,
    /// Failed actions in backoff.
    pub backoff: Vec<BackoffView>,
    /// Revocations the safety valve holds.
    pub held: Vec<HeldRevocation>,
}

impl ActionLists {
    /// The lists within `scope`. Held revocations carry their template; pending actions and
    /// actions in backoff are found by id in `plan` (the last plan) for theirs: one the plan
    /// no longer has (or with no plan yet) is shown only to an unscoped operator.
    pub fn within(self, plan: Option<&Plan>, scope: &Scope) -> ActionLists {
        let Scope::Templates(t) = scope else {
            return self;
        };
        let templates = action_templates(plan);
        let allowed = |id: &str| {
            templates
                .get(id)
                .copied()
                .flatten()
                .is_some_and(|x| t.contains(x))
        };
        ActionLists {
            pending: self
                .pending
                .into_iter()
                .filter(|p| allowed(&p.id))
                .collect(),
            backoff: self
                .backoff
                .into_iter()
                .filter(|b| allowed(&b.id))
                .collect(),
            held: self
                .held
                .into_iter()
                .filter(|h| h.template.as_ref().is_some_and(|x| t.contains(x)))
                .collect(),
        }
    }
}
