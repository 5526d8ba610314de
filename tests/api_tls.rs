//! The operator API's transport through the library: client trust and the server
//! certificate from a policy (a copy of the quickstart with an operator template and an
//! external identity whose CA the test makes), `serve` with a router that echoes what it sees
//! of the client, and reqwest clients with and without certificates.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::{Extension, Json, Router};
use keyfleet::api::{ApiError, ApiSetupError, ClientTrust, PeerCertificates};
use keyfleet::audit::{AuditKey, AuditLog};
use keyfleet::ca::{CertificateAuthority as _, EnrollRequest, LocalCa};
use keyfleet::policy::{CertificateAuthoritySpec, PolicySet};
use keyfleet::secrets::MasterKey;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use serde_json::{Value, json};

use crate::spine::Quickstart;

const EXTERNAL_SUBJECT: &str = "CN=ticketing,O=Example";

/// A CA made with rcgen, standing for an outside PKI.
struct TestCa {
    key: rcgen::KeyPair,
    params: rcgen::CertificateParams,
    pem: String,
}

impl TestCa {
    fn new(cn: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = dn(&[("CN", cn), ("O", "Outside")]);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa { key, params, pem }
    }

    /// A client certificate (clientAuth) for `subject` pairs, with its key: (chain PEM, key PEM).
    fn client(&self, subject: &[(&str, &str)]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = dn(subject);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let issuer = rcgen::Issuer::new(self.params.clone(), &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A DN from (type, value) pairs in RFC 4514 order (`[CN, O]` is `CN=..,O=..`: the last
/// pair is the first RDN in the certificate, as Keyfleet's own names).
fn dn(pairs: &[(&str, &str)]) -> rcgen::DistinguishedName {
    let mut dn = rcgen::DistinguishedName::new();
    for (t, v) in pairs.iter().rev() {
        let t = match *t {
            "CN" => rcgen::DnType::CommonName,
            "O" => rcgen::DnType::OrganizationName,
            other => panic!("{other}"),
        };
        dn.push(t, *v);
    }
    dn
}

/// The quickstart with operators and its own state directory, master key, audit log and
/// (created) local CA.
struct Setup {
    q: Quickstart,
    external_ca: TestCa,
    master: MasterKey,
    audit: AuditLog,
    ca: LocalCa,
}

fn settings_yaml(extra: &str) -> String {
    format!(
        "apiVersion: keyfleet.dev/v1\nkind: Settings\nmetadata:\n  name: settings\nspec:\n  \
         operators:\n{extra}    external:\n      - name: ticketing\n        caFile: \
         ticketing-ca.pem\n        subject: \"{EXTERNAL_SUBJECT}\"\n"
    )
}

impl Setup {
    fn new() -> Setup {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let q = Quickstart::new();
        let external_ca = TestCa::new("Ticketing CA");
        std::fs::write(q.policy.join("ticketing-ca.pem"), &external_ca.pem).unwrap();
        std::fs::write(
            q.policy.join("settings.yaml"),
            settings_yaml("    templates: [employee-virtual]\n"),
        )
        .unwrap();
        keyfleet::fsutil::ensure_private_dir(&q.state).unwrap();
        let master = MasterKey::load_or_create(&q.state).unwrap();
        let key = AuditKey::load_or_create(&keyfleet::keystore::KeyStore::File, &q.state, &master)
            .unwrap();
        let audit = AuditLog::open(&q.state, key).unwrap();
        let policy = keyfleet::policy::load_policy_set(&q.policy).unwrap();
        // The trust needs the CA's certificate: it exists only once the CA was used.
        let missing = keyfleet::api::client_trust(&policy, &q.state).unwrap_err();
        assert!(
            matches!(&missing, ApiSetupError::LocalCaMissing { name, .. } if name == "quickstart-ca"),
            "{missing}"
        );
        keyfleet::api::ensure_operator_cas(&policy, &q.state, &master).unwrap();
        assert!(q.state.join("ca/quickstart-ca/ca.pem").exists());
        let CertificateAuthoritySpec::Local(spec) = &policy.authorities["quickstart-ca"].spec
        else {
            panic!("quickstart-ca is local");
        };
        let ca = keyfleet::runtime::local_ca(
            "quickstart-ca",
            spec,
            &q.state,
            &master,
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
        Setup {
            q,
            external_ca,
            master,
            audit,
            ca,
        }
    }

    fn policy(&self) -> PolicySet {
        keyfleet::policy::load_policy_set(&self.q.policy).unwrap()
    }

    fn ca_pem(&self) -> String {
        self.ca.ca_certificate_pem().unwrap()
    }

    /// A piv-auth certificate from the local CA for `subject`: (chain PEM, key PEM).
    fn local_client(&self, subject: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap();
        let issued = self
            .ca
            .enroll(&EnrollRequest {
                request_id: format!("test/{subject}"),
                csr_der: csr.der().to_vec(),
                profile: "piv-auth".into(),
                subject: keyfleet::names::DistinguishedName::parse(subject).unwrap(),
                sans: Vec::new(),
                validity_secs: 86_400,
            })
            .unwrap();
        (issued.pem, key.serialize_pem())
    }

    fn issue_entries(&self) -> Vec<keyfleet::audit::AuditEntry> {
        keyfleet::audit::read_entries(&self.q.state.join("audit/log.jsonl"))
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "issue-api-certificate")
            .collect()
    }
}

fn der_chain(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn subject_of(der: &[u8]) -> String {
    use der::Decode as _;
    x509_cert::Certificate::from_der(der)
        .unwrap()
        .tbs_certificate()
        .subject()
        .to_string()
}

fn serial_of(der: &[u8]) -> String {
    use der::Decode as _;
    hex::encode_upper(
        x509_cert::Certificate::from_der(der)
            .unwrap()
            .tbs_certificate()
            .serial_number()
            .as_bytes(),
    )
}

/// Echoes the client's leaf subject, chain and address; 401 without a certificate.
async fn whoami(
    Extension(peer): Extension<PeerCertificates>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Extension(plain): Extension<SocketAddr>,
) -> Result<Json<Value>, ApiError> {
    assert_eq!(plain, addr);
    let leaf = peer
        .leaf()
        .ok_or_else(|| ApiError::unauthorized("no client certificate"))?;
    let chain: Vec<String> = peer.0.iter().map(hex::encode).collect();
    Ok(Json(json!({
        "subject": subject_of(leaf),
        "chain": chain,
        "peer": addr.ip().to_string(),
    })))
}

/// Serves the echo router on a fresh loopback port with `tls`; returns its address and the
/// sender that stops it.
async fn start(
    setup: &Setup,
    policy: &PolicySet,
    trust: &ClientTrust,
) -> (
    SocketAddr,
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = keyfleet::api::server_config(
        policy,
        &setup.q.state,
        &setup.master,
        &setup.audit,
        addr,
        trust,
    )
    .unwrap();
    let router = Router::new()
        .route("/whoami", get(whoami))
        .fallback(keyfleet::api::error::fallback);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(keyfleet::api::serve(listener, tls, router, rx));
    (addr, tx, task)
}

/// A client trusting only `server_ca_pem`, with an optional (chain PEM, key PEM) identity.
fn client(server_ca_pem: &str, identity: Option<&(String, String)>) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for c in der_chain(server_ca_pem) {
        roots.add(c).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(
                der_chain(chain),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn get_json(c: &reqwest::Client, url: &str) -> Result<(u16, Value), reqwest::Error> {
    let r = c.get(url).send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await?))
}

/// One GET over HTTP/2 (ALPN `h2`) with `identity`: status, version, JSON body.
async fn h2_get(
    server_ca_pem: &str,
    identity: &(String, String),
    addr: SocketAddr,
    path: &str,
) -> (u16, axum::http::Version, Value) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der_chain(server_ca_pem).remove(0)).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        der_chain(&identity.0),
        PrivateKeyDer::from_pem_slice(identity.1.as_bytes()).unwrap(),
    )
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = axum::http::Request::get(format!("https://{addr}{path}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let version = resp.version();
    let bytes = axum::body::to_bytes(axum::body::Body::new(resp.into_body()), usize::MAX)
        .await
        .unwrap();
    (status, version, serde_json::from_slice(&bytes).unwrap())
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reach_the_handler_with_their_verified_chain_or_are_refused() {
    let setup = Setup::new();
    let policy = setup.policy();
    let trust = keyfleet::api::client_trust(&policy, &setup.q.state).unwrap();
    assert_eq!(
        trust.local_cas().keys().collect::<Vec<_>>(),
        ["quickstart-ca"]
    );
    let (addr, stop, task) = start(&setup, &policy, &trust).await;
    let url = format!("https://{addr}/whoami");
    let ca_pem = setup.ca_pem();

    // The external identity reaches the handler, which sees its chain.
    let external = setup
        .external_ca
        .client(&[("CN", "ticketing"), ("O", "Example")]);
    let (status, body) = get_json(&client(&ca_pem, Some(&external)), &url)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["subject"], EXTERNAL_SUBJECT);
    let ext_leaf = der_chain(&external.0).remove(0);
    assert_eq!(body["chain"], json!([hex::encode(&ext_leaf)]));
    assert_eq!(body["peer"], "127.0.0.1");
    let now = UnixTime::now();
    assert!(trust.external_chains("ticketing", &ext_leaf, &[], now));
    assert!(!trust.external_chains("nobody", &ext_leaf, &[], now));

    // A local-CA certificate with the same subject passes TLS (the local CA is trusted) but
    // does not chain to the external identity's CA.
    let impostor = setup.local_client(EXTERNAL_SUBJECT);
    let (status, body) = get_json(&client(&ca_pem, Some(&impostor)), &url)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["subject"], EXTERNAL_SUBJECT);
    let impostor_leaf = der_chain(&impostor.0).remove(0);
    assert_eq!(body["chain"], json!([hex::encode(&impostor_leaf)]));
    assert!(!trust.external_chains("ticketing", &impostor_leaf, &[], now));

    // No client certificate: the handler answers 401 in the error shape.
    let (status, body) = get_json(&client(&ca_pem, None), &url).await.unwrap();
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    assert!(body["error"]["message"].is_string());
    let (status, body) = get_json(&client(&ca_pem, None), &format!("https://{addr}/nope"))
        .await
        .unwrap();
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not-found");

    // A certificate from a CA nobody trusts: the handshake fails, the handler is not reached.
    let stranger = TestCa::new("Stranger CA").client(&[("CN", "ticketing"), ("O", "Example")]);
    let refused = get_json(&client(&ca_pem, Some(&stranger)), &url).await;
    assert!(refused.is_err(), "{refused:?}");

    // A stalled client (TCP, never a TLS hello) does not block the others.
    let _stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (status, _) = get_json(&client(&ca_pem, Some(&external)), &url)
        .await
        .unwrap();
    assert_eq!(status, 200);

    // The generated server certificate also names localhost (a loopback address).
    let by_name = reqwest::Client::builder()
        .use_preconfigured_tls(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates({
                let mut r = rustls::RootCertStore::empty();
                r.add(der_chain(&ca_pem).remove(0)).unwrap();
                r
            })
            .with_no_client_auth(),
        )
        .resolve("localhost", addr)
        .build()
        .unwrap();
    let r = by_name
        .get(format!("https://localhost:{}/whoami", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // HTTP/2 by ALPN, with the client's chain in the request as over HTTP/1.1.
    let (status, version, body) = h2_get(&ca_pem, &external, addr, "/whoami").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(version, axum::http::Version::HTTP_2);
    assert_eq!(body["subject"], EXTERNAL_SUBJECT);

    // Shutdown does not wait for the stalled handshake (nor the grace period).
    stop.send(true).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), task)
        .await
        .expect("serve stops on shutdown")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still listening after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_server_certificate_is_audited_sealed_and_reused() {
    let setup = Setup::new();
    let policy = setup.policy();
    let trust = keyfleet::api::client_trust(&policy, &setup.q.state).unwrap();
    let listen: SocketAddr = "127.0.0.1:8443".parse().unwrap();
    let server = |addr: SocketAddr| {
        keyfleet::api::server_config(
            &policy,
            &setup.q.state,
            &setup.master,
            &setup.audit,
            addr,
            &trust,
        )
    };
    server(listen).unwrap();
    let api_dir = setup.q.state.join("api");
    let cert_path = api_dir.join("server.pem");
    let key_path = api_dir.join("server.key.sealed");
    assert_eq!(mode(&api_dir), 0o700);
    assert_eq!(mode(&cert_path), 0o600);
    assert_eq!(mode(&key_path), 0o600);
    let first_pem = std::fs::read_to_string(&cert_path).unwrap();
    let chain = der_chain(&first_pem);
    let leaf = chain[0].clone();

    // It verifies against the local CA for 127.0.0.1, as a server certificate.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der_chain(&setup.ca_pem()).remove(0)).unwrap();
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    use rustls::client::danger::ServerCertVerifier as _;
    let ip = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    verifier
        .verify_server_cert(&leaf, &chain[1..], &ip, &[], UnixTime::now())
        .expect("server certificate verifies for 127.0.0.1");
    let other = rustls::pki_types::ServerName::try_from("127.0.0.9").unwrap();
    assert!(
        verifier
            .verify_server_cert(&leaf, &chain[1..], &other, &[], UnixTime::now())
            .is_err()
    );

    // Its issuance is in the audit log, with its serial, and the log verifies.
    let entries = setup.issue_entries();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].actor, "keyfleet");
    assert_eq!(entries[0].target, "127.0.0.1:8443");
    assert_eq!(entries[0].details["serial"], serial_of(&leaf));
    setup
        .audit
        .checkpoint(time::OffsetDateTime::now_utc())
        .unwrap();
    let log = std::fs::read(setup.q.state.join("audit/log.jsonl")).unwrap();
    let checkpoints = std::fs::read(setup.q.state.join("audit/checkpoints.jsonl")).unwrap();
    keyfleet::audit::verify(&log, &checkpoints, &setup.audit.key().spki_der()).unwrap();

    // The key is sealed: not a PEM or DER key on disk, and it opens to the certificate's key.
    let sealed = std::fs::read(&key_path).unwrap();
    assert!(PrivateKeyDer::from_pem_slice(&sealed).is_err());
    assert!(!String::from_utf8_lossy(&sealed).contains("PRIVATE KEY"));
    let pkcs8 = setup
        .master
        .open(keyfleet::api::tls::SERVER_KEY_AAD, &sealed)
        .unwrap();
    assert!(
        !sealed.windows(pkcs8.len()).any(|w| w == pkcs8.as_slice()),
        "plaintext key in the file"
    );
    let key = rcgen::KeyPair::try_from(pkcs8.as_slice()).unwrap();
    use rcgen::PublicKeyData as _;
    {
        use der::Decode as _;
        let cert = x509_cert::Certificate::from_der(&leaf).unwrap();
        use der::Encode as _;
        let spki = cert
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .unwrap();
        assert_eq!(key.subject_public_key_info(), spki);
    }

    // A second call for the same address reuses it: same file, no new issuance.
    server(listen).unwrap();
    assert_eq!(std::fs::read_to_string(&cert_path).unwrap(), first_pem);
    assert_eq!(setup.issue_entries().len(), 1);
    // Another port of the same address too.
    server("127.0.0.1:9443".parse().unwrap()).unwrap();
    assert_eq!(setup.issue_entries().len(), 1);

    // Another address: a new certificate, audited.
    server("127.0.0.2:8443".parse().unwrap()).unwrap();
    let entries = setup.issue_entries();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1].target, "127.0.0.2:8443");
    let second = der_chain(&std::fs::read_to_string(&cert_path).unwrap()).remove(0);
    assert_ne!(second, leaf);
    assert_eq!(entries[1].details["serial"], serial_of(&second));

