//! Tokens this exchange minted, presented back to it: revocation (RFC 7009) and
//! introspection (RFC 7662).
//!
//! Revocation takes no client authentication: a token is its own proof, so whoever holds
//! one may end it, and a workload can end only tokens it was given. Introspection tells
//! more (subject, scopes), so it takes a configured client's Basic credentials, or the
//! token itself as Bearer (a holder asking about its own token).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use jsonwebtoken::Validation;
use jsonwebtoken::errors::ErrorKind;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::Sts;
use crate::audit::{Line, now_rfc3339};
use crate::keys::KeyRefusal;
use crate::oauth::OAuthError;
use crate::server::{Form, no_store, oauth_error};
use mayfly_core::Fingerprint;

/// Claims of an introspection answer, copied from the token when present (`act` and
/// `sid` tell a resource server who acted, through which session).
const INTROSPECTED_CLAIMS: [&str; 11] =
    ["scope", "client_id", "sub", "aud", "iss", "exp", "iat", "nbf", "jti", "act", "sid"];

/// A token verified as minted here.
pub(crate) struct OwnToken {
    pub(crate) claims: Map<String, Value>,
    pub(crate) jti: String,
    pub(crate) expires_at: i64,
}

impl OwnToken {
    pub(crate) fn claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }
}

/// Checks signature (by an active or published key, named by `kid`) and `iss`, and with `live` also `exp` and `nbf` (no leeway: a token
/// is active or not). Revocation passes `live = false`: an expired token may still be
/// ended, harmlessly.
pub(crate) fn verify(sts: &Sts, token: &str, live: bool) -> Result<OwnToken, &'static str> {
    let mut validation = Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_issuer(&[&sts.config.issuer]);
    validation.set_required_spec_claims(&["exp", "iss"]);
    validation.validate_aud = false;
    validation.validate_exp = live;
    validation.validate_nbf = live;
    validation.leeway = 0;
    let data = sts.keys.decode::<Map<String, Value>>(token, validation).map_err(|e| match e {
        KeyRefusal::Retired => "token was signed by a retired key",
        KeyRefusal::Invalid(e) if *e.kind() == ErrorKind::ExpiredSignature => "token has expired",
        KeyRefusal::Invalid(e) if *e.kind() == ErrorKind::ImmatureSignature => "token is not valid yet",
        KeyRefusal::Unknown | KeyRefusal::Invalid(_) => "not a token signed by this exchange",
    })?;
    let jti = data.claims.get("jti").and_then(Value::as_str).ok_or("token has no `jti`")?.to_owned();
    let expires_at = data.claims.get("exp").and_then(Value::as_i64).ok_or("token has no numeric `exp`")?;
    Ok(OwnToken { claims: data.claims, jti, expires_at })
}

/// The form of a request, if it is one.
fn parse_form(headers: &HeaderMap, body: &[u8]) -> Option<Form> {
    let form_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    form_type
        .starts_with("application/x-www-form-urlencoded")
        .then(|| Form { pairs: url::form_urlencoded::parse(body).into_owned().collect() })
}

fn not_a_form() -> Response {
    oauth_error(StatusCode::BAD_REQUEST, OAuthError::InvalidRequest, "body must be application/x-www-form-urlencoded")
}

