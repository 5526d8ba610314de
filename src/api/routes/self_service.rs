//! The holder's routes under `/api/v1/self-service` (`keyfleet self-service` on the holder's
//! workstation): the caller is a holder, identified by a certificate Keyfleet issued onto
//! their card ([`identity::holder_from_certificate`]), never an operator, and acts only on
//! that card. Every call is rate-limited per holder, except the steps of a running session
//! (one per APDU; the session itself is bounded by the executor and the relay's wait).
//!
//! A holder whose card is lost, damaged, revoked, retired, suspect or under an incident is
//! refused (409, the reason named).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;

use super::{Addr, ApiState, Peer, Reply, ok};
use crate::api::backend::CallContext;
use crate::api::error::{ApiError, JsonBody};
use crate::audit::NewEntry;
use crate::inventory::{CardStatus, HolderPin, HolderPinCause, PukRelease};
use crate::operators::identity::{self, Holder};
use crate::operators::service::log_unauthorized;
use crate::selfservice::protocol::{CardResponse, FactsChanged, SelfServiceView, WaitingAction};
use crate::selfservice::sessions::{SessionError, SessionWork, Sessions, waits_for_holder};

/// `{}`: the self-service calls that take no parameters.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyBody {}

/// What the self-service routes share: the API's state and the running sessions.
struct SelfService {
    api: Arc<ApiState>,
    sessions: Sessions,
}

/// The self-service routes (merged into [`super::router`]).
pub(super) fn router(api: Arc<ApiState>) -> Router {
    let state = Arc::new(SelfService {
        api,
        sessions: Sessions::default(),
    });
    Router::new()
        .route("/api/v1/self-service", get(view))
        .route("/api/v1/self-service/sessions", post(start))
        .route("/api/v1/self-service/sessions/{id}", post(step))
        .route("/api/v1/self-service/pin-changed", post(pin_changed))
        .route("/api/v1/self-service/unblocked", post(unblocked))
        .with_state(state)
}

/// Identifies the holder, checks the rate (unless `limited` is false) and that their card
/// may be served, then runs `f` off the async runtime.
async fn holder_call<F>(
    s: Arc<SelfService>,
    peer: Peer,
    addr: Addr,
    limited: bool,
    f: F,
) -> Result<Reply, ApiError>
where
    F: FnOnce(&SelfService, &CallContext, &Holder, OffsetDateTime) -> Result<Reply, ApiError>
        + Send
        + 'static,
{
    let state = s.clone();
    let result = tokio::task::spawn_blocking(move || {
        let s = state;
        let ctx = s.api.backend.context().ok_or_else(|| {
            ApiError::of(503, "unavailable", "the controller is starting; try again")
        })?;
        let now = OffsetDateTime::now_utc();
        let certs = peer
            .map(|axum::extract::Extension(p)| p.0)
            .unwrap_or_default();
        let peer_key = addr.map_or_else(
            || "peer:unknown".to_string(),
            |axum::extract::Extension(a)| format!("peer:{}", a.ip()),
        );
        let store = ctx.store.clone();
        let lookup = |serial: &str| store.cert(serial).map_err(|e| e.to_string());
        let holder = match certs.first() {
            None => Err(identity::IdentityError::NoCertificate),
            Some(leaf) => identity::holder_from_certificate(leaf.as_ref(), &lookup, now),
        };
        let holder = match holder {
            Ok(h) => h,
            Err(e) => {
                if let Err(wait) = s.api.limiter.check(&peer_key, Instant::now()) {
                    return Err(ApiError::too_many_requests(wait));
                }
                log_unauthorized(&ctx.audit, &peer_key, "self-service", &e)
                    .map_err(|m| ApiError::of(500, "audit-log", m))?;
                return Err(ApiError::unauthorized(e.to_string()));
            }
        };
        if limited
            && let Err(wait) = s
                .api
                .limiter
                .check(&format!("holder:{}", holder.user), Instant::now())
        {
            return Err(ApiError::too_many_requests(wait));
        }
        servable(&ctx, &holder)?;
        f(&s, &ctx, &holder, now)
    })
    .await
    .unwrap_or_else(|e| {
        Err(ApiError::internal(format!(
            "the call failed internally: {e}"
        )))
    });
    s.api.backend.count_call(match &result {
        Ok(_) => "ok",
        Err(e) => e.code,
    });
    result
}

