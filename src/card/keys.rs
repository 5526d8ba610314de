//! Key types shared by the PIV card model and the PIV client.
//!
//! Owns: the PIV algorithm identifiers ([`KeyAlg`], [`MgmtAlg`]), the management key and its
//! ECB block operation, public keys as the card returns them ([`PublicKey`], with SPKI DER), and
//! private key material for IMPORT KEY ([`PrivateKeyMaterial`]). It does NOT send APDUs and does
//! not store keys; it never generates asymmetric keys (the card does).

use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use p256::pkcs8::DecodePrivateKey as _;
use rsa::pkcs1::EncodeRsaPublicKey as _;
use rsa::traits::{PrivateKeyParts as _, PublicKeyParts as _};
use spki::EncodePublicKey as _;
use thiserror::Error;

/// Failures of key handling.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    /// A management key of the wrong length for its algorithm.
    #[error("management key for {alg:?} must be {want} bytes, got {got}")]
    MgmtKeyLength {
        /// The algorithm.
        alg: MgmtAlg,
        /// Required length.
        want: usize,
        /// Given length.
        got: usize,
    },
    /// Data for the block cipher is not a whole number of blocks.
    #[error("block cipher input of {0} bytes is not a whole number of blocks")]
    NotBlockAligned(usize),
    /// An EC point the card returned is not on the curve.
    #[error("invalid EC public point for {0:?}")]
    BadEcPoint(KeyAlg),
    /// An RSA modulus/exponent pair the card returned is unusable or of the wrong size.
    #[error("invalid RSA public key for {0:?}")]
    BadRsaKey(KeyAlg),
    /// The SubjectPublicKeyInfo could not be encoded.
    #[error("cannot encode the public key as SPKI")]
    SpkiEncode,
    /// A PKCS#8 private key could not be decoded as the requested algorithm.
    #[error("PKCS#8 private key is not a valid {0:?} key")]
    BadPkcs8(KeyAlg),
    /// Software key generation failed.
    #[error("cannot generate a {0:?} key")]
    Generate(KeyAlg),
}

/// Generates a key pair in software (server-side key generation, for keys that are archived
/// before they are imported into a card). Returns the PKCS#8 DER private key and the public key.
pub fn generate_software(
    alg: KeyAlg,
) -> Result<(zeroize::Zeroizing<Vec<u8>>, PublicKey), KeyError> {
    use p256::elliptic_curve::Generate as _;
    use p256::pkcs8::EncodePrivateKey as _;
    let mut rng = rand::rng();
    match alg {
        KeyAlg::EccP256 => {
            let k = p256::SecretKey::generate_from_rng(&mut rng);
            let der = k.to_pkcs8_der().map_err(|_| KeyError::Generate(alg))?;
            let public = PublicKey::from_ec_point(alg, &k.public_key().to_sec1_bytes())?;
            Ok((zeroize::Zeroizing::new(der.as_bytes().to_vec()), public))
        }
        KeyAlg::EccP384 => {
            let k = p384::SecretKey::generate_from_rng(&mut rng);
            let der = k.to_pkcs8_der().map_err(|_| KeyError::Generate(alg))?;
            let public = PublicKey::from_ec_point(alg, &k.public_key().to_sec1_bytes())?;
            Ok((zeroize::Zeroizing::new(der.as_bytes().to_vec()), public))
        }
        KeyAlg::Rsa2048 | KeyAlg::Rsa3072 => {
            let bits = alg.rsa_bytes().unwrap_or(256) * 8;
            let k = rsa::PrivateKey::new(&mut rng, bits).map_err(|_| KeyError::Generate(alg))?;
            let der = k.to_pkcs8_der().map_err(|_| KeyError::Generate(alg))?;
            let public = PublicKey::from_rsa_parts(
                alg,
                &k.n().to_be_bytes_trimmed_vartime(),
                &k.e().to_be_bytes_trimmed_vartime(),
            )?;
            Ok((zeroize::Zeroizing::new(der.as_bytes().to_vec()), public))
        }
    }
}

