//! Package registries' own OIDC exchanges ("trusted publishing"): the registry verifies
//! the workload's ID token itself and answers with a short-lived publish token.
//!
//! crates.io: `POST /api/v1/trusted_publishing/tokens` with `{"jwt": ID_TOKEN}` answers
//! `{"token": T}`, valid 30 minutes, for every crate whose trusted-publisher config matches
//! the token's claims. Each ID token is accepted once (its `jti` is recorded), so the ID
//! token is fetched fresh for every exchange and never cached. `DELETE` on the same URL
//! with `Authorization: Bearer T` revokes T (204, also when already gone).
//!
//! npm: `POST {registry origin}/-/npm/v1/oidc/token/exchange/package/{@scope%2fname}` with
//! `Authorization: Bearer ID_TOKEN` (audience `npm:<registry hostname>`) answers
//! `{"token": T}`, a publish token for that one package; errors are `{"message": ...}`.
//!
//! PyPI: `GET /_/oidc/audience` names the audience; `POST /_/oidc/mint-token` with
//! `{"token": ID_TOKEN}` answers `{"success": true, "token": T}`, an upload token for the
//! projects whose trusted publisher matches, valid 15 minutes, used with `__token__`.
//! Errors are 422 `{"message", "errors": [{"code", "description"}]}`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::{Ask, Error, ExchangeResponse, Protocol};
use crate::config::{ExchangeConfig, Route, Scheme};
use crate::http::{HttpClient, Retry};
use crate::{Secret, Tool, sanitize_for_terminal};

/// crates.io's trusted publishing endpoint.
const CRATES_IO_ENDPOINT: &str = "https://crates.io/api/v1/trusted_publishing/tokens";
/// The npm registry (the exchange path is appended per package).
const NPM_ENDPOINT: &str = "https://registry.npmjs.org/";
/// PyPI's mint-token endpoint.
const PYPI_ENDPOINT: &str = "https://pypi.org/_/oidc/mint-token";

/// crates.io trusted publishing: publish tokens that can be revoked.
pub(crate) struct CratesIo;

impl Protocol for CratesIo {
    fn name(&self) -> &'static str {
        "crates-io"
    }

    fn default_endpoint(&self) -> Option<&'static str> {
        Some(CRATES_IO_ENDPOINT)
    }

    fn registry_tool(&self) -> Option<Tool> {
        Some(Tool::Cargo)
    }

    fn default_audience(&self, _tool: Tool, _protocol: &str, _host: &str) -> String {
        "crates.io".into()
    }

    fn default_operations(&self) -> &'static [&'static str] {
        &["publish", "yank", "owners"]
    }

    fn default_scheme(&self) -> Scheme {
        // cargo sends crates.io's token as the whole `Authorization` value.
        Scheme::Plain
    }

    fn request(&self, ask: &Ask<'_>) -> Result<ExchangeResponse, Error> {
        crates_io_exchange(ask.config, ask.http, ask.subject)
    }

    fn revokes(&self, _config: &ExchangeConfig) -> bool {
        true
    }

    fn revoke(&self, config: &ExchangeConfig, http: &HttpClient, token: &Secret) -> Result<(), Error> {
        crates_io_revoke(config, http, token)
    }
}

/// npm trusted publishing: a publish token for one package.
pub(crate) struct Npm;

impl Protocol for Npm {
    fn name(&self) -> &'static str {
        "npm"
    }

    fn default_endpoint(&self) -> Option<&'static str> {
        Some(NPM_ENDPOINT)
    }

    fn registry_tool(&self) -> Option<Tool> {
        Some(Tool::Npm)
    }

    fn default_audience(&self, _tool: Tool, _protocol: &str, host: &str) -> String {
        // npm asks for `npm:<registry hostname>`, without the port.
        format!("npm:{}", host.rsplit_once(':').map_or(host, |(h, _)| h))
    }

    fn check_route(&self, config: &ExchangeConfig, host: &str) -> Result<(), String> {
        // npm's exchange is the registry itself: a token it mints for one host must not
        // be handed to another.
        match crate::target::host_port(&config.token_endpoint) {
            Some(endpoint) if endpoint == host => Ok(()),
            _ => Err(format!("exchange `{}` is the registry at another host", config.name)),
        }
    }

    fn request(&self, ask: &Ask<'_>) -> Result<ExchangeResponse, Error> {
        npm_exchange(ask.config, ask.http, ask.subject, ask.target.path.as_deref().unwrap_or_default())
    }
}

