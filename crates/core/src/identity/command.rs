//! A command whose stdout is the token (`gcloud auth print-identity-token`, a vault
//! agent, a site's own tool); `{audience}` in its arguments is replaced.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{Ask, Error, Presence, Source, SubjectToken};
use crate::{Env, EnvVars};

/// How long a command source may run.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A command, run without a shell.
#[derive(Debug)]
pub(crate) struct Command {
    /// Program and arguments; the config makes sure there is a program.
    pub(crate) argv: Vec<String>,
}

impl Command {
    fn program(&self) -> &str {
        self.argv.first().map_or("", String::as_str)
    }
}

impl Source for Command {
    fn kind(&self) -> &'static str {
        "command"
    }

    fn origin(&self, _env: &Env) -> String {
        // Arguments may carry secrets: the shape an audit line would keep, never argv.
        crate::command_shape(&self.argv).join(" ")
    }

    fn cacheable(&self) -> bool {
        true
    }

    fn look(&self, env: &Env) -> Presence {
        if on_path(self.program(), env) {
            Presence::Ready
        } else {
            Presence::Absent(format!("`{}` is not on PATH", self.program()))
        }
    }

    fn fetch(&self, ask: &Ask<'_>) -> Result<Option<SubjectToken>, Error> {
        let out = run(ask.name, &self.argv, ask.audience)?;
        SubjectToken::new(ask.name, out, ask.now).map(Some)
    }
}

/// Runs a command (no shell) and takes its stdout; `{audience}` in arguments is replaced.
fn run(name: &str, argv: &[String], audience: Option<&str>) -> Result<String, Error> {
    let args: Vec<String> = argv.iter().map(|a| a.replace("{audience}", audience.unwrap_or(""))).collect();
    let program = args.first().map_or("", String::as_str);
    let fail = |why: String| Error::Unavailable(format!("identity `{name}`: `{program}` {why}"));
    let mut child = std::process::Command::new(program)
        .args(args.iter().skip(1))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| fail(format!("could not start: {e}")))?;
    let mut stdout = child.stdout.take().ok_or_else(|| fail("has no stdout".into()))?;
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.by_ref().take(crate::http::MAX_BODY).read_to_string(&mut out).map(|_| out)
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| fail(e.to_string()))? {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!("timed out after {}s", TIMEOUT.as_secs())));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = reader.join().map_err(|_| fail("output unreadable".into()))?.map_err(|e| fail(e.to_string()))?;
    if !status.success() {
        return Err(fail(format!("failed ({status})")));
    }
    Ok(out)
}

/// True when the program would be found: a path that is an executable file, or a name
/// found in a `PATH` directory.
pub(super) fn on_path(program: &str, env: &Env) -> bool {
    let executable = |p: &Path| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        return executable(Path::new(program));
    }
    env.get(EnvVars::PATH)
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.is_empty())
        .any(|d| executable(&Path::new(d).join(program)))
}
