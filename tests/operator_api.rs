//! The operator API end to end: `keyfleet run --api` with Alice's Keyfleet-issued PIV card as
//! her login (through pcscd + vpcd and OpenSC's PKCS#11 module, the card signs the TLS
//! handshake), external identities for the other operators, roles enforced, separation of
//! duties, two-of-n approval running an unblock once, a denial, the OpenAPI document, the rate
//! limit, and an operator whose card certificate was revoked refused at once.

use std::path::Path;
use std::process::{Child, Stdio};

use crate::harness::Run;
use crate::harness::controller::{free_port, http_get, parse_exposition, wait_for};
use crate::harness::operator_api::Externals;
use crate::harness::pcscd::{OPENSC_MODULE, Pcscd};

const OPERATORS: &str = r#"
apiVersion: keyfleet.dev/v1
kind: Settings
metadata:
  name: settings
spec:
  safety: {maxRevocations: 10, maxRevocationPercent: 100}
  operators:
    templates: [employee-piv]
    external:
      - {name: hank, caFile: automation-ca.pem, subject: CN=hank}
      - {name: olga, caFile: automation-ca.pem, subject: CN=olga}
      - {name: oscar, caFile: automation-ca.pem, subject: CN=oscar}
      - {name: ray, caFile: automation-ca.pem, subject: CN=ray}
  approvals: {unblock: 2}
  api: {rateLimit: 40}
---
apiVersion: keyfleet.dev/v1
kind: Role
metadata:
  name: helpdesk
spec:
  permissions: [unblock, view-inventory]
  members: [hank, alice]
---
apiVersion: keyfleet.dev/v1
kind: Role
metadata:
  name: approvers
spec:
  permissions: [approve, view-audit-log, view-history]
  members: [olga, oscar, alice]
---
apiVersion: keyfleet.dev/v1
kind: Role
metadata:
  name: readers
spec:
  permissions: [unblock, view-inventory]
  members: [ray]
  templates: [contractor-piv]
---
apiVersion: keyfleet.dev/v1
kind: CardTemplate
metadata:
  name: contractor-piv
spec:
  cardType: piv
  certificates:
    - name: authentication
      slot: 9A
      authority: piv-ca
      profile: piv-auth
      keyAlgorithm: ecc-p256
      subject: "CN=${user.cn},OU=Contractors,O=Example"
"#;

struct Api<'a> {
    pcscd: &'a Pcscd,
    url: String,
    server_ca: String,
    externals: &'a Externals,
}

impl Api<'_> {
    /// `keyfleet <args> --server URL --server-ca CA <identity>`, with no local policy at all.
    fn as_args(&self, identity: &[String], args: &[&str]) -> Run {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend([
            "--server".into(),
            self.url.clone(),
            "--server-ca".into(),
            self.server_ca.clone(),
        ]);
        all.extend(identity.iter().cloned());
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        // A policy directory that does not exist: remote commands never read one.
        let mut with_c = vec!["-C", "/nonexistent-policy"];
        with_c.extend(refs);
        self.pcscd.keyfleet(&with_c)
    }

    fn as_ext(&self, name: &str, args: &[&str]) -> Run {
        self.as_args(&self.externals.args(name), args)
    }

    fn as_card(&self, pin: &str, args: &[&str]) -> Run {
        let uri = format!("pkcs11:id=%01?module-path={OPENSC_MODULE}&pin-value={pin}");
        self.as_args(&["--identity".into(), uri], args)
    }

    fn json(&self, r: &Run) -> serde_json::Value {
        r.expect_code(0);
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
    }
}

