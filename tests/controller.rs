//! `keyfleet run` against the real binary on a copy of the quickstart: it converges, follows
//! the file directory and the policy without any other command, keeps the last valid policy
//! when a broken one is written, holds mass revocations until `keyfleet approve`, stops
//! cleanly on SIGTERM mid-pass with the journal finishing at the next start, refuses a second
//! writer, and serves metrics that parse. Plus the systemd unit, checked by systemd-analyze.

use crate::harness::controller::{
    Site, certs_of, emptied_groups, free_port, http_get, not_private, parse_exposition, wait_for,
    wait_with_log,
};

/// The quickstart's people.yaml with `extra` users appended to the finance group.
fn people_with_finance(extra: &[&str]) -> String {
    let mut text = std::fs::read_to_string(
        crate::harness::repo_root().join("examples/quickstart/people.yaml"),
    )
    .expect("quickstart people.yaml");
    let users: String = extra
        .iter()
        .map(|u| format!("  - {{uid: {u}, cn: User {u}, mail: {u}@example.com}}\n"))
        .collect();
    text = text.replacen("groups:\n", &format!("{users}groups:\n"), 1);
    let members = extra
        .iter()
        .fold("frank, grace, heidi, ivan".to_string(), |acc, u| {
            format!("{acc}, {u}")
        });
    text.replace(
        "members: [frank, grace, heidi, ivan]",
        &format!("members: [{members}]"),
    )
}

fn converged(site: &Site) -> Option<()> {
    (site.keyfleet(&["plan"]).code == Some(0)).then_some(())
}

