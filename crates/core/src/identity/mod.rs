//! Identity sources: where the workload's subject token (an OIDC ID token) comes from.
//!
//! Each kind is a small module behind one trait, [`Source`], as the exchanges are, so the
//! broker, `mayfly explain`, `doctor` and `status` never match on the kind, and the next
//! source (an OIDC login session, GitLab's or Buildkite's variables, a SPIFFE socket, a
//! cloud metadata probe, `auto` trying several in order) is a new implementation:
//!
//! - [`github`]: GitHub Actions' job OIDC endpoint;
//! - [`file`]: a file its owner rotates (Kubernetes projected tokens, SPIFFE JWT-SVIDs);
//! - [`variable`]: an environment variable (GitLab `id_tokens`, CircleCI, Bitbucket);
//! - [`command`]: a command whose stdout is the token;
//! - [`oidc`]: a person's login at an OpenID provider (`mayfly login`), kept in memory;
//! - [`azure`]: Azure Pipelines' job OIDC endpoint;
//! - [`metadata`]: the GCE/GKE metadata server and Azure's Instance Metadata Service;
//! - [`spiffe`]: a JWT-SVID from the SPIFFE Workload API, over gRPC on a local socket;
//! - [`auto`]: the first of these the environment offers, in a documented order.
//!
//! Each source re-obtains its token on every call; the broker caches the ones that cost
//! a network round trip or a run (GitHub Actions, commands) like any other short-lived
//! token. Files and variables are re-read every time, because their owners rotate them.

mod auto;
mod azure;
mod command;
mod file;
mod github;
mod metadata;
mod oidc;
mod spiffe;
mod variable;
mod workload_api;

use std::sync::Arc;
use std::time::Duration;

pub use auto::Detected;
pub(crate) use auto::{Auto, GITLAB_VARIABLE, Probes, TOKEN_FILE};
pub(crate) use azure::AzurePipelines;
pub(crate) use command::Command;
pub(crate) use file::File;
pub(crate) use github::GitHubActions;
pub(crate) use metadata::{AzureImds, GceMetadata};
pub(crate) use oidc::Oidc;
pub(crate) use spiffe::Spiffe;
pub(crate) use variable::Variable;

use crate::config::IdentityConfig;
use crate::http::HttpClient;
use crate::jwt::{Claims, peek_claims};
use crate::{Env, Secret};

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
    /// The token a source gave, trimmed; refused when it is empty, could smuggle a line
    /// (whitespace, control characters) or has expired.
    pub(crate) fn new(source: &str, token: String, now: i64) -> Result<Self, Error> {
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
}

/// What a source can tell about itself here without a request or a run: for `mayfly
/// doctor` and `mayfly status`, which show claims, never tokens.
#[derive(Debug)]
pub enum Presence {
    /// Its token, read at no cost (a file, a variable) and trimmed.
    Token(Secret),
    /// It looks usable; its token costs a request or a run, so it is fetched only when a
    /// route needs it.
    Ready,
    /// It cannot give a token here: why, and the likely fix.
    Absent(String),
}

/// What one fetch may use.
pub(crate) struct Ask<'a> {
    /// The source's name in the config, for messages.
    pub(crate) name: &'a str,
    /// The audience to ask for, where the source lets us choose.
    pub(crate) audience: Option<&'a str>,
    /// The environment it reads.
    pub(crate) env: &'a Env,
    /// An HTTP client, built only by the sources that need one.
    pub(crate) http: &'a dyn Fn() -> Result<HttpClient, crate::http::Error>,
    /// Now, unix seconds, to refuse an expired token.
    pub(crate) now: i64,
}

/// One kind of identity source. Its `Debug` form is part of the cache key of the subject
/// tokens it gives, so a change to its config is a different key.
pub(crate) trait Source: std::fmt::Debug + Send + Sync {
    /// Its `kind` in the config.
    fn kind(&self) -> &'static str;

    /// Where its token comes from, safe to show: a file's path, a variable's name, a
    /// command's shape (never its whole argv), an endpoint's host.
    fn origin(&self, env: &Env) -> String;

    /// The environment variables that carry its token or the means to get one: kept from
    /// a command that must not mint for itself (`mayfly exec --proxy`).
    fn variables(&self) -> Vec<String> {
        Vec::new()
    }

    /// The files that hold its token: hidden from a command that must not mint for
    /// itself (`mayfly exec --proxy --isolate`).
    fn files(&self) -> Vec<std::path::PathBuf> {
        Vec::new()
    }

