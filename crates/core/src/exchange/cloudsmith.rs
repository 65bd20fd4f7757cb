//! Cloudsmith OIDC: a workspace trusts an issuer through an OIDC provider setting bound to
//! service accounts, and trades an ID token for a token of one service account.
//!
//! `POST https://api.cloudsmith.io/v2/openid/{owner}` with JSON
//! `{"oidc_token": ID_TOKEN, "service_slug": SLUG}`; 200 or 201 `{"token": T}`, a JWT
//! living as the service's settings say. Errors are `{"detail": ...}`: 400 "the JWT
//! cannot be created", 401 "OIDC token cannot be authenticated", 422 missing or invalid
//! parameters (Cloudsmith API reference, "Openid Create").

use serde_json::{Value, json};

use super::trusted_publishing::{post, refused, token_in};
use super::{Ask, Error, ExchangeResponse, Protocol, Setting};
use crate::config::ExchangeConfig;
use crate::http::HttpClient;
use crate::{Secret, Tool};

/// Cloudsmith's OpenID endpoint; the owner is appended.
const ENDPOINT: &str = "https://api.cloudsmith.io/v2/openid/";

/// Cloudsmith: service account tokens for any tool's route at Cloudsmith.
pub(crate) struct Cloudsmith;

impl Protocol for Cloudsmith {
    fn name(&self) -> &'static str {
        "cloudsmith"
    }

    fn default_endpoint(&self) -> Option<&'static str> {
        Some(ENDPOINT)
    }

    fn fetches_subject_per_request(&self) -> bool {
        // Its audience is the provider setting's, not the identity's own.
        true
    }

    fn default_audience(&self, _tool: Tool, _protocol: &str, _host: &str) -> String {
        String::new()
    }

    fn known_audience(&self, config: &ExchangeConfig) -> Option<String> {
        Some(super::jfrog::origin(&config.token_endpoint))
    }

    fn default_username(&self, config: &ExchangeConfig, _tool: Tool) -> Result<Option<String>, String> {
        // Cloudsmith's registries take the service account's slug as the user name.
        Ok(config.setting("service_slug").map(str::to_owned))
    }

    fn settings(&self) -> &'static [Setting] {
        &[
            Setting { name: "owner", required: true, about: "the workspace (organisation) slug" },
            Setting { name: "service_slug", required: true, about: "the service account's slug" },
        ]
    }

    fn check_settings(&self, settings: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
        for name in ["owner", "service_slug"] {
            let value = settings.get(name).map(String::as_str).unwrap_or_default();
            if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
                return Err(format!("`{name}` is not a slug (`{}`)", crate::sanitize_for_terminal(value)));
            }
        }
        Ok(())
    }

    fn request(&self, ask: &Ask<'_>) -> Result<ExchangeResponse, Error> {
        let owner = ask.config.setting("owner").unwrap_or_default();
        let slug = ask.config.setting("service_slug").unwrap_or_default();
        let url = owner_url(&ask.config.token_endpoint, owner);
        exchange(ask.config, ask.http, &url, ask.subject, slug)
    }
}

/// `{endpoint}/{owner}`: the owner's OpenID URL.
pub(crate) fn owner_url(endpoint: &url::Url, owner: &str) -> url::Url {
    let mut url = endpoint.clone();
    let path = format!("{}/{owner}", endpoint.path().trim_end_matches('/'));
    url.set_path(&path);
    url
}

fn exchange(
    config: &ExchangeConfig,
    http: &HttpClient,
    url: &url::Url,
    subject: &Secret,
    slug: &str,
) -> Result<ExchangeResponse, Error> {
    let body = json!({"oidc_token": subject.expose(), "service_slug": slug});
    let (status, body) = post(config, http, url, &|r| r.json(&body))?;
    parse(&config.name, status, &body)
}

/// Reads Cloudsmith's answer; the lifetime is the token's own `exp`.
pub(crate) fn parse(exchange: &str, status: u16, body: &[u8]) -> Result<ExchangeResponse, Error> {
    let malformed = |what: &str| Error::Malformed { exchange: exchange.into(), status, what: what.into() };
    let body: Value = serde_json::from_slice(body).map_err(|_| malformed("a body that is not JSON"))?;
    match status {
        200 | 201 => {
            let token = token_in(body.get("token"), &malformed)?;
            let expires_in = crate::peek_claims(token.expose())
                .and_then(|c| c.exp)
                .and_then(|exp| u64::try_from(exp - time::OffsetDateTime::now_utc().unix_timestamp()).ok());
            Ok(ExchangeResponse {
                access_token: token,
                issued_token_type: "cloudsmith service token".into(),
                expires_in,
                scope: None,
                token_id: None,
            })
        }
        400..=499 => match body.get("detail").and_then(Value::as_str) {
            Some(detail) => Err(refused(exchange, detail.trim(), None)),
            None => Err(malformed("an error")),
        },
        _ => Err(malformed("an error")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_names_the_url() {
        let endpoint = url::Url::parse("https://api.cloudsmith.io/v2/openid/").unwrap();
        assert_eq!(owner_url(&endpoint, "acme").as_str(), "https://api.cloudsmith.io/v2/openid/acme");
        let bare = url::Url::parse("https://127.0.0.1:8443/v2/openid").unwrap();
        assert_eq!(owner_url(&bare, "acme").as_str(), "https://127.0.0.1:8443/v2/openid/acme");
    }

    #[test]
    fn answers_and_refusals() {
        let ok = parse("cs", 201, br#"{"token":"opaque"}"#).unwrap();
        assert_eq!((ok.access_token.expose(), ok.expires_in), ("opaque", None));
        let err = parse("cs", 401, br#"{"detail":"OIDC token cannot be authenticated."}"#).unwrap_err().to_string();
        assert_eq!(err, "exchange `cs` refused: OIDC token cannot be authenticated.");
        assert!(matches!(parse("cs", 201, br#"{"token":""}"#), Err(Error::Malformed { .. })));
        assert!(matches!(parse("cs", 503, b"<html>"), Err(Error::Malformed { .. })));
    }
}
