//! The key history on a PIV card end to end (issue 17 point 2), over pcscd + vpcd, the virtual
//! card and OpenSC: the `examples/piv` policy plus a server-generated, archived RSA-2048 9D
//! slot (the template keeps the default `keyHistory` of 3). A CMS message is encrypted to the
//! 9D certificate; each reissue of 9D (one `apply`: the reissue, then `key-history`) moves the
//! previous keys into the retired slots 82, 83, … newest first, where OpenSC decrypts the old
//! message with them; a replacement card after a lost one gets the whole history back from the
//! archive, the lost card's current key included; a reissue on it keeps only the three newest.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::harness::Run;
use crate::harness::pcscd::{OPENSC_MODULE, Pcscd};
use crate::incidents_pcsc::newest_pin;
use crate::piv::{kfp, policy_copy};

/// Where one test keeps its policy, state and scratch files.
struct Dirs {
    policy: PathBuf,
    state: PathBuf,
    work: PathBuf,
}

impl Dirs {
    fn kf(&self, pcscd: &Pcscd, args: &[&str]) -> Run {
        kfp(pcscd, &self.policy, &self.state, args)
    }

    /// `keyfleet ARGS` that must exit `code`, as JSON.
    fn json(&self, pcscd: &Pcscd, code: i32, args: &[&str]) -> Value {
        let r = self.kf(pcscd, args);
        r.expect_code(code);
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
    }

    fn w(&self, name: &str) -> String {
        self.work.join(name).display().to_string()
    }
}

/// The `examples/piv` policy with an archived, server-generated RSA-2048 encryption slot whose
/// subject carries a generation number (changed to reissue the slot).
fn policy_with_archived_9d(dir: &Path) -> PathBuf {
    let policy = policy_copy(dir);
    let template = policy.join("template.yaml");
    let mut text = std::fs::read_to_string(&template).unwrap();
    text.push_str(
        "    - name: encryption
      slot: 9D
      authority: piv-ca
      profile: piv-key-management
      keyAlgorithm: rsa-2048
      keyGeneration: server
      archive: true
      subject: \"CN=${user.cn},OU=Encryption 0,O=Example\"
      validity: 1y
      renewBefore: 30d
",
    );
    std::fs::write(&template, text).unwrap();
    policy
}

/// The active 9D certificate of `card` in the inventory: (serial, PEM).
fn active_9d(inv: &Value, card: &str) -> (String, String) {
    let c = inv["certificates"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|c| c["card"] == card && c["slot"] == "9D" && c["status"] == "active")
        })
        .unwrap_or_else(|| panic!("no active 9D certificate on {card}: {inv:#}"));
    (
        c["serial"].as_str().expect("serial").to_string(),
        c["pem"].as_str().expect("pem").to_string(),
    )
}

/// `openssl ARGS`, which must succeed.
fn ossl(pcscd: &Pcscd, args: &[&str]) {
    pcscd.tool("openssl", args).expect_code(0);
}

/// Encrypts `text` with `openssl cms -encrypt` to the certificate `pem`; the message's path.
fn encrypt_to(pcscd: &Pcscd, d: &Dirs, name: &str, pem: &str, text: &str) -> PathBuf {
    std::fs::write(d.w(&format!("{name}.pem")), pem).unwrap();
    std::fs::write(d.w(&format!("{name}.txt")), text).unwrap();
    ossl(
        pcscd,
        &[
            "cms",
            "-encrypt",
            "-aes-256-cbc",
            "-binary",
            "-in",
            &d.w(&format!("{name}.txt")),
            "-outform",
            "DER",
            "-out",
            &d.w(&format!("{name}.cms")),
            &d.w(&format!("{name}.pem")),
        ],
    );
    PathBuf::from(d.w(&format!("{name}.cms")))
}

/// Decrypts `cms` with the card's key `id` through OpenSC (see
/// [`crate::piv_retired::decrypt_on_card`]).
fn decrypt_on_card(pcscd: &Pcscd, d: &Dirs, cms: &Path, pin: &str, id: &str) -> String {
    crate::piv_retired::decrypt_on_card(pcscd, &d.work, cms, pin, id)
}

/// The OpenSC object id of the n-th retired key-management key (1 = slot 82 = id 05).
fn retired_id(n: usize) -> String {
    format!("{:02x}", 4 + n)
}

