//! Semantic checks across a loaded policy set: references resolve, slots are unique and fit the
//! card type and key algorithm, templates expand (against a sample user) to valid DNs and SANs,
//! durations are sane, and the online check that every secret reference resolves.
//!
//! Every check is a named, pure function of the policy set that pushes diagnostics; none stops
//! the others. This module contacts no server; `check_online` only reads environment variables
//! and local files.

use std::collections::{BTreeMap, BTreeSet};

mod operators;
pub use operators::GROUP_PREFIX;

use super::diag::{Diagnostic, codes};
use super::duration::Duration;
use super::load::Locations;
use super::model::{
    CardType, CertificateAuthoritySpec, CertificateSpec, CfsslSpec, ClientCertificate,
    CrlPublishSpec, DEFAULT_RETRIES, DirectorySpec, KeyAlgorithm, KeyGeneration, Kind,
    OnUserDisabled, SanTemplate, Slot, StockSelector,
};
use super::secret::SecretRef;
use super::template::{TextTemplate, Var};
use super::{LOCAL_CA_PROFILES, Object, PolicySet};
use crate::names::{DistinguishedName, escape_value};

/// The values templates are expanded with during validation; they contain characters that
/// must be escaped, so a template that only works with tame values is caught.
pub fn sample_user(var: &Var) -> Option<String> {
    Some(match var {
        Var::Uid => "jdoe".to_string(),
        Var::Cn => "Doe, Jane #1".to_string(),
        Var::Mail => "jane.doe@example.com".to_string(),
        Var::Upn => "jdoe@example.com".to_string(),
        Var::Dn => "uid=jdoe,ou=People,dc=example,dc=com".to_string(),
        Var::Attr(name) => format!("sample-{name}"),
    })
}

/// Key algorithms allowed per PIV slot (NIST SP 800-78-5): authentication keys (9A, 9E)
/// are RSA or P-256; signature and key management (9C, 9D) may also use P-384.
pub fn slot_allows(slot: Slot, alg: KeyAlgorithm) -> bool {
    match slot {
        Slot::PivAuthentication | Slot::CardAuthentication => alg != KeyAlgorithm::EccP384,
        Slot::DigitalSignature | Slot::KeyManagement => true,
    }
}

