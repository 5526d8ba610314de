//! Planner tests: table cases for every rule, and properties over random desired/actual states
//! (apply-then-plan is empty; no revocation from an incomplete observation; the valve trips).

use std::collections::BTreeSet;

use proptest::prelude::*;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::*;
use crate::desired::{Desired, DesiredCert, DesiredCredential, StockInfo, TemplateRules, revision};
use crate::inventory::{CardRecord, CardStatus, CertRecord, CertStatus, Inventory};
use crate::names::{DistinguishedName, SanValue};
use crate::policy::model::{
    CardType, KeyAlgorithm, KeyGeneration, OnEntitlementLoss, OnUserDisabled, Slot,
};

const NOW: OffsetDateTime = datetime!(2026-11-28 12:00 UTC);
const DAY: u64 = 86_400;

fn cert(slot: Slot, user: &str, cn: &str) -> DesiredCert {
    let subject = DistinguishedName::parse(&format!("CN={cn},O=Example")).unwrap();
    let sans = vec![SanValue::Email(format!("{user}@example.org"))];
    DesiredCert {
        name: slot.hex().to_lowercase(),
        slot,
        authority: "lab".into(),
        profile: "piv-auth".into(),
        key_algorithm: KeyAlgorithm::EccP256,
        key_generation: KeyGeneration::OnCard,
        archive: false,
        revision: revision(
            slot,
            "lab",
            "piv-auth",
            KeyAlgorithm::EccP256,
            KeyGeneration::OnCard,
            &subject,
            &sans,
        ),
        subject,
        sans,
        validity_secs: 365 * DAY,
        renew_before_secs: 30 * DAY,
    }
}

fn credential(user: &str, slots: &[Slot]) -> DesiredCredential {
    DesiredCredential {
        user: user.into(),
        template: "employee".into(),
        card_type: CardType::Virtual,
        user_disabled: false,
        on_user_disabled: OnUserDisabled::Suspend,
        certificates: slots.iter().map(|s| (*s, cert(*s, user, user))).collect(),
        bound_card: None,
        stock: Some("virtual".into()),
        pin_length: 6,
        puk_length: 8,
        management_key: crate::policy::model::ManagementKeyPolicy::default(),
    }
}

fn desired(creds: Vec<DesiredCredential>, users: &[&str]) -> Desired {
    Desired {
        credentials: creds
            .into_iter()
            .map(|c| ((c.user.clone(), c.template.clone()), c))
            .collect(),
        users: users.iter().map(|u| (u.to_string(), false)).collect(),
        templates: [(
            "employee".to_string(),
            TemplateRules {
                on_entitlement_loss: OnEntitlementLoss::Revoke,
                on_user_disabled: OnUserDisabled::Suspend,
            },
        )]
        .into(),
        stocks: vec![StockInfo {
            name: "virtual".into(),
            card_type: CardType::Virtual,
            auto_bind: true,
            virtual_max: None,
            is_virtual: true,
        }],
        complete: true,
        ..Desired::default()
    }
}

fn opts() -> PlanOptions {
    PlanOptions {
        now: NOW,
        limits: SafetyLimits::default(),
        allow_mass_revocation: false,
        targets: None,
    }
}

