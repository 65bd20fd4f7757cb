//! RubyGems.org on loopback HTTPS, as far as a trusted publisher meets it: the OIDC
//! exchange and `gem push`.
//!
//! - `POST /api/v1/oidc/trusted_publisher/exchange_token` with JSON `{"jwt": ID_TOKEN}`
//!   (rubygems/rubygems.org `app/controllers/api/v1/oidc/trusted_publisher_controller.rb`;
//!   the client side rubygems/configure-rubygems-credentials `src/oidc/trustedPublisher.ts`,
//!   audience `rubygems.org`). The ID token is verified against the development issuer's
//!   key, each `jti` once, and a trusted publisher must match its `repository` claim. 201
//!   `{"rubygems_api_key": "rubygems_<48 hex>", "name", "scopes": ["push_rubygem"], "gem":
//!   {"name"}, "expires_at"}`, valid 15 minutes, for the publisher's gem alone. No `jwt`
//!   is 400 `{"error": "Bad Request"}`; a token that does not verify or that no publisher
//!   matches is 404.
//! - `POST /api/v1/gems` with the gem as the body and the key as the whole `Authorization`
//!   value, as `gem push` sends it (rubygems/rubygems
//!   `lib/rubygems/commands/push_command.rb`): no live key is 401; a gem (its name read
//!   from the gem's own `metadata.gz`) other than the key's is 403; else 200
//!   `Successfully registered gem: NAME (VERSION)`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::recording::{now, record};
use crate::{DevCa, DevIssuer, RecordedRequest};

/// The audience RubyGems.org's trusted publishers expect.
pub const RUBYGEMS_AUDIENCE: &str = "rubygems.org";
/// The exchange's path.
const EXCHANGE_PATH: &str = "/api/v1/oidc/trusted_publisher/exchange_token";
/// How long its keys live.
const KEY_LIFETIME: i64 = 15 * 60;

#[derive(Default)]
struct Keys {
    /// Key -> (gem, expiry).
    keys: BTreeMap<String, (String, i64)>,
    used: BTreeSet<String>,
    /// Every key minted, in order.
    minted: Vec<String>,
    /// (gem, version) pushed.
    pushes: Vec<(String, String)>,
}

