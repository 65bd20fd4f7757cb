//! Delegation at the real `mayfly-sts` over HTTPS (RFC 8693 sections 4.1 and 4.4): a
//! session token names the agent acting for a workload, every token minted through it
//! carries the agent in `act` and the session in `sid`, and revoking the session ends them.

use base64::Engine;
use mayfly_core::{ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT};
use mayfly_tests::Stack;
use serde_json::{Value, json};

const INTENT: &str = r#"{"agent":"claude","session":"s1","host":"laptop"}"#;
const WRITE: &str = "repo:org/app:write";

/// A subject ID token of the stack's issuer for the exchange, with `overrides` applied.
fn subject(stack: &Stack, overrides: Value) -> String {
    stack.issuer.mint("mayfly-sts", &overrides)
}

/// `POST /token` with the grant and `subject_token_type` plus `form`: the status and the answer.
fn exchange(stack: &Stack, form: &[(&str, &str)]) -> (u16, Value) {
    let mut full = vec![("grant_type", TOKEN_EXCHANGE_GRANT), ("subject_token_type", ID_TOKEN_TYPE)];
    full.extend_from_slice(form);
    let response = stack.https_client().post(format!("{}/token", stack.sts.url)).form(&full).send().unwrap();
    (response.status().as_u16(), response.json().unwrap())
}

/// Opens a session for this subject token, naming the agent of [`INTENT`].
fn open_session(stack: &Stack, subject_token: &str, ttl: &str) -> (u16, Value) {
    exchange(
        stack,
        &[
            ("subject_token", subject_token),
            ("audience", &stack.sts.url),
            ("scope", "session"),
            ("requested_ttl", ttl),
            ("intent", INTENT),
        ],
    )
}

/// Exchanges the subject token for a write token to the git server, through `actor`.
fn through(stack: &Stack, subject_token: &str, actor: &str, actor_type: &str) -> (u16, Value) {
    exchange(
        stack,
        &[
            ("subject_token", subject_token),
            ("actor_token", actor),
            ("actor_token_type", actor_type),
            ("audience", &stack.git_server().base_url),
            ("scope", WRITE),
        ],
    )
}

fn token(answer: &Value) -> String {
    answer["access_token"].as_str().unwrap_or_else(|| panic!("no token in {answer}")).to_owned()
}

/// A JWT's claims, unverified (the exchange verified them).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// `POST /introspect` as the stack's resource-server client.
fn introspect(stack: &Stack, token: &str) -> Value {
    let client = &stack.sts.client;
    let response = stack
        .https_client()
        .post(format!("{}/introspect", stack.sts.url))
        .basic_auth(&client.client_id, Some(client.client_secret.expose()))
        .form(&[("token", token)])
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().unwrap()
}

fn revoke(stack: &Stack, token: &str) {
    let response =
        stack.https_client().post(format!("{}/revoke", stack.sts.url)).form(&[("token", token)]).send().unwrap();
    assert_eq!(response.status(), 200);
}

/// `GET /registry/token` for `service` with this token as the Basic password.
fn registry_token(stack: &Stack, token: &str, service: &str) -> (u16, Value) {
    let response = stack
        .https_client()
        .get(format!("{}/registry/token", stack.sts.url))
        .query(&[("service", service), ("scope", "repository:org/app:pull")])
        .basic_auth("mayfly", Some(token))
        .send()
        .unwrap();
    (response.status().as_u16(), response.json().unwrap())
}

fn refused(answer: &(u16, Value)) -> (u16, &str, &str) {
    (answer.0, answer.1["error"].as_str().unwrap_or(""), answer.1["error_description"].as_str().unwrap_or(""))
}

