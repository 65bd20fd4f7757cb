//! `mayfly login` for people on laptops: an `oidc` identity signs in at the organisation's
//! OpenID provider, in a browser with the authorization code grant and PKCE over a
//! loopback redirect (RFC 8252, [`code`]), or with the device authorization grant
//! (RFC 8628) where no browser runs on this machine, and its ID token becomes the subject
//! token its routes exchange.
//!
//! The ID token and the refresh token are kept only in memory-backed storage
//! ([`store`]: the kernel user keyring, else the memory-backed runtime directory), sealed
//! with age like cache entries. A login lasts at most `max_login` and ends after `idle`
//! without use. The ID token is refreshed (`grant_type=refresh_token`) when it is within
//! a margin of expiry, under a lock, because refresh tokens rotate. `logout` revokes the
//! refresh token at the provider (RFC 7009) when it offers revocation.

mod browser;
mod code;
mod loopback;
mod oauth;
mod store;

use std::io::Write;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::http::HttpClient;
use crate::identity::Oidc;
use crate::{Env, IdentityConfig, Secret, sanitize_for_terminal};
use browser::Browser;
use oauth::{Client, Endpoints, Poll, RefreshError, Tokens};
use store::{Record, Store};

/// Per-request timeout at the provider (connects time out after 5 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Polling interval when the provider names none (RFC 8628 §3.2).
const DEFAULT_INTERVAL: u64 = 5;
/// Longest refresh margin: an ID token is refreshed this long before it expires, or at
/// half its lifetime when that is shorter.
const REFRESH_MARGIN: i64 = 60;

/// A login as `mayfly login` and `mayfly status` show it: never a token.
#[derive(Clone, Debug)]
pub struct Login {
    /// The identity's name in the config.
    pub identity: String,
    /// The issuer.
    pub issuer: String,
    /// The ID token's `sub`.
    pub subject: Option<String>,
    /// The ID token's `email`, when present.
    pub email: Option<String>,
    /// When the login happened, unix seconds.
    pub since: i64,
    /// When it ends if used until then (`max_login`), unix seconds.
    pub until: i64,
    /// When it ends if not used again (`idle`), unix seconds.
    pub idle_until: i64,
    /// When the current ID token expires, unix seconds.
    pub id_token_expires: i64,
    /// True when a refresh token was given (else the login ends with its ID token).
    pub refreshable: bool,
    /// Where it is kept.
    pub store: String,
}

/// What `logout` did.
#[derive(Debug)]
pub struct Logout {
    /// The login that was dropped, if there was one.
    pub login: Option<Login>,
    /// The provider's revocation endpoint's host, when the refresh token was revoked
    /// there; the reason when revoking failed (the login is dropped anyway).
    pub revoked: Option<Result<String, String>>,
}

/// The `oidc` source behind an identity, or why `mayfly login` cannot use it.
fn oidc(identity: &IdentityConfig) -> Result<&Oidc, String> {
    identity.source.oidc().ok_or_else(|| {
        format!(
            "identity `{}` is of kind `{}`; `mayfly login` signs in `oidc` identities",
            identity.name,
            identity.kind()
        )
    })
}

fn http(oidc: &Oidc) -> Result<HttpClient, String> {
    HttpClient::new(REQUEST_TIMEOUT, oidc.ca_file.as_deref()).map_err(|e| e.to_string())
}

fn client(oidc: &Oidc) -> Client<'_> {
    Client { id: &oidc.client_id, secret: oidc.client_secret.as_ref() }
}

fn open(oidc: &Oidc, env: &Env) -> Result<Store, String> {
    Store::open(env, &[&oidc.name, &oidc.issuer, &oidc.client_id], oidc.idle)
}

/// How to sign in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// In a browser when this session has one and the provider offers the code flow,
    /// else with the device flow when it offers that.
    Auto,
    /// In a browser (the URL is printed to open by hand when none can be started).
    Browser,
    /// With a code entered on any device (RFC 8628).
    Device,
}

