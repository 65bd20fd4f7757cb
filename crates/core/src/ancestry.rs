//! The process ancestry of a helper: the intent behind a request.
//!
//! git's protocol does not say whether a credential is for fetching or pushing; the
//! process tree does. With git 2.47 a helper runs as `sh -c helper get`, under
//! `git-remote-https`, under `git remote-https`, under `git push`.

use serde::Serialize;
use serde::ser::SerializeStruct;

use crate::Operation;
use crate::shape::command_shape;

/// How far up the tree to look.
const MAX_DEPTH: usize = 12;

/// One ancestor: its pid and its argv.
///
/// The argv is kept as read, in memory only, because inferring the operation needs every
/// option and value; whatever leaves the process (audit lines, `Debug`) carries only its
/// [shape](crate::shape::command_shape).
#[derive(Clone, PartialEq, Eq)]
pub struct Process {
    /// Process id.
    pub pid: u32,
    /// Command line as read.
    pub argv: Vec<String>,
}

impl Serialize for Process {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Process", 2)?;
        s.serialize_field("pid", &self.pid)?;
        s.serialize_field("argv", &command_shape(&self.argv))?;
        s.end()
    }
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process").field("pid", &self.pid).field("argv", &command_shape(&self.argv)).finish()
    }
}

impl Process {
    /// A short digest of this process (pid and command line as read): how a later audit
    /// line finds the part of its chain it shares with an earlier one, kept only inside
    /// the encrypted cache.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update(self.pid.to_be_bytes());
        for arg in &self.argv {
            hash.update((arg.len() as u64).to_be_bytes());
            hash.update(arg.as_bytes());
        }
        hex::encode(&hash.finalize()[..8])
    }
}

/// The ancestors of this process, parent first, up to (not including) pid 1.
pub fn ancestry() -> Vec<Process> {
    let mut chain = Vec::new();
    let mut pid = parent_of("self");
    while let Some(p) = pid.filter(|&p| p > 1) {
        if chain.len() == MAX_DEPTH {
            break;
        }
        let argv = read_proc(&format!("/proc/{p}/cmdline"))
            .map(|raw| {
                raw.split(|&b| b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        chain.push(Process { pid: p, argv });
        pid = parent_of(&p.to_string());
    }
    chain
}

fn parent_of(pid: &str) -> Option<u32> {
    // Lossy: a process whose name is not UTF-8 must not end the walk (and hide a push).
    let stat = String::from_utf8_lossy(&read_proc(&format!("/proc/{pid}/stat")).ok()?).into_owned();
    // The command name may contain spaces and parentheses: the fields start after the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// A file under `/proc`, read with plain reads into a page-sized buffer: the kernel
/// reports its length as 0, so `fs::read` would ask for it first (`statx`, `lseek`) and
/// then start small. A read that returns less than it was given room for is the end (the
/// kernel fills what it can), so a short file is one read, not two.
fn read_proc(path: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut bytes = vec![0; 4096];
    let mut len = 0;
    loop {
        let read = match file.read(&mut bytes[len..]) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            read => read?,
        };
        len += read;
        if read == 0 || len < bytes.len() {
            break;
        }
        bytes.resize(bytes.len() * 2, 0);
    }
    bytes.truncate(len);
    Ok(bytes)
}

/// Write when a `git push` (or the send/receive-pack plumbing) is above us, read otherwise.
pub fn infer_git_operation(chain: &[Process]) -> Operation {
    let pushes = chain.iter().any(|p| {
        let Some(program) = p.argv.first() else {
            return false;
        };
        let base = program.rsplit('/').next().unwrap_or(program);
        match base {
            "git-push" | "git-send-pack" | "git-receive-pack" => true,
            "git" => git_subcommand(&p.argv[1..]).is_some_and(|s| matches!(s, "push" | "send-pack" | "receive-pack")),
            _ => false,
        }
    });
    if pushes { Operation::Write } else { Operation::Read }
}

/// Global options of OCI clients (docker, podman, buildah, skopeo, nerdctl, crane) that
/// take a value in the next argument: `docker --config D push` is a push, not a `D`.
const OCI_GLOBAL_VALUES: &[&str] = &[
    "--config",
    "-c",
    "--context",
    "-H",
    "--host",
    "-l",
    "--log-level",
    "--tlscacert",
    "--tlscert",
    "--tlskey",
    "--root",
    "--runroot",
    "--storage-driver",
    "--storage-opt",
    "--cgroup-manager",
    "--connection",
    "--url",
    "--identity",
    "--events-backend",
    "--network-cmd-path",
    "--tmpdir",
    "--module",
    "--conmon",
    "--runtime",
    "--ssh",
    "--registries-conf",
    "--registries.d",
    "--policy",
    "--override-arch",
    "--override-os",
    "--override-variant",
    "--command-timeout",
    "--user-agent",
    "-n",
    "--namespace",
    "-a",
    "--address",
    "--snapshotter",
    "--cni-path",
    "--data-root",
    "--platform",
    "--userns-uid-map",
    "--userns-gid-map",
];

/// Write (push) when an OCI client above us is pushing or copying, read (pull) otherwise.
/// The credential-helper protocol names only the registry; a copy may push to it.
pub fn infer_oci_operation(chain: &[Process]) -> Operation {
    let pushes = chain.iter().any(|p| {
        let Some((program, args)) = p.argv.split_first() else { return false };
        let program = program.rsplit('/').next().unwrap_or(program);
        match (program, positional_words(args, OCI_GLOBAL_VALUES).as_slice()) {
            ("docker" | "podman" | "buildah" | "nerdctl" | "oras", words) => {
                matches!(words, ["push", ..] | ["manifest" | "image", "push", ..])
            }
            ("skopeo", [command, ..]) => matches!(*command, "copy" | "sync" | "delete"),
            ("crane", [command, ..]) => {
                matches!(*command, "push" | "copy" | "cp" | "append" | "mutate" | "tag" | "delete")
            }
            _ => false,
        }
    });
    if pushes { Operation::Write } else { Operation::Read }
}

/// The non-option words of a command line, skipping each option and, for the options in
/// `takes_value` written without `=`, the value after it.
fn positional_words<'a>(args: &'a [String], takes_value: &[&str]) -> Vec<&'a str> {
    let mut words = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            words.extend(args.map(String::as_str));
            break;
        }
        if arg.starts_with('-') && arg.len() > 1 {
            if takes_value.contains(&arg.as_str()) {
                args.next();
            }
            continue;
        }
        words.push(arg.as_str());
    }
    words
}

