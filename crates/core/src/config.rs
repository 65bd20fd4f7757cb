//! The one config file: identity sources, exchanges, and the routes between them.
//!
//! Loaded in two stages: a raw serde shape, then a validated [`Config`] whose routes have
//! normalised hosts and paths and whose names all resolve. No route, no token.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::identity::{self, Source};
use crate::scope::{Error as ScopeError, Scope, ScopeTemplate};
use crate::target::{Operation, Target, Tool, is_segment_prefix, normalize_host, normalize_repo_path};
use crate::{Env, EnvVars, parse_duration};

/// Default lifetime asked for a minted token.
pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(600);
/// Default time before expiry at which a cached token stops being served.
pub(crate) const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// Why the config could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read config `{path}`")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `MAYFLY_CONFIG` names a file that does not exist.
    #[error("config `{path}` (named by MAYFLY_CONFIG) does not exist")]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("invalid config `{path}`: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A value is out of range or a name does not resolve.
    #[error("invalid config `{path}`: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The config file as written: what [`Config::parse`] reads, and what the demo and the
/// tests build (typed, never TOML pasted together) and write with [`ConfigFile::to_toml`].
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[settings]`.
    #[serde(default, skip_serializing_if = "SettingsEntry::is_empty")]
    pub settings: SettingsEntry,
    /// `[identities.NAME]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub identities: BTreeMap<String, IdentityEntry>,
    /// `[exchanges.NAME]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exchanges: BTreeMap<String, ExchangeEntry>,
    /// `[[routes]]`, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteEntry>,
}

impl ConfigFile {
    /// The file's TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a config file always serialises")
    }
}

/// `[settings]` as written.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsEntry {
    /// Time before expiry at which a cached token is refreshed, as a duration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_margin: Option<String>,
    /// Size at which the client audit log is rotated (`10MiB`, `512KiB`, bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_max_size: Option<String>,
    /// Rotated audit log files kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_keep: Option<usize>,
}

impl SettingsEntry {
    fn is_empty(&self) -> bool {
        self.refresh_margin.is_none() && self.audit_max_size.is_none() && self.audit_keep.is_none()
    }
}

/// A size: bytes, or a number with `KiB`, `MiB` or `GiB`.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let scale = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(format!("`audit_max_size = \"{text}\"`: write bytes or a number with KiB, MiB or GiB")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`audit_max_size = \"{text}\"` is not a size above zero"))
}

/// An identity source as written; which fields apply depends on `kind`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityEntry {
    /// `github-actions`, `file`, `env`, `command`, `oidc`, `gce-metadata`, `azure-imds`,
    /// `spiffe` or `auto`.
    pub kind: String,
    /// Audience to ask for; for `oidc`, the ID token's expected `aud` (the client id when
    /// not set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// `file`: the token file; `auto`: the Kubernetes projected token file looked for
    /// (`/var/run/secrets/tokens/mayfly` when not set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// `env`: the variable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub var: Option<String>,
    /// `command`: the argv.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// `github-actions`: the request URL instead of `ACTIONS_ID_TOKEN_REQUEST_URL`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_url: Option<String>,
    /// `auto`: the GitLab `id_tokens` variable (`MAYFLY_ID_TOKEN` when not set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gitlab_variable: Option<String>,
    /// `auto`: the Azure Pipelines service connection id the token is asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub azure_service_connection: Option<String>,
    /// `auto`: whether the cloud metadata servers are probed when nothing else is found
    /// (`true` when not set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_servers: Option<bool>,
    /// `spiffe`: the Workload API's address (`unix:///path`, `unix:/path` or
    /// `tcp://IP:PORT`; `$SPIFFE_ENDPOINT_SOCKET` when not set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
    /// `spiffe` (and `auto`): the SPIFFE ID whose JWT-SVID is taken, when the workload
    /// has several (the first the API gives when not set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// `oidc`: the issuer (discovery at `{issuer}/.well-known/openid-configuration`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// `oidc`: the client id registered at the provider; `azure-imds` (and `auto`): a
    /// user-assigned managed identity's client id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `oidc`: a confidential client's secret (public CLI clients have none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// `oidc`: scopes asked at login (`openid offline_access` when not set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<String>,
    /// `oidc`: longest a login lasts, as a duration (`12h` when not set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_login: Option<String>,
    /// `oidc`: longest a login may go unused, as a duration (`1h` when not set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle: Option<String>,
    /// `oidc`: extra CA certificates (PEM) for reaching the provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// An exchange as written. Fields beyond the common ones are the kind's own settings
/// ([`crate::exchange::Setting`]), checked against what the kind declares, so a misspelt
/// field is still an error.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ExchangeEntry {
    /// The exchange kind (`rfc8693`, `aws-sts`, `crates-io`, `npm`, `pypi`, `pep807`, `octo-sts`,
    /// `docker-hub`, `huggingface`, `jfrog`, `cloudsmith`, `vault`, `gcp-sts`, `azure`, `gitlab`,
    /// `rubygems`, `nuget`).
    pub kind: String,
    /// Where to exchange.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<String>,
    /// Where to revoke (RFC 7009; GitHub's `installation/token` for octo-sts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
    /// Extra CA certificates (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Request timeout, as a duration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Longest wait for a person to approve a held request, as a duration (15m).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_wait: Option<String>,
    /// The kind's own settings (`connection_id`, `role`, ...).
    #[serde(flatten)]
    pub settings: BTreeMap<String, String>,
}

/// A route as written.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteEntry {
    /// Shown in audit lines (`route N` when not set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The tool whose hook asks.
    pub tool: String,
    /// `https` (default) or `http`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Host (and port) the route serves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Path prefix (segments) the route serves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Identity source name.
    pub identity: String,
    /// Exchange name.
    pub exchange: String,
    /// Audience to ask the exchange for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Scope template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Operations the route allows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operations: Option<Vec<String>>,
    /// Lifetime to ask for, as a duration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// How the token is presented.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// User name to present with the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// AWS: the role to assume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// AWS: an inline session policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_policy: Option<String>,
    /// CA certificates (PEM) the host's server certificate may chain to, beside the
    /// system roots: what `mayfly exec --proxy` verifies the upstream against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// A validated config.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where it was read from.
    pub path: PathBuf,
    /// Time before expiry at which cached tokens stop being served.
    pub refresh_margin: Duration,
    /// Size at which the client audit log is rotated.
    pub audit_max_size: u64,
    /// Rotated audit log files kept.
    pub audit_keep: usize,
    /// Identity sources by name.
    pub identities: BTreeMap<String, IdentityConfig>,
    /// Exchanges by name.
    pub exchanges: BTreeMap<String, ExchangeConfig>,
    /// Routes, in file order.
    pub routes: Vec<Route>,
}

