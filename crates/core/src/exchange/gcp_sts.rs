//! Google Cloud: workload identity federation through Google's Security Token Service,
//! optionally followed by service account impersonation.
//!
//! `POST https://sts.googleapis.com/v1/token`, form-encoded as Google's client libraries
//! send it and **without** an `Authorization` header (Google's STS reference: one "can
//! cause the request to fail"): `grant_type` token-exchange, `audience` = the workload
//! identity provider's full resource name (`//iam.googleapis.com/projects/N/locations/
//! global/workloadIdentityPools/P/providers/R`), `scope`, `requested_token_type`
//! access_token, `subject_token` = the ID token, `subject_token_type` jwt, and `options`,
//! a JSON *string* carrying a Credential Access Boundary (`{"accessBoundary":
//! {"accessBoundaryRules": [...]}}`). It answers `{"access_token", "issued_token_type",
//! "token_type", "expires_in"}`; errors are RFC 6749 `{"error", "error_description"}`.
//!
//! With a service account, the federated token then impersonates it: `POST
//! https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/SA:generateAccessToken`
//! with `Authorization: Bearer FEDERATED`, JSON `{"scope": [...], "lifetime": "Ns"}`,
//! answering `{"accessToken", "expireTime"}` (RFC 3339); errors are Google API errors
//! `{"error": {"code", "message", "status"}}`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{ACCESS_TOKEN_TYPE, Ask, Error, ExchangeResponse, Protocol, Setting, TOKEN_EXCHANGE_GRANT};
use crate::config::{ExchangeConfig, Route};
use crate::http::{HttpClient, Retry};
use crate::{Secret, Tool, sanitize_for_terminal};

/// Google's STS.
const STS_ENDPOINT: &str = "https://sts.googleapis.com/v1/token";
/// Google's IAM credentials API.
const IAM_ENDPOINT: &str = "https://iamcredentials.googleapis.com";
/// The scope a route asks for when it names none.
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
/// The subject token type for an OIDC ID token, as Google names it.
const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// The user name Google's registries (Artifact Registry, Container Registry) take with an
/// access token.
const ACCESS_TOKEN_USER: &str = "oauth2accesstoken";

/// Google Cloud STS, and service account impersonation.
pub(crate) struct GcpSts;

const SETTINGS: &[Setting] = &[
    Setting {
        name: "workload_provider",
        required: true,
        about: "the workload identity provider's full resource name, //iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER",
    },
    Setting { name: "service_account", required: false, about: "a service account to impersonate, by email" },
    Setting {
        name: "access_boundary",
        required: false,
        about: "a Credential Access Boundary, {\"accessBoundary\": {\"accessBoundaryRules\": [...]}}",
    },
    Setting {
        name: "iam_endpoint",
        required: false,
        about: "the IAM credentials API, https://iamcredentials.googleapis.com by default",
    },
];

