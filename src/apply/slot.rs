//! A slot's key and CSR on the card: the request (the stored PIN, or the one the holder typed
//! for `keyfleet apply --holder-pin`, checked first, the key
//! made on the card or in software, the CSR the card signs), and what a slot whose new key
//! got no certificate must lose (the stale certificate) and record.

use super::ca_ops::ca;
use super::{ApplyError, CardSession, Context, journal_close, journal_open, open_secret};
use crate::card::keys::{KeyAlg, PublicKey};
use crate::desired::{DesiredCert, DesiredCredential};
use crate::inventory::HolderPinCause;
use crate::names::SanValue;
use crate::policy::model::{KeyAlgorithm, KeyGeneration, Slot};
use crate::store::{JournalEntry, JournalState, JournalStep};
use zeroize::Zeroizing;

pub(crate) fn key_alg(alg: KeyAlgorithm) -> KeyAlg {
    match alg {
        KeyAlgorithm::EccP256 => KeyAlg::EccP256,
        KeyAlgorithm::EccP384 => KeyAlg::EccP384,
        KeyAlgorithm::Rsa2048 => KeyAlg::Rsa2048,
        KeyAlgorithm::Rsa3072 => KeyAlg::Rsa3072,
    }
}

/// What the card made for one slot: the CSR its new key signed.
pub(crate) struct SlotRequest {
    pub(crate) slot: Slot,
    pub(crate) csr_der: Vec<u8>,
    pub(crate) card_time: std::time::Duration,
}

/// The card's part of a slot's issuance: a new key (on the card, or made here and imported)
/// and the CSR the card signs with it, and the open journal entry of the key's replacement
/// (closed when the slot's new certificate is written, see [`remove_stale_certificate`]).
pub(crate) fn slot_request(
    ctx: &Context<'_>,
    session: &mut dyn CardSession,
    action_id: &str,
    card: &str,
    cred: &DesiredCredential,
    slot: Slot,
) -> Result<(SlotRequest, JournalEntry), ApplyError> {
    let want = desired_cert(cred, slot)?;
    // An unusable CA fails the slot before the card makes a key for it.
    ca(ctx, &want.authority)?;
    let started = std::time::Instant::now();
    // Everything the slot needs is at hand before the slot is touched: the card proves the
    // management key Keyfleet set, and the PIN Keyfleet holds verifies (never a PIN the card
    // refused once, never one whose wrong try would leave the holder fewer than 2).
    let facts = ctx.store.card_facts(card)?;
    if let Some(s) = facts.suspect {
        return Err(ApplyError::Suspect {
            card: card.to_string(),
            reason: s.reason,
        });
    }
    // `keyfleet apply --holder-pin`: the PIN the holder typed, instead of the stored one.
    let typed = ctx.holder_pins.get(card);
    if let Some(h) = facts.holder_pin
        && typed.is_none()
    {
        return Err(ApplyError::HolderPin {
            card: card.to_string(),
            cause: h.cause,
            tries_left: h.tries_left,
        });
    }
    let pin = match typed {
        Some(pin) => pin.clone(),
        None => Zeroizing::new(open_secret(ctx, &format!("pin/{card}"))?.ok_or_else(|| {
            ApplyError::HolderPin {
                card: card.to_string(),
                cause: HolderPinCause::NotStored,
                tries_left: None,
            }
        })?),
    };
    session.admin_login(ctx, Some(cred))?;
    // The stored PIN is never tried when a wrong try would leave fewer than 2 tries; a PIN
    // the holder types at the station may use all but the last (a mistyped one leaves 1, and
    // the holder is there to be unblocked).
    let keep = if typed.is_some() { 1 } else { 2 };
    match session.check_pin(ctx, &pin, keep) {
        // The guarded verify refused to try it, or the card refused it: the holder may type
        // it again; nothing about the stored PIN was learned.
        Err(ApplyError::HolderPin {
            card,
            cause,
            tries_left,
        }) if typed.is_some() => {
            return Err(ApplyError::HolderPinRefused {
                card,
                tried: cause == HolderPinCause::Refused,
                tries_left,
            });
        }
        r => r?,
    }
    // From the new key until its certificate is written, the certificate in the slot does
    // not match the key: the journal knows it (flushed before the key is made), so that a
    // failure or a crash in between ends with the stale certificate removed.
    let replaced = ctx
        .store
        .certs_of_card(card)?
        .into_iter()
        .filter(|c| c.slot == slot)
        .map(|c| c.serial)
        .collect();
    let mut key_entry = journal_open(
        ctx,
        action_id,
        JournalStep::ReplaceKey {
            card: card.to_string(),
            slot,
            replaced,
        },
    )?;
    let public = match want.key_generation {
        KeyGeneration::OnCard => session.generate_key(slot, key_alg(want.key_algorithm)),
        KeyGeneration::Server => server_key(ctx, session, card, cred, want),
    };
    let public = match public {
        Ok(public) => public,
        Err(e) => {
            // The card refused to make (or take) the key: the slot is as it was.
            journal_close(
                ctx,
                &mut key_entry,
                JournalState::Abandoned,
                Some(e.to_string()),
            )?;
            return Err(e);
        }
    };
    let csr_der = match build_csr(session, card, slot, public, &pin, want) {
        Ok(csr) => csr,
        Err(e) => {
            // The slot's key is new: its old certificate no longer matches it. The next pass
            // makes the slot again (the plan still asks for it).
            remove_stale_certificate(ctx, session, card, slot, &mut key_entry)?;
            return Err(e);
        }
    };
    Ok((
        SlotRequest {
            slot,
            csr_der,
            card_time: started.elapsed(),
        },
        key_entry,
    ))
}

