//! The GitHub App backend (`[github_app]`): an allowed request for a GitHub repository is
//! answered with an installation token of the App, narrowed to that one repository and
//! the permissions its operation needs, instead of a token of this exchange.
//!
//! GitHub REST (API version 2022-11-28):
//! - "Get a repository installation for the authenticated app":
//!   `GET /repos/{owner}/{repo}/installation` with the app JWT.
//! - "Create an installation access token for an app":
//!   `POST /app/installations/{id}/access_tokens` with the app JWT and
//!   `{"repositories": [NAME], "permissions": {...}}`; 201 `{"token", "expires_at", ...}`.
//! - "Revoke an installation access token": `DELETE /installation/token` with the token.
//!
//! Minted tokens are remembered (in this process) by fingerprint with their session, so
//! revoking one, or its session, revokes it at GitHub; a token minted elsewhere is not
//! known here and cannot be revoked through this exchange.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, USER_AGENT};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::audit::{Line, now_rfc3339};
use crate::config::GithubAppEntry;
use crate::oauth::OAuthError;
use crate::server::Refusal;
use crate::{Grant, Sts};
use mayfly_core::Fingerprint;

/// The app JWT's `iat` is set this far back, for clock drift (as GitHub advises).
const BACKDATE_SECS: i64 = 60;
/// The app JWT's lifetime, `exp - iat`: GitHub takes at most 10 minutes.
const APP_JWT_LIFETIME_SECS: i64 = 600;
/// Installation ids are cached this long per repository.
const INSTALLATION_TTL: Duration = Duration::from_secs(600);
/// At most this many repositories' installations are cached.
const INSTALLATION_CACHE: usize = 1024;
const API_VERSION: &str = "2022-11-28";
const TIMEOUT: Duration = Duration::from_secs(10);

/// An installation token minted here, remembered until it is revoked or expires.
struct Minted {
    token: SecretString,
    sid: Option<String>,
    installation: u64,
    expires_at: i64,
}

/// The App: its key, its HTTP client, what it has minted.
pub(crate) struct GithubApp {
    config: GithubAppEntry,
    key: jsonwebtoken::EncodingKey,
    client: reqwest::Client,
    installations: Mutex<HashMap<String, (u64, Instant)>>,
    /// By fingerprint; shared with the tasks that end tokens when their lifetime is up.
    minted: Arc<Mutex<HashMap<String, Minted>>>,
}

