//! The `ldap` Directory kind: OpenLDAP and Active Directory read with ldap3 (async, tokio) into
//! a [`DirectorySnapshot`].
//!
//! An observation is paged, fetches only the attributes the templates need, and is
//! all-or-nothing: a failure or truncation at any page yields a snapshot marked incomplete (with
//! the users seen so far), so the planner revokes nothing on its strength. Also here: the cheap
//! change token the controller polls ([`LdapDirectory::change_token`]), single-user lookups for
//! operators, and the online check `validate --online` runs.
//!
//! This module only reads the directory: it never writes, and never chases referrals. It does
//! not decide entitlements (that is [`crate::desired`]).

pub mod build;
pub mod client;
pub mod dn;
pub mod sid;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use ldap3::Scope;

use self::build::{Builder, Profile};
pub use self::client::{Client, ConnectConfig, LdapError};
use crate::observe::snapshot::{DirectorySnapshot, DirectoryUser};
use crate::policy::model::{DirectorySpec, LdapDirectorySpec, LdapFlavour, SanTemplate};
use crate::policy::template::Var;
use crate::policy::{Object, PolicySet};

/// Limit for TCP connect plus TLS handshake when the policy sets no `connectTimeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Limit for each LDAP operation (for searches: the longest silence between two replies) when
/// the policy sets no `operationTimeout`.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);
/// Page size when the policy sets none.
pub const DEFAULT_PAGE_SIZE: u32 = 500;

/// What one observation must fetch, derived from the policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObserveRequest {
    /// The template variables in use (decides the attribute list).
    pub vars: BTreeSet<Var>,
    /// Groups whose transitive membership is needed (Active Directory asks the server with
    /// the in-chain rule; OpenLDAP nesting is resolved by Keyfleet from direct members).
    pub nested_groups: BTreeSet<String>,
    /// The `filter`s of the assignments on this directory, as written in the policy: each is
    /// searched (within the user filter) and its matches recorded in
    /// [`DirectorySnapshot::filtered`].
    pub filters: BTreeSet<String>,
}

impl ObserveRequest {
    /// The request for directory `name` of `policy`: the variables of every template's
    /// subject and SANs, and the groups assignments on this directory use with `nested`.
    pub fn for_directory(policy: &PolicySet, name: &str) -> ObserveRequest {
        let mut vars = BTreeSet::new();
        for t in policy.templates.values() {
            for c in &t.spec.certificates {
                vars.extend(c.subject.vars().cloned());
                for san in &c.subject_alt_names {
                    let (SanTemplate::Upn(t)
                    | SanTemplate::Email(t)
                    | SanTemplate::Dns(t)
                    | SanTemplate::Uri(t)) = san;
                    vars.extend(t.vars().cloned());
                }
            }
        }
        let nested_groups = policy
            .assignments
            .values()
            .filter(|a| a.spec.directory == name)
            .flat_map(|a| a.spec.groups.iter().filter(|g| g.nested))
            .map(|g| g.name.clone())
            .collect();
        let filters = policy
            .assignments
            .values()
            .filter(|a| a.spec.directory == name)
            .filter_map(|a| a.spec.filter.clone())
            .collect();
        ObserveRequest {
            vars,
            nested_groups,
            filters,
        }
    }
}

/// One user as a single lookup found them, with the groups they are directly in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundUser {
    /// The user.
    pub user: DirectoryUser,
    /// Names of the groups that list the user (Active Directory: transitively, by the
    /// in-chain rule, plus the user's primary group and the groups nesting it).
    pub groups: BTreeSet<String>,
}

/// An `ldap` Directory of the policy, ready to connect.
#[derive(Debug, Clone)]
pub struct LdapDirectory {
    /// The Directory's name.
    pub name: String,
    /// Its spec.
    pub spec: LdapDirectorySpec,
    /// The policy file's folder (secret files and the CA file are relative to it).
    pub base_dir: PathBuf,
}

