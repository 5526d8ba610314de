//! Saved plans (`plan -out FILE`, `apply FILE`) and `--format markdown` on the quickstart
//! (issue 19 points 1 and 2): a saved plan applies exactly its actions when nothing changed,
//! and is refused, naming what changed, after a policy edit, a directory change, another
//! apply, a recovery that changed the inventory, or an edit of the file itself.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use serde_json::Value;

use crate::spine::Quickstart;

fn plan_path(q: &Quickstart) -> PathBuf {
    q.policy
        .parent()
        .expect("tmp root")
        .join("reviewed.plan.json")
}

fn saved(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("plan file")).expect("JSON")
}

fn saved_plan(q: &Quickstart) -> (PathBuf, Value) {
    let path = plan_path(q);
    let p = path.to_str().expect("utf-8");
    q.run(&["plan", "-out", p]).expect_code(2);
    let v = saved(&path);
    (path, v)
}

/// (user, slot) of every active certificate.
fn active_slots(q: &Quickstart) -> BTreeSet<(String, String)> {
    q.inventory()["certificates"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|c| c["status"] == "active")
        .map(|c| {
            (
                c["user"].as_str().unwrap_or_default().to_string(),
                c["slot"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// (user, slot) of every slot the saved plan's issue actions enrol.
fn planned_slots(plan: &Value) -> BTreeSet<(String, String)> {
    plan["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter(|a| a["kind"] == "issue")
        .flat_map(|a| {
            let user = a["user"].as_str().unwrap_or_default().to_string();
            a["slots"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |s| (user.clone(), s.as_str().unwrap_or_default().to_string()))
        })
        .collect()
}

/// The quickstart with its directory data outside the policy directory: a change to it is a
/// directory change, not a policy change.
fn quickstart_with_outside_data() -> (Quickstart, PathBuf) {
    let q = Quickstart::new();
    let text = std::fs::read_to_string(q.policy.join("people.yaml")).expect("people.yaml");
    let data = q.write_file("people.yaml", &text);
    std::fs::remove_file(q.policy.join("people.yaml")).expect("rm");
    q.edit(
        "directory.yaml",
        "path: people.yaml",
        &format!("path: {}", data.display()),
    );
    (q, data)
}

#[test]
fn a_saved_plan_applies_exactly_its_actions_when_nothing_changed() {
    let q = Quickstart::new();
    let path = plan_path(&q);
    let p = path.to_str().expect("utf-8");
    // Both spellings; --format is independent of the saved file.
    let md = q.run(&["plan", "--format", "markdown", "-out", p]);
    md.expect_code(2)
        .stdout_has("### Keyfleet plan")
        .stdout_has("**11 action(s):** 11 issue;")
        .stderr_has("Plan saved to");
    let first = saved(&path);
    q.run(&["plan", "--out", p]).expect_code(2);
    let plan = saved(&path);
    assert_eq!(plan["format"], "keyfleet-plan");
    assert_eq!(plan["version"], 1);
    assert_eq!(plan["basis"], first["basis"], "same inputs, same basis");
    assert!(
        plan["basis"]["policy"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(
        plan["basis"]["inventoryGeneration"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(
        plan["basis"]["directories"]["people"]["hash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(plan["plannedAt"].is_string());
    assert_eq!(plan["actions"].as_array().unwrap().len(), 11);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let r = q.run(&["apply", p, "--yes"]);
    r.expect_code(0)
        .stdout_has("policy, inventory and directories unchanged")
        .stdout_has("11 done, 0 failed");
    // The inventory holds exactly the planned certificates.
    assert_eq!(active_slots(&q), planned_slots(&plan));
    q.run(&["plan"]).expect_code(0).stdout_has("No changes");

    // The same plan again: the inventory it saw is gone.
    let again = q.run(&["apply", p, "--yes"]);
    again
        .expect_code(1)
        .stderr_has("changed since it was planned");
    assert!(again.stderr.contains(": inventory."), "{}", again.stderr);
    assert!(!again.stderr.contains("policy"), "{}", again.stderr);
}

#[test]
fn a_saved_plan_is_refused_after_a_policy_edit() {
    let q = Quickstart::new();
    let (path, _) = saved_plan(&q);
    // Even a comment: the reviewed text is not what would be applied.
    q.edit(
        "settings.yaml",
        "kind: Settings",
        "kind: Settings # edited after review",
    );
    let r = q.run(&["apply", path.to_str().unwrap(), "--yes"]);
    r.expect_code(1);
    assert!(
        r.stderr.contains("changed since it was planned at"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains(": policy."), "{}", r.stderr);
    assert!(active_slots(&q).is_empty(), "nothing applied");
}

#[test]
fn a_saved_plan_is_refused_after_a_directory_change() {
    let (q, data) = quickstart_with_outside_data();
    let (path, plan) = saved_plan(&q);
    assert_eq!(plan["actions"].as_array().unwrap().len(), 11);
    let text = std::fs::read_to_string(&data).unwrap();
    std::fs::write(
        &data,
        text.replace("cn: Alice Andersen", "cn: Alice Anders"),
    )
    .unwrap();
    let r = q.run(&["apply", path.to_str().unwrap(), "--yes"]);
    r.expect_code(1);
    assert!(r.stderr.contains(": directory people."), "{}", r.stderr);
    assert!(!r.stderr.contains("policy"), "{}", r.stderr);
    assert!(active_slots(&q).is_empty(), "nothing applied");
    // Planned again from the new data, it applies.
    let (path, _) = saved_plan(&q);
    q.run(&["apply", path.to_str().unwrap(), "--yes"])
        .expect_code(0)
        .stdout_has("11 done");
}

#[test]
fn a_saved_plan_is_refused_after_another_apply_changed_the_inventory() {
    let q = Quickstart::new();
    let (path, _) = saved_plan(&q);
    q.run(&["apply", "--yes", "--target", "user=alice"])
        .expect_code(0)
        .stdout_has("1 done");
    let r = q.run(&["apply", path.to_str().unwrap(), "--yes"]);
    r.expect_code(1);
    assert!(r.stderr.contains(": inventory."), "{}", r.stderr);
    let users: BTreeSet<String> = active_slots(&q).into_iter().map(|(u, _)| u).collect();
    assert_eq!(
        users,
        ["alice".to_string()].into(),
        "only the other apply's work"
    );
}

#[test]
fn a_saved_plan_is_stale_when_recovery_changed_the_inventory() {
    let q = Quickstart::new();
    // An apply interrupted after its first steps leaves work for recovery.
    let r = q.run_env(
        &["apply", "--yes", "--target", "user=judy"],
        &[("KEYFLEET_CRASH_AFTER_STEP", "2")],
    );
    assert!(
        r.crashed_at_crash_point(),
        "{:?}\n{}\n{}",
        r.code,
        r.stdout,
        r.stderr
    );
    let (path, _) = saved_plan(&q);
    let r = q.run(&["apply", path.to_str().unwrap(), "--yes"]);
    r.expect_code(1);
    assert!(r.stdout.contains("Recovery:"), "{}", r.stdout);
    assert!(r.stderr.contains(": inventory."), "{}", r.stderr);
}

#[test]
fn an_edited_saved_plan_is_refused() {
    let q = Quickstart::new();
    let (path, mut plan) = saved_plan(&q);
    // One action dropped by hand.
    plan["actions"].as_array_mut().unwrap().remove(3);
    std::fs::write(&path, serde_json::to_string(&plan).unwrap()).unwrap();
    let r = q.run(&["apply", path.to_str().unwrap(), "--yes"]);
    r.expect_code(1);
    assert!(
        r.stderr
            .contains("it holds 10 action(s), its inputs give 11"),
        "{}",
        r.stderr
    );
    // An action's user changed.
    let (path, mut plan) = saved_plan(&q);
    plan["actions"][0]["user"] = "mallory".into();
    std::fs::write(&path, serde_json::to_string(&plan).unwrap()).unwrap();
    let r = q.run(&["apply", path.to_str().unwrap(), "--yes"]);
    r.expect_code(1);
    assert!(
        r.stderr.contains("action 1 is issue:mallory:"),
        "{}",
        r.stderr
    );
    // Not a plan at all.
    std::fs::write(&path, "{\"format\": \"something-else\"}").unwrap();
    q.run(&["apply", path.to_str().unwrap(), "--yes"])
        .expect_code(1)
        .stderr_has("not a Keyfleet plan file");
    assert!(active_slots(&q).is_empty(), "nothing applied");
    // A saved plan takes no --target: it was made for its own.
    assert_eq!(
        q.run(&["apply", path.to_str().unwrap(), "--target", "user=alice"])
            .code,
        Some(2)
    );
}

#[test]
fn a_saved_plan_over_the_safety_valve_is_refused_unless_allowed_and_holds_no_secret() {
    let (q, data) = quickstart_with_outside_data();
    q.run(&["apply", "--yes"])
        .expect_code(0)
        .stdout_has("11 done");
    // Finance and contractors leave: 6 users' credentials revoked, over maxRevocations 5.
    let text = std::fs::read_to_string(&data).unwrap();
    let text = text
        .replace("members: [frank, grace, heidi, ivan]", "members: [ivan]")
        .replace("members: [judy, mallory, oscar]", "members: []");
    std::fs::write(&data, text).unwrap();
    let (path, plan) = saved_plan(&q);
    let p = path.to_str().unwrap();
    assert_eq!(plan["facts"]["safetyValveTripped"], true);

    // No secret in the file: no PIN or PUK the PIN mailer holds, no key, no master key.
    let file = std::fs::read_to_string(&path).unwrap();
    let mut secrets: Vec<String> = Vec::new();
    for e in std::fs::read_dir(q.state.join("pin-mailer")).expect("pin mailer") {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
        secrets.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("PIN: "))
                .map(str::to_string),
        );
    }
    assert!(!secrets.is_empty(), "the PIN mailer holds PINs");
    for s in &secrets {
        assert!(
            !file.contains(s.as_str()),
            "a PIN/PUK {s} in the saved plan"
        );
    }
    for needle in [
        "PRIVATE KEY",
        "BEGIN ",
        "\"pin\"",
        "\"puk\"",
        "managementkey",
    ] {
        assert!(
            !file.to_lowercase().contains(&needle.to_lowercase()),
            "{needle} in the plan"
        );
    }
    let key = std::fs::read(q.state.join("master.key")).expect("master key");
    assert!(!key.is_empty());
    let hexed: String = key.iter().map(|b| format!("{b:02x}")).collect();
    assert!(!file.contains(&hexed));
    if let Ok(text) = std::str::from_utf8(&key) {
        assert!(!file.contains(text.trim()), "the master key in the plan");
    }

    let r = q.run(&["apply", p, "--yes"]);
    r.expect_code(1)
        .stdout_has("SAFETY VALVE")
        .stderr_has("the safety valve tripped");
    assert_eq!(active_slots(&q).len(), 19, "nothing revoked");
    q.run(&["apply", p, "--yes", "--allow-mass-revocation"])
        .expect_code(0)
        .stdout_has("Allowed by --allow-mass-revocation");
    let users: BTreeSet<String> = active_slots(&q).into_iter().map(|(u, _)| u).collect();
    assert_eq!(
        users,
        ["alice", "bob", "carol", "dave", "erin"]
            .map(String::from)
            .into()
    );
}

#[test]
fn audit_reports_drift_as_markdown() {
    let q = Quickstart::new();
    let r = q.run(&["audit", "--format", "markdown"]);
    r.expect_code(2)
        .stdout_has("### Keyfleet audit")
        .stdout_has("**11 finding(s):** 11 entitled-without-credential.")
        .stdout_has("<details><summary>entitled-without-credential (11)</summary>")
        .stdout_has("| alice | - | - |");
    q.run(&["apply", "--yes"]).expect_code(0);
    q.run(&["audit", "--format", "markdown"])
        .expect_code(0)
        .stdout_has("**No drift.**");
}
