//! The policy object model: one Rust type per kind, with serde (YAML, camelCase, unknown fields
//! refused) and schemars derives, so the JSON schemas in `schemas/` are generated from here.
//!
//! This module only describes shapes and defaults. It does not read files (see `load`), check
//! references between objects (see `validate`) or resolve secrets (see `secret`).

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use super::duration::Duration;
use super::secret::SecretRef;
use super::template::TextTemplate;

/// The pattern object names must match (a DNS label: lower-case letters, digits and '-').
pub const NAME_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";

/// A YAML mapping with exactly one of several keys, deserialised into an enum.
///
/// serde_yaml 0.9 reads externally tagged enums only from YAML tags (`!local`), so each such
/// enum goes through a raw struct of optional fields (unknown keys refused) and a checked
/// conversion. The JSON schema lists the keys and requires exactly one of them.
macro_rules! one_of_keys {
    (
        $(#[$raw_doc:meta])*
        $raw:ident => $enum:ident, $schema_name:literal, $description:literal,
        $($field:ident : $key:literal => $variant:ident($inner:ty)),+ $(,)?
    ) => {
        $(#[$raw_doc])*
        #[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        struct $raw {
            $(
                #[serde(default, rename = $key, skip_serializing_if = "Option::is_none")]
                $field: Option<$inner>,
            )+
        }

        impl TryFrom<$raw> for $enum {
            type Error = ExactlyOneError;

            fn try_from(raw: $raw) -> Result<Self, Self::Error> {
                let mut found = Vec::new();
                $(
                    if let Some(v) = raw.$field {
                        found.push($enum::$variant(v));
                    }
                )+
                match (found.pop(), found.is_empty()) {
                    (Some(v), true) => Ok(v),
                    _ => Err(ExactlyOneError(&[$($key),+])),
                }
            }
        }

        impl From<$enum> for $raw {
            fn from(e: $enum) -> Self {
                let mut raw = $raw::default();
                match e {
                    $($enum::$variant(v) => raw.$field = Some(v),)+
                }
                raw
            }
        }

        impl JsonSchema for $enum {
            fn schema_name() -> Cow<'static, str> {
                $schema_name.into()
            }

            fn json_schema(generator: &mut SchemaGenerator) -> Schema {
                let mut schema = $raw::json_schema(generator);
                schema.insert("description".into(), $description.into());
                schema.insert(
                    "oneOf".into(),
                    serde_json::json!([$({"required": [$key]}),+]),
                );
                schema
            }
        }
    };
}

/// A mapping that must have exactly one of a set of keys has none or several.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("needs exactly one of {}", self.0.join(", "))]
pub struct ExactlyOneError(pub &'static [&'static str]);

/// The kinds of policy object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `CertificateAuthority`
    CertificateAuthority,
    /// `Directory`
    Directory,
    /// `CardTemplate`
    CardTemplate,
    /// `Assignment`
    Assignment,
    /// `CardStock`
    CardStock,
    /// `CardBinding`
    CardBinding,
    /// `Role`
    Role,
    /// `Settings`
    Settings,
    /// `PolicyTest` (only under `tests/`, never part of the policy set: see `test_model`)
    PolicyTest,
}

impl Kind {
    /// Every kind, in schema order.
    pub const ALL: [Kind; 9] = [
        Kind::CertificateAuthority,
        Kind::Directory,
        Kind::CardTemplate,
        Kind::Assignment,
        Kind::CardStock,
        Kind::CardBinding,
        Kind::Role,
        Kind::Settings,
        Kind::PolicyTest,
    ];

