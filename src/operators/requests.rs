//! Requests and approvals: an operation listed in `Settings.spec.approvals` becomes a request
//! that needs that many approvals from distinct holders of `approve` (within their template
//! scope), none of them the requester or the user the request is about. One denial ends it; an
//! approved request runs once; an expired one never.
//!
//! This module is the pure state machine; the store keeps the records and the service runs
//! approved requests.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::roles::{Denied, Grants, Subject};
use crate::policy::model::{OperationKind, Permission};

/// Where a request stands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum RequestState {
    /// Waiting for approvals.
    Pending,
    /// Approved; runs once (at once, or in the controller's next pass).
    Approved,
    /// Denied (by an approver, a request manager or its requester).
    Denied,
    /// Not approved in time; never runs.
    Expired,
    /// Ran and succeeded.
    Done,
    /// Ran and failed, or was interrupted while running (it is not run again).
    Failed,
}

impl RequestState {
    /// The state's name.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Approved => "approved",
            RequestState::Denied => "denied",
            RequestState::Expired => "expired",
            RequestState::Done => "done",
            RequestState::Failed => "failed",
        }
    }
}

/// One operator's approval or denial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// The operator.
    pub by: String,
    /// When (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub at: OffsetDateTime,
    /// What they wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A request for an operation under approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperatorRequest {
    /// Its id.
    pub id: String,
    /// The operation.
    pub kind: OperationKind,
    /// What it acts on (a card id; `held-revocations`).
    pub target: String,
    /// Who asked.
    pub requester: String,
    /// Why.
    pub reason: String,
    /// When it was made (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub created: OffsetDateTime,
    /// When it expires unless approved (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub expires: OffsetDateTime,
    /// Approvals it needs.
    pub required: u32,
    /// Where it stands.
    pub state: RequestState,
    /// The approvals so far.
    pub approvals: Vec<Decision>,
    /// The denial that ended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denial: Option<Decision>,
    /// The user the target belongs to (they may not approve it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_user: Option<String>,
    /// The templates of the credentials it touches (approvers need `approve` for each).
    #[serde(default)]
    pub subject_templates: Vec<String>,
    /// Further users whose credentials it touches (they may not approve it either).
    #[serde(default)]
    pub subject_others: Vec<String>,
    /// What the operation needs beyond its target (e.g. the held revocation ids approved).
    #[serde(default)]
    pub parameters: serde_json::Value,
    /// When it started running (RFC 3339).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[schemars(with = "Option<String>")]
    pub started: Option<OffsetDateTime>,
    /// When it finished running (RFC 3339).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[schemars(with = "Option<String>")]
    pub finished: Option<OffsetDateTime>,
    /// What running it gave (done) or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<serde_json::Value>,
}

/// A decision on a request that cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionError {
    /// The request is not pending (409).
    #[error("request {id} is {state}, not pending")]
    NotPending {
        /// The request.
        id: String,
        /// Its state.
        state: &'static str,
    },
    /// The approver is the requester (403).
    #[error("{who} made request {id} and cannot approve it")]
    OwnRequest {
        /// The request.
        id: String,
        /// The operator.
        who: String,
    },
    /// The approver is the user the request is about (403).
    #[error("request {id} is about {who}, who cannot approve it")]
    AboutThemselves {
        /// The request.
        id: String,
        /// The operator.
        who: String,
    },
    /// The approver approved already (409).
    #[error("{who} has already approved request {id}")]
    AlreadyApproved {
        /// The request.
        id: String,
        /// The operator.
        who: String,
    },
    /// Not permitted (403).
    #[error(transparent)]
    Denied(#[from] Denied),
}

impl OperatorRequest {
    /// The state at `now`: a pending request past its expiry is expired.
    pub fn state_at(&self, now: OffsetDateTime) -> RequestState {
        if self.state == RequestState::Pending && now >= self.expires {
            RequestState::Expired
        } else {
            self.state
        }
    }

    fn subject(&self) -> Subject<'_> {
        Subject {
            holder: self.subject_user.as_deref(),
            templates: &self.subject_templates,
            others: &self.subject_others,
        }
    }

    fn pending(&self, now: OffsetDateTime) -> Result<(), DecisionError> {
        match self.state_at(now) {
            RequestState::Pending => Ok(()),
            state => Err(DecisionError::NotPending {
                id: self.id.clone(),
                state: state.as_str(),
            }),
        }
    }

    /// Records `approver`'s approval; the request becomes approved with its last one.
    pub fn approve(
        &mut self,
        approver: &Grants,
        comment: Option<String>,
        now: OffsetDateTime,
    ) -> Result<(), DecisionError> {
        self.pending(now)?;
        let who = approver.name();
        if who == self.requester {
            return Err(DecisionError::OwnRequest {
                id: self.id.clone(),
                who: who.to_string(),
            });
        }
        if self.subject_user.as_deref() == Some(who) || self.subject_others.iter().any(|o| o == who)
        {
            return Err(DecisionError::AboutThemselves {
                id: self.id.clone(),
                who: who.to_string(),
            });
        }
        approver.check(self.kind.approver_permission(), Some(&self.subject()))?;
        if self.approvals.iter().any(|a| a.by == who) {
            return Err(DecisionError::AlreadyApproved {
                id: self.id.clone(),
                who: who.to_string(),
            });
        }
        self.approvals.push(Decision {
            by: who.to_string(),
            at: now,
            comment,
        });
        if self.approvals.len() as u64 >= u64::from(self.required) {
            self.state = RequestState::Approved;
        }
        Ok(())
    }

    /// Records a denial, which ends the request: by a holder of `approve` in scope (not the
    /// user it is about), a holder of `manage-requests`, or the requester withdrawing it.
    pub fn deny(
        &mut self,
        by: &Grants,
        comment: Option<String>,
        now: OffsetDateTime,
    ) -> Result<(), DecisionError> {
        self.pending(now)?;
        let who = by.name();
        let allowed = who == self.requester
            || by.has(Permission::ManageRequests)
            || by
                .check(self.kind.approver_permission(), Some(&self.subject()))
                .is_ok();
        if !allowed {
            by.check(self.kind.approver_permission(), Some(&self.subject()))?;
        }
        self.denial = Some(Decision {
            by: who.to_string(),
            at: now,
            comment,
        });
        self.state = RequestState::Denied;
        Ok(())
    }

    /// Whether `grants` may see this request: its requester, anyone who may approve or deny it,
    /// and holders of `manage-requests`.
    pub fn visible_to(&self, grants: &Grants) -> bool {
        grants.name() == self.requester
            || grants.has(Permission::ManageRequests)
            || grants
                .check(self.kind.approver_permission(), Some(&self.subject()))
                .is_ok()
    }
}
