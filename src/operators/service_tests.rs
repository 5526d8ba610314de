//! The service over a real store and audit log: a request runs once with its last approval,
//! one found started and unfinished is failed only when nothing else can be running it, and
//! never run again.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::identity::{Operator, Via};
use super::requests::{OperatorRequest, RequestState};
use super::roles::RoleGroups;
use super::service::{Host, Operations, Outcome};
use crate::policy::model::{OperationKind, Permission, RoleSpec};
use crate::statedir::status::HeldRevocation;

#[derive(Default)]
struct CountingHost {
    approved: Mutex<Vec<Vec<String>>>,
}

impl Host for CountingHost {
    fn unblock(&self, _: &str, _: &str) -> Result<serde_json::Value, String> {
        Err("no card here".into())
    }
    fn unblock_code(&self, _: &str, _: &str, _: bool) -> Result<serde_json::Value, String> {
        Err("no card here".into())
    }
    fn retire_found_lost(&self, _: &str, _: &str, _: &str) -> Result<serde_json::Value, String> {
        Err("no card here".into())
    }
    fn recover_key(
        &self,
        _: &str,
        _: &str,
        _: &serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        Err("no archive here".into())
    }
    fn held_revocations(&self) -> Result<Vec<HeldRevocation>, String> {
        Ok(vec![HeldRevocation {
            id: "revoke:bob".into(),
            user: "bob".into(),
            card: None,
            template: Some("employee".into()),
            serials: vec!["0A".into()],
            reason: "no-longer-entitled".into(),
        }])
    }
    fn approve_held(&self, _: &str, held: &[HeldRevocation]) -> Result<(), String> {
        self.approved
            .lock()
            .unwrap()
            .push(held.iter().map(|h| h.id.clone()).collect());
        Ok(())
    }
}

fn op(name: &str) -> Operator {
    Operator {
        name: name.into(),
        via: Via::External,
    }
}

fn role(perms: &[Permission], members: &[&str]) -> crate::policy::Object<RoleSpec> {
    crate::policy::Object {
        name: String::new(),
        file: "r.yaml".into(),
        line: 1,
        spec: RoleSpec {
            permissions: perms.to_vec(),
            members: members.iter().map(|m| m.to_string()).collect(),
            templates: None,
        },
    }
}

/// A state directory with its store and audit log, and an empty policy set.
struct Fixture {
    _dir: tempfile::TempDir,
    policy: crate::policy::PolicySet,
    store: crate::store::Store,
    audit: crate::audit::AuditLog,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    crate::fsutil::ensure_private_dir(&state).unwrap();
    let policy = crate::policy::PolicySet::empty(dir.path());
    let master = crate::secrets::MasterKey::load_or_create(&state).unwrap();
    let key = crate::audit::AuditKey::load_or_create(
        &crate::keystore::KeyStore::parse(None).unwrap(),
        &state,
        &master,
    )
    .unwrap();
    let audit = crate::audit::AuditLog::open(&state, key).unwrap();
    let store = crate::store::Store::open(&state).unwrap();
    Fixture {
        _dir: dir,
        policy,
        store,
        audit,
    }
}

