//! Token exchanges: each kind a small module behind one trait, [`Protocol`], so the
//! broker, the config and `mayfly explain` never match on the kind, and the next exchange
//! is a new implementation rather than a change to them.
//!
//! - [`rfc8693`]: OAuth 2.0 Token Exchange, the generic one (`mayfly-sts` speaks it);
//! - [`aws_sts`]: AWS STS `AssumeRoleWithWebIdentity`;
//! - [`trusted_publishing`]: crates.io, npm and PyPI (and PEP 807 indexes), registries
//!   that check the ID token themselves;
//! - [`octo_sts`]: octo-sts, GitHub installation tokens as a repository's trust policy
//!   allows;
//! - [`docker_hub`], [`hugging_face`], [`jfrog`], [`cloudsmith`]: registries that take the
//!   workload's ID token at their own endpoint;
//! - [`gitlab`]: GitLab's token exchange (experimental), tokens for GitLab's services;
//! - [`rubygems`]: RubyGems trusted publishing, push keys for `gem push`;
//! - [`nuget`]: NuGet trusted publishing, API keys for `nuget push`;
//! - [`vault`]: Vault and OpenBao JWT auth login, tokens that revoke themselves;
//! - [`gcp_sts`]: Google Cloud STS (workload identity federation), optionally
//!   impersonating a service account;
//! - [`azure`]: Entra ID federated credentials, and ACR's exchange for its registries.

pub(crate) mod aws_sts;
pub(crate) mod azure;
pub(crate) mod gcp_sts;
pub(crate) mod octo_sts;
pub(crate) mod rfc8693;
pub(crate) mod trusted_publishing;
pub(crate) mod vault;

pub(crate) mod cloudsmith;
pub(crate) mod docker_hub;
pub(crate) mod gitlab;
pub(crate) mod hugging_face;
pub(crate) mod jfrog;
pub(crate) mod nuget;
pub(crate) mod rubygems;

use serde::Serialize;

use crate::config::{ExchangeConfig, ExchangeKind, Route, Scheme};
use crate::http::HttpClient;
use crate::scope::ScopeTemplate;
use crate::{Scope, Secret, Target, Tool};

/// `grant_type` of RFC 8693.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// Subject token type for OIDC ID tokens.
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
/// Requested token type.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The exchange refused, with an RFC 6749 error body.
    #[error("exchange `{exchange}` refused: {code}{}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Denied {
        /// Exchange name.
        exchange: String,
        /// RFC 6749 `error` code.
        code: String,
        /// `error_description`, sanitised.
        description: Option<String>,
    },
    /// The exchange answered with something that is not a token response.
    #[error("exchange `{exchange}` answered {status} with {what}")]
    Malformed {
        /// Exchange name.
        exchange: String,
        /// HTTP status.
        status: u16,
        /// What was wrong.
        what: String,
    },
    /// The request did not get through.
    #[error("exchange `{exchange}`: {source}")]
    Http {
        /// Exchange name.
        exchange: String,
        /// The cause.
        #[source]
        source: crate::http::Error,
    },
}

/// The context sent along with the request: which command, on whose behalf.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Intent {
    /// Tool whose hook asked.
    pub tool: String,
    /// Operation.
    pub operation: String,
    /// Target URL.
    pub target: String,
    /// Session id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The command line that asked (the nearest ancestor that is the tool), redacted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// The agent the session declares (`mayfly exec --agent`): declared, not attested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// This machine's name, for a delegated session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// A successful token response.
#[derive(Debug)]
pub struct ExchangeResponse {
    /// The issued token.
    pub access_token: Secret,
    /// `issued_token_type`.
    pub issued_token_type: String,
    /// Lifetime in seconds (from `expires_in`, else the token's `exp`).
    pub expires_in: Option<u64>,
    /// Granted scope (absent means as requested).
    pub scope: Option<String>,
    /// An identifier of the token that is safe to log (AWS access key id), when the
    /// token is not a JWT with a `jti`.
    pub token_id: Option<String>,
}

