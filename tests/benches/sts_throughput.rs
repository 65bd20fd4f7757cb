//! Exchanges per CPU second: `mayfly-sts` (the real binary) deciding with 100 Cedar
//! policies scoped to organisations and hosts (five apply to the request), beside a
//! crypto-only baseline of what any exchange must do: one RS256 verify and one ES256 sign,
//! with the same crates.
//!
//! Reported: the server's CPU time per exchange (summed over its threads from
//! `/proc/PID/task/*/schedstat`, so the load generator does not count), p50/p99 latency at
//! each concurrency, and the ratio to the baseline's CPU time per operation. On a shared
//! machine the latencies are noisy; the CPU times less so.
//!
//! Each concurrency is measured twice: over kept-alive connections (`keep-alive`, as a
//! helper's client and load generators such as wrk use them), and with a new TLS
//! connection per exchange (`new conn`, a handshake each time; a tenth of the requests).
//!
//! `cargo bench -p mayfly-tests --bench sts_throughput` (after `cargo build --workspace`).
//! `MAYFLY_BENCH_REQUESTS` (per concurrency level, 400) and `MAYFLY_BENCH_CONCURRENCY`
//! (`1,8,64`) keep runs short.

mod common;

use std::time::Duration;

use mayfly_sts::{Algorithm, SigningKey};
use mayfly_tests::{Options, Stack};
use serde_json::{Value, json};

use common::{env_or, load, percentile};

const POLICIES: usize = 100;

/// 100 policies over 20 hosts and 10 organisations: each allows one organisation's
/// workloads to read or write its repositories on one host; every tenth forbids writes
/// from `main`. A read of `org0/app` on host0 meets five of them.
fn policies() -> String {
    let mut out = String::new();
    for i in 0..POLICIES {
        let (host, org) = (format!("host{}.example", i % 20), format!("org{}", i % 10));
        let (effect, action, extra) = if i % 10 == 9 {
            ("forbid", "write", " && principal.hasTag(\"ref\") && principal.getTag(\"ref\") == \"refs/heads/main\"")
        } else {
            ("permit", if i % 2 == 0 { "read" } else { "write" }, "")
        };
        out.push_str(&format!(
            "@id(\"p{i}\")\n{effect}(principal, action == Action::\"{action}\", resource is GitRepository in Host::\"{host}\")\n\
             when {{ principal.hasTag(\"repository\") && principal.getTag(\"repository\") like \"{org}/*\" && resource.path like \"{org}/*\"{extra} }};\n"
        ));
    }
    out
}

/// CPU time of every thread of a process so far.
fn process_cpu(pid: u32) -> Duration {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc") {
        let schedstat = std::fs::read_to_string(task.expect("task").path().join("schedstat")).unwrap_or_default();
        total += schedstat.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    }
    Duration::from_nanos(total)
}

/// CPU time of the calling thread so far.
fn thread_cpu() -> Duration {
    let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("/proc");
    Duration::from_nanos(schedstat.split_whitespace().next().and_then(|n| n.parse().ok()).expect("schedstat"))
}

/// CPU time of one RS256 verify plus one ES256 sign, on this thread.
fn baseline(runs: u32) -> Duration {
    let claims = json!({"iss": "https://issuer", "sub": "repo:org0/app", "aud": "mayfly-sts", "exp": 4_000_000_000u64});
    let rsa = SigningKey::generate(Algorithm::Rs256).expect("RSA key");
    let es = SigningKey::generate(Algorithm::Es256).expect("EC key");
    let subject_token = rsa.sign(None, &claims).expect("sign");
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(rsa.jwk().clone()).expect("JWK");
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&["mayfly-sts"]);
    let once = || {
        let verified = jsonwebtoken::decode::<Value>(&subject_token, &key, &validation).expect("verifies");
        es.sign(Some("at+jwt"), &verified.claims).expect("sign")
    };
    for _ in 0..50 {
        once();
    }
    let start = thread_cpu();
    for _ in 0..runs {
        std::hint::black_box(once());
    }
    (thread_cpu() - start) / runs
}

fn main() {
    let requests: usize = env_or("MAYFLY_BENCH_REQUESTS", 400);
    let levels: Vec<usize> = std::env::var("MAYFLY_BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "1,8,64".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let stack = Stack::builder()
        .options(Options { issuer_algorithm: Algorithm::Rs256, subject_lifetime: 3600, ..Options::default() })
        .start();
    let dir = stack.dir.path().join("throughput");
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::write(dir.join("policies/generated.cedar"), policies()).unwrap();
    let (listener, url) = mayfly_tests::https_listener();
    let config = mayfly_sts::ConfigFile {
        issuer: url.clone(),
        audit_log: Some(dir.join("audit.jsonl")),
        policies: vec![dir.join("policies")],
        tls: Some(stack.ca.sts_tls()),
        trusted_issuers: vec![stack.issuer.trusted(&["mayfly-sts"])],
        ..Default::default()
    };
    let mut sts = mayfly_tests::spawn_sts_on(&dir, "throughput-sts", listener, &config);
    let subject_token = stack.issuer.mint("mayfly-sts", &json!({"sub": "repo:org0/app", "repository": "org0/app"}));
    let pem = std::fs::read(&stack.ca.ca_cert).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    // No idle connection is kept: each exchange opens (and shakes hands on) its own.
    let fresh = reqwest::Client::builder()
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let form = [
        ("grant_type", mayfly_core::TOKEN_EXCHANGE_GRANT.to_owned()),
        ("subject_token", subject_token),
        ("subject_token_type", mayfly_core::ID_TOKEN_TYPE.to_owned()),
        ("audience", "https://host0.example".to_owned()),
        ("scope", "repo:org0/app:read".to_owned()),
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // Warm the connection pool, the JWKS cache and the allocator.
    load(&runtime, &client, std::slice::from_ref(&url), &form, 50, 1);

    let per_op = baseline(2_000);
    println!("mayfly-sts exchanges ({POLICIES} Cedar policies, 5 relevant; RS256 subject token, ES256 minted)");
    println!("baseline (one RS256 verify + one ES256 sign, one thread): {per_op:?} CPU per operation");
    println!(
        "{:>10}  {:>11}  {:>8}  {:>14}  {:>8}  {:>10}  {:>10}",
        "connection", "concurrency", "requests", "CPU/exchange", "ratio", "p50", "p99"
    );
    let runs =
        levels.iter().flat_map(|&c| [("keep-alive", &client, c, requests), ("new conn", &fresh, c, requests / 10)]);
    for (label, client, concurrency, requests) in runs {
        let requests = requests.max(concurrency);
        let pid = sts.id();
        let cpu_before = process_cpu(pid);
        let (mut latencies, wall) = load(&runtime, client, std::slice::from_ref(&url), &form, requests, concurrency);
        let cpu = (process_cpu(pid) - cpu_before) / u32::try_from(latencies.len()).unwrap();
        println!(
            "{label:>10}  {concurrency:>11}  {:>8}  {:>14?}  {:>7.1}x  {:>10?}  {:>10?}   ({:.0} exchanges/s wall)",
            latencies.len(),
            cpu,
            cpu.as_secs_f64() / per_op.as_secs_f64(),
            percentile(&mut latencies, 0.5),
            percentile(&mut latencies, 0.99),
            latencies.len() as f64 / wall.as_secs_f64(),
        );
    }
    let _ = sts.kill();
    let _ = sts.wait();
}
