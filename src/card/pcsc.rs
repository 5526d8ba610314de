//! Real readers through PC/SC (pcsc-lite): the [`PcscTransport`], reader listing, card
//! identity, and the [`CardWatcher`] that reports insertions and removals.
//!
//! Owns: the `pcsc` crate (contexts, reader states, `SCardTransmit`, `SCardGetStatusChange`
//! with the reader-attach notification `\\?PnP?\Notification`), and reading who a card is
//! ([`identify`]: CHUID GUID, the optional vendor serial probe, whether it holds certificates).
//! The client library honours `PCSCLITE_CSOCK_NAME`, so a private pcscd is reached by setting
//! that variable; nothing here needs to know.
//!
//! It does NOT interpret PIV beyond identity (that is [`super::piv::PivClient`], which runs over
//! [`PcscTransport`] like over any transport), and knows nothing of the inventory, stocks or
//! the life cycle: which card id a card gets in the inventory is the caller's choice, made from
//! the [`CardIdentity`] returned here.

use std::ffi::CString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::piv::{PivClient, PivError};
use super::transport::{Transport, TransportError};

/// Failures of the PC/SC layer.
#[derive(Debug, Error)]
pub enum PcscError {
    /// No PC/SC service (pcscd not running or not reachable).
    #[error("cannot reach the PC/SC service (is pcscd running?): {0}")]
    Establish(#[source] pcsc::Error),
    /// Listing readers failed.
    #[error("cannot list readers: {0}")]
    ListReaders(#[source] pcsc::Error),
    /// Connecting to the card in a reader failed.
    #[error("cannot connect to the card in {reader:?}: {source}")]
    Connect {
        /// The reader.
        reader: String,
        /// Why.
        #[source]
        source: pcsc::Error,
    },
    /// Waiting for reader state changes failed.
    #[error("cannot watch reader states: {0}")]
    StatusChange(#[source] pcsc::Error),
    /// A reader name with an interior NUL byte.
    #[error("reader name {0:?} is not a valid C string")]
    BadReaderName(String),
    /// The card answered, but not like a PIV card.
    #[error("the card in {reader:?} is not a usable PIV card: {source}")]
    NotPiv {
        /// The reader.
        reader: String,
        /// What the PIV client saw.
        #[source]
        source: PivError,
    },
}

/// APDUs sent through PC/SC by this process, and the time spent inside the PC/SC calls that
/// talk to pcscd and the card (establishing a context, listing readers, reading their state,
/// connecting, transmitting, disconnecting with a card reset): the card plus the transport.
/// Waiting for card events is not counted. Read with [`transport_stats`]; used for the
/// benchmark figures.
static APDUS: AtomicU64 = AtomicU64::new(0);
static PCSC_NANOS: AtomicU64 = AtomicU64::new(0);

/// (APDUs sent, time spent inside PC/SC calls) in this process so far.
pub fn transport_stats() -> (u64, Duration) {
    (
        APDUS.load(Ordering::Relaxed),
        Duration::from_nanos(PCSC_NANOS.load(Ordering::Relaxed)),
    )
}

/// Runs one PC/SC call, counting its time in [`transport_stats`].
fn timed<T>(call: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = call();
    let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    PCSC_NANOS.fetch_add(nanos, Ordering::Relaxed);
    out
}

/// Establishes a user-scope PC/SC context.
pub fn establish() -> Result<pcsc::Context, PcscError> {
    timed(|| pcsc::Context::establish(pcsc::Scope::User)).map_err(PcscError::Establish)
}

/// The names of the readers attached now (none is not an error).
pub fn list_readers(ctx: &pcsc::Context) -> Result<Vec<String>, PcscError> {
    match timed(|| ctx.list_readers_owned()) {
        Ok(names) => Ok(names
            .into_iter()
            .map(|n| n.to_string_lossy().into_owned())
            .collect()),
        Err(pcsc::Error::NoReadersAvailable) => Ok(Vec::new()),
        Err(e) => Err(PcscError::ListReaders(e)),
    }
}

/// A reader and what is in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderInfo {
    /// The reader's name.
    pub name: String,
    /// A card is present.
    pub present: bool,
    /// The card's ATR (empty without a card).
    pub atr: Vec<u8>,
}

fn c_name(reader: &str) -> Result<CString, PcscError> {
    CString::new(reader).map_err(|_| PcscError::BadReaderName(reader.to_string()))
}

/// Every reader with its current state (no waiting).
pub fn readers(ctx: &pcsc::Context) -> Result<Vec<ReaderInfo>, PcscError> {
    let names = list_readers(ctx)?;
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut states = names
        .iter()
        .map(|n| Ok(pcsc::ReaderState::new(c_name(n)?, pcsc::State::UNAWARE)))
        .collect::<Result<Vec<_>, PcscError>>()?;
    match timed(|| ctx.get_status_change(Duration::ZERO, &mut states)) {
        Ok(()) | Err(pcsc::Error::Timeout) => {}
        Err(e) => return Err(PcscError::StatusChange(e)),
    }
    Ok(states
        .iter()
        .map(|s| {
            let present = s.event_state().contains(pcsc::State::PRESENT)
                && !s.event_state().contains(pcsc::State::MUTE);
            ReaderInfo {
                name: s.name().to_string_lossy().into_owned(),
                present,
                atr: if present {
                    s.atr().to_vec()
                } else {
                    Vec::new()
                },
            }
        })
        .collect())
}

/// APDUs to a card in a reader, over a shared PC/SC connection. Dropping it disconnects with
/// a card reset, so no PIN or management-key authentication outlives the session.
pub struct PcscTransport {
    /// Always `Some` until dropped (taken there, to time the disconnect).
    card: Option<pcsc::Card>,
    reader: String,
    /// The answer buffer, reused for every APDU (64 KiB: extended-length answers).
    buf: Vec<u8>,
}

impl Drop for PcscTransport {
    fn drop(&mut self) {
        if let Some(card) = self.card.take() {
            timed(|| drop(card));
        }
    }
}

impl std::fmt::Debug for PcscTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcscTransport")
            .field("reader", &self.reader)
            .finish_non_exhaustive()
    }
}

