//! The one HTTP client every exchange and identity source uses: HTTPS only (plain HTTP to
//! loopback), timeouts, bounded bodies, no credentials across origins.

use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::redirect;

/// The largest response body read from an exchange or identity endpoint.
pub(crate) const MAX_BODY: u64 = 256 * 1024;

/// Why an HTTP exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL's scheme is not allowed.
    #[error("refusing plain http to `{0}` (https is required except to loopback)")]
    Insecure(String),
    /// The CA file could not be read or parsed.
    #[error("cannot load CA certificates from `{path}`: {message}")]
    Ca {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The request could not be sent or timed out.
    #[error("request to `{url}` failed: {message}")]
    Send {
        /// Where (without query).
        url: String,
        /// What went wrong.
        message: String,
        /// True when the request was never delivered, so retrying is safe.
        not_delivered: bool,
    },
    /// The server answered with a redirect, which mayfly does not follow across origins.
    #[error("`{url}` redirected to another origin; not followed")]
    Redirect {
        /// Where.
        url: String,
    },
    /// The response body is larger than [`MAX_BODY`].
    #[error("response from `{0}` is larger than {MAX_BODY} bytes")]
    TooLarge(String),
}

/// True for `localhost` and loopback IP literals (with or without port).
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) && !name.ends_with(':') => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// True when the URL points at this machine's loopback interface.
pub fn is_loopback_url(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// HTTPS, or HTTP to loopback; nothing else.
pub(crate) fn check_url(url: &url::Url) -> Result<(), Error> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback_url(url) => Ok(()),
        _ => Err(Error::Insecure(redacted(url))),
    }
}

/// The URL without userinfo, query or fragment, for messages.
pub(crate) fn redacted(url: &url::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// Attempts at most, for a request that may be sent again.
const ATTEMPTS: u32 = 3;

/// When a request may be sent again: the one retry policy of every client mayfly runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Only when it never left (the connection failed): a request that arrived may have
    /// spent a single-use ID token or minted something.
    Undelivered,
    /// Also after 502, 503 or 504: the server (or the proxy before it) did nothing.
    Unavailable,
    /// Also after any 5xx: for reads, which change nothing.
    ServerError,
}

impl Retry {
    fn again(self, status: u16) -> bool {
        match self {
            Self::Undelivered => false,
            Self::Unavailable => matches!(status, 502..=504),
            Self::ServerError => status >= 500,
        }
    }
}

/// A blocking client with mayfly's rules built in.
///
/// One per process per (timeout, CA file): [`HttpClient::new`] hands out the same one
/// again, and the underlying clients (each a runtime thread) are built on first use, the
/// one with trust roots only for an `https` URL.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    timeout: Duration,
    /// The exchange's own CA certificates, trusted beside the system's.
    extra: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// For plain HTTP to loopback: no trust roots loaded.
    plain: OnceLock<Result<Client, String>>,
    /// For HTTPS: the system roots and `extra`.
    tls: OnceLock<Result<Client, String>>,
}

/// The clients handed out so far in this process.
type Shared = Mutex<Vec<((Duration, Option<PathBuf>), HttpClient)>>;

