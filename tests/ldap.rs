//! The `ldap` Directory kind against a real slapd on 127.0.0.1: observation with nested, cyclic,
//! disabled and hostile entries; entitlements, plan and apply end to end; an observation cut
//! by killing slapd plans no revocation; TLS (good CA, wrong name, unknown CA, StartTLS);
//! wrong password; change tokens; `directory show/members`; `validate --online`.

use std::collections::BTreeSet;
use std::path::Path;

use keyfleet::observe::ldap::{LdapDirectory, ObserveRequest, block_on};
use keyfleet::policy::model::{LdapDirectorySpec, LdapFlavour, LdapTls};
use keyfleet::policy::secret::SecretRef;

use crate::harness::slapd::{ADMIN_DN, CuttingProxy, SUFFIX, Slapd, SlapdOptions};
use crate::harness::testca::TestCa;
use crate::harness::{PolicyDir, Run, keyfleet};

const PEOPLE: &str = "\
dn: uid=alice,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: alice
cn: Alice Andersen
sn: Andersen
mail: alice@example.org
employeeNumber: 1001

dn: uid=bob,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: bob
cn: Bob Brown
sn: Brown
mail: bob@example.org
employeeNumber: 1002
pwdAccountLockedTime: 000001010000Z

dn: uid=carol,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: carol
cn: Carol Clarke
sn: Clarke
mail: carol@example.org
employeeNumber: 1003

dn: cn=Müller\\, Jörg \\+ Co \\\\ Ltd,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: jörg
cn: Müller, Jörg + Co \\ Ltd
sn: Müller
mail: joerg@example.org
employeeNumber: 1004

