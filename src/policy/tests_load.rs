//! Loading the `PolicyTest`s of a policy directory: every YAML file under `tests/`, with the
//! same defences and schema checks as policy files. Files a test names as its directory
//! fixture (or that a `Directory` in its `policy` documents names) are data, not tests; any
//! other document there that is not a `PolicyTest` is reported (`not-a-policy-test`), so a
//! misspelt kind never makes a test silently disappear.
//!
//! This module only parses; `crate::policytest` runs the tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::Object;
use super::diag::{Diagnostic, codes, pointer_to_path};
use super::load::{ParsedFile, collect_files, envelope, parse_file, yaml_error};
use super::model::{Kind, Manifest};
use super::schema::Validators;
use super::test_model::{PolicyTestSpec, TESTS_DIR};

/// One loaded test.
#[derive(Debug, Clone)]
pub struct LoadedTest {
    /// The test.
    pub test: Object<PolicyTestSpec>,
    /// The line of each of its `policy` documents in the test file.
    pub policy_lines: Vec<usize>,
}

/// The tests of a policy directory and the problems found loading them.
#[derive(Debug, Default)]
pub struct LoadedTests {
    /// The tests that loaded, in file order.
    pub tests: Vec<LoadedTest>,
    /// Files or documents that could not be loaded as tests.
    pub problems: Vec<Diagnostic>,
}

/// The data files that the tests of `files` name (canonical paths).
fn fixture_files(files: &[Result<ParsedFile, Box<Diagnostic>>]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for file in files.iter().flatten() {
        let base = file.path.parent().unwrap_or(Path::new("."));
        for doc in &file.docs {
            if doc.value.get("kind").and_then(Value::as_str) != Some(Kind::PolicyTest.as_str()) {
                continue;
            }
            let mut named = Vec::new();
            if let Some(p) = doc.value.pointer("/spec/directory/file") {
                named.push(p);
            }
            if let Some(Value::Array(policy)) = doc.value.pointer("/spec/policy") {
                named.extend(policy.iter().filter_map(|d| d.pointer("/spec/file/path")));
            }
            for rel in named.into_iter().filter_map(Value::as_str) {
                if let Ok(p) = base.join(rel).canonicalize() {
                    out.insert(p);
                }
            }
        }
    }
    out
}

