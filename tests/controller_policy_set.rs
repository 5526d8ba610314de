//! Issue 14 point 8: the controller never acts on half a policy commit. A `file` directory
//! whose data file lives inside the policy directory is part of the policy set: while the set
//! is invalid, a change of that data file takes no effect either, and it takes effect once the
//! set is fixed. A data file outside the policy directory is a directory source: it is followed
//! under the last valid policy even while the policy set is broken.

use std::path::Path;

use crate::harness::controller::{Controller, Site, certs_of, wait_with_log};

/// A people.yaml `text` with `uid` taken out of every group's `members: [...]` list.
fn people_without(text: &str, uid: &str) -> String {
    text.lines()
        .map(|line| match line.split_once("members: [") {
            Some((indent, rest)) => {
                let members = rest.trim_end().trim_end_matches(']');
                let kept: Vec<&str> = members.split(", ").filter(|m| *m != uid).collect();
                format!("{indent}members: [{}]\n", kept.join(", "))
            }
            None => format!("{line}\n"),
        })
        .collect()
}

/// The quickstart's people.yaml with `uid` added to the finance group.
fn people_with(text: &str, uid: &str) -> String {
    text.replacen(
        "groups:\n",
        &format!("  - {{uid: {uid}, cn: User {uid}, mail: {uid}@example.com}}\ngroups:\n"),
        1,
    )
    .replace(
        "members: [frank, grace, heidi, ivan]",
        &format!("members: [frank, grace, heidi, ivan, {uid}]"),
    )
}

/// `keyfleet <args>` on the site's state directory with the quickstart's own (valid) policy:
/// the read commands load a policy to find the state directory, and the site's policy set is
/// broken on purpose. They read the store through the controller's control socket.
fn read_state(site: &Site, args: &[&str]) -> Option<String> {
    let policy = crate::harness::repo_root().join("examples/quickstart");
    let state = site.state();
    let mut all = args.to_vec();
    all.extend([
        "--format",
        "json",
        "-C",
        policy.to_str().expect("utf-8 path"),
        "--state-dir",
        state.to_str().expect("utf-8 path"),
    ]);
    // Until the controller listens on its socket, the state directory is only "in use".
    let run = crate::harness::keyfleet(&all);
    (run.code == Some(0)).then_some(run.stdout)
}

/// The inventory as JSON, read while the site's policy set may be broken.
fn inventory(site: &Site) -> Option<serde_json::Value> {
    Some(serde_json::from_str(&read_state(site, &["inventory"])?).expect("inventory JSON"))
}

/// The number of the last pass the controller finished, if it reported one.
fn last_pass(site: &Site) -> Option<u64> {
    site.status()?["lastPass"]["number"].as_u64()
}

/// Waits until the controller has finished `n` more passes than it had when called.
fn wait_passes(site: &Site, ctl: &Controller, n: u64) {
    let start = wait_with_log(ctl, "a pass number", || last_pass(site));
    wait_with_log(ctl, &format!("{n} more passes after pass {start}"), || {
        last_pass(site).filter(|p| *p >= start + n)
    });
}

/// Replaces the file at `path` atomically (temp file in the same folder + rename), as editors
/// and `git checkout` do.
fn replace_file(path: &Path, text: &str) {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("file name");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename into place");
}

/// Appends a document the loader refuses (unknown kind) to the employee template.
fn break_template(site: &Site) -> String {
    let path = site.policy().join("templates/employee-virtual.yaml");
    let before = std::fs::read_to_string(&path).expect("read template");
    replace_file(
        &path,
        &format!(
            "{before}---\napiVersion: keyfleet.dev/v1\nkind: Nonsense\nmetadata: {{name: x}}\n"
        ),
    );
    before
}