    /// The name as written in `kind:`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::CertificateAuthority => "CertificateAuthority",
            Kind::Directory => "Directory",
            Kind::CardTemplate => "CardTemplate",
            Kind::Assignment => "Assignment",
            Kind::CardStock => "CardStock",
            Kind::CardBinding => "CardBinding",
            Kind::Role => "Role",
            Kind::Settings => "Settings",
            Kind::PolicyTest => "PolicyTest",
        }
    }

    /// The kind named `s`, if any (exact spelling).
    pub fn from_name(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The envelope every policy document has; `S` is the kind's spec.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest<S> {
    /// Always `keyfleet.dev/v1`.
    pub api_version: String,
    /// The object's kind.
    pub kind: String,
    /// Name and description.
    pub metadata: Metadata,
    /// The kind-specific content.
    pub spec: S,
}

/// Object metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// Unique per kind; lower-case letters, digits and '-'.
    #[schemars(regex(pattern = NAME_PATTERN))]
    pub name: String,
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// CertificateAuthority

/// A CA connection: exactly one of `local`, `cfssl`, `entrustGateway`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    try_from = "RawCertificateAuthoritySpec",
    into = "RawCertificateAuthoritySpec"
)]
pub enum CertificateAuthoritySpec {
    /// The embedded software CA (key in the state dir), for labs and the quickstart.
    Local(LocalCaSpec),
    /// A CFSSL server.
    Cfssl(CfsslSpec),
    /// The Entrust CA Gateway REST API.
    EntrustGateway(EntrustGatewaySpec),
}

one_of_keys! {
    /// The YAML shape of a CA spec, before the exactly-one check.
    RawCertificateAuthoritySpec => CertificateAuthoritySpec,
    "CertificateAuthoritySpec",
    "A CA connection: exactly one of local, cfssl, entrustGateway.",
    local: "local" => Local(LocalCaSpec),
    cfssl: "cfssl" => Cfssl(CfsslSpec),
    entrust_gateway: "entrustGateway" => EntrustGateway(EntrustGatewaySpec),
}

/// The embedded CA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalCaSpec {
    /// The CA's subject DN (RFC 4514), e.g. `CN=Lab CA,O=Example`.
    pub subject: String,
    /// The CA key algorithm: `ecc-p256` (default) or `ecc-p384`.
    #[serde(default = "default_ca_key_algorithm")]
    pub key_algorithm: KeyAlgorithm,
    /// Validity of the CA certificate (default 10y).
    #[serde(default = "default_ca_validity")]
    pub validity: Duration,
    /// URL written into issued certificates' CRL distribution point extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl_distribution_point: Option<String>,
    /// How long each published CRL is valid (default 7d).
    #[serde(default = "default_crl_validity")]
    pub crl_validity: Duration,
    /// Where the CA's signing key lives: `file` (default, sealed in the state dir) or a
    /// `pkcs11:` URI (RFC 7512) naming the module (`?module-path=`), token, key label
    /// (`object=`) and PIN (`pin-source=env:NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^(file|pkcs11:.*)$"))]
    pub key_store: Option<String>,
    /// Publish the CRL to a file and keep it fresh: `keyfleet apply` and the controller write
    /// a new CRL after a revocation, suspension or resumption, when the file is missing, and
    /// when its nextUpdate is within `refreshBefore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl_publish: Option<CrlPublishSpec>,
}

/// Where and how the local CA's CRL is published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CrlPublishSpec {
    /// The CRL file (relative to the policy file, or absolute); its folder must exist. It is
    /// replaced atomically (mode 0644), so a reader never sees a half-written CRL.
    #[schemars(length(min = 1))]
    pub path: PathBuf,
    /// `der` (default) or `pem`.
    #[serde(default)]
    pub format: CrlFormat,
    /// Publish a fresh CRL when the published one's nextUpdate is this close (default: a third
    /// of `crlValidity`). Must be shorter than `crlValidity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_before: Option<Duration>,
}

impl CrlPublishSpec {
    /// `refreshBefore`, or a third of `crl_validity` (at least one second) when unset.
    pub fn refresh_before_or_default(&self, crl_validity: Duration) -> Duration {
        self.refresh_before
            .unwrap_or_else(|| Duration::from_secs((crl_validity.as_secs() / 3).max(1)))
    }
}

