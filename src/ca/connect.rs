//! Builds the remote CA connectors from `CertificateAuthority` policy objects: resolves file
//! paths against the policy file, reads the client credential and trust bundle, resolves the
//! PKCS#12 password or cfssl auth key, and places each connector's request log under the state
//! directory (`<state>/ca/<name>/requests/`).
//!
//! It does NOT contact any server (building a connector sends nothing) and does not handle the
//! local CA (see `runtime::local_ca`).

use std::path::Path;
use std::time::Duration;

use super::cfssl::{Cfssl, CfsslConfig};
use super::entrust::{EntrustGateway, GatewayConfig};
use super::remote::{RetryPolicy, load_pem_certificates, load_pem_identity, load_pkcs12_identity};
use crate::policy::Object;
use crate::policy::model::{CfsslSpec, ClientCertificate, EntrustGatewaySpec};

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
    Cfssl::new(CfsslConfig {
        url: spec.url.clone(),
        auth_key_hex: key,
        default_profile: spec.profile.clone(),
        timeout: DEFAULT_TIMEOUT,
        retry: RetryPolicy::default(),
        request_log: Some(state_dir.join("ca").join(&obj.name).join("requests")),
    })
    .map_err(|e| e.to_string())
}
