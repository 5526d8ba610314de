//! The users of a directory snapshot, stored compactly.
//!
//! The controller holds the snapshot of every directory for its whole life, and a directory
//! has 100,000 users, so the shape of a user matters more than anything else it holds: every
//! string of every user lives once in one text buffer, a user is a fixed-size row of offsets
//! into it, attribute names are interned, and the rows are sorted by uid, so a uid is found by
//! binary search and elsewhere (group members) a user is named by its row number, four bytes.
//! [`DirectoryUser`] stays the owned form for one user (what `directory show` prints and what
//! a builder starts from); [`UserRef`] is the borrowed view of a stored one.
//!
//! This module knows nothing about groups, nor how a directory is read.

use std::collections::HashMap;

use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};

use super::snapshot::DirectoryUser;

/// A string in the text buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

/// The span of an absent optional string.
const ABSENT: Span = Span {
    start: u32::MAX,
    len: 0,
};

/// One user: offsets into the text buffer and a range of the attribute table.
#[derive(Debug, Clone, Copy)]
struct Row {
    uid: Span,
    cn: Span,
    dn: Span,
    mail: Span,
    upn: Span,
    stable_id: Span,
    /// First entry in the attribute table.
    attrs: u32,
    /// How many entries (sorted by name).
    attr_count: u32,
    disabled: bool,
}

/// One attribute of one user: an interned name and a value.
#[derive(Debug, Clone, Copy)]
struct Attr {
    name: u32,
    value: Span,
}

/// The users of one snapshot, sorted by uid. Built with [`UsersBuilder`].
#[derive(Debug, Clone, Default)]
pub struct Users {
    text: String,
    rows: Vec<Row>,
    attrs: Vec<Attr>,
    names: Vec<Box<str>>,
}

/// The text of all users together is beyond what a snapshot can index (4 GiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the directory's users amount to more than 4 GiB of text, more than Keyfleet holds")]
pub struct TooLarge;

impl Users {
    /// Number of users.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The row number of `uid`, when there is such a user.
    pub fn index_of(&self, uid: &str) -> Option<u32> {
        let i = self
            .rows
            .binary_search_by(|r| self.str(r.uid).cmp(uid))
            .ok()?;
        u32::try_from(i).ok()
    }

    /// The user `uid`.
    pub fn get(&self, uid: &str) -> Option<UserRef<'_>> {
        self.at(self.index_of(uid)?)
    }

    /// Whether there is a user `uid`.
    pub fn contains_key(&self, uid: &str) -> bool {
        self.index_of(uid).is_some()
    }

    /// The user in row `index`.
    pub fn at(&self, index: u32) -> Option<UserRef<'_>> {
        let row = self.rows.get(usize::try_from(index).ok()?)?;
        Some(UserRef { users: self, row })
    }

    /// The uid in row `index` (empty for a row that does not exist).
    pub fn uid_at(&self, index: u32) -> &str {
        self.at(index).map(|u| u.uid()).unwrap_or_default()
    }

    /// Every user, by uid.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = UserRef<'_>> + '_ {
        self.rows
            .iter()
            .map(move |row| UserRef { users: self, row })
    }

    /// Every uid, sorted.
    pub fn uids(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.rows.iter().map(move |r| self.str(r.uid))
    }

    /// Heap bytes held (text, rows, attribute table, names), for the benchmarks' accounting.
    pub fn heap_bytes(&self) -> usize {
        self.text.capacity()
            + self.rows.capacity() * size_of::<Row>()
            + self.attrs.capacity() * size_of::<Attr>()
            + self.names.iter().map(|n| n.len() + 16).sum::<usize>()
    }

    fn str(&self, span: Span) -> &str {
        let start = span.start as usize;
        self.text
            .get(start..start + span.len as usize)
            .unwrap_or_default()
    }

    fn opt(&self, span: Span) -> Option<&str> {
        (span != ABSENT).then(|| self.str(span))
    }
}

impl PartialEq for Users {
    fn eq(&self, other: &Users) -> bool {
        self.len() == other.len() && self.iter().zip(other.iter()).all(|(a, b)| a == b)
    }
}

impl Eq for Users {}

