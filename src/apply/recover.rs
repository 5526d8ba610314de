//! Recovery: resolve journal entries a crash left open, before anything new is planned.
//!
//! Each open entry is finished (the effect is idempotent: redo it) or abandoned (the effect
//! never happened). An open enrolment is asked of the CA by its request id, so a certificate
//! the CA signed is always recorded and never signed twice.

use crate::store::JournalState;
use crate::store::JournalStep;

use super::{
    ApplyError, Context, ca, ca_status, cert_record, connect, journal_close, personalize, wipe,
};
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

/// Resolves every open journal entry. Entries that cannot be resolved now stay open and are
/// reported; everything else proceeds.
pub fn recover(ctx: &Context<'_>) -> Result<RecoveryReport, ApplyError> {
    let mut report = RecoveryReport::default();
    for mut entry in ctx.store.open_intents()? {
        let id = entry.action_id.clone();
        let result: Result<JournalState, ApplyError> = match &entry.step {
            JournalStep::CreateCard { .. } => {
                // The card file may exist without a record: recorded as blank, it returns to
                // its stock; a card we cannot identify is left to the provider.
                Ok(JournalState::Abandoned)
            }
            JournalStep::Personalize {
                card,
                user,
                sealed_pin,
                sealed_puk,
                management_key,
            } => (|| {
                let open = |aad: &[u8], hexed: &str| -> Result<String, ApplyError> {
                    let sealed = hex::decode(hexed).unwrap_or_default();
                    let plain =
                        ctx.master
                            .open(aad, &sealed)
                            .map_err(|source| ApplyError::Secret {
                                name: format!("journal/{}", entry.id),
                                source,
                            })?;
                    Ok(String::from_utf8_lossy(&plain).into_owned())
                };
                let pin = open(b"journal-pin", sealed_pin)?;
                let puk = open(b"journal-puk", sealed_puk)?;
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
                            let record = cert_record(
                                &entry.step,
                                entry.id,
                                issued.serial.clone(),
                                issued.pem,
                                issued.not_before,
                                issued.not_after,
                                (ctx.clock)(),
                            )
                            .ok_or_else(|| ApplyError::Stale("not an enrolment".into()))?;
                            ctx.store.put_cert(&record)?;
                            report.recovered_certificates.push(issued.serial);
                        }
                        Ok(JournalState::Done)
                    }
                    None => Ok(JournalState::Abandoned),
                }
            })(),
            // The certificate is recorded as not installed: the next plan installs it.
            JournalStep::InstallCert { .. } => Ok(JournalState::Abandoned),
            JournalStep::CaStatus { serial, op, .. } => {
                ca_status(ctx, &id, serial, op.clone()).map(|()| JournalState::Done)
            }
            JournalStep::WipeCard { card } => {
                if ctx.cards.exists(card) {
                    wipe(ctx, card).map(|()| JournalState::Done)
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
                journal_close(ctx, &mut entry, state, Some("resolved by recovery".into()))?;
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
            })?;
            report.finished += 1;
        }
    }
    // Records written and entries closed by recovery: durable before the plan that follows.
    ctx.store.sync()?;
    Ok(report)
}
