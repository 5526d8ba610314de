//! The CLI as a remote operator client (issue 15, point 5): `keyfleet whoami --server` over
//! HTTPS with the operator's TLS client certificate, against a test server in this process
//! that requires client certificates chained to the trusted CAs and answers with the peer
//! certificate's CN. The card identity is Alice's PIV card, issued by `keyfleet apply` on
//! `examples/piv`, served through pcscd + vpcd and used through OpenSC's PKCS#11 module: the
//! card signs the TLS handshake.

use std::path::Path;
use std::process::Command;

use crate::harness::operator_api::{
    ServerTls, TapMkdir, TestServer, ca_pem_of, file_identity, pem_certs,
};
use crate::harness::pcscd::{OPENSC_MODULE, Pcscd};
use crate::harness::softhsm::{self, SoftHsm};
use crate::harness::{Run, repo_root};

/// Runs keyfleet with `env` and no inherited remote settings.
fn kf_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keyfleet"));
    c.args(args).current_dir(repo_root());
    for k in [
        "KEYFLEET_STATE_DIR",
        "KEYFLEET_SERVER",
        "KEYFLEET_IDENTITY",
        "KEYFLEET_SERVER_CA",
        "SSL_CERT_FILE",
    ] {
        c.env_remove(k);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run keyfleet");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `keyfleet ARGS` on a pseudo-terminal (script(1)) and types `pin` once the PIN prompt
/// shows. Returns the exit code and everything the terminal showed.
fn on_terminal(pcscd: &Pcscd, args: &[&str], pin: &str) -> (Option<i32>, String) {
    use std::io::{Read, Write};
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let cmdline = std::iter::once(env!("CARGO_BIN_EXE_keyfleet"))
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = pcscd
        .command("script")
        .args(["-qec", &cmdline, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("script(1) (util-linux)");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&seen).contains("PIN for token") {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => seen.extend(chunk),
            Err(_) => {
                let _ = child.kill();
                panic!("no PIN prompt: {}", String::from_utf8_lossy(&seen));
            }
        }
    }
    stdin
        .write_all(format!("{pin}\n").as_bytes())
        .expect("type the PIN");
    while let Ok(chunk) = rx.recv_timeout(Duration::from_secs(30)) {
        seen.extend(chunk);
    }
    let status = child.wait().expect("script ends");
    drop(stdin);
    (status.code(), String::from_utf8_lossy(&seen).into_owned())
}

/// The tries left on the card's PIN, from the PIV PIN's metadata (GET METADATA, tag 06:
/// total and remaining tries): reading it neither spends a try nor depends on whether the PIN
/// was verified in this card session.
fn pin_tries_left(pcscd: &Pcscd) -> Option<u8> {
    let r = pcscd.tool(
        "opensc-tool",
        &["-s", "00A4040005A000000308", "-s", "00F7008000"],
    );
    // The last answer's data: "Received (SW1=0x90, SW2=0x00):" then hex lines.
    let answer = r.stdout.rsplit("Received (SW1=0x90, SW2=0x00):").next()?;
    let bytes: Vec<u8> = answer
        .lines()
        .skip(1)
        .flat_map(|l| l.split_whitespace().take(16).collect::<Vec<_>>())
        .map_while(|h| u8::from_str_radix(h, 16).ok())
        .collect();
    // TLVs of one-byte tags and lengths: find 06 02 <max> <left>.
    let mut i = 0;
    while i + 1 < bytes.len() {
        let (tag, len) = (bytes[i], usize::from(bytes[i + 1]));
        if tag == 0x06 && len == 2 {
            return bytes.get(i + 3).copied();
        }
        i += 2 + len;
    }
    None
}

#[test]
fn whoami_over_tls_signed_by_the_operator_card_through_opensc() {
    let mut pcscd = Pcscd::start();
    let card = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let _served = pcscd.vcard(card.path(), &[]);
    pcscd.wait_card(true);
    let policy = repo_root().join("examples/piv").display().to_string();
    let state_s = state.path().display().to_string();
    let kf = |args: &[&str]| {
        let mut all = vec!["-C", policy.as_str(), "--state-dir", state_s.as_str()];
        all.extend_from_slice(args);
        pcscd.keyfleet(&all)
    };
    kf(&["apply", "--yes"])
        .expect_code(0)
        .stdout_has("done    issue alice");
    let pin = crate::piv::mailer_pin(state.path());
    let piv_ca = kf(&["ca", "cert", "piv-ca"]);
    piv_ca.expect_code(0);

    let server = TestServer::start(&pem_certs(&piv_ca.stdout));
    let server_ca = work.path().join("server-ca.pem");
    std::fs::write(&server_ca, &server.ca_pem).unwrap();
    let server_ca = server_ca.display().to_string();
    let url = server.url();
    let whoami = |uri: &str| {
        pcscd.keyfleet(&[
            "whoami",
            "--server",
            &url,
            "--identity",
            uri,
            "--server-ca",
            &server_ca,
            "--format",
            "json",
        ])
    };

    // pin-value: the card signs the handshake; the server saw Alice's card certificate.
    let r = whoami(&format!(
        "pkcs11:id=%01?module-path={OPENSC_MODULE}&pin-value={pin}"
    ));
    r.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("whoami JSON");
    assert_eq!(v["operator"], "Alice Andersen", "{}", r.stdout);
    assert_eq!(v["roles"], serde_json::json!([]));
    assert!(r.stderr.is_empty(), "{}", r.stderr);

    // pin-source=file: (the first line) and the text format; `object=` names the key by the
    // certificate's label as OpenSC shows it.
    let pin_file = work.path().join("pin");
    std::fs::write(&pin_file, format!("{pin}\nnot the pin\n")).unwrap();
    let r = pcscd.keyfleet(&[
        "whoami",
        "--server",
        &url,
        "--identity",
        &format!(
            "pkcs11:object=Certificate%20for%20PIV%20Authentication?module-path={OPENSC_MODULE}&pin-source=file:{}",
            pin_file.display()
        ),
        "--server-ca",
        &server_ca,
    ]);
    r.expect_code(0).stdout_has("operator:    Alice Andersen");

    // Neither pin-value nor pin-source: asked on the terminal, not echoed.
    let (code, screen) = on_terminal(
        &pcscd,
        &[
            "whoami",
            "--server",
            &url,
            "--identity",
            &format!("pkcs11:id=%01?module-path={OPENSC_MODULE}"),
            "--server-ca",
            &server_ca,
        ],
        &pin,
    );
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.contains("operator:    Alice Andersen"), "{screen}");
    assert!(!screen.contains(&pin), "the PIN was echoed: {screen}");

    // A wrong PIN: exit 1 naming the PIN and the return code; exactly one try spent.
    assert_eq!(pin_tries_left(&pcscd), Some(3));
    let wrong = if pin == "000000" { "111111" } else { "000000" };
    let r = whoami(&format!(
        "pkcs11:id=%01?module-path={OPENSC_MODULE}&pin-value={wrong}"
    ));
    r.expect_code(1)
        .stderr_has("PIN")
        .stderr_has("CKR_PIN_INCORRECT");
    assert!(
        !r.stderr.contains(wrong),
        "the PIN was printed: {}",
        r.stderr
    );
    assert_eq!(pin_tries_left(&pcscd), Some(2), "one wrong PIN, one try");
    // The right PIN works again (and resets the counter).
    whoami(&format!(
        "pkcs11:id=%01?module-path={OPENSC_MODULE}&pin-value={pin}"
    ))
    .expect_code(0)
    .stdout_has("Alice Andersen");
    assert_eq!(pin_tries_left(&pcscd), Some(3));

    // No key with that id: named, exit 1.
    whoami(&format!(
        "pkcs11:id=%7F?module-path={OPENSC_MODULE}&pin-value={pin}"
    ))
    .expect_code(1)
    .stderr_has("no private key with id 7f");

    // Two wrong PINs leave one try: the client does not spend it (not even with the right
    // PIN), so a stale PIN file cannot lock the operator's card.
    let wrong_uri = format!("pkcs11:id=%01?module-path={OPENSC_MODULE}&pin-value={wrong}");
    whoami(&wrong_uri)
        .expect_code(1)
        .stderr_has("CKR_PIN_INCORRECT");
    whoami(&wrong_uri)
        .expect_code(1)
        .stderr_has("CKR_PIN_INCORRECT")
        .stderr_has("one try left");
    assert_eq!(pin_tries_left(&pcscd), Some(1));
    whoami(&format!(
        "pkcs11:id=%01?module-path={OPENSC_MODULE}&pin-value={pin}"
    ))
    .expect_code(1)
    .stderr_has("final try");
    assert_eq!(pin_tries_left(&pcscd), Some(1));
}

