//! `mayfly exec --proxy --isolate`: the command in a bubblewrap sandbox whose only way
//! out is the session's proxy.
//!
//! Without it, a process of the same user can read everything mayfly keeps (the cache
//! key in the user keyring or `/dev/shm`, the cache, the config, identity token files,
//! `/proc` of mayfly's processes) and connect wherever it likes. The sandbox takes each
//! away: a user namespace of its own, a seccomp filter that refuses the kernel keyring's
//! system calls (a user namespace alone does not: the key keeps its owner's uid, and a
//! process that reads its serial number in `/proc/keys` can read it), a PID namespace
//! with a fresh `/proc` (mayfly's processes are not in it), an IPC namespace, and a
//! network namespace with only a loopback interface. The root file system is
//! read-only; mayfly's directories, `$XDG_RUNTIME_DIR`, `/dev/shm` and the directories
//! of identity token files are covered by empty ones; `/tmp` is a fresh one; the working
//! directory is writable, but for its repository's git hooks and config. The proxy is reached through a Unix socket bound into the sandbox:
//! `mayfly` itself, as a hidden `sandbox-relay` command, listens on the proxy URL's
//! loopback port inside the sandbox's network and relays each connection to the socket,
//! then runs the command, so clients see the same HTTP proxy URL as without it.

use std::ffi::OsString;
use std::io::Write;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::Context;

/// The namespaces and limits of every sandbox (and of the probe that checks the machine
/// can make one).
const NAMESPACES: [&str; 9] = [
    "--unshare-user",
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-net",
    "--unshare-uts",
    "--unshare-cgroup-try",
    "--die-with-parent",
    "--cap-drop",
    "ALL",
];

/// The system calls of the kernel keyring (`add_key`, `request_key`, `keyctl`), by the
/// architecture the kernel names in `seccomp_data.arch`: the build's own and the 32-bit
/// one its kernel also runs. On x86_64 the x32 bit is masked, so x32's calls are caught too.
#[cfg(target_arch = "x86_64")]
const KEY_CALLS: [(u32, u32, [u32; 3]); 2] =
    [(0xc000_003e, 0xbfff_ffff, [248, 249, 250]), (0x4000_0003, 0xffff_ffff, [286, 287, 288])];
#[cfg(target_arch = "aarch64")]
const KEY_CALLS: [(u32, u32, [u32; 3]); 2] =
    [(0xc000_00b7, 0xffff_ffff, [217, 218, 219]), (0x4000_0028, 0xffff_ffff, [309, 310, 311])];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const KEY_CALLS: [(u32, u32, [u32; 3]); 0] = [];

/// A classic BPF seccomp program: the keyring's calls fail with `EPERM`, every other call
/// of a known architecture is allowed, and a process of an unknown architecture gets
/// `EPERM` for everything. `None` on a build for another architecture.
fn key_filter() -> Option<Vec<u8>> {
    const LD_W_ABS: u16 = 0x20;
    const AND_K: u16 = 0x54;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    const ALLOW: u32 = 0x7fff_0000;
    const EPERM: u32 = 0x0005_0001;
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    if KEY_CALLS.is_empty() {
        return None;
    }
    let block = 5 + KEY_CALLS[0].2.len();
    let deny = block * KEY_CALLS.len();
    let mut program: Vec<(u16, u8, u8, u32)> = Vec::new();
    for (arch, mask, calls) in KEY_CALLS {
        let next = u8::try_from(block - 2).ok()?;
        program.extend([(LD_W_ABS, 0, 0, ARCH), (JEQ_K, 0, next, arch), (LD_W_ABS, 0, 0, NR), (AND_K, 0, 0, mask)]);
        for call in calls {
            let to_deny = u8::try_from(deny - program.len() - 1).ok()?;
            program.push((JEQ_K, to_deny, 0, call));
        }
        program.push((RET_K, 0, 0, ALLOW));
    }
    program.push((RET_K, 0, 0, EPERM));
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for (code, jt, jf, k) in program {
        bytes.extend(code.to_ne_bytes());
        bytes.extend([jt, jf]);
        bytes.extend(k.to_ne_bytes());
    }
    Some(bytes)
}

