//! TLS for the operator API, from the policy: which client certificates are trusted
//! ([`ClientTrust`]) and the server's own certificate ([`server_config`]).
//!
//! ```text
//!   trusted client roots = ca.pem of every local CA an operator template issues from
//!                          (Settings.spec.operators.templates → CardTemplate certificates'
//!                          authority → <state>/ca/<name>/ca.pem)
//!                        + every certificate of each Settings.spec.operators.external[].caFile
//!                        + ca.pem of every other local CA a template issues from (holders'
//!                          cards: the self-service routes and the portal), once it exists
//!   server certificate   = Settings.spec.api.tls {certFile, keyFile}        when set, else
//!                          <state>/api/server.pem + server.key.sealed        issued by the local
//!                          CA of the first operator template for the listen address, reused
//!                          while valid for more than 7 days for that address, else reissued
//!                          (each issuance in the audit log before it is used)
//! ```
//!
//! A client certificate is verified against the roots at the TLS layer but is optional
//! there: a call without one reaches the handlers, which answer 401 in the API's error shape.
//! This module does not decide who a certificate identifies (the inventory and the external
//! subjects do, in `crate::operators`: an operator only by an operator template's certificate,
//! a holder by their own card's); [`ClientTrust::external_chains`] only says whether a
//! chain leads to one external identity's own CA.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;

use crate::audit::{AuditLog, NewEntry};
use crate::ca::local::LocalCa;
use crate::ca::{CertificateAuthority as _, EnrollRequest};
use crate::names::{DistinguishedName, SanValue};
use crate::policy::PolicySet;
use crate::policy::model::CertificateAuthoritySpec;
use crate::secrets::MasterKey;

/// The folder of the generated server certificate, inside the state directory.
pub const API_DIR: &str = "api";
/// The generated server certificate chain (PEM, leaf first), inside [`API_DIR`].
pub const SERVER_CERT_FILE: &str = "server.pem";
/// The generated server key (PKCS#8, sealed with the master key), inside [`API_DIR`].
pub const SERVER_KEY_FILE: &str = "server.key.sealed";
/// The audit log kind of a server certificate issuance.
pub const ISSUE_KIND: &str = "issue-api-certificate";
/// A generated server certificate is reissued when it expires within this time.
pub const REUSE_MARGIN: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
/// Lifetime requested for a generated server certificate (capped by the CA's).
pub const SERVER_CERT_VALIDITY_SECS: u64 = 90 * 24 * 3600;
/// What the sealed server key is bound to (the associated data of `MasterKey::seal`).
pub const SERVER_KEY_AAD: &[u8] = b"keyfleet-api-server-key";

