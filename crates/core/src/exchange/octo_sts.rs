//! octo-sts: a GitHub App that trades an OIDC ID token for a GitHub installation token,
//! as a trust policy in the repository allows.
//!
//! `GET https://DOMAIN/sts/exchange?scope=ORG/REPO&identity=NAME` with
//! `Authorization: Bearer ID_TOKEN` (audience `DOMAIN`) loads the trust policy
//! `.github/chainguard/NAME.sts.yaml` of ORG/REPO (of the organisation's policy
//! repository when the scope is an organisation alone) and answers
//! `{"token": "ghs_..."}`: an installation token with the policy's permissions, which
//! GitHub lets live an hour. Errors are grpc-gateway documents
//! `{"code": N, "message": "...", "details": []}` with the HTTP status of the gRPC code.
//!
//! `DELETE https://api.github.com/installation/token` with `Authorization: Bearer TOKEN`
//! revokes it (204); GitHub Enterprise Server serves it under `https://HOST/api/v3`.

use std::time::Duration;

use serde::Deserialize;

use super::{Ask, Error, ExchangeResponse, Protocol};
use crate::config::{ExchangeConfig, Route, Scheme};
use crate::http::{HttpClient, Retry};
use crate::scope::ScopeTemplate;
use crate::{Secret, Tool, sanitize_for_terminal};

/// The public octo-sts.
const OCTO_STS_ENDPOINT: &str = "https://octo-sts.dev/sts/exchange";
/// Where github.com revokes installation tokens.
const GITHUB_REVOCATION_ENDPOINT: &str = "https://api.github.com/installation/token";
/// The scope of an octo-sts route when it names none: the repository whose trust policy
/// decides, and the policy named after the operation.
const DEFAULT_SCOPE: &str = "{path} mayfly-{operation}";
/// How long an installation token lives; octo-sts's answer does not say.
pub(crate) const INSTALLATION_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// octo-sts: GitHub installation tokens for git, revocable at GitHub.
pub(crate) struct OctoSts;

impl Protocol for OctoSts {
    fn name(&self) -> &'static str {
        "octo-sts"
    }

    fn default_endpoint(&self) -> Option<&'static str> {
        Some(OCTO_STS_ENDPOINT)
    }

    fn default_revocation_endpoint(&self) -> Option<&'static str> {
        Some(GITHUB_REVOCATION_ENDPOINT)
    }

    fn serves(&self, tool: Tool) -> bool {
        // An installation token is a GitHub token: git's, nobody else's.
        tool == Tool::Git
    }

    fn fetches_subject_per_request(&self) -> bool {
        // Its ID token's audience is octo-sts's domain, not the identity's own.
        true
    }

    fn default_audience(&self, _tool: Tool, _protocol: &str, _host: &str) -> String {
        // The endpoint's host; empty means "take it from the endpoint".
        String::new()
    }

    fn default_scope(&self, _tool: Tool) -> Option<&'static str> {
        Some(DEFAULT_SCOPE)
    }

    fn default_scheme(&self) -> Scheme {
        // git presents it as `x-access-token:TOKEN`, as GitHub documents.
        Scheme::Basic
    }

    fn check_scope(&self, template: &ScopeTemplate) -> Result<(), String> {
        match template.count() {
            2 => Ok(()),
            n => Err(format!(
                "an octo-sts scope is two words, the repository (or organisation) and the trust policy's name, not {n} (`{template}`)"
            )),
        }
    }

    fn subject_audience(&self, config: &ExchangeConfig, _http: &HttpClient, route: &Route) -> Result<String, Error> {
        if !route.audience.is_empty() {
            return Ok(route.audience.clone());
        }
        crate::target::host_port(&config.token_endpoint).ok_or_else(|| Error::Malformed {
            exchange: config.name.clone(),
            status: 0,
            what: "a token endpoint without a host".into(),
        })
    }

    fn request(&self, ask: &Ask<'_>) -> Result<ExchangeResponse, Error> {
        let (scope, identity) = scope_and_identity(ask.scope.as_str()).ok_or_else(|| Error::Denied {
            exchange: ask.config.name.clone(),
            code: "invalid scope".into(),
            description: Some(format!(
                "`{}` is not two words, the repository and the trust policy's name",
                sanitize_for_terminal(ask.scope.as_str())
            )),
        })?;
        exchange(ask.config, ask.http, ask.subject, scope, identity)
    }

    fn takes_revocation_endpoint(&self) -> bool {
        true
    }

    fn revokes(&self, config: &ExchangeConfig) -> bool {
        config.revocation_endpoint.is_some()
    }

    fn revoke(&self, config: &ExchangeConfig, http: &HttpClient, token: &Secret) -> Result<(), Error> {
        revoke(config, http, token)
    }
}

/// The octo-sts `scope` and `identity` of a rendered route scope: exactly two words.
pub(crate) fn scope_and_identity(scope: &str) -> Option<(&str, &str)> {
    match scope.split(' ').collect::<Vec<_>>().as_slice() {
        [scope, identity] if !scope.is_empty() && !identity.is_empty() => Some((scope, identity)),
        _ => None,
    }
}

/// The exchange URL for one request; the url crate encodes both values.
pub(crate) fn exchange_url(endpoint: &url::Url, scope: &str, identity: &str) -> url::Url {
    let mut url = endpoint.clone();
    url.query_pairs_mut().clear().append_pair("scope", scope).append_pair("identity", identity);
    url
}

