//! LDAP distinguished names as a directory returns them (RFC 4514), normalised so that two
//! spellings of one entry compare equal: `cn=a\,b`, `CN=A\2CB` and `cn = a\,b` are the same
//! entry. Also RFC 4515 escaping of values put into search filters.
//!
//! This module only parses, compares and escapes text. It does not talk to a server and does
//! not build certificate subjects (that is [`crate::names`], with its own restricted attribute
//! set).
//!
//! Normalisation rules: attribute types are case-insensitive (`CN` = `cn`); values are compared
//! after unescaping (`\,` and `\2C` are both `,`), case-folding and collapsing runs of spaces
//! (the `caseIgnoreMatch` rule of the naming attributes directories use: cn, uid, ou, dc, o);
//! the attribute-value assertions of a multi-valued RDN are sorted; `#`-hex (BER) values are
//! kept as lower-case hex.

use std::borrow::Cow;
use std::fmt::Write as _;

/// A DN that does not follow RFC 4514.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnParseError {
    /// A component has no `=` between type and value.
    #[error("{dn:?}: component without '='")]
    MissingEquals {
        /// The DN as given.
        dn: String,
    },
    /// An attribute type is empty or has characters types may not have.
    #[error("{dn:?}: invalid attribute type {attr:?}")]
    BadType {
        /// The DN as given.
        dn: String,
        /// The offending type.
        attr: String,
    },
    /// A backslash is not followed by a special character or two hex digits.
    #[error("{dn:?}: invalid escape sequence")]
    BadEscape {
        /// The DN as given.
        dn: String,
    },
    /// The unescaped value bytes are not UTF-8.
    #[error("{dn:?}: value is not UTF-8 after unescaping")]
    NotUtf8 {
        /// The DN as given.
        dn: String,
    },
    /// A `#` value is not an even number of hex digits.
    #[error("{dn:?}: invalid #hex value")]
    BadHex {
        /// The DN as given.
        dn: String,
    },
}

/// One attribute type and its unescaped value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ava {
    /// The attribute type, lower-cased.
    pub attr: String,
    /// The unescaped value (for `#hex` values: `#` followed by lower-case hex).
    pub value: String,
}

/// A parsed DN: RDNs in the order written (leaf first), each a list of AVAs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapDn {
    /// The RDNs, leaf first.
    pub rdns: Vec<Vec<Ava>>,
}

impl LdapDn {
    /// Parses an RFC 4514 string. The empty string is the root DN (no RDNs).
    pub fn parse(dn: &str) -> Result<Self, DnParseError> {
        let mut rdns = Vec::new();
        if dn.trim().is_empty() {
            return Ok(LdapDn { rdns });
        }
        let bytes = dn.as_bytes();
        let mut i = 0;
        let mut rdn = Vec::new();
        loop {
            // Attribute type, up to '='.
            let start = i;
            while i < bytes.len() && bytes[i] != b'=' {
                if matches!(bytes[i], b',' | b'+' | b';') {
                    return Err(DnParseError::MissingEquals { dn: dn.into() });
                }
                i += 1;
            }
            if i >= bytes.len() {
                return Err(DnParseError::MissingEquals { dn: dn.into() });
            }
            let attr = dn[start..i].trim().to_ascii_lowercase();
            let type_ok = !attr.is_empty()
                && (attr.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                    || (attr.as_bytes()[0].is_ascii_alphabetic()
                        && attr.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')));
            if !type_ok {
                return Err(DnParseError::BadType {
                    dn: dn.into(),
                    attr,
                });
            }
            i += 1; // '='
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
            let (value, next) = if bytes.get(i) == Some(&b'#') {
                parse_hex_value(dn, i + 1)?
            } else {
                parse_string_value(dn, i)?
            };
            rdn.push(Ava { attr, value });
            i = next;
            match bytes.get(i) {
                None => {
                    rdns.push(std::mem::take(&mut rdn));
                    break;
                }
                Some(b'+') => i += 1,
                Some(b',' | b';') => {
                    rdns.push(std::mem::take(&mut rdn));
                    i += 1;
                }
                Some(_) => return Err(DnParseError::BadEscape { dn: dn.into() }),
            }
        }
        Ok(LdapDn { rdns })
    }

    /// The canonical text used to compare DNs: lower-case types, case-folded values with
    /// runs of spaces collapsed, AVAs of one RDN sorted, re-escaped canonically.
    pub fn normalized(&self) -> String {
        let mut out = String::new();
        for (n, rdn) in self.rdns.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            let mut avas: Vec<(String, String)> = rdn
                .iter()
                .map(|a| (a.attr.clone(), fold_value(&a.value)))
                .collect();
            avas.sort();
            for (k, (attr, value)) in avas.iter().enumerate() {
                if k > 0 {
                    out.push('+');
                }
                out.push_str(attr);
                out.push('=');
                if value.starts_with('#') && value.len() > 1 && is_hex_form(value) {
                    out.push_str(value);
                } else {
                    out.push_str(&escape_dn_value(value));
                }
            }
        }
        out
    }

    /// The value of the first AVA of the leaf RDN whose type is `attr` (lower-case), e.g. the
    /// `cn` of `cn=Admins,ou=groups,...`.
    pub fn leaf_value(&self, attr: &str) -> Option<&str> {
        self.rdns
            .first()?
            .iter()
            .find(|a| a.attr == attr)
            .map(|a| a.value.as_str())
    }
}

/// Normalises a DN string for comparison; see [`LdapDn::normalized`]. Borrows when the DN
/// is already in normal form (the common case), so lookups by member DN do not allocate.
pub fn normalize_dn(dn: &str) -> Result<Cow<'_, str>, DnParseError> {
    if is_plain(dn) {
        return Ok(if dn.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(dn.to_ascii_lowercase())
        } else {
            Cow::Borrowed(dn)
        });
    }
    Ok(Cow::Owned(LdapDn::parse(dn)?.normalized()))
}