/// Serialized as a map from uid to the user, like the map it replaced.
impl Serialize for Users {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.len()))?;
        for user in self.iter() {
            map.serialize_entry(user.uid(), &user)?;
        }
        map.end()
    }
}

/// A stored user, borrowed from its [`Users`].
#[derive(Clone, Copy)]
pub struct UserRef<'a> {
    users: &'a Users,
    row: &'a Row,
}

impl<'a> UserRef<'a> {
    /// The stable login name Keyfleet keys everything on.
    pub fn uid(&self) -> &'a str {
        self.users.str(self.row.uid)
    }

    /// Common name.
    pub fn cn(&self) -> &'a str {
        self.users.str(self.row.cn)
    }

    /// The entry's DN, when the directory has one.
    pub fn dn(&self) -> Option<&'a str> {
        self.users.opt(self.row.dn)
    }

    /// Mail address.
    pub fn mail(&self) -> Option<&'a str> {
        self.users.opt(self.row.mail)
    }

    /// User principal name.
    pub fn upn(&self) -> Option<&'a str> {
        self.users.opt(self.row.upn)
    }

    /// An identifier that survives renames (Active Directory: objectGUID).
    pub fn stable_id(&self) -> Option<&'a str> {
        self.users.opt(self.row.stable_id)
    }

    /// Whether the account is disabled.
    pub fn disabled(&self) -> bool {
        self.row.disabled
    }

    /// The attribute `name`, when the user has it.
    pub fn attribute(&self, name: &str) -> Option<&'a str> {
        self.attributes().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Every further attribute, sorted by name.
    pub fn attributes(&self) -> impl ExactSizeIterator<Item = (&'a str, &'a str)> + 'a {
        let users = self.users;
        let start = self.row.attrs as usize;
        let end = start + self.row.attr_count as usize;
        users
            .attrs
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .map(|a| {
                let name = users.names.get(a.name as usize).map(|n| &**n);
                (name.unwrap_or_default(), users.str(a.value))
            })
    }

    /// The owned form.
    pub fn to_user(&self) -> DirectoryUser {
        DirectoryUser {
            uid: self.uid().to_string(),
            dn: self.dn().map(str::to_string),
            cn: self.cn().to_string(),
            mail: self.mail().map(str::to_string),
            upn: self.upn().map(str::to_string),
            disabled: self.disabled(),
            stable_id: self.stable_id().map(str::to_string),
            attributes: self
                .attributes()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

impl PartialEq for UserRef<'_> {
    fn eq(&self, other: &UserRef<'_>) -> bool {
        self.uid() == other.uid()
            && self.cn() == other.cn()
            && self.dn() == other.dn()
            && self.mail() == other.mail()
            && self.upn() == other.upn()
            && self.stable_id() == other.stable_id()
            && self.disabled() == other.disabled()
            && self.attributes().eq(other.attributes())
    }
}

impl std::fmt::Debug for UserRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.to_user(), f)
    }
}

/// The same fields and order as [`DirectoryUser`]'s serialization.
impl Serialize for UserRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct AttrMap<'a>(UserRef<'a>);
        impl Serialize for AttrMap<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(Some(self.0.row.attr_count as usize))?;
                for (k, v) in self.0.attributes() {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
        let mut st = s.serialize_struct("DirectoryUser", 8)?;
        st.serialize_field("uid", self.uid())?;
        match self.dn() {
            Some(dn) => st.serialize_field("dn", dn)?,
            None => st.skip_field("dn")?,
        }
        st.serialize_field("cn", self.cn())?;
        match self.mail() {
            Some(m) => st.serialize_field("mail", m)?,
            None => st.skip_field("mail")?,
        }
        match self.upn() {
            Some(u) => st.serialize_field("upn", u)?,
            None => st.skip_field("upn")?,
        }
        st.serialize_field("disabled", &self.disabled())?;
        match self.stable_id() {
            Some(id) => st.serialize_field("stable_id", id)?,
            None => st.skip_field("stable_id")?,
        }
        st.serialize_field("attributes", &AttrMap(*self))?;
        st.end()
    }
}

