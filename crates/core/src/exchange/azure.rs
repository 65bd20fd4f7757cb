//! Azure: workload identity federation with Microsoft Entra ID (a federated credential on
//! an app registration or a user-assigned managed identity), and, for Azure Container
//! Registry, the registry's own exchange after it.
//!
//! `POST {authority}/{tenant}/oauth2/v2.0/token`, form-encoded (Microsoft identity
//! platform, client credentials flow with a federated assertion): `client_id`, `scope`
//! (`<resource>/.default`), `client_assertion` = the ID token (audience
//! `api://AzureADTokenExchange`, matched with issuer and subject by the federated
//! credential), `client_assertion_type` jwt-bearer, `grant_type=client_credentials`. It
//! answers `{"token_type", "expires_in", "access_token"}`; errors are RFC 6749
//! `{"error", "error_description": "AADSTS…\r\nTrace ID: …", ...}`.
//!
//! For ACR (`tool = "oci"`): `POST https://REGISTRY/oauth2/exchange`, form
//! `grant_type=access_token`, `service=REGISTRY`, `tenant`, `access_token` = the Entra
//! token, answers `{"refresh_token"}` (as the Azure SDKs' `ACRExchangeClient` sends it),
//! which docker presents with the user name `00000000-0000-0000-0000-000000000000` (as
//! `az acr login --expose-token` documents).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ACCESS_TOKEN_TYPE, Ask, Error, ExchangeResponse, Protocol, Setting};
use crate::config::ExchangeConfig;
use crate::http::{HttpClient, Retry};
use crate::scope::ScopeTemplate;
use crate::{Secret, Tool, sanitize_for_terminal};

/// The public cloud's authority host.
const AUTHORITY: &str = "https://login.microsoftonline.com";
/// The audience Entra ID expects of a federated assertion.
const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
/// The scope an ACR route asks Entra ID for, as the Azure SDKs do.
const ACR_SCOPE: &str = "https://management.core.windows.net/.default";
/// The user name ACR takes with its refresh token.
const ACR_USER: &str = "00000000-0000-0000-0000-000000000000";

/// Entra ID federated credentials, and ACR's exchange for registries.
pub(crate) struct Azure;

const SETTINGS: &[Setting] = &[
    Setting { name: "tenant", required: true, about: "the Entra tenant, its id or domain" },
    Setting {
        name: "client_id",
        required: true,
        about: "the application (client) id of the app registration or managed identity",
    },
];

impl Protocol for Azure {
    fn name(&self) -> &'static str {
        "azure"
    }

    fn default_endpoint(&self) -> Option<&'static str> {
        Some(AUTHORITY)
    }

    fn fetches_subject_per_request(&self) -> bool {
        true
    }

    fn default_audience(&self, _tool: Tool, _protocol: &str, _host: &str) -> String {
        TOKEN_EXCHANGE_AUDIENCE.into()
    }

    fn default_scope(&self, tool: Tool) -> Option<&'static str> {
        (tool == Tool::Oci).then_some(ACR_SCOPE)
    }

    fn default_username(&self, _config: &ExchangeConfig, tool: Tool) -> Result<Option<String>, String> {
        Ok((tool == Tool::Oci).then(|| ACR_USER.to_owned()))
    }

    fn check_scope(&self, template: &ScopeTemplate) -> Result<(), String> {
        let text = template.to_string();
        if text.split(' ').all(|s| s.ends_with("/.default")) {
            Ok(())
        } else {
            Err(format!("an azure route's scope is `<resource>/.default` (client credentials), not `{text}`"))
        }
    }

    fn check_route(&self, config: &ExchangeConfig, host: &str) -> Result<(), String> {
        // An Entra token goes to Microsoft's hosts alone.
        if is_azure_host(host) || crate::http::is_loopback_host(host) {
            Ok(())
        } else {
            Err(format!(
                "exchange `{}` mints Entra ID tokens, for Azure's hosts only (*.azurecr.io, *.azure.com, *.azure.net, *.windows.net), not `{host}`",
                config.name
            ))
        }
    }

    fn settings(&self) -> &'static [Setting] {
        SETTINGS
    }

    fn check_settings(&self, settings: &BTreeMap<String, String>) -> Result<(), String> {
        for name in ["tenant", "client_id"] {
            let value = settings.get(name).map(String::as_str).unwrap_or_default();
            if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric() || "-.".contains(c)) {
                return Err(format!("`{name}` `{}` is not an id or a domain", sanitize_for_terminal(value)));
            }
        }
        Ok(())
    }

    fn request(&self, ask: &Ask<'_>) -> Result<ExchangeResponse, Error> {
        let entra = entra_token(ask.config, ask.http, ask.subject, ask.scope.as_str())?;
        if ask.route.tool == Tool::Oci {
            acr_exchange(ask.config, ask.http, &entra, &ask.route.host)
        } else {
            Ok(entra)
        }
    }
}