/// The filter on a pipe bubblewrap reads (`--seccomp FD`), open across `exec`; kept by the
/// caller until the sandbox has started.
pub(crate) fn filter_fd() -> anyhow::Result<std::io::PipeReader> {
    let program =
        key_filter().context("--isolate has no keyring filter for this architecture; the command was not run")?;
    let (reader, mut writer) = std::io::pipe().context("cannot make a pipe for the sandbox's filter")?;
    writer.write_all(&program).context("cannot write the sandbox's filter")?;
    drop(writer);
    nix::fcntl::fcntl(&reader, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()))
        .context("cannot pass the sandbox's filter")?;
    Ok(reader)
}

/// What the sandbox hides and shares.
pub(crate) struct Layout {
    /// Directories covered by an empty one.
    pub hidden_dirs: Vec<PathBuf>,
    /// Files covered by `/dev/null`.
    pub hidden_files: Vec<PathBuf>,
    /// The session's directory for the sandbox (the CA bundle, npm's config, the proxy's
    /// socket), bound read-only on top of everything hidden.
    pub share: PathBuf,
    /// The proxy's socket, inside `share`.
    pub socket: PathBuf,
    /// The working directory, writable.
    pub workdir: PathBuf,
    /// Paths in it bound read-only (git's hooks, config and pointers: [`git_guards`]).
    pub read_only: Vec<PathBuf>,
}

/// `bwrap` on `PATH`, checked by making a sandbox like the command's; the one line that
/// says why not otherwise (the command is never run unisolated).
pub(crate) fn bwrap(path: Option<&str>) -> anyhow::Result<PathBuf> {
    let found = std::env::split_paths(path.unwrap_or_default())
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join("bwrap"))
        .find(|p| is_executable(p));
    let Some(bwrap) = found else {
        anyhow::bail!(
            "--isolate needs bubblewrap (`bwrap`, Debian's `bubblewrap`), which is not on PATH; the command was not run"
        );
    };
    let exe = std::env::current_exe().context("cannot find the mayfly binary")?;
    let filter = filter_fd()?;
    let probe = Command::new(&bwrap)
        .args(NAMESPACES)
        .arg("--seccomp")
        .arg(filter.as_raw_fd().to_string())
        .args(["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--"])
        .arg(&exe)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    drop(filter);
    match probe {
        Ok(out) if out.status.success() => Ok(bwrap),
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let why = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("it failed");
            anyhow::bail!(
                "--isolate: bubblewrap cannot make a sandbox on this machine ({}); the command was not run",
                mayfly_core::sanitize_for_terminal(why.trim())
            )
        }
        Err(e) => anyhow::bail!("--isolate: cannot run `{}`: {e}; the command was not run", bwrap.display()),
    }
}

