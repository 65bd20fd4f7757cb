//! The Hugging Face Hub on loopback HTTPS, as far as a trusted publisher meets it: the
//! token exchange and git smart HTTP for its repositories.
//!
//! huggingface/hub-docs `docs/hub/trusted-publishers.md`, "API reference": `POST
//! /oauth/token` with JSON `{"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
//! "subject_token_type": "urn:ietf:params:oauth:token-type:id_token", "subject_token",
//! "resource"}`, the ID token's `aud` `https://huggingface.co`, `resource` a repository
//! (`NS/NAME`, `datasets/NS/NAME`, `spaces/NS/NAME`). The ID token is verified for real
//! against the development issuer and the repository's publisher must match its claims.
//! 200 `{"access_token": "hf_jwt_...", "token_type": "bearer", "expires_in": 3600,
//! "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"}`; errors 400
//! `{"error": "invalid_request" | "invalid_grant", "error_description"}`, the description
//! not saying which check failed. The token writes to that one repository, or only reads
//! it for a read-only publisher. git takes it as the password of any user name.
//!
//! The Hub HTTP API that `hf upload` and `hf download` (huggingface_hub 2.4.0) call, each
//! with `Authorization: Bearer TOKEN` (401 without or with a token it did not issue, 403
//! for another repository or a write with a read-only token; errors carry
//! `X-Error-Message` and JSON `{"error"}`, which `utils/_http.py` `hf_raise_for_status`
//! reads, and `X-Error-Code` `RepoNotFound`/`RevisionNotFound`/`EntryNotFound`):
//! - `POST /api/repos/create` (`hf_api.py` `create_repo`): 409 with the repository's `url`
//!   when it exists, which `exist_ok=True` accepts.
//! - `GET /api/{models,datasets,spaces}/NS/NAME[/revision/REV]` (`repo_info`): `id`, `sha`,
//!   `siblings`.
//! - `POST .../preupload/REV` (`_commit_api.py` `_fetch_upload_modes`): every file
//!   `"uploadMode": "regular"`, so the client sends it base64 inside the commit and never
//!   opens a xet session or an LFS batch (`_upload_pipeline.py` registers a xet upload
//!   only for files not `regular`).
//! - `POST .../commit/REV` (`_commit_api.py` `_send_commit`): NDJSON, a `header` line then
//!   `file` (base64), `deletedFile` and `deletedFolder` lines; `lfsFile` is refused.
//! - `GET .../tree/REV[/PATH]` (`list_repo_tree`, which `_snapshot_download.py` lists a
//!   snapshot with) and `POST .../paths-info/REV` (`get_paths_info`).
//! - `HEAD`/`GET /[datasets/|spaces/]NS/NAME/resolve/REV/PATH` (`file_download.py`
//!   `get_hf_file_metadata`, `http_get`): `X-Repo-Commit`, `ETag`, no `X-Xet-Hash`, so the
//!   bytes come over plain HTTP rather than xet (`utils/_xet.py`
//!   `parse_xet_file_data_from_response` finds no xet data).
//!
//! Files live in memory per repository, apart from its git repository, at one commit:
//! a revision is `main` or that commit. Object ids are content hashes, not git's.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::recording::{credential, now, record};
use crate::{DevCa, DevIssuer, RecordedRequest};

/// The audience the Hub wants in ID tokens.
pub const HUGGING_FACE_AUDIENCE: &str = "https://huggingface.co";
/// How long the Hub's exchanged tokens live.
const TOKEN_LIFETIME: i64 = 3600;

/// A repository's trusted publisher: the `sub` it matches, and whether it only reads.
#[derive(Clone)]
struct Publisher {
    subject: String,
    read_only: bool,
}

