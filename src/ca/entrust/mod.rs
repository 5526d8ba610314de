//! The Entrust CA Gateway (CAGW) connector: a REST client for `/cagw/v1` over mutual TLS, and
//! the [`CertificateAuthority`] implementation of kind `entrustGateway`.
//!
//! What it owns: the wire format (JSON bodies, Base64 DER, hex serials, reason strings), mTLS
//! (client certificate from PEM or PKCS#12, trust bundle for the gateway), timeouts, retries
//! with exponential backoff and jitter (connect errors, 429, 5xx; never another 4xx), a bound
//! on concurrent calls per CA, mapping gateway errors to messages that keep the gateway's own
//! text, and idempotent enrolment: the request is logged (request id, public-key fingerprint,
//! time) before it is sent; after a crash or an ambiguous failure the certificate is found by
//! paging the CA's certificate events and matching the public key, never enrolled twice.
//!
//! What it does NOT do: decide whether to issue or revoke, know users, cards or templates, or
//! read policy files (see [`super::connect`] for building one from a policy object).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Semaphore;

use super::remote::{ClientIdentity, RequestLog, RetryPolicy, tls_client_config};
use super::{
    CaCapabilities, CaCertStatus, CaError, CertificateAuthority, EnrollRequest, IssuedCertificate,
    RevocationReason,
};

mod client;
mod error;
mod request;
mod wire;

pub use error::GatewayError;
pub use wire::{parse_reason, reason_string};

use client::{Inner, chain_text};
use wire::{Wanted, WireCa, WireProfile, pem_of, profile_of, summary};

/// Entry point for the fuzz targets (not an API).
#[doc(hidden)]
pub mod fuzzing;

/// How to reach one CA behind a gateway.
#[derive(Debug)]
pub struct GatewayConfig {
    /// Base URL ending in the context path, e.g. `https://cagw.example.com/cagw`.
    pub url: String,
    /// The CA id inside the gateway.
    pub ca_id: String,
    /// Trust anchors for the gateway's TLS certificate.
    pub trust: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// The client credential.
    pub identity: ClientIdentity,
    /// Total time allowed for one HTTP exchange.
    pub timeout: Duration,
    /// Time allowed to connect (TCP + TLS).
    pub connect_timeout: Duration,
    /// Retries.
    pub retry: RetryPolicy,
    /// Most calls in flight to this CA at once.
    pub max_concurrency: usize,
    /// Folder of the request log (idempotent enrolment); `None` disables crash recovery.
    pub request_log: Option<std::path::PathBuf>,
}

// ---------------------------------------------------------------------------------------------
// Public results of the operator calls.

/// A CA the gateway exposes to this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaSummary {
    /// The CA id.
    pub id: String,
    /// Its display name.
    pub name: String,
    /// Its properties (`connector-name`, `type`, …) as text.
    pub properties: BTreeMap<String, String>,
}

/// One CA with its certificate and chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaDetails {
    /// Id, name, properties.
    pub summary: CaSummary,
    /// The CA certificate, PEM (when the gateway returned it).
    pub certificate_pem: Option<String>,
    /// The higher certificates, PEM.
    pub chain_pem: Vec<String>,
}

/// A subject variable or SAN requirement of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The variable name (`cn`, `o`, …) or SAN type.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Whether enrolment fails without it.
    pub required: bool,
}

/// An enrolment profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The profile id (what a template's `profile` names).
    pub id: String,
    /// Its display name.
    pub name: String,
    /// Subject variables the gateway expects.
    pub subject_variables: Vec<Requirement>,
    /// SAN requirements.
    pub subject_alt_names: Vec<Requirement>,
}

/// What `keyfleet ca test` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestReport {
    /// CAs visible to this client.
    pub visible: Vec<CaSummary>,
    /// Whether the configured CA id is among them.
    pub configured_found: bool,
    /// `UP` / `DOWN` from the CA status endpoint, when it answered.
    pub status: Option<String>,
}

/// A connection to one CA behind an Entrust CA Gateway.
pub struct EntrustGateway {
    inner: Arc<Inner>,
    rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for EntrustGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntrustGateway")
            .field("url", &self.inner.base)
            .field("ca_id", &self.inner.ca_id)
            .finish()
    }
}