/// The `bwrap` command that runs `command` in the sandbox, behind the relay on `port`,
/// with the filter `filter` (from [`filter_fd`]) read at its start.
pub(crate) fn command(
    bwrap: &Path,
    layout: &Layout,
    port: u16,
    command: &[OsString],
    filter: &std::io::PipeReader,
) -> anyhow::Result<Command> {
    let exe = std::env::current_exe().context("cannot find the mayfly binary")?;
    let mut bw = Command::new(bwrap);
    bw.args(NAMESPACES).arg("--new-session").arg("--seccomp").arg(filter.as_raw_fd().to_string());
    bw.args(["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]);
    // Before the hidden paths, so that a working directory holding one (a home
    // directory) still has it covered.
    bw.arg("--bind").arg(&layout.workdir).arg(&layout.workdir);
    for path in &layout.read_only {
        bw.arg("--ro-bind").arg(path).arg(path);
    }
    for dir in &layout.hidden_dirs {
        bw.arg("--tmpfs").arg(dir);
    }
    for file in &layout.hidden_files {
        bw.args(["--ro-bind", "/dev/null"]).arg(file);
    }
    let share = std::fs::canonicalize(&layout.share).unwrap_or_else(|_| layout.share.clone());
    bw.arg("--ro-bind").arg(&share).arg(&share);
    // mayfly itself runs the relay inside: last, so a binary under `/tmp` or a covered
    // directory is still there.
    bw.arg("--ro-bind").arg(&exe).arg(&exe);
    bw.arg("--chdir").arg(&layout.workdir);
    bw.arg("--").arg(exe).arg("sandbox-relay").arg("--socket").arg(&layout.socket);
    bw.arg("--port").arg(port.to_string()).arg("--").args(command);
    // The fresh `/tmp`, not a directory the sandbox cannot see.
    bw.env("TMPDIR", "/tmp");
    Ok(bw)
}

/// Daemons' sockets that would let a process leave any sandbox (a container engine runs
/// what it is asked to, outside): covered where they exist.
const DAEMON_SOCKETS: [&str; 3] = ["/run/docker.sock", "/run/podman/podman.sock", "/run/containerd/containerd.sock"];

/// What a session hides from its sandboxed command: mayfly's directories (the config, the
/// cache and its key, the audit log), the memory-backed directories keys live in, every
/// user's runtime directory, container engines' sockets, and the directories of the
/// identity sources' token files, of `$MAYFLY_CONFIG` and of `$MAYFLY_AUDIT_LOG`. A file's
/// whole directory is covered, never the file alone: a file replaced by a rename (vault
/// agent's sinks, spiffe-helper, editors, Kubernetes' projected tokens turning a link)
/// would leave a cover on the old one behind, and the new one readable. A link's own
/// directory and its target's are covered. Paths are resolved; only directories that
/// exist are covered (the audit log's is made first, so that it cannot appear uncovered
/// later). The session's own directory is covered too (it may hold the session's cache),
/// its `share` bound back on top. Refused (one line, the command not run) where a cover
/// would hide what the sandbox needs (`/`, the home directory, the working directory or
/// one above it), and where the working directory is unfit ([`check_workdir`]).
pub(crate) fn hidden(
    env: &mayfly_core::Env,
    config: &mayfly_core::Config,
    session_dir: &Path,
    workdir: &Path,
) -> anyhow::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    use mayfly_core::EnvVars;
    let workdir = std::fs::canonicalize(workdir).unwrap_or_else(|_| workdir.to_path_buf());
    let home = env.path(EnvVars::HOME).filter(|h| h.is_absolute()).map(|h| std::fs::canonicalize(&h).unwrap_or(h));
    check_workdir(env, &workdir, home.as_deref())?;
    let audit = mayfly_core::AuditLog::from_env(env);
    if let Some(dir) = audit.path().and_then(Path::parent) {
        let _ = mayfly_core::files::create_private_dir(dir);
    }
    let tokens = config.identities.values().flat_map(mayfly_core::IdentityConfig::files);
    let files = tokens
        .map(|f| ("the identity token file", f))
        .chain(env.path(EnvVars::MAYFLY_CONFIG).map(|f| ("$MAYFLY_CONFIG", f)))
        .chain(audit.path().map(|f| ("the audit log", f.to_path_buf())));
    let mut file_dirs = Vec::new();
    for (what, file) in files.filter(|(_, f)| f.is_absolute()) {
        for dir in covers(&file) {
            refuse_cover(what, &file, &dir, home.as_deref(), &workdir)?;
            file_dirs.push(dir);
        }
    }
    let dirs = [
        env.config_dir(),
        env.cache_dir(),
        env.state_dir(),
        mayfly_core::Cache::dir_for(env),
        env.path(EnvVars::MAYFLY_RUNTIME_DIR),
        env.path(EnvVars::XDG_RUNTIME_DIR),
        Some(PathBuf::from("/dev/shm")),
        Some(PathBuf::from("/run/user")),
        Some(session_dir.to_path_buf()),
    ]
    .into_iter()
    .flatten()
    .filter(|d| d.is_absolute())
    .filter_map(|d| std::fs::canonicalize(d).ok())
    .chain(file_dirs);
    // A path inside a directory already covered needs nothing more.
    let mut candidates: Vec<PathBuf> = dirs.filter(|d| d.is_dir() && d != Path::new("/")).collect();
    candidates.sort_by_key(|d| d.components().count());
    let mut hidden_dirs: Vec<PathBuf> = Vec::new();
    for dir in candidates {
        if !hidden_dirs.iter().any(|h| dir.starts_with(h)) {
            hidden_dirs.push(dir);
        }
    }
    if let Some(dir) = hidden_dirs.iter().find(|h| workdir.starts_with(h)) {
        anyhow::bail!(
            "--isolate: the working directory `{}` is inside `{}`, which the sandbox hides; the command was not run",
            shown(&workdir),
            shown(dir)
        );
    }
    let mut hidden_files: Vec<PathBuf> = Vec::new();
    for file in DAEMON_SOCKETS.iter().filter_map(|f| std::fs::canonicalize(f).ok()) {
        if !file.is_dir() && !hidden_files.contains(&file) && !hidden_dirs.iter().any(|h| file.starts_with(h)) {
            hidden_files.push(file);
        }
    }
    Ok((hidden_dirs, hidden_files))
}

/// The directories that cover `file`: its own, resolved, where it exists (so that a file
/// that appears later is covered too), and for a link also its target's.
fn covers(file: &Path) -> Vec<PathBuf> {
    let own = file.parent().and_then(|p| std::fs::canonicalize(p).ok());
    let target = std::fs::canonicalize(file).ok().and_then(|t| t.parent().map(Path::to_path_buf));
    let mut dirs: Vec<PathBuf> = own.into_iter().collect();
    if let Some(target) = target.filter(|t| !dirs.contains(t)) {
        dirs.push(target);
    }
    dirs
}

/// Refuses a cover of `dir` (for `file`) that would hide what the sandbox needs.
fn refuse_cover(what: &str, file: &Path, dir: &Path, home: Option<&Path>, workdir: &Path) -> anyhow::Result<()> {
    let why = if dir == Path::new("/") {
        "the root directory"
    } else if home == Some(dir) {
        "your home directory"
    } else if workdir.starts_with(dir) {
        "the working directory or one above it"
    } else {
        return Ok(());
    };
    anyhow::bail!(
        "--isolate cannot hide {what} `{}`: its directory `{}` is {why}, which the sandbox needs; move the file into a directory of its own; the command was not run",
        shown(file),
        shown(dir)
    )
}

/// Refuses a working directory the sandbox must not write: the home directory or one
/// above it (shell start-up files, git's global config), or one that holds mayfly's own
/// directories.
fn check_workdir(env: &mayfly_core::Env, workdir: &Path, home: Option<&Path>) -> anyhow::Result<()> {
    use mayfly_core::EnvVars;
    if home.is_some_and(|h| h.starts_with(workdir)) {
        anyhow::bail!(
            "--isolate: the working directory `{}` is your home directory or holds it, which the sandbox could then write; run it in a project's directory; the command was not run",
            shown(workdir)
        );
    }
    let config = mayfly_core::Config::default_path(env).and_then(|f| f.parent().map(Path::to_path_buf));
    let audit = mayfly_core::AuditLog::from_env(env).path().and_then(Path::parent).map(Path::to_path_buf);
    let mine = [
        env.config_dir(),
        env.cache_dir(),
        env.state_dir(),
        mayfly_core::Cache::dir_for(env),
        env.path(EnvVars::MAYFLY_RUNTIME_DIR),
        config,
        audit,
    ];
    for dir in mine.into_iter().flatten().filter(|d| d.is_absolute()) {
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        if dir.starts_with(workdir) {
            anyhow::bail!(
                "--isolate: the working directory `{}` holds mayfly's `{}`, which the sandbox could then write; run it in a project's directory; the command was not run",
                shown(workdir),
                shown(&dir)
            );
        }
    }
    Ok(())
}

fn shown(path: &Path) -> String {
    mayfly_core::sanitize_for_terminal(&path.display().to_string())
}

/// git's files that make it run code, for the repository the working directory is in:
/// `hooks` and `config` (`core.fsmonitor`, `core.pager`, `credential.helper`, ...) of its
/// git directory (a worktree's `.git` file followed, its `config.worktree` and the common
/// directory's too; the `.git` file and `commondir` themselves, so that neither can be
/// pointed elsewhere), bound read-only so that the sandbox cannot plant code that git runs
/// outside later. Only those that exist; a repository's missing `hooks` is made first (as
/// `git init` does), so that the sandbox cannot make it.
pub(crate) fn git_guards(workdir: &Path) -> Vec<PathBuf> {
    let Some((top, git_dir)) = workdir.ancestors().find_map(|dir| Some((dir, git_dir(dir)?))) else {
        return Vec::new();
    };
    let mut guarded = Vec::new();
    // The pointers too: a `.git` file or `commondir` rewritten to name a folder the
    // command made would bring its own config (and `core.fsmonitor`) to git outside.
    for pointer in [top.join(".git"), git_dir.join("commondir")] {
        if std::fs::symlink_metadata(&pointer).is_ok_and(|m| m.is_file()) {
            guarded.push(pointer);
        }
    }
    let mut dirs = vec![git_dir.clone()];
    if let Ok(common) = mayfly_core::files::read_regular_text(&git_dir.join("commondir"), GIT_POINTER_MAX)
        && let Ok(common) = std::fs::canonicalize(git_dir.join(common.trim()))
    {
        dirs.push(common);
    }
    for dir in dirs {
        if dir.join("config").is_file() && !dir.join("hooks").exists() {
            let _ = std::fs::create_dir(dir.join("hooks"));
        }
        for name in ["hooks", "config", "config.worktree"] {
            let path = dir.join(name);
            if path.exists() && !guarded.contains(&path) {
                guarded.push(path);
            }
        }
    }
    guarded
}

/// The largest `.git` file or `commondir` read: each holds one path.
const GIT_POINTER_MAX: u64 = 64 * 1024;

/// The git directory of a working tree at `dir`: `.git`, or where a `.git` file points.
fn git_dir(dir: &Path) -> Option<PathBuf> {
    let dot = dir.join(".git");
    let meta = dot.metadata().ok()?;
    if meta.is_dir() {
        return std::fs::canonicalize(dot).ok();
    }
    // A planted FIFO or device as `.git` is not waited on or read.
    let text = mayfly_core::files::read_regular_text(&dot, GIT_POINTER_MAX).ok()?;
    let target = text.lines().find_map(|l| l.strip_prefix("gitdir:"))?.trim();
    std::fs::canonicalize(dir.join(target)).ok()
}

/// Arguments of the hidden `mayfly sandbox-relay`, which `--isolate` runs inside the
/// sandbox.
#[derive(clap::Args)]
pub(crate) struct RelayArgs {
    /// The proxy's Unix socket
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// The loopback port to listen on (the proxy URL's)
    #[arg(long, value_name = "PORT")]
    port: u16,
    /// The command and its arguments
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
    command: Vec<OsString>,
}

/// Listens on `127.0.0.1:PORT` in the sandbox's network, relays each connection to the
/// proxy's socket, and runs the command; its status is the command's.
pub(crate) fn relay(args: &RelayArgs) -> anyhow::Result<ExitCode> {
    let listener = TcpListener::bind(("127.0.0.1", args.port))
        .with_context(|| format!("cannot listen on 127.0.0.1:{} in the sandbox", args.port))?;
    let socket = args.socket.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let socket = socket.clone();
            std::thread::spawn(move || pipe(client, &socket));
        }
    });
    let status = match Command::new(&args.command[0]).args(&args.command[1..]).status() {
        Ok(status) => status,
        Err(e) => {
            let name = mayfly_core::sanitize_for_terminal(&args.command[0].to_string_lossy());
            anyhow::bail!("cannot run `{name}`: {e}");
        }
    };
    let _ = std::io::stdout().flush();
    let code = match status.signal() {
        Some(signal) => 128u8.saturating_add(u8::try_from(signal).unwrap_or(127)),
        None => u8::try_from(status.code().unwrap_or(1)).unwrap_or(1),
    };
    Ok(ExitCode::from(code))
}

