//! The real `mayfly-sts` as a service manager runs it: signing keys rotated without
//! downtime, SIGHUP reloading its config (rules, keys) while keeping the old one when the
//! new one is bad, and SIGTERM draining the requests in flight before it exits.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use base64::Engine;
use mayfly_devstack::StsClient;
use mayfly_sts::{ConfigFile, KeyState, RuleEntry, SigningKeyEntry};
use mayfly_tests::{Stack, bin, read_json_lines, spawn_sts_on};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

/// A `mayfly-sts` process of a test's own, killed when the test ends.
struct Exchange {
    child: Child,
    url: String,
    config: PathBuf,
    log: PathBuf,
    client: StsClient,
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Exchange {
    /// Starts the exchange with the config `build` makes for its URL and introspection client.
    fn start(stack: &Stack, name: &str, build: impl Fn(&str, &StsClient) -> ConfigFile) -> Self {
        let dir = stack.dir.path();
        let (listener, url) = mayfly_tests::https_listener();
        let client = StsClient::generate(&url, "lifecycle");
        let child = spawn_sts_on(dir, name, listener, &build(&url, &client));
        Self { child, url, config: dir.join(format!("{name}.toml")), log: dir.join(format!("{name}.log")), client }
    }

    fn signal(&self, signal: Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// Writes a new config and sends SIGHUP; waits for the `count`th line with `needle`.
    fn reload(&self, config: &str, needle: &str, count: usize) {
        std::fs::write(&self.config, config).unwrap();
        self.signal(Signal::SIGHUP);
        wait_for_log(&self.log, needle, count);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Waits until `needle` is on `count` lines of the log.
fn wait_for_log(log: &Path, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().filter(|l| l.contains(needle)).count() >= count {
            return;
        }
        assert!(Instant::now() < deadline, "`{needle}` not logged {count} time(s):\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A rule granting reads of the subject's own repository on `audience`.
fn rule(stack: &Stack, audience: &str, scope: &str) -> RuleEntry {
    RuleEntry {
        name: Some(format!("reads on {audience}")),
        issuer: stack.issuer.issuer().into(),
        claims: [("repository".to_owned(), "org/app".to_owned())].into(),
        audiences: vec![audience.into()],
        scopes: vec![scope.into()],
        max_ttl: None,
    }
}

fn base_config(stack: &Stack, url: &str, client: &StsClient, audit: PathBuf) -> ConfigFile {
    ConfigFile {
        issuer: url.to_owned(),
        audit_log: Some(audit),
        tls: Some(stack.ca.sts_tls()),
        trusted_issuers: vec![stack.issuer.trusted(&["mayfly-sts"])],
        introspection_clients: vec![client.config_entry()],
        ..Default::default()
    }
}

/// One token exchange for org/app: the status and the JSON answer.
fn exchange(stack: &Stack, url: &str, audience: &str, scope: &str) -> (u16, Value) {
    let subject = stack.issuer.mint("mayfly-sts", &json!({"repository": "org/app"}));
    let form = [
        ("grant_type", mayfly_core::TOKEN_EXCHANGE_GRANT),
        ("subject_token", &subject),
        ("subject_token_type", mayfly_core::ID_TOKEN_TYPE),
        ("audience", audience),
        ("scope", scope),
    ];
    let response = stack.https_client().post(format!("{url}/token")).form(&form).send().expect("answers");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn minted(answer: (u16, Value)) -> String {
    assert_eq!(answer.0, 200, "{}", answer.1);
    answer.1["access_token"].as_str().expect("a token").to_owned()
}

/// A JWT's header or claims (`part` 0 or 1).
fn jwt_part(token: &str, part: usize) -> Value {
    let segment = token.split('.').nth(part).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
}

fn kids(sts: &Exchange, stack: &Stack) -> Vec<String> {
    let jwks: Value =
        stack.https_client().get(format!("{}/.well-known/jwks.json", sts.url)).send().unwrap().json().unwrap();
    jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
}

fn introspected_active(sts: &Exchange, stack: &Stack, token: &str) -> Value {
    let response = stack
        .https_client()
        .post(format!("{}/introspect", sts.url))
        .basic_auth(&sts.client.client_id, Some(sts.client.client_secret.expose()))
        .form(&[("token", token)])
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json::<Value>().unwrap()["active"].clone()
}

fn registry_status(sts: &Exchange, stack: &Stack, token: &str) -> u16 {
    stack
        .https_client()
        .get(format!("{}/registry/token", sts.url))
        .query(&[("service", "registry.example"), ("scope", "repository:test/app:pull")])
        .basic_auth("mayfly", Some(token))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

/// A fresh P-256 key in a PEM file.
fn key_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let key = mayfly_sts::SigningKey::generate(mayfly_sts::Algorithm::Es256).unwrap();
    std::fs::write(&path, key.private_pem()).unwrap();
    path
}

#[test]
fn a_rotated_out_key_verifies_its_tokens_while_published_and_none_once_retired() {
    let stack = Stack::builder().start();
    let dir = stack.dir.path();
    let (old, new) = (key_file(dir, "old.pem"), key_file(dir, "new.pem"));
    let keys = |old_state, new_state| {
        let mut keys = vec![SigningKeyEntry { file: old.clone(), kid: Some("2025-12".into()), state: old_state }];
        if let Some(state) = new_state {
            keys.push(SigningKeyEntry { file: new.clone(), kid: Some("2026-06".into()), state });
        }
        keys
    };
    let config = |url: &str, client: &StsClient, signing_keys| ConfigFile {
        signing_keys,
        rules: vec![rule(&stack, "registry.example", "oci:registry.example/test/*:read")],
        ..base_config(&stack, url, client, dir.join("keys-audit.jsonl"))
    };
    let sts = Exchange::start(&stack, "keys-sts", |url, client| config(url, client, keys(KeyState::Active, None)));
    let mint = || minted(exchange(&stack, &sts.url, "registry.example", "oci:registry.example/test/*:read"));
    let old_token = mint();
    assert_eq!(jwt_part(&old_token, 0)["kid"], "2025-12");
    assert_eq!(kids(&sts, &stack), ["2025-12"]);

    // Step 1: the new key is published; verifiers' caches learn it, nothing is signed with it.
    let text = |signing_keys| config(&sts.url, &sts.client, signing_keys).to_toml();
    sts.reload(&text(keys(KeyState::Active, Some(KeyState::Published))), "config reloaded", 1);
    assert_eq!(kids(&sts, &stack), ["2025-12", "2026-06"]);
    assert_eq!(jwt_part(&mint(), 0)["kid"], "2025-12");

    // Step 2: the new key signs; the old one is still published, its tokens still good.
    sts.reload(&text(keys(KeyState::Published, Some(KeyState::Active))), "config reloaded", 2);
    let new_token = mint();
    assert_eq!(jwt_part(&new_token, 0)["kid"], "2026-06");
    assert_eq!(kids(&sts, &stack), ["2025-12", "2026-06"]);
    assert_eq!(introspected_active(&sts, &stack, &old_token), true);
    assert_eq!(registry_status(&sts, &stack, &old_token), 200);
    let certificates = stack.https_client().get(format!("{}/registry/cert.pem", sts.url)).send().unwrap();
    assert_eq!(certificates.text().unwrap().matches("BEGIN CERTIFICATE").count(), 2);

    // Step 3: the old key is retired; its tokens are refused everywhere, the new ones not.
    sts.reload(&text(keys(KeyState::Retired, Some(KeyState::Active))), "config reloaded", 3);
    assert_eq!(kids(&sts, &stack), ["2026-06"]);
    assert_eq!(introspected_active(&sts, &stack, &old_token), false);
    assert_eq!(registry_status(&sts, &stack, &old_token), 401);
    assert_eq!(introspected_active(&sts, &stack, &new_token), true);
    assert_eq!(registry_status(&sts, &stack, &new_token), 200);
    let log = sts.log();
    assert!(log.contains("signing keys: 2025-12 retired, 2026-06 active"), "{log}");
    assert!(!log.contains(&old_token) && !log.contains(&new_token), "a token in the log");
}

#[test]
fn two_active_keys_stop_the_start_with_one_line() {
    let stack = Stack::builder().start();
    let dir = stack.dir.path();
    let config = ConfigFile {
        signing_keys: ["a.pem", "b.pem"]
            .map(|name| SigningKeyEntry { file: key_file(dir, name), kid: None, state: KeyState::Active })
            .into(),
        ..base_config(&stack, "https://127.0.0.1:1", &StsClient::generate("https://x", "c"), dir.join("two.jsonl"))
    };
    let path = dir.join("two-active.toml");
    std::fs::write(&path, config.to_toml()).unwrap();
    let out = std::process::Command::new(bin("mayfly-sts")).arg("--config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("2 keys are `active`; exactly one signs"), "{stderr}");
}

#[test]
fn a_socket_handed_over_on_a_public_address_is_refused_without_tls() {
    use command_fds::{CommandFdExt, FdMapping};
    let stack = Stack::builder().start();
    let dir = stack.dir.path();
    let config = ConfigFile {
        tls: None,
        ..base_config(&stack, "http://127.0.0.1:1", &StsClient::generate("https://x", "c"), dir.join("public.jsonl"))
    };
    let path = dir.join("public.toml");
    std::fs::write(&path, config.to_toml()).unwrap();
    // `listen` is loopback in the config; the socket a service manager hands over is not.
    let public = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let mut command = std::process::Command::new(bin("mayfly-sts"));
    command.arg("--config").arg(&path).env_remove("LISTEN_PID").env("LISTEN_FDS", "1");
    command.fd_mappings(vec![FdMapping { parent_fd: std::os::fd::OwnedFd::from(public), child_fd: 3 }]).unwrap();
    let mut child = command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("mayfly-sts serves plain HTTP on a public address");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("without [tls]: plain HTTP is only allowed on loopback"), "{stderr}");
}

#[test]
fn sighup_applies_a_changed_config_and_keeps_the_old_one_when_the_new_one_is_bad() {
    let stack = Stack::builder().start();
    let dir = stack.dir.path();
    let (a, b) = ("https://a.example", "https://b.example");
    let config = |url: &str, client: &StsClient, rules| ConfigFile {
        rules,
        ..base_config(&stack, url, client, dir.join("reload-audit.jsonl"))
    };
    let sts = Exchange::start(&stack, "reload-sts", |url, client| {
        config(url, client, vec![rule(&stack, a, "repo:{repository}:read")])
    });
    let scope = "repo:org/app:read";
    assert_eq!(exchange(&stack, &sts.url, a, scope).0, 200);
    let refused = exchange(&stack, &sts.url, b, scope);
    assert_eq!((refused.0, refused.1["error"].as_str()), (400, Some("invalid_target")), "{}", refused.1);

    // The rule moves from a to b: what was refused passes, and what passed is refused.
    let moved = config(&sts.url, &sts.client, vec![rule(&stack, b, "repo:{repository}:read")]).to_toml();
    sts.reload(&moved, "config reloaded: 1 rules", 1);
    assert_eq!(exchange(&stack, &sts.url, b, scope).0, 200);
    assert_eq!(exchange(&stack, &sts.url, a, scope).0, 400);

    // A config that does not parse is refused in one line; the one in force keeps serving.
    sts.reload(&moved.replace("[[rules]]", "[[rules"), "config reload failed, keeping the config in force", 1);
    assert_eq!(exchange(&stack, &sts.url, b, scope).0, 200);
    // So is one that changes what only a restart can change.
    let audit_moved = ConfigFile { audit_log: Some(dir.join("elsewhere.jsonl")), ..toml::from_str(&moved).unwrap() };
    sts.reload(&audit_moved.to_toml(), "config reload failed", 2);
    assert!(sts.log().contains("`audit_log` cannot change without a restart"), "{}", sts.log());
    assert_eq!(exchange(&stack, &sts.url, b, scope).0, 200);
    let failures: Vec<_> = sts.log().lines().filter(|l| l.contains("reload failed")).map(str::to_owned).collect();
    assert_eq!(failures.len(), 2, "{failures:?}");
    // Every line the exchange logged is one `mayfly-sts:` line.
    assert!(sts.log().lines().all(|l| l.starts_with("mayfly-sts: ")), "{}", sts.log());
    assert!(!dir.join("elsewhere.jsonl").exists());
}

/// A JWKS endpoint that holds the first request it gets until told to answer.
struct HeldJwks {
    url: String,
    arrived: std::sync::mpsc::Receiver<()>,
    release: std::sync::mpsc::Sender<()>,
}

impl HeldJwks {
    fn start(jwk: Value) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let (arrived_tx, arrived) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            arrived_tx.send(()).unwrap();
            let _ = release_rx.recv();
            let body = json!({"keys": [jwk]}).to_string();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(format!("{head}{body}").as_bytes());
        });
        Self { url, arrived, release }
    }
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_writes_its_audit_line_and_exits_zero() {
    let stack = Stack::builder().start();
    let dir = stack.dir.path();
    let audit = dir.join("drain-audit.jsonl");
    let jwks = HeldJwks::start(stack.issuer.jwk().clone());
    let mut sts = Exchange::start(&stack, "drain-sts", |url, client| ConfigFile {
        trusted_issuers: vec![mayfly_sts::TrustedIssuer {
            jwks_uri: Some(jwks.url.clone()),
            ..stack.issuer.trusted(&["mayfly-sts"])
        }],
        rules: vec![rule(&stack, "https://a.example", "repo:{repository}:read")],
        ..base_config(&stack, url, client, audit.clone())
    });
    let address = sts.url.trim_start_matches("https://").to_owned();

    // The exchange is in flight: it waits for the issuer's keys.
    let in_flight = std::thread::scope(|scope| {
        let request = scope.spawn(|| exchange(&stack, &sts.url, "https://a.example", "repo:org/app:read"));
        jwks.arrived.recv_timeout(Duration::from_secs(20)).expect("the exchange fetches the issuer's keys");
        sts.signal(Signal::SIGTERM);
        wait_for_log(&sts.log, "SIGTERM: accepting no new connections", 1);
        // No new connection is taken while the request in flight finishes.
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&address).is_ok() {
            assert!(Instant::now() < deadline, "still accepting connections after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        jwks.release.send(()).unwrap();
        request.join().unwrap()
    });
    let token = minted(in_flight);
    let status = sts.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", sts.log());
    let jti = jwt_part(&token, 1)["jti"].as_str().unwrap().to_owned();
    let lines = read_json_lines(&audit);
    assert!(lines.iter().any(|l| l["outcome"] == "issued" && l["jti"] == jti.as_str()), "{lines:?}");
}

/// A client that trusts only this CA, opening a new connection per request.
fn trusting_only(ca: &mayfly_devstack::DevCa) -> reqwest::blocking::Client {
    let pem = std::fs::read(&ca.ca_cert).unwrap();
    reqwest::blocking::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
        .pool_max_idle_per_host(0)
        .no_proxy()
        .build()
        .unwrap()
}

#[test]
fn sighup_serves_the_renewed_tls_certificate() {
    let stack = Stack::builder().start();
    let dir = stack.dir.path();
    let renewed_dir = dir.join("renewed-ca");
    std::fs::create_dir_all(&renewed_dir).unwrap();
    let renewed = mayfly_devstack::DevCa::create(&renewed_dir).unwrap();
    // The exchange's own copy of its certificate, replaced in place as a renewal does.
    let (cert, key) = (dir.join("tls-sts.pem"), dir.join("tls-sts-key.pem"));
    std::fs::copy(&stack.ca.cert, &cert).unwrap();
    std::fs::copy(&stack.ca.key, &key).unwrap();
    let config = |url: &str, client: &StsClient| ConfigFile {
        tls: Some(mayfly_sts::Tls { cert: cert.clone(), key: key.clone() }),
        ..base_config(&stack, url, client, dir.join("tls-audit.jsonl"))
    };
    let sts = Exchange::start(&stack, "tls-sts", config);
    let healthz = |client: &reqwest::blocking::Client| client.get(format!("{}/healthz", sts.url)).send().is_ok();
    let (old_ca, new_ca) = (trusting_only(&stack.ca), trusting_only(&renewed));
    assert!(healthz(&old_ca) && !healthz(&new_ca));

    std::fs::copy(&renewed.cert, &cert).unwrap();
    std::fs::copy(&renewed.key, &key).unwrap();
    sts.reload(&config(&sts.url, &sts.client).to_toml(), "config reloaded", 1);
    assert!(healthz(&new_ca) && !healthz(&old_ca));
}
