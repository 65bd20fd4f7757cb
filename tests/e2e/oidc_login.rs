//! `mayfly login` against a real OpenID provider (oidc-provider under node): the device
//! flow approved through the provider's own pages, a real `git clone` with a token minted
//! from the login's ID token, a refresh after that token expires, logout revoking at the
//! provider, a provider that is down, and no token on disk.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use mayfly_core::{ConfigFile, ExchangeEntry, IdentityEntry, RouteEntry};
use mayfly_devstack::{GitServer, StsClient};
use mayfly_tests::oidc_provider::{CLIENT_ID, OidcProvider};
use mayfly_tests::{Stack, bin, mayfly_lines, require_tool, spawn_sts_on};
use serde_json::Value;

/// How long the provider's ID tokens live: short, so a test sees a refresh.
const ID_TOKEN_TTL: u64 = 6;

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The client config: an `oidc` identity at the provider, routes for two repositories.
fn client_config(stack: &Stack, issuer: &str, sts_url: &str, git_host: &str) {
    let identity = IdentityEntry {
        kind: "oidc".into(),
        issuer: Some(issuer.into()),
        client_id: Some(CLIENT_ID.into()),
        scopes: Some("openid offline_access email".into()),
        ..Default::default()
    };
    let exchange = ExchangeEntry {
        kind: "rfc8693".into(),
        token_endpoint: Some(format!("{sts_url}/token")),
        ca_file: Some(stack.ca.ca_cert.clone()),
        timeout: Some("5s".into()),
        ..Default::default()
    };
    let route = |path: &str| RouteEntry {
        tool: "git".into(),
        host: Some(git_host.into()),
        path: Some(path.into()),
        identity: "laptop".into(),
        exchange: "sts".into(),
        ..Default::default()
    };
    let config = ConfigFile {
        identities: [("laptop".to_owned(), identity)].into(),
        exchanges: [("sts".to_owned(), exchange)].into(),
        routes: vec![route("org/app"), route("org/docs")],
        ..Default::default()
    };
    std::fs::write(stack.home.join(".config/mayfly/config.toml"), config.to_toml()).unwrap();
}

fn mayfly(stack: &Stack, extra: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(bin("mayfly"))
        .args(args)
        .env_clear()
        .envs(stack.env())
        .envs(extra.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("mayfly runs")
}

/// Runs `mayfly login`, approves the code it prints as `alice`, and returns its stderr.
fn login(stack: &Stack, provider: &OidcProvider, extra: &[(&str, &str)]) -> String {
    let mut child = Command::new(bin("mayfly"))
        .args(["login", "laptop", "--device"])
        .env_clear()
        .envs(stack.env())
        .envs(extra.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mayfly login starts");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut shown = String::new();
    let code = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no user code shown:\n{shown}");
        shown.push_str(&line);
        if let Some((_, code)) = line.trim().split_once("enter the code ") {
            break code.to_owned();
        }
    };
    assert!(shown.contains(&format!("open {}/device", provider.issuer)), "{shown}");
    provider.approve(&code, "alice");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    shown.push_str(&rest);
    let status = child.wait().unwrap();
    assert!(status.success(), "mayfly login failed:\n{shown}\n{}", provider.log());
    assert!(shown.contains(&format!("(or open {}/device?user_code=", provider.issuer)), "{shown}");
    shown
}

fn id_token_expiry(stack: &Stack, extra: &[(&str, &str)]) -> String {
    let out = mayfly(stack, extra, &["status", "--json"]);
    let status: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let laptop = status["identities"].as_array().unwrap().iter().find(|i| i["name"] == "laptop").unwrap().clone();
    assert_eq!(laptop["login"]["sub"], "alice", "{laptop}");
    laptop["login"]["id_token_expires"].as_str().unwrap().to_owned()
}

fn sealed_login(runtime: &Path) -> std::path::PathBuf {
    std::fs::read_dir(runtime)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name().unwrap().to_string_lossy().starts_with("mayfly-login-")
                && p.extension().is_some_and(|e| e == "age")
        })
        .expect("a sealed login in the runtime directory")
}

