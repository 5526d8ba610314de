//! Archived encryption keys and their recovery (issue 17, points 1, 3 and 4) against the real
//! binary on a small copy of the quickstart (local CA, virtual cards) whose template adds a
//! server-generated, archived RSA-2048 9D slot: a CMS message encrypted to Alice's 9D
//! certificate; a reissue of that slot; `keyfleet keys list` shows both records, newest first,
//! no key material; a recovery through the operator API under two-person control gives a
//! PKCS#12 file (PBES2, AES-256-CBC, PBKDF2-HMAC-SHA256, no legacy options) whose key decrypts
//! the old message, with the one-time password only in the requester's PIN-mailer file; the
//! audit log has every step; a denied or failed request writes nothing. The archive key on
//! SoftHSM2 works the same. No key bytes in clear anywhere in the state directory or beside
//! the PKCS#12 file.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use crate::harness::controller::{free_port, wait_for};
use crate::harness::openssl;
use crate::harness::operator_api::Externals;
use crate::incidents::{append, call, card_of};
use crate::spine::Quickstart;

const EMP: &str = "employee-virtual";

const PEOPLE: &str = "\
users:
  - {uid: alice, cn: Alice Andersen, mail: alice@example.com}
  - {uid: bob, cn: Bob Brown, mail: bob@example.com}
groups:
  - name: engineering
    members: [alice, bob]
";

/// The archived, server-generated RSA-2048 encryption slot added to employee-virtual.
const ENCRYPTION: &str = "    - name: encryption
      slot: 9D
      authority: quickstart-ca
      profile: piv-key-management
      keyAlgorithm: rsa-2048
      keyGeneration: server
      archive: true
      subject: \"CN=${user.cn},OU=Employees,O=Example\"
      validity: 1y
      renewBefore: 30d
";

/// Operators with external identities: three key-recovery officers, Alice (who holds
/// recover-key too, to show the owner cannot approve) and a viewer.
const OPERATORS: &str = "  operators:
    templates: [employee-virtual]
    external:
      - {name: o1, caFile: automation-ca.pem, subject: CN=o1}
      - {name: o2, caFile: automation-ca.pem, subject: CN=o2}
      - {name: o3, caFile: automation-ca.pem, subject: CN=o3}
      - {name: alice, caFile: automation-ca.pem, subject: CN=alice}
      - {name: viewer, caFile: automation-ca.pem, subject: CN=viewer}
---
apiVersion: keyfleet.dev/v1
kind: Role
metadata: {name: key-recovery-officers}
spec:
  permissions: [recover-key]
  members: [o1, o2, o3, alice]
---
apiVersion: keyfleet.dev/v1
kind: Role
metadata: {name: viewers}
spec:
  permissions: [view-inventory]
  members: [viewer]
";

const NAMES: &[&str] = &["o1", "o2", "o3", "alice", "viewer"];

/// The quickstart cut to Alice and Bob with the encryption slot, `settings` appended to
/// Settings.spec and operator identities made; validated and applied with `env`.
fn lab(settings: &str, env: &[(&str, &str)]) -> Quickstart {
    let q = Quickstart::new();
    Externals::new(&q.policy, NAMES);
    std::fs::write(q.policy.join("people.yaml"), PEOPLE).expect("write people");
    q.edit(
        "settings.yaml",
        "maxRevocationPercent: 25",
        "maxRevocationPercent: 100",
    );
    append(&q, "templates/employee-virtual.yaml", ENCRYPTION);
    append(&q, "settings.yaml", settings);
    q.run_env(&["validate"], env).expect_code(0);
    q.run_env(&["apply", "--yes"], env).expect_code(0);
    q
}

/// Alice's certificate in `slot` in an inventory.
fn cert_of(inv: &Value, slot: &str) -> Value {
    let card = card_of(inv, "alice", EMP, "active");
    inv["certificates"]
        .as_array()
        .and_then(|a| {
            a.iter().find(|c| {
                c["card"] == card.as_str() && c["slot"] == slot && c["status"] == "active"
            })
        })
        .cloned()
        .unwrap_or_else(|| panic!("no active {slot} certificate of alice: {inv:#}"))
}

