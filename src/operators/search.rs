//! The console's search: users by uid, or by a part of the name (the subject's CN) or mail
//! (an e-mail or UPN subject alternative name) of their certificates; cards by id, or by a
//! certificate serial's first digits. Only cards and certificates of templates in the
//! operator's `view-inventory` scope are searched ([`super::scoped`]); results are bounded.
//!
//! Pure: an inventory in, a list out.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::roles::Scope;
use super::scoped;
use crate::inventory::Inventory;
use crate::names::SanValue;
use crate::views::CardView;

/// The most hits a search returns.
pub const MAX_HITS: usize = 50;

/// The longest query accepted, in characters.
pub const MAX_QUERY: usize = 256;

/// What to search for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query<'a> {
    /// A user: uid (whole or part), or part of a certificate's CN or mail, any case.
    User(&'a str),
    /// A card: id (whole or part, any case), or the start of one of its certificates' serials
    /// (hex, any case, `:` and spaces ignored).
    Card(&'a str),
}

/// Why a query is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// Nothing to search for.
    #[error("the search is empty")]
    Empty,
    /// Longer than [`MAX_QUERY`].
    #[error("the search is longer than {MAX_QUERY} characters")]
    TooLong,
}

/// What a user matched on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum UserMatch {
    /// The uid is the query.
    Uid,
    /// The uid contains the query.
    UidPart,
    /// A certificate's CN contains it.
    Name,
    /// A certificate's e-mail or UPN contains it.
    Mail,
}

/// What a card matched on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CardMatch {
    /// The id is the query.
    Id,
    /// The id contains the query.
    IdPart,
    /// One of its certificates' serials starts with it.
    Serial,
}

/// One user found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserHit {
    /// The uid.
    pub uid: String,
    /// What matched.
    pub matched: UserMatch,
    /// The names (CNs) on their certificates in scope.
    pub names: Vec<String>,
    /// The e-mail and UPN names on their certificates in scope.
    pub mails: Vec<String>,
    /// Their cards in scope (ids).
    pub cards: Vec<String>,
}

/// One card found.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CardHit {
    /// The card.
    pub card: CardView,
    /// What matched.
    pub matched: CardMatch,
    /// The serial that matched, for a serial match.
    pub serial: Option<String>,
}

/// The hits of a search.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Hits {
    /// Users, best match first, then by uid.
    Users {
        /// Them.
        users: Vec<UserHit>,
    },
    /// Cards, best match first, then by id.
    Cards {
        /// Them.
        cards: Vec<CardHit>,
    },
}

/// A search's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchResult {
    /// What was found (at most [`MAX_HITS`]).
    pub hits: Hits,
    /// True when more matched than are listed.
    pub cut: bool,
}

fn checked(q: &str) -> Result<&str, SearchError> {
    let q = q.trim();
    if q.is_empty() {
        return Err(SearchError::Empty);
    }
    if q.chars().count() > MAX_QUERY {
        return Err(SearchError::TooLong);
    }
    Ok(q)
}

/// The CN of an RFC 4514 subject (`CN=Alice Smith,O=Example`), if it has one.
fn common_name(subject: &str) -> Option<&str> {
    subject.split(',').find_map(|rdn| {
        let (k, v) = rdn.trim().split_once('=')?;
        k.trim().eq_ignore_ascii_case("cn").then(|| v.trim())
    })
}

/// Searches `inventory` within `scope`.
pub fn search(
    inventory: &Inventory,
    scope: &Scope,
    query: Query<'_>,
) -> Result<SearchResult, SearchError> {
    Ok(match query {
        Query::User(q) => users(inventory, scope, checked(q)?),
        Query::Card(q) => cards(inventory, scope, checked(q)?),
    })
}

#[derive(Default)]
struct Seen {
    names: BTreeSet<String>,
    mails: BTreeSet<String>,
    cards: BTreeSet<String>,
}

fn users(inventory: &Inventory, scope: &Scope, q: &str) -> SearchResult {
    let q = q.to_lowercase();
    let mut seen: BTreeMap<&str, Seen> = BTreeMap::new();
    for card in inventory
        .cards
        .values()
        .filter(|c| scoped::card_in(c, scope))
    {
        if let Some(u) = &card.user {
            seen.entry(u).or_default().cards.insert(card.id.clone());
        }
    }
    for cert in inventory
        .certs
        .values()
        .filter(|c| scoped::cert_in(c, scope))
    {
        let s = seen.entry(&cert.user).or_default();
        if let Some(cn) = common_name(&cert.subject) {
            s.names.insert(cn.to_string());
        }
        for san in &cert.sans {
            if let SanValue::Email(v) | SanValue::Upn(v) = san {
                s.mails.insert(v.clone());
            }
        }
        if inventory
            .cards
            .get(&cert.card)
            .is_some_and(|c| scoped::card_in(c, scope))
        {
            s.cards.insert(cert.card.clone());
        }
    }
    let mut hits: Vec<UserHit> = seen
        .into_iter()
        .filter_map(|(uid, s)| {
            let lower = uid.to_lowercase();
            let contains = |v: &String| v.to_lowercase().contains(&q);
            let matched = if lower == q {
                UserMatch::Uid
            } else if lower.contains(&q) {
                UserMatch::UidPart
            } else if s.names.iter().any(contains) {
                UserMatch::Name
            } else if s.mails.iter().any(contains) {
                UserMatch::Mail
            } else {
                return None;
            };
            Some(UserHit {
                uid: uid.to_string(),
                matched,
                names: s.names.into_iter().collect(),
                mails: s.mails.into_iter().collect(),
                cards: s.cards.into_iter().collect(),
            })
        })
        .collect();
    hits.sort_by(|a, b| (a.matched, &a.uid).cmp(&(b.matched, &b.uid)));
    let cut = hits.len() > MAX_HITS;
    hits.truncate(MAX_HITS);
    SearchResult {
        hits: Hits::Users { users: hits },
        cut,
    }
}

fn cards(inventory: &Inventory, scope: &Scope, q: &str) -> SearchResult {
    let lower = q.to_lowercase();
    let serial: String = q
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect::<String>()
        .to_uppercase();
    let serial_ok = !serial.is_empty() && serial.chars().all(|c| c.is_ascii_hexdigit());
    // The first serial (in order) that matches, per card.
    let mut by_serial: BTreeMap<&str, &str> = BTreeMap::new();
    if serial_ok {
        for cert in inventory
            .certs
            .values()
            .filter(|c| scoped::cert_in(c, scope))
        {
            if cert.serial.to_uppercase().starts_with(&serial) {
                by_serial.entry(&cert.card).or_insert(&cert.serial);
            }
        }
    }
    let mut hits: Vec<CardHit> = inventory
        .cards
        .values()
        .filter(|c| scoped::card_in(c, scope))
        .filter_map(|c| {
            let id = c.id.to_lowercase();
            let (matched, serial) = if id == lower {
                (CardMatch::Id, None)
            } else if id.contains(&lower) {
                (CardMatch::IdPart, None)
            } else if let Some(s) = by_serial.get(c.id.as_str()) {
                (CardMatch::Serial, Some((*s).to_string()))
            } else {
                return None;
            };
            Some(CardHit {
                card: CardView::of(c, inventory.facts.get(&c.id)),
                matched,
                serial,
            })
        })
        .collect();
    hits.sort_by(|a, b| (a.matched, &a.card.id).cmp(&(b.matched, &b.card.id)));
    let cut = hits.len() > MAX_HITS;
    hits.truncate(MAX_HITS);
    SearchResult {
        hits: Hits::Cards { cards: hits },
        cut,
    }
}
