//! The holder's workstation (`keyfleet self-service`) and its server side: what waits for a
//! holder on their card runs on the server's executors while the card stays in the holder's
//! reader, reached through an APDU relay.
//!
//! ```text
//!   workstation (client)                         server (operator API, the controller)
//!   PC/SC card ─┬─ card_key: 9A signs the TLS ──► holder identified by the certificate
//!               │  handshake (PIN typed here)
//!               └─ relay loop ◄── C-APDU ───────  sessions: executor thread (apply::apply,
//!                  (fills the PIN into VERIFY)    journal, history, audit) over relay::
//!                             ─── R-APDU ──────►  RelayCards → RelayTransport
//! ```
//!
//! The PIN never leaves the workstation: the executor runs with a per-session placeholder
//! PIN that only [`relay`] sees; it strips the data of every VERIFY of the PIN and asks the
//! workstation to fill in the PIN the holder typed. Any other command carrying the
//! placeholder is refused before it leaves the server.
//!
//! Changing the PIN and unblocking with a released unblock code are done on the workstation
//! alone; the workstation reports them so that Keyfleet's facts about the card follow.

pub mod card_key;
pub mod client;
pub mod protocol;
pub mod relay;
pub mod sessions;