#[test]
fn a_request_runs_once_and_an_interrupted_one_is_failed_only_at_recovery() {
    let Fixture {
        _dir,
        mut policy,
        store,
        audit,
    } = fixture();
    policy
        .settings
        .spec
        .approvals
        .insert(OperationKind::ApproveMassRevocation, 1);
    let scoped = |perms: &[Permission], members: &[&str]| {
        let mut r = role(perms, members);
        r.spec.templates = Some(vec!["contractor".into()]);
        r
    };
    policy.roles = BTreeMap::from([
        (
            "asker".to_string(),
            role(&[Permission::ApproveMassRevocation], &["ann"]),
        ),
        (
            "approver".to_string(),
            role(&[Permission::Approve], &["ole", "bob"]),
        ),
        (
            "contractor-desk".to_string(),
            scoped(
                &[Permission::ApproveMassRevocation, Permission::Approve],
                &["sam"],
            ),
        ),
    ]);
    let host = CountingHost::default();
    let groups = RoleGroups::default();
    let ops = Operations {
        policy: &policy,
        store: &store,
        audit: &audit,
        groups: &groups,
        host: &host,
        now: time::OffsetDateTime::now_utc(),
    };
    let (ann, ole) = (ops.grants(&op("ann")), ops.grants(&op("ole")));
    let (sam, bob) = (ops.grants(&op("sam")), ops.grants(&op("bob")));
    // A scope that does not cover every held revocation's template releases none of them.
    let refused = ops.approve_held(&sam, "mine");
    assert!(
        matches!(
            refused,
            Err(super::service::OpError::Denied(
                super::roles::Denied::OutOfScope { .. }
            ))
        ),
        "{refused:?}"
    );

    // One approval: it runs at once, once.
    let Outcome::Requested(first) = ops.approve_held(&ann, "reorg").unwrap() else {
        panic!("approve-mass-revocation needs an approval");
    };
    // Neither a scoped approver nor the holder of a held credential approves it.
    assert!(ops.approve(&sam, &first.id, None).is_err());
    assert!(matches!(
        ops.approve(&bob, &first.id, None),
        Err(super::service::OpError::Decision(
            super::requests::DecisionError::AboutThemselves { .. }
        ))
    ));
    assert!(host.approved.lock().unwrap().is_empty());
    let done = ops.approve(&ole, &first.id, None).unwrap();
    assert_eq!(done.state, RequestState::Done);
    assert_eq!(
        *host.approved.lock().unwrap(),
        vec![vec!["revoke:bob".to_string()]]
    );
    assert_eq!(ops.upkeep(true).unwrap(), 0);
    assert_eq!(host.approved.lock().unwrap().len(), 1, "run once");

    // A second one, found started and unfinished (a process stopped while running it).
    let Outcome::Requested(second) = ops.approve_held(&ann, "again").unwrap() else {
        panic!("a request");
    };
    let old = store.request_record(&second.id).unwrap().unwrap();
    let mut running: OperatorRequest = serde_json::from_slice(&old).unwrap();
    running.state = RequestState::Approved;
    running.started = Some(ops.now);
    assert!(
        store
            .update_request(&second.id, &old, &serde_json::to_vec(&running).unwrap())
            .unwrap()
    );
    // While calls may be running it, upkeep leaves it alone.
    ops.upkeep(false).unwrap();
    let seen: OperatorRequest =
        serde_json::from_slice(&store.request_record(&second.id).unwrap().unwrap()).unwrap();
    assert_eq!(seen.state, RequestState::Approved);
    // At recovery it is failed, and never run.
    ops.upkeep(true).unwrap();
    let seen: OperatorRequest =
        serde_json::from_slice(&store.request_record(&second.id).unwrap().unwrap()).unwrap();
    assert_eq!(seen.state, RequestState::Failed);
    assert_eq!(host.approved.lock().unwrap().len(), 1);
    ops.upkeep(true).unwrap();
    assert_eq!(host.approved.lock().unwrap().len(), 1);
    // The log tells it.
    let entries = audit.entries().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.target == second.id && e.outcome == "failed")
    );
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.kind == "approve-mass-revocation" && e.outcome == "done")
            .count(),
        1
    );
}

