//! The state directory as every process shares it: the one-writer lock ([`lock`]), the
//! control socket's protocol and its blocking client ([`control`]), and the values the
//! controller reports through it ([`status`]).
//!
//! It sits below both the CLI and the controller (and `runtime`, whose read-only pass reads
//! the inventory through it): none of them is imported from here. It plans, applies and
//! serves nothing; the controller's side of the socket lives in `crate::controller`.

pub mod control;
pub mod lock;
pub mod status;
