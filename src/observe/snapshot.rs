//! What a directory says: users, their attributes and group memberships.
//!
//! A [`DirectorySnapshot`] is a plain value: the planner and the desired-state computation read
//! it without I/O. Every directory reader (the `file` reader in `observe::directory`, the
//! LDAP reader in `observe::ldap`) builds one; this module reads nothing itself, and it knows
//! nothing about templates.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use super::users::{Finished, NewUser, TooLarge, UserRef, Users, UsersBuilder};

/// One user as the directory reports them (the owned form; a snapshot stores its users
/// compactly in [`Users`] and lends them out as [`UserRef`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryUser {
    /// The stable login name Keyfleet keys everything on.
    pub uid: String,
    /// The entry's DN, when the directory has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dn: Option<String>,
    /// Common name.
    pub cn: String,
    /// Mail address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mail: Option<String>,
    /// User principal name (smart-card logon).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upn: Option<String>,
    /// Whether the account is disabled.
    pub disabled: bool,
    /// An identifier that survives renames, when the directory has one (Active Directory:
    /// objectGUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_id: Option<String>,
    /// Further attributes, by name (first value only).
    pub attributes: BTreeMap<String, String>,
}

/// A group with its direct members (rows of the snapshot's [`Users`]) and direct subgroups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectoryGroup {
    /// Group name.
    pub name: String,
    /// Rows of direct members, sorted, each once.
    members: Box<[u32]>,
    /// Names of groups nested directly inside this one (their members are members too when
    /// an assignment asks for nested resolution).
    pub groups: BTreeSet<String>,
}

impl DirectoryGroup {
    /// A group of the users in `members` (rows of the snapshot's users, any order).
    pub fn new(name: String, mut members: Vec<u32>, groups: BTreeSet<String>) -> DirectoryGroup {
        members.sort_unstable();
        members.dedup();
        DirectoryGroup {
            name,
            members: members.into_boxed_slice(),
            groups,
        }
    }

    /// Rows of the direct members, sorted.
    pub fn member_rows(&self) -> &[u32] {
        &self.members
    }

    /// Whether the user in `row` is a direct member.
    pub fn has_member(&self, row: u32) -> bool {
        self.members.binary_search(&row).is_ok()
    }
}

/// Everything one observation of a directory returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectorySnapshot {
    /// Users, sorted by uid.
    pub users: Users,
    /// Groups by name.
    pub groups: BTreeMap<String, DirectoryGroup>,
    /// False when any part of the observation failed or was truncated: then nothing may be
    /// revoked on the strength of this snapshot.
    pub complete: bool,
    /// Transitive members (rows) of some groups as the directory itself computed them (Active
    /// Directory's in-chain rule); used instead of Keyfleet's own resolution when present.
    pub transitive: BTreeMap<String, Box<[u32]>>,
    /// The uids each assignment `filter` selected, keyed by the filter's text exactly as the
    /// policy writes it (LDAP directories only). A filter the observation did not search has
    /// no key.
    pub filtered: BTreeMap<String, BTreeSet<String>>,
    /// Why the observation is incomplete, when it is.
    pub problems: Vec<String>,
}

/// Serialized with users as a map by uid and group members as uids: the shape the content
/// hash of a directory and `--format json` rely on.
impl Serialize for DirectorySnapshot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Uids<'a>(&'a Users, &'a [u32]);
        impl Serialize for Uids<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.1.iter().map(|r| self.0.uid_at(*r)))
            }
        }
        struct Group<'a>(&'a Users, &'a DirectoryGroup);
        impl Serialize for Group<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut st = s.serialize_struct("DirectoryGroup", 3)?;
                st.serialize_field("name", &self.1.name)?;
                st.serialize_field("members", &Uids(self.0, &self.1.members))?;
                st.serialize_field("groups", &self.1.groups)?;
                st.end()
            }
        }
        struct Groups<'a>(&'a DirectorySnapshot);
        impl Serialize for Groups<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let users = &self.0.users;
                s.collect_map(self.0.groups.iter().map(|(n, g)| (n, Group(users, g))))
            }
        }
        struct Transitive<'a>(&'a DirectorySnapshot);
        impl Serialize for Transitive<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let users = &self.0.users;
                s.collect_map(self.0.transitive.iter().map(|(n, r)| (n, Uids(users, r))))
            }
        }
        let mut st = s.serialize_struct("DirectorySnapshot", 6)?;
        st.serialize_field("users", &self.users)?;
        st.serialize_field("groups", &Groups(self))?;
        st.serialize_field("complete", &self.complete)?;
        if self.transitive.is_empty() {
            st.skip_field("transitive")?;
        } else {
            st.serialize_field("transitive", &Transitive(self))?;
        }
        if self.filtered.is_empty() {
            st.skip_field("filtered")?;
        } else {
            st.serialize_field("filtered", &self.filtered)?;
        }
        if self.problems.is_empty() {
            st.skip_field("problems")?;
        } else {
            st.serialize_field("problems", &self.problems)?;
        }
        st.end()
    }
}

