//! The HTTP surface: `POST /token` (RFC 8693), revocation and introspection, the JWKS,
//! discovery and a health check.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::approval::{Binding, Poll};
use crate::audit::{Audit, Line, now_rfc3339};
use crate::config::Config;
use crate::delegation::{Actor, JWT_TOKEN_TYPE, SESSION_SCOPE};
use crate::keys::{Algorithm, KeySet, SigningKey};
use crate::oauth::OAuthError;
use crate::policy::{Acting, ApprovalState, ExchangeAsk, Grant, Policy, Rules, Staged};
use crate::revocation::RevocationStore;
use crate::verify::Verifier;
use mayfly_core::{ACCESS_TOKEN_TYPE, Fingerprint, ID_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT};

/// Largest request body accepted.
const MAX_REQUEST: usize = 64 * 1024;
/// How often policy files are checked for changes (a stat per file).
pub(crate) const POLICY_POLL: Duration = Duration::from_secs(1);

/// A running exchange's state.
pub struct Sts {
    pub(crate) config: Config,
    /// The signing keys: the active one signs; it and the published ones verify the
    /// tokens this exchange minted, when they are presented back to it.
    pub(crate) keys: Arc<KeySet>,
    pub(crate) verifier: Verifier,
    policy: Box<dyn Policy>,
    /// The Cedar policies, reloaded when a policy file changes while serving.
    pub(crate) cedar: Option<Arc<crate::cedar::Handle>>,
    /// What outlives a reload.
    pub(crate) lasting: Lasting,
}

/// The state a config reload keeps: connections, and what lives in this process only.
#[derive(Clone)]
pub(crate) struct Lasting {
    pub(crate) audit: Arc<Audit>,
    pub(crate) revocations: Arc<dyn RevocationStore>,
    /// Requests waiting for a person's approval (shared with a PostgreSQL store).
    pub(crate) approvals: Arc<dyn crate::approval::ApprovalStore>,
    /// Sessions' expiries and last uses (shared with a PostgreSQL store).
    pub(crate) sessions: Arc<dyn crate::sessions::SessionStore>,
    /// The approval page's sign-in, when `[approval_login]` configures one.
    pub(crate) login: Option<Arc<crate::approval_login::Login>>,
    /// Where approvals are announced, when configured.
    pub(crate) webhook: Option<Arc<crate::webhook::Webhook>>,
    /// The GitHub App backend, when `[github_app]` configures one.
    pub(crate) github_app: Option<Arc<crate::github_app::GithubApp>>,
    /// Rate limits on exchanges (in this process only).
    pub(crate) limits: Arc<crate::rate_limit::Limits>,
}

impl Sts {
    /// Builds the exchange from its config (and an explicit key, if the caller has one),
    /// with the revocation store the config names (in memory when it names none).
    pub fn new(config: Config, key: Option<SigningKey>) -> Result<Self, String> {
        let stores = crate::revocation::open(&config)?;
        Self::with_stores(config, key, stores)
    }

    /// Builds the exchange with another revocation store (approvals and sessions in this
    /// process).
    pub fn with_store(
        config: Config,
        key: Option<SigningKey>,
        revocations: Arc<dyn RevocationStore>,
    ) -> Result<Self, String> {
        let stores = crate::revocation::Stores::in_process(revocations, &config);
        Self::with_stores(config, key, stores)
    }

    fn with_stores(config: Config, key: Option<SigningKey>, stores: crate::revocation::Stores) -> Result<Self, String> {
        let crate::revocation::Stores { revocations, approvals, sessions } = stores;
        // Registries trust the signers' certificates, carried in each token's `x5c`.
        let keys = match key {
            Some(key) => KeySet::single(key)?,
            None if config.signing_keys.is_empty() => KeySet::single(SigningKey::generate(Algorithm::Es256)?)?,
            None => KeySet::load(&config.signing_keys, None)?,
        };
        let audit =
            Audit::open(crate::audit::Target::of(&config)).map_err(|e| format!("cannot open audit log: {e}"))?;
        let login =
            config.approval_login.as_ref().map(|l| crate::approval_login::Login::new(l, &config)).transpose()?;
        let webhook = config.approval_webhook.as_ref().map(crate::webhook::Webhook::new).transpose()?;
        let github_app = config.github_app.as_ref().map(crate::github_app::GithubApp::new).transpose()?;
        let lasting = Lasting {
            audit: Arc::new(audit),
            revocations,
            approvals,
            sessions,
            login: login.map(Arc::new),
            webhook: webhook.map(Arc::new),
            github_app: github_app.map(Arc::new),
            limits: Arc::new(crate::rate_limit::Limits::new(config.rate_limit.as_ref())),
        };
        Self::assemble(config, Arc::new(keys), lasting)
    }

