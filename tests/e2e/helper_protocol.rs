//! The helper as git calls it: through `git credential`, hostile URLs, chained helpers,
//! and an unconfigured host that must cost nothing.

use std::io::Write;
use std::process::Stdio;

use mayfly_tests::{Stack, bin, require_tool};

/// `git credential fill` with this input; returns its stdout.
fn fill(stack: &Stack, input: &str) -> (bool, String, String) {
    let mut child = stack
        .git_cmd(&stack.work, &["credential", "fill"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn git_gets_an_ephemeral_bearer_credential_when_it_announces_authtype() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    let host = stack.git_host();
    let (ok, out, err) = fill(
        &stack,
        &format!("capability[]=authtype\ncapability[]=state\nprotocol=https\nhost={host}\npath=org/app.git\n"),
    );
    assert!(ok, "{err}");
    assert!(out.contains("\nauthtype=Bearer\n"), "{out}");
    assert!(out.contains("\nephemeral=1\n"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("credential=eyJ")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("password_expiry_utc=")), "{out}");
    assert!(!out.contains("password="), "no password for a storage helper to keep: {out}");
    assert!(!out.contains("url="));
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn old_callers_get_username_password_with_expiry() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    let (ok, out, err) = fill(&stack, &format!("protocol=https\nhost={}\npath=org/app.git\n", stack.git_host()));
    assert!(ok, "{err}");
    assert!(out.contains("username=x-access-token\n"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("password=eyJ")));
    let expiry: i64 = out.lines().find_map(|l| l.strip_prefix("password_expiry_utc=")).unwrap().parse().unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(expiry > now && expiry <= now + 600, "expiry {expiry} is the token's, at most the route's ttl");
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn a_chained_store_helper_persists_nothing() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    let key = format!("credential.{}.helper", stack.git_server().base_url);
    stack.git_ok(&stack.work, &["config", "--global", "--add", &key, "store"]);
    stack.git_ok(&stack.work, &["clone", &stack.repo_url("org/app.git"), "app"]);
    let stored = std::fs::read_to_string(stack.home.join(".git-credentials")).unwrap_or_default();
    assert!(stored.is_empty(), "git-credential-store kept: {stored}");
    stack.assert_no_tokens_on_disk();
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn newline_smuggling_in_a_url_never_reaches_the_helper() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    for url in [
        format!("{}/org/app.git%0ahost=evil.example", stack.git_server().base_url),
        format!("{}/org/app.git%0d%0ahost=evil.example", stack.git_server().base_url),
    ] {
        let out = stack.git(&stack.work, &["ls-remote", &url]);
        assert!(!out.status.success());
    }
    assert_eq!(stack.sts_issued(), 0);
}

#[test]
fn an_unconfigured_host_gets_an_empty_answer_with_no_network_and_no_cache_access() {
    let dir = tempfile::tempdir().unwrap();
    // An exchange that would notice any connection.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let endpoint = format!("http://{}/token", listener.local_addr().unwrap());
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[identities.ci]\nkind = \"github-actions\"\n\n[exchanges.x]\nkind = \"rfc8693\"\ntoken_endpoint = \"{endpoint}\"\n\n[[routes]]\ntool = \"git\"\nhost = \"git.example.com\"\nidentity = \"ci\"\nexchange = \"x\"\n"),
    )
    .unwrap();
    let (cache, runtime, audit) = (dir.path().join("cache"), dir.path().join("rt"), dir.path().join("audit.jsonl"));
    for host in ["other.example.com", "git.example.com.evil.example", "evil.git.example.com", "git.example.com:8443"] {
        let out = assert_cmd::Command::new(bin("git-credential-mayfly"))
            .arg("get")
            .env_clear()
            .env("HOME", dir.path())
            .env("MAYFLY_CONFIG", &config)
            .env("MAYFLY_CACHE_DIR", &cache)
            .env("MAYFLY_RUNTIME_DIR", &runtime)
            .env("MAYFLY_AUDIT_LOG", &audit)
            .env("ACTIONS_ID_TOKEN_REQUEST_URL", &endpoint)
            .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "x")
            .write_stdin(format!("capability[]=authtype\nprotocol=https\nhost={host}\npath=org/app.git\n"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{host}");
        assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{host}: {out:?}");
    }
    assert!(listener.accept().is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock), "a connection was made");
    assert!(!cache.exists() && !runtime.exists() && !audit.exists(), "the cache or audit log was touched");
}

