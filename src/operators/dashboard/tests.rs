//! The dashboard's figures, the search and the expiry chart, over inventory, plan and status
//! values built as the controller records them.

use std::collections::BTreeSet;

use time::macros::{date, datetime};
use time::{Duration, OffsetDateTime};

use super::chart::{Bar, BarChart, bar_chart_svg, expiry_chart_svg};
use super::*;
use crate::inventory::{
    CardFacts, CardRecord, CardStatus, CertRecord, CertStatus, Incident, Suspicion,
};
use crate::names::SanValue;
use crate::operators::search::{self, CardMatch, Hits, MAX_HITS, Query, SearchError, UserMatch};
use crate::plan::{Action, ActionKind, Reason, ReasonCode};
use crate::policy::model::{CardType, IncidentKind, KeyAlgorithm, Slot};

const NOW: OffsetDateTime = datetime!(2026-12-07 12:00 UTC);

fn card(id: &str, user: Option<&str>, template: Option<&str>, status: CardStatus) -> CardRecord {
    CardRecord {
        id: id.into(),
        card_type: CardType::Virtual,
        stock: Some("main".into()),
        user: user.map(Into::into),
        template: template.map(Into::into),
        status,
        created_at: NOW - Duration::days(100),
        updated_at: NOW - Duration::days(10),
        temporary: false,
    }
}

fn cert(
    serial: &str,
    user: &str,
    card: &str,
    template: &str,
    not_after: OffsetDateTime,
) -> CertRecord {
    CertRecord {
        serial: serial.into(),
        user: user.into(),
        card: card.into(),
        template: template.into(),
        name: "auth".into(),
        slot: Slot::PivAuthentication,
        ca: "local".into(),
        profile: "piv".into(),
        key_algorithm: KeyAlgorithm::EccP256,
        subject: format!("CN={user} Person,O=Example"),
        sans: vec![SanValue::Email(format!("{user}@example.org"))],
        not_before: NOW - Duration::days(300),
        not_after,
        revision: "r1".into(),
        status: CertStatus::Active,
        installed: true,
        request_id: format!("req-{serial}"),
        enrolment: 1,
        updated_at: NOW - Duration::days(300),
        pem: String::new(),
        key_id: None,
    }
}

fn incident(kind: IncidentKind) -> CardFacts {
    CardFacts {
        incident: Some(Incident {
            kind,
            reported_by: "helpdesk".into(),
            at: NOW - Duration::days(1),
            comment: String::new(),
        }),
        ..CardFacts::default()
    }
}

fn scope_of(templates: &[&str]) -> Scope {
    Scope::Templates(
        templates
            .iter()
            .map(|t| t.to_string())
            .collect::<BTreeSet<_>>(),
    )
}

fn inputs<'a>(inv: &'a Inventory, scope: &'a Scope) -> DashboardInputs<'a> {
    DashboardInputs {
        inventory: inv,
        plan: None,
        status: None,
        findings: None,
        requests: &[],
        now: NOW,
        scope,
    }
}

/// Every status a card can show: active, temporary, forgotten, lost, damaged, suspect,
/// suspended, blank, revoked, retired; two templates.
fn fleet() -> Inventory {
    let mut inv = Inventory::default();
    let mut add = |c: CardRecord| {
        inv.cards.insert(c.id.clone(), c);
    };
    add(card(
        "vc-a1",
        Some("alice"),
        Some("staff"),
        CardStatus::Active,
    ));
    add(card(
        "vc-a2",
        Some("bob"),
        Some("staff"),
        CardStatus::Active,
    ));
    add(CardRecord {
        temporary: true,
        ..card("vc-t1", Some("carol"), Some("staff"), CardStatus::Active)
    });
    add(card(
        "vc-f1",
        Some("carol"),
        Some("staff"),
        CardStatus::Suspended,
    ));
    add(card("vc-l1", Some("dave"), Some("admin"), CardStatus::Lost));
    add(card(
        "vc-d1",
        Some("erin"),
        Some("admin"),
        CardStatus::Damaged,
    ));
    add(card(
        "vc-s1",
        Some("frank"),
        Some("admin"),
        CardStatus::Active,
    ));
    add(card(
        "vc-u1",
        Some("gina"),
        Some("staff"),
        CardStatus::Suspended,
    ));
    add(card("vc-b1", None, None, CardStatus::Blank));
    add(card("vc-b2", None, None, CardStatus::Blank));
    add(card(
        "vc-r1",
        Some("hank"),
        Some("staff"),
        CardStatus::Revoked,
    ));
    add(card("vc-x1", None, None, CardStatus::Retired));
    inv.facts
        .insert("vc-f1".into(), incident(IncidentKind::Forgotten));
    inv.facts
        .insert("vc-l1".into(), incident(IncidentKind::Lost));
    inv.facts.insert(
        "vc-s1".into(),
        CardFacts {
            suspect: Some(Suspicion {
                since: NOW,
                reason: "management key refused".into(),
            }),
            ..CardFacts::default()
        },
    );
    inv
}