/// Largest `connectTimeout` of an LDAP directory.
pub const MAX_LDAP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Largest `operationTimeout` of an LDAP directory.
pub const MAX_LDAP_OPERATION_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Deepest parenthesis nesting accepted in an LDAP filter (real filters nest a few levels;
/// the limit keeps a runaway filter from exhausting the parser's stack).
pub const MAX_LDAP_FILTER_DEPTH: usize = 32;

/// What is wrong with an LDAP filter the policy writes (RFC 4515, parentheses optional
/// around a single item), or `None` when it parses.
pub fn ldap_filter_problem(filter: &str) -> Option<String> {
    let f = filter.trim();
    if f.is_empty() {
        return Some("the LDAP filter is empty".into());
    }
    // Literal parentheses in values are escaped (\28, \29), so these are all structure.
    let mut depth = 0usize;
    let mut deepest = 0usize;
    for b in f.bytes() {
        match b {
            b'(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if deepest > MAX_LDAP_FILTER_DEPTH {
        return Some(format!(
            "the LDAP filter {f:?} nests parentheses {deepest} deep (at most {MAX_LDAP_FILTER_DEPTH})"
        ));
    }
    let wrapped = if f.starts_with('(') {
        f.to_string()
    } else {
        format!("({f})")
    };
    match ldap3::parse_filter(&wrapped) {
        Ok(_) => None,
        Err(()) => Some(format!(
            "{f:?} is not a valid LDAP filter (RFC 4515: e.g. (employeeType=contractor) or \
             (&(department=IT)(!(title=intern))); write ( ) * \\ inside values as \\28 \\29 \\2a \\5c)"
        )),
    }
}

struct Checker<'a> {
    set: &'a PolicySet,
    locations: &'a Locations,
    failed: &'a BTreeSet<(Kind, String)>,
    out: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn push<S>(
        &mut self,
        kind: Kind,
        obj: &Object<S>,
        pointer: &str,
        code: &'static str,
        message: String,
    ) {
        let pos = self
            .locations
            .get(&(kind, obj.name.clone()))
            .map(|m| m.locate(pointer));
        let line = pos.map_or(obj.line, |p| p.line);
        let mut d = Diagnostic::error(code, &obj.file, line, message)
            .for_object(Some(kind.as_str()), Some(&obj.name))
            .at_path(super::diag::pointer_to_path(pointer));
        d.column = pos.map(|p| p.column);
        self.out.push(d);
    }

    fn warn<S>(
        &mut self,
        kind: Kind,
        obj: &Object<S>,
        pointer: &str,
        code: &'static str,
        message: String,
    ) {
        self.push(kind, obj, pointer, code, message);
        if let Some(last) = self.out.pop() {
            self.out.push(last.warning());
        }
    }

    /// Whether a reference to `name` of `kind` should be reported as dangling.
    fn dangling(&self, kind: Kind, name: &str, exists: bool) -> bool {
        !exists && !self.failed.contains(&(kind, name.to_string()))
    }
}

/// Runs every semantic check.
pub(crate) fn check(
    set: &PolicySet,
    locations: &Locations,
    failed: &BTreeSet<(Kind, String)>,
) -> Vec<Diagnostic> {
    let mut c = Checker {
        set,
        locations,
        failed,
        out: Vec::new(),
    };
    check_authorities(&mut c);
    check_directories(&mut c);
    check_templates(&mut c);
    check_assignments(&mut c);
    check_stocks(&mut c);
    operators::check_roles(&mut c);
    operators::check_operators(&mut c);
    check_hold_capability(&mut c);
    check_pkcs11_secrets(&mut c);
    c.out
}

/// Every `{pkcs11: ...}` secret reference names a module, an object and (if any type) a data
/// object: refused at the reference's line otherwise. The token is not contacted.
fn check_pkcs11_secrets(c: &mut Checker<'_>) {
    fn bad<S>(c: &mut Checker<'_>, kind: Kind, obj: &Object<S>, pointer: &str, r: &SecretRef) {
        if let SecretRef::Pkcs11 { pkcs11 } = r
            && let Err(e) = crate::keystore::check_data_object_uri(pkcs11)
        {
            let e = e.to_string();
            let e = e.strip_prefix("keyStore ").unwrap_or(&e);
            c.push(
                kind,
                obj,
                pointer,
                codes::INVALID_VALUE,
                format!("secret reference {e}"),
            );
        }
    }
    for ca in c.set.authorities.values() {
        match &ca.spec {
            CertificateAuthoritySpec::Cfssl(s) => bad(
                c,
                Kind::CertificateAuthority,
                ca,
                "/spec/cfssl/authKey",
                &s.auth_key,
            ),
            CertificateAuthoritySpec::EntrustGateway(g) => {
                if let ClientCertificate::Pkcs12(p) = &g.client_certificate {
                    let ptr = "/spec/entrustGateway/clientCertificate/password";
                    bad(c, Kind::CertificateAuthority, ca, ptr, &p.password)
                }
            }
            CertificateAuthoritySpec::Local(_) => {}
        }
    }
    for d in c.set.directories.values() {
        if let DirectorySpec::Ldap(l) = &d.spec {
            bad(
                c,
                Kind::Directory,
                d,
                "/spec/ldap/bindPassword",
                &l.bind_password,
            );
        }
    }
    for s in c.set.stocks.values() {
        if let StockSelector::Pkcs11(p) = &s.spec.selector {
            bad(c, Kind::CardStock, s, "/spec/pkcs11/soPin", &p.so_pin);
        }
    }
}

/// Warns about templates that suspend on account disable while one of their certificates comes
/// from a CA that cannot hold (cfssl): such a suspend fails at run time, it is never turned
/// into a revocation.
fn check_hold_capability(c: &mut Checker<'_>) {
    for t in c.set.templates.values() {
        if t.spec.on_user_disabled != OnUserDisabled::Suspend {
            continue;
        }
        for (i, cert) in t.spec.certificates.iter().enumerate() {
            let cannot_hold = matches!(
                c.set.authorities.get(&cert.authority).map(|a| &a.spec),
                Some(CertificateAuthoritySpec::Cfssl(_))
            );
            if cannot_hold {
                c.warn(
                    Kind::CardTemplate,
                    t,
                    &format!("/spec/certificates/{i}/authority"),
                    codes::SUSPICIOUS,
                    format!(
                        "onUserDisabled is suspend, but CertificateAuthority {:?} (cfssl) cannot put certificates on hold: suspending {} will fail (it is never turned into a revocation); use onUserDisabled: revoke or none",
                        cert.authority, cert.name
                    ),
                );
            }
        }
    }
}

fn check_authorities(c: &mut Checker<'_>) {
    for ca in c.set.authorities.values() {
        let kind = Kind::CertificateAuthority;
        if let CertificateAuthoritySpec::Cfssl(cf) = &ca.spec {
            check_cfssl_trust(c, ca, cf);
        }
        if let CertificateAuthoritySpec::Local(local) = &ca.spec {
            if let Err(e) = DistinguishedName::parse(&local.subject) {
                c.push(
                    kind,
                    ca,
                    "/spec/local/subject",
                    codes::INVALID_SUBJECT,
                    format!("invalid CA subject {:?}: {e}", local.subject),
                );
            }
            if !matches!(
                local.key_algorithm,
                KeyAlgorithm::EccP256 | KeyAlgorithm::EccP384
            ) {
                c.push(
                    kind,
                    ca,
                    "/spec/local/keyAlgorithm",
                    codes::ALGORITHM_NOT_ALLOWED,
                    format!(
                        "the local CA supports ecc-p256 and ecc-p384 keys, not {}",
                        local.key_algorithm
                    ),
                );
            }
            if local.validity.as_secs() == 0 {
                c.push(
                    kind,
                    ca,
                    "/spec/local/validity",
                    codes::DURATION_ORDER,
                    "validity must be longer than zero".into(),
                );
            }
            if local.crl_validity.as_secs() == 0 || local.crl_validity >= local.validity {
                c.push(kind, ca, "/spec/local/crlValidity", codes::DURATION_ORDER, format!("crlValidity ({}) must be longer than zero and shorter than the CA validity ({})", local.crl_validity, local.validity));
            }
            if let Some(publish) = &local.crl_publish {
                check_crl_publish(c, ca, local.crl_validity, publish);
            }
        }
    }
    check_crl_paths_unique(c);
}

/// cfssl's `trustBundle`: required for `https://` (no other roots are trusted), refused for
/// `http://` (it would be ignored), and the file must exist.
fn check_cfssl_trust(c: &mut Checker<'_>, ca: &Object<CertificateAuthoritySpec>, cf: &CfsslSpec) {
    let kind = Kind::CertificateAuthority;
    let https = cf.url.starts_with("https://");
    match &cf.trust_bundle {
        None if https => c.push(
            kind,
            ca,
            "/spec/cfssl/url",
            codes::MISSING_FIELD,
            "an https:// cfssl URL needs trustBundle: the PEM file of the CAs that sign the \
             server's TLS certificate"
                .into(),
        ),
        None => {}
        Some(_) if !https => c.push(
            kind,
            ca,
            "/spec/cfssl/trustBundle",
            codes::INVALID_VALUE,
            "trustBundle is used only with an https:// URL".into(),
        ),
        Some(path) => {
            let path = ca.resolve_path(path);
            if !path.is_file() {
                c.push(
                    kind,
                    ca,
                    "/spec/cfssl/trustBundle",
                    codes::MISSING_FILE,
                    format!("trust bundle {} does not exist", path.display()),
                );
            }
        }
    }
}

/// `crlPublish` of one local CA: a path, and a refresh point inside the CRL's validity.
fn check_crl_publish(
    c: &mut Checker<'_>,
    ca: &Object<CertificateAuthoritySpec>,
    crl_validity: crate::policy::duration::Duration,
    publish: &CrlPublishSpec,
) {
    let kind = Kind::CertificateAuthority;
    if publish.path.as_os_str().is_empty() {
        c.push(
            kind,
            ca,
            "/spec/local/crlPublish/path",
            codes::INVALID_VALUE,
            "crlPublish.path must name the file the CRL is written to".into(),
        );
    } else {
        let path = ca.resolve_path(&publish.path);
        let folder = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if path.is_dir() {
            c.push(
                kind,
                ca,
                "/spec/local/crlPublish/path",
                codes::INVALID_VALUE,
                format!(
                    "crlPublish.path {} is a folder; name the CRL file inside it",
                    path.display()
                ),
            );
        } else if !folder.is_dir() {
            // A warning only: the folder may be mounted or created later; publishing reports
            // the error until it exists, and never undoes a revocation.
            c.warn(
                kind,
                ca,
                "/spec/local/crlPublish/path",
                codes::MISSING_FILE,
                format!(
                    "the folder of crlPublish.path ({}) {}: the CRL cannot be published until it is one",
                    folder.display(),
                    if folder.exists() {
                        "is not a folder"
                    } else {
                        "does not exist"
                    }
                ),
            );
        }
    }
    let refresh = publish.refresh_before_or_default(crl_validity);
    if refresh.as_secs() == 0 || refresh >= crl_validity {
        let pointer = if publish.refresh_before.is_some() {
            "/spec/local/crlPublish/refreshBefore"
        } else {
            "/spec/local/crlValidity"
        };
        c.push(
            kind,
            ca,
            pointer,
            codes::DURATION_ORDER,
            format!(
                "crlPublish.refreshBefore ({refresh}) must be longer than zero and shorter than crlValidity ({crl_validity}), or the CRL would be republished without pause"
            ),
        );
    }
}

/// Two local CAs publishing to the same file would overwrite each other's CRL.
fn check_crl_paths_unique(c: &mut Checker<'_>) {
    let mut seen: BTreeMap<std::path::PathBuf, String> = BTreeMap::new();
    for ca in c.set.authorities.values() {
        let CertificateAuthoritySpec::Local(local) = &ca.spec else {
            continue;
        };
        let Some(publish) = &local.crl_publish else {
            continue;
        };
        if publish.path.as_os_str().is_empty() {
            continue;
        }
        let path = ca.resolve_path(&publish.path);
        match seen.get(&path) {
            Some(other) => {
                let message = format!(
                    "crlPublish.path {} is also the CRL file of CertificateAuthority {other:?}",
                    path.display()
                );
                c.push(
                    Kind::CertificateAuthority,
                    ca,
                    "/spec/local/crlPublish/path",
                    codes::INVALID_VALUE,
                    message,
                );
            }
            None => {
                seen.insert(path, ca.name.clone());
            }
        }
    }
}

fn check_directories(c: &mut Checker<'_>) {
    for dir in c.set.directories.values() {
        let kind = Kind::Directory;
        match &dir.spec {
            DirectorySpec::File(f) => {
                let path = dir.resolve_path(&f.path);
                if !path.is_file() {
                    c.push(
                        kind,
                        dir,
                        "/spec/file/path",
                        codes::MISSING_FILE,
                        format!("directory data file {} does not exist", path.display()),
                    );
                }
            }
            DirectorySpec::Ldap(l) => {
                let timeouts = [
                    (
                        "connectTimeout",
                        l.connect_timeout,
                        MAX_LDAP_CONNECT_TIMEOUT,
                    ),
                    (
                        "operationTimeout",
                        l.operation_timeout,
                        MAX_LDAP_OPERATION_TIMEOUT,
                    ),
                ];
                for (field, value, max) in timeouts {
                    if let Some(v) = value
                        && (v.as_secs() == 0 || v > max)
                    {
                        c.push(
                            kind,
                            dir,
                            &format!("/spec/ldap/{field}"),
                            codes::INVALID_VALUE,
                            format!("{field} is {v}: it must be at least 1s and at most {max}"),
                        );
                    }
                }
                let filters = [
                    ("userFilter", &l.user_filter),
                    ("groupFilter", &l.group_filter),
                ];
                for (field, filter) in filters {
                    if let Some(problem) = filter.as_deref().and_then(ldap_filter_problem) {
                        c.push(
                            kind,
                            dir,
                            &format!("/spec/ldap/{field}"),
                            codes::INVALID_FILTER,
                            format!("{field}: {problem}"),
                        );
                    }
                }
                if crate::observe::ldap::cleartext_bind(l) {
                    if l.allow_cleartext_bind {
                        c.warn(
                            kind,
                            dir,
                            "/spec/ldap/allowCleartextBind",
                            codes::SUSPICIOUS,
                            "allowCleartextBind: the bind password is sent in cleartext over \
                             ldap:// (use ldaps:// or a tls section for StartTLS)"
                                .into(),
                        );
                    } else {
                        c.push(
                            kind,
                            dir,
                            "/spec/ldap/url",
                            codes::CLEARTEXT_BIND,
                            format!(
                                "{}: a plain ldap:// URL without a tls section sends the bind \
                                 password in cleartext; add a tls section (StartTLS), use \
                                 ldaps://, or set allowCleartextBind: true",
                                l.url
                            ),
                        );
                    }
                }
                if l.tls.as_ref().is_some_and(|t| t.insecure_skip_verify) {
                    c.warn(
                        kind,
                        dir,
                        "/spec/ldap/tls/insecureSkipVerify",
                        codes::SUSPICIOUS,
                        "TLS certificate verification is disabled; use only in tests".into(),
                    );
                }
            }
        }
    }
}

fn check_templates(c: &mut Checker<'_>) {
    let stock_types: BTreeSet<CardType> = c.set.stocks.values().map(|s| s.spec.card_type).collect();
    for t in c.set.templates.values() {
        let kind = Kind::CardTemplate;
        let mut slots: BTreeMap<Slot, usize> = BTreeMap::new();
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, cert) in t.spec.certificates.iter().enumerate() {
            let at = |field: &str| format!("/spec/certificates/{i}/{field}");
            if let Some(first) = slots.insert(cert.slot, i) {
                c.push(
                    kind,
                    t,
                    &at("slot"),
                    codes::DUPLICATE_SLOT,
                    format!(
                        "slot {} is already used by certificate {} (`{}`)",
                        cert.slot,
                        first,
                        t.spec
                            .certificates
                            .get(first)
                            .map_or("", |c| c.name.as_str())
                    ),
                );
            }
            if let Some(first) = names.insert(cert.name.as_str(), i) {
                c.push(
                    kind,
                    t,
                    &at("name"),
                    codes::DUPLICATE_CERTIFICATE,
                    format!(
                        "certificate name `{}` is already used by certificate {first}",
                        cert.name
                    ),
                );
            }
            check_certificate(c, t, i, cert);
            if matches!(t.spec.card_type, CardType::Piv | CardType::Virtual)
                && !slot_allows(cert.slot, cert.key_algorithm)
            {
                c.push(
                    kind,
                    t,
                    &at("keyAlgorithm"),
                    codes::ALGORITHM_NOT_ALLOWED,
                    format!(
                        "{} is not allowed in PIV slot {} (use ecc-p256, rsa-2048 or rsa-3072)",
                        cert.key_algorithm, cert.slot
                    ),
                );
            }
        }
        check_retries(c, t);
        if t.spec.key_history.is_some_and(|n| n > 0)
            && (!t.spec.archives_key_management()
                || !matches!(t.spec.card_type, CardType::Piv | CardType::Virtual))
        {
            c.push(
                kind,
                t,
                "/spec/keyHistory",
                codes::KEY_HISTORY,
                "keyHistory needs a key-management (9D) certificate with archive: true on a piv \
                 or virtual card: only archived keys can be put back on a card"
                    .into(),
            );
        }
        if let Some(temporary) = &t.spec.temporary {
            let at = "/spec/temporary/template";
            match c.set.templates.get(&temporary.template) {
                None if c.dangling(kind, &temporary.template, false) => c.push(
                    kind,
                    t,
                    at,
                    codes::DANGLING_REFERENCE,
                    format!("no CardTemplate named {:?}", temporary.template),
                ),
                None => {}
                Some(_) if temporary.template == t.name => c.push(
                    kind,
                    t,
                    at,
                    codes::BAD_TEMPORARY,
                    "a template cannot be its own temporary card".into(),
                ),
                Some(tt) if tt.spec.temporary.is_some() => c.push(
                    kind,
                    t,
                    at,
                    codes::BAD_TEMPORARY,
                    format!(
                        "temporary template {:?} has a temporary card of its own: a temporary \
                         card is never forgotten into another",
                        temporary.template
                    ),
                ),
                Some(_) => {}
            }
        }
        if !stock_types.contains(&t.spec.card_type) {
            c.warn(
                kind,
                t,
                "/spec/cardType",
                codes::NO_CARD_STOCK,
                format!(
                    "no CardStock holds {} cards, so this template cannot be issued",
                    t.spec.card_type.as_str()
                ),
            );
        }
    }
}