/// The algorithm and public key of a PKCS#8 DER private key Keyfleet makes (P-256, P-384,
/// RSA 2048 or 3072), or None.
pub fn public_of_pkcs8(der: &[u8]) -> Option<(KeyAlg, PublicKey)> {
    if let Ok(k) = p256::SecretKey::from_pkcs8_der(der) {
        let p = PublicKey::from_ec_point(KeyAlg::EccP256, &k.public_key().to_sec1_bytes()).ok()?;
        return Some((KeyAlg::EccP256, p));
    }
    if let Ok(k) = p384::SecretKey::from_pkcs8_der(der) {
        let p = PublicKey::from_ec_point(KeyAlg::EccP384, &k.public_key().to_sec1_bytes()).ok()?;
        return Some((KeyAlg::EccP384, p));
    }
    let k = rsa::PrivateKey::from_pkcs8_der(der).ok()?;
    let alg = [KeyAlg::Rsa2048, KeyAlg::Rsa3072]
        .into_iter()
        .find(|a| a.rsa_bytes() == Some(k.size()))?;
    let p = PublicKey::from_rsa_parts(
        alg,
        &k.n().to_be_bytes_trimmed_vartime(),
        &k.e().to_be_bytes_trimmed_vartime(),
    )
    .ok()?;
    Some((alg, p))
}

/// Asymmetric key algorithms Keyfleet puts on PIV cards (SP 800-78 identifiers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyAlg {
    /// ECC P-256 (id `11`).
    EccP256,
    /// ECC P-384 (id `14`).
    EccP384,
    /// RSA 2048 (id `07`).
    Rsa2048,
    /// RSA 3072 (id `05`).
    Rsa3072,
}

impl KeyAlg {
    /// The PIV algorithm identifier (P1 of GENERAL AUTHENTICATE, tag 80 of GENERATE).
    pub fn id(self) -> u8 {
        match self {
            KeyAlg::EccP256 => 0x11,
            KeyAlg::EccP384 => 0x14,
            KeyAlg::Rsa2048 => 0x07,
            KeyAlg::Rsa3072 => 0x05,
        }
    }

    /// The algorithm for a PIV identifier, if it is one Keyfleet supports.
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            0x11 => Some(KeyAlg::EccP256),
            0x14 => Some(KeyAlg::EccP384),
            0x07 => Some(KeyAlg::Rsa2048),
            0x05 => Some(KeyAlg::Rsa3072),
            _ => None,
        }
    }

    /// RSA modulus size in bytes, or `None` for EC.
    pub fn rsa_bytes(self) -> Option<usize> {
        match self {
            KeyAlg::Rsa2048 => Some(256),
            KeyAlg::Rsa3072 => Some(384),
            KeyAlg::EccP256 | KeyAlg::EccP384 => None,
        }
    }

    /// EC field size in bytes, or `None` for RSA.
    pub fn ec_bytes(self) -> Option<usize> {
        match self {
            KeyAlg::EccP256 => Some(32),
            KeyAlg::EccP384 => Some(48),
            KeyAlg::Rsa2048 | KeyAlg::Rsa3072 => None,
        }
    }
}

/// Management key (9B) algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MgmtAlg {
    /// Three-key 3DES (id `03`), 24-byte key.
    TripleDes,
    /// AES-128 (id `08`), 16-byte key.
    Aes128,
    /// AES-192 (id `0A`), 24-byte key.
    Aes192,
    /// AES-256 (id `0C`), 32-byte key.
    Aes256,
}

impl MgmtAlg {
    /// The PIV algorithm identifier.
    pub fn id(self) -> u8 {
        match self {
            MgmtAlg::TripleDes => 0x03,
            MgmtAlg::Aes128 => 0x08,
            MgmtAlg::Aes192 => 0x0A,
            MgmtAlg::Aes256 => 0x0C,
        }
    }

    /// The algorithm for a PIV identifier.
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            0x03 => Some(MgmtAlg::TripleDes),
            0x08 => Some(MgmtAlg::Aes128),
            0x0A => Some(MgmtAlg::Aes192),
            0x0C => Some(MgmtAlg::Aes256),
            _ => None,
        }
    }

    /// Key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            MgmtAlg::TripleDes | MgmtAlg::Aes192 => 24,
            MgmtAlg::Aes128 => 16,
            MgmtAlg::Aes256 => 32,
        }
    }

    /// Cipher block length in bytes (the witness/challenge size).
    pub fn block_len(self) -> usize {
        match self {
            MgmtAlg::TripleDes => 8,
            MgmtAlg::Aes128 | MgmtAlg::Aes192 | MgmtAlg::Aes256 => 16,
        }
    }
}

