//! The store's own tests: records, the index, the journal's secrets and transactions.
use super::*;
use crate::inventory::CardStatus;
use crate::policy::model::CardType;

#[test]
fn records_survive_reopen_and_the_store_is_exclusive() {
    let dir = tempfile::tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    {
        let s = Store::open(dir.path()).unwrap();
        s.put_card(&CardRecord {
            id: "vc-1".into(),
            card_type: CardType::Virtual,
            stock: None,
            user: Some("alice".into()),
            template: None,
            status: CardStatus::Active,
            created_at: now,
            updated_at: now,
            temporary: false,
        })
        .unwrap();
        let mut e = s
            .journal_open(
                "a",
                JournalStep::WipeCard {
                    card: "vc-1".into(),
                },
                now,
            )
            .unwrap();
        s.journal_open(
            "b",
            JournalStep::WipeCard {
                card: "vc-2".into(),
            },
            now,
        )
        .unwrap();
        s.journal_close(&mut e, JournalState::Done, None, now)
            .unwrap();
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Locked(_))
        ));
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(
        s.inventory().unwrap().cards["vc-1"].user.as_deref(),
        Some("alice")
    );
    let open = s.open_intents().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].action_id, "b");
}

fn personalize_step(card: &str) -> JournalStep {
    JournalStep::Personalize {
        card: card.into(),
        user: "alice".into(),
        sealed_pin: Some("01aa".into()),
        sealed_puk: Some("02bb".into()),
        sealed_for: SealBinding::CardAndEntry,
        management_key: crate::policy::model::ManagementKeyAlgorithm::Aes192,
    }
}

fn stored_journal(s: &Store) -> Vec<String> {
    s.journal
        .iter()
        .map(|i| String::from_utf8(i.unwrap().1.to_vec()).unwrap())
        .collect()
}

#[test]
fn a_closed_journal_entry_keeps_the_facts_and_drops_its_sealed_pin_and_puk() {
    let dir = tempfile::tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    {
        let s = Store::open(dir.path()).unwrap();
        let mut done = s.journal_open("a", personalize_step("vc-1"), now).unwrap();
        s.journal_open("b", personalize_step("vc-2"), now).unwrap();
        s.journal_close(&mut done, JournalState::Done, None, now)
            .unwrap();
        s.sync().unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    let stored = stored_journal(&s);
    assert_eq!(stored.len(), 2);
    assert!(
        !stored[0].contains("sealedPin") && !stored[0].contains("sealedPuk"),
        "closed entry still holds secrets: {}",
        stored[0]
    );
    assert!(
        stored[0].contains("\"card\":\"vc-1\"") && stored[0].contains("\"state\":\"done\""),
        "the facts stay: {}",
        stored[0]
    );
    // The open entry keeps what its recovery needs.
    let open = s.open_intents().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].step, personalize_step("vc-2"));
}

/// A journal entry as Keyfleet wrote it before closed entries dropped their secrets (and
/// before the seals were bound to the card and the entry).
const OLD_CLOSED_PERSONALIZE: &str = r#"{"id":7,"actionId":"issue:alice:staff","step":{"step":"personalize","card":"vc-1","user":"alice","sealedPin":"01aa","sealedPuk":"02bb","managementKey":"aes-192"},"state":"done","openedAt":"2026-01-01T10:00:00Z","closedAt":"2026-01-01T10:00:01Z","message":null}"#;
const OLD_OPEN_PERSONALIZE: &str = r#"{"id":8,"actionId":"issue:bob:staff","step":{"step":"personalize","card":"vc-2","user":"bob","sealedPin":"03cc","sealedPuk":"04dd","managementKey":"aes-192"},"state":"open","openedAt":"2026-01-01T10:00:02Z","closedAt":null,"message":null}"#;

