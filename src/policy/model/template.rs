//! CardTemplate: what a card holds (slots, keys, subjects, SANs), its PIN, PUK and
//! management key, and what happens when the user is disabled or loses the entitlement.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use super::NAME_PATTERN;
use crate::policy::duration::Duration;
use crate::policy::template::TextTemplate;

/// What a card holds and how it is managed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CardTemplateSpec {
    /// The kind of card.
    pub card_type: CardType,
    /// PIN policy; the initial PIN is random digits of `length`.
    #[serde(default)]
    pub pin_policy: PinPolicy,
    /// PUK policy.
    #[serde(default)]
    pub puk_policy: PukPolicy,
    /// Management key policy.
    #[serde(default)]
    pub management_key: ManagementKeyPolicy,
    /// Vendor extensions the PIV cards of this template speak (`piv` cards only; the virtual
    /// card speaks Yubico's). `yubico`: SET PIN RETRIES, so `pinPolicy.retries` and
    /// `pukPolicy.retries` are set at personalisation. Without it a `piv` template keeps the
    /// card's own counters, and retries other than the default are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<PivVendor>,
    /// The certificates on the card, one per slot.
    #[schemars(length(min = 1))]
    pub certificates: Vec<CertificateSpec>,
    /// What happens when the user is no longer entitled (default `revoke`).
    #[serde(default)]
    pub on_entitlement_loss: OnEntitlementLoss,
    /// What happens when the account is disabled (default `suspend`).
    #[serde(default)]
    pub on_user_disabled: OnUserDisabled,
    /// The template of the temporary card a holder gets while their card of this template is
    /// forgotten (its certificates on hold). Its own validity applies (e.g. `1d`); the
    /// temporary card is revoked and returns to stock when the original is found, or when it
    /// becomes lost and is replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporary: Option<TemporaryCard>,
    /// How many previous key-management keys (with their certificates) the card keeps in its
    /// retired slots (82, 83, …, newest first), from the archive: so mail encrypted to an old
    /// certificate stays readable on the card (0–20; default 3 when the 9D certificate is
    /// archived, 0 otherwise; only with an archived 9D certificate on `piv`/`virtual` cards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 20))]
    pub key_history: Option<u8>,
}

impl CardTemplateSpec {
    /// Whether the key-management (9D) certificate's key is archived.
    pub fn archives_key_management(&self) -> bool {
        self.certificates
            .iter()
            .any(|c| c.slot == Slot::KeyManagement && c.archive)
    }

    /// `keyHistory`, or its default: 3 with an archived 9D key, else 0.
    pub fn effective_key_history(&self) -> u8 {
        self.key_history
            .unwrap_or(if self.archives_key_management() { 3 } else { 0 })
    }
}

/// `CardTemplate.spec.temporary`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemporaryCard {
    /// The `CardTemplate` the temporary card is issued under.
    #[schemars(length(min = 1))]
    pub template: String,
}

/// The kind of card.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum CardType {
    /// A PIV card over PC/SC.
    Piv,
    /// A PKCS#11 token.
    Pkcs11,
    /// Keyfleet's virtual PIV card (software).
    Virtual,
}

impl CardType {
    /// The name as written in policy.
    pub const fn as_str(self) -> &'static str {
        match self {
            CardType::Piv => "piv",
            CardType::Pkcs11 => "pkcs11",
            CardType::Virtual => "virtual",
        }
    }
}

/// Vendor extensions of PIV cards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PivVendor {
    /// Yubico's PIV extensions (YubiKey 4 and 5): SET PIN RETRIES (`00 FA`), which needs the
    /// management key and the PIN and puts PIN and PUK back to their factory values.
    Yubico,
}

impl CardTemplateSpec {
    /// The PIN and PUK tries to set on the card at personalisation, when its type can:
    /// the virtual card, or a PIV card with the `yubico` vendor option. `None`: the card
    /// keeps its own counters (`validate` refuses retries other than the default then).
    pub fn settable_retries(&self) -> Option<(u8, u8)> {
        let can = match self.card_type {
            CardType::Virtual => true,
            CardType::Piv => self.vendor == Some(PivVendor::Yubico),
            CardType::Pkcs11 => false,
        };
        can.then_some((self.pin_policy.retries, self.puk_policy.retries))
    }
}

