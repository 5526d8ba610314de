//! PIV cards over the real PC/SC stack: a private pcscd with the vpcd reader driver and
//! Keyfleet's virtual card served into it by `keyfleet vcard serve`. Issuance runs through
//! `keyfleet apply` with the `examples/piv` policy; OpenSC (`pkcs11-tool`, `opensc-tool`) and
//! `openssl`, run as separate processes, check what landed on the card.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::pcscd::{OPENSC_MODULE, Pcscd};
use crate::harness::repo_root;

fn policy() -> String {
    repo_root().join("examples/piv").display().to_string()
}

fn kf(pcscd: &Pcscd, state: &Path, args: &[&str]) -> crate::harness::Run {
    let policy = policy();
    let state = state.display().to_string();
    let mut all = vec!["-C", policy.as_str(), "--state-dir", state.as_str()];
    all.extend_from_slice(args);
    pcscd.keyfleet(&all)
}

/// The PIN in the (only) PIN mailer of a state directory.
pub(crate) fn mailer_pin(state: &Path) -> String {
    let dir = state.join("pin-mailer");
    let entry = std::fs::read_dir(&dir)
        .expect("PIN mailer directory")
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".txt"))
        .expect("a PIN mailer");
    let text = std::fs::read_to_string(entry.path()).expect("read PIN mailer");
    text.lines()
        .find_map(|l| l.strip_prefix("PIN: "))
        .expect("PIN line")
        .to_string()
}

/// Signs `data.hash` with the key `id` through OpenSC and checks the signature with openssl
/// against the certificate OpenSC reads from the card; the certificate chains to `ca`.
fn opensc_signs_and_openssl_verifies(pcscd: &Pcscd, work: &Path, pin: &str, id: &str, ca: &Path) {
    let p = |n: &str| work.join(n).display().to_string();
    pcscd
        .tool(
            "pkcs11-tool",
            &[
                "--module",
                OPENSC_MODULE,
                "--login",
                "--pin",
                pin,
                "--sign",
                "--id",
                id,
                "--mechanism",
                "ECDSA",
                "--signature-format",
                "openssl",
                "-i",
                &p("data.hash"),
                "-o",
                &p(&format!("sig{id}")),
            ],
        )
        .expect_code(0);
    pcscd
        .tool(
            "pkcs11-tool",
            &[
                "--module",
                OPENSC_MODULE,
                "--read-object",
                "--type",
                "cert",
                "--id",
                id,
                "-o",
                &p(&format!("cert{id}.der")),
            ],
        )
        .expect_code(0);
    let ossl = |args: &[&str]| pcscd.tool("openssl", args);
    ossl(&[
        "x509",
        "-inform",
        "der",
        "-in",
        &p(&format!("cert{id}.der")),
        "-out",
        &p(&format!("cert{id}.pem")),
    ])
    .expect_code(0);
    ossl(&[
        "x509",
        "-in",
        &p(&format!("cert{id}.pem")),
        "-pubkey",
        "-noout",
        "-out",
        &p(&format!("pub{id}.pem")),
    ])
    .expect_code(0);
    ossl(&[
        "dgst",
        "-sha256",
        "-verify",
        &p(&format!("pub{id}.pem")),
        "-signature",
        &p(&format!("sig{id}")),
        &p("data"),
    ])
    .expect_code(0)
    .stdout_has("Verified OK");
    ossl(&[
        "verify",
        "-CAfile",
        &ca.display().to_string(),
        &p(&format!("cert{id}.pem")),
    ])
    .expect_code(0)
    .stdout_has(": OK");
}

