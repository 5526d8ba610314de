//! Archive tests: a key round-trips only with its archive key, never in clear in the store,
//! and comes out as a PKCS#12 file with PBES2/AES-256 that reads back.

use super::*;
use crate::card::keys::{KeyAlg, generate_software};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    crate::fsutil::ensure_private_dir(&state).unwrap();
    let store = Store::open(&state).unwrap();
    (dir, store)
}

#[test]
fn a_key_is_archived_wrapped_and_opens_only_with_its_archive_key() {
    let (dir, store) = store();
    let archive_key = MasterKey::from_bytes([7; 32]);
    let (pkcs8, public) = generate_software(KeyAlg::EccP256).unwrap();
    let now = OffsetDateTime::now_utc();
    let record = archive(
        &store,
        &archive_key,
        &NewKey {
            user: "alice",
            template: "employee",
            slot: Slot::KeyManagement,
            card: "vc-1",
            key_algorithm: KeyAlgorithm::EccP256,
            spki_der: public.spki_der(),
            pkcs8: &pkcs8,
        },
        now,
    )
    .unwrap();
    assert_eq!(record.key_id, key_id(public.spki_der()));
    let all = records(&store).unwrap();
    assert_eq!(all, std::slice::from_ref(&record));
    assert_eq!(
        open_key(&archive_key, &all[0]).unwrap().as_slice(),
        pkcs8.as_slice()
    );
    // Another key (the master key, say) opens nothing.
    let other = MasterKey::from_bytes([8; 32]);
    assert!(matches!(
        open_key(&other, &all[0]),
        Err(ArchiveError::Unwrap(_))
    ));
    // A record moved onto another key id does not open either (the id is bound in).
    let mut moved = all[0].clone();
    moved.key_id = "00".repeat(32);
    assert!(open_key(&archive_key, &moved).is_err());
    // The private key is nowhere in clear in the state directory.
    drop(store);
    let scalar =
        crate::card::keys::PrivateKeyMaterial::from_pkcs8_der(KeyAlg::EccP256, &pkcs8).unwrap();
    let crate::card::keys::PrivateKeyMaterial::Ec { scalar, .. } = scalar else {
        panic!("an EC key");
    };
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(scalar.len()).any(|w| w == scalar.as_slice())
                && !bytes.windows(pkcs8.len()).any(|w| w == pkcs8.as_slice()),
            "the key is in clear in {}",
            entry.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn keys_sealed_under_the_master_key_by_older_versions_move_into_the_archive() {
    let (_dir, store) = store();
    let master = MasterKey::from_bytes([1; 32]);
    let archive_key = MasterKey::from_bytes([2; 32]);
    let (pkcs8, public) = generate_software(KeyAlg::Rsa2048).unwrap();
    let name = "archive/vc-9/9D/0011223344556677";
    store
        .put_secret(name, &master.seal(name.as_bytes(), &pkcs8))
        .unwrap();
    let moved = migrate(&store, &master, &archive_key, OffsetDateTime::now_utc()).unwrap();
    assert_eq!(moved, 1);
    assert!(store.secret(name).unwrap().is_none());
    let all = records(&store).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].key_id, key_id(public.spki_der()));
    assert_eq!(
        (all[0].slot, all[0].card.as_str()),
        (Slot::KeyManagement, "vc-9")
    );
    assert_eq!(all[0].key_algorithm, KeyAlgorithm::Rsa2048);
    assert_eq!(
        open_key(&archive_key, &all[0]).unwrap().as_slice(),
        pkcs8.as_slice()
    );
    assert_eq!(
        migrate(&store, &master, &archive_key, OffsetDateTime::now_utc()).unwrap(),
        0
    );
}

#[test]
fn a_pkcs12_file_uses_pbes2_with_aes_256_and_reads_back() {
    let (pkcs8, _) = generate_software(KeyAlg::EccP256).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
    let der = cert.cert.der().to_vec();
    let key = rcgen::KeyPair::try_from(pkcs8.as_slice()).ok();
    assert!(key.is_some(), "rcgen reads the key");
    let password = pkcs12::one_time_password();
    assert_eq!(password.len(), 24);
    assert_ne!(password.as_str(), pkcs12::one_time_password().as_str());
    let entry = pkcs12::Entry {
        name: "alice 9D".into(),
        pkcs8: pkcs8.clone(),
        certificate: der,
    };
    let bytes = pkcs12::encode(&[entry], &password).unwrap();
    // PBES2 (1.2.840.113549.1.5.13) with AES-256-CBC (2.16.840.1.101.3.4.1.42) and PBKDF2.
    let has = |oid: &[u8]| bytes.windows(oid.len()).any(|w| w == oid);
    assert!(has(&[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x05, 0x0D]));
    assert!(has(&[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2A]));
    assert!(!bytes.windows(pkcs8.len()).any(|w| w == pkcs8.as_slice()));
    let back = p12_keystore::KeyStore::from_pkcs12(
        &bytes,
        &password,
        p12_keystore::Pkcs12ImportPolicy::default(),
    )
    .unwrap();
    let (_, chain) = back.private_key_chain().expect("the key");
    assert_eq!(chain.key().as_der(), pkcs8.as_slice());
    assert!(
        p12_keystore::KeyStore::from_pkcs12(
            &bytes,
            "wrong",
            p12_keystore::Pkcs12ImportPolicy::default()
        )
        .is_err()
    );
}
