//! One JSON line per decision: who asked for what, with which intent, and what they got.
//!
//! Requests hand their serialized line to one writer thread, which writes every line
//! waiting at that moment in one write and one flush (group commit), then acknowledges
//! each; a token is answered only after that acknowledgement. A file rotates by size.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

/// Rotation when no size is configured: 10 MiB, three old files.
pub(crate) const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;
/// Old files kept when none is configured.
pub(crate) const DEFAULT_KEEP: usize = 3;

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

/// Where lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// A file, rotated when the next batch would take it past `max_size`.
    File { path: PathBuf, max_size: u64, keep: usize },
    /// Standard output (`audit_log = "-"`), for platforms that collect logs.
    Stdout,
    /// Standard error (no `audit_log`).
    Stderr,
}

impl Target {
    /// Where the config sends lines.
    pub(crate) fn of(config: &crate::Config) -> Self {
        match config.audit_log.as_deref() {
            None => Self::Stderr,
            Some(path) if path == Path::new("-") => Self::Stdout,
            Some(path) => {
                Self::File { path: path.to_owned(), max_size: config.audit_max_size, keep: config.audit_keep }
            }
        }
    }
}

/// Where the writer reports a line's outcome; `None` for lines no one waits for.
type Ack = Option<oneshot::Sender<io::Result<()>>>;

/// The sending side of the writer thread; dropping it ends the thread.
pub(crate) struct Audit {
    lines: mpsc::UnboundedSender<(Vec<u8>, Ack)>,
}

impl Audit {
    /// Opens the target (so that a bad path fails at start) and starts the writer.
    pub(crate) fn open(target: Target) -> io::Result<Self> {
        let mut sink = Sink::open(target)?;
        let (lines, mut rx) = mpsc::unbounded_channel::<(Vec<u8>, Ack)>();
        std::thread::Builder::new().name("audit".into()).spawn(move || {
            let mut batch = Vec::new();
            while let Some(first) = rx.blocking_recv() {
                batch.push(first);
                while let Ok(next) = rx.try_recv() {
                    batch.push(next);
                }
                let result = sink.commit(batch.iter().map(|(line, _)| line.as_slice()));
                if let Err(e) = &result
                    && batch.iter().any(|(_, ack)| ack.is_none())
                {
                    crate::log::error(&format!("cannot write the audit log: {e}"));
                }
                for (_, ack) in batch.drain(..) {
                    if let Some(ack) = ack {
                        let _ = ack.send(result.as_ref().copied().map_err(|e| io::Error::new(e.kind(), e.to_string())));
                    }
                }
            }
        })?;
        Ok(Self { lines })
    }

    /// Queues a line now (so lines keep the order of the calls) and resolves once it is
    /// written and flushed, or with the error that kept it from being written. A token is
    /// answered only after this resolves `Ok`.
    pub(crate) fn write(&self, line: &Line<'_>) -> impl Future<Output = io::Result<()>> + use<> {
        let (ack, written) = oneshot::channel();
        let queued = self.send(line, Some(ack));
        async move {
            queued?;
            written.await.unwrap_or_else(|_| Err(io::Error::other("the audit writer stopped")))
        }
    }

    /// [`Audit::write`] for a line that answers no token: a failure is one line on stderr.
    pub(crate) fn record(&self, line: &Line<'_>) -> impl Future<Output = ()> + use<> {
        let written = self.write(line);
        async move {
            if let Err(e) = written.await {
                crate::log::error(&format!("cannot write the audit log: {e}"));
            }
        }
    }

    /// Resolves once every line queued before it is written and flushed (at shutdown).
    pub(crate) async fn flush(&self) -> io::Result<()> {
        let (ack, written) = oneshot::channel();
        self.lines.send((Vec::new(), Some(ack))).map_err(|_| io::Error::other("the audit writer stopped"))?;
        written.await.unwrap_or_else(|_| Err(io::Error::other("the audit writer stopped")))
    }

    /// Queues a line without waiting for it (in code that cannot wait; order is kept).
    pub(crate) fn queue(&self, line: &Line<'_>) {
        if let Err(e) = self.send(line, None) {
            crate::log::error(&format!("cannot write the audit log: {e}"));
        }
    }

    fn send(&self, line: &Line<'_>, ack: Ack) -> io::Result<()> {
        crate::metrics::decision(line);
        let mut bytes = serde_json::to_vec(line).map_err(io::Error::other)?;
        bytes.push(b'\n');
        self.lines.send((bytes, ack)).map_err(|_| io::Error::other("the audit writer stopped"))
    }
}

enum Sink {
    File { file: File, path: PathBuf, size: u64, max_size: u64, keep: usize },
    Stdout(io::Stdout),
    Stderr(io::Stderr),
}

