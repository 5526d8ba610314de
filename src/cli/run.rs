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
...), 70 internal failure while running (a pass panicked: a defect; the journal finishes the \
interrupted work at the next start). Any non-zero code is a failure for systemd's \
`Restart=on-failure`.";

/// Exit code of `keyfleet run` after an internal failure (a pass panicked), as sysexits'
/// EX_SOFTWARE: distinct from 1 (could not start), and non-zero so that a supervisor restarts
/// the controller.
pub const EXIT_INTERNAL: u8 = 70;

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
    /// Serve the operator API on this address (HTTPS with client certificates, `/api/v1`;
    /// e.g. 127.0.0.1:8443).
    #[arg(long, value_name = "ADDR")]
    pub api: Option<SocketAddr>,
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
        api: args.api,
        resync: Duration::from_secs(args.resync.max(1)),
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        actor: args.operator,
        pass_hook: None,
    };
    match controller::run(opts) {
        Ok(()) => Ok(ExitCode::from(EXIT_OK)),
        Err(ControllerError::Policy(d)) => {
            eprintln!("{d}");
            Ok(ExitCode::from(EXIT_FAILURE))
        }
        Err(e) if exit_code(&e) != EXIT_FAILURE => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(exit_code(&e)))
        }
        // Printed by `main` with its causes; exit 1.
        Err(e) => Err(e.into()),
    }
}

/// The exit code of `keyfleet run` when the controller ended with `e`: [`EXIT_INTERNAL`]
/// after an internal failure, 1 otherwise.
pub fn exit_code(e: &ControllerError) -> u8 {
    match e {
        ControllerError::PassPanicked { .. } => EXIT_INTERNAL,
        _ => EXIT_FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_internal_failure_exits_with_its_own_non_zero_code() {
        let panicked = ControllerError::PassPanicked {
            number: 3,
            message: "panic: boom".into(),
        };
        assert_eq!(exit_code(&panicked), EXIT_INTERNAL);
        assert_ne!(EXIT_INTERNAL, EXIT_OK);
        assert_ne!(EXIT_INTERNAL, EXIT_FAILURE);
        let text = panicked.to_string();
        assert!(text.contains("pass 3") && text.contains("boom"), "{text}");
        let start = ControllerError::Runtime(std::io::Error::other("no threads"));
        assert_eq!(exit_code(&start), EXIT_FAILURE);
    }
}
