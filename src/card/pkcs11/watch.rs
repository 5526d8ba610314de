//! Token presence: a thread that reports PKCS#11 tokens appearing and disappearing as
//! [`CardEvent`]s on a channel.
//!
//! Each tick asks the module for a slot event without blocking (C_WaitForSlotEvent with
//! CKF_DONT_BLOCK) where the module supports it, and compares the list of present tokens with
//! the previous one either way: modules that do not report events (SoftHSM answers
//! CKR_FUNCTION_NOT_SUPPORTED) are simply polled. A blocking C_WaitForSlotEvent is not used,
//! because only C_Finalize could interrupt it and the module context is shared by the process.
//!
//! This module does not decide what a new token is for (the planner does, in the next pass).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Module, P11Error};
use crate::card::events::CardEvent;

/// A running watcher; dropping it (or [`TokenWatcher::stop`]) ends the thread.
#[derive(Debug)]
pub struct TokenWatcher {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

/// The tokens present now, by card id, with their labels.
pub fn snapshot(module: &Module) -> Result<BTreeMap<String, String>, P11Error> {
    Ok(module
        .tokens()?
        .into_iter()
        .map(|t| (t.card_id(), t.label))
        .collect())
}

/// The events that turn `before` into `after`.
pub fn diff(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<CardEvent> {
    let mut out = Vec::new();
    for card in before.keys().filter(|c| !after.contains_key(*c)) {
        out.push(CardEvent::Removed { card: card.clone() });
    }
    for (card, label) in after.iter().filter(|(c, _)| !before.contains_key(*c)) {
        out.push(CardEvent::Inserted {
            card: card.clone(),
            label: label.clone(),
        });
    }
    out
}

impl TokenWatcher {
    /// Starts watching `module`, checking every `interval`. Tokens present at start are
    /// reported as inserted first, so a consumer needs no separate initial listing.
    pub fn start(
        module: Module,
        interval: Duration,
        events: Sender<CardEvent>,
    ) -> Result<TokenWatcher, P11Error> {
        let first = snapshot(&module)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("pkcs11-watch".into())
            .spawn(move || {
                let mut known = BTreeMap::new();
                let mut current = first;
                let mut events_supported = true;
                loop {
                    for e in diff(&known, &current) {
                        if events.send(e).is_err() {
                            return;
                        }
                    }
                    known = current;
                    if wait(&flag, interval) {
                        return;
                    }
                    if events_supported {
                        // Drain pending slot events; the listing below is the truth either way.
                        loop {
                            match module.context().get_slot_event() {
                                Ok(Some(_)) => continue,
                                Ok(None) => break,
                                Err(_) => {
                                    events_supported = false;
                                    break;
                                }
                            }
                        }
                    }
                    current = match snapshot(&module) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!("pkcs11 watcher: cannot list tokens: {e}");
                            known.clone()
                        }
                    };
                }
            })
            .map_err(|e| P11Error::BadData {
                serial: "*".into(),
                message: format!("cannot start the watcher thread: {e}"),
            })?;
        Ok(TokenWatcher {
            stop,
            handle: Some(handle),
        })
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for TokenWatcher {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Sleeps `interval` in small steps; true when asked to stop.
fn wait(stop: &AtomicBool, interval: Duration) -> bool {
    let step = Duration::from_millis(20);
    let mut left = interval;
    while !left.is_zero() {
        if stop.load(Ordering::SeqCst) {
            return true;
        }
        let d = left.min(step);
        std::thread::sleep(d);
        left -= d;
    }
    stop.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_reports_insertions_and_removals() {
        let a: BTreeMap<String, String> =
            [("p11-1".into(), "x".into()), ("p11-2".into(), "y".into())].into();
        let b: BTreeMap<String, String> =
            [("p11-2".into(), "y".into()), ("p11-3".into(), "z".into())].into();
        assert_eq!(
            diff(&a, &b),
            vec![
                CardEvent::Removed {
                    card: "p11-1".into()
                },
                CardEvent::Inserted {
                    card: "p11-3".into(),
                    label: "z".into()
                },
            ]
        );
        assert!(diff(&b, &b).is_empty());
    }
}