/// A token GitHub minted for a request.
pub(crate) struct Issued {
    pub(crate) token: String,
    pub(crate) expires_in: u64,
    pub(crate) installation: u64,
    pub(crate) permissions: Value,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl GithubApp {
    /// Reads the private key (once; its content is never shown) and builds the client.
    pub(crate) fn new(config: &GithubAppEntry) -> Result<Self, String> {
        let path = &config.private_key_file;
        let pem = std::fs::read(path)
            .map_err(|e| format!("github_app: cannot read `private_key_file` `{}`: {e}", path.display()))?;
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).map_err(|_| {
            format!("github_app: `private_key_file` `{}` is not an RSA private key in PEM", path.display())
        })?;
        let mut builder = reqwest::Client::builder().timeout(TIMEOUT).redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &config.ca_file {
            let pem =
                std::fs::read(ca).map_err(|e| format!("github_app: cannot read `ca_file` `{}`: {e}", ca.display()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("github_app: `ca_file`: {e}"))?;
            builder = builder.tls_certs_merge(certs);
        }
        Ok(Self {
            config: config.clone(),
            key,
            client: builder.build().map_err(|e| format!("github_app: {e}"))?,
            installations: Mutex::default(),
            minted: Arc::default(),
        })
    }

    /// Whether a requested audience means a repository on this GitHub.
    pub(crate) fn serves(&self, audience: &str) -> bool {
        self.config.audiences.iter().any(|a| a.trim_end_matches('/') == audience.trim_end_matches('/'))
    }

    /// The app JWT: RS256, `iss` the app id, backdated, living 10 minutes at most.
    fn app_jwt(&self) -> Result<String, Refusal> {
        let iat = now() - BACKDATE_SECS;
        let claims = json!({"iss": self.config.app_id, "iat": iat, "exp": iat + APP_JWT_LIFETIME_SECS});
        jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256), &claims, &self.key)
            .map_err(|e| Refusal { code: OAuthError::ServerError, reason: format!("cannot sign the app JWT: {e}") })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.api_url())
    }

    fn request(&self, method: reqwest::Method, path: &str, bearer: &str) -> reqwest::RequestBuilder {
        request(&self.client, method, &self.url(path), bearer)
    }

    /// The installation of the App on `owner/repo`, cached.
    async fn installation(&self, owner: &str, repo: &str) -> Result<u64, Refusal> {
        let key = format!("{owner}/{repo}").to_ascii_lowercase();
        if let Some((id, at)) = lock(&self.installations).get(&key)
            && at.elapsed() < INSTALLATION_TTL
        {
            return Ok(*id);
        }
        let jwt = self.app_jwt()?;
        let response = self
            .request(reqwest::Method::GET, &format!("/repos/{owner}/{repo}/installation"), &jwt)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status == StatusCode::NOT_FOUND {
            return Err(Refusal {
                code: OAuthError::InvalidTarget,
                reason: format!("the GitHub App is not installed on {owner}/{repo}"),
            });
        }
        if !status.is_success() {
            return Err(refusal(status, &headers, &body));
        }
        let id = body["id"].as_u64().ok_or_else(|| Refusal {
            code: OAuthError::ServerError,
            reason: "GitHub's installation answer has no numeric `id`".into(),
        })?;
        let mut cache = lock(&self.installations);
        if cache.len() >= INSTALLATION_CACHE {
            cache.retain(|_, (_, at)| at.elapsed() < INSTALLATION_TTL);
            if cache.len() >= INSTALLATION_CACHE {
                cache.clear();
            }
        }
        cache.insert(key, (id, Instant::now()));
        Ok(id)
    }

    /// Mints an installation token for `owner/repo` with exactly `permissions`.
    pub(crate) async fn mint(
        &self,
        owner: &str,
        repo: &str,
        permissions: &BTreeMap<String, String>,
        sid: Option<&str>,
        ttl: u64,
    ) -> Result<Issued, (Refusal, Option<u64>)> {
        let installation = self.installation(owner, repo).await.map_err(|r| (r, None))?;
        let fail = |r: Refusal| (r, Some(installation));
        let jwt = self.app_jwt().map_err(fail)?;
        let response = self
            .request(reqwest::Method::POST, &format!("/app/installations/{installation}/access_tokens"), &jwt)
            .json(&json!({"repositories": [repo], "permissions": permissions}))
            .send()
            .await
            .map_err(|e| fail(unreachable(e)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            if status == StatusCode::NOT_FOUND {
                // The installation went away since it was cached.
                lock(&self.installations).remove(&format!("{owner}/{repo}").to_ascii_lowercase());
            }
            return Err(fail(refusal(status, &headers, &body)));
        }
        let token = body["token"].as_str().filter(|t| !t.is_empty()).map(str::to_owned);
        let expires_at = body["expires_at"]
            .as_str()
            .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
            .map(|t| t.unix_timestamp());
        let (Some(token), Some(expires_at)) = (token, expires_at) else {
            let reason = "GitHub's token answer lacks `token` or an RFC 3339 `expires_at`".into();
            return Err(fail(Refusal { code: OAuthError::ServerError, reason }));
        };
        let granted = body.get("permissions").cloned().unwrap_or_else(|| json!(permissions));
        // Never hand out more than was asked: another repository, or more permissions.
        if let Err(reason) = narrow_enough(&body, repo, permissions) {
            let _ = self.delete(&token).await;
            return Err(fail(Refusal { code: OAuthError::ServerError, reason }));
        }
        let fingerprint = Fingerprint::of(&token).to_string();
        lock(&self.minted).retain(|_, m| m.expires_at > now());
        lock(&self.minted).insert(
            fingerprint.clone(),
            Minted { token: SecretString::from(token.clone()), sid: sid.map(str::to_owned), installation, expires_at },
        );
        // GitHub's tokens live an hour; the policy's lifetime may be shorter: the token is
        // revoked at GitHub when the granted lifetime is up.
        let expires_in = u64::try_from(expires_at - now()).unwrap_or(0).min(ttl);
        let (client, url, minted) = (self.client.clone(), self.url("/installation/token"), self.minted.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(expires_in)).await;
            let Some(gone) = lock(&minted).remove(&fingerprint) else { return };
            let _ = delete(&client, &url, gone.token.expose_secret()).await;
        });
        Ok(Issued { token, expires_in, installation, permissions: granted })
    }

    async fn delete(&self, token: &str) -> Result<(), String> {
        delete(&self.client, &self.url("/installation/token"), token).await
    }

    /// Revokes a token presented to `/revoke` if this exchange minted it: `None` when it
    /// did not, else the installation and the outcome.
    pub(crate) async fn revoke_presented(&self, token: &str) -> Option<(u64, Result<(), String>)> {
        let fingerprint = Fingerprint::of(token).to_string();
        // Claimed (taken out) before GitHub is asked, so a session's end revoking at the
        // same moment does not revoke it twice; put back if GitHub could not be told.
        let claimed = {
            let mut minted = lock(&self.minted);
            let known = minted.get(&fingerprint)?;
            // The fingerprint is short: the token itself must match.
            if !same(known.token.expose_secret().as_bytes(), token.as_bytes()) {
                return None;
            }
            minted.remove(&fingerprint)?
        };
        let installation = claimed.installation;
        let result = self.delete(token).await;
        if result.is_err() {
            lock(&self.minted).insert(fingerprint, claimed);
        }
        Some((installation, result))
    }

    /// Revokes every token minted through the session `sid`: (fingerprint, installation,
    /// outcome) each. Each is claimed first, as in [`GithubApp::revoke_presented`].
    pub(crate) async fn revoke_session(&self, sid: &str) -> Vec<(String, u64, Result<(), String>)> {
        let claimed: Vec<(String, Minted)> = {
            let mut minted = lock(&self.minted);
            let ours: Vec<String> =
                minted.iter().filter(|(_, m)| m.sid.as_deref() == Some(sid)).map(|(f, _)| f.clone()).collect();
            ours.into_iter().filter_map(|f| minted.remove(&f).map(|m| (f, m))).collect()
        };
        let mut outcomes = Vec::new();
        for (fingerprint, known) in claimed {
            let result = self.delete(known.token.expose_secret()).await;
            let installation = known.installation;
            if result.is_err() {
                lock(&self.minted).insert(fingerprint.clone(), known);
            }
            outcomes.push((fingerprint, installation, result));
        }
        outcomes
    }
}

