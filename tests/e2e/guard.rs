//! `mayfly guard` and `mayfly setup --guard` with the real git: a commit or a push that
//! carries a credential is refused with where it is and never what it is; clean ones
//! pass; hooks that were there still run; `--undo` gives them back.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use mayfly_tests::{Stack, bin, require_tool};

/// A fake GitHub token, assembled so this file holds none.
fn fake_token() -> String {
    ["ghp", "_FAKE0000FAKE0000FAKE0000FAKE0000FAKE"].concat()
}

fn mayfly(stack: &Stack, dir: &Path, args: &[&str]) -> Output {
    assert_cmd::Command::new(bin("mayfly"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .envs(stack.env())
        .output()
        .expect("mayfly runs")
}

/// A clone of `org/app` with the guard installed as its hooks.
fn guarded_clone(stack: &Stack) -> PathBuf {
    stack.git_ok(&stack.work, &["clone", "-q", &stack.repo_url("org/app.git"), "app"]);
    let app = stack.work.join("app");
    let out = mayfly(stack, &app, &["setup", "--guard"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    app
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write_hook(dir: &Path, name: &str, script: &str) {
    let path = dir.join(".git/hooks").join(name);
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o750)).unwrap();
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn a_commit_with_a_token_is_refused_by_file_line_and_kind_and_a_clean_one_passes() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    let app = guarded_clone(&stack);
    std::fs::write(app.join("notes.md"), "clean\n").unwrap();
    stack.git_ok(&app, &["add", "notes.md"]);
    stack.git_ok(&app, &["commit", "-qm", "clean"]);

    std::fs::write(app.join("deploy.env"), format!("REGION=eu\nGH_TOKEN={}\n", fake_token())).unwrap();
    stack.git_ok(&app, &["add", "deploy.env"]);
    let out = stack.git(&app, &["commit", "-qm", "leak"]);
    let shown = stderr(&out);
    assert!(!out.status.success(), "the commit went through:\n{shown}");
    assert!(shown.contains("deploy.env:2: github-token sha256:"), "{shown}");
    assert!(!shown.contains(&fake_token()), "the token was printed:\n{shown}");
    let head = stack.git_ok(&app, &["log", "--format=%s", "-1"]);
    assert_eq!(String::from_utf8_lossy(&head.stdout).trim(), "clean");
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn a_token_minted_in_this_session_is_found_by_its_fingerprint() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    let app = guarded_clone(&stack);
    let token = stack.helper_token("org/app.git");
    let minted = stack.client_audit().iter().rev().find_map(|l| l["fingerprint"].as_str().map(str::to_owned));
    let minted = minted.expect("the helper recorded the token's fingerprint");

    std::fs::write(app.join("debug.log"), format!("request ok\nretrying with {token} as password\n")).unwrap();
    stack.git_ok(&app, &["add", "debug.log"]);
    let out = stack.git(&app, &["commit", "-qm", "debug output"]);
    let shown = stderr(&out);
    assert!(!out.status.success(), "the commit went through:\n{shown}");
    assert!(shown.contains(&format!("debug.log:2: mayfly-minted-token {minted}")), "{shown}");
    assert!(!shown.contains(&token), "the token was printed:\n{shown}");
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn a_push_whose_new_commits_hold_a_token_is_refused_and_a_clean_update_passes() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    let app = guarded_clone(&stack);
    stack.commit_file(&app, "clean.txt");
    stack.git_ok(&app, &["push", "-q", "origin", "main"]);

    // Past the pre-commit hook, on a branch the remote does not have yet.
    stack.git_ok(&app, &["checkout", "-qb", "feature"]);
    std::fs::write(app.join("config.yml"), format!("a: 1\nb: 2\ntoken: {}\n", fake_token())).unwrap();
    stack.git_ok(&app, &["add", "config.yml"]);
    stack.git_ok(&app, &["commit", "-qm", "config", "--no-verify"]);
    stack.commit_file(&app, "later.txt");
    let out = stack.git(&app, &["push", "-q", "origin", "feature"]);
    let shown = stderr(&out);
    assert!(!out.status.success(), "the push went through:\n{shown}");
    assert!(shown.contains(":config.yml:3: github-token sha256:"), "{shown}");
    assert!(!shown.contains(&fake_token()), "the token was printed:\n{shown}");
    let remote = stack.git_ok(&app, &["ls-remote", "origin", "feature"]);
    assert!(remote.stdout.is_empty(), "the branch reached the remote");

    // A deletion sends nothing to scan.
    stack.git_ok(&app, &["push", "-q", "origin", "main:gone"]);
    stack.git_ok(&app, &["push", "-q", "origin", ":gone"]);
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn existing_hooks_still_run_with_their_input_and_undo_restores_them() {
    if !require_tool("git") {
        return;
    }
    let stack = Stack::new();
    stack.git_ok(&stack.work, &["clone", "-q", &stack.repo_url("org/app.git"), "app"]);
    let app = stack.work.join("app");
    let ran = stack.work.join("ran");
    let pre_commit = format!(
        "#!/bin/sh\necho pre-commit >> '{}'\nexit \"$(cat '{}.status' 2>/dev/null || echo 0)\"\n",
        ran.display(),
        ran.display()
    );
    let pre_push = format!("#!/bin/sh\necho \"pre-push $1 $2\" >> '{0}'\ncat >> '{0}'\n", ran.display());
    write_hook(&app, "pre-commit", &pre_commit);
    write_hook(&app, "pre-push", &pre_push);
    let hooks = app.join(".git/hooks");
    let before: Vec<_> = ["pre-commit", "pre-push"].map(|h| std::fs::read(hooks.join(h)).unwrap()).into();

    for _ in 0..2 {
        let out = mayfly(&stack, &app, &["setup", "--guard"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let again = stderr(&mayfly(&stack, &app, &["setup", "--guard"]));
    assert!(again.contains("nothing to change"), "{again}");
    assert_eq!(std::fs::read(hooks.join("pre-commit.mayfly-chained")).unwrap(), before[0]);

    stack.commit_file(&app, "a.txt");
    stack.git_ok(&app, &["push", "-q", "origin", "main"]);
    let log = std::fs::read_to_string(&ran).unwrap();
    let head = String::from_utf8_lossy(&stack.git_ok(&app, &["rev-parse", "HEAD"]).stdout).trim().to_owned();
    assert!(log.starts_with("pre-commit\npre-push origin https://"), "{log}");
    assert!(log.contains(&format!("\nrefs/heads/main {head} refs/heads/main ")), "stdin did not reach it: {log}");

    // The chained hook's failure still fails the commit.
    std::fs::write(format!("{}.status", ran.display()), "1").unwrap();
    std::fs::write(app.join("b.txt"), "b\n").unwrap();
    stack.git_ok(&app, &["add", "b.txt"]);
    assert!(!stack.git(&app, &["commit", "-qm", "b"]).status.success(), "the chained hook's failure was ignored");

    let out = mayfly(&stack, &app, &["setup", "--guard", "--undo"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for (hook, bytes) in ["pre-commit", "pre-push"].iter().zip(&before) {
        assert_eq!(&std::fs::read(hooks.join(hook)).unwrap(), bytes, "{hook} is not as it was");
        let mode = std::fs::metadata(hooks.join(hook)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o750, "{hook} lost its mode");
        assert!(!hooks.join(format!("{hook}.mayfly-chained")).exists());
    }
    let out = mayfly(&stack, &app, &["setup", "--guard", "--undo"]);
    assert!(stderr(&out).contains("nothing to change"), "{}", stderr(&out));
}

#[test]
fn the_fixture_corpus_gives_every_expected_hit_and_no_miss() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/guard");
    let scratch = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    let mut files = Vec::new();
    for kind in ["hits", "misses"] {
        for entry in std::fs::read_dir(fixtures.join(kind)).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap().replace("%%", "");
            let name = format!("{kind}-{}", path.file_name().unwrap().to_string_lossy());
            let copy = scratch.path().join(&name);
            std::fs::write(&copy, &text).unwrap();
            if kind == "hits" {
                let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
                for (i, line) in text.lines().enumerate() {
                    if !line.trim().is_empty() && !line.starts_with('#') {
                        expected.push(format!("{name}:{}: {stem}", i + 1));
                    }
                }
            }
            files.push(name);
        }
    }
    files.sort();
    let out = assert_cmd::Command::new(bin("mayfly"))
        .arg("guard")
        .args(&files)
        .current_dir(scratch.path())
        .env_clear()
        .env("HOME", scratch.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let mut found: Vec<String> = stderr(&out)
        .lines()
        .filter(|l| l.contains(".txt:"))
        .map(|l| l.split(" sha256:").next().unwrap().to_owned())
        .collect();
    found.sort();
    expected.sort();
    assert_eq!(found, expected);
    assert!(expected.len() >= 15, "the corpus shrank");
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn the_repository_itself_holds_nothing_the_guard_reports() {
    if !require_tool("git") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let out = assert_cmd::Command::new(bin("mayfly"))
        .args(["guard", "--tracked"])
        .current_dir(root)
        .env("HOME", scratch.path())
        .env("XDG_STATE_HOME", scratch.path())
        .env_remove("MAYFLY_AUDIT_LOG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn bad_input_is_one_line_and_exit_two() {
    let scratch = tempfile::tempdir().unwrap();
    let out = assert_cmd::Command::new(bin("mayfly"))
        .args(["guard", "no-such-file"])
        .current_dir(scratch.path())
        .env_clear()
        .env("HOME", scratch.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("no-such-file"), "{}", stderr(&out));
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn tracked_scans_a_long_line_in_pieces_and_reads_no_planted_link_folder_link_or_fifo() {
    if !require_tool("git") {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo");
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(&repo)
            .env("HOME", scratch.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
    };
    std::fs::create_dir(&repo).unwrap();
    git(&["init", "-q"]);
    // A minified bundle: one 3 MiB line with a token past its first megabyte.
    let bundle = format!("{} {} {}\n", "a".repeat(1024 * 1024 - 7), fake_token(), "b".repeat(2 * 1024 * 1024));
    std::fs::write(repo.join("bundle.js"), bundle).unwrap();
    std::fs::create_dir(repo.join("docs")).unwrap();
    for name in ["fifo", "link", "docs/a.txt"] {
        std::fs::write(repo.join(name), "clean\n").unwrap();
    }
    git(&["add", "."]);
    git(&["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "files"]);
    // Swapped after they were committed: a FIFO nobody writes to, a link to a file outside
    // the work tree that holds a token, and a folder swapped for a link to a folder
    // outside holding one.
    let outside = scratch.path().join("outside.txt");
    std::fs::write(&outside, format!("{}\n", fake_token())).unwrap();
    let elsewhere = scratch.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("a.txt"), format!("{}\n", fake_token())).unwrap();
    std::fs::remove_dir_all(repo.join("docs")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, repo.join("docs")).unwrap();
    std::fs::remove_file(repo.join("fifo")).unwrap();
    nix::unistd::mkfifo(&repo.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    std::fs::remove_file(repo.join("link")).unwrap();
    std::os::unix::fs::symlink(&outside, repo.join("link")).unwrap();
    let out = assert_cmd::Command::new(bin("mayfly"))
        .args(["guard", "--tracked"])
        .current_dir(&repo)
        .env_clear()
        .env("HOME", scratch.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("PATH", std::env::var_os("PATH").unwrap())
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let found: Vec<&str> =
        err.lines().filter(|l| l.contains(": github-token")).map(|l| l.split(" sha256:").next().unwrap()).collect();
    assert_eq!(found, ["bundle.js:1: github-token"], "{err}");
    assert!(!err.contains(&fake_token()), "a value is never printed");
}
