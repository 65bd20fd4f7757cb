//! Human approval end to end: a real `git push` waits on its helper while the exchange
//! holds the write for a person, who decides with `mayfly approve` / `mayfly deny` as
//! themselves.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mayfly_tests::{Stack, bin, mayfly_lines, require_tool};
use serde_json::{Value, json};

const HELD: &str = r#"
@id("app-writes-need-a-maintainer")
@approval("maintainers")
forbid(principal, action == Action::"write", resource is GitRepository)
when { resource.path == "org/app" }
unless { context.approval.state == "approved" };
"#;

/// A stack whose exchange holds every write to org/app for a maintainer (`user:alice`).
fn held_stack() -> Stack {
    Stack::builder()
        .git()
        .sts_config(|config, dir| {
            let policies = dir.join("policies");
            std::fs::create_dir_all(&policies).unwrap();
            std::fs::write(policies.join("app.cedar"), HELD).unwrap();
            config.policies = vec![policies];
            config.approval_interval = Some("1s".into());
            config.same_person_claim = Some("email".into());
            let issuer = config.trusted_issuers[0].issuer.clone();
            config.approvers = vec![mayfly_sts::ApproverEntry {
                name: "maintainers".into(),
                issuer,
                claims: [("sub".to_owned(), "user:*".to_owned())].into(),
            }];
        })
        .start()
}

/// `git push` in the background, its output collected when it ends.
fn push(stack: &Stack, tree: &Path) -> Child {
    stack.git_cmd(tree, &["push", "origin", "main"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// The id of the newest approval the exchange opened, once there is one other than
/// `previous`.
fn pending_approval(stack: &Stack, previous: Option<&str>) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pending = stack.sts_audit().into_iter().rev().find(|l| l["outcome"] == "pending");
        let id = pending.and_then(|l| l["approval"].as_str().map(str::to_owned));
        if let Some(id) = id.filter(|id| Some(id.as_str()) != previous) {
            return id;
        }
        assert!(Instant::now() < deadline, "no approval was opened: {:?}", stack.sts_audit());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `mayfly approve|deny ID` as a person whose ID token has these claims.
fn decide(stack: &Stack, verb: &str, id: &str, person: &Value, extra: &[&str]) -> Output {
    let token = stack.issuer.mint("mayfly-sts", person);
    Command::new(bin("mayfly"))
        .args([verb, id, "--identity", "given"])
        .args(extra)
        .env_clear()
        .envs(stack.env())
        .env("MAYFLY_TEST_SUBJECT", token)
        .output()
        .unwrap()
}

fn finished(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

fn committed_clone(stack: &Stack, name: &str) -> std::path::PathBuf {
    stack.git_ok(&stack.work, &["clone", "-q", &stack.repo_url("org/app.git"), name]);
    let tree = stack.work.join(name);
    stack.commit_file(&tree, &format!("{name}.txt"));
    tree
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn a_held_push_ends_with_a_denials_reason_or_goes_through_once_a_maintainer_approves() {
    if !require_tool("git") {
        return;
    }
    let stack = held_stack();
    let alice = json!({"sub": "user:alice", "email": "alice@example.com"});

    // A denial ends the push with the approver's reason, and nothing is minted.
    let tree = committed_clone(&stack, "work");
    let waiting = push(&stack, &tree);
    let denied_id = pending_approval(&stack, None);
    let denied = decide(&stack, "deny", &denied_id, &alice, &["--reason", "not during the freeze"]);
    assert!(denied.status.success(), "{}", String::from_utf8_lossy(&denied.stderr));
    let out = finished(waiting);
    assert!(!out.status.success(), "a denied push went through");
    let lines = mayfly_lines(&out.stderr);
    assert!(lines.iter().any(|l| l.contains("not during the freeze")), "{lines:?}");
    assert!(!stack.sts_audit().iter().any(|l| l["outcome"] == "issued" && l["approval"] == denied_id.as_str()));

    // Asked again, the push blocks on its helper; the requester cannot approve it; a
    // maintainer can, and the push goes through with the token the approval let out.
    let waiting = push(&stack, &tree);
    let id = pending_approval(&stack, Some(&denied_id));
    let own = decide(&stack, "approve", &id, &json!({}), &[]);
    assert!(!own.status.success(), "the requester approved its own push");
    assert!(String::from_utf8_lossy(&own.stderr).contains("403"), "{}", String::from_utf8_lossy(&own.stderr));
    let approved = decide(&stack, "approve", &id, &alice, &[]);
    assert!(approved.status.success(), "{}", String::from_utf8_lossy(&approved.stderr));
    let shown = String::from_utf8_lossy(&approved.stderr);
    assert!(shown.contains("repo:org/app:write") && shown.contains("app-writes-need-a-maintainer"), "{shown}");
    let out = finished(waiting);
    assert!(out.status.success(), "the approved push failed: {}", String::from_utf8_lossy(&out.stderr));
    let lines = mayfly_lines(&out.stderr);
    assert!(
        lines.iter().any(|l| l.starts_with("mayfly: waiting for approval of write on ") && l.contains(&id)),
        "{lines:?}"
    );
    let issued = stack.sts_audit().into_iter().find(|l| l["outcome"] == "issued" && l["approval"] == id.as_str());
    assert!(issued.is_some_and(|l| l["scope"] == "repo:org/app:write"), "{:?}", stack.sts_audit());
    stack.assert_no_tokens_on_disk();
}
