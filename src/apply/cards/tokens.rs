//! PKCS#11 tokens as cards: the [`Tokens`] provider (presence and blank tokens of the policy's
//! `pkcs11` stocks) and [`TokenCard`], the [`CardSession`] that issues to a token.
//!
//! ```text
//!   blank token (initialised, label starts with the stock's tokenLabelPrefix)
//!     prepare:   C_InitToken(SO PIN, label = holder's uid)   — erases every object
//!     set_pins:  SO login, C_InitPIN(user PIN from the PIN policy)
//!     per slot:  user login, key pair (CKA_ID = PIV key ref, sensitive, never extractable)
//!                CSR signed on the token, certificate object with the same CKA_ID and label
//!     wipe:      keys and certificates destroyed, C_InitToken(label = prefix + serial)
//! ```
//!
//! Card ids are `p11-<token serial>`; tokens are found by serial on every session because a
//! token may change slot. Wrong user PINs are counted per card in the store (reset by a good
//! login) and Keyfleet never tries the PIN when the token says one more failure would lock it.
//! This module does not plan, journal or talk to a CA.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::{ALL_SLOTS, CardAccessError, CardProvider, CardSession, Session};
use crate::apply::{ApplyError, Context, open_secret};
use crate::card::keys::{KeyAlg, PrivateKeyMaterial, PublicKey};
use crate::card::pkcs11::{self, Module, ObjectType, P11Error, Pkcs11Uri, Token, TokenSigner};
use crate::desired::DesiredCredential;
use crate::plan::PresentBlank;
use crate::policy::PolicySet;
use crate::policy::model::{CardType, ManagementKeyAlgorithm, Slot, StockSelector};
use crate::policy::secret::SecretRef;

/// The object label Keyfleet gives the key pair and certificate of a slot.
pub const fn slot_label(slot: Slot) -> &'static str {
    match slot {
        Slot::PivAuthentication => "piv-auth",
        Slot::DigitalSignature => "piv-sign",
        Slot::KeyManagement => "piv-key-mgmt",
        Slot::CardAuthentication => "piv-card-auth",
    }
}

/// The CKA_ID Keyfleet gives the objects of a slot: the PIV key reference byte.
pub fn slot_id(slot: Slot) -> [u8; 1] {
    [slot.key_ref()]
}

/// The RFC 7512 URI of a slot's object on a token.
pub fn slot_uri(serial: &str, token_label: &str, slot: Slot, kind: ObjectType) -> Pkcs11Uri {
    let mut uri = Pkcs11Uri::object_on(serial, token_label, slot_label(slot), kind);
    uri.id = Some(slot_id(slot).to_vec());
    uri
}

/// A `pkcs11` card stock as the provider needs it.
#[derive(Debug, Clone)]
pub struct TokenStock {
    /// The stock's name.
    pub name: String,
    /// The PKCS#11 module path.
    pub module: PathBuf,
    /// Tokens whose label starts with this are blank cards of the stock.
    pub label_prefix: String,
    /// The SO PIN.
    pub so_pin: SecretRef,
    /// The folder `so_pin` file references are relative to.
    pub base_dir: PathBuf,
}

impl TokenStock {
    /// The label a wiped token gets: the stock prefix and the serial, within 32 bytes.
    pub fn blank_label(&self, serial: &str) -> String {
        let sep = if self.label_prefix.ends_with(['-', '_']) {
            ""
        } else {
            "-"
        };
        truncate_label(&format!("{}{sep}{serial}", self.label_prefix))
    }
}

/// The first 32 bytes of `s`, cut at a character boundary (PKCS#11 token labels).
pub fn truncate_label(s: &str) -> String {
    let mut end = s.len().min(32);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().to_string()
}

/// The PKCS#11 tokens of the policy's `pkcs11` stocks.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    stocks: Vec<TokenStock>,
}

impl Tokens {
    /// The provider for these stocks.
    pub fn new(stocks: Vec<TokenStock>) -> Self {
        Tokens { stocks }
    }

    /// The `pkcs11` stocks of a policy set (None when it has none: no module is loaded).
    pub fn from_policy(policy: &PolicySet) -> Option<Self> {
        let stocks: Vec<TokenStock> = policy
            .stocks
            .values()
            .filter_map(|s| match &s.spec.selector {
                StockSelector::Pkcs11(p) => Some(TokenStock {
                    name: s.name.clone(),
                    module: s.resolve_path(&p.module),
                    label_prefix: p.token_label_prefix.clone(),
                    so_pin: p.so_pin.clone(),
                    base_dir: s.base_dir(),
                }),
                _ => None,
            })
            .collect();
        (!stocks.is_empty()).then(|| Tokens::new(stocks))
    }