/// The encoding of a published CRL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CrlFormat {
    /// DER, as relying parties fetch it over HTTP (`application/pkix-crl`).
    #[default]
    Der,
    /// PEM (`-----BEGIN X509 CRL-----`).
    Pem,
}

impl CrlFormat {
    /// The name as written in policy.
    pub const fn as_str(self) -> &'static str {
        match self {
            CrlFormat::Der => "der",
            CrlFormat::Pem => "pem",
        }
    }
}

fn default_ca_key_algorithm() -> KeyAlgorithm {
    KeyAlgorithm::EccP256
}
fn default_ca_validity() -> Duration {
    Duration::from_days(3650)
}
fn default_crl_validity() -> Duration {
    Duration::from_days(7)
}

/// A CFSSL CA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CfsslSpec {
    /// Base URL, e.g. `https://cfssl.example.com:8888`.
    #[schemars(regex(pattern = "^https?://"))]
    pub url: String,
    /// The hex HMAC key for authenticated signing.
    pub auth_key: SecretRef,
    /// The default CFSSL profile (a certificate's `profile` overrides it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// PEM file with the CAs that sign the cfssl server's TLS certificate (relative to the
    /// policy file): the only roots trusted for an `https://` URL, which requires it. Refused
    /// with `http://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_bundle: Option<PathBuf>,
}

/// The Entrust CA Gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntrustGatewaySpec {
    /// Base URL of the gateway, e.g. `https://cagw.example.com/cagw`.
    #[schemars(regex(pattern = "^https://"))]
    pub url: String,
    /// The CA id inside the gateway.
    #[schemars(length(min = 1))]
    pub ca_id: String,
    /// The mTLS client certificate.
    pub client_certificate: ClientCertificate,
    /// PEM file with the CAs that sign the gateway's TLS certificate (relative to the policy
    /// file).
    pub trust_bundle: PathBuf,
    /// Most calls in flight to this CA at once (1..=256, default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub max_concurrency: Option<u32>,
    /// Time allowed for one HTTP exchange with the gateway (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// An mTLS client credential: PEM certificate and key files, or a PKCS#12 file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ClientCertificate {
    /// PEM files.
    Pem(PemClientCertificate),
    /// A PKCS#12 bundle and its password.
    Pkcs12(Pkcs12ClientCertificate),
}

/// PEM certificate and key files (relative to the policy file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PemClientCertificate {
    /// The certificate (chain) file.
    pub cert_file: PathBuf,
    /// The private key file.
    pub key_file: PathBuf,
}

/// A PKCS#12 client credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pkcs12ClientCertificate {
    /// The `.p12` file (relative to the policy file).
    pub pkcs12_file: PathBuf,
    /// Its password.
    pub password: SecretRef,
}

// ---------------------------------------------------------------------------------------------
// Directory

/// A directory Keyfleet reads users and groups from: exactly one of `file` or `ldap`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawDirectorySpec", into = "RawDirectorySpec")]
// A policy holds a handful of directories, loaded once: boxing the ldap variant would only
// make every match on it noisier.
#[allow(clippy::large_enum_variant)]
pub enum DirectorySpec {
    /// Users and groups from a YAML data file (demos and tests).
    File(FileDirectorySpec),
    /// An LDAP server or Active Directory.
    Ldap(LdapDirectorySpec),
}

one_of_keys! {
    /// The YAML shape of a directory spec, before the exactly-one check.
    RawDirectorySpec => DirectorySpec,
    "DirectorySpec",
    "A directory: exactly one of file, ldap.",
    file: "file" => File(FileDirectorySpec),
    ldap: "ldap" => Ldap(LdapDirectorySpec),
}

/// A YAML data file with `users:` and `groups:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileDirectorySpec {
    /// The data file, relative to the policy file. The loader does not read it as policy.
    pub path: PathBuf,
}

