//! Microsoft Entra ID's token endpoint and Azure Container Registry's token exchange on
//! loopback HTTPS, as the Microsoft identity platform documents the client credentials
//! flow with a federated assertion and as the Azure SDKs' `ACRExchangeClient` calls ACR.
//!
//! - `POST /{tenant}/oauth2/v2.0/token`, form: `client_id` (the configured one),
//!   `grant_type=client_credentials`, `client_assertion_type` jwt-bearer, `scope` ending
//!   `/.default`, `client_assertion` = an ID token of the issuer with audience
//!   `api://AzureADTokenExchange` whose subject the federated credential names. 200
//!   `{"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
//!   "access_token"}`; refusals 400 `{"error", "error_description": "AADSTS…\r\nTrace ID:
//!   …", "error_codes"}`, e.g. AADSTS70021 when no federated credential matches.
//! - `POST /oauth2/exchange`, form `grant_type=access_token`, `service` = this host,
//!   `tenant`, `access_token` = a token minted above: 200 `{"refresh_token"}`; else 401
//!   `{"errors": [{"code": "UNAUTHORIZED", "message"}]}`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::{DevCa, DevIssuer, RecordedRequest};

/// The audience Entra ID expects of a federated assertion.
pub const AZURE_TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// A running Entra ID token endpoint and ACR exchange.
pub struct AzureStandIn {
    /// `https://127.0.0.1:PORT`: the authority, and the registry.
    pub base_url: String,
    state: Arc<Inner>,
}

struct Inner {
    issuer: DevIssuer,
    host: String,
    tenant: String,
    client_id: String,
    subject: String,
    entra: Mutex<BTreeSet<String>>,
    requests: Mutex<Vec<RecordedRequest>>,
}

impl AzureStandIn {
    /// Starts it for `tenant` and `client_id`, whose federated credential admits ID tokens
    /// with this `subject`.
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        ca: &DevCa,
        issuer: &DevIssuer,
        tenant: &str,
        client_id: &str,
        subject: &str,
    ) -> Result<Self, String> {
        let listener = crate::loopback_listener().map_err(|e| e.to_string())?;
        let host = listener.local_addr().map_err(|e| e.to_string())?.to_string();
        let state = Arc::new(Inner {
            issuer: issuer.clone(),
            host: host.clone(),
            tenant: tenant.to_owned(),
            client_id: client_id.to_owned(),
            subject: subject.to_owned(),
            entra: Mutex::default(),
            requests: Mutex::default(),
        });
        let app = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .route("/oauth2/exchange", post(exchange))
            .with_state(state.clone());
        crate::serve_tls(runtime, listener, ca, app)?;
        Ok(Self { base_url: format!("https://{host}"), state })
    }

    /// `127.0.0.1:PORT`, the registry's host.
    pub fn host(&self) -> &str {
        &self.state.host
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// True for a token the Entra ID endpoint minted.
    pub fn minted_by_entra(&self, token: &str) -> bool {
        self.state.entra.lock().is_ok_and(|e| e.contains(token))
    }
}

impl Inner {
    fn record(&self, path: &str, headers: &HeaderMap, body: &[u8], id_token_audience: Option<Value>) {
        let request = RecordedRequest {
            method: "POST".into(),
            path: path.into(),
            query: None,
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
                .collect(),
            body: body.to_vec(),
            id_token_audience,
            app_jwt_claims: None,
        };
        if let Ok(mut requests) = self.requests.lock() {
            requests.push(request);
        }
    }
}

fn aadsts(error: &str, code: u32, message: &str) -> Response {
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {message}\r\nTrace ID: {}\r\nCorrelation ID: {}", crate::random_hex(8), crate::random_hex(8)),
        "error_codes": [code],
    });
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

async fn token(
    State(inner): State<Arc<Inner>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let audience = field("client_assertion").and_then(crate::github::stated_claims).map(|c| c["aud"].clone());
    inner.record(&format!("/{tenant}/oauth2/v2.0/token"), &headers, &body, audience);
    if tenant != inner.tenant {
        return aadsts("invalid_tenant", 90002, &format!("Tenant '{tenant}' not found."));
    }
    if field("grant_type") != Some("client_credentials") {
        return aadsts("unsupported_grant_type", 70003, "The app requested an unsupported grant type.");
    }
    if field("client_assertion_type") != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer") {
        return aadsts("invalid_request", 900_023, "Specified client_assertion_type is not supported.");
    }
    if field("client_id") != Some(inner.client_id.as_str()) {
        return aadsts("unauthorized_client", 700_016, "Application was not found in the directory.");
    }
    if !field("scope").is_some_and(|s| s.ends_with("/.default")) {
        return aadsts("invalid_scope", 1_002_012, "The provided value for scope is not valid.");
    }
    let claims = match inner.issuer.verify(field("client_assertion").unwrap_or_default(), AZURE_TOKEN_EXCHANGE_AUDIENCE)
    {
        Ok(claims) => claims,
        Err(e) => {
            return aadsts("invalid_client", 700_211, &format!("The client assertion could not be verified: {e}"));
        }
    };
    if claims["sub"].as_str() != Some(inner.subject.as_str()) {
        return aadsts(
            "invalid_client",
            70021,
            &format!(
                "No matching federated identity record found for presented assertion. Assertion Subject: '{}'.",
                claims["sub"].as_str().unwrap_or_default()
            ),
        );
    }
    let token = format!("entra-{}", crate::random_hex(24));
    if let Ok(mut entra) = inner.entra.lock() {
        entra.insert(token.clone());
    }
    axum::Json(json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}))
        .into_response()
}

async fn exchange(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    inner.record("/oauth2/exchange", &headers, &body, None);
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let known = inner.entra.lock().is_ok_and(|e| field("access_token").is_some_and(|t| e.contains(t)));
    let ok = field("grant_type") == Some("access_token") && field("service") == Some(inner.host.as_str()) && known;
    if !ok {
        let body = json!({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required, visit https://aka.ms/acr/authorization for more information."}]});
        return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    }
    axum::Json(json!({"refresh_token": format!("acr-refresh-{}", crate::random_hex(24))})).into_response()
}
