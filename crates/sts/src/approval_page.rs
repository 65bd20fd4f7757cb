//! The approvers' web page: `GET /approve/{id}` from a browser (no Bearer token) signs the
//! approver in (see [`crate::approval_login`]) and shows the request; its form posts the
//! decision back to `POST /approve/{id}` with the session's CSRF token. The checks are the
//! JSON API's ([`crate::approval_http`]); only the answers are pages.
//!
//! Every value shown comes from the requester and is hostile: the templates escape all of
//! them, and the page allows no script, no framing and forms to this origin only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use crate::Sts;
use crate::approval::View;
use crate::approval_http::{Refused, already, decision, expired, form_body, is_approval_id, lookup, record};
use crate::approval_login::{LOGIN_COOKIE, SESSION_COOKIE, SESSION_TTL, Session, cookie, same_secret, set_cookie};

const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const STYLE: &str = "body{font-family:sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#222}\
dt{font-weight:bold;margin-top:.6rem}dd{margin-left:1rem;word-break:break-all}\
code{background:#f3f3f3;padding:0 .2rem}.claimed{color:#a40;font-size:.85rem;font-weight:bold}\
form{display:inline-block;margin:1rem 1rem 0 0}button{font-size:1rem;padding:.4rem 1.2rem}";

/// Whether a `GET /approve/{id}` is a browser's, for the page: a login is configured, no
/// Bearer token is sent, and the client takes HTML or has a page session.
pub(crate) fn wants_page(sts: &Sts, headers: &HeaderMap) -> bool {
    let html = headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|v| v.contains("text/html"));
    sts.lasting.login.is_some()
        && !headers.contains_key(header::AUTHORIZATION)
        && (html || cookie(headers, SESSION_COOKIE).is_some())
}

/// Whether a `POST /approve/{id}` is the page's form: a page session, no Bearer token.
pub(crate) fn is_page_form(sts: &Sts, headers: &HeaderMap) -> bool {
    sts.lasting.login.is_some()
        && !headers.contains_key(header::AUTHORIZATION)
        && cookie(headers, SESSION_COOKIE).is_some()
}

/// The page for a browser: a sign-in first when it has no session, then the request.
pub(crate) async fn view(sts: &Sts, id: &str, headers: &HeaderMap) -> Response {
    let Some(login) = &sts.lasting.login else {
        return message(StatusCode::NOT_FOUND, "Not found", "no approval page here");
    };
    if !is_approval_id(id) {
        return refused(&not_found());
    }
    let now = Instant::now();
    let Some(session) = cookie(headers, SESSION_COOKIE).and_then(|c| login.session(c, now)) else {
        return match login.begin(id, now).await {
            Ok((cookie, provider)) => {
                let mut response = redirect(&provider);
                append_cookie(&mut response, &set_cookie(LOGIN_COOKIE, &cookie, Duration::from_secs(600)));
                response
            }
            Err(error) => message(StatusCode::BAD_GATEWAY, "Sign-in unavailable", &error.0),
        };
    };
    let view = match decidable(sts, id, &session.token, now) {
        Ok(view) => view,
        Err(refusal) => return refused(&refusal),
    };
    page(StatusCode::OK, "Approval requested", request_page(id, &view, &session))
}

/// The form's decision, under the page session and its CSRF token.
pub(crate) fn decide(sts: &Sts, id: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let Some(login) = &sts.lasting.login else {
        return message(StatusCode::NOT_FOUND, "Not found", "no approval page here");
    };
    let now = Instant::now();
    let Some(session) = cookie(headers, SESSION_COOKIE).and_then(|c| login.session(c, now)) else {
        return message(
            StatusCode::UNAUTHORIZED,
            "Signed out",
            "your sign-in expired; open the approval link again to sign in",
        );
    };
    let form = match form_body(headers, body) {
        Ok(form) => form,
        Err(refusal) => return refused(&refusal),
    };
    let csrf = form.one("csrf").ok().flatten().unwrap_or_default();
    if !same_secret(csrf, &session.csrf) {
        return message(
            StatusCode::FORBIDDEN,
            "Not from this page",
            "the form was not sent from the approval page you signed in to; open the approval link again",
        );
    }
    let outcome = lookup(sts, id, &session.token, now)
        .and_then(|view| decision(&form).map(|(approve, reason)| (view, approve, reason)))
        .and_then(|(view, approve, reason)| record(sts, id, &view, &session.token, approve, reason, now));
    match outcome {
        Ok("approved") => message(StatusCode::OK, "Approved", "the request is approved; the requester may go on"),
        Ok(_) => message(StatusCode::OK, "Denied", "the request is denied; the requester is told your reason"),
        Err(refusal) => refused(&refusal),
    }
}

/// `GET /approve/callback`: the provider's answer to a sign-in this browser started.
pub(crate) async fn callback(State(sts): State<Arc<Sts>>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    let Some(login) = &sts.lasting.login else {
        return message(StatusCode::NOT_FOUND, "Not found", "no approval page here");
    };
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    let now = Instant::now();
    let mut response = match login.finish(&sts, cookie(&headers, LOGIN_COOKIE), &query, now).await {
        Ok((session, approval)) => {
            let mut response = redirect(&format!("/approve/{approval}"));
            append_cookie(&mut response, &set_cookie(SESSION_COOKIE, &session, SESSION_TTL));
            response
        }
        Err(error) => message(StatusCode::BAD_REQUEST, "Sign-in refused", &error.0),
    };
    // Spent either way.
    append_cookie(&mut response, &set_cookie(LOGIN_COOKIE, "", Duration::ZERO));
    response
}