#[test]
fn run_converges_follows_changes_and_keeps_the_last_valid_policy() {
    let site = Site::quickstart();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut ctl = site.start(&["--listen", &listen]);
    wait_for("the first pass to converge", || converged(&site));
    let inv = site.inventory();
    assert_eq!(certs_of(&inv, "alice", "active").len(), 2);
    assert_eq!(certs_of(&inv, "judy", "active").len(), 1);
    assert!(certs_of(&inv, "ivan", "active").is_empty(), "disabled user");

    // One writer per state directory: a second run and an apply are refused, naming the pid.
    let pid = ctl.pid().to_string();
    site.keyfleet(&["run"])
        .expect_code(1)
        .stderr_has(&format!("keyfleet run (pid {pid})"));
    site.keyfleet(&["apply", "--yes"])
        .expect_code(1)
        .stderr_has(&format!("pid {pid}"));
    // The read commands reach the store through the control socket.
    site.keyfleet(&["history"])
        .expect_code(0)
        .stdout_has("alice");
    site.keyfleet(&["audit"]).expect_code(0);

    // A user added to a group gets a credential with no other command.
    site.write("people.yaml", &people_with_finance(&["zoe"]));
    wait_for("zoe's certificates", || {
        (certs_of(&site.inventory(), "zoe", "active").len() == 2).then_some(())
    });
    // Removed from the group: revoked.
    site.write("people.yaml", &people_with_finance(&[]));
    wait_for("zoe's revocation", || {
        (certs_of(&site.inventory(), "zoe", "revoked").len() == 2).then_some(())
    });
    // The same pass then wipes her (virtual) card back into its stock: wait for that too, so
    // the history compared below is the settled one.
    wait_for("zoe's card to return to its stock", || {
        let inv = site.inventory();
        let cards = inv["cards"].as_array()?;
        cards.iter().all(|c| c["user"] != "zoe").then_some(())
    });

    // A broken policy file: reported, and nothing else happens.
    let history_before = site.keyfleet(&["history", "--format", "json"]).stdout;
    site.write(
        "broken.yaml",
        "apiVersion: keyfleet.dev/v1\nkind: Nonsense\n",
    );
    let status = wait_for("the policy error to be reported", || {
        site.status().filter(|s| !s["policyError"].is_null())
    });
    assert!(
        status["policyError"]
            .as_str()
            .is_some_and(|e| e.contains("broken.yaml")),
        "{status}"
    );
    let (_, text) = http_get(port, "/metrics").expect("metrics");
    let m = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        m.value("keyfleet_policy_reload_failures_total", &[]),
        Some(1.0)
    );
    // The controller still runs on the last valid policy, and changed nothing.
    assert!(ctl.exited().is_none(), "{}", ctl.log());
    std::fs::remove_file(site.policy().join("broken.yaml")).expect("remove broken file");
    wait_for("the policy error to clear", || {
        site.status().filter(|s| s["policyError"].is_null())
    });
    assert_eq!(
        site.keyfleet(&["history", "--format", "json"]).stdout,
        history_before,
        "nothing may be applied because of a broken policy"
    );
    // Convergence resumes.
    site.write("people.yaml", &people_with_finance(&["yan"]));
    wait_for("yan's certificates", || {
        (certs_of(&site.inventory(), "yan", "active").len() == 2).then_some(())
    });

    // Health, readiness and metrics, parsed.
    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(http_get(port, "/readyz").map(|r| r.0), Some(200));
    let (code, text) = http_get(port, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    let m = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for family in [
        "keyfleet_passes",
        "keyfleet_pass_duration_seconds",
        "keyfleet_actions",
        "keyfleet_pending_card_actions",
        "keyfleet_last_successful_observation_timestamp_seconds",
        "keyfleet_certificates_expiring_30d",
        "keyfleet_safety_valve_trips",
        "keyfleet_policy_reload_failures",
    ] {
        assert!(m.types.contains_key(family), "{family} missing:\n{text}");
    }
    assert_eq!(
        m.types
            .get("keyfleet_pass_duration_seconds")
            .map(String::as_str),
        Some("histogram")
    );
    assert!(m.value("keyfleet_passes_total", &[("result", "ok")]) >= Some(4.0));
    assert!(m.value("keyfleet_pass_duration_seconds_count", &[]) >= Some(4.0));
    assert!(
        m.value(
            "keyfleet_actions_total",
            &[("kind", "issue"), ("outcome", "done")]
        ) >= Some(13.0)
    );
    assert!(
        m.value(
            "keyfleet_actions_total",
            &[("kind", "revoke"), ("outcome", "done")]
        ) >= Some(1.0)
    );
    let seen = m
        .value(
            "keyfleet_last_successful_observation_timestamp_seconds",
            &[("source", "directory/people")],
        )
        .expect("observation timestamp");
    assert!(seen > 1.6e9, "{seen}");
    assert_eq!(m.value("keyfleet_safety_valve_trips_total", &[]), Some(0.0));
    // Each applied action is logged when it starts and when it ends.
    let logged = m
        .value("keyfleet_audit_log_entries_total", &[])
        .expect("audit log entries");
    assert!(logged >= 2.0 * 14.0, "{logged}");
    assert!(m.value("keyfleet_audit_log_checkpoint_seq", &[]) <= Some(logged));

    let status = site.status().expect("status");
    assert_eq!(status["ready"], true);
    site.keyfleet(&["status"])
        .expect_code(0)
        .stdout_has("Last pass")
        .stdout_has("Waiting for");
    let exit = ctl.terminate();
    assert!(exit.success(), "{exit:?}\n{}", ctl.log());
    site.keyfleet(&["status"]).expect_code(3);
    // Stopping signed the log's head: everything logged is under a checkpoint.
    let verified = site.keyfleet(&["audit-log", "verify"]);
    verified.expect_code(0).stdout_has("Audit log intact");
    assert!(
        !verified.stdout.contains("not yet signed"),
        "{}",
        verified.stdout
    );
    assert!(
        !site.state().join("keyfleet.sock").exists(),
        "socket removed on exit"
    );
}

