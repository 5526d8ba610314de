//! `keyfleet validate`: load and check a policy set, print every problem (text or JSON), exit
//! 0 when valid and 1 when not.
//!
//! Offline by default: no secret is resolved and no server contacted. `--online` also resolves
//! every secret reference, checks that referenced local files exist, asks each Entrust CA
//! Gateway whether its CA id and the templates' profiles exist, and binds to every LDAP
//! directory (reading its base DN).

use std::process::ExitCode;

use serde::Serialize;

use super::{EXIT_FAILURE, EXIT_OK, GlobalArgs};
use crate::policy::load::load_with_locations;
use crate::policy::{Diagnostic, check_online};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One `file:line: kind/name: path: message` line per problem.
    Text,
    /// `{"valid": bool, "errors": [...], "warnings": [...]}` on stdout.
    Json,
}

/// The long help of this subcommand.
pub const LONG_ABOUT: &str = "Check the policy set in the policy directory (-C): YAML syntax, the \
JSON schema of every kind, unique names, references between objects, slots and key \
algorithms, subject/SAN templates (expanded for a sample user) and durations. Every problem is \
reported, each as `file:line: kind/name: path: message`.\n\nWorks offline and resolves no \
secret unless --online is given (then it also binds to every LDAP directory).\n\nA local CA \
that exists already in the state directory keeps its subject, key algorithm and validity: a \
change to them is a warning (it only applies to a new CA).\n\nExit codes: 0 valid, 1 invalid.";

/// Arguments of `keyfleet validate`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Also resolve every secret reference, check that referenced files exist, ask each CA
    /// gateway whether the configured CA id and the templates' profiles exist, and bind to
    /// every LDAP directory.
    #[arg(long)]
    pub online: bool,
}

#[derive(Serialize)]
struct JsonDiagnostic<'a> {
    code: &'a str,
    file: String,
    line: usize,
    column: Option<usize>,
    kind: Option<&'a str>,
    name: Option<&'a str>,
    path: &'a str,
    message: &'a str,
}

impl<'a> From<&'a Diagnostic> for JsonDiagnostic<'a> {
    fn from(d: &'a Diagnostic) -> Self {
        JsonDiagnostic {
            code: d.code,
            file: d.file.display().to_string(),
            line: d.line,
            column: d.column,
            kind: d.kind.as_deref(),
            name: d.name.as_deref(),
            path: &d.path,
            message: &d.message,
        }
    }
}

#[derive(Serialize)]
struct JsonReport<'a> {
    valid: bool,
    errors: Vec<JsonDiagnostic<'a>>,
    warnings: Vec<JsonDiagnostic<'a>>,
}

/// Binds to every LDAP directory; one error diagnostic per directory that fails.
fn check_directories_online(set: &crate::policy::PolicySet) -> Vec<Diagnostic> {
    crate::observe::ldap::check_all_blocking(set)
        .into_iter()
        .filter_map(|(name, e)| {
            let d = set.directories.get(&name)?;
            Some(
                Diagnostic::error(
                    crate::policy::diag::codes::DIRECTORY_UNREACHABLE,
                    &d.file,
                    d.line,
                    e.to_string(),
                )
                .for_object(Some("Directory"), Some(&name)),
            )
        })
        .collect()
}

/// Runs `keyfleet validate`.
pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let dir = &global.policy_dir;
    let (diagnostics, objects) = match load_with_locations(dir) {
        Ok((set, locations)) => {
            let mut diags = set.warnings.clone();
            // A local CA that exists keeps its subject, key algorithm and validity.
            let state_dir =
                super::ca_warnings::state_dir_of(&set, dir, global.state_dir.as_deref());
            diags.extend(super::ca_warnings::local_ca_warnings(
                &set,
                Some(&locations),
                &state_dir,
            ));
            if args.online {
                diags.extend(check_online(&set));
                diags.extend(crate::ca::connect::check_online(&set));
                diags.extend(check_directories_online(&set));
            }
            (diags, set.object_count())
        }
        Err(all) => (all.0, 0),
    };
    let (errors, warnings): (Vec<&Diagnostic>, Vec<&Diagnostic>) =
        diagnostics.iter().partition(|d| d.is_error());
    let valid = errors.is_empty();

    match args.format {
        Format::Json => {
            let report = JsonReport {
                valid,
                errors: errors.iter().map(|d| (*d).into()).collect(),
                warnings: warnings.iter().map(|d| (*d).into()).collect(),
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Format::Text => {
            for d in errors.iter().chain(warnings.iter()) {
                eprintln!("{d}");
            }
            if valid {
                println!(
                    "{}: valid ({objects} objects, {} warnings)",
                    dir.display(),
                    warnings.len()
                );
            } else {
                eprintln!(
                    "{}: invalid ({} errors, {} warnings)",
                    dir.display(),
                    errors.len(),
                    warnings.len()
                );
            }
        }
    }
    Ok(ExitCode::from(if valid { EXIT_OK } else { EXIT_FAILURE }))
}
