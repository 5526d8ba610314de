//! Policy tests: run the `PolicyTest`s under a policy directory's `tests/` through the same
//! pure code `plan` uses (desired state, then the planner), with the test's fixtures in place
//! of the directory and the inventory.
//!
//! ```text
//!   policy set (+ the test's policy documents) ─► load + validate ─► validationErrors?
//!   directory fixture ─► file directory reader ─► desired::compute ─┐
//!   inventory fixture ─────────────────────────────────────────────┴► plan::plan(now) ─► expect.plan?
//! ```
//!
//! Nothing here opens a state directory, a store, a directory server, a CA or a card; the
//! only files read are the policy set, the tests and their fixture files. Results are values:
//! the CLI prints them and writes JUnit XML.

pub mod fixture;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::desired;
use crate::plan::{self, Action, Plan, PlanOptions, Presence, SafetyLimits};
use crate::policy::load::{Overlay, load_policy_set, load_with_overlay};
use crate::policy::test_model::{ExpectedAction, ExpectedPlan, PolicyTestSpec};
use crate::policy::tests_load::{LoadedTest, load_policy_tests};
use crate::policy::{Diagnostic, Diagnostics, Object, PolicySet};

/// The outcome of one test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Everything expected was there.
    Pass,
    /// What differed, one line each.
    Fail(Vec<String>),
}

/// One test's result.
#[derive(Debug, Clone)]
pub struct TestResult {
    /// `metadata.name`.
    pub name: String,
    /// The test file.
    pub file: PathBuf,
    /// The line the test starts on.
    pub line: usize,
    /// Pass or what differed.
    pub outcome: Outcome,
    /// How long it took.
    pub duration: std::time::Duration,
}

/// Every test of a policy directory, and the problems loading them (each a failure too).
#[derive(Debug, Default)]
pub struct Report {
    /// The tests run, in file order.
    pub results: Vec<TestResult>,
    /// Files under `tests/` that could not be loaded as tests.
    pub problems: Vec<Diagnostic>,
}

impl Report {
    /// True when every test passed and every file under `tests/` loaded.
    pub fn passed(&self) -> bool {
        self.problems.is_empty() && self.results.iter().all(|r| r.outcome == Outcome::Pass)
    }

    /// How many tests failed.
    pub fn failures(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.outcome != Outcome::Pass)
            .count()
    }
}

/// Runs every test under `root/tests/`.
pub fn run_all(root: &Path) -> Report {
    let loaded = load_policy_tests(root);
    // The policy set as checked in, loaded once for every test without policy documents.
    let base = load_policy_set(root);
    let results = loaded
        .tests
        .iter()
        .map(|loaded| {
            let started = std::time::Instant::now();
            let outcome = run_one(root, &base, loaded);
            let t = &loaded.test;
            TestResult {
                name: t.name.clone(),
                file: t.file.clone(),
                line: t.line,
                outcome,
                duration: started.elapsed(),
            }
        })
        .collect();
    Report {
        results,
        problems: loaded.problems,
    }
}

/// The test's policy documents as one YAML text, and the line each starts on in that text.
fn overlay(test: &Object<PolicyTestSpec>) -> Result<(Overlay, Vec<usize>), serde_yaml::Error> {
    let mut text = String::new();
    let mut starts = Vec::new();
    for doc in &test.spec.policy {
        text.push_str("---\n");
        starts.push(text.lines().count() + 1);
        text.push_str(&serde_yaml::to_string(doc)?);
    }
    let overlay = Overlay {
        file: test.file.clone(),
        text,
    };
    Ok((overlay, starts))
}

/// Points diagnostics about the overlay text at the test file: the line of the `policy`
/// document they are in (kind, name and path still say where inside it).
fn relocate(mut d: Diagnostics, loaded: &LoadedTest, starts: &[usize]) -> Diagnostics {
    for diag in &mut d.0 {
        if diag.file != loaded.test.file {
            continue;
        }
        let doc = starts.iter().rposition(|s| *s <= diag.line);
        if let Some(line) = doc.and_then(|i| loaded.policy_lines.get(i)) {
            diag.line = *line;
            diag.column = None;
        }
    }
    d
}

