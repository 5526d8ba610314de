//! Distinguished names (RFC 4514) and subject alternative names, as Keyfleet writes them in
//! policy and sends them to a CA.
//!
//! This module only parses, escapes and prints names. It does no X.509 encoding (the CA
//! connectors do that) and knows nothing about templates or directories.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The attribute types Keyfleet accepts in a subject DN, with their OIDs.
///
/// The list is deliberately short: these are the attributes CAs and card middleware agree on.
pub const DN_ATTRIBUTES: &[(&str, &[u64])] = &[
    ("CN", &[2, 5, 4, 3]),
    ("SERIALNUMBER", &[2, 5, 4, 5]),
    ("C", &[2, 5, 4, 6]),
    ("L", &[2, 5, 4, 7]),
    ("ST", &[2, 5, 4, 8]),
    ("O", &[2, 5, 4, 10]),
    ("OU", &[2, 5, 4, 11]),
    ("GN", &[2, 5, 4, 42]),
    ("SN", &[2, 5, 4, 4]),
    ("DC", &[0, 9, 2342, 19200300, 100, 1, 25]),
    ("UID", &[0, 9, 2342, 19200300, 100, 1, 1]),
    ("E", &[1, 2, 840, 113549, 1, 9, 1]),
];

/// One attribute type and value of a DN, e.g. `CN=Alice`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Rdn {
    /// Upper-case short name from [`DN_ATTRIBUTES`].
    pub attr: String,
    /// The unescaped value.
    pub value: String,
}

impl Rdn {
    /// The attribute's OID arcs.
    pub fn oid(&self) -> &'static [u64] {
        DN_ATTRIBUTES
            .iter()
            .find(|(name, _)| *name == self.attr)
            .map(|(_, oid)| *oid)
            .unwrap_or(&[2, 5, 4, 3])
    }
}

/// A distinguished name in the order written (most significant first, as in `CN=a,O=b`
/// the CN comes first in the string; the order is kept exactly as written).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DistinguishedName(pub Vec<Rdn>);

/// A DN string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnError {
    /// The DN has no attributes at all.
    #[error("empty distinguished name")]
    Empty,
    /// A component has no `=`.
    #[error("component {0:?} has no '='")]
    MissingEquals(String),
    /// The attribute type is not one Keyfleet knows.
    #[error(
        "unknown attribute type {0:?} (known: CN, O, OU, C, L, ST, DC, UID, SERIALNUMBER, GN, SN, E)"
    )]
    UnknownAttribute(String),
    /// A value is empty.
    #[error("attribute {0} has an empty value")]
    EmptyValue(String),
    /// A backslash escape is not valid RFC 4514.
    #[error("invalid escape in {0:?}")]
    BadEscape(String),
    /// Multi-valued RDNs (`a=1+b=2`) are not supported in subjects.
    #[error("multi-valued RDN in {0:?}: escape '+' as '\\+' if it is part of the value")]
    MultiValued(String),
    /// A country code is not two letters.
    #[error("country (C) must be two letters, got {0:?}")]
    BadCountry(String),
}

/// Characters that RFC 4514 requires to be escaped anywhere in a value.
const SPECIAL: &[char] = &[',', '+', '"', '\\', '<', '>', ';', '='];

/// Escapes a value for use inside an RFC 4514 DN string.
///
/// Leading `#` or space and trailing space are escaped too, and control characters become
/// `\XX` hex escapes, so any directory attribute can be substituted into a template safely.
pub fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 4);
    let n = value.chars().count();
    for (i, c) in value.chars().enumerate() {
        let leading = i == 0 && (c == '#' || c == ' ');
        let trailing = i + 1 == n && c == ' ';
        if SPECIAL.contains(&c) || leading || trailing {
            out.push('\\');
            out.push(c);
        } else if c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl DistinguishedName {
    /// Parses an RFC 4514 string such as `CN=Alice Example,OU=People,O=Example`.
    pub fn parse(s: &str) -> Result<Self, DnError> {
        let mut rdns = Vec::new();
        for component in split_unescaped(s, ',')? {
            if component.trim().is_empty() {
                return Err(DnError::MissingEquals(component));
            }
            if split_unescaped(&component, '+')?.len() > 1 {
                return Err(DnError::MultiValued(component));
            }
            let eq = find_unescaped(&component, '=')
                .ok_or_else(|| DnError::MissingEquals(component.clone()))?;
            let attr_raw = component[..eq].trim();
            let attr = canonical_attr(attr_raw)
                .ok_or_else(|| DnError::UnknownAttribute(attr_raw.to_string()))?;
            let value = unescape(component[eq + 1..].trim_start())?;
            if value.is_empty() {
                return Err(DnError::EmptyValue(attr.to_string()));
            }
            if attr == "C" && !(value.len() == 2 && value.chars().all(|c| c.is_ascii_alphabetic()))
            {
                return Err(DnError::BadCountry(value));
            }
            rdns.push(Rdn {
                attr: attr.to_string(),
                value,
            });
        }
        if rdns.is_empty() {
            return Err(DnError::Empty);
        }
        Ok(DistinguishedName(rdns))
    }

    /// The value of the first attribute of this type, if any.
    pub fn get(&self, attr: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|r| r.attr == attr)
            .map(|r| r.value.as_str())
    }
}

impl fmt::Display for DistinguishedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rdn) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}={}", rdn.attr, escape_value(&rdn.value))?;
        }
        Ok(())
    }
}

