//! The operator client: Keyfleet's CLI talking to a remote controller's operator API
//! (`/api/v1`, JSON) over HTTPS with a TLS client certificate as the operator's identity.
//!
//! ```text
//!   Identity::Pkcs11(uri) ──► pkcs11_key::Pkcs11Key (the card signs the handshake)
//!   Identity::Files{cert,key} ──► PEM key in memory (automation)
//!        └─► rustls ClientConfig (ring; trusts --server-ca, else $SSL_CERT_FILE)
//!              └─► ApiClient: reqwest on a current-thread tokio runtime, get/post → JSON
//! ```
//!
//! Errors from the server arrive as `{"error": {"code", "message"}}` and become
//! [`ClientError::Api`]. This module knows nothing of operator commands: callers give paths
//! and bodies.

pub mod identity;
pub mod pkcs11_key;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::ResolvesClientCert;
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;
use serde_json::Value;

pub use identity::{Identity, IdentityError, PinSource};
pub use pkcs11_key::Pkcs11Key;

use crate::ca::remote::{self, RemoteError};

/// The environment variable naming a PEM file of CAs to trust when `--server-ca` is not given.
pub const SSL_CERT_FILE: &str = "SSL_CERT_FILE";

/// How long one request may take (connect, handshake with the card, answer).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the TCP connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An operator API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server URL is not an `https://` URL.
    #[error("--server {server}: {reason}")]
    Url {
        /// The URL given.
        server: String,
        /// What is wrong.
        reason: String,
    },
    /// No trust anchors for the server: neither `--server-ca` nor `$SSL_CERT_FILE`.
    #[error(
        "no CA to trust for the server {server}: give --server-ca FILE (PEM) or set SSL_CERT_FILE"
    )]
    NoTrust {
        /// The server URL.
        server: String,
    },
    /// The server CA file cannot be read or holds no certificate.
    #[error("--server-ca: {error}")]
    ServerCa {
        /// The file.
        path: PathBuf,
        /// Why (names the file).
        error: RemoteError,
    },
    /// The client identity cannot be used (token, PIN, key, certificate, files).
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The TLS handshake or session failed (untrusted server, client certificate refused, the
    /// card did not sign).
    #[error("TLS with {server}: {message}")]
    Tls {
        /// The server URL.
        server: String,
        /// What rustls or the server said.
        message: String,
    },
    /// The server could not be reached or the connection broke.
    #[error("cannot reach {server}: {message}")]
    Connect {
        /// The server URL.
        server: String,
        /// Why.
        message: String,
    },
    /// The server answered with an error.
    #[error("the server answered {status} {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The error code (`error.code`; `http-<status>` when the answer is not the error
        /// shape).
        code: String,
        /// The error message (or the start of the answer's body).
        message: String,
    },
    /// A successful answer that is not JSON.
    #[error("{server}: the answer to {path} is not JSON: {reason}")]
    BadAnswer {
        /// The server URL.
        server: String,
        /// The API path.
        path: String,
        /// Why.
        reason: String,
    },
    /// The HTTP client or its runtime could not be built.
    #[error("HTTP client: {0}")]
    Setup(String),
}

/// Presents one certified key whenever the server asks for a client certificate.
#[derive(Debug)]
struct OneIdentity(Arc<CertifiedKey>);

impl ResolvesClientCert for OneIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        // Without a common scheme the key could not sign: say nothing, the server refuses.
        self.0.key.choose_scheme(sigschemes)?;
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A client of the operator API of one server.
#[derive(Debug)]
pub struct ApiClient {
    server: String,
    base: String,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

/// The trust anchors for the server: `server_ca`, else `$SSL_CERT_FILE`.
fn server_roots(
    server: &str,
    server_ca: Option<&Path>,
) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let path = match server_ca {
        Some(p) => p.to_path_buf(),
        None => match std::env::var_os(SSL_CERT_FILE).filter(|v| !v.is_empty()) {
            Some(p) => PathBuf::from(p),
            None => {
                return Err(ClientError::NoTrust {
                    server: server.to_string(),
                });
            }
        },
    };
    remote::load_pem_certificates(&path).map_err(|error| ClientError::ServerCa { path, error })
}

