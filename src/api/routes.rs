//! The operator API's routes under `/api/v1`: each call is identified (the client certificate:
//! an operator card Keyfleet issued, or an external identity), rate-limited per identity, then
//! authorised, audited and done by the operator service ([`crate::operators::service`]), the
//! same the control socket uses. [`ROUTES`] documents them; the OpenAPI document is generated
//! from it and the Rust types.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;

use super::backend::{Backend, CallContext};
use super::error::{self, ApiError, JsonBody};
use super::openapi::{RouteDoc, schema};
use super::ratelimit::RateLimiter;
use super::server::PeerCertificates;
use super::tls::ClientTrust;
use crate::audit::AuditEntry;
use crate::drift::DriftReport;
use crate::operators::calls::{self, OperationOutcome};
use crate::operators::identity::{self, PresentedCertificate};
use crate::operators::roles::Grants;
use crate::operators::service::{
    NewRequest, OpError, Operations, RequestView, WhoAmI, log_unauthorized,
};
use crate::plan::json::PlanJson;
use crate::policy::model::Permission;
use crate::store::HistoryEntry;
use crate::views::{CardDetail, InventoryView, UserDetail};

pub mod cards;
pub mod keys;
pub mod self_service;

/// What the routes share.
pub struct ApiState {
    /// The controller.
    pub backend: Arc<dyn Backend>,
    /// The CAs client certificates may come from.
    pub trust: Arc<ClientTrust>,
    /// Calls per identity.
    pub limiter: RateLimiter,
}

/// A JSON reply with its status (200, or 202 when a request was made).
type Reply = (StatusCode, Json<Value>);

/// `{"reason": "..."}`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    /// Why (recorded in the audit log; shown to approvers).
    #[serde(default)]
    pub reason: String,
}

/// `{"comment": "..."}`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentBody {
    /// Recorded with the decision.
    #[serde(default)]
    pub comment: Option<String>,
}

/// The OpenAPI document (`GET /api/v1/openapi.json`, `schemas/openapi.json`).
pub fn openapi() -> Value {
    super::openapi::document(&ROUTES, env!("CARGO_PKG_VERSION"))
}

const AUTH: &[u16] = &[401, 403, 429, 500];
const AUTH_404: &[u16] = &[401, 403, 404, 429, 500];
const OPERATE: &[u16] = &[401, 403, 404, 409, 422, 429, 500];

