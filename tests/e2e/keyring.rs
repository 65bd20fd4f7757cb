//! The cache key in the kernel keyring: shared by one user's helper processes, out of other
//! users' reach, and no token readable in any key mayfly keeps there.

use std::process::{Command, Output};

use mayfly_tests::{Stack, require_tool};

fn keyctl(args: &[&str]) -> Output {
    Command::new("keyctl").args(args).output().expect("keyctl runs")
}

/// `keyctl` as another user (nobody): needs root, as CI has.
fn keyctl_as_nobody(args: &[&str]) -> Option<Output> {
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
    if uid != 0 {
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "CI runs the tests as root");
        eprintln!("\n!!!!! SKIPPED the second-user half: it needs root to run a process as nobody !!!!!\n");
        return None;
    }
    let mut argv = vec!["--reuid=65534", "--regid=65534", "--clear-groups", "keyctl"];
    argv.extend_from_slice(args);
    Some(Command::new("setpriv").args(&argv).output().expect("setpriv runs"))
}

fn status(env: Vec<(String, String)>) -> serde_json::Value {
    let shown = assert_cmd::Command::new(mayfly_tests::bin("mayfly"))
        .args(["status", "--json"])
        .env_clear()
        .envs(env)
        .output()
        .unwrap();
    serde_json::from_slice(&shown.stdout).expect("status --json")
}

#[test]
#[cfg_attr(any(missing = "git", missing = "keyctl"), ignore = "needs git, keyctl: one is not installed")]
fn the_cache_key_lives_in_the_user_keyring_for_that_user_alone() {
    if !require_tool("git") || !require_tool("keyctl") {
        return;
    }
    let stack = Stack::new();
    let first = stack.helper_token("org/app.git");
    let second = stack.helper_token("org/app.git");
    assert_eq!(first, second, "the second helper process read the entry the first one sealed");
    assert_eq!(stack.sts_issued(), 1);

    let runtime = stack.runtime_dir.path().join("rt");
    assert!(!runtime.join("cache.key").exists(), "no key file beside a keyring key");
    let description = format!("mayfly-cache-key-{}", mayfly_core::Cache::key(&[&runtime.display().to_string()]));
    let found = keyctl(&["search", "@u", "user", &description]);
    assert!(found.status.success(), "the key is in the user keyring: {}", String::from_utf8_lossy(&found.stderr));
    let id = String::from_utf8(found.stdout).unwrap().trim().to_owned();
    let payload = keyctl(&["pipe", &id]);
    assert!(payload.status.success());
    assert!(payload.stdout.starts_with(b"AGE-SECRET-KEY-1"), "the key itself, readable by its user");
    assert!(!mayfly_core::contains_jwt(&payload.stdout));

    // Only the key is there: the token is in no key of this user's keyring.
    let listed = keyctl(&["rlist", "@u"]);
    for key in String::from_utf8_lossy(&listed.stdout).split_whitespace() {
        let held = keyctl(&["pipe", key]).stdout;
        assert!(!held.windows(first.len()).any(|w| w == first.as_bytes()), "key {key} holds the token");
    }

    assert_eq!(status(stack.env())["cache"]["key_store"], "kernel user keyring");

    let Some(theirs) = keyctl_as_nobody(&["pipe", &id]) else { return };
    assert!(!theirs.status.success(), "another user read the key");
    assert!(String::from_utf8_lossy(&theirs.stderr).contains("Permission denied"), "{:?}", theirs);
    let searched = keyctl_as_nobody(&["search", "@u", "user", &description]).unwrap();
    assert!(!searched.status.success(), "another user's keyring has no such key");
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn without_the_keyring_the_key_is_a_file_in_the_memory_backed_directory() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    let mut env = stack.env();
    env.push(("MAYFLY_KEY_STORE".into(), "runtime".into()));
    let json = status(env.clone());
    let key = stack.runtime_dir.path().join("rt").join("cache.key");
    assert_eq!(json["cache"]["key_store"], format!("memory-backed `{}`", key.display()));
    assert!(key.exists());
    let doctor = assert_cmd::Command::new(mayfly_tests::bin("mayfly"))
        .args(["doctor", "--offline"])
        .env_clear()
        .envs(env)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(text.contains("not the kernel keyring"), "doctor says which store: {text}");
}
