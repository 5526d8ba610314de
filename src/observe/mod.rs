//! Observation: read-only adapters that report what the outside world holds.
//!
//! Nothing in here writes, enrols or revokes.

pub mod directory;
pub mod ldap;
pub mod snapshot;
pub mod users;
