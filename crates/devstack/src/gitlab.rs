//! GitLab's token exchange on loopback HTTPS (gitlab-org/gitlab!268440, behind the
//! `token_exchange_ci_id_token` feature flag; the audiences as !260389 lists them).
//!
//! `POST /api/v4/token_exchange` with `Authorization: Bearer ID_TOKEN` and the form
//! parameter `audience`: the ID token is verified against the development issuer with its
//! one audience the exchange URL itself; the `audience` must be a service GitLab mints
//! for (`gitlab-artifact-registry`), else 400. 200 `{"token"}`, a JWT for that service,
//! its `exp` capped at the ID token's. Errors are GitLab's `{"message"}`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::recording::{body_field, jwt_shaped, now, record};
use crate::{DevCa, DevIssuer, RecordedRequest};

/// The services the exchange mints tokens for.
pub const GITLAB_EXCHANGE_AUDIENCES: [&str; 1] = ["gitlab-artifact-registry"];
/// How long its tokens live at most.
const TOKEN_LIFETIME: i64 = 3600;

struct Inner {
    exchange_url: String,
    issuer: DevIssuer,
    /// Token -> (audience, project path, expiry).
    tokens: Mutex<BTreeMap<String, (String, String, i64)>>,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// A running GitLab token exchange.
pub struct GitlabExchange {
    /// `https://127.0.0.1:PORT`.
    pub base_url: String,
    inner: Arc<Inner>,
}

impl GitlabExchange {
    /// Starts it over HTTPS with `ca`'s certificate, trusting ID tokens of `issuer`.
    pub fn start(runtime: &tokio::runtime::Runtime, ca: &DevCa, issuer: &DevIssuer) -> Result<Self, String> {
        let listener = crate::loopback_listener().map_err(|e| e.to_string())?;
        let base_url = format!("https://{}", listener.local_addr().map_err(|e| e.to_string())?);
        let inner = Arc::new(Inner {
            exchange_url: format!("{base_url}/api/v4/token_exchange"),
            issuer: issuer.clone(),
            tokens: Mutex::default(),
            requests: Mutex::default(),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        crate::serve_tls(runtime, listener, ca, app)?;
        Ok(Self { base_url, inner })
    }

    /// `{base}/api/v4/token_exchange`, the exchange and its ID tokens' audience.
    pub fn exchange_url(&self) -> String {
        self.inner.exchange_url.clone()
    }

    /// (audience, project) of a live token it minted.
    pub fn token_for(&self, token: &str) -> Option<(String, String)> {
        let tokens = self.inner.tokens.lock().ok()?;
        tokens.get(token).filter(|(_, _, exp)| *exp > now()).map(|(a, p, _)| (a.clone(), p.clone()))
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, axum::Json(json!({"message": text}))).into_response()
}

async fn handle(State(inner): State<Arc<Inner>>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 1 << 20).await else {
        return message(StatusCode::PAYLOAD_TOO_LARGE, "413 Payload Too Large");
    };
    record(&inner.requests, &parts, &body, "audience");
    if parts.uri.path() != "/api/v4/token_exchange" {
        return message(StatusCode::NOT_FOUND, "404 Not Found");
    }
    if parts.method != Method::POST {
        return message(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed");
    }
    let bearer = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let Some(id_token) = bearer.and_then(|v| v.strip_prefix("Bearer ")) else {
        return message(StatusCode::UNAUTHORIZED, "401 Unauthorized");
    };
    let Ok(claims) = inner.issuer.verify(id_token.trim(), &inner.exchange_url) else {
        return message(StatusCode::UNAUTHORIZED, "401 Unauthorized");
    };
    let Some(audience) = body_field(&body, "audience").filter(|a| !a.is_empty()) else {
        return message(StatusCode::BAD_REQUEST, "400 Bad request - audience is missing");
    };
    if !GITLAB_EXCHANGE_AUDIENCES.contains(&audience.as_str()) {
        return message(StatusCode::BAD_REQUEST, "400 Bad request - audience is invalid");
    }
    let project = claims["repository"].as_str().or(claims["project_path"].as_str()).unwrap_or_default().to_owned();
    let expires = (now() + TOKEN_LIFETIME).min(claims["exp"].as_i64().unwrap_or(i64::MAX));
    let token = jwt_shaped(&json!({"aud": [audience, "gitlab-iam-data-access"], "exp": expires, "sub": project}));
    let Ok(mut tokens) = inner.tokens.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    tokens.insert(token.clone(), (audience, project, expires));
    axum::Json(json!({"token": token})).into_response()
}
