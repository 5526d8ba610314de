//! What a pass's outcome publishes: the controller's status (read by `keyfleet status`), the
//! metrics, the log lines, and the next timer.

use std::time::Duration;

use time::OffsetDateTime;

use std::sync::atomic::Ordering;

use super::control_socket::Shared;
use super::pass::{PassOutcome, PassState};
use super::{backoff, sources};
use crate::policy::model::DirectorySpec;
use crate::statedir::status::{self, BackoffView};
use crate::views::rfc3339;

/// Publishes a pass's outcome to metrics, status and the log; returns the next timer.
pub(super) fn record(
    shared: &Shared,
    state: &PassState,
    out: &PassOutcome,
    resync: Duration,
) -> (OffsetDateTime, &'static str) {
    let now = OffsetDateTime::now_utc();
    let s = &out.summary;
    let m = &shared.metrics;
    m.count_pass(s.error.is_none(), s.duration_ms as f64 / 1000.0);
    for ((kind, outcome), n) in &out.counts {
        m.count_actions(kind, outcome, *n);
    }
    m.pending_card_actions
        .set(out.summary.waiting_for_card as i64);
    m.pending_holder_actions
        .set(out.summary.waiting_for_holder as i64);
    m.suspect_cards.set(out.summary.suspect_cards as i64);
    let (entries, checkpointed) = state.audit.head();
    m.audit_log(entries, checkpointed);
    let at = now.unix_timestamp_nanos() as f64 / 1e9;
    for name in &out.observed_ok {
        m.observed(&format!("directory/{name}"), at);
    }
    m.expiring_30d.set(out.expiring_30d);
    m.held_revocations.set(out.held.len() as i64);
    m.backoff_objects.set(state.backoff.entries().len() as i64);
    if s.valve_tripped {
        m.valve_trips.inc();
        tracing::warn!(
            held = out.held.len(),
            "safety valve tripped: revocations are held until `keyfleet approve` or the plan shrinks under the limits"
        );
    }
    if let Some(r) = &out.recovery
        && r.finished + r.abandoned > 0
    {
        tracing::info!(
            finished = r.finished,
            abandoned = r.abandoned,
            recovered = r.recovered_certificates.len(),
            "recovered interrupted work from the journal"
        );
    }
    match &s.error {
        Some(e) => tracing::error!(pass = s.number, "pass failed: {e}"),
        None => tracing::info!(
            pass = s.number,
            duration_ms = s.duration_ms,
            triggers = ?s.triggers,
            planned = s.planned,
            done = s.done,
            failed = s.failed,
            waiting_for_card = s.waiting_for_card,
            in_backoff = s.in_backoff,
            held = s.held,
            duration_us = s.duration_us,
            apdus = s.apdus,
            card_io_us = s.card_io_us,
            ca_us = s.ca_us,
            apply_us = s.apply_us,
            apply_card_io_us = s.apply_card_io_us,
            "pass complete"
        ),
    }
    if s.error.is_none() && !out.interrupted {
        shared.ready.store(true, Ordering::SeqCst);
        m.ready.set(1);
    }

    let crl_views = record_crl(shared, out);

    let retry = state.backoff.next_due(now);
    let resync_at = now + resync;
    let mut wake = (resync_at, "resync");
    if let Some(r) = out.next_renewal
        && r < wake.0
    {
        wake = (r, "renewal");
    }
    if let Some(r) = retry
        && r < wake.0
    {
        wake = (r, "retry");
    }
    if let Some(r) = out.crl.iter().map(|c| c.next_refresh).min()
        && r < wake.0
    {
        wake = (r, "crl");
    }

    let mut waiting = vec![format!(
        "a change of the policy in {}",
        shared.status().policy_dir
    )];
    for (name, d) in &state.env.policy.directories {
        if let DirectorySpec::File(f) = &d.spec
            && !state.env.policy_data.contains(name)
        {
            waiting.push(format!(
                "a change of directory {name} ({})",
                d.resolve_path(&f.path).display()
            ));
        }
    }
    for (name, d) in &state.env.policy.directories {
        if let DirectorySpec::Ldap(l) = &d.spec {
            waiting.push(format!(
                "a change of LDAP directory {name} (change token polled every {})",
                l.poll_interval.map_or_else(
                    || {
                        crate::policy::duration::Duration::from_secs(
                            sources::DEFAULT_POLL.as_secs(),
                        )
                        .to_string()
                    },
                    |p| p.to_string()
                )
            ));
        }
    }
    if !out.pending.is_empty() {
        waiting.push(format!(
            "cards to be presented for {} pending action(s)",
            out.pending.len()
        ));
    }
    if !out.held.is_empty() {
        waiting.push(format!(
            "`keyfleet approve` for {} held revocation(s)",
            out.held.len()
        ));
    }
    if let Some(r) = out.next_renewal {
        waiting.push(format!("the next renewal point at {}", rfc3339(r)));
    }
    if let Some(r) = retry {
        waiting.push(format!("the next retry at {}", rfc3339(r)));
    }
    for c in &out.crl {
        waiting.push(format!(
            "the next CRL {} of CA {} at {}",
            if c.error.is_some() {
                "publication attempt"
            } else {
                "refresh"
            },
            c.ca,
            rfc3339(c.next_refresh)
        ));
    }
    waiting.push(format!("the periodic resync at {}", rfc3339(resync_at)));

    if let (Some(plan), Ok(mut last)) = (&out.plan, shared.last_plan.lock()) {
        *last = Some(plan.clone());
    }
    if let Ok(mut st) = shared.status.lock() {
        st.ready = shared.is_ready();
        st.last_pass = Some(s.clone());
        st.pending = out.pending.clone();
        st.held = out.held.clone();
        st.backoff = state
            .backoff
            .entries()
            .iter()
            .map(|(id, e)| BackoffView {
                id: id.clone(),
                kind: e.kind.clone(),
                user: e.user.clone(),
                attempts: e.attempts,
                last_error: e.last_error.clone(),
                permanent: e.class == backoff::ErrorClass::Permanent,
                retry_at: e.retry_at,
            })
            .collect();
        st.waiting_for = waiting;
        st.crl = crl_views;
    }
    wake
}

