//! A real Active Directory for tests: Samba's AD DC provisioned into a temp dir, given a
//! server certificate from a test CA (SAN localhost, so rustls hostname checks pass), serving
//! LDAP only on 127.0.0.1. Samba's LDAP ports are fixed (389/636), so only one DC may run:
//! [`SambaDc::start`] holds a global lock for the DC's lifetime. Tests only.

use std::io::Read;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::testca::TestCa;

/// The realm.
pub(crate) const REALM: &str = "CORP.EXAMPLE.ORG";
/// The domain's base DN.
pub(crate) const BASE_DN: &str = "DC=corp,DC=example,DC=org";
/// The administrator's bind name.
pub(crate) const ADMIN: &str = "Administrator@corp.example.org";
/// The administrator's password.
pub(crate) const ADMIN_PW: &str = "Adm1n-Passw0rd!";

static ONE_DC: Mutex<()> = Mutex::new(());

/// A running Samba AD DC; stopped on drop.
pub(crate) struct SambaDc {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// PEM of the CA that issued the DC's certificate.
    pub(crate) ca_pem: String,
    _lock: MutexGuard<'static, ()>,
}

fn port_open(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

impl SambaDc {
    /// Provisions and starts a DC. Panics with the reason when it cannot.
    pub(crate) fn start() -> SambaDc {
        let lock = ONE_DC.lock().unwrap_or_else(|p| p.into_inner());
        for port in [389, 636] {
            assert!(
                !port_open(port),
                "port {port} on 127.0.0.1 is busy: another LDAP server or Samba DC runs here; \
                 the Active Directory tests need it"
            );
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let t = dir.path();
        let dc = t.join("dc");
        let out = Command::new("samba-tool")
            .args(["domain", "provision"])
            .arg(format!("--targetdir={}", dc.display()))
            .args([
                &format!("--realm={REALM}"),
                "--domain=CORP",
                "--server-role=dc",
                "--dns-backend=NONE",
                &format!("--adminpass={ADMIN_PW}"),
                "--host-name=dc1",
                "--host-ip=127.0.0.1",
                "--use-rfc2307",
                "--option=interfaces=127.0.0.1",
                "--option=bind interfaces only=yes",
            ])
            .output()
            .expect("run samba-tool (install samba: scripts/install-deps --test)");
        assert!(
            out.status.success(),
            "samba-tool domain provision failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let ca = TestCa::new("Keyfleet Test AD CA");
        let cert = ca.server(&["localhost"]);
        let tls = t.join("tls");
        std::fs::create_dir(&tls).expect("tls dir");
        std::fs::write(tls.join("ca.pem"), &ca.cert_pem).expect("ca");
        std::fs::write(tls.join("cert.pem"), &cert.cert_pem).expect("cert");
        std::fs::write(tls.join("key.pem"), &cert.key_pem).expect("key");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tls.join("key.pem"), std::fs::Permissions::from_mode(0o600))
            .expect("chmod key");
        let conf = dc.join("etc/smb.conf");
        let text = std::fs::read_to_string(&conf).expect("read smb.conf");
        let run = dc.join("run");
        let extra = format!(
            "\tpid directory = {run}\n\tncalrpc dir = {run}/ncalrpc\n\
             \twinbindd socket directory = {run}/winbindd\n\tntp signd socket directory = {run}/ntp_signd\n\
             \tlog file = {log}/log.%m\n\tserver services = ldap\n\ttls enabled = yes\n\
             \ttls keyfile = {tls}/key.pem\n\ttls certfile = {tls}/cert.pem\n\ttls cafile = {tls}/ca.pem\n",
            run = run.display(),
            log = dc.join("log").display(),
            tls = tls.display(),
        );
        let text = text.replacen("[global]\n", &format!("[global]\n{extra}"), 1);
        std::fs::write(&conf, text).expect("write smb.conf");
        let mut child = Command::new("samba")
            .args(["-i", "-M", "single", "-s"])
            .arg(&conf)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn samba");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(port_open(389) && port_open(636)) {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("samba exited with {status}: {err}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("samba did not listen on 389/636 within 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        SambaDc {
            child: Some(child),
            dir,
            ca_pem: ca.cert_pem,
            _lock: lock,
        }
    }

    /// The smb.conf path.
    pub(crate) fn conf(&self) -> PathBuf {
        self.dir.path().join("dc/etc/smb.conf")
    }

    /// Runs `samba-tool ARGS -s smb.conf` against the local database; panics on failure.
    pub(crate) fn tool(&self, args: &[&str]) {
        let out = Command::new("samba-tool")
            .args(args)
            .arg("-s")
            .arg(self.conf())
            .output()
            .expect("run samba-tool");
        assert!(
            out.status.success(),
            "samba-tool {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for SambaDc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The first documents of a lab policy against the test DC: the local CA `lab` and the
/// Directory `ad` at `url` (bind.pw and ad-ca.pem written next to it by the test).
pub(crate) fn ad_policy_head(url: &str) -> String {
    format!(
        "\
apiVersion: keyfleet.dev/v1
kind: CertificateAuthority
metadata: {{name: lab}}
spec:
  local: {{subject: 'CN=Lab CA,O=Example'}}
---
apiVersion: keyfleet.dev/v1
kind: Directory
metadata: {{name: ad}}
spec:
  ldap:
    url: {url}
    flavour: active-directory
    bindDn: {ADMIN}
    bindPassword: {{file: bind.pw}}
    baseDn: {BASE_DN}
    tls: {{caFile: ad-ca.pem}}
---
"
    )
}
