//! The provider's side of a login, by hand: OpenID discovery, the device authorization
//! grant (RFC 8628), the authorization code grant's token request (RFC 6749 §4.1.3 with
//! PKCE, RFC 7636), the refresh grant (RFC 6749 §6) and token revocation (RFC 7009).
//! Form-encoded requests, the client authenticated by `client_id` in the body (public
//! clients) or HTTP Basic (confidential ones); errors are the JSON `error` and
//! `error_description`, cleaned and clipped before anyone sees them.

use base64::Engine;
use reqwest::blocking::RequestBuilder;
use serde::Deserialize;

use crate::http::{HttpClient, Retry};
use crate::{Secret, clip, sanitize_for_terminal};

/// The device code grant type.
pub(crate) const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// The client as the provider knows it.
pub(crate) struct Client<'a> {
    pub(crate) id: &'a str,
    pub(crate) secret: Option<&'a Secret>,
}

impl Client<'_> {
    /// Adds the client's authentication to a form request.
    fn authenticate(&self, request: RequestBuilder, form: &mut Vec<(&'static str, String)>) -> RequestBuilder {
        match self.secret {
            // RFC 6749 §2.3.1: both parts form-urlencoded before Basic.
            Some(secret) => {
                let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                let pair = format!("{}:{}", encode(self.id), encode(secret.expose()));
                let basic = base64::engine::general_purpose::STANDARD.encode(pair);
                request.header("Authorization", format!("Basic {basic}"))
            }
            None => {
                form.push(("client_id", self.id.to_owned()));
                request
            }
        }
    }
}

/// The endpoints discovery names.
#[derive(Debug)]
pub(crate) struct Endpoints {
    pub(crate) authorization: Option<url::Url>,
    pub(crate) token: url::Url,
    pub(crate) device_authorization: Option<url::Url>,
    pub(crate) revocation: Option<url::Url>,
}

/// `{issuer}/.well-known/openid-configuration`, whose `issuer` must be the one asked.
pub(crate) fn discover(http: &HttpClient, issuer: &str) -> Result<Endpoints, String> {
    #[derive(Deserialize)]
    struct Document {
        issuer: Option<String>,
        authorization_endpoint: Option<String>,
        token_endpoint: Option<String>,
        device_authorization_endpoint: Option<String>,
        revocation_endpoint: Option<String>,
    }
    let url = url::Url::parse(&format!("{issuer}/.well-known/openid-configuration"))
        .map_err(|e| format!("invalid issuer `{issuer}`: {e}"))?;
    let build = || Ok(http.get(&url)?.header("Accept", "application/json"));
    let (status, body) = http.send_retrying(&url, Retry::ServerError, &build).map_err(|e| format!("discovery: {e}"))?;
    if status != 200 {
        return Err(format!("discovery at `{}` answered {status}", crate::http::redacted(&url)));
    }
    let doc: Document = serde_json::from_slice(&body).map_err(|_| "discovery document is not JSON".to_owned())?;
    if doc.issuer.as_deref() != Some(issuer) {
        return Err(format!("discovery document names another issuer than `{issuer}`"));
    }
    let endpoint = |name: &str, value: Option<String>| -> Result<Option<url::Url>, String> {
        let Some(value) = value else { return Ok(None) };
        let url = url::Url::parse(&value).map_err(|_| format!("discovery: `{name}` is not a URL"))?;
        crate::http::check_url(&url).map_err(|e| format!("discovery: `{name}`: {e}"))?;
        Ok(Some(url))
    };
    Ok(Endpoints {
        authorization: endpoint("authorization_endpoint", doc.authorization_endpoint)?,
        token: endpoint("token_endpoint", doc.token_endpoint)?
            .ok_or_else(|| "discovery document has no `token_endpoint`".to_owned())?,
        device_authorization: endpoint("device_authorization_endpoint", doc.device_authorization_endpoint)?,
        revocation: endpoint("revocation_endpoint", doc.revocation_endpoint)?,
    })
}

/// The device authorization response (RFC 8628 §3.2).
#[derive(Deserialize)]
pub(crate) struct DeviceAuthorization {
    pub(crate) device_code: String,
    pub(crate) user_code: String,
    pub(crate) verification_uri: String,
    #[serde(default)]
    pub(crate) verification_uri_complete: Option<String>,
    pub(crate) expires_in: u64,
    #[serde(default)]
    pub(crate) interval: Option<u64>,
}

