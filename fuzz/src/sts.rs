//! The exchange (`mayfly-sts`) behind the fuzz targets of its HTTP endpoints, driven
//! in-process through its router.
//!
//! Inputs are HTTP-like text: a request line `METHOD /path?query`, header lines
//! `Name: value`, a blank line, the body. Before the request is built, placeholders are
//! replaced with tokens made for this one run, so the fuzzer can reach the code behind a
//! valid signature:
//!
//! | placeholder | replaced with |
//! |---|---|
//! | `@TOKEN@` | a token this exchange minted (fresh `jti`), for `TOKEN_AUDIENCE` with `TOKEN_SCOPE` |
//! | `@EXPIRED@` | the same, expired an hour ago |
//! | `@FOREIGN@` | a token of the same shape signed by another key |
//! | `@BASIC@` | `base64("user:" + @TOKEN@)`, a registry client's Basic credentials |
//! | `@CLIENT@` | `base64("auditor:s3cret")`, the introspection client's Basic credentials |
//! | `@SUBJECT@` | an ID token of the trusted issuer (`SUBJECT_CLAIMS`), fresh `jti` |
//!
//! The trusted issuer's JWKS is served on loopback by a thread of the harness.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use mayfly_sts::{Algorithm, Config, SigningKey, Sts};
use serde_json::{Value, json};
use tower::ServiceExt;

/// The exchange's issuer.
pub const ISSUER: &str = "https://sts.example";
/// The audience of `@TOKEN@`: a registry service.
pub const TOKEN_AUDIENCE: &str = "registry.example.com:5000";
/// The scopes of `@TOKEN@`.
pub const TOKEN_SCOPE: &str = "oci:registry.example.com:5000/team/*:write oci:registry.example.com:5000/*:read oci:other.example/app:write repo:org/app:write";
/// The audience the trusted issuer's ID tokens carry.
pub const SUBJECT_AUDIENCE: &str = "mayfly-sts";
/// The scopes the one rule allows the trusted issuer's workload.
pub const RULE_SCOPES: [&str; 2] = ["repo:{repository}:read", "oci:registry.example.com:5000/{repository}:*"];
/// The audiences the one rule allows.
pub const RULE_AUDIENCES: [&str; 2] = ["https://git.example.com", "registry.example.com:5000"];
/// Longest lifetime the rule grants, in seconds.
pub const RULE_MAX_TTL: u64 = 900;

/// What a request got.
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// True when the answer forbids caching, as RFC 6749 asks of token responses.
    pub fn no_store(&self) -> bool {
        self.headers.get("cache-control").is_some_and(|v| v == "no-store")
    }
}

/// The request a fuzz input stood for, after the placeholders were replaced.
pub struct Asked {
    /// The method.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query's pairs.
    pub query: Vec<(String, String)>,
    /// Header lines as given (name, value).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The body's form pairs (whatever its content type).
    pub form: Vec<(String, String)>,
    /// `@TOKEN@` as replaced.
    pub token: String,
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    key: SigningKey,
    other_key: SigningKey,
    issuer_key: SigningKey,
    issuer: String,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let issuer_key = SigningKey::generate(Algorithm::Es256).expect("an issuer key");
        let issuer = serve_jwks(json!({"keys": [issuer_key.jwk()]}));
        let config = format!(
            r#"
issuer = "{ISSUER}"
audit_log = "/dev/null"
max_ttl = "1h"

[[trusted_issuers]]
issuer = "{issuer}"
audiences = ["{SUBJECT_AUDIENCE}"]
jwks_uri = "{issuer}/jwks"

[[rules]]
name = "workload"
issuer = "{issuer}"
claims = {{ repository_owner = "org" }}
audiences = {audiences}
scopes = {scopes}
max_ttl = "15m"

[[introspection_clients]]
id = "auditor"
secret_sha256 = "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0"
"#,
            audiences = json!(RULE_AUDIENCES),
            scopes = json!(RULE_SCOPES),
        );
        let config = Config::parse(&config).expect("the exchange's config is valid");
        let key = SigningKey::generate(Algorithm::Es256).expect("a signing key");
        let copy = SigningKey::from_pem(key.private_pem()).expect("the key reads back");
        let sts = Sts::new(config, Some(key)).expect("the exchange starts");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        Harness {
            runtime,
            router: Arc::new(sts).router(),
            key: copy,
            other_key: SigningKey::generate(Algorithm::Es256).expect("another key"),
            issuer_key,
            issuer,
        }
    })
}

