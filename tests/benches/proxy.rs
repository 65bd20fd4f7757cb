//! What `mayfly exec --proxy` costs: per request, a small `GET` through the proxy (the
//! token cached after the first) beside the same `GET` straight to the server, both over
//! kept-alive TLS connections, interleaved, p50 and p99; and a `git clone` of a large
//! repository (incompressible blobs in a few commits) through the proxy, and through the
//! proxy from inside `--isolate`'s sandbox, beside the same clone with the credential
//! helper, as throughput and its ratio.
//!
//! Run through `bench/run.sh`, which builds the release binaries. `MAYFLY_BENCH_REQUESTS`
//! (default 2000), `MAYFLY_BENCH_CLONE_MB` (default 200) and `MAYFLY_BENCH_CLONES`
//! (default 3) keep it short.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mayfly_core::RouteEntry;
use mayfly_tests::{Stack, bin, routes_toml};

#[allow(dead_code)]
mod common;

use common::{env_or, percentile};

/// The small answer both paths fetch.
const SMALL: &str = "a small answer, the size of a version document or a ref";

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A server that answers `GET /small` to anyone, over TLS with the stack's certificate.
fn small_server(stack: &Stack, listener: std::net::TcpListener) {
    let runtime = stack.runtime();
    let tls = runtime.block_on(stack.ca.rustls()).expect("TLS config");
    let _guard = runtime.enter();
    let server = axum_server::from_tcp_rustls(listener, tls).expect("server");
    let app = axum::Router::new().route("/small", axum::routing::get(|| async { SMALL }));
    runtime.spawn(server.serve(app.into_make_service()));
}

/// A running `mayfly exec --proxy` session whose command waits on its stdin; the proxy's
/// URL and CA bundle, as the command saw them.
struct Session {
    child: std::process::Child,
    url: String,
    bundle: Vec<u8>,
}

impl Session {
    fn start(stack: &Stack, name: &str) -> Self {
        let info = stack.work.join(format!("{name}.info"));
        let script = format!(
            "printf '%s\\n' \"$HTTPS_PROXY\" > {0}.tmp; cat \"$SSL_CERT_FILE\" >> {0}.tmp; mv {0}.tmp {0}; cat > /dev/null",
            info.display()
        );
        let child = Command::new(bin("mayfly"))
            .args(["exec", "--session", name, "--proxy", "--", "sh", "-c", &script])
            .env_clear()
            .envs(stack.env())
            .stdin(Stdio::piped())
            .spawn()
            .expect("mayfly exec runs");
        while !info.exists() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let text = std::fs::read(&info).unwrap();
        let split = text.iter().position(|b| *b == b'\n').unwrap();
        Self { child, url: String::from_utf8_lossy(&text[..split]).into_owned(), bundle: text[split + 1..].to_vec() }
    }

    fn end(mut self) {
        drop(self.child.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success());
    }
}

fn fetch(client: &reqwest::blocking::Client, url: &str) -> Duration {
    let started = Instant::now();
    let response = client.get(url).header("authorization", "Bearer direct").send().expect("answers");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().unwrap(), SMALL);
    started.elapsed()
}

fn overhead(stack: &Stack, base_url: &str) {
    let requests: usize = env_or("MAYFLY_BENCH_REQUESTS", 2000);
    let session = Session::start(stack, "bench-requests");
    let proxied = reqwest::blocking::Client::builder()
        .proxy(reqwest::Proxy::all(&session.url).unwrap())
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&session.bundle).unwrap())
        .build()
        .unwrap();
    let direct = stack.https_client();
    let url = format!("{base_url}/small");
    for _ in 0..50 {
        fetch(&proxied, &url);
        fetch(&direct, &url);
    }
    let (mut through, mut straight) = (Vec::with_capacity(requests), Vec::with_capacity(requests));
    for _ in 0..requests {
        through.push(fetch(&proxied, &url));
        straight.push(fetch(&direct, &url));
    }
    drop(proxied);
    session.end();
    let (p50, p99) = (ms(percentile(&mut through, 0.5)), ms(percentile(&mut through, 0.99)));
    let (d50, d99) = (ms(percentile(&mut straight, 0.5)), ms(percentile(&mut straight, 0.99)));
    println!("small GET, {requests} each: through the proxy p50 {p50:.3} ms p99 {p99:.3} ms");
    println!("small GET, {requests} each: direct            p50 {d50:.3} ms p99 {d99:.3} ms");
    println!("proxy adds: p50 {:.3} ms, p99 {:.3} ms (goal: under 1 ms at p50)", p50 - d50, p99 - d99);
}

/// Commits `mb` MB of random bytes, in four files and four commits, to `bare`'s `main`.
fn fill(stack: &Stack, bare: &Path, mb: usize) {
    let tree = stack.dir.path().join("big-src");
    stack.git_ok(stack.dir.path(), &["init", "-q", "-b", "main", tree.to_str().unwrap()]);
    for i in 0..4 {
        let bytes = (mb << 20) / 4;
        let out = Command::new("head")
            .args(["-c", &bytes.to_string(), "/dev/urandom"])
            .stdout(std::fs::File::create(tree.join(format!("blob-{i}.bin"))).unwrap())
            .status()
            .unwrap();
        assert!(out.success());
        stack.git_ok(&tree, &["add", "."]);
        stack.git_ok(&tree, &["commit", "-qm", &format!("blob {i}")]);
    }
    stack.git_ok(&tree, &["push", "-q", "--force", &format!("file://{}", bare.display()), "main"]);
    std::fs::remove_dir_all(&tree).unwrap();
}

