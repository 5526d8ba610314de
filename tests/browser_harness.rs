//! The browser harness itself (tests/harness/browser.rs): headless Chromium over WebDriver
//! against a tiny HTTPS server in this file, which serves a form and shows the subject of the
//! client certificate it was given (optional: the handshake succeeds without one).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Form;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum_server::tls::TlsInfo;
use der::Decode;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::harness::browser::{Browser, BrowserOptions, Shot, artifacts_root, write_artifacts};

/// A throwaway CA.
struct Ca {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    pem: String,
    der: CertificateDer<'static>,
}

fn ca(cn: &str) -> Ca {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    let cert = params.self_signed(&key).expect("CA certificate");
    Ca {
        pem: cert.pem(),
        der: cert.der().clone(),
        params,
        key,
    }
}

/// A leaf certificate from `ca`: (certificate PEM, key PEM).
fn leaf(ca: &Ca, dn: &[(rcgen::DnType, &str)], server: bool) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut p = if server {
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params")
    } else {
        rcgen::CertificateParams::default()
    };
    for (t, v) in dn {
        p.distinguished_name.push(t.clone(), *v);
    }
    p.extended_key_usages = vec![if server {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    }];
    p.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    let issuer = rcgen::Issuer::new(ca.params.clone(), &ca.key);
    let cert = p.signed_by(&key, &issuer).expect("sign leaf");
    (cert.pem(), key.serialize_pem())
}

/// The test site: HTTPS on 127.0.0.1 with a certificate from its own CA, asking for an
/// optional client certificate from `client_ca`.
struct Site {
    addr: SocketAddr,
    server_ca: Ca,
    handle: axum_server::Handle<SocketAddr>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Site {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title></head>\
         <body>{body}</body></html>"
    ))
}

async fn form_page() -> Html<String> {
    page(
        "Sign in",
        "<h1>Sign in</h1><form method=post action=/submit>\
         <label for=username>User</label><input id=username name=username>\
         <label for=password>Password</label><input id=password name=password type=password>\
         <button type=submit>Sign in</button></form>",
    )
}

async fn submit(Form(f): Form<HashMap<String, String>>) -> Response {
    let user = f.get("username").cloned().unwrap_or_default();
    let password_len = f.get("password").map_or(0, |p| p.chars().count());
    let body = format!(
        "<p id=greeting>Hello, {}</p><p id=password-length>{password_len}</p>",
        escape(&user)
    );
    let mut resp = page("Signed in", &body).into_response();
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        "sid=s3ss10n; Path=/; Secure; HttpOnly; SameSite=Strict"
            .parse()
            .expect("cookie"),
    );
    h.append(
        header::SET_COOKIE,
        "theme=dark; Path=/; Max-Age=3600".parse().expect("cookie"),
    );
    resp
}

async fn whoami(info: Option<axum::Extension<Arc<TlsInfo>>>) -> Html<String> {
    let subject = info.and_then(|axum::Extension(i)| {
        let der = i.peer_certificates.first()?;
        let cert = x509_cert::Certificate::from_der(der).ok()?;
        Some(cert.tbs_certificate().subject().to_string())
    });
    match subject {
        Some(s) => page("Who", &format!("<p id=subject>{}</p>", escape(&s))),
        None => page("Who", "<p id=subject>no client certificate</p>"),
    }
}

impl Site {
    fn start(client_ca: &Ca) -> Site {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let server_ca = ca("Browser Harness Server CA");
        let (cert_pem, key_pem) = leaf(
            &server_ca,
            &[(rcgen::DnType::CommonName, "127.0.0.1")],
            true,
        );
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(client_ca.der.clone()).expect("client CA");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .expect("client verifier");
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("cert")],
                PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key"),
            )
            .expect("server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
        let app = Router::new()
            .route("/form", get(form_page))
            .route("/submit", post(submit))
            .route("/whoami", get(whoami));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let handle: axum_server::Handle<SocketAddr> = axum_server::Handle::new();
        let h = handle.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let server = axum_server::from_tcp_rustls(listener, tls)
                    .expect("listener")
                    .handle(h);
                if let Err(e) = server.serve(app.into_make_service()).await {
                    eprintln!("browser harness site stopped: {e}");
                }
            });
        });
        Site {
            addr,
            server_ca,
            handle,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// Options that trust this site's server CA.
    fn trusting(&self) -> BrowserOptions {
        BrowserOptions {
            trust_ca_pem: Some(self.server_ca.pem.clone()),
            ..BrowserOptions::default()
        }
    }
}

