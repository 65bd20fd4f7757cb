//! Two `mayfly-sts` replicas sharing one PostgreSQL beside one replica on an embedded redb
//! file: exchanges per second and p50/p99 latency at one concurrency, in one run, for a
//! plain exchange (which checks the store is up before minting) and for an exchange
//! through a session (which also checks the session's revocation and records its use,
//! the idle clock every replica shares). The client spreads requests over the replicas
//! in turn, as a round-robin load balancer would.
//!
//! `cargo bench -p mayfly-tests --bench sts_replicas` (after `cargo build --workspace`).
//! `MAYFLY_BENCH_REQUESTS` (per measurement, 1000) and `MAYFLY_BENCH_CONCURRENCY` (64)
//! keep runs short. Needs PostgreSQL (`initdb`, `postgres`).

mod common;

use std::path::Path;
use std::process::Child;

use mayfly_core::{ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT};
use mayfly_tests::postgres::Postgres;
use mayfly_tests::{Options, Stack};
use serde_json::Value;

use common::{env_or, load, percentile};

/// A stack whose exchange keeps its state in `store` (a URL), else in a redb file, plus
/// `replicas - 1` more processes on the same config and signing key.
struct Setup {
    stack: Stack,
    urls: Vec<String>,
    others: Vec<Child>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        for child in &mut self.others {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start(store: Option<String>, replicas: usize) -> Setup {
    let stack = Stack::builder()
        .git()
        .sts_binary()
        .options(Options { subject_lifetime: 3600, ..Options::default() })
        .sts_config(move |config, dir: &Path| {
            let key = dir.join("sts-signing-key.pem");
            let pem = mayfly_sts::SigningKey::generate(mayfly_sts::Algorithm::Es256).unwrap();
            std::fs::write(&key, pem.private_pem()).unwrap();
            config.signing_key = Some(key);
            config.revocation_store = Some(store.clone().map_or_else(|| dir.join("revoked.redb"), Into::into));
        })
        .start();
    let config: mayfly_sts::ConfigFile =
        toml::from_str(&std::fs::read_to_string(stack.dir.path().join("sts.toml")).unwrap()).unwrap();
    let mut urls = vec![stack.sts.url.clone()];
    let mut others = Vec::new();
    for i in 1..replicas {
        let (listener, url) = mayfly_tests::https_listener();
        others.push(mayfly_tests::spawn_sts_on(stack.dir.path(), &format!("sts-{i}"), listener, &config));
        urls.push(url);
    }
    Setup { stack, urls, others }
}

type Form = Vec<(&'static str, String)>;

fn main() {
    let requests: usize = env_or("MAYFLY_BENCH_REQUESTS", 1000);
    let concurrency: usize = env_or("MAYFLY_BENCH_CONCURRENCY", 64);
    if !mayfly_tests::postgres::require() {
        return;
    }
    let postgres = Postgres::start();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!("mayfly-sts replicas: {requests} exchanges per row at concurrency {concurrency}");
    println!("{:<30}  {:<18}  {:>12}  {:>10}  {:>10}", "setup", "exchange", "exchanges/s", "p50", "p99");
    for (name, store, replicas) in
        [("1 replica, redb", None, 1), ("2 replicas, one PostgreSQL", Some(postgres.url()), 2)]
    {
        let setup = start(store, replicas);
        let stack = &setup.stack;
        let pem = std::fs::read(&stack.ca.ca_cert).unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
            .pool_max_idle_per_host(256)
            .build()
            .unwrap();
        let subject = stack.issuer.mint("mayfly-sts", &Value::Null);
        let base: Form = vec![
            ("grant_type", TOKEN_EXCHANGE_GRANT.to_owned()),
            ("subject_token", subject),
            ("subject_token_type", ID_TOKEN_TYPE.to_owned()),
        ];
        let git = stack.git_server().base_url.clone();
        let mut plain = base.clone();
        plain.extend([("audience", git.clone()), ("scope", "repo:org/app:read".to_owned())]);
        // A session opened at the first replica, used at all of them.
        let mut open = base.clone();
        open.extend([
            ("audience", setup.urls[0].clone()),
            ("scope", "session".to_owned()),
            ("intent", r#"{"agent":"bench","session":"s1"}"#.to_owned()),
        ]);
        let session: Value = runtime.block_on(async {
            let response = client.post(format!("{}/token", setup.urls[0])).form(&open).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json().await.unwrap()
        });
        let mut through = plain.clone();
        through.extend([
            ("actor_token", session["access_token"].as_str().unwrap().to_owned()),
            ("actor_token_type", ACCESS_TOKEN_TYPE.to_owned()),
        ]);
        // Warm the connection pools, the JWKS caches and the prepared statements.
        load(&runtime, &client, &setup.urls, &through, 100, 8);
        for (kind, form) in [("plain", &plain), ("through a session", &through)] {
            let (mut latencies, wall) = load(&runtime, &client, &setup.urls, form, requests, concurrency);
            println!(
                "{name:<30}  {kind:<18}  {:>12.0}  {:>10?}  {:>10?}",
                latencies.len() as f64 / wall.as_secs_f64(),
                percentile(&mut latencies, 0.5),
                percentile(&mut latencies, 0.99),
            );
        }
    }
}
