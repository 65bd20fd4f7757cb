//! `--redact`: the command's stdout and stderr pass through a filter that replaces every
//! token minted in the session, and anything shaped like a well-known token, with a marker.
//!
//! Output streams: whole lines go out as they arrive, and a partial line (a prompt, a
//! progress bar) goes out once the command has been quiet for a moment, less any suffix
//! that could be the start of a session token: that waits for the next write (where the
//! whole token is then replaced), for the end of the output, or at most [`MAX_HOLD`].
//! Besides each token itself, its base64 forms inside `user:token` (HTTP Basic, docker's
//! `auth`) are replaced, at each of the three alignments base64 can give them.

use std::io::{Read, Write};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use mayfly_core::{Cache, Env, redact_tokens};

/// How long a partial line waits for its end before it is shown anyway.
const QUIET: Duration = Duration::from_millis(50);
/// How long the start of a possible token is held back when nothing follows it.
const MAX_HOLD: Duration = Duration::from_secs(2);

/// Starts the filters for a child spawned with piped stdout and stderr.
/// `also` are secrets of the session beside its tokens (the proxy's), redacted too.
pub(super) fn redact(
    child: &mut std::process::Child,
    env: Env,
    session: String,
    also: &[String],
) -> Vec<JoinHandle<()>> {
    let mut pumps = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        pumps.extend(pump(stdout, std::io::stdout(), env.clone(), session.clone(), also.to_vec()));
    }
    if let Some(stderr) = child.stderr.take() {
        pumps.extend(pump(stderr, std::io::stderr(), env, session, also.to_vec()));
    }
    pumps
}

/// A reader thread feeding a writer thread that redacts and writes.
fn pump(
    mut from: impl Read + Send + 'static,
    mut to: impl Write + Send + 'static,
    env: Env,
    session: String,
    also: Vec<String>,
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
    // When our side of the output is gone (`| head`), the writer stops and drops the
    // receiver; the reader then stops reading, and the command gets SIGPIPE as it would.
    let writer = std::thread::spawn(move || {
        let mut tokens = SessionTokens::new(env, session);
        tokens.tokens.extend(also);
        let mut pending = Vec::new();
        let mut held_since: Option<Instant> = None;
        loop {
            let written = match receiver.recv_timeout(QUIET) {
                Ok(chunk) => {
                    held_since = None;
                    pending.extend_from_slice(&chunk);
                    match pending.iter().rposition(|&b| b == b'\n') {
                        Some(end) => {
                            let rest = pending.split_off(end + 1);
                            let written = emit(&mut to, &pending, &mut tokens);
                            pending = rest;
                            written
                        }
                        None => Ok(()),
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) if !pending.is_empty() => {
                    let expired = held_since.is_some_and(|since| since.elapsed() >= MAX_HOLD);
                    let hold = if expired { 0 } else { token_start_suffix(&pending, tokens.current()) };
                    let rest = pending.split_off(pending.len() - hold);
                    let written = emit(&mut to, &pending, &mut tokens);
                    pending = rest;
                    held_since = if hold > 0 { held_since.or_else(|| Some(Instant::now())) } else { None };
                    written
                }
                Err(mpsc::RecvTimeoutError::Timeout) => Ok(()),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = emit(&mut to, &pending, &mut tokens);
                    break;
                }
            };
            if written.is_err() {
                break;
            }
        }
    });
    [reader, writer]
}

fn emit(to: &mut impl Write, bytes: &[u8], tokens: &mut SessionTokens) -> std::io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let known = tokens.current();
    let known: Vec<&str> = known.iter().map(String::as_str).collect();
    match std::str::from_utf8(bytes) {
        Ok(text) => to.write_all(redact_tokens(text, &known).as_bytes())?,
        // Binary output passes through byte for byte, less the session's own tokens.
        Err(_) => to.write_all(&replace_bytes(bytes, &known))?,
    }
    to.flush()
}

/// The length of the longest end of `bytes` that is the start (not the whole) of a
/// known token: what must wait for the next write.
fn token_start_suffix(bytes: &[u8], known: &[String]) -> usize {
    known
        .iter()
        .map(|token| {
            let token = token.as_bytes();
            (1..token.len().min(bytes.len() + 1)).rev().find(|&k| bytes.ends_with(&token[..k])).unwrap_or(0)
        })
        .max()
        .unwrap_or(0)
}

