//! Users and groups out of the event stream, into the snapshot builder: the known fields, the
//! members and nested groups, and what is refused.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use saphyr_parser::Event;

use crate::observe::snapshot::{
    DirectoryGroup, DirectorySnapshot, Finished, NewUser, Users, UsersBuilder,
};

use super::FileDirectoryError;
use super::events::{At, Events, Stop};

/// The fields of a user entry, in declaration order (the order of "missing field" checks).
pub(super) const USER_FIELDS: [&str; 7] =
    ["uid", "cn", "mail", "upn", "dn", "disabled", "attributes"];
pub(super) const GROUP_FIELDS: [&str; 3] = ["name", "members", "groups"];

/// `unknown field `x`, expected one of `a`, `b``.
pub(super) fn unknown_field(at: At<'_>, key: &str, fields: &[&str]) -> String {
    let expected: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
    at.says(format_args!(
        "unknown field `{key}`, expected one of {}",
        expected.join(", ")
    ))
}

/// A group as read. When the users came first (the usual order) its members are resolved to
/// rows as they are read, so a group of 100,000 members never exists as 100,000 strings;
/// otherwise they wait, in file order, until the users are known.
pub(super) struct PendingGroup {
    pub(super) name: String,
    pub(super) members: Members,
    pub(super) groups: Vec<String>,
}

/// The members of a [`PendingGroup`].
pub(super) enum Members {
    /// Resolved, with the first member who is not among the users.
    Rows(Vec<u32>, Option<String>),
    /// Not yet resolved: the users come later in the file.
    Uids(Vec<String>),
}

/// The snapshot under construction.
#[derive(Default)]
pub(super) struct Builder {
    pub(super) users: UsersBuilder,
    /// The users, once the `users:` list was read completely and a `groups:` list follows.
    pub(super) finished: Option<Finished>,
    /// Position of the first user with an empty uid (repeated uids show when sorting).
    pub(super) empty_uid: Option<usize>,
    pub(super) groups: Vec<PendingGroup>,
}

impl Builder {
    /// Reads the whole stream: one document (or none), a mapping with `users` and `groups`.
    pub(super) fn read_stream(&mut self, ev: &mut Events<'_>) -> Result<(), Stop> {
        let mut documents = 0usize;
        loop {
            let (event, line) = ev.next()?;
            match event {
                Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
                Event::StreamEnd => return Ok(()),
                Event::DocumentStart(_) if documents > 0 => {
                    return Err(ev.shape(
                        line,
                        "a directory file is one YAML document, this is a second one".into(),
                    ));
                }
                Event::DocumentStart(_) => {
                    documents += 1;
                    let (root, line) = ev.next()?;
                    if ev.open_mapping(&root, line, At::ROOT)? {
                        self.read_root(ev)?;
                    }
                }
                other => return Err(ev.unexpected(line, At::ROOT, "a document", &other)),
            }
        }
    }