dn: cn=hostile,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: *)(uid=*
cn: hostile
sn: Hostile
mail: hostile@example.org
employeeNumber: 1005

dn: uid=dave,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: dave
cn: Dave Dawson
sn: Dawson
mail: dave@example.org
employeeNumber: 1006
";

const GROUPS: &str = "\
dn: cn=staff,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: staff
member: uid=alice,ou=people,dc=example,dc=org
member: cn=eng,ou=groups,dc=example,dc=org

dn: cn=eng,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: eng
member: uid=carol,ou=people,dc=example,dc=org
member: cn=M\\C3\\BCller\\2C J\\C3\\B6rg \\2B Co \\5C Ltd,OU=People,dc=example,dc=org
member: cn=staff,ou=groups,dc=example,dc=org

dn: cn=hostiles,ou=groups,dc=example,dc=org
objectClass: groupOfUniqueNames
cn: hostiles
uniqueMember: cn=hostile,ou=people,dc=example,dc=org
uniqueMember: uid=bob,ou=people,dc=example,dc=org
";

/// The policy around an ldap Directory at `url` (extra lines go under `ldap:`).
pub(crate) fn policy(url: &str, extra: &str) -> PolicyDir {
    let d = PolicyDir::empty();
    d.write("bind.pw", "secret\n");
    d.write(
        "policy.yaml",
        &format!(
            "\
apiVersion: keyfleet.dev/v1
kind: CertificateAuthority
metadata: {{name: lab}}
spec:
  local: {{subject: 'CN=Lab CA,O=Example'}}
---
apiVersion: keyfleet.dev/v1
kind: Directory
metadata: {{name: corp}}
spec:
  ldap:
    url: {url}
    flavour: openldap
    bindDn: {ADMIN_DN}
    bindPassword: {{file: bind.pw}}
    baseDn: {SUFFIX}
    pageSize: 2
    allowCleartextBind: true
{extra}---
apiVersion: keyfleet.dev/v1
kind: CardTemplate
metadata: {{name: employee}}
spec:
  cardType: virtual
  certificates:
    - name: auth
      slot: 9A
      authority: lab
      profile: piv-auth
      keyAlgorithm: ecc-p256
      subject: 'CN=${{user.cn}},SERIALNUMBER=${{user.attr.employeeNumber}},O=Example'
      subjectAltNames:
        - email: '${{user.mail}}'
---
apiVersion: keyfleet.dev/v1
kind: Assignment
metadata: {{name: staff}}
spec:
  directory: corp
  template: employee
  groups:
    - {{name: staff, nested: true}}
    - {{name: hostiles}}
---
apiVersion: keyfleet.dev/v1
kind: CardStock
metadata: {{name: virtual}}
spec:
  cardType: virtual
  autoBind: true
  virtual: {{}}
---
apiVersion: keyfleet.dev/v1
kind: Settings
metadata: {{name: settings}}
spec:
  safety: {{maxRevocations: 10, maxRevocationPercent: 100}}
"
        ),
    );
    d
}

fn run_in(d: &PolicyDir, args: &[&str]) -> Run {
    let dir = d.path().display().to_string();
    let state = d.path().join("state").display().to_string();
    let mut all = vec!["-C", dir.as_str(), "--state-dir", state.as_str()];
    all.extend_from_slice(args);
    keyfleet(&all)
}

pub(crate) fn loaded_slapd(opts: SlapdOptions) -> Slapd {
    let s = Slapd::start(opts);
    s.ldapadd(PEOPLE);
    s.ldapadd(GROUPS);
    s
}

fn dir_for(url: &str, base: &Path, tls: Option<LdapTls>, password_file: &str) -> LdapDirectory {
    LdapDirectory {
        name: "corp".into(),
        spec: LdapDirectorySpec {
            url: url.into(),
            flavour: LdapFlavour::Openldap,
            bind_dn: ADMIN_DN.into(),
            bind_password: SecretRef::File {
                file: password_file.into(),
            },
            base_dn: SUFFIX.into(),
            user_filter: None,
            group_filter: None,
            tls,
            allow_cleartext_bind: true,
            page_size: Some(2),
            poll_interval: None,
            connect_timeout: None,
            operation_timeout: None,
        },
        base_dir: base.to_path_buf(),
    }
}

#[test]
fn openldap_observation_entitlements_and_operator_views() {
    let slapd = loaded_slapd(SlapdOptions {
        syncprov: true,
        ..SlapdOptions::default()
    });
    let d = policy(&slapd.url(), "");

    // Observation and desired state through the library, as `plan` does it.
    let env = keyfleet::runtime::load(d.path(), None).expect("policy loads");
    let observed = keyfleet::runtime::observe_directories(&env.policy);
    let snapshot = observed["corp"].as_ref().expect("observed");
    assert!(snapshot.complete, "{:?}", snapshot.problems);
    assert_eq!(snapshot.users.len(), 6);
    let jorg = &snapshot.users.get("jörg").unwrap().to_user();
    assert_eq!(jorg.cn, "Müller, Jörg + Co \\ Ltd");
    assert_eq!(jorg.attributes["employeeNumber"], "1004");
    assert!(snapshot.users.get("bob").unwrap().to_user().disabled);
    assert!(!snapshot.users.get("alice").unwrap().to_user().disabled);
    let direct: Vec<_> = snapshot.members("staff", false).into_iter().collect();
    assert_eq!(direct, ["alice"]);
    let nested: Vec<_> = snapshot.members("staff", true).into_iter().collect();
    assert_eq!(nested, ["alice", "carol", "jörg"], "nested through a cycle");

    let desired = keyfleet::desired::compute(&env.policy, &observed);
    assert!(desired.complete);
    assert!(desired.errors.is_empty(), "{:?}", desired.errors);
    let entitled: BTreeSet<&str> = desired
        .credentials
        .keys()
        .map(|(u, _)| u.as_str())
        .collect();
    assert_eq!(
        entitled,
        BTreeSet::from(["*)(uid=*", "alice", "bob", "carol", "jörg"])
    );
    let cred = &desired.credentials[&("jörg".to_string(), "employee".to_string())];
    let subject = cred
        .certificates
        .values()
        .next()
        .expect("cert")
        .subject
        .to_string();
    assert!(
        subject.contains("Müller\\, Jörg \\+ Co \\\\ Ltd"),
        "subject escaped per RFC 4514: {subject}"
    );
    assert!(desired.credentials[&("bob".to_string(), "employee".to_string())].user_disabled);

    // Operators see the same: a user looked up with an escaped filter, transitive members.
    let r = run_in(&d, &["directory", "show", "*)(uid=*", "--format", "json"]);
    r.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["uid"], "*)(uid=*");
    assert_eq!(v["groups"], serde_json::json!(["hostiles"]));
    let r = run_in(&d, &["directory", "show", "jörg"]);
    r.expect_code(0)
        .stdout_has("Müller, Jörg + Co \\ Ltd")
        .stdout_has("eng");
    run_in(&d, &["directory", "show", "*"]).expect_code(1);
    let r = run_in(&d, &["directory", "members", "staff", "--format", "json"]);
    r.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    let uids: Vec<&str> = v
        .as_array()
        .expect("list")
        .iter()
        .map(|u| u["uid"].as_str().expect("uid"))
        .collect();
    assert_eq!(uids, ["alice", "carol", "jörg"]);
    assert_eq!(v[2]["attributes"]["employeeNumber"], "1004");
    assert_eq!(v[0]["disabled"], false);
    assert!(v[0]["dn"].as_str().expect("dn").starts_with("uid=alice,"));
    let r = run_in(
        &d,
        &["directory", "members", "hostiles", "--format", "json"],
    );
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v[1]["uid"], "bob");
    assert_eq!(v[1]["disabled"], true);
    run_in(&d, &["directory", "members", "staff", "--direct"])
        .expect_code(0)
        .stdout_has("alice");
    run_in(&d, &["directory", "members", "nope"]).expect_code(1);

    // Change detection: contextCSN moves with a change and only then.
    let dir = LdapDirectory::from_policy(&env.policy.directories["corp"]).expect("ldap");
    let req = ObserveRequest::for_directory(&env.policy, "corp");
    let t1 = block_on(dir.change_token(&req))
        .expect("rt")
        .expect("token");
    let t2 = block_on(dir.change_token(&req))
        .expect("rt")
        .expect("token");
    assert!(t1.starts_with("csn:"), "{t1}");
    assert_eq!(t1, t2);
    slapd.ldapmodify(
        "dn: uid=dave,ou=people,dc=example,dc=org\nchangetype: modify\nreplace: mail\nmail: d@example.org\n",
    );
    let t3 = block_on(dir.change_token(&req))
        .expect("rt")
        .expect("token");
    assert_ne!(t1, t3);
}