/// An LDAP directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LdapDirectorySpec {
    /// `ldap://` or `ldaps://` URL.
    #[schemars(regex(pattern = "^ldaps?://"))]
    pub url: String,
    /// Server flavour (decides nested-group and disabled-account handling).
    pub flavour: LdapFlavour,
    /// The DN Keyfleet binds as (read-only account).
    pub bind_dn: String,
    /// The bind password.
    pub bind_password: SecretRef,
    /// Where users and groups are searched.
    pub base_dn: String,
    /// LDAP filter selecting user entries (flavour default if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_filter: Option<String>,
    /// LDAP filter selecting group entries (flavour default if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_filter: Option<String>,
    /// TLS settings for `ldaps://` or StartTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<LdapTls>,
    /// Allow a plain `ldap://` URL without a `tls` section: the simple bind then sends the
    /// password in cleartext. Refused unless set; `validate` warns when it is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_cleartext_bind: bool,
    /// Simple paged results size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub page_size: Option<u32>,
    /// How often the controller polls for changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<Duration>,
    /// Time allowed for the TCP connect plus the TLS handshake (default 10s, at most 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    /// Time allowed for each LDAP operation; for a search, the longest silence between two
    /// replies (default 60s, at most 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_timeout: Option<Duration>,
}

/// The LDAP server flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LdapFlavour {
    /// OpenLDAP (memberOf / groupOfNames).
    Openldap,
    /// Microsoft Active Directory (in-chain matching rule, userAccountControl).
    ActiveDirectory,
}

/// LDAP TLS settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LdapTls {
    /// PEM file of trusted CAs (relative to the policy file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Skip server certificate verification (tests only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

// ---------------------------------------------------------------------------------------------
// CardTemplate

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

// ---------------------------------------------------------------------------------------------
// Assignment

/// Who is entitled to a template: groups, explicit users and/or an LDAP filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssignmentSpec {
    /// The `Directory` the users come from.
    pub directory: String,
    /// The `CardTemplate` they get.
    pub template: String,
    /// Entitled groups.
    #[serde(default)]
    pub groups: Vec<GroupRef>,
    /// Entitled users (uids).
    #[serde(default)]
    pub users: Vec<String>,
    /// An LDAP filter selecting entitled users (ldap directories only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// A group in an assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupRef {
    /// The group's name in the directory.
    pub name: String,
    /// Include members of nested groups (default false).
    #[serde(default)]
    pub nested: bool,
}

// ---------------------------------------------------------------------------------------------
// CardStock

/// Cards that may be issued, and whether a present one may be bound automatically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawCardStockSpec", into = "RawCardStockSpec")]
pub struct CardStockSpec {
    /// The kind of card in this stock.
    pub card_type: CardType,
    /// A present, unbound card may be bound to a pending user.
    pub auto_bind: bool,
    /// Which cards belong to the stock.
    pub selector: StockSelector,
}

/// Which cards belong to a stock: exactly one of `virtual`, `piv`, `pkcs11` in the spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum StockSelector {
    /// Virtual cards, created on demand.
    Virtual(VirtualStock),
    /// PIV cards.
    Piv(PivStock),
    /// PKCS#11 tokens.
    Pkcs11(Pkcs11Stock),
}

impl StockSelector {
    /// The key the selector is written under.
    pub const fn key(&self) -> &'static str {
        match self {
            StockSelector::Virtual(_) => "virtual",
            StockSelector::Piv(_) => "piv",
            StockSelector::Pkcs11(_) => "pkcs11",
        }
    }
}

/// Virtual cards.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualStock {
    /// At most this many virtual cards exist at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
}

/// PIV cards.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PivStock {
    /// Any blank PIV card (factory defaults) belongs to the stock.
    #[serde(default)]
    pub any_blank: bool,
    /// Cards by CHUID GUID (32 hex digits).
    #[serde(default)]
    pub guids: Vec<String>,
    /// Cards by serial number.
    #[serde(default)]
    pub serials: Vec<String>,
}

