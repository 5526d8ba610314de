//! `keyfleet cards report|found|show|retire|unblock-code`: card incidents and the offline
//! unblock code, locally (the controller's socket, or the state directory) or with
//! `--server`. Rendering only: the operations are [`crate::operators::incidents`].

use std::process::ExitCode;

use super::remote::RemoteArgs;
use super::{EXIT_FAILURE, EXIT_OK, GlobalArgs};
use crate::policy::model::IncidentKind;
use crate::statedir::control::OperatorCall;

/// Which incident `keyfleet cards report` records.
#[derive(Debug, Clone, Copy, clap::Args)]
#[group(required = true, multiple = false)]
pub struct IncidentFlag {
    /// Lost or stolen: its certificates are revoked (keyCompromise); never used again.
    #[arg(long)]
    pub lost: bool,
    /// Broken: its certificates are revoked (cessationOfOperation); the card is retired.
    #[arg(long)]
    pub damaged: bool,
    /// Left at home: its certificates are put on hold; a temporary card if the template
    /// names one.
    #[arg(long)]
    pub forgotten: bool,
}

impl IncidentFlag {
    fn kind(self) -> IncidentKind {
        if self.lost {
            IncidentKind::Lost
        } else if self.damaged {
            IncidentKind::Damaged
        } else {
            IncidentKind::Forgotten
        }
    }
}

/// Runs one operator call about a card and prints its answer; a refusal is exit 1.
fn run_call(
    global: &GlobalArgs,
    remote: &RemoteArgs,
    card: &str,
    call: OperatorCall,
    render: impl FnOnce(&serde_json::Value) -> String,
) -> anyhow::Result<ExitCode> {
    let Some(answer) = super::operator::call(global, remote, &call)? else {
        return Ok(ExitCode::from(EXIT_FAILURE));
    };
    match answer {
        Err(r) => {
            eprintln!("Card {card}: {r}");
            Ok(ExitCode::from(EXIT_FAILURE))
        }
        Ok(value) => {
            print!("{}", render(&value));
            Ok(ExitCode::from(EXIT_OK))
        }
    }
}

/// `keyfleet cards report CARD --lost|--damaged|--forgotten [--comment TEXT]`.
pub fn report(
    global: &GlobalArgs,
    remote: &RemoteArgs,
    card: &str,
    flag: IncidentFlag,
    comment: String,
) -> anyhow::Result<ExitCode> {
    let kind = flag.kind();
    let call = OperatorCall::ReportIncident {
        card: card.to_string(),
        kind,
        comment,
    };
    run_call(global, remote, card, call, |v| {
        let then = match kind {
            IncidentKind::Lost => {
                "its certificates are revoked (keyCompromise) and a replacement is issued"
            }
            IncidentKind::Damaged => {
                "its certificates are revoked (cessationOfOperation), the card is retired and a \
                 replacement is issued"
            }
            IncidentKind::Forgotten => {
                "its certificates are put on hold (and a temporary card issued if the template \
                 names one) until `keyfleet cards found`"
            }
        };
        format!(
            "Card {card} reported {kind} (status {}): {then} by the next pass.\n",
            v["status"].as_str().unwrap_or("")
        )
    })
}

/// `keyfleet cards found CARD`.
pub fn found(
    global: &GlobalArgs,
    remote: &RemoteArgs,
    card: &str,
    comment: String,
) -> anyhow::Result<ExitCode> {
    let call = OperatorCall::Found {
        card: card.to_string(),
        comment,
    };
    run_call(global, remote, card, call, |_| {
        format!(
            "Card {card} found: its hold is released and its temporary card (if any) ends by \
             the next pass.\n"
        )
    })
}

/// `keyfleet cards retire CARD --found-lost`.
pub fn retire(
    global: &GlobalArgs,
    remote: &RemoteArgs,
    card: &str,
    comment: String,
) -> anyhow::Result<ExitCode> {
    let call = OperatorCall::RetireFoundLost {
        card: card.to_string(),
        comment,
    };
    run_call(global, remote, card, call, |v| {
        format!(
            "Card {card} wiped and back in stock {} as blank.\n",
            v["stock"].as_str().unwrap_or("-")
        )
    })
}

/// `keyfleet cards unblock-code CARD`.
pub fn unblock_code(
    global: &GlobalArgs,
    remote: &RemoteArgs,
    card: &str,
    reason: String,
) -> anyhow::Result<ExitCode> {
    let call = OperatorCall::UnblockCode {
        card: card.to_string(),
        reason,
    };
    run_call(global, remote, card, call, |v| {
        super::approve::outcome_text(v, |r| match r["puk"].as_str() {
            Some(puk) => format!(
                "Unblock code (PUK) of card {card}: {puk}\nIt is released once: give it to the \
                 holder (e.g. `yubico-piv-tool -a unblock-pin`); Keyfleet sets a new PUK at the \
                 card's next contact.\n"
            ),
            None => format!(
                "Unblock code of card {card} written to {}\n",
                r["unblockCodeFile"].as_str().unwrap_or("")
            ),
        })
    })
}

/// `keyfleet cards show CARD [--format json]`.
pub fn show(
    global: &GlobalArgs,
    remote: &RemoteArgs,
    card: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let call = OperatorCall::ShowCard {
        card: card.to_string(),
    };
    run_call(global, remote, card, call, |v| {
        if json {
            return format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default());
        }
        show_text(v)
    })
}

fn show_text(v: &serde_json::Value) -> String {
    use std::fmt::Write;
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let c = &v["card"];
    let mut out = String::new();
    let _ = writeln!(out, "Card      {}", s(&c["id"]));
    let _ = writeln!(out, "type      {}", s(&c["type"]));
    let _ = writeln!(out, "status    {}", s(&c["status"]));
    let _ = writeln!(out, "user      {}", s(&c["user"]));
    let _ = writeln!(out, "template  {}", s(&c["template"]));
    let _ = writeln!(out, "stock     {}", s(&c["stock"]));
    if let Some(i) = v["incident"].as_object() {
        let _ = writeln!(
            out,
            "incident  {} (reported by {} at {}{})",
            s(&i["kind"]),
            s(&i["reportedBy"]),
            s(&i["at"]),
            match i["comment"].as_str() {
                Some(c) if !c.is_empty() => format!(": {c}"),
                _ => String::new(),
            }
        );
    }
    if v["pukReleased"].as_bool() == Some(true) {
        let _ = writeln!(
            out,
            "PUK       released; rotated at the card's next contact"
        );
    }
    let certs = v["certificates"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(out, "certificates ({}):", certs.len());
    for cert in &certs {
        let _ = writeln!(
            out,
            "  {}  {:<11} {}  until {}  {}",
            s(&cert["slot"]),
            s(&cert["status"]),
            s(&cert["serial"]),
            s(&cert["notAfter"]),
            s(&cert["subject"])
        );
    }
    let events = v["incidents"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(out, "incident history ({}):", events.len());
    for e in &events {
        let _ = writeln!(
            out,
            "  {}  {:<18} by {}{}",
            s(&e["at"]),
            s(&e["kind"]),
            s(&e["reportedBy"]),
            match e["comment"].as_str() {
                Some(c) if !c.is_empty() => format!(": {c}"),
                _ => String::new(),
            }
        );
    }
    out
}
