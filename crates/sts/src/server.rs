//! The HTTP surface: `POST /token` (RFC 8693), revocation and introspection, the JWKS,
//! discovery and a health check.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::audit::{Audit, Line, now_rfc3339};
use crate::config::Config;
use crate::keys::{Algorithm, SigningKey};
use crate::oauth::OAuthError;
use crate::policy::{ExchangeAsk, Policy, Rules, Staged};
use crate::revocation::{RedbStore, RevocationStore};
use crate::verify::Verifier;
use mayfly_core::{ACCESS_TOKEN_TYPE, Fingerprint, ID_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT};

/// Largest request body accepted.
const MAX_REQUEST: usize = 64 * 1024;
/// How often policy files are checked for changes (a stat per file).
const POLICY_POLL: Duration = Duration::from_secs(1);
const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// A running exchange's state.
pub struct Sts {
    pub(crate) config: Config,
    pub(crate) key: SigningKey,
    verifier: Verifier,
    policy: Box<dyn Policy>,
    /// The Cedar policies, reloaded on SIGHUP or change while serving.
    pub(crate) cedar: Option<Arc<crate::cedar::Handle>>,
    pub(crate) audit: Audit,
    /// Verifies tokens this exchange minted, when they are presented back to it.
    pub(crate) own_key: jsonwebtoken::DecodingKey,
    revocations: Arc<dyn RevocationStore>,
}

impl Sts {
    /// Builds the exchange from its config (and an explicit key, if the caller has one),
    /// with the revocation store the config names (in memory when it names none).
    pub fn new(config: Config, key: Option<SigningKey>) -> Result<Self, String> {
        let store = match &config.revocation_store {
            Some(path) => RedbStore::open(path)?,
            None => RedbStore::in_memory()?,
        };
        Self::with_store(config, key, Arc::new(store))
    }

    /// Builds the exchange with another revocation store (one shared by replicas).
    pub fn with_store(
        config: Config,
        key: Option<SigningKey>,
        revocations: Arc<dyn RevocationStore>,
    ) -> Result<Self, String> {
        let key = match (key, &config.signing_key) {
            (Some(key), _) => key,
            (None, Some(path)) => {
                let pem =
                    std::fs::read_to_string(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
                SigningKey::from_pem(&pem)?
            }
            (None, None) => SigningKey::generate(Algorithm::Es256)?,
        };
        // Registries trust the signer's certificate, carried in each token's `x5c`.
        let key = key.with_certificate("mayfly-sts token signer")?;
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.jwk().clone()).map_err(|e| e.to_string())?;
        let own_key = jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
        let verifier = Verifier::new(config.trusted_issuers.clone())?;
        let cedar = policy_handle(&config)?;
        let policy = Box::new(Staged {
            rules: Rules { rules: config.rules.clone(), default_ttl: config.default_ttl },
            max_ttl: config.max_ttl,
            cedar: cedar.clone(),
            people: people(&config),
        });
        let audit = Audit::open(config.audit_log.as_deref()).map_err(|e| format!("cannot open audit log: {e}"))?;
        Ok(Self { config, key, verifier, policy, cedar, audit, own_key, revocations })
    }

    /// Loads the Cedar policies again now (as SIGHUP does); a failure keeps those in force.
    pub fn reload_policies(&self) -> Option<Result<String, String>> {
        self.cedar.as_ref().map(|c| c.reload())
    }

    /// The signing key's public JWK.
    pub fn jwk(&self) -> &Value {
        self.key.jwk()
    }

    /// Remembers a token as revoked until its expiry (the store may block: off the runtime).
    pub(crate) async fn revoke(&self, jti: &str, expires_at: i64) -> Result<(), String> {
        let (store, jti) = (self.revocations.clone(), jti.to_owned());
        tokio::task::spawn_blocking(move || store.revoke(&jti, expires_at)).await.map_err(|e| e.to_string())?
    }

    /// Whether a token was revoked.
    pub(crate) async fn is_revoked(&self, jti: &str) -> Result<bool, String> {
        let (store, jti) = (self.revocations.clone(), jti.to_owned());
        tokio::task::spawn_blocking(move || store.is_revoked(&jti)).await.map_err(|e| e.to_string())?
    }

    /// The routes.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/token", post(token))
            .route("/revoke", post(crate::own_tokens::revoke))
            .route("/introspect", post(crate::own_tokens::introspect))
            .route("/.well-known/jwks.json", get(jwks))
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/healthz", get(|| async { "ok" }))
            .route("/registry/token", get(crate::registry::token).post(crate::registry::token))
            .route("/registry/cert.pem", get(crate::registry::certificate))
            .layer(DefaultBodyLimit::max(MAX_REQUEST))
            .with_state(self)
    }
}

/// Serves on a bound listener, with TLS when the config has it.
/// Policies are reloaded on SIGHUP and when a policy file changes meanwhile.
pub async fn serve(sts: Sts, listener: std::net::TcpListener) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    if let Some(cedar) = sts.cedar.clone() {
        tokio::spawn(cedar.watch(POLICY_POLL));
    }
    let tls = sts.config.tls.clone();
    let app = Arc::new(sts).router();
    match tls {
        Some(tls) => {
            let rustls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key).await?;
            axum_server::from_tcp_rustls(listener, rustls)?.serve(app.into_make_service()).await
        }
        None => axum_server::from_tcp(listener)?.serve(app.into_make_service()).await,
    }
}