#[test]
fn content_hash_token_without_context_csn() {
    let slapd = loaded_slapd(SlapdOptions::default());
    let pw = tempfile::tempdir().expect("tmp");
    std::fs::write(pw.path().join("pw"), "secret").expect("pw");
    let dir = dir_for(&slapd.url(), pw.path(), None, "pw");
    let req = ObserveRequest::default();
    let t1 = block_on(dir.change_token(&req))
        .expect("rt")
        .expect("token");
    assert!(t1.starts_with("sha256:"), "{t1}");
    assert_eq!(
        t1,
        block_on(dir.change_token(&req)).expect("rt").expect("t")
    );
    slapd.ldapmodify(
        "dn: cn=hostiles,ou=groups,dc=example,dc=org\nchangetype: modify\ndelete: uniqueMember\nuniqueMember: uid=bob,ou=people,dc=example,dc=org\n",
    );
    assert_ne!(
        t1,
        block_on(dir.change_token(&req)).expect("rt").expect("t")
    );
}

#[test]
fn apply_issues_and_a_cut_observation_revokes_nothing() {
    let slapd = loaded_slapd(SlapdOptions::default());
    let d = policy(&slapd.url(), "");
    let r = run_in(&d, &["apply", "--yes"]);
    r.expect_code(0);
    let inv = run_in(&d, &["inventory", "--format", "json"]);
    inv.expect_code(0);
    for uid in ["alice", "carol", "jörg", "*)(uid=*"] {
        assert!(
            inv.stdout.contains(&format!("\"{uid}\"")),
            "{uid} has a card:\n{}",
            inv.stdout
        );
    }
    assert!(!inv.stdout.contains("\"dave\""), "dave is not entitled");
    run_in(&d, &["plan"]).expect_code(0);

    // alice leaves: a complete observation plans her revocation.
    slapd.ldapmodify(&format!(
        "dn: cn=staff,ou=groups,{SUFFIX}\nchangetype: modify\ndelete: member\nmember: uid=alice,ou=people,{SUFFIX}\n"
    ));
    let r = run_in(&d, &["plan", "--format", "json"]);
    r.expect_code(2);
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(plan["complete"], true);
    let revokes: Vec<&str> = plan["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter(|a| a["kind"] == "revoke")
        .map(|a| a["user"].as_str().expect("user"))
        .collect();
    assert_eq!(revokes, ["alice"]);

    // slapd is killed while the users are being read: nothing may be revoked.
    let proxy = CuttingProxy::start(slapd.port, 400, slapd.killer());
    let text = std::fs::read_to_string(d.path().join("policy.yaml"))
        .expect("policy")
        .replace(&slapd.url(), &format!("ldap://127.0.0.1:{}", proxy.port));
    std::fs::write(d.path().join("policy.yaml"), text).expect("rewrite policy");
    let r = run_in(&d, &["plan", "--format", "json"]);
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(plan["complete"], false, "{}", r.stdout);
    assert!(
        plan["actions"]
            .as_array()
            .expect("actions")
            .iter()
            .all(|a| a["kind"] != "revoke"),
        "{}",
        r.stdout
    );
    assert!(plan["withheldRevocations"].as_u64().expect("n") >= 1);
    assert!(proxy.forwarded.load(std::sync::atomic::Ordering::SeqCst) >= 400);
    let r = run_in(&d, &["plan"]);
    r.stdout_has("Observation incomplete: no revocation planned");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", slapd.port)).is_err(),
        "slapd was killed mid-observation"
    );
}

