//! The workstation's side of `keyfleet self-service`: the holder's card in a local PC/SC
//! reader, the PIN typed here and verified on the card, a TLS connection to the server whose
//! handshake the card signs, and the relay loop that carries the server's commands to the
//! card. PIN changes and unblocks are done here on the card and then reported.
//!
//! ```text
//!   open(reader) ─► SELECT PIV, certificate of 9A, VERIFY the typed PIN
//!      └─► ApiClient::with_key(CardKey) ─► POST sessions ─► loop { card ⇄ server }
//! ```
//!
//! Nothing here prints or reads the terminal: the command ([`crate::cli::self_service`])
//! gives the PINs and renders what comes back. No PIN or PUK is ever sent to the server or
//! put in an error message.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;
use zeroize::Zeroizing;

use super::card_key::{CardKey, SLOT_9A, SharedCard, SharedPin, key_alg_of_certificate};
use super::protocol::{CardResponse, FactsChanged, SelfServiceView, SessionOutcome, SessionStep};
use super::relay::fill_pin;
use crate::card::keys::KeyAlg;
use crate::card::pcsc::{self, PcscTransport};
use crate::card::piv::{PivClient, PivError};
use crate::card::transport::Transport as _;
use crate::client::{ApiClient, ClientError};

/// The API paths of the self-service routes (under `/api/v1`).
pub const PATH: &str = "/self-service";

/// A self-service command failed.
#[derive(Debug, thiserror::Error)]
pub enum SelfServiceError {
    /// PC/SC cannot be used, or no reader fits.
    #[error("{0}")]
    Reader(String),
    /// The card refused a command or could not be read.
    #[error("card in {reader}: {message}")]
    Card {
        /// The reader.
        reader: String,
        /// What happened (never a PIN).
        message: String,
    },
    /// The card has no certificate in slot 9A to identify the holder with.
    #[error("the card in {0} holds no PIV authentication certificate (slot 9A)")]
    NoCertificate(String),
    /// The server could not be reached or refused.
    #[error(transparent)]
    Server(#[from] ClientError),
    /// The server answered something this client does not understand.
    #[error("the server's answer to {path} is not understood: {reason}")]
    Answer {
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
    /// A PIN change or unblock was done on the card, but the server was not told.
    #[error(
        "{done} on the card, but the server was not told ({source}); Keyfleet learns it when it \
         next tries the PIN it holds"
    )]
    NotReported {
        /// What was done.
        done: &'static str,
        /// Why the report failed.
        #[source]
        source: Box<SelfServiceError>,
    },
}

/// The holder's card, open in its reader.
pub struct Workstation {
    card: SharedCard,
    reader: String,
    certificate: Vec<u8>,
    alg: KeyAlg,
}

impl std::fmt::Debug for Workstation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workstation")
            .field("reader", &self.reader)
            .finish_non_exhaustive()
    }
}

