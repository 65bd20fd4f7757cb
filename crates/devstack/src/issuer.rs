//! A development OIDC issuer that speaks GitHub Actions' ID token protocol.
//!
//! `GET {base}/actions/idtoken?api-version=2.0&audience=X` with
//! `Authorization: Bearer <request token>` answers `{"count":1,"value":"<jwt>"}`, the way
//! `ACTIONS_ID_TOKEN_REQUEST_URL` does in a job with `id-token: write`. Discovery and JWKS
//! are served like any OIDC issuer's, so `mayfly-sts` verifies its tokens for real.
//!
//! It also stands in for Azure Pipelines' job OIDC endpoint: `POST
//! {base}{AZURE_OIDC_PATH}?api-version=7.1&serviceConnectionId=ID` with the same request
//! token as Bearer answers `{"oidcToken": "<jwt>"}` for Azure's fixed audience, and
//! records each request it gets.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use mayfly_sts::{Algorithm, SigningKey};
use serde_json::{Map, Value, json};

/// The path of the Azure Pipelines stand-in's OIDC endpoint (`SYSTEM_OIDCREQUESTURI`'s).
pub const AZURE_OIDC_PATH: &str = "/org/project/_apis/distributedtask/hubs/build/plans/plan-1/jobs/job-1/oidctoken";

/// The audience of every Azure Pipelines ID token.
pub const AZURE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// A request the Azure Pipelines stand-in received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AzureRequest {
    /// `POST`, as the endpoint wants.
    pub method: String,
    /// The path.
    pub path: String,
    /// The query, as sent.
    pub query: String,
    /// The `Authorization` header.
    pub authorization: Option<String>,
}

/// A running development issuer.
#[derive(Clone)]
pub struct DevIssuer {
    inner: Arc<Inner>,
}

struct Inner {
    base_url: String,
    key: SigningKey,
    request_token: String,
    claims: Map<String, Value>,
    lifetime: i64,
    issued: AtomicUsize,
    azure_requests: Mutex<Vec<AzureRequest>>,
}

