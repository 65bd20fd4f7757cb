//! The authorization code grant for native apps (RFC 8252): the browser signs the person
//! in and redirects to a loopback listener ([`super::loopback`]); the code is redeemed with
//! its PKCE verifier (RFC 7636, S256). `state` binds the redirect to this login, `nonce`
//! the ID token, and `iss` in the redirect (RFC 9207), when present, the provider.

use std::io::Write;
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::{Digest, Sha256};

use super::browser::Browser;
use super::loopback::Loopback;
use super::oauth::{self, Client, Endpoints, Tokens};
use crate::http::HttpClient;
use crate::identity::Oidc;
use crate::{Secret, clip, sanitize_for_terminal};

/// What binds one browser login together; none of it is ever printed except through
/// the authorization URL (which holds the challenge, never the verifier).
pub(crate) struct Request {
    pub(crate) state: String,
    pub(crate) nonce: String,
    verifier: Secret,
    pub(crate) url: url::Url,
}

/// 32 random bytes, base64url: `state`, `nonce` and the PKCE verifier (43 characters, as
/// RFC 7636 §4.1 recommends).
fn random() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn challenge(verifier: &Secret) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.expose().as_bytes()))
}

impl Request {
    /// A fresh request to `authorization`: refresh tokens need `offline_access`, which
    /// providers grant in this flow only with `prompt=consent` (OpenID Connect Core §11).
    pub(crate) fn new(authorization: &url::Url, oidc: &Oidc, redirect_uri: &str) -> Result<Self, String> {
        let (state, nonce, verifier) = (random()?, random()?, Secret::new(random()?));
        let mut url = authorization.clone();
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &oidc.client_id)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("scope", &oidc.scopes)
                .append_pair("state", &state)
                .append_pair("nonce", &nonce)
                .append_pair("code_challenge", &challenge(&verifier))
                .append_pair("code_challenge_method", "S256");
            if oidc.scopes.split(' ').any(|s| s == "offline_access") {
                query.append_pair("prompt", "consent");
            }
        }
        Ok(Self { state, nonce, verifier, url })
    }
}

/// Runs the browser login up to the provider's tokens: print the URL, open the browser,
/// wait for the redirect until `wait` has passed, check it, redeem the code.
pub(crate) fn run(
    oidc: &Oidc,
    http: &HttpClient,
    endpoints: &Endpoints,
    authorization: &url::Url,
    browser: Option<Browser>,
    wait: Duration,
    out: &mut dyn Write,
) -> Result<(Tokens, String), String> {
    let loopback = Loopback::bind()?;
    let request = Request::new(authorization, oidc, loopback.redirect_uri())?;
    let deadline = Instant::now() + wait;
    let name = &oidc.name;
    let _ = writeln!(out, "To sign in to `{name}`, open this URL in a browser on this machine:\n  {}", request.url);
    match browser.map(|b| b.open(request.url.as_str()).map(|()| b)) {
        Some(Ok(browser)) => {
            let _ = writeln!(out, "Opened it with {}; waiting for the sign-in...", browser.shown());
        }
        Some(Err(why)) => {
            let _ = writeln!(out, "{why}; open the URL yourself. Waiting for the sign-in...");
        }
        None => {
            let _ = writeln!(
                out,
                "No browser to open here (set $BROWSER, or use `mayfly login --device` over SSH). \
                 Waiting for the sign-in..."
            );
        }
    }
    let callback = loopback.wait(deadline)?;
    let refuse = |callback: super::loopback::Callback, why: String| {
        callback.reply(false, "mayfly did not accept this sign-in; the terminal says why.");
        Err(why)
    };
    if let Some(iss) = callback.param("iss")
        && iss != oidc.issuer
    {
        return refuse(callback, "the redirect names another issuer (RFC 9207): not this login's".into());
    }
    if callback.param("state") != Some(request.state.as_str()) {
        return refuse(
            callback,
            "the redirect's `state` does not match this login (a forged or stale redirect); \
             run `mayfly login` again"
                .into(),
        );
    }
    if let Some(error) = callback.param("error") {
        let text = match callback.param("error_description").filter(|d| !d.is_empty()) {
            Some(description) => format!("{error} ({description})"),
            None => error.to_owned(),
        };
        let shown = clip(&sanitize_for_terminal(&text), 200).to_owned();
        return refuse(callback, format!("the provider refused the sign-in: {shown}"));
    }
    let Some(code) = callback.param("code").filter(|c| !c.is_empty()).map(Secret::new) else {
        return refuse(callback, "the redirect carries no authorization code".into());
    };
    callback.reply(true, "mayfly has the sign-in: you can close this tab and return to the terminal.");
    let client = Client { id: &oidc.client_id, secret: oidc.client_secret.as_ref() };
    let tokens = oauth::redeem(http, &endpoints.token, &client, &code, loopback.redirect_uri(), &request.verifier)?;
    Ok((tokens, request.nonce))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oidc(scopes: &str) -> Oidc {
        Oidc {
            name: "laptop".into(),
            issuer: "https://idp.example".into(),
            client_id: "cli".into(),
            client_secret: None,
            scopes: scopes.into(),
            audience: "cli".into(),
            max_login: 3600,
            idle: 600,
            ca_file: None,
        }
    }

    #[test]
    fn the_authorization_url_carries_a_s256_challenge_never_the_verifier() {
        let endpoint = url::Url::parse("https://idp.example/auth?tenant=t").unwrap();
        let request = Request::new(&endpoint, &oidc("openid offline_access"), "http://127.0.0.1:5/callback").unwrap();
        let query: std::collections::BTreeMap<String, String> = request.url.query_pairs().into_owned().collect();
        assert_eq!(query["tenant"], "t");
        assert_eq!(query["response_type"], "code");
        assert_eq!(query["redirect_uri"], "http://127.0.0.1:5/callback");
        assert_eq!(query["scope"], "openid offline_access");
        assert_eq!(query["prompt"], "consent");
        assert_eq!(query["code_challenge_method"], "S256");
        assert_eq!(query["code_challenge"], challenge(&request.verifier));
        assert_eq!((query["state"].len(), query["nonce"].len(), request.verifier.expose().len()), (43, 43, 43));
        assert!(!request.url.as_str().contains(request.verifier.expose()));
        let other = Request::new(&endpoint, &oidc("openid"), "http://127.0.0.1:5/callback").unwrap();
        assert_ne!(other.state, request.state);
        assert!(!other.url.query_pairs().any(|(k, _)| k == "prompt"), "no refresh wanted, no forced consent");
        // RFC 7636 appendix B.
        assert_eq!(
            challenge(&Secret::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