/// Which reader: `wanted` (its exact name, or the only one whose name contains it), else the
/// only reader with a card.
pub fn choose_reader(
    readers: &[pcsc::ReaderInfo],
    wanted: Option<&str>,
) -> Result<String, SelfServiceError> {
    let names = |rs: &[&pcsc::ReaderInfo]| {
        rs.iter()
            .map(|r| format!("{:?}", r.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let candidates: Vec<&pcsc::ReaderInfo> = match wanted {
        Some(w) => match readers.iter().find(|r| r.name == w) {
            Some(exact) => vec![exact],
            None => readers.iter().filter(|r| r.name.contains(w)).collect(),
        },
        None => readers.iter().filter(|r| r.present).collect(),
    };
    match (candidates.as_slice(), wanted) {
        ([one], _) if one.present => Ok(one.name.clone()),
        ([one], _) => Err(SelfServiceError::Reader(format!(
            "reader {:?} holds no card",
            one.name
        ))),
        ([], Some(w)) => Err(SelfServiceError::Reader(format!(
            "no reader named {w:?} (readers: {})",
            names(&readers.iter().collect::<Vec<_>>())
        ))),
        ([], None) => Err(SelfServiceError::Reader(
            "no reader holds a card: insert your card, or name the reader with --reader".into(),
        )),
        (many, _) => Err(SelfServiceError::Reader(format!(
            "several readers fit ({}): name one with --reader",
            names(many)
        ))),
    }
}

/// Connects to the card for this command alone: another application's commands (a
/// controller on the same machine, say) never come between the relayed ones. While another
/// application holds the card, retries for up to 15 s.
fn connect_exclusive(
    ctx: &::pcsc::Context,
    reader: &str,
) -> Result<PcscTransport, SelfServiceError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        match PcscTransport::connect_exclusive(ctx, reader) {
            Ok(t) => return Ok(t),
            Err(pcsc::PcscError::Connect {
                source: ::pcsc::Error::SharingViolation,
                ..
            }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            Err(e) => return Err(SelfServiceError::Reader(e.to_string())),
        }
    }
}

impl Workstation {
    /// Opens the card in `reader` (see [`choose_reader`]), selects PIV and reads the
    /// certificate of slot 9A.
    pub fn open(reader: Option<&str>) -> Result<Workstation, SelfServiceError> {
        let ctx = pcsc::establish().map_err(|e| SelfServiceError::Reader(e.to_string()))?;
        let readers = pcsc::readers(&ctx).map_err(|e| SelfServiceError::Reader(e.to_string()))?;
        let reader = choose_reader(&readers, reader)?;
        let transport = connect_exclusive(&ctx, &reader)?;
        let mut piv = PivClient::new(transport);
        let card_err = |e: PivError| SelfServiceError::Card {
            reader: reader.clone(),
            message: e.to_string(),
        };
        piv.select().map_err(card_err)?;
        let certificate = piv
            .read_certificate(SLOT_9A)
            .map_err(card_err)?
            .ok_or_else(|| SelfServiceError::NoCertificate(reader.clone()))?;
        let alg =
            key_alg_of_certificate(&certificate).map_err(|message| SelfServiceError::Card {
                reader: reader.clone(),
                message,
            })?;
        Ok(Workstation {
            card: Arc::new(Mutex::new(piv)),
            reader,
            certificate,
            alg,
        })
    }

    /// The reader the card is in.
    pub fn reader(&self) -> &str {
        &self.reader
    }

    fn card_error(&self, e: impl std::fmt::Display) -> SelfServiceError {
        SelfServiceError::Card {
            reader: self.reader.clone(),
            message: e.to_string(),
        }
    }

    fn with_card<T>(
        &self,
        f: impl FnOnce(&mut PivClient<PcscTransport>) -> Result<T, PivError>,
    ) -> Result<T, SelfServiceError> {
        let mut card = self
            .card
            .lock()
            .map_err(|_| self.card_error("the card connection was poisoned"))?;
        f(&mut card).map_err(|e| self.card_error(e))
    }

    /// VERIFY the PIN on the card (a wrong one says how many tries are left).
    pub fn verify_pin(&self, pin: &str) -> Result<(), SelfServiceError> {
        self.with_card(|c| c.verify_pin(pin))
    }

    /// CHANGE REFERENCE DATA of the PIN, on the card.
    pub fn change_pin(&self, old: &str, new: &str) -> Result<(), SelfServiceError> {
        self.with_card(|c| c.change_pin(old, new))
    }

    /// RESET RETRY COUNTER with the unblock code (the PUK) and a new PIN, on the card.
    pub fn unblock(&self, code: &str, new_pin: &str) -> Result<(), SelfServiceError> {
        self.with_card(|c| c.unblock_pin(code, new_pin))
    }

    /// A client of `server` that the card authenticates (the handshake signed with 9A,
    /// unlocked with `pin`), trusting `ca_file` for the server.
    pub fn connect(
        &self,
        server: &str,
        ca_file: Option<&Path>,
        pin: &SharedPin,
    ) -> Result<Connection<'_>, SelfServiceError> {
        let key = CardKey::new(self.card.clone(), self.alg, pin.clone());
        let certified = CertifiedKey::new(
            vec![CertificateDer::from(self.certificate.clone())],
            Arc::new(key),
        );
        let api = ApiClient::with_key(server, Arc::new(certified), ca_file)?;
        Ok(Connection {
            station: self,
            api,
            pin: pin.clone(),
        })
    }
}

/// A connection to the server, authenticated by the card.
#[derive(Debug)]
pub struct Connection<'a> {
    station: &'a Workstation,
    api: ApiClient,
    pin: SharedPin,
}

