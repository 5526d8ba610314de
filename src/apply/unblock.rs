//! Operator unblock: reset a card's PIN retry counter with the PUK Keyfleet stored at issuance,
//! set a fresh PIN, store it sealed and write a PIN mailer.
//!
//! Works for every card reached through a [`super::CardProvider`] (virtual cards, PIV cards in
//! readers). It is not planned (a blocked PIN is not a desired-state difference): an operator
//! asks for it. Not journalled: the card is changed first and the new PIN stored after; if the
//! process dies in between, the PUK still works and running the unblock again repairs it.
//!
//! The PUK used is replaced right after (a new random one, sealed): see [`rotate_puk`].
//!
//! Offline unblock: [`release_puk`] gives an operator the card's current PUK once, for a holder
//! whose card never meets Keyfleet; the planner then plans `rotate-puk` for its next contact.
//!
//! It does NOT decide who may unblock (roles are the caller's concern).

use zeroize::Zeroizing;

use crate::inventory::{HolderPin, HolderPinCause, PukRelease};
use crate::secrets::{generate_pin, generate_puk};

use super::cards::CardSession;
use super::pin_mailer::{write_pin_mailer, write_unblock_code};
use super::{ApplyError, Context, change_facts, connect, open_secret, seal_secret};

/// What an unblock did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnblockReport {
    /// Tries the PIN had left before (0 when it was blocked).
    pub retries_before: u8,
    /// Where the PIN mailer with the new PIN was written.
    pub pin_mailer: std::path::PathBuf,
    /// Whether the PUK used was replaced by a new one (otherwise rotate-puk is planned).
    pub puk_rotated: bool,
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
    if let Some(s) = ctx.store.card_facts(card)?.suspect {
        return Err(ApplyError::Suspect {
            card: card.to_string(),
            reason: s.reason,
        });
    }
    let mut session = connect(ctx, card)?;
    // The PUK goes only to a card that proves the management key Keyfleet set.
    session.prove(ctx)?;
    let pin = generate_pin(old_len);
    let retries_before = session.unblock(ctx, &puk, &pin)?.unwrap_or(0);
    seal_secret(ctx, &format!("pin/{card}"), &pin)?;
    // Keyfleet knows the card's PIN again: what waited for the holder can run.
    change_facts(ctx, card, |facts| {
        facts.holder_pin = None;
        Ok(())
    })?;
    write_pin_mailer(&ctx.pin_mailer_dir, &user, card, &pin)?;
    // A PUK that was used is rotated while the card is here; if that fails the planner's
    // rotate-puk does it at the next contact.
    let rotated = match rotate_puk(ctx, card, session.as_mut()) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(card = %card, "the PUK used for the unblock is not rotated yet: {e}");
            let at = (ctx.clock)();
            change_facts(ctx, card, |facts| {
                facts.puk_released.get_or_insert(PukRelease {
                    by: "unblock".into(),
                    at,
                });
                Ok(())
            })?;
            false
        }
    };
    Ok(UnblockReport {
        retries_before,
        pin_mailer: ctx.pin_mailer_dir.join(super::pin_mailer_name(&user, card)),
        puk_rotated: rotated,
    })
}

/// Sets a new random PUK on `card` (same length as the stored one, 8 digits when none) with
/// CHANGE REFERENCE DATA and stores it sealed, clearing a PUK release. The new PUK is sealed
/// under `puk-next/CARD` before the card is changed: if the process dies between the change
/// and the record, the next rotation finds it and confirms which the card holds.
pub fn rotate_puk(
    ctx: &Context<'_>,
    card: &str,
    session: &mut dyn CardSession,
) -> Result<(), ApplyError> {
    let current = Zeroizing::new(open_secret(ctx, &format!("puk/{card}"))?.ok_or_else(|| {
        ApplyError::Stale(format!(
            "no PUK is stored for card {card}: it cannot be rotated"
        ))
    })?);
    let staged = open_secret(ctx, &format!("puk-next/{card}"))?.map(Zeroizing::new);
    // The PUK goes only to a card that proves the management key Keyfleet set.
    session.prove(ctx)?;
    let len = u8::try_from(current.len())
        .ok()
        .filter(|l| (6..=8).contains(l))
        .unwrap_or(8);
    let new = match staged {
        // An interrupted rotation: the card holds the staged PUK if the old one is refused.
        Some(staged) => match session.change_puk(&current, &staged) {
            Ok(()) => staged,
            Err(first) => {
                session.change_puk(&staged, &staged).map_err(|_| first)?;
                staged
            }
        },
        None => {
            let new = Zeroizing::new(generate_puk(len));
            seal_secret(ctx, &format!("puk-next/{card}"), &new)?;
            ctx.store.sync()?;
            session.change_puk(&current, &new)?;
            new
        }
    };
    seal_secret(ctx, &format!("puk/{card}"), &new)?;
    ctx.store.remove_secret(&format!("puk-next/{card}"))?;
    change_facts(ctx, card, |facts| {
        facts.puk_released = None;
        Ok(())
    })
}

/// An offline unblock: the card's current PUK, released once to `actor` (the caller has
/// authorised and audits it; the PUK is never logged). Keyfleet then no longer knows the PIN
/// (the holder sets their own with the PUK), and the planner rotates the PUK at the card's
/// next contact. A PUK already released is refused: never the same PUK twice.
pub fn release_puk(
    ctx: &Context<'_>,
    card: &str,
    actor: &str,
) -> Result<Zeroizing<String>, ApplyError> {
    let record = ctx
        .store
        .card(card)?
        .ok_or_else(|| ApplyError::Stale(format!("card {card} is not in the inventory")))?;
    if !record.holds_credential() {
        return Err(ApplyError::Stale(format!(
            "card {card} holds no credential: there is nothing to unblock"
        )));
    }
    let puk = Zeroizing::new(open_secret(ctx, &format!("puk/{card}"))?.ok_or_else(|| {
        ApplyError::Stale(format!(
            "no PUK is stored for card {card}: it cannot be unblocked"
        ))
    })?);
    let now = (ctx.clock)();
    // Checked and marked in one compare-and-swap: two operators asking at once never both
    // get it.
    change_facts(ctx, card, |facts| {
        if let Some(r) = &facts.puk_released {
            return Err(format!(
                "the current PUK of card {card} was already released (to {} at {}); it is \
                 never released twice: a new one is set at the card's next contact",
                r.by,
                crate::views::rfc3339(r.at)
            ));
        }
        facts.puk_released = Some(PukRelease {
            by: actor.into(),
            at: now,
        });
        facts.holder_pin = Some(HolderPin {
            since: now,
            cause: HolderPinCause::HolderReset,
            tries_left: None,
        });
        Ok(())
    })?;
    Ok(puk)
}

/// [`release_puk`], the PUK written to a file for `actor` in the PIN-mailer folder (an approved
/// request: the PUK must not travel in the request's record). Returns the file's path.
pub fn release_puk_to_mailer(
    ctx: &Context<'_>,
    card: &str,
    actor: &str,
) -> Result<std::path::PathBuf, ApplyError> {
    let holder = ctx
        .store
        .card(card)?
        .and_then(|c| c.user)
        .unwrap_or_default();
    let puk = release_puk(ctx, card, actor)?;
    write_unblock_code(&ctx.pin_mailer_dir, actor, &holder, card, &puk)
}
