//! The SPIFFE Workload API's `FetchJWTSVID`, written by hand: one unary gRPC call over
//! HTTP/2 (`h2`, already linked for the HTTP client) on a Unix or loopback TCP socket,
//! with the three protobuf messages it needs encoded and decoded here. A gRPC stack
//! (tonic, prost) would have doubled what every helper links for one call.
//!
//! The messages, from the SPIFFE Workload API's `workload.proto` (service
//! `SpiffeWorkloadAPI`, no package, so the method is `/SpiffeWorkloadAPI/FetchJWTSVID`):
//!
//! ```text
//! message JWTSVIDRequest  { repeated string audience = 1; string spiffe_id = 2; }
//! message JWTSVIDResponse { repeated JWTSVID svids = 1; }
//! message JWTSVID         { string spiffe_id = 1; string svid = 2; string hint = 3; }
//! ```
//!
//! The SPIFFE Workload Endpoint spec: every request carries the metadata
//! `workload.spiffe.io: true` (servers refuse a request without it with
//! `InvalidArgument`), no TLS, and the endpoint is `unix:///path`, `unix:/path` or
//! `tcp://IP:PORT`.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

/// The method's path.
const METHOD: &str = "/SpiffeWorkloadAPI/FetchJWTSVID";
/// The SSRF guard every request carries (SPIFFE Workload Endpoint, section 3).
pub(crate) const SECURITY_HEADER: (&str, &str) = ("workload.spiffe.io", "true");
/// The largest answer taken: JWT-SVIDs are a few kilobytes each.
const MAX_ANSWER: usize = 256 * 1024;
/// The longest a call may take, connecting included.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where the Workload API listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// A Unix domain socket.
    Unix(PathBuf),
    /// A TCP socket on a loopback or link-local address: the answer is a bearer token in
    /// plain text, so it never crosses a network.
    Tcp(std::net::SocketAddr),
}

impl Endpoint {
    /// An address as `SPIFFE_ENDPOINT_SOCKET` writes it, or why it is not one.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        const FORMS: &str = "`unix:///path`, `unix:/path` or `tcp://IP:PORT`";
        let url = url::Url::parse(text).map_err(|_| format!("not an address: write {FORMS}"))?;
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.fragment().is_some() {
            return Err(format!("only a scheme and a path or address may be set: write {FORMS}"));
        }
        match url.scheme() {
            "unix" => {
                if url.host_str().is_some_and(|h| !h.is_empty()) || url.port().is_some() {
                    return Err(format!("a `unix` address has no host: write {FORMS}"));
                }
                match url.to_file_path() {
                    Ok(path) if url.path() != "/" => Ok(Self::Unix(path)),
                    _ => Err(format!("a `unix` address needs an absolute socket path: write {FORMS}")),
                }
            }
            "tcp" => {
                let ip = url.host_str().map(|h| h.trim_start_matches('[').trim_end_matches(']'));
                let ip: std::net::IpAddr = ip
                    .and_then(|h| h.parse().ok())
                    .ok_or_else(|| format!("a `tcp` address needs an IP address, not a name: write {FORMS}"))?;
                let port = url.port().ok_or_else(|| format!("a `tcp` address needs a port: write {FORMS}"))?;
                if !matches!(url.path(), "" | "/") {
                    return Err(format!("a `tcp` address has no path: write {FORMS}"));
                }
                if !crate::http::is_metadata_ip(ip) {
                    return Err(format!(
                        "`{ip}` is not a loopback or link-local address: the JWT-SVID would cross a network in plain text"
                    ));
                }
                Ok(Self::Tcp((ip, port).into()))
            }
            _ => Err(format!("the scheme is not `unix` or `tcp`: write {FORMS}")),
        }
    }
}

/// A JWT-SVID the Workload API gave.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct JwtSvid {
    /// Its SPIFFE ID.
    pub(crate) spiffe_id: String,
    /// The token, JWS compact serialization.
    pub(crate) svid: String,
    /// The operator's hint on its use.
    pub(crate) hint: String,
}

impl std::fmt::Debug for JwtSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSvid").field("spiffe_id", &self.spiffe_id).field("hint", &self.hint).finish_non_exhaustive()
    }
}