#[test]
#[cfg_attr(
    any(missing = "git", missing = "node", missing = "oidc-provider"),
    ignore = "needs git, node, oidc-provider: one is not installed"
)]
fn login_clones_refreshes_and_logout_revokes_at_the_provider() {
    if !require_tool("git") || !require_tool("node") {
        return;
    }
    let stack = Stack::builder().start();
    let dir = stack.dir.path();
    let provider = OidcProvider::start(dir, ID_TOKEN_TTL);
    let (listener, sts_url) = mayfly_tests::https_listener();
    let sts_client = StsClient::generate(&sts_url, "login-git");
    let git = GitServer::start(stack.runtime(), dir.join("srv-login"), &stack.ca, &sts_client).expect("git server");
    git.create_repo("org/app.git").expect("repo");
    git.create_repo("org/docs.git").expect("repo");
    // The exchange trusts the provider's ID tokens: their audience is the client id.
    let config = mayfly_sts::ConfigFile {
        issuer: sts_url.clone(),
        audit_log: Some(dir.join("login-sts-audit.jsonl")),
        tls: Some(stack.ca.sts_tls()),
        trusted_issuers: vec![mayfly_sts::TrustedIssuer {
            issuer: provider.issuer.clone(),
            audiences: vec![CLIENT_ID.into()],
            ..Default::default()
        }],
        rules: vec![mayfly_sts::RuleEntry {
            name: Some("alice reads the org".into()),
            issuer: provider.issuer.clone(),
            claims: [("sub".to_owned(), "alice".to_owned())].into(),
            audiences: vec![git.base_url.clone()],
            scopes: vec!["repo:org/app:read".into(), "repo:org/docs:read".into()],
            max_ttl: None,
        }],
        introspection_clients: vec![sts_client.config_entry()],
        ..Default::default()
    };
    let _sts = Killed(spawn_sts_on(dir, "login-sts", listener, &config));
    let git_host = git.base_url.trim_start_matches("https://").to_owned();
    client_config(&stack, &provider.issuer, &sts_url, &git_host);
    let helper = bin("git-credential-mayfly").display().to_string();
    for (key, value) in [
        (format!("credential.{}.helper", git.base_url), String::new()),
        (format!("credential.{}.helper", git.base_url), helper),
        (format!("credential.{}.useHttpPath", git.base_url), "true".to_owned()),
    ] {
        stack.git_ok(&stack.work, &["config", "--global", "--add", &key, &value]);
    }
    // The fallback store: the login sealed in the memory-backed runtime directory.
    let store = [("MAYFLY_KEY_STORE", "runtime")];
    let runtime = stack.runtime_dir.path().join("rt");
    let mut git_env = stack.env();
    git_env.push(("MAYFLY_KEY_STORE".into(), "runtime".into()));
    let clone = |path: &str, into: &str| {
        Command::new("git")
            .args(["clone", &format!("{}/{path}.git", git.base_url), into])
            .current_dir(&stack.work)
            .env_clear()
            .envs(git_env.clone())
            .stdin(Stdio::null())
            .output()
            .expect("git runs")
    };

    // Not logged in: one line that says what to do.
    let out = clone("org/app", "app0");
    assert!(!out.status.success());
    let lines = mayfly_lines(&out.stderr);
    assert!(lines.len() == 1 && lines[0].contains("not logged in: run `mayfly login laptop`"), "{lines:?}");

    let shown = login(&stack, &provider, &store);
    assert!(shown.contains("logged in to `laptop` as alice <alice@example.test>"), "{shown}");
    assert!(shown.contains("memory-backed"), "{shown}");
    let status = String::from_utf8(mayfly(&stack, &store, &["status"]).stdout).unwrap();
    assert!(status.contains("logged in as alice <alice@example.test> since"), "{status}");

    let out = clone("org/app", "app");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Past the ID token's refresh margin: the next subject token is a refreshed one.
    let before = id_token_expiry(&stack, &store);
    std::thread::sleep(Duration::from_secs(ID_TOKEN_TTL));
    let out = clone("org/docs", "docs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let after = id_token_expiry(&stack, &store);
    assert!(after > before, "the ID token was not refreshed: {before} then {after}");

    // A copy of the login taken before logout: its refresh token dies at the provider.
    let sealed = sealed_login(&runtime);
    let copy = std::fs::read(&sealed).unwrap();
    let out = mayfly(&stack, &store, &["logout"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    let host = provider.issuer.trim_start_matches("http://");
    assert!(said.contains(&format!("refresh token revoked at {host}; 2 cached token(s) dropped")), "{said}");
    assert!(!sealed.exists());
    let out = mayfly(&stack, &store, &["status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("not logged in: run `mayfly login laptop`"));
    std::fs::write(&sealed, copy).unwrap();
    std::thread::sleep(Duration::from_secs(ID_TOKEN_TTL));
    let out = clone("org/app", "app2");
    assert!(!out.status.success());
    let lines = mayfly_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("the provider refused to refresh the login: invalid_grant"), "{lines:?}");
    assert!(lines[0].ends_with("run `mayfly login laptop`"), "{lines:?}");
    assert!(!sealed.exists(), "a refused login is dropped");

    stack.assert_no_tokens_on_disk();
}

#[test]
#[cfg_attr(
    any(missing = "node", missing = "oidc-provider"),
    ignore = "needs node, oidc-provider: one is not installed"
)]
fn a_provider_that_is_down_fails_in_one_line_without_hanging() {
    if !require_tool("node") {
        return;
    }
    let stack = Stack::builder().start();
    let mut provider = OidcProvider::start(stack.dir.path(), ID_TOKEN_TTL);
    // Nothing is exchanged here: the identity fails first.
    client_config(&stack, &provider.issuer, &stack.sts.url, "127.0.0.1:9");
    let shown = login(&stack, &provider, &[]);
    assert!(shown.contains("kept in the kernel user keyring"), "{shown}");
    let status = String::from_utf8(mayfly(&stack, &[], &["status"]).stdout).unwrap();
    assert!(status.contains("logged in as alice"), "{status}");

    provider.stop();
    std::thread::sleep(Duration::from_secs(ID_TOKEN_TTL));
    let started = Instant::now();
    let out = assert_cmd::Command::new(bin("git-credential-mayfly"))
        .arg("get")
        .env_clear()
        .envs(stack.env())
        .write_stdin("protocol=https\nhost=127.0.0.1:9\npath=org/app\n")
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    let lines = mayfly_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("cannot refresh the login"), "{lines:?}");
    assert!(lines[0].contains("run `mayfly login laptop`"), "{lines:?}");

    // A login against it fails in one line, too.
    let started = Instant::now();
    let out = mayfly(&stack, &[], &["login", "laptop"]);
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(20));
    let lines = mayfly_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("mayfly: login `laptop`: discovery: request to"), "{lines:?}");

    // Logout still drops the login, and says the revocation failed.
    let out = mayfly(&stack, &[], &["logout", "laptop"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("revoking the refresh token failed"));
    let status = String::from_utf8(mayfly(&stack, &[], &["status"]).stdout).unwrap();
    assert!(status.contains("not logged in"), "{status}");
    stack.assert_no_tokens_on_disk();
}
