//! The command line: parsing (clap derive), dispatch to one module per subcommand, and exit
//! codes. This is the only layer that prints or uses `anyhow`.
//!
//! It holds no policy logic: subcommands call the library (`crate::policy`, ...) and render
//! what it returns. To add a subcommand, add a file with an `Args` struct and
//! `run(&GlobalArgs, Args) -> anyhow::Result<ExitCode>`, then a variant to [`Command`] and an
//! arm to [`run`].

pub mod apply;
mod apply_saved;
pub mod approve;
pub mod audit;
pub mod audit_log;
pub mod ca;
mod ca_warnings;
pub mod cards;
pub mod directory;
pub mod docs;
pub mod incidents;
pub mod inventory;
pub mod keys;
pub mod markdown;
pub mod operator;
pub mod plan;
pub mod reindex;
pub mod remote;
pub mod requests;
pub mod run;
pub mod schema;
pub mod self_service;
pub mod status;
pub mod test;
pub mod validate;
pub mod vcard;
pub mod whoami;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for success.
pub const EXIT_OK: u8 = 0;
/// Exit code for invalid policy or a failed command.
pub const EXIT_FAILURE: u8 = 1;

/// Keyfleet: declarative, policy-driven management of smart-card and PKI credentials.
#[derive(Debug, Parser)]
#[command(
    name = "keyfleet",
    version,
    about,
    long_about = "Keyfleet manages smart-card and token credentials (PIV cards, PKCS#11 tokens, \
virtual cards) from policy kept in git: YAML objects describe CAs, directories, card templates, \
assignments, card stock, roles and settings; Keyfleet validates them, observes the directory, \
cards and CA, plans the difference and applies it.\n\nExit codes: 0 success, 1 invalid policy \
or failure, 2 usage error."
)]
pub struct Cli {
    /// Options every subcommand accepts.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options accepted before or after any subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct GlobalArgs {
    /// The policy directory (searched recursively for *.yaml / *.yml).
    #[arg(
        short = 'C',
        long = "policy-dir",
        value_name = "DIR",
        default_value = ".",
        global = true
    )]
    pub policy_dir: PathBuf,
    /// The state directory (inventory, journal, keys); overrides Settings.spec.stateDir.
    #[arg(long, value_name = "DIR", env = "KEYFLEET_STATE_DIR", global = true)]
    pub state_dir: Option<PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a policy set: YAML, schemas, references, slots, templates, durations.
    #[command(long_about = validate::LONG_ABOUT)]
    Validate(validate::Args),
    /// Write the JSON schemas of every policy kind (for editors and CI).
    #[command(long_about = schema::LONG_ABOUT)]
    Schema(schema::Args),
    /// Show what apply would change, each action with its reason.
    Plan(plan::Args),
    /// Converge: recover interrupted work, plan, confirm, apply.
    Apply(apply::Args),
    /// Report drift between policy, directory, inventory and CA.
    Audit(audit::Args),
    /// List the cards and certificates Keyfleet knows.
    Inventory(inventory::InventoryArgs),
    /// Show every applied action.
    History(inventory::HistoryArgs),
    /// Operator commands on a certificate authority (certificate, CRL).
    Ca(ca::Args),
    /// List readers and the cards in them (identity, inventory); unblock a card's PIN.
    #[command(long_about = cards::LONG_ABOUT)]
    Cards(cards::Args),
    /// Serve Keyfleet's virtual PIV card to pcscd through the vpcd reader driver.
    #[command(long_about = vcard::LONG_ABOUT)]
    Vcard(vcard::Args),
    /// Run the controller: converge continuously on every change that matters.
    #[command(long_about = run::LONG_ABOUT)]
    Run(run::Args),
    /// Show what the running controller is doing.
    Status(status::Args),
    /// Approve the revocations the safety valve holds.
    Approve(approve::Args),
    /// List, show, approve or deny operator requests waiting for approval.
    #[command(long_about = requests::LONG_ABOUT)]
    Requests(requests::Args),
    /// Ask a controller's operator API who you are (operator, roles, permissions).
    Whoami(whoami::Args),
    /// The archive of encryption keys: list, and recover under two-person control.
    #[command(long_about = keys::LONG_ABOUT)]
    Keys(keys::Args),
    /// Show what Keyfleet sees in a directory: one user, or a group's members.
    #[command(long_about = directory::LONG_ABOUT)]
    Directory(directory::Args),
    /// The holder's workstation: run what waits for you on your card, change or unblock its PIN.
    #[command(long_about = self_service::LONG_ABOUT)]
    SelfService(self_service::Args),
    /// Check, show or pin the tamper-evident audit log.
    #[command(long_about = audit_log::LONG_ABOUT)]
    AuditLog(audit_log::Args),
    /// Rebuild the store's index of certificates by card (after running an older Keyfleet).
    #[command(long_about = reindex::LONG_ABOUT)]
    Reindex(reindex::Args),
    /// Run the policy set's PolicyTests (tests/) with fixtures, no state or server.
    #[command(long_about = test::LONG_ABOUT)]
    Test(test::Args),
    /// Print a shell completion script (bash, zsh, fish).
    #[command(long_about = docs::COMPLETIONS_ABOUT)]
    Completions(docs::CompletionsArgs),
    /// Print the man page (or write every page with --dir).
    #[command(long_about = docs::MAN_ABOUT)]
    Man(docs::ManArgs),
}

