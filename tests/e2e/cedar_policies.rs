//! Real `git push`es decided by Cedar policies at a `mayfly-sts` of their own: a forbid
//! that overrides a rule, a permit where no rule grants, and a reload while serving.

use std::path::Path;
use std::time::{Duration, Instant};

use mayfly_devstack::{GitServer, StsClient};
use mayfly_tests::{Stack, bin, mayfly_lines, read_json_lines, require_tool, spawn_sts_on};

const FROZEN: &str = r#"
@id("app-frozen")
@reason("org/app is frozen for the release; push after it ships")
forbid(principal, action == Action::"write", resource is GitRepository)
when { resource.path == "org/app" };

@id("docs-writers")
permit(principal is Workload, action in [Action::"read", Action::"write"], resource is GitRepository)
when { resource.path == "org/docs" && principal.hasTag("repository_owner") && principal.getTag("repository_owner") == "org" };
"#;

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_log(log: &Path, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(Instant::now() < deadline, "`{needle}` never logged:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn cedar_policies_decide_real_pushes_and_reload_while_serving() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    let dir = stack.dir.path();
    let (listener, url) = mayfly_tests::https_listener();
    let client = StsClient::generate(&url, "cedar-git");
    let git = GitServer::start(stack.runtime(), dir.join("srv-cedar"), &stack.ca, &client).expect("git server");
    git.create_repo("org/app.git").expect("repo");
    git.create_repo("org/docs.git").expect("repo");
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    let policy_file = policies.join("git.cedar");
    std::fs::write(&policy_file, FROZEN).unwrap();
    let audit = dir.join("cedar-sts-audit.jsonl");
    let config = mayfly_sts::ConfigFile {
        issuer: url.clone(),
        audit_log: Some(audit.clone()),
        policies: vec![policies.clone()],
        tls: Some(stack.ca.sts_tls()),
        trusted_issuers: vec![stack.issuer.trusted(&["mayfly-sts"])],
        rules: vec![mayfly_sts::RuleEntry {
            name: Some("org/app reads and pushes itself".into()),
            issuer: stack.issuer.issuer().into(),
            claims: [("repository".to_owned(), "org/app".to_owned())].into(),
            audiences: vec![git.base_url.clone()],
            scopes: vec!["repo:{repository}:read".into(), "repo:{repository}:write".into()],
            max_ttl: None,
        }],
        introspection_clients: vec![client.config_entry()],
        ..Default::default()
    };
    let _sts = Killed(spawn_sts_on(dir, "cedar-sts", listener, &config));
    let log = dir.join("cedar-sts.log");

    // The client: routes to this git server through this exchange.
    let host = git.base_url.trim_start_matches("https://");
    let route = |path: &str| {
        format!(
            "[[routes]]\ntool = \"git\"\nhost = \"{host}\"\npath = \"{path}\"\nidentity = \"ci\"\nexchange = \"cedar\"\noperations = [\"read\", \"write\"]\n"
        )
    };
    let client_config = format!(
        "[identities.ci]\nkind = \"github-actions\"\naudience = \"mayfly-sts\"\n\n[exchanges.cedar]\nkind = \"rfc8693\"\ntoken_endpoint = \"{url}/token\"\nca_file = \"{ca}\"\ntimeout = \"5s\"\n\n{}\n{}",
        route("org/app"),
        route("org/docs"),
        ca = stack.ca.ca_cert.display(),
    );
    std::fs::write(stack.home.join(".config/mayfly/config.toml"), client_config).unwrap();
    let helper = bin("git-credential-mayfly").display().to_string();
    for (key, value) in [
        (format!("credential.{}.helper", git.base_url), String::new()),
        (format!("credential.{}.helper", git.base_url), helper),
        (format!("credential.{}.useHttpPath", git.base_url), "true".to_owned()),
    ] {
        stack.git_ok(&stack.work, &["config", "--global", "--add", &key, &value]);
    }

    // A rule grants org/app's push; the forbid wins, and says what to do.
    stack.git_ok(&stack.work, &["clone", &format!("{}/org/app.git", git.base_url), "app"]);
    let app = stack.work.join("app");
    stack.commit_file(&app, "a.txt");
    let out = stack.git(&app, &["push", "origin", "main"]);
    assert!(!out.status.success());
    let lines = mayfly_lines(&out.stderr);
    assert!(lines.iter().any(|l| l.contains("push after it ships")), "{lines:?}");
    let denied: Vec<_> = read_json_lines(&audit).into_iter().filter(|l| l["outcome"] == "denied").collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["policies"], serde_json::json!(["app-frozen"]));
    assert_eq!(denied[0]["scope"], "repo:org/app:write");

    // No rule grants org/docs; the permit does, and the audit line names it.
    stack.git_ok(&stack.work, &["clone", &format!("{}/org/docs.git", git.base_url), "docs"]);
    let docs = stack.work.join("docs");
    stack.commit_file(&docs, "d.txt");
    stack.git_ok(&docs, &["push", "origin", "main"]);
    let issued: Vec<_> = read_json_lines(&audit).into_iter().filter(|l| l["outcome"] == "issued").collect();
    let docs_write = issued.iter().find(|l| l["scope"] == "repo:org/docs:write").expect("docs write token");
    assert_eq!(docs_write["policies"], serde_json::json!(["docs-writers"]));
    assert!(docs_write.get("rule").is_none(), "{docs_write}");
    let app_read = issued.iter().find(|l| l["scope"] == "repo:org/app:read").expect("app read token");
    assert_eq!(app_read["rule"], "org/app reads and pushes itself");

    // A broken edit is refused and the freeze stays in force.
    std::fs::write(
        &policy_file,
        format!("{FROZEN}\npermit(principal, action, resource) when {{ resource.pth == 1 }};\n"),
    )
    .unwrap();
    wait_for_log(&log, "policy reload failed, keeping the 2 policies in force");
    assert!(std::fs::read_to_string(&log).unwrap().contains("git.cedar` line"));
    assert!(!stack.git(&app, &["push", "origin", "main"]).status.success());

    // Lifting the freeze takes effect without a restart.
    std::fs::write(
        &policy_file,
        FROZEN.replace("forbid(", "// lifted\nforbid(").replace("\"org/app\"", "\"org/none\""),
    )
    .unwrap();
    wait_for_log(&log, "policies reloaded: 2 in force");
    stack.git_ok(&app, &["push", "origin", "main"]);
}
