//! `GET /metrics`: counters of this process in the Prometheus (OpenMetrics) text format.
//!
//! Every label value comes from a closed set or from the config (endpoints are route
//! templates, outcomes and codes are this exchange's own, rules and policies are the
//! configured ones, issuers the trusted ones): never a subject, token, `jti` or address.
//! Counts are per process, so each replica has its own; the scraper adds them up.

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::server::Sts;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    outcome: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    outcome: String,
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    outcome: String,
    policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerLabels {
    issuer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: String,
}

/// The metrics of this process.
struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    rules: Family<RuleLabels, Counter>,
    policies: Family<PolicyLabels, Counter>,
    exchange_seconds: Histogram,
    jwks_fetches: Family<IssuerLabels, Counter>,
    jwks_failures: Family<IssuerLabels, Counter>,
    revocations: Counter,
    store_errors: Family<OperationLabels, Counter>,
    rate_limited: Family<LimitLabels, Counter>,
    approvals_pending: Gauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("mayfly_sts");
    let requests = Family::default();
    registry.register("requests", "HTTP requests answered, by route and status", requests.clone());
    let decisions = Family::default();
    registry.register(
        "decisions",
        "Audit lines written, by outcome (issued, denied, pending, revoked, ...) and OAuth error code",
        decisions.clone(),
    );
    let rules = Family::default();
    registry.register("rule_decisions", "Decisions by the configured rule that granted", rules.clone());
    let policies = Family::default();
    registry.register("policy_decisions", "Decisions by the Cedar policy that determined them", policies.clone());
    let exchange_seconds = Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
    registry.register("exchange_duration_seconds", "Time to answer POST /token", exchange_seconds.clone());
    let jwks_fetches = Family::default();
    registry.register("jwks_fetches", "JWKS fetches from a trusted issuer", jwks_fetches.clone());
    let jwks_failures = Family::default();
    registry.register("jwks_fetch_failures", "JWKS fetches from a trusted issuer that failed", jwks_failures.clone());
    let revocations = Counter::default();
    registry.register("revocations", "Tokens recorded as revoked", revocations.clone());
    let store_errors = Family::default();
    registry.register("store_errors", "Revocation store operations that failed", store_errors.clone());
    let rate_limited = Family::default();
    registry.register("rate_limited", "Requests refused by a rate limit (subject or address)", rate_limited.clone());
    let approvals_pending = Gauge::default();
    registry.register("approvals_pending", "Requests waiting for a person's approval", approvals_pending.clone());
    // Series that alerts watch exist at zero from the start, not from their first event.
    for operation in ["revoke", "lookup", "check"] {
        let _ = store_errors.get_or_create(&OperationLabels { operation: operation.to_owned() });
    }
    for limit in ["subject", "address"] {
        let _ = rate_limited.get_or_create(&LimitLabels { limit: limit.to_owned() });
    }
    Metrics {
        registry,
        requests,
        decisions,
        rules,
        policies,
        exchange_seconds,
        jwks_fetches,
        jwks_failures,
        revocations,
        store_errors,
        rate_limited,
        approvals_pending,
    }
});

/// Counts an audit line: every decision is written as one, so none is missed.
pub(crate) fn decision(line: &crate::audit::Line<'_>) {
    let outcome = line.outcome.to_owned();
    METRICS
        .decisions
        .get_or_create(&DecisionLabels { outcome: outcome.clone(), code: line.code.unwrap_or("").to_owned() })
        .inc();
    if let Some(rule) = line.rule {
        METRICS.rules.get_or_create(&RuleLabels { outcome: outcome.clone(), rule: rule.to_owned() }).inc();
    }
    for policy in line.policies.unwrap_or_default() {
        METRICS.policies.get_or_create(&PolicyLabels { outcome: outcome.clone(), policy: policy.clone() }).inc();
    }
}

/// Counts a JWKS fetch from a trusted issuer, and whether it failed.
pub(crate) fn jwks_fetch(issuer: &str, ok: bool) {
    let labels = IssuerLabels { issuer: issuer.to_owned() };
    METRICS.jwks_fetches.get_or_create(&labels).inc();
    if !ok {
        METRICS.jwks_failures.get_or_create(&labels).inc();
    }
}

/// Counts a recorded revocation.
pub(crate) fn revoked() {
    METRICS.revocations.inc();
}

/// Counts a failed revocation store operation (`revoke`, `lookup`, `check`).
pub(crate) fn store_error(operation: &'static str) {
    METRICS.store_errors.get_or_create(&OperationLabels { operation: operation.to_owned() }).inc();
}

/// Counts a request refused by a rate limit (`subject` or `address`).
pub(crate) fn rate_limited(limit: &'static str) {
    METRICS.rate_limited.get_or_create(&LimitLabels { limit: limit.to_owned() }).inc();
}

/// Counts every answer by its route template (never the path as sent), and times exchanges.
pub(crate) async fn track(request: Request, next: Next) -> Response {
    let endpoint = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    if endpoint == "/token" {
        METRICS.exchange_seconds.observe(started.elapsed().as_secs_f64());
    }
    METRICS.requests.get_or_create(&RequestLabels { endpoint, status: response.status().as_u16() }).inc();
    response
}

/// `GET /metrics`.
pub(crate) async fn serve(State(sts): State<Arc<Sts>>) -> Response {
    // With a shared store the gauge counts every replica's; unreadable, it keeps its value.
    if let Ok(pending) = sts.lasting.approvals.pending(Instant::now()) {
        METRICS.approvals_pending.set(i64::try_from(pending).unwrap_or(i64::MAX));
    }
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &METRICS.registry).is_err() {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}