#[test]
fn a_session_names_its_agent_in_what_it_yields_and_its_revocation_ends_them() {
    let stack = Stack::new();
    let id_token = subject(&stack, Value::Null);
    // Longer than the rules' 10 minutes: a session grants nothing by itself.
    let (status, answer) = open_session(&stack, &id_token, "7200");
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["scope"].as_str(), answer["expires_in"].as_u64()), (Some("session"), Some(7200)));
    let session = token(&answer);
    let session_claims = claims(&session);
    let agent = json!({"sub": "agent:claude", "declared": true, "session": "s1", "host": "laptop"});
    assert_eq!(session_claims["act"], agent);
    assert_eq!(session_claims["aud"], stack.sts.url);
    assert_eq!(session_claims["iss"], stack.sts.url);
    assert_eq!(session_claims["scope"], "session");
    assert_eq!(session_claims["sub"], "repo:org/app:ref:refs/heads/main");
    assert_eq!(session_claims["subject_issuer"], stack.issuer.issuer());
    let sid = session_claims["jti"].as_str().unwrap().to_owned();

    let answer = through(&stack, &subject(&stack, Value::Null), &session, ACCESS_TOKEN_TYPE);
    assert_eq!(answer.0, 200, "{}", answer.1);
    let derived = token(&answer.1);
    let derived_claims = claims(&derived);
    assert_eq!(derived_claims["act"]["sub"], "agent:claude");
    assert_eq!(derived_claims["act"], agent);
    assert_eq!(derived_claims["sid"], sid.as_str());
    assert_eq!(derived_claims["scope"], WRITE);
    assert!(answer.1["expires_in"].as_u64().unwrap() <= 600, "the rules' lifetime still applies");
    let active = introspect(&stack, &derived);
    assert_eq!((&active["active"], &active["sid"], &active["act"]), (&json!(true), &json!(sid), &agent));

    // A registry token minted from the derived token inherits the session.
    let service = stack.git_server().base_url.clone();
    let (status, answer) = registry_token(&stack, &derived, &service);
    assert_eq!(status, 200, "{answer}");
    let registry = answer["token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&registry)["sid"], sid.as_str());
    assert_eq!(introspect(&stack, &registry)["active"], true);

    let audit = stack.sts_audit();
    let opened = audit.iter().find(|l| l["outcome"] == "issued" && l["scope"] == "session").expect("session line");
    assert_eq!((&opened["act"], &opened["sid"], &opened["jti"]), (&agent, &json!(sid), &json!(sid)));
    let minted = audit.iter().find(|l| l["outcome"] == "issued" && l["scope"] == WRITE).expect("derived line");
    assert_eq!((&minted["act"], &minted["sid"]), (&agent, &json!(sid)));
    let from_registry = audit.iter().find(|l| l["rule"] == "registry token").expect("registry line");
    assert_eq!((&from_registry["act"], &from_registry["sid"]), (&agent, &json!(sid)));

    revoke(&stack, &session);
    for dead in [&session, &derived, &registry] {
        assert_eq!(introspect(&stack, dead), json!({"active": false}));
    }
    let (status, answer) = registry_token(&stack, &derived, &service);
    assert_eq!((status, &answer["errors"][0]["message"]), (401, &json!("token has been revoked")));
    let again = through(&stack, &subject(&stack, Value::Null), &session, ACCESS_TOKEN_TYPE);
    assert_eq!(refused(&again), (400, "invalid_request", "actor token: the session has been revoked"));
    stack.assert_no_tokens_on_disk();
}

