//! Keyfleet: a declarative, policy-driven controller for smart-card and PKI credentials.
//!
//! ```text
//!   policies/*.yaml ──load+validate──► Desired   (templates × entitlements from the directory)
//!   directory ────────observe───────►
//!   cards, CA, inventory ──observe──► Actual
//!                                     plan = diff(Desired, Actual)      ← pure, no I/O
//!                                     apply(plan) → executors (card, CA, store) with a journal
//! ```
//!
//! Module map:
//! - [`card`]: PIV card model (virtual card), APDU codecs, the PIV client and the card signer.
//! - [`names`]: RFC 4514 distinguished names and subject alternative names.
//! - [`secrets`]: the master key, sealing secrets at rest, key diversification, PINs/PUKs.
//! - [`ca`]: the certificate-authority trait and the embedded local CA.
//! - [`policy`]: the policy object model, loading and validation, JSON schemas.
//! - [`cli`]: the command line (parsing, output, exit codes).

pub mod ca;
pub mod card;
pub mod cli;
pub mod names;
pub mod policy;
pub mod secrets;
