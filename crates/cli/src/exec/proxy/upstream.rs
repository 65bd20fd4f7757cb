//! The upstream side: connections to routed hosts (TLS verified against the system roots
//! and the route's `ca_file`), reused per client connection, and plain-http passthrough.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};

use super::{Body, State, host_name, strip_hop_by_hop, text, with_port};

/// Upstream connections of one client connection, by route: a client's requests come
/// one after another, so each is reused once its previous answer was read.
pub(super) type Pool = Arc<tokio::sync::Mutex<HashMap<String, SendRequest<Watched<Body>>>>>;

/// Why a request got no answer.
pub(super) struct Unanswered {
    pub reason: String,
    /// The upstream closed the connection before answering (what an upstream that refuses
    /// a token early can do); not the client's own body failing, nor no connection at all.
    pub closed: bool,
}

impl From<String> for Unanswered {
    fn from(reason: String) -> Self {
        Self { reason, closed: false }
    }
}

impl From<Unanswered> for String {
    fn from(unanswered: Unanswered) -> Self {
        unanswered.reason
    }
}

/// A request that got no answer: `closed` only when the upstream closed before answering,
/// found either way: hyper read the end of the connection, or the connection was closed or
/// reset while the body was still going (an upstream that answers early and closes can
/// cause either, by a race). A reset after the whole body went (`body_sent`) is not the
/// upstream refusing it early: a balancer's idle reset, say.
fn unanswered(e: &hyper::Error, host: &str, body_sent: bool) -> Unanswered {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    let gone = std::error::Error::source(e)
        .and_then(|cause| cause.downcast_ref::<std::io::Error>())
        .is_some_and(|io| matches!(io.kind(), BrokenPipe | ConnectionReset | ConnectionAborted));
    Unanswered {
        reason: format!("`{host}`: {e}"),
        closed: (e.is_incomplete_message() || gone && !body_sent) && !e.is_user() && !e.is_body_write_aborted(),
    }
}

/// A request body that records when all of it has gone: its end was polled, or as many
/// bytes as it stated were taken.
pub(super) struct Watched<B> {
    inner: B,
    length: Option<u64>,
    taken: u64,
    done: Arc<AtomicBool>,
}

impl<B: hyper::body::Body> Watched<B> {
    fn new(inner: B, done: Arc<AtomicBool>) -> Self {
        Self { length: inner.size_hint().exact(), inner, taken: 0, done }
    }
}

impl<B: hyper::body::Body<Data = bytes::Bytes> + Unpin> hyper::body::Body for Watched<B> {
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.done.store(true, Ordering::Relaxed),
            Poll::Ready(Some(Ok(frame))) => {
                self.taken += frame.data_ref().map_or(0, |data| data.len() as u64);
                if self.length.is_some_and(|length| self.taken >= length) {
                    self.done.store(true, Ordering::Relaxed);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.done.store(true, Ordering::Relaxed);
        }
        end
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Sends `req`, and says whether its body had all gone when no answer came.
async fn send_watched<B>(
    sender: &mut SendRequest<Watched<B>>,
    req: Request<B>,
    host: &str,
) -> Result<Response<Incoming>, Unanswered>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let done = Arc::new(AtomicBool::new(false));
    let req = req.map(|body| Watched::new(body, done.clone()));
    sender.send_request(req).await.map_err(|e| unanswered(&e, host, done.load(Ordering::Relaxed)))
}

/// Sends a request to its upstream over TLS (or plain http to loopback) and streams the
/// answer back.
pub(super) async fn send(
    mut req: Request<Body>,
    state: &Arc<State>,
    host: &str,
    protocol: &str,
    route: Option<&mayfly_core::Route>,
    pool: &Pool,
) -> Result<Response<Body>, Unanswered> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    *req.uri_mut() = path.parse().map_err(|_| "invalid request path".to_owned())?;
    pin_host(&mut req, host)?;
    strip_hop_by_hop(&mut req);
    let key = route.map(|r| r.name.clone()).unwrap_or_default();
    let mut pool = pool.lock().await;
    let mut reused = pool.remove(&key);
    if let Some(sender) = &mut reused
        && sender.ready().await.is_err()
    {
        reused = None;
    }
    let mut sender = match reused {
        Some(sender) => sender,
        None => connect(state, host, protocol, route).await?,
    };
    let response = send_watched(&mut sender, req, host).await?;
    pool.insert(key, sender);
    Ok(response.map(BodyExt::boxed))
}