/// `bytes` with every occurrence of a known token replaced by the marker.
fn replace_bytes(bytes: &[u8], known: &[&str]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for token in known.iter().map(|t| t.as_bytes()).filter(|t| t.len() >= 8) {
        let mut result = Vec::with_capacity(out.len());
        let mut i = 0;
        while i < out.len() {
            if out[i..].starts_with(token) {
                result.extend_from_slice(mayfly_core::REDACTED.as_bytes());
                i += token.len();
            } else {
                result.push(out[i]);
                i += 1;
            }
        }
        out = result;
    }
    out
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
        // An entry written within the same clock tick as the last look leaves the mtime
        // unchanged: while the directory is fresh, look every time.
        let fresh = modified.and_then(|m| m.elapsed().ok()).is_none_or(|age| age.as_secs() < 2);
        if fresh || modified != self.seen {
            for (_, entry) in cache.session_entries(Some(&self.session), crate::status::now()) {
                for secret in secrets_of(entry.token.expose()) {
                    for form in std::iter::once(secret.clone()).chain(base64_forms(&secret)) {
                        if !self.tokens.contains(&form) {
                            self.tokens.push(form);
                        }
                    }
                }
            }
            self.seen = modified;
        }
        &self.tokens
    }
}

/// The secrets a cached token holds: the token, or for a JSON document (AWS credentials)
/// each of its long string values, which a tool prints one by one.
fn secrets_of(token: &str) -> Vec<String> {
    match serde_json::from_str::<serde_json::Value>(token) {
        Ok(serde_json::Value::Object(fields)) => fields
            .values()
            .filter_map(|v| v.as_str())
            .filter(|v| v.len() >= 16 && !v.contains(' '))
            .map(str::to_owned)
            .collect(),
        _ => vec![token.to_owned()],
    }
}

/// What a token looks like inside base64 of `user:token` (or any prefix): for each of
/// the three offsets it can start at within a base64 group, in the standard and the
/// URL-safe alphabet, the run of characters that depends on the token's bytes alone.
/// The one or two characters at either end mix in the neighbours' bytes; they carry less
/// than three bytes of the token.
fn base64_forms(token: &str) -> Vec<String> {
    let mut forms = Vec::new();
    for offset in 0..3usize {
        let padded = [&vec![0u8; offset][..], token.as_bytes()].concat();
        let whole_groups = padded.len() / 3;
        let start = if offset == 0 { 0 } else { 4 };
        let end = whole_groups * 4;
        for engine in [&base64::engine::general_purpose::STANDARD, &base64::engine::general_purpose::URL_SAFE] {
            let encoded = engine.encode(&padded);
            if end > start + 16
                && let Some(core) = encoded.get(start..end)
            {
                forms.push(core.to_owned());
            }
        }
    }
    forms.sort();
    forms.dedup();
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_output_keeps_its_bytes_and_loses_the_session_tokens() {
        let bytes = b"\xff\x00secret-token-123\xfe";
        assert_eq!(
            replace_bytes(bytes, &["secret-token-123"]),
            [&b"\xff\x00"[..], mayfly_core::REDACTED.as_bytes(), b"\xfe"].concat()
        );
    }

    #[test]
    fn the_start_of_a_token_is_held_back_and_nothing_else() {
        let known = ["ghs_secretsecretsecret".to_owned()];
        assert_eq!(token_start_suffix(b"printing ghs_sec", &known), "ghs_sec".len());
        assert_eq!(token_start_suffix(b"Password: ", &known), 0);
        assert_eq!(token_start_suffix(b"ghs_secretsecretsecret", &known), 0, "a whole token is redacted, not held");
    }

    #[test]
    fn base64_of_user_and_token_is_caught_at_every_alignment() {
        let token = "ghs_secretsecretsecretsecret";
        let forms = base64_forms(token);
        for user in ["x-access-token", "__token__", "u", "mayfly", "oauth2accesstoken"] {
            for engine in [&base64::engine::general_purpose::STANDARD, &base64::engine::general_purpose::URL_SAFE] {
                let basic = engine.encode(format!("{user}:{token}"));
                let known: Vec<&str> = forms.iter().map(String::as_str).collect();
                let shown = redact_tokens(&format!("Authorization: Basic {basic}"), &known);
                assert!(shown.contains(mayfly_core::REDACTED), "{user}: {shown}");
                // What is left beside the marker encodes the user and at most one
                // group (under three bytes) of the token at either end.
                let (before, after) =
                    shown.trim_start_matches("Authorization: Basic ").split_once(mayfly_core::REDACTED).unwrap();
                assert!(before.len() <= 4 * (user.len() + 1).div_ceil(3) + 4 && after.len() <= 4, "{user}: {shown}");
            }
        }
    }

    #[test]
    fn aws_credentials_are_redacted_field_by_field() {
        let document = r#"{"Version":1,"AccessKeyId":"ASIAEXAMPLEEXAMPLE12","SecretAccessKey":"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY","SessionToken":"IQoJb3JpZ2luX2VjEXAMPLE","Expiration":"2026-11-23T15:00:00Z"}"#; // mayfly-guard: allow
        let secrets = secrets_of(document);
        assert!(secrets.contains(&"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_owned()));
        assert!(secrets.contains(&"IQoJb3JpZ2luX2VjEXAMPLE".to_owned()));
        assert_eq!(secrets_of("eyJ.a.b"), ["eyJ.a.b"]);
    }
}