struct Inner {
    issuer: DevIssuer,
    /// `repository` claim -> the gem its publisher pushes.
    publishers: BTreeMap<String, String>,
    state: Mutex<Keys>,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// A running RubyGems.org stand-in.
pub struct RubygemsOrg {
    /// `https://127.0.0.1:PORT`, `gem push --host`.
    pub base_url: String,
    inner: Arc<Inner>,
}

impl RubygemsOrg {
    /// Starts it trusting `issuer`; `publishers` maps a `repository` claim to its gem.
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        ca: &DevCa,
        issuer: &DevIssuer,
        publishers: &[(&str, &str)],
    ) -> Result<Self, String> {
        let inner = Arc::new(Inner {
            issuer: issuer.clone(),
            publishers: publishers.iter().map(|(r, g)| ((*r).to_owned(), (*g).to_owned())).collect(),
            state: Mutex::default(),
            requests: Mutex::default(),
        });
        let base_url = crate::serve_on_loopback(runtime, ca, Router::new().fallback(handle).with_state(inner.clone()))?;
        Ok(Self { base_url, inner })
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> &str {
        self.base_url.trim_start_matches("https://")
    }

    /// Its exchange endpoint.
    pub fn exchange_url(&self) -> String {
        format!("{}{EXCHANGE_PATH}", self.base_url)
    }

    /// Every key minted so far, in order.
    pub fn minted(&self) -> Vec<String> {
        self.inner.state.lock().map(|s| s.minted.clone()).unwrap_or_default()
    }

    /// Gems pushed so far: (name, version).
    pub fn pushes(&self) -> Vec<(String, String)> {
        self.inner.state.lock().map(|s| s.pushes.clone()).unwrap_or_default()
    }

    /// Every request so far, in order (keys replaced by their fingerprints).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

async fn handle(State(inner): State<Arc<Inner>>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n").into_response();
    };
    record(&inner.requests, &parts, &body, "jwt");
    match (parts.method.clone(), parts.uri.path()) {
        (Method::POST, EXCHANGE_PATH) => exchange(&inner, &body),
        (Method::POST, "/api/v1/gems") => {
            let key = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
            push(&inner, key, &body)
        }
        _ => (StatusCode::NOT_FOUND, "Not Found\n").into_response(),
    }
}

fn exchange(inner: &Inner, body: &[u8]) -> Response {
    let Some(jwt) = serde_json::from_slice::<Value>(body).ok().and_then(|b| b["jwt"].as_str().map(str::to_owned))
    else {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "Bad Request"}))).into_response();
    };
    let not_found = || (StatusCode::NOT_FOUND, "Not Found\n").into_response();
    let Ok(claims) = inner.issuer.verify(&jwt, RUBYGEMS_AUDIENCE) else { return not_found() };
    let Some(gem) = claims["repository"].as_str().and_then(|r| inner.publishers.get(r)) else { return not_found() };
    let Ok(mut state) = inner.state.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    if !state.used.insert(claims["jti"].as_str().unwrap_or_default().to_owned()) {
        return not_found();
    }
    let key = format!("rubygems_{}", crate::random_hex(24));
    let expires = now() + KEY_LIFETIME;
    state.keys.insert(key.clone(), (gem.clone(), expires));
    state.minted.push(key.clone());
    let rfc3339 = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default()
    };
    let publisher = claims["repository"].as_str().unwrap_or_default();
    let body = json!({
        "rubygems_api_key": key,
        "name": format!("GitHub Actions {publisher} {}", rfc3339(claims["iat"].as_i64().unwrap_or_else(now))),
        "scopes": ["push_rubygem"],
        "gem": {"name": gem},
        "expires_at": rfc3339(expires),
    });
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

fn push(inner: &Inner, key: &str, gem: &[u8]) -> Response {
    let Ok(mut state) = inner.state.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    let Some((allowed, _)) = state.keys.get(key).filter(|(_, expires)| *expires > now()).cloned() else {
        return (StatusCode::UNAUTHORIZED, "Access Denied. Please sign up for an account at https://rubygems.org")
            .into_response();
    };
    let Some((name, version)) = gem_spec(gem) else {
        return (StatusCode::UNPROCESSABLE_ENTITY, "RubyGems.org cannot process this gem.").into_response();
    };
    if name != allowed {
        return (StatusCode::FORBIDDEN, "This API key cannot perform the specified action on this gem.")
            .into_response();
    }
    state.pushes.push((name.clone(), version.clone()));
    (StatusCode::OK, format!("Successfully registered gem: {name} ({version})")).into_response()
}

/// The name and version in a gem's `metadata.gz`: a gem is a tar holding it, gzipped YAML
/// of the specification.
fn gem_spec(gem: &[u8]) -> Option<(String, String)> {
    let mut offset = 0;
    while offset + 512 <= gem.len() {
        let header = &gem[offset..offset + 512];
        let name = String::from_utf8_lossy(header[..100].split(|b| *b == 0).next()?).into_owned();
        let size = std::str::from_utf8(&header[124..136]).ok()?.trim_matches(|c: char| c == '\0' || c == ' ');
        let size = usize::from_str_radix(size, 8).ok()?;
        let data = gem.get(offset + 512..offset + 512 + size)?;
        if name == "metadata.gz" {
            let mut yaml = String::new();
            flate2::read::GzDecoder::new(data).read_to_string(&mut yaml).ok()?;
            let field = |key: &str| {
                yaml.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim().trim_matches('"').to_owned())
            };
            // `version: !ruby/object:Gem::Version` is followed by its `  version: X` line.
            return Some((field("name: ")?, field("  version: ")?));
        }
        offset += 512 + size.div_ceil(512) * 512;
    }
    None
}
