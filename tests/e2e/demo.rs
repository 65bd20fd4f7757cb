//! The README's first command, run as a test.

use mayfly_tests::{bin, require_tool};

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn mayfly_demo_runs_the_whole_story() {
    if !require_tool("git") {
        return;
    }
    let out = std::process::Command::new(bin("mayfly")).arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Every step ended as it should."), "{stdout}");
    assert!(stdout.contains("✓ git was refused, as it should be"), "{stdout}");
    assert!(stdout.contains("cache-hit"), "{stdout}");
    assert!(!mayfly_core::contains_jwt(stdout.as_bytes()), "the demo printed a token");
}
