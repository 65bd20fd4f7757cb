//! RFC 8693 token exchange: the subject token in, a scoped short-lived token out.
//!
//! Building the form and reading the answer are pure functions ([`form`], [`parse`]);
//! [`exchange`] is the thin driver that sends them.

use std::time::Duration;

use serde::Deserialize;

use super::{ACCESS_TOKEN_TYPE, Ask, Error, ExchangeResponse, ID_TOKEN_TYPE, Intent, Protocol, TOKEN_EXCHANGE_GRANT};
use crate::config::ExchangeConfig;
use crate::http::{HttpClient, Retry};
use crate::{Secret, sanitize_for_terminal};

/// OAuth 2.0 Token Exchange.
pub(crate) struct Rfc8693;

impl Protocol for Rfc8693 {
    fn name(&self) -> &'static str {
        "rfc8693"
    }

    fn request(&self, ask: &Ask<'_>) -> Result<ExchangeResponse, Error> {
        let request = ExchangeRequest {
            subject_token: ask.subject,
            audience: &ask.route.audience,
            scope: ask.scope.as_str(),
            ttl: ask.route.ttl,
            intent: ask.intent,
            actor_token: ask.actor,
        };
        exchange(ask.config, ask.http, &request)
    }

    fn open_session(
        &self,
        config: &ExchangeConfig,
        http: &HttpClient,
        subject: &Secret,
        intent: &Intent,
    ) -> Option<Result<ExchangeResponse, Error>> {
        // A session token's audience is the exchange itself: its issuer, which is where
        // mayfly-sts serves `/token` from.
        let endpoint = config.token_endpoint.as_str();
        let audience = endpoint.strip_suffix("/token").unwrap_or(endpoint);
        let request = ExchangeRequest {
            subject_token: subject,
            audience,
            scope: SESSION_SCOPE,
            ttl: SESSION_TTL,
            intent,
            actor_token: None,
        };
        Some(exchange(config, http, &request))
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

/// The scope that asks for a session token.
pub(crate) const SESSION_SCOPE: &str = "session";
/// How long a session token is asked to live; the exchange caps it, and the session's
/// end revokes it.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// What to ask for.
pub(crate) struct ExchangeRequest<'a> {
    pub subject_token: &'a Secret,
    pub audience: &'a str,
    pub scope: &'a str,
    pub ttl: Duration,
    pub intent: &'a Intent,
    /// A delegated session's token (RFC 8693 `actor_token`).
    pub actor_token: Option<&'a Secret>,
}

/// The form body. `requested_ttl` and `intent` are extensions an exchange may ignore.
pub(crate) fn form(request: &ExchangeRequest<'_>) -> Vec<(&'static str, String)> {
    let mut form = vec![
        ("grant_type", TOKEN_EXCHANGE_GRANT.into()),
        ("subject_token", request.subject_token.expose().into()),
        ("subject_token_type", ID_TOKEN_TYPE.into()),
        ("requested_token_type", ACCESS_TOKEN_TYPE.into()),
        ("audience", request.audience.into()),
        ("scope", request.scope.into()),
        ("requested_ttl", request.ttl.as_secs().to_string()),
        ("intent", serde_json::to_string(request.intent).unwrap_or_default()),
    ];
    if let Some(actor) = request.actor_token {
        form.push(("actor_token", actor.expose().into()));
        form.push(("actor_token_type", ACCESS_TOKEN_TYPE.into()));
    }
    form
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: Option<String>,
    issued_token_type: Option<String>,
    token_type: Option<String>,
    expires_in: Option<u64>,
    scope: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    error_description: Option<String>,
}

/// Reads an exchange's answer.
pub(crate) fn parse(exchange: &str, status: u16, body: &[u8]) -> Result<ExchangeResponse, Error> {
    let malformed = |what: &str| Error::Malformed { exchange: exchange.into(), status, what: what.into() };
    if status == 200 {
        let body: TokenBody =
            serde_json::from_slice(body).map_err(|_| malformed("a body that is not a token response"))?;
        let token = body.access_token.filter(|t| !t.is_empty()).ok_or_else(|| malformed("no `access_token`"))?;
        if token.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(malformed("a token containing control characters or spaces"));
        }
        let issued_token_type = body.issued_token_type.ok_or_else(|| malformed("no `issued_token_type`"))?;
        if body.token_type.is_none() {
            return Err(malformed("no `token_type`"));
        }
        let expires_in = body.expires_in.or_else(|| {
            let exp = crate::peek_claims(&token)?.exp?;
            u64::try_from(exp - time::OffsetDateTime::now_utc().unix_timestamp()).ok()
        });
        return Ok(ExchangeResponse {
            access_token: Secret::new(token),
            issued_token_type,
            expires_in,
            scope: body.scope,
            token_id: None,
        });
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) if (400..500).contains(&status) => Err(Error::Denied {
            exchange: exchange.into(),
            code: sanitize_for_terminal(&e.error),
            description: e.error_description.map(|d| sanitize_for_terminal(&d).chars().take(300).collect()),
        }),
        _ => Err(malformed("an error")),
    }
}

