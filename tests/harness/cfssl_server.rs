//! A real `cfssl serve` (Debian's golang-cfssl) on 127.0.0.1 for tests: its own CA, a sqlite
//! certificate database (schema per the testbed notes: that package ships none), HMAC-only
//! signing (every profile has an auth key, so the unauthenticated `/sign` is off), and helpers
//! to read the database and generate a CRL from it. A server that cannot start fails the test
//! with the reason.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The HMAC key of the server, hex.
pub(crate) const AUTH_KEY: &str = "00112233445566778899aabbccddeeff";

const SCHEMA: &str = "\
CREATE TABLE certificates (serial_number blob NOT NULL, authority_key_identifier blob NOT NULL, ca_label blob,
  status blob NOT NULL, reason int, expiry timestamp, revoked_at timestamp, pem blob NOT NULL,
  PRIMARY KEY(serial_number, authority_key_identifier));
CREATE TABLE ocsp_responses (serial_number blob NOT NULL, authority_key_identifier blob NOT NULL, body blob NOT NULL,
  expiry timestamp, PRIMARY KEY(serial_number, authority_key_identifier),
  FOREIGN KEY(serial_number, authority_key_identifier) REFERENCES certificates(serial_number, authority_key_identifier));
";

const CONFIG: &str = r#"{"signing":{
  "default":{"expiry":"8760h","usages":["digital signature","client auth"],"auth_key":"k1"},
  "profiles":{
    "client":{"expiry":"8760h","usages":["digital signature","client auth"],"auth_key":"k1"},
    "kmgmt":{"expiry":"8760h","usages":["key encipherment","key agreement"],"auth_key":"k1"}}},
 "auth_keys":{"k1":{"type":"standard","key":"00112233445566778899aabbccddeeff"}}}"#;

/// A running cfssl server.
pub(crate) struct CfsslServer {
    dir: tempfile::TempDir,
    /// Whether it serves https:// (its TLS certificate is signed by `tls-ca.pem`, a CA of its
    /// own, not the signing CA).
    tls: bool,
    child: Child,
    pub(crate) port: u16,
}

fn run(cmd: &mut Command, what: &str) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run ({e}); is golang-cfssl/sqlite3 installed?"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Writes `tls-ca.pem` (a CA of its own) and `tls.pem`/`tls-key.pem`, a server certificate
/// for IP 127.0.0.1 that it issued, into `d`.
fn tls_certificate(d: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(
        Command::new("openssl")
            .args(["req", "-x509"])
            .args(ec)
            .args(["-subj", "/CN=cfssl TLS test CA", "-days", "30", "-keyout"])
            .arg(d.join("tls-ca-key.pem"))
            .arg("-out")
            .arg(d.join("tls-ca.pem")),
        "openssl req (TLS CA)",
    );
    run(
        Command::new("openssl")
            .arg("req")
            .args(ec)
            .args(["-subj", "/CN=127.0.0.1", "-keyout"])
            .arg(d.join("tls-key.pem"))
            .arg("-out")
            .arg(d.join("tls.csr")),
        "openssl req (TLS server)",
    );
    std::fs::write(
        d.join("tls-ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )
    .expect("extensions");
    run(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "30", "-set_serial", "2", "-in"])
            .arg(d.join("tls.csr"))
            .arg("-CA")
            .arg(d.join("tls-ca.pem"))
            .arg("-CAkey")
            .arg(d.join("tls-ca-key.pem"))
            .arg("-extfile")
            .arg(d.join("tls-ext.cnf"))
            .arg("-out")
            .arg(d.join("tls.pem")),
        "openssl x509 (TLS server)",
    );
}

impl CfsslServer {
    /// Creates the CA and database and starts `cfssl serve` on a free port (http://).
    pub(crate) fn start() -> CfsslServer {
        Self::start_with(false)
    }

