//! Two real `mayfly-sts` replicas (same config, own listeners) sharing revocations,
//! approvals and sessions in a real PostgreSQL: a revocation answered by one is seen at the
//! other from the next request on, a request held at one is decided and collected at
//! either (once), a session idles at both alike, and with the database down both fail
//! closed (503) and recover by themselves.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use mayfly_core::{ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT};
use mayfly_tests::postgres::Postgres;
use mayfly_tests::{Stack, https_listener, mayfly_lines, spawn_sts_on};
use serde_json::{Value, json};

/// The stack's exchange is replica A; replica B runs the very config A was started with.
struct Replicas {
    stack: Stack,
    a: String,
    b: String,
    _b: Killed,
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn replicas(postgres: &Postgres) -> Replicas {
    replicas_on(postgres.url())
}

fn replicas_on(url: String) -> Replicas {
    replicas_with(url, |_, _| {})
}

/// Replicas whose config `tweak` changes first.
fn replicas_with(url: String, tweak: impl Fn(&mut mayfly_sts::ConfigFile, &Path) + Send + Sync + 'static) -> Replicas {
    let stack = Stack::builder()
        .git()
        .sts_binary()
        .sts_config(move |config, dir: &Path| {
            tweak(config, dir);
            // Replicas must sign with one key, so each verifies what the other minted.
            let key = dir.join("sts-signing-key.pem");
            let pem = mayfly_sts::SigningKey::generate(mayfly_sts::Algorithm::Es256).unwrap();
            std::fs::write(&key, pem.private_pem()).unwrap();
            config.signing_key = Some(key);
            config.revocation_store = Some(url.clone().into());
        })
        .start();
    let config: mayfly_sts::ConfigFile =
        toml::from_str(&std::fs::read_to_string(stack.dir.path().join("sts.toml")).unwrap()).unwrap();
    let (listener, b) = https_listener();
    let child = spawn_sts_on(stack.dir.path(), "sts-b", listener, &config);
    let a = stack.sts.url.clone();
    Replicas { stack, a, b, _b: Killed(child) }
}

impl Replicas {
    fn exchange(&self, at: &str, form: &[(&str, &str)]) -> (u16, String) {
        let subject = self.stack.issuer.mint("mayfly-sts", &Value::Null);
        let mut full = vec![
            ("grant_type", TOKEN_EXCHANGE_GRANT),
            ("subject_token_type", ID_TOKEN_TYPE),
            ("subject_token", subject.as_str()),
        ];
        full.extend_from_slice(form);
        let response = self.stack.https_client().post(format!("{at}/token")).form(&full).send().unwrap();
        (response.status().as_u16(), response.text().unwrap())
    }

    fn mint(&self, at: &str, form: &[(&str, &str)]) -> String {
        let (status, body) = self.exchange(at, form);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()["access_token"].as_str().unwrap().to_owned()
    }

    fn git_token(&self, at: &str) -> String {
        self.mint(at, &[("audience", &self.stack.git_server().base_url), ("scope", "repo:org/app:read")])
    }

    fn introspect(&self, at: &str, token: &str) -> (u16, String) {
        let client = &self.stack.sts.client;
        let response = self
            .stack
            .https_client()
            .post(format!("{at}/introspect"))
            .basic_auth(&client.client_id, Some(client.client_secret.expose()))
            .form(&[("token", token)])
            .send()
            .unwrap();
        (response.status().as_u16(), response.text().unwrap())
    }

    fn active(&self, at: &str, token: &str) -> bool {
        let (status, body) = self.introspect(at, token);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()["active"] == true
    }

    fn revoke(&self, at: &str, token: &str) {
        let response = self.stack.https_client().post(format!("{at}/revoke")).form(&[("token", token)]).send().unwrap();
        assert_eq!(response.status(), 200);
    }

    /// `POST {at}/approve/{id}` as the person `who` names, deciding `decision`.
    fn decide(&self, at: &str, id: &str, who: &Value, form: &[(&str, &str)]) -> (u16, Value) {
        let approver = self.stack.issuer.mint("mayfly-sts", who);
        let response = self
            .stack
            .https_client()
            .post(format!("{at}/approve/{id}"))
            .bearer_auth(approver)
            .form(form)
            .send()
            .unwrap();
        (response.status().as_u16(), response.json().unwrap())
    }

