//! Loading a policy directory: find the YAML files, refuse hostile input (size cap, UTF-8,
//! alias/node budget), parse every document, check it against its kind's schema, deserialize
//! it into typed objects and assemble a [`PolicySet`]. Every problem becomes a located
//! [`Diagnostic`]; loading never stops at the first one.
//!
//! This module does not make cross-object (semantic) checks itself; it calls `validate` for
//! those. It skips the data files that `Directory` objects of kind `file` name, and never
//! reads them as policy.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::diag::{Diagnostic, Diagnostics, codes, pointer_to_path};
use super::model::{Kind, Manifest};
use super::schema::Validators;
use super::test_model::TESTS_DIR;
use super::yaml::{self, DocMap, ScanProblem};
use super::{Object, PolicySet};

/// Largest policy file accepted (1 MiB); a real policy file is a few kilobytes.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Deepest folder nesting searched under the policy directory.
const MAX_DIR_DEPTH: usize = 16;

/// Where each loaded object's nodes are, for semantic diagnostics on sub-paths.
pub type Locations = BTreeMap<(Kind, String), DocMap>;

/// One parsed document, before typed deserialisation.
pub(super) struct RawDoc {
    pub(super) index: usize,
    pub(super) map: DocMap,
    pub(super) value: Value,
}

/// One file after the pre-pass and the parse into values.
pub(super) struct ParsedFile {
    pub(super) path: PathBuf,
    pub(super) text: String,
    pub(super) docs: Vec<RawDoc>,
}

/// Policy documents laid over a policy set (a `PolicyTest`'s `policy`): an object with the
/// kind and name of one in the set replaces it, the others are added.
#[derive(Debug, Clone)]
pub struct Overlay {
    /// The file the documents are written in (diagnostics name it; relative paths in them
    /// resolve against its folder).
    pub file: PathBuf,
    /// The documents as YAML (several, separated by `---`).
    pub text: String,
}

/// Reads a YAML file with the same defences policy files get (size cap, UTF-8, alias/node/depth
/// budget), so other readers (e.g. the file directory's data file) can reuse them.
pub fn read_checked_yaml(path: &Path) -> Result<String, Box<Diagnostic>> {
    read_checked(path).map(|(text, _)| text)
}

pub(super) fn read_checked(path: &Path) -> Result<(String, Vec<DocMap>), Box<Diagnostic>> {
    let io =
        |e: std::io::Error| Diagnostic::error(codes::IO, path, 0, format!("cannot read file: {e}"));
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let too_large = |n: u64| {
        Diagnostic::error(
            codes::FILE_TOO_LARGE,
            path,
            1,
            format!("file is {n} bytes; policy files are limited to {MAX_FILE_BYTES} bytes"),
        )
    };
    if len > MAX_FILE_BYTES {
        return Err(Box::new(too_large(len)));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Box::new(too_large(bytes.len() as u64)));
    }
    let text = utf8_text(path, bytes)?;
    let maps = scan_text(path, &text)?;
    Ok((text, maps))
}

fn utf8_text(path: &Path, bytes: Vec<u8>) -> Result<String, Box<Diagnostic>> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let prefix = e.as_bytes().get(..valid).unwrap_or_default();
        let line = prefix.iter().filter(|b| **b == b'\n').count() + 1;
        let column = valid
            - prefix
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1)
            + 1;
        Diagnostic::error(
            codes::NOT_UTF8,
            path,
            line,
            format!("file is not valid UTF-8 (invalid byte at line {line}, column {column})"),
        )
        .at_column(column)
        .into()
    })
}

/// The alias/node/depth budget and the line map of a YAML text.
fn scan_text(path: &Path, text: &str) -> Result<Vec<DocMap>, Box<Diagnostic>> {
    yaml::scan(text).map_err(|p| {
        let pos = p.pos();
        let code = match p {
            ScanProblem::Syntax { .. } => codes::YAML_SYNTAX,
            _ => codes::YAML_BUDGET,
        };
        let message = match &p {
            ScanProblem::Syntax { message, .. } => {
                format!(
                    "YAML syntax error at line {} column {}: {message}",
                    pos.line, pos.column
                )
            }
            other => other.to_string(),
        };
        Box::new(Diagnostic::error(code, path, pos.line, message).at_column(pos.column))
    })
}

