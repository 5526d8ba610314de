//! SoftHSM2 for tests: a private `SOFTHSM2_CONF` and token directory in a temp dir, tokens
//! made with `softhsm2-util`, `pkcs11-tool` and `keyfleet` run against that configuration.
//! A missing SoftHSM2 or OpenSC makes the test fail with the reason (install them with
//! `scripts/install-deps --test`).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::Run;

/// The SoftHSM2 module Debian installs.
pub(crate) const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The SO PIN test tokens get.
pub(crate) const SO_PIN: &str = "12345678";

/// A private SoftHSM2 installation.
pub(crate) struct SoftHsm {
    dir: tempfile::TempDir,
}

fn output(cmd: &mut Command, what: &str) -> Run {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {what} (scripts/install-deps --test installs it): {e}")
    });
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl SoftHsm {
    /// A fresh configuration with no tokens.
    pub(crate) fn new() -> Self {
        assert!(
            Path::new(MODULE).exists(),
            "SoftHSM2 is not installed ({MODULE} is missing): run scripts/install-deps --test"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("tokens")).expect("token dir");
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                dir.path().join("tokens").display()
            ),
        )
        .expect("write softhsm2.conf");
        SoftHsm { dir }
    }

    /// The temp dir (state dirs and files of the test can go here too).
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The configuration file.
    pub(crate) fn conf(&self) -> PathBuf {
        self.dir.path().join("softhsm2.conf")
    }

    /// The directory holding the token directories.
    pub(crate) fn token_dir(&self) -> PathBuf {
        self.dir.path().join("tokens")
    }

    /// Initialises a new token in the free slot; returns its serial.
    pub(crate) fn init_token(&self, label: &str, pin: &str) -> String {
        let run = output(
            Command::new("softhsm2-util")
                .env("SOFTHSM2_CONF", self.conf())
                .args(["--init-token", "--free", "--label", label])
                .args(["--so-pin", SO_PIN, "--pin", pin]),
            "softhsm2-util",
        );
        run.expect_code(0);
        self.serial_of(label)
            .unwrap_or_else(|| panic!("token {label} not listed after init"))
    }

    /// The serial of the token labelled `label`, if present.
    pub(crate) fn serial_of(&self, label: &str) -> Option<String> {
        let run = self.tool(&["-L"]);
        let mut current_label = None;
        for line in run.stdout.lines() {
            let line = line.trim();
            if let Some(l) = line.strip_prefix("token label") {
                current_label = Some(l.trim_start_matches([' ', ':']).trim().to_string());
            }
            if let Some(s) = line.strip_prefix("serial num")
                && current_label.as_deref() == Some(label)
            {
                return Some(s.trim_start_matches([' ', ':']).trim().to_string());
            }
        }
        None
    }

    /// Runs `pkcs11-tool --module <softhsm> ARGS`.
    pub(crate) fn tool(&self, args: &[&str]) -> Run {
        output(
            Command::new("pkcs11-tool")
                .env("SOFTHSM2_CONF", self.conf())
                .args(["--module", MODULE])
                .args(args),
            "pkcs11-tool (package opensc)",
        )
    }

    /// Runs the keyfleet binary with this SoftHSM2 configuration and `KEYFLEET_SO_PIN` set.
    pub(crate) fn keyfleet(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyfleet"));
        cmd.args(args)
            .current_dir(super::repo_root())
            .env_remove("KEYFLEET_STATE_DIR")
            .env_remove("KEYFLEET_CRASH_AFTER_STEP")
            .env("SOFTHSM2_CONF", self.conf())
            .env("KEYFLEET_SO_PIN", SO_PIN);
        for (k, v) in env {
            cmd.env(k, v);
        }
        output(&mut cmd, "keyfleet")
    }
}

/// Runs `openssl ARGS`.
pub(crate) fn openssl(args: &[&str]) -> Run {
    output(Command::new("openssl").args(args), "openssl")
}
