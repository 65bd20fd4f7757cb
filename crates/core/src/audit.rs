//! The audit trail: one JSON line per decision, enough to rebuild who got what, for
//! which command, on whose behalf. Never the token: only its fingerprint.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{Env, EnvVars, Fingerprint, Process};

/// What happened.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// A token was minted by the exchange.
    Issued,
    /// A cached token was served.
    CacheHit,
    /// The route or the exchange refused.
    Denied,
    /// The request failed (identity, network, exchange error).
    #[default]
    Failed,
    /// A cached token was dropped (git `erase` after a 401).
    Erased,
    /// A token was revoked at its issuer.
    Revoked,
    /// Revoking a token at its issuer failed; it lives until it expires.
    RevokeFailed,
    /// `mayfly exec` started a command in a session.
    SessionStarted,
    /// The command ended, and with it the session's tokens.
    SessionEnded,
    /// `mayfly exec --proxy` forwarded a request with the route's credential added.
    Proxied,
    /// `mayfly exec --proxy` passed a connection to an unrouted host through untouched.
    Tunnelled,
}

/// One audit line.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AuditEvent {
    /// RFC 3339 time.
    pub time: String,
    /// What happened.
    pub outcome: Outcome,
    /// Session id, when inside `mayfly exec`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The agent the session declares (`mayfly exec --agent`): declared, not attested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Tool whose hook asked.
    pub tool: String,
    /// Target URL.
    pub target: String,
    /// Operation asked for.
    pub operation: String,
    /// HTTP method of a request through `mayfly exec --proxy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Path (without query) of a request through `mayfly exec --proxy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Route that matched.
    pub route: String,
    /// Scope asked for or granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Subject token issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Subject token subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Fingerprint of the token served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Fingerprint>,
    /// Token id (`jti`) where the token has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// Expiry of the token served, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// Why it was denied or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who asked: the helper's ancestors, parent first.
    pub process: Vec<Process>,
    /// On a cache hit: where the rest of `process` is written (the part of the chain it
    /// shares with the request the token was issued for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_ref: Option<ProcessRef>,
}

/// "The chain goes on as in the `issued` line of this token, from this position."
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ProcessRef {
    /// The fingerprint of the token, which its `issued` line carries.
    pub issued: Fingerprint,
    /// Where in that line's `process` the shared part starts.
    pub from: usize,
}

/// Size at which the log is rotated, unless `[settings] audit_max_size` says otherwise.
pub(crate) const DEFAULT_AUDIT_MAX_SIZE: u64 = 10 * 1024 * 1024;
/// Rotated files kept (`audit.jsonl.1` newest ... `.N` oldest), unless `audit_keep` says.
pub(crate) const DEFAULT_AUDIT_KEEP: usize = 3;

/// Where audit lines go.
#[derive(Clone, Debug)]
pub struct AuditLog {
    path: Option<PathBuf>,
    max_size: u64,
    keep: usize,
}

impl AuditLog {
    /// `$MAYFLY_AUDIT_LOG`, else `$XDG_STATE_HOME/mayfly/audit.jsonl`, rotated at the
    /// default size.
    pub fn from_env(env: &Env) -> Self {
        let path = env.path(EnvVars::MAYFLY_AUDIT_LOG).or_else(|| Some(env.state_dir()?.join("audit.jsonl")));
        Self { path, max_size: DEFAULT_AUDIT_MAX_SIZE, keep: DEFAULT_AUDIT_KEEP }
    }

    /// The same log, rotated once it would pass `max_size` bytes, keeping `keep` old files.
    pub fn with_rotation(mut self, max_size: u64, keep: usize) -> Self {
        self.max_size = max_size.max(1);
        self.keep = keep;
        self
    }

    /// Every file of the log that exists, oldest first: the rotated ones, then the log.
    pub fn files(&self) -> Vec<PathBuf> {
        let Some(path) = &self.path else { return Vec::new() };
        let rotated = (1..=self.keep.max(MAX_KEEP_READ)).rev().map(|n| rotated(path, n));
        rotated.chain(std::iter::once(path.clone())).filter(|p| p.exists()).collect()
    }

    /// The log file.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    /// Appends one line. One `write` of a whole line with `O_APPEND`, so lines from
    /// parallel helpers do not interleave.
    pub fn record(&self, event: &AuditEvent) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
        let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let open = || std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path);
        let mut file = open()?;
        if file.metadata()?.len() + line.len() as u64 > self.max_size {
            self.rotate(path)?;
            file = open()?;
        }
        file.write_all(&line)
    }

    /// Shifts `log.N-1` to `log.N` ... and the log to `log.1`, dropping the oldest. Under
    /// a lock, and only if the log is still full: parallel writers rotate once. A writer
    /// that opened the log just before appends to `log.1`, which is still read.
    fn rotate(&self, path: &Path) -> std::io::Result<()> {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path.with_extension("lock"))?;
        lock.lock()?;
        if std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) < self.max_size / 2 {
            return Ok(()); // another writer rotated it while we waited
        }
        if self.keep == 0 {
            return std::fs::remove_file(path);
        }
        let _ = std::fs::remove_file(rotated(path, self.keep));
        for n in (1..self.keep).rev() {
            let _ = std::fs::rename(rotated(path, n), rotated(path, n + 1));
        }
        std::fs::rename(path, rotated(path, 1))
    }
}

/// Rotated files looked for when reading, whatever `keep` is now (it may have been larger).
const MAX_KEEP_READ: usize = 9;

fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The current time in RFC 3339, as audit lines carry it.
pub fn rfc3339_now() -> String {
    rfc3339(time::OffsetDateTime::now_utc().unix_timestamp())
}

/// A unix time in RFC 3339 (the number itself outside RFC 3339's years).
pub(crate) fn rfc3339(unix: i64) -> String {
    try_rfc3339(unix).unwrap_or_else(|| unix.to_string())
}

/// A unix time in RFC 3339; `None` outside its years (0 to 9999).
pub(crate) fn try_rfc3339(unix: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_rotates_by_size_keeps_n_files_and_lists_them_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let env = Env::from_pairs([(EnvVars::MAYFLY_AUDIT_LOG, path.display().to_string())]);
        let line_len =
            serde_json::to_vec(&AuditEvent { time: "00".into(), ..AuditEvent::default() }).unwrap().len() as u64 + 1;
        let log = AuditLog::from_env(&env).with_rotation(3 * line_len, 2);
        for n in 0..10 {
            let event = AuditEvent { time: format!("{n:02}"), ..AuditEvent::default() };
            log.record(&event).unwrap();
        }
        let files = log.files();
        let names: Vec<_> = files.iter().map(|p| p.file_name().unwrap().to_str().unwrap().to_owned()).collect();
        assert_eq!(names, ["audit.jsonl.2", "audit.jsonl.1", "audit.jsonl"]);
        assert!(!dir.path().join("audit.jsonl.3").exists(), "only two rotated files kept");
        let times: Vec<String> = files
            .iter()
            .flat_map(|f| std::fs::read_to_string(f).unwrap().lines().map(str::to_owned).collect::<Vec<_>>())
            .map(|l| serde_json::from_str::<serde_json::Value>(&l).unwrap()["time"].as_str().unwrap().to_owned())
            .collect();
        // Three lines a file: 00-02 went with the oldest file, the rest read in order.
        assert_eq!(times, ["03", "04", "05", "06", "07", "08", "09"]);
        for file in files {
            assert!(std::fs::metadata(file).unwrap().len() <= 3 * line_len);
        }
    }
}