/// `pinPolicy.retries` / `pukPolicy.retries` are set on the card at personalisation where its
/// type can (the virtual card; PIV with `vendor: yubico`); elsewhere a value other than the
/// default would be accepted and ignored, so it is refused at its line. A vendor option on a
/// PKCS#11 template is refused too.
fn check_retries(c: &mut Checker<'_>, t: &Object<super::CardTemplateSpec>) {
    let kind = Kind::CardTemplate;
    let spec = &t.spec;
    if spec.card_type == CardType::Pkcs11 && spec.vendor.is_some() {
        c.push(
            kind,
            t,
            "/spec/vendor",
            codes::RETRIES_NOT_SETTABLE,
            "`vendor` is a PIV card option; a pkcs11 template cannot have one".into(),
        );
    }
    if spec.settable_retries().is_some() {
        return;
    }
    let why = match spec.card_type {
        CardType::Pkcs11 => "a PKCS#11 token keeps its own PIN counter".to_string(),
        _ => "this PIV card keeps its own counters: add `vendor: yubico` if the cards are YubiKeys (SET PIN RETRIES)"
            .to_string(),
    };
    for (field, retries) in [
        ("pinPolicy", spec.pin_policy.retries),
        ("pukPolicy", spec.puk_policy.retries),
    ] {
        if retries != DEFAULT_RETRIES {
            c.push(
                kind,
                t,
                &format!("/spec/{field}/retries"),
                codes::RETRIES_NOT_SETTABLE,
                format!(
                    "{field}.retries {retries} cannot be set on {} cards ({why}); remove it or write the default {DEFAULT_RETRIES}",
                    spec.card_type.as_str()
                ),
            );
        }
    }
}

