//! Human approval at a `mayfly-sts` of its own over HTTPS: a write an `@approval` forbid
//! holds back is answered `authorization_pending`, an approver of the group sees and
//! decides it at `/approve/{id}`, and the client collects one token with its code.

use std::time::Duration;

use mayfly_core::{ID_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT};
use mayfly_tests::{Stack, read_json_lines};
use serde_json::{Value, json};

const AUDIENCE: &str = "https://git.example";
const RELEASE: &str = "repo:org/release:write";

const POLICIES: &str = r#"
@id("release")
@approval("release-managers")
forbid(principal, action == Action::"write", resource is GitRepository)
when { resource.path == "org/release" }
unless { context.approval.state == "approved" };

@id("frozen")
@reason("org/frozen is frozen; nobody pushes until the audit ends")
forbid(principal, action == Action::"write", resource is GitRepository)
when { resource.path == "org/frozen" }
unless { context.approval.state == "approved" };
"#;

/// An exchange of its own, with approvers, for this stack's issuer.
struct Exchange {
    url: String,
    audit: std::path::PathBuf,
    client: reqwest::blocking::Client,
}

fn exchange_with(stack: &Stack, name: &str, approval_ttl: &str) -> Exchange {
    let dir = stack.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("release.cedar"), POLICIES).unwrap();
    let (listener, url) = mayfly_tests::https_listener();
    let audit = dir.join("audit.jsonl");
    let issuer = stack.issuer.issuer().to_owned();
    let config = mayfly_sts::ConfigFile {
        issuer: url.clone(),
        audit_log: Some(audit.clone()),
        policies: vec![dir.clone()],
        tls: Some(stack.ca.sts_tls()),
        trusted_issuers: vec![stack.issuer.trusted(&["mayfly-sts"])],
        rules: vec![mayfly_sts::RuleEntry {
            name: Some("people push org".into()),
            issuer: issuer.clone(),
            claims: [("email".to_owned(), "*@example.com".to_owned())].into(),
            audiences: vec![AUDIENCE.into()],
            scopes: vec!["repo:org/*:read".into(), "repo:org/*:write".into()],
            max_ttl: None,
        }],
        approval_ttl: Some(approval_ttl.into()),
        approval_interval: Some("1s".into()),
        same_person_claim: Some("email".into()),
        approvers: vec![mayfly_sts::ApproverEntry {
            name: "release-managers".into(),
            issuer,
            claims: [("email".to_owned(), "*@example.com".to_owned())].into(),
        }],
        ..Default::default()
    };
    let sts = mayfly_sts::Sts::new(mayfly_sts::Config::from_file(config).expect("config"), None).expect("mayfly-sts");
    stack.runtime().spawn(mayfly_sts::serve(sts, listener));
    Exchange { url, audit, client: stack.https_client() }
}

/// An ID token for a person of the stack's issuer.
fn person(stack: &Stack, sub: &str, email: &str) -> String {
    stack.issuer.mint("mayfly-sts", &json!({"sub": sub, "email": email}))
}

