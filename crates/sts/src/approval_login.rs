//! The approval page's sign-in: OpenID Connect authorization code with PKCE at the
//! `[approval_login]` provider, and the short login sessions it opens.
//!
//! A browser without a session is sent to the provider with `state`, `nonce` and an S256
//! code challenge; what the callback must match is kept here, under a random pre-login
//! cookie, so a callback the browser did not start fails. The callback's code is redeemed
//! with the verifier, the ID token verified as a subject token is (signature by the
//! issuer's JWKS, `iss`, `exp`), and its `aud` and `nonce` checked. The browser then holds
//! only an opaque random session id; the verified claims stay in this process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::Sts;
use crate::config::ApprovalLogin;
use crate::verify::{VerifiedSubject, is_https_or_loopback, issuer_client, read_json};

/// The pre-login cookie: names what a callback must match.
pub(crate) const LOGIN_COOKIE: &str = "__Host-mayfly-approval-login";
/// The session cookie: an opaque id of a signed-in approver.
pub(crate) const SESSION_COOKIE: &str = "__Host-mayfly-approval-session";
/// How long a sign-in at the provider may take.
const LOGIN_TTL: Duration = Duration::from_secs(600);
/// How long a signed-in approver may use the page before signing in again.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(15 * 60);
/// Most sign-ins under way, and most sessions, at once.
const MAX_ENTRIES: usize = 1_000;

/// What a callback must match, under its pre-login cookie.
struct Pending {
    state: String,
    nonce: String,
    verifier: String,
    /// The approval the browser asked for, to return to.
    approval: String,
    expires_at: Instant,
}

/// A signed-in approver.
#[derive(Clone)]
pub(crate) struct Session {
    pub(crate) token: VerifiedSubject,
    /// Every decision form carries it: a form posted from elsewhere does not know it.
    pub(crate) csrf: String,
    expires_at: Instant,
}

/// The provider's endpoints, from its discovery document.
#[derive(Clone)]
struct Endpoints {
    authorization: String,
    token: String,
}

/// The configured login and its state (in this process only).
pub(crate) struct Login {
    issuer: String,
    client_id: String,
    secret: Option<String>,
    scopes: String,
    redirect_uri: String,
    client: reqwest::Client,
    endpoints: tokio::sync::Mutex<Option<Endpoints>>,
    pending: Mutex<HashMap<String, Pending>>,
    sessions: Mutex<HashMap<String, Session>>,
}

/// Why a sign-in failed: said on the page, never with a secret in it.
#[derive(Debug)]
pub(crate) struct LoginError(pub(crate) String);

