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

/// Sends the exchange, again only where the exchange cannot have minted anything. A
/// request the exchange holds for a person's approval is waited for here: the tool blocks
/// on its helper meanwhile, as it would on a slow server.
pub(crate) fn exchange(
    config: &ExchangeConfig,
    http: &HttpClient,
    request: &ExchangeRequest<'_>,
) -> Result<ExchangeResponse, Error> {
    match send(config, http, request, None)? {
        Answer::Token(response) => Ok(response),
        Answer::Pending { approval: Some(approval), .. } => wait_for_approval(config, http, request, &approval),
        Answer::Pending { approval: None, .. } | Answer::SlowDown { .. } => Err(Error::Malformed {
            exchange: config.name.clone(),
            status: 400,
            what: "a pending answer without an approval".into(),
        }),
    }
}

fn send(
    config: &ExchangeConfig,
    http: &HttpClient,
    request: &ExchangeRequest<'_>,
    approval_code: Option<&Secret>,
) -> Result<Answer, Error> {
    let url = &config.token_endpoint;
    let mut body = form(request);
    if let Some(code) = approval_code {
        body.push(("approval_code", code.expose().into()));
    }
    let build = || Ok(http.post(url)?.header("Accept", "application/json").form(&body));
    let (status, body) = http
        .send_retrying(url, Retry::Unavailable, &build)
        .map_err(|source| Error::Http { exchange: config.name.clone(), source })?;
    read(&config.name, status, &body)
}

/// A request the exchange holds until a person approves it (mayfly-sts's step-up: an
/// RFC 8693 error in the style of RFC 8628's `authorization_pending`).
pub(crate) struct Approval {
    /// Where an approver looks at it and decides.
    uri: String,
    /// The secret that collects the token once approved: the client's alone.
    code: Secret,
    /// Seconds between polls.
    interval: u64,
    /// Seconds until the approval expires.
    expires_in: u64,
}

/// An exchange's answer: a token, or a request held for approval.
pub(crate) enum Answer {
    Token(ExchangeResponse),
    /// Held: with the approval on the first answer, without it while polling.
    Pending {
        approval: Option<Approval>,
        interval: Option<u64>,
    },
    /// Polled too fast: wait this many seconds between polls from now on.
    SlowDown {
        interval: u64,
    },
}

#[derive(Deserialize)]
struct PendingBody {
    error: String,
    approval_uri: Option<String>,
    approval_code: Option<String>,
    interval: Option<u64>,
    expires_in: Option<u64>,
}

/// Reads an answer that may hold the request for approval; anything else as [`parse`].
pub(crate) fn read(exchange: &str, status: u16, body: &[u8]) -> Result<Answer, Error> {
    let pending = (status == 400).then(|| serde_json::from_slice::<PendingBody>(body).ok()).flatten();
    match pending {
        Some(p) if p.error == "authorization_pending" => {
            let approval = match (p.approval_uri, p.approval_code) {
                (Some(uri), Some(code)) if is_clean(&uri) && is_clean(&code) => Some(Approval {
                    uri,
                    code: Secret::new(code),
                    interval: p.interval.unwrap_or(5),
                    expires_in: p.expires_in.unwrap_or(0),
                }),
                _ => None,
            };
            Ok(Answer::Pending { approval, interval: p.interval })
        }
        Some(p) if p.error == "slow_down" => Ok(Answer::SlowDown { interval: p.interval.unwrap_or(10) }),
        _ => parse(exchange, status, body).map(Answer::Token),
    }
}

/// `5m`, `1m30s`, `45s`: a duration as a person reads it.
fn in_words(seconds: u64) -> String {
    match (seconds / 60, seconds % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

fn is_clean(text: &str) -> bool {
    !text.is_empty() && text.len() <= 2048 && !text.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// Polls until the approval is granted (the token), denied, expired, or the client's own
/// limit; one line on stderr says what the tool is waiting for and where to approve it.
fn wait_for_approval(
    config: &ExchangeConfig,
    http: &HttpClient,
    request: &ExchangeRequest<'_>,
    approval: &Approval,
) -> Result<ExchangeResponse, Error> {
    // Between 1 s and 60 s, whatever the exchange says: a lying interval neither spins
    // nor stalls the tool.
    let clamp = |seconds: u64| Duration::from_secs(seconds.clamp(1, 60));
    let limit = config.approval_wait.min(Duration::from_secs(approval.expires_in.max(1)));
    let intent = request.intent;
    crate::protocol::warn(&format!(
        "waiting for approval of {} on {}: {} (expires in {})",
        intent.operation,
        intent.target,
        approval.uri,
        in_words(approval.expires_in)
    ));
    let started = std::time::Instant::now();
    let mut interval = clamp(approval.interval);
    loop {
        if started.elapsed() + interval > limit {
            return Err(Error::Denied {
                exchange: config.name.clone(),
                code: "expired_token".into(),
                description: Some(format!(
                    "no decision on the approval within {}s; ask again once it is approved",
                    limit.as_secs()
                )),
            });
        }
        std::thread::sleep(interval);
        match send(config, http, request, Some(&approval.code))? {
            Answer::Token(response) => return Ok(response),
            Answer::Pending { interval: Some(next), .. } => interval = clamp(next),
            Answer::Pending { .. } => {}
            Answer::SlowDown { interval: next } => interval = clamp(next),
        }
    }
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
    fn a_held_request_is_read_as_pending_and_anything_else_as_before() {
        let first = br#"{"error":"authorization_pending","error_description":"write needs approval","approval_id":"ab","approval_uri":"https://sts/approve/ab","approval_code":"c0de","interval":3,"expires_in":600}"#;
        let Ok(Answer::Pending { approval: Some(approval), interval: Some(3) }) = read("sts", 400, first) else {
            panic!("a first pending answer carries its approval")
        };
        assert_eq!((approval.uri.as_str(), approval.code.expose()), ("https://sts/approve/ab", "c0de"));
        assert_eq!((approval.interval, approval.expires_in), (3, 600));
        let polling = br#"{"error":"authorization_pending","interval":5}"#;
        assert!(matches!(read("sts", 400, polling), Ok(Answer::Pending { approval: None, interval: Some(5) })));
        // A code or URI that could break a line or smuggle a space is not an approval.
        let hostile = br#"{"error":"authorization_pending","approval_uri":"https://sts/a\nb","approval_code":"c"}"#;
        assert!(matches!(read("sts", 400, hostile), Ok(Answer::Pending { approval: None, .. })));
        assert!(matches!(
            read("sts", 400, br#"{"error":"slow_down","interval":15}"#),
            Ok(Answer::SlowDown { interval: 15 })
        ));
        let denied = read("sts", 400, br#"{"error":"access_denied","error_description":"denied by alice: not today"}"#);
        assert!(
            matches!(&denied, Err(Error::Denied { code, description: Some(d), .. }) if code == "access_denied" && d.contains("alice")),
            "{:?}",
            denied.err()
        );
        assert!(matches!(
            read("sts", 200, br#"{"access_token":"t","issued_token_type":"x","token_type":"Bearer"}"#),
            Ok(Answer::Token(_))
        ));
        assert_eq!((in_words(300), in_words(45), in_words(90)), ("5m".into(), "45s".into(), "1m30s".into()));
    }

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
