//! Who the operator client is to the server: a key on a PKCS#11 token (the operator's card),
//! named by an RFC 7512 URI, or a certificate and key in PEM files (automation); and where the
//! token's PIN comes from.
//!
//! PINs are never logged or printed and live in [`Zeroizing`] buffers.

use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::card::pkcs11::{P11Error, Pkcs11Uri, UriError};

/// The operator's TLS client identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A private key on a PKCS#11 token (with the certificate the token holds for it).
    Pkcs11(Pkcs11Uri),
    /// A PEM certificate (chain, leaf first) and its PEM private key.
    Files {
        /// The certificate file.
        cert: PathBuf,
        /// The private key file (PKCS#8, SEC1 or PKCS#1).
        key: PathBuf,
    },
}

impl Identity {
    /// Parses `--identity URI`.
    pub fn parse_uri(text: &str) -> Result<Identity, IdentityError> {
        let uri = Pkcs11Uri::parse(text).map_err(IdentityError::Uri)?;
        Ok(Identity::Pkcs11(uri))
    }

    /// How the identity is named in messages (never with a PIN).
    pub fn describe(&self) -> String {
        match self {
            Identity::Pkcs11(uri) => uri.to_string(),
            Identity::Files { cert, .. } => cert.display().to_string(),
        }
    }
}

/// The identity cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The `--identity` URI does not parse.
    #[error("--identity: {0}")]
    Uri(UriError),
    /// The URI asks for something the client cannot honour (a token by manufacturer or model,
    /// an object type that is no key pair, several matching tokens).
    #[error("--identity {uri}: {reason}")]
    Unsupported {
        /// The URI (without the PIN).
        uri: String,
        /// What cannot be done.
        reason: String,
    },
    /// The URI names no module.
    #[error(
        "--identity {0}: the URI has no module-path (e.g. ?module-path=/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so)"
    )]
    NoModule(String),
    /// The URI's `pin-source` is not `file:PATH`, `env:NAME` or a path.
    #[error("--identity: pin-source {0:?} is not file:PATH, env:NAME or a path")]
    PinSource(String),
    /// The PIN could not be read from its source.
    #[error("the PIN for token {token} could not be read from {from}: {reason}")]
    PinRead {
        /// The token (label and serial).
        token: String,
        /// Where it was read from (a file, a variable, the terminal).
        from: String,
        /// Why.
        reason: String,
    },
    /// The module or token failed (loading, finding the token, a call).
    #[error("--identity {uri}: {error}")]
    Token {
        /// The URI (without the PIN).
        uri: String,
        /// Why.
        error: P11Error,
    },
    /// The token refused the PIN, or the PIN is locked.
    #[error("token {token}: login with the PIN failed ({code}): {message}")]
    Login {
        /// The token (label and serial).
        token: String,
        /// The PKCS#11 return code (`CKR_PIN_INCORRECT`, `CKR_PIN_LOCKED`, ...).
        code: String,
        /// What the token says.
        message: String,
    },
    /// No private key, or more than one, matches the URI.
    #[error("token {token}: {reason}")]
    Key {
        /// The token (label and serial).
        token: String,
        /// What was found.
        reason: String,
    },
    /// The token holds no usable certificate for the key.
    #[error("token {token}: {reason}")]
    Certificate {
        /// The token (label and serial).
        token: String,
        /// What is wrong.
        reason: String,
    },
    /// The token supports no mechanism Keyfleet can sign a TLS handshake with for this key.
    #[error("token {token}: no signature scheme for a {key} key among the token's mechanisms")]
    NoScheme {
        /// The token (label and serial).
        token: String,
        /// The key type.
        key: String,
    },
    /// The certificate or key files cannot be used.
    #[error(transparent)]
    Files(crate::ca::remote::RemoteError),
}

/// Where the token's PIN comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// `pin-value` in the URI.
    Value(Zeroizing<String>),
    /// `pin-source=file:PATH` (or a plain path): the file's first line.
    File(PathBuf),
    /// `pin-source=env:NAME`: the variable's value.
    Env(String),
    /// Neither: asked on the terminal (/dev/tty), without echo.
    Terminal,
}

