//! Key recovery, once a `recover-key` request has its approvals: the user's archived keys
//! (one, by certificate serial, or all that have a certificate) opened with the archive key
//! and written as a PKCS#12 file under a fresh one-time password. The password goes to the
//! requester's file in the PIN-mailer folder (0600 in a 0700 folder) and nowhere else: it is
//! never stored, logged or put in the request. The caller authorises and audits.

use std::path::{Path, PathBuf};

use super::{ApplyError, Context};
use crate::archive::{self, pkcs12};

/// Where recovered keys go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A PKCS#12 file (absolute; must not exist).
    Pkcs12(PathBuf),
    /// The retired key slots of this card of the owner's (present).
    Card(String),
}

/// What to recover, and where to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecovery {
    /// Whose keys.
    pub user: String,
    /// Only the key of this certificate (upper-case hex); all when `None`.
    pub serial: Option<String>,
    /// Where to.
    pub destination: Destination,
    /// Who asked (the password file is theirs).
    pub requester: String,
}

/// Recovers the keys; returns what to record: the serials and the file and password file, or
/// the card (no secret).
pub fn recover_key(ctx: &Context<'_>, r: &KeyRecovery) -> Result<serde_json::Value, ApplyError> {
    let path = match &r.destination {
        Destination::Card(card) => return to_card(ctx, r, card),
        Destination::Pkcs12(path) => path,
    };
    if !path.is_absolute() {
        return Err(ApplyError::Stale(format!(
            "the PKCS#12 file {} must be an absolute path on the controller's machine",
            path.display()
        )));
    }
    let records = archive::records(ctx.store)?;
    let inventory = ctx.store.inventory()?;
    let joined = archive::with_certificates(&records, &inventory);
    let chosen: Vec<_> = joined
        .into_iter()
        .filter(|(rec, _)| rec.user == r.user)
        .filter_map(|(rec, cert)| cert.map(|c| (rec, c)))
        .filter(|(_, c)| {
            r.serial
                .as_deref()
                .is_none_or(|s| c.serial.eq_ignore_ascii_case(s))
        })
        .collect();
    if chosen.is_empty() {
        return Err(ApplyError::Stale(match &r.serial {
            Some(s) => format!("no archived key of {} has certificate {s}", r.user),
            None => format!("no archived key of {} has a certificate", r.user),
        }));
    }
    let archive_key = ctx.archive.key()?;
    let mut entries = Vec::with_capacity(chosen.len());
    for (rec, cert) in &chosen {
        let pkcs8 = archive::open_key(&archive_key, rec)?;
        let certificate = cert.der().ok_or_else(|| {
            ApplyError::Stale(format!("certificate {} does not decode", cert.serial))
        })?;
        entries.push(pkcs12::Entry {
            name: format!("{} {} {}", r.user, rec.slot.hex(), cert.serial),
            pkcs8,
            certificate,
        });
    }
    let password = pkcs12::one_time_password();
    let bytes = pkcs12::encode(&entries, &password).map_err(recovery_error)?;
    pkcs12::write_new(path, &bytes).map_err(recovery_error)?;
    let serials: Vec<&str> = chosen.iter().map(|(_, c)| c.serial.as_str()).collect();
    let password_file = write_password(
        &ctx.pin_mailer_dir,
        &r.requester,
        &r.user,
        path,
        &serials,
        &password,
    )?;
    Ok(serde_json::json!({
        "user": r.user,
        "serials": serials,
        "pkcs12": path.display().to_string(),
        "passwordFile": password_file.display().to_string(),
    }))
}

/// The chosen keys (as for a PKCS#12 file) into the retired slots of `card`, which must be the
/// owner's: recorded as recovered onto it, so the key history keeps them there beside the
/// newest previous keys.
fn to_card(
    ctx: &Context<'_>,
    r: &KeyRecovery,
    card: &str,
) -> Result<serde_json::Value, ApplyError> {
    let record = ctx
        .store
        .card(card)?
        .ok_or_else(|| ApplyError::Stale(format!("card {card} is not in the inventory")))?;
    if record.user.as_deref() != Some(r.user.as_str()) || !record.holds_credential() {
        return Err(ApplyError::Stale(format!(
            "card {card} is not a card of {} in use: keys go only onto their owner's card",
            r.user
        )));
    }
    let records = archive::records(ctx.store)?;
    let inventory = ctx.store.inventory()?;
    let serials: Vec<String> = archive::with_certificates(&records, &inventory)
        .into_iter()
        .filter(|(rec, _)| {
            rec.user == r.user && rec.slot == crate::policy::model::Slot::KeyManagement
        })
        .filter_map(|(_, cert)| cert)
        .filter(|c| {
            r.serial
                .as_deref()
                .is_none_or(|s| c.serial.eq_ignore_ascii_case(s))
        })
        .map(|c| c.serial.clone())
        .collect();
    if serials.is_empty() {
        return Err(ApplyError::Stale(format!(
            "no archived key-management key of {} to put on a card",
            r.user
        )));
    }
    let before = ctx.store.card_facts(card)?.recovered_keys;
    ctx.store
        .update_card_facts(card, |f| {
            for s in &serials {
                if !f.recovered_keys.contains(s) {
                    f.recovered_keys.push(s.clone());
                }
            }
            Ok(())
        })?
        .map_err(ApplyError::Stale)?;
    let written = super::connect(ctx, card)
        .and_then(|mut session| super::key_history::write(ctx, card, session.as_mut()));
    match written {
        Ok(history) => Ok(serde_json::json!({
            "user": r.user,
            "serials": serials,
            "card": card,
            "retiredSlots": history,
        })),
        Err(e) => {
            // Not written: the card keeps what it had, and so does the record.
            ctx.store
                .update_card_facts(card, |f| {
                    f.recovered_keys = before.clone();
                    Ok(())
                })?
                .map_err(ApplyError::Stale)?;
            Err(e)
        }
    }
}

fn recovery_error(e: pkcs12::Pkcs12Error) -> ApplyError {
    ApplyError::Stale(format!("key recovery: {e}"))
}

/// The one-time password, for the requester: `key-recovery-<requester>-<user>.txt`.
fn write_password(
    dir: &Path,
    requester: &str,
    user: &str,
    file: &Path,
    serials: &[&str],
    password: &str,
) -> Result<PathBuf, ApplyError> {
    let body = format!(
        "Keyfleet key recovery\nFor: {requester}\nKeys of: {user}\nCertificates: {}\nFile: {}\n\
         Password: {password}\n\nThe password opens the file once handed over; it is stored \
         nowhere else. Delete this file after use.\n",
        serials.join(", "),
        file.display()
    );
    super::pin_mailer::write_private(
        dir,
        &super::pin_mailer_name(&format!("key-recovery-{requester}"), user),
        &body,
    )
}
