//! Cloudsmith's OpenID token endpoint on loopback HTTPS.
//!
//! Cloudsmith API reference, "Openid Create": `POST /v2/openid/{owner}` with JSON
//! `{"oidc_token", "service_slug"}` (both required, non-empty). The ID token is verified
//! against the development issuer for the owner's provider setting's audience, and its
//! `sub` must be one the service account accepts. 201 `{"token"}`, a JWT; errors
//! `{"detail"}`: 400 "The JWT cannot be created.", 401 "OIDC token cannot be
//! authenticated.", 422 for missing or invalid parameters.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::recording::{jwt_shaped, now, record};
use crate::{DevCa, DevIssuer, RecordedRequest};

/// How long the service tokens it mints live.
const TOKEN_LIFETIME: i64 = 5400;

/// A service account of an owner: the audience and `sub` its provider setting accepts.
#[derive(Clone)]
struct Service {
    audience: String,
    subject: String,
}

struct Inner {
    issuer: DevIssuer,
    /// (owner, service slug) -> service.
    services: Mutex<BTreeMap<(String, String), Service>>,
    /// Token -> (service slug, expiry).
    tokens: Mutex<BTreeMap<String, (String, i64)>>,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// A running Cloudsmith stand-in.
pub struct Cloudsmith {
    /// `https://127.0.0.1:PORT`.
    pub base_url: String,
    inner: Arc<Inner>,
}

impl Cloudsmith {
    /// Starts it over HTTPS with `ca`'s certificate, trusting ID tokens of `issuer`.
    pub fn start(runtime: &tokio::runtime::Runtime, ca: &DevCa, issuer: &DevIssuer) -> Result<Self, String> {
        let inner = Arc::new(Inner {
            issuer: issuer.clone(),
            services: Mutex::default(),
            tokens: Mutex::default(),
            requests: Mutex::default(),
        });
        let base_url = crate::serve_on_loopback(runtime, ca, Router::new().fallback(handle).with_state(inner.clone()))?;
        Ok(Self { base_url, inner })
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> &str {
        self.base_url.trim_start_matches("https://")
    }

    /// Its OpenID endpoint, without the owner.
    pub fn openid_url(&self) -> String {
        format!("{}/v2/openid/", self.base_url)
    }

    /// Adds the service account `slug` of `owner`, accepting ID tokens for `audience`
    /// with this `sub`.
    pub fn add_service(&self, owner: &str, slug: &str, audience: &str, subject: &str) {
        if let Ok(mut services) = self.inner.services.lock() {
            let service = Service { audience: audience.into(), subject: subject.into() };
            services.insert((owner.into(), slug.into()), service);
        }
    }

    /// The service account a live token it minted acts as.
    pub fn service_of(&self, token: &str) -> Option<String> {
        let tokens = self.inner.tokens.lock().ok()?;
        tokens.get(token).filter(|(_, expires)| *expires > now()).map(|(slug, _)| slug.clone())
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn detail(status: StatusCode, detail: &str) -> Response {
    (status, axum::Json(json!({"detail": detail}))).into_response()
}

async fn handle(State(inner): State<Arc<Inner>>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 1 << 20).await else {
        return detail(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large.");
    };
    record(&inner.requests, &parts, &body, "oidc_token");
    let owner = parts.uri.path().strip_prefix("/v2/openid/").map(|o| o.trim_end_matches('/'));
    let Some(owner) = owner.filter(|o| !o.is_empty() && !o.contains('/')) else {
        return detail(StatusCode::NOT_FOUND, "Not found.");
    };
    if parts.method != Method::POST {
        return detail(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.");
    }
    let body = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    let field = |name: &str| body.get(name).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_owned);
    let (Some(oidc_token), Some(slug)) = (field("oidc_token"), field("service_slug")) else {
        return detail(StatusCode::UNPROCESSABLE_ENTITY, "oidc_token and service_slug are required.");
    };
    let service = inner.services.lock().ok().and_then(|s| s.get(&(owner.to_owned(), slug.clone())).cloned());
    let Some(service) = service else { return detail(StatusCode::BAD_REQUEST, "The JWT cannot be created.") };
    let Ok(claims) = inner.issuer.verify(&oidc_token, &service.audience) else {
        return detail(StatusCode::UNAUTHORIZED, "OIDC token cannot be authenticated.");
    };
    if claims["sub"].as_str() != Some(service.subject.as_str()) {
        return detail(StatusCode::UNAUTHORIZED, "OIDC token cannot be authenticated.");
    }
    let expires = now() + TOKEN_LIFETIME;
    let token = jwt_shaped(&json!({"sub": slug, "exp": expires, "jti": crate::random_hex(8)}));
    let Ok(mut tokens) = inner.tokens.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    tokens.insert(token.clone(), (slug, expires));
    (StatusCode::CREATED, axum::Json(json!({"token": token}))).into_response()
}