/// The PIN and PUK tries a template gets when it does not say (the PIV factory value).
pub const DEFAULT_RETRIES: u8 = 3;

/// PIN policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PinPolicy {
    /// Number of digits (6..=8, default 6).
    #[serde(default = "default_pin_length")]
    #[schemars(range(min = 6, max = 8))]
    pub length: u8,
    /// Tries before the PIN blocks (1..=15, default 3).
    #[serde(default = "default_retries")]
    #[schemars(range(min = 1, max = 15))]
    pub retries: u8,
}

impl Default for PinPolicy {
    fn default() -> Self {
        PinPolicy {
            length: default_pin_length(),
            retries: default_retries(),
        }
    }
}

/// PUK policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PukPolicy {
    /// Number of digits (6..=8, default 8).
    #[serde(default = "default_puk_length")]
    #[schemars(range(min = 6, max = 8))]
    pub length: u8,
    /// Tries before the PUK blocks (1..=15, default 3).
    #[serde(default = "default_retries")]
    #[schemars(range(min = 1, max = 15))]
    pub retries: u8,
}

impl Default for PukPolicy {
    fn default() -> Self {
        PukPolicy {
            length: default_puk_length(),
            retries: default_retries(),
        }
    }
}

fn default_pin_length() -> u8 {
    6
}
fn default_puk_length() -> u8 {
    8
}
fn default_retries() -> u8 {
    DEFAULT_RETRIES
}

/// How the card's management key is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManagementKeyPolicy {
    /// The key's algorithm (default `aes-192`).
    #[serde(default = "default_mgmt_algorithm")]
    pub algorithm: ManagementKeyAlgorithm,
    /// Derive a per-card key from the master key (default true); otherwise random and stored.
    #[serde(default = "default_true")]
    pub diversified: bool,
}

impl Default for ManagementKeyPolicy {
    fn default() -> Self {
        ManagementKeyPolicy {
            algorithm: default_mgmt_algorithm(),
            diversified: true,
        }
    }
}

fn default_mgmt_algorithm() -> ManagementKeyAlgorithm {
    ManagementKeyAlgorithm::Aes192
}
fn default_true() -> bool {
    true
}

/// Management key algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ManagementKeyAlgorithm {
    /// Three-key triple DES (legacy cards).
    #[serde(rename = "3des")]
    TripleDes,
    /// AES-128.
    #[serde(rename = "aes-128")]
    Aes128,
    /// AES-192 (the PIV default).
    #[serde(rename = "aes-192")]
    Aes192,
    /// AES-256.
    #[serde(rename = "aes-256")]
    Aes256,
}

/// One certificate (and key) on the card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateSpec {
    /// Name of this certificate within the template (e.g. `authentication`).
    #[schemars(regex(pattern = NAME_PATTERN))]
    pub name: String,
    /// The PIV slot.
    pub slot: Slot,
    /// The `CertificateAuthority` that issues it.
    pub authority: String,
    /// The CA profile (for the local CA: piv-auth, piv-signature, piv-key-management,
    /// piv-card-auth).
    pub profile: String,
    /// The key algorithm.
    pub key_algorithm: KeyAlgorithm,
    /// Where the key is generated (default `on-card`).
    #[serde(default)]
    pub key_generation: KeyGeneration,
    /// Keep an encrypted copy of a server-generated key for recovery (only with `server`).
    #[serde(default)]
    pub archive: bool,
    /// The subject DN template, e.g. `CN=${user.cn},O=Example`.
    pub subject: TextTemplate,
    /// Subject alternative names.
    #[serde(default)]
    pub subject_alt_names: Vec<SanTemplate>,
    /// Requested certificate lifetime (default 1y).
    #[serde(default = "default_cert_validity")]
    pub validity: Duration,
    /// Renew this long before expiry (default 30d); must be shorter than `validity`.
    #[serde(default = "default_renew_before")]
    pub renew_before: Duration,
}

fn default_cert_validity() -> Duration {
    Duration::from_days(365)
}
fn default_renew_before() -> Duration {
    Duration::from_days(30)
}