#[test]
fn opening_a_store_written_the_old_way_strips_the_secrets_of_closed_entries_only() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        // As an older Keyfleet left it: secrets in closed entries, no marker.
        s.journal
            .insert(7u64.to_be_bytes(), OLD_CLOSED_PERSONALIZE.as_bytes())
            .unwrap();
        s.journal
            .insert(8u64.to_be_bytes(), OLD_OPEN_PERSONALIZE.as_bytes())
            .unwrap();
        s.db.remove(CLOSED_SECRETS_DROPPED).unwrap();
        s.sync().unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    let stored = stored_journal(&s);
    assert!(
        !stored[0].contains("sealedPin") && !stored[0].contains("01aa"),
        "closed entry still holds secrets after open: {}",
        stored[0]
    );
    assert!(stored[0].contains("\"card\":\"vc-1\""));
    assert!(stored[0].contains("\"closedAt\":\"2026-01-01T10:00:01Z\""));
    // The open entry is untouched, and says its blobs were sealed under the fixed tag.
    let open = s.open_intents().unwrap();
    assert_eq!(open.len(), 1);
    let JournalStep::Personalize {
        sealed_pin,
        sealed_for,
        ..
    } = &open[0].step
    else {
        panic!("not a personalisation: {:?}", open[0].step);
    };
    assert_eq!(sealed_pin.as_deref(), Some("03cc"));
    assert_eq!(*sealed_for, SealBinding::FixedTag);
}

fn cert(serial: &str, card: &str) -> CertRecord {
    let now = time::OffsetDateTime::now_utc();
    CertRecord {
        serial: serial.into(),
        user: "alice".into(),
        card: card.into(),
        template: "t".into(),
        name: "auth".into(),
        slot: crate::policy::model::Slot::PivAuthentication,
        ca: "ca".into(),
        profile: "p".into(),
        key_algorithm: crate::policy::model::KeyAlgorithm::EccP256,
        subject: "CN=alice".into(),
        sans: Vec::new(),
        not_before: now,
        not_after: now,
        revision: "r".into(),
        status: crate::inventory::CertStatus::Active,
        installed: false,
        request_id: "kf-1".into(),
        enrolment: 0,
        updated_at: now,
        pem: String::new(),
        key_id: None,
    }
}

#[test]
fn certificates_are_found_by_card_also_in_a_store_written_before_the_index() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        // Card ids that are prefixes of each other must not mix.
        for (serial, card) in [("01", "vc-1"), ("02", "vc-12"), ("03", "vc-1"), ("04", "v")] {
            s.put_cert(&cert(serial, card)).unwrap();
        }
        let serials = |card: &str| -> Vec<String> {
            s.certs_of_card(card)
                .unwrap()
                .into_iter()
                .map(|c| c.serial)
                .collect()
        };
        assert_eq!(serials("vc-1"), ["01", "03"]);
        assert_eq!(serials("vc-12"), ["02"]);
        assert!(serials("vc-").is_empty());
        // As an older Keyfleet left it: records, no index.
        s.certs_by_card.clear().unwrap();
        s.sync().unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    let found: Vec<String> = s
        .certs_of_card("vc-1")
        .unwrap()
        .into_iter()
        .map(|c| c.serial)
        .collect();
    assert_eq!(found, ["01", "03"]);
    assert_eq!(s.certs_of_card("v").unwrap()[0].serial, "04");

    // An older Keyfleet wrote a certificate without indexing it: `reindex` finds it.
    s.certs.insert("05", encode(&cert("05", "vc-1"))).unwrap();
    assert_eq!(s.certs_of_card("vc-1").unwrap().len(), 2);
    assert_eq!(s.reindex().unwrap(), 5);
    let found: Vec<String> = s
        .certs_of_card("vc-1")
        .unwrap()
        .into_iter()
        .map(|c| c.serial)
        .collect();
    assert_eq!(found, ["01", "03", "05"]);
}

fn enroll_step(card: &str) -> JournalStep {
    JournalStep::Enroll {
        request_id: "kf-1".into(),
        ca: "ca".into(),
        card: card.into(),
        user: "alice".into(),
        template: "t".into(),
        name: "auth".into(),
        slot: crate::policy::model::Slot::PivAuthentication,
        profile: "p".into(),
        key_algorithm: crate::policy::model::KeyAlgorithm::EccP256,
        subject: "CN=alice".into(),
        sans: Vec::new(),
        revision: "r".into(),
    }
}

