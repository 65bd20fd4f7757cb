//! `mayfly status`, `audit`, `explain` and `generate` against a real stack: what they show
//! matches the cache and the audit log, and no token ever reaches their output.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use mayfly_core::contains_jwt;
use mayfly_tests::{Stack, bin, require_tool};
use serde_json::Value;

/// `mayfly ARGS` with the stack's environment (plus `extra`), in its work tree.
fn mayfly_with(stack: &Stack, args: &[&str], extra: &[(&str, &str)]) -> Output {
    let out = Command::new(bin("mayfly"))
        .args(args)
        .current_dir(&stack.work)
        .env_clear()
        .envs(stack.env())
        .envs(extra.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("mayfly runs");
    assert!(!contains_jwt(&out.stdout) && !contains_jwt(&out.stderr), "a token in the output of {args:?}");
    out
}

fn mayfly(stack: &Stack, args: &[&str]) -> Output {
    mayfly_with(stack, args, &[])
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("UTF-8 output")
}

/// Clones `org/app` and pushes to it: a read and a write token, minted and cached.
fn clone_and_push(stack: &Stack) {
    stack.git_ok(&stack.work, &["clone", "-q", &stack.repo_url("org/app.git"), "app"]);
    let app = stack.work.join("app");
    stack.commit_file(&app, "a.txt");
    stack.git_ok(&app, &["push", "-q", "origin", "main"]);
}

fn issued_fingerprint(stack: &Stack, operation: &str) -> String {
    let audit = stack.client_audit();
    let line = audit.iter().find(|l| l["outcome"] == "issued" && l["operation"] == operation).expect("an issued line");
    line["fingerprint"].as_str().unwrap().to_owned()
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn status_lists_cached_tokens_by_fingerprint_and_identities_by_claims_only() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    clone_and_push(&stack);
    // The env identity holds a real ID token: status shows its claims, never it.
    let subject = stack.issuer.mint("mayfly-sts", &Value::Null);
    let extra = [("MAYFLY_TEST_SUBJECT", subject.as_str())];

    let out = mayfly_with(&stack, &["status", "--json"], &extra);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout(&out).contains(&subject));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = status["cache"]["entries"].as_array().unwrap();
    let app = stack.repo_url("org/app");
    for operation in ["read", "write"] {
        let entry = entries
            .iter()
            .find(|e| e["kind"] == "token" && e["operation"] == operation && e["target"] == app.as_str())
            .unwrap_or_else(|| panic!("no {operation} entry in {entries:?}"));
        assert_eq!(entry["fingerprint"], issued_fingerprint(&stack, operation).as_str());
        assert_eq!(entry["tool"], "git");
        assert_eq!(entry["scope"], format!("repo:org/app:{operation}"));
        assert_eq!(entry["served"], true);
        assert!(entry["seconds_left"].as_i64().unwrap() > 60);
        assert!(entry["token_id"].is_string() && entry["route"].is_string() && entry["exchange"] == "sts");
    }
    // GitHub Actions' ID token cost a round trip, so it is cached too, and marked as such.
    let subject_entry = entries.iter().find(|e| e["kind"] == "subject-token").expect("the subject token's entry");
    assert_eq!(subject_entry["identity"], "ci");

    let identities = status["identities"].as_array().unwrap();
    let given = identities.iter().find(|i| i["name"] == "given").unwrap();
    assert_eq!(given["kind"], "env");
    assert_eq!(given["token"]["iss"], stack.issuer.issuer());
    assert_eq!(given["token"]["sub"], "repo:org/app:ref:refs/heads/main");
    assert_eq!(given["token"]["aud"], serde_json::json!(["mayfly-sts"]));
    assert!(given["token"]["exp"].is_i64());
    let ci = identities.iter().find(|i| i["name"] == "ci").unwrap();
    assert_eq!((&ci["kind"], &ci["audience"]), (&Value::from("github-actions"), &Value::from("mayfly-sts")));
    assert!(status["config"]["path"].as_str().unwrap().ends_with("mayfly/config.toml"));
    assert!(status["audit_log"].as_str().unwrap().ends_with("audit.jsonl"));
    assert!(status["cache"]["key_dir"].as_str().unwrap().starts_with(stack.runtime_dir.path().to_str().unwrap()));

    // The table says the same, for people.
    let out = mayfly_with(&stack, &["status"], &extra);
    let text = stdout(&out);
    assert!(out.status.success());
    assert!(text.contains("cached tokens: 3"), "{text}");
    assert!(text.contains(&issued_fingerprint(&stack, "write")), "{text}");
    assert!(text.contains("subject token of identity `ci`"), "{text}");
    assert!(text.contains("sub repo:org/app:ref:refs/heads/main"), "{text}");
    assert!(!text.contains(&subject));
}

