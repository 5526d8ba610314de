//! Who an operator is: a TLS client certificate (a Keyfleet-issued certificate under an
//! operator template, or an external identity for automation), or the Unix peer of the control
//! socket.
//!
//! The decisions here are pure: the caller passes what the TLS layer verified (the leaf and
//! whether it chains to an external identity's CA), a lookup into the inventory as it is now,
//! and the clock. Nothing is cached: a certificate revoked a second ago is refused now.

use der::Decode as _;
use time::OffsetDateTime;
use x509_cert::Certificate;

use crate::inventory::{CertRecord, CertStatus};
use crate::names::DistinguishedName;
use crate::policy::model::Operators;

/// How an operator proved who they are.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "via", rename_all = "kebab-case")]
pub enum Via {
    /// A certificate Keyfleet issued under an operator template (their card).
    Certificate {
        /// Its serial.
        serial: String,
        /// Its template.
        template: String,
        /// The card it is on.
        card: String,
    },
    /// An external identity (`Settings.spec.operators.external`).
    External,
    /// A Unix user on the control socket, mapped by `Settings.spec.operators.local`.
    Local {
        /// The peer's uid.
        uid: u32,
    },
    /// The owner of the state directory (or root): every permission.
    SystemOwner {
        /// The peer's uid.
        uid: u32,
    },
}

/// An authenticated operator.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Operator {
    /// The name roles list and the audit log records (a directory uid for certificates).
    pub name: String,
    /// How they proved it.
    #[serde(flatten)]
    pub via: Via,
}

impl Operator {
    /// Whether this is the system owner.
    pub fn is_system_owner(&self) -> bool {
        matches!(self.via, Via::SystemOwner { .. })
    }
}

/// Why an identity was refused (all of them are 401 over the API).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// No client certificate was presented.
    #[error("no client certificate: log in with an operator card or an external identity")]
    NoCertificate,
    /// The certificate does not parse.
    #[error("the client certificate does not parse: {0}")]
    Malformed(String),
    /// Keyfleet issued it, but it is not active.
    #[error("certificate {serial} is {status}: it no longer identifies anyone")]
    NotActive {
        /// The serial.
        serial: String,
        /// Its status in the inventory.
        status: String,
    },
    /// Keyfleet issued it, but it has expired.
    #[error("certificate {serial} expired at {not_after}")]
    Expired {
        /// The serial.
        serial: String,
        /// When.
        not_after: String,
    },
    /// Keyfleet issued it under a template that does not identify operators.
    #[error(
        "certificate {serial} is of template `{template}`, which is not in Settings.spec.operators.templates"
    )]
    NotAnOperatorTemplate {
        /// The serial.
        serial: String,
        /// Its template.
        template: String,
    },
    /// Neither Keyfleet-issued nor an external identity.
    #[error("the client certificate ({subject}) is not an operator identity")]
    Unknown {
        /// Its subject.
        subject: String,
    },
    /// The inventory could not be read.
    #[error("the inventory cannot be read: {0}")]
    Inventory(String),
    /// A Unix peer with no mapping.
    #[error(
        "Unix user {user} (uid {uid}) is not an operator: map it in Settings.spec.operators.local"
    )]
    UnmappedUser {
        /// The uid.
        uid: u32,
        /// Its name, or the number.
        user: String,
    },
}

/// What the TLS layer established about a client certificate.
pub struct PresentedCertificate<'a> {
    /// The leaf, DER.
    pub der: &'a [u8],
    /// Whether it chains to the `caFile` of the external operator of this name.
    pub chains_to_external: &'a dyn Fn(&str) -> bool,
}

/// The operator a verified client certificate identifies. `lookup` reads a certificate
/// record by serial from the inventory as it is now.
pub fn from_certificate(
    presented: &PresentedCertificate<'_>,
    operators: &Operators,
    lookup: &dyn Fn(&str) -> Result<Option<CertRecord>, String>,
    now: OffsetDateTime,
) -> Result<Operator, IdentityError> {
    let Own {
        serial,
        subject_text,
        record,
    } = own_record(presented.der, lookup)?;
    if let Some(record) = record {
        live(&record, &serial, now)?;
        if !operators.templates.contains(&record.template) {
            return Err(IdentityError::NotAnOperatorTemplate {
                serial,
                template: record.template,
            });
        }
        return Ok(Operator {
            name: record.user,
            via: Via::Certificate {
                serial,
                template: record.template,
                card: record.card,
            },
        });
    }
    let subject = DistinguishedName::parse(&subject_text).ok();
    for external in &operators.external {
        let Ok(wanted) = DistinguishedName::parse(&external.subject) else {
            continue;
        };
        if subject.as_ref() == Some(&wanted) && (presented.chains_to_external)(&external.name) {
            return Ok(Operator {
                name: external.name.clone(),
                via: Via::External,
            });
        }
    }
    Err(IdentityError::Unknown {
        subject: subject_text,
    })
}

