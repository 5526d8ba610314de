//! PKCS#11 tokens on SoftHSM2 (private SOFTHSM2_CONF per test): blank tokens issued by
//! `keyfleet apply`, objects and attributes as `pkcs11-tool` sees them, signatures openssl
//! verifies, wrong PINs, a token pulled out mid-issuance, and Keyfleet's own keys on a token.

use std::path::{Path, PathBuf};

use crate::harness::softhsm::{SoftHsm, openssl};

/// Copies examples/pkcs11 into `dir/policy` and returns it.
fn example_policy(dir: &Path) -> PathBuf {
    let src = crate::harness::repo_root().join("examples/pkcs11");
    let dst = dir.join("policy");
    copy_dir(&src, &dst);
    dst
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else if e.file_name() != "README.md" {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The PIN Keyfleet set, from the PIN mailer.
fn mailed_pin(state: &Path, user: &str, card: &str) -> String {
    let text = std::fs::read_to_string(state.join("pin-mailer").join(format!("{user}-{card}.txt")))
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("PIN: "))
        .unwrap()
        .to_string()
}

/// Issues alice and bob onto two blank tokens; returns (policy dir, state dir, alice serial).
fn issue_two(hsm: &SoftHsm) -> (PathBuf, PathBuf, String) {
    hsm.init_token("kf-blank-1", "000000");
    hsm.init_token("kf-blank-2", "000000");
    let policy = example_policy(hsm.path());
    let state = hsm.path().join("state");
    let run = hsm.keyfleet(
        &["apply", "-C", s(&policy), "--state-dir", s(&state), "--yes"],
        &[],
    );
    run.expect_code(0).stdout_has("Applied: 2 done, 0 failed");
    let serial = hsm.serial_of("alice").expect("alice's token is relabelled");
    (policy, state, serial)
}

#[test]
fn blank_tokens_are_issued_and_usable_by_opensc_and_openssl() {
    let hsm = SoftHsm::new();
    let (policy, state, serial) = issue_two(&hsm);
    assert!(hsm.serial_of("bob").is_some());
    assert!(hsm.serial_of("kf-blank-1").is_none() && hsm.serial_of("kf-blank-2").is_none());

    // Level-triggered: a second pass changes nothing.
    hsm.keyfleet(
        &["apply", "-C", s(&policy), "--state-dir", s(&state), "--yes"],
        &[],
    )
    .expect_code(0)
    .stdout_has("No changes");

    let card = format!("p11-{serial}");
    let pin = mailed_pin(&state, "alice", &card);
    let objects = hsm.tool(&["--token-label", "alice", "--login", "--pin", &pin, "-O"]);
    objects.expect_code(0);
    let out = &objects.stdout;
    assert!(out.contains("Private Key Object; EC"), "{out}");
    assert!(
        out.contains("Certificate Object; type = X.509 cert"),
        "{out}"
    );
    assert!(
        out.contains("sensitive, always sensitive, never extractable, local"),
        "the private key must be sensitive and never extractable:\n{out}"
    );
    assert_eq!(
        out.matches("ID:         9a").count(),
        3,
        "key pair and cert share CKA_ID 9a:\n{out}"
    );
    assert_eq!(out.matches("label:      piv-auth").count(), 3, "{out}");

    // The inventory names the private key of each token certificate by its RFC 7512 URI.
    let inv = hsm.keyfleet(
        &[
            "inventory",
            "-C",
            s(&policy),
            "--state-dir",
            s(&state),
            "--format",
            "json",
        ],
        &[],
    );
    let inv: serde_json::Value = serde_json::from_str(&inv.stdout).expect("inventory json");
    let alice = inv["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .find(|c| c["user"] == "alice")
        .expect("alice's certificate")
        .clone();
    let uri = alice["keyUri"].as_str().expect("keyUri").to_string();
    assert!(
        uri.starts_with("pkcs11:")
            && uri.contains("token=alice")
            && uri.contains("object=piv-auth")
            && uri.contains("type=private"),
        "{uri}"
    );

    // The certificate chains to the local CA.
    let dir = hsm.path();
    let cert_der = dir.join("alice.der");
    hsm.tool(&[
        "--token-label",
        "alice",
        "--read-object",
        "--type",
        "cert",
        "--id",
        "9a",
        "--output-file",
        s(&cert_der),
    ])
    .expect_code(0);
    let cert_pem = dir.join("alice.pem");
    openssl(&[
        "x509",
        "-inform",
        "DER",
        "-in",
        s(&cert_der),
        "-out",
        s(&cert_pem),
    ])
    .expect_code(0);
    let ca = state.join("ca/token-ca/ca.pem");
    openssl(&["verify", "-CAfile", s(&ca), s(&cert_pem)])
        .expect_code(0)
        .stdout_has("OK");

    // pkcs11-tool signs with the token key; openssl verifies with the certificate's key.
    let data = dir.join("data.txt");
    std::fs::write(&data, b"signed by a token Keyfleet issued").unwrap();
    let hash = dir.join("data.sha256");
    openssl(&["dgst", "-sha256", "-binary", "-out", s(&hash), s(&data)]).expect_code(0);
    let sig = dir.join("data.sig");
    hsm.tool(&[
        "--token-label",
        "alice",
        "--login",
        "--pin",
        &pin,
        "--sign",
        "--mechanism",
        "ECDSA",
        "--id",
        "9a",
        "--signature-format",
        "openssl",
        "-i",
        s(&hash),
        "-o",
        s(&sig),
    ])
    .expect_code(0);
    let public = dir.join("alice.pub.pem");
    openssl(&[
        "x509",
        "-in",
        s(&cert_pem),
        "-pubkey",
        "-noout",
        "-out",
        s(&public),
    ])
    .expect_code(0);
    openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        s(&public),
        "-signature",
        s(&sig),
        s(&data),
    ])
    .expect_code(0)
    .stdout_has("Verified OK");
}

