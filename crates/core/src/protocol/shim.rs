//! Shims for tools with no credential hook: npm, pnpm, yarn, twine, `gem push` and
//! `hf upload`/`hf download`.
//!
//! A shim found first on `PATH` works out what the tool is about to do (install or
//! publish, and which package) and on which registry, gets a token for exactly that, and
//! execs the real tool with the token in the child's environment only, in the variable
//! the tool reads for that registry only (`npm_config_//HOST/PATH/:_authToken`, which npm
//! sends to that host alone; twine's password with `TWINE_REPOSITORY_URL` pinned to the
//! URL the token is for; `GEM_HOST_API_KEY` with `gem push --host` pinned to the host the
//! key is for; `HF_TOKEN` with `HF_ENDPOINT` pinned to the Hub): never in argv, never in a
//! file, never in the caller's environment (nor `SSLKEYLOGFILE` in the tool's). Commands
//! that do not talk to a registry (`npm test`, `npm run`) and registries with no route
//! run the real tool untouched. A caller of the same user can still reach the token (its
//! own trust store, proxy or tool earlier on `PATH`, `/proc`): `mayfly exec --proxy
//! --isolate` is the boundary.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

mod gem;
mod hf;
mod phases;
mod process;

pub use phases::{Client, Plan, Runner, Step};
pub use process::Processes;

use crate::protocol::{Answer, Refusal, Reply};
use crate::{Env, Issued, Operation, Process, Target, Tool};

/// The npm registry when nothing names another.
const NPM_REGISTRY: &str = "https://registry.npmjs.org/";
/// yarn berry's registry when nothing names another.
const BERRY_REGISTRY: &str = "https://registry.yarnpkg.com";
/// PyPI's upload URL when nothing names another.
const PYPI_UPLOAD: &str = "https://upload.pypi.org/legacy/";
/// `gem push`'s host when nothing names another.
const GEM_HOST: &str = "https://rubygems.org";

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
    /// gem, RubyGems' client (`gem push` only).
    Gem,
    /// hf, Hugging Face's CLI (`hf upload` and `hf download` only).
    Hf,
}

impl Family {
    /// Every shimmed tool, by the name the shim is installed as.
    pub const ALL: [(&'static str, Self); 6] = [
        ("npm", Self::Npm),
        ("pnpm", Self::Pnpm),
        ("yarn", Self::Yarn),
        ("twine", Self::Twine),
        ("gem", Self::Gem),
        ("hf", Self::Hf),
    ];

    /// The family a shim invoked as `name` stands in for.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, f)| *f == self).map_or("npm", |(n, _)| n)
    }

    /// The tool routes name for it.
    pub fn tool(self) -> Tool {
        match self {
            Self::Twine => Tool::Pypi,
            Self::Gem => Tool::Gem,
            // The Hub's repositories are git's: its routes serve hf too.
            Self::Hf => Tool::Git,
            _ => Tool::Npm,
        }
    }

    /// True for a tool that only uploads one named thing with the token (twine, gem),
    /// with no packing or install phases.
    fn uploads_only(self) -> bool {
        matches!(self, Self::Twine | Self::Gem)
    }
}

/// The shimmed tools worth a shim: those with a route that are installed on `path`
/// (found without the shim at `shim`).
pub fn wanted(config: &crate::Config, path: &str, shim: &Path) -> Vec<&'static str> {
    Family::ALL
        .iter()
        .filter(|(name, family)| {
            config.routes.iter().any(|r| serves(config, r, *family)) && find_real(name, path, shim).is_some()
        })
        .map(|(name, _)| *name)
        .collect()
}

/// Whether `route` gives `family` tokens: hf's are git routes to a Hugging Face exchange.
fn serves(config: &crate::Config, route: &crate::Route, family: Family) -> bool {
    let hugging_face =
        || config.exchanges.get(&route.exchange).is_some_and(|e| e.kind == crate::config::ExchangeKind::HuggingFace);
    route.tool == family.tool() && (family != Family::Hf || hugging_face())
}

/// What the command needs a token for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Need {
    /// The registry (npm), upload URL (twine) or gem host (gem).
    pub registry: url::Url,
    /// What the command does with it.
    pub operation: Operation,
    /// The package, when publishing.
    pub package: Option<String>,
    /// `publishConfig.registry` of the package's manifest.
    pub publish_config: Option<String>,
    /// The scopes' registries a read may also fetch from.
    pub scopes: Vec<url::Url>,
}

/// Works out what a command line needs; `Ok(None)` when it needs no token.
pub fn need(family: Family, args: &[String], env: &Env, cwd: &Path) -> Result<Option<Need>, Refusal> {
    match family {
        Family::Twine => twine_need(args, env),
        Family::Gem => gem_need(args, env, cwd, None),
        Family::Hf => hf::need(args, env),
        _ => npm_need(family, args, env, cwd),
    }
}

