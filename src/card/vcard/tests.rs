use super::*;
use proptest::prelude::*;

use crate::card::keys::ManagementKey;

fn send(card: &mut VirtualCard, apdu: &[u8]) -> (Vec<u8>, u16) {
    let r = ResponseApdu::parse(&card.process_apdu(apdu)).unwrap();
    (r.data, r.sw)
}

fn apdu(ins: u8, p1: u8, p2: u8, data: &[u8]) -> Vec<u8> {
    let mut c = CommandApdu::new(0, ins, p1, p2, data.to_vec());
    c.le = Some(256);
    c.to_short_bytes().unwrap()
}

/// Mutual authentication with the default 3DES key at the APDU level.
fn admin(card: &mut VirtualCard) {
    let key = ManagementKey::factory_default();
    let (r, sw) = send(card, &apdu(0x87, 0x03, 0x9B, &[0x7C, 0x02, 0x80, 0x00]));
    assert_eq!(sw, 0x9000);
    assert_eq!(&r[..4], &[0x7C, 0x0A, 0x80, 0x08]);
    let w = key.decrypt(&r[4..12]).unwrap();
    let c = [9u8; 8];
    let mut req = vec![0x7C, 0x14, 0x80, 0x08];
    req.extend_from_slice(&w);
    req.extend_from_slice(&[0x81, 0x08]);
    req.extend_from_slice(&c);
    let (r, sw) = send(card, &apdu(0x87, 0x03, 0x9B, &req));
    assert_eq!(sw, 0x9000);
    assert_eq!(&r[4..], key.encrypt(&c).unwrap().as_slice());
}

fn pin(p: &[u8]) -> Vec<u8> {
    let mut v = p.to_vec();
    v.resize(8, 0xFF);
    v
}

#[test]
fn select_matches_prefixes_and_refuses_foreign_aids() {
    let mut card = VirtualCard::in_memory();
    let apt = [
        0x61, 0x11, 0x4F, 0x06, 0, 0, 0x10, 0, 1, 0, 0x79, 0x07, 0x4F, 0x05, 0xA0, 0, 0, 3, 8,
    ];
    for len in [5, 9, 11] {
        let (r, sw) = send(&mut card, &apdu(0xA4, 4, 0, &PIV_AID[..len]));
        assert_eq!((r.as_slice(), sw), (&apt[..], 0x9000));
    }
    let otp = [0xA0, 0, 0, 5, 0x27, 0x20, 1, 1];
    assert_eq!(send(&mut card, &apdu(0xA4, 4, 0, &otp)).1, 0x6A82);
    assert_eq!(send(&mut card, &apdu(0xA4, 0, 0, &[0x3F, 0])).1, 0x6A82);
    assert_eq!(send(&mut card, &apdu(0xA4, 4, 0, &PIV_AID[..3])).1, 0x6A82);
}