fn check_certificate(
    c: &mut Checker<'_>,
    t: &Object<super::CardTemplateSpec>,
    i: usize,
    cert: &CertificateSpec,
) {
    let kind = Kind::CardTemplate;
    let at = |field: &str| format!("/spec/certificates/{i}/{field}");
    match c.set.authorities.get(&cert.authority) {
        None => {
            if c.dangling(Kind::CertificateAuthority, &cert.authority, false) {
                c.push(
                    kind,
                    t,
                    &at("authority"),
                    codes::DANGLING_REFERENCE,
                    format!("no CertificateAuthority named `{}`", cert.authority),
                );
            }
        }
        Some(ca) => {
            if let CertificateAuthoritySpec::Local(local) = &ca.spec {
                if !LOCAL_CA_PROFILES.contains(&cert.profile.as_str()) {
                    c.push(
                        kind,
                        t,
                        &at("profile"),
                        codes::UNKNOWN_PROFILE,
                        format!(
                            "the local CA `{}` has no profile `{}` (one of: {})",
                            ca.name,
                            cert.profile,
                            LOCAL_CA_PROFILES.join(", ")
                        ),
                    );
                }
                if cert.validity > local.validity {
                    c.warn(
                        kind,
                        t,
                        &at("validity"),
                        codes::SUSPICIOUS,
                        format!(
                            "certificate validity {} is longer than the CA's own validity {}",
                            cert.validity, local.validity
                        ),
                    );
                }
            }
        }
    }
    if cert.key_generation == KeyGeneration::Server && cert.slot != Slot::KeyManagement {
        c.push(
            kind,
            t,
            &at("keyGeneration"),
            codes::KEY_GENERATION,
            format!(
                "server key generation is only allowed for the key-management slot 9D, not {}",
                cert.slot
            ),
        );
    }
    if cert.archive && cert.key_generation != KeyGeneration::Server {
        c.push(
            kind,
            t,
            &at("archive"),
            codes::KEY_GENERATION,
            "archive needs keyGeneration: server (a key made on the card cannot be archived)"
                .into(),
        );
    }
    if cert.validity.as_secs() == 0 {
        c.push(
            kind,
            t,
            &at("validity"),
            codes::DURATION_ORDER,
            "validity must be longer than zero".into(),
        );
    } else if cert.renew_before >= cert.validity {
        c.push(
            kind,
            t,
            &at("renewBefore"),
            codes::DURATION_ORDER,
            format!(
                "renewBefore ({}) must be shorter than validity ({})",
                cert.renew_before, cert.validity
            ),
        );
    }
    check_subject(c, t, &at("subject"), &cert.subject);
    for (j, san) in cert.subject_alt_names.iter().enumerate() {
        let pointer = format!(
            "/spec/certificates/{i}/subjectAltNames/{j}/{}",
            san.type_name()
        );
        if let Some(problem) = san_problem(san) {
            c.push(kind, t, &pointer, codes::INVALID_SAN, problem);
        }
    }
}

