//! The LDAP connection: URL check, TLS (rustls with the policy's CA bundle, hostname checking),
//! StartTLS, simple bind, timeouts, and searches paged with the simple paged results control
//! (RFC 2696) whose entries are parsed without panicking on malformed input.
//!
//! This module speaks the protocol only. It does not know flavours, templates or snapshots, and
//! it never follows referrals.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ldap3::asn1::{PL, StructureTag, parse_tag};
use ldap3::controls::RawControl;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::build::RawEntry;

/// OID of the simple paged results control.
const PAGED_RESULTS_OID: &str = "1.2.840.113556.1.4.319";

/// Connecting to or talking with an LDAP server failed.
#[derive(Debug, thiserror::Error)]
pub enum LdapError {
    /// The URL is not `ldap://host[:port]` or `ldaps://host[:port]`.
    #[error("{url:?} is not a usable LDAP URL: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A plain `ldap://` URL without StartTLS would send the bind password in cleartext, and
    /// the policy does not say `allowCleartextBind: true`.
    #[error(
        "{url}: a plain ldap:// URL without a tls section sends the bind password in cleartext; \
         add a tls section (StartTLS), use ldaps://, or set allowCleartextBind: true"
    )]
    CleartextBind {
        /// The URL.
        url: String,
    },
    /// The bind password's secret reference does not resolve.
    #[error("bind password ({reference}): {source}")]
    Password {
        /// Where the secret was looked for.
        reference: String,
        /// Why it failed.
        #[source]
        source: crate::policy::secret::SecretError,
    },
    /// The CA bundle cannot be read.
    #[error("cannot read the TLS CA file {path}: {source}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The CA bundle holds no usable certificate.
    #[error("the TLS CA file {path} holds no usable PEM certificate{detail}")]
    CaPem {
        /// The file.
        path: PathBuf,
        /// What went wrong, if anything specific.
        detail: String,
    },
    /// The TCP connection, TLS handshake or StartTLS failed (certificate errors land here).
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: Box<ldap3::LdapError>,
    },
    /// The server did not answer in time.
    #[error("{url}: {what} timed out after {secs} s")]
    Timeout {
        /// The URL.
        url: String,
        /// The operation.
        what: String,
        /// The limit.
        secs: u64,
    },
    /// The server refused the bind (wrong DN or password, or TLS required).
    #[error("{url}: bind as {dn:?} refused: {reason} (LDAP result {rc}){text}")]
    Bind {
        /// The URL.
        url: String,
        /// The bind DN.
        dn: String,
        /// The result code.
        rc: u32,
        /// Its name.
        reason: &'static str,
        /// The server's diagnostic text, prefixed with ": " when present.
        text: String,
    },
    /// A protocol-level failure during an operation (connection lost, bad response).
    #[error("{url}: {what}: {source}")]
    Operation {
        /// The URL.
        url: String,
        /// The operation.
        what: String,
        /// Why.
        #[source]
        source: Box<ldap3::LdapError>,
    },
    /// The server answered a search with an error or a truncation.
    #[error("{url}: search under {base:?} with {filter}: {reason} (LDAP result {rc}){text}")]
    Search {
        /// The URL.
        url: String,
        /// The search base.
        base: String,
        /// The filter.
        filter: String,
        /// The result code.
        rc: u32,
        /// Its name.
        reason: &'static str,
        /// The server's diagnostic text, prefixed with ": " when present.
        text: String,
    },
    /// A search result entry is not shaped as RFC 4511 says.
    #[error("{url}: malformed search result entry")]
    MalformedEntry {
        /// The URL.
        url: String,
    },
    /// A content-hash change token was asked for but the observation was incomplete.
    #[error("{url}: observation incomplete, no change token: {problems}")]
    Incomplete {
        /// The URL.
        url: String,
        /// Why.
        problems: String,
    },
    /// The async runtime for blocking callers could not be created.
    #[error("cannot start the LDAP I/O runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// How to reach and authenticate to a server. Its `Debug` redacts the bind password.
#[derive(Clone)]
pub struct ConnectConfig {
    /// `ldap://` or `ldaps://` URL.
    pub url: String,
    /// Use StartTLS on an `ldap://` URL.
    pub starttls: bool,
    /// PEM bundle of trusted CAs; `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate (labs only; logged loudly).
    pub insecure_skip_verify: bool,
    /// Bind DN.
    pub bind_dn: String,
    /// Bind password.
    pub bind_password: String,
    /// Limit for TCP connect + TLS handshake.
    pub connect_timeout: Duration,
    /// Limit for each operation (for searches: between two replies).
    pub op_timeout: Duration,
}

