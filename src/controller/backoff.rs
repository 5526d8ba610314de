//! Per-object error policy (kube-runtime's `error_policy` is the model): an action that failed
//! is retried for that object alone, with exponential backoff and jitter, while every other
//! object proceeds; a permanent failure is reported and not retried until something that could
//! fix it changes (the policy is reloaded).
//!
//! The delay is a pure function of the error class, the number of attempts and a jitter value
//! the caller draws; [`Backoff`] is the table of objects in backoff. Objects are keyed by the
//! plan action id (`Action::id`), stable across passes. This module runs nothing and reads no
//! clock.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

/// How a failure should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorClass {
    /// May succeed later (CA down, card removed, I/O): retry with backoff.
    Transient,
    /// Will fail the same way until the policy or the world changes (the CA refused the
    /// request, invalid template for this card): report, do not retry.
    Permanent,
}

/// First retry delay.
pub const BASE_DELAY: Duration = Duration::from_secs(5);
/// Longest retry delay.
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);

/// The delay before retry number `attempts` (1 = the first failure) of an object whose last
/// failure had `class`; `jitter` in `[0, 1)` spreads retries over the second half of the
/// exponential delay. `None`: do not retry.
pub fn retry_delay(class: ErrorClass, attempts: u32, jitter: f64) -> Option<Duration> {
    if class == ErrorClass::Permanent {
        return None;
    }
    let exp = attempts.saturating_sub(1).min(30);
    let full = BASE_DELAY
        .checked_mul(1u32 << exp.min(20))
        .unwrap_or(MAX_DELAY)
        .min(MAX_DELAY);
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    Some(full / 2 + full.mul_f64(jitter / 2.0))
}

/// One object in backoff.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackoffEntry {
    /// The action kind (`issue`, `revoke`, ...).
    pub kind: String,
    /// The user concerned.
    pub user: String,
    /// Failures so far.
    pub attempts: u32,
    /// The last error.
    pub last_error: String,
    /// Its class.
    pub class: ErrorClass,
    /// When the next attempt is allowed; `None` for a permanent failure.
    #[serde(with = "time::serde::rfc3339::option")]
    pub retry_at: Option<OffsetDateTime>,
}

/// The objects in backoff, by action id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Backoff {
    entries: BTreeMap<String, BackoffEntry>,
}

/// A failure to record.
#[derive(Debug, Clone)]
pub struct Failure<'a> {
    /// Action id.
    pub id: &'a str,
    /// Action kind.
    pub kind: &'a str,
    /// User.
    pub user: &'a str,
    /// Error text.
    pub error: &'a str,
    /// Error class.
    pub class: ErrorClass,
}

impl Backoff {
    /// Records a failure at `now`; returns the entry.
    pub fn record_failure(
        &mut self,
        failure: Failure<'_>,
        now: OffsetDateTime,
        jitter: f64,
    ) -> &BackoffEntry {
        let attempts = self
            .entries
            .get(failure.id)
            .map_or(1, |e| e.attempts.saturating_add(1));
        let retry_at = retry_delay(failure.class, attempts, jitter).map(|d| now + d);
        let entry = BackoffEntry {
            kind: failure.kind.to_string(),
            user: failure.user.to_string(),
            attempts,
            last_error: failure.error.to_string(),
            class: failure.class,
            retry_at,
        };
        self.entries.insert(failure.id.to_string(), entry);
        &self.entries[failure.id]
    }

    /// The object succeeded: forget it.
    pub fn record_success(&mut self, id: &str) {
        self.entries.remove(id);
    }

    /// Whether the action must not run at `now` (permanent, or its retry is not yet due).
    pub fn blocks(&self, id: &str, now: OffsetDateTime) -> bool {
        self.entries
            .get(id)
            .is_some_and(|e| e.retry_at.is_none_or(|at| at > now))
    }

    /// The earliest retry still in the future.
    pub fn next_due(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.entries
            .values()
            .filter_map(|e| e.retry_at)
            .filter(|at| *at > now)
            .min()
    }

    /// Forgets permanent failures (the policy changed: they may succeed now).
    pub fn forget_permanent(&mut self) {
        self.entries.retain(|_, e| e.class != ErrorClass::Permanent);
    }

    /// Keeps only the objects still planned (an action that left the plan needs no retry).
    pub fn retain_planned(&mut self, planned: &std::collections::BTreeSet<String>) {
        self.entries.retain(|id, _| planned.contains(id));
    }

    /// Every entry, by action id.
    pub fn entries(&self) -> &BTreeMap<String, BackoffEntry> {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(id: &str, class: ErrorClass) -> Failure<'_> {
        Failure {
            id,
            kind: "issue",
            user: "alice",
            error: "CA unavailable",
            class,
        }
    }

    #[test]
    fn delays_grow_exponentially_within_jitter_bounds_and_cap() {
        let d1 = retry_delay(ErrorClass::Transient, 1, 0.0).unwrap();
        assert_eq!(d1, BASE_DELAY / 2);
        let top = retry_delay(ErrorClass::Transient, 1, 0.999).unwrap();
        assert!(
            top > BASE_DELAY.mul_f64(0.99) && top < BASE_DELAY,
            "{top:?}"
        );
        let d3 = retry_delay(ErrorClass::Transient, 3, 0.0).unwrap();
        assert_eq!(d3, BASE_DELAY * 4 / 2);
        for attempts in [25, 1000, u32::MAX] {
            let d = retry_delay(ErrorClass::Transient, attempts, 1.0).unwrap();
            assert_eq!(d, MAX_DELAY);
        }
        assert_eq!(
            retry_delay(ErrorClass::Transient, 2, f64::NAN),
            Some(BASE_DELAY)
        );
        assert_eq!(retry_delay(ErrorClass::Permanent, 1, 0.5), None);
    }

    #[test]
    fn table_blocks_until_due_and_forgets_on_success() {
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        let mut b = Backoff::default();
        let e = b
            .record_failure(fail("a", ErrorClass::Transient), now, 0.0)
            .clone();
        assert_eq!(e.attempts, 1);
        assert!(b.blocks("a", now));
        assert!(!b.blocks("other", now));
        let due = b.next_due(now).unwrap();
        assert!(!b.blocks("a", due));
        let e2 = b
            .record_failure(fail("a", ErrorClass::Transient), due, 0.0)
            .clone();
        assert_eq!(e2.attempts, 2);
        assert!(e2.retry_at.unwrap() - due > e.retry_at.unwrap() - now);
        b.record_success("a");
        assert!(b.entries().is_empty());
    }

    #[test]
    fn permanent_failures_block_until_the_policy_changes() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let mut b = Backoff::default();
        b.record_failure(fail("p", ErrorClass::Permanent), now, 0.3);
        b.record_failure(fail("t", ErrorClass::Transient), now, 0.3);
        assert!(b.blocks("p", now + time::Duration::days(365)));
        assert_eq!(b.next_due(now), b.entries()["t"].retry_at);
        b.forget_permanent();
        assert!(!b.blocks("p", now));
        assert!(b.entries().contains_key("t"));
        b.retain_planned(&Default::default());
        assert!(b.entries().is_empty());
    }
}