/// A named identity source: where a subject token comes from ([`crate::identity`] has
/// one module per kind).
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    /// Its name in the config.
    pub name: String,
    /// How it obtains a token.
    pub(crate) source: Arc<dyn Source>,
    /// Audience of the subject token, where the source lets us choose it.
    pub audience: Option<String>,
}

/// A named token exchange.
#[derive(Clone, Debug)]
pub struct ExchangeConfig {
    /// Its name in the config.
    pub name: String,
    /// Which protocol it speaks.
    pub kind: ExchangeKind,
    /// RFC 8693 token endpoint, or the AWS STS endpoint.
    pub token_endpoint: url::Url,
    /// RFC 7009 revocation endpoint (RFC 8693 exchanges); crates.io revokes at its token
    /// endpoint; AWS credentials cannot be revoked.
    pub revocation_endpoint: Option<url::Url>,
    /// Extra CA certificates (PEM) trusted for this endpoint.
    pub ca_file: Option<PathBuf>,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Longest wait for a person to approve a request the exchange holds for approval.
    pub approval_wait: Duration,
    /// The kind's own settings, each one the kind declares.
    pub settings: BTreeMap<String, String>,
}

/// How long a tool waits for an approval when the config does not say.
pub(crate) const DEFAULT_APPROVAL_WAIT: Duration = Duration::from_secs(15 * 60);

/// The protocol an exchange speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExchangeKind {
    /// OAuth 2.0 Token Exchange (RFC 8693).
    Rfc8693,
    /// AWS STS `AssumeRoleWithWebIdentity`.
    AwsSts,
    /// crates.io trusted publishing: the ID token for a publish token.
    CratesIo,
    /// npm trusted publishing: the ID token for a publish token for one package.
    Npm,
    /// PyPI trusted publishing (`mint-token`): the ID token for an upload token.
    Pypi,
    /// PEP 807 trusted publishing (draft): PyPI's exchange at the endpoints an index names.
    Pep807,
    /// octo-sts: the ID token for a GitHub installation token, as a trust policy allows.
    OctoSts,
    /// Docker Hub OIDC connections: the ID token for an organisation's access token.
    DockerHub,
    /// Hugging Face trusted publishers: the ID token for a token for one Hub repository.
    HuggingFace,
    /// JFrog Artifactory OIDC integrations: the ID token for an access token.
    Jfrog,
    /// Cloudsmith OIDC: the ID token for a service account's token.
    Cloudsmith,
    /// Vault or OpenBao JWT auth: the ID token logs in for a Vault token.
    Vault,
    /// Google Cloud STS: the ID token for a federated (or a service account's) access token.
    GcpSts,
    /// Entra ID federated credentials: the ID token as a client assertion (and ACR's
    /// exchange for its registries).
    Azure,
    /// GitLab's token exchange (experimental): a CI/CD ID token for a GitLab service's token.
    Gitlab,
    /// RubyGems trusted publishing: the ID token for an API key that pushes one gem.
    Rubygems,
    /// NuGet trusted publishing: the ID token for an API key that pushes the policy's
    /// packages, valid an hour.
    Nuget,
}

impl ExchangeKind {
    /// True when the exchange is a registry that checks the ID token itself, once: the ID
    /// token is fetched fresh, for the route's audience, and never cached.
    pub fn wants_fresh_subject(self) -> bool {
        self.protocol().fetches_subject_per_request()
    }

    /// True for a registry's own exchange (trusted publishing): it mints publish tokens
    /// only, and the registry's index needs none.
    pub fn mints_publish_only(self) -> bool {
        self.protocol().registry_tool().is_some()
    }
}

impl ExchangeConfig {
    /// True when tokens it issues can be revoked before they expire.
    pub fn revokes(&self) -> bool {
        self.kind.protocol().revokes(self)
    }

    /// The ID token's audience for a route that names none, when the kind knows it
    /// without asking anyone (`None`: the identity's own, or asked of the registry).
    pub fn known_audience(&self) -> Option<String> {
        self.kind.protocol().known_audience(self)
    }

    /// One of the kind's own settings, when set.
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.settings.get(name).map(String::as_str)
    }
}

/// How the token is presented to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// `Authorization: Basic` with `username` and the token as password.
    Basic,
    /// The token as the whole `Authorization` value, as crates.io takes it (cargo only).
    Plain,
}

/// A route: which targets get tokens, from which identity and exchange, with which scope.
#[derive(Clone, Debug)]
pub struct Route {
    /// Name for messages and audit lines.
    pub name: String,
    /// Tool it serves.
    pub tool: Tool,
    /// `https`, or `http` for loopback.
    pub protocol: String,
    /// Normalised host, matched exactly.
    pub host: String,
    /// Repository path prefix, matched by whole segments.
    pub path: Option<String>,
    /// Identity source name.
    pub identity: String,
    /// Exchange name.
    pub exchange: String,
    /// Audience asked of the exchange.
    pub audience: String,
    /// Scope template with `{path}` (repository or package; `*` for none), `{host}` and
    /// `{operation}`; default per tool
    /// ([`Tool::default_scope`]).
    pub scope: ScopeTemplate,
    /// Operations this route may ask tokens for; others are denied.
    pub operations: Vec<Operation>,
    /// Lifetime asked for.
    pub ttl: Duration,
    /// How the token is presented.
    pub scheme: Scheme,
    /// Username for Basic.
    pub username: String,
    /// AWS: the role to assume.
    pub role_arn: Option<String>,
    /// AWS: an inline session policy (JSON) that narrows the role.
    pub session_policy: Option<String>,
    /// CA certificates the host's server may chain to, beside the system roots (what
    /// `mayfly exec --proxy` verifies the upstream against).
    pub ca_file: Option<PathBuf>,
}