/// PyPI trusted publishing: an upload token, used with `__token__`.
pub(crate) struct Pypi;

impl Protocol for Pypi {
    fn name(&self) -> &'static str {
        "pypi"
    }

    fn default_endpoint(&self) -> Option<&'static str> {
        Some(PYPI_ENDPOINT)
    }

    fn registry_tool(&self) -> Option<Tool> {
        Some(Tool::Pypi)
    }

    fn default_audience(&self, _tool: Tool, _protocol: &str, _host: &str) -> String {
        // PyPI names its audience; an empty one means "ask it".
        String::new()
    }

    fn subject_audience(&self, config: &ExchangeConfig, http: &HttpClient, route: &Route) -> Result<String, Error> {
        if route.audience.is_empty() { pypi_audience(config, http) } else { Ok(route.audience.clone()) }
    }

    fn request(&self, ask: &Ask<'_>) -> Result<ExchangeResponse, Error> {
        pypi_exchange(ask.config, ask.http, ask.subject)
    }
}

/// How long crates.io's publish tokens live; its answer does not say.
pub(crate) const CRATES_IO_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// How long PyPI's upload tokens live; its answer does not say.
pub(crate) const PYPI_TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);

#[derive(Deserialize)]
struct CratesIoToken {
    token: Option<String>,
}

#[derive(Deserialize)]
struct CratesIoErrors {
    errors: Vec<CratesIoError>,
}

#[derive(Deserialize)]
struct CratesIoError {
    detail: String,
}

/// Reads crates.io's answer to an exchange. The lifetime counts from before the request
/// was sent, so it errs short.
pub(crate) fn parse_crates_io(exchange: &str, status: u16, body: &[u8]) -> Result<ExchangeResponse, Error> {
    let malformed = |what: &str| Error::Malformed { exchange: exchange.into(), status, what: what.into() };
    if status == 200 {
        let body: CratesIoToken = serde_json::from_slice(body).map_err(|_| malformed("a body that is not JSON"))?;
        let token = body.token.filter(|t| !t.is_empty()).ok_or_else(|| malformed("no `token`"))?;
        if token.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(malformed("a token containing control characters or spaces"));
        }
        return Ok(ExchangeResponse {
            access_token: Secret::new(token),
            issued_token_type: "crates.io trusted publishing".into(),
            expires_in: Some(CRATES_IO_TOKEN_LIFETIME.as_secs()),
            scope: None,
            token_id: None,
        });
    }
    let details = serde_json::from_slice::<CratesIoErrors>(body).map(|e| e.errors).unwrap_or_default();
    match details.first() {
        Some(error) if (400..500).contains(&status) => Err(Error::Denied {
            exchange: exchange.into(),
            code: sanitize_for_terminal(&error.detail).chars().take(300).collect(),
            description: None,
        }),
        _ => Err(malformed("an error")),
    }
}

/// POSTs an exchange request, again only when it never left: a request that arrived may
/// have used up the ID token.
pub(crate) fn post(
    config: &ExchangeConfig,
    http: &HttpClient,
    url: &url::Url,
    build: &dyn Fn(reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder,
) -> Result<(u16, Vec<u8>), Error> {
    let request = || Ok(build(http.post(url)?.header("Accept", "application/json")));
    http.send_retrying(url, Retry::Undelivered, &request)
        .map_err(|source| Error::Http { exchange: config.name.clone(), source })
}

/// Exchanges a fresh ID token at crates.io.
pub(crate) fn crates_io_exchange(
    config: &ExchangeConfig,
    http: &HttpClient,
    id_token: &Secret,
) -> Result<ExchangeResponse, Error> {
    let body = json!({"jwt": id_token.expose()});
    let (status, body) = post(config, http, &config.token_endpoint, &|r| r.json(&body))?;
    parse_crates_io(&config.name, status, &body)
}

/// Revokes a crates.io publish token: 204, also when it was already revoked or expired.
pub(crate) fn crates_io_revoke(config: &ExchangeConfig, http: &HttpClient, token: &Secret) -> Result<(), Error> {
    let url = &config.token_endpoint;
    let http_error = |source| Error::Http { exchange: config.name.clone(), source };
    let request = http.delete(url).map_err(http_error)?.bearer_auth(token.expose());
    let (status, body) = http.send(request, url).map_err(http_error)?;
    match status {
        200..=299 => Ok(()),
        _ => Err(parse_crates_io(&config.name, status, &body).err().unwrap_or_else(|| Error::Malformed {
            exchange: config.name.clone(),
            status,
            what: "an error".into(),
        })),
    }
}

/// A token from a registry's JSON answer, checked like every token we hand out.
pub(crate) fn token_in(value: Option<&serde_json::Value>, malformed: &dyn Fn(&str) -> Error) -> Result<Secret, Error> {
    let token = value.and_then(|v| v.as_str()).filter(|t| !t.is_empty()).ok_or_else(|| malformed("no `token`"))?;
    if token.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(malformed("a token containing control characters or spaces"));
    }
    Ok(Secret::new(token))
}

