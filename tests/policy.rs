//! `keyfleet validate` and `keyfleet schema` end to end: the example policy sets pass, every
//! kind of bad input of issue 3 fails with exit code 1 and a message naming file, line and
//! object, and the checked-in schemas match the code.

use crate::harness::{PolicyDir, keyfleet};

const TEMPLATE_HEAD: &str = "\
apiVersion: keyfleet.dev/v1
kind: CardTemplate
metadata:
  name: broken
spec:
  cardType: virtual
  certificates:
";

fn cert(slot: &str, extra: &str) -> String {
    format!(
        "    - name: c{}\n      slot: {slot}\n      authority: lab\n      profile: piv-auth\n      keyAlgorithm: ecc-p256\n      subject: CN=${{user.cn}}\n{extra}",
        slot.to_lowercase()
    )
}

#[test]
fn example_policies_are_valid() {
    keyfleet(&["validate", "-C", "policies"])
        .expect_code(0)
        .stdout_has("valid (15 objects");
}

#[test]
fn quickstart_is_valid() {
    keyfleet(&["validate", "-C", "examples/quickstart"])
        .expect_code(0)
        .stdout_has("valid");
}

#[test]
fn base_fixture_is_valid() {
    PolicyDir::valid().validate(&[]).expect_code(0);
}

#[test]
fn yaml_syntax_error_has_line_and_column() {
    let d = PolicyDir::valid();
    d.write(
        "bad.yaml",
        "apiVersion: keyfleet.dev/v1\nkind: Role\nmetadata: {name: [oops\nspec: {}\n",
    );
    let r = d.validate(&[]);
    r.expect_code(1);
    let line = r
        .stderr
        .lines()
        .find(|l| l.starts_with(&d.file("bad.yaml")))
        .expect("bad.yaml diagnostic");
    assert!(line.contains("YAML syntax error at line"), "{line}");
    assert!(line.contains("column"), "{line}");
}

#[test]
fn document_without_kind() {
    let d = PolicyDir::valid();
    d.write(
        "bad.yaml",
        "# header\napiVersion: keyfleet.dev/v1\nmetadata: {name: nokind}\nspec: {}\n",
    );
    d.validate(&[]).expect_code(1).stderr_has(&format!(
        "{}:2: nokind: document has no `kind`",
        d.file("bad.yaml")
    ));
}

#[test]
fn unknown_kind() {
    let d = PolicyDir::valid();
    d.write(
        "bad.yaml",
        "apiVersion: keyfleet.dev/v1\nkind: Widget\nmetadata: {name: w}\nspec: {}\n",
    );
    d.validate(&[]).expect_code(1).stderr_has(&format!(
        "{}:2: Widget/w: kind: unknown kind \"Widget\"",
        d.file("bad.yaml")
    ));
}

#[test]
fn unknown_field() {
    let d = PolicyDir::valid();
    d.write("bad.yaml", "apiVersion: keyfleet.dev/v1\nkind: Role\nmetadata: {name: ops}\nspec:\n  permissions: [unblock]\n  members: [a]\n  colour: red\n");
    d.validate(&[]).expect_code(1).stderr_has(&format!(
        "{}:7: Role/ops: spec.colour: unknown field `colour`",
        d.file("bad.yaml")
    ));
}

#[test]
fn wrong_type() {
    let d = PolicyDir::valid();
    d.write("bad.yaml", "apiVersion: keyfleet.dev/v1\nkind: Settings\nmetadata: {name: s}\nspec:\n  concurrency: lots\n");
    d.validate(&[]).expect_code(1).stderr_has(&format!(
        "{}:5: Settings/s: spec.concurrency: \"lots\" is not of type \"integer\"",
        d.file("bad.yaml")
    ));
}

#[test]
fn duplicate_name() {
    let d = PolicyDir::valid();
    // Files are read in name order, so the copy in later.yaml is the duplicate.
    d.write("later.yaml", "apiVersion: keyfleet.dev/v1\nkind: CertificateAuthority\nmetadata:\n  name: lab\nspec:\n  local: {subject: CN=Other}\n");
    d.validate(&[])
        .expect_code(1)
        .stderr_has(&format!("{}:4: CertificateAuthority/lab: metadata.name: duplicate CertificateAuthority name `lab` (first defined at {}:1)", d.file("later.yaml"), d.file("base.yaml")));
}

