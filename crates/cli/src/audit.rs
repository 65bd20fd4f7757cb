//! `mayfly audit`: the audit log, filtered, as one line per decision or as the raw JSON
//! lines; `--follow` keeps reading what helpers append.
//!
//! The log is written by many processes and may hold lines from older versions or a
//! torn write: a line that is not an audit event is skipped and counted, never fatal.
//! Everything printed passes through the terminal sanitiser, since targets, reasons and
//! command lines come from tools and servers mayfly does not control.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use mayfly_core::{AuditLog, Env, Process, sanitize_for_terminal};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// How often `--follow` looks for new lines.
const POLL: Duration = Duration::from_millis(200);

/// Outcomes an audit line can carry (kebab-case, as written).
const OUTCOMES: [&str; 9] = [
    "issued",
    "cache-hit",
    "denied",
    "failed",
    "erased",
    "revoked",
    "revoke-failed",
    "session-started",
    "session-ended",
];

/// Arguments of `mayfly audit`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Only lines of this session (`mayfly exec --session`)
    #[arg(long, value_name = "SESSION")]
    session: Option<String>,
    /// Only lines whose target contains this text (case-insensitive)
    #[arg(long, value_name = "SUBSTRING")]
    target: Option<String>,
    /// Only lines of this tool (git, kubectl, terraform, cargo, oci, npm, pypi, gem, nuget, aws, exec)
    #[arg(long, value_name = "TOOL")]
    tool: Option<String>,
    /// Only lines with this outcome
    #[arg(long, value_name = "OUTCOME", value_parser = OUTCOMES)]
    outcome: Option<String>,
    /// Only lines at or after this time: RFC 3339 (2026-11-23T08:00:00Z) or a duration ago (90s, 15m, 1h)
    #[arg(long, value_name = "TIME|DURATION", value_parser = parse_since)]
    since: Option<OffsetDateTime>,
    /// Print the matching lines as they are in the log (JSON lines)
    #[arg(long)]
    json: bool,
    /// Keep reading lines as they are appended, until interrupted
    #[arg(long, short = 'f')]
    follow: bool,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let env = Env::from_os();
    let log = AuditLog::from_env(&env);
    let path = log.path().context("no audit log: set MAYFLY_AUDIT_LOG, XDG_STATE_HOME or HOME")?.to_owned();
    let mut printer = Printer::new(Filter::from(args), args.json);
    let mut out = std::io::stdout().lock();
    let mut reader = Reader::default();
    let result = if args.follow {
        // Ctrl-C ends following like the end of the file ends a plain read.
        let stop = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, Arc::clone(&stop)).context("cannot handle signals")?;
        }
        reader.follow(&path, &stop, &mut |line| printer.emit(&mut out, line))
    } else {
        // The rotated files first, oldest to newest, then the log itself.
        let files = log.files();
        if files.is_empty() {
            eprintln!("mayfly: no audit log at {} yet", sanitize_for_terminal(&path.display().to_string()));
        }
        files.iter().try_for_each(|file| match File::open(file) {
            Ok(opened) => reader.read(opened, true, &mut |line| printer.emit(&mut out, line)),
            // Rotated away between listing and opening.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot read `{}`", file.display())),
        })
    };
    if reader.malformed > 0 {
        let shown = sanitize_for_terminal(&path.display().to_string());
        eprintln!("mayfly: skipped {} malformed line(s) in {shown}", reader.malformed);
    }
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // A closed pipe (`| head`) is the reader's way of saying it has enough.
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) => {
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e),
    }
}

/// `--since`: an RFC 3339 time, or a duration before now.
fn parse_since(text: &str) -> Result<OffsetDateTime, String> {
    if let Ok(time) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(time);
    }
    let ago = mayfly_core::parse_duration(text)
        .map_err(|_| format!("`{text}` is neither an RFC 3339 time nor a duration (90s, 15m, 1h)"))?;
    Ok(OffsetDateTime::now_utc() - ago)
}

/// Which lines to show.
#[derive(Clone, Default)]
struct Filter {
    session: Option<String>,
    target: Option<String>,
    tool: Option<String>,
    outcome: Option<String>,
    since: Option<OffsetDateTime>,
}

impl From<&Args> for Filter {
    fn from(args: &Args) -> Self {
        Self {
            session: args.session.clone(),
            target: args.target.as_ref().map(|t| t.to_lowercase()),
            tool: args.tool.clone(),
            outcome: args.outcome.clone(),
            since: args.since,
        }
    }
}

