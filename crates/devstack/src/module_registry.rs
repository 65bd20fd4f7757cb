//! A Terraform module registry (service discovery + `modules.v1`) on loopback HTTPS that
//! lists and hands out one module only to tokens minted by one `mayfly-sts` for it
//! (audience = its URL, scope `registry:<host:port>`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::gate::TokenGate;
use crate::{DevCa, StsClient};

/// The one module served: `<host>/mayfly/greeting/null`, version 1.0.0.
pub const MODULE: &str = "mayfly/greeting/null";

/// A running registry.
pub struct ModuleRegistry {
    /// `https://127.0.0.1:PORT` (Terraform wants a dot in a registry host name).
    pub base_url: String,
    /// Authorised API requests served.
    pub served: Arc<AtomicUsize>,
}

struct Inner {
    gate: TokenGate,
    scope: String,
    archive: PathBuf,
    served: Arc<AtomicUsize>,
}

impl ModuleRegistry {
    /// Starts the registry, packing the module into `dir`.
    pub fn start(runtime: &tokio::runtime::Runtime, ca: &DevCa, sts: &StsClient, dir: &Path) -> Result<Self, String> {
        let listener = crate::loopback_listener().map_err(|e| e.to_string())?;
        let host = listener.local_addr().map_err(|e| e.to_string())?.to_string();
        let base_url = format!("https://{host}");
        let archive = pack_module(dir)?;
        let served = Arc::new(AtomicUsize::new(0));
        let inner = Arc::new(Inner {
            gate: TokenGate::new(&base_url, sts, ca)?,
            scope: format!("registry:{host}"),
            archive,
            served: served.clone(),
        });
        let app = Router::new()
            .route("/.well-known/terraform.json", get(|| async { axum::Json(json!({"modules.v1": "/v1/modules/"})) }))
            .route("/archive/greeting.tar.gz", get(archive_file))
            .fallback(modules_api)
            .with_state(inner);
        crate::serve_tls(runtime, listener, ca, app)?;
        Ok(Self { base_url, served })
    }
}

/// A tar.gz with one `main.tf`, made with the system's tar.
fn pack_module(dir: &Path) -> Result<PathBuf, String> {
    let source = dir.join("greeting");
    std::fs::create_dir_all(&source).map_err(|e| e.to_string())?;
    std::fs::write(
        source.join("main.tf"),
        "output \"greeting\" {\n  value = \"hello from a registry that only takes mayfly tokens\"\n}\n",
    )
    .map_err(|e| e.to_string())?;
    let archive = dir.join("greeting.tar.gz");
    let status = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(&source)
        .arg("main.tf")
        .status()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    if !status.success() {
        return Err("tar failed".into());
    }
    Ok(archive)
}

async fn archive_file(State(inner): State<Arc<Inner>>) -> Response {
    match tokio::fs::read(&inner.archive).await {
        Ok(bytes) => ([("content-type", "application/x-gzip")], bytes).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn modules_api(State(inner): State<Arc<Inner>>, headers: HeaderMap, uri: Uri) -> Response {
    if let Err(refusal) = inner.gate.check(&headers, &inner.scope).await {
        return refusal.into_response("mayfly-dev-registry");
    }
    let Some(rest) = uri.path().strip_prefix("/v1/modules/") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let response = match rest.strip_prefix(MODULE) {
        Some("/versions") => axum::Json(json!({"modules": [{"versions": [{"version": "1.0.0"}]}]})).into_response(),
        Some("/1.0.0/download") => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            response.headers_mut().insert("x-terraform-get", HeaderValue::from_static("/archive/greeting.tar.gz"));
            response
        }
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    inner.served.fetch_add(1, Ordering::SeqCst);
    response
}
