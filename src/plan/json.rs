//! The plan as `keyfleet plan --format json` prints it (and the API's `GET /plan` serves).

use serde::Serialize;

use super::{Action, Plan};

/// An action as `plan --format json` prints it.
#[derive(Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JsonAction<'a> {
    kind: &'a str,
    user: &'a str,
    template: Option<&'a str>,
    card: Option<&'a str>,
    stock: Option<&'a str>,
    slot: Option<&'a str>,
    slots: Vec<&'a str>,
    serials: &'a [String],
    reason: super::ReasonCode,
    message: &'a str,
    waiting_for_card: bool,
    waiting_for_holder: bool,
    card_suspect: bool,
}

impl<'a> From<&'a Action> for JsonAction<'a> {
    fn from(a: &'a Action) -> Self {
        JsonAction {
            kind: a.kind.as_str(),
            user: &a.user,
            template: a.template.as_deref(),
            card: a.card.as_deref(),
            stock: a.stock.as_deref(),
            slot: a.slot.map(|s| s.hex()),
            slots: a.slots.iter().map(|s| s.hex()).collect(),
            serials: &a.serials,
            reason: a.reason.code,
            message: &a.reason.message,
            waiting_for_card: a.waiting_for_card,
            waiting_for_holder: a.waiting_for_holder,
            card_suspect: a.card_suspect,
        }
    }
}

/// The plan as `plan --format json` prints it.
#[derive(Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanJson<'a> {
    /// Whether every directory was observed completely (otherwise no revocation is planned).
    pub complete: bool,
    /// The actions, in order.
    pub actions: Vec<JsonAction<'a>>,
    /// The safety valve.
    pub safety_valve: &'a super::SafetyReport,
    /// Revocations not planned because the observation was incomplete.
    pub withheld_revocations: usize,
    /// Users with conflicting entitlements, left alone.
    pub conflicts: &'a [crate::desired::Conflict],
    /// Users whose credentials could not be expanded, left alone.
    pub errors: &'a [crate::desired::ExpansionError],
}

impl<'a> PlanJson<'a> {
    /// The view of `plan`.
    pub fn of(plan: &'a Plan) -> PlanJson<'a> {
        PlanJson {
            complete: plan.complete,
            actions: plan.actions.iter().map(JsonAction::from).collect(),
            safety_valve: &plan.safety_valve,
            withheld_revocations: plan.withheld_revocations,
            conflicts: &plan.conflicts,
            errors: &plan.errors,
        }
    }
}

/// The plan as JSON.
pub fn plan_json(plan: &Plan) -> serde_json::Value {
    serde_json::to_value(PlanJson::of(plan)).unwrap_or_default()
}
