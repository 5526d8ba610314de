//! The policy object model: one Rust type per kind, with serde (YAML, camelCase, unknown fields
//! refused) and schemars derives, so the JSON schemas in `schemas/` are generated from here.
//!
//! This module only describes shapes and defaults. It does not read files (see `load`), check
//! references between objects (see `validate`) or resolve secrets (see `secret`).
//!
//! One file per kind (`ca`, `directory`, `template`, `assignment`, `stock`, `settings`: card
//! bindings, roles, settings); every type is re-exported here, as `policy::model::X`.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The pattern object names must match (a DNS label: lower-case letters, digits and '-').
pub const NAME_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";

/// A YAML mapping with exactly one of several keys, deserialised into an enum.
///
/// serde_yaml 0.9 reads externally tagged enums only from YAML tags (`!local`), so each such
/// enum goes through a raw struct of optional fields (unknown keys refused) and a checked
/// conversion. The JSON schema lists the keys and requires exactly one of them.
macro_rules! one_of_keys {
    (
        $(#[$raw_doc:meta])*
        $raw:ident => $enum:ident, $schema_name:literal, $description:literal,
        $($field:ident : $key:literal => $variant:ident($inner:ty)),+ $(,)?
    ) => {
        $(#[$raw_doc])*
        #[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        struct $raw {
            $(
                #[serde(default, rename = $key, skip_serializing_if = "Option::is_none")]
                $field: Option<$inner>,
            )+
        }

        impl TryFrom<$raw> for $enum {
            type Error = $crate::policy::model::ExactlyOneError;

            fn try_from(raw: $raw) -> Result<Self, Self::Error> {
                let mut found = Vec::new();
                $(
                    if let Some(v) = raw.$field {
                        found.push($enum::$variant(v));
                    }
                )+
                match (found.pop(), found.is_empty()) {
                    (Some(v), true) => Ok(v),
                    _ => Err($crate::policy::model::ExactlyOneError(&[$($key),+])),
                }
            }
        }

        impl From<$enum> for $raw {
            fn from(e: $enum) -> Self {
                let mut raw = $raw::default();
                match e {
                    $($enum::$variant(v) => raw.$field = Some(v),)+
                }
                raw
            }
        }

        impl JsonSchema for $enum {
            fn schema_name() -> Cow<'static, str> {
                $schema_name.into()
            }

            fn json_schema(generator: &mut SchemaGenerator) -> Schema {
                let mut schema = $raw::json_schema(generator);
                schema.insert("description".into(), $description.into());
                schema.insert(
                    "oneOf".into(),
                    serde_json::json!([$({"required": [$key]}),+]),
                );
                schema
            }
        }
    };
}

/// A mapping that must have exactly one of a set of keys has none or several.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("needs exactly one of {}", self.0.join(", "))]
pub struct ExactlyOneError(pub &'static [&'static str]);

/// The kinds of policy object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `CertificateAuthority`
    CertificateAuthority,
    /// `Directory`
    Directory,
    /// `CardTemplate`
    CardTemplate,
    /// `Assignment`
    Assignment,
    /// `CardStock`
    CardStock,
    /// `CardBinding`
    CardBinding,
    /// `Role`
    Role,
    /// `Settings`
    Settings,
    /// `PolicyTest` (only under `tests/`, never part of the policy set: see `test_model`)
    PolicyTest,
}

impl Kind {
    /// Every kind, in schema order.
    pub const ALL: [Kind; 9] = [
        Kind::CertificateAuthority,
        Kind::Directory,
        Kind::CardTemplate,
        Kind::Assignment,
        Kind::CardStock,
        Kind::CardBinding,
        Kind::Role,
        Kind::Settings,
        Kind::PolicyTest,
    ];

    /// The name as written in `kind:`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::CertificateAuthority => "CertificateAuthority",
            Kind::Directory => "Directory",
            Kind::CardTemplate => "CardTemplate",
            Kind::Assignment => "Assignment",
            Kind::CardStock => "CardStock",
            Kind::CardBinding => "CardBinding",
            Kind::Role => "Role",
            Kind::Settings => "Settings",
            Kind::PolicyTest => "PolicyTest",
        }
    }

    /// The kind named `s`, if any (exact spelling).
    pub fn from_name(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The envelope every policy document has; `S` is the kind's spec.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest<S> {
    /// Always `keyfleet.dev/v1`.
    pub api_version: String,
    /// The object's kind.
    pub kind: String,
    /// Name and description.
    pub metadata: Metadata,
    /// The kind-specific content.
    pub spec: S,
}

/// Object metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// Unique per kind; lower-case letters, digits and '-'.
    #[schemars(regex(pattern = NAME_PATTERN))]
    pub name: String,
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

mod assignment;
mod ca;
mod directory;
mod settings;
mod stock;
mod template;
#[cfg(test)]
mod tests;

pub use assignment::*;
pub use ca::*;
pub use directory::*;
pub use settings::*;
pub use stock::*;
pub use template::*;