#[test]
fn tls_verification_and_bind_errors() {
    let ca = TestCa::new("Keyfleet Test CA");
    let slapd = loaded_slapd(SlapdOptions {
        tls: Some(ca.server(&["localhost"])),
        ..SlapdOptions::default()
    });
    let tls_port = slapd.tls_port.expect("tls port");
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(tmp.path().join("ca.pem"), &ca.cert_pem).expect("ca");
    std::fs::write(tmp.path().join("other.pem"), TestCa::new("Other").cert_pem).expect("ca");
    std::fs::write(tmp.path().join("pw"), "secret\n").expect("pw");
    std::fs::write(tmp.path().join("bad"), "wrong").expect("pw");
    let tls = |ca_file: &str| {
        Some(LdapTls {
            ca_file: Some(ca_file.into()),
            insecure_skip_verify: false,
        })
    };
    let observe = |dir: LdapDirectory| block_on(async move { dir.check().await }).expect("rt");

    // LDAPS and StartTLS with the right CA and name.
    let ldaps = format!("ldaps://localhost:{tls_port}");
    observe(dir_for(&ldaps, tmp.path(), tls("ca.pem"), "pw")).expect("ldaps with the test CA");
    let starttls = format!("ldap://localhost:{}", slapd.port);
    observe(dir_for(&starttls, tmp.path(), tls("ca.pem"), "pw")).expect("StartTLS");
    let snap = block_on(
        dir_for(&ldaps, tmp.path(), tls("ca.pem"), "pw").observe(&ObserveRequest::default()),
    )
    .expect("rt")
    .expect("observed over TLS");
    assert!(snap.complete);
    assert_eq!(snap.users.len(), 6);

    // The certificate names localhost, not 127.0.0.1.
    let wrong_name = format!("ldaps://127.0.0.1:{tls_port}");
    let e = observe(dir_for(&wrong_name, tmp.path(), tls("ca.pem"), "pw")).unwrap_err();
    assert!(e.to_string().contains("not valid for name"), "{e}");
    // A CA that did not issue it.
    let e = observe(dir_for(&ldaps, tmp.path(), tls("other.pem"), "pw")).unwrap_err();
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    let e = observe(dir_for(&starttls, tmp.path(), tls("other.pem"), "pw")).unwrap_err();
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    // Only the loudly named switch accepts it.
    let insecure = Some(LdapTls {
        ca_file: None,
        insecure_skip_verify: true,
    });
    observe(dir_for(&wrong_name, tmp.path(), insecure, "pw")).expect("insecureSkipVerify");

    // Wrong password: a clear error, from the library and from `validate --online`.
    let e = observe(dir_for(&slapd.url(), tmp.path(), None, "bad")).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("invalidCredentials"), "{msg}");
    assert!(msg.contains(ADMIN_DN), "{msg}");
    let d = policy(&slapd.url(), "");
    d.validate(&["--online"]).expect_code(0);
    d.write("bind.pw", "wrong\n");
    d.validate(&["--online"])
        .expect_code(1)
        .stderr_has("Directory/corp")
        .stderr_has("invalidCredentials");
    d.validate(&["--online", "--format", "json"])
        .expect_code(1)
        .stdout_has("\"directory-unreachable\"");
    let r = run_in(&d, &["plan"]);
    r.stdout_has("Observation incomplete");
}

