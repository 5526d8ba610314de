//! A plan with every action kind, built through the pure planner from fixtures, rendered
//! as Markdown (`plan --format markdown`) and compared with the checked-in expected file
//! `tests/expected/plan-every-action-kind.md`. `KEYFLEET_UPDATE_EXPECTED=1` writes it anew.

use super::*;

fn cred<'a>(d: &'a mut Desired, u: &str) -> &'a mut DesiredCredential {
    d.credentials
        .get_mut(&(u.to_string(), "employee".to_string()))
        .unwrap()
}

/// Alice renews, bob loses his entitlement (revoke, retire), carol is disabled (suspend),
/// dave's template changed (reissue), erin is enabled again (resume), frank is new (issue).
fn every_kind() -> Plan {
    let users = ["alice", "bob", "carol", "dave", "erin", "frank"];
    let mut d = desired(
        users
            .iter()
            .filter(|u| **u != "frank")
            .map(|u| credential(u, &[Slot::PivAuthentication]))
            .collect(),
        &users,
    );
    let mut inv = Inventory::default();
    let mut presence = Presence::default();
    converge(&d, &mut inv, &mut presence);
    // Erin disabled and suspended first.
    d.credentials
        .get_mut(&("erin".to_string(), "employee".to_string()))
        .unwrap()
        .user_disabled = true;
    converge(&d, &mut inv, &mut presence);
    cred(&mut d, "erin").user_disabled = false;
    cred(&mut d, "carol").user_disabled = true;
    cred(&mut d, "dave")
        .certificates
        .get_mut(&Slot::PivAuthentication)
        .unwrap()
        .revision = "r2-new-subject".into();
    d.credentials
        .remove(&("bob".to_string(), "employee".to_string()));
    d.credentials.insert(
        ("frank".into(), "employee".into()),
        credential("frank", &[Slot::PivAuthentication, Slot::DigitalSignature]),
    );
    // Alice's certificate is inside its renewal window.
    for c in inv.certs.values_mut().filter(|c| c.user == "alice") {
        c.not_before = NOW - Duration::days(355);
        c.not_after = NOW + Duration::days(10);
    }
    plan(&d, &inv, &presence, &opts())
}

#[test]
fn a_plan_with_every_action_kind_renders_as_the_expected_markdown() {
    let p = every_kind();
    let kinds: BTreeSet<ActionKind> = p.actions.iter().map(|a| a.kind).collect();
    assert_eq!(kinds.len(), 7, "{:#?}", p.actions);
    let md = crate::cli::markdown::plan_markdown(
        &p,
        &["directory contractors: ldap://ldap.example.org: connection refused".to_string()],
    );
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/expected/plan-every-action-kind.md");
    if std::env::var_os("KEYFLEET_UPDATE_EXPECTED").is_some() {
        std::fs::write(&path, &md).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(md, expected, "rendered:\n{md}");
}
