//! Bench helper: fills the token cache of the environment (`MAYFLY_CACHE_DIR`,
//! `MAYFLY_RUNTIME_DIR`) with N live entries through the real cache API, each in a
//! session of its own, as finished `mayfly exec` sessions of other shells leave them.
//!
//! `cargo run -p mayfly-core --example fill_cache -- N`

use mayfly_core::{Cache, CacheEntry, Env, Origin, Secret};

fn main() {
    let count: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or_else(|| {
        eprintln!("usage: fill_cache N");
        std::process::exit(2);
    });
    let cache = Cache::open(&Env::from_os()).unwrap_or_else(|e| {
        eprintln!("fill_cache: {e}");
        std::process::exit(1);
    });
    let expires_at = i64::try_from(std::time::UNIX_EPOCH.elapsed().unwrap_or_default().as_secs()).unwrap_or(0) + 3600;
    for n in 0..count {
        let target = format!("https://git.example.com/org/repo-{n}");
        let session = format!("bench-session-{n}");
        let key = Cache::key(&["git", &target, "read", &session]);
        let entry = CacheEntry {
            token: Secret::new(format!("bench-token-{n}-0123456789abcdef0123456789abcdef")),
            expires_at,
            refresh_at: expires_at - 60,
            token_id: Some(format!("jti-{n}")),
            scope: Some(format!("repo:org/repo-{n}:read")),
            issuer: None,
            subject: None,
            label: format!("git {target} read"),
            session: Some(session),
            origin: Some(Origin {
                route: "bench".into(),
                exchange: "bench".into(),
                target,
                tool: "git".into(),
                operation: "read".into(),
            }),
            issuing_chain: Vec::new(),
        };
        let lock = cache.lock(&key).expect("lock");
        cache.put(&key, &entry, &lock).expect("put");
    }
}
