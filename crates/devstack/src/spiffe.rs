//! A SPIFFE Workload API on a Unix socket, as a SPIRE agent serves it: gRPC over
//! cleartext HTTP/2, method `/SpiffeWorkloadAPI/FetchJWTSVID`, the messages of the
//! published `workload.proto` (declared below with prost's derives, field for field):
//!
//! ```text
//! message JWTSVIDRequest  { repeated string audience = 1; string spiffe_id = 2; }
//! message JWTSVIDResponse { repeated JWTSVID svids = 1; }
//! message JWTSVID         { string spiffe_id = 1; string svid = 2; string hint = 3; }
//! ```
//!
//! Like SPIRE it refuses a request without the metadata `workload.spiffe.io: true`
//! (`InvalidArgument`, "security header missing from request") and one without an
//! audience (`InvalidArgument`, "audience must be specified"). Its JWT-SVIDs are signed by
//! the development issuer (so an exchange trusting that issuer's JWKS verifies them) with
//! `sub` the SPIFFE ID, `aud` as asked and a five-minute life. [`SpiffeAgent::set_mode`]
//! makes it refuse (`PermissionDenied`, "no identity issued"), answer with no SVID, or
//! answer with bytes that are not a `JWTSVIDResponse`. Every request is recorded.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::json;

use crate::DevIssuer;

/// The SPIFFE ID of the workload it vouches for.
pub const SPIFFE_ID: &str = "spiffe://example.org/ci/runner";
/// A second SPIFFE ID the workload is entitled to, listed after the first.
pub const OTHER_SPIFFE_ID: &str = "spiffe://example.org/ci/deployer";

/// `JWTSVIDRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct JwtSvidRequest {
    /// The audiences asked for.
    #[prost(string, repeated, tag = "1")]
    pub(crate) audience: Vec<String>,
    /// The SPIFFE ID asked for, empty for all.
    #[prost(string, tag = "2")]
    pub(crate) spiffe_id: String,
}

/// `JWTSVIDResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct JwtSvidResponse {
    /// The SVIDs.
    #[prost(message, repeated, tag = "1")]
    pub(crate) svids: Vec<JwtSvid>,
}

/// `JWTSVID`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct JwtSvid {
    /// Its SPIFFE ID.
    #[prost(string, tag = "1")]
    pub(crate) spiffe_id: String,
    /// The JWT.
    #[prost(string, tag = "2")]
    pub(crate) svid: String,
    /// The operator's hint.
    #[prost(string, tag = "3")]
    pub(crate) hint: String,
}

/// How the agent answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentMode {
    /// SVIDs for both its SPIFFE IDs (or the one asked for).
    Serve,
    /// `PermissionDenied`: the workload has no registration entry.
    NoIdentity,
    /// A response with no SVID in it.
    Empty,
    /// `grpc-status: 0` with a message that is not protobuf.
    Garbage,
}

/// A request the agent received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadRequest {
    /// The `:path`.
    pub path: String,
    /// `workload.spiffe.io`, as sent.
    pub security_header: Option<String>,
    /// `content-type`, as sent.
    pub content_type: Option<String>,
    /// The request's audiences, when it decoded.
    pub audience: Vec<String>,
    /// The request's SPIFFE ID, when it decoded.
    pub spiffe_id: String,
}

/// A running stand-in SPIRE agent.
pub struct SpiffeAgent {
    socket: PathBuf,
    inner: Arc<Inner>,
}

struct Inner {
    issuer: DevIssuer,
    mode: Mutex<AgentMode>,
    requests: Mutex<Vec<WorkloadRequest>>,
}

