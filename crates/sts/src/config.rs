//! `mayfly-sts` config: who it trusts, what it allows, how it serves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::keys::{KeyState, SigningKeyEntry};
use crate::policy::Rule;

/// Why the config could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read `{path}`")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("invalid config `{path}`: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// An issuer whose ID tokens are accepted as subject tokens.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuer {
    /// The exact `iss`.
    pub issuer: String,
    /// Accepted `aud` values (at least one).
    pub audiences: Vec<String>,
    /// JWKS URL; default: from `{issuer}/.well-known/openid-configuration`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Extra CA certificates (PEM) for reaching the issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Longest lifetime (`exp` minus `iat`) of a subject token accepted from this issuer,
    /// as a duration (`24h` when not set): a token minted to live for months is a
    /// long-lived credential whatever its format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_lifetime: Option<String>,
    /// The Cedar entity type of this issuer's subjects: `Workload` (the default: CI jobs,
    /// services) or `Person` (an IdP that signs people in).
    pub principal: Option<String>,
}

/// The config file as written: what `Config::parse` reads, and what the demo and the
/// tests build (typed, never TOML pasted together) and write with [`ConfigFile::to_toml`].
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `iss` of minted tokens; also the public base URL.
    pub issuer: String,
    /// Address to listen on (`127.0.0.1:8443` when not set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// PKCS#8 PEM file of the signing key: the one active key (or use `signing_keys`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<PathBuf>,
    /// Several signing keys, exactly one `active` (for rotation without downtime).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signing_keys: Vec<SigningKeyEntry>,
    /// How long a SIGTERM waits for requests in flight before exiting (`10s` when not
    /// set), as a duration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_timeout: Option<String>,
    /// Audit log file; `-` writes JSON lines to stdout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_log: Option<PathBuf>,
    /// Size in bytes past which the audit log file rotates (10 MiB when not set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_max_size: Option<u64>,
    /// Rotated audit log files kept, `audit_log.1` the newest (3 when not set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_keep: Option<usize>,
    /// Lifetime when the request names none, as a duration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_ttl: Option<String>,
    /// Upper bound on any lifetime, as a duration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ttl: Option<String>,
    /// Longest lifetime of a session token (`12h` when not set), as a duration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_max_ttl: Option<String>,
    /// File of the embedded revocation store, or a `postgres://` URL of one replicas share.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation_store: Option<PathBuf>,
    /// HTTPS settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// Trusted issuers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_issuers: Vec<TrustedIssuer>,
    /// Allow rules, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleEntry>,
    /// Who may introspect tokens other than their own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub introspection_clients: Vec<IntrospectionClientEntry>,
    /// Cedar policy files or directories, evaluated after the rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PathBuf>,
    /// A Cedar schema to validate them against instead of the built-in one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<PathBuf>,
    /// How long a request waiting for human approval stays open (`10m` when not set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_ttl: Option<String>,
    /// How often a client may poll for an approval (`5s` when not set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_interval: Option<String>,
    /// A claim naming the person behind a token (`email`): a requester and an approver
    /// whose values are equal are the same person, who may not approve their own request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub same_person_claim: Option<String>,
    /// Who may approve requests that a policy's `@approval("GROUP")` forbid holds back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<ApproverEntry>,
    /// Who may end anyone's session (`POST /admin/revoke`); none means no such endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub administrators: Vec<AdministratorEntry>,
    /// How long a session may go unused before its next use ends it (`1h` when not set,
    /// `0s` never), as a duration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_idle: Option<String>,
    /// How approvers sign in to the approval page in a browser; none means no page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_login: Option<ApprovalLogin>,
    /// Where to announce approvals as they open and are decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_webhook: Option<crate::webhook::ApprovalWebhookEntry>,
    /// A GitHub App whose installation tokens answer requests for GitHub repositories.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub github_app: Option<GithubAppEntry>,
    /// Rate limits on exchanges, per subject and per client address (none when not set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<crate::rate_limit::RateLimitEntry>,
    /// How operational lines (start, errors, store down) are written: `text` (the
    /// default: `mayfly-sts: ...` on stderr) or `json` (one object a line on stdout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
}

/// Administrators: the ID tokens of one trusted issuer whose claims match. Matching any
/// entry is enough.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdministratorEntry {
    /// The administrator's ID token's exact `iss`; must be a trusted issuer.
    pub issuer: String,
    /// Claim patterns the administrator's ID token must match (as a rule's `claims`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, String>,
}

