//! The Hugging Face Hub on loopback HTTPS, as far as a trusted publisher meets it: the
//! token exchange and git smart HTTP for its repositories.
//!
//! huggingface/hub-docs `docs/hub/trusted-publishers.md`, "API reference": `POST
//! /oauth/token` with JSON `{"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
//! "subject_token_type": "urn:ietf:params:oauth:token-type:id_token", "subject_token",
//! "resource"}`, the ID token's `aud` `https://huggingface.co`, `resource` a repository
//! (`NS/NAME`, `datasets/NS/NAME`, `spaces/NS/NAME`). The ID token is verified for real
//! against the development issuer and the repository's publisher must match its claims.
//! 200 `{"access_token": "hf_jwt_...", "token_type": "bearer", "expires_in": 3600,
//! "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"}`; errors 400
//! `{"error": "invalid_request" | "invalid_grant", "error_description"}`, the description
//! not saying which check failed. The token writes to that one repository, or only reads
//! it for a read-only publisher. git takes it as the password of any user name.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::recording::{credential, now, record};
use crate::{DevCa, DevIssuer, RecordedRequest};

/// The audience the Hub wants in ID tokens.
pub const HUGGING_FACE_AUDIENCE: &str = "https://huggingface.co";
/// How long the Hub's exchanged tokens live.
const TOKEN_LIFETIME: i64 = 3600;

/// A repository's trusted publisher: the `sub` it matches, and whether it only reads.
#[derive(Clone)]
struct Publisher {
    subject: String,
    read_only: bool,
}

struct Inner {
    issuer: DevIssuer,
    root: PathBuf,
    publishers: Mutex<BTreeMap<String, Publisher>>,
    /// Token -> (resource, may write, expiry).
    tokens: Mutex<BTreeMap<String, (String, bool, i64)>>,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// A running Hub stand-in.
pub struct HuggingFaceHub {
    /// `https://127.0.0.1:PORT`.
    pub base_url: String,
    /// Directory of its bare repositories.
    pub root: PathBuf,
    inner: Arc<Inner>,
}

impl HuggingFaceHub {
    /// Starts it over HTTPS with `ca`'s certificate, trusting ID tokens of `issuer`.
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        root: PathBuf,
        ca: &DevCa,
        issuer: &DevIssuer,
    ) -> Result<Self, String> {
        let inner = Arc::new(Inner {
            issuer: issuer.clone(),
            root: root.clone(),
            publishers: Mutex::default(),
            tokens: Mutex::default(),
            requests: Mutex::default(),
        });
        let base_url = crate::serve_on_loopback(runtime, ca, Router::new().fallback(handle).with_state(inner.clone()))?;
        Ok(Self { base_url, root, inner })
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> &str {
        self.base_url.trim_start_matches("https://")
    }

    /// Its token endpoint.
    pub fn token_url(&self) -> String {
        format!("{}/oauth/token", self.base_url)
    }

    /// Creates the repository `resource` (`acme/model`, `datasets/acme/data`) with a
    /// trusted publisher matching ID tokens with this `sub`.
    pub fn create_repo(&self, resource: &str, subject: &str, read_only: bool) -> Result<PathBuf, String> {
        let dir = crate::git_server::create_bare_repo(&self.root, resource)?;
        if let Ok(mut publishers) = self.inner.publishers.lock() {
            publishers.insert(resource.into(), Publisher { subject: subject.into(), read_only });
        }
        Ok(dir)
    }

    /// The repository a live token it minted is for.
    pub fn resource_of(&self, token: &str) -> Option<String> {
        let tokens = self.inner.tokens.lock().ok()?;
        tokens.get(token).filter(|(_, _, expires)| *expires > now()).map(|(resource, ..)| resource.clone())
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn oauth_error(code: &str, description: &str) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({"error": code, "error_description": description}))).into_response()
}

async fn handle(State(inner): State<Arc<Inner>>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n").into_response();
    };
    record(&inner.requests, &parts, &body, "subject_token");
    if parts.uri.path() == "/oauth/token" && parts.method == Method::POST {
        return exchange(&inner, &body);
    }
    git(&inner, parts, body).await
}

fn exchange(inner: &Inner, body: &[u8]) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return oauth_error("invalid_request", "The request body must be JSON");
    };
    let field = |name: &str| body.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
    if field("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange"
        || field("subject_token_type") != "urn:ietf:params:oauth:token-type:id_token"
    {
        return oauth_error("invalid_request", "Unsupported grant_type or subject_token_type");
    }
    let resource = field("resource");
    if resource.is_empty() || resource.split('/').count() > 3 {
        return oauth_error("invalid_request", "Invalid resource");
    }
    let denied = || oauth_error("invalid_grant", "The subject token could not be exchanged for this resource");
    let Ok(claims) = inner.issuer.verify(&field("subject_token"), HUGGING_FACE_AUDIENCE) else { return denied() };
    let publisher = inner.publishers.lock().ok().and_then(|p| p.get(&resource).cloned());
    let Some(publisher) = publisher.filter(|p| claims["sub"].as_str() == Some(p.subject.as_str())) else {
        return denied();
    };
    let token = format!("hf_jwt_{}", crate::random_hex(24));
    let Ok(mut tokens) = inner.tokens.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    tokens.insert(token.clone(), (resource, !publisher.read_only, now() + TOKEN_LIFETIME));
    axum::Json(json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": TOKEN_LIFETIME,
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
    }))
    .into_response()
}

/// git smart HTTP, as the Hub answers it: 401 without a live token for the repository,
/// 403 to push with a read-only one.
async fn git(inner: &Inner, parts: axum::http::request::Parts, body: axum::body::Bytes) -> Response {
    let Some((repo, write)) = crate::git_server::parse_request(parts.uri.path(), parts.uri.query(), &parts.method)
    else {
        return (StatusCode::NOT_FOUND, "Repository not found\n").into_response();
    };
    let resource = repo.strip_suffix(".git").unwrap_or(&repo).to_owned();
    let unauthorized = || {
        let mut response = (StatusCode::UNAUTHORIZED, "Invalid credentials in Authorization header\n").into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"Hugging Face\""));
        response
    };
    let presented = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(credential);
    let Some(("Basic", user, token)) = presented else { return unauthorized() };
    let minted = inner.tokens.lock().ok().and_then(|t| t.get(&token).cloned());
    let Some((granted, may_write, _)) = minted.filter(|(_, _, expires)| *expires > now()) else {
        return unauthorized();
    };
    if granted != resource {
        return unauthorized();
    }
    if write && !may_write {
        return (StatusCode::FORBIDDEN, "You are not authorized to push to this repo.\n").into_response();
    }
    crate::git_server::serve_repository(&inner.root, &parts, Body::from(body), &user).await
}
