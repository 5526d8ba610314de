//! The `PolicyTest` kind: a unit test of the policy set, kept under `tests/` of the policy
//! directory and run by `keyfleet test`.
//!
//! A test gives the inputs the planner would otherwise observe — a directory (users and
//! groups), an inventory (who already holds which credential), the time — optionally policy
//! documents laid over the set, and what must come out: the plan's actions, or validation
//! errors. This module only describes the shape; `crate::policytest` runs the tests.
//!
//! PolicyTest documents are never part of the policy set that `plan`, `apply` and `run` use:
//! the loader does not read `tests/`, and a PolicyTest found anywhere else is a validation
//! error (`policy-test-outside-tests`).
//!
//! The action kinds and reason codes are spelled here as the planner spells them
//! (`crate::plan::ActionKind`, `crate::plan::ReasonCode`); the policy module cannot name the
//! planner's types (the planner depends on it), and a test in `crate::policytest` proves the
//! two lists are the same.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::model::{NAME_PATTERN, Slot};

/// The folder of the policy directory that holds the PolicyTest files.
pub const TESTS_DIR: &str = "tests";

/// A policy test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTestSpec {
    /// The time the test plans at (RFC 3339, e.g. `2026-03-01T09:00:00Z`).
    #[schemars(extend("format" = "date-time"))]
    pub now: String,
    /// The directory the test observes instead of the real one.
    #[serde(default)]
    pub directory: Option<DirectoryFixture>,
    /// Credentials Keyfleet already recorded (empty: nobody holds anything yet).
    #[serde(default)]
    pub inventory: Vec<HeldCredential>,
    /// Policy documents (full objects with apiVersion, kind, metadata, spec) laid over the
    /// policy set for this test: an object with the kind and name of one in the set replaces
    /// it, any other is added.
    #[serde(default)]
    #[schemars(with = "Vec<serde_json::Map<String, serde_json::Value>>")]
    pub policy: Vec<serde_json::Value>,
    /// What the test expects.
    pub expect: Expectation,
}

/// The users and groups a test observes, in the `file` directory format: inline, or in a
/// data file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DirectoryFixture {
    /// The `Directory` object this stands for; may be left out when the policy set has only
    /// one. Directories of the set the fixture does not stand for are unreadable in the
    /// test (so the observation is incomplete and nothing is revoked).
    #[serde(default)]
    #[schemars(regex(pattern = NAME_PATTERN))]
    pub name: Option<String>,
    /// A data file in the `file` directory format, relative to the test file (instead of
    /// `users` and `groups`).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// The users, as in a `file` directory's data file.
    #[serde(default)]
    pub users: Vec<FixtureUser>,
    /// The groups, as in a `file` directory's data file.
    #[serde(default)]
    pub groups: Vec<FixtureGroup>,
}

/// A user of a directory fixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FixtureUser {
    /// The uid.
    pub uid: String,
    /// The common name.
    pub cn: String,
    /// E-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail: Option<String>,
    /// User principal name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upn: Option<String>,
    /// Distinguished name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dn: Option<String>,
    /// The account is disabled.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// Other attributes (scalars).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(with = "BTreeMap<String, Scalar>")]
    pub attributes: BTreeMap<String, serde_json::Value>,
}

/// An attribute value: a string, number or boolean.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)] // only describes the schema of `FixtureUser::attributes`
enum Scalar {
    /// Text.
    String(String),
    /// A number.
    Number(f64),
    /// A boolean.
    Bool(bool),
}

/// A group of a directory fixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FixtureGroup {
    /// The group's name.
    pub name: String,
    /// Member uids.
    #[serde(default)]
    pub members: Vec<String>,
    /// Nested member groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// One credential the inventory fixture says a user holds: a card bound to them under a
/// template, with a certificate in each listed slot. The certificates are what the policy
/// asks of that user now (so they are up to date unless `notAfter` says otherwise); for a
/// user the policy no longer entitles, they carry the template's settings for the slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeldCredential {
    /// The uid.
    pub user: String,
    /// The template the credential was issued under.
    pub template: String,
    /// The card's id (e.g. `virtual-alice`).
    pub card: String,
    /// The slots holding certificates (default: every slot of the template).
    #[serde(default)]
    pub slots: Vec<Slot>,
    /// The card's state (default `active`).
    #[serde(default)]
    pub status: HeldStatus,
    /// When the certificates expire (RFC 3339; default: the certificate's validity after
    /// `now`).
    #[serde(default)]
    #[schemars(extend("format" = "date-time"))]
    pub not_after: Option<String>,
}

