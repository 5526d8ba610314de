//! CA operations of the executors: the CA a credential names, status changes (revoke,
//! hold, unhold) recorded in the journal and the inventory, and the time spent inside CA calls.
//!
//! The lifecycle decisions are the planner's; this only carries out a status change it asked for.

use std::collections::BTreeMap;

use super::{ApplyError, Context, journal_close, journal_close_recording, journal_open};
use crate::ca::{CertificateAuthority, RevocationReason};
use crate::inventory::CertStatus;
use crate::store::journal::CaOp;
use crate::store::{JournalState, JournalStep, Recorded};
/// Certificate authorities by policy name; a name maps to an error when its connector cannot
/// be built (so that actions that need it fail clearly and the rest proceed).
pub type CaRegistry = BTreeMap<String, Result<Box<dyn CertificateAuthority>, String>>;

/// Time this process spent inside CA calls (enrol, hold, unhold, revoke), for the
/// benchmarks' accounting: the CA's share of a pass is neither the card's nor Keyfleet's.
pub(crate) static CA_NANOS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub(crate) fn count_ca_time(d: std::time::Duration) {
    let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    CA_NANOS.fetch_add(nanos, std::sync::atomic::Ordering::Relaxed);
}

/// Time spent inside CA calls by this process so far.
pub fn ca_time() -> std::time::Duration {
    std::time::Duration::from_nanos(CA_NANOS.load(std::sync::atomic::Ordering::Relaxed))
}

pub(crate) fn ca<'a>(
    ctx: &Context<'a>,
    name: &str,
) -> Result<&'a dyn CertificateAuthority, ApplyError> {
    match ctx.cas.get(name) {
        Some(Ok(ca)) => Ok(ca.as_ref()),
        Some(Err(e)) => Err(ApplyError::CaUnavailable(name.to_string(), e.clone())),
        None => Err(ApplyError::CaUnavailable(
            name.to_string(),
            "no such CertificateAuthority in the policy".into(),
        )),
    }
}

/// Revokes `serials` at their CAs with the RFC 5280 `reason` and records each, in order;
/// the first refusal ends it (what the CA confirmed before is recorded).
pub(crate) fn revoke_all(
    ctx: &Context<'_>,
    action_id: &str,
    serials: &[String],
    reason: &str,
) -> Result<(), ApplyError> {
    for serial in serials {
        ca_status(
            ctx,
            action_id,
            serial,
            CaOp::Revoke {
                reason: reason.into(),
            },
        )?;
    }
    Ok(())
}

/// Changes a certificate's status at its CA and records it. Idempotent at the CA.
pub(crate) fn ca_status(
    ctx: &Context<'_>,
    action_id: &str,
    serial: &str,
    op: CaOp,
) -> Result<(), ApplyError> {
    let mut cert = ctx
        .store
        .cert(serial)?
        .ok_or_else(|| ApplyError::Stale(format!("certificate {serial} is unknown")))?;
    let authority = ca(ctx, &cert.ca)?;
    let mut entry = journal_open(
        ctx,
        action_id,
        JournalStep::CaStatus {
            serial: serial.to_string(),
            ca: cert.ca.clone(),
            op: op.clone(),
        },
    )?;
    let ca_started = std::time::Instant::now();
    let (result, status) = match &op {
        CaOp::Hold => (authority.hold(serial), CertStatus::Suspended),
        CaOp::Unhold => (authority.unhold(serial), CertStatus::Active),
        CaOp::Revoke { reason } => {
            let (r, st) = match reason.as_str() {
                "superseded" => (RevocationReason::Superseded, CertStatus::Superseded),
                "cessationOfOperation" => {
                    (RevocationReason::CessationOfOperation, CertStatus::Revoked)
                }
                "keyCompromise" => (RevocationReason::KeyCompromise, CertStatus::Revoked),
                "affiliationChanged" => (RevocationReason::AffiliationChanged, CertStatus::Revoked),
                _ => (RevocationReason::Unspecified, CertStatus::Revoked),
            };
            (authority.revoke(serial, r), st)
        }
    };
    count_ca_time(ca_started.elapsed());
    if let Err(source) = result {
        let e = ApplyError::Ca {
            ca: cert.ca.clone(),
            source,
        };
        journal_close(ctx, &mut entry, JournalState::Failed, Some(e.to_string()))?;
        return Err(e);
    }
    cert.status = status;
    cert.updated_at = (ctx.clock)();
    journal_close_recording(
        ctx,
        &mut entry,
        JournalState::Done,
        None,
        Recorded::Cert(&cert),
    )
}
