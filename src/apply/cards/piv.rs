//! [`PivCard`]: the [`CardSession`] of PIV cards (virtual, or real through a transport).
//! It knows nothing of plans, the journal or the CA.

use std::cell::RefCell;

use super::{ALL_SLOTS, CardSession, RetiredKey, Session, VirtualCards};
use crate::apply::{ApplyError, Context, FACTORY_PIN, FACTORY_PUK, open_secret};
use crate::card::keys::{KeyAlg, ManagementKey, MgmtAlg, PrivateKeyMaterial, PublicKey};
use crate::card::piv::{KeyHistory, PinCheck, PivError, RETIRED_SLOTS, SlotKey};
use crate::card::signer::CardSigner;
use crate::desired::{DesiredCredential, TemplateRules};
use crate::inventory::HolderPinCause;
use crate::policy::model::{ManagementKeyAlgorithm, Slot};

#[cfg(test)]
mod tests;

/// A PIV card (virtual, or real through a transport).
pub struct PivCard {
    card: String,
    client: RefCell<Session>,
}

impl PivCard {
    /// A PIV card session for card `card`.
    pub fn new(card: &str, session: Session) -> Self {
        PivCard {
            card: card.to_string(),
            client: RefCell::new(session),
        }
    }

    fn err(&self) -> impl Fn(PivError) -> ApplyError + '_ {
        move |source| ApplyError::Card {
            card: self.card.clone(),
            source,
        }
    }

    fn client(&mut self) -> &mut Session {
        self.client.get_mut()
    }
}

/// The management key Keyfleet sets on a card: diversified from the master key by card id.
pub(crate) fn management_key(
    ctx: &Context<'_>,
    card: &str,
    alg: ManagementKeyAlgorithm,
) -> Result<ManagementKey, ApplyError> {
    let alg = piv_mgmt_alg(alg);
    let bytes = ctx
        .master
        .diversify("piv-management-key", card, alg.key_len());
    ManagementKey::new(alg, bytes.to_vec()).map_err(|e| ApplyError::ManagementKey {
        card: card.to_string(),
        message: e.to_string(),
    })
}

fn piv_mgmt_alg(alg: ManagementKeyAlgorithm) -> MgmtAlg {
    match alg {
        ManagementKeyAlgorithm::TripleDes => MgmtAlg::TripleDes,
        ManagementKeyAlgorithm::Aes128 => MgmtAlg::Aes128,
        ManagementKeyAlgorithm::Aes192 => MgmtAlg::Aes192,
        ManagementKeyAlgorithm::Aes256 => MgmtAlg::Aes256,
    }
}

/// The sealed secret holding a card's random management key (`diversified: false`).
fn random_key_name(card: &str) -> String {
    format!("mgmt-key/{card}")
}

/// The random management key stored for `card`, if it has one (hex, sealed).
fn stored_random_key(
    ctx: &Context<'_>,
    card: &str,
    alg: ManagementKeyAlgorithm,
) -> Result<Option<ManagementKey>, ApplyError> {
    let Some(hex_key) = open_secret(ctx, &random_key_name(card))? else {
        return Ok(None);
    };
    let bad = |message: String| ApplyError::ManagementKey {
        card: card.to_string(),
        message,
    };
    let bytes = hex::decode(hex_key.trim()).map_err(|e| bad(e.to_string()))?;
    ManagementKey::new(piv_mgmt_alg(alg), bytes)
        .map(Some)
        .map_err(|e| bad(e.to_string()))
}

/// The key a personalised card must have: its stored random one, else the diversified one,
/// with the algorithm recorded at personalisation. Any record that cannot be read is an
/// error: never the factory key.
fn stored_management_key(ctx: &Context<'_>, card: &str) -> Result<ManagementKey, ApplyError> {
    let name = format!("mgmt-alg/{card}");
    let raw = ctx
        .store
        .secret(&name)?
        .ok_or_else(|| ApplyError::ManagementKey {
            card: card.to_string(),
            message: format!("no {name} record"),
        })?;
    let alg: ManagementKeyAlgorithm =
        serde_json::from_slice(&raw).map_err(|e| ApplyError::ManagementKey {
            card: card.to_string(),
            message: format!("{name}: {e}"),
        })?;
    match stored_random_key(ctx, card, alg)? {
        Some(key) => Ok(key),
        None => management_key(ctx, card, alg),
    }
}

