//! The `keyfleet` binary: parses the command line, runs it, maps the result to an exit code
//! (0 success, 1 invalid policy or error; clap's usage errors exit 2). Everything else lives
//! in the library (`keyfleet::cli` and below).

use std::process::ExitCode;

use clap::Parser;
use keyfleet::cli::{Cli, Command, EXIT_FAILURE, run};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // A reader that stops early (`keyfleet inventory | head`) ends the command as SIGPIPE ends
    // a C program: quietly, exit 141, not a panic and a backtrace on the terminal.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to std") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
    // Terraform's `plan -out FILE` works as written.
    let cli = Cli::parse_from(keyfleet::cli::plan::terraform_style_out(std::env::args_os()));
    match &cli.command {
        // The controller logs at info unless KEYFLEET_LOG says otherwise, as text or JSON.
        Command::Run(args) => {
            let filter =
                EnvFilter::try_from_env("KEYFLEET_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
            let fmt = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_writer(std::io::stderr);
            match args.log_format {
                keyfleet::cli::run::LogFormat::Json => fmt.json().init(),
                keyfleet::cli::run::LogFormat::Text => fmt.init(),
            }
        }
        _ => tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::from_env("KEYFLEET_LOG"))
            .with_writer(std::io::stderr)
            .init(),
    }
    // Everything Keyfleet creates without an explicit mode (sled's store files among them) is
    // its owner's alone, as the systemd unit's UMask=0077 makes it; only `schema` and `man`
    // write files meant to be shared (into a source tree, a man directory).
    if !matches!(cli.command, Command::Schema(_) | Command::Man(_)) {
        keyfleet::fsutil::restrict_umask();
    }
    match run(cli) {
        Ok(code) => code,
        // The same for a command that reports the closed pipe as an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::from(141)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
