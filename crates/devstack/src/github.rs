//! GitHub on loopback HTTPS, as far as mayfly meets it: octo-sts's exchange, GitHub's
//! installation-token revocation, and git smart HTTP for its repositories. Neither
//! GitHub nor the hosted octo-sts app can run here; this speaks their documented wire
//! format and checks the ID tokens it is given for real, against the development issuer.
//!
//! - octo-sts README, "Federating a token": `GET /sts/exchange?scope=ORG/REPO&identity=NAME`
//!   with `Authorization: Bearer ID_TOKEN`. The token is verified (signature, issuer,
//!   expiry), the trust policy `.github/chainguard/NAME.sts.yaml` of ORG/REPO is looked up
//!   (here: registered by the test), its `issuer` and `subject`/`subject_pattern` must
//!   match, and `aud` must be octo-sts's domain (here `127.0.0.1:PORT`) as when a policy
//!   names no audience. 200 `{"token": "ghs_..."}`; errors are grpc-gateway documents
//!   `{"code", "message", "details": []}` with the HTTP status of the gRPC code, and
//!   octo-sts's messages.
//! - GitHub REST, "Create an installation access token for an app": the token is for
//!   the policy's repositories and permissions, and expires in one hour.
//! - GitHub REST, "Revoke an installation access token": `DELETE /installation/token` with
//!   `Authorization: Bearer TOKEN` answers 204; a token it does not know, 401
//!   `{"message": "Bad credentials"}`.
//! - git smart HTTP: Basic `x-access-token:TOKEN` with a live token for the repository;
//!   pushing needs `contents: write`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

use crate::{DevCa, DevIssuer};

/// How long GitHub's installation tokens live.
const INSTALLATION_TOKEN_LIFETIME: i64 = 3600;

/// A trust policy (`.github/chainguard/NAME.sts.yaml`), as the test registers it.
#[derive(Clone, Debug, Default)]
pub struct TrustPolicy {
    /// `issuer`: the ID token's `iss`, exactly.
    pub issuer: String,
    /// `subject`: the ID token's `sub`, exactly.
    pub subject: Option<String>,
    /// `subject_pattern`: a regular expression the whole `sub` must match.
    pub subject_pattern: Option<String>,
    /// `permissions`, such as `("contents", "write")`.
    pub permissions: Vec<(String, String)>,
}

/// One request as the stand-in saw it, with every `Authorization` value replaced by the
/// scheme and the fingerprint of its token.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// `GET`, `DELETE` ...
    pub method: String,
    /// The path.
    pub path: String,
    /// The query, undecoded.
    pub query: Option<String>,
    /// Header names and values (Authorization as `SCHEME FINGERPRINT`).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// For `/sts/exchange`: the `aud` of the ID token presented, as the token says.
    pub id_token_audience: Option<Value>,
}

impl RecordedRequest {
    /// A query parameter, decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }

    /// A header's value (the first, case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// An installation token it minted.
#[derive(Clone, Debug)]
struct Minted {
    repositories: Vec<String>,
    permissions: Vec<(String, String)>,
    expires_at: i64,
    revoked: bool,
}

struct Inner {
    host: String,
    root: PathBuf,
    issuer: DevIssuer,
    /// (scope, identity) -> policy.
    policies: Mutex<BTreeMap<(String, String), TrustPolicy>>,
    tokens: Mutex<BTreeMap<String, Minted>>,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// A running GitHub stand-in.
pub struct GitHub {
    /// `https://127.0.0.1:PORT`.
    pub base_url: String,
    /// Directory of its bare repositories.
    pub root: PathBuf,
    inner: Arc<Inner>,
}

impl GitHub {
    /// Starts it over HTTPS with `ca`'s certificate, trusting ID tokens of `issuer`.
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        root: PathBuf,
        ca: &DevCa,
        issuer: &DevIssuer,
    ) -> Result<Self, String> {
        let listener = crate::loopback_listener().map_err(|e| e.to_string())?;
        let host = listener.local_addr().map_err(|e| e.to_string())?.to_string();
        let inner = Arc::new(Inner {
            host: host.clone(),
            root: root.clone(),
            issuer: issuer.clone(),
            policies: Mutex::default(),
            tokens: Mutex::default(),
            requests: Mutex::default(),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        crate::serve_tls(runtime, listener, ca, app)?;
        Ok(Self { base_url: format!("https://{host}"), root, inner })
    }

    /// `127.0.0.1:PORT`: octo-sts's domain, the audience its ID tokens must carry.
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// Its exchange endpoint.
    pub fn exchange_url(&self) -> String {
        format!("{}/sts/exchange", self.base_url)
    }

    /// Its revocation endpoint.
    pub fn revocation_url(&self) -> String {
        format!("{}/installation/token", self.base_url)
    }

    /// Creates a bare repository `path` (e.g. `org/app.git`).
    pub fn create_repo(&self, path: &str) -> Result<PathBuf, String> {
        crate::git_server::create_bare_repo(&self.root, path)
    }

    /// Registers the trust policy `.github/chainguard/IDENTITY.sts.yaml` of the repository
    /// `scope` (`org/app`).
    pub fn trust(&self, scope: &str, identity: &str, policy: TrustPolicy) {
        if let Ok(mut policies) = self.inner.policies.lock() {
            policies.insert((scope.to_owned(), identity.to_owned()), policy);
        }
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// How many installation tokens it has minted, and how many of them are revoked.
    pub fn minted(&self) -> (usize, usize) {
        let tokens = self.inner.tokens.lock().map(|t| t.clone()).unwrap_or_default();
        (tokens.len(), tokens.values().filter(|t| t.revoked).count())
    }
}

/// A grpc-gateway error: the HTTP status of the gRPC code, and octo-sts's message.
fn grpc_error(status: StatusCode, message: &str) -> Response {
    let code = match status {
        StatusCode::BAD_REQUEST => 3,
        StatusCode::NOT_FOUND => 5,
        StatusCode::FORBIDDEN => 7,
        StatusCode::TOO_MANY_REQUESTS => 8,
        StatusCode::UNAUTHORIZED => 16,
        _ => 13,
    };
    (status, axum::Json(json!({"code": code, "message": message, "details": []}))).into_response()
}

/// GitHub's REST error document.
fn rest_error(status: StatusCode, message: &str) -> Response {
    let body =
        json!({"message": message, "documentation_url": "https://docs.github.com/rest", "status": status.as_str()});
    (status, axum::Json(body)).into_response()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The claims of a JWT as it states them, unverified: for the record only.
fn stated_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

/// The credential of an `Authorization` value: its scheme and token (a Basic value's
/// password).
fn credential(value: &str) -> Option<(&'static str, String)> {
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(("Bearer", token.trim().to_owned()));
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(value.strip_prefix("Basic ")?.trim()).ok()?;
    let (user, password) =
        String::from_utf8(decoded).ok()?.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned()))?;
    (user == "x-access-token").then_some(("Basic", password))
}

fn authorization(headers: &HeaderMap) -> Option<(&'static str, String)> {
    credential(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

async fn handle(State(inner): State<Arc<Inner>>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, 64 << 20).await {
        Ok(body) => body,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n").into_response(),
    };
    record(&inner, &parts, &body);
    let path = parts.uri.path();
    if path == "/sts/exchange" && parts.method == Method::GET {
        return exchange(&inner, &parts.headers, parts.uri.query());
    }
    if path == "/installation/token" && parts.method == Method::DELETE {
        return revoke(&inner, &parts.headers);
    }
    git(&inner, parts, body).await
}

fn record(inner: &Inner, parts: &axum::http::request::Parts, body: &[u8]) {
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            let value = value.to_str().unwrap_or_default();
            let shown = if *name == header::AUTHORIZATION {
                credential(value).map_or_else(
                    || "unreadable".to_owned(),
                    |(scheme, token)| format!("{scheme} {}", mayfly_core::Fingerprint::of(&token)),
                )
            } else {
                value.to_owned()
            };
            (name.as_str().to_owned(), shown)
        })
        .collect();
    let id_token_audience = (parts.uri.path() == "/sts/exchange")
        .then(|| authorization(&parts.headers).and_then(|(_, token)| stated_claims(&token)?.get("aud").cloned()))
        .flatten();
    let request = RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers,
        body: body.to_vec(),
        id_token_audience,
    };
    if let Ok(mut requests) = inner.requests.lock() {
        requests.push(request);
    }
}

/// octo-sts's `Exchange`, in its order: the bearer token, its verification, the request,
/// the trust policy, the policy's checks, then the token.
fn exchange(inner: &Inner, headers: &HeaderMap, query: Option<&str>) -> Response {
    let Some(("Bearer", id_token)) = authorization(headers) else {
        return grpc_error(StatusCode::UNAUTHORIZED, "expected exactly one authorization header");
    };
    let Some(stated) = stated_claims(&id_token) else {
        return grpc_error(StatusCode::BAD_REQUEST, "invalid bearer token");
    };
    // octo-sts verifies signature, issuer and expiry first and the audience with the
    // trust policy; the stated `aud` passes the first check, the policy checks it below.
    let stated_audience = stated.get("aud").and_then(Value::as_str).unwrap_or_default();
    let claims = match inner.issuer.verify(&id_token, stated_audience) {
        Ok(claims) => claims,
        Err(_) => return grpc_error(StatusCode::UNAUTHORIZED, "unable to verify bearer token"),
    };
    let params: BTreeMap<String, String> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    let scope = params.get("scope").filter(|s| !s.is_empty());
    let Some(scope) = scope else { return grpc_error(StatusCode::BAD_REQUEST, "scope must be provided") };
    let identity = params.get("identity").filter(|s| !s.is_empty());
    let Some(identity) = identity else { return grpc_error(StatusCode::BAD_REQUEST, "identity must be provided") };
    let policy = inner.policies.lock().ok().and_then(|p| p.get(&(scope.clone(), identity.clone())).cloned());
    let Some(policy) = policy else {
        return grpc_error(StatusCode::NOT_FOUND, &format!("unable to find trust policy for {identity:?}"));
    };
    let issuer = claims["iss"].as_str().unwrap_or_default();
    let subject = claims["sub"].as_str().unwrap_or_default();
    if issuer != policy.issuer {
        let message = format!("trust policy: issuer {issuer:?} did not match {:?}", policy.issuer);
        return grpc_error(StatusCode::FORBIDDEN, &message);
    }
    let subject_matches = match (&policy.subject, &policy.subject_pattern) {
        (_, Some(pattern)) => regex::Regex::new(&format!("^(?:{pattern})$")).is_ok_and(|r| r.is_match(subject)),
        (Some(exact), None) => exact == subject,
        (None, None) => return grpc_error(StatusCode::INTERNAL_SERVER_ERROR, "trust policy: not compiled"),
    };
    if !subject_matches {
        let wanted = policy.subject_pattern.as_ref().or(policy.subject.as_ref()).cloned().unwrap_or_default();
        return grpc_error(
            StatusCode::FORBIDDEN,
            &format!("trust policy: subject {subject:?} did not match {wanted:?}"),
        );
    }
    if stated_audience != inner.host {
        let message = format!("trust policy: audience {:?} did not match any of [{stated_audience:?}]", inner.host);
        return grpc_error(StatusCode::FORBIDDEN, &message);
    }
    let token = format!("ghs_{}", crate::random_hex(18));
    let minted = Minted {
        repositories: vec![scope.clone()],
        permissions: policy.permissions.clone(),
        expires_at: now() + INSTALLATION_TOKEN_LIFETIME,
        revoked: false,
    };
    let Ok(mut tokens) = inner.tokens.lock() else {
        return grpc_error(StatusCode::INTERNAL_SERVER_ERROR, "failed to get token");
    };
    tokens.insert(token.clone(), minted);
    axum::Json(json!({"token": token})).into_response()
}

/// `DELETE /installation/token`: the token presented revokes itself.
fn revoke(inner: &Inner, headers: &HeaderMap) -> Response {
    let Some(("Bearer", token)) = authorization(headers) else {
        return rest_error(StatusCode::UNAUTHORIZED, "Requires authentication");
    };
    let Ok(mut tokens) = inner.tokens.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    match tokens.get_mut(&token) {
        Some(minted) if !minted.revoked && minted.expires_at > now() => {
            minted.revoked = true;
            StatusCode::NO_CONTENT.into_response()
        }
        _ => rest_error(StatusCode::UNAUTHORIZED, "Bad credentials"),
    }
}

/// git smart HTTP, as GitHub answers it: 401 without a live token, 403 for a token
/// without this repository or permission.
async fn git(inner: &Inner, parts: axum::http::request::Parts, body: axum::body::Bytes) -> Response {
    let Some((repo, write)) = crate::git_server::parse_request(parts.uri.path(), parts.uri.query(), &parts.method)
    else {
        return rest_error(StatusCode::NOT_FOUND, "Not Found");
    };
    let unauthorized = || {
        let mut response = (StatusCode::UNAUTHORIZED, "Invalid username or token.\n").into_response();
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"GitHub\""));
        response
    };
    let Some(("Basic", token)) = authorization(&parts.headers) else { return unauthorized() };
    let minted = inner.tokens.lock().ok().and_then(|t| t.get(&token).cloned());
    let Some(minted) = minted.filter(|m| !m.revoked && m.expires_at > now()) else { return unauthorized() };
    let contents = minted.permissions.iter().find(|(name, _)| name == "contents").map(|(_, level)| level.as_str());
    let allowed = minted.repositories.contains(&repo)
        && match contents {
            Some("write") => true,
            Some("read") => !write,
            _ => false,
        };
    if !allowed {
        let message = format!("Permission to {repo}.git denied to mayfly-dev[bot].\n");
        return (StatusCode::FORBIDDEN, message).into_response();
    }
    crate::git_server::serve_repository(&inner.root, &parts, Body::from(body), "x-access-token").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_bearer_or_x_access_token_basic() {
        assert_eq!(credential("Bearer ghs_a"), Some(("Bearer", "ghs_a".into())));
        let basic = |user_pass: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_pass));
        assert_eq!(credential(&basic("x-access-token:ghs_b")), Some(("Basic", "ghs_b".into())));
        assert_eq!(credential(&basic("someone:ghs_b")), None);
        assert_eq!(credential("Token ghs_c"), None);
    }

    #[test]
    fn errors_are_grpc_gateway_documents() {
        let response = grpc_error(StatusCode::NOT_FOUND, "unable to find trust policy for \"x\"");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
}
