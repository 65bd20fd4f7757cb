//! HashiCorp Vault and OpenBao JWT auth: the workload's ID token logs in, a Vault token
//! comes back, and the token revokes itself when mayfly is done with it.
//!
//! `POST {addr}/v1/auth/{mount}/login` (mount `jwt` unless set), optionally with
//! `X-Vault-Namespace`, JSON `{"role": ROLE, "jwt": ID_TOKEN}` (`role` left out when the
//! mount has a `default_role`) answers `{"auth": {"client_token", "accessor",
//! "lease_duration", ...}, ...}`; errors are `{"errors": ["...", ...]}` with 400, 403 or
//! 5xx (Vault's JWT auth API documentation). `POST {addr}/v1/auth/token/revoke-self`
//! with `X-Vault-Token` revokes the token (204). The exchange's `token_endpoint` is
//! Vault's address (`VAULT_ADDR`).

use serde::Deserialize;
use serde_json::json;

use super::{Ask, Error, ExchangeResponse, Protocol, Setting};
use crate::config::ExchangeConfig;
use crate::http::{HttpClient, Retry};
use crate::{Secret, Tool, sanitize_for_terminal};

/// The mount of the JWT auth method when the config names none.
const DEFAULT_MOUNT: &str = "jwt";

/// Vault or OpenBao JWT auth login; tokens revoke themselves.
pub(crate) struct Vault;

const SETTINGS: &[Setting] = &[
    Setting { name: "mount", required: false, about: "the path the JWT auth method is mounted at, `jwt` by default" },
    Setting { name: "role", required: false, about: "the JWT auth role to log in as" },
    Setting { name: "namespace", required: false, about: "the namespace, sent as `X-Vault-Namespace`" },
];

impl Protocol for Vault {
    fn name(&self) -> &'static str {
        "vault"
    }

    fn fetches_subject_per_request(&self) -> bool {
        // The role's `bound_audiences` name the audience, the route's.
        true
    }

    fn default_scope(&self, _tool: Tool) -> Option<&'static str> {
        // The role decides what the token may do; the scope only labels it, and needs no
        // repository path from git.
        Some("vault:{host}")
    }

    fn check_route(&self, config: &ExchangeConfig, host: &str) -> Result<(), String> {
        // A Vault token is presented to Vault alone.
        match crate::target::host_port(&config.token_endpoint) {
            Some(endpoint) if endpoint == host => Ok(()),
            _ => Err(format!("exchange `{}` is Vault at another host: its tokens go to Vault only", config.name)),
        }
    }

    fn settings(&self) -> &'static [Setting] {
        SETTINGS
    }

    fn check_settings(&self, settings: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
        for name in ["mount", "namespace"] {
            if let Some(value) = settings.get(name) {
                check_path(value).map_err(|e| format!("`{name}` {e}"))?;
            }
        }
        match settings.get("role") {
            Some(role) if role.is_empty() || role.chars().any(|c| c.is_control() || c == '/') => {
                Err("`role` must be a role's name".into())
            }
            _ => Ok(()),
        }
    }

    fn request(&self, ask: &Ask<'_>) -> Result<ExchangeResponse, Error> {
        login(ask.config, ask.http, ask.subject)
    }

    fn revokes(&self, _config: &ExchangeConfig) -> bool {
        true
    }

    fn revoke(&self, config: &ExchangeConfig, http: &HttpClient, token: &Secret) -> Result<(), Error> {
        revoke_self(config, http, token)
    }
}

/// A mount or namespace path: segments of letters, digits, `_`, `-` and `.`, none `.` or `..`.
fn check_path(value: &str) -> Result<(), String> {
    let value = value.trim_matches('/');
    let ok = !value.is_empty()
        && value.split('/').all(|s| {
            !s.is_empty() && s != "." && s != ".." && s.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        });
    if ok { Ok(()) } else { Err(format!("`{}` is not a Vault path", sanitize_for_terminal(value))) }
}

/// `{addr}/v1/{path}`, with the address's own path kept (a Vault behind a prefix).
pub(crate) fn api_url(config: &ExchangeConfig, path: &str) -> Result<url::Url, Error> {
    let base = config.token_endpoint.as_str().trim_end_matches('/');
    url::Url::parse(&format!("{base}/v1/{path}")).map_err(|_| Error::Malformed {
        exchange: config.name.clone(),
        status: 0,
        what: "an address that takes no API path".into(),
    })
}