impl PcscTransport {
    /// Connects (shared, T=0 or T=1) to the card in `reader`.
    pub fn connect(ctx: &pcsc::Context, reader: &str) -> Result<Self, PcscError> {
        Self::connect_mode(ctx, reader, pcsc::ShareMode::Shared)
    }

    /// Connects to the card in `reader` for this process alone (no other application's
    /// commands come between ours, e.g. between a VERIFY and the signature it unlocks).
    pub fn connect_exclusive(ctx: &pcsc::Context, reader: &str) -> Result<Self, PcscError> {
        Self::connect_mode(ctx, reader, pcsc::ShareMode::Exclusive)
    }

    fn connect_mode(
        ctx: &pcsc::Context,
        reader: &str,
        mode: pcsc::ShareMode,
    ) -> Result<Self, PcscError> {
        let name = c_name(reader)?;
        let card = timed(|| ctx.connect(&name, mode, pcsc::Protocols::ANY)).map_err(|source| {
            PcscError::Connect {
                reader: reader.to_string(),
                source,
            }
        })?;
        Ok(PcscTransport {
            card: Some(card),
            reader: reader.to_string(),
            buf: vec![0u8; pcsc::MAX_BUFFER_SIZE_EXTENDED],
        })
    }

    /// The reader this transport talks to.
    pub fn reader(&self) -> &str {
        &self.reader
    }
}

impl Transport for PcscTransport {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        let Some(card) = self.card.as_ref() else {
            return Err(TransportError::NoCard(format!(
                "{}: disconnected",
                self.reader
            )));
        };
        let result = timed(|| card.transmit(apdu, &mut self.buf));
        APDUS.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(r) if r.len() < 2 => Err(TransportError::ShortResponse(r.len())),
            Ok(r) => Ok(r.to_vec()),
            // pcsc-lite reports a card pulled in the middle of a command as NotTransacted.
            Err(
                e @ (pcsc::Error::RemovedCard
                | pcsc::Error::NoSmartcard
                | pcsc::Error::NotTransacted
                | pcsc::Error::ReaderUnavailable
                | pcsc::Error::UnknownReader),
            ) => Err(TransportError::NoCard(format!("{}: {e}", self.reader))),
            Err(e @ pcsc::Error::ResetCard) => Err(TransportError::Other(format!(
                "{}: {e} (another application reset the card; its session state is lost)",
                self.reader
            ))),
            Err(e) => Err(TransportError::Other(format!("{}: {e}", self.reader))),
        }
    }
}

