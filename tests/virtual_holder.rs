//! The holder's PIN on Keyfleet's virtual cards (card type `virtual`, files in the state
//! directory): a PIN the holder changed is tried once at most, the work then waits for the
//! holder, and no slot is touched (issue 14, point 1); the template's PIN and PUK retries are
//! the card's (point 10c).

use std::path::{Path, PathBuf};
use std::process::Command;

use keyfleet::card::piv::{PinStatus, PivClient};
use keyfleet::card::transport::InProcess;
use keyfleet::card::vcard::VirtualCard;
use serde_json::Value;

use crate::harness::{Run, repo_root};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn keyfleet(policy: &Path, state: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_keyfleet"))
        .arg("-C")
        .arg(policy)
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("KEYFLEET_STATE_DIR")
        .env_remove("KEYFLEET_CRASH_AFTER_STEP")
        .env_remove("KEYFLEET_MASTER_KEY_FILE")
        .output()
        .expect("run keyfleet");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A session to the virtual card stored at `path` (the card's own answers, in process).
fn session(path: &Path) -> PivClient<InProcess> {
    let mut c = PivClient::new(InProcess::new(
        VirtualCard::open(path).expect("open the card"),
    ));
    c.select().expect("select PIV");
    c
}

/// The keys and data objects (certificates included) of the card file: what its slots hold.
fn slots(path: &Path) -> (Value, Value) {
    let card: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    (card["keys"].clone(), card["objects"].clone())
}

#[test]
fn a_pin_the_holder_changed_on_a_virtual_card_waits_for_the_holder_and_touches_no_slot() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = tmp.path().join("policy");
    let state: PathBuf = tmp.path().join("state");
    copy_dir(&repo_root().join("examples/quickstart"), &policy);
    keyfleet(&policy, &state, &["apply", "--yes"]).expect_code(0);

    // Alice's virtual card, and the PIN her mailer gave.
    let inv: Value =
        serde_json::from_str(&keyfleet(&policy, &state, &["inventory", "--format", "json"]).stdout)
            .expect("inventory JSON");
    let card = inv["cards"]
        .as_array()
        .expect("cards")
        .iter()
        .find(|c| c["user"] == "alice")
        .and_then(|c| c["id"].as_str())
        .expect("alice's card")
        .to_string();
    assert!(card.starts_with("vc-"), "{card}");
    let mailer = std::fs::read_to_string(state.join(format!("pin-mailer/alice-{card}.txt")))
        .expect("alice's PIN mailer");
    let mailed = mailer
        .lines()
        .find_map(|l| l.strip_prefix("PIN: "))
        .expect("PIN line")
        .to_string();
    let holder_pin = if mailed == "246813" {
        "135792"
    } else {
        "246813"
    };

    // The holder changes the PIN, as the mailer tells them to.
    let file = state.join(format!("cards/{card}.json"));
    session(&file)
        .change_pin(&mailed, holder_pin)
        .expect("the holder changes the PIN");
    let before = slots(&file);

    // A template change makes Keyfleet reissue alice's slots, which needs the PIN.
    let template = policy.join("templates/employee-virtual.yaml");
    let text = std::fs::read_to_string(&template).unwrap();
    std::fs::write(&template, text.replace("OU=Employees", "OU=Staff")).unwrap();
    let runs: Vec<Run> = (0..3)
        .map(|_| keyfleet(&policy, &state, &["apply", "--yes"]))
        .collect();
    for r in &runs {
        r.expect_code(0);
    }
    runs[0].stdout_has("waiting for the holder");
    let pending = |r: &Run| {
        r.stdout
            .lines()
            .filter(|l| l.contains("pending") && l.contains("alice") && l.contains("holder"))
            .count()
    };
    assert!(pending(&runs[0]) >= 1, "{}", runs[0].stdout);

    // The card refused the stored PIN once at most: two of its three tries are left, and the
    // holder's PIN still works. No key and no certificate object changed.
    let mut c = session(&file);
    assert_eq!(
        c.pin_retries().unwrap(),
        PinStatus::NotVerified { retries_left: 2 },
        "{runs:?}"
    );
    assert_eq!(slots(&file), before, "a slot of alice's card changed");
    c.verify_pin(holder_pin).expect("the holder's PIN works");
    drop(c);

    // plan: alice's reissues wait for the holder (reason holder-pin-unknown) and plan exits 2.
    let plan = keyfleet(&policy, &state, &["plan", "--format", "json"]);
    plan.expect_code(2);
    let plan: Value = serde_json::from_str(&plan.stdout).expect("plan JSON");
    let on_card: Vec<&Value> = plan["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter(|a| a["card"] == card.as_str())
        .collect();
    assert!(!on_card.is_empty(), "{plan}");
    for a in on_card {
        assert_eq!(a["waitingForHolder"], true, "{a}");
        assert_eq!(a["reason"], "holder-pin-unknown", "{a}");
    }
    // Other holders' cards were reissued: only alice's work waits.
    let others = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["card"] != card.as_str())
        .count();
    assert_eq!(others, 0, "{plan}");
}

#[test]
fn a_virtual_card_gets_the_pin_and_puk_retries_of_its_template() {
    // Issue 14, point 10c: the virtual card takes SET PIN RETRIES at personalisation.
    let tmp = tempfile::tempdir().unwrap();
    let policy = tmp.path().join("policy");
    let state = tmp.path().join("state");
    copy_dir(&repo_root().join("examples/quickstart"), &policy);
    let template = policy.join("templates/employee-virtual.yaml");
    let text = std::fs::read_to_string(&template).unwrap();
    std::fs::write(
        &template,
        text.replace(
            "pinPolicy: {length: 6, retries: 3}",
            "pinPolicy: {length: 6, retries: 7}\n  pukPolicy: {retries: 2}",
        ),
    )
    .unwrap();
    keyfleet(&policy, &state, &["apply", "--yes"]).expect_code(0);
    let inv: Value =
        serde_json::from_str(&keyfleet(&policy, &state, &["inventory", "--format", "json"]).stdout)
            .expect("inventory JSON");
    let cards: Vec<(String, String)> = inv["cards"]
        .as_array()
        .expect("cards")
        .iter()
        .filter_map(|c| Some((c["id"].as_str()?.into(), c["template"].as_str()?.into())))
        .collect();
    assert!(cards.iter().any(|(_, t)| t == "employee-virtual"), "{inv}");
    for (card, template) in cards {
        let file = state.join(format!("cards/{card}.json"));
        let mut c = session(&file);
        let (pin, puk) = (
            c.pin_metadata(0x80).unwrap().unwrap(),
            c.pin_metadata(0x81).unwrap().unwrap(),
        );
        let want = if template == "employee-virtual" {
            (7, 2)
        } else {
            (3, 3)
        };
        assert_eq!((pin.total, puk.total), want, "{card} ({template})");
        assert_eq!(
            c.pin_retries().unwrap(),
            PinStatus::NotVerified {
                retries_left: want.0
            },
            "{card}"
        );
        assert!(
            !pin.is_default && !puk.is_default,
            "{card}: factory PIN or PUK left"
        );
    }
}