/// Refuses (409) a holder whose card is not theirs or not in service.
fn servable(ctx: &CallContext, holder: &Holder) -> Result<(), ApiError> {
    let store_err = |e: crate::store::StoreError| ApiError::internal(e.to_string());
    let card = ctx
        .store
        .card(&holder.card)
        .map_err(store_err)?
        .ok_or_else(|| {
            ApiError::conflict(format!("card {} is not in the inventory", holder.card))
        })?;
    if card.user.as_deref() != Some(holder.user.as_str()) {
        return Err(ApiError::conflict(format!(
            "card {} is no longer bound to {}",
            holder.card, holder.user
        )));
    }
    if !matches!(card.status, CardStatus::Active) {
        return Err(ApiError::conflict(format!(
            "card {} is {}: self-service is refused",
            holder.card,
            status_name(card.status)
        )));
    }
    let facts = ctx.store.card_facts(&holder.card).map_err(store_err)?;
    if let Some(i) = &facts.incident {
        return Err(ApiError::conflict(format!(
            "card {} was reported {}: self-service is refused",
            holder.card,
            i.kind.as_str()
        )));
    }
    if facts.suspect.is_some() {
        return Err(ApiError::conflict(format!(
            "card {} is suspect (it could not prove the management key Keyfleet set): \
             self-service is refused",
            holder.card
        )));
    }
    Ok(())
}

fn status_name(status: CardStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{status:?}").to_lowercase())
}

/// The audit entry of a self-service report: actor the holder, `via: self-service`.
fn audit(
    ctx: &CallContext,
    holder: &Holder,
    kind: &str,
    outcome: &str,
    now: OffsetDateTime,
) -> Result<(), ApiError> {
    ctx.audit
        .append(
            NewEntry {
                actor: holder.user.clone(),
                kind: kind.into(),
                target: holder.user.clone(),
                outcome: outcome.into(),
                details: serde_json::json!({
                    "via": "self-service",
                    "card": holder.card,
                    "certificate": holder.serial,
                }),
            },
            now,
        )
        .map(|_| ())
        .map_err(|e| {
            ApiError::of(
                500,
                "audit-log",
                format!("the audit log cannot be written: {e}"),
            )
        })
}