/// The API's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ApiSetupError {
    /// `Settings.spec.operators.templates` names a template the policy does not have.
    #[error("Settings.spec.operators.templates: no CardTemplate named `{0}`")]
    UnknownTemplate(String),
    /// An operator template issues from a CertificateAuthority that is not a local CA (or
    /// that the policy does not have).
    #[error(
        "Settings.spec.operators.templates: template `{template}` issues from \
         CertificateAuthority `{authority}`, which is not a local CA of this policy"
    )]
    NotLocalCa {
        /// The template.
        template: String,
        /// Its authority.
        authority: String,
    },
    /// A local CA of an operator template has no certificate in the state directory yet.
    #[error(
        "local CA `{name}` has no certificate at {} yet: it is created on first use \
         (`keyfleet ca cert {name}`, `keyfleet apply` or a controller pass)", path.display()
    )]
    LocalCaMissing {
        /// The CA's name.
        name: String,
        /// Its `ca.pem`.
        path: PathBuf,
    },
    /// The local CA could not be opened or created.
    #[error("local CA `{name}`: {message}")]
    LocalCa {
        /// The CA's name.
        name: String,
        /// Why.
        message: String,
    },
    /// A PEM file could not be read.
    #[error("{setting}: cannot read {}: {message}", path.display())]
    ReadFile {
        /// The policy setting naming the file.
        setting: String,
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A PEM file holds no certificate (or no private key).
    #[error("{setting}: {} holds no {what}", path.display())]
    EmptyFile {
        /// The policy setting naming the file.
        setting: String,
        /// The file.
        path: PathBuf,
        /// `certificate` or `private key`.
        what: &'static str,
    },
    /// A certificate cannot be a trust anchor.
    #[error("{setting}: a certificate in {} is not usable as a CA: {message}", path.display())]
    BadCaCertificate {
        /// The policy setting naming the file.
        setting: String,
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Neither an operator template nor an external identity: no client could authenticate.
    #[error(
        "the API trusts no client certificate: set Settings.spec.operators.templates or \
         Settings.spec.operators.external"
    )]
    NoClientTrust,
    /// No server certificate can be had.
    #[error(
        "the API has no server certificate: set Settings.spec.api.tls {{certFile, keyFile}}, \
         or Settings.spec.operators.templates so that their local CA issues one"
    )]
    NoServerCertificate,
    /// The server certificate and key do not make a TLS configuration (mismatched key,
    /// unsupported algorithm).
    #[error("{setting}: {message}")]
    Tls {
        /// Where the certificate came from.
        setting: String,
        /// What rustls said.
        message: String,
    },
    /// The generated certificate's files could not be written.
    #[error("cannot write {}: {message}", path.display())]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Issuing the server certificate failed.
    #[error("cannot issue the API server certificate with local CA `{ca}`: {message}")]
    Issue {
        /// The CA.
        ca: String,
        /// Why.
        message: String,
    },
    /// The issuance could not be written to the audit log, so the certificate is not used.
    #[error("API server certificate not used: the audit log cannot be written: {0}")]
    Audit(#[source] crate::audit::AuditError),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client certificates the API trusts: every root, and each external identity's own.
#[derive(Debug, Clone)]
pub struct ClientTrust {
    roots: Arc<RootCertStore>,
    /// The local CAs whose certificates are among the roots, by name.
    local_cas: BTreeMap<String, CertificateDer<'static>>,
    /// The local CAs of the other templates (holders' cards), among the roots too, by name.
    holder_cas: BTreeMap<String, CertificateDer<'static>>,
    /// Per external operator name, a verifier trusting only its `caFile`.
    external: BTreeMap<String, Arc<dyn ClientCertVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ClientTrust {
    /// Every trusted root (local CAs and external CA files).
    pub fn roots(&self) -> &RootCertStore {
        &self.roots
    }

    /// The certificates of the local CAs of the operator templates, by CA name.
    pub fn local_cas(&self) -> &BTreeMap<String, CertificateDer<'static>> {
        &self.local_cas
    }

    /// The certificates of the other local CAs templates issue from (holders' certificates,
    /// for the self-service routes and the portal), by CA name; those the operator templates
    /// use are in [`Self::local_cas`] only.
    pub fn holder_cas(&self) -> &BTreeMap<String, CertificateDer<'static>> {
        &self.holder_cas
    }

    /// Whether `end_entity` (with `intermediates`) chains, at `now`, to the `caFile` of the
    /// external operator `name`, for client authentication. False for an unknown name and for
    /// a certificate from any other trusted CA, whatever its subject.
    pub fn external_chains(
        &self,
        name: &str,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> bool {
        self.external
            .get(name)
            .is_some_and(|v| v.verify_client_cert(end_entity, intermediates, now).is_ok())
    }

    /// The TLS layer's verifier: a presented certificate must chain to a root; none at all
    /// is let through (the handlers answer 401).
    fn verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, ApiSetupError> {
        WebPkiClientVerifier::builder_with_provider(self.roots.clone(), self.provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| match e {
                rustls::server::VerifierBuilderError::NoRootAnchors => ApiSetupError::NoClientTrust,
                e => ApiSetupError::Tls {
                    setting: "client certificate verifier".into(),
                    message: e.to_string(),
                },
            })
    }
}

/// The local CAs (name → spec) the operator templates issue from, in name order.
fn operator_cas(
    policy: &PolicySet,
) -> Result<BTreeMap<String, &crate::policy::model::LocalCaSpec>, ApiSetupError> {
    let mut cas = BTreeMap::new();
    for t in &policy.settings.spec.operators.templates {
        let template = policy
            .templates
            .get(t)
            .ok_or_else(|| ApiSetupError::UnknownTemplate(t.clone()))?;
        for cert in &template.spec.certificates {
            match policy.authorities.get(&cert.authority).map(|a| &a.spec) {
                Some(CertificateAuthoritySpec::Local(spec)) => {
                    cas.insert(cert.authority.clone(), spec);
                }
                _ => {
                    return Err(ApiSetupError::NotLocalCa {
                        template: t.clone(),
                        authority: cert.authority.clone(),
                    });
                }
            }
        }
    }
    Ok(cas)
}

fn read_certs(setting: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ApiSetupError> {
    let read_err = |message: String| ApiSetupError::ReadFile {
        setting: setting.to_string(),
        path: path.to_path_buf(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(ApiSetupError::EmptyFile {
            setting: setting.to_string(),
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(certs)
}

fn add_roots(
    store: &mut RootCertStore,
    certs: &[CertificateDer<'static>],
    setting: &str,
    path: &Path,
) -> Result<(), ApiSetupError> {
    for c in certs {
        store
            .add(c.clone())
            .map_err(|e| ApiSetupError::BadCaCertificate {
                setting: setting.to_string(),
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
    }
    Ok(())
}

/// The local CAs (name → spec) any template issues from: the operator templates' and the
/// holders', in name order.
fn template_cas(policy: &PolicySet) -> BTreeMap<String, &crate::policy::model::LocalCaSpec> {
    let mut cas = BTreeMap::new();
    for template in policy.templates.values() {
        for cert in &template.spec.certificates {
            if let Some(CertificateAuthoritySpec::Local(spec)) =
                policy.authorities.get(&cert.authority).map(|a| &a.spec)
            {
                cas.insert(cert.authority.clone(), spec);
            }
        }
    }
    cas
}

/// Opens, creating them when new (key, certificate), the local CAs of the operator
/// templates and of every other template, so that [`client_trust`] finds their certificates
/// (as the first `keyfleet apply` or controller pass would): an operator's card and a
/// holder's card can then log in from the first start on.
pub fn ensure_operator_cas(
    policy: &PolicySet,
    state_dir: &Path,
    master: &MasterKey,
) -> Result<(), ApiSetupError> {
    let now = time::OffsetDateTime::now_utc();
    let mut cas = template_cas(policy);
    cas.extend(operator_cas(policy)?);
    for (name, spec) in cas {
        crate::runtime::local_ca(&name, spec, state_dir, master, now)
            .map_err(|message| ApiSetupError::LocalCa { name, message })?;
    }
    Ok(())
}

/// The client trust of `policy`: the certificates of the local CAs of the operator templates
/// (read from `<state_dir>/ca/<name>/ca.pem`, as `keyfleet ca cert NAME` prints them; the CA
/// must exist) and every certificate of each external operator's `caFile` (relative to the
/// Settings file).
pub fn client_trust(policy: &PolicySet, state_dir: &Path) -> Result<ClientTrust, ApiSetupError> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    let mut local_cas = BTreeMap::new();
    for name in operator_cas(policy)?.keys() {
        let path = state_dir
            .join("ca")
            .join(name)
            .join(crate::ca::local::CA_CERT_FILE);
        if !path.exists() {
            return Err(ApiSetupError::LocalCaMissing {
                name: name.clone(),
                path,
            });
        }
        let setting = format!("CertificateAuthority {name}");
        let certs = read_certs(&setting, &path)?;
        add_roots(&mut roots, &certs[..1], &setting, &path)?;
        local_cas.insert(name.clone(), certs[0].clone());
    }
    // Holders' cards: the other local CAs templates issue from. One that has no certificate
    // yet has issued nothing anyone could present, and is left out.
    let mut holder_cas = BTreeMap::new();
    for name in template_cas(policy).into_keys() {
        if local_cas.contains_key(&name) {
            continue;
        }
        let path = state_dir
            .join("ca")
            .join(&name)
            .join(crate::ca::local::CA_CERT_FILE);
        if !path.exists() {
            continue;
        }
        let setting = format!("CertificateAuthority {name}");
        let certs = read_certs(&setting, &path)?;
        add_roots(&mut roots, &certs[..1], &setting, &path)?;
        holder_cas.insert(name, certs[0].clone());
    }
    let settings = &policy.settings;
    let mut external = BTreeMap::new();
    for (i, e) in settings.spec.operators.external.iter().enumerate() {
        let setting = format!("Settings.spec.operators.external[{i}].caFile ({})", e.name);
        let path = settings.resolve_path(&e.ca_file);
        let certs = read_certs(&setting, &path)?;
        add_roots(&mut roots, &certs, &setting, &path)?;
        let mut own = RootCertStore::empty();
        add_roots(&mut own, &certs, &setting, &path)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(own), provider.clone())
            .build()
            .map_err(|err| ApiSetupError::BadCaCertificate {
                setting: setting.clone(),
                path: path.clone(),
                message: err.to_string(),
            })?;
        external.insert(e.name.clone(), verifier);
    }
    if roots.is_empty() {
        return Err(ApiSetupError::NoClientTrust);
    }
    Ok(ClientTrust {
        roots: Arc::new(roots),
        local_cas,
        holder_cas,
        external,
        provider,
    })
}

/// The API's TLS server configuration: client certificates verified against `trust` but
/// optional; ALPN h2 and http/1.1; the server certificate from `Settings.spec.api.tls`, or
/// generated (see the module docs) for `listen` with the master key sealing its key and
/// each issuance in `audit` before use.
pub fn server_config(
    policy: &PolicySet,
    state_dir: &Path,
    master: &MasterKey,
    audit: &AuditLog,
    listen: SocketAddr,
    trust: &ClientTrust,
) -> Result<Arc<rustls::ServerConfig>, ApiSetupError> {
    let settings = &policy.settings;
    let (chain, key, setting) = match &settings.spec.api.tls {
        Some(tls) => {
            let cert_path = settings.resolve_path(&tls.cert_file);
            let key_path = settings.resolve_path(&tls.key_file);
            let chain = read_certs("Settings.spec.api.tls.certFile", &cert_path)?;
            let key = read_key("Settings.spec.api.tls.keyFile", &key_path)?;
            (chain, key, "Settings.spec.api.tls".to_string())
        }
        None => {
            let (chain, key) = generated_certificate(
                policy,
                state_dir,
                master,
                audit,
                listen,
                time::OffsetDateTime::now_utc(),
            )?;
            (
                chain,
                key,
                format!(
                    "{}",
                    state_dir.join(API_DIR).join(SERVER_CERT_FILE).display()
                ),
            )
        }
    };
    let tls_err = |message: String| ApiSetupError::Tls {
        setting: setting.clone(),
        message,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(trust.provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?
        .with_client_cert_verifier(trust.verifier()?)
        .with_single_cert(chain, key)
        .map_err(|e| tls_err(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_key(setting: &str, path: &Path) -> Result<PrivateKeyDer<'static>, ApiSetupError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => ApiSetupError::EmptyFile {
            setting: setting.to_string(),
            path: path.to_path_buf(),
            what: "private key (PKCS#8, SEC1 or PKCS#1 PEM)",
        },
        e => ApiSetupError::ReadFile {
            setting: setting.to_string(),
            path: path.to_path_buf(),
            message: e.to_string(),
        },
    })
}

/// The generated server certificate chain (leaf, CA) and key for `listen`: the stored one
/// when still good, else a new one from the first operator template's local CA.
fn generated_certificate(
    policy: &PolicySet,
    state_dir: &Path,
    master: &MasterKey,
    audit: &AuditLog,
    listen: SocketAddr,
    now: time::OffsetDateTime,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ApiSetupError> {
    let (ca_name, spec) = first_operator_ca(policy)?;
    let ca =
        crate::runtime::local_ca(&ca_name, spec, state_dir, master, now).map_err(|message| {
            ApiSetupError::LocalCa {
                name: ca_name.clone(),
                message,
            }
        })?;
    let ca_pem = ca
        .ca_certificate_pem()
        .map_err(|e| ApiSetupError::LocalCa {
            name: ca_name.clone(),
            message: e.to_string(),
        })?;
    let ca_der =
        CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| ApiSetupError::LocalCa {
            name: ca_name.clone(),
            message: format!("ca.pem: {e}"),
        })?;
    let dir = state_dir.join(API_DIR);
    crate::fsutil::ensure_private_dir(&dir).map_err(|e| ApiSetupError::Write {
        path: dir.clone(),
        message: e.to_string(),
    })?;
    let cert_path = dir.join(SERVER_CERT_FILE);
    let key_path = dir.join(SERVER_KEY_FILE);
    match stored(&cert_path, &key_path, master, &ca_der, listen.ip(), now) {
        Ok(found) => return Ok(found),
        Err(why) => tracing::debug!(%listen, "issuing an API server certificate: {why}"),
    }
    let ca = IssuingCa {
        ca: &ca,
        name: &ca_name,
        der: &ca_der,
        pem: &ca_pem,
    };
    issue(&ca, master, audit, listen, now, &cert_path, &key_path)
}

/// The local CA issuing the server certificate, with its certificate.
struct IssuingCa<'a> {
    ca: &'a LocalCa,
    name: &'a str,
    der: &'a CertificateDer<'static>,
    pem: &'a str,
}

fn first_operator_ca(
    policy: &PolicySet,
) -> Result<(String, &crate::policy::model::LocalCaSpec), ApiSetupError> {
    // Every operator CA is validated; the first template's first certificate decides.
    operator_cas(policy)?;
    let first = policy
        .settings
        .spec
        .operators
        .templates
        .first()
        .and_then(|t| policy.templates.get(t))
        .and_then(|t| t.spec.certificates.first())
        .ok_or(ApiSetupError::NoServerCertificate)?;
    match policy.authorities.get(&first.authority).map(|a| &a.spec) {
        Some(CertificateAuthoritySpec::Local(spec)) => Ok((first.authority.clone(), spec)),
        _ => Err(ApiSetupError::NoServerCertificate),
    }
}

/// The stored certificate and key, if they are still good for `ip` for more than
/// [`REUSE_MARGIN`], were issued by `ca_der` and match each other; else why not.
fn stored(
    cert_path: &Path,
    key_path: &Path,
    master: &MasterKey,
    ca_der: &CertificateDer<'static>,
    ip: IpAddr,
    now: time::OffsetDateTime,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    if !cert_path.exists() || !key_path.exists() {
        return Err("none stored yet".into());
    }
    let chain = CertificateDer::pem_file_iter(cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert_path.display()))?;
    let leaf = chain.first().ok_or("the stored chain is empty")?;
    let sealed = std::fs::read(key_path).map_err(|e| format!("{}: {e}", key_path.display()))?;
    let pkcs8 = master
        .open(SERVER_KEY_AAD, &sealed)
        .map_err(|e| format!("{}: {e}", key_path.display()))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec()));
    let provider = provider();
    CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider)
        .map_err(|e| format!("the stored key does not fit the certificate: {e}"))?;
    let mut roots = RootCertStore::empty();
    roots
        .add(ca_der.clone())
        .map_err(|e| format!("the CA certificate: {e}"))?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| e.to_string())?;
    let then = now + REUSE_MARGIN;
    let then = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(then.unix_timestamp()).unwrap_or(0),
    ));
    verifier
        .verify_server_cert(
            leaf,
            &chain[1..],
            &ServerName::IpAddress(ip.into()),
            &[],
            then,
        )
        .map_err(|e| format!("the stored certificate is not good for {ip} in 7 days: {e}"))?;
    Ok((chain, key))
}

