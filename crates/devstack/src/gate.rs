//! The check every development resource server makes: a token minted by one `mayfly-sts`,
//! for this server's audience, not revoked, with the scope the request needs.
//!
//! The signature and claims are checked locally; revocation is asked of the exchange's
//! introspection endpoint on every request, uncached, so a revoked token stops working at
//! once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::Value;

use crate::DevCa;

/// How long a resource server waits for the exchange's introspection answer.
const INTROSPECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// The exchange a development resource server trusts, and the client it introspects
/// tokens as (configured in the exchange's `[[introspection_clients]]`).
#[derive(Clone, Debug)]
pub struct StsClient {
    /// The exchange's issuer URL (`iss` of its tokens, base of its endpoints).
    pub issuer: String,
    /// The introspection client id.
    pub client_id: String,
    /// The introspection client secret.
    pub client_secret: mayfly_core::Secret,
}

impl StsClient {
    /// A client with a fresh random secret.
    pub fn generate(issuer: &str, client_id: &str) -> Self {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS random source is available");
        Self {
            issuer: issuer.trim_end_matches('/').to_owned(),
            client_id: client_id.to_owned(),
            client_secret: mayfly_core::Secret::new(hex::encode(bytes)),
        }
    }

    /// The exchange's `[[introspection_clients]]` entry for this client.
    pub fn config_entry(&self) -> mayfly_sts::IntrospectionClientEntry {
        use sha2::Digest;
        let secret_sha256 = hex::encode(sha2::Sha256::digest(self.client_secret.expose()));
        mayfly_sts::IntrospectionClientEntry { id: self.client_id.clone(), secret_sha256 }
    }
}

/// Why a request was refused.
pub(crate) enum Refusal {
    /// No token, or not one this server accepts: 401 with a challenge.
    Unauthorized(String),
    /// A valid token without the scope the request needs: 403.
    Forbidden(String),
}

impl Refusal {
    /// The plain-text response, with `WWW-Authenticate` challenges on a 401.
    pub(crate) fn into_response(self, realm: &'static str) -> Response {
        match self {
            Self::Unauthorized(message) => {
                let mut response = (StatusCode::UNAUTHORIZED, format!("{message}\n")).into_response();
                let headers = response.headers_mut();
                for scheme in ["Bearer", "Basic"] {
                    if let Ok(value) = HeaderValue::from_str(&format!("{scheme} realm=\"{realm}\"")) {
                        headers.append(header::WWW_AUTHENTICATE, value);
                    }
                }
                response
            }
            Self::Forbidden(message) => (StatusCode::FORBIDDEN, format!("{message}\n")).into_response(),
        }
    }
}

/// Verifies tokens against the exchange's JWKS, then asks the exchange whether they are
/// still active.
pub(crate) struct TokenGate {
    audience: String,
    sts: StsClient,
    jwks_url: String,
    introspection_url: String,
    client: reqwest::Client,
    jwks: tokio::sync::Mutex<Option<JwkSet>>,
    refused: Arc<Mutex<Vec<String>>>,
}

