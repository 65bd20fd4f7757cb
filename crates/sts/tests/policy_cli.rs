//! `mayfly-sts policy check` and `mayfly-sts policy test`: what a policy repository's CI
//! runs, and their exit codes.

use std::path::Path;
use std::process::{Command, Output};

const CONFIG: &str = r#"
issuer = "https://sts.example"
policies = ["policies"]

[[trusted_issuers]]
issuer = "https://issuer"
audiences = ["mayfly-sts"]

[[rules]]
name = "app pushes itself"
issuer = "https://issuer"
claims = { repository = "org/app" }
audiences = ["https://git.example"]
scopes = ["repo:{repository}:read", "repo:{repository}:write"]
"#;

const POLICY: &str = r#"
@id("no-push-from-main")
@reason("push from a branch and open a pull request")
forbid(principal, action == Action::"write", resource is GitRepository)
when { principal.hasTag("ref") && principal.getTag("ref") == "refs/heads/main" };

@id("org-reads-docs")
permit(principal, action == Action::"read", resource == GitRepository::"git.example/org/docs");
"#;

fn cases(expect_main_push: &str) -> String {
    format!(
        r#"
[[case]]
name = "a branch pushes"
issuer = "https://issuer"
subject = "repo:org/app:ref:refs/heads/fix"
claims = {{ repository = "org/app", ref = "refs/heads/fix" }}
audience = "https://git.example"
scope = "repo:org/app:write"
expect = "allow"
rule = "app pushes itself"

[[case]]
name = "main does not push"
issuer = "https://issuer"
subject = "repo:org/app:ref:refs/heads/main"
claims = {{ repository = "org/app", ref = "refs/heads/main" }}
audience = "https://git.example"
scope = "repo:org/app:write"
intent = {{ tool = "git", command = ["git", "push"] }}
expect = "{expect_main_push}"

[[case]]
name = "anyone reads docs"
issuer = "https://issuer"
subject = "repo:other/x"
audience = "https://git.example"
scope = "repo:org/docs:read"
expect = "allow"
policies = ["org-reads-docs"]
"#
    )
}

fn setup(dir: &Path) {
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::write(dir.join("policies/git.cedar"), POLICY).unwrap();
    std::fs::write(dir.join("sts.toml"), CONFIG).unwrap();
}

