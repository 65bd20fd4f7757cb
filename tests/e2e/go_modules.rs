//! The real `go` command fetching a module through a loopback HTTPS module proxy that takes
//! only tokens minted for each file's path, with `GOAUTH=git DIR`: Go asks
//! `git credential fill` for every proxy file's URL, and git asks `git-credential-mayfly`.

use std::path::{Path, PathBuf};
use std::process::Output;

use mayfly_devstack::{GO_MODULES, GO_VERSION, go_greeting};
use mayfly_tests::{Stack, go_binary};

/// A main module requiring `module`, and `go list` of that module's directory, run in the
/// stack's isolated environment with the proxy, the CA and git as Go's credential source.
fn go_list(stack: &Stack, go: &Path, module: &str) -> Output {
    let app = stack.work.join(format!("app-{}", module.replace('/', "-")));
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(
        app.join("go.mod"),
        format!("module example.test/app\n\ngo 1.21\n\nrequire {module} {GO_VERSION}\n"),
    )
    .unwrap();
    std::process::Command::new(go)
        .args(["list", "-f", "{{.Dir}}", module])
        .current_dir(&app)
        .env_clear()
        .envs(stack.env())
        .env("GOAUTH", format!("git {}", stack.work.display()))
        .env("GOPROXY", &stack.go_proxy().base_url)
        // The module cache stays writable, so the stack's directory can be removed.
        .env("GOFLAGS", "-mod=mod -modcacherw")
        .env("GOSUMDB", "off")
        .env("GONOSUMDB", "mayfly.example")
        .env("GOTOOLCHAIN", "local")
        .env("GOTELEMETRY", "off")
        .env("GOPATH", stack.home.join("go"))
        .env("SSL_CERT_FILE", &stack.ca.ca_cert)
        .output()
        .expect("go runs")
}

#[test]
#[cfg_attr(missing = "go", ignore = "needs go, which is not installed")]
fn go_downloads_a_module_with_a_token_per_proxy_file() {
    let Some(go) = go_binary() else { return };
    let stack = Stack::builder().go_proxy().start();
    let module = GO_MODULES[0];
    let out = go_list(&stack, &go, module);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "go list failed:\n{stderr}");
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(dir.ends_with(format!("{module}@{GO_VERSION}")), "{dir:?}");
    let source = std::fs::read_to_string(dir.join("greeting.go")).expect("the module's source was unpacked");
    assert!(source.contains(&go_greeting(module)), "{source}");

    // Every file Go fetched was authorised by a token for that file's path alone.
    let served = stack.go_proxy().served();
    for suffix in [".mod", ".zip"] {
        let file = format!("{module}/@v/{GO_VERSION}{suffix}");
        assert!(served.contains(&file), "{file} was not served: {served:?}");
    }
    assert!(served.iter().all(|path| path.starts_with(&format!("{module}/@v/"))), "{served:?}");
    let mut distinct = served.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(stack.sts_issued(), distinct.len(), "one exchange per proxy file");

    let host = stack.go_proxy().base_url.trim_start_matches("https://").to_owned();
    let audit = stack.client_audit();
    for file in &distinct {
        let target = format!("https://{host}/{file}");
        assert!(
            audit.iter().any(|l| l["tool"] == "git" && l["target"] == target.as_str()),
            "no audit line for {target}: {audit:?}"
        );
    }
    let scopes: Vec<String> =
        stack.sts_audit().iter().filter(|l| l["outcome"] == "issued").map(|l| l["scope"].to_string()).collect();
    for file in &distinct {
        assert!(scopes.iter().any(|s| s.contains(&format!("repo:{file}:read"))), "{file}: {scopes:?}");
    }
    stack.assert_no_tokens_on_disk();
}

#[test]
#[cfg_attr(missing = "go", ignore = "needs go, which is not installed")]
fn a_module_no_route_covers_gets_no_token() {
    let Some(go) = go_binary() else { return };
    let stack = Stack::builder().go_proxy().start();
    let module = GO_MODULES[1];
    let out = go_list(&stack, &go, module);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "go list of an unrouted module succeeded:\n{stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    assert!(stack.go_proxy().served().is_empty(), "{:?}", stack.go_proxy().served());
    assert!(stack.go_proxy().refused() >= 1);
    assert!(stack.sts_audit().is_empty(), "the exchange was asked: {:?}", stack.sts_audit());
    assert!(stack.client_audit().iter().all(|l| l["outcome"] != "issued"), "{:?}", stack.client_audit());
}
