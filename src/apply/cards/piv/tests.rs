//! [`PivCard`]'s retired slots over an in-memory virtual card: write, read, rewrite, wipe.

use super::*;
use crate::card::keys::{KeyAlg, PrivateKeyMaterial, PublicKey};
use crate::card::piv::PivClient;
use crate::card::transport::{InProcess, Transport};
use crate::card::vcard::VirtualCard;
use p256::elliptic_curve::Generate as _;
use p256::elliptic_curve::point::AffineCoordinates as _;
use p256::pkcs8::EncodePrivateKey as _;

const CARD: &str = "vc-retired";

struct Fixture {
    _dir: tempfile::TempDir,
    state: std::path::PathBuf,
    store: crate::store::Store,
    master: crate::secrets::MasterKey,
    audit: crate::audit::AuditLog,
    cards: VirtualCards,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    crate::fsutil::ensure_private_dir(&state).unwrap();
    let master = crate::secrets::MasterKey::load_or_create(&state).unwrap();
    let key = crate::audit::AuditKey::load_or_create(
        &crate::keystore::KeyStore::parse(None).unwrap(),
        &state,
        &master,
    )
    .unwrap();
    let audit = crate::audit::AuditLog::open(&state, key).unwrap();
    let store = crate::store::Store::open(&state).unwrap();
    let cards = VirtualCards::new(&state.join("cards"));
    Fixture {
        _dir: dir,
        state,
        store,
        master,
        audit,
        cards,
    }
}

fn with_ctx<T>(f: &Fixture, run: impl FnOnce(&Context<'_>) -> T) -> T {
    let desired = crate::desired::Desired::default();
    let cas = crate::apply::CaRegistry::new();
    let clock = time::OffsetDateTime::now_utc;
    let ctx = Context {
        store: &f.store,
        master: &f.master,
        cas: &cas,
        cards: &f.cards,
        desired: &desired,
        clock: &clock,
        actor: "test".into(),
        pin_mailer_dir: f.state.join("pin-mailer"),
        crash: crate::apply::CrashPoint::default(),
        audit: &f.audit,
        holder_pins: Default::default(),
        archive: crate::archive::ArchiveKeys::new(
            &crate::policy::PolicySet::empty(&f.state),
            &f.state,
        ),
    };
    run(&ctx)
}

/// A card personalised with Keyfleet's diversified AES-192 management key.
fn personalised(ctx: &Context<'_>) -> PivCard {
    let mut client = PivClient::new(InProcess::new(VirtualCard::in_memory()));
    client.select().unwrap();
    client
        .authenticate(&ManagementKey::factory_default())
        .unwrap();
    let key = management_key(ctx, CARD, ManagementKeyAlgorithm::Aes192).unwrap();
    client.set_management_key(&key).unwrap();
    ctx.store
        .put_secret(
            &format!("mgmt-alg/{CARD}"),
            &serde_json::to_vec(&ManagementKeyAlgorithm::Aes192).unwrap(),
        )
        .unwrap();
    let boxed: Box<dyn Transport> = Box::new(client.into_transport());
    PivCard::new(CARD, PivClient::new(boxed))
}

/// A P-256 key with a self-signed certificate for it.
fn retired_key(cn: &str) -> (p256::SecretKey, RetiredKey) {
    let secret = p256::SecretKey::generate_from_rng(&mut rand::rng());
    let der = secret.to_pkcs8_der().unwrap();
    let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &der.as_bytes().into(),
        &rcgen::PKCS_ECDSA_P256_SHA256,
    )
    .unwrap();
    let params = rcgen::CertificateParams::new(vec![format!("{cn}.example")]).unwrap();
    let cert = params.self_signed(&pair).unwrap();
    let key = RetiredKey {
        key: PrivateKeyMaterial::from_pkcs8_der(KeyAlg::EccP256, der.as_bytes()).unwrap(),
        public: PublicKey::from_ec_point(KeyAlg::EccP256, &secret.public_key().to_sec1_bytes())
            .unwrap(),
        certificate_der: cert.der().to_vec(),
    };
    (secret, key)
}

#[test]
fn retired_keys_are_written_read_replaced_and_wiped() {
    let f = fixture();
    with_ctx(&f, |ctx| {
        let mut card = personalised(ctx);
        let (newest, k1) = retired_key("newest");
        let (_, k2) = retired_key("older");
        let (c1, c2) = (k1.certificate_der.clone(), k2.certificate_der.clone());
        // Parts that do not belong together are refused before the card is touched.
        let mismatched = RetiredKey {
            certificate_der: c2.clone(),
            ..retired_key("x").1
        };
        assert!(matches!(
            card.write_retired(ctx, &[mismatched]),
            Err(ApplyError::Unsupported(_))
        ));
        assert_eq!(card.read_retired().unwrap(), vec![]);

        card.write_retired(ctx, &[k1, k2]).unwrap();
        assert_eq!(card.read_retired().unwrap(), vec![(0x82, c1), (0x83, c2)]);
        let session = card.client();
        assert_eq!(
            session.read_key_history().unwrap(),
            Some(KeyHistory {
                on_card: 2,
                off_card: 0,
                url: None
            })
        );
        // The newest key is in 82 and works with the PIN.
        session.verify_pin(FACTORY_PIN).unwrap();
        let peer = p256::SecretKey::generate_from_rng(&mut rand::rng());
        let shared = session
            .ecdh(0x82, KeyAlg::EccP256, &peer.public_key().to_sec1_bytes())
            .unwrap();
        let expected =
            (newest.public_key().to_projective() * *peer.to_nonzero_scalar()).to_affine();
        assert_eq!(shared, expected.x().to_vec());

        // A shorter history clears the slot beyond it: no certificate, the imported key replaced.
        let (_, k3) = retired_key("only");
        let c3 = k3.certificate_der.clone();
        card.write_retired(ctx, &[k3]).unwrap();
        assert_eq!(card.read_retired().unwrap(), vec![(0x82, c3)]);
        let session = card.client();
        assert_eq!(session.read_certificate(0x83).unwrap(), None);
        assert_eq!(session.slot_key(0x83).unwrap(), SlotKey::Generated);

        // Wipe: history gone, retired certificates gone, imported keys replaced.
        card.wipe(ctx).unwrap();
        let session = card.client();
        assert_eq!(session.read_key_history().unwrap(), None);
        for slot in RETIRED_SLOTS {
            assert_eq!(session.read_certificate(slot).unwrap(), None);
            assert_ne!(session.slot_key(slot).unwrap(), SlotKey::Imported);
        }
    });
}

#[test]
fn more_than_twenty_retired_keys_are_refused() {
    let f = fixture();
    with_ctx(&f, |ctx| {
        let mut card = personalised(ctx);
        let many: Vec<RetiredKey> = (0..21).map(|i| retired_key(&format!("k{i}")).1).collect();
        assert!(matches!(
            card.write_retired(ctx, &many),
            Err(ApplyError::Unsupported(m)) if m.contains("21 retired keys")
        ));
    });
}