impl EntrustGateway {
    /// Builds the client (no network traffic yet).
    pub fn new(cfg: GatewayConfig) -> Result<Self, GatewayError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = tls_client_config(&cfg.trust, Some(cfg.identity))?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.connect_timeout)
            .pool_max_idle_per_host(cfg.max_concurrency.max(1))
            .build()
            .map_err(|e| GatewayError::Client(chain_text(&e)))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("keyfleet-cagw")
            .enable_all()
            .build()
            .map_err(|e| GatewayError::Client(e.to_string()))?;
        Ok(EntrustGateway {
            inner: Arc::new(Inner {
                base: cfg.url.trim_end_matches('/').to_string(),
                ca_id: cfg.ca_id,
                http,
                permits: Semaphore::new(cfg.max_concurrency.max(1)),
                retry: cfg.retry,
                log: cfg.request_log.as_deref().map(RequestLog::new),
                profiles: Mutex::new(BTreeMap::new()),
            }),
            rt,
        })
    }

    /// The configured CA id.
    pub fn ca_id(&self) -> &str {
        &self.inner.ca_id
    }

    /// `GET /v1/certificate-authorities`: the CAs visible to this client.
    pub fn list_cas(&self) -> Result<Vec<CaSummary>, GatewayError> {
        #[derive(Deserialize, Default)]
        #[serde(default, rename_all = "camelCase")]
        struct R {
            ca_list: Vec<WireCa>,
        }
        let url = format!("{}/v1/certificate-authorities", self.inner.base);
        let r: R = self.rt.block_on(self.inner.get_json(&url, &[]))?;
        Ok(r.ca_list.iter().map(summary).collect())
    }

    /// `GET /v1/certificate-authorities/{id}` with its certificate and chain.
    pub fn get_ca(&self) -> Result<CaDetails, GatewayError> {
        #[derive(Deserialize)]
        struct R {
            ca: WireCa,
        }
        let url = self.inner.url("");
        let r: R = self.rt.block_on(
            self.inner
                .get_json(&url, &[("$fields", "ca.certificate,ca.chain")]),
        )?;
        Ok(CaDetails {
            summary: summary(&r.ca),
            certificate_pem: pem_of(&r.ca.certificate),
            chain_pem: r
                .ca
                .chain
                .iter()
                .filter_map(|c| pem_of(&Some(c.clone())))
                .collect(),
        })
    }

    /// `GET .../profiles`: the CA's enrolment profiles.
    pub fn list_profiles(&self) -> Result<Vec<Profile>, GatewayError> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct R {
            profiles: Vec<WireProfile>,
        }
        let url = self.inner.url("/profiles");
        let r: R = self.rt.block_on(self.inner.get_json(&url, &[]))?;
        Ok(r.profiles.iter().map(profile_of).collect())
    }

    /// `GET .../profiles/{id}`: one profile (and its requirements).
    pub fn get_profile(&self, id: &str) -> Result<Profile, GatewayError> {
        self.rt
            .block_on(self.inner.profile(id))
            .map(|p| profile_of(&p))
    }

    /// The operator's "Test" button: list the CAs (proves TLS and the client certificate),
    /// check the configured CA id is visible, and ask for its status.
    pub fn test(&self) -> Result<TestReport, GatewayError> {
        let visible = self.list_cas()?;
        let configured_found = visible.iter().any(|c| c.id == self.inner.ca_id);
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct S {
            status: Option<String>,
        }
        let status = if configured_found {
            let url = self.inner.url("/status");
            self.rt
                .block_on(self.inner.get_json::<S>(&url, &[]))
                .ok()
                .and_then(|s| s.status)
        } else {
            None
        };
        Ok(TestReport {
            visible,
            configured_found,
            status,
        })
    }

    /// Enrols many requests concurrently (bounded by the CA's concurrency limit); results in
    /// the order of `reqs`.
    pub fn enroll_many(&self, reqs: Vec<EnrollRequest>) -> Vec<Result<IssuedCertificate, CaError>> {
        let inner = self.inner.clone();
        self.rt.block_on(async move {
            let mut set = tokio::task::JoinSet::new();
            for (i, r) in reqs.into_iter().enumerate() {
                let inner = inner.clone();
                set.spawn(async move { (i, inner.enroll(&r).await) });
            }
            collect(set).await
        })
    }
}

async fn collect<T: 'static>(
    mut set: tokio::task::JoinSet<(usize, Result<T, CaError>)>,
) -> Vec<Result<T, CaError>> {
    let mut out: Vec<Option<Result<T, CaError>>> = Vec::new();
    while let Some(joined) = set.join_next().await {
        if let Ok((i, r)) = joined {
            if out.len() <= i {
                out.resize_with(i + 1, || None);
            }
            if let Some(slot) = out.get_mut(i) {
                *slot = Some(r);
            }
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(CaError::Unavailable("task failed".into()))))
        .collect()
}

impl CertificateAuthority for EntrustGateway {
    fn capabilities(&self) -> CaCapabilities {
        CaCapabilities { hold: true }
    }

    fn enroll(&self, req: &EnrollRequest) -> Result<IssuedCertificate, CaError> {
        self.rt.block_on(self.inner.enroll(req))
    }

    fn find_by_request_id(&self, request_id: &str) -> Result<Option<IssuedCertificate>, CaError> {
        self.rt.block_on(self.inner.find_by_request_id(request_id))
    }

    fn revoke(&self, serial: &str, reason: RevocationReason) -> Result<(), CaError> {
        let kind = if reason == RevocationReason::CertificateHold {
            "HoldAction"
        } else {
            "RevokeAction"
        };
        self.rt
            .block_on(self.inner.action(
                serial,
                kind,
                reason_string(reason),
                if kind == "HoldAction" {
                    Wanted::Held
                } else {
                    Wanted::Revoked
                },
            ))
            .map_err(|e| match e.status() {
                Some(404) => CaError::UnknownSerial(serial.to_string()),
                _ => e.into(),
            })
    }

    fn hold(&self, serial: &str) -> Result<(), CaError> {
        self.rt.block_on(self.inner.hold_change(serial, true))
    }

    fn unhold(&self, serial: &str) -> Result<(), CaError> {
        self.rt.block_on(self.inner.hold_change(serial, false))
    }

    fn status(&self, serial: &str) -> Result<CaCertStatus, CaError> {
        self.rt.block_on(self.inner.status(serial))
    }

    fn statuses(&self, serials: &[String]) -> Vec<Result<CaCertStatus, CaError>> {
        let inner = self.inner.clone();
        let serials = serials.to_vec();
        self.rt.block_on(async move {
            let mut set = tokio::task::JoinSet::new();
            for (i, s) in serials.into_iter().enumerate() {
                let inner = inner.clone();
                set.spawn(async move { (i, inner.status(&s).await) });
            }
            collect(set).await
        })
    }

    fn ca_certificate_pem(&self) -> Result<String, CaError> {
        let d = self.get_ca()?;
        d.certificate_pem.ok_or_else(|| {
            CaError::Unavailable(format!(
                "the gateway did not return the certificate of CA {}",
                self.inner.ca_id
            ))
        })
    }
}