/// Members of an approver group: the ID tokens of one trusted issuer whose claims match.
/// Several entries may name the same group; matching any one of them is membership.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApproverEntry {
    /// The group, as policies name it in `@approval("...")`.
    pub name: String,
    /// The approver's ID token's exact `iss`; must be a trusted issuer.
    pub issuer: String,
    /// Claim patterns the approver's ID token must match (as a rule's `claims`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, String>,
}

impl ConfigFile {
    /// The file's TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a config file always serialises")
    }
}

/// `[approval_login]`: approvers sign in to the approval page with OpenID Connect
/// (authorization code with PKCE) at `issuer`, as the confidential (or public) client
/// `client_id`, redirected back to `{issuer of this exchange}/approve/callback`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalLogin {
    /// The provider's exact `iss`; must be a trusted issuer whose `audiences` name
    /// `client_id` (its ID tokens are verified as subject tokens are).
    pub issuer: String,
    /// This exchange's client id at the provider.
    pub client_id: String,
    /// A file holding the client secret (one line), kept out of this file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// An environment variable holding the client secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_env: Option<String>,
    /// Scopes asked for (`openid email` when not set); must include `openid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<String>,
}

impl ApprovalLogin {
    /// The scopes asked for.
    pub fn scopes(&self) -> &str {
        self.scopes.as_deref().unwrap_or("openid email")
    }

    fn check(&self, base: &str, trusted: &[TrustedIssuer]) -> Result<(), String> {
        let Some(issuer) = trusted.iter().find(|t| t.issuer == self.issuer) else {
            return Err(format!("approval_login: issuer `{}` is not in trusted_issuers", self.issuer));
        };
        if self.client_id.trim().is_empty() {
            return Err("approval_login: `client_id` is empty".into());
        }
        if !issuer.audiences.contains(&self.client_id) {
            return Err(format!(
                "approval_login: trusted issuer `{}` must list `{}` in its audiences (the ID tokens' `aud`)",
                self.issuer, self.client_id
            ));
        }
        if self.client_secret_file.is_some() && self.client_secret_env.is_some() {
            return Err("approval_login: set `client_secret_file` or `client_secret_env`, not both".into());
        }
        if !self.scopes().split(' ').any(|s| s == "openid") {
            return Err("approval_login: `scopes` must include `openid`".into());
        }
        // The login cookies are `Secure`: the page must be served over HTTPS.
        if !base.starts_with("https://") {
            return Err("approval_login needs an `https://` issuer (the exchange's public base URL)".into());
        }
        Ok(())
    }
}

/// `[github_app]`: for a request whose audience is one of `audiences` (a GitHub host), the
/// exchange answers with an installation token of this GitHub App, narrowed to the one
/// repository of the scope `repo:OWNER/REPO:OPERATION` and the permissions `permissions`
/// names for OPERATION, instead of a token of its own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GithubAppEntry {
    /// The App's id (the app JWT's `iss`).
    pub app_id: String,
    /// The App's private key (PEM, RS256), read once at start.
    pub private_key_file: PathBuf,
    /// GitHub's REST API (`https://api.github.com` when not set; GHES:
    /// `https://HOST/api/v3`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// Extra CA certificates (PEM) for reaching the API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Requested audiences that mean "a repository on this GitHub" (such as
    /// `https://github.com`).
    pub audiences: Vec<String>,
    /// Operation -> GitHub permissions (`write = { contents = "write" }`). `read` and
    /// `write` default to `contents` read and write; any other operation is refused
    /// unless listed here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub permissions: BTreeMap<String, BTreeMap<String, String>>,
}

impl GithubAppEntry {
    /// The API base URL, without a trailing `/`.
    pub fn api_url(&self) -> &str {
        self.api_url.as_deref().unwrap_or("https://api.github.com").trim_end_matches('/')
    }

    /// The permissions an operation needs: configured, or the defaults for read and write.
    pub fn permissions_for(&self, operation: &str) -> Option<BTreeMap<String, String>> {
        if let Some(configured) = self.permissions.get(operation) {
            return Some(configured.clone());
        }
        let level = match operation {
            "read" => "read",
            "write" => "write",
            _ => return None,
        };
        Some([("contents".to_owned(), level.to_owned())].into())
    }

