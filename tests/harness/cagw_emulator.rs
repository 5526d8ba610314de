//! An Entrust CA Gateway emulator for tests and benchmarks (test support, not product code).
//!
//! Written from the API reference (shared/reference/entrust-cagw-api.md), not from Keyfleet's
//! client, so that it checks the client: HTTPS on 127.0.0.1 that REQUIRES a client certificate
//! issued by its client CA (others fail the handshake), maps client subject DNs to roles
//! (unknown DN → 403, read-only role POSTing → 403), serves `/cagw/v1/...` (CAs, status,
//! profiles, enrolments, certificates, actions, certificate events with paging), enforces each
//! profile's required subject variables, signs with a real CA key (rcgen; certificates verify
//! with openssl), keeps status (normal / held / revoked with reason and date) with the §7 state
//! machine, and publishes a CRL at `/emulator/crl/{caId}` (the real CRL path is not in the
//! reference). Faults can be injected: latency, error statuses (5xx with or without a JSON
//! body, 429), dropped connections (before or after processing the request), and a standing
//! fault on every certificate action (revoke, hold, unhold) until cleared: an error status, or
//! a 200 whose body is garbage or carries an undocumented status, with or without acting.
//!
//! Choices the reference leaves open ([I] there): the enrolment envelope type is
//! `EnrollmentResponse`; with `useSANFromCSR: true` the certificate's SAN extension is copied
//! from the CSR, else built from `subjectAltNames`; the subject comes from `subjectDn` when
//! given, else from `subjectVariables`; hold/unhold on a revoked certificate is a 400; only EC
//! CSR signatures are verified (RSA CSRs are accepted as they are).

#![allow(dead_code, clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_server::tls::TlsInfo;
use base64::Engine as _;
use der::{Decode, Encode};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A fault the next matching request suffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Answer this status with an ErrorResponse body (or a non-JSON body for 502).
    Status(u16),
    /// Close the connection without answering, before doing anything.
    DropBefore,
    /// Do the work (e.g. issue the certificate), then close the connection without answering.
    DropAfter,
}

/// A fault every certificate action (`POST .../actions`) suffers while it is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ActionFault {
    /// Answer this status with an ErrorResponse body, without acting.
    Status(u16),
    /// Answer 200 with a body that is not JSON, without acting.
    Garbage,
    /// Answer 200 with an ActionResponse whose `action.status` is this, without acting.
    ActionStatus(&'static str),
    /// Act, then answer 200 with a body that is not JSON.
    ActThenGarbage,
}

/// Which requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// Any API request.
    Any,
    /// `POST .../enrollments` only.
    Enroll,
}

/// One request as the emulator saw it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) status: u16,
    pub(crate) client_dn: String,
}

