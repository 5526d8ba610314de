//! Issue 19 points 3 and 4: `keyfleet test` (PolicyTests, JUnit XML), and the operations kit
//! (shell completions, man page, Prometheus alerts checked by promtool, the Grafana dashboard,
//! the CI examples).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{keyfleet, repo_root};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// A parsed JUnit report: (tests, failures, errors) of the suite, and each testcase's name
/// with its failure or error message.
struct Junit {
    tests: usize,
    failures: usize,
    errors: usize,
    cases: Vec<(String, Option<String>, Option<String>)>,
}

fn parse_junit(path: &Path) -> Junit {
    let text = std::fs::read_to_string(path).expect("read junit");
    let doc = roxmltree::Document::parse(&text).expect("JUnit XML parses");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let suite = root
        .children()
        .find(|n| n.has_tag_name("testsuite"))
        .expect("a testsuite");
    let num = |n: roxmltree::Node<'_, '_>, a: &str| -> usize {
        n.attribute(a)
            .unwrap_or_else(|| panic!("{a} attribute"))
            .parse()
            .expect("a number")
    };
    let cases = suite
        .children()
        .filter(|n| n.has_tag_name("testcase"))
        .map(|c| {
            let msg = |tag: &str| {
                c.children()
                    .find(|n| n.has_tag_name(tag))
                    .map(|n| n.text().unwrap_or_default().to_string())
            };
            (
                c.attribute("name").expect("name").to_string(),
                msg("failure"),
                msg("error"),
            )
        })
        .collect();
    Junit {
        tests: num(suite, "tests"),
        failures: num(suite, "failures"),
        errors: num(suite, "errors"),
        cases,
    }
}

#[test]
fn the_quickstart_policy_tests_pass_with_a_junit_report() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let junit = tmp.path().join("junit.xml");
    let j = junit.display().to_string();
    let r = keyfleet(&["test", "-C", "examples/quickstart", "--junit", &j]);
    r.expect_code(0)
        .stdout_has("PASS  finance-user-gets-a-credential")
        .stdout_has("PASS  disabled-employee-is-suspended")
        .stdout_has("PASS  leaving-the-groups-revokes");
    let report = parse_junit(&junit);
    assert_eq!((report.failures, report.errors), (0, 0));
    assert!(report.tests >= 5, "{}", report.tests);
    assert_eq!(report.cases.len(), report.tests);
    let names: BTreeSet<&str> = report.cases.iter().map(|c| c.0.as_str()).collect();
    for want in [
        "finance-user-gets-a-credential",
        "disabled-employee-is-suspended",
        "leaving-the-groups-revokes",
        "mass-departure-trips-the-safety-valve",
        "new-subject-reissues-employee-cards",
        "assignment-to-a-missing-template-is-refused",
    ] {
        assert!(names.contains(want), "{want} not in {names:?}");
    }
    assert!(report.cases.iter().all(|c| c.1.is_none() && c.2.is_none()));
}

/// The quickstart with its tests/ still validates and plans (tests are not policy), and a
/// PolicyTest outside tests/ is a validation error.
#[test]
fn policy_tests_are_not_part_of_the_policy_set() {
    keyfleet(&["validate", "-C", "examples/quickstart"])
        .expect_code(0)
        .stdout_has("valid (8 objects");
    let tmp = tempfile::tempdir().expect("tempdir");
    let policy = tmp.path().join("policy");
    copy_dir(&repo_root().join("examples/quickstart"), &policy);
    let p = policy.display().to_string();
    let state = tmp.path().join("state").display().to_string();
    // Plan exits 2: changes pending (the quickstart's first plan issues cards).
    keyfleet(&["plan", "-C", &p, "--state-dir", &state])
        .expect_code(2)
        .stdout_has("issue");
    std::fs::copy(
        policy.join("tests/lifecycle.yaml"),
        policy.join("misplaced.yaml"),
    )
    .expect("copy");
    keyfleet(&["validate", "-C", &p]).expect_code(1).stderr_has(
        "misplaced.yaml:3: PolicyTest/disabled-employee-is-suspended: a PolicyTest is not policy",
    );
    keyfleet(&["plan", "-C", &p, "--state-dir", &state]).expect_code(1);
}

const FAILING: &str = "\
apiVersion: keyfleet.dev/v1
kind: PolicyTest
metadata: {name: wrong-template}
spec:
  now: 2026-03-02T09:00:00Z
  directory:
    users: [{uid: frank, cn: Frank Fischer, mail: frank@example.com}]
    groups: [{name: finance, members: [frank]}]
  expect:
    plan:
      exactly: true
      actions: [{kind: issue, user: frank, template: contractor-virtual}]