/// What the policy says of the template the card is bound to (also in recovery, which has
/// the templates but no credentials); `None` if unbound or the template is gone.
fn template_rules(ctx: &Context<'_>, card: &str) -> Result<Option<TemplateRules>, ApplyError> {
    let record = ctx.store.card(card)?;
    Ok(record
        .and_then(|r| r.template)
        .and_then(|t| ctx.desired.templates.get(&t).copied()))
}

impl PivCard {
    /// Sets the PIN and PUK tries (Yubico SET PIN RETRIES, which needs the management key,
    /// authenticated by [`CardSession::prepare`], and the PIN). The card then has its factory
    /// PIN and PUK again, so this runs before they are set; returns whether it did. In
    /// recovery (`fresh` false) nothing is sent when the counters are already right (the
    /// command ran, and the PIN and PUK set after it must stay), and the PIN is only tried
    /// where a wrong try leaves one at least: the factory PIN (what the card has until the
    /// PIN is set), else Keyfleet's `pin`.
    fn set_retries(
        &mut self,
        pin_tries: u8,
        puk_tries: u8,
        pin: &str,
        fresh: bool,
    ) -> Result<bool, ApplyError> {
        let err = self.err();
        let mut session = self.client.borrow_mut();
        if fresh {
            session.verify_pin(FACTORY_PIN).map_err(&err)?;
        } else {
            let pin_meta = session.pin_metadata(0x80).map_err(&err)?;
            let puk_meta = session.pin_metadata(0x81).map_err(&err)?;
            if let (Some(p), Some(u)) = (pin_meta, puk_meta)
                && (p.total, u.total) == (pin_tries, puk_tries)
            {
                return Ok(false);
            }
            let candidates: &[&str] = match pin_meta {
                Some(m) if m.is_default => &[FACTORY_PIN],
                Some(_) => &[pin],
                None => &[FACTORY_PIN, pin],
            };
            let mut verified = false;
            for candidate in candidates {
                match session.verify_pin_guarded(candidate, 1).map_err(&err)? {
                    PinCheck::Verified => {
                        verified = true;
                        break;
                    }
                    PinCheck::Refused { .. } => continue,
                    PinCheck::TooFewTries { retries_left } => {
                        return Err(err(PivError::WrongPin { retries_left }));
                    }
                }
            }
            if !verified {
                return Err(err(PivError::WrongPin {
                    retries_left: session
                        .pin_metadata(0x80)
                        .ok()
                        .flatten()
                        .map_or(0, |m| m.left),
                }));
            }
        }
        session
            .set_pin_retries(pin_tries, puk_tries)
            .map_err(&err)?;
        Ok(true)
    }
}

impl PivCard {
    /// Empties a retired slot Keyfleet may have written: a fresh key over an imported one (or
    /// one under a certificate) makes the old private key unrecoverable; the certificate goes.
    /// A key the card generated itself (a previous clearing) is left alone.
    fn clear_retired_slot(&self, slot: u8) -> Result<(), ApplyError> {
        let err = self.err();
        let mut session = self.client.borrow_mut();
        let has_cert = match session.read_certificate(slot) {
            Ok(cert) => cert.is_some(),
            Err(PivError::CompressedCertificate(_)) => true,
            Err(e) => return Err(err(e)),
        };
        let imported = session.slot_key(slot).map_err(&err)? == SlotKey::Imported;
        if has_cert || imported {
            session.generate_key(slot, KeyAlg::EccP256).map_err(&err)?;
        }
        if has_cert {
            session.delete_certificate(slot).map_err(&err)?;
        }
        Ok(())
    }
}

/// Refuses a retired key whose parts do not belong together: the certificate must carry the
/// public key, of the private key's algorithm.
fn check_retired_key(card: &str, index: usize, r: &RetiredKey) -> Result<(), ApplyError> {
    use x509_cert::der::{Decode as _, Encode as _};
    let bad = |why: &str| {
        ApplyError::Unsupported(format!(
            "card {card}: retired key {} (slot {:02X}): {why}",
            index + 1,
            0x82 + index
        ))
    };
    if r.key.alg() != r.public.alg() {
        return Err(bad("the private and the public key differ in algorithm"));
    }
    let cert = x509_cert::Certificate::from_der(&r.certificate_der)
        .map_err(|e| bad(&format!("the certificate is not DER X.509: {e}")))?;
    let spki = cert
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(|e| bad(&e.to_string()))?;
    if spki != r.public.spki_der() {
        return Err(bad("the certificate is not of this key"));
    }
    Ok(())
}

