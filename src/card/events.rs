//! Card events: a card (or token) appeared or went away. Watchers send them on a channel; the
//! controller consumes them only to decide *when* a pass runs (the pass itself stays
//! level-triggered and re-reads presence).
//!
//! This module only defines the event; watchers live beside their transports.

/// A card or token appeared or disappeared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardEvent {
    /// The card with this id is now present.
    Inserted {
        /// Card id (e.g. `p11-<serial>`).
        card: String,
        /// Human-readable name (token label, reader name).
        label: String,
    },
    /// The card with this id is gone.
    Removed {
        /// Card id.
        card: String,
    },
}

impl CardEvent {
    /// The card the event is about.
    pub fn card(&self) -> &str {
        match self {
            CardEvent::Inserted { card, .. } | CardEvent::Removed { card } => card,
        }
    }
}