struct Inner {
    issuer: DevIssuer,
    root: PathBuf,
    publishers: Mutex<BTreeMap<String, Publisher>>,
    /// Token -> (resource, may write, expiry).
    tokens: Mutex<BTreeMap<String, (String, bool, i64)>>,
    /// Resource -> what the HTTP API serves of it.
    files: Mutex<BTreeMap<String, Snapshot>>,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// A running Hub stand-in.
pub struct HuggingFaceHub {
    /// `https://127.0.0.1:PORT`.
    pub base_url: String,
    /// Directory of its bare repositories.
    pub root: PathBuf,
    inner: Arc<Inner>,
}

impl HuggingFaceHub {
    /// Starts it over HTTPS with `ca`'s certificate, trusting ID tokens of `issuer`.
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        root: PathBuf,
        ca: &DevCa,
        issuer: &DevIssuer,
    ) -> Result<Self, String> {
        let inner = Arc::new(Inner {
            issuer: issuer.clone(),
            root: root.clone(),
            publishers: Mutex::default(),
            tokens: Mutex::default(),
            files: Mutex::default(),
            requests: Mutex::default(),
        });
        let base_url = crate::serve_on_loopback(runtime, ca, Router::new().fallback(handle).with_state(inner.clone()))?;
        Ok(Self { base_url, root, inner })
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> &str {
        self.base_url.trim_start_matches("https://")
    }

    /// Its token endpoint.
    pub fn token_url(&self) -> String {
        format!("{}/oauth/token", self.base_url)
    }

    /// Creates the repository `resource` (`acme/model`, `datasets/acme/data`) with a
    /// trusted publisher matching ID tokens with this `sub`.
    pub fn create_repo(&self, resource: &str, subject: &str, read_only: bool) -> Result<PathBuf, String> {
        let dir = crate::git_server::create_bare_repo(&self.root, resource)?;
        if let Ok(mut publishers) = self.inner.publishers.lock() {
            publishers.insert(resource.into(), Publisher { subject: subject.into(), read_only });
        }
        if let Ok(mut files) = self.inner.files.lock() {
            files.insert(resource.into(), Snapshot::default().committed(resource.as_bytes()));
        }
        Ok(dir)
    }

    /// [`create_repo`](Self::create_repo), with these files for the HTTP API to serve.
    pub fn create_repo_with_files(
        &self,
        resource: &str,
        subject: &str,
        read_only: bool,
        files: &[(&str, &[u8])],
    ) -> Result<PathBuf, String> {
        let dir = self.create_repo(resource, subject, read_only)?;
        let files = files.iter().map(|(path, bytes)| ((*path).to_owned(), bytes.to_vec())).collect();
        let snapshot = Snapshot { files, ..Snapshot::default() };
        if let Ok(mut repos) = self.inner.files.lock() {
            repos.insert(resource.into(), snapshot.committed(resource.as_bytes()));
        }
        Ok(dir)
    }

    /// The files the HTTP API holds for `resource`, by path.
    pub fn files(&self, resource: &str) -> BTreeMap<String, Vec<u8>> {
        self.inner.files.lock().ok().and_then(|f| f.get(resource).map(|s| s.files.clone())).unwrap_or_default()
    }

    /// The repository a live token it minted is for.
    pub fn resource_of(&self, token: &str) -> Option<String> {
        let tokens = self.inner.tokens.lock().ok()?;
        tokens.get(token).filter(|(_, _, expires)| *expires > now()).map(|(resource, ..)| resource.clone())
    }

    /// Every token it minted (tests look for them where they must not be).
    pub fn minted(&self) -> Vec<String> {
        self.inner.tokens.lock().map(|t| t.keys().cloned().collect()).unwrap_or_default()
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn oauth_error(code: &str, description: &str) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({"error": code, "error_description": description}))).into_response()
}

async fn handle(State(inner): State<Arc<Inner>>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n").into_response();
    };
    record(&inner.requests, &parts, &body, "subject_token");
    if parts.uri.path() == "/oauth/token" && parts.method == Method::POST {
        return exchange(&inner, &body);
    }
    if let Some(call) = ApiCall::parse(&parts.method, parts.uri.path()) {
        return api(&inner, &parts, call, &body);
    }
    // The CLI's best-effort look-up of AI agent harnesses, public on the Hub: none here.
    if parts.uri.path() == "/api/agent-harnesses" && parts.method == Method::GET {
        return axum::Json(json!({"standardEnvVars": [], "harnesses": {}})).into_response();
    }
    if parts.uri.path().starts_with("/api/") {
        return hub_error(StatusCode::NOT_FOUND, None, "Not Found");
    }
    git(&inner, parts, body).await
}

