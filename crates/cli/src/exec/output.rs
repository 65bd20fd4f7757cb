//! `--redact`: the command's stdout and stderr pass through a filter that replaces every
//! token minted in the session, and anything shaped like a well-known token, with a marker.
//!
//! Output streams: whole lines go out as they arrive, and a partial line (a prompt, a
//! progress bar) goes out once the command has been quiet for a moment.

use std::io::{Read, Write};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use mayfly_core::{Cache, Env, redact_tokens};

/// How long a partial line waits for its end before it is shown anyway.
const QUIET: Duration = Duration::from_millis(50);

/// Starts the filters for a child spawned with piped stdout and stderr.
pub(super) fn redact(child: &mut std::process::Child, env: Env, session: String) -> Vec<JoinHandle<()>> {
    let mut pumps = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        pumps.extend(pump(stdout, std::io::stdout(), env.clone(), session.clone()));
    }
    if let Some(stderr) = child.stderr.take() {
        pumps.extend(pump(stderr, std::io::stderr(), env, session));
    }
    pumps
}

/// A reader thread feeding a writer thread that redacts and writes.
fn pump(
    mut from: impl Read + Send + 'static,
    mut to: impl Write + Send + 'static,
    env: Env,
    session: String,
) -> [JoinHandle<()>; 2] {
    let (sender, receiver) = mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buffer = vec![0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buffer) {
            if n == 0 || sender.send(buffer[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let writer = std::thread::spawn(move || {
        let mut tokens = SessionTokens::new(env, session);
        let mut pending = Vec::new();
        loop {
            match receiver.recv_timeout(QUIET) {
                Ok(chunk) => {
                    pending.extend_from_slice(&chunk);
                    if let Some(end) = pending.iter().rposition(|&b| b == b'\n') {
                        let rest = pending.split_off(end + 1);
                        emit(&mut to, &pending, &mut tokens);
                        pending = rest;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) if !pending.is_empty() => {
                    emit(&mut to, &pending, &mut tokens);
                    pending.clear();
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    emit(&mut to, &pending, &mut tokens);
                    break;
                }
            }
        }
    });
    [reader, writer]
}

fn emit(to: &mut impl Write, bytes: &[u8], tokens: &mut SessionTokens) {
    if bytes.is_empty() {
        return;
    }
    let text = String::from_utf8_lossy(bytes);
    let known = tokens.current();
    let known: Vec<&str> = known.iter().map(String::as_str).collect();
    let _ = to.write_all(redact_tokens(&text, &known).as_bytes());
    let _ = to.flush();
}

/// The tokens minted in the session so far, re-read from the cache whenever its
/// directory changed (a helper writes each entry by renaming it into place), so a token
/// is known before the tool that received it can print it.
struct SessionTokens {
    cache: Option<Cache>,
    session: String,
    tokens: Vec<String>,
    seen: Option<SystemTime>,
}

impl SessionTokens {
    fn new(env: Env, session: String) -> Self {
        Self { cache: Cache::open(&env).ok(), session, tokens: Vec::new(), seen: None }
    }

    fn current(&mut self) -> &[String] {
        let Some(cache) = &self.cache else { return &self.tokens };
        let modified = std::fs::metadata(cache.dir()).and_then(|m| m.modified()).ok();
        if modified.is_none() || modified != self.seen {
            for (_, entry) in cache.entries() {
                let token = entry.token.expose();
                if entry.session.as_deref() == Some(&self.session) && !self.tokens.iter().any(|t| t == token) {
                    self.tokens.push(token.to_owned());
                }
            }
            self.seen = modified;
        }
        &self.tokens
    }
}
