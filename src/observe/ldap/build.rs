//! Turns LDAP entries into a [`DirectorySnapshot`]: users keyed by their login attribute,
//! groups by name, memberships resolved by normalised DN, per flavour (OpenLDAP or Active
//! Directory; there also primary groups, by SID), and the users each assignment filter
//! selected.
//!
//! Pure: entries in, snapshot out. It does not talk to a server and decides nothing about
//! completeness beyond what the entries themselves show (duplicates, unusable entries).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::dn::{LdapDn, normalize_dn};
use super::sid::Sid;
use crate::observe::snapshot::{DirectoryGroup, DirectorySnapshot, DirectoryUser, UsersBuilder};
use crate::policy::model::LdapFlavour;
use crate::policy::template::Var;

/// One search result entry: its DN and attribute values by lower-cased attribute name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawEntry {
    /// The entry's DN as the server sent it.
    pub dn: String,
    /// Values by lower-cased attribute description (options such as `;binary` kept).
    pub attrs: HashMap<String, Vec<Vec<u8>>>,
}

impl RawEntry {
    /// The first value of `attr` (lower-case) as UTF-8.
    pub fn first(&self, attr: &str) -> Option<&str> {
        self.attrs
            .get(attr)?
            .iter()
            .find_map(|v| std::str::from_utf8(v).ok())
    }

    /// Every UTF-8 value of `attr` (lower-case).
    pub fn all(&self, attr: &str) -> impl Iterator<Item = &str> {
        self.attrs
            .get(attr)
            .into_iter()
            .flatten()
            .filter_map(|v| std::str::from_utf8(v).ok())
    }
}

/// What each flavour reads, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The flavour.
    pub flavour: LdapFlavour,
    /// Attribute holding the login name (`uid` / `sAMAccountName`).
    pub uid_attr: &'static str,
    /// The user filter (policy's or the flavour default).
    pub user_filter: String,
    /// The group filter (policy's or the flavour default).
    pub group_filter: String,
}

/// Default OpenLDAP user filter.
pub const OPENLDAP_USERS: &str = "(|(objectClass=inetOrgPerson)(objectClass=person))";
/// Default OpenLDAP group filter.
pub const OPENLDAP_GROUPS: &str = "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))";
/// Default Active Directory user filter.
pub const AD_USERS: &str = "(&(objectCategory=person)(objectClass=user))";
/// Default Active Directory group filter.
pub const AD_GROUPS: &str = "(objectClass=group)";
/// The Active Directory in-chain (transitive) matching rule.
pub const IN_CHAIN: &str = "1.2.840.113556.1.4.1941";

impl Profile {
    /// The profile of a flavour with optional policy filters.
    pub fn new(
        flavour: LdapFlavour,
        user_filter: Option<&str>,
        group_filter: Option<&str>,
    ) -> Profile {
        let (uid_attr, users, groups) = match flavour {
            LdapFlavour::Openldap => ("uid", OPENLDAP_USERS, OPENLDAP_GROUPS),
            LdapFlavour::ActiveDirectory => ("sAMAccountName", AD_USERS, AD_GROUPS),
        };
        Profile {
            flavour,
            uid_attr,
            user_filter: wrap(user_filter.unwrap_or(users)),
            group_filter: wrap(group_filter.unwrap_or(groups)),
        }
    }

    /// The user attributes to request for the given template variables (only those).
    pub fn user_attributes(&self, vars: &BTreeSet<Var>) -> Vec<String> {
        let mut out: Vec<String> = vec![self.uid_attr.into(), "cn".into()];
        match self.flavour {
            // Group membership comes from the groups' member lists (MUST attributes of
            // groupOfNames / groupOfUniqueNames), so users' memberOf would only repeat it.
            LdapFlavour::Openldap => out.push("pwdAccountLockedTime".into()),
            // AD: memberOf gives direct groups without ranged retrieval of large groups; the
            // primary group (never in memberOf) is the user's domain SID + primaryGroupID.
            LdapFlavour::ActiveDirectory => out.extend([
                "memberOf".into(),
                "userAccountControl".into(),
                "objectGUID".into(),
                "primaryGroupID".into(),
                "objectSid".into(),
            ]),
        }
        for v in vars {
            match v {
                Var::Uid | Var::Cn | Var::Dn => {}
                Var::Mail => out.push("mail".into()),
                Var::Upn => out.push("userPrincipalName".into()),
                Var::Attr(a) => out.push(a.clone()),
            }
        }
        let mut seen = BTreeSet::new();
        out.retain(|a| seen.insert(a.to_ascii_lowercase()));
        out
    }