fn exchange(inner: &Inner, body: &[u8]) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return oauth_error("invalid_request", "The request body must be JSON");
    };
    let field = |name: &str| body.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
    if field("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange"
        || field("subject_token_type") != "urn:ietf:params:oauth:token-type:id_token"
    {
        return oauth_error("invalid_request", "Unsupported grant_type or subject_token_type");
    }
    let resource = field("resource");
    if resource.is_empty() || resource.split('/').count() > 3 {
        return oauth_error("invalid_request", "Invalid resource");
    }
    let denied = || oauth_error("invalid_grant", "The subject token could not be exchanged for this resource");
    let Ok(claims) = inner.issuer.verify(&field("subject_token"), HUGGING_FACE_AUDIENCE) else { return denied() };
    let publisher = inner.publishers.lock().ok().and_then(|p| p.get(&resource).cloned());
    let Some(publisher) = publisher.filter(|p| claims["sub"].as_str() == Some(p.subject.as_str())) else {
        return denied();
    };
    let token = format!("hf_jwt_{}", crate::random_hex(24));
    let Ok(mut tokens) = inner.tokens.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    tokens.insert(token.clone(), (resource, !publisher.read_only, now() + TOKEN_LIFETIME));
    axum::Json(json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": TOKEN_LIFETIME,
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
    }))
    .into_response()
}

/// git smart HTTP, as the Hub answers it: 401 without a live token for the repository,
/// 403 to push with a read-only one.
async fn git(inner: &Inner, parts: axum::http::request::Parts, body: axum::body::Bytes) -> Response {
    let Some((repo, write)) = crate::git_server::parse_request(parts.uri.path(), parts.uri.query(), &parts.method)
    else {
        return (StatusCode::NOT_FOUND, "Repository not found\n").into_response();
    };
    let resource = repo.strip_suffix(".git").unwrap_or(&repo).to_owned();
    let unauthorized = || {
        let mut response = (StatusCode::UNAUTHORIZED, "Invalid credentials in Authorization header\n").into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"Hugging Face\""));
        response
    };
    let presented = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(credential);
    let Some(("Basic", user, token)) = presented else { return unauthorized() };
    let minted = inner.tokens.lock().ok().and_then(|t| t.get(&token).cloned());
    let Some((granted, may_write, _)) = minted.filter(|(_, _, expires)| *expires > now()) else {
        return unauthorized();
    };
    if granted != resource {
        return unauthorized();
    }
    if write && !may_write {
        return (StatusCode::FORBIDDEN, "You are not authorized to push to this repo.\n").into_response();
    }
    crate::git_server::serve_repository(&inner.root, &parts, Body::from(body), &user).await
}

/// What the HTTP API serves of one repository: its files at one commit.
#[derive(Clone, Default)]
struct Snapshot {
    commit: String,
    files: BTreeMap<String, Vec<u8>>,
}

impl Snapshot {
    /// These files at a new commit, named after the one before and the change.
    fn committed(mut self, change: &[u8]) -> Self {
        self.commit = object_id(&[self.commit.as_bytes(), change].concat());
        self
    }

    /// Whether `revision` names this commit: the branch `main` or the commit itself.
    fn is_at(&self, revision: &str) -> bool {
        revision == "main" || revision == self.commit
    }
}

/// A file's id: a content hash of git's length (the Hub's is git's blob id, which the
/// client only compares).
fn object_id(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..20])
}

/// What an API call asks.
#[derive(Clone, Copy, PartialEq)]
enum Endpoint {
    Create,
    Info,
    Preupload,
    Commit,
    Tree,
    PathsInfo,
    Resolve,
}

/// A call to the Hub's HTTP API: what it asks, of which repository (`NS/NAME`,
/// `datasets/NS/NAME`, `spaces/NS/NAME`; for a create, in the body), at which revision,
/// and the path in the repository for a tree or a file.
struct ApiCall {
    endpoint: Endpoint,
    resource: String,
    revision: String,
    path: String,
}