pub(crate) fn refused(exchange: &str, code: &str, description: Option<&str>) -> Error {
    Error::Denied {
        exchange: exchange.into(),
        code: sanitize_for_terminal(code).chars().take(300).collect(),
        description: description.map(|d| sanitize_for_terminal(d).chars().take(300).collect()),
    }
}

/// npm's name for a package in a URL: `@scope/name` becomes `@scope%2fname`.
pub(crate) fn npm_escaped_name(package: &str) -> String {
    package.replace('/', "%2f")
}

/// Reads npm's answer to an exchange.
pub(crate) fn parse_npm(exchange: &str, status: u16, body: &[u8]) -> Result<ExchangeResponse, Error> {
    let malformed = |what: &str| Error::Malformed { exchange: exchange.into(), status, what: what.into() };
    let body: serde_json::Value = serde_json::from_slice(body).map_err(|_| malformed("a body that is not JSON"))?;
    match status {
        200 | 201 => Ok(ExchangeResponse {
            access_token: token_in(body.get("token"), &malformed)?,
            issued_token_type: "npm trusted publishing".into(),
            expires_in: None,
            scope: None,
            token_id: None,
        }),
        400..=499 => match body.get("message").and_then(|m| m.as_str()) {
            Some(message) => Err(refused(exchange, message, None)),
            None => Err(malformed("an error")),
        },
        _ => Err(malformed("an error")),
    }
}

/// Exchanges a fresh ID token at an npm registry for a publish token for one package.
/// The path is absolute, as npm resolves it: a registry path prefix is dropped.
pub(crate) fn npm_exchange(
    config: &ExchangeConfig,
    http: &HttpClient,
    id_token: &Secret,
    package: &str,
) -> Result<ExchangeResponse, Error> {
    let path = format!("/-/npm/v1/oidc/token/exchange/package/{}", npm_escaped_name(package));
    let mut url = config.token_endpoint.clone();
    url.set_path(&path);
    url.set_query(None);
    let (status, body) = post(config, http, &url, &|r| r.bearer_auth(id_token.expose()))?;
    parse_npm(&config.name, status, &body)
}

/// Reads PyPI's answer to `mint-token`.
pub(crate) fn parse_pypi(exchange: &str, status: u16, body: &[u8]) -> Result<ExchangeResponse, Error> {
    let malformed = |what: &str| Error::Malformed { exchange: exchange.into(), status, what: what.into() };
    let body: serde_json::Value = serde_json::from_slice(body).map_err(|_| malformed("a body that is not JSON"))?;
    if status == 200 {
        if body.get("success").and_then(|s| s.as_bool()) != Some(true) {
            return Err(malformed("no `success`"));
        }
        return Ok(ExchangeResponse {
            access_token: token_in(body.get("token"), &malformed)?,
            issued_token_type: "pypi trusted publishing".into(),
            expires_in: Some(PYPI_TOKEN_LIFETIME.as_secs()),
            scope: None,
            token_id: None,
        });
    }
    Err(pypi_error(exchange, status, &body))
}

/// PyPI's error document: the first error's code and description, else its message.
fn pypi_error(exchange: &str, status: u16, body: &serde_json::Value) -> Error {
    let first = body.get("errors").and_then(|e| e.get(0));
    let code = first.and_then(|e| e.get("code")).and_then(|c| c.as_str());
    let description = first.and_then(|e| e.get("description")).and_then(|d| d.as_str());
    let message = body.get("message").and_then(|m| m.as_str());
    match (status, code, message) {
        (400..=499, Some(code), _) => refused(exchange, code, description),
        (400..=499, None, Some(message)) => refused(exchange, message, None),
        _ => Error::Malformed { exchange: exchange.into(), status, what: "an error".into() },
    }
}

