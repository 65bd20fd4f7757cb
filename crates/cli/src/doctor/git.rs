//! git: the config files git reads (asked of git itself, `git config --file F --list
//! --null`, rather than parsed here), the plain-text credential files of the `store`
//! helper, and tokens left in config (`http.extraheader`, credentials in URLs).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mayfly_core::{Config, Env, Tool};

use super::finding::{Finding, Severity, at, replace};
use super::scope::{Contents, Scope, push_unique, read};
use super::urls::Url;

/// The first git whose answers to the credential protocol carry no password.
pub(crate) const EPHEMERAL_GIT: (u32, u32) = (2, 46);

/// One config entry and where it was set, in the order git reads them.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// The file, or `GIT_CONFIG_KEY_<n>` for one set in the environment.
    pub(crate) origin: String,
    /// As git prints it: section and name lowercased, subsection as written.
    pub(crate) key: String,
    /// `None` for a bare boolean (`[x] y` without `=`).
    pub(crate) value: Option<String>,
}

/// Every config entry git would read, and git's version.
pub(crate) struct GitConfig {
    pub(crate) entries: Vec<Entry>,
    /// `None` when git is not installed.
    pub(crate) version: Option<(u32, u32)>,
    pub(crate) version_text: String,
}

impl GitConfig {
    pub(crate) fn read(scope: &Scope) -> Self {
        let version_text = git(&scope.env)
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map_or_else(String::new, |o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        let version = parse_version(&version_text);
        let mut entries = Vec::new();
        if version.is_some() {
            for file in files(scope) {
                if let Some(list) = list(&scope.env, &file) {
                    let origin = file.display().to_string();
                    entries.extend(list.into_iter().map(|(key, value)| Entry { origin: origin.clone(), key, value }));
                }
            }
        }
        entries.extend(from_environment(&scope.env));
        Self { entries, version, version_text }
    }

    /// True when git's answers reach storage helpers without a password.
    pub(crate) fn ephemeral(&self) -> bool {
        self.version.is_some_and(|v| v >= EPHEMERAL_GIT)
    }
}

/// git, found on the caller's PATH, with nothing else from the caller's environment
/// (`GIT_CONFIG_*` there would add entries to every file read).
fn git(env: &Env) -> Command {
    let mut command = Command::new("git");
    command
        .env_clear()
        .env("PATH", env.get(mayfly_core::EnvVars::PATH).unwrap_or("/usr/local/bin:/usr/bin:/bin"))
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// `git version 2.47.3` (or `2.39.2 (Apple Git-143)`) -> (2, 47).
pub(crate) fn parse_version(text: &str) -> Option<(u32, u32)> {
    let number = text.strip_prefix("git version ")?.split_whitespace().next()?;
    let mut parts = number.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The files git reads, in its order: system, global (XDG, then `~/.gitconfig`, or
/// `GIT_CONFIG_GLOBAL` alone), then the current repository's.
fn files(scope: &Scope) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if scope.env.get(mayfly_core::EnvVars::GIT_CONFIG_NOSYSTEM).is_none() {
        files.push(scope.path_var("GIT_CONFIG_SYSTEM").unwrap_or_else(|| PathBuf::from("/etc/gitconfig")));
    }
    match scope.path_var("GIT_CONFIG_GLOBAL") {
        Some(global) => files.push(global),
        None => {
            files.push(scope.xdg_config().join("git/config"));
            files.push(scope.home.join(".gitconfig"));
        }
    }
    if let Some(dir) = repository(scope) {
        files.push(dir.join("config"));
    }
    files.into_iter().filter(|f| f.is_file()).collect()
}

/// The git directory of the repository around the current directory: `$GIT_DIR`, else
/// the nearest `.git` directory, or the one a `.git` file points to.
fn repository(scope: &Scope) -> Option<PathBuf> {
    if let Some(dir) = scope.path_var("GIT_DIR") {
        return Some(dir);
    }
    for dir in scope.upwards() {
        let dot_git = dir.join(".git");
        if dot_git.is_dir() {
            return Some(dot_git);
        }
        if let Contents::Text(text) = read(&dot_git)
            && let Some(target) = text.trim().strip_prefix("gitdir:")
        {
            let gitdir = dir.join(target.trim());
            // A linked worktree keeps its config in the main repository.
            return match read(&gitdir.join("commondir")) {
                Contents::Text(common) => Some(gitdir.join(common.trim())),
                _ => Some(gitdir),
            };
        }
    }
    None
}

fn list(env: &Env, file: &Path) -> Option<Vec<(String, Option<String>)>> {
    let output = git(env).args(["config", "--list", "--null", "--file"]).arg(file).output().ok()?;
    output.status.success().then(|| parse_list(&output.stdout))
}

/// `git config --list --null`: `key\nvalue\0`, or `key\0` for a bare boolean.
pub(crate) fn parse_list(bytes: &[u8]) -> Vec<(String, Option<String>)> {
    String::from_utf8_lossy(bytes)
        .split('\0')
        .filter(|item| !item.is_empty())
        .map(|item| match item.split_once('\n') {
            Some((key, value)) => (key.to_owned(), Some(value.to_owned())),
            None => (item.to_owned(), None),
        })
        .collect()
}

/// Entries set through `GIT_CONFIG_COUNT`, which git reads after every file.
fn from_environment(env: &Env) -> Vec<Entry> {
    let count = env.get(mayfly_core::EnvVars::GIT_CONFIG_COUNT).and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
    (0..count.min(1000))
        .filter_map(|i| {
            let key = env.get(&format!("GIT_CONFIG_KEY_{i}"))?;
            let value = env.get(&format!("GIT_CONFIG_VALUE_{i}")).unwrap_or_default();
            Some(Entry { origin: format!("GIT_CONFIG_KEY_{i}"), key: lowercase_key(key), value: Some(value.into()) })
        })
        .collect()
}

/// Section and name lowercased, the subsection kept, as `git config --list` prints keys.
fn lowercase_key(key: &str) -> String {
    match (key.find('.'), key.rfind('.')) {
        (Some(first), Some(last)) if first < last => {
            format!("{}{}{}", key[..first].to_lowercase(), &key[first..last], key[last..].to_lowercase())
        }
        _ => key.to_lowercase(),
    }
}

/// `section.<subsection>.name` -> (section, subsection, name).
pub(crate) fn split_key(key: &str) -> (&str, Option<&str>, &str) {
    let first = key.find('.').unwrap_or(key.len());
    let last = key.rfind('.').unwrap_or(key.len());
    if first < last {
        (&key[..first], Some(&key[first + 1..last]), &key[last + 1..])
    } else {
        (&key[..first], None, key.get(first + 1..).unwrap_or_default())
    }
}

/// A helper's name as git resolves it: `store` for `store --file x`, `git-credential-store`
/// or `/usr/lib/git-core/git-credential-store`.
pub(crate) fn helper_name(value: &str) -> &str {
    let program = value.split_whitespace().next().unwrap_or_default();
    let base = program.rsplit('/').next().unwrap_or(program);
    base.strip_prefix("git-credential-").unwrap_or(base)
}

/// Credentials git keeps on disk or in its config.
pub(crate) fn check(scope: &Scope, git: &GitConfig, config: Option<&Config>, findings: &mut Vec<Finding>) {
    let mut stores = vec![scope.home.join(".git-credentials"), scope.xdg_config().join("git/credentials")];
    for entry in &git.entries {
        let value = entry.value.as_deref().unwrap_or_default();
        let (section, subsection, name) = split_key(&entry.key);
        let host = subsection.and_then(Url::split).map(|u| u.host.to_owned());
        match (section, name) {
            ("credential", "helper") if helper_name(value) == "store" => {
                if let Some(file) = store_file(value) {
                    push_unique(&mut stores, scope.expand(file));
                }
                let fix =
                    format!("`store` keeps passwords in plain text: {}", replace(config, Tool::Git, host.as_deref()));
                let location = at(Path::new(&entry.origin), &display_key(&entry.key));
                findings.push(Finding::new(Severity::Warning, "git-credential-store", location, fix));
            }
            ("http", "extraheader") => {
                if let Some(credential) = authorization(value) {
                    let key = display_key(&entry.key);
                    let fix = format!(
                        "{} (`git config --unset-all '{key}'`; actions/checkout: `persist-credentials: false`)",
                        replace(config, Tool::Git, host.as_deref())
                    );
                    findings.push(Finding::secret(
                        "git-extraheader",
                        at(Path::new(&entry.origin), &key),
                        credential,
                        fix,
                    ));
                }
            }
            _ => {}
        }
        for url in [Some(value), subsection].into_iter().flatten().filter_map(Url::split) {
            if let Some(secret) = url.secret() {
                let fix =
                    format!("put the URL without credentials back; {}", replace(config, Tool::Git, Some(url.host)));
                let location = at(Path::new(&entry.origin), &display_key(&entry.key));
                findings.push(Finding::secret("git-url-credentials", location, &secret, fix));
            }
        }
    }
    stores.iter().for_each(|path| credential_store(path, config, findings));
}

/// `store --file PATH` or `store --file=PATH`.
fn store_file(value: &str) -> Option<&str> {
    let mut words = value.split_whitespace().skip(1);
    while let Some(word) = words.next() {
        if let Some(file) = word.strip_prefix("--file=") {
            return Some(file);
        }
        if word == "--file" {
            return words.next();
        }
    }
    None
}

/// A key as it may be shown: a subsection URL loses its userinfo.
fn display_key(key: &str) -> String {
    match split_key(key) {
        (section, Some(sub), name) => {
            let sub = Url::split(sub).map_or_else(|| sub.to_owned(), |u| u.display());
            format!("{section}.{sub}.{name}")
        }
        _ => key.to_owned(),
    }
}

/// The credential in an `Authorization: <scheme> <credential>` header (or GitLab's
/// `PRIVATE-TOKEN` / `JOB-TOKEN`), as the server receives it.
pub(crate) fn authorization(header: &str) -> Option<&str> {
    let (name, value) = header.split_once(':')?;
    let name = name.trim().to_ascii_lowercase();
    let value = value.trim();
    let credential = match name.as_str() {
        "authorization" | "proxy-authorization" => value.split_once(' ').map_or(value, |(_, c)| c.trim()),
        "private-token" | "job-token" | "deploy-token" => value,
        _ => return None,
    };
    (!credential.is_empty()).then_some(credential)
}

/// The `store` helper's file: one URL per line, the password in its userinfo.
fn credential_store(path: &Path, config: Option<&Config>, findings: &mut Vec<Finding>) {
    let text = match read(path) {
        Contents::Missing => return,
        Contents::Unreadable(why) => {
            return findings.push(Finding::unreadable(path, &format!("cannot read it: {why}")));
        }
        Contents::Text(text) => text,
    };
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Some(url) = Url::split(line) else { continue };
        if let Some(secret) = url.secret() {
            let fix = format!("{} (then drop `credential.helper = store`)", replace(config, Tool::Git, Some(url.host)));
            findings.push(Finding::secret("git-credentials", at(path, &url.display()), &secret, fix));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_output_and_keys() {
        let out = b"credential.https://Git.Example.com.helper\n\0credential.helper\nstore --file ~/x\0core.bare\0";
        let list = parse_list(out);
        assert_eq!(list[0], ("credential.https://Git.Example.com.helper".into(), Some(String::new())));
        assert_eq!(list[2], ("core.bare".into(), None));
        assert_eq!(split_key(&list[0].0), ("credential", Some("https://Git.Example.com"), "helper"));
        assert_eq!(split_key("credential.helper"), ("credential", None, "helper"));
        assert_eq!(
            lowercase_key("Credential.https://Git.Example.com.useHttpPath"),
            "credential.https://Git.Example.com.usehttppath"
        );
        assert_eq!(store_file("store --file ~/x"), Some("~/x"));
        assert_eq!(store_file("store --file=/tmp/c"), Some("/tmp/c"));
        assert_eq!(helper_name("/usr/lib/git-core/git-credential-store --file x"), "store");
        assert_eq!(helper_name("cache --timeout 60"), "cache");
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("git version 2.47.3"), Some((2, 47)));
        assert_eq!(parse_version("git version 2.39.2 (Apple Git-143)"), Some((2, 39)));
        assert_eq!(parse_version("git version 2.45.1.windows.1"), Some((2, 45)));
        assert_eq!(parse_version("nonsense"), None);
    }

    #[test]
    fn authorization_headers() {
        assert_eq!(authorization("AUTHORIZATION: basic eDphYmM="), Some("eDphYmM="));
        assert_eq!(authorization("Authorization: Bearer tok"), Some("tok"));
        assert_eq!(authorization("PRIVATE-TOKEN: glpat"), Some("glpat"));
        assert_eq!(authorization("X-Trace: 1"), None);
        assert_eq!(authorization("Authorization:"), None);
    }

    #[test]
    fn keys_are_shown_without_userinfo() {
        assert_eq!(display_key("url.https://u:secret@git.example/.insteadof"), "url.https://git.example/.insteadof");
        assert_eq!(display_key("http.extraheader"), "http.extraheader");
    }
}
