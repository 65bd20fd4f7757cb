//! `mayfly-sts` `GET`/`POST /registry/token`: the registry token request of the
//! distribution token protocol, through the exchange's router.
//!
//! Input: an HTTP-like request (see the harness's `sts` module for its placeholders;
//! `@TOKEN@` carries `oci:` scopes for `registry.example.com:5000`).
//!
//! Invariants:
//! - no 5xx; a 401 carries a challenge; without `service` it is 400;
//! - a registry token is issued only for this run's live token presented as the protocol
//!   says (Basic password on `GET`, `password`/`refresh_token` on `POST`), for the service
//!   the token was minted for;
//! - its `access` names only repositories that were asked for, and only actions the
//!   token's scopes allow there (`:read` pulls, `:write` pulls and pushes), for at most
//!   five minutes.
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use mayfly_fuzz::sts::{TOKEN_AUDIENCE, TOKEN_SCOPE, exchange, payload};
use mayfly_core::pattern::{Kind, matches};

fuzz_target!(|data: &[u8]| {
    let Some((asked, answer)) = exchange(data, &["/registry/token"]) else { return };
    if !["GET", "POST", "HEAD"].contains(&asked.method.as_str()) {
        assert_eq!(answer.status, 405, "{} /registry/token", asked.method);
        return;
    }
    let status = answer.status.as_u16();
    assert!(status < 500, "{status}");
    if status == 401 {
        assert!(answer.headers.contains_key("www-authenticate"), "a 401 without a challenge");
    }
    if status != 200 || asked.method == "HEAD" {
        return;
    }
    let post = asked.method == "POST";
    let pairs = if post { &asked.form } else { &asked.query };
    let param = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    assert_eq!(param("service"), Some(TOKEN_AUDIENCE), "a registry token for another service");
    let presented = if post {
        match param("grant_type") {
            Some("password") => param("password"),
            Some("refresh_token") => param("refresh_token"),
            _ => None,
        }
        .map(str::to_owned)
    } else {
        basic_password(&asked.headers)
    };
    assert_eq!(presented.as_deref(), Some(asked.token.as_str()), "a registry token for another credential");
    let body = answer.json().expect("a JSON answer");
    let token = body["token"].as_str().expect("a token");
    assert_eq!(body["access_token"], token);
    let claims = payload(token);
    assert_eq!(claims["aud"], TOKEN_AUDIENCE);
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!(lifetime <= 300, "a registry token for {lifetime} s");
    let asked_names: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split_whitespace())
        .filter_map(|s| s.rsplit_once(':')?.0.strip_prefix("repository:"))
        .collect();
    for access in claims["access"].as_array().expect("an access list") {
        let name = access["name"].as_str().expect("a name");
        assert!(asked_names.contains(&name), "access to {name}, which was not asked");
        for action in access["actions"].as_array().expect("actions") {
            let action = action.as_str().expect("an action");
            let allowed = TOKEN_SCOPE.split_whitespace().any(|scope| {
                let Some((target, operation)) = scope.strip_prefix("oci:").and_then(|s| s.rsplit_once(':')) else {
                    return false;
                };
                let Some((host, pattern)) = target.split_once('/') else { return false };
                host == TOKEN_AUDIENCE
                    && matches(Kind::Repository, pattern, name)
                    && match action {
                        "pull" => operation == "read" || operation == "write",
                        "push" => operation == "write",
                        _ => false,
                    }
            });
            assert!(allowed, "{action} on {name} granted beyond the token's scopes");
        }
    }
});

fn basic_password(headers: &[(String, String)]) -> Option<String> {
    let (_, value) = headers.iter().find(|(n, _)| n.trim().eq_ignore_ascii_case("authorization"))?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    Some(String::from_utf8(decoded).ok()?.split_once(':')?.1.to_owned())
}