#[test]
fn whoami_with_identity_files_error_shapes_and_usage_errors() {
    let work = tempfile::tempdir().unwrap();
    let id = file_identity(work.path(), "ci-bot");
    let stranger = file_identity(&work.path().join("x").tap_mkdir(), "stranger");
    let server = TestServer::start(std::slice::from_ref(&id.ca_der));
    let server_ca = work.path().join("server-ca.pem");
    std::fs::write(&server_ca, &server.ca_pem).unwrap();
    let url = server.url();
    let (cert, key, ca) = (
        id.cert.display().to_string(),
        id.key.display().to_string(),
        server_ca.display().to_string(),
    );
    let files = [
        "--identity-cert",
        cert.as_str(),
        "--identity-key",
        key.as_str(),
    ];
    let with = |extra: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["whoami", "--server", url.as_str()];
        all.extend_from_slice(&files);
        all.extend_from_slice(extra);
        kf_env(&all, env)
    };

    let r = with(&["--server-ca", &ca, "--format", "json"], &[]);
    r.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(v["operator"], "ci-bot");
    // Without --server-ca the CAs in SSL_CERT_FILE are trusted; KEYFLEET_SERVER_CA works too.
    with(&[], &[("SSL_CERT_FILE", &ca)])
        .expect_code(0)
        .stdout_has("operator:    ci-bot");
    with(&[], &[("KEYFLEET_SERVER_CA", &ca)])
        .expect_code(0)
        .stdout_has("ci-bot");
    // Neither: refused before connecting, saying what to give.
    with(&[], &[]).expect_code(1).stderr_has("--server-ca");
    // A server CA that did not issue the server's certificate: a TLS error.
    let other_ca = work.path().join("other-ca.pem");
    std::fs::write(&other_ca, ca_pem_of(&stranger.ca_der)).unwrap();
    with(&["--server-ca", &other_ca.display().to_string()], &[])
        .expect_code(1)
        .stderr_has("TLS with");
    // A client certificate from a CA the server does not trust: refused by the server.
    let r = kf_env(
        &[
            "whoami",
            "--server",
            &url,
            "--identity-cert",
            &stranger.cert.display().to_string(),
            "--identity-key",
            &stranger.key.display().to_string(),
            "--server-ca",
            &ca,
        ],
        &[],
    );
    r.expect_code(1).stderr_has("TLS with");
    assert!(r.stdout.is_empty(), "{}", r.stdout);

    // The error shape surfaces with its code (through the library client: whoami is the one
    // command; other paths are the lead's commands).
    let client = keyfleet::client::ApiClient::new(
        &url,
        &keyfleet::client::Identity::Files {
            cert: id.cert.clone(),
            key: id.key,
        },
        Some(&server_ca),
    )
    .expect("client");
    let e = client.get("/forbidden").unwrap_err();
    assert!(
        matches!(&e, keyfleet::client::ClientError::Api { status: 403, code, message }
            if code == "forbidden" && message.contains("view-audit-log")),
        "{e:?}"
    );
    let e = client.get("/broken").unwrap_err();
    assert!(
        matches!(&e, keyfleet::client::ClientError::Api { status: 502, code, message }
            if code == "http-502" && message == "upstream fell over"),
        "{e:?}"
    );
    let e = client.get("/nothing-here").unwrap_err();
    assert!(
        matches!(&e, keyfleet::client::ClientError::Api { status: 404, .. }),
        "{e:?}"
    );
    assert_eq!(client.get("/whoami").unwrap()["operator"], "ci-bot");

    // Usage errors exit 2.
    let uri = format!("pkcs11:id=%01?module-path={OPENSC_MODULE}");
    for args in [
        vec!["whoami"],
        vec!["whoami", "--identity", uri.as_str()],
        vec!["whoami", "--server", url.as_str()],
        vec![
            "whoami",
            "--server",
            url.as_str(),
            "--identity-cert",
            cert.as_str(),
        ],
        vec![
            "whoami",
            "--server",
            url.as_str(),
            "--identity-key",
            key.as_str(),
        ],
        vec![
            "whoami",
            "--server",
            url.as_str(),
            "--identity",
            uri.as_str(),
            "--identity-cert",
            cert.as_str(),
            "--identity-key",
            key.as_str(),
        ],
        vec![
            "whoami",
            "--server",
            url.as_str(),
            "--identity",
            uri.as_str(),
            "--format",
            "xml",
        ],
    ] {
        let r = kf_env(&args, &[]);
        assert_eq!(r.code, Some(2), "{args:?}: {}", r.stderr);
    }
    // Not https, a bad URI: errors of the command (exit 1), named.
    kf_env(
        &["whoami", "--server", "http://127.0.0.1:1"],
        &[("KEYFLEET_IDENTITY", &uri)],
    )
    .expect_code(1)
    .stderr_has("https://");
    kf_env(
        &["whoami", "--server", &url, "--identity", "pkcs11:slot-id=1"],
        &[],
    )
    .expect_code(1)
    .stderr_has("slot-id");
}