/// One user to add, borrowed from wherever the reader has it.
#[derive(Debug, Clone, Copy, Default)]
pub struct NewUser<'a> {
    /// Login name.
    pub uid: &'a str,
    /// Common name.
    pub cn: &'a str,
    /// DN.
    pub dn: Option<&'a str>,
    /// Mail.
    pub mail: Option<&'a str>,
    /// UPN.
    pub upn: Option<&'a str>,
    /// Stable id.
    pub stable_id: Option<&'a str>,
    /// Disabled account.
    pub disabled: bool,
}

impl<'a> NewUser<'a> {
    /// The fields of an owned user (its attributes are passed separately).
    pub fn of(u: &'a DirectoryUser) -> NewUser<'a> {
        NewUser {
            uid: &u.uid,
            cn: &u.cn,
            dn: u.dn.as_deref(),
            mail: u.mail.as_deref(),
            upn: u.upn.as_deref(),
            stable_id: u.stable_id.as_deref(),
            disabled: u.disabled,
        }
    }
}

/// Collects users in any order; [`UsersBuilder::finish`] sorts them.
#[derive(Debug, Default)]
pub struct UsersBuilder {
    users: Users,
    name_ids: HashMap<Box<str>, u32>,
}

/// What [`UsersBuilder::finish`] returns.
#[derive(Debug)]
pub struct Finished {
    /// The users, sorted by uid, each uid once.
    pub users: Users,
    /// For each user in the order added, its row in `users`; `u32::MAX` for one dropped as a
    /// repeated uid.
    pub rows: Vec<u32>,
    /// The users dropped because an earlier one had the same uid: their positions in the
    /// order added (ascending), each with the row of the user kept.
    pub repeated: Vec<(u32, u32)>,
}

impl UsersBuilder {
    /// An empty builder.
    pub fn new() -> UsersBuilder {
        UsersBuilder::default()
    }

    /// An empty builder with room for about `users` users and `text` bytes of their
    /// strings: a reader that can estimate both spares the arrays' growth by doubling (and
    /// the transient copies it makes). The estimate may be off either way.
    pub fn with_capacity(users: usize, text: usize) -> UsersBuilder {
        let mut b = UsersBuilder::default();
        b.users.rows.reserve(users);
        b.users.text.reserve(text);
        b
    }

    /// Number of users added so far.
    pub fn len(&self) -> usize {
        self.users.rows.len()
    }

    /// Whether none was added.
    pub fn is_empty(&self) -> bool {
        self.users.rows.is_empty()
    }

    /// Adds a user with its attributes (a name given twice keeps its last value); returns its
    /// position in the order added.
    pub fn push<K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        user: NewUser<'_>,
        attributes: impl IntoIterator<Item = (K, V)>,
    ) -> Result<u32, TooLarge> {
        let position = u32::try_from(self.users.rows.len()).map_err(|_| TooLarge)?;
        let uid = self.text(user.uid)?;
        let cn = self.text(user.cn)?;
        let dn = self.optional(user.dn)?;
        let mail = self.optional(user.mail)?;
        let upn = self.optional(user.upn)?;
        let stable_id = self.optional(user.stable_id)?;
        let first = self.users.attrs.len();
        for (k, v) in attributes {
            let name = self.name(k.as_ref())?;
            let value = self.text(v.as_ref())?;
            self.users.attrs.push(Attr { name, value });
        }
        let names = &self.users.names;
        let mine = &mut self.users.attrs[first..];
        // Stable: of a repeated name, the last value ends up last and is the one kept.
        mine.sort_by(|a, b| names[a.name as usize].cmp(&names[b.name as usize]));
        let mut kept = 0usize;
        for i in 0..mine.len() {
            if i + 1 < mine.len() && mine[i].name == mine[i + 1].name {
                continue;
            }
            mine[kept] = mine[i];
            kept += 1;
        }
        self.users.attrs.truncate(first + kept);
        self.users.rows.push(Row {
            uid,
            cn,
            dn,
            mail,
            upn,
            stable_id,
            attrs: u32::try_from(first).map_err(|_| TooLarge)?,
            attr_count: u32::try_from(kept).map_err(|_| TooLarge)?,
            disabled: user.disabled,
        });
        Ok(position)
    }

    /// Adds an owned user.
    pub fn push_user(&mut self, user: &DirectoryUser) -> Result<u32, TooLarge> {
        self.push(NewUser::of(user), &user.attributes)
    }