impl Sink {
    fn open(target: Target) -> io::Result<Self> {
        Ok(match target {
            Target::File { path, max_size, keep } => {
                let file = open_append(&path)?;
                let meta = file.metadata()?;
                // Only a regular file rotates: renaming `/dev/null`, a FIFO or a terminal
                // away would leave a regular file in its place (for every other program).
                let max_size = if meta.is_file() { max_size } else { u64::MAX };
                Self::File { file, path, size: meta.len(), max_size, keep }
            }
            Target::Stdout => Self::Stdout(io::stdout()),
            Target::Stderr => Self::Stderr(io::stderr()),
        })
    }

    fn commit<'a>(&mut self, lines: impl Iterator<Item = &'a [u8]>) -> io::Result<()> {
        let bytes: Vec<u8> = lines.flat_map(|l| l.iter().copied()).collect();
        match self {
            Self::File { file, path, size, max_size, keep } => {
                // Rotate between batches, never inside a line; an empty file takes any batch.
                if *size > 0 && *size + bytes.len() as u64 > *max_size {
                    rotate(path, *keep)?;
                    *file = open_append(path)?;
                    *size = 0;
                }
                file.write_all(&bytes)?;
                file.flush()?;
                *size += bytes.len() as u64;
                Ok(())
            }
            Self::Stdout(out) => out.lock().write_all(&bytes).and_then(|()| out.flush()),
            Self::Stderr(err) => err.lock().write_all(&bytes).and_then(|()| err.flush()),
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

/// `log` becomes `log.1`, `log.1` becomes `log.2`, ... and `log.KEEP` is dropped.
fn rotate(path: &Path, keep: usize) -> io::Result<()> {
    let numbered = |n: usize| {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    };
    if keep == 0 {
        return std::fs::remove_file(path);
    }
    for n in (1..keep).rev() {
        match std::fs::rename(numbered(n), numbered(n + 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    std::fs::rename(path, numbered(1))
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize) -> String {
        format!("{n:04}")
    }

    #[tokio::test]
    async fn rotates_at_the_limit_and_keeps_the_configured_number_of_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::open(Target::File { path: path.clone(), max_size: 1000, keep: 2 }).unwrap();
        for n in 0..100 {
            audit.write(&Line { time: line(n), outcome: "issued", ..Line::default() }).await.unwrap();
        }
        let one = r#"{"time":"0000","outcome":"issued"}"#.len() as u64 + 1;
        let mut names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]);
        let per_file = 1000 / one;
        for name in &names[1..] {
            let size = std::fs::metadata(dir.path().join(name)).unwrap().len();
            assert_eq!(size, per_file * one, "{name} is filled up to the limit, in whole lines");
        }
        // The newest lines are in the live file, the ones before in `.1`; the oldest are gone.
        let live = std::fs::read_to_string(&path).unwrap();
        assert!(live.ends_with("{\"time\":\"0099\",\"outcome\":\"issued\"}\n"), "{live}");
        let previous: Vec<Value> = std::fs::read_to_string(dir.path().join("audit.jsonl.1"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let live_first: Value = serde_json::from_str(live.lines().next().unwrap()).unwrap();
        let next = previous.last().unwrap()["time"].as_str().unwrap().parse::<usize>().unwrap() + 1;
        assert_eq!(live_first["time"], line(next));
        assert!(!std::fs::read_to_string(dir.path().join("audit.jsonl.2")).unwrap().contains("\"0000\""));
    }

    #[tokio::test]
    async fn only_a_regular_file_rotates() {
        // A link to `/dev/null`: a rotation would rename the link, never the device.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::os::unix::fs::symlink("/dev/null", &path).unwrap();
        let audit = Audit::open(Target::File { path: path.clone(), max_size: 100, keep: 2 }).unwrap();
        for n in 0..20 {
            audit.write(&Line { time: line(n), outcome: "issued", ..Line::default() }).await.unwrap();
        }
        assert!(std::fs::symlink_metadata(&path).unwrap().is_symlink(), "the log was rotated away");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn a_failed_write_is_reported_to_the_request() {
        let audit =
            Audit::open(Target::File { path: "/dev/full".into(), max_size: DEFAULT_MAX_SIZE, keep: 1 }).unwrap();
        let error = audit.write(&Line { outcome: "issued", ..Line::default() }).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);
    }

    #[tokio::test]
    async fn lines_queued_together_are_all_acknowledged_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::open(Target::File { path: path.clone(), max_size: DEFAULT_MAX_SIZE, keep: 1 }).unwrap();
        let pending: Vec<_> = (0..100).map(|n| audit.write(&Line { time: line(n), ..Line::default() })).collect();
        for written in pending {
            written.await.unwrap();
        }
        let times: Vec<String> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["time"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(times, (0..100).map(line).collect::<Vec<_>>());
    }
}