fn counts(f: &CardFigures) -> Vec<(&str, u32)> {
    f.by_status
        .iter()
        .map(|s| (s.status.as_str(), s.count))
        .collect()
}

#[test]
fn cards_by_the_status_inventory_shows_in_life_cycle_order() {
    let inv = fleet();
    let f = card_figures(&inv, &Scope::All);
    assert_eq!(f.total, 12);
    assert_eq!(
        counts(&f),
        vec![
            ("active", 2),
            ("temporary", 1),
            ("suspended", 1),
            ("forgotten", 1),
            ("suspect", 1),
            ("lost", 1),
            ("damaged", 1),
            ("revoked", 1),
            ("blank", 2),
            ("retired", 1),
        ]
    );
    // The same status `keyfleet inventory` shows, card by card.
    let view = crate::views::InventoryView::of(&inv, NOW);
    for s in &f.by_status {
        let n = view.cards.iter().filter(|c| c.status == s.status).count();
        assert_eq!(n as u32, s.count, "{}", s.status);
    }
}

#[test]
fn cards_within_a_template_scope_leave_out_other_templates_and_blank_cards() {
    let inv = fleet();
    let f = card_figures(&inv, &scope_of(&["admin"]));
    assert_eq!(f.total, 3);
    assert_eq!(
        counts(&f),
        vec![("suspect", 1), ("lost", 1), ("damaged", 1)]
    );
    let none = card_figures(&inv, &scope_of(&["nothing"]));
    assert_eq!((none.total, none.by_status.len()), (0, 0));
}

#[test]
fn expiry_weeks_at_their_boundaries() {
    let mut inv = Inventory::default();
    let week = Duration::days(7);
    let add = |inv: &mut Inventory, serial: &str, not_after, status| {
        let mut c = cert(serial, "alice", "vc-a1", "staff", not_after);
        c.status = status;
        inv.certs.insert(serial.into(), c);
    };
    add(
        &mut inv,
        "01",
        NOW + Duration::seconds(1),
        CertStatus::Active,
    ); // week 0
    add(
        &mut inv,
        "02",
        NOW + week - Duration::seconds(1),
        CertStatus::Active,
    ); // week 0
    add(&mut inv, "03", NOW + week, CertStatus::Active); // exactly 7 days: week 1
    add(&mut inv, "04", NOW + week * 25, CertStatus::Suspended); // week 25 (live, on hold)
    add(
        &mut inv,
        "05",
        NOW + week * 26 - Duration::seconds(1),
        CertStatus::Active,
    ); // week 25
    add(&mut inv, "06", NOW + week * 26, CertStatus::Active); // in 26 weeks: later
    add(
        &mut inv,
        "07",
        NOW + Duration::days(3650),
        CertStatus::Active,
    ); // later
    add(&mut inv, "08", NOW, CertStatus::Active); // expired at notAfter
    add(&mut inv, "09", NOW - Duration::days(2), CertStatus::Active); // expired
    add(&mut inv, "10", NOW + Duration::days(3), CertStatus::Revoked); // not live
    add(
        &mut inv,
        "11",
        NOW + Duration::days(3),
        CertStatus::Superseded,
    ); // not live
    add(&mut inv, "12", NOW - Duration::days(3), CertStatus::Revoked); // not live
    let f = expiry_figures(&inv, &Scope::All, NOW);
    assert_eq!(f.first_week, date!(2026 - 12 - 07));
    assert_eq!(f.weeks.len(), EXPIRY_WEEKS);
    let mut want = vec![0u32; EXPIRY_WEEKS];
    want[0] = 2;
    want[1] = 1;
    want[25] = 2;
    assert_eq!(f.weeks, want);
    assert_eq!((f.expired, f.later), (2, 2));
    // Expired as `keyfleet inventory` prints it.
    let expired = inv
        .certs
        .values()
        .filter(|c| crate::views::display_status(c, NOW) == "expired")
        .count();
    assert_eq!(expired as u32, f.expired);
    let json = serde_json::to_value(&f).unwrap();
    assert_eq!(json["firstWeek"], "2026-12-07");
}

