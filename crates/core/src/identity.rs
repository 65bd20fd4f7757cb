//! Identity sources: where the workload's subject token (an OIDC ID token) comes from.
//!
//! Each source re-obtains its token on every call; the broker caches the ones that cost
//! a network round trip (GitHub Actions, commands) like any other short-lived token.
//! Files and variables are re-read every time, because their owners rotate them.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::{IdentityConfig, IdentityKind};
use crate::http::HttpClient;
use crate::jwt::{Claims, peek_claims};
use crate::{Env, EnvVars, Secret};

/// How long a command source may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Why no subject token could be obtained.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The source is not available in this environment.
    #[error("{0}")]
    Unavailable(String),
    /// The source answered with something that is not a token.
    #[error("{0}")]
    Malformed(String),
    /// The token has expired.
    #[error("subject token from `{source_name}` expired at {expired_at}")]
    Expired {
        /// Identity source name.
        source_name: String,
        /// When, RFC 3339.
        expired_at: String,
    },
    /// An HTTP request failed.
    #[error(transparent)]
    Http(#[from] crate::http::Error),
}

/// A subject token and its (unverified) claims.
#[derive(Clone, Debug)]
pub struct SubjectToken {
    /// The token.
    pub token: Secret,
    /// Its claims, read without verification (for expiry and audit lines only).
    pub claims: Claims,
}

impl SubjectToken {
    fn new(source: &str, token: String, now: i64) -> Result<Self, Error> {
        let token = token.trim().to_owned();
        if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::Malformed(format!("identity `{source}` gave an empty or malformed token")));
        }
        let claims = peek_claims(&token).unwrap_or_default();
        if let Some(exp) = claims.exp
            && exp <= now
        {
            return Err(Error::Expired { source_name: source.into(), expired_at: crate::audit::rfc3339(exp) });
        }
        Ok(Self { token: Secret::new(token), claims })
    }

    /// True when the source's answer is worth caching (it cost a round trip).
    pub(crate) fn cacheable(kind: &IdentityKind) -> bool {
        matches!(kind, IdentityKind::GitHubActions { .. } | IdentityKind::Command { .. })
    }
}

/// Obtains a subject token from a configured source.
/// A subject token from a source, as a helper would get it (uncached): for `mayfly
/// doctor --fetch-identity`, which shows its claims.
pub fn fetch_subject(source: &IdentityConfig, env: &Env) -> Result<SubjectToken, Error> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    fetch(source, None, env, || HttpClient::new(Duration::from_secs(15), None), now)
}

pub(crate) fn fetch(
    source: &IdentityConfig,
    audience: Option<&str>,
    env: &Env,
    http: impl FnOnce() -> Result<HttpClient, crate::http::Error>,
    now: i64,
) -> Result<SubjectToken, Error> {
    let audience = audience.or(source.audience.as_deref());
    let raw = match &source.kind {
        IdentityKind::GitHubActions { request_url } => {
            github_actions(source, request_url.as_deref(), audience, env, &http()?)?
        }
        IdentityKind::File { path } => std::fs::read_to_string(path).map_err(|e| {
            Error::Unavailable(format!("identity `{}`: cannot read `{}`: {e}", source.name, path.display()))
        })?,
        IdentityKind::Env { var } => env
            .get(var)
            .ok_or_else(|| Error::Unavailable(format!("identity `{}`: `{var}` is not set", source.name)))?
            .to_owned(),
        IdentityKind::Command { argv } => command(source, argv, audience)?,
    };
    SubjectToken::new(&source.name, raw, now)
}

/// GitHub Actions: `GET $ACTIONS_ID_TOKEN_REQUEST_URL&audience=..` with the request token
/// as Bearer; the answer is `{"value": "<jwt>"}`.
fn github_actions(
    source: &IdentityConfig,
    request_url: Option<&str>,
    audience: Option<&str>,
    env: &Env,
    http: &HttpClient,
) -> Result<String, Error> {
    let hint = "the job needs `permissions: id-token: write`";
    let url = request_url.or(env.get(EnvVars::ACTIONS_ID_TOKEN_REQUEST_URL)).ok_or_else(|| {
        Error::Unavailable(format!("identity `{}`: `ACTIONS_ID_TOKEN_REQUEST_URL` is not set ({hint})", source.name))
    })?;
    let bearer = env.get(EnvVars::ACTIONS_ID_TOKEN_REQUEST_TOKEN).ok_or_else(|| {
        Error::Unavailable(format!("identity `{}`: `ACTIONS_ID_TOKEN_REQUEST_TOKEN` is not set ({hint})", source.name))
    })?;
    let mut url = url::Url::parse(url)
        .map_err(|e| Error::Unavailable(format!("identity `{}`: invalid request URL: {e}", source.name)))?;
    if let Some(audience) = audience {
        // The URL already carries a query; append, never replace.
        url.query_pairs_mut().append_pair("audience", audience);
    }
    let build = || Ok(http.get(&url)?.bearer_auth(bearer).header("Accept", "application/json"));
    match http.send_retrying(&url, crate::http::Retry::ServerError, &build)? {
        (200, body) => parse_github(&source.name, &body),
        (status, _) if status >= 500 => {
            Err(Error::Unavailable(format!("identity `{}`: OIDC endpoint answered {status}", source.name)))
        }
        (status, _) => {
            Err(Error::Unavailable(format!("identity `{}`: OIDC endpoint answered {status} ({hint})", source.name)))
        }
    }
}

