//! `mayfly exec`: run a command with every routed tool wired to mayfly through its
//! environment, as one session whose tokens are revoked when the command ends.
//!
//! The session id tags every audit line and cache entry made inside, so the audit trail
//! reads as one chain: session -> command -> tool -> token. At exit (normal, or after
//! SIGINT/SIGTERM/SIGHUP forwarded to the command) every token minted in the session is
//! revoked where its issuer can, and its cache entries are dropped.

mod output;
mod proxy;
mod sandbox;
pub(crate) mod wiring;

pub(crate) use sandbox::{RelayArgs, relay};

use std::ffi::OsString;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::Context;
use mayfly_core::{AuditEvent, AuditLog, Broker, Cache, Env, EnvVars, Outcome, Process};

/// Signals passed on to the command rather than ending `mayfly exec`.
const FORWARDED: [i32; 4] = [
    signal_hook::consts::SIGINT,
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGHUP,
    signal_hook::consts::SIGQUIT,
];

/// Arguments of `mayfly exec`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Session name for audit lines and cache entries (default: a random id)
    #[arg(long, value_name = "NAME")]
    session: Option<String>,
    /// Declare the agent (an AI coding agent, a bot) this session runs: exchanges that
    /// take actor tokens mint every token through a session token naming it (declared,
    /// not attested), and revoking that session token at the end ends them all
    #[arg(long, value_name = "NAME")]
    agent: Option<String>,
    /// Replace tokens in the command's output with a marker
    #[arg(long)]
    redact: bool,
    /// Keep tokens out of the command: run it behind a loopback proxy that adds each
    /// request's credential on the way out, with no helper wiring and no token in its
    /// environment (git routes in this version)
    #[arg(long)]
    proxy: bool,
    /// With --proxy: refuse hosts and repositories no route names, instead of passing
    /// them through untouched
    #[arg(long, requires = "proxy")]
    deny_unrouted: bool,
    /// With --proxy: run the command in a bubblewrap sandbox where mayfly's keys, cache,
    /// config, identity files and processes are out of reach and the proxy is the only
    /// way out (needs `bwrap`; refused where it cannot make the sandbox)
    #[arg(long, requires = "proxy")]
    isolate: bool,
    /// The command and its arguments
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
    command: Vec<OsString>,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let env = Env::from_os();
    let session = match &args.session {
        Some(name) => check_session(name)?,
        None => random_session()?,
    };
    let agent = args.agent.as_deref().map(|name| check_name("--agent", name)).transpose()?;
    // Checked before anything starts: never run the command unisolated.
    let bwrap = if args.isolate { Some(sandbox::bwrap(env.get(EnvVars::PATH))?) } else { None };
    let runtime = private_runtime_dir(&env)?;
    let (env, cache_vars) = usable_cache(env, runtime.path())?;
    // The session's own lines (its end's revocations too) name its agent.
    let env = match &agent {
        Some(agent) => env.with(&[(EnvVars::MAYFLY_AGENT, agent.as_str())]),
        None => env,
    };
    let broker = Broker::from_env(env.clone()).map_err(|e| anyhow::anyhow!(mayfly_core::protocol::one_line(&e)))?;
    let argv: Vec<String> = args.command.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let me = Process { pid: std::process::id(), argv: [vec!["mayfly".into(), "exec".into()], argv.clone()].concat() };
    let mut command = Command::new(&args.command[0]);
    command.args(&args.command[1..]).env(EnvVars::MAYFLY_SESSION, &session);
    // Kept until the command ends: the proxy serves it.
    // The sandbox's syscall filter, read by bubblewrap as it starts.
    let mut filter = None;
    let _proxy = if args.proxy {
        // What a sandbox sees of the session's directory: this one directory, not the
        // cache a fallback keeps beside it.
        let share = if bwrap.is_some() { runtime.path().join("share") } else { runtime.path().to_owned() };
        mayfly_core::files::create_private_dir(&share).context("cannot create the session's directory")?;
        let socket = bwrap.as_ref().map(|_| share.join("proxy.sock"));
        // Checked before the proxy starts: a sandbox that cannot hide what it must is refused.
        let hidden = match bwrap {
            Some(_) => {
                let workdir = std::env::current_dir().context("cannot read the working directory")?;
                let (dirs, files) = sandbox::hidden(&env, broker.config(), runtime.path(), &workdir)?;
                Some((dirs, files, workdir))
            }
            None => None,
        };
        // The proxy's broker files every token under this session, so its end revokes them.
        let settings = proxy::Settings {
            broker: Broker::new(env.with(&[(EnvVars::MAYFLY_SESSION, session.as_str())]), broker.config().clone()),
            session: session.clone(),
            agent: agent.clone(),
            deny_unrouted: args.deny_unrouted,
            chain: vec![me.clone()],
            socket: socket.clone(),
        };
        if let Some(why) = proxy::bypasses(&args.command[0]) {
            mayfly_core::protocol::warn(&why);
        }
        let running = proxy::start(settings)?;
        let bundle = share.join("ca-bundle.pem");
        write_private(&bundle, &proxy::ca_bundle(&running.ca_pem))?;
        command.envs(proxy::vars(&running.url, &bundle, broker.config())).env(EnvVars::MAYFLY_PROXY_SESSION, &session);
        for name in proxy::identity_vars(broker.config()) {
            command.env_remove(name);
        }
        if let Some(npmrc) = proxy::npm_userconfig(broker.config(), &env) {
            let path = share.join("npmrc");
            write_private(&path, &npmrc)?;
            command.env("npm_config_userconfig", &path).env_remove("NPM_CONFIG_USERCONFIG");
        }
        if let (Some(bwrap), Some(socket), Some((hidden_dirs, hidden_files, workdir))) = (&bwrap, socket, hidden) {
            let read_only = sandbox::git_guards(&workdir);
            let layout = sandbox::Layout { hidden_dirs, hidden_files, share, socket, workdir, read_only };
            let fd = sandbox::filter_fd()?;
            let mut sandboxed = sandbox::command(bwrap, &layout, running.port, &args.command, &fd)?;
            filter = Some(fd);
            for (name, value) in command.get_envs() {
                match value {
                    Some(value) => sandboxed.env(name, value),
                    None => sandboxed.env_remove(name),
                };
            }
            command = sandboxed;
        }
        Some(running)
    } else {
        let bin = runtime.path().join("bin");
        link_helpers(&bin, broker.config(), &env)?;
        let wiring = wiring::wire(broker.config(), &env, &bin, runtime.path());
        for warning in &wiring.warnings {
            mayfly_core::protocol::warn(warning);
        }
        for (path, contents) in &wiring.files {
            write_private(path, contents)?;
        }
        for (link, target) in &wiring.links {
            std::os::unix::fs::symlink(target, link).with_context(|| format!("cannot link `{}`", link.display()))?;
        }
        command.envs(wiring.vars).envs(cache_vars);
        None
    };
    if let Some(agent) = &agent {
        command.env(EnvVars::MAYFLY_AGENT, agent);
    }
    if args.redact {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    // Signals arrive from here on; registered before the spawn so none is lost.
    let mut signals = signal_hook::iterator::Signals::new(FORWARDED).context("cannot handle signals")?;
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let name = mayfly_core::sanitize_for_terminal(&argv[0]);
            anyhow::bail!("cannot run `{name}`: {e}");
        }
    };
    drop(filter);
    let child_process = Process { pid: child.id(), argv: argv.clone() };
    let audit = AuditLog::from_env(&env);
    let started = vec![child_process.clone(), me.clone()];
    record(&audit, &session, agent.as_deref(), Outcome::SessionStarted, started, None);

    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let handle = signals.handle();
    let forwarder = std::thread::spawn(move || {
        for signal in signals.forever() {
            // Ctrl-C and Ctrl-\ at a terminal already reached the command (same process
            // group); a second copy would make it think the user pressed twice.
            let from_terminal = [signal_hook::consts::SIGINT, signal_hook::consts::SIGQUIT].contains(&signal)
                && in_terminal_foreground();
            if let Ok(signal) = nix::sys::signal::Signal::try_from(signal)
                && !from_terminal
            {
                let _ = nix::sys::signal::kill(pid, signal);
            }
        }
    });
    let also = _proxy.as_ref().map(|p| p.secrets.clone()).unwrap_or_default();
    let pumps = if args.redact { output::redact(&mut child, env.clone(), session.clone(), &also) } else { Vec::new() };
    let status = child.wait().context("cannot wait for the command")?;
    // The output drains; but a background process still holding the pipes open must not
    // hold the revocation back.
    let (drained, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        pumps.into_iter().for_each(|pump| drop(pump.join()));
        let _ = drained.send(());
    });
    let _ = wait.recv_timeout(std::time::Duration::from_secs(2));
    handle.close();
    let _ = forwarder.join();

    // No request is in flight once the proxy stops; then the session's tokens end.
    drop(_proxy);
    let ended = broker.end_session(&session, std::slice::from_ref(&me));
    for failure in &ended.failures {
        mayfly_core::protocol::warn(failure);
    }
    if ended.cache_off {
        mayfly_core::protocol::warn("the cache was off (no memory-backed key store), so no token could be revoked");
    }
    let summary = format!(
        "{status}; {} token(s) revoked, {} dropped (their issuer cannot revoke), {} revocation(s) failed",
        ended.revoked,
        ended.dropped,
        ended.failures.len()
    );
    record(&audit, &session, agent.as_deref(), Outcome::SessionEnded, vec![child_process, me], Some(summary));
    drop(runtime);

    if let Some(signal) = status.signal() {
        // Die the way the command died, so callers see the same status.
        let _ = signal_hook::low_level::emulate_default_handler(signal);
        return Ok(ExitCode::from(128u8.saturating_add(u8::try_from(signal).unwrap_or(127))));
    }
    Ok(ExitCode::from(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1)))
}

