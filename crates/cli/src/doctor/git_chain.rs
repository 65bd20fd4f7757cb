//! Whether git asks mayfly, and mayfly alone, for the hosts routes serve: the helper list
//! git builds for a URL (every matching `credential.helper` in file order, an empty value
//! clearing what came before), the helpers around mayfly's in it, and git's version.

use std::collections::BTreeSet;
use std::path::Path;

use mayfly_core::{Config, Tool, normalize_host};

use super::finding::{Finding, Severity, at};
use super::git::{EPHEMERAL_GIT, Entry, GitConfig, helper_name, split_key};
use super::urls::Url;

/// Helpers that keep what git approves (`store` on disk, the rest in a keyring or memory).
const STORAGE: [&str; 8] =
    ["store", "cache", "osxkeychain", "libsecret", "gnome-keyring", "manager", "manager-core", "wincred"];

pub(crate) fn check(git: &GitConfig, config: Option<&Config>, findings: &mut Vec<Finding>) {
    let routes: Vec<_> = config.map(|c| c.routes.iter().filter(|r| r.tool == Tool::Git).collect()).unwrap_or_default();
    check_version(git, !routes.is_empty(), findings);
    if git.version.is_none() {
        return;
    }
    let hosts: BTreeSet<(&str, &str)> = routes.iter().map(|r| (r.protocol.as_str(), r.host.as_str())).collect();
    for (protocol, host) in hosts {
        let url = format!("{protocol}://{host}");
        let helpers = helpers(&git.entries, protocol, host);
        let Some(ours) = helpers.iter().position(|h| is_mayfly(h.value.as_deref().unwrap_or_default())) else {
            let fix = format!(
                "git does not ask mayfly for {url}; `mayfly setup` wires the helper, or run the command under `mayfly exec`"
            );
            findings.push(Finding::new(Severity::Info, "git-not-wired", url, fix));
            continue;
        };
        for helper in &helpers[..ours] {
            findings.push(before(git, helper, &url));
        }
        for helper in helpers[ours + 1..].iter().filter(|h| is_storage(h)) {
            findings.push(after(git, helper, &url));
        }
        let needs_path = routes.iter().any(|r| r.protocol == protocol && r.host == host && r.needs_path());
        if needs_path && !use_http_path(&git.entries, protocol, host) {
            let fix = format!(
                "git sends no repository path, so mayfly refuses: `git config --global credential.{url}.useHttpPath true` (`mayfly setup` does)"
            );
            findings.push(Finding::new(Severity::Warning, "git-use-http-path-missing", url, fix));
        }
    }
}

fn check_version(git: &GitConfig, routed: bool, findings: &mut Vec<Finding>) {
    match git.version {
        None => findings.push(Finding::new(
            Severity::Info,
            "git-missing",
            "git",
            "git is not installed (or not on PATH): its config was not checked",
        )),
        Some(version) if version < EPHEMERAL_GIT => {
            let fix = format!(
                "git {}.{} takes mayfly's tokens as passwords, which storage helpers keep: install git {}.{} or newer",
                version.0, version.1, EPHEMERAL_GIT.0, EPHEMERAL_GIT.1
            );
            let severity = if routed { Severity::Warning } else { Severity::Info };
            findings.push(Finding::new(severity, "git-too-old", git.version_text.clone(), fix));
        }
        Some(_) => {}
    }
}

/// A helper git asks first: it answers with what it has (a long-lived credential), and a
/// storage helper also keeps the token git approves.
fn before(git: &GitConfig, helper: &Entry, url: &str) -> Finding {
    let name = helper_name(helper.value.as_deref().unwrap_or_default());
    let keeps = is_storage(helper) && !git.ephemeral();
    let fix = format!(
        "`{name}` is asked before mayfly for {url}{}: add an empty `credential.{url}.helper` entry before mayfly's (`mayfly setup` does)",
        if keeps { " and keeps the token git approves" } else { "" }
    );
    let severity = if keeps { Severity::Error } else { Severity::Warning };
    Finding::new(severity, "git-helper-before-mayfly", at(Path::new(&helper.origin), &helper.key), fix)
}

/// A storage helper after mayfly's: git hands it the token to keep, unless the answer is
/// ephemeral (git 2.46+), when it gets no password.
fn after(git: &GitConfig, helper: &Entry, url: &str) -> Finding {
    let name = helper_name(helper.value.as_deref().unwrap_or_default());
    let version = &git.version_text;
    let (severity, why) = if git.ephemeral() {
        (Severity::Warning, format!("{version} gives it no password (mayfly's answers are ephemeral), older git would"))
    } else {
        (Severity::Error, format!("{version} hands it mayfly's token to keep"))
    };
    let fix = format!(
        "`{name}` comes after mayfly for {url} ({why}): remove it, or set it before the empty `credential.{url}.helper` entry"
    );
    Finding::new(severity, "git-storage-helper-after-mayfly", at(Path::new(&helper.origin), &helper.key), fix)
}