fn parse<T: serde::de::DeserializeOwned>(
    path: &str,
    v: serde_json::Value,
) -> Result<T, SelfServiceError> {
    serde_json::from_value(v).map_err(|e| SelfServiceError::Answer {
        path: path.to_string(),
        reason: e.to_string(),
    })
}

impl Connection<'_> {
    /// `GET /self-service`: who the server sees and what waits.
    pub fn view(&self) -> Result<SelfServiceView, SelfServiceError> {
        parse(PATH, self.api.get(PATH)?)
    }

    /// Runs what waits for the holder on the card: starts a session and relays every
    /// command to the card until the server says how it ended.
    pub fn run_waiting(&self) -> Result<SessionOutcome, SelfServiceError> {
        let path = format!("{PATH}/sessions");
        let mut step: SessionStep = parse(&path, self.api.post(&path, &serde_json::json!({}))?)?;
        loop {
            if let Some(outcome) = step.outcome {
                return Ok(outcome);
            }
            let (Some(session), Some(exchange)) = (step.session, step.exchange) else {
                return Err(SelfServiceError::Answer {
                    path,
                    reason: "neither a command nor an outcome".into(),
                });
            };
            let response = self.relay(&exchange.apdu, exchange.pin)?;
            let next = format!("{PATH}/sessions/{session}");
            let body = serde_json::to_value(CardResponse {
                response: hex::encode_upper(response),
            })
            .unwrap_or_default();
            step = parse(&next, self.api.post(&next, &body)?)?;
        }
    }

    /// Sends one relayed command to the card. A card that cannot be reached answers
    /// nothing: the server then fails the action as with a pulled card.
    fn relay(&self, apdu_hex: &str, pin: bool) -> Result<Vec<u8>, SelfServiceError> {
        let bad = |reason: String| SelfServiceError::Answer {
            path: format!("{PATH}/sessions"),
            reason,
        };
        let header = hex::decode(apdu_hex).map_err(|e| bad(format!("the command: {e}")))?;
        let apdu = if pin {
            let typed = self
                .pin
                .lock()
                .map_err(|_| bad("the PIN was poisoned".into()))?
                .clone();
            Zeroizing::new(fill_pin(&header, &typed).map_err(bad)?)
        } else {
            Zeroizing::new(header)
        };
        let mut card = self
            .station
            .card
            .lock()
            .map_err(|_| self.station.card_error("the card connection was poisoned"))?;
        match card.transport_mut().transmit(&apdu) {
            Ok(r) => Ok(r),
            Err(e) => {
                tracing::warn!(reader = %self.station.reader, "the card did not answer: {e}");
                Ok(Vec::new())
            }
        }
    }

    /// `POST /self-service/pin-changed`.
    pub fn report_pin_changed(&self) -> Result<FactsChanged, SelfServiceError> {
        let path = format!("{PATH}/pin-changed");
        parse(&path, self.api.post(&path, &serde_json::json!({}))?)
    }

    /// `POST /self-service/unblocked`.
    pub fn report_unblocked(&self) -> Result<FactsChanged, SelfServiceError> {
        let path = format!("{PATH}/unblocked");
        parse(&path, self.api.post(&path, &serde_json::json!({}))?)
    }

    /// Replaces the PIN the card's signer uses (after a PIN change).
    pub fn set_pin(&self, pin: Zeroizing<String>) {
        if let Ok(mut p) = self.pin.lock() {
            *p = pin;
        }
    }
}