#[test]
fn expiry_within_a_scope() {
    let mut inv = Inventory::default();
    for (s, t) in [("01", "staff"), ("02", "admin"), ("03", "admin")] {
        inv.certs.insert(
            s.into(),
            cert(s, "alice", "vc-a1", t, NOW + Duration::days(1)),
        );
    }
    assert_eq!(expiry_figures(&inv, &scope_of(&["admin"]), NOW).weeks[0], 2);
    assert_eq!(expiry_figures(&inv, &Scope::All, NOW).weeks[0], 3);
}

fn action(kind: ActionKind, user: &str, template: Option<&str>, card: &str) -> Action {
    Action {
        kind,
        user: user.into(),
        template: template.map(Into::into),
        card: Some(card.into()),
        stock: None,
        slot: Some(Slot::PivAuthentication),
        slots: vec![Slot::PivAuthentication],
        serials: vec![],
        reason: Reason {
            code: ReasonCode::NotIssued,
            message: "test".into(),
        },
        waiting_for_card: false,
        waiting_for_holder: false,
        card_suspect: false,
    }
}

fn status_with(plan: &Plan) -> ControllerStatus {
    let staff = &plan.actions[0];
    let admin = &plan.actions[1];
    ControllerStatus {
        pid: 42,
        ready: true,
        last_pass: Some(PassSummary {
            number: 7,
            started_at: Some(NOW - Duration::minutes(5)),
            duration_ms: 1234,
            planned: 2,
            failed: 1,
            error: Some("directory unreachable".into()),
            ..PassSummary::default()
        }),
        policy_error: Some("template staff: bad".into()),
        pending: vec![PendingAction {
            id: staff.id(),
            kind: "renew".into(),
            user: "alice".into(),
            waiting_for: "card vc-a1".into(),
        }],
        backoff: vec![
            BackoffView {
                id: admin.id(),
                kind: "issue".into(),
                user: "dave".into(),
                attempts: 3,
                last_error: "CA refused".into(),
                permanent: false,
                retry_at: Some(NOW + Duration::minutes(10)),
            },
            BackoffView {
                id: "gone-from-the-plan".into(),
                kind: "issue".into(),
                user: "zed".into(),
                attempts: 1,
                last_error: "CA refused".into(),
                permanent: true,
                retry_at: None,
            },
        ],
        held: vec![
            HeldRevocation {
                id: "h1".into(),
                user: "bob".into(),
                card: Some("vc-a2".into()),
                template: Some("staff".into()),
                serials: vec!["0A".into()],
                reason: "left".into(),
            },
            HeldRevocation {
                id: "h2".into(),
                user: "erin".into(),
                card: Some("vc-d1".into()),
                template: Some("admin".into()),
                serials: vec!["0B".into()],
                reason: "left".into(),
            },
        ],
        ..ControllerStatus::default()
    }
}

fn plan_of(actions: Vec<Action>) -> Plan {
    Plan {
        complete: true,
        actions,
        safety_valve: crate::plan::SafetyReport {
            tripped: false,
            allowed: false,
            revoked_users: 0,
            holders: 0,
            limits: Default::default(),
        },
        conflicts: vec![],
        errors: vec![],
        withheld_revocations: 0,
    }
}

#[test]
fn controller_figures_are_the_status_and_a_scope_cuts_them() {
    let inv = fleet();
    let plan = plan_of(vec![
        action(ActionKind::Renew, "alice", Some("staff"), "vc-a1"),
        action(ActionKind::Issue, "dave", Some("admin"), "vc-l1"),
    ]);
    let status = status_with(&plan);
    let all = Scope::All;
    let d = Dashboard::of(DashboardInputs {
        plan: Some(&plan),
        status: Some(&status),
        ..inputs(&inv, &all)
    });
    let c = d.controller.as_ref().unwrap();
    assert_eq!(
        c.pass,
        PassFigures::Fleet {
            last_pass: status.last_pass.clone().map(Box::new),
            policy_error: status.policy_error.clone(),
        }
    );
    assert_eq!((c.pending.len(), c.backoff.len(), c.held.len()), (1, 2, 2));
    assert_eq!(d.templates, None);

    let admin = scope_of(&["admin"]);
    let d = Dashboard::of(DashboardInputs {
        plan: Some(&plan),
        status: Some(&status),
        ..inputs(&inv, &admin)
    });
    let c = d.controller.as_ref().unwrap();
    // Only timing: the counts and errors cover other templates.
    assert_eq!(
        c.pass,
        PassFigures::Scoped {
            last_pass: Some(PassTiming {
                number: 7,
                started_at: Some("2026-12-07T11:55:00Z".into()),
                duration_ms: 1234,
            })
        }
    );
    let json = serde_json::to_string(&d).unwrap();
    assert!(!json.contains("directory unreachable") && !json.contains("template staff"));
    assert!(c.pending.is_empty());
    assert_eq!(
        c.backoff
            .iter()
            .map(|b| b.user.as_str())
            .collect::<Vec<_>>(),
        ["dave"]
    );
    assert_eq!(
        c.held.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
        ["h2"]
    );
    assert_eq!(d.templates, Some(vec!["admin".to_string()]));
    // No status yet: no controller figures.
    assert!(Dashboard::of(inputs(&inv, &all)).controller.is_none());
}

