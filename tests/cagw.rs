//! The Entrust CA Gateway connector against the emulator: the whole lifecycle through
//! `keyfleet apply`, mTLS failures, retries, crash recovery, operator commands, audit and
//! `validate --online`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use keyfleet::ca::entrust::{EntrustGateway, GatewayConfig};
use keyfleet::ca::remote::{RetryPolicy, load_pem_certificates, load_pem_identity};
use keyfleet::ca::{CaCertStatus, CertificateAuthority, EnrollRequest, RevocationReason};
use keyfleet::names::{DistinguishedName, SanValue};

use crate::harness::cagw_emulator::{ActionFault, CA_ID, Emulator, Fault, P12_PASSWORD, Target};
use crate::harness::{PolicyDir, Run, keyfleet};

/// The CA object for the emulator; `cred` is the clientCertificate YAML (indented 4).
fn authority(em: &Emulator, ca_id: &str, cred: &str) -> String {
    format!(
        "apiVersion: keyfleet.dev/v1
kind: CertificateAuthority
metadata:
  name: gw
spec:
  entrustGateway:
    url: {url}
    caId: {ca_id}
    trustBundle: {trust}
    clientCertificate:
{cred}",
        url = em.url(),
        trust = em.file("trust-bundle.pem").display(),
    )
}

pub(crate) fn pem_cred(em: &Emulator, name: &str) -> String {
    format!(
        "      certFile: {}\n      keyFile: {}\n",
        em.file(&format!("{name}.pem")).display(),
        em.file(&format!("{name}-key.pem")).display()
    )
}

const REST: &str = "\
apiVersion: keyfleet.dev/v1
kind: Directory
metadata:
  name: people
spec:
  file:
    path: people.yaml
---
apiVersion: keyfleet.dev/v1
kind: CardTemplate
metadata:
  name: employee
spec:
  cardType: virtual
  onUserDisabled: suspend
  certificates:
    - name: auth
      slot: 9A
      authority: gw
      profile: PROFILE
      keyAlgorithm: ecc-p256
      subject: CN=${user.cn},O=Example
      subjectAltNames:
        - email: ${user.mail}
        - upn: ${user.uid}@corp.example.com
---
apiVersion: keyfleet.dev/v1
kind: Assignment
metadata:
  name: staff
spec:
  directory: people
  template: employee
  groups:
    - name: staff
---
apiVersion: keyfleet.dev/v1
kind: CardStock
metadata:
  name: virtual
spec:
  cardType: virtual
  autoBind: true
  virtual: {}
";

fn people(disabled: bool, member: bool) -> String {
    format!(
        "users:\n  - {{uid: alice, cn: Alice, mail: alice@example.com, disabled: {disabled}}}\ngroups:\n  - {{name: staff, members: [{}]}}\n",
        if member { "alice" } else { "" }
    )
}

pub(crate) fn policy(em: &Emulator, ca_id: &str, profile: &str, cred: &str) -> PolicyDir {
    let d = PolicyDir::empty();
    d.write("ca.yaml", &authority(em, ca_id, cred));
    d.write("rest.yaml", &REST.replace("PROFILE", profile));
    d.write("people.yaml", &people(false, true));
    d
}

pub(crate) fn run(d: &PolicyDir, args: &[&str]) -> Run {
    let dir = d.path().display().to_string();
    let state = d.path().join("state").display().to_string();
    let mut all = vec![args[0], "-C", dir.as_str(), "--state-dir", state.as_str()];
    all.extend_from_slice(&args[1..]);
    keyfleet(&all)
}