/// A slot whose key was replaced but whose new certificate was not written: the certificate
/// still in it no longer matches the key, and is removed (the next pass issues the slot
/// again, or installs its recorded certificate). The key's journal entry closes once it is
/// removed; when it cannot be, the entry stays open and recovery removes it.
pub(crate) fn remove_stale_certificate(
    ctx: &Context<'_>,
    session: &mut dyn CardSession,
    card: &str,
    slot: Slot,
    key_entry: &mut JournalEntry,
) -> Result<(), ApplyError> {
    match session
        .admin_login(ctx, None)
        .and_then(|_| session.delete_certificate(slot))
    {
        Ok(()) => {
            if let JournalStep::ReplaceKey { replaced, .. } = &key_entry.step {
                note_emptied_slot(ctx, card, slot, replaced)?;
            }
            journal_close(
                ctx,
                key_entry,
                JournalState::Done,
                Some("the new key's certificate was not written: the stale one is removed".into()),
            )
        }
        Err(e) => {
            tracing::warn!(card, slot = %slot, "cannot remove the stale certificate now (recovery will): {e}");
            Ok(())
        }
    }
}

/// Records that `card`'s `slot` lost the certificates `replaced` (removed under a new key):
/// the planner issues the slot again until a new certificate is written there
/// ([`crate::inventory::CardFacts::emptied_slots`]).
pub(crate) fn note_emptied_slot(
    ctx: &Context<'_>,
    card: &str,
    slot: Slot,
    replaced: &[String],
) -> Result<(), ApplyError> {
    if replaced.is_empty() {
        return Ok(());
    }
    let mut facts = ctx.store.card_facts(card)?;
    facts.emptied_slots.insert(slot, replaced.to_vec());
    ctx.store.put_card_facts(card, &facts)?;
    Ok(())
}

pub(crate) fn desired_cert(
    cred: &DesiredCredential,
    slot: Slot,
) -> Result<&DesiredCert, ApplyError> {
    cred.certificates
        .get(&slot)
        .ok_or_else(|| ApplyError::Stale(format!("template has no slot {}", slot.hex())))
}

pub(crate) fn server_key(
    ctx: &Context<'_>,
    session: &mut dyn CardSession,
    card: &str,
    cred: &DesiredCredential,
    want: &DesiredCert,
) -> Result<PublicKey, ApplyError> {
    use crate::card::keys::PrivateKeyMaterial;
    let alg = key_alg(want.key_algorithm);
    let (pkcs8, public) =
        crate::card::keys::generate_software(alg).map_err(|e| ApplyError::Csr {
            card: card.to_string(),
            message: format!("server-side key generation failed: {e}"),
        })?;
    if want.archive {
        // Archived (and flushed) before the key goes onto the card: no archived slot holds a
        // key the archive lacks.
        let archive_key = ctx.archive.key()?;
        crate::archive::archive(
            ctx.store,
            &archive_key,
            &crate::archive::NewKey {
                user: &cred.user,
                template: &cred.template,
                slot: want.slot,
                card,
                key_algorithm: want.key_algorithm,
                spki_der: public.spki_der(),
                pkcs8: &pkcs8,
            },
            (ctx.clock)(),
        )?;
    }
    let material =
        PrivateKeyMaterial::from_pkcs8_der(alg, &pkcs8).map_err(|e| ApplyError::Csr {
            card: card.to_string(),
            message: e.to_string(),
        })?;
    session.import_key(want.slot, &material, &public)?;
    Ok(public)
}

pub(crate) fn build_csr(
    session: &mut dyn CardSession,
    card: &str,
    slot: Slot,
    public: PublicKey,
    pin: &str,
    want: &DesiredCert,
) -> Result<Vec<u8>, ApplyError> {
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    for rdn in &want.subject.0 {
        dn.push(rcgen::DnType::from_oid(rdn.oid()), rdn.value.as_str());
    }
    params.distinguished_name = dn;
    for san in &want.sans {
        let value = match san {
            SanValue::Email(v) => {
                rcgen::string::Ia5String::try_from(v.as_str()).map(rcgen::SanType::Rfc822Name)
            }
            SanValue::Dns(v) => {
                rcgen::string::Ia5String::try_from(v.as_str()).map(rcgen::SanType::DnsName)
            }
            SanValue::Uri(v) => {
                rcgen::string::Ia5String::try_from(v.as_str()).map(rcgen::SanType::URI)
            }
            SanValue::Upn(v) => Ok(rcgen::SanType::OtherName((
                vec![1, 3, 6, 1, 4, 1, 311, 20, 2, 3],
                rcgen::OtherNameValue::Utf8String(v.clone()),
            ))),
        }
        .map_err(|e| ApplyError::Csr {
            card: card.to_string(),
            message: format!("SAN {san}: {e}"),
        })?;
        params.subject_alt_names.push(value);
    }
    session.sign_csr(slot, public, pin, &params)
}