/// Every route, as documented.
pub static ROUTES: [RouteDoc; 26] = [
    RouteDoc {
        method: Method::GET,
        path: "/api/v1/whoami",
        summary: "Who the caller is: operator, roles, permissions",
        permission: None,
        request: None,
        response: schema::<WhoAmI>,
        errors: &[401, 429, 500],
    },
    RouteDoc {
        method: Method::GET,
        path: "/api/v1/inventory",
        summary: "Cards and certificates (within the caller's template scope)",
        permission: Some(Permission::ViewInventory),
        request: None,
        response: schema::<InventoryView>,
        errors: AUTH,
    },
    RouteDoc {
        method: Method::GET,
        path: "/api/v1/cards/{id}",
        summary: "One card and its certificates",
        permission: Some(Permission::ViewInventory),
        request: None,
        response: schema::<CardDetail>,
        errors: AUTH_404,
    },
    RouteDoc {
        method: Method::GET,
        path: "/api/v1/users/{uid}",
        summary: "One user's cards and certificates",
        permission: Some(Permission::ViewInventory),
        request: None,
        response: schema::<UserDetail>,
        errors: AUTH_404,
    },
    RouteDoc {
        method: Method::GET,
        path: "/api/v1/plan",
        summary: "The controller's last plan (actions within the caller's template scope)",
        permission: Some(Permission::ViewInventory),
        request: None,
        response: schema::<PlanJson<'static>>,
        errors: &[401, 403, 409, 429, 500],
    },
    RouteDoc {
        method: Method::GET,
        path: "/api/v1/audit",
        summary: "The drift report, within the caller's template scope (query: expiringDays, default 30)",
        permission: Some(Permission::ViewInventory),
        request: None,
        response: schema::<DriftReport>,
        errors: &[401, 403, 409, 422, 429, 500],
    },
    RouteDoc {
        method: Method::GET,
        path: "/api/v1/history",
        summary: "Every applied action",
        permission: Some(Permission::ViewHistory),
        request: None,
        response: schema::<Vec<HistoryEntry>>,
        errors: AUTH,
    },
    RouteDoc {
        method: Method::POST,
        path: "/api/v1/cards/{id}/unblock",
        summary: "Unblock the card's PIN with its stored PUK (202 and a request when unblock needs approval)",
        permission: Some(Permission::Unblock),
        request: Some(schema::<ReasonBody>),
        response: schema::<OperationOutcome>,
        errors: OPERATE,
    },
    RouteDoc {
        method: Method::POST,
        path: "/api/v1/cards/{id}/incidents",
        summary: "Report a card incident: lost, damaged or forgotten (409 with the card's state when the transition table does not allow it)",
        permission: Some(Permission::ReportIncident),
        request: Some(schema::<cards::IncidentBody>),
        response: schema::<cards::IncidentOutcome>,
        errors: OPERATE,
    },
    RouteDoc {
        method: Method::POST,
        path: "/api/v1/cards/{id}/found",
        summary: "A forgotten card was found: its hold is released and its temporary card ends",
        permission: Some(Permission::ResolveIncident),
        request: Some(schema::<CommentBody>),
        response: schema::<cards::IncidentOutcome>,
        errors: OPERATE,
    },
    RouteDoc {
        method: Method::POST,
        path: "/api/v1/cards/{id}/retire",
        summary: "Wipe a lost card that turned up back to stock (foundLost: true; the card must be in a reader the controller reaches)",
        permission: Some(Permission::ResolveIncident),
        request: Some(schema::<cards::RetireBody>),
        response: schema::<cards::RetireOutcome>,
        errors: OPERATE,
    },
    RouteDoc {
        method: Method::POST,
        path: "/api/v1/cards/{id}/unblock-code",
        summary: "Release the card's current PUK once for an offline unblock (202 and a request when unblock-code needs approval; then the code goes to the requester's file in the PIN-mailer folder)",
        permission: Some(Permission::Unblock),
        request: Some(schema::<ReasonBody>),
        response: schema::<OperationOutcome>,
        errors: OPERATE,
    },
    RouteDoc {
        method: Method::GET,
        path: "/api/v1/keys",
        summary: "Archived encryption keys, never key material (query: user); recover-key or view-inventory, within its template scope",
        permission: Some(Permission::RecoverKey),
        request: None,
        response: schema::<Vec<crate::archive::ArchivedKey>>,
        errors: &[401, 403, 422, 429, 500],
    },
    RouteDoc {
        method: Method::POST,
        path: "/api/v1/keys/recover",
        summary: "Ask for the recovery of a user's archived keys as a PKCS#12 file: always 202 and a recover-key request (approvals.recover-key approvers, 2 by default, holders of recover-key, neither the requester nor the owner); the one-time password goes to the requester's file in the PIN-mailer folder",
        permission: Some(Permission::RecoverKey),
        request: Some(schema::<keys::RecoverBody>),
        response: schema::<OperationOutcome>,
        errors: OPERATE,
    },
    RouteDoc {
        method: Method::POST,
        path: "/api/v1/held-revocations/approve",
        summary: "Approve the revocations the safety valve holds (202 and a request when that needs approval)",
        permission: Some(Permission::ApproveMassRevocation),
        request: Some(schema::<ReasonBody>),
        response: schema::<OperationOutcome>,
        errors: OPERATE,
    },
    RouteDoc {
        method: Method::GET,
        path: "/api/v1/requests",
        summary: "The requests the caller may see (theirs, those they may approve; all with manage-requests)",
        permission: None,
        request: None,
        response: schema::<Vec<RequestView>>,
        errors: AUTH,
    },
    RouteDoc {
        method: Method::POST,
        path: "/api/v1/requests",
        summary: "Ask for an operation (done at once when it needs no approval)",
        permission: None,
        request: Some(schema::<NewRequest>),
        response: schema::<OperationOutcome>,
        errors: OPERATE,
    },
    RouteDoc {
        method: Method::GET,
        path: "/api/v1/requests/{id}",
        summary: "One request",
        permission: None,
        request: None,
        response: schema::<RequestView>,
        errors: AUTH_404,
    },
    RouteDoc {
        method: Method::POST,
        path: "/api/v1/requests/{id}/approve",
        summary: "Approve a request (not your own, not one about you); with its last approval it runs",
        permission: Some(Permission::Approve),
        request: Some(schema::<CommentBody>),
        response: schema::<RequestView>,
        errors: OPERATE,
    },
    RouteDoc {
        method: Method::POST,
        path: "/api/v1/requests/{id}/deny",
        summary: "Deny a request, which ends it",
        permission: Some(Permission::Approve),
        request: Some(schema::<CommentBody>),
        response: schema::<RequestView>,
        errors: OPERATE,
    },
    RouteDoc {
        method: Method::GET,
        path: "/api/v1/audit-log",
        summary: "Audit-log entries (query: since (RFC 3339), actor)",
        permission: Some(Permission::ViewAuditLog),
        request: None,
        response: schema::<Vec<AuditEntry>>,
        errors: &[401, 403, 422, 429, 500],
    },
    RouteDoc {
        method: Method::GET,
        path: "/api/v1/self-service",
        summary: "The holder (identified by a certificate Keyfleet issued onto their card), the card, and what waits for them on it in the last plan",
        permission: None,
        request: None,
        response: schema::<crate::selfservice::protocol::SelfServiceView>,
        errors: &[401, 409, 429, 500],
    },
    RouteDoc {
        method: Method::POST,
        path: "/api/v1/self-service/sessions",
        summary: "Run what waits for the holder on their card (keyfleet self-service): the executors run on the server, the card answers through the workstation; the first command for the card, or the outcome when nothing waits",
        permission: None,
        request: Some(schema::<self_service::EmptyBody>),
        response: schema::<crate::selfservice::protocol::SessionStep>,
        errors: &[401, 409, 422, 429, 500, 504],
    },
    RouteDoc {
        method: Method::POST,
        path: "/api/v1/self-service/sessions/{id}",
        summary: "The card's answer to the session's last command: the next command, or how every action ended",
        permission: None,
        request: Some(schema::<crate::selfservice::protocol::CardResponse>),
        response: schema::<crate::selfservice::protocol::SessionStep>,
        errors: &[401, 404, 409, 422, 500, 504],
    },
    RouteDoc {
        method: Method::POST,
        path: "/api/v1/self-service/pin-changed",
        summary: "The holder changed the card's PIN on their workstation: the PIN Keyfleet holds is no longer the card's",
        permission: None,
        request: Some(schema::<self_service::EmptyBody>),
        response: schema::<crate::selfservice::protocol::FactsChanged>,
        errors: &[401, 409, 422, 429, 500],
    },
    RouteDoc {
        method: Method::POST,
        path: "/api/v1/self-service/unblocked",
        summary: "The holder reset the blocked PIN with an unblock code on their workstation: the PUK is spent (rotate-puk at the next contact) and the PIN is the holder's",
        permission: None,
        request: Some(schema::<self_service::EmptyBody>),
        response: schema::<crate::selfservice::protocol::FactsChanged>,
        errors: &[401, 409, 422, 429, 500],
    },
];

