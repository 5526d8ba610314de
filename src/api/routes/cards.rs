//! The card incident routes: report, found, retire a found lost card, and the offline unblock
//! code. Authorised, audited and recorded by [`crate::operators::incidents`].

use std::sync::Arc;

use axum::extract::{Path, State};
use serde::Deserialize;

use super::ApiState;
use super::{Addr, ApiError, CommentBody, Peer, ReasonBody, Reply, change, ok, outcome};
use crate::api::error::JsonBody;
use crate::inventory::Incident;
use crate::operators::service::OpError;
use crate::policy::model::IncidentKind;

/// `{"kind": "lost|damaged|forgotten", "comment": "..."}`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IncidentBody {
    /// What happened.
    pub kind: IncidentKind,
    /// What the reporter says (recorded, shown in the card's history).
    #[serde(default)]
    pub comment: Option<String>,
}

/// `{"foundLost": true, "comment": "..."}`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetireBody {
    /// Must be true: the card was reported lost and turned up.
    pub found_lost: bool,
    /// Recorded in the card's history.
    #[serde(default)]
    pub comment: Option<String>,
}

/// What reporting or ending an incident recorded.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct IncidentOutcome {
    /// The card.
    pub card: String,
    /// `report lost`, `report damaged`, `report forgotten` or `found`.
    pub event: String,
    /// The card's status now.
    pub status: String,
    /// The incident in force, or null.
    pub incident: Option<Incident>,
}

/// What a retire did.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct RetireOutcome {
    /// The card.
    pub card: String,
    /// `blank`.
    pub status: String,
    /// The stock it is back in.
    pub stock: Option<String>,
}

pub(super) async fn report(
    State(s): State<Arc<ApiState>>,
    peer: Peer,
    addr: Addr,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<IncidentBody>,
) -> Result<Reply, ApiError> {
    change(s, peer, addr, move |ops, g, _| {
        let comment = body.comment.unwrap_or_default();
        Ok(ok(&ops.report_incident(g, &id, body.kind, &comment)?))
    })
    .await
}

pub(super) async fn found(
    State(s): State<Arc<ApiState>>,
    peer: Peer,
    addr: Addr,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<CommentBody>,
) -> Result<Reply, ApiError> {
    change(s, peer, addr, move |ops, g, _| {
        let comment = body.comment.unwrap_or_default();
        Ok(ok(&ops.found(g, &id, &comment)?))
    })
    .await
}

pub(super) async fn retire(
    State(s): State<Arc<ApiState>>,
    peer: Peer,
    addr: Addr,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RetireBody>,
) -> Result<Reply, ApiError> {
    change(s, peer, addr, move |ops, g, _| {
        if !body.found_lost {
            return Err(OpError::Invalid(
                "only a lost card that turned up is retired by hand: send foundLost: true".into(),
            ));
        }
        let comment = body.comment.unwrap_or_default();
        Ok(ok(&ops.retire_found_lost(g, &id, &comment)?))
    })
    .await
}

pub(super) async fn unblock_code(
    State(s): State<Arc<ApiState>>,
    peer: Peer,
    addr: Addr,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ReasonBody>,
) -> Result<Reply, ApiError> {
    change(s, peer, addr, move |ops, g, _| {
        Ok(outcome(ops.unblock_code(g, &id, &body.reason)?, ops.now))
    })
    .await
}
