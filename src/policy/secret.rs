//! Secret references: policy never holds a password or key inline, only where to find it
//! (`{env: NAME}`, `{file: path}`, `{pkcs11: "pkcs11:..."}`: a data object on a PKCS#11 token).
//!
//! This module parses references and resolves them on request. It never logs or prints a
//! resolved value, and `keyfleet validate` (offline) never calls [`SecretRef::resolve`].

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Where a secret lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawSecretRef", into = "RawSecretRef")]
pub enum SecretRef {
    /// `{env: NAME}`: the value of an environment variable.
    Env {
        /// The variable's name.
        env: String,
    },
    /// `{file: path}`: the contents of a file (relative to the policy file), trailing newline
    /// removed.
    File {
        /// The file's path as written in policy.
        file: PathBuf,
    },
    /// `{pkcs11: "pkcs11:token=...;object=...;type=data?module-path=...&pin-source=..."}`: the
    /// value of a data object on a PKCS#11 token (see [`crate::keystore::read_data_object`]),
    /// trailing newline removed.
    Pkcs11 {
        /// The RFC 7512 URI.
        pkcs11: String,
    },
}

/// The YAML shape of a secret reference, before the exactly-one-key check.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecretRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pkcs11: Option<String>,
}

/// A secret reference that is malformed (checked while loading policy).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretRefError {
    /// None or more than one of `env`, `file`, `pkcs11` is given.
    #[error("a secret reference needs exactly one of `env`, `file` or `pkcs11`")]
    NotExactlyOne,
    /// The environment variable name is empty or has characters a shell would not accept.
    #[error("invalid environment variable name {0:?}")]
    BadEnvName(String),
    /// The file path is empty.
    #[error("empty file path in secret reference")]
    EmptyPath,
    /// The PKCS#11 reference is not a `pkcs11:` URI naming a module and a data object.
    #[error("{0}")]
    BadPkcs11Uri(String),
}

/// A secret that could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is not set (or not valid Unicode).
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    /// The secret file cannot be read.
    #[error("cannot read secret file {path}")]
    FileRead {
        /// The resolved path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The secret resolved to an empty value.
    #[error("secret {0} is empty")]
    Empty(String),
    /// The PKCS#11 data object could not be read.
    #[error("{0}")]
    Pkcs11(#[source] Box<crate::keystore::KeyStoreError>),
    /// The PKCS#11 data object's value is not UTF-8 text.
    #[error("the data object of {0} is not UTF-8 text")]
    NotText(String),
}

impl TryFrom<RawSecretRef> for SecretRef {
    type Error = SecretRefError;

    fn try_from(raw: RawSecretRef) -> Result<Self, Self::Error> {
        match (raw.env, raw.file, raw.pkcs11) {
            (Some(env), None, None) => {
                let ok = env.chars().next().is_some_and(|c| !c.is_ascii_digit())
                    && env.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if ok {
                    Ok(SecretRef::Env { env })
                } else {
                    Err(SecretRefError::BadEnvName(env))
                }
            }
            (None, Some(file), None) if file.as_os_str().is_empty() => {
                Err(SecretRefError::EmptyPath)
            }
            (None, Some(file), None) => Ok(SecretRef::File { file }),
            // What the URI must name is checked by `validate`, at the reference's line.
            (None, None, Some(pkcs11)) if pkcs11.starts_with("pkcs11:") => {
                Ok(SecretRef::Pkcs11 { pkcs11 })
            }
            (None, None, Some(pkcs11)) => Err(SecretRefError::BadPkcs11Uri(format!(
                "{pkcs11:?} is not a pkcs11: URI"
            ))),
            _ => Err(SecretRefError::NotExactlyOne),
        }
    }
}

impl From<SecretRef> for RawSecretRef {
    fn from(s: SecretRef) -> Self {
        match s {
            SecretRef::Env { env } => RawSecretRef {
                env: Some(env),
                ..Default::default()
            },
            SecretRef::File { file } => RawSecretRef {
                file: Some(file),
                ..Default::default()
            },
            SecretRef::Pkcs11 { pkcs11 } => RawSecretRef {
                pkcs11: Some(pkcs11),
                ..Default::default()
            },
        }
    }
}

impl fmt::Display for SecretRef {
    /// Describes where the secret is (never its value).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env { env } => write!(f, "env:{env}"),
            SecretRef::File { file } => write!(f, "file:{}", file.display()),
            // Printed as parsed: a pin-value never appears.
            SecretRef::Pkcs11 { pkcs11 } => match crate::card::pkcs11::Pkcs11Uri::parse(pkcs11) {
                Ok(uri) => write!(f, "{uri}"),
                Err(_) => f.write_str("pkcs11:(unparsable)"),
            },
        }
    }
}

