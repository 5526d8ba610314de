//! `keyfleet whoami --server URL ...`: who the remote controller's operator API takes the
//! caller for (`GET /api/v1/whoami`): the operator, their roles and permissions.
//!
//! Exit codes: 0 answered, 1 an API or transport error (the message has the error code),
//! 2 usage.

use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::Value;

use super::remote::RemoteArgs;
use super::{EXIT_OK, GlobalArgs};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Text for people.
    Text,
    /// The server's JSON object as it is.
    Json,
}

/// Arguments of `keyfleet whoami`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    mut_arg("server", |a| a.required(true)),
    long_about = "Ask a controller's operator API who you are to it: the operator your TLS \
client certificate identifies, your roles and your permissions. The identity is a key on your \
operator card (--identity 'pkcs11:...'; the card signs the TLS handshake) or a certificate and \
key in files (--identity-cert, --identity-key).\n\nExit codes: 0 answered, 1 API or \
connection error, 2 usage error."
)]
pub struct Args {
    /// The server and the identity.
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

fn list(v: &Value) -> String {
    let items: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(", ")
    }
}

/// The text form of a whoami answer.
pub fn render_text(v: &Value) -> String {
    let operator = v
        .get("operator")
        .map(|o| o.as_str().map_or_else(|| o.to_string(), str::to_string))
        .unwrap_or_else(|| "(unknown)".into());
    format!(
        "operator:    {operator}\nroles:       {}\npermissions: {}\n",
        list(&v["roles"]),
        list(&v["permissions"])
    )
}

/// Runs `keyfleet whoami`.
pub fn run(_global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let client = args.remote.client()?.context("whoami needs --server URL")?;
    let answer = client
        .get("/whoami")
        .with_context(|| format!("GET {}", client.url("/whoami")))?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
        Format::Text => print!("{}", render_text(&answer)),
    }
    Ok(ExitCode::from(EXIT_OK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lists_operator_roles_and_permissions() {
        let v = serde_json::json!({
            "operator": "alice",
            "roles": ["helpdesk", "pki-admin"],
            "permissions": ["unblock", "view-inventory"]
        });
        assert_eq!(
            render_text(&v),
            "operator:    alice\nroles:       helpdesk, pki-admin\npermissions: unblock, view-inventory\n"
        );
        let v = serde_json::json!({"operator": "bob", "roles": [], "permissions": []});
        assert!(render_text(&v).contains("roles:       (none)"));
    }
}
