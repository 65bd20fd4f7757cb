//! AWS STS's XML answer to `AssumeRoleWithWebIdentity`, turned into the document
//! `credential_process` prints.
//!
//! Input: the HTTP status on the first line, then the body.
//!
//! Invariants:
//! - a success is a `credential_process` document: `Version` 1, non-empty key id, secret
//!   and session token without whitespace or control characters, an RFC 3339 `Expiration`,
//!   and nothing else; its token id is the key id; only status 200 yields one;
//! - a refusal's code and description hold no control characters (they reach terminals
//!   and logs), and the description is at most 300 characters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mayfly_core::ExchangeError;
use mayfly_core::protocol::aws::parse_sts_answer;
use mayfly_fuzz::first_line;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

fuzz_target!(|data: &[u8]| {
    let (status, body) = first_line(data);
    let Some(status) = std::str::from_utf8(status).ok().and_then(|s| s.trim().parse::<u16>().ok()) else { return };
    match parse_sts_answer(status, body) {
        Ok(response) => {
            assert_eq!(status, 200, "credentials from a status {status}");
            let document: Value = serde_json::from_str(response.access_token.expose()).expect("a JSON document");
            let object = document.as_object().expect("an object");
            let keys: Vec<&str> = object.keys().map(String::as_str).collect();
            assert_eq!(keys, ["Version", "AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"]);
            assert_eq!(document["Version"], 1);
            for name in ["AccessKeyId", "SecretAccessKey", "SessionToken"] {
                let value = document[name].as_str().expect("a string");
                assert!(!value.is_empty(), "empty {name}");
                assert!(!value.chars().any(|c| c.is_whitespace() || c.is_control()), "{name}: {value:?}");
            }
            let expiration = document["Expiration"].as_str().expect("a string");
            OffsetDateTime::parse(expiration, &Rfc3339).expect("an RFC 3339 expiration");
            assert_eq!(response.token_id.as_deref(), document["AccessKeyId"].as_str());
        }
        Err(ExchangeError::Denied { code, description, .. }) => {
            assert_ne!(status, 200, "a refusal with status 200");
            assert!(!code.chars().any(char::is_control), "code {code:?}");
            if let Some(description) = description {
                assert!(!description.chars().any(char::is_control), "description {description:?}");
                assert!(description.chars().count() <= 300);
            }
        }
        Err(ExchangeError::Malformed { .. }) => {}
        Err(other) => panic!("an answer read without the network failed as {other:?}"),
    }
});
