//! clone, fetch and push through `git-credential-mayfly`, and every way they are refused.

use mayfly_tests::{Stack, mayfly_lines, require_tool};

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn the_exchange_binary_serves_on_the_socket_it_is_handed() {
    if !require_tool("git") {
        return;
    }
    // The real `mayfly-sts`, given its listener by socket activation rather than binding
    // the config's `listen` (the default port) itself.
    let stack = Stack::builder().git().sts_binary().start();
    stack.git_ok(&stack.work, &["clone", &stack.repo_url("org/app.git"), "app"]);
    assert_eq!(stack.sts_issued(), 1);
    let log = std::fs::read_to_string(stack.dir.path().join("sts.log")).unwrap();
    let port = stack.sts.url.rsplit(':').next().unwrap();
    assert!(log.contains(&format!("listening on 127.0.0.1:{port}")), "{log}");
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn clone_fetch_and_push_use_read_and_write_tokens_for_one_repository() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    stack.git_ok(&stack.work, &["clone", &stack.repo_url("org/app.git"), "app"]);
    let app = stack.work.join("app");
    stack.commit_file(&app, "a.txt");
    stack.git_ok(&app, &["push", "origin", "main"]);
    stack.git_ok(&app, &["fetch", "origin"]);

    let audit = stack.client_audit();
    let outcomes: Vec<(&str, &str, &str)> = audit
        .iter()
        .map(|l| (l["outcome"].as_str().unwrap(), l["operation"].as_str().unwrap(), l["scope"].as_str().unwrap()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("issued", "read", "repo:org/app:read"),
            ("issued", "write", "repo:org/app:write"),
            ("cache-hit", "read", "repo:org/app:read")
        ]
    );
    assert_eq!(stack.sts_issued(), 2, "one exchange per operation, the fetch came from the cache");
    assert_eq!(audit[0]["fingerprint"], audit[2]["fingerprint"]);
    assert_ne!(audit[0]["fingerprint"], audit[1]["fingerprint"]);
    // The audit line names the command that asked, and the subject the token was for.
    let command: Vec<&str> = audit[1]["process"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["argv"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()))
        .collect();
    assert!(command.windows(2).any(|w| w == ["push", "origin"]), "{command:?}");
    assert_eq!(audit[1]["subject"], "repo:org/app:ref:refs/heads/main");
    assert!(stack.git_server().stats.served.load(std::sync::atomic::Ordering::SeqCst) > 0);
    stack.assert_no_tokens_on_disk();
}

