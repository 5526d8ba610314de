//! `keyfleet cards`: readers, the cards in them, who they are and what the inventory knows;
//! `keyfleet cards unblock CARD`: reset a blocked PIN with the stored PUK.
//!
//! Rendering only: identity comes from `crate::apply::pcsc_cards`, the unblock from
//! `crate::apply::unblock`.

use std::process::ExitCode;

use serde::Serialize;

use super::{EXIT_FAILURE, EXIT_OK, GlobalArgs};
use crate::apply::pcsc_cards::{self, PcscCards};
use crate::inventory::Inventory;
use crate::statedir::control::OperatorCall;
use crate::store::Store;

/// Long help of `keyfleet cards`.
pub const LONG_ABOUT: &str = "List PC/SC readers, the card in each, its identity (CHUID \
GUID, vendor serial when the card answers the probe, the inventory id Keyfleet gives it) and \
what the inventory knows about it (status, user, template, stock), or the stock that would \
take it as a blank, and the PIN and PUK tries left (read from the card without spending one: \
the VERIFY status form, and Yubico GET METADATA for the PUK, unknown on cards without it), \
and the retired key-management slots (82, 83, …) in use per the card's Key History object, \
each with its certificate's serial, subject and end of validity. \
A blocked PUK means the card can only be retired and replaced; a card reported lost is \
marked REFUSED: Keyfleet never uses it until `keyfleet cards retire CARD --found-lost` wipes \
it.\n\nA card without a CHUID is identified by its serial; a card with neither \
is listed as unidentifiable and never issued to.\n\n`keyfleet cards unblock CARD` resets the \
PIN retry counter of an issued card with the PUK Keyfleet stored at issuance, sets a fresh PIN \
and writes it to a PIN mailer in the state directory.";

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table for people.
    Text,
    /// JSON for scripts.
    Json,
}

/// Arguments of `keyfleet cards`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Output format of the listing (and of `show`).
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub format: Format,
    /// An operation on one card instead of the listing.
    #[command(subcommand)]
    pub command: Option<CardsCommand>,
}

/// `keyfleet cards` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CardsCommand {
    /// Unblock a card's PIN with the stored PUK and set a fresh PIN (written to a PIN mailer).
    Unblock {
        /// The card id (as `keyfleet cards` or `keyfleet inventory` show it).
        card: String,
        /// Why (recorded in the audit log and shown to approvers).
        #[arg(long, default_value = "")]
        reason: String,
        /// A remote controller (`--server`) and your identity.
        #[command(flatten)]
        remote: super::remote::RemoteArgs,
    },
    /// Report a card incident (lost, damaged, forgotten): the next pass revokes or holds its
    /// certificates and replaces it (`report-incident`).
    Report {
        /// The card id.
        card: String,
        /// What happened.
        #[command(flatten)]
        incident: super::incidents::IncidentFlag,
        /// What you know (recorded in the card's incident history and the audit log).
        #[arg(long, default_value = "")]
        comment: String,
        /// A remote controller (`--server`) and your identity.
        #[command(flatten)]
        remote: super::remote::RemoteArgs,
    },
    /// A forgotten card was found: its hold is released, its temporary card ends
    /// (`resolve-incident`).
    Found {
        /// The card id.
        card: String,
        /// A comment for the history.
        #[arg(long, default_value = "")]
        comment: String,
        /// A remote controller (`--server`) and your identity.
        #[command(flatten)]
        remote: super::remote::RemoteArgs,
    },
    /// One card: its record, certificates and incident history.
    Show {
        /// The card id.
        card: String,
        /// A remote controller (`--server`) and your identity.
        #[command(flatten)]
        remote: super::remote::RemoteArgs,
    },
    /// Wipe a lost card that turned up back to stock (`resolve-incident`; the card must be in
    /// a reader).
    Retire {
        /// The card id.
        card: String,
        /// Required: the card was reported lost and has been found.
        #[arg(long, required = true)]
        found_lost: bool,
        /// A comment for the history.
        #[arg(long, default_value = "")]
        comment: String,
        /// A remote controller (`--server`) and your identity.
        #[command(flatten)]
        remote: super::remote::RemoteArgs,
    },
    /// Release the card's current PUK once, for a holder who unblocks their PIN away from
    /// Keyfleet (`unblock`; under approval when `unblock-code` is in `approvals`). A new PUK
    /// is set at the card's next contact.
    UnblockCode {
        /// The card id.
        card: String,
        /// Why (recorded in the audit log and shown to approvers).
        #[arg(long, default_value = "")]
        reason: String,
        /// A remote controller (`--server`) and your identity.
        #[command(flatten)]
        remote: super::remote::RemoteArgs,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReaderRow {
    reader: String,
    present: bool,
    atr: String,
    id: Option<String>,
    guid: Option<String>,
    serial: Option<u32>,
    certificate_slots: Vec<String>,
    error: Option<String>,
    inventory: Option<serde_json::Value>,
    blank_for_stock: Option<String>,
    /// PIN tries left, read from the card without spending one (`None`: unknown).
    pin_tries_left: Option<u8>,
    /// PUK tries left, from Yubico GET METADATA (`None`: the card does not say).
    puk_tries_left: Option<u8>,
    pin_blocked: bool,
    /// A blocked PUK: the card can only be retired and replaced.
    puk_blocked: bool,
    /// Why Keyfleet refuses the card, if it does: `lost` (reported lost; only
    /// `keyfleet cards retire ID --found-lost` wipes it back to stock).
    refused: Option<&'static str>,
    #[serde(skip)]
    tries_error: Option<String>,
    /// The retired key-management slots in use, per the card's Key History object.
    retired_slots: Vec<RetiredRow>,
    #[serde(skip)]
    retired_error: Option<String>,
}

/// A retired key-management slot and its certificate.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RetiredRow {
    slot: String,
    serial: String,
    subject: String,
    /// RFC 3339.
    not_after: String,
}

