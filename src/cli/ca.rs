//! `keyfleet ca`: operator commands on certificate authorities: the CA certificate and CRL of
//! a local CA, and the console's "Test / Get Instances / Templates" buttons for remote CAs
//! (`test`, `instances`, `profiles`).

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
    /// Check the connection: TLS, client certificate, that the CA id is visible and up.
    Test {
        /// The CertificateAuthority's name.
        name: String,
    },
    /// List the CAs the gateway shows this client (id, name, connector).
    Instances {
        /// The CertificateAuthority's name.
        name: String,
    },
    /// List the enrolment profiles of the CA, with the subject variables each requires.
    Profiles {
        /// The CertificateAuthority's name.
        name: String,
    },
}

/// Runs `keyfleet ca`.
pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let Some(env) = super::load_env(global)? else {
        return Ok(ExitCode::from(EXIT_FAILURE));
    };
    let name = match &args.command {
        CaCommand::Cert { name }
        | CaCommand::Crl { name, .. }
        | CaCommand::Test { name }
        | CaCommand::Instances { name }
        | CaCommand::Profiles { name } => name,
    };
    let Some(obj) = env.policy.authorities.get(name) else {
        bail!(
            "no CertificateAuthority named {name:?} in {}",
            global.policy_dir.display()
        );
    };
    if matches!(
        args.command,
        CaCommand::Test { .. } | CaCommand::Instances { .. } | CaCommand::Profiles { .. }
    ) {
        return remote(name, obj, &env.state_dir, &args.command);
    }
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
    match &args.command {
        CaCommand::Cert { .. } => {
            use crate::ca::CertificateAuthority as _;
            print!("{}", ca.ca_certificate_pem()?);
        }
        // Signing a CRL uses the CA's key: it is in the audit log.
        CaCommand::Crl { out, der, .. } => {
            let audit = runtime::audit_log(&env, &master)?;
            let details = serde_json::json!({
                "out": out.as_ref().map(|p| p.display().to_string()),
                "der": *der,
            });
            super::audited(&audit, "sign-crl", name, details, || match &out {
                None => {
                    print!("{}", ca.crl_pem()?);
                    Ok(())
                }
                Some(path) => {
                    let bytes = if *der {
                        ca.crl_der()?
                    } else {
                        ca.crl_pem()?.into_bytes()
                    };
                    crate::apply::crl::write_atomic(path, &bytes)?;
                    eprintln!("CRL written to {}", path.display());
                    Ok(())
                }
            })?;
        }
        CaCommand::Test { .. } | CaCommand::Instances { .. } | CaCommand::Profiles { .. } => {
            return remote(name, obj, &env.state_dir, &args.command);
        }
    }
    Ok(ExitCode::from(EXIT_OK))
}

/// `test`, `instances`, `profiles`.
fn remote(
    name: &str,
    obj: &crate::policy::Object<CertificateAuthoritySpec>,
    state_dir: &std::path::Path,
    command: &CaCommand,
) -> anyhow::Result<ExitCode> {
    match (&obj.spec, command) {
        (CertificateAuthoritySpec::EntrustGateway(spec), _) => {
            let gw = crate::ca::connect::entrust_gateway(obj, spec, state_dir)
                .map_err(|e| anyhow::anyhow!("CA {name}: {e}"))?;
            match command {
                CaCommand::Test { .. } => {
                    let r = gw
                        .test()
                        .with_context(|| format!("CA {name}: test failed"))?;
                    println!(
                        "{name}: connected to {} ({} CA(s) visible)",
                        spec.url,
                        r.visible.len()
                    );
                    if !r.configured_found {
                        let ids: Vec<&str> = r.visible.iter().map(|c| c.id.as_str()).collect();
                        eprintln!(
                            "{name}: CA id {:?} is not visible to this client (visible: {})",
                            spec.ca_id,
                            ids.join(", ")
                        );
                        return Ok(ExitCode::from(EXIT_FAILURE));
                    }
                    let status = r.status.unwrap_or_else(|| "unknown".into());
                    println!("{name}: CA {} status {status}", spec.ca_id);
                    Ok(ExitCode::from(if status.eq_ignore_ascii_case("DOWN") {
                        EXIT_FAILURE
                    } else {
                        EXIT_OK
                    }))
                }
                CaCommand::Instances { .. } => {
                    let list = gw
                        .list_cas()
                        .with_context(|| format!("CA {name}: listing CAs"))?;
                    for c in list {
                        let mark = if c.id == spec.ca_id { "*" } else { " " };
                        let connector = c
                            .properties
                            .get("connector-name")
                            .cloned()
                            .unwrap_or_default();
                        println!("{mark} {:<32} {:<40} {connector}", c.id, c.name);
                    }
                    Ok(ExitCode::from(EXIT_OK))
                }
                _ => {
                    let list = gw
                        .list_profiles()
                        .with_context(|| format!("CA {name}: listing profiles"))?;
                    for p in list {
                        let vars: Vec<String> = p
                            .subject_variables
                            .iter()
                            .map(|v| {
                                if v.required {
                                    format!("{} (required)", v.name)
                                } else {
                                    v.name.clone()
                                }
                            })
                            .collect();
                        println!("{:<32} {:<40} subject: {}", p.id, p.name, vars.join(", "));
                    }
                    Ok(ExitCode::from(EXIT_OK))
                }
            }
        }
        (CertificateAuthoritySpec::Cfssl(spec), CaCommand::Test { .. }) => {
            let c = crate::ca::connect::cfssl(obj, spec, state_dir)
                .map_err(|e| anyhow::anyhow!("CA {name}: {e}"))?;
            let pem = c
                .info()
                .with_context(|| format!("CA {name}: test failed"))?;
            let subject = crate::ca::remote::decode_certificate_text(&pem)
                .map(|p| p.serial)
                .unwrap_or_default();
            println!(
                "{name}: connected to {} (CA certificate serial {subject})",
                spec.url
            );
            Ok(ExitCode::from(EXIT_OK))
        }
        (CertificateAuthoritySpec::Local(_), CaCommand::Test { .. }) => {
            println!("{name}: local CA, nothing to connect to");
            Ok(ExitCode::from(EXIT_OK))
        }
        _ => bail!(
            "CertificateAuthority {name:?} is not an Entrust CA Gateway: it has no instances or profiles to list"
        ),
    }
}
