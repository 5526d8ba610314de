//! Operator requests on this machine, as the state directory's owner (the system owner):
//! an operation listed in Settings.spec.approvals becomes a request, which its requester can
//! neither approve nor see run, can withdraw, and which expires; every decision is audited.
//! The same calls through a running controller's control socket.

use crate::harness::controller::{Site, emptied_groups, wait_for};

fn with_approvals(site: &Site, timeout: &str) {
    let settings = site.read("settings.yaml");
    let settings = settings.replace(
        "  concurrency: 2",
        &format!(
            "  concurrency: 2\n  approvals: {{approve-mass-revocation: 1}}\n  approvalTimeout: {timeout}"
        ),
    );
    site.write("settings.yaml", &settings);
}

fn requests(site: &Site) -> Vec<serde_json::Value> {
    let r = site.keyfleet(&["requests", "list", "--format", "json"]);
    r.expect_code(0);
    serde_json::from_str::<serde_json::Value>(&r.stdout)
        .expect("requests JSON")
        .as_array()
        .cloned()
        .expect("a list")
}

fn me() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn an_operation_under_approval_is_a_request_its_requester_cannot_approve() {
    let site = Site::quickstart();
    site.keyfleet(&["apply", "--yes"]).expect_code(0);
    with_approvals(&site, "24h");
    site.write("people.yaml", &emptied_groups(&site.read("people.yaml")));
    // The valve holds the revocations; approving them needs one other approver.
    site.keyfleet(&["approve", "--reason", "HR ticket 7"])
        .expect_code(0)
        .stdout_has("Needs approval: request REQ-0001");
    let list = requests(&site);
    assert_eq!(list.len(), 1, "{list:#?}");
    let r = &list[0];
    assert_eq!(r["id"], "REQ-0001");
    assert_eq!(r["kind"], "approve-mass-revocation");
    assert_eq!(r["target"], "held-revocations");
    assert_eq!(r["requester"], me().as_str());
    assert_eq!(r["state"], "pending");
    assert_eq!(r["approvals"], serde_json::json!([]));
    // Nobody approves their own request, not even the system owner.
    site.keyfleet(&["requests", "approve", "REQ-0001"])
        .expect_code(1)
        .stderr_has("cannot approve it")
        .stderr_has("(forbidden)");
    site.keyfleet(&["requests", "approve", "REQ-0404"])
        .expect_code(1)
        .stderr_has("(not-found)");
    // Nothing was approved: a plan still holds every revocation, the inventory is untouched.
    site.keyfleet(&["apply", "--yes"])
        .stdout_has("SAFETY VALVE");
    let inv = site.inventory();
    assert!(
        inv["certificates"]
            .as_array()
            .expect("certs")
            .iter()
            .all(|c| c["status"] == "active")
    );
    // The requester withdraws it; a withdrawn request takes no more decisions.
    site.keyfleet(&["requests", "deny", "REQ-0001", "--comment", "wrong file"])
        .expect_code(0)
        .stdout_has("denied");
    assert_eq!(requests(&site)[0]["state"], "denied");
    site.keyfleet(&["requests", "deny", "REQ-0001"])
        .expect_code(1)
        .stderr_has("(conflict)");

    // Every call is in the audit log, the refusal too.
    let r = site.keyfleet(&["audit-log", "show", "--format", "json"]);
    r.expect_code(0);
    let entries: serde_json::Value = serde_json::from_str(&r.stdout).expect("audit JSON");
    let entries = entries.as_array().expect("entries");
    let find = |kind: &str, outcome: &str| {
        entries
            .iter()
            .find(|e| e["kind"] == kind && e["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no {kind} {outcome} entry: {entries:#?}"))
    };
    assert_eq!(
        find("request", "pending")["details"]["reason"],
        "HR ticket 7"
    );
    assert_eq!(find("approve-request", "denied")["target"], "REQ-0001");
    assert_eq!(
        find("deny-request", "denied")["details"]["comment"],
        "wrong file"
    );
    site.keyfleet(&["audit-log", "verify"]).expect_code(0);
}

#[test]
fn a_request_not_approved_in_time_expires_and_never_runs() {
    let site = Site::quickstart();
    site.keyfleet(&["apply", "--yes"]).expect_code(0);
    with_approvals(&site, "1s");
    site.write("people.yaml", &emptied_groups(&site.read("people.yaml")));
    site.keyfleet(&["approve"])
        .expect_code(0)
        .stdout_has("REQ-0001");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(requests(&site)[0]["state"], "expired");
    site.keyfleet(&["requests", "approve", "REQ-0001"])
        .expect_code(1)
        .stderr_has("expired");

    // Through a running controller's control socket: the same requests, the same rules.
    let mut ctl = site.start(&[]);
    wait_for("the controller to answer", || {
        (site
            .keyfleet(&["requests", "list", "--format", "json"])
            .code
            == Some(0))
        .then_some(())
    });
    let list = requests(&site);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["state"], "expired");
    wait_for("the valve to hold the revocations", || {
        site.status()
            .filter(|s| s["held"].as_array().is_some_and(|h| !h.is_empty()))
    });
    site.keyfleet(&["approve"])
        .expect_code(0)
        .stdout_has("REQ-0002");
    site.keyfleet(&["requests", "approve", "REQ-0002"])
        .expect_code(1)
        .stderr_has("(forbidden)");
    assert!(ctl.terminate().success(), "{}", ctl.log());
    let inv = site.inventory();
    assert!(
        inv["certificates"]
            .as_array()
            .expect("certs")
            .iter()
            .all(|c| c["status"] == "active"),
        "an expired or unapproved request never runs"
    );
}

