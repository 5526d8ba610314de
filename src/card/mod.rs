//! Smart cards at the APDU level: the PIV card model and the PIV client that drives it.
//!
//! ```text
//!   PivClient<T: Transport> ──APDU bytes──► Transport ──► InProcess(VirtualCard)   (here)
//!        ▲                                            └──► PcscTransport ─► pcscd ─► reader
//!   CardSigner (rcgen::SigningKey over the client)     vpcd ◄── vcard serve (VirtualCard)
//! ```
//!
//! - [`keys`]: algorithm ids, the management key, public keys and importable key material.
//! - [`tlv`]: BER-TLV and C-/R-APDU codecs (defensive: bad bytes are errors, never panics).
//! - [`vcard`]: [`vcard::VirtualCard`], a software PIV card answering APDUs, persisted to JSON.
//! - [`transport`]: the [`transport::Transport`] trait and the in-process transport.
//! - [`piv`]: [`piv::PivClient`], generic PIV commands over any transport.
//! - [`pcsc`]: real readers through PC/SC: transport, reader states, card identity, watcher.
//! - [`vpcd`]: the virtual card served to pcscd through vsmartcard's vpcd driver.
//! - [`signer`]: [`signer::CardSigner`], so rcgen can build a CSR signed inside the card.
//! - [`pkcs11`]: PKCS#11 tokens through cryptoki (keys, certificates, AES-GCM on the token).
//! - [`events`]: [`events::CardEvent`], a card appeared or went away.
//!
//! This module knows nothing of users, policies, the inventory or the CA: callers decide what to
//! put on a card; this module only speaks to it.

pub mod events;
pub mod keys;
pub mod pcsc;
pub mod piv;
pub mod pkcs11;
pub mod signer;
pub mod tlv;
pub mod transport;
pub mod vcard;
pub mod vpcd;