/// Flags of npm, pnpm and yarn that take a value (`-r` there is pnpm's `--recursive`).
const NPM_VALUED: &[&str] = &["--registry", "--tag", "--access", "--otp", "--workspace", "-w", "--filter", "-F"];
/// Flags of twine that take a value.
const TWINE_VALUED: &[&str] = &["--repository-url", "--repository", "-r", "--username", "-u", "--password", "-p"];

/// Positional arguments: everything not a flag and not a flag's value (`--registry X`).
fn positionals<'a>(args: &'a [String], valued: &[&str]) -> Vec<&'a str> {
    positions(args, valued, &[]).into_iter().map(|i| args[i].as_str()).collect()
}

/// Where the positional arguments of `args` are, the indices in `skipped` aside.
fn positions(args: &[String], valued: &[&str], skipped: &[usize]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut skip = false;
    for (i, arg) in args.iter().enumerate() {
        if skipped.contains(&i) || std::mem::take(&mut skip) {
            continue;
        }
        if valued.contains(&arg.as_str()) {
            skip = true;
        } else if !arg.starts_with('-') {
            out.push(i);
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
/// a publish runs without a token, so scripts (`npm test`, `npm run build`) never see one,
/// and neither does a package run by `npm exec`, `npx` or `pnpm dlx`.
const NPM_READS: [&str; 21] = [
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
    "fetch",
    "dist-tag",
    "dist-tags",
    "owner",
    "access",
    "search",
];

fn npm_need(family: Family, args: &[String], env: &Env, cwd: &Path) -> Result<Option<Need>, Refusal> {
    let words = positionals(args, NPM_VALUED);
    // `yarn npm publish` (berry) and `npm publish` alike; a bare `yarn` installs.
    let words: Vec<&str> =
        if family == Family::Yarn && words.first() == Some(&"npm") { words[1..].to_vec() } else { words };
    let publishing = matches!(words.first(), Some(&"publish") | Some(&"unpublish"));
    // The shim packs one package itself, so its scripts run before the token exists.
    let workspaces = ["-w", "--workspace", "--workspaces", "--ws", "--filter", "-F", "-r", "--recursive"];
    if publishing
        && args
            .iter()
            .any(|a| workspaces.iter().any(|w| a == w || a.strip_prefix(w).is_some_and(|r| r.starts_with('='))))
    {
        return Err(Refusal::Failed(format!(
            "`{} {}` of workspaces: run it in the package's directory, so the shim packs that package and its scripts run without a token",
            family.name(),
            words[0]
        )));
    }
    let reading = match words.first() {
        None => family == Family::Yarn,
        Some(word) => NPM_READS.contains(word),
    };
    // Packing the project runs its scripts and needs no registry; `pack NAME` fetches.
    let packs_project = words.first() == Some(&"pack") && words.get(1).is_none_or(|w| cwd.join(w).is_dir());
    if (!publishing && !reading) || packs_project {
        return Ok(None);
    }
    let manifest = match publishing
        .then(|| words.get(1).map_or_else(|| cwd.to_owned(), |d| cwd.join(d)))
        .filter(|dir| dir.is_dir())
    {
        Some(dir) => read_manifest(&dir.join("package.json"))?,
        None => None,
    };
    // A tarball or a `pkg@version` names no directory: no package, and a route that binds
    // tokens to packages refuses it.
    let package = manifest.as_ref().and_then(|m| m["name"].as_str().map(str::to_owned)).filter(|_| publishing);
    let publish_registry = manifest.as_ref().and_then(|m| m["publishConfig"]["registry"].as_str().map(str::to_owned));
    let registry = npm_registry(family, args, env, cwd, package.as_deref(), publish_registry.filter(|_| publishing))?;
    let operation = if publishing { Operation::Publish } else { Operation::Read };
    let publish_config = manifest.as_ref().and_then(|m| m["publishConfig"]["registry"].as_str().map(str::to_owned));
    let scopes = if publishing { Vec::new() } else { scope_registries(family, env, cwd)? };
    Ok(Some(Need { registry, operation, package, publish_config, scopes }))
}

/// Every scope's registry (`@scope:registry=`) in the project's and the user's `.npmrc`
/// (and classic yarn's `.yarnrc`): an install may fetch from each.
fn scope_registries(family: Family, env: &Env, cwd: &Path) -> Result<Vec<url::Url>, Refusal> {
    let names: &[&str] = if family == Family::Yarn { &[".yarnrc", ".npmrc"] } else { &[".npmrc"] };
    let mut out: Vec<url::Url> = Vec::new();
    for dir in [project_root(cwd), env.path(crate::EnvVars::HOME)].into_iter().flatten() {
        for name in names {
            let text = read_client_file(&dir.join(name))?.unwrap_or_default();
            for line in text.lines().map(str::trim).filter(|l| l.starts_with('@') || l.starts_with("\"@")) {
                let Some((key, value)) = line.split_once('=').or_else(|| line.split_once(char::is_whitespace)) else {
                    continue;
                };
                if !key.trim().trim_matches('"').ends_with(":registry") {
                    continue;
                }
                let text = expand_vars(value.trim().trim_matches('"'), env);
                if let Some(url) = registry_url(&text).ok().filter(|u| !out.contains(u)) {
                    out.push(url);
                }
            }
        }
    }
    Ok(out)
}

/// The largest `package.json`, `.npmrc` or `.yarnrc` the shim reads.
const MAX_CLIENT_FILE: u64 = 4 * 1024 * 1024;

/// A file the client reads too (`package.json`, `.npmrc`, `.yarnrc`), which a project may
/// have planted: one that is a FIFO, a device, a kernel file or too large refuses the
/// command, named, rather than stalling on it or reading it without end (the client
/// itself would stall or fail on it). One that is absent or cannot be read (a root-owned
/// `~/.npmrc`, a folder) is `None`, as npm ignores it too.
fn read_client_file(path: &Path) -> Result<Option<String>, Refusal> {
    use std::io::ErrorKind;
    match crate::files::read_regular(path, MAX_CLIENT_FILE) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if !matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::FileTooLarge) => Ok(None),
        Err(e) => Err(Refusal::Failed(format!(
            "`{}` {e}; it is not read",
            crate::sanitize_for_terminal(&path.display().to_string())
        ))),
    }
}

/// The package's manifest: `None` when there is none or it is not JSON (the client says
/// why); a refusal when it cannot be read as a file.
fn read_manifest(path: &Path) -> Result<Option<serde_json::Value>, Refusal> {
    Ok(read_client_file(path)?.and_then(|text| serde_json::from_str(&text).ok()))
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
) -> Result<url::Url, Refusal> {
    let scope = package.and_then(|p| p.strip_prefix('@')).and_then(|p| p.split_once('/')).map(|(s, _)| s);
    // pnpm 11 and later read only `pnpm_config_*`; earlier ones npm's variables too.
    let named = |name: &str| env.vars().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.to_owned());
    let from_env = (family == Family::Pnpm)
        .then(|| named("pnpm_config_registry"))
        .flatten()
        .or_else(|| named("npm_config_registry"))
        .or_else(|| {
            (family == Family::Yarn)
                .then(|| env.get(crate::EnvVars::YARN_NPM_REGISTRY_SERVER).map(str::to_owned))
                .flatten()
        });
    let from_files = || -> Result<Option<String>, Refusal> {
        let in_dirs = |name: &str| -> Result<Vec<String>, Refusal> {
            let dirs = [project_root(cwd), env.path(crate::EnvVars::HOME)].into_iter().flatten();
            Ok(dirs
                .map(|d| read_client_file(&d.join(name)))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .flatten()
                .collect())
        };
        let npmrc = in_dirs(".npmrc")?;
        let yarnrc = if family == Family::Yarn { in_dirs(".yarnrc")? } else { Vec::new() };
        let keys: Vec<String> =
            scope.map(|s| format!("@{s}:registry")).into_iter().chain(["registry".into()]).collect();
        // Classic yarn's own `.yarnrc` wins over the `.npmrc` it also reads.
        Ok(keys.iter().find_map(|key| {
            yarnrc.iter().find_map(|t| yarnrc_value(t, key)).or_else(|| npmrc.iter().find_map(|t| npmrc_value(t, key)))
        }))
    };
    let text = match flag(args, &["--registry"]).map(str::to_owned).or(from_env).or(publish_config) {
        Some(text) => Some(text),
        None => from_files()?,
    };
    let text = text.map(|t| expand_vars(&t, env));
    registry_url(&text.unwrap_or_else(|| NPM_REGISTRY.to_owned()))
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

/// `key = value` from an `.npmrc`'s text, read as npm reads it.
fn npmrc_value(text: &str, key: &str) -> Option<String> {
    // As npm, the last of a repeated key wins.
    crate::ini::parse(text, crate::ini::Dialect::Npm).into_iter().rev().find(|e| e.key == key).map(|e| e.value)
}

/// `key value` from classic yarn's `.yarnrc` text (either may be quoted; comments `#`).
fn yarnrc_value(text: &str, key: &str) -> Option<String> {
    text.lines().map(str::trim).filter(|l| !l.starts_with('#')).find_map(|line| {
        let (k, v) = line.split_once(char::is_whitespace)?;
        (k.trim_matches('"') == key).then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn twine_need(args: &[String], env: &Env) -> Result<Option<Need>, Refusal> {
    let words = positionals(args, TWINE_VALUED);
    if words.first() != Some(&"upload") {
        return Ok(None);
    }
    let named = flag(args, &["--repository", "-r"]).or_else(|| env.get(crate::EnvVars::TWINE_REPOSITORY));
    let text = match (
        flag(args, &["--repository-url"]).or_else(|| env.get(crate::EnvVars::TWINE_REPOSITORY_URL)),
        named,
    ) {
        (Some(url), _) => url.to_owned(),
        (None, None | Some("pypi")) => PYPI_UPLOAD.to_owned(),
        (None, Some("testpypi")) => "https://test.pypi.org/legacy/".to_owned(),
        // Its URL is in a .pypirc the shim does not read: a token minted for a guess could
        // be sent elsewhere.
        (None, Some(other)) => {
            return Err(Refusal::Failed(format!(
                "`twine upload -r {}`: give the repository's URL with --repository-url, so the token is minted for it",
                crate::sanitize_for_terminal(other)
            )));
        }
    };
    let registry =
        crate::target::strict_url(&text).ok_or_else(|| Refusal::Failed("the repository URL is not a URL".into()))?;
    let mut projects: Vec<String> = words[1..].iter().filter_map(|f| project_of(f)).collect();
    projects.dedup();
    match projects.as_slice() {
        [one] => Ok(Some(Need {
            registry,
            operation: Operation::Publish,
            package: Some(one.clone()),
            publish_config: None,
            scopes: Vec::new(),
        })),
        [] => Err(Refusal::Failed("`twine upload`: no distribution files named".into())),
        _ => Err(Refusal::Failed("`twine upload`: one project per upload, so its token names one project".into())),
    }
}

/// Options of `gem push` (and gem's own) that take a value.
const GEM_VALUED: &[&str] = &["--host", "-k", "--key", "--otp", "-p", "--http-proxy", "--config-file", "--attestation"];

/// `gem push FILE.gem`: a publish of the gem the file holds ([`gem_of`]), to `--host`, else
/// `RUBYGEMS_HOST`, else RubyGems.org. gem's other commands need no token: they run
/// without one.
fn gem_need(args: &[String], env: &Env, cwd: &Path, copy: Option<&Path>) -> Result<Option<Need>, Refusal> {
    let hosts = gem_hosts(args);
    let rest: Vec<String> = without(args, &hosts).cloned().collect();
    let words = positionals(&rest, GEM_VALUED);
    // gem takes any unambiguous prefix of a command name.
    if !matches!(words.first(), Some(&("push" | "pus" | "pu"))) {
        return Ok(None);
    }
    // gem takes everything after `--` as build arguments, where `--host` stops being an
    // option.
    if args.iter().any(|a| a == "--") {
        return Err(Refusal::Failed("`gem push`: `--` is not taken, so the key's host stays pinned".into()));
    }
    // OptionParser matches option names ignoring case, Unicode's too (`--hoſt` is `--host`).
    if let Some(odd) = args.iter().find(|a| a.starts_with("--") && !a.split('=').next().unwrap_or_default().is_ascii())
    {
        return Err(Refusal::Failed(format!(
            "`gem push`: the option `{}` is not taken",
            crate::sanitize_for_terminal(odd.split('=').next().unwrap_or_default())
        )));
    }
    let given = match hosts.as_slice() {
        [] => None,
        [(_, _, Some(host))] => Some(*host),
        [(_, _, None)] => return Err(Refusal::Failed("`gem push`: --host has no value".into())),
        _ => {
            return Err(Refusal::Failed(
                "`gem push`: --host given more than once, so the key's host is unclear".into(),
            ));
        }
    };
    let text = given.or_else(|| env.get(crate::EnvVars::RUBYGEMS_HOST).filter(|h| !h.is_empty())).unwrap_or(GEM_HOST);
    let registry = crate::target::strict_url(text).ok_or_else(|| {
        Refusal::Failed(format!("`gem push`: the gem host `{}` is not a URL", crate::sanitize_for_terminal(text)))
    })?;
    let file = match &words[1..] {
        [one] => *one,
        [] => return Err(Refusal::Failed("`gem push`: no gem file named".into())),
        _ => return Err(Refusal::Failed("`gem push`: one gem per push, so its key names one gem".into())),
    };
    let gem = gem_of(file, copy.map_or_else(|| cwd.join(file), Path::to_path_buf).as_path())?;
    Ok(Some(Need {
        registry,
        operation: Operation::Publish,
        package: Some(gem),
        publish_config: None,
        scopes: Vec::new(),
    }))
}

/// The gem a built gem is: the name its own specification gives, which is what the
/// registry publishes it as. The file must be named for it too (`NAME-VERSION.gem` or
/// `NAME-VERSION-PLATFORM.gem`), so a file named for one gem cannot carry another past a
/// route's `path` pattern.
fn gem_of(file: &str, read: &Path) -> Result<String, Refusal> {
    let shown = crate::sanitize_for_terminal(file);
    let stem = gem_stem(file)?;
    let name = gem::spec_name(read).map_err(|why| Refusal::Failed(format!("`gem push`: `{shown}`: {why}")))?;
    let version = stem.strip_prefix(name.as_str()).and_then(|s| s.strip_prefix('-'));
    if !version.is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit())) {
        return Err(Refusal::Failed(format!(
            "`gem push`: `{shown}` holds the gem `{name}`, but is not named `{name}-VERSION.gem`"
        )));
    }
    Ok(name)
}

/// `NAME-VERSION` of a file named `NAME-VERSION.gem` (or `NAME-VERSION-PLATFORM.gem`).
fn gem_stem(file: &str) -> Result<&str, Refusal> {
    let stem = Path::new(file).file_name().and_then(|f| f.to_str()).and_then(|f| f.strip_suffix(".gem"));
    let versioned = |s: &str| s.split('-').skip(1).any(|part| part.starts_with(|c: char| c.is_ascii_digit()));
    stem.filter(|s| versioned(s)).ok_or_else(|| {
        let shown = crate::sanitize_for_terminal(file);
        Refusal::Failed(format!("`gem push`: `{shown}` is not a gem file named NAME-VERSION.gem"))
    })
}

/// A private copy of the `.gem` a `gem push` names, and where the file is in `args`, or
/// `None` for any other gem command (or a push [`gem_need`] refuses). The shim checks the
/// copy and gem pushes it, so a file swapped while the key is minted is not what gets
/// pushed. The copy lives in a directory only this user can enter, removed with it.
fn gem_copy(args: &[String], cwd: &Path) -> Result<Option<(tempfile::TempDir, usize, PathBuf)>, Refusal> {
    let dropped: Vec<usize> = gem_hosts(args).iter().flat_map(|&(at, span, _)| at..at + span).collect();
    let &[command, file] = positions(args, GEM_VALUED, &dropped).as_slice() else { return Ok(None) };
    if !matches!(&*args[command], "push" | "pus" | "pu") || args.iter().any(|a| a == "--") {
        return Ok(None);
    }
    let name = gem_stem(&args[file])?;
    let shown = crate::sanitize_for_terminal(&args[file]);
    let failed = |why: String| Refusal::Failed(format!("`gem push`: `{shown}`: {why}"));
    // As hf's uploads: a link, FIFO, device or /proc file named as the gem is refused, not
    // read (a FIFO would stall the shim, a link could push any file this user can read).
    let mut from =
        crate::files::open_regular_path(&cwd.join(&args[file])).map_err(|e| failed(format!("cannot open it: {e}")))?;
    let dir = tempfile::Builder::new()
        .prefix("mayfly-gem-")
        .tempdir()
        .map_err(|e| failed(format!("cannot be staged: {e}")))?;
    let copy = dir.path().join(format!("{name}.gem"));
    std::fs::File::create_new(&copy)
        .and_then(|mut to| std::io::copy(&mut from, &mut to))
        .map_err(|e| failed(format!("cannot be staged: {e}")))?;
    Ok(Some((dir, file, copy)))
}

/// The command line the real tool runs once it holds a token: `gem push` with `--host`
/// pinned to the host the key is for, so neither `RUBYGEMS_HOST` nor the gem's own
/// `default_gem_server`/`allowed_push_host` can send it elsewhere (gem refuses a gem whose
/// `allowed_push_host` is another host).
pub fn pinned_args(family: Family, need: &Need, args: &[OsString]) -> Vec<OsString> {
    if family != Family::Gem {
        return args.to_vec();
    }
    // Every host option goes ([`gem_need`] took at most one, the host the key is for), and
    // `--host` follows the command word, where gem reads it as an option (the command comes
    // first: gem refuses a line that starts with an option of its own).
    let strings: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let hosts = gem_hosts(&strings);
    let mut out: Vec<OsString> = without(args, &hosts).cloned().collect();
    let kept: Vec<String> = without(&strings, &hosts).cloned().collect();
    let command = kept.iter().position(|a| !a.starts_with('-')).map_or(0, |i| i + 1);
    out.splice(command..command, ["--host".into(), need.registry.as_str().trim_end_matches('/').into()]);
    out
}

/// The host options of a `gem` command line before `--`, as Ruby's OptionParser reads
/// them: `--host` or any prefix of it down to `--h` (`--ho` and `--hos` are unambiguous),
/// in any case, each as `--host VALUE` or `--host=VALUE`. Each is (index, arguments it spans, value);
/// OptionParser keeps the last one given.
fn gem_hosts(args: &[String]) -> Vec<(usize, usize, Option<&str>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() && args[i] != "--" {
        let arg = &args[i];
        let (name, value) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (arg.as_str(), None),
        };
        if name.len() >= 3 && "--host".starts_with(&name.to_ascii_lowercase()) {
            match value {
                Some(value) => out.push((i, 1, Some(value))),
                None => {
                    let value = args.get(i + 1).map(String::as_str);
                    out.push((i, if value.is_some() { 2 } else { 1 }, value));
                    i += 1;
                }
            }
        }
        i += 1;
    }
    out
}

/// `args` without the spans `hosts` names.
fn without<'a, T>(args: &'a [T], hosts: &[(usize, usize, Option<&str>)]) -> impl Iterator<Item = &'a T> {
    let dropped: Vec<usize> = hosts.iter().flat_map(|&(at, span, _)| at..at + span).collect();
    args.iter().enumerate().filter(move |(i, _)| !dropped.contains(i)).map(|(_, a)| a)
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
        // gem sends it, as the whole `Authorization` value, to the host `--host` pins.
        Family::Gem => vec![("GEM_HOST_API_KEY".into(), token)],
        Family::Hf => hf::token_vars(registry, token),
        // The URL pinned too, so the password goes where it was minted for and nowhere else.
        Family::Twine => vec![
            ("TWINE_USERNAME".into(), issued.username.clone()),
            ("TWINE_PASSWORD".into(), token),
            ("TWINE_REPOSITORY_URL".into(), registry.to_string()),
        ],
        _ => {
            // npm's "nerf dart": `//host[:port]/path/`, the key its auth lookup walks up to,
            // sent to that host only; npm and pnpm 9 and 12 read it from the environment.
            // pnpm 10 and classic yarn do not, and berry never reads npm's settings: they
            // take the token from `MAYFLY_NPM_TOKEN` through a registry-scoped entry in the
            // user's config (`//HOST/:_authToken=${MAYFLY_NPM_TOKEN}`, berry's
            // `npmRegistries`). berry's `YARN_NPM_AUTH_TOKEN` would go to every registry,
            // so it is never set.
            let host = crate::target::host_port(registry).unwrap_or_default();
            vec![
                (format!("npm_config_//{host}{}:_authToken", registry.path()), token.clone()),
                (phases::TOKEN_VAR.into(), token),
            ]
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

/// Runs `family` with `args` as the shim: works out the token the command needs, gets it,
/// and runs the real tool so that only the process that talks to the registry holds it
/// ([`Plan`]). Returns the exit code when it did not replace this process; an error is
/// one line for stderr.
pub fn run(
    family: Family,
    args: &[OsString],
    env: Env,
    cwd: &Path,
    shim: &Path,
    ancestry: &dyn Fn() -> Vec<Process>,
    runner: &mut dyn Runner,
) -> Result<i32, Refusal> {
    let name = family.name();
    let path = env.get(crate::EnvVars::PATH).unwrap_or_default().to_owned();
    let program = find_real(name, &path, shim)
        .ok_or_else(|| Refusal::Failed(format!("cannot find the real `{name}` on PATH")))?;
    let all = Step { program: program.clone(), args: args.to_vec(), dir: None, unset: Vec::new() };
    if let Some(session) = env.get(crate::EnvVars::MAYFLY_PROXY_SESSION) {
        // Inside `mayfly exec --proxy` no token goes into a tool's environment.
        crate::protocol::warn(&format!(
            "the {name} shim adds no token inside `mayfly exec --proxy` (session `{session}`): running `{name}` as it is"
        ));
        return exec(runner, &[all], &phases::quiet());
    }
    let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    if family == Family::Hf {
        let mint = |need: &Need| mint(family, need, &args, env.clone(), ancestry);
        return match hf::run(&all, &env, cwd, &mint, runner)? {
            Some(code) => Ok(code),
            None => exec(runner, &[all], &[]),
        };
    }
    if family == Family::Gem
        && let Some(copy) = gem_copy(&args, cwd)?
    {
        return gem_push(copy, &args, all, env, cwd, ancestry, runner);
    }
    if family.uploads_only() {
        let Some(need) = need(family, &args, &env, cwd)? else { return exec(runner, &[all], &[]) };
        return match mint(family, &need, &args, env, ancestry)? {
            Some(vars) => {
                let step = Step { args: pinned_args(family, &need, &all.args), ..all };
                exec(runner, &[step], &vars)
            }
            None => exec(runner, &[all], &[]),
        };
    }
    // An outer shim already holds a token for this command (pnpm 9 and 10 publish by
    // running `npm publish`): run as it was set up.
    if env.get(phases::TOKEN_VAR).is_some_and(|t| !t.is_empty()) {
        return exec(runner, &[all], &[]);
    }
    let Some(mut need) = need(family, &args, &env, cwd)? else { return exec(runner, &[all], &phases::quiet()) };
    let client = phases::detect(family, &program, runner)?;
    if client == Client::YarnBerry {
        berry_need(&mut need, &all, &env, runner)?;
    }
    if !routed(family, &need, &env)? {
        return exec(runner, &[all], &phases::quiet());
    }
    let pack = tempfile::Builder::new()
        .prefix("mayfly-pack-")
        .tempdir()
        .map_err(|e| Refusal::Failed(format!("cannot make a directory to pack in: {e}")))?;
    let mint = || mint(family, &need, &args, env.clone(), ancestry);
    match phases::plan(client, &program, &args, cwd, pack.path()) {
        Plan::Direct(step) => {
            let vars = mint()?.unwrap_or_else(phases::quiet);
            drop(pack);
            exec(runner, &[step], &vars)
        }
        Plan::Install { with_token, after } => {
            let Some(vars) = mint()? else {
                drop(pack);
                return exec(runner, &[all], &phases::quiet());
            };
            let code = runner.run(&with_token, &vars).map_err(Refusal::Failed)?;
            drop((vars, pack));
            then_without_token(code, &after, runner)
        }
        Plan::Publish { before, after } => {
            // The package's scripts run here, before there is a token to read.
            for step in &before {
                let code = runner.run(step, &phases::quiet()).map_err(Refusal::Failed)?;
                if code != 0 {
                    return Ok(code);
                }
            }
            let tarball = packed(pack.path())?;
            let npm = find_real("npm", &path, shim);
            let upload = phases::upload(client, &program, npm.as_deref(), &args, &tarball, &need.registry)?;
            let Some(vars) = mint()? else {
                let why = "no route gives this registry a token, so the packed package was not published";
                return Err(Refusal::Failed(why.into()));
            };
            let code = runner.run(&upload, &vars).map_err(Refusal::Failed)?;
            drop((vars, pack));
            then_without_token(code, &after, runner)
        }
    }
}

/// `gem push` of the private copy `copy` made of the file at `args[at]`: checked, pushed
/// with a key when a route gives one, and removed once gem exits.
fn gem_push(
    (dir, at, copy): (tempfile::TempDir, usize, PathBuf),
    args: &[String],
    mut push: Step,
    env: Env,
    cwd: &Path,
    ancestry: &dyn Fn() -> Vec<Process>,
    runner: &mut dyn Runner,
) -> Result<i32, Refusal> {
    let need = gem_need(args, &env, cwd, Some(&copy))?;
    let need = need.ok_or_else(|| Refusal::Failed("`gem push`: not a push".into()))?;
    push.args[at] = copy.into_os_string();
    let vars = match mint(Family::Gem, &need, args, env, ancestry)? {
        Some(vars) => {
            push.args = pinned_args(Family::Gem, &need, &push.args);
            vars
        }
        None => Vec::new(),
    };
    let code = runner.run(&push, &vars).map_err(Refusal::Failed)?;
    drop((vars, dir));
    Ok(code)
}

/// After the step that held the token exited with `code`: the steps without it, in place
/// of this process, or `code` when it failed or there are none.
fn then_without_token(code: i32, after: &[Step], runner: &mut dyn Runner) -> Result<i32, Refusal> {
    if code != 0 || after.is_empty() {
        return Ok(code);
    }
    exec(runner, after, &phases::quiet())
}

/// Replaces this process with `steps`; returns only why it could not.
fn exec(runner: &mut dyn Runner, steps: &[Step], vars: &[(String, String)]) -> Result<i32, Refusal> {
    Err(Refusal::Failed(runner.exec(steps, vars)))
}

/// How a shim says it did not run the tool: one `mayfly:` line and exit 1. It never
/// answers "not found": a registry no route serves runs the tool untouched instead.
pub fn refuse(refusal: &Refusal) -> i32 {
    reply(refusal).write(&mut std::io::sink())
}

fn reply(refusal: &Refusal) -> Reply {
    match refusal {
        Refusal::NotOurs | Refusal::NeedsPath { .. } => Reply::line("no route gives this registry a token"),
        Refusal::Refused { .. } | Refusal::Failed(_) | Refusal::Unsupported(_) => Reply::line(refusal.to_string()),
    }
}

/// Asks berry where `need` goes: berry reads no npm settings, and merges every
/// `.yarnrc.yml` and `YARN_*` variable itself.
fn berry_need(need: &mut Need, yarn: &Step, env: &Env, runner: &mut dyn Runner) -> Result<(), Refusal> {
    let scope = need.package.as_deref().and_then(|p| p.strip_prefix('@')?.split_once('/')).map(|(s, _)| s);
    let mut ask = |words: &[&str]| {
        let step = Step { args: words.iter().map(OsString::from).collect(), ..yarn.clone() };
        runner.output(&step, &phases::quiet()).unwrap_or_default()
    };
    let settings = ask(&["config", "--json"]);
    let scopes = ask(&["config", "get", "npmScopes", "--json"]);
    let text = phases::berry_registry(&settings, &scopes, need, scope).unwrap_or_else(|| BERRY_REGISTRY.into());
    need.registry = registry_url(&expand_vars(&text, env))?;
    if need.operation == Operation::Read {
        need.scopes = phases::berry_scopes(&scopes).iter().filter_map(|t| registry_url(t).ok()).collect();
    }
    Ok(())
}

/// The one tarball a pack step left in `dir`.
fn packed(dir: &Path) -> Result<PathBuf, Refusal> {
    let tarballs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Refusal::Failed(format!("cannot read the pack directory: {e}")))?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "tgz"))
        .collect();
    match tarballs.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(Refusal::Failed(format!("packing left {} tarballs, not one", tarballs.len()))),
    }
}