async fn view(
    State(s): State<Arc<SelfService>>,
    peer: Peer,
    addr: Addr,
) -> Result<Reply, ApiError> {
    holder_call(s, peer, addr, true, |s, ctx, holder, _| {
        let waiting = s
            .api
            .backend
            .last_plan()
            .map(|plan| {
                plan.actions
                    .iter()
                    .filter(|a| waits_for_holder(a, &holder.card))
                    .map(|a| WaitingAction {
                        action: a.id(),
                        kind: a.kind.as_str().to_string(),
                        slot: a.slot.map(|s| s.hex().to_string()),
                        reason: a.reason.message.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let facts = ctx
            .store
            .card_facts(&holder.card)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(ok(&SelfServiceView {
            user: holder.user.clone(),
            card: holder.card.clone(),
            certificate: holder.serial.clone(),
            template: holder.template.clone(),
            status: "active".into(),
            waiting,
            pin_unknown: facts.holder_pin.is_some(),
            unblock_code_released: facts.puk_released.is_some(),
        }))
    })
    .await
}

fn session_error(e: SessionError) -> ApiError {
    match e {
        SessionError::NotFound => ApiError::not_found(e.to_string()),
        SessionError::Busy(_) => ApiError::conflict(e.to_string()),
        SessionError::Stalled(_) => ApiError::of(504, "timeout", e.to_string()),
        SessionError::Failed(_) => ApiError::internal(e.to_string()),
    }
}

async fn start(
    State(s): State<Arc<SelfService>>,
    peer: Peer,
    addr: Addr,
    JsonBody(_): JsonBody<EmptyBody>,
) -> Result<Reply, ApiError> {
    holder_call(s, peer, addr, true, |s, ctx, holder, _| {
        let work = SessionWork {
            env: ctx.env.clone(),
            store: ctx.store.clone(),
            master: ctx.master.clone(),
            audit: ctx.audit.clone(),
            host: ctx.host.clone(),
            user: holder.user.clone(),
            card: holder.card.clone(),
        };
        let step = s.sessions.start(work).map_err(session_error)?;
        Ok(ok(&step))
    })
    .await
}

async fn step(
    State(s): State<Arc<SelfService>>,
    peer: Peer,
    addr: Addr,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<CardResponse>,
) -> Result<Reply, ApiError> {
    holder_call(s, peer, addr, false, move |s, _, holder, _| {
        let response = hex::decode(body.response.trim())
            .map_err(|e| ApiError::unprocessable(format!("response: not hex: {e}")))?;
        let step = s
            .sessions
            .step(&id, &holder.user, &holder.card, response)
            .map_err(session_error)?;
        Ok(ok(&step))
    })
    .await
}

async fn pin_changed(
    State(s): State<Arc<SelfService>>,
    peer: Peer,
    addr: Addr,
    JsonBody(_): JsonBody<EmptyBody>,
) -> Result<Reply, ApiError> {
    holder_call(s, peer, addr, true, |_, ctx, holder, now| {
        let puk_out = report(ctx, holder, "self-service-pin-changed", now, |facts| {
            facts.holder_pin = Some(HolderPin {
                since: now,
                cause: HolderPinCause::HolderChanged,
                tries_left: None,
            });
            facts.puk_released.is_some()
        })?;
        Ok(changed(holder, puk_out))
    })
    .await
}

async fn unblocked(
    State(s): State<Arc<SelfService>>,
    peer: Peer,
    addr: Addr,
    JsonBody(_): JsonBody<EmptyBody>,
) -> Result<Reply, ApiError> {
    holder_call(s, peer, addr, true, |_, ctx, holder, now| {
        report(ctx, holder, "self-service-unblocked", now, |facts| {
            facts.holder_pin = Some(HolderPin {
                since: now,
                cause: HolderPinCause::HolderReset,
                tries_left: None,
            });
            // The PUK the holder used is spent: a new one is set at the next contact,
            // whether it was released as an unblock code or came from elsewhere.
            facts.puk_released.get_or_insert(PukRelease {
                by: format!("{} (self-service unblock)", holder.user),
                at: now,
            });
        })?;
        Ok(changed(holder, true))
    })
    .await
}

/// What the workstation did on the card, into the card's facts: logged before the facts
/// change (fail closed) and how it ended after (`done`, or `failed` and a 500); the facts are
/// changed by compare-and-swap; then a pass plans from them.
fn report<T>(
    ctx: &CallContext,
    holder: &Holder,
    kind: &str,
    now: OffsetDateTime,
    mut change: impl FnMut(&mut crate::inventory::CardFacts) -> T,
) -> Result<T, ApiError> {
    audit(ctx, holder, kind, "started", now)?;
    let result = ctx
        .store
        .update_card_facts(&holder.card, |facts| Ok::<_, String>(change(facts)))
        .map_err(|e| e.to_string())
        .and_then(|r| r);
    let outcome = if result.is_ok() { "done" } else { "failed" };
    audit(ctx, holder, kind, outcome, now)?;
    let value = result.map_err(ApiError::internal)?;
    ctx.host.wake();
    Ok(value)
}

fn changed(holder: &Holder, puk_rotation_planned: bool) -> Reply {
    let v = FactsChanged {
        card: holder.card.clone(),
        pin_unknown: true,
        puk_rotation_planned,
    };
    (
        StatusCode::OK,
        Json(serde_json::to_value(v).unwrap_or(Value::Null)),
    )
}
