//! JSON schemas generated from the model (one per kind plus a bundle for editors), the
//! validators compiled from them, and the translation of schema errors into located,
//! readable problems.
//!
//! This module does not read policy files or map positions to lines (see `load`); it works
//! on `serde_json::Value` documents and JSON pointers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jsonschema::error::ValidationErrorKind;
use jsonschema::{ValidationError, Validator};
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use super::API_VERSION;
use super::diag::codes;
use super::duration::{DURATION_PATTERN, Duration};
use super::model::{
    AssignmentSpec, CardBindingSpec, CardStockSpec, CardTemplateSpec, CertificateAuthoritySpec,
    DirectorySpec, Kind, Manifest, NAME_PATTERN, RoleSpec, SettingsSpec,
};
use super::template::{TEMPLATE_PATTERN, TextTemplate};

/// File name of the bundle schema that accepts any kind (what policy files point editors at).
pub const BUNDLE_FILE: &str = "keyfleet.schema.json";

/// Errors generating, compiling or writing schemas.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// A generated schema does not compile (a bug in the model's schema attributes).
    #[error("generated schema for {kind} does not compile: {message}")]
    Compile {
        /// The kind.
        kind: Kind,
        /// The compiler's message.
        message: String,
    },
    /// The output directory cannot be created.
    #[error("cannot create schema directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A schema file cannot be written.
    #[error("cannot write schema file {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A schema could not be serialised (should not happen).
    #[error("cannot serialise schema for {0}")]
    Serialise(String, #[source] serde_json::Error),
}

fn manifest_schema<S: JsonSchema>(kind: Kind) -> Value {
    let generator = SchemaSettings::draft2020_12()
        .for_deserialize()
        .into_generator();
    let mut schema = generator.into_root_schema_for::<Manifest<S>>().to_value();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("title".into(), json!(kind.as_str()));
        obj.insert(
            "description".into(),
            json!(format!(
                "A Keyfleet {} policy object ({API_VERSION}).",
                kind.as_str()
            )),
        );
    }
    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert(
            "apiVersion".into(),
            json!({"const": API_VERSION, "description": "Always keyfleet.dev/v1."}),
        );
        props.insert(
            "kind".into(),
            json!({"const": kind.as_str(), "description": "The object's kind."}),
        );
    }
    schema
}

/// The JSON schema of one kind's documents.
pub fn kind_schema(kind: Kind) -> Value {
    match kind {
        Kind::CertificateAuthority => manifest_schema::<CertificateAuthoritySpec>(kind),
        Kind::Directory => manifest_schema::<DirectorySpec>(kind),
        Kind::CardTemplate => manifest_schema::<CardTemplateSpec>(kind),
        Kind::Assignment => manifest_schema::<AssignmentSpec>(kind),
        Kind::CardStock => manifest_schema::<CardStockSpec>(kind),
        Kind::CardBinding => manifest_schema::<CardBindingSpec>(kind),
        Kind::Role => manifest_schema::<RoleSpec>(kind),
        Kind::Settings => manifest_schema::<SettingsSpec>(kind),
        Kind::PolicyTest => manifest_schema::<super::test_model::PolicyTestSpec>(kind),
    }
}

/// The bundle schema: any Keyfleet document, dispatched on `kind`.
pub fn bundle_schema() -> Value {
    let mut defs = serde_json::Map::new();
    let mut all_of = Vec::new();
    for kind in Kind::ALL {
        let mut schema = kind_schema(kind);
        if let Some(obj) = schema.as_object_mut() {
            obj.remove("$schema");
            if let Some(Value::Object(kind_defs)) = obj.remove("$defs") {
                for (name, def) in kind_defs {
                    defs.insert(name, def);
                }
            }
        }
        let def_name = format!("{}Document", kind.as_str());
        all_of.push(json!({
            "if": {"properties": {"kind": {"const": kind.as_str()}}, "required": ["kind"]},
            "then": {"$ref": format!("#/$defs/{def_name}")}
        }));
        defs.insert(def_name, schema);
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Keyfleet policy document",
        "description": format!("Any Keyfleet policy object ({API_VERSION}); one of: {}.",
            Kind::ALL.map(Kind::as_str).join(", ")),
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": API_VERSION},
            "kind": {"enum": Kind::ALL.map(Kind::as_str)}
        },
        "allOf": all_of,
        "$defs": defs
    })
}

