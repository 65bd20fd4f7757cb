//! `mayfly login` in a browser: headless Chromium (driven by playwright-core through
//! `tests/support/oidc-provider/login.mjs`, run as `$BROWSER`) signs in at a real OpenID
//! provider and the authorization code comes back over the loopback redirect. Then a real
//! `git clone` and `git push` with tokens minted from that login; the device flow approved
//! in the same browser; a denied consent, a forged redirect, a stray request, a provider
//! that is down and a browser that never comes back, each failing in one line with nothing
//! stored; and a login ending after its idle time and its maximum lifetime across separate
//! helper processes. Neither the ID token nor the refresh token reaches a file.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mayfly_core::{ConfigFile, ExchangeEntry, IdentityEntry, RouteEntry};
use mayfly_devstack::{GitServer, StsClient};
use mayfly_tests::oidc_provider::{CLIENT_ID, OidcProvider};
use mayfly_tests::{Stack, bin, mayfly_lines, require_tool, spawn_sts_on};

/// ID tokens live long enough that no refresh happens in these tests.
const ID_TOKEN_TTL: u64 = 300;
/// Repositories the routes serve: each helper call below asks for another one, so that
/// every call needs the login (none is served from the cache).
const REPOS: [&str; 8] = ["app", "r1", "r2", "r3", "r4", "r5", "r6", "r7"];

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A provider, an exchange trusting it, and a git server whose repositories alice may
/// read and push to.
struct Setup {
    stack: Stack,
    provider: OidcProvider,
    git: GitServer,
    _sts: Killed,
    sts_url: String,
}

impl Setup {
    fn start() -> Self {
        let stack = Stack::builder().start();
        let dir = stack.dir.path();
        let provider = OidcProvider::start(dir, ID_TOKEN_TTL);
        let (listener, sts_url) = mayfly_tests::https_listener();
        let sts_client = StsClient::generate(&sts_url, "browser-git");
        let git = GitServer::start(stack.runtime(), dir.join("srv-browser"), &stack.ca, &sts_client).expect("git");
        git.create_repo("org/app.git").expect("repo");
        let config = mayfly_sts::ConfigFile {
            issuer: sts_url.clone(),
            audit_log: Some(dir.join("browser-sts-audit.jsonl")),
            tls: Some(stack.ca.sts_tls()),
            trusted_issuers: vec![mayfly_sts::TrustedIssuer {
                issuer: provider.issuer.clone(),
                audiences: vec![CLIENT_ID.into()],
                ..Default::default()
            }],
            rules: vec![mayfly_sts::RuleEntry {
                name: Some("alice works on the org".into()),
                issuer: provider.issuer.clone(),
                claims: [("sub".to_owned(), "alice".to_owned())].into(),
                audiences: vec![git.base_url.clone()],
                scopes: vec!["repo:org/*:read".into(), "repo:org/*:write".into()],
                max_ttl: None,
            }],
            introspection_clients: vec![sts_client.config_entry()],
            ..Default::default()
        };
        let sts = Killed(spawn_sts_on(dir, "browser-sts", listener, &config));
        let setup = Self { stack, provider, git, _sts: sts, sts_url };
        setup.configure("12h", "1h");
        let helper = bin("git-credential-mayfly").display().to_string();
        let base = &setup.git.base_url;
        for (key, value) in [
            (format!("credential.{base}.helper"), String::new()),
            (format!("credential.{base}.helper"), helper),
            (format!("credential.{base}.useHttpPath"), "true".to_owned()),
        ] {
            setup.stack.git_ok(&setup.stack.work, &["config", "--global", "--add", &key, &value]);
        }
        setup
    }

    fn git_host(&self) -> String {
        self.git.base_url.trim_start_matches("https://").to_owned()
    }

