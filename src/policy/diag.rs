//! Diagnostics: every problem found while loading or validating policy, with a stable code and
//! the file, line and object it belongs to.
//!
//! This module only describes and prints diagnostics; it finds no problems itself and does not
//! decide exit codes (the CLI does).

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The policy set is invalid.
    Error,
    /// Suspicious but usable.
    Warning,
}

/// Stable diagnostic codes (kebab-case); tools may match on them.
pub mod codes {
    /// A file or directory could not be read.
    pub const IO: &str = "io-error";
    /// The policy directory holds no policy objects.
    pub const EMPTY_POLICY_SET: &str = "empty-policy-set";
    /// A file is larger than the size cap.
    pub const FILE_TOO_LARGE: &str = "file-too-large";
    /// A file is not UTF-8.
    pub const NOT_UTF8: &str = "not-utf8";
    /// YAML does not parse.
    pub const YAML_SYNTAX: &str = "yaml-syntax";
    /// YAML exceeds the alias, node or depth budget.
    pub const YAML_BUDGET: &str = "yaml-budget";
    /// A document is not a mapping.
    pub const NOT_A_MAPPING: &str = "not-a-mapping";
    /// A document has no `kind`.
    pub const MISSING_KIND: &str = "missing-kind";
    /// A document's `kind` is not a Keyfleet kind.
    pub const UNKNOWN_KIND: &str = "unknown-kind";
    /// A field is not allowed here.
    pub const UNKNOWN_FIELD: &str = "unknown-field";
    /// A required field is missing.
    pub const MISSING_FIELD: &str = "missing-field";
    /// A value has the wrong type.
    pub const WRONG_TYPE: &str = "wrong-type";
    /// A value is outside what the schema allows (enum, range, pattern, const, ...).
    pub const INVALID_VALUE: &str = "invalid-value";
    /// A duration does not parse.
    pub const INVALID_DURATION: &str = "invalid-duration";
    /// A template does not parse or names an unknown variable.
    pub const INVALID_TEMPLATE: &str = "invalid-template";
    /// Two objects of one kind share a name.
    pub const DUPLICATE_NAME: &str = "duplicate-name";
    /// A reference names no object.
    pub const DANGLING_REFERENCE: &str = "dangling-reference";
    /// Two certificates of a template use one slot.
    pub const DUPLICATE_SLOT: &str = "duplicate-slot";
    /// Two certificates of a template share a name.
    pub const DUPLICATE_CERTIFICATE: &str = "duplicate-certificate";
    /// More than one `Settings` object.
    pub const MULTIPLE_SETTINGS: &str = "multiple-settings";
    /// Durations that contradict each other (e.g. renewBefore ≥ validity).
    pub const DURATION_ORDER: &str = "duration-order";
    /// A subject template does not give a valid DN.
    pub const INVALID_SUBJECT: &str = "invalid-subject";
    /// A SAN template gives an unusable value.
    pub const INVALID_SAN: &str = "invalid-san";
    /// A profile the authority does not offer.
    pub const UNKNOWN_PROFILE: &str = "unknown-profile";
    /// A key algorithm the slot or CA does not allow.
    pub const ALGORITHM_NOT_ALLOWED: &str = "algorithm-not-allowed";
    /// Server key generation outside slot 9D, or archive without server generation.
    pub const KEY_GENERATION: &str = "key-generation";
    /// An assignment `filter` on a non-LDAP directory.
    pub const FILTER_NEEDS_LDAP: &str = "filter-needs-ldap";
    /// An LDAP filter (assignment `filter`, directory `userFilter` / `groupFilter`) that does
    /// not parse.
    pub const INVALID_FILTER: &str = "invalid-filter";
    /// An assignment that selects nobody.
    pub const EMPTY_ASSIGNMENT: &str = "empty-assignment";
    /// A card stock whose selector does not match its card type.
    pub const STOCK_MISMATCH: &str = "stock-mismatch";
    /// No card stock for a template's card type (warning).
    pub const NO_CARD_STOCK: &str = "no-card-stock";
    /// `keyHistory` on a template without an archived 9D key.
    pub const KEY_HISTORY: &str = "key-history";
    /// A `temporary:` template that names itself or has a temporary of its own.
    pub const BAD_TEMPORARY: &str = "bad-temporary";
    /// A file the policy names does not exist.
    pub const MISSING_FILE: &str = "missing-file";
    /// A secret reference does not resolve (`--online` only).
    pub const UNRESOLVED_SECRET: &str = "unresolved-secret";
    /// An LDAP directory cannot be bound to or has no base DN (`--online` only).
    pub const DIRECTORY_UNREACHABLE: &str = "directory-unreachable";
    /// A value that is allowed but probably wrong (warning).
    pub const SUSPICIOUS: &str = "suspicious";
    /// A plain `ldap://` directory without StartTLS and without `allowCleartextBind: true`.
    pub const CLEARTEXT_BIND: &str = "cleartext-bind";
    /// PIN or PUK retries other than the default on a card type that cannot set them, or a
    /// vendor option on a card type it does not apply to.
    pub const RETRIES_NOT_SETTABLE: &str = "retries-not-settable";
    /// A local CA's `subject`, `keyAlgorithm` or `validity` differs from the CA that exists:
    /// it only applies to a new CA (warning).
    pub const APPLIES_TO_NEW_CA: &str = "applies-to-new-ca";
    /// A `PolicyTest` outside the policy directory's `tests/` folder (tests are not policy).
    pub const POLICY_TEST_OUTSIDE_TESTS: &str = "policy-test-outside-tests";
    /// A document under `tests/` that is not a `PolicyTest` nor a fixture file of one.
    pub const NOT_A_POLICY_TEST: &str = "not-a-policy-test";
}

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Stable kebab-case code from [`codes`].
    pub code: &'static str,
    /// The file, as found under the policy directory.
    pub file: PathBuf,
    /// 1-based line (0 when the problem is not in a file).
    pub line: usize,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The object's kind, when known.
    pub kind: Option<String>,
    /// The object's name, when known.
    pub name: Option<String>,
    /// Dotted path inside the object, e.g. `spec.certificates[1].slot` (may be empty).
    pub path: String,
    /// What is wrong, and how to fix it when that is not obvious.
    pub message: String,
}

