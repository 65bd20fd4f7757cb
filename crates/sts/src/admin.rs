//! `POST /admin/revoke`: an administrator, signed in with an ID token of a trusted issuer
//! (`Authorization: Bearer`), ends anyone's session by its `sid`. The session's `jti` is
//! recorded as revoked, so everything minted through it dies with it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::Sts;
use crate::approval_http::{bearer_id_token, error, matches_entry};
use crate::audit::{Line, now_rfc3339};
use crate::config::AdministratorEntry;
use crate::server::{Form, no_store};
use crate::verify::VerifiedSubject;

/// Whether the token's holder is an administrator: any `[[administrators]]` entry of its
/// issuer whose claim patterns all match.
pub(crate) fn is_administrator(administrators: &[AdministratorEntry], token: &VerifiedSubject) -> bool {
    administrators.iter().any(|entry| matches_entry(&entry.issuer, &entry.claims, token))
}

/// Whether `sid` has the shape of a session id: 32 hex digits.
fn is_sid(sid: &str) -> bool {
    sid.len() == 32 && sid.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `POST /admin/revoke` (`session=<sid>`): ends the session until it would have expired
/// (or `session_max_ttl` from now when this process never saw it).
pub(crate) async fn revoke_session(State(sts): State<Arc<Sts>>, headers: HeaderMap, body: Bytes) -> Response {
    if sts.config.administrators.is_empty() {
        return error(StatusCode::NOT_FOUND, "not_found", "this exchange has no administrators configured");
    }
    let token = match bearer_id_token(&sts, &headers, "to end a session").await {
        Ok(token) => token,
        Err(response) => return response,
    };
    let administrator = json!({"iss": token.issuer, "sub": token.subject});
    if !is_administrator(&sts.config.administrators, &token) {
        sts.lasting
            .audit
            .record(&Line {
                time: now_rfc3339(),
                outcome: "admin-refused",
                reason: Some("not an administrator"),
                administrator: Some(&administrator),
                ..Line::default()
            })
            .await;
        return error(
            StatusCode::FORBIDDEN,
            "access_denied",
            &format!("`{}` of `{}` is not an administrator of this exchange", token.subject, token.issuer),
        );
    }
    let form_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !form_type.starts_with("application/x-www-form-urlencoded") {
        return error(StatusCode::BAD_REQUEST, "invalid_request", "body must be application/x-www-form-urlencoded");
    }
    let form = Form { pairs: url::form_urlencoded::parse(&body).into_owned().collect() };
    let sid = match form.one("session") {
        Ok(Some(sid)) if is_sid(sid) => sid.to_ascii_lowercase(),
        Ok(Some(_)) => {
            return error(StatusCode::BAD_REQUEST, "invalid_request", "`session` is a session id: 32 hex digits");
        }
        Ok(None) => return error(StatusCode::BAD_REQUEST, "invalid_request", "`session` (the session id) is required"),
        Err(reason) => return error(StatusCode::BAD_REQUEST, "invalid_request", &reason),
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let longest = i64::try_from(sts.config.session_max_ttl.as_secs()).unwrap_or(i64::MAX / 4);
    // A session whose expiry is unknown (or unreadable) is revoked for the longest one.
    let until = sts.lasting.sessions.expires_at(&sid).ok().flatten().unwrap_or(now + longest);
    let line = Line { time: now_rfc3339(), sid: Some(&sid), administrator: Some(&administrator), ..Line::default() };
    if let Err(reason) = sts.revoke(&sid, until).await {
        sts.lasting.audit.record(&Line { outcome: "admin-revoke-failed", reason: Some(&reason), ..line }).await;
        return error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "cannot record the revocation");
    }
    let _ = sts.lasting.sessions.forget(&sid);
    sts.lasting.audit.record(&Line { outcome: "admin-revoked", ..line }).await;
    crate::github_app::end_session(&sts, &sid).await;
    no_store(axum::Json(json!({"revoked": sid})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn token(issuer: &str, claims: Value) -> VerifiedSubject {
        let claims = claims.as_object().unwrap().clone();
        let subject = claims["sub"].as_str().unwrap().to_owned();
        VerifiedSubject { issuer: issuer.into(), subject, claims }
    }

    #[test]
    fn administrators_are_an_issuer_and_claim_patterns() {
        let administrators = vec![AdministratorEntry {
            issuer: "https://idp".into(),
            claims: [("email".to_owned(), "*@example.com".to_owned())].into(),
        }];
        assert!(is_administrator(
            &administrators,
            &token("https://idp", json!({"sub": "a", "email": "a@example.com"}))
        ));
        assert!(!is_administrator(&administrators, &token("https://idp", json!({"sub": "e", "email": "e@evil.test"}))));
        assert!(!is_administrator(&administrators, &token("https://idp", json!({"sub": "n"}))));
        assert!(!is_administrator(
            &administrators,
            &token("https://other", json!({"sub": "a", "email": "a@example.com"}))
        ));
        assert!(!is_administrator(&[], &token("https://idp", json!({"sub": "a", "email": "a@example.com"}))));
    }

    #[test]
    fn a_session_id_is_32_hex_digits() {
        assert!(is_sid(&crate::server::random_id()));
        assert!(is_sid("0123456789ABCDEF0123456789abcdef"));
        for bad in ["", "abc", &"g".repeat(32), &"a".repeat(33), "0123456789abcdef0123456789abcde "] {
            assert!(!is_sid(bad), "{bad}");
        }
    }
}
