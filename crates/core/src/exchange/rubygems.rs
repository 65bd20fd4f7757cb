//! RubyGems trusted publishing: a gem's trusted publisher matches a CI ID token's claims,
//! and RubyGems.org trades the token for an API key that may push that publisher's gem,
//! valid 15 minutes.
//!
//! `POST https://rubygems.org/api/v1/oidc/trusted_publisher/exchange_token` with JSON
//! `{"jwt": ID_TOKEN}`; the ID token's audience is `rubygems.org` (the default `audience`
//! of rubygems/configure-rubygems-credentials, which rubygems/release-gem runs). 201
//! `{"rubygems_api_key", "name", "scopes": ["push_rubygem"], "gem"?, "expires_at"}`,
//! `expires_at` an ISO 8601 time (rubygems/rubygems.org
//! `app/controllers/api/v1/oidc/trusted_publisher_controller.rb`; the answer's schema as
//! configure-rubygems-credentials `src/oidc/responses.ts` reads it). A token with a
//! malformed `nbf`/`iat`/`exp`/`iss`/`jti` is 400 `{"error": "Bad Request"}`; an unknown
//! issuer, a bad signature or no matching publisher is 404 (its body unconfirmed).
//! `gem push` sends the key as the whole `Authorization` value. RubyGems.org has no call
//! that revokes such a key: it lives until `expires_at`.

use serde_json::{Value, json};

use super::trusted_publishing::{at_minting_host, post, refused, seconds_until, token_in};
use super::{Ask, Error, ExchangeResponse, Protocol};
use crate::Tool;
use crate::config::{ExchangeConfig, Scheme};

/// RubyGems.org's exchange.
const ENDPOINT: &str = "https://rubygems.org/api/v1/oidc/trusted_publisher/exchange_token";
/// The audience RubyGems.org's trusted publishers expect.
pub(crate) const AUDIENCE: &str = "rubygems.org";
/// The lifetime RubyGems.org gives its keys, when an answer names none.
const KEY_LIFETIME: u64 = 15 * 60;

/// RubyGems trusted publishing: a push key for the publisher's gem, for `gem push`.
pub(crate) struct Rubygems;

impl Protocol for Rubygems {
    fn name(&self) -> &'static str {
        "rubygems"
    }

    fn default_endpoint(&self) -> Option<&'static str> {
        Some(ENDPOINT)
    }

    fn registry_tool(&self) -> Option<Tool> {
        Some(Tool::Gem)
    }

    fn default_audience(&self, _tool: Tool, _protocol: &str, _host: &str) -> String {
        AUDIENCE.into()
    }

    fn default_scheme(&self) -> Scheme {
        // `gem push` sends the key as the whole `Authorization` value.
        Scheme::Plain
    }

    fn check_route(&self, config: &ExchangeConfig, host: &str) -> Result<(), String> {
        // The key is the registry's own: it must not be handed to another host.
        at_minting_host(config, host, "the gem host")
    }

    fn request(&self, ask: &Ask<'_>) -> Result<ExchangeResponse, Error> {
        let body = json!({"jwt": ask.subject.expose()});
        let (status, body) = post(ask.config, ask.http, &ask.config.token_endpoint, &|r| r.json(&body))?;
        parse(&ask.config.name, status, &body, time::OffsetDateTime::now_utc().unix_timestamp())
    }
}

/// Reads RubyGems.org's answer: the key, living until `expires_at` (else 15 minutes).
pub(crate) fn parse(exchange: &str, status: u16, body: &[u8], now: i64) -> Result<ExchangeResponse, Error> {
    let malformed = |what: &str| Error::Malformed { exchange: exchange.into(), status, what: what.into() };
    let json: Option<Value> = serde_json::from_slice(body).ok();
    match status {
        200 | 201 => {
            let body = json.ok_or_else(|| malformed("a body that is not JSON"))?;
            let key = token_in(body.get("rubygems_api_key"), &|_| malformed("no `rubygems_api_key`"))?;
            let expires_in = match body.get("expires_at") {
                None | Some(Value::Null) => KEY_LIFETIME,
                Some(at) => {
                    seconds_until(at, now).ok_or_else(|| malformed("an `expires_at` that is not a time to come"))?
                }
            };
            let scope = body.get("scopes").and_then(Value::as_array).map(|scopes| {
                scopes.iter().filter_map(Value::as_str).map(crate::sanitize_for_terminal).collect::<Vec<_>>().join(" ")
            });
            Ok(ExchangeResponse {
                access_token: key,
                issued_token_type: "rubygems trusted publishing".into(),
                expires_in: Some(expires_in),
                scope: scope.filter(|s| !s.is_empty()),
                token_id: None,
            })
        }
        404 => Err(refused(exchange, "no trusted publisher matches the ID token (404)", None)),
        400..=499 => {
            let message = json.as_ref().and_then(|b| ["error", "message"].iter().find_map(|k| b.get(k)?.as_str()));
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

    const NOW: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    #[test]
    fn a_key_lives_until_its_expires_at() {
        let body = br#"{"rubygems_api_key":"rubygems_0123abcd","name":"GitHubActions org/app 2026-01-01T00:00:00Z","scopes":["push_rubygem"],"expires_at":"2026-01-01T00:15:00.000Z"}"#;
        let ok = parse("rg", 201, body, NOW).unwrap();
        assert_eq!(ok.access_token.expose(), "rubygems_0123abcd");
        assert_eq!((ok.expires_in, ok.scope.as_deref()), (Some(900), Some("push_rubygem")));
        let ok = parse("rg", 201, br#"{"rubygems_api_key":"rubygems_x"}"#, NOW).unwrap();
        assert_eq!(ok.expires_in, Some(KEY_LIFETIME));
    }

    #[test]
    fn refusals_are_one_line_and_odd_answers_malformed() {
        let err = parse("rg", 404, b"Not Found", NOW).unwrap_err().to_string();
        assert_eq!(err, "exchange `rg` refused: no trusted publisher matches the ID token (404)");
        let err = parse("rg", 400, br#"{"error":"Bad Request"}"#, NOW).unwrap_err().to_string();
        assert_eq!(err, "exchange `rg` refused: Bad Request");
        for (status, body) in [
            (201, &br#"{"token":"t"}"#[..]),
            (201, br#"{"rubygems_api_key":"a b"}"#),
            (201, br#"{"rubygems_api_key":"k","expires_at":"2025-01-01T00:00:00Z"}"#),
            (201, br#"{"rubygems_api_key":"k","expires_at":"soon"}"#),
            (201, b"<html>"),
            (422, b"<html>"),
            (502, b"bad gateway"),
        ] {
            assert!(matches!(parse("rg", status, body, NOW), Err(Error::Malformed { .. })), "{status}");
        }
    }
}
