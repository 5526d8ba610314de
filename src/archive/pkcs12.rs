//! A recovered key as a PKCS#12 file: the private key and its certificate, encrypted with
//! PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) under a fresh one-time password and MACed with
//! HMAC-SHA256, so `openssl pkcs12` reads it without legacy options. Written 0600, never over
//! an existing file.

use std::path::Path;

use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKey,
    PrivateKeyChain,
};
use zeroize::Zeroizing;

/// PBKDF2 iterations (OpenSSL 3's default for PKCS#12 is 2048; more is cheap here).
const ITERATIONS: u32 = 100_000;

/// Building or writing the file failed.
#[derive(Debug, thiserror::Error)]
pub enum Pkcs12Error {
    /// The key or a certificate is not accepted by the encoder.
    #[error("cannot encode the PKCS#12 file: {0}")]
    Encode(String),
    /// The file cannot be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A fresh one-time password: 24 characters from an unambiguous alphabet (about 120 bits).
pub fn one_time_password() -> Zeroizing<String> {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzACDEFGHJKLMNPQRSTUVWXYZ2345679";
    let mut out = Zeroizing::new(String::with_capacity(24));
    while out.len() < 24 {
        let b: u8 = rand::random();
        // Rejection sampling: no modulo bias.
        let limit = 256 - (256 % ALPHABET.len());
        if usize::from(b) < limit {
            out.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
        }
    }
    out
}

/// One key of a PKCS#12 file.
pub struct Entry {
    /// Its friendly name.
    pub name: String,
    /// The private key, PKCS#8 DER.
    pub pkcs8: Zeroizing<Vec<u8>>,
    /// Its certificate, DER.
    pub certificate: Vec<u8>,
}

/// The PKCS#12 bytes of `keys`, under `password`.
pub fn encode(keys: &[Entry], password: &str) -> Result<Zeroizing<Vec<u8>>, Pkcs12Error> {
    let mut store = KeyStore::new();
    for Entry {
        name,
        pkcs8,
        certificate: cert,
    } in keys
    {
        let key = PrivateKey::from_der(pkcs8).map_err(|e| Pkcs12Error::Encode(e.to_string()))?;
        let cert = Certificate::from_der(cert).map_err(|e| Pkcs12Error::Encode(e.to_string()))?;
        let local_id = crate::archive::key_id(name.as_bytes());
        store.add_entry(
            name,
            KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(local_id.as_bytes(), key, [cert])),
        );
    }
    store
        .writer(password)
        .encryption_algorithm(EncryptionAlgorithm::PbeWithHmacSha256AndAes256)
        .encryption_iterations(ITERATIONS)
        .mac_algorithm(MacAlgorithm::HmacSha256)
        .mac_iterations(ITERATIONS)
        .write()
        .map(Zeroizing::new)
        .map_err(|e| Pkcs12Error::Encode(e.to_string()))
}

/// Writes `bytes` to `path`, mode 0600, refusing to replace an existing file.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<(), Pkcs12Error> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |source| Pkcs12Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}