/// The certified key of an identity: from the token (logging in) or from the files.
fn certified_key(identity: &Identity) -> Result<Arc<CertifiedKey>, ClientError> {
    match identity {
        Identity::Pkcs11(uri) => Ok(Arc::new(Pkcs11Key::open(uri)?)),
        Identity::Files { cert, key } => {
            let id = remote::load_pem_identity(cert, key)
                .map_err(|e| ClientError::Identity(IdentityError::Files(e)))?;
            let provider = rustls::crypto::ring::default_provider();
            let signing = provider
                .key_provider
                .load_private_key(id.key)
                .map_err(|e| {
                    ClientError::Identity(IdentityError::Files(RemoteError::Pem {
                        path: key.clone(),
                        reason: format!("the key cannot sign: {e}"),
                    }))
                })?;
            let ck = CertifiedKey::new(id.chain, signing);
            ck.keys_match().map_err(|e| {
                ClientError::Identity(IdentityError::Files(RemoteError::Pem {
                    path: key.clone(),
                    reason: format!("the key does not match {}: {e}", cert.display()),
                }))
            })?;
            Ok(Arc::new(ck))
        }
    }
}

/// The whole chain of an error's causes, on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// Whether a rustls error is somewhere in the causes. `io::Error`s are looked into: their
/// `source()` skips the error they wrap, and the TLS stream wraps rustls errors in them (twice).
fn is_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = cur {
        let mut inner: &(dyn std::error::Error + 'static) = s;
        loop {
            if inner.downcast_ref::<rustls::Error>().is_some() {
                return true;
            }
            match inner
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
            {
                Some(wrapped) => inner = wrapped,
                None => break,
            }
        }
        cur = s.source();
    }
    false
}

/// The error an API answer with a non-success status stands for.
pub fn api_error(status: u16, body: &[u8]) -> ClientError {
    let parsed: Option<(String, String)> =
        serde_json::from_slice::<Value>(body).ok().and_then(|v| {
            let e = v.get("error")?;
            Some((
                e.get("code")?.as_str()?.to_string(),
                e.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            ))
        });
    match parsed {
        Some((code, message)) => ClientError::Api {
            status,
            code,
            message,
        },
        None => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let mut message: String = text.chars().take(200).collect();
            if message.len() < text.len() {
                message.push('…');
            }
            if message.is_empty() {
                message = "(empty answer)".into();
            }
            ClientError::Api {
                status,
                code: format!("http-{status}"),
                message,
            }
        }
    }
}

