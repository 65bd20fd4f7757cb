//! A private Python package index on loopback HTTPS, as PyPI-compatible private indexes
//! serve one: a PEP 503 simple index (`GET /simple/<project>/`, links to
//! `/packages/<file>#sha256=...`) whose pages and files each need a token minted by one
//! `mayfly-sts` for its audience (its URL) with the scope `pypi:<project>:read`, presented
//! as Basic `__token__:TOKEN` (or Bearer). No token: 401 with `Basic` and `Bearer`
//! challenges; a token for another project: 403.
//!
//! Each project in [`PYPI_INDEX_PROJECTS`] has one pure-Python wheel, version 1.0.0, whose
//! module (the project's name with `_`) holds `GREETING` ([`pypi_greeting`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::Digest;

use crate::gate::TokenGate;
use crate::{DevCa, StsClient};

/// The projects served.
pub const PYPI_INDEX_PROJECTS: [&str; 2] = ["mayfly-demo", "mayfly-other"];

/// What project `project`'s module holds as `GREETING`.
pub fn pypi_greeting(project: &str) -> String {
    format!("hello from {project}, fetched with a mayfly token")
}

/// A running index.
pub struct PypiIndex {
    /// `https://127.0.0.1:PORT`.
    pub base_url: String,
    /// `https://127.0.0.1:PORT/simple/`, pip's `--index-url`.
    pub index_url: String,
    served: Arc<Mutex<Vec<String>>>,
    refused: Arc<AtomicUsize>,
}

/// A file of the index: its project, content type and bytes.
struct File {
    project: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
}

struct Inner {
    gate: TokenGate,
    /// By path without the leading `/`.
    files: BTreeMap<String, File>,
    served: Arc<Mutex<Vec<String>>>,
    refused: Arc<AtomicUsize>,
}

impl PypiIndex {
    /// Starts the index over HTTPS with `ca`'s certificate, trusting tokens from `sts`.
    pub fn start(runtime: &tokio::runtime::Runtime, ca: &DevCa, sts: &StsClient) -> Result<Self, String> {
        let listener = crate::loopback_listener().map_err(|e| e.to_string())?;
        let base_url = format!("https://{}", listener.local_addr().map_err(|e| e.to_string())?);
        let served = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(AtomicUsize::new(0));
        let inner = Arc::new(Inner {
            gate: TokenGate::new(&base_url, sts, ca)?,
            files: index_files(),
            served: served.clone(),
            refused: refused.clone(),
        });
        crate::serve_tls(runtime, listener, ca, Router::new().fallback(file).with_state(inner))?;
        Ok(Self { index_url: format!("{base_url}/simple/"), base_url, served, refused })
    }

    /// The paths served so far (pages and files), in order.
    pub fn served(&self) -> Vec<String> {
        self.served.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Requests answered 401 or 403 so far.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

/// A wheel's RECORD hash: `sha256=` and the unpadded URL-safe base64 digest.
fn record_hash(data: &[u8]) -> String {
    format!("sha256={}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(data)))
}

/// Each project's simple page and wheel.
fn index_files() -> BTreeMap<String, File> {
    let mut files = BTreeMap::new();
    for project in PYPI_INDEX_PROJECTS {
        let module = project.replace('-', "_");
        let wheel_name = format!("{module}-1.0.0-py3-none-any.whl");
        let info = format!("{module}-1.0.0.dist-info");
        let mut entries: Vec<(String, Vec<u8>)> = vec![
            (format!("{module}/__init__.py"), format!("GREETING = {:?}\n", pypi_greeting(project)).into_bytes()),
            (
                format!("{info}/METADATA"),
                format!("Metadata-Version: 2.1\nName: {project}\nVersion: 1.0.0\n").into_bytes(),
            ),
            (
                format!("{info}/WHEEL"),
                b"Wheel-Version: 1.0\nGenerator: mayfly-devstack\nRoot-Is-Purelib: true\nTag: py3-none-any\n".to_vec(),
            ),
        ];
        let mut record: String =
            entries.iter().map(|(name, data)| format!("{name},{},{}\n", record_hash(data), data.len())).collect();
        record.push_str(&format!("{info}/RECORD,,\n"));
        entries.push((format!("{info}/RECORD"), record.into_bytes()));
        let borrowed: Vec<(String, &[u8])> = entries.iter().map(|(n, d)| (n.clone(), d.as_slice())).collect();
        let wheel = crate::go_proxy::stored_zip(&borrowed);
        let digest = hex::encode(sha2::Sha256::digest(&wheel));
        let page = format!(
            "<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" content=\"1.0\"><title>Links for {project}</title></head>\n<body><h1>Links for {project}</h1>\n<a href=\"../../packages/{wheel_name}#sha256={digest}\">{wheel_name}</a><br/>\n</body></html>\n"
        );
        files.insert(
            format!("simple/{project}/"),
            File { project, content_type: "text/html; charset=utf-8", body: page.into_bytes() },
        );
        files.insert(format!("packages/{wheel_name}"), File { project, content_type: "application/zip", body: wheel });
    }
    files
}

async fn file(State(inner): State<Arc<Inner>>, headers: HeaderMap, uri: Uri) -> Response {
    let mut path = uri.path().trim_start_matches('/').to_owned();
    if path.starts_with("simple/") && !path.ends_with('/') {
        path.push('/');
    }
    let Some(file) = inner.files.get(&path) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    if let Err(refusal) = inner.gate.check(&headers, &format!("pypi:{}:read", file.project)).await {
        inner.refused.fetch_add(1, Ordering::SeqCst);
        return refusal.into_response("mayfly-dev-pypi-index");
    }
    if let Ok(mut served) = inner.served.lock() {
        served.push(path);
    }
    ([("content-type", file.content_type)], file.body.clone()).into_response()
}
