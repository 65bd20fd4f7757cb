//! Finding credentials in text about to leave the machine, for `mayfly guard`.
//!
//! Three detectors look at each line:
//!
//! - **minted**: a token this user's mayfly minted recently. Only fingerprints are kept
//!   (read from the audit log, see [`minted_fingerprints`]); every token-shaped substring
//!   of a line is fingerprinted and looked up, so the guard never holds a live token.
//! - **shapes**: every format `--redact` and `mayfly doctor` know ([`crate::token_kind`]:
//!   GitHub, GitLab, npm, PyPI, crates.io, AWS access key ids, Slack, `sk-` keys, JWTs ...),
//!   plus private key blocks.
//! - **assigned**: a random-looking value (32 or more characters of a base64 alphabet with
//!   upper case, lower case and digits) assigned to a name that says secret (`*_TOKEN`,
//!   `*_SECRET`, `password`, `api_key` ...), as in `.env` files, YAML and code.
//!
//! A finding names its line, its kind and the fingerprint of what it found, never the
//! value. A line holding [`ALLOW_MARKER`] is skipped: the way to keep a deliberate,
//! fake example.

use std::collections::HashSet;
use std::io::BufRead;
use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

use crate::Fingerprint;
use crate::redact::token_kind;
use crate::shape::{is_sensitive, random_looking};

/// A line holding this is never reported.
pub const ALLOW_MARKER: &str = "mayfly-guard: allow";

/// How far back the audit log is read for minted tokens. Tokens live minutes to hours,
/// but a commit made today may carry one minted days ago; it is still a leak of how
/// mayfly's tokens look and of who used them.
pub const MINTED_WINDOW_SECS: i64 = 7 * 24 * 3600;

/// The kind reported for a token this user's mayfly minted.
pub const MINTED: &str = "mayfly-minted-token";

/// Shortest substring fingerprinted against the minted tokens.
const MIN_MINTED_LEN: usize = 16;

/// Most `=` or `/` split points of one word tried against the minted tokens: a longer run
/// is base64 data, not a token glued to a key.
const MAX_SPLITS: usize = 8;

/// One thing found on a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Line number, from 1.
    pub line: usize,
    /// What it looks like (`github-token`, `private-key`, [`MINTED`] ...).
    pub kind: &'static str,
    /// Fingerprint of the value, where the finding is one value.
    pub fingerprint: Option<Fingerprint>,
}

/// The detectors, with the fingerprints of the tokens minted recently.
#[derive(Debug, Default)]
pub struct Guard {
    minted: HashSet<Fingerprint>,
}