fn is_mayfly(value: &str) -> bool {
    helper_name(value) == "mayfly" || value.contains("git-credential-mayfly")
}

fn is_storage(helper: &Entry) -> bool {
    STORAGE.contains(&helper_name(helper.value.as_deref().unwrap_or_default()))
}

/// The helpers git runs for the URL, in order: matching entries, an empty one clearing
/// the list.
pub(crate) fn helpers<'a>(entries: &'a [Entry], protocol: &str, host: &str) -> Vec<&'a Entry> {
    let mut list = Vec::new();
    for entry in entries {
        let (section, subsection, name) = split_key(&entry.key);
        if section != "credential" || name != "helper" || !matches(subsection, protocol, host) {
            continue;
        }
        match entry.value.as_deref() {
            None | Some("") => list.clear(),
            Some(_) => list.push(entry),
        }
    }
    list
}

/// `credential.useHttpPath` for the URL: a URL-specific entry wins over a general one.
fn use_http_path(entries: &[Entry], protocol: &str, host: &str) -> bool {
    let mut general = None;
    let mut specific = None;
    for entry in entries {
        let (section, subsection, name) = split_key(&entry.key);
        if section != "credential" || name != "usehttppath" || !matches(subsection, protocol, host) {
            continue;
        }
        let value =
            entry.value.as_deref().is_none_or(|v| ["true", "yes", "on", "1"].contains(&v.to_lowercase().as_str()));
        *(if subsection.is_some() { &mut specific } else { &mut general }) = Some(value);
    }
    specific.or(general).unwrap_or(false)
}

/// True when a `credential.<url>` subsection applies to the host: same scheme, the same
/// host after normalisation (a `*` standing for one label, as git allows). A path in the
/// subsection is ignored: the entry applies to some repositories of the host.
fn matches(subsection: Option<&str>, protocol: &str, host: &str) -> bool {
    let Some(subsection) = subsection else { return true };
    let Some(url) = Url::split(subsection) else { return false };
    if !url.scheme.eq_ignore_ascii_case(protocol) {
        return false;
    }
    if url.host.contains('*') {
        let pattern = url.host.to_ascii_lowercase();
        let (pattern, host) = (pattern.split('.').collect::<Vec<_>>(), host.split('.').collect::<Vec<_>>());
        return pattern.len() == host.len() && pattern.iter().zip(&host).all(|(p, h)| glob(p, h));
    }
    normalize_host(protocol, url.host).is_ok_and(|h| h == host)
}

/// `*` matches any run of characters within one label.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((prefix, rest)) => {
            text.starts_with(prefix)
                && (prefix.len()..=text.len()).any(|i| text.is_char_boundary(i) && glob(rest, &text[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: &str) -> Entry {
        Entry { origin: "f".into(), key: key.into(), value: Some(value.into()) }
    }

    fn names(list: &[&Entry]) -> Vec<String> {
        list.iter().map(|e| e.value.clone().unwrap_or_default()).collect()
    }

    #[test]
    fn an_empty_entry_resets_and_other_hosts_do_not_count() {
        let entries = [
            entry("credential.helper", "store"),
            entry("credential.https://Git.Example:443.helper", ""),
            entry("credential.https://git.example.helper", "/bin/git-credential-mayfly"),
            entry("credential.https://other.example.helper", "cache"),
            entry("credential.http://git.example.helper", "cache"),
            entry("credential.helper", "cache --timeout 60"),
        ];
        let list = helpers(&entries, "https", "git.example");
        assert_eq!(names(&list), ["/bin/git-credential-mayfly", "cache --timeout 60"]);
        assert!(is_mayfly(list[0].value.as_deref().unwrap()));
        assert!(is_storage(list[1]));
    }

    #[test]
    fn wildcards_match_one_label() {
        assert!(matches(Some("https://*.example.com"), "https", "git.example.com"));
        assert!(!matches(Some("https://*.example.com"), "https", "a.b.example.com"));
        assert!(matches(Some("https://g*t.example.com/org"), "https", "git.example.com"));
        assert!(!matches(Some("not a url"), "https", "git.example.com"));
        assert!(matches(None, "https", "anything"));
    }

    #[test]
    fn use_http_path_prefers_the_host_entry() {
        let entries =
            [entry("credential.usehttppath", "false"), entry("credential.https://git.example.usehttppath", "true")];
        assert!(use_http_path(&entries, "https", "git.example"));
        assert!(!use_http_path(&entries, "https", "other.example"));
        let bare = [Entry { origin: "f".into(), key: "credential.usehttppath".into(), value: None }];
        assert!(use_http_path(&bare, "https", "x"));
    }
}