impl Filter {
    fn matches(&self, event: &Value) -> bool {
        let field = |name: &str| event.get(name).and_then(Value::as_str);
        let equals = |wanted: &Option<String>, name: &str| wanted.as_deref().is_none_or(|w| field(name) == Some(w));
        equals(&self.session, "session")
            && equals(&self.tool, "tool")
            && equals(&self.outcome, "outcome")
            && self.target.as_deref().is_none_or(|t| field("target").is_some_and(|v| v.to_lowercase().contains(t)))
            && self.since.is_none_or(|since| {
                field("time").and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok()).is_some_and(|t| t >= since)
            })
    }
}

/// Reads whole lines, remembering a partial last line until its end arrives.
#[derive(Default)]
struct Reader {
    partial: Vec<u8>,
    malformed: usize,
}

type Sink<'a> = dyn FnMut(&[u8]) -> std::io::Result<()> + 'a;

impl Reader {
    /// Hands every complete line to `sink`; at the end of the input, a final line without
    /// a newline too when `last` (otherwise it waits for the rest).
    fn read(&mut self, input: impl Read, last: bool, sink: &mut Sink<'_>) -> anyhow::Result<()> {
        let mut input = BufReader::new(input);
        loop {
            let read = input.read_until(b'\n', &mut self.partial).context("cannot read the audit log")?;
            if read == 0 || self.partial.last() != Some(&b'\n') {
                if last && !self.partial.is_empty() {
                    let line = std::mem::take(&mut self.partial);
                    self.line(&line, sink)?;
                }
                return Ok(());
            }
            let line = std::mem::take(&mut self.partial);
            self.line(&line, sink)?;
        }
    }

    fn line(&mut self, raw: &[u8], sink: &mut Sink<'_>) -> anyhow::Result<()> {
        let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        if parse(raw).is_none() {
            self.malformed += 1;
            return Ok(());
        }
        sink(raw).map_err(anyhow::Error::from)
    }