/// PKCS#11 tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pkcs11Stock {
    /// The PKCS#11 module (shared library) path.
    pub module: PathBuf,
    /// Tokens whose label starts with this belong to the stock.
    pub token_label_prefix: String,
    /// The security officer PIN.
    pub so_pin: SecretRef,
}

/// The YAML shape of a card stock, before the exactly-one-selector check.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawCardStockSpec {
    /// The kind of card in this stock.
    card_type: CardType,
    /// A present, unbound card may be bound to a pending user (default false).
    #[serde(default)]
    auto_bind: bool,
    /// Virtual cards, created on demand.
    #[serde(default, rename = "virtual", skip_serializing_if = "Option::is_none")]
    virtual_: Option<VirtualStock>,
    /// PIV cards by GUID or serial, or any blank one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    piv: Option<PivStock>,
    /// PKCS#11 tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pkcs11: Option<Pkcs11Stock>,
}

/// A card stock without exactly one selector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a CardStock needs exactly one of `virtual`, `piv` or `pkcs11`")]
pub struct StockSelectorError;

impl TryFrom<RawCardStockSpec> for CardStockSpec {
    type Error = StockSelectorError;

    fn try_from(raw: RawCardStockSpec) -> Result<Self, Self::Error> {
        let selector = match (raw.virtual_, raw.piv, raw.pkcs11) {
            (Some(v), None, None) => StockSelector::Virtual(v),
            (None, Some(p), None) => StockSelector::Piv(p),
            (None, None, Some(p)) => StockSelector::Pkcs11(p),
            _ => return Err(StockSelectorError),
        };
        Ok(CardStockSpec {
            card_type: raw.card_type,
            auto_bind: raw.auto_bind,
            selector,
        })
    }
}

impl From<CardStockSpec> for RawCardStockSpec {
    fn from(s: CardStockSpec) -> Self {
        let mut raw = RawCardStockSpec {
            card_type: s.card_type,
            auto_bind: s.auto_bind,
            virtual_: None,
            piv: None,
            pkcs11: None,
        };
        match s.selector {
            StockSelector::Virtual(v) => raw.virtual_ = Some(v),
            StockSelector::Piv(p) => raw.piv = Some(p),
            StockSelector::Pkcs11(p) => raw.pkcs11 = Some(p),
        }
        raw
    }
}

impl JsonSchema for CardStockSpec {
    fn schema_name() -> Cow<'static, str> {
        "CardStockSpec".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut schema = RawCardStockSpec::json_schema(generator);
        schema.insert(
            "description".into(),
            "Cards that may be issued: cardType, autoBind and exactly one of virtual, piv, pkcs11."
                .into(),
        );
        schema.insert(
            "oneOf".into(),
            serde_json::json!([
                {"required": ["virtual"]},
                {"required": ["piv"]},
                {"required": ["pkcs11"]}
            ]),
        );
        schema
    }
}

// ---------------------------------------------------------------------------------------------
// CardBinding, Role, Settings

/// An explicit user-to-card binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CardBindingSpec {
    /// The user's uid in the directory.
    #[schemars(length(min = 1))]
    pub user: String,
    /// The card id (GUID, serial or virtual card name).
    #[schemars(length(min = 1))]
    pub card: String,
}

/// An operator role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleSpec {
    /// What holders may do.
    #[schemars(length(min = 1))]
    pub permissions: Vec<Permission>,
    /// Who holds the role (operator identities, e.g. uids).
    #[serde(default)]
    pub members: Vec<String>,
}

/// Runtime operations an operator may be allowed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Permission {
    /// Unblock a PIN.
    Unblock,
    /// Report a card lost or damaged.
    ReportLost,
    /// Recover an archived key.
    RecoverKey,
    /// Bind a card to a user.
    Bind,
    /// Approve a plan over the safety limit.
    ApproveMassRevocation,
    /// Run issuance.
    Issue,
    /// Revoke a credential by hand.
    Revoke,
    /// Read the inventory.
    ViewInventory,
    /// Retire a card.
    Retire,
}

