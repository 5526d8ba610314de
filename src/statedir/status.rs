//! What the controller reports about itself: the last pass, pending actions, objects in
//! backoff, held revocations, published CRLs and what it is waiting for. A plain serialisable value, shared by
//! the control socket (`keyfleet status`) and the HTTP endpoint; it decides nothing.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// One finished pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PassSummary {
    /// Sequence number, from 1.
    pub number: u64,
    /// When it started.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub started_at: Option<OffsetDateTime>,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// What triggered it.
    pub triggers: Vec<String>,
    /// Actions in the plan.
    pub planned: usize,
    /// Actions done.
    pub done: usize,
    /// Actions failed.
    pub failed: usize,
    /// Actions waiting for a card.
    pub waiting_for_card: usize,
    /// Actions waiting for the holder (their PIN is unknown to Keyfleet).
    #[serde(default)]
    pub waiting_for_holder: usize,
    /// Cards that could not prove their management key (reset or cloned).
    #[serde(default)]
    pub suspect_cards: usize,
    /// Actions not run because they are in backoff.
    pub in_backoff: usize,
    /// Revocations held by the safety valve.
    pub held: usize,
    /// Whether the plan tripped the safety valve.
    pub valve_tripped: bool,
    /// Whether every directory was observed completely.
    pub complete: bool,
    /// Why the pass could not run at all, if it could not.
    #[serde(default)]
    pub error: Option<String>,
    /// CRLs that could not be published after the pass (the revocations stand).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crl_errors: Vec<String>,
    /// Wall time of the pass in microseconds (`durationMs`, finer).
    #[serde(default)]
    pub duration_us: u64,
    /// APDUs the pass sent to PC/SC cards.
    #[serde(default)]
    pub apdus: u64,
    /// Time the pass spent inside PC/SC calls (card, pcscd and reader driver), in
    /// microseconds: the rest of `durationUs` is Keyfleet's own work.
    #[serde(default)]
    pub card_io_us: u64,
    /// Time the pass spent inside CA calls (enrol, hold, unhold, revoke), in microseconds;
    /// an issuance to a PIV card or token runs them beside the card's work.
    #[serde(default)]
    pub ca_us: u64,
    /// Wall time of applying the pass's actions (after observing and planning), in
    /// microseconds.
    #[serde(default)]
    pub apply_us: u64,
    /// Of `applyUs`, the time inside PC/SC calls, in microseconds.
    #[serde(default)]
    pub apply_card_io_us: u64,
}

/// The published CRL of one local CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrlView {
    /// The CertificateAuthority's name.
    pub ca: String,
    /// The CRL file.
    pub path: String,
    /// The CRL number of the file in place, if it is a usable CRL.
    #[serde(default)]
    pub number: Option<u64>,
    /// Its nextUpdate.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub next_update: Option<OffsetDateTime>,
    /// When the controller publishes the next CRL (or retries after a failure).
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub next_refresh: Option<OffsetDateTime>,
    /// When the controller last wrote a CRL for this CA.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub last_published: Option<OffsetDateTime>,
    /// The last publication error, until a publication succeeds.
    #[serde(default)]
    pub error: Option<String>,
}

/// An action waiting for something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingAction {
    /// The action id.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// The user.
    pub user: String,
    /// What it waits for.
    pub waiting_for: String,
}

/// An action in backoff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackoffView {
    /// The action id.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// The user.
    pub user: String,
    /// Failures so far.
    pub attempts: u32,
    /// The last error.
    pub last_error: String,
    /// Permanent: reported, retried only after the policy changes.
    pub permanent: bool,
    /// Next attempt.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub retry_at: Option<OffsetDateTime>,
}

/// The controller's state as `keyfleet status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControllerStatus {
    /// The controller's pid.
    pub pid: u32,
    /// When it started.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub started_at: Option<OffsetDateTime>,
    /// The policy directory.
    pub policy_dir: String,
    /// The state directory.
    pub state_dir: String,
    /// True once the first pass completed.
    pub ready: bool,
    /// The last pass.
    #[serde(default)]
    pub last_pass: Option<PassSummary>,
    /// The error of the last policy reload, while the last valid policy stays in force.
    #[serde(default)]
    pub policy_error: Option<String>,
    /// Actions waiting for a card, for the holder, or held on a suspect card.
    pub pending: Vec<PendingAction>,
    /// Failed actions in backoff.
    pub backoff: Vec<BackoffView>,
    /// Revocations the safety valve holds until `keyfleet approve`.
    pub held: Vec<HeldRevocation>,
    /// What the controller waits for before the next pass.
    pub waiting_for: Vec<String>,
    /// The event sources (PC/SC, PKCS#11 modules, LDAP pollers) and their state.
    #[serde(default)]
    pub sources: Vec<String>,
    /// The published CRLs of local CAs with `crlPublish`.
    #[serde(default)]
    pub crl: Vec<CrlView>,
}

/// A revocation the controller's safety valve holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldRevocation {
    /// The action id (what `keyfleet approve` approves).
    pub id: String,
    /// The user whose credential would be revoked.
    pub user: String,
    /// The card.
    pub card: Option<String>,
    /// The template of the credential (what a template-scoped approver must cover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The certificates.
    pub serials: Vec<String>,
    /// Why the planner wants it revoked.
    pub reason: String,
}
