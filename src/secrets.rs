//! Secrets at rest: the master key, authenticated encryption of stored secrets, key
//! diversification, and generation of initial PINs and PUKs.
//!
//! ```text
//!   master.key (32 random bytes, hex, mode 0600)
//!        │
//!        ├─ diversify("seal", "aes-256-gcm") ──► AES-256-GCM key ──► seal / open
//!        └─ diversify(purpose, id, len) ──────► per-card management keys and the like
//! ```
//!
//! The master key file holds the 32 key bytes as 64 lower-case hex digits and a newline (a
//! file of exactly 32 raw bytes is accepted too). It is created on first use, with mode 0600
//! from the very first byte (written to a private temporary file and hard-linked into place,
//! so no reader ever sees a partial key), and refused when group or others may read it.
//!
//! This module does NOT decide where secrets are stored (the store does), does not log or print
//! secrets, and does not deliver PINs (the PIN mailer does).

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::{Rng, RngExt};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Environment variable naming a master key file other than `<state dir>/master.key`.
pub const MASTER_KEY_ENV: &str = "KEYFLEET_MASTER_KEY_FILE";

/// File name of the master key inside the state directory.
pub const MASTER_KEY_FILE: &str = "master.key";

/// Version byte that starts every sealed blob (AES-256-GCM, 96-bit nonce, 128-bit tag).
const SEAL_V1: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Failures of loading the master key or opening sealed data.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The directory that should hold the master key could not be created.
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Writing a new master key file failed.
    #[error("cannot create master key file {path}: {source}")]
    Create {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Reading an existing master key file failed.
    #[error("cannot read master key file {path}: {source}")]
    Read {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The master key file may be read by group or others.
    #[error(
        "master key file {path} has mode {mode:o}; it must not be accessible by group or others (chmod 600)"
    )]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The master key file is not a regular file.
    #[error("master key file {0} is not a regular file")]
    NotAFile(PathBuf),
    /// The master key file holds neither 32 raw bytes nor 64 hex digits.
    #[error(
        "master key file {path} is malformed ({len} bytes): expected 64 hex digits or 32 raw bytes"
    )]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
    /// Sealed data is too short or has an unknown version byte.
    #[error("sealed data is truncated or has an unknown format")]
    SealedFormat,
    /// Authentication failed: wrong master key, wrong associated data, or tampered data.
    #[error("cannot decrypt sealed data: wrong master key or the data was altered")]
    Decrypt,
}

/// The 32-byte master key from which every stored secret's protection derives.
///
/// The bytes are wiped when the value is dropped; `Debug` never shows them.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// The master key file to use: `env_value` (the value of [`MASTER_KEY_ENV`]) when set and
/// non-empty, otherwise `<state_dir>/master.key`.
pub fn master_key_path(state_dir: &Path, env_value: Option<OsString>) -> PathBuf {
    match env_value {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => state_dir.join(MASTER_KEY_FILE),
    }
}

impl MasterKey {
    /// Loads the master key, creating it on first use.
    ///
    /// The file is `<state_dir>/master.key` unless the environment variable
    /// `KEYFLEET_MASTER_KEY_FILE` names another one. See [`MasterKey::load_or_create_at`].
    pub fn load_or_create(state_dir: &Path) -> Result<Self, SecretError> {
        let path = master_key_path(state_dir, std::env::var_os(MASTER_KEY_ENV));
        Self::load_or_create_at(&path)
    }

    /// Loads the master key from `path`, creating it (32 random bytes, hex, mode 0600) if the
    /// file does not exist. A file that group or others may access, or of the wrong length, is
    /// refused.
    pub fn load_or_create_at(path: &Path) -> Result<Self, SecretError> {
        match Self::load_at(path) {
            Err(SecretError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Self::create_at(path)
            }
            other => other,
        }
    }

