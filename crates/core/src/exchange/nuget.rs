//! NuGet trusted publishing: a nuget.org user's trusted publishing policy matches a GitHub
//! Actions ID token's claims, and nuget.org trades the token for an API key that pushes
//! the policy's packages, valid an hour.
//!
//! `POST https://www.nuget.org/api/v2/token` with `Authorization: Bearer ID_TOKEN` (the
//! token's audience `https://www.nuget.org`), `Content-Type: application/json`, a
//! `User-Agent`, and JSON `{"username": USER, "tokenType": "ApiKey"}`, USER the nuget.org
//! profile name of the policy's creator. 200 `{"tokenType": "ApiKey", "expires": ISO 8601,
//! "apiKey"}`; errors are `{"error": MESSAGE}` (also the reason phrase): 400 for a missing
//! field or a token no policy matches, 401 for a missing or rejected bearer token (with
//! `WWW-Authenticate: Bearer`), 415 for another content type (NuGet/NuGetGallery
//! `src/NuGetGallery/Controllers/TokenApiController.cs`; the client side NuGet/login
//! `src/index.ts`, which sends the same body and reads `apiKey`). nuget.org takes each ID
//! token once ("one token, one API key", NuGet docs `nuget-org/trusted-publishing.md`), so
//! the ID token is fetched fresh for every exchange. The key is sent as the whole
//! `X-NuGet-ApiKey` value of a push (`PUT /api/v2/package`); nuget.org has no call that
//! revokes it early.

use serde_json::{Value, json};

use super::trusted_publishing::{at_minting_host, post, refused, seconds_until, token_in};
use super::{Ask, Error, ExchangeResponse, Protocol, Setting};
use crate::Tool;
use crate::config::{ExchangeConfig, Scheme};

/// nuget.org's token endpoint.
const ENDPOINT: &str = "https://www.nuget.org/api/v2/token";
/// The audience nuget.org's trusted publishing expects.
pub(crate) const AUDIENCE: &str = "https://www.nuget.org";
/// The lifetime nuget.org gives its keys, when an answer names none.
const KEY_LIFETIME: u64 = 60 * 60;
/// The longest nuget.org user name.
const MAX_USER: usize = 64;

/// NuGet trusted publishing: an API key for `nuget push`.
pub(crate) struct Nuget;

impl Protocol for Nuget {
    fn name(&self) -> &'static str {
        "nuget"
    }

    fn default_endpoint(&self) -> Option<&'static str> {
        Some(ENDPOINT)
    }

    fn registry_tool(&self) -> Option<Tool> {
        // A registry's own exchange: each ID token is fetched for this request alone.
        Some(Tool::Nuget)
    }

    fn default_audience(&self, _tool: Tool, _protocol: &str, _host: &str) -> String {
        AUDIENCE.into()
    }

    fn default_scheme(&self) -> Scheme {
        // The key is the whole `X-NuGet-ApiKey` value.
        Scheme::Plain
    }

    fn check_route(&self, config: &ExchangeConfig, host: &str) -> Result<(), String> {
        // The key is the registry's own: it must not be handed to another host.
        at_minting_host(config, host, "the NuGet gallery")?;
        // The gallery's push path is read off the token endpoint's (`.../token` becomes
        // `.../package`).
        if !config.token_endpoint.path().ends_with("/token") {
            return Err(format!("exchange `{}`: the token endpoint's path does not end in `/token`", config.name));
        }
        Ok(())
    }

    fn settings(&self) -> &'static [Setting] {
        &[Setting {
            name: "user",
            required: true,
            about: "the nuget.org user who created the trusted publishing policy",
        }]
    }

    fn check_settings(&self, settings: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
        let user = settings.get("user").map(String::as_str).unwrap_or_default();
        let ok = !user.is_empty()
            && user.len() <= MAX_USER
            && user.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if ok {
            Ok(())
        } else {
            Err(format!("`user` is not a nuget.org user name (`{}`)", crate::sanitize_for_terminal(user)))
        }
    }

    fn request(&self, ask: &Ask<'_>) -> Result<ExchangeResponse, Error> {
        let user = ask.config.setting("user").unwrap_or_default();
        let body = json!({"username": user, "tokenType": "ApiKey"});
        let subject = ask.subject.expose();
        let (status, body) =
            post(ask.config, ask.http, &ask.config.token_endpoint, &|r| r.bearer_auth(subject).json(&body))?;
        parse(&ask.config.name, status, &body, time::OffsetDateTime::now_utc().unix_timestamp())
    }
}

