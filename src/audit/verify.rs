//! Checking an audit log against its chain and its signed checkpoints. Pure: bytes in, a
//! verdict out.

use ecdsa::signature::Verifier as _;
use p256::pkcs8::DecodePublicKey as _;
use serde::{Deserialize, Serialize};

use super::{GENESIS_PREV, key_id, sha256_hex};

/// One line of the checkpoint file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// The last entry it covers.
    pub seq: u64,
    /// SHA-256 (hex) of that entry's line.
    pub hash: String,
    /// When it was signed (RFC 3339).
    pub time: String,
    /// SHA-256 (hex) of the signing key's SubjectPublicKeyInfo.
    pub key_id: String,
    /// ECDSA P-256 / SHA-256 signature over [`checkpoint_message`], DER, Base64.
    pub signature: String,
}

/// The bytes a checkpoint signs.
pub fn checkpoint_message(seq: u64, hash: &str, time: &str) -> String {
    format!("keyfleet-audit-checkpoint-v1\n{seq}\n{hash}\n{time}\n")
}

/// An intact log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Entries checked.
    pub entries: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// The last checkpoint's `seq` (0: none); entries after it are chained but not yet signed.
    pub last_checkpoint: u64,
}

/// The first place the log is not what was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit log broken at seq {seq}: {why}")]
pub struct Broken {
    /// The first entry that is changed, missing, out of order or not an entry.
    pub seq: u64,
    /// What is wrong there.
    pub why: String,
}

/// Checks `log` (the bytes of `log.jsonl`) and `checkpoints` (of `checkpoints.jsonl`) against
/// the public key `spki_der`: every line an entry, `seq` 1, 2, 3, ..., each `prev` the hash of
/// the line before, and every checkpoint signed by the key over the hash of the line it names.
/// A checkpoint past the last entry means the tail was cut.
pub fn verify(log: &[u8], checkpoints: &[u8], spki_der: &[u8]) -> Result<Verified, Broken> {
    let lines = split_lines(log).map_err(|n| Broken {
        seq: n,
        why: "the log ends in a partial line".into(),
    })?;
    // Hash of every line by seq (index seq - 1).
    let mut hashes: Vec<String> = Vec::with_capacity(lines.len());
    let mut prevs: Vec<String> = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let expected = i as u64 + 1;
        #[derive(Deserialize)]
        struct Head {
            seq: u64,
            prev: String,
        }
        let head: Head = serde_json::from_slice(line).map_err(|e| Broken {
            seq: expected,
            why: format!("line {expected} is not an audit entry ({e})"),
        })?;
        if head.seq != expected {
            return Err(Broken {
                seq: expected,
                why: if head.seq > expected {
                    format!(
                        "entry {expected} is missing (line {expected} is seq {})",
                        head.seq
                    )
                } else {
                    format!("line {expected} is seq {}, out of order", head.seq)
                },
            });
        }
        hashes.push(sha256_hex(line));
        prevs.push(head.prev);
    }
    // What the checkpoints say each line hashes to (only to tell which of two lines changed;
    // they are checked below).
    let signed_hash = |seq: u64| -> Option<String> {
        split_lines(checkpoints)
            .ok()?
            .iter()
            .filter_map(|l| serde_json::from_slice::<Checkpoint>(l).ok())
            .find(|c| c.seq == seq)
            .map(|c| c.hash)
    };
    // A line whose `prev` does not match: the line before was changed, or this one was (then
    // the next line, or a checkpoint of this one, does not match it either).
    for i in 0..lines.len() {
        let want = if i == 0 { GENESIS_PREV } else { &hashes[i - 1] };
        if prevs[i] != want {
            let this_changed = i == 0
                || match prevs.get(i + 1) {
                    Some(p) => *p != hashes[i],
                    None => signed_hash(i as u64 + 1).is_some_and(|h| h != hashes[i]),
                };
            let seq = if this_changed { i + 1 } else { i } as u64;
            return Err(Broken {
                seq,
                why: format!(
                    "entry {seq} was changed (the chain breaks at entry {})",
                    i + 1
                ),
            });
        }
    }
    let key = p256::ecdsa::VerifyingKey::from_public_key_der(spki_der).map_err(|e| Broken {
        seq: 0,
        why: format!("the public key is not a P-256 key ({e})"),
    })?;
    let our_id = key_id(spki_der);
    let cps = split_lines(checkpoints).map_err(|_| Broken {
        seq: hashes.len() as u64 + 1,
        why: "the checkpoint file ends in a partial line".into(),
    })?;
    let mut last = 0u64;
    for (i, line) in cps.iter().enumerate() {
        let cp: Checkpoint = serde_json::from_slice(line).map_err(|e| Broken {
            seq: last + 1,
            why: format!("checkpoint line {} is not a checkpoint ({e})", i + 1),
        })?;
        if cp.seq < last {
            return Err(Broken {
                seq: cp.seq,
                why: format!("checkpoint line {} goes back to seq {}", i + 1, cp.seq),
            });
        }
        if cp.key_id != our_id {
            return Err(Broken {
                seq: cp.seq,
                why: format!(
                    "checkpoint line {} was signed by key {}, not by this key ({our_id})",
                    i + 1,
                    cp.key_id
                ),
            });
        }
        let signature = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(&cp.signature)
                .ok()
                .and_then(|der| p256::ecdsa::Signature::from_der(&der).ok())
        };
        let signed = signature.is_some_and(|s| {
            key.verify(
                checkpoint_message(cp.seq, &cp.hash, &cp.time).as_bytes(),
                &s,
            )
            .is_ok()
        });
        if !signed {
            return Err(Broken {
                seq: cp.seq,
                why: format!("checkpoint line {} has a bad signature", i + 1),
            });
        }
        let Some(actual) = cp.seq.checked_sub(1).and_then(|i| hashes.get(i as usize)) else {
            let missing = hashes.len() as u64 + 1;
            return Err(Broken {
                seq: missing,
                why: format!(
                    "entries {missing} to {} are missing: a signed checkpoint covers them",
                    cp.seq
                ),
            });
        };
        if *actual != cp.hash {
            // The chain held, so the whole log from here was rewritten: find where the
            // signed state and this one part, at the latest at the checkpoint's entry.
            return Err(Broken {
                seq: cp.seq,
                why: format!(
                    "entry {} is not the one checkpoint line {} signed (the log was rewritten up to here)",
                    cp.seq,
                    i + 1
                ),
            });
        }
        last = cp.seq;
    }
    Ok(Verified {
        entries: hashes.len() as u64,
        checkpoints: cps.len() as u64,
        last_checkpoint: last,
    })
}