/// An in-memory executor: applies every runnable action to the inventory the way the real
/// executors record their effects. Used to check that planning after applying is empty.
fn simulate(
    plan: &Plan,
    desired: &Desired,
    inv: &mut Inventory,
    presence: &mut Presence,
    now: OffsetDateTime,
) {
    let mut serial = inv.certs.len() + 1000;
    let mut new_card = inv.cards.len() + 1000;
    for a in plan.runnable() {
        let card_id = match (&a.card, a.kind) {
            (Some(id), _) => id.clone(),
            (None, ActionKind::Issue) => {
                new_card += 1;
                let id = format!("vc-new-{new_card}");
                presence.cards.insert(id.clone());
                id
            }
            (None, _) => panic!("action without card: {a:?}"),
        };
        let mut issue_slot = |inv: &mut Inventory, slot: Slot| {
            let want = &desired.credentials[&(a.user.clone(), a.template.clone().unwrap())]
                .certificates[&slot];
            serial += 1;
            let s = format!("{serial:08X}");
            inv.certs.insert(
                s.clone(),
                CertRecord {
                    serial: s,
                    user: a.user.clone(),
                    card: card_id.clone(),
                    template: a.template.clone().unwrap(),
                    name: want.name.clone(),
                    slot,
                    ca: want.authority.clone(),
                    profile: want.profile.clone(),
                    key_algorithm: want.key_algorithm,
                    subject: want.subject.to_string(),
                    sans: want.sans.clone(),
                    not_before: now,
                    not_after: now + Duration::seconds(want.validity_secs as i64),
                    revision: want.revision.clone(),
                    status: CertStatus::Active,
                    installed: true,
                    request_id: String::new(),
                    updated_at: now,
                    pem: String::new(),
                },
            );
        };
        let set_certs = |inv: &mut Inventory, serials: &[String], st: CertStatus| {
            for s in serials {
                inv.certs.get_mut(s).unwrap().status = st;
            }
        };
        match a.kind {
            ActionKind::Issue if a.reason.code == ReasonCode::InterruptedIssuance => {
                for s in &a.serials {
                    inv.certs.get_mut(s).unwrap().installed = true;
                }
            }
            ActionKind::Issue => {
                let card = inv.cards.entry(card_id.clone()).or_insert(CardRecord {
                    id: card_id.clone(),
                    card_type: CardType::Virtual,
                    stock: a.stock.clone(),
                    user: None,
                    template: None,
                    status: CardStatus::Blank,
                    created_at: now,
                    updated_at: now,
                });
                card.user = Some(a.user.clone());
                card.template = a.template.clone();
                card.status = CardStatus::Active;
                for slot in &a.slots {
                    issue_slot(inv, *slot);
                }
            }
            ActionKind::Renew | ActionKind::Reissue => {
                set_certs(inv, &a.serials, CertStatus::Superseded);
                if a.reason.code != ReasonCode::SlotRemoved {
                    issue_slot(inv, a.slot.unwrap());
                }
            }
            ActionKind::Suspend => {
                set_certs(inv, &a.serials, CertStatus::Suspended);
                inv.cards.get_mut(&card_id).unwrap().status = CardStatus::Suspended;
            }
            ActionKind::Resume => {
                set_certs(inv, &a.serials, CertStatus::Active);
                inv.cards.get_mut(&card_id).unwrap().status = CardStatus::Active;
            }
            ActionKind::Revoke => {
                set_certs(inv, &a.serials, CertStatus::Revoked);
                inv.cards.get_mut(&card_id).unwrap().status = CardStatus::Revoked;
            }
            ActionKind::Retire => {
                let c = inv.cards.get_mut(&card_id).unwrap();
                c.status = CardStatus::Blank;
                c.user = None;
                c.template = None;
            }
        }
    }
}

fn kinds(plan: &Plan) -> Vec<(ActionKind, ReasonCode, String)> {
    plan.actions
        .iter()
        .map(|a| (a.kind, a.reason.code, a.user.clone()))
        .collect()
}

fn converge(d: &Desired, inv: &mut Inventory, presence: &mut Presence) -> Plan {
    let p = plan(d, inv, presence, &opts());
    simulate(&p, d, inv, presence, NOW);
    p
}

