//! Operator requests after they are made: listing them, approving and denying them (each
//! decision audited and saved by compare-and-swap), running an approved one once as its
//! requester, and the controller's upkeep (expiry, recovery of interrupted runs).

use super::requests::{DecisionError, OperatorRequest, RequestState};
use super::roles::{Denied, Grants};
use super::service::{OpError, Operations, encode};
use crate::policy::model::Permission;

impl Operations<'_> {
    fn load(&self, id: &str) -> Result<(OperatorRequest, Vec<u8>), OpError> {
        let bytes = self
            .store
            .request_record(id)?
            .ok_or_else(|| OpError::NotFound(format!("no request {id}")))?;
        let request = serde_json::from_slice(&bytes)
            .map_err(|e| OpError::Store(format!("request {id} does not decode: {e}")))?;
        Ok((request, bytes))
    }

    /// Saves a decision already logged; when another call changed the request meanwhile,
    /// logs that this one was not recorded, and answers 409.
    fn save_or_note(
        &self,
        actor: &str,
        kind: &str,
        request: &OperatorRequest,
        old: &[u8],
    ) -> Result<(), OpError> {
        if self
            .store
            .update_request(&request.id, old, &encode(request)?)?
        {
            return Ok(());
        }
        self.log(
            actor,
            kind,
            &request.id,
            "not-recorded",
            serde_json::json!({"error": "the request changed meanwhile; the decision above does not count"}),
        )?;
        Err(OpError::Conflict(format!(
            "request {} changed while this decision was taken; try again",
            request.id
        )))
    }

    fn save(&self, request: &OperatorRequest, old: &[u8]) -> Result<(), OpError> {
        if !self
            .store
            .update_request(&request.id, old, &encode(request)?)?
        {
            return Err(OpError::Conflict(format!(
                "request {} changed while this decision was taken; try again",
                request.id
            )));
        }
        Ok(())
    }

    /// Whether a request exists is not told to those who could see none but their own: a
    /// missing one is, to them, one they may not see.
    fn hide_missing(&self, g: &Grants, e: OpError) -> OpError {
        match e {
            OpError::NotFound(_)
                if !g.has(Permission::Approve) && !g.has(Permission::ManageRequests) =>
            {
                Denied::Missing {
                    operator: g.name().to_string(),
                    permission: Permission::Approve,
                }
                .into()
            }
            e => e,
        }
    }

    /// The requests `g` may see, oldest first.
    pub fn requests(&self, g: &Grants) -> Result<Vec<OperatorRequest>, OpError> {
        self.log(
            g.name(),
            "list-requests",
            "requests",
            "allowed",
            serde_json::Value::Null,
        )?;
        let mut out: Vec<OperatorRequest> = Vec::new();
        for (id, bytes) in self.store.request_records()? {
            let r: OperatorRequest = serde_json::from_slice(&bytes)
                .map_err(|e| OpError::Store(format!("request {id} does not decode: {e}")))?;
            if r.visible_to(g) {
                out.push(r);
            }
        }
        out.sort_by_key(|r| (r.created, r.id.clone()));
        Ok(out)
    }

    /// One request.
    pub fn request(&self, g: &Grants, id: &str) -> Result<OperatorRequest, OpError> {
        let (r, _) = match self.load(id) {
            Ok(v) => v,
            Err(e) => return self.refuse(g, "show-request", id, self.hide_missing(g, e)),
        };
        if !r.visible_to(g) {
            return self.refuse(
                g,
                "show-request",
                id,
                Denied::Missing {
                    operator: g.name().to_string(),
                    permission: Permission::Approve,
                }
                .into(),
            );
        }
        self.log(
            g.name(),
            "show-request",
            id,
            "allowed",
            serde_json::Value::Null,
        )?;
        Ok(r)
    }

    /// Approves request `id`; with its last approval it runs, once.
    pub fn approve(
        &self,
        g: &Grants,
        id: &str,
        comment: Option<String>,
    ) -> Result<OperatorRequest, OpError> {
        let r = self.decide(g, id, "approve-request", "approved", comment, |r, c| {
            r.approve(g, c, self.now)
        })?;
        if r.state == RequestState::Approved {
            self.run_request(id)?;
            return Ok(self.load(id)?.0);
        }
        Ok(r)
    }

    /// Denies request `id`, which ends it.
    pub fn deny(
        &self,
        g: &Grants,
        id: &str,
        comment: Option<String>,
    ) -> Result<OperatorRequest, OpError> {
        self.decide(g, id, "deny-request", "denied", comment, |r, c| {
            r.deny(g, c, self.now)
        })
    }

    /// Takes one decision on request `id` (audited, refusals too) and saves it.
    fn decide(
        &self,
        g: &Grants,
        id: &str,
        kind: &str,
        outcome: &str,
        comment: Option<String>,
        take: impl FnOnce(&mut OperatorRequest, Option<String>) -> Result<(), DecisionError>,
    ) -> Result<OperatorRequest, OpError> {
        let (mut r, old) = match self.load(id) {
            Ok(v) => v,
            Err(e) => return self.refuse(g, kind, id, self.hide_missing(g, e)),
        };
        if let Err(e) = take(&mut r, comment.clone()) {
            return self.refuse(g, kind, id, e.into());
        }
        self.log(
            g.name(),
            kind,
            id,
            outcome,
            serde_json::json!({"kind": r.kind, "target": r.target, "approvals": r.approvals.len(),
                "required": r.required, "comment": comment}),
        )?;
        self.save_or_note(g.name(), kind, &r, &old)?;
        Ok(r)
    }

    /// Runs an approved request that has not started: marks it started first (so it never
    /// runs twice), runs it as its requester, records done or failed.
    fn run_request(&self, id: &str) -> Result<(), OpError> {
        let (mut r, old) = self.load(id)?;
        if r.state != RequestState::Approved || r.started.is_some() {
            return Ok(());
        }
        r.started = Some(self.now);
        if !self.store.update_request(&r.id, &old, &encode(&r)?)? {
            // Another call (an approval, the controller's upkeep) took it first: it runs there.
            return Ok(());
        }
        let started = encode(&r)?;
        let approvers: Vec<&str> = r.approvals.iter().map(|a| a.by.as_str()).collect();
        let details =
            serde_json::json!({"request": r.id, "reason": r.reason, "approvedBy": approvers});
        let result = self.run(&r.requester, r.kind, &r.target, &r.parameters, details);
        r.finished = Some(self.now);
        match result {
            Ok(v) => {
                r.state = RequestState::Done;
                r.outcome = Some(v);
            }
            Err(e) => {
                r.state = RequestState::Failed;
                r.outcome = Some(serde_json::json!({"error": e.to_string()}));
            }
        }
        self.save(&r, &started)
    }

    /// The number of pending requests (not expired).
    pub fn open_requests(&self) -> Result<usize, OpError> {
        let mut n = 0;
        for (_, bytes) in self.store.request_records()? {
            if let Ok(r) = serde_json::from_slice::<OperatorRequest>(&bytes)
                && r.state_at(self.now) == RequestState::Pending
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Level-triggered upkeep, every pass: approved requests that never started run; pending
    /// requests past their expiry are recorded expired. With `recover_interrupted` (only when
    /// nothing else can be running one: at the controller's start, or in a command holding the
    /// state lock) requests that started and never finished are failed, never run twice.
    /// A record another call changed meanwhile is left for the next upkeep. Returns the number
    /// still pending.
    pub fn upkeep(&self, recover_interrupted: bool) -> Result<usize, OpError> {
        let mut pending = 0;
        for (id, bytes) in self.store.request_records()? {
            let Ok(mut r) = serde_json::from_slice::<OperatorRequest>(&bytes) else {
                continue;
            };
            let (outcome, details) = match (r.state_at(self.now), r.started, r.finished) {
                (RequestState::Expired, _, _) if r.state == RequestState::Pending => {
                    r.state = RequestState::Expired;
                    (
                        "expired",
                        serde_json::json!({"kind": r.kind, "target": r.target}),
                    )
                }
                (RequestState::Pending, _, _) => {
                    pending += 1;
                    continue;
                }
                (RequestState::Approved, None, _) => {
                    self.run_request(&id)?;
                    continue;
                }
                (RequestState::Approved, Some(_), None) if recover_interrupted => {
                    let error = "interrupted while running; not run again";
                    r.state = RequestState::Failed;
                    r.outcome = Some(serde_json::json!({"error": error}));
                    ("failed", serde_json::json!({"error": error}))
                }
                _ => continue,
            };
            self.log("keyfleet", "request", &id, outcome, details)?;
            if !self.store.update_request(&id, &bytes, &encode(&r)?)? {
                // Another call changed it meanwhile: the entry above does not count, and the
                // next upkeep looks at it again.
                self.log(
                    "keyfleet",
                    "request",
                    &id,
                    "not-recorded",
                    serde_json::json!({"error": "the request changed meanwhile"}),
                )?;
            }
        }
        Ok(pending)
    }
}