/// The state of a card in the inventory fixture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HeldStatus {
    /// Bound, certificates valid.
    #[default]
    Active,
    /// Bound, certificates on hold.
    Suspended,
    /// Certificates revoked; the card waits to be wiped.
    Revoked,
    /// Reported lost; certificates revoked.
    Lost,
}

/// What a test expects: a plan, or validation errors (exactly one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("oneOf" = [{"required": ["plan"]}, {"required": ["validationErrors"]}]))]
pub struct Expectation {
    /// The plan must contain these actions.
    #[serde(default)]
    pub plan: Option<ExpectedPlan>,
    /// The policy set (with the test's `policy` documents) must fail validation, with an
    /// error containing each of these texts (matched against `file:line: kind/name: path:
    /// message`).
    #[serde(default)]
    pub validation_errors: Option<Vec<String>>,
}

/// The expected plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExpectedPlan {
    /// Actions the plan must contain (each matches a different action).
    #[serde(default)]
    pub actions: Vec<ExpectedAction>,
    /// The plan must contain nothing but these actions.
    #[serde(default)]
    pub exactly: bool,
    /// Whether the safety valve must have tripped (true) or not (false); left out, either.
    #[serde(default)]
    pub safety_valve_tripped: Option<bool>,
}

/// An expected action; fields left out match anything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExpectedAction {
    /// The action kind.
    pub kind: ExpectedKind,
    /// The uid.
    pub user: String,
    /// The template.
    #[serde(default)]
    pub template: Option<String>,
    /// The reason code.
    #[serde(default)]
    pub reason: Option<ExpectedReason>,
}

/// Action kinds, as the planner names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)]
pub enum ExpectedKind {
    Issue,
    Renew,
    Reissue,
    Suspend,
    Resume,
    Revoke,
    Retire,
    RotatePuk,
    KeyHistory,
}

/// Reason codes, as the planner names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)]
pub enum ExpectedReason {
    NotIssued,
    InterruptedIssuance,
    NearingExpiry,
    Expired,
    TemplateChanged,
    Superseded,
    SlotAdded,
    SlotRemoved,
    UserDisabled,
    UserEnabled,
    NoLongerEntitled,
    UserGone,
    TemplateRemoved,
    CardRevoked,
    HolderPinUnknown,
    CardSuspect,
    KeyReplaced,
    CardLost,
    CardDamaged,
    CardForgotten,
    CardFound,
    ReplacesLost,
    ReplacesDamaged,
    TemporaryForForgotten,
    TemporaryEnded,
    RotatePuk,
    KeyHistory,
}

impl ExpectedKind {
    /// Every kind.
    pub const ALL: [ExpectedKind; 9] = [
        ExpectedKind::Issue,
        ExpectedKind::Renew,
        ExpectedKind::Reissue,
        ExpectedKind::Suspend,
        ExpectedKind::Resume,
        ExpectedKind::Revoke,
        ExpectedKind::Retire,
        ExpectedKind::RotatePuk,
        ExpectedKind::KeyHistory,
    ];
}

impl ExpectedReason {
    /// Every reason code.
    pub const ALL: [ExpectedReason; 27] = [
        ExpectedReason::NotIssued,
        ExpectedReason::InterruptedIssuance,
        ExpectedReason::NearingExpiry,
        ExpectedReason::Expired,
        ExpectedReason::TemplateChanged,
        ExpectedReason::Superseded,
        ExpectedReason::SlotAdded,
        ExpectedReason::SlotRemoved,
        ExpectedReason::UserDisabled,
        ExpectedReason::UserEnabled,
        ExpectedReason::NoLongerEntitled,
        ExpectedReason::UserGone,
        ExpectedReason::TemplateRemoved,
        ExpectedReason::CardRevoked,
        ExpectedReason::HolderPinUnknown,
        ExpectedReason::CardSuspect,
        ExpectedReason::KeyReplaced,
        ExpectedReason::CardLost,
        ExpectedReason::CardDamaged,
        ExpectedReason::CardForgotten,
        ExpectedReason::CardFound,
        ExpectedReason::ReplacesLost,
        ExpectedReason::ReplacesDamaged,
        ExpectedReason::TemporaryForForgotten,
        ExpectedReason::TemporaryEnded,
        ExpectedReason::RotatePuk,
        ExpectedReason::KeyHistory,
    ];
}
