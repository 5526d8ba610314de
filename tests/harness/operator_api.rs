//! A test operator API server for the operator client's tests: HTTPS on 127.0.0.1 with a
//! rustls configuration that requires client certificates chained to the CAs a test gives,
//! answering `GET /api/v1/whoami` with the peer certificate's CN; plus test CAs and operator
//! certificates in files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum_server::tls::TlsInfo;
use der::Decode;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A test operator API on 127.0.0.1: `GET /api/v1/whoami` answers the peer's CN, `GET
/// /api/v1/forbidden` the error shape with 403, `GET /api/v1/broken` a non-JSON 502.
pub(crate) struct TestServer {
    addr: SocketAddr,
    handle: axum_server::Handle<SocketAddr>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The CA that issued the server's certificate (PEM), for `--server-ca`.
    pub(crate) ca_pem: String,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(crate) fn ca(cn: &str) -> (rcgen::CertificateParams, rcgen::KeyPair, rcgen::Certificate) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key).expect("ca cert");
    (p, key, cert)
}

/// The CN of a DER certificate's subject.
fn peer_cn(der: &[u8]) -> Option<String> {
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let subject = cert.tbs_certificate().subject().to_string();
    subject
        .split(',')
        .find_map(|p| p.trim().strip_prefix("CN="))
        .map(str::to_string)
}

async fn whoami(info: Option<axum::Extension<Arc<TlsInfo>>>) -> Response {
    let cn =
        info.and_then(|axum::Extension(i)| i.peer_certificates.first().and_then(|c| peer_cn(c)));
    match cn {
        Some(cn) => axum::Json(serde_json::json!({
            "operator": cn,
            "roles": [],
            "permissions": []
        }))
        .into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"error": {"code": "unauthenticated", "message": "no client certificate"}})),
        )
            .into_response(),
    }
}

/// The TLS the test server speaks.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerTls {
    /// rustls defaults: TLS 1.3 and 1.2, every scheme ring verifies.
    Default,
    /// TLS 1.2 only, and client signatures only as RSA PKCS#1 v1.5 or ECDSA: an RSA client
    /// key must sign rsa_pkcs1_*.
    Tls12Pkcs1,
}

impl TestServer {
    /// Starts a server requiring client certificates chained to one of `client_cas` (DER).
    pub(crate) fn start(client_cas: &[CertificateDer<'static>]) -> TestServer {
        Self::start_with(client_cas, ServerTls::Default)
    }

    pub(crate) fn start_with(
        client_cas: &[CertificateDer<'static>],
        mode: ServerTls,
    ) -> TestServer {
        let mut provider = rustls::crypto::ring::default_provider();
        if mode == ServerTls::Tls12Pkcs1 {
            use rustls::SignatureScheme as S;
            let algs = provider.signature_verification_algorithms;
            let mapping: Vec<_> = algs
                .mapping
                .iter()
                .filter(|(s, _)| {
                    matches!(
                        s,
                        S::RSA_PKCS1_SHA256
                            | S::RSA_PKCS1_SHA384
                            | S::RSA_PKCS1_SHA512
                            | S::ECDSA_NISTP256_SHA256
                            | S::ECDSA_NISTP384_SHA384
                    )
                })
                .copied()
                .collect();
            provider.signature_verification_algorithms =
                rustls::crypto::WebPkiSupportedAlgorithms {
                    all: algs.all,
                    mapping: Box::leak(mapping.into_boxed_slice()),
                };
        }
        let provider = Arc::new(provider);
        let versions: &[&rustls::SupportedProtocolVersion] = match mode {
            ServerTls::Default => rustls::DEFAULT_VERSIONS,
            ServerTls::Tls12Pkcs1 => &[&rustls::version::TLS12],
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in client_cas {
            roots.add(c.clone()).expect("client CA");
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .expect("client verifier");
        let (ca_params, ca_key, ca_cert) = ca("Operator API Test Server CA");
        let issuer = rcgen::Issuer::new(ca_params, &ca_key);
        let server_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut p = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "127.0.0.1");
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = p.signed_by(&server_key, &issuer).expect("server cert");
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![server_cert.der().clone()],
                PrivateKeyDer::from_pem_slice(server_key.serialize_pem().as_bytes()).expect("key"),
            )
            .expect("server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
        let app = Router::new()
            .route("/api/v1/whoami", get(whoami))
            .route(
                "/api/v1/forbidden",
                get(|| async {
                    (
                        StatusCode::FORBIDDEN,
                        axum::Json(serde_json::json!({"error": {"code": "forbidden", "message": "needs permission view-audit-log"}})),
                    )
                }),
            )
            .route(
                "/api/v1/broken",
                get(|| async { (StatusCode::BAD_GATEWAY, "upstream fell over") }),
            );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let handle: axum_server::Handle<SocketAddr> = axum_server::Handle::new();
        let h = handle.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let server = axum_server::from_tcp_rustls(listener, tls)
                    .expect("listener")
                    .handle(h);
                if let Err(e) = server.serve(app.into_make_service()).await {
                    eprintln!("test operator API stopped: {e}");
                }
            });
        });
        TestServer {
            addr,
            handle,
            thread: Some(thread),
            ca_pem: ca_cert.pem(),
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

/// A second client CA the server trusts, and an operator certificate and key from it in files.
pub(crate) struct FileIdentity {
    pub(crate) ca_der: CertificateDer<'static>,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

pub(crate) fn file_identity(dir: &Path, cn: &str) -> FileIdentity {
    let (params, key, cert) = ca("Automation Test CA");
    let issuer = rcgen::Issuer::new(params, &key);
    let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let leaf = p.signed_by(&leaf_key, &issuer).expect("leaf");
    let (c, k) = (dir.join("op.pem"), dir.join("op-key.pem"));
    std::fs::write(&c, leaf.pem()).unwrap();
    std::fs::write(&k, leaf_key.serialize_pem()).unwrap();
    FileIdentity {
        ca_der: cert.der().clone(),
        cert: c,
        key: k,
    }
}

pub(crate) fn pem_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM certificates")
}

pub(crate) fn ca_pem_of(der: &CertificateDer<'_>) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

pub(crate) trait TapMkdir {
    fn tap_mkdir(self) -> PathBuf;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> PathBuf {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

/// An automation CA and one certificate per operator name, in files.
pub(crate) struct Externals {
    dir: PathBuf,
}

impl Externals {
    pub(crate) fn new(dir: &Path, names: &[&str]) -> Externals {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "Automation CA");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let ca = p.self_signed(&key).unwrap();
        let ca_path = dir.join("automation-ca.pem");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        let issuer = rcgen::Issuer::new(p, &key);
        for name in names {
            let k = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let mut lp = rcgen::CertificateParams::default();
            lp.distinguished_name.push(rcgen::DnType::CommonName, *name);
            lp.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            let leaf = lp.signed_by(&k, &issuer).unwrap();
            std::fs::write(dir.join(format!("{name}.pem")), leaf.pem()).unwrap();
            std::fs::write(dir.join(format!("{name}.key")), k.serialize_pem()).unwrap();
        }
        Externals {
            dir: dir.to_path_buf(),
        }
    }

    /// The `--identity-cert/--identity-key` arguments of `name`.
    pub(crate) fn args(&self, name: &str) -> Vec<String> {
        let f = |ext: &str| self.dir.join(format!("{name}.{ext}")).display().to_string();
        vec![
            "--identity-cert".into(),
            f("pem"),
            "--identity-key".into(),
            f("key"),
        ]
    }
}
