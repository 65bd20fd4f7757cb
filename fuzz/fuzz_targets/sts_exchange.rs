//! `mayfly-sts` `POST /token`: RFC 8693 form bodies, through the exchange's router.
//!
//! Input: an HTTP-like request (see the harness's `sts` module for its placeholders;
//! `@SUBJECT@` is an ID token of the one trusted issuer, whose workload one rule allows
//! some audiences and scopes).
//!
//! Invariants:
//! - every answer forbids caching, and a refusal is 400 with exactly `error` and
//!   `error_description`, `error` one of RFC 8693's codes;
//! - a token is issued only for a subject token of the trusted issuer, for the one
//!   audience asked, which the rule allows, with only scopes that were asked and that the
//!   rule allows, for no longer than the rule's limit; the answer describes that token;
//! - or it is a session token: asked with the exchange itself as audience and scope
//!   `session`, naming a declared agent in `act`, for at most 12 hours.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mayfly_core::ACCESS_TOKEN_TYPE;
use mayfly_fuzz::sts::{ISSUER, RULE_AUDIENCES, RULE_MAX_TTL, exchange, payload, subject_claims, trusted_issuer};
use mayfly_core::pattern::{Kind, matches};
use serde_json::Value;

const CODES: [&str; 5] =
    ["invalid_request", "unsupported_grant_type", "invalid_target", "invalid_scope", "invalid_grant"];

fuzz_target!(|data: &[u8]| {
    let Some((asked, answer)) = exchange(data, &["/token"]) else { return };
    if asked.method != "POST" {
        assert_eq!(answer.status, 405, "{} /token", asked.method);
        return;
    }
    assert!(answer.no_store(), "a token endpoint answer without `Cache-Control: no-store`");
    let body = answer.json().expect("a JSON answer");
    if answer.status != 200 {
        assert_eq!(answer.status, 400, "{body}");
        let object = body.as_object().expect("an error object");
        assert_eq!(object.len(), 2, "{body}");
        assert!(CODES.contains(&body["error"].as_str().unwrap_or_default()), "{body}");
        assert!(body["error_description"].is_string(), "{body}");
        return;
    }
    let one = |key: &str| asked.form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or_default();
    let subject = payload(one("subject_token"));
    assert_eq!(subject["iss"], trusted_issuer(), "a token for a subject token of another issuer");
    let audiences: Vec<&str> =
        asked.form.iter().filter(|(k, _)| k == "audience" || k == "resource").map(|(_, v)| v.as_str()).collect();
    let [audience] = audiences.as_slice() else { panic!("a token for audiences {audiences:?}") };
    let token = body["access_token"].as_str().expect("an access token");
    let claims = payload(token);
    if *audience == ISSUER {
        assert_eq!(
            (one("scope"), &claims["scope"], &claims["aud"]),
            ("session", &Value::from("session"), &Value::from(ISSUER))
        );
        assert_eq!(claims["sub"], subject_claims()["sub"]);
        assert_eq!(claims["act"]["declared"], true, "a session names a declared agent");
        assert!(claims["act"]["sub"].as_str().is_some_and(|s| s.starts_with("agent:")), "{claims}");
        let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
        assert!((0..=12 * 3600).contains(&lifetime), "a session for {lifetime} s");
        return;
    }
    assert!(RULE_AUDIENCES.contains(audience), "a token for audience {audience}");
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["aud"], *audience);
    assert_eq!(claims["sub"], subject_claims()["sub"]);
    assert_eq!(claims["subject_issuer"], trusted_issuer());
    let asked_scopes: Vec<&str> = one("scope").split_whitespace().collect();
    let granted = claims["scope"].as_str().expect("a scope");
    assert_eq!(body["scope"], granted);
    for scope in granted.split_whitespace() {
        assert!(asked_scopes.contains(&scope), "granted {scope}, which was not asked");
        let allowed =
            scope == "repo:org/app:read" || matches(Kind::Scope, "oci:registry.example.com:5000/org/app:*", scope);
        assert!(allowed, "granted {scope}, which the rule does not allow");
    }
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!(lifetime > 0 && lifetime as u64 <= RULE_MAX_TTL, "a token for {lifetime} s");
    assert_eq!(body["expires_in"], Value::from(lifetime as u64));
    assert_eq!(
        (body["token_type"].as_str(), body["issued_token_type"].as_str()),
        (Some("Bearer"), Some(ACCESS_TOKEN_TYPE))
    );
});