#[derive(Debug, Clone)]
struct Cert {
    ca: String,
    serial: String,
    der: Vec<u8>,
    subject: String,
    status: &'static str,
    reason: Option<String>,
    revoked_at: Option<OffsetDateTime>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

#[derive(Debug, Clone)]
struct Event {
    ca: String,
    at: OffsetDateTime,
    action: &'static str,
    serial: String,
    reason: String,
}

struct IssuingCa {
    id: String,
    name: String,
    key: rcgen::KeyPair,
    params: rcgen::CertificateParams,
    der: Vec<u8>,
    profiles: Vec<Value>,
}

struct Inner {
    cas: Vec<IssuingCa>,
    roles: HashMap<String, &'static str>,
    certs: Mutex<BTreeMap<String, Cert>>,
    events: Mutex<Vec<Event>>,
    faults: Mutex<VecDeque<(Target, Fault)>>,
    /// The standing action fault, and how many actions still pass before it applies.
    action_fault: Mutex<Option<(ActionFault, usize)>>,
    latency_ms: AtomicU64,
    seen: Mutex<Vec<Seen>>,
}

/// A running emulator with its credential files.
pub(crate) struct Emulator {
    pub(crate) addr: SocketAddr,
    dir: tempfile::TempDir,
    inner: Arc<Inner>,
    handle: axum_server::Handle<SocketAddr>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The main CA id.
pub(crate) const CA_ID: &str = "CA-Jupiter";
/// A second CA id.
pub(crate) const CA_ID_2: &str = "CA-Saturn";
/// The DN of the integrator client certificate.
pub(crate) const CLIENT_DN: &str = "CN=keyfleet-integrator,O=Example";
/// The DN of a trusted client certificate that the gateway has not configured.
pub(crate) const UNKNOWN_DN: &str = "CN=stranger,O=Example";
/// The DN of a read-only client.
pub(crate) const READONLY_DN: &str = "CN=auditor,O=Example";
/// The PKCS#12 password of `client.p12`.
pub(crate) const P12_PASSWORD: &str = "p12-s3cret";

fn dn(pairs: &[(rcgen::DnType, &str)]) -> rcgen::DistinguishedName {
    let mut d = rcgen::DistinguishedName::new();
    for (t, v) in pairs {
        d.push(t.clone(), *v);
    }
    d
}

fn ca_params(cn: &str) -> rcgen::CertificateParams {
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = dn(&[
        (rcgen::DnType::CommonName, cn),
        (rcgen::DnType::OrganizationName, "Emulated Entrust"),
    ]);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = OffsetDateTime::now_utc() - time::Duration::days(1);
    p.not_after = OffsetDateTime::now_utc() + time::Duration::days(3650);
    p
}

fn new_key() -> rcgen::KeyPair {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("generate key")
}

fn leaf(
    cn: &str,
    issuer: &rcgen::Issuer<'_, &rcgen::KeyPair>,
    server: bool,
) -> (String, String, Vec<u8>) {
    let key = new_key();
    let mut p = if server {
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("params")
    } else {
        rcgen::CertificateParams::default()
    };
    let parsed = crate_dn(cn);
    p.distinguished_name = parsed;
    p.extended_key_usages = vec![if server {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    }];
    p.not_before = OffsetDateTime::now_utc() - time::Duration::days(1);
    p.not_after = OffsetDateTime::now_utc() + time::Duration::days(365);
    let cert = p.signed_by(&key, issuer).expect("sign leaf");
    (cert.pem(), key.serialize_pem(), key.serialize_der())
}

/// Parses `CN=x,O=y` (simple, unescaped) into an rcgen DN; attribute names are
/// case-insensitive.
fn crate_dn(s: &str) -> rcgen::DistinguishedName {
    let mut d = rcgen::DistinguishedName::new();
    for part in s.split(',') {
        let Some((k, v)) = part.split_once('=') else {
            continue;
        };
        let t = match k.trim().to_ascii_lowercase().as_str() {
            "cn" => rcgen::DnType::CommonName,
            "o" => rcgen::DnType::OrganizationName,
            "ou" => rcgen::DnType::OrganizationalUnitName,
            "c" => rcgen::DnType::CountryName,
            "l" => rcgen::DnType::LocalityName,
            "st" => rcgen::DnType::StateOrProvinceName,
            other => rcgen::DnType::CustomDnType(match other {
                "e" | "emailaddress" => vec![1, 2, 840, 113549, 1, 9, 1],
                "uid" => vec![0, 9, 2342, 19200300, 100, 1, 1],
                "dc" => vec![0, 9, 2342, 19200300, 100, 1, 25],
                "serialnumber" => vec![2, 5, 4, 5],
                "gn" | "givenname" => vec![2, 5, 4, 42],
                "sn" | "surname" => vec![2, 5, 4, 4],
                _ => continue,
            }),
        };
        d.push(t, v.trim());
    }
    d
}

/// The subject DN of a DER certificate, as `CN=..,O=..` (x509-cert's RFC 4514 rendering).
fn subject_of(der: &[u8]) -> String {
    x509_cert::Certificate::from_der(der)
        .map(|c| c.tbs_certificate().subject().to_string())
        .unwrap_or_default()
}

/// A DN for matching configured clients: attribute order and case do not matter (x509-cert
/// prints RDNs in reverse order).
fn normalize_dn(s: &str) -> String {
    let mut parts: Vec<String> = s
        .split(',')
        .map(|p| p.trim().to_ascii_lowercase())
        .collect();
    parts.sort();
    parts.join(",")
}

fn now_text() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn error(status: u16, code: &str, message: &str) -> Response {
    let body = json!({
        "type": "ErrorResponse",
        "error": {"code": code, "message": message, "details": []},
        "message": {"message": message, "details": []},
    });
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Json(body),
    )
        .into_response()
}

/// A response whose body fails at once: hyper drops the connection without a complete answer.
fn dropped() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("emulated dropped connection"))
    });
    Response::new(Body::from_stream(stream))
}

fn profiles() -> Vec<Value> {
    let req = |name: &str, required: bool| json!({"name": name, "description": name, "required": required});
    vec![
        json!({
            "id": "piv-auth", "name": "PIV Authentication",
            "properties": {"key_usage": "digital signature"}, "protocols": [],
            "requestedProperties": [],
            "subjectAltNameRequirements": [{"type": "rfc822Name", "required": false}],
            "subjectVariableRequirements": [req("cn", true), req("o", false)],
        }),
        json!({
            "id": "piv-key-mgmt", "name": "PIV Key Management",
            "properties": {"key_usage": "key encipherment"}, "protocols": [],
            "requestedProperties": [], "subjectAltNameRequirements": [],
            "subjectVariableRequirements": [req("cn", true)],
        }),
    ]
}

impl Emulator {
    /// Starts an emulator on a free port of 127.0.0.1 and writes its credential files.
    pub(crate) fn start() -> Emulator {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, data: &[u8]| {
            std::fs::write(dir.path().join(name), data).expect("write emulator file");
        };
        // TLS: a server CA (the trust bundle) and a client CA (whose certificates the gateway
        // accepts); plus an unrelated CA whose client certificate must be refused.
        let server_ca_key = new_key();
        let server_ca_params = ca_params("Emulated Gateway TLS CA");
        let server_ca = server_ca_params.self_signed(&server_ca_key).expect("ca");
        let server_issuer = rcgen::Issuer::new(server_ca_params, &server_ca_key);
        let (server_pem, server_key_pem, _) = leaf("CN=127.0.0.1", &server_issuer, true);
        write("trust-bundle.pem", server_ca.pem().as_bytes());

        let client_ca_key = new_key();
        let client_ca_params = ca_params("Emulated Gateway Client CA");
        let client_ca = client_ca_params.self_signed(&client_ca_key).expect("ca");
        let client_issuer = rcgen::Issuer::new(client_ca_params, &client_ca_key);
        for (name, subject) in [
            ("client", CLIENT_DN),
            ("stranger", UNKNOWN_DN),
            ("auditor", READONLY_DN),
        ] {
            let (cert, key, key_der) = leaf(subject, &client_issuer, false);
            write(&format!("{name}.pem"), cert.as_bytes());
            write(&format!("{name}-key.pem"), key.as_bytes());
            if name == "client" {
                let cert_der = rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes())
                    .expect("client cert der");
                let chain = p12_keystore::PrivateKeyChain::new(
                    vec![1u8; 20],
                    p12_keystore::PrivateKey::from_der(&key_der).expect("p12 key"),
                    [p12_keystore::Certificate::from_der(&cert_der).expect("p12 cert")],
                );
                let mut ks = p12_keystore::KeyStore::new();
                ks.add_entry(
                    "client",
                    p12_keystore::KeyStoreEntry::PrivateKeyChain(chain),
                );
                let p12 = ks.writer(P12_PASSWORD).write().expect("write p12");
                write("client.p12", &p12);
            }
        }
        let rogue_key = new_key();
        let rogue_params = ca_params("Rogue CA");
        let rogue_issuer = rcgen::Issuer::new(rogue_params, &rogue_key);
        let (rogue, rogue_key_pem, _) = leaf(CLIENT_DN, &rogue_issuer, false);
        write("rogue.pem", rogue.as_bytes());
        write("rogue-key.pem", rogue_key_pem.as_bytes());

