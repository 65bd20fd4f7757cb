//! A real OpenID provider for the login tests: `oidc-provider` 9.x under node
//! (`tests/support/oidc-provider/provider.mjs`), on a loopback socket bound here and handed
//! over as fd 3, and a headless driver of its development pages that approves a device
//! code as a person at a browser would. With a web client for the exchange, [`browser`]
//! drives headless Chromium through the exchange's approval page and the provider's sign-in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The public native client the provider registers (device flow, refresh tokens).
pub const CLIENT_ID: &str = "mayfly-cli";
/// The confidential web client of the exchange's approval page, when started with one.
pub const WEB_CLIENT_ID: &str = "mayfly-sts-approvals";

/// The provider process; killed on drop.
pub struct OidcProvider {
    child: Option<Child>,
    /// Its issuer URL (`http://127.0.0.1:PORT`).
    pub issuer: String,
    log: PathBuf,
}

impl OidcProvider {
    /// Starts the provider, its ID tokens living `id_token_ttl` seconds; its stderr goes
    /// to `DIR/oidc-provider.log`.
    pub fn start(dir: &Path, id_token_ttl: u64) -> Self {
        Self::start_with(dir, id_token_ttl, None)
    }

    /// Starts the provider with the web client [`WEB_CLIENT_ID`] too, redirecting to
    /// `redirect_uri` and authenticating with `secret`.
    pub fn with_web_client(dir: &Path, id_token_ttl: u64, redirect_uri: &str, secret: &str) -> Self {
        Self::start_with(dir, id_token_ttl, Some((redirect_uri, secret)))
    }

    fn start_with(dir: &Path, id_token_ttl: u64, web_client: Option<(&str, &str)>) -> Self {
        use command_fds::{CommandFdExt, FdMapping};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let issuer = format!("http://{}", listener.local_addr().expect("address"));
        let log = dir.join("oidc-provider.log");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("support/oidc-provider/provider.mjs");
        let mut command = Command::new("node");
        command
            .arg(&script)
            .arg(&issuer)
            .arg(id_token_ttl.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("provider log"));
        if let Some((redirect_uri, secret)) = web_client {
            command.arg(redirect_uri).env("WEB_CLIENT_SECRET", secret);
        }
        command
            .fd_mappings(vec![FdMapping { parent_fd: std::os::fd::OwnedFd::from(listener), child_fd: 3 }])
            .expect("fd 3 for the provider");
        let mut child = command.spawn().expect("node starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("listening on") {
                break;
            }
            if Instant::now() >= deadline || child.try_wait().is_ok_and(|s| s.is_some()) {
                let _ = child.kill();
                panic!("oidc-provider did not start: {text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child: Some(child), issuer, log }
    }

    /// Stops the provider (a provider that is down).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What the provider logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Approves a device flow's user code as `login` through the provider's own pages:
    /// enter the code, confirm, sign in, consent, following each redirect with the
    /// cookies the provider set.
    pub fn approve(&self, user_code: &str, login: &str) {
        let client = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        let mut jar: BTreeMap<String, String> = BTreeMap::new();
        let mut url = format!("{}/device", self.issuer);
        let mut form: Option<Vec<(String, String)>> = None;
        for _ in 0..20 {
            let cookies: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let request = match form.take() {
                Some(fields) => client.post(&url).form(&fields),
                None => client.get(&url),
            };
            let response = request.header("Cookie", cookies.join("; ")).send().expect("the provider answers");
            for value in response.headers().get_all("set-cookie") {
                let value = value.to_str().unwrap_or_default();
                let pair = value.split(';').next().unwrap_or_default();
                if let Some((name, val)) = pair.split_once('=') {
                    let expired = value.to_ascii_lowercase().contains("expires=thu, 01 jan 1970");
                    if expired || val.is_empty() {
                        jar.remove(name.trim());
                    } else {
                        jar.insert(name.trim().to_owned(), val.to_owned());
                    }
                }
            }
            let status = response.status();
            if status.is_redirection() {
                let location = response.headers()["location"].to_str().expect("location").to_owned();
                url = if location.starts_with('/') { format!("{}{location}", self.issuer) } else { location };
                continue;
            }
            let page = response.text().unwrap_or_default();
            assert!(status.is_success(), "the provider answered {status} at {url}: {page}");
            if page.contains("Sign-in Success") {
                return;
            }
            let input = |name: &str| {
                let marker = format!("name=\"{name}\" value=\"");
                page.split(&marker).nth(1).and_then(|rest| rest.split('"').next()).map(str::to_owned)
            };
            let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
            form = Some(if page.contains("op.deviceConfirmForm") {
                let xsrf = input("xsrf").expect("xsrf on the confirm page");
                vec![pair("xsrf", &xsrf), pair("user_code", user_code), pair("confirm", "yes")]
            } else if page.contains("name=\"user_code\"") {
                let xsrf = input("xsrf").expect("xsrf on the code page");
                vec![pair("xsrf", &xsrf), pair("user_code", user_code)]
            } else if page.contains("name=\"prompt\" value=\"login\"") {
                vec![pair("prompt", "login"), pair("login", login), pair("password", "any")]
            } else if page.contains("name=\"prompt\" value=\"consent\"") {
                vec![pair("prompt", "consent")]
            } else {
                panic!("unexpected page at {url}: {page}");
            });
            // Forms post to where they were shown (the device page, the interaction).
        }
        panic!("the device flow did not finish in 20 steps");
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A page the browser showed: its HTTP status and its HTML as the browser parsed it.
#[derive(Debug, serde::Deserialize)]
pub struct Shown {
    /// The status of the page's document.
    pub status: u16,
    /// The page's HTML.
    pub html: String,
}

/// What an approver at a browser saw: the approval page after signing in, and the page
/// the decision led to (none for `view`, or when the page offered no decision).
#[derive(Debug, serde::Deserialize)]
pub struct BrowserOutcome {
    /// The exchange's page after sign-in.
    pub page: Shown,
    /// The page after Approve or Deny.
    pub result: Option<Shown>,
}

/// Opens `url` in headless Chromium (`tests/support/oidc-provider/browser.mjs`), signs in
/// at the provider as `login`, and then `approve`s, `deny`s (with `reason`) or only
/// `view`s.
pub fn browser(url: &str, login: &str, action: &str, reason: &str) -> BrowserOutcome {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("support/oidc-provider/browser.mjs");
    let out = Command::new("node")
        .arg(&script)
        .args([url, login, action, reason])
        .stdin(Stdio::null())
        .output()
        .expect("node starts");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the browser failed at {url} as {login}: {stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("the browser's answer is not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}
