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
//!
//! It also stands in for Docker Hub's registry token service (`auth.docker.io`, the
//! distribution token protocol): `GET /token?service=S&scope=repository:NAME:ACTIONS` with
//! Basic `ORGANISATION:ACCESS_TOKEN` answers `{"token", "access_token", "expires_in",
//! "issued_at"}`, a registry JWT signed with a key whose certificate is in `x5c`, granting
//! the actions asked for on the organisation's own repositories (`ORGANISATION/...`); a
//! user name that is not the token's organisation gets 401.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::recording::{body_field, credential, now, record};
use crate::{DevCa, DevIssuer, RecordedRequest};

/// The audience Docker wants in ID tokens.
pub const DOCKER_HUB_AUDIENCE: &str = "https://identity.docker.com";
/// The `iss` of the registry tokens it signs.
pub const DOCKER_HUB_REGISTRY_ISSUER: &str = "auth.docker.io";
/// How long a registry token lives.
const REGISTRY_TOKEN_LIFETIME: i64 = 300;

/// A connection: its organisation and the `sub` its ruleset accepts.
#[derive(Clone)]
struct Connection {
    organisation: String,
    subject: String,
}

struct Inner {
    issuer: DevIssuer,
    /// Signs registry tokens, with its certificate in `x5c`.
    signer: mayfly_sts::SigningKey,
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
        let signer = mayfly_sts::SigningKey::generate(mayfly_sts::Algorithm::Es256)?
            .with_certificate("Docker Hub stand-in registry tokens")?;
        let inner = Arc::new(Inner {
            issuer: issuer.clone(),
            signer,
            connections: Mutex::default(),
            tokens: Mutex::default(),
            requests: Mutex::default(),
        });
        let base_url = crate::serve_on_loopback(runtime, ca, Router::new().fallback(handle).with_state(inner.clone()))?;
        Ok(Self { base_url, inner })
    }

    /// Its token endpoint.
    pub fn token_url(&self) -> String {
        format!("{}/oauth/token", self.base_url)
    }

    /// Its registry token service: a registry's `auth.token.realm`.
    pub fn registry_token_url(&self) -> String {
        format!("{}/token", self.base_url)
    }

    /// The certificate of its registry tokens' key, PEM: a registry's `rootcertbundle`.
    pub fn registry_certificate_pem(&self) -> String {
        self.inner.signer.certificate_pem().unwrap_or_default().to_owned()
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
    if parts.uri.path() == "/token" && parts.method == axum::http::Method::GET {
        return registry_token(&inner, &parts);
    }
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

/// The distribution token protocol: a registry JWT for the organisation's repositories.
fn registry_token(inner: &Inner, parts: &axum::http::request::Parts) -> Response {
    let unauthorized = || {
        let mut response = error(StatusCode::UNAUTHORIZED, "incorrect username or password");
        let challenge = axum::http::HeaderValue::from_static("Basic realm=\"Docker Hub\"");
        response.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, challenge);
        response
    };
    let presented = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let Some(("Basic", user, token)) = presented.and_then(credential) else { return unauthorized() };
    let organisation = inner
        .tokens
        .lock()
        .ok()
        .and_then(|t| t.get(&token).filter(|(_, expires)| *expires > now()).map(|(o, _)| o.clone()));
    let Some(organisation) = organisation.filter(|o| *o == user) else { return unauthorized() };
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes()).into_owned().collect();
    let service = pairs.iter().find(|(k, _)| k == "service").map(|(_, v)| v.clone()).unwrap_or_default();
    let access: Vec<serde_json::Value> = pairs
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|scope| {
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            let own = name.split_once('/').is_some_and(|(namespace, _)| namespace == organisation);
            (kind == "repository" && own)
                .then(|| json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let issued = now();
    let claims = json!({
        "iss": DOCKER_HUB_REGISTRY_ISSUER, "sub": organisation, "aud": service, "iat": issued, "nbf": issued - 5,
        "exp": issued + REGISTRY_TOKEN_LIFETIME, "jti": crate::random_hex(8), "access": access,
    });
    let Ok(jwt) = inner.signer.sign(Some("JWT"), &claims) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let issued_at = time::OffsetDateTime::from_unix_timestamp(issued)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default();
    axum::Json(
        json!({"token": jwt, "access_token": jwt, "expires_in": REGISTRY_TOKEN_LIFETIME, "issued_at": issued_at}),
    )
    .into_response()
}
