//! What the registries' stand-ins share: requests recorded with every credential replaced
//! by its fingerprint, the ID token's stated audience read from the body, and times.

use std::sync::Mutex;

use axum::http::header;
use axum::http::request::Parts;
use base64::Engine;
use serde_json::Value;

use crate::RecordedRequest;

/// Seconds since the epoch.
pub(crate) fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The claims of a JWT as it states them, unverified: for the record only.
pub(crate) fn stated_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

/// An `Authorization` value's token: a bearer token, or a Basic value's password (with
/// whatever user name).
pub(crate) fn credential(value: &str) -> Option<(&'static str, String, String)> {
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(("Bearer", String::new(), token.trim().to_owned()));
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(value.strip_prefix("Basic ")?.trim()).ok()?;
    let (user, password) =
        String::from_utf8(decoded).ok()?.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned()))?;
    Some(("Basic", user, password))
}

/// The field holding the ID token in a form or JSON body.
pub(crate) fn body_field(body: &[u8], name: &str) -> Option<String> {
    if let Ok(json) = serde_json::from_slice::<Value>(body) {
        return json.get(name).and_then(Value::as_str).map(str::to_owned);
    }
    url::form_urlencoded::parse(body).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// Records one request; `id_token_field` names the body field holding the ID token.
pub(crate) fn record(requests: &Mutex<Vec<RecordedRequest>>, parts: &Parts, body: &[u8], id_token_field: &str) {
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            let value = value.to_str().unwrap_or_default();
            let shown = if *name == "x-nuget-apikey" {
                // NuGet's push key is the whole value.
                format!("Plain {}", mayfly_core::Fingerprint::of(value))
            } else if *name == header::AUTHORIZATION {
                // A value that is neither Bearer nor Basic is the token itself (`gem push`).
                credential(value).map_or_else(
                    || format!("Plain {}", mayfly_core::Fingerprint::of(value)),
                    |(scheme, _, token)| format!("{scheme} {}", mayfly_core::Fingerprint::of(&token)),
                )
            } else {
                value.to_owned()
            };
            (name.as_str().to_owned(), shown)
        })
        .collect();
    let id_token_audience = body_field(body, id_token_field).and_then(|t| stated_claims(&t)?.get("aud").cloned());
    let request = RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers,
        body: body.to_vec(),
        id_token_audience,
        app_jwt_claims: None,
    };
    if let Ok(mut requests) = requests.lock() {
        requests.push(request);
    }
}

/// A JWT-shaped token (unsigned: only its issuer checks it) with these claims.
pub(crate) fn jwt_shaped(claims: &Value) -> String {
    let encode = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    format!(
        "{}.{}.{}",
        encode(br#"{"alg":"HS256","typ":"JWT"}"#),
        encode(claims.to_string().as_bytes()),
        crate::random_hex(16)
    )
}
