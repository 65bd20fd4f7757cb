//! The GitHub CLI: OAuth tokens in `hosts.yml`, where `gh auth login` puts them when no
//! system keyring is available (and where git's `gh auth git-credential` reads them).

use std::path::Path;

use mayfly_core::{Config, Tool};
use serde_json::Value;

use super::finding::{Finding, at, replace};
use super::scope::{Contents, Scope, read};

pub(crate) fn check(scope: &Scope, config: Option<&Config>, findings: &mut Vec<Finding>) {
    let dir = scope.path_var("GH_CONFIG_DIR").unwrap_or_else(|| scope.xdg_config().join("gh"));
    let path = dir.join("hosts.yml");
    match read(&path) {
        Contents::Missing => {}
        Contents::Unreadable(why) => findings.push(Finding::unreadable(&path, &format!("cannot read it: {why}"))),
        Contents::Text(text) => match serde_norway::from_str::<Value>(&text) {
            Ok(document) => findings.extend(tokens(&path, &document, config)),
            Err(_) => findings.push(Finding::unreadable(&path, "not valid YAML")),
        },
    }
}

/// `<host>: {oauth_token, users: {<user>: {oauth_token}}}`.
pub(crate) fn tokens(path: &Path, document: &Value, config: Option<&Config>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (host, entry) in document.as_object().into_iter().flatten() {
        let fix = format!(
            "`gh auth logout --hostname {host}` (gh keeps tokens in the system keyring when it has one); for git, {}",
            replace(config, Tool::Git, Some(host))
        );
        let mut tokens = vec![(format!("{host}.oauth_token"), entry.get("oauth_token"))];
        for (user, account) in entry.get("users").and_then(Value::as_object).into_iter().flatten() {
            tokens.push((format!("{host}.users.{user}.oauth_token"), account.get("oauth_token")));
        }
        for (key, token) in tokens {
            if let Some(token) = token.and_then(Value::as_str).filter(|t| !t.is_empty()) {
                findings.push(Finding::secret("gh-token", at(path, &key), token, fix.clone()));
            }
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_user_tokens() {
        let yaml = "github.com:\n    git_protocol: https\n    users:\n        octo:\n            oauth_token: gho_one\n    oauth_token: gho_one\n    user: octo\nghe.example:\n    user: x\n";
        let document: Value = serde_norway::from_str(yaml).unwrap();
        let found = tokens(Path::new("hosts.yml"), &document, None);
        let mut locations: Vec<_> = found.iter().map(|f| f.location.as_str()).collect();
        locations.sort_unstable();
        assert_eq!(locations, ["hosts.yml: github.com.oauth_token", "hosts.yml: github.com.users.octo.oauth_token"]);
    }
}
