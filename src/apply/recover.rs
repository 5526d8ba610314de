//! Recovery: resolve journal entries a crash left open, before anything new is planned.
//!
//! Each open entry is finished (the effect is idempotent: redo it) or abandoned (the effect
//! never happened). An open enrolment is asked of the CA by its request id, so a certificate
//! the CA signed is always recorded and never signed twice.

use zeroize::Zeroizing;

use crate::secrets::{MasterKey, SecretError};
use crate::store::{JournalEntry, JournalSecret, JournalState, JournalStep, Recorded};

use super::ca_ops::{ca, ca_status};
use super::certificate::cert_record;
use super::issuance::personalize;
use super::slot::note_emptied_slot;
use super::{ApplyError, Context, connect, journal_close, journal_close_recording, wipe};
use crate::inventory::{CardRecord, CardStatus};

/// What recovery did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Entries finished.
    pub finished: usize,
    /// Entries abandoned (the effect never happened).
    pub abandoned: usize,
    /// Certificates the CA had signed that are now recorded.
    pub recovered_certificates: Vec<String>,
    /// Entries that could not be resolved now (e.g. the card is absent), with why.
    pub unresolved: Vec<String>,
}

/// The PIN and PUK an open personalisation entry holds sealed, opened with the associated
/// data the entry says they were sealed under: bound to the card and the entry, or (an entry
/// an older Keyfleet left open) the fixed tag. A blob moved from another entry or card does
/// not open.
fn journal_secrets(
    master: &MasterKey,
    entry: &JournalEntry,
) -> Result<(Zeroizing<String>, Zeroizing<String>), ApplyError> {
    let JournalStep::Personalize {
        card,
        sealed_pin,
        sealed_puk,
        sealed_for,
        ..
    } = &entry.step
    else {
        return Err(ApplyError::Stale(format!(
            "journal entry {} is not a personalisation",
            entry.id
        )));
    };
    let open = |secret: JournalSecret, hexed: &Option<String>| {
        let name = format!("journal/{}/{}", entry.id, secret.name());
        let Some(hexed) = hexed else {
            return Err(ApplyError::JournalSecretGone { entry: entry.id });
        };
        let sealed = hex::decode(hexed).map_err(|_| ApplyError::Secret {
            name: name.clone(),
            source: SecretError::SealedFormat,
        })?;
        let plain = master
            .open(&sealed_for.aad(secret, card, entry.id), &sealed)
            .map_err(|source| ApplyError::Secret { name, source })?;
        Ok(Zeroizing::new(String::from_utf8_lossy(&plain).into_owned()))
    };
    Ok((
        open(JournalSecret::Pin, sealed_pin)?,
        open(JournalSecret::Puk, sealed_puk)?,
    ))
}

