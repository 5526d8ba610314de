//! Event sources of the controller beyond the file watch: LDAP directory pollers, the PC/SC
//! card watcher and PKCS#11 token watchers. Each fires into the shared [`Triggers`] set and
//! keeps a one-line state for `keyfleet status`.
//!
//! - LDAP: one tokio task per `ldap` Directory, polling [`LdapDirectory::change_token`] every
//!   `pollInterval` (default [`DEFAULT_POLL`]); only a token different from the last one fires
//!   [`Trigger::DirectoryChanged`]. An unreachable server is logged and retried at the next
//!   interval.
//! - PC/SC: one thread running [`CardWatcher`] when the policy or the inventory uses PIV cards;
//!   every insertion, removal or reader attachment fires [`Trigger::Cards`]`("pcsc")`. Without
//!   pcscd it logs, shows the reason in status and retries with exponential backoff (1 s to
//!   [`MAX_RETRY`]); it never stops the controller.
//! - PKCS#11: one [`TokenWatcher`] per module of the policy's `pkcs11` stocks, firing
//!   [`Trigger::Cards`]`("pkcs11")`.
//!
//! [`Sources::update`] (called after every pass) starts, keeps or stops each source so that
//! they follow the policy in force. This module decides nothing about what a pass does.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;

use super::triggers::{Trigger, Triggers};
use crate::apply::Cards;
use crate::card::pcsc::{self, CardWatcher};
use crate::card::pkcs11::Module;
use crate::card::pkcs11::watch::TokenWatcher;
use crate::inventory::Inventory;
use crate::observe::ldap::{LdapDirectory, ObserveRequest};
use crate::policy::PolicySet;
use crate::policy::model::{DirectorySpec, LdapDirectorySpec, StockSelector};
use crate::views::rfc3339;

/// Poll interval of an LDAP directory without `pollInterval`.
pub const DEFAULT_POLL: Duration = Duration::from_secs(300);
/// Longest pause between two attempts to reach pcscd.
pub const MAX_RETRY: Duration = Duration::from_secs(60);
/// How often a token watcher lists the tokens of its module.
pub const TOKEN_INTERVAL: Duration = Duration::from_millis(500);
/// Longest single `SCardGetStatusChange` wait (bounds how long stopping the thread takes).
const PCSC_WAIT: Duration = Duration::from_millis(500);

/// The live state of each source, by source name (`pcsc`, `pkcs11:<module>`,
/// `ldap:<directory>`), for `keyfleet status`.
pub type SourceStates = Arc<Mutex<BTreeMap<String, String>>>;

fn set_state(states: &SourceStates, key: &str, value: String) {
    if let Ok(mut s) = states.lock() {
        s.insert(key.to_string(), value);
    }
}

/// The running sources.
pub struct Sources {
    triggers: Triggers,
    states: SourceStates,
    ldap: BTreeMap<String, (LdapDirectorySpec, tokio::task::JoinHandle<()>)>,
    pcsc: Option<PcscThread>,
    tokens: BTreeMap<PathBuf, Option<TokenWatcher>>,
    /// Pollers started before the first pass report their first token here.
    baselines: Vec<tokio::sync::oneshot::Receiver<()>>,
    /// Whether [`Sources::update`] ran before (pollers started later fire on their baseline).
    started: bool,
}

impl Sources {
    /// No source running yet.
    pub fn new(triggers: Triggers) -> Self {
        Sources {
            triggers,
            states: Arc::default(),
            ldap: BTreeMap::new(),
            pcsc: None,
            tokens: BTreeMap::new(),
            baselines: Vec::new(),
            started: false,
        }
    }

    /// The live states (shared; read by `keyfleet status`).
    pub fn states(&self) -> SourceStates {
        self.states.clone()
    }

    /// Starts what `policy` (and `inventory`) need and stops the rest. Must run inside the
    /// tokio runtime (LDAP pollers are tasks).
    pub fn update(&mut self, policy: &PolicySet, inventory: &Inventory) {
        self.update_ldap(policy);
        self.update_pcsc(Cards::uses_piv(policy, inventory));
        self.update_tokens(policy);
        self.started = true;
    }

    /// Waits (at most `limit`) until the LDAP pollers started by the first update hold their
    /// first change token, so that a change made while the first pass observes is not taken
    /// as the baseline and missed.
    pub async fn settle(&mut self, limit: Duration) {
        let all = futures_join(std::mem::take(&mut self.baselines));
        let _ = tokio::time::timeout(limit, all).await;
    }

