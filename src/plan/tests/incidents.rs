//! Planner tests for card incidents (issue 16): lost, damaged, forgotten and found cards,
//! replacements, temporary cards, the forgotten-becomes-lost clock, incidents declared in git,
//! a released PUK.

use super::*;
use crate::inventory::incident::{Incident, IncidentEvent, IncidentEventKind, REPORTED_BY_POLICY};
use crate::inventory::{CardFacts, PukRelease};
use crate::policy::model::IncidentKind;

fn report(inv: &mut Inventory, card: &str, kind: IncidentKind, at: OffsetDateTime) {
    let facts = inv.facts.entry(card.to_string()).or_default();
    facts.incident = Some(Incident {
        kind,
        reported_by: "helpdesk".into(),
        at,
        comment: String::new(),
    });
    facts.incidents.push(IncidentEvent {
        kind: kind.into(),
        reported_by: "helpdesk".into(),
        at,
        comment: String::new(),
    });
}

fn found(inv: &mut Inventory, card: &str, at: OffsetDateTime) {
    let facts = inv.facts.entry(card.to_string()).or_default();
    facts.incident = None;
    facts.incidents.push(IncidentEvent {
        kind: IncidentEventKind::Found,
        reported_by: "helpdesk".into(),
        at,
        comment: String::new(),
    });
}

/// The desired state of `creds` with the default forgotten-becomes-lost clock (7 days).
fn desired(creds: Vec<DesiredCredential>, users: &[&str]) -> Desired {
    Desired {
        forgotten_becomes_lost_after_secs: 7 * DAY,
        ..super::desired(creds, users)
    }
}

fn issued(d: &Desired) -> (Inventory, Presence, String) {
    let mut inv = Inventory::default();
    let mut presence = Presence::default();
    converge(d, &mut inv, &mut presence);
    let card = inv.cards.keys().next().unwrap().clone();
    (inv, presence, card)
}

fn with_temporary(mut d: Desired) -> Desired {
    d.temporary_of.insert("employee".into(), "visitor".into());
    d.templates
        .insert("visitor".into(), d.templates["employee"]);
    let mut t = credential("alice", &[Slot::PivAuthentication]);
    t.template = "visitor".into();
    for c in t.certificates.values_mut() {
        c.validity_secs = DAY;
        c.renew_before_secs = 3600;
    }
    d.temporaries.insert(("alice".into(), "visitor".into()), t);
    d
}

fn reasons(p: &Plan) -> Vec<(ActionKind, ReasonCode)> {
    p.actions.iter().map(|a| (a.kind, a.reason.code)).collect()
}

#[test]
fn a_lost_card_is_revoked_for_key_compromise_replaced_and_never_touched_again() {
    let d = desired(
        vec![credential(
            "alice",
            &[Slot::PivAuthentication, Slot::DigitalSignature],
        )],
        &["alice"],
    );
    let (mut inv, mut presence, card) = issued(&d);
    report(&mut inv, &card, IncidentKind::Lost, NOW);
    let p = plan(&d, &inv, &presence, &opts());
    assert_eq!(
        reasons(&p),
        [
            (ActionKind::Issue, ReasonCode::ReplacesLost),
            (ActionKind::Revoke, ReasonCode::CardLost)
        ]
    );
    let revoke = &p.actions[1];
    assert_eq!(revoke.card.as_deref(), Some(card.as_str()));
    assert_eq!(revoke.serials.len(), 2);
    assert_eq!(revoke.revocation_reason(), Some("keyCompromise"));
    assert!(!revoke.kind.needs_card() && revoke.runnable());
    assert!(
        p.actions[0].card.is_none(),
        "the replacement comes from stock"
    );
    // One operator's report about one card is not a mass revocation.
    assert!(!p.safety_valve.tripped, "{:?}", p.safety_valve);
    simulate(&p, &d, &mut inv, &mut presence, NOW);
    assert_eq!(inv.cards[&card].status, CardStatus::Lost);
    assert_eq!(inv.shown_status(&inv.cards[&card]), "lost");
    assert!(
        inv.certs
            .values()
            .filter(|c| c.card == card)
            .all(|c| c.status == CertStatus::Revoked)
    );
    // Converged: the lost card, present or not, gets nothing (no wipe, no issue).
    presence.cards.insert(card.clone());
    let again = plan(&d, &inv, &presence, &opts());
    assert!(again.is_empty(), "{:#?}", again.actions);
}

#[test]
fn a_damaged_card_is_revoked_retired_and_replaced() {
    let d = desired(
        vec![credential("alice", &[Slot::PivAuthentication])],
        &["alice"],
    );
    let (mut inv, mut presence, card) = issued(&d);
    report(&mut inv, &card, IncidentKind::Damaged, NOW);
    let p = plan(&d, &inv, &presence, &opts());
    assert_eq!(
        reasons(&p),
        [
            (ActionKind::Issue, ReasonCode::ReplacesDamaged),
            (ActionKind::Revoke, ReasonCode::CardDamaged),
            (ActionKind::Retire, ReasonCode::CardDamaged)
        ]
    );
    assert_eq!(
        p.actions[1].revocation_reason(),
        Some("cessationOfOperation")
    );
    simulate(&p, &d, &mut inv, &mut presence, NOW);
    assert_eq!(inv.cards[&card].status, CardStatus::Retired);
    assert_eq!(inv.cards[&card].user.as_deref(), Some("alice"));
    let again = plan(&d, &inv, &presence, &opts());
    assert!(again.is_empty(), "{:#?}", again.actions);
}