#[test]
fn issues_to_every_entitled_user_then_nothing() {
    let d = desired(
        vec![
            credential("alice", &[Slot::PivAuthentication, Slot::DigitalSignature]),
            credential("bob", &[Slot::PivAuthentication]),
        ],
        &["alice", "bob"],
    );
    let mut inv = Inventory::default();
    let mut presence = Presence::default();
    let p = converge(&d, &mut inv, &mut presence);
    assert_eq!(
        kinds(&p),
        [
            (
                ActionKind::Issue,
                ReasonCode::NotIssued,
                "alice".to_string()
            ),
            (ActionKind::Issue, ReasonCode::NotIssued, "bob".to_string())
        ]
    );
    assert_eq!(
        p.actions[0].slots,
        [Slot::PivAuthentication, Slot::DigitalSignature]
    );
    assert!(
        p.actions
            .iter()
            .all(|a| !a.waiting_for_card && a.card.is_none())
    );
    assert_eq!(inv.certs.len(), 3);
    let again = plan(&d, &inv, &presence, &opts());
    assert!(again.is_empty(), "{:#?}", again.actions);
}

#[test]
fn plan_is_deterministic() {
    let d = desired(
        (0..50)
            .map(|i| credential(&format!("u{i:02}"), &[Slot::PivAuthentication]))
            .collect(),
        &[],
    );
    let a = plan(&d, &Inventory::default(), &Presence::default(), &opts());
    let b = plan(&d, &Inventory::default(), &Presence::default(), &opts());
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    let users: Vec<&str> = a.actions.iter().map(|x| x.user.as_str()).collect();
    let mut sorted = users.clone();
    sorted.sort();
    assert_eq!(users, sorted);
}

#[test]
fn revokes_and_retires_when_entitlement_is_lost() {
    let mut d = desired(
        vec![
            credential("alice", &[Slot::PivAuthentication]),
            credential("bob", &[Slot::PivAuthentication]),
        ],
        &["alice", "bob"],
    );
    let mut inv = Inventory::default();
    let mut presence = Presence::default();
    converge(&d, &mut inv, &mut presence);
    d.credentials.remove(&("bob".into(), "employee".into()));
    let p = plan(&d, &inv, &presence, &opts());
    // 1 of 2 holders is 50 %: over the 25 % default, so it trips.
    assert!(p.safety_valve.tripped && p.refused());
    let mut o = opts();
    o.allow_mass_revocation = true;
    let p = plan(&d, &inv, &presence, &o);
    assert!(!p.refused());
    assert_eq!(
        kinds(&p),
        [
            (
                ActionKind::Revoke,
                ReasonCode::NoLongerEntitled,
                "bob".into()
            ),
            (ActionKind::Retire, ReasonCode::CardRevoked, "bob".into()),
        ]
    );
    assert_eq!(p.actions[0].serials.len(), 1);
    simulate(&p, &d, &mut inv, &mut presence, NOW);
    assert!(plan(&d, &inv, &presence, &opts()).is_empty());
    // The wiped card went back to stock and is reused for the next new user.
    d.credentials.insert(
        ("carol".into(), "employee".into()),
        credential("carol", &[Slot::PivAuthentication]),
    );
    let p = plan(&d, &inv, &presence, &opts());
    let bobs_card = inv
        .cards
        .values()
        .find(|c| c.status == CardStatus::Blank)
        .unwrap();
    assert_eq!(p.actions[0].card.as_deref(), Some(bobs_card.id.as_str()));
}

#[test]
fn user_gone_and_template_removed_reasons() {
    let mut d = desired(
        vec![credential("alice", &[Slot::PivAuthentication])],
        &["alice"],
    );
    let mut inv = Inventory::default();
    let mut presence = Presence::default();
    converge(&d, &mut inv, &mut presence);
    let mut o = opts();
    o.allow_mass_revocation = true;
    d.credentials.clear();
    d.users.clear();
    assert_eq!(
        plan(&d, &inv, &presence, &o).actions[0].reason.code,
        ReasonCode::UserGone
    );
    d.templates.clear();
    assert_eq!(
        plan(&d, &inv, &presence, &o).actions[0].reason.code,
        ReasonCode::TemplateRemoved
    );
}

