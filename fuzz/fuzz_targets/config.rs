//! The config file: `Config::parse` over TOML text.
//!
//! Invariants for a config that parses:
//! - every route's host and path are normalised, and its protocol is `https` or `http` to
//!   a loopback host; its identity and exchange exist;
//! - a route serves its own target (the longest match may be a more specific route for
//!   the same host), an aws route its name;
//! - a route on a registry's own exchange (publish tokens) never allows `read`;
//! - every exchange endpoint is `https`, or `http` to loopback.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mayfly_core::{Config, Operation, Target, Tool, is_loopback_url};
use mayfly_fuzz::assert_normalised;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = Config::parse(text, Path::new("config.toml")) else { return };
    for exchange in config.exchanges.values() {
        for url in std::iter::once(&exchange.token_endpoint).chain(&exchange.revocation_endpoint) {
            assert!(url.scheme() == "https" || (url.scheme() == "http" && is_loopback_url(url)), "{url}");
        }
    }
    for route in &config.routes {
        assert!(config.identities.contains_key(&route.identity), "{}: no identity", route.name);
        let exchange = config.exchanges.get(&route.exchange).expect("a route's exchange exists");
        if exchange.kind.mints_publish_only() {
            assert!(!route.operations.contains(&Operation::Read), "{}: reads on a publish-only exchange", route.name);
        }
        let target = if route.tool == Tool::Aws {
            Target::aws(&route.name).expect("an aws route's name is a target")
        } else {
            assert!(route.protocol == "https" || route.protocol == "http", "{}: {}", route.name, route.protocol);
            let target = Target::new(route.tool, &route.protocol, &route.host, route.path.as_deref())
                .expect("a route's host and path make a target");
            assert_normalised(&target);
            assert_eq!((&target.host, &target.path), (&route.host, &route.path), "{}: not normalised", route.name);
            if route.protocol == "http" {
                let url = url::Url::parse(&format!("http://{}/", route.host)).expect("a route's host is a URL host");
                assert!(is_loopback_url(&url), "{}: plain http to {}", route.name, route.host);
            }
            target
        };
        let served = config.route_for(&target).expect("a route serves its own target");
        assert_eq!((served.tool, &served.host), (route.tool, &route.host), "{}", route.name);
    }
});
