//! Keyfleet's integration tests: one binary, one module per area, shared helpers in
//! `harness`.

/// The controller `keyfleet run` against the real binary.
mod controller;
/// Helpers: run the built binary, build throwaway policy directories.
mod harness;
/// Policy loading and validation through `keyfleet validate` / `keyfleet schema`.
mod policy;
