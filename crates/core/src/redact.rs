//! Keeping secrets and terminal tricks out of what mayfly prints and logs.

/// Replaces control characters (ANSI escapes, CR, LF ...) so a hostile value cannot
/// rewrite the user's terminal or forge a log line.
pub fn sanitize_for_terminal(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { char::REPLACEMENT_CHARACTER } else { c }).collect()
}

/// [`sanitize_for_terminal`], but keeping line breaks: for the `mayfly` command's own
/// messages on stderr, never for a protocol's stdout or a helper's one-line errors.
pub fn sanitize_keeping_lines(text: &str) -> String {
    text.split('\n').map(sanitize_for_terminal).collect::<Vec<_>>().join("\n")
}

/// At most `max` bytes of `text`, cut at a character boundary.
pub fn clip(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// What replaces a token in redacted output.
pub const REDACTED: &str = "[redacted by mayfly]";

/// Replaces every `known` token, and anything shaped like a JWT or a well-known token
/// format, with [`REDACTED`].
pub fn redact_tokens(text: &str, known: &[&str]) -> String {
    let mut text = text.to_owned();
    for token in known.iter().filter(|t| t.len() >= 8) {
        if text.contains(*token) {
            text = text.replace(*token, REDACTED);
        }
    }
    let is_token_char = |c: char| c.is_ascii_alphanumeric() || "-_.=+/".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(start) = rest.find(is_token_char) {
        out.push_str(&rest[..start]);
        let run = &rest[start..];
        let end = run.find(|c| !is_token_char(c)).unwrap_or(run.len());
        // A sentence's full stop is not part of a token.
        let end = run[..end].trim_end_matches('.').len().max(1);
        let word = &run[..end];
        // A token glued to a key (`token=eyJ...`, `Bearer:ghp_...`) is still a token.
        let at = word.find(['=', ':', '/']).map_or(0, |i| i + 1);
        match (looks_like_token(word), looks_like_token(&word[at..])) {
            (true, _) => out.push_str(REDACTED),
            (false, true) => {
                out.push_str(&word[..at]);
                out.push_str(REDACTED);
            }
            _ => out.push_str(word),
        }
        rest = &run[end..];
    }
    out.push_str(rest);
    out
}

/// JWTs and the common prefixed token formats: GitHub, GitLab, npm, PyPI, Hugging Face,
/// Vault, crates.io, Anthropic and OpenAI-style `sk-` keys, Slack, AWS access key ids,
/// Google API keys.
pub(crate) fn looks_like_token(value: &str) -> bool {
    token_kind(value).is_some()
}

/// The prefixed token formats, each with the kind `mayfly guard` reports it as.
const PREFIXES: [(&str, &str); 24] = [
    ("ghp_", "github-token"),
    ("ghs_", "github-token"),
    ("gho_", "github-token"),
    ("ghu_", "github-token"),
    ("ghr_", "github-token"),
    ("github_pat_", "github-token"),
    ("glpat-", "gitlab-token"),
    ("gldt-", "gitlab-token"),
    ("glrt-", "gitlab-token"),
    ("glptt-", "gitlab-token"),
    ("glcbt-", "gitlab-token"),
    ("gloas-", "gitlab-token"),
    ("npm_", "npm-token"),
    ("pypi-", "pypi-token"),
    ("hf_", "huggingface-token"),
    ("hvs.", "vault-token"),
    ("hvb.", "vault-token"),
    ("cio_tp_", "crates-io-token"),
    ("sk-", "api-key"),
    ("xoxb-", "slack-token"),
    ("xoxp-", "slack-token"),
    ("xoxa-", "slack-token"),
    ("xoxs-", "slack-token"),
    ("AIza", "google-api-key"),
];

/// Which well-known token format `value` has, if any: the one list behind `--redact`,
/// `mayfly doctor` and `mayfly guard`.
pub fn token_kind(value: &str) -> Option<&'static str> {
    let jwt = value.starts_with("eyJ") && value.matches('.').count() == 2 && value.len() > 30;
    let uppercase_or_digits = |rest: &str| rest.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    let aws_key_id = value.len() == 20
        && ["AKIA", "ASIA", "AGPA", "AROA"].iter().any(|p| value.starts_with(p))
        && uppercase_or_digits(value);
    // A crates.io API token: `cio` and 32 letters or digits.
    let crates_io = value.len() == 35 && value.starts_with("cio") && value.bytes().all(|b| b.is_ascii_alphanumeric());
    if jwt {
        return Some("jwt");
    }
    if aws_key_id {
        return Some("aws-access-key-id");
    }
    if crates_io {
        return Some("crates-io-token");
    }
    PREFIXES.iter().find(|(p, _)| value.starts_with(p) && value.len() > p.len() + 10).map(|(_, kind)| *kind)
}

/// True when the bytes hold something shaped like a JWT: `eyJ…`.`eyJ…`.`…`, a JOSE header
/// and a payload that both start with `{"`. Used to prove no token reached a file.
pub fn contains_jwt(bytes: &[u8]) -> bool {
    let is_b64 = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    bytes.windows(3).enumerate().filter(|(_, w)| w == b"eyJ").any(|(start, _)| {
        let run = bytes[start..].iter().take_while(|&&b| is_b64(b) || b == b'.').count();
        let mut parts = bytes[start..start + run].split(|&b| b == b'.');
        let (_header, payload, signature) = (parts.next(), parts.next(), parts.next());
        payload.is_some_and(|p| p.starts_with(b"eyJ")) && signature.is_some_and(|s| !s.is_empty())
    })
}

/// Scans every regular file under `dir` (symlinks not followed) for JWT-shaped bytes.
/// Returns how many files were read and which of them hold a token.
pub fn scan_for_jwts(dir: &std::path::Path) -> (usize, Vec<std::path::PathBuf>) {
    let (mut scanned, mut found) = (0, Vec::new());
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => pending.push(path),
                Ok(t) if t.is_file() => {
                    scanned += 1;
                    if std::fs::read(&path).is_ok_and(|b| contains_jwt(&b)) {
                        found.push(path);
                    }
                }
                _ => {}
            }
        }
    }
    (scanned, found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_loses_known_tokens_and_token_shapes() {
        let jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl"; // mayfly-guard: allow
        let text = format!("token={jwt}\nsecret s3cr3t-session-value and ghp_abcdefghijklmnopqrstuvwxyz.\nok\n");
        let shown = redact_tokens(&text, &["s3cr3t-session-value", "short"]);
        assert_eq!(
            shown,
            format!("token={REDACTED}\nsecret {REDACTED} and {REDACTED}.\nok\n"),
            "the trailing dot of a sentence is not part of the token"
        );
    }

    #[test]
    fn jwt_shapes_are_found_in_bytes() {
        assert!(contains_jwt(b"x=eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln\n")); // mayfly-guard: allow
        assert!(!contains_jwt(b"eyJhbGciOiJFUzI1NiJ9 is only a header"));
        assert!(!contains_jwt(b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0."));
    }

    #[test]
    fn control_characters_are_neutralised() {
        assert_eq!(sanitize_for_terminal("a\x1b[31mb\r\n"), "a\u{fffd}[31mb\u{fffd}\u{fffd}");
        assert_eq!(sanitize_keeping_lines("a\n\nb\x1b[2J\r\n"), "a\n\nb\u{fffd}[2J\u{fffd}\n");
    }
}