fn openssl(args: &[&str], stdin_file: Option<&Path>) -> String {
    let mut c = Command::new("openssl");
    c.args(args);
    if let Some(f) = stdin_file {
        c.stdin(std::fs::File::open(f).expect("open"));
    }
    let out = c.output().expect("openssl must be installed");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn crl_text(em: &Emulator, dir: &Path) -> String {
    let crl = dir.join("crl.der");
    std::fs::write(&crl, em.crl_der(CA_ID)).expect("write crl");
    openssl(
        &[
            "crl",
            "-inform",
            "DER",
            "-noout",
            "-text",
            "-in",
            &crl.display().to_string(),
        ],
        None,
    )
}

#[test]
fn lifecycle_issue_hold_unhold_revoke_through_apply() {
    let em = Emulator::start();
    let d = policy(&em, CA_ID, "piv-auth", &pem_cred(&em, "client"));
    run(&d, &["validate"]).expect_code(0);

    run(&d, &["apply", "-y"]).expect_code(0);
    let serials = em.serials();
    assert_eq!(serials.len(), 1, "exactly one certificate issued");
    let serial = serials[0].clone();
    assert_eq!(em.status_of(&serial).unwrap().0, "normal");
    // The certificate verifies with openssl against the issuing CA, carries the template's
    // subject, the e-mail SAN and the UPN (from the CSR, useSANFromCSR).
    let pem = d.write("issued.pem", &em.cert_pem(&serial).unwrap());
    let ca = em.file("CA-Jupiter.pem").display().to_string();
    let verify = openssl(
        &["verify", "-CAfile", &ca, &pem.display().to_string()],
        None,
    );
    assert!(verify.contains(": OK"), "{verify}");
    let text = openssl(
        &["x509", "-noout", "-text", "-in", &pem.display().to_string()],
        None,
    );
    assert!(
        text.contains("CN = Alice") || text.contains("CN=Alice"),
        "{text}"
    );
    assert!(text.contains("email:alice@example.com"), "{text}");
    assert!(text.contains("alice@corp.example.com"), "{text}");
    // The emulator saw the profile's subject variables.
    assert!(em.count("GET", "/profiles/piv-auth") >= 1);
    // A second apply changes nothing.
    run(&d, &["apply", "-y"]).expect_code(0);
    assert_eq!(em.issued(), 1);

    // Account disabled: the certificate is held at the CA and listed on its CRL as on hold.
    d.write("people.yaml", &people(true, true));
    run(&d, &["apply", "-y"]).expect_code(0);
    assert_eq!(
        em.status_of(&serial).unwrap(),
        ("held".to_string(), Some("certificateHold".to_string()))
    );
    let crl = crl_text(&em, d.path());
    assert!(
        crl.to_ascii_uppercase()
            .contains(&serial.to_ascii_uppercase()),
        "{crl}"
    );
    assert!(crl.contains("Certificate Hold"), "{crl}");

    // Enabled again: released, and off the CRL.
    d.write("people.yaml", &people(false, true));
    run(&d, &["apply", "-y"]).expect_code(0);
    assert_eq!(em.status_of(&serial).unwrap().0, "normal");
    let crl = crl_text(&em, d.path());
    assert!(
        !crl.to_ascii_uppercase()
            .contains(&serial.to_ascii_uppercase()),
        "{crl}"
    );

    // Entitlement lost: revoked with a reason, on the CRL for good.
    d.write("people.yaml", &people(false, false));
    run(&d, &["apply", "-y", "--allow-mass-revocation"]).expect_code(0);
    assert_eq!(
        em.status_of(&serial).unwrap(),
        (
            "revoked".to_string(),
            Some("affiliationChanged".to_string())
        )
    );
    let crl = crl_text(&em, d.path());
    assert!(crl.contains("Affiliation Changed"), "{crl}");
    assert_eq!(em.issued(), 1, "no certificate beyond the first");
}

#[test]
fn wrong_client_certificates_are_refused_and_reported() {
    let em = Emulator::start();
    // Issued by a CA the gateway does not trust: the TLS handshake fails.
    let d = policy(&em, CA_ID, "piv-auth", &pem_cred(&em, "rogue"));
    let r = run(&d, &["ca", "test", "gw"]);
    r.expect_code(1)
        .stderr_has("TLS authentication failed")
        .stderr_has("refused the client certificate");
    assert_eq!(em.seen().len(), 0, "no request got through");
    // Trusted, but not configured at the gateway: 403 with the gateway's message.
    let d = policy(&em, CA_ID, "piv-auth", &pem_cred(&em, "stranger"));
    run(&d, &["ca", "test", "gw"])
        .expect_code(1)
        .stderr_has("403")
        .stderr_has("is not configured");
    assert!(em.seen().iter().all(|s| s.client_dn.contains("stranger")));
    // A read-only client may look but not enrol.
    let d = policy(&em, CA_ID, "piv-auth", &pem_cred(&em, "auditor"));
    run(&d, &["ca", "test", "gw"]).expect_code(0);
    let r = run(&d, &["apply", "-y"]);
    assert_ne!(r.code, Some(0));
    assert!(
        format!("{}{}", r.stdout, r.stderr).contains("read-only client"),
        "{r:?}"
    );
    assert_eq!(em.issued(), 0);
}

#[test]
fn operator_commands_with_a_pkcs12_credential() {
    let em = Emulator::start();
    let cred = format!(
        "      pkcs12File: {}\n      password: {{env: KF_TEST_P12_PASSWORD}}\n",
        em.file("client.p12").display()
    );
    let d = policy(&em, CA_ID, "piv-auth", &cred);
    // The variable holds only the emulator's throwaway password.
    let dir = d.path().display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_keyfleet"))
        .args(["ca", "test", "gw", "-C", &dir])
        .env("KF_TEST_P12_PASSWORD", P12_PASSWORD)
        .output()
        .expect("run keyfleet");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("status UP"), "{stdout}");
    let out = Command::new(env!("CARGO_BIN_EXE_keyfleet"))
        .args(["ca", "test", "gw", "-C", &dir])
        .env("KF_TEST_P12_PASSWORD", "wrong")
        .output()
        .expect("run keyfleet");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PKCS#12"));

    let d = policy(&em, CA_ID, "piv-auth", &pem_cred(&em, "client"));
    let r = run(&d, &["ca", "instances", "gw"]);
    r.expect_code(0)
        .stdout_has("* CA-Jupiter")
        .stdout_has("CA-Saturn");
    run(&d, &["ca", "profiles", "gw"])
        .expect_code(0)
        .stdout_has("piv-auth")
        .stdout_has("cn (required)")
        .stdout_has("piv-key-mgmt");
}