/// Signs in and stores the login. Progress goes to `out` (stderr); a browser login waits
/// `wait` at most for the redirect. A failure stores nothing.
pub fn login(
    identity: &IdentityConfig,
    env: &Env,
    flow: Flow,
    wait: Duration,
    out: &mut dyn Write,
) -> Result<Login, String> {
    let oidc = oidc(identity)?;
    let name = &oidc.name;
    let fail = |why: String| format!("login `{name}`: {why}");
    let store = open(oidc, env).map_err(fail)?;
    let http = http(oidc).map_err(fail)?;
    let endpoints = oauth::discover(&http, &oidc.issuer).map_err(fail)?;
    let no_code_flow = || fail(format!("`{}` offers no authorization endpoint for a browser login", oidc.issuer));
    let (tokens, nonce) = match (flow, &endpoints.authorization, &endpoints.device_authorization) {
        (Flow::Device, _, _) => (device(oidc, &http, &endpoints, out).map_err(fail)?, None),
        (Flow::Browser, None, _) => return Err(no_code_flow()),
        (Flow::Auto, None, None) => {
            return Err(fail(format!("`{}` offers neither a browser nor a device login", oidc.issuer)));
        }
        (Flow::Auto, None, Some(_)) => (device(oidc, &http, &endpoints, out).map_err(fail)?, None),
        (Flow::Auto, Some(authorization), device_endpoint) => match Browser::find(env) {
            None if device_endpoint.is_some() => {
                let _ =
                    writeln!(out, "No browser here (neither $BROWSER nor a display): signing in with a code instead.");
                (device(oidc, &http, &endpoints, out).map_err(fail)?, None)
            }
            browser => {
                let (tokens, nonce) =
                    code::run(oidc, &http, &endpoints, authorization, browser, wait, out).map_err(fail)?;
                (tokens, Some(nonce))
            }
        },
        (Flow::Browser, Some(authorization), _) => {
            let browser = Browser::find(env);
            let (tokens, nonce) =
                code::run(oidc, &http, &endpoints, authorization, browser, wait, out).map_err(fail)?;
            (tokens, Some(nonce))
        }
    };
    keep(oidc, &store, endpoints, tokens, nonce.as_deref()).map_err(fail)
}

/// The device authorization grant: prints where to go and the code to enter on `out`,
/// and polls until the person approves.
fn device(oidc: &Oidc, http: &HttpClient, endpoints: &Endpoints, out: &mut dyn Write) -> Result<Tokens, String> {
    let name = &oidc.name;
    let device_endpoint = endpoints
        .device_authorization
        .as_ref()
        .ok_or_else(|| format!("`{}` offers no device authorization endpoint (RFC 8628)", oidc.issuer))?;
    let client = client(oidc);
    let started = Instant::now();
    let authorization = oauth::device_authorization(http, device_endpoint, &client, &oidc.scopes)?;
    let clean = |s: &str| sanitize_for_terminal(s);
    let _ = writeln!(
        out,
        "To sign in to `{name}`, open {} and enter the code {}",
        clean(&authorization.verification_uri),
        clean(&authorization.user_code)
    );
    if let Some(complete) = &authorization.verification_uri_complete {
        let _ = writeln!(out, "(or open {})", clean(complete));
    }
    let _ = writeln!(out, "Waiting for approval (the code expires in {} s)...", authorization.expires_in);
    let deadline = started + Duration::from_secs(authorization.expires_in);
    let mut interval = authorization.interval.unwrap_or(DEFAULT_INTERVAL).max(1);
    let expired = || "the code expired before it was approved; run `mayfly login` again".to_owned();
    loop {
        let next = Instant::now() + Duration::from_secs(interval);
        if next >= deadline {
            return Err(expired());
        }
        std::thread::sleep(Duration::from_secs(interval));
        match oauth::poll(http, &endpoints.token, &client, &authorization.device_code)? {
            Poll::Done(tokens) => return Ok(tokens),
            Poll::Pending => {}
            Poll::SlowDown => interval += 5,
            Poll::Expired => return Err(expired()),
            Poll::Denied => return Err("sign-in was denied at the provider".into()),
        }
    }
}

