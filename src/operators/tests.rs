//! The pure operator rules: grants from roles (users, nested groups, template scopes),
//! separation of duties, and the request state machine (m of n, denial, expiry).

use std::collections::{BTreeMap, BTreeSet};

use time::macros::datetime;

use super::identity::{IdentityError, Operator, Via, from_peer};
use super::requests::{DecisionError, OperatorRequest, RequestState};
use super::roles::{Denied, Grants, RoleGroups, Scope, Subject, grants};
use crate::policy::Object;
use crate::policy::model::{OperationKind, Operators, Permission, RoleSpec};

fn role(perms: &[Permission], members: &[&str], templates: Option<&[&str]>) -> Object<RoleSpec> {
    Object {
        name: String::new(),
        file: "roles.yaml".into(),
        line: 1,
        spec: RoleSpec {
            permissions: perms.to_vec(),
            members: members.iter().map(|s| s.to_string()).collect(),
            templates: templates.map(|t| t.iter().map(|s| s.to_string()).collect()),
        },
    }
}

fn roles() -> BTreeMap<String, Object<RoleSpec>> {
    let mut r = BTreeMap::new();
    r.insert(
        "helpdesk".into(),
        role(
            &[Permission::Unblock, Permission::ViewInventory],
            &["group:helpdesk"],
            Some(&["employee"]),
        ),
    );
    r.insert(
        "officers".into(),
        role(
            &[Permission::Approve, Permission::ViewAuditLog],
            &["olga", "oscar", "alice"],
            None,
        ),
    );
    r.insert(
        "contractor-desk".into(),
        role(&[Permission::Unblock], &["carl"], Some(&["contractor"])),
    );
    r
}

fn groups() -> RoleGroups {
    let mut g = BTreeMap::new();
    g.insert(
        "helpdesk".to_string(),
        ["hanna", "alice"]
            .into_iter()
            .map(String::from)
            .collect::<BTreeSet<_>>(),
    );
    RoleGroups::from_members(g)
}

fn op(name: &str) -> Operator {
    Operator {
        name: name.into(),
        via: Via::External,
    }
}

fn g(name: &str) -> Grants {
    grants(&op(name), &roles(), &groups())
}

fn employee<'a>(holder: Option<&'a str>, templates: &'a [String]) -> Subject<'a> {
    Subject {
        holder,
        templates,
        others: &[],
    }
}

#[test]
fn members_by_uid_and_by_nested_group_get_their_roles_permissions() {
    let hanna = g("hanna");
    assert_eq!(hanna.roles, vec!["helpdesk"]);
    assert!(hanna.has(Permission::Unblock));
    assert!(!hanna.has(Permission::Approve));
    let alice = g("alice");
    assert_eq!(alice.roles, vec!["helpdesk", "officers"]);
    assert!(alice.has(Permission::Approve) && alice.has(Permission::Unblock));
    let nobody = g("mallory");
    assert!(nobody.roles.is_empty() && nobody.permissions.is_empty());
    assert_eq!(
        nobody.check(Permission::ViewInventory, None),
        Err(Denied::Missing {
            operator: "mallory".into(),
            permission: Permission::ViewInventory
        })
    );
}

#[test]
fn every_permission_is_allowed_only_to_a_role_that_grants_it() {
    for p in Permission::ALL {
        let mut r = BTreeMap::new();
        r.insert("only".to_string(), role(&[p], &["u"], None));
        let held = grants(&op("u"), &r, &RoleGroups::default());
        for q in Permission::ALL {
            assert_eq!(held.check(q, None).is_ok(), p == q, "{p} grants {q}?");
        }
    }
}

#[test]
fn template_scopes_limit_a_permission_and_widen_across_roles() {
    let employee_t = vec!["employee".to_string()];
    let contractor_t = vec!["contractor".to_string()];
    let hanna = g("hanna");
    assert!(
        hanna
            .check(
                Permission::Unblock,
                Some(&employee(Some("bob"), &employee_t))
            )
            .is_ok()
    );
    assert!(matches!(
        hanna.check(Permission::Unblock, Some(&employee(Some("bob"), &contractor_t))),
        Err(Denied::OutOfScope { template, .. }) if template == "contractor"
    ));
    // Two scoped roles: the union.
    let mut r = roles();
    r.get_mut("contractor-desk")
        .unwrap()
        .spec
        .members
        .push("hanna".into());
    let hanna = grants(&op("hanna"), &r, &groups());
    assert!(
        hanna
            .check(
                Permission::Unblock,
                Some(&employee(Some("bob"), &contractor_t))
            )
            .is_ok()
    );
    assert_eq!(
        hanna.scope(Permission::Unblock),
        Some(&Scope::Templates(
            ["contractor", "employee"]
                .into_iter()
                .map(String::from)
                .collect()
        ))
    );
}

