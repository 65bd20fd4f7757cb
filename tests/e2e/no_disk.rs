//! Invariant 1, traced: during a clone and a push, tokens travel through pipes and sockets
//! only. No write to a file and no process's argv carries one.

use mayfly_tests::{Stack, require_tool};

#[test]
#[cfg_attr(any(missing = "git", missing = "strace"), ignore = "needs git, strace: one is not installed")]
fn tokens_reach_pipes_but_never_a_file_or_an_argv() {
    if !require_tool("git") || !require_tool("strace") {
        return;
    }
    let stack = Stack::new();
    // The trace holds the tokens (it records pipe writes): keep it outside the scanned tree.
    let trace_dir = tempfile::tempdir().unwrap();
    let trace = trace_dir.path().join("trace");
    let traced = |dir: &std::path::Path, args: &[&str]| {
        let mut argv = vec![
            "-f",
            "-qq",
            "-y",
            "-s",
            "65536",
            "-e",
            "trace=execve,write,pwrite64,writev,pwritev",
            "-o",
            trace.to_str().unwrap(),
            "git",
        ];
        argv.extend_from_slice(args);
        let mut strace = std::process::Command::new("strace");
        strace.args(&argv).current_dir(dir).env_clear().envs(stack.env());
        let out = strace.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::read_to_string(&trace).unwrap()
    };
    let mut log = traced(&stack.work, &["clone", &stack.repo_url("org/app.git"), "app"]);
    let app = stack.work.join("app");
    stack.commit_file(&app, "t.txt");
    log.push_str(&traced(&app, &["push", "origin", "main"]));

    let mut pipe_writes_with_token = 0;
    for line in log.lines() {
        let has_token = mayfly_core::contains_jwt(line.as_bytes());
        if !has_token {
            continue;
        }
        let call = line.split_once(' ').map_or(line, |(_, rest)| rest);
        assert!(!call.starts_with("execve("), "token in an argv: {}", &call[..call.len().min(120)]);
        // `-y` annotates each fd with what it is: `3</path/file>`, `1<pipe:[..]>`, `5<TCP:[..]>`.
        let fd = call.split_once('<').and_then(|(_, rest)| rest.split_once('>')).map(|(fd, _)| fd).unwrap_or("");
        if fd.starts_with("pipe:") {
            pipe_writes_with_token += 1;
        } else {
            assert!(fd == "/dev/null" || fd.starts_with("/dev/pts"), "token written to `{fd}`");
        }
    }
    assert!(pipe_writes_with_token >= 2, "the trace saw the helper hand tokens to git (read and write)");
    stack.assert_no_tokens_on_disk();
}