/// The router of every route in [`ROUTES`], plus `GET /api/v1/openapi.json` (no identity
/// needed: it describes, it does nothing).
pub fn router(state: Arc<ApiState>) -> Router {
    let holders = self_service::router(state.clone());
    Router::new()
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/inventory", get(inventory))
        .route("/api/v1/cards/{id}", get(card))
        .route("/api/v1/users/{uid}", get(user))
        .route("/api/v1/plan", get(plan))
        .route("/api/v1/audit", get(drift))
        .route("/api/v1/history", get(history))
        .route("/api/v1/cards/{id}/unblock", post(unblock))
        .route("/api/v1/cards/{id}/incidents", post(cards::report))
        .route("/api/v1/cards/{id}/found", post(cards::found))
        .route("/api/v1/cards/{id}/retire", post(cards::retire))
        .route("/api/v1/cards/{id}/unblock-code", post(cards::unblock_code))
        .route("/api/v1/keys", get(keys::list))
        .route("/api/v1/keys/recover", post(keys::recover))
        .route("/api/v1/held-revocations/approve", post(approve_held))
        .route("/api/v1/requests", get(list_requests).post(create_request))
        .route("/api/v1/requests/{id}", get(show_request))
        .route("/api/v1/requests/{id}/approve", post(approve_request))
        .route("/api/v1/requests/{id}/deny", post(deny_request))
        .route("/api/v1/audit-log", get(audit_log))
        .route("/api/v1/openapi.json", get(|| async { Json(openapi()) }))
        .fallback(error::fallback)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state)
        .merge(holders)
}