/// Resolves every open journal entry. Entries that cannot be resolved now stay open and are
/// reported; everything else proceeds.
pub fn recover(ctx: &Context<'_>) -> Result<RecoveryReport, ApplyError> {
    let mut report = RecoveryReport::default();
    // Keys an older Keyfleet sealed under the master key move into the archive (under the
    // archive key) before anything else; the archive key is loaded only if there are some.
    if !ctx.store.secret_names("archive/")?.is_empty() {
        let archive_key = ctx.archive.key()?;
        let moved = crate::archive::migrate(ctx.store, ctx.master, &archive_key, (ctx.clock)())?;
        if moved > 0 {
            tracing::info!(moved, "archived keys moved under the archive key");
        }
    }
    for mut entry in ctx.store.open_intents()? {
        let id = entry.action_id.clone();
        // A certificate the CA signed that the entry's closing records.
        let mut recorded = None;
        let mut wiped = None;
        let result: Result<JournalState, ApplyError> = match &entry.step {
            JournalStep::CreateCard { .. } => {
                // The card file may exist without a record: recorded as blank, it returns to
                // its stock; a card we cannot identify is left to the provider.
                Ok(JournalState::Abandoned)
            }
            JournalStep::Personalize {
                card,
                user,
                management_key,
                ..
            } => (|| {
                let (pin, puk) = journal_secrets(ctx.master, &entry)?;
                let mut session = connect(ctx, card)?;
                personalize(
                    ctx,
                    session.as_mut(),
                    card,
                    user,
                    &pin,
                    &puk,
                    *management_key,
                    false,
                    None,
                )?;
                Ok(JournalState::Done)
            })(),
            JournalStep::Enroll {
                request_id,
                ca: name,
                ..
            } => (|| {
                let authority = ca(ctx, name)?;
                match authority
                    .find_by_request_id(request_id)
                    .map_err(|source| ApplyError::Ca {
                        ca: name.clone(),
                        source,
                    })? {
                    Some(issued) => {
                        if ctx.store.cert(&issued.serial)?.is_none() {
                            let record = cert_record(&entry, &issued, (ctx.clock)())?;
                            report.recovered_certificates.push(issued.serial);
                            recorded = Some(record);
                        }
                        Ok(JournalState::Done)
                    }
                    None => Ok(JournalState::Abandoned),
                }
            })(),
            JournalStep::ReplaceKey {
                card,
                slot,
                replaced,
            } => (|| {
                // The slot's key was being replaced: a certificate still in it that is one of
                // those it replaced does not match the key, and is removed (the plan issues
                // the slot again or installs its recorded certificate). Any other (none, or
                // the new one) is left.
                // Either way, a slot left without a certificate is issued again (the planner
                // learns it from the card's facts), unless a newer one is recorded for it.
                let mut session = connect(ctx, card)?;
                let Some(der) = session.read_certificate(*slot)? else {
                    note_emptied_slot(ctx, card, *slot, replaced)?;
                    return Ok(JournalState::Done);
                };
                for serial in replaced {
                    let old = ctx.store.cert(serial)?;
                    if old.and_then(|c| c.der()).as_deref() == Some(der.as_slice()) {
                        session.admin_login(ctx, None)?;
                        session.delete_certificate(*slot)?;
                        note_emptied_slot(ctx, card, *slot, replaced)?;
                        break;
                    }
                }
                Ok(JournalState::Done)
            })(),
            // The certificate is recorded as not installed: the next plan installs it.
            JournalStep::InstallCert { .. } => Ok(JournalState::Abandoned),
            JournalStep::CaStatus { serial, op, .. } => {
                ca_status(ctx, &id, serial, op.clone()).map(|()| JournalState::Done)
            }
            JournalStep::WipeCard { card } => {
                if ctx.cards.exists(card) {
                    wipe(ctx, card).map(|blank| {
                        wiped = Some(blank);
                        JournalState::Done
                    })
                } else {
                    Ok(JournalState::Abandoned)
                }
            }
        };
        match result {
            Ok(state) => {
                if state == JournalState::Done {
                    report.finished += 1;
                } else {
                    report.abandoned += 1;
                }
                let message = Some("resolved by recovery".into());
                match &recorded {
                    Some(cert) => journal_close_recording(
                        ctx,
                        &mut entry,
                        state,
                        message,
                        Recorded::Cert(cert),
                    )?,
                    None => match &wiped {
                        Some(card) => {
                            journal_close_recording(
                                ctx,
                                &mut entry,
                                state,
                                message,
                                Recorded::Card(card),
                            )?;
                            super::forget_card(ctx, &card.id)?;
                        }
                        None => journal_close(ctx, &mut entry, state, message)?,
                    },
                }
            }
            Err(e) => report
                .unresolved
                .push(format!("journal entry {} ({id}): {e}", entry.id)),
        }
    }
    // Virtual card files that no record knows (a creation interrupted after the file was
    // written) go back to stock as blank cards.
    let known = ctx.store.inventory()?;
    for card in ctx.cards.present()? {
        if card.starts_with("vc-") && !known.cards.contains_key(&card) {
            let now = (ctx.clock)();
            ctx.store.put_card(&CardRecord {
                id: card,
                card_type: crate::policy::model::CardType::Virtual,
                stock: ctx
                    .desired
                    .stocks
                    .iter()
                    .find(|s| s.is_virtual)
                    .map(|s| s.name.clone()),
                user: None,
                template: None,
                status: CardStatus::Blank,
                created_at: now,
                updated_at: now,
                temporary: false,
            })?;
            report.finished += 1;
        }
    }
    // Records written and entries closed by recovery: durable before the plan that follows.
    ctx.store.sync()?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::ManagementKeyAlgorithm;
    use crate::store::SealBinding;

    fn entry(
        id: u64,
        card: &str,
        pin: Vec<u8>,
        puk: Vec<u8>,
        binding: SealBinding,
    ) -> JournalEntry {
        JournalEntry {
            id,
            action_id: "issue:alice:staff".into(),
            step: JournalStep::Personalize {
                card: card.into(),
                user: "alice".into(),
                sealed_pin: Some(hex::encode(pin)),
                sealed_puk: Some(hex::encode(puk)),
                sealed_for: binding,
                management_key: ManagementKeyAlgorithm::Aes192,
            },
            state: JournalState::Open,
            opened_at: time::OffsetDateTime::UNIX_EPOCH,
            closed_at: None,
            message: None,
        }
    }

    fn sealed(
        master: &MasterKey,
        b: SealBinding,
        s: JournalSecret,
        card: &str,
        id: u64,
        v: &str,
    ) -> Vec<u8> {
        master.seal(&b.aad(s, card, id), v.as_bytes())
    }

    #[test]
    fn a_sealed_pin_opens_only_in_the_entry_and_for_the_card_it_was_sealed_for() {
        let master = MasterKey::from_bytes([7; 32]);
        let b = SealBinding::CardAndEntry;
        let pin = sealed(&master, b, JournalSecret::Pin, "vc-1", 5, "123987");
        let puk = sealed(&master, b, JournalSecret::Puk, "vc-1", 5, "87654321");
        let (p, k) =
            journal_secrets(&master, &entry(5, "vc-1", pin.clone(), puk.clone(), b)).unwrap();
        assert_eq!((p.as_str(), k.as_str()), ("123987", "87654321"));
        // Moved to another entry, or to an entry of another card: refused.
        for moved in [
            entry(6, "vc-1", pin.clone(), puk.clone(), b),
            entry(5, "vc-2", pin.clone(), puk.clone(), b),
            // The PIN's blob in the PUK's place.
            entry(5, "vc-1", pin.clone(), pin.clone(), b),
            // Claimed to be sealed the old way.
            entry(5, "vc-1", pin, puk, SealBinding::FixedTag),
        ] {
            assert!(
                matches!(
                    journal_secrets(&master, &moved),
                    Err(ApplyError::Secret { .. })
                ),
                "{moved:?} opened"
            );
        }
    }

    #[test]
    fn an_entry_an_older_keyfleet_left_open_is_still_read_and_one_without_secrets_is_an_error() {
        let master = MasterKey::from_bytes([7; 32]);
        let pin = master.seal(b"journal-pin", b"123987");
        let puk = master.seal(b"journal-puk", b"87654321");
        let old = entry(9, "vc-3", pin, puk, SealBinding::FixedTag);
        let (p, k) = journal_secrets(&master, &old).unwrap();
        assert_eq!((p.as_str(), k.as_str()), ("123987", "87654321"));

        let mut gone = old;
        gone.step.drop_secrets();
        assert!(matches!(
            journal_secrets(&master, &gone),
            Err(ApplyError::JournalSecretGone { entry: 9 })
        ));
    }
}
