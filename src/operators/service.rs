//! The one place operator operations are authorised, audited and put under approval: the
//! control socket, the API and the CLI (when it holds the state directory itself) all call
//! [`Operations`]. Effects that need the machine (a card in a reader, the safety valve of the
//! running controller) go through the [`Host`] the caller provides, which uses the same
//! executors `apply` uses.
//!
//! Every call is audited, allowed or denied, before its answer is given; when the entry cannot
//! be written the call fails (fail closed).

use std::collections::BTreeSet;

use time::OffsetDateTime;

use super::identity::Operator;
use super::requests::{DecisionError, OperatorRequest, RequestState};
use super::roles::{Denied, Grants, RoleGroups, Scope, Subject, grants};
use crate::audit::{AuditLog, NewEntry};
use crate::inventory::{CardRecord, CertRecord, Inventory};
use crate::policy::PolicySet;
use crate::policy::model::{OperationKind, Permission};
use crate::statedir::status::HeldRevocation;
use crate::store::Store;
use crate::views::{CardDetail, CardView, CertView, UserDetail};

/// What an operation touches: the holder, the templates, further holders, and what it needs
/// beyond its target.
struct Touched {
    holder: Option<String>,
    templates: Vec<String>,
    others: Vec<String>,
    parameters: serde_json::Value,
}

/// The template name standing for a credential of no template (never a scope's).
const NO_TEMPLATE: &str = "(none)";

/// Why approving held revocations is a conflict when the valve holds none (`approve` tells
/// it apart from other conflicts by it).
pub const NOTHING_HELD: &str = "the safety valve holds no revocation";

/// The target of a request about the revocations the safety valve holds.
pub const HELD_REVOCATIONS: &str = "held-revocations";

/// What the machine does for an operation (the controller, or a CLI holding the state lock).
pub trait Host: Send + Sync {
    /// Unblocks the PIN of `card` (in a reader this machine reaches) for `actor`; returns what
    /// to record (no secret).
    fn unblock(&self, card: &str, actor: &str) -> Result<serde_json::Value, String>;
    /// The revocations the safety valve holds now.
    fn held_revocations(&self) -> Result<Vec<HeldRevocation>, String>;
    /// Approves these held revocations (they run in the next pass).
    fn approve_held(&self, actor: &str, held: &[HeldRevocation]) -> Result<(), String>;
    /// Releases the current PUK of `card` once to `actor` (offline unblock): with
    /// `to_mailer`, written to a PIN mailer for them and not returned; otherwise returned as
    /// `puk` (which is never logged).
    fn unblock_code(
        &self,
        card: &str,
        actor: &str,
        to_mailer: bool,
    ) -> Result<serde_json::Value, String>;
    /// Wipes a lost card that turned up (in a reader this machine reaches) back to stock.
    fn retire_found_lost(
        &self,
        card: &str,
        actor: &str,
        comment: &str,
    ) -> Result<serde_json::Value, String>;
    /// Recovers archived keys of `user` for `requester` as `parameters` say (`serial`,
    /// `pkcs12` or `toCard`, `notifyOwner`); returns what to record (no secret).
    fn recover_key(
        &self,
        requester: &str,
        user: &str,
        parameters: &serde_json::Value,
    ) -> Result<serde_json::Value, String>;
    /// A recorded fact changed what the next pass plans (an incident): plan soon.
    fn wake(&self) {}
    /// Runs `work` with the cards to itself: no pass of the controller works on a card
    /// meanwhile (a self-service session relaying to a holder's card). Default: at once (a
    /// command that holds the state directory has the cards to itself).
    fn with_cards(&self, work: &mut dyn FnMut()) {
        work()
    }
}

/// Why an operation was not done; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// Not permitted (403).
    #[error(transparent)]
    Denied(#[from] Denied),
    /// A decision on a request that cannot be taken (403 or 409).
    #[error(transparent)]
    Decision(#[from] DecisionError),
    /// Nothing of this id (404).
    #[error("{0}")]
    NotFound(String),
    /// The state does not allow it (409).
    #[error("{0}")]
    Conflict(String),
    /// The input is not valid (422).
    #[error("{0}")]
    Invalid(String),
    /// The operation ran and failed (500, the message says why).
    #[error("{0}")]
    Failed(String),
    /// The audit log cannot be written: nothing was done (500).
    #[error("not done: the audit log cannot be written: {0}")]
    Audit(String),
    /// The store failed (500).
    #[error("the state store failed: {0}")]
    Store(String),
}

impl From<crate::store::StoreError> for OpError {
    fn from(e: crate::store::StoreError) -> Self {
        OpError::Store(e.to_string())
    }
}

/// What an operation under approval gave: done at once, or a request now pending.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<T> {
    /// Done.
    Done(T),
    /// Needs approvals first: this request was made.
    Requested(Box<OperatorRequest>),
}