fn check_subject(
    c: &mut Checker<'_>,
    t: &Object<super::CardTemplateSpec>,
    pointer: &str,
    subject: &TextTemplate,
) {
    let expanded = match subject.expand(sample_user, escape_value) {
        Ok(s) => s,
        Err(e) => {
            c.push(
                Kind::CardTemplate,
                t,
                pointer,
                codes::INVALID_SUBJECT,
                e.to_string(),
            );
            return;
        }
    };
    if let Err(e) = DistinguishedName::parse(&expanded) {
        c.push(
            Kind::CardTemplate,
            t,
            pointer,
            codes::INVALID_SUBJECT,
            format!(
                "subject {:?} does not give a valid DN (sample user: {expanded:?}): {e}",
                subject.source()
            ),
        );
    }
}

/// Why a SAN template gives an unusable value for the sample user, if it does.
fn san_problem(san: &SanTemplate) -> Option<String> {
    let value = match san.template().expand(sample_user, str::to_string) {
        Ok(v) => v,
        Err(e) => return Some(e.to_string()),
    };
    let source = san.template().source();
    let bad = match san {
        _ if value.trim().is_empty() => Some("is empty"),
        SanTemplate::Email(_) | SanTemplate::Upn(_)
            if !value.contains('@') || value.contains(' ') =>
        {
            Some("does not look like name@domain")
        }
        SanTemplate::Dns(_) if value.contains(['@', ' ', '/', ',']) => Some("is not a DNS name"),
        SanTemplate::Uri(_) if !value.contains(':') || value.contains(' ') => Some("is not a URI"),
        _ => None,
    }?;
    Some(format!(
        "{} SAN {source:?} {bad} (sample user gives {value:?})",
        san.type_name()
    ))
}