#[test]
fn the_valve_holds_mass_revocations_until_approved() {
    let site = Site::quickstart();
    let mut ctl = site.start(&[]);
    wait_for("the first pass to converge", || converged(&site));
    let holders = 11;
    // Every group emptied: 11 users would lose their credential, over the limit of 5.
    site.write("people.yaml", &emptied_groups(&site.read("people.yaml")));
    let status = wait_for("the valve to hold the revocations", || {
        site.status()
            .filter(|s| s["held"].as_array().is_some_and(|h| !h.is_empty()))
    });
    assert_eq!(status["held"].as_array().map(Vec::len), Some(holders));
    assert_eq!(status["lastPass"]["valveTripped"], true);
    let inv = site.inventory();
    assert!(
        inv["certificates"]
            .as_array()
            .expect("certs")
            .iter()
            .all(|c| c["status"] == "active"),
        "nothing revoked while held"
    );
    site.keyfleet(&["status"])
        .expect_code(0)
        .stdout_has("SAFETY VALVE");

    site.keyfleet(&["approve", "--reason", "reorganisation"])
        .expect_code(0)
        .stdout_has(&format!("Approved {holders} revocation(s)"));
    wait_for("every approved revocation to run", || {
        let inv = site.inventory();
        inv["certificates"]
            .as_array()
            .is_some_and(|a| a.iter().all(|c| c["status"] == "revoked"))
            .then_some(())
    });
    site.keyfleet(&["approve"])
        .expect_code(0)
        .stdout_has("Nothing to approve");
    assert!(ctl.terminate().success(), "{}", ctl.log());
    // The approval is in the audit log, by its operator, before the revocations it let run.
    let r = site.keyfleet(&["audit-log", "show", "--format", "json"]);
    r.expect_code(0);
    let entries: serde_json::Value = serde_json::from_str(&r.stdout).expect("audit JSON");
    let entries = entries.as_array().expect("entries");
    let approval = entries
        .iter()
        .position(|e| e["kind"] == "approve-mass-revocation")
        .unwrap_or_else(|| panic!("no approval logged: {entries:#?}"));
    // The state directory's owner (this test's user) is the system owner.
    let me = std::process::Command::new("id")
        .arg("-un")
        .output()
        .expect("id -un");
    let me = String::from_utf8_lossy(&me.stdout).trim().to_string();
    assert_eq!(entries[approval]["actor"], me.as_str());
    assert_eq!(entries[approval]["details"]["reason"], "reorganisation");
    assert_eq!(
        entries[approval]["details"]["actions"]
            .as_array()
            .map(Vec::len),
        Some(holders)
    );
    let revoked = entries
        .iter()
        .filter(|e| e["kind"] == "revoke" && e["outcome"] == "done")
        .count();
    assert_eq!(revoked, holders);
    assert!(entries.iter().skip(approval).any(|e| e["kind"] == "revoke"));
}