/// VERIFY with a wrong PIN through opensc-tool; returns the status word OpenSC printed.
fn wrong_pin_status(pcscd: &Pcscd) -> String {
    let r = pcscd.tool(
        "opensc-tool",
        &[
            "-s",
            "00A4040005A000000308",
            "-s",
            "00200080083030303030303030",
        ],
    );
    r.stdout
        .lines()
        .rfind(|l| l.starts_with("Received"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn issuance_over_pcsc_then_opensc_signs_wrong_pin_blocks_and_puk_unblocks() {
    let mut pcscd = Pcscd::start();
    let card = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let _served = pcscd.vcard(card.path(), &[]);
    let reader = pcscd.wait_card(true);
    assert_eq!(reader["reader"], "Test VPCD 00 00");

    // The blank card is seen and offered to the stock; plan shows the issuance to it.
    let cards = pcscd.cards_json(Some(state.path()));
    let id = cards[0]["id"]
        .as_str()
        .expect("card identified")
        .to_string();
    assert!(id.starts_with("piv-"), "{id}");
    assert_eq!(cards[0]["blankForStock"], "blank-piv");
    kf(&pcscd, state.path(), &["plan"])
        .expect_code(2)
        .stdout_has(&id);

    let r = kf(&pcscd, state.path(), &["apply", "--yes"]);
    r.expect_code(0)
        .stdout_has("done    issue alice")
        .stdout_has("PC/SC: ");
    // Converged: a second pass has nothing to do.
    kf(&pcscd, state.path(), &["apply", "--yes"])
        .expect_code(0)
        .stdout_has("No changes");
    // The card now carries a CHUID with the GUID its id named, and the inventory knows it.
    let cards = pcscd.cards_json(Some(state.path()));
    assert_eq!(cards[0]["id"], id.as_str());
    assert_eq!(cards[0]["guid"], id.trim_start_matches("piv-"));
    assert_eq!(cards[0]["inventory"]["status"], "active");
    assert_eq!(cards[0]["inventory"]["user"], "alice");
    assert_eq!(
        cards[0]["certificateSlots"],
        serde_json::json!(["9A", "9C"])
    );

    // OpenSC lists both certificates Keyfleet wrote.
    let listing = pcscd.tool("pkcs11-tool", &["--module", OPENSC_MODULE, "-O"]);
    listing.expect_code(0);
    assert_eq!(
        listing.stdout.matches("Certificate Object").count(),
        2,
        "{}",
        listing.stdout
    );
    listing.stdout_has("CN=Alice Andersen");

    // Both keys sign through OpenSC (9C with its per-signature PIN) and openssl verifies
    // the signatures and the chain to the local CA.
    let ca = work.path().join("ca.pem");
    let ca_pem = kf(&pcscd, state.path(), &["ca", "cert", "piv-ca"]);
    ca_pem.expect_code(0);
    std::fs::write(&ca, &ca_pem.stdout).unwrap();
    std::fs::write(work.path().join("data"), b"signed through PC/SC\n").unwrap();
    use sha2::Digest as _;
    std::fs::write(
        work.path().join("data.hash"),
        sha2::Sha256::digest(b"signed through PC/SC\n"),
    )
    .unwrap();
    let pin = mailer_pin(state.path());
    opensc_signs_and_openssl_verifies(&pcscd, work.path(), &pin, "01", &ca);
    opensc_signs_and_openssl_verifies(&pcscd, work.path(), &pin, "02", &ca);

    // Wrong PINs decrement the counter down to blocked; then even the right PIN fails.
    assert!(wrong_pin_status(&pcscd).contains("SW1=0x63, SW2=0xC2"));
    assert!(wrong_pin_status(&pcscd).contains("SW1=0x63, SW2=0xC1"));
    assert!(wrong_pin_status(&pcscd).contains("SW1=0x63, SW2=0xC0"));
    assert!(wrong_pin_status(&pcscd).contains("SW1=0x69, SW2=0x83"));
    let blocked = pcscd.tool(
        "pkcs11-tool",
        &["--module", OPENSC_MODULE, "--login", "--pin", &pin, "-O"],
    );
    assert_ne!(blocked.code, Some(0), "login with a blocked PIN succeeded");

    // The operator unblocks with the stored PUK; the new PIN (mailer) signs again.
    kf(&pcscd, state.path(), &["cards", "unblock", &id])
        .expect_code(0)
        .stdout_has("had 0 tries left");
    let new_pin = mailer_pin(state.path());
    opensc_signs_and_openssl_verifies(&pcscd, work.path(), &new_pin, "02", &ca);
    // An unknown card cannot be unblocked.
    kf(&pcscd, state.path(), &["cards", "unblock", "piv-00"])
        .expect_code(1)
        .stderr_has("not in the inventory");
}

#[test]
fn card_pulled_mid_issuance_is_completed_when_it_comes_back() {
    let mut pcscd = Pcscd::start();
    let card = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    // The card is pulled after its 40th APDU: the first certificate is signed by the CA but
    // not yet written to the card.
    let mut served = pcscd.vcard(card.path(), &[("KEYFLEET_VCARD_EJECT_AFTER_APDUS", "40")]);
    pcscd.wait_card(true);
    let r = kf(&pcscd, state.path(), &["apply", "--yes"]);
    r.expect_code(1).stdout_has("FAILED  issue alice");
    assert_eq!(served.wait_exit(Duration::from_secs(10)), Some(0));
    pcscd.wait_card(false);
    // vpcd does not always recover from a card that vanished in the middle of an APDU:
    // pcscd's reader thread can stay stuck after its power-off (its log then shows no more
    // presence polls) and never sees the card again. Plug the reader back in, as one would a
    // USB reader, before the card returns.
    pcscd.restart();
    let plan = kf(&pcscd, state.path(), &["plan"]);
    plan.expect_code(2)
        .stdout_has("signed but not yet written")
        .stdout_has("[waiting for card]");

    // apply waits for the card; the card comes back; the pending work completes.
    let mut waiting = pcscd
        .command(env!("CARGO_BIN_EXE_keyfleet"))
        .args([
            "-C",
            &policy(),
            "--state-dir",
            &state.path().display().to_string(),
            "apply",
            "--yes",
            "--wait-for-cards",
            "30s",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start apply --wait-for-cards");
    // Insert only once apply is waiting (its first pass found nothing to run).
    let mut out = waiting.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&seen).contains("Waiting up to") {
        let mut buf = [0u8; 256];
        let n = out.read(&mut buf).expect("read apply output");
        assert!(
            n > 0 && Instant::now() < deadline,
            "apply did not wait: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    let _back = pcscd.vcard(card.path(), &[]);
    out.read_to_end(&mut seen).expect("read apply output");
    let status = waiting.wait().expect("apply ends");
    let text = String::from_utf8_lossy(&seen);
    assert!(status.success(), "apply --wait-for-cards failed:\n{text}");
    assert!(text.contains("Card inserted"), "{text}");
    assert!(text.contains("done    issue alice"), "{text}");
    assert!(
        text.contains("Applied: 2 done, 0 failed, 0 pending"),
        "{text}"
    );
    kf(&pcscd, state.path(), &["plan"])
        .expect_code(0)
        .stdout_has("No changes");
    let cards = pcscd.cards_json(Some(state.path()));
    assert_eq!(
        cards[0]["certificateSlots"],
        serde_json::json!(["9A", "9C"])
    );
}

/// A card that selects fine and then answers every command with a truncated TLV.
fn serve_garbage(addr: String) {
    let Ok(mut s) = (|| loop {
        if let Ok(s) = TcpStream::connect(&addr) {
            return Ok::<_, ()>(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    })() else {
        return;
    };
    loop {
        let mut len = [0u8; 2];
        if s.read_exact(&mut len).is_err() {
            return;
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if s.read_exact(&mut msg).is_err() {
            return;
        }
        let reply: Vec<u8> = match msg.as_slice() {
            [0x04] => vec![0x3B, 0x80, 0x80, 0x01, 0x01],
            [_] => continue,
            [_, 0xA4, ..] => vec![0x90, 0x00],
            _ => vec![0x53, 0x82, 0xFF, 0x70, 0x34, 0x90, 0x00],
        };
        let mut frame = (reply.len() as u16).to_be_bytes().to_vec();
        frame.extend_from_slice(&reply);
        if s.write_all(&frame).is_err() {
            return;
        }
    }
}

#[test]
fn a_card_answering_garbage_is_rejected_cleanly() {
    let mut pcscd = Pcscd::start();
    let state = tempfile::tempdir().unwrap();
    let addr = pcscd.vpcd();
    std::thread::spawn(move || serve_garbage(addr));
    let reader = pcscd.wait_card(true);
    assert!(reader["id"].is_null(), "{reader}");
    let error = reader["error"].as_str().expect("an identification error");
    assert!(error.contains("not a usable PIV card"), "{error}");
    // apply does not touch it: the issuance waits for a usable blank card.
    let r = kf(&pcscd, state.path(), &["apply", "--yes"]);
    r.expect_code(0).stdout_has("waiting for a blank card");
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

/// Every `serial` field anywhere in a JSON document (the local CA's database).
fn serials_in(v: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(serde_json::Value::String(s)) = m.get("serial") {
                out.insert(s.clone());
            }
            m.values().for_each(|x| serials_in(x, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| serials_in(x, out)),
        _ => {}
    }
}

#[test]
fn crash_at_any_journal_step_of_a_pcsc_issuance_recovers_without_duplicates() {
    // Over PC/SC the issuance's journal, enrolments and records are written by a thread beside
    // the card's. The process is stopped after each journal step in turn (whichever thread
    // wrote it); a plain apply then completes the card, and every certificate the CA signed is
    // tracked exactly once.
    let mut pcscd = Pcscd::start();
    let mut interrupted = 0;
    for step in 1..=14 {
        let card = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let served = pcscd.vcard(card.path(), &[]);
        pcscd.wait_card(true);
        let (policy, dir) = (policy(), state.path().display().to_string());
        let step_text = step.to_string();
        let r = pcscd.keyfleet_env(
            &["-C", &policy, "--state-dir", &dir, "apply", "--yes"],
            &[("KEYFLEET_CRASH_AFTER_STEP", &step_text)],
        );
        let finished = r.code == Some(0);
        if !finished {
            assert!(
                r.crashed_at_crash_point(),
                "step {step}: {:?}\n{}\n{}",
                r.code,
                r.stdout,
                r.stderr
            );
            interrupted += 1;
            let again = kf(&pcscd, state.path(), &["apply", "--yes"]);
            assert_eq!(again.code, Some(0), "step {step}: {again:?}");
        }
        kf(&pcscd, state.path(), &["plan"])
            .expect_code(0)
            .stdout_has("No changes");
        let inv: serde_json::Value = serde_json::from_str(
            &kf(&pcscd, state.path(), &["inventory", "--format", "json"]).stdout,
        )
        .expect("inventory JSON");
        let tracked: std::collections::BTreeSet<String> = inv["certificates"]
            .as_array()
            .expect("certificates")
            .iter()
            .map(|c| c["serial"].as_str().unwrap_or_default().to_string())
            .collect();
        let db: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(state.path().join("ca/piv-ca/db.json")).unwrap(),
        )
        .unwrap();
        let mut signed = std::collections::BTreeSet::new();
        serials_in(&db, &mut signed);
        assert_eq!(signed, tracked, "step {step}: CA and inventory disagree");
        assert_eq!(tracked.len(), 2, "step {step}: {tracked:?}");
        let cards = pcscd.cards_json(Some(state.path()));
        assert_eq!(
            cards[0]["certificateSlots"],
            serde_json::json!(["9A", "9C"]),
            "step {step}"
        );
        drop(served);
        pcscd.wait_card(false);
        if finished {
            break;
        }
        // A fresh reader for the next card: vpcd does not always see a new card after a
        // client died holding a connection (see `card_pulled_mid_issuance_...`).
        pcscd.restart();
    }
    assert!(
        interrupted >= 8,
        "only {interrupted} journal steps were interrupted"
    );
}

/// A copy of the `examples/piv` policy in `dir`, to edit.
pub(crate) fn policy_copy(dir: &Path) -> std::path::PathBuf {
    let to = dir.join("policy");
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(repo_root().join("examples/piv")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    to
}

/// `keyfleet` with the policy in `policy` and the state in `state`.
pub(crate) fn kfp(
    pcscd: &Pcscd,
    policy: &Path,
    state: &Path,
    args: &[&str],
) -> crate::harness::Run {
    let (policy, state) = (policy.display().to_string(), state.display().to_string());
    let mut all = vec!["-C", policy.as_str(), "--state-dir", state.as_str()];
    all.extend_from_slice(args);
    pcscd.keyfleet(&all)
}

/// A template change that makes Keyfleet reissue both slots (which needs the PIN).
fn change_subject(policy: &Path) {
    let template = policy.join("template.yaml");
    let text = std::fs::read_to_string(&template).unwrap();
    std::fs::write(&template, text.replace("OU=Employees", "OU=Staff")).unwrap();
}

/// A PIN or PUK as the card wants it: ASCII, padded with FF to 8 bytes, in hex.
pub(crate) fn pin_hex(pin: &str) -> String {
    let mut b = pin.as_bytes().to_vec();
    b.resize(8, 0xFF);
    hex::encode_upper(b)
}

/// Sends `apdu` (hex) to the card after selecting PIV; returns OpenSC's last "Received" line.
pub(crate) fn send_apdu(pcscd: &Pcscd, apdu: &str) -> String {
    let r = pcscd.tool("opensc-tool", &["-s", "00A4040005A000000308", "-s", apdu]);
    r.stdout
        .lines()
        .rfind(|l| l.starts_with("Received"))
        .unwrap_or_default()
        .to_string()
}

/// The VERIFY status form: how many PIN tries the card has left, as OpenSC printed it.
pub(crate) fn pin_tries(pcscd: &Pcscd) -> String {
    send_apdu(pcscd, "00200080")
}

#[test]
fn a_holder_who_changed_the_pin_gets_no_blocked_card_and_no_mismatched_slot() {
    // Issue 14, point 1: issue, the holder changes the PIN (as the PIN mailer tells them to),
    // the template's subject changes, apply runs three times.
    let mut pcscd = Pcscd::start();
    let card = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let policy = policy_copy(work.path());
    let _served = pcscd.vcard(card.path(), &[]);
    pcscd.wait_card(true);
    kfp(&pcscd, &policy, state.path(), &["apply", "--yes"]).expect_code(0);
    let id = pcscd.cards_json(Some(state.path()))[0]["id"]
        .as_str()
        .expect("card identified")
        .to_string();
    let mailed = mailer_pin(state.path());
    let holder_pin = if mailed == "246813" {
        "135792"
    } else {
        "246813"
    };
    let changed = send_apdu(
        &pcscd,
        &format!("0024008010{}{}", pin_hex(&mailed), pin_hex(holder_pin)),
    );
    assert!(changed.contains("SW1=0x90, SW2=0x00"), "{changed}");

    change_subject(&policy);
    let runs: Vec<_> = (0..3)
        .map(|_| kfp(&pcscd, &policy, state.path(), &["apply", "--yes"]))
        .collect();

    // The card refused the stored PIN once at most: the holder's PIN has 2 of its 3 tries.
    let tries = pin_tries(&pcscd);
    assert!(tries.contains("SW1=0x63, SW2=0xC2"), "{tries}\n{runs:?}");
    // Every slot's key still matches its certificate: the holder's PIN signs with both keys
    // and the signatures verify against the certificates on the card.
    let ca = work.path().join("ca.pem");
    let ca_pem = kfp(&pcscd, &policy, state.path(), &["ca", "cert", "piv-ca"]);
    std::fs::write(&ca, &ca_pem.expect_code(0).stdout).unwrap();
    std::fs::write(work.path().join("data"), b"signed through PC/SC\n").unwrap();
    use sha2::Digest as _;
    std::fs::write(
        work.path().join("data.hash"),
        sha2::Sha256::digest(b"signed through PC/SC\n"),
    )
    .unwrap();
    opensc_signs_and_openssl_verifies(&pcscd, work.path(), holder_pin, "01", &ca);
    opensc_signs_and_openssl_verifies(&pcscd, work.path(), holder_pin, "02", &ca);

    // apply left the reissue pending for the holder, and failed nothing.
    for r in &runs {
        r.expect_code(0);
    }
    runs[0]
        .stdout_has("Applied: 0 done, 0 failed, 2 pending")
        .stdout_has("waiting for the holder");
    runs[2].stdout_has("[waiting for the holder]");
    // plan shows both reissues waiting for the holder, and exits 2 (changes pending).
    let plan = kfp(&pcscd, &policy, state.path(), &["plan", "--format", "json"]);
    plan.expect_code(2);
    let plan: serde_json::Value = serde_json::from_str(&plan.stdout).expect("plan JSON");
    let actions = plan["actions"].as_array().expect("actions");
    assert_eq!(actions.len(), 2, "{plan}");
    for a in actions {
        assert_eq!(a["card"], id.as_str(), "{a}");
        assert_eq!(a["waitingForHolder"], true, "{a}");
        assert_eq!(a["reason"], "holder-pin-unknown", "{a}");
    }
    // Nothing was signed under the new subject: the CA was never asked.
    let inv = kfp(&pcscd, &policy, state.path(), &["inventory"]);
    assert!(
        !inv.expect_code(0).stdout.contains("OU=Staff"),
        "{}",
        inv.stdout
    );
}

/// A factory-fresh virtual card in `dir` (as `keyfleet vcard serve` keeps it) whose CHUID
/// shows `guid`: a card that was reset, or a clone of a personalised one.
fn clone_with_guid(dir: &Path, guid: [u8; 16]) {
    use keyfleet::card::keys::ManagementKey;
    use keyfleet::card::piv::PivClient;
    use keyfleet::card::transport::InProcess;
    use keyfleet::card::vcard::VirtualCard;
    let vc = VirtualCard::create(dir.join("card.json")).expect("create the clone");
    let mut c = PivClient::new(InProcess::new(vc));
    c.select().unwrap();
    c.authenticate(&ManagementKey::factory_default()).unwrap();
    c.write_chuid(guid, "20361231").unwrap();
}

#[test]
fn a_card_showing_a_known_guid_but_taking_the_factory_key_is_suspect_and_gets_nothing() {
    // Issue 14, point 7.
    let mut pcscd = Pcscd::start();
    let card = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let policy = policy_copy(work.path());
    let served = pcscd.vcard(card.path(), &[]);
    pcscd.wait_card(true);
    kfp(&pcscd, &policy, state.path(), &["apply", "--yes"]).expect_code(0);
    let id = pcscd.cards_json(Some(state.path()))[0]["id"]
        .as_str()
        .expect("card identified")
        .to_string();
    drop(served);
    pcscd.wait_card(false);
    pcscd.restart();

    // Another card, in factory state, shows the GUID of alice's card.
    let clone = tempfile::tempdir().unwrap();
    let guid: [u8; 16] = hex::decode(id.trim_start_matches("piv-"))
        .unwrap()
        .try_into()
        .unwrap();
    clone_with_guid(clone.path(), guid);
    let before = std::fs::read(clone.path().join("card.json")).unwrap();
    let _clone = pcscd.vcard(clone.path(), &[]);
    pcscd.wait_card(true);
    assert_eq!(pcscd.cards_json(Some(state.path()))[0]["id"], id.as_str());

    // A reissue needs the card (new keys, the PIN): Keyfleet sends it nothing, writes nothing.
    change_subject(&policy);
    let runs: Vec<_> = (0..2)
        .map(|_| kfp(&pcscd, &policy, state.path(), &["apply", "--yes"]))
        .collect();
    let after = std::fs::read(clone.path().join("card.json")).unwrap();
    assert!(
        before == after,
        "the clone was changed (PIN tried, key made or object written)\n{runs:?}"
    );
    let tries = pin_tries(&pcscd);
    assert!(tries.contains("SW1=0x63, SW2=0xC3"), "{tries}");

    // The card is suspect: `keyfleet cards`, the plan and the history say so.
    let cards = pcscd.cards_json(Some(state.path()));
    assert_eq!(cards[0]["inventory"]["status"], "suspect", "{cards}");
    runs[0].stdout_has("suspect");
    let plan = kfp(&pcscd, &policy, state.path(), &["plan", "--format", "json"]);
    let plan: serde_json::Value = serde_json::from_str(&plan.stdout).expect("plan JSON");
    let actions = plan["actions"].as_array().expect("actions");
    assert!(!actions.is_empty(), "{plan}");
    for a in actions {
        assert_eq!(a["reason"], "card-suspect", "{a}");
    }
    let history = kfp(&pcscd, &policy, state.path(), &["history"]);
    assert!(
        history.stdout.contains("cannot prove the management key"),
        "{}",
        history.stdout
    );
}

/// `examples/piv` in `dir` with `vendor: yubico`, 5 PIN tries and 4 PUK tries (set on the
/// card at personalisation, so the counters read back differ from the factory 3).
pub(crate) fn yubico_retries_policy(dir: &Path) -> std::path::PathBuf {
    let policy = policy_copy(dir);
    let template = policy.join("template.yaml");
    let text = std::fs::read_to_string(&template).unwrap();
    std::fs::write(
        &template,
        text.replace(
            "  pinPolicy: {length: 6, retries: 3}\n",
            "  vendor: yubico\n  pinPolicy: {length: 6, retries: 5}\n  pukPolicy: {retries: 4}\n",
        ),
    )
    .unwrap();
    policy
}

/// The first reader's row of `keyfleet cards --format json`.
fn card_row(pcscd: &Pcscd, policy: &Path, state: &Path) -> serde_json::Value {
    let r = kfp(pcscd, policy, state, &["cards", "--format", "json"]);
    let rows: serde_json::Value = serde_json::from_str(&r.expect_code(0).stdout).expect("JSON");
    rows[0].clone()
}

#[test]
fn cards_shows_the_tries_left_a_blocked_puk_and_refuses_a_lost_card() {
    // Issue 16, point 5 (last bullet) and point 1 (a lost card that shows up is refused).
    let mut pcscd = Pcscd::start();
    let card = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let policy = yubico_retries_policy(work.path());
    let _served = pcscd.vcard(card.path(), &[]);
    pcscd.wait_card(true);
    kfp(&pcscd, &policy, state.path(), &["apply", "--yes"]).expect_code(0);
    let row = card_row(&pcscd, &policy, state.path());
    let id = row["id"].as_str().expect("card identified").to_string();
    assert_eq!(
        (row["pinTriesLeft"].clone(), row["pukTriesLeft"].clone()),
        (5.into(), 4.into()),
        "{row}"
    );

    // One wrong PIN (8 characters: never the 6-digit PIN Keyfleet set) spends one try.
    let wrong = send_apdu(&pcscd, &format!("0020008008{}", pin_hex("00000000")));
    assert!(wrong.contains("SW1=0x63, SW2=0xC4"), "{wrong}");
    // Reading the counters spends nothing: twice the same answer, and the card agrees.
    for _ in 0..2 {
        let row = card_row(&pcscd, &policy, state.path());
        assert_eq!(row["pinTriesLeft"], 4, "{row}");
        assert_eq!(row["pukTriesLeft"], 4, "{row}");
        assert_eq!(row["pinBlocked"], false, "{row}");
        assert_eq!(row["pukBlocked"], false, "{row}");
        assert_eq!(row["refused"], serde_json::Value::Null, "{row}");
    }
    assert!(pin_tries(&pcscd).contains("SW1=0x63, SW2=0xC4"));
    kfp(&pcscd, &policy, state.path(), &["cards"])
        .expect_code(0)
        .stdout_has("tries    PIN 4 left, PUK 4 left");

    // Wrong PUKs in RESET RETRY COUNTER block the PUK.
    for left in (0..4).rev() {
        let r = send_apdu(
            &pcscd,
            &format!("002C008010{}{}", pin_hex("00000000"), pin_hex("123456")),
        );
        assert!(r.contains(&format!("SW1=0x63, SW2=0xC{left}")), "{r}");
    }
    let row = card_row(&pcscd, &policy, state.path());
    assert_eq!(row["pukBlocked"], true, "{row}");
    assert_eq!(row["pukTriesLeft"], 0, "{row}");
    assert_eq!(row["pinTriesLeft"], 4, "{row}");
    kfp(&pcscd, &policy, state.path(), &["cards"])
        .expect_code(0)
        .stdout_has("tries    PIN 4 left, PUK blocked")
        .stdout_has(&format!(
            "PUK blocked: this card can only be retired and replaced (keyfleet cards report {id} --damaged)"
        ));

    // Reported lost, the card in the reader is refused, and apply revokes its certificates
    // without touching it.
    kfp(
        &pcscd,
        &policy,
        state.path(),
        &["cards", "report", &id, "--lost"],
    )
    .expect_code(0);
    let row = card_row(&pcscd, &policy, state.path());
    assert_eq!(row["refused"], "lost", "{row}");
    assert_eq!(row["inventory"]["status"], "lost", "{row}");
    kfp(&pcscd, &policy, state.path(), &["apply", "--yes"])
        .expect_code(0)
        .stdout_has("done    revoke alice");
    let row = card_row(&pcscd, &policy, state.path());
    assert_eq!(row["refused"], "lost", "{row}");
    assert_eq!(
        row["certificateSlots"],
        serde_json::json!(["9A", "9C"]),
        "{row}"
    );
    kfp(&pcscd, &policy, state.path(), &["cards"])
        .expect_code(0)
        .stdout_has(&format!(
            "REFUSED  reported lost: Keyfleet never uses it; keyfleet cards retire {id} --found-lost wipes it back to stock"
        ));
}

/// Runs `keyfleet ARGS` against `pcscd` under a pseudo-terminal (python3's `pty`), typing
/// each of `typed` after each `PIN of card` prompt (never before: the prompt discards what
/// was typed ahead). Returns the exit code and everything the terminal showed.
fn keyfleet_on_a_terminal(pcscd: &Pcscd, args: &[&str], typed: &[&str]) -> (Option<i32>, String) {
    const DRIVER: &str = r#"
import os, pty, sys
answers = [l.rstrip("\n") for l in sys.stdin.readlines()]
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
out, prompts = b"", 0
while True:
    try:
        data = os.read(fd, 4096)
    except OSError:
        break
    if not data:
        break
    out += data
    while out.count(b"PIN of card") > prompts:
        answer = answers[prompts] if prompts < len(answers) else ""
        os.write(fd, answer.encode() + b"\n")
        prompts += 1
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let mut c = pcscd.command("python3");
    c.arg("-c")
        .arg(DRIVER)
        .arg(env!("CARGO_BIN_EXE_keyfleet"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("python3");
    let mut input = typed.join("\n");
    input.push('\n');
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

/// Every file under `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                found.push(path);
            }
        }
    }
    found
}

/// The serials of the live certificates the inventory records for `card`.
fn live_serials(pcscd: &Pcscd, policy: &Path, state: &Path) -> std::collections::BTreeSet<String> {
    let r = kfp(pcscd, policy, state, &["cards", "--format", "json"]);
    let rows: serde_json::Value = serde_json::from_str(&r.expect_code(0).stdout).unwrap();
    rows[0]["inventory"]["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn apply_with_the_holder_pin_runs_the_reissue_that_waited_for_the_holder() {
    // Issue 16, point 6: the holder changed the PIN, a reissue waits for them; at the
    // station they type it and the reissue runs with it. A PIN the card refuses fails the
    // reissue and changes nothing Keyfleet knows. The PIN lands nowhere.
    let mut pcscd = Pcscd::start();
    let card = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // 5 PIN tries: after Keyfleet's one refused try and a wrong one of the holder, 3 are left.
    let policy = yubico_retries_policy(work.path());
    let _served = pcscd.vcard(card.path(), &[]);
    pcscd.wait_card(true);
    kfp(&pcscd, &policy, state.path(), &["apply", "--yes"]).expect_code(0);
    let id = pcscd.cards_json(Some(state.path()))[0]["id"]
        .as_str()
        .expect("card identified")
        .to_string();
    let mailed = mailer_pin(state.path());
    let holder_pin = "h0ld3rPn";
    let changed = send_apdu(
        &pcscd,
        &format!("0024008010{}{}", pin_hex(&mailed), pin_hex(holder_pin)),
    );
    assert!(changed.contains("SW1=0x90, SW2=0x00"), "{changed}");
    change_subject(&policy);
    kfp(&pcscd, &policy, state.path(), &["apply", "--yes"])
        .expect_code(0)
        .stdout_has("waiting for the holder");
    let before = live_serials(&pcscd, &policy, state.path());
    assert_eq!(before.len(), 2, "{before:?}");

    let (policy_s, state_s) = (
        policy.display().to_string(),
        state.path().display().to_string(),
    );
    let apply = [
        "-C",
        policy_s.as_str(),
        "--state-dir",
        state_s.as_str(),
        "apply",
        "--holder-pin",
        "--yes",
    ];
    // Without a terminal, --holder-pin refuses.
    kfp(
        &pcscd,
        &policy,
        state.path(),
        &["apply", "--holder-pin", "--yes"],
    )
    .expect_code(1)
    .stderr_has("--holder-pin needs a terminal");

    // A wrong PIN: refused by the card, the reissue fails, the tries left are said, and
    // nothing else changed (still waiting for the holder, same certificates).
    let (code, shown) = keyfleet_on_a_terminal(&pcscd, &apply, &["wr0ngPIN"]);
    assert_eq!(code, Some(1), "{shown}");
    assert!(
        shown.contains(&format!("PIN of card {id} (holder alice): ")),
        "{shown}"
    );
    assert!(
        shown.contains("the card refused the PIN the holder typed (3 tries left)"),
        "{shown}"
    );
    assert!(!shown.contains("wr0ngPIN"), "{shown}");
    assert_eq!(live_serials(&pcscd, &policy, state.path()), before);
    let plan = kfp(&pcscd, &policy, state.path(), &["plan", "--format", "json"]);
    let plan: serde_json::Value = serde_json::from_str(&plan.expect_code(2).stdout).unwrap();
    for a in plan["actions"].as_array().unwrap() {
        assert_eq!(a["waitingForHolder"], true, "{a}");
        assert_eq!(a["reason"], "holder-pin-unknown", "{a}");
    }

    // The holder's PIN: both slots reissued, under the new subject, on the card.
    let (code, shown) = keyfleet_on_a_terminal(&pcscd, &apply, &[holder_pin]);
    assert_eq!(code, Some(0), "{shown}");
    assert!(shown.contains("done    reissue alice"), "{shown}");
    assert!(shown.contains("Applied: 2 done, 0 failed"), "{shown}");
    assert!(!shown.contains(holder_pin), "{shown}");
    let after = live_serials(&pcscd, &policy, state.path());
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.is_disjoint(&before), "{before:?} {after:?}");
    let listing = pcscd.tool("pkcs11-tool", &["--module", OPENSC_MODULE, "-O"]);
    listing.expect_code(0).stdout_has("OU=Staff");
    assert!(
        !listing.stdout.contains("OU=Employees"),
        "{}",
        listing.stdout
    );
    let ca = work.path().join("ca.pem");
    let ca_pem = kfp(&pcscd, &policy, state.path(), &["ca", "cert", "piv-ca"]);
    std::fs::write(&ca, &ca_pem.expect_code(0).stdout).unwrap();
    std::fs::write(work.path().join("data"), b"signed through PC/SC\n").unwrap();
    use sha2::Digest as _;
    std::fs::write(
        work.path().join("data.hash"),
        sha2::Sha256::digest(b"signed through PC/SC\n"),
    )
    .unwrap();
    opensc_signs_and_openssl_verifies(&pcscd, work.path(), holder_pin, "01", &ca);
    opensc_signs_and_openssl_verifies(&pcscd, work.path(), holder_pin, "02", &ca);
    // Keyfleet still does not know the PIN: nothing more to do until the next renewal.
    kfp(&pcscd, &policy, state.path(), &["plan"])
        .expect_code(0)
        .stdout_has("No changes");

    // The PIN is nowhere in the state directory (store, journal, audit log, PIN mailers).
    for pin in [holder_pin, "wr0ngPIN"] {
        let found = files_containing(state.path(), pin.as_bytes());
        assert!(found.is_empty(), "{pin} found in {found:?}");
    }
    let audit = kfp(&pcscd, &policy, state.path(), &["audit-log", "show"]);
    assert!(!audit.stdout.contains(holder_pin), "{}", audit.stdout);
}
