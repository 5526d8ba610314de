//! Issuance: bind a blank card, personalise it, and issue its slots pipelined (the card
//! makes keys and CSRs while a thread beside it has the CA sign them and writes the
//! records), then install the certificates and supersede the slots' older ones.
//! A slot's key and CSR are [`super::slot`]'s, its enrolment, record and installation
//! [`super::certificate`]'s.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::certificate::{enroll_slot, install_note, record_installed, write_installed};
use super::pin_mailer::write_pin_mailer;
use super::slot::{remove_stale_certificate, slot_request};
use super::{
    ApplyError, CardSession, Context, connect, credential, journal_close, journal_close_recording,
    journal_open, journal_open_with, stage_secret,
};
use crate::desired::DesiredCredential;
use crate::inventory::{CardRecord, CardStatus};
use crate::plan::Action;
use crate::policy::model::{CardType, ManagementKeyAlgorithm, Slot};
use crate::secrets::{generate_pin, generate_puk};
use crate::store::{JournalEntry, JournalSecret, JournalState, JournalStep, Recorded, SealBinding};

pub(crate) fn issue(
    ctx: &Context<'_>,
    action: &Action,
    created: &mut BTreeMap<String, String>,
) -> Result<Vec<String>, ApplyError> {
    let cred = credential(ctx, action)?;
    let now = (ctx.clock)();
    let card = match &action.card {
        Some(id) => id.clone(),
        None => {
            if cred.card_type != CardType::Virtual {
                return Err(ApplyError::Stale(
                    "only virtual cards are created on demand".into(),
                ));
            }
            // Journal first: an interrupted creation leaves a file recovery returns to stock.
            let provisional = format!("pending:{}", action.id());
            let mut entry = journal_open(
                ctx,
                &action.id(),
                JournalStep::CreateCard {
                    card: provisional,
                    stock: action.stock.clone(),
                    card_type: cred.card_type,
                },
            )?;
            let id = ctx.cards.create_virtual()?;
            let record = blank_card(&id, action, cred, now);
            journal_close_recording(
                ctx,
                &mut entry,
                JournalState::Done,
                Some(id.clone()),
                Recorded::Card(&record),
            )?;
            id
        }
    };
    created.insert(
        format!(
            "new:{}:{}",
            action.user,
            action.template.clone().unwrap_or_default()
        ),
        card.clone(),
    );
    let pin = generate_pin(cred.pin_length);
    let puk = generate_puk(cred.puk_length);
    let personalize_started = std::time::Instant::now();
    let action_id = action.id();
    // The PIN and PUK are sealed for recovery, bound to the card and to the entry.
    let step = |entry: u64| {
        let binding = SealBinding::CardAndEntry;
        let seal = |secret: JournalSecret, value: &str| {
            hex::encode(
                ctx.master
                    .seal(&binding.aad(secret, &card, entry), value.as_bytes()),
            )
        };
        JournalStep::Personalize {
            card: card.clone(),
            user: cred.user.clone(),
            sealed_pin: Some(seal(JournalSecret::Pin, &pin)),
            sealed_puk: Some(seal(JournalSecret::Puk, &puk)),
            sealed_for: binding,
            management_key: cred.management_key.algorithm,
        }
    };
    // One thread beside the card's for the whole issuance: the card, the slow part, waits
    // for no flush, no file and no CA call it can go on without. Not for a virtual card: its
    // time is this process's own work too, so a second thread would only compete with it
    // (and cost a malloc arena per worker, which a controller issuing hundreds of virtual
    // cards at once feels in its memory).
    std::thread::scope(|scope| {
        let beside = if cred.card_type == CardType::Virtual {
            Beside::inline()
        } else {
            Beside::start(scope)
        };
        // The binding and the intent are written (and flushed) while the card is being
        // connected to: connecting changes nothing on the card, and nothing below runs
        // before both are done.
        let intent = beside.run(|| {
            bind(ctx, action, cred, &card, now)?;
            journal_open_with(ctx, &action_id, step)
        });
        let session = connect(ctx, &card);
        let mut entry = beside.wait(intent)?;
        let mut session = match session {
            Ok(session) => session,
            Err(e) => {
                // Nothing happened to the card: the intent must not wait for it in recovery,
                // and the card goes back to its stock (bound, it would look issued without a
                // PIN, and its slots would wait for a holder who never got one).
                if let Some(mut record) = ctx.store.card(&card)? {
                    record.user = None;
                    record.template = None;
                    record.status = CardStatus::Blank;
                    record.updated_at = now;
                    ctx.store.put_card(&record)?;
                }
                journal_close(
                    ctx,
                    &mut entry,
                    JournalState::Abandoned,
                    Some(e.to_string()),
                )?;
                return Err(e);
            }
        };
        personalize(
            ctx,
            session.as_mut(),
            &card,
            &cred.user,
            &pin,
            &puk,
            cred.management_key.algorithm,
            true,
            Some(&beside),
        )?;
        journal_close(ctx, &mut entry, JournalState::Done, None)?;
        tracing::debug!(
            target: "keyfleet::timing",
            card,
            personalize_us = personalize_started.elapsed().as_micros() as u64,
            "card personalised"
        );
        issue_slots(
            ctx,
            &beside,
            &action_id,
            session,
            &card,
            cred,
            &action.slots,
        )
    })
}

