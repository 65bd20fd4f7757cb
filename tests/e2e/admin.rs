//! Ending sessions at the real `mayfly-sts` over HTTPS: an administrator revokes anyone's
//! session by its `sid` (`POST /admin/revoke`, or `mayfly-sts admin revoke`), and a session
//! left idle longer than `session_idle` ends on its next use. Either way, every token
//! minted through the session dies with it.

use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine;
use mayfly_core::{ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT};
use mayfly_tests::{Stack, bin};
use serde_json::{Value, json};

const INTENT: &str = r#"{"agent":"claude","session":"s1"}"#;
const WRITE: &str = "repo:org/app:write";

/// A stack whose exchange has administrators (people of the stack's issuer, `user:*`)
/// and lets sessions idle `idle`.
fn stack(idle: &'static str) -> Stack {
    Stack::builder()
        .git()
        .sts_config(move |config, _| {
            let issuer = config.trusted_issuers[0].issuer.clone();
            config.administrators = vec![mayfly_sts::AdministratorEntry {
                issuer,
                claims: [("sub".to_owned(), "user:*".to_owned())].into(),
            }];
            config.session_idle = Some(idle.into());
        })
        .start()
}

fn subject(stack: &Stack) -> String {
    stack.issuer.mint("mayfly-sts", &Value::Null)
}

fn administrator(stack: &Stack) -> String {
    stack.issuer.mint("mayfly-sts", &json!({"sub": "user:alice", "email": "alice@example.com"}))
}

fn exchange(stack: &Stack, form: &[(&str, &str)]) -> (u16, Value) {
    let mut full = vec![("grant_type", TOKEN_EXCHANGE_GRANT), ("subject_token_type", ID_TOKEN_TYPE)];
    full.extend_from_slice(form);
    let response = stack.https_client().post(format!("{}/token", stack.sts.url)).form(&full).send().unwrap();
    (response.status().as_u16(), response.json().unwrap())
}

/// Opens a session: its token and its `sid`.
fn open_session(stack: &Stack) -> (String, String) {
    let (status, answer) = exchange(
        stack,
        &[("subject_token", &subject(stack)), ("audience", &stack.sts.url), ("scope", "session"), ("intent", INTENT)],
    );
    assert_eq!(status, 200, "{answer}");
    let token = answer["access_token"].as_str().unwrap().to_owned();
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    let sid = claims["jti"].as_str().unwrap().to_owned();
    (token, sid)
}

/// A write token to the git server, through the session.
fn through(stack: &Stack, session: &str) -> (u16, Value) {
    exchange(
        stack,
        &[
            ("subject_token", &subject(stack)),
            ("actor_token", session),
            ("actor_token_type", ACCESS_TOKEN_TYPE),
            ("audience", &stack.git_server().base_url),
            ("scope", WRITE),
        ],
    )
}

fn derived(stack: &Stack, session: &str) -> String {
    let (status, answer) = through(stack, session);
    assert_eq!(status, 200, "{answer}");
    answer["access_token"].as_str().unwrap().to_owned()
}

fn active(stack: &Stack, token: &str) -> bool {
    let client = &stack.sts.client;
    let response = stack
        .https_client()
        .post(format!("{}/introspect", stack.sts.url))
        .basic_auth(&client.client_id, Some(client.client_secret.expose()))
        .form(&[("token", token)])
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json::<Value>().unwrap()["active"] == true
}

/// `POST /admin/revoke` with this Bearer (none when `None`).
fn admin_revoke(stack: &Stack, bearer: Option<&str>, sid: &str) -> (u16, Value) {
    let mut request = stack.https_client().post(format!("{}/admin/revoke", stack.sts.url)).form(&[("session", sid)]);
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    let response = request.send().unwrap();
    (response.status().as_u16(), response.json().unwrap_or(Value::Null))
}

fn cli(stack: &Stack, sid: &str, token: Option<&str>) -> Output {
    let mut command = Command::new(bin("mayfly-sts"));
    command
        .args(["admin", "revoke", "--session", sid, "--url", &stack.sts.url, "--ca-file"])
        .arg(&stack.ca.ca_cert)
        .env_clear();
    if let Some(token) = token {
        command.env("MAYFLY_STS_ADMIN_TOKEN", token);
    }
    command.output().unwrap()
}

