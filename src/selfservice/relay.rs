//! The server's end of the APDU relay: a [`Transport`] whose card is in the holder's reader,
//! and the [`CardProvider`] that reaches only that card through it.
//!
//! ```text
//!   executor ─► PivClient ─► RelayTransport::transmit(C-APDU)
//!                              │ strip(): VERIFY of the PIN ─► header only, pin: true
//!                              ▼
//!                        ToClient::Apdu ──► (session handler ──► workstation)
//!                        R-APDU ◄── recv_timeout(wait) ◄── (workstation's answer)
//! ```
//!
//! No answer within the wait, or the session gone, is [`TransportError::NoCard`]: the
//! executor and the journal treat it as a pulled card.

use std::collections::BTreeSet;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::protocol::SessionOutcome;
use crate::apply::{CardAccessError, CardProvider, Session};
use crate::card::piv::PivClient;
use crate::card::transport::{Transport, TransportError};

/// What the executor thread hands to the session's HTTP side.
#[derive(Debug)]
pub enum ToClient {
    /// A command for the card (`pin`: a VERIFY whose PIN the workstation fills in; `apdu`
    /// is then its 4-byte header).
    Apdu {
        /// The C-APDU (or the VERIFY header).
        apdu: Vec<u8>,
        /// Whether the workstation appends the typed PIN.
        pin: bool,
    },
    /// The session ended.
    Done(SessionOutcome),
}

/// A new relay, the receiver of what goes to the workstation, and the sender of its answers.
pub type RelayEnds = (Arc<Relay>, mpsc::Receiver<ToClient>, mpsc::Sender<Vec<u8>>);

/// The executor's end of one relay: commands out, answers in.
pub struct Relay {
    to_client: mpsc::Sender<ToClient>,
    from_client: Mutex<mpsc::Receiver<Vec<u8>>>,
    placeholder: [u8; 8],
    wait: Duration,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay whose placeholder PIN is `placeholder` (6 to 8 ASCII digits: what the
    /// executor is given instead of the holder's PIN), waiting up to `wait` per answer.
    /// Returns the relay, the receiver of what goes to the workstation and the sender of
    /// its answers.
    pub fn new(placeholder: &str, wait: Duration) -> Result<RelayEnds, String> {
        let b = placeholder.as_bytes();
        if !(6..=8).contains(&b.len()) || !b.iter().all(u8::is_ascii_digit) {
            return Err("the placeholder PIN must be 6 to 8 digits".into());
        }
        let mut padded = [0xFF; 8];
        padded.iter_mut().zip(b).for_each(|(p, c)| *p = *c);
        let (to_client, out) = mpsc::channel();
        let (answers, from_client) = mpsc::channel();
        Ok((
            Arc::new(Relay {
                to_client,
                from_client: Mutex::new(from_client),
                placeholder: padded,
                wait,
            }),
            out,
            answers,
        ))
    }

    /// Tells the session's HTTP side the session ended.
    pub fn finish(&self, outcome: SessionOutcome) {
        // The HTTP side may be gone already (the workstation left): nothing to tell.
        let _ = self.to_client.send(ToClient::Done(outcome));
    }

    fn exchange(&self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        let (apdu, pin) = strip(apdu, &self.placeholder)?;
        self.to_client
            .send(ToClient::Apdu { apdu, pin })
            .map_err(|_| TransportError::NoCard("the workstation left the session".into()))?;
        let rx = self
            .from_client
            .lock()
            .map_err(|_| TransportError::Other("the relay was poisoned".into()))?;
        match rx.recv_timeout(self.wait) {
            Ok(r) if r.len() < 2 => Err(TransportError::ShortResponse(r.len())),
            Ok(r) => Ok(r),
            Err(RecvTimeoutError::Timeout) => Err(TransportError::NoCard(format!(
                "the workstation did not answer within {} s",
                self.wait.as_secs()
            ))),
            Err(RecvTimeoutError::Disconnected) => Err(TransportError::NoCard(
                "the workstation left the session".into(),
            )),
        }
    }
}

/// What goes to the workstation for `apdu`: a VERIFY of the PIN (INS 20, P2 80) carrying the
/// placeholder loses its data and is marked `pin`; a VERIFY without data (the tries query) or
/// with P1 FF (logout) passes unchanged. Any other command carrying the placeholder, and a
/// VERIFY of the PIN with other data, is refused: only the holder's own PIN reaches the card.
pub fn strip(apdu: &[u8], placeholder: &[u8; 8]) -> Result<(Vec<u8>, bool), TransportError> {
    let refused = || {
        TransportError::Other(
            "refused to relay a command with PIN data the workstation does not fill in".into(),
        )
    };
    if apdu.len() > 4 && apdu[1] == 0x20 && apdu[2] == 0x00 && apdu[3] == 0x80 {
        if apdu.len() == 13 && apdu[4] == 8 && apdu[5..13] == placeholder[..] {
            return Ok((apdu[..4].to_vec(), true));
        }
        return Err(refused());
    }
    if apdu.windows(placeholder.len()).any(|w| w == placeholder) {
        return Err(refused());
    }
    Ok((apdu.to_vec(), false))
}

/// The VERIFY the workstation sends for a `pin` exchange: the header, Lc 08 and the PIN
/// padded with FF. A PIN that is not 6 to 8 bytes (or holds FF) is refused.
pub fn fill_pin(header: &[u8], pin: &str) -> Result<Vec<u8>, String> {
    if header.len() != 4 || header[1] != 0x20 || header[3] != 0x80 {
        return Err("the server asked to fill a PIN into a command that is not VERIFY".into());
    }
    let b = pin.as_bytes();
    if !(6..=8).contains(&b.len()) || b.contains(&0xFF) {
        return Err("the PIN must be 6 to 8 characters".into());
    }
    let mut out = header.to_vec();
    out.push(8);
    let mut padded = [0xFF; 8];
    padded.iter_mut().zip(b).for_each(|(p, c)| *p = *c);
    out.extend_from_slice(&padded);
    Ok(out)
}

/// A transport to the card in the holder's reader.
#[derive(Debug, Clone)]
pub struct RelayTransport(Arc<Relay>);

impl Transport for RelayTransport {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        self.0.exchange(apdu)
    }
}

