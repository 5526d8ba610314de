//! The observation cache against a loaded policy set: a data file inside the policy directory
//! is observed as read with its set (until the set is swapped by a successful reload); one
//! outside is followed as it changes.

use super::ObservationCache;
use crate::runtime::{self, Environment};

const DIRECTORIES: &str = "apiVersion: keyfleet.dev/v1\nkind: Directory\nmetadata: {name: people}\nspec:\n  file: {path: people.yaml}\n---\napiVersion: keyfleet.dev/v1\nkind: Directory\nmetadata: {name: hr}\nspec:\n  file: {path: ../data/hr.yaml}\n";

fn people(uids: &[&str]) -> String {
    let users: String = uids
        .iter()
        .map(|u| format!("  - {{uid: {u}, cn: {u}}}\n"))
        .collect();
    format!("users:\n{users}groups: []\n")
}

fn users(cache: &mut ObservationCache, env: &Environment, name: &str) -> usize {
    match cache.observe(env).get(name) {
        Some(Ok(snapshot)) => snapshot.users.len(),
        other => panic!("directory {name}: {other:?}"),
    }
}

#[test]
fn in_policy_data_is_pinned_to_its_set_and_outside_data_is_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = tmp.path().join("policy");
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&policy).unwrap();
    std::fs::create_dir_all(tmp.path().join("data")).unwrap();
    std::fs::write(policy.join("directories.yaml"), DIRECTORIES).unwrap();
    std::fs::write(policy.join("people.yaml"), people(&["alice", "bob"])).unwrap();
    std::fs::write(tmp.path().join("data/hr.yaml"), people(&["carol"])).unwrap();

    let env = runtime::load(&policy, Some(&state)).unwrap();
    let mut cache = ObservationCache::default();
    assert_eq!(users(&mut cache, &env, "people"), 2);
    assert_eq!(users(&mut cache, &env, "hr"), 1);
    let pinned = ObservationCache::fingerprint(&env, "people");

    // Both data files change on disk, and the policy set is broken in the same edit.
    std::fs::write(policy.join("people.yaml"), people(&["alice"])).unwrap();
    std::fs::write(
        tmp.path().join("data/hr.yaml"),
        people(&["carol", "dan", "eve"]),
    )
    .unwrap();
    std::fs::write(policy.join("broken.yaml"), "kind: Nonsense\n").unwrap();
    assert!(runtime::load(&policy, Some(&state)).is_err());
    // The last valid set stays in force with its own data text; the outside file is followed.
    assert_eq!(users(&mut cache, &env, "people"), 2);
    assert_eq!(users(&mut cache, &env, "hr"), 3);
    assert!(!cache.changed(&env, "people"));
    assert_eq!(ObservationCache::fingerprint(&env, "people"), pinned);
    cache.invalidate_all();
    assert_eq!(
        users(&mut cache, &env, "people"),
        2,
        "a resync reads the set's text"
    );

    // Fixed: the new set comes with the new text (the swap a successful reload makes).
    std::fs::remove_file(policy.join("broken.yaml")).unwrap();
    let fixed = runtime::load(&policy, Some(&state)).unwrap();
    cache.clear();
    assert_eq!(users(&mut cache, &fixed, "people"), 1);
    assert_eq!(users(&mut cache, &fixed, "hr"), 3);
    assert_ne!(ObservationCache::fingerprint(&fixed, "people"), pinned);
}
