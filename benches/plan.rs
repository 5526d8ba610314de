//! Planner benchmark (run by hand: `cargo bench --bench plan`).
//!
//! A synthetic organisation: 100,000 users in 2,000 groups, two assignments (every user gets a
//! 2-slot virtual credential; half of them also a 1-slot PIV credential), so 150,000
//! credentials and 250,000 certificates, all issued: the steady state a controller replans.
//! Prints the time to compute the desired state, to plan in full, and to replan after one
//! user's group membership changed (desired state and plan for the changed user only).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use keyfleet::desired::{self, Desired};
use keyfleet::inventory::{CardRecord, CardStatus, CertRecord, CertStatus, Inventory};
use keyfleet::observe::snapshot::{DirectoryGroup, DirectorySnapshot, DirectoryUser};
use keyfleet::plan::{self, PlanOptions, Planner, Presence, SafetyLimits};
use keyfleet::policy::model::CardType;

const USERS: usize = 100_000;
const GROUPS: usize = 2_000;

const POLICY: &str = r#"
apiVersion: keyfleet.dev/v1
kind: CertificateAuthority
metadata: {name: lab}
spec: {local: {subject: "CN=Bench CA"}}
---
apiVersion: keyfleet.dev/v1
kind: Directory
metadata: {name: people}
spec: {file: {path: people.yaml}}
---
apiVersion: keyfleet.dev/v1
kind: CardTemplate
metadata: {name: employee}
spec:
  cardType: virtual
  certificates:
    - {name: auth, slot: 9A, authority: lab, profile: piv-auth, keyAlgorithm: ecc-p256, subject: "CN=${user.cn},O=Example", subjectAltNames: [{email: "${user.mail}"}]}
    - {name: sign, slot: 9C, authority: lab, profile: piv-signature, keyAlgorithm: ecc-p256, subject: "CN=${user.cn},O=Example"}
---
apiVersion: keyfleet.dev/v1
kind: CardTemplate
metadata: {name: badge}
spec:
  cardType: piv
  certificates:
    - {name: auth, slot: 9A, authority: lab, profile: piv-auth, keyAlgorithm: ecc-p256, subject: "CN=${user.cn},OU=Badge,O=Example"}
---
apiVersion: keyfleet.dev/v1
kind: Assignment
metadata: {name: everyone}
spec: {directory: people, template: employee, groups: [{name: all, nested: true}]}
---
apiVersion: keyfleet.dev/v1
kind: Assignment
metadata: {name: badges}
spec: {directory: people, template: badge, groups: [{name: badge-holders, nested: true}]}
---
apiVersion: keyfleet.dev/v1
kind: CardStock
metadata: {name: virtual}
spec: {cardType: virtual, autoBind: true, virtual: {}}
---
apiVersion: keyfleet.dev/v1
kind: CardStock
metadata: {name: badges}
spec: {cardType: piv, autoBind: true, piv: {anyBlank: true}}
"#;

fn snapshot() -> DirectorySnapshot {
    let users = (0..USERS).map(|i| {
        let uid = format!("user{i:06}");
        DirectoryUser {
            mail: Some(format!("{uid}@example.org")),
            uid,
            dn: None,
            cn: format!("User {i}"),
            upn: None,
            disabled: false,
            attributes: BTreeMap::new(),
            stable_id: None,
        }
    });
    // 2,000 leaf groups, each user in one or two of them; group-0..999 nest into `all`,
    // and the even ones also into `badge-holders` (so half the users hold a badge).
    let mut members: Vec<Vec<String>> = vec![Vec::new(); GROUPS];
    for i in 0..USERS {
        let uid = format!("user{i:06}");
        members[i % GROUPS].push(uid.clone());
        if i % 3 == 0 {
            // A second group of the same parity, so badge holders stay exactly half.
            members[(i + 2 * (i % 7 + 1)) % GROUPS].push(uid);
        }
    }
    let names: Vec<String> = (0..GROUPS).map(|g| format!("group{g:05}")).collect();
    let all = ("all".to_string(), Vec::new(), names.clone());
    let badge = (
        "badge-holders".to_string(),
        Vec::new(),
        names.iter().step_by(2).cloned().collect(),
    );
    let groups = names
        .iter()
        .cloned()
        .zip(members)
        .map(|(name, m)| (name, m, Vec::new()))
        .chain([all, badge]);
    DirectorySnapshot::from_parts(users, groups)
}