    fn update_ldap(&mut self, policy: &PolicySet) {
        let wanted: BTreeMap<String, LdapDirectorySpec> = policy
            .directories
            .iter()
            .filter_map(|(name, d)| match &d.spec {
                DirectorySpec::Ldap(l) => Some((name.clone(), l.clone())),
                DirectorySpec::File(_) => None,
            })
            .collect();
        let states = self.states.clone();
        self.ldap.retain(|name, (spec, task)| {
            let keep = wanted.get(name) == Some(spec);
            if !keep {
                task.abort();
                if let Ok(mut s) = states.lock() {
                    s.remove(&format!("ldap:{name}"));
                }
            }
            keep
        });
        for (name, spec) in wanted {
            if self.ldap.contains_key(&name) {
                continue;
            }
            let Some(dir) = policy
                .directories
                .get(&name)
                .and_then(LdapDirectory::from_policy)
            else {
                continue;
            };
            let every = spec
                .poll_interval
                .map(|d| Duration::from_secs(d.as_secs().max(1)))
                .unwrap_or(DEFAULT_POLL);
            let req = ObserveRequest::for_directory(policy, &name);
            let (tx, rx) = tokio::sync::oneshot::channel();
            if !self.started {
                self.baselines.push(rx);
            }
            let task = tokio::spawn(poll_ldap(
                Poller {
                    name: name.clone(),
                    dir,
                    req,
                    every,
                    // A poller started after a reload cannot know what the last pass read:
                    // its first token triggers one pass that re-reads the directory.
                    fire_on_baseline: self.started,
                    baseline: Some(tx),
                },
                self.triggers.clone(),
                self.states.clone(),
            ));
            self.ldap.insert(name, (spec, task));
        }
    }

    fn update_pcsc(&mut self, wanted: bool) {
        match (wanted, self.pcsc.is_some()) {
            (true, false) => match PcscThread::start(self.triggers.clone(), self.states.clone()) {
                Ok(t) => self.pcsc = Some(t),
                Err(e) => {
                    tracing::error!("cannot start the PC/SC watcher thread: {e}");
                    set_state(&self.states, "pcsc", format!("not watching: {e}"));
                }
            },
            (false, true) => {
                self.pcsc = None;
                if let Ok(mut s) = self.states.lock() {
                    s.remove("pcsc");
                }
            }
            _ => {}
        }
    }

    fn update_tokens(&mut self, policy: &PolicySet) {
        let wanted: std::collections::BTreeSet<PathBuf> = policy
            .stocks
            .values()
            .filter_map(|s| match &s.spec.selector {
                StockSelector::Pkcs11(p) => Some(s.resolve_path(&p.module)),
                _ => None,
            })
            .collect();
        let states = self.states.clone();
        self.tokens.retain(|module, _| {
            let keep = wanted.contains(module);
            if !keep && let Ok(mut s) = states.lock() {
                s.remove(&format!("pkcs11:{}", module.display()));
            }
            keep
        });
        for module in wanted {
            // A module that failed to load is tried again at the next update (next pass).
            if self.tokens.get(&module).is_some_and(Option::is_some) {
                continue;
            }
            let key = format!("pkcs11:{}", module.display());
            let watcher = Module::open(&module).and_then(|m| {
                let (tx, rx) = std::sync::mpsc::channel();
                let w = TokenWatcher::start(m, TOKEN_INTERVAL, tx)?;
                forward_token_events(rx, self.triggers.clone());
                Ok(w)
            });
            match watcher {
                Ok(w) => {
                    set_state(&self.states, &key, "watching tokens".into());
                    self.tokens.insert(module, Some(w));
                }
                Err(e) => {
                    tracing::warn!(module = %module.display(), "cannot watch tokens: {e}");
                    set_state(
                        &self.states,
                        &key,
                        format!("not watching (retried after the next pass): {e}"),
                    );
                    self.tokens.insert(module, None);
                }
            }
        }
    }
}

impl Drop for Sources {
    fn drop(&mut self) {
        for (_, (_, task)) in std::mem::take(&mut self.ldap) {
            task.abort();
        }
    }
}