impl Route {
    /// The scope to ask for this target and operation, built once per request from
    /// values checked against the scope grammar (see [`crate::scope`]).
    pub fn scope_for(&self, target: &Target, operation: Operation) -> Result<Scope, ScopeError> {
        self.scope.render(target, operation)
    }

    /// True when a git route binds tokens to the repository path, which git only sends
    /// with `credential.useHttpPath`. (Other tools name their package when there is one,
    /// and `{path}` is `*` when there is none.)
    pub fn needs_path(&self) -> bool {
        self.tool == Tool::Git && (self.path.is_some() || self.scope.mentions_path())
    }

    fn matches(&self, target: &Target) -> bool {
        self.tool == target.tool
            && self.protocol == target.protocol
            && self.host == target.host
            && match (&self.path, &target.path) {
                (None, _) => true,
                (Some(prefix), Some(path)) => is_segment_prefix(prefix, path),
                (Some(_), None) => false,
            }
    }
}

/// For a URL where a host belongs: how to write it as a route.
fn url_hint(text: &str) -> Option<String> {
    let url = url::Url::parse(text).ok().filter(|u| u.has_host())?;
    let host = crate::target::host_port(&url)?;
    let path = url.path().trim_matches('/');
    Some(if path.is_empty() {
        format!("write the host alone: host = \"{host}\"")
    } else {
        format!("write the host and the path apart: host = \"{host}\" and path = \"{path}\"")
    })
}

/// `line L, column C: ` of a byte offset, 1-based, as editors count.
fn line_and_column(text: &str, offset: usize) -> String {
    let before = crate::clip(text, offset);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
    format!("line {line}, column {column}: ")
}

/// Far beyond any config: a larger file is refused rather than parsed on every request.
const MAX_CONFIG_SIZE: u64 = 4 << 20;

impl Config {
    /// When no config file exists: where it belongs and how to write one.
    pub fn missing_note(&self) -> Option<String> {
        (!self.path.is_file()).then(|| {
            format!(
                "no config file at `{}`: write one (the README's Configuration section has an example; `mayfly demo` shows one at work)",
                self.path.display()
            )
        })
    }

    /// The config path: `$MAYFLY_CONFIG`, else `$XDG_CONFIG_HOME/mayfly/config.toml`.
    pub fn default_path(env: &Env) -> Option<PathBuf> {
        env.path(EnvVars::MAYFLY_CONFIG).or_else(|| Some(env.config_dir()?.join("config.toml")))
    }

    /// Loads the config; a missing default file is an empty config (no routes).
    pub fn load(env: &Env) -> Result<Self, Error> {
        let Some(path) = Self::default_path(env) else {
            return Ok(Self::empty(PathBuf::new()));
        };
        // A regular file only: a FIFO or a device named there would hold every tool that
        // asks (opening a FIFO waits for a writer) instead of failing.
        match crate::files::read_regular_text(&path, MAX_CONFIG_SIZE) {
            Ok(text) => Self::parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && env.get(EnvVars::MAYFLY_CONFIG).is_none() => {
                Ok(Self::empty(path))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Missing { path }),
            Err(source) => Err(Error::Read { path, source }),
        }
    }

    fn empty(path: PathBuf) -> Self {
        Self {
            path,
            refresh_margin: DEFAULT_REFRESH_MARGIN,
            audit_max_size: crate::audit::DEFAULT_AUDIT_MAX_SIZE,
            audit_keep: crate::audit::DEFAULT_AUDIT_KEEP,
            identities: BTreeMap::new(),
            exchanges: BTreeMap::new(),
            routes: Vec::new(),
        }
    }

    /// Parses and validates config text.
    pub fn parse(text: &str, path: &Path) -> Result<Self, Error> {
        let raw: ConfigFile = toml::from_str(text).map_err(|e| {
            let place = e.span().map(|span| line_and_column(text, span.start)).unwrap_or_default();
            Error::Parse { path: path.into(), message: format!("{place}{}", e.message()) }
        })?;
        let invalid = |message: String| Error::Invalid { path: path.into(), message };
        let refresh_margin = raw
            .settings
            .refresh_margin
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(invalid)?
            .unwrap_or(DEFAULT_REFRESH_MARGIN);
        let audit_max_size = raw
            .settings
            .audit_max_size
            .as_deref()
            .map(parse_size)
            .transpose()
            .map_err(invalid)?
            .unwrap_or(crate::audit::DEFAULT_AUDIT_MAX_SIZE);
        let audit_keep = raw.settings.audit_keep.unwrap_or(crate::audit::DEFAULT_AUDIT_KEEP);
        let identities = raw
            .identities
            .into_iter()
            .map(|(name, raw)| Ok((name.clone(), identity(name, raw)?)))
            .collect::<Result<_, String>>()
            .map_err(invalid)?;
        let exchanges = raw
            .exchanges
            .into_iter()
            .map(|(name, raw)| Ok((name.clone(), exchange(name, raw)?)))
            .collect::<Result<_, String>>()
            .map_err(invalid)?;
        let mut config = Self {
            path: path.into(),
            refresh_margin,
            audit_max_size,
            audit_keep,
            identities,
            exchanges,
            routes: Vec::new(),
        };
        for (index, raw) in raw.routes.into_iter().enumerate() {
            let route = config.route(index, raw).map_err(invalid)?;
            config.routes.push(route);
        }
        Ok(config)
    }