/// The lines of `bytes` without their newlines; `Err(n)` when the last of `n` lines has none.
fn split_lines(bytes: &[u8]) -> Result<Vec<&[u8]>, u64> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    // A final newline leaves one empty piece after it.
    match lines.pop() {
        Some([]) => Ok(lines),
        _ => Err(lines.len() as u64 + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditKey, AuditLog, NewEntry};

    struct Fixture {
        _dir: tempfile::TempDir,
        log: Vec<u8>,
        cps: Vec<u8>,
        spki: Vec<u8>,
    }

    /// `n` entries, checkpointed after `checkpoint_at` (if given) and at the end (if `last`).
    fn fixture(n: u32, checkpoint_at: &[u32], last: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let key = AuditKey::Software(
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
        );
        let spki = key.spki_der();
        let log = AuditLog::open(dir.path(), key).unwrap();
        let t = time::OffsetDateTime::now_utc();
        for i in 1..=n {
            log.append(
                NewEntry {
                    actor: "bob".into(),
                    kind: "revoke".into(),
                    target: format!("user-{i}"),
                    outcome: "done".into(),
                    details: serde_json::json!({"serials": [format!("{i:04X}")]}),
                },
                t,
            )
            .unwrap();
            if checkpoint_at.contains(&i) {
                log.checkpoint(t).unwrap();
            }
        }
        if last {
            log.checkpoint(t).unwrap();
        }
        Fixture {
            log: std::fs::read(dir.path().join("audit/log.jsonl")).unwrap(),
            cps: std::fs::read(dir.path().join("audit/checkpoints.jsonl")).unwrap_or_default(),
            spki,
            _dir: dir,
        }
    }

    fn lines(b: &[u8]) -> Vec<Vec<u8>> {
        split_lines(b)
            .unwrap()
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect()
    }

    fn join(lines: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for l in lines {
            out.extend_from_slice(l);
            out.push(b'\n');
        }
        out
    }

    fn broken_at(f: &Fixture, log: &[u8]) -> u64 {
        verify(log, &f.cps, &f.spki).unwrap_err().seq
    }

    #[test]
    fn an_intact_log_verifies() {
        let f = fixture(12, &[5], true);
        let v = verify(&f.log, &f.cps, &f.spki).unwrap();
        assert_eq!(
            v,
            Verified {
                entries: 12,
                checkpoints: 2,
                last_checkpoint: 12
            }
        );
        assert!(verify(b"", b"", &f.spki).is_ok());
    }

    #[test]
    fn one_changed_byte_is_found_at_its_entry() {
        let f = fixture(10, &[], true);
        for victim in [0usize, 3, 9] {
            let mut l = lines(&f.log);
            // Inside the target value: still valid JSON, different content.
            let pos = l[victim].windows(5).position(|w| w == b"user-").unwrap();
            l[victim][pos] = b'U';
            assert_eq!(
                broken_at(&f, &join(&l)),
                victim as u64 + 1,
                "entry {victim}"
            );
            // Inside its `prev`: the entry itself is the changed one.
            let mut l = lines(&f.log);
            let pos = l[victim]
                .windows(8)
                .position(|w| w == b"\"prev\":\"")
                .unwrap()
                + 8;
            l[victim][pos] = if l[victim][pos] == b'a' { b'b' } else { b'a' };
            assert_eq!(
                broken_at(&f, &join(&l)),
                victim as u64 + 1,
                "prev of {victim}"
            );
        }
    }

    #[test]
    fn a_removed_line_and_two_swapped_lines_are_found() {
        let f = fixture(8, &[], true);
        let mut l = lines(&f.log);
        l.remove(4);
        assert_eq!(broken_at(&f, &join(&l)), 5);
        let mut l = lines(&f.log);
        l.swap(2, 3);
        assert_eq!(broken_at(&f, &join(&l)), 3);
    }

    #[test]
    fn a_tail_cut_after_a_checkpoint_is_found() {
        let f = fixture(9, &[6], false);
        let mut l = lines(&f.log);
        // Cutting entries after the checkpoint is only an unsigned tail...
        l.truncate(7);
        assert!(verify(&join(&l), &f.cps, &f.spki).is_ok());
        // ...cutting into what a checkpoint signed is not.
        l.truncate(4);
        let e = verify(&join(&l), &f.cps, &f.spki).unwrap_err();
        assert_eq!(e.seq, 5, "{e}");
        assert!(e.why.contains("missing"), "{e}");
    }

    #[test]
    fn a_rewritten_chain_fails_its_checkpoint_and_a_forged_checkpoint_fails_its_signature() {
        let f = fixture(5, &[], true);
        // Rewrite entry 3 and re-chain everything after it: the chain holds, the checkpoint
        // does not.
        let mut l = lines(&f.log);
        let mut e: serde_json::Value = serde_json::from_slice(&l[2]).unwrap();
        e["outcome"] = "denied".into();
        l[2] = serde_json::to_vec(&e).unwrap();
        for i in 3..l.len() {
            let mut e: serde_json::Value = serde_json::from_slice(&l[i]).unwrap();
            e["prev"] = sha256_hex(&l[i - 1]).into();
            l[i] = serde_json::to_vec(&e).unwrap();
        }
        let e = verify(&join(&l), &f.cps, &f.spki).unwrap_err();
        assert_eq!(e.seq, 5, "{e}");
        // A new checkpoint over the rewritten head, signed by another key.
        let other = AuditKey::Software(
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
        );
        let mut cp: Checkpoint = serde_json::from_slice(&lines(&f.cps)[0]).unwrap();
        cp.hash = sha256_hex(l.last().unwrap());
        let sig = other
            .sign(checkpoint_message(cp.seq, &cp.hash, &cp.time).as_bytes())
            .unwrap();
        cp.signature = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(sig)
        };
        let forged = join(&[serde_json::to_vec(&cp).unwrap()]);
        let e = verify(&join(&l), &forged, &f.spki).unwrap_err();
        assert!(e.why.contains("bad signature"), "{e}");
        // The same forgery naming the other key's id is refused for the key.
        cp.key_id = key_id(&other.spki_der());
        let forged = join(&[serde_json::to_vec(&cp).unwrap()]);
        let e = verify(&join(&l), &forged, &f.spki).unwrap_err();
        assert!(e.why.contains("not by this key"), "{e}");
    }

    #[test]
    fn garbage_is_reported_not_panicked_on() {
        let f = fixture(2, &[], true);
        for log in [
            &b"\n"[..],
            b"{}\n",
            b"not json\n",
            b"{\"seq\":1}",
            b"\xff\xfe\n",
        ] {
            assert!(verify(log, &f.cps, &f.spki).is_err(), "{log:?}");
        }
        assert!(verify(&f.log, b"{\"seq\":1}\n", &f.spki).is_err());
        assert!(verify(&f.log, &f.cps, b"not a key").is_err());
    }
}