/// A request as `keyfleet requests list --format json` and `GET /requests` show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestView {
    /// Its id.
    pub id: String,
    /// The operation.
    pub kind: OperationKind,
    /// What it acts on.
    pub target: String,
    /// Who asked.
    pub requester: String,
    /// Where it stands now.
    pub state: RequestState,
    /// Who approved it so far.
    pub approvals: Vec<String>,
    /// Approvals it needs.
    pub required: u32,
    /// Why it was asked.
    pub reason: String,
    /// When it was made (RFC 3339).
    pub created: String,
    /// When it expires unless approved (RFC 3339).
    pub expires: String,
    /// Who denied it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denied_by: Option<String>,
    /// What running it gave, or why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<serde_json::Value>,
}

use crate::views::rfc3339;

impl RequestView {
    /// The view of `r` at `now`.
    pub fn of(r: &OperatorRequest, now: OffsetDateTime) -> RequestView {
        RequestView {
            id: r.id.clone(),
            kind: r.kind,
            target: r.target.clone(),
            requester: r.requester.clone(),
            state: r.state_at(now),
            approvals: r.approvals.iter().map(|a| a.by.clone()).collect(),
            required: r.required,
            reason: r.reason.clone(),
            created: rfc3339(r.created),
            expires: rfc3339(r.expires),
            denied_by: r.denial.as_ref().map(|d| d.by.clone()),
            outcome: r.outcome.clone(),
        }
    }
}

/// `GET /whoami`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct WhoAmI {
    /// The operator's name.
    pub operator: String,
    /// The roles they hold.
    pub roles: Vec<String>,
    /// Their permissions.
    pub permissions: Vec<Permission>,
    /// Permissions limited to templates: permission to templates.
    #[serde(
        rename = "templateScopes",
        skip_serializing_if = "std::collections::BTreeMap::is_empty"
    )]
    pub template_scopes: std::collections::BTreeMap<Permission, Vec<String>>,
}

/// A new request, as `POST /requests` takes it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewRequest {
    /// The operation.
    pub kind: OperationKind,
    /// What it acts on: a card id for `unblock`; `held-revocations` for
    /// `approve-mass-revocation`.
    pub target: String,
    /// Why (recorded; shown to approvers).
    #[serde(default)]
    pub reason: String,
}

/// The operations, for one call: the policy, the store, the audit log, the directory groups
/// roles name, and the host.
pub struct Operations<'a> {
    /// The policy set in force.
    pub policy: &'a PolicySet,
    /// The store.
    pub store: &'a Store,
    /// The audit log.
    pub audit: &'a AuditLog,
    /// Members of the groups roles name.
    pub groups: &'a RoleGroups,
    /// The machine's effects.
    pub host: &'a dyn Host,
    /// The clock.
    pub now: OffsetDateTime,
}

