//! `mayfly exec --proxy`: the real git clones and pushes through the session's proxy,
//! which adds each request's token on the way out; the command's processes never hold
//! one, and the helper inside the session refuses to hand one out.
//!
//! The stack's git server listens on `127.0.0.1`: git (libcurl) proxies loopback
//! addresses unless `NO_PROXY` names them, and the session leaves routed loopback names
//! out of `NO_PROXY`, so no host name is needed here (Go clients would need one).

use std::process::{Command, Output};

use mayfly_core::RouteEntry;
use mayfly_tests::{Stack, bin, require_tool, routes_toml};
use serde_json::Value;

/// Routes for `org/app` (read, write) and `org/docs` (read), whose upstream the proxy
/// verifies against the stack's CA.
fn proxy_routes(stack: &Stack) -> String {
    let route = |path: &str, operations: &[&str]| RouteEntry {
        tool: "git".into(),
        host: Some(stack.git_host()),
        path: Some(path.into()),
        identity: "ci".into(),
        exchange: "sts".into(),
        operations: Some(operations.iter().map(|o| (*o).to_owned()).collect()),
        ca_file: Some(stack.ca.ca_cert.clone()),
        ..Default::default()
    };
    routes_toml(vec![route("org/app", &["read", "write"]), route("org/docs", &["read"])])
}

/// `mayfly exec --session NAME --proxy [FLAGS] -- sh -c SCRIPT` in the work tree.
fn command(stack: &Stack, session: &str, flags: &[&str], script: &str) -> Command {
    let mut command = Command::new(bin("mayfly"));
    command
        .arg("exec")
        .args(["--session", session, "--proxy"])
        .args(flags)
        .args(["--", "sh", "-c", script])
        .current_dir(&stack.work)
        .env_clear()
        .envs(stack.env());
    command
}

/// [`command`], run to its end.
fn exec(stack: &Stack, session: &str, flags: &[&str], script: &str) -> Output {
    command(stack, session, flags, script).output().expect("mayfly exec runs")
}

fn proxy_lines(stack: &Stack, session: &str) -> Vec<Value> {
    stack.client_audit().into_iter().filter(|l| l["session"] == session && l["tool"] == "proxy").collect()
}

