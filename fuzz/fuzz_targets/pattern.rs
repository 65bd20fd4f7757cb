//! The one wildcard matcher of `mayfly-sts` (scopes, claims, audiences, registry names).
//!
//! Input: a kind byte, then a pattern and a value separated by a NUL.
//!
//! Invariants: the matcher agrees with the obvious backtracking definition (checked on
//! inputs small enough for it), and its work never exceeds four times the length of the
//! value and the pattern together, whatever their content.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mayfly_core::pattern::{Kind, matches_counting};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else { return };
    let kind = [Kind::Scope, Kind::Claim, Kind::Audience, Kind::Repository][usize::from(kind % 4)];
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let Some((pattern, value)) = text.split_once('\0') else { return };
    let (matched, steps) = matches_counting(kind, pattern, value);
    assert!(steps <= 4 * (value.len() + pattern.len()) + 8, "{steps} steps for {} + {} bytes", pattern.len(), value.len());
    if pattern.len() + value.len() <= 40 && pattern.matches('*').count() <= 6 {
        let host_end = if kind == Kind::Audience { host_end(value) } else { 0 };
        assert_eq!(matched, reference(kind, pattern, value, 0, host_end), "{kind:?} {pattern:?} {value:?}");
    }
});

fn stops(kind: Kind, c: char, at: usize, host_end: usize) -> bool {
    match kind {
        Kind::Scope | Kind::Claim => c == ':' || c.is_whitespace(),
        Kind::Audience => matches!(c, '/' | '#' | '?' | '@') || (at < host_end && matches!(c, '.' | ':')),
        Kind::Repository => matches!(c, ':' | '@') || c.is_whitespace(),
    }
}

fn host_end(value: &str) -> usize {
    let start = value.find("://").map_or(0, |i| i + 3);
    start + value[start..].find(['/', '?', '#']).unwrap_or(value.len() - start)
}

/// `*` tries every run it may take, the slow and obviously right way.
fn reference(kind: Kind, pattern: &str, value: &str, offset: usize, host_end: usize) -> bool {
    match pattern.split_once('*') {
        None => pattern == value,
        Some((prefix, rest)) => {
            let Some(tail) = value.strip_prefix(prefix) else { return false };
            let base = offset + prefix.len();
            let mut ends = vec![0];
            for (i, c) in tail.char_indices() {
                if stops(kind, c, base + i, host_end) {
                    break;
                }
                ends.push(i + c.len_utf8());
            }
            ends.into_iter().any(|end| reference(kind, rest, &tail[end..], base + end, host_end))
        }
    }
}