/// `NAME = value`, `NAME: "value"`, `"name": "value"`, `name := value`, `name => value`.
static ASSIGNMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"([A-Za-z_][A-Za-z0-9_.-]*)["']?\s*(?::=|=>|=|:)\s*["'`]?([A-Za-z0-9+/=_-]+)"#)
        .expect("the assignment pattern compiles")
});

/// The armour line of a private key: PEM (`RSA`, `EC`, `OPENSSH`, `ENCRYPTED` ...) or PGP.
static PRIVATE_KEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY( BLOCK)?-----").expect("the key pattern compiles")
});

impl Guard {
    /// A guard that also knows these minted tokens' fingerprints.
    pub fn new(minted: HashSet<Fingerprint>) -> Self {
        Self { minted }
    }

    /// Every finding in `text`, line by line.
    pub fn scan_text(&self, text: &str) -> Vec<Finding> {
        text.lines().enumerate().flat_map(|(i, line)| self.scan_line(i + 1, line)).collect()
    }

    /// The findings on one line (numbered `line`), at most one per value.
    pub fn scan_line(&self, line: usize, text: &str) -> Vec<Finding> {
        if text.contains(ALLOW_MARKER) {
            return Vec::new();
        }
        let mut found: Vec<Finding> = Vec::new();
        let mut push = |kind: &'static str, fingerprint: Option<Fingerprint>| {
            if fingerprint.is_none() || !found.iter().any(|f| f.fingerprint == fingerprint) {
                found.push(Finding { line, kind, fingerprint });
            }
        };
        if PRIVATE_KEY.is_match(text) {
            push("private-key", None);
        }
        for word in words(text) {
            // A minted token is named as such even when it also has a known shape.
            if let Some(minted) = self.minted_in(word) {
                push(MINTED, Some(minted));
            }
            let at = word.find(['=', '/']).map_or(0, |i| i + 1);
            for value in [word, &word[at..]] {
                if let Some(kind) = token_kind(value).filter(|_| plausible_token(value)) {
                    push(kind, Some(Fingerprint::of(value)));
                    break;
                }
            }
        }
        for assignment in ASSIGNMENT.captures_iter(text) {
            let (name, value) = (&assignment[1], &assignment[2]);
            if is_sensitive(name) && random_looking(value) && token_kind(value).is_none() {
                push("secret-assignment", Some(Fingerprint::of(value)));
            }
        }
        found
    }

    /// The fingerprint of a minted token in `word`: the word itself, or a piece of it
    /// between `=` and `/` (`token=…`, `https://x/…`).
    fn minted_in(&self, word: &str) -> Option<Fingerprint> {
        if self.minted.is_empty() || word.len() < MIN_MINTED_LEN {
            return None;
        }
        let splits: Vec<usize> = word.match_indices(['=', '/']).map(|(i, _)| i).take(MAX_SPLITS).collect();
        let starts = std::iter::once(0).chain(splits.iter().map(|i| i + 1));
        let ends: Vec<usize> = splits.iter().copied().chain(std::iter::once(word.len())).collect();
        starts
            .flat_map(|start| {
                ends.iter().filter(move |&&end| end >= start + MIN_MINTED_LEN).map(move |&end| (start, end))
            })
            .map(|(start, end)| Fingerprint::of(&word[start..end]))
            .find(|fingerprint| self.minted.contains(fingerprint))
    }
}

/// A token's random part mixes letters and digits and holds no `/`; `npm_config_registry`,
/// `npm_config_//host/:_authToken` and other names that merely start like a token do not.
fn plausible_token(value: &str) -> bool {
    !value.contains('/')
        && value.bytes().any(|b| b.is_ascii_digit())
        && value.bytes().filter(u8::is_ascii_alphabetic).count() > 4
}

/// Runs of token characters, without a sentence's full stop.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || "-_.=+/".contains(c)))
        .map(|word| word.trim_end_matches('.'))
        .filter(|word| !word.is_empty())
}