/// Who a card is, as far as generic PIV (plus the optional serial probe) can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardIdentity {
    /// The reader it is in.
    pub reader: String,
    /// Its ATR.
    pub atr: Vec<u8>,
    /// The CHUID GUID; `None` without a CHUID, or with an all-zero GUID.
    pub guid: Option<[u8; 16]>,
    /// The vendor serial (Yubico GET SERIAL), if the card answers that probe.
    pub serial: Option<u32>,
    /// Slots (9A, 9C, 9D, 9E) holding a certificate; `None` when not read.
    pub cert_slots: Option<Vec<u8>>,
}

impl CardIdentity {
    /// True when the card holds no certificate in the four standard key slots (only known
    /// when [`identify`] was asked to read them).
    pub fn looks_blank(&self) -> Option<bool> {
        self.cert_slots.as_ref().map(Vec::is_empty)
    }
}

/// Reads a card's identity over an open PIV client: SELECT, CHUID, serial probe and, when
/// `read_certs`, which standard slots hold a certificate.
pub fn identify_with<T: Transport>(
    client: &mut PivClient<T>,
    reader: &str,
    atr: &[u8],
    read_certs: bool,
) -> Result<CardIdentity, PivError> {
    client.select()?;
    let guid = client
        .read_chuid()?
        .map(|c| c.guid)
        .filter(|g| g.iter().any(|b| *b != 0));
    let serial = client.serial()?;
    let cert_slots = if read_certs {
        let mut slots = Vec::new();
        for slot in [0x9A, 0x9C, 0x9D, 0x9E] {
            let held = match client.read_certificate(slot) {
                Ok(cert) => cert.is_some(),
                Err(PivError::CompressedCertificate(_)) => true,
                Err(e) => return Err(e),
            };
            if held {
                slots.push(slot);
            }
        }
        Some(slots)
    } else {
        None
    };
    Ok(CardIdentity {
        reader: reader.to_string(),
        atr: atr.to_vec(),
        guid,
        serial,
        cert_slots,
    })
}

/// Connects to the card in `reader` and reads its identity (see [`identify_with`]).
pub fn identify(
    ctx: &pcsc::Context,
    reader: &str,
    read_certs: bool,
) -> Result<CardIdentity, PcscError> {
    let transport = PcscTransport::connect(ctx, reader)?;
    let atr = transport
        .card
        .as_ref()
        .and_then(|card| timed(|| card.status2_owned()).ok())
        .map(|s| s.atr().to_vec())
        .unwrap_or_default();
    let mut client = PivClient::new(transport);
    identify_with(&mut client, reader, &atr, read_certs).map_err(|source| PcscError::NotPiv {
        reader: reader.to_string(),
        source,
    })
}

/// Connects to the card in `reader` and reads its PIN and PUK tries left without spending
/// any (see [`PivClient::tries_left`]).
pub fn read_tries(
    ctx: &pcsc::Context,
    reader: &str,
) -> Result<crate::card::piv::TriesLeft, PcscError> {
    let mut client = PivClient::new(PcscTransport::connect(ctx, reader)?);
    client
        .select()
        .and_then(|()| client.tries_left())
        .map_err(|source| PcscError::NotPiv {
            reader: reader.to_string(),
            source,
        })
}

/// Connects to the card in `reader` and reads the retired certificates its Key History
/// announces, as (slot, DER), newest first (see [`PivClient::read_retired_certificates`]).
pub fn read_retired(ctx: &pcsc::Context, reader: &str) -> Result<Vec<(u8, Vec<u8>)>, PcscError> {
    let mut client = PivClient::new(PcscTransport::connect(ctx, reader)?);
    client
        .select()
        .and_then(|()| client.read_retired_certificates())
        .map_err(|source| PcscError::NotPiv {
            reader: reader.to_string(),
            source,
        })
}