    /// Like [`CfsslServer::start`], over https:// (`-tls-cert`/`-tls-key`) with a certificate
    /// for 127.0.0.1 issued by `tls-ca.pem`.
    pub(crate) fn start_tls() -> CfsslServer {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> CfsslServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        std::fs::write(d.join("schema.sql"), SCHEMA).expect("schema");
        run(
            Command::new("sqlite3")
                .arg(d.join("certs.db"))
                .stdin(std::fs::File::open(d.join("schema.sql")).expect("schema file")),
            "sqlite3 (create certdb)",
        );
        std::fs::write(
            d.join("db.json"),
            format!(
                r#"{{"driver":"sqlite3","data_source":"{}"}}"#,
                d.join("certs.db").display()
            ),
        )
        .expect("db config");
        std::fs::write(d.join("config.json"), CONFIG).expect("config");
        std::fs::write(
            d.join("ca-csr.json"),
            r#"{"CN":"Test cfssl CA","key":{"algo":"ecdsa","size":256},"names":[{"O":"Example Test"}],"ca":{"expiry":"87600h"}}"#,
        )
        .expect("ca csr");
        let json = run(
            Command::new("cfssl")
                .args(["gencert", "-initca"])
                .arg(d.join("ca-csr.json")),
            "cfssl gencert -initca",
        );
        let v: serde_json::Value = serde_json::from_slice(&json).expect("initca output");
        std::fs::write(d.join("ca.pem"), v["cert"].as_str().expect("cert")).expect("ca.pem");
        std::fs::write(d.join("ca-key.pem"), v["key"].as_str().expect("key")).expect("key");

        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let mut serve = Command::new("cfssl");
        serve.args(["serve", "-address", "127.0.0.1", "-port", &port.to_string()]);
        if tls {
            tls_certificate(d);
            serve
                .arg("-tls-cert")
                .arg(d.join("tls.pem"))
                .arg("-tls-key")
                .arg(d.join("tls-key.pem"));
        }
        let child = serve
            .arg("-ca")
            .arg(d.join("ca.pem"))
            .arg("-ca-key")
            .arg(d.join("ca-key.pem"))
            .arg("-config")
            .arg(d.join("config.json"))
            .arg("-db-config")
            .arg(d.join("db.json"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(d.join("serve.log")).expect("log"),
            ))
            .spawn()
            .expect("cfssl serve: cannot start; is golang-cfssl installed?");
        let server = CfsslServer {
            dir,
            tls,
            child,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "cfssl serve did not listen on {port}: {}",
                std::fs::read_to_string(server.dir.path().join("serve.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// The base URL.
    pub(crate) fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// A file of the server's folder (`ca.pem`, `ca-key.pem`, `certs.db`, and with TLS
    /// `tls-ca.pem`).
    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `serial_number|status|reason` rows of the certificate database.
    pub(crate) fn rows(&self) -> Vec<String> {
        let out = run(
            Command::new("sqlite3").arg(self.file("certs.db")).arg(
                "select serial_number, status, coalesce(reason, '') from certificates order by serial_number",
            ),
            "sqlite3 (query)",
        );
        String::from_utf8_lossy(&out)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The hex serials (as openssl prints them) of the certificates in the database.
    pub(crate) fn hex_serials(&self) -> Vec<String> {
        let out = run(
            Command::new("sqlite3")
                .arg(self.file("certs.db"))
                .arg("select pem from certificates order by serial_number"),
            "sqlite3 (pem)",
        );
        let pem = self.file("all.pem");
        std::fs::write(&pem, &out).expect("pem");
        let text = String::from_utf8_lossy(&run(
            Command::new("openssl")
                .args(["x509", "-noout", "-serial", "-in"])
                .arg(&pem),
            "openssl x509 -serial",
        ))
        .into_owned();
        text.lines()
            .filter_map(|l| l.strip_prefix("serial="))
            .map(str::to_string)
            .collect()
    }

    /// A CRL (DER) from the database's revoked serials, made with `cfssl gencrl`.
    pub(crate) fn crl_from_db(&self, out_dir: &Path) -> Vec<u8> {
        let revoked: Vec<String> = self
            .rows()
            .iter()
            .filter(|r| r.contains("|revoked|"))
            .filter_map(|r| r.split('|').next().map(str::to_string))
            .collect();
        let list = out_dir.join("revoked-serials.txt");
        std::fs::write(&list, revoked.join("\n") + "\n").expect("serial list");
        let b64 = run(
            Command::new("cfssl")
                .arg("gencrl")
                .arg(&list)
                .arg(self.file("ca.pem"))
                .arg(self.file("ca-key.pem")),
            "cfssl gencrl",
        );
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(String::from_utf8_lossy(&b64).trim())
            .expect("gencrl output is Base64")
    }
}

impl Drop for CfsslServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