        // The issuing CAs behind the gateway.
        let cas = [
            (CA_ID, "Jupiter Issuing CA"),
            (CA_ID_2, "Saturn Issuing CA"),
        ]
        .into_iter()
        .map(|(id, cn)| {
            let key = new_key();
            let params = ca_params(cn);
            let cert = params.self_signed(&key).expect("issuing ca");
            write(&format!("{id}.pem"), cert.pem().as_bytes());
            IssuingCa {
                id: id.to_string(),
                name: format!("{cn} (emulated)"),
                key,
                params,
                der: cert.der().to_vec(),
                profiles: profiles(),
            }
        })
        .collect();
        let mut roles = HashMap::new();
        roles.insert(normalize_dn(CLIENT_DN), "integrator");
        roles.insert(normalize_dn(READONLY_DN), "read-only-integrator");
        let inner = Arc::new(Inner {
            cas,
            roles,
            certs: Mutex::new(BTreeMap::new()),
            events: Mutex::new(Vec::new()),
            faults: Mutex::new(VecDeque::new()),
            action_fault: Mutex::new(None),
            latency_ms: AtomicU64::new(0),
            seen: Mutex::new(Vec::new()),
        });

        // rustls server config requiring a client certificate from the client CA.
        let mut client_roots = rustls::RootCertStore::empty();
        client_roots
            .add(client_ca.der().clone())
            .expect("client ca root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(client_roots),
            provider.clone(),
        )
        .build()
        .expect("client verifier");
        use rustls::pki_types::pem::PemObject;
        let chain = vec![
            rustls::pki_types::CertificateDer::from_pem_slice(server_pem.as_bytes())
                .expect("server cert"),
        ];
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(server_key_pem.as_bytes())
            .expect("server key");
        let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .expect("server config");
        server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(server_config));

        let app = router(inner.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind emulator");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let handle: axum_server::Handle<SocketAddr> = axum_server::Handle::new();
        let h = handle.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("emulator runtime");
            rt.block_on(async move {
                let server = axum_server::from_tcp_rustls(listener, tls)
                    .expect("emulator listener")
                    .handle(h);
                if let Err(e) = server.serve(app.into_make_service()).await {
                    eprintln!("emulator stopped: {e}");
                }
            });
        });
        Emulator {
            addr,
            dir,
            inner,
            handle,
            thread: Some(thread),
        }
    }

    /// The base URL clients store (ends in `/cagw`).
    pub(crate) fn url(&self) -> String {
        format!("https://127.0.0.1:{}/cagw", self.addr.port())
    }

    /// A credential or CA file: `trust-bundle.pem`, `client.pem`, `client-key.pem`,
    /// `client.p12`, `stranger.pem`, `auditor.pem`, `rogue.pem` (+ `-key.pem`), `CA-Jupiter.pem`.
    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The folder of the credential files.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Queues a fault for the next matching request.
    pub(crate) fn push_fault(&self, target: Target, fault: Fault) {
        if let Ok(mut f) = self.inner.faults.lock() {
            f.push_back((target, fault));
        }
    }

    /// Sets (or with `None` clears) the fault every certificate action suffers from now on,
    /// after the next `pass` actions have gone through normally.
    pub(crate) fn set_action_fault(&self, fault: Option<ActionFault>, pass: usize) {
        if let Ok(mut f) = self.inner.action_fault.lock() {
            *f = fault.map(|f| (f, pass));
        }
    }

    /// Adds this latency to every API request.
    pub(crate) fn set_latency(&self, d: Duration) {
        self.inner
            .latency_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Every request seen so far.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.inner
            .seen
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// How many requests had this method and a path ending in `suffix`.
    pub(crate) fn count(&self, method: &str, suffix: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.path.ends_with(suffix))
            .count()
    }

    /// Certificates issued so far.
    pub(crate) fn issued(&self) -> usize {
        self.inner.certs.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// `(status, reason)` of a serial (any case, leading zeros ignored).
    pub(crate) fn status_of(&self, serial: &str) -> Option<(String, Option<String>)> {
        let key = canonical(serial)?;
        self.inner
            .certs
            .lock()
            .ok()?
            .get(&key)
            .map(|c| (c.status.to_string(), c.reason.clone()))
    }

    /// Serials issued so far (canonical lower-case hex).
    pub(crate) fn serials(&self) -> Vec<String> {
        self.inner
            .certs
            .lock()
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The certificate of a serial, PEM.
    pub(crate) fn cert_pem(&self, serial: &str) -> Option<String> {
        let key = canonical(serial)?;
        let der = self.inner.certs.lock().ok()?.get(&key)?.der.clone();
        let b = b64(&der);
        let lines: Vec<&str> = b
            .as_bytes()
            .chunks(64)
            .filter_map(|c| std::str::from_utf8(c).ok())
            .collect();
        Some(format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        ))
    }

    /// Puts a certificate on hold behind Keyfleet's back (as another operator would).
    pub(crate) fn hold_out_of_band(&self, serial: &str) {
        let key = canonical(serial).unwrap_or_default();
        if let Ok(mut c) = self.inner.certs.lock()
            && let Some(c) = c.get_mut(&key)
        {
            c.status = "held";
            c.reason = Some("certificateHold".into());
            c.revoked_at = Some(OffsetDateTime::now_utc());
        }
    }

    /// The CRL of a CA (DER), as `/emulator/crl/{caId}` serves it.
    pub(crate) fn crl_der(&self, ca: &str) -> Vec<u8> {
        crl(&self.inner, ca).expect("crl")
    }

    /// Stops the server.
    pub(crate) fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Serial canonical form: lower-case hex, leading zeros dropped.
fn canonical(serial: &str) -> Option<String> {
    let s = serial.trim().to_ascii_lowercase();
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let t = s.trim_start_matches('0');
    Some(if t.is_empty() { "0".into() } else { t.into() })
}

fn router(inner: Arc<Inner>) -> Router {
    let api = Router::new()
        .route("/cagw/v1/certificate-authorities", get(list_cas))
        .route("/cagw/v1/certificate-authorities/{ca}", get(get_ca))
        .route(
            "/cagw/v1/certificate-authorities/{ca}/status",
            get(ca_status),
        )
        .route(
            "/cagw/v1/certificate-authorities/{ca}/profiles",
            get(list_profiles),
        )
        .route(
            "/cagw/v1/certificate-authorities/{ca}/profiles/{profile}",
            get(get_profile),
        )
        .route(
            "/cagw/v1/certificate-authorities/{ca}/enrollments",
            post(enroll),
        )
        .route(
            "/cagw/v1/certificate-authorities/{ca}/certificates/{serial}",
            get(get_certificate),
        )
        .route(
            "/cagw/v1/certificate-authorities/{ca}/certificates/{serial}/actions",
            post(action),
        )
        .route(
            "/cagw/v1/certificate-authorities/{ca}/certificate-events",
            get(events),
        )
        .route("/emulator/crl/{ca}", get(get_crl))
        .layer(axum::middleware::from_fn_with_state(inner.clone(), gate))
        .fallback(|| async { error(404, "cagw-4040", "no such resource") });
    api.with_state(inner)
}

/// Authenticates the client by certificate DN, applies latency and faults, logs the request.
async fn gate(State(inner): State<Arc<Inner>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let client_dn = req
        .extensions()
        .get::<Arc<TlsInfo>>()
        .and_then(|i| i.peer_certificates.first().map(|c| subject_of(c)))
        .unwrap_or_default();
    let record = |status: u16| {
        if let Ok(mut s) = inner.seen.lock() {
            s.push(Seen {
                method: method.to_string(),
                path: path.clone(),
                status,
                client_dn: client_dn.clone(),
            });
        }
    };
    let latency = inner.latency_ms.load(Ordering::SeqCst);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let role = inner.roles.get(&normalize_dn(&client_dn)).copied();
    let Some(role) = role else {
        record(403);
        return error(
            403,
            "cagw-4030",
            &format!("Unauthorized: client {client_dn:?} is not configured"),
        );
    };
    if method == Method::POST && role.starts_with("read-only") {
        record(403);
        return error(403, "cagw-4031", "Unauthorized: read-only client");
    }
    let is_enroll = method == Method::POST && path.ends_with("/enrollments");
    let fault = inner.faults.lock().ok().and_then(|mut q| {
        let pos = q
            .iter()
            .position(|(t, _)| *t == Target::Any || (*t == Target::Enroll && is_enroll))?;
        q.remove(pos).map(|(_, f)| f)
    });
    match fault {
        Some(Fault::Status(502)) => {
            record(502);
            return (
                StatusCode::BAD_GATEWAY,
                "<html><body>502 Bad Gateway</body></html>",
            )
                .into_response();
        }
        Some(Fault::Status(code)) => {
            record(code);
            let msg = match code {
                429 => "Too many requests",
                503 => "Service temporarily unavailable",
                400 => "Invalid request (injected)",
                _ => "Backend CA failure",
            };
            return error(code, &format!("cagw-{code}0"), msg);
        }
        Some(Fault::DropBefore) => {
            record(0);
            return dropped();
        }
        Some(Fault::DropAfter) => {
            let resp = next.run(req).await;
            record(0);
            drop(resp);
            return dropped();
        }
        None => {}
    }
    let resp = next.run(req).await;
    record(resp.status().as_u16());
    resp
}

fn find_ca<'a>(inner: &'a Inner, id: &str) -> Result<&'a IssuingCa, Response> {
    inner
        .cas
        .iter()
        .find(|c| c.id == id)
        .ok_or_else(|| error(404, "cagw-4018", "CA with specified name not found"))
}

