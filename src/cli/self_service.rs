//! `keyfleet self-service --server URL [--reader NAME]`: the holder's own workstation. Runs
//! what waits for the holder on the card in the local reader (renewals and reissues that need
//! the PIN) on the server's executors, the card relaying; or changes the PIN
//! (`--change-pin`), or unblocks it with an unblock code (`--unblock`), on the card, and
//! tells the server. The library side is [`crate::selfservice::client`].
//!
//! Exit codes: 0 done (or nothing waited), 1 error, 3 some action failed.

use std::path::PathBuf;
use std::process::ExitCode;

use zeroize::Zeroizing;

use super::{EXIT_FAILURE, EXIT_OK, GlobalArgs};
use crate::selfservice::client::{self, SecretSource, SelfServiceError, Workstation};
use crate::selfservice::protocol::{ActionResult, FactsChanged, SessionOutcome};

/// Exit code when the session ran and some action failed.
pub const EXIT_ACTION_FAILED: u8 = 3;

/// The long help of `keyfleet self-service`.
pub const LONG_ABOUT: &str = "The holder's workstation. Talks to the card in a local PC/SC \
reader and to the server's operator API over HTTPS, authenticated by the card's own PIV \
authentication certificate (slot 9A): you type the PIN, the card signs the TLS handshake.\n\n\
Without --change-pin or --unblock, runs what waits for you on the card (renewals and reissues \
whose key the card must sign with your PIN): the server plans and runs them with its \
executors, journalled and audited as every action is, and your card answers through this \
command. The PIN never leaves this machine: the server's commands that carry it are filled in \
here.\n\n--change-pin changes the PIN on the card; --unblock resets a blocked PIN with the \
unblock code your helpdesk or the portal released (the card's PUK, usable once) and a new PIN. \
Both are done here and then reported, so that Keyfleet no longer relies on the PIN it held.\n\n\
PINs and codes are read from the terminal without echo, or from --pin-source, \
--new-pin-source and --unblock-code-source (file:PATH or env:NAME) for scripts.\n\n\
Exit codes: 0 done or nothing waited, 1 error, 2 usage error, 3 some action failed.";

/// Arguments of `keyfleet self-service`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The server (`https://host:port`) whose operator API serves /api/v1/self-service.
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// The reader holding the card (its name, or a part of it); default: the only reader
    /// with a card.
    #[arg(long, value_name = "NAME")]
    pub reader: Option<String>,
    /// The CA certificates (PEM) to trust for the server (default: $SSL_CERT_FILE).
    #[arg(long, visible_alias = "ca-file", value_name = "FILE")]
    pub server_ca: Option<PathBuf>,
    /// Change the PIN on the card (asks the current and the new PIN).
    #[arg(long, conflicts_with = "unblock")]
    pub change_pin: bool,
    /// Reset a blocked PIN with an unblock code (asks the code and the new PIN).
    #[arg(long)]
    pub unblock: bool,
    /// Where the current PIN comes from: file:PATH or env:NAME (default: the terminal).
    #[arg(long, value_name = "SOURCE", value_parser = SecretSource::parse)]
    pub pin_source: Option<SecretSource>,
    /// Where the new PIN comes from (--change-pin, --unblock): file:PATH or env:NAME.
    #[arg(long, value_name = "SOURCE", value_parser = SecretSource::parse)]
    pub new_pin_source: Option<SecretSource>,
    /// Where the unblock code comes from (--unblock): file:PATH or env:NAME.
    #[arg(long, value_name = "SOURCE", value_parser = SecretSource::parse)]
    pub unblock_code_source: Option<SecretSource>,
}

/// Runs `keyfleet self-service`.
pub fn run(_global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match execute(&args) {
        Ok(code) => Ok(ExitCode::from(code)),
        Err(e) => {
            eprintln!("keyfleet self-service: {e}");
            Ok(ExitCode::from(EXIT_FAILURE))
        }
    }
}