    /// The exchange from a config, its keys and the state that outlives a reload.
    pub(crate) fn assemble(config: Config, keys: Arc<KeySet>, lasting: Lasting) -> Result<Self, String> {
        let verifier = Verifier::new(config.trusted_issuers.clone())?;
        let cedar = policy_handle(&config)?;
        let policy = Box::new(Staged {
            rules: Rules { rules: config.rules.clone(), default_ttl: config.default_ttl },
            max_ttl: config.max_ttl,
            cedar: cedar.clone(),
            people: people(&config),
        });
        Ok(Self { config, keys, verifier, policy, cedar, lasting })
    }

    /// Loads the Cedar policies again now (as a changed policy file does); a failure keeps
    /// those in force.
    pub fn reload_policies(&self) -> Option<Result<String, String>> {
        self.cedar.as_ref().map(|c| c.reload())
    }

    /// The active signing key's public JWK.
    pub fn jwk(&self) -> &Value {
        self.keys.active().jwk()
    }

    /// Remembers a token as revoked until its expiry (the store may block: off the runtime).
    pub(crate) async fn revoke(&self, jti: &str, expires_at: i64) -> Result<(), String> {
        let (store, jti) = (self.lasting.revocations.clone(), jti.to_owned());
        let result =
            tokio::task::spawn_blocking(move || store.revoke(&jti, expires_at)).await.map_err(|e| e.to_string())?;
        match &result {
            Ok(()) => crate::metrics::revoked(),
            Err(_) => crate::metrics::store_error("revoke"),
        }
        result
    }

    /// Whether a token was revoked.
    pub(crate) async fn is_revoked(&self, jti: &str) -> Result<bool, String> {
        let (store, jti) = (self.lasting.revocations.clone(), jti.to_owned());
        let result = tokio::task::spawn_blocking(move || store.is_revoked(&jti)).await.map_err(|e| e.to_string())?;
        if result.is_err() {
            crate::metrics::store_error("lookup");
        }
        result
    }

    /// Whether the revocation store can be used now.
    pub(crate) async fn store_ready(&self) -> Result<(), String> {
        if !self.lasting.revocations.check_blocks() {
            return self.lasting.revocations.check();
        }
        let store = self.lasting.revocations.clone();
        let result = tokio::task::spawn_blocking(move || store.check()).await.map_err(|e| e.to_string())?;
        if result.is_err() {
            crate::metrics::store_error("check");
        }
        crate::health::note_store(&result);
        result
    }

    /// The routes.
    pub fn router(self: Arc<Self>) -> Router {
        Self::routes(crate::reload::Live::new(self))
    }

    /// The routes, each request served by the exchange in force when it arrives.
    pub(crate) fn routes(live: crate::reload::Live) -> Router {
        Router::new()
            .route("/token", post(token))
            .route("/revoke", post(crate::own_tokens::revoke))
            .route("/introspect", post(crate::own_tokens::introspect))
            .route("/.well-known/jwks.json", get(jwks))
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(crate::health::ready))
            .route("/registry/token", get(crate::registry::token).post(crate::registry::token))
            .route("/registry/cert.pem", get(crate::registry::certificate))
            .route("/approve/callback", get(crate::approval_page::callback))
            .route("/approve/{id}", get(crate::approval_http::view).post(crate::approval_http::decide))
            .route("/admin/revoke", post(crate::admin::revoke_session))
            .route("/metrics", get(crate::metrics::serve))
            .layer(DefaultBodyLimit::max(MAX_REQUEST))
            .layer(axum::middleware::from_fn(crate::metrics::track))
            .with_state(live)
    }
}