/// The user's command: the outermost ancestor that runs the tool, from the tool's name on
/// (`aws s3 cp ...` even when the process is `python3 /usr/bin/aws s3 cp ...`), as its
/// [shape](crate::shape::command_shape). Empty when no ancestor runs it. `mayfly audit`
/// shows it for the lines it reads back.
pub fn command_of(tool: &str, chain: &[Process]) -> Vec<String> {
    const INTERPRETERS: [&str; 6] = ["python", "node", "sh", "bash", "perl", "ruby"];
    let base = |arg: &String| arg.rsplit('/').next().unwrap_or(arg).to_owned();
    chain
        .iter()
        .rev()
        .find_map(|p| {
            let program = p.argv.first().map(base)?;
            if program == tool {
                return Some(command_shape(&p.argv));
            }
            let interpreted = INTERPRETERS.iter().any(|i| program.starts_with(i));
            (interpreted && p.argv.get(1).map(base).as_deref() == Some(tool)).then(|| command_shape(&p.argv[1..]))
        })
        .unwrap_or_default()
}

/// git's global options that take a value in the next argument.
const GIT_GLOBAL_VALUES: &[&str] =
    &["-c", "-C", "--git-dir", "--work-tree", "--namespace", "--config-env", "--super-prefix"];

/// The first argument of `git [global options] <subcommand>`.
fn git_subcommand(args: &[String]) -> Option<&str> {
    positional_words(args, GIT_GLOBAL_VALUES).first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(argvs: &[&[&str]]) -> Vec<Process> {
        argvs
            .iter()
            .enumerate()
            .map(|(i, a)| Process { pid: i as u32 + 10, argv: a.iter().map(|s| s.to_string()).collect() })
            .collect()
    }

    #[test]
    fn push_above_the_helper_means_write() {
        let c = chain(&[
            &["/bin/sh", "-c", "git-credential-mayfly get"],
            &["/usr/local/libexec/git-core/git-remote-https", "origin", "https://h/r"],
            &["git", "remote-https", "origin", "https://h/r"],
            &["git", "-c", "x=y", "-C", "/tmp", "push", "origin", "main"],
        ]);
        assert_eq!(infer_git_operation(&c), Operation::Write);
    }

    #[test]
    fn fetch_clone_and_lookalikes_mean_read() {
        assert_eq!(infer_git_operation(&chain(&[&["git", "fetch", "push"]])), Operation::Read);
        assert_eq!(infer_git_operation(&chain(&[&["git", "-c", "push", "clone"]])), Operation::Read);
        assert_eq!(infer_git_operation(&chain(&[&["/usr/bin/pushy", "push"]])), Operation::Read);
        assert_eq!(infer_git_operation(&[]), Operation::Read);
    }

    #[test]
    fn the_command_is_the_outermost_run_of_the_tool_even_under_an_interpreter() {
        let c = chain(&[
            &["/bin/sh", "-c", "mayfly-aws-credential deploy"],
            &["/usr/bin/python3.11", "/usr/local/bin/aws", "s3", "cp", "a", "s3://b"],
            &["bash", "deploy.sh"],
        ]);
        assert_eq!(command_of("aws", &c), ["/usr/local/bin/aws", "s3", "cp", "a", "s3://b"]);
        let c = chain(&[&["git", "remote-https", "origin"], &["git", "push", "origin"], &["python3", "agent.py"]]);
        assert_eq!(command_of("git", &c), ["git", "push", "origin"]);
        assert!(command_of("cargo", &c).is_empty());
    }

    #[test]
    fn oci_pushes_and_copies_mean_write() {
        let write = [
            &["docker", "push", "r/x"][..],
            &["/usr/bin/docker", "manifest", "push", "--insecure", "r/x"],
            &["skopeo", "copy", "oci:d:v1", "docker://r/x"],
            &["skopeo", "--debug", "sync", "a", "b"],
            &["crane", "push", "d", "r/x"],
            &["docker", "--config", "/d", "push", "r/x"],
            &["docker", "--context", "ctx", "push", "r/x"],
            &["docker", "-H", "unix:///s", "--log-level", "error", "image", "push", "r/x"],
            &["podman", "--log-level", "error", "push", "r/x"],
            &["podman", "--root", "/r", "--runroot", "/rr", "--storage-driver", "vfs", "push", "r/x"],
            &["buildah", "--storage-driver", "vfs", "push", "r/x"],
            &["skopeo", "--registries-conf", "f", "copy", "a", "b"],
            &["skopeo", "--command-timeout", "10s", "--policy", "p", "sync", "a", "b"],
            &["nerdctl", "-n", "k8s.io", "push", "r/x"],
        ];
        for argv in write {
            assert_eq!(infer_oci_operation(&chain(&[argv])), Operation::Write, "{argv:?}");
        }
        for argv in [
            &["docker", "pull", "push"][..],
            &["skopeo", "inspect", "docker://r/push"],
            &["docker", "manifest", "inspect", "r/x"],
            &["docker", "--config", "push", "pull", "r/x"],
            &["podman", "--log-level", "push", "pull", "r/x"],
            &["skopeo", "--policy", "copy", "inspect", "docker://r/x"],
        ] {
            assert_eq!(infer_oci_operation(&chain(&[argv])), Operation::Read, "{argv:?}");
        }
    }

    #[test]
    fn a_proc_file_longer_than_a_page_is_read_whole() {
        let long = "x".repeat(3 * 4096 + 123);
        // A shell waiting on its stdin (a builtin: no child), with `long` in its argv.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "read line; :", "x", &long])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Its argv shows once its exec has set it up, a moment after `spawn` returns.
        let cmdline = format!("/proc/{}/cmdline", child.id());
        let mut argv = read_proc(&cmdline);
        for _ in 0..500 {
            if !argv.as_ref().is_ok_and(Vec::is_empty) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            argv = read_proc(&cmdline);
        }
        let stat = read_proc(&format!("/proc/{}/stat", child.id()));
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
        assert_eq!(argv.unwrap(), format!("sh\0-c\0read line; :\0x\0{long}\0").into_bytes());
        let stat = String::from_utf8(stat.unwrap()).unwrap();
        assert!(stat.starts_with(&format!("{} (sh) ", child.id())) && stat.ends_with('\n'), "{stat}");
    }

    #[test]
    fn ancestry_of_a_test_process_is_readable() {
        let chain = ancestry();
        assert!(!chain.is_empty());
        assert!(chain.iter().all(|p| p.pid > 1));
    }
}