impl Exchange {
    /// `POST /token` for `scope`, collecting with `code` when given.
    fn token(&self, subject_token: &str, scope: &str, code: Option<&str>) -> (u16, Value) {
        let mut form = vec![
            ("grant_type", TOKEN_EXCHANGE_GRANT),
            ("subject_token", subject_token),
            ("subject_token_type", ID_TOKEN_TYPE),
            ("audience", AUDIENCE),
            ("scope", scope),
            ("intent", r#"{"tool":"git","operation":"write","command":["git","push","origin","main"]}"#),
        ];
        if let Some(code) = code {
            form.push(("approval_code", code));
        }
        let response = self.client.post(format!("{}/token", self.url)).form(&form).send().unwrap();
        (response.status().as_u16(), response.json().unwrap())
    }

    fn view(&self, uri: &str, approver: Option<&str>) -> (u16, Value) {
        let mut request = self.client.get(uri);
        if let Some(token) = approver {
            request = request.bearer_auth(token);
        }
        let response = request.send().unwrap();
        (response.status().as_u16(), response.json().unwrap())
    }

    fn decide(&self, uri: &str, approver: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let response = self.client.post(uri).bearer_auth(approver).form(form).send().unwrap();
        (response.status().as_u16(), response.json().unwrap())
    }

    fn audit(&self) -> Vec<Value> {
        read_json_lines(&self.audit)
    }
}

fn pending(answer: &Value) -> (String, String) {
    assert_eq!(answer["error"], "authorization_pending", "{answer}");
    (answer["approval_uri"].as_str().unwrap().to_owned(), answer["approval_code"].as_str().unwrap().to_owned())
}

#[test]
fn a_write_waits_for_an_approver_and_yields_one_token() {
    let stack = Stack::builder().start();
    let sts = exchange_with(&stack, "approval-sts", "10m");
    let bob = person(&stack, "user:bob", "bob@example.com");
    let alice = person(&stack, "user:alice", "alice@example.com");

    // Reads pass; the write is held for the group, with where to approve it and a code.
    assert_eq!(sts.token(&bob, "repo:org/release:read", None).0, 200);
    let (status, answer) = sts.token(&bob, RELEASE, None);
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error_description"], "write on git.example/org/release needs approval (policy release)");
    let (uri, code) = pending(&answer);
    let id = answer["approval_id"].as_str().unwrap();
    assert_eq!(uri, format!("{}/approve/{id}", sts.url));
    assert!(id.len() == 32 && code.len() == 64 && id.bytes().chain(code.bytes()).all(|b| b.is_ascii_hexdigit()));
    assert_eq!((answer["interval"].as_u64(), answer["expires_in"].as_u64()), (Some(1), Some(600)));

    // Still pending: the same answer without a new code.
    std::thread::sleep(Duration::from_millis(1100));
    let (status, answer) = sts.token(&bob, RELEASE, Some(&code));
    assert_eq!((status, answer["error"].as_str()), (400, Some("authorization_pending")), "{answer}");
    assert!(answer.get("approval_code").is_none() && answer["interval"] == 1, "{answer}");

    // The approver sees the request; others cannot.
    let (status, view) = sts.view(&uri, Some(&alice));
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["status"], "pending");
    assert_eq!(view["requester"], json!({"iss": stack.issuer.issuer(), "sub": "user:bob"}));
    assert_eq!((view["audience"].as_str(), view["scopes"].clone()), (Some(AUDIENCE), json!([RELEASE])));
    assert_eq!((view["policy"].as_str(), view["group"].as_str()), (Some("release"), Some("release-managers")));
    assert_eq!(view["intent"]["command"], json!(["git", "push", "origin", "main"]));
    assert_eq!(view["actor"], Value::Null);
    assert_eq!(sts.view(&uri, None).0, 401);
    assert_eq!(sts.view(&uri, Some("not-a-token")).0, 401);
    let eve = person(&stack, "user:eve", "eve@evil.test");
    assert_eq!(sts.view(&uri, Some(&eve)).0, 403);
    assert_eq!(sts.view(&format!("{}/approve/{}", sts.url, "0".repeat(32)), Some(&alice)).0, 404);

    // The requester cannot approve their own request, under their sub or their email.
    let (status, answer) = sts.decide(&uri, &bob, &[("decision", "approve")]);
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"], "access_denied");
    let bob_again = person(&stack, "user:bob-laptop", "Bob@example.com");
    assert_eq!(sts.decide(&uri, &bob_again, &[("decision", "approve")]).0, 403);
    assert_eq!(sts.decide(&uri, &eve, &[("decision", "approve")]).0, 403);
    assert_eq!(sts.decide(&uri, &alice, &[("decision", "maybe")]).0, 400);
    assert_eq!(sts.decide(&uri, &alice, &[("decision", "approve"), ("reason", &"x".repeat(301))]).0, 400);

    let (status, answer) = sts.decide(&uri, &alice, &[("decision", "approve"), ("reason", "release 1.2")]);
    assert_eq!((status, answer), (200, json!({"status": "approved"})));
    let (status, answer) = sts.decide(&uri, &alice, &[("decision", "deny")]);
    assert_eq!((status, answer["error"].as_str()), (409, Some("already_decided")));

    // The code is for this request alone: another scope is refused, and so is another subject.
    let (status, answer) = sts.token(&bob, "repo:org/release:read", Some(&code));
    assert_eq!((status, answer["error"].as_str()), (400, Some("invalid_grant")), "{answer}");
    assert_eq!(answer["error_description"], "the approval is for another request");
    let carol = person(&stack, "user:carol", "carol@example.com");
    assert_eq!(sts.token(&carol, RELEASE, Some(&code)).1["error"], "invalid_grant");
    assert_eq!(sts.token(&bob, RELEASE, Some(&"f".repeat(64))).1["error"], "invalid_grant");

