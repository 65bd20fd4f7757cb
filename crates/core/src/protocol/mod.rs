//! The hook protocols, each a function over injected I/O. Binaries only wire them to
//! stdin, stdout and the process exit code. A request that gets no token gets a
//! [`Refusal`], which each protocol says in its tool's own words in one place.

pub mod aws;
pub mod bazel;
pub mod cargo;
pub mod docker;
pub mod git;
pub mod kube;
pub mod kubelet;
pub mod shim;
pub mod terraform;
pub mod vault;

use std::error::Error;
use std::io::{BufRead, Write};

use crate::{Broker, Env, Issued, Operation, Process, Resolution, Route, Target};

/// A protocol over injected I/O: arguments, stdin, stdout, environment and ancestry in,
/// the exit code out.
pub type Serve = fn(&[String], &mut dyn BufRead, &mut dyn Write, Env, &dyn Fn() -> Vec<Process>) -> i32;

/// A helper binary: its name, its help text, and its protocol over injected I/O.
pub struct Hook {
    /// The binary's name, as tools invoke it.
    pub name: &'static str,
    /// What `--help` prints: what the helper is for and how a tool is wired to it.
    pub help: &'static str,
    /// The protocol.
    pub serve: Serve,
}

/// The whole `main` of a helper binary. `--help` and `--version` (alone) answer on
/// stdout and exit 0 without being taken for a request; anything else is the protocol's.
pub fn main(hook: &Hook) -> ! {
    crate::deferred::serve_if_asked();
    crate::deferred::hold_until_answered();
    // Lossy, not `std::env::args`: a hostile non-UTF-8 argument is refused, not a panic.
    let args: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    let mut stdout = std::io::stdout().lock();
    match args.as_slice() {
        [flag] if flag == "--help" || flag == "-h" => {
            let _ = write!(stdout, "{}\n\n{}", hook.name, hook.help);
            std::process::exit(0);
        }
        [flag] if flag == "--version" || flag == "-V" => {
            let _ = writeln!(stdout, "{} (mayfly) {}", hook.name, env!("CARGO_PKG_VERSION"));
            std::process::exit(0);
        }
        _ => {}
    }
    if std::env::var_os(crate::EnvVars::MAYFLY_PROXY_SESSION).is_some() {
        // Inside `mayfly exec --proxy` the proxy adds every credential on the way out; a
        // helper that answered would put a token in the command's reach. git takes an
        // empty answer as "no credential", docker's clients the not-found text (and go on
        // without credentials, which the proxy adds); other tools see a failed helper.
        if hook.name == docker::HOOK.name {
            let _ = writeln!(stdout, "{}", docker::NOT_FOUND);
        }
        warn(&format!(
            "{} hands out no tokens inside `mayfly exec --proxy` (session `{}`): the session's proxy adds them",
            hook.name,
            std::env::var(crate::EnvVars::MAYFLY_PROXY_SESSION).unwrap_or_default()
        ));
        std::process::exit(i32::from(hook.name != "git-credential-mayfly"));
    }
    let code = (hook.serve)(&args, &mut std::io::stdin().lock(), &mut stdout, Env::from_os(), &crate::ancestry);
    let _ = stdout.flush();
    crate::deferred::start_held();
    std::process::exit(code)
}

/// An error and its causes as one line, safe for a terminal.
pub fn one_line(error: &dyn Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    crate::sanitize_for_terminal(&line)
}