/// Runs the keyfleet binary as Unix user `uid` (a copy other users may execute).
fn as_uid(site: &Site, bin: &std::path::Path, uid: u32, args: &[&str]) -> crate::harness::Run {
    let policy = site.policy().display().to_string();
    let state = site.state().display().to_string();
    let out = std::process::Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
        ])
        .arg(bin)
        .args(["-C", &policy, "--state-dir", &state])
        .args(args)
        .env_remove("KEYFLEET_STATE_DIR")
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run setpriv");
    crate::harness::Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn a_local_operator_on_the_operator_socket_is_named_by_uid_and_approves_the_owners_request() {
    use std::os::unix::fs::PermissionsExt as _;
    if rustix::process::geteuid().as_raw() != 0 {
        panic!("this test runs a second Unix user with setpriv: run the suite as root (CI does)");
    }
    let site = Site::quickstart();
    site.keyfleet(&["apply", "--yes"]).expect_code(0);
    // Others may read the policy (as in a git checkout) and run the binary; the state
    // directory stays the owner's alone.
    let root = site.policy().parent().unwrap().to_path_buf();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(site.policy(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = root.join("keyfleet-bin");
    std::fs::copy(env!("CARGO_BIN_EXE_keyfleet"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sockets = root.join("run");
    std::fs::create_dir(&sockets).unwrap();
    std::fs::set_permissions(&sockets, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = sockets.join("operator.sock");
    let settings = site.read("settings.yaml").replace(
        "  concurrency: 2",
        &format!(
            "  concurrency: 2\n  approvals: {{approve-mass-revocation: 1}}\n  operators:\n    socket: {}\n    local: {{nobody: hank}}",
            socket.display()
        ),
    );
    site.write("settings.yaml", &settings);
    site.write(
        "roles.yaml",
        "apiVersion: keyfleet.dev/v1\nkind: Role\nmetadata:\n  name: approvers\nspec:\n  permissions: [approve]\n  members: [hank]\n",
    );
    site.keyfleet(&["validate"]).expect_code(0);
    let mut ctl = site.start(&[]);
    wait_for("the operator socket", || socket.exists().then_some(()));
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o666
    );
    site.write("people.yaml", &emptied_groups(&site.read("people.yaml")));
    wait_for("the valve to hold the revocations", || {
        site.status()
            .filter(|s| s["held"].as_array().is_some_and(|h| !h.is_empty()))
    });
    // The owner asks; hank (Unix user nobody) approves through the operator socket.
    site.keyfleet(&["approve", "--reason", "reorg"])
        .expect_code(0)
        .stdout_has("REQ-0001");
    // A Unix user with no mapping is refused, and hank may not approve what needs another
    // permission of him.
    as_uid(&site, &bin, 65533, &["requests", "list"])
        .expect_code(1)
        .stderr_has("(unauthorized)");
    as_uid(&site, &bin, 65534, &["approve"])
        .expect_code(1)
        .stderr_has("`approve-mass-revocation`");
    let r = as_uid(
        &site,
        &bin,
        65534,
        &["requests", "list", "--format", "json"],
    );
    r.expect_code(0);
    let list: serde_json::Value = serde_json::from_str(&r.stdout).expect("requests JSON");
    assert_eq!(list[0]["id"], "REQ-0001", "{list:#}");
    as_uid(&site, &bin, 65534, &["requests", "approve", "REQ-0001"])
        .expect_code(0)
        .stdout_has("done");
    wait_for("the approved revocations to run", || {
        let inv = site.inventory();
        inv["certificates"]
            .as_array()
            .is_some_and(|a| a.iter().all(|c| c["status"] == "revoked"))
            .then_some(())
    });
    assert!(ctl.terminate().success(), "{}", ctl.log());
    assert!(
        !socket.exists(),
        "the operator socket is removed at shutdown"
    );
    let r = site.keyfleet(&["audit-log", "show", "--format", "json"]);
    let entries: serde_json::Value = serde_json::from_str(&r.stdout).expect("audit JSON");
    let entries = entries.as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["actor"] == "hank" && e["kind"] == "approve-request")
    );
    assert!(
        entries
            .iter()
            .any(|e| e["actor"] == "uid:65533" && e["outcome"] == "unauthorized")
    );
}
