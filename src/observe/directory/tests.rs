use super::scalar::{format_float, is_null, parse_bool};
use super::*;

const SAMPLE: &str = r#"
users:
  - {uid: alice, cn: Alice, mail: alice@example.org}
  - {uid: bob, cn: Bob, disabled: true, attributes: {employeeNumber: 42}}
  - {uid: "*)(uid=*", cn: "Hostile, Inc.\\"}
groups:
  - {name: a, members: [alice], groups: [b]}
  - {name: b, members: [bob], groups: [a]}
  - {name: c, members: ["*)(uid=*"]}
"#;

#[test]
fn nested_members_resolve_through_cycles() {
    let s = parse_file_directory(Path::new("t.yaml"), SAMPLE).unwrap();
    assert!(s.complete);
    let direct: Vec<_> = s.members("a", false).into_iter().collect();
    assert_eq!(direct, ["alice"]);
    let nested: Vec<_> = s.members("a", true).into_iter().collect();
    assert_eq!(nested, ["alice", "bob"]);
    assert_eq!(
        s.users.get("bob").unwrap().to_user().attributes["employeeNumber"],
        "42"
    );
    assert!(s.users.get("bob").unwrap().to_user().disabled);
    assert!(s.members("nope", true).is_empty());
    assert_eq!(s.members("c", false).len(), 1);
}

#[test]
fn errors_name_file_and_line() {
    let e = parse_file_directory(
        Path::new("d.yaml"),
        "users:\n  - {uid: a, cn: A, colour: red}\n",
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("d.yaml:2:"), "{msg}");
    assert!(msg.contains("colour"), "{msg}");
    let e = parse_file_directory(
        Path::new("d.yaml"),
        "users: [{uid: a, cn: A}]\ngroups: [{name: g, members: [zed]}]\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("\"zed\""), "{e}");
    let e =
        parse_file_directory(Path::new("d.yaml"), "groups: [{name: g, groups: [h]}]").unwrap_err();
    assert!(e.to_string().contains("unknown group \"h\""), "{e}");
    let bomb = "a: &a [x, x]\nb: &b [*a, *a]\nusers: [{uid: u, cn: *b}]\n";
    let e = parse_file_directory(Path::new("d.yaml"), bomb).unwrap_err();
    assert!(e.to_string().starts_with("d.yaml:1:"), "{e}");
    assert!(e.to_string().contains("anchors are not allowed"), "{e}");
    let deep = format!("users: {}{}", "[".repeat(40), "]".repeat(40));
    let e = parse_file_directory(Path::new("d.yaml"), &deep).unwrap_err();
    assert!(e.to_string().contains("nested"), "{e}");
}

fn parse(text: &str) -> Result<DirectorySnapshot, FileDirectoryError> {
    parse_file_directory(Path::new("d.yaml"), text)
}

/// The error for `text`, asserting it is a parse error on `line` whose message contains
/// every one of `words`.
fn parse_error(text: &str, line: usize, words: &[&str]) {
    let e = parse(text).expect_err(text);
    let msg = e.to_string();
    assert!(
        matches!(e, FileDirectoryError::Parse { line: l, .. } if l == line),
        "want line {line}: {msg}"
    );
    assert!(msg.starts_with(&format!("d.yaml:{line}: ")), "{msg}");
    for w in words {
        assert!(msg.contains(w), "{w:?} not in {msg}");
    }
}

fn invalid(text: &str, words: &[&str]) {
    let e = parse(text).expect_err(text);
    let msg = e.to_string();
    assert!(
        matches!(e, FileDirectoryError::Invalid { .. }),
        "want an inconsistency: {msg}"
    );
    for w in words {
        assert!(msg.contains(w), "{w:?} not in {msg}");
    }
}

