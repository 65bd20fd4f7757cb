//! GitHub through mayfly-sts's GitHub App backend: the real git clones and pushes over an
//! rfc8693 route to the exchange, which answers with installation tokens of its App,
//! narrowed to one repository and the operation's permissions, from the GitHub stand-in
//! (which verifies the app JWT's RS256 signature for real).

use std::process::Command;

use mayfly_devstack::RecordedRequest;
use mayfly_tests::{GITHUB_APP_ID, Stack, bin, mayfly_lines, require_tool};
use serde_json::json;

use super::github::{erase, git_status, helper_token, revocations};

/// The App's requests GitHub received.
fn app_requests(stack: &Stack) -> Vec<RecordedRequest> {
    stack
        .github()
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/app/") || r.path.starts_with("/repos/"))
        .collect()
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn clone_and_push_take_installation_tokens_the_exchange_mints_for_one_repository() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::builder().github_app().start();
    stack.git_ok(&stack.work, &["clone", &stack.github_repo_url("org/app.git"), "app"]);
    let app = stack.work.join("app");
    stack.commit_file(&app, "a.txt");
    stack.git_ok(&app, &["push", "origin", "main"]);

    let seen = app_requests(&stack);
    let summary: Vec<(&str, &str)> = seen.iter().map(|r| (r.method.as_str(), r.path.as_str())).collect();
    let installation = "/app/installations/40001/access_tokens";
    assert_eq!(
        summary,
        [("GET", "/repos/org/app/installation"), ("POST", installation), ("POST", installation)],
        "the installation is looked up once, then cached"
    );
    let bodies: Vec<_> = seen[1..].iter().map(RecordedRequest::json).collect();
    assert_eq!(
        bodies,
        [
            json!({"repositories": ["app"], "permissions": {"contents": "read"}}),
            json!({"repositories": ["app"], "permissions": {"contents": "write"}}),
        ]
    );
    for request in &seen {
        let claims = request.app_jwt_claims.as_ref().expect("an app JWT");
        assert_eq!(claims["iss"], GITHUB_APP_ID);
        let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
        assert!(lifetime <= 600, "GitHub takes at most 10 minutes: {lifetime}");
        assert_eq!(request.header("accept"), Some("application/vnd.github+json"));
        assert_eq!(request.header("x-github-api-version"), Some("2022-11-28"));
        assert!(request.header("user-agent").is_some_and(|ua| ua.starts_with("mayfly-sts/")));
    }
    // The pushed commit is in GitHub's repository.
    let log = Command::new("git")
        .args(["--git-dir", &stack.github().root.join("org/app.git").display().to_string(), "log", "--oneline"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&log.stdout).contains("a.txt"));
    // The exchange's audit names the installation, the permissions and the fingerprint.
    let issued: Vec<_> = stack.sts_audit().into_iter().filter(|l| l["outcome"] == "issued").collect();
    assert_eq!(issued.len(), 2);
    assert_eq!((&issued[1]["installation"], &issued[1]["permissions"]), (&json!(40001), &json!({"contents": "write"})));
    assert!(issued[1]["fingerprint"].as_str().unwrap().starts_with("sha256:"));
    let ttl = issued[1]["ttl"].as_u64().unwrap();
    assert!(ttl <= 600, "the policy's lifetime, not GitHub's hour: {ttl}");
    let sts_audit = std::fs::read_to_string(&stack.sts.audit).unwrap();
    assert!(!sts_audit.contains("ghs_"), "no installation token in the exchange's audit log");
    assert_eq!(stack.github().minted(), (2, 0));
}

#[test]
fn a_token_opens_its_own_repository_only_and_a_read_token_cannot_push() {
    let stack = Stack::builder().github_app().start();
    let token = helper_token(&stack, "org/app.git");
    assert!(token.starts_with("ghs_"), "GitHub's token, not the exchange's");
    assert_eq!(git_status(&stack, &token, "org/app.git", "git-upload-pack"), 200);
    assert_eq!(git_status(&stack, &token, "org/app.git", "git-receive-pack"), 403, "contents: read cannot push");
    assert_eq!(
        git_status(&stack, &token, "org/docs.git", "git-upload-pack"),
        403,
        "the installation has org/docs too, the token does not"
    );
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn a_repository_without_the_app_is_one_line_and_no_token() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::builder().github_app().start();
    stack.github().create_repo("org/secret.git").unwrap();
    let out = stack.git(&stack.work, &["clone", &stack.github_repo_url("org/secret.git"), "secret"]);
    assert!(!out.status.success());
    let lines = mayfly_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("the GitHub App is not installed on org/secret"), "{}", lines[0]);
    assert_eq!(stack.github().minted(), (0, 0));
    let denied = stack.sts_audit().into_iter().find(|l| l["outcome"] == "denied").expect("the refusal is audited");
    assert_eq!(denied["code"], "invalid_target");
    assert!(app_requests(&stack).iter().all(|r| r.method == "GET"), "no token was asked for");
}

#[test]
fn rate_limiting_is_one_line_and_no_token() {
    let stack = Stack::builder().github_app().start();
    stack.github().fail_app_requests(403, &[("x-ratelimit-remaining", "0"), ("retry-after", "42")]);
    let request = format!("protocol=https\nhost={}\npath=org/app.git\n", stack.github().host());
    let out = assert_cmd::Command::new(bin("git-credential-mayfly"))
        .arg("get")
        .env_clear()
        .envs(stack.env())
        .write_stdin(request)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("password="));
    let lines = mayfly_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("rate limit") && lines[0].contains("retry in 42 s"), "{}", lines[0]);
    assert_eq!(stack.github().minted(), (0, 0));
}

