//! Lookup tables over the inventory, built once per plan: who holds which card, each card's
//! live certificates by slot, and which of them newer ones superseded.

use std::collections::{BTreeMap, HashMap};

use crate::inventory::{CardRecord, CardStatus, CertRecord, CertStatus, Inventory};
use crate::policy::model::Slot;

/// The newest live certificate of each slot of one card (no allocation: planning visits
/// every card).
#[derive(Default, Clone, Copy)]
pub(super) struct LiveSlots<'a>(pub(super) [Option<&'a CertRecord>; 4]);

pub(super) const SLOTS: [Slot; 4] = [
    Slot::PivAuthentication,
    Slot::DigitalSignature,
    Slot::KeyManagement,
    Slot::CardAuthentication,
];

pub(super) fn slot_index(slot: Slot) -> usize {
    match slot {
        Slot::PivAuthentication => 0,
        Slot::DigitalSignature => 1,
        Slot::KeyManagement => 2,
        Slot::CardAuthentication => 3,
    }
}

impl<'a> LiveSlots<'a> {
    pub(super) fn get(&self, slot: Slot) -> Option<&'a CertRecord> {
        self.0[slot_index(slot)]
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (Slot, &'a CertRecord)> + '_ {
        SLOTS
            .iter()
            .zip(self.0.iter())
            .filter_map(|(s, c)| c.map(|c| (*s, c)))
    }
}

/// FNV-style hashing for the planner's tables: SipHash dominated planning time. The keys are
/// uids, template names and card ids from the inventory; flooding these tables with colliding
/// keys would take write access to the directory and the inventory, where an attacker can do
/// far worse than slow the planner down.
#[derive(Default, Clone, Copy)]
pub(super) struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            h = (h ^ u64::from_le_bytes(word))
                .wrapping_mul(0x0100_0000_01b3)
                .rotate_left(23);
        }
        self.0 = h;
    }
}

pub(super) type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FastHasher>>;

/// Lookup tables over the inventory, built once per plan.
pub(super) struct Index<'a> {
    pub(super) holders: FastMap<(&'a str, &'a str), &'a CardRecord>,
    /// (user, card), sorted by user: one allocation instead of one per user.
    pub(super) cards_by_user: Vec<(&'a str, &'a CardRecord)>,
    pub(super) holders_count: usize,
    pub(super) certs_by_card: FastMap<&'a str, CardCerts<'a>>,
    /// Cards with more than one live certificate in a slot, in id order (normally none).
    pub(super) crowded: Vec<&'a str>,
    pub(super) blanks_by_stock: BTreeMap<&'a str, Vec<&'a CardRecord>>,
    pub(super) cards_per_stock: HashMap<&'a str, usize>,
    /// Key-management certificates whose keys the archive holds, by user (empty unless the
    /// archive holds some).
    pub(super) archived_by_user: FastMap<&'a str, Vec<&'a CertRecord>>,
}

/// The live certificates of one card: the newest per slot inline, any older live ones (which
/// should not exist) aside.
#[derive(Default)]
pub(super) struct CardCerts<'a> {
    pub(super) newest: LiveSlots<'a>,
    pub(super) older: Vec<&'a CertRecord>,
}

impl<'a> Index<'a> {
    pub(super) fn new(inv: &'a Inventory) -> Self {
        // The certificate table is independent of the card tables: build it alongside.
        std::thread::scope(|scope| {
            let certs = scope.spawn(|| Self::certs_by_card(inv));
            let mut holders: FastMap<(&str, &str), &CardRecord> =
                FastMap::with_capacity_and_hasher(inv.cards.len(), Default::default());
            let mut blanks_by_stock: BTreeMap<&str, Vec<&CardRecord>> = BTreeMap::new();
            let mut cards_per_stock: HashMap<&str, usize> = HashMap::new();
            let mut cards_by_user: Vec<(&str, &CardRecord)> = Vec::with_capacity(inv.cards.len());
            for card in inv.cards.values() {
                if let Some(u) = card.user.as_deref() {
                    cards_by_user.push((u, card));
                }
                if let Some(stock) = card.stock.as_deref() {
                    if card.status != CardStatus::Retired && card.status != CardStatus::Lost {
                        *cards_per_stock.entry(stock).or_default() += 1;
                    }
                    if card.status == CardStatus::Blank {
                        blanks_by_stock.entry(stock).or_default().push(card);
                    }
                }
                if !card.holds_credential() {
                    continue;
                }
                if let (Some(u), Some(t)) = (card.user.as_deref(), card.template.as_deref()) {
                    // With several live cards for one (user, template), the oldest is the
                    // credential; the others are planned away as no longer entitled.
                    holders
                        .entry((u, t))
                        .and_modify(|prev| {
                            if (card.created_at, &card.id) < (prev.created_at, &prev.id) {
                                *prev = card;
                            }
                        })
                        .or_insert(card);
                }
            }
            // Stable sort: a user's cards stay in id order.
            cards_by_user.sort_by(|a, b| a.0.cmp(b.0));
            let mut holders_count = 0;
            let mut last: Option<&str> = None;
            for (u, c) in &cards_by_user {
                if c.holds_credential() && last != Some(*u) {
                    holders_count += 1;
                    last = Some(*u);
                }
            }
            let (certs_by_card, crowded) = certs
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            let mut archived_by_user: FastMap<&str, Vec<&CertRecord>> = FastMap::default();
            if !inv.archived.is_empty() {
                for c in inv
                    .certs
                    .values()
                    .filter(|c| super::key_history::is_archived_km(inv, c))
                {
                    archived_by_user.entry(c.user.as_str()).or_default().push(c);
                }
            }
            Index {
                holders,
                cards_by_user,
                holders_count,
                certs_by_card,
                crowded,
                blanks_by_stock,
                cards_per_stock,
                archived_by_user,
            }
        })
    }

