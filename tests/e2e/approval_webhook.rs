//! The approval webhook: a request an `@approval` forbid holds back is announced to a
//! receiver (signed, without the approval code), its decision too; a receiver that fails
//! is retried, and one that never answers delays nothing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use mayfly_core::{ID_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT};
use mayfly_tests::Stack;
use serde_json::{Value, json};
use sha2::Sha256;

const AUDIENCE: &str = "https://git.example";
const RELEASE: &str = "repo:org/release:write";
const SECRET: &str = "whsec-approval-test";
const INTENT: &str = r#"{"tool":"git","operation":"write","command":["git","push","origin","main"]}"#;

const POLICIES: &str = r#"
@id("release")
@approval("release-managers")
forbid(principal, action == Action::"write", resource is GitRepository)
when { resource.path == "org/release" }
unless { context.approval.state == "approved" };
"#;

/// One POST the receiver got.
#[derive(Clone, Debug)]
struct Received {
    headers: HeaderMap,
    body: String,
}

/// A webhook receiver on loopback: records each POST and answers the statuses scripted,
/// then 200.
#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<Vec<StatusCode>>>,
}

impl Receiver {
    fn start(stack: &Stack, script: &[StatusCode]) -> (Self, String) {
        let receiver = Self { script: Arc::new(Mutex::new(script.to_vec())), ..Self::default() };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/hooks/approvals", listener.local_addr().unwrap());
        let state = receiver.clone();
        let app = axum::Router::new().route(
            "/hooks/approvals",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let state = state.clone();
                async move {
                    state.received.lock().unwrap().push(Received { headers, body });
                    let mut script = state.script.lock().unwrap();
                    if script.is_empty() { StatusCode::OK } else { script.remove(0) }
                }
            }),
        );
        stack.runtime().spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
        (receiver, url)
    }

    /// The POSTs so far, once there are at least `count` (waiting up to 20 s).
    fn wait_for(&self, count: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let received = self.received.lock().unwrap().clone();
            if received.len() >= count {
                return received;
            }
            assert!(Instant::now() < deadline, "{} of {count} deliveries arrived", received.len());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

struct Exchange {
    url: String,
    client: reqwest::blocking::Client,
}

fn exchange(stack: &Stack, name: &str, webhook: mayfly_sts::ApprovalWebhookEntry) -> Exchange {
    let dir = stack.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("release.cedar"), POLICIES).unwrap();
    let (listener, url) = mayfly_tests::https_listener();
    let issuer = stack.issuer.issuer().to_owned();
    let config = mayfly_sts::ConfigFile {
        issuer: url.clone(),
        audit_log: Some(dir.join("audit.jsonl")),
        policies: vec![dir.clone()],
        tls: Some(stack.ca.sts_tls()),
        trusted_issuers: vec![stack.issuer.trusted(&["mayfly-sts"])],
        rules: vec![mayfly_sts::RuleEntry {
            name: Some("people push org".into()),
            issuer: issuer.clone(),
            claims: [("email".to_owned(), "*@example.com".to_owned())].into(),
            audiences: vec![AUDIENCE.into()],
            scopes: vec!["repo:org/*:write".into()],
            max_ttl: None,
        }],
        approval_interval: Some("1s".into()),
        approvers: vec![mayfly_sts::ApproverEntry {
            name: "release-managers".into(),
            issuer,
            claims: [("email".to_owned(), "*@example.com".to_owned())].into(),
        }],
        approval_webhook: Some(webhook),
        ..Default::default()
    };
    let sts = mayfly_sts::Sts::new(mayfly_sts::Config::from_file(config).expect("config"), None).expect("mayfly-sts");
    stack.runtime().spawn(mayfly_sts::serve(sts, listener));
    Exchange { url, client: stack.https_client() }
}

fn person(stack: &Stack, sub: &str, email: &str) -> String {
    stack.issuer.mint("mayfly-sts", &json!({"sub": sub, "email": email}))
}

