//! One JSON line per decision: who asked for what, with which intent, and what they got.

use std::io::Write;
use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;

/// One audit line.
#[derive(Serialize, Default)]
pub(crate) struct Line<'a> {
    pub time: String,
    pub outcome: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<&'a str>,
    /// The Cedar policies that determined the decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policies: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intent: Option<&'a Value>,
    /// Who acted for the subject: the token's `act` chain, current actor outermost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub act: Option<&'a Value>,
    /// The session the token came through (the session token's `jti`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<&'a str>,
    /// The human approval the request waits for or came through (its id, never its code).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<&'a str>,
    /// The approver group asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<&'a str>,
    /// Who approved or denied it: `{"iss", "sub", "email"?}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approver: Option<&'a Value>,
    /// The administrator who ended a session: `{"iss", "sub"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub administrator: Option<&'a Value>,
    /// The GitHub App installation whose token was minted or revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installation: Option<u64>,
    /// The GitHub permissions an installation token was granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<&'a Value>,
}

/// Where lines go: a file opened for append, or stderr.
pub(crate) struct Audit {
    sink: Mutex<Box<dyn Write + Send>>,
}

impl Audit {
    pub(crate) fn open(path: Option<&std::path::Path>) -> std::io::Result<Self> {
        let sink: Box<dyn Write + Send> = match path {
            Some(path) => {
                use std::os::unix::fs::OpenOptionsExt;
                Box::new(std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?)
            }
            None => Box::new(std::io::stderr()),
        };
        Ok(Self { sink: Mutex::new(sink) })
    }

    pub(crate) fn write(&self, line: &Line<'_>) {
        let Ok(mut bytes) = serde_json::to_vec(line) else {
            return;
        };
        bytes.push(b'\n');
        if let Ok(mut sink) = self.sink.lock() {
            let _ = sink.write_all(&bytes).and_then(|()| sink.flush());
        }
    }
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