/// Serves on a bound listener, with TLS when the config has it, until the process ends.
/// Policies are reloaded when a policy file changes meanwhile. Signals are left alone:
/// [`serve_until_stopped`](crate::serve_until_stopped) is the one that handles them.
pub async fn serve(sts: Sts, listener: std::net::TcpListener) -> std::io::Result<()> {
    crate::reload::run(sts, listener, None).await
}

/// The Cedar policies the config names, loaded and validated; `None` when it names none.
pub fn policy_handle(config: &Config) -> Result<Option<Arc<crate::cedar::Handle>>, String> {
    if config.policies.is_empty() {
        return Ok(None);
    }
    let sources = crate::cedar::Sources {
        policies: config.policies.clone(),
        schema: config.schema.clone(),
        approval_groups: Some(config.approvers.iter().map(|a| a.name.clone()).collect()),
    };
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
    axum::Json(sts.keys.jwks()).into_response()
}

/// What this exchange supports (RFC 8414 names where registered, `mayfly_` ones where not).
async fn discovery(State(sts): State<Arc<Sts>>) -> Response {
    let base = &sts.config.issuer;
    let signing_alg = match sts.keys.active().algorithm() {
        Algorithm::Es256 => "ES256",
        Algorithm::Rs256 => "RS256",
    };
    let mut metadata = json!({
        "issuer": base,
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "token_endpoint": format!("{base}/token"),
        // The subject token is the credential: no client authenticates at `/token`.
        "token_endpoint_auth_methods_supported": ["none"],
        "grant_types_supported": [TOKEN_EXCHANGE_GRANT],
        "revocation_endpoint": format!("{base}/revoke"),
        "revocation_endpoint_auth_methods_supported": ["none"],
        "introspection_endpoint": format!("{base}/introspect"),
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
        "id_token_signing_alg_values_supported": [signing_alg],
        "mayfly_subject_token_types_supported": [ID_TOKEN_TYPE, JWT_TOKEN_TYPE],
        "mayfly_actor_token_types_supported": [ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE, JWT_TOKEN_TYPE],
        "mayfly_requested_token_types_supported": [ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE],
        "mayfly_issued_token_signing_alg_values_supported": [signing_alg],
        "mayfly_session_scope": SESSION_SCOPE,
    });
    if !sts.config.approvers.is_empty() {
        metadata["mayfly_approval_endpoint"] = Value::from(format!("{base}/approve"));
    }
    if !sts.config.administrators.is_empty() {
        metadata["mayfly_admin_revocation_endpoint"] = Value::from(format!("{base}/admin/revoke"));
    }
    axum::Json(metadata).into_response()
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

async fn token(
    State(sts): State<Arc<Sts>>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if sts.lasting.limits.limits_addresses() {
        let client = peer.map(|p| sts.lasting.limits.client(p.0.0.ip(), &headers));
        if let Err(limited) = sts.lasting.limits.address(client) {
            return crate::rate_limit::refuse(&sts, "address", limited, Line::default()).await;
        }
    }
    let form_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !form_type.starts_with("application/x-www-form-urlencoded") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            OAuthError::InvalidRequest,
            "body must be application/x-www-form-urlencoded",
        );
    }
    let form = Form { pairs: url::form_urlencoded::parse(&body).into_owned().collect() };
    // Fail closed: never mint a token whose revocation could not be recorded.
    if let Err(response) = crate::health::store_or_503(&sts).await {
        return response;
    }
    match exchange(&sts, &form).await {
        Ok(response) => response,
        Err(Refusal { code, reason }) => {
            let status = match code {
                OAuthError::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
                OAuthError::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            oauth_error(status, code, &reason)
        }
    }
}

/// An RFC 6749 error: its code and a description safe to show the client.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) code: OAuthError,
    pub(crate) reason: String,
}

pub(crate) fn invalid_request(reason: impl Into<String>) -> Refusal {
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
        (None, None) | (Some(_), Some(ACCESS_TOKEN_TYPE | ID_TOKEN_TYPE | JWT_TOKEN_TYPE)) => {}
        (Some(_), None) | (None, Some(_)) => {
            return Err(invalid_request("`actor_token` and `actor_token_type` go together"));
        }
        (Some(_), Some(_)) => {
            return Err(invalid_request("`actor_token_type` must be an access_token, id_token or jwt"));
        }
    }
    match form.one("requested_token_type").map_err(invalid_request)? {
        None | Some(ACCESS_TOKEN_TYPE | JWT_TOKEN_TYPE) => Ok(()),
        Some(_) => Err(invalid_request("`requested_token_type` must be an access_token or jwt")),
    }
}