#[test]
fn an_administrator_ends_a_session_and_what_was_minted_through_it() {
    let stack = stack("1h");
    let (session, sid) = open_session(&stack);
    let token = derived(&stack, &session);
    assert!(active(&stack, &token));

    let (status, answer) = admin_revoke(&stack, None, &sid);
    assert_eq!((status, &answer["error"]), (401, &json!("invalid_token")), "{answer}");
    let (status, answer) = admin_revoke(&stack, Some("not-a-jwt"), &sid);
    assert_eq!((status, &answer["error"]), (401, &json!("invalid_token")), "{answer}");
    // A workload's token of the same issuer is no administrator's.
    let (status, answer) = admin_revoke(&stack, Some(&subject(&stack)), &sid);
    assert_eq!((status, &answer["error"]), (403, &json!("access_denied")), "{answer}");
    let (status, answer) = admin_revoke(&stack, Some(&administrator(&stack)), "not-a-sid");
    assert_eq!((status, &answer["error"]), (400, &json!("invalid_request")), "{answer}");
    assert!(active(&stack, &token), "no refused request ended anything");

    let admin_token = administrator(&stack);
    let (status, answer) = admin_revoke(&stack, Some(&admin_token), &sid);
    assert_eq!((status, answer), (200, json!({"revoked": sid})));
    assert!(!active(&stack, &token));
    assert!(!active(&stack, &session));
    let (status, answer) = through(&stack, &session);
    assert_eq!((status, &answer["error_description"]), (400, &json!("actor token: the session has been revoked")));

    let audit = stack.sts_audit();
    let line = audit.iter().find(|l| l["outcome"] == "admin-revoked").expect("admin-revoked line");
    assert_eq!(line["sid"], sid.as_str());
    assert_eq!(line["administrator"], json!({"iss": stack.issuer.issuer(), "sub": "user:alice"}));
    let refused = audit.iter().find(|l| l["outcome"] == "admin-refused").expect("admin-refused line");
    assert_eq!(refused["administrator"]["sub"], "repo:org/app:ref:refs/heads/main");
    let signature = admin_token.rsplit('.').next().unwrap();
    assert!(!std::fs::read_to_string(&stack.sts.audit).unwrap().contains(signature), "no ID token in the audit log");
}

#[test]
fn without_administrators_there_is_no_admin_endpoint() {
    let stack = Stack::new();
    let (_, sid) = open_session(&stack);
    let (status, _) = admin_revoke(&stack, Some(&administrator(&stack)), &sid);
    assert_eq!(status, 404);
}

#[test]
fn mayfly_sts_admin_revoke_ends_a_session() {
    let stack = stack("1h");
    let (session, sid) = open_session(&stack);
    let token = derived(&stack, &session);

    let missing = cli(&stack, &sid, None);
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("MAYFLY_STS_ADMIN_TOKEN") && stderr.lines().count() == 1, "{stderr}");

    let refused = cli(&stack, &sid, Some(&subject(&stack)));
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("access_denied") && stderr.lines().count() == 1, "{stderr}");
    assert!(active(&stack, &token));

    let admin_token = administrator(&stack);
    let done = cli(&stack, &sid, Some(&admin_token));
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&sid) && !stderr.contains(&admin_token), "{stderr}");
    assert!(!active(&stack, &token));

    // From a file as well.
    let (_, other) = open_session(&stack);
    let file = stack.dir.path().join("admin-token");
    std::fs::write(&file, format!("{admin_token}\n")).unwrap();
    let done = Command::new(bin("mayfly-sts"))
        .args(["admin", "revoke", "--session", &other, "--url", &stack.sts.url, "--ca-file"])
        .arg(&stack.ca.ca_cert)
        .arg("--id-token-file")
        .arg(&file)
        .env_clear()
        .output()
        .unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
}

#[test]
fn a_session_left_idle_ends_on_its_next_use() {
    let stack = stack("1s");
    let (session, sid) = open_session(&stack);
    let token = derived(&stack, &session);
    assert!(active(&stack, &token));
    std::thread::sleep(Duration::from_secs(2));

    let (status, answer) = through(&stack, &session);
    assert_eq!(
        (status, &answer["error"], &answer["error_description"]),
        (400, &json!("invalid_request"), &json!("actor token: the session ended after 1s idle"))
    );
    assert!(!active(&stack, &token), "what was minted through it died with it");
    let (status, answer) = through(&stack, &session);
    assert_eq!((status, &answer["error_description"]), (400, &json!("actor token: the session has been revoked")));
    let audit = stack.sts_audit();
    let line = audit.iter().find(|l| l["outcome"] == "session-idle-ended").expect("session-idle-ended line");
    assert_eq!(line["sid"], sid.as_str());
}