impl ApiCall {
    fn parse(method: &Method, path: &str) -> Option<Self> {
        // Each segment on its own: a revision arrives with its `/` encoded.
        let decoded = path
            .trim_start_matches('/')
            .split('/')
            .map(|s| percent_encoding::percent_decode_str(s).decode_utf8().ok().map(|s| s.into_owned()))
            .collect::<Option<Vec<String>>>()?;
        let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
        let call = |endpoint, resource: String, revision: &str, path: &[&str]| {
            Some(Self { endpoint, resource, revision: revision.to_owned(), path: path.join("/") })
        };
        let (get, post) = (method == Method::GET, method == Method::POST);
        let read = get || method == Method::HEAD;
        match segments.as_slice() {
            ["api", "repos", "create"] if post => call(Endpoint::Create, String::new(), "main", &[]),
            ["api", kind @ ("models" | "datasets" | "spaces"), namespace, name, rest @ ..] => {
                let resource = resource_of(kind.trim_end_matches('s'), namespace, name);
                match rest {
                    [] if get => call(Endpoint::Info, resource, "main", &[]),
                    ["revision", revision] if get => call(Endpoint::Info, resource, revision, &[]),
                    ["preupload", revision] if post => call(Endpoint::Preupload, resource, revision, &[]),
                    ["commit", revision] if post => call(Endpoint::Commit, resource, revision, &[]),
                    ["tree", revision, path @ ..] if get => call(Endpoint::Tree, resource, revision, path),
                    ["paths-info", revision] if post => call(Endpoint::PathsInfo, resource, revision, &[]),
                    _ => None,
                }
            }
            [kind @ ("datasets" | "spaces"), namespace, name, "resolve", revision, path @ ..]
                if read && !path.is_empty() =>
            {
                call(Endpoint::Resolve, resource_of(kind.trim_end_matches('s'), namespace, name), revision, path)
            }
            [namespace, name, "resolve", revision, path @ ..] if read && !path.is_empty() => {
                call(Endpoint::Resolve, resource_of("model", namespace, name), revision, path)
            }
            _ => None,
        }
    }

    /// Whether it changes the repository.
    fn writes(&self) -> bool {
        matches!(self.endpoint, Endpoint::Create | Endpoint::Preupload | Endpoint::Commit)
    }
}

/// The resource of a repository of `kind` (`model`, `dataset`, `space`).
fn resource_of(kind: &str, namespace: &str, name: &str) -> String {
    match kind {
        "model" => format!("{namespace}/{name}"),
        _ => format!("{kind}s/{namespace}/{name}"),
    }
}

/// An error as the Hub's API answers one.
fn hub_error(status: StatusCode, code: Option<&'static str>, message: &'static str) -> Response {
    let mut response = (status, axum::Json(json!({ "error": message }))).into_response();
    response.headers_mut().insert("x-error-message", HeaderValue::from_static(message));
    if let Some(code) = code {
        response.headers_mut().insert("x-error-code", HeaderValue::from_static(code));
    }
    response
}

/// The refusal of a call whose bearer token is not one it issued for this repository, or
/// does not write when the call does.
fn refusal(inner: &Inner, headers: &HeaderMap, resource: &str, write: bool) -> Option<Response> {
    let presented = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(credential);
    let minted = match presented {
        Some(("Bearer", _, token)) => inner.tokens.lock().ok().and_then(|t| t.get(&token).cloned()),
        _ => None,
    };
    let Some((granted, may_write, _)) = minted.filter(|(_, _, expires)| *expires > now()) else {
        return Some(hub_error(StatusCode::UNAUTHORIZED, None, "Invalid credentials in Authorization header"));
    };
    if granted != resource {
        return Some(hub_error(StatusCode::FORBIDDEN, None, "This token is not allowed to access this repository"));
    }
    if write && !may_write {
        return Some(hub_error(StatusCode::FORBIDDEN, None, "This token is read-only for this repository"));
    }
    None
}

/// The repository a create names: `{"name", "organization", "type"}`.
fn created_resource(body: &[u8]) -> Option<String> {
    let body: Value = serde_json::from_slice(body).ok()?;
    let kind = body.get("type").and_then(Value::as_str).unwrap_or("model");
    if !["model", "dataset", "space"].contains(&kind) {
        return None;
    }
    Some(resource_of(kind, body.get("organization")?.as_str()?, body.get("name")?.as_str()?))
}