    fn modules(&self) -> BTreeSet<PathBuf> {
        self.stocks.iter().map(|s| s.module.clone()).collect()
    }

    fn module(path: &std::path::Path) -> Result<Module, CardAccessError> {
        Module::open(path).map_err(|e| CardAccessError::Storage {
            card: "*".into(),
            message: e.to_string(),
        })
    }

    fn list(&self, path: &std::path::Path) -> Result<Vec<pkcs11::TokenInfo>, CardAccessError> {
        Self::module(path)?
            .tokens()
            .map_err(|e| CardAccessError::Storage {
                card: "*".into(),
                message: e.to_string(),
            })
    }
}

impl CardProvider for Tokens {
    fn present(&self) -> Result<BTreeSet<String>, CardAccessError> {
        let mut out = BTreeSet::new();
        for m in self.modules() {
            out.extend(self.list(&m)?.iter().map(|t| t.card_id()));
        }
        Ok(out)
    }

    fn connect(&self, card: &str) -> Result<Session, CardAccessError> {
        Err(CardAccessError::Storage {
            card: card.to_string(),
            message: "a PKCS#11 token has no PIV interface".into(),
        })
    }

    fn create_virtual(&self) -> Result<String, CardAccessError> {
        Err(CardAccessError::CannotCreate(
            "PKCS#11 tokens are not created by Keyfleet".into(),
        ))
    }

    fn exists(&self, card: &str) -> bool {
        pkcs11::serial_of(card).is_some()
    }

    fn open(&self, card: &str) -> Result<Box<dyn CardSession>, CardAccessError> {
        let serial =
            pkcs11::serial_of(card).ok_or_else(|| CardAccessError::NotPresent(card.into()))?;
        for m in self.modules() {
            let module = Self::module(&m)?;
            let here = match module.token(serial) {
                Ok(_) => true,
                Err(P11Error::NotPresent(_)) => false,
                Err(e) => {
                    return Err(CardAccessError::Storage {
                        card: card.to_string(),
                        message: e.to_string(),
                    });
                }
            };
            if here {
                return Ok(Box::new(TokenCard {
                    card: card.to_string(),
                    serial: serial.to_string(),
                    module,
                    stocks: self
                        .stocks
                        .iter()
                        .filter(|s| s.module == m)
                        .cloned()
                        .collect(),
                    token: None,
                }));
            }
        }
        Err(CardAccessError::NotPresent(card.to_string()))
    }

    fn blanks(&self) -> Result<Vec<PresentBlank>, CardAccessError> {
        let mut out = Vec::new();
        for m in self.modules() {
            for t in self.list(&m)? {
                if let Some(stock) = self
                    .stocks
                    .iter()
                    .find(|s| s.module == m && t.label.starts_with(&s.label_prefix))
                {
                    out.push(PresentBlank {
                        id: t.card_id(),
                        card_type: CardType::Pkcs11,
                        stock: stock.name.clone(),
                    });
                }
            }
        }
        Ok(out)
    }
}

/// One token, issued to like a card.
pub struct TokenCard {
    card: String,
    serial: String,
    module: Module,
    stocks: Vec<TokenStock>,
    token: Option<Token>,
}

