use super::*;
use crate::policy::duration::Duration;

#[test]
fn retries_are_settable_on_virtual_cards_and_yubico_piv_only() {
    let spec = |head: &str| -> CardTemplateSpec {
        serde_yaml::from_str(&format!(
                "{head}\npinPolicy: {{retries: 5}}\npukPolicy: {{retries: 4}}\ncertificates:\n- {{name: auth, slot: 9A, authority: lab, profile: piv-auth, keyAlgorithm: ecc-p256, subject: 'CN=x'}}\n"
            ))
            .unwrap()
    };
    assert_eq!(spec("cardType: virtual").settable_retries(), Some((5, 4)));
    assert_eq!(
        spec("cardType: piv\nvendor: yubico").settable_retries(),
        Some((5, 4))
    );
    assert_eq!(spec("cardType: piv").settable_retries(), None);
    assert_eq!(spec("cardType: pkcs11").settable_retries(), None);
    assert!(
        serde_yaml::from_str::<CardTemplateSpec>("cardType: piv\nvendor: acme\ncertificates: []\n")
            .is_err()
    );
}

#[test]
fn card_template_defaults() {
    let t: CardTemplateSpec = serde_yaml::from_str(
            "cardType: virtual\ncertificates:\n- {name: auth, slot: 9A, authority: lab, profile: piv-auth, keyAlgorithm: ecc-p256, subject: 'CN=${user.cn}'}\n",
        )
        .unwrap();
    assert_eq!(
        t.pin_policy,
        PinPolicy {
            length: 6,
            retries: 3
        }
    );
    assert_eq!(t.puk_policy.length, 8);
    assert_eq!(t.management_key.algorithm, ManagementKeyAlgorithm::Aes192);
    assert!(t.management_key.diversified);
    assert_eq!(t.on_entitlement_loss, OnEntitlementLoss::Revoke);
    assert_eq!(t.on_user_disabled, OnUserDisabled::Suspend);
    let c = &t.certificates[0];
    assert_eq!(c.slot, Slot::PivAuthentication);
    assert_eq!(c.slot.key_ref(), 0x9A);
    assert_eq!(c.key_generation, KeyGeneration::OnCard);
    assert_eq!(c.validity, Duration::from_days(365));
    assert_eq!(c.renew_before, Duration::from_days(30));
}

#[test]
fn ca_spec_is_one_of() {
    let ca: CertificateAuthoritySpec =
        serde_yaml::from_str("local: {subject: 'CN=Lab CA'}").unwrap();
    let CertificateAuthoritySpec::Local(l) = ca else {
        panic!("not local: {ca:?}")
    };
    assert_eq!(l.key_algorithm, KeyAlgorithm::EccP256);
    assert_eq!(l.validity, Duration::from_days(3650));
    assert_eq!(l.crl_validity, Duration::from_days(7));
    assert!(
        serde_yaml::from_str::<CertificateAuthoritySpec>("local: {subject: x, colour: red}")
            .is_err()
    );
}

#[test]
fn card_stock_needs_one_selector() {
    let s: CardStockSpec =
        serde_yaml::from_str("cardType: virtual\nautoBind: true\nvirtual: {}\n").unwrap();
    assert_eq!(
        s.selector,
        StockSelector::Virtual(VirtualStock { max: None })
    );
    assert!(serde_yaml::from_str::<CardStockSpec>("cardType: piv\n").is_err());
    assert!(
        serde_yaml::from_str::<CardStockSpec>("cardType: piv\npiv: {}\nvirtual: {}\n").is_err()
    );
    assert!(
        serde_yaml::from_str::<CardStockSpec>("cardType: piv\npiv: {}\ncolour: red\n").is_err()
    );
    let back = serde_yaml::to_string(&s).unwrap();
    assert!(back.contains("virtual: {}"), "{back}");
}

#[test]
fn key_algorithm_names_match_as_str() {
    for alg in [
        KeyAlgorithm::EccP256,
        KeyAlgorithm::EccP384,
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::Rsa3072,
    ] {
        let yaml = serde_yaml::to_string(&alg).unwrap();
        assert_eq!(yaml.trim(), alg.as_str());
        assert_eq!(
            serde_yaml::from_str::<KeyAlgorithm>(alg.as_str()).unwrap(),
            alg
        );
    }
}

#[test]
fn kinds_round_trip_names() {
    for k in Kind::ALL {
        assert_eq!(Kind::from_name(k.as_str()), Some(k));
    }
    assert_eq!(Kind::from_name("Widget"), None);
}

#[test]
fn settings_defaults() {
    let s: SettingsSpec = serde_yaml::from_str("{}").unwrap();
    assert_eq!(s, SettingsSpec::default());
    assert_eq!(s.concurrency, 4);
    assert_eq!(s.safety.max_revocations, 10);
    assert_eq!(s.safety.max_revocation_percent, 25);
}

#[test]
fn crl_publish_defaults_to_der_and_a_third_of_the_validity() {
    let p: CrlPublishSpec = serde_yaml::from_str("path: ca.crl").unwrap();
    assert_eq!(p.format, CrlFormat::Der);
    assert_eq!(
        p.refresh_before_or_default(Duration::from_days(7)),
        Duration::from_secs(7 * 86_400 / 3)
    );
    assert_eq!(
        p.refresh_before_or_default(Duration::from_secs(2)),
        Duration::from_secs(1)
    );
    let p: CrlPublishSpec =
        serde_yaml::from_str("{path: /srv/crl/ca.pem, format: pem, refreshBefore: 2d}").unwrap();
    assert_eq!(p.format, CrlFormat::Pem);
    assert_eq!(
        p.refresh_before_or_default(Duration::from_days(7)),
        Duration::from_days(2)
    );
    assert!(serde_yaml::from_str::<CrlPublishSpec>("{path: a, colour: red}").is_err());
}
