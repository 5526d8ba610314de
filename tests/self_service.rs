//! `keyfleet self-service` end to end (issue 18 point 5): a real pcscd + vpcd with Keyfleet's
//! virtual card served into it, a real `keyfleet run --api` controller, and the holder's
//! command authenticated by the card's own 9A certificate (the card signs the handshake).
//! The holder changes the PIN; a template change makes the 9A credential's reissue wait for
//! the holder; the command completes it through the relay, the PIN never leaving the
//! workstation; an unblock with a released code resets the PIN and the PUK is rotated at the
//! card's next contact with Keyfleet; a lost card's holder is refused. The controller has no
//! PC/SC readers of its own: it reaches the card only through the holder's command.

use std::path::Path;
use std::process::{Child, Stdio};

use serde_json::Value;

use crate::harness::Run;
use crate::harness::controller::{free_port, wait_for};
use crate::harness::pcscd::Pcscd;
use crate::piv::{kfp, mailer_pin, pin_hex, policy_copy, send_apdu};

const SETTINGS: &str = "apiVersion: keyfleet.dev/v1
kind: Settings
metadata:
  name: settings
spec:
  operators:
    templates: [employee-piv]
";

fn start_controller(pcscd: &Pcscd, policy: &Path, state: &Path, port: u16, log: &Path) -> Child {
    let log_file = std::fs::File::create(log).unwrap();
    pcscd
        .command(env!("CARGO_BIN_EXE_keyfleet"))
        .args(["-C", &policy.display().to_string()])
        .args(["--state-dir", &state.display().to_string()])
        .args(["run", "--api", &format!("127.0.0.1:{port}")])
        // The server is far from the holder's reader: it reaches the card only through the
        // workstation (its own PC/SC service is one with no readers).
        .env("PCSCLITE_CSOCK_NAME", log.with_extension("no-pcscd"))
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("start keyfleet run")
}

