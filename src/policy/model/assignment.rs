//! Assignment: who is entitled to a template.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Who is entitled to a template: groups, explicit users and/or an LDAP filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssignmentSpec {
    /// The `Directory` the users come from.
    pub directory: String,
    /// The `CardTemplate` they get.
    pub template: String,
    /// Entitled groups.
    #[serde(default)]
    pub groups: Vec<GroupRef>,
    /// Entitled users (uids).
    #[serde(default)]
    pub users: Vec<String>,
    /// An LDAP filter selecting entitled users (ldap directories only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// A group in an assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupRef {
    /// The group's name in the directory.
    pub name: String,
    /// Include members of nested groups (default false).
    #[serde(default)]
    pub nested: bool,
}