/// `POST /revoke` (RFC 7009).
pub(crate) async fn revoke(State(sts): State<Arc<Sts>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(form) = parse_form(&headers, &body) else { return not_a_form() };
    let token = match form.one("token") {
        Ok(Some(token)) => token,
        Ok(None) => return oauth_error(StatusCode::BAD_REQUEST, OAuthError::InvalidRequest, "`token` is required"),
        Err(reason) => return oauth_error(StatusCode::BAD_REQUEST, OAuthError::InvalidRequest, &reason),
    };
    let fingerprint = Some(Fingerprint::of(token).to_string());
    // `token_type_hint` is only a hint (section 2.1): every token here is an access token.
    let own = match verify(&sts, token, false) {
        Ok(own) => own,
        Err(reason) => {
            if let Some(app) = &sts.lasting.github_app
                && let Some((installation, result)) = app.revoke_presented(token).await
            {
                return github_revoked(&sts, installation, result, fingerprint).await;
            }
            // Section 2.2: an invalid token is no error; the client has nothing to fix.
            sts.lasting
                .audit
                .record(&Line {
                    time: now_rfc3339(),
                    outcome: "revoke-ignored",
                    reason: Some(reason),
                    fingerprint,
                    ..Line::default()
                })
                .await;
            return no_store(StatusCode::OK.into_response());
        }
    };
    let line = Line {
        time: now_rfc3339(),
        subject: own.claim("sub"),
        audience: own.claim("aud"),
        jti: Some(&own.jti),
        fingerprint,
        ..Line::default()
    };
    match sts.revoke(&own.jti, own.expires_at).await {
        Ok(()) => {
            sts.lasting.audit.record(&Line { outcome: "revoked", ..line }).await;
            // A session's end takes the GitHub tokens minted through it along.
            crate::github_app::end_session(&sts, &own.jti).await;
            no_store(StatusCode::OK.into_response())
        }
        Err(reason) => {
            sts.lasting.audit.record(&Line { outcome: "revoke-failed", reason: Some(&reason), ..line }).await;
            // Section 2.2.1: 503 tells the client to try again.
            oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                OAuthError::TemporarilyUnavailable,
                "cannot record the revocation",
            )
        }
    }
}

/// The answer to revoking an installation token this exchange minted: revoked at GitHub,
/// or 503 so the client tries again.
async fn github_revoked(
    sts: &Sts,
    installation: u64,
    result: Result<(), String>,
    fingerprint: Option<String>,
) -> Response {
    let line = Line { time: now_rfc3339(), installation: Some(installation), fingerprint, ..Line::default() };
    match result {
        Ok(()) => {
            sts.lasting.audit.record(&Line { outcome: "revoked", ..line }).await;
            no_store(StatusCode::OK.into_response())
        }
        Err(reason) => {
            sts.lasting.audit.record(&Line { outcome: "revoke-failed", reason: Some(&reason), ..line }).await;
            oauth_error(StatusCode::SERVICE_UNAVAILABLE, OAuthError::TemporarilyUnavailable, "cannot revoke at GitHub")
        }
    }
}

/// `POST /introspect` (RFC 7662).
pub(crate) async fn introspect(State(sts): State<Arc<Sts>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(form) = parse_form(&headers, &body) else { return not_a_form() };
    let token = match form.one("token") {
        Ok(token) => token,
        Err(reason) => return oauth_error(StatusCode::BAD_REQUEST, OAuthError::InvalidRequest, &reason),
    };
    if !authenticated(&sts, &headers, token) {
        sts.lasting
            .audit
            .record(&Line {
                time: now_rfc3339(),
                outcome: "introspection-refused",
                code: Some(OAuthError::InvalidClient.as_str()),
                reason: Some("no valid client credentials and not the token's own Bearer"),
                ..Line::default()
            })
            .await;
        let mut response = oauth_error(
            StatusCode::UNAUTHORIZED,
            OAuthError::InvalidClient,
            "introspection needs a configured client's Basic credentials, or the token itself as Bearer",
        );
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"mayfly-sts\""));
        return response;
    }
    let Some(token) = token else {
        return oauth_error(StatusCode::BAD_REQUEST, OAuthError::InvalidRequest, "`token` is required");
    };
    let inactive = || no_store(axum::Json(json!({"active": false})).into_response());
    let Ok(own) = verify(&sts, token, true) else { return inactive() };
    match revoked_lineage(&sts, &own.claims).await {
        Ok(false) => {}
        Ok(true) => return inactive(),
        Err(_) => {
            return oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                OAuthError::TemporarilyUnavailable,
                "cannot check revocation",
            );
        }
    }
    let mut answer = Map::new();
    answer.insert("active".into(), Value::Bool(true));
    for name in INTROSPECTED_CLAIMS {
        if let Some(value) = own.claims.get(name) {
            answer.insert(name.into(), value.clone());
        }
    }
    answer.insert("token_type".into(), "Bearer".into());
    no_store(axum::Json(Value::Object(answer)).into_response())
}

