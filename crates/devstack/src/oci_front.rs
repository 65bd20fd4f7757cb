//! A registry front whose version check (`GET /v2/`) answers `200` to anyone while every
//! repository request goes to the distribution registry behind it, which challenges
//! (`401` with `WWW-Authenticate: Bearer realm=...`): as registries that serve anonymous
//! version checks do. Requests and answers pass byte for byte, bodies whole.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderName, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The most of a body the front passes on.
const MAX_BODY: usize = 64 << 20;

/// A running front; it stops with its runtime.
pub struct OciFront;

struct Inner {
    /// `http://127.0.0.1:PORT` of the registry behind.
    upstream: String,
    client: reqwest::Client,
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
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        let inner = Arc::new(Inner { upstream: upstream.trim_end_matches('/').to_owned(), client });
        let app = Router::new().fallback(handle).with_state(inner);
        let tls = runtime
            .block_on(axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key))
            .map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let _guard = runtime.enter();
        let server = axum_server::from_tcp_rustls(listener, tls).map_err(|e| e.to_string())?;
        runtime.spawn(server.serve(app.into_make_service()));
        Ok(Self)
    }
}

async fn handle(State(inner): State<Arc<Inner>>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
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
