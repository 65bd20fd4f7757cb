//! GitLab's token exchange (experimental; behind GitLab's `token_exchange_ci_id_token`
//! feature flag, off by default): a CI/CD job's ID token for a token for one of GitLab's
//! own services (the Artifact Registry's `gitlab-artifact-registry`, ...).
//!
//! `POST {gitlab}/api/v4/token_exchange` with `Authorization: Bearer ID_TOKEN` and the
//! form parameter `audience` naming the service (gitlab-org/gitlab!268440, !260389). The
//! ID token's one `aud` is the exchange URL itself (`$CI_SERVER_URL/api/v4/token_exchange`).
//! The answer's `token` is a JWT whose lifetime is capped at the ID token's `exp`; errors
//! are GitLab's API errors, `{"message"}` or `{"error"}`. Unconfirmed: the answer's other
//! fields and the status codes of refusals.

use serde_json::Value;

use super::trusted_publishing::{post, refused, token_in};
use super::{Ask, Error, ExchangeResponse, Protocol, Setting};
use crate::Tool;
use crate::config::ExchangeConfig;

/// GitLab's token exchange: tokens for a GitLab service, for any tool's route.
pub(crate) struct Gitlab;

impl Protocol for Gitlab {
    fn name(&self) -> &'static str {
        "gitlab"
    }

    fn fetches_subject_per_request(&self) -> bool {
        // Its audience is the exchange's URL, not the identity's own.
        true
    }

    fn default_audience(&self, _tool: Tool, _protocol: &str, _host: &str) -> String {
        String::new()
    }

    fn known_audience(&self, config: &ExchangeConfig) -> Option<String> {
        Some(config.token_endpoint.to_string())
    }

    fn settings(&self) -> &'static [Setting] {
        &[Setting { name: "audience", required: true, about: "the GitLab service the token is for" }]
    }

    fn check_settings(&self, settings: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
        match settings.get("audience") {
            Some(a) if !a.is_empty() && !a.chars().any(|c| c.is_control() || c.is_whitespace()) => Ok(()),
            _ => Err("`audience` is empty or holds spaces".into()),
        }
    }

    fn request(&self, ask: &Ask<'_>) -> Result<ExchangeResponse, Error> {
        let form = [("audience", ask.config.setting("audience").unwrap_or_default())];
        let url = &ask.config.token_endpoint;
        let (status, body) = post(ask.config, ask.http, url, &|r| r.bearer_auth(ask.subject.expose()).form(&form))?;
        parse(&ask.config.name, status, &body)
    }
}

/// Reads GitLab's answer: the token, living until its own `exp` (or `expires_in`).
pub(crate) fn parse(exchange: &str, status: u16, body: &[u8]) -> Result<ExchangeResponse, Error> {
    let malformed = |what: &str| Error::Malformed { exchange: exchange.into(), status, what: what.into() };
    let body: Value = serde_json::from_slice(body).map_err(|_| malformed("a body that is not JSON"))?;
    match status {
        200 | 201 => {
            let token = token_in(body.get("token"), &malformed)?;
            let expires_in = body.get("expires_in").and_then(Value::as_u64).or_else(|| {
                let exp = crate::peek_claims(token.expose())?.exp?;
                u64::try_from(exp - time::OffsetDateTime::now_utc().unix_timestamp()).ok()
            });
            Ok(ExchangeResponse {
                access_token: token,
                issued_token_type: "gitlab token exchange".into(),
                expires_in,
                scope: None,
                token_id: None,
            })
        }
        400..=499 => match ["message", "error"].iter().find_map(|k| body.get(k).and_then(Value::as_str)) {
            Some(message) => Err(refused(exchange, message.trim(), None)),
            None => Err(malformed("an error")),
        },
        _ => Err(malformed("an error")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_refusals() {
        let ok = parse("gl", 200, br#"{"token":"eyJ.x.y","expires_in":300}"#).unwrap();
        assert_eq!((ok.access_token.expose(), ok.expires_in), ("eyJ.x.y", Some(300)));
        let err = parse("gl", 400, br#"{"message":"400 Bad request - audience is invalid"}"#).unwrap_err();
        assert_eq!(err.to_string(), "exchange `gl` refused: 400 Bad request - audience is invalid");
        let err = parse("gl", 401, br#"{"error":"invalid_token"}"#).unwrap_err();
        assert_eq!(err.to_string(), "exchange `gl` refused: invalid_token");
        assert!(matches!(parse("gl", 200, br#"{"access_token":"t"}"#), Err(Error::Malformed { .. })));
        assert!(matches!(parse("gl", 502, b"<html>"), Err(Error::Malformed { .. })));
    }
}
