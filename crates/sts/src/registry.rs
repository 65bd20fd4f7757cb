//! The registry token endpoint of the distribution token protocol, so an OCI registry can
//! trust this exchange directly.
//!
//! A client presents a token this exchange minted (Basic password on `GET`, or
//! `grant_type=password|refresh_token` on `POST`) and asks for
//! `repository:NAME:pull,push`. It gets a short registry JWT whose `access` is what it
//! asked for, cut down to what its token's scopes allow: `oci:<service>/<pattern>:read`
//! pulls, `:write` pulls and pushes, for repositories matching the pattern. The JWT carries
//! the signer's certificate in `x5c`, which the registry pins (`rootcertbundle`). A revoked
//! token gets nothing.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use jsonwebtoken::Validation;
use serde_json::{Value, json};

use crate::Sts;
use crate::audit::{Line, now_rfc3339};
use mayfly_core::pattern::{Kind, matches};

/// Longest life of a registry token.
const REGISTRY_TOKEN_SECS: i64 = 300;

/// `GET /registry/cert.pem`: the certificates registries pin, one per published key.
pub(crate) async fn certificate(State(sts): State<Arc<Sts>>) -> Response {
    match sts.keys.certificates_pem() {
        pem if pem.is_empty() => StatusCode::NOT_FOUND.into_response(),
        pem => ([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response(),
    }
}

fn unauthorized(message: &str) -> Response {
    let body = json!({"errors": [{"code": "UNAUTHORIZED", "message": message}]});
    let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"mayfly-sts\""));
    response
}

/// `GET` or `POST /registry/token`.
pub(crate) async fn token(
    State(sts): State<Arc<Sts>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pairs: Vec<(String, String)> = if method == Method::POST {
        url::form_urlencoded::parse(&body).into_owned().collect()
    } else {
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect()
    };
    let param = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let Some(service) = param("service") else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"errors": [{"code": "INVALID_REQUEST", "message": "`service` is required"}]})),
        )
            .into_response();
    };
    let presented = match (method == Method::POST, param("grant_type")) {
        (true, Some("password")) => param("password").map(str::to_owned),
        (true, Some("refresh_token")) => param("refresh_token").map(str::to_owned),
        (true, _) => None,
        (false, _) => basic_password(&headers),
    };
    let Some(presented) = presented else { return unauthorized("a token minted by this exchange is required") };
    let mut validation = Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_issuer(&[&sts.config.issuer]);
    validation.set_audience(&[service]);
    let claims = match sts.keys.decode::<Value>(&presented, validation) {
        Ok(data) => data.claims,
        Err(_) => {
            sts.lasting
                .audit
                .record(&Line {
                    time: now_rfc3339(),
                    outcome: "denied",
                    reason: Some("registry: token not minted here for this service"),
                    audience: Some(service),
                    ..Line::default()
                })
                .await;
            return unauthorized("token not minted by this exchange for this registry");
        }
    };
    // A session token names an agent and grants nothing; the tokens derived from it do.
    if claims["scope"].as_str() == Some(crate::delegation::SESSION_SCOPE) {
        return unauthorized("a session token grants no registry access");
    }
    let empty = serde_json::Map::new();
    match crate::own_tokens::revoked_lineage(&sts, claims.as_object().unwrap_or(&empty)).await {
        Ok(false) => {}
        Ok(true) => {
            sts.lasting
                .audit
                .record(&Line {
                    time: now_rfc3339(),
                    outcome: "denied",
                    reason: Some("registry: token has been revoked"),
                    subject: claims["sub"].as_str(),
                    audience: Some(service),
                    jti: claims["jti"].as_str(),
                    sid: claims["sid"].as_str(),
                    ..Line::default()
                })
                .await;
            return unauthorized("token has been revoked");
        }
        Err(_) => {
            let body = json!({"errors": [{"code": "UNAVAILABLE", "message": "cannot check revocation"}]});
            return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
        }
    }
    let granted_scopes = claims["scope"].as_str().unwrap_or("");
    let asked = pairs.iter().filter(|(k, _)| k == "scope").flat_map(|(_, v)| v.split_whitespace());
    let access: Vec<Value> = asked.filter_map(|scope| grant(scope, service, granted_scopes)).collect();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let expires = claims["exp"].as_i64().unwrap_or(now).min(now + REGISTRY_TOKEN_SECS);
    let subject = claims["sub"].as_str().unwrap_or("");
    let jti = crate::server::random_id();
    // `parent_jti` ties the registry token to the exchange token it came from, and `sid`
    // to the session that one came through, so revoking either makes this one inactive at
    // `/introspect` too.
    let mut registry_claims = json!({
        "iss": sts.config.issuer, "sub": subject, "aud": service, "iat": now, "nbf": now - 5, "exp": expires,
        "jti": jti, "parent_jti": claims["jti"], "access": access,
    });
    if let Some(sid) = claims["sid"].as_str() {
        registry_claims["sid"] = Value::from(sid);
    }
    let Ok(token) = sts.keys.active().sign(Some("JWT"), &registry_claims) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let summary: Vec<String> = access
        .iter()
        .map(|a| {
            format!(
                "repository:{}:{}",
                a["name"].as_str().unwrap_or(""),
                a["actions"]
                    .as_array()
                    .map(|x| x.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
                    .unwrap_or_default()
            )
        })
        .collect();
    let written = sts.lasting.audit.write(&Line {
        time: now_rfc3339(),
        outcome: "issued",
        subject: Some(subject),
        audience: Some(service),
        scope: Some(summary.join(" ")),
        ttl: u64::try_from(expires - now).ok(),
        rule: Some("registry token"),
        jti: Some(&jti),
        act: claims.get("act"),
        sid: claims["sid"].as_str(),
        fingerprint: Some(mayfly_core::Fingerprint::of(&token).to_string()),
        ..Line::default()
    });
    // A token whose audit line could not be written is not answered.
    if let Err(e) = written.await {
        crate::log::error(&format!("cannot write the audit log: {e}"));
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let issued_at = now_rfc3339();
    let body = json!({"token": token, "access_token": token, "token_type": "Bearer", "expires_in": expires - now, "issued_at": issued_at});
    let mut response = axum::Json(body).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn basic_password(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(value.trim()).ok()?;
    let (_user, password) =
        String::from_utf8(decoded).ok()?.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned()))?;
    Some(password)
}