    // Collected with a fresh subject token: the token, once.
    let bob = person(&stack, "user:bob", "bob@example.com");
    let (status, answer) = sts.token(&bob, RELEASE, Some(&code));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["scope"], RELEASE);
    assert!(answer["access_token"].as_str().is_some_and(|t| t.split('.').count() == 3));
    let (status, answer) = sts.token(&bob, RELEASE, Some(&code));
    assert_eq!((status, answer["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(answer["error_description"], "the approval was already used");
    let (_, view) = sts.view(&uri, Some(&alice));
    assert_eq!(view["status"], "used");

    // The audit: pending, approved, issued, each naming the approval; never the code.
    let lines = sts.audit();
    let find = |outcome: &str| {
        lines.iter().find(|l| l["outcome"] == outcome && l["approval"] == id).unwrap_or_else(|| panic!("{lines:?}"))
    };
    let line = find("pending");
    assert_eq!((line["policies"].clone(), line["group"].as_str()), (json!(["release"]), Some("release-managers")));
    let line = find("approved");
    assert_eq!(line["approver"]["email"], "alice@example.com");
    assert_eq!((line["subject"].as_str(), line["reason"].as_str()), (Some("user:bob"), Some("release 1.2")));
    let line = find("issued");
    assert_eq!((line["approver"]["sub"].as_str(), line["scope"].as_str()), (Some("user:alice"), Some(RELEASE)));
    let text = std::fs::read_to_string(&sts.audit).unwrap();
    assert!(!text.contains(&code), "the approval code reached the audit log");
}

#[test]
fn a_denial_names_the_approver_and_a_plain_forbid_stays_a_denial() {
    let stack = Stack::builder().start();
    let sts = exchange_with(&stack, "denial-sts", "10m");
    let bob = person(&stack, "user:bob", "bob@example.com");
    let alice = person(&stack, "user:alice", "alice@example.com");

    let (uri, code) = pending(&sts.token(&bob, RELEASE, None).1);
    let (status, answer) = sts.decide(&uri, &alice, &[("decision", "deny"), ("reason", "not during the freeze")]);
    assert_eq!((status, answer), (200, json!({"status": "denied"})));
    let (status, answer) = sts.token(&bob, RELEASE, Some(&code));
    assert_eq!((status, answer["error"].as_str()), (400, Some("access_denied")), "{answer}");
    assert_eq!(answer["error_description"], "denied by alice@example.com: not during the freeze");
    assert!(sts.audit().iter().any(|l| l["outcome"] == "denied" && l["approver"]["sub"] == "user:alice"));

    // A forbid without @approval refuses outright: no approval is opened.
    let (status, answer) = sts.token(&bob, "repo:org/frozen:write", None);
    assert_eq!((status, answer["error"].as_str()), (400, Some("invalid_scope")), "{answer}");
    assert!(answer["error_description"].as_str().unwrap().contains("nobody pushes until the audit ends"));
    assert!(answer.get("approval_code").is_none());
    assert_eq!(sts.audit().iter().filter(|l| l["outcome"] == "pending").count(), 1);
}

#[test]
fn an_approval_not_decided_in_time_expires() {
    let stack = Stack::builder().start();
    let sts = exchange_with(&stack, "expiry-sts", "1s");
    let bob = person(&stack, "user:bob", "bob@example.com");
    let alice = person(&stack, "user:alice", "alice@example.com");
    let (uri, code) = pending(&sts.token(&bob, RELEASE, None).1);
    std::thread::sleep(Duration::from_millis(1200));
    let (status, answer) = sts.token(&bob, RELEASE, Some(&code));
    assert_eq!((status, answer["error"].as_str()), (400, Some("expired_token")), "{answer}");
    let (status, answer) = sts.decide(&uri, &alice, &[("decision", "approve")]);
    assert_eq!((status, answer["error"].as_str()), (410, Some("expired_token")), "{answer}");
    assert_eq!(sts.view(&uri, Some(&alice)).1["status"], "expired");
}
