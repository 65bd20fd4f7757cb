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
