//! cargo fetches and publishes through `mayfly exec --proxy` against the stack's
//! auth-required sparse registry: no credential provider, only a placeholder token the
//! proxy replaces with a read token for the index and downloads and a publish token for
//! the crate the publish request's metadata names.

use std::path::Path;
use std::process::{Command, Output};

use mayfly_tests::{Stack, bin};
use serde_json::Value;

use super::cargo::package_for;

/// A CARGO_HOME whose `mayfly-dev` registry takes its token from the environment.
fn cargo_home(stack: &Stack) -> std::path::PathBuf {
    let home = stack.home.join(".cargo");
    std::fs::create_dir_all(&home).unwrap();
    let config = format!(
        "[registry]\nglobal-credential-providers = [\"cargo:token\"]\n\n[registries.mayfly-dev]\nindex = \"{}\"\n",
        stack.cargo().index_url
    );
    std::fs::write(home.join("config.toml"), config).unwrap();
    home
}

/// `mayfly exec --session SESSION --proxy -- cargo ARGS` in `dir`.
fn cargo(stack: &Stack, session: &str, dir: &Path, args: &[&str]) -> Output {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let real_home = std::env::var("HOME").unwrap_or_default();
    let mut command = Command::new(bin("mayfly"));
    command
        .args(["exec", "--session", session, "--proxy", "--", &cargo])
        .args(args)
        .current_dir(dir)
        .env_clear()
        .envs(stack.env())
        .env("RUSTUP_HOME", std::env::var("RUSTUP_HOME").unwrap_or_else(|_| format!("{real_home}/.rustup")))
        .env("CARGO_HOME", cargo_home(stack))
        .env("CARGO_TERM_COLOR", "never")
        .env("CARGO_REGISTRIES_MAYFLY_DEV_TOKEN", "mayfly-proxy-placeholder");
    if let Ok(toolchain) = std::env::var("RUSTUP_TOOLCHAIN") {
        command.env("RUSTUP_TOOLCHAIN", toolchain);
    }
    command.output().expect("mayfly exec runs")
}

fn proxy_lines(stack: &Stack, session: &str) -> Vec<Value> {
    stack.client_audit().into_iter().filter(|l| l["session"] == session && l["tool"] == "proxy").collect()
}

#[test]
fn cargo_publishes_and_fetches_through_the_proxy_with_a_placeholder_token() {
    let stack = Stack::builder().git().cargo().start();
    let host = stack.cargo().base_url.trim_start_matches("http://").to_owned();
    let publish = ["publish", "--registry", "mayfly-dev", "--no-verify", "--allow-dirty"];

    let hello = package_for(&stack, "mayfly-hello", "0.1.0", "mayfly-dev", None);
    let out = cargo(&stack, "cargo-publish", &hello, &publish);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let app = package_for(&stack, "mayfly-app", "0.1.0", "mayfly-dev", Some("mayfly-hello"));
    let out = cargo(&stack, "cargo-fetch", &app, &["fetch"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The publish: one request with a publish token for the crate its metadata names.
    let lines = proxy_lines(&stack, "cargo-publish");
    assert!(
        lines.iter().any(|l| l["outcome"] == "proxied"
            && l["method"] == "PUT"
            && l["operation"] == "publish"
            && l["target"] == format!("http://{host}/mayfly-hello")
            && l["fingerprint"].is_string()),
        "{lines:?}"
    );
    // The fetch: reads of the registry as a whole, each with a token.
    let lines = proxy_lines(&stack, "cargo-fetch");
    assert!(!lines.is_empty());
    assert!(
        lines.iter().all(|l| l["outcome"] == "proxied"
            && l["operation"] == "read"
            && l["target"] == format!("http://{host}")
            && l["fingerprint"].is_string()),
        "{lines:?}"
    );
    let issued: Vec<Value> = stack.client_audit().into_iter().filter(|l| l["outcome"] == "issued").collect();
    let scopes: Vec<&str> = issued.iter().filter_map(|l| l["scope"].as_str()).collect();
    assert!(scopes.contains(&"crate:mayfly-hello:publish"), "{scopes:?}");
    assert!(scopes.contains(&"crate:*:read"), "{scopes:?}");

    // A crate the policy does not name: refused, and cargo shows why.
    let other = package_for(&stack, "mayfly-other", "0.1.0", "mayfly-dev", None);
    let out = cargo(&stack, "cargo-refused", &other, &publish);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("403"), "{stderr}");
    assert!(stderr.contains("scope `crate:mayfly-other:publish` is not allowed"), "{stderr}");
    let lines = proxy_lines(&stack, "cargo-refused");
    assert!(
        lines.iter().any(|l| l["outcome"] == "denied"
            && l["operation"] == "publish"
            && l["target"] == format!("http://{host}/mayfly-other")),
        "{lines:?}"
    );
    stack.assert_no_tokens_on_disk();
}