#[test]
fn block_and_flow_styles_read_alike() {
    let block = "\
users:
  - uid: alice
    cn: Alice
    mail: alice@example.org
    upn: alice@corp.example.org
    dn: \"uid=alice,ou=people,dc=example,dc=org\"
    attributes:
      title: Engineer
      floor: 3
  - uid: bob
    cn: 'Bob ''B'' Jones'
    disabled: True
groups:
  - name: staff
    members:
      - alice
      - bob
    groups:
      - admins
  - name: admins
    members: [alice]
";
    let flow = r#"{users: [{uid: alice, cn: Alice, mail: alice@example.org,
  upn: alice@corp.example.org, dn: "uid=alice,ou=people,dc=example,dc=org",
  attributes: {title: Engineer, floor: 3}},
  {uid: bob, cn: "Bob 'B' Jones", disabled: true}],
 groups: [{name: staff, members: [alice, bob], groups: [admins]},
  {name: admins, members: [alice]}]}"#;
    let a = parse(block).unwrap();
    assert_eq!(a, parse(flow).unwrap());
    assert!(a.complete);
    let alice = &a.users.get("alice").unwrap().to_user();
    assert_eq!(alice.mail.as_deref(), Some("alice@example.org"));
    assert_eq!(alice.upn.as_deref(), Some("alice@corp.example.org"));
    assert_eq!(
        alice.dn.as_deref(),
        Some("uid=alice,ou=people,dc=example,dc=org")
    );
    assert_eq!(alice.attributes["floor"], "3");
    assert!(!alice.disabled);
    assert_eq!(a.users.get("bob").unwrap().to_user().cn, "Bob 'B' Jones");
    assert!(a.users.get("bob").unwrap().to_user().disabled);
    assert_eq!(a.members("staff", true).len(), 2);
    assert_eq!(a.groups["staff"].groups.len(), 1);
}

#[test]
fn empty_and_absent_parts_read_as_empty() {
    for text in [
        "",
        "# nothing\n",
        "---\n",
        "users:\ngroups:\n",
        "{}",
        "users: []\n",
    ] {
        let s = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert!(
            s.complete && s.users.is_empty() && s.groups.is_empty(),
            "{text:?}"
        );
    }
    let s =
        parse("users: [{uid: a, cn: A, mail: ~, upn: null, dn:}]\ngroups: [{name: g}]").unwrap();
    let a = &s.users.get("a").unwrap().to_user();
    assert_eq!((&a.mail, &a.upn, &a.dn), (&None, &None, &None));
    assert!(s.groups["g"].member_rows().is_empty());
    // Quoted, a null word is a value.
    let s = parse("users: [{uid: a, cn: A, mail: \"~\"}]").unwrap();
    assert_eq!(
        s.users.get("a").unwrap().to_user().mail.as_deref(),
        Some("~")
    );
}