impl Operations<'_> {
    /// The grants of an authenticated operator.
    pub fn grants(&self, operator: &Operator) -> Grants {
        grants(operator, &self.policy.roles, self.groups)
    }

    pub(super) fn log(
        &self,
        actor: &str,
        kind: &str,
        target: &str,
        outcome: &str,
        details: serde_json::Value,
    ) -> Result<(), OpError> {
        self.audit
            .append(
                NewEntry {
                    actor: actor.to_string(),
                    kind: kind.to_string(),
                    target: target.to_string(),
                    outcome: outcome.to_string(),
                    details,
                },
                self.now,
            )
            .map(|_| ())
            .map_err(|e| OpError::Audit(e.to_string()))
    }

    /// Audits a refused call and returns the refusal.
    pub(super) fn refuse<T>(
        &self,
        g: &Grants,
        kind: &str,
        target: &str,
        e: OpError,
    ) -> Result<T, OpError> {
        self.log(
            g.name(),
            kind,
            target,
            outcome_of(&e),
            serde_json::json!({"error": e.to_string()}),
        )?;
        Err(e)
    }

    /// Checks `permission` on `subject`, auditing a refusal.
    pub(super) fn allow(
        &self,
        g: &Grants,
        permission: Permission,
        kind: &str,
        target: &str,
        subject: Option<&Subject<'_>>,
    ) -> Result<(), OpError> {
        match g.check(permission, subject) {
            Ok(()) => Ok(()),
            Err(d) => self.refuse(g, kind, target, d.into()),
        }
    }

    /// A read: checks `permission`, audits the call.
    fn read(
        &self,
        g: &Grants,
        permission: Permission,
        kind: &str,
        target: &str,
    ) -> Result<(), OpError> {
        self.allow(g, permission, kind, target, None)?;
        self.log(g.name(), kind, target, "allowed", serde_json::Value::Null)
    }

    /// `whoami`.
    pub fn whoami(&self, g: &Grants) -> Result<WhoAmI, OpError> {
        self.log(
            g.name(),
            "whoami",
            g.name(),
            "allowed",
            serde_json::json!({"via": g.operator.via}),
        )?;
        let template_scopes = g
            .permissions
            .iter()
            .filter_map(|(p, s)| match s {
                Scope::All => None,
                Scope::Templates(t) => Some((*p, t.iter().cloned().collect())),
            })
            .collect();
        Ok(WhoAmI {
            operator: g.name().to_string(),
            roles: g.roles.clone(),
            permissions: g.permissions.keys().copied().collect(),
            template_scopes,
        })
    }

    /// The inventory, limited to the templates `view-inventory` reaches.
    pub fn inventory(&self, g: &Grants) -> Result<Inventory, OpError> {
        self.read(g, Permission::ViewInventory, "view-inventory", "inventory")?;
        let inv = self.store.inventory()?;
        Ok(match g.scope(Permission::ViewInventory) {
            Some(scope) => super::scoped::inventory(inv, scope),
            None => inv,
        })
    }

    /// One card and its certificates.
    pub fn card(&self, g: &Grants, id: &str) -> Result<CardDetail, OpError> {
        let kind = "view-inventory";
        let Some(card) = self.store.card(id)? else {
            self.allow(g, Permission::ViewInventory, kind, id, None)?;
            return self.refuse(
                g,
                kind,
                id,
                OpError::NotFound(format!("card {id} is not in the inventory")),
            );
        };
        let templates: Vec<String> = card.template.iter().cloned().collect();
        let subject = Subject {
            holder: None,
            templates: &templates,
            others: &[],
        };
        self.allow(g, Permission::ViewInventory, kind, id, Some(&subject))?;
        self.log(g.name(), kind, id, "allowed", serde_json::Value::Null)?;
        let certs = self.store.certs_of_card(id)?;
        let facts = self.store.card_facts(id)?;
        Ok(CardDetail::of(&card, &facts, &certs, self.now))
    }

    /// A user's cards and certificates (those `view-inventory` reaches).
    pub fn user(&self, g: &Grants, uid: &str) -> Result<UserDetail, OpError> {
        self.read(g, Permission::ViewInventory, "view-inventory", uid)?;
        let inv = self.store.inventory()?;
        let scope = g
            .scope(Permission::ViewInventory)
            .cloned()
            .unwrap_or(Scope::All);
        let cards: Vec<&CardRecord> = inv
            .cards
            .values()
            .filter(|c| c.user.as_deref() == Some(uid))
            .filter(|c| match c.template.as_deref() {
                Some(t) => scope.allows(t),
                None => scope == Scope::All,
            })
            .collect();
        let certs: Vec<&CertRecord> = inv
            .certs
            .values()
            .filter(|c| c.user == uid && scope.allows(&c.template))
            .collect();
        if cards.is_empty() && certs.is_empty() {
            return Err(OpError::NotFound(format!(
                "Keyfleet holds nothing for user {uid}"
            )));
        }
        Ok(UserDetail {
            uid: uid.to_string(),
            cards: cards
                .iter()
                .map(|c| CardView::of(c, inv.facts.get(&c.id)))
                .collect(),
            certificates: certs.iter().map(|c| CertView::of(c, self.now)).collect(),
        })
    }

    /// The history of applied actions.
    pub fn history(&self, g: &Grants) -> Result<Vec<crate::store::HistoryEntry>, OpError> {
        self.read(g, Permission::ViewHistory, "view-history", "history")?;
        let mut entries = self.store.history()?;
        if let Some(Scope::Templates(t)) = g.scope(Permission::ViewHistory) {
            entries.retain(|e| e.template.as_ref().is_some_and(|x| t.contains(x)));
        }
        Ok(entries)
    }

    /// Checks a read of the plan or the drift report (`view-inventory`), audited.
    pub fn view(&self, g: &Grants, what: &str) -> Result<(), OpError> {
        self.read(g, Permission::ViewInventory, &format!("view-{what}"), what)
    }

    /// The audit log's entries (filtered by time and actor).
    pub fn audit_log(
        &self,
        g: &Grants,
        since: Option<OffsetDateTime>,
        actor: Option<&str>,
    ) -> Result<Vec<crate::audit::AuditEntry>, OpError> {
        self.read(g, Permission::ViewAuditLog, "view-audit-log", "audit-log")?;
        let entries = self
            .audit
            .entries()
            .map_err(|e| OpError::Failed(e.to_string()))?;
        Ok(entries
            .into_iter()
            .filter(|e| actor.is_none_or(|a| e.actor == a))
            .filter(|e| {
                since.is_none_or(|s| {
                    OffsetDateTime::parse(&e.time, &time::format_description::well_known::Rfc3339)
                        .is_ok_and(|t| t >= s)
                })
            })
            .collect())
    }

    /// What a request of `kind` on `target` is about: the holder and templates, or 404.
    fn subject_of(&self, kind: OperationKind, target: &str) -> Result<Touched, OpError> {
        match kind {
            OperationKind::RecoverKey => {
                let records = crate::archive::records(self.store)
                    .map_err(|e| OpError::Store(e.to_string()))?;
                let mut templates: Vec<String> = records
                    .iter()
                    .filter(|r| r.user == target)
                    .map(|r| r.template.clone())
                    .collect();
                if templates.is_empty() {
                    return Err(OpError::NotFound(format!(
                        "Keyfleet holds no archived key of user {target}"
                    )));
                }
                templates.sort();
                templates.dedup();
                Ok(Touched {
                    holder: Some(target.to_string()),
                    templates,
                    others: Vec::new(),
                    parameters: serde_json::Value::Null,
                })
            }
            OperationKind::Unblock | OperationKind::UnblockCode => {
                let card = self.store.card(target)?.ok_or_else(|| {
                    OpError::NotFound(format!("card {target} is not in the inventory"))
                })?;
                Ok(Touched {
                    holder: card.user,
                    templates: card.template.into_iter().collect(),
                    others: Vec::new(),
                    parameters: serde_json::Value::Null,
                })
            }
            OperationKind::ApproveMassRevocation => {
                if target != HELD_REVOCATIONS {
                    return Err(OpError::Invalid(format!(
                        "the target of approve-mass-revocation is `{HELD_REVOCATIONS}`, not {target:?}"
                    )));
                }
                let held = self.host.held_revocations().map_err(OpError::Failed)?;
                if held.is_empty() {
                    return Err(OpError::Conflict(NOTHING_HELD.into()));
                }
                let ids: Vec<&str> = held.iter().map(|h| h.id.as_str()).collect();
                // Every template and holder the revocations touch: a scoped approver must
                // cover them all, and nobody approves the revocation of their own credential.
                let mut templates: Vec<String> = held
                    .iter()
                    .map(|h| h.template.clone().unwrap_or_else(|| NO_TEMPLATE.into()))
                    .collect();
                templates.sort();
                templates.dedup();
                let mut others: Vec<String> = held.iter().map(|h| h.user.clone()).collect();
                others.sort();
                others.dedup();
                Ok(Touched {
                    holder: None,
                    templates,
                    others,
                    parameters: serde_json::json!({"held": ids}),
                })
            }
        }
    }

    /// Unblocks a card's PIN (`unblock`), or makes a request when `unblock` needs approval.
    pub fn unblock(
        &self,
        g: &Grants,
        card: &str,
        reason: &str,
    ) -> Result<Outcome<serde_json::Value>, OpError> {
        self.operate(g, OperationKind::Unblock, card, reason)
    }

    /// Approves the revocations the safety valve holds (`approve-mass-revocation`), or makes a
    /// request when that needs approval.
    pub fn approve_held(
        &self,
        g: &Grants,
        reason: &str,
    ) -> Result<Outcome<serde_json::Value>, OpError> {
        self.operate(
            g,
            OperationKind::ApproveMassRevocation,
            HELD_REVOCATIONS,
            reason,
        )
    }

    /// `POST /requests`: the same as calling the operation (a request when it needs approval).
    pub fn create(
        &self,
        g: &Grants,
        new: &NewRequest,
    ) -> Result<Outcome<serde_json::Value>, OpError> {
        self.operate(g, new.kind, &new.target, &new.reason)
    }

    pub(super) fn operate(
        &self,
        g: &Grants,
        kind: OperationKind,
        target: &str,
        reason: &str,
    ) -> Result<Outcome<serde_json::Value>, OpError> {
        self.operate_with(g, kind, target, reason, serde_json::Value::Null)
    }

    /// [`Self::operate`] with the operation's own parameters (`extra`, an object merged into
    /// what the target gives), recorded in the request and given to its run.
    pub(super) fn operate_with(
        &self,
        g: &Grants,
        kind: OperationKind,
        target: &str,
        reason: &str,
        extra: serde_json::Value,
    ) -> Result<Outcome<serde_json::Value>, OpError> {
        let name = kind.as_str();
        if kind == OperationKind::RecoverKey && extra.is_null() {
            self.allow(g, kind.permission(), name, target, None)?;
            return self.refuse(
                g,
                name,
                target,
                OpError::Invalid(
                    "recover-key needs a destination: use `keyfleet keys recover` or POST \
                     /api/v1/keys/recover"
                        .into(),
                ),
            );
        }
        let Touched {
            holder,
            templates,
            others,
            mut parameters,
        } = match self.subject_of(kind, target) {
            Ok(s) => s,
            Err(e) => {
                // Unknown targets are not disclosed to those who may not act at all.
                self.allow(g, kind.permission(), name, target, None)?;
                return self.refuse(g, name, target, e);
            }
        };
        if let Some(extra) = extra.as_object() {
            if !parameters.is_object() {
                parameters = serde_json::json!({});
            }
            if let Some(p) = parameters.as_object_mut() {
                p.extend(extra.clone());
            }
        }
        let subject = Subject {
            holder: holder.as_deref(),
            templates: &templates,
            others: &others,
        };
        self.allow(g, kind.permission(), name, target, Some(&subject))?;
        match kind.required_approvals(&self.policy.settings.spec.approvals) {
            None => {
                let done = self.run(
                    g.name(),
                    kind,
                    target,
                    &parameters,
                    serde_json::json!({"reason": reason}),
                )?;
                Ok(Outcome::Done(done))
            }
            Some(required) => {
                let parameters = match kind {
                    OperationKind::UnblockCode => serde_json::json!({"deliver": "pin-mailer"}),
                    _ => parameters,
                };
                let number = self.store.next_request_number()?;
                let timeout = time::Duration::seconds(
                    i64::try_from(self.policy.settings.spec.approval_timeout.as_secs())
                        .unwrap_or(i64::MAX),
                );
                let request = OperatorRequest {
                    id: format!("REQ-{number:04}"),
                    kind,
                    target: target.to_string(),
                    requester: g.name().to_string(),
                    reason: reason.to_string(),
                    created: self.now,
                    expires: self.now.checked_add(timeout).unwrap_or(self.now),
                    required,
                    state: RequestState::Pending,
                    approvals: Vec::new(),
                    denial: None,
                    subject_user: holder,
                    subject_templates: templates,
                    subject_others: others,
                    parameters,
                    started: None,
                    finished: None,
                    outcome: None,
                };
                self.log(
                    g.name(),
                    "request",
                    &request.id,
                    "pending",
                    serde_json::json!({"kind": name, "target": target, "reason": reason,
                        "required": required, "parameters": request.parameters}),
                )?;
                let bytes = encode(&request)?;
                if !self.store.insert_request(&request.id, &bytes)? {
                    return Err(OpError::Conflict(format!("request {} exists", request.id)));
                }
                Ok(Outcome::Requested(Box::new(request)))
            }
        }
    }

    /// Runs an operation (allowed and, if needed, approved) between its audit entries.
    pub(super) fn run(
        &self,
        actor: &str,
        kind: OperationKind,
        target: &str,
        parameters: &serde_json::Value,
        details: serde_json::Value,
    ) -> Result<serde_json::Value, OpError> {
        let name = kind.as_str();
        let mut details = details;
        if let (Some(d), Some(held)) = (details.as_object_mut(), parameters.get("held")) {
            d.insert("actions".into(), held.clone());
        }
        // A recovery's destination and `notifyOwner` are in every entry of its run (for a
        // mail gateway to pick up).
        if let (OperationKind::RecoverKey, Some(d), Some(p)) =
            (kind, details.as_object_mut(), parameters.as_object())
        {
            d.extend(p.clone());
        }
        self.log(actor, name, target, "started", details.clone())?;
        let result = match kind {
            OperationKind::Unblock => self.host.unblock(target, actor),
            // Under approval the PUK goes to the requester's PIN mailer, never into the
            // request's record (which approvers read).
            OperationKind::UnblockCode => self.host.unblock_code(
                target,
                actor,
                parameters.get("deliver").and_then(|d| d.as_str()) == Some("pin-mailer"),
            ),
            OperationKind::RecoverKey => self.host.recover_key(actor, target, parameters),
            OperationKind::ApproveMassRevocation => self.approve_held_now(actor, parameters),
        };
        let mut end = details;
        match &result {
            Ok(v) => {
                if let (Some(end), Some(more)) = (end.as_object_mut(), v.as_object()) {
                    // A released PUK is the caller's alone: never in the audit log.
                    end.extend(
                        more.iter()
                            .filter(|(k, _)| k.as_str() != "puk")
                            .map(|(k, v)| (k.clone(), v.clone())),
                    );
                }
                self.log(actor, name, target, "done", end)?;
            }
            Err(e) => {
                end["error"] = e.clone().into();
                self.log(actor, name, target, "failed", end)?;
            }
        }
        result.map_err(OpError::Failed)
    }

    /// Approves the held revocations: those a request named (still held), or all held now.
    fn approve_held_now(
        &self,
        actor: &str,
        parameters: &serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let held = self.host.held_revocations()?;
        let held: Vec<HeldRevocation> = match parameters.get("held").and_then(|h| h.as_array()) {
            Some(ids) => {
                let ids: BTreeSet<&str> = ids.iter().filter_map(|i| i.as_str()).collect();
                held.into_iter()
                    .filter(|h| ids.contains(h.id.as_str()))
                    .collect()
            }
            None => held,
        };
        self.host.approve_held(actor, &held)?;
        Ok(serde_json::json!({
            "actions": held.iter().map(|h| h.id.clone()).collect::<Vec<_>>(),
            "serials": held.iter().flat_map(|h| h.serials.clone()).collect::<Vec<_>>(),
            "revocations": held,
        }))
    }
}

