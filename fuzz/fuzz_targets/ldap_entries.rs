//! Fuzz target: turning LDAP search entries into users and groups (login names, DNs,
//! userAccountControl, objectGUID, primary-group SIDs, memberOf and member lists, in-chain
//! answers) must never panic, whatever the server sends. The input is LDIF-like: the first
//! byte picks the flavour (even: OpenLDAP, odd: Active Directory); then entries separated by a
//! blank line, each a `dn: ...` line and `attribute: value` lines (values are raw bytes). An
//! entry whose objectClass contains "group" is a group, any other a user.
#![no_main]

use std::collections::BTreeSet;

use keyfleet::observe::ldap::build::{Builder, Profile, RawEntry};
use keyfleet::policy::model::LdapFlavour;
use keyfleet::policy::template::Var;

fn entry(lines: &[&[u8]]) -> RawEntry {
    let dn = lines.first().copied().unwrap_or_default();
    let mut e = RawEntry {
        dn: String::from_utf8_lossy(dn.strip_prefix(b"dn: ").unwrap_or(dn)).into_owned(),
        ..RawEntry::default()
    };
    for line in lines.iter().skip(1) {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        e.attrs.entry(name).or_default().push(value.to_vec());
    }
    e
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&flavour, text)) = data.split_first() else {
        return;
    };
    let flavour = if flavour % 2 == 0 {
        LdapFlavour::Openldap
    } else {
        LdapFlavour::ActiveDirectory
    };
    let vars: BTreeSet<Var> = [Var::Mail, Var::Upn, Var::Attr("employeeNumber".into())]
        .into_iter()
        .collect();
    let mut b = Builder::new(Profile::new(flavour, None, None), &vars);
    let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
    for e in lines
        .split(|l| l.is_empty())
        .filter(|c| !c.is_empty())
        .map(entry)
    {
        if e.all("objectclass")
            .any(|c| c.to_ascii_lowercase().contains("group"))
        {
            let members: Vec<String> = e.all("member").map(str::to_string).collect();
            if let Some(name) = e.first("cn").map(str::to_string) {
                b.add_transitive(&name, &members);
            }
            b.add_group(e);
        } else {
            b.add_user(&e);
        }
    }
    let _ = b.finish();
});