impl TokenCard {
    fn err(&self) -> impl Fn(P11Error) -> ApplyError + '_ {
        move |source| match source {
            P11Error::NotPresent(_) => {
                ApplyError::CardAccess(CardAccessError::NotPresent(self.card.clone()))
            }
            source => ApplyError::Token {
                card: self.card.clone(),
                source,
            },
        }
    }

    fn token(&mut self) -> Result<&Token, ApplyError> {
        if self.token.is_none() {
            let t = self.module.open_token(&self.serial).map_err(self.err())?;
            self.token = Some(t);
        }
        self.token
            .as_ref()
            .ok_or_else(|| ApplyError::CardAccess(CardAccessError::NotPresent(self.card.clone())))
    }

    /// The stock this token belongs to: the inventory's word, else the label prefix.
    fn stock(&self, ctx: &Context<'_>) -> Result<TokenStock, ApplyError> {
        let recorded = ctx.store.card(&self.card)?.and_then(|c| c.stock);
        let label = self
            .module
            .token(&self.serial)
            .map(|t| t.label)
            .unwrap_or_default();
        self.stocks
            .iter()
            .find(|s| recorded.as_deref() == Some(s.name.as_str()))
            .or_else(|| {
                self.stocks
                    .iter()
                    .find(|s| label.starts_with(&s.label_prefix))
            })
            .or(self.stocks.first())
            .cloned()
            .ok_or_else(|| ApplyError::Stale(format!("card {} belongs to no stock", self.card)))
    }

    fn so_pin(&self, ctx: &Context<'_>) -> Result<(TokenStock, String), ApplyError> {
        let stock = self.stock(ctx)?;
        let pin = stock
            .so_pin
            .resolve(&stock.base_dir)
            .map_err(|e| ApplyError::SoPin {
                card: self.card.clone(),
                stock: stock.name.clone(),
                message: e.to_string(),
            })?;
        Ok((stock, pin))
    }

    fn failures_key(&self) -> String {
        format!("p11-pin-failures/{}", self.card)
    }

    /// Logs in with `pin`, counting failures in the store.
    fn login_user(&mut self, ctx: &Context<'_>, pin: &str) -> Result<(), ApplyError> {
        let key = self.failures_key();
        let result = self.token()?.login_user(pin);
        match result {
            Ok(()) => {
                if ctx.store.secret(&key)?.is_some() {
                    ctx.store.remove_secret(&key)?;
                }
                Ok(())
            }
            Err(source @ (P11Error::WrongPin { .. } | P11Error::PinLocked { .. })) => {
                let failures = ctx
                    .store
                    .secret(&key)?
                    .and_then(|v| String::from_utf8(v).ok())
                    .and_then(|v| v.parse::<u32>().ok())
                    .unwrap_or(0)
                    + 1;
                ctx.store
                    .put_secret(&key, failures.to_string().as_bytes())?;
                tracing::warn!(card = %self.card, failures, "token refused the user PIN");
                Err(ApplyError::TokenPin {
                    card: self.card.clone(),
                    failures,
                    source,
                })
            }
            Err(e) => Err(self.err()(e)),
        }
    }

    fn reinit(&mut self, so_pin: &str, label: &str) -> Result<(), ApplyError> {
        // C_InitToken refuses while this application has a session on the token.
        self.token = None;
        self.module
            .init_token(&self.serial, so_pin, label)
            .map_err(self.err())?;
        Ok(())
    }
}

impl CardSession for TokenCard {
    fn select(&mut self) -> Result<(), ApplyError> {
        self.token().map(|_| ())
    }

    fn admin_login(
        &mut self,
        ctx: &Context<'_>,
        _cred: Option<&DesiredCredential>,
    ) -> Result<bool, ApplyError> {
        // `keyfleet apply --holder-pin`: the PIN the holder typed, instead of the stored one.
        if let Some(typed) = ctx.holder_pins.get(&self.card) {
            self.login_user(ctx, typed)?;
            return Ok(true);
        }
        let pin = open_secret(ctx, &format!("pin/{}", self.card))?
            .ok_or_else(|| ApplyError::PinUnknown(self.card.clone()))?;
        self.login_user(ctx, &pin)?;
        Ok(true)
    }

    fn prepare(
        &mut self,
        ctx: &Context<'_>,
        user: &str,
        _mgmt_alg: ManagementKeyAlgorithm,
        _fresh: bool,
    ) -> Result<(), ApplyError> {
        // Nothing of value is on the token before its PIN is set: initialising again after an
        // interruption is safe, so fresh and recovered personalisation are the same.
        let (_, so_pin) = self.so_pin(ctx)?;
        self.reinit(&so_pin, &truncate_label(user))
    }

    fn set_pins(
        &mut self,
        ctx: &Context<'_>,
        pin: &str,
        _puk: &str,
        _fresh: bool,
    ) -> Result<(), ApplyError> {
        let (_, so_pin) = self.so_pin(ctx)?;
        let err = self.err();
        let token = self.module.open_token(&self.serial).map_err(&err)?;
        token.login_so(&so_pin).map_err(&err)?;
        token.init_user_pin(pin).map_err(&err)?;
        token.logout().map_err(&err)?;
        drop(token);
        let key = self.failures_key();
        if ctx.store.secret(&key)?.is_some() {
            ctx.store.remove_secret(&key)?;
        }
        Ok(())
    }

