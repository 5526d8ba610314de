//! Writing a card's key history: the holder's previous key-management keys, opened from the
//! archive, with their certificates, into the card's retired slots (newest first), as
//! [`crate::plan::key_history::wanted`] says at the moment it runs; then what was written is
//! recorded on the card (`CardFacts::key_history`).

use super::cards::{CardSession, RetiredKey};
use super::{ApplyError, Context};
use crate::archive;
use crate::card::keys::{PrivateKeyMaterial, public_of_pkcs8};
use crate::policy::model::Slot;

/// Makes `card`'s retired slots hold what its template's `keyHistory` wants; returns the
/// serials written, newest first.
pub(crate) fn write(
    ctx: &Context<'_>,
    card: &str,
    session: &mut dyn CardSession,
) -> Result<Vec<String>, ApplyError> {
    let record = ctx
        .store
        .card(card)?
        .ok_or_else(|| ApplyError::Stale(format!("card {card} is not in the inventory")))?;
    let user = record.user.clone().unwrap_or_default();
    let n = record
        .template
        .as_deref()
        .and_then(|t| ctx.desired.templates.get(t))
        .map_or(0, |r| r.key_history);
    let inventory = ctx.store.inventory()?;
    let current = inventory
        .live_certs_of(card)
        .get(&Slot::KeyManagement)
        .map(|c| c.serial.clone());
    let recovered = inventory
        .facts
        .get(card)
        .map(|f| f.recovered_keys.clone())
        .unwrap_or_default();
    let want =
        crate::plan::key_history::wanted(&inventory, &user, current.as_deref(), n, &recovered);
    let mut keys = Vec::with_capacity(want.len());
    if !want.is_empty() {
        let archive_key = ctx.archive.key()?;
        let records = archive::records(ctx.store)?;
        for serial in &want {
            let cert = inventory
                .certs
                .get(serial)
                .ok_or_else(|| ApplyError::Stale(format!("certificate {serial} is unknown")))?;
            let id = archive::cert_key_id(cert);
            let rec = records
                .iter()
                .find(|r| Some(&r.key_id) == id.as_ref())
                .ok_or_else(|| {
                    ApplyError::Stale(format!("the archive holds no key of certificate {serial}"))
                })?;
            let pkcs8 = archive::open_key(&archive_key, rec)?;
            let bad = || ApplyError::Stale(format!("the archived key of {serial} does not decode"));
            let (alg, public) = public_of_pkcs8(&pkcs8).ok_or_else(bad)?;
            let key = PrivateKeyMaterial::from_pkcs8_der(alg, &pkcs8).map_err(|_| bad())?;
            let certificate_der = cert.der().ok_or_else(bad)?;
            keys.push(RetiredKey {
                key,
                public,
                certificate_der,
            });
        }
    }
    session.write_retired(ctx, &keys)?;
    ctx.store
        .update_card_facts(card, |f| {
            f.key_history = want.clone();
            Ok(())
        })?
        .map_err(ApplyError::Stale)?;
    Ok(want)
}