/// Refuses a server URL that is not `https://` or has a query or fragment.
fn check_url(server: &str) -> Result<(), ClientError> {
    let url_err = |reason: &str| ClientError::Url {
        server: server.to_string(),
        reason: reason.to_string(),
    };
    let parsed = reqwest::Url::parse(server).map_err(|e| url_err(&e.to_string()))?;
    if parsed.scheme() != "https" {
        return Err(url_err(
            "must be an https:// URL (the operator API requires TLS client certificates)",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(url_err("must not have a query or fragment"));
    }
    Ok(())
}

impl ApiClient {
    /// A client of the server at `server` (`https://host:port`, optionally with a path prefix)
    /// with this identity, trusting `server_ca` (PEM) for the server, else the CAs in
    /// `$SSL_CERT_FILE`. A token identity logs in now (asking for the PIN if the URI gives
    /// none); no request is sent yet.
    pub fn new(
        server: &str,
        identity: &Identity,
        server_ca: Option<&Path>,
    ) -> Result<ApiClient, ClientError> {
        check_url(server)?;
        let roots = server_roots(server, server_ca)?;
        let key = certified_key(identity)?;
        Self::build(server, roots, key)
    }

    /// A client of the server at `server` presenting `key` (a key whose private half is on
    /// a card, say), trusting `server_ca` (PEM) for the server, else `$SSL_CERT_FILE`.
    pub fn with_key(
        server: &str,
        key: Arc<CertifiedKey>,
        server_ca: Option<&Path>,
    ) -> Result<ApiClient, ClientError> {
        check_url(server)?;
        let roots = server_roots(server, server_ca)?;
        Self::build(server, roots, key)
    }

    fn build(
        server: &str,
        roots: Vec<CertificateDer<'static>>,
        key: Arc<CertifiedKey>,
    ) -> Result<ApiClient, ClientError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut store = rustls::RootCertStore::empty();
        for r in roots {
            store.add(r).map_err(|e| ClientError::Tls {
                server: server.to_string(),
                message: format!("server CA rejected: {e}"),
            })?;
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Setup(e.to_string()))?
            .with_root_certificates(store)
            .with_client_cert_resolver(Arc::new(OneIdentity(key)));
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            // One connection for the whole command: a card signs one handshake.
            .pool_max_idle_per_host(1)
            .build()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(ApiClient {
            server: server.to_string(),
            base: format!("{}/api/v1", server.trim_end_matches('/')),
            http,
            rt,
        })
    }

    /// The server URL as given.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The full URL of an API path (`/whoami` → `https://host/api/v1/whoami`).
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    /// `GET /api/v1{path}`: the JSON answer.
    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(path, self.http.get(self.url(path)))
    }

    /// `POST /api/v1{path}` with a JSON body: the JSON answer.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.call(path, self.http.post(self.url(path)).json(body))
    }

    fn transport(&self, e: &reqwest::Error) -> ClientError {
        let message = chain(e);
        if is_tls(e) {
            ClientError::Tls {
                server: self.server.clone(),
                message,
            }
        } else {
            ClientError::Connect {
                server: self.server.clone(),
                message,
            }
        }
    }

    fn call(&self, path: &str, req: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let req = req.header(reqwest::header::ACCEPT, "application/json");
        let (status, body) = self.rt.block_on(async {
            let resp = req.send().await.map_err(|e| self.transport(&e))?;
            let status = resp.status().as_u16();
            let body = resp.bytes().await.map_err(|e| self.transport(&e))?;
            Ok::<_, ClientError>((status, body))
        })?;
        if !(200..300).contains(&status) {
            return Err(api_error(status, &body));
        }
        if body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::BadAnswer {
            server: self.server.clone(),
            path: path.to_string(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_shapes_become_api_errors() {
        let e = api_error(
            403,
            br#"{"error": {"code": "forbidden", "message": "needs permission unblock"}}"#,
        );
        assert!(
            matches!(&e, ClientError::Api { status: 403, code, message }
                if code == "forbidden" && message == "needs permission unblock"),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "the server answered 403 forbidden: needs permission unblock"
        );
        // Not the error shape: the status stands in for the code, the body for the message.
        let e = api_error(502, b"<html>Bad Gateway</html>");
        assert!(
            matches!(&e, ClientError::Api { status: 502, code, message }
                if code == "http-502" && message == "<html>Bad Gateway</html>"),
            "{e:?}"
        );
        let e = api_error(500, &[b'x'; 1000]);
        assert!(matches!(&e, ClientError::Api { message, .. } if message.chars().count() == 201));
        let e = api_error(404, b"");
        assert!(matches!(&e, ClientError::Api { message, .. } if message == "(empty answer)"));
        let e = api_error(409, br#"{"error": "conflict"}"#);
        assert!(matches!(&e, ClientError::Api { code, .. } if code == "http-409"));
    }

    #[test]
    fn refuses_plain_http_and_missing_trust() {
        let files = Identity::Files {
            cert: "/nonexistent/c.pem".into(),
            key: "/nonexistent/k.pem".into(),
        };
        let e = ApiClient::new("http://127.0.0.1:1", &files, None).unwrap_err();
        assert!(matches!(e, ClientError::Url { .. }), "{e}");
        let e = ApiClient::new("not a url", &files, None).unwrap_err();
        assert!(matches!(e, ClientError::Url { .. }), "{e}");
        let e = ApiClient::new(
            "https://127.0.0.1:1",
            &files,
            Some(Path::new("/nonexistent/ca.pem")),
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn paths_join_under_api_v1() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["op".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        let files = Identity::Files {
            cert: c.clone(),
            key: k.clone(),
        };
        let client = ApiClient::new("https://kf.example:8443/", &files, Some(&c)).unwrap();
        assert_eq!(
            client.url("/whoami"),
            "https://kf.example:8443/api/v1/whoami"
        );
        assert_eq!(
            client.url("requests/7/approve"),
            "https://kf.example:8443/api/v1/requests/7/approve"
        );
        // A key that is not the certificate's is refused before any traffic.
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        std::fs::write(&k, other.serialize_pem()).unwrap();
        let e = ApiClient::new("https://kf.example:8443", &files, Some(&c)).unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
    }
}