#[test]
fn no_revocation_from_an_incomplete_observation() {
    let mut d = desired(
        vec![credential("alice", &[Slot::PivAuthentication])],
        &["alice"],
    );
    let mut inv = Inventory::default();
    let mut presence = Presence::default();
    converge(&d, &mut inv, &mut presence);
    d.credentials.clear();
    d.complete = false;
    d.credentials.insert(
        ("new".into(), "employee".into()),
        credential("new", &[Slot::PivAuthentication]),
    );
    let p = plan(&d, &inv, &presence, &opts());
    assert!(!p.complete);
    assert_eq!(p.withheld_revocations, 1);
    assert_eq!(
        kinds(&p),
        [(ActionKind::Issue, ReasonCode::NotIssued, "new".into())]
    );
}

#[test]
fn on_entitlement_loss_none_keeps_the_credential() {
    let mut d = desired(
        vec![credential("alice", &[Slot::PivAuthentication])],
        &["alice"],
    );
    let mut inv = Inventory::default();
    let mut presence = Presence::default();
    converge(&d, &mut inv, &mut presence);
    d.credentials.clear();
    d.templates.get_mut("employee").unwrap().on_entitlement_loss = OnEntitlementLoss::None;
    assert!(plan(&d, &inv, &presence, &opts()).is_empty());
}

#[test]
fn disabled_user_is_suspended_then_resumed() {
    let mut d = desired(
        vec![credential(
            "alice",
            &[Slot::PivAuthentication, Slot::DigitalSignature],
        )],
        &["alice"],
    );
    let mut inv = Inventory::default();
    let mut presence = Presence::default();
    converge(&d, &mut inv, &mut presence);
    d.credentials
        .values_mut()
        .for_each(|c| c.user_disabled = true);
    let p = converge(&d, &mut inv, &mut presence);
    assert_eq!(
        kinds(&p),
        [(
            ActionKind::Suspend,
            ReasonCode::UserDisabled,
            "alice".into()
        )]
    );
    assert_eq!(p.actions[0].serials.len(), 2);
    assert!(plan(&d, &inv, &presence, &opts()).is_empty());
    d.credentials
        .values_mut()
        .for_each(|c| c.user_disabled = false);
    let p = converge(&d, &mut inv, &mut presence);
    assert_eq!(
        kinds(&p),
        [(ActionKind::Resume, ReasonCode::UserEnabled, "alice".into())]
    );
    assert!(plan(&d, &inv, &presence, &opts()).is_empty());
    // Revoke policy: disabled means revoke (and wipe).
    d.credentials.values_mut().for_each(|c| {
        c.user_disabled = true;
        c.on_user_disabled = OnUserDisabled::Revoke;
    });
    let mut o = opts();
    o.allow_mass_revocation = true;
    let p = plan(&d, &inv, &presence, &o);
    assert_eq!(p.actions[0].kind, ActionKind::Revoke);
    assert_eq!(p.actions[0].reason.code, ReasonCode::UserDisabled);
}

#[test]
fn never_issues_to_a_disabled_account() {
    let mut d = desired(
        vec![credential("alice", &[Slot::PivAuthentication])],
        &["alice"],
    );
    d.credentials
        .values_mut()
        .for_each(|c| c.user_disabled = true);
    assert!(plan(&d, &Inventory::default(), &Presence::default(), &opts()).is_empty());
}