#[test]
fn a_wrong_pin_is_reported_clearly_and_counted() {
    let hsm = SoftHsm::new();
    let (policy, state, serial) = issue_two(&hsm);
    let card = format!("p11-{serial}");
    let pin = mailed_pin(&state, "alice", &card);
    // The holder changes the PIN behind Keyfleet's back.
    hsm.tool(&[
        "--token-label",
        "alice",
        "--login",
        "--pin",
        &pin,
        "--change-pin",
        "--new-pin",
        "654321",
    ])
    .expect_code(0);
    // A template change makes Keyfleet reissue, which needs the PIN.
    let template = policy.join("templates/employee-token.yaml");
    let text = std::fs::read_to_string(&template).unwrap();
    std::fs::write(&template, text.replace("OU=Employees", "OU=Staff")).unwrap();
    let args = ["apply", "-C", s(&policy), "--state-dir", s(&state), "--yes"];
    // Issue 14: the refused PIN is tried once, then the action waits for the holder (pending,
    // exit 0 since nothing failed) and the PIN is never tried again on later passes.
    let run = hsm.keyfleet(&args, &[]);
    run.expect_code(0);
    run.stdout_has("waiting for the holder")
        .stdout_has("the user PIN Keyfleet set was refused (1 failed login(s) counted by Keyfleet")
        .stdout_has("wrong user PIN");
    let run = hsm.keyfleet(&args, &[]);
    run.expect_code(0);
    assert!(
        !run.stdout.contains("2 failed login(s)"),
        "a refused PIN was tried again: {}",
        run.stdout
    );
    let plan = hsm.keyfleet(
        &[
            "plan",
            "-C",
            s(&policy),
            "--state-dir",
            s(&state),
            "--format",
            "json",
        ],
        &[],
    );
    plan.expect_code(2);
    assert!(
        plan.stdout.contains("\"waitingForHolder\": true")
            && plan.stdout.contains("holder-pin-unknown"),
        "{}",
        plan.stdout
    );
    // Bob's token was not touched by alice's failure and is reissued.
    let inv = hsm.keyfleet(
        &["inventory", "-C", s(&policy), "--state-dir", s(&state)],
        &[],
    );
    assert!(
        inv.stdout.contains("CN=Bob Brown,OU=Staff"),
        "{}",
        inv.stdout
    );
}