/// Issue 16: incidents are recorded only along the transition table, by holders of
/// `report-incident` / `resolve-incident`, never on one's own card, every call audited.
#[test]
fn incidents_follow_the_table_are_permission_checked_and_audited() {
    use crate::inventory::{CardRecord, CardStatus};
    use crate::policy::model::{CardType, IncidentKind};
    let Fixture {
        _dir,
        mut policy,
        store,
        audit,
    } = fixture();
    policy.roles = BTreeMap::from([
        (
            "helpdesk".to_string(),
            role(
                &[Permission::ReportIncident, Permission::ResolveIncident],
                &["hd", "alice"],
            ),
        ),
        (
            "viewer".to_string(),
            role(&[Permission::ViewInventory], &["vi"]),
        ),
    ]);
    let now = time::OffsetDateTime::now_utc();
    for (id, status) in [("vc-a", CardStatus::Active), ("vc-b", CardStatus::Blank)] {
        store
            .put_card(&CardRecord {
                id: id.into(),
                card_type: CardType::Virtual,
                stock: Some("virtual".into()),
                user: (status == CardStatus::Active).then(|| "alice".into()),
                template: (status == CardStatus::Active).then(|| "employee".into()),
                status,
                created_at: now,
                updated_at: now,
                temporary: false,
            })
            .unwrap();
    }
    let host = CountingHost::default();
    let groups = RoleGroups::default();
    let ops = Operations {
        policy: &policy,
        store: &store,
        audit: &audit,
        groups: &groups,
        host: &host,
        now,
    };
    let (hd, vi, alice) = (
        ops.grants(&op("hd")),
        ops.grants(&op("vi")),
        ops.grants(&op("alice")),
    );
    let code = |r: Result<serde_json::Value, super::service::OpError>| {
        super::calls::error_code(&r.unwrap_err()).0
    };
    // Without the permission, and on one's own card: forbidden.
    assert_eq!(
        code(ops.report_incident(&vi, "vc-a", IncidentKind::Lost, "")),
        "forbidden"
    );
    assert_eq!(
        code(ops.report_incident(&alice, "vc-a", IncidentKind::Lost, "")),
        "forbidden"
    );
    // Outside the table: a conflict naming the state; nothing recorded.
    let e = ops.found(&hd, "vc-a", "").unwrap_err();
    assert!(e.to_string().contains("in use"), "{e}");
    assert_eq!(super::calls::error_code(&e).0, "conflict");
    let e = ops
        .report_incident(&hd, "vc-b", IncidentKind::Lost, "")
        .unwrap_err();
    assert!(e.to_string().contains("no credential"), "{e}");
    assert_eq!(
        code(ops.report_incident(&hd, "vc-x", IncidentKind::Lost, "")),
        "not-found"
    );
    assert!(store.card_facts("vc-a").unwrap().is_empty());
    // Forgotten, found, lost: recorded with who and why; then nothing but retire.
    let v = ops
        .report_incident(&hd, "vc-a", IncidentKind::Forgotten, "left at home")
        .unwrap();
    assert_eq!(v["status"], "forgotten");
    assert_eq!(v["incident"]["reportedBy"], "hd");
    assert_eq!(v["incident"]["comment"], "left at home");
    assert_eq!(
        code(ops.report_incident(&hd, "vc-a", IncidentKind::Forgotten, "")),
        "conflict"
    );
    ops.found(&hd, "vc-a", "back").unwrap();
    ops.report_incident(&hd, "vc-a", IncidentKind::Lost, "stolen")
        .unwrap();
    let e = ops.found(&hd, "vc-a", "").unwrap_err();
    assert!(e.to_string().contains("is lost"), "{e}");
    let e = ops
        .report_incident(&hd, "vc-a", IncidentKind::Damaged, "")
        .unwrap_err();
    assert!(e.to_string().contains("--found-lost"), "{e}");
    let facts = store.card_facts("vc-a").unwrap();
    let history: Vec<_> = facts.incidents.iter().map(|e| e.kind).collect();
    use crate::inventory::IncidentEventKind as K;
    assert_eq!(history, [K::Forgotten, K::Found, K::Lost]);
    assert_eq!(facts.incident.unwrap().kind, IncidentKind::Lost);
    // A comment is one line.
    assert_eq!(
        code(ops.report_incident(&hd, "vc-a", IncidentKind::Lost, "a\nb")),
        "invalid"
    );
    // Every call is in the audit log: the records, and the refusals.
    let entries = audit.entries().unwrap();
    let of = |kind: &str, outcome: &str| {
        entries
            .iter()
            .filter(|e| e.kind == kind && e.outcome == outcome && e.target == "vc-a")
            .count()
    };
    assert_eq!(of("report-incident", "done"), 2);
    assert_eq!(of("resolve-incident", "done"), 1);
    assert_eq!(of("report-incident", "denied"), 2);
    assert!(of("report-incident", "refused") >= 2);
    assert!(of("resolve-incident", "refused") >= 2);
}
