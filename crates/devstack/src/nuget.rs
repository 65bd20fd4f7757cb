//! nuget.org on loopback, as far as a trusted publisher meets it: the token API and the
//! push API. Plain HTTP: the NuGet client that runs here (`nuget` 2.8, on Mono) trusts only
//! Mono's own certificate store, never a session's certificate authority, so its requests
//! reach `mayfly exec --proxy` as plain-HTTP proxy requests to a loopback gallery.
//!
//! - `POST /api/v2/token` with `Authorization: Bearer ID_TOKEN` and JSON `{"username",
//!   "tokenType": "ApiKey"}` (NuGet/NuGetGallery
//!   `src/NuGetGallery/Controllers/TokenApiController.cs`; the client NuGet/login
//!   `src/index.ts`, audience `https://www.nuget.org`). The checks in the gallery's order:
//!   a bearer token (else 401 with `WWW-Authenticate: Bearer`), `application/json` (415),
//!   a `User-Agent` (400), a `username` (400), `tokenType` `ApiKey` (400). The ID token is
//!   verified against the development issuer's key and audience, each `jti` once (NuGet
//!   docs `nuget-org/trusted-publishing.md`: "one token, one API key"), and a policy must
//!   match the user and the `repository` claim; else 401. 200 `{"tokenType": "ApiKey",
//!   "expires", "apiKey"}`, the key valid an hour for the policy's packages. Errors are
//!   `{"error": MESSAGE}` with the message as the reason phrase too, as the gallery does.
//! - `PUT /api/v2/package` with the key as `X-NuGet-ApiKey` and the `.nupkg` as a
//!   multipart form part, as `nuget push` sends it: no live key, or a package (its id read
//!   from the `.nuspec` inside) the key does not cover, is 403 with nuget.org's reason
//!   phrase; else 201.
//! - `GET /` (the source probe `nuget push` 2.8 sends first) and `GET /v3/index.json`,
//!   a service index whose `PackagePublish/2.0.0` resource is the push URL.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::recording::{now, record, stated_claims};
use crate::{DevIssuer, RecordedRequest};

/// The audience nuget.org's trusted publishing expects.
pub const NUGET_AUDIENCE: &str = "https://www.nuget.org";
/// The token API's path.
const TOKEN_PATH: &str = "/api/v2/token";
/// How long its keys live.
const KEY_LIFETIME: i64 = 60 * 60;
/// What nuget.org answers a push whose key is unknown, expired or not the package's.
pub const NUGET_KEY_REFUSED: &str =
    "The specified API key is invalid, has expired, or does not have permission to access the specified package.";

#[derive(Default)]
struct Keys {
    /// Key -> (package ids, expiry).
    keys: BTreeMap<String, (BTreeSet<String>, i64)>,
    used: BTreeSet<String>,
    /// Every key minted, in order.
    minted: Vec<String>,
    /// (id, version) pushed.
    pushes: Vec<(String, String)>,
}