---
apiVersion: keyfleet.dev/v1
kind: PolicyTest
metadata: {name: valid-set-expected-invalid}
spec:
  now: 2026-03-02T09:00:00Z
  expect:
    validationErrors: [\"no CardTemplate named\"]
---
apiVersion: keyfleet.dev/v1
kind: PolicyTest
metadata: {name: still-passes}
spec:
  now: 2026-03-02T09:00:00Z
  directory:
    users: [{uid: judy, cn: Judy Jones, mail: judy@example.com}]
    groups: [{name: contractors, members: [judy]}]
  expect:
    plan:
      exactly: true
      actions: [{kind: issue, user: judy, template: contractor-virtual, reason: not-issued}]
";

#[test]
fn failing_policy_tests_exit_1_and_say_what_differed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let policy = tmp.path().join("policy");
    copy_dir(&repo_root().join("examples/quickstart"), &policy);
    std::fs::remove_dir_all(policy.join("tests")).expect("rm tests");
    std::fs::create_dir_all(policy.join("tests")).expect("mkdir");
    std::fs::write(policy.join("tests/failing.yaml"), FAILING).expect("write");
    // A misspelt kind under tests/ is reported, not skipped.
    std::fs::write(
        policy.join("tests/typo.yaml"),
        "apiVersion: keyfleet.dev/v1\nkind: PolicyTst\nmetadata: {name: typo}\nspec: {}\n",
    )
    .expect("write");
    let junit = tmp.path().join("junit.xml");
    let (p, j) = (policy.display().to_string(), junit.display().to_string());
    let r = keyfleet(&["test", "-C", &p, "--junit", &j]);
    r.expect_code(1)
        .stdout_has("FAIL  wrong-template")
        .stdout_has("expected, not planned: issue frank contractor-virtual")
        .stdout_has("planned, not expected: issue frank employee-virtual (not-issued:")
        .stdout_has("FAIL  valid-set-expected-invalid")
        .stdout_has(
            "the policy set validates; expected errors containing: \"no CardTemplate named\"",
        )
        .stdout_has("PASS  still-passes")
        .stdout_has("ERROR ")
        .stdout_has("unknown kind \"PolicyTst\"")
        .stdout_has("1 passed, 2 failed, 1 file problem(s).");
    let report = parse_junit(&junit);
    assert_eq!(
        (report.tests, report.failures, report.errors),
        (4, 2, 1),
        "{:?}",
        report.cases
    );
    let case = |name: &str| {
        report
            .cases
            .iter()
            .find(|c| c.0 == name)
            .unwrap_or_else(|| panic!("{name}: {:?}", report.cases))
    };
    let wrong = case("wrong-template").1.as_deref().expect("a failure");
    assert!(wrong.contains("expected, not planned: issue frank contractor-virtual"));
    assert!(case("valid-set-expected-invalid").1.is_some());
    assert!(case("still-passes").1.is_none());
    let typo = case("typo").2.as_deref().expect("an error");
    assert!(typo.contains("unknown kind"), "{typo}");
}

/// The metric sample names the controller exports, from its own registry (every family given
/// a sample, since empty families are not rendered): counters with `_total`, histograms with
/// `_bucket`, `_sum` and `_count`.
fn exported_metrics() -> BTreeSet<String> {
    let metrics = keyfleet::controller::metrics::Metrics::new();
    metrics.count_pass(true, 0.1);
    metrics.count_actions("issue", "done", 1);
    metrics.observed("directory/people", 1.0);
    metrics.crl(&[("local-ca", Some(1.0), true, true)]);
    let text = metrics.render();
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                out.insert(format!("{name}_total"));
            }
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{s}"));
                }
            }
            _ => {
                out.insert(name.to_string());
            }
        }
    }
    assert!(out.contains("keyfleet_passes_total"), "{out:?}");
    out
}

