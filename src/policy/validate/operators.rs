//! Checks of the operator side: roles (members, template scope), `Settings.spec.operators`
//! (templates whose certificates identify operators, external identities, local users),
//! `Settings.spec.approvals` and the API's certificate files.

use super::Checker;
use crate::names::DistinguishedName;
use crate::policy::diag::codes;
use crate::policy::model::{CertificateAuthoritySpec, Kind, Permission};

/// Permissions of the vocabulary whose operations (binding, holds and revocations by hand)
/// are not built yet.
const RESERVED: [Permission; 3] = [Permission::Bind, Permission::Hold, Permission::Revoke];

/// The prefix of a group member of a role (`group:pki-admins`).
pub const GROUP_PREFIX: &str = "group:";

pub(super) fn check_roles(c: &mut Checker<'_>) {
    let set = c.set;
    let uses_groups = set
        .roles
        .values()
        .any(|r| r.spec.members.iter().any(|m| m.starts_with(GROUP_PREFIX)));
    for r in set.roles.values() {
        if r.spec.members.is_empty() {
            c.warn(
                Kind::Role,
                r,
                "/spec/members",
                codes::SUSPICIOUS,
                "role has no members".into(),
            );
        }
        for (i, p) in r.spec.permissions.iter().enumerate() {
            if RESERVED.contains(p) {
                c.warn(
                    Kind::Role,
                    r,
                    &format!("/spec/permissions/{i}"),
                    codes::SUSPICIOUS,
                    format!(
                        "permission `{p}` is in the vocabulary, but no operation of this version \
                         uses it yet: it grants nothing today"
                    ),
                );
            }
        }
        for (i, m) in r.spec.members.iter().enumerate() {
            let name = m.strip_prefix(GROUP_PREFIX).unwrap_or(m);
            if name.trim().is_empty() || name != name.trim() {
                c.push(
                    Kind::Role,
                    r,
                    &format!("/spec/members/{i}"),
                    codes::INVALID_VALUE,
                    format!("member {m:?} must be a uid or `group:NAME` without spaces around it"),
                );
            }
        }
        if let Some(templates) = &r.spec.templates {
            for (i, t) in templates.iter().enumerate() {
                let exists = set.templates.contains_key(t);
                if c.dangling(Kind::CardTemplate, t, exists) {
                    c.push(
                        Kind::Role,
                        r,
                        &format!("/spec/templates/{i}"),
                        codes::DANGLING_REFERENCE,
                        format!("no CardTemplate named `{t}`"),
                    );
                }
            }
        }
    }
    let ops = &set.settings.spec.operators;
    match &ops.directory {
        Some(d) => {
            let exists = set.directories.contains_key(d);
            if c.dangling(Kind::Directory, d, exists) {
                c.push(
                    Kind::Settings,
                    &set.settings,
                    "/spec/operators/directory",
                    codes::DANGLING_REFERENCE,
                    format!("no Directory named `{d}`"),
                );
            }
        }
        None if uses_groups && set.directories.len() > 1 => {
            let r = set
                .roles
                .values()
                .find(|r| r.spec.members.iter().any(|m| m.starts_with(GROUP_PREFIX)));
            if let Some(r) = r {
                c.push(
                    Kind::Role,
                    r,
                    "/spec/members",
                    codes::MISSING_FIELD,
                    "`group:` members need Settings.spec.operators.directory: the policy has \
                     several directories"
                        .into(),
                );
            }
        }
        None if uses_groups && set.directories.is_empty() => {
            let r = set
                .roles
                .values()
                .find(|r| r.spec.members.iter().any(|m| m.starts_with(GROUP_PREFIX)));
            if let Some(r) = r {
                c.push(
                    Kind::Role,
                    r,
                    "/spec/members",
                    codes::DANGLING_REFERENCE,
                    "`group:` members need a Directory, and the policy has none".into(),
                );
            }
        }
        None => {}
    }
}