pub(super) fn yaml_error(path: &Path, e: &serde_yaml::Error, code: &'static str) -> Diagnostic {
    let (line, column) = e
        .location()
        .map_or((1, None), |l| (l.line(), Some(l.column())));
    let mut message = e.to_string();
    if let Some(loc) = e.location() {
        let suffix = format!(" at line {} column {}", loc.line(), loc.column());
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_string();
        }
    }
    // serde_yaml prefixes the path inside the document: "spec.certificates[0].slot: ...".
    let mut path_part = String::new();
    if let Some((prefix, rest)) = message.split_once(": ") {
        let is_path = !prefix.is_empty()
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '[' | ']' | '_' | '-'));
        if is_path {
            path_part = prefix.to_string();
            message = rest.to_string();
        }
    }
    let mut d = Diagnostic::error(code, path, line, message).at_path(path_part);
    d.column = column;
    d
}

pub(super) fn parse_file(path: &Path) -> Result<ParsedFile, Box<Diagnostic>> {
    let (text, maps) = read_checked(path)?;
    parse_docs(path, text, &maps)
}

/// Parses YAML text that is not read from a file (an overlay) with the same defences.
fn parse_text(path: &Path, text: String) -> Result<ParsedFile, Box<Diagnostic>> {
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(Box::new(Diagnostic::error(
            codes::FILE_TOO_LARGE,
            path,
            1,
            format!("policy documents are limited to {MAX_FILE_BYTES} bytes"),
        )));
    }
    let maps = scan_text(path, &text)?;
    parse_docs(path, text, &maps)
}

fn parse_docs(path: &Path, text: String, maps: &[DocMap]) -> Result<ParsedFile, Box<Diagnostic>> {
    let mut docs = Vec::new();
    for (index, de) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        match Value::deserialize(de) {
            Ok(value) => docs.push(RawDoc {
                index,
                map: maps.get(index).cloned().unwrap_or_default(),
                value,
            }),
            // After an error serde_yaml repeats it forever: stop at the first.
            Err(e) => return Err(Box::new(yaml_error(path, &e, codes::YAML_SYNTAX))),
        }
    }
    Ok(ParsedFile {
        path: path.to_path_buf(),
        text,
        docs,
    })
}

/// The YAML files under `dir`, sorted. At the top of a policy directory (`depth` 0) the
/// `tests/` folder is left out: it holds `PolicyTest`s and their fixtures, which are not policy.
pub(super) fn collect_files(
    dir: &Path,
    depth: usize,
    out: &mut Vec<PathBuf>,
    diags: &mut Vec<Diagnostic>,
) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            diags.push(Diagnostic::error(
                codes::IO,
                dir,
                0,
                format!("cannot read directory: {e}"),
            ));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        let tests = depth == 0 && path.file_name().is_some_and(|n| n == TESTS_DIR);
        if hidden || (tests && path.is_dir()) {
            continue;
        }
        if path.is_dir() {
            if depth < MAX_DIR_DEPTH {
                collect_files(&path, depth + 1, out, diags);
            }
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "yaml" || e == "yml")
        {
            out.push(path);
        }
    }
}

/// The YAML files the loader reads under `dir` (the policy files, and the data files of
/// `file` directories among them), sorted; folders it cannot read and `tests/` are left out.
pub fn policy_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    collect_files(dir, 0, &mut out, &mut Vec::new());
    out
}

