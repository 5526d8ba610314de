//! Card incidents (issue 16) against the real binary on a small copy of the quickstart (local
//! CA publishing its CRL, virtual cards): lost, damaged and forgotten cards reach the CRL with
//! their reasons (openssl), the found card leaves it; replacements and temporary cards are
//! issued and ended; a forgotten card becomes lost after a short timer; refused transitions
//! name the state and are audited; `CardBinding.spec.incident` in git has the same effect.

use serde_json::Value;

use std::path::Path;

use crate::harness::controller::{free_port, wait_for};
use crate::harness::openssl;
use crate::harness::operator_api::Externals;
use crate::spine::Quickstart;

/// Where the local CA publishes its CRL, inside the policy directory.
const CRL: &str = "incidents.crl";

const PEOPLE: &str = "\
users:
  - {uid: alice, cn: Alice Andersen, mail: alice@example.com}
  - {uid: bob, cn: Bob Brown, mail: bob@example.com}
  - {uid: carol, cn: Carol Clarke, mail: carol@example.com}
groups:
  - name: engineering
    members: [alice, bob, carol]
";

const TEMP: &str = "\
apiVersion: keyfleet.dev/v1
kind: CardTemplate
metadata:
  name: temp
spec:
  cardType: virtual
  certificates:
    - name: authentication
      slot: 9A
      authority: quickstart-ca
      profile: piv-auth
      keyAlgorithm: ecc-p256
      subject: \"CN=${user.cn} (temporary),OU=Employees,O=Example\"
      validity: 1d
      renewBefore: 1h
";

/// The quickstart cut to three employees, its CA publishing [`CRL`], no safety valve for
/// three users, and `settings` appended to Settings.spec.
pub(crate) fn lab(settings: &str) -> Quickstart {
    lab_with(settings, |_| {})
}

/// [`lab`], with `prepare` run on the policy before it is validated and applied.
pub(crate) fn lab_with(settings: &str, prepare: impl FnOnce(&Quickstart)) -> Quickstart {
    let q = Quickstart::new();
    prepare(&q);
    std::fs::write(q.policy.join("people.yaml"), PEOPLE).expect("write people");
    q.edit(
        "settings.yaml",
        "maxRevocationPercent: 25",
        "maxRevocationPercent: 100",
    );
    append(&q, "settings.yaml", settings);
    append(
        &q,
        "authority.yaml",
        &format!("    crlPublish:\n      path: {CRL}\n"),
    );
    q.run(&["validate"]).expect_code(0);
    q.run(&["apply", "--yes"]).expect_code(0);
    q
}

pub(crate) fn append(q: &Quickstart, file: &str, text: &str) {
    let p = q.policy.join(file);
    let s = std::fs::read_to_string(&p).expect("read policy file");
    std::fs::write(&p, s + text).expect("write policy file");
}

/// The card of `user` under `template` with `status` in an inventory.
pub(crate) fn card_of(inv: &Value, user: &str, template: &str, status: &str) -> String {
    inv["cards"]
        .as_array()
        .and_then(|cards| {
            cards
                .iter()
                .find(|c| c["user"] == user && c["template"] == template && c["status"] == status)
        })
        .and_then(|c| c["id"].as_str())
        .unwrap_or_else(|| panic!("no {status} card of {user} under {template}: {inv:#}"))
        .to_string()
}

pub(crate) fn card_status(inv: &Value, card: &str) -> Value {
    inv["cards"]
        .as_array()
        .and_then(|cards| cards.iter().find(|c| c["id"] == card))
        .map(|c| c["status"].clone())
        .unwrap_or_else(|| panic!("no card {card}: {inv:#}"))
}