#[test]
fn template_change_reissues_only_the_changed_slot() {
    let mut d = desired(
        vec![credential(
            "alice",
            &[Slot::PivAuthentication, Slot::DigitalSignature],
        )],
        &["alice"],
    );
    let mut inv = Inventory::default();
    let mut presence = Presence::default();
    converge(&d, &mut inv, &mut presence);
    let c = d.credentials.values_mut().next().unwrap();
    c.certificates
        .get_mut(&Slot::DigitalSignature)
        .unwrap()
        .revision = "r1-changed".into();
    let p = converge(&d, &mut inv, &mut presence);
    assert_eq!(
        kinds(&p),
        [(
            ActionKind::Reissue,
            ReasonCode::TemplateChanged,
            "alice".into()
        )]
    );
    assert_eq!(p.actions[0].slot, Some(Slot::DigitalSignature));
    assert!(plan(&d, &inv, &presence, &opts()).is_empty());
    // Slot set changes.
    let c = d.credentials.values_mut().next().unwrap();
    c.certificates.remove(&Slot::DigitalSignature);
    c.certificates.insert(
        Slot::KeyManagement,
        cert(Slot::KeyManagement, "alice", "alice"),
    );
    let p = converge(&d, &mut inv, &mut presence);
    let codes: BTreeSet<_> = p.actions.iter().map(|a| (a.reason.code, a.slot)).collect();
    assert_eq!(
        codes,
        [
            (ReasonCode::SlotAdded, Some(Slot::KeyManagement)),
            (ReasonCode::SlotRemoved, Some(Slot::DigitalSignature))
        ]
        .into()
    );
    assert!(plan(&d, &inv, &presence, &opts()).is_empty());
}

#[test]
fn renewal_happens_inside_the_window_spread_by_serial() {
    let d = desired(
        vec![credential("alice", &[Slot::PivAuthentication])],
        &["alice"],
    );
    let mut inv = Inventory::default();
    let mut presence = Presence::default();
    converge(&d, &mut inv, &mut presence);
    let c = inv.certs.values().next().unwrap().clone();
    let at = renew_at(&c, 30 * DAY);
    assert!(at >= c.not_after - Duration::days(30) && at <= c.not_after - Duration::days(15));
    let mut o = opts();
    o.now = at - Duration::seconds(1);
    assert!(plan(&d, &inv, &presence, &o).is_empty());
    o.now = at;
    let p = plan(&d, &inv, &presence, &o);
    assert_eq!(
        kinds(&p),
        [(ActionKind::Renew, ReasonCode::NearingExpiry, "alice".into())]
    );
    o.now = c.not_after;
    assert_eq!(
        plan(&d, &inv, &presence, &o).actions[0].reason.code,
        ReasonCode::Expired
    );
    // Many certificates issued at one moment spread their renewals.
    let points: BTreeSet<_> = (0..100)
        .map(|i| {
            let mut c = c.clone();
            c.serial = format!("{i:040X}");
            renew_at(&c, 30 * DAY)
        })
        .collect();
    assert!(
        points.len() > 90,
        "renewal points are not spread: {}",
        points.len()
    );
}

#[test]
fn cards_that_are_absent_wait() {
    let d = desired(
        vec![credential("alice", &[Slot::PivAuthentication])],
        &["alice"],
    );
    let mut inv = Inventory::default();
    let mut presence = Presence::default();
    converge(&d, &mut inv, &mut presence);
    let c = d.credentials.values().next().unwrap().clone();
    let mut d2 = d.clone();
    d2.credentials
        .values_mut()
        .next()
        .unwrap()
        .certificates
        .get_mut(&Slot::PivAuthentication)
        .unwrap()
        .revision = "r1-x".into();
    presence.cards.clear();
    let p = plan(&d2, &inv, &presence, &opts());
    assert_eq!(p.actions.len(), 1);
    assert!(p.actions[0].waiting_for_card);
    assert_eq!(p.runnable().count(), 0);
    // A PIV stock with no blank card present: the issue waits, naming the stock.
    let mut d3 = desired(vec![], &[]);
    d3.stocks = vec![StockInfo {
        name: "piv".into(),
        card_type: CardType::Piv,
        auto_bind: true,
        virtual_max: None,
        is_virtual: false,
    }];
    let mut cred = c;
    cred.card_type = CardType::Piv;
    cred.stock = Some("piv".into());
    d3.credentials
        .insert(("alice".into(), "employee".into()), cred);
    let p = plan(&d3, &Inventory::default(), &Presence::default(), &opts());
    assert!(p.actions[0].waiting_for_card && p.actions[0].card.is_none());
    let presence = Presence {
        cards: ["piv-1".to_string()].into(),
        blanks: vec![PresentBlank {
            id: "piv-1".into(),
            card_type: CardType::Piv,
            stock: "piv".into(),
        }],
    };
    let p = plan(&d3, &Inventory::default(), &presence, &opts());
    assert!(!p.actions[0].waiting_for_card);
    assert_eq!(p.actions[0].card.as_deref(), Some("piv-1"));
}