/// The rows of the retired certificates `(slot, DER)`; a certificate that does not decode
/// is the error (the others are still listed).
fn retired_rows(certs: &[(u8, Vec<u8>)]) -> (Vec<RetiredRow>, Option<String>) {
    use x509_cert::der::Decode as _;
    let mut rows = Vec::new();
    let mut error = None;
    for (slot, der) in certs {
        let parsed = crate::ca::remote::parse_certificate(der)
            .map_err(|e| e.to_string())
            .and_then(|p| {
                let subject = x509_cert::Certificate::from_der(der)
                    .map_err(|e| e.to_string())?
                    .tbs_certificate()
                    .subject()
                    .to_string();
                let not_after = p
                    .not_after
                    .format(&time::format_description::well_known::Rfc3339)
                    .map_err(|e| e.to_string())?;
                Ok(RetiredRow {
                    slot: format!("{slot:02X}"),
                    serial: p.serial,
                    subject,
                    not_after,
                })
            });
        match parsed {
            Ok(row) => rows.push(row),
            Err(e) => error = Some(format!("retired slot {slot:02X}: {e}")),
        }
    }
    (rows, error)
}

/// Runs `keyfleet cards`.
pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    use super::incidents;
    match args.command {
        Some(CardsCommand::Unblock {
            card,
            reason,
            remote,
        }) => return unblock(global, &remote, &card, reason),
        Some(CardsCommand::Report {
            card,
            incident,
            comment,
            remote,
        }) => return incidents::report(global, &remote, &card, incident, comment),
        Some(CardsCommand::Found {
            card,
            comment,
            remote,
        }) => return incidents::found(global, &remote, &card, comment),
        Some(CardsCommand::Show { card, remote }) => {
            return incidents::show(global, &remote, &card, args.format == Format::Json);
        }
        Some(CardsCommand::Retire {
            card,
            found_lost: _,
            comment,
            remote,
        }) => return incidents::retire(global, &remote, &card, comment),
        Some(CardsCommand::UnblockCode {
            card,
            reason,
            remote,
        }) => return incidents::unblock_code(global, &remote, &card, reason),
        None => {}
    }
    let Some(env) = super::load_env(global)? else {
        return Ok(ExitCode::from(EXIT_FAILURE));
    };
    let inventory = if env.state_dir.join("store").exists() {
        Store::open(&env.state_dir)?.inventory()?
    } else {
        Inventory::default()
    };
    let pcsc = PcscCards::new();
    if let Some(why) = pcsc.unavailable() {
        eprintln!("PC/SC unavailable: {why}");
        return Ok(ExitCode::from(EXIT_FAILURE));
    }
    let readers = pcsc.readers()?;
    let scanned = pcsc.scan(true)?;
    let blanks = pcsc_cards::present_blanks(&env.policy, &inventory, &scanned);
    let mut rows = Vec::new();
    for r in readers {
        let card = scanned.iter().find(|c| c.reader == r.name);
        let id = card.and_then(|c| c.id());
        let identity = card.and_then(|c| c.identity.as_ref().ok());
        // Only a card that answered PIV is asked; the counters are read, never tried.
        let tries = identity.map(|_| pcsc.tries(&r.name));
        let (pin_tries_left, puk_tries_left) = match &tries {
            Some(Ok(t)) => (t.pin, t.puk),
            _ => (None, None),
        };
        let (retired_slots, retired_error) = match identity.map(|_| pcsc.retired(&r.name)) {
            Some(Ok(certs)) => retired_rows(&certs),
            Some(Err(e)) => (Vec::new(), Some(e)),
            None => (Vec::new(), None),
        };
        let record = id.as_ref().and_then(|id| inventory.cards.get(id));
        rows.push(ReaderRow {
            retired_slots,
            retired_error,
            pin_tries_left,
            puk_tries_left,
            pin_blocked: pin_tries_left == Some(0),
            puk_blocked: puk_tries_left == Some(0),
            refused: record
                .is_some_and(|c| inventory.shown_status(c) == "lost")
                .then_some("lost"),
            tries_error: tries.and_then(Result::err),
            reader: r.name.clone(),
            present: r.present,
            atr: hex::encode_upper(&r.atr),
            guid: identity.and_then(|i| i.guid.map(hex::encode)),
            serial: identity.and_then(|i| i.serial),
            certificate_slots: identity
                .and_then(|i| i.cert_slots.clone())
                .unwrap_or_default()
                .iter()
                .map(|s| format!("{s:02X}"))
                .collect(),
            error: match card.map(|c| &c.identity) {
                Some(Err(e)) => Some(e.clone()),
                Some(Ok(_)) if id.is_none() => {
                    Some("no CHUID and no serial: cannot be identified".into())
                }
                _ => None,
            },
            inventory: record.map(|c| {
                serde_json::json!({
                    "status": inventory.shown_status(c), "user": c.user, "template": c.template, "stock": c.stock,
                    "certificates": inventory.live_certs_of(&c.id).values()
                        .map(|cert| format!("{} {}", cert.slot.hex(), cert.serial))
                        .collect::<Vec<_>>(),
                })
            }),
            blank_for_stock: id
                .as_ref()
                .and_then(|id| blanks.iter().find(|b| &b.id == id))
                .map(|b| b.stock.clone()),
            id,
        });
    }
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Format::Text => {
            if rows.is_empty() {
                println!("No readers.");
            }
            for r in &rows {
                println!("{}", r.reader);
                if !r.present {
                    println!("  (no card)");
                    continue;
                }
                println!("  ATR      {}", r.atr);
                if let Some(e) = &r.error {
                    println!("  error    {e}");
                }
                if let Some(id) = &r.id {
                    println!("  id       {id}");
                }
                match &r.guid {
                    Some(g) => println!("  CHUID    GUID {g}"),
                    None => println!("  CHUID    none"),
                }
                if let Some(s) = r.serial {
                    println!("  serial   {s}");
                }
                if !r.certificate_slots.is_empty() {
                    println!("  certs in {}", r.certificate_slots.join(", "));
                }
                if r.error.is_none() {
                    println!("  tries    {}", tries_text(r));
                }
                for k in &r.retired_slots {
                    println!(
                        "  retired  {} {} {} until {}",
                        k.slot, k.serial, k.subject, k.not_after
                    );
                }
                if let Some(e) = &r.retired_error {
                    println!("  retired  unreadable: {e}");
                }
                if r.puk_blocked {
                    println!(
                        "  PUK blocked: this card can only be retired and replaced \
                         (keyfleet cards report {} --damaged)",
                        r.id.as_deref().unwrap_or("ID")
                    );
                }
                if r.refused == Some("lost") {
                    let id = r.id.as_deref().unwrap_or("ID");
                    println!(
                        "  REFUSED  reported lost: Keyfleet never uses it; keyfleet cards \
                         retire {id} --found-lost wipes it back to stock"
                    );
                }
                match (&r.inventory, &r.blank_for_stock) {
                    (Some(inv), _) => println!("  known    {inv}"),
                    (None, Some(stock)) => println!("  unknown  blank for stock {stock:?}"),
                    (None, None) => println!("  unknown  (no stock with autoBind accepts it)"),
                }
            }
        }
    }
    Ok(ExitCode::from(EXIT_OK))
}