    /// The client config: an `oidc` identity at the provider lasting `max_login` and
    /// ending after `idle` unused, and a route per repository.
    fn configure(&self, max_login: &str, idle: &str) {
        let identity = IdentityEntry {
            kind: "oidc".into(),
            issuer: Some(self.provider.issuer.clone()),
            client_id: Some(CLIENT_ID.into()),
            scopes: Some("openid offline_access email".into()),
            max_login: Some(max_login.into()),
            idle: Some(idle.into()),
            ..Default::default()
        };
        let exchange = ExchangeEntry {
            kind: "rfc8693".into(),
            token_endpoint: Some(format!("{}/token", self.sts_url)),
            ca_file: Some(self.stack.ca.ca_cert.clone()),
            timeout: Some("5s".into()),
            ..Default::default()
        };
        let route = |repo: &str| RouteEntry {
            tool: "git".into(),
            host: Some(self.git_host()),
            path: Some(format!("org/{repo}")),
            identity: "laptop".into(),
            exchange: "sts".into(),
            operations: Some(vec!["read".into(), "write".into()]),
            ..Default::default()
        };
        let config = ConfigFile {
            identities: [("laptop".to_owned(), identity)].into(),
            exchanges: [("sts".to_owned(), exchange)].into(),
            routes: REPOS.iter().map(|r| route(r)).collect(),
            ..Default::default()
        };
        std::fs::write(self.stack.home.join(".config/mayfly/config.toml"), config.to_toml()).unwrap();
    }

    /// A `$BROWSER` that runs the driver in `mode` as alice, logging to `DIR/NAME.log`.
    fn browser(&self, mode: &str, name: &str) -> (PathBuf, PathBuf) {
        let dir = self.stack.dir.path();
        let script = driver();
        let log = dir.join(format!("{name}.log"));
        let wrapper = dir.join(format!("{name}.sh"));
        let body =
            format!("#!/bin/sh\nexec node '{}' {mode} alice \"$1\" >>'{}' 2>&1\n", script.display(), log.display());
        write_executable(&wrapper, &body);
        (wrapper, log)
    }

    fn mayfly(&self, extra: &[(&str, &str)], args: &[&str]) -> Output {
        Command::new(bin("mayfly"))
            .args(args)
            .env_clear()
            .envs(self.stack.env())
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("mayfly runs")
    }

    fn status(&self) -> String {
        String::from_utf8(self.mayfly(&[], &["status"]).stdout).unwrap()
    }

    /// One `git-credential-mayfly get` for `org/REPO`, as git runs it: its own process.
    fn helper_get(&self, repo: &str) -> Output {
        assert_cmd::Command::new(bin("git-credential-mayfly"))
            .arg("get")
            .env_clear()
            .envs(self.stack.env())
            .write_stdin(format!("protocol=https\nhost={}\npath=org/{repo}.git\n", self.git_host()))
            .output()
            .unwrap()
    }

    /// Signs in through the browser as alice and returns what `mayfly login` said.
    fn login(&self, name: &str) -> String {
        let (browser, log) = self.browser("approve", name);
        let out = self.mayfly(&[("BROWSER", &browser.display().to_string())], &["login", "laptop"]);
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "mayfly login failed:\n{said}\ndriver: {}\nprovider: {}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            self.provider.log()
        );
        said
    }
}

fn driver() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("support/oidc-provider/login.mjs")
}