#[test]
fn dangling_reference() {
    let d = PolicyDir::valid();
    d.write("bad.yaml", "apiVersion: keyfleet.dev/v1\nkind: Assignment\nmetadata: {name: a}\nspec:\n  directory: people\n  template: nope\n  users: [alice]\n");
    d.validate(&[]).expect_code(1).stderr_has(&format!(
        "{}:6: Assignment/a: spec.template: no CardTemplate named `nope`",
        d.file("bad.yaml")
    ));
}

#[test]
fn duplicate_slot() {
    let d = PolicyDir::valid();
    let text = format!(
        "{TEMPLATE_HEAD}{}{}",
        cert("9A", ""),
        cert("9A", "").replace("c9a", "other")
    );
    d.write("bad.yaml", &text);
    d.validate(&[]).expect_code(1).stderr_has(&format!(
        "{}:15: CardTemplate/broken: spec.certificates[1].slot: slot 9A is already used",
        d.file("bad.yaml")
    ));
}

#[test]
fn invalid_duration() {
    let d = PolicyDir::valid();
    d.write(
        "bad.yaml",
        &format!("{TEMPLATE_HEAD}{}", cert("9A", "      validity: 1 year\n")),
    );
    d.validate(&[]).expect_code(1).stderr_has(&format!(
        "{}:14: CardTemplate/broken: spec.certificates[0].validity: duration \"1 year\"",
        d.file("bad.yaml")
    ));
}

#[test]
fn renew_before_not_shorter_than_validity() {
    let d = PolicyDir::valid();
    d.write(
        "bad.yaml",
        &format!(
            "{TEMPLATE_HEAD}{}",
            cert("9A", "      validity: 30d\n      renewBefore: 30d\n")
        ),
    );
    d.validate(&[])
        .expect_code(1)
        .stderr_has(&format!("{}:15: CardTemplate/broken: spec.certificates[0].renewBefore: renewBefore (30d) must be shorter than validity (30d)", d.file("bad.yaml")));
}

#[test]
fn template_variable_does_not_parse() {
    let d = PolicyDir::valid();
    let text =
        format!("{TEMPLATE_HEAD}{}", cert("9A", "")).replace("CN=${user.cn}", "CN=${user.email}");
    d.write("bad.yaml", &text);
    d.validate(&[])
        .expect_code(1)
        .stderr_has(&format!(
            "{}:13: CardTemplate/broken: spec.certificates[0].subject: invalid template",
            d.file("bad.yaml")
        ))
        .stderr_has("unknown variable ${user.email}");
    let text =
        format!("{TEMPLATE_HEAD}{}", cert("9A", "")).replace("CN=${user.cn}", "CN=${user.cn");
    d.write("bad.yaml", &text);
    d.validate(&[])
        .expect_code(1)
        .stderr_has("unterminated variable");
}

#[test]
fn empty_policy_directory() {
    let d = PolicyDir::empty();
    d.validate(&[]).expect_code(1).stderr_has(&format!(
        "{}:0: no policy objects found",
        d.path().display()
    ));
}

#[test]
fn file_not_utf8() {
    let d = PolicyDir::valid();
    d.write_bytes(
        "bad.yaml",
        b"apiVersion: keyfleet.dev/v1\nkind: Role\nmetadata: {name: \xc3\x28}\n",
    );
    d.validate(&[]).expect_code(1).stderr_has(&format!(
        "{}:3: file is not valid UTF-8",
        d.file("bad.yaml")
    ));
}

#[test]
fn ten_megabytes_of_garbage() {
    let d = PolicyDir::valid();
    let mut garbage = Vec::with_capacity(10 * 1024 * 1024);
    let mut x: u32 = 12345;
    while garbage.len() < 10 * 1024 * 1024 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        garbage.push((x >> 16) as u8);
    }
    d.write_bytes("garbage.yaml", &garbage);
    d.validate(&[]).expect_code(1).stderr_has(&format!(
        "{}:1: file is 10485760 bytes; policy files are limited to",
        d.file("garbage.yaml")
    ));
}