#[test]
fn a_token_pulled_out_during_issuance_resumes_from_the_journal() {
    let hsm = SoftHsm::new();
    hsm.init_token("kf-blank-1", "000000");
    let policy = example_policy(hsm.path());
    // Only alice.
    std::fs::write(
        policy.join("people.yaml"),
        "users:\n  - {uid: alice, cn: Alice Andersen, mail: alice@example.com}\ngroups:\n  - {name: token-users, members: [alice]}\n",
    )
    .unwrap();
    let state = hsm.path().join("state");
    let args = ["apply", "-C", s(&policy), "--state-dir", s(&state), "--yes"];
    // Journal writes: personalise open(1)/close(2), the slot's key replacement open(3),
    // enrol open(4)/close(5): the certificate is signed and recorded but not yet on the token
    // when the process dies.
    let run = hsm.keyfleet(&args, &[("KEYFLEET_CRASH_AFTER_STEP", "5")]);
    assert!(run.crashed_at_crash_point(), "{run:?}");
    let serial = hsm.serial_of("alice").expect("token personalised");

    // The token is pulled out: its directory leaves the token store.
    let token_dir = std::fs::read_dir(hsm.token_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .next()
        .unwrap();
    let away = hsm.path().join("pulled-out");
    std::fs::rename(&token_dir, &away).unwrap();
    let run = hsm.keyfleet(&args, &[]);
    run.expect_code(0)
        .stdout_has("was signed but not yet written to the card [waiting for card]");
    assert!(hsm.serial_of("alice").is_none());

    // Plugged back in: the recorded certificate is installed, nothing is signed twice.
    std::fs::rename(&away, &token_dir).unwrap();
    hsm.keyfleet(&args, &[])
        .expect_code(0)
        .stdout_has("Applied: 1 done, 0 failed");
    hsm.keyfleet(&args, &[])
        .expect_code(0)
        .stdout_has("No changes");
    let pin = mailed_pin(&state, "alice", &format!("p11-{serial}"));
    let objects = hsm.tool(&["--token-label", "alice", "--login", "--pin", &pin, "-O"]);
    assert_eq!(
        objects.stdout.matches("Certificate Object").count(),
        1,
        "{}",
        objects.stdout
    );
    let inv = hsm.keyfleet(
        &["inventory", "-C", s(&policy), "--state-dir", s(&state)],
        &[],
    );
    assert_eq!(
        inv.stdout.matches("CN=Alice Andersen").count(),
        1,
        "{}",
        inv.stdout
    );
}

const HSM_PIN: &str = "4321";

/// Puts the master key and the local CA's key of the example policy on the token `keyfleet`.
fn keys_on_token(policy: &Path) {
    let module = crate::harness::softhsm::MODULE;
    std::fs::write(
        policy.join("settings.yaml"),
        format!(
            "apiVersion: keyfleet.dev/v1\nkind: Settings\nmetadata:\n  name: settings\nspec:\n  keyStore: \"pkcs11:token=keyfleet;object=kf-master?module-path={module}&pin-source=env:KEYFLEET_HSM_PIN\"\n"
        ),
    )
    .unwrap();
    let authority = std::fs::read_to_string(policy.join("authority.yaml")).unwrap();
    std::fs::write(
        policy.join("authority.yaml"),
        format!(
            "{authority}    keyStore: \"pkcs11:token=keyfleet;object=kf-ca?module-path={module}&pin-source=env:KEYFLEET_HSM_PIN\"\n"
        ),
    )
    .unwrap();
}

#[test]
fn keyfleet_keys_on_a_token_sign_and_seal_and_are_needed() {
    let hsm = SoftHsm::new();
    hsm.init_token("keyfleet", HSM_PIN);
    hsm.init_token("kf-blank-1", "000000");
    let policy = example_policy(hsm.path());
    std::fs::write(
        policy.join("people.yaml"),
        "users:\n  - {uid: alice, cn: Alice Andersen, mail: alice@example.com}\ngroups:\n  - {name: token-users, members: [alice]}\n",
    )
    .unwrap();
    keys_on_token(&policy);
    let state = hsm.path().join("state");
    let args = ["apply", "-C", s(&policy), "--state-dir", s(&state), "--yes"];
    let env = [("KEYFLEET_HSM_PIN", HSM_PIN)];
    hsm.keyfleet(&args, &env)
        .expect_code(0)
        .stdout_has("Applied: 1 done, 0 failed");
    assert!(state.join("master.key.p11").exists());
    assert!(
        !state.join("master.key").exists(),
        "no master key file with a token store"
    );
    assert!(
        !state.join("ca/token-ca/ca.key.sealed").exists(),
        "the CA key is on the token"
    );

    // Both keys are on the token, sensitive and never extractable.
    let objects = hsm.tool(&[
        "--token-label",
        "keyfleet",
        "--login",
        "--pin",
        HSM_PIN,
        "-O",
    ]);
    let out = &objects.stdout;
    assert!(
        out.contains("Secret Key Object; AES length 32") && out.contains("kf-master"),
        "{out}"
    );
    assert!(out.contains("label:      kf-ca"), "{out}");
    // The audit key lives next to the master key, labelled after it.
    assert!(out.contains("label:      kf-master-audit"), "{out}");
    assert!(!state.join("audit/signing.key").exists());
    assert_eq!(out.matches("never extractable").count(), 3, "{out}");
    // ...and signed the checkpoint of the apply's entries.
    hsm.keyfleet(
        &[
            "audit-log",
            "verify",
            "-C",
            s(&policy),
            "--state-dir",
            s(&state),
        ],
        &env,
    )
    .expect_code(0)
    .stdout_has("signed up to seq 2");

    // The CA on the token signed a certificate openssl accepts.
    let cert_der = hsm.path().join("alice.der");
    hsm.tool(&[
        "--token-label",
        "alice",
        "--read-object",
        "--type",
        "cert",
        "--id",
        "9a",
        "--output-file",
        s(&cert_der),
    ])
    .expect_code(0);
    let cert_pem = hsm.path().join("alice.pem");
    openssl(&[
        "x509",
        "-inform",
        "DER",
        "-in",
        s(&cert_der),
        "-out",
        s(&cert_pem),
    ])
    .expect_code(0);
    openssl(&[
        "verify",
        "-CAfile",
        s(&state.join("ca/token-ca/ca.pem")),
        s(&cert_pem),
    ])
    .expect_code(0)
    .stdout_has("OK");

    // After a restart, the sealed PIN opens (the reissue logs in with it) and the CA signs.
    let template = policy.join("templates/employee-token.yaml");
    let text = std::fs::read_to_string(&template).unwrap();
    std::fs::write(&template, text.replace("OU=Employees", "OU=Staff")).unwrap();
    hsm.keyfleet(&args, &env)
        .expect_code(0)
        .stdout_has("Applied: 1 done, 0 failed");

    // Without the token nothing opens.
    let dirs: Vec<PathBuf> = std::fs::read_dir(hsm.token_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let keyfleet_dir = dirs
        .iter()
        .find(|d| {
            std::fs::read_dir(d).unwrap().count() > 0 && {
                let away = hsm.path().join("probe");
                std::fs::rename(d, &away).unwrap();
                let gone = hsm.serial_of("keyfleet").is_none();
                std::fs::rename(&away, d).unwrap();
                gone
            }
        })
        .expect("the keyfleet token's directory")
        .clone();
    std::fs::rename(&keyfleet_dir, hsm.path().join("away")).unwrap();
    let run = hsm.keyfleet(&args, &env);
    assert_ne!(run.code, Some(0));
    assert!(
        run.stderr
            .contains("keyStore pkcs11:token=keyfleet;object=kf-master")
            && run.stderr.contains("is not present"),
        "{}",
        run.stderr
    );
}

/// Set by [`a_token_appearing_is_a_card_event`] for its child process, which
/// needs SOFTHSM2_CONF in its environment before the module loads.
const WATCH_CHILD: &str = "KEYFLEET_TEST_WATCH_CHILD";

#[test]
fn a_token_appearing_is_a_card_event() {
    let hsm = SoftHsm::new();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "pkcs11::token_watch_child", "--nocapture"])
        .env(WATCH_CHILD, hsm.path())
        .env("SOFTHSM2_CONF", hsm.conf())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "the child test did not run:\n{stdout}"
    );
}