fn write_executable(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Nothing that looks like a JWT in what a person sees.
fn assert_no_token_shown(text: &str) {
    assert!(!text.contains("eyJ"), "a token-shaped string was printed: {text}");
}

fn tools_present() -> bool {
    require_tool("git") && require_tool("node") && require_tool("chromium")
}

#[test]
#[cfg_attr(
    any(
        missing = "git",
        missing = "node",
        missing = "chromium",
        missing = "oidc-provider",
        missing = "playwright-core"
    ),
    ignore = "needs git, node, chromium, oidc-provider, playwright-core: one is not installed"
)]
fn a_browser_login_clones_and_pushes_and_keeps_no_token_on_disk() {
    if !tools_present() {
        return;
    }
    let setup = Setup::start();
    let started = Instant::now();
    let said = setup.login("approve");
    let took = started.elapsed();
    eprintln!("browser login took {took:?}");
    assert!(said.contains("open this URL in a browser on this machine"), "{said}");
    assert!(said.contains("Opened it with `"), "{said}");
    assert!(said.contains("logged in to `laptop` as alice <alice@example.test>"), "{said}");
    assert!(said.contains("kernel user keyring") || said.contains("memory-backed"), "{said}");
    assert!(!said.contains("code=") && !said.contains("code_verifier"), "{said}");
    assert_no_token_shown(&said);
    let status = setup.status();
    assert!(status.contains("logged in as alice <alice@example.test> since"), "{status}");

    let work = &setup.stack.work;
    let url = format!("{}/org/app.git", setup.git.base_url);
    let run = |dir: &Path, args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env_clear()
            .envs(setup.stack.env())
            .stdin(Stdio::null())
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(work, &["clone", &url, "app"]);
    let app = work.join("app");
    std::fs::write(app.join("README"), "signed in with a browser\n").unwrap();
    run(&app, &["add", "README"]);
    run(&app, &["-c", "user.name=alice", "-c", "user.email=alice@example.test", "commit", "-qm", "first"]);
    run(&app, &["push", "origin", "HEAD:main"]);
    run(work, &["clone", &url, "again"]);
    assert_eq!(std::fs::read_to_string(work.join("again/README")).unwrap(), "signed in with a browser\n");
    setup.stack.assert_no_tokens_on_disk();
}

#[test]
#[cfg_attr(
    any(missing = "node", missing = "chromium", missing = "oidc-provider", missing = "playwright-core"),
    ignore = "needs node, chromium, oidc-provider, playwright-core: one is not installed"
)]
fn the_device_flow_is_approved_in_the_browser() {
    if !require_tool("node") || !require_tool("chromium") {
        return;
    }
    let stack = Stack::builder().start();
    let provider = OidcProvider::start(stack.dir.path(), ID_TOKEN_TTL);
    let identity = IdentityEntry {
        kind: "oidc".into(),
        issuer: Some(provider.issuer.clone()),
        client_id: Some(CLIENT_ID.into()),
        ..Default::default()
    };
    let config = ConfigFile { identities: [("laptop".to_owned(), identity)].into(), ..Default::default() };
    std::fs::write(stack.home.join(".config/mayfly/config.toml"), config.to_toml()).unwrap();
    // A browser is at hand, but `--device` asks for a code.
    let mut child = Command::new(bin("mayfly"))
        .args(["login", "laptop", "--device"])
        .env_clear()
        .envs(stack.env())
        .env("BROWSER", "/bin/false")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mayfly login starts");
    let guard = ChildGuard(&mut child);
    let mut stderr = BufReader::new(guard.0.stderr.take().unwrap());
    let mut shown = String::new();
    let code = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no user code shown:\n{shown}");
        shown.push_str(&line);
        if let Some((_, code)) = line.trim().split_once("enter the code ") {
            break code.to_owned();
        }
    };
    let driven = Command::new("node")
        .arg(driver())
        .args(["approve", "alice", &format!("{}/device", provider.issuer), &code])
        .output()
        .expect("node runs");
    let driver_said = String::from_utf8_lossy(&driven.stdout).into_owned() + &String::from_utf8_lossy(&driven.stderr);
    assert!(driven.status.success() && driver_said.contains("Sign-in Success"), "{driver_said}");
    stderr.read_to_string(&mut shown).unwrap();
    let status = guard.0.wait().unwrap();
    assert!(status.success(), "{shown}\n{}", provider.log());
    assert!(shown.contains("logged in to `laptop` as alice until"), "{shown}");
    assert_no_token_shown(&shown);
    stack.assert_no_tokens_on_disk();
}

/// Kills the child when the test fails half-way.
struct ChildGuard<'a>(&'a mut Child);