#[test]
fn billion_laughs_is_refused() {
    let d = PolicyDir::valid();
    let mut text = String::from(
        "apiVersion: keyfleet.dev/v1\nkind: Role\nmetadata: {name: lol}\nspec:\n  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for i in 1..9 {
        let refs = vec![format!("*a{}", i - 1); 9].join(", ");
        text.push_str(&format!("  a{i}: &a{i} [{refs}]\n"));
    }
    d.write("bad.yaml", &text);
    let r = d.validate(&[]);
    r.expect_code(1)
        .stderr_has("refusing YAML that expands to more than");
    assert!(
        r.stderr.contains(&format!("{}:", d.file("bad.yaml"))),
        "{}",
        r.stderr
    );
}

#[test]
fn one_anchor_referenced_thousands_of_times_is_refused() {
    let d = PolicyDir::valid();
    let items = vec!["x"; 1000].join(", ");
    let refs = vec!["*big"; 1000].join(", ");
    d.write("bad.yaml", &format!("apiVersion: keyfleet.dev/v1\nkind: Role\nmetadata: {{name: big}}\nspec:\n  big: &big [{items}]\n  use: [{refs}]\n"));
    d.validate(&[])
        .expect_code(1)
        .stderr_has(&format!("{}:6: refusing YAML", d.file("bad.yaml")));
    let refs = vec!["*s"; 3000].join(", ");
    d.write("bad.yaml", &format!("s: &s x\nuse: [{refs}]\n"));
    d.validate(&[]).expect_code(1).stderr_has(&format!(
        "{}:2: refusing YAML with more than 1000 aliases",
        d.file("bad.yaml")
    ));
}

#[test]
fn two_settings_objects() {
    let d = PolicyDir::valid();
    d.write("bad.yaml", "apiVersion: keyfleet.dev/v1\nkind: Settings\nmetadata: {name: a}\nspec: {}\n---\napiVersion: keyfleet.dev/v1\nkind: Settings\nmetadata: {name: b}\nspec: {}\n");
    d.validate(&[]).expect_code(1).stderr_has(&format!(
        "{}:6: Settings/b: only one Settings object is allowed (first at {}:1)",
        d.file("bad.yaml"),
        d.file("bad.yaml")
    ));
}

