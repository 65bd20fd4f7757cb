//! A sparse cargo registry on plain loopback HTTP, in one of two modes:
//!
//! - private (`"auth-required": true`): every request needs a token minted by one
//!   `mayfly-sts`: `crate:*:read` (or a publish token) for the index and downloads,
//!   `crate:<name>:publish` to publish that one crate;
//! - public, like crates.io: reads are open, publishing takes a token issued by a
//!   [`CratesIoExchange`](crate::CratesIoExchange), sent as the whole `Authorization` value.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::gate::{Refusal, TokenGate};
use crate::{DevCa, StsClient, TrustedTokens};

/// A running registry.
pub struct CargoRegistry {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// `sparse+http://127.0.0.1:PORT/index/`, what `.cargo/config.toml` names.
    pub index_url: String,
    /// Requests refused with 403 (a valid token for something else).
    pub forbidden: Arc<AtomicUsize>,
}

#[derive(Default)]
struct Crates {
    /// Name -> index lines.
    index: BTreeMap<String, Vec<String>>,
    /// (name, version) -> .crate bytes.
    files: BTreeMap<(String, String), Vec<u8>>,
}

/// Who vouches for tokens.
enum Auth {
    Sts(Box<TokenGate>),
    TrustedPublishing(TrustedTokens),
}

struct Inner {
    base_url: String,
    auth: Auth,
    crates: Mutex<Crates>,
    forbidden: Arc<AtomicUsize>,
}

impl CargoRegistry {
    /// Starts the registry, trusting tokens from the exchange `sts` (reached with `ca`).
    pub fn start(runtime: &tokio::runtime::Runtime, ca: &DevCa, sts: &StsClient) -> Result<Self, String> {
        Self::serve(runtime, |base_url| Ok(Auth::Sts(Box::new(TokenGate::new(base_url, sts, ca)?))))
    }

    /// Starts a public registry that takes publish tokens from a trusted publishing exchange.
    pub fn start_public(runtime: &tokio::runtime::Runtime, tokens: TrustedTokens) -> Result<Self, String> {
        Self::serve(runtime, |_| Ok(Auth::TrustedPublishing(tokens)))
    }

    fn serve(
        runtime: &tokio::runtime::Runtime,
        auth: impl FnOnce(&str) -> Result<Auth, String>,
    ) -> Result<Self, String> {
        let listener = crate::loopback_listener().map_err(|e| e.to_string())?;
        let base_url = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
        let forbidden = Arc::new(AtomicUsize::new(0));
        let inner = Arc::new(Inner {
            auth: auth(&base_url)?,
            base_url: base_url.clone(),
            crates: Mutex::new(Crates::default()),
            forbidden: forbidden.clone(),
        });
        let _guard = runtime.enter();
        let server = axum_server::from_tcp(listener).map_err(|e| e.to_string())?;
        runtime.spawn(server.serve(Router::new().fallback(handle).with_state(inner).into_make_service()));
        Ok(Self { index_url: format!("sparse+{base_url}/index/"), base_url, forbidden })
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    if method == Method::PUT && path == "/api/v1/crates/new" {
        return publish(&inner, &headers, &body).await;
    }
    // cargo polls the index with its publish token while it waits for a new version to
    // appear, so a publish token reads the index too, as registries' tokens do.
    let reads = |scope: &str| scope == "crate:*:read" || scope.starts_with("crate:") && scope.ends_with(":publish");
    if let Auth::Sts(gate) = &inner.auth
        && let Err(refusal) = gate.check_with(&headers, "crate:*:read", reads).await
    {
        return refuse(&inner, refusal);
    }
    if path == "/index/config.json" {
        let api = &inner.base_url;
        let private = matches!(inner.auth, Auth::Sts(_));
        return axum::Json(json!({"dl": format!("{api}/api/v1/crates"), "api": api, "auth-required": private}))
            .into_response();
    }
    let crates = inner.crates.lock().expect("registry state");
    if let Some(name) = path.strip_prefix("/index/").and_then(|p| p.rsplit('/').next()) {
        return match crates.index.get(&name.to_ascii_lowercase()) {
            Some(lines) => lines.join("\n").into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        };
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let ["api", "v1", "crates", name, version, "download"] = parts.as_slice()
        && let Some(bytes) = crates.files.get(&(name.to_string(), version.to_string()))
    {
        return bytes.clone().into_response();
    }
    StatusCode::NOT_FOUND.into_response()
}

fn refuse(inner: &Inner, refusal: Refusal) -> Response {
    match refusal {
        Refusal::Unauthorized(message) => {
            let mut response =
                (StatusCode::UNAUTHORIZED, axum::Json(json!({"errors": [{"detail": message}]}))).into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("Cargo login_url=\"{}/me\"", inner.base_url)) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
            }
            response
        }
        Refusal::Forbidden(message) => {
            inner.forbidden.fetch_add(1, Ordering::SeqCst);
            (StatusCode::FORBIDDEN, axum::Json(json!({"errors": [{"detail": message}]}))).into_response()
        }
    }
}