impl HttpClient {
    /// The client with a whole-request timeout, optionally trusting extra CA certificates
    /// (read now, so a bad file is said before any request).
    pub fn new(timeout: Duration, ca_file: Option<&Path>) -> Result<Self, Error> {
        static SHARED: Shared = Mutex::new(Vec::new());
        let key = (timeout, ca_file.map(Path::to_path_buf));
        let mut shared = SHARED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, client)) = shared.iter().find(|(k, _)| *k == key) {
            return Ok(client.clone());
        }
        let mut extra = Vec::new();
        if let Some(path) = ca_file {
            let ca_error = |message: String| Error::Ca { path: path.display().to_string(), message };
            let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
            use rustls::pki_types::pem::PemObject;
            extra = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| ca_error(e.to_string()))?;
            // Said now, naming the file, rather than as a failed request later.
            let mut anchors = rustls::RootCertStore::empty();
            for certificate in &extra {
                anchors.add(certificate.clone()).map_err(|e| ca_error(format!("not a usable CA certificate: {e}")))?;
            }
        }
        let client = Self { inner: Arc::new(Inner { timeout, extra, plain: OnceLock::new(), tls: OnceLock::new() }) };
        shared.push((key, client.clone()));
        Ok(client)
    }

    /// The underlying client for this URL, built on first use.
    fn client(&self, url: &url::Url) -> Result<&Client, Error> {
        check_url(url)?;
        let inner = &*self.inner;
        let built = if url.scheme() == "https" {
            inner.tls.get_or_init(|| build(inner.timeout, Some(tls_config(inner.extra.clone())?)))
        } else {
            inner.plain.get_or_init(|| build(inner.timeout, None))
        };
        built.as_ref().map_err(|message| Error::Send {
            url: redacted(url),
            message: message.clone(),
            not_delivered: true,
        })
    }

    /// A GET request, after checking the URL is allowed.
    pub fn get(&self, url: &url::Url) -> Result<RequestBuilder, Error> {
        Ok(self.client(url)?.get(url.clone()))
    }

    /// A POST request, after checking the URL is allowed.
    pub fn post(&self, url: &url::Url) -> Result<RequestBuilder, Error> {
        Ok(self.client(url)?.post(url.clone()))
    }

    /// A DELETE request, after checking the URL is allowed.
    pub fn delete(&self, url: &url::Url) -> Result<RequestBuilder, Error> {
        Ok(self.client(url)?.delete(url.clone()))
    }

    /// Sends the request `build` makes, again where `retry` allows (at most three
    /// attempts, 200 then 400 ms apart), and answers as [`HttpClient::send`].
    pub(crate) fn send_retrying(
        &self,
        url: &url::Url,
        retry: Retry,
        build: &dyn Fn() -> Result<RequestBuilder, Error>,
    ) -> Result<(u16, Vec<u8>), Error> {
        let mut attempt = 1;
        loop {
            let result = self.send(build()?, url);
            let again = attempt < ATTEMPTS
                && match &result {
                    Err(Error::Send { not_delivered: true, .. }) => true,
                    Ok((status, _)) => retry.again(*status),
                    Err(_) => false,
                };
            if !again {
                return result;
            }
            std::thread::sleep(Duration::from_millis(100 << attempt));
            attempt += 1;
        }
    }

    /// Sends a request and reads at most [`MAX_BODY`] bytes of the answer.
    pub fn send(&self, request: RequestBuilder, url: &url::Url) -> Result<(u16, Vec<u8>), Error> {
        let shown = redacted(url);
        let response: Response = request.send().map_err(|e| Error::Send {
            url: shown.clone(),
            message: describe(&e),
            not_delivered: e.is_connect(),
        })?;
        let status = response.status();
        if status.is_redirection() {
            return Err(Error::Redirect { url: shown });
        }
        let body = read_capped(response, shown)?;
        Ok((status.as_u16(), body))
    }
}

/// True for the hosts a cloud metadata server answers on over plain HTTP: a link-local
/// address, Google's metadata host name, or loopback (a node-local agent, a stand-in). A
/// name is sent to only once it resolves to such addresses ([`metadata_address`]); the
/// bare `metadata` is not taken, as it resolves through the DNS search domains.
fn is_metadata_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => is_metadata_ip(ip.into()),
        Some(url::Host::Ipv6(ip)) => is_metadata_ip(ip.into()),
        Some(url::Host::Domain(name)) => {
            ["metadata.google.internal", "localhost"].iter().any(|m| name.eq_ignore_ascii_case(m))
        }
        None => false,
    }
}

/// A link-local or loopback address.
pub(crate) fn is_metadata_ip(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(ip) => ip.is_link_local() || ip.is_loopback(),
        std::net::IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => is_metadata_ip(v4.into()),
            None => ip.is_loopback() || (ip.segments()[0] & 0xffc0) == 0xfe80,
        },
    }
}

/// The addresses a metadata host name is reached at: those it resolves to, when every one
/// is link-local or loopback.
fn metadata_address(
    name: &str,
    addrs: impl IntoIterator<Item = std::net::SocketAddr>,
) -> Result<Vec<std::net::SocketAddr>, String> {
    let addrs: Vec<std::net::SocketAddr> = addrs.into_iter().collect();
    match addrs.iter().find(|a| !is_metadata_ip(a.ip())) {
        Some(other) => Err(format!("`{name}` resolves to {}, not a link-local or loopback address", other.ip())),
        None if addrs.is_empty() => Err(format!("`{name}` resolves to no address")),
        None => Ok(addrs),
    }
}