fn stop(mut child: Child) {
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

fn json(r: &Run, code: i32) -> Value {
    r.expect_code(code);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

/// Every file under `dir` that holds `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if std::fs::read(&p)
                .map(|b| b.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
            {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[test]
fn the_holder_changes_the_pin_completes_a_waiting_reissue_and_unblocks_with_a_code() {
    let mut pcscd = Pcscd::start();
    let card = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let _served = pcscd.vcard(card.path(), &[]);
    pcscd.wait_card(true);
    let policy = policy_copy(work.path());
    // The API's server certificate comes from the operator templates' local CA.
    std::fs::write(policy.join("settings.yaml"), SETTINGS).unwrap();
    let kf = |args: &[&str]| kfp(&pcscd, &policy, state.path(), args);
    kf(&["apply", "--yes"])
        .expect_code(0)
        .stdout_has("done    issue alice");
    let stored = mailer_pin(state.path());
    let id = pcscd.cards_json(Some(state.path()))[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ca = kf(&["ca", "cert", "piv-ca"]);
    ca.expect_code(0);
    let server_ca = work.path().join("piv-ca.pem");
    std::fs::write(&server_ca, &ca.stdout).unwrap();
    let secret = |name: &str, value: &str| {
        let p = work.path().join(name);
        std::fs::write(&p, format!("{value}\n")).unwrap();
        format!("file:{}", p.display())
    };

    let port = free_port();
    let log = work.path().join("controller.log");
    let ctl = start_controller(&pcscd, &policy, state.path(), port, &log);
    let url = format!("https://127.0.0.1:{port}");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let me = |args: &[&str]| {
        let mut all = vec![
            "self-service",
            "--server",
            url.as_str(),
            "--server-ca",
            server_ca.to_str().unwrap(),
            "--reader",
            "Test VPCD 00 00",
        ];
        all.extend_from_slice(args);
        pcscd.keyfleet(&all)
    };

    // The holder changes the PIN on the workstation.
    let holder = if stored == "564738" {
        "192837"
    } else {
        "564738"
    };
    let old_src = secret("old-pin", &stored);
    let new_src = secret("new-pin", holder);
    wait_for("the self-service API to answer", || {
        let r = me(&[
            "--pin-source",
            &old_src,
            "--change-pin",
            "--new-pin-source",
            &new_src,
        ]);
        if r.code != Some(0) {
            eprintln!("self-service not yet: {}", r.stderr);
        }
        (r.code == Some(0)).then_some(())
    });
    let ok = send_apdu(&pcscd, &format!("0020008008{}", pin_hex(holder)));
    assert!(ok.contains("SW1=0x90, SW2=0x00"), "{ok}");
    let refused = send_apdu(&pcscd, &format!("0020008008{}", pin_hex(&stored)));
    assert!(refused.contains("SW1=0x63"), "{refused}");
    send_apdu(&pcscd, &format!("0020008008{}", pin_hex(holder)));

    // The template changes: the 9A credential is reissued, which waits for the holder.
    let inv = json(&kf(&["inventory", "--format", "json"]), 0);
    let active_9a = |inv: &Value| {
        inv["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["card"] == id.as_str() && c["slot"] == "9A" && c["status"] == "active")
            .map(|c| (c["serial"].as_str().unwrap().to_string(), c["pem"].clone()))
    };
    let (old_serial, _) = active_9a(&inv).expect("an active 9A certificate");
    let template = policy.join("template.yaml");
    let text = std::fs::read_to_string(&template).unwrap();
    std::fs::write(&template, text.replacen("OU=Employees", "OU=Staff", 1)).unwrap();
    let plan = json(&kf(&["plan", "--format", "json"]), 2);
    let waiting = plan["actions"].as_array().unwrap().iter().any(|a| {
        a["card"] == id.as_str() && a["reason"] == "holder-pin-unknown" && a["slot"] == "9A"
    });
    assert!(waiting, "the stored PIN is known stale: {plan:#}");

    // The holder's command completes it: the controller planned it, the card answered.
    let pin_src = secret("pin", holder);
    let done = wait_for("the reissue to run through self-service", || {
        let r = me(&["--pin-source", &pin_src]);
        assert_ne!(r.code, Some(1), "{r:?}\n{}", log_text());
        r.stdout.contains("done").then_some(r)
    });
    done.expect_code(0);
    let inv = json(&kf(&["inventory", "--format", "json"]), 0);
    let (new_serial, pem) = active_9a(&inv).expect("a new active 9A certificate");
    assert_ne!(new_serial, old_serial, "{inv:#}");
    let old = inv["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["serial"] == old_serial.as_str())
        .unwrap();
    assert_ne!(old["status"], "active", "{old:#}");
    let on_card = pcscd.tool(
        "yubico-piv-tool",
        &["-r", "VPCD", "-a", "read-certificate", "-s", "9a"],
    );
    on_card.expect_code(0);
    assert_eq!(
        on_card.stdout.trim(),
        pem.as_str().unwrap().trim(),
        "the card's 9A holds the new certificate"
    );
    let history = json(&kf(&["history", "--user", "alice", "--format", "json"]), 0);
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["kind"] == "reissue"
                && h["actor"] == "alice"
                && h["card"] == id.as_str()
                && h["result"] == "ok"),
        "{history:#}"
    );
    let ok = send_apdu(&pcscd, &format!("0020008008{}", pin_hex(holder)));
    assert!(ok.contains("SW1=0x90, SW2=0x00"), "{ok}");
    let audit = std::fs::read_to_string(state.path().join("audit/log.jsonl")).unwrap_or_default();
    assert!(
        audit.contains("self-service-session") && audit.contains("self-service-pin-changed"),
        "the audit log has the sessions"
    );
    assert_eq!(
        files_holding(state.path(), holder.as_bytes()),
        Vec::<String>::new(),
        "the holder's PIN reached the server"
    );

    // The holder blocks the PIN; the helpdesk releases the code; the holder unblocks.
    for _ in 0..3 {
        send_apdu(&pcscd, &format!("0020008008{}", pin_hex("000000")));
    }
    let r = kf(&["cards", "unblock-code", &id, "--reason", "holder abroad"]);
    r.expect_code(0);
    let puk = r
        .stdout
        .lines()
        .find_map(|l| l.split_once(&format!("(PUK) of card {id}: ")))
        .map(|(_, p)| p.trim().to_string())
        .unwrap_or_else(|| panic!("no PUK in {}", r.stdout));
    let third = if holder == "246813" {
        "135792"
    } else {
        "246813"
    };
    me(&[
        "--unblock",
        "--unblock-code-source",
        &secret("code", &puk),
        "--new-pin-source",
        &secret("pin3", third),
    ])
    .expect_code(0);
    let ok = send_apdu(&pcscd, &format!("0020008008{}", pin_hex(third)));
    assert!(ok.contains("SW1=0x90, SW2=0x00"), "{ok}");
    // The card's next contact with Keyfleet (a pass that sees it) rotates the PUK.
    stop(ctl);
    kf(&["apply", "--yes"]).expect_code(0);
    let h = json(&kf(&["history", "--user", "alice", "--format", "json"]), 0);
    assert!(
        h.as_array()
            .unwrap()
            .iter()
            .any(|h| h["kind"] == "rotate-puk" && h["result"] == "ok"),
        "{h:#}"
    );
    let raw = send_apdu(
        &pcscd,
        &format!("002C008010{}{}", pin_hex(&puk), pin_hex("111111")),
    );
    assert!(
        raw.contains("SW1=0x63, SW2=0xC"),
        "the old PUK is refused: {raw}"
    );
    let ok = send_apdu(&pcscd, &format!("0020008008{}", pin_hex(third)));
    assert!(
        ok.contains("SW1=0x90, SW2=0x00"),
        "the holder's PIN stays: {ok}"
    );

    // A lost card's holder is refused.
    kf(&["cards", "report", &id, "--lost"]).expect_code(0);
    let ctl = start_controller(&pcscd, &policy, state.path(), port, &log);
    let pin4 = secret("pin4", third);
    let r = wait_for("the restarted API to answer", || {
        let r = me(&["--pin-source", &pin4]);
        let starting = r.stderr.contains("cannot reach") || r.stderr.contains("503 unavailable");
        (!starting).then_some(r)
    });
    r.expect_code(1);
    assert!(
        r.stderr.contains("lost") || r.stderr.contains("revoked"),
        "{r:?}"
    );
    assert!(!r.stdout.contains("done"), "{r:?}");
    stop(ctl);
}