    /// Loads an existing master key file, refusing it when its permissions or length are wrong.
    pub fn load_at(path: &Path) -> Result<Self, SecretError> {
        let read_err = |source| SecretError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = fs::File::open(path).map_err(read_err)?;
        let meta = file.metadata().map_err(read_err)?;
        if !meta.is_file() {
            return Err(SecretError::NotAFile(path.to_path_buf()));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut contents = Zeroizing::new(Vec::with_capacity(80));
        // Read at most a little more than the longest valid form, so a huge file is not slurped.
        file.take(256)
            .read_to_end(&mut contents)
            .map_err(read_err)?;
        parse_key_file(&contents).ok_or_else(|| SecretError::Malformed {
            path: path.to_path_buf(),
            len: contents.len(),
        })
    }

    /// Creates a new random key at `path`. Fails if the file appeared meanwhile and is unusable.
    fn create_at(path: &Path) -> Result<Self, SecretError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|source| SecretError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(bytes.as_mut_slice());
        let mut text = Zeroizing::new(hex::encode(bytes.as_slice()).into_bytes());
        text.push(b'\n');

        let create_err = |source| SecretError::Create {
            path: path.to_path_buf(),
            source,
        };
        let mut suffix = [0u8; 8];
        rand::rng().fill_bytes(&mut suffix);
        let mut tmp_name = path.file_name().map(OsString::from).unwrap_or_default();
        tmp_name.push(format!(".tmp-{}", hex::encode(suffix)));
        let tmp = path.with_file_name(tmp_name);
        let written = (|| -> io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(create_err(e));
        }
        // Hard-linking fails if the target exists, so two processes racing to create the key
        // never overwrite each other: the loser loads the winner's key.
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
                    && let Ok(d) = fs::File::open(dir)
                {
                    let _ = d.sync_all();
                }
                Ok(MasterKey(bytes))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Self::load_at(path),
            Err(e) => Err(create_err(e)),
        }
    }

    /// A master key from known bytes (tests, or keys held elsewhere).
    pub fn from_bytes(b: [u8; 32]) -> Self {
        MasterKey(Zeroizing::new(b))
    }

    fn cipher(&self) -> Aes256Gcm {
        let key = self.diversify("seal", "aes-256-gcm", 32);
        // A 32-byte slice is always a valid AES-256 key length.
        match Aes256Gcm::new_from_slice(&key) {
            Ok(c) => c,
            Err(_) => unreachable!("diversify returned 32 bytes"),
        }
    }

    /// Encrypts and authenticates `plaintext`, binding it to `aad` (e.g. the record's id).
    ///
    /// Output: version byte `0x01`, a random 96-bit nonce, then the AES-256-GCM ciphertext
    /// and tag. The AES key is diversified from the master key (purpose `seal`). Plaintexts are
    /// expected to be small (keys, PINs); over 64 GiB cannot be sealed.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        // AES-GCM encryption fails only for plaintexts over 64 GiB; such a blob is left without
        // ciphertext, which `open` then refuses rather than returning wrong data.
        let ct = self
            .cipher()
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(SEAL_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypts data made by [`MasterKey::seal`] with the same key and `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        if sealed.len() < 1 + NONCE_LEN + TAG_LEN {
            return Err(SecretError::SealedFormat);
        }
        let (version, rest) = sealed.split_at(1);
        if version != [SEAL_V1] {
            return Err(SecretError::SealedFormat);
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SecretError::SealedFormat)?;
        self.cipher()
            .decrypt(&Nonce::from(nonce), Payload { msg: ct, aad })
            .map(Zeroizing::new)
            .map_err(|_| SecretError::Decrypt)
    }

    /// Derives `len` bytes for `purpose` (e.g. `"piv-management-key"`) and `id` (e.g. a card id).
    ///
    /// HKDF-expand (RFC 5869, the `hkdf` crate) with HMAC-SHA256, the master key as PRK, and an info string that
    /// length-prefixes both inputs so that no two (purpose, id) pairs collide. `len` is capped
    /// at 255 × 32 bytes, HKDF's limit.
    pub fn diversify(&self, purpose: &str, id: &str, len: usize) -> Zeroizing<Vec<u8>> {
        let len = len.min(255 * 32);
        let mut info = Vec::with_capacity(16 + purpose.len() + id.len());
        info.extend_from_slice(b"keyfleet-kdf-v1");
        info.extend_from_slice(&(purpose.len() as u64).to_be_bytes());
        info.extend_from_slice(purpose.as_bytes());
        info.extend_from_slice(&(id.len() as u64).to_be_bytes());
        info.extend_from_slice(id.as_bytes());

        let mut out = Zeroizing::new(vec![0u8; len]);
        // A 32-byte PRK is always long enough and `len` is within HKDF's limit, so neither
        // call can fail; an empty output would be refused by every consumer regardless.
        let expanded = hkdf::Hkdf::<Sha256>::from_prk(self.0.as_slice())
            .map_err(|_| ())
            .and_then(|h| h.expand(&info, &mut out).map_err(|_| ()));
        if expanded.is_err() {
            out.clear();
        }
        out
    }
}

/// Parses `64 hex digits [\n]` or exactly 32 raw bytes.
fn parse_key_file(contents: &[u8]) -> Option<MasterKey> {
    let mut key = Zeroizing::new([0u8; 32]);
    let trimmed = contents
        .strip_suffix(b"\n")
        .map(|t| t.strip_suffix(b"\r").unwrap_or(t))
        .unwrap_or(contents);
    if trimmed.len() == 64 && trimmed.iter().all(u8::is_ascii_hexdigit) {
        hex::decode_to_slice(trimmed, key.as_mut_slice()).ok()?;
        return Some(MasterKey(key));
    }
    if contents.len() == 32 {
        key.copy_from_slice(contents);
        return Some(MasterKey(key));
    }
    None
}

/// True for PINs anyone would try first: one repeated digit, or a run that steps by +1 or -1
/// throughout (`123456`, `876543`; wrapping `890123` counts as a run too).
pub fn is_trivial_pin(pin: &str) -> bool {
    let d: Vec<u8> = pin.bytes().collect();
    if d.len() < 2 {
        return false;
    }
    let all_same = d.iter().all(|c| *c == d[0]);
    let steps = |delta: u8| {
        d.windows(2)
            .all(|w| w[0].is_ascii_digit() && w[1] == b'0' + (w[0] - b'0' + delta) % 10)
    };
    all_same || steps(1) || steps(9)
}

fn random_digits(len: u8) -> String {
    let mut rng = rand::rng();
    loop {
        let s: String = (0..len)
            .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
            .collect();
        if !is_trivial_pin(&s) {
            return s;
        }
    }
}

/// A random PIN of `len` decimal digits that is not trivially weak (see [`is_trivial_pin`]).
pub fn generate_pin(len: u8) -> String {
    random_digits(len)
}

/// A random PUK of `len` decimal digits, with the same weak-value exclusions as PINs.
pub fn generate_puk(len: u8) -> String {
    random_digits(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};

    fn key() -> MasterKey {
        MasterKey::from_bytes([7u8; 32])
    }

    #[test]
    fn seal_round_trips_and_binds_aad() {
        let k = key();
        let sealed = k.seal(b"card-1", b"123456");
        assert_eq!(sealed[0], SEAL_V1);
        assert_eq!(sealed.len(), 1 + NONCE_LEN + 6 + TAG_LEN);
        assert_eq!(k.open(b"card-1", &sealed).unwrap().as_slice(), b"123456");
        assert!(matches!(
            k.open(b"card-2", &sealed),
            Err(SecretError::Decrypt)
        ));
        let other = MasterKey::from_bytes([8u8; 32]);
        assert!(matches!(
            other.open(b"card-1", &sealed),
            Err(SecretError::Decrypt)
        ));
        // Fresh nonce every time.
        assert_ne!(k.seal(b"card-1", b"123456"), sealed);
    }

    #[test]
    fn open_rejects_tampering_and_garbage() {
        let k = key();
        let mut sealed = k.seal(b"", b"secret");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(matches!(k.open(b"", &sealed), Err(SecretError::Decrypt)));
        assert!(matches!(k.open(b"", &[]), Err(SecretError::SealedFormat)));
        assert!(matches!(
            k.open(b"", &[1u8; 20]),
            Err(SecretError::SealedFormat)
        ));
        let mut wrong_version = k.seal(b"", b"secret");
        wrong_version[0] = 2;
        assert!(matches!(
            k.open(b"", &wrong_version),
            Err(SecretError::SealedFormat)
        ));
    }

    #[test]
    fn diversify_is_deterministic_and_separated() {
        let k = key();
        let a = k.diversify("piv-management-key", "card-1", 24);
        assert_eq!(a.len(), 24);
        assert_eq!(a, k.diversify("piv-management-key", "card-1", 24));
        assert_ne!(a, k.diversify("piv-management-key", "card-2", 24));
        assert_ne!(a, k.diversify("other", "card-1", 24));
        // Length prefixes: ("ab","c") and ("a","bc") differ.
        assert_ne!(k.diversify("ab", "c", 32), k.diversify("a", "bc", 32));
        // Longer outputs extend shorter ones (HKDF-expand property), and span several blocks.
        let long = k.diversify("piv-management-key", "card-1", 80);
        assert_eq!(&long[..24], a.as_slice());
        assert_eq!(long.len(), 80);
        assert!(k.diversify("x", "y", 0).is_empty());
        assert_eq!(k.diversify("x", "y", usize::MAX).len(), 255 * 32);
        assert_ne!(
            k.diversify("x", "y", 32),
            MasterKey::from_bytes([9; 32]).diversify("x", "y", 32)
        );
    }

    /// Known answers computed with the hand-written HKDF-expand this replaced: diversified
    /// management keys and PINs of existing cards must not change.
    #[test]
    fn diversify_known_answers_are_stable() {
        let k = key();
        assert_eq!(
            hex::encode(k.diversify("piv-management-key", "card-1", 24)),
            "caa07c981cb6f0af87bb7486b0b8d76a8df15d6a44658ca5"
        );
        assert_eq!(
            hex::encode(k.diversify("piv-management-key", "card-1", 80)),
            "caa07c981cb6f0af87bb7486b0b8d76a8df15d6a44658ca5643d4153d2a3d142b0d42cbdef153bd1\
             dab058983f851b486956952a9355e50884ea7d5f7c8a9293055bb9ead8f5d067295c20aa0b6fb5a4"
        );
    }

    #[test]
    fn diversify_matches_hkdf_expand_reference() {
        // RFC 5869 HKDF-Expand, first block: T(1) = HMAC(PRK, info || 0x01).
        let k = key();
        let mut info = b"keyfleet-kdf-v1".to_vec();
        info.extend_from_slice(&1u64.to_be_bytes());
        info.push(b'p');
        info.extend_from_slice(&1u64.to_be_bytes());
        info.push(b'i');
        info.push(1);
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&[7u8; 32]).unwrap();
        mac.update(&info);
        let t1 = mac.finalize().into_bytes();
        assert_eq!(k.diversify("p", "i", 32).as_slice(), t1.as_slice());
    }

    #[test]
    fn creates_key_file_with_0600_and_reloads_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let path = master_key_path(&state, None);
        assert_eq!(path, state.join("master.key"));
        let k1 = MasterKey::load_or_create_at(&path).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 65);
        assert!(text.ends_with('\n'));
        let k2 = MasterKey::load_or_create_at(&path).unwrap();
        assert_eq!(k1.0.as_slice(), k2.0.as_slice());
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(&state).unwrap().count(), 1);
    }

    #[test]
    fn env_value_overrides_path() {
        let p = master_key_path(Path::new("/s"), Some(OsString::from("/elsewhere/k")));
        assert_eq!(p, PathBuf::from("/elsewhere/k"));
        assert_eq!(
            master_key_path(Path::new("/s"), Some(OsString::new())),
            PathBuf::from("/s/master.key")
        );
    }

    #[test]
    fn refuses_readable_or_malformed_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = MasterKey::load_or_create_at(&path).unwrap_err();
        assert!(matches!(err, SecretError::Permissions { mode: 0o644, .. }));
        assert!(err.to_string().contains("chmod 600"));

        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let k = MasterKey::load_at(&path).unwrap();
        assert_eq!(k.0.as_slice(), &[0xab; 32]);

        fs::write(&path, "abcd\n").unwrap();
        assert!(matches!(
            MasterKey::load_or_create_at(&path),
            Err(SecretError::Malformed { len: 5, .. })
        ));
        // The malformed file is left alone, never replaced by a new key.
        assert_eq!(fs::read_to_string(&path).unwrap(), "abcd\n");

        fs::write(&path, [0x5au8; 32]).unwrap();
        assert_eq!(MasterKey::load_at(&path).unwrap().0.as_slice(), &[0x5a; 32]);

        assert!(matches!(
            MasterKey::load_at(dir.path()),
            Err(SecretError::NotAFile(_)) | Err(SecretError::Read { .. })
        ));
    }

    #[test]
    fn pins_are_digits_of_the_right_length_and_not_trivial() {
        for len in [4u8, 6, 8] {
            for _ in 0..200 {
                let pin = generate_pin(len);
                assert_eq!(pin.len(), usize::from(len));
                assert!(pin.bytes().all(|b| b.is_ascii_digit()));
                assert!(!is_trivial_pin(&pin), "{pin}");
            }
        }
        let puk = generate_puk(8);
        assert_eq!(puk.len(), 8);
        assert!(puk.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(generate_pin(0), "");
    }

    #[test]
    fn trivial_pins_are_recognised() {
        for weak in ["0000", "111111", "123456", "654321", "890123", "3210", "12"] {
            assert!(is_trivial_pin(weak), "{weak}");
        }
        for ok in ["1357", "123457", "902184", "1", "1123"] {
            assert!(!is_trivial_pin(ok), "{ok}");
        }
    }
}