#[test]
fn factory_objects_and_vendor_commands() {
    let mut card = VirtualCard::in_memory();
    let (r, sw) = send(&mut card, &apdu(0xCB, 0x3F, 0xFF, &[0x5C, 0x01, 0x7E]));
    assert_eq!(sw, 0x9000);
    assert_eq!(&r[..4], &[0x7E, 0x12, 0x4F, 0x0B]);
    assert_eq!(&r[15..], &[0x5F, 0x2F, 0x02, 0x40, 0x00]);
    let get = |tag: &[u8]| {
        let mut d = vec![0x5C, tag.len() as u8];
        d.extend_from_slice(tag);
        apdu(0xCB, 0x3F, 0xFF, &d)
    };
    let (ccc, sw) = send(&mut card, &get(&[0x5F, 0xC1, 0x07]));
    assert_eq!((ccc[0], ccc[2], ccc[3], sw), (0x53, 0xF0, 0x15, 0x9000));
    assert_eq!(send(&mut card, &get(&[0x5F, 0xC1, 0x02])).1, 0x6A82);
    assert_eq!(send(&mut card, &get(&[0x5F, 0xC1, 0x05])).1, 0x6A82);
    assert_eq!(send(&mut card, &get(&[0x5F, 0xC1, 0x09])).1, 0x6982);
    assert_eq!(
        send(&mut card, &apdu(0xCB, 0, 0, &[0x5C, 1, 0x7E])).1,
        0x6A86
    );
    assert_eq!(
        send(&mut card, &apdu(0xCB, 0x3F, 0xFF, &[0x01, 0])).1,
        0x6A80
    );
    assert_eq!(
        send(&mut card, &apdu(0xFD, 0, 0, &[])),
        (vec![5, 4, 3], 0x9000)
    );
    let (serial, _) = send(&mut card, &apdu(0xF8, 0, 0, &[]));
    assert_eq!(serial, card.serial().to_be_bytes());
    let (md, sw) = send(&mut card, &apdu(0xF7, 0, 0x9B, &[]));
    assert_eq!((md, sw), (vec![1, 1, 3, 2, 2, 0, 1, 5, 1, 1], 0x9000));
    let (md, _) = send(&mut card, &apdu(0xF7, 0, 0x80, &[]));
    assert_eq!(md, vec![1, 1, 0xFF, 5, 1, 1, 6, 2, 3, 3]);
    assert_eq!(send(&mut card, &apdu(0xF7, 0, 0x9A, &[])).1, 0x6A82);
    assert_eq!(send(&mut card, &[0, 0x12, 0, 0]).1, 0x6D00);
    assert_eq!(send(&mut card, &[0x80, 0xCB, 0x3F, 0xFF]).1, 0x6E00);
}

#[test]
fn verify_counts_down_blocks_and_puk_unblocks() {
    let mut card = VirtualCard::in_memory();
    let status = [0, 0x20, 0, 0x80];
    assert_eq!(send(&mut card, &status).1, 0x63C3);
    assert_eq!(
        send(&mut card, &apdu(0x20, 0, 0x80, &pin(b"000000"))).1,
        0x63C2
    );
    assert_eq!(
        send(&mut card, &apdu(0x20, 0, 0x80, &pin(b"123456"))).1,
        0x9000
    );
    assert_eq!(send(&mut card, &status).1, 0x9000);
    assert_eq!(send(&mut card, &[0, 0x20, 0xFF, 0x80]).1, 0x9000);
    assert_eq!(send(&mut card, &status).1, 0x63C3);
    for left in [0x63C2, 0x63C1, 0x63C0] {
        assert_eq!(
            send(&mut card, &apdu(0x20, 0, 0x80, &pin(b"999999"))).1,
            left
        );
    }
    assert_eq!(
        send(&mut card, &apdu(0x20, 0, 0x80, &pin(b"123456"))).1,
        0x6983
    );
    assert_eq!(send(&mut card, &status).1, 0x6983);
    assert_eq!(send(&mut card, &apdu(0x20, 0, 0x80, &[1, 2, 3])).1, 0x6A80);
    let mut unblock = b"12345670".to_vec();
    unblock.extend(pin(b"654321"));
    assert_eq!(send(&mut card, &apdu(0x2C, 0, 0x80, &unblock)).1, 0x63C2);
    unblock[..8].copy_from_slice(b"12345678");
    assert_eq!(send(&mut card, &apdu(0x2C, 0, 0x80, &unblock)).1, 0x9000);
    assert_eq!(
        send(&mut card, &apdu(0x20, 0, 0x80, &pin(b"654321"))).1,
        0x9000
    );
    // A new PIN must be 6–8 bytes: the card refuses without spending a try.
    let mut change = pin(b"654321");
    change.extend(pin(b"123"));
    assert_eq!(send(&mut card, &apdu(0x24, 0, 0x80, &change)).1, 0x6A80);
    assert_eq!(send(&mut card, &[0, 0x20, 0, 0x81]).1, 0x6A88);
}

