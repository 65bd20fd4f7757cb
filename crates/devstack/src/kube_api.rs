//! A stand-in Kubernetes API server: HTTPS on loopback, `GET /version` for any token
//! minted by one `mayfly-sts` for this cluster (audience = its URL, scope
//! `cluster:<host:port>`), 401 for anything else, as client-go expects.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::gate::{Refusal, TokenGate};
use crate::{DevCa, StsClient};

/// A running API server.
pub struct KubeApiServer {
    /// `https://127.0.0.1:PORT`.
    pub base_url: String,
    /// Requests answered with the version.
    pub served: Arc<AtomicUsize>,
}

struct Inner {
    gate: TokenGate,
    scope: String,
    served: Arc<AtomicUsize>,
}

impl KubeApiServer {
    /// Starts the server, trusting tokens from the exchange `sts` while it says they are active.
    pub fn start(runtime: &tokio::runtime::Runtime, ca: &DevCa, sts: &StsClient) -> Result<Self, String> {
        let listener = crate::loopback_listener().map_err(|e| e.to_string())?;
        let base_url = format!("https://{}", listener.local_addr().map_err(|e| e.to_string())?);
        let served = Arc::new(AtomicUsize::new(0));
        let inner = Arc::new(Inner {
            gate: TokenGate::new(&base_url, sts, ca)?,
            scope: format!("cluster:{}", base_url.trim_start_matches("https://")),
            served: served.clone(),
        });
        crate::serve_tls(runtime, listener, ca, Router::new().fallback(handle).with_state(inner))?;
        Ok(Self { base_url, served })
    }
}

async fn handle(State(inner): State<Arc<Inner>>, headers: HeaderMap, uri: axum::http::Uri) -> Response {
    if let Err(refusal) = inner.gate.check(&headers, &inner.scope).await {
        let (code, reason) = match refusal {
            Refusal::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            Refusal::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
        };
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": reason, "reason": reason, "code": code.as_u16()});
        return (code, axum::Json(status)).into_response();
    }
    if uri.path() != "/version" {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
            ),
        )
            .into_response();
    }
    inner.served.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({
        "major": "1", "minor": "32", "gitVersion": "v1.32.0-mayfly-dev", "gitCommit": "0000000",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23",
        "compiler": "gc", "platform": "linux/amd64",
    }))
    .into_response()
}
