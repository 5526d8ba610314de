//! The options that make an operator command talk to a remote controller's operator API
//! instead of the local state directory: `--server URL` and an identity (`--identity
//! 'pkcs11:...'` for the operator's card, or `--identity-cert FILE --identity-key FILE`), with
//! `--server-ca FILE` to trust the server. Flatten [`RemoteArgs`] into a command's arguments
//! and call [`RemoteArgs::client`]: `None` means "work locally".

use std::path::PathBuf;

use anyhow::Context as _;

use crate::client::{ApiClient, Identity};

/// Remote operation: which server, as whom, trusting what.
#[derive(Debug, Clone, Default, clap::Args)]
#[group(id = "remote")]
pub struct RemoteArgs {
    /// Work through the operator API of the controller at URL (https://host:port) instead of
    /// the local state directory.
    #[arg(
        long,
        value_name = "URL",
        env = "KEYFLEET_SERVER",
        requires = "remote_identity"
    )]
    pub server: Option<String>,
    /// The operator's key on a PKCS#11 token (RFC 7512 URI with module-path), e.g.
    /// 'pkcs11:id=%01?module-path=/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so'; the PIN comes
    /// from pin-source=file:PATH or pin-value, or is asked on the terminal.
    #[arg(
        long,
        value_name = "URI",
        env = "KEYFLEET_IDENTITY",
        group = "remote_identity",
        requires = "server",
        conflicts_with_all = ["identity_cert", "identity_key"]
    )]
    pub identity: Option<String>,
    /// The operator's certificate (PEM, leaf first) for automation; needs --identity-key.
    #[arg(
        long,
        value_name = "FILE",
        group = "remote_identity",
        requires_all = ["identity_key", "server"]
    )]
    pub identity_cert: Option<PathBuf>,
    /// The private key (PEM) of --identity-cert.
    #[arg(long, value_name = "FILE", requires = "identity_cert")]
    pub identity_key: Option<PathBuf>,
    /// The CA certificates (PEM) to trust for the server (default: the file $SSL_CERT_FILE
    /// names).
    #[arg(long, value_name = "FILE", env = "KEYFLEET_SERVER_CA")]
    pub server_ca: Option<PathBuf>,
}

impl RemoteArgs {
    /// The identity the options give (None without one).
    pub fn identity(&self) -> anyhow::Result<Option<Identity>> {
        match (&self.identity, &self.identity_cert, &self.identity_key) {
            (Some(uri), None, None) => Ok(Some(Identity::parse_uri(uri)?)),
            (None, Some(cert), Some(key)) => Ok(Some(Identity::Files {
                cert: cert.clone(),
                key: key.clone(),
            })),
            (None, None, None) => Ok(None),
            _ => anyhow::bail!(
                "give either --identity URI or both --identity-cert FILE and --identity-key FILE"
            ),
        }
    }

    /// The API client for `--server` (None without `--server`: the command works locally).
    /// A token identity logs in here (asking for the PIN when the URI gives none).
    pub fn client(&self) -> anyhow::Result<Option<ApiClient>> {
        let Some(server) = &self.server else {
            return Ok(None);
        };
        let identity = self.identity()?.with_context(|| {
            format!(
                "--server {server} needs --identity URI or --identity-cert FILE with --identity-key FILE"
            )
        })?;
        let client = ApiClient::new(server, &identity, self.server_ca.as_deref())?;
        Ok(Some(client))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        remote: RemoteArgs,
    }

    fn parse(args: &[&str]) -> Result<RemoteArgs, clap::error::ErrorKind> {
        let mut all = vec!["cmd"];
        all.extend_from_slice(args);
        Cmd::try_parse_from(all)
            .map(|c| c.remote)
            .map_err(|e| e.kind())
    }

    #[test]
    fn usage_errors_for_half_or_mixed_identities() {
        use clap::error::ErrorKind as K;
        let uri = "pkcs11:id=%01?module-path=/m.so";
        let local = parse(&[]).unwrap();
        assert!(local.client().unwrap().is_none());
        let ok = parse(&["--server", "https://h", "--identity", uri]).unwrap();
        assert!(matches!(ok.identity().unwrap(), Some(Identity::Pkcs11(_))));
        let ok = parse(&[
            "--server",
            "https://h",
            "--identity-cert",
            "c",
            "--identity-key",
            "k",
        ])
        .unwrap();
        assert!(matches!(
            ok.identity().unwrap(),
            Some(Identity::Files { .. })
        ));
        assert_eq!(
            parse(&[
                "--server",
                "https://h",
                "--identity",
                uri,
                "--identity-cert",
                "c",
                "--identity-key",
                "k"
            ])
            .unwrap_err(),
            K::ArgumentConflict
        );
        assert_eq!(
            parse(&["--server", "https://h", "--identity-cert", "c"]).unwrap_err(),
            K::MissingRequiredArgument
        );
        assert_eq!(
            parse(&["--server", "https://h", "--identity-key", "k"]).unwrap_err(),
            K::MissingRequiredArgument
        );
        assert_eq!(
            parse(&["--identity", uri]).unwrap_err(),
            K::MissingRequiredArgument
        );
        assert_eq!(
            parse(&["--server", "https://h"]).unwrap_err(),
            K::MissingRequiredArgument
        );
    }
}