impl PinSource {
    /// The PIN source a URI names: `pin-value` first, then `pin-source`, else the terminal.
    pub fn of(uri: &Pkcs11Uri) -> Result<PinSource, IdentityError> {
        if let Some(v) = &uri.pin_value {
            return Ok(PinSource::Value(Zeroizing::new(v.clone())));
        }
        let Some(source) = uri.pin_source.as_deref() else {
            return Ok(PinSource::Terminal);
        };
        if let Some(path) = source.strip_prefix("file:") {
            // file:///path and file:/path both name /path.
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(IdentityError::PinSource(source.to_string()));
            }
            return Ok(PinSource::File(PathBuf::from(path)));
        }
        if let Some(name) = source.strip_prefix("env:") {
            if name.is_empty() {
                return Err(IdentityError::PinSource(source.to_string()));
            }
            return Ok(PinSource::Env(name.to_string()));
        }
        if source.starts_with('/') || source.starts_with('.') {
            return Ok(PinSource::File(PathBuf::from(source)));
        }
        Err(IdentityError::PinSource(source.to_string()))
    }

    /// Reads the PIN for `token` (named in the prompt and in errors).
    pub fn read(&self, token: &str) -> Result<Zeroizing<String>, IdentityError> {
        let fail = |from: String, reason: String| IdentityError::PinRead {
            token: token.to_string(),
            from,
            reason,
        };
        match self {
            PinSource::Value(v) => Ok(v.clone()),
            PinSource::File(path) => {
                let text = Zeroizing::new(
                    std::fs::read_to_string(path)
                        .map_err(|e| fail(path.display().to_string(), e.to_string()))?,
                );
                let pin = first_line(&text);
                if pin.is_empty() {
                    return Err(fail(path.display().to_string(), "the file is empty".into()));
                }
                Ok(pin)
            }
            PinSource::Env(name) => {
                let v = Zeroizing::new(
                    std::env::var(name).map_err(|e| fail(format!("${name}"), e.to_string()))?,
                );
                Ok(first_line(&v))
            }
            PinSource::Terminal => ask_terminal(token)
                .map_err(|e| fail("the terminal (/dev/tty)".into(), e.to_string())),
        }
    }
}

/// The first line of `text`, without its line ending.
fn first_line(text: &str) -> Zeroizing<String> {
    let line = text.lines().next().unwrap_or_default();
    Zeroizing::new(line.trim_end_matches('\r').to_string())
}

/// Asks for the PIN on /dev/tty with echo off (see [`crate::tty::ask_secret`]).
fn ask_terminal(token: &str) -> std::io::Result<Zeroizing<String>> {
    crate::tty::ask_secret(&format!("PIN for token {token}: "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(q: &str) -> Result<PinSource, IdentityError> {
        PinSource::of(&Pkcs11Uri::parse(&format!("pkcs11:id=%01?{q}")).unwrap())
    }

    #[test]
    fn pin_sources_parse() {
        assert_eq!(
            source("pin-value=123456&pin-source=file:/x").unwrap(),
            PinSource::Value(Zeroizing::new("123456".into()))
        );
        assert_eq!(
            source("pin-source=file:/run/pin").unwrap(),
            PinSource::File("/run/pin".into())
        );
        assert_eq!(
            source("pin-source=file:///run/pin").unwrap(),
            PinSource::File("/run/pin".into())
        );
        assert_eq!(
            source("pin-source=/run/pin").unwrap(),
            PinSource::File("/run/pin".into())
        );
        assert_eq!(
            source("pin-source=env:OP_PIN").unwrap(),
            PinSource::Env("OP_PIN".into())
        );
        assert_eq!(source("module-path=/m.so").unwrap(), PinSource::Terminal);
        for bad in [
            "pin-source=file:",
            "pin-source=env:",
            "pin-source=https://x/pin",
        ] {
            assert!(
                matches!(source(bad), Err(IdentityError::PinSource(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn pin_file_gives_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, "246810\r\nsecond line\n").unwrap();
        let pin = PinSource::File(path.clone()).read("t").unwrap();
        assert_eq!(pin.as_str(), "246810");
        std::fs::write(&path, "").unwrap();
        let err = PinSource::File(path).read("alice (0001)").unwrap_err();
        assert!(err.to_string().contains("alice (0001)"), "{err}");
        let missing = PinSource::File(dir.path().join("none")).read("t");
        assert!(matches!(missing, Err(IdentityError::PinRead { .. })));
    }
}
