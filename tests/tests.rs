//! Keyfleet's integration tests: one binary, one module per area, shared helpers in
//! `harness`.

/// Helpers: run the built binary, build throwaway policy directories.
mod harness;
/// The ldap Directory kind against real slapd (and Samba AD).
mod ldap;
/// Policy loading and validation through `keyfleet validate` / `keyfleet schema`.
mod policy;