/// The Cedar policies the config names, loaded and validated; `None` when it names none.
pub fn policy_handle(config: &Config) -> Result<Option<Arc<crate::cedar::Handle>>, String> {
    if config.policies.is_empty() {
        return Ok(None);
    }
    let sources = crate::cedar::Sources { policies: config.policies.clone(), schema: config.schema.clone() };
    crate::cedar::Handle::load(sources).map(|h| Some(Arc::new(h)))
}

/// Issuers whose subjects are people.
pub(crate) fn people(config: &Config) -> Vec<String> {
    config
        .trusted_issuers
        .iter()
        .filter(|t| t.principal.as_deref() == Some("Person"))
        .map(|t| t.issuer.clone())
        .collect()
}

pub(crate) fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

pub(crate) fn oauth_error(status: StatusCode, code: OAuthError, description: &str) -> Response {
    no_store((status, axum::Json(json!({"error": code.as_str(), "error_description": description}))).into_response())
}

async fn jwks(State(sts): State<Arc<Sts>>) -> Response {
    axum::Json(json!({"keys": [sts.key.jwk()]})).into_response()
}

async fn discovery(State(sts): State<Arc<Sts>>) -> Response {
    let base = &sts.config.issuer;
    axum::Json(json!({
        "issuer": base,
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "token_endpoint": format!("{base}/token"),
        "revocation_endpoint": format!("{base}/revoke"),
        "revocation_endpoint_auth_methods_supported": ["none"],
        "introspection_endpoint": format!("{base}/introspect"),
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
        "grant_types_supported": [TOKEN_EXCHANGE_GRANT],
        "id_token_signing_alg_values_supported": ["ES256"],
    }))
    .into_response()
}

/// A parsed form body.
pub(crate) struct Form {
    pub(crate) pairs: Vec<(String, String)>,
}

impl Form {
    /// The one value of `key` (`None` when absent or empty); an error when repeated.
    pub(crate) fn one(&self, key: &str) -> Result<Option<&str>, String> {
        let mut values = self.pairs.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(format!("`{key}` given more than once"));
        }
        Ok(first.filter(|v| !v.is_empty()))
    }
}

async fn token(State(sts): State<Arc<Sts>>, headers: HeaderMap, body: Bytes) -> Response {
    let form_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !form_type.starts_with("application/x-www-form-urlencoded") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            OAuthError::InvalidRequest,
            "body must be application/x-www-form-urlencoded",
        );
    }
    let form = Form { pairs: url::form_urlencoded::parse(&body).into_owned().collect() };
    match exchange(&sts, &form).await {
        Ok(response) => response,
        Err(Refusal { code, reason }) => oauth_error(StatusCode::BAD_REQUEST, code, &reason),
    }
}

/// An RFC 6749 error: its code and a description safe to show the client.
struct Refusal {
    code: OAuthError,
    reason: String,
}

fn invalid_request(reason: impl Into<String>) -> Refusal {
    Refusal { code: OAuthError::InvalidRequest, reason: reason.into() }
}

/// The checks of RFC 8693 section 2.1 on the request's shape.
fn check_shape(form: &Form) -> Result<(), Refusal> {
    if form.one("grant_type").map_err(invalid_request)? != Some(TOKEN_EXCHANGE_GRANT) {
        return Err(Refusal {
            code: OAuthError::UnsupportedGrantType,
            reason: "only token exchange (RFC 8693) is supported".into(),
        });
    }
    match form.one("subject_token_type").map_err(invalid_request)? {
        Some(ID_TOKEN_TYPE | JWT_TOKEN_TYPE) => {}
        Some(_) => {
            return Err(invalid_request("`subject_token_type` must be an id_token or jwt"));
        }
        None => return Err(invalid_request("`subject_token_type` is required")),
    }
    match (form.one("actor_token").map_err(invalid_request)?, form.one("actor_token_type").map_err(invalid_request)?) {
        (None, None) => {}
        (Some(_), None) | (None, Some(_)) => {
            return Err(invalid_request("`actor_token` and `actor_token_type` go together"));
        }
        (Some(_), Some(_)) => {
            return Err(invalid_request("delegation (`actor_token`) is not supported by this exchange"));
        }
    }
    match form.one("requested_token_type").map_err(invalid_request)? {
        None | Some(ACCESS_TOKEN_TYPE | JWT_TOKEN_TYPE) => Ok(()),
        Some(_) => Err(invalid_request("`requested_token_type` must be an access_token or jwt")),
    }
}

