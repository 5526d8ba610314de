//! Harness for the controller tests: a copy of examples/quickstart in a temp dir, a running
//! `keyfleet run` child (killed on drop), polling with a generous timeout, a plain HTTP GET,
//! and a strict parser of the Prometheus / OpenMetrics text exposition.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{Run, repo_root};

/// How long any condition may take to become true.
pub(crate) const PATIENCE: Duration = Duration::from_secs(90);

/// Polls `cond` every 100 ms until it returns `Some`, or panics after [`PATIENCE`] with `what`.
#[track_caller]
pub(crate) fn wait_for<T>(what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "timed out after {PATIENCE:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Like [`wait_for`], but a timeout shows the controller's log.
#[track_caller]
pub(crate) fn wait_with_log<T>(
    ctl: &Controller,
    what: &str,
    mut cond: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "timed out after {PATIENCE:?} waiting for {what}; controller log:\n{}",
            ctl.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A copy of the quickstart with its own state directory.
pub(crate) struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    /// Copies examples/quickstart into a temp dir.
    pub(crate) fn quickstart() -> Site {
        let dir = tempfile::tempdir().expect("temp dir");
        copy_dir(&repo_root().join("examples/quickstart"), dir.path());
        Site { dir }
    }

    /// The policy directory.
    pub(crate) fn policy(&self) -> PathBuf {
        self.dir.path().join("policy")
    }

    /// The state directory.
    pub(crate) fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Writes a file of the policy directory atomically (temp file + rename), as editors and
    /// `git checkout` do.
    pub(crate) fn write(&self, name: &str, text: &str) {
        let path = self.policy().join(name);
        let tmp = self.policy().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write temp file");
        std::fs::rename(&tmp, &path).expect("rename into place");
    }

    /// Reads a file of the policy directory.
    pub(crate) fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.policy().join(name)).expect("read policy file")
    }

    /// Runs `keyfleet <args> -C <policy> --state-dir <state>`.
    pub(crate) fn keyfleet(&self, args: &[&str]) -> Run {
        let out = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run keyfleet");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `keyfleet <args> -C <policy> --state-dir <state>` under the file-creation mask
    /// `umask` (set by a shell that then execs keyfleet).
    pub(crate) fn keyfleet_with_umask(&self, umask: &str, args: &[&str]) -> Run {
        let plain = self.command(args);
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(plain.get_program())
            .args(plain.get_args())
            .env_remove("KEYFLEET_STATE_DIR")
            .env_remove("KEYFLEET_CRASH_AFTER_STEP")
            .env_remove("KEYFLEET_OPERATOR")
            .stdin(Stdio::null());
        let out = c.output().expect("run keyfleet under sh");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts `keyfleet run` with `extra` arguments under the file-creation mask `umask`.
    pub(crate) fn start_with_umask(&self, umask: &str, extra: &[&str]) -> Controller {
        let log = self.dir.path().join("run-umask.log");
        let file = std::fs::File::create(&log).expect("log file");
        let mut args = vec!["run"];
        args.extend_from_slice(extra);
        let plain = self.command(&args);
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(plain.get_program())
            .args(plain.get_args())
            .env_remove("KEYFLEET_STATE_DIR")
            .env_remove("KEYFLEET_CRASH_AFTER_STEP")
            .env_remove("KEYFLEET_OPERATOR")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log"))
            .stderr(file)
            .spawn()
            .expect("start keyfleet run under sh");
        Controller {
            child: Some(child),
            log,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_keyfleet"));
        c.args(args)
            .arg("-C")
            .arg(self.policy())
            .arg("--state-dir")
            .arg(self.state())
            .env_remove("KEYFLEET_STATE_DIR")
            .env_remove("KEYFLEET_CRASH_AFTER_STEP")
            .env_remove("KEYFLEET_OPERATOR");
        c
    }

    /// Starts `keyfleet run` with `extra` arguments; its log goes to `<tmp>/run-N.log`.
    pub(crate) fn start(&self, extra: &[&str]) -> Controller {
        let n = std::fs::read_dir(self.dir.path())
            .map(|d| d.count())
            .unwrap_or(0);
        let log = self.dir.path().join(format!("run-{n}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut args = vec!["run"];
        args.extend_from_slice(extra);
        let child = self
            .command(&args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log"))
            .stderr(file)
            .spawn()
            .expect("start keyfleet run");
        Controller {
            child: Some(child),
            log,
        }
    }

    /// The names in the state directory (top level), sorted.
    pub(crate) fn state_file_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.state())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The inventory as JSON (`keyfleet inventory --format json`), asserting exit 0.
    pub(crate) fn inventory(&self) -> serde_json::Value {
        let run = self.keyfleet(&["inventory", "--format", "json"]);
        run.expect_code(0);
        serde_json::from_str(&run.stdout).expect("inventory JSON")
    }

    /// The controller's status as JSON (`keyfleet status --format json`), if one answers.
    pub(crate) fn status(&self) -> Option<serde_json::Value> {
        let run = self.keyfleet(&["status", "--format", "json"]);
        (run.code == Some(0)).then(|| serde_json::from_str(&run.stdout).expect("status JSON"))
    }
}

/// Certificates of `user` in an inventory JSON with the given displayed status.
pub(crate) fn certs_of<'a>(
    inv: &'a serde_json::Value,
    user: &str,
    status: &str,
) -> Vec<&'a serde_json::Value> {
    inv["certificates"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["user"] == user && c["status"] == status)
                .collect()
        })
        .unwrap_or_default()
}