    fn checked(self) -> Result<Self, String> {
        if self.app_id.trim().is_empty() {
            return Err("github_app: `app_id` is empty".into());
        }
        if self.audiences.is_empty() {
            return Err(
                "github_app: `audiences` needs at least one (the GitHub host, such as `https://github.com`)".into()
            );
        }
        let api = url::Url::parse(self.api_url()).map_err(|e| format!("github_app: `api_url`: {e}"))?;
        let loopback = api.host_str().is_some_and(|h| h == "127.0.0.1" || h == "localhost" || h == "[::1]");
        if api.scheme() != "https" && !(api.scheme() == "http" && loopback) {
            return Err("github_app: `api_url` must be https (plain http only on loopback)".into());
        }
        for (operation, permissions) in &self.permissions {
            if permissions.is_empty() {
                return Err(format!("github_app: permissions for `{operation}` are empty"));
            }
            if let Some((name, level)) =
                permissions.iter().find(|(_, l)| !matches!(l.as_str(), "read" | "write" | "admin"))
            {
                return Err(format!("github_app: `{operation}`: `{name} = \"{level}\"` is not read, write or admin"));
            }
        }
        Ok(self)
    }
}

/// An introspection client as written: its id and its secret's SHA-256, hex.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionClientEntry {
    /// The Basic user name.
    pub id: String,
    /// SHA-256 of the Basic password, 64 hex digits.
    pub secret_sha256: String,
}

/// A resource server allowed to introspect any token (RFC 7662), with HTTP Basic.
///
/// Only the secret's SHA-256 is configured, so the config file holds nothing to log in with.
#[derive(Clone, Debug)]
pub struct IntrospectionClient {
    /// The Basic user name.
    pub id: String,
    /// SHA-256 of the Basic password.
    pub secret_sha256: [u8; 32],
}

/// Certificate and key (PEM files) to serve HTTPS with.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// An allow rule as written.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleEntry {
    /// Shown in audit lines and denials (`rule N` when not set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The subject token's exact `iss`; must be a trusted issuer.
    pub issuer: String,
    /// Claim patterns the subject token must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, String>,
    /// Audiences the rule grants.
    pub audiences: Vec<String>,
    /// Scope templates the rule grants (`{claim}` placeholders).
    pub scopes: Vec<String>,
    /// This rule's upper bound on lifetime, as a duration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ttl: Option<String>,
}