impl SpiffeAgent {
    /// Starts the agent on a Unix socket at `socket`.
    pub fn start(runtime: &tokio::runtime::Runtime, issuer: &DevIssuer, socket: &Path) -> Result<Self, String> {
        let _guard = runtime.enter();
        let listener = tokio::net::UnixListener::bind(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
        let inner =
            Arc::new(Inner { issuer: issuer.clone(), mode: Mutex::new(AgentMode::Serve), requests: Mutex::default() });
        let serving = inner.clone();
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(connection(stream, serving.clone()));
            }
        });
        Ok(Self { socket: socket.to_owned(), inner })
    }

    /// What `SPIFFE_ENDPOINT_SOCKET` names: `unix:///path`.
    pub fn address(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<WorkloadRequest> {
        self.inner.requests.lock().expect("not poisoned").clone()
    }

    /// How it answers from now on.
    pub fn set_mode(&self, mode: AgentMode) {
        *self.inner.mode.lock().expect("not poisoned") = mode;
    }
}

async fn connection(stream: tokio::net::UnixStream, inner: Arc<Inner>) {
    let Ok(mut connection) = h2::server::handshake(stream).await else { return };
    while let Some(Ok((request, respond))) = connection.accept().await {
        tokio::spawn(call(request, respond, inner.clone()));
    }
}

