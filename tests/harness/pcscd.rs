//! A private pcscd with the vpcd reader driver, per test, and Keyfleet's virtual card served
//! into it (`keyfleet vcard serve`) as a child process.
//!
//! pcscd ignores `PCSCLITE_CSOCK_NAME` for its own socket, so it is started through systemd
//! socket activation (`systemd-socket-activate -l <socket> pcscd -f -c <reader.conf.d>`): the
//! socket is private to the test and every client gets `PCSCLITE_CSOCK_NAME` pointing at it.
//! Each instance has its own vpcd port pair (vpcd binds 0.0.0.0:PORT and PORT+1). Readiness is
//! polled through PC/SC (`keyfleet cards --format json`), never guessed with sleeps. If pcscd
//! cannot start the test fails with the reason.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Run, repo_root};

/// The OpenSC PKCS#11 module.
pub(crate) const OPENSC_MODULE: &str = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so";

/// A port P such that P and P+1 are free on all interfaces now.
fn free_port_pair() -> u16 {
    for _ in 0..200 {
        let Ok(a) = TcpListener::bind("0.0.0.0:0") else {
            continue;
        };
        let Ok(port) = a.local_addr().map(|a| a.port()) else {
            continue;
        };
        if port < 65535 && TcpListener::bind(("0.0.0.0", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port pair for vpcd");
}

/// A private pcscd; killed and reaped on drop.
pub(crate) struct Pcscd {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
}

impl Pcscd {
    /// Starts pcscd on a private socket with one vpcd reader entry ("Test VPCD 00 00" on a
    /// fresh port) and waits until it lists the readers.
    pub(crate) fn start() -> Pcscd {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port_pair();
        let conf = dir.path().join("reader.conf.d");
        std::fs::create_dir_all(&conf).expect("reader.conf.d");
        std::fs::write(
            conf.join("vpcd"),
            format!(
                "FRIENDLYNAME \"Test VPCD\"\nDEVICENAME /dev/null:0x{port:04X}\n\
                 LIBPATH /usr/lib/pcsc/drivers/serial/libifdvpcd.so\nCHANNELID 0x{port:04X}\n"
            ),
        )
        .expect("reader config");
        let child = Self::spawn(dir.path());
        let mut p = Pcscd { dir, child, port };
        p.wait_ready();
        p
    }

    fn spawn(dir: &Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("pcscd.log"))
            .expect("log file");
        let _ = std::fs::remove_file(dir.join("pcscd.comm"));
        Command::new("systemd-socket-activate")
            .arg("-l")
            .arg(dir.join("pcscd.comm"))
            .args(["pcscd", "-f", "-d", "-c"])
            .arg(dir.join("reader.conf.d"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start pcscd through systemd-socket-activate: {e} (scripts/install-deps --test installs pcscd, vsmartcard-vpcd and systemd)")
            })
    }

    fn wait_ready(&mut self) {
        let socket = self.socket();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            self.check_alive();
            assert!(Instant::now() < deadline, "pcscd socket never appeared");
            std::thread::sleep(Duration::from_millis(5));
        }
        // The first client starts pcscd (socket activation); it answers once readers load.
        loop {
            let readers = self.cards_json(None);
            if readers.as_array().is_some_and(|a| !a.is_empty()) {
                break;
            }
            self.check_alive();
            assert!(
                Instant::now() < deadline,
                "pcscd never listed the vpcd reader; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops pcscd and starts it again on the same socket and reader port (a reader
    /// unplugged and plugged back in).
    pub(crate) fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(self.dir.path());
        self.wait_ready();
    }

    fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("pcscd exited ({status}); log:\n{}", self.log());
        }
    }

    /// pcscd's output so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pcscd.log")).unwrap_or_default()
    }

    /// The private socket.
    pub(crate) fn socket(&self) -> PathBuf {
        self.dir.path().join("pcscd.comm")
    }

    /// Where vpcd listens for the card of the first reader.
    pub(crate) fn vpcd(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A command with `PCSCLITE_CSOCK_NAME` pointing at this pcscd.
    pub(crate) fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("PCSCLITE_CSOCK_NAME", self.socket())
            .env_remove("KEYFLEET_STATE_DIR")
            .current_dir(repo_root());
        c
    }

    /// Runs `keyfleet` against this pcscd with extra environment.
    pub(crate) fn keyfleet_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c = self.command(env!("CARGO_BIN_EXE_keyfleet"));
        c.args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        run(c)
    }

    /// Runs `keyfleet` against this pcscd.
    pub(crate) fn keyfleet(&self, args: &[&str]) -> Run {
        self.keyfleet_env(args, &[])
    }

    /// Runs any program against this pcscd.
    pub(crate) fn tool(&self, program: &str, args: &[&str]) -> Run {
        let mut c = self.command(program);
        c.args(args);
        run(c)
    }

    /// `keyfleet cards --format json` (with the PIV example policy and `state` if given).
    pub(crate) fn cards_json(&self, state: Option<&Path>) -> serde_json::Value {
        let policy = repo_root().join("examples/piv");
        let tmp;
        let state = match state {
            Some(s) => s.to_path_buf(),
            None => {
                tmp = self.dir.path().join("no-state");
                tmp
            }
        };
        let r = self.keyfleet(&[
            "-C",
            &policy.display().to_string(),
            "--state-dir",
            &state.display().to_string(),
            "cards",
            "--format",
            "json",
        ]);
        if r.code != Some(0) {
            return serde_json::Value::Null;
        }
        serde_json::from_str(&r.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// Waits until the first reader has (or has not) a card, by polling PC/SC.
    pub(crate) fn wait_card(&mut self, present: bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let readers = self.cards_json(None);
            if let Some(first) = readers.get(0)
                && first["present"].as_bool() == Some(present)
            {
                return first.clone();
            }
            self.check_alive();
            assert!(
                Instant::now() < deadline,
                "the card never became present={present}; pcscd log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts `keyfleet vcard serve` for the card in `state` (created if empty).
    pub(crate) fn vcard(&self, state: &Path, env: &[(&str, &str)]) -> Served {
        let mut c = self.command(env!("CARGO_BIN_EXE_keyfleet"));
        c.args(["vcard", "serve", "--state"])
            .arg(state)
            .args(["--vpcd", &self.vpcd()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        Served {
            child: c.spawn().expect("start keyfleet vcard serve"),
        }
    }
}

impl Drop for Pcscd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // The temp dir goes with us: show what pcscd said about the failing test.
            let log = self.log();
            let tail: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains("winscard_svc.c"))
                .rev()
                .take(60)
                .collect();
            eprintln!(
                "--- last lines of the private pcscd's log ---\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

/// A running `keyfleet vcard serve`; killed (card removed) and reaped on drop.
pub(crate) struct Served {
    child: Child,
}

impl Served {
    /// Waits for the process to end by itself (e.g. after an injected ejection).
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "vcard serve did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(mut c: Command) -> Run {
    let out = c.output().expect("run command");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