/// Loads the policy and resolves the state directory. An invalid policy is reported on stderr
/// (file, line and object of every diagnostic) and gives `None`: the command exits 1.
pub(crate) fn load_env(global: &GlobalArgs) -> anyhow::Result<Option<crate::runtime::Environment>> {
    match crate::runtime::load(&global.policy_dir, global.state_dir.as_deref()) {
        Ok(env) => Ok(Some(env)),
        Err(crate::runtime::PassError::Policy(d)) => {
            eprintln!("{d}");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs an operator command's effect `f` between its two audit-log entries: `started` first
/// (if it cannot be written, `f` does not run), then `done` or `failed` with the error. An
/// effect whose `done` cannot be written is reported as a failure.
pub(crate) fn audited<T>(
    audit: &crate::audit::AuditLog,
    kind: &str,
    target: &str,
    details: serde_json::Value,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let entry = |outcome: &str, details: serde_json::Value| crate::audit::NewEntry {
        actor: apply::os_user(),
        kind: kind.to_string(),
        target: target.to_string(),
        outcome: outcome.to_string(),
        details,
    };
    let now = time::OffsetDateTime::now_utc;
    audit
        .append(entry("started", details.clone()), now())
        .map_err(|e| anyhow::anyhow!("not done: the audit log cannot be written: {e}"))?;
    let result = f();
    let mut end = details;
    let state = match &result {
        Ok(_) => "done",
        Err(e) => {
            end["error"] = format!("{e:#}").into();
            "failed"
        }
    };
    audit
        .append(entry(state, end), now())
        .map_err(|e| anyhow::anyhow!("the audit log cannot be written: {e}"))?;
    result
}

/// Runs the parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate(args) => validate::run(&cli.global, args),
        Command::Schema(args) => schema::run(&cli.global, args),
        Command::Plan(args) => plan::run(&cli.global, args),
        Command::Apply(args) => apply::run(&cli.global, args),
        Command::Audit(args) => audit::run(&cli.global, args),
        Command::Inventory(args) => inventory::run_inventory(&cli.global, args),
        Command::History(args) => inventory::run_history(&cli.global, args),
        Command::Ca(args) => ca::run(&cli.global, args),
        Command::Cards(args) => cards::run(&cli.global, args),
        Command::Vcard(args) => vcard::run(&cli.global, args),
        Command::Run(args) => run::run(&cli.global, args),
        Command::Status(args) => status::run(&cli.global, args),
        Command::Approve(args) => approve::run(&cli.global, args),
        Command::Requests(args) => requests::run(&cli.global, args),
        Command::Whoami(args) => whoami::run(&cli.global, args),
        Command::Keys(args) => keys::run(&cli.global, args),
        Command::Directory(args) => directory::run(&cli.global, args),
        Command::Reindex(args) => reindex::run(&cli.global, args),
        Command::AuditLog(args) => audit_log::run(&cli.global, args),
        Command::SelfService(args) => self_service::run(&cli.global, args),
        Command::Test(args) => test::run(&cli.global, args),
        Command::Completions(args) => docs::run_completions(&cli.global, args),
        Command::Man(args) => docs::run_man(&cli.global, args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_go_anywhere() {
        let a = Cli::try_parse_from(["keyfleet", "-C", "p", "validate"]).unwrap();
        let b =
            Cli::try_parse_from(["keyfleet", "validate", "-C", "p", "--state-dir", "s"]).unwrap();
        assert_eq!(a.global.policy_dir, PathBuf::from("p"));
        assert_eq!(b.global.policy_dir, PathBuf::from("p"));
        assert_eq!(b.global.state_dir, Some(PathBuf::from("s")));
        let d = Cli::try_parse_from(["keyfleet", "validate"]).unwrap();
        assert_eq!(d.global.policy_dir, PathBuf::from("."));
    }

    #[test]
    fn validate_format_values() {
        let c =
            Cli::try_parse_from(["keyfleet", "validate", "--format", "json", "--online"]).unwrap();
        let Command::Validate(v) = c.command else {
            panic!("wrong command")
        };
        assert_eq!(v.format, validate::Format::Json);
        assert!(v.online);
        assert!(Cli::try_parse_from(["keyfleet", "validate", "--format", "xml"]).is_err());
        assert!(Cli::try_parse_from(["keyfleet", "schema"]).is_err());
    }
}
