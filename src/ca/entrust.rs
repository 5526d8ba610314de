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

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::Semaphore;

use super::remote::{
    ClientIdentity, ParsedCertificate, RemoteError, RequestLog, RequestRecord, RetryPolicy,
    decode_certificate_text, retryable_status, spki_fingerprint, tls_client_config,
};
use super::{
    CaCapabilities, CaCertStatus, CaError, CertificateAuthority, EnrollRequest, IssuedCertificate,
    RevocationReason,
};
use crate::names::{DistinguishedName, SanValue};

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

/// Failures talking to the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The credential, trust bundle, a certificate or the request log failed.
    #[error(transparent)]
    Local(#[from] RemoteError),
    /// The HTTP client or its runtime could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// The gateway could not be reached, or the connection failed, after every attempt.
    #[error("{method} {url}: {message} (after {attempts} attempt(s))")]
    Transport {
        /// HTTP method.
        method: &'static str,
        /// The URL.
        url: String,
        /// What failed.
        message: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The TLS handshake failed on a certificate: the gateway refused our client certificate,
    /// or its own certificate is not trusted by the trust bundle.
    #[error("{url}: TLS authentication failed: {message}")]
    TlsAuth {
        /// The URL.
        url: String,
        /// Which side and why.
        message: String,
    },
    /// The gateway answered with an error status.
    #[error("{method} {url}: gateway answered {status}{}: {message}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Gateway {
        /// HTTP method.
        method: &'static str,
        /// The URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The gateway's error code (`cagw-4018`), when given.
        code: Option<String>,
        /// The gateway's message (or the raw body when it is not JSON).
        message: String,
    },
    /// A success response did not have the expected shape.
    #[error("{url}: unexpected response: {reason}")]
    Decode {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The enrolment was accepted but no certificate was issued (pending approval).
    #[error("enrolment {id} not issued: status {status:?}")]
    NotIssued {
        /// The gateway's enrolment id.
        id: String,
        /// Its status.
        status: String,
    },
    /// The certificate returned does not certify the key of the CSR.
    #[error("certificate {serial} does not certify the requested public key")]
    KeyMismatch {
        /// Its serial.
        serial: String,
    },
    /// An action was rejected by the gateway in a success response.
    #[error("{action} on {serial}: the gateway answered {status}")]
    ActionRejected {
        /// The action type.
        action: &'static str,
        /// The serial.
        serial: String,
        /// `action.status`.
        status: String,
    },
    /// An action got a 2xx answer that is not the documented success (`action.status`
    /// `COMPLETED`), and the certificate read back is not in the requested state: it is not
    /// done, and is tried again.
    #[error(
        "{action} on {serial}: not confirmed: the gateway answered {answered}, and the certificate reads back as {read_back}"
    )]
    ActionUnconfirmed {
        /// The action type.
        action: &'static str,
        /// The serial.
        serial: String,
        /// What the answer said (its `action.status`, or that it could not be read).
        answered: String,
        /// The certificate's status as read back, or why it could not be read.
        read_back: String,
    },
}