#[test]
fn validate_online_names_unknown_ca_ids_and_profiles() {
    let em = Emulator::start();
    let d = policy(&em, "CA-Pluto", "piv-auth", &pem_cred(&em, "client"));
    d.validate(&[]).expect_code(0);
    d.validate(&["--online"])
        .expect_code(1)
        .stderr_has("unknown CA id \"CA-Pluto\"")
        .stderr_has("CA-Jupiter");
    let d = policy(&em, CA_ID, "piv-nope", &pem_cred(&em, "client"));
    d.validate(&["--online"])
        .expect_code(1)
        .stderr_has("unknown profile \"piv-nope\"")
        .stderr_has("Profile piv-nope not found");
    let d = policy(&em, CA_ID, "piv-auth", &pem_cred(&em, "client"));
    d.validate(&["--online"]).expect_code(0);
}

#[test]
fn audit_reports_a_hold_made_behind_keyfleets_back() {
    let em = Emulator::start();
    let d = policy(&em, CA_ID, "piv-auth", &pem_cred(&em, "client"));
    run(&d, &["apply", "-y"]).expect_code(0);
    run(&d, &["audit"]).expect_code(0).stdout_has("No drift");
    let serial = em.serials()[0].clone();
    em.hold_out_of_band(&serial);
    run(&d, &["audit"])
        .expect_code(2)
        .stdout_has("held-at-ca-active-here");
}

#[test]
fn a_lost_enrolment_answer_does_not_issue_twice_through_apply() {
    let em = Emulator::start();
    let d = policy(&em, CA_ID, "piv-auth", &pem_cred(&em, "client"));
    // The gateway issues, then the connection drops before the answer arrives.
    em.push_fault(Target::Enroll, Fault::DropAfter);
    run(&d, &["apply", "-y"]).expect_code(0);
    assert_eq!(em.issued(), 1);
    assert_eq!(
        em.count("POST", "/enrollments"),
        1,
        "found by its key, not re-sent"
    );
    assert!(em.count("GET", "/certificate-events") >= 1);
    run(&d, &["apply", "-y"]).expect_code(0);
    assert_eq!(em.issued(), 1);
}

