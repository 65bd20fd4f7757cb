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
//! read-only; mayfly's directories, `$XDG_RUNTIME_DIR`, `/dev/shm` and identity token
//! files are covered by empty ones; `/tmp` is a fresh one; the working directory is
//! writable. The proxy is reached through a Unix socket bound into the sandbox:
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
    for dir in &layout.hidden_dirs {
        bw.arg("--tmpfs").arg(dir);
    }
    for file in &layout.hidden_files {
        bw.args(["--ro-bind", "/dev/null"]).arg(file);
    }
    let share = std::fs::canonicalize(&layout.share).unwrap_or_else(|_| layout.share.clone());
    bw.arg("--ro-bind").arg(&share).arg(&share);
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

/// What a session hides from its sandboxed command: mayfly's directories and files (the
/// config, the cache and its key, the audit log), the memory-backed directories keys
/// live in, every user's runtime directory, container engines' sockets, and the identity
/// sources' token files. Paths are resolved (a link to a hidden file is hidden with it);
/// only paths that exist are covered: the rest are not there to read (the audit log's
/// directory is made first, so that it cannot appear uncovered later). A token file that
/// is itself a link (Kubernetes' projected tokens, rotated by turning a link) has its
/// directory covered, so that the next token is too. The session's own directory is
/// covered too (it may hold the session's cache), its `share` bound back on top.
pub(crate) fn hidden(
    env: &mayfly_core::Env,
    config: &mayfly_core::Config,
    session_dir: &Path,
) -> (Vec<PathBuf>, Vec<PathBuf>) {
    use mayfly_core::EnvVars;
    let audit = mayfly_core::AuditLog::from_env(env);
    if let Some(dir) = audit.path().and_then(Path::parent) {
        let _ = mayfly_core::files::create_private_dir(dir);
    }
    let (linked, plain): (Vec<PathBuf>, Vec<PathBuf>) = config
        .identities
        .values()
        .flat_map(mayfly_core::IdentityConfig::files)
        .partition(|f| f.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()));
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
        audit.path().and_then(Path::parent).map(Path::to_path_buf),
    ]
    .into_iter()
    .flatten()
    .chain(linked.iter().filter_map(|f| f.parent().map(Path::to_path_buf)));
    // A path inside a directory already covered needs nothing more.
    let mut candidates: Vec<PathBuf> = dirs
        .filter(|d| d.is_absolute())
        .filter_map(|d| std::fs::canonicalize(d).ok())
        .filter(|d| d.is_dir() && d != Path::new("/"))
        .collect();
    candidates.sort_by_key(|d| d.components().count());
    let mut hidden_dirs: Vec<PathBuf> = Vec::new();
    for dir in candidates {
        if !hidden_dirs.iter().any(|h| dir.starts_with(h)) {
            hidden_dirs.push(dir);
        }
    }
    let files = [mayfly_core::Config::default_path(env), audit.path().map(Path::to_path_buf)]
        .into_iter()
        .flatten()
        .chain(plain)
        .chain(DAEMON_SOCKETS.iter().map(PathBuf::from));
    let mut hidden_files: Vec<PathBuf> = Vec::new();
    for file in files.filter(|f| f.is_absolute()).filter_map(|f| std::fs::canonicalize(f).ok()) {
        if !file.is_dir() && !hidden_files.contains(&file) && !hidden_dirs.iter().any(|h| file.starts_with(h)) {
            hidden_files.push(file);
        }
    }
    (hidden_dirs, hidden_files)
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

    #[test]
    fn hidden_paths_are_the_ones_that_exist_once_each() {
        let home = tempfile::tempdir().unwrap();
        let config = home.path().join(".config/mayfly");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::write(config.join("config.toml"), "").unwrap();
        let token = home.path().join("id-token");
        std::fs::write(&token, "x").unwrap();
        // A projected token: a link, rotated by turning it; its directory is covered.
        let projected = home.path().join("projected");
        std::fs::create_dir_all(projected.join("..data")).unwrap();
        std::fs::write(projected.join("..data/token"), "x").unwrap();
        std::os::unix::fs::symlink("..data/token", projected.join("token")).unwrap();
        let env = mayfly_core::Env::from_pairs([("HOME", home.path().display().to_string())]);
        let toml = format!(
            "[identities.k8s]\nkind = \"file\"\npath = \"{}\"\n\n[identities.pod]\nkind = \"file\"\npath = \"{}\"\n",
            token.display(),
            projected.join("token").display()
        );
        let parsed = mayfly_core::Config::parse(&toml, &config.join("config.toml")).unwrap();
        let session = tempfile::tempdir().unwrap();
        let (dirs, files) = hidden(&env, &parsed, session.path());
        assert!(dirs.iter().any(|d| session.path().starts_with(d)), "{dirs:?}");
        let home = std::fs::canonicalize(home.path()).unwrap();
        assert!(dirs.contains(&home.join(".config/mayfly")), "{dirs:?}");
        assert!(dirs.contains(&home.join(".local/state/mayfly")), "the audit log's directory: {dirs:?}");
        assert!(!dirs.contains(&home.join(".cache/mayfly")), "not there, nothing to hide: {dirs:?}");
        assert!(dirs.contains(&PathBuf::from("/dev/shm")), "{dirs:?}");
        assert!(dirs.contains(&home.join("projected")), "{dirs:?}");
        // The config file is in a covered directory; the token file is not.
        assert!(files.contains(&home.join("id-token")), "{files:?}");
        assert!(!files.iter().any(|f| f.starts_with(home.join(".config"))), "{files:?}");
    }
}