/// The serials of the certificates on `card`.
pub(crate) fn serials_on(inv: &Value, card: &str) -> Vec<String> {
    let s: Vec<String> = inv["certificates"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["card"] == card)
                .filter_map(|c| c["serial"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert!(!s.is_empty(), "no certificates on {card}: {inv:#}");
    s
}

/// The plan's actions as (kind, user, template, card, reason).
pub(crate) fn plan(q: &Quickstart) -> Vec<(String, String, String, String, String)> {
    let p = q.json(&["plan", "--format", "json"]);
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    p["actions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    (
                        s(&x["kind"]),
                        s(&x["user"]),
                        s(&x["template"]),
                        s(&x["card"]),
                        s(&x["reason"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn has(
    plan: &[(String, String, String, String, String)],
    kind: &str,
    card: &str,
    reason: &str,
) -> bool {
    plan.iter()
        .any(|(k, _, _, c, r)| k == kind && c == card && r == reason)
}

/// The published CRL as openssl prints it.
pub(crate) fn crl_text(q: &Quickstart) -> String {
    let crl = q.policy.join(CRL).display().to_string();
    let (ok, text) = openssl(&["crl", "-inform", "DER", "-in", &crl, "-noout", "-text"]);
    assert!(ok, "openssl crl: {text}");
    text
}

/// Every one of `serials` is listed in the CRL text with `reason`.
fn assert_crl_reasons(crl: &str, serials: &[String], reason: &str) {
    for s in serials {
        assert_eq!(crl_reason(crl, s).as_deref(), Some(reason), "{s}: {crl}");
    }
}

/// The reason code openssl prints for `serial` in a CRL's text, if listed.
pub(crate) fn crl_reason(text: &str, serial: &str) -> Option<String> {
    let at = text.find(&format!("Serial Number: {serial}"))?;
    let rest = &text[at..];
    let mut lines = rest.lines().skip(1);
    for line in lines.by_ref() {
        if line.trim_start().starts_with("Serial Number:") {
            return None;
        }
        if line.contains("CRL Reason Code") {
            break;
        }
    }
    lines.next().map(|l| l.trim().to_string())
}

/// `cards show CARD --format json`.
pub(crate) fn show(q: &Quickstart, card: &str) -> Value {
    q.json(&["cards", "show", card, "--format", "json"])
}

fn history_reasons(q: &Quickstart, user: &str) -> Vec<(String, String, String)> {
    let h = q.json(&["history", "--user", user, "--format", "json"]);
    h.as_array()
        .expect("history")
        .iter()
        .map(|e| {
            let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
            (s(&e["kind"]), s(&e["card"]), s(&e["reason"]["code"]))
        })
        .collect()
}

const EMP: &str = "employee-virtual";

#[test]
fn lost_damaged_and_forgotten_cards_are_revoked_held_replaced_and_found() {
    let q = lab("");
    let inv = q.inventory();
    let (alice, bob, carol) = (
        card_of(&inv, "alice", EMP, "active"),
        card_of(&inv, "bob", EMP, "active"),
        card_of(&inv, "carol", EMP, "active"),
    );
    let (sa, sb, sc) = (
        serials_on(&inv, &alice),
        serials_on(&inv, &bob),
        serials_on(&inv, &carol),
    );
    // The state directory's owner (the system owner) reports, with no controller running.
    q.run(&[
        "cards",
        "report",
        &alice,
        "--lost",
        "--comment",
        "left on a train",
    ])
    .expect_code(0)
    .stdout_has("reported lost (status lost)");
    q.run(&["cards", "report", &bob, "--damaged"])
        .expect_code(0)
        .stdout_has("status damaged");
    q.run(&["cards", "report", &carol, "--forgotten"])
        .expect_code(0)
        .stdout_has("status forgotten");
    let inv = q.inventory();
    assert_eq!(card_status(&inv, &alice), "lost");
    assert_eq!(card_status(&inv, &bob), "damaged");
    assert_eq!(card_status(&inv, &carol), "forgotten");
    let a = show(&q, &alice);
    assert_eq!(a["incident"]["kind"], "lost", "{a:#}");
    assert_eq!(a["incident"]["comment"], "left on a train");
    assert!(a["incident"]["reportedBy"].is_string(), "{a:#}");

    let p = plan(&q);
    assert!(has(&p, "revoke", &alice, "card-lost"), "{p:?}");
    assert!(has(&p, "revoke", &bob, "card-damaged"), "{p:?}");
    assert!(has(&p, "retire", &bob, "card-damaged"), "{p:?}");
    assert!(has(&p, "suspend", &carol, "card-forgotten"), "{p:?}");
    for (user, reason) in [("alice", "replaces-lost"), ("bob", "replaces-damaged")] {
        assert!(
            p.iter()
                .any(|(k, u, t, _, r)| k == "issue" && u == user && t == EMP && r == reason),
            "{p:?}"
        );
    }
    assert!(
        !p.iter().any(|(k, u, ..)| k == "issue" && u == "carol"),
        "{p:?}"
    );
    q.run(&["apply", "--yes"]).expect_code(0);

    let crl = crl_text(&q);
    assert_crl_reasons(&crl, &sa, "Key Compromise");
    assert_crl_reasons(&crl, &sb, "Cessation Of Operation");
    assert_crl_reasons(&crl, &sc, "Certificate Hold");
    let inv = q.inventory();
    assert_eq!(card_status(&inv, &alice), "lost");
    assert_eq!(card_status(&inv, &bob), "retired");
    assert_eq!(card_status(&inv, &carol), "forgotten");
    // The replacements: a new active card under the same template, in the history.
    for (user, old, reason) in [
        ("alice", &alice, "replaces-lost"),
        ("bob", &bob, "replaces-damaged"),
    ] {
        let new = card_of(&inv, user, EMP, "active");
        assert_ne!(&new, old);
        assert_eq!(serials_on(&inv, &new).len(), 2);
        let h = history_reasons(&q, user);
        assert!(
            h.contains(&("issue".into(), new.clone(), reason.into())),
            "{h:?}"
        );
    }
    let b = show(&q, &bob);
    assert_eq!(b["incidents"][0]["kind"], "damaged", "{b:#}");
    assert!(
        b["certificates"]
            .as_array()
            .is_some_and(|c| c.iter().all(|c| c["status"] == "revoked")),
        "{b:#}"
    );

    // Carol's card turns up: the hold is released and the CRL no longer lists it.
    q.run(&["cards", "found", &carol]).expect_code(0);
    let p = plan(&q);
    assert!(has(&p, "resume", &carol, "card-found"), "{p:?}");
    q.run(&["apply", "--yes"]).expect_code(0);
    let crl = crl_text(&q);
    for s in &sc {
        assert!(
            !crl.contains(&format!("Serial Number: {s}")),
            "{s} still in\n{crl}"
        );
    }
    let inv = q.inventory();
    assert_eq!(card_status(&inv, &carol), "active");
    let c = show(&q, &carol);
    assert!(c["incident"].is_null(), "{c:#}");
    let kinds: Vec<&str> = c["incidents"]
        .as_array()
        .expect("incidents")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["forgotten", "found"]);
    assert!(history_reasons(&q, "carol").contains(&("resume".into(), carol, "card-found".into())));
    q.run(&["plan"]).expect_code(0).stdout_has("No changes");
}

/// The temporary template `temp` (1d) named by employee-virtual.
fn with_temporary(q: &Quickstart) {
    std::fs::write(q.policy.join("templates/temp.yaml"), TEMP).expect("write temp");
    append(
        q,
        "templates/employee-virtual.yaml",
        "  temporary: {template: temp}\n",
    );
    q.run(&["validate"]).expect_code(0);
}

#[test]
fn a_forgotten_card_gets_a_temporary_card_that_ends_when_it_is_found() {
    let q = lab("");
    with_temporary(&q);
    q.run(&["plan"]).expect_code(0).stdout_has("No changes");
    let alice = card_of(&q.inventory(), "alice", EMP, "active");
    q.run(&["cards", "report", &alice, "--forgotten"])
        .expect_code(0);
    let p = plan(&q);
    assert!(has(&p, "suspend", &alice, "card-forgotten"), "{p:?}");
    assert!(
        p.iter().any(|(k, u, t, _, r)| k == "issue"
            && u == "alice"
            && t == "temp"
            && r == "temporary-for-forgotten"),
        "{p:?}"
    );
    q.run(&["apply", "--yes"])
        .expect_code(0)
        .stdout_has("done    issue alice");
    let inv = q.inventory();
    let temp = card_of(&inv, "alice", "temp", "temporary");
    assert_eq!(card_status(&inv, &alice), "forgotten");
    let cert = inv["certificates"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["card"] == temp.as_str()))
        .expect("the temporary card's certificate")
        .clone();
    let pem = q.write_file("temp.pem", cert["pem"].as_str().expect("pem"));
    let pem = pem.display().to_string();
    // Valid for a day: still valid in 23 hours, no longer in 25.
    let (_, out) = openssl(&[
        "x509",
        "-in",
        &pem,
        "-noout",
        "-subject",
        "-checkend",
        "82800",
    ]);
    assert!(
        out.contains("will not expire") && out.contains("(temporary)"),
        "{out}"
    );
    let (_, out) = openssl(&["x509", "-in", &pem, "-noout", "-checkend", "90000"]);
    assert!(out.contains("will expire"), "{out}");
    q.run(&["plan"]).expect_code(0).stdout_has("No changes");

    // Found: the original resumes; the temporary card is revoked and back to blank.
    q.run(&["cards", "found", &alice]).expect_code(0);
    let p = plan(&q);
    assert!(has(&p, "resume", &alice, "card-found"), "{p:?}");
    assert!(has(&p, "revoke", &temp, "temporary-ended"), "{p:?}");
    assert!(has(&p, "retire", &temp, "temporary-ended"), "{p:?}");
    q.run(&["apply", "--yes"]).expect_code(0);
    let serial = cert["serial"].as_str().expect("serial");
    let crl = crl_text(&q);
    assert_eq!(
        crl_reason(&crl, serial).as_deref(),
        Some("Cessation Of Operation"),
        "{crl}"
    );
    let inv = q.inventory();
    assert_eq!(card_status(&inv, &temp), "blank");
    assert_eq!(card_status(&inv, &alice), "active");
    q.run(&["plan"]).expect_code(0).stdout_has("No changes");
}

#[test]
fn a_card_forgotten_past_the_limit_becomes_lost() {
    let q = lab("  incidents:\n    forgottenBecomesLostAfter: 2s\n");
    let alice = card_of(&q.inventory(), "alice", EMP, "active");
    let serials = serials_on(&q.inventory(), &alice);
    q.run(&["cards", "report", &alice, "--forgotten"])
        .expect_code(0);
    q.run(&["apply", "--yes"]).expect_code(0);
    // The timer runs out: the next plan treats the card as lost.
    let p = wait_for("the forgotten card to become lost", || {
        let p = plan(&q);
        has(&p, "revoke", &alice, "card-lost").then_some(p)
    });
    assert!(
        p.iter()
            .any(|(k, u, _, _, r)| k == "issue" && u == "alice" && r == "replaces-lost"),
        "{p:?}"
    );
    q.run(&["apply", "--yes"]).expect_code(0);
    let crl = crl_text(&q);
    assert_crl_reasons(&crl, &serials, "Key Compromise");
    let inv = q.inventory();
    assert_eq!(card_status(&inv, &alice), "lost");
    assert_eq!(show(&q, &alice)["incident"]["kind"], "lost");
    q.run(&["cards", "found", &alice])
        .expect_code(1)
        .stderr_has("is lost");
}

#[test]
fn transitions_outside_the_table_are_refused_naming_the_state_and_audited() {
    let q = lab("");
    let inv = q.inventory();
    let (alice, bob) = (
        card_of(&inv, "alice", EMP, "active"),
        card_of(&inv, "bob", EMP, "active"),
    );
    q.run(&["cards", "found", &alice])
        .expect_code(1)
        .stderr_has("is in use: `found` is not allowed");
    q.run(&["cards", "retire", &alice, "--found-lost"])
        .expect_code(1)
        .stderr_has("is in use: `retire --found-lost` is not allowed");
    q.run(&["cards", "report", &bob, "--lost"]).expect_code(0);
    q.run(&["cards", "report", &bob, "--forgotten"])
        .expect_code(1)
        .stderr_has("is lost");
    q.run(&["cards", "report", "vc-nonexistent", "--lost"])
        .expect_code(1)
        .stderr_has("not in the inventory");
    // Nothing refused changed anything.
    let inv = q.inventory();
    assert_eq!(card_status(&inv, &alice), "active");
    assert_eq!(card_status(&inv, &bob), "lost");
    // A lost card that turned up is wiped back to stock, only by retire --found-lost.
    q.run(&["apply", "--yes"]).expect_code(0);
    q.run(&["cards", "retire", &bob, "--found-lost"])
        .expect_code(0)
        .stdout_has("back in stock");
    assert_eq!(card_status(&q.inventory(), &bob), "blank");

    let entries = q.json(&["audit-log", "show", "--format", "json"]);
    let entries = entries.as_array().expect("entries");
    let outcomes = |kind: &str, card: &str| -> Vec<String> {
        entries
            .iter()
            .filter(|e| e["kind"] == kind && e["target"] == card)
            .filter_map(|e| e["outcome"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(
        outcomes("report-incident", &bob),
        ["started", "done", "started", "refused"]
    );
    let resolve = outcomes("resolve-incident", &alice);
    assert_eq!(
        resolve.iter().filter(|o| *o == "refused").count(),
        2,
        "{resolve:?}"
    );
    assert_eq!(outcomes("resolve-incident", &bob), ["started", "done"]);
    let refused = entries
        .iter()
        .find(|e| e["kind"] == "report-incident" && e["outcome"] == "refused")
        .expect("a refusal");
    assert!(
        refused["details"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("is lost")),
        "{refused:#}"
    );
    q.run(&["audit-log", "verify"]).expect_code(0);
}

#[test]
fn incidents_declared_in_git_have_the_same_effect() {
    let q = lab("");
    let inv = q.inventory();
    let (alice, bob) = (
        card_of(&inv, "alice", EMP, "active"),
        card_of(&inv, "bob", EMP, "active"),
    );
    let serials = serials_on(&inv, &alice);
    let bindings = |bob_incident: &str| {
        format!(
            "apiVersion: keyfleet.dev/v1\nkind: CardBinding\nmetadata: {{name: alice-card}}\n\
             spec: {{user: alice, card: {alice}, incident: lost}}\n---\n\
             apiVersion: keyfleet.dev/v1\nkind: CardBinding\nmetadata: {{name: bob-card}}\n\
             spec: {{user: bob, card: {bob}{bob_incident}}}\n"
        )
    };
    std::fs::write(
        q.policy.join("bindings.yaml"),
        bindings(", incident: forgotten"),
    )
    .expect("write bindings");
    q.run(&["validate"]).expect_code(0);
    let p = plan(&q);
    assert!(has(&p, "revoke", &alice, "card-lost"), "{p:?}");
    assert!(has(&p, "suspend", &bob, "card-forgotten"), "{p:?}");
    assert!(
        p.iter()
            .any(|(k, u, _, _, r)| k == "issue" && u == "alice" && r == "replaces-lost"),
        "{p:?}"
    );
    q.run(&["apply", "--yes"]).expect_code(0);
    let crl = crl_text(&q);
    assert_crl_reasons(&crl, &serials, "Key Compromise");
    let inv = q.inventory();
    assert_eq!(card_status(&inv, &alice), "lost");
    assert_eq!(card_status(&inv, &bob), "forgotten");
    assert_ne!(card_of(&inv, "alice", EMP, "active"), alice);
    // Declared in git, ended in git: `found` is refused while the declaration stands.
    q.run(&["cards", "found", &bob])
        .expect_code(1)
        .stderr_has("declared forgotten in git");
    std::fs::write(q.policy.join("bindings.yaml"), bindings("")).expect("write bindings");
    let p = plan(&q);
    assert!(has(&p, "resume", &bob, "card-found"), "{p:?}");
    q.run(&["apply", "--yes"]).expect_code(0);
    assert_eq!(card_status(&q.inventory(), &bob), "active");
    let crl = crl_text(&q);
    assert!(!crl.contains("Certificate Hold"), "{crl}");
    q.run(&["plan"]).expect_code(0).stdout_has("No changes");
}

const OPERATORS: &str = "  operators:
    templates: [employee-virtual]
    external:
      - {name: hank, caFile: automation-ca.pem, subject: CN=hank}
      - {name: ray, caFile: automation-ca.pem, subject: CN=ray}
      - {name: alice, caFile: automation-ca.pem, subject: CN=alice}
---
apiVersion: keyfleet.dev/v1
kind: Role
metadata: {name: helpdesk}
spec:
  permissions: [report-incident, resolve-incident, view-inventory]
  members: [hank, alice]
---
apiVersion: keyfleet.dev/v1
kind: Role
metadata: {name: readers}
spec:
  permissions: [view-inventory]
  members: [ray]
";

/// One HTTPS call to the operator API with curl as `who`: (status, JSON body).
pub(crate) fn call(
    ext: &Path,
    url: &str,
    ca: &str,
    who: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let f = |e: &str| ext.join(format!("{who}.{e}")).display().to_string();
    let mut c = std::process::Command::new("curl");
    c.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--cacert", ca])
        .args(["--cert", &f("pem"), "--key", &f("key"), "-X", method])
        .arg(format!("{url}{path}"));
    if let Some(b) = body {
        c.args(["-H", "content-type: application/json", "--data", b]);
    }
    let out = c.output().expect("curl (scripts/install-deps --test)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (json, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code = code.trim().parse().unwrap_or(0);
    (code, serde_json::from_str(json).unwrap_or(Value::Null))
}

#[test]
fn the_api_answers_409_for_refused_transitions_and_403_without_the_permission() {
    let q = lab_with(OPERATORS, |q| {
        Externals::new(&q.policy, &["hank", "ray", "alice"]);
    });
    let inv = q.inventory();
    let (alice, bob, carol) = (
        card_of(&inv, "alice", EMP, "active"),
        card_of(&inv, "bob", EMP, "active"),
        card_of(&inv, "carol", EMP, "active"),
    );
    let bob_serials = serials_on(&inv, &bob);
    let ca = q.write_file("ca.pem", &q.run(&["ca", "cert", "quickstart-ca"]).stdout);
    let ca = ca.display().to_string();
    let port = free_port();
    let log = q.write_file("controller.log", "");
    let log_file = std::fs::File::create(&log).expect("log");
    let mut ctl = std::process::Command::new(env!("CARGO_BIN_EXE_keyfleet"))
        .arg("-C")
        .arg(&q.policy)
        .arg("--state-dir")
        .arg(&q.state)
        .args([
            "run",
            "--resync",
            "2",
            "--api",
            &format!("127.0.0.1:{port}"),
        ])
        .env_remove("KEYFLEET_STATE_DIR")
        .stdin(std::process::Stdio::null())
        .stdout(log_file.try_clone().expect("log"))
        .stderr(log_file)
        .spawn()
        .expect("start keyfleet run");
    let url = format!("https://127.0.0.1:{port}");
    let api = |who: &str, method: &str, path: &str, body: Option<&str>| {
        call(&q.policy, &url, &ca, who, method, path, body)
    };
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("the operator API to answer", || {
        (api("ray", "GET", "/api/v1/whoami", None).0 == 200).then_some(())
    });
    let lost = Some(r#"{"kind":"lost","comment":"stolen bag"}"#);
    let incidents = |card: &str| format!("/api/v1/cards/{card}/incidents");

    // Without report-incident: 403 naming it. Nobody reports their own card.
    let (code, body) = api("ray", "POST", &incidents(&bob), lost);
    assert_eq!(code, 403, "{body}\n{}", log_text());
    assert!(body.to_string().contains("report-incident"), "{body}");
    let (code, body) = api("alice", "POST", &incidents(&alice), lost);
    assert_eq!(code, 403, "{body}");
    assert!(body.to_string().contains("separation of duties"), "{body}");
    // Outside the table: 409 with the state named.
    let (code, body) = api(
        "hank",
        "POST",
        &format!("/api/v1/cards/{alice}/found"),
        Some("{}"),
    );
    assert_eq!(code, 409, "{body}");
    assert!(body.to_string().contains("is in use"), "{body}");
    let retire = format!("/api/v1/cards/{carol}/retire");
    let (code, body) = api("hank", "POST", &retire, Some(r#"{"foundLost":true}"#));
    assert_eq!(code, 409, "{body}");
    assert!(body.to_string().contains("is in use"), "{body}");
    assert_eq!(card_status(&q.inventory(), &alice), "active");

    // Hank reports Bob's card lost: the controller revokes it and issues a replacement.
    let (code, body) = api("hank", "POST", &incidents(&bob), lost);
    assert_eq!(code, 200, "{body}\n{}", log_text());
    assert_eq!(body["status"], "lost", "{body}");
    let (code, body) = api(
        "hank",
        "POST",
        &incidents(&bob),
        Some(r#"{"kind":"forgotten"}"#),
    );
    assert_eq!(code, 409, "{body}");
    assert!(body.to_string().contains("is lost"), "{body}");
    wait_for("bob's lost card to be revoked and replaced", || {
        let inv = q.inventory();
        let revoked = inv["certificates"]
            .as_array()?
            .iter()
            .any(|c| c["serial"] == bob_serials[0].as_str() && c["status"] == "revoked");
        let replaced = inv["cards"]
            .as_array()?
            .iter()
            .any(|c| c["user"] == "bob" && c["status"] == "active" && c["id"] != bob.as_str());
        (revoked && replaced).then_some(())
    });
    let crl = crl_text(&q);
    assert_crl_reasons(&crl, &bob_serials, "Key Compromise");
    let (code, body) = api("hank", "GET", &format!("/api/v1/cards/{bob}"), None);
    assert_eq!(code, 200, "{body}");
    assert!(body.to_string().contains("stolen bag"), "{body:#}");
    let _ = std::process::Command::new("kill")
        .arg(ctl.id().to_string())
        .status();
    let _ = ctl.wait();

    let entries = q.json(&["audit-log", "show", "--format", "json"]);
    let entries = entries.as_array().expect("entries");
    let seen = |actor: &str, kind: &str, outcome: &str| {
        entries
            .iter()
            .any(|e| e["actor"] == actor && e["kind"] == kind && e["outcome"] == outcome)
    };
    assert!(seen("ray", "report-incident", "denied"), "{entries:#?}");
    assert!(seen("alice", "report-incident", "denied"));
    assert!(seen("hank", "report-incident", "started"));
    assert!(seen("hank", "report-incident", "done"));
    assert!(seen("hank", "report-incident", "refused"));
    assert!(seen("hank", "resolve-incident", "refused"));
}

#[test]
fn the_ca_gateway_holds_a_forgotten_cards_certificate_and_resumes_it_when_found() {
    use crate::cagw::{pem_cred, policy, run};
    use crate::harness::cagw_emulator::{CA_ID, Emulator};
    let em = Emulator::start();
    let d = policy(&em, CA_ID, "piv-auth", &pem_cred(&em, "client"));
    run(&d, &["apply", "-y"]).expect_code(0);
    let serial = em.serials()[0].clone();
    let inv: Value = serde_json::from_str(&run(&d, &["inventory", "--format", "json"]).stdout)
        .expect("inventory");
    let card = card_of(&inv, "alice", "employee", "active");
    run(&d, &["cards", "report", &card, "--forgotten"]).expect_code(0);
    run(&d, &["apply", "-y"]).expect_code(0);
    assert_eq!(
        em.status_of(&serial),
        Some(("held".into(), Some("certificateHold".into())))
    );
    run(&d, &["cards", "found", &card]).expect_code(0);
    run(&d, &["apply", "-y"]).expect_code(0);
    assert_eq!(
        em.status_of(&serial).map(|s| s.0).as_deref(),
        Some("normal")
    );
    // Lost: revoked for key compromise at the CA, and a replacement issued there.
    run(&d, &["cards", "report", &card, "--lost"]).expect_code(0);
    run(&d, &["apply", "-y", "--allow-mass-revocation"]).expect_code(0);
    assert_eq!(
        em.status_of(&serial),
        Some(("revoked".into(), Some("keyCompromise".into())))
    );
    assert_eq!(em.issued(), 2);
    em.stop();
}