    /// The group attributes to request.
    pub fn group_attributes(&self) -> Vec<String> {
        match self.flavour {
            // Direct members come from the groups' member lists.
            LdapFlavour::Openldap => vec!["cn".into(), "member".into(), "uniqueMember".into()],
            // Direct structure comes from memberOf (a back-link, not subject to AD's ranged
            // retrieval of large member lists); nesting from the in-chain rule; objectSid
            // names the group in users' primaryGroupID.
            LdapFlavour::ActiveDirectory => {
                vec!["cn".into(), "memberOf".into(), "objectSid".into()]
            }
        }
    }

    /// A filter selecting the user whose login name is `uid` (escaped per RFC 4515).
    pub fn user_by_uid(&self, uid: &str) -> String {
        format!(
            "(&{}({}={}))",
            self.user_filter,
            self.uid_attr,
            super::dn::escape_filter_value(uid)
        )
    }

    /// A filter selecting the group named `name`.
    pub fn group_by_name(&self, name: &str) -> String {
        format!(
            "(&{}(cn={}))",
            self.group_filter,
            super::dn::escape_filter_value(name)
        )
    }

    /// The users an assignment's `filter` selects: the operator's filter (policy text, not
    /// data, so used as written; parentheses added when it has none) within the user filter.
    pub fn users_matching(&self, filter: &str) -> String {
        format!("(&{}{})", self.user_filter, wrap(filter))
    }

    /// Active Directory: the users that are members of `group_dn`, directly or through nested
    /// groups (in-chain rule).
    pub fn users_in_chain(&self, group_dn: &str) -> String {
        format!(
            "(&{}(memberOf:{IN_CHAIN}:={}))",
            self.user_filter,
            super::dn::escape_filter_value(group_dn)
        )
    }
}

/// Active Directory: the SID of a user's primary group (their own SID with `primaryGroupID` as
/// RID). `Ok(None)` when the entry has no primaryGroupID; `Err` when it has one that cannot be
/// used.
pub fn primary_group_sid(e: &RawEntry) -> Result<Option<Sid>, String> {
    let Some(id) = e.first("primarygroupid") else {
        return Ok(None);
    };
    let rid: u32 = id
        .trim()
        .parse()
        .map_err(|_| format!("primaryGroupID {id:?} is not a number"))?;
    let sid = e
        .attrs
        .get("objectsid")
        .and_then(|v| v.first())
        .ok_or("no objectSid, so the primary group is unknown")?;
    Sid::from_bytes(sid)
        .and_then(|s| s.with_rid(rid))
        .map(Some)
        .ok_or_else(|| "unreadable objectSid, so the primary group is unknown".to_string())
}

fn wrap(filter: &str) -> String {
    let f = filter.trim();
    if f.starts_with('(') {
        f.to_string()
    } else {
        format!("({f})")
    }
}

/// Formats an Active Directory objectGUID (16 bytes, first three fields little-endian) as
/// the usual `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` text.
pub fn format_guid(b: &[u8]) -> Option<String> {
    let b: &[u8; 16] = b.try_into().ok()?;
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{}",
        b[3],
        b[2],
        b[1],
        b[0],
        b[5],
        b[4],
        b[7],
        b[6],
        b[8],
        b[9],
        hex::encode(&b[10..16])
    ))
}

/// Collects entries and builds the snapshot.
#[derive(Debug)]
pub struct Builder {
    profile: Profile,
    /// Lower-cased attribute name -> the spelling templates use.
    template_attrs: BTreeMap<String, String>,
    users: UsersBuilder,
    /// Normalised DN of each user -> its position among the users added.
    user_dns: HashMap<String, u32>,
    /// Users' memberOf DNs, by position.
    user_member_of: Vec<(u32, Vec<String>)>,
    groups: Vec<(String, String, RawEntry)>,
    /// Transitive members by position, per group (Active Directory's in-chain answers).
    transitive: BTreeMap<String, Vec<u32>>,
    /// Active Directory: (position, SID of the user's primary group).
    user_primary: Vec<(u32, Sid)>,
    filtered: BTreeMap<String, BTreeSet<String>>,
    problems: Vec<String>,
    complete: bool,
}

