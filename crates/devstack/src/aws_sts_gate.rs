//! A gate in front of moto's STS: `AssumeRoleWithWebIdentity` reaches moto only with a web
//! identity token that verifies against the development issuer's key for the audience
//! `sts.amazonaws.com`. moto itself accepts any token, so without this gate a test could
//! not tell a real exchange from a forged one.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::Value;

use crate::DevIssuer;

/// A running gate.
pub struct AwsStsGate {
    /// `http://127.0.0.1:PORT/`, the STS endpoint clients use.
    pub url: String,
    /// Exchanges forwarded to moto.
    pub exchanges: Arc<AtomicUsize>,
}

struct Inner {
    moto: String,
    issuer: String,
    key: DecodingKey,
    algorithm: jsonwebtoken::Algorithm,
    client: reqwest::Client,
    exchanges: Arc<AtomicUsize>,
}

impl AwsStsGate {
    /// Starts the gate for the moto server at `moto_url`.
    pub fn start(runtime: &tokio::runtime::Runtime, issuer: &DevIssuer, moto_url: &str) -> Result<Self, String> {
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(issuer.jwk().clone()).map_err(|e| e.to_string())?;
        let algorithm =
            if issuer.jwk()["kty"] == "RSA" { jsonwebtoken::Algorithm::RS256 } else { jsonwebtoken::Algorithm::ES256 };
        let listener = crate::loopback_listener().map_err(|e| e.to_string())?;
        let url = format!("http://{}/", listener.local_addr().map_err(|e| e.to_string())?);
        let exchanges = Arc::new(AtomicUsize::new(0));
        let inner = Arc::new(Inner {
            moto: moto_url.to_owned(),
            issuer: issuer.issuer().to_owned(),
            key: DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?,
            algorithm,
            client: reqwest::Client::builder().no_proxy().build().map_err(|e| e.to_string())?,
            exchanges: exchanges.clone(),
        });
        let _guard = runtime.enter();
        let server = axum_server::from_tcp(listener).map_err(|e| e.to_string())?;
        runtime.spawn(server.serve(Router::new().fallback(handle).with_state(inner).into_make_service()));
        Ok(Self { url, exchanges })
    }
}

fn sts_error(code: &str, message: &str) -> Response {
    let body = format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>mayfly-dev</RequestId></ErrorResponse>"
    );
    (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

async fn handle(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let get = |key: &str| form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    if get("Action") != Some("AssumeRoleWithWebIdentity") {
        return sts_error("InvalidAction", "only AssumeRoleWithWebIdentity passes this gate");
    }
    let mut validation = Validation::new(inner.algorithm);
    validation.set_issuer(&[&inner.issuer]);
    validation.set_audience(&["sts.amazonaws.com"]);
    let token = get("WebIdentityToken").unwrap_or_default();
    if let Err(e) = jsonwebtoken::decode::<Value>(token, &inner.key, &validation) {
        return sts_error("InvalidIdentityToken", &format!("web identity token refused: {e}"));
    }
    inner.exchanges.fetch_add(1, Ordering::SeqCst);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-www-form-urlencoded")
        .to_owned();
    let forwarded = inner.client.post(&inner.moto).header(header::CONTENT_TYPE, content_type).body(body).send().await;
    match forwarded {
        Ok(response) => {
            let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let bytes = response.bytes().await.unwrap_or_default();
            (status, [(header::CONTENT_TYPE, "text/xml")], bytes).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, format!("moto unreachable: {e}")).into_response(),
    }
}