#[test]
fn drift_is_the_audit_findings_within_the_scope() {
    let mut inv = fleet();
    inv.certs.insert(
        "0A".into(),
        cert("0A", "alice", "vc-a1", "staff", NOW + Duration::days(3)),
    );
    inv.certs.insert(
        "0B".into(),
        cert("0B", "frank", "vc-s1", "admin", NOW + Duration::days(3)),
    );
    let plan = plan_of(vec![]);
    let cas = crate::apply::CaRegistry::default();
    let findings = crate::drift::findings(&plan, &inv, &cas, NOW, 30);
    assert_eq!(findings.len(), 2, "{findings:?}");
    let all = Scope::All;
    let d = Dashboard::of(DashboardInputs {
        plan: Some(&plan),
        findings: Some(&findings),
        ..inputs(&inv, &all)
    });
    let drift = d.drift.unwrap();
    assert!(!drift.clean && drift.complete);
    assert_eq!(drift.findings, findings);
    let staff = scope_of(&["staff"]);
    let d = Dashboard::of(DashboardInputs {
        plan: Some(&plan),
        findings: Some(&findings),
        ..inputs(&inv, &staff)
    });
    let drift = d.drift.unwrap();
    assert_eq!(drift.findings.len(), 1);
    assert_eq!(drift.findings[0].serial.as_deref(), Some("0A"));
    // No plan: no drift report.
    assert!(Dashboard::of(inputs(&inv, &all)).drift.is_none());
}

#[test]
fn open_requests_are_the_pending_ones() {
    use crate::operators::requests::RequestState;
    use crate::policy::model::OperationKind;
    let view = |id: &str, state| RequestView {
        id: id.into(),
        kind: OperationKind::Unblock,
        target: "vc-a1".into(),
        requester: "helpdesk".into(),
        state,
        approvals: vec![],
        required: 1,
        reason: "locked out".into(),
        created: "2026-12-07T10:00:00Z".into(),
        expires: "2026-12-08T10:00:00Z".into(),
        denied_by: None,
        outcome: None,
    };
    let requests = vec![
        view("r1", RequestState::Pending),
        view("r2", RequestState::Done),
        view("r3", RequestState::Expired),
        view("r4", RequestState::Pending),
    ];
    let inv = Inventory::default();
    let all = Scope::All;
    let d = Dashboard::of(DashboardInputs {
        requests: &requests,
        ..inputs(&inv, &all)
    });
    assert_eq!(d.requests.count, 2);
    let ids: Vec<&str> = d.requests.list.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["r1", "r4"]);
}

fn with_certs() -> Inventory {
    let mut inv = fleet();
    for (s, user, card, t) in [
        ("7F01AA", "alice", "vc-a1", "staff"),
        ("7F02BB", "bob", "vc-a2", "staff"),
        ("1234CC", "frank", "vc-s1", "admin"),
    ] {
        inv.certs
            .insert(s.into(), cert(s, user, card, t, NOW + Duration::days(90)));
    }
    inv.certs.get_mut("7F01AA").unwrap().subject = "CN=Alice Lidell,O=Example".into();
    inv.certs.get_mut("7F02BB").unwrap().subject = "CN=Bob Alice,O=Example".into();
    inv
}