/// `openssl ARGS`, which must succeed; its output.
fn ossl(args: &[&str]) -> String {
    let (ok, out) = openssl(args);
    assert!(ok, "openssl {args:?}: {out}");
    out
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// `keyfleet run --api` on the lab, stopped when dropped; every answer it gave is kept.
struct Controller<'a> {
    q: &'a Quickstart,
    child: Child,
    log: PathBuf,
    url: String,
    ca: String,
    answers: std::cell::RefCell<Vec<String>>,
}

impl<'a> Controller<'a> {
    fn start(q: &'a Quickstart, env: &[(&str, &str)]) -> Self {
        let ca = q.write_file("ca.pem", &q.run(&["ca", "cert", "quickstart-ca"]).stdout);
        let port = free_port();
        let log = q.write_file("controller.log", "");
        let log_file = std::fs::File::create(&log).expect("log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyfleet"));
        cmd.arg("-C")
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
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let c = Controller {
            q,
            child: cmd.spawn().expect("start keyfleet run"),
            log,
            url: format!("https://127.0.0.1:{port}"),
            ca: s(&ca),
            answers: Default::default(),
        };
        wait_for("the operator API to answer", || {
            (c.api("viewer", "GET", "/api/v1/whoami", None).0 == 200).then_some(())
        });
        c
    }

    fn api(&self, who: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        let (code, v) = call(
            &self.q.policy,
            &self.url,
            &self.ca,
            who,
            method,
            path,
            body.as_deref(),
        );
        self.answers.borrow_mut().push(v.to_string());
        (code, v)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// POSTs a recovery of Alice's key `serial` to `p12` as o1: 202 and a pending request.
    fn ask(&self, serial: &str, p12: &Path, notify: bool) -> String {
        let body = json!({"user": "alice", "serial": serial, "pkcs12": s(p12),
            "notifyOwner": notify, "reason": "mail archive of a departed user"});
        let (code, v) = self.api("o1", "POST", "/api/v1/keys/recover", Some(body));
        assert_eq!(code, 202, "{v:#}\n{}", self.log_text());
        assert_eq!(v["state"], "pending", "{v:#}");
        assert_eq!(v["request"]["kind"], "recover-key", "{v:#}");
        assert_eq!(v["request"]["required"], 2, "{v:#}");
        v["request"]["id"].as_str().expect("request id").to_string()
    }

    fn decide(&self, who: &str, id: &str, decision: &str) -> (u16, Value) {
        let path = format!("/api/v1/requests/{id}/{decision}");
        self.api(who, "POST", &path, Some(json!({"comment": "checked"})))
    }

    /// The request as o1 sees it through the API.
    fn request(&self, id: &str) -> Value {
        let (code, v) = self.api("o1", "GET", &format!("/api/v1/requests/{id}"), None);
        assert_eq!(code, 200, "{v:#}");
        v
    }

    /// o2 and o3 approve `id`; the request is done or failed then.
    fn approve_twice(&self, id: &str) -> Value {
        let (code, v) = self.decide("o2", id, "approve");
        assert_eq!(code, 200, "{v:#}\n{}", self.log_text());
        assert_eq!(self.request(id)["state"], "pending");
        let (code, v) = self.decide("o3", id, "approve");
        assert_eq!(code, 200, "{v:#}\n{}", self.log_text());
        self.request(id)
    }
}

impl Drop for Controller<'_> {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// The one-time password o1's PIN-mailer file for Alice holds (0600 in a 0700 folder).
fn password_file(q: &Quickstart) -> (PathBuf, String) {
    let dir = q.state.join("pin-mailer");
    let file = dir.join("key-recovery-o1-alice.txt");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&file), 0o600);
    let text = std::fs::read_to_string(&file).expect("password file");
    let pw = text
        .lines()
        .find_map(|l| l.strip_prefix("Password: "))
        .unwrap_or_else(|| panic!("no password in {text}"))
        .trim()
        .to_string();
    assert!(pw.len() >= 16, "a short one-time password: {pw:?}");
    (file, pw)
}

