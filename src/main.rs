//! The `keyfleet` binary: parses the command line, runs it, maps the result to an exit code
//! (0 success, 1 invalid policy or error; clap's usage errors exit 2). Everything else lives
//! in the library (`keyfleet::cli` and below).

use std::process::ExitCode;

use clap::Parser;
use keyfleet::cli::{Cli, EXIT_FAILURE, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("KEYFLEET_LOG"))
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