impl LdapDirectory {
    /// The LDAP directory of a policy object (`None` for other kinds).
    pub fn from_policy(obj: &Object<DirectorySpec>) -> Option<LdapDirectory> {
        match &obj.spec {
            DirectorySpec::Ldap(spec) => Some(LdapDirectory {
                name: obj.name.clone(),
                spec: spec.clone(),
                base_dir: obj.base_dir(),
            }),
            DirectorySpec::File(_) => None,
        }
    }

    /// The flavour profile (filters and attribute names).
    pub fn profile(&self) -> Profile {
        Profile::new(
            self.spec.flavour,
            self.spec.user_filter.as_deref(),
            self.spec.group_filter.as_deref(),
        )
    }

    /// Resolves the password and TLS settings. A cleartext bind is refused unless the policy
    /// allows it (then it is logged as a warning). `ldap://` with a `tls` section means StartTLS.
    pub fn connect_config(&self) -> Result<ConnectConfig, LdapError> {
        client::check_url(&self.spec.url)?;
        if cleartext_bind(&self.spec) {
            if !self.spec.allow_cleartext_bind {
                return Err(LdapError::CleartextBind {
                    url: self.spec.url.clone(),
                });
            }
            tracing::warn!(
                directory = %self.name,
                url = %self.spec.url,
                "allowCleartextBind: the bind password is sent in cleartext"
            );
        }
        let bind_password = self
            .spec
            .bind_password
            .resolve(&self.base_dir)
            .map_err(|source| LdapError::Password {
                reference: self.spec.bind_password.to_string(),
                source,
            })?;
        let tls = self.spec.tls.as_ref();
        Ok(ConnectConfig {
            url: self.spec.url.clone(),
            starttls: tls.is_some() && self.spec.url.starts_with("ldap://"),
            ca_file: tls
                .and_then(|t| t.ca_file.as_ref())
                .map(|p| self.base_dir.join(p)),
            insecure_skip_verify: tls.is_some_and(|t| t.insecure_skip_verify),
            bind_dn: self.spec.bind_dn.clone(),
            bind_password,
            connect_timeout: self.connect_timeout(),
            op_timeout: self.operation_timeout(),
        })
    }

    /// The policy's `connectTimeout`, else [`CONNECT_TIMEOUT`].
    pub fn connect_timeout(&self) -> Duration {
        self.spec
            .connect_timeout
            .map_or(CONNECT_TIMEOUT, |d| Duration::from_secs(d.as_secs()))
    }

    /// The policy's `operationTimeout`, else [`OPERATION_TIMEOUT`].
    pub fn operation_timeout(&self) -> Duration {
        self.spec
            .operation_timeout
            .map_or(OPERATION_TIMEOUT, |d| Duration::from_secs(d.as_secs()))
    }

    /// Connects and binds.
    pub async fn connect(&self) -> Result<Client, LdapError> {
        Client::connect(&self.connect_config()?).await
    }

    /// `validate --online`: binds and reads the base DN.
    pub async fn check(&self) -> Result<(), LdapError> {
        let mut c = self.connect().await?;
        let found = c.read_entry(&self.spec.base_dn, &["1.1".into()]).await;
        c.close().await;
        match found? {
            Some(_) => Ok(()),
            None => Err(LdapError::Search {
                url: self.spec.url.clone(),
                base: self.spec.base_dn.clone(),
                filter: "(objectClass=*)".into(),
                rc: 32,
                reason: client::result_name(32),
                text: ": the base DN does not exist".into(),
            }),
        }
    }

