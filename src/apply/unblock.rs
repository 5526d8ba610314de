//! Operator unblock: reset a card's PIN retry counter with the PUK Keyfleet stored at issuance,
//! set a fresh PIN, store it sealed and write a PIN mailer.
//!
//! Works for every card reached through a [`super::CardProvider`] (virtual cards, PIV cards in
//! readers). It is not planned (a blocked PIN is not a desired-state difference): an operator
//! asks for it. Not journalled: the card is changed first and the new PIN stored after; if the
//! process dies in between, the PUK still works and running the unblock again repairs it.
//!
//! It does NOT decide who may unblock (roles are the caller's concern) and never shows the PUK.

use crate::secrets::generate_pin;

use super::pin_mailer::write_pin_mailer;
use super::{ApplyError, Context, connect, open_secret, seal_secret};

/// What an unblock did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnblockReport {
    /// Tries the PIN had left before (0 when it was blocked).
    pub retries_before: u8,
    /// Where the PIN mailer with the new PIN was written.
    pub pin_mailer: std::path::PathBuf,
}

/// Unblocks `card` with its stored PUK and gives it a fresh PIN of the same length as the
/// stored one (6 digits when none is stored). Fails if Keyfleet has no PUK for the card.
pub fn unblock(ctx: &Context<'_>, card: &str) -> Result<UnblockReport, ApplyError> {
    let record = ctx
        .store
        .card(card)?
        .ok_or_else(|| ApplyError::Stale(format!("card {card} is not in the inventory")))?;
    let user = record
        .user
        .ok_or_else(|| ApplyError::Stale(format!("card {card} is bound to nobody")))?;
    let puk = open_secret(ctx, &format!("puk/{card}"))?.ok_or_else(|| {
        ApplyError::Stale(format!(
            "no PUK is stored for card {card}: it cannot be unblocked"
        ))
    })?;
    let old_len = open_secret(ctx, &format!("pin/{card}"))?
        .map(|p| p.len())
        .and_then(|l| u8::try_from(l).ok())
        .filter(|l| (6..=8).contains(l))
        .unwrap_or(6);
    let mut facts = ctx.store.card_facts(card)?;
    if let Some(s) = &facts.suspect {
        return Err(ApplyError::Suspect {
            card: card.to_string(),
            reason: s.reason.clone(),
        });
    }
    let mut session = connect(ctx, card)?;
    // The PUK goes only to a card that proves the management key Keyfleet set.
    session.prove(ctx)?;
    let pin = generate_pin(old_len);
    let retries_before = session.unblock(ctx, &puk, &pin)?.unwrap_or(0);
    seal_secret(ctx, &format!("pin/{card}"), &pin)?;
    // Keyfleet knows the card's PIN again: what waited for the holder can run.
    facts.holder_pin = None;
    ctx.store.put_card_facts(card, &facts)?;
    write_pin_mailer(&ctx.pin_mailer_dir, &user, card, &pin)?;
    Ok(UnblockReport {
        retries_before,
        pin_mailer: ctx.pin_mailer_dir.join(super::pin_mailer_name(&user, card)),
    })
}
