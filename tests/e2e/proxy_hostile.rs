//! `mayfly exec --proxy` against hostile and broken clients, spoken to byte by byte: a
//! request with two lengths, oversize headers, a CONNECT to the IP literal of a routed
//! host, an SNI that differs from the CONNECT host, an HTTP/2 offer, a malformed request
//! line, and a client that does not trust the session's CA. Each gets a clean answer (or a
//! refused handshake), the upstream sees nothing it should not, and the session keeps
//! serving: a good request through it works after each.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mayfly_core::RouteEntry;
use mayfly_tests::{Stack, bin, routes_toml};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// A TCP server that records every byte each connection sends it and answers nothing:
/// what an upstream would have seen.
struct Upstream {
    port: u16,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Upstream {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let index = {
                    let mut seen = record.lock().unwrap();
                    seen.push(Vec::new());
                    seen.len() - 1
                };
                let record = record.clone();
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        record.lock().unwrap()[index].extend_from_slice(&buf[..n]);
                    }
                });
            }
        });
        Self { port, seen }
    }

    fn connections(&self) -> Vec<Vec<u8>> {
        self.seen.lock().unwrap().clone()
    }
}

/// A proxy session kept open while the test talks to its port.
struct Session {
    child: Child,
    work: PathBuf,
    /// `127.0.0.1:PORT` of the proxy.
    address: String,
    /// `Basic ...` carrying the session's secret.
    authorization: String,
    /// The bundle the session hands its command (system roots and the session CA).
    bundle: PathBuf,
    stderr: PathBuf,
}

impl Session {
    fn start(stack: &Stack, name: &str, flags: &[&str]) -> Self {
        let work = stack.work.join(name);
        std::fs::create_dir_all(&work).unwrap();
        let stderr = stack.dir.path().join(format!("{name}.stderr"));
        let script = "echo \"$HTTPS_PROXY\" > url.tmp; cp \"$SSL_CERT_FILE\" bundle.tmp; mv bundle.tmp bundle.pem; \
                      mv url.tmp url.txt; while [ ! -e done ]; do sleep 0.05; done";
        let mut child = Command::new(bin("mayfly"))
            .arg("exec")
            .args(["--session", name, "--proxy"])
            .args(flags)
            .args(["--", "sh", "-c", script])
            .current_dir(&work)
            .env_clear()
            .envs(stack.env())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("mayfly exec runs");
        let url_file = work.join("url.txt");
        while !url_file.exists() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the session ended ({status}) before it started: {}", std::fs::read_to_string(&stderr).unwrap());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let url = std::fs::read_to_string(&url_file).unwrap().trim().to_owned();
        let rest = url.strip_prefix("http://").unwrap();
        let (userinfo, address) = rest.split_once('@').unwrap();
        let authorization = format!("Basic {}", STANDARD.encode(userinfo));
        Self { child, bundle: work.join("bundle.pem"), work, address: address.to_owned(), authorization, stderr }
    }

    /// Ends the command, and with it the session; the proxy's stderr.
    fn finish(mut self) -> String {
        std::fs::write(self.work.join("done"), "").unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the session ended with {status}");
        std::fs::read_to_string(&self.stderr).unwrap()
    }

    /// A connection to the proxy's port that has sent `request` (raw bytes).
    fn raw(&self, request: &[u8]) -> TcpStream {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        stream.write_all(request).unwrap();
        stream
    }

    /// A CONNECT to `authority` that the proxy answered 200; the open tunnel.
    fn connect(&self, authority: &str) -> TcpStream {
        let (status, stream) = self.try_connect(authority);
        assert_eq!(status, 200, "CONNECT {authority}");
        stream
    }

    fn try_connect(&self, authority: &str) -> (u16, TcpStream) {
        let request = format!(
            "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nProxy-Authorization: {}\r\n\r\n",
            self.authorization
        );
        let mut stream = self.raw(request.as_bytes());
        let status = read_head(&mut stream).0;
        (status, stream)
    }

    /// TLS over a tunnel, trusting `roots`, offering `alpn`, naming `sni`.
    fn tls(
        &self,
        tunnel: TcpStream,
        sni: &str,
        roots: &Path,
        alpn: &[&str],
    ) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
        let mut store = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(roots).unwrap() {
            store.add(cert.unwrap()).unwrap();
        }
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(store)
                .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        let name = ServerName::try_from(sni.to_owned()).unwrap();
        let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut stream = rustls::StreamOwned::new(connection, tunnel);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).map_err(|e| e.to_string())?;
        }
        Ok(stream)
    }

    /// A request inside a TLS tunnel to `host` (trusting the session's bundle): the status.
    fn tls_request(&self, host: &str, request: &str) -> u16 {
        let tunnel = self.connect(host);
        let sni = host.rsplit_once(':').unwrap().0;
        let mut tls = self.tls(tunnel, sni, &self.bundle, &["http/1.1"]).expect("TLS through the proxy");
        tls.write_all(request.as_bytes()).unwrap();
        read_head(&mut tls).0
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = std::fs::write(self.work.join("done"), "");
        let _ = self.child.wait();
    }
}

/// Reads a response's head: its status and header text.
fn read_head(stream: &mut impl Read) -> (u16, String) {
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head)
}

fn routes(stack: &Stack, upstream: &Upstream) -> String {
    let route = |host: String| RouteEntry {
        tool: "git".into(),
        host: Some(host),
        path: Some("org/app".into()),
        identity: "ci".into(),
        exchange: "sts".into(),
        operations: Some(vec!["read".into()]),
        ca_file: Some(stack.ca.ca_cert.clone()),
        ..Default::default()
    };
    routes_toml(vec![route(stack.git_host()), route(format!("localhost:{}", upstream.port))])
}