/// The data files named by `Directory` objects with a `file` spec (canonical paths).
fn data_files(files: &[Result<ParsedFile, Box<Diagnostic>>]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for file in files.iter().flatten() {
        for doc in &file.docs {
            if doc.value.get("kind").and_then(Value::as_str) != Some(Kind::Directory.as_str()) {
                continue;
            }
            let Some(rel) = doc.value.pointer("/spec/file/path").and_then(Value::as_str) else {
                continue;
            };
            let base = file.path.parent().unwrap_or(Path::new("."));
            if let Ok(p) = base.join(rel).canonicalize() {
                out.insert(p);
            }
        }
    }
    out
}

/// What the loader knows about one document after its envelope was read.
pub(super) struct Envelope {
    pub(super) kind: Kind,
    pub(super) name: Option<String>,
}

pub(super) fn envelope(path: &Path, doc: &RawDoc, diags: &mut Vec<Diagnostic>) -> Option<Envelope> {
    let root_line = doc.map.locate("").line;
    let Some(obj) = doc.value.as_object() else {
        diags.push(Diagnostic::error(
            codes::NOT_A_MAPPING,
            path,
            root_line,
            "a policy document must be a mapping with apiVersion, kind, metadata and spec",
        ));
        return None;
    };
    let name = obj
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let known = Kind::ALL.map(Kind::as_str).join(", ");
    let kind = match obj.get("kind") {
        None => {
            diags.push(
                Diagnostic::error(
                    codes::MISSING_KIND,
                    path,
                    root_line,
                    format!("document has no `kind` (one of: {known})"),
                )
                .for_object(None, name.as_deref()),
            );
            return None;
        }
        Some(k) => k,
    };
    let kind_line = doc.map.locate("/kind").line;
    match kind.as_str().and_then(Kind::from_name) {
        Some(kind) => Some(Envelope { kind, name }),
        None => {
            let shown = kind
                .as_str()
                .map_or_else(|| kind.to_string(), str::to_string);
            diags.push(
                Diagnostic::error(
                    codes::UNKNOWN_KIND,
                    path,
                    kind_line,
                    format!("unknown kind {shown:?} (one of: {known})"),
                )
                .for_object(Some(&shown), name.as_deref())
                .at_path("kind"),
            );
            None
        }
    }
}

/// Everything the loader collects before semantic validation.
struct Loader {
    set: PolicySet,
    locations: Locations,
    /// Objects that were written but failed to load: references to them are not reported
    /// again as dangling.
    failed: BTreeSet<(Kind, String)>,
    settings_seen: Option<(PathBuf, usize)>,
    diags: Vec<Diagnostic>,
}

impl Loader {
    fn insert<S>(
        &mut self,
        kind: Kind,
        map: BTreeMap<String, Object<S>>,
        object: Object<S>,
        doc_map: DocMap,
    ) -> BTreeMap<String, Object<S>> {
        let mut map = map;
        if let Some(first) = map.get(&object.name) {
            self.diags.push(
                Diagnostic::error(
                    codes::DUPLICATE_NAME,
                    &object.file,
                    doc_map.locate("/metadata/name").line,
                    format!(
                        "duplicate {kind} name `{}` (first defined at {}:{})",
                        object.name,
                        first.file.display(),
                        first.line
                    ),
                )
                .for_object(Some(kind.as_str()), Some(&object.name))
                .at_path("metadata.name"),
            );
            return map;
        }
        self.locations.insert((kind, object.name.clone()), doc_map);
        map.insert(object.name.clone(), object);
        map
    }

    fn typed<S: DeserializeOwned>(
        &mut self,
        path: &Path,
        de: serde_yaml::Deserializer<'_>,
        kind: Kind,
        name: &str,
        doc_map: &DocMap,
    ) -> Option<Object<S>> {
        match Manifest::<S>::deserialize(de) {
            Ok(m) => Some(Object {
                name: m.metadata.name,
                file: path.to_path_buf(),
                line: doc_map.locate("").line,
                spec: m.spec,
            }),
            Err(e) => {
                let d = yaml_error(path, &e, codes::INVALID_VALUE);
                self.diags
                    .push(d.for_object(Some(kind.as_str()), Some(name)));
                self.failed.insert((kind, name.to_string()));
                None
            }
        }
    }

