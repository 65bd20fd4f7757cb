//! Google Cloud's Security Token Service and IAM credentials API on loopback HTTPS, as
//! Google's references document them (STS `v1/token`; IAM credentials
//! `projects.serviceAccounts.generateAccessToken`) and its client libraries call them.
//!
//! - `POST /v1/token`, form-encoded RFC 8693 variant: no `Authorization` header (400
//!   `invalid_request` otherwise), `grant_type` token-exchange, `requested_token_type`
//!   access_token, `subject_token_type` jwt, `scope`, `audience` = the workload identity
//!   provider's full resource name. The ID token is verified against the issuer's key for
//!   the provider's default allowed audience (`https:` + the resource name) and must pass
//!   the provider's attribute condition (`repository` = the one configured); `options`,
//!   when sent, must be a JSON document in a string. 200 `{"access_token": "ya29.…",
//!   "issued_token_type", "token_type": "Bearer", "expires_in": 3599}`; refusals 400
//!   `{"error": "invalid_grant", "error_description"}`.
//! - `POST /v1/projects/-/serviceAccounts/{EMAIL}:generateAccessToken` with
//!   `Authorization: Bearer FEDERATED_TOKEN` and `{"scope": [...], "lifetime": "Ns"}`:
//!   200 `{"accessToken": "ya29.…", "expireTime": RFC 3339}`; 401 `UNAUTHENTICATED` for
//!   another bearer, 403 `PERMISSION_DENIED` for a service account the pool may not use.
//!
//! Every request is recorded, the `Authorization` value as `Bearer federated` when it
//! carries a token minted here and `Bearer unknown` otherwise.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::{DevCa, DevIssuer, RecordedRequest};

/// A running Google STS and IAM credentials API.
pub struct GcpSts {
    /// `https://127.0.0.1:PORT`: STS at `/v1/token`, IAM credentials at `/v1/projects/...`.
    pub base_url: String,
    state: Arc<Inner>,
}

struct Inner {
    issuer: DevIssuer,
    provider: String,
    repository: String,
    service_accounts: Vec<String>,
    federated: Mutex<BTreeSet<String>>,
    requests: Mutex<Vec<RecordedRequest>>,
}

impl GcpSts {
    /// Starts it: `provider` is the workload identity provider's resource name, whose
    /// attribute condition admits ID tokens of `repository`; the pool may impersonate
    /// `service_accounts`.
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        ca: &DevCa,
        issuer: &DevIssuer,
        provider: &str,
        repository: &str,
        service_accounts: &[&str],
    ) -> Result<Self, String> {
        let state = Arc::new(Inner {
            issuer: issuer.clone(),
            provider: provider.to_owned(),
            repository: repository.to_owned(),
            service_accounts: service_accounts.iter().map(|s| (*s).to_owned()).collect(),
            federated: Mutex::default(),
            requests: Mutex::default(),
        });
        let listener = crate::loopback_listener().map_err(|e| e.to_string())?;
        let base_url = format!("https://{}", listener.local_addr().map_err(|e| e.to_string())?);
        let app = Router::new()
            .route("/v1/token", post(token))
            .route("/v1/projects/-/serviceAccounts/{call}", post(generate))
            .with_state(state.clone());
        crate::serve_tls(runtime, listener, ca, app)?;
        Ok(Self { base_url, state })
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Inner {
    fn record(&self, path: &str, headers: &HeaderMap, body: &[u8], id_token_audience: Option<Value>) {
        let federated = self.federated.lock().map(|f| f.clone()).unwrap_or_default();
        let headers = headers
            .iter()
            .map(|(k, v)| {
                let value = v.to_str().unwrap_or_default();
                let value = if *k == header::AUTHORIZATION {
                    match value.strip_prefix("Bearer ") {
                        Some(t) if federated.contains(t) => "Bearer federated".to_owned(),
                        _ => "Bearer unknown".to_owned(),
                    }
                } else {
                    value.to_owned()
                };
                (k.as_str().to_owned(), value)
            })
            .collect();
        let request = RecordedRequest {
            method: "POST".into(),
            path: path.into(),
            query: None,
            headers,
            body: body.to_vec(),
            id_token_audience,
            app_jwt_claims: None,
        };
        if let Ok(mut requests) = self.requests.lock() {
            requests.push(request);
        }
    }
}

fn oauth_error(code: &str, description: &str) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({"error": code, "error_description": description}))).into_response()
}

