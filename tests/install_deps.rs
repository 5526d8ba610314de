//! Issue 14, point 9: `scripts/install-deps` put a policy-rc.d in place (so that package
//! scripts start no service) and left it behind, so no service installed later on the
//! user's machine started by itself. The script runs here against fakes on PATH
//! (`dpkg-query` reporting every package missing, `debconf-set-selections`, and an
//! `apt-get` that records whether the deny-all policy-rc.d is in force and then succeeds or
//! fails), with the policy-rc.d path moved into a temp dir by `KEYFLEET_TEST_POLICY_RC_D`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    /// Fakes on PATH; `apt-get install` exits `install_status`.
    fn new(install_status: u8) -> Fake {
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("bin");
        let rc = dir.path().join("policy-rc.d");
        let log = dir.path().join("apt.log");
        let scripts = [
            ("dpkg-query", "#!/bin/sh\nexit 1\n".to_string()),
            (
                "debconf-set-selections",
                "#!/bin/sh\ncat >/dev/null\n".to_string(),
            ),
            (
                "apt-get",
                format!(
                    "#!/bin/sh\n\
                     if [ \"$1\" = install ] || [ \"$2\" = install ] || echo \"$@\" | grep -q install; then\n\
                       if [ -x '{rc}' ]; then '{rc}' start; echo \"install policy-rc.d=$?\" >>'{log}'; \
                       else echo 'install policy-rc.d=absent' >>'{log}'; fi\n\
                       exit {install_status}\n\
                     fi\n\
                     exit 0\n",
                    rc = rc.display(),
                    log = log.display()
                ),
            ),
        ];
        for (name, text) in scripts {
            let path = bin.join(name);
            std::fs::write(&path, text).expect("fake");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        Fake { dir }
    }

    fn rc(&self) -> PathBuf {
        self.dir.path().join("policy-rc.d")
    }

    /// Runs `scripts/install-deps --test`; returns its exit code.
    fn run(&self) -> Option<i32> {
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let script = crate::harness::repo_root().join("scripts/install-deps");
        let out = Command::new("bash")
            .arg(&script)
            .arg("--test")
            .env("PATH", path)
            .env("KEYFLEET_TEST_POLICY_RC_D", self.rc())
            .stdin(Stdio::null())
            .output()
            .expect("run install-deps");
        out.status.code()
    }

    fn apt_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("apt.log")).unwrap_or_default()
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn install_deps_removes_the_policy_rc_d_it_created_also_when_apt_fails() {
    for status in [0u8, 100] {
        let fake = Fake::new(status);
        let code = fake.run();
        assert_eq!(code, Some(i32::from(status)), "apt-get exit {status}");
        assert_eq!(
            fake.apt_log(),
            "install policy-rc.d=101\n",
            "services are denied while packages install"
        );
        assert!(
            !fake.rc().exists(),
            "the policy-rc.d it created is gone (apt-get exit {status})"
        );
    }
}

#[test]
fn install_deps_puts_back_an_existing_policy_rc_d_also_when_apt_fails() {
    for status in [0u8, 100] {
        let fake = Fake::new(status);
        let original = "#!/bin/sh\n# the site's own policy\nexit 0\n";
        std::fs::write(fake.rc(), original).expect("write policy-rc.d");
        std::fs::set_permissions(fake.rc(), std::fs::Permissions::from_mode(0o750)).expect("chmod");
        assert_eq!(fake.run(), Some(i32::from(status)));
        assert_eq!(fake.apt_log(), "install policy-rc.d=101\n");
        assert_eq!(
            std::fs::read_to_string(fake.rc()).expect("policy-rc.d is back"),
            original
        );
        assert_eq!(mode(&fake.rc()), 0o750);
    }
}