/// Checks the tokens a sign-in gave (with the `nonce` the browser flow sent) and stores
/// the login.
fn keep(
    oidc: &Oidc,
    store: &Store,
    endpoints: Endpoints,
    tokens: Tokens,
    nonce: Option<&str>,
) -> Result<Login, String> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let id_token =
        tokens.id_token.ok_or_else(|| "the provider gave no ID token (is `openid` in `scopes`?)".to_owned())?;
    let claims = accept(oidc, &id_token, now, nonce)?;
    let record = Record {
        id_token,
        refresh_token: tokens.refresh_token,
        id_token_exp: claims.exp,
        id_token_at: now,
        token_endpoint: endpoints.token.to_string(),
        revocation_endpoint: endpoints.revocation.map(|u| u.to_string()),
        since: now,
        until: now + oidc.max_login,
        last_used: now,
        subject: claims.sub,
        email: claims.email,
    };
    let _lock = store.lock()?;
    store.save(&record, now)?;
    Ok(shown(oidc, store, &record))
}

/// Drops the login, revoking its refresh token at the provider when it can.
pub fn logout(identity: &IdentityConfig, env: &Env) -> Result<Logout, String> {
    let oidc = oidc(identity)?;
    let fail = |why: String| format!("logout `{}`: {why}", oidc.name);
    let store = open(oidc, env).map_err(fail)?;
    let _lock = store.lock().map_err(fail)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let Some(record) = store.load(now) else { return Ok(Logout { login: None, revoked: None }) };
    let revoked = match (&record.revocation_endpoint, &record.refresh_token) {
        (Some(endpoint), Some(token)) => Some(revoke(oidc, endpoint, token)),
        _ => None,
    };
    store.remove();
    Ok(Logout { login: Some(shown(oidc, &store, &record)), revoked })
}

fn revoke(oidc: &Oidc, endpoint: &str, token: &Secret) -> Result<String, String> {
    let url = url::Url::parse(endpoint).map_err(|e| e.to_string())?;
    oauth::revoke(&http(oidc)?, &url, &client(oidc), token, "refresh_token")?;
    Ok(crate::target::host_port(&url).unwrap_or_default())
}

/// The login of an identity, if there is one in force: for `mayfly status`.
pub fn status(identity: &IdentityConfig, env: &Env, now: i64) -> Result<Option<Login>, String> {
    let oidc = oidc(identity)?;
    let store = open(oidc, env)?;
    Ok(store.load(now).map(|record| shown(oidc, &store, &record)))
}

/// Where this identity's login is kept (or would be), as shown to people.
pub fn place(identity: &IdentityConfig, env: &Env) -> Result<String, String> {
    Ok(open(oidc(identity)?, env)?.place())
}

fn shown(oidc: &Oidc, store: &Store, record: &Record) -> Login {
    Login {
        identity: oidc.name.clone(),
        issuer: oidc.issuer.clone(),
        subject: record.subject.clone(),
        email: record.email.clone(),
        since: record.since,
        until: record.until,
        idle_until: (record.last_used + oidc.idle).min(record.until),
        id_token_expires: record.id_token_exp,
        refreshable: record.refresh_token.is_some(),
        store: store.place(),
    }
}

/// The stored ID token as it is, without a refresh or a request: for `look`.
/// True while the login is in force, counting this as a use (its idle time starts again):
/// a token served from the cache is a use of the login it was minted from.
pub(crate) fn in_force(oidc: &Oidc, env: &Env, now: i64) -> Result<bool, String> {
    let store = open(oidc, env)?;
    let Some(record) = store.load(now) else { return Ok(false) };
    store.save(&record, now)?;
    Ok(true)
}

