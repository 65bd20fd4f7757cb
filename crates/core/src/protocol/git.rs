//! git's credential helper protocol, as git 2.47 speaks it.
//!
//! Input is `key=value` lines split on LF only, read to EOF (git sends no blank line).
//! Anything that could smuggle a field is refused: CR, NUL, over-long lines, lines
//! without `=`, repeated `protocol`/`host`/`path`, percent-encoded line breaks. On any
//! error nothing is printed on stdout, because git uses whatever a helper printed even
//! when it fails, and `url=` is never printed because it wipes git's state.

use std::io::{Read, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::protocol::{Refusal, Reply};
use crate::{Env, Issued, Process, Scheme, Secret, Target, Tool, infer_git_operation};

/// Longest line git may send, LF included.
pub const MAX_LINE: usize = 65535;
/// Most input read from git.
pub const MAX_INPUT: usize = 1 << 20;

/// Why a request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// The input is larger than [`MAX_INPUT`].
    #[error("input larger than {MAX_INPUT} bytes")]
    TooLarge,
    /// A line is longer than [`MAX_LINE`].
    #[error("line {0} is longer than {MAX_LINE} bytes")]
    LineTooLong(usize),
    /// A line contains a carriage return.
    #[error("line {0} contains a carriage return")]
    CarriageReturn(usize),
    /// A line contains NUL.
    #[error("line {0} contains a NUL byte")]
    Nul(usize),
    /// A line is not UTF-8.
    #[error("line {0} is not UTF-8")]
    NotUtf8(usize),
    /// A line has no `=`.
    #[error("line {0} is not `key=value`")]
    NoEquals(usize),
    /// A key has characters keys never have.
    #[error("line {0} has an invalid key")]
    BadKey(usize),
    /// A field that names the target appears twice.
    #[error("`{0}` appears more than once")]
    Duplicate(&'static str),
    /// A value contains a percent-encoded line break or NUL.
    #[error("`{0}` contains an encoded control character")]
    EncodedControl(&'static str),
    /// `protocol` is missing.
    #[error("missing `protocol`")]
    MissingProtocol,
    /// `host` is missing.
    #[error("missing `host`")]
    MissingHost,
}

/// A parsed request. Secrets git passes back on `erase`/`store` stay in [`Secret`].
#[derive(Debug, Default)]
pub struct Request {
    /// `protocol`.
    pub protocol: String,
    /// `host`, with port.
    pub host: String,
    /// `path` (only with `credential.useHttpPath`).
    pub path: Option<String>,
    /// `username`.
    pub username: Option<String>,
    /// `password`.
    pub password: Option<Secret>,
    /// `credential` (authtype form).
    pub credential: Option<Secret>,
    /// `authtype`.
    pub authtype: Option<String>,
    /// `capability[]` announced by git.
    pub capabilities: Vec<String>,
    /// `wwwauth[]` challenges.
    pub wwwauth: Vec<String>,
    /// `state[]` echoed back by git.
    pub state: Vec<String>,
}

impl Request {
    /// True when git announced a capability.
    pub fn has_capability(&self, name: &str) -> bool {
        self.capabilities.iter().any(|c| c == name)
    }
}

/// Parses git's input.
pub fn parse(input: &[u8]) -> Result<Request, ParseError> {
    if input.len() > MAX_INPUT {
        return Err(ParseError::TooLarge);
    }
    let mut request = Request::default();
    let (mut protocol, mut host) = (None, None);
    for (index, raw) in input.split(|&b| b == b'\n').enumerate() {
        let number = index + 1;
        if raw.is_empty() {
            break; // a blank line (or the end after the last LF) ends the list
        }
        if raw.len() >= MAX_LINE {
            return Err(ParseError::LineTooLong(number));
        }
        if raw.contains(&b'\r') {
            return Err(ParseError::CarriageReturn(number));
        }
        if raw.contains(&0) {
            return Err(ParseError::Nul(number));
        }
        let line = std::str::from_utf8(raw).map_err(|_| ParseError::NotUtf8(number))?;
        let (key, value) = line.split_once('=').ok_or(ParseError::NoEquals(number))?;
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || "_-[]".contains(c)) {
            return Err(ParseError::BadKey(number));
        }
        let once = |slot: &mut Option<String>, name: &'static str| {
            if slot.is_some() {
                return Err(ParseError::Duplicate(name));
            }
            let lower = value.to_ascii_lowercase();
            if ["%0a", "%0d", "%00"].iter().any(|p| lower.contains(p)) {
                return Err(ParseError::EncodedControl(name));
            }
            *slot = Some(value.to_owned());
            Ok(())
        };
        match key {
            "protocol" => once(&mut protocol, "protocol")?,
            "host" => once(&mut host, "host")?,
            "path" => once(&mut request.path, "path")?,
            "username" => request.username = Some(value.to_owned()),
            "password" => request.password = Some(Secret::new(value)),
            "credential" => request.credential = Some(Secret::new(value)),
            "authtype" => request.authtype = Some(value.to_owned()),
            "capability[]" => push_or_clear(&mut request.capabilities, value),
            "wwwauth[]" => push_or_clear(&mut request.wwwauth, value),
            "state[]" => push_or_clear(&mut request.state, value),
            _ => {} // unknown keys are for other helpers or future gits
        }
    }
    request.protocol = protocol.ok_or(ParseError::MissingProtocol)?;
    request.host = host.ok_or(ParseError::MissingHost)?;
    Ok(request)
}