    /// True when its answer is worth caching: it cost a round trip or a run.
    fn cacheable(&self) -> bool {
        false
    }

    /// What it can tell about itself here without a request or a run.
    fn look(&self, env: &Env) -> Presence;

    /// Its token. `Ok(None)`: it is not available here (its variables are unset), and
    /// [`Source::look`] says why; `Err`: it is, and failed.
    fn fetch(&self, ask: &Ask<'_>) -> Result<Option<SubjectToken>, Error>;

    /// The login behind an `oidc` source, for `mayfly login`, `logout` and `status`.
    fn oidc(&self) -> Option<&Oidc> {
        None
    }

    /// Whether tokens minted from it may still be served from the cache. A login that
    /// ended (idle, past its lifetime, logged out) takes its cached tokens with it;
    /// workload sources have nothing to end.
    fn vouches_for_cached(&self, _name: &str, _env: &Env, _now: i64) -> Result<(), Error> {
        Ok(())
    }

    /// The source that answers in its place here, for a source that picks one (`auto`):
    /// its caching and its cache key are that source's.
    fn answering(&self, _env: &Env, _audience: Option<&str>) -> Option<Arc<dyn Source>> {
        None
    }

    /// What it found here, for a source that picks one (`auto`).
    fn detected(&self, _env: &Env) -> Option<Detected> {
        None
    }
}

impl IdentityConfig {
    /// A named source.
    pub(crate) fn new(name: String, source: Arc<dyn Source>, audience: Option<String>) -> Self {
        Self { name, source, audience }
    }

    /// The identity source the environment offers by itself, found the way `kind =
    /// "auto"` finds one with its defaults (GitHub Actions, GitLab CI, CircleCI,
    /// Buildkite, Bitbucket Pipelines, Azure Pipelines, a Kubernetes token file, a SPIFFE
    /// Workload API, then the cloud metadata servers): for `mayfly doctor` and `mayfly setup` when the config
    /// names none. Named after its kind.
    pub fn detect(env: &Env) -> Option<Self> {
        Self::detect_with(env, TOKEN_FILE.into(), true)
    }

    /// [`IdentityConfig::detect`] with its token file and whether metadata servers are probed.
    fn detect_with(env: &Env, token_file: std::path::PathBuf, metadata_servers: bool) -> Option<Self> {
        // A GitHub Actions job without its request token is still offered, so `doctor`
        // says what it lacks (`permissions: id-token: write`).
        if env.get(crate::EnvVars::ACTIONS_ID_TOKEN_REQUEST_URL).is_some() {
            let source = Arc::new(GitHubActions { request_url: None });
            return Some(Self::new(source.kind().to_owned(), source, None));
        }
        let auto = Auto {
            gitlab_variable: GITLAB_VARIABLE.into(),
            azure_service_connection: None,
            token_file,
            audience: None,
            metadata_servers,
            azure_client_id: None,
            spiffe_id: None,
            probes: Probes::default(),
        };
        let source = auto.found(env, None).into_iter().next()?.source;
        Some(Self::new(source.kind().to_owned(), source, None))
    }

    /// Its `kind` in the config.
    pub fn kind(&self) -> &'static str {
        self.source.kind()
    }

    /// Where its token comes from, safe to show: a file's path, `$VARIABLE`, a command's
    /// shape, an endpoint's host.
    pub fn origin(&self, env: &Env) -> String {
        self.source.origin(env)
    }

    /// The environment variables that carry its token or the means to get one.
    pub fn variables(&self) -> Vec<String> {
        self.source.variables()
    }

    /// The files that hold its token.
    pub fn files(&self) -> Vec<std::path::PathBuf> {
        self.source.files()
    }

    /// What it can tell about itself here without a request or a run.
    pub fn look(&self, env: &Env) -> Presence {
        self.source.look(env)
    }

    /// Whether tokens minted from it may still be served from the cache.
    pub(crate) fn vouches_for_cached(&self, env: &Env, now: i64) -> Result<(), Error> {
        self.source.vouches_for_cached(&self.name, env, now)
    }

    /// What a source that picks one (`auto`) found here, and which one it uses.
    pub fn detected(&self, env: &Env) -> Option<Detected> {
        self.source.detected(env)
    }

    /// The source that gives its tokens here: itself, or the one `auto` picks.
    fn answering(&self, env: &Env) -> Arc<dyn Source> {
        self.source.answering(env, self.audience.as_deref()).unwrap_or_else(|| self.source.clone())
    }

    /// True when the subject tokens it gives here are worth caching.
    pub(crate) fn cacheable(&self, env: &Env) -> bool {
        self.answering(env).cacheable()
    }