/// Every regular file under `dir`.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.expect("entry").path();
        if p.is_dir() {
            files_under(&p, out);
        } else if p.is_file() {
            out.push(p);
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Extracts the private key from a PKCS#12 file (no legacy options): (its PEM file, its
/// PKCS#8 DER), written into `work`.
fn key_of(p12: &Path, pw: &str, work: &Path) -> (PathBuf, Vec<u8>) {
    let pem = work.join("recovered-key.pem");
    let der = work.join("recovered-key.der");
    let pass = format!("pass:{pw}");
    ossl(&[
        "pkcs12",
        "-in",
        &s(p12),
        "-passin",
        &pass,
        "-nodes",
        "-nocerts",
        "-out",
        &s(&pem),
    ]);
    ossl(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        &s(&pem),
        "-outform",
        "DER",
        "-out",
        &s(&der),
    ]);
    let bytes = std::fs::read(&der).expect("key DER");
    assert!(
        bytes.len() > 1000,
        "an RSA-2048 PKCS#8 key: {} bytes",
        bytes.len()
    );
    (pem, bytes)
}

/// No file under `dirs` (but those under `except`) holds the key's DER, a 32-byte chunk of
/// its middle, or that chunk in hex.
fn assert_no_key_in_clear(der: &[u8], dirs: &[&Path], except: Option<&Path>) {
    let mid = der.len() / 2;
    let chunk = &der[mid..mid + 32];
    let hex_lower = hex::encode(chunk);
    let hex_upper = hex_lower.to_uppercase();
    let mut files = Vec::new();
    for d in dirs {
        files_under(d, &mut files);
    }
    assert!(files.len() > 5, "{files:?}");
    for f in files
        .iter()
        .filter(|f| except.is_none_or(|e| !f.starts_with(e)))
    {
        let bytes = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for needle in [der, chunk, hex_lower.as_bytes(), hex_upper.as_bytes()] {
            assert!(
                !contains(&bytes, needle),
                "key bytes in clear in {}",
                f.display()
            );
        }
    }
}

/// The PKCS#12 file opens without `-legacy` and uses PBES2 with PBKDF2-HMAC-SHA256 and
/// AES-256-CBC for the key bag and the certificates.
fn assert_modern_pkcs12(p12: &Path, pw: &str) {
    let pass = format!("pass:{pw}");
    let all = ossl(&["pkcs12", "-in", &s(p12), "-passin", &pass, "-nodes"]);
    assert!(
        all.contains("BEGIN PRIVATE KEY") && all.contains("BEGIN CERTIFICATE"),
        "{all}"
    );
    let info = ossl(&[
        "pkcs12",
        "-in",
        &s(p12),
        "-passin",
        &pass,
        "-info",
        "-noout",
    ]);
    assert!(
        info.contains("Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC"),
        "{info}"
    );
    assert!(
        info.contains("PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC"),
        "{info}"
    );
    assert!(info.contains("hmacWithSHA256"), "{info}");
    assert!(!info.contains("RC2") && !info.contains("3DES"), "{info}");
}

/// The audit log's entries (the controller stopped).
fn audit(q: &Quickstart, env: &[(&str, &str)]) -> Vec<Value> {
    let r = q.run_env(&["audit-log", "show", "--format", "json"], env);
    r.expect_code(0);
    let v: Value = serde_json::from_str(&r.stdout).expect("audit log JSON");
    v.as_array().expect("entries").clone()
}

fn find<'a>(
    entries: &'a [Value],
    actor: &str,
    kind: &str,
    target: &str,
    outcome: &str,
) -> &'a Value {
    entries
        .iter()
        .find(|e| {
            e["actor"] == actor
                && e["kind"] == kind
                && e["target"] == target
                && e["outcome"] == outcome
        })
        .unwrap_or_else(|| panic!("no {actor} {kind} {target} {outcome} in {entries:#?}"))
}