#[test]
fn a_damaged_card_that_never_answers_waits_for_its_wipe_and_its_holder_is_served() {
    let d = desired(
        vec![credential("alice", &[Slot::PivAuthentication])],
        &["alice"],
    );
    let (mut inv, mut presence, card) = issued(&d);
    report(&mut inv, &card, IncidentKind::Damaged, NOW);
    presence.cards.remove(&card);
    let p = converge(&d, &mut inv, &mut presence);
    assert_eq!(p.actions.len(), 3);
    // The revocation ran, the replacement was issued; the wipe waits for the card.
    assert_eq!(inv.cards[&card].status, CardStatus::Damaged);
    let again = plan(&d, &inv, &presence, &opts());
    assert_eq!(
        reasons(&again),
        [(ActionKind::Retire, ReasonCode::CardDamaged)]
    );
    assert!(again.actions[0].waiting_for_card);
}

#[test]
fn a_forgotten_card_is_held_a_temporary_card_issued_and_both_end_when_it_is_found() {
    let d = with_temporary(desired(
        vec![credential("alice", &[Slot::PivAuthentication])],
        &["alice"],
    ));
    let (mut inv, mut presence, card) = issued(&d);
    report(&mut inv, &card, IncidentKind::Forgotten, NOW);
    let p = plan(&d, &inv, &presence, &opts());
    assert_eq!(
        reasons(&p),
        [
            (ActionKind::Suspend, ReasonCode::CardForgotten),
            (ActionKind::Issue, ReasonCode::TemporaryForForgotten),
        ]
    );
    assert_eq!(p.actions[1].template.as_deref(), Some("visitor"));
    simulate(&p, &d, &mut inv, &mut presence, NOW);
    let temp = inv
        .cards
        .values()
        .find(|c| c.temporary)
        .expect("a temporary card")
        .clone();
    assert_eq!(temp.template.as_deref(), Some("visitor"));
    assert_eq!(inv.shown_status(&temp), "temporary");
    assert_eq!(inv.shown_status(&inv.cards[&card]), "forgotten");
    // Forgotten and held: nothing more, even when the original's renewal is due.
    let later = PlanOptions {
        now: NOW + Duration::days(340),
        ..opts()
    };
    let slow_clock = Desired {
        forgotten_becomes_lost_after_secs: 400 * DAY,
        ..d.clone()
    };
    let held = plan(&slow_clock, &inv, &presence, &later);
    assert!(
        held.actions
            .iter()
            .all(|a| a.card.as_deref() != Some(&card)),
        "{:#?}",
        held.actions
    );
    assert!(plan(&d, &inv, &presence, &opts()).is_empty());
    // Found: the hold is released, the temporary card revoked and wiped back to stock.
    found(&mut inv, &card, NOW + Duration::hours(2));
    let p = plan(&d, &inv, &presence, &opts());
    assert_eq!(
        reasons(&p),
        [
            (ActionKind::Resume, ReasonCode::CardFound),
            (ActionKind::Revoke, ReasonCode::TemporaryEnded),
            (ActionKind::Retire, ReasonCode::TemporaryEnded),
        ]
    );
    assert_eq!(p.actions[1].card.as_deref(), Some(temp.id.as_str()));
    assert_eq!(
        p.actions[1].revocation_reason(),
        Some("cessationOfOperation")
    );
    assert!(!p.safety_valve.tripped);
    simulate(&p, &d, &mut inv, &mut presence, NOW);
    assert_eq!(inv.cards[&temp.id].status, CardStatus::Blank);
    assert!(!inv.cards[&temp.id].temporary);
    assert_eq!(inv.cards[&card].status, CardStatus::Active);
    assert!(plan(&d, &inv, &presence, &opts()).is_empty());
}

