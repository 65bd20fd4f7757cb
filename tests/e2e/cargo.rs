//! The real cargo, through `cargo-credential-mayfly`, against a sparse registry that checks
//! a minted token on every request: read for the index and downloads, publish for one crate.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::Ordering;

use mayfly_devstack::{CargoRegistry, CratesIoExchange};
use mayfly_tests::{Stack, bin};

/// A CARGO_HOME whose registries are the test's, with mayfly as their provider.
fn cargo_home(stack: &Stack, registries: &[(&str, &str)]) -> PathBuf {
    let home = stack.home.join(".cargo");
    std::fs::create_dir_all(&home).unwrap();
    let provider = bin("cargo-credential-mayfly").display().to_string();
    let mut config = String::from("[registry]\nglobal-credential-providers = []\n");
    for (name, index) in [("mayfly-dev", stack.cargo().index_url.as_str())].iter().chain(registries) {
        config += &format!("\n[registries.{name}]\nindex = \"{index}\"\ncredential-provider = [\"{provider}\"]\n");
    }
    std::fs::write(home.join("config.toml"), config).unwrap();
    home
}

/// A crate in the work tree, version 0.1.0, published to `mayfly-dev`.
fn package(stack: &Stack, name: &str, dependency: Option<&str>) -> PathBuf {
    package_for(stack, name, "0.1.0", "mayfly-dev", dependency)
}

pub(super) fn package_for(
    stack: &Stack,
    name: &str,
    version: &str,
    registry: &str,
    dependency: Option<&str>,
) -> PathBuf {
    let dir = stack.work.join(name);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let deps = dependency
        .map(|d| format!("\n[dependencies]\n{d} = {{ version = \"0.1\", registry = \"mayfly-dev\" }}\n"))
        .unwrap_or_default();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!("[package]\nname = \"{name}\"\nversion = \"{version}\"\nedition = \"2021\"\nlicense = \"MIT\"\ndescription = \"test\"\npublish = [\"{registry}\"]\n{deps}"),
    )
    .unwrap();
    std::fs::write(dir.join("src/lib.rs"), "pub fn hello() -> &'static str { \"hello\" }\n").unwrap();
    dir
}

fn cargo(stack: &Stack, dir: &Path, args: &[&str]) -> Output {
    cargo_with(stack, dir, args, &[])
}

/// cargo with more registries than `mayfly-dev`.
fn cargo_with(stack: &Stack, dir: &Path, args: &[&str], registries: &[(&str, &str)]) -> Output {
    cargo_command(stack, dir, args, registries).output().unwrap()
}

fn cargo_command(stack: &Stack, dir: &Path, args: &[&str], registries: &[(&str, &str)]) -> Command {
    let mut command = toolchain_cargo(stack, dir, args);
    command.env("CARGO_HOME", cargo_home(stack, registries));
    command
}

/// cargo in `dir` with the stack's environment (and so its HOME's `.cargo`).
pub(super) fn toolchain_cargo(stack: &Stack, dir: &Path, args: &[&str]) -> Command {
    // The toolchain's own cargo (not the rustup proxy, which would look for toolchains in
    // the test's private HOME).
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(args).current_dir(dir).env_clear().envs(stack.env());
    // cargo runs `rustc -vV` through rustup's proxy, which needs the real toolchains.
    let real_home = std::env::var("HOME").unwrap_or_default();
    let rustup_home = std::env::var("RUSTUP_HOME").unwrap_or_else(|_| format!("{real_home}/.rustup"));
    command.env("RUSTUP_HOME", rustup_home);
    if let Ok(toolchain) = std::env::var("RUSTUP_TOOLCHAIN") {
        command.env("RUSTUP_TOOLCHAIN", toolchain);
    }
    command.env("CARGO_TERM_COLOR", "never");
    command
}