/// Fingerprints of the tokens the audit log at `path` says were served (minted or from
/// the cache) since `now - MINTED_WINDOW_SECS`. A missing log is no tokens; lines that
/// are not audit lines are skipped.
pub fn minted_fingerprints(path: &Path, now: i64) -> std::io::Result<HashSet<Fingerprint>> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(e),
    };
    let mut minted = HashSet::new();
    for line in std::io::BufReader::new(file).lines() {
        let Ok(mut event) = serde_json::from_str::<serde_json::Value>(&line?) else {
            continue;
        };
        let served = matches!(event["outcome"].as_str(), Some("issued" | "cache-hit"));
        let recent = event["time"]
            .as_str()
            .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
            .is_some_and(|t| t.unix_timestamp() >= now - MINTED_WINDOW_SECS);
        let fingerprint = serde_json::from_value::<Fingerprint>(event["fingerprint"].take()).ok();
        if let (true, true, Some(fingerprint)) = (served, recent, fingerprint) {
            minted.insert(fingerprint);
        }
    }
    Ok(minted)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fake values, assembled here so this file holds no token-shaped text.
    fn fake(prefix: &str, body: &str) -> String {
        format!("{prefix}{body}")
    }

    fn kinds(guard: &Guard, text: &str) -> Vec<(usize, &'static str)> {
        guard.scan_text(text).into_iter().map(|f| (f.line, f.kind)).collect()
    }

    #[test]
    fn every_shape_is_found_with_its_line_and_kind() {
        let guard = Guard::default();
        let text = [
            format!("token = {}", fake("gh", "p_FAKE0000FAKE0000FAKE0000FAKE0000FAKE")),
            "nothing here".into(),
            format!("NPM_TOKEN={}", fake("np", "m_FAKE0000FAKE0000FAKE0000FAKE0000FAKE")),
            format!("aws_access_key_id = {}", fake("AKIA", "FAKEFAKEFAKE0000")),
            format!("-----BEGIN OPENSSH {}-----", fake("PRIVATE", " KEY")),
            format!("slack: {}", fake("xox", "b-000000000000-FAKEFAKEFAKE")),
        ]
        .join("\n");
        assert_eq!(
            kinds(&guard, &text),
            [(1, "github-token"), (3, "npm-token"), (4, "aws-access-key-id"), (5, "private-key"), (6, "slack-token")]
        );
    }

    #[test]
    fn random_values_assigned_to_secret_names_are_found_and_others_are_not() {
        let guard = Guard::default();
        let value = "Zq8mW3xT7vB2nK5pR9sL4dF6gH1jC0aE";
        assert_eq!(kinds(&guard, &format!("DB_PASSWORD=\"{value}\"")), [(1, "secret-assignment")]);
        assert_eq!(kinds(&guard, &format!("  \"client_secret\": \"{value}\",")), [(1, "secret-assignment")]);
        // Not a secret's name, not random, or a commit id.
        assert!(kinds(&guard, &format!("IMAGE_DIGEST={value}")).is_empty());
        assert!(kinds(&guard, "password: correct-horse-battery-staple").is_empty());
        assert!(kinds(&guard, "token = 0123456789abcdef0123456789abcdef01234567").is_empty());
        // Names that merely start like a token.
        assert!(kinds(&guard, "npm_config_registry=https://npm.example/ npm_escaped_name()").is_empty());
    }

    #[test]
    fn a_minted_token_is_found_by_fingerprint_only_and_glued_to_a_key() {
        let token = "opaque0mayfly0minted0token0value";
        let guard = Guard::new(HashSet::from([Fingerprint::of(token)]));
        for line in [token.to_owned(), format!("url=https://x-access-token:{token}@h/r"), format!("t={token}.")] {
            let found = guard.scan_text(&line);
            assert_eq!(found.len(), 1, "{line}");
            assert_eq!((found[0].kind, found[0].fingerprint.clone()), (MINTED, Some(Fingerprint::of(token))));
        }
        assert!(guard.scan_text("opaque0mayfly0minted0token0valuX").is_empty());
    }

    #[test]
    fn the_allow_marker_skips_its_line() {
        let line = format!("{} # {ALLOW_MARKER}", fake("gl", "pat-FAKEFAKEFAKEFAKEFAKE"));
        assert!(Guard::default().scan_text(&line).is_empty());
    }

    #[test]
    fn minted_fingerprints_come_from_recent_served_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.jsonl");
        let now = 2_000_000_000;
        let line = |outcome: &str, at: i64, token: &str| {
            format!(
                r#"{{"time":"{}","outcome":"{outcome}","fingerprint":"{}"}}"#,
                crate::audit::rfc3339(at),
                Fingerprint::of(token)
            )
        };
        let lines = [
            line("issued", now - 60, "a"),
            line("cache-hit", now - 3600, "b"),
            line("denied", now - 60, "c"),
            line("issued", now - MINTED_WINDOW_SECS - 1, "d"),
            "not json".into(),
        ];
        std::fs::write(&log, lines.join("\n")).unwrap();
        let minted = minted_fingerprints(&log, now).unwrap();
        assert_eq!(minted, HashSet::from([Fingerprint::of("a"), Fingerprint::of("b")]));
        assert!(minted_fingerprints(&dir.path().join("none"), now).unwrap().is_empty());
    }
}
