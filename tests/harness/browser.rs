//! A real headless Chromium driven over WebDriver, for the portal's browser tests.
//!
//! [`Browser::start`] starts `chromedriver` on a port of 127.0.0.1 it picks itself (its own process group,
//! killed on drop) and a WebDriver session of headless Chromium with an empty temporary
//! `--user-data-dir` and `HOME`. Before Chromium starts, the temporary `HOME` gets an NSS
//! database (`$HOME/.pki/nssdb`, via `certutil`/`pk12util` from libnss3-tools) holding the CAs a
//! test trusts and the client certificate it presents, and the profile's `Default/Preferences`
//! gets the `auto_select_certificate` content setting for the test server's origin (the
//! per-profile twin of the `AutoSelectCertificateForUrls` policy), so that Chromium presents the
//! certificate without a dialog. Nothing is written outside the temporary directories.
//!
//! The WebDriver client is a small synchronous one of our own: JSON over HTTP to chromedriver,
//! with reqwest on a private current-thread tokio runtime. Every navigation, click and submit
//! records a screenshot and the page source in memory; when the browser is dropped while its
//! thread panics, they are written to `target/test-artifacts/<test name>/NN-<what>.png` (and
//! `.html`) and the folder is printed. On success nothing is kept.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The browser's temporary profile: NSS database, auto-selection of the client certificate.
mod profile;

/// The browser binary (Debian's `chromium` launcher).
pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";
/// The WebDriver server (Debian's `chromium-driver`).
pub(crate) const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The flags Chromium gets on this machine: headless, no sandbox (root), and no background
/// networking (the closed network refuses it, many connections at a time).
pub(crate) const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--password-store=basic",
    "--window-size=1280,1024",
];

/// The W3C WebDriver key of an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How a browser starts.
#[derive(Debug, Clone, Default)]
pub(crate) struct BrowserOptions {
    /// A client certificate and its private key (PEM; the certificate may be followed by its
    /// chain), imported into the browser's NSS database.
    pub(crate) client_cert: Option<(String, String)>,
    /// CA certificates (PEM, one or more) that the browser trusts for server certificates.
    pub(crate) trust_ca_pem: Option<String>,
    /// The HTTPS origin (`https://ADDR`) for which Chromium selects the client certificate by
    /// itself. Required with `client_cert`: headless Chromium has no certificate dialog.
    pub(crate) auto_select_for: Option<SocketAddr>,
    /// Accept any server certificate (WebDriver `acceptInsecureCerts`), instead of trusting
    /// `trust_ca_pem`.
    pub(crate) accept_insecure_certs: bool,
}

/// A cookie as the browser holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cookie {
    /// The cookie's name.
    pub(crate) name: String,
    /// Its value.
    pub(crate) value: String,
    /// Its path.
    pub(crate) path: String,
    /// Its domain.
    pub(crate) domain: String,
    /// The `Secure` flag.
    pub(crate) secure: bool,
    /// The `HttpOnly` flag.
    pub(crate) http_only: bool,
    /// `SameSite` as WebDriver reports it (`Strict`, `Lax` or `None`), if reported.
    pub(crate) same_site: Option<String>,
    /// Expiry in seconds since the epoch; `None` for a session cookie.
    pub(crate) expiry: Option<u64>,
}

/// One recorded step: a screenshot and the page source after it.
#[derive(Debug, Clone)]
pub(crate) struct Shot {
    /// What happened (`navigate-login`, `click-button`...), already safe as a file name.
    pub(crate) what: String,
    /// The PNG screenshot (empty if it could not be taken).
    pub(crate) png: Vec<u8>,
    /// The page source (or why it could not be read).
    pub(crate) html: String,
}

/// A WebDriver command that failed: the W3C error code and message, or a transport error.
#[derive(Debug, Clone)]
pub(crate) struct WebDriverError {
    /// The W3C error code (`no such element`, `timeout`...) or `transport`.
    pub(crate) error: String,
    /// The message.
    pub(crate) message: String,
}

impl std::fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.message)
    }
}

/// A running headless Chromium with its chromedriver; everything stops on drop.
pub(crate) struct Browser {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
    session: String,
    driver: Option<Child>,
    shots: RefCell<Vec<Shot>>,
    test_name: String,
    dir: tempfile::TempDir,
}