fn ok(out: &Output) {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn cargo_publishes_with_a_crate_token_and_fetches_with_a_read_token() {
    let stack = Stack::builder().git().cargo().start();
    let hello = package(&stack, "mayfly-hello", None);
    ok(&cargo(&stack, &hello, &["publish", "--registry", "mayfly-dev", "--no-verify", "--allow-dirty"]));
    let app = package(&stack, "mayfly-app", Some("mayfly-hello"));
    ok(&cargo(&stack, &app, &["fetch"]));
    let cached = stack.home.join(".cargo/registry/cache");
    let fetched = walk(&cached).iter().any(|p| p.ends_with("mayfly-hello-0.1.0.crate"));
    assert!(fetched, "the crate was downloaded");

    let audit = stack.client_audit();
    let scopes: Vec<&str> =
        audit.iter().filter(|l| l["outcome"] == "issued").map(|l| l["scope"].as_str().unwrap()).collect();
    assert!(scopes.contains(&"crate:*:read"), "{scopes:?}");
    assert!(scopes.contains(&"crate:mayfly-hello:publish"), "{scopes:?}");
    assert!(audit.iter().all(|l| l["tool"] == "cargo"));
    let publish = audit.iter().find(|l| l["operation"] == "publish").unwrap();
    let command: Vec<&str> = publish["process"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["argv"].as_array().unwrap())
        .filter_map(|a| a.as_str())
        .collect();
    assert!(command.contains(&"publish"), "the audit line names the command: {command:?}");
    stack.assert_no_tokens_on_disk();
}

#[test]
fn publishing_a_crate_the_policy_does_not_name_is_refused() {
    let stack = Stack::builder().git().cargo().start();
    let other = package(&stack, "mayfly-other", None);
    let out = cargo(&stack, &other, &["publish", "--registry", "mayfly-dev", "--no-verify", "--allow-dirty"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid_scope: scope `crate:mayfly-other:publish` is not allowed"), "{stderr}");
}

#[test]
fn a_publish_token_for_one_crate_cannot_publish_another() {
    let stack = Stack::builder().git().cargo().start();
    // Ask the provider, as cargo would, for a publish token for mayfly-hello.
    let request = format!(
        "{{\"v\":1,\"registry\":{{\"index-url\":\"{}\",\"name\":\"mayfly-dev\"}},\"kind\":\"get\",\"operation\":\"publish\",\"name\":\"mayfly-hello\",\"vers\":\"0.1.0\",\"cksum\":\"00\"}}\n",
        stack.cargo().index_url
    );
    let out = assert_cmd::Command::new(bin("cargo-credential-mayfly"))
        .arg("--cargo-plugin")
        .env_clear()
        .envs(stack.env())
        .write_stdin(request)
        .output()
        .unwrap();
    let answer: serde_json::Value =
        serde_json::from_str(String::from_utf8(out.stdout).unwrap().lines().nth(1).unwrap()).unwrap();
    assert_eq!(answer["Ok"]["operation_independent"], false);
    assert_eq!(answer["Ok"]["cache"], "expires");
    let token = answer["Ok"]["token"].as_str().unwrap().to_owned();
    // Publish mayfly-other with it.
    let metadata = br#"{"name":"mayfly-other","vers":"0.1.0","deps":[],"features":{}}"#;
    let mut body = Vec::new();
    body.extend((metadata.len() as u32).to_le_bytes());
    body.extend(metadata);
    body.extend(3u32.to_le_bytes());
    body.extend(b"abc");
    let client = reqwest::blocking::Client::builder().no_proxy().build().unwrap();
    let response = client
        .put(format!("{}/api/v1/crates/new", stack.cargo().base_url))
        .header("Authorization", &token)
        .body(body)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    assert_eq!(stack.cargo().forbidden.load(Ordering::SeqCst), 1);
}

/// A crates.io-like public registry and its trusted publishing exchange, where `org/app`
/// may publish `mayfly-tp`, wired with `identity` (the GitHub-style `ci`, or `given`).
fn trusted_publishing(stack: &Stack, identity: &str) -> (CratesIoExchange, CargoRegistry) {
    let exchange =
        CratesIoExchange::start(stack.runtime(), &stack.ca, &stack.issuer, &[("org/app", &["mayfly-tp"])]).unwrap();
    let registry = CargoRegistry::start_public(stack.runtime(), exchange.tokens.clone()).unwrap();
    let host = registry.base_url.trim_start_matches("http://");
    stack.write_config(&format!(
        "[exchanges.crates-io]\nkind = \"crates-io\"\ntoken_endpoint = \"{}\"\nca_file = \"{}\"\n\n{}\n[[routes]]\ntool = \"cargo\"\nprotocol = \"http\"\nhost = \"{host}\"\nidentity = \"{identity}\"\nexchange = \"crates-io\"\n",
        exchange.tokens_url,
        stack.ca.ca_cert.display(),
        stack.default_routes(),
    ));
    (exchange, registry)
}

fn publish_tp(stack: &Stack, registry: &CargoRegistry, name: &str, version: &str) -> Output {
    let dir = package_for(stack, name, version, "tp", None);
    let args = ["publish", "--registry", "tp", "--no-verify", "--allow-dirty"];
    cargo_with(stack, &dir, &args, &[("tp", &registry.index_url)])
}

#[test]
fn cargo_publishes_with_a_crates_io_trusted_publishing_token_and_logout_revokes_it() {
    let stack = Stack::builder().git().cargo().start();
    let (exchange, registry) = trusted_publishing(&stack, "ci");
    ok(&publish_tp(&stack, &registry, "mayfly-tp", "0.1.0"));
    assert_eq!(exchange.tokens.issued().len(), 1);
    let audit = stack.client_audit();
    let issued = audit.iter().find(|l| l["outcome"] == "issued").expect("an issued line");
    assert_eq!(issued["operation"], "publish");
    assert_eq!(issued["target"], format!("{}/mayfly-tp", registry.base_url));
    // The ID token was asked for crates.io's audience, not the exchange's.
    assert_eq!(stack.issuer.issued(), 1);

    // The token crates.io hands out covers the config's crates only.
    let out = publish_tp(&stack, &registry, "mayfly-untrusted", "0.1.0");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("may not publish `mayfly-untrusted`"), "{stderr}");

    // `cargo logout` revokes every token the route minted.
    let home = stack.work.clone();
    ok(&cargo_with(&stack, &home, &["logout", "--registry", "tp"], &[("tp", &registry.index_url)]));
    assert_eq!(exchange.tokens.live(), 0, "every token was revoked");
    assert_eq!(exchange.tokens.revocations(), 2);
    let revoked = stack.client_audit().iter().filter(|l| l["outcome"] == "revoked").count();
    assert_eq!(revoked, 2);
    // The next publish mints a fresh token from a fresh ID token.
    ok(&publish_tp(&stack, &registry, "mayfly-tp", "0.2.0"));
    assert_eq!(exchange.tokens.issued().len(), 3);
    for token in exchange.tokens.issued() {
        assert!(!stderr.contains(&token));
    }
    stack.assert_no_tokens_on_disk();
}

#[test]
fn a_crates_io_id_token_is_exchanged_once() {
    let stack = Stack::builder().git().cargo().start();
    let (exchange, registry) = trusted_publishing(&stack, "given");
    let id_token = stack.issuer.mint("crates.io", &serde_json::Value::Null);
    let publish = |version: &str| {
        let dir = package_for(&stack, "mayfly-tp", version, "tp", None);
        let args = ["publish", "--registry", "tp", "--no-verify", "--allow-dirty"];
        let mut command = cargo_command(&stack, &dir, &args, &[("tp", &registry.index_url)]);
        command.env("MAYFLY_TEST_SUBJECT", &id_token).output().unwrap()
    };
    ok(&publish("0.1.0"));
    let home = stack.work.clone();
    ok(&cargo_with(&stack, &home, &["logout", "--registry", "tp"], &[("tp", &registry.index_url)]));
    let out = publish("0.2.0");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exchange `crates-io` refused: JWT has already been used"), "{stderr}");
    assert!(!stderr.contains(&id_token));
    assert_eq!(exchange.tokens.issued().len(), 1);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() { found.extend(walk(&path)) } else { found.push(path) }
    }
    found
}