struct Inner {
    base_url: String,
    issuer: DevIssuer,
    /// (user, `repository` claim) -> the package ids its policy pushes.
    policies: BTreeMap<(String, String), BTreeSet<String>>,
    state: Mutex<Keys>,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// A running nuget.org stand-in.
pub struct NugetGallery {
    /// `http://127.0.0.1:PORT`: the push source, and the token API's origin.
    pub base_url: String,
    inner: Arc<Inner>,
}

/// A trusted publishing policy: its creator, the `repository` it trusts, its package ids.
pub type NugetPolicy<'a> = (&'a str, &'a str, &'a [&'a str]);

impl NugetGallery {
    /// Starts it trusting `issuer`, with these policies.
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        issuer: &DevIssuer,
        policies: &[NugetPolicy<'_>],
    ) -> Result<Self, String> {
        let listener = crate::loopback_listener().map_err(|e| e.to_string())?;
        let base_url = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
        let inner = Arc::new(Inner {
            base_url: base_url.clone(),
            issuer: issuer.clone(),
            policies: policies
                .iter()
                .map(|(user, repository, ids)| {
                    (
                        ((*user).to_owned(), (*repository).to_owned()),
                        ids.iter().map(|i| i.to_ascii_lowercase()).collect(),
                    )
                })
                .collect(),
            state: Mutex::default(),
            requests: Mutex::default(),
        });
        let _guard = runtime.enter();
        let server = axum_server::from_tcp(listener).map_err(|e| e.to_string())?;
        runtime.spawn(server.serve(Router::new().fallback(handle).with_state(inner.clone()).into_make_service()));
        Ok(Self { base_url, inner })
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> &str {
        self.base_url.trim_start_matches("http://")
    }

    /// Every key minted so far, in order.
    pub fn minted(&self) -> Vec<String> {
        self.inner.state.lock().map(|s| s.minted.clone()).unwrap_or_default()
    }

    /// Packages pushed so far: (id, version).
    pub fn pushes(&self) -> Vec<(String, String)> {
        self.inner.state.lock().map(|s| s.pushes.clone()).unwrap_or_default()
    }

    /// Every request so far, in order (keys and ID tokens replaced by their fingerprints;
    /// a token request's `id_token_audience` is its bearer token's).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

async fn handle(State(inner): State<Arc<Inner>>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n").into_response();
    };
    record(&inner.requests, &parts, &body, "");
    let bearer = bearer(&parts.headers);
    if let Some(token) = &bearer
        && let Ok(mut requests) = inner.requests.lock()
        && let Some(last) = requests.last_mut()
    {
        last.id_token_audience = stated_claims(token).and_then(|c| c.get("aud").cloned());
    }
    match (parts.method.clone(), parts.uri.path()) {
        (Method::POST, TOKEN_PATH) => token(&inner, &parts.headers, bearer.as_deref(), &body),
        (Method::PUT, "/api/v2/package" | "/api/v2/package/") => push(&inner, &parts.headers, &body),
        (Method::GET | Method::HEAD, "/") => (StatusCode::OK, "nuget gallery stand-in\n").into_response(),
        (Method::GET, "/v3/index.json") => axum::Json(json!({
            "version": "3.0.0",
            "resources": [{"@id": format!("{}/api/v2/package", inner.base_url), "@type": "PackagePublish/2.0.0"}],
        }))
        .into_response(),
        _ => (StatusCode::NOT_FOUND, "Not Found\n").into_response(),
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim().to_owned())
}

/// The gallery's error: `{"error"}`, and the message as the reason phrase.
fn error(status: StatusCode, message: &str) -> Response {
    let mut response = (status, axum::Json(json!({ "error": message }))).into_response();
    if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(message.as_bytes().to_vec()) {
        response.extensions_mut().insert(phrase);
    }
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    }
    response
}

fn token(inner: &Inner, headers: &HeaderMap, bearer: Option<&str>, body: &[u8]) -> Response {
    let Some(jwt) = bearer else {
        return error(StatusCode::UNAUTHORIZED, "The Authorization header is missing.");
    };
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.split(';').next().unwrap_or_default().trim().eq_ignore_ascii_case("application/json"));
    if !json_type {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "The request must have a Content-Type of 'application/json'.",
        );
    }
    if headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).is_none_or(|v| v.trim().is_empty()) {
        return error(StatusCode::BAD_REQUEST, "A User-Agent header is required.");
    }
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Some(user) = request["username"].as_str().filter(|u| !u.trim().is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "The username property in the request body is required.");
    };
    if request["tokenType"] != "ApiKey" {
        return error(
            StatusCode::BAD_REQUEST,
            "The tokenType property in the request body is required and must set to 'ApiKey'.",
        );
    }
    let unauthorized = |why: &str| error(StatusCode::UNAUTHORIZED, why);
    let claims = match inner.issuer.verify(jwt, NUGET_AUDIENCE) {
        Ok(claims) => claims,
        Err(e) => return unauthorized(&format!("The bearer token could not be validated: {e}")),
    };
    let repository = claims["repository"].as_str().unwrap_or_default();
    let Some(packages) = inner.policies.get(&(user.to_owned(), repository.to_owned())) else {
        return unauthorized("No matching trusted publishing policy was found.");
    };
    let Ok(mut state) = inner.state.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    if !state.used.insert(claims["jti"].as_str().unwrap_or_default().to_owned()) {
        return unauthorized("The bearer token has already been used.");
    }
    let key = format!("oy2{}", crate::random_hex(23));
    let expires = now() + KEY_LIFETIME;
    state.keys.insert(key.clone(), (packages.clone(), expires));
    state.minted.push(key.clone());
    let expires = time::OffsetDateTime::from_unix_timestamp(expires)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default();
    axum::Json(json!({"tokenType": "ApiKey", "expires": expires, "apiKey": key})).into_response()
}

