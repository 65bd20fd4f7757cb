//! The hook protocols, each a function over injected I/O. Binaries only wire them to
//! stdin, stdout and the process exit code.

pub mod aws;
pub mod cargo;
pub mod docker;
pub mod git;
pub mod kube;
pub mod shim;
pub mod terraform;

use std::error::Error;
use std::io::{BufRead, Write};

use crate::{Env, Process};

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
    let code = (hook.serve)(&args, &mut std::io::stdin().lock(), &mut stdout, Env::from_os(), &crate::ancestry);
    let _ = stdout.flush();
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

/// Resolves a host-level target and gets its token; `Ok(None)` when no route serves it.
/// The hooks other than git's share this: their requests name a tool and a host. The
/// operation is decided from the process ancestry, which is read only once a route matched.
pub(crate) fn token_for(
    target: &crate::Target,
    operation: &dyn Fn(&[crate::Process]) -> crate::Operation,
    env: crate::Env,
    ancestry: &dyn Fn() -> Vec<crate::Process>,
) -> Result<Option<crate::Issued>, String> {
    match answer_for(target, operation, env, ancestry)? {
        Answer::Token(issued) => Ok(Some(issued)),
        Answer::NoRoute | Answer::NoTokenNeeded => Ok(None),
    }
}

/// What a route gives a request.
pub(crate) enum Answer {
    /// A token.
    Token(crate::Issued),
    /// No route serves the target.
    NoRoute,
    /// A read on a route to a registry's own exchange (trusted publishing), which mints
    /// publish tokens only: the registry's index is public and reads need no token.
    NoTokenNeeded,
}

/// [`token_for`] for the package tools, whose reads on publish-only routes need no token.
/// A publish, yank or owners change must name its package: a token for `*` would be
/// one for every package.
pub(crate) fn answer_for(
    target: &crate::Target,
    operation: &dyn Fn(&[crate::Process]) -> crate::Operation,
    env: crate::Env,
    ancestry: &dyn Fn() -> Vec<crate::Process>,
) -> Result<Answer, String> {
    use crate::Operation;
    let broker = crate::Broker::from_env(env).map_err(|e| one_line(&e))?;
    let crate::Resolution::Route(route) = broker.resolve(target) else { return Ok(Answer::NoRoute) };
    let chain = ancestry();
    let operation = operation(&chain);
    let refused = |why: &str| format!("no token for {} ({}): {why}", target.display(), target.tool.as_str());
    let publish_only = broker.config().exchanges.get(&route.exchange).is_some_and(|e| e.kind.mints_publish_only());
    match operation {
        Operation::Read if publish_only => return Ok(Answer::NoTokenNeeded),
        Operation::Publish | Operation::Yank | Operation::Owners if target.path.is_none() => {
            return Err(refused("it names no package: run it in the package's directory, or name the package"));
        }
        _ => {}
    }
    broker.token(route, target, operation, &chain).map(Answer::Token).map_err(|e| refused(&one_line(&e)))
}

/// Drops the cached tokens of a host-level target; true when a route serves it.
pub(crate) fn erase(
    target: &crate::Target,
    env: crate::Env,
    ancestry: &dyn Fn() -> Vec<crate::Process>,
) -> Result<bool, String> {
    let broker = crate::Broker::from_env(env).map_err(|e| one_line(&e))?;
    let crate::Resolution::Route(route) = broker.resolve(target) else {
        return Ok(false);
    };
    broker.erase(route, target, &ancestry());
    Ok(true)
}
