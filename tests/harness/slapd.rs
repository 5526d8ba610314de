//! A real OpenLDAP slapd for tests: a temporary configuration and database, listening on
//! 127.0.0.1 on free ports (plain LDAP, and LDAPS when given a certificate), with the memberof,
//! ppolicy (pwdAccountLockedTime) and optionally syncprov (contextCSN) overlays. The binary is
//! copied into the temp dir so an AppArmor profile tied to /usr/sbin/slapd does not confine it.
//! Also a TCP proxy that kills slapd after a number of bytes, to cut an observation midway.
//! Tests only.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::testca::ServerCert;

/// Suffix of every test database.
pub(crate) const SUFFIX: &str = "dc=example,dc=org";
/// The root DN.
pub(crate) const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
/// The root password.
pub(crate) const ADMIN_PW: &str = "secret";

/// Options for [`Slapd::start`].
#[derive(Default)]
pub(crate) struct SlapdOptions {
    /// Load syncprov so the suffix carries contextCSN.
    pub(crate) syncprov: bool,
    /// Serve LDAPS (and StartTLS) with this certificate.
    pub(crate) tls: Option<ServerCert>,
    /// Limit every non-root search to this many entries (paged searches included).
    pub(crate) sizelimit: Option<u32>,
}

/// A running slapd; killed on drop.
pub(crate) struct Slapd {
    child: Option<Child>,
    pid: Arc<Mutex<Option<u32>>>,
    dir: tempfile::TempDir,
    /// Plain LDAP port.
    pub(crate) port: u16,
    /// LDAPS port (when TLS is on).
    pub(crate) tls_port: Option<u16>,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

impl Slapd {
    /// Starts slapd with an empty database holding only the suffix entry and `ou=people`,
    /// `ou=groups`. Panics with the reason if slapd cannot start.
    pub(crate) fn start(opts: SlapdOptions) -> Slapd {
        let dir = tempfile::tempdir().expect("temp dir");
        let t = dir.path();
        std::fs::create_dir(t.join("db")).expect("db dir");
        let bin = t.join("slapd");
        std::fs::copy("/usr/sbin/slapd", &bin)
            .expect("copy /usr/sbin/slapd (install it: scripts/install-deps --test)");
        let mut tls_conf = String::new();
        if let Some(tls) = &opts.tls {
            std::fs::write(t.join("server.pem"), &tls.cert_pem).expect("write cert");
            std::fs::write(t.join("server.key"), &tls.key_pem).expect("write key");
            tls_conf = format!(
                "TLSCertificateFile {}\nTLSCertificateKeyFile {}\n",
                t.join("server.pem").display(),
                t.join("server.key").display()
            );
        }
        let syncprov = if opts.syncprov {
            ("moduleload syncprov\n", "overlay syncprov\n")
        } else {
            ("", "")
        };
        let conf = format!(
            "include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
pidfile {t}/slapd.pid
argsfile {t}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
moduleload ppolicy
{sp_mod}{tls_conf}sizelimit {limit}
timelimit unlimited
database mdb
maxsize 1073741824
suffix \"{SUFFIX}\"
rootdn \"{ADMIN_DN}\"
rootpw {ADMIN_PW}
directory {t}/db
index objectClass eq
index uid,cn eq
index member,memberOf eq
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read
{sp_overlay}overlay ppolicy
overlay memberof
memberof-group-oc groupOfNames
memberof-member-ad member
memberof-memberof-ad memberOf
",
            t = t.display(),
            sp_mod = syncprov.0,
            sp_overlay = syncprov.1,
            limit = match opts.sizelimit {
                Some(n) => format!("size.soft={n} size.hard={n} size.prtotal={n}"),
                None => "size.soft=unlimited size.hard=unlimited size.prtotal=unlimited".into(),
            },
        );
        std::fs::write(t.join("slapd.conf"), conf).expect("write slapd.conf");
        let mut last_err = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let tls_port = opts.tls.as_ref().map(|_| free_port());
            let mut urls = format!("ldap://127.0.0.1:{port}/");
            if let Some(p) = tls_port {
                urls.push_str(&format!(" ldaps://127.0.0.1:{p}/"));
            }
            let spawn = || {
                Command::new(&bin)
                    .args(["-f"])
                    .arg(t.join("slapd.conf"))
                    .args(["-h", &urls, "-d", "0"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
            };
            // Another test thread forking while this one still had the copied binary open
            // for writing keeps a writable descriptor alive in that child until it execs:
            // exec then fails with ETXTBSY for a moment.
            let mut child = spawn();
            for _ in 0..50 {
                match &child {
                    Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                        std::thread::sleep(Duration::from_millis(20));
                        child = spawn();
                    }
                    _ => break,
                }
            }
            let mut child = child.expect("spawn slapd");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    last_err = format!("slapd exited with {status}: {err}");
                    break;
                }
                let up = TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && tls_port.is_none_or(|p| TcpStream::connect(("127.0.0.1", p)).is_ok());
                if up {
                    let pid = Arc::new(Mutex::new(Some(child.id())));
                    let s = Slapd {
                        child: Some(child),
                        pid,
                        dir,
                        port,
                        tls_port,
                    };
                    s.ldapadd(&format!(
                        "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n\
                         dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n\
                         dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n"
                    ));
                    return s;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = "slapd did not listen within 10 s".into();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        panic!("cannot start slapd: {last_err}");
    }

    /// `ldap://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// The temp dir (config, database).
    pub(crate) fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn ldap_tool(&self, tool: &str, ldif: &str) {
        let mut child = Command::new(tool)
            .args(["-x", "-H", &self.url(), "-D", ADMIN_DN, "-w", ADMIN_PW])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"));
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(ldif.as_bytes())
            .expect("write ldif");
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{tool} failed: {}\n{ldif}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Adds entries (LDIF) as the root DN.
    pub(crate) fn ldapadd(&self, ldif: &str) {
        self.ldap_tool("ldapadd", ldif);
    }

    /// Applies an LDIF change set as the root DN.
    pub(crate) fn ldapmodify(&self, ldif: &str) {
        self.ldap_tool("ldapmodify", ldif);
    }

    /// A handle that can SIGKILL this slapd from another thread.
    pub(crate) fn killer(&self) -> Killer {
        Killer(self.pid.clone())
    }
}

/// Kills a slapd from another thread.
#[derive(Clone)]
pub(crate) struct Killer(Arc<Mutex<Option<u32>>>);

impl Killer {
    /// SIGKILLs the process (once).
    pub(crate) fn kill(&self) {
        if let Some(pid) = self.0.lock().expect("lock").take() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A TCP proxy on 127.0.0.1 in front of `target`: after `limit` bytes from the server to
/// clients (counted over all connections) it kills slapd and cuts every connection.
pub(crate) struct CuttingProxy {
    /// The port clients connect to.
    pub(crate) port: u16,
    /// Bytes forwarded from the server so far.
    pub(crate) forwarded: Arc<AtomicUsize>,
}

impl CuttingProxy {
    /// Starts the proxy.
    pub(crate) fn start(target: u16, limit: usize, killer: Killer) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let forwarded = Arc::new(AtomicUsize::new(0));
        let count = forwarded.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let (c2, s2) = match (client.try_clone(), server.try_clone()) {
                    (Ok(c), Ok(s)) => (c, s),
                    _ => continue,
                };
                // client -> server, unlimited
                std::thread::spawn(move || pipe(client, s2, None));
                let count = count.clone();
                let killer = killer.clone();
                std::thread::spawn(move || pipe(server, c2, Some((count, limit, killer))));
            }
        });
        CuttingProxy { port, forwarded }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, limit: Option<(Arc<AtomicUsize>, usize, Killer)>) {
    let mut buf = [0u8; 4096];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((count, limit, killer)) = &limit {
            let before = count.fetch_add(n, Ordering::SeqCst);
            if before + n > *limit {
                let allowed = limit.saturating_sub(before);
                let _ = to.write_all(&buf[..allowed.min(n)]);
                killer.kill();
                break;
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