fn is_png(b: &[u8]) -> bool {
    b.starts_with(b"\x89PNG\r\n\x1a\n")
}

/// The width and height in a PNG's IHDR.
fn png_size(b: &[u8]) -> (u32, u32) {
    let w = u32::from_be_bytes(b[16..20].try_into().expect("4 bytes"));
    let h = u32::from_be_bytes(b[20..24].try_into().expect("4 bytes"));
    (w, h)
}

#[test]
fn fills_and_submits_a_form_and_reads_the_result_and_cookies() {
    let site = Site::start(&ca("Unused Client CA"));
    let browser = Browser::start(site.trusting());
    browser.goto(&site.url("/form"));
    assert_eq!(browser.title(), "Sign in");
    assert_eq!(browser.find("h1").text(), "Sign in");
    assert_eq!(
        browser.find("#password").attr("type").as_deref(),
        Some("password")
    );
    assert!(browser.try_find("#greeting").is_none());

    let user = browser.find("input[name=username]");
    user.type_text("first");
    user.clear();
    user.type_text("o'Brien <b>&");
    assert_eq!(user.property("value"), "o'Brien <b>&");
    browser
        .find("input[name=password]")
        .type_text("correct horse");
    user.submit();

    assert_eq!(browser.current_url(), site.url("/submit"));
    let greeting = browser.wait_for("#greeting", Duration::from_secs(5));
    assert_eq!(greeting.text(), "Hello, o'Brien <b>&");
    assert_eq!(browser.find("#password-length").text(), "13");
    assert!(browser.source().contains("Hello, o'Brien &lt;b&gt;&amp;"));

    let sid = browser.cookie("sid").expect("the sid cookie");
    assert_eq!(sid.value, "s3ss10n");
    assert!(sid.secure && sid.http_only, "{sid:?}");
    assert_eq!(sid.same_site.as_deref(), Some("Strict"));
    assert_eq!(sid.expiry, None);
    let theme = browser.cookie("theme").expect("the theme cookie");
    assert!(!theme.secure && !theme.http_only, "{theme:?}");
    assert_eq!(
        theme.same_site.as_deref(),
        Some("Lax"),
        "Chromium's default"
    );
    assert!(theme.expiry.is_some());

    let png = browser.screenshot();
    assert!(is_png(&png));
    let (w, h) = png_size(&png);
    assert!(w == 1280 && h > 600, "{w}x{h}");
    let shots = browser.shots();
    let whats: Vec<&str> = shots.iter().map(|s| s.what.as_str()).collect();
    assert_eq!(whats, ["navigate-form", "submit-input_name_username_"]);
    assert!(shots.iter().all(|s| is_png(&s.png)));
    assert!(shots[0].html.contains("<form"));
    assert!(shots[1].html.contains("id=\"greeting\""));
}

#[test]
fn presents_the_configured_client_certificate() {
    let client_ca = ca("Browser Harness Client CA");
    let (cert, key) = leaf(
        &client_ca,
        &[
            (rcgen::DnType::CommonName, "Harness Holder"),
            (rcgen::DnType::OrganizationName, "Example"),
        ],
        false,
    );
    let site = Site::start(&client_ca);
    let browser = Browser::start(BrowserOptions {
        client_cert: Some((cert, key)),
        auto_select_for: Some(site.addr),
        ..site.trusting()
    });
    browser.goto(&site.url("/whoami"));
    // The server shows the subject of the certificate it received, as x509-cert prints it
    // (RFC 4514 order: last RDN first).
    assert_eq!(
        browser.find("#subject").text(),
        "O=Example,CN=Harness Holder"
    );
}

#[test]
fn presents_no_client_certificate_without_one() {
    let site = Site::start(&ca("Browser Harness Client CA"));
    // Auto-selection on, but nothing in the NSS database to select.
    let browser = Browser::start(BrowserOptions {
        auto_select_for: Some(site.addr),
        ..site.trusting()
    });
    browser.goto(&site.url("/whoami"));
    assert_eq!(browser.find("#subject").text(), "no client certificate");
}