/// The inventory after everything was issued: one card per credential, one certificate per
/// slot, each at its desired revision.
fn issued(d: &Desired, now: time::OffsetDateTime) -> Inventory {
    let mut inv = Inventory::default();
    for (n, ((user, template), cred)) in d.credentials.iter().enumerate() {
        let card = format!("card-{n:07}");
        inv.cards.insert(
            card.clone(),
            CardRecord {
                id: card.clone(),
                card_type: cred.card_type,
                stock: cred.stock.clone(),
                user: Some(user.clone()),
                template: Some(template.clone()),
                status: CardStatus::Active,
                created_at: now,
                updated_at: now,
                temporary: false,
            },
        );
        for (slot, want) in &cred.certificates {
            let serial = format!("{:016X}{}", n, slot.hex());
            inv.certs.insert(
                serial.clone(),
                CertRecord {
                    serial,
                    user: user.clone(),
                    card: card.clone(),
                    template: template.clone(),
                    name: want.name.clone(),
                    slot: *slot,
                    ca: want.authority.clone(),
                    profile: want.profile.clone(),
                    key_algorithm: want.key_algorithm,
                    subject: want.subject.to_string(),
                    sans: want.sans.clone(),
                    not_before: now,
                    not_after: now + time::Duration::days(365),
                    revision: want.revision.clone(),
                    status: CertStatus::Active,
                    installed: true,
                    request_id: String::new(),
                    enrolment: 0,
                    updated_at: now,
                    pem: String::new(),
                    key_id: None,
                },
            );
        }
    }
    inv
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("policy.yaml"), POLICY).expect("write policy");
    std::fs::write(dir.path().join("people.yaml"), "users: []\n").expect("write people");
    let policy = keyfleet::policy::load_policy_set(dir.path()).expect("valid policy");

    let t = Instant::now();
    let snap = snapshot();
    println!(
        "synthetic directory:            {:>9.1?}  ({USERS} users, {} groups)",
        t.elapsed(),
        snap.groups.len()
    );
    let observed: BTreeMap<String, desired::DirectoryObservation> =
        [("people".to_string(), Ok(snap.clone()))].into();

    let mut times = Vec::new();
    let mut d = Desired::default();
    for _ in 0..3 {
        drop(std::mem::take(&mut d));
        let t = Instant::now();
        d = desired::compute(&policy, &observed);
        times.push(t.elapsed());
    }
    let certs: usize = d.credentials.values().map(|c| c.certificates.len()).sum();
    println!(
        "desired state (full):           {:>9.1?}  ({} credentials, {certs} certificates)",
        median(times),
        d.credentials.len()
    );
    assert_eq!(
        d.credentials
            .values()
            .filter(|c| c.card_type == CardType::Piv)
            .count(),
        USERS / 2
    );

    let now = time::macros::datetime!(2026-11-28 12:00 UTC);
    let inv = issued(&d, now);
    let presence = Presence::default();
    let opts = PlanOptions {
        now,
        limits: SafetyLimits::default(),
        allow_mass_revocation: false,
        targets: None,
        threads: keyfleet::runtime::planning_threads(),
    };

    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let p = plan::plan(&d, &inv, &presence, &opts);
        times.push(t.elapsed());
        assert!(p.is_empty(), "steady state must plan nothing");
        drop(p);
    }
    println!("plan (full, index + rules):     {:>9.1?}", median(times));

    let t = Instant::now();
    let planner = Planner::new(&inv);
    println!("planner index (once per store): {:>9.1?}", t.elapsed());
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let p = planner.plan(&d, &presence, &opts);
        times.push(t.elapsed());
        assert!(p.is_empty());
    }
    println!("plan (full, prebuilt index):    {:>9.1?}", median(times));

    // One membership change: user000000 leaves every group (loses both credentials).
    let changed = "user000000".to_string();
    let mut snap2 = snap;
    let row = snap2.users.index_of(&changed).expect("user000000 exists");
    for g in snap2.groups.values_mut() {
        let rest = g.member_rows().iter().copied().filter(|r| *r != row);
        *g = DirectoryGroup::new(g.name.clone(), rest.collect(), g.groups.clone());
    }
    let observed2: BTreeMap<String, desired::DirectoryObservation> =
        [("people".to_string(), Ok(snap2))].into();
    let users: BTreeSet<String> = [changed].into();
    let mut times = Vec::new();
    let mut d2 = d;
    let mut p = None;
    for _ in 0..20 {
        // Updating the same users again is idempotent: every round does the full work.
        let t = Instant::now();
        desired::update_users(&mut d2, &policy, &observed2, &users);
        let o = PlanOptions {
            targets: Some(users.clone()),
            threads: keyfleet::runtime::planning_threads(),
            ..opts.clone()
        };
        p = Some(planner.plan(&d2, &presence, &o));
        times.push(t.elapsed());
    }
    let p = p.expect("ran");
    let kinds: Vec<&str> = p.actions.iter().map(|a| a.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["revoke", "retire", "revoke", "retire"],
        "{:?}",
        p.actions
    );
    println!(
        "replan after one change:        {:>9.1?}  (desired + plan for the changed user; {} actions)",
        median(times),
        p.actions.len()
    );
    let full = desired::compute(&policy, &observed2);
    assert_eq!(
        full, d2,
        "incremental desired state differs from a full computation"
    );
}