#[test]
fn every_error_is_reported_together() {
    let d = PolicyDir::valid();
    d.write(
        "a.yaml",
        "apiVersion: keyfleet.dev/v1\nkind: Widget\nmetadata: {name: w}\nspec: {}\n",
    );
    d.write("b.yaml", "apiVersion: keyfleet.dev/v1\nkind: Role\nmetadata: {name: r}\nspec: {permissions: [fly]}\n");
    let r = d.validate(&["--format", "json"]);
    r.expect_code(1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json output");
    assert_eq!(v["valid"], false);
    let errors = v["errors"].as_array().expect("errors array");
    assert_eq!(errors.len(), 2, "{}", r.stdout);
    assert_eq!(errors[0]["code"], "unknown-kind");
    assert_eq!(errors[0]["file"], d.file("a.yaml"));
    assert_eq!(errors[0]["line"], 2);
    assert_eq!(errors[1]["kind"], "Role");
    assert_eq!(errors[1]["name"], "r");
    assert_eq!(errors[1]["path"], "spec.permissions[0]");
    for key in [
        "code", "file", "line", "column", "kind", "name", "path", "message",
    ] {
        assert!(errors[0].get(key).is_some(), "missing {key}");
    }
}

#[test]
fn json_output_for_valid_set() {
    let r = keyfleet(&["validate", "-C", "examples/quickstart", "--format", "json"]);
    r.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json output");
    assert_eq!(v["valid"], true);
    assert_eq!(v["errors"].as_array().map(Vec::len), Some(0));
}

#[test]
fn online_mode_resolves_secrets_offline_mode_does_not() {
    let d = PolicyDir::valid();
    d.write("ldap.yaml", "apiVersion: keyfleet.dev/v1\nkind: Directory\nmetadata: {name: ad}\nspec:\n  ldap:\n    url: ldaps://dc.example.com\n    flavour: active-directory\n    bindDn: CN=svc\n    bindPassword: {env: KEYFLEET_TEST_NEVER_SET}\n    baseDn: DC=example\n");
    d.validate(&[]).expect_code(0);
    d.validate(&["--online"])
        .expect_code(1)
        .stderr_has(&format!(
            "{}:1: Directory/ad: secret env:KEYFLEET_TEST_NEVER_SET does not resolve",
            d.file("ldap.yaml")
        ));
}

#[test]
fn checked_in_schemas_are_up_to_date() {
    let out = tempfile::tempdir().expect("temp dir");
    let target = out.path().join("fresh");
    let target_s = target.display().to_string();
    keyfleet(&["schema", "--out", &target_s]).expect_code(0);
    let checked_in = crate::harness::repo_root().join("schemas");
    let mut names: Vec<_> = std::fs::read_dir(&target)
        .expect("read generated")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    assert!(!names.is_empty());
    for name in names {
        let fresh = std::fs::read_to_string(target.join(&name)).expect("read fresh");
        let old = std::fs::read_to_string(checked_in.join(&name)).unwrap_or_default();
        assert!(
            fresh == old,
            "schemas/{} is stale: run `cargo run -- schema --out schemas/` and commit the result",
            name.to_string_lossy()
        );
    }
}

#[test]
fn version_and_help() {
    keyfleet(&["--version"])
        .expect_code(0)
        .stdout_has("keyfleet 0.1.0");
    keyfleet(&["--help"])
        .expect_code(0)
        .stdout_has("validate")
        .stdout_has("schema");
    keyfleet(&["validate", "--help"])
        .expect_code(0)
        .stdout_has("--online")
        .stdout_has("Exit codes");
    keyfleet(&["schema", "--help"])
        .expect_code(0)
        .stdout_has("--out");
    keyfleet(&["frobnicate"]).expect_code(2);
}

#[test]
fn semantic_checks_on_certificates() {
    let d = PolicyDir::valid();
    let certs = [
        // 9A: P-384 not allowed, server keygen outside 9D.
        cert("9A", "      keyGeneration: server\n").replace("ecc-p256", "ecc-p384"),
        // 9C: archive without server keygen, profile the local CA does not have.
        cert("9C", "      archive: true\n").replace("piv-auth", "no-such-profile"),
        // 9D: subject that is not a DN, email SAN that is not an address.
        cert(
            "9D",
            "      subjectAltNames:\n        - email: ${user.uid}\n",
        )
        .replace("CN=${user.cn}", "XX=${user.cn}"),
    ];
    d.write("bad.yaml", &format!("{TEMPLATE_HEAD}{}", certs.concat()));
    let f = d.file("bad.yaml");
    let o = "CardTemplate/broken";
    d.validate(&[])
        .expect_code(1)
        .stderr_has(&format!("{f}:12: {o}: spec.certificates[0].keyAlgorithm: ecc-p384 is not allowed in PIV slot 9A"))
        .stderr_has(&format!("{f}:14: {o}: spec.certificates[0].keyGeneration: server key generation is only allowed"))
        .stderr_has(&format!("{f}:18: {o}: spec.certificates[1].profile: the local CA `lab` has no profile `no-such-profile`"))
        .stderr_has(&format!("{f}:21: {o}: spec.certificates[1].archive: archive needs keyGeneration: server"))
        .stderr_has(&format!("{f}:27: {o}: spec.certificates[2].subject: subject \"XX=${{user.cn}}\" does not give a valid DN"))
        .stderr_has(&format!("{f}:29: {o}: spec.certificates[2].subjectAltNames[0].email: email SAN"));
}

#[test]
fn semantic_checks_on_assignments_and_stock() {
    let d = PolicyDir::valid();
    d.write("bad.yaml", "apiVersion: keyfleet.dev/v1\nkind: Assignment\nmetadata: {name: by-filter}\nspec:\n  directory: people\n  template: employee\n  filter: (department=IT)\n---\napiVersion: keyfleet.dev/v1\nkind: CardStock\nmetadata: {name: odd}\nspec:\n  cardType: piv\n  virtual: {}\n");
    let f = d.file("bad.yaml");
    d.validate(&[])
        .expect_code(1)
        .stderr_has(&format!(
            "{f}:7: Assignment/by-filter: spec.filter: `filter` needs an ldap Directory"
        ))
        .stderr_has(&format!(
            "{f}:14: CardStock/odd: spec.virtual: selector `virtual` does not fit cardType piv"
        ));
}

#[test]
fn template_without_stock_is_a_warning() {
    let d = PolicyDir::valid();
    d.write(
        "piv.yaml",
        &format!("{TEMPLATE_HEAD}{}", cert("9A", "")).replace("cardType: virtual", "cardType: piv"),
    );
    d.validate(&[]).expect_code(0).stderr_has(&format!(
        "{}:6: CardTemplate/broken: spec.cardType: warning: no CardStock holds piv cards",
        d.file("piv.yaml")
    ));
}

#[test]
fn retries_are_refused_at_their_line_where_the_card_type_cannot_set_them() {
    // Issue 14, point 10c: PKCS#11 tokens and PIV cards without `vendor: yubico` keep their
    // own counters, so retries other than the default there are refused at the field's line.
    let d = PolicyDir::valid();
    let head = |name: &str, card_type: &str, extra: &str| {
        TEMPLATE_HEAD
            .replace("name: broken", &format!("name: {name}"))
            .replace(
                "  cardType: virtual\n",
                &format!("  cardType: {card_type}\n{extra}"),
            )
    };
    let docs = [
        head(
            "token",
            "pkcs11",
            "  pinPolicy: {length: 6, retries: 5}\n  vendor: yubico\n",
        ),
        head(
            "plain-piv",
            "piv",
            "  pinPolicy:\n    length: 6\n    retries: 3\n  pukPolicy:\n    retries: 6\n",
        ),
        head(
            "yubikey",
            "piv",
            "  vendor: yubico\n  pinPolicy: {retries: 5}\n  pukPolicy: {retries: 4}\n",
        ),
        head("soft", "virtual", "  pinPolicy: {retries: 7}\n"),
    ]
    .map(|h| format!("{h}{}", cert("9A", "")));
    d.write("bad.yaml", &docs.join("---\n"));
    let f = d.file("bad.yaml");
    let r = d.validate(&[]);
    r.expect_code(1)
        .stderr_has(&format!(
            "{f}:7: CardTemplate/token: spec.pinPolicy.retries: pinPolicy.retries 5 cannot be set on pkcs11 cards"
        ))
        .stderr_has(&format!(
            "{f}:8: CardTemplate/token: spec.vendor: `vendor` is a PIV card option"
        ))
        .stderr_has(&format!(
            "{f}:27: CardTemplate/plain-piv: spec.pukPolicy.retries: pukPolicy.retries 6 cannot be set on piv cards"
        ))
        .stderr_has("add `vendor: yubico`");
    // The default written out, a YubiKey template and a virtual one are accepted.
    assert!(
        !r.stderr.contains("plain-piv: spec.pinPolicy"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("yubikey: spec.p"), "{}", r.stderr);
    assert!(!r.stderr.contains("soft: spec.p"), "{}", r.stderr);
    assert!(r.stderr.contains("(3 errors"), "{}", r.stderr);
}

#[test]
fn a_local_ca_changed_after_it_exists_is_a_warning_in_validate_and_plan() {
    // Issue 14, point 10e: subject, keyAlgorithm and validity only shape a new local CA.
    let tmp = tempfile::tempdir().unwrap();
    let policy = tmp.path().join("policy");
    let state = tmp.path().join("state");
    std::fs::create_dir_all(policy.join("templates")).unwrap();
    let src = crate::harness::repo_root().join("examples/quickstart");
    for f in [
        "assignments.yaml",
        "authority.yaml",
        "directory.yaml",
        "people.yaml",
        "settings.yaml",
        "stock.yaml",
        "templates/contractor-virtual.yaml",
        "templates/employee-virtual.yaml",
    ] {
        std::fs::copy(src.join(f), policy.join(f)).unwrap();
    }
    let (p, s) = (policy.display().to_string(), state.display().to_string());
    let kf = |args: &[&str]| {
        let mut all = vec!["-C", p.as_str(), "--state-dir", s.as_str()];
        all.extend_from_slice(args);
        keyfleet(&all)
    };
    // No CA yet: nothing to warn about.
    let r = kf(&["validate"]);
    r.expect_code(0);
    assert!(!r.stderr.contains("applies to a new CA"), "{}", r.stderr);
    kf(&["apply", "--yes"]).expect_code(0);
    let r = kf(&["validate"]);
    r.expect_code(0);
    assert!(
        !r.stderr.contains("only applies to a new CA"),
        "{}",
        r.stderr
    );

    let authority = policy.join("authority.yaml");
    let text = std::fs::read_to_string(&authority).unwrap();
    std::fs::write(
        &authority,
        text.replace(
            "CN=Keyfleet Quickstart CA,O=Example",
            "CN=Renamed CA,O=Example",
        )
        .replace("validity: 10y", "validity: 5y"),
    )
    .unwrap();
    let file = authority.display().to_string();
    let o = "CertificateAuthority/quickstart-ca";
    kf(&["validate"])
        .expect_code(0)
        .stderr_has(&format!(
            "{file}:10: {o}: spec.local.subject: warning: the local CA `quickstart-ca` exists with subject CN=Keyfleet Quickstart CA,O=Example; the subject CN=Renamed CA,O=Example only applies to a new CA"
        ))
        .stderr_has(&format!(
            "{file}:12: {o}: spec.local.validity: warning: the local CA `quickstart-ca` exists with validity 10y; the validity 5y only applies to a new CA"
        ))
        .stdout_has("2 warnings");
    let r = kf(&["validate"]);
    assert!(!r.stderr.contains("keyAlgorithm"), "{}", r.stderr);
    // plan warns the same (and the CA keeps its certificate: nothing to reissue).
    kf(&["plan"])
        .expect_code(0)
        .stderr_has(&format!(
            "{o}: spec.local.subject: warning: the local CA `quickstart-ca`"
        ))
        .stderr_has("spec.local.validity: warning:");
    let json = kf(&["validate", "--format", "json"]);
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let codes: Vec<&str> = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["code"].as_str())
        .collect();
    assert_eq!(
        codes,
        ["applies-to-new-ca", "applies-to-new-ca"],
        "{report}"
    );
}

#[test]
fn operator_settings_and_roles_are_checked_where_they_are_written() {
    let d = PolicyDir::valid();
    d.write(
        "operators.yaml",
        "\
apiVersion: keyfleet.dev/v1
kind: Settings
metadata:
  name: settings
spec:
  operators:
    templates: [employee, missing-template]
    external:
      - {name: ticketing, caFile: no-such-ca.pem, subject: 'CN=ticketing,XX=1'}
      - {name: ticketing, caFile: no-such-ca.pem, subject: CN=ticketing}
    directory: nowhere
  approvals: {unblock: 0}
---
apiVersion: keyfleet.dev/v1
kind: Role
metadata:
  name: helpdesk
spec:
  permissions: [unblock, view-inventory]
  members: [' alice', 'group:staff']
  templates: [contractor]
",
    );
    let r = d.validate(&[]);
    r.expect_code(1);
    let f = d.file("operators.yaml");
    for line in [
        format!(
            "{f}:7: Settings/settings: spec.operators.templates[1]: no CardTemplate named `missing-template`"
        ),
        format!("{f}:9: Settings/settings: spec.operators.external[0].caFile: caFile"),
        format!("{f}:9: Settings/settings: spec.operators.external[0].subject: subject"),
        format!(
            "{f}:10: Settings/settings: spec.operators.external[1].name: external operator `ticketing` is listed twice"
        ),
        format!(
            "{f}:11: Settings/settings: spec.operators.directory: no Directory named `nowhere`"
        ),
        format!(
            "{f}:12: Settings/settings: spec.approvals.unblock: approvals of unblock must be at least 1"
        ),
        format!("{f}:20: Role/helpdesk: spec.members[0]: member \" alice\""),
        format!("{f}:21: Role/helpdesk: spec.templates[0]: no CardTemplate named `contractor`"),
    ] {
        r.stderr_has(&line);
    }
    // A permission outside the vocabulary, or an operation that cannot be put under approval.
    let d = PolicyDir::valid();
    d.write(
        "roles.yaml",
        "apiVersion: keyfleet.dev/v1\nkind: Role\nmetadata:\n  name: old\nspec:\n  permissions: [report-lost]\n  members: [alice]\n",
    );
    d.validate(&[]).expect_code(1).stderr_has("report-lost");
    let d = PolicyDir::valid();
    d.write(
        "settings.yaml",
        "apiVersion: keyfleet.dev/v1\nkind: Settings\nmetadata:\n  name: s\nspec:\n  approvals: {make-coffee: 1}\n",
    );
    d.validate(&[]).expect_code(1).stderr_has("make-coffee");
}
