//! `file` directory reader benchmark (run by hand: `cargo bench --bench directory`).
//!
//! Writes a synthetic directory file (100,000 users with dn, mail, upn and two attributes;
//! 2,000 groups of 50 members, every tenth group nesting the next one) straight to disk, so
//! the file never sits in this process's memory before the reader runs. Then reads it with
//! `read_file_directory` and prints the parse time and the peak resident set size (VmHWM from
//! /proc/self/status) against the resident size before the read and with the snapshot held.
//! Last, the time to read the file and run saphyr-parser over it without building anything:
//! the floor for any reader built on that parser. It measures; it asserts only that the
//! snapshot has the expected size.

use std::io::{BufWriter, Write};
use std::time::Instant;

use keyfleet::observe::directory::read_file_directory;

const USERS: usize = 100_000;
const GROUPS: usize = 2_000;
const MEMBERS_PER_GROUP: usize = 50;

fn write_directory(path: &std::path::Path) -> std::io::Result<()> {
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    writeln!(w, "users:")?;
    for i in 0..USERS {
        writeln!(w, "  - uid: user{i:06}")?;
        writeln!(w, "    cn: \"User {i}, Example\"")?;
        writeln!(w, "    mail: user{i:06}@example.org")?;
        writeln!(w, "    upn: user{i:06}@corp.example.org")?;
        writeln!(w, "    dn: \"uid=user{i:06},ou=people,dc=example,dc=org\"")?;
        if i % 97 == 0 {
            writeln!(w, "    disabled: true")?;
        }
        writeln!(
            w,
            "    attributes: {{employeeNumber: {i}, department: dept{}}}",
            i % 40
        )?;
    }
    writeln!(w, "groups:")?;
    for g in 0..GROUPS {
        write!(w, "  - name: group{g:04}\n    members: [")?;
        for m in 0..MEMBERS_PER_GROUP {
            let uid = (g * MEMBERS_PER_GROUP + m) % USERS;
            let sep = if m == 0 { "" } else { ", " };
            write!(w, "{sep}user{uid:06}")?;
        }
        writeln!(w, "]")?;
        if g % 10 == 0 && g + 1 < GROUPS {
            writeln!(w, "    groups: [group{:04}]", g + 1)?;
        }
    }
    w.flush()
}

/// A `kB` figure from /proc/self/status, in MiB.
fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("people.yaml");
    write_directory(&path).expect("write directory file");
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "directory file:        {:.1} MiB ({USERS} users, {GROUPS} groups of {MEMBERS_PER_GROUP})",
        bytes as f64 / (1024.0 * 1024.0)
    );
    let rss_before = status_mib("VmRSS");
    let hwm_before = status_mib("VmHWM");

    let t = Instant::now();
    let snap = read_file_directory(&path).expect("the synthetic directory is valid");
    let first = t.elapsed();
    let hwm = status_mib("VmHWM");
    let rss_held = status_mib("VmRSS");
    assert_eq!(snap.users.len(), USERS);
    assert_eq!(snap.groups.len(), GROUPS);

    println!("parse (first read):    {first:>9.1?}");
    println!("RSS before the read:   {rss_before:>7.1} MiB (peak so far {hwm_before:.1} MiB)");
    println!("peak RSS (VmHWM):      {hwm:>7.1} MiB");
    println!("RSS with snapshot:     {rss_held:>7.1} MiB");
    println!(
        "peak beyond snapshot:  {:>7.1} MiB",
        hwm - rss_held.max(rss_before)
    );
    drop(snap);

    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let snap = read_file_directory(&path).expect("the synthetic directory is valid");
        times.push(t.elapsed());
        drop(snap);
    }
    times.sort();
    println!(
        "parse (3 more reads):  {:>9.1?} best, {:.1?} worst",
        times[0], times[2]
    );

    // The floor: reading the file and running saphyr-parser over it, building nothing.
    let t = Instant::now();
    let text = std::fs::read_to_string(&path).expect("read directory file");
    let events = saphyr_parser::Parser::new_from_str(&text).count();
    println!(
        "read + YAML events:    {:>9.1?} ({events} events, nothing built)",
        t.elapsed()
    );
}