impl CardSession for PivCard {
    fn select(&mut self) -> Result<(), ApplyError> {
        let card = self.card.clone();
        self.client()
            .select()
            .map_err(|source| ApplyError::Card { card, source })
    }

    /// Authenticates with the management key Keyfleet stored for the card; the card must
    /// prove it too (mutual authentication). Never the factory key: a card that cannot prove
    /// the stored key is suspect.
    fn admin_login(
        &mut self,
        ctx: &Context<'_>,
        _cred: Option<&DesiredCredential>,
    ) -> Result<bool, ApplyError> {
        self.prove(ctx)?;
        Ok(true)
    }

    fn prove(&mut self, ctx: &Context<'_>) -> Result<(), ApplyError> {
        let card = self.card.clone();
        let key = stored_management_key(ctx, &card)?;
        match self.client().authenticate(&key) {
            Ok(()) => Ok(()),
            Err(
                e @ (PivError::WrongManagementKey
                | PivError::CardAuthFailed
                | PivError::Status { .. }
                | PivError::SecurityStatus { .. }),
            ) => Err(ApplyError::Suspect {
                card,
                reason: e.to_string(),
            }),
            Err(source) => Err(ApplyError::Card { card, source }),
        }
    }

    fn check_pin(&mut self, _ctx: &Context<'_>, pin: &str, keep: u8) -> Result<(), ApplyError> {
        let card = self.card.clone();
        let check = self.client().verify_pin_guarded(pin, keep);
        let (cause, left) = match check {
            Ok(PinCheck::Verified) => return Ok(()),
            Ok(PinCheck::Refused { retries_left }) => (HolderPinCause::Refused, retries_left),
            Ok(PinCheck::TooFewTries { retries_left }) => {
                (HolderPinCause::TooFewTries, retries_left)
            }
            Err(source) => return Err(ApplyError::Card { card, source }),
        };
        Err(ApplyError::HolderPin {
            card,
            cause,
            tries_left: Some(left),
        })
    }

    fn prepare(
        &mut self,
        ctx: &Context<'_>,
        _user: &str,
        mgmt_alg: ManagementKeyAlgorithm,
        fresh: bool,
    ) -> Result<(), ApplyError> {
        let card = self.card.clone();
        let err = |source| ApplyError::Card {
            card: card.clone(),
            source,
        };
        // Authenticate: factory key on a fresh card, else whichever key the card has.
        // `diversified: false`: a random key, sealed and durable before the card takes it (and
        // the same one again when recovery repeats this, which finds it sealed: a sealed
        // random key is always the one the card gets, as `stored_management_key` proves it).
        let wants_diversified =
            template_rules(ctx, &card)?.is_none_or(|t| t.management_key.diversified);
        let diversified = match stored_random_key(ctx, &card, mgmt_alg)? {
            Some(key) => key,
            None if wants_diversified => management_key(ctx, &card, mgmt_alg)?,
            None => {
                let mut bytes = vec![0u8; piv_mgmt_alg(mgmt_alg).key_len()];
                rand::fill(&mut bytes[..]);
                let name = random_key_name(&card);
                let sealed = ctx
                    .master
                    .seal(name.as_bytes(), hex::encode(&bytes).as_bytes());
                ctx.store.put_secret(&name, &sealed)?;
                ManagementKey::new(piv_mgmt_alg(mgmt_alg), bytes).map_err(|e| {
                    ApplyError::ManagementKey {
                        card: card.clone(),
                        message: e.to_string(),
                    }
                })?
            }
        };
        let session = self.client();
        let already = if fresh {
            session
                .authenticate(&ManagementKey::factory_default())
                .map_err(err)?;
            false
        } else {
            match session.authenticate(&diversified) {
                Ok(()) => true,
                Err(_) => {
                    session.select().map_err(err)?;
                    session
                        .authenticate(&ManagementKey::factory_default())
                        .map_err(err)?;
                    false
                }
            }
        };
        if !already {
            let guid = VirtualCards::guid_of(&card)
                .or_else(|| super::pcsc::guid_of(&card))
                .unwrap_or_else(rand::random);
            let expiry = (ctx.clock)() + time::Duration::days(365 * 10);
            let expiry = format!(
                "{:04}{:02}{:02}",
                expiry.year(),
                u8::from(expiry.month()),
                expiry.day()
            );
            session.write_chuid(guid, &expiry).map_err(err)?;
            session.set_management_key(&diversified).map_err(err)?;
        }
        // Also when recovery finds the key already set: a crash may have lost this record
        // (staged, durable with the next intent or the action's end).
        ctx.store.stage_secret(
            &format!("mgmt-alg/{card}"),
            &serde_json::to_vec(&mgmt_alg).unwrap_or_default(),
        )?;
        Ok(())
    }