/// Turns token events into triggers until the watcher (the sender) goes away.
fn forward_token_events(
    rx: std::sync::mpsc::Receiver<crate::card::events::CardEvent>,
    triggers: Triggers,
) {
    let spawned = std::thread::Builder::new()
        .name("pkcs11-events".into())
        .spawn(move || {
            while let Ok(e) = rx.recv() {
                tracing::info!(card = e.card(), event = ?e, "token event");
                triggers.fire(Trigger::Cards("pkcs11".into()));
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the token event thread: {e}");
    }
}

/// Waits for every receiver (a sender dropped counts as done).
async fn futures_join(rx: Vec<tokio::sync::oneshot::Receiver<()>>) {
    for r in rx {
        let _ = r.await;
    }
}

/// One LDAP poller's settings.
struct Poller {
    name: String,
    dir: LdapDirectory,
    req: ObserveRequest,
    every: Duration,
    fire_on_baseline: bool,
    baseline: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Polls one LDAP directory's change token forever.
async fn poll_ldap(mut p: Poller, triggers: Triggers, states: SourceStates) {
    let (name, dir, req, every) = (&p.name, &p.dir, &p.req, p.every);
    let key = format!("ldap:{name}");
    let every_text = crate::policy::duration::Duration::from_secs(every.as_secs());
    let mut last: Option<String> = None;
    loop {
        let result = dir.change_token(req).await;
        if let Some(tx) = p.baseline.take() {
            let _ = tx.send(());
        }
        match result {
            Ok(token) => {
                let changed = match &last {
                    Some(l) => *l != token,
                    None => p.fire_on_baseline,
                };
                if changed {
                    tracing::info!(directory = %name, "directory changed (change token moved)");
                    triggers.fire(Trigger::DirectoryChanged(name.clone()));
                }
                last = Some(token);
                set_state(
                    &states,
                    &key,
                    format!(
                        "polled every {every_text}; last check {}",
                        rfc3339(OffsetDateTime::now_utc())
                    ),
                );
            }
            Err(e) => {
                tracing::warn!(directory = %name, "change check failed: {e}; retrying in {every_text}");
                set_state(
                    &states,
                    &key,
                    format!("change check failed: {e}; retrying every {every_text}"),
                );
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// The PC/SC watcher thread; dropping it stops the thread.
struct PcscThread {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl PcscThread {
    fn start(triggers: Triggers, states: SourceStates) -> std::io::Result<PcscThread> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("pcsc-watch".into())
            .spawn(move || watch_pcsc(&flag, &triggers, &states))?;
        Ok(PcscThread {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for PcscThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Sleeps `d` in small steps; true when asked to stop.
fn pause(stop: &AtomicBool, d: Duration) -> bool {
    let step = Duration::from_millis(50);
    let mut left = d;
    while !left.is_zero() && !stop.load(Ordering::SeqCst) {
        let s = left.min(step);
        std::thread::sleep(s);
        left -= s;
    }
    stop.load(Ordering::SeqCst)
}

/// Next pause of the retry backoff: doubles from 1 s up to [`MAX_RETRY`].
pub fn next_retry(previous: Duration) -> Duration {
    if previous.is_zero() {
        Duration::from_secs(1)
    } else {
        (previous * 2).min(MAX_RETRY)
    }
}

fn watch_pcsc(stop: &AtomicBool, triggers: &Triggers, states: &SourceStates) {
    let mut retry = Duration::ZERO;
    let mut unavailable_logged = false;
    while !stop.load(Ordering::SeqCst) {
        let error = match pcsc::establish() {
            Ok(ctx) => {
                if unavailable_logged {
                    tracing::info!("PC/SC is available again");
                    unavailable_logged = false;
                }
                retry = Duration::ZERO;
                let mut watcher = CardWatcher::new(ctx);
                // Cards already present fire too: one pass checks whether they are awaited.
                loop {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    match watcher.wait(PCSC_WAIT) {
                        Ok(events) => {
                            if !events.is_empty() {
                                tracing::info!(?events, "card events");
                                triggers.fire(Trigger::Cards("pcsc".into()));
                            }
                            set_state(
                                states,
                                "pcsc",
                                format!(
                                    "watching readers; cards present in: {}",
                                    match watcher.present_readers() {
                                        r if r.is_empty() => "none".to_string(),
                                        r => r.join(", "),
                                    }
                                ),
                            );
                        }
                        Err(e) => break e,
                    }
                }
            }
            Err(e) => e,
        };
        retry = next_retry(retry);
        let at = OffsetDateTime::now_utc()
            + time::Duration::try_from(retry).unwrap_or(time::Duration::ZERO);
        if !unavailable_logged {
            tracing::warn!("PC/SC unavailable: {error}; retrying with backoff");
            unavailable_logged = true;
            // A lost service may have lost cards with it: let one pass look again.
            triggers.fire(Trigger::Cards("pcsc".into()));
        }
        set_state(
            states,
            "pcsc",
            format!("unavailable: {error}; retrying at {}", rfc3339(at)),
        );
        if pause(stop, retry) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_backoff_doubles_up_to_the_cap() {
        let mut d = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..9 {
            d = next_retry(d);
            seen.push(d.as_secs());
        }
        assert_eq!(seen, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