impl DevIssuer {
    /// Starts the issuer on a loopback listener with the workload claims it vouches for.
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        algorithm: Algorithm,
        claims: Value,
        lifetime_secs: i64,
    ) -> Result<Self, String> {
        let listener = crate::loopback_listener().map_err(|e| e.to_string())?;
        let base_url = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
        let mut request_token = [0u8; 16];
        getrandom::fill(&mut request_token).map_err(|e| e.to_string())?;
        let inner = Arc::new(Inner {
            base_url,
            key: SigningKey::generate(algorithm)?,
            request_token: hex::encode(request_token),
            claims: claims.as_object().cloned().unwrap_or_default(),
            lifetime: lifetime_secs,
            issued: AtomicUsize::new(0),
            azure_requests: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/.well-known/jwks.json", get(jwks))
            .route("/actions/idtoken", get(id_token))
            .route(AZURE_OIDC_PATH, any(azure_oidc_token))
            .with_state(inner.clone());
        let _guard = runtime.enter();
        let server = axum_server::from_tcp(listener).map_err(|e| e.to_string())?;
        runtime.spawn(server.serve(app.into_make_service()));
        Ok(Self { inner })
    }

    /// This issuer as an exchange's `[[trusted_issuers]]` entry, for these audiences.
    pub fn trusted(&self, audiences: &[&str]) -> mayfly_sts::TrustedIssuer {
        mayfly_sts::TrustedIssuer {
            issuer: self.issuer().to_owned(),
            audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
            ..Default::default()
        }
    }

    /// The issuer URL (`iss`).
    pub fn issuer(&self) -> &str {
        &self.inner.base_url
    }

    /// What to put in `ACTIONS_ID_TOKEN_REQUEST_URL` (it carries a query, as GitHub's does).
    pub fn request_url(&self) -> String {
        format!("{}/actions/idtoken?api-version=2.0", self.inner.base_url)
    }

    /// What to put in `SYSTEM_OIDCREQUESTURI` for the Azure Pipelines stand-in (its
    /// `SYSTEM_ACCESSTOKEN` is [`DevIssuer::request_token`]).
    pub fn azure_request_uri(&self) -> String {
        format!("{}{AZURE_OIDC_PATH}", self.inner.base_url)
    }

    /// The requests the Azure Pipelines stand-in received, in order.
    pub fn azure_requests(&self) -> Vec<AzureRequest> {
        self.inner.azure_requests.lock().expect("not poisoned").clone()
    }

    /// What to put in `ACTIONS_ID_TOKEN_REQUEST_TOKEN`.
    pub fn request_token(&self) -> &str {
        &self.inner.request_token
    }

    /// The public JWK its tokens verify with.
    pub fn jwk(&self) -> &Value {
        self.inner.key.jwk()
    }

    /// How many ID tokens the endpoint has handed out.
    pub fn issued(&self) -> usize {
        self.inner.issued.load(Ordering::SeqCst)
    }

    /// Signs a token with this issuer's key: the workload claims, `iss`, `aud`, times, and
    /// `overrides` on top (tests use them to make expired or wrong-audience tokens).
    pub fn mint(&self, audience: &str, overrides: &Value) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut claims = self.inner.claims.clone();
        for (k, v) in [
            ("iss", json!(self.inner.base_url)),
            ("aud", json!(audience)),
            ("iat", json!(now)),
            ("nbf", json!(now - 5)),
            ("exp", json!(now + self.inner.lifetime)),
            ("jti", json!(format!("dev-{}", crate::random_hex(8)))),
        ] {
            claims.entry(k).or_insert(v);
        }
        if let Some(extra) = overrides.as_object() {
            for (k, v) in extra {
                claims.insert(k.clone(), v.clone());
            }
        }
        self.inner.key.sign(Some("JWT"), &claims).expect("signing with a fresh key works")
    }

    /// Verifies an ID token of this issuer for `audience`, as a registry's own trusted
    /// publishing exchange does: signature, `iss`, `aud`, `exp`, and a `jti` present.
    pub fn verify(&self, token: &str, audience: &str) -> Result<Value, String> {
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(self.jwk().clone()).map_err(|e| e.to_string())?;
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| "Failed to decode JWT".to_owned())?;
        // The key's own algorithm: a token naming another is refused by the key check.
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[self.issuer()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "jti"]);
        jsonwebtoken::decode::<Value>(token, &key, &validation).map(|d| d.claims).map_err(|e| e.to_string())
    }
}

async fn discovery(State(inner): State<Arc<Inner>>) -> Response {
    let base = &inner.base_url;
    axum::Json(json!({
        "issuer": base,
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "subject_types_supported": ["public"],
        "response_types_supported": ["id_token"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        "claims_supported": ["sub", "aud", "exp", "iat", "iss", "jti", "nbf", "ref", "repository"],
    }))
    .into_response()
}

async fn jwks(State(inner): State<Arc<Inner>>) -> Response {
    axum::Json(json!({"keys": [inner.key.jwk()]})).into_response()
}

#[derive(serde::Deserialize)]
struct IdTokenQuery {
    audience: Option<String>,
}

async fn id_token(State(inner): State<Arc<Inner>>, headers: HeaderMap, Query(query): Query<IdTokenQuery>) -> Response {
    let expected = format!("Bearer {}", inner.request_token);
    if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"message": "Bad credentials"}))).into_response();
    }
    let issuer = DevIssuer { inner: inner.clone() };
    let audience = query.audience.unwrap_or_else(|| "https://github.com/mayfly-dev".into());
    let token = issuer.mint(&audience, &Value::Null);
    inner.issued.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({"count": 1, "value": token})).into_response()
}

async fn azure_oidc_token(State(inner): State<Arc<Inner>>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let request = AzureRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        authorization: authorization.clone(),
    };
    inner.azure_requests.lock().expect("not poisoned").push(request);
    if method != Method::POST {
        return (StatusCode::METHOD_NOT_ALLOWED, "The requested resource does not support this http method.")
            .into_response();
    }
    if authorization != Some(format!("Bearer {}", inner.request_token)) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let issuer = DevIssuer { inner: inner.clone() };
    let token = issuer.mint(AZURE_AUDIENCE, &json!({"sub": "sc://org/project/connection"}));
    inner.issued.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({"oidcToken": token})).into_response()
}