    /// Sorts by uid and drops later users whose uid an earlier one has. The rows are
    /// rearranged in place (a directory's rows are its largest array: no second copy).
    pub fn finish(self) -> Finished {
        let Users {
            mut text,
            mut rows,
            mut attrs,
            mut names,
        } = self.users;
        let n = rows.len();
        let uid = |row: &Row| -> &str {
            let start = row.uid.start as usize;
            text.get(start..start + row.uid.len as usize)
                .unwrap_or_default()
        };
        // Stable: of equal uids, the one added first comes first.
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_by(|a, b| uid(&rows[*a as usize]).cmp(uid(&rows[*b as usize])));
        // rows[k] = old rows[order[k]], following the permutation's cycles.
        let mut visited = vec![false; n];
        for start in 0..n {
            if visited[start] {
                continue;
            }
            let first = rows[start];
            let mut k = start;
            loop {
                visited[k] = true;
                let from = order[k] as usize;
                if from == start {
                    rows[k] = first;
                    break;
                }
                rows[k] = rows[from];
                k = from;
            }
        }
        drop(visited);
        let mut positions = vec![u32::MAX; n];
        let mut repeated = Vec::new();
        let mut kept = 0usize;
        for k in 0..n {
            let position = order[k];
            if kept > 0 && uid(&rows[k]) == uid(&rows[kept - 1]) {
                repeated.push((position, kept as u32 - 1));
                continue;
            }
            rows[kept] = rows[k];
            positions[position as usize] = kept as u32;
            kept += 1;
        }
        rows.truncate(kept);
        repeated.sort_unstable();
        rows.shrink_to_fit();
        text.shrink_to_fit();
        attrs.shrink_to_fit();
        names.shrink_to_fit();
        Finished {
            users: Users {
                text,
                rows,
                attrs,
                names,
            },
            rows: positions,
            repeated,
        }
    }

    fn text(&mut self, s: &str) -> Result<Span, TooLarge> {
        let start = u32::try_from(self.users.text.len()).map_err(|_| TooLarge)?;
        let len = u32::try_from(s.len()).map_err(|_| TooLarge)?;
        if start.checked_add(len).is_none_or(|end| end == u32::MAX) {
            return Err(TooLarge);
        }
        self.users.text.push_str(s);
        Ok(Span { start, len })
    }

    fn optional(&mut self, s: Option<&str>) -> Result<Span, TooLarge> {
        match s {
            Some(s) => self.text(s),
            None => Ok(ABSENT),
        }
    }

    fn name(&mut self, name: &str) -> Result<u32, TooLarge> {
        if let Some(id) = self.name_ids.get(name) {
            return Ok(*id);
        }
        let id = u32::try_from(self.users.names.len()).map_err(|_| TooLarge)?;
        self.users.names.push(name.into());
        self.name_ids.insert(name.into(), id);
        Ok(id)
    }
}