/// A PIV key slot.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum Slot {
    /// 9A: PIV authentication.
    #[serde(rename = "9A", alias = "9a")]
    PivAuthentication,
    /// 9C: digital signature.
    #[serde(rename = "9C", alias = "9c")]
    DigitalSignature,
    /// 9D: key management (encryption).
    #[serde(rename = "9D", alias = "9d")]
    KeyManagement,
    /// 9E: card authentication.
    #[serde(rename = "9E", alias = "9e")]
    CardAuthentication,
}

impl Slot {
    /// The slot as hex text (`"9A"`).
    pub const fn hex(&self) -> &'static str {
        match self {
            Slot::PivAuthentication => "9A",
            Slot::DigitalSignature => "9C",
            Slot::KeyManagement => "9D",
            Slot::CardAuthentication => "9E",
        }
    }

    /// The slot of hex text (`"9D"`, any case).
    pub fn from_hex(s: &str) -> Option<Slot> {
        [
            Slot::PivAuthentication,
            Slot::DigitalSignature,
            Slot::KeyManagement,
            Slot::CardAuthentication,
        ]
        .into_iter()
        .find(|x| x.hex().eq_ignore_ascii_case(s))
    }

    /// The PIV key reference (`0x9A`).
    pub const fn key_ref(&self) -> u8 {
        match self {
            Slot::PivAuthentication => 0x9A,
            Slot::DigitalSignature => 0x9C,
            Slot::KeyManagement => 0x9D,
            Slot::CardAuthentication => 0x9E,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hex())
    }
}

/// Key algorithms.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    /// ECDSA / ECDH on NIST P-256.
    #[serde(rename = "ecc-p256")]
    EccP256,
    /// ECDSA / ECDH on NIST P-384.
    #[serde(rename = "ecc-p384")]
    EccP384,
    /// RSA 2048.
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    /// RSA 3072.
    #[serde(rename = "rsa-3072")]
    Rsa3072,
}

impl KeyAlgorithm {
    /// The name as written in policy.
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::EccP256 => "ecc-p256",
            KeyAlgorithm::EccP384 => "ecc-p384",
            KeyAlgorithm::Rsa2048 => "rsa-2048",
            KeyAlgorithm::Rsa3072 => "rsa-3072",
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a key pair is generated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum KeyGeneration {
    /// On the card; the private key never leaves it.
    #[default]
    OnCard,
    /// By Keyfleet, then imported into the card (for archived encryption keys, slot 9D).
    Server,
}

/// A subject alternative name template: exactly one of `upn`, `email`, `dns`, `uri`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawSanTemplate", into = "RawSanTemplate")]
pub enum SanTemplate {
    /// Microsoft UPN otherName (smart-card logon).
    Upn(TextTemplate),
    /// rfc822Name.
    Email(TextTemplate),
    /// dNSName.
    Dns(TextTemplate),
    /// URI.
    Uri(TextTemplate),
}

one_of_keys! {
    /// The YAML shape of a SAN template, before the exactly-one check.
    RawSanTemplate => SanTemplate,
    "SanTemplate",
    "A subject alternative name: exactly one of upn, email, dns, uri.",
    upn: "upn" => Upn(TextTemplate),
    email: "email" => Email(TextTemplate),
    dns: "dns" => Dns(TextTemplate),
    uri: "uri" => Uri(TextTemplate),
}

impl SanTemplate {
    /// The template, whatever the SAN type.
    pub fn template(&self) -> &TextTemplate {
        match self {
            SanTemplate::Upn(t)
            | SanTemplate::Email(t)
            | SanTemplate::Dns(t)
            | SanTemplate::Uri(t) => t,
        }
    }

    /// The SAN type as written in policy.
    pub const fn type_name(&self) -> &'static str {
        match self {
            SanTemplate::Upn(_) => "upn",
            SanTemplate::Email(_) => "email",
            SanTemplate::Dns(_) => "dns",
            SanTemplate::Uri(_) => "uri",
        }
    }
}

/// What happens to a card's certificates when the user loses entitlement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OnEntitlementLoss {
    /// Revoke the certificates and retire the card.
    #[default]
    Revoke,
    /// Leave them alone (report only).
    None,
}

/// What happens when the user's account is disabled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OnUserDisabled {
    /// Put the certificates on hold at the CA; undone when the account is enabled again.
    #[default]
    Suspend,
    /// Revoke them.
    Revoke,
    /// Do nothing.
    None,
}