pub(crate) fn stored_id_token(oidc: &Oidc, env: &Env, now: i64) -> Result<Option<Secret>, String> {
    Ok(open(oidc, env)?.load(now).map(|record| record.id_token))
}

/// The login's ID token, refreshed when it is within the margin of expiry; `None` when
/// nobody is logged in. Each use starts the idle time again.
pub(crate) fn id_token(oidc: &Oidc, env: &Env, now: i64) -> Result<Option<Secret>, crate::identity::Error> {
    use crate::identity::Error;
    let name = &oidc.name;
    let fail = |why: String| Error::Unavailable(format!("identity `{name}`: {why}"));
    let store = open(oidc, env).map_err(fail)?;
    let Some(record) = store.load(now) else { return Ok(None) };
    if fresh(&record, now) {
        store.save(&record, now).map_err(fail)?;
        return Ok(Some(record.id_token));
    }
    let _lock = store.lock().map_err(fail)?;
    // Another process may have refreshed it while this one waited.
    let Some(mut record) = store.load(now) else { return Ok(None) };
    if !fresh(&record, now) {
        let hint = oidc.hint();
        let Some(refresh_token) = &record.refresh_token else {
            store.remove();
            return Err(fail(format!("the login's ID token expired and there is no refresh token; {hint}")));
        };
        let url = url::Url::parse(&record.token_endpoint).map_err(|e| fail(e.to_string()))?;
        let http = http(oidc).map_err(fail)?;
        let tokens = match oauth::refresh(&http, &url, &client(oidc), refresh_token) {
            Ok(tokens) => tokens,
            Err(RefreshError::Refused(why)) => {
                store.remove();
                return Err(fail(format!("the provider refused to refresh the login: {why}; {hint}")));
            }
            Err(RefreshError::Unreachable(why)) => {
                return Err(fail(format!("cannot refresh the login: {why}; try again, or {hint}")));
            }
        };
        let id_token =
            tokens.id_token.ok_or_else(|| fail(format!("the provider's refresh answer has no ID token; {hint}")))?;
        let claims = accept(oidc, &id_token, now, None).map_err(|why| fail(format!("{why}; {hint}")))?;
        record.id_token = id_token;
        record.id_token_exp = claims.exp;
        record.id_token_at = now;
        if let Some(rotated) = tokens.refresh_token {
            record.refresh_token = Some(rotated);
        }
    }
    store.save(&record, now).map_err(fail)?;
    Ok(Some(record.id_token))
}

/// True while the ID token is outside its refresh margin.
fn fresh(record: &Record, now: i64) -> bool {
    let lifetime = (record.id_token_exp - record.id_token_at).max(0);
    now < record.id_token_exp - REFRESH_MARGIN.min(lifetime / 2)
}

/// What mayfly reads from an ID token it was just given.
struct Accepted {
    exp: i64,
    sub: Option<String>,
    email: Option<String>,
}

