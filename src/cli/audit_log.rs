//! `keyfleet audit-log verify|show|key`: check, read and pin the tamper-evident audit log.
//!
//! Exit codes: `verify` 0 intact, 1 broken (naming the first bad `seq`) or unreadable; `show`
//! and `key` 0, 1 on error.

use std::process::ExitCode;

use super::{EXIT_FAILURE, EXIT_OK, GlobalArgs};
use crate::audit::{self, AuditEntry, AuditKey};
use crate::keystore::KeyStore;
use crate::runtime;

/// The long help of `keyfleet audit-log`.
pub const LONG_ABOUT: &str = "Every operator call, approval and applied action is one line of \
<state dir>/audit/log.jsonl, chained by SHA-256 to the line before, and the chain's head is \
signed into <state dir>/audit/checkpoints.jsonl by the audit key at least every 100 entries, \
every 5 minutes with new entries, and when a process stops. `verify` checks the chain and every \
checkpoint and names the first entry that was changed, removed, reordered, or cut after a \
checkpoint; `show` prints entries; `key` prints the audit key's public key (PEM), to keep apart \
from the machine and verify with `--public-key`.\n\nExit codes: verify 0 intact, 1 broken or \
unreadable; show and key 0, 1 on error.";

/// Arguments of `keyfleet audit-log`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: AuditLogCommand,
}

/// `keyfleet audit-log` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AuditLogCommand {
    /// Check the chain and every signed checkpoint (exit 0 intact, 1 otherwise).
    Verify {
        /// The audit key's public key (PEM, as `audit-log key` prints it), kept apart from
        /// this machine; default: the state directory's own key.
        #[arg(long, value_name = "FILE")]
        public_key: Option<std::path::PathBuf>,
    },
    /// Print entries, oldest first.
    Show {
        /// Only entries at or after this time (RFC 3339, e.g. 2026-12-07T09:00:00Z).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only entries of this actor.
        #[arg(long, value_name = "NAME")]
        actor: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: super::inventory::Format,
    },
    /// Print the audit key's public key (PEM).
    Key,
}

/// Runs `keyfleet audit-log`.
pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    // A public key kept apart and the state directory are all `verify` needs: an audit is not
    // stopped by a policy set that does not load.
    if let (
        AuditLogCommand::Verify {
            public_key: Some(path),
        },
        Some(state),
    ) = (&args.command, &global.state_dir)
    {
        return match read_public_key(path)? {
            Some(der) => verify_dir(&state.join(audit::AUDIT_DIR), &der),
            None => Ok(ExitCode::from(EXIT_FAILURE)),
        };
    }
    let Some(env) = super::load_env(global)? else {
        return Ok(ExitCode::from(EXIT_FAILURE));
    };
    let dir = env.state_dir.join(audit::AUDIT_DIR);
    match args.command {
        AuditLogCommand::Verify { public_key } => {
            let spki = match public_key {
                Some(path) => match read_public_key(&path)? {
                    Some(der) => der,
                    None => return Ok(ExitCode::from(EXIT_FAILURE)),
                },
                None => match state_key(&env)? {
                    Some(key) => key.spki_der(),
                    None => {
                        if dir.join(audit::LOG_FILE).exists() {
                            eprintln!(
                                "Audit log broken: {} exists but the audit key does not",
                                dir.join(audit::LOG_FILE).display()
                            );
                            return Ok(ExitCode::from(EXIT_FAILURE));
                        }
                        println!("No audit log yet in {}.", dir.display());
                        return Ok(ExitCode::from(EXIT_OK));
                    }
                },
            };
            verify_dir(&dir, &spki)
        }
        AuditLogCommand::Show {
            since,
            actor,
            format,
        } => {
            let since = since
                .map(|s| {
                    time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
                        .map_err(|e| anyhow::anyhow!("--since {s:?}: not an RFC 3339 time ({e})"))
                })
                .transpose()?;
            let entries: Vec<AuditEntry> = audit::read_entries(&dir.join(audit::LOG_FILE))?
                .into_iter()
                .filter(|e| actor.as_deref().is_none_or(|a| e.actor == a))
                .filter(|e| {
                    since.is_none_or(|t| {
                        time::OffsetDateTime::parse(
                            &e.time,
                            &time::format_description::well_known::Rfc3339,
                        )
                        .is_ok_and(|at| at >= t)
                    })
                })
                .collect();
            let mut text = String::new();
            match format {
                super::inventory::Format::Json => {
                    text = serde_json::to_string_pretty(&entries)?;
                    text.push('\n');
                }
                super::inventory::Format::Text => {
                    use std::fmt::Write as _;
                    for e in &entries {
                        let _ = writeln!(
                            text,
                            "{:>6}  {}  {:<12} {:<24} {:<20} {}",
                            e.seq, e.time, e.actor, e.kind, e.target, e.outcome
                        );
                    }
                    if entries.is_empty() {
                        text.push_str("No entries.\n");
                    }
                }
            }
            // A reader that stops early (`| head`) is not an error.
            use std::io::Write as _;
            match std::io::stdout().lock().write_all(text.as_bytes()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(ExitCode::from(EXIT_OK)),
            }
        }
        AuditLogCommand::Key => {
            let master = runtime::master_key_for(&env)?;
            let store = KeyStore::parse(env.policy.settings.spec.key_store.as_deref())?;
            let key = AuditKey::load_or_create(&store, &env.state_dir, &master)?;
            print!("{}", key.public_pem());
            Ok(ExitCode::from(EXIT_OK))
        }
    }
}