fn b64(der: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(der)
}

fn wants(q: &HashMap<String, String>, field: &str) -> bool {
    q.get("$fields")
        .map(|f| f.split(',').any(|x| x.trim() == field))
        .unwrap_or(false)
}

async fn list_cas(
    State(inner): State<Arc<Inner>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let list: Vec<Value> = inner
        .cas
        .iter()
        .map(|c| {
            let mut v = json!({"id": c.id, "name": c.name,
                "properties": {"connector-name": "com.entrust.SecurityManager", "type": "Emulated CA"},
                "chain": []});
            if wants(&q, "caList.certificate.certificateData") {
                v["certificate"] = json!({"certificateData": b64(&c.der)});
            }
            v
        })
        .collect();
    Json(json!({"type": "CAListResponse", "caList": list})).into_response()
}

async fn get_ca(
    State(inner): State<Arc<Inner>>,
    UrlPath(ca): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let c = match find_ca(&inner, &ca) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut v = json!({"id": c.id, "name": c.name,
        "properties": {"connector-name": "com.entrust.SecurityManager"}});
    if wants(&q, "ca.certificate") {
        v["certificate"] = json!({"certificateData": b64(&c.der)});
    }
    if wants(&q, "ca.chain") {
        v["chain"] = json!([{"certificateData": b64(&c.der)}]);
    }
    Json(json!({"type": "CAResponse", "ca": v})).into_response()
}