impl Protocol for GcpSts {
    fn name(&self) -> &'static str {
        "gcp-sts"
    }

    fn default_endpoint(&self) -> Option<&'static str> {
        Some(STS_ENDPOINT)
    }

    fn fetches_subject_per_request(&self) -> bool {
        // The provider's allowed audiences name the ID token's audience.
        true
    }

    fn default_audience(&self, _tool: Tool, _protocol: &str, _host: &str) -> String {
        // Empty: the provider's default allowed audience, from `workload_provider`.
        String::new()
    }

    fn default_scope(&self, _tool: Tool) -> Option<&'static str> {
        Some(CLOUD_PLATFORM)
    }

    fn default_username(&self, _config: &ExchangeConfig, _tool: Tool) -> Result<Option<String>, String> {
        Ok(Some(ACCESS_TOKEN_USER.to_owned()))
    }

    fn check_route(&self, config: &ExchangeConfig, host: &str) -> Result<(), String> {
        // A Google access token goes to Google alone.
        if is_google_host(host) || crate::http::is_loopback_host(host) {
            Ok(())
        } else {
            Err(format!(
                "exchange `{}` mints Google access tokens, for Google's hosts only (*.googleapis.com, *.pkg.dev, *.gcr.io), not `{host}`",
                config.name
            ))
        }
    }

    fn subject_audience(&self, config: &ExchangeConfig, _http: &HttpClient, route: &Route) -> Result<String, Error> {
        if !route.audience.is_empty() {
            return Ok(route.audience.clone());
        }
        // Google's default allowed audience: the provider's name as an https URL.
        let provider = config.setting("workload_provider").unwrap_or_default();
        Ok(format!("https:{provider}"))
    }

    fn settings(&self) -> &'static [Setting] {
        SETTINGS
    }

    fn check_settings(&self, settings: &BTreeMap<String, String>) -> Result<(), String> {
        let provider = settings.get("workload_provider").map(String::as_str).unwrap_or_default();
        if !is_provider_name(provider) {
            return Err(format!(
                "`workload_provider` `{}` is not a provider's full resource name (//iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER)",
                sanitize_for_terminal(provider)
            ));
        }
        if let Some(account) = settings.get("service_account")
            && !is_service_account(account)
        {
            return Err(format!(
                "`service_account` `{}` is not a service account's email",
                sanitize_for_terminal(account)
            ));
        }
        if let Some(boundary) = settings.get("access_boundary") {
            if settings.contains_key("service_account") {
                return Err("`access_boundary` and `service_account` together are not supported yet".into());
            }
            options(boundary)?;
        }
        if let Some(endpoint) = settings.get("iam_endpoint") {
            let url = url::Url::parse(endpoint).map_err(|e| format!("`iam_endpoint`: {e}"))?;
            crate::http::check_url(&url).map_err(|e| format!("`iam_endpoint`: {e}"))?;
        }
        Ok(())
    }

    fn request(&self, ask: &Ask<'_>) -> Result<ExchangeResponse, Error> {
        let federated = federate(ask.config, ask.http, ask.subject, ask.scope.as_str())?;
        match ask.config.setting("service_account") {
            Some(account) => {
                impersonate(ask.config, ask.http, &federated.access_token, account, ask.scope.as_str(), ask.route)
            }
            None => Ok(federated),
        }
    }
}

/// `*.googleapis.com`, Artifact Registry (`*.pkg.dev`) and Container Registry (`gcr.io`).
fn is_google_host(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name).to_ascii_lowercase();
    name.ends_with(".googleapis.com") || name.ends_with(".pkg.dev") || name == "gcr.io" || name.ends_with(".gcr.io")
}

/// `//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/R`,
/// or a workforce pool's `//iam.googleapis.com/locations/global/workforcePools/P/providers/R`.
pub(crate) fn is_provider_name(name: &str) -> bool {
    let Some(path) = name.strip_prefix("//iam.googleapis.com/") else { return false };
    let id = |s: &str| !s.is_empty() && s.len() <= 63 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    match path.split('/').collect::<Vec<_>>().as_slice() {
        ["projects", number, "locations", "global", "workloadIdentityPools", pool, "providers", provider] => {
            !number.is_empty() && number.chars().all(|c| c.is_ascii_digit()) && id(pool) && id(provider)
        }
        ["locations", "global", "workforcePools", pool, "providers", provider] => id(pool) && id(provider),
        _ => false,
    }
}

/// `NAME@PROJECT.iam.gserviceaccount.com` and the like: one `@`, then a domain.
fn is_service_account(email: &str) -> bool {
    let Some((name, domain)) = email.split_once('@') else { return false };
    let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
    ok(name) && ok(domain) && domain.contains('.')
}