/// Everything one exchange request may need.
pub(crate) struct Ask<'a> {
    /// The exchange's config.
    pub config: &'a ExchangeConfig,
    /// The HTTP client for it.
    pub http: &'a HttpClient,
    /// The route that matched.
    pub route: &'a Route,
    /// The target asked for.
    pub target: &'a Target,
    /// The subject token.
    pub subject: &'a Secret,
    /// The scope of this request, built once.
    pub scope: &'a Scope,
    /// Which command, on whose behalf.
    pub intent: &'a Intent,
    /// The session token of a delegated session, sent as the actor token.
    pub actor: Option<&'a Secret>,
}

/// A field an exchange kind reads from its config table beyond the common ones.
#[derive(Debug)]
pub(crate) struct Setting {
    /// Its key in the table.
    pub name: &'static str,
    /// True when the kind cannot work without it.
    pub required: bool,
    /// What it is, for the error that names it missing.
    pub about: &'static str,
}

/// One kind of exchange: how to ask it, what it takes for granted, how to end its tokens.
pub(crate) trait Protocol: Sync {
    /// Its `kind` in the config, and its name in `mayfly explain`.
    fn name(&self) -> &'static str;

    /// Its endpoint when the config names none (a public registry's or AWS's).
    fn default_endpoint(&self) -> Option<&'static str> {
        None
    }

    /// For a registry's own exchange, the tool it serves: it checks the ID token itself
    /// and takes each once (so a fresh one per request, never cached), and it mints
    /// publish tokens only (the registry's index needs none). `None`: any tool.
    fn registry_tool(&self) -> Option<Tool> {
        None
    }

    /// Whether routes of this tool may use it: a registry's own exchange serves its tool
    /// alone, the others any tool.
    fn serves(&self, tool: Tool) -> bool {
        self.registry_tool().is_none_or(|t| t == tool)
    }

    /// True when the ID token is fetched for every exchange, for the audience
    /// [`Protocol::subject_audience`] names, rather than taken from the identity's cache.
    fn fetches_subject_per_request(&self) -> bool {
        self.registry_tool().is_some()
    }

    /// The audience asked of the identity when a route names none.
    fn default_audience(&self, tool: Tool, protocol: &str, host: &str) -> String {
        // A registry's token service is named by its host; other servers by their URL.
        if tool == Tool::Oci { host.to_owned() } else { format!("{protocol}://{host}") }
    }

    /// The scope template a route gets when it names none; `None`: the tool's own
    /// ([`Tool::default_scope`]).
    fn default_scope(&self, _tool: Tool) -> Option<&'static str> {
        None
    }

    /// A scope template this exchange cannot read, as a config error.
    fn check_scope(&self, _template: &ScopeTemplate) -> Result<(), String> {
        Ok(())
    }

    /// The operations a route gets when it names none.
    fn default_operations(&self) -> &'static [&'static str] {
        if self.registry_tool().is_some() { &["publish"] } else { &["read"] }
    }

    /// The user name presented with its tokens when the route names none (`None`: the
    /// tool's usual one); a config error when the exchange cannot do without one.
    fn default_username(&self, _config: &ExchangeConfig, _tool: Tool) -> Result<Option<String>, String> {
        Ok(None)
    }

    /// How tokens are presented when the route names no scheme.
    fn default_scheme(&self) -> Scheme {
        Scheme::Bearer
    }

    /// A route this exchange cannot serve, as a config error.
    fn check_route(&self, _config: &ExchangeConfig, _host: &str) -> Result<(), String> {
        Ok(())
    }

    /// The audience of the ID token for a request: the route's; when it names none, the
    /// one the exchange knows ([`Protocol::known_audience`]).
    fn subject_audience(&self, config: &ExchangeConfig, http: &HttpClient, route: &Route) -> Result<String, Error> {
        let _ = http;
        match self.known_audience(config) {
            Some(known) if route.audience.is_empty() => Ok(known),
            _ => Ok(route.audience.clone()),
        }
    }

    /// The ID token's audience when the route names none and the exchange knows it without
    /// asking anyone: a registry's fixed one, or its endpoint's origin.
    fn known_audience(&self, _config: &ExchangeConfig) -> Option<String> {
        None
    }

    /// The fields of its config table beyond the common ones.
    fn settings(&self) -> &'static [Setting] {
        &[]
    }

    /// Its settings' values, as a config error when one cannot be read; every required
    /// one is present and no unknown one is.
    fn check_settings(&self, _settings: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
        Ok(())
    }

    /// Exchanges the subject token for a token.
    fn request(&self, ask: &Ask<'_>) -> Result<ExchangeResponse, Error>;

    /// Opens a delegated session (RFC 8693 delegation): the subject token in, a session
    /// token out that names the agent in `intent`, to send as the actor token of every
    /// request of the session. `None`: this exchange takes no actor tokens.
    fn open_session(
        &self,
        _config: &ExchangeConfig,
        _http: &HttpClient,
        _subject: &Secret,
        _intent: &Intent,
    ) -> Option<Result<ExchangeResponse, Error>> {
        None
    }

    /// Where it revokes when the config names no `revocation_endpoint`.
    fn default_revocation_endpoint(&self) -> Option<&'static str> {
        None
    }

    /// Whether its config may name a `revocation_endpoint`.
    fn takes_revocation_endpoint(&self) -> bool {
        false
    }

    /// True when tokens it issues can be revoked before they expire.
    fn revokes(&self, _config: &ExchangeConfig) -> bool {
        false
    }

    /// Revokes one token it issued (called only where [`Protocol::revokes`]).
    fn revoke(&self, _config: &ExchangeConfig, _http: &HttpClient, _token: &Secret) -> Result<(), Error> {
        Ok(())
    }
}