    /// Tokens have no PUK: the stock's SO PIN initialises a new user PIN, which also clears
    /// the token's failed-login state.
    fn unblock(
        &mut self,
        ctx: &Context<'_>,
        _puk: &str,
        new_pin: &str,
    ) -> Result<Option<u8>, ApplyError> {
        self.set_pins(ctx, new_pin, "", false)?;
        Ok(None)
    }

    fn generate_key(&mut self, slot: Slot, alg: KeyAlg) -> Result<PublicKey, ApplyError> {
        let token = self.token()?;
        let r = token.generate_key_pair(&slot_id(slot), slot_label(slot), alg);
        r.map_err(self.err())
    }

    fn import_key(
        &mut self,
        slot: Slot,
        key: &PrivateKeyMaterial,
        public: &PublicKey,
    ) -> Result<(), ApplyError> {
        let token = self.token()?;
        let r = token.import_key(&slot_id(slot), slot_label(slot), key, public);
        r.map_err(self.err())
    }

    fn sign_csr(
        &mut self,
        slot: Slot,
        public: PublicKey,
        _pin: &str,
        params: &rcgen::CertificateParams,
    ) -> Result<Vec<u8>, ApplyError> {
        // The executor logged in with the PIN (admin_login) on this session already.
        let token = self.token()?;
        let signer = TokenSigner::new(token, &slot_id(slot), public);
        let csr = params
            .serialize_request(&signer)
            .map_err(|e| ApplyError::Csr {
                card: self.card.clone(),
                message: e.to_string(),
            })?;
        Ok(csr.der().to_vec())
    }

    fn write_certificate(&mut self, slot: Slot, der: &[u8]) -> Result<(), ApplyError> {
        let token = self.token()?;
        let r = token.write_certificate(&slot_id(slot), slot_label(slot), der);
        r.map_err(self.err())
    }

    fn read_certificate(&mut self, slot: Slot) -> Result<Option<Vec<u8>>, ApplyError> {
        let token = self.token()?;
        let r = token.read_certificate(&slot_id(slot));
        r.map_err(self.err())
    }

    fn delete_certificate(&mut self, slot: Slot) -> Result<(), ApplyError> {
        let token = self.token()?;
        let r = token.destroy_certificate(&slot_id(slot));
        r.map(|_| ()).map_err(self.err())
    }

    fn wipe(&mut self, ctx: &Context<'_>) -> Result<(), ApplyError> {
        let (stock, so_pin) = self.so_pin(ctx)?;
        // Destroy what Keyfleet put there when the PIN still works; C_InitToken below erases
        // everything in any case (and needs only the SO PIN, so a changed user PIN is fine).
        if let Some(pin) = open_secret(ctx, &format!("pin/{}", self.card))? {
            let token = self.token()?;
            let destroyed = if token.login_user(&pin).is_ok() {
                ALL_SLOTS.iter().try_for_each(|slot| {
                    let id = slot_id(*slot);
                    token.destroy_certificate(&id)?;
                    token.destroy_keys(&id).map(|_| ())
                })
            } else {
                Ok(())
            };
            destroyed.map_err(self.err())?;
        }
        let label = stock.blank_label(&self.serial);
        self.reinit(&so_pin, &label)?;
        ctx.store.remove_secret(&self.failures_key())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_fit_pkcs11() {
        assert_eq!(truncate_label("alice"), "alice");
        let long = "é".repeat(20); // 40 bytes
        let t = truncate_label(&long);
        assert!(t.len() <= 32 && long.starts_with(&t));
        let stock = TokenStock {
            name: "s".into(),
            module: "/m.so".into(),
            label_prefix: "kf-blank".into(),
            so_pin: SecretRef::Env { env: "X".into() },
            base_dir: ".".into(),
        };
        assert_eq!(
            stock.blank_label("fb3e2f2d1656bf4a"),
            "kf-blank-fb3e2f2d1656bf4a"
        );
    }

    #[test]
    fn slot_uris_name_token_object_and_id() {
        let uri = slot_uri(
            "00ab",
            "alice",
            Slot::PivAuthentication,
            ObjectType::Private,
        );
        assert_eq!(
            uri.to_string(),
            "pkcs11:token=alice;serial=00ab;object=piv-auth;id=%9A;type=private"
        );
    }
}
