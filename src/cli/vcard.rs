//! `keyfleet vcard serve`: Keyfleet's virtual PIV card in a real (virtual) reader, through
//! vsmartcard's vpcd driver in pcscd.
//!
//! Only parses arguments and logs; the protocol and the loop are `crate::card::vpcd`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{EXIT_OK, GlobalArgs};
use crate::card::vpcd;

/// Long help of `keyfleet vcard`.
pub const LONG_ABOUT: &str = "Operate Keyfleet's virtual PIV card outside Keyfleet.\n\n\
`keyfleet vcard serve --state DIR` connects to the vpcd reader driver of pcscd (package \
vsmartcard-vpcd; reader \"Virtual PCD 00 00\" listens on 127.0.0.1:35963 by default) and \
answers APDUs like a PIV card, so PC/SC tools (OpenSC, yubico-piv-tool, Keyfleet itself) see a \
card in that reader. The card lives in DIR/card.json: an empty DIR is a new card in the factory \
state (PIN 123456, PUK 12345678, 3DES management key 010203040506070801020304050607080102030405060708, \
3 tries each, no keys, no certificates). Every state change is written before the answer, so \
stopping the process is removing the card and starting it again is inserting it. It retries \
until vpcd accepts the connection (pcscd may start later) and reconnects when pcscd restarts.\n\n\
For removal tests, KEYFLEET_VCARD_EJECT_AFTER_APDUS=N pulls the card (closes the connection and \
exits 0) right after the N-th APDU.";

/// Arguments of `keyfleet vcard`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: VcardCommand,
}

/// `keyfleet vcard` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum VcardCommand {
    /// Serve the card to vpcd until killed.
    Serve {
        /// The card's state directory (created if missing; empty = factory-fresh card).
        #[arg(long, value_name = "DIR")]
        state: PathBuf,
        /// Where vpcd listens.
        #[arg(long, value_name = "HOST:PORT", default_value = vpcd::DEFAULT_VPCD)]
        vpcd: String,
    },
}

/// Runs `keyfleet vcard`.
pub fn run(_global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        VcardCommand::Serve { state, vpcd: addr } => {
            let mut log = |line: &str| eprintln!("vcard: {line}");
            // Fault injection for removal tests: pull the card after N APDUs.
            let eject_after = std::env::var("KEYFLEET_VCARD_EJECT_AFTER_APDUS")
                .ok()
                .and_then(|v| v.parse().ok());
            vpcd::serve(&state, &addr, eject_after, &mut log)?;
            Ok(ExitCode::from(EXIT_OK))
        }
    }
}