    fn route(&self, index: usize, raw: RouteEntry) -> Result<Route, String> {
        let tool: Tool = raw.tool.parse().map_err(|e| format!("route {}: {e}", index + 1))?;
        if tool == Tool::Aws {
            return self.aws_route(index, raw);
        }
        let protocol = raw.protocol.clone().unwrap_or_else(|| "https".into()).to_ascii_lowercase();
        let raw_host = raw.host.as_deref().ok_or_else(|| format!("route {}: needs `host`", index + 1))?;
        if tool == Tool::Nuget && (raw.path.is_some() || raw.scheme.is_some()) {
            let field = if raw.path.is_some() { "path" } else { "scheme" };
            return Err(format!(
                "route {}: a nuget route takes no `{field}` (the key is the gallery's, sent as `X-NuGet-ApiKey`)",
                index + 1
            ));
        }
        let host = normalize_host(&protocol, raw_host).map_err(|e| match url_hint(raw_host) {
            Some(hint) => format!("route {}: {e}: {hint}", index + 1),
            None => format!("route {}: {e}", index + 1),
        })?;
        let path = match &raw.path {
            Some(p) => normalize_repo_path(p).map_err(|e| format!("route {}: {e}", index + 1))?,
            None => None,
        };
        let name = raw.name.clone().unwrap_or_else(|| match &path {
            Some(p) => format!("{}:{host}/{p}", tool.as_str()),
            None => format!("{}:{host}", tool.as_str()),
        });
        if protocol != "https" && !(protocol == "http" && crate::http::is_loopback_host(&host)) {
            return Err(format!("route `{name}`: protocol `{protocol}` is not allowed (https, or http to loopback)"));
        }
        // Any exchange but AWS's (its routes are `[aws.NAME]`), and a registry's own only
        // for its tool.
        let kinds = ExchangeKind::ALL
            .into_iter()
            .filter(|k| *k != ExchangeKind::AwsSts && k.protocol().serves(tool))
            .collect::<Vec<_>>();
        self.check_names(&name, &raw, &kinds)?;
        let exchange_config = &self.exchanges[&raw.exchange];
        let exchange = exchange_config.kind.protocol();
        // A registry's own exchange mints publish tokens; its index needs none.
        let publish_only = exchange.registry_tool().is_some();
        let operations = raw
            .operations
            .unwrap_or_else(|| exchange.default_operations().iter().map(|o| (*o).to_owned()).collect())
            .iter()
            .map(|o| o.parse())
            .collect::<Result<Vec<Operation>, _>>()
            .map_err(|e| format!("route `{name}`: {e}"))?;
        let ttl = raw.ttl.as_deref().map(parse_duration).transpose()?.unwrap_or(DEFAULT_TTL);
        exchange.check_route(exchange_config, &host).map_err(|e| format!("route `{name}`: {e}"))?;
        if publish_only && operations.contains(&Operation::Read) {
            return Err(format!("route `{name}`: exchange `{}` mints publish tokens, not `read`", raw.exchange));
        }
        let scheme = match raw.scheme.as_deref() {
            None => exchange.default_scheme(),
            Some("bearer") => Scheme::Bearer,
            Some("basic") => Scheme::Basic,
            Some("plain") if tool == Tool::Cargo => Scheme::Plain,
            Some(other) => {
                let known = if tool == Tool::Cargo { "bearer, basic or plain" } else { "bearer or basic" };
                return Err(format!("route `{name}`: unknown scheme `{other}` ({known})"));
            }
        };
        let scope = ScopeTemplate::parse(
            raw.scope.as_deref().or_else(|| exchange.default_scope(tool)).unwrap_or(tool.default_scope()),
        )
        .map_err(|e| format!("route `{name}`: {e}"))?;
        exchange.check_scope(&scope).map_err(|e| format!("route `{name}`: {e}"))?;
        Ok(Route {
            audience: raw.audience.unwrap_or_else(|| exchange.default_audience(tool, &protocol, &host)),
            scope,
            username: match raw.username {
                Some(username) => username,
                None => exchange
                    .default_username(exchange_config, tool)
                    .map_err(|e| format!("route `{name}`: {e}"))?
                    .unwrap_or_else(|| if tool == Tool::Pypi { "__token__".into() } else { "x-access-token".into() }),
            },
            identity: raw.identity,
            exchange: raw.exchange,
            role_arn: None,
            session_policy: None,
            ca_file: raw.ca_file,
            name,
            tool,
            protocol,
            host,
            path,
            operations,
            ttl,
            scheme,
        })
    }