/// An element of the current page.
pub(crate) struct Element<'b> {
    browser: &'b Browser,
    id: String,
    css: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with `opts`. Panics with the reason
    /// (and chromedriver's log) if either cannot start.
    pub(crate) fn start(opts: BrowserOptions) -> Browser {
        let _ = rustls::crypto::ring::default_provider().install_default();
        if opts.client_cert.is_some() && opts.auto_select_for.is_none() {
            panic!(
                "BrowserOptions: client_cert needs auto_select_for (headless Chromium cannot ask)"
            );
        }
        let dir = tempfile::tempdir().expect("browser temp dir");
        let home = dir.path().join("home");
        let profile = dir.path().join("profile");
        std::fs::create_dir_all(&home).expect("browser HOME");
        std::fs::create_dir_all(profile.join("Default")).expect("browser profile");
        if opts.client_cert.is_some() || opts.trust_ca_pem.is_some() {
            let nssdb = home.join(".pki/nssdb");
            profile::setup_nssdb(&nssdb, dir.path(), &opts);
        }
        if let Some(addr) = opts.auto_select_for {
            profile::write_auto_select(&profile, addr);
        }

        let log = dir.path().join("chromedriver.log");
        let mut cmd = Command::new(CHROMEDRIVER);
        // Port 0: chromedriver binds a free port itself and prints it (no race for a port).
        cmd.arg("--port=0")
            .arg(format!("--log-path={}", log.display()))
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut driver = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {CHROMEDRIVER} (scripts/install-deps --test): {e}"));
        let port = driver_port(&mut driver, &log);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("browser runtime");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(90))
            .no_proxy()
            .build()
            .expect("WebDriver HTTP client");
        let mut browser = Browser {
            rt,
            http,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            driver: Some(driver),
            shots: RefCell::new(Vec::new()),
            test_name: test_name(),
            dir,
        };
        browser.wait_ready(&log);
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": opts.accept_insecure_certs,
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        match browser.call(reqwest::Method::POST, "/session", Some(caps)) {
            Ok(v) => match v["sessionId"].as_str() {
                Some(id) => browser.session = id.to_string(),
                None => panic!("chromedriver answered no session id: {v}"),
            },
            Err(e) => panic!(
                "start headless Chromium: {e}\nchromedriver log (tail):\n{}",
                tail(&log, 40)
            ),
        }
        browser
    }

    /// Polls chromedriver's `/status` until it is ready (20 s at most).
    fn wait_ready(&mut self, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let url = format!("{}/status", self.base);
            let ready = self.rt.block_on(async {
                let r = self.http.get(&url).send().await.ok()?;
                let v: Value = r.json().await.ok()?;
                v["value"]["ready"].as_bool()
            });
            if ready == Some(true) {
                return;
            }
            if let Some(Ok(Some(status))) = self.driver.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "chromedriver exited ({status}) before it was ready\n{}",
                    tail(log, 40)
                );
            }
            if Instant::now() > deadline {
                panic!("chromedriver not ready after 20 s\n{}", tail(log, 40));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One WebDriver command: `path` relative to chromedriver's root; answers `value`.
    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WebDriverError> {
        let url = format!("{}{path}", self.base);
        let transport = |e: reqwest::Error| WebDriverError {
            error: "transport".into(),
            message: format!("{path}: {e}"),
        };
        self.rt.block_on(async {
            let mut req = self.http.request(method, &url);
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await.map_err(transport)?;
            let status = resp.status();
            let v: Value = resp.json().await.map_err(transport)?;
            let value = v.get("value").cloned().unwrap_or(Value::Null);
            if status.is_success() {
                // `POST /session` answers sessionId inside value.
                Ok(value)
            } else {
                Err(WebDriverError {
                    error: value["error"].as_str().unwrap_or("unknown error").into(),
                    message: value["message"].as_str().unwrap_or("").into(),
                })
            }
        })
    }

    /// A command on this session (`path` after `/session/{id}`).
    fn cmd(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WebDriverError> {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    #[track_caller]
    fn must(&self, what: &str, r: Result<Value, WebDriverError>) -> Value {
        r.unwrap_or_else(|e| panic!("WebDriver {what}: {e}"))
    }

    /// Opens `url` and waits for the page to load; records a screenshot.
    #[track_caller]
    pub(crate) fn goto(&self, url: &str) {
        if let Err(e) = self.try_goto(url) {
            panic!("WebDriver navigate to {url}: {e}");
        }
    }

    /// Opens `url` and waits for the page to load; records a screenshot either way. Answers
    /// WebDriver's error, e.g. `insecure certificate` for a server certificate not trusted.
    pub(crate) fn try_goto(&self, url: &str) -> Result<(), WebDriverError> {
        let r = self.cmd(reqwest::Method::POST, "/url", Some(json!({"url": url})));
        let what = url.split_once("://").map_or(url, |(_, rest)| rest);
        let what = what.split_once('/').map_or("", |(_, path)| path);
        self.snapshot(&format!(
            "navigate-{}",
            if what.is_empty() { "root" } else { what }
        ));
        r?;
        // chromedriver answers success for Chromium's own certificate error page: find it.
        let shots = self.shots.borrow();
        let html = shots.last().map_or("", |s| s.html.as_str());
        if html.contains("<title>Privacy error</title>")
            && let Some(at) = html.find("ERR_CERT_")
        {
            let code: String = html[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            return Err(WebDriverError {
                error: "insecure certificate".into(),
                message: format!(
                    "Chromium shows its certificate error page for {url}: NET::{code}"
                ),
            });
        }
        Ok(())
    }

    /// The current URL.
    #[track_caller]
    pub(crate) fn current_url(&self) -> String {
        let v = self.cmd(reqwest::Method::GET, "/url", None);
        let v = self.must("current URL", v);
        v.as_str().unwrap_or_default().to_string()
    }

    /// The page title.
    #[track_caller]
    pub(crate) fn title(&self) -> String {
        let v = self.cmd(reqwest::Method::GET, "/title", None);
        self.must("title", v)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The page source (the DOM serialised now).
    #[track_caller]
    pub(crate) fn source(&self) -> String {
        let v = self.cmd(reqwest::Method::GET, "/source", None);
        self.must("page source", v)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The first element matching `css`, or `None`.
    #[track_caller]
    pub(crate) fn try_find(&self, css: &str) -> Option<Element<'_>> {
        let body = json!({"using": "css selector", "value": css});
        match self.cmd(reqwest::Method::POST, "/element", Some(body)) {
            Ok(v) => Some(self.element(&v, css)),
            Err(e) if e.error == "no such element" => None,
            Err(e) => panic!("WebDriver find {css:?}: {e}"),
        }
    }

    /// The first element matching `css`; panics (keeping the screenshots) if there is none.
    #[track_caller]
    pub(crate) fn find(&self, css: &str) -> Element<'_> {
        match self.try_find(css) {
            Some(e) => e,
            None => panic!("no element matches {css:?} on {}", self.current_url()),
        }
    }

    /// Every element matching `css`.
    #[track_caller]
    pub(crate) fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let body = json!({"using": "css selector", "value": css});
        let v = self.cmd(reqwest::Method::POST, "/elements", Some(body));
        let v = self.must(&format!("find all {css:?}"), v);
        v.as_array()
            .map(|a| a.iter().map(|e| self.element(e, css)).collect())
            .unwrap_or_default()
    }

    /// Waits up to `timeout` for an element matching `css`.
    #[track_caller]
    pub(crate) fn wait_for(&self, css: &str, timeout: Duration) -> Element<'_> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.try_find(css) {
                return e;
            }
            if Instant::now() > deadline {
                self.snapshot(&format!("timeout-{css}"));
                panic!(
                    "no element matches {css:?} after {timeout:?} on {}",
                    self.current_url()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn element(&self, v: &Value, css: &str) -> Element<'_> {
        let id = v[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("WebDriver element reference without id: {v}"));
        Element {
            browser: self,
            id: id.to_string(),
            css: css.to_string(),
        }
    }

    /// Every cookie the browser holds for the current page.
    #[track_caller]
    pub(crate) fn cookies(&self) -> Vec<Cookie> {
        let v = self.cmd(reqwest::Method::GET, "/cookie", None);
        let v = self.must("cookies", v);
        v.as_array()
            .map(|a| a.iter().map(cookie_of).collect())
            .unwrap_or_default()
    }

    /// The cookie named `name`, if the browser holds one for the current page.
    #[track_caller]
    pub(crate) fn cookie(&self, name: &str) -> Option<Cookie> {
        self.cookies().into_iter().find(|c| c.name == name)
    }

    /// Deletes every cookie of the current page (e.g. to test a lost session).
    #[track_caller]
    pub(crate) fn delete_cookies(&self) {
        let r = self.cmd(reqwest::Method::DELETE, "/cookie", None);
        self.must("delete cookies", r);
    }

    /// A PNG screenshot of the viewport.
    #[track_caller]
    pub(crate) fn screenshot(&self) -> Vec<u8> {
        let v = self.cmd(reqwest::Method::GET, "/screenshot", None);
        let v = self.must("screenshot", v);
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("WebDriver screenshot is not base64: {e}"))
    }

    /// Records a screenshot and the page source as step `what` (kept only on failure).
    pub(crate) fn snapshot(&self, what: &str) {
        let png = self
            .cmd(reqwest::Method::GET, "/screenshot", None)
            .ok()
            .and_then(|v| {
                base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().unwrap_or_default())
                    .ok()
            })
            .unwrap_or_default();
        let html = match self.cmd(reqwest::Method::GET, "/source", None) {
            Ok(v) => v.as_str().unwrap_or_default().to_string(),
            Err(e) => format!("<!-- page source unavailable: {e} -->"),
        };
        self.shots.borrow_mut().push(Shot {
            what: file_safe(what),
            png,
            html,
        });
    }

    /// The steps recorded so far.
    pub(crate) fn shots(&self) -> Vec<Shot> {
        self.shots.borrow().clone()
    }

    /// The test name the artifacts would be filed under.
    pub(crate) fn test_name(&self) -> &str {
        &self.test_name
    }

    /// The browser's temporary HOME (its NSS database is in `.pki/nssdb`).
    pub(crate) fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }
}