/// `repository:NAME:actions` cut down to what the token's scopes allow, or `None`. NAME
/// must be a repository name of the distribution grammar; in a scope's pattern `*` may
/// cross `/` but never reaches a tag or digest.
fn grant(asked: &str, service: &str, granted_scopes: &str) -> Option<Value> {
    let (kind_name, actions) = asked.rsplit_once(':')?;
    let name = kind_name.strip_prefix("repository:")?;
    if !mayfly_core::scope::is_oci_repository_name(name) {
        return None;
    }
    let (mut pull, mut push) = (false, false);
    for scope in granted_scopes.split_whitespace() {
        let Some((target, operation)) = scope.strip_prefix("oci:").and_then(|s| s.rsplit_once(':')) else { continue };
        let Some((host, pattern)) = target.split_once('/') else { continue };
        if host != service || !matches(Kind::Repository, pattern, name) {
            continue;
        }
        pull |= matches!(operation, "read" | "write");
        push |= operation == "write";
    }
    let allowed: Vec<&str> = actions.split(',').filter(|a| (*a == "pull" && pull) || (*a == "push" && push)).collect();
    (!allowed.is_empty()).then(|| json!({"type": "repository", "name": name, "actions": allowed}))
}

#[cfg(test)]
mod tests {
    use super::grant;
    use serde_json::json;

    #[test]
    fn access_is_what_was_asked_cut_to_the_token_scopes() {
        let read = "oci:r.example:5000/*:read";
        let write_team = "oci:r.example:5000/team/*:write";
        assert_eq!(
            grant("repository:team/app:pull,push", "r.example:5000", read),
            Some(json!({"type": "repository", "name": "team/app", "actions": ["pull"]}))
        );
        assert_eq!(
            grant("repository:team/app:pull,push", "r.example:5000", write_team).unwrap()["actions"],
            json!(["pull", "push"])
        );
        assert_eq!(grant("repository:other/app:push", "r.example:5000", write_team), None);
        assert_eq!(grant("repository:team/app:pull", "another:5000", read), None);
        assert_eq!(grant("registry:catalog:*", "r.example:5000", read), None);
    }

    #[test]
    fn names_outside_the_distribution_grammar_get_no_access() {
        let read = "oci:r.example:5000/*:read";
        for bad in ["", "Team/app", "team//app", "/app", "app/", "a..b", "a___b", "-a", "a-", "a b", "a:b", "a@b", "é"]
        {
            assert_eq!(grant(&format!("repository:{bad}:pull"), "r.example:5000", read), None, "{bad:?}");
        }
        assert_eq!(grant(&format!("repository:{}:pull", "a".repeat(256)), "r.example:5000", read), None);
    }
}
