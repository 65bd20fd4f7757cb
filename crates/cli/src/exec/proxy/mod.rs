//! `mayfly exec --proxy`: a loopback HTTP forward proxy that adds each request's scoped
//! credential on the way out, so no token ever enters the command's processes.
//!
//! A CONNECT to a host that a route names (git, npm, cargo, pypi, oci, kubectl, terraform) is
//! intercepted: TLS is terminated with a leaf certificate for that host, signed by a
//! certificate authority that lives only in this process's memory; each request's target
//! and operation (`operation`) get a token through the broker, exactly as the tool's
//! helper or shim would; the token goes into the upstream request, which is sent over TLS
//! verified against the system roots and the route's `ca_file`. OCI registries' token
//! challenges are answered by the proxy itself (`oci`). Other hosts are tunnelled
//! untouched (never to loopback, link-local or metadata addresses), or refused under
//! `--deny-unrouted`. Every request is one audit line. A request whose cached token the
//! upstream refuses (`401`) is sent once more with a fresh one, its body kept for that
//! within a cap (`replay`).
//! Requests with two lengths are refused before hyper reads them as one (`guard`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use mayfly_core::{AuditEvent, AuditLog, Broker, Operation, Outcome, Process, Resolution, Scheme, Target, Tool};
use operation::{Family, Subject};

mod ca;
mod env;
mod guard;
mod nuget;
mod oci;
mod operation;
mod replay;
#[cfg(test)]
mod test_bodies;
mod upstream;

use ca::Ca;
pub(crate) use ca::ca_bundle;
pub(crate) use env::{CA_VARS, bypasses, identity_vars, npm_userconfig, vars};
use guard::Guarded;
use replay::{MAX_REPLAY, Replay, not_sent_again};
use upstream::Unanswered;
use upstream::{Pool, passthrough, send};

type Body = BoxBody<Bytes, hyper::Error>;

/// What the proxy needs from the session.
pub(crate) struct Settings {
    /// A broker whose environment names the session (and agent).
    pub broker: Broker,
    pub session: String,
    pub agent: Option<String>,
    pub deny_unrouted: bool,
    /// The process chain audit lines and exchanges name (`mayfly exec` itself).
    pub chain: Vec<Process>,
    /// A Unix socket the proxy also listens on (for a sandbox with no network of its
    /// own, `--isolate`).
    pub socket: Option<std::path::PathBuf>,
}

/// A running proxy; it stops when dropped.
pub(crate) struct Running {
    /// `http://mayfly:SECRET@127.0.0.1:PORT`.
    pub url: String,
    /// The URL's loopback port.
    pub port: u16,
    /// The session CA's certificate (PEM).
    pub ca_pem: String,
    /// The URL's secret, and the `Proxy-Authorization` value that carries it: what
    /// `--redact` hides beside the session's tokens.
    pub secrets: Vec<String>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

struct State {
    settings: Settings,
    audit: AuditLog,
    /// `Basic base64(mayfly:SECRET)`, what `Proxy-Authorization` must be.
    expected: String,
    ca: Ca,
    /// Upstream TLS configs per route (system roots plus its `ca_file`).
    upstream: Mutex<HashMap<String, Arc<rustls::ClientConfig>>>,
    /// OCI registries' challenges and the registry tokens got for them.
    oci: oci::Tokens,
    /// The bytes of request bodies kept to send again, across all requests.
    replay: Arc<tokio::sync::Semaphore>,
    /// The bytes of publish bodies read whole to find their package, across all requests.
    naming: replay::Naming,
}

/// Starts the proxy on a loopback port.
pub(crate) fn start(settings: Settings) -> anyhow::Result<Running> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no random source: {e}"))?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let ca = Ca::new().context("cannot create the session's certificate authority")?;
    let ca_pem = ca.pem.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("mayfly-proxy")
        .enable_all()
        .build()
        .context("cannot start the proxy's runtime")?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind the proxy's loopback port")?;
    listener.set_nonblocking(true).context("cannot set up the proxy's port")?;
    let port = listener.local_addr().context("the proxy's port has no address")?.port();
    let audit = AuditLog::from_env(&mayfly_core::Env::from_os())
        .with_rotation(settings.broker.config().audit_max_size, settings.broker.config().audit_keep);
    let encoded = STANDARD.encode(format!("mayfly:{secret}"));
    let secrets = vec![secret.clone(), encoded.clone()];
    let state = Arc::new(State {
        audit,
        expected: format!("Basic {encoded}"),
        settings,
        ca,
        upstream: Mutex::new(HashMap::new()),
        oci: oci::Tokens::default(),
        replay: replay::budget(),
        naming: replay::Naming::new(),
    });
    let unix = match &state.settings.socket {
        Some(path) => {
            let unix = std::os::unix::net::UnixListener::bind(path)
                .with_context(|| format!("cannot listen on `{}`", path.display()))?;
            unix.set_nonblocking(true).context("cannot set up the proxy's socket")?;
            Some(unix)
        }
        None => None,
    };
    {
        let _guard = runtime.enter();
        let listener = tokio::net::TcpListener::from_std(listener).context("cannot listen on the proxy's port")?;
        runtime.spawn(accept(listener, state.clone()));
        if let Some(unix) = unix {
            let unix = tokio::net::UnixListener::from_std(unix).context("cannot listen on the proxy's socket")?;
            runtime.spawn(accept_unix(unix, state));
        }
    }
    Ok(Running {
        url: format!("http://mayfly:{secret}@127.0.0.1:{port}"),
        port,
        ca_pem,
        secrets,
        runtime: Some(runtime),
    })
}

