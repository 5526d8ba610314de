//! `keyfleet directory show USER` and `keyfleet directory members GROUP`: what Keyfleet sees in
//! a Directory (file or LDAP), for operators. Read-only.
//!
//! Rendering only: observation is `crate::observe` (LDAP lookups build their filters with RFC
//! 4515 escaping there).

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::{EXIT_FAILURE, EXIT_OK, GlobalArgs};
use crate::observe::directory::read_file_directory;
use crate::observe::ldap::{self, LdapDirectory, ObserveRequest};
use crate::observe::snapshot::{DirectorySnapshot, DirectoryUser};
use crate::policy::model::DirectorySpec;
use crate::policy::{self, Object, PolicySet};

/// The long help of this subcommand.
pub const LONG_ABOUT: &str = "Show what Keyfleet sees in a Directory: one user with the \
attributes the templates use and the groups that list them (`show USER`), or every member of a \
group, nested groups included (`members GROUP`). Works for file and LDAP directories; name the \
directory with --directory when the policy has several.\n\n`--format json` prints users as \
objects with uid, dn, disabled and attributes.\n\nExit codes: 0 found, 1 not found or the \
directory could not be read completely.";

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Lines for people.
    Text,
    /// JSON for scripts.
    Json,
}

/// Arguments of `keyfleet directory`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// What to show.
    #[command(subcommand)]
    pub command: Sub,
}

/// The `directory` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Sub {
    /// One user as Keyfleet sees them.
    Show(ShowArgs),
    /// The members of a group (transitive unless --direct).
    Members(MembersArgs),
}

/// Options shared by both subcommands.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// The Directory (policy name); needed when the policy has several.
    #[arg(long, value_name = "NAME")]
    pub directory: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// Arguments of `directory show`.
#[derive(Debug, Clone, clap::Args)]
pub struct ShowArgs {
    /// The user's login name (uid / sAMAccountName).
    pub user: String,
    /// Common options.
    #[command(flatten)]
    pub common: Common,
}

/// Arguments of `directory members`.
#[derive(Debug, Clone, clap::Args)]
pub struct MembersArgs {
    /// The group's name.
    pub group: String,
    /// Only direct members, not those of nested groups.
    #[arg(long)]
    pub direct: bool,
    /// Common options.
    #[command(flatten)]
    pub common: Common,
}

/// A user as `--format json` prints it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonUser<'a> {
    uid: &'a str,
    dn: Option<&'a str>,
    disabled: bool,
    cn: &'a str,
    mail: Option<&'a str>,
    upn: Option<&'a str>,
    stable_id: Option<&'a str>,
    attributes: &'a std::collections::BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    groups: Option<&'a BTreeSet<String>>,
}

impl<'a> JsonUser<'a> {
    fn new(u: &'a DirectoryUser, groups: Option<&'a BTreeSet<String>>) -> Self {
        JsonUser {
            uid: &u.uid,
            dn: u.dn.as_deref(),
            disabled: u.disabled,
            cn: &u.cn,
            mail: u.mail.as_deref(),
            upn: u.upn.as_deref(),
            stable_id: u.stable_id.as_deref(),
            attributes: &u.attributes,
            groups,
        }
    }
}

fn pick<'a>(
    policy: &'a PolicySet,
    name: Option<&str>,
) -> anyhow::Result<&'a Object<DirectorySpec>> {
    let names = || {
        policy
            .directories
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    };
    match name {
        Some(n) => policy
            .directories
            .get(n)
            .with_context(|| format!("no Directory named {n:?} (have: {})", names())),
        None => {
            let mut it = policy.directories.values();
            match (it.next(), it.next()) {
                (Some(d), None) => Ok(d),
                (None, _) => bail!("the policy has no Directory"),
                _ => bail!(
                    "the policy has several Directories ({}): choose one with --directory",
                    names()
                ),
            }
        }
    }
}

fn file_snapshot(d: &Object<DirectorySpec>) -> anyhow::Result<Option<DirectorySnapshot>> {
    match &d.spec {
        DirectorySpec::File(f) => Ok(Some(read_file_directory(&d.resolve_path(&f.path))?)),
        DirectorySpec::Ldap(_) => Ok(None),
    }
}