#[test]
fn numbers_and_booleans_become_strings_as_before() {
    let text = r#"users: [{uid: 7, cn: 1.50, attributes: {
  int: 42, neg: -7, plus: +5, hex: 0x1F, oct: 0o17, bin: 0b101, zero: 007,
  float: 1.50, exp: 1e3, small: 0.0001, tiny: 1.5e-7, big: 1e30, huge: 1e400,
  inf: .inf, ninf: -.Inf, nan: .NaN, yes: True, no: FALSE, word: yes,
  quoted: "42", single: 'true', str: !!str 42, tint: !!int "0x10", tfloat: !!float 3,
  tbool: !!bool "false", under: 1_000, max: 18446744073709551615,
  min: -9223372036854775808, neg0: -0}}]"#;
    let s = parse(text).unwrap();
    let u = &s.users.get("7").unwrap().to_user();
    assert_eq!(u.cn, "1.50", "string fields keep the scalar as written");
    let want = [
        ("int", "42"),
        ("neg", "-7"),
        ("plus", "5"),
        ("hex", "31"),
        ("oct", "15"),
        ("bin", "5"),
        ("zero", "007"),
        ("float", "1.5"),
        ("exp", "1000.0"),
        ("small", "0.0001"),
        ("tiny", "1.5e-7"),
        ("big", "1e30"),
        ("huge", "1e400"),
        ("inf", ".inf"),
        ("ninf", "-.inf"),
        ("nan", ".nan"),
        ("yes", "true"),
        ("no", "false"),
        ("word", "yes"),
        ("quoted", "42"),
        ("single", "true"),
        ("str", "42"),
        ("tint", "16"),
        ("tfloat", "3.0"),
        ("tbool", "false"),
        ("under", "1_000"),
        ("max", "18446744073709551615"),
        ("min", "-9223372036854775808"),
        ("neg0", "0"),
    ];
    for (k, v) in want {
        assert_eq!(u.attributes.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert_eq!(u.attributes.len(), want.len());
}

#[test]
fn unknown_fields_are_named_with_their_line() {
    parse_error(
        "users: []\ncolour: red\n",
        2,
        &["unknown field `colour`", "`users`"],
    );
    parse_error(
        "users:\n  - uid: a\n    cn: A\n    colour: red\n",
        4,
        &["users[0]: unknown field `colour`", "`attributes`"],
    );
    parse_error(
        "users: []\ngroups:\n  - name: g\n    owner: a\n",
        4,
        &["groups[0]: unknown field `owner`", "`members`"],
    );
}

#[test]
fn wrong_types_are_refused_with_their_line() {
    parse_error(
        "users:\n  - uid: a\n    cn: A\n    attributes:\n      room: {floor: 3}\n",
        5,
        &["users[0].attributes.room", "not a mapping"],
    );
    parse_error(
        "users: [{uid: a, cn: A, attributes: {rooms: [1, 2]}}]",
        1,
        &["attributes.rooms", "not a sequence"],
    );
    parse_error(
        "users:\n- {uid: a, cn: A, attributes: {x: ~}}",
        2,
        &["not null"],
    );
    parse_error(
        "users:\n- {uid: a, cn: A, attributes: {x: !custom 1}}",
        2,
        &["tagged"],
    );
    parse_error(
        "users:\n- {uid: a, cn: A, attributes: {x: 99999999999999999999}}",
        2,
        &["out-of-range integer"],
    );
    parse_error(
        "\n\nusers:\n  - uid: {a: 1}\n    cn: A\n",
        4,
        &["users[0].uid", "a string"],
    );
    parse_error(
        "users: [{uid: [a], cn: A}]",
        1,
        &["users[0].uid", "a sequence"],
    );
    parse_error(
        "users: [{uid: a, cn: A, disabled: yes}]",
        1,
        &["disabled", "a boolean"],
    );
    parse_error(
        "users: [{uid: a, cn: A, disabled: 'true'}]",
        1,
        &["a boolean"],
    );
    parse_error("users: {alice: {}}", 1, &["users", "expected a sequence"]);
    parse_error("users: ~", 1, &["users", "expected a sequence"]);
    parse_error("users: [alice]", 1, &["users[0]", "expected a mapping"]);
    parse_error(
        "groups: [{name: g, members: [[a]]}]",
        1,
        &["groups[0].members[0]"],
    );
    parse_error("- a\n- b\n", 1, &["expected a mapping"]);
    parse_error(
        "users: [{uid: a, cn: A, mail: !!null x}]",
        1,
        &["not a null"],
    );
}

#[test]
fn missing_and_repeated_fields_are_refused() {
    parse_error("users:\n  - uid: a\n", 2, &["users[0]: missing field `cn`"]);
    parse_error("users:\n  - cn: A\n", 2, &["missing field `uid`"]);
    parse_error("users:\n  -\n", 2, &["missing field `uid`"]);
    parse_error("groups: [{members: []}]", 1, &["missing field `name`"]);
    parse_error("users: []\nusers: []\n", 2, &["duplicate field `users`"]);
    parse_error(
        "users:\n- {uid: a, cn: A,\n   uid: b}",
        3,
        &["duplicate field `uid`"],
    );
    // A repeated attribute keeps its last value, as before.
    let s = parse("users: [{uid: a, cn: A, attributes: {x: 1, x: 2}}]").unwrap();
    assert_eq!(s.users.get("a").unwrap().to_user().attributes["x"], "2");
}

#[test]
fn inconsistencies_are_refused() {
    invalid("users: [{uid: '', cn: A}]", &["a user has an empty uid"]);
    invalid(
        "users: [{uid: a, cn: A}, {uid: a, cn: B}]",
        &["user \"a\" is listed twice"],
    );
    invalid(
        "users: [{uid: a, cn: A}]\ngroups: [{name: g}, {name: g}]",
        &["group \"g\" is listed twice"],
    );
    invalid(
        "groups: [{name: g, members: [a, zed]}]\nusers: [{uid: a, cn: A}]",
        &["group \"g\" lists member \"zed\""],
    );
    invalid(
        "groups: [{name: g, groups: [h]}]",
        &["group \"g\" nests unknown group \"h\""],
    );
    // Members may be listed before the users section.
    let s = parse("groups: [{name: g, members: [a]}]\nusers: [{uid: a, cn: A}]").unwrap();
    assert!(s.is_member("a", "g", false));
}

#[test]
fn errors_come_in_the_former_order() {
    // A shape error gives way to an anchor later in the text (the guard ran first).
    parse_error(
        "colour: red\nusers: [{uid: a, cn: &x A}]\n",
        2,
        &["anchors"],
    );
    // An alias is refused too: with anchors refused, it can only name an unknown one.
    parse_error("users: [{uid: a, cn: *x}]\n", 1, &["unknown anchor"]);
    // A syntax error anywhere beats a shape error before it.
    let e = parse("colour: red\nusers: [\n").unwrap_err();
    assert!(
        matches!(e, FileDirectoryError::Parse { line, .. } if line >= 2),
        "{e}"
    );
    // Shape errors beat inconsistencies before them.
    parse_error(
        "users: [{uid: a, cn: A}, {uid: a, cn: A}]\ngroups: 3\n",
        2,
        &["groups"],
    );
    // The first inconsistency among users beats those among groups.
    invalid(
        "groups: [{name: g, members: [zed]}]\nusers: [{uid: a, cn: A}, {uid: a, cn: A}]",
        &["listed twice"],
    );
}

#[test]
fn a_second_document_is_refused() {
    parse_error("users: []\n---\ngroups: []\n", 2, &["one YAML document"]);
    parse_error("---\nusers: []\n...\n---\n", 4, &["one YAML document"]);
    assert!(parse("---\nusers: []\n...\n").is_ok());
}

#[test]
fn oversized_files_are_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.yaml");
    let file = std::fs::File::create(&path).unwrap();
    // Sparse: no disk space, no memory; the reader must refuse it on its size.
    file.set_len(MAX_FILE_BYTES + 1).unwrap();
    let e = read_file_directory(&path).unwrap_err();
    assert!(matches!(e, FileDirectoryError::Invalid { .. }), "{e}");
    assert!(e.to_string().contains("larger than"), "{e}");
    let e = read_file_directory(&dir.path().join("absent.yaml")).unwrap_err();
    assert!(matches!(e, FileDirectoryError::Read { .. }), "{e}");
    std::fs::write(&path, SAMPLE).unwrap();
    let s = read_file_directory(&path).unwrap();
    assert_eq!(s, parse(SAMPLE).unwrap());
}

