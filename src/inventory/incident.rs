//! Card incidents: what happened to a card that no directory records (lost, damaged,
//! forgotten, found), as facts in the inventory, the one table of the transitions an operator
//! may make, and the incident in force that the planner converges from. Pure values.
//!
//! ```text
//!   lost       ─► certificates revoked (keyCompromise); the card is never used again
//!   damaged    ─► certificates revoked (cessationOfOperation); the card retired
//!   forgotten  ─► certificates on hold; a temporary card; still forgotten after
//!                 `forgottenBecomesLostAfter`: lost
//!   found      ─► the hold released; the temporary card revoked and back to stock
//! ```
//!
//! An incident comes from an operator (recorded here) or from git (`CardBinding.spec.incident`);
//! when both say something the stronger wins (lost > damaged > forgotten).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{CardFacts, CardRecord, CardStatus};
use crate::policy::model::IncidentKind;

/// Who is recorded as reporting an incident declared in git, when the executor carries it
/// out: such a record is in force only while git still declares it.
pub const REPORTED_BY_POLICY: &str = "policy";

/// Who is recorded for what Keyfleet decides itself (a forgotten card becoming lost).
pub const REPORTED_BY_KEYFLEET: &str = "keyfleet";

/// The incident in force on a card: `{"kind", "reportedBy", "at", "comment"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Incident {
    /// What happened.
    pub kind: IncidentKind,
    /// The operator who reported it (`policy` for git, `keyfleet` for a timer).
    pub reported_by: String,
    /// When (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub at: OffsetDateTime,
    /// What the reporter said.
    #[serde(default)]
    pub comment: String,
}

/// One event of a card's incident history.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum IncidentEventKind {
    /// Reported forgotten.
    Forgotten,
    /// Reported damaged.
    Damaged,
    /// Reported lost (or a forgotten card became lost).
    Lost,
    /// A forgotten card was found.
    Found,
    /// A lost card that was found was wiped back to stock (`retire --found-lost`).
    RetiredFoundLost,
}

impl From<IncidentKind> for IncidentEventKind {
    fn from(k: IncidentKind) -> Self {
        match k {
            IncidentKind::Forgotten => IncidentEventKind::Forgotten,
            IncidentKind::Damaged => IncidentEventKind::Damaged,
            IncidentKind::Lost => IncidentEventKind::Lost,
        }
    }
}

/// An entry of a card's incident history: `{"kind", "reportedBy", "at", "comment"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncidentEvent {
    /// What happened.
    pub kind: IncidentEventKind,
    /// Who said so.
    pub reported_by: String,
    /// When (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub at: OffsetDateTime,
    /// What they said.
    #[serde(default)]
    pub comment: String,
}

/// Where a card stands for the transition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    /// Holds a credential, no incident.
    InUse,
    /// Forgotten (certificates on hold).
    Forgotten,
    /// Damaged (revoked, retired).
    Damaged,
    /// Lost (revoked; refused if seen).
    Lost,
    /// Holds no credential (blank in stock, revoked and waiting to be wiped, retired).
    NoCredential,
}

impl State {
    /// The name used in messages and in README.
    pub fn as_str(self) -> &'static str {
        match self {
            State::InUse => "in use",
            State::Forgotten => "forgotten",
            State::Damaged => "damaged",
            State::Lost => "lost",
            State::NoCredential => "no credential",
        }
    }
}

/// What an operator does to a card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Event {
    /// `keyfleet cards report CARD --lost|--damaged|--forgotten`.
    Report(IncidentKind),
    /// `keyfleet cards found CARD`.
    Found,
    /// `keyfleet cards retire CARD --found-lost`: wiped back to stock.
    RetireFoundLost,
}

impl Event {
    /// The name used in messages and in README.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Report(IncidentKind::Lost) => "report lost",
            Event::Report(IncidentKind::Damaged) => "report damaged",
            Event::Report(IncidentKind::Forgotten) => "report forgotten",
            Event::Found => "found",
            Event::RetireFoundLost => "retire --found-lost",
        }
    }
}

/// Where a transition leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// To this state.
    To(State),
    /// Wiped back to its stock, blank.
    Stock,
}