/// A request to GitHub's REST API, with the headers GitHub asks for.
fn request(client: &reqwest::Client, method: reqwest::Method, url: &str, bearer: &str) -> reqwest::RequestBuilder {
    client
        .request(method, url)
        .header(ACCEPT, "application/vnd.github+json")
        .header("X-GitHub-Api-Version", API_VERSION)
        .header(USER_AGENT, concat!("mayfly-sts/", env!("CARGO_PKG_VERSION")))
        .header(AUTHORIZATION, format!("Bearer {bearer}"))
}

/// `DELETE /installation/token`: done when GitHub no longer takes the token (revoked now,
/// or already gone: 401).
async fn delete(client: &reqwest::Client, url: &str, token: &str) -> Result<(), String> {
    let response = request(client, reqwest::Method::DELETE, url, token)
        .send()
        .await
        .map_err(|e| format!("cannot reach GitHub: {}", without_url(e)))?;
    match response.status() {
        s if s.is_success() || s == StatusCode::UNAUTHORIZED => Ok(()),
        s => Err(format!("GitHub answered HTTP {} to the revocation", s.as_u16())),
    }
}

/// Whether GitHub's answer is for the one repository and at most the permissions asked.
fn narrow_enough(body: &Value, repo: &str, asked: &BTreeMap<String, String>) -> Result<(), String> {
    if body.get("repository_selection").and_then(Value::as_str).is_some_and(|s| s != "selected") {
        return Err("GitHub answered with a token for all the installation's repositories; revoked it".into());
    }
    if let Some(repos) = body.get("repositories").and_then(Value::as_array)
        && repos.iter().any(|r| r["name"].as_str().is_none_or(|n| !n.eq_ignore_ascii_case(repo)))
    {
        return Err("GitHub answered with a token for more repositories than asked; revoked it".into());
    }
    if let Some(granted) = body.get("permissions").and_then(Value::as_object) {
        let rank = |l: &str| match l {
            "read" => 1,
            "write" => 2,
            _ => 3,
        };
        let broader = granted.iter().any(|(name, level)| {
            asked.get(name).is_none_or(|want| rank(level.as_str().unwrap_or("admin")) > rank(want))
        });
        if broader {
            return Err("GitHub answered with more permissions than asked; revoked it".into());
        }
    }
    Ok(())
}

