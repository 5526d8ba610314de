//! [`PivCard`]: the [`CardSession`] of PIV cards (virtual, or real through a transport).
//! It knows nothing of plans, the journal or the CA.

use std::cell::RefCell;

use super::{ALL_SLOTS, CardSession, Session, VirtualCards};
use crate::apply::{ApplyError, Context, FACTORY_PIN, FACTORY_PUK, open_secret};
use crate::card::keys::{KeyAlg, ManagementKey, MgmtAlg, PrivateKeyMaterial, PublicKey};
use crate::card::piv::PivError;
use crate::card::signer::CardSigner;
use crate::desired::DesiredCredential;
use crate::policy::model::{ManagementKeyAlgorithm, Slot};

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
) -> ManagementKey {
    let alg = match alg {
        ManagementKeyAlgorithm::TripleDes => MgmtAlg::TripleDes,
        ManagementKeyAlgorithm::Aes128 => MgmtAlg::Aes128,
        ManagementKeyAlgorithm::Aes192 => MgmtAlg::Aes192,
        ManagementKeyAlgorithm::Aes256 => MgmtAlg::Aes256,
    };
    let bytes = ctx
        .master
        .diversify("piv-management-key", card, alg.key_len());
    // The length matches the algorithm by construction.
    ManagementKey::new(alg, bytes.to_vec()).unwrap_or_else(|_| ManagementKey::factory_default())
}

fn stored_mgmt_alg(
    ctx: &Context<'_>,
    card: &str,
) -> Result<Option<ManagementKeyAlgorithm>, ApplyError> {
    Ok(ctx
        .store
        .secret(&format!("mgmt-alg/{card}"))?
        .and_then(|v| serde_json::from_slice(&v).ok()))
}

impl CardSession for PivCard {
    fn select(&mut self) -> Result<(), ApplyError> {
        let card = self.card.clone();
        self.client()
            .select()
            .map_err(|source| ApplyError::Card { card, source })
    }

    /// Authenticates with the card's management key: the diversified one Keyfleet set, else
    /// the factory default (a blank card, or one whose personalisation was interrupted).
    fn admin_login(
        &mut self,
        ctx: &Context<'_>,
        cred: Option<&DesiredCredential>,
    ) -> Result<bool, ApplyError> {
        let card = self.card.clone();
        let err = |source| ApplyError::Card {
            card: card.clone(),
            source,
        };
        let alg = stored_mgmt_alg(ctx, &card)?
            .or(cred.map(|c| c.management_key.algorithm))
            .unwrap_or(ManagementKeyAlgorithm::Aes192);
        let key = management_key(ctx, &card, alg);
        let session = self.client();
        match session.authenticate(&key) {
            Ok(()) => return Ok(true),
            Err(
                PivError::WrongManagementKey | PivError::CardAuthFailed | PivError::Status { .. },
            ) => {}
            Err(e) => return Err(err(e)),
        }
        // Re-select: a failed authentication may leave the card in an intermediate state.
        session.select().map_err(err)?;
        session
            .authenticate(&ManagementKey::factory_default())
            .map_err(err)?;
        Ok(false)
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
        let diversified = management_key(ctx, &card, mgmt_alg);
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
        _ctx: &Context<'_>,
        pin: &str,
        puk: &str,
        fresh: bool,
    ) -> Result<(), ApplyError> {
        let card = self.card.clone();
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

    /// New keys over every slot that holds a certificate, certificates deleted, PIN, PUK and
    /// management key back to the factory values.
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