#[test]
fn status_without_a_memory_backed_key_store_says_so_and_shows_the_rest() {
    let stack = Stack::new();
    let on_disk = stack.dir.path().join("not-memory-backed").display().to_string();
    let out = mayfly_with(&stack, &["status"], &[("MAYFLY_RUNTIME_DIR", &on_disk)]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let off: Vec<&str> = text.lines().filter(|l| l.contains("cannot be opened")).collect();
    assert_eq!(off.len(), 1, "{text}");
    assert!(text.contains("identity sources: 2") && text.contains("audit log"), "{text}");
    let out = mayfly_with(&stack, &["status", "--json"], &[("MAYFLY_RUNTIME_DIR", &on_disk)]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(status["cache"]["error"].as_str().unwrap().contains("memory-backed"), "{status}");
    assert_eq!(status["identities"].as_array().unwrap().len(), 2);
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn audit_filters_by_outcome_and_session() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    clone_and_push(&stack);
    let session = Command::new(bin("mayfly"))
        .args(["exec", "--session", "views-1", "--", "git", "clone", "-q", &stack.repo_url("org/docs.git"), "docs"])
        .current_dir(&stack.work)
        .env_clear()
        .envs(stack.env())
        .output()
        .unwrap();
    assert!(session.status.success(), "{}", String::from_utf8_lossy(&session.stderr));
    let log = stack.client_audit();

    let out = mayfly(&stack, &["audit", "--outcome", "issued", "--json"]);
    assert!(out.status.success());
    let issued: Vec<Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let expected: Vec<&Value> = log.iter().filter(|l| l["outcome"] == "issued").collect();
    assert_eq!(issued.iter().collect::<Vec<_>>(), expected);
    assert_eq!(issued.len(), 3, "read and write of org/app, read of org/docs");

    let out = mayfly(&stack, &["audit", "--session", "views-1", "--json"]);
    let lines: Vec<Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let expected: Vec<&Value> = log.iter().filter(|l| l["session"] == "views-1").collect();
    assert_eq!(lines.iter().collect::<Vec<_>>(), expected);
    let outcomes: Vec<&str> = lines.iter().map(|l| l["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes.first(), Some(&"session-started"));
    assert_eq!(outcomes.last(), Some(&"session-ended"));
    assert!(outcomes.contains(&"issued") && outcomes.contains(&"revoked"), "{outcomes:?}");

    // People get one line per event, the command included.
    let out = mayfly(&stack, &["audit", "--session", "views-1"]);
    let text = stdout(&out);
    assert_eq!(text.lines().count(), lines.len(), "{text}");
    assert!(text.lines().next().unwrap().contains("$ git clone -q"), "{text}");
    let docs_fingerprint = lines.iter().find(|l| l["outcome"] == "issued").unwrap()["fingerprint"].as_str().unwrap();
    assert!(text.contains(docs_fingerprint), "{text}");

    let out = mayfly(&stack, &["audit", "--outcome", "issued"]);
    let text = stdout(&out);
    let commands: Vec<&str> = text.lines().map(|l| l.split("  $ ").nth(1).unwrap_or_default()).collect();
    assert_eq!(commands[1], "git push -q origin main", "the tool's command, not the helper's: {text}");

    let out = mayfly(&stack, &["audit", "--target", "ORG/DOCS", "--tool", "git", "--since", "1h", "--json"]);
    assert_eq!(stdout(&out).lines().count(), log.iter().filter(|l| l["target"] == stack.repo_url("org/docs")).count());
    let out = mayfly(&stack, &["audit", "--since", "2000-01-01T00:00:00Z", "--outcome", "denied"]);
    assert!(out.status.success() && out.stdout.is_empty());
    let out = mayfly(&stack, &["audit", "--since", "yesterday"]);
    assert!(!out.status.success());
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn audit_follow_prints_lines_as_they_are_appended_and_stops_on_sigint() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    stack.git_ok(&stack.work, &["clone", "-q", &stack.repo_url("org/app.git"), "app"]);
    let log_path = stack.home.join(".local/state/mayfly/audit.jsonl");
    let mut child = Command::new(bin("mayfly"))
        .args(["audit", "--follow", "--json"])
        .env_clear()
        .envs(stack.env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (send, lines) = mpsc::channel();
    let output = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            let _ = send.send(line);
        }
    });
    let next = |what: &str| -> Value {
        let line = lines.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|_| panic!("no {what} line"));
        serde_json::from_str(&line).unwrap()
    };
    assert_eq!(next("existing")["outcome"], "issued", "what was there is printed first");

    // Another process appends, and a torn line is skipped, not fatal.
    let app = stack.work.join("app");
    stack.git_ok(&app, &["fetch", "-q", "origin"]);
    let hit = next("appended");
    assert_eq!(hit["outcome"], "cache-hit");
    let mut log = std::fs::OpenOptions::new().append(true).open(&log_path).unwrap();
    log.write_all(b"{\"torn\": \n").unwrap();
    stack.git_ok(&app, &["fetch", "-q", "origin"]);
    assert_eq!(next("second appended")["outcome"], "cache-hit");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let (done, finished) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let out = finished.recv_timeout(Duration::from_secs(10)).expect("--follow stops on SIGINT").unwrap();
    assert!(out.status.success(), "SIGINT ends --follow normally: {:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("skipped 1 malformed line(s)"), "{stderr}");
    let _ = waiter.join();
    let _ = reader.join();
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn explain_names_the_route_the_denial_and_what_the_exchange_grants() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    stack.git_ok(&stack.work, &["clone", "-q", &stack.repo_url("org/app.git"), "app"]);

    // A read-only route: write is refused before any exchange.
    let out = mayfly(&stack, &["explain", "git", &stack.repo_url("org/docs"), "--operation", "write"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("`git:{}/org/docs`", stack.git_host())), "{text}");
    assert!(text.contains("write: not allowed by this route (allowed: read)"), "{text}");
    assert!(text.contains("repo:org/docs:write") && text.contains("`ci` (github-actions"), "{text}");

    // A cached read token is found, by the fingerprint the audit log has.
    let out = mayfly(&stack, &["explain", "git", &stack.repo_url("org/app.git")]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("{} expires", issued_fingerprint(&stack, "read"))), "{text}");
    assert!(text.contains(&format!("{}/token", stack.sts.url)), "the exchange's endpoint: {text}");

    // --exchange mints for real, says what was granted, and ends the token at once.
    let before = stack.sts_issued();
    let out = mayfly(&stack, &["explain", "git", &stack.repo_url("org/app"), "--operation", "write", "--exchange"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stack.sts_issued(), before + 1);
    let minted = stack.client_audit().into_iter().rfind(|l| l["outcome"] == "issued").unwrap();
    let fingerprint = minted["fingerprint"].as_str().unwrap();
    assert!(text.contains(&format!("granted in session {}: {fingerprint}", minted["session"].as_str().unwrap())));
    assert!(text.contains("repo:org/app:write") && text.contains("revoked at once"), "{text}");
    assert!(stack.client_audit().iter().any(|l| l["outcome"] == "revoked" && l["fingerprint"] == fingerprint));

    // Unrouted hosts and pathless git requests say why nothing matches.
    let out = mayfly(&stack, &["explain", "git", "https://unrouted.example/x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("none: no git route matches https://unrouted.example/x"), "{}", stdout(&out));
    let out = mayfly(&stack, &["explain", "git", &stack.git_server().base_url]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("credential.useHttpPath"), "{}", stdout(&out));
    let out = mayfly(&stack, &["explain", "git", &stack.repo_url("org/docsy")]);
    assert!(stdout(&out).contains("its path org/docs does not cover org/docsy"), "{}", stdout(&out));

    // A route that allows write where the exchange does not: the exchange's reason.
    stack.write_config(&stack.route("org/docs", &["read", "write"], "ci"));
    let out = mayfly(&stack, &["explain", "git", &stack.repo_url("org/docs"), "--operation", "write", "--exchange"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("denied by the exchange") && text.contains("invalid_scope"), "{text}");
}

#[test]
fn generate_writes_completions_and_man_pages() {
    let out = Command::new(bin("mayfly")).args(["generate", "completions", "bash"]).output().unwrap();
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(script.contains("exec") && script.contains("setup") && script.contains("complete -F"), "{script}");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = Command::new(bin("mayfly")).args(["generate", "completions", shell]).output().unwrap();
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("explain"), "{shell}");
    }

    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("mayfly")).args(["generate", "man"]).arg(dir.path().join("man1")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for page in ["mayfly.1", "mayfly-exec.1", "mayfly-audit.1", "mayfly-generate-man.1"] {
        let text = std::fs::read_to_string(dir.path().join("man1").join(page)).unwrap_or_else(|_| panic!("{page}"));
        assert!(text.lines().any(|l| l.starts_with(".TH ")), "{page} is not roff");
    }
    let top = std::fs::read_to_string(dir.path().join("man1/mayfly.1")).unwrap();
    assert!(top.contains("mayfly\\-exec(1)"), "the top page lists the subcommands' pages: {top}");
}

#[test]
fn the_first_hour_gets_told_what_to_do() {
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str], extra: &[(&str, &str)]| {
        Command::new(bin("mayfly"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let text =
        |out: &Output| format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // No config file: each view says so and where one belongs.
    for args in
        [&["doctor", "--offline"][..], &["setup", "--dry-run"], &["explain", "git", "https://github.com/org/app"]]
    {
        let shown = text(&run(args, &[]));
        assert!(shown.contains("no config file at") && shown.contains("Configuration"), "{args:?}: {shown}");
    }
    // Common mistakes get a hint; TOML errors a line and column; a missing file is missing.
    let config = home.path().join("config.toml");
    let path = config.to_str().unwrap();
    let base = "[identities.ci]\nkind = \"github-actions\"\n\n[exchanges.sts]\nkind = \"rfc8693\"\ntoken_endpoint = \"https://sts.example.com/token\"\n\n";
    for (routes, want) in [
        (
            "[[routes]]\ntool = \"git\"\nhost = \"https://github.com/org/app\"\nidentity = \"ci\"\nexchange = \"sts\"\n",
            "host = \"github.com\" and path = \"org/app\"",
        ),
        (
            "[[routes]]\ntool = \"git\"\nhost = \"github.com\"\nidentity = \"ci\"\nexchange = \"stss\"\n",
            "(known: `sts`)",
        ),
        ("[[routes]]\ntool = \"git\"\nhost = \"github.com\"\nidentity = \"c\"\nexchange = \"sts\"\n", "(known: `ci`)"),
        ("[[routes]]\ntool = git\n", "line 9, column 8"),
    ] {
        std::fs::write(&config, format!("{base}{routes}")).unwrap();
        let out = run(&["explain", "git", "https://github.com/org/app"], &[("MAYFLY_CONFIG", path)]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.lines().count() == 1 && stderr.contains(want), "want {want}: {stderr}");
    }
    let out = run(&["explain", "git", "https://github.com/org/app"], &[("MAYFLY_CONFIG", "/nonexistent/mayfly.toml")]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"), "{}", text(&out));
}