fn errors_of(d: &Diagnostics) -> Vec<String> {
    d.errors().map(ToString::to_string).collect()
}

/// Runs one test against the policy set at `root` (`base` is that set, already loaded).
pub fn run_one(root: &Path, base: &Result<PolicySet, Diagnostics>, loaded: &LoadedTest) -> Outcome {
    let test = &loaded.test;
    let spec = &test.spec;
    let Ok(now) = OffsetDateTime::parse(&spec.now, &Rfc3339) else {
        return Outcome::Fail(vec![format!(
            "now: {:?} is not an RFC 3339 time (e.g. 2026-03-01T09:00:00Z)",
            spec.now
        )]);
    };
    let overlaid;
    let effective = if spec.policy.is_empty() {
        base
    } else {
        overlaid = match overlay(test) {
            Ok((o, starts)) => {
                load_with_overlay(root, &o).map_err(|d| relocate(d, loaded, &starts))
            }
            Err(e) => return Outcome::Fail(vec![format!("policy: cannot read documents: {e}")]),
        };
        &overlaid
    };
    match (&spec.expect.plan, &spec.expect.validation_errors) {
        (Some(_), Some(_)) | (None, None) => Outcome::Fail(vec![
            "expect: needs exactly one of plan, validationErrors".to_string(),
        ]),
        (None, Some(wanted)) => expect_errors(effective, wanted),
        (Some(expected), None) => match effective {
            Err(d) => {
                let mut out = vec!["the policy set does not validate:".to_string()];
                out.extend(errors_of(d).into_iter().map(|e| format!("  {e}")));
                Outcome::Fail(out)
            }
            Ok(policy) => match plan_for(policy, base.as_ref().ok(), test, now) {
                Ok(plan) => compare(&plan, expected),
                Err(e) => Outcome::Fail(vec![e.to_string()]),
            },
        },
    }
}