impl Builder {
    /// A builder for `profile`, keeping the template attributes named in `vars`.
    pub fn new(profile: Profile, vars: &BTreeSet<Var>) -> Builder {
        let template_attrs = vars
            .iter()
            .filter_map(|v| match v {
                Var::Attr(a) => Some((a.to_ascii_lowercase(), a.clone())),
                _ => None,
            })
            .collect();
        Builder {
            profile,
            template_attrs,
            users: UsersBuilder::new(),
            user_dns: HashMap::new(),
            user_member_of: Vec::new(),
            groups: Vec::new(),
            transitive: BTreeMap::new(),
            user_primary: Vec::new(),
            filtered: BTreeMap::new(),
            problems: Vec::new(),
            complete: true,
        }
    }

    /// Marks the observation incomplete, with the reason.
    pub fn fail(&mut self, problem: String) {
        self.complete = false;
        self.problems.push(problem);
    }

    /// Converts one user entry (without recording it) into a user and its memberOf DNs.
    /// `Ok(None)`: the entry has no login name, so nobody can be keyed on it.
    #[allow(clippy::type_complexity)]
    pub fn user_from_entry(
        &self,
        e: &RawEntry,
    ) -> Result<Option<(DirectoryUser, Vec<String>)>, String> {
        let uid_key = self.profile.uid_attr.to_ascii_lowercase();
        let Some(uid) = e.first(&uid_key).filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let uid = uid.to_string();
        let disabled = match self.profile.flavour {
            LdapFlavour::Openldap => e.attrs.contains_key("pwdaccountlockedtime"),
            LdapFlavour::ActiveDirectory => match e.first("useraccountcontrol") {
                // ACCOUNTDISABLE is bit 2 (0x2).
                Some(v) => {
                    v.trim().parse::<i64>().map_err(|_| {
                        format!("{}: userAccountControl {v:?} is not a number", e.dn)
                    })? & 2
                        != 0
                }
                None => false,
            },
        };
        let stable_id = match self.profile.flavour {
            LdapFlavour::ActiveDirectory => e
                .attrs
                .get("objectguid")
                .and_then(|v| v.first())
                .and_then(|v| format_guid(v)),
            LdapFlavour::Openldap => None,
        };
        let attributes = self
            .template_attrs
            .iter()
            .filter_map(|(lower, spelled)| Some((spelled.clone(), e.first(lower)?.to_string())))
            .collect();
        let user = DirectoryUser {
            cn: e.first("cn").unwrap_or(&uid).to_string(),
            uid,
            dn: Some(e.dn.clone()),
            mail: e.first("mail").map(str::to_string),
            upn: e.first("userprincipalname").map(str::to_string),
            disabled,
            stable_id,
            attributes,
        };
        let member_of = e.all("memberof").map(str::to_string).collect();
        Ok(Some((user, member_of)))
    }

    /// Records a user entry.
    pub fn add_user(&mut self, e: &RawEntry) {
        let (user, member_of) = match self.user_from_entry(e) {
            Ok(Some(x)) => x,
            // No login name: not a user Keyfleet can key on (e.g. a service entry).
            Ok(None) => return,
            Err(p) => {
                // Unreadable data: nobody can be entitled through this entry, but its absence
                // must not look like a removal either.
                self.fail(format!("user entry skipped: {p}"));
                return;
            }
        };
        let Ok(norm) = normalize_dn(&e.dn).map(Cow::into_owned) else {
            self.fail(format!("user entry with unparsable DN {:?}", e.dn));
            return;
        };
        // A second entry with a login name seen before is dropped (and the observation
        // marked incomplete) when the users are sorted in `finish`.
        let position = match self.users.push_user(&user) {
            Ok(p) => p,
            Err(too_large) => {
                self.fail(format!("user entry {} skipped: {too_large}", e.dn));
                return;
            }
        };
        // A DN seen twice keeps naming the first entry (the one kept when they share a uid).
        self.user_dns.entry(norm).or_insert(position);
        if !member_of.is_empty() {
            self.user_member_of.push((position, member_of));
        }
        let primary = match self.profile.flavour {
            LdapFlavour::ActiveDirectory => primary_group_sid(e),
            LdapFlavour::Openldap => Ok(None),
        };
        match primary {
            Ok(Some(sid)) => self.user_primary.push((position, sid)),
            Ok(None) => {}
            // The user is kept (entitled through other groups), but a membership Keyfleet
            // cannot see must not read as a removal.
            Err(p) => {
                self.complete = false;
                self.problems.push(format!("{}: {p}", e.dn));
            }
        }
    }