/// The login URL of the exchange's mount.
pub(crate) fn login_url(config: &ExchangeConfig) -> Result<url::Url, Error> {
    let mount = config.setting("mount").unwrap_or(DEFAULT_MOUNT).trim_matches('/');
    api_url(config, &format!("auth/{mount}/login"))
}

#[derive(Deserialize)]
struct LoginBody {
    auth: Option<Auth>,
}

#[derive(Deserialize)]
struct Auth {
    client_token: Option<String>,
    accessor: Option<String>,
    lease_duration: Option<u64>,
}

#[derive(Deserialize)]
struct Errors {
    errors: Vec<serde_json::Value>,
}

/// Every entry of Vault's `errors`, as one clean line.
fn errors_of(body: &[u8]) -> Option<String> {
    let errors = serde_json::from_slice::<Errors>(body).ok()?.errors;
    let words: Vec<String> = errors
        .iter()
        .filter_map(|e| e.as_str())
        .map(|e| sanitize_for_terminal(e.trim()))
        .filter(|e| !e.is_empty())
        .collect();
    if words.is_empty() { None } else { Some(words.join("; ").chars().take(300).collect()) }
}

/// Reads Vault's answer to a login: the token and its lease, or the errors, all of them.
pub(crate) fn parse(exchange: &str, status: u16, body: &[u8]) -> Result<ExchangeResponse, Error> {
    let malformed = |what: String| Error::Malformed { exchange: exchange.into(), status, what };
    match status {
        200 => {
            let body: LoginBody =
                serde_json::from_slice(body).map_err(|_| malformed("a body that is not JSON".into()))?;
            let auth = body.auth.ok_or_else(|| malformed("no `auth`".into()))?;
            let token = auth
                .client_token
                .filter(|t| !t.is_empty())
                .ok_or_else(|| malformed("no `auth.client_token`".into()))?;
            if token.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(malformed("a token containing control characters or spaces".into()));
            }
            Ok(ExchangeResponse {
                access_token: Secret::new(token),
                issued_token_type: "vault token".into(),
                // 0: a token without a lease, which mayfly does not keep.
                expires_in: auth.lease_duration.filter(|d| *d > 0),
                scope: None,
                token_id: auth.accessor.filter(|a| !a.is_empty() && a.chars().all(|c| c.is_ascii_graphic())),
            })
        }
        400..=499 => match errors_of(body) {
            Some(errors) => Err(Error::Denied { exchange: exchange.into(), code: errors, description: None }),
            None => Err(malformed("an error".into())),
        },
        _ => Err(malformed(errors_of(body).map_or_else(|| "an error".into(), |e| format!("an error: {e}")))),
    }
}

/// Logs in with the ID token.
pub(crate) fn login(config: &ExchangeConfig, http: &HttpClient, id_token: &Secret) -> Result<ExchangeResponse, Error> {
    let url = login_url(config)?;
    let mut body = json!({"jwt": id_token.expose()});
    if let Some(role) = config.setting("role") {
        body["role"] = json!(role);
    }
    let build = || {
        let request = http.post(&url)?.header("Accept", "application/json").json(&body);
        Ok(match config.setting("namespace") {
            Some(namespace) => request.header("X-Vault-Namespace", namespace),
            None => request,
        })
    };
    let (status, body) = http
        .send_retrying(&url, Retry::Unavailable, &build)
        .map_err(|source| Error::Http { exchange: config.name.clone(), source })?;
    parse(&config.name, status, &body)
}