pub(super) fn check_operators(c: &mut Checker<'_>) {
    let set = c.set;
    let settings = &set.settings;
    let ops = &settings.spec.operators;
    for (i, t) in ops.templates.iter().enumerate() {
        let pointer = format!("/spec/operators/templates/{i}");
        let Some(template) = set.templates.get(t) else {
            if c.dangling(Kind::CardTemplate, t, false) {
                c.push(
                    Kind::Settings,
                    settings,
                    &pointer,
                    codes::DANGLING_REFERENCE,
                    format!("no CardTemplate named `{t}`"),
                );
            }
            continue;
        };
        // The API trusts the local CAs of the operator templates: a certificate from any
        // other kind of CA could never log in.
        for cert in &template.spec.certificates {
            let local = set
                .authorities
                .get(&cert.authority)
                .is_none_or(|ca| matches!(ca.spec, CertificateAuthoritySpec::Local(_)));
            if !local {
                c.push(
                    Kind::Settings,
                    settings,
                    &pointer,
                    codes::INVALID_VALUE,
                    format!(
                        "template `{t}` issues `{}` from CertificateAuthority `{}`, which is not \
                         a local CA: operator certificates must come from a local CA (the API \
                         trusts those); use an external identity for other CAs",
                        cert.name, cert.authority
                    ),
                );
            }
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, e) in ops.external.iter().enumerate() {
        let base = format!("/spec/operators/external/{i}");
        if !names.insert(e.name.as_str()) {
            c.push(
                Kind::Settings,
                settings,
                &format!("{base}/name"),
                codes::DUPLICATE_NAME,
                format!("external operator `{}` is listed twice", e.name),
            );
        }
        let path = settings.resolve_path(&e.ca_file);
        if !path.is_file() {
            c.push(
                Kind::Settings,
                settings,
                &format!("{base}/caFile"),
                codes::MISSING_FILE,
                format!("caFile {} does not exist", path.display()),
            );
        }
        if let Err(err) = DistinguishedName::parse(&e.subject) {
            c.push(
                Kind::Settings,
                settings,
                &format!("{base}/subject"),
                codes::INVALID_SUBJECT,
                format!("subject {:?}: {err}", e.subject),
            );
        }
    }
    if let Some(socket) = &ops.socket {
        if !socket.is_absolute() || socket.parent().is_none_or(|p| !p.is_dir()) {
            c.push(
                Kind::Settings,
                settings,
                "/spec/operators/socket",
                codes::INVALID_VALUE,
                format!(
                    "socket {} must be an absolute path in an existing folder",
                    socket.display()
                ),
            );
        }
    } else if !ops.local.is_empty() {
        c.warn(
            Kind::Settings,
            settings,
            "/spec/operators/local",
            codes::SUSPICIOUS,
            "local operators need Settings.spec.operators.socket: the control socket in the \
             state directory is reachable by its owner alone"
                .into(),
        );
    }
    for (user, operator) in &ops.local {
        if user.is_empty() || operator.trim().is_empty() {
            c.push(
                Kind::Settings,
                settings,
                "/spec/operators/local",
                codes::INVALID_VALUE,
                format!("local operator {user:?}: {operator:?} needs a Unix user and a name"),
            );
        }
    }
    for (kind, count) in &settings.spec.approvals {
        if *count == 0 {
            c.push(
                Kind::Settings,
                settings,
                &format!("/spec/approvals/{kind}"),
                codes::INVALID_VALUE,
                match kind.required_approvals(&Default::default()) {
                    Some(n) => format!(
                        "approvals of {kind} must be at least 1 (leave {kind} out to need {n})"
                    ),
                    None => format!(
                        "approvals of {kind} must be at least 1 (leave {kind} out to need none)"
                    ),
                },
            );
        }
    }
    if settings.spec.approval_timeout.as_secs() == 0 {
        c.push(
            Kind::Settings,
            settings,
            "/spec/approvalTimeout",
            codes::INVALID_VALUE,
            "approvalTimeout must be longer than 0s".into(),
        );
    }
    if let Some(tls) = &settings.spec.api.tls {
        for (field, file) in [("certFile", &tls.cert_file), ("keyFile", &tls.key_file)] {
            let path = settings.resolve_path(file);
            if !path.is_file() {
                c.push(
                    Kind::Settings,
                    settings,
                    &format!("/spec/api/tls/{field}"),
                    codes::MISSING_FILE,
                    format!("{field} {} does not exist", path.display()),
                );
            }
        }
    }
}