async fn token(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let audience = field("subject_token").and_then(crate::github::stated_claims).map(|c| c["aud"].clone());
    inner.record("/v1/token", &headers, &body, audience);
    if headers.contains_key(header::AUTHORIZATION) {
        return oauth_error("invalid_request", "Authorization header is not supported on this endpoint");
    }
    let expected = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
        ("requested_token_type", "urn:ietf:params:oauth:token-type:access_token"),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
    ];
    for (name, value) in expected {
        if field(name) != Some(value) {
            return oauth_error("invalid_request", &format!("Invalid value for \"{name}\""));
        }
    }
    if field("scope").is_none_or(str::is_empty) {
        return oauth_error("invalid_request", "Scope(s) must be provided.");
    }
    if field("options").is_some_and(|o| serde_json::from_str::<Value>(o).map(|v| !v.is_object()).unwrap_or(true)) {
        return oauth_error("invalid_request", "Invalid value for \"options\": not a JSON object in a string");
    }
    if field("audience") != Some(inner.provider.as_str()) {
        return oauth_error(
            "invalid_target",
            "The target service indicated by the \"audience\" parameters is invalid.",
        );
    }
    let claims =
        match inner.issuer.verify(field("subject_token").unwrap_or_default(), &format!("https:{}", inner.provider)) {
            Ok(claims) => claims,
            Err(e) => return oauth_error("invalid_grant", &format!("The ID Token could not be verified: {e}")),
        };
    if claims["repository"].as_str() != Some(inner.repository.as_str()) {
        return oauth_error("invalid_grant", "The given credential is rejected by the attribute condition.");
    }
    let token = format!("ya29.federated-{}", crate::random_hex(24));
    if let Ok(mut federated) = inner.federated.lock() {
        federated.insert(token.clone());
    }
    axum::Json(json!({
        "access_token": token,
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "token_type": "Bearer",
        "expires_in": 3599,
    }))
    .into_response()
}

fn google_error(status: StatusCode, message: &str, code: &str) -> Response {
    let body = json!({"error": {"code": status.as_u16(), "message": message, "status": code}});
    (status, axum::Json(body)).into_response()
}

async fn generate(
    State(inner): State<Arc<Inner>>,
    Path(call): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    inner.record(&format!("/v1/projects/-/serviceAccounts/{call}"), &headers, &body, None);
    let Some(account) = call.strip_suffix(":generateAccessToken") else {
        return google_error(StatusCode::NOT_FOUND, "Method not found.", "NOT_FOUND");
    };
    let bearer =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let known = inner.federated.lock().map(|f| bearer.is_some_and(|b| f.contains(b))).unwrap_or(false);
    if !known {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials.",
            "UNAUTHENTICATED",
        );
    }
    if !inner.service_accounts.iter().any(|a| a == account) {
        return google_error(
            StatusCode::FORBIDDEN,
            "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).",
            "PERMISSION_DENIED",
        );
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let lifetime = request["lifetime"].as_str().and_then(|l| l.strip_suffix('s')).and_then(|l| l.parse::<i64>().ok());
    let (Some(lifetime), Some(_)) = (lifetime.filter(|l| (1..=3600).contains(l)), request["scope"].as_array()) else {
        return google_error(StatusCode::BAD_REQUEST, "Request contains an invalid argument.", "INVALID_ARGUMENT");
    };
    let expires = time::OffsetDateTime::now_utc() + time::Duration::seconds(lifetime);
    let expire_time = expires.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    axum::Json(json!({"accessToken": format!("ya29.sa-{}", crate::random_hex(24)), "expireTime": expire_time}))
        .into_response()
}
