//! Shims for tools with no credential hook: npm, pnpm, yarn and twine.
//!
//! A shim found first on `PATH` works out what the tool is about to do (install or
//! publish, and which package) and on which registry, gets a token for exactly that, and
//! execs the real tool with the token in the child's environment only, in the variable
//! the tool reads for that registry only (`npm_config_//HOST/PATH/:_authToken`, which npm
//! sends to that host alone; twine's password with `TWINE_REPOSITORY_URL` pinned to the
//! URL the token is for): never in argv, never in a file, never in the caller's
//! environment. Commands that do not talk to a registry (`npm test`, `npm run`) and
//! registries with no route run the real tool untouched.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::{Env, Issued, Operation, Process, Target, Tool};

/// The npm registry when nothing names another.
const NPM_REGISTRY: &str = "https://registry.npmjs.org/";
/// PyPI's upload URL when nothing names another.
const PYPI_UPLOAD: &str = "https://upload.pypi.org/legacy/";

/// The tools a shim stands in for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// npm.
    Npm,
    /// pnpm (reads npm's configuration).
    Pnpm,
    /// yarn, classic (npm's configuration) and berry (`YARN_NPM_*`).
    Yarn,
    /// twine, PyPI's uploader.
    Twine,
}

impl Family {
    /// Every shimmed tool, by the name the shim is installed as.
    pub const ALL: [(&'static str, Self); 4] =
        [("npm", Self::Npm), ("pnpm", Self::Pnpm), ("yarn", Self::Yarn), ("twine", Self::Twine)];

    /// The family a shim invoked as `name` stands in for.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, f)| *f == self).map_or("npm", |(n, _)| n)
    }

    /// The tool routes name for it.
    pub fn tool(self) -> Tool {
        if self == Self::Twine { Tool::Pypi } else { Tool::Npm }
    }
}

/// The shimmed tools worth a shim: those with a route that are installed on `path`
/// (found without the shim at `shim`).
pub fn wanted(config: &crate::Config, path: &str, shim: &Path) -> Vec<&'static str> {
    Family::ALL
        .iter()
        .filter(|(name, family)| {
            config.routes.iter().any(|r| r.tool == family.tool()) && find_real(name, path, shim).is_some()
        })
        .map(|(name, _)| *name)
        .collect()
}

/// What the command needs a token for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Need {
    /// The registry (npm) or upload URL (twine).
    pub registry: url::Url,
    /// What the command does with it.
    pub operation: Operation,
    /// The package, when publishing.
    pub package: Option<String>,
}

/// Works out what a command line needs; `Ok(None)` when it needs no token.
pub fn need(family: Family, args: &[String], env: &Env, cwd: &Path) -> Result<Option<Need>, String> {
    match family {
        Family::Twine => twine_need(args, env),
        _ => npm_need(family, args, env, cwd),
    }
}

/// Positional arguments: everything not a flag and not a flag's value (`--registry X`).
fn positionals(args: &[String]) -> Vec<&str> {
    const VALUED: [&str; 8] =
        ["--registry", "--tag", "--access", "--otp", "--workspace", "-w", "--repository-url", "-r"];
    let mut out = Vec::new();
    let mut skip = false;
    for arg in args {
        if std::mem::take(&mut skip) {
            continue;
        }
        if VALUED.contains(&arg.as_str()) {
            skip = true;
        } else if !arg.starts_with('-') {
            out.push(arg.as_str());
        }
    }
    out
}

/// `--name VALUE` or `--name=VALUE`.
fn flag<'a>(args: &'a [String], names: &[&str]) -> Option<&'a str> {
    args.iter().enumerate().find_map(|(i, arg)| {
        names.iter().find_map(|name| {
            if arg == name {
                args.get(i + 1).map(String::as_str)
            } else {
                arg.strip_prefix(name).and_then(|rest| rest.strip_prefix('='))
            }
        })
    })
}