fn read(stack: &Stack, name: &str) -> String {
    std::fs::read_to_string(stack.work.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn git_clones_and_pushes_through_the_proxy_without_a_token_in_reach() {
    if !require_tool("git") {
        return;
    }
    // The user's git still names the helper: inside the session it answers nothing.
    let stack = Stack::new();
    stack.write_config(&proxy_routes(&stack));
    let host = stack.git_host();
    let script = format!(
        "set -e; echo \"$SSL_CERT_FILE\" > bundle.txt; \
         git clone -q {app} app; cd app; echo x > x.txt; git add x.txt; git commit -qm x; git push -q origin main; cd ..; \
         env > env.txt; sleep 30 & child=$!; until [ \"$(cat /proc/$child/comm)\" = sleep ]; do sleep 0.01; done; tr '\\0' '\\n' < /proc/$child/environ > child-env.txt; kill $child; \
         printf 'protocol=https\\nhost={host}\\npath=org/app.git\\n\\n' | git credential fill > fill.txt 2> fill-err.txt || true; \
         git clone -q {docs} docs; cd docs; echo d > d.txt; git add d.txt; git commit -qm d; \
         git push origin main 2> ../push-err.txt || echo push-refused",
        app = stack.repo_url("org/app.git"),
        docs = stack.repo_url("org/docs.git"),
    );
    let out = exec(&stack, "proxied", &[], &script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));

    // The push reached the server with a write token, added by the proxy.
    let log = stack.git_ok(&stack.work, &["-C", "app", "log", "--oneline", "origin/main"]);
    assert!(String::from_utf8_lossy(&log.stdout).contains(" x"));

    // No token and no helper wiring in the command's environment or its child's.
    for name in ["env.txt", "child-env.txt"] {
        let env = read(&stack, name);
        assert!(env.contains("HTTPS_PROXY=http://mayfly:"), "{name}: {env}");
        assert!(env.contains("MAYFLY_PROXY_SESSION=proxied"), "{name}");
        assert!(!env.contains("eyJ"), "{name} holds a JWT");
        assert!(!env.contains("GIT_CONFIG_COUNT"), "{name} wires a helper");
        assert!(!env.contains("ACTIONS_ID_TOKEN_REQUEST"), "{name} could get an ID token itself");
        let path = env.lines().find(|l| l.starts_with("PATH=")).unwrap_or_default();
        assert!(!path.contains("mayfly-exec-"), "{name} puts helpers on PATH: {path}");
    }
    // `git credential fill` gets nothing: the helper says why.
    assert!(!read(&stack, "fill.txt").contains("password="), "the helper answered inside the session");
    assert!(read(&stack, "fill-err.txt").contains("hands out no tokens inside `mayfly exec --proxy`"));

    // The read-only route's refusal reaches git's output as the proxy's one line.
    assert!(stdout.contains("push-refused"), "{stdout}");
    let push_err = read(&stack, "push-err.txt");
    assert!(push_err.contains("does not allow write (allowed: read)"), "{push_err}");

    // The CA bundle lived in the session's private directory and went with it.
    let bundle = read(&stack, "bundle.txt");
    let bundle = std::path::Path::new(bundle.trim());
    assert!(bundle.file_name().is_some_and(|n| n == "ca-bundle.pem"), "{}", bundle.display());
    assert!(!bundle.exists(), "the CA bundle outlived the session");

    // One audit line per proxied request: method, path, operation, decision, fingerprint.
    let lines = proxy_lines(&stack, "proxied");
    let proxied: Vec<&Value> = lines.iter().filter(|l| l["outcome"] == "proxied").collect();
    assert!(proxied.iter().any(|l| l["operation"] == "write"
        && l["method"] == "POST"
        && l["path"] == "/org/app.git/git-receive-pack"
        && l["fingerprint"].as_str().is_some_and(|f| f.starts_with("sha256:"))));
    assert!(proxied.iter().any(|l| l["operation"] == "read" && l["target"] == format!("https://{host}/org/docs")));
    assert!(
        proxied.iter().all(|l| l["fingerprint"].is_string() && l["path"].as_str().is_some_and(|p| !p.contains('?')))
    );
    let denied: Vec<&Value> = lines.iter().filter(|l| l["outcome"] == "denied").collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["operation"], "write");
    assert_eq!(denied[0]["target"], format!("https://{host}/org/docs"));
    // The broker's own lines: read and write tokens for the session, revoked at its end.
    let session: Vec<Value> = stack.client_audit().into_iter().filter(|l| l["session"] == "proxied").collect();
    let issued = session.iter().filter(|l| l["outcome"] == "issued").count();
    let revoked = session.iter().filter(|l| l["outcome"] == "revoked").count();
    assert!(issued >= 3, "app read, app write, docs read: {session:?}");
    assert_eq!(issued, revoked, "every token the proxy minted was revoked at the session's end");
    stack.assert_no_tokens_on_disk();
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn the_proxy_needs_its_secret_refuses_unrouted_loopback_and_refuses_any_unrouted_host_when_asked() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    stack.write_config(&proxy_routes(&stack));
    // The same server by another name is a host no route names; `NO_PROXY` would keep
    // `localhost` off the proxy, so the script clears it.
    let port = stack.git_host().rsplit(':').next().unwrap().to_owned();
    let ca = stack.ca.ca_cert.display().to_string();
    let unrouted = format!(
        "NO_PROXY= no_proxy= GIT_SSL_CAINFO={ca} git ls-remote https://localhost:{port}/org/app.git 2> unrouted-err.txt || true"
    );
    let no_secret = format!(
        "p=${{HTTPS_PROXY##*@}}; HTTPS_PROXY=http://$p https_proxy=http://$p git ls-remote {} 2> nosecret-err.txt || true",
        stack.repo_url("org/app.git")
    );

    let out = exec(&stack, "tunnel", &[], &format!("{unrouted}; {no_secret}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // `localhost` is this machine, and no route covers it: the proxy refuses to open it.
    let err = read(&stack, "unrouted-err.txt");
    assert!(err.contains("CONNECT tunnel failed") && err.contains("403"), "{err}");
    let refused = proxy_lines(&stack, "tunnel");
    assert!(
        refused.iter().any(|l| l["outcome"] == "denied" && l["target"] == format!("localhost:{port}")),
        "{refused:?}"
    );
    // Without the session's secret the proxy answers 407.
    let err = read(&stack, "nosecret-err.txt");
    assert!(err.contains("407"), "{err}");

    // Under --deny-unrouted: an unrouted host, and a repository no route names on a routed
    // host, are refused.
    let other = format!("git ls-remote {} 2> other-err.txt || true", stack.repo_url("org/other.git"));
    let out = exec(&stack, "allowlist", &["--deny-unrouted"], &format!("{unrouted}; {other}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = read(&stack, "unrouted-err.txt");
    assert!(err.contains("403"), "{err}");
    let err = read(&stack, "other-err.txt");
    assert!(err.contains("mayfly: no route for `https://127.0.0.1:"), "{err}");
    let denied = proxy_lines(&stack, "allowlist");
    assert!(
        denied.iter().any(|l| l["outcome"] == "denied" && l["target"] == format!("localhost:{port}")),
        "{denied:?}"
    );
}

#[test]
fn redact_hides_the_proxy_secret_in_the_commands_output() {
    let stack = Stack::builder().start();
    let out = exec(&stack, "shown", &["--redact"], "echo \"url=$HTTPS_PROXY\"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let url = stdout.lines().find_map(|l| l.strip_prefix("url=")).expect("the command printed the URL");
    assert!(url.starts_with("http://mayfly:[redacted by mayfly]@127.0.0.1:"), "{url}");
}

#[test]
fn a_command_known_to_go_around_the_proxy_is_named_and_still_runs() {
    let stack = Stack::builder().start();
    // A program run as `ssh` (here `true` under that name): SSH never passes an HTTP proxy.
    let dir = stack.dir.path().join("bypass");
    std::fs::create_dir_all(&dir).unwrap();
    // The docker CLI only asks its daemon, which never sees the session's proxy.
    for (name, why) in [
        ("ssh", "`ssh` may go around the proxy: speaks SSH, not HTTPS"),
        ("docker", "`docker` may go around the proxy: pushes and pulls are made by the docker engine"),
    ] {
        std::os::unix::fs::symlink("/bin/true", dir.join(name)).unwrap();
        let out = Command::new(bin("mayfly"))
            .args(["exec", "--proxy", "--"])
            .arg(dir.join(name))
            .current_dir(&stack.work)
            .env_clear()
            .envs(stack.env())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let lines = mayfly_tests::mayfly_lines(&out.stderr);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains(why), "{}", lines[0]);
    }
    let quiet = exec(&stack, "quiet", &[], "true");
    assert!(mayfly_tests::mayfly_lines(&quiet.stderr).is_empty(), "a shell is not warned about");
}

#[test]
#[cfg_attr(any(missing = "git", missing = "curl"), ignore = "needs git, curl: one is not installed")]
fn a_push_whose_cached_token_the_server_refuses_is_sent_again_body_and_all_with_a_fresh_one() {
    if !require_tool("git") || !require_tool("curl") {
        return;
    }
    let stack = Stack::new();
    stack.write_config(&proxy_routes(&stack));
    // The second push's pre-push hook runs after its ref advertisement (which the cached
    // write token still passes) and before its pack goes: there the server stops accepting
    // that token, so the POST carrying the pack meets the 401. Then, once the fresh token
    // is refused too, a POST whose body is over the cap (curl, 34 MB) meets one.
    let script = format!(
        "set -e; git clone -q {app} app; cd app; echo a > a.txt; git add a.txt; git commit -qm a; git push -q origin main; \
         printf '#!/bin/sh\\ntouch ../ready; while [ ! -e ../revoked ]; do sleep 0.05; done\\n' > .git/hooks/pre-push; \
         chmod +x .git/hooks/pre-push; echo b > b.txt; git add b.txt; git commit -qm b; \
         git push -q origin main 2> ../push-err.txt || echo push-failed; cd ..; \
         touch ready2; while [ ! -e revoked2 ]; do sleep 0.05; done; head -c 34000000 /dev/zero > big; \
         curl -sS -H 'Expect:' -H 'Content-Type: application/x-git-receive-pack-request' --data-binary @big \
           -o big-answer.txt -w '%{{http_code}}' {app}/git-receive-pack > big-status.txt 2> big-err.txt || true",
        app = stack.repo_url("org/app.git"),
    );
    let child = command(&stack, "replayed", &[], &script)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mayfly exec runs");
    // Waits for the script to reach `marker`, has the server refuse every write token of
    // the session so far, and lets the script go on; the tokens' fingerprints.
    let refuse_write_tokens = |marker: &str, go: &str| -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !stack.work.join(marker).exists() {
            assert!(std::time::Instant::now() < deadline, "the script never reached `{marker}`");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let tokens: Vec<String> = stack
            .client_audit()
            .into_iter()
            .filter(|l| l["session"] == "replayed" && l["outcome"] == "issued" && l["operation"] == "write")
            .filter_map(|l| l["fingerprint"].as_str().map(str::to_owned))
            .collect();
        for token in &tokens {
            stack.git_server().revoke(&serde_json::from_value(Value::String(token.clone())).unwrap());
        }
        std::fs::write(stack.work.join(go), "").unwrap();
        tokens
    };
    let write_tokens = refuse_write_tokens("ready", "revoked");
    assert_eq!(write_tokens.len(), 1, "one write token, cached for both pushes: {write_tokens:?}");
    assert_eq!(refuse_write_tokens("ready2", "revoked2").len(), 2, "the pack went with a second write token");
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains("push-failed"), "{}", read(&stack, "push-err.txt"));

    // The pack reached the server: the POST was sent again with a fresh write token.
    let log = stack.git_ok(&stack.work, &["-C", "app", "log", "--oneline", "origin/main"]);
    assert!(String::from_utf8_lossy(&log.stdout).contains(" b"), "{}", String::from_utf8_lossy(&log.stdout));
    let session: Vec<Value> = stack.client_audit().into_iter().filter(|l| l["session"] == "replayed").collect();
    let revoked = session.iter().any(|l| l["outcome"] == "revoked" && l["fingerprint"] == write_tokens[0].as_str());
    assert!(revoked, "the refused token was dropped and revoked: {session:?}");
    let resent: Vec<&Value> = session
        .iter()
        .filter(|l| {
            l["tool"] == "proxy"
                && l["method"] == "POST"
                && l["path"] == "/org/app.git/git-receive-pack"
                && l["reason"].as_str().is_some_and(|r| r.contains("sent again with a fresh token after a 401"))
        })
        .collect();
    assert_eq!(resent.len(), 1, "{session:?}");
    assert_eq!(resent[0]["outcome"], "proxied");
    assert_ne!(resent[0]["fingerprint"], write_tokens[0].as_str(), "the resent pack carried a fresh token");
    let reason = resent[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.ends_with(&format!("after a 401 to {})", write_tokens[0])), "names the refused token: {reason}");

    // A body over the cap cannot be sent again: one line, to the client and on stderr,
    // never a silent refusal; the refused token is dropped all the same. The server answers
    // before reading the body and closes, so the proxy sees either its 401 (503) or the
    // connection go (502).
    let status = read(&stack, "big-status.txt");
    assert!(status == "503" || status == "502", "{status}: {}", read(&stack, "big-err.txt"));
    let answer = read(&stack, "big-answer.txt");
    assert!(
        answer.contains("(over 32 MiB, or more than the proxy keeps at once) could not be sent again with a fresh one: run the command again")
            && answer.contains("cached token"),
        "{answer}"
    );
    let stderr = mayfly_tests::mayfly_lines(&out.stderr);
    let said: Vec<&String> = stderr.iter().filter(|l| l.contains("could not be sent again")).collect();
    assert_eq!(said.len(), 1, "{stderr:?}");
    assert!(!said[0].contains("eyJ"), "{}", said[0]);
    let session: Vec<Value> = stack.client_audit().into_iter().filter(|l| l["session"] == "replayed").collect();
    assert!(session.iter().any(|l| l["tool"] == "proxy"
        && l["outcome"] == "failed"
        && l["reason"].as_str().is_some_and(|r| r.contains("could not be sent again"))));
    assert_eq!(stack.git_server().stats.unauthorized.load(std::sync::atomic::Ordering::SeqCst), 2);
}