async fn ca_status(State(inner): State<Arc<Inner>>, UrlPath(ca): UrlPath<String>) -> Response {
    match find_ca(&inner, &ca) {
        Ok(_) => Json(json!({"type": "CAStatusResponse", "status": "UP"})).into_response(),
        Err(r) => r,
    }
}

async fn list_profiles(State(inner): State<Arc<Inner>>, UrlPath(ca): UrlPath<String>) -> Response {
    match find_ca(&inner, &ca) {
        Ok(c) => Json(json!({"type": "ProfilesResponse",
            "message": {"message": "Profiles retrieved successfully.", "details": []},
            "profiles": c.profiles}))
        .into_response(),
        Err(r) => r,
    }
}

async fn get_profile(
    State(inner): State<Arc<Inner>>,
    UrlPath((ca, profile)): UrlPath<(String, String)>,
) -> Response {
    let c = match find_ca(&inner, &ca) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match c.profiles.iter().find(|p| p["id"] == profile.as_str()) {
        Some(p) => Json(json!({"type": "ProfileResponse",
            "message": {"message": "Profile retrieved successfully.", "details": []},
            "profile": p}))
        .into_response(),
        None => error(404, "cagw-4019", &format!("Profile {profile} not found")),
    }
}

/// The public key of a CSR, for rcgen.
struct CsrKey {
    bits: Vec<u8>,
    alg: &'static rcgen::SignatureAlgorithm,
}

impl rcgen::PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.bits
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

/// Decodes a CSR (Base64 DER, PEM accepted leniently), verifies EC signatures, and returns
/// the key and the raw SAN extension value it requests, if any.
fn parse_csr(text: &str) -> Result<(CsrKey, Option<Vec<u8>>), String> {
    use sha2::Digest;
    let t = text.trim();
    let der = if t.starts_with("-----BEGIN") {
        let body: String = t
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .concat();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| format!("bad CSR PEM: {e}"))?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(t)
            .map_err(|e| format!("CSR is not Base64: {e}"))?
    };
    let req = x509_cert::request::CertReq::from_der(&der).map_err(|e| format!("bad CSR: {e}"))?;
    let spki = &req.info.public_key;
    let bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or("bad key bits")?
        .to_vec();
    let tbs = req.info.to_der().map_err(|e| e.to_string())?;
    let sig = req.signature.as_bytes().ok_or("bad signature bits")?;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok())
        .map(|o| o.to_string());
    let alg: &'static rcgen::SignatureAlgorithm = match curve.as_deref() {
        Some("1.2.840.10045.3.1.7") => {
            let vk =
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&bits).map_err(|e| e.to_string())?;
            let s = p256::ecdsa::Signature::from_der(sig).map_err(|e| e.to_string())?;
            use p256::ecdsa::signature::hazmat::PrehashVerifier;
            vk.verify_prehash(&sha2::Sha256::digest(&tbs), &s)
                .map_err(|_| "CSR signature does not verify".to_string())?;
            &rcgen::PKCS_ECDSA_P256_SHA256
        }
        Some("1.2.840.10045.3.1.34") => {
            let vk =
                p384::ecdsa::VerifyingKey::from_sec1_bytes(&bits).map_err(|e| e.to_string())?;
            let s = p384::ecdsa::Signature::from_der(sig).map_err(|e| e.to_string())?;
            use p384::ecdsa::signature::hazmat::PrehashVerifier;
            vk.verify_prehash(&sha2::Sha384::digest(&tbs), &s)
                .map_err(|_| "CSR signature does not verify".to_string())?;
            &rcgen::PKCS_ECDSA_P384_SHA384
        }
        _ => &rcgen::PKCS_RSA_SHA256,
    };
    let mut san = None;
    for attr in req.info.attributes.iter() {
        if attr.oid.to_string() != "1.2.840.113549.1.9.14" {
            continue;
        }
        for v in attr.values.iter() {
            if let Ok(exts) = v.decode_as::<x509_cert::ext::Extensions>() {
                for e in exts {
                    if e.extn_id.to_string() == "2.5.29.17" {
                        san = Some(e.extn_value.as_bytes().to_vec());
                    }
                }
            }
        }
    }
    Ok((CsrKey { bits, alg }, san))
}

fn random_serial() -> Vec<u8> {
    let mut b: [u8; 8] = rand::random();
    b[0] = (b[0] & 0x7f) | 0x10;
    b.to_vec()
}

