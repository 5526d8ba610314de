//! What a directory says: users, their attributes and group memberships.
//!
//! A [`DirectorySnapshot`] is a plain value: the planner and the desired-state computation read
//! it without I/O. This module also reads the `file` directory kind (a YAML file with `users:`
//! and `groups:`). It never writes to a directory, and it knows nothing about templates.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One user as the directory reports them.
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

/// A group with its direct members and direct subgroups.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryGroup {
    /// Group name.
    pub name: String,
    /// uids of direct members.
    pub members: BTreeSet<String>,
    /// Names of groups nested directly inside this one (their members are members too when
    /// an assignment asks for nested resolution).
    pub groups: BTreeSet<String>,
}

/// Everything one observation of a directory returned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectorySnapshot {
    /// Users by uid.
    pub users: BTreeMap<String, DirectoryUser>,
    /// Groups by name.
    pub groups: BTreeMap<String, DirectoryGroup>,
    /// False when any part of the observation failed or was truncated: then nothing may be
    /// revoked on the strength of this snapshot.
    pub complete: bool,
    /// Transitive user members of some groups as the directory itself computed them (Active
    /// Directory's in-chain rule); used instead of Keyfleet's own resolution when present.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub transitive: BTreeMap<String, BTreeSet<String>>,
    /// Why the observation is incomplete, when it is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl DirectorySnapshot {
    /// The uids in `group`, including those of nested groups when `nested` is set.
    /// Cycles between groups are harmless. An unknown group has no members.
    pub fn members(&self, group: &str, nested: bool) -> BTreeSet<String> {
        if nested && let Some(members) = self.transitive.get(group) {
            return members
                .iter()
                .filter(|u| self.users.contains_key(*u))
                .cloned()
                .collect();
        }
        let mut out = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut stack = vec![group.to_string()];
        while let Some(name) = stack.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            let Some(g) = self.groups.get(&name) else {
                continue;
            };
            out.extend(
                g.members
                    .iter()
                    .filter(|u| self.users.contains_key(*u))
                    .cloned(),
            );
            if nested {
                stack.extend(g.groups.iter().cloned());
            }
        }
        out
    }
}

impl DirectorySnapshot {
    /// Calls `f` with every uid in `group` (nested groups too when `nested` is set); a user
    /// reached through several groups is reported once per group. Cycle-safe; unknown
    /// groups have no members.
    pub fn for_each_member(&self, group: &str, nested: bool, mut f: impl FnMut(&str)) {
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut stack = vec![group];
        while let Some(name) = stack.pop() {
            if !seen.insert(name) {
                continue;
            }
            let Some(g) = self.groups.get(name) else {
                continue;
            };
            g.members.iter().for_each(|m| f(m));
            if nested {
                stack.extend(g.groups.iter().map(String::as_str));
            }
        }
    }

    /// Whether `uid` is a member of `group` (through nested groups when `nested` is set),
    /// without computing the whole member list. Cycle-safe.
    pub fn is_member(&self, uid: &str, group: &str, nested: bool) -> bool {
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut stack = vec![group];
        while let Some(name) = stack.pop() {
            if !seen.insert(name) {
                continue;
            }
            let Some(g) = self.groups.get(name) else {
                continue;
            };
            if g.members.contains(uid) {
                return self.users.contains_key(uid);
            }
            if nested {
                stack.extend(g.groups.iter().map(String::as_str));
            }
        }
        false
    }
}

/// Reading a `file` directory failed.
#[derive(Debug, thiserror::Error)]
pub enum FileDirectoryError {
    /// The file could not be read.
    #[error("{path}: cannot read directory file: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML of the expected shape.
    #[error("{path}:{line}: invalid directory file: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line, 0 when unknown.
        line: usize,
        /// serde_yaml's message.
        message: String,
    },
    /// The content is well-formed but inconsistent.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Largest directory file read, to keep a hostile file from exhausting memory.