impl Diagnostic {
    /// An error at `file:line` with no object or path yet.
    pub fn error(
        code: &'static str,
        file: impl Into<PathBuf>,
        line: usize,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            file: file.into(),
            line,
            column: None,
            kind: None,
            name: None,
            path: String::new(),
            message: message.into(),
        }
    }

    /// Turns this into a warning.
    pub fn warning(mut self) -> Self {
        self.severity = Severity::Warning;
        self
    }

    /// Sets the column.
    pub fn at_column(mut self, column: usize) -> Self {
        self.column = Some(column);
        self
    }

    /// Sets kind and name of the object.
    pub fn for_object(mut self, kind: Option<&str>, name: Option<&str>) -> Self {
        self.kind = kind.map(str::to_string);
        self.name = name.map(str::to_string);
        self
    }

    /// Sets the path inside the object.
    pub fn at_path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Whether this is an error (not a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// `file:line: kind/name: path: message`; absent parts are left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file.display(), self.line)?;
        match (&self.kind, &self.name) {
            (Some(k), Some(n)) => write!(f, "{k}/{n}: ")?,
            (Some(k), None) => write!(f, "{k}: ")?,
            (None, Some(n)) => write!(f, "{n}: ")?,
            (None, None) => {}
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.message)
    }
}

/// All the errors of a policy set that failed to load (warnings may be included too).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.is_error())
    }

    /// The warnings only.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| !d.is_error())
    }
}

impl fmt::Display for Diagnostics {
    /// One diagnostic per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Converts a JSON pointer (`/spec/certificates/1/slot`) to the dotted form diagnostics use
/// (`spec.certificates[1].slot`).
pub fn pointer_to_path(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(&seg);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_has_file_line_object_path() {
        let d = Diagnostic::error(
            codes::DUPLICATE_SLOT,
            "policies/t.yaml",
            12,
            "slot 9A is used twice",
        )
        .for_object(Some("CardTemplate"), Some("employee"))
        .at_path("spec.certificates[1].slot");
        assert_eq!(
            d.to_string(),
            "policies/t.yaml:12: CardTemplate/employee: spec.certificates[1].slot: slot 9A is used twice"
        );
        let w = Diagnostic::error(codes::NO_CARD_STOCK, "a.yaml", 3, "no stock").warning();
        assert_eq!(w.to_string(), "a.yaml:3: warning: no stock");
        let all = Diagnostics(vec![d, w]);
        assert_eq!(all.to_string().lines().count(), 2);
        assert_eq!(all.errors().count(), 1);
    }

    #[test]
    fn pointers_become_dotted_paths() {
        assert_eq!(pointer_to_path(""), "");
        assert_eq!(
            pointer_to_path("/spec/certificates/1/slot"),
            "spec.certificates[1].slot"
        );
        assert_eq!(pointer_to_path("/a~1b/c~0d"), "a/b.c~d");
    }
}
