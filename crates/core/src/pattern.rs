//! The one wildcard matcher behind every pattern mayfly and `mayfly-sts` read: scopes,
//! claims, audiences and registry repositories.
//!
//! `*` matches any run of characters except the separators of the pattern's [`Kind`]:
//!
//! | kind | `*` never crosses |
//! |---|---|
//! | [`Kind::Scope`], [`Kind::Claim`] | `:` (and whitespace) |
//! | [`Kind::Audience`] | `/`, `#`, `?`, `@` anywhere; `.` and `:` inside the host part |
//! | [`Kind::Repository`] | `:`, `@` (it crosses `/`: `team/*` is every repository under `team/`) |
//!
//! Matching is linear in the value: the literal pieces between stars are found leftmost
//! first, and a piece is never searched for twice (no backtracking). Leftmost is enough:
//! a later occurrence of a piece can only help when the star before it could stretch over
//! more, and it cannot stretch over a separator. [`matches_counting`] reports the work done
//! so tests can hold the bound.

/// Which separators a `*` stays between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `kind:part:part`: a star stays within one `:`-separated part.
    Scope,
    /// A claim value such as `repo:org/app:ref:refs/heads/main`: within one `:` part.
    Claim,
    /// A URL: within one DNS label of the host, or one path segment.
    Audience,
    /// A registry repository name (`team/app`): across `/`, never into a tag or digest.
    Repository,
}

impl Kind {
    /// True when `*` may not consume `c` found at byte `at` of a value whose host part
    /// ends at byte `host_end`.
    fn stops(self, c: char, at: usize, host_end: usize) -> bool {
        match self {
            Self::Scope | Self::Claim => c == ':' || c.is_whitespace(),
            Self::Audience => matches!(c, '/' | '#' | '?' | '@') || (at < host_end && matches!(c, '.' | ':')),
            Self::Repository => matches!(c, ':' | '@') || c.is_whitespace(),
        }
    }
}

/// True when `value` matches `pattern` under the separator rule of `kind`.
pub fn matches(kind: Kind, pattern: &str, value: &str) -> bool {
    matches_counting(kind, pattern, value).0
}

/// [`matches`], with the number of characters of `value` it examined: never more than a
/// small multiple of the value's length plus the pattern's, whatever their content.
pub fn matches_counting(kind: Kind, pattern: &str, value: &str) -> (bool, usize) {
    let mut steps = 0;
    let result = match_pieces(kind, pattern, value, &mut steps);
    (result, steps)
}

fn match_pieces(kind: Kind, pattern: &str, value: &str, steps: &mut usize) -> bool {
    let host_end = if kind == Kind::Audience { host_end(value) } else { 0 };
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or("");
    let Some(mut piece) = pieces.next() else {
        *steps += value.len().min(pattern.len());
        return pattern == value;
    };
    *steps += first.len();
    if !value.starts_with(first) {
        return false;
    }
    // `at`: where the current star's run starts; `separator`: the first separator at or
    // after `at`, found once and kept while `at` has not passed it, so no byte of the
    // value is scanned for separators twice.
    let mut at = first.len();
    let mut separator = next_separator(kind, value, at, host_end, steps);
    loop {
        let next = pieces.next();
        if next.is_none() {
            // The last piece is anchored at the end; the star before it takes what is left.
            let Some(start) = value.len().checked_sub(piece.len()).filter(|&s| s >= at) else {
                return false;
            };
            *steps += piece.len();
            return value.get(start..) == Some(piece) && separator >= start;
        }
        // A middle piece: its leftmost occurrence that the star reaches before a separator.
        let Some(found) = find_within(value, at, separator, piece, steps) else {
            return false;
        };
        at = found + piece.len();
        if at > separator {
            separator = next_separator(kind, value, at, host_end, steps);
        }
        piece = next.unwrap_or("");
    }
}

/// Where the host part of a URL ends: after `scheme://`, at the first `/`, `?` or `#`.
fn host_end(value: &str) -> usize {
    let start = value.find("://").map_or(0, |i| i + 3);
    start + value[start..].find(['/', '?', '#']).unwrap_or(value.len() - start)
}

/// The byte index of the first separator at or after `from` (the value's length if none).
fn next_separator(kind: Kind, value: &str, from: usize, host_end: usize, steps: &mut usize) -> usize {
    for (i, c) in value[from..].char_indices() {
        *steps += 1;
        if kind.stops(c, from + i, host_end) {
            return from + i;
        }
    }
    value.len()
}