// ---------------------------------------------------------------------------------------------
// Issue 14: CA calls that fail, or answer garbage, are retried until the CA confirms them.

/// Three users, two slots each, under a subject the test can change.
fn fleet(em: &Emulator, org: &str) -> PolicyDir {
    let d = PolicyDir::empty();
    d.write("ca.yaml", &authority(em, CA_ID, &pem_cred(em, "client")));
    let rest = REST
        .replace("PROFILE", "piv-auth")
        .replace(
            "      subjectAltNames:\n        - email: ${user.mail}\n        - upn: ${user.uid}@corp.example.com\n",
            "    - name: sign\n      slot: 9C\n      authority: gw\n      profile: piv-auth\n      keyAlgorithm: ecc-p256\n      subject: CN=${user.cn},O=Example\n",
        )
        .replace("O=Example", &format!("O={org}"));
    assert!(rest.contains("slot: 9C"), "{rest}");
    d.write("rest.yaml", &rest);
    d.write(
        "people.yaml",
        "users:\n  - {uid: alice, cn: Alice, mail: alice@example.com}\n  - {uid: bob, cn: Bob, mail: bob@example.com}\n  - {uid: carol, cn: Carol, mail: carol@example.com}\ngroups:\n  - {name: staff, members: [alice, bob, carol]}\n",
    );
    d
}

/// `(serial, user, slot, status)` of every certificate Keyfleet recorded.
fn recorded(d: &PolicyDir) -> Vec<(String, String, String, String)> {
    let r = run(d, &["inventory", "--format", "json"]);
    r.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("inventory JSON");
    v["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .map(|c| {
            let f = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (f("serial"), f("user"), f("slot"), f("status"))
        })
        .collect()
}

/// Certificates valid at the CA (normal or held), per user and slot, by Keyfleet's records.
fn valid_at_ca(
    em: &Emulator,
    d: &PolicyDir,
) -> std::collections::BTreeMap<(String, String), usize> {
    let mut out = std::collections::BTreeMap::new();
    for (serial, user, slot, _) in recorded(d) {
        let (status, _) = em.status_of(&serial).expect("the CA knows it");
        if status != "revoked" {
            *out.entry((user, slot)).or_insert(0) += 1;
        }
    }
    out
}

#[test]
fn superseded_certificates_are_revoked_once_the_gateway_revokes_again() {
    let em = Emulator::start();
    let d = fleet(&em, "Example");
    run(&d, &["apply", "-y"]).expect_code(0);
    assert_eq!(em.issued(), 6);

    // The gateway refuses every revoke and hold while a template change reissues the fleet.
    em.set_action_fault(Some(ActionFault::Status(503)), 0);
    let d2 = fleet(&em, "Example Corp");
    for f in ["ca.yaml", "rest.yaml"] {
        std::fs::copy(d2.path().join(f), d.path().join(f)).expect("copy policy");
    }
    assert_ne!(run(&d, &["apply", "-y"]).code, Some(0));
    assert_ne!(run(&d, &["apply", "-y"]).code, Some(0));
    assert_eq!(em.issued(), 12, "every slot reissued");
    // Every user/slot pair now holds two certificates valid at the CA.
    for s in em.serials() {
        assert_eq!(em.status_of(&s).unwrap().0, "normal", "{s}");
    }

    // Not converged: every pass plans their revocation as superseded.
    let r = run(&d, &["plan", "--format", "json"]);
    r.expect_code(2);
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).expect("plan JSON");
    let superseding: Vec<&serde_json::Value> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["reason"] == "superseded")
        .collect();
    assert_eq!(superseding.len(), 3, "{plan:#}");
    assert!(superseding.iter().all(|a| a["kind"] == "revoke"
        && a["serials"].as_array().unwrap().len() == 2
        && a["waitingForCard"] == false));
    assert_eq!(plan["safetyValve"]["revokedUsers"], 0);
    run(&d, &["audit"])
        .expect_code(2)
        .stdout_has("superseded-still-valid");

    // The gateway recovers: one pass revokes them, and the CA's own records say so.
    em.set_action_fault(None, 0);
    run(&d, &["apply", "-y"]).expect_code(0);
    let pairs = valid_at_ca(&em, &d);
    assert!(pairs.values().all(|n| *n == 1), "{pairs:?}");
    let records = recorded(&d);
    assert_eq!(
        records.len(),
        12,
        "one record per certificate the CA signed: {records:?}"
    );
    for (serial, _, _, status) in &records {
        let at_ca = em.status_of(serial).unwrap();
        match status.as_str() {
            "superseded" => assert_eq!(
                at_ca,
                ("revoked".to_string(), Some("superseded".to_string())),
                "{serial}"
            ),
            "active" => assert_eq!(at_ca.0, "normal", "{serial}"),
            other => panic!("{serial} is {other}"),
        }
    }
    assert_eq!(records.iter().filter(|r| r.3 == "superseded").count(), 6);
    let crl = crl_text(&em, d.path());
    assert_eq!(crl.matches("Superseded").count(), 6, "{crl}");
    run(&d, &["plan"]).expect_code(0).stdout_has("No changes");
    let actions = em.count("POST", "/actions");
    run(&d, &["apply", "-y"]).expect_code(0);
    assert_eq!(em.count("POST", "/actions"), actions);
}

