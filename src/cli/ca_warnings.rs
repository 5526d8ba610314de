//! The warnings `validate` and `plan` give for local CAs that exist already: a `subject`,
//! `keyAlgorithm` or `validity` changed in policy only applies to a new CA. The certificate
//! facts are read from the state directory (read only; nothing is created); the comparison is
//! [`crate::policy::ca_changes::creation_only_warnings`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::ca::local_facts::existing_ca_facts;
use crate::policy::load::Locations;
use crate::policy::model::{CertificateAuthoritySpec, Kind};
use crate::policy::{Diagnostic, PolicySet, codes};

/// The state directory as `apply` resolves it: `--state-dir` / `KEYFLEET_STATE_DIR`, else
/// `Settings.spec.stateDir`, else `<policy dir>/.keyfleet`.
pub(crate) fn state_dir_of(set: &PolicySet, policy_dir: &Path, over: Option<&Path>) -> PathBuf {
    match (over, &set.settings.spec.state_dir) {
        (Some(dir), _) => dir.to_path_buf(),
        (None, Some(dir)) => set.settings.resolve_path(dir),
        (None, None) => policy_dir.join(crate::runtime::DEFAULT_STATE_DIR),
    }
}

/// A warning per creation-only field of each existing local CA that the policy changed; a CA
/// certificate that cannot be read is a warning too (the comparison could not be made).
pub(crate) fn local_ca_warnings(
    set: &PolicySet,
    locations: Option<&Locations>,
    state_dir: &Path,
) -> Vec<Diagnostic> {
    let mut facts = BTreeMap::new();
    let mut out = Vec::new();
    for (name, ca) in &set.authorities {
        if !matches!(ca.spec, CertificateAuthoritySpec::Local(_)) {
            continue;
        }
        match existing_ca_facts(&state_dir.join("ca").join(name)) {
            Ok(Some(f)) => {
                facts.insert(name.clone(), f);
            }
            Ok(None) => {}
            Err(e) => out.push(
                Diagnostic::error(
                    codes::APPLIES_TO_NEW_CA,
                    &ca.file,
                    ca.line,
                    format!("cannot compare with the existing local CA `{name}`: {e}"),
                )
                .for_object(Some(Kind::CertificateAuthority.as_str()), Some(name))
                .warning(),
            ),
        }
    }
    out.extend(crate::policy::ca_changes::creation_only_warnings(
        set, locations, &facts,
    ));
    out
}
