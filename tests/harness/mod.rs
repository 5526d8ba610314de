//! Shared helpers for the integration tests: running the built `keyfleet` binary and writing
//! throwaway policy directories. Tests only; no assertions about specific features here.

#![allow(dead_code)]

/// Headless Chromium over WebDriver (chromedriver), for the portal's browser tests.
pub(crate) mod browser;
/// The Entrust CA Gateway emulator.
pub(crate) mod cagw_emulator;
/// A real `cfssl serve` on 127.0.0.1.
pub(crate) mod cfssl_server;
/// Controller tests: a running `keyfleet run`, polling, metrics parsing.
pub(crate) mod controller;
/// A test operator API (HTTPS requiring client certificates) for the operator client.
pub(crate) mod operator_api;
pub(crate) mod samba;
pub(crate) mod slapd;
/// SoftHSM2 with a private configuration (PKCS#11 tests).
pub(crate) mod softhsm;
pub(crate) mod testca;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A private pcscd with the vpcd reader and `keyfleet vcard serve`.
pub(crate) mod pcscd;

/// The result of one `keyfleet` run.
#[derive(Debug)]
pub(crate) struct Run {
    /// Exit code (`None` if killed by a signal).
    pub(crate) code: Option<i32>,
    /// Standard output.
    pub(crate) stdout: String,
    /// Standard error.
    pub(crate) stderr: String,
}

impl Run {
    /// Asserts the exit code and returns self for chaining.
    #[track_caller]
    pub(crate) fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Whether the run was killed at its `KEYFLEET_CRASH_AFTER_STEP` crash point (by SIGKILL:
    /// no exit code, and the crash point's line on stderr).
    pub(crate) fn crashed_at_crash_point(&self) -> bool {
        self.code.is_none() && self.stderr.contains("KEYFLEET_CRASH_AFTER_STEP=")
    }

    /// Asserts that stderr contains `needle`.
    #[track_caller]
    pub(crate) fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\nstderr:\n{}",
            self.stderr
        );
        self
    }

    /// Asserts that stdout contains `needle`.
    #[track_caller]
    pub(crate) fn stdout_has(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}\nstdout:\n{}",
            self.stdout
        );
        self
    }
}

/// Runs the built binary with `args`, in the repository root, with no inherited
/// `KEYFLEET_*` state settings.
pub(crate) fn keyfleet(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_keyfleet"))
        .args(args)
        .current_dir(repo_root())
        .env_remove("KEYFLEET_STATE_DIR")
        .output()
        .expect("run keyfleet binary");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs openssl; returns (success, stdout + stderr).
pub(crate) fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl must be installed (scripts/install-deps)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The repository root (where Cargo.toml is).
pub(crate) fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A temporary policy directory.
pub(crate) struct PolicyDir {
    dir: tempfile::TempDir,
}

impl PolicyDir {
    /// An empty directory.
    pub(crate) fn empty() -> Self {
        PolicyDir {
            dir: tempfile::tempdir().expect("create temp dir"),
        }
    }

    /// A small valid policy set (local CA, file directory, virtual-card template,
    /// assignment, stock) to which a test adds one bad file.
    pub(crate) fn valid() -> Self {
        let d = PolicyDir::empty();
        d.write("base.yaml", BASE);
        d.write("people.yaml", PEOPLE);
        d
    }

    /// Writes `text` to `name` (folders created).
    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        self.write_bytes(name, text.as_bytes())
    }

    /// Writes raw bytes to `name`.
    pub(crate) fn write_bytes(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create folder");
        }
        std::fs::write(&p, bytes).expect("write file");
        p
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `path/name` as text, the way diagnostics print it.
    pub(crate) fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Runs `keyfleet validate -C <dir>` plus `extra` arguments.
    pub(crate) fn validate(&self, extra: &[&str]) -> Run {
        let dir = self.dir.path().display().to_string();
        let mut args = vec!["validate", "-C", dir.as_str()];
        args.extend_from_slice(extra);
        keyfleet(&args)
    }
}

/// The valid base policy: every document on known lines.
pub(crate) const BASE: &str = "\
apiVersion: keyfleet.dev/v1
kind: CertificateAuthority
metadata:
  name: lab
spec:
  local:
    subject: CN=Lab CA,O=Example
---
apiVersion: keyfleet.dev/v1
kind: Directory
metadata:
  name: people
spec:
  file:
    path: people.yaml
---
apiVersion: keyfleet.dev/v1
kind: CardTemplate
metadata:
  name: employee
spec:
  cardType: virtual
  certificates:
    - name: auth
      slot: 9A
      authority: lab
      profile: piv-auth
      keyAlgorithm: ecc-p256
      subject: CN=${user.cn},O=Example
---
apiVersion: keyfleet.dev/v1
kind: Assignment
metadata:
  name: staff
spec:
  directory: people
  template: employee
  groups:
    - name: staff
---
apiVersion: keyfleet.dev/v1
kind: CardStock
metadata:
  name: virtual
spec:
  cardType: virtual
  autoBind: true
  virtual: {}
";

/// The base policy's directory data file.
pub(crate) const PEOPLE: &str = "\
users:
  - {uid: alice, cn: Alice, mail: alice@example.com}
groups:
  - {name: staff, members: [alice]}
";
