//! The cfssl connector: [`CertificateAuthority`] of kind `cfssl`, against `cfssl serve` (the
//! 1.2 API Debian ships).
//!
//! What it owns: HMAC-authenticated signing (`/api/v1/cfssl/authsign`), revocation
//! (`/api/v1/cfssl/revoke`, with the decimal serial and an empty authority key id, as that
//! version stores them), the CA certificate (`/api/v1/cfssl/info`), and a request log so that
//! enrolling the same request id twice returns the first certificate.
//!
//! What it does NOT do: hold/unhold (cfssl has no certificate hold: [`Cfssl::hold`] fails, it
//! never revokes instead), status look-ups (that API has no endpoint to read a certificate's
//! status back), CRL publication (cfssl's `gencrl` needs the CA key, which stays with the CA's
//! operator), or find a certificate signed just before a crash whose answer was lost (no
//! search endpoint either): those requests are reported as not found.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;
use time::OffsetDateTime;

use super::remote::{
    RemoteError, RequestLog, RequestRecord, RetryPolicy, decode_certificate_text, retryable_status,
    spki_fingerprint, tls_client_config,
};
use super::{
    CaCapabilities, CaCertStatus, CaError, CertificateAuthority, EnrollRequest, IssuedCertificate,
    RevocationReason,
};
use crate::names::SanValue;

/// How to reach a cfssl server.
#[derive(Debug, Clone)]
pub struct CfsslConfig {
    /// Base URL, e.g. `http://127.0.0.1:8888`.
    pub url: String,
    /// The HMAC key, hex (cfssl's `auth_keys` entry of type `standard`).
    pub auth_key_hex: String,
    /// Roots trusted for an `https://` URL (the policy's `trustBundle`).
    pub trust: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Profile used when a certificate names none (an empty profile means cfssl's default).
    pub default_profile: Option<String>,
    /// Timeout of one HTTP exchange.
    pub timeout: Duration,
    /// Retries (connect errors, 429, 5xx).
    pub retry: RetryPolicy,
    /// Folder of the request log.
    pub request_log: Option<std::path::PathBuf>,
}

/// Failures talking to cfssl.
#[derive(Debug, thiserror::Error)]
pub enum CfsslError {
    /// The auth key is not hex.
    #[error("the cfssl auth key is not hex")]
    BadAuthKey,
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// The server could not be reached.
    #[error("{url}: {message} (after {attempts} attempt(s))")]
    Transport {
        /// The URL.
        url: String,
        /// What failed.
        message: String,
        /// Attempts made.
        attempts: u32,
    },
    /// cfssl answered `success: false` or an error status.
    #[error("{url}: cfssl answered {status}: {message}")]
    Refused {
        /// The URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// cfssl's error messages.
        message: String,
    },
    /// The answer did not have the expected shape.
    #[error("{url}: unexpected response: {reason}")]
    Decode {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A local piece failed (certificate decoding, request log).
    #[error(transparent)]
    Local(#[from] RemoteError),
}

impl From<CfsslError> for CaError {
    fn from(e: CfsslError) -> Self {
        match &e {
            CfsslError::Refused { status, .. } if *status < 500 => CaError::Rejected(e.to_string()),
            _ => CaError::Unavailable(e.to_string()),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Envelope {
    success: bool,
    result: Value,
    errors: Vec<Value>,
}

/// A connection to one cfssl server.
pub struct Cfssl {
    cfg: CfsslConfig,
    key: Vec<u8>,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
    log: Option<RequestLog>,
}

impl std::fmt::Debug for Cfssl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cfssl").field("url", &self.cfg.url).finish()
    }
}

/// Decodes one cfssl answer (HTTP `status` and body, from `url`): the `result` of a successful
/// envelope, or the refusal with cfssl's own messages. Public for the fuzz targets.
pub fn decode_answer(url: &str, status: u16, bytes: &[u8]) -> Result<Value, CfsslError> {
    let env: Envelope = serde_json::from_slice(bytes).map_err(|_| CfsslError::Refused {
        url: url.to_string(),
        status,
        message: String::from_utf8_lossy(bytes)
            .trim()
            .chars()
            .take(500)
            .collect(),
    })?;
    if !env.success || !(200..300).contains(&status) {
        let message = env
            .errors
            .iter()
            .map(|e| {
                e.get("message")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| e.to_string())
            })
            .collect::<Vec<_>>()
            .join("; ");
        return Err(CfsslError::Refused {
            url: url.to_string(),
            status,
            message: if message.is_empty() {
                "(no message)".into()
            } else {
                message
            },
        });
    }
    Ok(env.result)
}

/// The decimal form of a hex serial, as cfssl 1.2 stores it.
pub fn decimal_serial(hex_serial: &str) -> Option<String> {
    let normalized = super::normalize_serial(hex_serial)?;
    // Long division of the hex digits into base-10^9 limbs (little-endian).
    let mut limbs: Vec<u32> = vec![0];
    for c in normalized.chars() {
        let d = c.to_digit(16)?;
        let mut carry = u64::from(d);
        for limb in limbs.iter_mut() {
            let v = u64::from(*limb) * 16 + carry;
            *limb = (v % 1_000_000_000) as u32;
            carry = v / 1_000_000_000;
        }
        while carry > 0 {
            limbs.push((carry % 1_000_000_000) as u32);
            carry /= 1_000_000_000;
        }
    }
    let mut out = String::new();
    for (i, limb) in limbs.iter().rev().enumerate() {
        if i == 0 {
            out.push_str(&limb.to_string());
        } else {
            out.push_str(&format!("{limb:09}"));
        }
    }
    Some(out)
}

impl Cfssl {
    /// Builds the client (no traffic yet).
    pub fn new(cfg: CfsslConfig) -> Result<Self, CfsslError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let key = hex::decode(cfg.auth_key_hex.trim()).map_err(|_| CfsslError::BadAuthKey)?;
        let tls = tls_client_config(&cfg.trust, None)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| CfsslError::Client(e.to_string()))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CfsslError::Client(e.to_string()))?;
        let log = cfg.request_log.as_deref().map(RequestLog::new);
        Ok(Cfssl {
            cfg,
            key,
            http,
            rt,
            log,
        })
    }