/// One `mayfly: ...` line on stderr.
pub fn warn(message: &str) {
    use std::io::Write;
    let line = format!("mayfly: {}\n", crate::sanitize_for_terminal(message));
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Why a hook hands out no token. Each protocol answers every variant in its tool's own
/// words, in one function (`refuse` in its module), so a refusal reads the same wherever
/// it was decided, and a new variant makes every protocol decide how to say it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No route serves the target, or the request names something mayfly never serves (an
    /// `ssh` remote, a registry URL it cannot read): the tool's own "not found", so the
    /// next helper, or the tool's own credentials, may answer.
    #[error("no route serves it")]
    NotOurs,
    /// A route serves the host but binds its tokens to paths, and the request carries none
    /// (git without `credential.useHttpPath`, a registry-wide request where routes name
    /// packages). Only git can be told to send one; the other tools get their "not found".
    #[error("no token for {target}: the request names no path, and the routes for it bind tokens to paths")]
    NeedsPath {
        /// The target, `https://host`.
        target: String,
    },
    /// A route serves the target and no token can be had: fatal for it, so a tool that
    /// chains helpers is told to stop rather than fall through to a long-lived credential.
    #[error("no token for {target} ({} {}): {reason}", tool.as_str(), operation.as_str())]
    Refused {
        /// The target, `https://host/path`.
        target: String,
        /// The tool that asked.
        tool: crate::Tool,
        /// What it was about to do.
        operation: Operation,
        /// Why, one line without secrets.
        reason: String,
    },
    /// The request cannot be served as asked: it is malformed, asks for something mayfly
    /// never does (store a credential, log in), the config cannot be used, or the tool
    /// could not be run. Nothing says a route serves the target, so helpers chained after
    /// this one may still answer.
    #[error("{0}")]
    Failed(String),
    /// Not a request this protocol serves: an unknown action or operation, or arguments
    /// that make no request at all. The protocol's own word for it where it has one
    /// (cargo's `operation-not-supported`, git's silence), else one line on stderr and
    /// nothing on the tool's channel.
    #[error("{0}")]
    Unsupported(String),
}

impl Refusal {
    /// A refusal of a target a route serves.
    pub(crate) fn refused(target: &Target, operation: Operation, reason: impl Into<String>) -> Self {
        Self::Refused { target: target.display(), tool: target.tool, operation, reason: reason.into() }
    }
}

/// A hook's answer without a token: what goes on the tool's channel, the one `mayfly:`
/// line for the user, and the exit code. Each protocol's `refuse` builds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The exit code.
    pub(crate) code: i32,
    /// What goes on stdout, the tool's channel.
    pub(crate) stdout: String,
    /// The line for stderr, without the `mayfly: ` prefix.
    pub(crate) stderr: Option<String>,
}

impl Reply {
    /// One line on stderr, nothing on the tool's channel, and exit 1.
    pub(crate) fn line(line: impl Into<String>) -> Self {
        Self { code: 1, stdout: String::new(), stderr: Some(line.into()) }
    }

    /// Says it: the stderr line first, then the tool's channel; returns the exit code.
    pub(crate) fn write(self, stdout: &mut dyn Write) -> i32 {
        if let Some(line) = &self.stderr {
            warn(line);
        }
        if !self.stdout.is_empty() {
            // The exit code says it already; a tool that closed its end hears nothing more.
            let _ = stdout.write_all(self.stdout.as_bytes()).and_then(|()| stdout.flush());
        }
        self.code
    }
}

/// The broker of this invocation; a config that cannot be used fails the request.
pub(crate) fn broker(env: Env) -> Result<Broker, Refusal> {
    Broker::from_env(env).map_err(|e| Refusal::Failed(one_line(&e)))
}

/// The route that serves a target, or why none does.
pub(crate) fn route<'a>(broker: &'a Broker, target: &Target) -> Result<&'a Route, Refusal> {
    match broker.resolve(target) {
        Resolution::NoRoute => Err(Refusal::NotOurs),
        Resolution::NeedsPath => Err(Refusal::NeedsPath { target: target.display() }),
        Resolution::Route(route) => Ok(route),
    }
}

/// Resolves a host-level target and gets its token. The hooks other than git's share
/// this: their requests name a tool and a host. The operation is decided from the
/// process ancestry, which is read only once a route matched.
pub(crate) fn token_for(
    target: &Target,
    operation: &dyn Fn(&[Process]) -> Operation,
    env: Env,
    ancestry: &dyn Fn() -> Vec<Process>,
) -> Result<Issued, Refusal> {
    match answer_for(target, operation, env, ancestry)? {
        Answer::Token(issued) => Ok(issued),
        // These tools have no word for "you need none" but their "not found".
        Answer::NoTokenNeeded => Err(Refusal::NotOurs),
    }
}

