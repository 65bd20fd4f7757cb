//! Verifying subject tokens: OIDC discovery, JWKS, signature and registered claims.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation, errors::ErrorKind};
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use crate::config::TrustedIssuer;

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
const LEEWAY_SECS: u64 = 30;
/// Largest discovery document or JWKS accepted.
const MAX_DOCUMENT: usize = 256 * 1024;
/// A JWKS is re-fetched for an unknown `kid` at most this often.
const REFETCH_AFTER: Duration = Duration::from_secs(10);
/// A JWKS is re-fetched anyway after this long, to follow key rotation.
const JWKS_MAX_AGE: Duration = Duration::from_secs(300);

/// A verified subject token.
#[derive(Clone, Debug)]
pub struct VerifiedSubject {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// Every claim.
    pub claims: Map<String, Value>,
}

/// Why a subject token was refused; the reason is safe to return to the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct Rejection(pub String);

/// Longest subject token lifetime accepted when the issuer's config names none.
const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

struct IssuerState {
    config: TrustedIssuer,
    max_lifetime: Duration,
    client: reqwest::Client,
    jwks: Mutex<Option<Jwks>>,
}

/// An issuer's JWKS as fetched, each key made ready for verifying once, when fetched.
struct Jwks {
    at: Instant,
    /// Each key's `kid`, and its decoding key (none when the JWK is unusable).
    keys: Vec<(Option<String>, Option<Arc<DecodingKey>>)>,
}

impl Jwks {
    fn new(set: JwkSet) -> Self {
        let keys = set
            .keys
            .iter()
            .map(|jwk| (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk).ok().map(Arc::new)))
            .collect();
        Self { at: Instant::now(), keys }
    }

    /// The key `kid` names (the first that has it), else the only key when there is no
    /// `kid`: `Some(None)` when that key is unusable.
    fn find(&self, kid: Option<&str>) -> Option<Option<Arc<DecodingKey>>> {
        match kid {
            Some(kid) => self.keys.iter().find(|(id, _)| id.as_deref() == Some(kid)).map(|(_, key)| key.clone()),
            None if self.keys.len() == 1 => self.keys.first().map(|(_, key)| key.clone()),
            None => None,
        }
    }
}

/// Verifies subject tokens against the trusted issuers.
pub struct Verifier {
    issuers: Vec<IssuerState>,
}

impl Verifier {
    /// A verifier for these issuers.
    pub fn new(issuers: Vec<TrustedIssuer>) -> Result<Self, String> {
        let issuers = issuers
            .into_iter()
            .map(|config| {
                let client = issuer_client(&config)?;
                let max_lifetime = match &config.max_lifetime {
                    Some(text) => mayfly_core::parse_duration(text)
                        .map_err(|e| format!("trusted issuer `{}`: max_lifetime: {e}", config.issuer))?,
                    None => DEFAULT_MAX_LIFETIME,
                };
                Ok(IssuerState { config, max_lifetime, client, jwks: Mutex::new(None) })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { issuers })
    }

    /// Verifies a compact JWS subject token.
    pub async fn verify(&self, token: &str) -> Result<VerifiedSubject, Rejection> {
        let reject = |m: &str| Err(Rejection(m.to_owned()));
        let parts: Vec<&str> = token.split('.').collect();
        if parts.len() != 3 {
            return reject("subject token is not a signed JWT");
        }
        let header: Value =
            decode_part(parts[0]).ok_or_else(|| Rejection("subject token header is not JSON".into()))?;
        let algorithm = match header.get("alg").and_then(Value::as_str) {
            Some("RS256") => jsonwebtoken::Algorithm::RS256,
            Some("ES256") => jsonwebtoken::Algorithm::ES256,
            Some(alg) if alg.eq_ignore_ascii_case("none") => {
                return reject("subject token alg `none` is not allowed");
            }
            Some(alg) => {
                return Err(Rejection(format!("subject token alg `{}` is not allowed (RS256 or ES256)", clean(alg))));
            }
            None => return reject("subject token has no alg"),
        };
        // The payload is decoded once, here: the signature and registered claims are checked
        // below against the same bytes, and these claims are the ones returned.
        let payload: Value =
            decode_part(parts[1]).ok_or_else(|| Rejection("subject token payload is not JSON".into()))?;
        let issuer =
            payload.get("iss").and_then(Value::as_str).ok_or_else(|| Rejection("subject token has no `iss`".into()))?;
        let state = self
            .issuers
            .iter()
            .find(|s| s.config.issuer == issuer)
            .ok_or_else(|| Rejection(format!("subject token issuer `{}` is not trusted", clean(issuer))))?;
        let kid = header.get("kid").and_then(Value::as_str);
        let key = state.key(kid).await?;
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&state.config.issuer]);
        validation.set_audience(&state.config.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        jsonwebtoken::decode::<serde::de::IgnoredAny>(token, &key, &validation).map_err(|e| {
            Rejection(match e.kind() {
                ErrorKind::ExpiredSignature => "subject token has expired".into(),
                ErrorKind::ImmatureSignature => "subject token is not valid yet (`nbf` in the future)".into(),
                ErrorKind::InvalidAudience => {
                    format!("subject token audience is wrong (want one of: {})", state.config.audiences.join(", "))
                }
                ErrorKind::InvalidIssuer => "subject token issuer is wrong".into(),
                ErrorKind::InvalidSignature => "subject token signature does not verify".into(),
                ErrorKind::InvalidAlgorithm => "subject token alg does not match the issuer's key".into(),
                ErrorKind::MissingRequiredClaim(c) => {
                    format!("subject token has no `{}`", clean(c))
                }
                _ => "subject token is malformed".into(),
            })
        })?;
        // It has an `iss`, so it is an object.
        let Value::Object(claims) = payload else { return reject("subject token is malformed") };
        state.check_times(&claims)?;
        let subject = claims.get("sub").and_then(Value::as_str).unwrap_or_default().to_owned();
        Ok(VerifiedSubject { issuer: state.config.issuer.clone(), subject, claims })
    }
}