#[test]
fn management_key_paths() {
    let mut card = VirtualCard::in_memory();
    // Not authenticated: writes are refused.
    let put = apdu(
        0xDB,
        0x3F,
        0xFF,
        &[0x5C, 3, 0x5F, 0xC1, 0x02, 0x53, 1, 0xAA],
    );
    assert_eq!(send(&mut card, &put).1, 0x6982);
    // A wrong witness fails.
    send(
        &mut card,
        &apdu(0x87, 0x03, 0x9B, &[0x7C, 0x02, 0x80, 0x00]),
    );
    let mut bad = vec![0x7C, 0x14, 0x80, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0x81, 0x08];
    bad.extend([1; 8]);
    assert_eq!(send(&mut card, &apdu(0x87, 0x03, 0x9B, &bad)).1, 0x6982);
    assert_eq!(send(&mut card, &put).1, 0x6982);
    // Wrong algorithm for the 9B key.
    assert_eq!(
        send(&mut card, &apdu(0x87, 0x0A, 0x9B, &[0x7C, 2, 0x80, 0])).1,
        0x6A86
    );
    // External authentication, and GET CHALLENGE with P1 = 00.
    let key = ManagementKey::factory_default();
    let (r, sw) = send(
        &mut card,
        &apdu(0x87, 0x00, 0x9B, &[0x7C, 0x02, 0x81, 0x00]),
    );
    assert_eq!((sw, &r[..4]), (0x9000, &[0x7C, 0x0A, 0x81, 0x08][..]));
    let mut proof = vec![0x7C, 0x0A, 0x82, 0x08];
    proof.extend(key.encrypt(&r[4..]).unwrap());
    assert_eq!(
        send(&mut card, &apdu(0x87, 0x03, 0x9B, &proof)),
        (vec![], 0x9000)
    );
    assert_eq!(send(&mut card, &put).1, 0x9000);
    // Power events drop the authentication.
    card.reset();
    assert_eq!(send(&mut card, &put).1, 0x6982);
    admin(&mut card);
    let delete = apdu(0xDB, 0x3F, 0xFF, &[0x5C, 3, 0x5F, 0xC1, 0x02, 0x53, 0]);
    assert_eq!(send(&mut card, &delete).1, 0x9000);
    assert_eq!(
        send(
            &mut card,
            &apdu(0xCB, 0x3F, 0xFF, &[0x5C, 3, 0x5F, 0xC1, 0x02])
        )
        .1,
        0x6A82
    );
    // SET MANAGEMENT KEY to AES-128, then the old key no longer works.
    let mut set = vec![0x08, 0x9B, 0x10];
    set.extend([7u8; 16]);
    assert_eq!(send(&mut card, &apdu(0xFF, 0xFF, 0xFF, &set)).1, 0x9000);
    let (md, _) = send(&mut card, &apdu(0xF7, 0, 0x9B, &[]));
    assert_eq!(md, vec![1, 1, 8, 2, 2, 0, 1, 5, 1, 0]);
    let (r, _) = send(
        &mut card,
        &apdu(0x87, 0x08, 0x9B, &[0x7C, 0x02, 0x80, 0x00]),
    );
    assert_eq!(&r[..4], &[0x7C, 0x12, 0x80, 0x10]);
}

