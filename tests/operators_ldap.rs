//! Roles whose members are directory groups, resolved from a real slapd with nesting: an
//! operator in a group nested inside the role's group holds the role, one outside does not,
//! and a membership removed in the directory takes the role away at the next observation.

use std::process::Stdio;

use crate::harness::controller::{free_port, wait_for};
use crate::harness::operator_api::Externals;
use crate::harness::slapd::SlapdOptions;
use crate::harness::{Run, keyfleet};

fn whoami(externals: &Externals, url: &str, ca: &str, name: &str) -> Run {
    let mut args = vec![
        "whoami".to_string(),
        "--format".into(),
        "json".into(),
        "--server".into(),
        url.to_string(),
        "--server-ca".into(),
        ca.to_string(),
    ];
    args.extend(externals.args(name));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    keyfleet(&refs)
}

fn roles(r: &Run) -> Option<serde_json::Value> {
    (r.code == Some(0))
        .then(|| serde_json::from_str::<serde_json::Value>(&r.stdout).ok())
        .flatten()
        .map(|v| v["roles"].clone())
}

#[test]
fn group_members_of_roles_come_from_the_directory_nested_groups_included() {
    let slapd = crate::ldap::loaded_slapd(SlapdOptions::default());
    let d = crate::ldap::policy(&slapd.url(), "    pollInterval: 1s\n");
    let externals = Externals::new(d.path(), &["carol", "dave"]);
    let policy = d.path().join("policy.yaml");
    let text = std::fs::read_to_string(&policy).unwrap().replace(
        "  safety: {maxRevocations: 10, maxRevocationPercent: 100}\n",
        "  safety: {maxRevocations: 10, maxRevocationPercent: 100}
  operators:
    templates: [employee]
    directory: corp
    external:
      - {name: carol, caFile: automation-ca.pem, subject: CN=carol}
      - {name: dave, caFile: automation-ca.pem, subject: CN=dave}
---
apiVersion: keyfleet.dev/v1
kind: Role
metadata: {name: staff-readers}
spec:
  permissions: [view-inventory]
  members: ['group:staff']
",
    );
    std::fs::write(&policy, text).unwrap();
    let dir = d.path().display().to_string();
    let state = d.path().join("state");
    let state_s = state.display().to_string();
    keyfleet(&["-C", &dir, "--state-dir", &state_s, "validate"]).expect_code(0);
    keyfleet(&["-C", &dir, "--state-dir", &state_s, "apply", "--yes"]).expect_code(0);
    let ca = d.path().join("lab.pem");
    let lab = keyfleet(&["-C", &dir, "--state-dir", &state_s, "ca", "cert", "lab"]);
    lab.expect_code(0);
    std::fs::write(&ca, &lab.stdout).unwrap();
    let ca = ca.display().to_string();

    let port = free_port();
    let log = d.path().join("controller.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut ctl = std::process::Command::new(env!("CARGO_BIN_EXE_keyfleet"))
        .args(["-C", &dir, "--state-dir", &state_s, "run", "--resync", "2"])
        .args(["--api", &format!("127.0.0.1:{port}")])
        .env_remove("KEYFLEET_STATE_DIR")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}");
    // carol is in eng, which is nested in staff: she holds the role; dave is in no group.
    wait_for("carol to hold the role through nested groups", || {
        (roles(&whoami(&externals, &url, &ca, "carol"))? == serde_json::json!(["staff-readers"]))
            .then_some(())
    });
    assert_eq!(
        roles(&whoami(&externals, &url, &ca, "dave")),
        Some(serde_json::json!([])),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // carol leaves eng in the directory: the role goes with the next observation.
    slapd.ldapmodify(
        "dn: cn=eng,ou=groups,dc=example,dc=org\nchangetype: modify\ndelete: member\nmember: uid=carol,ou=people,dc=example,dc=org\n",
    );
    wait_for("carol to lose the role", || {
        (roles(&whoami(&externals, &url, &ca, "carol"))? == serde_json::json!([])).then_some(())
    });
    let _ = std::process::Command::new("kill")
        .arg(ctl.id().to_string())
        .status();
    let _ = ctl.wait();
}
