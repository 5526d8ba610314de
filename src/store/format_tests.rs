//! The stored format of the journal and the history, as Keyfleet writes it today: checked-in
//! bytes that every later Keyfleet must read to the same values and write back unchanged, so
//! that renaming an enum of the planner or the policy cannot silently break a store.

use time::macros::datetime;

use super::*;
use crate::names::SanValue;
use crate::plan::{ActionKind, Reason, ReasonCode};
use crate::policy::model::{CardType, KeyAlgorithm, ManagementKeyAlgorithm, Slot};
use crate::store::journal::CaOp;

/// One journal entry of every step kind, as stored (the `journal` tree's values).
const JOURNAL: &[&str] = &[
    r#"{"id":1,"actionId":"issue:alice:staff","step":{"step":"create-card","card":"pending:issue:alice:staff","stock":"virtual","card_type":"virtual"},"state":"done","openedAt":"2026-01-01T10:00:00Z","closedAt":"2026-01-01T10:00:01Z","message":"vc-0a1b"}"#,
    r#"{"id":2,"actionId":"issue:alice:staff","step":{"step":"personalize","card":"vc-0a1b","user":"alice","sealedFor":"card-and-entry","managementKey":"aes-192"},"state":"done","openedAt":"2026-01-01T10:00:01Z","closedAt":"2026-01-01T10:00:02Z","message":null}"#,
    r#"{"id":3,"actionId":"issue:bob:staff","step":{"step":"personalize","card":"piv-77","user":"bob","sealedPin":"01aa","sealedPuk":"02bb","sealedFor":"card-and-entry","managementKey":"3des"},"state":"open","openedAt":"2026-01-01T10:00:03Z","closedAt":null,"message":null}"#,
    r#"{"id":4,"actionId":"issue:alice:staff","step":{"step":"enroll","requestId":"kf-00ff","ca":"corp","card":"vc-0a1b","user":"alice","template":"staff","name":"authentication","slot":"9A","profile":"smartcard","keyAlgorithm":"ecc-p256","subject":"CN=alice","sans":[{"type":"upn","value":"alice@example.com"},{"type":"email","value":"alice@example.com"},{"type":"dns","value":"alice.example.com"},{"type":"uri","value":"urn:alice"}],"revision":"abc123"},"state":"failed","openedAt":"2026-01-01T10:00:04Z","closedAt":"2026-01-01T10:00:05Z","message":"CA corp: unavailable"}"#,
    r#"{"id":5,"actionId":"issue:alice:staff","step":{"step":"install-cert","serial":"0A1B","card":"vc-0a1b","slot":"9C"},"state":"abandoned","openedAt":"2026-01-01T10:00:06Z","closedAt":"2026-01-01T10:00:07Z","message":"resolved by recovery"}"#,
    r#"{"id":6,"actionId":"reissue:alice:staff","step":{"step":"ca-status","serial":"0A1B","ca":"corp","op":"revoke","reason":"superseded"},"state":"done","openedAt":"2026-01-01T10:00:08Z","closedAt":"2026-01-01T10:00:09Z","message":null}"#,
    r#"{"id":7,"actionId":"suspend:alice:staff","step":{"step":"ca-status","serial":"0A1C","ca":"corp","op":"hold"},"state":"done","openedAt":"2026-01-01T10:00:10Z","closedAt":"2026-01-01T10:00:11Z","message":null}"#,
    r#"{"id":8,"actionId":"resume:alice:staff","step":{"step":"ca-status","serial":"0A1C","ca":"corp","op":"unhold"},"state":"done","openedAt":"2026-01-01T10:00:12Z","closedAt":"2026-01-01T10:00:13Z","message":null}"#,
    r#"{"id":9,"actionId":"retire:alice:staff","step":{"step":"wipe-card","card":"vc-0a1b"},"state":"open","openedAt":"2026-01-01T10:00:14Z","closedAt":null,"message":null}"#,
    r#"{"id":10,"actionId":"reissue:alice:staff","step":{"step":"replace-key","card":"vc-0a1b","slot":"9E","replaced":["0A1B","0A1C"]},"state":"open","openedAt":"2026-01-01T10:00:16Z","closedAt":null,"message":null}"#,
];

