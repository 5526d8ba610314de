//! What the executors record about card incidents: the incident an action carried out when
//! it came from git or from a timer (an operator's report is recorded when it is made), the
//! end of a forgotten card declared in git, and the wipe of a lost card that was found.

use super::{
    ApplyError, Context, change_facts, forget_card, journal_close_recording, journal_open, wipe,
};
use crate::inventory::incident::{
    self, Event, Incident, IncidentEvent, IncidentEventKind, Next, REPORTED_BY_KEYFLEET,
    REPORTED_BY_POLICY,
};
use crate::inventory::{CardRecord, CardStatus};
use crate::plan::{Action, ActionKind, ReasonCode};
use crate::policy::model::IncidentKind;
use crate::store::{JournalState, JournalStep, Recorded};

/// After an incident action on a card succeeded: records the incident it carried out when
/// the card's record does not say it yet (declared in git: reported by `policy`; a forgotten
/// card that became lost: by `keyfleet`), or the end of a forgotten card git no longer
/// declares.
pub(super) fn record(ctx: &Context<'_>, action: &Action) -> Result<(), ApplyError> {
    let Some(card) = action.card.as_deref() else {
        return Ok(());
    };
    let kind = match (action.kind, action.reason.code) {
        (ActionKind::Suspend, ReasonCode::CardForgotten) => IncidentKind::Forgotten,
        (ActionKind::Revoke, ReasonCode::CardLost) => IncidentKind::Lost,
        (ActionKind::Revoke, ReasonCode::CardDamaged) => IncidentKind::Damaged,
        (ActionKind::Resume, ReasonCode::CardFound) => {
            let at = (ctx.clock)();
            return change_facts(ctx, card, |facts| {
                if facts
                    .incident
                    .as_ref()
                    .is_some_and(|i| i.reported_by == REPORTED_BY_POLICY)
                {
                    facts.incident = None;
                    facts.incidents.push(IncidentEvent {
                        kind: IncidentEventKind::Found,
                        reported_by: REPORTED_BY_POLICY.into(),
                        at,
                        comment: "no longer declared forgotten in git".into(),
                    });
                }
                Ok(())
            });
        }
        _ => return Ok(()),
    };
    let declared = ctx.desired.incidents.get(card).copied();
    let by = if declared.is_some_and(|d| d >= kind) {
        REPORTED_BY_POLICY
    } else {
        REPORTED_BY_KEYFLEET
    };
    let at = (ctx.clock)();
    let comment = action.reason.message.clone();
    change_facts(ctx, card, |facts| {
        if facts.incident.as_ref().is_some_and(|i| i.kind == kind) {
            return Ok(());
        }
        facts.incidents.push(IncidentEvent {
            kind: kind.into(),
            reported_by: by.into(),
            at,
            comment: comment.clone(),
        });
        facts.incident = Some(Incident {
            kind,
            reported_by: by.into(),
            at,
            comment: comment.clone(),
        });
        Ok(())
    })
}

/// `keyfleet cards retire CARD --found-lost`: a lost card that turned up (present now) is
/// wiped back to its stock as blank, its incident history kept with this event. The caller
/// authorised it (`resolve-incident`) and audits it.
pub fn retire_found_lost(
    ctx: &Context<'_>,
    card: &str,
    actor: &str,
    comment: &str,
) -> Result<CardRecord, ApplyError> {
    let record = ctx
        .store
        .card(card)?
        .ok_or_else(|| ApplyError::Stale(format!("card {card} is not in the inventory")))?;
    let facts = ctx.store.card_facts(card)?;
    let effective = incident::effective(
        &record,
        Some(&facts),
        ctx.desired.incidents.get(card).copied(),
        (ctx.clock)(),
        ctx.desired.forgotten_becomes_lost_after_secs,
    );
    let state = incident::state_of(&record, effective);
    if incident::transition(card, state, Event::RetireFoundLost).map_err(ApplyError::Stale)?
        != Next::Stock
    {
        return Err(ApplyError::Stale(format!(
            "card {card} cannot return to stock"
        )));
    }
    if record.status != CardStatus::Lost {
        return Err(ApplyError::Stale(format!(
            "card {card} is reported lost but its certificates are not revoked yet: let the \
             controller revoke them first"
        )));
    }
    let action_id = format!("retire-found-lost:{card}");
    let mut entry = journal_open(ctx, &action_id, JournalStep::WipeCard { card: card.into() })?;
    let blank = wipe(ctx, card)?;
    journal_close_recording(
        ctx,
        &mut entry,
        JournalState::Done,
        None,
        Recorded::Card(&blank),
    )?;
    forget_card(ctx, card)?;
    let at = (ctx.clock)();
    change_facts(ctx, card, |facts| {
        facts.incidents.push(IncidentEvent {
            kind: IncidentEventKind::RetiredFoundLost,
            reported_by: actor.into(),
            at,
            comment: comment.into(),
        });
        Ok(())
    })?;
    Ok(blank)
}
