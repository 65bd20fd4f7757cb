//! Docker Hub OIDC connections: an organisation trusts an issuer's ID tokens through a
//! connection, and Docker's identity service trades one for a short-lived access token
//! that `docker login` takes with the organisation as the user name.
//!
//! `POST https://identity.docker.com/oauth/token`, form-encoded:
//! `grant_type=urn:ietf:params:oauth:grant-type:token-exchange`,
//! `subject_token_type=urn:ietf:params:oauth:token-type:id_token`, `subject_token`,
//! `connection_id` (the connection's UUID) and `expires_in` (seconds, 300 to 3600); the ID
//! token's audience is `https://identity.docker.com`. 200 `{"access_token": ...}`; errors
//! are `{"message": ...}` (docker/oidc-action `src/main.ts`).

use std::time::Duration;

use serde_json::Value;

use super::trusted_publishing::{post, refused, token_in};
use super::{Ask, Error, ExchangeResponse, ID_TOKEN_TYPE, Protocol, Setting, TOKEN_EXCHANGE_GRANT};
use crate::config::{ExchangeConfig, Scheme};
use crate::{Secret, Tool};

/// Docker's identity service.
const ENDPOINT: &str = "https://identity.docker.com/oauth/token";
/// The audience Docker wants in ID tokens.
pub(crate) const AUDIENCE: &str = "https://identity.docker.com";
/// The shortest and longest lifetime Docker grants.
const LIFETIMES: std::ops::RangeInclusive<u64> = 300..=3600;
/// The lifetime asked for when the config names none: docker/oidc-action's.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// Docker Hub OIDC connections: organisation access tokens for OCI clients.
pub(crate) struct DockerHub;

impl Protocol for DockerHub {
    fn name(&self) -> &'static str {
        "docker-hub"
    }

    fn default_endpoint(&self) -> Option<&'static str> {
        Some(ENDPOINT)
    }

    fn serves(&self, tool: Tool) -> bool {
        tool == Tool::Oci
    }

    fn fetches_subject_per_request(&self) -> bool {
        // Its audience is Docker's, not the identity's own.
        true
    }

    fn default_audience(&self, _tool: Tool, _protocol: &str, _host: &str) -> String {
        String::new()
    }

    fn known_audience(&self, _config: &ExchangeConfig) -> Option<String> {
        Some(AUDIENCE.into())
    }

    fn default_scheme(&self) -> Scheme {
        Scheme::Basic
    }

    fn default_username(&self, config: &ExchangeConfig, _tool: Tool) -> Result<Option<String>, String> {
        match config.setting("organisation") {
            Some(organisation) => Ok(Some(organisation.to_owned())),
            None => Err(format!(
                "exchange `{}` signs in as the organisation: set `organisation` on it or `username` here",
                config.name
            )),
        }
    }

    fn settings(&self) -> &'static [Setting] {
        &[
            Setting { name: "connection_id", required: true, about: "the OIDC connection's UUID" },
            Setting { name: "organisation", required: false, about: "the organisation, `docker login`'s user name" },
            Setting { name: "lifetime", required: false, about: "how long tokens live, 5m to 1h (default 5m)" },
        ]
    }

    fn check_settings(&self, settings: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
        let id = settings.get("connection_id").map(String::as_str).unwrap_or_default();
        if !is_uuid(id) {
            return Err(format!("`connection_id` is not a UUID (`{}`)", crate::sanitize_for_terminal(id)));
        }
        if let Some(organisation) = settings.get("organisation")
            && (organisation.is_empty() || organisation.chars().any(|c| c.is_control() || c.is_whitespace()))
        {
            return Err("`organisation` is empty or holds spaces".into());
        }
        lifetime(settings.get("lifetime").map(String::as_str)).map(|_| ())
    }

    fn request(&self, ask: &Ask<'_>) -> Result<ExchangeResponse, Error> {
        let lifetime = lifetime(ask.config.setting("lifetime")).unwrap_or(DEFAULT_LIFETIME);
        let form = form(ask.subject, ask.config.setting("connection_id").unwrap_or_default(), lifetime);
        let (status, body) = post(ask.config, ask.http, &ask.config.token_endpoint, &|r| r.form(&form))?;
        parse(&ask.config.name, status, &body, lifetime)
    }
}