fn check_assignments(c: &mut Checker<'_>) {
    for a in c.set.assignments.values() {
        let kind = Kind::Assignment;
        let directory = c.set.directories.get(&a.spec.directory);
        if directory.is_none() && c.dangling(Kind::Directory, &a.spec.directory, false) {
            c.push(
                kind,
                a,
                "/spec/directory",
                codes::DANGLING_REFERENCE,
                format!("no Directory named `{}`", a.spec.directory),
            );
        }
        if !c.set.templates.contains_key(&a.spec.template)
            && c.dangling(Kind::CardTemplate, &a.spec.template, false)
        {
            c.push(
                kind,
                a,
                "/spec/template",
                codes::DANGLING_REFERENCE,
                format!("no CardTemplate named `{}`", a.spec.template),
            );
        }
        if let Some(problem) = a.spec.filter.as_deref().and_then(ldap_filter_problem) {
            c.push(
                kind,
                a,
                "/spec/filter",
                codes::INVALID_FILTER,
                format!("filter: {problem}"),
            );
        }
        if let (Some(_), Some(d)) = (&a.spec.filter, directory)
            && !matches!(d.spec, DirectorySpec::Ldap(_))
        {
            c.push(
                kind,
                a,
                "/spec/filter",
                codes::FILTER_NEEDS_LDAP,
                format!(
                    "`filter` needs an ldap Directory; `{}` is a file directory",
                    d.name
                ),
            );
        }
        if a.spec.groups.is_empty() && a.spec.users.is_empty() && a.spec.filter.is_none() {
            c.push(
                kind,
                a,
                "/spec",
                codes::EMPTY_ASSIGNMENT,
                "an assignment needs at least one of `groups`, `users` or `filter`".into(),
            );
        }
    }
}

