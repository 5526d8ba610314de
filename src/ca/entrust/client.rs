//! The HTTP side of the connector: one CA's REST calls over mutual TLS, with timeouts,
//! retries with backoff, a concurrency bound, gateway error mapping, idempotent enrolment
//! (request log, recovery by the CA's certificate events) and certificate actions.

use std::collections::BTreeMap;
use std::sync::Mutex;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::Semaphore;

use super::error::GatewayError;
use super::request::{subject_alt_names, subject_variables};
use super::wire::{
    ErrorBody, ErrorDetail, MessageBody, Wanted, WireCertificate, WireEnrollment, WireEvents,
    WireProfile, action_status, to_issued, wire_status,
};
use crate::ca::remote::{
    ParsedCertificate, RequestLog, RequestRecord, RetryPolicy, decode_certificate_text,
    retryable_status, spki_fingerprint,
};
use crate::ca::{CaCertStatus, CaError, EnrollRequest, IssuedCertificate};

enum SendFailure {
    /// Nothing reached the server (connection refused, TLS handshake failed before sending).
    NotSent(String),
    /// The request may have been processed (timeout, connection dropped after sending).
    Ambiguous(String),
    /// A certificate was refused in the TLS handshake: retrying cannot help.
    TlsAuth(String),
}

pub(super) struct Inner {
    pub(super) base: String,
    pub(super) ca_id: String,
    pub(super) http: reqwest::Client,
    pub(super) permits: Semaphore,
    pub(super) retry: RetryPolicy,
    pub(super) log: Option<RequestLog>,
    pub(super) profiles: Mutex<BTreeMap<String, WireProfile>>,
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

pub(super) fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
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
    pub(super) fn url(&self, tail: &str) -> String {
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

    pub(super) fn gateway_error(
        method: &'static str,
        url: &str,
        status: u16,
        body: &[u8],
    ) -> GatewayError {
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

    pub(super) async fn get_json<T: for<'de> Deserialize<'de>>(
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

    pub(super) async fn profile(&self, id: &str) -> Result<WireProfile, GatewayError> {
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

    pub(super) async fn enroll(&self, req: &EnrollRequest) -> Result<IssuedCertificate, CaError> {
        let key = crate::ca::csr::verify_csr(&req.csr_der)?;
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

    pub(super) async fn find_by_request_id(
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

    pub(super) async fn status(&self, serial: &str) -> Result<CaCertStatus, CaError> {
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
    pub(super) async fn action(
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
    pub(super) async fn hold_change(&self, serial: &str, hold: bool) -> Result<(), CaError> {
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

fn method_name(m: &reqwest::Method) -> &'static str {
    match *m {
        reqwest::Method::GET => "GET",
        reqwest::Method::POST => "POST",
        reqwest::Method::PUT => "PUT",
        reqwest::Method::DELETE => "DELETE",
        _ => "HTTP",
    }
}

#[cfg(test)]
mod tests {
    use super::{Inner, segment};
    use crate::ca::CaError;
    #[test]
    fn segments_keep_pkiaas_ids() {
        assert_eq!(
            segment("ecsmcn158emsuw~1sw46hf1g0wrdc"),
            "ecsmcn158emsuw~1sw46hf1g0wrdc"
        );
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
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