/// True when this process group owns the terminal on stdin, so keyboard signals reach
/// the command without us.
fn in_terminal_foreground() -> bool {
    nix::unistd::tcgetpgrp(std::io::stdin()).is_ok_and(|group| group == nix::unistd::getpgrp())
}

/// Session names go into audit lines, cache entries and AWS session names.
fn check_session(name: &str) -> anyhow::Result<String> {
    check_name("--session", name)
}

/// Session and agent names go into audit lines, cache entries, session tokens and AWS
/// session names: a short word, nothing a reader could mistake for more.
fn check_name(flag: &str, name: &str) -> anyhow::Result<String> {
    let ok = (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    anyhow::ensure!(ok, "{flag}: use 1 to 64 of A-Z a-z 0-9 . _ -");
    Ok(name.to_owned())
}

fn random_session() -> anyhow::Result<String> {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no random source: {e}"))?;
    Ok(format!("s-{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

/// The environment whose cache the session uses. A session must be able to find and
/// revoke every token minted in it, so when the usual cache cannot be used safely (its
/// key directory another user's, open to others, a symlink, or none memory-backed), the
/// session keeps its cache in its own private directory and says so; where even that is
/// not memory-backed, it refuses to start.
fn usable_cache(env: Env, runtime: &Path) -> anyhow::Result<(Env, Vec<(&'static str, String)>)> {
    let Err(problem) = Cache::open(&env) else { return Ok((env, Vec::new())) };
    let vars = vec![
        (EnvVars::MAYFLY_RUNTIME_DIR, runtime.join("key").display().to_string()),
        (EnvVars::MAYFLY_CACHE_DIR, runtime.join("tokens").display().to_string()),
    ];
    let own = env.with(&vars.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>());
    match Cache::open(&own) {
        Ok(_) => {
            mayfly_core::protocol::warn(&format!(
                "{}; this session keeps its tokens in a private directory of its own",
                mayfly_core::protocol::one_line(&problem)
            ));
            Ok((own, vars))
        }
        Err(_) => anyhow::bail!(
            "cannot start a session whose tokens could not be revoked at its end: {}",
            mayfly_core::protocol::one_line(&problem)
        ),
    }
}

/// A 0700 directory for the session's files, in memory where the machine has one.
fn private_runtime_dir(env: &Env) -> anyhow::Result<tempfile::TempDir> {
    let candidates = [env.path(EnvVars::XDG_RUNTIME_DIR), Some(PathBuf::from("/dev/shm")), Some(std::env::temp_dir())];
    let base = candidates.into_iter().flatten().find(|d| d.is_dir()).unwrap_or_else(std::env::temp_dir);
    // tempfile creates directories 0700.
    tempfile::Builder::new()
        .prefix("mayfly-exec-")
        .tempdir_in(&base)
        .with_context(|| format!("cannot create a session directory in `{}`", base.display()))
}

/// Links the helpers installed next to `mayfly` into the session's `bin`, and the shim
/// as each hookless tool that has a route and is installed.
fn link_helpers(bin: &Path, config: &mayfly_core::Config, env: &Env) -> anyhow::Result<()> {
    std::fs::DirBuilder::new().mode(0o700).create(bin).context("cannot create the session's bin directory")?;
    let exe = std::env::current_exe().context("cannot find the mayfly binary")?;
    let dir = exe.parent().context("the mayfly binary has no directory")?;
    let link = |from: &str, name: &str| -> anyhow::Result<()> {
        let helper = dir.join(from);
        if helper.is_file() {
            std::os::unix::fs::symlink(&helper, bin.join(name)).context("cannot link a helper")?;
        }
        Ok(())
    };
    for name in wiring::HELPERS {
        link(name, name)?;
    }
    let path = env.get(mayfly_core::EnvVars::PATH).unwrap_or_default();
    for name in mayfly_core::protocol::shim::wanted(config, path, &dir.join("mayfly-shim")) {
        link("mayfly-shim", name)?;
    }
    Ok(())
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        mayfly_core::files::create_private_dir(dir)?;
    }
    mayfly_core::files::write_atomic(path, contents.as_bytes(), 0o600)
        .with_context(|| format!("cannot write `{}`", path.display()))
}

fn record(
    audit: &AuditLog,
    session: &str,
    agent: Option<&str>,
    outcome: Outcome,
    process: Vec<Process>,
    reason: Option<String>,
) {
    let event = AuditEvent {
        time: mayfly_core::rfc3339_now(),
        outcome,
        session: Some(session.to_owned()),
        agent: agent.map(str::to_owned),
        tool: "exec".into(),
        reason,
        process,
        ..AuditEvent::default()
    };
    if let Err(e) = audit.record(&event) {
        mayfly_core::protocol::warn(&format!("cannot write the audit log: {e}"));
    }
}