/// Why a call gave no SVIDs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CallError {
    /// The endpoint could not be reached or the call broke off.
    Unreachable(String),
    /// The server answered with a gRPC error: the status code's name and its message.
    Refused(String),
    /// The server answered with something that is not a `JWTSVIDResponse`.
    Garbage(String),
}

/// The `JWTSVIDRequest` message.
pub(crate) fn encode_request(audience: &[&str], spiffe_id: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    for audience in audience {
        put_string(&mut out, 1, audience);
    }
    if let Some(id) = spiffe_id.filter(|id| !id.is_empty()) {
        put_string(&mut out, 2, id);
    }
    out
}

/// A length-delimited field.
fn put_string(out: &mut Vec<u8>, field: u64, value: &str) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value.as_bytes());
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A protobuf message read field by field; unknown fields are skipped, as proto3 asks.
struct Fields<'a>(&'a [u8]);

/// One field: its number and, for length-delimited fields, its bytes.
enum Field<'a> {
    Bytes(u64, &'a [u8]),
    Other,
}

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.0.split_first().ok_or("a varint runs past the end")?;
            self.0 = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a varint is longer than ten bytes".into())
    }

    fn take(&mut self, len: u64) -> Result<&'a [u8], String> {
        let len = usize::try_from(len).ok().filter(|l| *l <= self.0.len()).ok_or("a field runs past the end")?;
        let (field, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(field)
    }

    fn next_field(&mut self) -> Option<Result<Field<'a>, String>> {
        if self.0.is_empty() {
            return None;
        }
        let field = self.varint().and_then(|key| match key & 7 {
            0 => self.varint().map(|_| Field::Other),
            1 => self.take(8).map(|_| Field::Other),
            2 => self.varint().and_then(|len| self.take(len)).map(|bytes| Field::Bytes(key >> 3, bytes)),
            5 => self.take(4).map(|_| Field::Other),
            wire => Err(format!("wire type {wire} is not one proto3 writes")),
        });
        Some(field)
    }
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("`{what}` is not UTF-8"))
}

/// The SVIDs of a `JWTSVIDResponse` message.
pub(crate) fn decode_response(message: &[u8]) -> Result<Vec<JwtSvid>, String> {
    let mut svids = Vec::new();
    let mut fields = Fields(message);
    while let Some(field) = fields.next_field() {
        if let Field::Bytes(1, svid) = field? {
            svids.push(decode_svid(svid)?);
        }
    }
    Ok(svids)
}

fn decode_svid(message: &[u8]) -> Result<JwtSvid, String> {
    let mut svid = JwtSvid { spiffe_id: String::new(), svid: String::new(), hint: String::new() };
    let mut fields = Fields(message);
    while let Some(field) = fields.next_field() {
        match field? {
            Field::Bytes(1, bytes) => svid.spiffe_id = utf8(bytes, "spiffe_id")?,
            Field::Bytes(2, bytes) => svid.svid = utf8(bytes, "svid")?,
            Field::Bytes(3, bytes) => svid.hint = utf8(bytes, "hint")?,
            _ => {}
        }
    }
    Ok(svid)
}