    /// Identity and exchange names must resolve, and the exchange must speak one of `kinds`.
    fn check_names(&self, name: &str, raw: &RouteEntry, kinds: &[ExchangeKind]) -> Result<(), String> {
        let known = |names: Vec<&String>| match names.as_slice() {
            [] => "none is defined".to_owned(),
            names => format!("known: {}", names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")),
        };
        if !self.identities.contains_key(&raw.identity) {
            return Err(format!(
                "route `{name}`: no identity named `{}` ({})",
                raw.identity,
                known(self.identities.keys().collect())
            ));
        }
        match self.exchanges.get(&raw.exchange) {
            None => Err(format!(
                "route `{name}`: no exchange named `{}` ({})",
                raw.exchange,
                known(self.exchanges.keys().collect())
            )),
            Some(e) if !kinds.contains(&e.kind) => {
                Err(format!("route `{name}`: exchange `{}` is not of the kind this tool needs", raw.exchange))
            }
            Some(_) => Ok(()),
        }
    }

    /// An AWS route is chosen by name, not matched by host:
    /// `credential_process = mayfly-aws-credential NAME`.
    fn aws_route(&self, index: usize, raw: RouteEntry) -> Result<Route, String> {
        let name = raw.name.clone().ok_or_else(|| format!("route {}: an aws route needs a `name`", index + 1))?;
        let key = crate::target::aws_key(&name).map_err(|e| format!("route `{name}`: {e}"))?;
        if raw.host.is_some() || raw.path.is_some() {
            return Err(format!("route `{name}`: an aws route is chosen by name, not by `host` or `path`"));
        }
        self.check_names(&name, &raw, &[ExchangeKind::AwsSts])?;
        let role_arn = raw
            .role_arn
            .clone()
            .filter(|a| a.starts_with("arn:"))
            .ok_or_else(|| format!("route `{name}`: needs `role_arn`"))?;
        // AWS grants 15 minutes to 12 hours; botocore asks again 15 minutes before expiry.
        let ttl = raw.ttl.as_deref().map(parse_duration).transpose()?.unwrap_or(Duration::from_secs(3600));
        if ttl < Duration::from_secs(900) {
            return Err(format!("route `{name}`: AWS credentials live at least 15m (ttl)"));
        }
        Ok(Route {
            tool: Tool::Aws,
            protocol: "aws".into(),
            host: key,
            path: None,
            identity: raw.identity,
            exchange: raw.exchange,
            audience: raw
                .audience
                .unwrap_or_else(|| ExchangeKind::AwsSts.protocol().default_audience(Tool::Aws, "aws", "")),
            scope: ScopeTemplate::parse(raw.scope.as_deref().unwrap_or(&role_arn))
                .map_err(|e| format!("route `{name}`: {e}"))?,
            operations: vec![Operation::Read],
            ttl,
            scheme: Scheme::Bearer,
            username: String::new(),
            role_arn: Some(role_arn),
            session_policy: raw.session_policy,
            ca_file: None,
            name,
        })
    }

    /// The most specific route for a target (longest path prefix), if any.
    pub fn route_for(&self, target: &Target) -> Option<&Route> {
        self.routes
            .iter()
            .filter(|r| r.matches(target))
            .max_by_key(|r| r.path.as_ref().map_or(0, |p| p.split('/').count()))
    }

    /// True when some route serves this tool and host, whatever the path.
    pub fn serves_host(&self, tool: Tool, protocol: &str, host: &str) -> bool {
        self.routes.iter().any(|r| r.tool == tool && r.protocol == protocol && r.host == host)
    }
}

fn identity(name: String, raw: IdentityEntry) -> Result<IdentityConfig, String> {
    let missing = |field: &str| format!("identity `{name}` ({}) needs `{field}`", raw.kind);
    let source: Arc<dyn Source> = match raw.kind.as_str() {
        "github-actions" => Arc::new(identity::GitHubActions { request_url: raw.request_url.clone() }),
        "file" => Arc::new(identity::File { path: raw.path.clone().ok_or_else(|| missing("path"))? }),
        "env" => Arc::new(identity::Variable { var: raw.var.clone().ok_or_else(|| missing("var"))? }),
        "command" => {
            let argv = raw.command.clone().filter(|c| !c.is_empty()).ok_or_else(|| missing("command"))?;
            Arc::new(identity::Command { argv })
        }
        "oidc" => Arc::new(oidc(&name, &raw)?),
        "gce-metadata" => Arc::new(identity::GceMetadata),
        "azure-imds" => Arc::new(identity::AzureImds { client_id: raw.client_id.clone() }),
        "spiffe" => Arc::new(
            identity::Spiffe::new(raw.socket.clone(), raw.spiffe_id.clone())
                .map_err(|why| format!("identity `{name}`: {why}"))?,
        ),
        "auto" => Arc::new(identity::Auto {
            gitlab_variable: raw.gitlab_variable.clone().unwrap_or_else(|| identity::GITLAB_VARIABLE.into()),
            azure_service_connection: raw.azure_service_connection.clone(),
            token_file: raw.path.clone().unwrap_or_else(|| identity::TOKEN_FILE.into()),
            audience: raw.audience.clone(),
            metadata_servers: raw.metadata_servers.unwrap_or(true),
            azure_client_id: raw.client_id.clone(),
            spiffe_id: identity::Spiffe::new(None, raw.spiffe_id.clone())
                .map_err(|why| format!("identity `{name}`: {why}"))?
                .spiffe_id,
            probes: identity::Probes::default(),
        }),
        other => {
            return Err(format!(
                "identity `{name}`: unknown kind `{other}` (github-actions, file, env, command, oidc, gce-metadata, azure-imds, spiffe or auto)"
            ));
        }
    };
    Ok(IdentityConfig::new(name, source, raw.audience))
}

/// An `oidc` identity: the issuer must be https (or loopback http), durations positive.
fn oidc(name: &str, raw: &IdentityEntry) -> Result<identity::Oidc, String> {
    let missing = |field: &str| format!("identity `{name}` (oidc) needs `{field}`");
    let issuer = raw.issuer.as_deref().ok_or_else(|| missing("issuer"))?.trim_end_matches('/').to_owned();
    let url = url::Url::parse(&issuer).map_err(|e| format!("identity `{name}`: `issuer`: {e}"))?;
    crate::http::check_url(&url).map_err(|e| format!("identity `{name}`: `issuer`: {e}"))?;
    let client_id = raw.client_id.clone().filter(|c| !c.is_empty()).ok_or_else(|| missing("client_id"))?;
    let seconds = |field: &str, value: Option<&str>, default: &str| -> Result<i64, String> {
        let duration =
            parse_duration(value.unwrap_or(default)).map_err(|e| format!("identity `{name}`: `{field}`: {e}"))?;
        match i64::try_from(duration.as_secs()) {
            Ok(s) if s > 0 => Ok(s),
            _ => Err(format!("identity `{name}`: `{field}` must be positive")),
        }
    };
    let scopes = raw.scopes.clone().unwrap_or_else(|| "openid offline_access".into());
    if !scopes.split(' ').any(|s| s == "openid") {
        return Err(format!("identity `{name}`: `scopes` must include `openid`"));
    }
    Ok(identity::Oidc {
        name: name.to_owned(),
        issuer,
        audience: raw.audience.clone().unwrap_or_else(|| client_id.clone()),
        client_id,
        client_secret: raw.client_secret.clone().map(crate::Secret::new),
        scopes,
        max_login: seconds("max_login", raw.max_login.as_deref(), "12h")?,
        idle: seconds("idle", raw.idle.as_deref(), "1h")?,
        ca_file: raw.ca_file.clone(),
    })
}

fn exchange(name: String, raw: ExchangeEntry) -> Result<ExchangeConfig, String> {
    let Some(kind) = ExchangeKind::ALL.into_iter().find(|k| k.name() == raw.kind) else {
        let known = ExchangeKind::ALL.map(ExchangeKind::name).join(", ");
        return Err(format!("exchange `{name}`: unknown kind `{}` ({known})", raw.kind));
    };
    check_settings(&name, kind, &raw.settings)?;
    let protocol = kind.protocol();
    let endpoint = raw
        .token_endpoint
        .or_else(|| protocol.default_endpoint().map(str::to_owned))
        .ok_or_else(|| format!("exchange `{name}`: needs `token_endpoint`"))?;
    let parse = |field: &str, value: &str| {
        let url = url::Url::parse(value).map_err(|e| format!("exchange `{name}`: invalid {field}: {e}"))?;
        crate::http::check_url(&url).map_err(|e| format!("exchange `{name}`: {e}"))?;
        Ok::<_, String>(url)
    };
    let token_endpoint = parse("token_endpoint", &endpoint)?;
    let revocation_endpoint = match raw.revocation_endpoint {
        Some(_) if !protocol.takes_revocation_endpoint() => {
            return Err(format!("exchange `{name}`: only rfc8693 and octo-sts exchanges take `revocation_endpoint`"));
        }
        Some(value) => Some(parse("revocation_endpoint", &value)?),
        None => protocol.default_revocation_endpoint().map(|value| parse("revocation_endpoint", value)).transpose()?,
    };
    let timeout = raw.timeout.as_deref().map(parse_duration).transpose()?.unwrap_or(Duration::from_secs(15));
    let approval_wait = raw.approval_wait.as_deref().map(parse_duration).transpose()?.unwrap_or(DEFAULT_APPROVAL_WAIT);
    Ok(ExchangeConfig {
        name,
        kind,
        token_endpoint,
        revocation_endpoint,
        ca_file: raw.ca_file,
        timeout,
        approval_wait,
        settings: raw.settings,
    })
}

/// The settings of an exchange against those its kind declares: none unknown, none
/// required missing, each value as the kind reads it.
fn check_settings(name: &str, kind: ExchangeKind, settings: &BTreeMap<String, String>) -> Result<(), String> {
    let protocol = kind.protocol();
    let declared = protocol.settings();
    if let Some(unknown) = settings.keys().find(|key| !declared.iter().any(|s| s.name == *key)) {
        let takes = match declared {
            [] => String::new(),
            _ => format!(
                "; `{}` also takes {}",
                kind.name(),
                declared.iter().map(|s| format!("`{}`", s.name)).collect::<Vec<_>>().join(", ")
            ),
        };
        return Err(format!("exchange `{name}`: unknown field `{unknown}`{takes}"));
    }
    if let Some(missing) = declared.iter().find(|s| s.required && !settings.contains_key(s.name)) {
        return Err(format!("exchange `{name}`: kind `{}` needs `{}` ({})", kind.name(), missing.name, missing.about));
    }
    protocol.check_settings(settings).map_err(|e| format!("exchange `{name}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_that_is_not_a_regular_file_is_an_error_not_a_wait() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("config.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for path in [fifo, dir.path().to_owned(), PathBuf::from("/dev/zero")] {
            let env = Env::from_pairs([(EnvVars::MAYFLY_CONFIG, path.display().to_string())]);
            let Err(Error::Read { path: named, source }) = Config::load(&env) else {
                panic!("{} loaded", path.display())
            };
            assert_eq!(named, path);
            assert!(source.to_string().contains("file") || source.to_string().contains("folder"), "{source}");
        }
        let empty = Env::from_pairs([(EnvVars::MAYFLY_CONFIG, "/dev/null".to_owned())]);
        assert!(Config::load(&empty).unwrap().routes.is_empty(), "/dev/null reads as an empty config");
    }

    #[test]
    fn a_typed_config_file_writes_what_parse_reads() {
        let file = ConfigFile {
            settings: SettingsEntry {
                refresh_margin: Some("30s".into()),
                audit_max_size: Some("2MiB".into()),
                audit_keep: Some(5),
            },
            identities: [(
                "ci".to_owned(),
                IdentityEntry { kind: "env".into(), var: Some("T".into()), ..Default::default() },
            )]
            .into(),
            exchanges: [(
                "sts".to_owned(),
                ExchangeEntry {
                    kind: "rfc8693".into(),
                    token_endpoint: Some("https://sts.example/token".into()),
                    ..Default::default()
                },
            )]
            .into(),
            routes: vec![RouteEntry {
                tool: "git".into(),
                host: Some("git.example.com".into()),
                path: Some("org/app".into()),
                identity: "ci".into(),
                exchange: "sts".into(),
                operations: Some(vec!["read".into()]),
                ..Default::default()
            }],
        };
        let text = file.to_toml();
        assert!(!text.contains("scheme"), "unset fields are left out: {text}");
        let config = Config::parse(&text, Path::new("config.toml")).unwrap();
        assert_eq!(config.refresh_margin, Duration::from_secs(30));
        assert_eq!((config.audit_max_size, config.audit_keep), (2 << 20, 5));
        let route = &config.routes[0];
        assert_eq!((route.host.as_str(), route.path.as_deref()), ("git.example.com", Some("org/app")));
        assert_eq!(route.operations, vec![Operation::Read]);
        let reread: ConfigFile = toml::from_str(&text).unwrap();
        assert_eq!(reread.to_toml(), text);
    }

    const SAMPLE: &str = r#"
        [identities.ci]
        kind = "github-actions"
        audience = "mayfly"

        [exchanges.corp]
        kind = "rfc8693"
        token_endpoint = "https://sts.example.com/token"

        [[routes]]
        tool = "git"
        host = "Git.Example.com:443"
        identity = "ci"
        exchange = "corp"
        operations = ["read", "write"]

        [[routes]]
        name = "docs read-only"
        tool = "git"
        host = "git.example.com"
        path = "org/docs"
        identity = "ci"
        exchange = "corp"
        ttl = "5m"
    "#;

    fn target(host: &str, path: Option<&str>) -> Target {
        Target::new(Tool::Git, "https", host, path).unwrap()
    }

    #[test]
    fn routes_match_exact_host_and_longest_segment_prefix() {
        let config = Config::parse(SAMPLE, Path::new("t.toml")).unwrap();
        let app = config.route_for(&target("git.example.com", Some("org/app.git"))).unwrap();
        assert_eq!(app.name, "git:git.example.com");
        assert_eq!(app.operations, vec![Operation::Read, Operation::Write]);
        let docs = config.route_for(&target("GIT.example.com", Some("org/docs/sub"))).unwrap();
        assert_eq!(docs.name, "docs read-only");
        assert_eq!(docs.ttl, Duration::from_secs(300));
        assert_eq!(docs.operations, vec![Operation::Read]);
        assert_eq!(config.route_for(&target("git.example.com", Some("org/docsy"))).unwrap().name, app.name);
        assert!(config.route_for(&target("git.example.com.evil", None)).is_none());
        assert!(config.route_for(&target("evil.git.example.com", None)).is_none());
        assert!(config.route_for(&target("git.example.com:8443", None)).is_none());
    }

    #[test]
    fn scope_binds_path_and_operation() {
        let config = Config::parse(SAMPLE, Path::new("t.toml")).unwrap();
        let t = target("git.example.com", Some("org/app.git"));
        let route = config.route_for(&t).unwrap();
        assert_eq!(route.scope_for(&t, Operation::Write).unwrap().as_str(), "repo:org/app:write");
        assert!(route.needs_path());
    }

    #[test]
    fn names_must_resolve_and_plain_http_is_loopback_only() {
        let bad = SAMPLE.replace("exchange = \"corp\"\n        operations", "exchange = \"nope\"\n        operations");
        let err = Config::parse(&bad, Path::new("t.toml")).unwrap_err().to_string();
        assert!(err.contains("no exchange named `nope`"), "{err}");
        let http = SAMPLE.replace("https://sts.example.com", "http://sts.example.com");
        let err = Config::parse(&http, Path::new("t.toml")).unwrap_err().to_string();
        assert!(err.contains("plain http"), "{err}");
        let loopback = SAMPLE.replace("https://sts.example.com", "http://127.0.0.1:8080");
        assert!(Config::parse(&loopback, Path::new("t.toml")).is_ok());
    }

    #[test]
    fn unknown_fields_are_errors() {
        let err = Config::parse("[settings]\nrefresh = 1\n", Path::new("t.toml")).unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{err}");
        let misspelt = "[exchanges.sts]\nkind = \"rfc8693\"\ntoken_endpont = \"https://sts.example/token\"\n";
        let err = Config::parse(misspelt, Path::new("t.toml")).unwrap_err().to_string();
        assert!(err.contains("exchange `sts`: unknown field `token_endpont`"), "{err}");
    }

    #[test]
    fn crates_io_routes_publish_with_plain_tokens_for_the_crates_io_audience() {
        let config = r#"
            [identities.ci]
            kind = "github-actions"

            [exchanges.crates-io]
            kind = "crates-io"

            [[routes]]
            tool = "cargo"
            host = "crates.io"
            identity = "ci"
            exchange = "crates-io"
        "#;
        let parsed = Config::parse(config, Path::new("t.toml")).unwrap();
        let exchange = &parsed.exchanges["crates-io"];
        assert_eq!(exchange.token_endpoint.as_str(), "https://crates.io/api/v1/trusted_publishing/tokens");
        let route = &parsed.routes[0];
        assert_eq!(route.audience, "crates.io");
        assert_eq!(route.scheme, Scheme::Plain);
        assert_eq!(route.operations, vec![Operation::Publish, Operation::Yank, Operation::Owners]);
        let reads = config.replace("exchange = \"crates-io\"\n", "exchange = \"crates-io\"\noperations = [\"read\"]\n");
        let err = Config::parse(&reads, Path::new("t.toml")).unwrap_err().to_string();
        assert!(err.contains("mints publish tokens, not `read`"), "{err}");
        let git = config.replace("tool = \"cargo\"", "tool = \"git\"");
        let err = Config::parse(&git, Path::new("t.toml")).unwrap_err().to_string();
        assert!(err.contains("not of the kind this tool needs"), "{err}");
    }

    #[test]
    fn octo_sts_routes_are_git_routes_with_a_two_word_scope() {
        let config = r#"
            [identities.ci]
            kind = "github-actions"

            [exchanges.github]
            kind = "octo-sts"

            [[routes]]
            tool = "git"
            host = "github.com"
            path = "org"
            identity = "ci"
            exchange = "github"
            operations = ["read", "write"]
        "#;
        let parsed = Config::parse(config, Path::new("t.toml")).unwrap();
        let exchange = &parsed.exchanges["github"];
        assert_eq!(exchange.token_endpoint.as_str(), "https://octo-sts.dev/sts/exchange");
        assert_eq!(
            exchange.revocation_endpoint.as_ref().unwrap().as_str(),
            "https://api.github.com/installation/token"
        );
        assert!(exchange.revokes() && exchange.kind.wants_fresh_subject());
        let route = &parsed.routes[0];
        assert_eq!(
            (route.scheme, route.username.as_str(), route.audience.as_str()),
            (Scheme::Basic, "x-access-token", "")
        );
        let t = target("github.com", Some("org/app.git"));
        assert_eq!(route.scope_for(&t, Operation::Write).unwrap().as_str(), "org/app mayfly-write");
        let one_word = config.replace("exchange = \"github\"\n", "exchange = \"github\"\nscope = \"{path}\"\n");
        let err = Config::parse(&one_word, Path::new("t.toml")).unwrap_err().to_string();
        assert!(err.contains("an octo-sts scope is two words"), "{err}");
        let kubectl = config.replace("tool = \"git\"", "tool = \"kubectl\"").replace("path = \"org\"\n", "");
        let err = Config::parse(&kubectl, Path::new("t.toml")).unwrap_err().to_string();
        assert!(err.contains("not of the kind this tool needs"), "{err}");
    }

    #[test]
    fn docker_hub_signs_in_as_the_organisation_and_checks_its_connection() {
        let config = r#"
            [identities.ci]
            kind = "github-actions"

            [exchanges.hub]
            kind = "docker-hub"
            connection_id = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
            organisation = "acme"

            [[routes]]
            tool = "oci"
            host = "index.docker.io"
            identity = "ci"
            exchange = "hub"
        "#;
        let parsed = Config::parse(config, Path::new("t.toml")).unwrap();
        let route = &parsed.routes[0];
        assert_eq!((route.scheme, route.username.as_str()), (Scheme::Basic, "acme"));
        assert_eq!(parsed.exchanges["hub"].known_audience().as_deref(), Some("https://identity.docker.com"));
        assert!(parsed.exchanges["hub"].kind.wants_fresh_subject());
        let parse_err = |text: &str| Config::parse(text, Path::new("t.toml")).unwrap_err().to_string();
        let err = parse_err(&config.replace("organisation = \"acme\"\n", ""));
        assert!(err.contains("signs in as the organisation: set `organisation` on it or `username` here"), "{err}");
        let by_route = config
            .replace("organisation = \"acme\"\n", "")
            .replace("exchange = \"hub\"\n", "exchange = \"hub\"\nusername = \"acme\"\n");
        assert_eq!(Config::parse(&by_route, Path::new("t.toml")).unwrap().routes[0].username, "acme");
        let err = parse_err(&config.replace("3fa85f64-5717-4562-b3fc-2c963f66afa6", "acme-connection"));
        assert!(err.contains("`connection_id` is not a UUID"), "{err}");
        let err =
            parse_err(&config.replace("organisation = \"acme\"\n", "organisation = \"acme\"\nlifetime = \"6h\"\n"));
        assert!(err.contains("Docker grants 300s to 3600s"), "{err}");
        let err = parse_err(&config.replace("tool = \"oci\"", "tool = \"git\""));
        assert!(err.contains("not of the kind this tool needs"), "{err}");
    }

    #[test]
    fn hugging_face_routes_are_git_routes_whose_scope_is_the_repository() {
        let config = r#"
            [identities.ci]
            kind = "github-actions"

            [exchanges.hf]
            kind = "huggingface"

            [[routes]]
            tool = "git"
            host = "huggingface.co"
            identity = "ci"
            exchange = "hf"
        "#;
        let parsed = Config::parse(config, Path::new("t.toml")).unwrap();
        assert_eq!(parsed.exchanges["hf"].token_endpoint.as_str(), "https://huggingface.co/oauth/token");
        let route = &parsed.routes[0];
        assert_eq!(route.operations, [Operation::Read, Operation::Write]);
        let t = target("huggingface.co", Some("datasets/acme/data"));
        assert_eq!(route.scope_for(&t, Operation::Write).unwrap().as_str(), "datasets/acme/data");
        let two_words = config.replace("exchange = \"hf\"\n", "exchange = \"hf\"\nscope = \"{path} x\"\n");
        let err = Config::parse(&two_words, Path::new("t.toml")).unwrap_err().to_string();
        assert!(err.contains("a Hugging Face scope is one word"), "{err}");
    }

    #[test]
    fn rubygems_routes_push_gems_at_the_exchanges_own_host() {
        let config = r#"
            [identities.ci]
            kind = "github-actions"

            [exchanges.rg]
            kind = "rubygems"

            [[routes]]
            tool = "gem"
            host = "rubygems.org"
            identity = "ci"
            exchange = "rg"
        "#;
        let parsed = Config::parse(config, Path::new("t.toml")).unwrap();
        let exchange = &parsed.exchanges["rg"];
        assert_eq!(
            exchange.token_endpoint.as_str(),
            "https://rubygems.org/api/v1/oidc/trusted_publisher/exchange_token"
        );
        assert!(!exchange.revokes());
        let route = &parsed.routes[0];
        assert_eq!((route.audience.as_str(), route.operations.as_slice()), ("rubygems.org", &[Operation::Publish][..]));
        let elsewhere = config.replace("host = \"rubygems.org\"", "host = \"gems.example\"");
        let err = Config::parse(&elsewhere, Path::new("t.toml")).unwrap_err().to_string();
        assert!(err.contains("exchange `rg` is the gem host at another host"), "{err}");
        let npm = config.replace("tool = \"gem\"", "tool = \"npm\"");
        assert!(Config::parse(&npm, Path::new("t.toml")).is_err(), "a gem host's exchange serves gem routes only");
    }

    #[test]
    fn nuget_routes_push_at_the_gallery_that_mints_the_key() {
        let config = r#"
            [identities.ci]
            kind = "github-actions"

            [exchanges.ng]
            kind = "nuget"
            user = "mayfly-bot"

            [[routes]]
            tool = "nuget"
            host = "www.nuget.org"
            identity = "ci"
            exchange = "ng"
        "#;
        let parsed = Config::parse(config, Path::new("t.toml")).unwrap();
        let exchange = &parsed.exchanges["ng"];
        assert_eq!(exchange.token_endpoint.as_str(), "https://www.nuget.org/api/v2/token");
        assert!(!exchange.revokes() && exchange.kind.wants_fresh_subject());
        let route = &parsed.routes[0];
        assert_eq!(route.audience, "https://www.nuget.org");
        assert_eq!((route.operations.as_slice(), route.scheme), (&[Operation::Publish][..], Scheme::Plain));
        let elsewhere = config.replace("host = \"www.nuget.org\"", "host = \"nuget.example\"");
        let err = Config::parse(&elsewhere, Path::new("t.toml")).unwrap_err().to_string();
        assert!(err.contains("exchange `ng` is the NuGet gallery at another host"), "{err}");
        let no_user = config.replace("user = \"mayfly-bot\"", "");
        assert!(Config::parse(&no_user, Path::new("t.toml")).is_err(), "the policy's user is required");
        let odd_user = config.replace("mayfly-bot", "bot\\nx");
        assert!(Config::parse(&odd_user, Path::new("t.toml")).is_err(), "a user name is one word");
        let gem = config.replace("tool = \"nuget\"", "tool = \"gem\"");
        assert!(Config::parse(&gem, Path::new("t.toml")).is_err(), "the gallery's exchange serves nuget routes only");
        for (field, line) in [("path", "path = \"Mayfly.Demo\""), ("scheme", "scheme = \"bearer\"")] {
            let with = config.replace("exchange = \"ng\"", &format!("exchange = \"ng\"\n{line}"));
            let err = Config::parse(&with, Path::new("t.toml")).unwrap_err().to_string();
            assert!(err.contains(&format!("a nuget route takes no `{field}`")) && !err.contains('\n'), "{err}");
        }
        let elsewhere = config.replace("user = ", "token_endpoint = \"https://www.nuget.org/api/v2/mint\"\nuser = ");
        let err = Config::parse(&elsewhere, Path::new("t.toml")).unwrap_err().to_string();
        assert!(err.contains("does not end in `/token`"), "{err}");
    }
}