fn copy_dir(from: &Path, to: &Path) {
    let to = to.join("policy");
    for entry in walk(from) {
        let rel = entry.strip_prefix(from).expect("under the source");
        let dest = to.join(rel);
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        std::fs::copy(&entry, &dest).expect("copy");
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A running controller; killed (SIGKILL) on drop if still running.
pub(crate) struct Controller {
    child: Option<Child>,
    log: PathBuf,
}

impl Controller {
    /// Its pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Its log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit.
    pub(crate) fn terminate(&mut self) -> ExitStatus {
        let pid = self.pid().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -TERM {pid} failed");
        let child = self.child.as_mut().expect("running");
        let status = wait_for("the controller to exit after SIGTERM", || {
            child.try_wait().expect("wait")
        });
        self.child = None;
        status
    }

    /// Whether it exited already (with its status).
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A free local TCP port (bound, then released).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free port")
}

/// `GET path` over HTTP/1.0; returns (status code, body). `None` if nothing listens yet.
pub(crate) fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// One sample of a metrics exposition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    /// Metric name as written (with `_total`, `_bucket`, ... suffixes).
    pub(crate) name: String,
    /// Labels.
    pub(crate) labels: BTreeMap<String, String>,
    /// Value.
    pub(crate) value: f64,
}

/// A parsed exposition: families' types and every sample.
#[derive(Debug, Default)]
pub(crate) struct Exposition {
    /// Family name -> type.
    pub(crate) types: BTreeMap<String, String>,
    /// Samples in order.
    pub(crate) samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the sample `name` whose labels include `labels`.
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses the Prometheus text format (0.0.4) or OpenMetrics text; errors name the line.
/// Every sample must belong to a family declared by `# TYPE`.
pub(crate) fn parse_exposition(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    let mut eof = false;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if eof {
            return Err(format!("line {n}: content after # EOF"));
        }
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.trim_start();
            if rest == "EOF" {
                eof = true;
                continue;
            }
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !valid_name(name) {
                        return Err(format!("line {n}: bad metric name {name:?}"));
                    }
                    let known = [
                        "counter",
                        "gauge",
                        "histogram",
                        "summary",
                        "untyped",
                        "unknown",
                        "info",
                        "stateset",
                        "gaugehistogram",
                    ];
                    if !known.contains(&kind) {
                        return Err(format!("line {n}: unknown type {kind:?}"));
                    }
                    out.types.insert(name.to_string(), kind.to_string());
                }
                (Some("HELP" | "UNIT"), Some(name), _) if valid_name(name) => {}
                _ => return Err(format!("line {n}: malformed comment {line:?}")),
            }
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(p) => line.split_at(p),
            None => return Err(format!("line {n}: sample without value")),
        };
        if !valid_name(name) {
            return Err(format!("line {n}: bad metric name {name:?}"));
        }
        let mut labels = BTreeMap::new();
        let rest = if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices().peekable();
            let end = loop {
                // label name
                let mut key = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if c == '=' || c == '}' {
                        break;
                    }
                    key.push(c);
                    chars.next();
                }
                match chars.next() {
                    Some((p, '}')) if key.is_empty() => break p,
                    Some((_, '=')) => {}
                    _ => return Err(format!("line {n}: malformed labels")),
                }
                if !valid_name(&key) {
                    return Err(format!("line {n}: bad label name {key:?}"));
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(format!("line {n}: label value not quoted"));
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            _ => return Err(format!("line {n}: bad escape")),
                        },
                        Some((_, '"')) => break,
                        Some((_, c)) => value.push(c),
                        None => return Err(format!("line {n}: unterminated label value")),
                    }
                }
                labels.insert(key, value);
                match chars.next() {
                    Some((_, ',')) => continue,
                    Some((p, '}')) => break p,
                    _ => return Err(format!("line {n}: malformed labels")),
                }
            };
            &body[end + 1..]
        } else {
            rest
        };
        let mut fields = rest.split_whitespace();
        let value = fields
            .next()
            .ok_or_else(|| format!("line {n}: sample without value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .map_err(|_| format!("line {n}: bad value {v:?}"))?,
        };
        if let Some(ts) = fields.next() {
            ts.parse::<f64>()
                .map_err(|_| format!("line {n}: bad timestamp {ts:?}"))?;
        }
        if fields.next().is_some() {
            return Err(format!("line {n}: trailing fields"));
        }
        let family = [
            "_total", "_bucket", "_sum", "_count", "_created", "_info", "",
        ]
        .iter()
        .filter_map(|suffix| name.strip_suffix(suffix))
        .find(|base| out.types.contains_key(*base));
        if family.is_none() {
            return Err(format!("line {n}: sample {name} has no # TYPE"));
        }
        out.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(out)
}

/// Every directory and file under `root` (itself included) whose permission bits are not
/// exactly 0700 (directories) or 0600 (files, sockets), as `path mode` lines.
pub(crate) fn not_private(root: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue; // gone meanwhile (a temp file renamed)
        };
        let mode = meta.permissions().mode() & 0o7777;
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        if mode != want {
            out.push(format!("{} {mode:04o}", p.display()));
        }
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).expect("read dir").flatten() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// A directory file's text with every group emptied (`members: []`).
pub(crate) fn emptied_groups(people: &str) -> String {
    people
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("members:") {
                format!("{}members: []", &l[..l.len() - l.trim_start().len()])
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}
