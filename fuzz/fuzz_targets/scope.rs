//! Building scopes from a route's template and the values a tool supplies, and reading a
//! requested scope list as `mayfly-sts` does.
//!
//! Input: three lines, the template, a path and a host; then the rest as a requested list.
//!
//! Invariants: a rendered scope list is single-spaced tokens of at most 256 bytes with no
//! whitespace or control character inside any, never more tokens than the template has;
//! a path that was substituted stands in it verbatim and holds nothing that could end,
//! start or widen a scope; a requested list that is accepted has at most 32 tokens of at
//! most 256 bytes, none with whitespace, and `*` only as a whole part or segment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mayfly_core::scope::{MAX_SCOPE_LEN, MAX_SCOPES, ScopeTemplate, parse_requested};
use mayfly_core::{Operation, Target, Tool};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.splitn(4, '\n');
    let (template, path, host, requested) =
        (lines.next().unwrap_or(""), lines.next().unwrap_or(""), lines.next().unwrap_or(""), lines.next().unwrap_or(""));
    if let Ok(template) = ScopeTemplate::parse(template) {
        let target = Target {
            tool: Tool::Git,
            protocol: "https".into(),
            host: host.to_owned(),
            path: (!path.is_empty()).then(|| path.to_owned()),
        };
        if let Ok(scope) = template.render(&target, Operation::Write) {
            let tokens: Vec<&str> = scope.as_str().split(' ').collect();
            assert!(tokens.len() <= MAX_SCOPES, "{scope}");
            for token in &tokens {
                assert!(!token.is_empty() && token.len() <= MAX_SCOPE_LEN, "{token:?}");
                assert!(!token.chars().any(|c| c.is_whitespace() || c.is_control()), "{token:?}");
            }
            if !path.is_empty() {
                assert!(
                    path.chars().all(|c| c.is_ascii_alphanumeric() || "._~@+-/".contains(c)),
                    "a path that could change the scope was accepted: {path:?}"
                );
                if template.mentions_path() {
                    assert!(scope.as_str().contains(path), "{scope} lost the path {path:?}");
                }
            }
        }
    }
    if let Ok(tokens) = parse_requested(requested) {
        assert!(tokens.len() <= MAX_SCOPES);
        for token in tokens {
            assert!(!token.is_empty() && token.len() <= MAX_SCOPE_LEN, "{token:?}");
            assert!(!token.chars().any(char::is_whitespace), "{token:?}");
            for segment in token.split([':', '/']) {
                assert!(!segment.contains('*') || segment == "*", "a pattern inside a name: {token:?}");
            }
        }
    }
});