fn sts(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mayfly-sts"))
        .args(args)
        .current_dir(dir)
        .env_remove("MAYFLY_STS_CONFIG")
        .output()
        .expect("mayfly-sts runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_validates_and_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let out = sts(dir.path(), &["policy", "check", "--config", "sts.toml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("1 rules, 2 Cedar policies"), "{}", text(&out.stdout));
    std::fs::write(
        dir.path().join("policies/bad.cedar"),
        "\n\npermit(principal, action, resource)\nwhen { context.scop == \"x\" };\n",
    )
    .unwrap();
    let out = sts(dir.path(), &["policy", "check", "--config", "sts.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("policies/bad.cedar` line 4") && stderr.contains("scop"), "{stderr}");
    // The same error stops the exchange from starting.
    let out = sts(dir.path(), &["--config", "sts.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("policies/bad.cedar` line 4"), "{}", text(&out.stderr));
}

#[test]
fn test_prints_a_table_and_exits_by_outcome() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    std::fs::write(dir.path().join("cases.toml"), cases("deny")).unwrap();
    let out = sts(dir.path(), &["policy", "test", "cases.toml", "--config", "sts.toml"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("policy `no-push-from-main`"), "{stdout}");
    assert!(stdout.contains("push from a branch and open a pull request"), "{stdout}");
    assert!(stdout.contains("rule `app pushes itself`") && stdout.contains("policy `org-reads-docs`"), "{stdout}");

    std::fs::write(dir.path().join("cases.toml"), cases("allow")).unwrap();
    let out = sts(dir.path(), &["policy", "test", "cases.toml", "--config", "sts.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let failing: Vec<String> = text(&out.stdout).lines().filter(|l| l.starts_with("FAIL")).map(str::to_owned).collect();
    assert_eq!(failing.len(), 1, "{failing:?}");
    assert!(failing[0].contains("main does not push"), "{failing:?}");

    // Policies named by the test file itself (a policy repository without a config):
    // without the rule, the branch's push has nothing granting it.
    let own = format!("policies = [\"policies\"]\n{}", cases("deny"));
    std::fs::write(dir.path().join("cases.toml"), own).unwrap();
    let out = sts(dir.path(), &["policy", "test", "cases.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).lines().any(|l| l.starts_with("FAIL") && l.contains("a branch pushes")));

    std::fs::write(dir.path().join("cases.toml"), "[[case]]\nname = 1\n").unwrap();
    let out = sts(dir.path(), &["policy", "test", "cases.toml", "--config", "sts.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

const AGENTS_POLICY: &str = r#"
@id("agents-read-only")
@reason("agents may read but not write")
forbid(principal, action == Action::"write", resource is GitRepository)
when { context has actor && context.actor.subject like "agent:*" };
"#;

fn agent_cases(expect_agent_write: &str, actor: &str) -> String {
    format!(
        r#"
[[case]]
name = "claude reads for bob"
issuer = "https://issuer"
subject = "user:bob"
claims = {{ repository = "org/app" }}
actor = {actor}
audience = "https://git.example"
scope = "repo:org/app:read"
expect = "allow"

[[case]]
name = "claude writes for bob"
issuer = "https://issuer"
subject = "user:bob"
claims = {{ repository = "org/app" }}
actor = {actor}
audience = "https://git.example"
scope = "repo:org/app:write"
expect = "{expect_agent_write}"
policies = ["agents-read-only"]

[[case]]
name = "bob writes himself"
issuer = "https://issuer"
subject = "user:bob"
claims = {{ repository = "org/app" }}
audience = "https://git.example"
scope = "repo:org/app:write"
expect = "allow"
"#
    )
}

#[test]
fn cases_with_an_actor_test_what_agents_may_do() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    std::fs::write(dir.path().join("policies/agents.cedar"), AGENTS_POLICY).unwrap();
    let declared = r#"{ sub = "agent:claude", declared = true, session = "s-1" }"#;
    std::fs::write(dir.path().join("cases.toml"), agent_cases("deny", declared)).unwrap();
    let out = sts(dir.path(), &["policy", "test", "cases.toml", "--config", "sts.toml"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("agents may read but not write"), "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("ok")).count(), 3, "{stdout}");

    // Expecting the agent's write to pass mismatches: exit 1, that case failing.
    std::fs::write(dir.path().join("cases.toml"), agent_cases("allow", declared)).unwrap();
    let out = sts(dir.path(), &["policy", "test", "cases.toml", "--config", "sts.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let failing: Vec<String> = text(&out.stdout).lines().filter(|l| l.starts_with("FAIL")).map(str::to_owned).collect();
    assert_eq!(failing.len(), 1, "{failing:?}");
    assert!(failing[0].contains("claude writes for bob") && failing[0].contains("deny"), "{failing:?}");

    // A person acting for bob (an ID token's actor, vouched for by its `iss`) may write.
    let person = r#"{ sub = "user:alice", iss = "https://issuer" }"#;
    let cases = agent_cases("allow", person).replace("policies = [\"agents-read-only\"]\n", "");
    std::fs::write(dir.path().join("cases.toml"), cases).unwrap();
    let out = sts(dir.path(), &["policy", "test", "cases.toml", "--config", "sts.toml"]);
    assert!(out.status.success(), "{}", text(&out.stdout));

    // An actor without `sub` is no actor: the file is invalid, one line says why.
    std::fs::write(dir.path().join("cases.toml"), agent_cases("deny", r#"{ declared = true }"#)).unwrap();
    let out = sts(dir.path(), &["policy", "test", "cases.toml", "--config", "sts.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("case `claude reads for bob`: actor: an `act` entry has no `sub`"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