#[test]
fn a_credential_of_no_template_is_outside_every_scope() {
    let none: Vec<String> = Vec::new();
    assert!(matches!(
        g("hanna").check(Permission::Unblock, Some(&employee(None, &none))),
        Err(Denied::OutOfScope { .. })
    ));
    let mut r = roles();
    r.insert(
        "everywhere".into(),
        role(&[Permission::Unblock], &["una"], None),
    );
    let una = grants(&op("una"), &r, &groups());
    assert!(
        una.check(Permission::Unblock, Some(&employee(None, &none)))
            .is_ok()
    );
}

#[test]
fn nobody_acts_on_a_credential_they_hold() {
    let t = vec!["employee".to_string()];
    let alice = g("alice");
    assert!(matches!(
        alice.check(Permission::Unblock, Some(&employee(Some("alice"), &t))),
        Err(Denied::OwnCredential { .. })
    ));
    assert!(
        alice
            .check(Permission::Unblock, Some(&employee(Some("bob"), &t)))
            .is_ok()
    );
}

#[test]
fn the_system_owner_holds_everything_but_not_their_own_card() {
    let owner = from_peer(1000, Some("pki"), 1000, Some("pki"), &Operators::default()).unwrap();
    assert!(owner.is_system_owner());
    let grants = grants(&owner, &roles(), &groups());
    for p in Permission::ALL {
        assert!(grants.check(p, None).is_ok());
    }
    let t = vec!["employee".to_string()];
    assert!(
        grants
            .check(Permission::Unblock, Some(&employee(Some("pki"), &t)))
            .is_err()
    );
}

#[test]
fn unix_peers_are_the_owner_root_or_a_mapped_operator() {
    let mut ops = Operators::default();
    ops.local.insert("hd".into(), "hanna".into());
    let root = from_peer(0, Some("root"), 1000, Some("pki"), &ops).unwrap();
    assert!(root.is_system_owner());
    assert_eq!(root.name, "pki", "root and the owner are one system owner");
    let hanna = from_peer(1001, Some("hd"), 1000, Some("pki"), &ops).unwrap();
    assert_eq!(
        hanna,
        Operator {
            name: "hanna".into(),
            via: Via::Local { uid: 1001 }
        }
    );
    assert_eq!(
        from_peer(1002, Some("eve"), 1000, Some("pki"), &ops),
        Err(IdentityError::UnmappedUser {
            uid: 1002,
            user: "eve".into()
        })
    );
    assert!(from_peer(1003, None, 1000, Some("pki"), &ops).is_err());
}

fn request(required: u32) -> OperatorRequest {
    OperatorRequest {
        id: "REQ-0001".into(),
        kind: OperationKind::Unblock,
        target: "piv-1".into(),
        requester: "hanna".into(),
        reason: "forgot PIN".into(),
        created: datetime!(2026-12-07 10:00 UTC),
        expires: datetime!(2026-12-08 10:00 UTC),
        required,
        state: RequestState::Pending,
        approvals: Vec::new(),
        denial: None,
        subject_user: Some("bob".into()),
        subject_templates: vec!["employee".into()],
        subject_others: Vec::new(),
        parameters: serde_json::Value::Null,
        started: None,
        finished: None,
        outcome: None,
    }
}

#[test]
fn two_of_n_needs_two_distinct_approvers_other_than_requester_and_subject() {
    let now = datetime!(2026-12-07 11:00 UTC);
    let mut r = request(2);
    assert!(matches!(
        r.approve(&g("hanna"), None, now),
        Err(DecisionError::OwnRequest { .. })
    ));
    assert!(matches!(
        r.approve(&g("carl"), None, now),
        Err(DecisionError::Denied(Denied::Missing {
            permission: Permission::Approve,
            ..
        }))
    ));
    r.approve(&g("olga"), Some("ok".into()), now).unwrap();
    assert_eq!(r.state, RequestState::Pending);
    assert!(matches!(
        r.approve(&g("olga"), None, now),
        Err(DecisionError::AlreadyApproved { .. })
    ));
    r.approve(&g("oscar"), None, now).unwrap();
    assert_eq!(r.state, RequestState::Approved);
    assert_eq!(
        r.approvals
            .iter()
            .map(|a| a.by.as_str())
            .collect::<Vec<_>>(),
        ["olga", "oscar"]
    );
    // Approved: no more decisions.
    assert!(matches!(
        r.approve(&g("alice"), None, now),
        Err(DecisionError::NotPending {
            state: "approved",
            ..
        })
    ));

    // The user the request is about cannot approve it, even holding `approve`.
    let mut about = request(1);
    about.subject_user = Some("olga".into());
    assert!(matches!(
        about.approve(&g("olga"), None, now),
        Err(DecisionError::AboutThemselves { .. })
    ));
}

#[test]
fn an_approver_outside_the_template_scope_cannot_approve() {
    let now = datetime!(2026-12-07 11:00 UTC);
    let mut r = roles();
    r.insert(
        "scoped-approver".into(),
        role(&[Permission::Approve], &["sam"], Some(&["contractor"])),
    );
    let sam = grants(&op("sam"), &r, &groups());
    let mut req = request(1);
    assert!(matches!(
        req.approve(&sam, None, now),
        Err(DecisionError::Denied(Denied::OutOfScope { .. }))
    ));
    assert!(!req.visible_to(&sam));
    assert!(req.visible_to(&g("olga")) && req.visible_to(&g("hanna")));
}