/// A PIN shared by the signer and the relay.
pub fn shared_pin(pin: Zeroizing<String>) -> SharedPin {
    Arc::new(Mutex::new(pin))
}

/// Where `--pin-source`-style options read a secret from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `file:PATH`: the file's first line.
    File(PathBuf),
    /// `env:NAME`: the variable's value.
    Env(String),
    /// Asked on the terminal without echo.
    Terminal,
}

impl SecretSource {
    /// Parses `file:PATH` or `env:NAME`.
    pub fn parse(text: &str) -> Result<SecretSource, String> {
        if let Some(p) = text.strip_prefix("file:").filter(|p| !p.is_empty()) {
            return Ok(SecretSource::File(PathBuf::from(p)));
        }
        if let Some(n) = text.strip_prefix("env:").filter(|n| !n.is_empty()) {
            return Ok(SecretSource::Env(n.to_string()));
        }
        Err(format!("{text:?}: give file:PATH or env:NAME"))
    }

    /// Reads the secret; `prompt` is shown on the terminal. The secret is never in an error.
    pub fn read(&self, prompt: &str) -> Result<Zeroizing<String>, String> {
        let first = |text: Zeroizing<String>| {
            Zeroizing::new(
                text.lines()
                    .next()
                    .unwrap_or_default()
                    .trim_end_matches('\r')
                    .to_string(),
            )
        };
        let v = match self {
            SecretSource::File(p) => first(Zeroizing::new(
                std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?,
            )),
            SecretSource::Env(n) => first(Zeroizing::new(
                std::env::var(n).map_err(|e| format!("${n}: {e}"))?,
            )),
            SecretSource::Terminal => crate::tty::ask_secret(prompt)
                .map_err(|e| format!("cannot read from the terminal: {e}"))?,
        };
        if v.is_empty() {
            return Err(format!("{}: empty", prompt.trim_end_matches([':', ' '])));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(name: &str, present: bool) -> pcsc::ReaderInfo {
        pcsc::ReaderInfo {
            name: name.into(),
            present,
            atr: Vec::new(),
        }
    }

    #[test]
    fn the_reader_is_the_named_one_or_the_only_one_with_a_card() {
        let rs = [
            reader("Test VPCD 00 00", true),
            reader("Test VPCD 00 01", false),
        ];
        assert_eq!(choose_reader(&rs, None).unwrap(), "Test VPCD 00 00");
        assert_eq!(
            choose_reader(&rs, Some("Test VPCD 00 00")).unwrap(),
            "Test VPCD 00 00"
        );
        let e = choose_reader(&rs, Some("00 01")).unwrap_err();
        assert!(e.to_string().contains("holds no card"), "{e}");
        let e = choose_reader(&rs, Some("VPCD")).unwrap_err();
        assert!(e.to_string().contains("several readers"), "{e}");
        let e = choose_reader(&rs, Some("Yubico")).unwrap_err();
        assert!(e.to_string().contains("no reader named"), "{e}");
        let both = [reader("a", true), reader("b", true)];
        assert!(choose_reader(&both, None).is_err());
        assert!(choose_reader(&[reader("a", false)], None).is_err());
    }

    #[test]
    fn secret_sources_parse_and_never_show_the_secret() {
        assert_eq!(
            SecretSource::parse("file:/x").unwrap(),
            SecretSource::File("/x".into())
        );
        assert_eq!(
            SecretSource::parse("env:PIN").unwrap(),
            SecretSource::Env("PIN".into())
        );
        assert!(SecretSource::parse("123456").is_err());
        assert!(SecretSource::parse("file:").is_err());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pin");
        std::fs::write(&f, "192837\n").unwrap();
        assert_eq!(
            SecretSource::File(f).read("PIN: ").unwrap().as_str(),
            "192837"
        );
    }
}