/// The leftmost occurrence of `piece` starting in `from..=limit` (the piece itself may
/// hold separators; the star's run before it may not).
fn find_within(value: &str, from: usize, limit: usize, piece: &str, steps: &mut usize) -> Option<usize> {
    let mut window_end = (limit + piece.len()).min(value.len());
    while !value.is_char_boundary(window_end) {
        window_end += 1;
    }
    let window = value.get(from..window_end)?;
    match window.find(piece) {
        Some(offset) if from + offset <= limit => {
            *steps += offset + piece.len();
            Some(from + offset)
        }
        _ => {
            *steps += window.len();
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The obvious exponential definition, for comparison.
    fn reference(kind: Kind, pattern: &str, value: &str, offset: usize, host_end: usize) -> bool {
        match pattern.split_once('*') {
            None => pattern == value,
            Some((prefix, rest)) => {
                let Some(tail) = value.strip_prefix(prefix) else { return false };
                let base = offset + prefix.len();
                let mut ends: Vec<usize> = vec![0];
                for (i, c) in tail.char_indices() {
                    if kind.stops(c, base + i, host_end) {
                        break;
                    }
                    ends.push(i + c.len_utf8());
                }
                ends.into_iter().any(|end| reference(kind, rest, &tail[end..], base + end, host_end))
            }
        }
    }

    fn reference_match(kind: Kind, pattern: &str, value: &str) -> bool {
        let host_end = if kind == Kind::Audience { host_end(value) } else { 0 };
        reference(kind, pattern, value, 0, host_end)
    }

    #[test]
    fn scope_stars_stay_within_one_part() {
        assert!(matches(Kind::Scope, "repo:org/app:*", "repo:org/app:read"));
        assert!(!matches(Kind::Scope, "repo:org/app:*", "repo:org/app:read:extra"));
        assert!(!matches(Kind::Scope, "repo:*:read", "repo:a:b:read"));
        assert!(matches(Kind::Scope, "repo:org/*:read", "repo:org/x/y:read"));
        assert!(!matches(Kind::Scope, "repo:org/app", "repo:org/apps"));
        assert!(matches(Kind::Scope, "*", "anything-without-a-colon"));
        assert!(!matches(Kind::Scope, "*", "a:b"));
    }

    #[test]
    fn claim_stars_stay_within_one_part() {
        // A subject `repo:org/app:ref:refs/heads/main`: `repo:org/*` must not reach the ref.
        assert!(!matches(Kind::Claim, "repo:org/*", "repo:org/app:ref:refs/heads/main"));
        assert!(matches(Kind::Claim, "repo:org/*:ref:refs/heads/main", "repo:org/app:ref:refs/heads/main"));
        assert!(!matches(Kind::Claim, "repo:*:ref:refs/heads/main", "repo:evil:x:ref:refs/heads/main"));
        assert!(matches(Kind::Claim, "refs/heads/*", "refs/heads/feature/x"));
    }

    #[test]
    fn audience_stars_stay_within_one_label_or_segment() {
        assert!(matches(Kind::Audience, "https://*.example.com", "https://git.example.com"));
        assert!(!matches(Kind::Audience, "https://*.example.com", "https://evil.com.example.com"));
        assert!(!matches(Kind::Audience, "https://*.example.com", "https://evil.com/.example.com"));
        assert!(!matches(Kind::Audience, "https://*example.com", "https://evil.com#example.com"));
        assert!(!matches(Kind::Audience, "https://*example.com", "https://user@example.com"));
        assert!(!matches(Kind::Audience, "https://git.example.com*", "https://git.example.com:8443"));
        assert!(matches(Kind::Audience, "https://git.example.com/*", "https://git.example.com/v1.2"));
        assert!(!matches(Kind::Audience, "https://git.example.com/*", "https://git.example.com/a/b"));
        assert!(!matches(Kind::Audience, "https://git.example.com/*", "https://git.example.com/a?b"));
        assert!(matches(Kind::Audience, "https://git.example.com:*", "https://git.example.com:8443"));
    }

    #[test]
    fn repository_stars_cross_slashes_but_not_tags() {
        assert!(matches(Kind::Repository, "team/*", "team/app/sub"));
        assert!(!matches(Kind::Repository, "team/*", "other/app"));
        assert!(!matches(Kind::Repository, "team/*", "team/app:latest"));
        assert!(!matches(Kind::Repository, "team/*", "team/app@sha256"));
    }

    #[test]
    fn several_stars_and_anchors() {
        assert!(matches(Kind::Scope, "a*b*c", "axxbyyc"));
        assert!(!matches(Kind::Scope, "a*b*c", "axxbyy"));
        assert!(matches(Kind::Scope, "*b*", "abc"));
        assert!(matches(Kind::Scope, "**", ""));
        assert!(matches(Kind::Scope, "a*a", "aa"));
        assert!(!matches(Kind::Scope, "a*a", "a"));
        assert!(matches(Kind::Scope, "x*ab:c*", "xab:c"));
        assert!(matches(Kind::Scope, "é*ü", "éöü"));
    }

    #[test]
    fn work_is_linear_in_the_value() {
        // The classic blow-up for backtracking matchers: many stars, a near miss at the end.
        let pattern = "a*".repeat(30) + "b";
        for len in [1_000usize, 4_000, 16_000, 64_000] {
            let value = "a".repeat(len);
            let (matched, steps) = matches_counting(Kind::Scope, &pattern, &value);
            assert!(!matched);
            assert!(steps <= 4 * (len + pattern.len()), "{steps} steps for {len} bytes");
        }
        let audience = format!("https://{}", "a.".repeat(30_000));
        let (_, steps) = matches_counting(Kind::Audience, "https://*.*.*.*.*.*.*.example", &audience);
        assert!(steps <= 4 * audience.len(), "{steps}");
    }

    fn alphabet() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[ab:/.@*é]{0,12}").unwrap()
    }

    proptest! {
        #[test]
        fn agrees_with_the_reference(pattern in alphabet(), value in proptest::string::string_regex("[ab:/.@é]{0,14}").unwrap()) {
            for kind in [Kind::Scope, Kind::Claim, Kind::Repository] {
                prop_assert_eq!(matches(kind, &pattern, &value), reference_match(kind, &pattern, &value), "{:?}", kind);
            }
            let (pattern, value) = (format!("https://{pattern}"), format!("https://{value}"));
            prop_assert_eq!(matches(Kind::Audience, &pattern, &value), reference_match(Kind::Audience, &pattern, &value));
        }
    }
}