/// The users of owned [`DirectoryUser`]s (later duplicates dropped).
impl FromIterator<DirectoryUser> for Users {
    fn from_iter<I: IntoIterator<Item = DirectoryUser>>(iter: I) -> Users {
        let mut b = UsersBuilder::new();
        for u in iter {
            // Only a test or benchmark builds users this way; 4 GiB of them is not one.
            if b.push_user(&u).is_err() {
                break;
            }
        }
        b.finish().users
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn user(uid: &str, cn: &str) -> DirectoryUser {
        DirectoryUser {
            uid: uid.into(),
            dn: None,
            cn: cn.into(),
            mail: Some(format!("{uid}@example.org")),
            upn: None,
            disabled: false,
            stable_id: None,
            attributes: BTreeMap::new(),
        }
    }

    #[test]
    fn sorted_lookup_and_round_trip() {
        let mut b = UsersBuilder::new();
        let mut carol = user("carol", "Carol");
        carol.attributes.insert("room".into(), "3".into());
        carol.attributes.insert("floor".into(), "1".into());
        carol.dn = Some("uid=carol,dc=x".into());
        b.push_user(&user("bob", "Bob")).unwrap();
        b.push_user(&carol).unwrap();
        b.push_user(&user("alice", "Alice")).unwrap();
        let f = b.finish();
        assert_eq!(
            f.users.uids().collect::<Vec<_>>(),
            ["alice", "bob", "carol"]
        );
        assert_eq!(f.rows, [1, 2, 0]);
        assert!(f.repeated.is_empty());
        let c = f.users.get("carol").unwrap();
        assert_eq!(c.to_user(), carol);
        assert_eq!(c.attribute("room"), Some("3"));
        assert_eq!(c.attribute("desk"), None);
        assert_eq!(
            c.attributes().collect::<Vec<_>>(),
            [("floor", "1"), ("room", "3")]
        );
        assert!(f.users.get("dave").is_none());
        assert_eq!(f.users.index_of("bob"), Some(1));
        assert_eq!(f.users.uid_at(7), "");
        // Serialized like the owned form.
        assert_eq!(
            serde_json::to_value(c).unwrap(),
            serde_json::to_value(&carol).unwrap()
        );
    }

    #[test]
    fn repeated_uids_keep_the_first_and_are_reported() {
        let mut b = UsersBuilder::new();
        b.push_user(&user("x", "first")).unwrap();
        b.push_user(&user("a", "a")).unwrap();
        b.push_user(&user("x", "second")).unwrap();
        b.push_user(&user("x", "third")).unwrap();
        let f = b.finish();
        assert_eq!(f.users.len(), 2);
        assert_eq!(f.users.get("x").unwrap().cn(), "first");
        assert_eq!(f.repeated, [(2, 1), (3, 1)]);
        assert_eq!(f.rows, [1, 0, u32::MAX, u32::MAX]);
    }

    #[test]
    fn finish_matches_a_naive_sort_on_shuffled_input_with_repeats() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..50 {
            let n = (next() % 200) as usize + round;
            let uids: Vec<String> = (0..n).map(|_| format!("u{}", next() % 97)).collect();
            let mut b = UsersBuilder::new();
            for (i, u) in uids.iter().enumerate() {
                b.push_user(&user(u, &format!("cn{i}"))).unwrap();
            }
            let f = b.finish();
            // The naive answer: first occurrence of each uid wins, sorted by uid.
            let mut first: BTreeMap<&str, usize> = BTreeMap::new();
            for (i, u) in uids.iter().enumerate() {
                first.entry(u).or_insert(i);
            }
            let got: Vec<(&str, &str)> = f.users.iter().map(|u| (u.uid(), u.cn())).collect();
            let want: Vec<(&str, String)> =
                first.iter().map(|(u, i)| (*u, format!("cn{i}"))).collect();
            assert_eq!(got.len(), want.len());
            for ((gu, gc), (wu, wc)) in got.iter().zip(&want) {
                assert_eq!((gu, *gc), (wu, wc.as_str()));
            }
            for (i, u) in uids.iter().enumerate() {
                let row = f.rows[i];
                if first[u.as_str()] == i {
                    assert_eq!(f.users.uid_at(row), u);
                } else {
                    assert_eq!(row, u32::MAX);
                    let kept = f.repeated.iter().find(|(p, _)| *p as usize == i).unwrap().1;
                    assert_eq!(f.users.uid_at(kept), u);
                }
            }
        }
    }

    #[test]
    fn a_repeated_attribute_keeps_its_last_value() {
        let mut b = UsersBuilder::new();
        b.push(
            NewUser {
                uid: "u",
                cn: "U",
                ..NewUser::default()
            },
            [("b", "1"), ("a", "2"), ("b", "3")],
        )
        .unwrap();
        let users = b.finish().users;
        let u = users.get("u").unwrap();
        assert_eq!(u.attributes().collect::<Vec<_>>(), [("a", "2"), ("b", "3")]);
        assert_eq!(u.mail(), None);
        assert_eq!(u.dn(), None);
    }

    #[test]
    fn empty_strings_are_present_not_absent() {
        let mut b = UsersBuilder::new();
        b.push(
            NewUser {
                uid: "u",
                cn: "",
                mail: Some(""),
                ..NewUser::default()
            },
            [("", "")],
        )
        .unwrap();
        let users = b.finish().users;
        let u = users.get("u").unwrap();
        assert_eq!(u.mail(), Some(""));
        assert_eq!(u.upn(), None);
        assert_eq!(u.attribute(""), Some(""));
    }
}