fn api(inner: &Inner, parts: &Parts, mut call: ApiCall, body: &[u8]) -> Response {
    if call.endpoint == Endpoint::Create {
        let Some(resource) = created_resource(body) else {
            return hub_error(StatusCode::BAD_REQUEST, None, "Invalid repository to create");
        };
        call.resource = resource;
    }
    if let Some(refused) = refusal(inner, &parts.headers, &call.resource, call.writes()) {
        return refused;
    }
    let Ok(mut repos) = inner.files.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    let Some(snapshot) = repos.get_mut(&call.resource) else {
        return hub_error(StatusCode::NOT_FOUND, Some("RepoNotFound"), "Repository not found");
    };
    if !snapshot.is_at(&call.revision) {
        return hub_error(StatusCode::NOT_FOUND, Some("RevisionNotFound"), "Invalid rev id");
    }
    let authority = parts.uri.authority().map(ToString::to_string);
    let host = authority.or_else(|| parts.headers.get(header::HOST)?.to_str().ok().map(str::to_owned));
    let repo_url = format!("https://{}/{}", host.unwrap_or_default(), call.resource);
    match call.endpoint {
        // A trusted publisher's repository exists already; `exist_ok` takes the 409.
        Endpoint::Create => {
            (StatusCode::CONFLICT, axum::Json(json!({"error": "You already created this repo", "url": repo_url})))
                .into_response()
        }
        Endpoint::Info => {
            let id = call.resource.trim_start_matches("datasets/").trim_start_matches("spaces/");
            let siblings: Vec<Value> = snapshot.files.keys().map(|path| json!({ "rfilename": path })).collect();
            axum::Json(json!({"id": id, "sha": snapshot.commit, "private": true, "siblings": siblings})).into_response()
        }
        Endpoint::Preupload => {
            let asked: Value = serde_json::from_slice(body).unwrap_or_default();
            let files: Vec<Value> = asked["files"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|file| file["path"].as_str())
                .map(|path| {
                    let oid = snapshot.files.get(path).map(|bytes| object_id(bytes));
                    json!({"path": path, "uploadMode": "regular", "shouldIgnore": false, "oid": oid})
                })
                .collect();
            axum::Json(json!({ "files": files, "commitOid": snapshot.commit })).into_response()
        }
        Endpoint::Commit => {
            if parts.uri.query().is_some_and(|q| q.split('&').any(|p| p == "create_pr=1")) {
                return hub_error(StatusCode::BAD_REQUEST, None, "Pull requests are not served here");
            }
            let mut files = snapshot.files.clone();
            if let Err(message) = apply_commit(&mut files, body) {
                return hub_error(StatusCode::BAD_REQUEST, None, message);
            }
            let next = Snapshot { commit: snapshot.commit.clone(), files }.committed(body);
            *snapshot = next;
            axum::Json(json!({
                "success": true,
                "commitOid": snapshot.commit,
                "commitUrl": format!("{repo_url}/commit/{}", snapshot.commit),
                "pullRequestUrl": null,
            }))
            .into_response()
        }
        Endpoint::Tree => {
            let recursive = url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
                .any(|(key, value)| key == "recursive" && (value.eq_ignore_ascii_case("true") || value == "1"));
            let entries = tree(&snapshot.files, &call.path, recursive);
            if entries.is_empty() && !call.path.is_empty() {
                return hub_error(StatusCode::NOT_FOUND, Some("EntryNotFound"), "Entry not found");
            }
            axum::Json(entries).into_response()
        }
        Endpoint::PathsInfo => {
            let entries: Vec<Value> = url::form_urlencoded::parse(body)
                .filter(|(key, _)| key == "paths")
                .filter_map(|(_, path)| path_info(&snapshot.files, &path))
                .collect();
            axum::Json(entries).into_response()
        }
        Endpoint::Resolve => {
            let Some(bytes) = snapshot.files.get(&call.path) else {
                return hub_error(StatusCode::NOT_FOUND, Some("EntryNotFound"), "Entry not found");
            };
            let etag = format!("\"{}\"", object_id(bytes));
            let mut response = bytes.clone().into_response();
            let headers = response.headers_mut();
            for (name, value) in [("x-repo-commit", snapshot.commit.as_str()), ("etag", etag.as_str())] {
                if let Ok(value) = HeaderValue::from_str(value) {
                    headers.insert(name, value);
                }
            }
            response
        }
    }
}

