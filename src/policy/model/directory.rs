//! Directory: a `file` or an LDAP / Active Directory source of users and groups.

use std::borrow::Cow;
use std::path::PathBuf;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::policy::duration::Duration;
use crate::policy::secret::SecretRef;

/// A directory Keyfleet reads users and groups from: exactly one of `file` or `ldap`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawDirectorySpec", into = "RawDirectorySpec")]
// A policy holds a handful of directories, loaded once: boxing the ldap variant would only
// make every match on it noisier.
#[allow(clippy::large_enum_variant)]
pub enum DirectorySpec {
    /// Users and groups from a YAML data file (demos and tests).
    File(FileDirectorySpec),
    /// An LDAP server or Active Directory.
    Ldap(LdapDirectorySpec),
}

one_of_keys! {
    /// The YAML shape of a directory spec, before the exactly-one check.
    RawDirectorySpec => DirectorySpec,
    "DirectorySpec",
    "A directory: exactly one of file, ldap.",
    file: "file" => File(FileDirectorySpec),
    ldap: "ldap" => Ldap(LdapDirectorySpec),
}

/// A YAML data file with `users:` and `groups:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileDirectorySpec {
    /// The data file, relative to the policy file. The loader does not read it as policy.
    pub path: PathBuf,
}

/// An LDAP directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LdapDirectorySpec {
    /// `ldap://` or `ldaps://` URL.
    #[schemars(regex(pattern = "^ldaps?://"))]
    pub url: String,
    /// Server flavour (decides nested-group and disabled-account handling).
    pub flavour: LdapFlavour,
    /// The DN Keyfleet binds as (read-only account).
    pub bind_dn: String,
    /// The bind password.
    pub bind_password: SecretRef,
    /// Where users and groups are searched.
    pub base_dn: String,
    /// LDAP filter selecting user entries (flavour default if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_filter: Option<String>,
    /// LDAP filter selecting group entries (flavour default if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_filter: Option<String>,
    /// TLS settings for `ldaps://` or StartTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<LdapTls>,
    /// Allow a plain `ldap://` URL without a `tls` section: the simple bind then sends the
    /// password in cleartext. Refused unless set; `validate` warns when it is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_cleartext_bind: bool,
    /// Simple paged results size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub page_size: Option<u32>,
    /// How often the controller polls for changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<Duration>,
    /// Time allowed for the TCP connect plus the TLS handshake (default 10s, at most 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    /// Time allowed for each LDAP operation; for a search, the longest silence between two
    /// replies (default 60s, at most 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_timeout: Option<Duration>,
}

/// The LDAP server flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LdapFlavour {
    /// OpenLDAP (memberOf / groupOfNames).
    Openldap,
    /// Microsoft Active Directory (in-chain matching rule, userAccountControl).
    ActiveDirectory,
}

/// LDAP TLS settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LdapTls {
    /// PEM file of trusted CAs (relative to the policy file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Skip server certificate verification (tests only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}
