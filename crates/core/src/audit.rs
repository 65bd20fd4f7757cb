//! The audit trail: one JSON line per decision, enough to rebuild who got what, for
//! which command, on whose behalf. Never the token: only its fingerprint.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

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
}

/// Where audit lines go.
#[derive(Clone, Debug)]
pub struct AuditLog {
    path: Option<PathBuf>,
}

impl AuditLog {
    /// `$MAYFLY_AUDIT_LOG`, else `$XDG_STATE_HOME/mayfly/audit.jsonl`.
    pub fn from_env(env: &Env) -> Self {
        let path = env.path(EnvVars::MAYFLY_AUDIT_LOG).or_else(|| Some(env.state_dir()?.join("audit.jsonl")));
        Self { path }
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
        let mut file = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
        file.write_all(&line)
    }
}

/// The current time in RFC 3339, as audit lines carry it.
pub fn rfc3339_now() -> String {
    rfc3339(time::OffsetDateTime::now_utc().unix_timestamp())
}

/// A unix time in RFC 3339.
pub(crate) fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}