/// A validated config.
#[derive(Clone, Debug)]
pub struct Config {
    /// `iss` of minted tokens; also the public base URL.
    pub issuer: String,
    /// Address to listen on.
    pub listen: String,
    /// The signing keys (`signing_key` is one active key), exactly one active when any
    /// are listed; none makes an ephemeral key.
    pub signing_keys: Vec<SigningKeyEntry>,
    /// How long a SIGTERM waits for requests in flight.
    pub shutdown_timeout: Duration,
    /// Audit log file; `None` writes audit lines to stderr, `-` to stdout.
    pub audit_log: Option<PathBuf>,
    /// Size in bytes past which the audit log file rotates.
    pub audit_max_size: u64,
    /// Rotated audit log files kept.
    pub audit_keep: usize,
    /// Lifetime when the request names none.
    pub default_ttl: Duration,
    /// Upper bound on any lifetime.
    pub max_ttl: Duration,
    /// Upper bound on a session token's lifetime. A session grants nothing by itself (its
    /// audience is the exchange), so it may outlive `max_ttl`; what it yields does not.
    pub session_max_ttl: Duration,
    /// HTTPS settings; plain HTTP is allowed only on loopback.
    pub tls: Option<Tls>,
    /// Trusted issuers.
    pub trusted_issuers: Vec<TrustedIssuer>,
    /// Allow rules, in order.
    pub rules: Vec<Rule>,
    /// File of the embedded revocation store, or a `postgres://` URL of one replicas share;
    /// `None` keeps revocations in memory.
    pub revocation_store: Option<PathBuf>,
    /// Who may introspect tokens other than their own.
    pub introspection_clients: Vec<IntrospectionClient>,
    /// Cedar policy files and directories (every `*.cedar` below), consulted after the
    /// rules; none configured means rules alone decide.
    pub policies: Vec<PathBuf>,
    /// A Cedar schema replacing the built-in one.
    pub schema: Option<PathBuf>,
    /// How long a request waiting for approval stays open.
    pub approval_ttl: Duration,
    /// The polling interval given to clients waiting for an approval.
    pub approval_interval: Duration,
    /// The claim that names the person behind a token, to refuse self-approval.
    pub same_person_claim: Option<String>,
    /// Approver groups' members.
    pub approvers: Vec<ApproverEntry>,
    /// Who may end anyone's session.
    pub administrators: Vec<AdministratorEntry>,
    /// How long a session may go unused; `None` lets it idle until it expires.
    pub session_idle: Option<Duration>,
    /// The approval page's OpenID Connect login, checked.
    pub approval_login: Option<ApprovalLogin>,
    /// Where to announce approvals as they open and are decided.
    pub approval_webhook: Option<crate::webhook::ApprovalWebhook>,
    /// The GitHub App backend, checked.
    pub github_app: Option<GithubAppEntry>,
    /// Rate limits on exchanges; `None` sets none.
    pub rate_limit: Option<crate::rate_limit::RateLimit>,
    /// How operational lines are written.
    pub log_format: crate::log::Format,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.into(), source })?;
        Self::parse(&text).map_err(|message| Error::Invalid { path: path.into(), message })
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::from_file(toml::from_str(text).map_err(|e| e.message().to_owned())?)
    }

    /// Validates a config file's content.
    pub fn from_file(raw: ConfigFile) -> Result<Self, String> {
        let duration = |v: Option<String>, default: u64| -> Result<Duration, String> {
            v.as_deref().map(mayfly_core::parse_duration).transpose().map(|d| d.unwrap_or(Duration::from_secs(default)))
        };
        let default_ttl = duration(raw.default_ttl, 600)?;
        let max_ttl = duration(raw.max_ttl, 3600)?;
        let session_max_ttl = duration(raw.session_max_ttl, 12 * 3600)?;
        let listen = raw.listen.unwrap_or_else(|| "127.0.0.1:8443".into());
        let loopback = listen.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_loopback());
        if raw.tls.is_none() && !loopback {
            return Err(format!("listening on `{listen}` without [tls]: plain HTTP is only allowed on loopback"));
        }
        for issuer in &raw.trusted_issuers {
            if issuer.audiences.is_empty() {
                return Err(format!("trusted issuer `{}` needs at least one audience", issuer.issuer));
            }
            if issuer.principal.as_deref().is_some_and(|p| p != "Workload" && p != "Person") {
                return Err(format!("trusted issuer `{}`: `principal` is `Workload` or `Person`", issuer.issuer));
            }
        }
        let signing_keys = match (raw.signing_key, raw.signing_keys) {
            (Some(_), keys) if !keys.is_empty() => {
                return Err("set `signing_key` or `[[signing_keys]]`, not both".into());
            }
            (Some(file), _) => vec![SigningKeyEntry { file, kid: None, state: KeyState::Active }],
            (None, keys) => keys,
        };
        let active = signing_keys.iter().filter(|k| k.state == KeyState::Active).count();
        if !signing_keys.is_empty() && active != 1 {
            return Err(format!("`[[signing_keys]]`: {active} keys are `active`; exactly one signs"));
        }
        if raw.schema.is_some() && raw.policies.is_empty() {
            return Err("`schema` is set but no `policies` are".into());
        }
        let mut rules = Vec::new();
        for (i, rule) in raw.rules.into_iter().enumerate() {
            let name = rule.name.unwrap_or_else(|| format!("rule {}", i + 1));
            if !raw.trusted_issuers.iter().any(|t| t.issuer == rule.issuer) {
                return Err(format!("`{name}`: issuer `{}` is not in trusted_issuers", rule.issuer));
            }
            if rule.audiences.is_empty() || rule.scopes.is_empty() {
                return Err(format!("`{name}`: needs at least one audience and one scope"));
            }
            let max_ttl = duration(rule.max_ttl, max_ttl.as_secs())?.min(max_ttl);
            rules.push(Rule {
                name,
                issuer: rule.issuer,
                claims: rule.claims,
                audiences: rule.audiences,
                scopes: rule.scopes,
                max_ttl,
            });
        }
        for approver in &raw.approvers {
            if approver.name.trim().is_empty() {
                return Err("an `[[approvers]]` entry needs a `name` (the group policies name)".into());
            }
            if !raw.trusted_issuers.iter().any(|t| t.issuer == approver.issuer) {
                return Err(format!(
                    "approvers `{}`: issuer `{}` is not in trusted_issuers",
                    approver.name, approver.issuer
                ));
            }
        }
        for (i, admin) in raw.administrators.iter().enumerate() {
            if !raw.trusted_issuers.iter().any(|t| t.issuer == admin.issuer) {
                return Err(format!(
                    "administrators entry {}: issuer `{}` is not in trusted_issuers",
                    i + 1,
                    admin.issuer
                ));
            }
        }
        if let Some(login) = &raw.approval_login {
            login.check(&raw.issuer, &raw.trusted_issuers)?;
        }
        let session_idle = Some(duration(raw.session_idle, 3600)?).filter(|d| !d.is_zero());
        let approval_ttl = duration(raw.approval_ttl, 600)?;
        let approval_interval = duration(raw.approval_interval, 5)?;
        if approval_ttl.is_zero() || approval_interval.is_zero() {
            return Err("`approval_ttl` and `approval_interval` must be at least 1s".into());
        }
        if raw.same_person_claim.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err("`same_person_claim` is empty; name a claim such as `email`, or leave it out".into());
        }
        let mut introspection_clients: Vec<IntrospectionClient> = Vec::new();
        for client in raw.introspection_clients {
            if client.id.is_empty() || client.id.contains(':') {
                return Err(format!("introspection client `{}`: `id` must be non-empty and have no `:`", client.id));
            }
            if introspection_clients.iter().any(|c| c.id == client.id) {
                return Err(format!("introspection client `{}` is listed twice", client.id));
            }
            let secret_sha256 = hex::decode(client.secret_sha256.trim())
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| {
                    format!("introspection client `{}`: `secret_sha256` must be 64 hex digits", client.id)
                })?;
            introspection_clients.push(IntrospectionClient { id: client.id, secret_sha256 });
        }
        Ok(Self {
            issuer: raw.issuer.trim_end_matches('/').to_owned(),
            listen,
            signing_keys,
            shutdown_timeout: duration(raw.shutdown_timeout, 10)?,
            audit_log: raw.audit_log,
            audit_max_size: match raw.audit_max_size {
                Some(0) => return Err("`audit_max_size` must be more than 0 bytes".into()),
                size => size.unwrap_or(crate::audit::DEFAULT_MAX_SIZE),
            },
            audit_keep: raw.audit_keep.unwrap_or(crate::audit::DEFAULT_KEEP),
            default_ttl: default_ttl.min(max_ttl),
            max_ttl,
            session_max_ttl,
            tls: raw.tls,
            trusted_issuers: raw.trusted_issuers,
            rules,
            revocation_store: raw.revocation_store,
            introspection_clients,
            policies: raw.policies,
            schema: raw.schema,
            approval_ttl,
            approval_interval,
            same_person_claim: raw.same_person_claim,
            approvers: raw.approvers,
            administrators: raw.administrators,
            session_idle,
            approval_login: raw.approval_login,
            approval_webhook: raw.approval_webhook.map(crate::webhook::ApprovalWebhook::from_entry).transpose()?,
            github_app: raw.github_app.map(GithubAppEntry::checked).transpose()?,
            rate_limit: raw.rate_limit.map(crate::rate_limit::RateLimit::from_entry).transpose()?,
            log_format: crate::log::Format::parse(raw.log_format.as_deref())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";

    #[test]
    fn a_typed_config_file_writes_what_parse_reads() {
        let file = ConfigFile {
            issuer: "https://sts.example/".into(),
            max_ttl: Some("15m".into()),
            trusted_issuers: vec![TrustedIssuer {
                issuer: "https://ci.example".into(),
                audiences: vec!["mayfly-sts".into()],
                ..Default::default()
            }],
            rules: vec![RuleEntry {
                issuer: "https://ci.example".into(),
                claims: [("repository".to_owned(), "org/*".to_owned())].into(),
                audiences: vec!["https://git.example".into()],
                scopes: vec!["repo:{repository}:read".into()],
                ..Default::default()
            }],
            introspection_clients: vec![IntrospectionClientEntry { id: "git".into(), secret_sha256: DIGEST.into() }],
            ..Default::default()
        };
        let text = file.to_toml();
        let config = Config::parse(&text).unwrap();
        assert_eq!(config.issuer, "https://sts.example");
        assert_eq!(config.max_ttl, Duration::from_secs(900));
        assert_eq!(config.rules[0].name, "rule 1");
        assert_eq!(config.rules[0].claims["repository"], "org/*");
        assert_eq!(config.introspection_clients[0].id, "git");
        let reread: ConfigFile = toml::from_str(&text).unwrap();
        assert_eq!(reread.to_toml(), text);
    }

    #[test]
    fn revocation_store_and_introspection_clients_are_read() {
        let config = Config::parse(&format!(
            "issuer = \"https://sts.example\"\nrevocation_store = \"/var/lib/mayfly/revoked.redb\"\n\n[[introspection_clients]]\nid = \"git\"\nsecret_sha256 = \"{DIGEST}\"\n"
        ))
        .unwrap();
        assert_eq!(config.revocation_store.as_deref(), Some(Path::new("/var/lib/mayfly/revoked.redb")));
        assert_eq!(config.introspection_clients.len(), 1);
        assert_eq!(config.introspection_clients[0].id, "git");
        assert_eq!(hex::encode(config.introspection_clients[0].secret_sha256), DIGEST);
        let bare = Config::parse("issuer = \"https://sts.example\"\n").unwrap();
        assert!(bare.revocation_store.is_none() && bare.introspection_clients.is_empty());
    }

    #[test]
    fn sessions_live_twelve_hours_unless_configured_and_beyond_max_ttl() {
        let bare = Config::parse("issuer = \"https://sts.example\"\nmax_ttl = \"15m\"\n").unwrap();
        assert_eq!(bare.session_max_ttl, Duration::from_secs(12 * 3600));
        let set = Config::parse("issuer = \"https://sts.example\"\nsession_max_ttl = \"2h\"\n").unwrap();
        assert_eq!(set.session_max_ttl, Duration::from_secs(7200));
        assert!(Config::parse("issuer = \"https://sts.example\"\nsession_max_ttl = \"soon\"\n").is_err());
    }

    #[test]
    fn approvers_and_approval_timing_are_read() {
        let base = "issuer = \"https://sts.example\"\n";
        let bare = Config::parse(base).unwrap();
        assert_eq!((bare.approval_ttl.as_secs(), bare.approval_interval.as_secs()), (600, 5));
        assert!(bare.approvers.is_empty() && bare.same_person_claim.is_none());
        let trusted = "[[trusted_issuers]]\nissuer = \"https://idp\"\naudiences = [\"mayfly-sts\"]\n";
        let config = Config::parse(&format!(
            "{base}approval_ttl = \"30m\"\napproval_interval = \"2s\"\nsame_person_claim = \"email\"\n{trusted}\n[[approvers]]\nname = \"release-managers\"\nissuer = \"https://idp\"\nclaims = {{ email = \"*@example.com\" }}\n"
        ))
        .unwrap();
        assert_eq!((config.approval_ttl.as_secs(), config.approval_interval.as_secs()), (1800, 2));
        assert_eq!(config.same_person_claim.as_deref(), Some("email"));
        assert_eq!(config.approvers[0].claims["email"], "*@example.com");
        let error =
            Config::parse(&format!("{base}[[approvers]]\nname = \"g\"\nissuer = \"https://idp\"\n")).unwrap_err();
        assert!(error.contains("not in trusted_issuers"), "{error}");
        let error = Config::parse(&format!("{base}{trusted}[[approvers]]\nname = \"\"\nissuer = \"https://idp\"\n"))
            .unwrap_err();
        assert!(error.contains("needs a `name`"), "{error}");
        assert!(Config::parse(&format!("{base}approval_interval = \"0s\"\n")).is_err());
    }

    #[test]
    fn administrators_and_session_idle_are_read() {
        let base = "issuer = \"https://sts.example\"\n";
        let bare = Config::parse(base).unwrap();
        assert!(bare.administrators.is_empty());
        assert_eq!(bare.session_idle, Some(Duration::from_secs(3600)));
        assert_eq!(Config::parse(&format!("{base}session_idle = \"0s\"\n")).unwrap().session_idle, None);
        assert_eq!(
            Config::parse(&format!("{base}session_idle = \"15m\"\n")).unwrap().session_idle,
            Some(Duration::from_secs(900))
        );
        assert!(Config::parse(&format!("{base}session_idle = \"a while\"\n")).is_err());
        let trusted = "[[trusted_issuers]]\nissuer = \"https://idp\"\naudiences = [\"mayfly-sts\"]\n";
        let config = Config::parse(&format!(
            "{base}{trusted}\n[[administrators]]\nissuer = \"https://idp\"\nclaims = {{ email = \"*@example.com\" }}\n"
        ))
        .unwrap();
        assert_eq!(config.administrators[0].claims["email"], "*@example.com");
        let error = Config::parse(&format!("{base}[[administrators]]\nissuer = \"https://idp\"\n")).unwrap_err();
        assert!(error.contains("not in trusted_issuers"), "{error}");
    }

    #[test]
    fn approval_login_is_checked_against_the_trusted_issuers() {
        let base = "issuer = \"https://sts.example\"\n";
        let trusted = "[[trusted_issuers]]\nissuer = \"https://idp\"\naudiences = [\"mayfly-sts\", \"approvals\"]\n";
        let login =
            |extra: &str| format!("[approval_login]\nissuer = \"https://idp\"\nclient_id = \"approvals\"\n{extra}");
        let config =
            Config::parse(&format!("{base}{trusted}{}", login("client_secret_env = \"APPROVALS_SECRET\"\n"))).unwrap();
        let read = config.approval_login.unwrap();
        assert_eq!((read.scopes(), read.client_secret_env.as_deref()), ("openid email", Some("APPROVALS_SECRET")));
        for (text, expected) in [
            (format!("{base}{}", login("")), "not in trusted_issuers"),
            (
                format!("{base}{trusted}{}", login("").replace("\"approvals\"\n", "\"other\"\n")),
                "must list `other` in its audiences",
            ),
            (
                format!("{base}{trusted}{}", login("client_secret_env = \"A\"\nclient_secret_file = \"/s\"\n")),
                "not both",
            ),
            (format!("{base}{trusted}{}", login("scopes = \"email\"\n")), "must include `openid`"),
            (format!("{base}{trusted}{}", login("client_secret = \"inline\"\n")), "unknown field"),
            (format!("{}{trusted}{}", base.replace("https", "http"), login("")), "needs an `https://` issuer"),
        ] {
            let error = Config::parse(&text).unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn one_signing_key_or_several_with_exactly_one_active() {
        let base = "issuer = \"https://sts.example\"\n";
        let single = Config::parse(&format!("{base}signing_key = \"/k.pem\"\n")).unwrap();
        assert_eq!(
            single.signing_keys,
            [SigningKeyEntry { file: "/k.pem".into(), kid: None, state: KeyState::Active }]
        );
        assert_eq!(single.shutdown_timeout, Duration::from_secs(10));
        let key = |file: &str, state: &str| format!("[[signing_keys]]\nfile = \"{file}\"\nstate = \"{state}\"\n");
        let rotated = Config::parse(&format!(
            "{base}shutdown_timeout = \"30s\"\n{}{}",
            key("/a", "published"),
            key("/b", "active")
        ))
        .unwrap();
        assert_eq!(rotated.signing_keys.len(), 2);
        assert_eq!(rotated.shutdown_timeout, Duration::from_secs(30));
        for (keys, expected) in [
            (key("/a", "active") + &key("/b", "active"), "2 keys are `active`; exactly one signs"),
            (key("/a", "published"), "0 keys are `active`"),
            (key("/a", "current"), "unknown variant `current`"),
            (format!("signing_key = \"/k.pem\"\n{}", key("/a", "active")), "not both"),
        ] {
            let error = Config::parse(&format!("{base}{keys}")).unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn bad_introspection_clients_are_refused() {
        let client = |id: &str, digest: &str| {
            format!("[[introspection_clients]]\nid = \"{id}\"\nsecret_sha256 = \"{digest}\"\n")
        };
        for (clients, expected) in [
            (client("git", "secret"), "64 hex digits"),
            (client("git", &DIGEST[2..]), "64 hex digits"),
            (client("a:b", DIGEST), "no `:`"),
            (client("", DIGEST), "non-empty"),
            (client("git", DIGEST) + &client("git", DIGEST), "listed twice"),
            ("[[introspection_clients]]\nid = \"git\"\nsecret = \"plain\"\n".to_owned(), "unknown field"),
        ] {
            let error = Config::parse(&format!("issuer = \"https://sts.example\"\n{clients}")).unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
    }
}