/// Loads every `PolicyTest` under `root/tests/` (none when the folder does not exist).
pub fn load_policy_tests(root: &Path) -> LoadedTests {
    let mut out = LoadedTests::default();
    let dir = root.join(TESTS_DIR);
    if !dir.is_dir() {
        return out;
    }
    let validators = match Validators::new() {
        Ok(v) => v,
        Err(e) => {
            out.problems
                .push(Diagnostic::error(codes::IO, &dir, 0, e.to_string()));
            return out;
        }
    };
    let mut paths = Vec::new();
    collect_files(&dir, 1, &mut paths, &mut out.problems);
    let parsed: Vec<_> = paths.iter().map(|p| parse_file(p)).collect();
    let fixtures = fixture_files(&parsed);
    let mut seen: BTreeMap<String, (PathBuf, usize)> = BTreeMap::new();
    for (path, file) in paths.iter().zip(parsed) {
        if path.canonicalize().is_ok_and(|c| fixtures.contains(&c)) {
            continue;
        }
        let file = match file {
            Ok(f) => f,
            Err(d) => {
                out.problems.push(*d);
                continue;
            }
        };
        let mut wanted = BTreeMap::new();
        for doc in &file.docs {
            if doc.value.is_null() {
                continue;
            }
            let Some(env) = envelope(&file.path, doc, &mut out.problems) else {
                continue;
            };
            let line = doc.map.locate("").line;
            if env.kind != Kind::PolicyTest {
                out.problems.push(
                    Diagnostic::error(
                        codes::NOT_A_POLICY_TEST,
                        &file.path,
                        line,
                        format!(
                            "{TESTS_DIR}/ holds PolicyTest objects and their fixture files; \
                             a {} here is neither",
                            env.kind
                        ),
                    )
                    .for_object(Some(env.kind.as_str()), env.name.as_deref()),
                );
                continue;
            }
            let issues = validators.check(env.kind, &doc.value);
            if issues.is_empty() {
                wanted.insert(doc.index, doc.map.clone());
                continue;
            }
            for issue in issues {
                let pos = doc.map.locate(&issue.locate);
                out.problems.push(
                    Diagnostic::error(issue.code, &file.path, pos.line, issue.message)
                        .at_column(pos.column)
                        .for_object(Some(env.kind.as_str()), env.name.as_deref())
                        .at_path(pointer_to_path(&issue.path)),
                );
            }
        }
        for (index, de) in serde_yaml::Deserializer::from_str(&file.text).enumerate() {
            let Some(map) = wanted.get(&index) else {
                continue;
            };
            let line = map.locate("").line;
            match <Manifest<PolicyTestSpec> as serde::Deserialize>::deserialize(de) {
                Ok(m) => {
                    let name = m.metadata.name;
                    if let Some((first, first_line)) = seen.get(&name) {
                        out.problems.push(
                            Diagnostic::error(
                                codes::DUPLICATE_NAME,
                                &file.path,
                                line,
                                format!(
                                    "duplicate PolicyTest name `{name}` (first defined at {}:{})",
                                    first.display(),
                                    first_line
                                ),
                            )
                            .for_object(Some(Kind::PolicyTest.as_str()), Some(&name)),
                        );
                        continue;
                    }
                    seen.insert(name.clone(), (file.path.clone(), line));
                    let policy_lines = (0..m.spec.policy.len())
                        .map(|i| map.locate(&format!("/spec/policy/{i}")).line)
                        .collect();
                    out.tests.push(LoadedTest {
                        test: Object {
                            name,
                            file: file.path.clone(),
                            line,
                            spec: m.spec,
                        },
                        policy_lines,
                    });
                }
                Err(e) => out.problems.push(
                    yaml_error(&file.path, &e, codes::INVALID_VALUE)
                        .for_object(Some(Kind::PolicyTest.as_str()), None),
                ),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::load::{Overlay, load_policy_set, load_with_overlay};

    fn write(dir: &Path, name: &str, text: &str) {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    const CA: &str = "apiVersion: keyfleet.dev/v1\nkind: CertificateAuthority\nmetadata:\n  name: lab\nspec:\n  local:\n    subject: CN=Lab CA,O=Example\n";

    const TEST: &str = "apiVersion: keyfleet.dev/v1\nkind: PolicyTest\nmetadata: {name: t}\nspec:\n  now: 2026-01-01T00:00:00Z\n  directory: {file: data/people.yaml}\n  expect: {plan: {actions: []}}\n";

    #[test]
    fn tests_folder_is_not_policy_and_its_tests_load() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "ca.yaml", CA);
        write(dir.path(), "tests/t.yaml", TEST);
        // A fixture file is data, not a stray document.
        write(
            dir.path(),
            "tests/data/people.yaml",
            "users: []\ngroups: []\n",
        );
        let set = load_policy_set(dir.path()).unwrap();
        assert_eq!(set.object_count(), 1);
        let loaded = load_policy_tests(dir.path());
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        assert_eq!(loaded.tests.len(), 1);
        assert_eq!(loaded.tests[0].test.name, "t");
        assert_eq!(loaded.tests[0].test.line, 1);
    }

    #[test]
    fn policy_test_outside_tests_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "ca.yaml", CA);
        write(dir.path(), "sub/t.yaml", TEST);
        let err = load_policy_set(dir.path()).unwrap_err();
        let d = err.errors().next().unwrap();
        assert_eq!(d.code, codes::POLICY_TEST_OUTSIDE_TESTS);
        assert_eq!(d.line, 1);
        assert!(d.file.ends_with("sub/t.yaml"));
    }

    #[test]
    fn stray_and_invalid_documents_under_tests_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "ca.yaml", CA);
        write(dir.path(), "tests/ca.yaml", CA);
        write(
            dir.path(),
            "tests/bad.yaml",
            "apiVersion: keyfleet.dev/v1\nkind: PolicyTest\nmetadata: {name: bad}\nspec:\n  now: x\n  expect: {plan: {}, validationErrors: []}\n",
        );
        let loaded = load_policy_tests(dir.path());
        assert!(loaded.tests.is_empty());
        let codes: Vec<&str> = loaded.problems.iter().map(|d| d.code).collect();
        assert!(codes.contains(&codes::NOT_A_POLICY_TEST), "{codes:?}");
        // Both plan and validationErrors: the schema's oneOf refuses it.
        assert!(
            loaded
                .problems
                .iter()
                .any(|d| d.file.ends_with("bad.yaml") && d.line == 6),
            "{:?}",
            loaded.problems
        );
    }

    #[test]
    fn overlay_replaces_same_kind_and_name_and_adds_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "ca.yaml", CA);
        let overlay = Overlay {
            file: dir.path().join("tests/t.yaml"),
            text: format!(
                "---\n{}---\n{}",
                CA.replace("CN=Lab CA", "CN=New CA"),
                CA.replace("name: lab", "name: other")
            ),
        };
        let set = load_with_overlay(dir.path(), &overlay).unwrap();
        assert_eq!(set.authorities.len(), 2);
        let lab = &set.authorities["lab"];
        assert!(lab.file.ends_with("tests/t.yaml"));
        assert!(format!("{:?}", lab.spec).contains("CN=New CA"));
        // Without the overlay, the set is as written.
        let plain = load_policy_set(dir.path()).unwrap();
        assert!(format!("{:?}", plain.authorities["lab"].spec).contains("CN=Lab CA"));
    }
}
