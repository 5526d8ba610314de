//! The tamper-evident audit log through the real binary on a copy of the quickstart: every
//! applied action is in it, `audit-log verify` finds tampering at the right `seq`, and nothing
//! is done when the log cannot be written.

use serde_json::Value;

use crate::spine::Quickstart;

fn log_lines(q: &Quickstart) -> Vec<String> {
    std::fs::read_to_string(q.state.join("audit/log.jsonl"))
        .expect("audit log")
        .lines()
        .map(String::from)
        .collect()
}

fn write_lines(q: &Quickstart, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(q.state.join("audit/log.jsonl"), text).expect("write log");
}

/// `audit-log verify`'s verdict: `None` intact, else the seq it names.
fn broken_seq(q: &Quickstart) -> Option<u64> {
    let r = q.run(&["audit-log", "verify"]);
    match r.code {
        Some(0) => {
            assert!(r.stdout.contains("Audit log intact"), "{r:?}");
            None
        }
        Some(1) => {
            let rest = r
                .stdout
                .split("BROKEN at seq ")
                .nth(1)
                .unwrap_or_else(|| panic!("{r:?}"));
            Some(
                rest.split(':')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("{r:?}")),
            )
        }
        _ => panic!("{r:?}"),
    }
}

#[test]
fn applied_actions_are_logged_and_tampering_is_found_at_its_seq() {
    let q = Quickstart::new();
    q.run(&["apply", "--yes"]).expect_code(0);
    // Every certificate issued is named by a `done` entry of its action, after its `started`.
    let entries: Value = q.json(&["audit-log", "show", "--format", "json"]);
    let entries = entries.as_array().expect("entries");
    let inventory = q.inventory();
    let serials: Vec<&str> = inventory["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["serial"].as_str().unwrap())
        .collect();
    assert!(!serials.is_empty());
    for serial in &serials {
        let done = entries
            .iter()
            .position(|e| {
                e["outcome"] == "done"
                    && e["kind"] == "issue"
                    && e["details"]["serials"]
                        .as_array()
                        .is_some_and(|s| s.iter().any(|x| x == serial))
            })
            .unwrap_or_else(|| panic!("no done entry names {serial}"));
        let action = &entries[done]["details"]["action"];
        assert!(
            entries[..done]
                .iter()
                .any(|e| e["outcome"] == "started" && e["details"]["action"] == *action),
            "{action} logged done without started"
        );
    }
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1);
    }
    let n = entries.len() as u64;
    // The command signed its head when it ended.
    let r = q.run(&["audit-log", "verify"]);
    r.expect_code(0)
        .stdout_has(&format!("{n} entries"))
        .stdout_has(&format!("signed up to seq {n}"));
    let since_everything = q.json(&[
        "audit-log",
        "show",
        "--format",
        "json",
        "--since",
        "2999-01-01T00:00:00Z",
    ]);
    assert_eq!(since_everything, serde_json::json!([]));

    // A key kept apart verifies the same.
    let key = q.run(&["audit-log", "key"]);
    key.expect_code(0).stdout_has("BEGIN PUBLIC KEY");
    let pem = q.write_file("audit.pem", &key.stdout);
    q.run(&["audit-log", "verify", "--public-key", pem.to_str().unwrap()])
        .expect_code(0);

    let original = log_lines(&q);
    // One byte changed.
    let mut l = original.clone();
    l[4] = l[4].replacen("\"issue\"", "\"issuE\"", 1);
    assert_ne!(l[4], original[4]);
    write_lines(&q, &l);
    assert_eq!(broken_seq(&q), Some(5));
    // A line removed.
    let mut l = original.clone();
    l.remove(2);
    write_lines(&q, &l);
    assert_eq!(broken_seq(&q), Some(3));
    // Two lines swapped.
    let mut l = original.clone();
    l.swap(6, 7);
    write_lines(&q, &l);
    assert_eq!(broken_seq(&q), Some(7));
    // The tail cut after the checkpoint that signed it.
    let mut l = original.clone();
    l.truncate(l.len() - 3);
    write_lines(&q, &l);
    assert_eq!(broken_seq(&q), Some(n - 2));
    // Put back: intact again, and the next command chains on.
    write_lines(&q, &original);
    assert_eq!(broken_seq(&q), None);

    // A policy set that does not load does not stop an audit with the key kept apart.
    std::fs::write(q.policy.join("broken.yaml"), "kind: [unclosed\n").unwrap();
    q.run(&["validate"]).expect_code(1);
    let verify = ["audit-log", "verify", "--public-key", pem.to_str().unwrap()];
    q.run(&verify).expect_code(0).stdout_has("Audit log intact");
    let mut l = original;
    l.swap(1, 2);
    write_lines(&q, &l);
    q.run(&verify).expect_code(1).stdout_has("BROKEN at seq 2");
}

#[test]
fn nothing_is_done_when_the_audit_log_cannot_be_written() {
    let q = Quickstart::new();
    // The key exists, the log is where a file cannot be written.
    q.run(&["audit-log", "key"]).expect_code(0);
    std::fs::create_dir_all(q.state.join("audit/log.jsonl")).unwrap();
    let r = q.run(&["apply", "--yes"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        format!("{}{}", r.stdout, r.stderr).contains("audit log"),
        "{r:?}"
    );
    // Nothing was issued: no certificate recorded, no card made.
    std::fs::remove_dir(q.state.join("audit/log.jsonl")).unwrap();
    let inventory = q.inventory();
    assert_eq!(
        inventory["certificates"],
        serde_json::json!([]),
        "{inventory:#}"
    );
    assert_eq!(inventory["cards"], serde_json::json!([]), "{inventory:#}");
}

#[test]
fn signing_a_crl_by_hand_is_in_the_audit_log_and_not_done_without_it() {
    let q = Quickstart::new();
    let r = q.run(&["ca", "crl", "quickstart-ca"]);
    r.expect_code(0).stdout_has("BEGIN X509 CRL");
    let entries: Value = q.json(&["audit-log", "show", "--format", "json"]);
    let kinds: Vec<(String, String, String)> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let f = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (f("kind"), f("target"), f("outcome"))
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("sign-crl".into(), "quickstart-ca".into(), "started".into()),
            ("sign-crl".into(), "quickstart-ca".into(), "done".into()),
        ]
    );
    // The log cannot be written: no CRL is signed.
    let log = q.state.join("audit/log.jsonl");
    std::fs::remove_file(&log).unwrap();
    std::fs::create_dir(&log).unwrap();
    let r = q.run(&["ca", "crl", "quickstart-ca"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(!r.stdout.contains("BEGIN X509 CRL"), "{r:?}");
    assert!(r.stderr.contains("audit log"), "{r:?}");
}