#[test]
fn a_data_file_inside_the_policy_dir_changes_nothing_while_the_policy_set_is_invalid() {
    let site = Site::quickstart();
    // A resync every second: passes keep running while the set is broken, so a pass that
    // re-read the data file under the last valid policy would act on it.
    let ctl = site.start(&["--resync", "1"]);
    wait_with_log(&ctl, "the first pass to converge", || {
        (site.keyfleet(&["plan"]).code == Some(0)).then_some(())
    });
    let inv = inventory(&site).expect("inventory");
    assert_eq!(certs_of(&inv, "frank", "active").len(), 2);
    let history_before = read_state(&site, &["history"]).expect("history");

    // One edit (a half-finished commit): a broken document appended to a template, and frank
    // removed from the finance group in the policy directory's people.yaml.
    let template = break_template(&site);
    site.write(
        "people.yaml",
        &people_without(&site.read("people.yaml"), "frank"),
    );
    wait_with_log(&ctl, "the policy error to be reported", || {
        site.status().filter(|s| {
            s["policyError"]
                .as_str()
                .is_some_and(|e| e.contains("employee-virtual.yaml"))
        })
    });
    wait_passes(&site, &ctl, 3);

    // Nothing from the broken set took effect: frank's certificates are live in the inventory,
    // and no revocation was recorded.
    let inv = inventory(&site).expect("inventory");
    assert_eq!(
        certs_of(&inv, "frank", "active").len(),
        2,
        "frank was revoked from half a policy commit: {:?}\n{}",
        certs_of(&inv, "frank", "revoked"),
        ctl.log()
    );
    assert!(certs_of(&inv, "frank", "revoked").is_empty());
    let history = read_state(&site, &["history"]).expect("history");
    assert!(
        history == history_before,
        "nothing may be applied from an invalid policy set; history now:\n{history}"
    );

    // The set is fixed: the reload takes the data file with it and frank is revoked.
    replace_file(
        &site.policy().join("templates/employee-virtual.yaml"),
        &template,
    );
    wait_with_log(&ctl, "the policy error to clear", || {
        site.status().filter(|s| s["policyError"].is_null())
    });
    wait_with_log(&ctl, "frank's revocation after the fix", || {
        (certs_of(&inventory(&site)?, "frank", "revoked").len() == 2).then_some(())
    });
    let inv = inventory(&site).expect("inventory");
    assert!(certs_of(&inv, "frank", "active").is_empty(), "{inv}");
}

#[test]
fn a_data_file_outside_the_policy_dir_is_followed_under_a_broken_policy() {
    let site = Site::quickstart();
    // people.yaml moves out of the policy directory, next to it.
    let outside = site.policy().parent().expect("site dir").join("data");
    std::fs::create_dir_all(&outside).expect("mkdir data");
    let data = outside.join("people.yaml");
    std::fs::rename(site.policy().join("people.yaml"), &data).expect("move people.yaml");
    let directory = site.read("directory.yaml");
    site.write(
        "directory.yaml",
        &directory.replace("path: people.yaml", "path: ../data/people.yaml"),
    );
    let write_data = |text: &str| replace_file(&data, text);

    let ctl = site.start(&[]);
    wait_with_log(&ctl, "frank's certificates", || {
        (certs_of(&inventory(&site)?, "frank", "active").len() == 2).then_some(())
    });

    break_template(&site);
    wait_with_log(&ctl, "the policy error to be reported", || {
        site.status().filter(|s| !s["policyError"].is_null())
    });

    // The outside data file is a directory source: its changes are followed with the last
    // valid policy, while the policy set stays broken.
    let people = std::fs::read_to_string(&data).expect("read data");
    write_data(&people_with(&people, "zoe"));
    wait_with_log(
        &ctl,
        "zoe's certificates under the last valid policy",
        || (certs_of(&inventory(&site)?, "zoe", "active").len() == 2).then_some(()),
    );
    let people = std::fs::read_to_string(&data).expect("read data");
    write_data(&people_without(&people, "frank"));
    wait_with_log(
        &ctl,
        "frank's revocation under the last valid policy",
        || (certs_of(&inventory(&site)?, "frank", "revoked").len() == 2).then_some(()),
    );
    assert!(
        site.status().is_some_and(|s| !s["policyError"].is_null()),
        "the policy set is still broken"
    );
}
