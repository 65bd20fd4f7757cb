//! `mayfly exec`: the real git inside a session wired through the environment only; every
//! token minted in the session is revoked when the command ends, by exit or by SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use mayfly_tests::{Stack, bin, require_tool};
use serde_json::Value;

/// A stack whose git has no credential wiring of its own: only `mayfly exec` wires it.
fn unwired_stack() -> Stack {
    unwire(Stack::new())
}

/// Replaces the stack's git wiring with the user's identity alone.
fn unwire(stack: Stack) -> Stack {
    std::fs::write(
        stack.home.join(".gitconfig"),
        "[user]\n\tname = mayfly test\n\temail = test@mayfly.invalid\n[init]\n\tdefaultBranch = main\n",
    )
    .unwrap();
    stack
}

/// `mayfly exec --session NAME [--redact] -- sh -c SCRIPT` in the work tree.
fn exec(stack: &Stack, session: &str, redact: bool, script: &str) -> Command {
    let mut command = Command::new(bin("mayfly"));
    command.arg("exec").args(["--session", session]);
    if redact {
        command.arg("--redact");
    }
    command.args(["--", "sh", "-c", script]).current_dir(&stack.work).env_clear().envs(stack.env());
    command
}

/// Clone, commit and push `org/app`, then print the session's write token for it (the way
/// a tool would receive it), so the test can try it after the session.
fn push_and_show_token(stack: &Stack) -> String {
    let host = stack.git_host();
    format!(
        "set -e; git clone -q {url} app; cd app; echo x > x.txt; git add x.txt; git commit -qm x; git push -q origin main; \
         printf 'protocol=https\\nhost={host}\\npath=org/app.git\\ncapability[]=authtype\\n\\n' | git credential fill | sed -n 's/^credential=/token=/p'",
        url = stack.repo_url("org/app.git")
    )
}

fn token_from(stdout: &str) -> String {
    stdout.lines().find_map(|l| l.strip_prefix("token=")).expect("the session printed its token").to_owned()
}

/// What the git server says to a token now.
fn git_server_status(stack: &Stack, token: &str) -> u16 {
    let client = stack.https_client();
    let url = format!("{}/info/refs?service=git-upload-pack", stack.repo_url("org/app.git"));
    client.get(url).bearer_auth(token).send().unwrap().status().as_u16()
}

fn session_lines(stack: &Stack, session: &str) -> Vec<Value> {
    stack.client_audit().into_iter().filter(|l| l["session"] == session).collect()
}