impl Element<'_> {
    /// Clicks the element (waiting for a navigation it starts); records a screenshot.
    #[track_caller]
    pub(crate) fn click(&self) {
        let r = self.cmd(reqwest::Method::POST, "/click", Some(json!({})));
        self.browser.must(&format!("click {:?}", self.css), r);
        self.browser.snapshot(&format!("click-{}", self.css));
    }

    /// Types `text` into the element (after what it holds).
    #[track_caller]
    pub(crate) fn type_text(&self, text: &str) {
        let r = self.cmd(reqwest::Method::POST, "/value", Some(json!({"text": text})));
        self.browser.must(&format!("type into {:?}", self.css), r);
    }

    /// Empties an input or textarea.
    #[track_caller]
    pub(crate) fn clear(&self) {
        let r = self.cmd(reqwest::Method::POST, "/clear", Some(json!({})));
        self.browser.must(&format!("clear {:?}", self.css), r);
    }

    /// Submits the form this element is (or is in), by clicking its first submit button, as a
    /// user would; records a screenshot. Panics if the form has no submit button.
    #[track_caller]
    pub(crate) fn submit(&self) {
        let form = if self.tag_name() == "form" {
            Element {
                browser: self.browser,
                id: self.id.clone(),
                css: self.css.clone(),
            }
        } else {
            let body = json!({"using": "xpath", "value": "./ancestor::form[1]"});
            let v = self.cmd(reqwest::Method::POST, "/element", Some(body));
            let v = self.browser.must(&format!("form of {:?}", self.css), v);
            self.browser.element(&v, &format!("form of {}", self.css))
        };
        let body = json!({"using": "css selector",
            "value": "button:not([type]), button[type=submit], input[type=submit]"});
        let v = form.cmd(reqwest::Method::POST, "/element", Some(body));
        let v = self
            .browser
            .must(&format!("submit button of the form of {:?}", self.css), v);
        let button = self.browser.element(&v, &format!("submit-{}", self.css));
        let r = button.cmd(reqwest::Method::POST, "/click", Some(json!({})));
        self.browser.must(&format!("submit {:?}", self.css), r);
        self.browser.snapshot(&format!("submit-{}", self.css));
    }

    /// The element's rendered text.
    #[track_caller]
    pub(crate) fn text(&self) -> String {
        let v = self.cmd(reqwest::Method::GET, "/text", None);
        let v = self.browser.must(&format!("text of {:?}", self.css), v);
        v.as_str().unwrap_or_default().to_string()
    }

    /// An HTML attribute, `None` if absent.
    #[track_caller]
    pub(crate) fn attr(&self, name: &str) -> Option<String> {
        let v = self.cmd(reqwest::Method::GET, &format!("/attribute/{name}"), None);
        let v = self
            .browser
            .must(&format!("attribute {name} of {:?}", self.css), v);
        v.as_str().map(str::to_string)
    }

    /// A DOM property as JSON (`value`, `checked`...).
    #[track_caller]
    pub(crate) fn property(&self, name: &str) -> Value {
        let v = self.cmd(reqwest::Method::GET, &format!("/property/{name}"), None);
        self.browser
            .must(&format!("property {name} of {:?}", self.css), v)
    }

    /// The element's tag name, lower case.
    #[track_caller]
    pub(crate) fn tag_name(&self) -> String {
        let v = self.cmd(reqwest::Method::GET, "/name", None);
        let v = self.browser.must(&format!("tag of {:?}", self.css), v);
        v.as_str().unwrap_or_default().to_ascii_lowercase()
    }

    /// Elements matching `css` inside this one.
    #[track_caller]
    pub(crate) fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let body = json!({"using": "css selector", "value": css});
        let v = self.cmd(reqwest::Method::POST, "/elements", Some(body));
        let v = self
            .browser
            .must(&format!("find {css:?} in {:?}", self.css), v);
        v.as_array()
            .map(|a| a.iter().map(|e| self.browser.element(e, css)).collect())
            .unwrap_or_default()
    }

    fn cmd(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WebDriverError> {
        self.browser
            .cmd(method, &format!("/element/{}{path}", self.id), body)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let shots = self.shots.borrow();
            match write_artifacts(&artifacts_root(), &self.test_name, &shots) {
                Ok(Some(dir)) => eprintln!("browser screenshots: {}", dir.display()),
                Ok(None) => eprintln!("browser screenshots: none were taken"),
                Err(e) => eprintln!("browser screenshots could not be written: {e}"),
            }
        }
        if !self.session.is_empty() {
            let _ = self.call(
                reqwest::Method::DELETE,
                &format!("/session/{}", self.session),
                None,
            );
        }
        if let Some(mut child) = self.driver.take() {
            // chromedriver and any Chromium it left behind share its process group.
            if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `target/test-artifacts` of this checkout (or of `CARGO_TARGET_DIR`).
pub(crate) fn artifacts_root() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| super::repo_root().join("target"));
    target.join("test-artifacts")
}