    fn post(&self, endpoint: &str, body: &Value) -> Result<Value, CfsslError> {
        let url = format!(
            "{}/api/v1/cfssl/{endpoint}",
            self.cfg.url.trim_end_matches('/')
        );
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= self.cfg.retry.attempts.max(1);
            let sent = self
                .rt
                .block_on(async { self.http.post(&url).json(body).send().await });
            let resp = match sent {
                Ok(r) => r,
                Err(e) if e.is_connect() && !last => {
                    std::thread::sleep(self.cfg.retry.delay(attempt));
                    continue;
                }
                Err(e) => {
                    return Err(CfsslError::Transport {
                        url,
                        message: e.to_string(),
                        attempts: attempt,
                    });
                }
            };
            let status = resp.status().as_u16();
            let bytes = self
                .rt
                .block_on(resp.bytes())
                .map_err(|e| CfsslError::Transport {
                    url: url.clone(),
                    message: e.to_string(),
                    attempts: attempt,
                })?;
            if retryable_status(status) && !last {
                std::thread::sleep(self.cfg.retry.delay(attempt));
                continue;
            }
            return decode_answer(&url, status, &bytes);
        }
    }

    /// Signs with `authsign`: the request bytes and their HMAC-SHA256 under the auth key.
    fn authsign(&self, request: &Value) -> Result<Value, CfsslError> {
        let bytes = serde_json::to_vec(request).unwrap_or_default();
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&self.key)
            .map_err(|_| CfsslError::BadAuthKey)?;
        mac.update(&bytes);
        let token = mac.finalize().into_bytes();
        let b64 = base64::engine::general_purpose::STANDARD;
        self.post(
            "authsign",
            &json!({"token": b64.encode(token), "request": b64.encode(&bytes)}),
        )
    }

    /// `info`: the CA certificate, PEM.
    pub fn info(&self) -> Result<String, CfsslError> {
        let url = format!("{}/api/v1/cfssl/info", self.cfg.url);
        let r = self.post(
            "info",
            &json!({"label": "", "profile": self.cfg.default_profile.clone().unwrap_or_default()}),
        )?;
        r.get("certificate")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| CfsslError::Decode {
                url,
                reason: "no certificate in the info result".into(),
            })
    }

    fn record(&self, rec: &RequestRecord) -> Result<(), CfsslError> {
        if let Some(log) = &self.log {
            log.put(rec)?;
        }
        Ok(())
    }
}

impl CertificateAuthority for Cfssl {
    fn capabilities(&self) -> CaCapabilities {
        CaCapabilities { hold: false }
    }

