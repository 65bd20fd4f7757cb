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
//! Errors are 422 `{"message", "errors": [{"code", "description"}]}`. `POST
//! /_/oidc/burn-token` with `{"token": T}` revokes T; PyPI answers 202 whether or not T was
//! live (pypi/warehouse#20197; the path as uv's `burn_token` sends it).
//!
//! PEP 807 (draft): an index other than PyPI names its endpoints itself. `GET
//! {origin}/.well-known/pytp/{hex sha256 of the upload URL's path}` answers
//! `{"audience-endpoint", "mint-token-endpoint"}` (404: no trusted publishing for that
//! upload URL); the audience and mint calls are then PyPI's, at those URLs, with `Accept:
//! application/vnd.pypi.pytp.v1+json`; the mint answer is `{"token", "expires"?}` (unix
//! seconds; absent means at most 15 minutes). Both endpoints must be on the upload URL's
//! host, over HTTPS (or loopback): an index must not send the ID token elsewhere. The key
//! hashes the path as the PEP's text says; its worked example hashes the path and a
//! newline, so a draft-era index may expect either.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use sha2::Digest;

use super::{Ask, Error, ExchangeResponse, Protocol, Setting};
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

    fn settings(&self) -> &'static [Setting] {
        &[Setting {
            name: "burn",
            required: false,
            about: "\"false\" for an index without PyPI's burn endpoint (default \"true\")",
        }]
    }

    fn check_settings(&self, settings: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
        burns(settings.get("burn").map(String::as_str)).map(|_| ())
    }

    fn request(&self, ask: &Ask<'_>) -> Result<ExchangeResponse, Error> {
        pypi_exchange(ask.config, ask.http, ask.subject)
    }

    fn revokes(&self, config: &ExchangeConfig) -> bool {
        burns(config.setting("burn")).unwrap_or(true)
    }

    fn revoke(&self, config: &ExchangeConfig, http: &HttpClient, token: &Secret) -> Result<(), Error> {
        pypi_burn(config, http, token)
    }
}

/// The `burn` setting: `true` unless it says `false`.
fn burns(value: Option<&str>) -> Result<bool, String> {
    match value {
        None | Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(format!("`burn` is `{}`; it takes \"true\" or \"false\"", sanitize_for_terminal(other))),
    }
}

/// PEP 807 trusted publishing (draft): an index that names its own audience and mint
/// endpoints at `/.well-known/pytp/`. `token_endpoint` is the upload URL twine is given.
pub(crate) struct Pep807;

impl Protocol for Pep807 {
    fn name(&self) -> &'static str {
        "pep807"
    }

    fn registry_tool(&self) -> Option<Tool> {
        Some(Tool::Pypi)
    }

    fn default_audience(&self, _tool: Tool, _protocol: &str, _host: &str) -> String {
        // The index names its audience; an empty one means "ask it".
        String::new()
    }

    fn check_route(&self, config: &ExchangeConfig, host: &str) -> Result<(), String> {
        // The index's tokens are for its upload URL's host alone.
        match crate::target::host_port(&config.token_endpoint) {
            Some(endpoint) if endpoint == host => Ok(()),
            _ => Err(format!("exchange `{}` is the upload URL of another host", config.name)),
        }
    }

    fn subject_audience(&self, config: &ExchangeConfig, http: &HttpClient, route: &Route) -> Result<String, Error> {
        if !route.audience.is_empty() {
            return Ok(route.audience.clone());
        }
        let endpoints = pep807_discover(config, http)?;
        audience_at(config, http, &endpoints.audience, PYTP_ACCEPT)
    }

    fn request(&self, ask: &Ask<'_>) -> Result<ExchangeResponse, Error> {
        let endpoints = pep807_discover(ask.config, ask.http)?;
        let body = json!({"token": ask.subject.expose()});
        let url = &endpoints.mint;
        let request = || Ok(ask.http.post(url)?.header("Accept", PYTP_ACCEPT).json(&body));
        let (status, body) = ask
            .http
            .send_retrying(url, Retry::Undelivered, &request)
            .map_err(|source| Error::Http { exchange: ask.config.name.clone(), source })?;
        parse_pep807(&ask.config.name, status, &body, now())
    }
}

/// PEP 807's media type, asked of every endpoint.
const PYTP_ACCEPT: &str = "application/vnd.pypi.pytp.v1+json";
/// The longest lifetime PEP 807 lets an index grant.
const PEP807_MAX_LIFETIME: u64 = 6 * 60 * 60;

/// The endpoints a PEP 807 discovery document names, checked.
#[derive(Debug)]
pub(crate) struct PytpEndpoints {
    pub audience: url::Url,
    pub mint: url::Url,
}