#[test]
fn sigterm_mid_pass_exits_cleanly_and_the_next_start_finishes_without_duplicates() {
    let site = Site::quickstart();
    let many: Vec<String> = (0..40).map(|i| format!("u{i:02}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    site.write("people.yaml", &people_with_finance(&refs));
    let mut ctl = site.start(&[]);
    wait_for("the first actions of the pass", || {
        let run = site.keyfleet(&["history", "--format", "json"]);
        let entries: serde_json::Value = serde_json::from_str(&run.stdout).ok()?;
        (entries.as_array()?.len() >= 3).then_some(())
    });
    let exit = ctl.terminate();
    assert!(exit.success(), "{exit:?}\n{}", ctl.log());
    let done_before: usize = {
        let run = site.keyfleet(&["history", "--format", "json"]);
        serde_json::from_str::<serde_json::Value>(&run.stdout)
            .ok()
            .and_then(|v| v.as_array().map(Vec::len))
            .unwrap_or(0)
    };
    assert!(
        done_before < 51,
        "the pass was interrupted ({done_before} actions done)"
    );

    let mut ctl = site.start(&[]);
    wait_with_log(&ctl, "the restarted controller to converge", || {
        converged(&site)
    });
    let inv = site.inventory();
    let mut per_slot = std::collections::BTreeMap::new();
    for c in inv["certificates"].as_array().expect("certs") {
        let key = (
            c["user"].as_str().unwrap_or_default().to_string(),
            c["slot"].as_str().unwrap_or_default().to_string(),
        );
        *per_slot.entry(key).or_insert(0) += 1;
    }
    assert!(
        per_slot.values().all(|n| *n == 1),
        "duplicate certificates: {per_slot:?}"
    );
    assert_eq!(certs_of(&inv, "u39", "active").len(), 2);
    let mut cards_per_user = std::collections::BTreeMap::new();
    for c in inv["cards"].as_array().expect("cards") {
        *cards_per_user
            .entry(c["user"].as_str().unwrap_or_default().to_string())
            .or_insert(0) += 1;
    }
    assert!(
        cards_per_user.values().all(|n| *n == 1),
        "duplicate cards: {cards_per_user:?}"
    );
    assert!(ctl.terminate().success(), "{}", ctl.log());
}

#[test]
fn status_without_a_controller_says_so() {
    let site = Site::quickstart();
    site.keyfleet(&["status"])
        .expect_code(3)
        .stdout_has("No controller is running");
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit = crate::harness::repo_root().join("deploy/keyfleet.service");
    let text = std::fs::read_to_string(&unit).expect("deploy/keyfleet.service");
    for directive in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/keyfleet",
        "PrivateTmp=yes",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
    ] {
        assert!(
            text.lines().any(|l| l.trim() == directive),
            "{directive} missing"
        );
    }
    // systemd-analyze checks that ExecStart's binary exists: point it at the one just built,
    // every other line as shipped.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("keyfleet.service");
    std::fs::write(
        &path,
        text.replace("/usr/local/bin/keyfleet", env!("CARGO_BIN_EXE_keyfleet")),
    )
    .expect("write unit");
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze must be installed (scripts/install-deps --test)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    assert!(
        !stderr.contains("keyfleet.service"),
        "warnings about the unit:\n{stderr}"
    );
    let out = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&path)
        .output()
        .expect("systemd-analyze security");
    let report = String::from_utf8_lossy(&out.stdout);
    let level: f64 = report
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for keyfleet.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    assert!(level <= 2.0, "exposure {level} too high:\n{report}");
}