/// Writes `shots` to `root/<test name>/NN-<what>.png` and `.html` (the folder emptied first);
/// answers the folder, or `None` when there is nothing to write.
pub(crate) fn write_artifacts(
    root: &Path,
    test_name: &str,
    shots: &[Shot],
) -> std::io::Result<Option<PathBuf>> {
    if shots.is_empty() {
        return Ok(None);
    }
    let dir = root.join(file_safe(test_name));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    for (i, shot) in shots.iter().enumerate() {
        let stem = format!("{:02}-{}", i + 1, shot.what);
        if !shot.png.is_empty() {
            std::fs::write(dir.join(format!("{stem}.png")), &shot.png)?;
        }
        std::fs::write(dir.join(format!("{stem}.html")), &shot.html)?;
    }
    Ok(Some(dir))
}

/// `s` with every character but ASCII letters, digits, `-`, `_` and `.` made `_`, at most 80
/// characters (`::` becomes `.`).
pub(crate) fn file_safe(s: &str) -> String {
    let s = s.replace("::", ".");
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    if out.is_empty() || out.chars().all(|c| c == '.') {
        out = "_".into();
    }
    out
}

/// The running test's name: the test thread's name, else (one test per process, as nextest
/// runs them) the test filter on the command line.
fn test_name() -> String {
    if let Some(n) = std::thread::current().name()
        && n != "main"
    {
        return n.to_string();
    }
    std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| format!("unnamed-{}", std::process::id()))
}

