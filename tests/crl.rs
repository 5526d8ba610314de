//! CRL publication (`crlPublish` on a local CA) against the real binary on copies of the
//! quickstart: `apply` publishes a CRL that openssl verifies and republishes it with a higher
//! number listing a revoked serial; the controller keeps a short-lived CRL fresh with no other
//! event; an unwritable path is reported (exit code, status, metric) while the revocation is
//! still recorded in the inventory and the CA, and the CRL catches up once the path works.

use std::path::{Path, PathBuf};

use crate::harness::controller::{
    Site, certs_of, free_port, http_get, parse_exposition, wait_for, wait_with_log,
};
use crate::harness::openssl;

const CA: &str = "quickstart-ca";

/// Appends `crlPublish` (and `crlValidity`) to the quickstart's local CA.
fn publish_to(site: &Site, path: &str, extra: &str) {
    let text = site.read("authority.yaml");
    site.write(
        "authority.yaml",
        &format!("{text}{extra}    crlPublish:\n      path: {path}\n"),
    );
}

/// The CA certificate, written next to the policy.
fn ca_cert(site: &Site) -> PathBuf {
    let run = site.keyfleet(&["ca", "cert", CA]);
    run.expect_code(0);
    let path = site.policy().join("ca.pem.out");
    std::fs::write(&path, run.stdout).expect("write CA certificate");
    path
}

/// Verifies a DER CRL against the CA certificate with openssl; returns its text.
#[track_caller]
fn verified_crl_text(crl: &Path, ca: &Path) -> String {
    let (ok, out) = openssl(&[
        "crl",
        "-inform",
        "DER",
        "-in",
        &crl.display().to_string(),
        "-CAfile",
        &ca.display().to_string(),
        "-verify",
        "-noout",
        "-text",
    ]);
    assert!(
        ok && out.contains("verify OK"),
        "openssl crl -verify:\n{out}"
    );
    out
}

/// The CRL number of a DER CRL file, if it is one.
fn crl_number(crl: &Path) -> Option<u64> {
    let (ok, out) = openssl(&[
        "crl",
        "-inform",
        "DER",
        "-in",
        &crl.display().to_string(),
        "-noout",
        "-crlnumber",
    ]);
    let hex = out.trim().strip_prefix("crlNumber=0x")?;
    ok.then(|| u64::from_str_radix(hex, 16).ok()).flatten()
}

/// The quickstart's people.yaml without judy in the contractors group; judy's serial.
fn drop_judy(site: &Site) -> String {
    let inv = site.inventory();
    let judy = certs_of(&inv, "judy", "active");
    assert_eq!(judy.len(), 1, "{inv}");
    let serial = judy[0]["serial"].as_str().expect("serial").to_string();
    let people = site.read("people.yaml");
    let without = people.replace(
        "members: [judy, mallory, oscar]",
        "members: [mallory, oscar]",
    );
    assert_ne!(
        people, without,
        "the quickstart's contractors group changed"
    );
    site.write("people.yaml", &without);
    serial
}

#[test]
fn apply_publishes_a_verifiable_crl_and_republishes_it_after_a_revocation() {
    let site = Site::quickstart();
    let public = site.policy().join("../public");
    std::fs::create_dir(&public).expect("mkdir public");
    publish_to(&site, "../public/quickstart.crl", "");
    let crl = public.join("quickstart.crl");

    site.keyfleet(&["apply", "--yes"])
        .expect_code(0)
        .stdout_has(&format!("CRL of CA {CA} published to"))
        .stdout_has("no CRL was published yet");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&crl).expect("CRL file").mode() & 0o777,
        0o644
    );
    let ca = ca_cert(&site);
    let text = verified_crl_text(&crl, &ca);
    assert!(text.contains("No Revoked Certificates"), "{text}");
    let first = crl_number(&crl).expect("CRL number");

    // Nothing changed: a second apply leaves the CRL alone.
    let again = site.keyfleet(&["apply", "--yes"]);
    again.expect_code(0);
    assert!(!again.stdout.contains("CRL of CA"), "{}", again.stdout);
    assert_eq!(crl_number(&crl), Some(first));

    // judy leaves the contractors group: her certificate is revoked and listed.
    let serial = drop_judy(&site);
    site.keyfleet(&["apply", "--yes"])
        .expect_code(0)
        .stdout_has("certificates were revoked, suspended or resumed since");
    let text = verified_crl_text(&crl, &ca);
    assert!(
        text.contains(&format!("Serial Number: {serial}")),
        "{serial} not in\n{text}"
    );
    assert!(text.contains("Affiliation Changed"), "{text}");
    assert!(crl_number(&crl).expect("CRL number") > first);
}