const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    users: Vec<FileUser>,
    #[serde(default)]
    groups: Vec<FileGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUser {
    uid: String,
    cn: String,
    #[serde(default)]
    mail: Option<String>,
    #[serde(default)]
    upn: Option<String>,
    #[serde(default)]
    dn: Option<String>,
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    attributes: BTreeMap<String, serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGroup {
    name: String,
    #[serde(default)]
    members: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
}

/// Reads a `file` directory. The snapshot is complete when the file parsed.
pub fn read_file_directory(path: &Path) -> Result<DirectorySnapshot, FileDirectoryError> {
    let meta = std::fs::metadata(path).map_err(|source| FileDirectoryError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(FileDirectoryError::Invalid {
            path: path.to_path_buf(),
            message: format!("file is larger than {MAX_FILE_BYTES} bytes"),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| FileDirectoryError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_file_directory(path, &text)
}

/// Nesting deeper than this is refused (a directory file is two levels deep).
const MAX_DEPTH: usize = 16;

/// Refuses anchors, aliases and deep nesting before serde_yaml sees the text: a directory file
/// has no use for them, and alias expansion is how a small file becomes a huge document.
fn guard(path: &Path, text: &str) -> Result<(), FileDirectoryError> {
    use saphyr_parser::{Event, Parser};
    let mut depth = 0usize;
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| FileDirectoryError::Parse {
            path: path.to_path_buf(),
            line: e.marker().line(),
            message: e.to_string(),
        })?;
        let refuse = |what: &str| FileDirectoryError::Parse {
            path: path.to_path_buf(),
            line: span.start.line(),
            message: format!("{what} are not allowed in a directory file"),
        };
        match event {
            Event::Alias(_) => return Err(refuse("YAML aliases")),
            Event::Scalar(_, _, anchor, _) if anchor != 0 => return Err(refuse("YAML anchors")),
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                if anchor != 0 {
                    return Err(refuse("YAML anchors"));
                }
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(refuse("structures nested this deep"));
                }
            }
            Event::MappingEnd | Event::SequenceEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Parses the text of a `file` directory; `path` only names it in errors.
pub fn parse_file_directory(
    path: &Path,
    text: &str,
) -> Result<DirectorySnapshot, FileDirectoryError> {
    guard(path, text)?;
    let doc: FileDoc = serde_yaml::from_str(text).map_err(|e| FileDirectoryError::Parse {
        path: path.to_path_buf(),
        line: e.location().map(|l| l.line()).unwrap_or(0),
        message: e.to_string(),
    })?;
    let invalid = |message: String| FileDirectoryError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let mut snapshot = DirectorySnapshot {
        complete: true,
        ..DirectorySnapshot::default()
    };
    for u in doc.users {
        if u.uid.is_empty() {
            return Err(invalid("a user has an empty uid".into()));
        }
        let attributes = u
            .attributes
            .into_iter()
            .map(|(k, v)| {
                let value = match v {
                    serde_yaml::Value::String(s) => s,
                    serde_yaml::Value::Number(n) => n.to_string(),
                    serde_yaml::Value::Bool(b) => b.to_string(),
                    other => {
                        return Err(invalid(format!(
                            "user {:?}: attribute {k:?} must be a string, number or boolean, not {other:?}",
                            u.uid
                        )));
                    }
                };
                Ok((k, value))
            })
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        let user = DirectoryUser {
            uid: u.uid.clone(),
            dn: u.dn,
            cn: u.cn,
            mail: u.mail,
            upn: u.upn,
            disabled: u.disabled,
            stable_id: None,
            attributes,
        };
        if snapshot.users.insert(u.uid.clone(), user).is_some() {
            return Err(invalid(format!("user {:?} is listed twice", u.uid)));
        }
    }
    for g in doc.groups {
        if let Some(unknown) = g.members.iter().find(|m| !snapshot.users.contains_key(*m)) {
            return Err(invalid(format!(
                "group {:?} lists member {unknown:?}, who is not among the users",
                g.name
            )));
        }
        let group = DirectoryGroup {
            name: g.name.clone(),
            members: g.members.into_iter().collect(),
            groups: g.groups.into_iter().collect(),
        };
        if snapshot.groups.insert(g.name.clone(), group).is_some() {
            return Err(invalid(format!("group {:?} is listed twice", g.name)));
        }
    }
    for g in snapshot.groups.values() {
        if let Some(unknown) = g.groups.iter().find(|n| !snapshot.groups.contains_key(*n)) {
            return Err(invalid(format!(
                "group {:?} nests unknown group {unknown:?}",
                g.name
            )));
        }
    }
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
users:
  - {uid: alice, cn: Alice, mail: alice@example.org}
  - {uid: bob, cn: Bob, disabled: true, attributes: {employeeNumber: 42}}
  - {uid: "*)(uid=*", cn: "Hostile, Inc.\\"}
groups:
  - {name: a, members: [alice], groups: [b]}
  - {name: b, members: [bob], groups: [a]}
  - {name: c, members: ["*)(uid=*"]}
"#;

    #[test]
    fn nested_members_resolve_through_cycles() {
        let s = parse_file_directory(Path::new("t.yaml"), SAMPLE).unwrap();
        assert!(s.complete);
        let direct: Vec<_> = s.members("a", false).into_iter().collect();
        assert_eq!(direct, ["alice"]);
        let nested: Vec<_> = s.members("a", true).into_iter().collect();
        assert_eq!(nested, ["alice", "bob"]);
        assert_eq!(s.users["bob"].attributes["employeeNumber"], "42");
        assert!(s.users["bob"].disabled);
        assert!(s.members("nope", true).is_empty());
        assert_eq!(s.members("c", false).len(), 1);
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse_file_directory(
            Path::new("d.yaml"),
            "users:\n  - {uid: a, cn: A, colour: red}\n",
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("d.yaml:2:"), "{msg}");
        assert!(msg.contains("colour"), "{msg}");
        let e = parse_file_directory(
            Path::new("d.yaml"),
            "users: [{uid: a, cn: A}]\ngroups: [{name: g, members: [zed]}]\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("\"zed\""), "{e}");
        let e = parse_file_directory(Path::new("d.yaml"), "groups: [{name: g, groups: [h]}]")
            .unwrap_err();
        assert!(e.to_string().contains("unknown group \"h\""), "{e}");
        let bomb = "a: &a [x, x]\nb: &b [*a, *a]\nusers: [{uid: u, cn: *b}]\n";
        let e = parse_file_directory(Path::new("d.yaml"), bomb).unwrap_err();
        assert!(e.to_string().starts_with("d.yaml:1:"), "{e}");
        assert!(e.to_string().contains("anchors are not allowed"), "{e}");
        let deep = format!("users: {}{}", "[".repeat(40), "]".repeat(40));
        let e = parse_file_directory(Path::new("d.yaml"), &deep).unwrap_err();
        assert!(e.to_string().contains("nested"), "{e}");
    }
}