impl Drop for ChildGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `mayfly login --browser` with a browser that does nothing, and returns the
/// process, its stderr and the loopback redirect URI it waits on.
fn login_waiting(setup: &Setup, extra: &[&str]) -> (Child, BufReader<std::process::ChildStderr>, String) {
    let idle_browser = setup.stack.dir.path().join("idle-browser.sh");
    write_executable(&idle_browser, "#!/bin/sh\nexit 0\n");
    let mut child = Command::new(bin("mayfly"))
        .args(["login", "laptop", "--browser"])
        .args(extra)
        .env_clear()
        .envs(setup.stack.env())
        .env("BROWSER", &idle_browser)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mayfly login starts");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut shown = String::new();
    let redirect = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no URL shown:\n{shown}");
        shown.push_str(&line);
        if let Ok(url) = url::Url::parse(line.trim())
            && let Some((_, redirect)) = url.query_pairs().find(|(k, _)| k == "redirect_uri")
        {
            break redirect.into_owned();
        }
    };
    (child, stderr, redirect)
}

/// A raw GET to the loopback listener; the status line of its answer.
fn raw_get(redirect: &str, target: &str) -> String {
    let authority = redirect.trim_start_matches("http://").split('/').next().unwrap().to_owned();
    let mut stream = std::net::TcpStream::connect(&authority).unwrap();
    write!(stream, "GET {target} HTTP/1.1\r\nHost: {authority}\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.lines().next().unwrap_or_default().to_owned()
}

fn finish(mut child: Child, mut stderr: BufReader<std::process::ChildStderr>) -> (bool, Vec<String>) {
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let ok = child.wait().unwrap().success();
    assert_no_token_shown(&rest);
    (ok, mayfly_lines(rest.as_bytes()))
}

#[test]
#[cfg_attr(
    any(
        missing = "git",
        missing = "node",
        missing = "chromium",
        missing = "oidc-provider",
        missing = "playwright-core"
    ),
    ignore = "needs git, node, chromium, oidc-provider, playwright-core: one is not installed"
)]
fn failed_browser_logins_say_why_in_one_line_and_store_nothing() {
    if !tools_present() {
        return;
    }
    let mut setup = Setup::start();
    let not_logged_in = |setup: &Setup| {
        let status = setup.status();
        assert!(status.contains("not logged in: run `mayfly login laptop`"), "{status}");
    };

    // The person cancels at the consent page: the provider redirects with an error.
    let (browser, log) = setup.browser("deny", "deny");
    let out = setup.mayfly(&[("BROWSER", &browser.display().to_string())], &["login", "laptop"]);
    let lines = mayfly_lines(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(lines.len(), 1, "{lines:?}\ndriver: {}", std::fs::read_to_string(&log).unwrap_or_default());
    assert_eq!(
        lines[0],
        "mayfly: login `laptop`: the provider refused the sign-in: access_denied (End-User aborted interaction)"
    );
    not_logged_in(&setup);

    // Stray requests get a 404 and the listener keeps waiting; a redirect with another
    // `state` (forged, or from an older login) ends the login.
    let (child, stderr, redirect) = login_waiting(&setup, &[]);
    assert_eq!(raw_get(&redirect, "/favicon.ico"), "HTTP/1.1 404 Not Found");
    assert_eq!(raw_get(&redirect, "/?code=x&state=y"), "HTTP/1.1 404 Not Found");
    assert_eq!(raw_get(&redirect, "/callback?code=c0de&state=st4te"), "HTTP/1.1 400 Bad Request");
    let (ok, lines) = finish(child, stderr);
    assert!(!ok);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("the redirect's `state` does not match this login"), "{lines:?}");
    assert!(!lines[0].contains("c0de") && !lines[0].contains("st4te"), "{lines:?}");
    not_logged_in(&setup);

    // A browser that never comes back: the wait ends at the timeout.
    let started = Instant::now();
    let (child, stderr, _) = login_waiting(&setup, &["--timeout", "1s"]);
    let (ok, lines) = finish(child, stderr);
    assert!(!ok && started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert_eq!(lines, ["mayfly: login `laptop`: no answer from the browser in time; run `mayfly login` again"]);
    not_logged_in(&setup);

    // A provider that is down: one line, quickly.
    setup.provider.stop();
    let started = Instant::now();
    let (browser, _) = setup.browser("approve", "down");
    let out = setup.mayfly(&[("BROWSER", &browser.display().to_string())], &["login", "laptop", "--browser"]);
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    let lines = mayfly_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("mayfly: login `laptop`: discovery: request to"), "{lines:?}");
    not_logged_in(&setup);
    setup.stack.assert_no_tokens_on_disk();
}