#[test]
fn a_card_forgotten_too_long_becomes_lost_and_the_temporary_card_ends_with_the_replacement() {
    let d = with_temporary(desired(
        vec![credential("alice", &[Slot::PivAuthentication])],
        &["alice"],
    ));
    let (mut inv, mut presence, card) = issued(&d);
    report(&mut inv, &card, IncidentKind::Forgotten, NOW);
    converge(&d, &mut inv, &mut presence);
    let temp = inv.cards.values().find(|c| c.temporary).unwrap().id.clone();
    let just_before = PlanOptions {
        now: NOW + Duration::days(7) - Duration::seconds(1),
        ..opts()
    };
    // Until then the temporary card (valid a day) is renewed; the original gets nothing.
    let p = plan(&d, &inv, &presence, &just_before);
    assert_eq!(reasons(&p), [(ActionKind::Renew, ReasonCode::Expired)]);
    assert_eq!(p.actions[0].card.as_deref(), Some(temp.as_str()));
    let after = PlanOptions {
        now: NOW + Duration::days(7),
        ..opts()
    };
    // No blank card yet: the replacement waits, so the temporary card stays (and is
    // renewed).
    let mut no_stock = d.clone();
    no_stock.stocks[0].virtual_max = Some(2);
    let p = plan(&no_stock, &inv, &presence, &after);
    assert_eq!(
        reasons(&p),
        [
            (ActionKind::Issue, ReasonCode::ReplacesLost),
            (ActionKind::Revoke, ReasonCode::CardLost),
            (ActionKind::Renew, ReasonCode::Expired)
        ]
    );
    assert!(p.actions[0].waiting_for_card);
    assert_eq!(p.actions[1].revocation_reason(), Some("keyCompromise"));
    assert!(
        !p.safety_valve.tripped,
        "the operator reported it forgotten"
    );
    simulate(&p, &no_stock, &mut inv, &mut presence, after.now);
    assert_eq!(inv.cards[&card].status, CardStatus::Lost);
    // With a blank card the replacement comes, and then the temporary card ends.
    let p = plan(&d, &inv, &presence, &after);
    assert_eq!(reasons(&p), [(ActionKind::Issue, ReasonCode::ReplacesLost)]);
    simulate(&p, &d, &mut inv, &mut presence, after.now);
    let p = plan(&d, &inv, &presence, &after);
    assert_eq!(
        reasons(&p),
        [
            (ActionKind::Revoke, ReasonCode::TemporaryEnded),
            (ActionKind::Retire, ReasonCode::TemporaryEnded)
        ]
    );
    assert_eq!(p.actions[0].card.as_deref(), Some(temp.as_str()));
    simulate(&p, &d, &mut inv, &mut presence, after.now);
    assert!(plan(&d, &inv, &presence, &after).is_empty());
}

#[test]
fn incidents_declared_in_git_work_the_same_the_stronger_wins_and_count_for_the_valve() {
    let d = desired(
        vec![credential("alice", &[Slot::PivAuthentication])],
        &["alice"],
    );
    let (mut inv, mut presence, card) = issued(&d);
    let mut declared = d.clone();
    declared
        .incidents
        .insert(card.clone(), IncidentKind::Forgotten);
    let p = plan(&declared, &inv, &presence, &opts());
    assert_eq!(
        reasons(&p),
        [(ActionKind::Suspend, ReasonCode::CardForgotten)]
    );
    simulate(&p, &declared, &mut inv, &mut presence, NOW);
    // The executor records what it carried out for git (see apply::incidents::record).
    inv.facts.entry(card.clone()).or_default().incident = Some(Incident {
        kind: IncidentKind::Forgotten,
        reported_by: REPORTED_BY_POLICY.into(),
        at: NOW,
        comment: String::new(),
    });
    assert!(plan(&declared, &inv, &presence, &opts()).is_empty());
    // Removed from git: found.
    let p = plan(&d, &inv, &presence, &opts());
    assert_eq!(reasons(&p), [(ActionKind::Resume, ReasonCode::CardFound)]);
    // An operator's forgotten and git's lost: lost wins; git's alone counts for the valve.
    report(&mut inv, &card, IncidentKind::Forgotten, NOW);
    let mut lost = d;
    lost.incidents.insert(card.clone(), IncidentKind::Lost);
    let p = plan(&lost, &inv, &presence, &opts());
    assert!(reasons(&p).contains(&(ActionKind::Revoke, ReasonCode::CardLost)));
    assert!(!p.safety_valve.tripped);
    inv.facts.remove(&card);
    let p = plan(&lost, &inv, &presence, &opts());
    assert!(reasons(&p).contains(&(ActionKind::Revoke, ReasonCode::CardLost)));
    assert!(p.safety_valve.tripped, "one of one holder, declared in git");
}

#[test]
fn a_released_puk_is_rotated_at_the_cards_next_contact_every_pass_until_done() {
    let d = desired(
        vec![credential("alice", &[Slot::PivAuthentication])],
        &["alice"],
    );
    let (mut inv, mut presence, card) = issued(&d);
    inv.facts.insert(
        card.clone(),
        CardFacts {
            puk_released: Some(PukRelease {
                by: "helpdesk".into(),
                at: NOW,
            }),
            ..CardFacts::default()
        },
    );
    presence.cards.remove(&card);
    for _ in 0..2 {
        let p = plan(&d, &inv, &presence, &opts());
        assert_eq!(
            reasons(&p),
            [(ActionKind::RotatePuk, ReasonCode::RotatePuk)]
        );
        assert!(p.actions[0].waiting_for_card);
    }
    presence.cards.insert(card.clone());
    let p = converge(&d, &mut inv, &mut presence);
    assert!(p.actions[0].runnable());
    assert!(plan(&d, &inv, &presence, &opts()).is_empty());
}