/// `PUT /api/v1/crates/new`: u32 length + JSON metadata, u32 length + the .crate file.
async fn publish(inner: &Inner, headers: &HeaderMap, body: &[u8]) -> Response {
    let bad =
        |detail: &str| (StatusCode::BAD_REQUEST, axum::Json(json!({"errors": [{"detail": detail}]}))).into_response();
    let Some((metadata, file)) = split_publish_body(body) else { return bad("malformed publish body") };
    let Ok(metadata) = serde_json::from_slice::<Value>(metadata) else { return bad("metadata is not JSON") };
    let (Some(name), Some(version)) = (metadata["name"].as_str(), metadata["vers"].as_str()) else {
        return bad("metadata has no name or version");
    };
    let allowed = match &inner.auth {
        Auth::Sts(gate) => gate.check(headers, &format!("crate:{name}:publish")).await.map(drop),
        Auth::TrustedPublishing(tokens) => match headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
            None => Err(Refusal::Unauthorized("authentication required".into())),
            Some(token) => tokens.check(token, name),
        },
    };
    if let Err(refusal) = allowed {
        return refuse(inner, refusal);
    }
    let deps: Vec<Value> = metadata["deps"]
        .as_array()
        .map(|deps| {
            deps.iter()
                .map(|d| {
                    json!({"name": d["name"], "req": d["version_req"], "features": d["features"], "optional": d["optional"],
                           "default_features": d["default_features"], "target": d["target"], "kind": d["kind"], "registry": d["registry"]})
                })
                .collect()
        })
        .unwrap_or_default();
    let line = json!({"name": name, "vers": version, "deps": deps, "cksum": hex::encode(Sha256::digest(file)),
                      "features": metadata["features"], "yanked": false});
    let mut crates = inner.crates.lock().expect("registry state");
    crates.index.entry(name.to_ascii_lowercase()).or_default().push(line.to_string());
    crates.files.insert((name.to_owned(), version.to_owned()), file.to_vec());
    axum::Json(json!({"warnings": {"invalid_categories": [], "invalid_badges": [], "other": []}})).into_response()
}

fn split_publish_body(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let take = |bytes: &[u8]| -> Option<(usize, usize)> {
        let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        (bytes.len() >= 4 + len).then_some((4, 4 + len))
    };
    let (start, end) = take(body)?;
    let metadata = &body[start..end];
    let rest = &body[end..];
    let (start, end) = take(rest)?;
    Some((metadata, &rest[start..end]))
}

#[cfg(test)]
mod tests {
    #[test]
    fn publish_bodies_split_into_metadata_and_file() {
        let mut body = Vec::new();
        body.extend(2u32.to_le_bytes());
        body.extend(b"{}");
        body.extend(3u32.to_le_bytes());
        body.extend(b"abc");
        assert_eq!(super::split_publish_body(&body), Some((&b"{}"[..], &b"abc"[..])));
        assert_eq!(super::split_publish_body(&body[..8]), None);
        assert_eq!(super::split_publish_body(&[1, 0]), None);
    }
}