/// Microsoft's cloud hosts a token of this exchange may be presented to.
fn is_azure_host(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name).to_ascii_lowercase();
    [".azurecr.io", ".azure.com", ".azure.net", ".windows.net"].iter().any(|suffix| name.ends_with(suffix))
}

/// The tenant's token endpoint under the authority.
pub(crate) fn token_url(config: &ExchangeConfig) -> Result<url::Url, Error> {
    let authority = config.token_endpoint.as_str().trim_end_matches('/');
    let tenant = config.setting("tenant").unwrap_or_default();
    url::Url::parse(&format!("{authority}/{tenant}/oauth2/v2.0/token")).map_err(|_| Error::Malformed {
        exchange: config.name.clone(),
        status: 0,
        what: "an authority that takes no tenant path".into(),
    })
}

/// The form of the Entra ID request.
pub(crate) fn form(config: &ExchangeConfig, subject: &Secret, scope: &str) -> Vec<(&'static str, String)> {
    vec![
        ("client_id", config.setting("client_id").unwrap_or_default().to_owned()),
        ("scope", scope.to_owned()),
        ("client_assertion", subject.expose().to_owned()),
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned()),
        ("grant_type", "client_credentials".to_owned()),
    ]
}

#[derive(Deserialize)]
struct EntraToken {
    access_token: Option<String>,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct AcrToken {
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct AcrErrors {
    errors: Vec<AcrError>,
}

#[derive(Deserialize)]
struct AcrError {
    code: Option<String>,
    message: Option<String>,
}

/// The first line of a text, cleaned: Entra's descriptions go on with trace and
/// correlation ids.
fn first_line(text: &str) -> String {
    sanitize_for_terminal(text.lines().next().unwrap_or_default().trim()).chars().take(300).collect()
}

fn checked(token: Option<String>, field: &str, malformed: &dyn Fn(String) -> Error) -> Result<Secret, Error> {
    let token = token.filter(|t| !t.is_empty()).ok_or_else(|| malformed(format!("no `{field}`")))?;
    if token.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(malformed("a token containing control characters or spaces".into()));
    }
    Ok(Secret::new(token))
}

/// Reads Entra ID's answer.
pub(crate) fn parse_entra(exchange: &str, status: u16, body: &[u8]) -> Result<ExchangeResponse, Error> {
    let malformed = |what: String| Error::Malformed { exchange: exchange.into(), status, what };
    if status == 200 {
        let body: EntraToken = serde_json::from_slice(body).map_err(|_| malformed("a body that is not JSON".into()))?;
        return Ok(ExchangeResponse {
            access_token: checked(body.access_token, "access_token", &malformed)?,
            issued_token_type: ACCESS_TOKEN_TYPE.into(),
            expires_in: body.expires_in,
            scope: None,
            token_id: None,
        });
    }
    match serde_json::from_slice::<OAuthError>(body) {
        Ok(e) if (400..500).contains(&status) => Err(Error::Denied {
            exchange: exchange.into(),
            code: first_line(&e.error),
            description: e.error_description.as_deref().map(first_line).filter(|d| !d.is_empty()),
        }),
        _ => Err(malformed("an error".into())),
    }
}

/// Reads ACR's answer: its refresh token, which lives no longer than the Entra token it
/// came from nor than its own `exp`.
pub(crate) fn parse_acr(
    exchange: &str,
    status: u16,
    body: &[u8],
    entra_lifetime: Option<u64>,
    now: i64,
) -> Result<ExchangeResponse, Error> {
    let malformed = |what: String| Error::Malformed { exchange: exchange.into(), status, what };
    if status == 200 {
        let body: AcrToken = serde_json::from_slice(body).map_err(|_| malformed("a body that is not JSON".into()))?;
        let token = checked(body.refresh_token, "refresh_token", &malformed)?;
        let own = crate::peek_claims(token.expose()).and_then(|c| c.exp).and_then(|exp| u64::try_from(exp - now).ok());
        let expires_in = match (own, entra_lifetime) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        return Ok(ExchangeResponse {
            access_token: token,
            issued_token_type: "acr refresh token".into(),
            expires_in,
            scope: None,
            token_id: None,
        });
    }
    let error = serde_json::from_slice::<AcrErrors>(body).ok().and_then(|e| e.errors.into_iter().next());
    match error {
        Some(e) if (400..500).contains(&status) => Err(Error::Denied {
            exchange: exchange.into(),
            code: first_line(e.code.as_deref().unwrap_or("error")),
            description: e.message.as_deref().map(first_line).filter(|m| !m.is_empty()),
        }),
        _ => Err(malformed("an error from the registry's exchange".into())),
    }
}

/// The ID token, as a federated assertion, for an Entra ID access token.
pub(crate) fn entra_token(
    config: &ExchangeConfig,
    http: &HttpClient,
    subject: &Secret,
    scope: &str,
) -> Result<ExchangeResponse, Error> {
    let url = token_url(config)?;
    let body = form(config, subject, scope);
    let build = || Ok(http.post(&url)?.header("Accept", "application/json").form(&body));
    let (status, body) = http
        .send_retrying(&url, Retry::Unavailable, &build)
        .map_err(|source| Error::Http { exchange: config.name.clone(), source })?;
    parse_entra(&config.name, status, &body)
}

/// The Entra token for the registry's refresh token, at the registry.
pub(crate) fn acr_exchange(
    config: &ExchangeConfig,
    http: &HttpClient,
    entra: &ExchangeResponse,
    registry: &str,
) -> Result<ExchangeResponse, Error> {
    let url = url::Url::parse(&format!("https://{registry}/oauth2/exchange")).map_err(|_| Error::Malformed {
        exchange: config.name.clone(),
        status: 0,
        what: "a registry host that makes no URL".into(),
    })?;
    let body = vec![
        ("grant_type", "access_token".to_owned()),
        ("service", registry.to_owned()),
        ("tenant", config.setting("tenant").unwrap_or_default().to_owned()),
        ("access_token", entra.access_token.expose().to_owned()),
    ];
    let build = || Ok(http.post(&url)?.header("Accept", "application/json").form(&body));
    let (status, body) = http
        .send_retrying(&url, Retry::Unavailable, &build)
        .map_err(|source| Error::Http { exchange: config.name.clone(), source })?;
    parse_acr(&config.name, status, &body, entra.expires_in, time::OffsetDateTime::now_utc().unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entra_answers_and_refusals_on_one_line() {
        let ok = parse_entra(
            "az",
            200,
            br#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0.aad.tok"}"#,
        )
        .unwrap();
        assert_eq!((ok.access_token.expose(), ok.expires_in), ("eyJ0.aad.tok", Some(3599)));
        let body = br#"{"error":"invalid_client","error_description":"AADSTS70021: No matching federated identity record found for presented assertion.\r\nTrace ID: 1\r\nCorrelation ID: 2","error_codes":[70021]}"#;
        assert_eq!(
            parse_entra("az", 400, body).unwrap_err().to_string(),
            "exchange `az` refused: invalid_client: AADSTS70021: No matching federated identity record found for presented assertion."
        );
        assert!(matches!(parse_entra("az", 500, b"<html>"), Err(Error::Malformed { .. })));
    }

    #[test]
    fn acr_refresh_tokens_live_no_longer_than_either_token() {
        let ok = parse_acr("az", 200, br#"{"refresh_token":"acr.refresh"}"#, Some(3599), 0).unwrap();
        assert_eq!((ok.access_token.expose(), ok.expires_in), ("acr.refresh", Some(3599)));
        let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required\nvisit docs"}]}"#;
        assert_eq!(
            parse_acr("az", 401, body, None, 0).unwrap_err().to_string(),
            "exchange `az` refused: UNAUTHORIZED: authentication required"
        );
        assert!(matches!(parse_acr("az", 200, b"{}", None, 0), Err(Error::Malformed { .. })));
    }

    #[test]
    fn entra_tokens_go_to_azure_hosts() {
        for ok in ["myregistry.azurecr.io", "management.azure.com", "vault.azure.net", "x.blob.core.windows.net:443"] {
            assert!(is_azure_host(ok), "{ok}");
        }
        for bad in ["evil.example", "azurecr.io.evil.example"] {
            assert!(!is_azure_host(bad), "{bad}");
        }
    }

    /// The config parser's verdict on an exchange table and one route.
    fn config(exchange: &str, route: &str) -> Result<crate::Config, String> {
        let text = format!(
            "[identities.ci]\nkind = \"env\"\nvar = \"X\"\n\n[exchanges.x]\n{exchange}\n\n[[routes]]\nidentity = \"ci\"\nexchange = \"x\"\n{route}\n"
        );
        crate::Config::parse(&text, std::path::Path::new("t.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn routes_of_other_tools_must_name_a_default_scope() {
        let exchange = "kind = \"azure\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"abc-123\"";
        let ok = config(exchange, "tool = \"oci\"\nhost = \"r.azurecr.io\"").unwrap();
        assert_eq!(ok.routes[0].username, "00000000-0000-0000-0000-000000000000");
        assert_eq!(ok.routes[0].audience, "api://AzureADTokenExchange");
        let err = config(exchange, "tool = \"git\"\nhost = \"dev.azure.com\"").unwrap_err();
        assert!(err.contains("`<resource>/.default`"), "{err}");
        config(
            exchange,
            "tool = \"git\"\nhost = \"dev.azure.com\"\nscope = \"499b84ac-1321-427f-aa17-267ca6975798/.default\"",
        )
        .unwrap();
        let err = config("kind = \"azure\"\ntenant = \"t\"", "tool = \"oci\"\nhost = \"r.azurecr.io\"").unwrap_err();
        assert!(err.contains("needs `client_id`"), "{err}");
    }
}
