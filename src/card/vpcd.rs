//! The virtual PIV card served on a real reader: a TCP client of vsmartcard's `vpcd` driver
//! (loaded by pcscd) that answers with a [`VirtualCard`].
//!
//! Owns: the vpcd wire protocol (every message is a 2-byte big-endian length and a payload; a
//! 1-byte payload is a control code: `00` power off, `01` power on, `02` reset — no reply —,
//! `04` get ATR — the ATR is the reply; anything longer is a C-APDU answered with an R-APDU),
//! `TCP_QUICKACK` before every read (vpcd writes length and body in two sends; without it each
//! APDU waits ~40 ms for a delayed ACK), and the connect / serve / reconnect loop: connection
//! refused or closed means "card removed", a new connection "card inserted".
//!
//! It does NOT implement the card: [`VirtualCard`] answers the APDUs and writes every state
//! change to its file before the answer is sent, so killing the process at any point is a clean
//! card removal. It does not start pcscd or vpcd.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use super::vcard::{CardError, VirtualCard};

/// The vpcd port of slot 0 in Debian's default `reader.conf.d/vpcd` (0x8C7B).
pub const DEFAULT_VPCD: &str = "127.0.0.1:35963";

/// How long to wait before trying vpcd again after a refused or lost connection.
pub const RECONNECT_DELAY: Duration = Duration::from_millis(200);