/// The upstream `Host` is always the host the request was routed by (the CONNECT's or the
/// absolute URI's), whatever the client wrote: a client tunnelled to one host cannot have
/// its credential sent with another host's name.
fn pin_host<B>(req: &mut Request<B>, host: &str) -> Result<(), String> {
    let value = header::HeaderValue::from_str(host).map_err(|_| format!("invalid host `{host}`"))?;
    req.headers_mut().remove(header::HOST);
    req.headers_mut().insert(header::HOST, value);
    Ok(())
}

/// A new upstream connection for a host.
async fn connect(
    state: &Arc<State>,
    host: &str,
    protocol: &str,
    route: Option<&mayfly_core::Route>,
) -> Result<SendRequest<Watched<Body>>, String> {
    let address = with_port(host, if protocol == "https" { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect(&address).await.map_err(|e| format!("cannot reach `{host}`: {e}"))?;
    if protocol == "http" {
        return handshake(TokioIo::new(tcp), host).await;
    }
    // A request no route covers, on a host a route names, is still that host's: its
    // upstream is verified as the route's (`ca_file` included), only without a token.
    let config = state.upstream_config(route.or_else(|| state.host_route(protocol, host)))?;
    let name = host_name(host);
    let server = ServerName::try_from(name.clone()).map_err(|_| format!("invalid server name `{name}`"))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(server, tcp)
        .await
        .map_err(|e| format!("TLS with `{host}` failed: {e}"))?;
    handshake(TokioIo::new(tls), host).await
}

async fn handshake<T, B>(io: TokioIo<T>, host: &str) -> Result<SendRequest<B>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("`{host}`: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// The most of a token service's answer that is read.
const MAX_TOKEN_ANSWER: usize = 1 << 20;

/// A `GET` of `url` (an OCI registry's token realm) with this `Authorization`, over TLS
/// verified as the route's upstream is; the status and the body.
pub(super) async fn fetch(
    state: &Arc<State>,
    url: &url::Url,
    route: &mayfly_core::Route,
    authorization: &str,
) -> Result<(StatusCode, bytes::Bytes), String> {
    let host = url.host_str().ok_or_else(|| "the token realm names no host".to_owned())?;
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let mut sender = connect(state, &authority, "https", Some(route)).await?;
    let target = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    let mut value =
        header::HeaderValue::from_str(authorization).map_err(|_| "the token cannot go into a header".to_owned())?;
    value.set_sensitive(true);
    let req = Request::get(target)
        .header(header::HOST, &authority)
        .header(header::AUTHORIZATION, value)
        .header(header::ACCEPT, "application/json")
        .body(http_body_util::Empty::<bytes::Bytes>::new().map_err(|never| match never {}).boxed())
        .map_err(|e| e.to_string())?;
    let response = send_watched(&mut sender, req, &authority).await?;
    let status = response.status();
    let body = http_body_util::Limited::new(response.into_body(), MAX_TOKEN_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("`{authority}`: {e}"))?
        .to_bytes();
    Ok((status, body))
}

/// A plain-http request to an unrouted host, passed on as it came, to the addresses the
/// host was checked at.
pub(super) async fn passthrough(
    mut req: Request<Incoming>,
    host: &str,
    addresses: &[std::net::SocketAddr],
) -> Response<Body> {
    let tcp = match tokio::net::TcpStream::connect(addresses).await {
        Ok(tcp) => tcp,
        Err(e) => return text(StatusCode::BAD_GATEWAY, &format!("mayfly: cannot reach `{host}`: {e}")),
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    if let Ok(uri) = path.parse() {
        *req.uri_mut() = uri;
    }
    strip_hop_by_hop(&mut req);
    let sent = match handshake(TokioIo::new(tcp), host).await {
        Ok(mut sender) => sender.send_request(req).await.map_err(|e| format!("`{host}`: {e}")),
        Err(e) => Err(e),
    };
    match sent {
        Ok(response) => response.map(BodyExt::boxed),
        Err(e) => text(StatusCode::BAD_GATEWAY, &format!("mayfly: {e}")),
    }
}

impl State {
    /// The first route naming this host, whatever its path.
    fn host_route(&self, protocol: &str, host: &str) -> Option<&mayfly_core::Route> {
        self.settings.broker.config().routes.iter().find(|r| r.protocol == protocol && r.host == host)
    }

    fn upstream_config(&self, route: Option<&mayfly_core::Route>) -> Result<Arc<rustls::ClientConfig>, String> {
        let key = route.map(|r| r.name.clone()).unwrap_or_default();
        let mut configs = self.upstream.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(config) = configs.get(&key) {
            return Ok(config.clone());
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(file) = route.and_then(|r| r.ca_file.as_ref()) {
            use rustls::pki_types::pem::PemObject;
            let certs = CertificateDer::pem_file_iter(file)
                .map_err(|e| format!("cannot read `ca_file` `{}`: {e}", file.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("`ca_file` `{}`: {e}", file.display()))?;
                roots.add(cert).map_err(|e| format!("`ca_file` `{}`: {e}", file.display()))?;
            }
        }
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        configs.insert(key, config.clone());
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body whose one chunk comes, then it ends, or (`fails`) fails: a client ending its
    /// own upload.
    struct Failing {
        sent: bool,
        fails: bool,
    }

    impl hyper::body::Body for Failing {
        type Data = bytes::Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>>> {
            if !std::mem::replace(&mut self.sent, true) {
                return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(bytes::Bytes::from_static(b"part")))));
            }
            // A broken pipe, as the upstream's would be: the client's all the same.
            let gone = || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away");
            std::task::Poll::Ready(self.fails.then(|| Err(gone())))
        }
    }

    /// What the loopback server does once it has read a request's head.
    #[derive(Clone, Copy, PartialEq)]
    enum Then {
        Close,
        Reset,
        Wait,
    }

    /// A loopback server for one connection, its address: reads the head, then `then`.
    async fn serving(then: Then) -> std::net::SocketAddr {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 256];
            let _ = stream.read(&mut head).await;
            match then {
                Then::Close => {}
                Then::Reset => drop(stream.set_zero_linger()),
                Then::Wait => tokio::time::sleep(std::time::Duration::from_secs(30)).await,
            }
        });
        address
    }

    /// What sending a request with a failing body to a loopback server that reads the
    /// head and then closes (`close`) or waits comes to.
    async fn sent_to(close: bool) -> Unanswered {
        let address = serving(if close { Then::Close } else { Then::Wait }).await;
        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let mut sender = handshake(TokioIo::new(tcp), "h").await.unwrap();
        let length = if close { "4" } else { "100" };
        let body = Failing { sent: false, fails: !close };
        let req = Request::post("/").header(header::CONTENT_LENGTH, length).body(body).unwrap();
        send_watched(&mut sender, req, "h").await.expect_err("no answer")
    }

    /// What sending `count` frames of `size` bytes to a loopback server that reads the
    /// head and then resets the connection comes to: hyper may see the end first, or a
    /// failed write.
    async fn reset_while_sending(count: usize, size: usize) -> Unanswered {
        let tcp = tokio::net::TcpStream::connect(serving(Then::Reset).await).await.unwrap();
        let mut sender = handshake(TokioIo::new(tcp), "h").await.unwrap();
        let body = super::super::test_bodies::Chunks::of(count, size);
        send_watched(&mut sender, Request::post("/").body(body).unwrap(), "h").await.expect_err("no answer")
    }

    #[test]
    fn only_an_upstream_closing_before_answering_counts_as_closed() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async {
            assert!(sent_to(true).await.closed, "the upstream closed before answering");
            let failed = sent_to(false).await;
            assert!(!failed.closed, "the client's own body failed: {}", failed.reason);
            for _ in 0..5 {
                let reset = reset_while_sending(512, 64 << 10).await;
                assert!(reset.closed, "the upstream reset while the body went: {}", reset.reason);
            }
            // A small body is all gone before the reset: not a refusal of it.
            let reset = reset_while_sending(1, 16).await;
            assert!(!reset.closed, "the upstream reset after the whole body went: {}", reset.reason);
        });
    }

    #[test]
    fn the_upstream_host_is_the_routed_host_whatever_the_client_wrote() {
        let mut req = Request::get("/org/app.git/info/refs")
            .header(header::HOST, "other.example")
            .header(header::HOST, "second.example")
            .body(())
            .unwrap();
        pin_host(&mut req, "git.example:8443").unwrap();
        let hosts: Vec<_> = req.headers().get_all(header::HOST).iter().collect();
        assert_eq!(hosts, ["git.example:8443"]);
        let mut req = Request::get("/").body(()).unwrap();
        pin_host(&mut req, "git.example").unwrap();
        assert_eq!(req.headers()[header::HOST], "git.example");
    }
}