/// Makes a key and a client certificate for it with openssl (CA `ca`), and imports both into
/// the SoftHSM token with CKA_ID `id`.
fn hsm_key(hsm: &SoftHsm, dir: &Path, id: &str, keygen: &[&str], cn: &str) {
    let p = |n: &str| dir.join(format!("{id}-{n}")).display().to_string();
    let ossl = |args: &[&str]| softhsm::openssl(args).expect_code(0).stdout.clone();
    let mut genpkey = vec!["genpkey"];
    genpkey.extend_from_slice(keygen);
    let key = p("key.pem");
    genpkey.extend_from_slice(&["-out", &key]);
    ossl(&genpkey);
    ossl(&[
        "req",
        "-new",
        "-key",
        &key,
        "-subj",
        &format!("/CN={cn}"),
        "-out",
        &p("csr"),
    ]);
    let ext = p("ext.cnf");
    std::fs::write(
        &ext,
        "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n",
    )
    .unwrap();
    let ca = |n: &str| dir.join(n).display().to_string();
    ossl(&[
        "x509",
        "-req",
        "-in",
        &p("csr"),
        "-CA",
        &ca("ca.pem"),
        "-CAkey",
        &ca("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &ext,
        "-out",
        &p("cert.pem"),
    ]);
    ossl(&[
        "x509",
        "-in",
        &p("cert.pem"),
        "-outform",
        "DER",
        "-out",
        &p("cert.der"),
    ]);
    ossl(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        &key,
        "-outform",
        "DER",
        "-out",
        &p("key.der"),
    ]);
    hsm.tool(&[
        "--login",
        "--pin",
        HSM_PIN,
        "--write-object",
        &p("key.der"),
        "--type",
        "privkey",
        "--id",
        id,
        "--label",
        &format!("{cn} key"),
        "--usage-sign",
    ])
    .expect_code(0);
    hsm.tool(&[
        "--login",
        "--pin",
        HSM_PIN,
        "--write-object",
        &p("cert.der"),
        "--type",
        "cert",
        "--id",
        id,
        "--label",
        &format!("{cn} certificate"),
    ])
    .expect_code(0);
}