#[test]
fn one_denial_ends_a_request_and_expiry_ends_it_too() {
    let now = datetime!(2026-12-07 11:00 UTC);
    let mut r = request(2);
    r.approve(&g("olga"), None, now).unwrap();
    assert!(
        r.deny(&g("carl"), None, now).is_err(),
        "no approve, not the requester"
    );
    r.deny(&g("oscar"), Some("no ticket".into()), now).unwrap();
    assert_eq!(r.state, RequestState::Denied);
    assert!(matches!(
        r.approve(&g("alice"), None, now),
        Err(DecisionError::NotPending {
            state: "denied",
            ..
        })
    ));

    // The requester may withdraw their own.
    let mut w = request(1);
    w.deny(&g("hanna"), None, now).unwrap();
    assert_eq!(w.state, RequestState::Denied);

    let late = datetime!(2026-12-08 10:00 UTC);
    let mut e = request(1);
    assert_eq!(e.state_at(late), RequestState::Expired);
    assert_eq!(e.state_at(now), RequestState::Pending);
    assert!(matches!(
        e.approve(&g("olga"), None, late),
        Err(DecisionError::NotPending {
            state: "expired",
            ..
        })
    ));
    assert_eq!(
        e.state,
        RequestState::Pending,
        "an expired request is never approved"
    );
}

/// A self-signed certificate with `serial` and its record as Keyfleet would hold it.
fn holder_cert(serial: u8, card: &str) -> (Vec<u8>, crate::inventory::CertRecord) {
    use crate::inventory::{CertRecord, CertStatus};
    use crate::policy::model::{KeyAlgorithm, Slot};
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&[serial]));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Hanna Holder");
    let cert = params.self_signed(&key).unwrap();
    let der = cert.der().to_vec();
    let now = datetime!(2026-12-07 12:00 UTC);
    let record = CertRecord {
        serial: crate::ca::serial_hex(&[serial]),
        user: "hanna".into(),
        card: card.into(),
        template: "employee".into(),
        name: "auth".into(),
        slot: Slot::PivAuthentication,
        ca: "corp".into(),
        profile: String::new(),
        key_algorithm: KeyAlgorithm::EccP256,
        subject: "CN=Hanna Holder".into(),
        sans: Vec::new(),
        not_before: now - time::Duration::days(1),
        not_after: now + time::Duration::days(30),
        revision: String::new(),
        status: CertStatus::Active,
        installed: true,
        request_id: String::new(),
        enrolment: 1,
        updated_at: now,
        pem: cert.pem(),
        key_id: None,
    };
    (der, record)
}

#[test]
fn a_holder_is_the_exact_active_certificate_on_their_card_and_nothing_else() {
    use super::identity::{Holder, holder_from_certificate};
    use crate::inventory::CertStatus;
    let now = datetime!(2026-12-07 12:00 UTC);
    let (der, record) = holder_cert(0x42, "card-1");
    let found = |r: crate::inventory::CertRecord| {
        move |serial: &str| Ok((serial == r.serial).then(|| r.clone()))
    };
    assert_eq!(
        holder_from_certificate(&der, &found(record.clone()), now),
        Ok(Holder {
            user: "hanna".into(),
            card: "card-1".into(),
            serial: "42".into(),
            template: "employee".into(),
        })
    );
    // Another certificate with the same serial is not the one Keyfleet issued.
    let (other, _) = holder_cert(0x42, "card-1");
    assert!(matches!(
        holder_from_certificate(&other, &found(record.clone()), now),
        Err(IdentityError::Unknown { .. })
    ));
    // Revoked, superseded or expired: nobody.
    for status in [CertStatus::Revoked, CertStatus::Superseded] {
        let mut r = record.clone();
        r.status = status;
        assert!(matches!(
            holder_from_certificate(&der, &found(r), now),
            Err(IdentityError::NotActive { .. })
        ));
    }
    assert!(matches!(
        holder_from_certificate(&der, &found(record.clone()), record.not_after),
        Err(IdentityError::Expired { .. })
    ));
    // A certificate on no card identifies no holder.
    let mut r = record.clone();
    r.card = String::new();
    assert!(matches!(
        holder_from_certificate(&der, &found(r), now),
        Err(IdentityError::Unknown { .. })
    ));
    // Garbage and an unreadable inventory are errors, not panics.
    assert!(matches!(
        holder_from_certificate(b"\x30\x03junk", &found(record), now),
        Err(IdentityError::Malformed(_))
    ));
    assert!(matches!(
        holder_from_certificate(&der, &|_| Err("disk".to_string()), now),
        Err(IdentityError::Inventory(_))
    ));
}
