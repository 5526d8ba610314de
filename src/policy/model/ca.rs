//! CertificateAuthority: a local CA, cfssl, or an Entrust CA Gateway, and their options.

use std::borrow::Cow;
use std::path::PathBuf;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use super::KeyAlgorithm;
use crate::policy::duration::Duration;
use crate::policy::secret::SecretRef;

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