impl std::fmt::Debug for DeviceAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceAuthorization").field("device_code", &"[redacted]").finish_non_exhaustive()
    }
}

/// Asks for a device code and a user code.
pub(crate) fn device_authorization(
    http: &HttpClient,
    endpoint: &url::Url,
    client: &Client<'_>,
    scopes: &str,
) -> Result<DeviceAuthorization, String> {
    let (status, body) = post_form(http, endpoint, client, vec![("scope", scopes.to_owned())], Retry::Undelivered)?;
    if status != 200 {
        return Err(format!("device authorization refused: {}", oauth_error(status, &body)));
    }
    let answer: DeviceAuthorization =
        serde_json::from_slice(&body).map_err(|_| "device authorization answer lacks its codes".to_owned())?;
    for (name, value) in [("user_code", &answer.user_code), ("verification_uri", &answer.verification_uri)] {
        if value.is_empty() || value.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!("device authorization answer has a malformed `{name}`"));
        }
    }
    Ok(answer)
}

/// A token endpoint's success answer.
pub(crate) struct Tokens {
    pub(crate) id_token: Option<Secret>,
    pub(crate) refresh_token: Option<Secret>,
}

/// What one poll of the token endpoint says (RFC 8628 §3.5).
pub(crate) enum Poll {
    Done(Tokens),
    Pending,
    SlowDown,
    Expired,
    Denied,
}

/// Polls the token endpoint once with the device code.
pub(crate) fn poll(
    http: &HttpClient,
    endpoint: &url::Url,
    client: &Client<'_>,
    device_code: &str,
) -> Result<Poll, String> {
    let form = vec![("grant_type", DEVICE_CODE_GRANT.to_owned()), ("device_code", device_code.to_owned())];
    let (status, body) = post_form(http, endpoint, client, form, Retry::Undelivered)?;
    if status == 200 {
        return tokens(&body).map(Poll::Done);
    }
    Ok(match error_code(&body).as_deref() {
        Some("authorization_pending") => Poll::Pending,
        Some("slow_down") => Poll::SlowDown,
        Some("expired_token") => Poll::Expired,
        Some("access_denied") => Poll::Denied,
        _ => return Err(format!("token endpoint refused the device code: {}", oauth_error(status, &body))),
    })
}

/// Redeems an authorization code with its PKCE verifier (RFC 6749 §4.1.3, RFC 7636 §4.5).
/// Never retried once delivered: a code is good for one request.
pub(crate) fn redeem(
    http: &HttpClient,
    endpoint: &url::Url,
    client: &Client<'_>,
    code: &Secret,
    redirect_uri: &str,
    verifier: &Secret,
) -> Result<Tokens, String> {
    let form = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code.expose().to_owned()),
        ("redirect_uri", redirect_uri.to_owned()),
        ("code_verifier", verifier.expose().to_owned()),
    ];
    let (status, body) = post_form(http, endpoint, client, form, Retry::Undelivered)?;
    if status != 200 {
        return Err(format!("token endpoint refused the authorization code: {}", oauth_error(status, &body)));
    }
    tokens(&body)
}

/// Why a refresh failed: the provider refused (the login is over), or it could not be
/// asked (it may work later).
pub(crate) enum RefreshError {
    Refused(String),
    Unreachable(String),
}

/// The refresh grant.
pub(crate) fn refresh(
    http: &HttpClient,
    endpoint: &url::Url,
    client: &Client<'_>,
    refresh_token: &Secret,
) -> Result<Tokens, RefreshError> {
    let form = vec![("grant_type", "refresh_token".to_owned()), ("refresh_token", refresh_token.expose().to_owned())];
    let (status, body) =
        post_form(http, endpoint, client, form, Retry::Undelivered).map_err(RefreshError::Unreachable)?;
    match status {
        200 => tokens(&body).map_err(RefreshError::Refused),
        500.. => Err(RefreshError::Unreachable(format!("token endpoint answered {status}"))),
        _ => Err(RefreshError::Refused(oauth_error(status, &body))),
    }
}

