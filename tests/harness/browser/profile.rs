//! The browser's temporary profile, written before Chromium starts: the NSS database in its
//! `HOME` (trusted CAs, the client certificate and key) and the profile's
//! `Default/Preferences` that lets Chromium select that certificate without a dialog.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use serde_json::json;

use super::BrowserOptions;

/// Runs a tool of the NSS database setup; panics with its output if it fails.
fn run_tool(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run it (scripts/install-deps --test): {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Creates the NSS database Chromium reads (`$HOME/.pki/nssdb`): the trusted CAs, and the
/// client certificate with its key (through a PKCS#12 file under `work`).
pub(super) fn setup_nssdb(nssdb: &Path, work: &Path, opts: &BrowserOptions) {
    std::fs::create_dir_all(nssdb).expect("NSS database folder");
    let db = format!("sql:{}", nssdb.display());
    run_tool(
        Command::new("certutil").args(["-N", "-d", &db, "--empty-password"]),
        "certutil -N (create the NSS database)",
    );
    if let Some(pem) = &opts.trust_ca_pem {
        let certs = pem_blocks(pem);
        assert!(
            !certs.is_empty(),
            "BrowserOptions.trust_ca_pem holds no PEM certificate"
        );
        for (i, cert) in certs.iter().enumerate() {
            let file = work.join(format!("trust-{i}.pem"));
            std::fs::write(&file, cert).expect("write CA file");
            let name = format!("keyfleet-test-ca-{i}");
            run_tool(
                Command::new("certutil")
                    .args(["-A", "-d", &db, "-n", &name, "-t", "C,,", "-i"])
                    .arg(&file),
                "certutil -A (trust a CA)",
            );
        }
    }
    if let Some((cert, key)) = &opts.client_cert {
        let (cert_file, key_file, p12) = (
            work.join("client.pem"),
            work.join("client-key.pem"),
            work.join("client.p12"),
        );
        std::fs::write(&cert_file, cert).expect("write client certificate");
        std::fs::write(&key_file, key).expect("write client key");
        // A throwaway password for the PKCS#12 that only carries the key into NSS.
        let password = hex::encode(rand::random::<[u8; 16]>());
        run_tool(
            Command::new("openssl")
                .args(["pkcs12", "-export", "-name", "keyfleet-test-client", "-in"])
                .arg(&cert_file)
                .arg("-inkey")
                .arg(&key_file)
                .arg("-out")
                .arg(&p12)
                .arg("-passout")
                .arg(format!("pass:{password}")),
            "openssl pkcs12 -export (the client certificate)",
        );
        run_tool(
            Command::new("pk12util")
                .args(["-d", &db, "-i"])
                .arg(&p12)
                .args(["-W", &password]),
            "pk12util -i (import the client certificate)",
        );
        let _ = std::fs::remove_file(&key_file);
        let _ = std::fs::remove_file(&p12);
    }
}

/// Writes the profile's `Default/Preferences` with the `auto_select_certificate` content
/// setting for `https://ADDR`: Chromium then presents the first client certificate (any
/// issuer) to that origin without asking.
pub(super) fn write_auto_select(profile: &Path, addr: SocketAddr) {
    let pattern = format!("https://{addr},*");
    let prefs = json!({
        "profile": {"content_settings": {"exceptions": {"auto_select_certificate": {
            pattern: {"setting": {"filters": [{}]}}
        }}}}
    });
    std::fs::write(
        profile.join("Default/Preferences"),
        serde_json::to_vec_pretty(&prefs).expect("preferences JSON"),
    )
    .expect("write profile Preferences");
}

/// The PEM `CERTIFICATE` blocks of `pem`.
fn pem_blocks(pem: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        out.push(format!("{}\n", &rest[start..end]));
        rest = &rest[end..];
    }
    out
}
