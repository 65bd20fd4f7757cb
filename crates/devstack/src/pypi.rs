//! PyPI on loopback HTTPS: its trusted publishing exchange and its legacy upload API, the
//! two endpoints twine and mayfly speak.
//!
//! - `GET /_/oidc/audience` -> `{"audience": "pypi"}`.
//! - `POST /_/oidc/mint-token` `{"token": ID_TOKEN}`: verified against the issuer's key,
//!   audience `pypi`, each `jti` once; a trusted publisher must match its `repository`
//!   claim. 200 `{"success": true, "token": "pypi-..."}`, valid 15 minutes, for the
//!   publisher's projects. Errors: 422 `{"message", "errors": [{"code", "description"}]}`.
//! - `POST /legacy/` (multipart, `:action=file_upload`) with Basic `__token__:TOKEN`: the
//!   token must be live and name the upload's project; 200, else 403 as PyPI answers.
//! - `POST /_/oidc/burn-token` `{"token": T}` (pypi/warehouse#20197): T is dead from then
//!   on; 202 whether or not it was live, as PyPI answers.
//! - `GET /.well-known/pytp/{key}` (PEP 807, draft): for the key of `/legacy/` (the hex
//!   SHA-256 of the path), `{"audience-endpoint", "mint-token-endpoint"}` naming the two
//!   endpoints above; any other key 404. A test may serve another document instead.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};
use sha2::Digest;

use crate::{DevCa, DevIssuer};

/// The audience this PyPI names.
pub const PYPI_AUDIENCE: &str = "pypi";

/// A running PyPI.
pub struct Pypi {
    /// `https://127.0.0.1:PORT`.
    pub base_url: String,
    /// `https://127.0.0.1:PORT/legacy/`, twine's `--repository-url`.
    pub upload_url: String,
    state: Arc<Inner>,
}

#[derive(Default)]
struct Tokens {
    /// Token -> (projects, expiry).
    live: BTreeMap<String, (Vec<String>, i64)>,
    used: BTreeSet<String>,
    /// (project, file name) uploaded.
    uploads: Vec<(String, String)>,
    /// Every token minted, in order.
    minted: Vec<String>,
    /// The `token` of every burn request, in order.
    burnt: Vec<String>,
    /// The `Accept` header of every discovery request.
    discovery_accepts: Vec<String>,
    /// A discovery document served in place of the honest one.
    discovery: Option<Value>,
}

struct Inner {
    base_url: String,
    issuer: DevIssuer,
    publishers: BTreeMap<String, Vec<String>>,
    tokens: Mutex<Tokens>,
}

impl Pypi {
    /// Starts PyPI trusting `issuer`; `publishers` maps a repository to its projects.
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        ca: &DevCa,
        issuer: &DevIssuer,
        publishers: &[(&str, &[&str])],
    ) -> Result<Self, String> {
        let listener = crate::loopback_listener().map_err(|e| e.to_string())?;
        let base_url = format!("https://{}", listener.local_addr().map_err(|e| e.to_string())?);
        let state = Arc::new(Inner {
            base_url: base_url.clone(),
            issuer: issuer.clone(),
            publishers: publishers
                .iter()
                .map(|(repo, projects)| ((*repo).to_owned(), projects.iter().map(|p| (*p).to_owned()).collect()))
                .collect(),
            tokens: Mutex::default(),
        });
        let app = Router::new()
            .route("/_/oidc/audience", get(|| async { axum::Json(json!({"audience": PYPI_AUDIENCE})) }))
            .route("/_/oidc/mint-token", post(mint))
            .route("/_/oidc/burn-token", post(burn))
            .route("/.well-known/pytp/{key}", get(discover))
            .route("/legacy/", post(upload))
            .with_state(state.clone());
        crate::serve_tls(runtime, listener, ca, app)?;
        Ok(Self { upload_url: format!("{base_url}/legacy/"), base_url, state })
    }

    /// Uploads accepted so far: (project, file name).
    pub fn uploads(&self) -> Vec<(String, String)> {
        self.state.tokens.lock().map(|t| t.uploads.clone()).unwrap_or_default()
    }

    /// Tokens minted so far.
    pub fn minted(&self) -> usize {
        self.tokens().len()
    }

    /// Every token minted so far, in order.
    pub fn tokens(&self) -> Vec<String> {
        self.state.tokens.lock().map(|t| t.minted.clone()).unwrap_or_default()
    }

    /// The `token` of every burn request so far, in order.
    pub fn burnt(&self) -> Vec<String> {
        self.state.tokens.lock().map(|t| t.burnt.clone()).unwrap_or_default()
    }

    /// True while `token` would be taken for an upload.
    pub fn is_live(&self, token: &str) -> bool {
        self.state.tokens.lock().map(|t| t.live.get(token).is_some_and(|(_, e)| *e > now())).unwrap_or_default()
    }

    /// The `Accept` header of every discovery request so far.
    pub fn discovery_accepts(&self) -> Vec<String> {
        self.state.tokens.lock().map(|t| t.discovery_accepts.clone()).unwrap_or_default()
    }

    /// Serves `document` at every discovery key from now on, as a hostile index would.
    pub fn serve_discovery(&self, document: Value) {
        if let Ok(mut tokens) = self.state.tokens.lock() {
            tokens.discovery = Some(document);
        }
    }
}

