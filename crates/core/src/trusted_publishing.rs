//! Package registries' own OIDC exchanges ("trusted publishing"): the registry verifies
//! the workload's ID token itself and answers with a short-lived publish token.
//!
//! crates.io: `POST /api/v1/trusted_publishing/tokens` with `{"jwt": ID_TOKEN}` answers
//! `{"token": T}`, valid 30 minutes, for every crate whose trusted-publisher config matches
//! the token's claims. Each ID token is accepted once (its `jti` is recorded), so the ID
//! token is fetched fresh for every exchange and never cached. `DELETE` on the same URL
//! with `Authorization: Bearer T` revokes T (204, also when already gone).

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::config::ExchangeConfig;
use crate::exchange::{Error, ExchangeResponse};
use crate::http::HttpClient;
use crate::{Secret, sanitize_for_terminal};

/// How long crates.io's publish tokens live; its answer does not say.
pub(crate) const CRATES_IO_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 60);

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

/// Exchanges a fresh ID token at crates.io. Retried only when the request never left:
/// a request that arrived may have used up the ID token.
pub(crate) fn crates_io_exchange(
    config: &ExchangeConfig,
    http: &HttpClient,
    id_token: &Secret,
) -> Result<ExchangeResponse, Error> {
    let url = &config.token_endpoint;
    let http_error = |source| Error::Http { exchange: config.name.clone(), source };
    let body = json!({"jwt": id_token.expose()});
    let mut attempt = 0;
    loop {
        attempt += 1;
        let request = http.post(url).map_err(http_error)?.header("Accept", "application/json").json(&body);
        match http.send(request, url) {
            Ok((status, body)) => return parse_crates_io(&config.name, status, &body),
            Err(crate::http::Error::Send { not_delivered: true, .. }) if attempt < 3 => {
                std::thread::sleep(Duration::from_millis(100 << attempt));
            }
            Err(e) => return Err(http_error(e)),
        }
    }
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
}