#[test]
fn floats_print_as_serde_yaml_printed_them() {
    for f in [
        0.1,
        1.0,
        -1.0,
        1e15,
        1e16,
        1.5e16,
        123456.789,
        1e-5,
        1.25e-4,
        -0.0,
        5e-324,
        1e308,
        -841468054880354.3,
        0.3,
        2.5,
        1e23,
        f64::MAX,
        f64::MIN_POSITIVE,
    ] {
        let want = serde_yaml::Number::from(f).to_string();
        assert_eq!(format_float(f), want, "{f:e}");
    }
}

/// The former reader (a saphyr guard pass, then serde_yaml into intermediate structs),
/// kept as the reference the streaming reader must agree with.
mod reference {
    use std::collections::BTreeMap;
    use std::path::Path;

    use serde::Deserialize;

    use super::super::{DirectorySnapshot, Events, FileDirectoryError, Stop};
    use crate::observe::snapshot::DirectoryGroup;
    use crate::observe::snapshot::DirectoryUser;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct FileDoc {
        #[serde(default)]
        users: Vec<FileUser>,
        #[serde(default)]
        groups: Vec<FileGroup>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct FileUser {
        uid: String,
        cn: String,
        #[serde(default)]
        mail: Option<String>,
        #[serde(default)]
        upn: Option<String>,
        #[serde(default)]
        dn: Option<String>,
        #[serde(default)]
        disabled: bool,
        #[serde(default)]
        attributes: BTreeMap<String, serde_yaml::Value>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct FileGroup {
        name: String,
        #[serde(default)]
        members: Vec<String>,
        #[serde(default)]
        groups: Vec<String>,
    }

    fn guard(path: &Path, text: &str) -> Result<(), FileDirectoryError> {
        let mut events = Events {
            path,
            parser: saphyr_parser::Parser::new_from_str(text),
            depth: 0,
        };
        loop {
            match events.next() {
                Err(Stop::Guard(e) | Stop::Shape(e)) => return Err(e),
                Ok((saphyr_parser::Event::StreamEnd, _)) => return Ok(()),
                Ok(_) => {}
            }
        }
    }

    pub(super) fn parse(text: &str) -> Result<DirectorySnapshot, FileDirectoryError> {
        let path = Path::new("d.yaml");
        guard(path, text)?;
        let doc: FileDoc = serde_yaml::from_str(text).map_err(|e| FileDirectoryError::Parse {
            path: path.to_path_buf(),
            line: e.location().map(|l| l.line()).unwrap_or(0),
            message: e.to_string(),
        })?;
        let invalid = |message: String| FileDirectoryError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let mut users = Vec::new();
        let mut uids = std::collections::BTreeSet::new();
        for u in doc.users {
            if u.uid.is_empty() {
                return Err(invalid("a user has an empty uid".into()));
            }
            let mut attributes = BTreeMap::new();
            for (k, v) in u.attributes {
                let value = match v {
                    serde_yaml::Value::String(s) => s,
                    serde_yaml::Value::Number(n) => n.to_string(),
                    serde_yaml::Value::Bool(b) => b.to_string(),
                    other => return Err(invalid(format!("attribute {k:?}: {other:?}"))),
                };
                attributes.insert(k, value);
            }
            let user = DirectoryUser {
                uid: u.uid.clone(),
                dn: u.dn,
                cn: u.cn,
                mail: u.mail,
                upn: u.upn,
                disabled: u.disabled,
                stable_id: None,
                attributes,
            };
            if !uids.insert(u.uid.clone()) {
                return Err(invalid(format!("user {:?} is listed twice", u.uid)));
            }
            users.push(user);
        }
        let mut snapshot = DirectorySnapshot {
            users: users.into_iter().collect(),
            complete: true,
            ..DirectorySnapshot::default()
        };
        for g in doc.groups {
            if let Some(unknown) = g.members.iter().find(|m| !snapshot.users.contains_key(m)) {
                return Err(invalid(format!(
                    "group {:?} lists member {unknown:?}, who is not among the users",
                    g.name
                )));
            }
            let rows = g.members.iter().filter_map(|m| snapshot.users.index_of(m));
            let group = DirectoryGroup::new(
                g.name.clone(),
                rows.collect(),
                g.groups.into_iter().collect(),
            );
            if snapshot.groups.insert(g.name.clone(), group).is_some() {
                return Err(invalid(format!("group {:?} is listed twice", g.name)));
            }
        }
        for g in snapshot.groups.values() {
            if let Some(unknown) = g.groups.iter().find(|n| !snapshot.groups.contains_key(*n)) {
                return Err(invalid(format!(
                    "group {:?} nests unknown group {unknown:?}",
                    g.name
                )));
            }
        }
        Ok(snapshot)
    }
}

mod agreement {
    use proptest::prelude::*;

    use super::reference;
    use super::*;

    /// A string scalar as YAML: plain when that is safe, else double- or single-quoted.
    fn quote(s: &str, style: u8) -> String {
        let plain_safe = !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
            && parse_bool(s).is_none()
            && !is_null(s);
        match style % 3 {
            0 if plain_safe => s.to_owned(),
            1 => format!("'{}'", s.replace('\'', "''")),
            _ => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
        }
    }

    fn text() -> impl Strategy<Value = String> {
        "[a-z0-9 ._@,=*()'\"\\\\-]{0,10}"
    }

    fn attribute_value() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "42",
                "-7",
                "+5",
                "0x1F",
                "0xff",
                "0o17",
                "0b101",
                "007",
                "-00",
                "1.5",
                "1.50",
                "1e3",
                "-2.5e-8",
                "1E5",
                ".5",
                "5.",
                ".inf",
                "-.Inf",
                "+.INF",
                ".NaN",
                "true",
                "False",
                "TRUE",
                "yes",
                "no",
                "1_000",
                "0x",
                "1e400",
                "+-1",
                "-0",
                "18446744073709551615",
                "-9223372036854775808",
                "!!str 42",
                "!!int 0x10",
                "!!float 3",
                "!!bool true",
                "!!str ~",
                "\"42\"",
                "'x y'",
                "a b",
                "a:b",
            ])
            .prop_map(str::to_owned),
            any::<i64>().prop_map(|i| i.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:?}")),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:e}")),
            (text(), any::<u8>()).prop_map(|(s, q)| quote(&s, q.max(1))),
        ]
    }

    #[derive(Debug, Clone)]
    struct User {
        uid: String,
        cn: String,
        optional: [Option<String>; 3],
        disabled: Option<bool>,
        attributes: Vec<(String, String)>,
        quoting: u8,
        flow: bool,
    }

    fn user() -> impl Strategy<Value = User> {
        (
            text(),
            text(),
            [
                proptest::option::of(text()),
                proptest::option::of(text()),
                proptest::option::of(text()),
            ],
            proptest::option::of(any::<bool>()),
            prop::collection::vec(("[a-z][a-zA-Z0-9]{0,6}", attribute_value()), 0..4),
            any::<u8>(),
            any::<bool>(),
        )
            .prop_map(
                |(uid, cn, optional, disabled, attributes, quoting, flow)| User {
                    uid,
                    cn,
                    optional,
                    disabled,
                    attributes,
                    quoting,
                    flow,
                },
            )
    }

    /// A valid directory as YAML text: unique uids and group names, members among the
    /// users, subgroups among the groups; block or flow style per entry.
    fn directory() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(user(), 0..8),
            prop::collection::vec(
                (
                    prop::collection::vec(any::<prop::sample::Index>(), 0..5),
                    prop::collection::vec(any::<prop::sample::Index>(), 0..3),
                    any::<bool>(),
                ),
                0..5,
            ),
            any::<bool>(),
        )
            .prop_map(|(users, groups, groups_first)| render(&users, &groups, groups_first))
    }

    type GroupSpec = (Vec<prop::sample::Index>, Vec<prop::sample::Index>, bool);

    fn render(users: &[User], groups: &[GroupSpec], groups_first: bool) -> String {
        let uids: Vec<String> = users
            .iter()
            .enumerate()
            .map(|(i, u)| format!("{}{i}", u.uid))
            .collect();
        let mut users_text = String::from("users:\n");
        for (u, uid) in users.iter().zip(&uids) {
            let q = |s: &str| quote(s, u.quoting);
            let mut fields = vec![format!("uid: {}", q(uid)), format!("cn: {}", q(&u.cn))];
            for (name, value) in ["mail", "upn", "dn"].iter().zip(&u.optional) {
                if let Some(v) = value {
                    fields.push(format!("{name}: {}", q(v)));
                }
            }
            if let Some(d) = u.disabled {
                fields.push(format!("disabled: {d}"));
            }
            let attrs: Vec<String> = u
                .attributes
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            if u.flow {
                if !attrs.is_empty() {
                    fields.push(format!("attributes: {{{}}}", attrs.join(", ")));
                }
                users_text += &format!("  - {{{}}}\n", fields.join(", "));
            } else {
                users_text += &format!("  - {}\n", fields.join("\n    "));
                if !attrs.is_empty() {
                    users_text += &format!("    attributes:\n      {}\n", attrs.join("\n      "));
                }
            }
        }
        let mut groups_text = String::from("groups:\n");
        for (i, (members, nested, flow)) in groups.iter().enumerate() {
            let members: Vec<String> = match uids.is_empty() {
                true => Vec::new(),
                false => members
                    .iter()
                    .map(|m| quote(m.get::<String>(&uids), 2))
                    .collect(),
            };
            let nested: Vec<String> = nested
                .iter()
                .map(|n| format!("g{}", n.index(groups.len())))
                .collect();
            if *flow {
                groups_text += &format!(
                    "  - {{name: g{i}, members: [{}], groups: [{}]}}\n",
                    members.join(", "),
                    nested.join(", ")
                );
            } else {
                groups_text += &format!("  - name: g{i}\n    members:\n");
                for m in &members {
                    groups_text += &format!("      - {m}\n");
                }
                groups_text += "    groups:\n";
                for n in &nested {
                    groups_text += &format!("      - {n}\n");
                }
            }
        }
        match groups_first {
            true => groups_text + &users_text,
            false => users_text + &groups_text,
        }
    }

    /// The streaming reader accepts every text the former reader accepted and builds the
    /// same snapshot; with `strict`, it also refuses every text the former one refused.
    /// (On arbitrary text it may accept what the former one refused: libyaml, under
    /// serde_yaml, reads some odd syntax differently from saphyr, e.g. U+2028 as a line
    /// break inside a comment, or `---` at the start of a line inside a flow mapping.)
    fn agree(text: &str, strict: bool) -> Result<(), TestCaseError> {
        let new = parse(text);
        let old = reference::parse(text);
        match (&new, &old) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "{}", text),
            (Err(_), Err(_)) => {}
            (Ok(_), Err(_)) if !strict => {}
            _ => prop_assert!(
                false,
                "disagree on {:?}: new {:?}, old {:?}",
                text,
                new,
                old
            ),
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn agrees_with_the_former_reader_on_valid_directories(text in directory()) {
            prop_assert!(parse(&text).is_ok(), "{:?}: {:?}", text, parse(&text));
            agree(&text, true)?;
        }

        #[test]
        fn never_panics_and_agrees_on_arbitrary_text(text in "\\PC{0,120}") {
            agree(&text, false)?;
        }

        #[test]
        fn never_panics_and_agrees_on_damaged_directories(
            text in directory(),
            cut in any::<prop::sample::Index>(),
            insert in prop::sample::select(vec![
                "", "\n", " ", "- ", ": ", "{", "}", "[", "]", ",", "&a ", "*a", "!t ", "~",
                "\"", "'", "#", "---\n", "...\n", "? ", "|\n", "\t", "x: y\n", "  ", "%",
            ]),
            drop in 0usize..4,
        ) {
            // The generated text is ASCII: every index is a character boundary.
            let at = cut.index(text.len() + 1);
            let head = text.get(..at).unwrap_or_default();
            let tail: String = text.get(at..).unwrap_or_default().chars().skip(drop).collect();
            agree(&format!("{head}{insert}{tail}"), false)?;
        }
    }
}