#[test]
fn signing_follows_slot_pin_policy() {
    let mut card = VirtualCard::in_memory();
    admin(&mut card);
    for slot in [0x9A, 0x9C, 0x9E] {
        let (r, sw) = send(&mut card, &apdu(0x47, 0, slot, &[0xAC, 3, 0x80, 1, 0x11]));
        assert_eq!((sw, &r[..5]), (0x9000, &[0x7F, 0x49, 0x43, 0x86, 0x41][..]));
    }
    let mut sign = vec![0x7C, 0x24, 0x82, 0x00, 0x81, 0x20];
    sign.extend([0x55; 32]);
    assert_eq!(send(&mut card, &apdu(0x87, 0x11, 0x9E, &sign)).1, 0x9000);
    assert_eq!(send(&mut card, &apdu(0x87, 0x11, 0x9A, &sign)).1, 0x6982);
    assert_eq!(send(&mut card, &apdu(0x87, 0x14, 0x9A, &sign)).1, 0x6A86);
    assert_eq!(send(&mut card, &apdu(0x87, 0x11, 0x9D, &sign)).1, 0x6A82);
    send(&mut card, &apdu(0x20, 0, 0x80, &pin(b"123456")));
    assert_eq!(send(&mut card, &apdu(0x87, 0x11, 0x9A, &sign)).1, 0x9000);
    assert_eq!(send(&mut card, &apdu(0x87, 0x11, 0x9A, &sign)).1, 0x9000);
    assert_eq!(send(&mut card, &apdu(0x87, 0x11, 0x9C, &sign)).1, 0x9000);
    assert_eq!(send(&mut card, &apdu(0x87, 0x11, 0x9C, &sign)).1, 0x6982);
    card.power_off();
    card.power_on();
    assert_eq!(send(&mut card, &apdu(0x87, 0x11, 0x9A, &sign)).1, 0x6982);
    // ECDH with the card's own public key of 9E.
    let (md, _) = send(&mut card, &apdu(0xF7, 0, 0x9E, &[]));
    let point = tlv::find(tlv::find(&md, 0x04).unwrap().unwrap(), 0x86)
        .unwrap()
        .unwrap()
        .to_vec();
    let mut dh = vec![0x7C, 0x45, 0x82, 0x00, 0x85, 0x41];
    dh.extend(&point);
    let (r, sw) = send(&mut card, &apdu(0x87, 0x11, 0x9E, &dh));
    assert_eq!((sw, &r[..4]), (0x9000, &[0x7C, 0x22, 0x82, 0x20][..]));
}

#[test]
fn persists_atomically_and_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("card");
    fs::create_dir(&sub).unwrap();
    let path = sub.join("card.json");
    let mut card = VirtualCard::create(&path).unwrap();
    assert!(matches!(
        VirtualCard::create(&path),
        Err(CardError::AlreadyExists(_))
    ));
    use std::os::unix::fs::PermissionsExt as _;
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        send(&mut card, &apdu(0x20, 0, 0x80, &pin(b"000000"))).1,
        0x63C2
    );
    // The decrement is on disk before the answer.
    let mut again = VirtualCard::open(&path).unwrap();
    assert_eq!(send(&mut again, &[0, 0x20, 0, 0x80]).1, 0x63C2);
    assert_eq!(again.serial(), card.serial());
    // A failed write answers 6581 and keeps the old state.
    admin(&mut card);
    fs::remove_dir_all(&sub).unwrap();
    let put = apdu(
        0xDB,
        0x3F,
        0xFF,
        &[0x5C, 3, 0x5F, 0xC1, 0x02, 0x53, 1, 0xAA],
    );
    assert_eq!(send(&mut card, &put).1, 0x6581);
    let get = apdu(0xCB, 0x3F, 0xFF, &[0x5C, 3, 0x5F, 0xC1, 0x02]);
    assert_eq!(send(&mut card, &get).1, 0x6A82);
    fs::create_dir(&sub).unwrap();
    assert_eq!(send(&mut card, &put).1, 0x9000);
    assert_eq!(send(&mut card, &get), (vec![0x53, 1, 0xAA], 0x9000));
    fs::write(&path, b"{not json").unwrap();
    assert!(matches!(
        VirtualCard::open(&path),
        Err(CardError::Parse { .. })
    ));
}

