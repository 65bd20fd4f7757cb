//! What a hostile request costs `mayfly-sts`, and whether normal exchanges keep their
//! latency while such requests arrive. Reported as ratios measured in one run.
//!
//! 1. In process: the CPU time of refusing a 64 KiB scope list, and of deciding the
//!    largest request the limits let through (32 scopes of 256 bytes, each matched against
//!    patterns full of stars), beside one ordinary decision.
//! 2. Against the real binary: exchange latency alone, then while another client sends
//!    refused requests as fast as it can (bounded in count and time): small ones, then
//!    64 KiB hostile ones. On a two-core machine any flood slows the others; what matters
//!    is that a hostile request costs no more than a small one.
//!
//! `cargo bench -p mayfly-tests --bench sts_hostile` (after `cargo build --workspace`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mayfly_sts::{ExchangeAsk, Policy, Rule, Rules, VerifiedSubject};
use mayfly_tests::Stack;
use serde_json::{Value, json};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn percentile(mut samples: Vec<Duration>, p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * p) as usize]
}

fn time_each(runs: usize, mut f: impl FnMut()) -> Vec<Duration> {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect()
}

fn in_process() {
    let claims = json!({"iss": "https://issuer", "sub": "repo:org/app:ref:refs/heads/main", "repository": "org/app"});
    let subject = VerifiedSubject {
        issuer: "https://issuer".into(),
        subject: "repo:org/app:ref:refs/heads/main".into(),
        claims: claims.as_object().unwrap().clone(),
    };
    // Patterns a matcher that backtracks would choke on: many stars, near misses.
    let starry = format!("repo:{}b:read", "a*".repeat(30));
    let rules = Rules {
        rules: (0..20)
            .map(|i| Rule {
                name: format!("rule {i}"),
                issuer: "https://issuer".into(),
                claims: [("sub".to_owned(), "repo:*:ref:refs/heads/*".to_owned())]
                    .into_iter()
                    .collect::<BTreeMap<_, _>>(),
                audiences: vec!["https://*.example/*".into()],
                scopes: vec![starry.clone(), "repo:{repository}:*".into()],
                max_ttl: Duration::from_secs(900),
            })
            .collect(),
        default_ttl: Duration::from_secs(600),
    };
    let normal = vec!["repo:org/app:read".to_owned()];
    let worst: Vec<String> = (0..mayfly_core::scope::MAX_SCOPES)
        .map(|_| format!("repo:{}:read", "a".repeat(mayfly_core::scope::MAX_SCOPE_LEN - 10)))
        .collect();
    let ask = |scopes: &[String]| {
        let ask = ExchangeAsk {
            subject: &subject,
            audience: "https://git.example/x",
            scopes,
            ttl: None,
            intent: None,
            actor: None,
            approval: mayfly_sts::ApprovalState::None,
        };
        let _ = rules.decide(&ask);
    };
    let hostile_list = format!("repo:{}", "a*".repeat(32 * 1024));
    let one = median(time_each(2_000, || ask(&normal)));
    let worst_decision = median(time_each(200, || ask(&worst)));
    let refuse = median(time_each(200, || {
        let _ = mayfly_core::scope::parse_requested(&hostile_list);
    }));
    println!("in process (medians):");
    println!("  one ordinary decision                         {one:?}");
    println!(
        "  largest decision the limits allow             {worst_decision:?}  ({:.0}x)",
        ratio(worst_decision, one)
    );
    println!("  refusing a 64 KiB scope list                  {refuse:?}  ({:.0}x)", ratio(refuse, one));
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

fn against_the_binary() {
    let stack = Stack::new();
    let client = stack.https_client();
    let audience = stack.git_server().base_url.clone();
    let exchange = |client: &reqwest::blocking::Client| {
        let (status, body) =
            mayfly_tests::post_exchange(client, &stack.sts.url, &stack.issuer, &audience, "repo:org/app:read");
        assert_eq!(status, 200, "{body}");
    };
    for _ in 0..20 {
        exchange(&client);
    }
    let alone = time_each(300, || exchange(&client));

    let (small, small_sent) = loaded_by(&stack, "repo:org/x", &|| exchange(&client));
    let (hostile, hostile_sent) = loaded_by(&stack, &format!("repo:{}", "a*".repeat(30 * 1024)), &|| exchange(&client));
    println!("against mayfly-sts: exchange latency alone, beside a client flooding it with refused requests");
    println!("  ({small_sent} small and {hostile_sent} 64 KiB hostile requests were sent during the loaded runs)");
    for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
        let (a, sm, h) = (percentile(alone.clone(), p), percentile(small.clone(), p), percentile(hostile.clone(), p));
        println!(
            "  {name}: alone {a:?}; under small requests {sm:?} ({:.2}x); under hostile 64 KiB requests {h:?} ({:.2}x, {:.2}x the small flood)",
            ratio(sm, a),
            ratio(h, a),
            ratio(h, sm)
        );
    }
}

/// Exchange latencies measured while another client sends refused requests with this
/// scope as fast as it can (bounded in count and time); and how many it sent.
fn loaded_by(stack: &Stack, scope: &str, exchange: &dyn Fn()) -> (Vec<Duration>, u32) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let (stop, client, url) = (stop.clone(), stack.https_client(), stack.sts.url.clone());
        let subject = stack.issuer.mint("mayfly-sts", &Value::Null);
        let scope = scope.to_owned();
        std::thread::spawn(move || {
            let form = [
                ("grant_type", mayfly_core::TOKEN_EXCHANGE_GRANT),
                ("subject_token", subject.as_str()),
                ("subject_token_type", mayfly_core::ID_TOKEN_TYPE),
                ("audience", "https://git.example"),
                ("scope", scope.as_str()),
            ];
            let (mut sent, deadline) = (0u32, Instant::now() + Duration::from_secs(60));
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && sent < 20_000 && Instant::now() < deadline {
                let status = client.post(format!("{url}/token")).form(&form).send().map(|r| r.status().as_u16());
                assert_eq!(status.ok(), Some(400));
                sent += 1;
            }
            sent
        })
    };
    let loaded = time_each(300, exchange);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    (loaded, flood.join().unwrap())
}

fn main() {
    in_process();
    against_the_binary();
}