    /// What goes into the cache key of its subject tokens here: the kind and config of
    /// the source that gives them.
    pub(crate) fn cache_key(&self, env: &Env) -> String {
        format!("{:?}", self.answering(env))
    }
}

/// A subject token from a source, as a helper would get it (uncached): for `mayfly
/// doctor --fetch-identity`, which shows its claims.
pub fn fetch_subject(source: &IdentityConfig, env: &Env) -> Result<SubjectToken, Error> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    fetch(source, None, env, &|| HttpClient::new(Duration::from_secs(15), None), now)
}

/// A subject token for `audience` (else the source's own), or why there is none.
pub(crate) fn fetch(
    source: &IdentityConfig,
    audience: Option<&str>,
    env: &Env,
    http: &dyn Fn() -> Result<HttpClient, crate::http::Error>,
    now: i64,
) -> Result<SubjectToken, Error> {
    let ask = Ask { name: &source.name, audience: audience.or(source.audience.as_deref()), env, http, now };
    match source.source.fetch(&ask)? {
        Some(token) => Ok(token),
        None => {
            let why = match source.look(env) {
                Presence::Absent(why) => why,
                Presence::Token(_) | Presence::Ready => "it is not available here".to_owned(),
            };
            Err(Error::Unavailable(format!("identity `{}`: {why}", source.name)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    use crate::EnvVars;

    fn identity(source: impl Source + 'static) -> IdentityConfig {
        IdentityConfig::new("t".into(), Arc::new(source), Some("aud-1".into()))
    }

    fn no_http() -> Result<HttpClient, crate::http::Error> {
        panic!("no network expected")
    }

    #[test]
    fn file_source_trims_and_rereads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let s = identity(File { path: path.clone() });
        assert_eq!(fetch(&s, None, &Env::default(), &no_http, 0).unwrap().token.expose(), "first");
        std::fs::write(&path, "second").unwrap();
        assert_eq!(fetch(&s, None, &Env::default(), &no_http, 0).unwrap().token.expose(), "second");
        std::fs::write(&path, "").unwrap();
        assert!(matches!(fetch(&s, None, &Env::default(), &no_http, 0), Err(Error::Malformed(_))));
        let missing = identity(File { path: PathBuf::from("/nonexistent/token") });
        let err = fetch(&missing, None, &Env::default(), &no_http, 0).unwrap_err().to_string();
        assert!(err.starts_with("identity `t`: cannot read `/nonexistent/token`"), "{err}");

        // Through a symbolic link, as Kubernetes projects its tokens.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        std::fs::write(&path, "linked").unwrap();
        assert_eq!(
            fetch(&identity(File { path: link }), None, &Env::default(), &no_http, 0).unwrap().token.expose(),
            "linked"
        );
        // Refused, not waited on or read: a FIFO without a writer, a device, a kernel file.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for special in [fifo, PathBuf::from("/dev/zero"), PathBuf::from("/proc/self/environ")] {
            let err = fetch(&identity(File { path: special.clone() }), None, &Env::default(), &no_http, 0).unwrap_err();
            let err = err.to_string();
            assert!(err.contains(&format!("cannot read `{}`", special.display())) && err.contains("file"), "{err}");
        }
    }

    #[test]
    fn env_source_and_expiry() {
        use base64::Engine;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"exp":100}"#);
        let env = Env::from_pairs([("ID_TOKEN", format!("e30.{payload}.c2ln"))]);
        let s = identity(Variable { var: "ID_TOKEN".into() });
        assert!(fetch(&s, None, &env, &no_http, 99).is_ok());
        let err = fetch(&s, None, &env, &no_http, 100).unwrap_err();
        assert!(matches!(err, Error::Expired { .. }), "{err}");
        let unset = identity(Variable { var: "NOPE".into() });
        assert_eq!(fetch(&unset, None, &env, &no_http, 0).unwrap_err().to_string(), "identity `t`: `NOPE` is not set");
    }

    #[test]
    fn command_source_substitutes_audience() {
        let s = identity(Command { argv: vec!["echo".into(), "tok-{audience}".into()] });
        assert_eq!(fetch(&s, None, &Env::default(), &no_http, 0).unwrap().token.expose(), "tok-aud-1");
        let failing = identity(Command { argv: vec!["false".into()] });
        assert!(fetch(&failing, None, &Env::default(), &no_http, 0).unwrap_err().to_string().contains("failed"));
    }

    #[test]
    fn github_source_explains_missing_permission() {
        let s = identity(GitHubActions { request_url: None });
        let err = fetch(&s, None, &Env::default(), &no_http, 0).unwrap_err().to_string();
        assert_eq!(
            err,
            "identity `t`: `ACTIONS_ID_TOKEN_REQUEST_URL` is not set (the job needs `permissions: id-token: write`)"
        );
    }

    #[test]
    fn detect_offers_every_ci_auto_finds() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let detect = |pairs: &[(&str, &str)]| {
            let env = Env::from_pairs(pairs.iter().copied());
            IdentityConfig::detect_with(&env, file.clone(), false).map(|s| (s.kind(), format!("{:?}", s.source)))
        };
        assert!(detect(&[]).is_none());
        let github = [(EnvVars::ACTIONS_ID_TOKEN_REQUEST_URL, "u"), (EnvVars::ACTIONS_ID_TOKEN_REQUEST_TOKEN, "t")];
        assert_eq!(detect(&github).unwrap().0, "github-actions");
        assert_eq!(detect(&[("GITLAB_CI", "true")]).unwrap(), ("env", r#"Variable { var: "MAYFLY_ID_TOKEN" }"#.into()));
        assert_eq!(detect(&[("BUILDKITE", "true")]).unwrap().0, "command");
        assert_eq!(detect(&[("SYSTEM_OIDCREQUESTURI", "https://dev.azure.com/o")]).unwrap().0, "azure-pipelines");
        assert_eq!(detect(&[("SPIFFE_ENDPOINT_SOCKET", "unix:///s")]).unwrap().0, "spiffe");
        std::fs::write(&file, "tok").unwrap();
        assert_eq!(detect(&[]).unwrap().0, "file");
    }

    #[test]
    fn each_source_names_its_kind_and_origin_without_secrets() {
        let env = Env::from_pairs([("PATH", "/usr/bin:/bin")]);
        let shown: Vec<(&str, String, bool)> = [
            identity(GitHubActions { request_url: Some("https://issuer.example/t?a=1".into()) }),
            identity(File { path: "/run/token".into() }),
            identity(Variable { var: "ID_TOKEN".into() }),
            identity(Command { argv: vec!["tool".into(), "--password=hunter2".into(), "print".into()] }),
        ]
        .iter()
        .map(|s| (s.kind(), s.origin(&env), s.cacheable(&env)))
        .collect();
        assert_eq!(
            shown,
            [
                ("github-actions", "issuer.example".into(), true),
                ("file", "/run/token".into(), false),
                ("env", "$ID_TOKEN".into(), false),
                ("command", "tool --password=[redacted] print".into(), true),
            ]
        );
    }

    #[test]
    fn sources_look_without_a_request_or_a_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, " tok \n").unwrap();
        let env = Env::from_pairs([("PATH", "/usr/bin:/bin"), ("ID_TOKEN", "var-tok")]);
        let token = |presence: Presence| match presence {
            Presence::Token(token) => token.expose().to_owned(),
            other => panic!("{other:?}"),
        };
        assert_eq!(token(identity(File { path }).look(&env)), "tok");
        assert_eq!(token(identity(Variable { var: "ID_TOKEN".into() }).look(&env)), "var-tok");
        assert!(matches!(identity(Command { argv: vec!["sh".into()] }).look(&env), Presence::Ready));
        let absent = identity(Command { argv: vec!["no-such-tool-here".into()] }).look(&env);
        assert!(matches!(absent, Presence::Absent(why) if why == "`no-such-tool-here` is not on PATH"));
    }

    #[test]
    fn cache_keys_of_cached_subject_tokens_stay_as_they_were() {
        // These name entries already in users' caches: a change would orphan them.
        let env = Env::default();
        assert_eq!(
            identity(GitHubActions { request_url: None }).cache_key(&env),
            "GitHubActions { request_url: None }"
        );
        assert_eq!(identity(Command { argv: vec!["a".into()] }).cache_key(&env), r#"Command { argv: ["a"] }"#);
    }

    #[test]
    fn a_job_offers_its_github_source() {
        let detect = |env: &Env| IdentityConfig::detect_with(env, "/nonexistent/token".into(), false);
        assert!(detect(&Env::default()).is_none());
        let env = Env::from_pairs([(EnvVars::ACTIONS_ID_TOKEN_REQUEST_URL, "https://t.example/x")]);
        let found = detect(&env).unwrap();
        assert_eq!(
            (found.name.as_str(), found.kind(), found.origin(&env)),
            ("github-actions", "github-actions", "t.example".into())
        );
    }
}
