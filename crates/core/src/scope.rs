//! Scopes: built once per request from a route's template and values that cannot change
//! a scope's grammar, and checked the same way where an exchange receives them.
//!
//! A scope list is OAuth's (RFC 6749 section 3.3): scope tokens separated by one space.
//! A value a tool supplies (a repository path, a package, image or crate name, a host)
//! could otherwise end one scope and start another (`org/app read:all`), widen one
//! (`org/*`), or open a placeholder (`{`). So every substituted value is checked against
//! the grammar of its place **before** substitution, and the rendered list is the one
//! value the cache key, the exchange request and the audit line all use.

use std::fmt;

use crate::{Operation, Target};

/// Longest scope token, in bytes.
pub const MAX_SCOPE_LEN: usize = 256;
/// Most scope tokens in one request.
pub const MAX_SCOPES: usize = 32;

/// Why a scope could not be built or was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A value from the tool does not fit its place in the scope.
    #[error("{place} `{value}` cannot go into a scope: {why}")]
    Value {
        /// `repository path`, `host` ...
        place: &'static str,
        /// The value, with control characters neutralised.
        value: String,
        /// Which character or rule.
        why: String,
    },
    /// The route's template is malformed (a config error).
    #[error("scope template `{template}`: {why}")]
    Template {
        /// The template.
        template: String,
        /// What is wrong.
        why: String,
    },
    /// A requested scope list breaks the grammar or the limits.
    #[error("{0}")]
    Requested(String),
}

/// One piece of a scope template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Path,
    Host,
    Operation,
}

/// A route's scope template: `repo:{path}:{operation}`, or several separated by spaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeTemplate {
    text: String,
    scopes: Vec<Vec<Piece>>,
}

impl ScopeTemplate {
    /// Parses a template from config. Literal text may not hold control characters,
    /// quotes, backslashes or stray braces; placeholders are `{path}`, `{host}` and
    /// `{operation}`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let bad = |why: String| Error::Template { template: crate::sanitize_for_terminal(text), why };
        let tokens: Vec<&str> = text.split(' ').collect();
        if text.is_empty() || tokens.iter().any(|t| t.is_empty()) {
            return Err(bad("scopes are separated by exactly one space, with none at either end".into()));
        }
        if tokens.len() > MAX_SCOPES {
            return Err(bad(format!("more than {MAX_SCOPES} scopes")));
        }
        let scopes = tokens.iter().map(|t| parse_pieces(t).map_err(&bad)).collect::<Result<_, _>>()?;
        Ok(Self { text: text.to_owned(), scopes })
    }

    /// How many scope tokens it renders: values cannot add any, so this is known at
    /// parse time.
    pub fn count(&self) -> usize {
        self.scopes.len()
    }

    /// True when the template binds the token to the repository or package path.
    pub fn mentions_path(&self) -> bool {
        self.scopes.iter().flatten().any(|p| *p == Piece::Path)
    }

    /// The scope for one request. Each value is checked before it is substituted; a
    /// request with no path gets `*` (every package of the registry) where `{path}` stands.
    /// A path is checked even where the template does not use it: it also names the
    /// package in a registry's own exchange URL.
    pub fn render(&self, target: &Target, operation: Operation) -> Result<Scope, Error> {
        let path = match target.path.as_deref() {
            Some(path) => {
                check_path(path)?;
                path
            }
            None => "*",
        };
        if self.scopes.iter().flatten().any(|p| *p == Piece::Host) {
            check_host(&target.host)?;
        }
        let mut rendered = Vec::with_capacity(self.scopes.len());
        for pieces in &self.scopes {
            let mut scope = String::new();
            for piece in pieces {
                scope.push_str(match piece {
                    Piece::Literal(text) => text,
                    Piece::Path => path,
                    Piece::Host => &target.host,
                    Piece::Operation => operation.as_str(),
                });
            }
            if scope.len() > MAX_SCOPE_LEN {
                return Err(Error::Value {
                    place: "scope",
                    value: format!("{}…", crate::clip(&scope, 40)),
                    why: format!("longer than {MAX_SCOPE_LEN} bytes"),
                });
            }
            rendered.push(scope);
        }
        Ok(Scope(rendered.join(" ")))
    }
}

impl fmt::Display for ScopeTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn parse_pieces(token: &str) -> Result<Vec<Piece>, String> {
    if let Some(c) = token.chars().find(|&c| c.is_control() || c.is_whitespace() || matches!(c, '"' | '\\')) {
        return Err(format!("{} is not allowed", describe(c)));
    }
    let mut pieces = Vec::new();
    let mut rest = token;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err("`}` without `{`".into());
        }
        let close = rest[open..].find('}').map(|i| open + i).ok_or("`{` without `}`")?;
        if open > 0 {
            pieces.push(Piece::Literal(rest[..open].to_owned()));
        }
        pieces.push(match &rest[open + 1..close] {
            "path" => Piece::Path,
            "host" => Piece::Host,
            "operation" => Piece::Operation,
            other => {
                return Err(format!(
                    "unknown placeholder `{{{}}}` ({{path}}, {{host}} or {{operation}})",
                    crate::sanitize_for_terminal(other)
                ));
            }
        });
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Literal(rest.to_owned()));
    }
    Ok(pieces)
}

