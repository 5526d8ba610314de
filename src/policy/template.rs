//! Text templates filled from directory attributes: `CN=${user.cn},O=Example`,
//! `${user.attr.employeeNumber}`; `$$` is a literal `$`.
//!
//! This module parses templates and expands them with values the caller looks up; it does not
//! know about directories, DNs or escaping rules (the caller passes an escape function).

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A variable a template may reference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Var {
    /// `${user.uid}`: the directory login name.
    Uid,
    /// `${user.cn}`: the common (display) name.
    Cn,
    /// `${user.mail}`: the e-mail address.
    Mail,
    /// `${user.upn}`: the user principal name (AD).
    Upn,
    /// `${user.dn}`: the user's directory DN.
    Dn,
    /// `${user.attr.NAME}`: any other directory attribute.
    Attr(String),
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Var::Uid => f.write_str("${user.uid}"),
            Var::Cn => f.write_str("${user.cn}"),
            Var::Mail => f.write_str("${user.mail}"),
            Var::Upn => f.write_str("${user.upn}"),
            Var::Dn => f.write_str("${user.dn}"),
            Var::Attr(a) => write!(f, "${{user.attr.{a}}}"),
        }
    }
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    Literal(String),
    Var(Var),
}

/// A parsed template; it remembers its source text, which is what it serialises back to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TextTemplate {
    source: String,
    segments: Vec<Segment>,
}

/// A template string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `${` has no closing `}`.
    #[error("unterminated variable at byte {0}: expected '}}'")]
    Unterminated(usize),
    /// A `$` is followed by something other than `{` or `$`.
    #[error("stray '$' at byte {0}: write '$$' for a literal dollar sign")]
    StrayDollar(usize),
    /// The variable is not one of the known user fields.
    #[error(
        "unknown variable ${{{0}}}: use ${{user.uid}}, ${{user.cn}}, ${{user.mail}}, ${{user.upn}}, ${{user.dn}} or ${{user.attr.NAME}}"
    )]
    UnknownVar(String),
    /// `${user.attr.}` names no attribute, or the name has characters LDAP does not allow.
    #[error("invalid attribute name {0:?} in ${{user.attr.NAME}}: use letters, digits and '-'")]
    BadAttrName(String),
}

/// A variable had no value for the user a template was expanded for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no value for {0}")]
pub struct MissingVar(pub Var);

/// The regular expression the JSON schema uses for templates (accepts exactly what
/// [`TextTemplate::parse`] accepts).
pub const TEMPLATE_PATTERN: &str =
    r"^(?:[^$]|\$\$|\$\{user\.(?:uid|cn|mail|upn|dn|attr\.[A-Za-z][A-Za-z0-9-]*)\})*$";

fn parse_var(name: &str) -> Result<Var, TemplateError> {
    match name {
        "user.uid" => Ok(Var::Uid),
        "user.cn" => Ok(Var::Cn),
        "user.mail" => Ok(Var::Mail),
        "user.upn" => Ok(Var::Upn),
        "user.dn" => Ok(Var::Dn),
        _ => match name.strip_prefix("user.attr.") {
            Some(attr) => {
                let ok = attr.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                    && attr.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
                if ok {
                    Ok(Var::Attr(attr.to_string()))
                } else {
                    Err(TemplateError::BadAttrName(attr.to_string()))
                }
            }
            None => Err(TemplateError::UnknownVar(name.to_string())),
        },
    }
}

impl TextTemplate {
    /// Parses a template.
    pub fn parse(s: &str) -> Result<Self, TemplateError> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut rest = s;
        let mut offset = 0;
        while let Some(pos) = rest.find('$') {
            literal.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                literal.push('$');
                offset += pos + 2;
                rest = tail;
            } else if let Some(tail) = after.strip_prefix('{') {
                let close = tail
                    .find('}')
                    .ok_or(TemplateError::Unterminated(offset + pos))?;
                let var = parse_var(&tail[..close])?;
                if !literal.is_empty() {
                    segments.push(Segment::Literal(std::mem::take(&mut literal)));
                }
                segments.push(Segment::Var(var));
                offset += pos + 2 + close + 1;
                rest = &tail[close + 1..];
            } else {
                return Err(TemplateError::StrayDollar(offset + pos));
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(TextTemplate {
            source: s.to_string(),
            segments,
        })
    }

    /// The template as written in policy.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The variables the template references, in order of appearance.
    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Var(v) => Some(v),
            Segment::Literal(_) => None,
        })
    }

    /// Fills in the variables; each looked-up value is passed through `escape` (e.g.
    /// [`crate::names::escape_value`] for DNs), literal text is kept as written.
    pub fn expand(
        &self,
        mut lookup: impl FnMut(&Var) -> Option<String>,
        escape: impl Fn(&str) -> String,
    ) -> Result<String, MissingVar> {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(l) => out.push_str(l),
                Segment::Var(v) => {
                    let value = lookup(v).ok_or_else(|| MissingVar(v.clone()))?;
                    out.push_str(&escape(&value));
                }
            }
        }
        Ok(out)
    }
}

impl fmt::Display for TextTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Serialize for TextTemplate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for TextTemplate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        TextTemplate::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for TextTemplate {
    fn schema_name() -> Cow<'static, str> {
        "TextTemplate".into()
    }

    fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": TEMPLATE_PATTERN,
            "description": "Text with variables ${user.uid}, ${user.cn}, ${user.mail}, ${user.upn}, ${user.dn}, ${user.attr.NAME}; '$$' is a literal '$'."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(v: &Var) -> Option<String> {
        match v {
            Var::Cn => Some("Doe, Jane".into()),
            Var::Mail => Some("jane@example.com".into()),
            Var::Attr(a) if a == "employeeNumber" => Some("42".into()),
            _ => None,
        }
    }

    #[test]
    fn parses_and_expands() {
        let t =
            TextTemplate::parse("CN=${user.cn},serial=${user.attr.employeeNumber} $$5").unwrap();
        assert_eq!(
            t.vars().cloned().collect::<Vec<_>>(),
            vec![Var::Cn, Var::Attr("employeeNumber".into())]
        );
        let out = t.expand(sample, crate::names::escape_value).unwrap();
        assert_eq!(out, "CN=Doe\\, Jane,serial=42 $5");
        assert_eq!(
            t.source(),
            "CN=${user.cn},serial=${user.attr.employeeNumber} $$5"
        );
    }

    #[test]
    fn missing_value_is_reported() {
        let t = TextTemplate::parse("${user.upn}").unwrap();
        assert_eq!(t.expand(sample, str::to_string), Err(MissingVar(Var::Upn)));
    }

    #[test]
    fn rejects_bad_templates() {
        assert_eq!(
            TextTemplate::parse("a ${user.cn"),
            Err(TemplateError::Unterminated(2))
        );
        assert_eq!(
            TextTemplate::parse("5$"),
            Err(TemplateError::StrayDollar(1))
        );
        assert_eq!(
            TextTemplate::parse("${user.email}"),
            Err(TemplateError::UnknownVar("user.email".into()))
        );
        assert_eq!(
            TextTemplate::parse("${user.attr.}"),
            Err(TemplateError::BadAttrName(String::new()))
        );
        assert!(TextTemplate::parse("${user.attr.a b}").is_err());
    }

    #[test]
    fn serde_keeps_source() {
        let t: TextTemplate = serde_json::from_str("\"${user.mail}\"").unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"${user.mail}\"");
        assert!(serde_json::from_str::<TextTemplate>("\"${nope}\"").is_err());
    }
}
