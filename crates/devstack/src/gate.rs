//! The check every development resource server makes: a token minted by one `mayfly-sts`,
//! for this server's audience, not revoked, with the scope the request needs.

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::Value;

use crate::DevCa;

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

/// Verifies tokens against the exchange's JWKS.
pub(crate) struct TokenGate {
    audience: String,
    sts_issuer: String,
    jwks_url: String,
    client: reqwest::Client,
    jwks: tokio::sync::Mutex<Option<JwkSet>>,
    revoked: Arc<Mutex<Vec<String>>>,
}

impl TokenGate {
    pub(crate) fn new(audience: &str, sts_issuer: &str, ca: &DevCa) -> Result<Self, String> {
        let pem = std::fs::read(&ca.ca_cert).map_err(|e| e.to_string())?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| e.to_string())?;
        let client = reqwest::Client::builder().tls_certs_merge(certs).no_proxy().build().map_err(|e| e.to_string())?;
        Ok(Self {
            audience: audience.to_owned(),
            sts_issuer: sts_issuer.to_owned(),
            jwks_url: format!("{sts_issuer}/.well-known/jwks.json"),
            client,
            jwks: tokio::sync::Mutex::new(None),
            revoked: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// The shared revocation list (fingerprints).
    pub(crate) fn revoked(&self) -> Arc<Mutex<Vec<String>>> {
        self.revoked.clone()
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
        if self.revoked.lock().is_ok_and(|r| r.contains(&fingerprint)) {
            return Err(Refusal::Unauthorized("token has been revoked".into()));
        }
        let claims = self.verify(&token).await.map_err(Refusal::Unauthorized)?;
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
        validation.set_issuer(&[&self.sts_issuer]);
        validation.set_audience(&[&self.audience]);
        validation.leeway = 5;
        let data =
            jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| format!("token refused: {e}"))?;
        Ok(data.claims)
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
}