/// A rendered scope list: tokens of at most [`MAX_SCOPE_LEN`] bytes, no whitespace
/// inside any, joined by single spaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope(String);

impl Scope {
    /// The list as sent: tokens separated by one space.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Characters a repository, package, crate or image path may bring into a scope: ASCII
/// letters and digits, `.`, `_`, `~`, `@`, `+`, `-`, with `/` only between non-empty
/// segments. Whitespace of any kind, `:`, `*`, `?`, braces, `%` (an encoding the tool
/// did not undo), quotes, control characters and anything outside ASCII (Unicode
/// separators, look-alikes) are refused.
pub fn check_path(path: &str) -> Result<(), Error> {
    let refuse =
        |why: String| Error::Value { place: "repository path", value: crate::sanitize_for_terminal(path), why };
    if let Some(c) = path.chars().find(|&c| !(c.is_ascii_alphanumeric() || "._~@+-/".contains(c))) {
        return Err(refuse(format!("{} could end, start or widen a scope", describe(c))));
    }
    if path.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(refuse("empty, `.` or `..` segment".into()));
    }
    Ok(())
}

/// An OCI repository name as the distribution spec writes it: `/`-separated components
/// of lowercase letters and digits joined by one `.`, one or two `_`, or any number of
/// `-`; at most 255 bytes. Nothing is decoded: an escape, an upper-case letter or a `..`
/// is not a name. The proxy and `mayfly-sts` both hold names to this one grammar.
pub fn is_oci_repository_name(name: &str) -> bool {
    let component = |c: &str| {
        let bytes = c.as_bytes();
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else { return false };
        if !alnum(first) || !alnum(last) {
            return false;
        }
        // Between alphanumeric runs: `.`, `_`, `__` or a run of `-`.
        c.split(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            .all(|sep| sep.is_empty() || sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-'))
    };
    !name.is_empty() && name.len() <= 255 && name.split('/').all(component)
}

/// A host as it may stand in a scope: DNS labels of ASCII letters, digits, `-` and `_`,
/// and at most one `:` that starts a numeric port. IPv6 literals are refused: their
/// colons would read as scope separators.
pub fn check_host(host: &str) -> Result<(), Error> {
    let refuse = |why: String| Error::Value { place: "host", value: crate::sanitize_for_terminal(host), why };
    let (name, port) = match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    if let Some(c) = name.chars().find(|&c| !(c.is_ascii_alphanumeric() || "-_.".contains(c))) {
        return Err(refuse(format!("{} is not part of a host name here", describe(c))));
    }
    if name.is_empty() || name.split('.').any(str::is_empty) {
        return Err(refuse("empty label".into()));
    }
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(refuse("`:` is allowed only before a numeric port".into()));
    }
    Ok(())
}

/// Splits a requested scope list (an exchange's `scope` parameter) and checks each token:
/// single spaces between tokens, at most [`MAX_SCOPES`] tokens of at most
/// [`MAX_SCOPE_LEN`] bytes, each made of `:`-separated parts of ASCII letters, digits and
/// `._~@+=,/-`, no part or `/` segment empty, and `*` only as a whole part or segment
/// (every value there, never a pattern inside a name).
pub fn parse_requested(list: &str) -> Result<Vec<&str>, Error> {
    if list.is_empty() {
        return Ok(Vec::new());
    }
    let tokens: Vec<&str> = list.split(' ').collect();
    if tokens.len() > MAX_SCOPES {
        return Err(Error::Requested(format!("more than {MAX_SCOPES} scopes")));
    }
    if tokens.iter().any(|t| t.is_empty()) {
        return Err(Error::Requested("scopes are separated by exactly one space".into()));
    }
    for token in &tokens {
        check_requested(token)?;
    }
    Ok(tokens)
}

fn check_requested(token: &str) -> Result<(), Error> {
    let shown = || crate::sanitize_for_terminal(crate::clip(token, 64));
    let refuse = |why: String| Error::Requested(format!("scope `{}`: {why}", shown()));
    if token.len() > MAX_SCOPE_LEN {
        return Err(refuse(format!("longer than {MAX_SCOPE_LEN} bytes")));
    }
    if let Some(c) = token.chars().find(|&c| !(c.is_ascii_alphanumeric() || "._~@+=,/-:*".contains(c))) {
        return Err(refuse(format!("{} is not allowed in a scope", describe(c))));
    }
    for part in token.split(':') {
        if part.is_empty() || part.split('/').any(str::is_empty) {
            return Err(refuse("empty part or segment".into()));
        }
        if part.split('/').any(|segment| segment.contains('*') && segment != "*") {
            return Err(refuse("`*` may only stand for a whole part or segment".into()));
        }
    }
    Ok(())
}

/// `` `x` `` for a visible character, its code point for anything else.
fn describe(c: char) -> String {
    if c.is_ascii_graphic() { format!("`{c}`") } else { format!("U+{:04X}", u32::from(c)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tool;

    #[test]
    fn oci_repository_names_follow_the_distribution_grammar() {
        for good in ["hello", "team/app", "a.b/c_d/e__f/g--h", "0/1", &"a".repeat(255)] {
            assert!(is_oci_repository_name(good), "{good}");
        }
        for bad in [
            "",
            "Team/app",
            "team//app",
            "/app",
            "app/",
            "a..b",
            "a___b",
            "-a",
            "a-",
            "a b",
            "a:b",
            "a@b",
            "a%2fb",
            "é",
        ] {
            assert!(!is_oci_repository_name(bad), "{bad:?}");
        }
        assert!(!is_oci_repository_name(&"a".repeat(256)));
    }

    fn target(path: Option<&str>) -> Target {
        Target {
            tool: Tool::Git,
            protocol: "https".into(),
            host: "git.example:8443".into(),
            path: path.map(Into::into),
        }
    }

    #[test]
    fn renders_each_placeholder_once() {
        let t = ScopeTemplate::parse("repo:{path}:{operation} host:{host}").unwrap();
        let scope = t.render(&target(Some("org/app")), Operation::Write).unwrap();
        assert_eq!(scope.as_str(), "repo:org/app:write host:git.example:8443");
        assert_eq!(t.render(&target(None), Operation::Read).unwrap().as_str(), "repo:*:read host:git.example:8443");
        assert!(t.mentions_path());
    }

    #[test]
    fn values_that_could_change_the_grammar_are_refused() {
        let t = ScopeTemplate::parse("repo:{path}:read").unwrap();
        for path in [
            "org/a b",
            "org/a\tb",
            "org/a\u{a0}b",
            "org/a\u{2028}b",
            "org/a\u{3000}b",
            "org/app:write",
            "org/*",
            "org/a?",
            "org/{path}",
            "org/a}b",
            "org/a%20b",
            "org/a\"b",
            "org/a\u{0}b",
            "org/аpp",
        ] {
            let error = t.render(&target(Some(path)), Operation::Read).unwrap_err();
            assert!(matches!(error, Error::Value { place: "repository path", .. }), "{path:?}: {error}");
        }
        for host in ["[::1]:443", "h:x", "h:1:2", "h..x", "h:123456"] {
            let t = ScopeTemplate::parse("cluster:{host}").unwrap();
            let mut tgt = target(None);
            tgt.host = host.into();
            assert!(t.render(&tgt, Operation::Read).is_err(), "{host:?}");
        }
    }

    #[test]
    fn names_real_tools_use_pass() {
        let t = ScopeTemplate::parse("npm:{path}:{operation}").unwrap();
        for path in ["@scope/pkg", "org/app.rs", "my_crate-2", "~user/repo", "a+b"] {
            assert!(t.render(&target(Some(path)), Operation::Read).is_ok(), "{path}");
        }
    }

    #[test]
    fn bad_templates_are_config_errors() {
        for bad in ["", "a  b", " a", "repo:{pth}", "repo:{path", "repo:}x", "a\"b", "a\\b"] {
            assert!(ScopeTemplate::parse(bad).is_err(), "{bad:?}");
        }
        let many = vec!["a"; MAX_SCOPES + 1].join(" ");
        assert!(ScopeTemplate::parse(&many).is_err());
    }

    #[test]
    fn requested_lists_are_single_spaced_tokens_within_limits() {
        assert_eq!(parse_requested("repo:org/app:read oci:h:5000/*:read").unwrap().len(), 2);
        assert!(parse_requested("").unwrap().is_empty());
        for bad in [
            "a  b",
            " a",
            "a ",
            "a\tb",
            "a\nb",
            "repo:org/a*:read",
            "repo:*x:read",
            "repo::read",
            "repo:org//a:read",
            "repo:{x}:read",
            "repo:a%20b:read",
            "repo:é:read",
        ] {
            assert!(parse_requested(bad).is_err(), "{bad:?}");
        }
        assert!(parse_requested(&"a".repeat(MAX_SCOPE_LEN + 1)).is_err());
        assert!(parse_requested(&vec!["a"; MAX_SCOPES + 1].join(" ")).is_err());
        assert!(parse_requested(&vec!["a"; MAX_SCOPES].join(" ")).is_ok());
    }
}