/// The common case without escapes, spaces or multi-valued RDNs (`uid=u1,ou=people,dc=x`),
/// whose normal form is its lower-case spelling.
fn is_plain(dn: &str) -> bool {
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'@');
    dn.split(',').all(|component| {
        let Some((attr, value)) = component.split_once('=') else {
            return false;
        };
        attr.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
            && attr.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !value.is_empty()
            && value.bytes().all(plain)
    })
}

fn is_hex_form(v: &str) -> bool {
    v[1..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn fold_value(v: &str) -> String {
    if v.starts_with('#') && v.len() > 1 && is_hex_form(v) {
        return v.to_ascii_lowercase();
    }
    let mut out = String::with_capacity(v.len());
    let mut last_space = false;
    for c in v.trim_matches(' ').chars() {
        if c == ' ' {
            if !last_space {
                out.push(' ');
            }
            last_space = true;
        } else {
            last_space = false;
            out.extend(c.to_lowercase());
        }
    }
    out
}

fn parse_hex_value(dn: &str, mut i: usize) -> Result<(String, usize), DnParseError> {
    let bytes = dn.as_bytes();
    let start = i;
    while i < bytes.len() && bytes[i].is_ascii_hexdigit() {
        i += 1;
    }
    let hex = &dn[start..i];
    if hex.is_empty() || !hex.len().is_multiple_of(2) {
        return Err(DnParseError::BadHex { dn: dn.into() });
    }
    while i < bytes.len() && bytes[i] == b' ' {
        i += 1;
    }
    Ok((format!("#{}", hex.to_ascii_lowercase()), i))
}

/// Parses an escaped string value starting at `i`; returns it and the index of the
/// terminating separator (or the end).
fn parse_string_value(dn: &str, mut i: usize) -> Result<(String, usize), DnParseError> {
    let bytes = dn.as_bytes();
    let mut value: Vec<u8> = Vec::new();
    // Length of `value` that must be kept even if followed by spaces (ends at an escape).
    let mut keep = 0;
    while i < bytes.len() {
        match bytes[i] {
            b',' | b'+' | b';' => break,
            b'\\' => {
                let Some(&c) = bytes.get(i + 1) else {
                    return Err(DnParseError::BadEscape { dn: dn.into() });
                };
                if c.is_ascii_hexdigit() {
                    let hi = hex_digit(c);
                    let lo = bytes.get(i + 2).copied().and_then(|d| {
                        if d.is_ascii_hexdigit() {
                            Some(hex_digit(d))
                        } else {
                            None
                        }
                    });
                    let Some(lo) = lo else {
                        return Err(DnParseError::BadEscape { dn: dn.into() });
                    };
                    value.push(hi << 4 | lo);
                    i += 3;
                } else if matches!(
                    c,
                    b' ' | b'"' | b'#' | b'+' | b',' | b';' | b'<' | b'=' | b'>' | b'\\'
                ) {
                    value.push(c);
                    i += 2;
                } else {
                    return Err(DnParseError::BadEscape { dn: dn.into() });
                }
                keep = value.len();
            }
            b => {
                value.push(b);
                i += 1;
            }
        }
    }
    while value.len() > keep && value.last() == Some(&b' ') {
        value.pop();
    }
    let value = String::from_utf8(value).map_err(|_| DnParseError::NotUtf8 { dn: dn.into() })?;
    Ok((value, i))
}

fn hex_digit(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

/// Escapes a value for use in a DN (RFC 4514 section 2.4): `"+,;<>\` and `=` always, `#` and
/// space at the start, space at the end, and control characters as `\XX`.
pub fn escape_dn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 4);
    let last = v.chars().count().saturating_sub(1);
    for (n, c) in v.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' if n == 0 => out.push_str("\\#"),
            ' ' if n == 0 || n == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{b:02X}");
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Escapes a value for use inside an LDAP search filter (RFC 4515 section 3): `*`, `(`, `)`,
/// `\` and NUL become `\2a`, `\28`, `\29`, `\5c`, `\00`. Other UTF-8 passes unchanged.
pub fn escape_filter_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 8);
    for c in v.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        normalize_dn(s).unwrap().into_owned()
    }

    #[test]
    fn spellings_of_one_entry_are_equal() {
        assert_eq!(n("cn=a\\,b,dc=x"), n("cn=a\\2Cb,dc=x"));
        assert_eq!(n("cn=a\\,b,dc=x"), n("CN=A\\2cB , DC=X"));
        assert_eq!(n("cn=Jörg,dc=x"), n("cn=J\\C3\\B6rg,dc=x"));
        assert_eq!(n("cn=JÖRG,dc=x"), n("cn=jörg,dc=x"));
        assert_eq!(n("uid=a+cn=b,dc=x"), n("cn=B+uid=A,dc=x"));
        assert_eq!(n("cn=a  b,dc=x"), n("cn=a b,dc=x"));
        assert_ne!(n("cn=a\\,b,dc=x"), n("cn=a,cn=b,dc=x"));
        assert_ne!(n("cn=a\\+b,dc=x"), n("cn=a+b=c,dc=x"));
        assert_eq!(n("cn=\\ a\\ ,dc=x"), n("cn=\\20a\\20,dc=x"));
        // caseIgnoreMatch drops leading and trailing spaces (RFC 4518), escaped or not.
        assert_eq!(n("cn=\\ a,dc=x"), n("cn=a,dc=x"));
        assert_eq!(n("cn=#04024869,dc=x"), n("CN=#04024869,dc=x"));
        assert_eq!(n(""), "");
    }

    #[test]
    fn fast_path_agrees_with_the_parser() {
        for dn in [
            "uid=user000001,ou=People,dc=example,dc=org",
            "CN=Group-1,OU=x.y,DC=a_b",
            "mail=a@b.c,dc=x",
            "2.5.4.3=a,dc=x",
        ] {
            let full = LdapDn::parse(dn).unwrap().normalized();
            assert_eq!(normalize_dn(dn).unwrap(), full, "{dn}");
        }
        for slow in [
            "cn=a b,dc=x",
            "cn=a=b,dc=x",
            "cn=a\\,b",
            "cn=a+uid=b",
            "cn=,dc=x",
            "",
        ] {
            assert!(!is_plain(slow), "{slow}");
        }
    }

    #[test]
    fn normalized_form_round_trips() {
        for dn in [
            "cn=Müller\\, Jörg \\+ Co \\\\ Ltd,ou=people,dc=example,dc=org",
            "uid=*)(uid=*,ou=people,dc=example,dc=org",
            "cn=\\#hash\\ ,dc=x",
            "cn=a\\3Db,dc=x",
        ] {
            let once = n(dn);
            assert_eq!(n(&once), once, "{dn}");
        }
        let d = LdapDn::parse("cn=Müller\\, Jörg \\+ Co \\\\ Ltd,ou=people").unwrap();
        assert_eq!(d.leaf_value("cn"), Some("Müller, Jörg + Co \\ Ltd"));
        assert_eq!(d.rdns.len(), 2);
    }

    #[test]
    fn malformed_dns_are_errors_not_panics() {
        for bad in [
            "cn", "cn=a,", "=a", "cn=a\\", "cn=a\\4", "cn=a\\zz", "c n=a", "cn=#abc", "cn=\\FF",
            "cn=a,b",
        ] {
            assert!(LdapDn::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn filter_values_are_escaped() {
        assert_eq!(escape_filter_value("*)(uid=*"), "\\2a\\29\\28uid=\\2a");
        assert_eq!(escape_filter_value("a\\b\0"), "a\\5cb\\00");
        assert_eq!(escape_filter_value("Jörg, + Co"), "Jörg, + Co");
    }

    #[test]
    fn dn_values_are_escaped() {
        assert_eq!(escape_dn_value("Doe, Jane + #1"), "Doe\\, Jane \\+ #1");
        assert_eq!(escape_dn_value("#x "), "\\#x\\ ");
        assert_eq!(escape_dn_value("a\nb"), "a\\0Ab");
    }
}