fn entry(
    id: u64,
    action_id: &str,
    step: JournalStep,
    state: JournalState,
    opened: time::OffsetDateTime,
    closed: Option<time::OffsetDateTime>,
    message: Option<&str>,
) -> JournalEntry {
    JournalEntry {
        id,
        action_id: action_id.into(),
        step,
        state,
        opened_at: opened,
        closed_at: closed,
        message: message.map(Into::into),
    }
}

fn journal_values() -> Vec<JournalEntry> {
    vec![
        entry(
            1,
            "issue:alice:staff",
            JournalStep::CreateCard {
                card: "pending:issue:alice:staff".into(),
                stock: Some("virtual".into()),
                card_type: CardType::Virtual,
            },
            JournalState::Done,
            datetime!(2026-01-01 10:00:00 UTC),
            Some(datetime!(2026-01-01 10:00:01 UTC)),
            Some("vc-0a1b"),
        ),
        entry(
            2,
            "issue:alice:staff",
            JournalStep::Personalize {
                card: "vc-0a1b".into(),
                user: "alice".into(),
                sealed_pin: None,
                sealed_puk: None,
                sealed_for: SealBinding::CardAndEntry,
                management_key: ManagementKeyAlgorithm::Aes192,
            },
            JournalState::Done,
            datetime!(2026-01-01 10:00:01 UTC),
            Some(datetime!(2026-01-01 10:00:02 UTC)),
            None,
        ),
        entry(
            3,
            "issue:bob:staff",
            JournalStep::Personalize {
                card: "piv-77".into(),
                user: "bob".into(),
                sealed_pin: Some("01aa".into()),
                sealed_puk: Some("02bb".into()),
                sealed_for: SealBinding::CardAndEntry,
                management_key: ManagementKeyAlgorithm::TripleDes,
            },
            JournalState::Open,
            datetime!(2026-01-01 10:00:03 UTC),
            None,
            None,
        ),
        entry(
            4,
            "issue:alice:staff",
            JournalStep::Enroll {
                request_id: "kf-00ff".into(),
                ca: "corp".into(),
                card: "vc-0a1b".into(),
                user: "alice".into(),
                template: "staff".into(),
                name: "authentication".into(),
                slot: Slot::PivAuthentication,
                profile: "smartcard".into(),
                key_algorithm: KeyAlgorithm::EccP256,
                subject: "CN=alice".into(),
                sans: vec![
                    SanValue::Upn("alice@example.com".into()),
                    SanValue::Email("alice@example.com".into()),
                    SanValue::Dns("alice.example.com".into()),
                    SanValue::Uri("urn:alice".into()),
                ],
                revision: "abc123".into(),
            },
            JournalState::Failed,
            datetime!(2026-01-01 10:00:04 UTC),
            Some(datetime!(2026-01-01 10:00:05 UTC)),
            Some("CA corp: unavailable"),
        ),
        entry(
            5,
            "issue:alice:staff",
            JournalStep::InstallCert {
                serial: "0A1B".into(),
                card: "vc-0a1b".into(),
                slot: Slot::DigitalSignature,
            },
            JournalState::Abandoned,
            datetime!(2026-01-01 10:00:06 UTC),
            Some(datetime!(2026-01-01 10:00:07 UTC)),
            Some("resolved by recovery"),
        ),
        entry(
            6,
            "reissue:alice:staff",
            JournalStep::CaStatus {
                serial: "0A1B".into(),
                ca: "corp".into(),
                op: CaOp::Revoke {
                    reason: "superseded".into(),
                },
            },
            JournalState::Done,
            datetime!(2026-01-01 10:00:08 UTC),
            Some(datetime!(2026-01-01 10:00:09 UTC)),
            None,
        ),
        entry(
            7,
            "suspend:alice:staff",
            JournalStep::CaStatus {
                serial: "0A1C".into(),
                ca: "corp".into(),
                op: CaOp::Hold,
            },
            JournalState::Done,
            datetime!(2026-01-01 10:00:10 UTC),
            Some(datetime!(2026-01-01 10:00:11 UTC)),
            None,
        ),
        entry(
            8,
            "resume:alice:staff",
            JournalStep::CaStatus {
                serial: "0A1C".into(),
                ca: "corp".into(),
                op: CaOp::Unhold,
            },
            JournalState::Done,
            datetime!(2026-01-01 10:00:12 UTC),
            Some(datetime!(2026-01-01 10:00:13 UTC)),
            None,
        ),
        entry(
            9,
            "retire:alice:staff",
            JournalStep::WipeCard {
                card: "vc-0a1b".into(),
            },
            JournalState::Open,
            datetime!(2026-01-01 10:00:14 UTC),
            None,
            None,
        ),
        entry(
            10,
            "reissue:alice:staff",
            JournalStep::ReplaceKey {
                card: "vc-0a1b".into(),
                slot: Slot::CardAuthentication,
                replaced: vec!["0A1B".into(), "0A1C".into()],
            },
            JournalState::Open,
            datetime!(2026-01-01 10:00:16 UTC),
            None,
            None,
        ),
    ]
}

