//! Card incidents as operators report and end them (`report-incident`, `resolve-incident`),
//! checked against the one transition table ([`crate::inventory::incident::TRANSITIONS`]),
//! recorded as facts for the planner, audited; and the offline unblock code.
//!
//! Reporting changes no card and no certificate here: the controller's next pass plans the
//! revocations, holds, replacements and temporary cards from the recorded fact.

use serde_json::{Value, json};

use super::roles::{Grants, Subject};
use super::service::{OpError, Operations, Outcome};
use crate::inventory::incident::{self, Event, Incident, IncidentEvent, IncidentEventKind, Next};
use crate::policy::model::{IncidentKind, OperationKind, Permission};

impl Operations<'_> {
    /// `keyfleet cards report CARD --lost|--damaged|--forgotten` (`report-incident`).
    pub fn report_incident(
        &self,
        g: &Grants,
        card: &str,
        kind: IncidentKind,
        comment: &str,
    ) -> Result<Value, OpError> {
        self.incident_event(g, card, Event::Report(kind), comment)
    }

    /// `keyfleet cards found CARD` (`resolve-incident`): a forgotten card is back.
    pub fn found(&self, g: &Grants, card: &str, comment: &str) -> Result<Value, OpError> {
        self.incident_event(g, card, Event::Found, comment)
    }

    /// `keyfleet cards retire CARD --found-lost` (`resolve-incident`): a lost card that turned
    /// up is wiped back to stock (it must be in a reader this machine reaches).
    pub fn retire_found_lost(
        &self,
        g: &Grants,
        card: &str,
        comment: &str,
    ) -> Result<Value, OpError> {
        self.incident_event(g, card, Event::RetireFoundLost, comment)
    }

    /// `keyfleet cards unblock-code CARD` (`unblock`, under approval when listed): the card's
    /// current PUK, once.
    pub fn unblock_code(
        &self,
        g: &Grants,
        card: &str,
        reason: &str,
    ) -> Result<Outcome<Value>, OpError> {
        self.operate(g, OperationKind::UnblockCode, card, reason)
    }

    fn incident_event(
        &self,
        g: &Grants,
        card: &str,
        event: Event,
        comment: &str,
    ) -> Result<Value, OpError> {
        let (permission, kind) = match event {
            Event::Report(_) => (Permission::ReportIncident, "report-incident"),
            Event::Found | Event::RetireFoundLost => {
                (Permission::ResolveIncident, "resolve-incident")
            }
        };
        if comment.chars().any(char::is_control) || comment.len() > 1000 {
            self.allow(g, permission, kind, card, None)?;
            return self.refuse(
                g,
                kind,
                card,
                OpError::Invalid("the comment must be one line of at most 1000 bytes".into()),
            );
        }
        let Some(record) = self.store.card(card)? else {
            self.allow(g, permission, kind, card, None)?;
            return self.refuse(
                g,
                kind,
                card,
                OpError::NotFound(format!("card {card} is not in the inventory")),
            );
        };
        let templates: Vec<String> = record.template.iter().cloned().collect();
        let subject = Subject {
            holder: record.user.as_deref(),
            templates: &templates,
            others: &[],
        };
        self.allow(g, permission, kind, card, Some(&subject))?;
        // What git declares for the card, and the lost clock, as the planner reads them.
        let rules = crate::desired::from_policy(self.policy);
        let declared = rules.incidents.get(card).copied();
        let after = rules.forgotten_becomes_lost_after_secs;
        let event_name = event.as_str();
        let details = json!({"event": event_name, "comment": comment, "user": record.user,
            "template": record.template});
        if event == Event::RetireFoundLost {
            // The wipe checks the table again against the state it finds.
            let facts = self.store.card_facts(card)?;
            let state = incident::state_of(
                &record,
                incident::effective(&record, Some(&facts), declared, self.now, after),
            );
            if let Err(why) = incident::transition(card, state, event) {
                return self.refuse(g, kind, card, OpError::Conflict(why));
            }
            self.log(g.name(), kind, card, "started", details.clone())?;
            return match self.host.retire_found_lost(card, g.name(), comment) {
                Ok(v) => {
                    self.log(g.name(), kind, card, "done", details)?;
                    Ok(v)
                }
                Err(e) => {
                    let mut end = details;
                    end["error"] = e.clone().into();
                    self.log(g.name(), kind, card, "failed", end)?;
                    Err(OpError::Failed(e))
                }
            };
        }
        if event == Event::Found && declared == Some(IncidentKind::Forgotten) {
            return self.refuse(
                g,
                kind,
                card,
                OpError::Conflict(format!(
                    "card {card} is declared forgotten in git (CardBinding spec.incident): \
                     remove the declaration instead"
                )),
            );
        }
        // Logged before the fact is recorded: no incident without its entry.
        self.log(g.name(), kind, card, "started", details.clone())?;
        let now = self.now;
        let by = g.name().to_string();
        let written = self.store.update_card_facts(card, |facts| {
            let state = incident::state_of(
                &record,
                incident::effective(&record, Some(facts), declared, now, after),
            );
            match incident::transition(card, state, event)? {
                Next::To(_) => {}
                Next::Stock => return Err(format!("card {card} cannot be {event_name} here")),
            }
            let (kind, incident) = match event {
                Event::Report(k) => (
                    k.into(),
                    Some(Incident {
                        kind: k,
                        reported_by: by.clone(),
                        at: now,
                        comment: comment.to_string(),
                    }),
                ),
                _ => (IncidentEventKind::Found, None),
            };
            facts.incident = incident;
            facts.incidents.push(IncidentEvent {
                kind,
                reported_by: by.clone(),
                at: now,
                comment: comment.to_string(),
            });
            Ok(())
        })?;
        if let Err(why) = written {
            return self.refuse(g, kind, card, OpError::Conflict(why));
        }
        // Recorded: the fact is what the planner converges from.
        self.log(g.name(), kind, card, "done", details)?;
        self.host.wake();
        let facts = self.store.card_facts(card)?;
        Ok(json!({
            "card": card,
            "event": event_name,
            "status": crate::inventory::shown_status(&record, Some(&facts)),
            "incident": facts.incident,
        }))
    }
}