#[test]
fn refuses_an_untrusted_server_certificate_unless_told_to_accept_it() {
    let site = Site::start(&ca("Browser Harness Client CA"));
    let strict = Browser::start(BrowserOptions::default());
    let err = strict
        .try_goto(&site.url("/form"))
        .expect_err("an untrusted server certificate must not load");
    assert_eq!(err.error, "insecure certificate", "{err}");
    assert!(
        err.message.contains("NET::ERR_CERT_AUTHORITY_INVALID"),
        "{err}"
    );
    assert_eq!(strict.title(), "Privacy error");
    assert!(strict.try_find("form").is_none());
    drop(strict);

    let lax = Browser::start(BrowserOptions {
        accept_insecure_certs: true,
        ..BrowserOptions::default()
    });
    lax.goto(&site.url("/form"));
    assert_eq!(lax.title(), "Sign in");
}

#[test]
fn writes_screenshots_and_sources_as_artifacts() {
    let root = tempfile::tempdir().expect("temp dir");
    assert_eq!(write_artifacts(root.path(), "t", &[]).expect("write"), None);
    let png = b"\x89PNG\r\n\x1a\nrest".to_vec();
    let shots = [
        Shot {
            what: "navigate-form".into(),
            png: png.clone(),
            html: "<html>one</html>".into(),
        },
        Shot {
            what: "click-button".into(),
            png: Vec::new(),
            html: "<html>two</html>".into(),
        },
    ];
    let dir = write_artifacts(root.path(), "browser_harness::some test", &shots)
        .expect("write")
        .expect("a folder");
    assert_eq!(dir, root.path().join("browser_harness.some_test"));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "01-navigate-form.html",
            "01-navigate-form.png",
            "02-click-button.html"
        ]
    );
    assert_eq!(
        std::fs::read(dir.join("01-navigate-form.png")).expect("png"),
        png
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("02-click-button.html")).expect("html"),
        "<html>two</html>"
    );
    // A second failure of the same test replaces the first one's files.
    write_artifacts(root.path(), "browser_harness::some test", &shots[1..]).expect("rewrite");
    assert_eq!(std::fs::read_dir(&dir).expect("read dir").count(), 1);
}

#[test]
fn keeps_the_screenshots_of_a_browser_dropped_in_a_panic() {
    let site = Site::start(&ca("Browser Harness Client CA"));
    let name = "browser_harness::panicking_probe";
    let dir = artifacts_root().join("browser_harness.panicking_probe");
    let _ = std::fs::remove_dir_all(&dir);
    let opts = site.trusting();
    let url = site.url("/form");
    let joined = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let browser = Browser::start(opts);
            assert_eq!(browser.test_name(), name);
            browser.goto(&url);
            browser.find("#password").type_text("x");
            browser.find("button").click();
            panic!("deliberate failure to exercise the artifact writer");
        })
        .expect("spawn")
        .join();
    assert!(joined.is_err(), "the probe thread must have panicked");
    let png = std::fs::read(dir.join("01-navigate-form.png")).expect("first screenshot kept");
    assert!(is_png(&png));
    let html = std::fs::read_to_string(dir.join("01-navigate-form.html")).expect("source kept");
    assert!(html.contains("<form"), "{html}");
    let clicked = std::fs::read_to_string(dir.join("02-click-button.html")).expect("second");
    assert!(clicked.contains("id=\"greeting\""), "{clicked}");
    std::fs::remove_dir_all(&dir).expect("clean up");

    // A browser dropped normally keeps nothing.
    let ok_dir = artifacts_root().join("browser_harness.quiet_probe");
    let _ = std::fs::remove_dir_all(&ok_dir);
    let opts = site.trusting();
    let url = site.url("/form");
    std::thread::Builder::new()
        .name("browser_harness::quiet_probe".into())
        .spawn(move || {
            let browser = Browser::start(opts);
            browser.goto(&url);
        })
        .expect("spawn")
        .join()
        .expect("no panic");
    assert!(!ok_dir.exists());
}
