//! `keyfleet run` driven by its event sources: an LDAP directory polled through its change
//! token (real slapd), and a PIV card inserted in a vpcd reader (real pcscd, `vcard serve`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::harness::controller::wait_for;
use crate::harness::pcscd::Pcscd;
use crate::harness::repo_root;
use crate::harness::slapd::{SUFFIX, SlapdOptions};

/// A `keyfleet run` child with its log; killed on drop.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn start(mut cmd: Command, log: PathBuf) -> Running {
        let file = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log"))
            .stderr(file)
            .spawn()
            .expect("start keyfleet run");
        Running { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn args(policy: &Path, state: &Path, rest: &[&str]) -> Vec<String> {
    let mut all = vec![
        "-C".to_string(),
        policy.display().to_string(),
        "--state-dir".to_string(),
        state.display().to_string(),
    ];
    all.extend(rest.iter().map(|s| s.to_string()));
    all
}

/// Users holding a live certificate, from `keyfleet inventory --format json` output.
fn users_with_certs(json: &str) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return Vec::new();
    };
    let mut users: Vec<String> = v["certificates"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["status"] != "revoked")
                .filter_map(|c| c["user"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    users.sort();
    users.dedup();
    users
}

#[test]
fn an_ldap_group_change_is_polled_and_issues() {
    let slapd = crate::ldap::loaded_slapd(SlapdOptions {
        syncprov: true,
        ..SlapdOptions::default()
    });
    let d = crate::ldap::policy(&slapd.url(), "    pollInterval: 1s\n");
    let state = d.path().join("state");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyfleet"));
    cmd.args(args(d.path(), &state, &["run"]))
        .env_remove("KEYFLEET_STATE_DIR");
    let mut ctl = Running::start(cmd, d.path().join("run.log"));
    let inventory = || {
        let out = Command::new(env!("CARGO_BIN_EXE_keyfleet"))
            .args(args(d.path(), &state, &["inventory", "--format", "json"]))
            .env_remove("KEYFLEET_STATE_DIR")
            .output()
            .expect("run keyfleet inventory");
        users_with_certs(&String::from_utf8_lossy(&out.stdout))
    };
    wait_for("the first convergence", || {
        inventory().contains(&"alice".to_string()).then_some(())
    });
    assert!(!inventory().contains(&"dave".to_string()));
    // dave joins staff in slapd: the poller sees contextCSN move and a pass issues to him.
    slapd.ldapmodify(&format!(
        "dn: cn=staff,ou=groups,{SUFFIX}\nchangetype: modify\nadd: member\nmember: uid=dave,ou=people,{SUFFIX}\n"
    ));
    wait_for("dave's certificate", || {
        inventory().contains(&"dave".to_string()).then_some(())
    });
    assert!(ctl.alive(), "controller exited:\n{}", ctl.log());
    // The pass records its triggers when it completes, after its actions are in the
    // inventory: wait for that line rather than reading the log at once.
    wait_for("the pass that issued to dave to be recorded", || {
        ctl.log().contains("directory-changed:corp").then_some(())
    });
    let log = ctl.log();
    assert!(log.contains("directory changed"), "{log}");
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_tree(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).expect("copy");
        }
    }
}