    fn load_typed(&mut self, file: &ParsedFile, wanted: &BTreeMap<usize, (Kind, String, DocMap)>) {
        for (index, de) in serde_yaml::Deserializer::from_str(&file.text).enumerate() {
            let Some((kind, name, doc_map)) = wanted.get(&index) else {
                continue;
            };
            let (kind, name, doc_map) = (*kind, name.as_str(), doc_map.clone());
            let path = file.path.as_path();
            match kind {
                Kind::CertificateAuthority => {
                    if let Some(o) = self.typed(path, de, kind, name, &doc_map) {
                        let m = std::mem::take(&mut self.set.authorities);
                        self.set.authorities = self.insert(kind, m, o, doc_map);
                    }
                }
                Kind::Directory => {
                    if let Some(o) = self.typed(path, de, kind, name, &doc_map) {
                        let m = std::mem::take(&mut self.set.directories);
                        self.set.directories = self.insert(kind, m, o, doc_map);
                    }
                }
                Kind::CardTemplate => {
                    if let Some(o) = self.typed(path, de, kind, name, &doc_map) {
                        let m = std::mem::take(&mut self.set.templates);
                        self.set.templates = self.insert(kind, m, o, doc_map);
                    }
                }
                Kind::Assignment => {
                    if let Some(o) = self.typed(path, de, kind, name, &doc_map) {
                        let m = std::mem::take(&mut self.set.assignments);
                        self.set.assignments = self.insert(kind, m, o, doc_map);
                    }
                }
                Kind::CardStock => {
                    if let Some(o) = self.typed(path, de, kind, name, &doc_map) {
                        let m = std::mem::take(&mut self.set.stocks);
                        self.set.stocks = self.insert(kind, m, o, doc_map);
                    }
                }
                Kind::CardBinding => {
                    if let Some(o) = self.typed(path, de, kind, name, &doc_map) {
                        let m = std::mem::take(&mut self.set.bindings);
                        self.set.bindings = self.insert(kind, m, o, doc_map);
                    }
                }
                Kind::Role => {
                    if let Some(o) = self.typed(path, de, kind, name, &doc_map) {
                        let m = std::mem::take(&mut self.set.roles);
                        self.set.roles = self.insert(kind, m, o, doc_map);
                    }
                }
                // Refused before typed loading (see `load_impl`).
                Kind::PolicyTest => {}
                Kind::Settings => {
                    if let Some(o) = self.typed(path, de, kind, name, &doc_map) {
                        if let Some((first_file, first_line)) = &self.settings_seen {
                            self.diags.push(
                                Diagnostic::error(
                                    codes::MULTIPLE_SETTINGS,
                                    path,
                                    o.line,
                                    format!(
                                        "only one Settings object is allowed (first at {}:{})",
                                        first_file.display(),
                                        first_line
                                    ),
                                )
                                .for_object(Some(kind.as_str()), Some(&o.name)),
                            );
                        } else {
                            self.settings_seen = Some((o.file.clone(), o.line));
                            self.locations.insert((kind, o.name.clone()), doc_map);
                            self.set.settings = o;
                        }
                    }
                }
            }
        }
    }
}

/// Loads and validates every policy object under `dir` (recursively, `*.yaml`/`*.yml`,
/// several documents per file). Returns the set with its warnings, or every error found
/// (warnings included) when it is invalid.
pub fn load_policy_set(dir: &Path) -> Result<PolicySet, Diagnostics> {
    load_with_locations(dir).map(|(set, _)| set)
}

/// Like [`load_policy_set`], also returning where each object's nodes are.
pub fn load_with_locations(dir: &Path) -> Result<(PolicySet, Locations), Diagnostics> {
    load_impl(dir, None)
}