const HSM_PIN: &str = "4321";

#[test]
fn whoami_with_rsa_pss_rsa_pkcs1_and_p384_keys_on_a_softhsm_token() {
    let hsm = SoftHsm::new();
    hsm.init_token("operator", HSM_PIN);
    let dir = hsm.path().to_path_buf();
    let ca = |n: &str| dir.join(n).display().to_string();
    softhsm::openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &ca("ca.key"),
        "-out",
        &ca("ca.pem"),
        "-subj",
        "/CN=HSM Operator CA",
        "-days",
        "2",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ])
    .expect_code(0);
    hsm_key(
        &hsm,
        &dir,
        "10",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        "rsa-operator",
    );
    hsm_key(
        &hsm,
        &dir,
        "11",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        "p384-operator",
    );
    let client_ca = pem_certs(&std::fs::read_to_string(dir.join("ca.pem")).unwrap());
    let whoami = |server: &TestServer, uri_path: &str| {
        let server_ca = dir.join("server-ca.pem");
        std::fs::write(&server_ca, &server.ca_pem).unwrap();
        hsm.keyfleet(
            &[
                "whoami",
                "--server",
                &server.url(),
                "--identity",
                &format!(
                    "pkcs11:token=operator;{uri_path}?module-path={}&pin-value={HSM_PIN}",
                    softhsm::MODULE
                ),
                "--server-ca",
                &server_ca.display().to_string(),
                "--format",
                "json",
            ],
            &[],
        )
    };
    let operator = |r: &Run| {
        r.expect_code(0);
        assert!(r.stderr.is_empty(), "{}", r.stderr);
        serde_json::from_str::<serde_json::Value>(&r.stdout).expect("JSON")["operator"].clone()
    };
    // TLS 1.3: RSA signs rsa_pss_rsae_* through CKM_RSA_PKCS_PSS; P-384 through CKM_ECDSA.
    let server = TestServer::start(&client_ca);
    assert_eq!(operator(&whoami(&server, "id=%10")), "rsa-operator");
    assert_eq!(operator(&whoami(&server, "id=%11")), "p384-operator");
    // The key named by its certificate's label.
    assert_eq!(
        operator(&whoami(&server, "object=rsa-operator%20certificate")),
        "rsa-operator"
    );
    // Two keys and no id: refused, both named.
    whoami(&server, "type=private")
        .expect_code(1)
        .stderr_has("2 private keys match");
    drop(server);
    // TLS 1.2 with PKCS#1 v1.5 only: CKM_RSA_PKCS over a DigestInfo.
    let server = TestServer::start_with(&client_ca, ServerTls::Tls12Pkcs1);
    assert_eq!(operator(&whoami(&server, "id=%10")), "rsa-operator");
    assert_eq!(operator(&whoami(&server, "id=%11")), "p384-operator");
}