/// A change the watcher saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardEvent {
    /// A reader was attached.
    ReaderAttached(String),
    /// A reader was detached (its card, if any, is gone too).
    ReaderDetached(String),
    /// A card was inserted (or the watcher started with it present).
    Inserted {
        /// The reader.
        reader: String,
        /// The card's ATR.
        atr: Vec<u8>,
    },
    /// A card was removed.
    Removed {
        /// The reader.
        reader: String,
    },
}

/// Watches every reader (and the attachment of new ones) with `SCardGetStatusChange`.
pub struct CardWatcher {
    ctx: pcsc::Context,
    /// Index 0 is the PnP notification pseudo-reader; the rest are readers.
    states: Vec<pcsc::ReaderState>,
    /// Whether a usable card was present in each reader at the last look (by reader name).
    present: std::collections::BTreeMap<String, bool>,
    /// pcsc-lite's per-reader card event counter at the last look: a removal and reinsertion
    /// between two looks leaves `present` unchanged but moves the counter.
    counts: std::collections::BTreeMap<String, u32>,
}

impl std::fmt::Debug for CardWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardWatcher")
            .field("present", &self.present)
            .finish_non_exhaustive()
    }
}

impl CardWatcher {
    /// Starts watching. The first [`CardEvent`]s returned by [`CardWatcher::wait`] report the
    /// readers and cards present at the start (as attachments and insertions).
    pub fn new(ctx: pcsc::Context) -> Self {
        CardWatcher {
            ctx,
            states: vec![pcsc::ReaderState::new(
                pcsc::PNP_NOTIFICATION(),
                pcsc::State::UNAWARE,
            )],
            present: Default::default(),
            counts: Default::default(),
        }
    }

    /// Re-lists readers: adds new ones (UNAWARE, so their state is reported), drops gone ones.
    fn sync_readers(&mut self, events: &mut Vec<CardEvent>) -> Result<(), PcscError> {
        let names = list_readers(&self.ctx)?;
        let mut i = 1;
        while i < self.states.len() {
            let name = self
                .states
                .get(i)
                .map(|s| s.name().to_string_lossy().into_owned())
                .unwrap_or_default();
            if names.contains(&name) {
                i += 1;
            } else {
                self.states.remove(i);
                self.counts.remove(&name);
                if self.present.remove(&name) == Some(true) {
                    events.push(CardEvent::Removed {
                        reader: name.clone(),
                    });
                }
                events.push(CardEvent::ReaderDetached(name));
            }
        }
        for name in names {
            if !self.present.contains_key(&name) {
                self.states
                    .push(pcsc::ReaderState::new(c_name(&name)?, pcsc::State::UNAWARE));
                self.present.insert(name.clone(), false);
                events.push(CardEvent::ReaderAttached(name));
            }
        }
        Ok(())
    }

    /// Waits up to `timeout` for changes and returns them (empty on timeout).
    pub fn wait(&mut self, timeout: Duration) -> Result<Vec<CardEvent>, PcscError> {
        let mut events = Vec::new();
        self.sync_readers(&mut events)?;
        if !events.is_empty() {
            // Report attachments now; the UNAWARE states of new readers make the next call
            // return at once with their card state.
            self.collect(&mut events, Duration::ZERO)?;
            return Ok(events);
        }
        self.collect(&mut events, timeout)?;
        if self
            .states
            .first()
            .is_some_and(|s| s.event_state().contains(pcsc::State::CHANGED))
        {
            self.sync_readers(&mut events)?;
            self.collect(&mut events, Duration::ZERO)?;
        }
        Ok(events)
    }