/// The allowed transitions, and only these: anything else is refused with the state named.
pub const TRANSITIONS: &[(State, Event, Next)] = &[
    (
        State::InUse,
        Event::Report(IncidentKind::Lost),
        Next::To(State::Lost),
    ),
    (
        State::InUse,
        Event::Report(IncidentKind::Damaged),
        Next::To(State::Damaged),
    ),
    (
        State::InUse,
        Event::Report(IncidentKind::Forgotten),
        Next::To(State::Forgotten),
    ),
    (
        State::Forgotten,
        Event::Report(IncidentKind::Lost),
        Next::To(State::Lost),
    ),
    (
        State::Forgotten,
        Event::Report(IncidentKind::Damaged),
        Next::To(State::Damaged),
    ),
    (State::Forgotten, Event::Found, Next::To(State::InUse)),
    (State::Lost, Event::RetireFoundLost, Next::Stock),
];

/// Every event, in the order README's table lists them.
pub const EVENTS: [Event; 5] = [
    Event::Report(IncidentKind::Lost),
    Event::Report(IncidentKind::Damaged),
    Event::Report(IncidentKind::Forgotten),
    Event::Found,
    Event::RetireFoundLost,
];

/// Every state, in the order README's table lists them.
pub const STATES: [State; 5] = [
    State::InUse,
    State::Forgotten,
    State::Lost,
    State::Damaged,
    State::NoCredential,
];

/// Where `event` takes a card in `state`, or why it cannot (the state named).
pub fn transition(card: &str, state: State, event: Event) -> Result<Next, String> {
    TRANSITIONS
        .iter()
        .find(|(from, e, _)| *from == state && *e == event)
        .map(|(_, _, next)| *next)
        .ok_or_else(|| match (state, event) {
            (State::Lost, _) => format!(
                "card {card} is lost: it is never used again; only `keyfleet cards retire \
                 {card} --found-lost` returns it to stock"
            ),
            (State::Damaged, _) => {
                format!("card {card} is damaged: it is retired and can only be replaced")
            }
            (state, event) => format!(
                "card {card} is {}: `{}` is not allowed from there",
                state.as_str(),
                event.as_str()
            ),
        })
}

/// The transition table as README shows it (a Markdown table).
pub fn table_markdown() -> String {
    let mut out = String::from("| card is \\ event |");
    for e in EVENTS {
        out.push_str(&format!(" {} |", e.as_str()));
    }
    out.push_str("\n|---|");
    for _ in EVENTS {
        out.push_str("---|");
    }
    for s in STATES {
        out.push_str(&format!("\n| {} |", s.as_str()));
        for e in EVENTS {
            let cell = match TRANSITIONS
                .iter()
                .find(|(from, ev, _)| *from == s && *ev == e)
            {
                Some((_, _, Next::To(to))) => to.as_str(),
                Some((_, _, Next::Stock)) => "blank in stock",
                None => "refused",
            };
            out.push_str(&format!(" {cell} |"));
        }
    }
    out.push('\n');
    out
}

/// The incident in force on `card` at `now`: the stronger of what its status, the record
/// and git (`declared`) say, a forgotten card becoming lost once it has been forgotten for
/// `forgotten_after_secs`. A record made for git's declaration counts only while git still
/// declares it. `None` for a card holding no credential unless its status is lost or
/// damaged.
pub fn effective(
    card: &CardRecord,
    facts: Option<&CardFacts>,
    declared: Option<IncidentKind>,
    now: OffsetDateTime,
    forgotten_after_secs: u64,
) -> Option<IncidentKind> {
    match card.status {
        CardStatus::Lost => return Some(IncidentKind::Lost),
        CardStatus::Damaged => return Some(IncidentKind::Damaged),
        CardStatus::Active | CardStatus::Suspended => {}
        CardStatus::Blank | CardStatus::Revoked | CardStatus::Retired => return None,
    }
    let recorded = facts
        .and_then(|f| f.incident.as_ref())
        .filter(|i| i.reported_by != REPORTED_BY_POLICY || declared.is_some());
    let kind = recorded.map(|i| i.kind).max(declared)?;
    if kind == IncidentKind::Forgotten
        && let Some(since) = recorded.map(|i| i.at)
    {
        let after =
            time::Duration::seconds(i64::try_from(forgotten_after_secs).unwrap_or(i64::MAX));
        if since
            .checked_add(after)
            .is_some_and(|lost_at| now >= lost_at)
        {
            return Some(IncidentKind::Lost);
        }
    }
    Some(kind)
}

