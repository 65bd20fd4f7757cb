//! `GET` and `POST /approve/{id}`: an approver, signed in with an ID token of a trusted
//! issuer (`Authorization: Bearer`), sees a waiting request and approves or denies it.
//! The id only names the request; no token is ever collected with it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mayfly_core::pattern::{Kind, matches};
use serde_json::{Value, json};

use crate::Sts;
use crate::approval::{Approver, DecideError, View, check_reason, same_person};
use crate::audit::{Line, now_rfc3339};
use crate::config::ApproverEntry;
use crate::policy::claim_str;
use crate::server::{Form, no_store};
use crate::verify::VerifiedSubject;

pub(crate) fn error(status: StatusCode, code: &str, description: &str) -> Response {
    let mut response =
        no_store((status, axum::Json(json!({"error": code, "error_description": description}))).into_response());
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// The approver's verified ID token, or the 401 answer.
async fn approver(sts: &Sts, headers: &HeaderMap) -> Result<VerifiedSubject, Response> {
    bearer_id_token(sts, headers, "to see or decide an approval").await
}

/// The verified ID token sent as `Authorization: Bearer` (verified as a subject token),
/// or the 401 answer saying it is needed `purpose`.
pub(crate) async fn bearer_id_token(
    sts: &Sts,
    headers: &HeaderMap,
    purpose: &str,
) -> Result<VerifiedSubject, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty());
    let Some(token) = token else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            &format!("send your ID token as `Authorization: Bearer <token>` {purpose}"),
        ));
    };
    sts.verifier.verify(token).await.map_err(|rejection| {
        error(StatusCode::UNAUTHORIZED, "invalid_token", &format!("your ID token is refused: {}", rejection.0))
    })
}

/// Whether the token's holder is a member of `group`: an `[[approvers]]` entry of that
/// name whose issuer is the token's and whose claim patterns all match.
pub(crate) fn in_group(approvers: &[ApproverEntry], group: &str, token: &VerifiedSubject) -> bool {
    approvers.iter().any(|entry| entry.name == group && matches_entry(&entry.issuer, &entry.claims, token))
}

/// Whether a verified ID token is of `issuer` and its claims match every pattern.
pub(crate) fn matches_entry(issuer: &str, claims: &BTreeMap<String, String>, token: &VerifiedSubject) -> bool {
    issuer == token.issuer
        && claims
            .iter()
            .all(|(claim, pattern)| claim_str(&token.claims, claim).is_some_and(|v| matches(Kind::Claim, pattern, &v)))
}

/// Why an approver may not see or decide an approval: the status, the OAuth-style code
/// and a description. The JSON API and the approval page answer the same refusals.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) description: String,
}

impl Refused {
    fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        Self { status, code, description: description.into() }
    }

    fn unknown() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no approval has this id; it may have expired long ago")
    }

    fn json(self) -> Response {
        error(self.status, self.code, &self.description)
    }
}