/// A gRPC status code and message.
type Status = (u8, &'static str);

async fn call(request: http::Request<h2::RecvStream>, mut respond: h2::server::SendResponse<Bytes>, inner: Arc<Inner>) {
    let (parts, mut body) = request.into_parts();
    let mut data = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let decoded = data
        .get(5..)
        .filter(|_| data[0] == 0)
        .and_then(|message| <JwtSvidRequest as prost::Message>::decode(message).ok());
    let asked = decoded.clone().unwrap_or_default();
    inner.requests.lock().expect("not poisoned").push(WorkloadRequest {
        path: parts.uri.path().to_owned(),
        security_header: header("workload.spiffe.io"),
        content_type: header("content-type"),
        audience: asked.audience.clone(),
        spiffe_id: asked.spiffe_id.clone(),
    });
    let answer = answer(&inner, &parts, decoded);
    let _ = send(&mut respond, answer);
}

/// The message to send, or the status refusing the call.
fn answer(inner: &Inner, parts: &http::request::Parts, request: Option<JwtSvidRequest>) -> Result<Vec<u8>, Status> {
    // SPIRE checks the header before anything else, for every Workload API method.
    if parts.headers.get("workload.spiffe.io").map(http::HeaderValue::as_bytes) != Some(b"true") {
        return Err((3, "security header missing from request"));
    }
    if parts.uri.path() != "/SpiffeWorkloadAPI/FetchJWTSVID" {
        return Err((12, "unknown method"));
    }
    let request = request.ok_or((13, "grpc: error unmarshalling request"))?;
    if request.audience.is_empty() {
        return Err((3, "audience must be specified"));
    }
    let mode = *inner.mode.lock().expect("not poisoned");
    let ids = match mode {
        AgentMode::NoIdentity => return Err((7, "no identity issued")),
        AgentMode::Garbage => return Ok(b"<html>not a JWTSVIDResponse</html>".to_vec()),
        AgentMode::Empty => Vec::new(),
        AgentMode::Serve => [SPIFFE_ID, OTHER_SPIFFE_ID]
            .into_iter()
            .filter(|id| request.spiffe_id.is_empty() || request.spiffe_id == *id)
            .collect(),
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let audience = request.audience.first().cloned().unwrap_or_default();
    let svids = ids
        .into_iter()
        .map(|id| JwtSvid {
            spiffe_id: id.to_owned(),
            svid: inner.issuer.mint(&audience, &json!({"sub": id, "aud": request.audience, "exp": now + 300})),
            hint: String::new(),
        })
        .collect();
    Ok(prost::Message::encode_to_vec(&JwtSvidResponse { svids }))
}

/// A unary answer: headers, the framed message and `grpc-status: 0` trailers; or a
/// refusal as gRPC sends one, in the headers alone (trailers-only).
fn send(respond: &mut h2::server::SendResponse<Bytes>, answer: Result<Vec<u8>, Status>) -> Result<(), h2::Error> {
    let headers = http::Response::builder().status(200).header("content-type", "application/grpc");
    match answer {
        Err((code, message)) => {
            let response = headers
                .header("grpc-status", code.to_string())
                .header("grpc-message", message)
                .body(())
                .expect("valid headers");
            respond.send_response(response, true).map(drop)
        }
        Ok(message) => {
            let mut stream = respond.send_response(headers.body(()).expect("valid headers"), false)?;
            let mut framed = vec![0];
            framed.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
            framed.extend_from_slice(&message);
            stream.send_data(Bytes::from(framed), false)?;
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            stream.send_trailers(trailers)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prost_writes_the_bytes_mayfly_pins() {
        // The bytes mayfly's hand-written encoder is tested against, from the proto's own
        // field numbers and types.
        let request =
            JwtSvidRequest { audience: vec!["a".into(), "b".into()], spiffe_id: "spiffe://example.org/ci".into() };
        assert_eq!(prost::Message::encode_to_vec(&request), b"\x0a\x01a\x0a\x01b\x12\x17spiffe://example.org/ci");
        let response = JwtSvidResponse {
            svids: vec![JwtSvid { spiffe_id: "spiffe://x/y".into(), svid: "h.p.s".into(), hint: "internal".into() }],
        };
        assert_eq!(
            prost::Message::encode_to_vec(&response),
            b"\x0a\x1f\x0a\x0cspiffe://x/y\x12\x05h.p.s\x1a\x08internal"
        );
    }

    /// One call as a client sends it, with or without the security header: the answer's
    /// `grpc-status` and `grpc-message`.
    async fn call_without(socket: PathBuf, header: bool) -> (String, String) {
        let io = tokio::net::UnixStream::connect(socket).await.unwrap();
        let (client, connection) = h2::client::handshake(io).await.unwrap();
        tokio::spawn(connection);
        let mut client = client.ready().await.unwrap();
        let mut request = http::Request::post("http://localhost/SpiffeWorkloadAPI/FetchJWTSVID")
            .header("content-type", "application/grpc");
        if header {
            request = request.header("workload.spiffe.io", "true");
        }
        let (response, mut stream) = client.send_request(request.body(()).unwrap(), false).unwrap();
        let message =
            prost::Message::encode_to_vec(&JwtSvidRequest { audience: vec!["sts".into()], spiffe_id: String::new() });
        let mut framed = vec![0, 0, 0, 0, u8::try_from(message.len()).unwrap()];
        framed.extend_from_slice(&message);
        stream.send_data(Bytes::from(framed), true).unwrap();
        let (parts, mut body) = response.await.unwrap().into_parts();
        while body.data().await.is_some() {}
        let trailers = body.trailers().await.unwrap().unwrap_or_default();
        let get = |name: &str| {
            let value = trailers.get(name).or_else(|| parts.headers.get(name));
            value.and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
        };
        (get("grpc-status"), get("grpc-message"))
    }

    #[test]
    fn a_request_without_the_security_header_is_refused_as_spire_refuses_it() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let issuer = DevIssuer::start(&runtime, mayfly_sts::Algorithm::Es256, json!({}), 300).unwrap();
        let dir = tempfile_dir();
        let agent = SpiffeAgent::start(&runtime, &issuer, &dir.join("agent.sock")).unwrap();
        let refused = runtime.block_on(call_without(dir.join("agent.sock"), false));
        assert_eq!(refused, ("3".into(), "security header missing from request".into()));
        assert_eq!(runtime.block_on(call_without(dir.join("agent.sock"), true)).0, "0");
        let headers: Vec<Option<String>> = agent.requests().into_iter().map(|r| r.security_header).collect();
        assert_eq!(headers, [None, Some("true".into())]);
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mayfly-spiffe-{}", crate::random_hex(6)));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
