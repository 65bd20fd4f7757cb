//! npm: `_authToken`, `_auth` and `_password` in the `.npmrc` files npm reads (the
//! project's, upwards from the current directory, and the user's). A value that is a
//! `${VAR}` reference holds no secret: it is what mayfly's shim fills in.

use std::path::{Path, PathBuf};

use mayfly_core::{Config, Env, Tool};

use super::finding::{Finding, Severity, at, replace};
use super::scope::{Contents, Scope, push_unique, read};
use mayfly_core::ini::{Dialect, parse};

/// The keys npm sends as credentials.
const SECRET_KEYS: [&str; 3] = ["_authtoken", "_auth", "_password"];

fn files(scope: &Scope) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = scope.upwards().map(|dir| dir.join(".npmrc")).collect();
    let user = npm_config(&scope.env, "userconfig").map_or_else(|| scope.home.join(".npmrc"), |v| scope.expand(v));
    push_unique(&mut files, user);
    files
}

/// An `npm_config_<name>` variable; npm matches the prefix in any case.
fn npm_config<'a>(env: &'a Env, name: &str) -> Option<&'a str> {
    env.vars()
        .find(|(k, v)| {
            !v.is_empty()
                && k.get(..11).is_some_and(|p| p.eq_ignore_ascii_case("npm_config_"))
                && k.get(11..).is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .map(|(_, v)| v)
}

pub(crate) fn check(scope: &Scope, config: Option<&Config>, findings: &mut Vec<Finding>) {
    for path in files(scope) {
        match read(&path) {
            Contents::Missing => {}
            Contents::Unreadable(why) => findings.push(Finding::unreadable(&path, &format!("cannot read it: {why}"))),
            Contents::Text(text) => findings.extend(npmrc(&path, &text, config)),
        }
    }
}

pub(crate) fn npmrc(path: &Path, text: &str, config: Option<&Config>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for entry in parse(text, Dialect::Npm) {
        let name = entry.key.rsplit(':').next().unwrap_or(&entry.key).to_ascii_lowercase();
        if !SECRET_KEYS.contains(&name.as_str()) || entry.value.is_empty() {
            continue;
        }
        let location = at(path, &entry.key);
        if entry.value.contains("${") {
            let fix = "a reference to the environment, not a secret: fine (the shim sets it for npm alone)";
            findings.push(Finding::new(Severity::Info, "npm-token-reference", location, fix));
            continue;
        }
        let host = registry_host(&entry.key);
        findings.push(Finding::secret("npm-token", location, &entry.value, replace(config, Tool::Npm, host)));
    }
    findings
}

/// `//npm.example.com/scope/:_authToken` -> `npm.example.com`; a bare `_authToken` is for
/// the default registry, whose host the file does not say.
fn registry_host(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("//")?;
    let host = &rest[..rest.find('/')?];
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_tokens_are_secrets_references_are_not() {
        let text = "registry=https://registry.npmjs.org/\n//registry.npmjs.org/:_authToken=npm_abcdef\n//npm.example:4873/team/:_authToken=${NPM_TOKEN}\n_auth = \"dTpw\"\n//h/:username=u\n//h/:_password=cHc=\n";
        let found = npmrc(Path::new(".npmrc"), text, None);
        let kinds: Vec<_> = found.iter().map(|f| (f.kind, f.location.as_str())).collect();
        assert_eq!(
            kinds,
            [
                ("npm-token", ".npmrc: //registry.npmjs.org/:_authToken"),
                ("npm-token-reference", ".npmrc: //npm.example:4873/team/:_authToken"),
                ("npm-token", ".npmrc: _auth"),
                ("npm-token", ".npmrc: //h/:_password"),
            ]
        );
        assert_eq!(found[0].fingerprint, Some(mayfly_core::Fingerprint::of("npm_abcdef")));
        assert!(found[0].fix.contains("for registry.npmjs.org"), "{}", found[0].fix);
        assert_eq!(found[1].fingerprint, None);
    }

    #[test]
    fn hosts_from_nerf_darts() {
        assert_eq!(registry_host("//npm.example:4873/team/:_authToken"), Some("npm.example:4873"));
        assert_eq!(registry_host("//registry.npmjs.org/:_auth"), Some("registry.npmjs.org"));
        assert_eq!(registry_host("_authToken"), None);
    }

    #[test]
    fn npm_config_variables_match_in_any_case() {
        let env = Env::from_pairs([("NPM_CONFIG_USERCONFIG", "/x/.npmrc")]);
        assert_eq!(npm_config(&env, "userconfig"), Some("/x/.npmrc"));
        assert_eq!(npm_config(&Env::default(), "userconfig"), None);
    }
}