    fn set_pins(
        &mut self,
        ctx: &Context<'_>,
        pin: &str,
        puk: &str,
        fresh: bool,
    ) -> Result<(), ApplyError> {
        let card = self.card.clone();
        // The retry counters first: setting them puts PIN and PUK back to factory values.
        let reset = match template_rules(ctx, &card)?.and_then(|t| t.retries) {
            Some((pin_tries, puk_tries)) => self.set_retries(pin_tries, puk_tries, pin, fresh)?,
            None => false,
        };
        let fresh = fresh || reset;
        let err = |source| ApplyError::Card {
            card: card.clone(),
            source,
        };
        let session = self.client();
        if fresh {
            session.change_pin(FACTORY_PIN, pin).map_err(err)?;
            session.change_puk(FACTORY_PUK, puk).map_err(err)?;
        } else {
            match session.verify_pin(pin) {
                Ok(()) => {}
                Err(PivError::WrongPin { .. }) => {
                    session.change_pin(FACTORY_PIN, pin).map_err(err)?;
                }
                Err(e) => return Err(err(e)),
            }
            match session.change_puk(puk, puk) {
                Ok(()) => {}
                Err(PivError::WrongPuk { .. }) => {
                    session.change_puk(FACTORY_PUK, puk).map_err(err)?;
                }
                Err(e) => return Err(err(e)),
            }
        }
        Ok(())
    }

    fn unblock(
        &mut self,
        _ctx: &Context<'_>,
        puk: &str,
        new_pin: &str,
    ) -> Result<Option<u8>, ApplyError> {
        let card = self.card.clone();
        let err = |source| ApplyError::Card {
            card: card.clone(),
            source,
        };
        let session = self.client();
        let before = match session.pin_retries().map_err(err)? {
            crate::card::piv::PinStatus::Blocked => 0,
            crate::card::piv::PinStatus::NotVerified { retries_left } => retries_left,
            crate::card::piv::PinStatus::Verified => 0,
        };
        session.unblock_pin(puk, new_pin).map_err(err)?;
        Ok(Some(before))
    }

    fn change_puk(&mut self, old: &str, new: &str) -> Result<(), ApplyError> {
        let card = self.card.clone();
        self.client()
            .change_puk(old, new)
            .map_err(|source| ApplyError::Card { card, source })
    }

    fn generate_key(&mut self, slot: Slot, alg: KeyAlg) -> Result<PublicKey, ApplyError> {
        let card = self.card.clone();
        self.client()
            .generate_key(slot.key_ref(), alg)
            .map_err(|source| ApplyError::Card { card, source })
    }

    fn import_key(
        &mut self,
        slot: Slot,
        key: &PrivateKeyMaterial,
        _public: &PublicKey,
    ) -> Result<(), ApplyError> {
        let card = self.card.clone();
        self.client()
            .import_key(slot.key_ref(), key)
            .map_err(|source| ApplyError::Card { card, source })
    }

    fn sign_csr(
        &mut self,
        slot: Slot,
        public: PublicKey,
        pin: &str,
        params: &rcgen::CertificateParams,
    ) -> Result<Vec<u8>, ApplyError> {
        // Every slot's key needs the PIN; 9C needs it right before the signature.
        let signer = CardSigner::new(&self.client, slot.key_ref(), public).with_pin(pin);
        let csr = params.serialize_request(&signer);
        drop(signer);
        match csr {
            Ok(c) => Ok(c.der().to_vec()),
            Err(e) => {
                let card = self.card.clone();
                Err(match self.client().pin_retries() {
                    Ok(crate::card::piv::PinStatus::Verified) | Err(_) => ApplyError::Csr {
                        card,
                        message: e.to_string(),
                    },
                    Ok(_) => ApplyError::PinUnknown(card),
                })
            }
        }
    }