#[test]
fn interrupted_issuance_is_completed_not_repeated() {
    let d = desired(
        vec![credential("alice", &[Slot::PivAuthentication])],
        &["alice"],
    );
    let mut inv = Inventory::default();
    let mut presence = Presence::default();
    converge(&d, &mut inv, &mut presence);
    inv.certs.values_mut().for_each(|c| c.installed = false);
    let p = converge(&d, &mut inv, &mut presence);
    assert_eq!(
        kinds(&p),
        [(
            ActionKind::Issue,
            ReasonCode::InterruptedIssuance,
            "alice".into()
        )]
    );
    assert_eq!(inv.certs.len(), 1);
    assert!(plan(&d, &inv, &presence, &opts()).is_empty());
}

#[test]
fn frozen_users_are_left_alone_and_targets_limit_the_plan() {
    let mut d = desired(
        vec![
            credential("alice", &[Slot::PivAuthentication]),
            credential("bob", &[Slot::PivAuthentication]),
        ],
        &["alice", "bob"],
    );
    let mut o = opts();
    o.targets = Some(["bob".to_string()].into());
    let p = plan(&d, &Inventory::default(), &Presence::default(), &o);
    assert_eq!(
        kinds(&p),
        [(ActionKind::Issue, ReasonCode::NotIssued, "bob".into())]
    );
    d.conflicts.push(crate::desired::Conflict {
        user: "alice".into(),
        templates: vec![],
        message: String::new(),
    });
    let p = plan(&d, &Inventory::default(), &Presence::default(), &opts());
    assert_eq!(
        kinds(&p),
        [(ActionKind::Issue, ReasonCode::NotIssued, "bob".into())]
    );
}

#[test]
fn virtual_stock_max_is_respected() {
    let mut d = desired(
        (0..3)
            .map(|i| credential(&format!("u{i}"), &[Slot::PivAuthentication]))
            .collect(),
        &[],
    );
    d.stocks[0].virtual_max = Some(2);
    let p = plan(&d, &Inventory::default(), &Presence::default(), &opts());
    assert_eq!(p.runnable().count(), 2);
    assert!(p.actions[2].waiting_for_card);
}

#[test]
fn safety_valve_counts_users_by_count_and_percent() {
    let users: Vec<String> = (0..40).map(|i| format!("u{i:02}")).collect();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let mut d = desired(
        users
            .iter()
            .map(|u| credential(u, &[Slot::PivAuthentication]))
            .collect(),
        &refs,
    );
    let mut inv = Inventory::default();
    let mut presence = Presence::default();
    converge(&d, &mut inv, &mut presence);
    // 10 of 40 = 25 %: at both limits, not over them.
    for u in &users[..10] {
        d.credentials.remove(&(u.clone(), "employee".into()));
    }
    let p = plan(&d, &inv, &presence, &opts());
    assert_eq!(p.safety_valve.revoked_users, 10);
    assert!(!p.safety_valve.tripped);
    d.credentials
        .remove(&(users[10].clone(), "employee".into()));
    let p = plan(&d, &inv, &presence, &opts());
    assert!(p.safety_valve.tripped, "11 users is over the count limit");
    let mut o = opts();
    o.limits.max_revocations = 100;
    assert!(
        plan(&d, &inv, &presence, &o).safety_valve.tripped,
        "11/40 is over 25 %"
    );
    o.limits.max_revocation_percent = 30;
    assert!(!plan(&d, &inv, &presence, &o).safety_valve.tripped);
}