/// The `active-directory` flavour against Samba's AD DC: in-chain nesting, userAccountControl,
/// objectGUID, UPN, LDAPS and StartTLS with hostname checking, referrals not chased, and a
/// disabled account suspending the credential end to end. One DC for all of it (ports 389/636
/// are fixed).
#[test]
fn active_directory_against_samba() {
    use crate::harness::samba::{ADMIN_PW, SambaDc};
    let dc = SambaDc::start();
    dc.tool(&[
        "user",
        "add",
        "alice",
        "Al1ce-Passw0rd!",
        "--given-name=Alice",
        "--surname=Example",
        "--mail-address=alice@corp.example.org",
    ]);
    dc.tool(&[
        "user",
        "add",
        "bob",
        "B0b-Passw0rd!!",
        "--mail-address=bob@corp.example.org",
    ]);
    dc.tool(&[
        "user",
        "add",
        "carol",
        "C4rol-Passw0rd!",
        "--mail-address=carol@corp.example.org",
    ]);
    dc.tool(&["group", "add", "piv-users"]);
    dc.tool(&["group", "add", "vpn-admins"]);
    dc.tool(&["group", "addmembers", "piv-users", "vpn-admins"]);
    dc.tool(&["group", "addmembers", "vpn-admins", "alice,carol"]);
    dc.tool(&["group", "addmembers", "piv-users", "bob"]);

    let d = PolicyDir::empty();
    d.write("bind.pw", ADMIN_PW);
    d.write("ad-ca.pem", &dc.ca_pem);
    let policy = |url: &str| {
        crate::harness::samba::ad_policy_head(url)
            + "\
apiVersion: keyfleet.dev/v1
kind: CardTemplate
metadata: {name: logon}
spec:
  cardType: virtual
  certificates:
    - name: auth
      slot: 9A
      authority: lab
      profile: piv-auth
      keyAlgorithm: ecc-p256
      subject: 'CN=${user.cn},O=Example'
      subjectAltNames:
        - upn: '${user.upn}'
---
apiVersion: keyfleet.dev/v1
kind: Assignment
metadata: {name: piv}
spec:
  directory: ad
  template: logon
  groups: [{name: piv-users, nested: true}]
---
apiVersion: keyfleet.dev/v1
kind: CardStock
metadata: {name: virtual}
spec: {cardType: virtual, autoBind: true, virtual: {}}
"
    };
    // StartTLS first, then LDAPS for the rest.
    d.write("policy.yaml", &policy("ldap://localhost"));
    d.validate(&["--online"]).expect_code(0);
    d.write("policy.yaml", &policy("ldaps://localhost"));
    d.validate(&["--online"]).expect_code(0);
    let env = keyfleet::runtime::load(d.path(), None).expect("policy loads");
    let observed = keyfleet::runtime::observe_directories(&env.policy);
    let s = observed["ad"].as_ref().expect("observed");
    // The domain root also answers with referrals (Configuration, ...): skipped, not chased,
    // and not a failure.
    assert!(s.complete, "{:?}", s.problems);
    let alice = &s.users.get("alice").unwrap().to_user();
    assert_eq!(alice.upn.as_deref(), Some("alice@corp.example.org"));
    assert_eq!(alice.cn, "Alice Example");
    let guid = alice.stable_id.as_deref().expect("objectGUID");
    assert_eq!(guid.len(), 36, "{guid}");
    assert!(
        s.users.get("krbtgt").unwrap().to_user().disabled,
        "krbtgt is disabled in every AD"
    );
    assert!(!s.users.get("carol").unwrap().to_user().disabled);
    let direct: Vec<_> = s.members("piv-users", false).into_iter().collect();
    assert_eq!(direct, ["bob"]);
    let nested: Vec<_> = s.members("piv-users", true).into_iter().collect();
    assert_eq!(nested, ["alice", "bob", "carol"]);
    assert!(
        s.transitive.contains_key("piv-users"),
        "asked the server (in-chain)"
    );

    // Hostname checking: the certificate names localhost only.
    let wrong = policy("ldaps://127.0.0.1");
    d.write("policy.yaml", &wrong);
    d.validate(&["--online"])
        .expect_code(1)
        .stderr_has("not valid for name");
    d.write("policy.yaml", &policy("ldaps://localhost"));

    let r = run_in(&d, &["directory", "show", "alice", "--format", "json"]);
    r.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["stableId"], guid);
    // Domain Users is alice's primary group, and the builtin Users group nests it.
    assert_eq!(
        v["groups"],
        serde_json::json!(["Domain Users", "Users", "piv-users", "vpn-admins"])
    );
    let r = run_in(&d, &["directory", "members", "piv-users"]);
    r.expect_code(0)
        .stdout_has("alice")
        .stdout_has("bob")
        .stdout_has("carol");

    // End to end: issue, then disabling carol's account suspends her credential.
    run_in(&d, &["apply", "--yes"]).expect_code(0);
    run_in(&d, &["plan"]).expect_code(0);
    dc.tool(&["user", "disable", "carol"]);
    let r = run_in(&d, &["plan", "--format", "json"]);
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    let actions: Vec<(String, String)> = plan["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| (a["kind"].to_string(), a["user"].to_string()))
        .collect();
    assert_eq!(
        actions,
        [("\"suspend\"".to_string(), "\"carol\"".to_string())],
        "{}",
        r.stdout
    );

    // Change detection: highestCommittedUSN.
    let dir = LdapDirectory::from_policy(&env.policy.directories["ad"]).expect("ldap");
    let req = ObserveRequest::for_directory(&env.policy, "ad");
    let t1 = block_on(dir.change_token(&req))
        .expect("rt")
        .expect("token");
    assert!(t1.starts_with("usn:"), "{t1}");
    dc.tool(&["user", "enable", "carol"]);
    let t2 = block_on(dir.change_token(&req))
        .expect("rt")
        .expect("token");
    assert_ne!(t1, t2);

    // Primary groups, on the same DC (its ports are fixed: one DC at a time).
    crate::ldap_gaps::ad_primary_groups(&dc);
}