/// Copies both ways between a client and the proxy until each side is done.
fn pipe(client: TcpStream, socket: &Path) {
    let Ok(proxy) = UnixStream::connect(socket) else { return };
    let (Ok(mut client_reader), Ok(mut proxy_writer)) = (client.try_clone(), proxy.try_clone()) else { return };
    let upstream = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_reader, &mut proxy_writer);
        let _ = proxy_writer.shutdown(Shutdown::Write);
    });
    let (mut proxy_reader, mut client_writer) = (proxy, client);
    let _ = std::io::copy(&mut proxy_reader, &mut client_writer);
    let _ = client_writer.shutdown(Shutdown::Write);
    let _ = upstream.join();
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_bwrap_on_path_isolation_is_refused_in_one_line() {
        let empty = tempfile::tempdir().unwrap();
        let error = bwrap(Some(&empty.path().display().to_string())).unwrap_err().to_string();
        assert!(error.starts_with("--isolate needs bubblewrap (`bwrap`"), "{error}");
        assert!(error.ends_with("the command was not run") && !error.contains('\n'), "{error}");
    }

    #[test]
    fn the_keyring_filter_jumps_only_within_the_program() {
        let program = key_filter().expect("a filter for this architecture");
        assert_eq!(program.len() % 8, 0);
        let count = program.len() / 8;
        for (i, insn) in program.chunks(8).enumerate() {
            let code = u16::from_ne_bytes([insn[0], insn[1]]);
            if code == 0x15 {
                assert!(i + 1 + usize::from(insn[2].max(insn[3])) < count, "instruction {i} jumps out");
            }
        }
        // Ends by refusing: the deny target, and what an unknown architecture gets.
        let last = &program[program.len() - 8..];
        assert_eq!(u32::from_ne_bytes([last[4], last[5], last[6], last[7]]), 0x0005_0001);
    }

    /// A home directory with mayfly's config in it, and a working directory beside it.
    fn home_and_work() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let home = std::fs::canonicalize(root.path()).unwrap().join("home");
        let work = home.parent().unwrap().join("work");
        std::fs::create_dir_all(home.join(".config/mayfly")).unwrap();
        std::fs::write(home.join(".config/mayfly/config.toml"), "").unwrap();
        std::fs::create_dir_all(&work).unwrap();
        (root, home, work)
    }

    fn identities(home: &Path, paths: &[&Path]) -> mayfly_core::Config {
        let toml: String = paths
            .iter()
            .enumerate()
            .map(|(i, p)| format!("[identities.id{i}]\nkind = \"file\"\npath = \"{}\"\n\n", p.display()))
            .collect();
        mayfly_core::Config::parse(&toml, &home.join(".config/mayfly/config.toml")).unwrap()
    }

    fn env(home: &Path, more: &[(&str, &Path)]) -> mayfly_core::Env {
        let mut pairs = vec![("HOME".to_owned(), home.display().to_string())];
        pairs.extend(more.iter().map(|(k, v)| ((*k).to_owned(), v.display().to_string())));
        mayfly_core::Env::from_pairs(pairs)
    }

    #[test]
    fn hidden_paths_are_the_ones_that_exist_once_each() {
        let (_root, home, work) = home_and_work();
        let token = home.join("tokens/id-token");
        std::fs::create_dir_all(token.parent().unwrap()).unwrap();
        std::fs::write(&token, "x").unwrap();
        // A projected token: a link, rotated by turning it; its directory is covered.
        let projected = home.join("projected");
        std::fs::create_dir_all(projected.join("..data")).unwrap();
        std::fs::write(projected.join("..data/token"), "x").unwrap();
        std::os::unix::fs::symlink("..data/token", projected.join("token")).unwrap();
        let parsed = identities(&home, &[&token, &projected.join("token")]);
        let session = tempfile::tempdir().unwrap();
        let (dirs, files) = hidden(&env(&home, &[]), &parsed, session.path(), &work).unwrap();
        assert!(dirs.iter().any(|d| session.path().starts_with(d)), "{dirs:?}");
        assert!(dirs.contains(&home.join(".config/mayfly")), "{dirs:?}");
        assert!(dirs.contains(&home.join(".local/state/mayfly")), "the audit log's directory: {dirs:?}");
        assert!(!dirs.contains(&home.join(".cache/mayfly")), "not there, nothing to hide: {dirs:?}");
        assert!(dirs.contains(&PathBuf::from("/dev/shm")), "{dirs:?}");
        assert!(dirs.contains(&home.join("projected")), "{dirs:?}");
        // A token file's whole directory, so that a file renamed over it is covered too.
        assert!(dirs.contains(&home.join("tokens")), "{dirs:?}");
        assert!(!files.iter().any(|f| f.starts_with(&home)), "no file covered alone: {files:?}");
    }

    #[test]
    fn a_linked_token_has_its_targets_directory_covered_too() {
        let (_root, home, work) = home_and_work();
        let (links, targets) = (home.join("links"), home.join("vault"));
        std::fs::create_dir_all(&links).unwrap();
        std::fs::create_dir_all(&targets).unwrap();
        std::fs::write(targets.join("token"), "x").unwrap();
        std::os::unix::fs::symlink(targets.join("token"), links.join("token")).unwrap();
        let parsed = identities(&home, &[&links.join("token")]);
        let session = tempfile::tempdir().unwrap();
        let (dirs, _) = hidden(&env(&home, &[]), &parsed, session.path(), &work).unwrap();
        assert!(dirs.contains(&links) && dirs.contains(&targets), "{dirs:?}");
    }

    #[test]
    fn mayfly_config_and_the_audit_log_have_their_directories_covered() {
        let (_root, home, work) = home_and_work();
        let etc = home.join("etc-mayfly");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("config.toml"), "").unwrap();
        let log = home.join("logs/audit.jsonl");
        let vars = [("MAYFLY_CONFIG", etc.join("config.toml")), ("MAYFLY_AUDIT_LOG", log.clone())];
        let vars: Vec<(&str, &Path)> = vars.iter().map(|(k, v)| (*k, v.as_path())).collect();
        let session = tempfile::tempdir().unwrap();
        let (dirs, files) = hidden(&env(&home, &vars), &identities(&home, &[]), session.path(), &work).unwrap();
        assert!(dirs.contains(&etc) && dirs.contains(&home.join("logs")), "{dirs:?}");
        assert!(files.iter().all(|f| !f.starts_with(&home)), "{files:?}");
    }

    #[test]
    fn a_token_file_whose_directory_the_sandbox_needs_is_refused_in_one_line() {
        let (_root, home, work) = home_and_work();
        let session = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(work.join("src")).unwrap();
        let outside = home.join("vault");
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(home.join("loose-token"), outside.join("token")).unwrap();
        for (token, why) in [
            (home.join("id-token"), "your home directory"),
            (work.join("id-token"), "the working directory or one above it"),
            (home.parent().unwrap().join("id-token"), "the working directory or one above it"),
            // A link in a directory of its own, to a file loose in the home directory.
            (outside.join("token"), "your home directory"),
        ] {
            std::fs::write(&token, "x").unwrap_or(());
            let parsed = identities(&home, &[&token]);
            let error = hidden(&env(&home, &[]), &parsed, session.path(), &work.join("src")).unwrap_err().to_string();
            assert!(error.starts_with("--isolate cannot hide the identity token file `"), "{error}");
            assert!(error.contains(why) && error.contains("move the file into a directory of its own"), "{error}");
            assert!(!error.contains('\n'), "{error}");
        }
        let vars = [
            ("MAYFLY_CONFIG", home.join(".config/mayfly/config.toml")),
            ("MAYFLY_AUDIT_LOG", home.join("audit.jsonl")),
        ];
        let vars: Vec<(&str, &Path)> = vars.iter().map(|(k, v)| (*k, v.as_path())).collect();
        let error = hidden(&env(&home, &vars), &identities(&home, &[]), session.path(), &work).unwrap_err().to_string();
        assert!(error.starts_with("--isolate cannot hide the audit log `"), "{error}");
    }

    #[test]
    fn a_working_directory_that_is_home_or_holds_mayflys_directories_is_refused() {
        let (_root, home, work) = home_and_work();
        let session = tempfile::tempdir().unwrap();
        let none = identities(&home, &[]);
        for dir in [home.clone(), home.parent().unwrap().to_path_buf()] {
            let error = hidden(&env(&home, &[]), &none, session.path(), &dir).unwrap_err().to_string();
            assert!(error.contains("is your home directory or holds it") && !error.contains('\n'), "{error}");
        }
        let error = hidden(&env(&home, &[]), &none, session.path(), &home.join(".config")).unwrap_err().to_string();
        assert!(error.contains("holds mayfly's `") && error.contains(".config/mayfly"), "{error}");
        let error =
            hidden(&env(&home, &[]), &none, session.path(), &home.join(".config/mayfly")).unwrap_err().to_string();
        assert!(error.contains("holds mayfly's"), "{error}");
        let config = work.join("conf/config.toml");
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        let error =
            hidden(&env(&home, &[("MAYFLY_CONFIG", &config)]), &none, session.path(), &work).unwrap_err().to_string();
        assert!(error.contains("holds mayfly's") && error.contains("conf"), "{error}");
        assert!(hidden(&env(&home, &[]), &none, session.path(), &work).is_ok());
    }

    #[test]
    fn git_hooks_and_config_are_bound_read_only_a_worktree_followed() {
        let root = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(root.path()).unwrap();
        // A repository without hooks: they are made, so that the sandbox cannot make them.
        let repo = root.join("repo");
        std::fs::create_dir_all(repo.join(".git")).unwrap();
        std::fs::create_dir_all(repo.join("src/deep")).unwrap();
        std::fs::write(repo.join(".git/config"), "").unwrap();
        let guards = git_guards(&repo.join("src/deep"));
        assert_eq!(guards, vec![repo.join(".git/hooks"), repo.join(".git/config")]);
        assert!(repo.join(".git/hooks").is_dir());
        // A worktree: its `.git` file followed, and the common directory's files too.
        let tree = root.join("tree");
        let private = repo.join(".git/worktrees/tree");
        std::fs::create_dir_all(&private).unwrap();
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::write(private.join("commondir"), "../..\n").unwrap();
        std::fs::write(private.join("config.worktree"), "").unwrap();
        std::fs::write(tree.join(".git"), format!("gitdir: {}\n", private.display())).unwrap();
        let guards = git_guards(&tree);
        assert_eq!(
            guards,
            vec![
                tree.join(".git"),
                private.join("commondir"),
                private.join("config.worktree"),
                repo.join(".git/hooks"),
                repo.join(".git/config")
            ]
        );
        // Outside any repository: nothing.
        let plain = root.join("plain");
        std::fs::create_dir_all(&plain).unwrap();
        assert!(git_guards(&plain).iter().all(|p| !p.starts_with(&root)));
    }

    #[test]
    fn read_only_paths_are_bound_after_the_working_directory() {
        let filter = filter_fd().unwrap();
        let layout = Layout {
            hidden_dirs: vec![PathBuf::from("/dev/shm")],
            hidden_files: Vec::new(),
            share: PathBuf::from("/nonexistent/share"),
            socket: PathBuf::from("/nonexistent/share/proxy.sock"),
            workdir: PathBuf::from("/w"),
            read_only: vec![PathBuf::from("/w/.git/hooks"), PathBuf::from("/w/.git/config")],
        };
        let bw = command(Path::new("/bin/bwrap"), &layout, 1, &[OsString::from("true")], &filter).unwrap();
        let args: Vec<String> = bw.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        let at = |seq: &[&str]| {
            args.windows(seq.len()).position(|w| w == seq).unwrap_or_else(|| panic!("{seq:?} in {args:?}"))
        };
        let work = at(&["--bind", "/w", "/w"]);
        assert!(work < at(&["--ro-bind", "/w/.git/hooks", "/w/.git/hooks"]));
        assert!(work < at(&["--ro-bind", "/w/.git/config", "/w/.git/config"]));
    }
}
