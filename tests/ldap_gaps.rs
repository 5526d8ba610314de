//! The ldap Directory kind, continued: configurable timeouts against a server that never
//! answers, assignment filters evaluated by a real slapd (hostile values in the data change
//! nothing), and Active Directory primary groups against Samba (called from the AD test in
//! `ldap.rs`, which owns the one DC).

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use std::sync::atomic::Ordering;

use keyfleet::observe::ldap::{LdapDirectory, ObserveRequest, block_on};

use crate::harness::slapd::{CuttingProxy, SUFFIX, SlapdOptions};
use crate::harness::{PolicyDir, Run, keyfleet};
use crate::ldap::{loaded_slapd, policy};

fn run_in(d: &PolicyDir, args: &[&str]) -> Run {
    let dir = d.path().display().to_string();
    let state = d.path().join("state").display().to_string();
    let mut all = vec!["-C", dir.as_str(), "--state-dir", state.as_str()];
    all.extend_from_slice(args);
    keyfleet(&all)
}

/// Rewrites policy.yaml of `d` with `f`.
fn edit(d: &PolicyDir, f: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(d.path().join("policy.yaml")).expect("policy");
    d.write("policy.yaml", &f(text));
}

/// The 1-based line of policy.yaml holding `needle`.
fn line_of(d: &PolicyDir, needle: &str) -> usize {
    let text = std::fs::read_to_string(d.path().join("policy.yaml")).expect("policy");
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .expect("needle in policy.yaml")
}

fn plan_json(d: &PolicyDir) -> (serde_json::Value, Run) {
    let r = run_in(d, &["plan", "--format", "json"]);
    let v = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("plan json: {e}\n{}\n{}", r.stdout, r.stderr));
    (v, r)
}

fn actions(plan: &serde_json::Value) -> BTreeSet<(String, String)> {
    plan["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().expect("kind").to_string(),
                a["user"].as_str().expect("user").to_string(),
            )
        })
        .collect()
}

/// A server that accepts TCP and never says a word: with `operationTimeout: 1s` the pass
/// gives up within seconds with an error naming the server, and revokes nothing.
#[test]
fn silent_server_times_out_quickly_and_revokes_nothing() {
    let slapd = loaded_slapd(SlapdOptions::default());
    let d = policy(&slapd.url(), "");
    run_in(&d, &["apply", "--yes"]).expect_code(0);

    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        // Accept and hold every connection open without reading or writing.
        let mut held = Vec::new();
        for c in silent.incoming() {
            held.push(c);
        }
    });
    let url = format!("ldap://127.0.0.1:{port}");
    edit(&d, |t| {
        t.replace(&slapd.url(), &url).replace(
            "    pageSize: 2\n",
            "    pageSize: 2\n    operationTimeout: 1s\n",
        )
    });
    d.validate(&[]).expect_code(0);
    let started = Instant::now();
    let (plan, r) = plan_json(&d);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(plan["complete"], false, "{}", r.stdout);
    assert!(
        actions(&plan).iter().all(|(k, _)| k != "revoke"),
        "{}",
        r.stdout
    );
    assert!(plan["withheldRevocations"].as_u64().expect("n") >= 1);
    let errors = plan["observationErrors"].to_string();
    assert!(
        errors.contains(&format!("{url}: bind timed out after 1 s")),
        "{errors}"
    );
    r.stderr_has("timed out after 1 s");

    // Out-of-range timeouts are refused at validation, at their line.
    edit(&d, |t| {
        t.replace(
            "operationTimeout: 1s",
            "operationTimeout: 0s\n    connectTimeout: 1d",
        )
    });
    let r = d.validate(&[]);
    r.expect_code(1)
        .stderr_has(&format!(
            "{}:{}: Directory/corp: spec.ldap.operationTimeout: operationTimeout is 0s: it must be at least 1s and at most 1h",
            d.file("policy.yaml"),
            line_of(&d, "operationTimeout")
        ))
        .stderr_has("connectTimeout is 1d: it must be at least 1s and at most 5m");
}

