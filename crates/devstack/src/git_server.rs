//! A git smart-HTTP server in front of `git http-backend` that accepts only tokens minted
//! by one `mayfly-sts` for its audience, and checks repository and operation per request.
//!
//! A token's `scope` must hold `repo:<path>:read` to fetch and `repo:<path>:write` to push:
//! a token for one repository or operation is refused for any other.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::gate::{Refusal, TokenGate};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, Request, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::{DevCa, StsClient};

/// Requests seen, by result; tests read them.
#[derive(Debug, Default)]
pub struct GitServerStats {
    /// Served by `git http-backend`.
    pub served: AtomicUsize,
    /// Answered 401 (no or invalid token).
    pub unauthorized: AtomicUsize,
    /// Answered 403 (token valid but not for this repository or operation).
    pub forbidden: AtomicUsize,
}

/// A running git server.
pub struct GitServer {
    /// `https://127.0.0.1:PORT`.
    pub base_url: String,
    /// Directory of bare repositories.
    pub root: PathBuf,
    /// What it counted.
    pub stats: Arc<GitServerStats>,
    refused: Arc<Mutex<Vec<String>>>,
}

struct Inner {
    root: PathBuf,
    gate: TokenGate,
    stats: Arc<GitServerStats>,
}

impl GitServer {
    /// Starts the server over HTTPS with `ca`'s certificate, trusting tokens from the
    /// exchange `sts` (reached with the same CA) while it says they are active.
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        root: PathBuf,
        ca: &DevCa,
        sts: &StsClient,
    ) -> Result<Self, String> {
        let listener = crate::loopback_listener().map_err(|e| e.to_string())?;
        let base_url = format!("https://{}", listener.local_addr().map_err(|e| e.to_string())?);
        let gate = TokenGate::new(&base_url, sts, ca)?;
        let refused = gate.refused();
        let stats = Arc::new(GitServerStats::default());
        let inner = Arc::new(Inner { root: root.clone(), gate, stats: stats.clone() });
        let app = Router::new().fallback(handle).layer(DefaultBodyLimit::max(64 << 20)).with_state(inner);
        crate::serve_tls(runtime, listener, ca, app)?;
        Ok(Self { base_url, root, stats, refused })
    }

    /// Refuses a token from now on (by its fingerprint) without telling the exchange, as
    /// a server that revoked it on its own would.
    pub fn revoke(&self, fingerprint: &mayfly_core::Fingerprint) {
        if let Ok(mut refused) = self.refused.lock() {
            refused.push(fingerprint.to_string());
        }
    }

    /// Creates a bare repository `path` (e.g. `org/app.git`) under the root.
    pub fn create_repo(&self, path: &str) -> Result<PathBuf, String> {
        create_bare_repo(&self.root, path)
    }
}

