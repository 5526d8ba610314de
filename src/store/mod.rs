//! The state store: inventory, journal, history and sealed secrets in sled under the state
//! directory.
//!
//! This is the only module that opens sled. It stores and returns records; it makes no
//! decisions about them. sled admits one process at a time: a second opener gets
//! [`StoreError::Locked`].
//!
//! Trees: `cards` (id → JSON), `certs` (serial → JSON), `journal` (big-endian u64 → JSON),
//! `history` (big-endian u64 → JSON, append-only), `secrets` (name → sealed bytes),
//! `certs-by-card` (index: length-prefixed card id ++ serial → nothing; the empty key marks
//! the index complete, and a store without it is indexed when opened).

mod archive;
#[cfg(test)]
mod format_tests;
pub mod journal;
mod requests;
mod stored;

use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use serde::{Serialize, de::DeserializeOwned};
use sled::Transactional as _;

pub use journal::{
    HistoryEntry, HistoryResult, JournalEntry, JournalSecret, JournalState, JournalStep,
    SealBinding,
};

use crate::inventory::{CardFacts, CardRecord, CertRecord, Inventory};

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the store.
    #[error(
        "the state directory {0} is in use by another keyfleet process (only one may write it at a time)"
    )]
    Locked(PathBuf),
    /// The state directory is open to others, or could not be made private.
    #[error(transparent)]
    StateDir(#[from] crate::fsutil::PrivateDirError),
    /// The store's directory could not be created.
    #[error("cannot create the store directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// sled failed.
    #[error("state store error: {0}")]
    Sled(#[from] sled::Error),
    /// A journal entry to close together with its record is not open in the store (closed
    /// already, or never written): neither is written.
    #[error("journal entry {0} is not open in the state store")]
    NotOpen(u64),
    /// A stored record does not decode (corruption or a newer format).
    #[error("state store record {tree}/{key} does not decode: {source}")]
    Decode {
        /// Tree name.
        tree: &'static str,
        /// Key, printable.
        key: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

impl From<sled::transaction::TransactionError<StoreError>> for StoreError {
    fn from(e: sled::transaction::TransactionError<StoreError>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}

/// The inventory record a journal entry's closing leads to, written with the closing in one
/// transaction ([`Store::journal_close_recording`]).
#[derive(Debug, Clone, Copy)]
pub enum Recorded<'a> {
    /// A certificate (and its certificates-by-card index entry).
    Cert(&'a CertRecord),
    /// A card.
    Card(&'a CardRecord),
}

/// An open store.
pub struct Store {
    db: sled::Db,
    cards: sled::Tree,
    certs: sled::Tree,
    certs_by_card: sled::Tree,
    journal: sled::Tree,
    history: sled::Tree,
    secrets: sled::Tree,
    card_facts: sled::Tree,
    /// Bumped by every change to a card or certificate record (see
    /// [`Store::inventory_generation`]).
    generation: std::sync::atomic::AtomicU64,
}

/// The `certs-by-card` key of a card's certificates (`serial` empty: the prefix of them all).
fn card_index_key(card: &str, serial: &str) -> Vec<u8> {
    let len = u32::try_from(card.len()).unwrap_or(u32::MAX);
    let mut key = Vec::with_capacity(4 + card.len() + serial.len());
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(card.as_bytes());
    key.extend_from_slice(serial.as_bytes());
    key
}

/// Key in the default tree marking that no closed journal entry holds secret material (set
/// once every entry written before closings dropped their secrets has been cleaned).
const CLOSED_SECRETS_DROPPED: &[u8] = b"journal-closed-secrets-dropped";

/// The store's page cache. sled's default (1 GiB) lets a long-running controller keep every
/// page it ever wrote; the inventory's hot set is small, and reads that miss go to the page
/// cache of the kernel.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

impl Store {
    /// Opens (creating if needed) the store in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        // The state directory holds the master key, sealed secrets and PIN mailers: owner
        // only, and refused when others may enter it.
        crate::fsutil::ensure_private_dir(state_dir)?;
        let path = state_dir.join("store");
        // sled creates its files with the process's umask (`keyfleet` sets 077); the folder
        // is made here so that it is 0700 whatever the umask.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(e),
            })
            .map_err(|source| StoreError::CreateDir {
                path: path.clone(),
                source,
            })?;
        // sled releases its file lock from a background thread shortly after the last handle
        // is dropped, so a store closed a moment ago (by this process or a one-shot command)
        // can still look locked: retry briefly before reporting it in use.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let db = loop {
            match sled::Config::new()
                .path(&path)
                .cache_capacity(CACHE_BYTES)
                // Every write below flushes before it returns: sled's own timer would only
                // wake an idle controller twice a second to find nothing to flush.
                .flush_every_ms(None)
                .open()
            {
                Ok(db) => break db,
                Err(e) => {
                    let locked = matches!(&e, sled::Error::Io(io)
                        if io.kind() == std::io::ErrorKind::WouldBlock
                            || io.to_string().contains("lock"));
                    if !locked {
                        return Err(StoreError::Sled(e));
                    }
                    if std::time::Instant::now() >= deadline {
                        return Err(StoreError::Locked(state_dir.to_path_buf()));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        };
        let store = Store {
            cards: db.open_tree("cards")?,
            certs: db.open_tree("certs")?,
            certs_by_card: db.open_tree("certs-by-card")?,
            journal: db.open_tree("journal")?,
            history: db.open_tree("history")?,
            secrets: db.open_tree("secrets")?,
            card_facts: db.open_tree("card-facts")?,
            db,
            generation: std::sync::atomic::AtomicU64::new(0),
        };
        if !store.certs_by_card.contains_key([])? {
            // A store written before the index existed (or interrupted while indexing).
            store.reindex()?;
        }
        if !store.db.contains_key(CLOSED_SECRETS_DROPPED)? {
            // A store written before closed entries dropped their secrets.
            store.drop_closed_secrets()?;
        }
        Ok(store)
    }

    /// Builds the certificates-by-card index again from the certificate records (after an
    /// older Keyfleet, which does not keep it, wrote to this store). Returns the number of
    /// certificates indexed.
    pub fn reindex(&self) -> Result<usize, StoreError> {
        // The marker first: a rebuild interrupted while clearing is done again at next open.
        self.certs_by_card.remove([])?;
        self.certs_by_card.clear()?;
        let mut n = 0;
        for item in self.certs.iter() {
            let (k, v) = item?;
            let cert: CertRecord = decode("certs", &k, &v)?;
            self.certs_by_card
                .insert(card_index_key(&cert.card, &cert.serial), &[])?;
            n += 1;
        }
        // The marker last: an interrupted rebuild is done again at the next open.
        self.certs_by_card.insert([], &[])?;
        self.sync()?;
        Ok(n)
    }

    /// Drops the secret material (sealed PINs and PUKs) of every closed journal entry, as
    /// closing does since it was made to; the facts stay. Run at open on a store an older
    /// Keyfleet wrote. Returns the number of entries cleaned.
    pub fn drop_closed_secrets(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        for item in self.journal.iter() {
            let (k, v) = item?;
            let mut e = decode_entry(&k, &v)?;
            if e.state != JournalState::Open && e.step.drop_secrets() {
                self.journal.insert(k, encode_entry(&e))?;
                n += 1;
            }
        }
        // The marker last: an interrupted cleaning is done again at the next open.
        self.db.insert(CLOSED_SECRETS_DROPPED, &[])?;
        self.sync()?;
        Ok(n)
    }

    /// Every certificate recorded for `card`, whatever its status, ordered by serial.
    pub fn certs_of_card(&self, card: &str) -> Result<Vec<CertRecord>, StoreError> {
        let prefix = card_index_key(card, "");
        let mut out = Vec::new();
        for item in self.certs_by_card.scan_prefix(&prefix) {
            let (k, _) = item?;
            let serial = String::from_utf8_lossy(&k[prefix.len()..]);
            // Written with its record in one transaction; a store an older Keyfleet wrote
            // (index entry first) may hold one without its record.
            if let Some(cert) = self.cert(&serial)? {
                out.push(cert);
            }
        }
        Ok(out)
    }

    /// Which version of the inventory this store holds: it changes with every card or
    /// certificate record written through this handle (the only writer: the store is
    /// exclusive to one process). An inventory read after `inventory_generation()` returned
    /// `g` is current for as long as it still returns `g`.
    pub fn inventory_generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn changed(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Reads the whole inventory.
    pub fn inventory(&self) -> Result<Inventory, StoreError> {
        let mut inv = Inventory::default();
        for item in self.cards.iter() {
            let (k, v) = item?;
            let card: CardRecord = decode("cards", &k, &v)?;
            inv.cards.insert(card.id.clone(), card);
        }
        for item in self.certs.iter() {
            let (k, v) = item?;
            let cert: CertRecord = decode("certs", &k, &v)?;
            inv.certs.insert(cert.serial.clone(), cert);
        }
        for item in self.card_facts.iter() {
            let (k, v) = item?;
            let facts: CardFacts = decode("card-facts", &k, &v)?;
            inv.facts
                .insert(String::from_utf8_lossy(&k).into_owned(), facts);
        }
        inv.archived = self.archive_key_ids()?;
        Ok(inv)
    }

    /// What Keyfleet learned about a card (empty when nothing).
    pub fn card_facts(&self, id: &str) -> Result<CardFacts, StoreError> {
        Ok(self
            .card_facts
            .get(id.as_bytes())?
            .map(|v| decode("card-facts", id.as_bytes(), &v))
            .transpose()?
            .unwrap_or_default())
    }

    /// Records what Keyfleet learned about a card (empty facts remove the entry). Flushed:
    /// a fact holds actions back (a refused PIN must never be tried again), so it must not
    /// be lost in a crash.
    pub fn put_card_facts(&self, id: &str, facts: &CardFacts) -> Result<(), StoreError> {
        if facts.is_empty() {
            self.card_facts.remove(id.as_bytes())?;
        } else {
            self.card_facts.insert(id.as_bytes(), encode(facts))?;
        }
        self.changed();
        self.sync()
    }

    /// Changes what Keyfleet recorded about a card atomically (compare-and-swap, retried when
    /// another writer changed it meanwhile), flushed. `change` may refuse (its error is
    /// returned inside, nothing written); it can run more than once.
    pub fn update_card_facts<T>(
        &self,
        id: &str,
        mut change: impl FnMut(&mut CardFacts) -> Result<T, String>,
    ) -> Result<Result<T, String>, StoreError> {
        loop {
            let old = self.card_facts.get(id.as_bytes())?;
            let mut facts: CardFacts = old
                .as_ref()
                .map(|v| decode("card-facts", id.as_bytes(), v))
                .transpose()?
                .unwrap_or_default();
            let out = match change(&mut facts) {
                Ok(out) => out,
                Err(e) => return Ok(Err(e)),
            };
            let new = (!facts.is_empty()).then(|| encode(&facts));
            if self
                .card_facts
                .compare_and_swap(id.as_bytes(), old, new)?
                .is_ok()
            {
                self.changed();
                self.sync()?;
                return Ok(Ok(out));
            }
        }
    }

    /// One card.
    pub fn card(&self, id: &str) -> Result<Option<CardRecord>, StoreError> {
        self.cards
            .get(id.as_bytes())?
            .map(|v| decode("cards", id.as_bytes(), &v))
            .transpose()
    }

    /// One certificate.
    pub fn cert(&self, serial: &str) -> Result<Option<CertRecord>, StoreError> {
        self.certs
            .get(serial.as_bytes())?
            .map(|v| decode("certs", serial.as_bytes(), &v))
            .transpose()
    }

    /// Writes a card record. Not flushed: it becomes durable with the next flushing write
    /// (a journal intent, a secret) or [`Store::sync`], which ends every action. A record
    /// lost in a crash before that belongs to an action whose journal intent is still open,
    /// and recovery writes it again.
    pub fn put_card(&self, card: &CardRecord) -> Result<(), StoreError> {
        self.cards.insert(card.id.as_bytes(), encode(card))?;
        // After the write: a reader that saw the old generation re-reads.
        self.changed();
        Ok(())
    }

    /// Writes a certificate record; durable like [`Store::put_card`].
    /// The record and its index entry are written in one transaction: no crash leaves one
    /// without the other.
    pub fn put_cert(&self, cert: &CertRecord) -> Result<(), StoreError> {
        let value = encode(cert);
        let index = card_index_key(&cert.card, &cert.serial);
        (&self.certs, &self.certs_by_card).transaction(|(certs, by_card)| {
            // A certificate's card never changes: the index entry only ever needs adding.
            by_card.insert(index.as_slice(), &[])?;
            certs.insert(cert.serial.as_bytes(), value.as_slice())?;
            Ok::<_, sled::transaction::ConflictableTransactionError<StoreError>>(())
        })?;
        self.changed();
        Ok(())
    }

    /// Makes every write so far durable (sled keeps one log: a flush covers all trees).
    pub fn sync(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Stores a sealed secret under `name`.
    pub fn put_secret(&self, name: &str, sealed: &[u8]) -> Result<(), StoreError> {
        self.secrets.insert(name.as_bytes(), sealed)?;
        self.sync()
    }

    /// Stores a sealed secret without flushing: it becomes durable with the next journal
    /// intent or [`Store::sync`]. For secrets an open journal intent can write again after a
    /// crash (the PIN and PUK of a personalisation, whose intent holds them sealed).
    pub fn stage_secret(&self, name: &str, sealed: &[u8]) -> Result<(), StoreError> {
        self.secrets.insert(name.as_bytes(), sealed)?;
        Ok(())
    }

    /// Deletes a secret (absent is fine).
    pub fn remove_secret(&self, name: &str) -> Result<(), StoreError> {
        self.secrets.remove(name.as_bytes())?;
        self.sync()
    }

    /// A sealed secret.
    pub fn secret(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.secrets.get(name.as_bytes())?.map(|v| v.to_vec()))
    }

    /// Records an intent in the journal (flushed before returning) and returns its id.
    pub fn journal_open(
        &self,
        action_id: &str,
        step: JournalStep,
        at: time::OffsetDateTime,
    ) -> Result<JournalEntry, StoreError> {
        let entry = self.journal_note(action_id, step, at)?;
        self.sync()?;
        Ok(entry)
    }

    /// Records a step in the journal without flushing it: for effects that need no intent on
    /// disk because the inventory already says what to redo (a certificate recorded as not
    /// installed is installed by the next plan). The entry is the audit trail of the step and
    /// becomes durable with the next intent or [`Store::sync`].
    pub fn journal_note(
        &self,
        action_id: &str,
        step: JournalStep,
        at: time::OffsetDateTime,
    ) -> Result<JournalEntry, StoreError> {
        self.journal_note_with(action_id, at, |_| step)
    }

    /// Like [`Store::journal_open`], the step made from the entry's id (to bind sealed
    /// secrets to the entry they belong to: [`SealBinding::CardAndEntry`]).
    pub fn journal_open_with(
        &self,
        action_id: &str,
        at: time::OffsetDateTime,
        step: impl FnOnce(u64) -> JournalStep,
    ) -> Result<JournalEntry, StoreError> {
        let entry = self.journal_note_with(action_id, at, step)?;
        self.sync()?;
        Ok(entry)
    }

    fn journal_note_with(
        &self,
        action_id: &str,
        at: time::OffsetDateTime,
        step: impl FnOnce(u64) -> JournalStep,
    ) -> Result<JournalEntry, StoreError> {
        let id = self.db.generate_id()?;
        let entry = JournalEntry {
            id,
            action_id: action_id.to_string(),
            step: step(id),
            state: JournalState::Open,
            opened_at: at,
            closed_at: None,
            message: None,
        };
        self.journal
            .insert(id.to_be_bytes(), encode_entry(&entry))?;
        Ok(entry)
    }

    /// Closes a journal entry with its final state, dropping the secret material it held (the
    /// facts stay: what, when, which card, the outcome). Not flushed: an intent must be on disk
    /// before its effect (see [`Store::journal_open`]), but its closing may be lost in a crash
    /// like any effect whose record was not yet written, and recovery resolves the entry
    /// again from what the card and the CA hold. The next intent or [`Store::sync`] makes it
    /// durable.
    pub fn journal_close(
        &self,
        entry: &mut JournalEntry,
        state: JournalState,
        message: Option<String>,
        at: time::OffsetDateTime,
    ) -> Result<(), StoreError> {
        entry.state = state;
        entry.closed_at = Some(at);
        entry.message = message;
        if state != JournalState::Open {
            entry.step.drop_secrets();
        }
        self.journal
            .insert(entry.id.to_be_bytes(), encode_entry(entry))?;
        Ok(())
    }

    /// Closes a journal entry like [`Store::journal_close`] and writes the record its effect
    /// led to, in one transaction: no crash leaves the entry closed without the record, or the
    /// record without the closing. Refused ([`StoreError::NotOpen`]), writing neither, when
    /// the entry is not open in the store. Not flushed, like [`Store::journal_close`].
    pub fn journal_close_recording(
        &self,
        entry: &mut JournalEntry,
        state: JournalState,
        message: Option<String>,
        at: time::OffsetDateTime,
        record: Recorded<'_>,
    ) -> Result<(), StoreError> {
        use sled::transaction::{ConflictableTransactionError, abort};
        let mut closed = entry.clone();
        closed.state = state;
        closed.closed_at = Some(at);
        closed.message = message;
        if state != JournalState::Open {
            closed.step.drop_secrets();
        }
        let key = closed.id.to_be_bytes();
        let value = encode_entry(&closed);
        let (record_key, record_value, index) = match record {
            Recorded::Cert(c) => (
                c.serial.as_bytes(),
                encode(c),
                Some(card_index_key(&c.card, &c.serial)),
            ),
            Recorded::Card(c) => (c.id.as_bytes(), encode(c), None),
        };
        (&self.journal, &self.certs, &self.certs_by_card, &self.cards).transaction(
            |(journal, certs, by_card, cards)| {
                let open = match journal.get(key)? {
                    Some(v) => decode_entry(&key, &v).map(|e| e.state == JournalState::Open),
                    None => Ok(false),
                };
                match open {
                    Ok(true) => {}
                    Ok(false) => return abort(StoreError::NotOpen(closed.id)),
                    Err(e) => return abort(e),
                }
                match &index {
                    Some(index) => {
                        by_card.insert(index.as_slice(), &[])?;
                        certs.insert(record_key, record_value.as_slice())?;
                    }
                    None => {
                        cards.insert(record_key, record_value.as_slice())?;
                    }
                }
                journal.insert(&key, value.as_slice())?;
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            },
        )?;
        *entry = closed;
        self.changed();
        Ok(())
    }

    /// Journal entries still open (interrupted effects), oldest first.
    pub fn open_intents(&self) -> Result<Vec<JournalEntry>, StoreError> {
        let mut out = Vec::new();
        for item in self.journal.iter() {
            let (k, v) = item?;
            let e = decode_entry(&k, &v)?;
            if e.state == JournalState::Open {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Appends to the history; durable with the [`Store::sync`] that ends the action.
    pub fn append_history(&self, entry: &HistoryEntry) -> Result<(), StoreError> {
        let id = self.db.generate_id()?;
        self.history
            .insert(id.to_be_bytes(), encode_history(entry))?;
        Ok(())
    }

    /// The history, oldest first.
    pub fn history(&self) -> Result<Vec<HistoryEntry>, StoreError> {
        self.history
            .iter()
            .map(|item| {
                let (k, v) = item?;
                decode_history(&k, &v)
            })
            .collect()
    }
}

/// A journal entry in its stored format ([`stored`]).
fn encode_entry(entry: &JournalEntry) -> Vec<u8> {
    encode(&stored::StoredJournalEntry::from(entry))
}

fn decode_entry(key: &[u8], value: &[u8]) -> Result<JournalEntry, StoreError> {
    decode::<stored::StoredJournalEntry>("journal", key, value).map(Into::into)
}

/// A history entry in its stored format ([`stored`]).
fn encode_history(entry: &HistoryEntry) -> Vec<u8> {
    encode(&stored::StoredHistoryEntry::from(entry))
}

fn decode_history(key: &[u8], value: &[u8]) -> Result<HistoryEntry, StoreError> {
    decode::<stored::StoredHistoryEntry>("history", key, value).map(Into::into)
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain records cannot fail: no maps with non-string keys, no
    // fallible Serialize impls.
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(
    tree: &'static str,
    key: &[u8],
    value: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|source| StoreError::Decode {
        tree,
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

#[cfg(test)]
mod tests;