const FILTER: &str = "(employeeType=contractor)";

/// An assignment `filter` is searched by the server within the user filter; the users it
/// matches are entitled, exactly those, whatever the data holds; it can also take an
/// entitlement away; a filter search cut midway makes the observation incomplete; a filter
/// that does not parse is refused at validation with its line.
#[test]
fn assignment_filter_entitles_exactly_the_matching_users() {
    let slapd = loaded_slapd(SlapdOptions::default());
    let people = format!("ou=people,{SUFFIX}");
    let set_type = |rdn: &str, value: &str| {
        slapd.ldapmodify(&format!(
            "dn: {rdn},{people}\nchangetype: modify\nreplace: employeeType\nemployeeType: {value}\n"
        ));
    };
    set_type("uid=carol", "contractor");
    set_type("uid=dave", "Contractor");
    // The user whose uid is `*)(uid=*` is a contractor; values crafted to widen the filter
    // are just values.
    set_type("cn=hostile", "contractor");
    set_type("uid=alice", "x)(employeeType=contractor");
    set_type("uid=bob", "*");
    let d = policy(&slapd.url(), "");
    edit(&d, |t| {
        t.replace(
            "  groups:\n    - {name: staff, nested: true}\n    - {name: hostiles}\n",
            &format!("  filter: '{FILTER}'\n"),
        )
    });
    d.validate(&[]).expect_code(0);

    let env = keyfleet::runtime::load(d.path(), None).expect("policy loads");
    let observed = keyfleet::runtime::observe_directories(&env.policy);
    let s = observed["corp"].as_ref().expect("observed");
    assert!(s.complete, "{:?}", s.problems);
    let matched: BTreeSet<&str> = s.filter_matches(FILTER).expect("searched").collect();
    // employeeType matches case-insensitively (caseIgnoreMatch): dave's "Contractor" counts.
    let expected = BTreeSet::from(["*)(uid=*", "carol", "dave"]);
    assert_eq!(matched, expected);
    let desired = keyfleet::desired::compute(&env.policy, &observed);
    assert!(desired.complete, "{:?}", desired.observation_errors);
    let entitled: BTreeSet<&str> = desired
        .credentials
        .keys()
        .map(|(u, _)| u.as_str())
        .collect();
    assert_eq!(entitled, expected);

    // Through the binary: issue to exactly them, then a user who stops matching is revoked.
    let (plan, r) = plan_json(&d);
    assert_eq!(plan["complete"], true, "{}", r.stdout);
    let issued: BTreeSet<String> = actions(&plan)
        .into_iter()
        .filter(|(k, _)| k == "issue")
        .map(|(_, u)| u)
        .collect();
    assert_eq!(
        issued,
        expected
            .iter()
            .map(|u| u.to_string())
            .collect::<BTreeSet<_>>()
    );
    run_in(&d, &["apply", "--yes"]).expect_code(0);
    set_type("uid=dave", "employee");
    let (plan, r) = plan_json(&d);
    assert_eq!(plan["complete"], true, "{}", r.stdout);
    let acts = actions(&plan);
    assert!(
        acts.contains(&("revoke".to_string(), "dave".to_string())),
        "{}",
        r.stdout
    );
    assert!(acts.iter().all(|(_, u)| u == "dave"), "{}", r.stdout);

    // slapd dies while answering the filter search (after users and groups were read in
    // full): the observation is incomplete, so nothing is revoked, and users still count.
    let dir = LdapDirectory::from_policy(&env.policy.directories["corp"]).expect("ldap");
    let req = ObserveRequest::for_directory(&env.policy, "corp");
    assert_eq!(req.filters, BTreeSet::from([FILTER.to_string()]));
    let through = |port: u16, req: &ObserveRequest| {
        let mut dir = dir.clone();
        dir.spec.url = format!("ldap://127.0.0.1:{port}");
        block_on(dir.observe(req)).expect("rt").expect("snapshot")
    };
    let mut bare = req.clone();
    bare.filters.clear();
    let probe = CuttingProxy::start(slapd.port, usize::MAX, slapd.killer());
    assert!(through(probe.port, &bare).complete);
    let before_filter = probe.forwarded.load(Ordering::SeqCst);
    let cut = CuttingProxy::start(slapd.port, before_filter + 5, slapd.killer());
    let s = through(cut.port, &req);
    assert!(!s.complete);
    assert_eq!(
        s.users.len(),
        6,
        "users and groups were read before the cut"
    );
    assert!(
        s.problems
            .iter()
            .any(|p| p.contains("assignment filter \"(employeeType=contractor)\" failed")),
        "{:?}",
        s.problems
    );
    let observed = [("corp".to_string(), Ok(s))].into();
    let desired = keyfleet::desired::compute(&env.policy, &observed);
    assert!(!desired.complete, "no revocation on this observation");

    // A filter that does not parse never reaches a server.
    edit(&d, |t| t.replace(FILTER, "(employeeType=contractor"));
    d.validate(&[])
        .expect_code(1)
        .stderr_has(&format!(
            "{}:{}: Assignment/staff: spec.filter: filter: \"(employeeType=contractor\" is not a valid LDAP filter",
            d.file("policy.yaml"),
            line_of(&d, "filter:")
        ));
}