#[test]
fn revision_is_pinned() {
    // Changing the canonical form reissues every credential in every deployment: this hash
    // must only change together with a stored-revision migration.
    let subject = DistinguishedName::parse("CN=Alice Example,O=Example").unwrap();
    let r = revision(
        Slot::PivAuthentication,
        "lab",
        "piv-auth",
        KeyAlgorithm::EccP256,
        KeyGeneration::OnCard,
        &subject,
        &[SanValue::Email("alice@example.org".into())],
    );
    assert_eq!(r, "r1-53e9e1a48ca50892ae07d4a1");
}

prop_compose! {
    fn arb_cred()(user in 0u8..12, slots in proptest::sample::subsequence(vec![Slot::PivAuthentication, Slot::DigitalSignature, Slot::KeyManagement], 1..=3), disabled in any::<bool>(), cn in 0u8..3, policy in 0u8..3) -> DesiredCredential {
        let user = format!("u{user}");
        let mut c = credential(&user, &slots);
        for cert in c.certificates.values_mut() {
            let subject = DistinguishedName::parse(&format!("CN={user}-{cn}")).unwrap();
            cert.revision = revision(cert.slot, "lab", "piv-auth", cert.key_algorithm, cert.key_generation, &subject, &[]);
        }
        c.user_disabled = disabled;
        c.on_user_disabled = [OnUserDisabled::Suspend, OnUserDisabled::Revoke, OnUserDisabled::None][policy as usize];
        c
    }
}

fn build(creds: Vec<DesiredCredential>, complete: bool) -> Desired {
    let mut d = desired(vec![], &[]);
    for c in creds {
        d.users.insert(&c.user, c.user_disabled);
        d.credentials
            .insert((c.user.clone(), c.template.clone()), c);
    }
    d.complete = complete;
    d
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Converge to one random desired state, then move to another: applying the plan and
    /// planning again is always empty, and revocations need a complete observation.
    #[test]
    fn apply_then_plan_is_empty(first in proptest::collection::vec(arb_cred(), 0..10),
                                second in proptest::collection::vec(arb_cred(), 0..10),
                                complete in any::<bool>(),
                                days in 0i64..400) {
        let d1 = build(first, true);
        let mut inv = Inventory::default();
        let mut presence = Presence::default();
        let mut o = opts();
        o.allow_mass_revocation = true;
        let p = plan(&d1, &inv, &presence, &o);
        simulate(&p, &d1, &mut inv, &mut presence, NOW);
        prop_assert!(plan(&d1, &inv, &presence, &o).is_empty());

        let d2 = build(second, complete);
        o.now = NOW + Duration::days(days);
        let p = plan(&d2, &inv, &presence, &o);
        if !complete {
            prop_assert!(p.actions.iter().all(|a| a.kind != ActionKind::Revoke || a.reason.code == ReasonCode::UserDisabled));
        }
        for a in p.actions.iter().filter(|a| a.kind == ActionKind::Revoke) {
            prop_assert!(matches!(a.reason.code, ReasonCode::NoLongerEntitled | ReasonCode::UserGone | ReasonCode::TemplateRemoved | ReasonCode::UserDisabled));
        }
        simulate(&p, &d2, &mut inv, &mut presence, o.now);
        let again = plan(&d2, &inv, &presence, &o);
        prop_assert!(again.is_empty(), "{:#?}", again.actions);
    }
}

