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
//! - GitHub REST, "Get a repository installation for the authenticated app":
//!   `GET /repos/{owner}/{repo}/installation` with `Authorization: Bearer APP_JWT`; 200 the
//!   installation, 404 `{"message": "Not Found"}` when the App is not installed there.
//! - GitHub REST, "Create an installation access token for an app":
//!   `POST /app/installations/{id}/access_tokens` with the app JWT and optional
//!   `repositories` (names) and `permissions`; 201 `{"token", "expires_at", "permissions",
//!   "repository_selection", "repositories"}`; 422 for a repository or a permission the
//!   installation does not have. The app JWT is verified for real (RS256 against the App's
//!   public key, `iss` the app id, `exp` in the future, `exp - iat` at most 600 s): 401
//!   otherwise, as GitHub answers.
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
    /// For the App endpoints: the claims of the app JWT presented, as the token says.
    pub app_jwt_claims: Option<Value>,
}

impl RecordedRequest {
    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
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

/// A GitHub App installation: on which repositories, with which permissions.
#[derive(Clone, Debug)]
struct Installation {
    id: u64,
    app_id: String,
    account: String,
    repositories: Vec<String>,
    permissions: BTreeMap<String, String>,
}

/// The answer to every App request while GitHub is failing: status and headers.
type Fault = (u16, Vec<(String, String)>);

struct Inner {
    host: String,
    /// App id -> its public key.
    apps: Mutex<BTreeMap<String, jsonwebtoken::DecodingKey>>,
    installations: Mutex<Vec<Installation>>,
    fault: Mutex<Option<Fault>>,
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
            apps: Mutex::default(),
            installations: Mutex::default(),
            fault: Mutex::default(),
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

    /// Registers a GitHub App by its id and public key (PEM).
    pub fn register_app(&self, app_id: &str, public_key_pem: &str) -> Result<(), String> {
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(public_key_pem.as_bytes()).map_err(|e| e.to_string())?;
        self.inner.apps.lock().map_err(|e| e.to_string())?.insert(app_id.to_owned(), key);
        Ok(())
    }

    /// Installs the App on repositories (`org/app`) of one account with these permissions;
    /// answers the installation id.
    pub fn install_app(&self, app_id: &str, repositories: &[&str], permissions: &[(&str, &str)]) -> u64 {
        let mut installations = self.inner.installations.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let id = 40_000 + installations.len() as u64 + 1;
        let account = repositories.first().and_then(|r| r.split_once('/')).map(|(a, _)| a).unwrap_or_default();
        installations.push(Installation {
            id,
            app_id: app_id.to_owned(),
            account: account.to_owned(),
            repositories: repositories.iter().map(|r| (*r).to_owned()).collect(),
            permissions: permissions.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        });
        id
    }