fn start_controller(
    pcscd: &Pcscd,
    policy: &Path,
    state: &Path,
    (port, metrics): (u16, u16),
    log: &Path,
) -> Child {
    let log_file = std::fs::File::create(log).unwrap();
    pcscd
        .command(env!("CARGO_BIN_EXE_keyfleet"))
        .args([
            "-C",
            &policy.display().to_string(),
            "--state-dir",
            &state.display().to_string(),
        ])
        .args([
            "run",
            "--api",
            &format!("127.0.0.1:{port}"),
            "--resync",
            "2",
        ])
        .args(["--listen", &format!("127.0.0.1:{metrics}")])
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

#[test]
fn operators_log_in_with_their_card_roles_and_approvals_are_enforced_and_audited() {
    let mut pcscd = Pcscd::start();
    let card = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let _served = pcscd.vcard(card.path(), &[]);
    pcscd.wait_card(true);
    let policy = crate::piv::policy_copy(work.path());
    let externals = Externals::new(&policy, &["hank", "olga", "oscar", "ray", "mallory"]);
    std::fs::write(policy.join("operators.yaml"), OPERATORS).unwrap();
    let kf = |args: &[&str]| crate::piv::kfp(&pcscd, &policy, state.path(), args);
    kf(&["validate"]).expect_code(0);
    kf(&["apply", "--yes"])
        .expect_code(0)
        .stdout_has("done    issue alice");
    let pin = crate::piv::mailer_pin(state.path());
    let card_id = pcscd.cards_json(Some(state.path()))[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ca = kf(&["ca", "cert", "piv-ca"]);
    ca.expect_code(0);
    let server_ca = work.path().join("piv-ca.pem");
    std::fs::write(&server_ca, &ca.stdout).unwrap();

    let (port, metrics) = (free_port(), free_port());
    let log = work.path().join("controller.log");
    let ctl = start_controller(&pcscd, &policy, state.path(), (port, metrics), &log);
    let api = Api {
        pcscd: &pcscd,
        url: format!("https://127.0.0.1:{port}"),
        server_ca: server_ca.display().to_string(),
        externals: &externals,
    };
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("the operator API to answer", || {
        (api.as_ext("ray", &["whoami"]).code == Some(0)).then_some(())
    });

    // Alice's card is her login: the card signed the handshake, the inventory says it is hers.
    let me = api.json(&api.as_card(&pin, &["whoami", "--format", "json"]));
    assert_eq!(me["operator"], "alice", "{}", log_text());
    assert_eq!(me["roles"], serde_json::json!(["approvers", "helpdesk"]));
    // An identity nobody configured: 401, in the error shape.
    api.as_ext("mallory", &["whoami"])
        .expect_code(1)
        .stderr_has("unauthorized");

    // Separation of duties: Alice cannot unblock her own card.
    api.as_card(&pin, &["cards", "unblock", &card_id])
        .expect_code(1)
        .stderr_has("(forbidden)")
        .stderr_has("separation of duties");
    // A role without the permission: forbidden, naming it.
    api.as_ext("olga", &["cards", "unblock", &card_id])
        .expect_code(1)
        .stderr_has("`unblock`");

    // Hank may unblock, but unblock needs two approvals: a request.
    let r = api.as_ext(
        "hank",
        &["cards", "unblock", &card_id, "--reason", "ticket 42"],
    );
    r.expect_code(0)
        .stdout_has("Needs approval: request REQ-0001");
    // Not the requester, not the holder, not twice, not without `approve`.
    api.as_ext("hank", &["requests", "approve", "REQ-0001"])
        .expect_code(1)
        .stderr_has("cannot approve it");
    api.as_card(&pin, &["requests", "approve", "REQ-0001"])
        .expect_code(1)
        .stderr_has("is about alice");
    api.as_ext(
        "olga",
        &["requests", "approve", "REQ-0001", "--comment", "checked ID"],
    )
    .expect_code(0);
    api.as_ext("olga", &["requests", "approve", "REQ-0001"])
        .expect_code(1)
        .stderr_has("(conflict)");
    api.as_ext("ray", &["requests", "approve", "REQ-0001"])
        .expect_code(1)
        .stderr_has("(forbidden)");
    let list = api.json(&api.as_ext("oscar", &["requests", "list", "--format", "json"]));
    assert_eq!(list[0]["state"], "pending");
    assert_eq!(list[0]["approvals"], serde_json::json!(["olga"]));
    // The second approval runs it, once: the card is unblocked with its PUK, a new PIN mailed.
    api.as_ext("oscar", &["requests", "approve", "REQ-0001"])
        .expect_code(0);
    let done = api.json(&api.as_ext(
        "olga",
        &["requests", "show", "REQ-0001", "--format", "json"],
    ));
    assert_eq!(done["state"], "done", "{done:#}\n{}", log_text());
    // A new PIN in the mailer; the old one is refused by the card, the new one logs in.
    let new_pin = newest_mailer_pin(state.path());
    assert_ne!(new_pin, pin);
    assert_eq!(done["outcome"]["retriesBefore"], 3, "{done:#}");
    api.as_card(&new_pin, &["whoami"]).expect_code(0);
    // A denial ends a request.
    api.as_ext("hank", &["cards", "unblock", &card_id])
        .stdout_has("REQ-0002");
    api.as_ext(
        "oscar",
        &["requests", "deny", "REQ-0002", "--comment", "no ticket"],
    )
    .expect_code(0);
    api.as_ext("olga", &["requests", "approve", "REQ-0002"])
        .expect_code(1)
        .stderr_has("denied, not pending");

    // Template scopes: ray may unblock contractors' cards only.
    api.as_ext("ray", &["cards", "unblock", &card_id])
        .expect_code(1)
        .stderr_has("not for template `employee-piv`");

    // The audit log has every call, the refusals too, and verifies.
    let entries = crate::harness::keyfleet(&[
        "audit-log",
        "show",
        "--format",
        "json",
        "--state-dir",
        &state.path().display().to_string(),
        "-C",
        &policy.display().to_string(),
    ]);
    let entries: serde_json::Value = api.json(&entries);
    let entries = entries.as_array().unwrap();
    let has = |actor: &str, kind: &str, outcome: &str| {
        entries
            .iter()
            .any(|e| e["actor"] == actor && e["kind"] == kind && e["outcome"] == outcome)
    };
    assert!(has("alice", "unblock", "denied"), "{entries:#?}");
    assert!(has("hank", "request", "pending"));
    assert!(has("olga", "approve-request", "approved"));
    assert!(
        has("hank", "unblock", "done"),
        "the unblock ran as its requester"
    );
    assert!(has("oscar", "deny-request", "denied"));
    assert!(
        entries
            .iter()
            .any(|e| e["kind"] == "login" && e["outcome"] == "unauthorized")
    );

    // The calls are counted by outcome; no request is open any more.
    let (_, text) = http_get(metrics, "/metrics")
        .unwrap_or_else(|| panic!("no metrics on {metrics}: {}", log_text()));
    let m = parse_exposition(&text).expect("exposition parses");
    assert!(m.value("keyfleet_operator_calls_total", &[("outcome", "ok")]) >= Some(10.0));
    assert!(m.value("keyfleet_operator_calls_total", &[("outcome", "forbidden")]) >= Some(5.0));
    assert!(
        m.value(
            "keyfleet_operator_calls_total",
            &[("outcome", "unauthorized")]
        ) >= Some(1.0)
    );
    assert_eq!(m.value("keyfleet_open_requests", &[]), Some(0.0));

    // Alice loses her entitlement: the controller revokes her card's certificates (and wipes
    // the card in the reader it watches), and from that moment her card logs in no more. A
    // copy of the card as it was, in a reader of its own, is what a stolen card would be.
    let stolen = tempfile::tempdir().unwrap();
    copy_tree(card.path(), stolen.path());
    let people = std::fs::read_to_string(policy.join("people.yaml")).unwrap();
    std::fs::write(
        policy.join("people.yaml"),
        people.replace("members: [alice]", "members: []"),
    )
    .unwrap();
    wait_for("alice's certificates to be revoked", || {
        let inv = kf(&["inventory", "--format", "json"]);
        let inv: serde_json::Value = serde_json::from_str(&inv.stdout).ok()?;
        inv["certificates"]
            .as_array()?
            .iter()
            .all(|c| c["status"] == "revoked")
            .then_some(())
    });
    let mut other = Pcscd::start();
    let _stolen = other.vcard(stolen.path(), &[]);
    other.wait_card(true);
    let elsewhere = Api {
        pcscd: &other,
        url: api.url.clone(),
        server_ca: api.server_ca.clone(),
        externals: &externals,
    };
    elsewhere
        .as_card(&new_pin, &["whoami"])
        .expect_code(1)
        .stderr_has("unauthorized")
        .stderr_has("is revoked");
    // The rate limit: a burst over Settings.spec.api.rateLimit gets 429.
    let limited = (0..45).any(|_| {
        api.as_ext("ray", &["requests", "list"])
            .stderr
            .contains("too-many-requests")
    });
    assert!(limited, "no call was rate-limited");
    stop(ctl);
}

/// The newest PIN mailer's PIN.
fn newest_mailer_pin(state: &Path) -> String {
    let newest = std::fs::read_dir(state.join("pin-mailer"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".txt"))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .expect("a PIN mailer");
    std::fs::read_to_string(newest.path())
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("PIN: "))
        .expect("PIN line")
        .to_string()
}

/// Copies the files under `from` into `to`.
fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.path().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}