/// Above the parallel threshold the planner splits the work over threads: the actions must be
/// exactly those of planning the same users in smaller, single-threaded groups.
#[test]
fn parallel_planning_equals_sequential_planning() {
    let n = super::PARALLEL_THRESHOLD + 5_000;
    let users: Vec<String> = (0..n).map(|i| format!("u{i:06}")).collect();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let mut d = desired(
        users
            .iter()
            .map(|u| credential(u, &[Slot::PivAuthentication]))
            .collect(),
        &refs,
    );
    let mut inv = Inventory::default();
    let mut presence = Presence::default();
    // Issue to the first two thirds, then change the template of every seventh user.
    let first: BTreeSet<String> = users[..n * 2 / 3].iter().cloned().collect();
    let mut o = opts();
    o.targets = Some(first);
    let p = plan(&d, &inv, &presence, &o);
    simulate(&p, &d, &mut inv, &mut presence, NOW);
    for (i, c) in d.credentials.values_mut().enumerate() {
        if i % 7 == 0 {
            c.certificates
                .get_mut(&Slot::PivAuthentication)
                .unwrap()
                .revision = "r1-x".into();
        }
    }
    let whole = plan(&d, &inv, &presence, &opts());
    let mut pieces = Vec::new();
    for group in users.chunks(9_000) {
        let mut o = opts();
        o.targets = Some(group.iter().cloned().collect());
        pieces.extend(plan(&d, &inv, &presence, &o).actions);
    }
    assert_eq!(whole.actions.len(), pieces.len());
    assert_eq!(whole.actions, pieces);
    assert!(whole.actions.iter().any(|a| a.kind == ActionKind::Reissue));
    assert!(whole.actions.iter().any(|a| a.kind == ActionKind::Issue));
}

#[test]
fn an_unknown_holder_pin_holds_reissues_and_a_suspect_card_holds_everything_on_it() {
    use crate::inventory::{CardFacts, HolderPin, HolderPinCause, Suspicion};
    let mut d = desired(
        vec![credential(
            "alice",
            &[Slot::PivAuthentication, Slot::DigitalSignature],
        )],
        &["alice"],
    );
    let mut inv = Inventory::default();
    let mut presence = Presence::default();
    converge(&d, &mut inv, &mut presence);
    let card = inv.cards.keys().next().unwrap().clone();
    let c = d.credentials.values_mut().next().unwrap();
    for want in c.certificates.values_mut() {
        want.revision = "r1-changed".into();
    }
    inv.facts.insert(
        card.clone(),
        CardFacts {
            holder_pin: Some(HolderPin {
                since: NOW,
                cause: HolderPinCause::Refused,
                tries_left: Some(2),
            }),
            suspect: None,
        },
    );
    // Level-triggered: the reissues stay in every plan, held for the holder, never run.
    for _ in 0..2 {
        let p = converge(&d, &mut inv, &mut presence);
        assert_eq!(p.actions.len(), 2);
        assert_eq!(p.runnable().count(), 0);
        for a in &p.actions {
            assert!(a.waiting_for_holder && !a.waiting_for_card && !a.card_suspect);
            assert_eq!(a.reason.code, ReasonCode::HolderPinUnknown);
            assert!(
                a.reason.message.contains("revision"),
                "{}",
                a.reason.message
            );
        }
    }
    // The holder's PIN does not hold what needs no PIN: a revocation and the wipe.
    let mut gone = d.clone();
    gone.credentials.clear();
    let p = plan(&gone, &inv, &presence, &opts());
    assert!(p.actions.iter().all(|a| a.runnable()), "{:?}", p.actions);
    assert!(!p.actions.is_empty());
    // A suspect card: everything that needs the card is held, the revocation is not.
    inv.facts.get_mut(&card).unwrap().suspect = Some(Suspicion {
        since: NOW,
        reason: "it accepted the factory management key".into(),
    });
    let p = converge(&d, &mut inv, &mut presence);
    assert!(
        p.actions
            .iter()
            .all(|a| a.card_suspect && a.reason.code == ReasonCode::CardSuspect && !a.runnable())
    );
    let p = plan(&gone, &inv, &presence, &opts());
    for a in &p.actions {
        assert_eq!(a.card_suspect, a.kind == ActionKind::Retire, "{a:?}");
    }
    // Once the facts are gone, the reissues run.
    inv.facts.clear();
    converge(&d, &mut inv, &mut presence);
    assert!(plan(&d, &inv, &presence, &opts()).is_empty());
}