/// Creates a bare repository `path` under `root`, with `main` as its branch.
pub(crate) fn create_bare_repo(root: &Path, path: &str) -> Result<PathBuf, String> {
    let dir = root.join(path);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let status = std::process::Command::new("git")
        .args(["init", "--quiet", "--bare", "--initial-branch=main"])
        .arg(&dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .status()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !status.success() {
        return Err(format!("git init --bare {} failed", dir.display()));
    }
    Ok(dir)
}

/// Which repository a smart-HTTP URL names, and whether the request writes.
pub(crate) fn parse_request(path: &str, query: Option<&str>, method: &Method) -> Option<(String, bool)> {
    let path = path.trim_start_matches('/');
    let markers = ["/info/refs", "/git-upload-pack", "/git-receive-pack", "/HEAD", "/objects/"];
    let cut = markers.iter().filter_map(|m| path.find(m)).min()?;
    let repo = mayfly_core::normalize_repo_path(&path[..cut]).ok()??;
    let rest = &path[cut..];
    let write = rest == "/git-receive-pack" && method == Method::POST
        || rest == "/info/refs" && query.is_some_and(|q| q.split('&').any(|p| p == "service=git-receive-pack"));
    Some((repo, write))
}

async fn handle(State(inner): State<Arc<Inner>>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let Some((repo, write)) = parse_request(parts.uri.path(), parts.uri.query(), &parts.method) else {
        return (StatusCode::NOT_FOUND, "not a git URL\n").into_response();
    };
    let operation = if write { "write" } else { "read" };
    let claims = match inner.gate.check(&parts.headers, &format!("repo:{repo}:{operation}")).await {
        Ok(claims) => claims,
        Err(refusal) => {
            let counter = match refusal {
                Refusal::Unauthorized(_) => &inner.stats.unauthorized,
                Refusal::Forbidden(_) => &inner.stats.forbidden,
            };
            counter.fetch_add(1, Ordering::SeqCst);
            return refusal.into_response("mayfly-dev-git");
        }
    };
    let subject = claims.get("sub").and_then(Value::as_str).unwrap_or("mayfly");
    let response = serve_repository(&inner.root, &parts, body, subject).await;
    if response.status().is_success() {
        inner.stats.served.fetch_add(1, Ordering::SeqCst);
    }
    response
}

/// Serves one request that has been authorised for `user`, by `git http-backend` over
/// the bare repositories under `root`: the part every git server here shares.
pub(crate) async fn serve_repository(root: &Path, parts: &Parts, body: Body, user: &str) -> Response {
    let body = match axum::body::to_bytes(body, 64 << 20).await {
        Ok(body) => body,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n").into_response(),
    };
    match http_backend(root, &parts.method, &parts.uri, &parts.headers, body, user).await {
        Ok(response) => response,
        Err(message) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{message}\n")).into_response(),
    }
}

/// Runs `git http-backend` as a CGI program for one request.
async fn http_backend(
    root: &Path,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
    user: &str,
) -> Result<Response, String> {
    let header = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let mut command = tokio::process::Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("REMOTE_USER", user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", uri.path())
        .env("QUERY_STRING", uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header(header::CONTENT_TYPE))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header(header::CONTENT_ENCODING))
        .env("GIT_PROTOCOL", headers.get("git-protocol").and_then(|v| v.to_str().ok()).unwrap_or(""))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = command.spawn().map_err(|e| format!("cannot run git http-backend: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let output = child.wait_with_output().await.map_err(|e| e.to_string())?;
    let _ = writer.await;
    cgi_response(&output.stdout)
}

/// Splits CGI output into a response: headers up to the first blank line, then the body.
fn cgi_response(output: &[u8]) -> Result<Response, String> {
    let (head_len, sep) = match (find(output, b"\r\n\r\n"), find(output, b"\n\n")) {
        (Some(a), Some(b)) if b < a => (b, 2),
        (Some(a), _) => (a, 4),
        (None, Some(b)) => (b, 2),
        (None, None) => return Err("git http-backend wrote no headers".into()),
    };
    let head = std::str::from_utf8(&output[..head_len]).map_err(|_| "bad CGI headers")?;
    let mut builder = Response::builder().status(StatusCode::OK);
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().and_then(|c| c.parse().ok()).unwrap_or(500);
            builder = builder.status(code);
        } else {
            builder = builder.header(name.trim(), value);
        }
    }
    builder.body(Body::from(output[head_len + sep..].to_vec())).map_err(|e| e.to_string())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_http_urls_name_repo_and_operation() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(
            parse_request("/org/app.git/info/refs", Some("service=git-upload-pack"), &get),
            Some(("org/app".into(), false))
        );
        assert_eq!(
            parse_request("/org/app.git/info/refs", Some("service=git-receive-pack"), &get),
            Some(("org/app".into(), true))
        );
        assert_eq!(parse_request("/org/app/git-receive-pack", None, &post), Some(("org/app".into(), true)));
        assert_eq!(parse_request("/org/app.git/git-upload-pack", None, &post), Some(("org/app".into(), false)));
        assert_eq!(parse_request("/org/../app.git/info/refs", None, &get), None);
        assert_eq!(parse_request("/nothing", None, &get), None);
    }

    #[test]
    fn cgi_output_becomes_a_response() {
        let response = cgi_response(b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope").unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let response = cgi_response(b"Content-Type: application/x-git-upload-pack-advertisement\n\nbody").unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(cgi_response(b"no headers at all").is_err());
    }
}