/// A message in gRPC's length-prefixed framing, uncompressed.
pub(crate) fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 5);
    out.push(0);
    out.extend_from_slice(&u32::try_from(message.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// The gRPC status codes' names, by number.
const CODES: [&str; 17] = [
    "OK",
    "Cancelled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// What came back from a call, before it is read as gRPC.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: Vec<u8>,
    pub(crate) trailers: Option<http::HeaderMap>,
}

/// The one message of a unary call's answer, or the server's refusal.
pub(crate) fn read_answer(answer: &Answer) -> Result<Vec<JwtSvid>, CallError> {
    let header = |name: &str| {
        let from = |map: &http::HeaderMap| map.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        answer.trailers.as_ref().and_then(from).or_else(|| from(&answer.headers))
    };
    if answer.status != 200 {
        return Err(CallError::Garbage(format!("HTTP status {}, not a gRPC answer", answer.status)));
    }
    let content_type = answer.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !content_type.starts_with("application/grpc") {
        return Err(CallError::Garbage("no `content-type: application/grpc`: not a gRPC server".into()));
    }
    let code = header("grpc-status").ok_or_else(|| CallError::Garbage("no `grpc-status`".into()))?;
    let code: usize =
        code.trim().parse().map_err(|_| CallError::Garbage("a `grpc-status` that is not a number".into()))?;
    if code != 0 {
        let name = CODES.get(code).map_or_else(|| format!("status {code}"), |n| (*n).to_owned());
        let message = header("grpc-message").map(|m| percent_decoded(&m)).filter(|m| !m.is_empty());
        return Err(CallError::Refused(match message {
            Some(message) => format!("{name} ({message})"),
            None => name,
        }));
    }
    let body = &answer.body;
    let Some((&compressed, rest)) = body.split_first() else {
        return Err(CallError::Garbage("no message".into()));
    };
    if compressed != 0 {
        return Err(CallError::Garbage("a compressed message, though none was offered".into()));
    }
    let len = rest.get(..4).map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize);
    match len {
        Some(len) if len == rest.len() - 4 => decode_response(&rest[4..]).map_err(CallError::Garbage),
        _ => Err(CallError::Garbage("the message's length prefix does not match its body".into())),
    }
}

/// `grpc-message` is percent-encoded; what is shown of it is one short printable line.
fn percent_decoded(text: &str) -> String {
    let decoded = url::form_urlencoded::parse(format!("m={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    crate::redact::sanitize_for_terminal(crate::redact::clip(&decoded, 200))
}

/// Calls `FetchJWTSVID` at `endpoint` with a framed request.
pub(crate) fn call(endpoint: &Endpoint, request: Vec<u8>) -> Result<Answer, CallError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| CallError::Unreachable(format!("cannot start: {e}")))?;
    let within = |e: tokio::time::error::Elapsed| CallError::Unreachable(format!("no answer within {TIMEOUT:?} ({e})"));
    runtime.block_on(async {
        let call = async {
            // One socket type for both transports, so HTTP/2 is compiled in once.
            let (io, authority): (Box<dyn Socket>, String) = match endpoint {
                Endpoint::Unix(path) => (
                    Box::new(tokio::net::UnixStream::connect(path).await.map_err(|e| unreachable(&e))?),
                    "localhost".into(),
                ),
                Endpoint::Tcp(address) => (
                    Box::new(tokio::net::TcpStream::connect(address).await.map_err(|e| unreachable(&e))?),
                    address.to_string(),
                ),
            };
            exchange(io, &authority, request).await
        };
        tokio::time::timeout(TIMEOUT, call).await.map_err(within)?
    })
}

fn unreachable(e: &std::io::Error) -> CallError {
    CallError::Unreachable(e.to_string())
}

/// A connected socket, Unix or TCP.
trait Socket: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Socket for T {}

/// One unary call over a connected socket.
async fn exchange(io: Box<dyn Socket>, authority: &str, message: Vec<u8>) -> Result<Answer, CallError> {
    let broke = |e: h2::Error| CallError::Unreachable(format!("the call broke off: {e}"));
    let (client, connection) = h2::client::Builder::new()
        .max_header_list_size(16 * 1024)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| CallError::Garbage(format!("no HTTP/2 handshake: {e}")))?;
    let driver = tokio::spawn(connection);
    let mut client = client.ready().await.map_err(broke)?;
    let request = http::Request::post(format!("http://{authority}{METHOD}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header(SECURITY_HEADER.0, SECURITY_HEADER.1)
        .header("user-agent", concat!("mayfly/", env!("CARGO_PKG_VERSION")))
        .body(())
        .map_err(|e| CallError::Unreachable(e.to_string()))?;
    let (response, mut stream) = client.send_request(request, false).map_err(broke)?;
    stream.send_data(Bytes::from(message), true).map_err(broke)?;
    let (parts, mut body) = response.await.map_err(broke)?.into_parts();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(broke)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if data.len() + chunk.len() > MAX_ANSWER {
            return Err(CallError::Garbage(format!("an answer larger than {MAX_ANSWER} bytes")));
        }
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.map_err(broke)?;
    driver.abort();
    Ok(Answer { status: parts.status.as_u16(), headers: parts.headers, body: data, trailers })
}

#[cfg(test)]
#[path = "workload_api_tests.rs"]
mod tests;