    fn ready(&self, at: &str) -> (u16, String) {
        let response = self.stack.https_client().get(format!("{at}/readyz")).send().unwrap();
        (response.status().as_u16(), response.text().unwrap())
    }
}

#[test]
#[cfg_attr(missing = "postgres", ignore = "needs postgres, which is not installed")]
fn a_token_minted_at_one_replica_and_revoked_at_the_other_is_dead_at_both() {
    if !mayfly_tests::postgres::require() {
        return;
    }
    let postgres = Postgres::start();
    let r = replicas(&postgres);
    let token = r.git_token(&r.a);
    let other = r.git_token(&r.b);
    assert!(r.active(&r.a, &token) && r.active(&r.b, &token), "each replica vouches for the other's tokens");

    r.revoke(&r.b, &token);
    assert!(!r.active(&r.a, &token), "revoked at B, inactive at A from the next request");
    assert!(!r.active(&r.b, &token));
    assert!(r.active(&r.a, &other) && r.active(&r.b, &other), "only the revoked token is dead");
}

#[test]
#[cfg_attr(missing = "postgres", ignore = "needs postgres, which is not installed")]
fn a_session_revoked_at_one_replica_ends_at_the_other() {
    if !mayfly_tests::postgres::require() {
        return;
    }
    let postgres = Postgres::start();
    let r = replicas(&postgres);
    let intent = r#"{"agent":"claude","session":"s1"}"#;
    let session = r.mint(&r.a, &[("audience", &r.a), ("scope", "session"), ("intent", intent)]);
    let through = |at: &str| {
        r.exchange(
            at,
            &[
                ("actor_token", &session),
                ("actor_token_type", ACCESS_TOKEN_TYPE),
                ("audience", &r.stack.git_server().base_url),
                ("scope", "repo:org/app:write"),
            ],
        )
    };
    let (status, body) = through(&r.b);
    assert_eq!(status, 200, "B accepts the session A opened: {body}");
    let derived = serde_json::from_str::<Value>(&body).unwrap()["access_token"].as_str().unwrap().to_owned();
    let payload = derived.split('.').nth(1).unwrap();
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert!(claims["sid"].is_string(), "{claims}");

    r.revoke(&r.a, &session);
    assert!(!r.active(&r.b, &derived), "what B minted through the session died with it");
    let (status, body) = through(&r.b);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("the session has been revoked"), "{body}");
}