/// The approval, when this approver may decide it now: in its group, not its requester,
/// still pending.
fn decidable(sts: &Sts, id: &str, token: &crate::VerifiedSubject, now: Instant) -> Result<View, Refused> {
    let view = lookup(sts, id, token, now)?;
    match view.status {
        "pending" => {}
        "expired" => return Err(expired()),
        status => return Err(already(status)),
    }
    crate::approval_http::not_the_requester(sts, &view, token)?;
    Ok(view)
}

fn not_found() -> Refused {
    Refused {
        status: StatusCode::NOT_FOUND,
        code: "not_found",
        description: "no approval has this id; it may have expired long ago".into(),
    }
}

fn refused(refusal: &Refused) -> Response {
    let title = match refusal.status {
        StatusCode::NOT_FOUND => "Unknown approval",
        StatusCode::GONE => "Approval expired",
        StatusCode::CONFLICT => "Already decided",
        StatusCode::FORBIDDEN => "Not yours to decide",
        _ => "Refused",
    };
    message(refusal.status, title, &refusal.description)
}

fn request_page(id: &str, view: &View, session: &Session) -> Markup {
    let request = &view.request;
    let binding = &request.binding;
    let intent = request.intent.as_ref().and_then(Value::as_object);
    let command = intent.and_then(|i| i.get("command")).map(shown);
    let claimed: Vec<(&String, String)> =
        intent.into_iter().flatten().filter(|(k, _)| *k != "command").map(|(k, v)| (k, shown(v))).collect();
    let approver = session.token.claims.get("email").and_then(Value::as_str).unwrap_or(&session.token.subject);
    html! {
        p { "Signed in as " code { (approver) } " (" (session.token.issuer) ")." }
        dl {
            dt { "Who asks" }
            dd { code { (binding.subject) } " of " code { (binding.issuer) } }
            dt { "On whose behalf" }
            dd {
                @match &binding.act {
                    Some(act) => { ol { @for (sub, iss) in actors(act) { li { code { (sub) } @if let Some(iss) = iss { " of " code { (iss) } } } } } }
                    None => { "the requester itself (no actor)" }
                }
            }
            dt { "Scopes" }
            dd { @for scope in &binding.scopes { code { (scope) } " " } }
            dt { "Audience" }
            dd { code { (binding.audience) } }
            dt { "Lifetime asked" }
            dd { @match binding.ttl { Some(ttl) => { (ttl) " s" } None => { "the exchange's default" } } }
            @for (key, value) in &claimed {
                dt { (key) " " span.claimed { "claimed" } }
                dd { code { (value) } }
            }
            dt { "Command " span.claimed { "claimed" } }
            dd {
                @match &command { Some(command) => { code { (command) } } None => { "none given" } }
                br;
                small { "What the client said it runs; nothing proves it." }
            }
            dt { "Held by policy" }
            dd { code { (request.policies.join(", ")) } " for group " code { (request.group) } }
            dt { "Expires" }
            dd { "in " (minutes(view.expires_in)) }
        }
        form method="post" action={ "/approve/" (id) } {
            input type="hidden" name="csrf" value=(session.csrf);
            input type="hidden" name="decision" value="approve";
            button type="submit" id="approve" { "Approve" }
        }
        form method="post" action={ "/approve/" (id) } {
            input type="hidden" name="csrf" value=(session.csrf);
            input type="hidden" name="decision" value="deny";
            label { "Reason " input type="text" name="reason" id="reason" maxlength="300" size="40"; }
            " "
            button type="submit" id="deny" { "Deny" }
        }
    }
}

/// The actor chain of an `act` claim, outermost first: each `sub` and its `iss`.
fn actors(act: &Value) -> Vec<(String, Option<String>)> {
    let mut chain = Vec::new();
    let mut current = Some(act);
    while let Some(act) = current.filter(|_| chain.len() < 16) {
        let text = |key: &str| act.get(key).and_then(Value::as_str).map(str::to_owned);
        chain.push((text("sub").unwrap_or_else(|| shown(act)), text("iss")));
        current = act.get("act");
    }
    chain
}

/// A claimed value as text: strings as they are, an argv joined by spaces, else JSON.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" ")
        }
        other => other.to_string(),
    }
}

fn minutes(left: Duration) -> String {
    let secs = left.as_secs();
    format!("{} min {} s", secs / 60, secs % 60)
}

fn message(status: StatusCode, title: &str, text: &str) -> Response {
    page(status, title, html! { p #message { (text) } })
}

fn page(status: StatusCode, title: &str, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width";
                title { (title) " · mayfly-sts" }
                style { (maud::PreEscaped(STYLE)) }
            }
            body { h1 { (title) } (body) }
        }
    };
    let mut response =
        (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], markup.into_string()).into_response();
    secure(&mut response);
    response
}

fn redirect(location: &str) -> Response {
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, location.to_owned())]).into_response();
    secure(&mut response);
    response
}

/// No caching, no referrer (URLs carry approval ids and codes), nothing but this page.
fn secure(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

fn append_cookie(response: &mut Response, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_values_are_escaped_and_the_chain_is_walked() {
        let html = html! { p { ("<script>alert(\"x\")</script>") } }.into_string();
        assert_eq!(html, "<p>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;</p>");
        let act = serde_json::json!({"sub": "agent:a", "iss": "https://sts", "act": {"sub": "agent:b"}});
        assert_eq!(
            actors(&act),
            vec![("agent:a".to_owned(), Some("https://sts".to_owned())), ("agent:b".to_owned(), None)]
        );
        assert_eq!(shown(&serde_json::json!(["git", "push", "origin"])), "git push origin");
    }
}