/// Issues a new certificate, audits it, then stores it.
fn issue(
    ca: &IssuingCa<'_>,
    master: &MasterKey,
    audit: &AuditLog,
    listen: SocketAddr,
    now: time::OffsetDateTime,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ApiSetupError> {
    let ca_name = ca.name;
    let issue_err = |message: String| ApiSetupError::Issue {
        ca: ca_name.to_string(),
        message,
    };
    let ip = listen.ip();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| issue_err(e.to_string()))?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .map_err(|e| issue_err(e.to_string()))?;
    let subject = DistinguishedName::parse("CN=Keyfleet operator API,O=Keyfleet")
        .map_err(|e| issue_err(e.to_string()))?;
    let sans = if ip.is_loopback() {
        vec![SanValue::Dns("localhost".into())]
    } else {
        Vec::new()
    };
    let mut nonce = [0u8; 8];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut nonce);
    let req = EnrollRequest {
        request_id: format!(
            "api-server/{ip}/{}/{}",
            now.unix_timestamp(),
            hex::encode(nonce)
        ),
        csr_der: csr.der().to_vec(),
        profile: crate::ca::local::TLS_SERVER_PROFILE.to_string(),
        subject,
        sans,
        validity_secs: SERVER_CERT_VALIDITY_SECS,
    };
    let issued = ca
        .ca
        .enroll_tls_server(&req, &[ip])
        .map_err(|e| issue_err(e.to_string()))?;
    let not_after = issued
        .not_after
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    audit
        .append(
            NewEntry {
                actor: "keyfleet".into(),
                kind: ISSUE_KIND.into(),
                target: listen.to_string(),
                outcome: "done".into(),
                details: serde_json::json!({
                    "serial": issued.serial,
                    "authority": ca_name,
                    "notAfter": not_after,
                }),
            },
            now,
        )
        .map_err(ApiSetupError::Audit)?;
    let pkcs8 = zeroize::Zeroizing::new(key.serialize_der());
    let write = |path: &Path, data: &[u8]| {
        crate::fsutil::write_atomic(path, data, 0o600).map_err(|e| ApiSetupError::Write {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    };
    write(key_path, &master.seal(SERVER_KEY_AAD, &pkcs8))?;
    let mut chain_pem = issued.pem.clone();
    if !chain_pem.ends_with('\n') {
        chain_pem.push('\n');
    }
    chain_pem.push_str(ca.pem);
    write(cert_path, chain_pem.as_bytes())?;
    let leaf = CertificateDer::from(issued.der);
    Ok((
        vec![leaf, ca.der.clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec())),
    ))
}