fn expect_errors(effective: &Result<PolicySet, Diagnostics>, wanted: &[String]) -> Outcome {
    let found = match effective {
        Ok(_) => {
            return Outcome::Fail(vec![format!(
                "the policy set validates; expected errors containing: {}",
                wanted
                    .iter()
                    .map(|w| format!("{w:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )]);
        }
        Err(d) => errors_of(d),
    };
    let missing: Vec<String> = wanted
        .iter()
        .filter(|w| !found.iter().any(|f| f.contains(w.as_str())))
        .map(|w| format!("no validation error contains {w:?}"))
        .collect();
    if missing.is_empty() {
        return Outcome::Pass;
    }
    let mut out = missing;
    out.push("the errors were:".to_string());
    out.extend(found.into_iter().map(|e| format!("  {e}")));
    Outcome::Fail(out)
}

/// Desired state and plan for a test. The inventory fixture's certificates copy what the
/// policy set as checked in (`base`) asks, so a test's policy documents show as changes.
fn plan_for(
    policy: &PolicySet,
    base: Option<&PolicySet>,
    test: &Object<PolicyTestSpec>,
    now: OffsetDateTime,
) -> Result<Plan, fixture::FixtureError> {
    let spec = &test.spec;
    let observed = fixture::observations(policy, spec.directory.as_ref(), &test.file)?;
    let wanted = desired::compute(policy, &observed);
    let base_desired = match base {
        Some(b) if !spec.policy.is_empty() => {
            fixture::observations(b, spec.directory.as_ref(), &test.file)
                .ok()
                .map(|o| desired::compute(b, &o))
        }
        _ => None,
    };
    let mut sources: Vec<&desired::Desired> = base_desired.iter().collect();
    sources.push(&wanted);
    let inventory = fixture::inventory(policy, &sources, &spec.inventory, now)?;
    // Virtual cards are always present; other cards are not attached in a test.
    let presence = Presence {
        cards: inventory
            .cards
            .values()
            .filter(|c| c.card_type == crate::policy::model::CardType::Virtual)
            .map(|c| c.id.clone())
            .collect(),
        blanks: Vec::new(),
    };
    let safety = &policy.settings.spec.safety;
    Ok(plan::plan(
        &wanted,
        &inventory,
        &presence,
        &PlanOptions {
            now,
            limits: SafetyLimits {
                max_revocations: safety.max_revocations,
                max_revocation_percent: safety.max_revocation_percent,
            },
            allow_mass_revocation: false,
            targets: None,
            threads: 1,
        },
    ))
}

/// The planner's spelling of an expected kind or reason (they share serde names).
fn spelled<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn matches(e: &ExpectedAction, a: &Action) -> bool {
    spelled(&e.kind) == a.kind.as_str()
        && e.user == a.user
        && e.template
            .as_ref()
            .is_none_or(|t| a.template.as_deref() == Some(t.as_str()))
        && e.reason
            .as_ref()
            .is_none_or(|r| spelled(r) == spelled(&a.reason.code))
}

fn show_expected(e: &ExpectedAction) -> String {
    let mut s = format!("{} {}", spelled(&e.kind), e.user);
    if let Some(t) = &e.template {
        s.push_str(&format!(" {t}"));
    }
    if let Some(r) = &e.reason {
        s.push_str(&format!(" ({})", spelled(r)));
    }
    s
}

fn show_action(a: &Action) -> String {
    format!(
        "{} {} {} ({}: {})",
        a.kind.as_str(),
        a.user,
        a.template.as_deref().unwrap_or("-"),
        spelled(&a.reason.code),
        a.reason.message
    )
}

/// Compares a plan with the expectation: each expected action must match a different planned
/// action; with `exactly`, no planned action may be left over.
pub fn compare(plan: &Plan, expected: &ExpectedPlan) -> Outcome {
    let mut used = BTreeSet::new();
    let mut problems = Vec::new();
    for e in &expected.actions {
        let hit = plan
            .actions
            .iter()
            .enumerate()
            .find(|(i, a)| !used.contains(i) && matches(e, a));
        match hit {
            Some((i, _)) => {
                used.insert(i);
            }
            None => problems.push(format!("expected, not planned: {}", show_expected(e))),
        }
    }
    if let Some(want) = expected.safety_valve_tripped
        && want != plan.safety_valve.tripped
    {
        let v = &plan.safety_valve;
        problems.push(format!(
            "the safety valve {}: the plan revokes {} of {} holders (limits {} users, {}%)",
            if v.tripped { "tripped" } else { "did not trip" },
            v.revoked_users,
            v.holders,
            v.limits.max_revocations,
            v.limits.max_revocation_percent
        ));
    }
    if expected.exactly {
        for (i, a) in plan.actions.iter().enumerate() {
            if !used.contains(&i) {
                problems.push(format!("planned, not expected: {}", show_action(a)));
            }
        }
    }
    if problems.is_empty() {
        return Outcome::Pass;
    }
    if !plan.complete {
        problems.push(format!(
            "note: the observation was incomplete ({} revocation(s) withheld)",
            plan.withheld_revocations
        ));
    }
    if plan.refused() && expected.safety_valve_tripped.is_none() {
        problems.push("note: the safety valve tripped".to_string());
    }
    for e in &plan.errors {
        problems.push(format!(
            "note: cannot compute {} / {}: {}",
            e.user, e.template, e.message
        ));
    }
    if !expected.exactly {
        problems.push("the plan was:".to_string());
        problems.extend(plan.actions.iter().map(|a| format!("  {}", show_action(a))));
    }
    Outcome::Fail(problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{ActionKind, ReasonCode};
    use crate::policy::test_model::{ExpectedKind, ExpectedReason};

    fn quickstart() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart")
    }

    fn test_from(yaml: &str) -> LoadedTest {
        let spec: PolicyTestSpec = serde_yaml::from_str(yaml).unwrap();
        LoadedTest {
            test: Object {
                name: "t".into(),
                file: quickstart().join("tests/t.yaml"),
                line: 1,
                spec,
            },
            policy_lines: vec![],
        }
    }

    fn outcome(yaml: &str) -> Outcome {
        let root = quickstart();
        let base = load_policy_set(&root);
        run_one(&root, &base, &test_from(yaml))
    }

    const DIR: &str = "directory:\n  users: [{uid: alice, cn: Alice, mail: a@example.com}]\n  groups: [{name: engineering, members: [alice]}]\n";

    #[test]
    fn each_expected_action_needs_its_own_planned_action() {
        // alice holds both slots, expired: two renewals. Three expected renewals fail.
        let inv = "inventory: [{user: alice, template: employee-virtual, card: c, notAfter: 2026-01-01T00:00:00Z}]\n";
        let renew = "    - {kind: renew, user: alice, reason: expired}\n";
        let two = format!(
            "now: 2026-03-01T00:00:00Z\n{DIR}{inv}expect:\n  plan:\n    exactly: true\n    actions:\n{renew}{renew}"
        );
        assert_eq!(outcome(&two), Outcome::Pass);
        let three = format!("{two}{renew}");
        let Outcome::Fail(lines) = outcome(&three) else {
            panic!("three renewals cannot match two")
        };
        assert_eq!(lines[0], "expected, not planned: renew alice (expired)");
        // Only one expected and not exactly: the other renewal is allowed.
        let one =
            format!("now: 2026-03-01T00:00:00Z\n{DIR}{inv}expect:\n  plan:\n    actions:\n{renew}");
        assert_eq!(outcome(&one), Outcome::Pass);
        let exact_one = one.replace("    actions:", "    exactly: true\n    actions:");
        let Outcome::Fail(lines) = outcome(&exact_one) else {
            panic!("exactly refuses the extra renewal")
        };
        assert!(
            lines[0].starts_with("planned, not expected: renew alice employee-virtual (expired:"),
            "{lines:?}"
        );
    }

    #[test]
    fn fixture_and_expectation_mistakes_fail_the_test() {
        let fail = |yaml: &str| match outcome(yaml) {
            Outcome::Fail(lines) => lines.join("\n"),
            Outcome::Pass => panic!("passed: {yaml}"),
        };
        let expect = "expect: {plan: {actions: []}}\n";
        assert!(fail(&format!("now: yesterday\n{expect}")).contains("not an RFC 3339 time"));
        assert!(
            fail(&format!("now: 2026-03-01T00:00:00Z\n{DIR}inventory: [{{user: alice, template: nope, card: c}}]\n{expect}"))
                .contains("no CardTemplate named `nope`")
        );
        assert!(
            fail(&format!(
                "now: 2026-03-01T00:00:00Z\ndirectory: {{name: ldap, users: []}}\n{expect}"
            ))
            .contains("no Directory named `ldap`")
        );
        assert!(
            fail(&format!("now: 2026-03-01T00:00:00Z\ndirectory: {{file: x.yaml, users: [{{uid: a, cn: A}}]}}\n{expect}"))
                .contains("either `file` or `users`")
        );
        assert!(
            fail("now: 2026-03-01T00:00:00Z\nexpect: {}\n")
                .contains("exactly one of plan, validationErrors")
        );
        // The inline directory goes through the file directory reader and its checks.
        assert!(
            fail(&format!("now: 2026-03-01T00:00:00Z\ndirectory: {{groups: [{{name: g, members: [ghost]}}]}}\n{expect}"))
                .contains("ghost")
        );
        assert!(
            fail(&format!(
                "now: 2026-03-01T00:00:00Z\n{DIR}expect: {{plan: {{safetyValveTripped: true}}}}\n"
            ))
            .contains("the safety valve did not trip")
        );
    }

    /// The test model spells every action kind and reason code as the planner does, and no
    /// other.
    #[test]
    fn expected_kinds_and_reasons_are_the_planners() {
        let kinds = ActionKind::ALL;
        // A new ActionKind variant breaks this match until it is listed above.
        for k in kinds {
            match k {
                ActionKind::Issue
                | ActionKind::Renew
                | ActionKind::Reissue
                | ActionKind::Suspend
                | ActionKind::Resume
                | ActionKind::Revoke
                | ActionKind::Retire
                | ActionKind::RotatePuk
                | ActionKind::KeyHistory => {}
            }
        }
        let planner_kinds: BTreeSet<String> = kinds.iter().map(spelled).collect();
        let test_kinds: BTreeSet<String> = ExpectedKind::ALL.iter().map(spelled).collect();
        assert_eq!(planner_kinds, test_kinds);
        for k in ExpectedKind::ALL {
            let back: ActionKind = serde_json::from_value(serde_json::json!(spelled(&k))).unwrap();
            assert_eq!(back.as_str(), spelled(&k));
        }
        for r in ExpectedReason::ALL {
            let back: ReasonCode = serde_json::from_value(serde_json::json!(spelled(&r))).unwrap();
            assert_eq!(spelled(&back), spelled(&r));
        }
        // Every planner reason is spelt by the test model: the planner's codes deserialize
        // from the test model's list only if the counts agree too.
        let planner_reasons = [
            ReasonCode::NotIssued,
            ReasonCode::InterruptedIssuance,
            ReasonCode::NearingExpiry,
            ReasonCode::Expired,
            ReasonCode::TemplateChanged,
            ReasonCode::Superseded,
            ReasonCode::SlotAdded,
            ReasonCode::SlotRemoved,
            ReasonCode::UserDisabled,
            ReasonCode::UserEnabled,
            ReasonCode::NoLongerEntitled,
            ReasonCode::UserGone,
            ReasonCode::TemplateRemoved,
            ReasonCode::CardRevoked,
            ReasonCode::HolderPinUnknown,
            ReasonCode::CardSuspect,
            ReasonCode::KeyReplaced,
            ReasonCode::CardLost,
            ReasonCode::CardDamaged,
            ReasonCode::CardForgotten,
            ReasonCode::CardFound,
            ReasonCode::ReplacesLost,
            ReasonCode::ReplacesDamaged,
            ReasonCode::TemporaryForForgotten,
            ReasonCode::TemporaryEnded,
            ReasonCode::RotatePuk,
            ReasonCode::KeyHistory,
        ];
        // A new ReasonCode variant breaks this match until it is listed above (and in the
        // test model).
        for r in planner_reasons {
            match r {
                ReasonCode::NotIssued
                | ReasonCode::InterruptedIssuance
                | ReasonCode::NearingExpiry
                | ReasonCode::Expired
                | ReasonCode::TemplateChanged
                | ReasonCode::Superseded
                | ReasonCode::SlotAdded
                | ReasonCode::SlotRemoved
                | ReasonCode::UserDisabled
                | ReasonCode::UserEnabled
                | ReasonCode::NoLongerEntitled
                | ReasonCode::UserGone
                | ReasonCode::TemplateRemoved
                | ReasonCode::CardRevoked
                | ReasonCode::HolderPinUnknown
                | ReasonCode::CardSuspect
                | ReasonCode::KeyReplaced
                | ReasonCode::CardLost
                | ReasonCode::CardDamaged
                | ReasonCode::CardForgotten
                | ReasonCode::CardFound
                | ReasonCode::ReplacesLost
                | ReasonCode::ReplacesDamaged
                | ReasonCode::TemporaryForForgotten
                | ReasonCode::TemporaryEnded
                | ReasonCode::RotatePuk
                | ReasonCode::KeyHistory => {}
            }
            let t: ExpectedReason = serde_json::from_value(serde_json::json!(spelled(&r))).unwrap();
            assert_eq!(spelled(&t), spelled(&r));
        }
        assert_eq!(planner_reasons.len(), ExpectedReason::ALL.len());
    }
}