fn parse_github(source: &str, body: &[u8]) -> Result<String, Error> {
    #[derive(serde::Deserialize)]
    struct Answer {
        value: Option<String>,
    }
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|_| Error::Malformed(format!("identity `{source}`: OIDC endpoint answer is not JSON")))?;
    answer.value.ok_or_else(|| Error::Malformed(format!("identity `{source}`: OIDC endpoint answer has no `value`")))
}

/// Runs a command (no shell) and takes its stdout; `{audience}` in arguments is replaced.
fn command(source: &IdentityConfig, argv: &[String], audience: Option<&str>) -> Result<String, Error> {
    let args: Vec<String> = argv.iter().map(|a| a.replace("{audience}", audience.unwrap_or(""))).collect();
    let fail = |why: String| Error::Unavailable(format!("identity `{}`: `{}` {why}", source.name, args[0]));
    let mut child = Command::new(&args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| fail(format!("could not start: {e}")))?;
    let mut stdout = child.stdout.take().ok_or_else(|| fail("has no stdout".into()))?;
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.by_ref().take(crate::http::MAX_BODY).read_to_string(&mut out).map(|_| out)
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| fail(e.to_string()))? {
            break status;
        }
        if started.elapsed() > COMMAND_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!("timed out after {}s", COMMAND_TIMEOUT.as_secs())));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = reader.join().map_err(|_| fail("output unreadable".into()))?.map_err(|e| fail(e.to_string()))?;
    if !status.success() {
        return Err(fail(format!("failed ({status})")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn source(kind: IdentityKind) -> IdentityConfig {
        IdentityConfig { name: "t".into(), kind, audience: Some("aud-1".into()) }
    }

    fn no_http() -> Result<HttpClient, crate::http::Error> {
        panic!("no network expected")
    }

    #[test]
    fn file_source_trims_and_rereads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let s = source(IdentityKind::File { path: path.clone() });
        assert_eq!(fetch(&s, None, &Env::default(), no_http, 0).unwrap().token.expose(), "first");
        std::fs::write(&path, "second").unwrap();
        assert_eq!(fetch(&s, None, &Env::default(), no_http, 0).unwrap().token.expose(), "second");
        std::fs::write(&path, "").unwrap();
        assert!(matches!(fetch(&s, None, &Env::default(), no_http, 0), Err(Error::Malformed(_))));
        let missing = source(IdentityKind::File { path: PathBuf::from("/nonexistent/token") });
        assert!(fetch(&missing, None, &Env::default(), no_http, 0).unwrap_err().to_string().contains("cannot read"));
    }

    #[test]
    fn env_source_and_expiry() {
        use base64::Engine;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"exp":100}"#);
        let env = Env::from_pairs([("ID_TOKEN", format!("e30.{payload}.c2ln"))]);
        let s = source(IdentityKind::Env { var: "ID_TOKEN".into() });
        assert!(fetch(&s, None, &env, no_http, 99).is_ok());
        let err = fetch(&s, None, &env, no_http, 100).unwrap_err();
        assert!(matches!(err, Error::Expired { .. }), "{err}");
        let unset = source(IdentityKind::Env { var: "NOPE".into() });
        assert!(fetch(&unset, None, &env, no_http, 0).unwrap_err().to_string().contains("`NOPE` is not set"));
    }

    #[test]
    fn command_source_substitutes_audience() {
        let s = source(IdentityKind::Command { argv: vec!["echo".into(), "tok-{audience}".into()] });
        assert_eq!(fetch(&s, None, &Env::default(), no_http, 0).unwrap().token.expose(), "tok-aud-1");
        let failing = source(IdentityKind::Command { argv: vec!["false".into()] });
        assert!(fetch(&failing, None, &Env::default(), no_http, 0).unwrap_err().to_string().contains("failed"));
    }

    #[test]
    fn github_source_explains_missing_permission() {
        let s = source(IdentityKind::GitHubActions { request_url: None });
        let err = fetch(&s, None, &Env::default(), || HttpClient::new(Duration::from_secs(1), None), 0).unwrap_err();
        assert!(err.to_string().contains("id-token: write"), "{err}");
    }

    #[test]
    fn github_answer_parsing() {
        assert_eq!(parse_github("t", br#"{"value":"jwt","count":1}"#).unwrap(), "jwt");
        assert!(parse_github("t", br#"{"count":1}"#).unwrap_err().to_string().contains("no `value`"));
        assert!(parse_github("t", b"<html>").is_err());
    }
}
