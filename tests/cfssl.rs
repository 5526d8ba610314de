//! The cfssl connector against a real `cfssl serve`: issue and revoke through `keyfleet apply`
//! with one template enrolling 9A at the Entrust gateway (emulator) and 9D at cfssl; the
//! revocation visible in cfssl's database and in a CRL generated from it; a suspend against
//! cfssl fails clearly (never a revocation) and `validate` warns about it.

use std::process::Command;

use crate::harness::cagw_emulator::{CA_ID, Emulator};
use crate::harness::cfssl_server::{AUTH_KEY, CfsslServer};
use crate::harness::{PolicyDir, Run, keyfleet};

fn authorities(em: &Emulator, cf: &CfsslServer) -> String {
    format!(
        "apiVersion: keyfleet.dev/v1
kind: CertificateAuthority
metadata:
  name: gw
spec:
  entrustGateway:
    url: {url}
    caId: {CA_ID}
    trustBundle: {trust}
    clientCertificate:
      certFile: {cert}
      keyFile: {key}
---
apiVersion: keyfleet.dev/v1
kind: CertificateAuthority
metadata:
  name: cf
spec:
  cfssl:
    url: {cf_url}
    authKey: {{file: cfssl-key.txt}}
",
        url = em.url(),
        trust = em.file("trust-bundle.pem").display(),
        cert = em.file("client.pem").display(),
        key = em.file("client-key.pem").display(),
        cf_url = cf.url(),
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
  onUserDisabled: ON_DISABLED
  certificates:
CERTS
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

const AUTH_AT_GW: &str = "    - name: auth
      slot: 9A
      authority: gw
      profile: piv-auth
      keyAlgorithm: ecc-p256
      subject: CN=${user.cn},O=Example
";

const KMGMT_AT_CFSSL: &str = "    - name: encryption
      slot: 9D
      authority: cf
      profile: kmgmt
      keyAlgorithm: ecc-p256
      subject: CN=${user.cn},O=Example
      subjectAltNames:
        - email: ${user.mail}
";

const AUTH_AT_CFSSL: &str = "    - name: auth
      slot: 9A
      authority: cf
      profile: client
      keyAlgorithm: ecc-p256
      subject: CN=${user.cn},O=Example
";

fn people(disabled: bool, member: bool) -> String {
    format!(
        "users:\n  - {{uid: alice, cn: Alice, mail: alice@example.com, disabled: {disabled}}}\ngroups:\n  - {{name: staff, members: [{}]}}\n",
        if member { "alice" } else { "" }
    )
}

fn policy(em: &Emulator, cf: &CfsslServer, on_disabled: &str, certs: &str) -> PolicyDir {
    let d = PolicyDir::empty();
    d.write("ca.yaml", &authorities(em, cf));
    d.write("cfssl-key.txt", &format!("{AUTH_KEY}\n"));
    d.write(
        "rest.yaml",
        &REST
            .replace("ON_DISABLED", on_disabled)
            .replace("CERTS\n", certs),
    );
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

#[test]
fn one_template_two_cas_issue_and_revoke() {
    let em = Emulator::start();
    let cf = CfsslServer::start();
    let d = policy(&em, &cf, "revoke", &format!("{AUTH_AT_GW}{KMGMT_AT_CFSSL}"));
    run(&d, &["validate"]).expect_code(0);
    run(&d, &["ca", "test", "cf"])
        .expect_code(0)
        .stdout_has("connected");

    run(&d, &["apply", "-y"]).expect_code(0);
    assert_eq!(em.issued(), 1, "9A at the gateway");
    let rows = cf.rows();
    assert_eq!(rows.len(), 1, "9D at cfssl: {rows:?}");
    assert!(rows[0].contains("|good|"), "{rows:?}");
    let decimal = rows[0].split('|').next().unwrap().to_string();
    // cfssl stores the serial in decimal; Keyfleet's inventory holds the same number in hex.
    let hex = cf.hex_serials().remove(0);
    let inv = run(&d, &["inventory"]);
    assert!(inv.stdout.to_ascii_uppercase().contains(&hex), "{inv:?}");
    // Idempotent: nothing new on a second pass; audit finds no drift (cfssl cannot report
    // status, which is not drift).
    run(&d, &["apply", "-y"]).expect_code(0);
    assert_eq!(cf.rows().len(), 1);
    run(&d, &["audit"]).expect_code(0).stdout_has("No drift");

    d.write("people.yaml", &people(false, false));
    run(&d, &["apply", "-y", "--allow-mass-revocation"]).expect_code(0);
    let rows = cf.rows();
    assert_eq!(
        rows,
        vec![format!("{decimal}|revoked|3")],
        "affiliationChanged (3)"
    );
    assert_eq!(em.status_of(&em.serials()[0]).unwrap().0, "revoked");

    // The CRL generated from cfssl's database lists the serial.
    let crl = d.write_bytes("cf.crl", &cf.crl_from_db(d.path()));
    let out = Command::new("openssl")
        .args(["crl", "-inform", "DER", "-noout", "-text", "-in"])
        .arg(&crl)
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_uppercase();
    assert!(text.contains(&hex), "CRL lacks {hex}:\n{text}");
}

#[test]
fn suspend_against_cfssl_is_refused_never_revoked() {
    let em = Emulator::start();
    let cf = CfsslServer::start();
    let d = policy(&em, &cf, "suspend", AUTH_AT_CFSSL);
    run(&d, &["validate"])
        .expect_code(0)
        .stderr_has("cannot put certificates on hold");
    run(&d, &["apply", "-y"]).expect_code(0);
    assert_eq!(cf.rows().len(), 1);

    d.write("people.yaml", &people(true, true));
    let r = run(&d, &["apply", "-y"]);
    assert_ne!(r.code, Some(0), "{r:?}");
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(all.contains("does not support certificate hold"), "{all}");
    let rows = cf.rows();
    assert!(rows[0].contains("|good|"), "not revoked: {rows:?}");
}

/// cfssl over https://: the CA's `trustBundle` is the root store. Without one `validate`
/// refuses the URL at its line; a bundle that does not hold the server's TLS CA (here the
/// signing CA) cannot connect; the right one issues through TLS.
#[test]
fn cfssl_over_https_trusts_the_trust_bundle() {
    let cf = CfsslServer::start_tls();
    assert!(cf.url().starts_with("https://"));
    let ca = |trust: &str| {
        format!(
            "apiVersion: keyfleet.dev/v1
kind: CertificateAuthority
metadata:
  name: cf
spec:
  cfssl:
    url: {}
    authKey: {{file: cfssl-key.txt}}
{trust}",
            cf.url()
        )
    };
    let d = PolicyDir::empty();
    d.write("cfssl-key.txt", &format!("{AUTH_KEY}\n"));
    d.write(
        "rest.yaml",
        &REST
            .replace("ON_DISABLED", "revoke")
            .replace("CERTS\n", AUTH_AT_CFSSL),
    );
    d.write("people.yaml", &people(false, true));

    d.write("ca.yaml", &ca(""));
    run(&d, &["validate"]).expect_code(1).stderr_has(&format!(
        "{}:7: CertificateAuthority/cf: spec.cfssl.url: an https:// cfssl URL needs trustBundle",
        d.file("ca.yaml")
    ));

    let bundle = |name: &str| format!("    trustBundle: {}\n", cf.file(name).display());
    d.write("ca.yaml", &ca(&bundle("ca.pem")));
    run(&d, &["validate"]).expect_code(0);
    let r = run(&d, &["ca", "test", "cf"]);
    assert_ne!(
        r.code,
        Some(0),
        "the signing CA does not sign the TLS certificate: {r:?}"
    );
    assert!(cf.rows().is_empty());

    d.write("ca.yaml", &ca(&bundle("tls-ca.pem")));
    run(&d, &["validate"]).expect_code(0);
    run(&d, &["ca", "test", "cf"])
        .expect_code(0)
        .stdout_has("connected");
    run(&d, &["apply", "-y"]).expect_code(0);
    let rows = cf.rows();
    assert_eq!(rows.len(), 1, "9A issued over https: {rows:?}");
    let hex = cf.hex_serials().remove(0);
    let inv = run(&d, &["inventory"]);
    assert!(inv.stdout.to_ascii_uppercase().contains(&hex), "{inv:?}");

    // A trustBundle with http:// would be ignored: refused.
    let plain = ca(&bundle("tls-ca.pem")).replace("https://", "http://");
    d.write("ca.yaml", &plain);
    run(&d, &["validate"])
        .expect_code(1)
        .stderr_has("spec.cfssl.trustBundle: trustBundle is used only with an https:// URL");
}

/// A `{pkcs11: ...}` secret reference reads a data object on a token (SoftHSM2): cfssl's auth
/// key kept as a private data object signs through `apply`; a reference that names no module
/// is refused by `validate` at its line; one whose object is not on the token fails the pass
/// naming it, and nothing is issued.
#[test]
fn cfssl_auth_key_from_a_pkcs11_data_object() {
    use crate::harness::softhsm::{MODULE, SoftHsm};
    let cf = CfsslServer::start();
    let hsm = SoftHsm::new();
    hsm.init_token("secrets", "4711");
    let key_file = hsm.path().join("key.txt");
    std::fs::write(&key_file, format!("{AUTH_KEY}\n")).expect("key");
    hsm.tool(&[
        "--login",
        "--pin",
        "4711",
        "--token-label",
        "secrets",
        "--write-object",
        key_file.to_str().expect("utf-8"),
        "--type",
        "data",
        "--label",
        "cfssl-key",
        "--private",
    ])
    .expect_code(0);
    std::fs::remove_file(&key_file).expect("only on the token now");
    let pin_file = hsm.path().join("pin.txt");
    std::fs::write(&pin_file, "4711\n").expect("pin");

    let d = PolicyDir::empty();
    let ca = |reference: &str| {
        format!(
            "apiVersion: keyfleet.dev/v1
kind: CertificateAuthority
metadata:
  name: cf
spec:
  cfssl:
    url: {}
    authKey: {{pkcs11: '{reference}'}}
",
            cf.url()
        )
    };
    let uri = |object: &str| {
        format!(
            "pkcs11:token=secrets;object={object};type=data?module-path={MODULE}&pin-source=file:{}",
            pin_file.display()
        )
    };
    d.write(
        "rest.yaml",
        &REST
            .replace("ON_DISABLED", "revoke")
            .replace("CERTS\n", AUTH_AT_CFSSL),
    );
    d.write("people.yaml", &people(false, true));
    let dir = d.path().display().to_string();
    let state = d.path().join("state").display().to_string();
    let kf = |cmd: &str, extra: &[&str]| {
        let mut args = vec![cmd, "-C", dir.as_str(), "--state-dir", state.as_str()];
        args.extend_from_slice(extra);
        hsm.keyfleet(&args, &[])
    };

    d.write("ca.yaml", &ca("pkcs11:token=secrets;object=cfssl-key"));
    kf("validate", &[]).expect_code(1).stderr_has(&format!(
        "{}:8: CertificateAuthority/cf: spec.cfssl.authKey:",
        d.file("ca.yaml")
    ));

    d.write("ca.yaml", &ca(&uri("no-such-object")));
    kf("validate", &[]).expect_code(0);
    let r = kf("apply", &["-y"]);
    assert_ne!(r.code, Some(0), "{r:?}");
    assert!(
        format!("{}{}", r.stdout, r.stderr).contains("0 data objects match"),
        "{r:?}"
    );
    assert!(cf.rows().is_empty());

    d.write("ca.yaml", &ca(&uri("cfssl-key")));
    kf("apply", &["-y"]).expect_code(0);
    assert_eq!(
        cf.rows().len(),
        1,
        "signed with the key read from the token"
    );
}