/// Serves `jwks` at `http://127.0.0.1:PORT/jwks` from a thread; returns the base URL.
fn serve_jwks(jwks: Value) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let base = format!("http://{}", listener.local_addr().expect("a bound address"));
    let body = jwks.to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&chunk[..n]),
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body.as_bytes()));
        }
    });
    base
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn jti() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("fuzz-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

fn minted(key: &SigningKey, exp: i64) -> String {
    let claims = json!({
        "iss": ISSUER, "sub": "repo:org/app", "aud": TOKEN_AUDIENCE, "scope": TOKEN_SCOPE,
        "iat": exp - 600, "nbf": exp - 600, "exp": exp, "jti": jti(), "client_id": "mayfly",
    });
    key.sign(Some("at+jwt"), &claims).expect("sign a token")
}

/// The trusted issuer's ID token claims (without `iss`, `jti` and times).
pub fn subject_claims() -> Value {
    json!({"sub": "repo:org/app:ref:refs/heads/main", "aud": SUBJECT_AUDIENCE, "repository": "org/app", "repository_owner": "org"})
}

fn subject_token(harness: &Harness) -> String {
    let mut claims = subject_claims();
    let now = now();
    claims["iss"] = json!(harness.issuer);
    claims["jti"] = json!(jti());
    claims["iat"] = json!(now);
    claims["exp"] = json!(now + 300);
    harness.issuer_key.sign(Some("JWT"), &claims).expect("sign an ID token")
}

/// Reads a fuzz input as a request, replaces its placeholders, sends it, and returns
/// what was asked and answered. `paths` are the paths the target may ask for; any other
/// path is replaced with the first. `None` when the HTTP layer could not carry the
/// request (a bad method, URI or header).
pub fn exchange(data: &[u8], paths: &[&str]) -> Option<(Asked, Answer)> {
    let harness = harness();
    let token = minted(&harness.key, now() + 600);
    let replace = |text: &[u8]| -> Vec<u8> {
        let text = String::from_utf8_lossy(text);
        if !text.contains('@') {
            return text.into_owned().into_bytes();
        }
        text.replace("@TOKEN@", &token)
            .replace("@EXPIRED@", &minted(&harness.key, now() - 3600))
            .replace("@FOREIGN@", &minted(&harness.other_key, now() + 600))
            .replace("@BASIC@", &STANDARD.encode(format!("user:{token}")))
            .replace("@CLIENT@", &STANDARD.encode("auditor:s3cret"))
            .replace("@SUBJECT@", &subject_token(harness))
            .into_bytes()
    };
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let head = String::from_utf8_lossy(head).into_owned();
    let mut lines = head.split('\n');
    let request_line = lines.next().unwrap_or_default();
    let (method, target) = request_line.split_once(' ').unwrap_or((request_line, ""));
    // A fragment never reaches the server.
    let target = target.split_once('#').map_or(target, |(before, _)| before);
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = if paths.contains(&path) { path } else { paths[0] };
    let query = String::from_utf8(replace(query.as_bytes())).expect("replaced text is UTF-8");
    let body = replace(body);
    let mut builder = Request::builder().method(method).uri(format!("{path}?{query}"));
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = String::from_utf8(replace(value.trim().as_bytes())).expect("replaced text is UTF-8");
        headers.push((name.to_owned(), value.clone()));
        builder = builder.header(name, value);
    }
    let asked = Asked {
        method: method.to_owned(),
        path: path.to_owned(),
        query: url::form_urlencoded::parse(query.as_bytes()).into_owned().collect(),
        headers,
        form: url::form_urlencoded::parse(&body).into_owned().collect(),
        body: body.clone(),
        token,
    };
    let request = builder.body(Body::from(body)).ok()?;
    let answer = harness.runtime.block_on(async {
        let response = harness.router.clone().oneshot(request).await.expect("the router is infallible");
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.expect("a response body");
        Answer { status: parts.status, headers: parts.headers, body: body.to_vec() }
    });
    Some((asked, answer))
}

/// The payload of a compact JWS, unverified.
pub fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("a compact JWS");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON claims")
}

/// The issuer base URL of the trusted issuer.
pub fn trusted_issuer() -> &'static str {
    &harness().issuer
}