#[test]
fn journal_entries_in_the_current_stored_format_read_to_the_same_values_and_write_back_unchanged() {
    let want = journal_values();
    assert_eq!(JOURNAL.len(), want.len());
    for (raw, want) in JOURNAL.iter().zip(want) {
        let got = decode_entry(&want.id.to_be_bytes(), raw.as_bytes())
            .unwrap_or_else(|e| panic!("{raw}: {e}"));
        assert_eq!(got, want, "{raw}");
        assert_eq!(
            String::from_utf8(encode_entry(&got)).unwrap(),
            *raw,
            "written back differently"
        );
    }
}

/// One history entry, as stored (the `history` tree's values).
const HISTORY: &str = r#"{"at":"2026-01-01T10:00:15Z","actor":"keyfleet","kind":"reissue","user":"alice","template":"staff","card":"vc-0a1b","slots":["9A","9C","9D","9E"],"serials":["0A1B"],"reason":{"code":"template-changed","message":"subject changed"},"result":"recovered","message":null}"#;

#[test]
fn a_history_entry_in_the_current_stored_format_reads_to_the_same_values_and_writes_back_unchanged()
{
    let want = HistoryEntry {
        at: datetime!(2026-01-01 10:00:15 UTC),
        actor: "keyfleet".into(),
        kind: ActionKind::Reissue,
        user: "alice".into(),
        template: Some("staff".into()),
        card: Some("vc-0a1b".into()),
        slots: vec![
            Slot::PivAuthentication,
            Slot::DigitalSignature,
            Slot::KeyManagement,
            Slot::CardAuthentication,
        ],
        serials: vec!["0A1B".into()],
        reason: Reason {
            code: ReasonCode::TemplateChanged,
            message: "subject changed".into(),
        },
        result: HistoryResult::Recovered,
        message: None,
    };
    let got = decode_history(b"1", HISTORY.as_bytes()).unwrap();
    assert_eq!(got, want);
    assert_eq!(String::from_utf8(encode_history(&got)).unwrap(), HISTORY);
}

