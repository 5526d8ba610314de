//! PIV personalisation over the real PC/SC stack (a private pcscd, the vpcd reader, the
//! virtual card served by `keyfleet vcard serve`): the PIN and PUK retries a `vendor: yubico`
//! template sets, the random management key of `managementKey.diversified: false`, and a card
//! pulled at any APDU of its issuance.

use std::path::Path;
use std::time::Duration;

use crate::harness::pcscd::Pcscd;
use crate::piv::{kfp, mailer_pin, pin_hex, pin_tries, policy_copy, send_apdu};

/// Everything OpenSC printed after its last "Received" line (the status and the data).
fn apdu_answer(pcscd: &Pcscd, apdu: &str) -> String {
    let r = pcscd.tool("opensc-tool", &["-s", "00A4040005A000000308", "-s", apdu]);
    let at = r.stdout.rfind("Received").unwrap_or(r.stdout.len());
    r.stdout[at..].to_string()
}

#[test]
fn a_yubico_template_sets_the_pin_and_puk_retries_it_asks_for() {
    // Issue 14, point 10c: `vendor: yubico` lets Keyfleet send SET PIN RETRIES at
    // personalisation, before it sets the PIN and the PUK (the command resets both).
    let mut pcscd = Pcscd::start();
    let card = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let policy = yubico_policy(work.path(), false);
    let _served = pcscd.vcard(card.path(), &[]);
    pcscd.wait_card(true);
    kfp(&pcscd, &policy, state.path(), &["apply", "--yes"])
        .expect_code(0)
        .stdout_has("done    issue alice");

    // Read back over PC/SC: VERIFY without data shows 5 PIN tries; GET METADATA of the PUK
    // (Yubico `00 F7 00 81`) shows 4 tries of 4, and neither secret is the factory one.
    let tries = pin_tries(&pcscd);
    assert!(tries.contains("SW1=0x63, SW2=0xC5"), "{tries}");
    let puk = apdu_answer(&pcscd, "00F7008100");
    assert!(puk.contains("SW1=0x90, SW2=0x00"), "{puk}");
    assert!(puk.contains("05 01 00 06 02 04 04"), "{puk}");
    let pin = apdu_answer(&pcscd, "00F7008000");
    assert!(pin.contains("05 01 00 06 02 05 05"), "{pin}");
    // The PIN the mailer gives is the card's (set after the retries command).
    let verified = send_apdu(
        &pcscd,
        &format!("0020008008{}", pin_hex(&mailer_pin(state.path()))),
    );
    assert!(verified.contains("SW1=0x90, SW2=0x00"), "{verified}");
    kfp(&pcscd, &policy, state.path(), &["apply", "--yes"])
        .expect_code(0)
        .stdout_has("No changes");
}

/// `examples/piv` in `dir` with `vendor: yubico`, 5 PIN tries and 4 PUK tries, and (when
/// `random_key`) a random management key per card.
fn yubico_policy(dir: &Path, random_key: bool) -> std::path::PathBuf {
    let policy = policy_copy(dir);
    let template = policy.join("template.yaml");
    let text = std::fs::read_to_string(&template).unwrap();
    std::fs::write(
        &template,
        text.replace(
            "  pinPolicy: {length: 6, retries: 3}\n",
            &format!(
                "  vendor: yubico\n  pinPolicy: {{length: 6, retries: 5}}\n  pukPolicy: {{retries: 4}}\n{}",
                if random_key {
                    "  managementKey: {diversified: false}\n"
                } else {
                    ""
                }
            ),
        ),
    )
    .unwrap();
    policy
}

#[test]
fn a_card_pulled_at_any_apdu_of_its_issuance_ends_with_the_retries_the_pin_and_the_key() {
    // The card is pulled after its n-th APDU, from apply's observation (`keyfleet cards`
    // comes first) through connecting and personalisation to the first slot: before, between
    // and after SET PIN RETRIES and the PIN and PUK changes. When it is back, apply finishes
    // it: the counters are the policy's, the mailed PIN is the card's, and so is the random
    // management key sealed for it. A card pulled while apply connects to it goes back to its
    // stock and is issued afresh (it used to stay bound, without a PIN, waiting for a holder).
    let mut pcscd = Pcscd::start();
    let work = tempfile::tempdir().unwrap();
    let policy = yubico_policy(work.path(), true);
    for n in 12..=33 {
        let card = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let eject = n.to_string();
        let mut served = pcscd.vcard(
            card.path(),
            &[("KEYFLEET_VCARD_EJECT_AFTER_APDUS", eject.as_str())],
        );
        pcscd.wait_card(true);
        let first = kfp(&pcscd, &policy, state.path(), &["apply", "--yes"]);
        served.wait_exit(Duration::from_secs(10));
        pcscd.wait_card(false);
        pcscd.restart();
        let _back = pcscd.vcard(card.path(), &[]);
        pcscd.wait_card(true);
        let again = kfp(&pcscd, &policy, state.path(), &["apply", "--yes"]);
        assert_eq!(again.code, Some(0), "n={n}: {first:?}\n{again:?}");
        let plan = kfp(&pcscd, &policy, state.path(), &["plan"]);
        assert!(
            plan.code == Some(0) && plan.stdout.contains("No changes"),
            "n={n}: {first:?}\n{again:?}\n{plan:?}"
        );
        let puk = apdu_answer(&pcscd, "00F7008100");
        assert!(puk.contains("05 01 00 06 02 04 04"), "n={n}: {puk}");
        let tries = pin_tries(&pcscd);
        assert!(tries.contains("SW1=0x63, SW2=0xC5"), "n={n}: {tries}");
        let pin = mailer_pin(state.path());
        let verified = send_apdu(&pcscd, &format!("0020008008{}", pin_hex(&pin)));
        assert!(verified.contains("SW1=0x90, SW2=0x00"), "n={n}: {verified}");
        let id = pcscd.cards_json(Some(state.path()))[0]["id"]
            .as_str()
            .expect("card identified")
            .to_string();
        let key = sealed_management_key(state.path(), &id).expect("a sealed key");
        assert!(piv_tool_authenticates(&pcscd, work.path(), &key), "n={n}");
        drop(_back);
        pcscd.wait_card(false);
        pcscd.restart();
    }
}