/// Subcommands (and their aliases) that read from the registry; anything else that is not
/// a publish runs without a token, so scripts (`npm test`, `npm run build`) never see one.
const NPM_READS: [&str; 24] = [
    "install",
    "i",
    "in",
    "ci",
    "add",
    "update",
    "up",
    "upgrade",
    "view",
    "info",
    "show",
    "v",
    "outdated",
    "audit",
    "pack",
    "exec",
    "x",
    "dlx",
    "fetch",
    "dist-tag",
    "dist-tags",
    "owner",
    "access",
    "search",
];

fn npm_need(family: Family, args: &[String], env: &Env, cwd: &Path) -> Result<Option<Need>, String> {
    let words = positionals(args);
    // `yarn npm publish` (berry) and `npm publish` alike; a bare `yarn` installs.
    let words: Vec<&str> =
        if family == Family::Yarn && words.first() == Some(&"npm") { words[1..].to_vec() } else { words };
    let publishing = matches!(words.first(), Some(&"publish") | Some(&"unpublish"));
    let reading = match words.first() {
        None => family == Family::Yarn,
        Some(word) => NPM_READS.contains(word),
    };
    if !publishing && !reading {
        return Ok(None);
    }
    let manifest = publishing
        .then(|| words.get(1).map_or_else(|| cwd.to_owned(), |d| cwd.join(d)))
        .filter(|dir| dir.is_dir())
        .and_then(|dir| read_manifest(&dir.join("package.json")));
    // A tarball or a `pkg@version` names no directory: no package, and a route that binds
    // tokens to packages refuses it.
    let package = manifest.as_ref().and_then(|m| m["name"].as_str().map(str::to_owned)).filter(|_| publishing);
    let publish_registry = manifest.as_ref().and_then(|m| m["publishConfig"]["registry"].as_str().map(str::to_owned));
    let registry = npm_registry(family, args, env, cwd, package.as_deref(), publish_registry.filter(|_| publishing))?;
    let operation = if publishing { Operation::Publish } else { Operation::Read };
    Ok(Some(Need { registry, operation, package }))
}