/// Like [`load_policy_set`], with `overlay`'s documents laid over the set: each replaces the
/// object of its kind and name, or is added.
pub fn load_with_overlay(dir: &Path, overlay: &Overlay) -> Result<PolicySet, Diagnostics> {
    load_impl(dir, Some(overlay)).map(|(set, _)| set)
}

/// The (kind, name) of every document of an overlay that names both.
fn overlay_keys(file: &ParsedFile) -> BTreeSet<(String, String)> {
    file.docs
        .iter()
        .filter_map(|d| {
            let kind = d.value.get("kind")?.as_str()?;
            let name = d.value.pointer("/metadata/name")?.as_str()?;
            Some((kind.to_string(), name.to_string()))
        })
        .collect()
}

fn load_impl(dir: &Path, overlay: Option<&Overlay>) -> Result<(PolicySet, Locations), Diagnostics> {
    let mut loader = Loader {
        set: PolicySet::empty(dir),
        locations: Locations::new(),
        failed: BTreeSet::new(),
        settings_seen: None,
        diags: Vec::new(),
    };
    if !dir.is_dir() {
        return Err(Diagnostics(vec![Diagnostic::error(
            codes::IO,
            dir,
            0,
            "policy directory does not exist or is not a directory",
        )]));
    }
    let validators = match Validators::new() {
        Ok(v) => v,
        Err(e) => {
            return Err(Diagnostics(vec![Diagnostic::error(
                codes::IO,
                dir,
                0,
                e.to_string(),
            )]));
        }
    };

    let mut paths = Vec::new();
    collect_files(dir, 0, &mut paths, &mut loader.diags);
    let mut parsed: Vec<Result<ParsedFile, Box<Diagnostic>>> =
        paths.iter().map(|p| parse_file(p)).collect();
    let mut replaced = BTreeSet::new();
    if let Some(o) = overlay {
        let file = parse_text(&o.file, o.text.clone());
        if let Ok(f) = &file {
            replaced = overlay_keys(f);
        }
        paths.push(o.file.clone());
        parsed.push(file);
    }
    let skip = data_files(&parsed);
    let overlay_index = overlay.map(|_| paths.len() - 1);

    for (i, (path, file)) in paths.iter().zip(parsed).enumerate() {
        let is_overlay = Some(i) == overlay_index;
        if !is_overlay && path.canonicalize().is_ok_and(|c| skip.contains(&c)) {
            continue;
        }
        let file = match file {
            Ok(f) => f,
            Err(d) => {
                loader.diags.push(*d);
                continue;
            }
        };
        let mut wanted = BTreeMap::new();
        for doc in &file.docs {
            if doc.value.is_null() {
                continue;
            }
            let Some(env) = envelope(&file.path, doc, &mut loader.diags) else {
                continue;
            };
            if !is_overlay
                && env
                    .name
                    .as_ref()
                    .is_some_and(|n| replaced.contains(&(env.kind.as_str().to_string(), n.clone())))
            {
                continue;
            }
            if env.kind == Kind::PolicyTest {
                loader.diags.push(
                    Diagnostic::error(
                        codes::POLICY_TEST_OUTSIDE_TESTS,
                        &file.path,
                        doc.map.locate("").line,
                        format!(
                            "a PolicyTest is not policy: put it under {TESTS_DIR}/ at the top of \
                             the policy directory, where `keyfleet test` runs it"
                        ),
                    )
                    .for_object(Some(env.kind.as_str()), env.name.as_deref()),
                );
                continue;
            }
            let issues = validators.check(env.kind, &doc.value);
            if issues.is_empty() {
                let name = env.name.unwrap_or_default();
                wanted.insert(doc.index, (env.kind, name, doc.map.clone()));
                continue;
            }
            if let Some(name) = &env.name {
                loader.failed.insert((env.kind, name.clone()));
            }
            for issue in issues {
                let pos = doc.map.locate(&issue.locate);
                loader.diags.push(
                    Diagnostic::error(issue.code, &file.path, pos.line, issue.message)
                        .at_column(pos.column)
                        .for_object(Some(env.kind.as_str()), env.name.as_deref())
                        .at_path(pointer_to_path(&issue.path)),
                );
            }
        }
        loader.load_typed(&file, &wanted);
    }

    if loader.set.object_count() == 0
        && loader.failed.is_empty()
        && !loader.diags.iter().any(Diagnostic::is_error)
    {
        loader.diags.push(Diagnostic::error(
            codes::EMPTY_POLICY_SET,
            dir,
            0,
            "no policy objects found: expected *.yaml files with apiVersion keyfleet.dev/v1 objects",
        ));
    }

    let semantic = super::validate::check(&loader.set, &loader.locations, &loader.failed);
    loader.diags.extend(semantic);
    loader.diags.sort_by(|a, b| {
        (&a.file, a.line, a.column, a.code).cmp(&(&b.file, b.line, b.column, b.code))
    });
    loader.diags.dedup();

    if loader.diags.iter().any(Diagnostic::is_error) {
        return Err(Diagnostics(loader.diags));
    }
    loader.set.warnings = loader.diags;
    Ok((loader.set, loader.locations))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(p, text).unwrap();
    }

    const CA: &str = "apiVersion: keyfleet.dev/v1\nkind: CertificateAuthority\nmetadata:\n  name: lab\nspec:\n  local:\n    subject: CN=Lab CA,O=Example\n";

    #[test]
    fn loads_multi_document_files_recursively() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "sub/ca.yaml",
            &format!(
                "---\n{CA}---\napiVersion: keyfleet.dev/v1\nkind: Settings\nmetadata: {{name: main}}\nspec: {{concurrency: 2}}\n"
            ),
        );
        let set = load_policy_set(dir.path()).unwrap();
        assert_eq!(set.authorities["lab"].line, 2);
        assert_eq!(set.settings.spec.concurrency, 2);
        assert_eq!(set.settings.line, 10);
        assert!(set.authorities["lab"].file.ends_with("sub/ca.yaml"));
    }

    #[test]
    fn empty_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "notes.txt", "not yaml");
        write(dir.path(), "empty.yaml", "# nothing\n");
        let err = load_policy_set(dir.path()).unwrap_err();
        assert_eq!(err.0[0].code, codes::EMPTY_POLICY_SET, "{err}");
    }

    #[test]
    fn schema_errors_are_located() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "ca.yaml", &format!("{CA}    colour: red\n"));
        let err = load_policy_set(dir.path()).unwrap_err();
        let d = &err.0[0];
        assert_eq!(d.code, codes::UNKNOWN_FIELD);
        assert_eq!(d.line, 8);
        assert_eq!(
            d.to_string(),
            format!(
                "{}:8: CertificateAuthority/lab: spec.local.colour: unknown field `colour`",
                dir.path().join("ca.yaml").display()
            )
        );
    }

    #[test]
    fn non_utf8_reports_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.yaml"), b"a: 1\nb: \xff\xfe\n").unwrap();
        let err = load_policy_set(dir.path()).unwrap_err();
        assert_eq!(err.0[0].code, codes::NOT_UTF8);
        assert_eq!(err.0[0].line, 2);
        assert_eq!(err.0[0].column, Some(4));
    }

    #[test]
    fn oversized_file_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("big.yaml"),
            vec![b'a'; (MAX_FILE_BYTES + 1) as usize],
        )
        .unwrap();
        let err = load_policy_set(dir.path()).unwrap_err();
        assert_eq!(err.0[0].code, codes::FILE_TOO_LARGE);
    }

    #[test]
    fn directory_data_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "dir.yaml",
            "apiVersion: keyfleet.dev/v1\nkind: Directory\nmetadata: {name: people}\nspec:\n  file: {path: data/people.yaml}\n",
        );
        write(
            dir.path(),
            "data/people.yaml",
            "users:\n- {uid: a, cn: A}\ngroups: []\n",
        );
        let set = load_policy_set(dir.path()).unwrap();
        assert_eq!(set.directories.len(), 1);
    }
}