/// The refusal for a GitHub error answer: rate limiting and outages are temporary, a
/// refused app JWT is this exchange's fault, the rest are the request's.
pub(crate) fn refusal(status: StatusCode, headers: &HeaderMap, body: &Value) -> Refusal {
    let message = body["message"].as_str().map(|m| mayfly_core::sanitize_for_terminal(mayfly_core::clip(m, 200)));
    let said = message.map(|m| format!(": {m}")).unwrap_or_default();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let rate_limited = status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN && header("x-ratelimit-remaining") == Some("0"));
    let (code, reason) = if rate_limited {
        let wait = header("retry-after").map(str::to_owned).or_else(|| {
            header("x-ratelimit-reset").and_then(|r| r.parse::<i64>().ok()).map(|r| (r - now()).max(0).to_string())
        });
        let wait = wait.map(|w| format!("; retry in {w} s")).unwrap_or_default();
        (OAuthError::TemporarilyUnavailable, format!("{RATE_LIMITED}{wait}"))
    } else {
        match status.as_u16() {
            401 => {
                (OAuthError::ServerError, format!("GitHub refused the App's JWT (check `app_id` and the key){said}"))
            }
            403 => (OAuthError::AccessDenied, format!("GitHub refused the installation token{said}")),
            404 => (OAuthError::InvalidTarget, format!("GitHub does not know the installation{said}")),
            422 => (OAuthError::AccessDenied, format!("GitHub refused the installation token{said}")),
            s if s >= 500 => (OAuthError::TemporarilyUnavailable, format!("GitHub is unavailable (HTTP {s})")),
            s => (OAuthError::ServerError, format!("GitHub answered HTTP {s}{said}")),
        }
    };
    Refusal { code, reason }
}

/// How a rate-limit refusal's reason starts.
const RATE_LIMITED: &str = "GitHub's rate limit for the App is exhausted";

/// 429 with `Retry-After`: the client shows the reason and does not try again at once, as
/// it would after a 503.
fn rate_limited(refusal: &Refusal, rest: &str) -> axum::response::Response {
    let mut response =
        crate::server::oauth_error(axum::http::StatusCode::TOO_MANY_REQUESTS, refusal.code, &refusal.reason);
    let secs = rest.trim_start_matches("; retry in ").trim_end_matches(" s");
    if let Ok(value) = axum::http::HeaderValue::from_str(secs)
        && secs.parse::<u64>().is_ok()
    {
        response.headers_mut().insert(axum::http::header::RETRY_AFTER, value);
    }
    response
}

fn unreachable(e: reqwest::Error) -> Refusal {
    Refusal { code: OAuthError::TemporarilyUnavailable, reason: format!("cannot reach GitHub: {}", without_url(e)) }
}

/// A reqwest error without its URL (the API URL is config, not news to a client).
fn without_url(e: reqwest::Error) -> String {
    if e.is_timeout() { "timed out".into() } else { mayfly_core::protocol::one_line(&e.without_url()) }
}

/// Equality in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The repository and operation of a granted scope `repo:OWNER/REPO:OPERATION`: a GitHub
/// token is for one repository and one operation.
fn target(scopes: &[String]) -> Result<(String, String, String), Refusal> {
    let invalid = |reason: &str| Refusal { code: OAuthError::InvalidScope, reason: reason.into() };
    let [scope] = scopes else {
        return Err(invalid("a GitHub token is for one scope `repo:OWNER/REPO:OPERATION`"));
    };
    let parsed = scope.strip_prefix("repo:").and_then(|rest| rest.rsplit_once(':')).and_then(|(path, operation)| {
        let (owner, repo) = path.split_once('/')?;
        let plain = |s: &str| !s.is_empty() && !s.contains(['/', '*']);
        (plain(owner) && plain(repo)).then(|| (owner.to_owned(), repo.to_owned(), operation.to_owned()))
    });
    parsed.ok_or_else(|| invalid("a GitHub token is for one scope `repo:OWNER/REPO:OPERATION` of one repository"))
}