#[test]
fn search_users_by_uid_name_and_mail_within_the_scope() {
    let inv = with_certs();
    let users =
        |scope: &Scope, q: &str| match search::search(&inv, scope, Query::User(q)).unwrap().hits {
            Hits::Users { users } => users
                .into_iter()
                .map(|u| (u.uid, u.matched))
                .collect::<Vec<_>>(),
            Hits::Cards { .. } => panic!("cards for a user search"),
        };
    // The exact uid first, then the other matches.
    assert_eq!(
        users(&Scope::All, "alice"),
        [
            ("alice".to_string(), UserMatch::Uid),
            ("bob".to_string(), UserMatch::Name)
        ]
    );
    assert_eq!(
        users(&Scope::All, "LIDELL"),
        [("alice".to_string(), UserMatch::Name)]
    );
    assert_eq!(
        users(&Scope::All, "bob@EXAMPLE"),
        [("bob".to_string(), UserMatch::Mail)]
    );
    let found = users(&Scope::All, "LIC");
    assert_eq!(found[0], ("alice".to_string(), UserMatch::UidPart));
    // frank's only card and certificate are `admin`: outside a `staff` scope.
    assert!(users(&scope_of(&["staff"]), "frank").is_empty());
    assert_eq!(users(&scope_of(&["admin"]), "frank").len(), 1);
    let hit = match search::search(&inv, &Scope::All, Query::User("alice"))
        .unwrap()
        .hits
    {
        Hits::Users { users } => users.into_iter().next().unwrap(),
        Hits::Cards { .. } => unreachable!(),
    };
    assert_eq!(hit.cards, ["vc-a1"]);
    assert_eq!(hit.mails, ["alice@example.org"]);
    assert_eq!(hit.names, ["Alice Lidell"]);
}

#[test]
fn search_cards_by_id_and_serial_prefix() {
    let inv = with_certs();
    let cards =
        |scope: &Scope, q: &str| match search::search(&inv, scope, Query::Card(q)).unwrap().hits {
            Hits::Cards { cards } => cards
                .into_iter()
                .map(|c| (c.card.id, c.matched, c.serial))
                .collect::<Vec<_>>(),
            Hits::Users { .. } => panic!("users for a card search"),
        };
    assert_eq!(
        cards(&Scope::All, "VC-A1"),
        [("vc-a1".into(), CardMatch::Id, None)]
    );
    assert_eq!(
        cards(&Scope::All, "7f:01"),
        [("vc-a1".into(), CardMatch::Serial, Some("7F01AA".into()))]
    );
    let both = cards(&Scope::All, "7F0");
    assert_eq!(both.len(), 2);
    assert!(cards(&scope_of(&["admin"]), "7F0").is_empty());
    // Blank cards are outside a template scope.
    assert_eq!(cards(&Scope::All, "vc-b").len(), 2);
    assert!(cards(&scope_of(&["staff"]), "vc-b").is_empty());
    // The shown status comes with the card.
    let lost = match search::search(&inv, &Scope::All, Query::Card("vc-l1"))
        .unwrap()
        .hits
    {
        Hits::Cards { cards } => cards.into_iter().next().unwrap(),
        Hits::Users { .. } => unreachable!(),
    };
    assert_eq!(lost.card.status, "lost");
}

#[test]
fn search_is_bounded_and_refuses_empty_or_huge_queries() {
    let mut inv = Inventory::default();
    for i in 0..(MAX_HITS + 5) {
        let id = format!("vc-{i:03}");
        inv.cards.insert(
            id.clone(),
            card(
                &id,
                Some(&format!("user{i:03}")),
                Some("staff"),
                CardStatus::Active,
            ),
        );
    }
    let r = search::search(&inv, &Scope::All, Query::Card("vc-")).unwrap();
    let Hits::Cards { cards } = &r.hits else {
        panic!("cards expected")
    };
    assert_eq!(cards.len(), MAX_HITS);
    assert!(r.cut);
    let r = search::search(&inv, &Scope::All, Query::User("user00")).unwrap();
    assert!(!r.cut);
    assert_eq!(
        search::search(&inv, &Scope::All, Query::User("  ")),
        Err(SearchError::Empty)
    );
    let huge = "x".repeat(search::MAX_QUERY + 1);
    assert_eq!(
        search::search(&inv, &Scope::All, Query::Card(&huge)),
        Err(SearchError::TooLong)
    );
}

/// The SVG parses as XML, has no inline style or script, and says what it shows.
fn check_svg(svg: &str) -> roxmltree::Document<'_> {
    let doc = roxmltree::Document::parse(svg).expect("the chart is well-formed XML");
    for node in doc.descendants().filter(|n| n.is_element()) {
        let name = node.tag_name().name();
        assert!(name != "style" && name != "script", "<{name}> in the chart");
        assert!(node.attribute("style").is_none(), "style= on <{name}>");
        assert!(
            node.attributes().all(|a| !a.name().starts_with("on")),
            "an event handler on <{name}>"
        );
    }
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(root.attribute("role"), Some("img"));
    doc
}