/// The factory-default management key `0102030405060708` ×3.
pub const DEFAULT_MGMT_KEY: [u8; 24] = [
    1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8,
];

/// A card management key (key reference 9B).
#[derive(Clone, PartialEq, Eq)]
pub struct ManagementKey {
    /// The block cipher.
    pub alg: MgmtAlg,
    /// The key bytes ([`MgmtAlg::key_len`] long).
    pub key: Vec<u8>,
}

impl std::fmt::Debug for ManagementKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagementKey")
            .field("alg", &self.alg)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl ManagementKey {
    /// A key, checking its length against the algorithm.
    pub fn new(alg: MgmtAlg, key: Vec<u8>) -> Result<Self, KeyError> {
        if key.len() != alg.key_len() {
            return Err(KeyError::MgmtKeyLength {
                alg,
                want: alg.key_len(),
                got: key.len(),
            });
        }
        Ok(ManagementKey { alg, key })
    }

    /// The factory default: 3DES `0102030405060708` ×3.
    pub fn factory_default() -> Self {
        ManagementKey {
            alg: MgmtAlg::TripleDes,
            key: DEFAULT_MGMT_KEY.to_vec(),
        }
    }

    /// ECB-encrypts whole blocks (no padding).
    pub fn encrypt(&self, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.ecb(data, true)
    }

    /// ECB-decrypts whole blocks (no padding).
    pub fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.ecb(data, false)
    }

    fn ecb(&self, data: &[u8], encrypt: bool) -> Result<Vec<u8>, KeyError> {
        let bad_len = || KeyError::MgmtKeyLength {
            alg: self.alg,
            want: self.alg.key_len(),
            got: self.key.len(),
        };
        let mut out = data.to_vec();
        match self.alg {
            MgmtAlg::TripleDes => {
                let c = des::TdesEde3::new_from_slice(&self.key).map_err(|_| bad_len())?;
                ecb_blocks(&c, &mut out, encrypt)?;
            }
            MgmtAlg::Aes128 => {
                let c = aes::Aes128::new_from_slice(&self.key).map_err(|_| bad_len())?;
                ecb_blocks(&c, &mut out, encrypt)?;
            }
            MgmtAlg::Aes192 => {
                let c = aes::Aes192::new_from_slice(&self.key).map_err(|_| bad_len())?;
                ecb_blocks(&c, &mut out, encrypt)?;
            }
            MgmtAlg::Aes256 => {
                let c = aes::Aes256::new_from_slice(&self.key).map_err(|_| bad_len())?;
                ecb_blocks(&c, &mut out, encrypt)?;
            }
        }
        Ok(out)
    }
}

fn ecb_blocks<C: BlockCipherEncrypt + BlockCipherDecrypt>(
    cipher: &C,
    buf: &mut [u8],
    encrypt: bool,
) -> Result<(), KeyError> {
    let bs = C::block_size();
    if buf.is_empty() || !buf.len().is_multiple_of(bs) {
        return Err(KeyError::NotBlockAligned(buf.len()));
    }
    for chunk in buf.chunks_exact_mut(bs) {
        let block = <&mut aes::cipher::Block<C>>::try_from(chunk)
            .map_err(|_| KeyError::NotBlockAligned(bs))?;
        if encrypt {
            cipher.encrypt_block(block);
        } else {
            cipher.decrypt_block(block);
        }
    }
    Ok(())
}

/// A public key read from the card (GENERATE ASYMMETRIC KEY PAIR answer), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    alg: KeyAlg,
    /// EC: the uncompressed point; RSA: PKCS#1 RSAPublicKey DER.
    raw: Vec<u8>,
    spki: Vec<u8>,
}