/// The transition state of `card` given its incident in force.
pub fn state_of(card: &CardRecord, incident: Option<IncidentKind>) -> State {
    match incident {
        Some(IncidentKind::Lost) => State::Lost,
        Some(IncidentKind::Damaged) => State::Damaged,
        Some(IncidentKind::Forgotten) => State::Forgotten,
        None if card.holds_credential() => State::InUse,
        None => State::NoCredential,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::CardType;

    fn card(status: CardStatus) -> CardRecord {
        let t = OffsetDateTime::UNIX_EPOCH;
        CardRecord {
            id: "vcard:1".into(),
            card_type: CardType::Virtual,
            stock: None,
            user: Some("alice".into()),
            template: Some("t".into()),
            status,
            created_at: t,
            updated_at: t,
            temporary: false,
        }
    }

    fn facts(kind: IncidentKind, by: &str, at: i64) -> CardFacts {
        CardFacts {
            incident: Some(Incident {
                kind,
                reported_by: by.into(),
                at: OffsetDateTime::from_unix_timestamp(at).unwrap(),
                comment: String::new(),
            }),
            ..CardFacts::default()
        }
    }

    #[test]
    fn only_the_table_is_allowed_and_a_refusal_names_the_state() {
        let mut allowed = 0;
        for s in STATES {
            for e in EVENTS {
                match transition("c", s, e) {
                    Ok(_) => allowed += 1,
                    Err(msg) => assert!(
                        msg.contains(match s {
                            State::Lost => "is lost",
                            State::Damaged => "is damaged",
                            other => other.as_str(),
                        }),
                        "{msg}"
                    ),
                }
            }
        }
        assert_eq!(allowed, TRANSITIONS.len());
        assert_eq!(
            transition("c", State::Forgotten, Event::Found),
            Ok(Next::To(State::InUse))
        );
        assert!(transition("c", State::Lost, Event::Found).is_err());
        assert!(transition("c", State::InUse, Event::Found).is_err());
        assert!(transition("c", State::InUse, Event::RetireFoundLost).is_err());
        assert!(transition("c", State::Damaged, Event::Report(IncidentKind::Lost)).is_err());
        assert!(transition("c", State::NoCredential, Event::Report(IncidentKind::Lost)).is_err());
    }

    #[test]
    fn the_stronger_wins_and_forgotten_becomes_lost_on_time() {
        let now = OffsetDateTime::from_unix_timestamp(1000).unwrap();
        let active = card(CardStatus::Active);
        let f = facts(IncidentKind::Forgotten, "bob", 900);
        assert_eq!(
            effective(&active, Some(&f), None, now, 200),
            Some(IncidentKind::Forgotten)
        );
        assert_eq!(
            effective(&active, Some(&f), None, now, 100),
            Some(IncidentKind::Lost)
        );
        assert_eq!(
            effective(&active, Some(&f), Some(IncidentKind::Damaged), now, 200),
            Some(IncidentKind::Damaged)
        );
        let d = facts(IncidentKind::Lost, "bob", 900);
        assert_eq!(
            effective(&active, Some(&d), Some(IncidentKind::Forgotten), now, 200),
            Some(IncidentKind::Lost)
        );
        // Declared in git only: no clock until the hold records it.
        assert_eq!(
            effective(&active, None, Some(IncidentKind::Forgotten), now, 0),
            Some(IncidentKind::Forgotten)
        );
        // A record made for git lapses with the declaration.
        let p = facts(IncidentKind::Forgotten, REPORTED_BY_POLICY, 900);
        assert_eq!(effective(&active, Some(&p), None, now, 200), None);
        assert_eq!(
            effective(&active, Some(&p), Some(IncidentKind::Forgotten), now, 50),
            Some(IncidentKind::Lost)
        );
        assert_eq!(
            effective(&card(CardStatus::Lost), None, None, now, 0),
            Some(IncidentKind::Lost)
        );
        assert_eq!(
            effective(&card(CardStatus::Blank), Some(&f), None, now, 0),
            None
        );
    }
}

#[cfg(test)]
mod readme {
    /// README shows the same table as the code.
    #[test]
    fn readme_shows_the_transition_table() {
        let readme = include_str!("../../README.md");
        let table = super::table_markdown();
        assert!(
            readme.contains(&table),
            "README's incident table differs from the code's; it should read:\n{table}"
        );
    }
}
