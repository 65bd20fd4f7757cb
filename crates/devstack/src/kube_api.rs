//! A stand-in Kubernetes API server: HTTPS on loopback, `GET /version` for any token
//! minted by one `mayfly-sts` for this cluster (audience = its URL, scope
//! `cluster:<host:port>`), 401 for anything else, as client-go expects. `PUT` records its
//! body's length and SHA-256 by path. A test can refuse tokens by fingerprint (as if revoked) and hold those
//! refusals until several arrive; each request is recorded with the token it carried.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mayfly_core::Fingerprint;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::gate::{Refusal, TokenGate};
use crate::{DevCa, StsClient};

/// The most of a `PUT` body the server reads.
const MAX_BODY: usize = 64 << 20;
/// The longest a held refusal waits for the others.
const MAX_HOLD: Duration = Duration::from_secs(10);

/// A running API server.
pub struct KubeApiServer {
    /// `https://127.0.0.1:PORT`.
    pub base_url: String,
    /// Requests answered with the version.
    pub served: Arc<AtomicUsize>,
    shared: Arc<Shared>,
}

/// One request as a stand-in saw it (this server, or the OCI front).
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// The fingerprint of the token it carried (here bearer, at the OCI realm Basic), if any.
    pub fingerprint: Option<String>,
    /// True when that token was refused as the test asked.
    pub refused: bool,
}

/// A body a `PUT` stored, as its length and digest: enough to check it arrived byte for
/// byte without keeping it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Bytes.
    pub length: usize,
    /// Lowercase hex SHA-256.
    pub sha256: String,
}

impl Stored {
    /// The length and digest of `body`.
    pub fn of(body: &[u8]) -> Self {
        Self { length: body.len(), sha256: hex::encode(Sha256::digest(body)) }
    }
}

#[derive(Default)]
struct Shared {
    refused: Mutex<Vec<String>>,
    hold: Mutex<Hold>,
    /// Wakes held refusals once the last one the test waits for has arrived.
    arrived: Notify,
    seen: Mutex<Vec<Seen>>,
    stored: Mutex<HashMap<String, Vec<Stored>>>,
}

/// Refusals are held until `wanted` have arrived, or [`MAX_HOLD`] passed.
#[derive(Default)]
struct Hold {
    wanted: usize,
    arrived: usize,
    timed_out: bool,
}

struct Inner {
    gate: TokenGate,
    scope: String,
    served: Arc<AtomicUsize>,
    shared: Arc<Shared>,
}

impl KubeApiServer {
    /// Starts the server, trusting tokens from the exchange `sts` while it says they are active.
    pub fn start(runtime: &tokio::runtime::Runtime, ca: &DevCa, sts: &StsClient) -> Result<Self, String> {
        let listener = crate::loopback_listener().map_err(|e| e.to_string())?;
        let base_url = format!("https://{}", listener.local_addr().map_err(|e| e.to_string())?);
        let served = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Shared::default());
        let inner = Arc::new(Inner {
            gate: TokenGate::new(&base_url, sts, ca)?,
            scope: format!("cluster:{}", base_url.trim_start_matches("https://")),
            served: served.clone(),
            shared: shared.clone(),
        });
        let app = Router::new().fallback(handle).layer(DefaultBodyLimit::max(MAX_BODY)).with_state(inner);
        crate::serve_tls(runtime, listener, ca, app)?;
        Ok(Self { base_url, served, shared })
    }

    /// Refuses (`401`) every request carrying the token with this fingerprint from now on.
    pub fn refuse(&self, fingerprint: &str) {
        self.shared.refused.lock().unwrap().push(fingerprint.to_owned());
    }

    /// Holds each refusal from now on until `count` have arrived, or ten seconds passed:
    /// so that many requests are in flight at once.
    pub fn hold_refusals(&self, count: usize) {
        *self.shared.hold.lock().unwrap() = Hold { wanted: count, ..Hold::default() };
    }

    /// True when a refusal held since [`Self::hold_refusals`] gave up waiting for the
    /// others: the requests were then not all in flight at once.
    pub fn hold_timed_out(&self) -> bool {
        self.shared.hold.lock().unwrap().timed_out
    }

    /// Every request so far, in the order they arrived.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// The bodies stored at `path`, one per `PUT` that was accepted.
    pub fn stored(&self, path: &str) -> Vec<Stored> {
        self.shared.stored.lock().unwrap().get(path).cloned().unwrap_or_default()
    }
}

fn status(code: StatusCode, reason: &str) -> Response {
    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": reason, "reason": reason, "code": code.as_u16()});
    (code, axum::Json(status)).into_response()
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: Bytes,
) -> Response {
    let fingerprint = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|token| Fingerprint::of(token).as_str().to_owned());
    let refused = fingerprint.as_ref().is_some_and(|f| inner.shared.refused.lock().unwrap().contains(f));
    inner.shared.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: uri.path().to_owned(),
        fingerprint,
        refused,
    });
    if refused {
        // Registered before counting itself, so the last arrival's wake cannot be missed.
        let arrived = inner.shared.arrived.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        let last = {
            let mut hold = inner.shared.hold.lock().unwrap();
            hold.arrived += 1;
            hold.arrived >= hold.wanted
        };
        if last {
            inner.shared.arrived.notify_waiters();
        } else if tokio::time::timeout(MAX_HOLD, arrived).await.is_err() {
            inner.shared.hold.lock().unwrap().timed_out = true;
        }
        return status(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    if let Err(refusal) = inner.gate.check(&headers, &inner.scope).await {
        return match refusal {
            Refusal::Unauthorized(_) => status(StatusCode::UNAUTHORIZED, "Unauthorized"),
            Refusal::Forbidden(_) => status(StatusCode::FORBIDDEN, "Forbidden"),
        };
    }
    if method == Method::PUT {
        let size = body.len();
        inner.shared.stored.lock().unwrap().entry(uri.path().to_owned()).or_default().push(Stored::of(&body));
        return axum::Json(json!({"kind": "Status", "status": "Success", "size": size})).into_response();
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