/// Whether a token of ours is dead by revocation: its own `jti`, the exchange token a
/// registry token came from (`parent_jti`), or the session it came through (`sid`). A
/// token without a `jti` counts as revoked: it could never be ended.
pub(crate) async fn revoked_lineage(sts: &Sts, claims: &Map<String, Value>) -> Result<bool, String> {
    let Some(jti) = claims.get("jti").and_then(Value::as_str) else { return Ok(true) };
    let ancestors = ["parent_jti", "sid"].into_iter().filter_map(|name| claims.get(name).and_then(Value::as_str));
    for id in std::iter::once(jti).chain(ancestors) {
        if sts.is_revoked(id).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A configured client's Basic credentials, or `Bearer` with the very token asked about.
fn authenticated(sts: &Sts, headers: &HeaderMap, token: Option<&str>) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
    let Some((scheme, credentials)) = value.split_once(' ') else { return false };
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return token.is_some_and(|token| same(token.as_bytes(), credentials.as_bytes()));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Some(decoded) = base64::engine::general_purpose::STANDARD.decode(credentials).ok() else { return false };
    let Some((id, secret)) = std::str::from_utf8(&decoded).ok().and_then(|s| s.split_once(':')) else {
        return false;
    };
    // Id and secret are compared as sent: configured ids have no `:`, and hex secrets are
    // the same under RFC 6749's form-encoding.
    let digest = Sha256::digest(secret.as_bytes());
    sts.config.introspection_clients.iter().any(|client| client.id == id && same(&digest, &client.secret_sha256))
}

/// Equality in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, SigningKey};

    const SECRET: &str = "s3cret";

    /// An exchange with one introspection client, auditing into a temporary directory.
    fn sts() -> (Arc<Sts>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(&format!(
            "issuer = \"http://127.0.0.1:1\"\naudit_log = \"{}\"\n[[introspection_clients]]\nid = \"gate\"\nsecret_sha256 = \"{}\"\n",
            dir.path().join("audit.jsonl").display(),
            hex::encode(Sha256::digest(SECRET))
        ))
        .unwrap();
        (Arc::new(Sts::new(config, None).unwrap()), dir)
    }

    fn audit(dir: &tempfile::TempDir) -> Vec<Value> {
        let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap_or_default();
        text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
    }

    fn mint(sts: &Sts, exp_offset: i64) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = json!({"iss": sts.config.issuer, "sub": "s", "aud": "a", "scope": "repo:x:read", "iat": now,
                            "nbf": now, "exp": now + exp_offset, "jti": crate::server::random_id()});
        sts.keys.active().sign(Some("at+jwt"), &claims).unwrap()
    }

    async fn post(sts: &Arc<Sts>, path: &str, authorization: Option<&str>, form: &str) -> (StatusCode, Value) {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
        if let Some(value) = authorization {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        let body = Bytes::from(form.to_owned());
        let response = match path {
            "/revoke" => revoke(State(sts.clone()), headers, body).await,
            _ => introspect(State(sts.clone()), headers, body).await,
        };
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    fn basic(id: &str, secret: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
    }

    #[tokio::test]
    async fn a_revoked_token_is_inactive_and_revoking_twice_is_fine() {
        let (sts, dir) = sts();
        let token = mint(&sts, 300);
        let auth = basic("gate", SECRET);
        let (status, body) = post(&sts, "/introspect", Some(&auth), &format!("token={token}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["active"], true);
        assert_eq!(body["scope"], "repo:x:read");
        assert_eq!(body["token_type"], "Bearer");
        for _ in 0..2 {
            let (status, body) = post(&sts, "/revoke", None, &format!("token={token}")).await;
            assert_eq!((status, body), (StatusCode::OK, Value::Null));
        }
        let (_, body) = post(&sts, "/introspect", Some(&auth), &format!("token={token}")).await;
        assert_eq!(body, json!({"active": false}));
        let lines = audit(&dir);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["outcome"], "revoked");
        assert_eq!(lines[0]["subject"], "s");
        assert_eq!(lines[0]["fingerprint"], Fingerprint::of(&token).to_string());
        assert_eq!(lines[0]["jti"], verify(&sts, &token, true).unwrap().jti);
    }

    #[tokio::test]
    async fn introspection_needs_a_client_or_the_token_itself() {
        let (sts, dir) = sts();
        let token = mint(&sts, 300);
        let other = mint(&sts, 300);
        let form = format!("token={token}");
        for auth in [None, Some(basic("gate", "wrong")), Some(basic("nobody", SECRET)), Some(format!("Bearer {other}"))]
        {
            let (status, body) = post(&sts, "/introspect", auth.as_deref(), &form).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
            assert_eq!(body["error"], "invalid_client");
        }
        assert_eq!(audit(&dir).len(), 4);
        let (status, body) = post(&sts, "/introspect", Some(&format!("Bearer {token}")), &form).await;
        assert_eq!((status, &body["active"]), (StatusCode::OK, &json!(true)));
    }

    #[tokio::test]
    async fn expired_foreign_and_garbage_tokens_are_inactive_and_revoke_ignores_them() {
        let (sts, dir) = sts();
        let stranger = SigningKey::generate(crate::Algorithm::Es256).unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let foreign =
            stranger.sign(Some("at+jwt"), &json!({"iss": sts.config.issuer, "exp": now + 300, "jti": "j"})).unwrap();
        let auth = basic("gate", SECRET);
        for token in [mint(&sts, -5), foreign, "garbage".to_owned()] {
            let (_, body) = post(&sts, "/introspect", Some(&auth), &format!("token={token}")).await;
            assert_eq!(body, json!({"active": false}));
            let (status, _) = post(&sts, "/revoke", None, &format!("token={token}")).await;
            assert_eq!(status, StatusCode::OK);
        }
        let (status, body) = post(&sts, "/revoke", None, "token_type_hint=access_token").await;
        assert_eq!((status, &body["error"]), (StatusCode::BAD_REQUEST, &json!("invalid_request")));
        let outcomes: Vec<(Value, Value)> =
            audit(&dir).into_iter().map(|l| (l["outcome"].clone(), l["reason"].clone())).collect();
        assert_eq!(
            outcomes,
            [
                (json!("revoked"), Value::Null),
                (json!("revoke-ignored"), json!("not a token signed by this exchange")),
                (json!("revoke-ignored"), json!("not a token signed by this exchange")),
            ],
            "an expired token of ours is still revoked"
        );
    }

    #[tokio::test]
    async fn revoking_a_session_or_a_parent_ends_what_came_from_it() {
        let (sts, _dir) = sts();
        let auth = basic("gate", SECRET);
        let session = mint(&sts, 600);
        let session_jti = verify(&sts, &session, true).unwrap().jti;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let child = |extra: Value| {
            let mut claims = json!({"iss": sts.config.issuer, "sub": "s", "aud": "a", "scope": "repo:x:read",
                                    "iat": now, "exp": now + 300, "jti": crate::server::random_id()});
            for (k, v) in extra.as_object().unwrap() {
                claims[k] = v.clone();
            }
            sts.keys.active().sign(Some("at+jwt"), &claims).unwrap()
        };
        let derived = child(json!({"sid": session_jti, "act": {"sub": "agent:claude", "declared": true}}));
        let derived_jti = verify(&sts, &derived, true).unwrap().jti;
        let registry = child(json!({"parent_jti": derived_jti, "sid": session_jti}));
        let unrelated = child(json!({"sid": "another-session"}));
        for token in [&derived, &registry, &unrelated] {
            let (_, body) = post(&sts, "/introspect", Some(&auth), &format!("token={token}")).await;
            assert_eq!(body["active"], true);
        }
        let (_, body) = post(&sts, "/introspect", Some(&auth), &format!("token={derived}")).await;
        assert_eq!((&body["sid"], &body["act"]["sub"]), (&json!(session_jti), &json!("agent:claude")));

        post(&sts, "/revoke", None, &format!("token={session}")).await;
        for token in [&derived, &registry] {
            let (_, body) = post(&sts, "/introspect", Some(&auth), &format!("token={token}")).await;
            assert_eq!(body, json!({"active": false}));
        }
        let (_, body) = post(&sts, "/introspect", Some(&auth), &format!("token={unrelated}")).await;
        assert_eq!(body["active"], true, "another session's tokens live on");
    }

    #[tokio::test]
    async fn an_expired_token_can_still_be_revoked() {
        let (sts, _dir) = sts();
        let token = mint(&sts, -5);
        let jti = verify(&sts, &token, false).unwrap().jti;
        let (status, _) = post(&sts, "/revoke", None, &format!("token={token}")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(sts.is_revoked(&jti).await.unwrap());
    }
}