    fn collect(&mut self, events: &mut Vec<CardEvent>, timeout: Duration) -> Result<(), PcscError> {
        match self.ctx.get_status_change(timeout, &mut self.states) {
            Ok(()) => {}
            Err(pcsc::Error::Timeout) => return Ok(()),
            // A reader vanished between listing and waiting: the next sync drops it.
            Err(pcsc::Error::UnknownReader) => return Ok(()),
            Err(e) => return Err(PcscError::StatusChange(e)),
        }
        for s in self.states.iter_mut().skip(1) {
            let name = s.name().to_string_lossy().into_owned();
            let ev = s.event_state();
            // Stale entries (the reader went away) are dropped by the next sync.
            if ev.contains(pcsc::State::UNKNOWN) || ev.contains(pcsc::State::IGNORE) {
                continue;
            }
            let now = ev.contains(pcsc::State::PRESENT) && !ev.contains(pcsc::State::MUTE);
            let before = self.present.get(&name).copied().unwrap_or(false);
            let count = s.event_count();
            let swapped = now
                && before
                && self
                    .counts
                    .get(&name)
                    .is_some_and(|c| *c != count && count != 0);
            self.counts.insert(name.clone(), count);
            if swapped {
                // Pulled and put back (maybe another card) between two looks.
                events.push(CardEvent::Removed {
                    reader: name.clone(),
                });
            }
            if now != before || swapped {
                events.push(if now {
                    CardEvent::Inserted {
                        reader: name.clone(),
                        atr: s.atr().to_vec(),
                    }
                } else {
                    CardEvent::Removed {
                        reader: name.clone(),
                    }
                });
                self.present.insert(name, now);
            }
        }
        for s in &mut self.states {
            s.sync_current_state();
        }
        Ok(())
    }

    /// The readers with a card in them at the last look.
    pub fn present_readers(&self) -> Vec<String> {
        self.present
            .iter()
            .filter(|(_, p)| **p)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The context (to identify a card that an event reported).
    pub fn context(&self) -> &pcsc::Context {
        &self.ctx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::keys::{KeyAlg, ManagementKey};
    use crate::card::transport::InProcess;
    use crate::card::vcard::VirtualCard;
    use proptest::prelude::*;

    /// A card answering from a script of responses (9000 once it runs out).
    struct Scripted(std::collections::VecDeque<Vec<u8>>);

    impl Transport for Scripted {
        fn transmit(&mut self, _: &[u8]) -> Result<Vec<u8>, TransportError> {
            Ok(self.0.pop_front().unwrap_or_else(|| vec![0x90, 0x00]))
        }
    }

    #[test]
    fn identifies_a_factory_card_and_an_issued_one() {
        let mut c = PivClient::new(InProcess::new(VirtualCard::in_memory()));
        let id = identify_with(&mut c, "r", &[1], true).unwrap();
        assert_eq!(id.guid, None);
        assert!(id.serial.is_some());
        assert_eq!(id.looks_blank(), Some(true));
        c.authenticate(&ManagementKey::factory_default()).unwrap();
        c.write_chuid([0; 16], "20300101").unwrap();
        c.write_certificate(0x9C, &[0x30, 0x00]).unwrap();
        let id = identify_with(&mut c, "r", &[1], true).unwrap();
        // An all-zero GUID is no identity.
        assert_eq!(id.guid, None);
        assert_eq!(id.cert_slots, Some(vec![0x9C]));
        c.write_chuid([7; 16], "20300101").unwrap();
        let id = identify_with(&mut c, "r", &[1], false).unwrap();
        assert_eq!((id.guid, id.cert_slots), (Some([7; 16]), None));
    }

    proptest! {
        /// The client side of TLV parsing: whatever a card answers, every parsing operation
        /// returns (an error or a value) and never panics.
        #[test]
        fn client_parsing_never_panics(
            answers in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 0..80), 0..12)
        ) {
            let mut answers: Vec<Vec<u8>> = answers;
            // Bias towards plausible shapes: end some answers with 9000 or 61xx.
            for (i, a) in answers.iter_mut().enumerate() {
                match i % 3 {
                    0 => a.extend_from_slice(&[0x90, 0x00]),
                    1 => a.extend_from_slice(&[0x61, 0x10]),
                    _ => {}
                }
            }
            let mut c = PivClient::new(Scripted(answers.into()));
            let _ = identify_with(&mut c, "r", &[], true);
            let _ = c.read_certificate(0x9A);
            let _ = c.authenticate(&ManagementKey::factory_default());
            let _ = c.generate_key(0x9A, KeyAlg::EccP256);
            let _ = c.generate_key(0x9C, KeyAlg::Rsa2048);
            let _ = c.sign_digest(0x9C, KeyAlg::EccP256, &[0u8; 32]);
            let _ = c.pin_retries();
        }
    }
}
