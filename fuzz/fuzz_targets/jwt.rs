//! Reading a JWT's claims without verifying them (`peek_claims`), as helpers do for
//! expiry and audit lines.
//!
//! Invariants: only a three-part compact JWS yields claims; the claims, written back into
//! a token, read back the same (the model round-trips); peeking never panics on any
//! string.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use mayfly_core::{UnverifiedClaims, peek_claims};
use serde_json::{Map, Value, json};

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let Some(claims) = peek_claims(token) else { return };
    assert_eq!(token.split('.').count(), 3, "claims from a token that is not three parts");
    let again = peek_claims(&write_back(&claims)).expect("written-back claims peek");
    assert_eq!(again, claims, "claims do not round-trip");
});

fn write_back(claims: &UnverifiedClaims) -> String {
    let mut payload = Map::new();
    let UnverifiedClaims { iss, sub, exp, jti, aud } = claims;
    for (name, value) in [("iss", iss), ("sub", sub), ("jti", jti)] {
        if let Some(value) = value {
            payload.insert(name.into(), json!(value));
        }
    }
    if let Some(exp) = exp {
        payload.insert("exp".into(), json!(exp));
    }
    if !aud.is_empty() {
        payload.insert("aud".into(), json!(aud));
    }
    let payload = URL_SAFE_NO_PAD.encode(Value::Object(payload).to_string());
    format!("e30.{payload}.sig")
}