#[derive(Deserialize)]
struct TokenBody {
    token: Option<String>,
}

/// A grpc-gateway error document.
#[derive(Deserialize)]
struct GrpcError {
    message: Option<String>,
}

/// octo-sts's own words on a failure, cleaned for one terminal line.
fn message_of(body: &[u8]) -> Option<String> {
    let message = serde_json::from_slice::<GrpcError>(body).ok()?.message.filter(|m| !m.trim().is_empty())?;
    Some(sanitize_for_terminal(message.trim()).chars().take(300).collect())
}

/// Reads octo-sts's answer: a token, a refusal with its message (4xx), or a failure.
pub(crate) fn parse(exchange: &str, status: u16, body: &[u8]) -> Result<ExchangeResponse, Error> {
    let malformed = |what: String| Error::Malformed { exchange: exchange.into(), status, what };
    match status {
        200 => {
            let body: TokenBody =
                serde_json::from_slice(body).map_err(|_| malformed("a body that is not JSON".into()))?;
            let token = body.token.filter(|t| !t.is_empty()).ok_or_else(|| malformed("no `token`".into()))?;
            if token.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(malformed("a token containing control characters or spaces".into()));
            }
            Ok(ExchangeResponse {
                access_token: Secret::new(token),
                issued_token_type: "github installation token".into(),
                expires_in: Some(INSTALLATION_TOKEN_LIFETIME.as_secs()),
                scope: None,
                token_id: None,
            })
        }
        400..=499 => match message_of(body) {
            Some(message) => Err(Error::Denied { exchange: exchange.into(), code: message, description: None }),
            None => Err(malformed("an error".into())),
        },
        _ => Err(malformed(message_of(body).map_or_else(|| "an error".into(), |m| format!("an error: {m}")))),
    }
}

/// Asks octo-sts for a token, again only where it cannot have minted one.
pub(crate) fn exchange(
    config: &ExchangeConfig,
    http: &HttpClient,
    id_token: &Secret,
    scope: &str,
    identity: &str,
) -> Result<ExchangeResponse, Error> {
    let url = exchange_url(&config.token_endpoint, scope, identity);
    let build = || Ok(http.get(&url)?.header("Accept", "application/json").bearer_auth(id_token.expose()));
    let (status, body) = http
        .send_retrying(&url, Retry::Unavailable, &build)
        .map_err(|source| Error::Http { exchange: config.name.clone(), source })?;
    parse(&config.name, status, &body)
}

/// Revokes an installation token at GitHub: 204; 401 and 404 mean it is already gone.
pub(crate) fn revoke(config: &ExchangeConfig, http: &HttpClient, token: &Secret) -> Result<(), Error> {
    let Some(url) = &config.revocation_endpoint else { return Ok(()) };
    let build = || {
        Ok(http
            .delete(url)?
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .bearer_auth(token.expose()))
    };
    let (status, body) = http
        .send_retrying(url, Retry::Unavailable, &build)
        .map_err(|source| Error::Http { exchange: config.name.clone(), source })?;
    match status {
        204 | 401 | 404 => Ok(()),
        _ => Err(Error::Malformed {
            exchange: config.name.clone(),
            status,
            what: message_of(&body).map_or_else(|| "an unexpected answer".into(), |m| format!("an error: {m}")),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_is_two_words_sent_encoded() {
        assert_eq!(scope_and_identity("org/app mayfly-read"), Some(("org/app", "mayfly-read")));
        assert_eq!(scope_and_identity("org/app"), None);
        assert_eq!(scope_and_identity("a b c"), None);
        let endpoint = url::Url::parse("https://octo-sts.dev/sts/exchange").unwrap();
        let url = exchange_url(&endpoint, "org/app", "mayfly-write&x=y");
        assert_eq!(url.as_str(), "https://octo-sts.dev/sts/exchange?scope=org%2Fapp&identity=mayfly-write%26x%3Dy");
    }

    #[test]
    fn a_token_lives_an_hour() {
        let ok = parse("octo", 200, br#"{"token":"ghs_abc"}"#).unwrap();
        assert_eq!((ok.access_token.expose(), ok.expires_in), ("ghs_abc", Some(3600)));
        for body in [&b"nope"[..], br#"{}"#, br#"{"token":""}"#, br#"{"token":"ghs a"}"#] {
            assert!(matches!(parse("octo", 200, body), Err(Error::Malformed { .. })));
        }
    }

    #[test]
    fn grpc_errors_become_one_line_with_the_message() {
        let body = br#"{"code":5,"message":"unable to find trust policy for \"mayfly-read\"\n","details":[]}"#;
        let err = parse("octo", 404, body).unwrap_err().to_string();
        assert_eq!(err, "exchange `octo` refused: unable to find trust policy for \"mayfly-read\"");
        let err = parse("octo", 500, br#"{"code":13,"message":"failed to get token","details":[]}"#);
        assert_eq!(err.unwrap_err().to_string(), "exchange `octo` answered 500 with an error: failed to get token");
        let err = parse("octo", 403, b"<html>proxy</html>").unwrap_err().to_string();
        assert_eq!(err, "exchange `octo` answered 403 with an error");
    }
}