fn cached_in_session(stack: &Stack, session: &str) -> usize {
    let env = mayfly_core::Env::from_pairs(stack.env());
    let cache = mayfly_core::Cache::open(&env).unwrap();
    cache.entries().iter().filter(|(_, e)| e.session.as_deref() == Some(session)).count()
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn a_session_wires_git_through_the_environment_and_revokes_its_tokens_at_exit() {
    if !require_tool("git") {
        return;
    }
    let stack = unwired_stack();
    let out = exec(&stack, "push-1", false, &push_and_show_token(&stack)).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = token_from(&stdout);

    // Outside the session git has no helper: the same clone is refused.
    let outside = stack.git(&stack.work, &["clone", "-q", &stack.repo_url("org/app.git"), "outside"]);
    assert!(!outside.status.success());

    // The chain: session -> command -> tool -> token, then revocation.
    let lines = session_lines(&stack, "push-1");
    let outcomes: Vec<&str> = lines.iter().map(|l| l["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes.first(), Some(&"session-started"), "{outcomes:?}");
    assert_eq!(outcomes.last(), Some(&"session-ended"), "{outcomes:?}");
    assert!(outcomes.contains(&"issued"));
    let started = &lines[0]["process"][0]["argv"];
    assert_eq!(started[0], "sh", "the session line names the command: {started}");
    let issued: Vec<&Value> = lines.iter().filter(|l| l["outcome"] == "issued").collect();
    let revoked: Vec<&Value> = lines.iter().filter(|l| l["outcome"] == "revoked").collect();
    assert_eq!(revoked.len(), issued.len(), "every token minted in the session was revoked: {outcomes:?}");
    for line in &issued {
        assert!(revoked.iter().any(|r| r["fingerprint"] == line["fingerprint"]));
    }

    // Revoked at the exchange, refused by the server, gone from the cache.
    assert_eq!(git_server_status(&stack, &token), 401);
    assert_eq!(cached_in_session(&stack, "push-1"), 0);
    assert!(stack.sts_audit().iter().any(|l| l["outcome"] == "revoked"));
    stack.assert_no_tokens_on_disk();
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn sigterm_ends_the_command_and_still_revokes_and_nothing_leaks_into_environ_or_argv() {
    if !require_tool("git") {
        return;
    }
    let stack = unwired_stack();
    let script = format!("{}; echo ready; exec sleep 30", push_and_show_token(&stack));
    let mut child =
        exec(&stack, "term-1", false, &script).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut token = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(t) = line.strip_prefix("token=") {
            token = t.to_owned();
        }
        if line == "ready" {
            break;
        }
    }
    assert!(!token.is_empty(), "the session printed its token");
    assert_eq!(git_server_status(&stack, &token), 200, "live inside the session");

    // While the session runs, no process shows the token in its environment or argv.
    let mut checked = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        for file in ["environ", "cmdline"] {
            if let Ok(bytes) = std::fs::read(entry.path().join(file)) {
                checked += 1;
                assert!(!String::from_utf8_lossy(&bytes).contains(&token), "token in {}", entry.path().display());
            }
        }
    }
    assert!(checked > 2);

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(15), "mayfly exec ends the way its command did: {status:?}");
    let outcomes: Vec<String> =
        session_lines(&stack, "term-1").iter().map(|l| l["outcome"].as_str().unwrap().to_owned()).collect();
    assert!(outcomes.iter().any(|o| o == "revoked"), "{outcomes:?}");
    assert_eq!(outcomes.last().map(String::as_str), Some("session-ended"));
    assert_eq!(git_server_status(&stack, &token), 401);
    assert_eq!(cached_in_session(&stack, "term-1"), 0);
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn redact_replaces_the_sessions_tokens_and_keeps_the_exit_code() {
    if !require_tool("git") {
        return;
    }
    let stack = unwired_stack();
    let script = format!("{}; echo done; exit 7", push_and_show_token(&stack));
    let out = exec(&stack, "redact-1", true, &script).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(7));
    assert!(stdout.contains(&format!("token={}", mayfly_core::REDACTED)), "{stdout}");
    assert!(stdout.ends_with("done\n"), "{stdout}");
    assert!(!mayfly_core::contains_jwt(&out.stdout));
}

#[test]
fn exit_codes_pass_through_and_a_missing_command_is_one_line() {
    let stack = unwired_stack();
    let out = exec(&stack, "codes", false, "exit 3").output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let out = Command::new(bin("mayfly"))
        .args(["exec", "--", "mayfly-no-such-command"])
        .env_clear()
        .envs(stack.env())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("mayfly: cannot run `mayfly-no-such-command`"), "{stderr}");
    let out = exec(&stack, "bad name!", false, "true").output().unwrap();
    assert!(!out.status.success());
}

#[test]
#[cfg_attr(missing = "kubectl", ignore = "needs kubectl, which is not installed")]
fn a_session_points_the_users_kubectl_context_at_mayfly_without_touching_their_kubeconfig() {
    if !require_tool("kubectl") {
        return;
    }
    use base64::Engine;
    let stack = unwire(Stack::builder().git().kube().start());
    let ca = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&stack.ca.ca_cert).unwrap());
    let kubeconfig = stack.home.join(".kube/config");
    std::fs::create_dir_all(kubeconfig.parent().unwrap()).unwrap();
    let theirs = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: dev\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: me\n  user: {{}}\ncontexts:\n- name: dev\n  context:\n    cluster: dev\n    user: me\ncurrent-context: dev\n",
        stack.kube().base_url
    );
    std::fs::write(&kubeconfig, &theirs).unwrap();
    let kubectl = ["kubectl", "get", "--raw", "/version"];
    let outside = Command::new("kubectl").args(&kubectl[1..]).env_clear().envs(stack.env()).output().unwrap();
    assert!(!outside.status.success(), "the user's own context has no credentials");

    let mut command = Command::new(bin("mayfly"));
    command.args(["exec", "--session", "kube-1", "--"]).args(kubectl).env_clear().envs(stack.env());
    let out = command.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("gitVersion"));
    assert_eq!(std::fs::read_to_string(&kubeconfig).unwrap(), theirs, "the user's kubeconfig is untouched");
    let issued = session_lines(&stack, "kube-1").into_iter().find(|l| l["outcome"] == "issued").expect("a token");
    assert_eq!(issued["tool"], "kubectl");
}