/// What a route gives a request.
pub(crate) enum Answer {
    /// A token.
    Token(Issued),
    /// A read on a route to a registry's own exchange (trusted publishing), which mints
    /// publish tokens only: the registry's index is public and reads need no token.
    NoTokenNeeded,
}

/// [`token_for`] for the package tools, whose reads on publish-only routes need no token.
/// A publish, yank or owners change must name its package: a token for `*` would be
/// one for every package.
pub(crate) fn answer_for(
    target: &Target,
    operation: &dyn Fn(&[Process]) -> Operation,
    env: Env,
    ancestry: &dyn Fn() -> Vec<Process>,
) -> Result<Answer, Refusal> {
    let broker = broker(env)?;
    let route = route(&broker, target)?;
    let chain = ancestry();
    let operation = operation(&chain);
    let publish_only = broker.config().exchanges.get(&route.exchange).is_some_and(|e| e.kind.mints_publish_only());
    match operation {
        Operation::Read if publish_only => return Ok(Answer::NoTokenNeeded),
        Operation::Publish | Operation::Yank | Operation::Owners if target.path.is_none() => {
            let why = "it names no package: run it in the package's directory, or name the package";
            return Err(Refusal::refused(target, operation, why));
        }
        _ => {}
    }
    let issued = broker.token(route, target, operation, &chain);
    issued.map(Answer::Token).map_err(|e| Refusal::refused(target, operation, one_line(&e)))
}

/// Drops the cached tokens of a host-level target, or says why no route serves it.
pub(crate) fn erase(target: &Target, env: Env, ancestry: &dyn Fn() -> Vec<Process>) -> Result<(), Refusal> {
    let broker = broker(env)?;
    let route = route(&broker, target)?;
    broker.erase(route, target, &ancestry());
    Ok(())
}

/// Runs a hook under an empty config (no route serves anything), for the protocols' tests:
/// its exit code and stdout.
#[cfg(test)]
pub(crate) fn serve_unrouted(hook: &Hook, args: &[&str], input: &[u8]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let env = Env::from_pairs([("MAYFLY_CONFIG", config.display().to_string())]);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut out = Vec::new();
    let code = (hook.serve)(&args, &mut &input[..], &mut out, env, &Vec::new);
    (code, String::from_utf8(out).unwrap())
}

/// One refusal of each kind, for the protocols' tests of their answers.
#[cfg(test)]
pub(crate) fn every_refusal() -> Vec<Refusal> {
    let all = vec![
        Refusal::NotOurs,
        Refusal::NeedsPath { target: "https://h.example".into() },
        Refusal::Refused {
            target: "https://h.example/org/app".into(),
            tool: crate::Tool::Git,
            operation: Operation::Write,
            reason: "route `r` does not allow write".into(),
        },
        Refusal::Failed("the request is malformed".into()),
        Refusal::Unsupported("unknown action".into()),
    ];
    // A new variant stops this from compiling until it is in the list above, so every
    // protocol's test has to say how it is answered.
    for refusal in &all {
        match refusal {
            Refusal::NotOurs
            | Refusal::NeedsPath { .. }
            | Refusal::Refused { .. }
            | Refusal::Failed(_)
            | Refusal::Unsupported(_) => {}
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_one_line_naming_target_tool_and_operation() {
        let lines: Vec<String> = every_refusal().iter().map(Refusal::to_string).collect();
        assert_eq!(
            lines,
            [
                "no route serves it",
                "no token for https://h.example: the request names no path, and the routes for it bind tokens to paths",
                "no token for https://h.example/org/app (git write): route `r` does not allow write",
                "the request is malformed",
                "unknown action",
            ]
        );
    }

    #[test]
    fn a_reply_writes_the_tools_channel_and_returns_its_code() {
        let mut out = Vec::new();
        assert_eq!(Reply { code: 1, stdout: "quit=1\n".into(), stderr: None }.write(&mut out), 1);
        assert_eq!(out, b"quit=1\n");
        let mut out = Vec::new();
        assert_eq!(Reply::default().write(&mut out), 0);
        assert!(out.is_empty());
    }
}