/// PEP 807's discovery key for an upload path: the hex SHA-256 of the path.
pub fn pytp_key(path: &str) -> String {
    hex::encode(sha2::Sha256::digest(path.as_bytes()))
}

async fn discover(
    State(inner): State<Arc<Inner>>,
    axum::extract::Path(key): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let Ok(mut tokens) = inner.tokens.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    tokens.discovery_accepts.push(accept.to_owned());
    if let Some(document) = &tokens.discovery {
        return axum::Json(document.clone()).into_response();
    }
    if key != pytp_key("/legacy/") {
        return StatusCode::NOT_FOUND.into_response();
    }
    let base = &inner.base_url;
    axum::Json(json!({
        "audience-endpoint": format!("{base}/_/oidc/audience"),
        "mint-token-endpoint": format!("{base}/_/oidc/mint-token"),
    }))
    .into_response()
}

async fn burn(State(inner): State<Arc<Inner>>, body: axum::body::Bytes) -> Response {
    let Some(token) = serde_json::from_slice::<Value>(&body).ok().and_then(|b| b["token"].as_str().map(str::to_owned))
    else {
        return failed("invalid-payload", "malformed request body");
    };
    let Ok(mut tokens) = inner.tokens.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    tokens.live.remove(&token);
    tokens.burnt.push(token);
    StatusCode::ACCEPTED.into_response()
}

fn failed(code: &str, description: &str) -> Response {
    let body = json!({"message": "Token request failed", "errors": [{"code": code, "description": description}]});
    (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response()
}

async fn mint(State(inner): State<Arc<Inner>>, body: axum::body::Bytes) -> Response {
    let Some(jwt) = serde_json::from_slice::<Value>(&body).ok().and_then(|b| b["token"].as_str().map(str::to_owned))
    else {
        return failed("invalid-payload", "malformed request body");
    };
    let claims = match inner.issuer.verify(&jwt, PYPI_AUDIENCE) {
        Ok(claims) => claims,
        Err(e) => return failed("invalid-token", &format!("could not verify the token: {e}")),
    };
    let Some(projects) = claims["repository"].as_str().and_then(|r| inner.publishers.get(r)) else {
        return failed("invalid-publisher", "valid token, but no corresponding publisher");
    };
    let Ok(mut tokens) = inner.tokens.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    if !tokens.used.insert(claims["jti"].as_str().unwrap_or_default().to_owned()) {
        return failed("invalid-reuse-token", "this token has already been used");
    }
    let token = format!("pypi-{}", crate::random_hex(32));
    tokens.live.insert(token.clone(), (projects.clone(), now() + 900));
    tokens.minted.push(token.clone());
    axum::Json(json!({"success": true, "token": token})).into_response()
}

fn forbidden(message: &str) -> Response {
    (StatusCode::FORBIDDEN, format!("{message}\n")).into_response()
}

async fn upload(State(inner): State<Arc<Inner>>, headers: HeaderMap, mut form: Multipart) -> Response {
    let credentials = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let Some((user, token)) = credentials.as_deref().and_then(|c| c.split_once(':')) else {
        let mut response = (StatusCode::UNAUTHORIZED, "authentication required\n").into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"pypi\""));
        return response;
    };
    let (mut name, mut file) = (None, None);
    while let Ok(Some(field)) = form.next_field().await {
        match field.name() {
            Some("name") => name = field.text().await.ok(),
            Some("content") => file = field.file_name().map(str::to_owned),
            _ => {}
        }
    }
    let Some(project) = name.map(|n| normalise(&n)) else {
        return (StatusCode::BAD_REQUEST, "no name\n").into_response();
    };
    let Ok(mut tokens) = inner.tokens.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    match tokens.live.get(token) {
        _ if user != "__token__" => forbidden("Invalid or non-existent authentication information."),
        None => forbidden("Invalid or non-existent authentication information."),
        Some((_, expires)) if *expires <= now() => forbidden("Invalid API Token: token expired"),
        Some((projects, _)) if !projects.contains(&project) => forbidden(&format!(
            "The credential associated with user '__token__' isn't allowed to upload to project '{project}'."
        )),
        Some(_) => {
            tokens.uploads.push((project, file.unwrap_or_default()));
            StatusCode::OK.into_response()
        }
    }
}

/// PEP 503 normalisation.
fn normalise(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if "-_.".contains(c) {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
