//! Fuzz target: the policy loader (size cap, UTF-8, YAML alias/node/depth budget, schemas,
//! typed objects, semantic checks) must answer any file with diagnostics, never panic, and
//! stay within its budgets. The input is one policy file, loaded as a policy directory.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

/// One policy directory per fuzzing process (in memory when /dev/shm exists).
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let d = base.join(format!("keyfleet-fuzz-policy-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("policy directory");
        d
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    std::fs::write(dir().join("policy.yaml"), data).expect("write policy file");
    let _ = keyfleet::policy::load::load_policy_set(dir());
});