/// Global settings (at most one object of this kind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SettingsSpec {
    /// The state directory (relative to the policy file); `--state-dir` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// Limits on destructive plans.
    #[serde(default)]
    pub safety: Safety,
    /// How many cards the controller (`keyfleet run`) works on at once (1..=64, default 4):
    /// the actions of different cards run in parallel, a card's own actions in order.
    /// `keyfleet apply` runs one action at a time. Each CA connector also bounds its own
    /// calls (`maxConcurrency`).
    #[serde(default = "default_concurrency")]
    #[schemars(range(min = 1, max = 64))]
    pub concurrency: u32,
    /// Where the master key lives: `file` (default, in the state dir) or a `pkcs11:` URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^(file|pkcs11:.*)$"))]
    pub key_store: Option<String>,
}

impl Default for SettingsSpec {
    /// The settings used when the policy has no `Settings` object (same as `spec: {}`).
    fn default() -> Self {
        SettingsSpec {
            state_dir: None,
            safety: Safety::default(),
            concurrency: default_concurrency(),
            key_store: None,
        }
    }
}

fn default_concurrency() -> u32 {
    4
}

/// Safety limits: a plan revoking more than either limit is refused unless approved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Safety {
    /// Most revocations in one plan (default 10).
    #[serde(default = "default_max_revocations")]
    pub max_revocations: u32,
    /// Most revocations as a percentage of issued cards (0..=100, default 25).
    #[serde(default = "default_max_revocation_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub max_revocation_percent: u32,
}

impl Default for Safety {
    fn default() -> Self {
        Safety {
            max_revocations: default_max_revocations(),
            max_revocation_percent: default_max_revocation_percent(),
        }
    }
}

