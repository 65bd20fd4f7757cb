//! The `key = value` files: `.npmrc` (npm's `ini`), and `.pypirc` and AWS's
//! `credentials` (Python's `configparser`). Only keys and values are needed, so comments,
//! sections and continuation lines are all this understands.

/// Which reader wrote the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// npm: `=` only (keys such as `//host/:_authToken` hold colons), values may be quoted.
    Npm,
    /// configparser: `=` or `:`, and an indented line continues the previous value.
    Python,
}

/// One `key = value` line and the section it sits in.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    /// The `[section]` above it, if any.
    pub section: Option<String>,
    /// The key, trimmed.
    pub key: String,
    /// The value, trimmed (and unquoted, for npm).
    pub value: String,
}

/// Every `key = value` line of a file, in order.
pub fn parse(text: &str, dialect: Dialect) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut section = None;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if dialect == Dialect::Python && raw.starts_with([' ', '\t']) && !entries.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.trim().to_owned());
            continue;
        }
        let split = match dialect {
            Dialect::Npm => line.split_once('='),
            Dialect::Python => line.find(['=', ':']).map(|i| (&line[..i], &line[i + 1..])),
        };
        let Some((key, value)) = split else { continue };
        let value = value.trim();
        let value = match dialect {
            Dialect::Npm => unquote(value),
            Dialect::Python => value,
        };
        entries.push(Entry { section: section.clone(), key: key.trim().to_owned(), value: value.to_owned() });
    }
    entries
}

/// npm's `ini` drops one pair of matching quotes around a value.
fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value.strip_prefix(quote).and_then(|v| v.strip_suffix(quote)) {
            return inner;
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str, dialect: Dialect) -> Vec<(Option<String>, String, String)> {
        parse(text, dialect).into_iter().map(|e| (e.section, e.key, e.value)).collect()
    }

    #[test]
    fn npm_keys_keep_their_colons_and_values_lose_quotes() {
        let text = "; comment\n# another\n//registry.npmjs.org/:_authToken = \"abc=def\"\n@org:registry=https://r.example/\nnot a pair\n";
        assert_eq!(
            pairs(text, Dialect::Npm),
            vec![
                (None, "//registry.npmjs.org/:_authToken".into(), "abc=def".into()),
                (None, "@org:registry".into(), "https://r.example/".into()),
            ]
        );
    }

    #[test]
    fn python_sections_colons_and_continuations() {
        let text =
            "[distutils]\nindex-servers =\n    pypi\n    other = x\n[pypi]\nusername: __token__\npassword = p:w=d\n";
        assert_eq!(
            pairs(text, Dialect::Python),
            vec![
                (Some("distutils".into()), "index-servers".into(), String::new()),
                (Some("pypi".into()), "username".into(), "__token__".into()),
                (Some("pypi".into()), "password".into(), "p:w=d".into()),
            ]
        );
    }
}