    /// Records the users (uids) an assignment filter selected, keyed by the filter's policy
    /// text. Only uids of recorded users count (see [`DirectorySnapshot::filter_matches`]).
    pub fn add_filtered(&mut self, filter: &str, uids: BTreeSet<String>) {
        self.filtered
            .entry(filter.to_string())
            .or_default()
            .extend(uids);
    }

    /// Records a group entry (memberships are resolved in [`Builder::finish`]).
    pub fn add_group(&mut self, e: RawEntry) {
        let name = e
            .first("cn")
            .map(str::to_string)
            .or_else(|| {
                LdapDn::parse(&e.dn)
                    .ok()
                    .and_then(|d| d.rdns.first()?.first().map(|a| a.value.clone()))
            })
            .filter(|n| !n.is_empty());
        let Some(name) = name else {
            self.fail(format!("group entry {:?} has no name", e.dn));
            return;
        };
        let Ok(norm) = normalize_dn(&e.dn).map(Cow::into_owned) else {
            self.fail(format!("group entry with unparsable DN {:?}", e.dn));
            return;
        };
        self.groups.push((name, norm, e));
    }

    /// Active Directory: records the transitive user members of `group` as the server's
    /// in-chain rule computed them (user DNs).
    pub fn add_transitive(&mut self, group: &str, user_dns: &[String]) {
        let mut positions = Vec::new();
        for dn in user_dns {
            if let Some(p) = normalize_dn(dn)
                .ok()
                .and_then(|n| self.user_dns.get(n.as_ref()))
            {
                positions.push(*p);
            }
        }
        self.transitive.insert(group.to_string(), positions);
    }