impl PublicKey {
    /// An EC public key from its SEC1 point (checked to lie on the curve).
    pub fn from_ec_point(alg: KeyAlg, point: &[u8]) -> Result<Self, KeyError> {
        let spki = match alg {
            KeyAlg::EccP256 => p256::PublicKey::from_sec1_bytes(point)
                .map_err(|_| KeyError::BadEcPoint(alg))?
                .to_public_key_der(),
            KeyAlg::EccP384 => p384::PublicKey::from_sec1_bytes(point)
                .map_err(|_| KeyError::BadEcPoint(alg))?
                .to_public_key_der(),
            KeyAlg::Rsa2048 | KeyAlg::Rsa3072 => return Err(KeyError::BadEcPoint(alg)),
        }
        .map_err(|_| KeyError::SpkiEncode)?;
        Ok(PublicKey {
            alg,
            raw: point.to_vec(),
            spki: spki.as_bytes().to_vec(),
        })
    }

    /// An RSA public key from big-endian modulus and exponent (size checked against `alg`).
    pub fn from_rsa_parts(alg: KeyAlg, n: &[u8], e: &[u8]) -> Result<Self, KeyError> {
        let want = alg.rsa_bytes().ok_or(KeyError::BadRsaKey(alg))?;
        let n = strip_zeros(n);
        if n.len() != want || e.is_empty() || e.len() > 8 {
            return Err(KeyError::BadRsaKey(alg));
        }
        let key = rsa::PublicKey::new(
            rsa::BoxedUint::from_be_slice_vartime(n),
            rsa::BoxedUint::from_be_slice_vartime(e),
        )
        .map_err(|_| KeyError::BadRsaKey(alg))?;
        Self::from_rsa(alg, &key)
    }

    pub(crate) fn from_rsa(alg: KeyAlg, key: &rsa::PublicKey) -> Result<Self, KeyError> {
        let raw = key
            .to_pkcs1_der()
            .map_err(|_| KeyError::SpkiEncode)?
            .as_bytes()
            .to_vec();
        let spki = key.to_public_key_der().map_err(|_| KeyError::SpkiEncode)?;
        Ok(PublicKey {
            alg,
            raw,
            spki: spki.as_bytes().to_vec(),
        })
    }

    /// The algorithm.
    pub fn alg(&self) -> KeyAlg {
        self.alg
    }

    /// The X.509 SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// The bytes inside the SPKI BIT STRING (EC point, or PKCS#1 RSAPublicKey DER).
    pub fn raw_bytes(&self) -> &[u8] {
        &self.raw
    }
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let skip = b.iter().take_while(|&&x| x == 0).count();
    b.get(skip..).unwrap_or_default()
}

/// Private key material to import into a slot (server-generated, archived encryption keys).
#[derive(Clone, PartialEq, Eq)]
pub enum PrivateKeyMaterial {
    /// An EC private scalar, big-endian, field size long.
    Ec {
        /// P-256 or P-384.
        alg: KeyAlg,
        /// The scalar.
        scalar: Vec<u8>,
    },
    /// An RSA key as the CRT parameters IMPORT KEY carries.
    Rsa {
        /// RSA 2048 or 3072.
        alg: KeyAlg,
        /// Prime p.
        p: Vec<u8>,
        /// Prime q.
        q: Vec<u8>,
        /// d mod (p-1).
        dp: Vec<u8>,
        /// d mod (q-1).
        dq: Vec<u8>,
        /// q^-1 mod p.
        qinv: Vec<u8>,
    },
}

impl std::fmt::Debug for PrivateKeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKeyMaterial({:?}, <redacted>)", self.alg())
    }
}

impl PrivateKeyMaterial {
    /// The key's algorithm.
    pub fn alg(&self) -> KeyAlg {
        match self {
            PrivateKeyMaterial::Ec { alg, .. } | PrivateKeyMaterial::Rsa { alg, .. } => *alg,
        }
    }