fn parse_duration_secs(s: &str) -> Option<i64> {
    // PT<n>S, PT<n>M, P<n>D — the forms clients send.
    let s = s.trim();
    let num = |t: &str| t.parse::<i64>().ok();
    if let Some(t) = s.strip_prefix("PT") {
        if let Some(n) = t.strip_suffix('S') {
            return num(n);
        }
        if let Some(n) = t.strip_suffix('M') {
            return num(n).map(|m| m * 60);
        }
        if let Some(n) = t.strip_suffix('H') {
            return num(n).map(|h| h * 3600);
        }
    } else if let Some(t) = s.strip_prefix('P')
        && let Some(n) = t.strip_suffix('D')
    {
        return num(n).map(|d| d * 86400);
    }
    None
}

async fn enroll(
    State(inner): State<Arc<Inner>>,
    UrlPath(ca): UrlPath<String>,
    body: Bytes,
) -> Response {
    let c = match find_ca(&inner, &ca) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return error(400, "cagw-4000", "Request body is not valid JSON");
    };
    let Some(profile_id) = req["profileId"].as_str() else {
        return error(400, "cagw-4001", "profileId is required");
    };
    let Some(profile) = c.profiles.iter().find(|p| p["id"] == profile_id) else {
        return error(404, "cagw-4019", &format!("Profile {profile_id} not found"));
    };
    let format = req["requiredFormat"]["format"].as_str().unwrap_or("");
    if !matches!(format, "X509" | "PEM") {
        return error(
            400,
            "cagw-4002",
            "requiredFormat.format must be X509 or PEM here",
        );
    }
    let Some(csr) = req["csr"].as_str() else {
        return error(400, "cagw-4003", "csr is required for X509/PEM enrolment");
    };
    let (key, csr_san) = match parse_csr(csr) {
        Ok(k) => k,
        Err(e) => return error(400, "cagw-4004", &format!("Invalid CSR: {e}")),
    };
    let vars: Vec<(String, String)> = req["subjectVariables"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| {
                    Some((
                        v["type"].as_str()?.to_string(),
                        v["value"].as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    for r in profile["subjectVariableRequirements"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = r["name"].as_str().unwrap_or("");
        if r["required"].as_bool() == Some(true)
            && !vars
                .iter()
                .any(|(t, v)| t.eq_ignore_ascii_case(name) && !v.is_empty())
        {
            return error(
                400,
                "cagw-4005",
                &format!("Required subject variable '{name}' is missing"),
            );
        }
    }
    let details = &req["optionalCertificateRequestDetails"];
    let subject = match details["subjectDn"].as_str() {
        Some(s) if !s.trim().is_empty() => s.to_string(),
        _ if !vars.is_empty() => vars
            .iter()
            .map(|(t, v)| format!("{t}={v}"))
            .collect::<Vec<_>>()
            .join(","),
        _ => {
            return error(
                400,
                "cagw-4006",
                "No SubjectName provided in Request or CSR",
            );
        }
    };
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = crate_dn(&subject);
    let serial = random_serial();
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let now = OffsetDateTime::now_utc();
    let lifetime = details["validityPeriod"]
        .as_str()
        .and_then(parse_duration_secs)
        .unwrap_or(365 * 86400)
        .clamp(60, 3 * 365 * 86400);
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::seconds(lifetime);
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    if details["useSANFromCSR"].as_bool() == Some(true) {
        if let Some(raw) = csr_san {
            params
                .custom_extensions
                .push(rcgen::CustomExtension::from_oid_content(
                    &[2, 5, 29, 17],
                    raw,
                ));
        }
    } else {
        for s in req["subjectAltNames"].as_array().into_iter().flatten() {
            let v = s["value"].as_str().unwrap_or("");
            let Ok(ia5) = rcgen::string::Ia5String::try_from(v) else {
                return error(400, "cagw-4007", &format!("Invalid SAN value {v:?}"));
            };
            let san = match s["type"].as_str().unwrap_or("") {
                "rfc822Name" => rcgen::SanType::Rfc822Name(ia5),
                "dNSName" => rcgen::SanType::DnsName(ia5),
                "uniformResourceIdentifier" => rcgen::SanType::URI(ia5),
                other => {
                    return error(400, "cagw-4008", &format!("Unsupported SAN type {other:?}"));
                }
            };
            params.subject_alt_names.push(san);
        }
    }
    let issuer = rcgen::Issuer::from_params(&c.params, &c.key);
    let cert = match params.signed_by(&key, &issuer) {
        Ok(c) => c,
        Err(e) => return error(500, "cagw-5000", &format!("Backend CA failure: {e}")),
    };
    let der = cert.der().to_vec();
    let serial_hex = canonical(&hex::encode(&serial)).unwrap_or_default();
    let id = format!("enr-{}", hex::encode(rand::random::<[u8; 8]>()));
    if let Ok(mut certs) = inner.certs.lock() {
        certs.insert(
            serial_hex.clone(),
            Cert {
                ca: ca.clone(),
                serial: serial_hex.clone(),
                der: der.clone(),
                subject: subject.clone(),
                status: "normal",
                reason: None,
                revoked_at: None,
                not_before: params.not_before,
                not_after: params.not_after,
            },
        );
    }
    if let Ok(mut ev) = inner.events.lock() {
        ev.push(Event {
            ca: ca.clone(),
            at: now,
            action: "issued",
            serial: serial_hex.clone(),
            reason: String::new(),
        });
    }
    let body = if format == "PEM" {
        cert.pem()
    } else {
        b64(&der)
    };
    Json(json!({
        "type": "EnrollmentResponse",
        "message": {"message": "Enrollment completed successfully.", "details": []},
        "enrollment": {"id": id, "serialNumber": serial_hex, "status": "ISSUED",
            "subjectName": subject.to_ascii_lowercase(), "body": body, "chain": [],
            "properties": {}, "validityPeriod": validity(params.not_before, params.not_after)},
    }))
    .into_response()
}

fn validity(nb: OffsetDateTime, na: OffsetDateTime) -> String {
    let f = |t: OffsetDateTime| {
        t.replace_nanosecond(0)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default()
    };
    format!("{}/{}", f(nb), f(na))
}

fn certificate_json(c: &Cert) -> Value {
    let mut v = json!({
        "status": c.status, "versionNumber": "3", "serialNumber": c.serial,
        "subjectName": c.subject.to_ascii_lowercase(),
        "validityPeriod": validity(c.not_before, c.not_after),
        "certificateData": b64(&c.der),
    });
    if let (Some(reason), Some(at)) = (&c.reason, c.revoked_at) {
        let at = at.format(&Rfc3339).unwrap_or_default();
        v["revocationInfo"] = json!({"reason": reason, "revocationDate": at,
            "compromiseDate": at, "comment": ""});
    }
    v
}

async fn get_certificate(
    State(inner): State<Arc<Inner>>,
    UrlPath((ca, serial)): UrlPath<(String, String)>,
) -> Response {
    if let Err(r) = find_ca(&inner, &ca) {
        return r;
    }
    let key = canonical(&serial).unwrap_or_default();
    let certs = match inner.certs.lock() {
        Ok(c) => c,
        Err(_) => return error(500, "cagw-5001", "state lock poisoned"),
    };
    match certs.get(&key).filter(|c| c.ca == ca) {
        Some(c) => Json(
            json!({"type": "CertificateResponse", "certificate": certificate_json(c), "chain": []}),
        )
        .into_response(),
        None => error(404, "cagw-4041", &format!("Certificate {serial} not found")),
    }
}

const REASONS: &[&str] = &[
    "unspecified",
    "keyCompromise",
    "caCompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "certificateHold",
    "privilegeWithdrawn",
];

async fn action(
    State(inner): State<Arc<Inner>>,
    UrlPath((ca, serial)): UrlPath<(String, String)>,
    body: Bytes,
) -> Response {
    if let Err(r) = find_ca(&inner, &ca) {
        return r;
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return error(400, "cagw-4000", "Request body is not valid JSON");
    };
    let a = &req["action"];
    let kind = a["type"].as_str().unwrap_or("").to_string();
    let reason = a["reason"].as_str().unwrap_or("unspecified").to_string();
    let Some(reason) = REASONS.iter().find(|r| r.eq_ignore_ascii_case(&reason)) else {
        return error(
            400,
            "cagw-4010",
            &format!("Unknown revocation reason {reason:?}"),
        );
    };
    let fault = inner
        .action_fault
        .lock()
        .ok()
        .and_then(|mut f| match &mut *f {
            Some((_, pass)) if *pass > 0 => {
                *pass -= 1;
                None
            }
            Some((fault, _)) => Some(*fault),
            None => None,
        });
    match fault {
        Some(ActionFault::Status(code)) => {
            return error(
                code,
                &format!("cagw-{code}0"),
                "Backend CA failure (injected)",
            );
        }
        Some(ActionFault::Garbage) => {
            return (StatusCode::OK, "<html><body>OK</body></html>").into_response();
        }
        Some(ActionFault::ActionStatus(status)) => {
            return Json(json!({"type": "ActionResponse", "action": {
                "type": kind, "id": "act-injected", "properties": {}, "comment": "",
                "status": status, "reason": reason,
            }}))
            .into_response();
        }
        Some(ActionFault::ActThenGarbage) | None => {}
    }
    let key = canonical(&serial).unwrap_or_default();
    let now = OffsetDateTime::now_utc();
    let mut certs = match inner.certs.lock() {
        Ok(c) => c,
        Err(_) => return error(500, "cagw-5001", "state lock poisoned"),
    };
    let Some(c) = certs.get_mut(&key).filter(|c| c.ca == ca) else {
        return error(404, "cagw-4041", &format!("Certificate {serial} not found"));
    };
    let event = match (kind.as_str(), c.status) {
        ("RevokeAction", "revoked") => None,
        ("RevokeAction", _) => {
            c.status = "revoked";
            c.reason = Some((*reason).to_string());
            c.revoked_at = Some(now);
            Some("revoked")
        }
        ("HoldAction", "held") => None,
        ("HoldAction", "normal") => {
            c.status = "held";
            c.reason = Some("certificateHold".into());
            c.revoked_at = Some(now);
            Some("held")
        }
        ("UnholdAction", "normal") => None,
        ("UnholdAction", "held") => {
            c.status = "normal";
            c.reason = None;
            c.revoked_at = None;
            Some("unheld")
        }
        ("HoldAction" | "UnholdAction", "revoked") => {
            return error(
                400,
                "cagw-4011",
                &format!("Certificate {serial} is revoked; {kind} is not allowed"),
            );
        }
        ("RenewAction" | "ReissueAction" | "ReactivateAction", _) => {
            return error(
                501,
                "cagw-5010",
                &format!("{kind} is not supported by this CA"),
            );
        }
        _ => return error(400, "cagw-4012", &format!("Unknown action type {kind:?}")),
    };
    if let Some(action) = event
        && let Ok(mut ev) = inner.events.lock()
    {
        ev.push(Event {
            ca: ca.clone(),
            at: now,
            action,
            serial: key.clone(),
            reason: (*reason).to_string(),
        });
    }
    if fault == Some(ActionFault::ActThenGarbage) {
        return (StatusCode::OK, "not json").into_response();
    }
    Json(json!({"type": "ActionResponse", "action": {
        "type": kind, "id": format!("act-{}", hex::encode(rand::random::<[u8; 8]>())),
        "properties": {}, "comment": a["comment"].as_str().unwrap_or(""),
        "status": "COMPLETED", "succeedIfAlreadyInRequestedState": true,
        "reason": reason, "compromiseDate": now_text(),
    }}))
    .into_response()
}

async fn events(
    State(inner): State<Arc<Inner>>,
    UrlPath(ca): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = find_ca(&inner, &ca) {
        return r;
    }
    let size = q
        .get("preferredPageSize")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(100)
        .clamp(1, 50);
    // nextPageIndex is opaque to clients: here "<startDate unix>:<offset>".
    let (start, offset) = if let Some(n) = q.get("nextPageIndex") {
        let Some((s, o)) = n.split_once(':') else {
            return error(400, "cagw-4020", "Invalid nextPageIndex");
        };
        match (s.parse::<i64>(), o.parse::<usize>()) {
            (Ok(s), Ok(o)) => (s, o),
            _ => return error(400, "cagw-4020", "Invalid nextPageIndex"),
        }
    } else {
        let Some(sd) = q.get("startDate") else {
            return error(400, "cagw-4021", "startDate or nextPageIndex is required");
        };
        match OffsetDateTime::parse(sd, &Rfc3339) {
            Ok(t) => (t.unix_timestamp(), 0),
            Err(_) => return error(400, "cagw-4022", &format!("Invalid startDate {sd:?}")),
        }
    };
    let drop_cert = q
        .get("$fields")
        .map(|f| f.contains("-events.certificate"))
        .unwrap_or(false);
    let all: Vec<Event> = inner
        .events
        .lock()
        .map(|e| {
            e.iter()
                .filter(|e| e.ca == ca && e.at.unix_timestamp() >= start)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let certs = inner.certs.lock().map(|c| c.clone()).unwrap_or_default();
    let page: Vec<Value> = all
        .iter()
        .skip(offset)
        .take(size)
        .enumerate()
        .map(|(i, e)| {
            let mut v = json!({"action": e.action, "event": offset + i,
                "eventDate": e.at.format(&Rfc3339).unwrap_or_default(),
                "serialNumber": e.serial, "detail": "", "reason": e.reason});
            if !drop_cert && let Some(c) = certs.get(&e.serial) {
                v["certificate"] = json!(b64(&c.der));
            }
            v
        })
        .collect();
    let more = offset + page.len() < all.len();
    Json(json!({"type": "CertificateEventsResponse", "events": page,
        "nextPageIndex": format!("{start}:{}", offset + page.len()),
        "morePages": more, "hasMore": more,
        "metadata": {"currentCount": page.len(), "totalCount": all.len(),
            "currentOffset": offset, "currentLimit": size}}))
    .into_response()
}

fn crl(inner: &Inner, ca: &str) -> Result<Vec<u8>, String> {
    let c = inner.cas.iter().find(|c| c.id == ca).ok_or("unknown CA")?;
    let certs = inner.certs.lock().map_err(|_| "lock")?;
    let revoked = certs
        .values()
        .filter(|x| x.ca == ca && matches!(x.status, "revoked" | "held"))
        .map(|x| rcgen::RevokedCertParams {
            serial_number: rcgen::SerialNumber::from_slice(
                &hex::decode(if x.serial.len() % 2 == 1 {
                    format!("0{}", x.serial)
                } else {
                    x.serial.clone()
                })
                .unwrap_or_default(),
            ),
            revocation_time: x.revoked_at.unwrap_or_else(OffsetDateTime::now_utc),
            reason_code: Some(match x.reason.as_deref().unwrap_or("unspecified") {
                "keyCompromise" => rcgen::RevocationReason::KeyCompromise,
                "caCompromise" => rcgen::RevocationReason::CaCompromise,
                "affiliationChanged" => rcgen::RevocationReason::AffiliationChanged,
                "superseded" => rcgen::RevocationReason::Superseded,
                "cessationOfOperation" => rcgen::RevocationReason::CessationOfOperation,
                "certificateHold" => rcgen::RevocationReason::CertificateHold,
                "privilegeWithdrawn" => rcgen::RevocationReason::PrivilegeWithdrawn,
                _ => rcgen::RevocationReason::Unspecified,
            }),
            invalidity_date: None,
        })
        .collect();
    let now = OffsetDateTime::now_utc();
    let params = rcgen::CertificateRevocationListParams {
        this_update: now - time::Duration::minutes(1),
        next_update: now + time::Duration::days(1),
        crl_number: rcgen::SerialNumber::from_slice(&now.unix_timestamp().to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs: revoked,
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    let issuer = rcgen::Issuer::from_params(&c.params, &c.key);
    params
        .signed_by(&issuer)
        .map(|c| c.der().to_vec())
        .map_err(|e| e.to_string())
}

async fn get_crl(State(inner): State<Arc<Inner>>, UrlPath(ca): UrlPath<String>) -> Response {
    match crl(&inner, &ca) {
        Ok(der) => ([("content-type", "application/pkix-crl")], der).into_response(),
        Err(e) => error(404, "cagw-4018", &e),
    }
}