/// A holder, identified by a certificate Keyfleet issued onto their card (the self-service
/// routes and the portal's certificate login; not an operator).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Holder {
    /// The directory uid the certificate was issued to.
    pub user: String,
    /// The card (or token) it is on: the only card the holder acts on through it.
    pub card: String,
    /// Its serial.
    pub serial: String,
    /// Its template.
    pub template: String,
}

/// The holder a verified client certificate identifies: Keyfleet's own record of this very
/// certificate (the same bytes), active, unexpired and on a card. `lookup` reads a certificate
/// record by serial from the inventory as it is now; nothing is cached, so a certificate
/// revoked a moment ago identifies nobody.
pub fn holder_from_certificate(
    der: &[u8],
    lookup: &dyn Fn(&str) -> Result<Option<CertRecord>, String>,
    now: OffsetDateTime,
) -> Result<Holder, IdentityError> {
    let Own {
        serial,
        subject_text,
        record,
    } = own_record(der, lookup)?;
    let Some(record) = record else {
        return Err(IdentityError::Unknown {
            subject: subject_text,
        });
    };
    live(&record, &serial, now)?;
    if record.card.is_empty() {
        return Err(IdentityError::Unknown {
            subject: subject_text,
        });
    }
    Ok(Holder {
        user: record.user,
        card: record.card,
        serial: record.serial,
        template: record.template,
    })
}

/// A presented certificate, and Keyfleet's own record of it when there is one.
struct Own {
    /// Its serial, hex.
    serial: String,
    /// Its subject, as text.
    subject_text: String,
    /// Keyfleet's record of this very certificate (the same bytes, not only the serial).
    record: Option<CertRecord>,
}

fn own_record(
    der: &[u8],
    lookup: &dyn Fn(&str) -> Result<Option<CertRecord>, String>,
) -> Result<Own, IdentityError> {
    let cert = Certificate::from_der(der).map_err(|e| IdentityError::Malformed(e.to_string()))?;
    let tbs = cert.tbs_certificate();
    let serial = crate::ca::serial_hex(tbs.serial_number().as_bytes());
    // Records are keyed by the serial as the CA printed it: with or without a leading zero
    // byte (a positive DER integer whose top bit is set).
    let mut record = lookup(&serial).map_err(IdentityError::Inventory)?;
    if record.is_none() && serial.len() > 2 && serial.starts_with("00") {
        record = lookup(&serial[2..]).map_err(IdentityError::Inventory)?;
    }
    Ok(Own {
        subject_text: tbs.subject().to_string(),
        record: record.filter(|r| same_certificate(r, der)),
        serial,
    })
}

/// A Keyfleet-issued certificate identifies someone only while active and unexpired.
fn live(record: &CertRecord, serial: &str, now: OffsetDateTime) -> Result<(), IdentityError> {
    if record.status != CertStatus::Active {
        return Err(IdentityError::NotActive {
            serial: serial.to_string(),
            status: format!("{:?}", record.status).to_lowercase(),
        });
    }
    if record.not_after <= now {
        return Err(IdentityError::Expired {
            serial: serial.to_string(),
            not_after: record.not_after.to_string(),
        });
    }
    Ok(())
}

fn same_certificate(record: &CertRecord, der: &[u8]) -> bool {
    record.der().is_some_and(|d| d == der)
}

/// The operator a Unix peer of the control socket is: the state directory's owner and root are
/// the system owner, one operator under the owner's name (so that they are never two
/// approvers); anyone else only through `Settings.spec.operators.local`.
pub fn from_peer(
    uid: u32,
    user_name: Option<&str>,
    state_dir_owner: u32,
    owner_name: Option<&str>,
    operators: &Operators,
) -> Result<Operator, IdentityError> {
    if is_system_owner(uid, state_dir_owner) {
        return Ok(Operator {
            name: owner_name.map_or_else(|| format!("uid:{state_dir_owner}"), str::to_string),
            via: Via::SystemOwner { uid },
        });
    }
    match user_name.and_then(|u| operators.local.get(u)) {
        Some(name) => Ok(Operator {
            name: name.clone(),
            via: Via::Local { uid },
        }),
        None => Err(IdentityError::UnmappedUser {
            uid,
            user: user_name.map_or_else(|| uid.to_string(), str::to_string),
        }),
    }
}

/// Whether Unix user `uid` is the system owner of a state directory owned by `owner`: the
/// owner, or root.
pub fn is_system_owner(uid: u32, owner: u32) -> bool {
    uid == owner || uid == 0
}

/// The uid owning the state directory `dir` (`u32::MAX`, nobody, when it cannot be read).
pub fn state_dir_owner(dir: &std::path::Path) -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(dir).map_or(u32::MAX, |m| m.uid())
}

/// The name of Unix user `uid`, from /etc/passwd (None: not listed).
pub fn unix_user_name(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        (f.next()?.parse::<u32>().ok()? == uid).then(|| name.to_string())
    })
}
