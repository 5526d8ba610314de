//! Planner tests: table cases for every rule, and properties over random desired/actual states
//! (apply-then-plan is empty; no revocation from an incomplete observation; the valve trips).

use std::collections::{BTreeMap, BTreeSet};

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
        retries: None,
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
                management_key: crate::policy::model::ManagementKeyPolicy::default(),
                retries: None,
                key_history: 0,
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
        threads: 4,
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
    let mut ca = CaModel::default();
    simulate_with(plan, desired, inv, presence, now, &mut ca, &mut || true);
}

/// What the CA itself says of each serial it signed, beside what the inventory records.
#[derive(Debug, Default)]
struct CaModel {
    /// Serial → status at the CA.
    status: BTreeMap<String, CaSt>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CaSt {
    Valid,
    Held,
    Revoked,
}

/// A failed step of the simulated executor.
struct Failed;

/// [`simulate`] with the CA and the cards failing when `ok()` says so: each CA call (enrol,
/// revoke, hold, unhold) and each write of a certificate to a card asks it once. It follows
/// the real executors: a certificate is recorded when the CA signed it, marked installed when
/// written, and the slot's older live certificates are then revoked as superseded; a status
/// change is recorded only once the CA confirmed it; the first failure ends the action, and
/// the card's remaining actions of the pass are skipped.
fn simulate_with(
    plan: &Plan,
    desired: &Desired,
    inv: &mut Inventory,
    presence: &mut Presence,
    now: OffsetDateTime,
    ca: &mut CaModel,
    ok: &mut dyn FnMut() -> bool,
) {
    let mut serial = inv.certs.len() + 1000;
    let mut new_card = inv.cards.len() + 1000;
    let mut failed_cards: BTreeSet<String> = BTreeSet::new();
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
        if failed_cards.contains(&card_id) {
            continue;
        }
        let result: Result<(), Failed> = (|| {
            // Enrols, records, writes and supersedes one slot.
            let mut issue_slot = |inv: &mut Inventory,
                                  ca: &mut CaModel,
                                  ok: &mut dyn FnMut() -> bool,
                                  slot: Slot|
             -> Result<(), Failed> {
                let want = &desired
                    .credential(&a.user, a.template.as_deref().unwrap())
                    .expect("the action's credential")
                    .certificates[&slot];
                if !ok() {
                    return Err(Failed);
                }
                serial += 1;
                // CAs hand out random serials: a later certificate's may sort first, and all
                // are signed within the same second here.
                let s = format!("{:08X}", u32::MAX - serial as u32);
                ca.status.insert(s.clone(), CaSt::Valid);
                // An archived slot's key is archived as it is made (apply::slot).
                let key_id = want.archive.then(|| format!("key-{s}"));
                if let Some(k) = &key_id {
                    inv.archived.insert(k.clone());
                }
                inv.certs.insert(
                    s.clone(),
                    CertRecord {
                        serial: s.clone(),
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
                        installed: false,
                        request_id: String::new(),
                        enrolment: serial as u64,
                        updated_at: now,
                        pem: String::new(),
                        key_id,
                    },
                );
                install(inv, ca, ok, &s)
            };
            match a.kind {
                ActionKind::Issue if a.reason.code == ReasonCode::InterruptedIssuance => {
                    for s in &a.serials {
                        install(inv, ca, ok, s)?;
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
                        temporary: false,
                    });
                    card.user = Some(a.user.clone());
                    card.template = a.template.clone();
                    card.status = CardStatus::Active;
                    card.temporary = a.reason.code == ReasonCode::TemporaryForForgotten;
                    for slot in &a.slots {
                        issue_slot(inv, ca, ok, *slot)?;
                    }
                }
                ActionKind::Renew | ActionKind::Reissue => {
                    if a.reason.code == ReasonCode::SlotRemoved {
                        for s in &a.serials {
                            status_change(inv, ca, ok, s, CaSt::Revoked, CertStatus::Superseded)?;
                        }
                    } else {
                        issue_slot(inv, ca, ok, a.slot.unwrap())?;
                    }
                }
                ActionKind::Suspend | ActionKind::Resume => {
                    let (at_ca, st, card_st) = if a.kind == ActionKind::Suspend {
                        (CaSt::Held, CertStatus::Suspended, CardStatus::Suspended)
                    } else {
                        (CaSt::Valid, CertStatus::Active, CardStatus::Active)
                    };
                    for s in &a.serials {
                        status_change(inv, ca, ok, s, at_ca, st)?;
                    }
                    inv.cards.get_mut(&card_id).unwrap().status = card_st;
                }
                ActionKind::Revoke if a.reason.code == ReasonCode::Superseded => {
                    for s in &a.serials {
                        status_change(inv, ca, ok, s, CaSt::Revoked, CertStatus::Superseded)?;
                    }
                }
                ActionKind::Revoke => {
                    for s in &a.serials {
                        status_change(inv, ca, ok, s, CaSt::Revoked, CertStatus::Revoked)?;
                    }
                    inv.cards.get_mut(&card_id).unwrap().status = match a.reason.code {
                        ReasonCode::CardLost => CardStatus::Lost,
                        ReasonCode::CardDamaged => CardStatus::Damaged,
                        _ => CardStatus::Revoked,
                    };
                }
                ActionKind::Retire => {
                    let c = inv.cards.get_mut(&card_id).unwrap();
                    if a.reason.code == ReasonCode::CardDamaged {
                        c.status = CardStatus::Retired;
                    } else {
                        c.status = CardStatus::Blank;
                        c.user = None;
                        c.template = None;
                    }
                    c.temporary = false;
                }
                ActionKind::RotatePuk => {
                    if let Some(f) = inv.facts.get_mut(&card_id) {
                        f.puk_released = None;
                    }
                }
                ActionKind::KeyHistory => {
                    let c = &inv.cards[&card_id];
                    let n = desired
                        .templates
                        .get(c.template.as_deref().unwrap_or_default())
                        .map_or(0, |r| r.key_history);
                    let current = inv
                        .live_certs_of(&card_id)
                        .get(&Slot::KeyManagement)
                        .map(|c| c.serial.clone());
                    let user = c.user.clone().unwrap_or_default();
                    let recovered = inv
                        .facts
                        .get(&card_id)
                        .map(|f| f.recovered_keys.clone())
                        .unwrap_or_default();
                    let want =
                        super::key_history::wanted(inv, &user, current.as_deref(), n, &recovered);
                    inv.facts.entry(card_id.clone()).or_default().key_history = want;
                }
            }
            Ok(())
        })();
        if result.is_err() {
            failed_cards.insert(card_id);
        }
    }
}