#[test]
fn the_controller_keeps_a_short_lived_crl_fresh_on_its_own() {
    let site = Site::quickstart();
    publish_to(&site, "quickstart.crl", "    crlValidity: 6s\n");
    let text = site.read("authority.yaml");
    site.write(
        "authority.yaml",
        &format!("{text}      refreshBefore: 3s\n"),
    );
    site.keyfleet(&["validate"]).expect_code(0);
    let crl = site.policy().join("quickstart.crl");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut ctl = site.start(&["--listen", &listen]);
    let first = wait_with_log(&ctl, "the first CRL", || crl_number(&crl));
    // No other event happens: only the refresh timer can make the number grow, and every CRL
    // seen is one the CA signed.
    let ca = ca_cert(&site);
    let later = wait_with_log(&ctl, "two refreshes of the CRL", || {
        crl_number(&crl).filter(|n| *n >= first + 2)
    });
    verified_crl_text(&crl, &ca);
    let status = site.status().expect("status");
    let view = &status["crl"][0];
    assert_eq!(view["ca"], CA, "{status}");
    assert!(view["number"].as_u64() >= Some(later), "{status}");
    assert!(view["nextRefresh"].is_string(), "{status}");
    assert!(
        status["waitingFor"]
            .as_array()
            .is_some_and(|w| w.iter().any(|s| s
                .as_str()
                .is_some_and(|s| s.starts_with(&format!("the next CRL refresh of CA {CA}"))))),
        "{status}"
    );
    site.keyfleet(&["status"])
        .expect_code(0)
        .stdout_has("CRLs")
        .stdout_has("next refresh");
    let (_, text) = http_get(port, "/metrics").expect("metrics");
    let m = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let next_update = m
        .value("keyfleet_crl_next_update_seconds", &[("ca", CA)])
        .expect("nextUpdate gauge");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        next_update > now - 10.0 && next_update < now + 10.0,
        "{next_update} vs {now}"
    );
    assert!(m.value("keyfleet_crl_publications_total", &[("ca", CA)]) >= Some(3.0));
    assert_eq!(
        m.value("keyfleet_crl_publish_failures_total", &[("ca", CA)]),
        Some(0.0)
    );
    assert!(ctl.terminate().success(), "{}", ctl.log());
}