#[test]
fn hostile_input_gets_one_clear_line_and_nothing_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let huge_line = format!("protocol=https\nhost=h\nwwwauth[]={}\n", "a".repeat(1 << 20));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"protocol=https\nhost=good.example\rhost=evil.example\n".to_vec(), "carriage return"),
        (b"protocol=https\nhost=h\0\n".to_vec(), "NUL"),
        (b"protocol=https\nhost=evil.example%0ahost=good.example\n".to_vec(), "encoded control character"),
        (b"protocol=https\nhost=a\nhost=b\n".to_vec(), "more than once"),
        (b"host=h\n".to_vec(), "missing `protocol`"),
        (b"protocol=https\npath=x\n".to_vec(), "missing `host`"),
        (b"protocol=https\nhost=h\nghp_0123456789abcdefghij\n".to_vec(), "not `key=value`"),
        (huge_line.into_bytes(), "larger than"),
        (vec![0xff; 64], "not UTF-8"),
    ];
    for (input, reason) in cases {
        let out = assert_cmd::Command::new(bin("git-credential-mayfly"))
            .arg("get")
            .env_clear()
            .env("HOME", dir.path())
            .env("MAYFLY_CONFIG", &config)
            .write_stdin(input)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{reason}: a panic or the wrong code");
        assert!(out.stdout.is_empty(), "{reason}: printed on stdout");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{reason}: {stderr}");
        assert!(
            stderr.starts_with("mayfly: git credential request refused: ") && stderr.contains(reason),
            "{reason}: {stderr}"
        );
        assert!(!stderr.contains("ghp_") && !stderr.contains("evil"), "a value was echoed: {stderr}");
    }
}

#[test]
fn every_helper_answers_help_and_version_and_refuses_an_unknown_verb_on_stderr() {
    let stack = Stack::new();
    let helpers = [
        ("git-credential-mayfly", Some("teleport")),
        ("docker-credential-mayfly", Some("teleport")),
        ("cargo-credential-mayfly", None),
        ("terraform-credentials-mayfly", Some("teleport")),
        ("bazel-credential-mayfly", Some("teleport")),
        ("vault-token-helper-mayfly", Some("teleport")),
        ("mayfly-kubelet-credential", Some("teleport")),
        ("mayfly-aws-credential", None),
        ("mayfly-kube-credential", None),
    ];
    let run = |helper: &str, args: &[&str]| {
        assert_cmd::Command::new(mayfly_tests::bin(helper))
            .args(args)
            .env_clear()
            .envs(stack.env())
            .write_stdin("protocol=https\nhost=x\n")
            .output()
            .unwrap()
    };
    for (helper, unknown_verb) in helpers {
        for flag in ["--help", "-h"] {
            let out = run(helper, &[flag]);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.starts_with(helper) && text.lines().count() > 2,
                "{helper} {flag}: {text}"
            );
            assert!(out.stderr.is_empty(), "{helper} {flag}");
        }
        for flag in ["--version", "-V"] {
            let out = run(helper, &[flag]);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{helper} {flag}");
            assert_eq!(text, format!("{helper} (mayfly) {}\n", env!("CARGO_PKG_VERSION")), "{helper} {flag}");
        }
        if let Some(verb) = unknown_verb.filter(|_| helper != "git-credential-mayfly") {
            let out = run(helper, &[verb, "x"][..if helper == "docker-credential-mayfly" { 1 } else { 2 }]);
            assert_eq!(out.status.code(), Some(1), "{helper}");
            assert!(out.stdout.is_empty(), "{helper}: {}", String::from_utf8_lossy(&out.stdout));
            assert_eq!(mayfly_tests::mayfly_lines(&out.stderr).len(), 1, "{helper}");
        }
    }
    // git ignores actions it does not know, silently, as its protocol asks.
    let out = run("git-credential-mayfly", &["teleport"]);
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    assert!(stack.client_audit().is_empty(), "a help request was taken for a credential request");
}
