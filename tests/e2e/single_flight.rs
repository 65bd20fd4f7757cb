//! Concurrency and freshness: one exchange for many callers, no stale tokens.

use std::process::Stdio;

use mayfly_tests::{Options, Stack, require_tool};

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn thirty_two_parallel_ls_remotes_on_a_cold_cache_cause_one_exchange() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    let url = stack.repo_url("org/app.git");
    let children: Vec<_> = (0..32)
        .map(|_| {
            let mut git = stack.git_cmd(&stack.work, &["ls-remote", &url]);
            git.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(stack.sts_issued(), 1, "counted at mayfly-sts");
    assert_eq!(stack.issuer.issued(), 1, "one subject token too");
    let audit = stack.client_audit();
    assert_eq!(audit.len(), 32);
    assert_eq!(audit.iter().filter(|l| l["outcome"] == "issued").count(), 1);
    stack.assert_no_tokens_on_disk();
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn entries_inside_the_refresh_margin_are_never_served_and_expired_subjects_are_refetched() {
    if !require_tool("git") {
        return;
    }
    // Twenty-second tokens: the margin is capped at half the lifetime, ten seconds. The
    // third request comes 10.5 s after the first one ended (so after the token's refresh
    // time, however slow the machine) and well before its expiry, 20 s after it was minted.
    let stack = Stack::with(Options { subject_lifetime: 20, max_ttl: "20s", ..Options::default() });
    let url = stack.repo_url("org/app.git");
    stack.git_ok(&stack.work, &["ls-remote", &url]);
    let first_done = std::time::Instant::now();
    stack.git_ok(&stack.work, &["ls-remote", &url]);
    std::thread::sleep(std::time::Duration::from_millis(10_500).saturating_sub(first_done.elapsed()));
    stack.git_ok(&stack.work, &["ls-remote", &url]);
    // The replaced token is revoked after git has its answer, by the helper's detached
    // copy: its line may come after the new token's.
    let mut outcomes = Vec::new();
    for _ in 0..200 {
        outcomes = stack.client_audit().iter().map(|l| l["outcome"].as_str().unwrap().to_owned()).collect();
        if outcomes.len() == 4 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    outcomes[2..].sort();
    assert_eq!(
        outcomes,
        ["issued", "cache-hit", "issued", "revoked"],
        "the replaced token is revoked, not left to live"
    );
    assert_eq!(stack.sts_issued(), 2);
    assert_eq!(stack.issuer.issued(), 2, "the subject token was fetched again");
}