/// Revokes a token (RFC 7009): 200 whatever the token was.
pub(crate) fn revoke(
    http: &HttpClient,
    endpoint: &url::Url,
    client: &Client<'_>,
    token: &Secret,
    hint: &str,
) -> Result<(), String> {
    let form = vec![("token", token.expose().to_owned()), ("token_type_hint", hint.to_owned())];
    let (status, body) = post_form(http, endpoint, client, form, Retry::Unavailable)?;
    if status == 200 { Ok(()) } else { Err(format!("revocation refused: {}", oauth_error(status, &body))) }
}

fn post_form(
    http: &HttpClient,
    url: &url::Url,
    client: &Client<'_>,
    form: Vec<(&'static str, String)>,
    retry: Retry,
) -> Result<(u16, Vec<u8>), String> {
    let build = || {
        let mut form = form.clone();
        let request = client.authenticate(http.post(url)?, &mut form);
        Ok(request.header("Accept", "application/json").form(&form))
    };
    http.send_retrying(url, retry, &build).map_err(|e| e.to_string())
}

fn tokens(body: &[u8]) -> Result<Tokens, String> {
    #[derive(Deserialize)]
    struct Answer {
        id_token: Option<String>,
        refresh_token: Option<String>,
    }
    let answer: Answer = serde_json::from_slice(body).map_err(|_| "token endpoint answer is not JSON".to_owned())?;
    let clean = |name: &str, token: Option<String>| -> Result<Option<Secret>, String> {
        match token {
            Some(t) if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                Err(format!("token endpoint gave a malformed `{name}`"))
            }
            other => Ok(other.map(Secret::new)),
        }
    };
    Ok(Tokens {
        id_token: clean("id_token", answer.id_token)?,
        refresh_token: clean("refresh_token", answer.refresh_token)?,
    })
}

fn error_code(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct OAuthError {
        error: String,
    }
    serde_json::from_slice::<OAuthError>(body).ok().map(|e| e.error)
}

/// An OAuth error answer in one line: `code: description`, else the status.
pub(crate) fn oauth_error(status: u16, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct OAuthError {
        error: String,
        error_description: Option<String>,
    }
    match serde_json::from_slice::<OAuthError>(body) {
        Ok(e) => {
            let text = match e.error_description {
                Some(d) if !d.is_empty() => format!("{} ({d})", e.error),
                _ => e.error,
            };
            clip(&sanitize_for_terminal(&text), 200).to_owned()
        }
        Err(_) => format!("HTTP {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_read_as_one_clean_line() {
        assert_eq!(
            oauth_error(400, br#"{"error":"invalid_grant","error_description":"grant\nrevoked"}"#),
            "invalid_grant (grant\u{fffd}revoked)"
        );
        assert_eq!(oauth_error(400, br#"{"error":"access_denied"}"#), "access_denied");
        assert_eq!(oauth_error(502, b"<html>bad gateway</html>"), "HTTP 502");
        assert_eq!(error_code(br#"{"error":"slow_down"}"#).as_deref(), Some("slow_down"));
    }

    #[test]
    fn token_answers_refuse_tokens_that_could_smuggle_lines() {
        let ok = tokens(br#"{"id_token":"a.b.c","refresh_token":"r1","token_type":"Bearer"}"#).unwrap();
        assert_eq!(ok.id_token.unwrap().expose(), "a.b.c");
        assert!(tokens(br#"{"id_token":"a.b.c\nx"}"#).is_err());
        assert!(tokens(br#"{"id_token":""}"#).is_err());
        assert!(tokens(b"nope").is_err());
    }

    #[test]
    fn confidential_clients_use_basic_with_encoded_parts_and_public_ones_the_body() {
        let http = HttpClient::new(std::time::Duration::from_secs(1), None).unwrap();
        let url = url::Url::parse("http://127.0.0.1:9/token").unwrap();
        let secret = Secret::new("p@ss:word");
        let mut form = Vec::new();
        let request =
            Client { id: "my client", secret: Some(&secret) }.authenticate(http.post(&url).unwrap(), &mut form);
        let request = request.build().unwrap();
        let basic = request.headers()["authorization"].to_str().unwrap().to_owned();
        let decoded = base64::engine::general_purpose::STANDARD.decode(basic.trim_start_matches("Basic ")).unwrap();
        assert_eq!(decoded, b"my+client:p%40ss%3Aword");
        assert!(form.is_empty());
        let _ = Client { id: "cli", secret: None }.authenticate(http.post(&url).unwrap(), &mut form);
        assert_eq!(form, [("client_id", "cli".to_owned())]);
    }
}