    // A broken key file (e.g. another master key) is reissued, not used.
    std::fs::write(&key_path, b"garbage").unwrap();
    server("127.0.0.2:8443".parse().unwrap()).unwrap();
    assert_eq!(setup.issue_entries().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tls_files_are_used_when_set() {
    let setup = Setup::new();
    // A certificate from another CA, for 127.0.0.1.
    let own_ca = TestCa::new("Server CA");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["api.example".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    params.distinguished_name = dn(&[("CN", "api.example")]);
    let issuer = rcgen::Issuer::new(own_ca.params.clone(), &own_ca.key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(setup.q.policy.join("api.pem"), cert.pem()).unwrap();
    // The key as SEC1 PEM (`BEGIN EC PRIVATE KEY`), not rcgen's PKCS#8.
    let sec1 = {
        use p256::pkcs8::DecodePrivateKey as _;
        p256::SecretKey::from_pkcs8_der(&key.serialize_der())
            .unwrap()
            .to_sec1_pem(p256::pkcs8::LineEnding::LF)
            .unwrap()
    };
    assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"));
    std::fs::write(setup.q.policy.join("api.key"), sec1.as_bytes()).unwrap();
    let mut yaml = settings_yaml("    templates: [employee-virtual]\n");
    yaml.push_str("  api:\n    tls:\n      certFile: api.pem\n      keyFile: api.key\n");
    std::fs::write(setup.q.policy.join("settings.yaml"), yaml).unwrap();
    let policy = setup.policy();
    let trust = keyfleet::api::client_trust(&policy, &setup.q.state).unwrap();
    let (addr, stop, task) = start(&setup, &policy, &trust).await;
    let url = format!("https://{addr}/whoami");
    let external = setup
        .external_ca
        .client(&[("CN", "ticketing"), ("O", "Example")]);
    // A client trusting only the configured certificate's CA gets through; one trusting the
    // local CA does not: the configured certificate is what the server presents.
    let (status, body) = get_json(&client(&own_ca.pem, Some(&external)), &url)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        get_json(&client(&setup.ca_pem(), Some(&external)), &url)
            .await
            .is_err()
    );
    assert!(setup.issue_entries().is_empty());
    assert!(!setup.q.state.join("api/server.pem").exists());
    stop.send(true).unwrap();
    task.await.unwrap();

    // Neither templates nor api.tls: no server certificate, and the error names both.
    std::fs::write(setup.q.policy.join("settings.yaml"), settings_yaml("")).unwrap();
    let policy = setup.policy();
    let trust = keyfleet::api::client_trust(&policy, &setup.q.state).unwrap();
    assert!(trust.local_cas().is_empty());
    let err = keyfleet::api::server_config(
        &policy,
        &setup.q.state,
        &setup.master,
        &setup.audit,
        addr,
        &trust,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ApiSetupError::NoServerCertificate), "{msg}");
    assert!(
        msg.contains("Settings.spec.api.tls") && msg.contains("Settings.spec.operators.templates"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_certificate_is_not_used_without_its_audit_entry() {
    let setup = Setup::new();
    let policy = setup.policy();
    let trust = keyfleet::api::client_trust(&policy, &setup.q.state).unwrap();
    let log = setup.q.state.join("audit/log.jsonl");
    let _ = std::fs::remove_file(&log);
    std::fs::create_dir_all(&log).unwrap();
    let listen: SocketAddr = "127.0.0.1:8443".parse().unwrap();
    let config = || {
        keyfleet::api::server_config(
            &policy,
            &setup.q.state,
            &setup.master,
            &setup.audit,
            listen,
            &trust,
        )
    };
    let err = config().unwrap_err();
    assert!(matches!(err, ApiSetupError::Audit(_)), "{err}");
    assert!(err.to_string().contains("audit log"), "{err}");
    assert!(!setup.q.state.join("api/server.pem").exists());
    assert!(!setup.q.state.join("api/server.key.sealed").exists());
    // Once the log can be written, a certificate is issued and audited.
    std::fs::remove_dir(&log).unwrap();
    config().unwrap();
    assert_eq!(setup.issue_entries().len(), 1);
    assert!(setup.q.state.join("api/server.pem").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_is_dropped_after_the_timeout() {
    use tokio::io::AsyncReadExt as _;
    let setup = Setup::new();
    let policy = setup.policy();
    let trust = keyfleet::api::client_trust(&policy, &setup.q.state).unwrap();
    let (addr, stop, task) = start(&setup, &policy, &trust).await;
    let started = std::time::Instant::now();
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    // The server closes the connection (EOF or reset) once the handshake timeout passes.
    let read = tokio::time::timeout(std::time::Duration::from_secs(20), stalled.read(&mut buf))
        .await
        .expect("the server closed the stalled connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let waited = started.elapsed();
    assert!(
        waited >= keyfleet::api::server::HANDSHAKE_TIMEOUT - std::time::Duration::from_millis(100),
        "{waited:?}"
    );
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[test]
fn the_local_cas_of_holder_templates_are_trusted_once_they_exist() {
    let setup = Setup::new();
    // The contractors' cards come from a second local CA: a holder template's.
    std::fs::write(
        setup.q.policy.join("holders-ca.yaml"),
        "apiVersion: keyfleet.dev/v1\nkind: CertificateAuthority\nmetadata:\n  name: holders-ca\n\
         spec:\n  local:\n    subject: \"CN=Holders CA,O=Example\"\n    keyAlgorithm: ecc-p256\n    \
         validity: 5y\n",
    )
    .unwrap();
    let template = setup.q.policy.join("templates/contractor-virtual.yaml");
    let text = std::fs::read_to_string(&template).unwrap();
    std::fs::write(
        &template,
        text.replace("authority: quickstart-ca", "authority: holders-ca"),
    )
    .unwrap();
    let policy = setup.policy();
    // Not created yet: it has issued nothing anyone could present, and is left out.
    let trust = keyfleet::api::client_trust(&policy, &setup.q.state).unwrap();
    assert!(trust.holder_cas().is_empty());
    assert_eq!(trust.roots().len(), 2);
    // The API's start creates it, as the first pass would; then it is trusted, as a holder's.
    keyfleet::api::ensure_operator_cas(&policy, &setup.q.state, &setup.master).unwrap();
    let trust = keyfleet::api::client_trust(&policy, &setup.q.state).unwrap();
    assert_eq!(
        trust.local_cas().keys().collect::<Vec<_>>(),
        ["quickstart-ca"]
    );
    assert_eq!(
        trust.holder_cas().keys().collect::<Vec<_>>(),
        ["holders-ca"]
    );
    assert_eq!(trust.roots().len(), 3);
    let pem = std::fs::read(setup.q.state.join("ca/holders-ca/ca.pem")).unwrap();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
    assert_eq!(trust.holder_cas()["holders-ca"], der);
}