/// A cloud metadata server's answer: status, the one answer header asked for, body.
pub(crate) type MetadataAnswer = (u16, Option<String>, Vec<u8>);

/// A GET to a cloud metadata server, which speaks plain HTTP on a link-local address:
/// refused to any other host. `probe`: a 300 ms connect and 1 s overall limit, so a
/// machine without one does not wait; otherwise 2 s and 10 s. No proxy, no redirect; at
/// most [`MAX_BODY`] bytes read.
pub(crate) fn metadata_get(
    url: &url::Url,
    headers: &[(&str, &str)],
    answer_header: &str,
    probe: bool,
) -> Result<MetadataAnswer, Error> {
    static PROBE: OnceLock<Result<Client, String>> = OnceLock::new();
    static FETCH: OnceLock<Result<Client, String>> = OnceLock::new();
    if url.scheme() != "http" || !is_metadata_host(url) {
        return Err(Error::Insecure(redacted(url)));
    }
    let shown = redacted(url);
    let (cell, connect, total) = if probe {
        (&PROBE, Duration::from_millis(300), Duration::from_secs(1))
    } else {
        (&FETCH, Duration::from_secs(2), Duration::from_secs(10))
    };
    let builder = || {
        Client::builder()
            .timeout(total)
            .connect_timeout(connect)
            .user_agent(concat!("mayfly/", env!("CARGO_PKG_VERSION")))
            .redirect(redirect::Policy::none())
            .no_proxy()
    };
    let not_sent = |message: String| Error::Send { url: shown.clone(), message, not_delivered: true };
    // A name is resolved once, checked, and connected to at the addresses checked.
    let named;
    let client = match url.host() {
        Some(url::Host::Domain(name)) => {
            let port = url.port_or_known_default().unwrap_or(80);
            let addrs = std::net::ToSocketAddrs::to_socket_addrs(&(name, port))
                .map_err(|e| not_sent(format!("cannot resolve `{name}`: {e}")))?;
            let addrs = metadata_address(name, addrs).map_err(|why| Error::Send {
                url: shown.clone(),
                message: why,
                not_delivered: false,
            })?;
            named = builder().resolve_to_addrs(name, &addrs).build().map_err(|e| not_sent(e.to_string()))?;
            &named
        }
        _ => cell
            .get_or_init(|| builder().build().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|message| not_sent(message.clone()))?,
    };
    let mut request = client.get(url.clone());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().map_err(|e| Error::Send {
        url: shown.clone(),
        message: describe(&e),
        not_delivered: e.is_connect(),
    })?;
    let status = response.status().as_u16();
    let answer = response.headers().get(answer_header).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = read_capped(response, shown)?;
    Ok((status, answer, body))
}

/// An answer's body, at most [`MAX_BODY`] bytes; more is an error, not a truncation.
fn read_capped(response: Response, shown: String) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    response.take(MAX_BODY + 1).read_to_end(&mut body).map_err(|e| Error::Send {
        url: shown.clone(),
        message: e.to_string(),
        not_delivered: false,
    })?;
    if body.len() as u64 > MAX_BODY {
        return Err(Error::TooLarge(shown));
    }
    Ok(body)
}

/// A client; with `tls`, for HTTPS (without, for plain HTTP to loopback: no roots).
/// Same-origin redirects never change the scheme, so a plain client is never asked for TLS.
fn build(timeout: Duration, tls: Option<rustls::ClientConfig>) -> Result<Client, String> {
    let builder = Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("mayfly/", env!("CARGO_PKG_VERSION")))
        .redirect(same_origin_redirects())
        .no_proxy();
    match tls {
        Some(tls) => builder.tls_backend_preconfigured(tls),
        None => builder.tls_certs_only([]),
    }
    .build()
    .map_err(|e| e.to_string())
}