/// Sends the exchange, again only where the exchange cannot have minted anything.
pub(crate) fn exchange(
    config: &ExchangeConfig,
    http: &HttpClient,
    request: &ExchangeRequest<'_>,
) -> Result<ExchangeResponse, Error> {
    let url = &config.token_endpoint;
    let body = form(request);
    let build = || Ok(http.post(url)?.header("Accept", "application/json").form(&body));
    let (status, body) = http
        .send_retrying(url, Retry::Unavailable, &build)
        .map_err(|source| Error::Http { exchange: config.name.clone(), source })?;
    parse(&config.name, status, &body)
}

/// RFC 7009 revocation: `token` and `token_type_hint=access_token`, form-encoded. The
/// token is its own proof: whoever holds it may end it. 200 means revoked (or never
/// valid); 503 is tried again, as the RFC suggests.
pub(crate) fn revoke(config: &ExchangeConfig, http: &HttpClient, token: &Secret) -> Result<(), Error> {
    let Some(url) = &config.revocation_endpoint else { return Ok(()) };
    let form = [("token", token.expose()), ("token_type_hint", "access_token")];
    let build = || Ok(http.post(url)?.header("Accept", "application/json").form(&form));
    let (status, body) = http
        .send_retrying(url, Retry::Unavailable, &build)
        .map_err(|source| Error::Http { exchange: config.name.clone(), source })?;
    match status {
        200 => Ok(()),
        _ => Err(parse(&config.name, status, &body).err().unwrap_or_else(|| unexpected(config, status))),
    }
}

fn unexpected(config: &ExchangeConfig, status: u16) -> Error {
    Error::Malformed { exchange: config.name.clone(), status, what: "an unexpected answer".into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delegated_request_sends_the_session_token_as_its_actor() {
        let (subject, session) = (Secret::new("subject-jwt"), Secret::new("session-jwt"));
        let intent = Intent { agent: Some("claude".into()), ..Intent::default() };
        let request = ExchangeRequest {
            subject_token: &subject,
            audience: "https://h",
            scope: "repo:r:write",
            ttl: Duration::from_secs(600),
            intent: &intent,
            actor_token: Some(&session),
        };
        let form = form(&request);
        let get = |k: &str| form.iter().find(|(key, _)| *key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("actor_token"), Some("session-jwt"));
        assert_eq!(get("actor_token_type"), Some(ACCESS_TOKEN_TYPE));
        assert!(get("intent").is_some_and(|i| i.contains("\"agent\":\"claude\"")));
        let plain = ExchangeRequest { actor_token: None, ..request };
        assert!(super::form(&plain).iter().all(|(key, _)| !key.starts_with("actor")));
    }

    #[test]
    fn form_carries_rfc8693_fields_and_intent() {
        let token = Secret::new("subject-jwt");
        let intent =
            Intent { tool: "git".into(), operation: "write".into(), target: "https://h/r".into(), ..Intent::default() };
        let request = ExchangeRequest {
            subject_token: &token,
            audience: "https://h",
            scope: "repo:r:write",
            ttl: Duration::from_secs(600),
            intent: &intent,
            actor_token: None,
        };
        let form = form(&request);
        let get = |k: &str| form.iter().find(|(key, _)| *key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("grant_type"), Some(TOKEN_EXCHANGE_GRANT));
        assert_eq!(get("subject_token"), Some("subject-jwt"));
        assert_eq!(get("subject_token_type"), Some(ID_TOKEN_TYPE));
        assert_eq!(get("audience"), Some("https://h"));
        assert_eq!(get("scope"), Some("repo:r:write"));
        assert_eq!(get("requested_ttl"), Some("600"));
        assert!(get("intent").unwrap().contains(r#""operation":"write""#));
        assert!(get("actor_token_type").is_none());
    }

    #[test]
    fn parses_success_with_unknown_fields() {
        let body = br#"{"access_token":"tok","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":900,"scope":"a","extra":{}}"#;
        let response = parse("x", 200, body).unwrap();
        assert_eq!(response.access_token.expose(), "tok");
        assert_eq!(response.expires_in, Some(900));
        assert_eq!(response.scope.as_deref(), Some("a"));
    }

    #[test]
    fn refuses_lying_success_bodies() {
        let cases: [&[u8]; 5] = [
            b"not json",
            br#"{"issued_token_type":"t","token_type":"Bearer"}"#,
            br#"{"access_token":"","issued_token_type":"t","token_type":"Bearer"}"#,
            br#"{"access_token":"a\nb","issued_token_type":"t","token_type":"Bearer"}"#,
            br#"{"access_token":"a","token_type":"Bearer"}"#,
        ];
        for body in cases {
            assert!(matches!(parse("x", 200, body), Err(Error::Malformed { .. })), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn rfc6749_errors_become_one_clean_line() {
        let body = br#"{"error":"invalid_target","error_description":"audience not allowed\u001b[31m\nsecond line"}"#;
        let err = parse("corp", 400, body).unwrap_err().to_string();
        assert_eq!(err, "exchange `corp` refused: invalid_target: audience not allowed\u{fffd}[31m\u{fffd}second line");
        assert!(!err.contains('\n'));
        let err = parse("corp", 500, b"<html>oops</html>").unwrap_err().to_string();
        assert_eq!(err, "exchange `corp` answered 500 with an error");
    }
}