/// The `lifetime` setting, within what Docker grants.
fn lifetime(value: Option<&str>) -> Result<Duration, String> {
    let Some(value) = value else { return Ok(DEFAULT_LIFETIME) };
    let lifetime = crate::duration::parse_duration(value).map_err(|e| format!("`lifetime`: {e}"))?;
    if !LIFETIMES.contains(&lifetime.as_secs()) {
        return Err(format!("`lifetime` is {}s; Docker grants 300s to 3600s", lifetime.as_secs()));
    }
    Ok(lifetime)
}

/// `8-4-4-4-12` hexadecimal digits.
fn is_uuid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The form, in docker/oidc-action's order.
pub(crate) fn form(subject: &Secret, connection_id: &str, lifetime: Duration) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", TOKEN_EXCHANGE_GRANT.into()),
        ("subject_token_type", ID_TOKEN_TYPE.into()),
        ("subject_token", subject.expose().into()),
        ("connection_id", connection_id.into()),
        ("expires_in", lifetime.as_secs().to_string()),
    ]
}

/// Reads Docker's answer: the token, living as its `expires_in` says or as asked.
pub(crate) fn parse(exchange: &str, status: u16, body: &[u8], asked: Duration) -> Result<ExchangeResponse, Error> {
    let malformed = |what: &str| Error::Malformed { exchange: exchange.into(), status, what: what.into() };
    let body: Value = serde_json::from_slice(body).map_err(|_| malformed("a body that is not JSON"))?;
    match status {
        200 | 201 => Ok(ExchangeResponse {
            access_token: token_in(body.get("access_token"), &|what| {
                malformed(&what.replace("token", "access_token"))
            })?,
            issued_token_type: "docker hub access token".into(),
            expires_in: Some(body.get("expires_in").and_then(Value::as_u64).unwrap_or(asked.as_secs())),
            scope: None,
            token_id: None,
        }),
        400..=499 => {
            let text = |key: &str| body.get(key).and_then(Value::as_str).filter(|m| !m.trim().is_empty());
            match (text("message"), text("error")) {
                (Some(message), _) => Err(refused(exchange, message.trim(), None)),
                (None, Some(code)) => Err(refused(exchange, code, text("error_description"))),
                (None, None) => Err(malformed("an error")),
            }
        }
        _ => Err(malformed("an error")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_names_the_connection_and_the_lifetime() {
        let form = form(&Secret::new("jwt"), "3fa85f64-5717-4562-b3fc-2c963f66afa6", Duration::from_secs(600));
        let keys: Vec<&str> = form.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["grant_type", "subject_token_type", "subject_token", "connection_id", "expires_in"]);
        assert_eq!(form[4].1, "600");
        assert!(is_uuid("3fa85f64-5717-4562-b3fc-2c963f66afa6"));
        assert!(!is_uuid("3fa85f64-5717-4562-b3fc") && !is_uuid("3fa85f64x5717-4562-b3fc-2c963f66afa6"));
        assert_eq!(lifetime(None), Ok(Duration::from_secs(300)));
        assert_eq!(lifetime(Some("1h")), Ok(Duration::from_secs(3600)));
        assert!(lifetime(Some("2h")).unwrap_err().contains("300s to 3600s"));
    }

    #[test]
    fn answers_and_refusals() {
        let ok = parse("hub", 200, br#"{"access_token":"dckr_abc"}"#, Duration::from_secs(300)).unwrap();
        assert_eq!((ok.access_token.expose(), ok.expires_in), ("dckr_abc", Some(300)));
        let err = parse("hub", 400, br#"{"message":"connection not found\n"}"#, Duration::from_secs(300));
        assert_eq!(err.unwrap_err().to_string(), "exchange `hub` refused: connection not found");
        assert!(matches!(parse("hub", 200, br#"{}"#, Duration::ZERO), Err(Error::Malformed { .. })));
        assert!(matches!(parse("hub", 502, b"<html>", Duration::ZERO), Err(Error::Malformed { .. })));
    }
}