#[test]
fn a_session_never_runs_unable_to_revoke() {
    let stack = unwired_stack();
    // Someone made the key directory before us, open to everyone.
    let planted = stack.runtime_dir.path().join("rt");
    std::fs::create_dir_all(&planted).unwrap();
    std::fs::set_permissions(&planted, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    // A helper says so, in one line, and caches nothing there.
    let request = format!("protocol=https\nhost={}\npath=org/app.git\n", stack.git_host());
    let out = Command::new(bin("git-credential-mayfly"))
        .arg("get")
        .env_clear()
        .envs(stack.env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(request.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());
    let lines = mayfly_tests::mayfly_lines(&out.stderr);
    assert!(lines.len() == 1 && lines[0].contains("its mode is 0777, not 0700"), "{lines:?}");
    assert_eq!(std::fs::read_dir(&planted).unwrap().count(), 0, "a key was written to the unsafe directory");
    let out = exec(&stack, "planted", false, &push_and_show_token(&stack)).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = token_from(&String::from_utf8_lossy(&out.stdout));
    let lines = mayfly_tests::mayfly_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("its mode is 0777, not 0700") && lines[0].contains("private directory of its own"),
        "{lines:?}"
    );
    assert_eq!(git_server_status(&stack, &token), 401, "the session's token outlived it");
    assert!(session_lines(&stack, "planted").iter().any(|l| l["outcome"] == "revoked"));

    // With no memory-backed place at all for the key, the session refuses to start.
    let disk = stack.dir.path().join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let out = exec(&stack, "nowhere", false, "echo ran")
        .env("MAYFLY_RUNTIME_DIR", disk.join("rt"))
        .env("XDG_RUNTIME_DIR", &disk)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "the command ran");
    let lines = mayfly_tests::mayfly_lines(&out.stderr);
    assert!(lines.len() == 1 && lines[0].contains("cannot start a session"), "{lines:?}");
}