impl DirectorySnapshot {
    /// A stable content hash: `sha256:` and the hex SHA-256 of the snapshot's JSON form
    /// (users by uid, groups by name, members as uids; every map sorted). Two observations
    /// that saw the same users, attributes, groups and completeness have the same hash.
    pub fn content_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("sha256:{}", hex::encode(Sha256::digest(&json)))
    }

    /// A complete snapshot of owned users and of groups given by member uids and subgroup
    /// names; members who are not among the users are left out. For tests and benchmarks:
    /// readers build their snapshots with [`UsersBuilder`].
    pub fn from_parts(
        users: impl IntoIterator<Item = DirectoryUser>,
        groups: impl IntoIterator<Item = (String, Vec<String>, Vec<String>)>,
    ) -> DirectorySnapshot {
        let users: Users = users.into_iter().collect();
        let groups = groups
            .into_iter()
            .map(|(name, members, subgroups)| {
                let rows = members.iter().filter_map(|m| users.index_of(m)).collect();
                let group =
                    DirectoryGroup::new(name.clone(), rows, subgroups.into_iter().collect());
                (name, group)
            })
            .collect();
        DirectorySnapshot {
            users,
            groups,
            complete: true,
            ..DirectorySnapshot::default()
        }
    }

    /// Calls `f` with the row of every user in `group` (nested groups too when `nested` is
    /// set; then the directory's own transitive answer when it gave one). A user reached
    /// through several groups is reported once per group. Cycle-safe; unknown groups have no
    /// members.
    fn for_each_row(&self, group: &str, nested: bool, mut f: impl FnMut(u32)) {
        if nested && let Some(rows) = self.transitive.get(group) {
            rows.iter().for_each(|r| f(*r));
            return;
        }
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut stack = vec![group];
        while let Some(name) = stack.pop() {
            if !seen.insert(name) {
                continue;
            }
            let Some(g) = self.groups.get(name) else {
                continue;
            };
            g.members.iter().for_each(|r| f(*r));
            if nested {
                stack.extend(g.groups.iter().map(String::as_str));
            }
        }
    }

    /// The uids in `group`, including those of nested groups when `nested` is set.
    /// Cycles between groups are harmless. An unknown group has no members.
    pub fn members(&self, group: &str, nested: bool) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.for_each_member(group, nested, |uid| {
            out.insert(uid.to_string());
        });
        out
    }

    /// Calls `f` with every uid in `group` (nested groups too when `nested` is set); a user
    /// reached through several groups is reported once per group. Cycle-safe; unknown
    /// groups have no members.
    pub fn for_each_member<'a>(&'a self, group: &str, nested: bool, mut f: impl FnMut(&'a str)) {
        self.for_each_row(group, nested, |r| {
            if let Some(u) = self.users.at(r) {
                f(u.uid());
            }
        });
    }

    /// Whether `uid` is a member of `group` (through nested groups when `nested` is set),
    /// without computing the whole member list. Cycle-safe.
    pub fn is_member(&self, uid: &str, group: &str, nested: bool) -> bool {
        let Some(row) = self.users.index_of(uid) else {
            return false;
        };
        if nested && let Some(rows) = self.transitive.get(group) {
            return rows.binary_search(&row).is_ok();
        }
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut stack = vec![group];
        while let Some(name) = stack.pop() {
            if !seen.insert(name) {
                continue;
            }
            let Some(g) = self.groups.get(name) else {
                continue;
            };
            if g.has_member(row) {
                return true;
            }
            if nested {
                stack.extend(g.groups.iter().map(String::as_str));
            }
        }
        false
    }

    /// The direct members of `group`, as uids (none for an unknown group).
    pub fn direct_members(&self, group: &str) -> impl Iterator<Item = &str> + '_ {
        let rows = self
            .groups
            .get(group)
            .map(|g| g.member_rows())
            .unwrap_or_default();
        rows.iter().map(|r| self.users.uid_at(*r))
    }

    /// The names of the groups that list `uid` directly.
    pub fn groups_of(&self, uid: &str) -> Vec<&str> {
        let Some(row) = self.users.index_of(uid) else {
            return Vec::new();
        };
        self.groups
            .values()
            .filter(|g| g.has_member(row))
            .map(|g| g.name.as_str())
            .collect()
    }

    /// Heap bytes the snapshot holds, roughly (users exactly; groups by their members), for
    /// the benchmarks' accounting of "directory data".
    pub fn heap_bytes(&self) -> usize {
        let groups: usize = self
            .groups
            .values()
            .map(|g| {
                g.name.len()
                    + g.members.len() * 4
                    + g.groups.iter().map(|n| n.len() + 48).sum::<usize>()
                    + 96
            })
            .sum();
        let transitive: usize = self.transitive.values().map(|r| r.len() * 4 + 64).sum();
        self.users.heap_bytes() + groups + transitive
    }
}

impl DirectorySnapshot {
    /// The users (present in this snapshot) the assignment filter `filter` selected; `None`
    /// when the observation did not search that filter.
    pub fn filter_matches(&self, filter: &str) -> Option<impl Iterator<Item = &str>> {
        let uids = self.filtered.get(filter)?;
        Some(
            uids.iter()
                .filter(|u| self.users.contains_key(u))
                .map(String::as_str),
        )
    }
}
