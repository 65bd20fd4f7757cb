//! What the policy index saves: the cost of one scope's Cedar decision with 100 and 1,000
//! generated policies, handing Cedar every policy or only those the index selects.
//!
//! `cargo bench -p mayfly-sts --bench policy_index` (a plain binary, no harness).

use std::time::{Duration, Instant};

use mayfly_sts::VerifiedSubject;
use mayfly_sts::cedar::{Loaded, Sources};
use serde_json::json;

/// Policies spread over 50 hosts, 5 actions and 4 resource types, like an organisation
/// whose teams each own a few repositories, registries and clusters.
fn generate(n: usize) -> String {
    let actions = ["read", "write", "publish", "yank", "owners"];
    let types = ["GitRepository", "Crate", "Package", "ImageRepository"];
    let mut out = String::new();
    for i in 0..n {
        let host = format!("host{}.example", i % 50);
        let action = actions[i % actions.len()];
        let ty = types[(i / 5) % types.len()];
        let effect = if i % 7 == 0 { "forbid" } else { "permit" };
        out.push_str(&format!(
            "@id(\"p{i}\")\n{effect}(principal, action == Action::\"{action}\", resource is {ty} in Host::\"{host}\")\n\
             when {{ principal.hasTag(\"repository\") && principal.getTag(\"repository\") like \"team{}/*\" && resource.path like \"team{}/*\" }};\n",
            i % 13,
            i % 13
        ));
    }
    out
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let subject = VerifiedSubject {
        issuer: "https://issuer".into(),
        subject: "repo:team3/app".into(),
        claims: json!({"repository": "team3/app", "ref": "refs/heads/main"}).as_object().unwrap().clone(),
    };
    let scopes = vec!["repo:team3/app:write".to_owned()];
    let ask = mayfly_sts::ExchangeAsk {
        subject: &subject,
        // host1: 20 of every 1,000 policies name it, 10 of them for writes to repositories.
        audience: "https://host1.example",
        scopes: &scopes,
        ttl: Some(Duration::from_secs(600)),
        intent: None,
        actor: None,
        approval: mayfly_sts::ApprovalState::None,
    };
    println!("{:>8}  {:>12}  {:>12}  {:>8}", "policies", "all (µs)", "indexed (µs)", "handed");
    for n in [100, 1_000] {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("generated.cedar"), generate(n)).expect("write policies");
        let loaded =
            Loaded::load(&Sources { policies: vec![dir.path().to_owned()], schema: None, approval_groups: None })
                .expect("valid");
        let mut results = Vec::new();
        for indexed in [false, true] {
            let decide = || loaded.decide_scope(&ask, &scopes[0], "Workload", indexed).expect("decides");
            let reference = decide();
            for _ in 0..200 {
                assert_eq!(decide(), reference);
            }
            let samples: Vec<Duration> = (0..2_000)
                .map(|_| {
                    let start = Instant::now();
                    std::hint::black_box(decide());
                    start.elapsed()
                })
                .collect();
            results.push((median(samples), reference));
        }
        assert_eq!(results[0].1, results[1].1, "the index must not change a decision");
        println!(
            "{n:>8}  {:>12.1}  {:>12.1}  {:>8}",
            results[0].0.as_secs_f64() * 1e6,
            results[1].0.as_secs_f64() * 1e6,
            loaded.candidates_for(&ask, &scopes[0]),
        );
    }
}