#[test]
#[cfg_attr(
    any(
        missing = "git",
        missing = "node",
        missing = "chromium",
        missing = "oidc-provider",
        missing = "playwright-core"
    ),
    ignore = "needs git, node, chromium, oidc-provider, playwright-core: one is not installed"
)]
fn a_login_ends_after_its_idle_time_and_its_lifetime_across_processes() {
    if !tools_present() {
        return;
    }
    let setup = Setup::start();
    // Logins count whole seconds (a use at 3.9 s may read as 3 s after the last, or 4 s):
    // every wait below keeps a second and more of slack each way.
    setup.configure("14s", "5s");
    let ok = |repo: &str| {
        let out = setup.helper_get(repo);
        assert!(out.status.success(), "{repo}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("password="), "{repo}");
    };
    let ended = |repo: &str| {
        let out = setup.helper_get(repo);
        assert!(!out.status.success(), "{repo}: the login should have ended");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "quit=1\n", "git must not ask anyone else");
        let lines = mayfly_lines(&out.stderr);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("not logged in: run `mayfly login laptop`"), "{lines:?}");
    };
    let at = |start: Instant, seconds: f64| {
        std::thread::sleep(Duration::from_secs_f64(seconds).saturating_sub(start.elapsed()));
    };

    // Idle: each use starts the 5 s again, a token served from the cache included (the
    // same repository each time: minted once, then cache hits); 6.5 s unused ends it,
    // before its 14 s lifetime would, and takes the cached token with it.
    setup.login("idle");
    let since = Instant::now();
    ok(REPOS[1]);
    at(since, 3.0);
    ok(REPOS[1]);
    at(since, 6.0);
    ok(REPOS[1]);
    at(since, 12.5);
    ended(REPOS[1]);
    ended(REPOS[4]);
    let audit = setup.stack.client_audit();
    let outcomes: Vec<&str> = audit.iter().filter_map(|l| l["outcome"].as_str()).collect();
    assert_eq!(outcomes.iter().filter(|o| **o == "cache-hit").count(), 2, "{outcomes:?}");
    assert!(outcomes.iter().any(|o| *o == "revoked" || *o == "erased"), "the cached token is ended: {outcomes:?}");

    let doctor = || {
        let out = setup.mayfly(&[], &["doctor"]);
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let said = doctor();
    assert!(said.contains("login-ended") && said.contains("no login in the kernel user keyring"), "{said}");

    // Lifetime: used every 3 s, it still ends 14 s after the login.
    setup.login("lifetime");
    let since = Instant::now();
    let said = doctor();
    assert!(said.contains("login-ending"), "{said}");
    assert!(said.contains("the login kept in the kernel user keyring ends at"), "{said}");
    assert!(said.contains("at its idle time (`idle`) unless used before"), "{said}");
    for second in [3.0, 6.0, 9.0] {
        at(since, second);
        ok(REPOS[5]);
    }
    // Used once more near the end (the login may be over by then): at 15.5 s it is at most
    // 3.5 s idle, so what ends it is its lifetime.
    at(since, 12.0);
    let _ = setup.helper_get(REPOS[5]);
    at(since, 15.5);
    ended(REPOS[5]);
    ended(REPOS[7]);
    setup.stack.assert_no_tokens_on_disk();
}