/// A token whose audit line could not be written is not answered.
pub(crate) fn audit_failed(e: std::io::Error) -> Refusal {
    crate::log::error(&format!("cannot write the audit log: {e}"));
    Refusal { code: OAuthError::ServerError, reason: "the audit log cannot be written".into() }
}

/// Writes the audit line of a refusal and hands the refusal back.
pub(crate) async fn denied(sts: &Sts, refusal: Refusal, line: Line<'_>) -> Refusal {
    sts.lasting
        .audit
        .record(&Line {
            time: now_rfc3339(),
            outcome: "denied",
            code: Some(refusal.code.as_str()),
            reason: Some(&refusal.reason),
            ..line
        })
        .await;
    refusal
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
    if let Err(refusal) = check_shape(form) {
        return Err(denied(sts, refusal, line).await);
    }
    // A session is a token for this exchange itself; `session` is a scope only there.
    let opens_session = scope == SESSION_SCOPE && audiences.as_slice() == [sts.config.issuer.as_str()];
    // Each scope is one token of a shape this exchange can grant, within the limits,
    // before anything costs more than a pass over the request.
    let scopes = if opens_session {
        vec![SESSION_SCOPE.to_owned()]
    } else {
        match requested_scopes(sts, scope) {
            Ok(scopes) => scopes,
            Err(refusal) => return Err(denied(sts, refusal, line).await),
        }
    };
    let Some(subject_token) = form.one("subject_token").ok().flatten() else {
        return Err(denied(sts, invalid_request("`subject_token` is required"), line).await);
    };
    let audience = match audiences.as_slice() {
        [one] => *one,
        [] => {
            let refusal = Refusal { code: OAuthError::InvalidTarget, reason: "an `audience` is required".into() };
            return Err(denied(sts, refusal, line).await);
        }
        _ => {
            let refusal = Refusal { code: OAuthError::InvalidTarget, reason: "one `audience` per request".into() };
            return Err(denied(sts, refusal, line).await);
        }
    };
    let ttl = match form.one("requested_ttl").map_err(invalid_request)?.map(str::parse::<u64>) {
        Some(Ok(secs)) => Some(Duration::from_secs(secs)),
        Some(Err(_)) => {
            return Err(denied(sts, invalid_request("`requested_ttl` must be seconds"), line).await);
        }
        None => None,
    };
    let subject = match sts.verifier.verify(subject_token).await {
        Ok(subject) => subject,
        Err(rejection) => return Err(denied(sts, invalid_request(rejection.0), line).await),
    };
    line.issuer = Some(&subject.issuer);
    line.subject = Some(&subject.subject);
    if let Err(limited) = sts.lasting.limits.subject(&subject.issuer, &subject.subject) {
        return Ok(crate::rate_limit::refuse(sts, "subject", limited, line).await);
    }
    // check_shape saw both or neither.
    let actor = match (form.one("actor_token").ok().flatten(), form.one("actor_token_type").ok().flatten()) {
        (Some(token), Some(token_type)) => match crate::delegation::resolve(sts, token, token_type, &subject).await {
            Ok(actor) => Some(actor),
            Err(refusal) => return Err(denied(sts, refusal, line).await),
        },
        _ => None,
    };
    if opens_session {
        if actor.is_some() {
            let refusal = invalid_request("a session is opened with the subject's own token, without an actor token");
            return Err(denied(sts, refusal, line).await);
        }
        return open_session(sts, &subject, audience, ttl, intent.as_ref(), line).await;
    }
    let line = Line { act: actor.as_ref().map(|a| &a.act), sid: actor.as_ref().and_then(|a| a.sid.as_deref()), ..line };
    if let Some(actor) = &actor
        && let Err(reason) = crate::delegation::check_may_act(&subject, actor)
    {
        return Err(denied(sts, invalid_request(reason), line).await);
    }
    let ask = ExchangeAsk {
        subject: &subject,
        audience,
        scopes: &scopes,
        ttl,
        intent: intent.as_ref(),
        actor: actor.as_ref().map(|a| Acting { act: &a.act, issuer: &a.issuer }),
        approval: ApprovalState::None,
    };
    let approval_code = match form.one("approval_code") {
        Ok(code) => code,
        Err(reason) => return Err(denied(sts, invalid_request(reason), line).await),
    };
    let binding = Binding::new(&subject, actor.as_ref().map(|a| &a.act), audience, &scopes, ttl, intent.as_ref());
    // A request that carries an approval code collects the approval it names, and only
    // with it: the code is bound to this request, and yields one token.
    let approved = match approval_code {
        Some(code) => match sts.lasting.approvals.poll(code, &binding, std::time::Instant::now()) {
            Poll::Approved { id, approver, .. } => Some((id, approver)),
            other => return collect_refused(sts, other, line).await,
        },
        None => None,
    };
    let line = Line {
        approval: approved.as_ref().map(|(id, _)| id.as_str()),
        approver: approved.as_ref().map(|(_, a)| &a.audit),
        ..line
    };
    let decision = match &approved {
        Some((_, approver)) => sts
            .policy
            .decide(&ExchangeAsk { approval: ApprovalState::Approved { approver: Some(&approver.id) }, ..ask }),
        None => sts.policy.decide(&ask),
    };
    let grant = match decision {
        Ok(Grant { approval: Some(need), .. }) if approved.is_none() => {
            return pending(sts, need, binding, intent.clone(), &subject, line).await;
        }
        Ok(Grant { approval: Some(need), .. }) => {
            let reason = format!("policy `{}` still asks for approval after it was approved", need.policies.join(", "));
            let refusal = Refusal { code: OAuthError::AccessDenied, reason };
            return Err(denied(sts, refusal, Line { policies: Some(&need.policies), ..line }).await);
        }
        Ok(grant) => grant,
        Err(denial) => {
            let policies = (!denial.policies.is_empty()).then_some(denial.policies.as_slice());
            let refusal = Refusal { code: denial.code, reason: denial.reason.clone() };
            return Err(denied(sts, refusal, Line { policies, ..line }).await);
        }
    };
    if let Some((id, _)) = &approved {
        let refusal = match sts.lasting.approvals.spend(id, std::time::Instant::now()) {
            Ok(true) => None,
            Ok(false) => {
                Some(Refusal { code: OAuthError::InvalidGrant, reason: "the approval was already used".into() })
            }
            Err(reason) => Some(Refusal { code: OAuthError::TemporarilyUnavailable, reason }),
        };
        if let Some(refusal) = refusal {
            return Err(denied(sts, refusal, line).await);
        }
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    // A token derived through a session does not outlive it.
    let session_left = actor.as_ref().and_then(|a| a.until).map(|until| u64::try_from(until - now).unwrap_or(0));
    let ttl = session_left.map_or(grant.ttl.as_secs(), |left| grant.ttl.as_secs().min(left));
    // For a GitHub repository, GitHub mints the token, not this exchange.
    if let Some(app) = sts.lasting.github_app.as_ref().filter(|app| app.serves(audience)) {
        let sid = actor.as_ref().and_then(|a| a.sid.as_deref());
        return crate::github_app::answer(sts, app, &grant, sid, ttl, line).await;
    }
    let jti = random_id();
    let scope = grant.scopes.join(" ");
    let mut claims = json!({
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
    if let Some(actor) = &actor {
        claims["act"] = actor.act.clone();
        if let Some(sid) = &actor.sid {
            claims["sid"] = Value::from(sid.as_str());
        }
    }
    let access_token = sts
        .keys
        .active()
        .sign(Some("at+jwt"), &claims)
        .map_err(|e| Refusal { code: OAuthError::ServerError, reason: e })?;
    sts.lasting
        .audit
        .write(&Line {
            time: now_rfc3339(),
            outcome: "issued",
            scope: Some(scope.clone()),
            ttl: Some(ttl),
            rule: Some(grant.rule.as_str()).filter(|r| !r.is_empty()),
            policies: Some(grant.policies.as_slice()).filter(|p| !p.is_empty()),
            jti: Some(&jti),
            fingerprint: Some(Fingerprint::of(&access_token).to_string()),
            ..line
        })
        .await
        .map_err(audit_failed)?;
    Ok(issued(&access_token, ttl, &scope))
}

/// The answer to a collect that yields no token: still pending (or too fast), denied,
/// expired, used, unknown or for another request.
async fn collect_refused(sts: &Sts, poll: Poll, line: Line<'_>) -> Result<Response, Refusal> {
    let refusal = |code: OAuthError, reason: &str| Refusal { code, reason: reason.to_owned() };
    let refusal = match poll {
        Poll::Pending { id, interval, expires_in } => {
            return Ok(approval_answer(json!({
                "error": OAuthError::AuthorizationPending.as_str(),
                "error_description": "still waiting for a person to approve the request",
                "approval_id": id,
                "approval_uri": format!("{}/approve/{id}", sts.config.issuer),
                "interval": interval.as_secs(),
                "expires_in": expires_in.as_secs(),
            })));
        }
        Poll::SlowDown { id, interval } => {
            return Ok(approval_answer(json!({
                "error": OAuthError::SlowDown.as_str(),
                "error_description": format!("polled too often; wait {} seconds between polls", interval.as_secs()),
                "approval_id": id,
                "interval": interval.as_secs(),
            })));
        }
        Poll::Denied { by, reason } => {
            let reason = match reason {
                Some(reason) => format!("denied by {by}: {reason}"),
                None => format!("denied by {by}"),
            };
            Refusal { code: OAuthError::AccessDenied, reason: mayfly_core::sanitize_for_terminal(&reason) }
        }
        Poll::Expired => refusal(
            OAuthError::ExpiredToken,
            "the approval expired before the token was collected; ask again without `approval_code`",
        ),
        Poll::Used => refusal(OAuthError::InvalidGrant, "the approval was already used"),
        Poll::OtherRequest => refusal(OAuthError::InvalidGrant, "the approval is for another request"),
        Poll::Unknown => {
            refusal(OAuthError::InvalidGrant, "no approval has this `approval_code`; ask again without it")
        }
        Poll::Unavailable(reason) => refusal(OAuthError::TemporarilyUnavailable, &reason),
        Poll::Approved { .. } => refusal(OAuthError::ServerError, "an approved request was not collected"),
    };
    Err(denied(sts, refusal, line).await)
}

/// Opens an approval for a request `@approval` forbids hold back, and answers
/// `authorization_pending` with where to approve it and the code to collect it with.
async fn pending(
    sts: &Sts,
    need: crate::policy::ApprovalNeed,
    binding: Binding,
    intent: Option<Value>,
    subject: &crate::VerifiedSubject,
    line: Line<'_>,
) -> Result<Response, Refusal> {
    let person = sts.config.same_person_claim.as_deref().and_then(|c| crate::policy::claim_str(&subject.claims, c));
    let request = crate::approval::Request {
        binding,
        intent,
        group: need.group.clone(),
        policies: need.policies.clone(),
        operation: need.operation.clone(),
        target: need.target.clone(),
        person,
    };
    let line = Line { policies: Some(&need.policies), group: Some(&need.group), ..line };
    let announced = sts.lasting.webhook.is_some().then(|| request.clone());
    let created = match sts.lasting.approvals.create(request, std::time::Instant::now()) {
        Ok(created) => created,
        Err(reason) => {
            return Err(denied(sts, Refusal { code: OAuthError::TemporarilyUnavailable, reason }, line).await);
        }
    };
    sts.lasting
        .audit
        .record(&Line {
            time: now_rfc3339(),
            outcome: "pending",
            reason: Some(&need.description),
            approval: Some(&created.id),
            ..line
        })
        .await;
    if let (Some(webhook), Some(request)) = (&sts.lasting.webhook, announced) {
        let uri = format!("{}/approve/{}", sts.config.issuer, created.id);
        let expires_at = time::OffsetDateTime::now_utc() + created.expires_in;
        let body = crate::webhook::body(&created.id, &uri, &request, expires_at, None);
        webhook.announce(&body, std::time::Instant::now() + created.expires_in);
    }
    Ok(approval_answer(json!({
        "error": OAuthError::AuthorizationPending.as_str(),
        "error_description": need.description,
        "approval_id": created.id,
        "approval_uri": format!("{}/approve/{}", sts.config.issuer, created.id),
        "approval_code": created.code,
        "interval": created.interval.as_secs(),
        "expires_in": created.expires_in.as_secs(),
    })))
}

/// A 400 answer about an approval, with the fields RFC 8628 polling adds.
fn approval_answer(body: Value) -> Response {
    no_store((StatusCode::BAD_REQUEST, axum::Json(body)).into_response())
}

/// Mints a session token: for this exchange itself, naming the agent the intent declares.
/// No rule is needed (it grants nothing by itself); a Cedar forbid on `session` refuses it.
/// Its lifetime is capped by `session_max_ttl`, not by the rules' `max_ttl`.
async fn open_session(
    sts: &Sts,
    subject: &crate::VerifiedSubject,
    audience: &str,
    ttl: Option<Duration>,
    intent: Option<&Value>,
    line: Line<'_>,
) -> Result<Response, Refusal> {
    let agent = match crate::delegation::declared_agent(intent) {
        Ok(agent) => agent,
        Err(reason) => return Err(denied(sts, invalid_request(reason), line).await),
    };
    let actor = Actor { act: agent, issuer: sts.config.issuer.clone(), sid: None, until: None };
    let line = Line { act: Some(&actor.act), ..line };
    if let Err(reason) = crate::delegation::check_may_act(subject, &actor) {
        return Err(denied(sts, invalid_request(reason), line).await);
    }
    let max = sts.config.session_max_ttl;
    let ttl = ttl.unwrap_or(max).min(max);
    let scopes = [SESSION_SCOPE.to_owned()];
    let ask = ExchangeAsk {
        subject,
        audience,
        scopes: &scopes,
        ttl: Some(ttl),
        intent,
        actor: Some(Acting { act: &actor.act, issuer: &actor.issuer }),
        approval: ApprovalState::None,
    };
    let policies = match sts.policy.decide_session(&ask) {
        Ok(policies) => policies,
        Err(denial) => {
            let policies = (!denial.policies.is_empty()).then_some(denial.policies.as_slice());
            let refusal = Refusal { code: denial.code, reason: denial.reason.clone() };
            return Err(denied(sts, refusal, Line { policies, ..line }).await);
        }
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let ttl = ttl.as_secs();
    let jti = random_id();
    let claims = json!({
        "iss": sts.config.issuer,
        "sub": subject.subject,
        "subject_issuer": subject.issuer,
        "aud": sts.config.issuer,
        "scope": SESSION_SCOPE,
        "iat": now,
        "nbf": now,
        "exp": now + i64::try_from(ttl).unwrap_or(i64::MAX / 4),
        "jti": jti,
        "act": actor.act,
    });
    let token = sts
        .keys
        .active()
        .sign(Some("at+jwt"), &claims)
        .map_err(|e| Refusal { code: OAuthError::ServerError, reason: e })?;
    let expires_at = now + i64::try_from(ttl).unwrap_or(i64::MAX / 4);
    // Fail closed: no session whose idle time could not be recorded.
    if let Err(reason) = sts.lasting.sessions.opened(&jti, expires_at, std::time::Instant::now(), now) {
        return Err(Refusal { code: OAuthError::TemporarilyUnavailable, reason });
    }
    // The session's own line carries its `jti` as `sid` too, so one search for a `sid`
    // finds the session and everything minted through it.
    sts.lasting
        .audit
        .write(&Line {
            time: now_rfc3339(),
            outcome: "issued",
            scope: Some(SESSION_SCOPE.to_owned()),
            ttl: Some(ttl),
            policies: Some(policies.as_slice()).filter(|p| !p.is_empty()),
            jti: Some(&jti),
            sid: Some(&jti),
            fingerprint: Some(Fingerprint::of(&token).to_string()),
            ..line
        })
        .await
        .map_err(audit_failed)?;
    Ok(issued(&token, ttl, SESSION_SCOPE))
}

/// The RFC 8693 success answer.
pub(crate) fn issued(token: &str, ttl: u64, scope: &str) -> Response {
    no_store(
        axum::Json(json!({
            "access_token": token,
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": ttl,
            "scope": scope,
        }))
        .into_response(),
    )
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
