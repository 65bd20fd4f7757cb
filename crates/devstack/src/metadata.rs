//! Cloud metadata servers on loopback plain HTTP, as their providers document them, each
//! answering with ID tokens the development issuer signs:
//!
//! - Google Compute Engine / GKE (cloud.google.com/compute/docs/instances/verifying-instance-identity):
//!   `GET /` answers `computeMetadata/` with `Metadata-Flavor: Google`, as Google's client
//!   libraries probe it; `GET /computeMetadata/v1/instance/service-accounts/default/identity?audience=AUD&format=full`
//!   with `Metadata-Flavor: Google` answers the raw JWT (`Content-Type: text/html`), every
//!   answer carrying `Metadata-Flavor: Google`; without the request header, 403
//!   `Missing Metadata-Flavor:Google header.`; without an audience, 400.
//! - Azure Instance Metadata Service, managed identity
//!   (learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token):
//!   `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=AUD` with
//!   `Metadata: true` answers `{"access_token", "client_id", "expires_in", "expires_on",
//!   "ext_expires_in", "not_before", "resource", "token_type"}` (numbers as strings, as IMDS
//!   sends them); without the header, 400 `{"error": "invalid_request",
//!   "error_description": "Required metadata header not specified"}`.
//!
//! Each request is recorded; [`MetadataServer::set_flavor`] can make the Google side
//! drop its `Metadata-Flavor` answer header, as something that is not a metadata server
//! would.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::DevIssuer;

/// The path of GCE's identity endpoint.
pub const GCE_IDENTITY_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/identity";
/// The path of Azure IMDS's managed identity token endpoint.
pub const AZURE_IMDS_TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
/// The `azp` of the tokens the GCE side mints (the service account's unique id); their
/// `sub` is the issuer's workload subject, so the exchange's trust rules apply unchanged.
pub const GCE_SUBJECT: &str = "112233445566778899001";
/// The `oid` of the tokens the Azure side mints (the managed identity's object id).
pub const AZURE_IMDS_SUBJECT: &str = "5f3ff1c2-0000-4000-8000-00000000c0de";

/// A request one of the metadata servers received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataRequest {
    /// The path.
    pub path: String,
    /// The query, as sent.
    pub query: String,
    /// `Metadata-Flavor` (GCE) or `Metadata` (Azure), as sent.
    pub marker: Option<String>,
}

/// A running pair of metadata servers (one listener: the paths do not overlap).
pub struct MetadataServer {
    /// `127.0.0.1:PORT`, what `GCE_METADATA_HOST` names.
    pub host: String,
    inner: Arc<Inner>,
}

struct Inner {
    issuer: DevIssuer,
    flavor: AtomicBool,
    requests: Mutex<Vec<MetadataRequest>>,
}

impl MetadataServer {
    /// Starts both servers on one loopback listener.
    pub fn start(runtime: &tokio::runtime::Runtime, issuer: &DevIssuer) -> Result<Self, String> {
        let listener = crate::loopback_listener().map_err(|e| e.to_string())?;
        let host = listener.local_addr().map_err(|e| e.to_string())?.to_string();
        let inner =
            Arc::new(Inner { issuer: issuer.clone(), flavor: AtomicBool::new(true), requests: Mutex::default() });
        let app = Router::new()
            .route("/", get(gce_root))
            .route(GCE_IDENTITY_PATH, get(gce_identity))
            .route(AZURE_IMDS_TOKEN_PATH, get(azure_token))
            .with_state(inner.clone());
        let _guard = runtime.enter();
        let server = axum_server::from_tcp(listener).map_err(|e| e.to_string())?;
        runtime.spawn(server.serve(app.into_make_service()));
        Ok(Self { host, inner })
    }

    /// `http://127.0.0.1:PORT`, what `AZURE_POD_IDENTITY_AUTHORITY_HOST` names.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.host)
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<MetadataRequest> {
        self.inner.requests.lock().expect("not poisoned").clone()
    }

    /// Whether the Google side's answers carry `Metadata-Flavor: Google` from now on.
    pub fn set_flavor(&self, on: bool) {
        self.inner.flavor.store(on, Ordering::SeqCst);
    }
}

impl Inner {
    fn record(&self, uri: &Uri, headers: &HeaderMap, marker: &str) -> Option<String> {
        let marker = headers.get(marker).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let request = MetadataRequest {
            path: uri.path().to_owned(),
            query: uri.query().unwrap_or_default().to_owned(),
            marker: marker.clone(),
        };
        self.requests.lock().expect("not poisoned").push(request);
        marker
    }

    /// A Google answer, with `Metadata-Flavor: Google` unless told otherwise.
    fn google(&self, status: StatusCode, body: String) -> Response {
        let mut response = (status, [("content-type", "text/html")], body).into_response();
        if self.flavor.load(Ordering::SeqCst) {
            response.headers_mut().insert("metadata-flavor", HeaderValue::from_static("Google"));
        }
        response
    }
}

/// One query parameter, decoded.
fn param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into())
}

async fn gce_root(State(inner): State<Arc<Inner>>, uri: Uri, headers: HeaderMap) -> Response {
    inner.record(&uri, &headers, "metadata-flavor");
    inner.google(StatusCode::OK, "computeMetadata/\n".into())
}

async fn gce_identity(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if inner.record(&uri, &headers, "metadata-flavor").as_deref() != Some("Google") {
        return inner.google(StatusCode::FORBIDDEN, "Missing Metadata-Flavor:Google header.\n".into());
    }
    let Some(audience) = param(query.as_deref(), "audience").filter(|a| !a.is_empty()) else {
        return inner.google(StatusCode::BAD_REQUEST, "non-empty audience parameter required\n".into());
    };
    let mut claims = json!({
        "azp": GCE_SUBJECT,
        "email": "builder@project-1.iam.gserviceaccount.com",
        "email_verified": true,
    });
    if param(query.as_deref(), "format").as_deref() == Some("full") {
        claims["google"] = json!({"compute_engine": {
            "project_id": "project-1",
            "project_number": 123456789012_u64,
            "zone": "europe-west1-b",
            "instance_id": "4455667788990011223",
            "instance_name": "builder-1",
            "instance_creation_timestamp": 1_700_000_000,
        }});
    }
    // The raw JWT, no trailing newline, as the metadata server sends it.
    inner.google(StatusCode::OK, inner.issuer.mint(&audience, &claims))
}

async fn azure_token(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let refuse = |description: &str| {
        (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_request", "error_description": description})))
            .into_response()
    };
    if inner.record(&uri, &headers, "metadata").as_deref() != Some("true") {
        return refuse("Required metadata header not specified");
    }
    if param(query.as_deref(), "api-version").is_none() {
        return refuse("Required query variable 'api-version' is missing");
    }
    let Some(resource) = param(query.as_deref(), "resource").filter(|r| !r.is_empty()) else {
        return refuse("Required query variable 'resource' is missing");
    };
    let client_id =
        param(query.as_deref(), "client_id").unwrap_or_else(|| "2d5c0ad1-0000-4000-8000-0000000000aa".into());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let token = inner.issuer.mint(&resource, &json!({"oid": AZURE_IMDS_SUBJECT, "appid": client_id}));
    axum::Json(json!({
        "access_token": token,
        "client_id": client_id,
        "expires_in": "86399",
        "expires_on": (now + 86399).to_string(),
        "ext_expires_in": "86399",
        "not_before": now.to_string(),
        "resource": resource,
        "token_type": "Bearer",
    }))
    .into_response()
}