    /// Observes the directory. `Err` when nothing could be read (connect, bind); a failure
    /// after that gives `Ok` with a snapshot marked incomplete.
    pub async fn observe(&self, req: &ObserveRequest) -> Result<DirectorySnapshot, LdapError> {
        let (client, group_client) = tokio::join!(self.connect(), self.connect());
        let (mut client, mut group_client) = (client?, group_client?);
        let profile = self.profile();
        let page = Some(self.spec.page_size.unwrap_or(DEFAULT_PAGE_SIZE));
        let user_attrs = profile.user_attributes(&req.vars);
        let group_attrs = profile.group_attributes();
        let base = &self.spec.base_dn;
        let mut b = Builder::new(profile.clone(), &req.vars);

        // Users and groups are read concurrently on two connections (servers keep one paged
        // search per connection): the server works on the groups while Keyfleet digests
        // users. Every step runs even after another failed: what was read still entitles
        // users (the snapshot is marked incomplete, so nothing is revoked).
        let mut groups = Vec::new();
        let (users, found) = tokio::join!(
            client.search(
                base,
                Scope::Subtree,
                &profile.user_filter,
                &user_attrs,
                page,
                |e| b.add_user(&e),
            ),
            group_client.search(
                base,
                Scope::Subtree,
                &profile.group_filter,
                &group_attrs,
                page,
                |e| groups.push(e),
            )
        );
        if let Err(e) = users {
            b.fail(format!("reading users failed: {e}"));
        }
        for g in groups {
            b.add_group(g);
        }
        if let Err(e) = found {
            b.fail(format!("reading groups failed: {e}"));
        }
        // Then, again on both connections at once: Active Directory's in-chain members of the
        // nested groups assignments use, and the users each assignment filter selects.
        let chains: Vec<(String, String)> = match self.spec.flavour {
            LdapFlavour::ActiveDirectory => req
                .nested_groups
                .iter()
                .filter_map(|g| Some((g.clone(), b.group_dn(g)?.to_string())))
                .collect(),
            LdapFlavour::Openldap => Vec::new(),
        };
        let uid_key = profile.uid_attr.to_ascii_lowercase();
        let uid_attrs = [profile.uid_attr.to_string()];
        let ((), filtered) = tokio::join!(
            async {
                for (group, dn) in chains {
                    let mut dns = Vec::new();
                    let r = client
                        .search(
                            base,
                            Scope::Subtree,
                            &profile.users_in_chain(&dn),
                            &["1.1".to_string()],
                            page,
                            |e| dns.push(e.dn),
                        )
                        .await;
                    match r {
                        Ok(()) => b.add_transitive(&group, &dns),
                        Err(e) => b.fail(format!("nested members of {group:?} failed: {e}")),
                    }
                }
            },
            async {
                let mut out = Vec::with_capacity(req.filters.len());
                for filter in &req.filters {
                    let mut uids = BTreeSet::new();
                    let r = group_client
                        .search(
                            base,
                            Scope::Subtree,
                            &profile.users_matching(filter),
                            &uid_attrs,
                            page,
                            |e| {
                                if let Some(uid) = e.first(&uid_key).filter(|u| !u.is_empty()) {
                                    uids.insert(uid.to_string());
                                }
                            },
                        )
                        .await;
                    out.push((filter, uids, r));
                }
                out
            }
        );
        for (filter, uids, r) in filtered {
            // Users a failed search did return still matched: they stay entitled, and the
            // failure makes the observation incomplete, so nobody loses anything by it.
            if let Err(e) = r {
                b.fail(format!(
                    "users of the assignment filter {filter:?} failed: {e}"
                ));
            }
            b.add_filtered(filter, uids);
        }
        group_client.close().await;
        client.close().await;
        Ok(b.finish())
    }