#[test]
fn a_session_is_only_its_principals_and_only_for_the_exchange() {
    let stack = Stack::new();
    let other = subject(&stack, json!({"sub": "repo:org/other:ref:refs/heads/main", "repository": "org/other"}));
    let (status, answer) = open_session(&stack, &other, "600");
    assert_eq!(status, 200, "no rule is needed to open a session: {answer}");
    let theirs = token(&answer);
    let mine = subject(&stack, Value::Null);
    let answer = through(&stack, &mine, &theirs, ACCESS_TOKEN_TYPE);
    assert_eq!(refused(&answer), (400, "invalid_request", "actor token: the session belongs to another subject"));

    let (status, answer) = open_session(&stack, &mine, "100000");
    assert_eq!((status, answer["expires_in"].as_u64()), (200, Some(12 * 3600)), "capped by session_max_ttl");
    let session = token(&answer);
    // A session token is no subject token, and grants nothing where tokens are spent.
    let as_subject =
        exchange(&stack, &[("subject_token", &session), ("audience", &stack.git_server().base_url), ("scope", WRITE)]);
    assert_eq!(as_subject.0, 400);
    let info_refs = format!("{}/info/refs?service=git-upload-pack", stack.repo_url("org/app.git"));
    assert_eq!(stack.https_client().get(&info_refs).bearer_auth(&session).send().unwrap().status(), 401);

    let git = stack.git_server().base_url.clone();
    let elsewhere = exchange(&stack, &[("subject_token", &mine), ("audience", &git), ("scope", "session")]);
    assert_eq!(refused(&elsewhere).1, "invalid_scope");
    let nameless = exchange(
        &stack,
        &[
            ("subject_token", &mine),
            ("audience", &stack.sts.url),
            ("scope", "session"),
            ("intent", r#"{"tool":"git"}"#),
        ],
    );
    assert_eq!(refused(&nameless), (400, "invalid_request", "a session names its agent (`agent` in the intent)"));
    let spaced = exchange(
        &stack,
        &[
            ("subject_token", &mine),
            ("audience", &stack.sts.url),
            ("scope", "session"),
            ("intent", r#"{"agent":"two words"}"#),
        ],
    );
    assert_eq!(refused(&spaced).1, "invalid_request");
}

#[test]
fn may_act_in_the_subject_token_must_name_the_actor() {
    let stack = Stack::new();
    let (_, answer) = open_session(&stack, &subject(&stack, Value::Null), "600");
    let session = token(&answer);

    let for_codex = subject(&stack, json!({"may_act": {"sub": "agent:codex"}}));
    let answer = through(&stack, &for_codex, &session, ACCESS_TOKEN_TYPE);
    assert_eq!(refused(&answer), (400, "invalid_request", "the subject's may_act does not name this actor"));
    let denied = stack.sts_audit().into_iter().rfind(|l| l["outcome"] == "denied").unwrap();
    assert_eq!(denied["act"]["sub"], "agent:claude", "the refused actor is named in the audit line");
    assert!(denied["sid"].is_string());

    let for_claude = subject(&stack, json!({"may_act": {"sub": "agent:claude", "iss": stack.sts.url}}));
    let answer = through(&stack, &for_claude, &session, JWT_TOKEN_TYPE);
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert_eq!(claims(&token(&answer.1))["act"]["sub"], "agent:claude");
}

const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

#[test]
fn an_actor_with_its_own_identity_is_named_by_its_issuer_and_subject() {
    let stack = Stack::new();
    let issuer = stack.issuer.issuer().to_owned();
    let bot = subject(&stack, json!({"sub": "workload:reviewer-bot"}));
    let answer = through(&stack, &subject(&stack, Value::Null), &bot, ID_TOKEN_TYPE);
    assert_eq!(answer.0, 200, "{}", answer.1);
    let minted = claims(&token(&answer.1));
    assert_eq!(minted["act"], json!({"sub": "workload:reviewer-bot", "iss": issuer}));
    assert!(minted.get("sid").is_none(), "no session, no sid");

    // An actor that itself acts for someone: the current actor outermost.
    let relay = subject(&stack, json!({"sub": "workload:relay", "act": {"sub": "agent:claude", "declared": true}}));
    let answer = through(&stack, &subject(&stack, Value::Null), &relay, JWT_TOKEN_TYPE);
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert_eq!(
        claims(&token(&answer.1))["act"],
        json!({"sub": "workload:relay", "iss": issuer, "act": {"sub": "agent:claude", "declared": true}})
    );

    let deep = json!({"sub": "a1", "act": {"sub": "a2", "act": {"sub": "a3", "act": {"sub": "a4"}}}});
    let too_deep = subject(&stack, json!({"sub": "workload:relay", "act": deep}));
    let answer = through(&stack, &subject(&stack, Value::Null), &too_deep, ID_TOKEN_TYPE);
    assert_eq!(refused(&answer), (400, "invalid_request", "actor token: the actor chain is deeper than 4"));

    let stale = stack.issuer.mint("someone-else", &json!({"sub": "workload:reviewer-bot"}));
    let answer = through(&stack, &subject(&stack, Value::Null), &stale, ID_TOKEN_TYPE);
    assert_eq!(refused(&answer).1, "invalid_request");
    assert!(refused(&answer).2.starts_with("actor token audience is wrong"), "{}", answer.1);
}