async fn exchange(sts: &Sts, form: &Form) -> Result<Response, Refusal> {
    let audiences: Vec<&str> =
        form.pairs.iter().filter(|(k, _)| k == "audience" || k == "resource").map(|(_, v)| v.as_str()).collect();
    let scope = form.one("scope").unwrap_or_default().unwrap_or("");
    // The intent is the client's claim, and may quote a command line: only its scrubbed
    // shape reaches the policy and the audit log.
    let intent: Option<Value> = form
        .one("intent")
        .ok()
        .flatten()
        .and_then(|v| serde_json::from_str::<Value>(v).ok())
        .map(|v| mayfly_core::shape::scrub_intent(&v));
    let mut line = Line {
        scope: Some(mayfly_core::sanitize_for_terminal(mayfly_core::clip(scope, mayfly_core::scope::MAX_SCOPE_LEN))),
        intent: intent.as_ref(),
        // What the client sent, cut to what a real audience can be: the log is no place
        // to store a 64 KiB field for it.
        audience: audiences.first().map(|a| mayfly_core::clip(a, 512)),
        ..Line::default()
    };
    let deny = |refusal: Refusal, line: Line<'_>| {
        sts.audit.write(&Line {
            time: now_rfc3339(),
            outcome: "denied",
            code: Some(refusal.code.as_str()),
            reason: Some(&refusal.reason),
            ..line
        });
        refusal
    };
    if let Err(refusal) = check_shape(form) {
        return Err(deny(refusal, line));
    }
    // Each scope is one token of a shape this exchange can grant, within the limits,
    // before anything costs more than a pass over the request.
    let scopes = match requested_scopes(sts, scope) {
        Ok(scopes) => scopes,
        Err(refusal) => return Err(deny(refusal, line)),
    };
    let Some(subject_token) = form.one("subject_token").ok().flatten() else {
        return Err(deny(invalid_request("`subject_token` is required"), line));
    };
    let audience = match audiences.as_slice() {
        [one] => *one,
        [] => {
            return Err(deny(
                Refusal { code: OAuthError::InvalidTarget, reason: "an `audience` is required".into() },
                line,
            ));
        }
        _ => {
            return Err(deny(
                Refusal { code: OAuthError::InvalidTarget, reason: "one `audience` per request".into() },
                line,
            ));
        }
    };
    let ttl = match form.one("requested_ttl").map_err(invalid_request)?.map(str::parse::<u64>) {
        Some(Ok(secs)) => Some(Duration::from_secs(secs)),
        Some(Err(_)) => {
            return Err(deny(invalid_request("`requested_ttl` must be seconds"), line));
        }
        None => None,
    };
    let subject = match sts.verifier.verify(subject_token).await {
        Ok(subject) => subject,
        Err(rejection) => return Err(deny(invalid_request(rejection.0), line)),
    };
    line.issuer = Some(&subject.issuer);
    line.subject = Some(&subject.subject);
    let ask = ExchangeAsk { subject: &subject, audience, scopes: &scopes, ttl, intent: intent.as_ref() };
    let grant = match sts.policy.decide(&ask) {
        Ok(grant) => grant,
        Err(denial) => {
            let policies = (!denial.policies.is_empty()).then_some(denial.policies.as_slice());
            return Err(deny(Refusal { code: denial.code, reason: denial.reason.clone() }, Line { policies, ..line }));
        }
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let ttl = grant.ttl.as_secs();
    let jti = random_id();
    let scope = grant.scopes.join(" ");
    let claims = json!({
        "iss": sts.config.issuer,
        "sub": subject.subject,
        "aud": audience,
        "scope": scope,
        "iat": now,
        "nbf": now,
        "exp": now + i64::try_from(ttl).unwrap_or(i64::MAX / 4),
        "jti": jti,
        "client_id": "mayfly",
        "subject_issuer": subject.issuer,
    });
    let access_token =
        sts.key.sign(Some("at+jwt"), &claims).map_err(|e| Refusal { code: OAuthError::ServerError, reason: e })?;
    sts.audit.write(&Line {
        time: now_rfc3339(),
        outcome: "issued",
        scope: Some(scope.clone()),
        ttl: Some(ttl),
        rule: Some(grant.rule.as_str()).filter(|r| !r.is_empty()),
        policies: Some(grant.policies.as_slice()).filter(|p| !p.is_empty()),
        jti: Some(&jti),
        fingerprint: Some(Fingerprint::of(&access_token).to_string()),
        ..line
    });
    Ok(no_store(
        axum::Json(json!({
            "access_token": access_token,
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": ttl,
            "scope": scope,
        }))
        .into_response(),
    ))
}

/// The requested scopes, each checked against the scope grammar and the shapes the
/// policy can grant; `invalid_scope` with the reason otherwise.
fn requested_scopes(sts: &Sts, scope: &str) -> Result<Vec<String>, Refusal> {
    let invalid = |reason: String| Refusal { code: OAuthError::InvalidScope, reason };
    let scopes = mayfly_core::scope::parse_requested(scope).map_err(|e| invalid(e.to_string()))?;
    if let Some(unknown) = scopes.iter().find(|s| !sts.policy.grants_shape(s)) {
        return Err(invalid(format!("scope `{unknown}` is of a shape no rule of this exchange grants")));
    }
    Ok(scopes.into_iter().map(str::to_owned).collect())
}

pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    hex::encode(bytes)
}