    /// Looks one user up by login name (the filter is built with RFC 4515 escaping).
    pub async fn find_user(
        &self,
        uid: &str,
        vars: &BTreeSet<Var>,
    ) -> Result<Option<FoundUser>, LdapError> {
        let mut client = self.connect().await?;
        let profile = self.profile();
        let b = Builder::new(profile.clone(), vars);
        let mut entries = Vec::new();
        client
            .search(
                &self.spec.base_dn,
                Scope::Subtree,
                &profile.user_by_uid(uid),
                &profile.user_attributes(vars),
                None,
                |e| entries.push(e),
            )
            .await?;
        // The directory's matching rule may be looser than equality (case): keep exact hits.
        let unreadable = |text: String| LdapError::Search {
            url: self.spec.url.clone(),
            base: self.spec.base_dn.clone(),
            filter: profile.user_by_uid(uid),
            rc: 80,
            reason: "unreadable entry",
            text: format!(": {text}"),
        };
        let mut hits = Vec::new();
        for e in &entries {
            if let Some((user, _)) = b.user_from_entry(e).map_err(unreadable)?
                && user.uid == uid
            {
                let primary = match self.spec.flavour {
                    LdapFlavour::ActiveDirectory => {
                        build::primary_group_sid(e).map_err(unreadable)?
                    }
                    LdapFlavour::Openldap => None,
                };
                hits.push((user, primary));
            }
        }
        let Some((user, primary)) = hits.into_iter().next() else {
            client.close().await;
            return Ok(None);
        };
        let user_dn = user.dn.clone().unwrap_or_default();
        let esc = dn::escape_filter_value(&user_dn);
        let filter = match self.spec.flavour {
            LdapFlavour::Openldap => format!(
                "(&{}(|(member={esc})(uniqueMember={esc})))",
                profile.group_filter
            ),
            LdapFlavour::ActiveDirectory => format!(
                "(&{}(member:{}:={esc}))",
                profile.group_filter,
                build::IN_CHAIN
            ),
        };
        let page = self.spec.page_size.or(Some(DEFAULT_PAGE_SIZE));
        let mut groups = BTreeSet::new();
        client
            .search(
                &self.spec.base_dn,
                Scope::Subtree,
                &filter,
                &["cn".to_string()],
                page,
                |e| {
                    if let Some(cn) = e.first("cn") {
                        groups.insert(cn.to_string());
                    }
                },
            )
            .await?;
        // Active Directory: the primary group (by SID) and the groups nesting it, which the
        // in-chain rule above does not see.
        if let Some(sid) = primary {
            let mut primary_dns = Vec::new();
            client
                .search(
                    &self.spec.base_dn,
                    Scope::Subtree,
                    &format!(
                        "(&{}(objectSid={}))",
                        profile.group_filter,
                        sid.filter_value()
                    ),
                    &["cn".to_string()],
                    page,
                    |e| {
                        if let Some(cn) = e.first("cn") {
                            groups.insert(cn.to_string());
                        }
                        primary_dns.push(e.dn);
                    },
                )
                .await?;
            for dn in primary_dns {
                let esc = dn::escape_filter_value(&dn);
                client
                    .search(
                        &self.spec.base_dn,
                        Scope::Subtree,
                        &format!(
                            "(&{}(member:{}:={esc}))",
                            profile.group_filter,
                            build::IN_CHAIN
                        ),
                        &["cn".to_string()],
                        page,
                        |e| {
                            if let Some(cn) = e.first("cn") {
                                groups.insert(cn.to_string());
                            }
                        },
                    )
                    .await?;
            }
        }
        client.close().await;
        Ok(Some(FoundUser { user, groups }))
    }