    /// Number of users recorded so far.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// The DN of a recorded group.
    pub fn group_dn(&self, name: &str) -> Option<&str> {
        self.groups
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, e)| e.dn.as_str())
    }

    /// Resolves memberships and returns the snapshot.
    pub fn finish(mut self) -> DirectorySnapshot {
        let finished = std::mem::take(&mut self.users).finish();
        let users = finished.users;
        // Position among the users added -> row in the snapshot (None: a dropped repeat).
        let rows = finished.rows;
        let row_of = |p: u32| rows.get(p as usize).copied().filter(|r| *r != u32::MAX);
        if !finished.repeated.is_empty() {
            // Position -> DN, built once (not a scan of every DN per repeat).
            let mut dn_of: Vec<&str> = vec![""; rows.len()];
            for (dn, p) in &self.user_dns {
                if let Some(slot) = dn_of.get_mut(*p as usize) {
                    *slot = dn;
                }
            }
            let problems: Vec<String> = finished
                .repeated
                .iter()
                .map(|(position, kept)| {
                    let second = dn_of
                        .get(*position as usize)
                        .copied()
                        .filter(|dn| !dn.is_empty())
                        .unwrap_or("the same entry again");
                    format!(
                        "two user entries share the login name {:?} (second: {second})",
                        users.uid_at(*kept)
                    )
                })
                .collect();
            for p in problems {
                self.fail(p);
            }
        }
        // Members are gathered in vectors and sorted once.
        #[derive(Default)]
        struct Acc {
            members: Vec<u32>,
            groups: Vec<String>,
        }
        let mut acc: HashMap<String, Acc> = HashMap::with_capacity(self.groups.len());
        let mut group_dns: HashMap<String, String> = HashMap::with_capacity(self.groups.len());
        for (name, norm, _) in &self.groups {
            if acc.contains_key(name) {
                self.complete = false;
                self.problems
                    .push(format!("two group entries share the name {name:?}"));
                continue;
            }
            group_dns.insert(norm.clone(), name.clone());
            acc.insert(name.clone(), Acc::default());
        }
        let groups_taken = std::mem::take(&mut self.groups);
        // Active Directory: groups by objectSid, for users' primary groups.
        let mut group_sids: HashMap<Sid, String> = HashMap::new();
        if self.profile.flavour == LdapFlavour::ActiveDirectory {
            for (name, norm, e) in &groups_taken {
                if group_dns.get(norm) != Some(name) {
                    continue;
                }
                match e
                    .attrs
                    .get("objectsid")
                    .and_then(|v| v.first())
                    .map(|v| Sid::from_bytes(v))
                {
                    Some(Some(sid)) => {
                        group_sids.insert(sid, name.clone());
                    }
                    // Its primary members cannot be found: they must not look removed.
                    Some(None) => {
                        self.complete = false;
                        self.problems
                            .push(format!("group {name:?} has an unreadable objectSid"));
                    }
                    None => {
                        self.complete = false;
                        self.problems
                            .push(format!("group {name:?} has no objectSid (not readable?)"));
                    }
                }
            }
        }
        let mut primary_members: HashMap<&str, Vec<u32>> = HashMap::new();
        for (position, sid) in &self.user_primary {
            if let (Some(g), Some(row)) = (group_sids.get(sid), row_of(*position)) {
                primary_members.entry(g.as_str()).or_default().push(row);
            }
        }
        for (name, norm, e) in &groups_taken {
            if group_dns.get(norm) != Some(name) {
                continue;
            }
            // OpenLDAP: member / uniqueMember hold direct members (users and groups).
            let values = e.all("member").chain(e.all("uniquemember").map(|v| {
                // nameAndOptionalUID: `dn#'0101'B`.
                match v.rfind("#'") {
                    Some(i) if v.ends_with("'B") => &v[..i],
                    _ => v,
                }
            }));
            let mut members = Vec::new();
            let mut subgroups = Vec::new();
            for v in values {
                let Ok(m) = normalize_dn(v) else { continue };
                if let Some(p) = self.user_dns.get(m.as_ref()) {
                    members.extend(row_of(*p));
                } else if let Some(sub) = group_dns.get(m.as_ref()) {
                    subgroups.push(sub.clone());
                }
            }
            if let Some(a) = acc.get_mut(name) {
                a.members.append(&mut members);
                a.groups.append(&mut subgroups);
            }
            // Active Directory: a group's memberOf names its direct parents.
            for parent in e.all("memberof") {
                let Some(p) = normalize_dn(parent)
                    .ok()
                    .and_then(|n| group_dns.get(n.as_ref()))
                else {
                    continue;
                };
                if let Some(a) = acc.get_mut(p) {
                    a.groups.push(name.clone());
                }
            }
        }
        // Users' memberOf names their direct groups (Active Directory).
        for (position, member_of) in &self.user_member_of {
            let Some(row) = row_of(*position) else {
                continue;
            };
            for dn in member_of {
                let Some(g) = normalize_dn(dn)
                    .ok()
                    .and_then(|n| group_dns.get(n.as_ref()))
                else {
                    continue;
                };
                if let Some(a) = acc.get_mut(g) {
                    a.members.push(row);
                }
            }
        }
        // Primary groups are direct memberships (Keyfleet's own nesting then carries them
        // to every group that nests the primary group).
        for (g, rows) in &primary_members {
            if let Some(a) = acc.get_mut(*g) {
                a.members.extend(rows.iter().copied());
            }
        }
        let groups: BTreeMap<String, DirectoryGroup> = acc
            .into_iter()
            .map(|(name, a)| {
                let group =
                    DirectoryGroup::new(name.clone(), a.members, a.groups.into_iter().collect());
                (name, group)
            })
            .collect();
        // The in-chain rule follows member links only, never primaryGroupID: add the primary
        // members of the group and of every group nested in it (cycle-safe).
        let transitive = std::mem::take(&mut self.transitive)
            .into_iter()
            .map(|(group, positions)| {
                let mut rows: Vec<u32> = positions.into_iter().filter_map(row_of).collect();
                let mut seen: BTreeSet<&str> = BTreeSet::new();
                let mut stack = vec![group.as_str()];
                while let Some(name) = stack.pop() {
                    if primary_members.is_empty() || !seen.insert(name) {
                        continue;
                    }
                    if let Some(primary) = primary_members.get(name) {
                        rows.extend(primary.iter().copied());
                    }
                    if let Some(g) = groups.get(name) {
                        stack.extend(g.groups.iter().map(String::as_str));
                    }
                }
                rows.sort_unstable();
                rows.dedup();
                (group, rows.into_boxed_slice())
            })
            .collect();
        DirectorySnapshot {
            users,
            groups,
            complete: self.complete,
            transitive,
            filtered: self.filtered,
            problems: self.problems,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dn: &str, attrs: &[(&str, &[&[u8]])]) -> RawEntry {
        RawEntry {
            dn: dn.into(),
            attrs: attrs
                .iter()
                .map(|(k, vs)| {
                    (
                        k.to_ascii_lowercase(),
                        vs.iter().map(|v| v.to_vec()).collect(),
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn openldap_members_resolve_by_normalised_dn_and_nest() {
        let vars: BTreeSet<Var> = [Var::Mail, Var::Attr("employeeNumber".into())].into();
        let p = Profile::new(LdapFlavour::Openldap, None, None);
        assert!(
            p.user_attributes(&vars)
                .iter()
                .any(|a| a == "employeeNumber")
        );
        let mut b = Builder::new(p, &vars);
        b.add_user(&entry(
            "cn=Müller\\, Jörg,ou=people,dc=x",
            &[
                ("uid", &[b"joerg"]),
                ("cn", &["Müller, Jörg".as_bytes()]),
                ("employeeNumber", &[b"7"]),
            ],
        ));
        b.add_user(&entry(
            "uid=bob,ou=people,dc=x",
            &[
                ("uid", &[b"bob"]),
                ("pwdAccountLockedTime", &[b"000001010000Z"]),
            ],
        ));
        b.add_user(&entry("uid=nouid,ou=people,dc=x", &[("cn", &[b"x"])]));
        b.add_group(entry(
            "cn=a,ou=groups,dc=x",
            &[
                ("cn", &[b"a"]),
                (
                    "member",
                    &[
                        b"CN=M\\C3\\BCller\\2C J\\C3\\B6rg,OU=People,DC=X",
                        b"cn=b,ou=groups,dc=x",
                    ],
                ),
            ],
        ));
        b.add_group(entry(
            "cn=b,ou=groups,dc=x",
            &[
                ("cn", &[b"b"]),
                (
                    "uniqueMember",
                    &[b"uid=bob,ou=people,dc=x#'0101'B", b"cn=a,ou=groups,dc=x"],
                ),
            ],
        ));
        let s = b.finish();
        assert!(
            s.complete,
            "an entry without uid is not a user, and not a failure"
        );
        assert_eq!(s.users.len(), 2);
        assert_eq!(
            s.users.get("joerg").unwrap().to_user().attributes["employeeNumber"],
            "7"
        );
        assert!(s.users.get("bob").unwrap().to_user().disabled);
        assert!(!s.users.get("joerg").unwrap().to_user().disabled);
        assert_eq!(
            s.members("a", false).into_iter().collect::<Vec<_>>(),
            ["joerg"]
        );
        assert_eq!(
            s.members("a", true).into_iter().collect::<Vec<_>>(),
            ["bob", "joerg"]
        );
    }

    #[test]
    fn active_directory_users_and_structure() {
        let p = Profile::new(LdapFlavour::ActiveDirectory, None, None);
        assert_eq!(
            p.users_in_chain("CN=a(1)*,DC=x"),
            "(&(&(objectCategory=person)(objectClass=user))(memberOf:1.2.840.113556.1.4.1941:=CN=a\\281\\29\\2a,DC=x))"
        );
        let mut b = Builder::new(p, &BTreeSet::new());
        let guid: &[u8] = &[
            0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ];
        b.add_user(&entry(
            "CN=Alice Example,CN=Users,DC=x",
            &[
                ("sAMAccountName", &[b"alice"]),
                ("userAccountControl", &[b"514"]),
                ("objectGUID", &[guid]),
                ("memberOf", &[b"CN=vpn,CN=Users,DC=x"]),
            ],
        ));
        b.add_user(&entry(
            "CN=Bad,CN=Users,DC=x",
            &[
                ("sAMAccountName", &[b"bad"]),
                ("userAccountControl", &[b"x"]),
            ],
        ));
        b.add_group(entry("CN=piv,CN=Users,DC=x", &[("cn", &[b"piv"])]));
        b.add_group(entry(
            "CN=vpn,CN=Users,DC=x",
            &[("cn", &[b"vpn"]), ("memberOf", &[b"cn=piv,cn=users,dc=x"])],
        ));
        b.add_transitive("piv", &["cn=alice example,cn=users,dc=x".into()]);
        let s = b.finish();
        let alice = &s.users.get("alice").unwrap().to_user();
        assert!(alice.disabled);
        assert_eq!(
            alice.stable_id.as_deref(),
            Some("00112233-4455-6677-8899-aabbccddeeff")
        );
        assert!(!s.users.contains_key("bad"));
        assert!(!s.complete);
        assert_eq!(s.groups["piv"].groups.iter().collect::<Vec<_>>(), ["vpn"]);
        assert_eq!(s.members("vpn", false).len(), 1);
        assert!(s.members("piv", false).is_empty());
        assert_eq!(
            s.members("piv", true).into_iter().collect::<Vec<_>>(),
            ["alice"]
        );
    }

    /// Binary SID S-1-5-21-1-2-3-`rid`.
    fn sid(rid: u32) -> Vec<u8> {
        let mut b = vec![1, 5, 0, 0, 0, 0, 0, 5];
        for s in [21u32, 1, 2, 3, rid] {
            b.extend_from_slice(&s.to_le_bytes());
        }
        b
    }

    #[test]
    fn active_directory_primary_groups_are_memberships() {
        let p = Profile::new(LdapFlavour::ActiveDirectory, None, None);
        let attrs = p.user_attributes(&BTreeSet::new());
        assert!(attrs.iter().any(|a| a == "primaryGroupID"));
        assert!(p.group_attributes().iter().any(|a| a == "objectSid"));
        let mut b = Builder::new(p, &BTreeSet::new());
        let user = |name: &str, rid: u32, primary: &[u8]| {
            let s = sid(rid);
            entry(
                &format!("CN={name},CN=Users,DC=x"),
                &[
                    ("sAMAccountName", &[name.as_bytes()]),
                    ("objectSid", &[&s]),
                    ("primaryGroupID", &[primary]),
                ],
            )
        };
        b.add_user(&user("alice", 1101, b"513"));
        b.add_user(&user("bob", 1102, b"1200"));
        // A user of another domain whose primaryGroupID is 513 there: not our Domain Users.
        let mut other = sid(1103);
        other[12] = 9;
        b.add_user(&entry(
            "CN=eve,CN=Users,DC=x",
            &[
                ("sAMAccountName", &[b"eve"]),
                ("objectSid", &[&other]),
                ("primaryGroupID", &[b"513"]),
            ],
        ));
        let (du, piv) = (sid(513), sid(1200));
        b.add_group(entry(
            "CN=Domain Users,CN=Users,DC=x",
            &[
                ("cn", &[b"Domain Users"]),
                ("objectSid", &[&du]),
                ("memberOf", &[b"CN=everyone,DC=x"]),
            ],
        ));
        b.add_group(entry(
            "CN=piv,DC=x",
            &[("cn", &[b"piv"]), ("objectSid", &[&piv])],
        ));
        let all = sid(1300);
        b.add_group(entry(
            "CN=everyone,DC=x",
            &[("cn", &[b"everyone"]), ("objectSid", &[&all])],
        ));
        // The server's in-chain answer for `everyone` never includes primary members.
        b.add_transitive("everyone", &[]);
        let s = b.finish();
        assert!(s.complete, "{:?}", s.problems);
        let names = |v: BTreeSet<String>| v.into_iter().collect::<Vec<_>>();
        assert_eq!(names(s.members("Domain Users", false)), ["alice"]);
        assert_eq!(names(s.members("piv", false)), ["bob"]);
        assert_eq!(names(s.members("everyone", true)), ["alice"]);
        let mut reached = Vec::new();
        s.for_each_member("everyone", true, |u| reached.push(u.to_string()));
        assert_eq!(reached, ["alice"]);

        // Unusable values make the observation incomplete instead of silently dropping a
        // membership; the user is still there.
        let mut b = Builder::new(
            Profile::new(LdapFlavour::ActiveDirectory, None, None),
            &BTreeSet::new(),
        );
        b.add_user(&user("carol", 1104, b"five"));
        b.add_user(&entry(
            "CN=dan,DC=x",
            &[
                ("sAMAccountName", &[b"dan"]),
                ("objectSid", &[&[1u8, 5, 0][..]]),
                ("primaryGroupID", &[b"513"]),
            ],
        ));
        b.add_group(entry(
            "CN=odd,DC=x",
            &[("cn", &[b"odd"]), ("objectSid", &[&[1u8, 9][..]])],
        ));
        let s = b.finish();
        assert!(!s.complete);
        assert_eq!(s.users.len(), 2);
        assert_eq!(s.problems.len(), 3, "{:?}", s.problems);
        // OpenLDAP entries carry no primary group.
        let mut b = Builder::new(
            Profile::new(LdapFlavour::Openldap, None, None),
            &BTreeSet::new(),
        );
        b.add_user(&entry(
            "uid=a,dc=x",
            &[("uid", &[b"a"]), ("primaryGroupID", &[b"x"])],
        ));
        assert!(b.finish().complete);
    }

    #[test]
    fn assignment_filters_are_recorded_as_written() {
        let p = Profile::new(LdapFlavour::Openldap, None, None);
        assert_eq!(
            p.users_matching("employeeType=contractor"),
            "(&(|(objectClass=inetOrgPerson)(objectClass=person))(employeeType=contractor))"
        );
        assert_eq!(
            p.users_matching("(employeeType=contractor)"),
            p.users_matching(" employeeType=contractor ")
        );
        let mut b = Builder::new(p, &BTreeSet::new());
        b.add_user(&entry("uid=a,dc=x", &[("uid", &[b"a"])]));
        b.add_filtered(
            "employeeType=contractor",
            ["a".into(), "ghost".into()].into(),
        );
        b.add_filtered("(ou=none)", BTreeSet::new());
        let s = b.finish();
        assert_eq!(
            s.filter_matches("employeeType=contractor")
                .expect("searched")
                .collect::<Vec<_>>(),
            ["a"],
            "only users of the snapshot"
        );
        assert_eq!(s.filter_matches("(ou=none)").expect("searched").count(), 0);
        assert!(s.filter_matches("(employeeType=contractor)").is_none());
    }

    #[test]
    fn duplicates_make_the_snapshot_incomplete() {
        let mut b = Builder::new(
            Profile::new(LdapFlavour::Openldap, None, None),
            &BTreeSet::new(),
        );
        b.add_user(&entry("uid=a,ou=p,dc=x", &[("uid", &[b"a"])]));
        b.add_user(&entry("uid=a,ou=q,dc=x", &[("uid", &[b"a"])]));
        // The very same entry returned twice: the kept user still resolves by its DN.
        b.add_user(&entry("uid=a,ou=p,dc=x", &[("uid", &[b"a"])]));
        b.add_group(entry(
            "cn=g,ou=g,dc=x",
            &[("cn", &[b"g"]), ("member", &[b"uid=a,ou=p,dc=x"])],
        ));
        let s = b.finish();
        assert!(!s.complete);
        assert_eq!(s.users.len(), 1);
        assert_eq!(s.direct_members("g").collect::<Vec<_>>(), ["a"]);
        assert_eq!(
            s.problems
                .iter()
                .filter(|p| p.contains("share the login name"))
                .count(),
            2,
            "{:?}",
            s.problems
        );
        assert!(
            s.problems
                .iter()
                .any(|p| p.ends_with("(second: uid=a,ou=q,dc=x)"))
        );
        let mut b = Builder::new(
            Profile::new(LdapFlavour::Openldap, None, None),
            &BTreeSet::new(),
        );
        b.add_group(entry("cn=g,ou=p,dc=x", &[("cn", &[b"g"])]));
        b.add_group(entry("cn=g,ou=q,dc=x", &[("cn", &[b"g"])]));
        assert!(!b.finish().complete);
    }

    #[test]
    fn filters_from_data_are_escaped() {
        let p = Profile::new(
            LdapFlavour::Openldap,
            Some("objectClass=inetOrgPerson"),
            None,
        );
        assert_eq!(
            p.user_by_uid("*)(uid=*"),
            "(&(objectClass=inetOrgPerson)(uid=\\2a\\29\\28uid=\\2a))"
        );
        assert!(ldap3::parse_filter(p.user_by_uid("a\\b(c)ö")).is_ok());
        assert!(format_guid(&[1, 2, 3]).is_none());
    }
}