/// The `options` string for a Credential Access Boundary document: the document itself,
/// checked for the shape Google reads, in one line.
pub(crate) fn options(boundary: &str) -> Result<String, String> {
    let doc: Value = serde_json::from_str(boundary).map_err(|e| format!("`access_boundary` is not JSON: {e}"))?;
    match doc["accessBoundary"]["accessBoundaryRules"].as_array() {
        Some(rules) if !rules.is_empty() && rules.iter().all(|r| r["availableResource"].is_string()) => {
            Ok(doc.to_string())
        }
        _ => Err("`access_boundary` needs {\"accessBoundary\": {\"accessBoundaryRules\": [{\"availableResource\", \"availablePermissions\"}, ...]}}".into()),
    }
}

/// The form of the STS request.
pub(crate) fn form(config: &ExchangeConfig, subject: &Secret, scope: &str) -> Vec<(&'static str, String)> {
    let mut form = vec![
        ("grant_type", TOKEN_EXCHANGE_GRANT.to_owned()),
        ("audience", config.setting("workload_provider").unwrap_or_default().to_owned()),
        ("scope", scope.to_owned()),
        ("requested_token_type", ACCESS_TOKEN_TYPE.to_owned()),
        ("subject_token", subject.expose().to_owned()),
        ("subject_token_type", JWT_TOKEN_TYPE.to_owned()),
    ];
    if let Some(boundary) = config.setting("access_boundary").and_then(|b| options(b).ok()) {
        form.push(("options", boundary));
    }
    form
}

#[derive(Deserialize)]
struct StsToken {
    access_token: Option<String>,
    issued_token_type: Option<String>,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    error_description: Option<String>,
}

fn clean(text: &str) -> String {
    sanitize_for_terminal(text.trim()).chars().take(300).collect()
}

fn checked(token: Option<String>, field: &str, malformed: &dyn Fn(String) -> Error) -> Result<Secret, Error> {
    let token = token.filter(|t| !t.is_empty()).ok_or_else(|| malformed(format!("no `{field}`")))?;
    if token.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(malformed("a token containing control characters or spaces".into()));
    }
    Ok(Secret::new(token))
}