/// Reads nuget.org's answer: the key, living until `expires` (else an hour).
pub(crate) fn parse(exchange: &str, status: u16, body: &[u8], now: i64) -> Result<ExchangeResponse, Error> {
    let malformed = |what: &str| Error::Malformed { exchange: exchange.into(), status, what: what.into() };
    let json: Option<Value> = serde_json::from_slice(body).ok();
    match status {
        200 | 201 => {
            let body = json.ok_or_else(|| malformed("a body that is not JSON"))?;
            let key = token_in(body.get("apiKey"), &|why| malformed(&format!("no usable `apiKey` ({why})")))?;
            // The key is minted and cannot be revoked: an `expires` this cannot read (no
            // offset, another format) is taken as the documented hour, and only one
            // already past fails the exchange.
            let expires_in = match body.get("expires") {
                None | Some(Value::Null) => KEY_LIFETIME,
                Some(at) => match seconds_until(at, now) {
                    Some(seconds) => seconds,
                    None if in_the_past(at, now) => return Err(malformed("an `expires` already past")),
                    None => KEY_LIFETIME,
                },
            };
            Ok(ExchangeResponse {
                access_token: key,
                issued_token_type: "nuget trusted publishing".into(),
                expires_in: Some(expires_in),
                scope: None,
                token_id: None,
            })
        }
        404 => Err(refused(exchange, "the gallery has no token API here (404)", None)),
        400..=499 => match json.as_ref().and_then(|b| b.get("error")?.as_str()) {
            Some(message) => Err(refused(exchange, &format!("{} ({status})", message.trim()), None)),
            None => Err(malformed("an error")),
        },
        _ => Err(malformed("an error")),
    }
}

/// True when `at` is an RFC 3339 time (or one without an offset, read as UTC) not after
/// `now`.
fn in_the_past(at: &Value, now: i64) -> bool {
    use time::format_description::well_known::Iso8601;
    let Some(text) = at.as_str() else { return false };
    let at = time::OffsetDateTime::parse(text, &Iso8601::DEFAULT)
        .or_else(|_| time::PrimitiveDateTime::parse(text, &Iso8601::DEFAULT).map(|t| t.assume_utc()));
    at.is_ok_and(|at| at.unix_timestamp() <= now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    #[test]
    fn a_key_lives_until_its_expires() {
        let body = br#"{"tokenType":"ApiKey","expires":"2026-01-01T01:00:00.0000000+00:00","apiKey":"oy2abc0123"}"#;
        let ok = parse("ng", 200, body, NOW).unwrap();
        assert_eq!(ok.access_token.expose(), "oy2abc0123");
        assert_eq!(ok.expires_in, Some(3600));
        let ok = parse("ng", 200, br#"{"apiKey":"oy2x"}"#, NOW).unwrap();
        assert_eq!(ok.expires_in, Some(KEY_LIFETIME));
    }

    #[test]
    fn an_unreadable_expires_is_the_documented_hour_and_a_past_one_fails() {
        // The key is minted by then and cannot be revoked: an `expires` without an offset,
        // or in another format, does not throw it away.
        for expires in ["2026-01-01T01:00:00.0000000", "soon", "1767229200"] {
            let body = format!(r#"{{"apiKey":"oy2x","expires":"{expires}"}}"#);
            assert_eq!(parse("ng", 200, body.as_bytes(), NOW).unwrap().expires_in, Some(KEY_LIFETIME), "{expires}");
        }
        let body = br#"{"apiKey":"oy2x","expires":3600}"#;
        assert_eq!(parse("ng", 200, body, NOW).unwrap().expires_in, Some(KEY_LIFETIME));
        for expires in ["2025-12-31T23:00:00Z", "2025-12-31T23:00:00", "2026-01-01T00:00:00+00:00"] {
            let body = format!(r#"{{"apiKey":"oy2x","expires":"{expires}"}}"#);
            let err = parse("ng", 200, body.as_bytes(), NOW).unwrap_err().to_string();
            assert!(err.contains("an `expires` already past"), "{expires}: {err}");
        }
    }

    #[test]
    fn a_missing_or_odd_key_says_why() {
        let err = parse("ng", 200, br#"{"apiKey":"a b"}"#, NOW).unwrap_err().to_string();
        assert!(err.contains("no usable `apiKey` (a token containing control characters or spaces)"), "{err}");
        let err = parse("ng", 200, br#"{"apiKey":""}"#, NOW).unwrap_err().to_string();
        assert!(err.contains("no usable `apiKey` (no `token`)"), "{err}");
    }

    #[test]
    fn refusals_are_one_line_and_odd_answers_malformed() {
        let body = br#"{"error":"No matching trusted publishing policy\nwas found."}"#;
        let err = parse("ng", 401, body, NOW).unwrap_err().to_string();
        assert_eq!(err, "exchange `ng` refused: No matching trusted publishing policy\u{fffd}was found. (401)");
        assert!(!err.contains('\n'));
        let err = parse("ng", 404, b"", NOW).unwrap_err().to_string();
        assert_eq!(err, "exchange `ng` refused: the gallery has no token API here (404)");
        for (status, body) in [
            (200, &br#"{"api_key":"t"}"#[..]),
            (200, br#"{"apiKey":"a b"}"#),
            (200, br#"{"apiKey":"k","expires":"2025-01-01T00:00:00Z"}"#),
            (200, br#"{"apiKey":"k","expires":"2025-12-31T23:00:00"}"#),
            (200, b"<html>"),
            (400, b"<html>"),
            (502, b"bad gateway"),
        ] {
            assert!(matches!(parse("ng", status, body, NOW), Err(Error::Malformed { .. })), "{status}");
        }
    }
}