/// Applies an NDJSON commit to `files`: a `header` line, then `file` (base64 or text),
/// `deletedFile` and `deletedFolder` lines.
fn apply_commit(files: &mut BTreeMap<String, Vec<u8>>, ndjson: &[u8]) -> Result<(), &'static str> {
    let mut has_header = false;
    for line in ndjson.split(|b| *b == b'\n').filter(|line| !line.trim_ascii().is_empty()) {
        let item: Value = serde_json::from_slice(line).map_err(|_| "A commit line is not JSON")?;
        let value = &item["value"];
        let path = value["path"].as_str().unwrap_or_default();
        match item["key"].as_str().unwrap_or_default() {
            "header" => has_header = value["summary"].is_string(),
            "file" => {
                let path = repo_path(path)?;
                let content = value["content"].as_str().ok_or("A file has no content")?;
                let bytes = match value["encoding"].as_str() {
                    Some("base64") => BASE64.decode(content).map_err(|_| "A file's content is not base64")?,
                    _ => content.as_bytes().to_vec(),
                };
                files.insert(path, bytes);
            }
            "deletedFile" => {
                files.remove(&repo_path(path)?).ok_or("A file with this name doesn't exist")?;
            }
            "deletedFolder" => {
                let folder = format!("{}/", repo_path(path.trim_end_matches('/'))?);
                files.retain(|path, _| !path.starts_with(&folder));
            }
            // Preupload never asks for LFS, so an `lfsFile` names bytes that were never sent.
            "lfsFile" => return Err("LFS files are not accepted here"),
            _ => return Err("Unknown commit operation"),
        }
    }
    if has_header { Ok(()) } else { Err("The commit has no header") }
}

/// A path in a repository: relative, without `.` or `..` or empty segments.
fn repo_path(path: &str) -> Result<String, &'static str> {
    if path.is_empty() || path.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err("Invalid path in repository");
    }
    Ok(path.to_owned())
}

fn file_entry(path: &str, bytes: &[u8]) -> Value {
    json!({"type": "file", "path": path, "size": bytes.len(), "oid": object_id(bytes)})
}

fn folder_entry(path: &str) -> Value {
    json!({"type": "directory", "path": path, "size": 0, "oid": object_id(path.as_bytes())})
}

/// The entries under `dir` (the root when empty): files and folders, down every level when
/// `recursive`, else one.
fn tree(files: &BTreeMap<String, Vec<u8>>, dir: &str, recursive: bool) -> Vec<Value> {
    let prefix = if dir.is_empty() { String::new() } else { format!("{}/", dir.trim_end_matches('/')) };
    let mut folders = std::collections::BTreeSet::new();
    let mut entries = Vec::new();
    for (path, bytes) in files.iter().filter(|(path, _)| path.starts_with(&prefix)) {
        let rest = &path[prefix.len()..];
        let mut parents = rest.match_indices('/').map(|(at, _)| format!("{prefix}{}", &rest[..at]));
        if recursive {
            folders.extend(parents);
            entries.push(file_entry(path, bytes));
        } else if let Some(folder) = parents.next() {
            folders.insert(folder);
        } else {
            entries.push(file_entry(path, bytes));
        }
    }
    folders.iter().map(|folder| folder_entry(folder)).chain(entries).collect()
}

