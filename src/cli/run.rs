//! `keyfleet run`: start the controller (see `crate::controller`) and map its end to an exit
//! code. Logging is set up by `main` from `--log-format`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use super::{EXIT_FAILURE, EXIT_OK, GlobalArgs};
use crate::controller::{self, ControllerError, RunOptions};

/// Long help of `keyfleet run`.
pub const LONG_ABOUT: &str = "Run the controller: a long-lived, level-triggered reconciler. \
It takes the state directory's lock (a second `run` or an `apply` is refused, naming the \
holder's pid), runs one pass at start, then a pass whenever a policy file changes (an invalid \
policy set is reported and the last valid one stays in force), a file directory's data changes, \
a certificate reaches its renewal point, a failed action's retry comes due, a published CRL \
reaches its refresh point (`crlPublish.refreshBefore` ahead of its nextUpdate), SIGHUP arrives, \
or the periodic resync is due. After each pass, the CRL of every local CA with `crlPublish` is \
republished when its revocations changed, it is missing, or it is due. Failed actions are retried per object with exponential backoff and \
jitter; permanent failures are reported and retried only after the policy changes. A plan that \
trips the safety valve runs without its revocations, which wait for `keyfleet approve`.\n\n\
While it runs, `plan`, `audit`, `inventory`, `history`, `status` and `approve` reach the store \
through the control socket <state dir>/keyfleet.sock.\n\n\
SIGTERM/SIGINT: the action in flight finishes (bounded by --shutdown-grace) and the controller \
exits 0; whatever a hard stop interrupts, the journal finishes at the next start.\n\n\
Exit codes: 0 stopped by a signal, 1 could not start (invalid policy, state directory in use, \
...).";

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Arguments of `keyfleet run`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Log format (the level comes from KEYFLEET_LOG, default info).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Serve /healthz, /readyz and /metrics on this address (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Run a full pass at least this often, in seconds, even if nothing was seen to change.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub resync: u64,
    /// Longest wait, in seconds, for the action in flight when stopping.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub shutdown_grace: u64,
    /// Name recorded in the history for the controller's actions.
    #[arg(
        long,
        value_name = "NAME",
        env = "KEYFLEET_OPERATOR",
        default_value = "keyfleet-controller"
    )]
    pub operator: String,
}

/// Runs `keyfleet run`.
pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let opts = RunOptions {
        policy_dir: global.policy_dir.clone(),
        state_dir: global.state_dir.clone(),
        listen: args.listen,
        resync: Duration::from_secs(args.resync.max(1)),
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        actor: args.operator,
    };
    match controller::run(opts) {
        Ok(()) => Ok(ExitCode::from(EXIT_OK)),
        Err(ControllerError::Policy(d)) => {
            eprintln!("{d}");
            Ok(ExitCode::from(EXIT_FAILURE))
        }
        Err(e) => Err(e.into()),
    }
}
