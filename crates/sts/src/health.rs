//! Readiness: whether this replica can serve exchanges now (`GET /readyz`), and the
//! fail-closed gate in front of minting.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::audit::{Line, now_rfc3339};
use crate::oauth::OAuthError;
use crate::server::{Sts, oauth_error};

/// `GET /readyz`: `200 ready` when the signing key is loaded (it is, once the exchange
/// runs) and the revocation store answers; else `503` and one line saying why, for a load
/// balancer or an operator. `/healthz` only says the process serves.
pub(crate) async fn ready(State(sts): State<Arc<Sts>>) -> Response {
    match sts.store_ready().await {
        Ok(()) => (StatusCode::OK, "ready: signing key loaded, revocation store reachable\n").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")).into_response(),
    }
}

/// The store can be used, or the 503 to answer instead (RFC 6749's
/// `temporarily_unavailable`), with an audit line carrying the cause.
pub(crate) async fn store_or_503(sts: &Sts) -> Result<(), Response> {
    let Err(reason) = sts.store_ready().await else { return Ok(()) };
    sts.lasting
        .audit
        .record(&Line {
            time: now_rfc3339(),
            outcome: "denied",
            code: Some(OAuthError::TemporarilyUnavailable.as_str()),
            reason: Some(&reason),
            ..Line::default()
        })
        .await;
    Err(oauth_error(
        StatusCode::SERVICE_UNAVAILABLE,
        OAuthError::TemporarilyUnavailable,
        "the revocation store is unreachable, so no token can be issued; try again later",
    ))
}

/// Whether the store was found down at its last check (in this process).
static STORE_DOWN: AtomicBool = AtomicBool::new(false);

/// Logs the revocation store going down and coming back, once each time.
pub(crate) fn note_store(result: &Result<(), String>) {
    let down = result.is_err();
    if STORE_DOWN.swap(down, Ordering::Relaxed) != down {
        match result {
            Err(reason) => crate::log::error(&format!("the revocation store is down, no token is issued: {reason}")),
            Ok(()) => crate::log::info("the revocation store is reachable again"),
        }
    }
}
