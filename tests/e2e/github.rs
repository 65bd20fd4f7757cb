//! GitHub through octo-sts: the real git clones and pushes with installation tokens that
//! octo-sts mints under a repository's trust policies, against a loopback stand-in of
//! octo-sts and GitHub that verifies the ID tokens for real.

use std::process::Command;

use mayfly_tests::{Stack, bin, mayfly_lines, password_of, require_tool};

/// The requests octo-sts received: (identity, scope, ID token audience, Authorization).
fn exchanges(stack: &Stack) -> Vec<(String, String, String, String)> {
    stack
        .github()
        .requests()
        .into_iter()
        .filter(|r| r.path == "/sts/exchange")
        .map(|r| {
            assert_eq!(r.method, "GET");
            (
                r.query_param("identity").unwrap_or_default(),
                r.query_param("scope").unwrap_or_default(),
                r.id_token_audience.as_ref().and_then(|a| a.as_str()).unwrap_or_default().to_owned(),
                r.header("authorization").unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// How many revocations GitHub received.
pub(super) fn revocations(stack: &Stack) -> usize {
    stack.github().requests().iter().filter(|r| r.method == "DELETE" && r.path == "/installation/token").count()
}

/// What `git-credential-mayfly get` answers for a repository on the stand-in: the token.
pub(super) fn helper_token(stack: &Stack, path: &str) -> String {
    let answer = stack.helper_answer(stack.github().host(), path);
    assert!(answer.lines().any(|l| l == "username=x-access-token"), "{answer}");
    password_of(&answer)
}

/// What the stand-in's git says to a token for a smart-HTTP service of a repository.
pub(super) fn git_status(stack: &Stack, token: &str, repo: &str, service: &str) -> u16 {
    let url = format!("{}/info/refs?service={service}", stack.github_repo_url(repo));
    let response = stack.https_client().get(url).basic_auth("x-access-token", Some(token)).send().unwrap();
    response.status().as_u16()
}

/// `git-credential-mayfly erase` of a token for `org/app.git` on the stand-in, which must
/// succeed.
pub(super) fn erase(stack: &Stack, token: &str) -> std::process::Output {
    let request = format!(
        "protocol=https\nhost={}\npath=org/app.git\nusername=x-access-token\npassword={token}\n",
        stack.github().host()
    );
    let out = assert_cmd::Command::new(bin("git-credential-mayfly"))
        .arg("erase")
        .env_clear()
        .envs(stack.env())
        .write_stdin(request)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn clone_and_push_take_installation_tokens_from_octo_sts_under_the_repositorys_trust_policies() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::builder().github().start();
    stack.git_ok(&stack.work, &["clone", &stack.github_repo_url("org/app.git"), "app"]);
    let app = stack.work.join("app");
    stack.commit_file(&app, "a.txt");
    stack.git_ok(&app, &["push", "origin", "main"]);
    stack.git_ok(&app, &["fetch", "origin"]);

    let host = stack.github().host().to_owned();
    let seen = exchanges(&stack);
    let summary: Vec<(&str, &str, &str)> =
        seen.iter().map(|(identity, scope, aud, _)| (identity.as_str(), scope.as_str(), aud.as_str())).collect();
    assert_eq!(summary, [("mayfly-read", "org/app", host.as_str()), ("mayfly-write", "org/app", host.as_str())]);
    assert!(seen.iter().all(|(.., authorization)| authorization.starts_with("Bearer ")), "{seen:?}");
    let query = stack.github().requests().into_iter().find(|r| r.path == "/sts/exchange").unwrap().query.unwrap();
    assert_eq!(query, "scope=org%2Fapp&identity=mayfly-read", "the scope is URL-encoded");
    assert_eq!(stack.github().minted(), (2, 0), "one token per operation; the fetch came from the cache");

    let audit = stack.client_audit();
    let outcomes: Vec<(&str, &str)> =
        audit.iter().map(|l| (l["outcome"].as_str().unwrap(), l["scope"].as_str().unwrap())).collect();
    assert_eq!(
        outcomes,
        [("issued", "org/app mayfly-read"), ("issued", "org/app mayfly-write"), ("cache-hit", "org/app mayfly-read")]
    );
    // The pushed commit is in GitHub's repository.
    let log = Command::new("git")
        .args(["--git-dir", &stack.github().root.join("org/app.git").display().to_string(), "log", "--oneline"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&log.stdout).contains("a.txt"));
    let audit_text = std::fs::read_to_string(stack.home.join(".local/state/mayfly/audit.jsonl")).unwrap();
    assert!(!audit_text.contains("ghs_"), "no installation token in the audit log");
    stack.assert_no_tokens_on_disk();
}

#[test]
fn an_installation_token_opens_its_own_repository_only_and_a_read_token_cannot_push() {
    let stack = Stack::builder().github().start();
    let token = helper_token(&stack, "org/app.git");
    assert!(token.starts_with("ghs_"));
    assert_eq!(git_status(&stack, &token, "org/app.git", "git-upload-pack"), 200);
    assert_eq!(git_status(&stack, &token, "org/docs.git", "git-upload-pack"), 403, "another repository");
    assert_eq!(git_status(&stack, &token, "org/app.git", "git-receive-pack"), 403, "contents: read cannot push");
    assert_eq!(git_status(&stack, "ghs_madeup", "org/app.git", "git-upload-pack"), 401);
    // The policy of org/docs matches any org workflow by `subject_pattern`.
    let docs = helper_token(&stack, "org/docs.git");
    assert_eq!(git_status(&stack, &docs, "org/docs.git", "git-upload-pack"), 200);
    assert_eq!(git_status(&stack, &docs, "org/app.git", "git-upload-pack"), 403);
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn a_session_revokes_its_installation_tokens_at_github_when_it_ends() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::builder().github().start();
    // Only `mayfly exec` wires git here.
    std::fs::write(
        stack.home.join(".gitconfig"),
        "[user]\n\tname = mayfly test\n\temail = test@mayfly.invalid\n[init]\n\tdefaultBranch = main\n",
    )
    .unwrap();
    let script = format!(
        "set -e; git clone -q {url} app; cd app; echo x > x.txt; git add x.txt; git commit -qm x; git push -q origin main; \
         printf 'protocol=https\\nhost={host}\\npath=org/app.git\\n\\n' | git credential fill | sed -n 's/^password=/token=/p'",
        url = stack.github_repo_url("org/app.git"),
        host = stack.github().host(),
    );
    let out = Command::new(bin("mayfly"))
        .args(["exec", "--session", "gh-1", "--", "sh", "-c", &script])
        .current_dir(&stack.work)
        .env_clear()
        .envs(stack.env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let token = stdout.lines().find_map(|l| l.strip_prefix("token=")).expect("the session printed its token");
    assert_eq!(revocations(&stack), 2, "the read and the write token");
    assert_eq!(stack.github().minted(), (2, 2));
    assert_eq!(git_status(&stack, token, "org/app.git", "git-upload-pack"), 401, "GitHub no longer takes it");
    let revoked = stack.client_audit().iter().filter(|l| l["outcome"] == "revoked").count();
    assert_eq!(revoked, 2);
}

#[test]
fn erase_revokes_the_installation_token_at_github_and_a_gone_token_counts_as_revoked() {
    let stack = Stack::builder().github().start();
    let token = helper_token(&stack, "org/app.git");
    erase(&stack, &token);
    assert_eq!(revocations(&stack), 1);
    assert_eq!(git_status(&stack, &token, "org/app.git", "git-upload-pack"), 401);
    // Revoke a fresh token behind mayfly's back: erasing it again is no failure.
    let fresh = helper_token(&stack, "org/app.git");
    assert_ne!(fresh, token);
    let response = stack
        .https_client()
        .delete(format!("{}/installation/token", stack.github().base_url))
        .bearer_auth(&fresh)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    let out = erase(&stack, &fresh);
    assert!(mayfly_lines(&out.stderr).is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let outcomes: Vec<String> =
        stack.client_audit().iter().map(|l| l["outcome"].as_str().unwrap().to_owned()).collect();
    assert_eq!(outcomes, ["issued", "revoked", "issued", "revoked"]);
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn a_repository_without_a_trust_policy_is_one_line_with_octo_sts_message_and_no_token() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::builder().github().start();
    stack.github().create_repo("org/secret.git").unwrap();
    let out = stack.git(&stack.work, &["clone", &stack.github_repo_url("org/secret.git"), "secret"]);
    assert!(!out.status.success());
    let lines = mayfly_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("refused: unable to find trust policy for \"mayfly-read\""), "{}", lines[0]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("ghs_") && !stderr.contains("eyJ"), "no token is printed: {stderr}");
    assert_eq!(stack.github().minted(), (0, 0));
    let denied = stack.client_audit().into_iter().find(|l| l["outcome"] == "denied").expect("the refusal is audited");
    assert_eq!(denied["scope"], "org/secret mayfly-read");
}

#[test]
fn explain_shows_the_octo_sts_request_and_its_exchange_mode_revokes_at_once() {
    let stack = Stack::builder().github().start();
    let explain = |extra: &[&str]| {
        let out = Command::new(bin("mayfly"))
            .args(["explain", "git", &stack.github_repo_url("org/app.git"), "--operation", "write"])
            .args(extra)
            .env_clear()
            .envs(stack.env())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let text = explain(&[]);
    assert!(text.contains("org/app mayfly-write"), "the two-word scope: {text}");
    assert!(text.contains("octo-sts") && text.contains(&stack.github().exchange_url()), "{text}");
    assert!(text.contains(&format!("revokes at {}", stack.github().revocation_url())), "{text}");
    assert!(text.contains("as Basic, username `x-access-token`"), "{text}");
    assert!(
        text.contains("a fresh ID token per exchange, never cached, for the audience the exchange names"),
        "{text}"
    );
    assert_eq!(stack.github().minted(), (0, 0), "explain alone asks nothing");
    let text = explain(&["--exchange"]);
    assert!(!text.contains("ghs_"), "the token is never shown: {text}");
    assert_eq!(stack.github().minted(), (1, 1), "minted for real, then revoked at once");
    assert_eq!(revocations(&stack), 1);
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn an_octo_sts_scope_that_is_not_two_words_is_one_config_line() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::builder().github().start();
    let route = mayfly_core::RouteEntry { scope: Some("{path}".into()), ..stack.github_route(&["read"]) };
    stack.write_config(&mayfly_tests::routes_toml(vec![route]));
    let out = stack.git(&stack.work, &["clone", &stack.github_repo_url("org/app.git"), "app"]);
    assert!(!out.status.success());
    let lines = mayfly_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("an octo-sts scope is two words"), "{}", lines[0]);
    assert!(stack.github().requests().iter().all(|r| r.path != "/sts/exchange"), "nothing was asked");
}