fn read_manifest(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// The registry npm would use: `--registry`, `npm_config_registry` (any case), the
/// package's `publishConfig.registry` when publishing, a scope's registry, then
/// `registry=` in the project's and the user's `.npmrc`, then npmjs.
fn npm_registry(
    family: Family,
    args: &[String],
    env: &Env,
    cwd: &Path,
    package: Option<&str>,
    publish_config: Option<String>,
) -> Result<url::Url, String> {
    let scope = package.and_then(|p| p.strip_prefix('@')).and_then(|p| p.split_once('/')).map(|(s, _)| s);
    let from_env =
        env.vars().find(|(k, _)| k.eq_ignore_ascii_case("npm_config_registry")).map(|(_, v)| v.to_owned()).or_else(
            || (family == Family::Yarn).then(|| env.get("YARN_NPM_REGISTRY_SERVER").map(str::to_owned)).flatten(),
        );
    let from_files = || {
        let files =
            [project_root(cwd).map(|d| d.join(".npmrc")), env.path(crate::EnvVars::HOME).map(|h| h.join(".npmrc"))];
        let keys: Vec<String> =
            scope.map(|s| format!("@{s}:registry")).into_iter().chain(["registry".into()]).collect();
        keys.iter().find_map(|key| files.iter().flatten().find_map(|f| npmrc_value(f, key)))
    };
    let text = flag(args, &["--registry"]).map(str::to_owned).or(from_env).or(publish_config).or_else(from_files);
    let text = text.map(|t| expand_vars(&t, env));
    let text = text.unwrap_or_else(|| NPM_REGISTRY.to_owned());
    let mut url = crate::target::strict_url(&text)
        .ok_or_else(|| format!("registry `{}` is not a URL", crate::sanitize_for_terminal(&text)))?;
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// `${VAR}` and `${VAR?}` as npm expands them in `.npmrc` values.
fn expand_vars(text: &str, env: &Env) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let Some(end) = rest[start..].find('}') else { break };
        out.push_str(&rest[..start]);
        let name = &rest[start + 2..start + end];
        out.push_str(env.get(name.trim_end_matches('?')).unwrap_or(""));
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

/// The nearest directory at or above `cwd` with a package.json.
fn project_root(cwd: &Path) -> Option<PathBuf> {
    cwd.ancestors().find(|d| d.join("package.json").is_file()).map(Path::to_owned)
}

/// `key = value` from an ini-style `.npmrc` (comments `;` and `#`).
fn npmrc_value(path: &Path, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().map(str::trim).filter(|l| !l.starts_with(';') && !l.starts_with('#')).find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn twine_need(args: &[String], env: &Env) -> Result<Option<Need>, String> {
    let words = positionals(args);
    if words.first() != Some(&"upload") {
        return Ok(None);
    }
    let named = flag(args, &["--repository", "-r"]).or_else(|| env.get("TWINE_REPOSITORY"));
    let text = match (flag(args, &["--repository-url"]).or_else(|| env.get("TWINE_REPOSITORY_URL")), named) {
        (Some(url), _) => url.to_owned(),
        (None, None | Some("pypi")) => PYPI_UPLOAD.to_owned(),
        (None, Some("testpypi")) => "https://test.pypi.org/legacy/".to_owned(),
        // Its URL is in a .pypirc the shim does not read: a token minted for a guess could
        // be sent elsewhere.
        (None, Some(other)) => {
            return Err(format!(
                "`twine upload -r {}`: give the repository's URL with --repository-url, so the token is minted for it",
                crate::sanitize_for_terminal(other)
            ));
        }
    };
    let registry = crate::target::strict_url(&text).ok_or_else(|| "the repository URL is not a URL".to_owned())?;
    let mut projects: Vec<String> = words[1..].iter().filter_map(|f| project_of(f)).collect();
    projects.dedup();
    match projects.as_slice() {
        [one] => Ok(Some(Need { registry, operation: Operation::Publish, package: Some(one.clone()) })),
        [] => Err("`twine upload`: no distribution files named".into()),
        _ => Err("`twine upload`: one project per upload, so its token names one project".into()),
    }
}

/// The normalised project name of a distribution file (PEP 503): `Foo_Bar-1.0.tar.gz` and
/// `foo_bar-1.0-py3-none-any.whl` are both `foo-bar`.
fn project_of(file: &str) -> Option<String> {
    let name = Path::new(file).file_name()?.to_str()?;
    let stem = if name.ends_with(".whl") {
        name.split('-').next()?
    } else {
        let base = name.strip_suffix(".tar.gz").or_else(|| name.strip_suffix(".zip"))?;
        base.rsplit_once('-')?.0
    };
    let mut out = String::new();
    for c in stem.chars() {
        if "-_.".contains(c) {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The variables that carry the token to the real tool.
pub fn token_vars(family: Family, registry: &url::Url, issued: &Issued) -> Vec<(String, String)> {
    let token = issued.token.expose().to_owned();
    match family {
        // The URL pinned too, so the password goes where it was minted for and nowhere else.
        Family::Twine => vec![
            ("TWINE_USERNAME".into(), issued.username.clone()),
            ("TWINE_PASSWORD".into(), token),
            ("TWINE_REPOSITORY_URL".into(), registry.to_string()),
        ],
        _ => {
            // npm's "nerf dart": `//host[:port]/path/`, the key its auth lookup walks up to,
            // sent to that host only. yarn berry's `YARN_NPM_AUTH_TOKEN` would go to every
            // registry; berry reads the token from `MAYFLY_NPM_TOKEN` through a
            // registry-scoped `npmAuthToken` in `.yarnrc.yml` instead.
            let host = crate::target::host_port(registry).unwrap_or_default();
            let mut vars = vec![(format!("npm_config_//{host}{}:_authToken", registry.path()), token.clone())];
            if family == Family::Yarn {
                vars.push(("MAYFLY_NPM_TOKEN".into(), token));
            }
            vars
        }
    }
}

/// The real tool: the first `name` on `PATH` that is not this shim (by path or by
/// resolved file), so a shim never runs itself.
pub fn find_real(name: &str, path: &str, shim: &Path) -> Option<PathBuf> {
    let shim = std::fs::canonicalize(shim).ok();
    std::env::split_paths(path).map(|dir| dir.join(name)).find(|candidate| {
        use std::os::unix::fs::PermissionsExt;
        let resolved = std::fs::canonicalize(candidate).ok();
        let executable = std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        executable && resolved.is_some() && resolved != shim
    })
}

/// What the shim does before it execs: the real tool and the variables to add.
pub struct Launch {
    /// The real tool.
    pub program: PathBuf,
    /// Variables for the child only.
    pub vars: Vec<(String, String)>,
}

/// Works out the launch for `family` run with `args`; an error is one line for stderr.
pub fn prepare(
    family: Family,
    args: &[OsString],
    env: Env,
    cwd: &Path,
    shim: &Path,
    ancestry: &dyn Fn() -> Vec<Process>,
) -> Result<Launch, String> {
    let name = family.name();
    let path = env.get("PATH").unwrap_or_default().to_owned();
    let program = find_real(name, &path, shim).ok_or_else(|| format!("cannot find the real `{name}` on PATH"))?;
    let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let Some(need) = need(family, &args, &env, cwd)? else { return Ok(Launch { program, vars: Vec::new() }) };
    let tool = family.tool();
    let host = crate::target::host_port(&need.registry).ok_or("the registry URL has no host")?;
    let target =
        Target::new(tool, need.registry.scheme(), &host, need.package.as_deref()).map_err(|e| e.to_string())?;
    // The shim is the command: it heads the chain the audit line records.
    let me = Process { pid: std::process::id(), argv: [vec![name.to_owned()], args].concat() };
    let chain = || [vec![me.clone()], ancestry()].concat();
    match crate::protocol::answer_for(&target, &|_| need.operation, env, &chain)? {
        crate::protocol::Answer::Token(issued) => {
            Ok(Launch { program, vars: token_vars(family, &need.registry, &issued) })
        }
        _ => Ok(Launch { program, vars: Vec::new() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn npm_commands_read_unless_they_publish_a_named_package() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("package.json"), r#"{"name":"@org/pkg","version":"1.0.0"}"#).unwrap();
        std::fs::write(dir.path().join(".npmrc"), "; comment\n@org:registry = http://127.0.0.1:4873/npm\n").unwrap();
        let env = Env::default();
        let install = need(Family::Npm, &strings(&["install", "--registry", "https://r.example/"]), &env, dir.path());
        let install = install.unwrap().unwrap();
        assert_eq!(
            (install.operation, install.package, install.registry.as_str()),
            (Operation::Read, None, "https://r.example/")
        );
        let publish =
            need(Family::Npm, &strings(&["publish", "--access", "public"]), &env, dir.path()).unwrap().unwrap();
        assert_eq!(publish.operation, Operation::Publish);
        assert_eq!(publish.package.as_deref(), Some("@org/pkg"));
        assert_eq!(publish.registry.as_str(), "http://127.0.0.1:4873/npm/", "the scope's registry, from .npmrc");
        let env = Env::from_pairs([("NPM_CONFIG_REGISTRY", "https://env.example")]);
        let read = need(Family::Pnpm, &strings(&["add", "x"]), &env, dir.path()).unwrap().unwrap();
        assert_eq!(read.registry.as_str(), "https://env.example/");
        let berry = need(Family::Yarn, &strings(&["npm", "publish"]), &Env::default(), dir.path()).unwrap().unwrap();
        assert_eq!(berry.operation, Operation::Publish);
        let tarball = need(Family::Npm, &strings(&["publish", "pkg.tgz"]), &Env::default(), dir.path());
        assert_eq!(tarball.unwrap().unwrap().package, None, "a tarball names no package directory");
        for quiet in [&["test"][..], &["run", "build"], &["--version"], &["config", "list"]] {
            assert_eq!(need(Family::Npm, &strings(quiet), &Env::default(), dir.path()), Ok(None), "{quiet:?}");
        }
        assert!(need(Family::Yarn, &[], &Env::default(), dir.path()).unwrap().is_some(), "a bare `yarn` installs");
    }

    #[test]
    fn publish_config_and_npmrc_variables_name_the_registry() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = r#"{"name":"pkg","publishConfig":{"registry":"https://publish.example/"}}"#;
        std::fs::write(dir.path().join("package.json"), manifest).unwrap();
        std::fs::write(dir.path().join(".npmrc"), "registry=${REGISTRY_URL}\n").unwrap();
        let env = Env::from_pairs([("REGISTRY_URL", "https://from-env.example/npm")]);
        let publish = need(Family::Npm, &strings(&["publish"]), &env, dir.path()).unwrap().unwrap();
        assert_eq!(publish.registry.as_str(), "https://publish.example/");
        let install = need(Family::Npm, &strings(&["ci"]), &env, dir.path()).unwrap().unwrap();
        assert_eq!(install.registry.as_str(), "https://from-env.example/npm/");
    }

    #[test]
    fn twine_uploads_name_one_normalised_project() {
        let env = Env::default();
        let upload = strings(&[
            "upload",
            "--repository-url",
            "http://127.0.0.1:8080/legacy/",
            "dist/Foo_Bar-1.0.tar.gz",
            "dist/foo_bar-1.0-py3-none-any.whl",
        ]);
        let need = need(Family::Twine, &upload, &env, Path::new("/")).unwrap().unwrap();
        assert_eq!(need.package.as_deref(), Some("foo-bar"));
        assert_eq!(need.registry.as_str(), "http://127.0.0.1:8080/legacy/");
        assert_eq!(super::need(Family::Twine, &strings(&["check", "dist/x-1.tar.gz"]), &env, Path::new("/")), Ok(None));
        let two = strings(&["upload", "a-1.tar.gz", "b-1.tar.gz"]);
        assert!(super::need(Family::Twine, &two, &env, Path::new("/")).is_err());
        let named = strings(&["upload", "-r", "internal", "a-1.tar.gz"]);
        let err = super::need(Family::Twine, &named, &env, Path::new("/")).unwrap_err();
        assert!(err.contains("--repository-url"), "{err}");
        let env = Env::from_pairs([("TWINE_REPOSITORY", "internal")]);
        assert!(super::need(Family::Twine, &strings(&["upload", "a-1.tar.gz"]), &env, Path::new("/")).is_err());
    }

    #[test]
    fn tokens_go_into_the_variable_each_tool_reads() {
        let issued = Issued {
            token: crate::Secret::new("tok"),
            expires_at: None,
            token_id: None,
            scheme: crate::Scheme::Bearer,
            username: "__token__".into(),
            from_cache: false,
        };
        let registry = url::Url::parse("http://127.0.0.1:4873/npm/").unwrap();
        assert_eq!(
            token_vars(Family::Npm, &registry, &issued),
            [("npm_config_//127.0.0.1:4873/npm/:_authToken".to_owned(), "tok".to_owned())]
        );
        let yarn = token_vars(Family::Yarn, &registry, &issued);
        assert!(
            yarn.iter().all(|(k, _)| k != "YARN_NPM_AUTH_TOKEN"),
            "berry's global token would go to every registry"
        );
        let twine = token_vars(Family::Twine, &registry, &issued);
        assert_eq!(twine[0], ("TWINE_USERNAME".to_owned(), "__token__".to_owned()));
        assert_eq!(twine[2], ("TWINE_REPOSITORY_URL".to_owned(), registry.to_string()), "pinned to the token's URL");
    }

    #[test]
    fn the_real_tool_is_never_the_shim() {
        let dir = tempfile::tempdir().unwrap();
        let (shims, real) = (dir.path().join("shims"), dir.path().join("real"));
        std::fs::create_dir_all(&shims).unwrap();
        std::fs::create_dir_all(&real).unwrap();
        let shim = shims.join("mayfly-shim");
        std::fs::write(&shim, "#!/bin/sh\n").unwrap();
        std::fs::write(real.join("npm"), "#!/bin/sh\n").unwrap();
        for f in [&shim, &real.join("npm")] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::os::unix::fs::symlink(&shim, shims.join("npm")).unwrap();
        let path = format!("{}:{}", shims.display(), real.display());
        assert_eq!(find_real("npm", &path, &shims.join("npm")), Some(real.join("npm")));
        assert_eq!(find_real("npm", &shims.display().to_string(), &shims.join("npm")), None);
    }
}
