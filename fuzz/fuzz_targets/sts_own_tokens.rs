//! `mayfly-sts` `POST /revoke` (RFC 7009) and `POST /introspect` (RFC 7662), through the
//! exchange's router.
//!
//! Input: an HTTP-like request (see the harness's `sts` module for its placeholders).
//!
//! Invariants:
//! - every answer forbids caching; no 5xx;
//! - revocation answers 200 with an empty body to any form with one `token`, valid or not,
//!   and 400 `invalid_request` otherwise;
//! - introspection without the configured client's Basic credentials or the token itself
//!   as Bearer is 401 `invalid_client`, with a challenge;
//! - an inactive token is exactly `{"active":false}`; an active one is only this run's
//!   live token, and its answer repeats that token's claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mayfly_fuzz::sts::{exchange, payload};

fuzz_target!(|data: &[u8]| {
    let Some((asked, answer)) = exchange(data, &["/revoke", "/introspect"]) else { return };
    if asked.method != "POST" {
        assert_eq!(answer.status, 405, "{} {}", asked.method, asked.path);
        return;
    }
    assert!(answer.status.as_u16() < 500, "{} from {}", answer.status, asked.path);
    assert!(answer.no_store(), "an answer without `Cache-Control: no-store`");
    let body = answer.json();
    let tokens: Vec<&str> = asked.form.iter().filter(|(k, _)| k == "token").map(|(_, v)| v.as_str()).collect();
    let header = |name: &str| asked.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
    // What HTTP header values read as text: visible ASCII, spaces and tabs.
    let text = |v: &str| v.chars().all(|c| c == '\t' || (' '..='~').contains(&c));
    let is_form = header("content-type").is_some_and(|v| text(v) && v.starts_with("application/x-www-form-urlencoded"));
    let error = || body.as_ref().and_then(|b| b["error"].as_str().map(str::to_owned)).unwrap_or_default();
    if asked.path == "/revoke" {
        match (is_form, tokens.as_slice()) {
            (true, [token]) if !token.is_empty() => {
                assert_eq!((answer.status.as_u16(), answer.body.len()), (200, 0), "revoking a token");
            }
            _ => assert_eq!((answer.status.as_u16(), error().as_str()), (400, "invalid_request")),
        }
        return;
    }
    match answer.status.as_u16() {
        401 => {
            assert_eq!(error(), "invalid_client");
            assert!(answer.headers.contains_key("www-authenticate"), "a 401 without a challenge");
        }
        400 => assert_eq!(error(), "invalid_request"),
        200 => {
            let body = body.expect("a JSON answer");
            if body["active"] == false {
                assert_eq!(body.to_string(), r#"{"active":false}"#, "an inactive answer tells more");
                return;
            }
            assert_eq!(body["active"], true);
            assert_eq!(tokens, [asked.token.as_str()], "an active answer for another token");
            let claims = payload(&asked.token);
            for name in ["sub", "scope", "aud", "iss", "jti", "exp"] {
                assert_eq!(body[name], claims[name], "introspection changed `{name}`");
            }
            let authorized = header("authorization").and_then(|v| v.split_once(' ')).is_some_and(|(scheme, value)| {
                let value = value.trim();
                (scheme.eq_ignore_ascii_case("bearer") && value == asked.token)
                    || (scheme.eq_ignore_ascii_case("basic") && value == "YXVkaXRvcjpzM2NyZXQ=")
            });
            assert!(authorized, "introspection answered without client credentials or the token's own Bearer");
        }
        other => panic!("introspection answered {other}"),
    }
});