/// A server-side size limit truncates the paged search: the snapshot is incomplete, the plan
/// revokes nothing, and users seen before the truncation are still entitled.
#[test]
fn truncated_search_is_incomplete_but_still_issues() {
    let slapd = loaded_slapd(SlapdOptions {
        sizelimit: Some(3),
        ..SlapdOptions::default()
    });
    slapd.ldapmodify(&format!(
        "dn: uid=alice,ou=people,{SUFFIX}\nchangetype: modify\nadd: userPassword\nuserPassword: alice-pw\n"
    ));
    let d = policy(&slapd.url(), "");
    let text = std::fs::read_to_string(d.path().join("policy.yaml"))
        .expect("policy")
        .replace(
            &format!("bindDn: {ADMIN_DN}"),
            &format!("bindDn: uid=alice,ou=people,{SUFFIX}"),
        );
    d.write("policy.yaml", &text);
    d.write("bind.pw", "alice-pw");
    let env = keyfleet::runtime::load(d.path(), None).expect("policy loads");
    let observed = keyfleet::runtime::observe_directories(&env.policy);
    let s = observed["corp"]
        .as_ref()
        .expect("a partial snapshot, not an error");
    assert!(!s.complete);
    assert_eq!(s.users.len(), 3, "the first pages were kept");
    assert!(
        s.problems.iter().any(|p| p.contains("sizeLimitExceeded")),
        "{:?}",
        s.problems
    );
    let desired = keyfleet::desired::compute(&env.policy, &observed);
    assert!(!desired.complete);
    assert!(
        desired
            .observation_errors
            .iter()
            .any(|e| e.contains("sizeLimitExceeded")),
        "{:?}",
        desired.observation_errors
    );
    // Groups were still read: alice and carol (seen) are entitled through staff.
    let entitled: BTreeSet<&str> = desired
        .credentials
        .keys()
        .map(|(u, _)| u.as_str())
        .collect();
    assert_eq!(entitled, BTreeSet::from(["alice", "bob", "carol"]));
    let r = run_in(&d, &["plan", "--format", "json"]);
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(plan["complete"], false);
    let actions: BTreeSet<(&str, &str)> = plan["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().expect("kind"),
                a["user"].as_str().expect("user"),
            )
        })
        .collect();
    assert!(actions.contains(&("issue", "alice")), "{actions:?}");
    assert!(actions.iter().all(|(k, _)| *k != "revoke"));
}

/// `directory show/members` work for the file directory too, and name the directory to use
/// when there are several.
#[test]
fn directory_views_of_a_file_directory() {
    let d = PolicyDir::valid();
    let r = run_in(&d, &["directory", "show", "alice", "--format", "json"]);
    r.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["uid"], "alice");
    assert_eq!(v["disabled"], false);
    assert_eq!(v["groups"], serde_json::json!(["staff"]));
    let r = run_in(&d, &["directory", "members", "staff", "--format", "json"]);
    r.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v[0]["uid"], "alice");
    assert!(v[0]["attributes"].is_object());
    run_in(&d, &["directory", "show", "mallory"]).expect_code(1);
    d.write(
        "second.yaml",
        "apiVersion: keyfleet.dev/v1\nkind: Directory\nmetadata: {name: other}\nspec:\n  file: {path: people.yaml}\n",
    );
    run_in(&d, &["directory", "members", "staff"])
        .expect_code(1)
        .stderr_has("--directory");
    run_in(
        &d,
        &["directory", "members", "staff", "--directory", "other"],
    )
    .expect_code(0);
}