#[test]
fn a_hold_that_went_half_through_is_released_when_the_account_is_enabled_again() {
    let em = Emulator::start();
    let d = fleet(&em, "Example");
    d.write(
        "people.yaml",
        "users:\n  - {uid: alice, cn: Alice, mail: alice@example.com}\ngroups:\n  - {name: staff, members: [alice]}\n",
    );
    run(&d, &["apply", "-y"]).expect_code(0);
    let serials = em.serials();
    assert_eq!(serials.len(), 2);
    // Disabled: the first hold goes through, the gateway refuses the second.
    d.write(
        "people.yaml",
        "users:\n  - {uid: alice, cn: Alice, mail: alice@example.com, disabled: true}\ngroups:\n  - {name: staff, members: [alice]}\n",
    );
    em.set_action_fault(Some(ActionFault::Status(503)), 1);
    assert_ne!(run(&d, &["apply", "-y"]).code, Some(0));
    let held: Vec<&String> = serials
        .iter()
        .filter(|s| em.status_of(s).unwrap().0 == "held")
        .collect();
    assert_eq!(held.len(), 1);
    // Enabled again, the gateway answering: the held one is released.
    em.set_action_fault(None, 0);
    d.write(
        "people.yaml",
        "users:\n  - {uid: alice, cn: Alice, mail: alice@example.com}\ngroups:\n  - {name: staff, members: [alice]}\n",
    );
    run(&d, &["apply", "-y"]).expect_code(0);
    for s in &serials {
        assert_eq!(em.status_of(s).unwrap().0, "normal", "{s}");
    }
    run(&d, &["plan"]).expect_code(0);
}

#[test]
fn actions_answered_with_garbage_are_not_recorded_as_done_through_apply() {
    let em = Emulator::start();
    let d = policy(&em, CA_ID, "piv-auth", &pem_cred(&em, "client"));
    run(&d, &["apply", "-y"]).expect_code(0);
    let serial = em.serials()[0].clone();
    // Entitlement lost; the gateway answers 200 with a body that is not JSON, and does nothing.
    d.write("people.yaml", &people(false, false));
    em.set_action_fault(Some(ActionFault::Garbage), 0);
    let r = run(&d, &["apply", "-y", "--allow-mass-revocation"]);
    assert_ne!(r.code, Some(0), "{r:?}");
    assert!(
        format!("{}{}", r.stdout, r.stderr).contains("not confirmed"),
        "{r:?}"
    );
    assert_eq!(em.status_of(&serial).unwrap().0, "normal");
    let inv = recorded(&d);
    assert_eq!(inv[0].3, "active", "not recorded as revoked");
    // The next pass tries again; an undocumented action status is no better.
    em.set_action_fault(Some(ActionFault::ActionStatus("PENDING")), 0);
    assert_ne!(
        run(&d, &["apply", "-y", "--allow-mass-revocation"]).code,
        Some(0)
    );
    assert_eq!(recorded(&d)[0].3, "active");
    // Garbage again, but the gateway did revoke: the certificate read back confirms it.
    em.set_action_fault(Some(ActionFault::ActThenGarbage), 0);
    run(&d, &["apply", "-y", "--allow-mass-revocation"]).expect_code(0);
    assert_eq!(
        em.status_of(&serial).unwrap(),
        (
            "revoked".to_string(),
            Some("affiliationChanged".to_string())
        )
    );
    assert_eq!(recorded(&d)[0].3, "revoked");
}