fn push(inner: &Inner, headers: &HeaderMap, body: &[u8]) -> Response {
    let refused = || error(StatusCode::FORBIDDEN, NUGET_KEY_REFUSED);
    let key = headers.get("x-nuget-apikey").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let Ok(mut state) = inner.state.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    let Some((packages, _)) = state.keys.get(key).filter(|(_, expires)| *expires > now()).cloned() else {
        return refused();
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let Some((id, version)) = form_file(content_type, body).and_then(|nupkg| nuspec_id(&nupkg)) else {
        return error(StatusCode::BAD_REQUEST, "The package is not a valid .nupkg.");
    };
    if !packages.contains(&id.to_ascii_lowercase()) {
        return refused();
    }
    state.pushes.push((id, version));
    StatusCode::CREATED.into_response()
}

/// The first part of a multipart form: the `.nupkg` `nuget push` sends.
fn form_file(content_type: &str, body: &[u8]) -> Option<Vec<u8>> {
    let boundary = content_type.split(';').find_map(|p| p.trim().strip_prefix("boundary="))?.trim_matches('"');
    let delimiter = format!("--{boundary}").into_bytes();
    let find = |hay: &[u8], needle: &[u8], from: usize| {
        hay.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|i| i + from)
    };
    let start = find(body, &delimiter, 0)? + delimiter.len();
    let head_end = find(body, b"\r\n\r\n", start)? + 4;
    // The line break before the closing delimiter: CRLF by RFC 7578, a bare LF from
    // `nuget` 2.8 on Mono.
    let end = find(body, &delimiter, head_end)?;
    let part = &body[head_end..end];
    let part = part.strip_suffix(b"\n").unwrap_or(part);
    Some(part.strip_suffix(b"\r").unwrap_or(part).to_vec())
}

/// The id and version in a `.nupkg`'s `.nuspec`: a zip, read through its central directory
/// (NuGet writes sizes after the data, so the local headers may hold none).
fn nuspec_id(zip: &[u8]) -> Option<(String, String)> {
    let u16_at = |at: usize| zip.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at = |at: usize| zip.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let end = (0..zip.len().saturating_sub(21)).rev().find(|&i| zip[i..].starts_with(b"PK\x05\x06"))?;
    let (count, mut at) = (u16_at(end + 10)?, u32_at(end + 16)?);
    for _ in 0..count {
        if !zip.get(at..)?.starts_with(b"PK\x01\x02") {
            return None;
        }
        let (method, size, name_len) = (u16_at(at + 10)?, u32_at(at + 20)?, u16_at(at + 28)?);
        let name = zip.get(at + 46..at + 46 + name_len)?;
        let local = u32_at(at + 42)?;
        at += 46 + name_len + u16_at(at + 30)? + u16_at(at + 32)?;
        if name.contains(&b'/') || !name.ends_with(b".nuspec") {
            continue;
        }
        let data_at = local + 30 + u16_at(local + 26)? + u16_at(local + 28)?;
        let data = zip.get(data_at..data_at + size)?;
        let mut xml = String::new();
        match method {
            0 => xml = String::from_utf8_lossy(data).into_owned(),
            8 => {
                flate2::read::DeflateDecoder::new(data).read_to_string(&mut xml).ok()?;
            }
            _ => return None,
        }
        let field = |tag: &str| {
            let open = format!("<{tag}>");
            let start = xml.find(&open)? + open.len();
            Some(xml[start..start + xml[start..].find('<')?].trim().to_owned())
        };
        return Some((field("id")?, field("version")?));
    }
    None
}