/// Every generated schema file: (file name, contents), in a stable order.
pub fn generated_files() -> Result<Vec<(String, String)>, SchemaError> {
    let mut files = Vec::new();
    for kind in Kind::ALL {
        files.push((format!("{}.schema.json", kind.as_str()), kind_schema(kind)));
    }
    files.push((BUNDLE_FILE.to_string(), bundle_schema()));
    files
        .into_iter()
        .map(|(name, value)| {
            let mut text = serde_json::to_string_pretty(&value)
                .map_err(|e| SchemaError::Serialise(name.clone(), e))?;
            text.push('\n');
            Ok((name, text))
        })
        .collect()
}

/// Writes every generated schema into `dir` (created if missing); returns the paths written.
pub fn write_schemas(dir: &Path) -> Result<Vec<PathBuf>, SchemaError> {
    std::fs::create_dir_all(dir).map_err(|source| SchemaError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    for (name, text) in generated_files()? {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| SchemaError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

/// One schema violation, translated for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaIssue {
    /// Where to look for the line: the pointer of the offending node (or its parent when it
    /// is missing).
    pub locate: String,
    /// The pointer the message is about (for a missing field: where it should be).
    pub path: String,
    /// Stable code from [`codes`].
    pub code: &'static str,
    /// The message.
    pub message: String,
    /// Missing field names, for the one-of heuristic.
    required: Vec<String>,
    /// The constant a `const` alternative expected, for the one-of heuristic.
    expected: Option<String>,
}

impl SchemaIssue {
    fn new(pointer: &str, code: &'static str, message: String) -> Self {
        SchemaIssue {
            locate: pointer.to_string(),
            path: pointer.to_string(),
            code,
            message,
            required: Vec::new(),
            expected: None,
        }
    }

    fn depth(&self) -> usize {
        self.path.matches('/').count()
    }
}

/// The compiled per-kind validators.
pub struct Validators {
    by_kind: BTreeMap<Kind, Validator>,
}

impl Validators {
    /// Compiles the schema of every kind.
    pub fn new() -> Result<Self, SchemaError> {
        let mut by_kind = BTreeMap::new();
        for kind in Kind::ALL {
            let validator = jsonschema::validator_for(&kind_schema(kind)).map_err(|e| {
                SchemaError::Compile {
                    kind,
                    message: e.to_string(),
                }
            })?;
            by_kind.insert(kind, validator);
        }
        Ok(Validators { by_kind })
    }

    /// Every violation of `kind`'s schema in `doc`.
    pub fn check(&self, kind: Kind, doc: &Value) -> Vec<SchemaIssue> {
        let Some(validator) = self.by_kind.get(&kind) else {
            return Vec::new();
        };
        let mut issues: Vec<SchemaIssue> = validator
            .iter_errors(doc)
            .flat_map(|e| translate(&e))
            .collect();
        issues.sort_by(|a, b| a.path.cmp(&b.path).then(a.message.cmp(&b.message)));
        issues.dedup();
        issues
    }
}

fn quote_list(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}

fn translate(err: &ValidationError<'_>) -> Vec<SchemaIssue> {
    let pointer = err.instance_path().as_str().to_string();
    let instance = err.instance();
    match err.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => unexpected
            .iter()
            .map(|u| {
                let p = format!("{pointer}/{}", super::yaml::escape_pointer_segment(u));
                SchemaIssue::new(&p, codes::UNKNOWN_FIELD, format!("unknown field `{u}`"))
            })
            .collect(),
        ValidationErrorKind::Required { property } => {
            let name = property
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| property.to_string());
            let mut issue = SchemaIssue::new(
                &pointer,
                codes::MISSING_FIELD,
                format!("missing required field `{name}`"),
            );
            issue.path = format!("{pointer}/{}", super::yaml::escape_pointer_segment(&name));
            issue.required.push(name);
            vec![issue]
        }
        ValidationErrorKind::Constant { expected_value } => {
            let mut issue = SchemaIssue::new(&pointer, codes::INVALID_VALUE, err.to_string());
            issue.expected = Some(
                expected_value
                    .as_str()
                    .map_or_else(|| expected_value.to_string(), str::to_string),
            );
            vec![issue]
        }
        ValidationErrorKind::Type { .. } => {
            vec![SchemaIssue::new(
                &pointer,
                codes::WRONG_TYPE,
                err.to_string(),
            )]
        }
        ValidationErrorKind::Pattern { pattern } => {
            let text = instance.as_str().unwrap_or_default();
            let (code, message) = if pattern == DURATION_PATTERN {
                let why = Duration::parse(text)
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| format!("{text:?} is not a duration (e.g. 30d, 12h)"));
                (codes::INVALID_DURATION, why)
            } else if pattern == TEMPLATE_PATTERN {
                let why = TextTemplate::parse(text)
                    .err()
                    .map(|e| format!("invalid template {text:?}: {e}"))
                    .unwrap_or_else(|| format!("invalid template {text:?}"));
                (codes::INVALID_TEMPLATE, why)
            } else if pattern == NAME_PATTERN {
                (
                    codes::INVALID_VALUE,
                    format!(
                        "invalid name {text:?}: use lower-case letters, digits and '-' (at most 63)"
                    ),
                )
            } else {
                (codes::INVALID_VALUE, err.to_string())
            };
            vec![SchemaIssue::new(&pointer, code, message)]
        }
        ValidationErrorKind::OneOfNotValid { context } | ValidationErrorKind::AnyOf { context } => {
            one_of(&pointer, instance, context)
        }
        ValidationErrorKind::OneOfMultipleValid { .. } => vec![SchemaIssue::new(
            &pointer,
            codes::INVALID_VALUE,
            "matches more than one alternative: give exactly one".to_string(),
        )],
        ValidationErrorKind::MaxProperties { limit: 1 } => vec![SchemaIssue::new(
            &pointer,
            codes::INVALID_VALUE,
            "give exactly one key here".to_string(),
        )],
        ValidationErrorKind::MinProperties { limit: 1 } => vec![SchemaIssue::new(
            &pointer,
            codes::MISSING_FIELD,
            "must not be empty: give exactly one key".to_string(),
        )],
        _ => vec![SchemaIssue::new(
            &pointer,
            codes::INVALID_VALUE,
            err.to_string(),
        )],
    }
}

