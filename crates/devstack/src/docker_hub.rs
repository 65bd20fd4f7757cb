//! Docker's identity service on loopback HTTPS, as its OIDC connections answer: the ID
//! token for an organisation's short-lived access token.
//!
//! docker/oidc-action `src/main.ts` and Docker's "OIDC connections" documentation:
//! `POST /oauth/token`, form-encoded, with `grant_type` the RFC 8693 token exchange,
//! `subject_token_type` `urn:ietf:params:oauth:token-type:id_token`, `subject_token` an ID
//! token whose `aud` is `https://identity.docker.com`, `connection_id` the connection's
//! UUID and `expires_in` between 300 and 3600. The ID token is verified for real against
//! the development issuer; the connection must exist and its `sub` rule match. 200
//! `{"access_token", "token_type", "expires_in"}`; errors `{"message"}` (400 for the
//! request, 401 for the ID token, 403 for a rule that does not match).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::recording::{body_field, now, record};
use crate::{DevCa, DevIssuer, RecordedRequest};

/// The audience Docker wants in ID tokens.
pub const DOCKER_HUB_AUDIENCE: &str = "https://identity.docker.com";

/// A connection: its organisation and the `sub` its ruleset accepts.
#[derive(Clone)]
struct Connection {
    organisation: String,
    subject: String,
}

struct Inner {
    issuer: DevIssuer,
    connections: Mutex<BTreeMap<String, Connection>>,
    /// Token -> (organisation, expiry).
    tokens: Mutex<BTreeMap<String, (String, i64)>>,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// A running stand-in of Docker's identity service.
pub struct DockerHub {
    /// `https://127.0.0.1:PORT`.
    pub base_url: String,
    inner: Arc<Inner>,
}

impl DockerHub {
    /// Starts it over HTTPS with `ca`'s certificate, trusting ID tokens of `issuer`.
    pub fn start(runtime: &tokio::runtime::Runtime, ca: &DevCa, issuer: &DevIssuer) -> Result<Self, String> {
        let inner = Arc::new(Inner {
            issuer: issuer.clone(),
            connections: Mutex::default(),
            tokens: Mutex::default(),
            requests: Mutex::default(),
        });
        let listener = crate::loopback_listener().map_err(|e| e.to_string())?;
        let base_url = format!("https://{}", listener.local_addr().map_err(|e| e.to_string())?);
        let app = Router::new().fallback(handle).with_state(inner.clone());
        crate::serve_tls(runtime, listener, ca, app)?;
        Ok(Self { base_url, inner })
    }

    /// Its token endpoint.
    pub fn token_url(&self) -> String {
        format!("{}/oauth/token", self.base_url)
    }

    /// Creates a connection of `organisation` whose ruleset accepts ID tokens with this
    /// `sub`.
    pub fn connect(&self, connection_id: &str, organisation: &str, subject: &str) {
        if let Ok(mut connections) = self.inner.connections.lock() {
            let connection = Connection { organisation: organisation.into(), subject: subject.into() };
            connections.insert(connection_id.into(), connection);
        }
    }

    /// The organisation a live token it minted signs in as.
    pub fn organisation_of(&self, token: &str) -> Option<String> {
        let tokens = self.inner.tokens.lock().ok()?;
        tokens.get(token).filter(|(_, expires)| *expires > now()).map(|(organisation, _)| organisation.clone())
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"message": message}))).into_response()
}

async fn handle(State(inner): State<Arc<Inner>>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 1 << 20).await else {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
    };
    record(&inner.requests, &parts, &body, "subject_token");
    if parts.uri.path() != "/oauth/token" || parts.method != axum::http::Method::POST {
        return error(StatusCode::NOT_FOUND, "not found");
    }
    let field = |name: &str| body_field(&body, name).unwrap_or_default();
    if field("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange" {
        return error(StatusCode::BAD_REQUEST, "unsupported grant_type");
    }
    if field("subject_token_type") != "urn:ietf:params:oauth:token-type:id_token" {
        return error(StatusCode::BAD_REQUEST, "unsupported subject_token_type");
    }
    let Some(lifetime) = field("expires_in").parse::<i64>().ok().filter(|s| (300..=3600).contains(s)) else {
        return error(StatusCode::BAD_REQUEST, "expires_in must be between 300 and 3600");
    };
    let connection = inner.connections.lock().ok().and_then(|c| c.get(&field("connection_id")).cloned());
    let Some(connection) = connection else { return error(StatusCode::BAD_REQUEST, "connection not found") };
    let claims = match inner.issuer.verify(&field("subject_token"), DOCKER_HUB_AUDIENCE) {
        Ok(claims) => claims,
        Err(_) => return error(StatusCode::UNAUTHORIZED, "invalid subject token"),
    };
    if claims["sub"].as_str() != Some(connection.subject.as_str()) {
        return error(StatusCode::FORBIDDEN, "subject token does not match any ruleset of the connection");
    }
    let token = format!("dckr_oidc_{}", crate::random_hex(20));
    let Ok(mut tokens) = inner.tokens.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    tokens.insert(token.clone(), (connection.organisation, now() + lifetime));
    axum::Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": lifetime})).into_response()
}