impl GatewayError {
    /// The HTTP status, for errors the gateway answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            GatewayError::Gateway { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl From<GatewayError> for CaError {
    fn from(e: GatewayError) -> Self {
        match &e {
            GatewayError::Gateway { status, .. } if (400..500).contains(status) => {
                CaError::Rejected(e.to_string())
            }
            GatewayError::KeyMismatch { .. } | GatewayError::ActionRejected { .. } => {
                CaError::Rejected(e.to_string())
            }
            GatewayError::ActionUnconfirmed { .. } => CaError::Unavailable(e.to_string()),
            _ => CaError::Unavailable(e.to_string()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Wire shapes (lenient: unknown fields ignored, missing ones defaulted).

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct ErrorBody {
    error: Option<ErrorDetail>,
    message: Option<MessageBody>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct ErrorDetail {
    code: Option<String>,
    message: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct MessageBody {
    message: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct CertData {
    #[serde(rename = "certificateData")]
    certificate_data: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct WireCa {
    id: String,
    name: String,
    properties: BTreeMap<String, Value>,
    certificate: Option<CertData>,
    chain: Vec<CertData>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct WireRequirement {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    description: String,
    required: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct WireProfile {
    id: String,
    name: String,
    subject_variable_requirements: Vec<WireRequirement>,
    subject_alt_name_requirements: Vec<WireRequirement>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct WireEnrollment {
    id: String,
    serial_number: String,
    status: String,
    body: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct WireRevocationInfo {
    reason: Option<String>,
    revocation_date: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct WireCertificate {
    status: Option<String>,
    serial_number: String,
    certificate_data: Option<String>,
    revocation_info: Option<WireRevocationInfo>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct WireEvent {
    serial_number: Option<String>,
    certificate: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct WireEvents {
    events: Vec<WireEvent>,
    next_page_index: Option<String>,
    more_pages: Option<bool>,
    has_more: Option<bool>,
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

// ---------------------------------------------------------------------------------------------

enum SendFailure {
    /// Nothing reached the server (connection refused, TLS handshake failed before sending).
    NotSent(String),
    /// The request may have been processed (timeout, connection dropped after sending).
    Ambiguous(String),
    /// A certificate was refused in the TLS handshake: retrying cannot help.
    TlsAuth(String),
}

struct Inner {
    base: String,
    ca_id: String,
    http: reqwest::Client,
    permits: Semaphore,
    retry: RetryPolicy,
    log: Option<RequestLog>,
    profiles: Mutex<BTreeMap<String, WireProfile>>,
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

/// Percent-encodes a path segment or query part (CA ids such as `part~ca` keep their `~`;
/// `$fields` becomes `%24fields`).
fn segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The CAGW reason string of a revocation reason.
pub fn reason_string(reason: RevocationReason) -> &'static str {
    match reason {
        RevocationReason::Unspecified => "unspecified",
        RevocationReason::KeyCompromise => "keyCompromise",
        RevocationReason::AffiliationChanged => "affiliationChanged",
        RevocationReason::Superseded => "superseded",
        RevocationReason::CessationOfOperation => "cessationOfOperation",
        RevocationReason::CertificateHold => "certificateHold",
    }
}

/// The revocation reason of a CAGW reason string (case-insensitive); reasons Keyfleet does
/// not model read as `unspecified`.
pub fn parse_reason(s: &str) -> RevocationReason {
    match s.to_ascii_lowercase().as_str() {
        "keycompromise" => RevocationReason::KeyCompromise,
        "affiliationchanged" => RevocationReason::AffiliationChanged,
        "superseded" => RevocationReason::Superseded,
        "cessationofoperation" => RevocationReason::CessationOfOperation,
        "certificatehold" => RevocationReason::CertificateHold,
        _ => RevocationReason::Unspecified,
    }
}

/// The DN attribute a subject variable name stands for (`cn` → `CN`, `givenName` → `GN`).
fn variable_attribute(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "cn" | "commonname" => "CN",
        "o" | "organization" | "organizationname" => "O",
        "ou" | "organizationalunit" | "organizationalunitname" => "OU",
        "c" | "country" | "countryname" => "C",
        "l" | "locality" | "localityname" => "L",
        "st" | "s" | "state" | "stateorprovincename" => "ST",
        "e" | "email" | "emailaddress" => "E",
        "serialnumber" => "SERIALNUMBER",
        "gn" | "givenname" => "GN",
        "sn" | "surname" => "SN",
        "dc" | "domaincomponent" => "DC",
        "uid" | "userid" => "UID",
        _ => return None,
    })
}

/// The `subjectVariables` a profile asks for, filled from `subject`. Fails when a required
/// variable cannot be filled.
fn subject_variables(
    profile: &str,
    reqs: &[WireRequirement],
    subject: &DistinguishedName,
) -> Result<Vec<Value>, CaError> {
    let mut out = Vec::new();
    for r in reqs {
        let name = if r.name.is_empty() { &r.kind } else { &r.name };
        let value = variable_attribute(name).and_then(|a| subject.get(a));
        match value {
            Some(v) => out.push(json!({"type": name, "value": v})),
            None if r.required => {
                return Err(CaError::InvalidName(format!(
                    "profile {profile:?} requires the subject variable {name:?}, which the \
                     template's subject ({subject}) does not provide"
                )));
            }
            None => {}
        }
    }
    Ok(out)
}

/// The `subjectAltNames` the API names, and whether the CSR carries SANs it does not name
/// (the UPN), which then need `useSANFromCSR`.
fn subject_alt_names(sans: &[SanValue]) -> (Vec<Value>, bool) {
    let mut out = Vec::new();
    let mut from_csr = false;
    for s in sans {
        let (kind, v) = match s {
            SanValue::Email(v) => ("rfc822Name", v),
            SanValue::Dns(v) => ("dNSName", v),
            SanValue::Uri(v) => ("uniformResourceIdentifier", v),
            SanValue::Upn(_) => {
                from_csr = true;
                continue;
            }
        };
        out.push(json!({"type": kind, "value": v}));
    }
    (out, from_csr)
}

/// Whether an error chain holds a TLS certificate failure; returns a message naming the side.
fn tls_auth_failure(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(t) = tls {
            return match t {
                rustls::Error::AlertReceived(alert) => Some(format!(
                    "the gateway refused the client certificate (TLS alert {alert:?}); check \
                     clientCertificate and that the gateway trusts its issuer"
                )),
                rustls::Error::InvalidCertificate(why) => Some(format!(
                    "the gateway's certificate is not trusted ({why:?}); check trustBundle"
                )),
                _ => None,
            };
        }
        cur = e.source();
    }
    None
}

fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

impl Inner {
    fn url(&self, tail: &str) -> String {
        format!(
            "{}/v1/certificate-authorities/{}{tail}",
            self.base,
            segment(&self.ca_id)
        )
    }

    /// One HTTP exchange, holding a concurrency permit.
    async fn send_once(
        &self,
        method: &reqwest::Method,
        url: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<(u16, Vec<u8>), SendFailure> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| SendFailure::NotSent(e.to_string()))?;
        let full = if query.is_empty() {
            url.to_string()
        } else {
            let q: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{}={}", segment(k), segment(v)))
                .collect();
            format!("{url}?{}", q.join("&"))
        };
        let mut rb = self
            .http
            .request(method.clone(), full)
            .header("Accept", "application/json");
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let classify = |e: reqwest::Error| {
            if let Some(m) = tls_auth_failure(&e) {
                SendFailure::TlsAuth(m)
            } else if e.is_connect() {
                SendFailure::NotSent(chain_text(&e))
            } else {
                SendFailure::Ambiguous(chain_text(&e))
            }
        };
        let resp = rb.send().await.map_err(classify)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(classify)?;
        Ok((status, bytes.to_vec()))
    }

    fn gateway_error(method: &'static str, url: &str, status: u16, body: &[u8]) -> GatewayError {
        let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
        let (code, message) = match parsed {
            Some(ErrorBody {
                error: Some(ErrorDetail { code, message }),
                message: m,
            }) => (
                code,
                message
                    .or_else(|| m.and_then(|m| m.message))
                    .unwrap_or_default(),
            ),
            Some(ErrorBody {
                message: Some(MessageBody { message: Some(m) }),
                ..
            }) => (None, m),
            _ => (None, String::from_utf8_lossy(body).trim().to_string()),
        };
        let message = if message.is_empty() {
            "(no message)".to_string()
        } else {
            message.chars().take(2000).collect()
        };
        GatewayError::Gateway {
            method,
            url: url.to_string(),
            status,
            code,
            message,
        }
    }

    /// An idempotent call with retries; returns the body of a 2xx answer.
    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Vec<u8>, GatewayError> {
        let name = method_name(&method);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= self.retry.attempts.max(1);
            match self.send_once(&method, url, query, body).await {
                Ok((status, bytes)) if (200..300).contains(&status) => return Ok(bytes),
                Ok((status, bytes)) => {
                    if last || !retryable_status(status) {
                        return Err(Self::gateway_error(name, url, status, &bytes));
                    }
                    tracing::debug!("{name} {url}: {status}, retrying");
                }
                Err(SendFailure::TlsAuth(message)) => {
                    return Err(GatewayError::TlsAuth {
                        url: url.to_string(),
                        message,
                    });
                }
                Err(SendFailure::NotSent(message) | SendFailure::Ambiguous(message)) => {
                    if last {
                        return Err(GatewayError::Transport {
                            method: name,
                            url: url.to_string(),
                            message,
                            attempts: attempt,
                        });
                    }
                    tracing::debug!("{name} {url}: {message}, retrying");
                }
            }
            tokio::time::sleep(self.retry.delay(attempt)).await;
        }
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        url: &str,
        query: &[(&str, &str)],
    ) -> Result<T, GatewayError> {
        let bytes = self.call(reqwest::Method::GET, url, query, None).await?;
        serde_json::from_slice(&bytes).map_err(|e| GatewayError::Decode {
            url: url.to_string(),
            reason: e.to_string(),
        })
    }

    async fn profile(&self, id: &str) -> Result<WireProfile, GatewayError> {
        if let Some(p) = self.profiles.lock().ok().and_then(|m| m.get(id).cloned()) {
            return Ok(p);
        }
        #[derive(Deserialize)]
        struct R {
            profile: WireProfile,
        }
        let url = self.url(&format!("/profiles/{}", segment(id)));
        let r: R = self.get_json(&url, &[]).await?;
        if let Ok(mut m) = self.profiles.lock() {
            m.insert(id.to_string(), r.profile.clone());
        }
        Ok(r.profile)
    }

    async fn certificate(&self, serial: &str) -> Result<WireCertificate, GatewayError> {
        #[derive(Deserialize)]
        struct R {
            certificate: WireCertificate,
        }
        let url = self.url(&format!(
            "/certificates/{}",
            segment(&serial.to_ascii_lowercase())
        ));
        let r: R = self.get_json(&url, &[]).await?;
        Ok(r.certificate)
    }

    async fn issued(&self, serial: &str, request_id: &str) -> Result<IssuedCertificate, CaError> {
        let c = self.certificate(serial).await?;
        let data = c.certificate_data.ok_or_else(|| {
            CaError::Unavailable(format!(
                "the gateway returned certificate {serial} without its data"
            ))
        })?;
        let p = decode_certificate_text(&data).map_err(GatewayError::from)?;
        Ok(to_issued(p, request_id))
    }

    /// Pages the certificate events since `since` and returns the first certificate whose
    /// public key has fingerprint `spki`.
    async fn find_by_key(
        &self,
        spki: &str,
        since: OffsetDateTime,
    ) -> Result<Option<ParsedCertificate>, GatewayError> {
        let url = self.url("/certificate-events");
        // Events are collected per day: start a day early so the request's day is covered.
        let start = (since - time::Duration::days(1))
            .format(&Rfc3339)
            .unwrap_or_else(|_| "2000-01-01T00:00:00Z".into());
        let mut next: Option<String> = None;
        for _ in 0..10_000 {
            let mut query: Vec<(&str, &str)> = vec![("preferredPageSize", "50")];
            match &next {
                Some(n) => query.push(("nextPageIndex", n.as_str())),
                None => query.push(("startDate", start.as_str())),
            }
            let page: WireEvents = self.get_json(&url, &query).await?;
            for ev in &page.events {
                let parsed = match (&ev.certificate, &ev.serial_number) {
                    (Some(b64), _) if !b64.is_empty() => decode_certificate_text(b64).ok(),
                    (_, Some(serial)) => match self.certificate(serial).await {
                        Ok(c) => c
                            .certificate_data
                            .and_then(|d| decode_certificate_text(&d).ok()),
                        Err(_) => None,
                    },
                    _ => None,
                };
                if let Some(p) = parsed
                    && p.spki_sha256 == spki
                {
                    return Ok(Some(p));
                }
            }
            let more = page.more_pages.or(page.has_more).unwrap_or(false);
            match page.next_page_index {
                Some(n) if more && !n.is_empty() => next = Some(n),
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    async fn enroll(&self, req: &EnrollRequest) -> Result<IssuedCertificate, CaError> {
        let key = super::csr::verify_csr(&req.csr_der)?;
        let spki = spki_fingerprint(key.spki_der());
        let now = OffsetDateTime::now_utc();
        let mut sent_at = now;
        if let Some(log) = &self.log
            && let Some(rec) = log.get(&req.request_id).map_err(GatewayError::from)?
        {
            if rec.spki_sha256 != spki {
                return Err(CaError::RequestIdReused(req.request_id.clone()));
            }
            if let Some(serial) = &rec.serial {
                return self.issued(serial, &req.request_id).await;
            }
            if let Some(p) = self.find_by_key(&spki, rec.sent_at).await? {
                self.record(&req.request_id, &spki, rec.sent_at, Some(&p.serial))
                    .await?;
                return Ok(to_issued(p, &req.request_id));
            }
            sent_at = rec.sent_at;
        }
        let profile = match self.profile(&req.profile).await {
            Ok(p) => p,
            Err(e) if e.status() == Some(404) => {
                return Err(CaError::UnknownProfile(format!("{} ({e})", req.profile)));
            }
            Err(e) => return Err(e.into()),
        };
        let variables = subject_variables(
            &req.profile,
            &profile.subject_variable_requirements,
            &req.subject,
        )?;
        let (sans, from_csr) = subject_alt_names(&req.sans);
        let mut details = json!({
            "subjectDn": req.subject.to_string(),
            "validityPeriod": format!("PT{}S", req.validity_secs),
        });
        if from_csr {
            details["useSANFromCSR"] = json!(true);
        }
        let mut body = json!({
            "profileId": req.profile,
            "requiredFormat": {"format": "X509"},
            "csr": base64::engine::general_purpose::STANDARD.encode(&req.csr_der),
            "optionalCertificateRequestDetails": details,
            "includeCa": false,
        });
        if !variables.is_empty() {
            body["subjectVariables"] = Value::Array(variables);
        }
        if !sans.is_empty() {
            body["subjectAltNames"] = Value::Array(sans);
        }
        self.record(&req.request_id, &spki, sent_at, None).await?;

        let url = self.url("/enrollments");
        let mut attempt = 0;
        let bytes = loop {
            attempt += 1;
            let last = attempt >= self.retry.attempts.max(1);
            let (ambiguous, failure) = match self
                .send_once(&reqwest::Method::POST, &url, &[], Some(&body))
                .await
            {
                Ok((status, bytes)) if (200..300).contains(&status) => break bytes,
                Ok((status, bytes)) => {
                    let e = Self::gateway_error("POST", &url, status, &bytes);
                    if !retryable_status(status) {
                        return Err(match status {
                            404 if e.to_string().to_ascii_lowercase().contains("profile") => {
                                CaError::UnknownProfile(format!("{} ({e})", req.profile))
                            }
                            _ => e.into(),
                        });
                    }
                    // 429 means "not processed"; a 5xx may hide a backend that did issue.
                    (status != 429, e)
                }
                Err(SendFailure::TlsAuth(message)) => {
                    return Err(GatewayError::TlsAuth { url, message }.into());
                }
                Err(SendFailure::NotSent(message)) => (
                    false,
                    GatewayError::Transport {
                        method: "POST",
                        url: url.clone(),
                        message,
                        attempts: attempt,
                    },
                ),
                Err(SendFailure::Ambiguous(message)) => (
                    true,
                    GatewayError::Transport {
                        method: "POST",
                        url: url.clone(),
                        message,
                        attempts: attempt,
                    },
                ),
            };
            if ambiguous && let Some(p) = self.find_by_key(&spki, sent_at).await? {
                self.record(&req.request_id, &spki, sent_at, Some(&p.serial))
                    .await?;
                return Ok(to_issued(p, &req.request_id));
            }
            if last {
                return Err(failure.into());
            }
            tracing::debug!("enrolment {}: {failure}, retrying", req.request_id);
            tokio::time::sleep(self.retry.delay(attempt)).await;
        };
        #[derive(Deserialize)]
        struct R {
            enrollment: WireEnrollment,
        }
        let r: R = serde_json::from_slice(&bytes).map_err(|e| GatewayError::Decode {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        let e = r.enrollment;
        let parsed = match e.body.as_deref().map(str::trim) {
            Some(b) if !b.is_empty() => decode_certificate_text(b).map_err(GatewayError::from)?,
            _ if !e.serial_number.is_empty() => {
                // No body: fetch the certificate if the CA already issued it.
                match self.issued(&e.serial_number, &req.request_id).await {
                    Ok(i) => {
                        self.record(&req.request_id, &spki, sent_at, Some(&i.serial))
                            .await?;
                        return Ok(i);
                    }
                    Err(_) => {
                        return Err(GatewayError::NotIssued {
                            id: e.id,
                            status: e.status,
                        }
                        .into());
                    }
                }
            }
            _ => {
                return Err(GatewayError::NotIssued {
                    id: e.id,
                    status: e.status,
                }
                .into());
            }
        };
        if parsed.spki_sha256 != spki {
            return Err(GatewayError::KeyMismatch {
                serial: parsed.serial,
            }
            .into());
        }
        self.record(&req.request_id, &spki, sent_at, Some(&parsed.serial))
            .await?;
        Ok(to_issued(parsed, &req.request_id))
    }

    /// Logs a request: durably before it is sent (`serial` None), lazily once answered (a lost
    /// serial is found again through the certificate events). The file I/O runs on the
    /// blocking pool, off the workers that drive the other requests.
    async fn record(
        &self,
        request_id: &str,
        spki: &str,
        sent_at: OffsetDateTime,
        serial: Option<&str>,
    ) -> Result<(), GatewayError> {
        let Some(log) = self.log.clone() else {
            return Ok(());
        };
        let rec = RequestRecord {
            request_id: request_id.to_string(),
            spki_sha256: spki.to_string(),
            sent_at,
            serial: serial.map(str::to_string),
            pem: None,
        };
        tokio::task::spawn_blocking(move || {
            if rec.serial.is_some() {
                log.put_lazy(&rec)
            } else {
                log.put(&rec)
            }
        })
        .await
        .map_err(|e| GatewayError::Client(format!("request log task: {e}")))??;
        Ok(())
    }

    async fn find_by_request_id(
        &self,
        request_id: &str,
    ) -> Result<Option<IssuedCertificate>, CaError> {
        let Some(log) = &self.log else {
            return Ok(None);
        };
        let Some(rec) = log.get(request_id).map_err(GatewayError::from)? else {
            return Ok(None);
        };
        if let Some(serial) = &rec.serial {
            return self.issued(serial, request_id).await.map(Some);
        }
        match self.find_by_key(&rec.spki_sha256, rec.sent_at).await? {
            Some(p) => {
                self.record(request_id, &rec.spki_sha256, rec.sent_at, Some(&p.serial))
                    .await?;
                Ok(Some(to_issued(p, request_id)))
            }
            None => Ok(None),
        }
    }

    async fn status(&self, serial: &str) -> Result<CaCertStatus, CaError> {
        let c = match self.certificate(serial).await {
            Ok(c) => c,
            Err(e) if e.status() == Some(404) => return Ok(CaCertStatus::Unknown),
            Err(e) => return Err(e.into()),
        };
        Ok(wire_status(&c))
    }

    /// Posts a certificate action and succeeds only on a documented success: the answer's
    /// `action.status` is `COMPLETED`, or else (`ACCEPTED`, `REJECTED`, another status, a
    /// body that is not an `ActionResponse`) the certificate read back is in the state the
    /// action asks for. Anything else is an error, so the caller records nothing and the
    /// next pass tries again.
    async fn action(
        &self,
        serial: &str,
        kind: &'static str,
        reason: &str,
        wanted: Wanted,
    ) -> Result<(), GatewayError> {
        let url = self.url(&format!(
            "/certificates/{}/actions",
            segment(&serial.to_ascii_lowercase())
        ));
        let body = json!({"action": {
            "type": kind, "reason": reason, "comment": "keyfleet", "issueCrl": "true"
        }});
        let bytes = self
            .call(reqwest::Method::POST, &url, &[], Some(&body))
            .await?;
        let status = action_status(&bytes);
        if status
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("COMPLETED"))
        {
            return Ok(());
        }
        let read_back = match self.certificate(serial).await {
            Ok(c) if wanted.confirmed_by(&c) => return Ok(()),
            Ok(c) => match c.status.as_deref() {
                Some(s) => format!("{s:?}"),
                None => "no status".to_string(),
            },
            Err(e) => format!("unreadable ({e})"),
        };
        match status {
            Some(s) if s.eq_ignore_ascii_case("REJECTED") => Err(GatewayError::ActionRejected {
                action: kind,
                serial: serial.to_string(),
                status: s,
            }),
            Some(s) => Err(GatewayError::ActionUnconfirmed {
                action: kind,
                serial: serial.to_string(),
                answered: format!("action status {s:?}"),
                read_back,
            }),
            None => Err(GatewayError::ActionUnconfirmed {
                action: kind,
                serial: serial.to_string(),
                answered: format!(
                    "a body that is not an ActionResponse ({:?})",
                    String::from_utf8_lossy(&bytes)
                        .chars()
                        .take(200)
                        .collect::<String>()
                ),
                read_back,
            }),
        }
    }

    /// Hold or unhold: idempotent, and a revoked certificate gives a clear transition error.
    async fn hold_change(&self, serial: &str, hold: bool) -> Result<(), CaError> {
        let (kind, op) = if hold {
            ("HoldAction", "hold")
        } else {
            ("UnholdAction", "unhold")
        };
        let wanted = if hold { Wanted::Held } else { Wanted::Released };
        match self.action(serial, kind, "unspecified", wanted).await {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.status(), Some(400 | 404 | 409)) => {
                match self.status(serial).await? {
                    CaCertStatus::Held if hold => Ok(()),
                    CaCertStatus::Active if !hold => Ok(()),
                    CaCertStatus::Revoked { .. } => Err(CaError::InvalidTransition {
                        serial: serial.to_string(),
                        operation: op,
                        state: "revoked".into(),
                    }),
                    CaCertStatus::Unknown => Err(CaError::UnknownSerial(serial.to_string())),
                    _ => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The state a certificate action asks for, as the certificate read back must show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    /// Revoked (for good, any reason but a hold).
    Revoked,
    /// On hold.
    Held,
    /// Valid again after a hold.
    Released,
}

impl Wanted {
    /// Whether the certificate read back shows this state, explicitly: a certificate with no
    /// status confirms nothing.
    fn confirmed_by(self, c: &WireCertificate) -> bool {
        let Some(s) = c.status.as_deref() else {
            return false;
        };
        let s = s.to_ascii_lowercase();
        match (self, wire_status(c)) {
            (Wanted::Revoked, CaCertStatus::Revoked { .. }) => true,
            (Wanted::Held, CaCertStatus::Held) => true,
            (Wanted::Released, CaCertStatus::Active) => matches!(s.as_str(), "normal" | "active"),
            _ => false,
        }
    }
}

/// `action.status` of an `ActionResponse` body; `None` when the body is not one.
fn action_status(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct A {
        status: String,
    }
    #[derive(Deserialize)]
    struct R {
        action: A,
    }
    serde_json::from_slice::<R>(body)
        .ok()
        .map(|r| r.action.status)
}

fn method_name(m: &reqwest::Method) -> &'static str {
    match *m {
        reqwest::Method::GET => "GET",
        reqwest::Method::POST => "POST",
        reqwest::Method::PUT => "PUT",
        reqwest::Method::DELETE => "DELETE",
        _ => "HTTP",
    }
}

fn wire_status(c: &WireCertificate) -> CaCertStatus {
    let s = c.status.as_deref().unwrap_or("normal").to_ascii_lowercase();
    match s.as_str() {
        "held" | "hold" | "suspended" | "onhold" => CaCertStatus::Held,
        "revoked" => {
            let info = c.revocation_info.clone().unwrap_or_default();
            let reason = info
                .reason
                .as_deref()
                .map(parse_reason)
                .unwrap_or(RevocationReason::Unspecified);
            if reason == RevocationReason::CertificateHold {
                return CaCertStatus::Held;
            }
            let at = info
                .revocation_date
                .as_deref()
                .and_then(|d| OffsetDateTime::parse(d, &Rfc3339).ok())
                .unwrap_or(OffsetDateTime::UNIX_EPOCH);
            CaCertStatus::Revoked { reason, at }
        }
        _ => CaCertStatus::Active,
    }
}

fn to_issued(p: ParsedCertificate, request_id: &str) -> IssuedCertificate {
    IssuedCertificate {
        serial: p.serial,
        der: p.der,
        pem: p.pem,
        not_before: p.not_before,
        not_after: p.not_after,
        request_id: request_id.to_string(),
    }
}

fn pem_of(data: &Option<CertData>) -> Option<String> {
    data.as_ref()
        .and_then(|c| c.certificate_data.as_deref())
        .and_then(|d| decode_certificate_text(d).ok())
        .map(|p| p.pem)
}

fn summary(ca: &WireCa) -> CaSummary {
    CaSummary {
        id: ca.id.clone(),
        name: ca.name.clone(),
        properties: ca
            .properties
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
    }
}

fn profile_of(p: &WireProfile) -> Profile {
    let req = |r: &WireRequirement| Requirement {
        name: if r.name.is_empty() {
            r.kind.clone()
        } else {
            r.name.clone()
        },
        description: r.description.clone(),
        required: r.required,
    };
    Profile {
        id: p.id.clone(),
        name: p.name.clone(),
        subject_variables: p.subject_variable_requirements.iter().map(req).collect(),
        subject_alt_names: p.subject_alt_name_requirements.iter().map(req).collect(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_keep_pkiaas_ids() {
        assert_eq!(
            segment("ecsmcn158emsuw~1sw46hf1g0wrdc"),
            "ecsmcn158emsuw~1sw46hf1g0wrdc"
        );
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn reasons_round_trip() {
        for r in [
            RevocationReason::Unspecified,
            RevocationReason::KeyCompromise,
            RevocationReason::AffiliationChanged,
            RevocationReason::Superseded,
            RevocationReason::CessationOfOperation,
            RevocationReason::CertificateHold,
        ] {
            assert_eq!(parse_reason(reason_string(r)), r);
        }
        assert_eq!(
            parse_reason("KEYCOMPROMISE"),
            RevocationReason::KeyCompromise
        );
        assert_eq!(parse_reason("caCompromise"), RevocationReason::Unspecified);
    }

    #[test]
    fn subject_variables_follow_requirements() {
        let dn = DistinguishedName::parse("CN=Alice Doe,OU=Staff,O=Example").unwrap();
        let reqs = vec![
            WireRequirement {
                name: "cn".into(),
                required: true,
                ..Default::default()
            },
            WireRequirement {
                name: "O".into(),
                required: false,
                ..Default::default()
            },
            WireRequirement {
                name: "c".into(),
                required: false,
                ..Default::default()
            },
        ];
        let v = subject_variables("p", &reqs, &dn).unwrap();
        assert_eq!(
            v,
            vec![
                json!({"type": "cn", "value": "Alice Doe"}),
                json!({"type": "O", "value": "Example"}),
            ]
        );
        let strict = vec![WireRequirement {
            name: "c".into(),
            required: true,
            ..Default::default()
        }];
        let e = subject_variables("p", &strict, &dn).unwrap_err();
        assert!(e.to_string().contains("\"c\""), "{e}");
    }

    #[test]
    fn upn_goes_through_the_csr() {
        let (sans, from_csr) = subject_alt_names(&[
            SanValue::Email("a@example.com".into()),
            SanValue::Upn("a@corp.example.com".into()),
        ]);
        assert!(from_csr);
        assert_eq!(
            sans,
            vec![json!({"type": "rfc822Name", "value": "a@example.com"})]
        );
    }

    #[test]
    fn statuses_parse_case_insensitively() {
        let c = |s: &str, reason: Option<&str>| WireCertificate {
            status: Some(s.into()),
            revocation_info: reason.map(|r| WireRevocationInfo {
                reason: Some(r.into()),
                revocation_date: Some("2024-03-05T22:43:23.429157524Z".into()),
            }),
            ..Default::default()
        };
        assert_eq!(wire_status(&c("normal", None)), CaCertStatus::Active);
        assert_eq!(wire_status(&c("HELD", None)), CaCertStatus::Held);
        assert_eq!(wire_status(&c("Suspended", None)), CaCertStatus::Held);
        assert!(matches!(
            wire_status(&c("REVOKED", Some("keyCompromise"))),
            CaCertStatus::Revoked {
                reason: RevocationReason::KeyCompromise,
                ..
            }
        ));
        assert_eq!(
            wire_status(&WireCertificate::default()),
            CaCertStatus::Active
        );
    }

    #[test]
    fn only_completed_or_a_read_back_confirms_an_action() {
        assert_eq!(
            action_status(br#"{"type":"ActionResponse","action":{"status":"COMPLETED"}}"#)
                .as_deref(),
            Some("COMPLETED")
        );
        for garbage in [
            &b"<html>ok</html>"[..],
            b"",
            b"{}",
            br#"{"action":{}}"#,
            b"null",
        ] {
            assert_eq!(action_status(garbage), None);
        }
        let c = |s: Option<&str>, reason: Option<&str>| WireCertificate {
            status: s.map(str::to_string),
            revocation_info: reason.map(|r| WireRevocationInfo {
                reason: Some(r.into()),
                revocation_date: None,
            }),
            ..WireCertificate::default()
        };
        assert!(Wanted::Revoked.confirmed_by(&c(Some("REVOKED"), Some("superseded"))));
        assert!(!Wanted::Revoked.confirmed_by(&c(Some("revoked"), Some("certificateHold"))));
        assert!(!Wanted::Revoked.confirmed_by(&c(Some("normal"), None)));
        assert!(Wanted::Held.confirmed_by(&c(Some("held"), None)));
        assert!(!Wanted::Held.confirmed_by(&c(Some("normal"), None)));
        assert!(Wanted::Released.confirmed_by(&c(Some("normal"), None)));
        assert!(
            !Wanted::Released.confirmed_by(&c(None, None)),
            "no status confirms nothing"
        );
        assert!(!Wanted::Released.confirmed_by(&c(Some("expired"), None)));
        assert!(!Wanted::Released.confirmed_by(&c(Some("held"), None)));
    }

    #[test]
    fn gateway_errors_keep_the_gateway_message() {
        let body = br#"{"type":"ErrorResponse","error":{"code":"cagw-4018","message":"CA with specified name not found"}}"#;
        let e = Inner::gateway_error(
            "GET",
            "https://x/cagw/v1/certificate-authorities/zz",
            404,
            body,
        );
        let s = e.to_string();
        assert!(
            s.contains("404 (cagw-4018): CA with specified name not found"),
            "{s}"
        );
        let raw = Inner::gateway_error("GET", "u", 502, b"<html>bad gateway</html>");
        assert!(raw.to_string().contains("<html>bad gateway</html>"));
        assert!(matches!(CaError::from(e), CaError::Rejected(_)));
    }
}
