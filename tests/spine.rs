//! The reconcile spine end to end on the embedded defaults: `keyfleet apply` on a copy of
//! examples/quickstart issues real certificates onto virtual cards; the tests check what the
//! CA signed (openssl), what each card holds and signs, what the inventory, CRL and history
//! say, and that interrupted runs finish without duplicates.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::harness::{Run, openssl, repo_root};

/// A copy of the quickstart with its own state directory.
pub(crate) struct Quickstart {
    _tmp: tempfile::TempDir,
    pub(crate) policy: PathBuf,
    pub(crate) state: PathBuf,
}

impl Quickstart {
    pub(crate) fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let policy = tmp.path().join("policy");
        copy_dir(&repo_root().join("examples/quickstart"), &policy);
        let state = tmp.path().join("state");
        Quickstart {
            _tmp: tmp,
            policy,
            state,
        }
    }

    pub(crate) fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyfleet"));
        cmd.args(args)
            .arg("-C")
            .arg(&self.policy)
            .arg("--state-dir")
            .arg(&self.state)
            .env_remove("KEYFLEET_STATE_DIR")
            .env_remove("KEYFLEET_CRASH_AFTER_STEP")
            .env_remove("KEYFLEET_MASTER_KEY_FILE");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run keyfleet");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub(crate) fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let r = self.run(args);
        serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}):\n{}\n{}", r.stdout, r.stderr))
    }

    pub(crate) fn inventory(&self) -> Value {
        self.json(&["inventory", "--format", "json"])
    }

    pub(crate) fn edit(&self, file: &str, from: &str, to: &str) {
        let p = self.policy.join(file);
        let s = std::fs::read_to_string(&p).expect("read policy file");
        assert!(s.contains(from), "{file} lacks {from:?}");
        std::fs::write(&p, s.replacen(from, to, 1)).expect("write policy file");
    }

    pub(crate) fn write_file(&self, name: &str, content: &str) -> PathBuf {
        let p = self._tmp.path().join(name);
        std::fs::write(&p, content).expect("write");
        p
    }

    fn ca_pem(&self) -> PathBuf {
        let r = self.run(&["ca", "cert", "quickstart-ca"]);
        r.expect_code(0);
        self.write_file("ca.pem", &r.stdout)
    }

    fn crl_pem(&self) -> PathBuf {
        let out = self._tmp.path().join("crl.pem");
        self.run(&[
            "ca",
            "crl",
            "quickstart-ca",
            "--out",
            out.to_str().unwrap_or_default(),
        ])
        .expect_code(0);
        out
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

fn certs(inv: &Value) -> Vec<Value> {
    inv["certificates"].as_array().cloned().unwrap_or_default()
}

fn active(inv: &Value) -> Vec<Value> {
    certs(inv)
        .into_iter()
        .filter(|c| c["status"] == "active")
        .collect()
}

/// Users of the quickstart who are entitled and enabled, with their slot count.
const ENTITLED: &[(&str, usize)] = &[
    ("alice", 2),
    ("bob", 2),
    ("carol", 2),
    ("dave", 2),
    ("erin", 2),
    ("frank", 2),
    ("grace", 2),
    ("heidi", 2),
    ("judy", 1),
    ("mallory", 1),
    ("oscar", 1),
];

fn assert_converged(q: &Quickstart) -> Value {
    assert_converged_without(q, &[])
}

fn assert_converged_without(q: &Quickstart, gone: &[&str]) -> Value {
    q.run(&["plan"]).expect_code(0).stdout_has("No changes");
    let inv = q.inventory();
    let mut per_user: BTreeMap<String, usize> = BTreeMap::new();
    let mut slots = BTreeSet::new();
    for c in active(&inv) {
        *per_user
            .entry(c["user"].as_str().unwrap_or_default().into())
            .or_default() += 1;
        let key = (c["card"].to_string(), c["slot"].to_string());
        assert!(
            slots.insert(key.clone()),
            "two active certificates in one slot: {key:?}"
        );
    }
    let want: BTreeMap<String, usize> = ENTITLED
        .iter()
        .filter(|(u, _)| !gone.contains(u))
        .map(|(u, n)| (u.to_string(), *n))
        .collect();
    assert_eq!(per_user, want);
    inv
}

#[test]
fn quickstart_issues_verifiable_certificates_and_second_apply_is_a_no_op() {
    let q = Quickstart::new();
    let plan = q.json(&["plan", "--format", "json"]);
    assert_eq!(plan["complete"], true);
    q.run(&["reindex"])
        .expect_code(0)
        .stdout_has("Indexed 0 certificates by card.");
    let actions = plan["actions"].as_array().expect("actions");
    assert_eq!(actions.len(), ENTITLED.len());
    assert!(
        actions
            .iter()
            .all(|a| a["kind"] == "issue" && a["waitingForCard"] == false)
    );
    assert!(
        actions
            .iter()
            .all(|a| a["reason"] == "not-issued" && a["slot"].is_null())
    );
    q.run(&["plan"]).expect_code(2);

    q.run(&["apply", "--yes"])
        .expect_code(0)
        .stdout_has("11 done, 0 failed");
    let inv = assert_converged(&q);
    q.run(&["apply", "--yes"])
        .expect_code(0)
        .stdout_has("No changes");
    assert_eq!(q.inventory(), inv, "a second apply changed the inventory");
    q.run(&["reindex"]).expect_code(0).stdout_has(&format!(
        "Indexed {} certificates by card.",
        certs(&inv).len()
    ));

    // Every certificate verifies against the CA, with the serial openssl sees and the
    // subject/SAN the template gave.
    let ca = q.ca_pem();
    for (i, c) in certs(&inv).iter().enumerate() {
        let leaf = q.write_file(
            &format!("leaf{i}.pem"),
            c["pem"].as_str().unwrap_or_default(),
        );
        let (ok, out) = openssl(&[
            "verify",
            "-CAfile",
            ca.to_str().unwrap(),
            leaf.to_str().unwrap(),
        ]);
        assert!(ok, "openssl verify: {out}");
        let (_, text) = openssl(&[
            "x509",
            "-in",
            leaf.to_str().unwrap(),
            "-noout",
            "-serial",
            "-subject",
            "-nameopt",
            "RFC2253",
            "-ext",
            "subjectAltName",
        ]);
        let serial = c["serial"].as_str().unwrap_or_default();
        assert!(text.contains(&format!("serial={serial}")), "{text}");
        assert!(
            serial
                .chars()
                .all(|ch| ch.is_ascii_hexdigit() && !ch.is_ascii_lowercase())
        );
        let user = c["user"].as_str().unwrap_or_default();
        assert!(
            text.contains(&format!("email:{user}@example.com")),
            "{text}"
        );
        assert!(text.contains(",O=Example"), "{text}");
    }

    // PIN mailers: one per card, mode 0600, holding a PIN of the policy's length.
    use std::os::unix::fs::PermissionsExt as _;
    let mailers: Vec<_> = std::fs::read_dir(q.state.join("pin-mailer"))
        .expect("pin-mailer")
        .flatten()
        .collect();
    assert_eq!(mailers.len(), ENTITLED.len());
    for m in mailers {
        assert_eq!(m.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(m.path()).unwrap();
        let pin = text
            .lines()
            .find_map(|l| l.strip_prefix("PIN: "))
            .expect("PIN line");
        assert!(
            pin.len() == 6 && pin.chars().all(|c| c.is_ascii_digit()),
            "{text}"
        );
    }
    let master = std::fs::metadata(q.state.join("master.key")).unwrap();
    assert_eq!(master.permissions().mode() & 0o777, 0o600);

    // The history says who did what and why.
    let history = q.json(&["history", "--user", "alice", "--format", "json"]);
    let h = history.as_array().expect("history");
    assert_eq!(h.len(), 1);
    assert_eq!(h[0]["kind"], "issue");
    assert_eq!(h[0]["result"], "ok");
    assert_eq!(h[0]["reason"]["code"], "not-issued");
    q.run(&["audit"]).expect_code(0).stdout_has("No drift");
}

#[test]
fn each_card_signs_with_the_key_of_its_certificate() {
    use keyfleet::card::piv::PivClient;
    use keyfleet::card::transport::InProcess;
    use keyfleet::card::vcard::VirtualCard;
    use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
    use sha2::Digest as _;
    use x509_cert::der::{Decode as _, DecodePem as _, Encode as _};

    let q = Quickstart::new();
    q.run(&["apply", "--yes"]).expect_code(0);
    let inv = q.inventory();
    for c in active(&inv) {
        let card = c["card"].as_str().unwrap_or_default();
        let user = c["user"].as_str().unwrap_or_default();
        let mailer = std::fs::read_to_string(
            q.state
                .join("pin-mailer")
                .join(format!("{user}-{card}.txt")),
        )
        .expect("mailer");
        let pin = mailer
            .lines()
            .find_map(|l| l.strip_prefix("PIN: "))
            .expect("PIN")
            .to_string();
        let slot = u8::from_str_radix(c["slot"].as_str().unwrap_or_default(), 16).expect("slot");

        let vc = VirtualCard::open(q.state.join("cards").join(format!("{card}.json")))
            .expect("open card");
        let mut piv = PivClient::new(InProcess::new(vc));
        piv.select().expect("select");
        // The certificate on the card is the one the inventory recorded.
        let on_card = piv
            .read_certificate(slot)
            .expect("read")
            .expect("certificate on card");
        let pem = c["pem"].as_str().unwrap_or_default();
        let cert = x509_cert::Certificate::from_pem(pem.as_bytes()).expect("pem");
        assert_eq!(on_card, cert.to_der().unwrap());
        // The card signs a digest with the PIN from the mailer; the certificate's key verifies it.
        piv.verify_pin(&pin).expect("PIN from the mailer works");
        let digest = sha2::Sha256::digest(b"keyfleet proof of possession");
        let sig = piv
            .sign_digest(slot, keyfleet::card::keys::KeyAlg::EccP256, &digest)
            .expect("card signs");
        let spki = cert
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .unwrap();
        let key =
            <p256::ecdsa::VerifyingKey as p256::pkcs8::DecodePublicKey>::from_public_key_der(&spki)
                .expect("P-256 key");
        let sig = p256::ecdsa::Signature::from_der(&sig).expect("DER signature");
        key.verify_prehash(&digest, &sig)
            .expect("signature verifies with the certificate's key");
        let _ = x509_cert::Certificate::from_der(&on_card).unwrap();
    }
}

#[test]
fn group_change_revokes_into_the_crl_and_template_change_reissues() {
    let q = Quickstart::new();
    q.run(&["apply", "--yes"]).expect_code(0);
    let before = q.inventory();
    let judy: Vec<Value> = active(&before)
        .into_iter()
        .filter(|c| c["user"] == "judy")
        .collect();
    assert_eq!(judy.len(), 1);

    // Remove judy from the contractors group.
    let people = std::fs::read_to_string(q.policy.join("people.yaml")).unwrap();
    let edited: String = people
        .lines()
        .map(|l| {
            if l.contains("members:") {
                l.replace("judy, ", "")
                    .replace(", judy", "")
                    .replace("judy", "")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(q.policy.join("people.yaml"), edited + "\n").unwrap();
    let plan = q.json(&["plan", "--format", "json"]);
    let kinds: Vec<(String, String)> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().unwrap().to_string(),
                a["user"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("revoke".to_string(), "judy".to_string()),
            ("retire".into(), "judy".into())
        ]
    );
    assert_eq!(plan["actions"][0]["reason"], "no-longer-entitled");
    q.run(&["apply", "--yes"]).expect_code(0);
    let inv = q.inventory();
    let serial = judy[0]["serial"].as_str().unwrap();
    let rec = certs(&inv)
        .into_iter()
        .find(|c| c["serial"] == serial)
        .unwrap();
    assert_eq!(rec["status"], "revoked");
    let card = certs(&inv)
        .into_iter()
        .find(|c| c["serial"] == serial)
        .unwrap()["card"]
        .clone();
    let card_rec = inv["cards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == card)
        .unwrap()
        .clone();
    assert_eq!(
        card_rec["status"], "blank",
        "the wiped card returned to stock"
    );
    assert!(card_rec["user"].is_null());
    // The CRL lists the serial; openssl refuses the certificate against it.
    let crl = q.crl_pem();
    let (_, text) = openssl(&["crl", "-in", crl.to_str().unwrap(), "-noout", "-text"]);
    assert!(text.contains(&format!("Serial Number: {serial}")), "{text}");
    let leaf = q.write_file("judy.pem", rec["pem"].as_str().unwrap());
    let ca = q.ca_pem();
    let (ok, out) = openssl(&[
        "verify",
        "-crl_check",
        "-CAfile",
        ca.to_str().unwrap(),
        "-CRLfile",
        crl.to_str().unwrap(),
        leaf.to_str().unwrap(),
    ]);
    assert!(!ok && out.contains("revoked"), "{out}");
    q.run(&["plan"]).expect_code(0);

    // A template change that matters (subject) reissues every employee certificate.
    let employees_before: BTreeSet<String> = active(&inv)
        .iter()
        .filter(|c| c["template"] == "employee-virtual")
        .map(|c| c["serial"].as_str().unwrap().to_string())
        .collect();
    q.edit(
        "templates/employee-virtual.yaml",
        "OU=Employees,O=Example\"",
        "OU=Staff,O=Example\"",
    );
    let plan = q.json(&["plan", "--format", "json"]);
    let acts = plan["actions"].as_array().unwrap();
    assert_eq!(
        acts.len(),
        8,
        "one reissue for the changed slot of each employee: {plan}"
    );
    assert!(
        acts.iter().all(|a| a["kind"] == "reissue"
            && a["reason"] == "template-changed"
            && a["slot"] == "9A")
    );
    q.run(&["apply", "--yes"]).expect_code(0);
    let inv = assert_converged_without(&q, &["judy"]);
    for c in certs(&inv) {
        let s = c["serial"].as_str().unwrap();
        if employees_before.contains(s) && c["slot"] == "9A" {
            assert_eq!(c["status"], "superseded", "{s}");
        }
    }
    assert!(
        active(&inv)
            .iter()
            .filter(|c| c["slot"] == "9A" && c["template"] == "employee-virtual")
            .all(|c| c["subject"].as_str().unwrap().contains("OU=Staff"))
    );
}

#[test]
fn disabled_user_is_suspended_on_hold_and_resumed() {
    let q = Quickstart::new();
    q.run(&["apply", "--yes"]).expect_code(0);
    let people = q.policy.join("people.yaml");
    let text = std::fs::read_to_string(&people).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("uid: alice"))
        .expect("alice line")
        .to_string();
    assert!(!line.contains("disabled"), "{line}");
    let disabled = line.replacen("uid: alice", "uid: alice, disabled: true", 1);
    std::fs::write(&people, text.replacen(&line, &disabled, 1)).unwrap();
    let plan = q.json(&["plan", "--format", "json"]);
    assert_eq!(plan["actions"][0]["kind"], "suspend");
    assert_eq!(plan["actions"][0]["reason"], "user-disabled");
    q.run(&["apply", "--yes"]).expect_code(0);
    let inv = q.inventory();
    let alice: Vec<Value> = certs(&inv)
        .into_iter()
        .filter(|c| c["user"] == "alice")
        .collect();
    assert!(alice.iter().all(|c| c["status"] == "suspended"));
    let (_, crl) = openssl(&[
        "crl",
        "-in",
        q.crl_pem().to_str().unwrap(),
        "-noout",
        "-text",
    ]);
    assert!(crl.contains("Certificate Hold"), "{crl}");
    q.run(&["plan"]).expect_code(0);
    std::fs::write(&people, text).unwrap();
    let plan = q.json(&["plan", "--format", "json"]);
    assert_eq!(plan["actions"][0]["kind"], "resume");
    q.run(&["apply", "--yes"]).expect_code(0);
    let inv = q.inventory();
    assert!(
        certs(&inv)
            .iter()
            .filter(|c| c["user"] == "alice")
            .all(|c| c["status"] == "active")
    );
    let (_, crl) = openssl(&[
        "crl",
        "-in",
        q.crl_pem().to_str().unwrap(),
        "-noout",
        "-text",
    ]);
    assert!(!crl.contains("Certificate Hold"), "{crl}");
}

#[test]
fn mass_revocation_is_refused_unless_allowed() {
    let q = Quickstart::new();
    q.run(&["apply", "--yes"]).expect_code(0);
    // Empty every group: all 11 holders lose their entitlement.
    let people = std::fs::read_to_string(q.policy.join("people.yaml")).unwrap();
    let emptied: String = people
        .lines()
        .map(|l| match l.find("members:") {
            Some(i) => format!("{}members: []", &l[..i]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(q.policy.join("people.yaml"), emptied + "\n").unwrap();
    let plan = q.json(&["plan", "--format", "json"]);
    assert_eq!(plan["safetyValve"]["tripped"], true);
    let r = q.run(&["apply", "--yes"]);
    r.expect_code(1).stderr_has("safety valve");
    assert_eq!(
        active(&q.inventory()).len(),
        19,
        "nothing may be revoked by a refused plan"
    );
    q.run(&["apply", "--yes", "--allow-mass-revocation"])
        .expect_code(0);
    assert!(active(&q.inventory()).is_empty());
    q.run(&["plan"]).expect_code(0);
}

#[test]
fn target_limits_a_run_to_some_users() {
    let q = Quickstart::new();
    q.run(&["apply", "--yes", "--target", "user=bob"])
        .expect_code(0);
    let inv = q.inventory();
    let users: BTreeSet<String> = certs(&inv)
        .iter()
        .map(|c| c["user"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(users, ["bob".to_string()].into());
    q.run(&["plan", "--target", "user=bob"]).expect_code(0);
    q.run(&["plan"]).expect_code(2);
    q.run(&["plan", "--target", "bob"])
        .expect_code(1)
        .stderr_has("user=UID");
}

/// Interrupt `apply` after every journal step in turn; the next apply must finish the job with
/// no duplicate certificate and none left untracked.
#[test]
fn crash_at_any_journal_step_recovers_without_duplicates() {
    // Each issuance of a 2-slot credential writes about 14 journal entries; a crash point is
    // tried at every step of the first two credentials.
    for step in 1..=30 {
        let q = Quickstart::new();
        let r = q.run_env(
            &[
                "apply",
                "--yes",
                "--target",
                "user=alice",
                "--target",
                "user=judy",
            ],
            &[("KEYFLEET_CRASH_AFTER_STEP", &step.to_string())],
        );
        if r.code == Some(0) {
            // Fewer steps than `step`: nothing was interrupted.
            continue;
        }
        assert!(
            r.crashed_at_crash_point(),
            "step {step}: {:?}\n{}\n{}",
            r.code,
            r.stdout,
            r.stderr
        );
        q.run(&["apply", "--yes"]).expect_code(0);
        let inv = assert_converged(&q);
        // Every certificate the CA ever signed is in the inventory, once.
        let db: Value = serde_json::from_str(
            &std::fs::read_to_string(q.state.join("ca/quickstart-ca/db.json")).unwrap(),
        )
        .unwrap();
        let signed = db_serials(&db);
        let tracked: BTreeSet<String> = certs(&inv)
            .iter()
            .map(|c| c["serial"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(signed, tracked, "step {step}: CA and inventory disagree");
        // At most one live certificate per card and slot.
        let live: Vec<(String, String)> = certs(&inv)
            .iter()
            .filter(|c| c["status"] == "active")
            .map(|c| (c["card"].to_string(), c["slot"].to_string()))
            .collect();
        let unique: BTreeSet<_> = live.iter().cloned().collect();
        assert_eq!(live.len(), unique.len(), "step {step}");
        q.run(&["plan"]).expect_code(0);
    }
}

fn db_serials(db: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(s)) = m.get("serial") {
                    out.insert(s.clone());
                }
                m.values().for_each(|x| walk(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(db, &mut out);
    out
}

#[test]
fn a_ca_failing_in_the_middle_of_an_issuance_keeps_what_was_issued() {
    // The signature slot goes to a CA nobody answers for: the card makes both keys, the
    // authentication certificate is signed, installed and recorded while the second
    // enrolment fails, and the next apply (with the CA fixed) issues only what is missing.
    let q = Quickstart::new();
    std::fs::write(
        q.policy.join("dead-ca.yaml"),
        "apiVersion: keyfleet.dev/v1\nkind: CertificateAuthority\nmetadata:\n  name: dead-ca\n\
         spec:\n  cfssl:\n    url: http://127.0.0.1:9\n    authKey: {file: dead-key.txt}\n",
    )
    .unwrap();
    std::fs::write(
        q.policy.join("dead-key.txt"),
        "00112233445566778899aabbccddeeff\n",
    )
    .unwrap();
    let signature = "      profile: piv-signature";
    q.edit(
        "templates/employee-virtual.yaml",
        &format!("      authority: quickstart-ca\n{signature}"),
        &format!("      authority: dead-ca\n{signature}"),
    );
    q.run(&["apply", "--yes", "--target", "user=alice"])
        .expect_code(1)
        .stdout_has("dead-ca");
    let inv = q.inventory();
    let alice: Vec<Value> = certs(&inv)
        .into_iter()
        .filter(|c| c["user"] == "alice")
        .collect();
    assert_eq!(alice.len(), 1, "{alice:?}");
    assert_eq!(alice[0]["slot"], "9A");
    assert_eq!(alice[0]["installed"], true);
    assert_eq!(alice[0]["status"], "active");
    let card = alice[0]["card"].as_str().unwrap().to_string();

    q.edit(
        "templates/employee-virtual.yaml",
        &format!("      authority: dead-ca\n{signature}"),
        &format!("      authority: quickstart-ca\n{signature}"),
    );
    q.run(&["apply", "--yes", "--target", "user=alice"])
        .expect_code(0);
    let inv = q.inventory();
    let alice: BTreeMap<String, Value> = certs(&inv)
        .into_iter()
        .filter(|c| c["user"] == "alice")
        .map(|c| (c["slot"].as_str().unwrap().to_string(), c))
        .collect();
    assert_eq!(alice.keys().collect::<Vec<_>>(), ["9A", "9C"]);
    assert!(
        alice.values().all(|c| c["card"] == card.as_str()
            && c["installed"] == true
            && c["status"] == "active")
    );
    // The CA signed exactly what the inventory tracks.
    let db: Value = serde_json::from_str(
        &std::fs::read_to_string(q.state.join("ca/quickstart-ca/db.json")).unwrap(),
    )
    .unwrap();
    let tracked: BTreeSet<String> = certs(&inv)
        .iter()
        .map(|c| c["serial"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(db_serials(&db), tracked);
}

/// The certificate in a virtual card's slot, if any.
fn slot_certificate(q: &Quickstart, card: &str, slot: u8) -> Option<Vec<u8>> {
    use keyfleet::card::piv::PivClient;
    use keyfleet::card::transport::InProcess;
    use keyfleet::card::vcard::VirtualCard;
    let vc = VirtualCard::open(q.state.join("cards").join(format!("{card}.json"))).expect("card");
    let mut piv = PivClient::new(InProcess::new(vc));
    piv.select().expect("select");
    piv.read_certificate(slot).expect("read")
}

/// Alice issued; then her signature slot moved to a CA nobody answers for (a reissue).
/// Returns her card, her 9C certificate's DER and record, and the (from, to) of the edit.
fn alice_issued_then_9c_on_a_dead_ca(q: &Quickstart) -> (String, Vec<u8>, Value, (String, String)) {
    use der::{DecodePem as _, Encode as _};
    q.run(&["apply", "--yes", "--target", "user=alice"])
        .expect_code(0);
    let old: Vec<Value> = certs(&q.inventory())
        .into_iter()
        .filter(|c| c["user"] == "alice" && c["slot"] == "9C")
        .collect();
    assert_eq!(old.len(), 1, "{old:?}");
    let card = old[0]["card"].as_str().unwrap().to_string();
    let old_der = x509_cert::Certificate::from_pem(old[0]["pem"].as_str().unwrap().as_bytes())
        .unwrap()
        .to_der()
        .unwrap();
    assert_eq!(slot_certificate(q, &card, 0x9C), Some(old_der.clone()));
    std::fs::write(
        q.policy.join("dead-ca.yaml"),
        "apiVersion: keyfleet.dev/v1\nkind: CertificateAuthority\nmetadata:\n  name: dead-ca\n\
         spec:\n  cfssl:\n    url: http://127.0.0.1:9\n    authKey: {file: dead-key.txt}\n",
    )
    .unwrap();
    std::fs::write(
        q.policy.join("dead-key.txt"),
        "00112233445566778899aabbccddeeff\n",
    )
    .unwrap();
    let signature = "      profile: piv-signature";
    let to_dead = (
        format!("      authority: quickstart-ca\n{signature}"),
        format!("      authority: dead-ca\n{signature}"),
    );
    q.edit("templates/employee-virtual.yaml", &to_dead.0, &to_dead.1);
    (card, old_der, old[0].clone(), to_dead)
}

#[test]
fn a_slot_key_replacement_a_crash_interrupted_is_finished_by_recovery() {
    // Issue 14 point 1: the process dies after the signature slot's new key is made and its
    // enrolment intent written (journal writes: key replacement 1, enrolment 2). The slot
    // holds the old certificate over the new key until the next run's recovery removes it.
    let q = Quickstart::new();
    let (card, old_der, _, to_dead) = alice_issued_then_9c_on_a_dead_ca(&q);
    let crashed = q.run_env(
        &["apply", "--yes", "--target", "user=alice"],
        &[("KEYFLEET_CRASH_AFTER_STEP", "2")],
    );
    assert!(crashed.crashed_at_crash_point(), "{crashed:?}");
    assert_eq!(
        slot_certificate(&q, &card, 0x9C),
        Some(old_der.clone()),
        "interrupted between the new key and its certificate"
    );
    // The old CA back in the template: the template asks for nothing new, yet recovery
    // removes the certificate the new key does not match, and the slot is issued again.
    q.edit("templates/employee-virtual.yaml", &to_dead.1, &to_dead.0);
    let r = q.run(&["apply", "--yes", "--target", "user=alice"]);
    assert!(
        r.stdout.contains("1 interrupted step(s) finished"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    assert!(
        r.stdout.contains("key-replaced") || r.stdout.contains("new key"),
        "{}",
        r.stdout
    );
    let now = slot_certificate(&q, &card, 0x9C).expect("the slot is issued again");
    assert_ne!(
        now, old_der,
        "recovery left the certificate whose key was replaced"
    );
    assert_slot_matches_its_key(&q, &card, "9C", &now);
    q.run(&["plan", "--target", "user=alice"])
        .expect_code(0)
        .stdout_has("No changes");
}

/// The certificate in `card`'s `slot` is the inventory's one live certificate of the slot, and
/// the card signs with the key it certifies.
fn assert_slot_matches_its_key(q: &Quickstart, card: &str, slot: &str, der: &[u8]) {
    use der::{DecodePem as _, Encode as _};
    let live: Vec<Value> = active(&q.inventory())
        .into_iter()
        .filter(|c| c["card"] == card && c["slot"] == slot)
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    let recorded = x509_cert::Certificate::from_pem(live[0]["pem"].as_str().unwrap().as_bytes())
        .unwrap()
        .to_der()
        .unwrap();
    assert_eq!(recorded, der);
    // The card signs with the mailed PIN, and the certificate's key verifies it.
    use keyfleet::card::piv::PivClient;
    use keyfleet::card::transport::InProcess;
    use keyfleet::card::vcard::VirtualCard;
    use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
    use sha2::Digest as _;
    use x509_cert::der::Decode as _;
    let user = live[0]["user"].as_str().unwrap();
    let mailer = std::fs::read_to_string(
        q.state
            .join("pin-mailer")
            .join(format!("{user}-{card}.txt")),
    )
    .expect("mailer");
    let pin = mailer
        .lines()
        .find_map(|l| l.strip_prefix("PIN: "))
        .expect("PIN");
    let vc = VirtualCard::open(q.state.join("cards").join(format!("{card}.json"))).expect("card");
    let mut piv = PivClient::new(InProcess::new(vc));
    piv.select().expect("select");
    piv.verify_pin(pin).expect("PIN");
    let digest = sha2::Sha256::digest(b"keyfleet: the slot's key and certificate match");
    let raw_slot = u8::from_str_radix(slot, 16).expect("slot");
    let sig = piv
        .sign_digest(raw_slot, keyfleet::card::keys::KeyAlg::EccP256, &digest)
        .expect("card signs");
    let cert = x509_cert::Certificate::from_der(der).unwrap();
    let spki = cert
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .unwrap();
    let key =
        <p256::ecdsa::VerifyingKey as p256::pkcs8::DecodePublicKey>::from_public_key_der(&spki)
            .expect("P-256 key");
    key.verify_prehash(&digest, &p256::ecdsa::Signature::from_der(&sig).unwrap())
        .expect("the slot's key is the certificate's");
}

#[test]
fn a_ca_failing_after_a_slots_key_is_replaced_leaves_no_stale_certificate_in_the_slot() {
    // Issue 14 point 1: the reissue makes the signature slot's new key, then its CA fails.
    // The slot must not keep the old certificate (which no longer matches its key).
    use der::{DecodePem as _, Encode as _};
    let q = Quickstart::new();
    let (card, old_der, old, to_dead) = alice_issued_then_9c_on_a_dead_ca(&q);
    q.run(&["apply", "--yes", "--target", "user=alice"])
        .expect_code(1)
        .stdout_has("dead-ca");
    assert_ne!(
        slot_certificate(&q, &card, 0x9C),
        Some(old_der),
        "the old certificate stays in the slot whose key was replaced"
    );
    assert_eq!(slot_certificate(&q, &card, 0x9C), None);

    // The CA back and the template as it was (no reissue asked for by the template): the
    // emptied slot is issued again all the same, and the card holds the new certificate.
    q.edit("templates/employee-virtual.yaml", &to_dead.1, &to_dead.0);
    let plan = q.json(&["plan", "--format", "json", "--target", "user=alice"]);
    let actions = plan["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 1, "{plan:#}");
    assert_eq!(actions[0]["reason"], "key-replaced");
    assert_eq!(actions[0]["slot"], "9C");
    assert_eq!(actions[0]["serials"][0], old["serial"]);
    q.run(&["apply", "--yes", "--target", "user=alice"])
        .expect_code(0);
    let live: Vec<Value> = active(&q.inventory())
        .into_iter()
        .filter(|c| c["user"] == "alice" && c["slot"] == "9C")
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_ne!(live[0]["serial"], old["serial"]);
    let new_der = x509_cert::Certificate::from_pem(live[0]["pem"].as_str().unwrap().as_bytes())
        .unwrap()
        .to_der()
        .unwrap();
    assert_eq!(slot_certificate(&q, &card, 0x9C), Some(new_der.clone()));
    assert_slot_matches_its_key(&q, &card, "9C", &new_der);
    // The replaced certificate is revoked as superseded, and nothing is left to do.
    let old_now = certs(&q.inventory())
        .into_iter()
        .find(|c| c["serial"] == old["serial"])
        .unwrap();
    assert_eq!(old_now["status"], "superseded");
    q.run(&["plan", "--target", "user=alice"])
        .expect_code(0)
        .stdout_has("No changes");
}