impl TokenGate {
    pub(crate) fn new(audience: &str, sts: &StsClient, ca: &DevCa) -> Result<Self, String> {
        let pem = std::fs::read(&ca.ca_cert).map_err(|e| e.to_string())?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| e.to_string())?;
        let client = reqwest::Client::builder().tls_certs_merge(certs).no_proxy().build().map_err(|e| e.to_string())?;
        Ok(Self {
            audience: audience.to_owned(),
            jwks_url: format!("{}/.well-known/jwks.json", sts.issuer),
            introspection_url: format!("{}/introspect", sts.issuer),
            sts: sts.clone(),
            client,
            jwks: tokio::sync::Mutex::new(None),
            refused: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// Fingerprints of tokens this server alone refuses from now on, whatever the exchange
    /// says (tests use it to make a server reject a token the client still holds).
    pub(crate) fn refused(&self) -> Arc<Mutex<Vec<String>>> {
        self.refused.clone()
    }

    /// The token's claims when it may do what `scope` names.
    pub(crate) async fn check(&self, headers: &HeaderMap, scope: &str) -> Result<Value, Refusal> {
        self.check_with(headers, scope, |granted| granted == scope).await
    }

    /// The token's claims when one of its scopes satisfies `allows` (`wanted` names what
    /// was needed, for the refusal).
    pub(crate) async fn check_with(
        &self,
        headers: &HeaderMap,
        wanted: &str,
        allows: impl Fn(&str) -> bool,
    ) -> Result<Value, Refusal> {
        let token = presented_token(headers).ok_or_else(|| Refusal::Unauthorized("authentication required".into()))?;
        let fingerprint = mayfly_core::Fingerprint::of(&token).to_string();
        if self.refused.lock().is_ok_and(|r| r.contains(&fingerprint)) {
            return Err(Refusal::Unauthorized("token has been revoked".into()));
        }
        let claims = self.verify(&token).await.map_err(Refusal::Unauthorized)?;
        if !self.active(&token).await.map_err(Refusal::Unauthorized)? {
            return Err(Refusal::Unauthorized("token has been revoked".into()));
        }
        let scopes = claims.get("scope").and_then(Value::as_str).unwrap_or("");
        if !scopes.split_whitespace().any(allows) {
            return Err(Refusal::Forbidden(format!("token does not allow `{wanted}`")));
        }
        Ok(claims)
    }

    async fn verify(&self, token: &str) -> Result<Value, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "token is not a JWT".to_owned())?;
        let kid = header.kid.ok_or("token has no kid")?;
        let mut jwks = self.jwks.lock().await;
        if jwks.as_ref().is_none_or(|set| set.find(&kid).is_none()) {
            let fetched =
                self.client.get(&self.jwks_url).send().await.map_err(|e| format!("cannot fetch JWKS: {e}"))?;
            *jwks = Some(fetched.json().await.map_err(|e| format!("bad JWKS: {e}"))?);
        }
        let jwk = jwks.as_ref().and_then(|set| set.find(&kid)).ok_or("token signed by an unknown key")?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
        let mut validation = Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.set_issuer(&[&self.sts.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.leeway = 5;
        let data =
            jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| format!("token refused: {e}"))?;
        Ok(data.claims)
    }

    /// The exchange's word on a token that verified: RFC 7662 `active`. No answer refuses.
    async fn active(&self, token: &str) -> Result<bool, String> {
        let unavailable = |e: &dyn std::fmt::Display| format!("cannot check the token with the exchange: {e}");
        let response = self
            .client
            .post(&self.introspection_url)
            .basic_auth(&self.sts.client_id, Some(self.sts.client_secret.expose()))
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .timeout(INTROSPECTION_TIMEOUT)
            .send()
            .await
            .map_err(|e| unavailable(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(unavailable(&status));
        }
        let answer: Value = response.json().await.map_err(|e| unavailable(&e))?;
        answer.get("active").and_then(Value::as_bool).ok_or_else(|| unavailable(&"no `active` in its answer"))
    }
}

/// The token from `Bearer X` or `Basic base64(user:X)`.
fn presented_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(token.trim().to_owned());
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(value.strip_prefix("Basic ")?.trim()).ok()?;
    let (_user, token) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some(token.to_owned())
}

/// A file a [`GatedFiles`] server answers: its content type, the scope a token must
/// grant to read it, and its bytes.
pub(crate) struct GatedFile {
    pub content_type: &'static str,
    pub scope: String,
    pub body: Vec<u8>,
}

/// An HTTPS server of fixed files, each behind the token gate: the shape of a package
/// index or a module proxy. It records the paths it served and counts its refusals.
pub(crate) struct GatedFiles {
    /// `https://127.0.0.1:PORT`.
    pub base_url: String,
    served: Arc<Mutex<Vec<String>>>,
    refused: Arc<std::sync::atomic::AtomicUsize>,
}

struct GatedInner {
    gate: TokenGate,
    /// By path without the leading `/`.
    files: std::collections::BTreeMap<String, GatedFile>,
    /// The `realm` of the server's Bearer challenges.
    realm: &'static str,
    /// Turns a request path (without the leading `/`) into a key of `files`.
    key: fn(&str) -> String,
    served: Arc<Mutex<Vec<String>>>,
    refused: Arc<std::sync::atomic::AtomicUsize>,
}

impl GatedFiles {
    /// Starts the server over HTTPS with `ca`'s certificate, trusting tokens from `sts`.
    pub(crate) fn start(
        runtime: &tokio::runtime::Runtime,
        ca: &DevCa,
        sts: &StsClient,
        realm: &'static str,
        files: std::collections::BTreeMap<String, GatedFile>,
        key: fn(&str) -> String,
    ) -> Result<Self, String> {
        let listener = crate::loopback_listener().map_err(|e| e.to_string())?;
        let base_url = format!("https://{}", listener.local_addr().map_err(|e| e.to_string())?);
        let served = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let inner = Arc::new(GatedInner {
            gate: TokenGate::new(&base_url, sts, ca)?,
            files,
            realm,
            key,
            served: served.clone(),
            refused: refused.clone(),
        });
        crate::serve_tls(runtime, listener, ca, axum::Router::new().fallback(gated_file).with_state(inner))?;
        Ok(Self { base_url, served, refused })
    }

    /// The paths served so far, in order.
    pub(crate) fn served(&self) -> Vec<String> {
        self.served.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Requests answered 401 or 403 so far.
    pub(crate) fn refused(&self) -> usize {
        self.refused.load(std::sync::atomic::Ordering::SeqCst)
    }
}

async fn gated_file(
    axum::extract::State(inner): axum::extract::State<Arc<GatedInner>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let path = (inner.key)(uri.path().trim_start_matches('/'));
    let Some(file) = inner.files.get(&path) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    if let Err(refusal) = inner.gate.check(&headers, &file.scope).await {
        inner.refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        return refusal.into_response(inner.realm);
    }
    if let Ok(mut served) = inner.served.lock() {
        served.push(path);
    }
    ([("content-type", file.content_type)], file.body.clone()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_bearer_or_basic() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented_token(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc.def.ghi"));
        assert_eq!(presented_token(&headers).as_deref(), Some("abc.def.ghi"));
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("x-access-token:tok"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&basic).unwrap());
        assert_eq!(presented_token(&headers).as_deref(), Some("tok"));
    }

    #[test]
    fn a_generated_client_configures_the_exchange_without_its_secret() {
        let client = StsClient::generate("https://127.0.0.1:1/", "gate");
        assert_eq!(client.issuer, "https://127.0.0.1:1");
        let file = mayfly_sts::ConfigFile {
            issuer: "https://127.0.0.1:1".into(),
            introspection_clients: vec![client.config_entry()],
            ..Default::default()
        };
        let text = file.to_toml();
        assert!(!text.contains(client.client_secret.expose()), "{text}");
        let config = mayfly_sts::Config::parse(&text).unwrap();
        assert_eq!(config.introspection_clients[0].id, "gate");
        assert_ne!(StsClient::generate("https://x", "gate").client_secret.expose(), client.client_secret.expose());
    }
}