/// A registry URL with a trailing slash, as npm keys its settings.
fn registry_url(text: &str) -> Result<url::Url, Refusal> {
    let mut url = crate::target::strict_url(text)
        .ok_or_else(|| Refusal::Failed(format!("registry `{}` is not a URL", crate::sanitize_for_terminal(text))))?;
    // npm reads the token from a variable named after the registry's host and path; an
    // `=` there would cut the name and put the token into the value of another.
    if url.host_str().is_some_and(|h| h.contains('=')) || url.path().contains('=') {
        return Err(Refusal::Failed(format!(
            "registry `{}` has `=` in its host or path, which the name of npm's token variable cannot hold",
            crate::sanitize_for_terminal(text)
        )));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Whether a route serves a registry `need` may use. Without one the tool runs untouched,
/// scripts and all, as if there were no shim: there is no token to keep from them.
fn routed(family: Family, need: &Need, env: &Env) -> Result<bool, Refusal> {
    let broker = crate::protocol::broker(env.clone())?;
    Ok(std::iter::once(&need.registry).chain(&need.scopes).any(|registry| {
        let Some(host) = crate::target::host_port(registry) else { return false };
        Target::new(family.tool(), registry.scheme(), &host, need.package.as_deref())
            .is_ok_and(|target| !matches!(broker.resolve(&target), crate::Resolution::NoRoute))
    }))
}

/// Gets the tokens `need` asks for (a read: one for each routed registry it may fetch
/// from): the variables that carry them, or `None` when no route serves any (the tool then
/// runs untouched). `MAYFLY_NPM_TOKEN` carries the first.
fn mint(
    family: Family,
    need: &Need,
    args: &[String],
    env: Env,
    ancestry: &dyn Fn() -> Vec<Process>,
) -> Result<Option<Vec<(String, String)>>, Refusal> {
    let name = family.name();
    // The shim is the command: it heads the chain the audit line records.
    let me = Process { pid: std::process::id(), argv: [vec![name.to_owned()], args.to_vec()].concat() };
    let chain = || [vec![me.clone()], ancestry()].concat();
    let mut vars: Vec<(String, String)> = Vec::new();
    for registry in std::iter::once(&need.registry).chain(&need.scopes) {
        let host =
            crate::target::host_port(registry).ok_or_else(|| Refusal::Failed("the registry URL has no host".into()))?;
        let target = Target::new(family.tool(), registry.scheme(), &host, need.package.as_deref())
            .map_err(|e| Refusal::Failed(e.to_string()))?;
        match crate::protocol::answer_for(&target, &|_| need.operation, env.clone(), &chain) {
            Ok(Answer::Token(issued)) => {
                let mine = token_vars(family, registry, &issued);
                let first = vars.is_empty();
                vars.extend(mine.into_iter().filter(|(k, _)| first || k != phases::TOKEN_VAR));
            }
            // A scope's registry may have no route, and a read of a publish-only one needs no token.
            Ok(Answer::NoTokenNeeded) | Err(Refusal::NotOurs | Refusal::NeedsPath { .. }) => {}
            Err(refusal) => return Err(refusal),
        }
    }
    Ok((!vars.is_empty()).then_some(vars))
}

#[cfg(test)]
mod tests;