fn check_stocks(c: &mut Checker<'_>) {
    for s in c.set.stocks.values() {
        let kind = Kind::CardStock;
        let matches = matches!(
            (&s.spec.selector, s.spec.card_type),
            (StockSelector::Virtual(_), CardType::Virtual)
                | (StockSelector::Piv(_), CardType::Piv)
                | (StockSelector::Pkcs11(_), CardType::Pkcs11)
        );
        if !matches {
            c.push(
                kind,
                s,
                &format!("/spec/{}", s.spec.selector.key()),
                codes::STOCK_MISMATCH,
                format!(
                    "selector `{}` does not fit cardType {}",
                    s.spec.selector.key(),
                    s.spec.card_type.as_str()
                ),
            );
        }
        if let StockSelector::Piv(p) = &s.spec.selector {
            for (i, g) in p.guids.iter().enumerate() {
                if g.len() != 32 || !g.bytes().all(|b| b.is_ascii_hexdigit()) {
                    c.push(
                        kind,
                        s,
                        &format!("/spec/piv/guids/{i}"),
                        codes::INVALID_VALUE,
                        format!("GUID {g:?} must be 32 hex digits"),
                    );
                }
            }
        }
    }
}

/// Every secret reference in the set, with the object that holds it.
fn secrets(set: &PolicySet) -> Vec<(Kind, &str, &std::path::Path, usize, &SecretRef)> {
    let mut out = Vec::new();
    for ca in set.authorities.values() {
        let r = match &ca.spec {
            CertificateAuthoritySpec::Cfssl(s) => Some(&s.auth_key),
            CertificateAuthoritySpec::EntrustGateway(g) => match &g.client_certificate {
                ClientCertificate::Pkcs12(p) => Some(&p.password),
                ClientCertificate::Pem(_) => None,
            },
            CertificateAuthoritySpec::Local(_) => None,
        };
        if let Some(r) = r {
            out.push((
                Kind::CertificateAuthority,
                ca.name.as_str(),
                ca.file.as_path(),
                ca.line,
                r,
            ));
        }
    }
    for d in set.directories.values() {
        if let DirectorySpec::Ldap(l) = &d.spec {
            out.push((
                Kind::Directory,
                d.name.as_str(),
                d.file.as_path(),
                d.line,
                &l.bind_password,
            ));
        }
    }
    for s in set.stocks.values() {
        if let StockSelector::Pkcs11(p) = &s.spec.selector {
            out.push((
                Kind::CardStock,
                s.name.as_str(),
                s.file.as_path(),
                s.line,
                &p.so_pin,
            ));
        }
    }
    out
}