#[test]
fn redact_catches_a_token_split_over_two_writes_and_its_base64_forms() {
    let stack = unwired_stack();
    let script = format!(
        "set -e; t=$(printf 'protocol=https\\nhost={host}\\npath=org/app.git\\ncapability[]=authtype\\n\\n' | git credential fill | sed -n 's/^credential=//p'); \
         printf '%s' \"$t\" > ../token.txt; \
         printf 'start %s' \"$(printf %s \"$t\" | cut -c1-25)\"; sleep 0.4; printf '%s end\\n' \"$(printf %s \"$t\" | cut -c26-)\"; \
         printf 'x-access-token:%s' \"$t\" | base64 -w0; echo; printf 'u:%s' \"$t\" | base64 -w0; echo",
        host = stack.git_host()
    );
    let out = exec(&stack, "redact-split", true, &script).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let token = std::fs::read_to_string(stack.dir.path().join("token.txt")).unwrap();
    assert!(token.len() > 40, "the session minted a token");
    assert!(stdout.starts_with(&format!("start {} end\n", mayfly_core::REDACTED)), "{stdout}");
    for piece in token.as_bytes().chunks(12).map(|c| std::str::from_utf8(c).unwrap()) {
        assert!(!stdout.contains(piece), "`{piece}` of the token is in {stdout}");
    }
    use base64::Engine;
    for user in ["x-access-token", "u"] {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
        assert!(!stdout.contains(&basic[basic.len() / 2..basic.len() / 2 + 16]), "{stdout}");
    }
    assert_eq!(stdout.matches(mayfly_core::REDACTED).count(), 3, "{stdout}");
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn an_agent_session_mints_tokens_that_name_the_agent_and_its_end_revokes_the_session_token() {
    if !require_tool("git") {
        return;
    }
    let stack = unwired_stack();
    let out = Command::new(bin("mayfly"))
        .args(["exec", "--session", "agent-1", "--agent", "claude", "--", "sh", "-c", &push_and_show_token(&stack)])
        .current_dir(&stack.work)
        .env_clear()
        .envs(stack.env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = token_from(&String::from_utf8_lossy(&out.stdout));

    // The write token names the person or workload and, as its actor, the agent.
    let claims = mayfly_core::peek_claims(&token).expect("a JWT");
    let payload: Value = {
        use base64::Engine;
        let part = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    };
    assert_eq!(claims.sub.as_deref(), Some("repo:org/app:ref:refs/heads/main"));
    assert_eq!(payload["act"]["sub"], "agent:claude", "{payload}");
    assert_eq!(payload["act"]["declared"], true, "{payload}");
    assert!(payload["sid"].is_string(), "{payload}");

    // The exchange opened one session token for the session, and its end revoked it.
    let sts = stack.sts_audit();
    let sessions: Vec<&Value> = sts.iter().filter(|l| l["outcome"] == "issued" && l["scope"] == "session").collect();
    assert_eq!(sessions.len(), 1, "{sts:?}");
    assert!(sts.iter().any(|l| l["outcome"] == "revoked" && l["jti"] == payload["sid"]), "{sts:?}");
    assert_eq!(git_server_status(&stack, &token), 401);

    // The client's lines name the agent, from the session's start to its end.
    let lines = session_lines(&stack, "agent-1");
    assert!(lines.iter().all(|l| l["agent"] == "claude"), "{lines:?}");
    assert_eq!(cached_in_session(&stack, "agent-1"), 0);
    stack.assert_no_tokens_on_disk();
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn a_cache_hit_in_a_session_refers_to_the_issued_line_for_the_ancestry_they_share() {
    if !require_tool("git") {
        return;
    }
    let stack = unwired_stack();
    let script =
        format!("set -e; git clone -q {} app; cd app; git fetch -q; git fetch -q", stack.repo_url("org/app.git"));
    let out = exec(&stack, "hits", false, &script).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let lines = session_lines(&stack, "hits");
    let issued = lines.iter().find(|l| l["outcome"] == "issued").expect("the clone minted a token");
    let hits: Vec<&Value> = lines.iter().filter(|l| l["outcome"] == "cache-hit").collect();
    assert_eq!(hits.len(), 2, "{lines:?}");
    let issued_chain = issued["process"].as_array().unwrap();
    for hit in &hits {
        assert_eq!(hit["process_ref"]["issued"], issued["fingerprint"], "{hit}");
        let from = hit["process_ref"]["from"].as_u64().unwrap() as usize;
        let own = hit["process"].as_array().unwrap();
        assert!(own.len() < issued_chain.len(), "a hit writes only what differs: {hit}");
        // What it leaves out is the session's own ancestry: `mayfly exec` and above.
        assert!(issued_chain[from..].iter().any(|p| p["argv"][1] == "exec"), "{issued}");
        assert!(own.iter().all(|p| p["argv"][1] != "exec"), "{hit}");
        assert!(own.iter().any(|p| p["argv"][1] == "fetch"), "the hit names its own command: {hit}");
        assert!(
            serde_json::to_string(hit).unwrap().len() < serde_json::to_string(issued).unwrap().len(),
            "a hit's line is shorter than the issued one"
        );
    }

    // `mayfly audit` puts the chain back together: the hit's command is shown.
    let audit = Command::new(bin("mayfly"))
        .args(["audit", "--session", "hits", "--outcome", "cache-hit"])
        .env_clear()
        .envs(stack.env())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&audit.stdout);
    assert!(audit.status.success(), "{}", String::from_utf8_lossy(&audit.stderr));
    assert_eq!(shown.lines().filter(|l| l.contains("$ git fetch")).count(), 2, "{shown}");
}