    fn enroll(&self, req: &EnrollRequest) -> Result<IssuedCertificate, CaError> {
        let key = super::csr::verify_csr(&req.csr_der)?;
        let spki = spki_fingerprint(key.spki_der());
        if let Some(found) = self.find_by_request_id(&req.request_id)? {
            return Ok(found);
        }
        if let Some(log) = &self.log
            && let Some(rec) = log.get(&req.request_id).map_err(CfsslError::from)?
            && rec.spki_sha256 != spki
        {
            return Err(CaError::RequestIdReused(req.request_id.clone()));
        }
        let csr_pem = der::pem::encode_string(
            "CERTIFICATE REQUEST",
            der::pem::LineEnding::LF,
            &req.csr_der,
        )
        .map_err(|e| CaError::CsrDecode(e.to_string()))?;
        // cfssl 1.2 takes DNS names and e-mail addresses as `hosts`; a UPN stays in the CSR.
        let hosts: Vec<&str> = req
            .sans
            .iter()
            .filter_map(|s| match s {
                SanValue::Dns(v) | SanValue::Email(v) => Some(v.as_str()),
                _ => None,
            })
            .collect();
        let profile = if req.profile.is_empty() {
            self.cfg.default_profile.clone().unwrap_or_default()
        } else {
            req.profile.clone()
        };
        let mut request = json!({"certificate_request": csr_pem, "profile": profile});
        if !hosts.is_empty() {
            request["hosts"] = json!(hosts);
        }
        let mut rec = RequestRecord {
            request_id: req.request_id.clone(),
            spki_sha256: spki.clone(),
            sent_at: OffsetDateTime::now_utc(),
            serial: None,
            pem: None,
        };
        self.record(&rec)?;
        let result = self.authsign(&request).map_err(|e| match &e {
            CfsslError::Refused { message, .. }
                if message.to_ascii_lowercase().contains("policy")
                    || message.to_ascii_lowercase().contains("profile") =>
            {
                CaError::UnknownProfile(format!("{profile} ({e})"))
            }
            _ => e.into(),
        })?;
        let pem = result
            .get("certificate")
            .and_then(Value::as_str)
            .ok_or_else(|| CaError::Unavailable("cfssl returned no certificate".into()))?;
        let parsed = decode_certificate_text(pem).map_err(CfsslError::from)?;
        if parsed.spki_sha256 != spki {
            return Err(CaError::Rejected(format!(
                "cfssl returned certificate {} for a different public key",
                parsed.serial
            )));
        }
        rec.serial = Some(parsed.serial.clone());
        rec.pem = Some(parsed.pem.clone());
        self.record(&rec)?;
        Ok(IssuedCertificate {
            serial: parsed.serial,
            der: parsed.der,
            pem: parsed.pem,
            not_before: parsed.not_before,
            not_after: parsed.not_after,
            request_id: req.request_id.clone(),
        })
    }

    fn find_by_request_id(&self, request_id: &str) -> Result<Option<IssuedCertificate>, CaError> {
        let Some(log) = &self.log else {
            return Ok(None);
        };
        let Some(rec) = log.get(request_id).map_err(CfsslError::from)? else {
            return Ok(None);
        };
        match rec.pem {
            Some(pem) => {
                let p = decode_certificate_text(&pem).map_err(CfsslError::from)?;
                Ok(Some(IssuedCertificate {
                    serial: p.serial,
                    der: p.der,
                    pem: p.pem,
                    not_before: p.not_before,
                    not_after: p.not_after,
                    request_id: request_id.to_string(),
                }))
            }
            None => {
                tracing::warn!(
                    "cfssl request {request_id} was sent but its answer was lost; cfssl cannot \
                     be searched, so a certificate for key {} may exist unrecorded",
                    rec.spki_sha256
                );
                Ok(None)
            }
        }
    }

    fn revoke(&self, serial: &str, reason: RevocationReason) -> Result<(), CaError> {
        let decimal =
            decimal_serial(serial).ok_or_else(|| CaError::UnknownSerial(serial.to_string()))?;
        let reason = super::entrust::reason_string(reason);
        self.post(
            "revoke",
            &json!({"serial": decimal, "authority_key_id": "", "reason": reason}),
        )
        .map_err(|e| match &e {
            CfsslError::Refused { message, .. } if message.contains("not found") => {
                CaError::UnknownSerial(serial.to_string())
            }
            _ => e.into(),
        })?;
        Ok(())
    }

    fn hold(&self, _serial: &str) -> Result<(), CaError> {
        Err(CaError::Unsupported(
            "certificate hold (cfssl cannot suspend)",
        ))
    }

    fn unhold(&self, _serial: &str) -> Result<(), CaError> {
        Err(CaError::Unsupported(
            "certificate unhold (cfssl cannot suspend)",
        ))
    }

    fn status(&self, _serial: &str) -> Result<CaCertStatus, CaError> {
        Err(CaError::Unsupported(
            "certificate status look-up (cfssl 1.2 has no API for it)",
        ))
    }

    fn ca_certificate_pem(&self) -> Result<String, CaError> {
        Ok(self.info()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_serials() {
        assert_eq!(decimal_serial("0").as_deref(), Some("0"));
        assert_eq!(decimal_serial("FF").as_deref(), Some("255"));
        assert_eq!(decimal_serial("0x0a:bc").as_deref(), Some("2748"));
        assert_eq!(
            decimal_serial("FFFFFFFFFFFFFFFFFFFF").as_deref(),
            Some("1208925819614629174706175")
        );
        assert_eq!(
            decimal_serial("1E8A2F6B3C9D0E1F2A3B4C5D6E7F8091A2B3C4D5").as_deref(),
            Some("174351356730333621769296694396628493674938090709")
        );
        assert_eq!(decimal_serial("xyz"), None);
    }
}