/// Picks the most specific explanation of a failed `oneOf`/`anyOf`: the alternative whose
/// errors reach deepest into the document is the one the author meant (for `local: {...}` with
/// a bad field, the `local` branch complains about the field while the others only miss their
/// key). When no branch stands out, lists what each alternative needs.
fn one_of(
    pointer: &str,
    instance: &Value,
    context: &[Vec<ValidationError<'static>>],
) -> Vec<SchemaIssue> {
    let branches: Vec<Vec<SchemaIssue>> = context
        .iter()
        .map(|errors| errors.iter().flat_map(translate).collect())
        .collect();
    let depth = |b: &Vec<SchemaIssue>| b.iter().map(SchemaIssue::depth).max().unwrap_or(0);
    let best = branches.iter().map(depth).max().unwrap_or(0);
    let top: Vec<&Vec<SchemaIssue>> = branches.iter().filter(|b| depth(b) == best).collect();
    if let [only] = top.as_slice() {
        return (*only).clone();
    }
    let required: Vec<Vec<String>> = top
        .iter()
        .map(|b| b.iter().flat_map(|i| i.required.iter().cloned()).collect())
        .collect();
    let expected: Vec<String> = top
        .iter()
        .filter_map(|b| match b.as_slice() {
            [only] => only.expected.clone(),
            _ => None,
        })
        .collect();
    let message = if expected.len() == top.len() {
        format!("{instance} is not one of {}", quote_list(&expected))
    } else if required.iter().all(|r| r.len() == 1) {
        let names: Vec<String> = required.into_iter().flatten().collect();
        let unknown: Vec<String> = top
            .iter()
            .flat_map(|b| b.iter())
            .filter(|i| i.code == codes::UNKNOWN_FIELD)
            .filter_map(|i| i.path.rsplit('/').next().map(str::to_string))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut m = format!("needs exactly one of {}", quote_list(&names));
        if !unknown.is_empty() {
            m.push_str(&format!(" (unknown: {})", quote_list(&unknown)));
        }
        m
    } else {
        let forms: Vec<String> = top
            .iter()
            .filter_map(|b| b.first().map(|i| i.message.clone()))
            .collect();
        format!("matches none of the allowed forms: {}", forms.join("; or "))
    };
    vec![SchemaIssue::new(pointer, codes::INVALID_VALUE, message)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(yaml: &str) -> Value {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn issues(kind: Kind, yaml: &str) -> Vec<SchemaIssue> {
        Validators::new().unwrap().check(kind, &doc(yaml))
    }

    const CA: &str =
        "apiVersion: keyfleet.dev/v1\nkind: CertificateAuthority\nmetadata: {name: lab}\n";

    #[test]
    fn every_schema_compiles_and_bundle_dispatches() {
        let v = Validators::new().unwrap();
        assert_eq!(v.by_kind.len(), Kind::ALL.len());
        let bundle = jsonschema::validator_for(&bundle_schema()).unwrap();
        assert!(bundle.is_valid(&doc(&format!("{CA}spec: {{local: {{subject: 'CN=x'}}}}"))));
        assert!(!bundle.is_valid(&doc(&format!("{CA}spec: {{local: {{subject: 5}}}}"))));
        assert!(!bundle.is_valid(&doc(
            "apiVersion: keyfleet.dev/v1\nkind: Widget\nmetadata: {name: a}\nspec: {}"
        )));
    }

    #[test]
    fn valid_document_has_no_issues() {
        assert_eq!(
            issues(
                Kind::CertificateAuthority,
                &format!("{CA}spec: {{local: {{subject: 'CN=x', validity: 5y}}}}")
            ),
            vec![]
        );
    }

    #[test]
    fn one_of_picks_the_meant_branch() {
        let i = issues(
            Kind::CertificateAuthority,
            &format!("{CA}spec: {{local: {{subject: 'CN=x', colour: red}}}}"),
        );
        assert_eq!(i.len(), 1, "{i:?}");
        assert_eq!(i[0].code, codes::UNKNOWN_FIELD);
        assert_eq!(i[0].path, "/spec/local/colour");

        let i = issues(Kind::CertificateAuthority, &format!("{CA}spec: {{}}"));
        assert_eq!(i.len(), 1, "{i:?}");
        assert_eq!(
            i[0].message,
            "needs exactly one of `local`, `cfssl` or `entrustGateway`"
        );
    }

    #[test]
    fn durations_and_templates_get_precise_messages() {
        let i = issues(
            Kind::CertificateAuthority,
            &format!("{CA}spec: {{local: {{subject: 'CN=x', validity: 10 years}}}}"),
        );
        assert_eq!(i[0].code, codes::INVALID_DURATION, "{i:?}");
        assert_eq!(i[0].path, "/spec/local/validity");

        let t = "apiVersion: keyfleet.dev/v1\nkind: CardTemplate\nmetadata: {name: t}\nspec:\n  cardType: virtual\n  certificates:\n  - {name: a, slot: 9A, authority: lab, profile: piv-auth, keyAlgorithm: ecc-p256, subject: 'CN=${user.email}'}\n";
        let i = issues(Kind::CardTemplate, t);
        assert_eq!(i.len(), 1, "{i:?}");
        assert_eq!(i[0].code, codes::INVALID_TEMPLATE);
        assert!(
            i[0].message.contains("unknown variable ${user.email}"),
            "{}",
            i[0].message
        );
    }

    #[test]
    fn documented_enums_list_their_values() {
        let t = "apiVersion: keyfleet.dev/v1\nkind: CardTemplate\nmetadata: {name: t}\nspec:\n  cardType: virtual\n  certificates:\n  - {name: a, slot: 9B, authority: lab, profile: piv-auth, keyAlgorithm: ecc-p256, subject: 'CN=x'}\n";
        let i = issues(Kind::CardTemplate, t);
        assert_eq!(i.len(), 1, "{i:?}");
        assert_eq!(i[0].path, "/spec/certificates/0/slot");
        assert_eq!(
            i[0].message,
            "\"9B\" is not one of `9A`, `9C`, `9D` or `9E`"
        );
    }

    #[test]
    fn missing_field_points_at_parent() {
        let i = issues(
            Kind::CardBinding,
            "apiVersion: keyfleet.dev/v1\nkind: CardBinding\nmetadata: {name: b}\nspec: {user: alice}\n",
        );
        assert_eq!(i[0].code, codes::MISSING_FIELD);
        assert_eq!(i[0].locate, "/spec");
        assert_eq!(i[0].path, "/spec/card");
    }

    #[test]
    fn generated_files_are_stable() {
        let a = generated_files().unwrap();
        let b = generated_files().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), Kind::ALL.len() + 1);
        assert!(a.iter().any(|(n, _)| n == BUNDLE_FILE));
    }
}