    /// Reads what is there, then polls for more until `stop`. A log that shrank was
    /// rotated or truncated: reading starts again from its beginning.
    fn follow(&mut self, path: &Path, stop: &AtomicBool, sink: &mut Sink<'_>) -> anyhow::Result<()> {
        let mut offset = 0u64;
        while !stop.load(Ordering::Relaxed) {
            match File::open(path) {
                Ok(mut file) => {
                    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
                    if len < offset {
                        offset = 0;
                        self.partial.clear();
                    }
                    if len > offset {
                        file.seek(SeekFrom::Start(offset)).context("cannot read the audit log")?;
                        let mut chunk = (&mut file).take(len - offset);
                        self.read(&mut chunk, false, sink)?;
                        offset = len;
                    }
                }
                // Not written yet: the first helper to run creates it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => offset = 0,
                Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", path.display())),
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }
}

/// An audit event: a JSON object with a time and an outcome.
fn parse(raw: &[u8]) -> Option<Value> {
    let value: Value = serde_json::from_slice(raw).ok()?;
    (value.get("time")?.is_string() && value.get("outcome")?.is_string()).then_some(value)
}

/// Prints the lines that pass the filter, remembering the chains of `issued` lines so a
/// cache hit that refers to one (`process_ref`) shows its whole command.
struct Printer {
    filter: Filter,
    json: bool,
    issued_chains: HashMap<String, Vec<Value>>,
}

impl Printer {
    fn new(filter: Filter, json: bool) -> Self {
        Self { filter, json, issued_chains: HashMap::new() }
    }

    fn emit(&mut self, out: &mut impl Write, raw: &[u8]) -> std::io::Result<()> {
        let Some(event) = parse(raw) else { return Ok(()) };
        if !self.json
            && event.get("outcome").and_then(Value::as_str) == Some("issued")
            && let (Some(fingerprint), Some(chain)) =
                (event.get("fingerprint").and_then(Value::as_str), event.get("process").and_then(Value::as_array))
        {
            self.issued_chains.insert(fingerprint.to_owned(), chain.clone());
        }
        if !self.filter.matches(&event) {
            return Ok(());
        }
        let line = if self.json {
            sanitize_for_terminal(&String::from_utf8_lossy(raw))
        } else {
            human(&event, &self.issued_chains)
        };
        writeln!(out, "{line}")?;
        out.flush()
    }
}

/// One compact line: time, outcome, session, tool and operation, target, scope,
/// fingerprint, reason, and for `session-started`/`issued`/`cache-hit` the command behind it.
fn human(event: &Value, issued_chains: &HashMap<String, Vec<Value>>) -> String {
    let field = |name: &str| event.get(name).and_then(Value::as_str).filter(|v| !v.is_empty());
    let outcome = field("outcome").unwrap_or("?");
    let mut parts = vec![field("time").unwrap_or("-").to_owned(), format!("{outcome:<15}")];
    if let Some(session) = field("session") {
        parts.push(format!("[{session}]"));
    }
    let what: Vec<&str> = ["tool", "operation", "target"].into_iter().filter_map(field).collect();
    if !what.is_empty() {
        parts.push(what.join(" "));
    }
    parts.extend(["scope", "fingerprint"].into_iter().filter_map(field).map(str::to_owned));
    if let Some(reason) = field("reason") {
        parts.push(format!("({reason})"));
    }
    match chain(event, issued_chains) {
        Chain::Whole(chain) => {
            if let Some(command) = command(event, outcome, &chain).filter(|c| !c.is_empty()) {
                parts.push(format!("$ {}", command.join(" ")));
            }
        }
        Chain::RotatedAway => parts.push("(its command is in an issued line no longer in the log)".into()),
    }
    sanitize_for_terminal(&parts.join("  "))
}

enum Chain {
    Whole(Vec<Process>),
    /// A cache hit whose chain goes on in an `issued` line that was rotated away.
    RotatedAway,
}

/// A line's process chain, with the part a cache hit shares with its `issued` line put
/// back from that line.
fn chain(event: &Value, issued_chains: &HashMap<String, Vec<Value>>) -> Chain {
    let own = event.get("process").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut whole: Vec<Value> = own;
    if let Some(reference) = event.get("process_ref") {
        let issued = reference.get("issued").and_then(Value::as_str).unwrap_or_default();
        let from = reference.get("from").and_then(Value::as_u64).and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
        match issued_chains.get(issued) {
            Some(rest) => whole.extend(rest.iter().skip(from).cloned()),
            None => return Chain::RotatedAway,
        }
    }
    Chain::Whole(
        whole
            .iter()
            .map(|p| Process {
                pid: p.get("pid").and_then(Value::as_u64).and_then(|pid| u32::try_from(pid).ok()).unwrap_or(0),
                argv: p
                    .get("argv")
                    .and_then(Value::as_array)
                    .map(|argv| argv.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                    .unwrap_or_default(),
            })
            .collect(),
    )
}

/// The command behind a `session-started` line (the session's command, first in its
/// chain) or an `issued` or `cache-hit` one (the tool's command above the helper, as the
/// exchange was told; else the helper's parent).
fn command(event: &Value, outcome: &str, chain: &[Process]) -> Option<Vec<String>> {
    if !["session-started", "issued", "cache-hit"].contains(&outcome) {
        return None;
    }
    let first = chain.first()?.argv.clone();
    if outcome != "session-started"
        && let Some(tool) = event.get("tool").and_then(Value::as_str)
    {
        let command = mayfly_core::command_of(tool, chain);
        if !command.is_empty() {
            return Some(command);
        }
    }
    Some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUED: &str = r#"{"time":"2026-11-23T08:39:32Z","outcome":"issued","session":"s-1","tool":"git","target":"https://git.example.com/org/app","operation":"write","route":"app","scope":"repo:org/app:write","fingerprint":"sha256:b7728ad18c62eb06","process":[{"pid":5,"argv":["/bin/sh","-c","git-credential-mayfly get"]},{"pid":4,"argv":["git","push","origin","main"]}]}"#;
    const DENIED: &str = r#"{"time":"2026-11-23T09:00:00Z","outcome":"denied","tool":"git","target":"https://git.example.com/org/docs","operation":"write","route":"docs","reason":"route `docs` does not allow write\u001b[2J","process":[]}"#;

    fn collect(input: &str, filter: &Filter, json: bool) -> (Vec<String>, usize) {
        let mut reader = Reader::default();
        let mut out = Vec::new();
        let mut printer = Printer::new(filter.clone(), json);
        reader.read(input.as_bytes(), true, &mut |raw| printer.emit(&mut out, raw)).unwrap();
        (String::from_utf8(out).unwrap().lines().map(str::to_owned).collect(), reader.malformed)
    }

    #[test]
    fn filters_combine_and_malformed_lines_are_counted() {
        let input = format!("{ISSUED}\nnot json\n\n[1]\n{DENIED}\n{{\"time\":1}}\n");
        let (all, malformed) = collect(&input, &Filter::default(), true);
        assert_eq!(all, [ISSUED, DENIED]);
        assert_eq!(malformed, 3);
        let only = |filter: Filter| collect(&input, &filter, true).0;
        assert_eq!(only(Filter { outcome: Some("denied".into()), ..Filter::default() }), [DENIED]);
        assert_eq!(only(Filter { session: Some("s-1".into()), ..Filter::default() }), [ISSUED]);
        assert_eq!(only(Filter { target: Some("org/docs".into()), ..Filter::default() }), [DENIED]);
        assert_eq!(only(Filter { tool: Some("kubectl".into()), ..Filter::default() }), Vec::<String>::new());
        let since = parse_since("2026-11-23T08:50:00Z").unwrap();
        assert_eq!(only(Filter { since: Some(since), ..Filter::default() }), [DENIED]);
    }

    #[test]
    fn human_lines_are_compact_and_sanitised() {
        let (lines, _) = collect(&format!("{ISSUED}\n{DENIED}"), &Filter::default(), false);
        assert_eq!(
            lines[0],
            "2026-11-23T08:39:32Z  issued           [s-1]  git write https://git.example.com/org/app  \
             repo:org/app:write  sha256:b7728ad18c62eb06  $ git push origin main"
        );
        assert!(lines[1].contains("(route `docs` does not allow write\u{fffd}[2J)"), "{}", lines[1]);
        assert!(!lines[1].contains('\u{1b}'));
    }

    #[test]
    fn a_cache_hit_shows_its_command_through_its_issued_line_or_says_it_was_rotated_away() {
        let hit = r#"{"time":"2026-11-23T08:40:00Z","outcome":"cache-hit","tool":"git","target":"https://git.example.com/org/app","operation":"read","fingerprint":"sha256:b7728ad18c62eb06","process":[{"pid":9,"argv":["/bin/sh","-c","git-credential-mayfly get"]},{"pid":8,"argv":["git","fetch"]}],"process_ref":{"issued":"sha256:b7728ad18c62eb06","from":2}}"#;
        let (lines, _) = collect(&format!("{ISSUED}\n{hit}"), &Filter::default(), false);
        assert!(lines[1].ends_with("$ git fetch"), "{}", lines[1]);
        let (alone, _) = collect(hit, &Filter::default(), false);
        assert!(alone[0].ends_with("(its command is in an issued line no longer in the log)"), "{}", alone[0]);
        // Filtered out of the view, the issued line still resolves the reference.
        let hits_only = Filter { outcome: Some("cache-hit".into()), ..Filter::default() };
        let (lines, _) = collect(&format!("{ISSUED}\n{hit}"), &hits_only, false);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].ends_with("$ git fetch"), "{}", lines[0]);
    }

    #[test]
    fn a_partial_line_waits_for_its_end() {
        let mut reader = Reader::default();
        let mut seen = Vec::new();
        let (head, tail) = ISSUED.split_at(40);
        let mut sink = |raw: &[u8]| {
            seen.push(raw.to_vec());
            Ok(())
        };
        reader.read(head.as_bytes(), false, &mut sink).unwrap();
        reader.read(format!("{tail}\n").as_bytes(), false, &mut sink).unwrap();
        assert_eq!(seen, [ISSUED.as_bytes()]);
        let mut again = Reader::default();
        let mut count = 0;
        again
            .read(head.as_bytes(), false, &mut |_| {
                count += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(count, 0, "half a line is not a line yet");
        assert_eq!(reader.malformed, 0);
    }

    #[test]
    fn since_takes_times_and_durations() {
        assert!(parse_since("2026-11-23T08:00:00+01:00").is_ok());
        let hour_ago = parse_since("1h").unwrap();
        let diff = OffsetDateTime::now_utc() - hour_ago;
        assert!((3590..=3610).contains(&diff.whole_seconds()), "{diff}");
        assert!(parse_since("yesterday").is_err());
    }
}