fn cookie_of(v: &Value) -> Cookie {
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    Cookie {
        name: s("name"),
        value: s("value"),
        path: s("path"),
        domain: s("domain"),
        secure: v["secure"].as_bool().unwrap_or(false),
        http_only: v["httpOnly"].as_bool().unwrap_or(false),
        same_site: v["sameSite"].as_str().map(str::to_string),
        expiry: v["expiry"].as_u64(),
    }
}

/// The port chromedriver says it listens on (its stdout, read on a thread that then drains
/// it); panics after 20 s, or if it exits first, with its log.
fn driver_port(driver: &mut Child, log: &Path) -> u16 {
    use std::io::BufRead as _;
    let stdout = driver.stdout.take().expect("chromedriver stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("started successfully on port ").nth(1)
                && let Ok(port) = rest.trim_end_matches('.').trim().parse::<u16>()
            {
                let _ = tx.send(port);
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(port) = rx.recv_timeout(Duration::from_millis(100)) {
            return port;
        }
        if let Ok(Some(status)) = driver.try_wait() {
            panic!(
                "chromedriver exited ({status}) before it listened\n{}",
                tail(log, 40)
            );
        }
        if Instant::now() > deadline {
            panic!("chromedriver did not listen within 20 s\n{}", tail(log, 40));
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
