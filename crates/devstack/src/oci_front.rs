//! A registry front whose version check (`GET /v2/`) answers `200` to anyone while every
//! repository request goes to the distribution registry behind it, which challenges
//! (`401` with `WWW-Authenticate: Bearer realm=...`): as registries that serve anonymous
//! version checks do. Requests and answers pass byte for byte, bodies whole.
//!
//! It can also serve the registry's token realm on its own host (`/token`), passed on to
//! a token service; a test can have it refuse mayfly tokens by fingerprint, or all of
//! them, as a token service that revoked them would. Its registry tokens are said to
//! expire at once, so a proxy keeps none and presents the mayfly token on every request.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderName, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::kube_api::Seen;

/// The most of a body the front passes on.
const MAX_BODY: usize = 64 << 20;

/// A running front; it stops with its runtime.
pub struct OciFront {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    refused: Mutex<Vec<String>>,
    refuse_all: AtomicBool,
    asked: Mutex<Vec<Seen>>,
}

struct Inner {
    /// `http://127.0.0.1:PORT` of the registry behind.
    upstream: String,
    client: reqwest::Client,
    realm: Option<(String, reqwest::Client)>,
    shared: Arc<Shared>,
}

impl OciFront {
    /// Serves on `listener` over TLS with `cert` and `key` (PEM files), in front of the
    /// registry at `upstream` (plain http on loopback).
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        listener: std::net::TcpListener,
        cert: &Path,
        key: &Path,
        upstream: &str,
    ) -> Result<Self, String> {
        Self::start_with(runtime, listener, cert, key, upstream, None)
    }

    /// As [`OciFront::start`], also serving `/token` from `realm`: a token service's
    /// endpoint (`https://.../registry/token`) and the CA its certificate chains to (PEM).
    pub fn start_with(
        runtime: &tokio::runtime::Runtime,
        listener: std::net::TcpListener,
        cert: &Path,
        key: &Path,
        upstream: &str,
        realm: Option<(&str, &[u8])>,
    ) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        let realm = match realm {
            Some((url, ca_pem)) => {
                let ca = reqwest::Certificate::from_pem_bundle(ca_pem).map_err(|e| e.to_string())?;
                let client =
                    reqwest::Client::builder().tls_certs_merge(ca).no_proxy().build().map_err(|e| e.to_string())?;
                Some((url.to_owned(), client))
            }
            None => None,
        };
        let shared = Arc::new(Shared::default());
        let inner = Arc::new(Inner {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client,
            realm,
            shared: shared.clone(),
        });
        let app = Router::new().fallback(handle).with_state(inner);
        let tls = runtime
            .block_on(axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key))
            .map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let _guard = runtime.enter();
        let server = axum_server::from_tcp_rustls(listener, tls).map_err(|e| e.to_string())?;
        runtime.spawn(server.serve(app.into_make_service()));
        Ok(Self { shared })
    }

    /// Refuses (`401` at `/token`) the mayfly token with this fingerprint from now on.
    pub fn refuse(&self, fingerprint: &str) {
        self.shared.refused.lock().unwrap().push(fingerprint.to_owned());
    }

    /// Refuses every mayfly token at `/token` from now on.
    pub fn refuse_all(&self) {
        self.shared.refuse_all.store(true, Ordering::SeqCst);
    }

    /// Every request so far, in the order they came.
    pub fn asked(&self) -> Vec<Seen> {
        self.shared.asked.lock().unwrap().clone()
    }
}

/// The password of a `Basic` `Authorization`.
fn basic_password(headers: &axum::http::HeaderMap) -> Option<String> {
    use base64::Engine;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(value.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(text.split_once(':')?.1.to_owned())
}

/// `/token`: refused when asked to, else passed on to the token service, its answer's
/// `expires_in` set to the ten seconds a proxy keeps a registry token short of its expiry.
async fn token(inner: &Inner, parts: &axum::http::request::Parts) -> Response {
    let Some((url, client)) = &inner.realm else {
        return (StatusCode::NOT_FOUND, "no token realm here\n").into_response();
    };
    let fingerprint = basic_password(&parts.headers).map(|p| mayfly_core::Fingerprint::of(&p).as_str().to_owned());
    let refused = inner.shared.refuse_all.load(Ordering::SeqCst)
        || fingerprint.as_ref().is_some_and(|f| inner.shared.refused.lock().unwrap().contains(f));
    inner.shared.asked.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        fingerprint,
        refused,
    });
    if refused {
        let body = serde_json::json!({"errors": [{"code": "UNAUTHORIZED", "message": "the token is revoked"}]});
        return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    }
    let query = parts.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let mut asked = client.get(format!("{url}{query}"));
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        asked = asked.header(header::AUTHORIZATION, value);
    }
    let answer = match asked.send().await {
        Ok(answer) => answer,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("the token service: {e}\n")).into_response(),
    };
    let status = answer.status();
    let mut body: serde_json::Value = answer.json().await.unwrap_or_default();
    if status.is_success() {
        body["expires_in"] = serde_json::json!(10);
    }
    (status, axum::Json(body)).into_response()
}

async fn handle(State(inner): State<Arc<Inner>>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    if parts.uri.path() == "/token" {
        return token(&inner, &parts).await;
    }
    inner.shared.asked.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        fingerprint: None,
        refused: false,
    });
    if parts.uri.path() == "/v2/" && (parts.method == Method::GET || parts.method == Method::HEAD) {
        return ([(HeaderName::from_static("docker-distribution-api-version"), "registry/2.0")], "{}").into_response();
    }
    let Ok(body) = to_bytes(body, MAX_BODY).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n").into_response();
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut forwarded = inner.client.request(parts.method.clone(), format!("{}{path}", inner.upstream)).body(body);
    for (name, value) in &parts.headers {
        if name != header::HOST && name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
            forwarded = forwarded.header(name, value);
        }
    }
    let answer = match forwarded.send().await {
        Ok(answer) => answer,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("the registry behind: {e}\n")).into_response(),
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = answer.bytes().await.unwrap_or_default();
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    for (name, value) in &headers {
        if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING && name != header::CONNECTION {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}