/// Answers an allowed request whose audience is a GitHub host with an installation token.
pub(crate) async fn answer(
    sts: &Sts,
    app: &GithubApp,
    grant: &Grant,
    sid: Option<&str>,
    ttl: u64,
    line: Line<'_>,
) -> Result<axum::response::Response, Refusal> {
    let line = Line { scope: Some(grant.scopes.join(" ")), ..line };
    let (owner, repo, operation) = match target(&grant.scopes) {
        Ok(target) => target,
        Err(refusal) => return Err(crate::server::denied(sts, refusal, line).await),
    };
    let Some(permissions) = app.config.permissions_for(&operation) else {
        let reason = format!("`github_app` has no permissions for the operation `{operation}`");
        return Err(crate::server::denied(sts, Refusal { code: OAuthError::InvalidScope, reason }, line).await);
    };
    let issued = match app.mint(&owner, &repo, &permissions, sid, ttl).await {
        Ok(issued) => issued,
        Err((refusal, installation)) => {
            let refusal = crate::server::denied(sts, refusal, Line { installation, ..line }).await;
            if let Some(retry_after) = refusal.reason.strip_prefix(RATE_LIMITED) {
                return Ok(rate_limited(&refusal, retry_after));
            }
            return Err(refusal);
        }
    };
    let scope = grant.scopes.join(" ");
    let written = sts
        .lasting
        .audit
        .write(&Line {
            time: now_rfc3339(),
            outcome: "issued",
            ttl: Some(issued.expires_in),
            rule: Some(grant.rule.as_str()).filter(|r| !r.is_empty()),
            policies: Some(grant.policies.as_slice()).filter(|p| !p.is_empty()),
            fingerprint: Some(Fingerprint::of(&issued.token).to_string()),
            installation: Some(issued.installation),
            permissions: Some(&issued.permissions),
            ..line
        })
        .await;
    if let Err(e) = written {
        // Not answered, so not left standing either.
        let _ = app.revoke_presented(&issued.token).await;
        return Err(crate::server::audit_failed(e));
    }
    Ok(crate::server::issued(&issued.token, issued.expires_in, &scope))
}