/// Every `keyfleet_*` name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("keyfleet_") {
        let boundary = rest[..i]
            .chars()
            .last()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if boundary {
            out.push(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    out
}

fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn the_grafana_dashboard_queries_only_exported_metrics() {
    let text = std::fs::read_to_string(repo_root().join("deploy/grafana/keyfleet.json"))
        .expect("read dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(dashboard["title"], "Keyfleet");
    let mut queries = Vec::new();
    exprs(&dashboard["panels"], &mut queries);
    assert!(queries.len() >= 10, "{queries:?}");
    let exported = exported_metrics();
    let mut used = BTreeSet::new();
    for q in &queries {
        let names = metric_names(q);
        assert!(!names.is_empty(), "query without a keyfleet metric: {q}");
        for n in names {
            assert!(exported.contains(&n), "{n} (in {q}) is not exported");
            used.insert(n);
        }
    }
    // The dashboard covers the controller's health, the valve, backoff, CRLs and expiry.
    for n in [
        "keyfleet_passes_total",
        "keyfleet_safety_valve_held_revocations",
        "keyfleet_backoff_objects",
        "keyfleet_crl_next_update_seconds",
        "keyfleet_certificates_expiring_30d",
    ] {
        assert!(used.contains(n), "{n} not on the dashboard");
    }
}

#[test]
fn the_prometheus_alerts_pass_promtool_and_use_exported_metrics() {
    let rules = repo_root().join("deploy/prometheus/alerts.yaml");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool must be installed (scripts/install-deps --test)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("SUCCESS"), "{text}");
    // The alerts fire on the series of alerts_test.yaml, and only when they should.
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .arg(repo_root().join("deploy/prometheus/alerts_test.yaml"))
        .output()
        .expect("promtool");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    // promtool accepts any metric name: check them against the controller's.
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&rules).expect("read")).expect("yaml");
    let exported = exported_metrics();
    let mut alerts = BTreeSet::new();
    for group in yaml["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let expr = rule["expr"].as_str().expect("expr");
            alerts.insert(rule["alert"].as_str().expect("alert").to_string());
            for n in metric_names(expr) {
                assert!(exported.contains(&n), "{n} (in {expr}) is not exported");
            }
        }
    }
    for a in [
        "KeyfleetCrlNearNextUpdate",
        "KeyfleetSafetyValveTripped",
        "KeyfleetPassesFailing",
        "KeyfleetActionsInBackoff",
        "KeyfleetCertificatesExpiringUnrenewed",
    ] {
        assert!(alerts.contains(a), "{a} missing from {alerts:?}");
    }
}

fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_keyfleet"))
        .parent()
        .expect("bin dir")
        .to_path_buf()
}

#[test]
fn bash_completion_loads_and_completes_subcommands() {
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args([
            "-c",
            "source <(keyfleet completions bash) && complete -p keyfleet && \
             COMP_WORDS=(keyfleet comp) COMP_CWORD=1 COMP_LINE='keyfleet comp' COMP_POINT=13 && \
             _keyfleet keyfleet comp keyfleet && echo \"${COMPREPLY[@]}\"",
        ])
        .env("PATH", path)
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("-F _keyfleet keyfleet"),
        "the completion function is registered: {stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.trim() == "completions"),
        "{stdout}"
    );
    for (shell, needle) in [
        ("zsh", "#compdef keyfleet"),
        ("fish", "complete -c keyfleet"),
    ] {
        keyfleet(&["completions", shell])
            .expect_code(0)
            .stdout_has(needle)
            .stdout_has("policy-dir");
    }
    keyfleet(&["completions", "tcsh"]).expect_code(2);
}

#[test]
fn the_man_page_documents_every_subcommand() {
    let r = keyfleet(&["man"]);
    r.expect_code(0).stdout_has(".TH keyfleet 1");
    r.stdout_has(".SH SUBCOMMANDS");
    for sub in [
        "validate",
        "plan",
        "apply",
        "test",
        "completions",
        "man",
        "audit\\-log",
    ] {
        r.stdout_has(&format!("keyfleet\\-{sub}(1)"));
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path().display().to_string();
    keyfleet(&["man", "--dir", &d]).expect_code(0);
    let page = std::fs::read_to_string(tmp.path().join("keyfleet-test.1")).expect("page");
    assert!(page.contains("junit"), "{page}");
    assert!(tmp.path().join("keyfleet.1").is_file());
}

#[test]
fn the_ci_examples_run_validate_test_plan_and_apply() {
    let gh =
        std::fs::read_to_string(repo_root().join("examples/gitops/.github/workflows/keyfleet.yml"))
            .expect("workflow");
    let gl = std::fs::read_to_string(repo_root().join("examples/gitops/.gitlab-ci.yml"))
        .expect("gitlab-ci");
    for text in [&gh, &gl] {
        serde_yaml::from_str::<serde_yaml::Value>(text).expect("valid YAML");
        for step in [
            "keyfleet validate",
            "keyfleet test -C . --junit",
            "-out \"$PLANS/$tree.plan\" --format markdown",
            "keyfleet apply -C . \"$plan\"",
        ] {
            assert!(text.contains(step), "{step} missing");
        }
    }
}

/// A reader that closes the pipe early (`keyfleet … | head`) ends the command quietly with
/// 141, as SIGPIPE would, instead of a panic and its backtrace.
#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    let state = tempfile::tempdir().unwrap();
    let quickstart = repo_root().join("examples/quickstart");
    let (policy, state) = (
        quickstart.to_str().unwrap(),
        state.path().to_str().unwrap().to_string(),
    );
    let inventory = ["inventory", "-C", policy, "--state-dir", &state];
    for args in [&["completions", "bash"][..], &inventory[..]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keyfleet"))
            .args(args)
            .env_remove("KEYFLEET_STATE_DIR")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run keyfleet");
        // Closed before the command writes anything.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            out.status.code() == Some(141),
            "{args:?}: {:?} {stderr}",
            out.status
        );
    }
}