    pub(super) fn read_root(&mut self, ev: &mut Events<'_>) -> Result<(), Stop> {
        let (mut users, mut groups) = (false, false);
        while let Some((key, line)) = ev.key(At::ROOT)? {
            let seen = match key.as_ref() {
                "users" => &mut users,
                "groups" => &mut groups,
                other => {
                    let message = unknown_field(At::ROOT, other, &["users", "groups"]);
                    return Err(ev.shape(line, message));
                }
            };
            if std::mem::replace(seen, true) {
                let message = At::ROOT.says(format_args!("duplicate field `{key}`"));
                return Err(ev.shape(line, message));
            }
            match key.as_ref() {
                "users" => self.read_users(ev)?,
                _ => {
                    if users {
                        self.finished = Some(std::mem::take(&mut self.users).finish());
                    }
                    self.read_groups(ev)?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn read_users(&mut self, ev: &mut Events<'_>) -> Result<(), Stop> {
        if !ev.open_sequence(At::ROOT.field("users"))? {
            return Ok(());
        }
        for index in 0.. {
            let (event, line) = ev.next()?;
            if let Event::SequenceEnd = event {
                break;
            }
            let user = read_user(ev, &event, line, At::ROOT.field("users").item(index))?;
            if user.uid.is_empty() && self.empty_uid.is_none() {
                self.empty_uid = Some(self.users.len());
            }
            let fields = NewUser {
                uid: &user.uid,
                cn: &user.cn,
                dn: user.dn.as_deref(),
                mail: user.mail.as_deref(),
                upn: user.upn.as_deref(),
                stable_id: None,
                disabled: user.disabled,
            };
            // The file is capped far below what a snapshot indexes.
            let pushed = self.users.push(fields, user.attributes);
            pushed.map_err(|e| ev.shape(line, e.to_string()))?;
        }
        Ok(())
    }

    pub(super) fn read_groups(&mut self, ev: &mut Events<'_>) -> Result<(), Stop> {
        if !ev.open_sequence(At::ROOT.field("groups"))? {
            return Ok(());
        }
        for index in 0.. {
            let (event, line) = ev.next()?;
            if let Event::SequenceEnd = event {
                break;
            }
            let at = At::ROOT.field("groups").item(index);
            let users = self.finished.as_ref().map(|f| &f.users);
            let group = read_group(ev, &event, line, at, users)?;
            self.groups.push(group);
        }
        Ok(())
    }

    /// Checks consistency (users first, then groups in file order, then nesting) and builds
    /// the snapshot.
    pub(super) fn finish(self, path: &Path) -> Result<DirectorySnapshot, FileDirectoryError> {
        let invalid = |message: String| FileDirectoryError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let finished = match self.finished {
            Some(f) => f,
            None => self.users.finish(),
        };
        let users = finished.users;
        // The first inconsistency in file order: an empty uid or a uid listed before.
        let repeated = finished.repeated.first().copied();
        match (self.empty_uid, repeated) {
            (Some(e), r) if r.is_none_or(|(r, _)| e < r as usize) => {
                return Err(invalid("a user has an empty uid".into()));
            }
            (_, Some((_, kept))) => {
                return Err(invalid(format!(
                    "user {:?} is listed twice",
                    users.uid_at(kept)
                )));
            }
            _ => {}
        }
        let mut groups = BTreeMap::new();
        for g in self.groups {
            let unknown_member = |m: &str| {
                invalid(format!(
                    "group {:?} lists member {m:?}, who is not among the users",
                    g.name
                ))
            };
            let rows = match g.members {
                Members::Rows(_, Some(unknown)) => return Err(unknown_member(&unknown)),
                Members::Rows(rows, None) => rows,
                Members::Uids(uids) => {
                    let mut rows = Vec::with_capacity(uids.len());
                    for m in &uids {
                        rows.push(users.index_of(m).ok_or_else(|| unknown_member(m))?);
                    }
                    rows
                }
            };
            let group = DirectoryGroup::new(g.name.clone(), rows, g.groups.into_iter().collect());
            if let Some(previous) = groups.insert(g.name, group) {
                return Err(invalid(format!(
                    "group {:?} is listed twice",
                    previous.name
                )));
            }
        }
        for g in groups.values() {
            if let Some(unknown) = g.groups.iter().find(|n| !groups.contains_key(*n)) {
                return Err(invalid(format!(
                    "group {:?} nests unknown group {unknown:?}",
                    g.name
                )));
            }
        }
        Ok(DirectorySnapshot {
            users,
            groups,
            complete: true,
            ..DirectorySnapshot::default()
        })
    }
}

/// One `users:` entry, whose first event (`event` on `line`) is already read.
pub(super) fn read_user<'t>(
    ev: &mut Events<'t>,
    event: &Event<'_>,
    line: usize,
    at: At<'_>,
) -> Result<ReadUser<'t>, Stop> {
    let mut seen = [false; USER_FIELDS.len()];
    let mut user = ReadUser::default();
    if ev.open_mapping(event, line, at)? {
        while let Some((key, key_line)) = ev.key(at)? {
            let Some(field) = USER_FIELDS.iter().position(|f| *f == key.as_ref()) else {
                return Err(ev.shape(key_line, unknown_field(at, &key, &USER_FIELDS)));
            };
            if std::mem::replace(&mut seen[field], true) {
                let message = at.says(format_args!("duplicate field `{key}`"));
                return Err(ev.shape(key_line, message));
            }
            let at = at.field(&key);
            match field {
                0 => user.uid = ev.string(at)?,
                1 => user.cn = ev.string(at)?,
                2 => user.mail = ev.optional_string(at)?,
                3 => user.upn = ev.optional_string(at)?,
                4 => user.dn = ev.optional_string(at)?,
                5 => user.disabled = ev.boolean(at)?,
                _ => user.attributes = read_attributes(ev, at)?,
            }
        }
    }
    for (required, name) in seen.iter().zip(USER_FIELDS).take(2) {
        if !required {
            return Err(ev.shape(line, at.says(format_args!("missing field `{name}`"))));
        }
    }
    Ok(user)
}

/// A user entry as read, borrowing what it can from the text.
#[derive(Default)]
pub(super) struct ReadUser<'t> {
    pub(super) uid: Cow<'t, str>,
    pub(super) cn: Cow<'t, str>,
    pub(super) dn: Option<Cow<'t, str>>,
    pub(super) mail: Option<Cow<'t, str>>,
    pub(super) upn: Option<Cow<'t, str>>,
    pub(super) disabled: bool,
    /// In file order; a repeated name keeps its last value (as serde_yaml's map reading did).
    pub(super) attributes: Vec<(Cow<'t, str>, String)>,
}

pub(super) fn read_attributes<'t>(
    ev: &mut Events<'t>,
    at: At<'_>,
) -> Result<Vec<(Cow<'t, str>, String)>, Stop> {
    let mut out = Vec::new();
    let (event, line) = ev.next()?;
    if !ev.open_mapping(&event, line, at)? {
        return Ok(out);
    }
    while let Some((key, _)) = ev.key(at)? {
        let value = ev.attribute(at.field(&key))?;
        out.push((key, value));
    }
    Ok(out)
}

/// One `groups:` entry, whose first event is already read.
/// `users` are the users when they are already known (members are then resolved at once).
pub(super) fn read_group(
    ev: &mut Events<'_>,
    event: &Event<'_>,
    line: usize,
    at: At<'_>,
    users: Option<&Users>,
) -> Result<PendingGroup, Stop> {
    let mut seen = [false; GROUP_FIELDS.len()];
    let mut group = PendingGroup {
        name: String::new(),
        members: Members::Uids(Vec::new()),
        groups: Vec::new(),
    };
    if ev.open_mapping(event, line, at)? {
        while let Some((key, key_line)) = ev.key(at)? {
            let Some(field) = GROUP_FIELDS.iter().position(|f| *f == key.as_ref()) else {
                return Err(ev.shape(key_line, unknown_field(at, &key, &GROUP_FIELDS)));
            };
            if std::mem::replace(&mut seen[field], true) {
                let message = at.says(format_args!("duplicate field `{key}`"));
                return Err(ev.shape(key_line, message));
            }
            let at = at.field(&key);
            match field {
                0 => group.name = ev.string(at)?.into_owned(),
                1 => {
                    group.members = match users {
                        Some(users) => ev.rows(at, users)?,
                        None => Members::Uids(ev.strings(at)?),
                    }
                }
                _ => group.groups = ev.strings(at)?,
            }
        }
    }
    if !seen[0] {
        return Err(ev.shape(line, at.says("missing field `name`")));
    }
    Ok(group)
}