#[test]
fn hostile_requests_get_clean_answers_and_the_session_keeps_serving() {
    let stack = Stack::new();
    let upstream = Upstream::start();
    stack.write_config(&routes(&stack, &upstream));
    let session = Session::start(&stack, "hostile", &[]);
    let git = stack.git_host();
    let refs = format!("GET /org/app.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: {git}\r\n\r\n");
    let good = || assert_eq!(session.tls_request(&git, &refs), 200, "a good request after a hostile one");
    good();
    let routed = format!("localhost:{}", upstream.port);

    // Both Content-Length and Transfer-Encoding: 400, in a tunnel and in absolute form.
    let smuggle = format!(
        "POST /org/app.git/git-upload-pack HTTP/1.1\r\nHost: {routed}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\n\r\n"
    );
    assert_eq!(session.tls_request(&routed, &smuggle), 400);
    let plain = format!(
        "POST http://{routed}/org/app.git/git-upload-pack HTTP/1.1\r\nHost: {routed}\r\nProxy-Authorization: {}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        session.authorization
    );
    assert_eq!(read_head(&mut session.raw(plain.as_bytes())).0, 400);
    good();

    // Oversize headers (more fields than the proxy reads): 431, on the proxy's port and
    // in a tunnel.
    let big: String = (0..150).map(|i| format!("X-Field-{i}: {i}\r\n")).collect();
    let oversize = format!("GET /org/app.git/info/refs HTTP/1.1\r\nHost: {git}\r\n{big}\r\n");
    assert_eq!(session.tls_request(&git, &oversize), 431);
    let outer = format!("CONNECT {git} HTTP/1.1\r\nHost: {git}\r\n{big}\r\n");
    assert_eq!(read_head(&mut session.raw(outer.as_bytes())).0, 431);
    good();

    // A malformed request line: 400, on the port and in a tunnel.
    assert_eq!(read_head(&mut session.raw(b"NOT A REQUEST\r\n\r\n")).0, 400);
    assert_eq!(session.tls_request(&git, "GET\r\n\r\n"), 400);
    good();

    // HTTP/2 offered beside http/1.1: http/1.1 is chosen; h2 alone: the handshake fails.
    let tls = session.tls(session.connect(&git), "127.0.0.1", &session.bundle, &["h2", "http/1.1"]).unwrap();
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let only_h2 = session.tls(session.connect(&git), "127.0.0.1", &session.bundle, &["h2"]);
    assert!(only_h2.is_err(), "an h2-only client was served");
    good();

    // An SNI that is not the CONNECT's host: refused, for either name.
    let other = session.tls(session.connect(&routed), "other.example", &session.bundle, &["http/1.1"]);
    assert!(other.is_err(), "a TLS session for another name was served");
    good();

    // A client that does not trust the session's CA (only the stack's): its handshake
    // fails, and the proxy says which variables would have carried the CA.
    let distrust = session.tls(session.connect(&git), "127.0.0.1", &stack.ca.ca_cert, &["http/1.1"]);
    assert!(distrust.is_err(), "a client that does not trust the session CA completed its handshake");
    good();

    // The IP literal of a routed host is another host, no route covers it, and it is this
    // machine's loopback: refused (CONNECT and plain http), never opened.
    let loopback = format!("127.0.0.1:{}", upstream.port);
    let (status, _) = session.try_connect(&loopback);
    assert_eq!(status, 403, "CONNECT {loopback}");
    let mut plain = session.raw(
        format!(
            "GET http://{loopback}/org/app.git/info/refs HTTP/1.1\r\nHost: {loopback}\r\nProxy-Authorization: {}\r\n\r\n",
            session.authorization
        )
        .as_bytes(),
    );
    assert_eq!(read_head(&mut plain).0, 403, "GET http://{loopback}/");
    good();

    let stderr = session.finish();
    // The upstream saw no connection at all.
    let seen = upstream.connections();
    assert!(seen.is_empty(), "the upstream saw a refused request: {seen:?}");

    assert!(stderr.contains("asked TLS for `other.example`: refused"), "{stderr}");
    let distrust_line = stderr
        .lines()
        .find(|l| l.contains(&format!("did not trust the session's certificate for `{git}`")))
        .unwrap_or_else(|| panic!("no line for the client that did not trust the CA: {stderr}"));
    for var in ["SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "GIT_SSL_CAINFO", "CARGO_HTTP_CAINFO"] {
        assert!(distrust_line.contains(var), "{distrust_line}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<serde_json::Value> =
        stack.client_audit().into_iter().filter(|l| l["session"] == "hostile" && l["tool"] == "proxy").collect();
    assert!(
        lines.iter().any(|l| l["outcome"] == "denied"
            && l["target"] == format!("127.0.0.1:{}", upstream.port)
            && l["reason"].as_str().is_some_and(|r| r.contains("a loopback address"))),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| l["outcome"] != "tunnelled"), "{lines:?}");
    assert!(lines.iter().filter(|l| l["outcome"] == "proxied").all(|l| l["target"] != routed), "{lines:?}");
}

#[test]
fn under_deny_unrouted_the_ip_literal_of_a_routed_host_is_refused() {
    let stack = Stack::new();
    let upstream = Upstream::start();
    stack.write_config(&routes(&stack, &upstream));
    let session = Session::start(&stack, "literal", &["--deny-unrouted"]);
    let (status, _) = session.try_connect(&format!("127.0.0.1:{}", upstream.port));
    assert_eq!(status, 403);
    let git = stack.git_host();
    let refs = format!("GET /org/app.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: {git}\r\n\r\n");
    assert_eq!(session.tls_request(&git, &refs), 200, "the session still serves routed hosts");
    session.finish();
    assert!(upstream.connections().is_empty(), "the refused tunnel reached the upstream");
}
