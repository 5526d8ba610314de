//! How operator commands reach the operations: the running controller's control socket (as
//! the Unix user), the state directory itself when no controller runs (as its owner, the
//! system owner), or a remote controller's API (`--server` with an identity).

use crate::statedir::control::{self, Access, OperatorCall, Response};

/// A refused or failed operator call: the API's error code and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `unauthorized`, `forbidden`, `not-found`, `conflict`, `invalid`, `failed`, ...
    pub code: String,
    /// Why.
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

/// Makes `call` on this machine: through the controller when one runs, else directly.
pub fn call_local(
    env: &crate::runtime::Environment,
    call: &OperatorCall,
) -> anyhow::Result<Result<serde_json::Value, Refusal>> {
    let response = match control::open_for_reading(&env.state_dir)? {
        Some(Access::Controller) => control::request(
            &env.state_dir,
            &control::Request::Operator { call: call.clone() },
        )?,
        Some(Access::Local(store)) => {
            drop(store);
            crate::controller::operator_offline(env, call)?
        }
        None => crate::controller::operator_offline(env, call)?,
    };
    Ok(match response {
        Response::Operator { value } => Ok(value),
        Response::Refused { code, message } => Err(Refusal { code, message }),
        Response::Error { message } => Err(Refusal {
            code: "failed".into(),
            message,
        }),
        other => return Err(control::unexpected(&env.state_dir, &other).into()),
    })
}