/// Logs and counts a pass's CRL publication; returns the status views (keeping when each CA's
/// CRL was last written).
fn record_crl(shared: &Shared, out: &PassOutcome) -> Vec<status::CrlView> {
    let now = OffsetDateTime::now_utc();
    let before = shared.status().crl;
    let mut samples = Vec::new();
    let mut views = Vec::new();
    for c in &out.crl {
        let next_update = c.current.as_ref().and_then(|i| i.next_update);
        let number = c.current.as_ref().and_then(|i| i.number);
        match (&c.error, &c.published) {
            (Some(e), _) => tracing::error!(
                ca = %c.ca,
                path = %c.path.display(),
                retry_at = %rfc3339(c.next_refresh),
                "cannot publish the CRL (the revocations stand): {e}"
            ),
            (None, Some(reason)) => tracing::info!(
                ca = %c.ca,
                path = %c.path.display(),
                number,
                next_update = %next_update.map(rfc3339).unwrap_or_default(),
                "CRL published: {reason}"
            ),
            (None, None) => {}
        }
        samples.push((
            c.ca.as_str(),
            next_update.map(|t| t.unix_timestamp_nanos() as f64 / 1e9),
            c.published.is_some(),
            c.error.is_some(),
        ));
        let last_published = if c.published.is_some() {
            Some(now)
        } else {
            before
                .iter()
                .find(|v| v.ca == c.ca)
                .and_then(|v| v.last_published)
        };
        views.push(status::CrlView {
            ca: c.ca.clone(),
            path: c.path.display().to_string(),
            number,
            next_update,
            next_refresh: Some(c.next_refresh),
            last_published,
            error: c.error.as_ref().map(ToString::to_string),
        });
    }
    shared.metrics.crl(&samples);
    views
}