/// Failures of the served card.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The card's state could not be created or opened.
    #[error(transparent)]
    Card(#[from] CardError),
    /// The state directory could not be created.
    #[error("cannot create the card's state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// How one connection to vpcd ended.
#[derive(Debug)]
pub enum Disconnect {
    /// vpcd closed the connection (pcscd stopped, or it ejected the card).
    Closed,
    /// Reading or writing failed.
    Io(io::Error),
    /// vpcd sent something the protocol does not allow (an empty message).
    Protocol(&'static str),
    /// The APDU budget of [`serve`]'s `eject_after` was used up: the card was pulled.
    Ejected,
}

/// The card file inside a `vcard serve --state DIR` directory.
pub fn card_path(state_dir: &Path) -> PathBuf {
    state_dir.join("card.json")
}

/// Opens the card of `state_dir`, creating a factory-fresh one (PIN 123456, PUK 12345678,
/// default 3DES management key, no keys) when the directory holds none.
pub fn open_card(state_dir: &Path) -> Result<VirtualCard, ServeError> {
    std::fs::create_dir_all(state_dir).map_err(|source| ServeError::StateDir {
        path: state_dir.to_path_buf(),
        source,
    })?;
    Ok(VirtualCard::open_or_create(card_path(state_dir))?)
}

fn quickack(stream: &TcpStream) {
    // Best effort: without it the card still works, only slower.
    let _ = rustix::net::sockopt::set_tcp_quickack(stream, true);
}

fn read_exact(stream: &mut TcpStream, buf: &mut [u8]) -> Result<(), Disconnect> {
    let mut filled = 0;
    while filled < buf.len() {
        quickack(stream);
        let Some(rest) = buf.get_mut(filled..) else {
            break;
        };
        match stream.read(rest) {
            Ok(0) => return Err(Disconnect::Closed),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Disconnect::Io(e)),
        }
    }
    Ok(())
}

fn send(stream: &mut TcpStream, payload: &[u8]) -> Result<(), Disconnect> {
    let len = u16::try_from(payload.len()).map_err(|_| Disconnect::Protocol("reply too long"))?;
    let mut frame = Vec::with_capacity(payload.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    stream.write_all(&frame).map_err(Disconnect::Io)
}

/// Counters of one connection, for logs and the benchmark.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ServeStats {
    /// C-APDUs answered.
    pub apdus: u64,
    /// Power-on and reset events.
    pub power_ups: u64,
}

/// Serves `card` on an established vpcd connection until it ends. Power events reset the
/// card's volatile state (PIN verified, management key authenticated, chaining buffers).
pub fn serve_connection(
    stream: &mut TcpStream,
    card: &mut VirtualCard,
    stats: &mut ServeStats,
) -> Disconnect {
    serve_until(stream, card, stats, None)
}

/// As [`serve_connection`], but the card is pulled (the connection closed) right after the
/// `eject_after`-th APDU of `stats` was answered.
fn serve_until(
    stream: &mut TcpStream,
    card: &mut VirtualCard,
    stats: &mut ServeStats,
    eject_after: Option<u64>,
) -> Disconnect {
    let _ = stream.set_nodelay(true);
    loop {
        if eject_after.is_some_and(|n| stats.apdus >= n) {
            return Disconnect::Ejected;
        }
        let mut len = [0u8; 2];
        if let Err(d) = read_exact(stream, &mut len) {
            return d;
        }
        let n = usize::from(u16::from_be_bytes(len));
        if n == 0 {
            return Disconnect::Protocol("empty message");
        }
        let mut msg = vec![0u8; n];
        if let Err(d) = read_exact(stream, &mut msg) {
            return d;
        }
        let reply = match msg.as_slice() {
            [0x00] => {
                card.power_off();
                None
            }
            [0x01] => {
                card.power_on();
                stats.power_ups += 1;
                None
            }
            [0x02] => {
                card.reset();
                stats.power_ups += 1;
                None
            }
            [0x04] => Some(card.atr().to_vec()),
            // Unknown control codes get no reply, as vpcd expects none.
            [_] => None,
            apdu => {
                stats.apdus += 1;
                Some(card.process_apdu(apdu))
            }
        };
        if let Some(reply) = reply
            && let Err(d) = send(stream, &reply)
        {
            return d;
        }
    }
}

/// Connects to vpcd at `addr` and serves the card of `state_dir` forever: a refused
/// connection is retried every [`RECONNECT_DELAY`] (pcscd may start later), a lost one too
/// (pcscd restarted; the card is "re-inserted"). `log` receives one line per connection change.
///
/// `eject_after` (fault injection for removal tests) pulls the card after that many APDUs in
/// all and returns `Ok(())`; without it this returns only when the card's state cannot be
/// opened.
pub fn serve(
    state_dir: &Path,
    addr: &str,
    eject_after: Option<u64>,
    log: &mut dyn FnMut(&str),
) -> Result<(), ServeError> {
    let mut card = open_card(state_dir)?;
    log(&format!(
        "virtual PIV card serial {} from {}",
        card.serial(),
        card_path(state_dir).display()
    ));
    let mut waiting_logged = false;
    let mut stats = ServeStats::default();
    loop {
        match TcpStream::connect(addr) {
            Ok(mut stream) => {
                waiting_logged = false;
                log(&format!("connected to vpcd at {addr}: card inserted"));
                card.power_off();
                let why = serve_until(&mut stream, &mut card, &mut stats, eject_after);
                card.power_off();
                let why = match why {
                    Disconnect::Closed => "vpcd closed the connection".to_string(),
                    Disconnect::Io(e) => format!("connection failed: {e}"),
                    Disconnect::Protocol(p) => format!("protocol error: {p}"),
                    Disconnect::Ejected => {
                        log(&format!("card pulled after {} APDUs", stats.apdus));
                        return Ok(());
                    }
                };
                log(&format!(
                    "card removed ({why}) after {} APDUs in all; reconnecting",
                    stats.apdus
                ));
            }
            Err(e) => {
                if !waiting_logged {
                    log(&format!("waiting for vpcd at {addr}: {e}"));
                    waiting_logged = true;
                }
            }
        }
        std::thread::sleep(RECONNECT_DELAY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(payload);
        f
    }

    fn read_frame(s: &mut TcpStream) -> Vec<u8> {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut body).unwrap();
        body
    }

    /// Plays vpcd: control codes get no reply except 04, APDUs are answered, state persists.
    #[test]
    fn speaks_the_vpcd_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = dir.path().to_path_buf();
        let server = std::thread::spawn(move || {
            let mut card = open_card(&state).unwrap();
            let mut stream = TcpStream::connect(addr).unwrap();
            let mut stats = ServeStats::default();
            let end = serve_connection(&mut stream, &mut card, &mut stats);
            (matches!(end, Disconnect::Closed), stats)
        });
        let (mut vpcd, _) = listener.accept().unwrap();
        vpcd.write_all(&frame(&[0x01])).unwrap();
        vpcd.write_all(&frame(&[0x04])).unwrap();
        assert_eq!(read_frame(&mut vpcd), crate::card::vcard::ATR.to_vec());
        // SELECT PIV by RID (5 bytes) and a wrong PIN: 63C2, written to disk.
        let mut select = vec![0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0, 0, 0, 0x03, 0x08, 0x00];
        vpcd.write_all(&frame(&select)).unwrap();
        assert_eq!(read_frame(&mut vpcd).last_chunk::<2>(), Some(&[0x90, 0x00]));
        let mut verify = vec![0x00, 0x20, 0x00, 0x80, 0x08];
        verify.extend_from_slice(b"000000\xFF\xFF");
        vpcd.write_all(&frame(&verify)).unwrap();
        assert_eq!(read_frame(&mut vpcd), vec![0x63, 0xC2]);
        // A reset clears nothing persistent: the counter stays at 2.
        vpcd.write_all(&frame(&[0x02])).unwrap();
        vpcd.write_all(&frame(&[0x04])).unwrap();
        assert_eq!(read_frame(&mut vpcd), crate::card::vcard::ATR.to_vec());
        select.truncate(10);
        vpcd.write_all(&frame(&select)).unwrap();
        read_frame(&mut vpcd);
        vpcd.write_all(&frame(&[0x00, 0x20, 0x00, 0x80])).unwrap();
        assert_eq!(read_frame(&mut vpcd), vec![0x63, 0xC2]);
        drop(vpcd);
        let (closed, stats) = server.join().unwrap();
        assert!(closed);
        assert_eq!(stats.apdus, 4);
        assert_eq!(stats.power_ups, 2);
        // Re-inserted (reopened from disk): the wrong PIN is still counted.
        let mut card = open_card(dir.path()).unwrap();
        card.power_on();
        card.process_apdu(&[0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0, 0, 0, 0x03, 0x08]);
        assert_eq!(
            card.process_apdu(&[0x00, 0x20, 0x00, 0x80]),
            vec![0x63, 0xC2]
        );
    }
}