impl SecretRef {
    /// Reads the secret; a `file` path is taken relative to `base_dir` (the policy file's
    /// folder) unless absolute.
    pub fn resolve(&self, base_dir: &Path) -> Result<String, SecretError> {
        let value = match self {
            SecretRef::Env { env } => {
                std::env::var(env).map_err(|_| SecretError::EnvMissing(env.clone()))?
            }
            SecretRef::File { file } => {
                let path = base_dir.join(file);
                let text = std::fs::read_to_string(&path)
                    .map_err(|source| SecretError::FileRead { path, source })?;
                text.trim_end_matches(['\r', '\n']).to_string()
            }
            SecretRef::Pkcs11 { pkcs11 } => {
                let bytes = crate::keystore::read_data_object(pkcs11)
                    .map_err(|e| SecretError::Pkcs11(Box::new(e)))?;
                let text = std::str::from_utf8(&bytes)
                    .map_err(|_| SecretError::NotText(self.to_string()))?;
                text.trim_end_matches(['\r', '\n']).to_string()
            }
        };
        if value.is_empty() {
            return Err(SecretError::Empty(self.to_string()));
        }
        Ok(value)
    }
}

impl JsonSchema for SecretRef {
    fn schema_name() -> Cow<'static, str> {
        "SecretRef".into()
    }

    fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A reference to a secret, never the secret itself: exactly one of {env: NAME}, {file: path} or {pkcs11: \"pkcs11:...\"}.",
            "type": "object",
            "properties": {
                "env": { "type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$", "description": "Environment variable name." },
                "file": { "type": "string", "minLength": 1, "description": "File path, relative to the policy file." },
                "pkcs11": { "type": "string", "pattern": "^pkcs11:", "description": "PKCS#11 URI (RFC 7512) of a data object: module-path and object (label) or id required, type=data if any; pin-source or pin-value to log in." }
            },
            "additionalProperties": false,
            "minProperties": 1,
            "maxProperties": 1
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_form() {
        let s: SecretRef = serde_yaml::from_str("env: KEYFLEET_X").unwrap();
        assert_eq!(
            s,
            SecretRef::Env {
                env: "KEYFLEET_X".into()
            }
        );
        let s: SecretRef = serde_yaml::from_str("file: secrets/pw.txt").unwrap();
        assert_eq!(s.to_string(), "file:secrets/pw.txt");
        let s: SecretRef = serde_yaml::from_str(
            "pkcs11: \"pkcs11:object=pw;type=data?module-path=/m.so&pin-value=1234\"",
        )
        .unwrap();
        assert_eq!(
            s.to_string(),
            "pkcs11:object=pw;type=data?module-path=/m.so",
            "never the pin-value"
        );
        assert!(matches!(s, SecretRef::Pkcs11 { .. }));
        assert_eq!(
            serde_yaml::to_string(&SecretRef::Env { env: "A".into() }).unwrap(),
            "env: A\n"
        );
    }

    #[test]
    fn rejects_inline_or_ambiguous() {
        assert!(serde_yaml::from_str::<SecretRef>("hunter2").is_err());
        assert!(serde_yaml::from_str::<SecretRef>("{env: A, file: b}").is_err());
        assert!(serde_yaml::from_str::<SecretRef>("{}").is_err());
        assert!(serde_yaml::from_str::<SecretRef>("{value: x}").is_err());
        assert!(serde_yaml::from_str::<SecretRef>("{env: 'A B'}").is_err());
        assert!(serde_yaml::from_str::<SecretRef>("{pkcs11: 'x'}").is_err());
        // A pkcs11: reference must name the module and the object, and only a data object
        // (checked by `validate` through this function).
        for bad in [
            "pkcs11:object=pw",
            "pkcs11:token=t?module-path=/m.so",
            "pkcs11:object=pw;type=private?module-path=/m.so",
            "pkcs11:object=%zz?module-path=/m.so",
        ] {
            assert!(
                crate::keystore::check_data_object_uri(bad).is_err(),
                "{bad}"
            );
        }
        assert!(
            crate::keystore::check_data_object_uri("pkcs11:id=%01;type=data?module-path=/m.so")
                .is_ok()
        );
    }

    #[test]
    fn resolves_files_and_reports_missing_modules() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
        let s = SecretRef::File { file: "pw".into() };
        assert_eq!(s.resolve(dir.path()).unwrap(), "s3cret");
        let missing = SecretRef::File {
            file: "nope".into(),
        };
        assert!(matches!(
            missing.resolve(dir.path()),
            Err(SecretError::FileRead { .. })
        ));
        let p = SecretRef::Pkcs11 {
            pkcs11: "pkcs11:object=pw?module-path=/nonexistent/module.so".into(),
        };
        assert!(matches!(p.resolve(dir.path()), Err(SecretError::Pkcs11(_))));
        let e = SecretRef::Env {
            env: "KEYFLEET_TEST_SURELY_UNSET_VARIABLE".into(),
        };
        assert!(matches!(
            e.resolve(dir.path()),
            Err(SecretError::EnvMissing(_))
        ));
    }
}