/// The audience PyPI wants in ID tokens: `GET /_/oidc/audience` beside `mint-token`.
pub(crate) fn pypi_audience(config: &ExchangeConfig, http: &HttpClient) -> Result<String, Error> {
    let mut url = config.token_endpoint.clone();
    url.set_path("/_/oidc/audience");
    let http_error = |source| Error::Http { exchange: config.name.clone(), source };
    let (status, body) = http.send(http.get(&url).map_err(http_error)?, &url).map_err(http_error)?;
    let malformed = |what: &str| Error::Malformed { exchange: config.name.clone(), status, what: what.into() };
    let body: serde_json::Value = serde_json::from_slice(&body).map_err(|_| malformed("a body that is not JSON"))?;
    match (status, body.get("audience").and_then(|a| a.as_str())) {
        (200, Some(audience)) if !audience.is_empty() && !audience.chars().any(char::is_control) => {
            Ok(audience.to_owned())
        }
        (200, _) => Err(malformed("no `audience`")),
        (_, _) => Err(pypi_error(&config.name, status, &body)),
    }
}

/// Exchanges a fresh ID token at PyPI for an upload token.
pub(crate) fn pypi_exchange(
    config: &ExchangeConfig,
    http: &HttpClient,
    id_token: &Secret,
) -> Result<ExchangeResponse, Error> {
    let body = json!({"token": id_token.expose()});
    let (status, body) = post(config, http, &config.token_endpoint, &|r| r.json(&body))?;
    parse_pypi(&config.name, status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_crates_io_token_with_its_known_lifetime() {
        let response = parse_crates_io("crates-io", 200, br#"{"token":"cio_tp_abc"}"#).unwrap();
        assert_eq!(response.access_token.expose(), "cio_tp_abc");
        assert_eq!(response.expires_in, Some(1800));
    }

    #[test]
    fn refuses_lying_answers() {
        for body in [&b"nope"[..], br#"{}"#, br#"{"token":""}"#, br#"{"token":"a b"}"#] {
            assert!(matches!(parse_crates_io("c", 200, body), Err(Error::Malformed { .. })));
        }
    }

    #[test]
    fn crates_io_errors_become_one_line_with_the_detail() {
        let body = br#"{"errors":[{"detail":"JWT has already been used\nsecond"}]}"#;
        let err = parse_crates_io("crates-io", 400, body).unwrap_err().to_string();
        assert_eq!(err, "exchange `crates-io` refused: JWT has already been used\u{fffd}second");
        let err = parse_crates_io("crates-io", 503, b"<html>").unwrap_err().to_string();
        assert_eq!(err, "exchange `crates-io` answered 503 with an error");
    }

    #[test]
    fn npm_names_and_answers() {
        assert_eq!(npm_escaped_name("@org/pkg"), "@org%2fpkg");
        assert_eq!(npm_escaped_name("left-pad"), "left-pad");
        let ok = parse_npm("npm", 201, br#"{"token":"npm_abc"}"#).unwrap();
        assert_eq!((ok.access_token.expose(), ok.expires_in), ("npm_abc", None));
        let err = parse_npm("npm", 404, br#"{"message":"OIDC token exchange error - package not found"}"#);
        assert_eq!(
            err.unwrap_err().to_string(),
            "exchange `npm` refused: OIDC token exchange error - package not found"
        );
        assert!(matches!(parse_npm("npm", 500, b"{}"), Err(Error::Malformed { .. })));
    }

    #[test]
    fn pypi_answers_and_error_codes() {
        let ok = parse_pypi("pypi", 200, br#"{"success":true,"token":"pypi-AgEI"}"#).unwrap();
        assert_eq!((ok.access_token.expose(), ok.expires_in), ("pypi-AgEI", Some(900)));
        let body = br#"{"message":"Token request failed","errors":[{"code":"invalid-publisher","description":"valid token, but no corresponding publisher"}]}"#;
        let err = parse_pypi("pypi", 422, body).unwrap_err().to_string();
        assert_eq!(err, "exchange `pypi` refused: invalid-publisher: valid token, but no corresponding publisher");
        let err = parse_pypi("pypi", 403, br#"{"message":"Trusted publishing functionality not enabled"}"#);
        assert!(err.unwrap_err().to_string().ends_with("not enabled"));
        assert!(matches!(parse_pypi("pypi", 200, br#"{"token":"t"}"#), Err(Error::Malformed { .. })));
    }
}
