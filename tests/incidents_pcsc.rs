//! Card incidents over the real PC/SC stack (pcscd + vpcd, `keyfleet vcard serve`): a lost
//! card's replacement lands on the next blank card put in the reader; an offline unblock code
//! is released once, the holder unblocks with it through yubico-piv-tool, and the PUK is
//! rotated at the card's next contact, after which the old one is refused.

use std::path::Path;

use serde_json::Value;

use crate::harness::Run;
use crate::harness::pcscd::Pcscd;
use crate::piv::{kfp, mailer_pin, pin_hex, policy_copy, send_apdu};

/// The id of the card in the reader (as `keyfleet cards` reads it).
fn card_in_reader(pcscd: &Pcscd, state: &Path) -> String {
    pcscd.cards_json(Some(state))[0]["id"]
        .as_str()
        .expect("card identified")
        .to_string()
}

fn json(r: &Run) -> Value {
    r.expect_code(0);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

#[test]
fn a_lost_cards_replacement_lands_on_the_next_blank_card_in_the_reader() {
    let mut pcscd = Pcscd::start();
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let state = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let policy = policy_copy(work.path());
    let kf = |pcscd: &Pcscd, args: &[&str]| kfp(pcscd, &policy, state.path(), args);
    let served = pcscd.vcard(first.path(), &[]);
    pcscd.wait_card(true);
    kf(&pcscd, &["apply", "--yes"])
        .expect_code(0)
        .stdout_has("done    issue alice");
    let lost = card_in_reader(&pcscd, state.path());
    kf(&pcscd, &["cards", "report", &lost, "--lost"]).expect_code(0);
    // The lost card is gone; a blank card is put in the reader.
    drop(served);
    pcscd.wait_card(false);
    pcscd.restart();
    let _served = pcscd.vcard(second.path(), &[]);
    pcscd.wait_card(true);
    let plan = planned(&kf(&pcscd, &["plan", "--format", "json"]));
    let actions = plan["actions"].as_array().expect("actions");
    assert!(
        actions.iter().any(|a| a["kind"] == "revoke"
            && a["card"] == lost.as_str()
            && a["reason"] == "card-lost"),
        "{plan:#}"
    );
    assert!(
        actions.iter().any(|a| a["kind"] == "issue"
            && a["user"] == "alice"
            && a["template"] == "employee-piv"
            && a["reason"] == "replaces-lost"),
        "{plan:#}"
    );
    kf(&pcscd, &["apply", "--yes"]).expect_code(0);
    let new = card_in_reader(&pcscd, state.path());
    assert_ne!(new, lost);
    let inv = json(&kf(&pcscd, &["inventory", "--format", "json"]));
    let status = |id: &str| {
        inv["cards"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["id"] == id))
            .map(|c| c["status"].clone())
    };
    assert_eq!(status(&lost), Some("lost".into()), "{inv:#}");
    assert_eq!(status(&new), Some("active".into()), "{inv:#}");
    // Both slots of the new card hold alice's certificates, as the CA issued them.
    let on_new: Vec<&Value> = inv["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .filter(|c| c["card"] == new.as_str() && c["status"] == "active")
        .collect();
    assert_eq!(on_new.len(), 2, "{inv:#}");
    let cards = pcscd.cards_json(Some(state.path()));
    assert_eq!(cards[0]["inventory"]["user"], "alice", "{cards:#}");
    let history = json(&kf(
        &pcscd,
        &["history", "--user", "alice", "--format", "json"],
    ));
    assert!(
        history
            .as_array()
            .expect("history")
            .iter()
            .any(|h| h["kind"] == "issue"
                && h["card"] == new.as_str()
                && h["reason"]["code"] == "replaces-lost"),
        "{history:#}"
    );
    kf(&pcscd, &["plan"]).expect_code(0);
}

/// A plan's JSON, checked to have exit code 2 (changes pending).
fn planned(r: &Run) -> Value {
    r.expect_code(2);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

/// yubico-piv-tool against the private pcscd's virtual reader.
fn piv_tool(pcscd: &Pcscd, args: &[&str]) -> Run {
    let mut all = vec!["-r", "VPCD"];
    all.extend_from_slice(args);
    pcscd.tool("yubico-piv-tool", &all)
}

fn sealed_puk(state: &Path, card: &str) -> Vec<u8> {
    let store = keyfleet::store::Store::open(state).expect("open the store");
    store
        .secret(&format!("puk/{card}"))
        .expect("read the store")
        .expect("a sealed PUK")
}

#[test]
fn an_offline_unblock_code_is_released_once_and_the_puk_rotated_at_the_next_contact() {
    let mut pcscd = Pcscd::start();
    let card = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let policy = policy_copy(work.path());
    let kf = |pcscd: &Pcscd, args: &[&str]| kfp(pcscd, &policy, state.path(), args);
    let _served = pcscd.vcard(card.path(), &[]);
    pcscd.wait_card(true);
    kf(&pcscd, &["apply", "--yes"]).expect_code(0);
    let id = card_in_reader(&pcscd, state.path());
    let pin = mailer_pin(state.path());
    let sealed_before = sealed_puk(state.path(), &id);
    // The holder, far away, blocks the PIN.
    for _ in 0..3 {
        send_apdu(&pcscd, &format!("0020008008{}", pin_hex("000000")));
    }
    let blocked = send_apdu(&pcscd, "00200080");
    assert!(blocked.contains("SW1=0x69, SW2=0x83"), "{blocked}");

    // The helpdesk gets the PUK once.
    let r = kf(
        &pcscd,
        &["cards", "unblock-code", &id, "--reason", "holder abroad"],
    );
    r.expect_code(0);
    let puk = r
        .stdout
        .lines()
        .find_map(|l| l.split_once(&format!("(PUK) of card {id}: ")))
        .map(|(_, p)| p.trim().to_string())
        .unwrap_or_else(|| panic!("no PUK in {}", r.stdout));
    assert!(
        !puk.is_empty() && puk.chars().all(|c| c.is_ascii_digit()),
        "{puk}"
    );
    kf(&pcscd, &["cards", "unblock-code", &id])
        .expect_code(1)
        .stderr_has("released");
    let shown = json(&kf(&pcscd, &["cards", "show", &id, "--format", "json"]));
    assert_eq!(shown["pukReleased"], true, "{shown:#}");

    // The holder unblocks with it and sets a PIN of their own.
    let holder_pin = if pin == "192837" { "564738" } else { "192837" };
    let unblocked = piv_tool(&pcscd, &["-a", "unblock-pin", "-P", &puk, "-N", holder_pin]);
    unblocked.expect_code(0);
    let ok = send_apdu(&pcscd, &format!("0020008008{}", pin_hex(holder_pin)));
    assert!(ok.contains("SW1=0x90, SW2=0x00"), "{ok}");

    // At the next contact Keyfleet sets a new PUK: the released one is refused after.
    let plan = planned(&kf(&pcscd, &["plan", "--format", "json"]));
    assert!(
        plan["actions"]
            .as_array()
            .expect("actions")
            .iter()
            .any(|a| a["kind"] == "rotate-puk"
                && a["card"] == id.as_str()
                && a["reason"] == "rotate-puk"),
        "{plan:#}"
    );
    kf(&pcscd, &["apply", "--yes"]).expect_code(0);
    kf(&pcscd, &["plan"]).expect_code(0);
    let refused = piv_tool(&pcscd, &["-a", "unblock-pin", "-P", &puk, "-N", "111111"]);
    assert_ne!(refused.code, Some(0), "{refused:?}");
    let raw = send_apdu(
        &pcscd,
        &format!("002C008010{}{}", pin_hex(&puk), pin_hex("111111")),
    );
    assert!(raw.contains("SW1=0x63, SW2=0xC"), "{raw}");
    assert_ne!(sealed_puk(state.path(), &id), sealed_before);
    let shown = json(&kf(&pcscd, &["cards", "show", &id, "--format", "json"]));
    assert_eq!(shown["pukReleased"], false, "{shown:#}");
    // Keyfleet's own (online) unblock still works with the new PUK: a fresh PIN is mailed.
    for _ in 0..3 {
        send_apdu(&pcscd, &format!("0020008008{}", pin_hex("000000")));
    }
    kf(&pcscd, &["cards", "unblock", &id]).expect_code(0);
    let mailed = newest_pin(state.path());
    let ok = send_apdu(&pcscd, &format!("0020008008{}", pin_hex(&mailed)));
    assert!(ok.contains("SW1=0x90, SW2=0x00"), "{ok}");

    // An online unblock replaces the PUK it used, at once: the PUK it had is refused after
    // and nothing is left to rotate.
    let r = kf(&pcscd, &["cards", "unblock-code", &id]);
    r.expect_code(0);
    let used = r
        .stdout
        .lines()
        .find_map(|l| l.split_once(&format!("(PUK) of card {id}: ")))
        .map(|(_, p)| p.trim().to_string())
        .unwrap_or_else(|| panic!("no PUK in {}", r.stdout));
    let r = kf(&pcscd, &["cards", "unblock", &id]);
    r.expect_code(0);
    kf(&pcscd, &["plan"]).expect_code(0);
    let raw = send_apdu(
        &pcscd,
        &format!("002C008010{}{}", pin_hex(&used), pin_hex("111111")),
    );
    assert!(raw.contains("SW1=0x63, SW2=0xC"), "{raw}");
    let mailed = newest_pin(state.path());
    let ok = send_apdu(&pcscd, &format!("0020008008{}", pin_hex(&mailed)));
    assert!(ok.contains("SW1=0x90, SW2=0x00"), "{ok}");
}

/// The PIN of the newest PIN mailer.
pub(crate) fn newest_pin(state: &Path) -> String {
    let newest = std::fs::read_dir(state.join("pin-mailer"))
        .expect("PIN mailers")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".txt"))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .expect("a PIN mailer");
    std::fs::read_to_string(newest.path())
        .expect("read")
        .lines()
        .find_map(|l| l.strip_prefix("PIN: "))
        .expect("PIN line")
        .to_string()
}
