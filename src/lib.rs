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
//! - [`keystore`]: where Keyfleet's own keys live (state dir or a PKCS#11 token).
//! - [`ca`]: the certificate-authority trait and the embedded local CA.
//! - [`archive`]: archived encryption keys (wrapped under the archive key) and their PKCS#12
//!   recovery.
//! - [`policy`]: the desired-state objects as written in YAML; loading and validation.
//! - [`observe`]: read-only observation of directories: the snapshot value the planner reads
//!   (`observe::snapshot`), the `file` reader and the LDAP reader.
//! - [`desired`]: desired state computed from policy and directory snapshots (pure).
//! - [`inventory`]: the actual state Keyfleet records (plain values).
//! - [`plan`]: the pure planner.
//! - [`policytest`]: `PolicyTest`s run through desired state and planner with fixtures.
//! - [`store`]: sled: inventory, journal, history, sealed secrets.
//! - [`apply`]: executors that carry a plan out, with the journal and recovery.
//! - [`runtime`]: one pass wired together (used by the CLI and the controller).
//! - [`statedir`]: the state directory's lock, the control socket's protocol and client, the
//!   controller's status values (below both the CLI and the controller).
//! - [`controller`]: `keyfleet run`, the level-triggered reconciler, and its control socket.
//! - [`api`]: the operator API's HTTPS transport, error shape, rate limit, OpenAPI document.
//! - [`client`]: the operator client of a remote controller's API (TLS identity on a card).
//! - [`cli`]: the command line.
//! - [`tty`]: asking a secret on the terminal without echo.

pub mod api;
pub mod apply;
pub mod archive;
pub mod audit;
pub mod ca;
pub mod card;
pub mod cli;
pub mod client;
pub mod controller;
pub mod desired;
pub mod drift;
pub mod fsutil;
pub mod inventory;
pub mod keystore;
pub mod names;
pub mod observe;
pub mod operators;
pub mod plan;
pub mod policy;
pub mod policytest;
pub mod runtime;
pub mod saved_plan;
pub mod secrets;
pub mod selfservice;
pub mod statedir;
pub mod store;
pub mod tty;
pub mod views;