/// A thread beside the card's, for the work of an issuance the card need not wait for
/// (flushes, the PIN mailer, enrolments, records). Jobs run one at a time, in the order
/// given; each answers through its own channel.
pub(crate) struct Beside<'scope> {
    /// `None`: no thread, each job runs when it is given (nothing to overlap it with).
    jobs: Option<std::sync::mpsc::Sender<Box<dyn FnOnce() + Send + 'scope>>>,
}

impl<'scope> Beside<'scope> {
    pub(crate) fn start<'env>(scope: &'scope std::thread::Scope<'scope, 'env>) -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send + 'scope>>();
        scope.spawn(move || {
            for job in queue {
                job();
            }
        });
        Beside { jobs: Some(jobs) }
    }

    /// Runs every job in place, when it is given.
    pub(crate) fn inline() -> Self {
        Beside { jobs: None }
    }

    /// Queues `job`; its result comes through the returned channel.
    pub(crate) fn run<T: Send + 'scope>(
        &self,
        job: impl FnOnce() -> Result<T, ApplyError> + Send + 'scope,
    ) -> std::sync::mpsc::Receiver<Result<T, ApplyError>> {
        let (answer, result) = std::sync::mpsc::sync_channel(1);
        let job: Box<dyn FnOnce() + Send + 'scope> = Box::new(move || {
            let _ = answer.send(job());
        });
        match &self.jobs {
            Some(jobs) => {
                if let Err(std::sync::mpsc::SendError(job)) = jobs.send(job) {
                    // The thread is gone (a job panicked, and the scope reports it).
                    job();
                }
            }
            None => job(),
        }
        result
    }

    /// The result of a queued job.
    pub(crate) fn wait<T>(
        &self,
        result: std::sync::mpsc::Receiver<Result<T, ApplyError>>,
    ) -> Result<T, ApplyError> {
        result.recv().unwrap_or_else(|_| {
            Err(ApplyError::Stale(
                "the issuance's bookkeeping thread stopped".into(),
            ))
        })
    }
}

/// The record of a blank card `id` of the action's stock, as first seen at `now`.
fn blank_card(
    id: &str,
    action: &Action,
    cred: &DesiredCredential,
    now: OffsetDateTime,
) -> CardRecord {
    CardRecord {
        id: id.to_string(),
        card_type: cred.card_type,
        stock: action.stock.clone(),
        user: None,
        template: None,
        status: CardStatus::Blank,
        created_at: now,
        updated_at: now,
        temporary: false,
    }
}

/// Binds a blank card to the credential: from here on the card is the user's, even if the
/// issuance is interrupted.
pub(crate) fn bind(
    ctx: &Context<'_>,
    action: &Action,
    cred: &DesiredCredential,
    card: &str,
    now: OffsetDateTime,
) -> Result<(), ApplyError> {
    let mut record = match ctx.store.card(card)? {
        Some(record) => record,
        None => blank_card(card, action, cred, now),
    };
    if record.status != CardStatus::Blank {
        return Err(ApplyError::Stale(format!("card {card} is not blank")));
    }
    record.user = Some(cred.user.clone());
    record.template = Some(cred.template.clone());
    record.status = CardStatus::Active;
    record.temporary = action.reason.code == crate::plan::ReasonCode::TemporaryForForgotten;
    record.updated_at = now;
    ctx.store.put_card(&record)?;
    Ok(())
}