#[test]
fn the_exposition_parser_is_strict() {
    let ok = "# HELP a_total x\n# TYPE a counter\na_total{k=\"v\\\"q\"} 3\n# EOF\n";
    let m = parse_exposition(ok).expect("valid");
    assert_eq!(m.value("a_total", &[("k", "v\"q")]), Some(3.0));
    for bad in [
        "a_total 1\n",                           // no TYPE
        "# TYPE a counter\na_total{k=v} 1\n",    // unquoted label
        "# TYPE a counter\na_total one\n",       // bad value
        "# TYPE a counter\na_total{k=\"v\" 1\n", // unterminated labels
        "# TYPE a counter\n# EOF\na_total 1\n",  // after EOF
        "# TYPE 1a counter\n",                   // bad name
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}

/// Issue 14, point 5: a pass that panics (a defect) stops the controller with an error, so
/// that `keyfleet run` exits non-zero (70) and systemd's `Restart=on-failure` restarts it;
/// it used to stop and exit 0. The panic is injected through the controller's test hook,
/// which nothing on the command line reaches.
#[test]
fn a_pass_that_panics_stops_the_controller_with_an_internal_failure() {
    use keyfleet::controller::{ControllerError, PassHook, RunOptions};
    let site = Site::quickstart();
    let opts = RunOptions {
        policy_dir: site.policy(),
        state_dir: Some(site.state()),
        listen: None,
        api: None,
        resync: std::time::Duration::from_secs(600),
        shutdown_grace: std::time::Duration::from_secs(5),
        actor: "test".into(),
        pass_hook: Some(PassHook(std::sync::Arc::new(|number| {
            if number == 1 {
                panic!("injected fault in pass {number}");
            }
        }))),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(keyfleet::controller::run(opts));
    });
    let result = rx
        .recv_timeout(crate::harness::controller::PATIENCE)
        .expect("the controller stops after its pass panicked");
    match result {
        Err(e @ ControllerError::PassPanicked { .. }) => {
            assert_eq!(keyfleet::cli::run::exit_code(&e), 70);
            let text = e.to_string();
            assert!(text.contains("injected fault in pass 1"), "{text}");
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(()) => panic!("a controller whose pass panicked ended as if stopped by a signal"),
    }
    // It released the state directory: a new controller may start.
    assert!(
        keyfleet::statedir::lock::StateLock::acquire(&site.state(), "run").is_ok(),
        "the state lock is released"
    );
}

/// Issue 14, point 6: under an ordinary umask (022), `apply` and `run` created the state
/// directory 0755 through the lock file, and sled's files 0644. The state directory and
/// everything Keyfleet creates in it are 0700/0600 whatever the umask.
#[test]
fn apply_and_run_keep_the_state_directory_private_under_umask_022() {
    let site = Site::quickstart();
    assert!(!site.state().exists());
    site.keyfleet_with_umask("022", &["apply", "--yes"])
        .expect_code(0);
    assert!(
        site.state().join("store").is_dir(),
        "apply created the store"
    );
    assert_eq!(
        not_private(&site.state()),
        Vec::<String>::new(),
        "after apply"
    );

    let site = Site::quickstart();
    let mut ctl = site.start_with_umask("022", &[]);
    wait_with_log(&ctl, "the first pass to converge", || converged(&site));
    assert_eq!(
        not_private(&site.state()),
        Vec::<String>::new(),
        "while running"
    );
    ctl.terminate();
    assert_eq!(
        not_private(&site.state()),
        Vec::<String>::new(),
        "after run"
    );
}

/// Issue 14, point 6: a state directory that others can read or write is refused, by the
/// writers and the readers alike, with an error naming the fix; an empty one (made ready by
/// `mkdir`) exposed nothing yet and is restricted to 0700.
#[test]
fn a_state_directory_open_to_others_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let chmod = |site: &Site, mode: u32| {
        std::fs::set_permissions(site.state(), std::fs::Permissions::from_mode(mode))
            .expect("chmod state");
    };
    let site = Site::quickstart();
    std::fs::create_dir(site.state()).expect("mkdir state");
    chmod(&site, 0o755);
    site.keyfleet(&["apply", "--yes"]).expect_code(0);
    assert_eq!(not_private(&site.state()), Vec::<String>::new());

    // Opened to others later (an older Keyfleet, a careless chmod): refused.
    chmod(&site, 0o755);
    let before = site.state_file_names();
    let fix = format!("chmod 700 {}", site.state().display());
    for args in [&["apply", "--yes"][..], &["plan"], &["inventory"]] {
        site.keyfleet(args).expect_code(1).stderr_has(&fix);
    }
    let mut ctl = site.start(&[]);
    let status = wait_for("the controller to refuse the state directory", || {
        ctl.exited()
    });
    assert_eq!(status.code(), Some(1), "{}", ctl.log());
    assert!(ctl.log().contains(&fix), "{}", ctl.log());
    assert_eq!(site.state_file_names(), before, "nothing was written");
    // Group-writable only is refused too; fixed as told, it works.
    chmod(&site, 0o720);
    site.keyfleet(&["apply", "--yes"])
        .expect_code(1)
        .stderr_has(&fix);
    chmod(&site, 0o700);
    site.keyfleet(&["plan"]).expect_code(0);
}