impl Exchange {
    fn token(&self, subject_token: &str, code: Option<&str>) -> (u16, Value) {
        let mut form = vec![
            ("grant_type", TOKEN_EXCHANGE_GRANT),
            ("subject_token", subject_token),
            ("subject_token_type", ID_TOKEN_TYPE),
            ("audience", AUDIENCE),
            ("scope", RELEASE),
            ("intent", INTENT),
        ];
        if let Some(code) = code {
            form.push(("approval_code", code));
        }
        let response = self.client.post(format!("{}/token", self.url)).form(&form).send().unwrap();
        (response.status().as_u16(), response.json().unwrap())
    }

    fn decide(&self, uri: &str, approver: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let response = self.client.post(uri).bearer_auth(approver).form(form).send().unwrap();
        (response.status().as_u16(), response.json().unwrap())
    }
}

/// The pending answer's approval URI and code.
fn pending(answer: &Value) -> (String, String) {
    assert_eq!(answer["error"], "authorization_pending", "{answer}");
    (answer["approval_uri"].as_str().unwrap().to_owned(), answer["approval_code"].as_str().unwrap().to_owned())
}

fn header<'a>(received: &'a Received, name: &str) -> &'a str {
    received.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no {name} header"))
}

/// Checks the signature as a receiver would: fresh timestamp, HMAC over `{t}.{body}`.
fn assert_signed(received: &Received) {
    let signature = header(received, "x-mayfly-signature");
    let (t, v1) = signature
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
        .unwrap_or_else(|| panic!("signature `{signature}` is not `t=..,v1=..`"));
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((now - t.parse::<i64>().unwrap()).abs() < 60, "stale timestamp {t}");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", received.body).as_bytes());
    mac.verify_slice(&hex::decode(v1).unwrap()).expect("the signature verifies");
    // The same signature over another body does not.
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{} ", received.body).as_bytes());
    assert!(mac.verify_slice(&hex::decode(v1).unwrap()).is_err());
}

