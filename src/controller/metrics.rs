//! The controller's Prometheus metrics (OpenMetrics text, served on `/metrics` by
//! [`super::http`]): passes and their duration, actions by kind and outcome, pending card
//! actions, actions waiting for the holder, suspect cards, the last successful observation per source, certificates expiring within 30 days,
//! safety-valve trips and held revocations, policy reload failures, objects in backoff, and
//! the published CRLs (nextUpdate, publications, failures), and the audit log's head.
//!
//! This module only counts what the controller tells it; it observes nothing itself.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label set of one label.
type Labels = Vec<(String, String)>;

/// Every metric the controller exports.
pub struct Metrics {
    registry: Registry,
    /// Passes by result (`ok`, `error`).
    pub passes: Family<Labels, Counter>,
    /// Pass duration in seconds.
    pub pass_duration: Histogram,
    /// Actions by kind and outcome (`done`, `failed`, `pending`, `held`, `backoff`).
    pub actions: Family<Labels, Counter>,
    /// Actions waiting for a card after the last pass.
    pub pending_card_actions: Gauge,
    /// Actions waiting for the holder (their PIN is unknown) after the last pass.
    pub pending_holder_actions: Gauge,
    /// Cards that could not prove the management key Keyfleet set (reset or cloned).
    pub suspect_cards: Gauge,
    /// Unix time of the last successful observation, per source (`directory/<name>`).
    pub last_observation: Family<Labels, Gauge<f64, AtomicU64>>,
    /// Live certificates expiring within 30 days.
    pub expiring_30d: Gauge,
    /// Passes whose plan tripped the safety valve.
    pub valve_trips: Counter,
    /// Revocations held by the valve after the last pass.
    pub held_revocations: Gauge,
    /// Changed policy sets that failed to load (the last valid one stayed in force).
    pub policy_reload_failures: Counter,
    /// Objects in backoff after the last pass.
    pub backoff_objects: Gauge,
    /// 1 once the first pass completed.
    pub ready: Gauge,
    /// Unix time of the nextUpdate of each local CA's published CRL (`ca` label).
    pub crl_next_update: Family<Labels, Gauge<f64, AtomicU64>>,
    /// CRLs written, per CA.
    pub crl_publications: Family<Labels, Counter>,
    /// Failed CRL publications, per CA (the revocations stand; publication is retried).
    pub crl_publish_failures: Family<Labels, Counter>,
    /// Entries in the audit log (its last `seq`).
    pub audit_log_entries: Counter,
    /// The `seq` the last audit-log checkpoint signed.
    pub audit_log_checkpoint_seq: Gauge,
    /// Operator calls (control socket and API) by outcome (`ok` or the error code).
    pub operator_calls: Family<Labels, Counter>,
    /// Requests waiting for approvals.
    pub open_requests: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, registered under the `keyfleet_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("keyfleet");
        let passes = Family::<Labels, Counter>::default();
        registry.register("passes", "Reconcile passes, by result", passes.clone());
        let pass_duration = Histogram::new(exponential_buckets(0.005, 2.0, 16));
        registry.register(
            "pass_duration_seconds",
            "Duration of reconcile passes in seconds",
            pass_duration.clone(),
        );
        let actions = Family::<Labels, Counter>::default();
        registry.register(
            "actions",
            "Plan actions by kind and outcome",
            actions.clone(),
        );
        let pending_card_actions = Gauge::default();
        registry.register(
            "pending_card_actions",
            "Actions waiting for their card to be present",
            pending_card_actions.clone(),
        );
        let pending_holder_actions = Gauge::default();
        registry.register(
            "pending_holder_actions",
            "Actions waiting for the holder: the PIN Keyfleet holds for their card cannot be used",
            pending_holder_actions.clone(),
        );
        let suspect_cards = Gauge::default();
        registry.register(
            "suspect_cards",
            "Cards that showed a known identity but could not prove the management key Keyfleet set",
            suspect_cards.clone(),
        );
        let last_observation = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "last_successful_observation_timestamp_seconds",
            "Unix time of the last successful observation, per source",
            last_observation.clone(),
        );
        let expiring_30d = Gauge::default();
        registry.register(
            "certificates_expiring_30d",
            "Live certificates expiring within 30 days",
            expiring_30d.clone(),
        );
        let valve_trips = Counter::default();
        registry.register(
            "safety_valve_trips",
            "Passes whose plan tripped the safety valve",
            valve_trips.clone(),
        );
        let held_revocations = Gauge::default();
        registry.register(
            "safety_valve_held_revocations",
            "Revocations held by the safety valve until approved",
            held_revocations.clone(),
        );
        let policy_reload_failures = Counter::default();
        registry.register(
            "policy_reload_failures",
            "Changed policy sets that failed validation (the last valid set stays in force)",
            policy_reload_failures.clone(),
        );
        let backoff_objects = Gauge::default();
        registry.register(
            "backoff_objects",
            "Objects whose failed action waits for a retry or is reported as permanent",
            backoff_objects.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 once the first reconcile pass completed",
            ready.clone(),
        );
        let crl_next_update = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "crl_next_update_seconds",
            "Unix time of the nextUpdate of the published CRL, per local CA",
            crl_next_update.clone(),
        );
        let crl_publications = Family::<Labels, Counter>::default();
        registry.register(
            "crl_publications",
            "CRLs written to their crlPublish path, per local CA",
            crl_publications.clone(),
        );
        let crl_publish_failures = Family::<Labels, Counter>::default();
        registry.register(
            "crl_publish_failures",
            "CRL publications that failed, per local CA (the revocations stand)",
            crl_publish_failures.clone(),
        );
        let audit_log_entries = Counter::default();
        registry.register(
            "audit_log_entries",
            "Entries in the audit log (its last seq)",
            audit_log_entries.clone(),
        );
        let audit_log_checkpoint_seq = Gauge::default();
        registry.register(
            "audit_log_checkpoint_seq",
            "The seq the last audit-log checkpoint signed",
            audit_log_checkpoint_seq.clone(),
        );
        let operator_calls = Family::<Labels, Counter>::default();
        registry.register(
            "operator_calls",
            "Operator calls (control socket and API) by outcome: ok, or the error code",
            operator_calls.clone(),
        );
        let open_requests = Gauge::default();
        registry.register(
            "open_requests",
            "Operator requests waiting for approvals",
            open_requests.clone(),
        );
        Metrics {
            registry,
            operator_calls,
            open_requests,
            audit_log_entries,
            audit_log_checkpoint_seq,
            crl_next_update,
            crl_publications,
            crl_publish_failures,
            passes,
            pass_duration,
            actions,
            pending_card_actions,
            pending_holder_actions,
            suspect_cards,
            last_observation,
            expiring_30d,
            valve_trips,
            held_revocations,
            policy_reload_failures,
            backoff_objects,
            ready,
        }
    }

    /// Counts `n` actions of `kind` with `outcome`.
    pub fn count_actions(&self, kind: &str, outcome: &str, n: u64) {
        if n > 0 {
            self.actions
                .get_or_create(&vec![
                    ("kind".to_string(), kind.to_string()),
                    ("outcome".to_string(), outcome.to_string()),
                ])
                .inc_by(n);
        }
    }

    /// Follows the audit log's head: `entries` its last seq, `checkpointed` the last signed.
    pub fn audit_log(&self, entries: u64, checkpointed: u64) {
        let seen = self.audit_log_entries.get();
        if entries > seen {
            self.audit_log_entries.inc_by(entries - seen);
        }
        self.audit_log_checkpoint_seq
            .set(i64::try_from(checkpointed).unwrap_or(i64::MAX));
    }

    /// Counts an operator call with `outcome` (`ok`, or the error code).
    pub fn operator_call(&self, outcome: &str) {
        self.operator_calls
            .get_or_create(&vec![("outcome".to_string(), outcome.to_string())])
            .inc();
    }

    /// Sets the number of pending requests.
    pub fn open_requests(&self, n: usize) {
        self.open_requests.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts a pass.
    pub fn count_pass(&self, ok: bool, seconds: f64) {
        let result = if ok { "ok" } else { "error" };
        self.passes
            .get_or_create(&vec![("result".to_string(), result.to_string())])
            .inc();
        self.pass_duration.observe(seconds);
    }

    /// Records a successful observation of `source` at Unix time `at`.
    pub fn observed(&self, source: &str, at: f64) {
        self.last_observation
            .get_or_create(&vec![("source".to_string(), source.to_string())])
            .set(at);
    }

    /// Records the CRL publication of one pass: for each CA, its published CRL's nextUpdate
    /// (Unix time; `None`: no usable CRL in place), whether a CRL was written and whether
    /// publishing failed. CAs not listed lose their nextUpdate gauge (dropped from the policy).
    pub fn crl(&self, cas: &[(&str, Option<f64>, bool, bool)]) {
        self.crl_next_update.clear();
        for (ca, next_update, published, failed) in cas {
            let labels = vec![("ca".to_string(), ca.to_string())];
            if let Some(t) = next_update {
                self.crl_next_update.get_or_create(&labels).set(*t);
            }
            // Create both counters so each CA's series exist from its first pass.
            let written = self.crl_publications.get_or_create(&labels);
            if *published {
                written.inc();
            }
            let failures = self.crl_publish_failures.get_or_create(&labels);
            if *failed {
                failures.inc();
            }
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family_and_labels() {
        let m = Metrics::new();
        m.count_pass(true, 0.2);
        m.count_actions("issue", "done", 3);
        m.count_actions("issue", "failed", 0);
        m.observed("directory/people", 1_700_000_000.5);
        m.valve_trips.inc();
        m.pending_holder_actions.set(2);
        m.suspect_cards.set(1);
        m.crl(&[("local-ca", Some(1_800_000_000.0), true, false)]);
        m.crl(&[("local-ca", Some(1_800_000_006.0), false, true)]);
        let text = m.render();
        for needle in [
            "keyfleet_passes_total{result=\"ok\"} 1",
            "keyfleet_pass_duration_seconds_count 1",
            "keyfleet_actions_total{kind=\"issue\",outcome=\"done\"} 3",
            "keyfleet_last_successful_observation_timestamp_seconds{source=\"directory/people\"} 1700000000.5",
            "keyfleet_safety_valve_trips_total 1",
            "keyfleet_policy_reload_failures_total 0",
            "keyfleet_pending_holder_actions 2",
            "keyfleet_suspect_cards 1",
            "keyfleet_crl_next_update_seconds{ca=\"local-ca\"} 1800000006.0",
            "keyfleet_crl_publications_total{ca=\"local-ca\"} 1",
            "keyfleet_crl_publish_failures_total{ca=\"local-ca\"} 1",
            "# EOF",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        assert!(!text.contains("outcome=\"failed\""));
    }
}