/// Checks the log and checkpoints in the audit folder `dir` against the public key `spki`.
fn verify_dir(dir: &std::path::Path, spki: &[u8]) -> anyhow::Result<ExitCode> {
    let read = |name: &str| -> anyhow::Result<Vec<u8>> {
        match std::fs::read(dir.join(name)) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(anyhow::anyhow!("{}: {e}", dir.join(name).display())),
        }
    };
    let (log, checkpoints) = (read(audit::LOG_FILE)?, read(audit::CHECKPOINT_FILE)?);
    match audit::verify(&log, &checkpoints, spki) {
        Ok(v) => {
            println!(
                "Audit log intact: {} entries, {} checkpoints, signed up to seq {}.",
                v.entries, v.checkpoints, v.last_checkpoint
            );
            if v.entries > v.last_checkpoint {
                println!(
                    "Entries {} to {} are chained but not yet signed.",
                    v.last_checkpoint + 1,
                    v.entries
                );
            }
            Ok(ExitCode::from(EXIT_OK))
        }
        Err(broken) => {
            println!("Audit log BROKEN at seq {}: {}", broken.seq, broken.why);
            Ok(ExitCode::from(EXIT_FAILURE))
        }
    }
}

/// The DER of the PEM public key in `path`; `None` (said on stderr) when it holds none.
fn read_public_key(path: &std::path::Path) -> anyhow::Result<Option<Vec<u8>>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let der = pem_spki(&text);
    if der.is_none() {
        eprintln!("{}: not a PEM public key", path.display());
    }
    Ok(der)
}

/// The state directory's audit key, if it was ever made.
fn state_key(env: &runtime::Environment) -> anyhow::Result<Option<AuditKey>> {
    let store = KeyStore::parse(env.policy.settings.spec.key_store.as_deref())?;
    if matches!(store, KeyStore::File)
        && !env
            .state_dir
            .join(audit::AUDIT_DIR)
            .join(audit::SIGNING_KEY_FILE)
            .exists()
    {
        return Ok(None);
    }
    let master = runtime::master_key_for(env)?;
    Ok(AuditKey::load(&store, &env.state_dir, &master)?)
}

/// The DER of a `-----BEGIN PUBLIC KEY-----` PEM.
fn pem_spki(text: &str) -> Option<Vec<u8>> {
    let (label, der) = der::pem::decode_vec(text.trim().as_bytes()).ok()?;
    (label == "PUBLIC KEY").then_some(der)
}