#[test]
fn pending_and_decided_approvals_are_announced_signed_and_without_the_code() {
    let stack = Stack::builder().start();
    let (receiver, hook_url) = Receiver::start(&stack, &[]);
    let secret_file = stack.dir.path().join("webhook-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let webhook =
        mayfly_sts::ApprovalWebhookEntry { url: hook_url, secret_file: Some(secret_file), ..Default::default() };
    let sts = exchange(&stack, "webhook-sts", webhook);
    let bob = person(&stack, "user:bob", "bob@example.com");
    let alice = person(&stack, "user:alice", "alice@example.com");

    let (status, answer) = sts.token(&bob, None);
    assert_eq!(status, 400, "{answer}");
    let (uri, code) = pending(&answer);
    let id = answer["approval_id"].as_str().unwrap().to_owned();

    let received = receiver.wait_for(1);
    let announced = &received[0];
    assert_eq!(header(announced, "content-type"), "application/json");
    assert_eq!(header(announced, "x-mayfly-event"), "approval.pending");
    let delivery = header(announced, "x-mayfly-delivery").to_owned();
    assert!(delivery.len() == 32 && delivery.bytes().all(|b| b.is_ascii_hexdigit()), "{delivery}");
    assert_signed(announced);
    assert!(!announced.body.contains(&code), "the approval code was announced");
    assert!(!announced.body.contains(&bob), "the subject token was announced");
    let body: Value = serde_json::from_str(&announced.body).unwrap();
    assert!(body.get("approval_code").is_none() && body.get("actor").is_none(), "{body}");
    assert_eq!(body["event"], "approval.pending");
    assert_eq!((body["id"].as_str(), body["approval_uri"].as_str()), (Some(id.as_str()), Some(uri.as_str())));
    assert_eq!((body["operation"].as_str(), body["target"].as_str()), (Some("write"), Some("git.example/org/release")));
    assert_eq!(body["requester"], json!({"issuer": stack.issuer.issuer(), "subject": "user:bob"}));
    assert_eq!(body["intent"]["claimed"]["command"], json!(["git", "push", "origin", "main"]));
    assert_eq!((body["policy"].as_str(), body["group"].as_str()), (Some("release"), Some("release-managers")));
    let expires_at = time::OffsetDateTime::parse(
        body["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let left = expires_at - time::OffsetDateTime::now_utc();
    assert!(left > time::Duration::minutes(9) && left <= time::Duration::minutes(10), "{left}");

    // The decision is announced too, naming the approver and the reason.
    let (status, _) = sts.decide(&uri, &alice, &[("decision", "approve"), ("reason", "release 1.2")]);
    assert_eq!(status, 200);
    let received = receiver.wait_for(2);
    let decided = &received[1];
    assert_eq!(header(decided, "x-mayfly-event"), "approval.approved");
    assert_ne!(header(decided, "x-mayfly-delivery"), delivery);
    assert_signed(decided);
    let body: Value = serde_json::from_str(&decided.body).unwrap();
    assert_eq!((body["event"].as_str(), body["id"].as_str()), (Some("approval.approved"), Some(id.as_str())));
    assert_eq!(
        body["approver"],
        json!({"issuer": stack.issuer.issuer(), "subject": "user:alice", "email": "alice@example.com"})
    );
    assert_eq!(body["reason"], "release 1.2");
    assert!(!decided.body.contains(&code) && !decided.body.contains(&alice));
    assert_eq!(sts.token(&bob, Some(&code)).0, 200);
}

#[test]
fn a_failing_receiver_is_retried_while_the_request_stays_pending() {
    let stack = Stack::builder().start();
    let failing = [StatusCode::INTERNAL_SERVER_ERROR, StatusCode::INTERNAL_SERVER_ERROR];
    let (receiver, hook_url) = Receiver::start(&stack, &failing);
    let sts = exchange(&stack, "retry-sts", mayfly_sts::ApprovalWebhookEntry { url: hook_url, ..Default::default() });
    let bob = person(&stack, "user:bob", "bob@example.com");
    let alice = person(&stack, "user:alice", "alice@example.com");

    let started = Instant::now();
    let (uri, code) = pending(&sts.token(&bob, None).1);
    // Two 500s, then 200 after backoffs of 1 s and 2 s: three attempts of one delivery.
    let received = receiver.wait_for(3);
    assert!(started.elapsed() >= Duration::from_secs(3), "retried after {:?}", started.elapsed());
    let deliveries: Vec<&str> = received.iter().map(|r| header(r, "x-mayfly-delivery")).collect();
    assert!(deliveries.iter().all(|d| *d == deliveries[0]), "{deliveries:?}");
    assert!(received.iter().all(|r| r.body == received[0].body && r.headers.get("x-mayfly-signature").is_none()));
    // Delivered: no fourth attempt.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(receiver.received.lock().unwrap().len(), 3);

    // Meanwhile and after, the request is pending, and collectable once approved.
    let (status, answer) = sts.token(&bob, Some(&code));
    assert_eq!((status, answer["error"].as_str()), (400, Some("authorization_pending")), "{answer}");
    assert_eq!(sts.decide(&uri, &alice, &[("decision", "approve")]).0, 200);
    let (status, answer) = sts.token(&bob, Some(&code));
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn a_receiver_that_never_answers_delays_nothing() {
    let stack = Stack::builder().start();
    // Connections complete in the kernel's backlog; nothing ever reads or answers them.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook_url = format!("http://{}/hooks", silent.local_addr().unwrap());
    let webhook = mayfly_sts::ApprovalWebhookEntry { url: hook_url, timeout: Some("5s".into()), ..Default::default() };
    let sts = exchange(&stack, "silent-sts", webhook);
    let bob = person(&stack, "user:bob", "bob@example.com");
    let alice = person(&stack, "user:alice", "alice@example.com");

    let started = Instant::now();
    let (uri, code) = pending(&sts.token(&bob, None).1);
    // Well inside the webhook's 5 s timeout: the answer did not wait for the delivery.
    assert!(started.elapsed() < Duration::from_millis(2500), "answered after {:?}", started.elapsed());
    let started = Instant::now();
    assert_eq!(sts.decide(&uri, &alice, &[("decision", "deny"), ("reason", "not today")]).0, 200);
    assert!(started.elapsed() < Duration::from_millis(2500), "decided after {:?}", started.elapsed());
    let (status, answer) = sts.token(&bob, Some(&code));
    assert_eq!((status, answer["error"].as_str()), (400, Some("access_denied")), "{answer}");
    drop(silent);
}