    /// Answers every App request (installation lookup or token) from now on with this
    /// status and these headers, as GitHub does when rate limiting or failing.
    pub fn fail_app_requests(&self, status: u16, headers: &[(&str, &str)]) {
        if let Ok(mut fault) = self.inner.fault.lock() {
            *fault = Some((status, headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()));
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
pub(crate) fn stated_claims(token: &str) -> Option<Value> {
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
    if let Some(repo) = path.strip_prefix("/repos/").and_then(|p| p.strip_suffix("/installation"))
        && parts.method == Method::GET
    {
        return app_request(&inner, &parts.headers, |app| repository_installation(&inner, app, repo));
    }
    if let Some(id) = path.strip_prefix("/app/installations/").and_then(|p| p.strip_suffix("/access_tokens"))
        && parts.method == Method::POST
    {
        return app_request(&inner, &parts.headers, |app| installation_token(&inner, app, id, &body));
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
    let app_path = parts.uri.path().starts_with("/app/") || parts.uri.path().starts_with("/repos/");
    let app_jwt_claims =
        app_path.then(|| authorization(&parts.headers).and_then(|(_, token)| stated_claims(&token))).flatten();
    let request = RecordedRequest {
        app_jwt_claims,
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

/// An App endpoint: the injected fault if any, else the app JWT verified, then `answer`.
fn app_request(inner: &Inner, headers: &HeaderMap, answer: impl FnOnce(&str) -> Response) -> Response {
    if let Some((status, fault_headers)) = inner.fault.lock().ok().and_then(|f| f.clone()) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = if status == StatusCode::FORBIDDEN || status == StatusCode::TOO_MANY_REQUESTS {
            "API rate limit exceeded for installation."
        } else {
            "Server Error"
        };
        let mut response = rest_error(status, message);
        for (name, value) in fault_headers {
            if let (Ok(name), Ok(value)) =
                (axum::http::HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value))
            {
                response.headers_mut().insert(name, value);
            }
        }
        return response;
    }
    match verify_app_jwt(inner, headers) {
        Ok(app) => answer(&app),
        Err(message) => rest_error(StatusCode::UNAUTHORIZED, message),
    }
}

/// The app id of a valid app JWT: RS256 by a registered App's key, `iss` its id (a number
/// or a string), `exp` in the future and at most 600 s after `iat`.
fn verify_app_jwt(inner: &Inner, headers: &HeaderMap) -> Result<String, &'static str> {
    let Some(("Bearer", token)) = authorization(headers) else {
        return Err("A JSON web token could not be decoded");
    };
    let stated = stated_claims(&token).ok_or("A JSON web token could not be decoded")?;
    let app_id = match &stated["iss"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return Err("'Issuer' claim ('iss') must be an Integer"),
    };
    let key = inner.apps.lock().ok().and_then(|apps| apps.get(&app_id).cloned());
    let Some(key) = key else { return Err("Integration not found") };
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    validation.validate_aud = false;
    validation.leeway = 0;
    let claims = jsonwebtoken::decode::<Value>(&token, &key, &validation)
        .map_err(|_| "A JSON web token could not be decoded")?
        .claims;
    let (Some(iat), Some(exp)) = (claims["iat"].as_i64(), claims["exp"].as_i64()) else {
        return Err("A JSON web token could not be decoded");
    };
    if exp - iat > 600 {
        return Err("'Expiration time' claim ('exp') is too far in the future");
    }
    if iat > now() + 60 {
        return Err("'Issued at' claim ('iat') must be an Integer representing a time in the past");
    }
    Ok(app_id)
}

/// "Get a repository installation for the authenticated app".
fn repository_installation(inner: &Inner, app: &str, repo: &str) -> Response {
    let installations = inner.installations.lock().map(|i| i.clone()).unwrap_or_default();
    let Some(installation) = installations.iter().find(|i| i.app_id == app && i.repositories.iter().any(|r| r == repo))
    else {
        return rest_error(StatusCode::NOT_FOUND, "Not Found");
    };
    axum::Json(json!({
        "id": installation.id,
        "app_id": app.parse::<u64>().map_or_else(|_| Value::from(app), Value::from),
        "account": {"login": installation.account, "type": "Organization"},
        "repository_selection": "selected",
        "permissions": installation.permissions,
        "access_tokens_url": format!("https://{}/app/installations/{}/access_tokens", inner.host, installation.id),
    }))
    .into_response()
}

/// "Create an installation access token for an app": for the repositories and permissions
/// asked (all of the installation's when none are), never more than it has.
fn installation_token(inner: &Inner, app: &str, id: &str, body: &[u8]) -> Response {
    let installations = inner.installations.lock().map(|i| i.clone()).unwrap_or_default();
    let Some(installation) = installations.iter().find(|i| i.id.to_string() == id && i.app_id == app) else {
        return rest_error(StatusCode::NOT_FOUND, "Not Found");
    };
    let asked: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(asked) => asked,
            Err(_) => return rest_error(StatusCode::BAD_REQUEST, "Problems parsing JSON"),
        }
    };
    let repositories: Vec<String> = match asked.get("repositories").and_then(Value::as_array) {
        Some(names) => {
            names.iter().map(|n| format!("{}/{}", installation.account, n.as_str().unwrap_or_default())).collect()
        }
        None => installation.repositories.clone(),
    };
    if repositories.iter().any(|r| !installation.repositories.contains(r)) {
        let message =
            "There is at least one repository that does not exist or is not accessible to the parent installation.";
        return rest_error(StatusCode::UNPROCESSABLE_ENTITY, message);
    }
    let rank = |level: &str| match level {
        "read" => 1,
        "write" => 2,
        "admin" => 3,
        _ => 99,
    };
    let permissions: BTreeMap<String, String> = match asked.get("permissions").and_then(Value::as_object) {
        Some(asked) => asked.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect(),
        None => installation.permissions.clone(),
    };
    let beyond = permissions
        .iter()
        .any(|(name, level)| installation.permissions.get(name).is_none_or(|has| rank(level) > rank(has)));
    if beyond {
        return rest_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The permissions requested are not granted to this installation.",
        );
    }
    let token = format!("ghs_{}", crate::random_hex(18));
    let expires_at = now() + INSTALLATION_TOKEN_LIFETIME;
    let minted = Minted {
        repositories: repositories.clone(),
        permissions: permissions.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        expires_at,
        revoked: false,
    };
    let Ok(mut tokens) = inner.tokens.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    tokens.insert(token.clone(), minted);
    let expires = time::OffsetDateTime::from_unix_timestamp(expires_at)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default();
    let repositories: Vec<Value> = repositories
        .iter()
        .map(|full| json!({"name": full.split_once('/').map_or(full.as_str(), |(_, n)| n), "full_name": full}))
        .collect();
    let body = json!({
        "token": token,
        "expires_at": expires,
        "permissions": permissions,
        "repository_selection": "selected",
        "repositories": repositories,
    });
    (StatusCode::CREATED, axum::Json(body)).into_response()
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