#[test]
fn an_unwritable_crl_path_is_reported_and_the_revocation_still_stands() {
    let site = Site::quickstart();
    // The CRL's folder is a regular file: no process, root included, can create the CRL.
    let blocker = site.policy().join("../blocker");
    std::fs::write(&blocker, "not a folder").expect("write blocker");
    publish_to(&site, "../blocker/quickstart.crl", "    crlValidity: 1d\n");
    let text = site.read("authority.yaml");
    site.write(
        "authority.yaml",
        &format!("{text}      refreshBefore: 3s\n"),
    );
    site.keyfleet(&["validate"])
        .expect_code(0)
        .stderr_has("blocker) is not a folder");

    let first = site.keyfleet(&["apply", "--yes"]);
    first
        .expect_code(1)
        .stderr_has(&format!("the CRL of CA {CA} could not be published to"))
        .stderr_has("blocker/quickstart.crl")
        .stderr_has("Not a directory");
    // Everything else converged.
    assert_eq!(certs_of(&site.inventory(), "judy", "active").len(), 1);

    let serial = drop_judy(&site);
    site.keyfleet(&["apply", "--yes"])
        .expect_code(1)
        .stdout_has("done    revoke judy")
        .stderr_has("Revocations stand");
    // Recorded in the inventory, and in the CA (a CRL printed on demand lists it).
    let inv = site.inventory();
    assert!(
        certs_of(&inv, "judy", "revoked")
            .iter()
            .any(|c| c["serial"] == serial.as_str()),
        "{inv}"
    );
    let pem = site.keyfleet(&["ca", "crl", CA]);
    pem.expect_code(0);
    let on_demand = site.policy().join("on-demand.crl");
    std::fs::write(&on_demand, pem.stdout).expect("write CRL");
    let (ok, text) = openssl(&[
        "crl",
        "-in",
        &on_demand.display().to_string(),
        "-noout",
        "-text",
    ]);
    assert!(
        ok && text.contains(&format!("Serial Number: {serial}")),
        "{text}"
    );

    // The controller reports it (status, metric) and retries; once the folder exists it
    // publishes the CRL with the revocation, with no other event.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut ctl = site.start(&["--listen", &listen]);
    let status = wait_with_log(&ctl, "the CRL error in the status", || {
        site.status()
            .filter(|s| s["crl"][0]["error"].as_str().is_some())
    });
    assert!(
        status["lastPass"]["crlErrors"][0]
            .as_str()
            .is_some_and(|e| e.contains("Not a directory")),
        "{status}"
    );
    let failures = wait_with_log(&ctl, "the failure metric", || {
        let (_, text) = http_get(port, "/metrics")?;
        let m = parse_exposition(&text).ok()?;
        m.value("keyfleet_crl_publish_failures_total", &[("ca", CA)])
            .filter(|v| *v >= 1.0)
    });
    assert!(failures >= 1.0);
    std::fs::remove_file(&blocker).expect("remove blocker");
    std::fs::create_dir(&blocker).expect("mkdir");
    let crl = blocker.join("quickstart.crl");
    wait_with_log(&ctl, "the CRL to be published after the retry", || {
        crl_number(&crl)
    });
    let text = verified_crl_text(&crl, &ca_cert(&site));
    assert!(text.contains(&format!("Serial Number: {serial}")), "{text}");
    wait_for("the status to clear the error", || {
        site.status().filter(|s| s["crl"][0]["error"].is_null())
    });
    assert!(ctl.terminate().success(), "{}", ctl.log());
}

#[test]
fn crl_publish_settings_are_validated_with_file_and_line() {
    let site = Site::quickstart();
    let base = site.read("authority.yaml");
    let lines = base.lines().count();
    let file = site.policy().join("authority.yaml").display().to_string();
    let check = |extra: &str, needle: &str| {
        site.write("authority.yaml", &format!("{base}{extra}"));
        let run = site.keyfleet(&["validate"]);
        run.expect_code(1);
        assert!(
            run.stdout.contains(needle) || run.stderr.contains(needle),
            "{needle:?} missing:\n{}{}",
            run.stdout,
            run.stderr
        );
    };
    // refreshBefore as long as the CRL's validity (7d by default): on its own line.
    check(
        "    crlPublish:\n      path: q.crl\n      refreshBefore: 7d\n",
        &format!(
            "{file}:{}: CertificateAuthority/{CA}: spec.local.crlPublish.refreshBefore: crlPublish.refreshBefore (1w) must be longer than zero and shorter than crlValidity (1w)",
            lines + 3
        ),
    );
    check(
        "    crlPublish:\n      path: \"\"\n",
        &format!(
            "{file}:{}: CertificateAuthority/{CA}: spec.local.crlPublish.path",
            lines + 2
        ),
    );
    check(
        "    crlPublish:\n      path: q.crl\n      format: base64\n",
        &format!("{file}:{}", lines + 3),
    );
    check(
        "    crlPublish:\n      path: q.crl\n      refresh: 1d\n",
        "unknown field",
    );
    // Valid: PEM, the default refresh window (a third of crlValidity).
    site.write(
        "authority.yaml",
        &format!(
            "{base}    crlValidity: 1d\n    crlPublish:\n      path: q.crl\n      format: pem\n"
        ),
    );
    site.keyfleet(&["validate"]).expect_code(0);
}