/// Every name an enum is stored under today, with the value it reads to: a renamed or
/// removed name fails here.
#[test]
fn every_stored_enum_name_of_today_still_reads() {
    let kinds = [
        ("issue", ActionKind::Issue),
        ("renew", ActionKind::Renew),
        ("reissue", ActionKind::Reissue),
        ("suspend", ActionKind::Suspend),
        ("resume", ActionKind::Resume),
        ("revoke", ActionKind::Revoke),
        ("retire", ActionKind::Retire),
    ];
    let codes = [
        ("not-issued", ReasonCode::NotIssued),
        ("interrupted-issuance", ReasonCode::InterruptedIssuance),
        ("nearing-expiry", ReasonCode::NearingExpiry),
        ("expired", ReasonCode::Expired),
        ("template-changed", ReasonCode::TemplateChanged),
        ("superseded", ReasonCode::Superseded),
        ("slot-added", ReasonCode::SlotAdded),
        ("slot-removed", ReasonCode::SlotRemoved),
        ("user-disabled", ReasonCode::UserDisabled),
        ("user-enabled", ReasonCode::UserEnabled),
        ("no-longer-entitled", ReasonCode::NoLongerEntitled),
        ("user-gone", ReasonCode::UserGone),
        ("template-removed", ReasonCode::TemplateRemoved),
        ("card-revoked", ReasonCode::CardRevoked),
        ("holder-pin-unknown", ReasonCode::HolderPinUnknown),
        ("card-suspect", ReasonCode::CardSuspect),
    ];
    let results = [
        ("ok", HistoryResult::Ok),
        ("failed", HistoryResult::Failed),
        ("recovered", HistoryResult::Recovered),
    ];
    for (i, (code, want_code)) in codes.iter().enumerate() {
        let (kind, want_kind) = kinds[i % kinds.len()];
        let (result, want_result) = results[i % results.len()];
        let raw = format!(
            r#"{{"at":"2026-01-01T10:00:15Z","actor":"a","kind":"{kind}","user":"u","template":null,"card":null,"slots":["9a","9c","9d","9e"],"serials":[],"reason":{{"code":"{code}","message":"m"}},"result":"{result}"}}"#
        );
        let got = decode_history(b"1", raw.as_bytes()).unwrap_or_else(|e| panic!("{raw}: {e}"));
        assert_eq!(
            (got.kind, got.reason.code, got.result),
            (want_kind, *want_code, want_result)
        );
        // Lower-case slot names (accepted by older Keyfleets' policy) still read.
        assert_eq!(got.slots[0], Slot::PivAuthentication);
        assert_eq!(got.slots[3], Slot::CardAuthentication);
    }
    let steps = [
        (
            "piv",
            "ecc-p384",
            "aes-128",
            CardType::Piv,
            KeyAlgorithm::EccP384,
            ManagementKeyAlgorithm::Aes128,
        ),
        (
            "pkcs11",
            "rsa-2048",
            "aes-256",
            CardType::Pkcs11,
            KeyAlgorithm::Rsa2048,
            ManagementKeyAlgorithm::Aes256,
        ),
        (
            "virtual",
            "rsa-3072",
            "3des",
            CardType::Virtual,
            KeyAlgorithm::Rsa3072,
            ManagementKeyAlgorithm::TripleDes,
        ),
    ];
    for (card_type, key_alg, mgmt, want_type, want_alg, want_mgmt) in steps {
        let create = format!(
            r#"{{"id":1,"actionId":"a","step":{{"step":"create-card","card":"c","stock":null,"card_type":"{card_type}"}},"state":"open","openedAt":"2026-01-01T10:00:00Z"}}"#
        );
        let got = decode_entry(b"1", create.as_bytes()).unwrap();
        assert!(
            matches!(got.step, JournalStep::CreateCard { card_type, .. } if card_type == want_type)
        );
        let enroll = format!(
            r#"{{"id":1,"actionId":"a","step":{{"step":"enroll","requestId":"r","ca":"c","card":"c","user":"u","template":"t","name":"n","slot":"9d","profile":"p","keyAlgorithm":"{key_alg}","subject":"CN=u","sans":[],"revision":"r"}},"state":"open","openedAt":"2026-01-01T10:00:00Z"}}"#
        );
        let got = decode_entry(b"1", enroll.as_bytes()).unwrap();
        assert!(
            matches!(got.step, JournalStep::Enroll { key_algorithm, slot: Slot::KeyManagement, .. } if key_algorithm == want_alg)
        );
        // An entry an older Keyfleet wrote: no seal binding (the fixed tag).
        let personalize = format!(
            r#"{{"id":1,"actionId":"a","step":{{"step":"personalize","card":"c","user":"u","sealedPin":"01","sealedPuk":"02","managementKey":"{mgmt}"}},"state":"open","openedAt":"2026-01-01T10:00:00Z"}}"#
        );
        let got = decode_entry(b"1", personalize.as_bytes()).unwrap();
        assert!(matches!(
            got.step,
            JournalStep::Personalize { management_key, sealed_for: SealBinding::FixedTag, .. }
                if management_key == want_mgmt
        ));
    }
}
