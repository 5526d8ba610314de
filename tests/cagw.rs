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

use crate::harness::cagw_emulator::{CA_ID, Emulator, Fault, P12_PASSWORD, Target};
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

fn pem_cred(em: &Emulator, name: &str) -> String {
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

fn policy(em: &Emulator, ca_id: &str, profile: &str, cred: &str) -> PolicyDir {
    let d = PolicyDir::empty();
    d.write("ca.yaml", &authority(em, ca_id, cred));
    d.write("rest.yaml", &REST.replace("PROFILE", profile));
    d.write("people.yaml", &people(false, true));
    d
}

fn run(d: &PolicyDir, args: &[&str]) -> Run {
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