/// `PIN 3 left, PUK 2 left`, `PIN blocked`, `PUK unknown`.
fn tries_text(r: &ReaderRow) -> String {
    let one = |what: &str, left: Option<u8>| match left {
        Some(0) => format!("{what} blocked"),
        Some(n) => format!("{what} {n} left"),
        None => format!("{what} unknown"),
    };
    let text = format!(
        "{}, {}",
        one("PIN", r.pin_tries_left),
        one("PUK", r.puk_tries_left)
    );
    match &r.tries_error {
        Some(e) => format!("{text} ({e})"),
        None => text,
    }
}

fn unblock(
    global: &GlobalArgs,
    remote: &super::remote::RemoteArgs,
    card: &str,
    reason: String,
) -> anyhow::Result<ExitCode> {
    let call = OperatorCall::Unblock {
        card: card.to_string(),
        reason,
    };
    let Some(answer) = super::operator::call(global, remote, &call)? else {
        return Ok(ExitCode::from(EXIT_FAILURE));
    };
    match answer {
        Err(r) => {
            eprintln!("Cannot unblock {card}: {r}");
            Ok(ExitCode::from(EXIT_FAILURE))
        }
        Ok(value) => {
            print!(
                "{}",
                super::approve::outcome_text(&value, |r| format!(
                    "Card {card} unblocked (the PIN had {} tries left); new PIN in {}\n",
                    r["retriesBefore"],
                    r["pinMailer"].as_str().unwrap_or("")
                ))
            );
            Ok(ExitCode::from(EXIT_OK))
        }
    }
}
