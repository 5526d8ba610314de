//! A slot's certificate: enrolled at the CA (intent first, so a lost answer is found again,
//! never signed twice), recorded, written to the card, and the slot's older ones superseded.

use time::OffsetDateTime;

use super::ca_ops::{ca, count_ca_time, revoke_all};
use super::slot::{SlotRequest, desired_cert};
use super::{
    ApplyError, CardSession, Context, journal_close, journal_close_recording, journal_note,
    journal_open,
};
use crate::ca::{EnrollRequest, IssuedCertificate};
use crate::desired::DesiredCredential;
use crate::inventory::{CertRecord, CertStatus};
use crate::store::{JournalEntry, JournalState, JournalStep, Recorded};

/// The CA's part of a slot's issuance: the enrolment intent (flushed before the CA is
/// asked), the enrolment, and the certificate's record (not yet installed).
pub(crate) fn enroll_slot(
    ctx: &Context<'_>,
    action_id: &str,
    card: &str,
    cred: &DesiredCredential,
    request: SlotRequest,
) -> Result<CertRecord, ApplyError> {
    let slot = request.slot;
    let want = desired_cert(cred, slot)?;
    let authority = ca(ctx, &want.authority)?;
    let request_id = format!("kf-{}", hex::encode(rand::random::<[u8; 12]>()));
    let mut entry = journal_open(
        ctx,
        action_id,
        JournalStep::Enroll {
            request_id: request_id.clone(),
            ca: want.authority.clone(),
            card: card.to_string(),
            user: cred.user.clone(),
            template: cred.template.clone(),
            name: want.name.clone(),
            slot,
            profile: want.profile.clone(),
            key_algorithm: want.key_algorithm,
            subject: want.subject.to_string(),
            sans: want.sans.clone(),
            revision: want.revision.clone(),
        },
    )?;
    let ca_started = std::time::Instant::now();
    let enrolled = authority.enroll(&EnrollRequest {
        request_id,
        csr_der: request.csr_der,
        profile: want.profile.clone(),
        subject: want.subject.clone(),
        sans: want.sans.clone(),
        validity_secs: want.validity_secs,
    });
    let ca_time = ca_started.elapsed();
    count_ca_time(ca_time);
    tracing::debug!(
        target: "keyfleet::timing",
        card,
        slot = %slot,
        ca_us = ca_time.as_micros() as u64,
        "slot enrolled"
    );
    let issued = match enrolled {
        Ok(i) => i,
        Err(source) => {
            let e = ApplyError::Ca {
                ca: want.authority.clone(),
                source,
            };
            journal_close(ctx, &mut entry, JournalState::Failed, Some(e.to_string()))?;
            return Err(e);
        }
    };
    let record = cert_record(&entry, &issued, (ctx.clock)())?;
    journal_close_recording(
        ctx,
        &mut entry,
        JournalState::Done,
        Some(issued.serial),
        Recorded::Cert(&record),
    )?;
    Ok(record)
}

/// Builds the inventory record of a certificate the CA signed for the enrolment `entry`
/// (its step says what was asked; its id orders the slot's certificates).
pub(crate) fn cert_record(
    entry: &JournalEntry,
    issued: &IssuedCertificate,
    now: OffsetDateTime,
) -> Result<CertRecord, ApplyError> {
    let JournalStep::Enroll {
        request_id,
        ca,
        card,
        user,
        template,
        name,
        slot,
        profile,
        key_algorithm,
        subject,
        sans,
        revision,
    } = &entry.step
    else {
        return Err(ApplyError::Stale(format!(
            "journal entry {} is not an enrolment",
            entry.id
        )));
    };
    Ok(CertRecord {
        serial: issued.serial.clone(),
        user: user.clone(),
        card: card.clone(),
        template: template.clone(),
        name: name.clone(),
        slot: *slot,
        ca: ca.clone(),
        profile: profile.clone(),
        key_algorithm: *key_algorithm,
        subject: subject.clone(),
        sans: sans.clone(),
        not_before: issued.not_before,
        not_after: issued.not_after,
        revision: revision.clone(),
        status: CertStatus::Active,
        installed: false,
        request_id: request_id.clone(),
        enrolment: entry.id,
        updated_at: now,
        pem: issued.pem.clone(),
        key_id: crate::archive::der_key_id(&issued.der),
    })
}

/// Writes a recorded certificate to its card, marks it installed, and supersedes the slot's
/// older live certificates (revoked at the CA as superseded).
pub(crate) fn install(
    ctx: &Context<'_>,
    action_id: &str,
    session: &mut dyn CardSession,
    cert: CertRecord,
) -> Result<(), ApplyError> {
    let note = install_note(ctx, action_id, &cert)?;
    write_installed(ctx, session, &cert)?;
    record_installed(ctx, action_id, cert, note)
}

/// The journal entry of an installation: a note, not a flushed intent, because what a crash
/// interrupts here the record (not installed) already tells, and the next plan installs the
/// certificate again.
pub(crate) fn install_note(
    ctx: &Context<'_>,
    action_id: &str,
    cert: &CertRecord,
) -> Result<JournalEntry, ApplyError> {
    journal_note(
        ctx,
        action_id,
        JournalStep::InstallCert {
            serial: cert.serial.clone(),
            card: cert.card.clone(),
            slot: cert.slot,
        },
    )
}

/// The card's part of an installation: the certificate written to its slot.
pub(crate) fn write_installed(
    ctx: &Context<'_>,
    session: &mut dyn CardSession,
    cert: &CertRecord,
) -> Result<(), ApplyError> {
    let der = cert.der().ok_or_else(|| {
        ApplyError::Stale(format!("certificate {} has no readable PEM", cert.serial))
    })?;
    session.admin_login(ctx, None)?;
    session.write_certificate(cert.slot, &der)?;
    Ok(())
}

/// The record of an installation: the certificate marked installed, its note closed, and
/// the slot's older live certificates superseded.
pub(crate) fn record_installed(
    ctx: &Context<'_>,
    action_id: &str,
    mut cert: CertRecord,
    mut entry: JournalEntry,
) -> Result<(), ApplyError> {
    cert.installed = true;
    cert.updated_at = (ctx.clock)();
    journal_close_recording(
        ctx,
        &mut entry,
        JournalState::Done,
        None,
        Recorded::Cert(&cert),
    )?;
    // The slot holds a certificate again.
    let mut facts = ctx.store.card_facts(&cert.card)?;
    if facts.emptied_slots.remove(&cert.slot).is_some() {
        ctx.store.put_card_facts(&cert.card, &facts)?;
    }
    let older: Vec<String> = ctx
        .store
        .certs_of_card(&cert.card)?
        .iter()
        .filter(|c| {
            c.card == cert.card && c.slot == cert.slot && c.serial != cert.serial && c.is_live()
        })
        .map(|c| c.serial.clone())
        .collect();
    revoke_all(ctx, action_id, &older, "superseded")
}
