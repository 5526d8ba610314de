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
//! - [`names`]: RFC 4514 distinguished names and subject alternative names.
//! - [`policy`]: the policy object model, loading and validation, JSON schemas.
//! - [`cli`]: the command line (parsing, output, exit codes).

pub mod cli;
pub mod names;
pub mod policy;