    fn write_certificate(&mut self, slot: Slot, der: &[u8]) -> Result<(), ApplyError> {
        let card = self.card.clone();
        self.client()
            .write_certificate(slot.key_ref(), der)
            .map_err(|source| ApplyError::Card { card, source })
    }

    fn read_certificate(&mut self, slot: Slot) -> Result<Option<Vec<u8>>, ApplyError> {
        let card = self.card.clone();
        self.client()
            .read_certificate(slot.key_ref())
            .map_err(|source| ApplyError::Card { card, source })
    }

    fn delete_certificate(&mut self, slot: Slot) -> Result<(), ApplyError> {
        let card = self.card.clone();
        self.client()
            .delete_certificate(slot.key_ref())
            .map_err(|source| ApplyError::Card { card, source })
    }

    /// Hides the history while the slots change (Key History `C1` = 0), imports each key into
    /// 82, 83, … with its certificate, clears the retired slots beyond, then announces the
    /// keys written. Every key is checked against its certificate before the card is touched.
    fn write_retired(
        &mut self,
        ctx: &Context<'_>,
        history: &[RetiredKey],
    ) -> Result<(), ApplyError> {
        let card = self.card.clone();
        if history.len() > RETIRED_SLOTS.len() {
            return Err(ApplyError::Unsupported(format!(
                "card {card}: {} retired keys do not fit the {} retired slots",
                history.len(),
                RETIRED_SLOTS.len()
            )));
        }
        for (i, r) in history.iter().enumerate() {
            check_retired_key(&card, i, r)?;
        }
        self.admin_login(ctx, None)?;
        let err = self.err();
        let hidden = KeyHistory::default();
        self.client
            .borrow_mut()
            .write_key_history(&hidden)
            .map_err(&err)?;
        for (slot, r) in RETIRED_SLOTS.iter().zip(history) {
            let mut session = self.client.borrow_mut();
            session.import_key(*slot, &r.key).map_err(&err)?;
            session
                .write_certificate(*slot, &r.certificate_der)
                .map_err(&err)?;
        }
        for slot in RETIRED_SLOTS.iter().skip(history.len()) {
            self.clear_retired_slot(*slot)?;
        }
        let written = KeyHistory {
            on_card: u8::try_from(history.len()).unwrap_or(0),
            ..KeyHistory::default()
        };
        self.client
            .borrow_mut()
            .write_key_history(&written)
            .map_err(&err)
    }

    fn read_retired(&mut self) -> Result<Vec<(u8, Vec<u8>)>, ApplyError> {
        let card = self.card.clone();
        self.client()
            .read_retired_certificates()
            .map_err(|source| ApplyError::Card { card, source })
    }

    /// New keys over every slot that holds a certificate (and over imported retired keys),
    /// certificates and the Key History deleted, PIN, PUK and management key back to the
    /// factory values.
    fn wipe(&mut self, ctx: &Context<'_>) -> Result<(), ApplyError> {
        self.admin_login(ctx, None)?;
        let card = self.card.clone();
        for slot in ALL_SLOTS {
            if self.read_certificate(slot)?.is_some() {
                // A fresh key makes the old private key unrecoverable.
                self.generate_key(slot, KeyAlg::EccP256)?;
                self.delete_certificate(slot)?;
            }
        }
        // The history first, so that no reader trusts a half-cleared slot.
        self.client
            .borrow_mut()
            .delete_key_history()
            .map_err(self.err())?;
        for slot in RETIRED_SLOTS {
            self.clear_retired_slot(slot)?;
        }
        // PIN back to factory through the PUK (the holder's PIN is not needed), then the PUK.
        let puk = open_secret(ctx, &format!("puk/{card}"))?;
        let err = self.err();
        let mut reset = false;
        {
            let mut session = self.client.borrow_mut();
            for candidate in puk.iter().map(String::as_str).chain([FACTORY_PUK]) {
                match session.unblock_pin(candidate, FACTORY_PIN) {
                    Ok(()) => {
                        if candidate != FACTORY_PUK {
                            session.change_puk(candidate, FACTORY_PUK).map_err(&err)?;
                        }
                        reset = true;
                        break;
                    }
                    Err(PivError::WrongPuk { .. }) => continue,
                    Err(e) => return Err(err(e)),
                }
            }
            if !reset {
                return Err(err(PivError::PukBlocked));
            }
            session
                .set_management_key(&ManagementKey::factory_default())
                .map_err(&err)?;
        }
        Ok(())
    }
}