/// The child half: runs only inside the process started above.
#[test]
fn token_watch_child() {
    use keyfleet::card::events::CardEvent;
    use keyfleet::card::pkcs11::{Module, watch::TokenWatcher};
    use std::time::Duration;
    if std::env::var_os(WATCH_CHILD).is_none() {
        return;
    }
    let module = Module::open(Path::new(crate::harness::softhsm::MODULE)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let watcher = TokenWatcher::start(module, Duration::from_millis(50), tx).unwrap();
    let wait = Duration::from_secs(5);

    // SoftHSM2 scans its token directory only at C_Initialize, so a token created by another
    // process is seen by the next process, not this one (see the README, "PKCS#11 tokens and HSM-held keys"). The token
    // appears here the way a module reports a new one: the free slot gets an initialised token.
    let ctx = cryptoki::context::Pkcs11::new(crate::harness::softhsm::MODULE).unwrap();
    let _ = ctx.initialize(cryptoki::context::CInitializeArgs::new(
        cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
    ));
    let free = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| !ctx.get_token_info(*s).unwrap().token_initialized())
        .expect("SoftHSM2 always offers a free slot");
    ctx.init_token(free, &"12345678".to_string().into(), "kf-blank-w")
        .unwrap();
    match rx.recv_timeout(wait).expect("an insertion event") {
        CardEvent::Inserted { card, label } => {
            assert_eq!(label, "kf-blank-w");
            assert!(card.starts_with("p11-"));
        }
        other => panic!("expected an insertion, got {other:?}"),
    }
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "one event per change"
    );
    watcher.stop();
}