/// How a clone reaches the server.
#[derive(Clone, Copy, PartialEq)]
enum Via {
    /// git with the credential helper.
    Helper,
    /// `mayfly exec --proxy`.
    Proxy,
    /// `mayfly exec --proxy --isolate` (bubblewrap's sandbox, the proxy on a socket).
    Isolated,
}

/// One clone into a fresh directory, timed, then removed; what mayfly said when it failed.
fn clone(stack: &Stack, url: &str, via: Via) -> Result<Duration, String> {
    let target = stack.work.join("clone");
    let mut command = Command::new(if via == Via::Helper { "git".into() } else { bin("mayfly") });
    match via {
        Via::Helper => {}
        Via::Proxy => {
            command.args(["exec", "--session", "bench-clone", "--proxy", "--", "git"]);
        }
        Via::Isolated => {
            command.args(["exec", "--session", "bench-isolated", "--proxy", "--isolate", "--", "git"]);
        }
    }
    command.args(["clone", "-q", url]).arg(&target).current_dir(&stack.work).env_clear().envs(stack.env());
    let started = Instant::now();
    let out = command.output().unwrap();
    let took = started.elapsed();
    let complete = target.join("blob-3.bin").exists();
    let _ = std::fs::remove_dir_all(&target);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    assert!(complete, "the clone has the repository's last blob");
    Ok(took)
}

fn throughput(stack: &Stack) {
    let mb: usize = env_or("MAYFLY_BENCH_CLONE_MB", 200);
    let rounds: usize = env_or("MAYFLY_BENCH_CLONES", 3);
    let bare = stack.git_server().create_repo("org/app.git").unwrap();
    fill(stack, &bare, mb);
    let url = stack.repo_url("org/app.git");
    let timed = |via| clone(stack, &url, via).unwrap_or_else(|e| panic!("the clone failed: {e}"));
    // Warm the page cache and every path's tokens. Where bubblewrap cannot make its
    // sandbox (or, outside CI, is not installed), the isolated row says what mayfly said,
    // and is left out; any other failure is the bench's.
    timed(Via::Helper);
    timed(Via::Proxy);
    let isolated = match clone(stack, &url, Via::Isolated) {
        Ok(_) => true,
        Err(e)
            if e.contains("bubblewrap cannot make a sandbox on this machine")
                || (e.contains("--isolate needs bubblewrap") && std::env::var("CI").as_deref() != Ok("true")) =>
        {
            println!("git clone through --isolate: not measured, mayfly said: {e}");
            false
        }
        Err(e) => panic!("the clone through --isolate failed: {e}"),
    };
    let (mut through, mut inside, mut straight) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        through.push(timed(Via::Proxy));
        if isolated {
            inside.push(timed(Via::Isolated));
        }
        straight.push(timed(Via::Helper));
    }
    let rate = |mut times: Vec<Duration>| mb as f64 / percentile(&mut times, 0.5).as_secs_f64();
    let (p, d) = (rate(through), rate(straight));
    println!("git clone of {mb} MB, median of {rounds}: through the proxy {p:.1} MB/s, direct {d:.1} MB/s");
    println!("proxy throughput: {:.0}% of direct (goal: at least 80%)", 100.0 * p / d);
    if isolated {
        let i = rate(inside);
        println!("git clone of {mb} MB, median of {rounds}: through the proxy from --isolate {i:.1} MB/s");
        println!("isolated proxy throughput: {:.0}% of direct", 100.0 * i / d);
    }
}

fn main() {
    let listener = mayfly_devstack::loopback_listener().unwrap();
    let base_url = format!("https://{}", listener.local_addr().unwrap());
    let host = base_url.trim_start_matches("https://").to_owned();
    let (audience, scope) = (base_url.clone(), format!("cluster:{host}"));
    // The exchange grants a token for the small server, as for the cluster (same claims).
    let stack = Stack::builder()
        .git()
        .kube()
        .sts_config(move |config, _| {
            let mut rule =
                config.rules.iter().find(|r| r.scopes.iter().any(|s| s.starts_with("cluster:"))).unwrap().clone();
            rule.name = Some("the benchmark's small server".into());
            rule.audiences = vec![audience.clone()];
            rule.scopes = vec![scope.clone()];
            config.rules.push(rule);
        })
        .start();
    small_server(&stack, listener);
    // The proxy verifies both upstreams against the stack's CA.
    let route = |tool: &str, host: String, path: Option<&str>| RouteEntry {
        tool: tool.into(),
        host: Some(host),
        path: path.map(Into::into),
        identity: "ci".into(),
        exchange: "sts".into(),
        operations: Some(vec!["read".into()]),
        ca_file: Some(stack.ca.ca_cert.clone()),
        ..Default::default()
    };
    let routes = routes_toml(vec![route("git", stack.git_host(), Some("org/app")), route("kubectl", host, None)]);
    stack.write_config(&routes);
    overhead(&stack, &base_url);
    throughput(&stack);
    std::io::stdout().flush().unwrap();
}