impl ExchangeKind {
    /// Every kind, for parsing and for messages.
    pub(crate) const ALL: [Self; 17] = [
        Self::Rfc8693,
        Self::AwsSts,
        Self::CratesIo,
        Self::Npm,
        Self::Pypi,
        Self::Pep807,
        Self::OctoSts,
        Self::DockerHub,
        Self::HuggingFace,
        Self::Jfrog,
        Self::Cloudsmith,
        Self::Vault,
        Self::GcpSts,
        Self::Azure,
        Self::Gitlab,
        Self::Rubygems,
        Self::Nuget,
    ];

    /// The protocol this kind speaks.
    pub(crate) fn protocol(self) -> &'static dyn Protocol {
        match self {
            Self::Rfc8693 => &rfc8693::Rfc8693,
            Self::AwsSts => &aws_sts::AwsSts,
            Self::CratesIo => &trusted_publishing::CratesIo,
            Self::Npm => &trusted_publishing::Npm,
            Self::Pypi => &trusted_publishing::Pypi,
            Self::Pep807 => &trusted_publishing::Pep807,
            Self::OctoSts => &octo_sts::OctoSts,
            Self::DockerHub => &docker_hub::DockerHub,
            Self::HuggingFace => &hugging_face::HuggingFace,
            Self::Jfrog => &jfrog::Jfrog,
            Self::Cloudsmith => &cloudsmith::Cloudsmith,
            Self::Vault => &vault::Vault,
            Self::GcpSts => &gcp_sts::GcpSts,
            Self::Azure => &azure::Azure,
            Self::Gitlab => &gitlab::Gitlab,
            Self::Rubygems => &rubygems::Rubygems,
            Self::Nuget => &nuget::Nuget,
        }
    }

    /// Its `kind` in the config.
    pub fn name(self) -> &'static str {
        self.protocol().name()
    }
}
