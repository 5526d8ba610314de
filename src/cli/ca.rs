//! `keyfleet ca`: operator commands on certificate authorities (CA certificate, CRL).

use std::process::ExitCode;

use anyhow::{Context as _, bail};

use super::{EXIT_FAILURE, EXIT_OK, GlobalArgs};
use crate::policy::model::CertificateAuthoritySpec;
use crate::runtime;

/// Arguments of `keyfleet ca`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: CaCommand,
}

/// `keyfleet ca` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CaCommand {
    /// Print the CA certificate (PEM).
    Cert {
        /// The CertificateAuthority's name.
        name: String,
    },
    /// Sign and print a fresh CRL (PEM), or write it to a file with --out.
    Crl {
        /// The CertificateAuthority's name.
        name: String,
        /// Write the CRL to this file (atomically) instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
        /// With --out: write DER instead of PEM.
        #[arg(long)]
        der: bool,
    },
}

/// Runs `keyfleet ca`.
pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let env = match runtime::load(&global.policy_dir, global.state_dir.as_deref()) {
        Ok(env) => env,
        Err(runtime::PassError::Policy(d)) => {
            eprintln!("{d}");
            return Ok(ExitCode::from(EXIT_FAILURE));
        }
        Err(e) => return Err(e.into()),
    };
    let name = match &args.command {
        CaCommand::Cert { name } | CaCommand::Crl { name, .. } => name,
    };
    let Some(obj) = env.policy.authorities.get(name) else {
        bail!(
            "no CertificateAuthority named {name:?} in {}",
            global.policy_dir.display()
        );
    };
    let CertificateAuthoritySpec::Local(spec) = &obj.spec else {
        bail!(
            "CertificateAuthority {name:?} is not a local CA; its certificate and CRL are published by the CA itself"
        );
    };
    let master = runtime::master_key_for(&env)?;
    let ca = runtime::local_ca(
        name,
        spec,
        &env.state_dir,
        &master,
        time::OffsetDateTime::now_utc(),
    )
    .map_err(|e| anyhow::anyhow!("CA {name}: {e}"))?;
    match args.command {
        CaCommand::Cert { .. } => {
            use crate::ca::CertificateAuthority as _;
            print!("{}", ca.ca_certificate_pem()?);
        }
        CaCommand::Crl { out: None, .. } => print!("{}", ca.crl_pem()?),
        CaCommand::Crl {
            out: Some(path),
            der,
            ..
        } => {
            let bytes = if der {
                ca.crl_der()?
            } else {
                ca.crl_pem()?.into_bytes()
            };
            let tmp = path.with_extension("tmp-keyfleet");
            std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("CRL written to {}", path.display());
        }
    }
    Ok(ExitCode::from(EXIT_OK))
}