/// Revokes at GitHub what was minted through a session that just ended, one audit line each.
pub(crate) async fn end_session(sts: &Sts, sid: &str) {
    let Some(app) = &sts.lasting.github_app else { return };
    for (fingerprint, installation, result) in app.revoke_session(sid).await {
        let reason = result.as_ref().err().map(String::as_str);
        sts.lasting
            .audit
            .record(&Line {
                time: now_rfc3339(),
                outcome: if result.is_ok() { "revoked" } else { "revoke-failed" },
                reason: reason.or(Some("its session ended")),
                sid: Some(sid),
                installation: Some(installation),
                fingerprint: Some(fingerprint),
                ..Line::default()
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_scope_of_one_repository() {
        let t = |s: &[&str]| target(&s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).map_err(|r| r.code);
        assert_eq!(t(&["repo:org/app:write"]).unwrap(), ("org".into(), "app".into(), "write".into()));
        for bad in [&["repo:org/app:read", "repo:org/app:write"][..], &["repo:org/*:read"], &["repo:org:read"], &[]] {
            assert_eq!(t(bad), Err(OAuthError::InvalidScope), "{bad:?}");
        }
        assert_eq!(t(&["repo:org/a/b:read"]), Err(OAuthError::InvalidScope));
    }

    #[test]
    fn github_errors_map_to_one_oauth_error_each() {
        let mut limited = HeaderMap::new();
        limited.insert("x-ratelimit-remaining", "0".parse().unwrap());
        limited.insert("retry-after", "30".parse().unwrap());
        let body = json!({"message": "nope\u{1b}[31m"});
        let r = refusal(StatusCode::FORBIDDEN, &limited, &body);
        assert_eq!(
            (r.code, r.reason.as_str()),
            (OAuthError::TemporarilyUnavailable, "GitHub's rate limit for the App is exhausted; retry in 30 s")
        );
        assert_eq!(
            refusal(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), &body).code,
            OAuthError::TemporarilyUnavailable
        );
        let forbidden = refusal(StatusCode::FORBIDDEN, &HeaderMap::new(), &body);
        assert_eq!(forbidden.code, OAuthError::AccessDenied);
        assert!(!forbidden.reason.contains('\u{1b}'), "{}", forbidden.reason);
        assert_eq!(refusal(StatusCode::UNAUTHORIZED, &HeaderMap::new(), &body).code, OAuthError::ServerError);
        assert_eq!(refusal(StatusCode::UNPROCESSABLE_ENTITY, &HeaderMap::new(), &body).code, OAuthError::AccessDenied);
        assert_eq!(refusal(StatusCode::NOT_FOUND, &HeaderMap::new(), &body).code, OAuthError::InvalidTarget);
        let outage = refusal(StatusCode::BAD_GATEWAY, &HeaderMap::new(), &body);
        assert_eq!(
            (outage.code, outage.reason.as_str()),
            (OAuthError::TemporarilyUnavailable, "GitHub is unavailable (HTTP 502)")
        );
    }

    #[test]
    fn a_broader_answer_than_asked_is_refused() {
        let asked: BTreeMap<String, String> = [("contents".to_owned(), "read".to_owned())].into();
        let ok = json!({"repository_selection": "selected", "repositories": [{"name": "app"}], "permissions": {"contents": "read"}});
        assert!(narrow_enough(&ok, "app", &asked).is_ok());
        for broader in [
            json!({"repository_selection": "all"}),
            json!({"repositories": [{"name": "app"}, {"name": "docs"}]}),
            json!({"permissions": {"contents": "write"}}),
            json!({"permissions": {"contents": "read", "issues": "read"}}),
        ] {
            assert!(narrow_enough(&broader, "app", &asked).is_err(), "{broader}");
        }
    }

    #[test]
    fn the_config_block_is_checked_and_the_key_must_be_rsa() {
        let base = "issuer = \"http://127.0.0.1:1\"\n[github_app]\napp_id = \"1\"\nprivate_key_file = \"k.pem\"\n";
        let parse = |extra: &str| crate::Config::parse(&format!("{base}{extra}")).map(|c| c.github_app.unwrap());
        let ok = parse("audiences = [\"https://github.com\"]\n").unwrap();
        assert_eq!(ok.api_url(), "https://api.github.com");
        for (extra, why) in [
            ("audiences = []\n", "`audiences` needs at least one"),
            ("audiences = [\"a\"]\napi_url = \"http://ghes.example/api/v3\"\n", "must be https"),
            (
                "audiences = [\"a\"]\n[github_app.permissions]\nread = { contents = \"all\" }\n",
                "not read, write or admin",
            ),
        ] {
            let err = parse(extra).unwrap_err();
            assert!(err.contains(why), "{extra}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.pem");
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap().serialize_pem();
        std::fs::write(&key, &ec).unwrap();
        let entry = GithubAppEntry { private_key_file: key.clone(), ..ok };
        let err = GithubApp::new(&entry).err().unwrap();
        assert!(err.contains("is not an RSA private key") && !err.contains("PRIVATE KEY"), "{err}");
        std::fs::write(&key, rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap().serialize_pem()).unwrap();
        assert!(GithubApp::new(&entry).is_ok());
    }

    #[test]
    fn read_and_write_have_safe_defaults_and_nothing_else_does() {
        let mut entry = GithubAppEntry::default();
        assert_eq!(entry.permissions_for("read").unwrap()["contents"], "read");
        assert_eq!(entry.permissions_for("write").unwrap()["contents"], "write");
        assert!(entry.permissions_for("admin").is_none());
        entry.permissions.insert("read".into(), [("metadata".to_owned(), "read".to_owned())].into());
        assert_eq!(entry.permissions_for("read").unwrap().keys().collect::<Vec<_>>(), ["metadata"]);
    }
}