    /// The live certificates by card, and the cards with more than one in a slot (sorted).
    pub(super) fn certs_by_card(
        inv: &'a Inventory,
    ) -> (FastMap<&'a str, CardCerts<'a>>, Vec<&'a str>) {
        let mut certs_by_card: FastMap<&str, CardCerts<'_>> =
            FastMap::with_capacity_and_hasher(inv.cards.len(), Default::default());
        let mut crowded: Vec<&str> = Vec::new();
        for cert in inv.certs.values().filter(|c| c.is_live()) {
            let entry = certs_by_card.entry(cert.card.as_str()).or_default();
            let slot = &mut entry.newest.0[slot_index(cert.slot)];
            match slot {
                Some(prev) if prev.enrolment_order() >= cert.enrolment_order() => {
                    entry.older.push(cert);
                    crowded.push(cert.card.as_str());
                }
                Some(prev) => {
                    entry.older.push(prev);
                    *slot = Some(cert);
                    crowded.push(cert.card.as_str());
                }
                None => *slot = Some(cert),
            }
        }
        crowded.sort_unstable();
        crowded.dedup();
        (certs_by_card, crowded)
    }

    /// `user`'s key-management certificates whose keys the archive holds.
    pub(super) fn archived_of<'s>(
        &'s self,
        user: &str,
    ) -> impl Iterator<Item = &'a CertRecord> + 's {
        self.archived_by_user
            .get(user)
            .into_iter()
            .flat_map(|v| v.iter().copied())
    }

    pub(super) fn holder(&self, user: &str, template: &str) -> Option<&'a CardRecord> {
        self.holders.get(&(user, template)).copied()
    }

    /// The cards bound to `user`.
    pub(super) fn cards_of<'s>(
        &'s self,
        user: &'s str,
    ) -> impl Iterator<Item = &'a CardRecord> + 's {
        let start = self.cards_by_user.partition_point(|(u, _)| *u < user);
        self.cards_by_user[start..]
            .iter()
            .take_while(move |(u, _)| *u == user)
            .map(|(_, c)| *c)
    }

    /// Live certificates of a card by slot, the newest per slot (older live ones should not
    /// exist; they are superseded when the slot is next reissued).
    pub(super) fn live_by_slot(&self, card: &str) -> LiveSlots<'a> {
        self.certs_by_card
            .get(card)
            .map(|c| LiveSlots(c.newest.0))
            .unwrap_or_default()
    }

    /// Serials of the live certificates of `card` in `slots` older than the newest there.
    pub(super) fn older_in_slots(&self, card: &str, slots: &[Slot]) -> Vec<&'a str> {
        if slots.is_empty() {
            return Vec::new();
        }
        self.certs_by_card
            .get(card)
            .map(|c| {
                c.older
                    .iter()
                    .filter(|o| slots.contains(&o.slot))
                    .map(|o| o.serial.as_str())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Serials of the live certificates of a card the card should keep (the superseded ones
    /// are revoked on their own, see [`CardCerts::superseded`]), with `status` if given.
    pub(super) fn live_serials(&self, card: &str, status: Option<CertStatus>) -> Vec<String> {
        let Some(certs) = self.certs_by_card.get(card) else {
            return Vec::new();
        };
        let superseded = certs.superseded();
        let mut v: Vec<String> = certs
            .newest
            .iter()
            .map(|(_, c)| c)
            .chain(certs.older.iter().copied())
            .filter(|c| status.is_none_or(|s| c.status == s))
            .filter(|c| !superseded.iter().any(|(o, _)| o.serial == c.serial))
            .map(|c| c.serial.clone())
            .collect();
        v.sort();
        v
    }
}

impl<'a> CardCerts<'a> {
    /// The live certificates this card's slots should no longer hold: in each slot, every one
    /// older than the newest installed one. A renewal or reissue replaced them and the CA has
    /// not confirmed their revocation (it refused, or was unreachable, at that moment). A
    /// newer certificate not yet installed is an interrupted issuance: it is not the slot's
    /// certificate until it is written, and its installation supersedes the rest then.
    /// Each comes with the certificate that replaced it; ordered by slot, then serial.
    pub(super) fn superseded(&self) -> Vec<(&'a CertRecord, &'a CertRecord)> {
        if self.older.is_empty() {
            return Vec::new();
        }
        let key = CertRecord::enrolment_order;
        let mut out: Vec<(&CertRecord, &CertRecord)> = Vec::new();
        for slot in SLOTS {
            let in_slot = || self.older.iter().copied().filter(move |c| c.slot == slot);
            let current = self.newest.get(slot).filter(|c| c.installed).or_else(|| {
                in_slot()
                    .filter(|c| c.installed)
                    .max_by(|a, b| key(a).cmp(&key(b)))
            });
            let Some(current) = current else {
                continue;
            };
            let start = out.len();
            out.extend(
                in_slot()
                    .filter(|c| key(c) < key(current))
                    .map(|c| (c, current)),
            );
            out[start..].sort_by(|a, b| a.0.serial.cmp(&b.0.serial));
        }
        out
    }
}