/// The cards a relay session reaches: exactly one, the holder's.
#[derive(Debug)]
pub struct RelayCards {
    card: String,
    relay: Arc<Relay>,
}

impl RelayCards {
    /// The provider of `card` through `relay`.
    pub fn new(card: &str, relay: Arc<Relay>) -> Self {
        RelayCards {
            card: card.to_string(),
            relay,
        }
    }
}

impl CardProvider for RelayCards {
    fn present(&self) -> Result<BTreeSet<String>, CardAccessError> {
        Ok([self.card.clone()].into())
    }

    fn connect(&self, card: &str) -> Result<Session, CardAccessError> {
        if card != self.card {
            return Err(CardAccessError::NotPresent(card.to_string()));
        }
        Ok(PivClient::new(
            Box::new(RelayTransport(self.relay.clone())) as Box<dyn Transport>
        ))
    }

    fn create_virtual(&self) -> Result<String, CardAccessError> {
        Err(CardAccessError::CannotCreate(
            "a self-service session reaches only the holder's card".into(),
        ))
    }

    fn exists(&self, card: &str) -> bool {
        card == self.card
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PH: &[u8; 8] = b"73910462";

    #[test]
    fn a_verify_of_the_placeholder_loses_its_data_and_asks_for_the_pin() {
        let mut verify = vec![0x00, 0x20, 0x00, 0x80, 0x08];
        verify.extend_from_slice(PH);
        assert_eq!(
            strip(&verify, PH).unwrap(),
            (vec![0x00, 0x20, 0x00, 0x80], true)
        );
        // The tries query and the logout pass unchanged.
        assert_eq!(
            strip(&[0x00, 0x20, 0x00, 0x80], PH).unwrap(),
            (vec![0x00, 0x20, 0x00, 0x80], false)
        );
        assert!(!strip(&[0x00, 0x20, 0xFF, 0x80], PH).unwrap().1);
        // A VERIFY with any other PIN, or the placeholder anywhere else, never leaves.
        let mut other = vec![0x00, 0x20, 0x00, 0x80, 0x08];
        other.extend_from_slice(b"123456\xFF\xFF");
        assert!(strip(&other, PH).is_err());
        let mut change = vec![0x00, 0x24, 0x00, 0x80, 0x10];
        change.extend_from_slice(PH);
        change.extend_from_slice(b"654321\xFF\xFF");
        assert!(strip(&change, PH).is_err());
        // Anything else passes as it is.
        let select = hex::decode("00A4040005A000000308").unwrap();
        assert_eq!(strip(&select, PH).unwrap(), (select.clone(), false));
    }

    #[test]
    fn the_workstation_fills_in_the_typed_pin() {
        let filled = fill_pin(&[0x00, 0x20, 0x00, 0x80], "192837").unwrap();
        assert_eq!(hex::encode_upper(&filled), "0020008008313932383337FFFF");
        assert!(fill_pin(&[0x00, 0x24, 0x00, 0x80], "192837").is_err());
        assert!(fill_pin(&[0x00, 0x20, 0x00, 0x80], "12").is_err());
    }

    #[test]
    fn an_answer_that_never_comes_is_a_pulled_card() {
        let (relay, out, answers) = Relay::new("73910462", Duration::from_millis(50)).unwrap();
        let mut t = RelayTransport(relay.clone());
        let worker = std::thread::spawn(move || {
            let Ok(ToClient::Apdu { apdu, pin }) = out.recv() else {
                panic!("an APDU");
            };
            assert_eq!(
                (apdu.as_slice(), pin),
                (&[0x00, 0xA4, 0x04, 0x00][..], false)
            );
            answers.send(vec![0x90, 0x00]).unwrap();
            // The second command gets no answer.
            let _ = out.recv();
            std::thread::sleep(Duration::from_millis(200));
            drop(answers);
        });
        assert_eq!(
            t.transmit(&[0x00, 0xA4, 0x04, 0x00]).unwrap(),
            vec![0x90, 0x00]
        );
        let e = t.transmit(&[0x00, 0xCB, 0x3F, 0xFF]).unwrap_err();
        assert!(matches!(e, TransportError::NoCard(_)), "{e}");
        worker.join().unwrap();
        let cards = RelayCards::new("piv-1", relay);
        assert!(cards.connect("piv-2").is_err());
        assert_eq!(cards.present().unwrap(), ["piv-1".to_string()].into());
    }
}