/// TLS 1.2 and 1.3 over HTTP/1.1, trusting the exchange's own CA certificates and the
/// system's roots, the latter loaded only for a server the former do not anchor.
fn tls_config(own: Vec<rustls::pki_types::CertificateDer<'static>>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let roots = crate::trust::Roots::new(provider.clone(), own)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(roots))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Follows a redirect only to the same origin; credentials never leave it.
fn same_origin_redirects() -> redirect::Policy {
    redirect::Policy::custom(|attempt| {
        let same = attempt.previous().last().is_some_and(|prev| prev.origin() == attempt.url().origin());
        if same && attempt.previous().len() < 3 { attempt.follow() } else { attempt.stop() }
    })
}

/// The error and its causes in one line, without the URL (callers add a redacted one).
fn describe(error: &reqwest::Error) -> String {
    let mut message = if error.is_timeout() { "timed out".to_owned() } else { String::new() };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    if message.is_empty() {
        let mut shown = error.to_string();
        if let Some(url) = error.url() {
            shown = shown.replace(url.as_str(), &redacted(url));
        }
        shown
    } else {
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_a_usable_certificate_is_named_before_any_request() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        // A well-formed PEM block whose content is not a certificate.
        std::fs::write(&file, "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n").unwrap();
        match HttpClient::new(Duration::from_secs(7), Some(&file)) {
            Err(Error::Ca { path, message }) => {
                assert_eq!(path, file.display().to_string());
                assert!(message.contains("not a usable CA certificate"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn loopback_detection() {
        for host in ["127.0.0.1", "127.0.0.1:8080", "localhost:1", "[::1]:443", "[::1]", "127.9.9.9"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["10.0.0.1", "example.com", "127.0.0.1.example.com", "localhost.evil"] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn metadata_servers_only_on_their_hosts() {
        for ok in
            ["http://169.254.169.254/x", "http://metadata.google.internal/", "http://127.0.0.1:9/", "http://[fe80::1]/"]
        {
            assert!(is_metadata_host(&url::Url::parse(ok).unwrap()), "{ok}");
        }
        for refused in ["http://metadata.example.com/", "http://metadata/", "http://10.0.0.1/", "http://[2001:db8::1]/"]
        {
            let url = url::Url::parse(refused).unwrap();
            assert!(!is_metadata_host(&url), "{refused}");
            assert!(matches!(metadata_get(&url, &[], "x", true), Err(Error::Insecure(_))), "{refused}");
        }
    }

    #[test]
    fn a_metadata_host_name_is_used_only_at_a_link_local_or_loopback_address() {
        let at = |ip: &str| std::net::SocketAddr::new(ip.parse().unwrap(), 80);
        let name = "metadata.google.internal";
        assert_eq!(metadata_address(name, [at("169.254.169.254")]), Ok(vec![at("169.254.169.254")]));
        assert_eq!(metadata_address(name, [at("::1"), at("fe80::1")]), Ok(vec![at("::1"), at("fe80::1")]));
        for addrs in [vec![at("203.0.113.9")], vec![at("169.254.169.254"), at("10.0.0.1")], vec![at("::ffff:10.0.0.1")]]
        {
            let why = metadata_address(name, addrs.clone()).unwrap_err();
            assert!(why.contains("not a link-local or loopback address"), "{addrs:?}: {why}");
        }
        assert_eq!(metadata_address(name, []), Err(format!("`{name}` resolves to no address")));
    }

    #[test]
    fn a_metadata_host_name_is_connected_to_at_the_address_checked() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let n = std::io::Read::read(&mut stream, &mut request).unwrap();
            let answer =
                "HTTP/1.1 200 OK\r\nMetadata-Flavor: Google\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
            std::io::Write::write_all(&mut stream, answer.as_bytes()).unwrap();
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        let url = url::Url::parse(&format!("http://localhost:{port}/x")).unwrap();
        let (status, flavor, body) = metadata_get(&url, &[], "Metadata-Flavor", false).unwrap();
        assert_eq!((status, flavor.as_deref(), body.as_slice()), (200, Some("Google"), &b"ok"[..]));
        assert!(server.join().unwrap().starts_with("GET /x HTTP/1.1"));
    }

    #[test]
    fn plain_http_only_to_loopback() {
        let ok = ["https://sts.example.com/token", "http://127.0.0.1:9/token", "http://localhost/x"];
        for url in ok {
            assert!(check_url(&url::Url::parse(url).unwrap()).is_ok(), "{url}");
        }
        let bad = ["http://sts.example.com/token", "ftp://127.0.0.1/", "http://127.0.0.1.nip.io/"];
        for url in bad {
            assert!(check_url(&url::Url::parse(url).unwrap()).is_err(), "{url}");
        }
    }

    #[test]
    fn redacted_urls_drop_userinfo_and_query() {
        let url = url::Url::parse("https://user:pw@h.example/p?sig=abc#f").unwrap();
        assert_eq!(redacted(&url), "https://h.example/p");
    }
}