/// The discovery URL for an upload URL: its origin, `/.well-known/pytp/`, and the hex
/// SHA-256 of its path.
pub(crate) fn pep807_discovery_url(upload: &url::Url) -> url::Url {
    let mut url = upload.clone();
    url.set_path(&format!("/.well-known/pytp/{}", hex::encode(sha2::Sha256::digest(upload.path().as_bytes()))));
    url.set_query(None);
    url.set_fragment(None);
    url
}

/// Asks the index for its endpoints and keeps them only when they are its own.
pub(crate) fn pep807_discover(config: &ExchangeConfig, http: &HttpClient) -> Result<PytpEndpoints, Error> {
    let url = pep807_discovery_url(&config.token_endpoint);
    let http_error = |source| Error::Http { exchange: config.name.clone(), source };
    let request = http.get(&url).map_err(http_error)?.header("Accept", PYTP_ACCEPT);
    let (status, body) = http.send(request, &url).map_err(http_error)?;
    parse_pep807_discovery(&config.name, &config.token_endpoint, status, &body)
}

/// Reads a discovery answer: both endpoints, HTTPS or loopback, on the upload URL's host.
pub(crate) fn parse_pep807_discovery(
    exchange: &str,
    upload: &url::Url,
    status: u16,
    body: &[u8],
) -> Result<PytpEndpoints, Error> {
    let malformed = |what: String| Error::Malformed { exchange: exchange.into(), status, what };
    if status == 404 {
        return Err(refused(exchange, "no PEP 807 trusted publishing for this upload URL", None));
    }
    let body: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| malformed("a discovery answer that is not JSON".into()))?;
    if status != 200 {
        return Err(pypi_error(exchange, status, &body));
    }
    let endpoint = |field: &str| -> Result<url::Url, Error> {
        let value = body.get(field).and_then(|v| v.as_str()).ok_or_else(|| malformed(format!("no `{field}`")))?;
        let url = url::Url::parse(value).map_err(|_| malformed(format!("`{field}` not a URL")))?;
        if crate::http::check_url(&url).is_err() {
            return Err(malformed(format!("`{field}` neither HTTPS nor loopback")));
        }
        if url.host_str() != upload.host_str() || !url.username().is_empty() || url.password().is_some() {
            return Err(malformed(format!(
                "`{field}` on another host ({}), refused",
                sanitize_for_terminal(url.host_str().unwrap_or_default())
            )));
        }
        Ok(url)
    };
    Ok(PytpEndpoints { audience: endpoint("audience-endpoint")?, mint: endpoint("mint-token-endpoint")? })
}

