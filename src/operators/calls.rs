//! Operator calls by name: what the control socket (and the CLI holding the state directory)
//! runs for an [`OperatorCall`], with the answers in the API's JSON shapes and the API's error
//! codes.

use serde_json::Value;

use super::requests::DecisionError;
use super::roles::Grants;
use super::service::{NewRequest, OpError, Operations, Outcome, RequestView};
use crate::statedir::control::OperatorCall;

/// The answer of an operation that may need approval: done (with its result), or pending
/// (a request was made, with the request).
#[derive(Debug, Clone, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct OperationOutcome {
    /// `done` or `pending`.
    pub state: String,
    /// What the operation gave, when done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The request made, when pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestView>,
}

impl OperationOutcome {
    /// The outcome of an operation at `now`.
    pub fn of(outcome: Outcome<Value>, now: time::OffsetDateTime) -> OperationOutcome {
        match outcome {
            Outcome::Done(result) => OperationOutcome {
                state: "done".into(),
                result: Some(result),
                request: None,
            },
            Outcome::Requested(r) => OperationOutcome {
                state: "pending".into(),
                result: None,
                request: Some(RequestView::of(&r, now)),
            },
        }
    }
}

/// [`OperationOutcome`] as JSON.
pub fn outcome_json(outcome: Outcome<Value>, now: time::OffsetDateTime) -> Value {
    json(&OperationOutcome::of(outcome, now))
}

/// Whether `call` may make or decide a request (reads do not).
pub fn changes_requests(call: &OperatorCall) -> bool {
    !matches!(
        call,
        OperatorCall::Whoami
            | OperatorCall::ListRequests
            | OperatorCall::ShowRequest { .. }
            | OperatorCall::ShowCard { .. }
            | OperatorCall::ListKeys { .. }
    )
}

/// Runs `call` as `g`.
pub fn dispatch(ops: &Operations<'_>, g: &Grants, call: &OperatorCall) -> Result<Value, OpError> {
    let now = ops.now;
    Ok(match call {
        OperatorCall::Whoami => json(&ops.whoami(g)?),
        OperatorCall::Unblock { card, reason } => outcome_json(ops.unblock(g, card, reason)?, now),
        OperatorCall::ApproveHeld { reason } => outcome_json(ops.approve_held(g, reason)?, now),
        OperatorCall::ShowCard { card } => json(&ops.card(g, card)?),
        OperatorCall::ListKeys { user } => json(&ops.keys(g, user.as_deref())?),
        OperatorCall::RecoverKey {
            user,
            parameters,
            reason,
        } => outcome_json(ops.recover_key(g, user, parameters, reason)?, now),
        OperatorCall::ReportIncident {
            card,
            kind,
            comment,
        } => ops.report_incident(g, card, *kind, comment)?,
        OperatorCall::Found { card, comment } => ops.found(g, card, comment)?,
        OperatorCall::RetireFoundLost { card, comment } => {
            ops.retire_found_lost(g, card, comment)?
        }
        OperatorCall::UnblockCode { card, reason } => {
            outcome_json(ops.unblock_code(g, card, reason)?, now)
        }
        OperatorCall::ListRequests => {
            let views: Vec<RequestView> = ops
                .requests(g)?
                .iter()
                .map(|r| RequestView::of(r, now))
                .collect();
            json(&views)
        }
        OperatorCall::ShowRequest { id } => json(&RequestView::of(&ops.request(g, id)?, now)),
        OperatorCall::CreateRequest {
            kind,
            target,
            reason,
        } => {
            let new = NewRequest {
                kind: *kind,
                target: target.clone(),
                reason: reason.clone(),
            };
            outcome_json(ops.create(g, &new)?, now)
        }
        OperatorCall::ApproveRequest { id, comment } => {
            json(&RequestView::of(&ops.approve(g, id, comment.clone())?, now))
        }
        OperatorCall::DenyRequest { id, comment } => {
            json(&RequestView::of(&ops.deny(g, id, comment.clone())?, now))
        }
    })
}

fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The API's error code and HTTP status of a refusal.
pub fn error_code(e: &OpError) -> (&'static str, u16) {
    match e {
        OpError::Denied(_)
        | OpError::Decision(
            DecisionError::Denied(_)
            | DecisionError::OwnRequest { .. }
            | DecisionError::AboutThemselves { .. },
        ) => ("forbidden", 403),
        OpError::Decision(
            DecisionError::NotPending { .. } | DecisionError::AlreadyApproved { .. },
        )
        | OpError::Conflict(_) => ("conflict", 409),
        OpError::NotFound(_) => ("not-found", 404),
        OpError::Invalid(_) => ("invalid", 422),
        OpError::Failed(_) => ("failed", 500),
        OpError::Audit(_) => ("audit-log", 500),
        OpError::Store(_) => ("store", 500),
    }
}