// ---------------------------------------------------------------------------------------------
// Connector level.

fn connector(em: &Emulator, log: Option<&Path>, attempts: u32) -> EntrustGateway {
    EntrustGateway::new(GatewayConfig {
        url: em.url(),
        ca_id: CA_ID.into(),
        trust: load_pem_certificates(&em.file("trust-bundle.pem")).unwrap(),
        identity: load_pem_identity(&em.file("client.pem"), &em.file("client-key.pem")).unwrap(),
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            attempts,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        },
        max_concurrency: 4,
        request_log: log.map(Path::to_path_buf),
    })
    .unwrap()
}

fn request(id: &str) -> EnrollRequest {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap();
    EnrollRequest {
        request_id: id.into(),
        csr_der: csr.der().to_vec(),
        profile: "piv-auth".into(),
        subject: DistinguishedName::parse("CN=Bob,O=Example").unwrap(),
        sans: vec![SanValue::Email("bob@example.com".into())],
        validity_secs: 86400,
    }
}

#[test]
fn retries_on_503_and_429_never_on_400() {
    let em = Emulator::start();
    let gw = connector(&em, None, 4);
    em.push_fault(Target::Enroll, Fault::Status(503));
    em.push_fault(Target::Enroll, Fault::Status(429));
    let cert = gw.enroll(&request("r1")).unwrap();
    assert_eq!(em.count("POST", "/enrollments"), 3);
    assert_eq!(em.issued(), 1);
    // A non-JSON 502 from a proxy is retried too, on reads.
    em.push_fault(Target::Any, Fault::Status(502));
    assert_eq!(gw.status(&cert.serial).unwrap(), CaCertStatus::Active);

    em.push_fault(Target::Enroll, Fault::Status(400));
    let e = gw.enroll(&request("r2")).unwrap_err().to_string();
    assert_eq!(em.count("POST", "/enrollments"), 4, "400 is not retried");
    assert!(
        e.contains("400") && e.contains("Invalid request (injected)"),
        "{e}"
    );
    // Retries stop at the limit and say how often they tried.
    for _ in 0..4 {
        em.push_fault(Target::Enroll, Fault::Status(503));
    }
    let e = gw.enroll(&request("r3")).unwrap_err().to_string();
    assert!(
        e.contains("503") && e.contains("temporarily unavailable"),
        "{e}"
    );
    assert_eq!(em.count("POST", "/enrollments"), 8);
    // Unknown serial: Unknown, not an error; hold on a revoked certificate: a clear error.
    assert_eq!(gw.status("0abc").unwrap(), CaCertStatus::Unknown);
    gw.revoke(&cert.serial, RevocationReason::KeyCompromise)
        .unwrap();
    gw.revoke(&cert.serial, RevocationReason::KeyCompromise)
        .unwrap();
    let e = gw.hold(&cert.serial).unwrap_err().to_string();
    assert!(e.contains("cannot hold") && e.contains("revoked"), "{e}");
}