/// Checks an ID token from the token endpoint (OpenID Connect Core §3.1.3.7): `iss` is
/// the issuer, `aud` holds the expected audience, `exp` is in the future, and `nonce` is
/// the one the browser flow sent (§3.1.2.1; the device and refresh grants send none). Its signature is
/// the exchange's to verify (it came straight from the provider over TLS, which §3.1.3.7
/// allows a client to rely on); mayfly never decides access on these claims.
fn accept(oidc: &Oidc, token: &Secret, now: i64, nonce: Option<&str>) -> Result<Accepted, String> {
    #[derive(serde::Deserialize)]
    struct Claims {
        iss: Option<String>,
        nonce: Option<String>,
        sub: Option<String>,
        exp: Option<i64>,
        email: Option<String>,
    }
    let claims = crate::peek_claims(token.expose()).ok_or_else(|| "the ID token is not a JWT".to_owned())?;
    let extra: Claims = token
        .expose()
        .split('.')
        .nth(1)
        .and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| "the ID token's claims are unreadable".to_owned())?;
    if extra.iss.as_deref() != Some(oidc.issuer.as_str()) {
        return Err(format!("the ID token's issuer is not `{}`", oidc.issuer));
    }
    if !claims.aud.iter().any(|a| a == &oidc.audience) {
        return Err(format!("the ID token's audience does not include `{}`", oidc.audience));
    }
    if let Some(nonce) = nonce
        && extra.nonce.as_deref() != Some(nonce)
    {
        return Err("the ID token's `nonce` is not this login's (a replayed or swapped token)".into());
    }
    let exp =
        extra.exp.filter(|&exp| exp > now).ok_or_else(|| "the ID token has expired or has no `exp`".to_owned())?;
    let clean = |v: Option<String>| v.map(|v| crate::clip(&sanitize_for_terminal(&v), 200).to_owned());
    Ok(Accepted { exp, sub: clean(extra.sub), email: clean(extra.email) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oidc() -> Oidc {
        Oidc {
            name: "laptop".into(),
            issuer: "https://idp.example".into(),
            client_id: "cli".into(),
            client_secret: None,
            scopes: "openid offline_access".into(),
            audience: "cli".into(),
            max_login: 3600,
            idle: 600,
            ca_file: None,
        }
    }

    fn jwt(claims: &str) -> Secret {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        Secret::new(format!("{}.{}.sig", b64(r#"{"alg":"RS256"}"#), b64(claims)))
    }

    #[test]
    fn id_tokens_must_name_the_issuer_the_client_and_a_future_expiry() {
        let ok = accept(
            &oidc(),
            &jwt(r#"{"iss":"https://idp.example","aud":"cli","exp":200,"sub":"a","email":"a@x"}"#),
            100,
            None,
        )
        .unwrap();
        assert_eq!((ok.exp, ok.sub.as_deref(), ok.email.as_deref()), (200, Some("a"), Some("a@x")));
        let err = |claims: &str| accept(&oidc(), &jwt(claims), 100, None).err().unwrap();
        assert!(err(r#"{"iss":"https://evil.example","aud":"cli","exp":200}"#).contains("issuer"));
        assert!(err(r#"{"iss":"https://idp.example","aud":["other"],"exp":200}"#).contains("audience"));
        assert!(err(r#"{"iss":"https://idp.example","aud":"cli","exp":100}"#).contains("expired"));
        assert!(accept(&oidc(), &Secret::new("opaque"), 100, None).is_err());
    }

    #[test]
    fn a_browser_login_checks_the_nonce_it_sent() {
        let token = jwt(r#"{"iss":"https://idp.example","aud":"cli","exp":200,"nonce":"n1"}"#);
        assert!(accept(&oidc(), &token, 100, Some("n1")).is_ok());
        assert!(accept(&oidc(), &token, 100, Some("n2")).err().unwrap().contains("nonce"));
        let without = jwt(r#"{"iss":"https://idp.example","aud":"cli","exp":200}"#);
        assert!(accept(&oidc(), &without, 100, Some("n1")).err().unwrap().contains("nonce"));
    }

    #[test]
    fn refresh_happens_within_a_margin_capped_at_half_the_lifetime() {
        let record = |at: i64, exp: i64| Record {
            id_token: Secret::new("t"),
            refresh_token: None,
            id_token_exp: exp,
            id_token_at: at,
            token_endpoint: String::new(),
            revocation_endpoint: None,
            since: at,
            until: at + 3600,
            last_used: at,
            subject: None,
            email: None,
        };
        // An hour-long token: refreshed in its last minute.
        assert!(fresh(&record(0, 3600), 3539));
        assert!(!fresh(&record(0, 3600), 3540));
        // A ten-second token: refreshed in its last five seconds.
        assert!(fresh(&record(0, 10), 4));
        assert!(!fresh(&record(0, 10), 5));
    }
}