#[test]
fn an_old_encryption_key_is_listed_and_recovered_under_two_person_control() {
    let q = lab(OPERATORS, &[]);
    let work = tempfile::tempdir().expect("work dir");
    let w = work.path();

    // A message encrypted to Alice's 9D certificate as first issued.
    let old = cert_of(&q.inventory(), "9D");
    let old_serial = old["serial"].as_str().expect("serial").to_string();
    std::fs::write(w.join("old.pem"), old["pem"].as_str().expect("pem")).expect("pem");
    std::fs::write(w.join("msg.txt"), "the quarterly numbers\n").expect("msg");
    let (msg, cms) = (w.join("msg.txt"), w.join("msg.cms"));
    ossl(&[
        "cms",
        "-encrypt",
        "-binary",
        "-aes256",
        "-in",
        &s(&msg),
        "-out",
        &s(&cms),
        "-recip",
        &s(&w.join("old.pem")),
    ]);

    // The slot is reissued: a new key, archived too.
    let tpl = q.policy.join("templates/employee-virtual.yaml");
    let text = std::fs::read_to_string(&tpl).expect("template");
    let at = text.find("- name: encryption").expect("encryption slot");
    let text = format!(
        "{}{}",
        &text[..at],
        text[at..].replacen("OU=Employees", "OU=Encryption", 1)
    );
    std::fs::write(&tpl, text).expect("template");
    q.run(&["apply", "--yes"])
        .expect_code(0)
        .stdout_has("reissue alice");
    let new = cert_of(&q.inventory(), "9D");
    let new_serial = new["serial"].as_str().expect("serial").to_string();
    assert_ne!(new_serial, old_serial);

    let keys = q.json(&["keys", "list", "--user", "alice", "--format", "json"]);
    let keys = keys.as_array().expect("records");
    let serials: Vec<&str> = keys.iter().filter_map(|k| k["serial"].as_str()).collect();
    assert_eq!(
        serials,
        [new_serial.as_str(), old_serial.as_str()],
        "{keys:#?}"
    );
    let card = card_of(&q.inventory(), "alice", EMP, "active");
    for (k, c) in keys.iter().zip([&new, &old]) {
        assert_eq!(k["user"], "alice");
        assert_eq!(k["template"], EMP);
        assert_eq!(k["slot"], "9D");
        assert_eq!(k["card"], card.as_str());
        assert_eq!(k["notBefore"], c["notBefore"], "{k:#}");
        assert_eq!(k["notAfter"], c["notAfter"], "{k:#}");
        assert!(k["archivedAt"].is_string(), "{k:#}");
        let fields: Vec<&String> = k.as_object().expect("record").keys().collect();
        for f in fields {
            assert!(
                [
                    "serial",
                    "user",
                    "template",
                    "slot",
                    "card",
                    "notBefore",
                    "notAfter",
                    "archivedAt",
                    "keyId"
                ]
                .contains(&f.as_str()),
                "key material or an unknown field {f} in {k:#}"
            );
        }
    }
    assert!(keys[0]["archivedAt"].as_str() > keys[1]["archivedAt"].as_str());
    // Bob's records too, unfiltered.
    let all = q.json(&["keys", "list", "--format", "json"]);
    assert_eq!(all.as_array().map(Vec::len), Some(4), "{all:#}");

    let ctl = Controller::start(&q, &[]);
    // The viewer lists but cannot recover.
    let (code, v) = ctl.api("viewer", "GET", "/api/v1/keys?user=alice", None);
    assert_eq!(code, 200, "{v:#}");
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{v:#}");
    let out = tempfile::tempdir().expect("recovery dir");
    let p12 = out.path().join("alice-old.p12");
    let body = json!({"user": "alice", "serial": old_serial, "pkcs12": s(&p12)});
    let (code, v) = ctl.api("viewer", "POST", "/api/v1/keys/recover", Some(body.clone()));
    assert_eq!(code, 403, "{v:#}");
    assert!(v.to_string().contains("recover-key"), "{v:#}");
    // Alice holds recover-key but does not ask for her own keys.
    let (code, v) = ctl.api("alice", "POST", "/api/v1/keys/recover", Some(body));
    assert_eq!(code, 403, "{v:#}");
    assert!(v.to_string().contains("separation of duties"), "{v:#}");

    // o1 asks; o1 and Alice cannot approve; o2's approval is not enough; o3's runs it.
    let id = ctl.ask(&old_serial, &p12, true);
    let (code, v) = ctl.decide("o1", &id, "approve");
    assert_eq!(code, 403, "{v:#}");
    assert!(v.to_string().contains("cannot approve"), "{v:#}");
    let (code, v) = ctl.decide("alice", &id, "approve");
    assert_eq!(code, 403, "{v:#}");
    assert!(v.to_string().contains("is about alice"), "{v:#}");
    let (code, v) = ctl.decide("o2", &id, "approve");
    assert_eq!(code, 200, "{v:#}");
    let r = ctl.request(&id);
    assert_eq!(r["state"], "pending", "{r:#}");
    assert!(!p12.exists(), "written before the second approval");
    assert!(
        !q.state
            .join("pin-mailer/key-recovery-o1-alice.txt")
            .exists()
    );
    let (code, v) = ctl.decide("o2", &id, "approve");
    assert_eq!(code, 409, "{v:#}");
    let (code, v) = ctl.decide("o3", &id, "approve");
    assert_eq!(code, 200, "{v:#}\n{}", ctl.log_text());
    let r = ctl.request(&id);
    assert_eq!(r["state"], "done", "{r:#}\n{}", ctl.log_text());
    assert_eq!(mode(&p12), 0o600);
    let (pw_file, pw) = password_file(&q);
    let p12_bytes = std::fs::read(&p12).expect("p12");
    let pw_text = std::fs::read_to_string(&pw_file).expect("password file");

    // The file: modern encryption, the old key, which decrypts the old message.
    assert_modern_pkcs12(&p12, &pw);
    let (key_pem, der) = key_of(&p12, &pw, w);
    let plain = ossl(&[
        "cms",
        "-decrypt",
        "-binary",
        "-in",
        &s(&cms),
        "-inkey",
        &s(&key_pem),
    ]);
    assert_eq!(plain, "the quarterly numbers\n");
    let certs = ossl(&[
        "pkcs12",
        "-in",
        &s(&p12),
        "-passin",
        &format!("pass:{pw}"),
        "-nokeys",
    ]);
    std::fs::write(w.join("p12-cert.pem"), &certs).expect("cert");
    let serial = ossl(&[
        "x509",
        "-in",
        &s(&w.join("p12-cert.pem")),
        "-noout",
        "-serial",
    ]);
    assert_eq!(serial.trim(), format!("serial={old_serial}"));

    // A second recovery to the same path is approved but fails: the file exists. A denied
    // one to a new path writes nothing.
    let id2 = ctl.ask(&old_serial, &p12, false);
    let r = ctl.approve_twice(&id2);
    assert_eq!(r["state"], "failed", "{r:#}");
    assert!(r.to_string().contains("exists"), "{r:#}");
    let other = out.path().join("denied.p12");
    let id3 = ctl.ask(&new_serial, &other, false);
    let (code, v) = ctl.decide("o2", &id3, "deny");
    assert_eq!(code, 200, "{v:#}");
    assert_eq!(ctl.request(&id3)["state"], "denied");
    let (code, v) = ctl.decide("o3", &id3, "approve");
    assert_eq!(code, 409, "{v:#}");
    assert!(!other.exists());
    assert_eq!(std::fs::read(&p12).expect("p12"), p12_bytes);
    assert_eq!(std::fs::read_to_string(&pw_file).expect("pw"), pw_text);

    // The password is in no API answer.
    for a in ctl.answers.borrow().iter() {
        assert!(!a.contains(&pw), "the password in an answer: {a}");
    }
    drop(ctl);

    let entries = audit(&q, &[]);
    let asked = find(&entries, "o1", "request", &id, "pending");
    assert_eq!(asked["details"]["kind"], "recover-key", "{asked:#}");
    find(&entries, "viewer", "recover-key", "alice", "denied");
    find(&entries, "alice", "recover-key", "alice", "denied");
    find(&entries, "o1", "approve-request", &id, "denied");
    find(&entries, "alice", "approve-request", &id, "denied");
    find(&entries, "o2", "approve-request", &id, "approved");
    find(&entries, "o3", "approve-request", &id, "approved");
    let started = find(&entries, "o1", "recover-key", "alice", "started");
    assert_eq!(started["details"]["request"], id.as_str(), "{started:#}");
    assert_eq!(
        started["details"]["approvedBy"],
        json!(["o2", "o3"]),
        "{started:#}"
    );
    let done = find(&entries, "o1", "recover-key", "alice", "done");
    assert_eq!(done["details"]["request"], id.as_str(), "{done:#}");
    assert_eq!(done["details"]["notifyOwner"], true, "{done:#}");
    assert_eq!(done["details"]["serials"], json!([old_serial]), "{done:#}");
    assert_eq!(done["details"]["pkcs12"], s(&p12), "{done:#}");
    let failed = find(&entries, "o1", "recover-key", "alice", "failed");
    assert_eq!(failed["details"]["request"], id2.as_str(), "{failed:#}");
    find(&entries, "o2", "deny-request", &id3, "denied");
    let log = serde_json::to_string(&entries).expect("entries");
    assert!(!log.contains(&pw), "the password in the audit log");
    q.run(&["audit-log", "verify"]).expect_code(0);

    // Nothing at rest holds the password but its file, and no file holds the key in clear.
    let mut files = Vec::new();
    files_under(&q.state, &mut files);
    for f in files.iter().filter(|f| **f != pw_file) {
        let bytes = std::fs::read(f).expect("state file");
        assert!(
            !contains(&bytes, pw.as_bytes()),
            "the password in {}",
            f.display()
        );
    }
    // The old key is also back on alice's card, in its retired slot 82 (the key history):
    // a virtual card's own storage (`cards/`) is the card, as a chip holds its keys.
    assert_no_key_in_clear(&der, &[&q.state, out.path()], Some(&q.state.join("cards")));
}

#[test]
fn a_recovery_to_the_owners_card_puts_the_old_key_in_its_retired_slots_and_stays() {
    // keyHistory 0: only a recovery puts an old key back on the card.
    let q = lab(OPERATORS, &[]);
    q.edit(
        "templates/employee-virtual.yaml",
        "  certificates:",
        "  keyHistory: 0\n  certificates:",
    );
    let old = cert_of(&q.inventory(), "9D")["serial"]
        .as_str()
        .expect("serial")
        .to_string();
    let tpl = q.policy.join("templates/employee-virtual.yaml");
    let text = std::fs::read_to_string(&tpl).expect("template");
    let at = text.find("- name: encryption").expect("encryption slot");
    let text = format!(
        "{}{}",
        &text[..at],
        text[at..].replacen("OU=Employees", "OU=Encryption", 1)
    );
    std::fs::write(&tpl, text).expect("template");
    q.run(&["apply", "--yes"])
        .expect_code(0)
        .stdout_has("reissue alice");
    let inv = q.inventory();
    let card = card_of(&inv, "alice", EMP, "active");
    assert_ne!(cert_of(&inv, "9D")["serial"], old.as_str());
    let shown = |q: &Quickstart| -> Value {
        let r = q.run(&["cards", "show", &card, "--format", "json"]);
        r.expect_code(0);
        serde_json::from_str(&r.stdout).expect("card JSON")
    };
    assert_eq!(shown(&q)["keyHistory"], json!([]));
    // One destination only; her card takes the key.
    let c = Controller::start(&q, &[]);
    let body = json!({"user": "alice", "serial": old, "toCard": card, "pkcs12": "/tmp/x.p12"});
    let (code, v) = c.api("o1", "POST", "/api/v1/keys/recover", Some(body));
    assert_eq!(code, 422, "one destination only: {v:#}");
    let body = json!({"user": "alice", "serial": old, "toCard": card, "notifyOwner": true});
    let (code, v) = c.api("o1", "POST", "/api/v1/keys/recover", Some(body));
    assert_eq!(code, 202, "{v:#}");
    let id = v["request"]["id"].as_str().expect("id").to_string();
    let done = c.approve_twice(&id);
    assert_eq!(done["state"], "done", "{done:#}\n{}", c.log_text());
    assert_eq!(done["outcome"]["card"], card.as_str(), "{done:#}");
    assert_eq!(done["outcome"]["retiredSlots"], json!([old]), "{done:#}");
    drop(c);
    assert_eq!(shown(&q)["keyHistory"], json!([old]));
    // The planner keeps it there: nothing to do.
    q.run(&["plan"]).expect_code(0);
}

const HSM_PIN: &str = "4321";

#[test]
fn the_archive_key_on_a_softhsm_token_archives_and_recovers() {
    use crate::harness::softhsm::{MODULE, SoftHsm};
    let hsm = SoftHsm::new();
    hsm.init_token("keyfleet", HSM_PIN);
    let conf = s(&hsm.conf());
    let env = [
        ("SOFTHSM2_CONF", conf.as_str()),
        ("KEYFLEET_HSM_PIN", HSM_PIN),
    ];
    let settings = format!(
        "  archive:\n    keyStore: \"pkcs11:token=keyfleet;object=kf-archive?module-path={MODULE}&pin-source=env:KEYFLEET_HSM_PIN\"\n{OPERATORS}"
    );
    let q = lab(&settings, &env);
    assert!(q.state.join("archive.key.p11").exists());
    assert!(
        !q.state.join("archive.key").exists(),
        "no archive key file with a token"
    );
    let objects = hsm.tool(&[
        "--token-label",
        "keyfleet",
        "--login",
        "--pin",
        HSM_PIN,
        "-O",
    ]);
    assert!(
        objects.stdout.contains("Secret Key Object; AES length 32")
            && objects.stdout.contains("label:      kf-archive"),
        "{}",
        objects.stdout
    );
    let keys = q.json(&["keys", "list", "--user", "alice", "--format", "json"]);
    let serial = keys[0]["serial"].as_str().expect("serial").to_string();

    let ctl = Controller::start(&q, &env);
    let out = tempfile::tempdir().expect("recovery dir");
    let p12 = out.path().join("alice.p12");
    let id = ctl.ask(&serial, &p12, false);
    let r = ctl.approve_twice(&id);
    assert_eq!(r["state"], "done", "{r:#}\n{}", ctl.log_text());
    drop(ctl);
    let (_, pw) = password_file(&q);
    assert_modern_pkcs12(&p12, &pw);
    let work = tempfile::tempdir().expect("work dir");
    let (_, der) = key_of(&p12, &pw, work.path());
    // The recovered key is the one of the certificate in slot 9D.
    let cert = cert_of(&q.inventory(), "9D");
    std::fs::write(
        work.path().join("9d.pem"),
        cert["pem"].as_str().expect("pem"),
    )
    .expect("pem");
    let from_cert = ossl(&[
        "x509",
        "-in",
        &s(&work.path().join("9d.pem")),
        "-noout",
        "-pubkey",
    ]);
    let from_key = ossl(&[
        "pkey",
        "-inform",
        "DER",
        "-in",
        &s(&work.path().join("recovered-key.der")),
        "-pubout",
    ]);
    assert_eq!(from_cert, from_key);
    let done = audit(&q, &env);
    find(&done, "o1", "recover-key", "alice", "done");
    // The key is Alice's current one: the virtual card's own storage (the card itself, see
    // README's state directory) holds it; nothing else does.
    let tokens = hsm.token_dir();
    let dirs = [q.state.as_path(), out.path(), tokens.as_path()];
    assert_no_key_in_clear(&der, &dirs, Some(&q.state.join("cards")));
}

#[test]
fn recover_key_approvals_of_zero_are_refused_naming_the_default_of_two() {
    let q = Quickstart::new();
    append(&q, "settings.yaml", "  approvals: {recover-key: 0}\n");
    q.run(&["validate"]).expect_code(1).stderr_has(
        "approvals of recover-key must be at least 1 (leave recover-key out to need 2)",
    );
}