/// Reads a PEP 807 mint answer: the token, living until `expires` (else 15 minutes), at
/// most the 6 hours the PEP allows.
pub(crate) fn parse_pep807(exchange: &str, status: u16, body: &[u8], now: i64) -> Result<ExchangeResponse, Error> {
    let malformed = |what: &str| Error::Malformed { exchange: exchange.into(), status, what: what.into() };
    let body: serde_json::Value = serde_json::from_slice(body).map_err(|_| malformed("a body that is not JSON"))?;
    if status != 200 {
        return Err(pypi_error(exchange, status, &body));
    }
    let expires_in = match body.get("expires") {
        None | Some(serde_json::Value::Null) => PYPI_TOKEN_LIFETIME.as_secs(),
        Some(expires) => match expires.as_i64() {
            Some(at) if at > now => ((at - now) as u64).min(PEP807_MAX_LIFETIME),
            _ => return Err(malformed("an `expires` that is not a time to come")),
        },
    };
    Ok(ExchangeResponse {
        access_token: token_in(body.get("token"), &malformed)?,
        issued_token_type: "pep 807 trusted publishing".into(),
        expires_in: Some(expires_in),
        scope: None,
        token_id: None,
    })
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
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

/// A registry's own key goes only to the host that minted it: a route elsewhere is a
/// config error naming the registry (`what`).
pub(crate) fn at_minting_host(config: &ExchangeConfig, host: &str, what: &str) -> Result<(), String> {
    match crate::target::host_port(&config.token_endpoint) {
        Some(endpoint) if endpoint == host => Ok(()),
        _ => Err(format!("exchange `{}` is {what} at another host", config.name)),
    }
}

/// Seconds from `now` until an answer's RFC 3339 expiry; `None` when it is no such time
/// or not one to come.
pub(crate) fn seconds_until(at: &serde_json::Value, now: i64) -> Option<u64> {
    let at = time::OffsetDateTime::parse(at.as_str()?, &time::format_description::well_known::Rfc3339).ok()?;
    let seconds = at.unix_timestamp() - now;
    (seconds > 0).then_some(seconds.unsigned_abs())
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
    audience_at(config, http, &url, "application/json")
}

/// The audience an index names at `url`.
fn audience_at(config: &ExchangeConfig, http: &HttpClient, url: &url::Url, accept: &str) -> Result<String, Error> {
    let http_error = |source| Error::Http { exchange: config.name.clone(), source };
    let request = http.get(url).map_err(http_error)?.header("Accept", accept);
    let (status, body) = http.send(request, url).map_err(http_error)?;
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

/// Burns a PyPI upload token: `POST /_/oidc/burn-token` beside `mint-token`. PyPI answers
/// 202 whether or not the token was live.
pub(crate) fn pypi_burn(config: &ExchangeConfig, http: &HttpClient, token: &Secret) -> Result<(), Error> {
    let mut url = config.token_endpoint.clone();
    url.set_path("/_/oidc/burn-token");
    url.set_query(None);
    let body = json!({"token": token.expose()});
    let (status, answer) = post(config, http, &url, &|r| r.json(&body))?;
    match status {
        200..=299 => Ok(()),
        _ => Err(serde_json::from_slice::<serde_json::Value>(&answer)
            .map(|body| pypi_error(&config.name, status, &body))
            .unwrap_or_else(|_| Error::Malformed { exchange: config.name.clone(), status, what: "an error".into() })),
    }
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

    #[test]
    fn the_burn_setting_reads_true_or_false() {
        assert_eq!(burns(None), Ok(true));
        assert_eq!(burns(Some("false")), Ok(false));
        assert_eq!(burns(Some("no")).unwrap_err(), "`burn` is `no`; it takes \"true\" or \"false\"");
    }

    #[test]
    fn pep807_discovery_url_is_the_hash_of_the_upload_path() {
        // PEP 807's text: the SHA-256 of the path itself. (Its worked example, `af030c...`,
        // is the hash of `/legacy/` and a newline, which its footnote's `<<<` adds.)
        let upload = url::Url::parse("https://upload.example.com/legacy/?x=1").unwrap();
        assert_eq!(
            pep807_discovery_url(&upload).as_str(),
            "https://upload.example.com/.well-known/pytp/0cace9579789849db6e16d48df183951c8f17582200d84bc93c7678d6c8f78a7"
        );
    }

    #[test]
    fn pep807_discovery_keeps_the_index_on_its_own_host() {
        let upload = url::Url::parse("https://upload.example.com/legacy/").unwrap();
        let doc = |a: &str, m: &str| format!(r#"{{"audience-endpoint":"{a}","mint-token-endpoint":"{m}"}}"#);
        let ok = doc("https://upload.example.com/_/oidc/audience", "https://upload.example.com:8443/mint");
        let found = parse_pep807_discovery("idx", &upload, 200, ok.as_bytes()).unwrap();
        assert_eq!(found.mint.as_str(), "https://upload.example.com:8443/mint");
        let elsewhere = doc("https://upload.example.com/a", "https://evil.example/mint");
        let err = parse_pep807_discovery("idx", &upload, 200, elsewhere.as_bytes()).unwrap_err().to_string();
        assert_eq!(
            err,
            "exchange `idx` answered 200 with `mint-token-endpoint` on another host (evil.example), refused"
        );
        let plain = doc("http://upload.example.com/a", "https://upload.example.com/m");
        let err = parse_pep807_discovery("idx", &upload, 200, plain.as_bytes()).unwrap_err().to_string();
        assert!(err.ends_with("with `audience-endpoint` neither HTTPS nor loopback"), "{err}");
        let userinfo = doc("https://upload.example.com/a", "https://x@upload.example.com/m");
        assert!(parse_pep807_discovery("idx", &upload, 200, userinfo.as_bytes()).is_err());
        let err = parse_pep807_discovery("idx", &upload, 404, b"").unwrap_err().to_string();
        assert_eq!(err, "exchange `idx` refused: no PEP 807 trusted publishing for this upload URL");
    }

    #[test]
    fn pep807_tokens_live_as_the_index_says_within_the_pep() {
        let ok = parse_pep807("idx", 200, br#"{"token":"t1","expires":1600}"#, 1000).unwrap();
        assert_eq!((ok.access_token.expose(), ok.expires_in), ("t1", Some(600)));
        let ok = parse_pep807("idx", 200, br#"{"token":"t1"}"#, 1000).unwrap();
        assert_eq!(ok.expires_in, Some(900));
        let ok = parse_pep807("idx", 200, br#"{"token":"t1","expires":999999}"#, 1000).unwrap();
        assert_eq!(ok.expires_in, Some(21600));
        assert!(matches!(
            parse_pep807("idx", 200, br#"{"token":"t1","expires":10}"#, 1000),
            Err(Error::Malformed { .. })
        ));
        let body = br#"{"message":"no","errors":[{"code":"invalid-publisher","description":"nope"}]}"#;
        assert_eq!(
            parse_pep807("idx", 422, body, 0).unwrap_err().to_string(),
            "exchange `idx` refused: invalid-publisher: nope"
        );
    }
}
