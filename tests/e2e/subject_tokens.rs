//! Subject tokens that must not be exchanged: forged, expired, for someone else.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mayfly_tests::{Stack, mayfly_lines, require_tool};
use serde_json::{Value, json};

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Posts a token exchange straight to `mayfly-sts`; returns (status, body).
fn exchange(stack: &Stack, subject: &str) -> (u16, Value) {
    let client = stack.https_client();
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
        ("subject_token", subject),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:id_token"),
        ("audience", &stack.git_server().base_url),
        ("scope", "repo:org/app:read"),
    ];
    let response = client.post(format!("{}/token", stack.sts.url)).form(&form).send().unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap())
}

fn tampered(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["repository"] = json!("org/other");
    format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(claims.to_string()), parts[2])
}

fn alg_none(stack: &Stack) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let claims = json!({"iss": stack.issuer.issuer(), "sub": "repo:org/app:ref:refs/heads/main", "aud": "mayfly-sts", "exp": now() + 300, "repository": "org/app", "ref": "refs/heads/main"});
    format!("{header}.{}.", URL_SAFE_NO_PAD.encode(claims.to_string()))
}

#[test]
fn the_exchange_refuses_bad_subject_tokens_with_a_reason() {
    let stack = Stack::new();
    let good = stack.issuer.mint("mayfly-sts", &Value::Null);
    let (status, body) = exchange(&stack, &good);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");

    let stranger = mayfly_sts::SigningKey::generate(mayfly_sts::Algorithm::Es256).unwrap();
    let foreign_key = stranger
        .sign(Some("JWT"), &json!({"iss": stack.issuer.issuer(), "sub": "x", "aud": "mayfly-sts", "exp": now() + 300}))
        .unwrap();
    let cases = [
        (tampered(&good), "subject token signature does not verify"),
        (foreign_key, "is unknown to its issuer"),
        (alg_none(&stack), "alg `none` is not allowed"),
        (
            stack.issuer.mint("mayfly-sts", &json!({"exp": now() - 600, "iat": now() - 900, "nbf": now() - 900})),
            "subject token has expired",
        ),
        (stack.issuer.mint("mayfly-sts", &json!({"nbf": now() + 600})), "not valid yet"),
        (stack.issuer.mint("someone-else", &Value::Null), "audience is wrong"),
        (
            stack.issuer.mint("mayfly-sts", &json!({"iss": "https://evil.example"})),
            "issuer `https://evil.example` is not trusted",
        ),
        ("not-a-jwt".to_owned(), "not a signed JWT"),
        (stack.issuer.mint("mayfly-sts", &json!({"iat": now() + 600})), "issued in the future"),
        (stack.issuer.mint("mayfly-sts", &json!({"iat": now() - 60, "exp": now() + 25 * 3600})), "lives longer than"),
    ];
    for (token, reason) in cases {
        let (status, body) = exchange(&stack, &token);
        assert_eq!(status, 400, "{reason}: {body}");
        assert_eq!(body["error"], "invalid_request", "{reason}: {body}");
        let description = body["error_description"].as_str().unwrap();
        assert!(description.contains(reason), "want `{reason}`, got `{description}`");
        assert!(!description.contains(&token), "the token is echoed back");
    }
    let denials = stack.sts_audit().iter().filter(|l| l["outcome"] == "denied").count();
    assert_eq!(denials, 10, "every refusal is audited");
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn a_refused_subject_token_reaches_the_terminal_as_one_line() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    stack.write_config(&stack.route("org/app", &["read"], "given"));
    let good = stack.issuer.mint("mayfly-sts", &Value::Null);
    let cases = [
        (tampered(&good), "signature does not verify"),
        (alg_none(&stack), "alg `none` is not allowed"),
        (stack.issuer.mint("someone-else", &Value::Null), "audience is wrong"),
        // Expired tokens are caught before they leave the machine.
        (stack.issuer.mint("mayfly-sts", &json!({"exp": now() - 600})), "expired at"),
    ];
    for (token, reason) in cases {
        let out = stack
            .git_cmd(&stack.work, &["ls-remote", &stack.repo_url("org/app.git")])
            .env("MAYFLY_TEST_SUBJECT", &token)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines = mayfly_lines(&out.stderr);
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].contains(reason), "want `{reason}`: {}", lines[0]);
        assert!(!stderr.contains(&token), "subject token leaked to the terminal");
    }
    assert_eq!(stack.sts_issued(), 0);
    stack.assert_no_tokens_on_disk();
}

#[test]
fn rs256_issuers_are_verified_too() {
    let stack =
        Stack::with(mayfly_tests::Options { issuer_algorithm: mayfly_tests::Algorithm::Rs256, ..Default::default() });
    let (status, body) = exchange(&stack, &stack.issuer.mint("mayfly-sts", &Value::Null));
    assert_eq!(status, 200, "{body}");
    let (status, _) = exchange(&stack, &tampered(&stack.issuer.mint("mayfly-sts", &Value::Null)));
    assert_eq!(status, 400);
}