/// A path's entry: a file, a folder holding files, or none.
fn path_info(files: &BTreeMap<String, Vec<u8>>, path: &str) -> Option<Value> {
    if let Some(bytes) = files.get(path) {
        return Some(file_entry(path, bytes));
    }
    let folder = format!("{}/", path.trim_end_matches('/'));
    files.keys().any(|p| p.starts_with(&folder)).then(|| folder_entry(path.trim_end_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(method: Method, path: &str) -> Option<(&'static str, String, String, String)> {
        let call = ApiCall::parse(&method, path)?;
        let name = match call.endpoint {
            Endpoint::Create => "create",
            Endpoint::Info => "info",
            Endpoint::Preupload => "preupload",
            Endpoint::Commit => "commit",
            Endpoint::Tree => "tree",
            Endpoint::PathsInfo => "paths-info",
            Endpoint::Resolve => "resolve",
        };
        Some((name, call.resource, call.revision, call.path))
    }

    #[test]
    fn api_paths_name_the_repository_revision_and_file() {
        let cases = [
            (Method::POST, "/api/repos/create", ["create", "", "main", ""]),
            (Method::GET, "/api/models/acme/model", ["info", "acme/model", "main", ""]),
            (
                Method::GET,
                "/api/datasets/acme/data/revision/refs%2Fpr%2F1",
                ["info", "datasets/acme/data", "refs/pr/1", ""],
            ),
            (Method::POST, "/api/spaces/acme/app/commit/main", ["commit", "spaces/acme/app", "main", ""]),
            (Method::GET, "/api/models/acme/model/tree/main/sub/dir", ["tree", "acme/model", "main", "sub/dir"]),
            (Method::HEAD, "/acme/model/resolve/main/sub/a%20b.txt", ["resolve", "acme/model", "main", "sub/a b.txt"]),
            (Method::GET, "/datasets/acme/data/resolve/main/x.csv", ["resolve", "datasets/acme/data", "main", "x.csv"]),
        ];
        for (method, path, [name, resource, revision, file]) in cases {
            let expected = (name, resource.to_owned(), revision.to_owned(), file.to_owned());
            assert_eq!(parsed(method, path), Some(expected), "{path}");
        }
        assert_eq!(parsed(Method::GET, "/api/models/acme/model/commit/main"), None, "a commit is a POST");
        assert_eq!(parsed(Method::GET, "/acme/model.git/info/refs"), None, "git's URLs are not the API's");
        assert_eq!(parsed(Method::GET, "/acme/model/resolve/main"), None);
    }

    #[test]
    fn commits_add_and_delete_files_and_refuse_what_was_never_sent() {
        let mut files = BTreeMap::from([("old/a.txt".to_owned(), b"a".to_vec()), ("keep".to_owned(), b"k".to_vec())]);
        let ndjson = concat!(
            r#"{"key":"header","value":{"summary":"s","description":""}}"#,
            "\n",
            r#"{"key":"file","value":{"content":"aGk=","path":"new/b.bin","encoding":"base64"}}"#,
            "\n",
            r#"{"key":"deletedFolder","value":{"path":"old/"}}"#,
            "\n"
        );
        apply_commit(&mut files, ndjson.as_bytes()).unwrap();
        assert_eq!(files.keys().collect::<Vec<_>>(), ["keep", "new/b.bin"]);
        assert_eq!(files["new/b.bin"], b"hi");
        let lfs = r#"{"key":"header","value":{"summary":"s"}}
{"key":"lfsFile","value":{"path":"w.bin","algo":"sha256","oid":"00"}}"#;
        assert!(apply_commit(&mut files, lfs.as_bytes()).is_err());
        let escape = r#"{"key":"header","value":{"summary":"s"}}
{"key":"file","value":{"content":"eA==","path":"../x","encoding":"base64"}}"#;
        assert!(apply_commit(&mut files, escape.as_bytes()).is_err());
        let headless = r#"{"key":"file","value":{"content":"eA==","path":"x","encoding":"base64"}}"#;
        assert!(apply_commit(&mut files, headless.as_bytes()).is_err());
    }

    #[test]
    fn trees_list_one_level_or_every_level() {
        let files = BTreeMap::from([
            ("a.txt".to_owned(), b"a".to_vec()),
            ("sub/b.txt".to_owned(), b"b".to_vec()),
            ("sub/deep/c.txt".to_owned(), b"c".to_vec()),
        ]);
        let paths = |entries: Vec<Value>| -> Vec<String> {
            entries.iter().map(|e| format!("{}:{}", e["type"].as_str().unwrap(), e["path"].as_str().unwrap())).collect()
        };
        assert_eq!(paths(tree(&files, "", false)), ["directory:sub", "file:a.txt"]);
        assert_eq!(
            paths(tree(&files, "", true)),
            ["directory:sub", "directory:sub/deep", "file:a.txt", "file:sub/b.txt", "file:sub/deep/c.txt"]
        );
        assert_eq!(paths(tree(&files, "sub", false)), ["directory:sub/deep", "file:sub/b.txt"]);
        assert!(tree(&files, "su", true).is_empty(), "a prefix of a name is not a folder");
    }
}