    /// Material from a PKCS#8 DER private key of algorithm `alg`.
    pub fn from_pkcs8_der(alg: KeyAlg, der: &[u8]) -> Result<Self, KeyError> {
        let bad = || KeyError::BadPkcs8(alg);
        match alg {
            KeyAlg::EccP256 => {
                let k = p256::SecretKey::from_pkcs8_der(der).map_err(|_| bad())?;
                Ok(PrivateKeyMaterial::Ec {
                    alg,
                    scalar: k.to_bytes().to_vec(),
                })
            }
            KeyAlg::EccP384 => {
                let k = p384::SecretKey::from_pkcs8_der(der).map_err(|_| bad())?;
                Ok(PrivateKeyMaterial::Ec {
                    alg,
                    scalar: k.to_bytes().to_vec(),
                })
            }
            KeyAlg::Rsa2048 | KeyAlg::Rsa3072 => {
                let k = rsa::PrivateKey::from_pkcs8_der(der).map_err(|_| bad())?;
                if Some(k.size()) != alg.rsa_bytes() {
                    return Err(bad());
                }
                let half = alg.rsa_bytes().unwrap_or(0) / 2;
                let fixed = |b: &rsa::BoxedUint| left_pad(&b.to_be_bytes_trimmed_vartime(), half);
                let (p, q) = match k.primes() {
                    [p, q] => (p, q),
                    _ => return Err(bad()),
                };
                let dp = k.dp().ok_or_else(bad)?;
                let dq = k.dq().ok_or_else(bad)?;
                let qinv = k.crt_coefficient().ok_or_else(bad)?;
                Ok(PrivateKeyMaterial::Rsa {
                    alg,
                    p: fixed(p.as_ref()),
                    q: fixed(q.as_ref()),
                    dp: fixed(dp),
                    dq: fixed(dq),
                    qinv: fixed(&qinv),
                })
            }
        }
    }
}

/// Left-pads `b` with zeros to `len` bytes (returns `b` unchanged if already longer).
pub(crate) fn left_pad(b: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0; len.saturating_sub(b.len())];
    out.extend_from_slice(b);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_3des_key_known_answer() {
        let k = ManagementKey::factory_default();
        let ct = k.encrypt(&[0, 1, 2, 3, 4, 5, 6, 7]).unwrap();
        assert_eq!(ct, [0x90, 0x15, 0x2A, 0x4C, 0x1C, 0xF4, 0x27, 0x80]);
        assert_eq!(k.decrypt(&ct).unwrap(), [0, 1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn aes192_default_key_known_answer() {
        let k = ManagementKey::new(MgmtAlg::Aes192, DEFAULT_MGMT_KEY.to_vec()).unwrap();
        let pt: Vec<u8> = (0..16).collect();
        let ct = k.encrypt(&pt).unwrap();
        assert_eq!(
            ct,
            [
                0x3F, 0x92, 0xE2, 0xFC, 0xE7, 0x3F, 0x9D, 0x83, 0x18, 0x7C, 0x14, 0x0D, 0x03, 0x5F,
                0x7E, 0xDC
            ]
        );
    }

    #[test]
    fn rejects_bad_lengths() {
        assert!(ManagementKey::new(MgmtAlg::Aes256, vec![0; 24]).is_err());
        let k = ManagementKey::factory_default();
        assert_eq!(k.encrypt(&[1, 2, 3]), Err(KeyError::NotBlockAligned(3)));
        assert_eq!(k.encrypt(&[]), Err(KeyError::NotBlockAligned(0)));
    }

    #[test]
    fn rejects_points_off_the_curve() {
        let mut point = vec![4u8];
        point.extend_from_slice(&[1; 64]);
        assert_eq!(
            PublicKey::from_ec_point(KeyAlg::EccP256, &point),
            Err(KeyError::BadEcPoint(KeyAlg::EccP256))
        );
        assert!(PublicKey::from_rsa_parts(KeyAlg::Rsa2048, &[0xFF; 10], &[1, 0, 1]).is_err());
    }

    #[test]
    fn alg_ids_round_trip() {
        for a in [
            KeyAlg::EccP256,
            KeyAlg::EccP384,
            KeyAlg::Rsa2048,
            KeyAlg::Rsa3072,
        ] {
            assert_eq!(KeyAlg::from_id(a.id()), Some(a));
        }
        for m in [
            MgmtAlg::TripleDes,
            MgmtAlg::Aes128,
            MgmtAlg::Aes192,
            MgmtAlg::Aes256,
        ] {
            assert_eq!(MgmtAlg::from_id(m.id()), Some(m));
        }
    }
}
