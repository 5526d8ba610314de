//! PKCS#11 URIs (RFC 7512): parsing and printing the subset Keyfleet uses to name tokens,
//! objects and modules.
//!
//! Path attributes: `token`, `serial`, `manufacturer`, `model`, `object`, `id` (percent-encoded
//! bytes), `type` (`private`, `public`, `cert`, `secret-key`, `data`). Query attributes:
//! `module-path`, `pin-value`, `pin-source` (`env:NAME`, `file:/path` or a plain path).
//! Unknown path attributes are refused (RFC 7512 lets a consumer refuse what it cannot honour;
//! silently widening a match would pick the wrong token). This module does not resolve PINs or
//! open modules.

use std::fmt;
use std::path::PathBuf;

/// A PKCS#11 URI that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// The text does not start with `pkcs11:`.
    #[error("{0:?} is not a pkcs11: URI")]
    Scheme(String),
    /// An attribute is not `name=value`.
    #[error("pkcs11 URI attribute {0:?} is not name=value")]
    Attribute(String),
    /// A path attribute Keyfleet does not know.
    #[error("pkcs11 URI attribute {0:?} is not supported")]
    Unknown(String),
    /// A `%XX` escape is malformed or the value is not UTF-8.
    #[error("pkcs11 URI value {0:?} is badly percent-encoded")]
    Encoding(String),
    /// `type` is not one of the object classes.
    #[error("pkcs11 URI type {0:?} is not private, public, cert, secret-key or data")]
    Type(String),
}

/// The `type` attribute: an object class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectType {
    /// `private`: a private key.
    Private,
    /// `public`: a public key.
    Public,
    /// `cert`: a certificate.
    Cert,
    /// `secret-key`: a secret (symmetric) key.
    SecretKey,
    /// `data`: a data object.
    Data,
}

impl ObjectType {
    /// The name in a URI.
    pub const fn as_str(self) -> &'static str {
        match self {
            ObjectType::Private => "private",
            ObjectType::Public => "public",
            ObjectType::Cert => "cert",
            ObjectType::SecretKey => "secret-key",
            ObjectType::Data => "data",
        }
    }
}

/// A parsed PKCS#11 URI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// Token label.
    pub token: Option<String>,
    /// Token serial number.
    pub serial: Option<String>,
    /// Token manufacturer.
    pub manufacturer: Option<String>,
    /// Token model.
    pub model: Option<String>,
    /// Object label.
    pub object: Option<String>,
    /// Object id (CKA_ID bytes).
    pub id: Option<Vec<u8>>,
    /// Object class.
    pub object_type: Option<ObjectType>,
    /// The module (shared library) to load.
    pub module_path: Option<PathBuf>,
    /// A PIN given in the URI itself.
    pub pin_value: Option<String>,
    /// Where to read the PIN: `env:NAME`, `file:/path` or a path.
    pub pin_source: Option<String>,
}

fn decode(value: &str) -> Result<Vec<u8>, UriError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| UriError::Encoding(value.to_string()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Ok(out)
}

fn decode_str(value: &str) -> Result<String, UriError> {
    String::from_utf8(decode(value)?).map_err(|_| UriError::Encoding(value.to_string()))
}

/// Percent-encodes every byte outside RFC 7512's unreserved set (plus `:` and `/` in query
/// values, which are allowed there and keep paths readable).
fn encode(bytes: &[u8], query: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        let plain = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (query && matches!(b, b'/' | b':'));
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Pkcs11Uri {
    /// Parses `pkcs11:path-attrs?query-attrs`.
    pub fn parse(text: &str) -> Result<Self, UriError> {
        let rest = text
            .strip_prefix("pkcs11:")
            .ok_or_else(|| UriError::Scheme(text.to_string()))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut uri = Pkcs11Uri::default();
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| UriError::Attribute(attr.to_string()))?;
            match name {
                "token" => uri.token = Some(decode_str(value)?),
                "serial" => uri.serial = Some(decode_str(value)?),
                "manufacturer" => uri.manufacturer = Some(decode_str(value)?),
                "model" => uri.model = Some(decode_str(value)?),
                "object" => uri.object = Some(decode_str(value)?),
                "id" => uri.id = Some(decode(value)?),
                "type" => {
                    uri.object_type = Some(match value {
                        "private" => ObjectType::Private,
                        "public" => ObjectType::Public,
                        "cert" => ObjectType::Cert,
                        "secret-key" => ObjectType::SecretKey,
                        "data" => ObjectType::Data,
                        other => return Err(UriError::Type(other.to_string())),
                    })
                }
                other => return Err(UriError::Unknown(other.to_string())),
            }
        }
        for attr in query.split('&').filter(|a| !a.is_empty()) {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| UriError::Attribute(attr.to_string()))?;
            match name {
                "module-path" => uri.module_path = Some(PathBuf::from(decode_str(value)?)),
                "pin-value" => uri.pin_value = Some(decode_str(value)?),
                "pin-source" => uri.pin_source = Some(decode_str(value)?),
                // Unknown query attributes may be ignored (RFC 7512 §2.3).
                _ => {}
            }
        }
        Ok(uri)
    }

    /// The URI of an object on a token, as Keyfleet prints it in its output.
    pub fn object_on(serial: &str, label: &str, object: &str, kind: ObjectType) -> Self {
        Pkcs11Uri {
            token: Some(label.to_string()),
            serial: Some(serial.to_string()),
            object: Some(object.to_string()),
            object_type: Some(kind),
            ..Default::default()
        }
    }
}

impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut path: Vec<String> = Vec::new();
        let mut put = |name: &str, v: &Option<String>| {
            if let Some(v) = v {
                path.push(format!("{name}={}", encode(v.as_bytes(), false)));
            }
        };
        put("token", &self.token);
        put("serial", &self.serial);
        put("manufacturer", &self.manufacturer);
        put("model", &self.model);
        put("object", &self.object);
        if let Some(id) = &self.id {
            path.push(format!("id={}", encode_all(id)));
        }
        if let Some(t) = self.object_type {
            path.push(format!("type={}", t.as_str()));
        }
        write!(f, "pkcs11:{}", path.join(";"))?;
        let mut query: Vec<String> = Vec::new();
        if let Some(p) = &self.module_path {
            query.push(format!(
                "module-path={}",
                encode(p.to_string_lossy().as_bytes(), true)
            ));
        }
        if let Some(p) = &self.pin_source {
            query.push(format!("pin-source={}", encode(p.as_bytes(), true)));
        }
        // A pin-value is never printed back: URIs end up in logs and output.
        if !query.is_empty() {
            write!(f, "?{}", query.join("&"))?;
        }
        Ok(())
    }
}

/// Ids are binary: every byte is escaped.
fn encode_all(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_path_and_query() {
        let u = Pkcs11Uri::parse(
            "pkcs11:token=alice;object=piv-auth;type=private;id=%9A?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=env:PIN",
        )
        .unwrap();
        assert_eq!(u.token.as_deref(), Some("alice"));
        assert_eq!(u.object.as_deref(), Some("piv-auth"));
        assert_eq!(u.object_type, Some(ObjectType::Private));
        assert_eq!(u.id, Some(vec![0x9A]));
        assert_eq!(
            u.module_path,
            Some(PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"))
        );
        assert_eq!(u.pin_source.as_deref(), Some("env:PIN"));
    }

    #[test]
    fn round_trips_and_hides_pin_values() {
        let mut u = Pkcs11Uri::object_on("00ab", "a b;c", "piv-auth", ObjectType::Cert);
        u.pin_value = Some("1234".into());
        let text = u.to_string();
        assert_eq!(
            text,
            "pkcs11:token=a%20b%3Bc;serial=00ab;object=piv-auth;type=cert"
        );
        let back = Pkcs11Uri::parse(&text).unwrap();
        assert_eq!(back.token.as_deref(), Some("a b;c"));
        assert_eq!(back.pin_value, None);
    }

    #[test]
    fn refuses_bad_input() {
        assert!(matches!(
            Pkcs11Uri::parse("file:x"),
            Err(UriError::Scheme(_))
        ));
        assert!(matches!(
            Pkcs11Uri::parse("pkcs11:token"),
            Err(UriError::Attribute(_))
        ));
        assert!(matches!(
            Pkcs11Uri::parse("pkcs11:slot-id=1"),
            Err(UriError::Unknown(_))
        ));
        assert!(matches!(
            Pkcs11Uri::parse("pkcs11:token=%4"),
            Err(UriError::Encoding(_))
        ));
        assert!(matches!(
            Pkcs11Uri::parse("pkcs11:token=%FF"),
            Err(UriError::Encoding(_))
        ));
        assert!(matches!(
            Pkcs11Uri::parse("pkcs11:type=key"),
            Err(UriError::Type(_))
        ));
    }
}