fn ldap_of(d: &Object<DirectorySpec>) -> anyhow::Result<LdapDirectory> {
    LdapDirectory::from_policy(d).with_context(|| format!("{} is not an ldap Directory", d.name))
}

/// Runs `keyfleet directory`.
pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let policy = match policy::load_policy_set(&global.policy_dir) {
        Ok(p) => p,
        Err(d) => {
            eprintln!("{d}");
            return Ok(ExitCode::from(EXIT_FAILURE));
        }
    };
    match args.command {
        Sub::Show(a) => show(&policy, a),
        Sub::Members(a) => members(&policy, a),
    }
}

fn show(policy: &PolicySet, a: ShowArgs) -> anyhow::Result<ExitCode> {
    let d = pick(policy, a.common.directory.as_deref())?;
    let found = match file_snapshot(d)? {
        Some(s) => s.users.get(&a.user).map(|u| {
            let groups = s
                .groups_of(&a.user)
                .into_iter()
                .map(str::to_string)
                .collect();
            (u.to_user(), groups)
        }),
        None => {
            let dir = ldap_of(d)?;
            let vars = ObserveRequest::for_directory(policy, &d.name).vars;
            ldap::block_on(dir.find_user(&a.user, &vars))??.map(|f| (f.user, f.groups))
        }
    };
    let Some((user, groups)) = found else {
        eprintln!("no user {:?} in directory {}", a.user, d.name);
        return Ok(ExitCode::from(EXIT_FAILURE));
    };
    match a.common.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&JsonUser::new(&user, Some(&groups)))?
        ),
        Format::Text => {
            println!("uid:       {}", user.uid);
            if let Some(dn) = &user.dn {
                println!("dn:        {dn}");
            }
            println!("cn:        {}", user.cn);
            if let Some(m) = &user.mail {
                println!("mail:      {m}");
            }
            if let Some(u) = &user.upn {
                println!("upn:       {u}");
            }
            if let Some(id) = &user.stable_id {
                println!("stable id: {id}");
            }
            println!("disabled:  {}", if user.disabled { "yes" } else { "no" });
            for (k, v) in &user.attributes {
                println!("attr {k}: {v}");
            }
            let list: Vec<&str> = groups.iter().map(String::as_str).collect();
            println!("groups:    {}", list.join(", "));
        }
    }
    Ok(ExitCode::from(EXIT_OK))
}

fn members(policy: &PolicySet, a: MembersArgs) -> anyhow::Result<ExitCode> {
    let d = pick(policy, a.common.directory.as_deref())?;
    let snapshot = match file_snapshot(d)? {
        Some(s) => s,
        None => {
            let dir = ldap_of(d)?;
            let mut req = ObserveRequest::for_directory(policy, &d.name);
            req.nested_groups = [a.group.clone()].into();
            ldap::block_on(dir.observe(&req))??
        }
    };
    if !snapshot.complete {
        eprintln!(
            "directory {}: observation incomplete: {}",
            d.name,
            snapshot.problems.join("; ")
        );
        return Ok(ExitCode::from(EXIT_FAILURE));
    }
    if !snapshot.groups.contains_key(&a.group) {
        eprintln!("no group {:?} in directory {}", a.group, d.name);
        return Ok(ExitCode::from(EXIT_FAILURE));
    }
    let uids = snapshot.members(&a.group, !a.direct);
    let users: Vec<DirectoryUser> = uids
        .iter()
        .filter_map(|u| snapshot.users.get(u))
        .map(|u| u.to_user())
        .collect();
    match a.common.format {
        Format::Json => {
            let list: Vec<JsonUser<'_>> = users.iter().map(|u| JsonUser::new(u, None)).collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        Format::Text => {
            for u in &users {
                println!(
                    "{}\t{}\t{}{}",
                    u.uid,
                    u.cn,
                    u.dn.as_deref().unwrap_or("-"),
                    if u.disabled { "\t(disabled)" } else { "" }
                );
            }
            eprintln!(
                "{} members of {} in directory {}",
                users.len(),
                a.group,
                d.name
            );
        }
    }
    Ok(ExitCode::from(EXIT_OK))
}
