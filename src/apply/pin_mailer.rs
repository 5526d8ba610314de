//! The PIN mailer: the holder's first PIN, written 0600 in a 0700 folder under a file name
//! no uid can turn into a path.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use super::ApplyError;

/// The file name of a PIN mailer: `<uid>-<card>.txt`, with every byte outside
/// `[A-Za-z0-9._-]` hex-escaped as `%XX`, so no uid can climb directories or hide the file.
pub fn pin_mailer_name(user: &str, card: &str) -> String {
    fn safe(s: &str) -> String {
        let mut out = String::new();
        for (i, b) in s.bytes().enumerate() {
            let ok = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
            if ok {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        if out.is_empty() {
            out.push_str("%00");
        }
        out
    }
    format!("{}-{}.txt", safe(user), safe(card))
}

pub(crate) fn write_pin_mailer(
    dir: &Path,
    user: &str,
    card: &str,
    pin: &str,
) -> Result<(), ApplyError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ApplyError::PinMailer { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err(dir))?;
    let path = dir.join(pin_mailer_name(user, card));
    let body = format!(
        "Keyfleet PIN mailer\nUser: {user}\nCard: {card}\nPIN: {pin}\n\nKeep this PIN secret. Change it at first use.\n"
    );
    crate::fsutil::write_atomic(&path, body.as_bytes(), 0o600).map_err(err(&path))
}

/// Writes `body` to `dir/name`, 0600 in a 0700 folder (created); returns the path.
pub(crate) fn write_private(
    dir: &Path,
    name: &str,
    body: &str,
) -> Result<std::path::PathBuf, ApplyError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ApplyError::PinMailer { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err(dir))?;
    let path = dir.join(name);
    crate::fsutil::write_atomic(&path, body.as_bytes(), 0o600).map_err(err(&path))?;
    Ok(path)
}

/// Writes the unblock code (the card's PUK) released to `operator` for an approved request,
/// 0600 in the PIN-mailer folder (0700): `unblock-code-<operator>-<card>.txt`. Returns its
/// path.
pub(crate) fn write_unblock_code(
    dir: &Path,
    operator: &str,
    holder: &str,
    card: &str,
    puk: &str,
) -> Result<std::path::PathBuf, ApplyError> {
    let body = format!(
        "Keyfleet unblock code\nFor: {operator}\nHolder: {holder}\nCard: {card}\nPUK: {puk}\n\n\
         Give it to the holder only; it unblocks the PIN once (e.g. `yubico-piv-tool -a \
         unblock-pin`). Keyfleet replaces it at the card's next contact.\n"
    );
    write_private(
        dir,
        &pin_mailer_name(&format!("unblock-code-{operator}"), card),
        &body,
    )
}

#[cfg(test)]
mod tests {
    use super::pin_mailer_name;

    #[test]
    fn pin_mailer_names_are_safe_for_any_uid() {
        assert_eq!(pin_mailer_name("alice", "vc-01ab"), "alice-vc-01ab.txt");
        for uid in [
            "../../etc/passwd",
            "/abs",
            ".hidden",
            "a/b",
            "*)(uid=*",
            "ö",
            "",
            "a\nb",
            "a b",
        ] {
            let name = pin_mailer_name(uid, "vc-1");
            assert!(
                !name.contains('/') && !name.starts_with('.'),
                "{uid:?} -> {name}"
            );
            assert!(
                name.chars().all(|c| c.is_ascii_graphic()),
                "{uid:?} -> {name}"
            );
            assert!(name.ends_with("-vc-1.txt"));
        }
        // Distinct uids never share a file.
        assert_ne!(pin_mailer_name("a/b", "c"), pin_mailer_name("a%2Fb", "c"));
    }
}
