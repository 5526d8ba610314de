//! Enrolment throughput of the Entrust CA Gateway connector against the emulator with
//! injected latency, run by hand: `cargo bench --bench cagw` (optionally
//! `-- <enrolments> <latency-ms> <concurrency>...`, default `500 50 1 8 16 32`). Under
//! `cargo test --all-targets` it only makes a quick smoke run.
//!
//! The emulator runs in a child process (this same binary, started with
//! `KF_BENCH_EMULATOR=1`) so that the CPU time measured is Keyfleet's alone: TLS, JSON,
//! certificate decoding and the request log. CSRs are made before the clock starts.
//! Reports, per concurrency c: wall time, throughput, the ideal c / latency, the ratio, and
//! the CPU time this process spent per enrolment.

#[path = "../tests/harness/cagw_emulator.rs"]
#[allow(unreachable_pub)]
mod cagw_emulator;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keyfleet::ca::EnrollRequest;
use keyfleet::ca::entrust::{EntrustGateway, GatewayConfig};
use keyfleet::ca::remote::{RetryPolicy, load_pem_certificates, load_pem_identity};
use keyfleet::names::DistinguishedName;

/// CPU time (user + system) of this process, from /proc (clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn child() {
    let em = cagw_emulator::Emulator::start();
    let ms: u64 = std::env::var("KF_BENCH_LATENCY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    em.set_latency(Duration::from_millis(ms));
    println!("{} {}", em.url(), em.dir().display());
    // Serve until the parent closes our stdin.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    em.stop();
}

fn main() {
    if std::env::var("KF_BENCH_EMULATOR").is_ok() {
        child();
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it:
    // then only a quick smoke run (20 enrolments, 5 ms, concurrency 4) keeps the suite fast.
    let benching = std::env::args().any(|a| a == "--bench");
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (n, latency, levels): (usize, u64, Vec<usize>) = if !benching {
        (20, 5, vec![4])
    } else {
        (
            args.first().copied().unwrap_or(500) as usize,
            args.get(1).copied().unwrap_or(50),
            if args.len() > 2 {
                args[2..].iter().map(|v| *v as usize).collect()
            } else {
                vec![1, 8, 16, 32]
            },
        )
    };
    let mut kid = Command::new(std::env::current_exe().expect("own path"))
        .env("KF_BENCH_EMULATOR", "1")
        .env("KF_BENCH_LATENCY_MS", latency.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the emulator process");
    let mut line = String::new();
    BufReader::new(kid.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("emulator address");
    let (url, dir) = line.trim().split_once(' ').expect("url and dir");
    let dir = std::path::PathBuf::from(dir);

    println!("enrolments={n} latency={latency}ms (emulator in a separate process)");
    println!(
        "{:>5} {:>6} {:>9} {:>9} {:>9} {:>7} {:>12}",
        "conc", "n", "wall s", "enrol/s", "ideal/s", "ratio", "CPU ms/enrol"
    );
    for &c in &levels {
        // Concurrency 1 at 50 ms takes n * 50 ms: fewer enrolments keep it short.
        let count = if c == 1 { n.min(100) } else { n };
        let log = tempfile::tempdir().expect("log dir");
        let gw = EntrustGateway::new(GatewayConfig {
            url: url.to_string(),
            ca_id: cagw_emulator::CA_ID.into(),
            trust: load_pem_certificates(&dir.join("trust-bundle.pem")).expect("trust"),
            identity: load_pem_identity(&dir.join("client.pem"), &dir.join("client-key.pem"))
                .expect("identity"),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            max_concurrency: c,
            request_log: Some(log.path().to_path_buf()),
        })
        .expect("connector");
        let subject = DistinguishedName::parse("CN=Bench User,O=Example").expect("dn");
        let reqs: Vec<EnrollRequest> = (0..count)
            .map(|i| {
                let key =
                    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
                let csr = rcgen::CertificateParams::default()
                    .serialize_request(&key)
                    .expect("csr");
                EnrollRequest {
                    request_id: format!("kf-bench-{c}-{i}"),
                    csr_der: csr.der().to_vec(),
                    profile: "piv-auth".into(),
                    subject: subject.clone(),
                    sans: Vec::new(),
                    validity_secs: 86400,
                }
            })
            .collect();
        // Warm the profile cache and the connection pool.
        let _ = gw.get_profile("piv-auth");
        let cpu0 = cpu_time();
        let t0 = Instant::now();
        let results = gw.enroll_many(reqs);
        let wall = t0.elapsed();
        let cpu = cpu_time().saturating_sub(cpu0);
        let failed = results.iter().filter(|r| r.is_err()).count();
        assert_eq!(
            failed,
            0,
            "enrolments failed: {:?}",
            results.iter().find(|r| r.is_err())
        );
        let rate = count as f64 / wall.as_secs_f64();
        let ideal = c as f64 / (latency as f64 / 1000.0);
        println!(
            "{:>5} {:>6} {:>9.2} {:>9.1} {:>9.1} {:>6.0}% {:>12.2}",
            c,
            count,
            wall.as_secs_f64(),
            rate,
            ideal,
            100.0 * rate / ideal,
            cpu.as_secs_f64() * 1000.0 / count as f64
        );
    }
    drop(kid.stdin.take());
    let _ = kid.wait();
}