impl IssuerState {
    /// `iat` no later than now (with the leeway), and a lifetime within the issuer's
    /// maximum, counted from `iat` (else `nbf`, else now).
    fn check_times(&self, claims: &Map<String, Value>) -> Result<(), Rejection> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let leeway = i64::try_from(LEEWAY_SECS).unwrap_or(0);
        let number = |name: &str| claims.get(name).and_then(Value::as_i64);
        let issued = number("iat");
        if issued.is_some_and(|iat| iat > now + leeway) {
            return Err(Rejection("subject token is issued in the future (`iat`)".into()));
        }
        let exp = number("exp").unwrap_or(i64::MAX);
        let start = issued.or_else(|| number("nbf")).unwrap_or(now);
        let max = i64::try_from(self.max_lifetime.as_secs()).unwrap_or(i64::MAX);
        if exp.saturating_sub(start) > max {
            return Err(Rejection(format!(
                "subject token lives longer than the {}s this issuer's tokens may (`max_lifetime`)",
                self.max_lifetime.as_secs()
            )));
        }
        Ok(())
    }

    async fn key(&self, kid: Option<&str>) -> Result<Arc<DecodingKey>, Rejection> {
        let usable =
            |key: Option<Arc<DecodingKey>>| key.ok_or_else(|| Rejection("issuer's JWKS key is unusable".into()));
        let mut cached = self.jwks.lock().await;
        let stale = cached.as_ref().is_none_or(|jwks| jwks.at.elapsed() > JWKS_MAX_AGE);
        if stale {
            *cached = Some(Jwks::new(self.fetch_jwks().await?));
        }
        if let Some(key) = cached.as_ref().and_then(|jwks| jwks.find(kid)) {
            return usable(key);
        }
        if kid.is_none() {
            return Err(Rejection("subject token has no `kid` and the issuer has several keys".into()));
        }
        // An unknown kid may mean the issuer rotated keys: re-fetch, but not too often.
        if cached.as_ref().is_some_and(|jwks| jwks.at.elapsed() > REFETCH_AFTER) {
            *cached = Some(Jwks::new(self.fetch_jwks().await?));
            if let Some(key) = cached.as_ref().and_then(|jwks| jwks.find(kid)) {
                return usable(key);
            }
        }
        Err(Rejection(format!(
            "subject token signing key `{}` is unknown to its issuer",
            clean(kid.unwrap_or_default())
        )))
    }

    async fn fetch_jwks(&self) -> Result<JwkSet, Rejection> {
        let fetched = self.fetch_jwks_once().await;
        crate::metrics::jwks_fetch(&self.config.issuer, fetched.is_ok());
        fetched
    }

    async fn fetch_jwks_once(&self) -> Result<JwkSet, Rejection> {
        let jwks_uri = match &self.config.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let url = format!("{}/.well-known/openid-configuration", self.config.issuer.trim_end_matches('/'));
                let discovery: Value = self.get_json(&url).await?;
                if discovery.get("issuer").and_then(Value::as_str) != Some(self.config.issuer.as_str()) {
                    return Err(Rejection("issuer's discovery document names another issuer".into()));
                }
                discovery
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Rejection("issuer's discovery document has no `jwks_uri`".into()))?
                    .to_owned()
            }
        };
        self.get_json(&jwks_uri).await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, Rejection> {
        let unreachable = || Rejection(format!("cannot fetch keys of issuer `{}`", self.config.issuer));
        if !is_https_or_loopback(url) {
            return Err(Rejection(format!("issuer `{}` keys must be served over https", self.config.issuer)));
        }
        let response = self.client.get(url).send().await.map_err(|_| unreachable())?;
        read_json(response).await.ok_or_else(unreachable)
    }
}

/// An HTTP client for reaching a trusted issuer: its extra CA, no redirects, no proxy.
pub(crate) fn issuer_client(config: &TrustedIssuer) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| e.to_string())?;
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().map_err(|e| e.to_string())
}

/// Whether a URL is `https`, or `http` on loopback.
pub(crate) fn is_https_or_loopback(url: &str) -> bool {
    url::Url::parse(url)
        .is_ok_and(|u| u.scheme() == "https" || (u.scheme() == "http" && mayfly_core::is_loopback_url(&u)))
}

/// A successful answer's JSON body of at most [`MAX_DOCUMENT`] bytes.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(mut response: reqwest::Response) -> Option<T> {
    if !response.status().is_success() {
        return None;
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.ok()? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_DOCUMENT {
            return None;
        }
    }
    serde_json::from_slice(&body).ok()
}

pub(crate) fn decode_part(part: &str) -> Option<Value> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
}

/// Values from tokens go back to clients and logs: no control characters, bounded.
fn clean(value: &str) -> String {
    mayfly_core::sanitize_for_terminal(value).chars().take(120).collect()
}
