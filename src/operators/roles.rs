//! Roles, enforced: what an operator may do, and to which credentials.
//!
//! A role's members are directory users (`alice`), operator names (external identities,
//! local mappings) and groups (`group:pki-admins`, nested groups included, from the directory
//! snapshot of `Settings.spec.operators.directory`). Permissions may be limited to templates.
//! Separation of duties: nobody acts on a credential they hold themselves.
//! Everything here is pure.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::identity::Operator;
use crate::observe::snapshot::DirectorySnapshot;
use crate::policy::model::{Permission, RoleSpec};
use crate::policy::{GROUP_PREFIX, Object, PolicySet};

/// The members of the groups roles name, nested groups resolved, from one directory snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleGroups(BTreeMap<String, BTreeSet<String>>);

impl RoleGroups {
    /// Resolves every `group:` member of every role in `snapshot` (none without one: a
    /// directory that could not be read grants nothing through its groups).
    pub fn resolve(policy: &PolicySet, snapshot: Option<&DirectorySnapshot>) -> RoleGroups {
        let mut out = BTreeMap::new();
        let Some(snapshot) = snapshot else {
            return RoleGroups(out);
        };
        for role in policy.roles.values() {
            for m in &role.spec.members {
                if let Some(group) = m.strip_prefix(GROUP_PREFIX)
                    && !out.contains_key(group)
                {
                    out.insert(group.to_string(), snapshot.members(group, true));
                }
            }
        }
        RoleGroups(out)
    }

    /// Groups given as (group, members), for tests and fixtures.
    pub fn from_members(groups: BTreeMap<String, BTreeSet<String>>) -> RoleGroups {
        RoleGroups(groups)
    }

    fn contains(&self, group: &str, name: &str) -> bool {
        self.0.get(group).is_some_and(|m| m.contains(name))
    }
}

/// Where a permission applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Scope {
    /// Every template.
    All,
    /// Only credentials of these templates.
    Templates(BTreeSet<String>),
}

impl Scope {
    /// Whether a credential of `template` is inside the scope.
    pub fn allows(&self, template: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Templates(t) => t.contains(template),
        }
    }

    fn widen(&mut self, other: &Scope) {
        match (&mut *self, other) {
            (Scope::All, _) => {}
            (_, Scope::All) => *self = Scope::All,
            (Scope::Templates(a), Scope::Templates(b)) => a.extend(b.iter().cloned()),
        }
    }
}

/// What one operator may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    /// Who.
    pub operator: Operator,
    /// The roles they hold, by name.
    pub roles: Vec<String>,
    /// Their permissions with where each applies.
    pub permissions: BTreeMap<Permission, Scope>,
}

/// What an operation touches: the credential's holder and templates.
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject<'a> {
    /// The user who holds the card or certificate (None: nobody, e.g. a blank card).
    pub holder: Option<&'a str>,
    /// The templates of the credentials touched (empty: a credential of no template, which
    /// only unscoped permissions reach).
    pub templates: &'a [String],
    /// Further holders, when the operation touches several users' credentials.
    pub others: &'a [String],
}

/// Why an operation is not allowed (403 over the API).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The operator holds no role with this permission.
    #[error("{operator} lacks the permission `{permission}`")]
    Missing {
        /// Who.
        operator: String,
        /// What.
        permission: Permission,
    },
    /// The permission does not reach this credential's template.
    #[error("{operator} has `{permission}` but not for template `{template}`")]
    OutOfScope {
        /// Who.
        operator: String,
        /// What.
        permission: Permission,
        /// The template outside the scope.
        template: String,
    },
    /// The operator would act on their own credential.
    #[error(
        "separation of duties: {operator} cannot use `{permission}` on a credential they hold themselves"
    )]
    OwnCredential {
        /// Who.
        operator: String,
        /// What.
        permission: Permission,
    },
}

impl Denied {
    /// The permission concerned.
    pub fn permission(&self) -> Permission {
        match self {
            Denied::Missing { permission, .. }
            | Denied::OutOfScope { permission, .. }
            | Denied::OwnCredential { permission, .. } => *permission,
        }
    }
}

/// The grants of `operator` under `roles`: the system owner holds every permission everywhere.
pub fn grants(
    operator: &Operator,
    roles: &BTreeMap<String, Object<RoleSpec>>,
    groups: &RoleGroups,
) -> Grants {
    let mut out = Grants {
        operator: operator.clone(),
        roles: Vec::new(),
        permissions: BTreeMap::new(),
    };
    if operator.is_system_owner() {
        out.roles.push("system-owner".into());
        for p in Permission::ALL {
            out.permissions.insert(p, Scope::All);
        }
        return out;
    }
    for (name, role) in roles {
        let member = role
            .spec
            .members
            .iter()
            .any(|m| match m.strip_prefix(GROUP_PREFIX) {
                Some(group) => groups.contains(group, &operator.name),
                None => *m == operator.name,
            });
        if !member {
            continue;
        }
        out.roles.push(name.clone());
        let scope = match &role.spec.templates {
            None => Scope::All,
            Some(t) => Scope::Templates(t.iter().cloned().collect()),
        };
        for p in &role.spec.permissions {
            out.permissions
                .entry(*p)
                .and_modify(|s| s.widen(&scope))
                .or_insert_with(|| scope.clone());
        }
    }
    out
}

impl Grants {
    /// The operator's name.
    pub fn name(&self) -> &str {
        &self.operator.name
    }

    /// Whether the operator holds `permission` anywhere.
    pub fn has(&self, permission: Permission) -> bool {
        self.permissions.contains_key(&permission)
    }

    /// Where `permission` applies, if held.
    pub fn scope(&self, permission: Permission) -> Option<&Scope> {
        self.permissions.get(&permission)
    }

    /// Whether the operator may use `permission` on `subject` (None: no credential in
    /// particular, e.g. reading the audit log).
    pub fn check(
        &self,
        permission: Permission,
        subject: Option<&Subject<'_>>,
    ) -> Result<(), Denied> {
        let Some(scope) = self.permissions.get(&permission) else {
            return Err(Denied::Missing {
                operator: self.operator.name.clone(),
                permission,
            });
        };
        let Some(subject) = subject else {
            return Ok(());
        };
        if let Some(t) = subject.templates.iter().find(|t| !scope.allows(t)) {
            return Err(Denied::OutOfScope {
                operator: self.operator.name.clone(),
                permission,
                template: t.clone(),
            });
        }
        // A credential of no template (a blank card) is outside every template scope.
        if subject.templates.is_empty() && matches!(scope, Scope::Templates(_)) {
            return Err(Denied::OutOfScope {
                operator: self.operator.name.clone(),
                permission,
                template: "(none)".into(),
            });
        }
        if subject.holder == Some(self.operator.name.as_str())
            || subject.others.contains(&self.operator.name)
        {
            return Err(Denied::OwnCredential {
                operator: self.operator.name.clone(),
                permission,
            });
        }
        Ok(())
    }
}