async fn accept(listener: tokio::net::TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        tokio::spawn(serve(stream, state.clone()));
    }
}

async fn accept_unix(listener: tokio::net::UnixListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        tokio::spawn(serve(stream, state.clone()));
    }
}

/// One client connection, on the port or the socket.
async fn serve<S>(stream: S, state: Arc<State>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (stream, ambiguous) = Guarded::new(stream);
    let service = hyper::service::service_fn(move |req| outer(req, state.clone(), ambiguous.clone()));
    let _ = hyper::server::conn::http1::Builder::new()
        .preserve_header_case(true)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
}

fn text(status: StatusCode, line: &str) -> Response<Body> {
    let mut response =
        Response::new(Full::new(Bytes::from(format!("{line}\n"))).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// A refusal in the shape the family's client shows: npm prints a JSON body's `error`,
/// cargo its `errors[].detail`; git and the rest print the text.
fn refusal(family: Family, status: StatusCode, line: &str) -> Response<Body> {
    let json = match family {
        Family::Npm => serde_json::json!({ "error": line }),
        Family::Cargo => serde_json::json!({ "errors": [{ "detail": line }] }),
        // The distribution API's error shape, which docker clients print.
        Family::Oci => serde_json::json!({ "errors": [{ "code": "DENIED", "message": line }] }),
        Family::Nuget => return nuget::refusal(status, line),
        Family::Git | Family::Pypi | Family::Rest => return text(status, line),
    };
    let mut response = Response::new(Full::new(Bytes::from(json.to_string())).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Requests on the proxy's own port: CONNECT, or a plain-http request in absolute form.
async fn outer(
    req: Request<Incoming>,
    state: Arc<State>,
    two_lengths: Arc<AtomicBool>,
) -> Result<Response<Body>, Infallible> {
    if two_lengths.load(Ordering::SeqCst) {
        return Ok(refuse_ambiguous(&state, &req));
    }
    let authorized =
        req.headers().get(header::PROXY_AUTHORIZATION).is_some_and(|v| same(v.as_bytes(), state.expected.as_bytes()));
    if !authorized {
        let mut response = text(
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            "mayfly: this proxy needs the session's URL, with its secret",
        );
        response
            .headers_mut()
            .insert(header::PROXY_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"mayfly\""));
        return Ok(response);
    }
    if ambiguous(req.headers()) {
        return Ok(text(StatusCode::BAD_REQUEST, AMBIGUOUS));
    }
    let Some(authority) = req.uri().authority().map(|a| a.as_str().to_owned()) else {
        return Ok(text(StatusCode::BAD_REQUEST, "mayfly: the proxy takes CONNECT or absolute-form requests"));
    };
    let https = req.method() == Method::CONNECT;
    let protocol = if https { "https" } else { "http" };
    let Ok(host) = mayfly_core::normalize_host(protocol, &authority) else {
        return Ok(text(StatusCode::BAD_REQUEST, "mayfly: invalid host"));
    };
    let family = state.family(protocol, &host);
    let routed = family.is_some();
    let path = if https { String::new() } else { req.uri().path().to_owned() };
    if !routed && state.settings.deny_unrouted {
        state.line(Outcome::Denied, req.method().as_str(), &host, &path, None, |e| {
            e.reason = Some("no route, and the session refuses unrouted hosts".into());
        });
        return Ok(text(
            StatusCode::FORBIDDEN,
            &format!("mayfly: `{host}` has no route, and this session refuses unrouted hosts (--deny-unrouted)"),
        ));
    }
    let address = with_port(&authority, if https { 443 } else { 80 });
    // An unrouted host is resolved once, checked, and connected to at the checked
    // addresses: never the host's loopback, link-local or metadata addresses.
    let addresses = if routed {
        Vec::new()
    } else {
        match unrouted_addresses(&host, &address).await {
            Ok(addresses) => addresses,
            Err(Refused::Forbidden(reason)) => {
                state.line(Outcome::Denied, req.method().as_str(), &host, &path, None, |e| {
                    e.reason = Some(reason.clone());
                });
                return Ok(text(StatusCode::FORBIDDEN, &format!("mayfly: {reason}")));
            }
            Err(Refused::Unresolved(reason)) => {
                return Ok(text(StatusCode::BAD_GATEWAY, &format!("mayfly: {reason}")));
            }
        }
    };
    if !https {
        // Plain http: routed hosts go through the same path as intercepted ones.
        return Ok(if routed {
            forward(req, &state, &host, protocol, family, &Pool::default()).await
        } else {
            state.line(Outcome::Tunnelled, req.method().as_str(), &host, &path, None, |_| {});
            passthrough(req, &host, &addresses).await
        });
    }
    if routed {
        tokio::spawn(async move {
            let Ok(upgraded) = hyper::upgrade::on(req).await else { return };
            let tls = state.ca.server_config(&host);
            let Ok(tls) = tls else {
                mayfly_core::protocol::warn(&format!("proxy: no certificate for `{host}`"));
                return;
            };
            let Some(stream) = intercept(&state, &host, upgraded, tls).await else { return };
            let pool = Pool::default();
            let (stream, ambiguous) = Guarded::new(stream);
            let service = hyper::service::service_fn(move |req| {
                let (state, host, pool, ambiguous) = (state.clone(), host.clone(), pool.clone(), ambiguous.clone());
                async move {
                    if ambiguous.load(Ordering::SeqCst) {
                        return Ok::<_, Infallible>(refuse_ambiguous(&state, &req));
                    }
                    Ok(forward(req, &state, &host, "https", family, &pool).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
        return Ok(Response::new(Full::new(Bytes::new()).map_err(|never| match never {}).boxed()));
    }
    let upstream = match tokio::net::TcpStream::connect(addresses.as_slice()).await {
        Ok(upstream) => upstream,
        Err(e) => return Ok(text(StatusCode::BAD_GATEWAY, &format!("mayfly: cannot reach `{host}`: {e}"))),
    };
    state.line(Outcome::Tunnelled, "CONNECT", &host, "", None, |_| {});
    tokio::spawn(async move {
        if let Ok(upgraded) = hyper::upgrade::on(req).await {
            let mut upstream = upstream;
            let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(upgraded), &mut upstream).await;
        }
    });
    Ok(Response::new(Full::new(Bytes::new()).map_err(|never| match never {}).boxed()))
}

/// Terminates a client's TLS for a routed host: the ClientHello's server name, when it
/// sends one, must be the CONNECT's host (or a token for one host could be asked for on a
/// connection to another); a handshake the client gives up on is one line on stderr.
async fn intercept(
    state: &Arc<State>,
    host: &str,
    upgraded: hyper::upgrade::Upgraded,
    tls: Arc<rustls::ServerConfig>,
) -> Option<tokio_rustls::server::TlsStream<TokioIo<hyper::upgrade::Upgraded>>> {
    let fail = |reason: String| {
        mayfly_core::protocol::warn(&format!("proxy: {reason}"));
        state.line(Outcome::Denied, "CONNECT", host, "", None, |e| e.reason = Some(reason));
    };
    let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), TokioIo::new(upgraded));
    let start = match acceptor.await {
        Ok(start) => start,
        Err(e) => {
            fail(format!("a client's TLS for `{host}` did not start: {e}"));
            return None;
        }
    };
    let expected = host_name(host);
    if let Some(sni) = start.client_hello().server_name()
        && !sni.eq_ignore_ascii_case(&expected)
    {
        fail(format!(
            "a client that connected to `{host}` asked TLS for `{}`: refused",
            mayfly_core::sanitize_for_terminal(sni)
        ));
        return None;
    }
    match start.into_stream(tls).await {
        Ok(stream) => Some(stream),
        Err(e) => {
            let rejected = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()).is_some_and(|e| {
                matches!(e, rustls::Error::AlertReceived(alert) if matches!(
                    alert,
                    rustls::AlertDescription::UnknownCA
                        | rustls::AlertDescription::BadCertificate
                        | rustls::AlertDescription::CertificateUnknown
                ))
            });
            fail(if rejected {
                format!(
                    "a client did not trust the session's certificate for `{host}`: it reads none of {}, or overrides them",
                    CA_VARS.join(", ")
                )
            } else {
                format!("TLS with a client for `{host}` failed: {e}")
            });
            None
        }
    }
}

/// Why an unrouted request is not sent.
enum Refused {
    /// Its host is one the proxy never opens a connection to (403).
    Forbidden(String),
    /// Its host has no address (502).
    Unresolved(String),
}

/// Names that are the machine itself or a cloud's metadata server, whatever they resolve to.
const FORBIDDEN_NAMES: [&str; 3] = ["localhost", "metadata.google.internal", "metadata"];

/// The addresses of an unrouted `address` (`host:port`), resolved once; refused when the
/// name, or any address it resolves to, is loopback, link-local (cloud metadata servers),
/// or unspecified. A request no route covers is sent on by the proxy from this machine,
/// so without this a sandboxed command could reach the machine's own daemons and its
/// cloud identity.
async fn unrouted_addresses(host: &str, address: &str) -> Result<Vec<std::net::SocketAddr>, Refused> {
    let name = host_name(host).to_ascii_lowercase();
    let name = name.trim_end_matches('.');
    if FORBIDDEN_NAMES.contains(&name) || name.ends_with(".localhost") {
        return Err(Refused::Forbidden(format!(
            "`{host}` is this machine or a metadata server, which no request without a route reaches"
        )));
    }
    let addresses: Vec<std::net::SocketAddr> = tokio::net::lookup_host(address)
        .await
        .map_err(|e| Refused::Unresolved(format!("cannot resolve `{host}`: {e}")))?
        .collect();
    if addresses.is_empty() {
        return Err(Refused::Unresolved(format!("`{host}` has no address")));
    }
    if let Some(kind) = addresses.iter().find_map(|a| forbidden_ip(a.ip())) {
        return Err(Refused::Forbidden(format!("`{host}` is {kind}, which no request without a route reaches")));
    }
    Ok(addresses)
}

/// What kind of address the proxy never opens an unrouted connection to, if this is one.
fn forbidden_ip(ip: std::net::IpAddr) -> Option<&'static str> {
    use std::net::IpAddr;
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    };
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    };
    if ip.is_loopback() {
        Some("a loopback address")
    } else if link_local {
        Some("a link-local address (where cloud metadata servers answer)")
    } else if ip.is_unspecified() {
        Some("the unspecified address")
    } else {
        None
    }
}

/// `host:port` to connect to, with the scheme's default port when none is named.
fn with_port(authority: &str, default: u16) -> String {
    let has_port = match authority.rsplit_once(':') {
        Some((name, port)) => !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) && !name.ends_with(':'),
        None => false,
    };
    if has_port && !authority.ends_with(']') { authority.to_owned() } else { format!("{authority}:{default}") }
}

/// One intercepted request: the route's credential added, then sent upstream.
async fn forward(
    req: Request<Incoming>,
    state: &Arc<State>,
    host: &str,
    protocol: &str,
    family: Option<(Family, Tool)>,
    pool: &Pool,
) -> Response<Body> {
    if ambiguous(req.headers()) {
        return text(StatusCode::BAD_REQUEST, AMBIGUOUS);
    }
    let Some((family, tool)) = family else {
        return text(StatusCode::BAD_GATEWAY, "mayfly: no route names this host");
    };
    if family == Family::Oci {
        return oci::forward(req, state, host, protocol, pool).await;
    }
    let (mut parts, body) = req.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_owned();
    let refuse = |reason: String, operation: Option<Operation>| {
        state.line(Outcome::Denied, method.as_str(), host, &path, None, |e| {
            e.operation = operation.map(|o| o.as_str().into()).unwrap_or_default();
            e.reason = Some(reason.clone());
        });
        refusal(family, StatusCode::FORBIDDEN, &format!("mayfly: {reason}"))
    };
    let detected = match operation::detect(family, &method, &path, parts.uri.query()) {
        Ok(detected) => detected,
        Err(reason) => return refuse(reason, None),
    };
    let operation = detected.operation;
    let mut body = Replay::new(body.boxed(), &parts.headers);
    let name = match detected.subject {
        Subject::Host => None,
        Subject::Named(name) => Some(name),
        Subject::InBody(kind) => {
            let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
            body = match state.naming.read(body.body(), &parts.headers).await {
                Ok(read) => read,
                Err(reason) => return refuse(reason, Some(operation)),
            };
            match operation::name_in_body(kind, content_type, body.bytes()) {
                Ok(name) => Some(name),
                Err(reason) => return refuse(reason, Some(operation)),
            }
        }
    };
    let target = match Target::new(tool, protocol, host, name.as_deref()) {
        Ok(target) => target,
        Err(e) => return refuse(e.to_string(), Some(operation)),
    };
    // A NuGet gallery's reads go upstream without a key, routed or not.
    let keyless = nuget::keyless(family, operation);
    let route = match state.settings.broker.resolve(&target) {
        Resolution::Route(route) if !keyless => Some(route.clone()),
        _ => None,
    };
    if let Some(route) = &route
        && let Err(reason) = nuget::check_routed(family, state.settings.broker.config(), route, &method, &path)
    {
        return refuse(reason, Some(operation));
    }
    let route_name = route.as_ref().map(|r| r.name.clone()).unwrap_or_default();
    let denied = |reason: String| {
        state.line(Outcome::Denied, method.as_str(), host, &path, Some(&target), |e| {
            e.operation = operation.as_str().into();
            e.route.clone_from(&route_name);
            e.reason = Some(reason.clone());
        });
        refusal(family, StatusCode::FORBIDDEN, &format!("mayfly: {reason}"))
    };
    if route.is_none() {
        if state.settings.deny_unrouted && !keyless {
            state.line(Outcome::Denied, method.as_str(), host, &path, Some(&target), |e| {
                e.operation = operation.as_str().into();
                e.reason = Some("no route for this repository".into());
            });
            return text(
                StatusCode::FORBIDDEN,
                &format!("mayfly: no route for `{}`, and this session refuses unrouted requests", target.display()),
            );
        }
        // Every placeholder goes, however many `Authorization` lines the client sent.
        if parts.headers.get_all(header::AUTHORIZATION).iter().any(|v| placeholder(v.as_bytes())) {
            parts.headers.remove(header::AUTHORIZATION);
        }
        nuget::drop_placeholder(&mut parts.headers);
    }
    // A cached token the upstream refuses (`401`) is dropped and the request sent once more
    // with a fresh one, its body kept for that within its cap and the proxy's budget: not
    // for a method that may have done something already on a REST API, nor for an npm
    // one-time-password challenge (the token is fine; the user must answer it).
    let replays = family != Family::Rest || is_idempotent(&method);
    let mut fingerprint = None;
    let mut refused: Option<mayfly_core::Fingerprint> = None;
    let mut attempt = 0;
    let response = loop {
        attempt += 1;
        let mut from_cache = false;
        if let Some(route) = &route {
            let issued = match mint(state, route, &target, operation).await {
                Ok(issued) => issued,
                Err(reason) => return denied(reason),
            };
            let Some(value) = authorization(family, &issued) else {
                return refusal(family, StatusCode::BAD_GATEWAY, "mayfly: the token cannot go into a header");
            };
            let minted = issued.token.fingerprint();
            if refused.as_ref() == Some(&minted) {
                // The broker handed back the token the upstream just refused: it is not sent
                // again as if it were fresh.
                return denied(format!(
                    "`{host}` refused the cached token, and the broker handed back the same one, not a fresh one: run the command again"
                ));
            }
            parts.headers.insert(credential_header(family), value);
            fingerprint = Some(minted);
            from_cache = issued.from_cache;
            if from_cache && attempt == 1 && replays {
                body = match body.keep(&parts.headers, MAX_REPLAY, &state.replay).await {
                    Ok(read) => read,
                    Err(e) => {
                        let reason = format!("cannot read the request's body: {e}");
                        state.line(Outcome::Failed, method.as_str(), host, &path, Some(&target), |ev| {
                            ev.operation = operation.as_str().into();
                            ev.route.clone_from(&route_name);
                            ev.reason = Some(reason.clone());
                        });
                        return refusal(family, StatusCode::BAD_REQUEST, &format!("mayfly: {reason}"));
                    }
                };
            }
        }
        let req = Request::from_parts(parts.clone(), body.body());
        let response = match send(req, state, host, protocol, route.as_ref(), pool).await {
            Ok(response) => response,
            Err(Unanswered { reason: mut e, closed }) => {
                // An upstream that refuses a token often answers before the body is read and
                // closes: the answer can be lost with the connection. The cached token it went
                // with is dropped then too (that one only), or every attempt of a body too large
                // to keep would fail; never for the client's own body failing, nor a
                // connection that did not open.
                if let (Some(route), Some(sent)) = (route.as_ref(), fingerprint.as_ref())
                    && from_cache
                    && closed
                    && !body.replayable()
                {
                    erase(state, route, &target, sent).await;
                    e = not_sent_again(&format!(
                        "{e} (the cached token it went with is now dropped, in case `{host}` refused it)"
                    ));
                    mayfly_core::protocol::warn(&format!("proxy: {e}"));
                }
                state.line(Outcome::Failed, method.as_str(), host, &path, Some(&target), |ev| {
                    ev.operation = operation.as_str().into();
                    ev.route.clone_from(&route_name);
                    ev.fingerprint.clone_from(&fingerprint);
                    ev.reason = Some(e.clone());
                });
                return refusal(family, StatusCode::BAD_GATEWAY, &format!("mayfly: {e}"));
            }
        };
        let again = response.status() == StatusCode::UNAUTHORIZED
            && from_cache
            && attempt == 1
            && !(family == Family::Npm && otp_challenge(&response));
        let (Some(route), Some(sent)) = (route.as_ref().filter(|_| again), fingerprint.clone()) else {
            break response;
        };
        // The upstream refused the cached token: that token (and no other) is dropped and
        // revoked, and the request sent once more with a fresh one.
        erase(state, route, &target, &sent).await;
        let _ = http_body_util::Limited::new(response.into_body(), 64 << 10).collect().await;
        if !body.replayable() || !replays {
            let what = format!("`{host}` refused the cached token, which is now dropped");
            let reason = if replays {
                not_sent_again(&what)
            } else {
                format!("{what}; a {method} is not sent twice: run the command again")
            };
            mayfly_core::protocol::warn(&format!("proxy: {reason}"));
            state.line(Outcome::Failed, method.as_str(), host, &path, Some(&target), |e| {
                e.operation = operation.as_str().into();
                e.route.clone_from(&route_name);
                e.fingerprint = Some(sent.clone());
                e.reason = Some(reason.clone());
            });
            return refusal(family, StatusCode::SERVICE_UNAVAILABLE, &format!("mayfly: {reason}"));
        }
        refused = Some(sent);
    };
    let outcome = if route.is_some() { Outcome::Proxied } else { Outcome::Tunnelled };
    state.line(outcome, method.as_str(), host, &path, Some(&target), |e| {
        e.operation = operation.as_str().into();
        e.route.clone_from(&route_name);
        e.fingerprint = fingerprint;
        e.reason = Some(format!(
            "upstream answered {}{}",
            response.status().as_u16(),
            refused.map(|r| format!(" (sent again with a fresh token after a 401 to {r})")).unwrap_or_default()
        ));
    });
    response
}

/// Methods a REST API may be sent twice (RFC 9110's idempotent ones).
fn is_idempotent(method: &Method) -> bool {
    [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE, Method::PUT, Method::DELETE].contains(method)
}

/// True for npm's one-time-password challenge (`WWW-Authenticate: OTP`): the token is
/// good, the user must give a code; nothing to drop or send again.
fn otp_challenge<B>(response: &Response<B>) -> bool {
    response.headers().get_all(header::WWW_AUTHENTICATE).iter().any(|v| {
        v.to_str().is_ok_and(|v| v.trim().split([' ', ',']).next().is_some_and(|s| s.eq_ignore_ascii_case("otp")))
    })
}

/// The `Authorization` a token goes upstream in: as the tool would send what its shim
/// hands it (npm an `_authToken`, Bearer; twine a user name and password, Basic), the
/// others as the route says.
fn authorization(family: Family, issued: &mayfly_core::Issued) -> Option<header::HeaderValue> {
    let scheme = match family {
        Family::Npm => Scheme::Bearer,
        Family::Pypi => Scheme::Basic,
        // NuGet's key is the whole `X-NuGet-ApiKey` value.
        Family::Nuget => Scheme::Plain,
        _ => issued.scheme,
    };
    let value = match scheme {
        Scheme::Basic => format!("Basic {}", STANDARD.encode(format!("{}:{}", issued.username, issued.token.expose()))),
        Scheme::Bearer => format!("Bearer {}", issued.token.expose()),
        // cargo's registries take the token as the whole value.
        Scheme::Plain => issued.token.expose().to_owned(),
    };
    let mut value = header::HeaderValue::from_str(&value).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// The header a family's credential goes in: NuGet's `X-NuGet-ApiKey`, else `Authorization`.
fn credential_header(family: Family) -> header::HeaderName {
    match family {
        Family::Nuget => header::HeaderName::from_static(nuget::API_KEY),
        _ => header::AUTHORIZATION,
    }
}

/// A token for a target and operation through the broker (its cache, exchange, policy
/// and audit), off the runtime's threads.
async fn mint(
    state: &Arc<State>,
    route: &mayfly_core::Route,
    target: &Target,
    operation: Operation,
) -> Result<mayfly_core::Issued, String> {
    let (state, route, target) = (state.clone(), route.clone(), target.clone());
    tokio::task::spawn_blocking(move || state.settings.broker.token(&route, &target, operation, &state.settings.chain))
        .await
        .map_err(|_| "the token request failed".to_owned())?
        .map_err(|e| mayfly_core::protocol::one_line(&e))
}

/// Drops the session's cached token for a target whose fingerprint is `refused` (and
/// revokes it), after the upstream refused exactly that token: a newer one, or one for
/// another operation, is left alone.
async fn erase(state: &Arc<State>, route: &mayfly_core::Route, target: &Target, refused: &mayfly_core::Fingerprint) {
    let (state, route, target, refused) = (state.clone(), route.clone(), target.clone(), refused.clone());
    let _ = tokio::task::spawn_blocking(move || {
        state.settings.broker.erase_refused(&route, &target, &refused, &state.settings.chain)
    })
    .await;
}

/// What a tool that will not send a request without a credential is given inside the
/// session (npm's `_authToken`, cargo's registry token): replaced by the minted token on
/// routed requests, removed from the others.
pub(crate) const PLACEHOLDER: &str = "mayfly-proxy-placeholder";

/// True for an `Authorization` value that carries the placeholder (as a bearer token,
/// a bare token, or a `Basic` password).
fn placeholder(value: &[u8]) -> bool {
    let text = String::from_utf8_lossy(value);
    let token = text.split_once(' ').map_or(text.as_ref(), |(_, t)| t).trim();
    token == PLACEHOLDER
        || STANDARD
            .decode(token)
            .ok()
            .is_some_and(|d| String::from_utf8_lossy(&d).split_once(':').is_some_and(|(_, p)| p == PLACEHOLDER))
}

/// The answer to a request with two lengths: `400`, and the connection closed (what
/// follows on it cannot be told apart from the body).
fn refuse_ambiguous(state: &State, req: &Request<Incoming>) -> Response<Body> {
    let host = req.uri().authority().map(|a| a.as_str().to_owned()).unwrap_or_default();
    state.line(Outcome::Denied, req.method().as_str(), &host, req.uri().path(), None, |e| {
        e.reason = Some("both Content-Length and Transfer-Encoding".into());
    });
    let mut response = text(StatusCode::BAD_REQUEST, AMBIGUOUS);
    response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    response
}

const AMBIGUOUS: &str = "mayfly: a request with both Content-Length and Transfer-Encoding is refused";

/// True for a request whose length two servers could read differently (smuggling).
fn ambiguous(headers: &header::HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        && (headers.contains_key(header::CONTENT_LENGTH)
            || headers.get_all(header::TRANSFER_ENCODING).iter().count() > 1)
}

/// Headers meant for the proxy, not the upstream (the secret among them).
fn strip_hop_by_hop<B>(req: &mut Request<B>) {
    let headers = req.headers_mut();
    for name in [header::PROXY_AUTHORIZATION, header::HeaderName::from_static("proxy-connection")] {
        headers.remove(name);
    }
}

/// The host name without port or IPv6 brackets.
fn host_name(host: &str) -> String {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) && !name.is_empty() => name,
        _ => host,
    };
    name.trim_start_matches('[').trim_end_matches(']').to_owned()
}