/// A CA status change, recorded once the CA confirmed it.
fn status_change(
    inv: &mut Inventory,
    ca: &mut CaModel,
    ok: &mut dyn FnMut() -> bool,
    s: &str,
    at_ca: CaSt,
    recorded: CertStatus,
) -> Result<(), Failed> {
    if !ok() {
        return Err(Failed);
    }
    let st = ca.status.entry(s.to_string()).or_insert(CaSt::Valid);
    if *st == CaSt::Revoked && at_ca != CaSt::Revoked {
        return Err(Failed);
    }
    *st = at_ca;
    inv.certs.get_mut(s).unwrap().status = recorded;
    Ok(())
}

/// Writes a recorded certificate to its card, then revokes the slot's older live
/// certificates as superseded (the real executor's `install`).
fn install(
    inv: &mut Inventory,
    ca: &mut CaModel,
    ok: &mut dyn FnMut() -> bool,
    serial: &str,
) -> Result<(), Failed> {
    if !ok() {
        return Err(Failed);
    }
    let cert = inv.certs.get_mut(serial).unwrap();
    cert.installed = true;
    let (card, slot) = (cert.card.clone(), cert.slot);
    let older: Vec<String> = inv
        .certs
        .values()
        .filter(|c| c.card == card && c.slot == slot && c.serial != serial && c.is_live())
        .map(|c| c.serial.clone())
        .collect();
    for s in older {
        if !ok() {
            return Err(Failed);
        }
        ca.status.insert(s.clone(), CaSt::Revoked);
        inv.certs.get_mut(&s).unwrap().status = CertStatus::Superseded;
    }
    Ok(())
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

/// Plans and applies one pass with CA calls and card writes answering `script` in turn
/// (true: it works), then every call works.
fn pass_with(
    d: &Desired,
    inv: &mut Inventory,
    presence: &mut Presence,
    ca: &mut CaModel,
    script: &[bool],
) -> Plan {
    let mut o = opts();
    o.allow_mass_revocation = true;
    let p = plan(d, inv, presence, &o);
    let mut answers = script.iter().copied();
    simulate_with(&p, d, inv, presence, NOW, ca, &mut || {
        answers.next().unwrap_or(true)
    });
    p
}

/// Issue 14: a reissue whose revocation of the old certificate the CA refused left two live
/// certificates in the slot, and the next plan said everything converged.
#[test]
fn superseded_certificates_are_revoked_every_pass_until_the_ca_confirms() {
    let mut d = desired(
        vec![credential("alice", &[Slot::PivAuthentication])],
        &["alice"],
    );
    let mut inv = Inventory::default();
    let mut presence = Presence::default();
    let mut ca = CaModel::default();
    pass_with(&d, &mut inv, &mut presence, &mut ca, &[]);
    let old = inv.certs.keys().next().unwrap().clone();
    let c = d.credentials.values_mut().next().unwrap();
    c.certificates
        .get_mut(&Slot::PivAuthentication)
        .unwrap()
        .revision = "r1-changed".into();
    // Enrolled, written to the card, and the revocation of the old one refused.
    let p = pass_with(&d, &mut inv, &mut presence, &mut ca, &[true, true, false]);
    assert_eq!(p.actions.len(), 1);
    assert_eq!(inv.certs.values().filter(|c| c.is_live()).count(), 2);
    let new = inv.certs.keys().find(|s| **s != old).unwrap().clone();

    // Planned from the inventory, pass after pass, even from an incomplete observation, and
    // without tripping the valve: it takes nobody's credential.
    for complete in [true, false] {
        d.complete = complete;
        let mut o = opts();
        o.limits.max_revocations = 0;
        let p = plan(&d, &inv, &presence, &o);
        assert_eq!(
            kinds(&p),
            [(ActionKind::Revoke, ReasonCode::Superseded, "alice".into())]
        );
        let a = &p.actions[0];
        assert_eq!(a.serials, std::slice::from_ref(&old));
        assert_eq!(a.card.as_deref(), Some(inv.certs[&old].card.as_str()));
        assert!(a.slots.is_empty(), "the card is not touched");
        assert!(!a.waiting_for_card);
        assert!(a.reason.message.contains(&new), "{}", a.reason.message);
        assert_eq!(p.safety_valve.revoked_users, 0);
        assert!(!p.refused());
        assert_eq!(a.revocation_reason(), Some("superseded"));
        // `plan` does not say that nothing is revoked when these are.
        let text = crate::cli::plan::plan_text(&p);
        assert_eq!(
            text.contains("Superseded certificates are still revoked"),
            !complete,
            "{text}"
        );
        // Absent, the card is not needed.
        let p = plan(&d, &inv, &Presence::default(), &o);
        assert_eq!(p.runnable().count(), 1);
    }
    d.complete = true;
    // Refused again: still planned; confirmed: done, and nothing left.
    pass_with(&d, &mut inv, &mut presence, &mut ca, &[false]);
    assert_eq!(inv.certs[&old].status, CertStatus::Active);
    let p = pass_with(&d, &mut inv, &mut presence, &mut ca, &[]);
    assert_eq!(p.actions[0].reason.code, ReasonCode::Superseded);
    assert_eq!(inv.certs[&old].status, CertStatus::Superseded);
    assert_eq!(ca.status[&old], CaSt::Revoked);
    assert_eq!(ca.status[&new], CaSt::Valid);
    assert!(plan(&d, &inv, &presence, &opts()).is_empty());
}

/// A newer certificate not yet written to the card is not the slot's yet: the installed one
/// stays until the interrupted issuance is completed, which supersedes it then.
#[test]
fn an_uninstalled_newer_certificate_supersedes_nothing_until_installed() {
    let mut d = desired(
        vec![credential("alice", &[Slot::PivAuthentication])],
        &["alice"],
    );
    let mut inv = Inventory::default();
    let mut presence = Presence::default();
    let mut ca = CaModel::default();
    pass_with(&d, &mut inv, &mut presence, &mut ca, &[]);
    let c = d.credentials.values_mut().next().unwrap();
    c.certificates
        .get_mut(&Slot::PivAuthentication)
        .unwrap()
        .revision = "r1-changed".into();
    // Enrolled, then the write to the card fails.
    pass_with(&d, &mut inv, &mut presence, &mut ca, &[true, false]);
    let p = plan(&d, &inv, &presence, &opts());
    assert_eq!(
        kinds(&p),
        [(
            ActionKind::Issue,
            ReasonCode::InterruptedIssuance,
            "alice".into()
        )]
    );
    // Written, the old one's revocation refused: now it is superseded.
    pass_with(&d, &mut inv, &mut presence, &mut ca, &[true, false]);
    let p = plan(&d, &inv, &presence, &opts());
    assert_eq!(
        kinds(&p),
        [(ActionKind::Revoke, ReasonCode::Superseded, "alice".into())]
    );
}

/// Issue 14: a hold that went half through (the CA refused the second certificate), then
/// the account enabled again, left the first certificate on hold for good: the card was never
/// marked suspended, so no resume was planned. And the other way round.
#[test]
fn holds_and_unholds_that_failed_are_planned_again_from_the_certificates() {
    let mut d = desired(
        vec![credential(
            "alice",
            &[Slot::PivAuthentication, Slot::DigitalSignature],
        )],
        &["alice"],
    );
    let mut inv = Inventory::default();
    let mut presence = Presence::default();
    let mut ca = CaModel::default();
    pass_with(&d, &mut inv, &mut presence, &mut ca, &[]);
    let serials: Vec<String> = inv.certs.keys().cloned().collect();
    let set_disabled =
        |d: &mut Desired, v: bool| d.credentials.values_mut().for_each(|c| c.user_disabled = v);
    set_disabled(&mut d, true);
    pass_with(&d, &mut inv, &mut presence, &mut ca, &[true, false]);
    assert_eq!(ca.status[&serials[0]], CaSt::Held);
    assert_eq!(ca.status[&serials[1]], CaSt::Valid);
    set_disabled(&mut d, false);
    let p = plan(&d, &inv, &presence, &opts());
    assert_eq!(
        kinds(&p),
        [(ActionKind::Resume, ReasonCode::UserEnabled, "alice".into())]
    );
    assert_eq!(p.actions[0].serials, [serials[0].clone()]);
    // Fully held, then an unhold half through, then disabled again: the released one is
    // held again.
    set_disabled(&mut d, true);
    pass_with(&d, &mut inv, &mut presence, &mut ca, &[]);
    assert!(serials.iter().all(|s| ca.status[s] == CaSt::Held));
    set_disabled(&mut d, false);
    pass_with(&d, &mut inv, &mut presence, &mut ca, &[true, false]);
    set_disabled(&mut d, true);
    let p = plan(&d, &inv, &presence, &opts());
    assert_eq!(
        kinds(&p),
        [(
            ActionKind::Suspend,
            ReasonCode::UserDisabled,
            "alice".into()
        )]
    );
    assert_eq!(p.actions[0].serials, [serials[0].clone()]);
    pass_with(&d, &mut inv, &mut presence, &mut ca, &[]);
    assert!(serials.iter().all(|s| ca.status[s] == CaSt::Held));
    assert!(plan(&d, &inv, &presence, &opts()).is_empty());
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
            prop_assert!(p.actions.iter().all(|a| a.kind != ActionKind::Revoke || matches!(a.reason.code, ReasonCode::UserDisabled | ReasonCode::Superseded)));
        }
        for a in p.actions.iter().filter(|a| a.kind == ActionKind::Revoke) {
            prop_assert!(matches!(a.reason.code, ReasonCode::NoLongerEntitled | ReasonCode::UserGone | ReasonCode::TemplateRemoved | ReasonCode::UserDisabled | ReasonCode::Superseded));
        }
        simulate(&p, &d2, &mut inv, &mut presence, o.now);
        let again = plan(&d2, &inv, &presence, &o);
        prop_assert!(again.is_empty(), "{:#?}", again.actions);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Issue 14: after any sequence of failed CA calls (and card writes) and a recovery, each
    /// slot holds at most one live certificate, every superseded one is revoked at the CA, and
    /// the inventory agrees with the CA.
    #[test]
    fn failed_ca_calls_then_recovery_leave_one_live_certificate_per_slot(
        states in proptest::collection::vec(proptest::collection::vec(arb_cred(), 0..8), 1..4),
        steps in proptest::collection::vec(
            (0usize..4, 0i64..200, proptest::collection::vec(any::<bool>(), 0..40)),
            1..6,
        ),
    ) {
        let ds: Vec<Desired> = states.into_iter().map(|c| build(c, true)).collect();
        let mut inv = Inventory::default();
        let mut presence = Presence::default();
        let mut ca = CaModel::default();
        let mut o = opts();
        o.allow_mass_revocation = true;
        let mut last = 0;
        for (which, days, answers) in steps {
            last = which % ds.len();
            o.now += Duration::days(days);
            let p = plan(&ds[last], &inv, &presence, &o);
            let mut answers = answers.into_iter();
            simulate_with(&p, &ds[last], &mut inv, &mut presence, o.now, &mut ca, &mut || {
                answers.next().unwrap_or(true)
            });
        }
        // Recovery: the CA and the cards answer again.
        let d = &ds[last];
        for _ in 0..3 {
            let p = plan(d, &inv, &presence, &o);
            simulate_with(&p, d, &mut inv, &mut presence, o.now, &mut ca, &mut || true);
        }
        let again = plan(d, &inv, &presence, &o);
        prop_assert!(again.is_empty(), "{:#?}", again.actions);

        let mut live_per_slot: BTreeMap<(&str, Slot), usize> = BTreeMap::new();
        let mut valid_at_ca_per_slot: BTreeMap<(&str, Slot), usize> = BTreeMap::new();
        for c in inv.certs.values() {
            let at_ca = ca.status[&c.serial];
            if c.is_live() {
                *live_per_slot.entry((c.card.as_str(), c.slot)).or_default() += 1;
            }
            if at_ca != CaSt::Revoked {
                *valid_at_ca_per_slot.entry((c.card.as_str(), c.slot)).or_default() += 1;
            }
            prop_assert_eq!(c.is_live(), at_ca != CaSt::Revoked, "{} is {:?} here, {:?} at the CA", c.serial, c.status, at_ca);
            if c.status == CertStatus::Superseded {
                prop_assert_eq!(at_ca, CaSt::Revoked);
            }
            prop_assert_eq!(c.status == CertStatus::Suspended, at_ca == CaSt::Held);
        }
        prop_assert!(live_per_slot.values().all(|n| *n <= 1), "{:?}", live_per_slot);
        prop_assert!(valid_at_ca_per_slot.values().all(|n| *n <= 1), "{:?}", valid_at_ca_per_slot);
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
            ..CardFacts::default()
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

/// Issue 14 point 1: a slot whose key was replaced and whose certificate did not follow had
/// its stale certificate removed; the old record still said active and installed, so a plan
/// with nothing else to do (the template changed back) said converged over an empty slot.
#[test]
fn a_slot_whose_certificate_was_removed_under_a_new_key_is_issued_again() {
    use crate::inventory::CardFacts;
    let d = desired(
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
    let old = inv
        .certs
        .values()
        .find(|c| c.slot == Slot::DigitalSignature)
        .unwrap()
        .serial
        .clone();
    assert!(plan(&d, &inv, &presence, &opts()).is_empty());
    let mut facts = CardFacts::default();
    facts
        .emptied_slots
        .insert(Slot::DigitalSignature, vec![old.clone()]);
    inv.facts.insert(card.clone(), facts);
    let p = plan(&d, &inv, &presence, &opts());
    assert_eq!(
        kinds(&p),
        [(ActionKind::Reissue, ReasonCode::KeyReplaced, "alice".into())]
    );
    assert_eq!(p.actions[0].slot, Some(Slot::DigitalSignature));
    assert_eq!(p.actions[0].serials, std::slice::from_ref(&old));
    assert!(p.actions[0].reason.message.contains(&old));
    // The fact names a certificate the slot no longer holds as its newest: nothing to do.
    inv.facts
        .get_mut(&card)
        .unwrap()
        .emptied_slots
        .insert(Slot::DigitalSignature, vec!["0BSOLETE".into()]);
    assert!(plan(&d, &inv, &presence, &opts()).is_empty());
}

mod incidents;
mod markdown_fixture;

/// Issue 16: a card reported lost is never touched again, even when its PUK was released
/// for an offline unblock before (no `rotate-puk` on it, present or not).
#[test]
fn a_lost_card_whose_puk_was_released_gets_no_card_action() {
    use crate::inventory::incident::Incident;
    use crate::inventory::{CardFacts, PukRelease};
    use crate::policy::model::IncidentKind;
    let d = desired(
        vec![credential("alice", &[Slot::PivAuthentication])],
        &["alice"],
    );
    let mut inv = Inventory::default();
    let mut presence = Presence::default();
    converge(&d, &mut inv, &mut presence);
    let card = inv.cards.keys().next().unwrap().clone();
    inv.facts.insert(
        card.clone(),
        CardFacts {
            incident: Some(Incident {
                kind: IncidentKind::Lost,
                reported_by: "helpdesk".into(),
                at: NOW,
                comment: String::new(),
            }),
            puk_released: Some(PukRelease {
                by: "helpdesk".into(),
                at: NOW,
            }),
            ..CardFacts::default()
        },
    );
    let p = plan(&d, &inv, &presence, &opts());
    let on_card: Vec<_> = p
        .actions
        .iter()
        .filter(|a| a.card.as_deref() == Some(card.as_str()))
        .collect();
    assert!(!on_card.is_empty());
    for a in on_card {
        assert!(!a.kind.needs_card(), "{a:?}");
    }
}
mod key_history;
