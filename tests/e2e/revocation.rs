//! Revocation (RFC 7009) and introspection (RFC 7662) at the real `mayfly-sts`, and the
//! resource servers refusing a revoked token from the next request on.

use std::sync::atomic::Ordering;

use mayfly_tests::{Stack, require_tool};
use reqwest::header::{CACHE_CONTROL, HeaderMap, WWW_AUTHENTICATE};
use serde_json::{Value, json};

fn http(stack: &Stack) -> reqwest::blocking::Client {
    stack.https_client()
}

/// A token from `POST /token` for an ID token of the development issuer.
fn mint(stack: &Stack, audience: &str, scope: &str) -> String {
    mayfly_tests::exchange_token(&http(stack), &stack.sts.url, &stack.issuer, audience, scope)
}

/// `POST /revoke` with this form; returns the status and body.
fn revoke(stack: &Stack, form: &[(&str, &str)]) -> (u16, String) {
    let response = http(stack).post(format!("{}/revoke", stack.sts.url)).form(form).send().unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

/// How an introspection request authenticates.
enum Auth<'a> {
    Anonymous,
    /// The stack's resource-server client.
    Client,
    Basic(&'a str, &'a str),
    Bearer(&'a str),
}

/// `POST /introspect`; returns the status, headers and JSON body.
fn introspect(stack: &Stack, token: &str, auth: Auth<'_>) -> (u16, HeaderMap, Value) {
    let client = &stack.sts.client;
    let request = http(stack)
        .post(format!("{}/introspect", stack.sts.url))
        .form(&[("token", token), ("token_type_hint", "access_token")]);
    let request = match auth {
        Auth::Anonymous => request,
        Auth::Client => request.basic_auth(&client.client_id, Some(client.client_secret.expose())),
        Auth::Basic(id, secret) => request.basic_auth(id, Some(secret)),
        Auth::Bearer(token) => request.bearer_auth(token),
    };
    let response = request.send().unwrap();
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    (status, headers, response.json().unwrap())
}

fn fingerprint(token: &str) -> String {
    mayfly_core::Fingerprint::of(token).to_string()
}

#[test]
fn a_revoked_token_turns_inactive_and_revoking_again_is_fine() {
    let stack = Stack::new();
    let token = mint(&stack, &stack.git_server().base_url, "repo:org/app:read");

    let (status, headers, body) = introspect(&stack, &token, Auth::Client);
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers[CACHE_CONTROL], "no-store");
    assert_eq!(body["active"], true);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "repo:org/app:read");
    assert_eq!(body["aud"], stack.git_server().base_url);
    assert_eq!(body["iss"], stack.sts.url);
    assert_eq!(body["sub"], "repo:org/app:ref:refs/heads/main");
    assert_eq!(body["client_id"], "mayfly");
    for claim in ["exp", "iat", "nbf"] {
        assert!(body[claim].is_i64(), "{claim}: {body}");
    }
    let jti = body["jti"].as_str().unwrap().to_owned();
    let (_, _, own) = introspect(&stack, &token, Auth::Bearer(&token));
    assert_eq!(own["active"], true, "a holder may introspect its own token");

    assert_eq!(revoke(&stack, &[("token", &token), ("token_type_hint", "access_token")]), (200, String::new()));
    for auth in [Auth::Client, Auth::Bearer(&token)] {
        let (status, headers, body) = introspect(&stack, &token, auth);
        assert_eq!((status, body), (200, json!({"active": false})));
        assert_eq!(headers[CACHE_CONTROL], "no-store");
    }
    assert_eq!(revoke(&stack, &[("token", &token)]), (200, String::new()), "revoking twice is fine");

    let revoked: Vec<Value> = stack.sts_audit().into_iter().filter(|l| l["outcome"] == "revoked").collect();
    assert_eq!(revoked.len(), 2);
    assert_eq!(revoked[0]["jti"], jti.as_str());
    assert_eq!(revoked[0]["fingerprint"], fingerprint(&token));
    assert_eq!(revoked[0]["subject"], "repo:org/app:ref:refs/heads/main");
    assert!(stack.dir.path().join("sts-revocations.redb").is_file(), "the store is the configured file");
}