#[test]
fn crash_after_sending_is_recovered_without_a_second_certificate() {
    let em = Emulator::start();
    let state = tempfile::tempdir().unwrap();
    let log = state.path().join("requests");
    let req = request("kf-crash-1");
    {
        // One attempt only, and the answer is lost: the process "dies" with the request sent.
        let gw = connector(&em, Some(&log), 1);
        gw.get_profile("piv-auth").unwrap(); // cached: the next call is the enrolment
        em.push_fault(Target::Enroll, Fault::DropAfter);
        em.push_fault(Target::Any, Fault::Status(503));
        assert!(gw.enroll(&req).is_err());
        assert_eq!(em.issued(), 1, "the gateway did issue");
    }
    // A new process: recovery finds the certificate by the request id.
    let gw = connector(&em, Some(&log), 2);
    let found = gw.find_by_request_id("kf-crash-1").unwrap().expect("found");
    assert_eq!(
        found.serial.to_ascii_lowercase(),
        em.serials()[0].to_ascii_lowercase()
    );
    // Enrolling the same request again returns the same certificate.
    let again = gw.enroll(&req).unwrap();
    assert_eq!(again.serial, found.serial);
    assert_eq!(em.issued(), 1);
    assert_eq!(em.count("POST", "/enrollments"), 1);
    // An id never sent is simply not found.
    assert!(gw.find_by_request_id("kf-never").unwrap().is_none());
}

#[test]
fn status_batches_are_concurrent_and_bounded() {
    let em = Emulator::start();
    let gw = Arc::new(connector(&em, None, 2));
    let serials: Vec<String> = (0..8)
        .map(|i| gw.enroll(&request(&format!("b{i}"))).unwrap().serial)
        .collect();
    gw.revoke(&serials[0], RevocationReason::Superseded)
        .unwrap();
    em.set_latency(Duration::from_millis(100));
    let t = std::time::Instant::now();
    let answers = gw.statuses(&serials);
    let took = t.elapsed();
    // 8 requests, 4 at a time, 100 ms each: about 200 ms, not 800.
    assert!(took < Duration::from_millis(600), "{took:?}");
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(matches!(
        answers[0],
        Ok(CaCertStatus::Revoked {
            reason: RevocationReason::Superseded,
            ..
        })
    ));
    assert!(
        answers[1..]
            .iter()
            .all(|a| matches!(a, Ok(CaCertStatus::Active)))
    );
}

#[test]
fn revoke_hold_and_unhold_fail_closed_on_undocumented_answers() {
    let em = Emulator::start();
    let gw = connector(&em, None, 1);
    let serial = gw.enroll(&request("g1")).unwrap().serial;
    let status = |s: &str| em.status_of(s).unwrap().0;
    // Not acting, answering garbage, an accepted-but-not-done, or a status never documented.
    for fault in [
        ActionFault::Garbage,
        ActionFault::ActionStatus("ACCEPTED"),
        ActionFault::ActionStatus("PENDING"),
        ActionFault::ActionStatus(""),
        ActionFault::Status(202),
    ] {
        em.set_action_fault(Some(fault), 0);
        let e = gw.hold(&serial).unwrap_err().to_string();
        assert!(e.contains("not confirmed"), "{fault:?}: {e}");
        assert_eq!(status(&serial), "normal", "{fault:?}");
        let e = gw
            .revoke(&serial, RevocationReason::Superseded)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not confirmed"), "{fault:?}: {e}");
        assert_eq!(status(&serial), "normal", "{fault:?}");
    }
    // REJECTED is refused as before.
    em.set_action_fault(Some(ActionFault::ActionStatus("REJECTED")), 0);
    let e = gw.hold(&serial).unwrap_err().to_string();
    assert!(e.contains("REJECTED"), "{e}");
    // Garbage after acting: the certificate read back confirms it.
    em.set_action_fault(Some(ActionFault::ActThenGarbage), 0);
    gw.hold(&serial).unwrap();
    assert_eq!(status(&serial), "held");
    em.set_action_fault(Some(ActionFault::ActionStatus("COMPLETED")), 0);
    // COMPLETED is the documented success, taken at its word.
    gw.unhold(&serial).unwrap();
    em.set_action_fault(Some(ActionFault::Garbage), 0);
    let e = gw.unhold(&serial).unwrap_err().to_string();
    assert!(e.contains("not confirmed") && e.contains("held"), "{e}");
    em.set_action_fault(Some(ActionFault::ActThenGarbage), 0);
    gw.unhold(&serial).unwrap();
    assert_eq!(status(&serial), "normal");
    gw.revoke(&serial, RevocationReason::Superseded).unwrap();
    assert_eq!(
        em.status_of(&serial).unwrap(),
        ("revoked".to_string(), Some("superseded".to_string()))
    );
    em.set_action_fault(None, 0);
}