type Peer = Option<Extension<PeerCertificates>>;
type Addr = Option<Extension<std::net::SocketAddr>>;

fn ok<T: serde::Serialize>(v: &T) -> Reply {
    (
        StatusCode::OK,
        Json(serde_json::to_value(v).unwrap_or(Value::Null)),
    )
}

fn outcome(o: crate::operators::service::Outcome<Value>, now: OffsetDateTime) -> Reply {
    let o = OperationOutcome::of(o, now);
    let status = if o.state == "pending" {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    (status, Json(serde_json::to_value(o).unwrap_or(Value::Null)))
}

fn refused(e: &OpError) -> ApiError {
    let (code, status) = calls::error_code(e);
    ApiError::of(status, code, e.to_string())
}

/// Identifies the caller, checks the rate, runs `f` with the operations and the caller's
/// grants; counts the call.
async fn call<F>(s: Arc<ApiState>, peer: Peer, addr: Addr, f: F) -> Result<Reply, ApiError>
where
    F: FnOnce(&Operations<'_>, &Grants, &CallContext) -> Result<Reply, OpError> + Send + 'static,
{
    call_with(s, peer, addr, false, f).await
}

/// [`call`] for an operation that may make or decide a request: the open-requests gauge is
/// brought up to date after it (reads leave the requests alone and do not scan them).
async fn change<F>(s: Arc<ApiState>, peer: Peer, addr: Addr, f: F) -> Result<Reply, ApiError>
where
    F: FnOnce(&Operations<'_>, &Grants, &CallContext) -> Result<Reply, OpError> + Send + 'static,
{
    call_with(s, peer, addr, true, f).await
}

async fn call_with<F>(
    s: Arc<ApiState>,
    peer: Peer,
    addr: Addr,
    changes: bool,
    f: F,
) -> Result<Reply, ApiError>
where
    F: FnOnce(&Operations<'_>, &Grants, &CallContext) -> Result<Reply, OpError> + Send + 'static,
{
    let state = s.clone();
    let result = tokio::task::spawn_blocking(move || {
        let s = state;
        let ctx = s.backend.context().ok_or_else(|| {
            ApiError::of(503, "unavailable", "the controller is starting; try again")
        })?;
        let now = OffsetDateTime::now_utc();
        let certs = peer.map(|Extension(p)| p.0).unwrap_or_default();
        let peer_key = addr.map_or_else(
            || "peer:unknown".to_string(),
            |Extension(a)| format!("peer:{}", a.ip()),
        );
        let operator = match identify(&s.trust, &ctx, &certs, now) {
            Ok(o) => o,
            Err(e) => {
                // Unknown callers are audited while under the per-address rate; beyond it
                // they get 429 and nothing is written (a flood cannot fill the log).
                if let Err(wait) = s.limiter.check(&peer_key, Instant::now()) {
                    return Err(ApiError::too_many_requests(wait));
                }
                log_unauthorized(&ctx.audit, &peer_key, "api", &e)
                    .map_err(|m| ApiError::of(500, "audit-log", m))?;
                return Err(ApiError::unauthorized(e.to_string()));
            }
        };
        let ops = Operations {
            policy: &ctx.env.policy,
            store: &ctx.store,
            audit: &ctx.audit,
            groups: &ctx.groups,
            host: &*ctx.host,
            now,
        };
        let grants = ops.grants(&operator);
        if let Err(wait) = s.limiter.check(grants.name(), Instant::now()) {
            ctx.audit
                .append(
                    crate::audit::NewEntry {
                        actor: grants.name().to_string(),
                        kind: "api-call".into(),
                        target: "api".into(),
                        outcome: "rate-limited".into(),
                        details: Value::Null,
                    },
                    now,
                )
                .map_err(|e| {
                    ApiError::of(
                        500,
                        "audit-log",
                        format!("the audit log cannot be written: {e}"),
                    )
                })?;
            return Err(ApiError::too_many_requests(wait));
        }
        let reply = f(&ops, &grants, &ctx).map_err(|e| refused(&e));
        if changes && let Ok(open) = ops.open_requests() {
            s.backend.open_requests(open);
        }
        reply
    })
    .await
    .unwrap_or_else(|e| {
        Err(ApiError::internal(format!(
            "the call failed internally: {e}"
        )))
    });
    s.backend.count_call(match &result {
        Ok(_) => "ok",
        Err(e) => e.code,
    });
    result
}

fn identify(
    trust: &ClientTrust,
    ctx: &CallContext,
    certs: &[rustls::pki_types::CertificateDer<'static>],
    now: OffsetDateTime,
) -> Result<identity::Operator, identity::IdentityError> {
    let Some(leaf) = certs.first() else {
        return Err(identity::IdentityError::NoCertificate);
    };
    let intermediates = &certs[1..];
    let unix = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(now.unix_timestamp()).unwrap_or(0),
    ));
    let chains = |name: &str| trust.external_chains(name, leaf, intermediates, unix);
    let presented = PresentedCertificate {
        der: leaf.as_ref(),
        chains_to_external: &chains,
    };
    let store = &ctx.store;
    let lookup = |serial: &str| store.cert(serial).map_err(|e| e.to_string());
    identity::from_certificate(
        &presented,
        &ctx.env.policy.settings.spec.operators,
        &lookup,
        now,
    )
}

async fn whoami(State(s): State<Arc<ApiState>>, peer: Peer, addr: Addr) -> Result<Reply, ApiError> {
    call(s, peer, addr, |ops, g, _| Ok(ok(&ops.whoami(g)?))).await
}

async fn inventory(
    State(s): State<Arc<ApiState>>,
    peer: Peer,
    addr: Addr,
) -> Result<Reply, ApiError> {
    call(s, peer, addr, |ops, g, _| {
        Ok(ok(&InventoryView::of(&ops.inventory(g)?, ops.now)))
    })
    .await
}

async fn card(
    State(s): State<Arc<ApiState>>,
    peer: Peer,
    addr: Addr,
    Path(id): Path<String>,
) -> Result<Reply, ApiError> {
    call(s, peer, addr, move |ops, g, _| Ok(ok(&ops.card(g, &id)?))).await
}

async fn user(
    State(s): State<Arc<ApiState>>,
    peer: Peer,
    addr: Addr,
    Path(uid): Path<String>,
) -> Result<Reply, ApiError> {
    call(s, peer, addr, move |ops, g, _| Ok(ok(&ops.user(g, &uid)?))).await
}

/// The last plan, with only the actions the caller's `view-inventory` scope reaches.
fn scoped_plan(s: &ApiState, g: &Grants) -> Result<crate::plan::Plan, OpError> {
    let plan = s
        .backend
        .last_plan()
        .ok_or_else(|| OpError::Conflict("the controller has not planned yet; try again".into()))?;
    let plan = (*plan).clone();
    Ok(match g.scope(Permission::ViewInventory) {
        Some(scope) => crate::operators::scoped::plan(plan, scope),
        None => plan,
    })
}

async fn plan(State(s): State<Arc<ApiState>>, peer: Peer, addr: Addr) -> Result<Reply, ApiError> {
    let state = s.clone();
    call(s, peer, addr, move |ops, g, _| {
        ops.view(g, "plan")?;
        let plan = scoped_plan(&state, g)?;
        Ok(ok(&PlanJson::of(&plan)))
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DriftQuery {
    #[serde(default = "thirty")]
    expiring_days: i64,
}

fn thirty() -> i64 {
    30
}

fn query<T: serde::de::DeserializeOwned>(q: Option<String>) -> Result<T, ApiError> {
    serde_urlencoded::from_str(q.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::unprocessable(format!("query: {e}")))
}

async fn drift(
    State(s): State<Arc<ApiState>>,
    peer: Peer,
    addr: Addr,
    RawQuery(q): RawQuery,
) -> Result<Reply, ApiError> {
    let q: DriftQuery = query(q)?;
    if !(0..=3650).contains(&q.expiring_days) {
        return Err(ApiError::unprocessable("expiringDays must be 0..=3650"));
    }
    let state = s.clone();
    call(s, peer, addr, move |ops, g, ctx| {
        ops.view(g, "audit")?;
        let plan = scoped_plan(&state, g)?;
        let inventory = ops.store.inventory()?;
        let cas = crate::runtime::connect_authorities(
            &ctx.env.policy,
            &ctx.env.state_dir,
            &ctx.master,
            ops.now,
        );
        let mut findings =
            crate::drift::findings(&plan, &inventory, &cas, ops.now, q.expiring_days);
        if let Some(scope) = g.scope(Permission::ViewInventory) {
            findings = crate::operators::scoped::findings(findings, &inventory, scope);
        }
        Ok(ok(&DriftReport {
            clean: findings.is_empty(),
            complete: plan.complete,
            findings,
        }))
    })
    .await
}

async fn history(
    State(s): State<Arc<ApiState>>,
    peer: Peer,
    addr: Addr,
) -> Result<Reply, ApiError> {
    call(s, peer, addr, |ops, g, _| Ok(ok(&ops.history(g)?))).await
}

async fn unblock(
    State(s): State<Arc<ApiState>>,
    peer: Peer,
    addr: Addr,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ReasonBody>,
) -> Result<Reply, ApiError> {
    change(s, peer, addr, move |ops, g, _| {
        Ok(outcome(ops.unblock(g, &id, &body.reason)?, ops.now))
    })
    .await
}

async fn approve_held(
    State(s): State<Arc<ApiState>>,
    peer: Peer,
    addr: Addr,
    JsonBody(body): JsonBody<ReasonBody>,
) -> Result<Reply, ApiError> {
    change(s, peer, addr, move |ops, g, _| {
        Ok(outcome(ops.approve_held(g, &body.reason)?, ops.now))
    })
    .await
}

async fn list_requests(
    State(s): State<Arc<ApiState>>,
    peer: Peer,
    addr: Addr,
) -> Result<Reply, ApiError> {
    call(s, peer, addr, |ops, g, _| {
        let views: Vec<RequestView> = ops
            .requests(g)?
            .iter()
            .map(|r| RequestView::of(r, ops.now))
            .collect();
        Ok(ok(&views))
    })
    .await
}

async fn create_request(
    State(s): State<Arc<ApiState>>,
    peer: Peer,
    addr: Addr,
    JsonBody(body): JsonBody<NewRequest>,
) -> Result<Reply, ApiError> {
    change(s, peer, addr, move |ops, g, _| {
        Ok(outcome(ops.create(g, &body)?, ops.now))
    })
    .await
}

async fn show_request(
    State(s): State<Arc<ApiState>>,
    peer: Peer,
    addr: Addr,
    Path(id): Path<String>,
) -> Result<Reply, ApiError> {
    call(s, peer, addr, move |ops, g, _| {
        Ok(ok(&RequestView::of(&ops.request(g, &id)?, ops.now)))
    })
    .await
}

async fn approve_request(
    State(s): State<Arc<ApiState>>,
    peer: Peer,
    addr: Addr,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<CommentBody>,
) -> Result<Reply, ApiError> {
    change(s, peer, addr, move |ops, g, _| {
        Ok(ok(&RequestView::of(
            &ops.approve(g, &id, body.comment)?,
            ops.now,
        )))
    })
    .await
}

async fn deny_request(
    State(s): State<Arc<ApiState>>,
    peer: Peer,
    addr: Addr,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<CommentBody>,
) -> Result<Reply, ApiError> {
    change(s, peer, addr, move |ops, g, _| {
        Ok(ok(&RequestView::of(
            &ops.deny(g, &id, body.comment)?,
            ops.now,
        )))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditLogQuery {
    since: Option<String>,
    actor: Option<String>,
}

async fn audit_log(
    State(s): State<Arc<ApiState>>,
    peer: Peer,
    addr: Addr,
    RawQuery(q): RawQuery,
) -> Result<Reply, ApiError> {
    let q: AuditLogQuery = query(q)?;
    let since = match &q.since {
        None => None,
        Some(t) => Some(
            OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).map_err(
                |e| ApiError::unprocessable(format!("since {t:?} is not RFC 3339: {e}")),
            )?,
        ),
    };
    call(s, peer, addr, move |ops, g, _| {
        Ok(ok(&ops.audit_log(g, since, q.actor.as_deref())?))
    })
    .await
}

#[cfg(test)]
mod tests;