#[test]
fn revocation_takes_anything_and_introspection_takes_only_its_clients() {
    let stack = Stack::new();
    assert_eq!(revoke(&stack, &[("token", "garbage")]), (200, String::new()), "RFC 7009 2.2: invalid is no error");
    let stranger = mayfly_sts::SigningKey::generate(mayfly_sts::Algorithm::Es256).unwrap();
    let foreign = stranger.sign(Some("at+jwt"), &json!({"iss": stack.sts.url, "exp": 4_000_000_000u64, "jti": "x"}));
    assert_eq!(revoke(&stack, &[("token", &foreign.unwrap())]).0, 200);
    let (status, body) = revoke(&stack, &[("token_type_hint", "access_token")]);
    assert_eq!(status, 400);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"], "invalid_request");
    let ignored: Vec<Value> = stack.sts_audit().into_iter().filter(|l| l["outcome"] == "revoke-ignored").collect();
    assert_eq!(ignored.len(), 2);
    assert_eq!(ignored[0]["fingerprint"], fingerprint("garbage"));
    assert_eq!(ignored[0]["reason"], "not a token signed by this exchange");

    let token = mint(&stack, &stack.git_server().base_url, "repo:org/app:read");
    let other = mint(&stack, &stack.git_server().base_url, "repo:org/app:read");
    let secret = stack.sts.client.client_secret.expose().to_owned();
    for auth in
        [Auth::Anonymous, Auth::Basic("mayfly-devstack", "wrong"), Auth::Basic("nobody", &secret), Auth::Bearer(&other)]
    {
        let (status, headers, body) = introspect(&stack, &token, auth);
        assert_eq!(status, 401);
        assert_eq!(headers[WWW_AUTHENTICATE], "Basic realm=\"mayfly-sts\"");
        assert_eq!(body["error"], "invalid_client");
    }
    let (_, _, body) = introspect(&stack, "garbage", Auth::Client);
    assert_eq!(body, json!({"active": false}));

    let discovery: Value =
        http(&stack).get(format!("{}/.well-known/openid-configuration", stack.sts.url)).send().unwrap().json().unwrap();
    assert_eq!(discovery["revocation_endpoint"], format!("{}/revoke", stack.sts.url));
    assert_eq!(discovery["introspection_endpoint"], format!("{}/introspect", stack.sts.url));
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn git_is_refused_a_revoked_token_on_the_next_request() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    // The helper mints (and caches) a read token for org/app, as it would for git.
    let token = stack.helper_token("org/app.git");
    let info_refs = format!("{}/info/refs?service=git-upload-pack", stack.repo_url("org/app.git"));
    assert_eq!(http(&stack).get(&info_refs).bearer_auth(&token).send().unwrap().status(), 200);

    assert_eq!(revoke(&stack, &[("token", &token), ("token_type_hint", "access_token")]).0, 200);

    let refused = http(&stack).get(&info_refs).bearer_auth(&token).send().unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.text().unwrap(), "token has been revoked\n");
    // git, through the helper, presents the cached (revoked) token and is refused.
    let unauthorized = stack.git_server().stats.unauthorized.load(Ordering::SeqCst);
    let out = stack.git(&stack.work, &["clone", &stack.repo_url("org/app.git"), "app"]);
    assert!(!out.status.success(), "a clone with a revoked token must fail");
    assert!(stack.git_server().stats.unauthorized.load(Ordering::SeqCst) > unauthorized);
    let served = stack.client_audit().into_iter().find(|l| l["outcome"] == "cache-hit").expect("served from cache");
    assert_eq!(served["fingerprint"], fingerprint(&token));

    let revoked = stack.sts_audit().into_iter().find(|l| l["outcome"] == "revoked").expect("revocation is audited");
    assert_eq!(revoked["fingerprint"], fingerprint(&token));
    assert_eq!(revoked["audience"], stack.git_server().base_url);
    stack.assert_no_tokens_on_disk();
}

#[test]
fn the_registry_token_endpoint_refuses_a_revoked_token() {
    let stack = Stack::builder().git().oci().start();
    let service = format!("127.0.0.1:{}", stack.oci_port());
    let token = mint(&stack, &service, &format!("oci:{service}/test/*:read"));
    let registry_token = || {
        http(&stack)
            .get(format!("{}/registry/token", stack.sts.url))
            .query(&[("service", service.as_str()), ("scope", "repository:test/app:pull")])
            .basic_auth("mayfly", Some(&token))
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(registry_token(), 200);
    assert_eq!(revoke(&stack, &[("token", &token)]).0, 200);
    assert_eq!(registry_token(), 401);
    let denied = stack.sts_audit().into_iter().find(|l| l["outcome"] == "denied").expect("the refusal is audited");
    assert_eq!(denied["reason"], "registry: token has been revoked");
}

#[test]
fn a_refresh_answers_the_tool_first_and_the_replaced_token_is_still_revoked() {
    // Six-second tokens: the margin is capped at half the lifetime, three seconds.
    let stack = Stack::with(mayfly_tests::Options { subject_lifetime: 6, max_ttl: "6s", ..Default::default() });
    let old = stack.helper_token("org/app.git");
    assert_eq!(introspect(&stack, &old, Auth::Client).2["active"], true);
    std::thread::sleep(std::time::Duration::from_millis(3500));
    let new = stack.helper_token("org/app.git");
    assert_ne!(new, old, "inside the margin the helper answers with a fresh token");
    assert_eq!(introspect(&stack, &new, Auth::Client).2["active"], true);
    // The old token is revoked by the helper's detached copy; wait for it to be done.
    let mut revoked = false;
    for _ in 0..200 {
        if introspect(&stack, &old, Auth::Client).2["active"] == false {
            revoked = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(revoked, "the replaced token was never revoked");
    let mut audit = Vec::new();
    for _ in 0..200 {
        audit = stack.client_audit();
        if audit.len() == 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let line = audit.iter().find(|l| l["outcome"] == "revoked").expect("a revoked line");
    assert_eq!(line["fingerprint"], fingerprint(&old));
    assert_eq!(line["target"], audit[0]["target"], "the line names what the token was for, as before");
    assert_eq!(audit.iter().filter(|l| l["outcome"] == "issued").count(), 2);
}
