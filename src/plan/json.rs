//! The plan as `keyfleet plan --format json` prints it (and the API's `GET /plan` serves).

use serde::Serialize;

use super::{Action, Plan};

/// An action as `plan --format json` prints it.
#[derive(Serialize)]
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

/// The plan as JSON.
pub fn plan_json(plan: &Plan) -> serde_json::Value {
    serde_json::json!({
        "complete": plan.complete,
        "actions": plan.actions.iter().map(JsonAction::from).collect::<Vec<_>>(),
        "safetyValve": plan.safety_valve,
        "withheldRevocations": plan.withheld_revocations,
        "conflicts": plan.conflicts,
        "errors": plan.errors,
    })
}