/// The retired slots `keyfleet cards` lists for the card in the reader: (slot, serial).
fn retired_slots(pcscd: &Pcscd, d: &Dirs) -> Vec<(String, String)> {
    let cards = pcscd.cards_json(Some(&d.state));
    cards[0]["retiredSlots"]
        .as_array()
        .unwrap_or_else(|| panic!("no retiredSlots: {cards:#}"))
        .iter()
        .map(|r| {
            (
                r["slot"].as_str().unwrap_or_default().to_string(),
                r["serial"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn expected(serials: &[&str]) -> Vec<(String, String)> {
    serials
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("{:X}", 0x82 + i), s.to_string()))
        .collect()
}

/// Changes the 9D subject to generation `generation`, checks the plan (the reissue of 9D, then
/// `key-history` with `history`), applies it in one run and returns the new 9D serial.
fn reissue_9d(pcscd: &Pcscd, d: &Dirs, card: &str, generation: u32, history: &[&str]) -> String {
    let template = d.policy.join("template.yaml");
    let text = std::fs::read_to_string(&template).unwrap();
    let (from, to) = (
        format!("OU=Encryption {}", generation - 1),
        format!("OU=Encryption {generation}"),
    );
    assert!(text.contains(&from), "{text}");
    std::fs::write(&template, text.replace(&from, &to)).unwrap();
    let plan = d.json(pcscd, 2, &["plan", "--format", "json"]);
    let actions = plan["actions"].as_array().expect("actions");
    let reissue = actions
        .iter()
        .position(|a| a["kind"] == "reissue" && a["card"] == card && a["slot"] == "9D")
        .unwrap_or_else(|| panic!("no reissue of 9D: {plan:#}"));
    let kh = actions
        .iter()
        .position(|a| a["kind"] == "key-history" && a["reason"] == "key-history")
        .unwrap_or_else(|| panic!("no key-history action: {plan:#}"));
    assert!(reissue < kh, "key-history before the reissue: {plan:#}");
    assert_eq!(actions[kh]["card"], card, "{plan:#}");
    assert_eq!(
        actions[kh]["serials"],
        serde_json::json!(history),
        "{plan:#}"
    );
    d.kf(pcscd, &["apply", "--yes"])
        .expect_code(0)
        .stdout_has("reissue alice");
    d.kf(pcscd, &["plan"]).expect_code(0);
    let inv = d.json(pcscd, 0, &["inventory", "--format", "json"]);
    active_9d(&inv, card).0
}

#[test]
fn previous_encryption_keys_go_to_the_retired_slots_and_follow_a_replacement_card() {
    let mut pcscd = Pcscd::start();
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (state, work) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let d = Dirs {
        policy: policy_with_archived_9d(work.path()),
        state: state.path().to_path_buf(),
        work: work.path().to_path_buf(),
    };

    // 1. Issued with an archived 9D key; a message to its certificate.
    let served = pcscd.vcard(first.path(), &[]);
    pcscd.wait_card(true);
    d.kf(&pcscd, &["apply", "--yes"])
        .expect_code(0)
        .stdout_has("done    issue alice");
    let card = pcscd.cards_json(Some(&d.state))[0]["id"]
        .as_str()
        .expect("card id")
        .to_string();
    let inv = d.json(&pcscd, 0, &["inventory", "--format", "json"]);
    let (s0, pem0) = active_9d(&inv, &card);
    assert_eq!(retired_slots(&pcscd, &d), expected(&[]));
    let text0 = "mail to the first encryption certificate\n";
    let msg0 = encrypt_to(&pcscd, &d, "msg0", &pem0, text0);
    let pin = newest_pin(&d.state);

    // 2. The 9D slot is reissued: its previous key goes to 82, and decrypts the old message.
    let s1 = reissue_9d(&pcscd, &d, &card, 1, &[&s0]);
    assert_ne!(s1, s0);
    assert_eq!(retired_slots(&pcscd, &d), expected(&[&s0]));
    let listing = pcscd.tool(
        "pkcs11-tool",
        &["--module", OPENSC_MODULE, "--list-objects"],
    );
    listing.expect_code(0);
    listing.stdout_has("Retired KEY MAN 1");
    assert_eq!(
        decrypt_on_card(&pcscd, &d, &msg0, &pin, &retired_id(1)),
        text0
    );
    // The new 9D key (OpenSC id 03) decrypts a message to the new certificate.
    let inv = d.json(&pcscd, 0, &["inventory", "--format", "json"]);
    let (_, pem1) = active_9d(&inv, &card);
    let text1 = "mail to the second encryption certificate\n";
    let msg1 = encrypt_to(&pcscd, &d, "msg1", &pem1, text1);
    assert_eq!(decrypt_on_card(&pcscd, &d, &msg1, &pin, "03"), text1);

    // 3. A second reissue: two previous keys, newest first.
    let s2 = reissue_9d(&pcscd, &d, &card, 2, &[&s1, &s0]);
    assert_eq!(retired_slots(&pcscd, &d), expected(&[&s1, &s0]));
    assert_eq!(
        decrypt_on_card(&pcscd, &d, &msg0, &pin, &retired_id(2)),
        text0
    );
    assert_eq!(
        decrypt_on_card(&pcscd, &d, &msg1, &pin, &retired_id(1)),
        text1
    );

    // 4. The card is lost: its certificates are revoked; a blank card in the reader becomes
    // its replacement, with the history back from the archive (the lost card's key first).
    d.kf(&pcscd, &["cards", "report", &card, "--lost"])
        .expect_code(0);
    drop(served);
    pcscd.wait_card(false);
    d.kf(&pcscd, &["apply", "--yes"]).expect_code(0);
    let inv = d.json(&pcscd, 0, &["inventory", "--format", "json"]);
    let lost_certs: Vec<&Value> = inv["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .filter(|c| c["card"] == card.as_str() && c["status"] == "active")
        .collect();
    assert!(lost_certs.is_empty(), "{inv:#}");
    pcscd.restart();
    let _served = pcscd.vcard(second.path(), &[]);
    pcscd.wait_card(true);
    let plan = d.json(&pcscd, 2, &["plan", "--format", "json"]);
    assert!(
        plan["actions"]
            .as_array()
            .expect("actions")
            .iter()
            .any(|a| a["kind"] == "issue" && a["reason"] == "replaces-lost"),
        "{plan:#}"
    );
    d.kf(&pcscd, &["apply", "--yes"]).expect_code(0);
    let new = pcscd.cards_json(Some(&d.state))[0]["id"]
        .as_str()
        .expect("card id")
        .to_string();
    assert_ne!(new, card);
    let inv = d.json(&pcscd, 0, &["inventory", "--format", "json"]);
    let (s3, _) = active_9d(&inv, &new);
    assert!(![&s0, &s1, &s2].contains(&&s3), "{inv:#}");
    assert_eq!(retired_slots(&pcscd, &d), expected(&[&s2, &s1, &s0]));
    d.kf(&pcscd, &["plan"]).expect_code(0);
    let pin = newest_pin(&d.state);
    let listing = pcscd.tool(
        "pkcs11-tool",
        &["--module", OPENSC_MODULE, "--list-objects"],
    );
    listing.expect_code(0);
    listing.stdout_has("Retired KEY MAN 3");
    assert_eq!(
        decrypt_on_card(&pcscd, &d, &msg0, &pin, &retired_id(3)),
        text0
    );

    // 5. A reissue on the replacement card: keyHistory 3 keeps the three newest previous keys
    // (the first one leaves the card; the archive still has it).
    reissue_9d(&pcscd, &d, &new, 3, &[&s3, &s2, &s1]);
    assert_eq!(retired_slots(&pcscd, &d), expected(&[&s3, &s2, &s1]));
    let listing = pcscd.tool(
        "pkcs11-tool",
        &["--module", OPENSC_MODULE, "--list-objects"],
    );
    listing.expect_code(0);
    listing.stdout_has("Retired KEY MAN 3");
    assert!(
        !listing.stdout.contains("Retired KEY MAN 4"),
        "{}",
        listing.stdout
    );
    assert_eq!(
        decrypt_on_card(&pcscd, &d, &msg1, &pin, &retired_id(3)),
        text1
    );
    let keys = d.json(
        &pcscd,
        0,
        &["keys", "list", "--user", "alice", "--format", "json"],
    );
    assert_eq!(keys.as_array().map(Vec::len), Some(5), "{keys:#}");
}