#[test]
fn a_journal_closing_and_the_record_it_leads_to_are_written_both_or_neither() {
    let dir = tempfile::tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let s = Store::open(dir.path()).unwrap();
    let mut entry = s.journal_open("a", enroll_step("vc-1"), now).unwrap();
    let g = s.inventory_generation();
    s.journal_close_recording(
        &mut entry,
        JournalState::Done,
        Some("01".into()),
        now,
        Recorded::Cert(&cert("01", "vc-1")),
    )
    .unwrap();
    assert_ne!(s.inventory_generation(), g);
    assert_eq!(entry.state, JournalState::Done);
    assert!(s.open_intents().unwrap().is_empty());
    assert_eq!(s.certs_of_card("vc-1").unwrap()[0].serial, "01");

    // The entry is closed already: the transaction aborts, and neither the certificate
    // nor its index entry nor a second closing is written.
    let before = stored_journal(&s);
    let mut again = entry.clone();
    assert!(matches!(
        s.journal_close_recording(
            &mut again,
            JournalState::Failed,
            None,
            now,
            Recorded::Cert(&cert("02", "vc-2")),
        ),
        Err(StoreError::NotOpen(id)) if id == entry.id
    ));
    assert_eq!(again, entry, "the caller's entry is left as it was");
    assert!(s.cert("02").unwrap().is_none());
    assert!(s.certs_of_card("vc-2").unwrap().is_empty());
    assert!(
        !s.certs_by_card
            .contains_key(card_index_key("vc-2", "02"))
            .unwrap()
    );
    assert_eq!(stored_journal(&s), before);

    // An entry the store never held: neither the card record nor a journal entry.
    let mut unknown = entry.clone();
    unknown.id = entry.id + 1000;
    unknown.state = JournalState::Open;
    let card = CardRecord {
        id: "vc-9".into(),
        card_type: CardType::Virtual,
        stock: None,
        user: None,
        template: None,
        status: CardStatus::Blank,
        created_at: now,
        updated_at: now,
        temporary: false,
    };
    assert!(matches!(
        s.journal_close_recording(
            &mut unknown,
            JournalState::Done,
            None,
            now,
            Recorded::Card(&card)
        ),
        Err(StoreError::NotOpen(_))
    ));
    assert!(s.card("vc-9").unwrap().is_none());
    assert_eq!(stored_journal(&s), before);

    // An open entry: the card record and the closing together.
    let mut create = s
        .journal_open(
            "b",
            JournalStep::CreateCard {
                card: "pending:b".into(),
                stock: None,
                card_type: CardType::Virtual,
            },
            now,
        )
        .unwrap();
    s.journal_close_recording(
        &mut create,
        JournalState::Done,
        Some("vc-9".into()),
        now,
        Recorded::Card(&card),
    )
    .unwrap();
    assert_eq!(s.card("vc-9").unwrap(), Some(card));
    assert!(s.open_intents().unwrap().is_empty());
}

#[test]
fn the_inventory_generation_moves_with_every_card_or_certificate_write_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let g0 = s.inventory_generation();
    s.put_cert(&cert("01", "vc-1")).unwrap();
    let g1 = s.inventory_generation();
    assert_ne!(g0, g1);
    s.journal_open(
        "a",
        JournalStep::WipeCard {
            card: "vc-1".into(),
        },
        now,
    )
    .unwrap();
    s.put_secret("pin/vc-1", b"x").unwrap();
    s.append_history(&HistoryEntry {
        at: now,
        actor: "t".into(),
        kind: crate::plan::ActionKind::Issue,
        user: "alice".into(),
        template: None,
        card: None,
        slots: Vec::new(),
        serials: Vec::new(),
        reason: crate::plan::Reason {
            code: crate::plan::ReasonCode::NotIssued,
            message: "test".into(),
        },
        result: HistoryResult::Ok,
        message: None,
    })
    .unwrap();
    assert_eq!(
        s.inventory_generation(),
        g1,
        "no record of the inventory changed"
    );
    s.put_card(&CardRecord {
        id: "vc-1".into(),
        card_type: CardType::Virtual,
        stock: None,
        user: None,
        template: None,
        status: CardStatus::Blank,
        created_at: now,
        updated_at: now,
        temporary: false,
    })
    .unwrap();
    assert_ne!(s.inventory_generation(), g1);
}