fn push_or_clear(list: &mut Vec<String>, value: &str) {
    if value.is_empty() { list.clear() } else { list.push(value.to_owned()) }
}

/// Why an answer could not be written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("refusing to write `{0}`: value contains a line break or NUL")]
pub struct WriteError(&'static str);

/// The answer to `get`, built whole before anything is written.
pub fn answer(request: &Request, issued: &Issued) -> Result<Vec<u8>, WriteError> {
    let mut out = Lines::default();
    let token = issued.token.expose();
    if request.has_capability("authtype") {
        // Modern form: `ephemeral` tells git and chained helpers not to persist it, and
        // a storage helper has no `password` to store.
        out.line("capability[]", "authtype")?;
        if request.has_capability("state") {
            out.line("capability[]", "state")?;
        }
        match issued.scheme {
            // Plain is for cargo only; config validation keeps it off git routes.
            Scheme::Bearer | Scheme::Plain => {
                out.line("authtype", "Bearer")?;
                out.secret_line("credential", token)?;
            }
            Scheme::Basic => {
                out.line("authtype", "Basic")?;
                let encoded = Secret::new(STANDARD.encode(format!("{}:{token}", issued.username)));
                out.secret_line("credential", encoded.expose())?;
            }
        }
        out.line("ephemeral", "1")?;
        if request.has_capability("state")
            && let Some(id) = &issued.token_id
        {
            out.line("state[]", &format!("mayfly.token_id={id}"))?;
        }
    } else {
        out.line("username", &issued.username)?;
        out.secret_line("password", token)?;
    }
    if let Some(expiry) = issued.expires_at {
        out.line("password_expiry_utc", &expiry.to_string())?;
    }
    Ok(out.0)
}

#[derive(Default)]
struct Lines(Vec<u8>);

impl Lines {
    fn line(&mut self, key: &'static str, value: &str) -> Result<(), WriteError> {
        if value.contains(['\n', '\r', '\0']) {
            return Err(WriteError(key));
        }
        self.0.extend_from_slice(key.as_bytes());
        self.0.push(b'=');
        self.0.extend_from_slice(value.as_bytes());
        self.0.push(b'\n');
        Ok(())
    }

    fn secret_line(&mut self, key: &'static str, value: &str) -> Result<(), WriteError> {
        self.line(key, value)
    }
}

/// The helper's action, from its last argument.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Return a credential.
    Get,
    /// git reports the credential worked: ignored, mayfly never persists.
    Store,
    /// git reports the credential was refused: drop it.
    Erase,
    /// Anything else: ignored, for forward compatibility.
    Unknown,
}

impl Action {
    /// Reads the action from the helper's arguments (git appends it last).
    pub fn from_args(args: &[String]) -> Self {
        match args.last().map(String::as_str) {
            Some("get") => Self::Get,
            Some("store") => Self::Store,
            Some("erase") => Self::Erase,
            _ => Self::Unknown,
        }
    }
}