/// Issues the certificates of `slots`, pipelined: the card makes each slot's key and CSR
/// while the thread `beside` it has the CA sign the previous one (journal intent,
/// enrolment, record), and the certificates are installed once every CSR is made, in slot
/// order, their records written beside the card as well. The
/// card, the slow part, waits for neither the CA nor the journal's flushes, except for a
/// certificate not yet signed when its turn to be installed comes.
///
/// A failure stops the slots after it: the card's first error, or the CA's (the card then
/// makes no more keys). Enrolments already sent finish and are recorded; a certificate
/// recorded but not installed is installed by the next plan. Returns the new serials.
pub(crate) fn issue_slots<'s>(
    ctx: &'s Context<'_>,
    beside: &Beside<'s>,
    action_id: &'s str,
    session: Box<dyn CardSession>,
    card: &'s str,
    cred: &'s DesiredCredential,
    slots: &[Slot],
) -> Result<Vec<String>, ApplyError> {
    let mut session = Some(session);
    let mut enrolments = Vec::with_capacity(slots.len());
    let mut card_error = None;
    // Set by a failed enrolment: the card makes no more keys, the CA gets no more CSRs.
    let ca_failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for slot in slots {
        if ca_failed.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        let request = match session.take() {
            Some(s) => Ok(s),
            None => connect(ctx, card),
        }
        .and_then(|mut current| slot_request(ctx, current.as_mut(), action_id, card, cred, *slot));
        match request {
            Ok((request, key_entry)) => {
                let card_time = request.card_time;
                let failed = ca_failed.clone();
                let enrolled = beside.run(move || {
                    if failed.load(std::sync::atomic::Ordering::SeqCst) {
                        return Err(ApplyError::Stale("an earlier slot failed".into()));
                    }
                    let enrolled = enroll_slot(ctx, action_id, card, cred, request)
                        .and_then(|record| Ok((install_note(ctx, action_id, &record)?, record)));
                    if enrolled.is_err() {
                        failed.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    enrolled.map(|(note, record)| (record, note))
                });
                enrolments.push((enrolled, card_time, *slot, key_entry));
            }
            Err(e) => {
                card_error = Some(e);
                break;
            }
        }
    }
    drop(session);

    // The certificates, in slot order, as their enrolments end. A failure stops the slots
    // after it; what was enrolled stays recorded (not installed) for the next plan.
    let mut serials = Vec::with_capacity(slots.len());
    let mut records = Vec::with_capacity(slots.len());
    let mut first_error = card_error;
    // Unlike one slot after the other, a card failing at slot k leaves the slots before it
    // signed and recorded but not installed (the next plan installs them).
    // A slot whose new key gets no certificate loses the stale one it holds.
    let stale = |slot: Slot, key_entry: &mut JournalEntry| match connect(ctx, card) {
        Ok(mut s) => remove_stale_certificate(ctx, s.as_mut(), card, slot, key_entry),
        // The card is gone: the open entry has recovery remove it.
        Err(e) => {
            tracing::warn!(card, slot = %slot, "cannot remove the stale certificate now (recovery will): {e}");
            Ok(())
        }
    };
    for (enrolled, card_time, slot, mut key_entry) in enrolments {
        let (record, mut note) = match beside.wait(enrolled) {
            Ok(r) => r,
            Err(e) => {
                first_error.get_or_insert(e);
                stale(slot, &mut key_entry)?;
                continue;
            }
        };
        if let Some(e) = &first_error {
            // Not written: the installation's note says so (the record stays not installed).
            let why = format!("not installed: {e}");
            journal_close(ctx, &mut note, JournalState::Abandoned, Some(why))?;
            stale(slot, &mut key_entry)?;
            continue;
        }
        let install_started = std::time::Instant::now();
        let written =
            connect(ctx, card).and_then(|mut s| write_installed(ctx, s.as_mut(), &record));
        if let Err(e) = written {
            journal_close(ctx, &mut note, JournalState::Failed, Some(e.to_string()))?;
            first_error = Some(e);
            stale(slot, &mut key_entry)?;
            continue;
        }
        // The slot's key has its certificate.
        journal_close(ctx, &mut key_entry, JournalState::Done, None)?;
        // Where an issuance spends its time (KEYFLEET_LOG=keyfleet::timing=debug): the card's
        // key generation and CSR signature, and the certificate write.
        tracing::debug!(
            target: "keyfleet::timing",
            card,
            slot = %slot,
            card_us = card_time.as_micros() as u64,
            install_us = install_started.elapsed().as_micros() as u64,
            "slot issued"
        );
        serials.push(record.serial.clone());
        records.push(beside.run(move || record_installed(ctx, action_id, record, note)));
    }
    for recorded in records {
        if let Err(e) = beside.wait(recorded) {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(serials),
    }
}

/// Sets the management key, PIN and PUK of a card and writes the PIN mailer. Re-entrant:
/// recovery runs it again with the same PIN and PUK after an interruption.
#[allow(clippy::too_many_arguments)]
pub(crate) fn personalize(
    ctx: &Context<'_>,
    session: &mut dyn CardSession,
    card: &str,
    user: &str,
    pin: &str,
    puk: &str,
    mgmt_alg: ManagementKeyAlgorithm,
    fresh: bool,
    beside: Option<&Beside<'_>>,
) -> Result<(), ApplyError> {
    // The mailer must be on disk before the PIN changes, so that a crash in between leaves a
    // mailer with the PIN that recovery then sets. Beside the card, it is written (and
    // synced) while the card takes its management key.
    match beside {
        Some(beside) => {
            let job = (
                ctx.pin_mailer_dir.clone(),
                user.to_string(),
                card.to_string(),
                pin.to_string(),
            );
            let mailer = beside.run(move || {
                let (dir, user, card, pin) = job;
                write_pin_mailer(&dir, &user, &card, &pin)
            });
            let prepared = session.prepare(ctx, user, mgmt_alg, fresh);
            let written = beside.wait(mailer);
            prepared.and(written)?;
        }
        None => {
            session.prepare(ctx, user, mgmt_alg, fresh)?;
            write_pin_mailer(&ctx.pin_mailer_dir, user, card, pin)?;
        }
    }
    // Staged, not flushed: until the action's end makes them durable, the open intent holds
    // them sealed and recovery stages them again.
    stage_secret(ctx, &format!("pin/{card}"), pin)?;
    stage_secret(ctx, &format!("puk/{card}"), puk)?;
    session.set_pins(ctx, pin, puk, fresh)
}
