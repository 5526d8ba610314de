//! Builds the remote CA connectors from `CertificateAuthority` policy objects: resolves file
//! paths against the policy file, reads the client credential and trust bundle, resolves the
//! PKCS#12 password or cfssl auth key, and places each connector's request log under the state
//! directory (`<state>/ca/<name>/requests/`).
//!
//! Building a connector sends nothing; only [`check_online`] (for `validate --online`) talks
//! to the gateways. It does not handle the local CA (see `runtime::local_ca`).

use std::path::Path;
use std::time::Duration;

use super::cfssl::{Cfssl, CfsslConfig};
use super::entrust::{EntrustGateway, GatewayConfig};
use super::remote::{RetryPolicy, load_pem_certificates, load_pem_identity, load_pkcs12_identity};
use crate::policy::diag::codes;
use crate::policy::model::{
    CertificateAuthoritySpec, CfsslSpec, ClientCertificate, EntrustGatewaySpec, Kind,
};
use crate::policy::{Diagnostic, Object, PolicySet};

/// Default bound on concurrent calls to one gateway CA.
pub const DEFAULT_MAX_CONCURRENCY: usize = 8;
/// Default timeout of one HTTP exchange.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The gateway settings of a policy object, credentials loaded.
pub fn gateway_config(
    obj: &Object<impl Sized>,
    spec: &EntrustGatewaySpec,
    state_dir: &Path,
) -> Result<GatewayConfig, String> {
    let identity = match &spec.client_certificate {
        ClientCertificate::Pem(p) => load_pem_identity(
            &obj.resolve_path(&p.cert_file),
            &obj.resolve_path(&p.key_file),
        )
        .map_err(|e| format!("client certificate: {e}"))?,
        ClientCertificate::Pkcs12(p) => {
            let password = p
                .password
                .resolve(&obj.base_dir())
                .map_err(|e| format!("PKCS#12 password {}: {e}", p.password))?;
            load_pkcs12_identity(&obj.resolve_path(&p.pkcs12_file), &password)
                .map_err(|e| format!("client certificate: {e}"))?
        }
    };
    let trust = load_pem_certificates(&obj.resolve_path(&spec.trust_bundle))
        .map_err(|e| format!("trust bundle: {e}"))?;
    Ok(GatewayConfig {
        url: spec.url.clone(),
        ca_id: spec.ca_id.clone(),
        trust,
        identity,
        timeout: spec
            .timeout
            .map(|d| Duration::from_secs(d.as_secs()))
            .unwrap_or(DEFAULT_TIMEOUT),
        connect_timeout: Duration::from_secs(10),
        retry: RetryPolicy::default(),
        max_concurrency: spec
            .max_concurrency
            .map(|n| n as usize)
            .unwrap_or(DEFAULT_MAX_CONCURRENCY),
        request_log: Some(state_dir.join("ca").join(&obj.name).join("requests")),
    })
}

/// The Entrust CA Gateway connector of a policy object.
pub fn entrust_gateway(
    obj: &Object<impl Sized>,
    spec: &EntrustGatewaySpec,
    state_dir: &Path,
) -> Result<EntrustGateway, String> {
    EntrustGateway::new(gateway_config(obj, spec, state_dir)?).map_err(|e| e.to_string())
}

/// The cfssl connector of a policy object.
pub fn cfssl(
    obj: &Object<impl Sized>,
    spec: &CfsslSpec,
    state_dir: &Path,
) -> Result<Cfssl, String> {
    let key = spec
        .auth_key
        .resolve(&obj.base_dir())
        .map_err(|e| format!("auth key {}: {e}", spec.auth_key))?;
    let trust = match &spec.trust_bundle {
        Some(path) => load_pem_certificates(&obj.resolve_path(path))
            .map_err(|e| format!("trust bundle: {e}"))?,
        None => Vec::new(),
    };
    Cfssl::new(CfsslConfig {
        url: spec.url.clone(),
        trust,
        auth_key_hex: key,
        default_profile: spec.profile.clone(),
        timeout: DEFAULT_TIMEOUT,
        retry: RetryPolicy::default(),
        request_log: Some(state_dir.join("ca").join(&obj.name).join("requests")),
    })
    .map_err(|e| e.to_string())
}

/// The `validate --online` checks that need the CA itself: for every Entrust CA Gateway
/// authority, the gateway answers with this credential, the configured CA id is one it shows,
/// and every profile a template names exists there. Problems are errors naming the object.
pub fn check_online(set: &PolicySet) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let ca_kind = Some(Kind::CertificateAuthority.as_str());
    for (name, obj) in &set.authorities {
        let CertificateAuthoritySpec::EntrustGateway(spec) = &obj.spec else {
            continue;
        };
        let err = |code: &'static str, path: &str, message: String| {
            Diagnostic::error(code, &obj.file, obj.line, message)
                .for_object(ca_kind, Some(name))
                .at_path(path)
        };
        let gw = match gateway_config(obj, spec, Path::new(".")).and_then(|mut cfg| {
            cfg.request_log = None;
            cfg.retry = RetryPolicy {
                attempts: 2,
                ..RetryPolicy::default()
            };
            EntrustGateway::new(cfg).map_err(|e| e.to_string())
        }) {
            Ok(gw) => gw,
            Err(e) => {
                out.push(err(codes::INVALID_VALUE, "/spec/entrustGateway", e));
                continue;
            }
        };
        let visible = match gw.list_cas() {
            Ok(v) => v,
            Err(e) => {
                out.push(err(
                    codes::INVALID_VALUE,
                    "/spec/entrustGateway/url",
                    format!("the gateway cannot be used: {e}"),
                ));
                continue;
            }
        };
        if !visible.iter().any(|c| c.id == spec.ca_id) {
            let ids: Vec<&str> = visible.iter().map(|c| c.id.as_str()).collect();
            out.push(err(
                codes::DANGLING_REFERENCE,
                "/spec/entrustGateway/caId",
                format!(
                    "unknown CA id {:?}: the gateway shows this client {}",
                    spec.ca_id,
                    if ids.is_empty() {
                        "no CA".to_string()
                    } else {
                        format!("only {}", ids.join(", "))
                    }
                ),
            ));
            continue;
        }
        for t in set.templates.values() {
            for (i, cert) in t.spec.certificates.iter().enumerate() {
                if &cert.authority != name {
                    continue;
                }
                let problem = match gw.get_profile(&cert.profile) {
                    Ok(_) => continue,
                    Err(e) if e.status() == Some(404) => (
                        codes::UNKNOWN_PROFILE,
                        format!(
                            "unknown profile {:?} at CA {} of {name}: {e}",
                            cert.profile, spec.ca_id
                        ),
                    ),
                    Err(e) => (
                        codes::INVALID_VALUE,
                        format!("cannot read profile {:?}: {e}", cert.profile),
                    ),
                };
                out.push(
                    Diagnostic::error(problem.0, &t.file, t.line, problem.1)
                        .for_object(Some(Kind::CardTemplate.as_str()), Some(&t.name))
                        .at_path(format!("/spec/certificates/{i}/profile")),
                );
            }
        }
    }
    out
}