/// Whether `id` has the shape of an approval id (32 hex digits).
pub(crate) fn is_approval_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The approval and the approver's membership of its group, or the 404 / 403 refusal.
pub(crate) fn lookup(sts: &Sts, id: &str, token: &VerifiedSubject, now: Instant) -> Result<View, Refused> {
    if !is_approval_id(id) {
        return Err(Refused::unknown());
    }
    let view = sts
        .lasting
        .approvals
        .view(id, now)
        .map_err(|e| Refused::new(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", e))?
        .ok_or_else(Refused::unknown)?;
    if !in_group(&sts.config.approvers, &view.request.group, token) {
        return Err(Refused::new(
            StatusCode::FORBIDDEN,
            "access_denied",
            format!("`{}` of `{}` is not in approver group `{}`", token.subject, token.issuer, view.request.group),
        ));
    }
    Ok(view)
}

/// The 403 refusal when the approver is the requester (same issuer and subject, or the
/// same value of `same_person_claim`).
pub(crate) fn not_the_requester(sts: &Sts, view: &View, token: &VerifiedSubject) -> Result<(), Refused> {
    let binding = &view.request.binding;
    let same_subject = binding.issuer == token.issuer && binding.subject == token.subject;
    let claim = sts.config.same_person_claim.as_deref();
    let same_claim = claim.and_then(|c| claim_str(&token.claims, c)).zip(view.request.person.as_deref());
    if same_subject || same_claim.is_some_and(|(a, b)| same_person(&a, b)) {
        return Err(Refused::new(
            StatusCode::FORBIDDEN,
            "access_denied",
            "you asked for this request yourself; another member of the group must decide it",
        ));
    }
    Ok(())
}

/// `decision=approve|deny` and the optional one-line `reason` of a decision form.
pub(crate) fn decision(form: &Form) -> Result<(bool, Option<String>), Refused> {
    let invalid = |description: String| Refused::new(StatusCode::BAD_REQUEST, "invalid_request", description);
    let approve = match form.one("decision").map_err(invalid)? {
        Some("approve") => true,
        Some("deny") => false,
        _ => return Err(invalid("`decision` is `approve` or `deny`".into())),
    };
    let reason = form.one("reason").map_err(invalid)?.map(str::trim).filter(|r| !r.is_empty()).map(str::to_owned);
    if let Some(Err(reason)) = reason.as_deref().map(check_reason) {
        return Err(invalid(reason));
    }
    Ok((approve, reason))
}

/// Records an approver's decision on a request they may decide and did not ask for, and
/// writes its audit line; `approved` or `denied`, or the 403 / 404 / 410 / 409 refusal.
pub(crate) fn record(
    sts: &Sts,
    id: &str,
    view: &View,
    token: &VerifiedSubject,
    approve: bool,
    reason: Option<String>,
    now: Instant,
) -> Result<&'static str, Refused> {
    not_the_requester(sts, view, token)?;
    let approver = Approver::of(token);
    match sts.lasting.approvals.decide(id, approver.clone(), approve, reason.clone(), now) {
        Ok(()) => {}
        Err(DecideError::Unknown) => return Err(Refused::unknown()),
        Err(DecideError::Expired) => return Err(expired()),
        Err(DecideError::AlreadyDecided(status)) => return Err(already(status)),
        Err(DecideError::Unavailable(e)) => {
            return Err(Refused::new(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", e));
        }
    }
    if let Some(webhook) = &sts.lasting.webhook {
        let uri = format!("{}/approve/{id}", sts.config.issuer);
        let expires_at = time::OffsetDateTime::now_utc() + view.expires_in;
        let decision = crate::webhook::Decision { approved: approve, approver: &approver, reason: reason.as_deref() };
        let body = crate::webhook::body(id, &uri, &view.request, expires_at, Some(&decision));
        webhook.announce(&body, now + view.expires_in);
    }
    let binding = &view.request.binding;
    let outcome = if approve { "approved" } else { "denied" };
    sts.lasting.audit.queue(&Line {
        time: now_rfc3339(),
        outcome,
        reason: reason.as_deref(),
        issuer: Some(&binding.issuer),
        subject: Some(&binding.subject),
        audience: Some(&binding.audience),
        scope: Some(binding.scopes.join(" ")),
        policies: Some(view.request.policies.as_slice()),
        act: binding.act.as_ref(),
        approval: Some(id),
        group: Some(&view.request.group),
        approver: Some(&approver.audit),
        ..Line::default()
    });
    Ok(outcome)
}

/// The 410 refusal of an expired approval.
pub(crate) fn expired() -> Refused {
    Refused::new(StatusCode::GONE, "expired_token", "the approval expired; the requester must ask again")
}

/// The 409 refusal of an approval that is `status` already.
pub(crate) fn already(status: &str) -> Refused {
    Refused::new(StatusCode::CONFLICT, "already_decided", format!("the approval is already {status}"))
}

/// `GET /approve/{id}`: the request, for an approver of its group. A browser without a
/// Bearer token gets the approval page instead, when a login is configured.
pub(crate) async fn view(State(sts): State<Arc<Sts>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if crate::approval_page::wants_page(&sts, &headers) {
        return crate::approval_page::view(&sts, &id, &headers).await;
    }
    let token = match approver(&sts, &headers).await {
        Ok(token) => token,
        Err(response) => return response,
    };
    let view = match lookup(&sts, &id, &token, Instant::now()) {
        Ok(view) => view,
        Err(refused) => return refused.json(),
    };
    let request = &view.request;
    let binding = &request.binding;
    no_store(
        axum::Json(json!({
            "id": id,
            "status": view.status,
            "requester": {"iss": binding.issuer, "sub": binding.subject},
            "actor": binding.act.clone().unwrap_or(Value::Null),
            "audience": binding.audience,
            "scopes": binding.scopes,
            "ttl": binding.ttl,
            "intent": request.intent.clone().unwrap_or(Value::Null),
            "policy": request.policies.join(", "),
            "group": request.group,
            "expires_in": view.expires_in.as_secs(),
        }))
        .into_response(),
    )
}

/// `POST /approve/{id}` (`decision=approve|deny`, optional `reason`): records the decision.
/// The approval page's form (a login session cookie, no Bearer token) is answered by the page.
pub(crate) async fn decide(
    State(sts): State<Arc<Sts>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if crate::approval_page::is_page_form(&sts, &headers) {
        return crate::approval_page::decide(&sts, &id, &headers, &body);
    }
    let token = match approver(&sts, &headers).await {
        Ok(token) => token,
        Err(response) => return response,
    };
    let now = Instant::now();
    let view = match lookup(&sts, &id, &token, now) {
        Ok(view) => view,
        Err(refused) => return refused.json(),
    };
    let form = match form_body(&headers, &body) {
        Ok(form) => form,
        Err(refused) => return refused.json(),
    };
    let (approve, reason) = match decision(&form) {
        Ok(decision) => decision,
        Err(refused) => return refused.json(),
    };
    match record(&sts, &id, &view, &token, approve, reason, now) {
        Ok(outcome) => no_store(axum::Json(json!({"status": outcome})).into_response()),
        Err(refused) => refused.json(),
    }
}

/// A form-encoded body, or the 400 refusal.
pub(crate) fn form_body(headers: &HeaderMap, body: &[u8]) -> Result<Form, Refused> {
    let form_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !form_type.starts_with("application/x-www-form-urlencoded") {
        return Err(Refused::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "body must be application/x-www-form-urlencoded",
        ));
    }
    Ok(Form { pairs: url::form_urlencoded::parse(body).into_owned().collect() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(issuer: &str, claims: Value) -> VerifiedSubject {
        let claims = claims.as_object().unwrap().clone();
        let subject = claims["sub"].as_str().unwrap().to_owned();
        VerifiedSubject { issuer: issuer.into(), subject, claims }
    }

    #[test]
    fn group_membership_is_issuer_and_claim_patterns() {
        let approvers = vec![
            ApproverEntry {
                name: "release-managers".into(),
                issuer: "https://idp".into(),
                claims: [("email".to_owned(), "*@example.com".to_owned()), ("team".to_owned(), "release".to_owned())]
                    .into(),
            },
            ApproverEntry {
                name: "release-managers".into(),
                issuer: "https://other-idp".into(),
                claims: Default::default(),
            },
        ];
        let alice = token("https://idp", json!({"sub": "user:alice", "email": "alice@example.com", "team": "release"}));
        assert!(in_group(&approvers, "release-managers", &alice));
        assert!(!in_group(&approvers, "security", &alice));
        let outsider = token("https://idp", json!({"sub": "user:eve", "email": "eve@evil.test", "team": "release"}));
        assert!(!in_group(&approvers, "release-managers", &outsider));
        let no_team = token("https://idp", json!({"sub": "user:carl", "email": "carl@example.com"}));
        assert!(!in_group(&approvers, "release-managers", &no_team));
        // A second entry of the same name adds members: anyone of that issuer.
        let other = token("https://other-idp", json!({"sub": "x"}));
        assert!(in_group(&approvers, "release-managers", &other));
        // A claim pattern's `*` stays within one `:`-separated part.
        let approvers = vec![ApproverEntry {
            name: "g".into(),
            issuer: "https://idp".into(),
            claims: [("sub".to_owned(), "user:*".to_owned())].into(),
        }];
        assert!(in_group(&approvers, "g", &alice));
        assert!(!in_group(&approvers, "g", &token("https://idp", json!({"sub": "user:a:admin"}))));
    }
}