pub(super) fn encode(r: &OperatorRequest) -> Result<Vec<u8>, OpError> {
    serde_json::to_vec(r).map_err(|e| OpError::Store(e.to_string()))
}

/// The audit outcome of a refusal.
fn outcome_of(e: &OpError) -> &'static str {
    match e {
        OpError::Denied(_) | OpError::Decision(DecisionError::Denied(_)) => "denied",
        OpError::Decision(
            DecisionError::OwnRequest { .. } | DecisionError::AboutThemselves { .. },
        ) => "denied",
        OpError::NotFound(_) => "not-found",
        OpError::Invalid(_) => "invalid",
        _ => "refused",
    }
}

/// Audits a refused identity (`login`, outcome `unauthorized`); an error when the entry cannot
/// be written.
pub fn log_unauthorized(
    audit: &AuditLog,
    actor: &str,
    via: &str,
    e: &super::identity::IdentityError,
) -> Result<(), String> {
    audit
        .append(
            NewEntry {
                actor: actor.to_string(),
                kind: "login".into(),
                target: via.to_string(),
                outcome: "unauthorized".into(),
                details: serde_json::json!({"error": e.to_string()}),
            },
            OffsetDateTime::now_utc(),
        )
        .map(|_| ())
        .map_err(|e| format!("not done: the audit log cannot be written: {e}"))
}
