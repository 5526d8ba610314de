//! Keyfleet's integration tests: one binary, one module per area, shared helpers in
//! `harness`.

/// The Entrust CA Gateway connector against the emulator.
mod cagw;
/// The cfssl connector against a real `cfssl serve`.
mod cfssl;
/// Helpers: run the built binary, build throwaway policy directories.
mod harness;
/// Policy loading and validation through `keyfleet validate` / `keyfleet schema`.
mod policy;
