//! The operator side: who an operator is ([`identity`]), what they may do ([`roles`]),
//! operations under approval ([`requests`]), and the one module every operator call goes
//! through ([`service`]): the control socket, the API and the CLI authorise, audit and run
//! operations there, with the same executors `apply` uses. What a template scope lets an
//! operator see is [`scoped`]; the console's figures ([`dashboard`]) and search ([`search`])
//! are pure functions over the values the controller holds.

pub mod calls;
pub mod dashboard;
pub mod decisions;
pub mod identity;
pub mod incidents;
pub mod keys;
pub mod requests;
pub mod roles;
pub mod scoped;
pub mod search;
pub mod service;

#[cfg(test)]
mod service_tests;
#[cfg(test)]
mod tests;