impl std::fmt::Debug for ConnectConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectConfig")
            .field("url", &self.url)
            .field("starttls", &self.starttls)
            .field("ca_file", &self.ca_file)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .field("bind_dn", &self.bind_dn)
            .field("bind_password", &"<redacted>")
            .field("connect_timeout", &self.connect_timeout)
            .field("op_timeout", &self.op_timeout)
            .finish()
    }
}

/// A bound connection.
pub struct Client {
    ldap: Ldap,
    url: String,
    op_timeout: Duration,
}

/// The name of an LDAP result code (RFC 4511 appendix A).
pub fn result_name(rc: u32) -> &'static str {
    match rc {
        0 => "success",
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        7 => "authMethodNotSupported",
        8 => "strongerAuthRequired",
        10 => "referral",
        11 => "adminLimitExceeded",
        12 => "unavailableCriticalExtension",
        13 => "confidentialityRequired",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials (wrong bind DN or password)",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        80 => "other",
        _ => "error",
    }
}

fn text_suffix(t: &str) -> String {
    let t = t.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    if t.is_empty() {
        String::new()
    } else {
        format!(": {t}")
    }
}

/// Checks the URL: scheme ldap/ldaps, a host, nothing after the authority but an optional `/`.
pub fn check_url(url: &str) -> Result<(), LdapError> {
    let bad = |reason: &str| LdapError::BadUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let rest = url
        .strip_prefix("ldaps://")
        .or_else(|| url.strip_prefix("ldap://"))
        .ok_or_else(|| bad("the scheme must be ldap:// or ldaps://"))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    if authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad(
            "only scheme, host and port are allowed (base DN and filters are separate settings)",
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        match after {
            "" => (h, None),
            p => (
                h,
                Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?),
            ),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if let Some(p) = port
        && !matches!(p.parse::<u16>(), Ok(n) if n > 0)
    {
        return Err(bad("the port is not a number from 1 to 65535"));
    }
    Ok(())
}

fn tls_config(cfg: &ConnectConfig) -> Result<Option<Arc<rustls::ClientConfig>>, LdapError> {
    let Some(path) = &cfg.ca_file else {
        return Ok(None);
    };
    let pem = std::fs::read(path).map_err(|source| LdapError::CaFile {
        path: path.clone(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| LdapError::CaPem {
            path: path.clone(),
            detail: format!(": {e}"),
        })?;
        roots.add(cert).map_err(|e| LdapError::CaPem {
            path: path.clone(),
            detail: format!(": {e}"),
        })?;
    }
    if roots.is_empty() {
        return Err(LdapError::CaPem {
            path: path.clone(),
            detail: String::new(),
        });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LdapError::CaPem {
            path: path.clone(),
            detail: format!(": {e}"),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(Arc::new(config)))
}

impl Client {
    /// Connects (TLS as configured) and binds.
    pub async fn connect(cfg: &ConnectConfig) -> Result<Client, LdapError> {
        check_url(&cfg.url)?;
        // ldap3 builds its default (system roots) configuration with the process default.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(cfg.connect_timeout)
            .set_starttls(cfg.starttls && cfg.url.starts_with("ldap://"));
        if cfg.insecure_skip_verify {
            tracing::warn!(
                url = %cfg.url,
                "INSECURE: TLS certificate verification is disabled for this LDAP directory \
                 (insecureSkipVerify); anyone on the path can impersonate it"
            );
            settings = settings.set_no_tls_verify(true);
        } else if let Some(config) = tls_config(cfg)? {
            settings = settings.set_config(config);
        }
        let url = cfg.url.clone();
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &cfg.url)
            .await
            .map_err(|source| match source {
                ldap3::LdapError::Timeout { .. } => LdapError::Timeout {
                    url: url.clone(),
                    what: "connect".into(),
                    secs: cfg.connect_timeout.as_secs(),
                },
                source => LdapError::Connect {
                    url: url.clone(),
                    source: Box::new(source),
                },
            })?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!("LDAP connection ended: {e}");
            }
        });
        let res = ldap
            .with_timeout(cfg.op_timeout)
            .simple_bind(&cfg.bind_dn, &cfg.bind_password)
            .await
            .map_err(|e| op_error(&url, "bind", cfg.op_timeout, e))?;
        if res.rc != 0 {
            return Err(LdapError::Bind {
                url,
                dn: cfg.bind_dn.clone(),
                rc: res.rc,
                reason: result_name(res.rc),
                text: text_suffix(&res.text),
            });
        }
        Ok(Client {
            ldap,
            url,
            op_timeout: cfg.op_timeout,
        })
    }

    /// The URL connected to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs a search, paged with `page_size` when given, and hands every entry to `on_entry`
    /// as it arrives. Search references (referrals) are skipped, never chased. Any error,
    /// truncation or unpaged partial result is an `Err`; entries delivered before it remain
    /// delivered.
    pub async fn search(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[String],
        page_size: Option<u32>,
        mut on_entry: impl FnMut(RawEntry),
    ) -> Result<(), LdapError> {
        let mut cookie: Vec<u8> = Vec::new();
        loop {
            if let Some(size) = page_size {
                let value = encode_paged(size, &cookie);
                self.ldap.with_controls(RawControl {
                    ctype: PAGED_RESULTS_OID.to_string(),
                    crit: false,
                    val: Some(value),
                });
            }
            let what = format!("search under {base:?}");
            let mut stream = self
                .ldap
                .with_timeout(self.op_timeout)
                .streaming_search(base, scope, filter, attrs.to_vec())
                .await
                .map_err(|e| op_error(&self.url, &what, self.op_timeout, e))?;
            loop {
                let item = stream
                    .next()
                    .await
                    .map_err(|e| op_error(&self.url, &what, self.op_timeout, e))?;
                let Some(item) = item else { break };
                if item.is_ref() || item.is_intermediate() {
                    continue;
                }
                let entry = parse_entry(item.0).ok_or_else(|| LdapError::MalformedEntry {
                    url: self.url.clone(),
                })?;
                on_entry(entry);
            }
            let res = stream.finish().await;
            if res.rc != 0 {
                return Err(LdapError::Search {
                    url: self.url.clone(),
                    base: base.to_string(),
                    filter: filter.to_string(),
                    rc: res.rc,
                    reason: result_name(res.rc),
                    text: text_suffix(&res.text),
                });
            }
            if page_size.is_none() {
                return Ok(());
            }
            let next = res
                .ctrls
                .iter()
                .find(|c| c.1.ctype == PAGED_RESULTS_OID)
                .and_then(|c| c.1.val.as_deref())
                .and_then(decode_paged_cookie);
            match next {
                // A server that ignores the (non-critical) control answered everything at
                // once with success: that is the whole result.
                None => return Ok(()),
                Some(c) if c.is_empty() => return Ok(()),
                Some(c) => cookie = c,
            }
        }
    }

    /// Reads attributes of one entry (base scope); `None` when it does not exist.
    pub async fn read_entry(
        &mut self,
        dn: &str,
        attrs: &[String],
    ) -> Result<Option<RawEntry>, LdapError> {
        let mut found = None;
        match self
            .search(dn, Scope::Base, "(objectClass=*)", attrs, None, |e| {
                found = Some(e)
            })
            .await
        {
            Ok(()) => Ok(found),
            Err(LdapError::Search { rc: 32, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Unbinds politely (errors ignored: the connection is going away anyway).
    pub async fn close(mut self) {
        let _ = self.ldap.unbind().await;
    }
}

fn op_error(url: &str, what: &str, limit: Duration, e: ldap3::LdapError) -> LdapError {
    match e {
        ldap3::LdapError::Timeout { .. } => LdapError::Timeout {
            url: url.to_string(),
            what: what.to_string(),
            secs: limit.as_secs(),
        },
        source => LdapError::Operation {
            url: url.to_string(),
            what: what.to_string(),
            source: Box::new(source),
        },
    }
}

/// BER for `realSearchControlValue ::= SEQUENCE { size INTEGER, cookie OCTET STRING }`.
fn encode_paged(size: u32, cookie: &[u8]) -> Vec<u8> {
    let mut int = size.to_be_bytes().to_vec();
    while int.len() > 1 && int[0] == 0 && int[1] & 0x80 == 0 {
        int.remove(0);
    }
    if int[0] & 0x80 != 0 {
        int.insert(0, 0);
    }
    let mut body = vec![0x02];
    push_len(&mut body, int.len());
    body.extend_from_slice(&int);
    body.push(0x04);
    push_len(&mut body, cookie.len());
    body.extend_from_slice(cookie);
    let mut out = vec![0x30];
    push_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// The cookie of a paged results response control; `None` when malformed.
fn decode_paged_cookie(val: &[u8]) -> Option<Vec<u8>> {
    let (_, tag) = parse_tag(val).ok()?;
    let PL::C(parts) = tag.payload else {
        return None;
    };
    match parts.get(1).map(|t| &t.payload) {
        Some(PL::P(cookie)) => Some(cookie.clone()),
        _ => None,
    }
}

/// Parses `SearchResultEntry ::= [APPLICATION 4] SEQUENCE { objectName, attributes }`.
fn parse_entry(tag: StructureTag) -> Option<RawEntry> {
    if tag.id != 4 {
        return None;
    }
    let PL::C(parts) = tag.payload else {
        return None;
    };
    let mut parts = parts.into_iter();
    let PL::P(dn) = parts.next()?.payload else {
        return None;
    };
    let dn = String::from_utf8(dn).ok()?;
    let PL::C(list) = parts.next()?.payload else {
        return None;
    };
    let mut attrs: HashMap<String, Vec<Vec<u8>>> = HashMap::with_capacity(list.len());
    for a in list {
        let PL::C(pair) = a.payload else {
            return None;
        };
        let mut pair = pair.into_iter();
        let PL::P(name) = pair.next()?.payload else {
            return None;
        };
        let mut name = String::from_utf8(name).ok()?;
        name.make_ascii_lowercase();
        let PL::C(vals) = pair.next()?.payload else {
            return None;
        };
        let values = attrs.entry(name).or_default();
        for v in vals {
            let PL::P(v) = v.payload else {
                return None;
            };
            values.push(v);
        }
    }
    Some(RawEntry { dn, attrs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        for ok in [
            "ldap://127.0.0.1:389",
            "ldaps://dc1.corp.example.org",
            "ldap://localhost/",
            "ldap://[::1]:389",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://x",
            "ldap://",
            "ldap:///",
            "ldap://h:99999",
            "ldap://h:x",
            "ldap://h/dc=x?uid",
            "ldap://u@h",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paged_control_round_trips() {
        let v = encode_paged(500, b"abc");
        assert_eq!(
            v,
            [
                0x30, 0x09, 0x02, 0x02, 0x01, 0xf4, 0x04, 0x03, b'a', b'b', b'c'
            ]
        );
        assert_eq!(decode_paged_cookie(&v).unwrap(), b"abc");
        assert_eq!(encode_paged(100, b"")[2..5], [0x02, 0x01, 100]);
        assert_eq!(encode_paged(200, b"")[2..6], [0x02, 0x02, 0x00, 200]);
        let long = vec![7u8; 300];
        assert_eq!(decode_paged_cookie(&encode_paged(1, &long)).unwrap(), long);
        assert!(decode_paged_cookie(&[0x30, 0x05, 0x02]).is_none());
        assert!(decode_paged_cookie(&[]).is_none());
    }

    #[test]
    fn malformed_entries_are_rejected() {
        let prim = |v: &[u8]| StructureTag {
            class: ldap3::asn1::TagClass::Universal,
            id: 4,
            payload: PL::P(v.to_vec()),
        };
        let cons = |id, v: Vec<StructureTag>| StructureTag {
            class: ldap3::asn1::TagClass::Application,
            id,
            payload: PL::C(v),
        };
        assert!(parse_entry(cons(4, vec![])).is_none());
        assert!(parse_entry(cons(5, vec![prim(b"dc=x"), cons(16, vec![])])).is_none());
        assert!(parse_entry(cons(4, vec![prim(b"dc=x"), prim(b"oops")])).is_none());
        let ok = parse_entry(cons(
            4,
            vec![
                prim(b"dc=x"),
                cons(
                    16,
                    vec![cons(16, vec![prim(b"UID"), cons(17, vec![prim(b"a")])])],
                ),
            ],
        ))
        .unwrap();
        assert_eq!(ok.first("uid"), Some("a"));
    }
}