fn source(s: &Option<SecretSource>) -> SecretSource {
    s.clone().unwrap_or(SecretSource::Terminal)
}

fn read(s: &Option<SecretSource>, prompt: &str) -> Result<Zeroizing<String>, SelfServiceError> {
    source(s).read(prompt).map_err(SelfServiceError::Reader)
}

/// The new PIN; typed twice on the terminal.
fn new_pin(args: &Args) -> Result<Zeroizing<String>, SelfServiceError> {
    let pin = read(&args.new_pin_source, "New PIN: ")?;
    if args.new_pin_source.is_none() {
        let again = read(&None, "New PIN again: ")?;
        if again != pin {
            return Err(SelfServiceError::Reader(
                "the two new PINs differ; nothing was changed".into(),
            ));
        }
    }
    if !(6..=8).contains(&pin.len()) {
        return Err(SelfServiceError::Reader(
            "the new PIN must be 6 to 8 characters; nothing was changed".into(),
        ));
    }
    Ok(pin)
}

fn execute(args: &Args) -> Result<u8, SelfServiceError> {
    let station = Workstation::open(args.reader.as_deref())?;
    let ca = args.server_ca.as_deref();
    if args.unblock {
        let code = read(&args.unblock_code_source, "Unblock code: ")?;
        let pin = new_pin(args)?;
        station.unblock(&code, &pin)?;
        println!("The PIN of the card in {} is reset.", station.reader());
        let pin = client::shared_pin(pin);
        let reported = station
            .connect(&args.server, ca, &pin)
            .and_then(|c| c.report_unblocked());
        return report("the PIN was reset", reported);
    }
    let pin = read(&args.pin_source, "PIN: ")?;
    station.verify_pin(&pin)?;
    let shared = client::shared_pin(pin.clone());
    let conn = station.connect(&args.server, ca, &shared)?;
    let view = conn.view()?;
    println!(
        "Card {} of {} (certificate {}) in {}.",
        view.card,
        view.user,
        view.certificate,
        station.reader()
    );
    if args.change_pin {
        let new = new_pin(args)?;
        station.change_pin(&pin, &new)?;
        conn.set_pin(new);
        println!("The PIN is changed.");
        return report("the PIN was changed", conn.report_pin_changed());
    }
    let outcome = conn.run_waiting()?;
    Ok(render(&outcome))
}

fn report(
    done: &'static str,
    reported: Result<FactsChanged, SelfServiceError>,
) -> Result<u8, SelfServiceError> {
    let facts = reported.map_err(|e| SelfServiceError::NotReported {
        done,
        source: Box::new(e),
    })?;
    println!(
        "Keyfleet knows: card {} has a PIN of the holder's own{}.",
        facts.card,
        if facts.puk_rotation_planned {
            "; a new PUK is set at its next contact"
        } else {
            ""
        }
    );
    Ok(EXIT_OK)
}

/// Prints how each action ended; the exit code.
fn render(outcome: &SessionOutcome) -> u8 {
    if outcome.actions.is_empty() && outcome.error.is_none() {
        println!("Nothing waits for you on this card.");
        return EXIT_OK;
    }
    for a in &outcome.actions {
        let word = match a.result {
            ActionResult::Done => "done   ",
            ActionResult::Failed => "failed ",
            ActionResult::Skipped => "skipped",
        };
        let mut line = format!("{word} {}", a.action);
        if !a.serials.is_empty() {
            line.push_str(&format!(" (certificates {})", a.serials.join(", ")));
        }
        if let Some(m) = &a.message {
            line.push_str(&format!(": {m}"));
        }
        println!("{line}");
    }
    if let Some(e) = &outcome.error {
        eprintln!("keyfleet self-service: {e}");
    }
    if outcome.failed() {
        EXIT_ACTION_FAILED
    } else {
        EXIT_OK
    }
}