/// Clones `org/docs`, commits and pushes, expecting the push to fail with one `mayfly:`
/// line; returns git's output and that line.
fn refused_push_to_docs(stack: &Stack) -> (std::process::Output, Vec<String>) {
    stack.git_ok(&stack.work, &["clone", &stack.repo_url("org/docs.git"), "docs"]);
    let docs = stack.work.join("docs");
    stack.commit_file(&docs, "d.txt");
    let out = stack.git(&docs, &["push", "origin", "main"]);
    assert!(!out.status.success());
    let lines = mayfly_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    (out, lines)
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn push_is_refused_when_the_route_only_allows_read() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    let (out, lines) = refused_push_to_docs(&stack);
    assert!(lines[0].contains("does not allow write (allowed: read)"), "{}", lines[0]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("told us to quit"));
    let denied = stack.client_audit().into_iter().find(|l| l["outcome"] == "denied").expect("denial is audited");
    assert_eq!(denied["operation"], "write");
    assert_eq!(stack.sts_issued(), 1, "only the clone's read token was minted");
    stack.assert_no_tokens_on_disk();
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn the_exchange_refuses_a_write_scope_its_policy_does_not_grant() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    stack.write_config(&stack.route("org/docs", &["read", "write"], "ci"));
    let (_, lines) = refused_push_to_docs(&stack);
    assert!(lines[0].contains("refused: invalid_scope: scope `repo:org/docs:write` is not allowed"), "{}", lines[0]);
    let sts_denials: Vec<_> = stack.sts_audit().into_iter().filter(|l| l["outcome"] == "denied").collect();
    assert_eq!(sts_denials.len(), 1);
    assert_eq!(sts_denials[0]["code"], "invalid_scope");
    assert_eq!(sts_denials[0]["intent"]["operation"], "write");
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn a_token_for_one_repository_is_refused_for_another_on_the_same_host() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    // Ask the helper directly, as git would, for an org/app read token.
    let token = stack.helper_token("org/app.git");
    // Present it for org/docs through git's environment config (never argv).
    let header = format!("Authorization: Bearer {token}");
    let mut git =
        stack.git_cmd(&stack.work, &["-c", "credential.helper=", "ls-remote", &stack.repo_url("org/docs.git")]);
    git.env("GIT_CONFIG_COUNT", "1").env("GIT_CONFIG_KEY_0", "http.extraHeader").env("GIT_CONFIG_VALUE_0", &header);
    let out = git.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stack.git_server().stats.forbidden.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The same token still works where it belongs.
    let mut git =
        stack.git_cmd(&stack.work, &["-c", "credential.helper=", "ls-remote", &stack.repo_url("org/app.git")]);
    git.env("GIT_CONFIG_COUNT", "1").env("GIT_CONFIG_KEY_0", "http.extraHeader").env("GIT_CONFIG_VALUE_0", &header);
    assert!(git.output().unwrap().status.success());
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn a_repository_without_a_route_gets_no_token() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    stack.git_server().create_repo("org/secret.git").unwrap();
    let out = stack.git(&stack.work, &["ls-remote", &stack.repo_url("org/secret.git")]);
    assert!(!out.status.success());
    assert!(mayfly_lines(&out.stderr).is_empty(), "no route is not an error: the next helper may answer");
    assert!(stack.client_audit().is_empty());
    assert_eq!(stack.sts_issued(), 0);
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn the_same_server_under_another_host_name_gets_no_token() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    // localhost:PORT is the same server, but routes match hosts exactly.
    let port = stack.git_host().rsplit(':').next().unwrap().to_owned();
    let url = format!("https://localhost:{port}");
    let helper = mayfly_tests::bin("git-credential-mayfly").display().to_string();
    stack.git_ok(&stack.work, &["config", "--global", "--add", &format!("credential.{url}.helper"), &helper]);
    stack.git_ok(&stack.work, &["config", "--global", &format!("credential.{url}.useHttpPath"), "true"]);
    let out = stack.git(&stack.work, &["ls-remote", &format!("{url}/org/app.git")]);
    assert!(!out.status.success());
    assert_eq!(stack.sts_issued(), 0);
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn without_use_http_path_the_helper_explains_and_stops() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    let key = format!("credential.{}.useHttpPath", stack.git_server().base_url);
    stack.git_ok(&stack.work, &["config", "--global", &key, "false"]);
    let out = stack.git(&stack.work, &["ls-remote", &stack.repo_url("org/app.git")]);
    assert!(!out.status.success());
    let lines = mayfly_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("useHttpPath true"), "{}", lines[0]);
    assert_eq!(stack.sts_issued(), 0);
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn a_refused_token_is_erased_and_revoked_and_the_next_get_mints_a_fresh_one() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    stack.git_ok(&stack.work, &["ls-remote", &stack.repo_url("org/app.git")]);
    let first = stack.client_audit()[0]["fingerprint"].as_str().unwrap().to_owned();
    // The server stops accepting that token (as after a revocation).
    stack.git_server().revoke(&fingerprint(&first));
    let out = stack.git(&stack.work, &["ls-remote", &stack.repo_url("org/app.git")]);
    assert!(!out.status.success(), "git fails once: it sends the cached token, gets 401, calls erase");
    let audit = stack.client_audit();
    assert_eq!(audit[1]["outcome"], "cache-hit");
    assert_eq!(audit[2]["outcome"], "revoked", "erase drops the entry and revokes the token at its issuer");
    assert_eq!(audit[2]["fingerprint"], first.as_str());
    stack.git_ok(&stack.work, &["ls-remote", &stack.repo_url("org/app.git")]);
    let audit = stack.client_audit();
    assert_eq!(audit[3]["outcome"], "issued");
    assert_ne!(audit[3]["fingerprint"], first.as_str());
    assert_eq!(stack.sts_issued(), 2);
}

fn fingerprint(text: &str) -> mayfly_core::Fingerprint {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).unwrap()
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn basic_scheme_routes_present_a_username_and_the_token() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    stack.write_config(&format!(
        "{}scheme = \"basic\"\nusername = \"mayfly-bot\"\n",
        stack.route("org/app", &["read"], "ci")
    ));
    stack.git_ok(&stack.work, &["ls-remote", &stack.repo_url("org/app.git")]);
    assert_eq!(stack.sts_issued(), 1);
}

#[test]
fn the_disk_scan_finds_a_planted_token() {
    let stack = Stack::new();
    let planted = stack.home.join(".config/planted");
    std::fs::write(&planted, format!("token={}\n", stack.issuer.mint("x", &serde_json::Value::Null))).unwrap();
    let (scanned, found) = mayfly_core::scan_for_jwts(stack.dir.path());
    assert!(scanned > 0);
    assert_eq!(found, vec![planted]);
}