/// Reads STS's answer: the federated token, or the RFC 6749 error on one line.
pub(crate) fn parse_sts(exchange: &str, status: u16, body: &[u8]) -> Result<ExchangeResponse, Error> {
    let malformed = |what: String| Error::Malformed { exchange: exchange.into(), status, what };
    if status == 200 {
        let body: StsToken = serde_json::from_slice(body).map_err(|_| malformed("a body that is not JSON".into()))?;
        return Ok(ExchangeResponse {
            access_token: checked(body.access_token, "access_token", &malformed)?,
            issued_token_type: body.issued_token_type.unwrap_or_else(|| ACCESS_TOKEN_TYPE.into()),
            expires_in: body.expires_in,
            scope: None,
            token_id: None,
        });
    }
    match serde_json::from_slice::<OAuthError>(body) {
        Ok(e) if (400..500).contains(&status) => Err(Error::Denied {
            exchange: exchange.into(),
            code: clean(&e.error),
            description: e.error_description.as_deref().map(clean).filter(|d| !d.is_empty()),
        }),
        _ => Err(malformed("an error".into())),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IamToken {
    access_token: Option<String>,
    expire_time: Option<String>,
}

#[derive(Deserialize)]
struct GoogleError {
    error: GoogleErrorBody,
}

#[derive(Deserialize)]
struct GoogleErrorBody {
    message: Option<String>,
    status: Option<String>,
}

/// Reads the impersonation answer: the service account's token until `expireTime`.
pub(crate) fn parse_iam(exchange: &str, status: u16, body: &[u8], now: i64) -> Result<ExchangeResponse, Error> {
    let malformed = |what: String| Error::Malformed { exchange: exchange.into(), status, what };
    if status == 200 {
        let body: IamToken = serde_json::from_slice(body).map_err(|_| malformed("a body that is not JSON".into()))?;
        let token = checked(body.access_token, "accessToken", &malformed)?;
        let expires = body
            .expire_time
            .as_deref()
            .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
            .ok_or_else(|| malformed("no RFC 3339 `expireTime`".into()))?
            .unix_timestamp();
        return Ok(ExchangeResponse {
            access_token: token,
            issued_token_type: ACCESS_TOKEN_TYPE.into(),
            expires_in: u64::try_from(expires - now).ok(),
            scope: None,
            token_id: None,
        });
    }
    match serde_json::from_slice::<GoogleError>(body) {
        Ok(e) if (400..500).contains(&status) => Err(Error::Denied {
            exchange: exchange.into(),
            code: clean(e.error.status.as_deref().unwrap_or("error")),
            description: e.error.message.as_deref().map(clean).filter(|m| !m.is_empty()),
        }),
        _ => Err(malformed("an error".into())),
    }
}

/// The ID token for a federated access token, at STS.
pub(crate) fn federate(
    config: &ExchangeConfig,
    http: &HttpClient,
    subject: &Secret,
    scope: &str,
) -> Result<ExchangeResponse, Error> {
    let url = &config.token_endpoint;
    let body = form(config, subject, scope);
    let build = || Ok(http.post(url)?.header("Accept", "application/json").form(&body));
    let (status, body) = http
        .send_retrying(url, Retry::Unavailable, &build)
        .map_err(|source| Error::Http { exchange: config.name.clone(), source })?;
    parse_sts(&config.name, status, &body)
}

/// The `generateAccessToken` URL for a service account.
pub(crate) fn impersonation_url(config: &ExchangeConfig, account: &str) -> Result<url::Url, Error> {
    let base = config.setting("iam_endpoint").unwrap_or(IAM_ENDPOINT).trim_end_matches('/');
    url::Url::parse(&format!("{base}/v1/projects/-/serviceAccounts/{account}:generateAccessToken")).map_err(|_| {
        Error::Malformed { exchange: config.name.clone(), status: 0, what: "an unusable `iam_endpoint`".into() }
    })
}

/// The federated token for the service account's, for the route's lifetime.
pub(crate) fn impersonate(
    config: &ExchangeConfig,
    http: &HttpClient,
    federated: &Secret,
    account: &str,
    scope: &str,
    route: &Route,
) -> Result<ExchangeResponse, Error> {
    let url = impersonation_url(config, account)?;
    let body = json!({
        "scope": scope.split(' ').collect::<Vec<_>>(),
        "lifetime": format!("{}s", route.ttl.as_secs().max(1)),
    });
    let build =
        || Ok(http.post(&url)?.header("Accept", "application/json").bearer_auth(federated.expose()).json(&body));
    let (status, body) = http
        .send_retrying(&url, Retry::Unavailable, &build)
        .map_err(|source| Error::Http { exchange: config.name.clone(), source })?;
    parse_iam(&config.name, status, &body, time::OffsetDateTime::now_utc().unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROVIDER: &str =
        "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/ci/providers/github";

    #[test]
    fn provider_names_have_googles_shape() {
        assert!(is_provider_name(PROVIDER));
        assert!(is_provider_name("//iam.googleapis.com/locations/global/workforcePools/staff/providers/okta"));
        for bad in [
            "",
            "projects/123/locations/global/workloadIdentityPools/ci/providers/github",
            "https://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/ci/providers/github",
            "//iam.googleapis.com/projects/my-project/locations/global/workloadIdentityPools/ci/providers/github",
            "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/ci/providers/",
            "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/c i/providers/github",
        ] {
            assert!(!is_provider_name(bad), "{bad}");
        }
        assert!(is_service_account("deploy@my-project.iam.gserviceaccount.com"));
        assert!(!is_service_account("deploy"));
        assert!(!is_service_account("deploy@x/y:z"));
    }

    #[test]
    fn a_boundary_goes_out_as_a_json_string_in_one_line() {
        let boundary = r#"{"accessBoundary": {
            "accessBoundaryRules": [{"availableResource": "//storage.googleapis.com/projects/_/buckets/b",
                                     "availablePermissions": ["inRole:roles/storage.objectViewer"]}]}}"#;
        let options = options(boundary).unwrap();
        assert!(!options.contains('\n'));
        let back: Value = serde_json::from_str(&options).unwrap();
        assert_eq!(
            back["accessBoundary"]["accessBoundaryRules"][0]["availableResource"],
            "//storage.googleapis.com/projects/_/buckets/b"
        );
        for bad in
            ["{}", r#"{"accessBoundaryRules": []}"#, r#"{"accessBoundary": {"accessBoundaryRules": []}}"#, "nope"]
        {
            assert!(super::options(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sts_and_iam_answers_and_refusals() {
        let ok = parse_sts("g", 200, br#"{"access_token":"ya29.fed","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":3599}"#).unwrap();
        assert_eq!((ok.access_token.expose(), ok.expires_in), ("ya29.fed", Some(3599)));
        let err = parse_sts("g", 400, br#"{"error":"invalid_grant","error_description":"The audience in ID Token [x] does not match\nthe expected audience."}"#);
        assert_eq!(
            err.unwrap_err().to_string(),
            "exchange `g` refused: invalid_grant: The audience in ID Token [x] does not match\u{fffd}the expected audience."
        );
        assert!(matches!(parse_sts("g", 502, b"<html>"), Err(Error::Malformed { .. })));
        let ok =
            parse_iam("g", 200, br#"{"accessToken":"ya29.sa","expireTime":"2030-01-01T00:10:00Z"}"#, 1_893_456_000)
                .unwrap();
        assert_eq!((ok.access_token.expose(), ok.expires_in), ("ya29.sa", Some(600)));
        let err = parse_iam("g", 403, br#"{"error":{"code":403,"message":"Permission 'iam.serviceAccounts.getAccessToken' denied","status":"PERMISSION_DENIED"}}"#, 0);
        assert_eq!(
            err.unwrap_err().to_string(),
            "exchange `g` refused: PERMISSION_DENIED: Permission 'iam.serviceAccounts.getAccessToken' denied"
        );
        assert!(matches!(parse_iam("g", 200, br#"{"accessToken":"ya29.sa"}"#, 0), Err(Error::Malformed { .. })));
    }

    #[test]
    fn google_tokens_go_to_google_hosts() {
        for ok in ["europe-docker.pkg.dev", "storage.googleapis.com", "gcr.io", "eu.gcr.io:443"] {
            assert!(is_google_host(ok), "{ok}");
        }
        for bad in ["evil.example", "pkg.dev.evil.example", "googleapis.com.evil.example"] {
            assert!(!is_google_host(bad), "{bad}");
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
    fn the_config_names_what_is_missing_or_misshapen() {
        let route = "tool = \"oci\"\nhost = \"europe-docker.pkg.dev\"";
        let err = config("kind = \"gcp-sts\"", route).unwrap_err();
        assert!(err.contains("kind `gcp-sts` needs `workload_provider`"), "{err}");
        let ok = config(&format!("kind = \"gcp-sts\"\nworkload_provider = \"{PROVIDER}\""), route).unwrap();
        assert_eq!(ok.routes[0].username, "oauth2accesstoken");
        assert_eq!(ok.routes[0].audience, "");
        let err = config(
            &format!("kind = \"gcp-sts\"\nworkload_provider = \"{PROVIDER}\"\niam_endpoint = \"http://iam.example\""),
            route,
        );
        assert!(err.unwrap_err().contains("`iam_endpoint`"));
        let err = config(
            &format!("kind = \"gcp-sts\"\nworkload_provider = \"{PROVIDER}\""),
            "tool = \"oci\"\nhost = \"registry.example\"",
        );
        assert!(err.unwrap_err().contains("for Google's hosts only"));
    }
}