#[test]
fn chains_commands_and_responses() {
    let mut card = VirtualCard::in_memory();
    admin(&mut card);
    let mut body = vec![0x5C, 3, 0x5F, 0xC1, 0x05, 0x53, 0x82, 0x02, 0x58];
    body.extend((0..600u32).map(|i| i as u8));
    let chunks: Vec<&[u8]> = body.chunks(255).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let cla = if i + 1 < chunks.len() { 0x10 } else { 0 };
        let mut c = CommandApdu::new(cla, 0xDB, 0x3F, 0xFF, chunk.to_vec());
        c.le = Some(256);
        let (r, sw) = send(&mut card, &c.to_short_bytes().unwrap());
        assert_eq!((r.len(), sw), (0, 0x9000));
    }
    let (first, sw) = send(
        &mut card,
        &apdu(0xCB, 0x3F, 0xFF, &[0x5C, 3, 0x5F, 0xC1, 0x05]),
    );
    assert_eq!((first.len(), sw), (256, 0x6100));
    let (second, sw) = send(&mut card, &[0, 0xC0, 0, 0, 0]);
    assert_eq!((second.len(), sw), (256, 0x615C));
    let (third, sw) = send(&mut card, &[0, 0xC0, 0, 0, 0x5C]);
    assert_eq!((third.len(), sw), (0x5C, 0x9000));
    let all = [first, second, third].concat();
    assert_eq!(&all[4..], &body[9..]);
    assert_eq!(send(&mut card, &[0, 0xC0, 0, 0, 0]).1, 0x6985);
    // Another command drops pending data; an interrupted chain is discarded.
    send(
        &mut card,
        &apdu(0xCB, 0x3F, 0xFF, &[0x5C, 3, 0x5F, 0xC1, 0x05]),
    );
    send(&mut card, &apdu(0xFD, 0, 0, &[]));
    assert_eq!(send(&mut card, &[0, 0xC0, 0, 0, 0]).1, 0x6985);
    let partial = CommandApdu::new(0x10, 0xDB, 0x3F, 0xFF, vec![0x5C, 3]);
    send(&mut card, &partial.to_short_bytes().unwrap());
    assert_eq!(send(&mut card, &apdu(0xFD, 0, 0, &[])).1, 0x9000);
    let rest = apdu(0xDB, 0x3F, 0xFF, &[0x5F, 0xC1, 0x02, 0x53, 1, 1]);
    assert_eq!(send(&mut card, &rest).1, 0x6A80);
}

#[test]
fn garbage_gets_error_status_words() {
    let mut card = VirtualCard::in_memory();
    let cases: [&[u8]; 8] = [
        &[],
        &[0],
        &[0, 0x87, 0x11, 0x9A, 3, 0x7C, 0x05, 0x81],
        &[0, 0x47, 0, 0x9A, 2, 0xAC, 0x81],
        &[0, 0xDB, 0x3F, 0xFF, 2, 0x5C, 0x84],
        &[0, 0xFE, 0x11, 0x9A, 1, 0x06],
        &[0, 0xC0, 0, 0, 0],
        &[0, 0xFF, 0xFF, 0xFF, 3, 0x03, 0x9B, 0x18],
    ];
    for c in cases {
        let (_, sw) = send(&mut card, c);
        assert_ne!(sw, 0x9000, "{c:02X?}");
    }
}