fn bar_titles(doc: &roxmltree::Document<'_>) -> Vec<String> {
    doc.descendants()
        .filter(|n| n.has_tag_name("rect"))
        .map(|r| {
            r.children()
                .find(|c| c.has_tag_name("title"))
                .and_then(|t| t.text())
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[test]
fn expiry_chart_is_accessible_svg_without_inline_style() {
    let mut weeks = vec![0u32; EXPIRY_WEEKS];
    weeks[0] = 3;
    weeks[4] = 12;
    let svg = expiry_chart_svg(&weeks, date!(2026 - 12 - 07));
    let doc = check_svg(&svg);
    let root = doc.root_element();
    let text = |tag: &str| {
        root.children()
            .find(|c| c.has_tag_name(tag))
            .and_then(|t| t.text())
            .unwrap_or_default()
            .to_string()
    };
    assert!(text("title").contains("26 weeks"));
    let desc = text("desc");
    assert!(desc.starts_with("15 certificate(s)"), "{desc}");
    assert!(desc.contains("week of 7 Dec 2026: 3"), "{desc}");
    assert!(desc.contains("week of 4 Jan 2027: 12"), "{desc}");
    let titles = bar_titles(&doc);
    assert_eq!(titles.len(), EXPIRY_WEEKS);
    assert_eq!(titles[0], "week of 7 Dec 2026: 3 certificate(s)");
    assert_eq!(titles[25], "week of 31 May 2027: 0 certificate(s)");
    let labels: Vec<&str> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("label"))
        .filter_map(|n| n.text())
        .collect();
    assert_eq!(labels, ["Week starting", "Certificates expiring"]);
    // The taller bar is the larger count.
    let heights: Vec<f64> = doc
        .descendants()
        .filter(|n| n.has_tag_name("rect"))
        .map(|r| r.attribute("height").unwrap().parse().unwrap())
        .collect();
    assert!(heights[4] > heights[0] && heights[0] > 0.0 && heights[1] == 0.0);
}

#[test]
fn expiry_chart_is_sane_when_empty_or_one_count_is_huge() {
    let svg = expiry_chart_svg(&[0; EXPIRY_WEEKS], date!(2026 - 12 - 07));
    let doc = check_svg(&svg);
    assert!(svg.contains("None expires"));
    for r in doc.descendants().filter(|n| n.has_tag_name("rect")) {
        assert_eq!(r.attribute("height"), Some("0.0"));
    }
    let mut weeks = vec![1u32; EXPIRY_WEEKS];
    weeks[3] = u32::MAX;
    let svg = expiry_chart_svg(&weeks, date!(2026 - 12 - 07));
    let doc = check_svg(&svg);
    let heights: Vec<f64> = doc
        .descendants()
        .filter(|n| n.has_tag_name("rect"))
        .map(|r| r.attribute("height").unwrap().parse().unwrap())
        .collect();
    // Every bar inside the plot; the small ones still visible.
    assert!(
        heights.iter().all(|h| (1.0..=204.0).contains(h)),
        "{heights:?}"
    );
    assert!(svg.contains(&u32::MAX.to_string()));
    // No week at all, and a first week at the end of the calendar: no panic.
    check_svg(&expiry_chart_svg(&[], date!(2026 - 12 - 07)));
    check_svg(&expiry_chart_svg(&[5; EXPIRY_WEEKS], time::Date::MAX));
}

#[test]
fn chart_text_is_escaped() {
    let hostile = "<script>alert('x')</script> & \"quoted\"";
    let svg = bar_chart_svg(&BarChart {
        title: hostile.into(),
        desc: hostile.into(),
        x_label: hostile.into(),
        y_label: hostile.into(),
        unit: hostile.into(),
        bars: vec![Bar {
            label: hostile.into(),
            tick: Some(hostile.into()),
            value: 2,
        }],
    });
    assert!(!svg.contains("<script"));
    let doc = check_svg(&svg);
    let title = doc
        .root_element()
        .children()
        .find(|c| c.has_tag_name("title"))
        .and_then(|t| t.text())
        .unwrap();
    assert_eq!(title, hostile);
    assert_eq!(bar_titles(&doc), [format!("{hostile}: 2 {hostile}")]);
}