/// The management key sealed for `card` in the keystore (`mgmt-key/{card}`), if any.
fn sealed_management_key(state: &Path, card: &str) -> Option<Vec<u8>> {
    let store = keyfleet::store::Store::open(state).expect("open the store");
    let master = keyfleet::secrets::MasterKey::load_or_create(state).expect("master key");
    let name = format!("mgmt-key/{card}");
    let sealed = store.secret(&name).expect("read the keystore")?;
    let plain = master
        .open(name.as_bytes(), &sealed)
        .expect("open the sealed key");
    Some(hex::decode(String::from_utf8(plain.to_vec()).unwrap().trim()).expect("hex key"))
}

/// Whether OpenSC's `piv-tool` authenticates to the card in the reader with the AES-192
/// management key `key` (9B mutual authentication, `-A M:9B:0A`).
fn piv_tool_authenticates(pcscd: &Pcscd, work: &Path, key: &[u8]) -> bool {
    let file = work.join("admin.key");
    std::fs::write(&file, hex::encode(key)).unwrap();
    let mut c = pcscd.command("piv-tool");
    c.args(["-A", "M:9B:0A"]).env("PIV_EXT_AUTH_KEY", &file);
    let out = c.output().expect("run piv-tool");
    eprintln!(
        "piv-tool -A M:9B:0A: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.success()
}

#[test]
fn a_random_management_key_is_sealed_per_card_and_authenticates_it() {
    // Issue 14, point 10d: `managementKey.diversified: false` gives each card its own random
    // key, sealed in the keystore as `mgmt-key/{card}`: neither the factory key nor the one
    // diversified from the master key.
    let mut pcscd = Pcscd::start();
    let work = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let policy = policy_copy(work.path());
    let template = policy.join("template.yaml");
    let text = std::fs::read_to_string(&template).unwrap();
    std::fs::write(
        &template,
        text.replace(
            "  pinPolicy: {length: 6, retries: 3}\n",
            "  pinPolicy: {length: 6, retries: 3}\n  managementKey: {algorithm: aes-192, diversified: false}\n",
        ),
    )
    .unwrap();
    let (alice_card, bob_card) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut ids = Vec::new();
    let mut served = None;
    for (user, card) in [("alice", &alice_card), ("bob", &bob_card)] {
        if let Some(previous) = served.take() {
            drop(previous);
            pcscd.wait_card(false);
            pcscd.restart();
            let people = policy.join("people.yaml");
            let text = std::fs::read_to_string(&people).unwrap();
            std::fs::write(
                &people,
                text.replace("members: [alice]", "members: [alice, bob]"),
            )
            .unwrap();
        }
        served = Some(pcscd.vcard(card.path(), &[]));
        pcscd.wait_card(true);
        kfp(&pcscd, &policy, state.path(), &["apply", "--yes"])
            .expect_code(0)
            .stdout_has(&format!("done    issue {user}"));
        let id = pcscd.cards_json(Some(state.path()))[0]["id"]
            .as_str()
            .expect("card identified")
            .to_string();
        ids.push(id);
    }
    let keys: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| sealed_management_key(state.path(), id).expect("a sealed key per card"))
        .collect();
    assert_ne!(keys[0], keys[1], "two cards got the same key");
    let master = keyfleet::secrets::MasterKey::load_or_create(state.path()).unwrap();
    let factory = keyfleet::card::keys::ManagementKey::factory_default();
    for (id, key) in ids.iter().zip(&keys) {
        assert_eq!(key.len(), 24, "{id}: an AES-192 key");
        assert_ne!(key, &factory.key, "{id}: the factory key");
        let diversified = master.diversify("piv-management-key", id, 24);
        assert_ne!(
            key.as_slice(),
            diversified.as_slice(),
            "{id}: the diversified key"
        );
    }
    // Bob's card (in the reader) takes its own key, and neither alice's nor the factory one.
    assert!(piv_tool_authenticates(&pcscd, work.path(), &keys[1]));
    assert!(!piv_tool_authenticates(&pcscd, work.path(), &keys[0]));
    assert!(!piv_tool_authenticates(&pcscd, work.path(), &factory.key));
    // The controller proves it too: a second pass finds nothing to do and nothing suspect.
    kfp(&pcscd, &policy, state.path(), &["apply", "--yes"])
        .expect_code(0)
        .stdout_has("No changes");
}