/// The `--online` checks: every secret reference resolves and every file the policy names
/// exists. Returns errors for those that do not. (Contacting servers is left to the connectors.)
pub fn check_online(set: &PolicySet) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (kind, name, file, line, secret) in secrets(set) {
        let base = file.parent().unwrap_or(std::path::Path::new("."));
        if let Err(e) = secret.resolve(base) {
            out.push(
                Diagnostic::error(
                    codes::UNRESOLVED_SECRET,
                    file,
                    line,
                    format!("secret {secret} does not resolve: {e}"),
                )
                .for_object(Some(kind.as_str()), Some(name)),
            );
        }
    }
    for ca in set.authorities.values() {
        let files = match &ca.spec {
            CertificateAuthoritySpec::EntrustGateway(g) => {
                let mut f = vec![g.trust_bundle.clone()];
                match &g.client_certificate {
                    ClientCertificate::Pem(p) => {
                        f.extend([p.cert_file.clone(), p.key_file.clone()])
                    }
                    ClientCertificate::Pkcs12(p) => f.push(p.pkcs12_file.clone()),
                }
                f
            }
            _ => Vec::new(),
        };
        for f in files {
            let path = ca.resolve_path(&f);
            if !path.is_file() {
                out.push(
                    Diagnostic::error(
                        codes::MISSING_FILE,
                        &ca.file,
                        ca.line,
                        format!("file {} does not exist", path.display()),
                    )
                    .for_object(Some(Kind::CertificateAuthority.as_str()), Some(&ca.name)),
                );
            }
        }
    }
    for d in set.directories.values() {
        if let DirectorySpec::Ldap(l) = &d.spec
            && let Some(ca_file) = l.tls.as_ref().and_then(|t| t.ca_file.as_ref())
        {
            let path = d.resolve_path(ca_file);
            if !path.is_file() {
                out.push(
                    Diagnostic::error(
                        codes::MISSING_FILE,
                        &d.file,
                        d.line,
                        format!("file {} does not exist", path.display()),
                    )
                    .for_object(Some(Kind::Directory.as_str()), Some(&d.name)),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldap_filters_are_checked() {
        for ok in [
            "(employeeType=contractor)",
            "employeeType=contractor",
            " (&(department=IT)(!(title=intern))) ",
            "(cn=M\\C3\\BCller\\2C*)",
            "(memberOf:1.2.840.113556.1.4.1941:=CN=g,DC=x)",
            "(|(mail=*@example.org)(uid=a\\2ab))",
        ] {
            assert_eq!(ldap_filter_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "  ",
            "(employeeType=contractor",
            "(employeeType=contractor))",
            "(&(a=b)(c=d)",
            "employeeType",
            "(a=b)(c=d)",
            "(cn=a(b)",
        ] {
            assert!(ldap_filter_problem(bad).is_some(), "{bad:?}");
        }
        let deep = format!("{}(a=b){}", "(&".repeat(40), ")".repeat(40));
        let p = ldap_filter_problem(&deep).expect("too deep");
        assert!(p.contains("41 deep"), "{p}");
        // Far past any parser's stack: refused by the depth limit, not a crash.
        let huge = "(".repeat(1_000_000);
        assert!(ldap_filter_problem(&huge).is_some());
    }

    #[test]
    fn slot_algorithm_table() {
        assert!(slot_allows(Slot::PivAuthentication, KeyAlgorithm::EccP256));
        assert!(!slot_allows(Slot::PivAuthentication, KeyAlgorithm::EccP384));
        assert!(!slot_allows(
            Slot::CardAuthentication,
            KeyAlgorithm::EccP384
        ));
        assert!(slot_allows(Slot::KeyManagement, KeyAlgorithm::EccP384));
        assert!(slot_allows(Slot::DigitalSignature, KeyAlgorithm::Rsa3072));
    }

    #[test]
    fn san_checks() {
        let t = |s: &str| TextTemplate::parse(s).unwrap();
        assert_eq!(san_problem(&SanTemplate::Email(t("${user.mail}"))), None);
        assert!(san_problem(&SanTemplate::Email(t("${user.uid}"))).is_some());
        assert_eq!(
            san_problem(&SanTemplate::Email(t("${user.uid}@example.com"))),
            None
        );
        assert!(san_problem(&SanTemplate::Dns(t("${user.cn}"))).is_some());
        assert_eq!(
            san_problem(&SanTemplate::Uri(t("urn:uid:${user.uid}"))),
            None
        );
    }
}
