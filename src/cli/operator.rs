//! How operator commands reach the operations: the running controller's control socket (as
//! the Unix user), the state directory itself when no controller runs (as its owner, the
//! system owner), or a remote controller's API (`--server` with an identity).

use super::GlobalArgs;
use super::remote::RemoteArgs;
use crate::client::{ApiClient, ClientError};
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
    // A local user other than the state directory's owner cannot open it: they reach the
    // controller through the operator socket, if the policy has one.
    if let Some(socket) = &env.policy.settings.spec.operators.socket
        && !owns(&env.state_dir)
    {
        return answer(
            &env.state_dir,
            control::request_at(socket, &control::Request::Operator { call: call.clone() })?,
        );
    }
    let access = control::open_for_reading(&env.state_dir)?;
    let response = match access {
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
    answer(&env.state_dir, response)
}

/// Whether this process owns `dir` (or is root).
fn owns(dir: &std::path::Path) -> bool {
    use crate::operators::identity::{is_system_owner, state_dir_owner};
    is_system_owner(rustix::process::geteuid().as_raw(), state_dir_owner(dir))
}

fn answer(
    state_dir: &std::path::Path,
    response: Response,
) -> anyhow::Result<Result<serde_json::Value, Refusal>> {
    Ok(match response {
        Response::Operator { value } => Ok(value),
        Response::Refused { code, message } => Err(Refusal { code, message }),
        Response::Error { message } => Err(Refusal {
            code: "failed".into(),
            message,
        }),
        other => return Err(control::unexpected(state_dir, &other).into()),
    })
}

/// Makes `call` remotely (with `--server`) or on this machine. `None`: the local policy set is
/// invalid (reported on stderr; exit 1).
pub fn call(
    global: &GlobalArgs,
    remote: &RemoteArgs,
    call: &OperatorCall,
) -> anyhow::Result<Option<Result<serde_json::Value, Refusal>>> {
    if let Some(client) = remote.client()? {
        return Ok(Some(call_remote(&client, call)?));
    }
    let Some(env) = super::load_env(global)? else {
        return Ok(None);
    };
    Ok(Some(call_local(&env, call)?))
}

/// A path segment, percent-encoded (ids are plain, but nothing a user types may change the
/// path: `/`, `?`, `.` and the rest are escaped).
fn segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The API call of an operator call: method, path under `/api/v1`, body.
pub fn api_call(call: &OperatorCall) -> (&'static str, String, Option<serde_json::Value>) {
    use serde_json::json;
    match call {
        OperatorCall::Whoami => ("GET", "/whoami".into(), None),
        OperatorCall::Unblock { card, reason } => (
            "POST",
            format!("/cards/{}/unblock", segment(card)),
            Some(json!({"reason": reason})),
        ),
        OperatorCall::ShowCard { card } => ("GET", format!("/cards/{}", segment(card)), None),
        OperatorCall::ListKeys { user } => (
            "GET",
            match user {
                Some(u) => format!("/keys?user={}", segment(u)),
                None => "/keys".into(),
            },
            None,
        ),
        OperatorCall::RecoverKey {
            user,
            parameters,
            reason,
        } => {
            let mut body = serde_json::to_value(parameters).unwrap_or_default();
            body["user"] = user.clone().into();
            body["reason"] = reason.clone().into();
            ("POST", "/keys/recover".into(), Some(body))
        }
        OperatorCall::ReportIncident {
            card,
            kind,
            comment,
        } => (
            "POST",
            format!("/cards/{}/incidents", segment(card)),
            Some(json!({"kind": kind, "comment": comment})),
        ),
        OperatorCall::Found { card, comment } => (
            "POST",
            format!("/cards/{}/found", segment(card)),
            Some(json!({"comment": comment})),
        ),
        OperatorCall::RetireFoundLost { card, comment } => (
            "POST",
            format!("/cards/{}/retire", segment(card)),
            Some(json!({"foundLost": true, "comment": comment})),
        ),
        OperatorCall::UnblockCode { card, reason } => (
            "POST",
            format!("/cards/{}/unblock-code", segment(card)),
            Some(json!({"reason": reason})),
        ),
        OperatorCall::ApproveHeld { reason } => (
            "POST",
            "/held-revocations/approve".into(),
            Some(json!({"reason": reason})),
        ),
        OperatorCall::ListRequests => ("GET", "/requests".into(), None),
        OperatorCall::ShowRequest { id } => ("GET", format!("/requests/{}", segment(id)), None),
        OperatorCall::CreateRequest {
            kind,
            target,
            reason,
        } => (
            "POST",
            "/requests".into(),
            Some(json!({"kind": kind, "target": target, "reason": reason})),
        ),
        OperatorCall::ApproveRequest { id, comment } => (
            "POST",
            format!("/requests/{}/approve", segment(id)),
            Some(json!({"comment": comment})),
        ),
        OperatorCall::DenyRequest { id, comment } => (
            "POST",
            format!("/requests/{}/deny", segment(id)),
            Some(json!({"comment": comment})),
        ),
    }
}

/// Makes `call` through a remote controller's API: its error answers are refusals (the same
/// codes the control socket gives); transport failures are errors.
pub fn call_remote(
    client: &ApiClient,
    call: &OperatorCall,
) -> anyhow::Result<Result<serde_json::Value, Refusal>> {
    let (method, path, body) = api_call(call);
    let answer = match body {
        Some(body) => client.post(&path, &body),
        None => client.get(&path),
    };
    match answer {
        Ok(v) => Ok(Ok(v)),
        Err(ClientError::Api { code, message, .. }) => Ok(Err(Refusal { code, message })),
        Err(e) => Err(anyhow::Error::new(e).context(format!("{method} {}", client.url(&path)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_input_cannot_change_the_path() {
        let (_, path, _) = api_call(&OperatorCall::Unblock {
            card: "../requests/REQ-1/approve?x=1".into(),
            reason: String::new(),
        });
        assert_eq!(
            path,
            "/cards/%2E%2E%2Frequests%2FREQ-1%2Fapprove%3Fx%3D1/unblock"
        );
        let (m, path, body) = api_call(&OperatorCall::ApproveRequest {
            id: "REQ-0002".into(),
            comment: Some("ok".into()),
        });
        assert_eq!((m, path.as_str()), ("POST", "/requests/REQ-0002/approve"));
        assert_eq!(body.unwrap()["comment"], "ok");
    }
}
