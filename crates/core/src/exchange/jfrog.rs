//! JFrog Artifactory OIDC integrations: the platform trusts an issuer through a named
//! integration (a "provider") whose identity mappings turn an ID token's claims into a
//! user or group, and trades the ID token for an access token for its repositories.
//!
//! `POST {url}/access/api/v1/oidc/token` with JSON
//! `{"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
//! "subject_token_type": "urn:ietf:params:oauth:token-type:id_token", "subject_token",
//! "provider_name"}`; the ID token's audience is what the integration names. 200
//! `{"access_token", "token_type", "expires_in", ...}`; errors are
//! `{"errors": [{"code", "message"}]}` (jfrog/setup-jfrog-cli). The token then serves
//! Artifactory's npm, PyPI, cargo, OCI and generic endpoints, as a bearer token or as the
//! password of the mapped user.

use serde_json::{Value, json};

use super::trusted_publishing::{post, refused, token_in};
use super::{Ask, Error, ExchangeResponse, ID_TOKEN_TYPE, Protocol, Setting, TOKEN_EXCHANGE_GRANT};
use crate::Tool;
use crate::config::ExchangeConfig;

/// JFrog Artifactory: access tokens for any tool's route at the platform.
pub(crate) struct Jfrog;

impl Protocol for Jfrog {
    fn name(&self) -> &'static str {
        "jfrog"
    }

    fn fetches_subject_per_request(&self) -> bool {
        // Its audience is the integration's, not the identity's own.
        true
    }

    fn default_audience(&self, _tool: Tool, _protocol: &str, _host: &str) -> String {
        String::new()
    }

    fn known_audience(&self, config: &ExchangeConfig) -> Option<String> {
        Some(origin(&config.token_endpoint))
    }

    fn settings(&self) -> &'static [Setting] {
        &[Setting { name: "provider_name", required: true, about: "the name of the platform's OIDC integration" }]
    }

    fn request(&self, ask: &Ask<'_>) -> Result<ExchangeResponse, Error> {
        let body = json!({
            "grant_type": TOKEN_EXCHANGE_GRANT,
            "subject_token_type": ID_TOKEN_TYPE,
            "subject_token": ask.subject.expose(),
            "provider_name": ask.config.setting("provider_name").unwrap_or_default(),
        });
        let (status, body) = post(ask.config, ask.http, &ask.config.token_endpoint, &|r| r.json(&body))?;
        parse(&ask.config.name, status, &body)
    }
}

/// `https://host[:port]`: the audience of an exchange that names none.
pub(crate) fn origin(url: &url::Url) -> String {
    url.origin().ascii_serialization()
}

/// Reads Artifactory's answer.
pub(crate) fn parse(exchange: &str, status: u16, body: &[u8]) -> Result<ExchangeResponse, Error> {
    let malformed = |what: &str| Error::Malformed { exchange: exchange.into(), status, what: what.into() };
    let body: Value = serde_json::from_slice(body).map_err(|_| malformed("a body that is not JSON"))?;
    match status {
        200 => {
            let token = token_in(body.get("access_token"), &|_| malformed("no usable `access_token`"))?;
            let expires_in = body.get("expires_in").and_then(Value::as_u64).or_else(|| {
                let exp = crate::peek_claims(token.expose())?.exp?;
                u64::try_from(exp - time::OffsetDateTime::now_utc().unix_timestamp()).ok()
            });
            Ok(ExchangeResponse {
                access_token: token,
                issued_token_type: "jfrog access token".into(),
                expires_in,
                scope: body.get("scope").and_then(Value::as_str).map(str::to_owned),
                token_id: None,
            })
        }
        400..=499 => {
            let first = body.get("errors").and_then(|e| e.get(0));
            let message = first.and_then(|e| e.get("message")).and_then(Value::as_str);
            match message {
                Some(message) => Err(refused(exchange, message.trim(), None)),
                None => Err(malformed("an error")),
            }
        }
        _ => Err(malformed("an error")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_refusals() {
        let ok = parse("art", 200, br#"{"access_token":"eyJ.x.y","token_type":"Bearer","expires_in":900}"#).unwrap();
        assert_eq!((ok.access_token.expose(), ok.expires_in), ("eyJ.x.y", Some(900)));
        let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"Failed to validate the OIDC token"}]}"#;
        let err = parse("art", 401, body).unwrap_err().to_string();
        assert_eq!(err, "exchange `art` refused: Failed to validate the OIDC token");
        assert!(matches!(parse("art", 200, br#"{"token":"t"}"#), Err(Error::Malformed { .. })));
        assert!(matches!(parse("art", 500, br#"{}"#), Err(Error::Malformed { .. })));
        let url = url::Url::parse("https://acme.jfrog.io/access/api/v1/oidc/token").unwrap();
        assert_eq!(origin(&url), "https://acme.jfrog.io");
    }
}