#[test]
fn erase_revokes_the_installation_token_at_github_and_a_foreign_token_is_not_revoked() {
    let stack = Stack::builder().github_app().start();
    let token = helper_token(&stack, "org/app.git");
    erase(&stack, &token);
    assert_eq!(revocations(&stack), 1);
    assert_eq!(git_status(&stack, &token, "org/app.git", "git-upload-pack"), 401);
    let revoked = stack.sts_audit().into_iter().find(|l| l["outcome"] == "revoked").expect("audited");
    assert_eq!(revoked["installation"], 40001);
    // A token the exchange did not mint is not revoked through it.
    let response = stack
        .https_client()
        .post(format!("{}/revoke", stack.sts.url))
        .form(&[("token", "ghs_notmintedbythisexchange")])
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "RFC 7009: an unknown token is no error");
    assert_eq!(revocations(&stack), 1, "GitHub was not asked");
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn a_session_revokes_its_installation_tokens_at_github_when_it_ends() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::builder().github_app().start();
    std::fs::write(
        stack.home.join(".gitconfig"),
        "[user]\n\tname = mayfly test\n\temail = test@mayfly.invalid\n[init]\n\tdefaultBranch = main\n",
    )
    .unwrap();
    let script = format!(
        "set -e; git clone -q {url} app; cd app; echo x > x.txt; git add x.txt; git commit -qm x; git push -q origin main",
        url = stack.github_repo_url("org/app.git"),
    );
    let out = Command::new(bin("mayfly"))
        .args(["exec", "--session", "gh-app", "--agent", "claude", "--", "sh", "-c", &script])
        .current_dir(&stack.work)
        .env_clear()
        .envs(stack.env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stack.github().minted(), (2, 2), "the read and the write token, both revoked");
    assert_eq!(revocations(&stack), 2);
    let issued: Vec<_> =
        stack.sts_audit().into_iter().filter(|l| l["outcome"] == "issued" && l["installation"].is_number()).collect();
    assert!(issued.iter().all(|l| l["sid"].is_string()), "minted through the session: {issued:?}");
}

#[test]
fn revoking_the_session_revokes_at_github_what_came_through_it() {
    let stack = Stack::builder().github_app().start();
    let subject = stack.issuer.mint("mayfly-sts", &serde_json::Value::Null);
    let exchange = |form: &[(&str, &str)]| -> serde_json::Value {
        let mut full = vec![
            ("grant_type", mayfly_core::TOKEN_EXCHANGE_GRANT),
            ("subject_token", subject.as_str()),
            ("subject_token_type", mayfly_core::ID_TOKEN_TYPE),
        ];
        full.extend_from_slice(form);
        let response = stack.https_client().post(format!("{}/token", stack.sts.url)).form(&full).send().unwrap();
        assert_eq!(response.status().as_u16(), 200);
        response.json().unwrap()
    };
    let intent = r#"{"agent":"claude","session":"s1"}"#;
    let session = exchange(&[("audience", &stack.sts.url), ("scope", "session"), ("intent", intent)]);
    let session = session["access_token"].as_str().unwrap().to_owned();
    let answer = exchange(&[
        ("actor_token", &session),
        ("actor_token_type", mayfly_core::ACCESS_TOKEN_TYPE),
        ("audience", &stack.github().base_url),
        ("scope", "repo:org/app:write"),
    ]);
    let token = answer["access_token"].as_str().unwrap().to_owned();
    assert_eq!(answer["issued_token_type"], mayfly_core::ACCESS_TOKEN_TYPE);
    assert!(answer["expires_in"].as_u64().unwrap() <= 600);
    assert_eq!(git_status(&stack, &token, "org/app.git", "git-receive-pack"), 200);

    let response =
        stack.https_client().post(format!("{}/revoke", stack.sts.url)).form(&[("token", &session)]).send().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(revocations(&stack), 1, "the session's end reached GitHub");
    assert_eq!(git_status(&stack, &token, "org/app.git", "git-upload-pack"), 401);
    let line = stack.sts_audit().into_iter().find(|l| l["reason"] == "its session ended").expect("audited");
    assert_eq!((&line["outcome"], &line["installation"]), (&json!("revoked"), &json!(40001)));
}

#[test]
fn permissions_beyond_the_installation_are_one_line_and_no_token() {
    let stack = Stack::builder()
        .github_app()
        .sts_config(|config, _| {
            let app = config.github_app.as_mut().expect("the App is configured");
            app.permissions.insert("read".into(), [("administration".to_owned(), "write".to_owned())].into());
        })
        .start();
    let request = format!("protocol=https\nhost={}\npath=org/app.git\n", stack.github().host());
    let out = assert_cmd::Command::new(bin("git-credential-mayfly"))
        .arg("get")
        .env_clear()
        .envs(stack.env())
        .write_stdin(request)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("password="));
    let lines = mayfly_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("access_denied"), "{}", lines[0]);
    assert!(lines[0].contains("The permissions requested are not granted to this installation."), "{}", lines[0]);
    assert_eq!(stack.github().minted(), (0, 0));
    let asked = app_requests(&stack).into_iter().find(|r| r.method == "POST").expect("a token was asked for");
    assert_eq!(asked.json()["permissions"], json!({"administration": "write"}));
    let denied = stack.sts_audit().into_iter().find(|l| l["outcome"] == "denied").expect("audited");
    assert_eq!(denied["installation"], 40001);
}
