//! The real cargo, through `cargo-credential-mayfly`, against a sparse registry that checks
//! a minted token on every request: read for the index and downloads, publish for one crate.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::Ordering;

use mayfly_tests::{Stack, bin};

/// A CARGO_HOME whose only registry is the test's, with mayfly as its provider.
fn cargo_home(stack: &Stack) -> PathBuf {
    let home = stack.home.join(".cargo");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        home.join("config.toml"),
        format!(
            "[registries.mayfly-dev]\nindex = \"{}\"\ncredential-provider = [\"{}\"]\n\n[registry]\nglobal-credential-providers = []\n",
            stack.cargo.index_url,
            bin("cargo-credential-mayfly").display()
        ),
    )
    .unwrap();
    home
}

/// A crate in the work tree.
fn package(stack: &Stack, name: &str, dependency: Option<&str>) -> PathBuf {
    let dir = stack.work.join(name);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let deps = dependency
        .map(|d| format!("\n[dependencies]\n{d} = {{ version = \"0.1\", registry = \"mayfly-dev\" }}\n"))
        .unwrap_or_default();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\nlicense = \"MIT\"\ndescription = \"test\"\npublish = [\"mayfly-dev\"]\n{deps}"),
    )
    .unwrap();
    std::fs::write(dir.join("src/lib.rs"), "pub fn hello() -> &'static str { \"hello\" }\n").unwrap();
    dir
}

fn cargo(stack: &Stack, dir: &Path, args: &[&str]) -> Output {
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
    command.env("CARGO_HOME", cargo_home(stack)).env("CARGO_TERM_COLOR", "never").output().unwrap()
}

fn ok(out: &Output) {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn cargo_publishes_with_a_crate_token_and_fetches_with_a_read_token() {
    let stack = Stack::new();
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
    let stack = Stack::new();
    let other = package(&stack, "mayfly-other", None);
    let out = cargo(&stack, &other, &["publish", "--registry", "mayfly-dev", "--no-verify", "--allow-dirty"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid_scope: scope `crate:mayfly-other:publish` is not allowed"), "{stderr}");
}

#[test]
fn a_publish_token_for_one_crate_cannot_publish_another() {
    let stack = Stack::new();
    // Ask the provider, as cargo would, for a publish token for mayfly-hello.
    let request = format!(
        "{{\"v\":1,\"registry\":{{\"index-url\":\"{}\",\"name\":\"mayfly-dev\"}},\"kind\":\"get\",\"operation\":\"publish\",\"name\":\"mayfly-hello\",\"vers\":\"0.1.0\",\"cksum\":\"00\"}}\n",
        stack.cargo.index_url
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
        .put(format!("{}/api/v1/crates/new", stack.cargo.base_url))
        .header("Authorization", &token)
        .body(body)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    assert_eq!(stack.cargo.forbidden.load(Ordering::SeqCst), 1);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() { found.extend(walk(&path)) } else { found.push(path) }
    }
    found
}
