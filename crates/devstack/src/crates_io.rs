//! crates.io's trusted publishing exchange, on loopback HTTPS, speaking its wire format:
//!
//! - `POST /api/v1/trusted_publishing/tokens` `{"jwt": ID_TOKEN}`: the ID token is verified
//!   against the issuer's key, audience `crates.io`, once per `jti`; a trusted-publisher
//!   config must match its `repository` claim. 200 `{"token": T}`, T valid 30 minutes for
//!   every crate of the matching configs. Errors: 400 `{"errors":[{"detail": ...}]}`.
//! - `DELETE /api/v1/trusted_publishing/tokens` with `Authorization: Bearer T`: 204, also
//!   when T is unknown; no or another kind of `Authorization`: 401.
//!
//! [`TrustedTokens`] lets a registry check the tokens it hands out.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::gate::Refusal;
use crate::{DevCa, DevIssuer};

/// The audience crates.io asks ID tokens to carry.
pub const CRATES_IO_AUDIENCE: &str = "crates.io";

/// A running exchange.
pub struct CratesIoExchange {
    /// `https://127.0.0.1:PORT/api/v1/trusted_publishing/tokens`.
    pub tokens_url: String,
    /// The tokens it issued, for a registry to check.
    pub tokens: TrustedTokens,
}

/// The exchange's token table, shared with the registry that accepts the tokens.
#[derive(Clone, Default)]
pub struct TrustedTokens {
    inner: Arc<Mutex<Tokens>>,
}

#[derive(Default)]
struct Tokens {
    /// Token -> (crates it may publish, expiry).
    live: BTreeMap<String, (Vec<String>, i64)>,
    /// Every token ever issued, in order (tests try them after revocation).
    issued: Vec<String>,
    /// `jti`s already exchanged.
    used: BTreeSet<String>,
    /// DELETE requests answered 204.
    revocations: usize,
}

impl TrustedTokens {
    /// Whether `token` may publish `krate` now; the refusal says why not.
    pub(crate) fn check(&self, token: &str, krate: &str) -> Result<(), Refusal> {
        let tokens = self.inner.lock().map_err(|_| Refusal::Unauthorized("token table poisoned".into()))?;
        match tokens.live.get(token) {
            None => Err(Refusal::Unauthorized("unknown or revoked token".into())),
            Some((_, expires)) if *expires <= now() => Err(Refusal::Unauthorized("token expired".into())),
            Some((crates, _)) if !crates.iter().any(|c| c == krate) => {
                Err(Refusal::Forbidden(format!("this token may not publish `{krate}`")))
            }
            Some(_) => Ok(()),
        }
    }

    /// Every token issued so far.
    pub fn issued(&self) -> Vec<String> {
        self.inner.lock().map(|t| t.issued.clone()).unwrap_or_default()
    }

    /// Tokens not revoked.
    pub fn live(&self) -> usize {
        self.inner.lock().map(|t| t.live.len()).unwrap_or_default()
    }

    /// How many revocations were answered.
    pub fn revocations(&self) -> usize {
        self.inner.lock().map(|t| t.revocations).unwrap_or_default()
    }
}

struct Inner {
    issuer: DevIssuer,
    /// Trusted-publisher configs: repository -> crates.
    configs: BTreeMap<String, Vec<String>>,
    tokens: TrustedTokens,
}

impl CratesIoExchange {
    /// Starts the exchange, trusting ID tokens of `issuer`; `configs` maps a repository
    /// (the `repository` claim) to the crates it may publish.
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        ca: &DevCa,
        issuer: &DevIssuer,
        configs: &[(&str, &[&str])],
    ) -> Result<Self, String> {
        let tokens = TrustedTokens::default();
        let inner = Arc::new(Inner {
            issuer: issuer.clone(),
            configs: configs
                .iter()
                .map(|(repo, crates)| ((*repo).to_owned(), crates.iter().map(|c| (*c).to_owned()).collect()))
                .collect(),
            tokens: tokens.clone(),
        });
        let listener = crate::loopback_listener().map_err(|e| e.to_string())?;
        let base_url = format!("https://{}", listener.local_addr().map_err(|e| e.to_string())?);
        let app =
            Router::new().route("/api/v1/trusted_publishing/tokens", post(exchange).delete(revoke)).with_state(inner);
        crate::serve_tls(runtime, listener, ca, app)?;
        Ok(Self { tokens_url: format!("{base_url}/api/v1/trusted_publishing/tokens"), tokens })
    }
}

fn bad_request(detail: &str) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({"errors": [{"detail": detail}]}))).into_response()
}

async fn exchange(axum::extract::State(inner): axum::extract::State<Arc<Inner>>, body: axum::body::Bytes) -> Response {
    let Some(jwt) = serde_json::from_slice::<Value>(&body).ok().and_then(|b| b["jwt"].as_str().map(str::to_owned))
    else {
        return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(json!({"errors": [{"detail": "invalid JSON body"}]})))
            .into_response();
    };
    let claims = match inner.issuer.verify(&jwt, CRATES_IO_AUDIENCE) {
        Ok(claims) => claims,
        Err(e) => return bad_request(&format!("Failed to decode JWT: {e}")),
    };
    let Some(crates) = claims["repository"].as_str().and_then(|r| inner.configs.get(r)) else {
        return bad_request("No matching Trusted Publishing config found");
    };
    let Ok(mut tokens) = inner.tokens.inner.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let jti = claims["jti"].as_str().unwrap_or_default().to_owned();
    if !tokens.used.insert(jti) {
        return bad_request("JWT has already been used");
    }
    let token = format!("cio_tp_{}", crate::random_hex(24));
    tokens.live.insert(token.clone(), (crates.clone(), now() + 30 * 60));
    tokens.issued.push(token.clone());
    axum::Json(json!({"token": token})).into_response()
}

async fn revoke(axum::extract::State(inner): axum::extract::State<Arc<Inner>>, headers: HeaderMap) -> Response {
    let bearer =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = bearer.map(str::trim).filter(|t| !t.is_empty()) else {
        let detail = "Missing authorization header";
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"errors": [{"detail": detail}]}))).into_response();
    };
    if let Ok(mut tokens) = inner.tokens.inner.lock() {
        tokens.live.remove(token);
        tokens.revocations += 1;
    }
    StatusCode::NO_CONTENT.into_response()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