fn arb_command() -> impl Strategy<Value = Vec<u8>> {
    let ins = prop::sample::select(vec![
        0xA4u8, 0xCB, 0xDB, 0x20, 0x24, 0x2C, 0x87, 0x47, 0xC0, 0xFD, 0xF8, 0xF7, 0xFF, 0xFE,
    ]);
    (
        prop::sample::select(vec![0u8, 0x10]),
        ins,
        prop::sample::select(vec![0u8, 0x03, 0x11, 0x14, 0x07, 0x3F, 0xFF]),
        prop::sample::select(vec![0x9Au8, 0x9B, 0x9C, 0x80, 0x81, 0xFF, 0x00]),
        prop::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(cla, ins, p1, p2, data)| {
            let mut c = CommandApdu::new(cla, ins, p1, p2, data);
            c.data.truncate(255);
            c.le = Some(256);
            c.to_short_bytes().unwrap_or_default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_apdus_never_panic_the_card(
        raw in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..8),
        structured in prop::collection::vec(arb_command(), 1..16),
    ) {
        let mut card = VirtualCard::in_memory();
        admin(&mut card);
        for a in raw.iter().chain(&structured) {
            let r = card.process_apdu(a);
            prop_assert!(r.len() >= 2);
        }
    }
}

mod retired {
    use super::*;
    use crate::card::keys::{KeyAlg, PrivateKeyMaterial};
    use crate::card::piv::{KeyHistory, PivClient, PivError, SlotKey};
    use crate::card::transport::InProcess;
    use p256::elliptic_curve::Generate as _;
    use p256::elliptic_curve::point::AffineCoordinates as _;
    use p256::pkcs8::EncodePrivateKey as _;

    fn client() -> PivClient<InProcess> {
        let mut c = PivClient::new(InProcess::new(VirtualCard::in_memory()));
        c.select().unwrap();
        c.authenticate(&ManagementKey::factory_default()).unwrap();
        c
    }

    #[test]
    fn an_imported_p256_key_in_82_does_ecdh_after_the_pin() {
        let secret = p256::SecretKey::generate_from_rng(&mut rand::rng());
        let der = secret.to_pkcs8_der().unwrap();
        let material = PrivateKeyMaterial::from_pkcs8_der(KeyAlg::EccP256, der.as_bytes()).unwrap();
        let mut c = client();
        c.import_key(0x82, &material).unwrap();
        let peer = p256::SecretKey::generate_from_rng(&mut rand::rng());
        let peer_point = peer.public_key().to_sec1_bytes();
        assert!(matches!(
            c.ecdh(0x82, KeyAlg::EccP256, &peer_point),
            Err(PivError::SecurityStatus { ins: 0x87 })
        ));
        c.verify_pin("123456").unwrap();
        let shared = c.ecdh(0x82, KeyAlg::EccP256, &peer_point).unwrap();
        let expected =
            (secret.public_key().to_projective() * *peer.to_nonzero_scalar()).to_affine();
        assert_eq!(shared, expected.x().to_vec());
        // PIN once per session, as 9D: a second operation needs no new VERIFY.
        assert_eq!(c.ecdh(0x82, KeyAlg::EccP256, &peer_point).unwrap(), shared);
        // GET METADATA: P-256, PIN once, imported, the public point.
        let card = c.transport_mut().card_mut();
        let (md, sw) = send(card, &apdu(0xF7, 0, 0x82, &[]));
        assert_eq!(sw, 0x9000);
        assert_eq!(tlv::find(&md, 0x01).unwrap(), Some(&[0x11][..]));
        assert_eq!(tlv::find(&md, 0x02).unwrap(), Some(&[0x02, 0x01][..]));
        assert_eq!(tlv::find(&md, 0x03).unwrap(), Some(&[ORIGIN_IMPORTED][..]));
        let public = tlv::find(&md, 0x04).unwrap().unwrap();
        assert_eq!(
            tlv::find(public, 0x86).unwrap().unwrap(),
            &secret.public_key().to_sec1_bytes()[..]
        );
        // After a power cycle the PIN is needed again.
        card.power_off();
        card.power_on();
        c.select().unwrap();
        assert!(c.ecdh(0x82, KeyAlg::EccP256, &peer_point).is_err());
    }

    #[test]
    fn an_imported_rsa_key_in_82_decrypts_after_the_pin() {
        use rsa::traits::PublicKeyParts as _;
        let mut rng = rand::rng();
        let key = rsa::PrivateKey::new(&mut rng, 2048).unwrap();
        let der = key.to_pkcs8_der().unwrap();
        let material = PrivateKeyMaterial::from_pkcs8_der(KeyAlg::Rsa2048, der.as_bytes()).unwrap();
        let public = key.to_public_key();
        let message = b"a content-encryption key";
        let ciphertext = public
            .encrypt(&mut rng, rsa::Pkcs1v15Encrypt, message)
            .unwrap();
        let mut c = client();
        c.import_key(0x82, &material).unwrap();
        assert!(matches!(
            c.sign_digest(0x82, KeyAlg::Rsa2048, &ciphertext),
            Err(PivError::SecurityStatus { ins: 0x87 })
        ));
        c.verify_pin("123456").unwrap();
        let block = c.sign_digest(0x82, KeyAlg::Rsa2048, &ciphertext).unwrap();
        // The card returns the raw PKCS#1 v1.5 block: 00 02 <non-zero padding> 00 <message>.
        assert_eq!(block.len(), public.size());
        assert_eq!(&block[..2], &[0x00, 0x02]);
        let sep = block.iter().skip(2).position(|&b| b == 0).unwrap() + 2;
        assert_eq!(&block[sep + 1..], message);
        // A P-256 request on the RSA key is refused.
        assert!(c.sign_digest(0x82, KeyAlg::EccP256, &[0; 32]).is_err());
        // The key is persisted like the others: a reopened card still decrypts.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("card.json");
        let mut c = PivClient::new(InProcess::new(VirtualCard::create(&path).unwrap()));
        c.select().unwrap();
        c.authenticate(&ManagementKey::factory_default()).unwrap();
        c.import_key(0x95, &material).unwrap();
        let mut c = PivClient::new(InProcess::new(VirtualCard::open(&path).unwrap()));
        c.select().unwrap();
        c.verify_pin("123456").unwrap();
        assert_eq!(
            c.sign_digest(0x95, KeyAlg::Rsa2048, &ciphertext).unwrap(),
            block
        );
    }

    #[test]
    fn retired_certificates_and_key_history_round_trip() {
        let mut c = client();
        for (i, slot) in crate::card::piv::RETIRED_SLOTS.iter().enumerate() {
            c.write_certificate(*slot, &[0x30, 0x01, i as u8]).unwrap();
        }
        c.write_key_history(&KeyHistory {
            on_card: 20,
            off_card: 0,
            url: None,
        })
        .unwrap();
        // The objects are 5FC10D…5FC120, always readable.
        let card = c.transport_mut().card_mut();
        card.reset();
        let (r, sw) = send(card, &apdu(0xCB, 0x3F, 0xFF, &[0x5C, 3, 0x5F, 0xC1, 0x20]));
        assert_eq!(sw, 0x9000);
        assert_eq!(
            tlv::find(&r[2..], 0x70).unwrap(),
            Some(&[0x30, 0x01, 19][..])
        );
        let (r, sw) = send(card, &apdu(0xCB, 0x3F, 0xFF, &[0x5C, 3, 0x5F, 0xC1, 0x0C]));
        assert_eq!(
            (r, sw),
            (
                vec![0x53, 0x08, 0xC1, 0x01, 20, 0xC2, 0x01, 0, 0xFE, 0x00],
                0x9000
            )
        );
        c.select().unwrap();
        let certs = c.read_retired_certificates().unwrap();
        assert_eq!(certs.len(), 20);
        assert_eq!(certs[0], (0x82, vec![0x30, 0x01, 0]));
        assert_eq!(certs[19], (0x95, vec![0x30, 0x01, 19]));
    }

    #[test]
    fn slots_outside_82_to_95_are_refused() {
        let secret = p256::SecretKey::generate_from_rng(&mut rand::rng());
        let der = secret.to_pkcs8_der().unwrap();
        let material = PrivateKeyMaterial::from_pkcs8_der(KeyAlg::EccP256, der.as_bytes()).unwrap();
        let mut card = VirtualCard::in_memory();
        admin(&mut card);
        let scalar = [0x11u8; 32];
        let mut import = vec![0x06, 0x20];
        import.extend(scalar);
        for slot in [0x80, 0x81, 0x96, 0x9F, 0xF9, 0x00] {
            let gen_ = apdu(0x47, 0, slot, &[0xAC, 3, 0x80, 1, 0x11]);
            assert_eq!(send(&mut card, &gen_).1, 0x6A86, "generate {slot:02X}");
            assert_eq!(
                send(&mut card, &apdu(0xFE, 0x11, slot, &import)).1,
                0x6A86,
                "import {slot:02X}"
            );
        }
        for slot in [0x82, 0x95] {
            assert_eq!(send(&mut card, &apdu(0xFE, 0x11, slot, &import)).1, 0x9000);
        }
        // No certificate object beyond 95 for the client either.
        let mut c = client();
        for slot in [0x81, 0x96] {
            assert!(matches!(
                c.write_certificate(slot, &[0x30, 0]),
                Err(PivError::BadSlot(s)) if s == slot
            ));
        }
        assert_eq!(c.slot_key(0x83).unwrap(), SlotKey::Empty);
        c.generate_key(0x83, KeyAlg::EccP256).unwrap();
        assert_eq!(c.slot_key(0x83).unwrap(), SlotKey::Generated);
        c.import_key(0x83, &material).unwrap();
        assert_eq!(c.slot_key(0x83).unwrap(), SlotKey::Imported);
    }
}