/// The `git-credential-mayfly` binary.
pub const HOOK: crate::protocol::Hook = crate::protocol::Hook {
    name: "git-credential-mayfly",
    help: r#"git's credential helper: answers `get` with a token minted for the one repository and
operation git is about to use, and never stores one.

Wire it per host (`mayfly setup` does this):
  git config --global credential.https://HOST.helper ''
  git config --global --add credential.https://HOST.helper mayfly
  git config --global credential.https://HOST.useHttpPath true
"#,
    serve: |args, stdin, stdout, env, ancestry| serve(args, stdin, stdout, env, ancestry),
};

/// Runs one helper invocation over injected I/O and returns the exit code.
///
/// `ancestry` is called only when a route matched, so an unconfigured host costs no
/// `/proc` walk.
pub fn serve(
    args: &[String],
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    env: Env,
    ancestry: &dyn Fn() -> Vec<Process>,
) -> i32 {
    let action = Action::from_args(args);
    let mut input = Vec::new();
    // Read to EOF so git never sees EPIPE, but keep only what we may parse.
    if stdin.take(MAX_INPUT as u64 + 1).read_to_end(&mut input).is_err() {
        return refuse(&Refusal::Failed("git credential request: cannot read stdin".into())).write(stdout);
    }
    let _ = std::io::copy(stdin, &mut std::io::sink());
    match action {
        Action::Store => return 0,
        Action::Unknown => return refuse(&Refusal::Unsupported("unknown action".into())).write(stdout),
        Action::Get | Action::Erase => {}
    }
    match handle(action, &input, env, ancestry) {
        Ok(None) => 0,
        Ok(Some(bytes)) => match stdout.write_all(&bytes).and_then(|()| stdout.flush()) {
            Ok(()) => 0,
            Err(_) => 1,
        },
        Err(refusal) => refuse(&refusal).write(stdout),
    }
}

/// How git is answered without a token. git ignores a helper's exit code and uses
/// whatever it printed, so stdout is what counts: nothing lets the next helper (or git's
/// prompt) answer; `quit=1` stops git for a target a route serves, so no stored long-lived
/// credential or prompt stands in for the token mayfly refused.
fn refuse(refusal: &Refusal) -> Reply {
    let quit = |line: String| Reply { code: 1, stdout: "quit=1\n".into(), stderr: Some(line) };
    match refusal {
        // git's own rule for what a helper does not know: silence and exit 0.
        Refusal::NotOurs | Refusal::Unsupported(_) => Reply::default(),
        Refusal::NeedsPath { target } => quit(format!(
            "git did not send the repository path for {target}; tokens are bound to one repository, so set `git config --global credential.{target}.useHttpPath true`"
        )),
        Refusal::Refused { .. } => quit(refusal.to_string()),
        Refusal::Failed(_) => Reply::line(refusal.to_string()),
    }
}

fn handle(
    action: Action,
    input: &[u8],
    env: Env,
    ancestry: &dyn Fn() -> Vec<Process>,
) -> Result<Option<Vec<u8>>, Refusal> {
    let malformed = |e: &dyn std::fmt::Display| Refusal::Failed(format!("git credential request refused: {e}"));
    let request = parse(input).map_err(|e| malformed(&e))?;
    let target = match Target::new(Tool::Git, &request.protocol, &request.host, request.path.as_deref()) {
        Ok(target) => target,
        Err(crate::TargetError::Protocol(_)) => return Err(Refusal::NotOurs), // ssh, cert ...
        Err(e) => return Err(malformed(&e)),
    };
    let broker = crate::protocol::broker(env)?;
    let route = crate::protocol::route(&broker, &target)?;
    let chain = ancestry();
    if action == Action::Erase {
        broker.erase(route, &target, &chain);
        return Ok(None);
    }
    let operation = infer_git_operation(&chain);
    let refused = |reason: String| Refusal::refused(&target, operation, reason);
    let issued = broker.token(route, &target, operation, &chain).map_err(|e| refused(crate::protocol::one_line(&e)))?;
    answer(&request, &issued).map(Some).map_err(|e| refused(e.to_string()))
}

#[cfg(test)]
mod tests;