/// Revokes a token with itself: 204; 403 means it is already gone (expired or revoked).
pub(crate) fn revoke_self(config: &ExchangeConfig, http: &HttpClient, token: &Secret) -> Result<(), Error> {
    let url = api_url(config, "auth/token/revoke-self")?;
    let build = || {
        let request = http.post(&url)?.header("X-Vault-Token", token.expose());
        Ok(match config.setting("namespace") {
            Some(namespace) => request.header("X-Vault-Namespace", namespace),
            None => request,
        })
    };
    let (status, body) = http
        .send_retrying(&url, Retry::Unavailable, &build)
        .map_err(|source| Error::Http { exchange: config.name.clone(), source })?;
    match status {
        200..=299 | 403 => Ok(()),
        _ => Err(Error::Malformed {
            exchange: config.name.clone(),
            status,
            what: errors_of(&body).map_or_else(|| "an unexpected answer".into(), |e| format!("an error: {e}")),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"{"request_id":"r","lease_id":"","renewable":false,"lease_duration":0,"data":null,"warnings":null,
        "auth":{"client_token":"hvs.CAESIexample","accessor":"hmac.accessor","policies":["default","ci"],
        "token_policies":["default","ci"],"metadata":{"role":"ci"},"lease_duration":900,"renewable":true,
        "entity_id":"e","token_type":"service","orphan":true,"mfa_requirement":null}}"#;

    #[test]
    fn a_login_answer_is_the_client_token_for_its_lease() {
        let ok = parse("vault", 200, OK.as_bytes()).unwrap();
        assert_eq!(ok.access_token.expose(), "hvs.CAESIexample");
        assert_eq!(ok.expires_in, Some(900));
        assert_eq!(ok.token_id.as_deref(), Some("hmac.accessor"));
        let no_lease = OK.replace("\"lease_duration\":900", "\"lease_duration\":0");
        assert_eq!(parse("vault", 200, no_lease.as_bytes()).unwrap().expires_in, None);
        for body in ["nope", "{}", r#"{"auth":null}"#, r#"{"auth":{"client_token":"a b"}}"#] {
            assert!(matches!(parse("vault", 200, body.as_bytes()), Err(Error::Malformed { .. })), "{body}");
        }
    }

    #[test]
    fn every_error_is_on_one_line() {
        let body = br#"{"errors":["error validating token: invalid audience (aud) claim","role \"ci\" could not be found\n\u001b[31m"]}"#;
        let err = parse("vault", 400, body).unwrap_err().to_string();
        assert!(!err.contains('\n') && !err.contains('\u{1b}'), "{err}");
        assert!(err.starts_with("exchange `vault` refused: error validating token: invalid audience (aud) claim; role \"ci\" could not be found"), "{err}");
        let err = parse("vault", 503, br#"{"errors":["Vault is sealed"]}"#).unwrap_err().to_string();
        assert_eq!(err, "exchange `vault` answered 503 with an error: Vault is sealed");
        let err = parse("vault", 403, b"<html>").unwrap_err().to_string();
        assert_eq!(err, "exchange `vault` answered 403 with an error");
    }

    #[test]
    fn mounts_and_namespaces_are_paths() {
        for ok in ["jwt", "ci/jwt", "team-a/ci_jwt.v2", "/jwt/"] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/", "a//b", "../sys", "a/./b", "jwt?x", "jwt login", "j%2f"] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }

    /// The config parser's verdict on an exchange table and one route.
    fn config(exchange: &str, route: &str) -> Result<crate::Config, String> {
        let text = format!(
            "[identities.ci]\nkind = \"env\"\nvar = \"X\"\n\n[exchanges.x]\n{exchange}\n\n[[routes]]\nidentity = \"ci\"\nexchange = \"x\"\n{route}\n"
        );
        crate::Config::parse(&text, std::path::Path::new("t.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_vault_route_is_for_vaults_host_and_settings_are_checked() {
        let exchange = "kind = \"vault\"\ntoken_endpoint = \"https://vault.example.com:8200\"\nmount = \"ci/jwt\"";
        let ok = config(exchange, "tool = \"git\"\nhost = \"vault.example.com:8200\"").unwrap();
        assert_eq!(ok.routes[0].audience, "https://vault.example.com:8200");
        let err = config(exchange, "tool = \"git\"\nhost = \"git.example.com\"").unwrap_err();
        assert!(err.contains("its tokens go to Vault only"), "{err}");
        let err = config(
            &format!("{exchange}\nnamespace = \"../root\""),
            "tool = \"git\"\nhost = \"vault.example.com:8200\"",
        );
        assert!(err.unwrap_err().contains("`namespace`"));
        let err = config(&format!("{exchange}\nrloe = \"ci\""), "tool = \"git\"\nhost = \"vault.example.com:8200\"");
        assert!(err.unwrap_err().contains("unknown field `rloe`"));
    }
}