fn canonical_attr(raw: &str) -> Option<&'static str> {
    let upper = raw.to_ascii_uppercase();
    let alias = match upper.as_str() {
        "EMAILADDRESS" | "EMAIL" => "E",
        "SURNAME" => "SN",
        "GIVENNAME" => "GN",
        other => other,
    };
    DN_ATTRIBUTES
        .iter()
        .map(|(name, _)| *name)
        .find(|name| *name == alias)
}

/// Byte index of the first `sep` not preceded by an escaping backslash.
fn find_unescaped(s: &str, sep: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            return Some(i);
        }
    }
    None
}

fn split_unescaped(s: &str, sep: char) -> Result<Vec<String>, DnError> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            current.push(c);
            escaped = true;
        } else if c == sep {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    if escaped {
        return Err(DnError::BadEscape(s.to_string()));
    }
    parts.push(current);
    Ok(parts)
}

fn unescape(raw: &str) -> Result<String, DnError> {
    // Trailing unescaped spaces are insignificant.
    let mut trimmed_end = raw.len();
    while trimmed_end > 0 && raw.as_bytes()[trimmed_end - 1] == b' ' {
        let backslashes = raw[..trimmed_end - 1]
            .bytes()
            .rev()
            .take_while(|b| *b == b'\\')
            .count();
        if backslashes % 2 == 1 {
            break;
        }
        trimmed_end -= 1;
    }
    let raw = &raw[..trimmed_end];
    let mut bytes: Vec<u8> = Vec::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let Some(next) = chars.next() else {
            return Err(DnError::BadEscape(raw.to_string()));
        };
        if SPECIAL.contains(&next) || next == ' ' || next == '#' {
            bytes.push(next as u8);
        } else if next.is_ascii_hexdigit() {
            let lo = chars
                .next()
                .filter(|c| c.is_ascii_hexdigit())
                .ok_or_else(|| DnError::BadEscape(raw.to_string()))?;
            let hex: String = [next, lo].iter().collect();
            bytes.push(u8::from_str_radix(&hex, 16).map_err(|_| DnError::BadEscape(raw.into()))?);
        } else {
            return Err(DnError::BadEscape(raw.to_string()));
        }
    }
    String::from_utf8(bytes).map_err(|_| DnError::BadEscape(raw.to_string()))
}

/// A subject alternative name after template expansion.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", content = "value")]
pub enum SanValue {
    /// Microsoft UPN otherName (1.3.6.1.4.1.311.20.2.3), used for smart-card logon.
    Upn(String),
    /// rfc822Name.
    Email(String),
    /// dNSName.
    Dns(String),
    /// uniformResourceIdentifier.
    Uri(String),
}

impl SanValue {
    /// The value, whatever its type.
    pub fn value(&self) -> &str {
        match self {
            SanValue::Upn(v) | SanValue::Email(v) | SanValue::Dns(v) | SanValue::Uri(v) => v,
        }
    }
}

impl fmt::Display for SanValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SanValue::Upn(v) => write!(f, "upn:{v}"),
            SanValue::Email(v) => write!(f, "email:{v}"),
            SanValue::Dns(v) => write!(f, "dns:{v}"),
            SanValue::Uri(v) => write!(f, "uri:{v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_round_trip() {
        let dn =
            DistinguishedName::parse("CN=Alice Example, OU=People,O=Example\\, Inc.,C=DE").unwrap();
        assert_eq!(dn.get("CN"), Some("Alice Example"));
        assert_eq!(dn.get("O"), Some("Example, Inc."));
        assert_eq!(
            dn.to_string(),
            "CN=Alice Example,OU=People,O=Example\\, Inc.,C=DE"
        );
        assert_eq!(DistinguishedName::parse(&dn.to_string()).unwrap(), dn);
    }

    #[test]
    fn hex_escapes_decode_as_utf8() {
        let dn = DistinguishedName::parse("CN=J\\C3\\B6rg").unwrap();
        assert_eq!(dn.get("CN"), Some("Jörg"));
        let dn = DistinguishedName::parse("CN=a\\2Cb").unwrap();
        assert_eq!(dn.get("CN"), Some("a,b"));
    }

    #[test]
    fn escaping_any_value_round_trips() {
        for v in [
            "*)(uid=*",
            "a,b+c\\d",
            " lead",
            "trail ",
            "#hash",
            "ö<>;=\"",
            "tab\there",
        ] {
            let s = format!("CN={}", escape_value(v));
            let dn = DistinguishedName::parse(&s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(dn.get("CN"), Some(v), "{s}");
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            DistinguishedName::parse(""),
            Err(DnError::MissingEquals(String::new()))
        );
        assert!(matches!(
            DistinguishedName::parse("CN"),
            Err(DnError::MissingEquals(_))
        ));
        assert!(matches!(
            DistinguishedName::parse("XX=1"),
            Err(DnError::UnknownAttribute(_))
        ));
        assert!(matches!(
            DistinguishedName::parse("CN=a+O=b"),
            Err(DnError::MultiValued(_))
        ));
        assert!(matches!(
            DistinguishedName::parse("CN=a\\"),
            Err(DnError::BadEscape(_))
        ));
        assert!(matches!(
            DistinguishedName::parse("C=Germany"),
            Err(DnError::BadCountry(_))
        ));
        assert!(matches!(
            DistinguishedName::parse("CN="),
            Err(DnError::EmptyValue(_))
        ));
    }
}