impl State {
    /// How a routed host's requests are read: by the first route naming the host whose
    /// tool the proxy reads; `None` for hosts it passes through.
    fn family(&self, protocol: &str, host: &str) -> Option<(Family, Tool)> {
        let routes = &self.settings.broker.config().routes;
        routes
            .iter()
            .filter(|r| r.protocol == protocol && r.host == host)
            .find_map(|r| Family::of(r.tool).map(|family| (family, r.tool)))
    }

    /// One audit line for a proxied request. The query is never written: it can carry
    /// secrets.
    fn line(
        &self,
        outcome: Outcome,
        method: &str,
        host: &str,
        path: &str,
        target: Option<&Target>,
        fill: impl FnOnce(&mut AuditEvent),
    ) {
        let mut event = AuditEvent {
            time: mayfly_core::rfc3339_now(),
            outcome,
            session: Some(self.settings.session.clone()),
            agent: self.settings.agent.clone(),
            tool: "proxy".into(),
            target: target.map_or_else(|| host.to_owned(), Target::display),
            method: Some(method.to_owned()),
            path: (!path.is_empty()).then(|| mayfly_core::sanitize_for_terminal(path)),
            process: self.settings.chain.clone(),
            ..AuditEvent::default()
        };
        fill(&mut event);
        if let Err(e) = self.audit.record(&event) {
            mayfly_core::protocol::warn(&format!("cannot write the audit log: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_with_two_lengths_is_ambiguous() {
        let mut headers = header::HeaderMap::new();
        headers.insert(header::TRANSFER_ENCODING, header::HeaderValue::from_static("chunked"));
        assert!(!ambiguous(&headers));
        headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from_static("5"));
        assert!(ambiguous(&headers));
        headers.remove(header::CONTENT_LENGTH);
        headers.append(header::TRANSFER_ENCODING, header::HeaderValue::from_static("chunked"));
        assert!(ambiguous(&headers));
    }

    #[test]
    fn placeholders_are_recognised_in_each_scheme() {
        assert!(placeholder(b"Bearer mayfly-proxy-placeholder"));
        assert!(placeholder(b"mayfly-proxy-placeholder"));
        let basic = format!("Basic {}", STANDARD.encode("user:mayfly-proxy-placeholder"));
        assert!(placeholder(basic.as_bytes()));
        assert!(!placeholder(b"Bearer something-else"));
        assert!(!placeholder(b"Bearer mayfly-proxy-placeholder2"));
    }

    #[test]
    fn loopback_link_local_unspecified_and_metadata_hosts_are_refused_unrouted() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        for (host, address) in [
            ("127.0.0.1:2375", "127.0.0.1:2375"),
            ("127.9.9.9", "127.9.9.9:443"),
            ("[::1]:8080", "[::1]:8080"),
            ("[::ffff:127.0.0.1]", "[::ffff:127.0.0.1]:443"),
            ("169.254.169.254", "169.254.169.254:80"),
            ("[fe80::1]", "[fe80::1]:80"),
            ("0.0.0.0:22", "0.0.0.0:22"),
            ("[::]", "[::]:443"),
            ("localhost:5432", "localhost:5432"),
            ("LOCALHOST.", "LOCALHOST.:443"),
            ("db.localhost", "db.localhost:443"),
            ("metadata.google.internal", "metadata.google.internal:80"),
            ("metadata", "metadata:80"),
        ] {
            let refused = runtime.block_on(unrouted_addresses(host, address));
            assert!(matches!(refused, Err(Refused::Forbidden(_))), "{host} was not refused");
        }
        for (host, address) in [("192.0.2.7", "192.0.2.7:443"), ("[2001:db8::1]", "[2001:db8::1]:443")] {
            let allowed = runtime.block_on(unrouted_addresses(host, address));
            assert!(allowed.is_ok_and(|a| a.len() == 1), "{host} was refused");
        }
    }

    #[test]
    fn an_npm_otp_challenge_and_a_rest_post_are_not_sent_again() {
        let answer = |value: &'static str| {
            let mut response = Response::new(());
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static(value));
            response
        };
        assert!(otp_challenge(&answer("OTP")));
        assert!(otp_challenge(&answer("otp, Bearer realm=\"npm\"")));
        assert!(!otp_challenge(&answer("Bearer realm=\"npm\"")));
        assert!(!otp_challenge(&Response::new(())));
        assert!(is_idempotent(&Method::GET) && is_idempotent(&Method::PUT) && is_idempotent(&Method::DELETE));
        assert!(!is_idempotent(&Method::POST) && !is_idempotent(&Method::PATCH));
    }

    #[test]
    fn ports_and_names_split_like_urls() {
        assert_eq!(with_port("git.example", 443), "git.example:443");
        assert_eq!(with_port("git.example:8443", 443), "git.example:8443");
        assert_eq!(with_port("[::1]", 443), "[::1]:443");
        assert_eq!(with_port("[::1]:8443", 443), "[::1]:8443");
        assert_eq!(host_name("127.0.0.1:8443"), "127.0.0.1");
        assert_eq!(host_name("[::1]:8443"), "::1");
        assert_eq!(host_name("git.example"), "git.example");
    }
}