fn default_max_revocations() -> u32 {
    10
}
fn default_max_revocation_percent() -> u32 {
    25
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_settable_on_virtual_cards_and_yubico_piv_only() {
        let spec = |head: &str| -> CardTemplateSpec {
            serde_yaml::from_str(&format!(
                "{head}\npinPolicy: {{retries: 5}}\npukPolicy: {{retries: 4}}\ncertificates:\n- {{name: auth, slot: 9A, authority: lab, profile: piv-auth, keyAlgorithm: ecc-p256, subject: 'CN=x'}}\n"
            ))
            .unwrap()
        };
        assert_eq!(spec("cardType: virtual").settable_retries(), Some((5, 4)));
        assert_eq!(
            spec("cardType: piv\nvendor: yubico").settable_retries(),
            Some((5, 4))
        );
        assert_eq!(spec("cardType: piv").settable_retries(), None);
        assert_eq!(spec("cardType: pkcs11").settable_retries(), None);
        assert!(
            serde_yaml::from_str::<CardTemplateSpec>(
                "cardType: piv\nvendor: acme\ncertificates: []\n"
            )
            .is_err()
        );
    }

    #[test]
    fn card_template_defaults() {
        let t: CardTemplateSpec = serde_yaml::from_str(
            "cardType: virtual\ncertificates:\n- {name: auth, slot: 9A, authority: lab, profile: piv-auth, keyAlgorithm: ecc-p256, subject: 'CN=${user.cn}'}\n",
        )
        .unwrap();
        assert_eq!(
            t.pin_policy,
            PinPolicy {
                length: 6,
                retries: 3
            }
        );
        assert_eq!(t.puk_policy.length, 8);
        assert_eq!(t.management_key.algorithm, ManagementKeyAlgorithm::Aes192);
        assert!(t.management_key.diversified);
        assert_eq!(t.on_entitlement_loss, OnEntitlementLoss::Revoke);
        assert_eq!(t.on_user_disabled, OnUserDisabled::Suspend);
        let c = &t.certificates[0];
        assert_eq!(c.slot, Slot::PivAuthentication);
        assert_eq!(c.slot.key_ref(), 0x9A);
        assert_eq!(c.key_generation, KeyGeneration::OnCard);
        assert_eq!(c.validity, Duration::from_days(365));
        assert_eq!(c.renew_before, Duration::from_days(30));
    }

    #[test]
    fn ca_spec_is_one_of() {
        let ca: CertificateAuthoritySpec =
            serde_yaml::from_str("local: {subject: 'CN=Lab CA'}").unwrap();
        let CertificateAuthoritySpec::Local(l) = ca else {
            panic!("not local: {ca:?}")
        };
        assert_eq!(l.key_algorithm, KeyAlgorithm::EccP256);
        assert_eq!(l.validity, Duration::from_days(3650));
        assert_eq!(l.crl_validity, Duration::from_days(7));
        assert!(
            serde_yaml::from_str::<CertificateAuthoritySpec>("local: {subject: x, colour: red}")
                .is_err()
        );
    }

    #[test]
    fn card_stock_needs_one_selector() {
        let s: CardStockSpec =
            serde_yaml::from_str("cardType: virtual\nautoBind: true\nvirtual: {}\n").unwrap();
        assert_eq!(
            s.selector,
            StockSelector::Virtual(VirtualStock { max: None })
        );
        assert!(serde_yaml::from_str::<CardStockSpec>("cardType: piv\n").is_err());
        assert!(
            serde_yaml::from_str::<CardStockSpec>("cardType: piv\npiv: {}\nvirtual: {}\n").is_err()
        );
        assert!(
            serde_yaml::from_str::<CardStockSpec>("cardType: piv\npiv: {}\ncolour: red\n").is_err()
        );
        let back = serde_yaml::to_string(&s).unwrap();
        assert!(back.contains("virtual: {}"), "{back}");
    }

    #[test]
    fn key_algorithm_names_match_as_str() {
        for alg in [
            KeyAlgorithm::EccP256,
            KeyAlgorithm::EccP384,
            KeyAlgorithm::Rsa2048,
            KeyAlgorithm::Rsa3072,
        ] {
            let yaml = serde_yaml::to_string(&alg).unwrap();
            assert_eq!(yaml.trim(), alg.as_str());
            assert_eq!(
                serde_yaml::from_str::<KeyAlgorithm>(alg.as_str()).unwrap(),
                alg
            );
        }
    }

    #[test]
    fn kinds_round_trip_names() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_name(k.as_str()), Some(k));
        }
        assert_eq!(Kind::from_name("Widget"), None);
    }

    #[test]
    fn settings_defaults() {
        let s: SettingsSpec = serde_yaml::from_str("{}").unwrap();
        assert_eq!(s, SettingsSpec::default());
        assert_eq!(s.concurrency, 4);
        assert_eq!(s.safety.max_revocations, 10);
        assert_eq!(s.safety.max_revocation_percent, 25);
    }

    #[test]
    fn crl_publish_defaults_to_der_and_a_third_of_the_validity() {
        let p: CrlPublishSpec = serde_yaml::from_str("path: ca.crl").unwrap();
        assert_eq!(p.format, CrlFormat::Der);
        assert_eq!(
            p.refresh_before_or_default(Duration::from_days(7)),
            Duration::from_secs(7 * 86_400 / 3)
        );
        assert_eq!(
            p.refresh_before_or_default(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
        let p: CrlPublishSpec =
            serde_yaml::from_str("{path: /srv/crl/ca.pem, format: pem, refreshBefore: 2d}")
                .unwrap();
        assert_eq!(p.format, CrlFormat::Pem);
        assert_eq!(
            p.refresh_before_or_default(Duration::from_days(7)),
            Duration::from_days(2)
        );
        assert!(serde_yaml::from_str::<CrlPublishSpec>("{path: a, colour: red}").is_err());
    }
}