    /// A cheap token that changes when the directory changes: `csn:` + OpenLDAP's contextCSN
    /// of the naming context holding the base DN, `usn:` + Active Directory's
    /// highestCommittedUSN, or else `sha256:` + a hash of a complete observation. Equal tokens
    /// mean nothing relevant changed (a different token may be a change elsewhere).
    pub async fn change_token(&self, req: &ObserveRequest) -> Result<String, LdapError> {
        let mut client = self.connect().await?;
        let token = match self.spec.flavour {
            LdapFlavour::ActiveDirectory => {
                let root = client
                    .read_entry("", &["highestCommittedUSN".to_string()])
                    .await?;
                root.as_ref()
                    .and_then(|r| r.first("highestcommittedusn"))
                    .map(|usn| format!("usn:{}", usn.trim()))
            }
            LdapFlavour::Openldap => self.context_csn(&mut client).await?,
        };
        client.close().await;
        if let Some(t) = token {
            return Ok(t);
        }
        let snapshot = self.observe(req).await?;
        if !snapshot.complete {
            return Err(LdapError::Incomplete {
                url: self.spec.url.clone(),
                problems: snapshot.problems.join("; "),
            });
        }
        Ok(content_token(&snapshot))
    }

    async fn context_csn(&self, client: &mut Client) -> Result<Option<String>, LdapError> {
        let root = client
            .read_entry("", &["namingContexts".to_string()])
            .await?;
        let Ok(base) = dn::normalize_dn(&self.spec.base_dn).map(|b| b.into_owned()) else {
            return Ok(None);
        };
        // The naming context that holds the base DN (the longest suffix match).
        let context = root
            .iter()
            .flat_map(|r| r.all("namingcontexts"))
            .filter_map(|c| Some((c.to_string(), dn::normalize_dn(c).ok()?.into_owned())))
            .filter(|(_, n)| !n.is_empty() && (base == *n || base.ends_with(&format!(",{n}"))))
            .max_by_key(|(_, n)| n.len());
        let Some((context, _)) = context else {
            return Ok(None);
        };
        let entry = client
            .read_entry(&context, &["contextCSN".to_string()])
            .await?;
        let mut csns: Vec<&str> = entry.iter().flat_map(|e| e.all("contextcsn")).collect();
        if csns.is_empty() {
            return Ok(None);
        }
        csns.sort_unstable();
        Ok(Some(format!("csn:{}", csns.join(","))))
    }
}

/// Whether binding to this directory sends the password in cleartext: a plain `ldap://` URL
/// with no `tls` section (so no StartTLS).
pub fn cleartext_bind(spec: &LdapDirectorySpec) -> bool {
    spec.url.starts_with("ldap://") && spec.tls.is_none()
}

/// The content-hash change token of a snapshot.
pub fn content_token(snapshot: &DirectorySnapshot) -> String {
    snapshot.content_hash()
}

/// Runs an LDAP future to completion on a private current-thread runtime, for sync callers
/// (the CLI); measured faster than a multi-thread one, whose cross-thread hand-off per entry
/// costs more than it overlaps. Must not be called from inside a tokio runtime: async
/// callers use the futures.
pub fn block_on<F: Future>(f: F) -> Result<F::Output, LdapError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LdapError::Runtime)?;
    Ok(rt.block_on(f))
}

/// Observes every `ldap` Directory of the policy, one after the other; the async form of what
/// [`crate::runtime::observe_directories`] does for them.
pub async fn observe_all(
    policy: &PolicySet,
) -> BTreeMap<String, Result<DirectorySnapshot, String>> {
    let mut out = BTreeMap::new();
    for (name, obj) in &policy.directories {
        if let Some(dir) = LdapDirectory::from_policy(obj) {
            let req = ObserveRequest::for_directory(policy, name);
            let obs = dir.observe(&req).await.map_err(|e| e.to_string());
            out.insert(name.clone(), obs);
        }
    }
    out
}

/// `validate --online` for every `ldap` Directory: the name and error of each that cannot be
/// bound to or has no base DN.
pub fn check_all_blocking(policy: &PolicySet) -> Vec<(String, LdapError)> {
    let mut out = Vec::new();
    for (name, obj) in &policy.directories {
        if let Some(dir) = LdapDirectory::from_policy(obj) {
            match block_on(dir.check()) {
                Ok(Ok(())) => {}
                Ok(Err(e)) | Err(e) => out.push((name.clone(), e)),
            }
        }
    }
    out
}