/// Active Directory primary groups against Samba, on the DC of the AD test in `ldap.rs`
/// (users alice, bob and carol exist): `Domain Users` holds everyone whose primaryGroupID says
/// so although its `member` attribute lists nobody, and a user whose primary group is changed
/// is seen in the new group, and through it in a group that nests it.
pub(crate) fn ad_primary_groups(dc: &crate::harness::samba::SambaDc) {
    use crate::harness::samba::ADMIN_PW;
    dc.tool(&["user", "add", "erin", "Er1n-Passw0rd!"]);
    dc.tool(&["group", "add", "piv-primary"]);
    dc.tool(&["group", "add", "piv-parent"]);
    dc.tool(&["group", "addmembers", "piv-parent", "piv-primary"]);
    dc.tool(&["group", "addmembers", "piv-primary", "erin"]);
    dc.tool(&["user", "setprimarygroup", "erin", "piv-primary"]);

    let d = PolicyDir::empty();
    d.write("bind.pw", ADMIN_PW);
    d.write("ad-ca.pem", &dc.ca_pem);
    d.write(
        "policy.yaml",
        &(crate::harness::samba::ad_policy_head("ldaps://localhost")
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
---
apiVersion: keyfleet.dev/v1
kind: Assignment
metadata: {name: everyone}
spec:
  directory: ad
  template: logon
  groups: [{name: Domain Users}]
---
apiVersion: keyfleet.dev/v1
kind: CardTemplate
metadata: {name: admin}
spec:
  cardType: piv
  certificates:
    - name: auth
      slot: 9A
      authority: lab
      profile: piv-auth
      keyAlgorithm: ecc-p256
      subject: 'CN=${user.cn},OU=Admins,O=Example'
---
apiVersion: keyfleet.dev/v1
kind: Assignment
metadata: {name: admins}
spec:
  directory: ad
  template: admin
  groups: [{name: piv-parent, nested: true}]
---
apiVersion: keyfleet.dev/v1
kind: CardStock
metadata: {name: virtual}
spec: {cardType: virtual, autoBind: true, virtual: {}}
"),
    );
    let env = keyfleet::runtime::load(d.path(), None).expect("policy loads");
    let observed = keyfleet::runtime::observe_directories(&env.policy);
    let s = observed["ad"].as_ref().expect("observed");
    assert!(s.complete, "{:?}", s.problems);
    let names = |v: BTreeSet<String>| v.into_iter().collect::<Vec<_>>();

    // Domain Users (RID 513) lists no member: everyone is in it by primaryGroupID. Guest's
    // primary group is Domain Guests; erin's is now piv-primary.
    let domain_users = s.members("Domain Users", false);
    for uid in ["Administrator", "alice", "bob", "carol"] {
        assert!(domain_users.contains(uid), "{uid} in {domain_users:?}");
    }
    assert!(!domain_users.contains("Guest"), "{domain_users:?}");
    assert_eq!(names(s.members("Domain Guests", false)), ["Guest"]);
    // erin is in piv-primary by primaryGroupID only (AD drops the member link), and reaches
    // piv-parent through it: by Keyfleet's nesting and in the in-chain answer.
    assert_eq!(names(s.members("piv-primary", false)), ["erin"]);
    assert!(s.transitive.contains_key("piv-parent"));
    assert_eq!(names(s.members("piv-parent", true)), ["erin"]);

    let desired = keyfleet::desired::compute(&env.policy, &observed);
    assert!(desired.complete, "{:?}", desired.observation_errors);
    let holders = |template: &str| -> BTreeSet<String> {
        desired
            .credentials
            .keys()
            .filter(|(_, t)| t == template)
            .map(|(u, _)| u.clone())
            .collect()
    };
    let everyone = holders("logon");
    for uid in ["Administrator", "alice", "bob", "carol"] {
        assert!(everyone.contains(uid), "{uid} entitled: {everyone:?}");
    }
    assert!(!everyone.contains("Guest"));
    assert_eq!(holders("admin"), BTreeSet::from(["erin".to_string()]));

    // Operators see the same.
    let r = run_in(&d, &["directory", "show", "erin", "--format", "json"]);
    r.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    let groups: BTreeSet<&str> = v["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g.as_str())
        .collect();
    assert!(
        groups.contains("piv-primary") && groups.contains("piv-parent"),
        "{groups:?}"
    );
    run_in(&d, &["directory", "members", "piv-parent"])
        .expect_code(0)
        .stdout_has("erin");
    let r = run_in(&d, &["directory", "show", "alice", "--format", "json"]);
    r.expect_code(0).stdout_has("Domain Users");
}

/// A plain `ldap://` directory without StartTLS would send the bind password in cleartext:
/// `validate` refuses it at the URL's line unless `allowCleartextBind: true`, which it then
/// warns about; the connector refuses it too, and its `Debug` never shows the password.
#[test]
fn cleartext_ldap_bind_is_refused_unless_allowed() {
    let d = policy("ldap://127.0.0.1:9", "");
    edit(&d, |t| t.replace("    allowCleartextBind: true\n", ""));
    d.validate(&[])
        .expect_code(1)
        .stderr_has(&format!(
            "{}:{}: Directory/corp: spec.ldap.url: ldap://127.0.0.1:9: a plain ldap:// URL without a tls section sends the bind password in cleartext",
            d.file("policy.yaml"),
            line_of(&d, "url: ldap://")
        ));
    let cfg: keyfleet::policy::model::LdapDirectorySpec = serde_yaml::from_str(
        "url: ldap://127.0.0.1:9\nflavour: openldap\nbindDn: cn=x\nbindPassword: {file: bind.pw}\nbaseDn: dc=x\n",
    )
    .expect("spec");
    let mut dir = LdapDirectory {
        name: "corp".into(),
        spec: cfg,
        base_dir: d.path().to_path_buf(),
    };
    let err = dir.connect_config().expect_err("cleartext refused");
    assert!(
        err.to_string().contains("allowCleartextBind: true"),
        "{err}"
    );

    edit(&d, |t| {
        t.replace(
            "    pageSize: 2\n",
            "    pageSize: 2\n    allowCleartextBind: true\n",
        )
    });
    d.validate(&[]).expect_code(0).stderr_has(&format!(
        "{}:{}: Directory/corp: spec.ldap.allowCleartextBind: warning: allowCleartextBind: the bind password is sent in cleartext",
        d.file("policy.yaml"),
        line_of(&d, "allowCleartextBind")
    ));
    dir.spec.allow_cleartext_bind = true;
    let cfg = dir.connect_config().expect("allowed");
    assert_eq!(cfg.bind_password, "secret");
    let shown = format!("{cfg:?}");
    assert!(!shown.contains("secret"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}