impl Login {
    /// The login `[approval_login]` configures, redirecting to `{base}/approve/callback`;
    /// the client secret is read now, from its file or variable.
    pub(crate) fn new(config: &ApprovalLogin, sts_config: &crate::Config) -> Result<Self, String> {
        let trusted = sts_config
            .trusted_issuers
            .iter()
            .find(|t| t.issuer == config.issuer)
            .ok_or_else(|| format!("approval_login: issuer `{}` is not in trusted_issuers", config.issuer))?;
        let secret = match (&config.client_secret_file, &config.client_secret_env) {
            (Some(path), _) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("approval_login: cannot read `{}`: {e}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            (None, Some(var)) => Some(
                std::env::var(var)
                    .map_err(|_| format!("approval_login: the environment variable `{var}` is not set"))?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        if secret.as_deref() == Some("") {
            return Err("approval_login: the client secret is empty".into());
        }
        Ok(Self {
            issuer: config.issuer.clone(),
            client_id: config.client_id.clone(),
            secret,
            scopes: config.scopes().to_owned(),
            redirect_uri: format!("{}/approve/callback", sts_config.issuer),
            client: issuer_client(trusted)?,
            endpoints: tokio::sync::Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// Starts a sign-in for `approval`: the pre-login cookie's value and the provider URL
    /// to send the browser to.
    pub(crate) async fn begin(&self, approval: &str, now: Instant) -> Result<(String, String), LoginError> {
        let endpoints = self.endpoints().await?;
        let pending = Pending {
            state: random_text(),
            nonce: random_text(),
            verifier: random_text(),
            approval: approval.to_owned(),
            expires_at: now + LOGIN_TTL,
        };
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(pending.verifier.as_bytes()));
        let mut url = url::Url::parse(&endpoints.authorization)
            .map_err(|_| LoginError("the provider's authorization endpoint is not a URL".into()))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("scope", &self.scopes)
            .append_pair("state", &pending.state)
            .append_pair("nonce", &pending.nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        let cookie = random_text();
        let mut map = lock(&self.pending);
        map.retain(|_, p| p.expires_at > now);
        if map.len() >= MAX_ENTRIES {
            return Err(LoginError("too many sign-ins are under way; try again in a few minutes".into()));
        }
        map.insert(cookie.clone(), pending);
        Ok((cookie, url.into()))
    }

    /// Completes a sign-in from the callback's query, under the pre-login cookie: the new
    /// session's id and the approval to return to.
    pub(crate) async fn finish(
        &self,
        sts: &Sts,
        login_cookie: Option<&str>,
        query: &[(String, String)],
        now: Instant,
    ) -> Result<(String, String), LoginError> {
        let param = |key: &str| query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        // One use per sign-in, whatever the outcome.
        let pending = login_cookie.and_then(|c| lock(&self.pending).remove(c)).filter(|p| p.expires_at > now);
        let Some(pending) = pending else {
            return Err(LoginError(
                "this sign-in was not started in this browser, or took too long; open the approval link again".into(),
            ));
        };
        if param("state") != Some(pending.state.as_str()) {
            return Err(LoginError("the sign-in answer does not match the sign-in this browser started".into()));
        }
        if let Some(error) = param("error") {
            return Err(LoginError(format!("the provider did not sign you in: {}", clean(error))));
        }
        let code = param("code").ok_or_else(|| LoginError("the provider's answer has no code".into()))?;
        let id_token = self.redeem(code, &pending.verifier).await?;
        let token = sts
            .verifier
            .verify(&id_token)
            .await
            .map_err(|rejection| LoginError(format!("the provider's ID token is refused: {}", rejection.0)))?;
        self.check_id_token(&token, &pending.nonce)?;
        let id = random_text();
        let session = Session { token, csrf: random_text(), expires_at: now + SESSION_TTL };
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, s| s.expires_at > now);
        if sessions.len() >= MAX_ENTRIES {
            return Err(LoginError("too many approvers are signed in; try again in a few minutes".into()));
        }
        sessions.insert(id.clone(), session);
        Ok((id, pending.approval))
    }

    /// The signed-in approver of a session cookie, while the session lasts.
    pub(crate) fn session(&self, id: &str, now: Instant) -> Option<Session> {
        lock(&self.sessions).get(id).filter(|s| s.expires_at > now).cloned()
    }

    /// The ID token is from this login: our issuer, for our client, with our nonce.
    fn check_id_token(&self, token: &VerifiedSubject, nonce: &str) -> Result<(), LoginError> {
        if token.issuer != self.issuer {
            return Err(LoginError("the ID token is from another issuer".into()));
        }
        let audiences: Vec<&str> = match token.claims.get("aud") {
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let azp = token.claims.get("azp").and_then(Value::as_str);
        if !audiences.contains(&self.client_id.as_str()) || azp.is_some_and(|azp| azp != self.client_id) {
            return Err(LoginError("the ID token is for another client".into()));
        }
        if token.claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
            return Err(LoginError("the ID token's nonce is not this sign-in's".into()));
        }
        Ok(())
    }

    /// Redeems the code at the token endpoint (with the PKCE verifier, and the client
    /// secret by HTTP Basic when there is one): the ID token.
    async fn redeem(&self, code: &str, verifier: &str) -> Result<String, LoginError> {
        let endpoints = self.endpoints().await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("code_verifier", verifier),
        ];
        let mut request = self.client.post(&endpoints.token);
        match &self.secret {
            // RFC 6749 section 2.3.1: both parts form-encoded before Basic.
            Some(secret) => request = request.basic_auth(form_encode(&self.client_id), Some(form_encode(secret))),
            None => form.push(("client_id", self.client_id.as_str())),
        }
        let response = request
            .form(&form)
            .send()
            .await
            .map_err(|_| LoginError(format!("cannot reach the token endpoint of `{}`", self.issuer)))?;
        let status = response.status();
        let body: Option<Value> = read_json(response).await;
        let Some(body) = body else {
            return Err(LoginError(format!("the provider refused the sign-in code ({status})")));
        };
        body.get("id_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| LoginError("the provider's token answer has no ID token".into()))
    }

    /// The provider's endpoints, fetched from its discovery document once.
    async fn endpoints(&self) -> Result<Endpoints, LoginError> {
        let mut cached = self.endpoints.lock().await;
        if let Some(endpoints) = cached.as_ref() {
            return Ok(endpoints.clone());
        }
        let unreachable = || LoginError(format!("cannot read the discovery document of `{}`", self.issuer));
        let url = format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'));
        if !is_https_or_loopback(&url) {
            return Err(LoginError(format!("issuer `{}` must be served over https", self.issuer)));
        }
        let response = self.client.get(&url).send().await.map_err(|_| unreachable())?;
        let document: Value = read_json(response).await.ok_or_else(unreachable)?;
        if document.get("issuer").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(LoginError("the provider's discovery document names another issuer".into()));
        }
        let endpoint = |name: &str| {
            document
                .get(name)
                .and_then(Value::as_str)
                .filter(|u| is_https_or_loopback(u))
                .map(str::to_owned)
                .ok_or_else(|| LoginError(format!("the provider's discovery document has no usable `{name}`")))
        };
        let endpoints =
            Endpoints { authorization: endpoint("authorization_endpoint")?, token: endpoint("token_endpoint")? };
        *cached = Some(endpoints.clone());
        Ok(endpoints)
    }
}

/// A `Set-Cookie` value for one of the login cookies: host-only, HTTPS-only, out of
/// scripts' reach, sent on top-level navigations from the provider (`Lax`), for `max_age`.
pub(crate) fn set_cookie(name: &str, value: &str, max_age: Duration) -> String {
    format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}", max_age.as_secs())
}

/// The value of the cookie `name` in a request's `Cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether two secrets are equal, in time that does not depend on where they differ.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    Sha256::digest(a.as_bytes()) == Sha256::digest(b.as_bytes())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// 32 random bytes, base64url: states, nonces, verifiers, cookie values.
fn random_text() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    URL_SAFE_NO_PAD.encode(bytes)
}

fn form_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// A provider's error code, to show: printable and bounded.
fn clean(value: &str) -> String {
    mayfly_core::sanitize_for_terminal(value).chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_exact_name_and_set_host_only_and_secure() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(axum::http::header::COOKIE, "a=1; __Host-mayfly-approval-session=xyz; b=2".parse().unwrap());
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&headers, LOGIN_COOKIE), None);
        let set = set_cookie(SESSION_COOKIE, "xyz", SESSION_TTL);
        assert_eq!(set, "__Host-mayfly-approval-session=xyz; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=900");
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd"));
    }
}