#[test]
#[cfg_attr(missing = "postgres", ignore = "needs postgres, which is not installed")]
fn with_the_database_down_both_replicas_fail_closed_and_resume_when_it_returns() {
    if !mayfly_tests::postgres::require() {
        return;
    }
    let mut postgres = Postgres::start();
    let r = replicas(&postgres);
    let token = r.git_token(&r.a);
    for at in [&r.a, &r.b] {
        assert_eq!(r.ready(at).0, 200, "{}", r.ready(at).1);
    }

    postgres.stop();
    for at in [&r.a, &r.b] {
        let (status, body) =
            r.exchange(at, &[("audience", &r.stack.git_server().base_url), ("scope", "repo:org/app:read")]);
        assert_eq!(status, 503, "{body}");
        assert!(!body.contains("access_token") && body.lines().count() == 1, "{body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["error"], "temporarily_unavailable", "{body}");

        let (status, body) = r.introspect(at, &token);
        assert_eq!(status, 503, "introspection cannot vouch for a token it cannot check: {body}");
        assert_eq!(body.lines().count(), 1, "{body}");

        let (status, why) = r.ready(at);
        assert_eq!(status, 503, "{why}");
        assert_eq!(why.lines().count(), 1, "{why}");
        assert!(why.starts_with("not ready: revocation store (PostgreSQL):"), "{why}");
    }

    postgres.resume();
    for at in [&r.a, &r.b] {
        assert_eq!(r.ready(at).0, 200, "{}", r.ready(at).1);
        assert!(r.active(at, &token));
        r.git_token(at);
    }
    // Each replica logged the outage once and the recovery once, however often it checked,
    // and counted the failed checks.
    for log in ["sts.log", "sts-b.log"] {
        let text = std::fs::read_to_string(r.stack.dir.path().join(log)).unwrap();
        let count = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
        assert_eq!(count("the revocation store is down"), 1, "{text}");
        assert_eq!(count("the revocation store is reachable again"), 1, "{text}");
    }
    for at in [&r.a, &r.b] {
        let metrics = r.stack.https_client().get(format!("{at}/metrics")).send().unwrap().text().unwrap();
        let failed_checks = metrics
            .lines()
            .find_map(|l| l.strip_prefix("mayfly_sts_store_errors_total{operation=\"check\"} "))
            .and_then(|v| v.parse::<u64>().ok());
        assert!(failed_checks.is_some_and(|n| n >= 2), "{metrics}");
    }
}

#[test]
#[cfg_attr(missing = "postgres", ignore = "needs postgres, which is not installed")]
fn the_database_is_reached_over_tls_and_its_certificate_is_verified() {
    if !mayfly_tests::postgres::require() {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let (ours, other) = (certs.path().join("ours"), certs.path().join("other"));
    std::fs::create_dir_all(&ours).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    let ca = mayfly_devstack::DevCa::create(&ours).unwrap();
    let stranger = mayfly_devstack::DevCa::create(&other).unwrap();
    let postgres = Postgres::start_tls(&ca.cert, &ca.key);

    let r = replicas_on(postgres.tls_url(&ca.ca_cert));
    assert_eq!(r.ready(&r.a).0, 200, "{}", r.ready(&r.a).1);
    let token = r.git_token(&r.a);
    r.revoke(&r.a, &token);
    assert!(!r.active(&r.a, &token), "the revocation went through the TLS connection");

    let wrong = replicas_on(postgres.tls_url(&stranger.ca_cert));
    let (status, why) = wrong.ready(&wrong.a);
    assert_eq!(status, 503, "a server certificate from another CA is refused: {why}");
    assert!(why.contains("TLS") || why.contains("certificate"), "{why}");
    let (status, body) =
        wrong.exchange(&wrong.a, &[("audience", &wrong.stack.git_server().base_url), ("scope", "repo:org/app:read")]);
    assert_eq!(status, 503, "{body}");
}

const HELD: &str = r#"
@id("app-writes-need-a-maintainer")
@approval("maintainers")
forbid(principal, action == Action::"write", resource is GitRepository)
when { resource.path == "org/app" }
unless { context.approval.state == "approved" };
"#;

/// Replicas that hold every write to org/app for a maintainer (`user:alice`).
fn held_replicas(postgres: &Postgres) -> Replicas {
    replicas_with(postgres.url(), |config, dir| {
        let policies = dir.join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(policies.join("app.cedar"), HELD).unwrap();
        config.policies = vec![policies];
        config.approval_interval = Some("1s".into());
        config.same_person_claim = Some("email".into());
        let issuer = config.trusted_issuers[0].issuer.clone();
        config.approvers = vec![mayfly_sts::ApproverEntry {
            name: "maintainers".into(),
            issuer,
            claims: [("sub".to_owned(), "user:*".to_owned())].into(),
        }];
    })
}

fn alice() -> Value {
    json!({"sub": "user:alice", "email": "alice@example.com"})
}

/// The id of the newest approval replica A opened, once there is one other than `previous`.
fn pending_approval(stack: &Stack, previous: Option<&str>) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pending = stack.sts_audit().into_iter().rev().find(|l| l["outcome"] == "pending");
        let id = pending.and_then(|l| l["approval"].as_str().map(str::to_owned));
        if let Some(id) = id.filter(|id| Some(id.as_str()) != previous) {
            return id;
        }
        assert!(Instant::now() < deadline, "no approval was opened: {:?}", stack.sts_audit());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `git push` of a new commit to org/app in the background, through the stack's helper
/// (which asks replica A).
fn push(stack: &Stack, name: &str) -> Child {
    stack.git_ok(&stack.work, &["clone", "-q", &stack.repo_url("org/app.git"), name]);
    let tree = stack.work.join(name);
    stack.commit_file(&tree, &format!("{name}.txt"));
    stack.git_cmd(&tree, &["push", "origin", "main"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

#[test]
#[cfg_attr(any(missing = "postgres", missing = "git"), ignore = "needs postgres and git, which are not installed")]
fn a_push_held_at_one_replica_is_decided_at_the_other_and_collected_where_it_waits() {
    if !mayfly_tests::postgres::require() || !mayfly_tests::require_tool("git") {
        return;
    }
    let postgres = Postgres::start();
    let r = held_replicas(&postgres);

    // Denied at B: the push waiting at A ends with B's approver's reason.
    let waiting = push(&r.stack, "denied");
    let denied_id = pending_approval(&r.stack, None);
    let (status, body) = r.decide(&r.b, &denied_id, &alice(), &[("decision", "deny"), ("reason", "not today")]);
    assert_eq!((status, body["status"].as_str()), (200, Some("denied")), "{body}");
    let out = waiting.wait_with_output().unwrap();
    assert!(!out.status.success(), "a denied push went through");
    let lines = mayfly_lines(&out.stderr);
    assert!(lines.iter().any(|l| l.contains("not today")), "{lines:?}");

    // Approved at B: the push waiting at A goes through with the one token it yields.
    let waiting = push(&r.stack, "approved");
    let id = pending_approval(&r.stack, Some(&denied_id));
    let requester = r.decide(&r.b, &id, &json!({}), &[("decision", "approve")]);
    assert_eq!(requester.0, 403, "the requester cannot approve its own push at B either: {}", requester.1);
    let (status, body) = r.decide(&r.b, &id, &alice(), &[("decision", "approve")]);
    assert_eq!((status, body["status"].as_str()), (200, Some("approved")), "{body}");
    let (status, body) = r.decide(&r.a, &id, &alice(), &[("decision", "deny")]);
    assert_eq!(status, 409, "A sees the decision B recorded: {body}");
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success(), "the approved push failed: {}", String::from_utf8_lossy(&out.stderr));
    let issued = r.stack.sts_audit().into_iter().find(|l| l["outcome"] == "issued" && l["approval"] == id.as_str());
    assert!(issued.is_some_and(|l| l["scope"] == "repo:org/app:write"), "{:?}", r.stack.sts_audit());
    r.stack.assert_no_tokens_on_disk();
}

#[test]
#[cfg_attr(missing = "postgres", ignore = "needs postgres, which is not installed")]
fn an_approval_collected_at_both_replicas_at_once_yields_one_token() {
    if !mayfly_tests::postgres::require() {
        return;
    }
    let postgres = Postgres::start();
    let r = held_replicas(&postgres);
    let git = r.stack.git_server().base_url.clone();
    let form = [("audience", git.as_str()), ("scope", "repo:org/app:write")];
    let (status, body) = r.exchange(&r.a, &form);
    assert_eq!(status, 400, "{body}");
    let held: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(held["error"], "authorization_pending", "{body}");
    let (id, code) = (held["approval_id"].as_str().unwrap(), held["approval_code"].as_str().unwrap());
    let hashed = format!("SELECT count(*) FROM mayfly_approvals WHERE code_sha256 = sha256('{code}'::bytea)");
    assert_eq!(postgres.psql(&hashed), "1", "the approval is found by its code's SHA-256");
    let clear = format!("SELECT count(*) FROM mayfly_approvals a WHERE a::text LIKE '%{code}%'");
    assert_eq!(postgres.psql(&clear), "0", "and the code is nowhere in clear");
    let (status, body) = r.decide(&r.b, id, &alice(), &[("decision", "approve")]);
    assert_eq!(status, 200, "{body}");

    let collect: Vec<(&str, &str)> = form.iter().copied().chain([("approval_code", code)]).collect();
    let start = std::sync::Barrier::new(2);
    let replicas = &r;
    let answers: Vec<(u16, String)> = std::thread::scope(|s| {
        let racers: Vec<_> = [replicas.a.as_str(), replicas.b.as_str()]
            .into_iter()
            .map(|at| {
                let (collect, start) = (&collect, &start);
                s.spawn(move || {
                    start.wait();
                    replicas.exchange(at, collect)
                })
            })
            .collect();
        racers.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let won: Vec<_> = answers.iter().filter(|(status, _)| *status == 200).collect();
    assert_eq!(won.len(), 1, "exactly one replica hands out the token: {answers:?}");
    let lost = answers.iter().find(|(status, _)| *status != 200).unwrap();
    assert_eq!(lost.0, 400, "{lost:?}");
    assert!(lost.1.contains("invalid_grant") && lost.1.contains("already used"), "{lost:?}");
    let (status, body) = r.exchange(&r.a, &collect);
    assert!(status == 400 && body.contains("already used"), "and never again: {body}");
}

#[test]
#[cfg_attr(missing = "postgres", ignore = "needs postgres, which is not installed")]
fn a_session_left_idle_at_one_replica_is_idle_at_the_other() {
    if !mayfly_tests::postgres::require() {
        return;
    }
    let postgres = Postgres::start();
    let r = replicas_with(postgres.url(), |config, _| config.session_idle = Some("2s".into()));
    let intent = r#"{"agent":"claude","session":"s1"}"#;
    let session = r.mint(&r.a, &[("audience", &r.a), ("scope", "session"), ("intent", intent)]);
    let through = |at: &str| {
        r.exchange(
            at,
            &[
                ("actor_token", &session),
                ("actor_token_type", ACCESS_TOKEN_TYPE),
                ("audience", &r.stack.git_server().base_url),
                ("scope", "repo:org/app:read"),
            ],
        )
    };
    // Opened at A, then unused anywhere for longer than the idle time: B, which never saw
    // it used, knows it idled out.
    std::thread::sleep(Duration::from_secs(3));
    let (status, body) = through(&r.b);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("the session ended after 2s idle"), "{body}");
    let (status, body) = through(&r.a);
    assert_eq!(status, 400, "ended at B, ended at A: {body}");
}

#[test]
#[cfg_attr(missing = "postgres", ignore = "needs postgres, which is not installed")]
fn expiry_and_the_cap_on_pending_approvals_hold_in_the_database() {
    if !mayfly_tests::postgres::require() {
        return;
    }
    let postgres = Postgres::start();
    let r = held_replicas(&postgres);
    let git = r.stack.git_server().base_url.clone();
    let form = [("audience", git.as_str()), ("scope", "repo:org/app:write")];
    let (status, body) = r.exchange(&r.a, &form);
    assert_eq!(status, 400, "{body}");
    let held: Value = serde_json::from_str(&body).unwrap();
    let (id, code) = (held["approval_id"].as_str().unwrap(), held["approval_code"].as_str().unwrap());

    // Expired a minute ago by the database's clock: B refuses to decide it, A to hand
    // anything out.
    postgres.psql(&format!(
        "UPDATE mayfly_approvals SET expires_at = (extract(epoch from now()) * 1000)::bigint - 60000 WHERE id = '{id}'"
    ));
    let (status, body) = r.decide(&r.b, id, &alice(), &[("decision", "approve")]);
    assert_eq!((status, body["error"].as_str()), (410, Some("expired_token")), "{body}");
    let collect: Vec<(&str, &str)> = form.iter().copied().chain([("approval_code", code)]).collect();
    let (status, body) = r.exchange(&r.a, &collect);
    assert!(status == 400 && body.contains("expired_token"), "{body}");

    // 1,000 requests waiting (as if held at other replicas): the next is refused, at either.
    postgres.psql(
        "INSERT INTO mayfly_approvals (id, code_sha256, request, state, expires_at, interval_ms, last_poll)
         SELECT md5(i::text), sha256(i::text::bytea), '{}', 'pending',
                (extract(epoch from now()) * 1000)::bigint + 600000, 5000, 0
         FROM generate_series(1, 1000) AS i",
    );
    for at in [&r.a, &r.b] {
        let (status, body) = r.exchange(at, &form);
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("1000 approvals are waiting already") && body.lines().count() == 1, "{body}");
    }
    let metrics = r.stack.https_client().get(format!("{}/metrics", r.b)).send().unwrap().text().unwrap();
    assert!(metrics.lines().any(|l| l == "mayfly_sts_approvals_pending 1000"), "B counts every replica's: {metrics}");
}