#[test]
fn a_card_inserted_runs_its_pending_issuance() {
    let pcscd = Pcscd::start();
    let site = tempfile::tempdir().expect("temp dir");
    let policy = site.path().join("policy");
    copy_tree(&repo_root().join("examples/piv"), &policy);
    let state = site.path().join("state");
    let card = tempfile::tempdir().expect("card dir");
    let port = crate::harness::controller::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = pcscd.command(env!("CARGO_BIN_EXE_keyfleet"));
    cmd.args(args(&policy, &state, &["run", "--listen", &listen]));
    let mut ctl = Running::start(cmd, site.path().join("run.log"));
    let kf = |rest: &[&str]| {
        let a = args(&policy, &state, rest);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        pcscd.keyfleet(&a)
    };

    // No card: the plan waits for one; status and the gauge show the pending actions.
    let pending = wait_for("the pending card action in status", || {
        let r = kf(&["status", "--format", "json"]);
        let s: serde_json::Value = serde_json::from_str(&r.stdout).ok()?;
        let n = s["pending"].as_array()?.len();
        (s["lastPass"].is_object() && n > 0).then_some(n)
    });
    let metrics = wait_for("/metrics", || {
        crate::harness::controller::http_get(port, "/metrics").map(|(_, b)| b)
    });
    let exp = crate::harness::controller::parse_exposition(&metrics).expect("exposition");
    assert_eq!(
        exp.value("keyfleet_pending_card_actions", &[]),
        Some(pending as f64),
        "{metrics}"
    );
    wait_for("the PC/SC watcher in status", || {
        kf(&["status"])
            .stdout
            .contains("pcsc: watching readers; cards present in: none")
            .then_some(())
    });
    assert!(users_with_certs(&kf(&["inventory", "--format", "json"]).stdout).is_empty());

    // Insert the card: the watcher fires a pass that issues, with no other command.
    let served = pcscd.vcard(card.path(), &[]);
    wait_for("alice's certificate on the card", || {
        let inv = kf(&["inventory", "--format", "json"]);
        users_with_certs(&inv.stdout)
            .contains(&"alice".to_string())
            .then_some(())
    });
    let log = std::fs::read_to_string(site.path().join("run.log")).unwrap_or_default();
    assert!(log.contains("cards:pcsc"), "{log}");
    wait_for("no pending action", || {
        let r = kf(&["status", "--format", "json"]);
        let s: serde_json::Value = serde_json::from_str(&r.stdout).ok()?;
        s["pending"].as_array()?.is_empty().then_some(())
    });

    // Pull the card: the controller notices and keeps running.
    drop(served);
    wait_for("the removal seen by the watcher", || {
        let r = kf(&["status"]);
        r.stdout.contains("cards present in: none").then_some(())
    });
    assert!(ctl.alive(), "controller exited:\n{}", ctl.log());
    kf(&["status"]).expect_code(0);
}

#[test]
fn without_pcscd_the_controller_waits_and_says_why() {
    let site = tempfile::tempdir().expect("temp dir");
    let policy = site.path().join("policy");
    copy_tree(&repo_root().join("examples/piv"), &policy);
    let state = site.path().join("state");
    let nowhere = site.path().join("no-pcscd.comm");
    let kf = |rest: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_keyfleet"))
            .args(args(&policy, &state, rest))
            .env("PCSCLITE_CSOCK_NAME", &nowhere)
            .env_remove("KEYFLEET_STATE_DIR")
            .output()
            .expect("run keyfleet");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyfleet"));
    cmd.args(args(&policy, &state, &["run"]))
        .env("PCSCLITE_CSOCK_NAME", &nowhere)
        .env_remove("KEYFLEET_STATE_DIR");
    let mut ctl = Running::start(cmd, site.path().join("run.log"));
    // The reason is shown, and the pass still ran: its card actions wait for a card.
    wait_for(
        "PC/SC unavailable in status, with the pending actions",
        || {
            let s = kf(&["status"]);
            let json: serde_json::Value =
                serde_json::from_str(&kf(&["status", "--format", "json"])).ok()?;
            let pending = json["pending"].as_array().is_some_and(|p| !p.is_empty());
            (s.contains("pcsc: unavailable") && s.contains("retrying at") && pending).then_some(())
        },
    );
    assert!(ctl.alive(), "controller exited:\n{}", ctl.log());
    assert!(ctl.log().contains("PC/SC unavailable"), "{}", ctl.log());
}

/// SoftHSM2 reads its token directory only at C_Initialize, so a token created by another
/// process never appears in a running controller (README, "PKCS#11 tokens and HSM-held keys"); the event path
/// itself is tested in `pkcs11::a_token_appearing_is_a_card_event`. Here: the controller runs
/// a token watcher on the policy's module and shows it in status.
#[test]
fn the_controller_watches_the_tokens_of_pkcs11_stocks() {
    let hsm = crate::harness::softhsm::SoftHsm::new();
    let policy = hsm.path().join("policy");
    copy_tree(&repo_root().join("examples/pkcs11"), &policy);
    let state = hsm.path().join("state");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyfleet"));
    cmd.args(args(&policy, &state, &["run"]))
        .current_dir(repo_root())
        .env("SOFTHSM2_CONF", hsm.conf())
        .env_remove("KEYFLEET_STATE_DIR");
    let mut ctl = Running::start(cmd, hsm.path().join("run.log"));
    wait_for("the token watcher in status", || {
        let out = Command::new(env!("CARGO_BIN_EXE_keyfleet"))
            .args(args(&policy, &state, &["status"]))
            .env_remove("KEYFLEET_STATE_DIR")
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (text.contains("pkcs11:") && text.contains("watching tokens")).then_some(())
    });
    assert!(ctl.alive(), "controller exited:\n{}", ctl.log());
}
