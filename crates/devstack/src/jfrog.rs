//! JFrog Artifactory's OIDC token exchange on loopback HTTPS.
//!
//! jfrog/setup-jfrog-cli and JFrog's "OpenID Connect integration" REST API: `POST
//! /access/api/v1/oidc/token` with JSON `{"grant_type":
//! "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token_type":
//! "urn:ietf:params:oauth:token-type:id_token", "subject_token", "provider_name"}`. The
//! integration named `provider_name` must exist, the ID token verify against the
//! development issuer for the integration's audience, and an identity mapping match its
//! `sub`. 200 `{"access_token", "token_type": "Bearer", "expires_in", "scope",
//! "issued_token_type", "username"}`; errors `{"errors": [{"code", "message"}]}` (400 for
//! the request, 401 for the ID token or no matching mapping, 404 for an unknown
//! integration).
//!
//! It also serves a PyPI repository's upload API as Artifactory does
//! (`POST /artifactory/api/pypi/REPO`, twine's legacy multipart upload) for Basic
//! `USER:ACCESS_TOKEN` with a live token of that user: 200, else 401.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::recording::{credential, jwt_shaped, now, record};
use crate::{DevCa, DevIssuer, RecordedRequest};

/// How long the access tokens it mints live.
const TOKEN_LIFETIME: i64 = 3600;

/// An OIDC integration: its audience and its identity mappings (`sub` -> user).
#[derive(Clone)]
struct Integration {
    audience: String,
    mappings: BTreeMap<String, String>,
}

struct Inner {
    issuer: DevIssuer,
    integrations: Mutex<BTreeMap<String, Integration>>,
    /// Token -> (user, expiry).
    tokens: Mutex<BTreeMap<String, (String, i64)>>,
    /// (user, repository, file name) uploaded.
    uploads: Mutex<Vec<(String, String, String)>>,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// A running Artifactory stand-in.
pub struct Artifactory {
    /// `https://127.0.0.1:PORT`.
    pub base_url: String,
    inner: Arc<Inner>,
}

impl Artifactory {
    /// Starts it over HTTPS with `ca`'s certificate, trusting ID tokens of `issuer`.
    pub fn start(runtime: &tokio::runtime::Runtime, ca: &DevCa, issuer: &DevIssuer) -> Result<Self, String> {
        let inner = Arc::new(Inner {
            issuer: issuer.clone(),
            integrations: Mutex::default(),
            tokens: Mutex::default(),
            uploads: Mutex::default(),
            requests: Mutex::default(),
        });
        let base_url = crate::serve_on_loopback(runtime, ca, Router::new().fallback(handle).with_state(inner.clone()))?;
        Ok(Self { base_url, inner })
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> &str {
        self.base_url.trim_start_matches("https://")
    }

    /// Its token endpoint.
    pub fn token_url(&self) -> String {
        format!("{}/access/api/v1/oidc/token", self.base_url)
    }

    /// Adds the integration `provider` for `audience`, mapping ID tokens with this `sub`
    /// to `user`.
    pub fn integrate(&self, provider: &str, audience: &str, subject: &str, user: &str) {
        if let Ok(mut integrations) = self.inner.integrations.lock() {
            let integration = integrations
                .entry(provider.into())
                .or_insert_with(|| Integration { audience: audience.into(), mappings: BTreeMap::new() });
            integration.mappings.insert(subject.into(), user.into());
        }
    }

    /// The user a live token it minted acts as.
    pub fn user_of(&self, token: &str) -> Option<String> {
        let tokens = self.inner.tokens.lock().ok()?;
        tokens.get(token).filter(|(_, expires)| *expires > now()).map(|(user, _)| user.clone())
    }

    /// The upload URL of its PyPI repository `repo` (twine's `--repository-url`).
    pub fn pypi_upload_url(&self, repo: &str) -> String {
        format!("{}/artifactory/api/pypi/{repo}", self.base_url)
    }

    /// Uploads accepted so far: (user, repository, file name).
    pub fn uploads(&self) -> Vec<(String, String, String)> {
        self.inner.uploads.lock().map(|u| u.clone()).unwrap_or_default()
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    let body =
        json!({"errors": [{"code": status.canonical_reason().unwrap_or("ERROR").to_uppercase(), "message": message}]});
    (status, axum::Json(body)).into_response()
}

async fn handle(State(inner): State<Arc<Inner>>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 1 << 20).await else {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
    };
    record(&inner.requests, &parts, &body, "subject_token");
    if let Some(repo) = parts.uri.path().strip_prefix("/artifactory/api/pypi/")
        && parts.method == Method::POST
    {
        let repo = repo.trim_end_matches('/').to_owned();
        return pypi_upload(&inner, Request::from_parts(parts, Body::from(body)), repo).await;
    }
    if parts.uri.path() != "/access/api/v1/oidc/token" || parts.method != Method::POST {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "Invalid request body");
    };
    let field = |name: &str| body.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
    if field("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange"
        || field("subject_token_type") != "urn:ietf:params:oauth:token-type:id_token"
    {
        return error(StatusCode::BAD_REQUEST, "Unsupported grant type or subject token type");
    }
    let provider = field("provider_name");
    let integration = inner.integrations.lock().ok().and_then(|i| i.get(&provider).cloned());
    let Some(integration) = integration else {
        return error(StatusCode::NOT_FOUND, &format!("OIDC integration '{provider}' not found"));
    };
    let Ok(claims) = inner.issuer.verify(&field("subject_token"), &integration.audience) else {
        return error(StatusCode::UNAUTHORIZED, "Failed to validate the OIDC token");
    };
    let Some(user) = claims["sub"].as_str().and_then(|s| integration.mappings.get(s)).cloned() else {
        return error(StatusCode::UNAUTHORIZED, "No identity mapping matches the OIDC token");
    };
    let expires = now() + TOKEN_LIFETIME;
    let token =
        jwt_shaped(&json!({"sub": format!("jfac@01/users/{user}"), "exp": expires, "jti": crate::random_hex(8)}));
    let Ok(mut tokens) = inner.tokens.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    tokens.insert(token.clone(), (user.clone(), expires));
    axum::Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME,
        "scope": "applied-permissions/user",
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "username": user,
    }))
    .into_response()
}

/// twine's upload: Basic `USER:TOKEN` with a live token of that user.
async fn pypi_upload(inner: &Inner, request: Request<Body>, repo: String) -> Response {
    use axum::extract::FromRequest;
    let presented = request.headers().get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let Some(("Basic", user, token)) = presented.and_then(credential) else {
        let mut response = error(StatusCode::UNAUTHORIZED, "Authentication is required");
        let challenge = axum::http::HeaderValue::from_static("Basic realm=\"Artifactory Realm\"");
        response.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, challenge);
        return response;
    };
    let live = inner.tokens.lock().ok().and_then(|t| t.get(&token).filter(|(_, e)| *e > now()).map(|(u, _)| u.clone()));
    if live.as_deref() != Some(user.as_str()) {
        return error(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    let Ok(mut form) = axum::extract::Multipart::from_request(request, &()).await else {
        return error(StatusCode::BAD_REQUEST, "Expected a multipart upload");
    };
    let mut file = None;
    while let Ok(Some(field)) = form.next_field().await {
        if field.name() == Some("content") {
            file = field.file_name().map(str::to_owned);
        }
    }
    let Some(file) = file else { return error(StatusCode::BAD_REQUEST, "No content") };
    if let Ok(mut uploads) = inner.uploads.lock() {
        uploads.push((user, repo, file));
    }
    StatusCode::OK.into_response()
}
