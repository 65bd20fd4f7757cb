//! Running a package manager so that no script it starts can read the token.
//!
//! A lifecycle script runs as the same user as the tool that starts it, so a token in the
//! tool's environment is readable from `/proc/<tool>/environ` for as long as the tool
//! runs, whatever the tool strips from the script's own environment. So the process that
//! holds the token never runs a script:
//!
//! - installs fetch with the token and scripts off (`--ignore-scripts`, berry's
//!   `--mode=skip-build`), then, once that process has exited, the same client runs the
//!   skipped scripts without a token (`npm rebuild`, `pnpm rebuild`, `yarn rebuild`,
//!   classic yarn's `install --force --offline`, and the project's own scripts where the
//!   client's rebuild leaves them out);
//! - publishes run the package's pre-publish scripts and pack it without a token (pack
//!   runs `prepack`, `prepare`, `postpack`), then upload the tarball with scripts off and
//!   the token, then run `publish`/`postpublish` without it. yarn berry cannot publish a
//!   tarball, so npm uploads the one berry packed;
//! - commands that would run a package's code with the token (`npm exec`, `pnpm dlx`,
//!   `npm install-test`) get none.
//!
//! The steps after the token are run by replacing the shim with them (`exec`), so not even
//! freed memory of a process that held the token outlives it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::{Family, NPM_VALUED, Need, flag, positionals};
use crate::protocol::Refusal;

/// The variable a user's `.npmrc`, `.yarnrc.yml` or `~/.npmrc` reads the token from
/// (`//HOST/:_authToken=${MAYFLY_NPM_TOKEN}`). Always set, empty when there is no token:
/// classic yarn and berry refuse a config whose `${VAR}` is unset.
pub(super) const TOKEN_VAR: &str = "MAYFLY_NPM_TOKEN";

/// Which client a shim name runs, as far as scripts and packing go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// npm.
    Npm,
    /// pnpm of this major version (11 and later leave the project's own scripts out of
    /// `pnpm rebuild`).
    Pnpm(u32),
    /// yarn 1.
    YarnClassic,
    /// yarn 2 and later.
    YarnBerry,
}

/// One run of a program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Where it runs; `None` is the shim's own directory.
    pub dir: Option<PathBuf>,
    /// Variables removed from its environment.
    pub unset: Vec<String>,
}

impl Step {
    fn new(program: &Path, args: &[&str]) -> Self {
        Self {
            program: program.to_owned(),
            args: args.iter().map(OsString::from).collect(),
            dir: None,
            unset: Vec::new(),
        }
    }

    fn in_dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_owned());
        self
    }
}

/// How the shim starts processes: [`super::Processes`] in the binary, a recorder in tests.
pub trait Runner {
    /// Runs `step` with `vars` added to its environment, and waits: its exit code.
    fn run(&mut self, step: &Step, vars: &[(String, String)]) -> Result<i32, String>;
    /// Runs `step` and returns its stdout when it succeeds.
    fn output(&mut self, step: &Step, vars: &[(String, String)]) -> Option<String>;
    /// Replaces this process with `steps`, run in order until one fails; returns only the
    /// reason it could not.
    fn exec(&mut self, steps: &[Step], vars: &[(String, String)]) -> String;
}

/// The variables of a step without a token.
pub(super) fn quiet() -> Vec<(String, String)> {
    vec![(TOKEN_VAR.to_owned(), String::new())]
}

/// Asks the real tool which client it is (`pnpm --version`, `yarn --version`).
pub(super) fn detect(family: Family, program: &Path, runner: &mut dyn Runner) -> Result<Client, Refusal> {
    let mut major = || {
        let out = runner.output(&Step::new(program, &["--version"]), &quiet())?;
        out.trim().split('.').next()?.parse::<u32>().ok()
    };
    match family {
        Family::Npm | Family::Twine | Family::Gem | Family::Hf => Ok(Client::Npm),
        Family::Pnpm => {
            major().map(Client::Pnpm).ok_or_else(|| Refusal::Failed("cannot tell the version of `pnpm`".into()))
        }
        Family::Yarn => match major() {
            Some(1) => Ok(Client::YarnClassic),
            Some(_) => Ok(Client::YarnBerry),
            None => Err(Refusal::Failed("cannot tell the version of `yarn`".into())),
        },
    }
}

/// Commands that install and so would run scripts: fetched with the token and scripts
/// off, then rebuilt without it.
const INSTALLS: [&str; 8] = ["install", "i", "in", "ci", "add", "update", "up", "upgrade"];

/// What to do with a command that needs a token.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Run it with the token; it runs no scripts.
    Direct(Step),
    /// Fetch with the token and scripts off, then run `after` without it.
    Install {
        /// The fetch.
        with_token: Step,
        /// The skipped scripts.
        after: Vec<Step>,
    },
    /// Pack without a token (the package's scripts run here), upload the tarball with it,
    /// then run the publish scripts without it.
    Publish {
        /// Scripts and packing, into the pack directory.
        before: Vec<Step>,
        /// Scripts after the upload.
        after: Vec<Step>,
    },
}

/// Plans `args` run by `client`; `program` is the real tool.
pub(super) fn plan(client: Client, program: &Path, args: &[String], cwd: &Path, pack_dir: &Path) -> Plan {
    let words = positionals(args, NPM_VALUED);
    let words: &[&str] =
        if client == Client::YarnBerry && words.first() == Some(&"npm") { &words[1..] } else { &words };
    let all = Step {
        program: program.to_owned(),
        args: args.iter().map(OsString::from).collect(),
        dir: None,
        unset: Vec::new(),
    };
    let skips = args.iter().any(|a| a == "--ignore-scripts" || a.starts_with("--mode"));
    match words.first().copied() {
        Some("publish") => {
            let dir = words.get(1).map_or_else(|| cwd.to_owned(), |d| cwd.join(d));
            if dir.is_dir() {
                publish(client, program, &dir, pack_dir)
            } else {
                Plan::Direct(with_flag(all, ignore_flag(client)))
            }
        }
        None if client == Client::YarnBerry || client == Client::YarnClassic => {
            install(client, program, cwd, args, skips, &["install"])
        }
        Some(word) if INSTALLS.contains(&word) => install(client, program, cwd, args, skips, &[]),
        _ => Plan::Direct(all),
    }
}

fn ignore_flag(client: Client) -> &'static str {
    if client == Client::YarnBerry { "--mode=skip-build" } else { "--ignore-scripts" }
}

/// `step` with `flag` added before any `--` (after which arguments go to scripts).
fn with_flag(mut step: Step, flag: &str) -> Step {
    let end = step.args.iter().position(|a| a == "--").unwrap_or(step.args.len());
    step.args.insert(end, flag.into());
    step
}

/// The scripts `package.json` in `dir` defines, of `names`, in that order.
fn scripts(dir: &Path, names: &[&str]) -> Vec<String> {
    let manifest = super::read_manifest(&dir.join("package.json")).ok().flatten().unwrap_or_default();
    names.iter().filter(|n| manifest["scripts"][**n].is_string()).map(|n| (*n).to_owned()).collect()
}

fn run_script(client: Client, program: &Path, dir: &Path, name: &str) -> Step {
    // npm's `run --ignore-scripts X` runs X without its pre/post scripts, which the
    // client's own install or publish would not have run either.
    let args: &[&str] = if client == Client::Npm { &["run", "--ignore-scripts", name] } else { &["run", name] };
    Step::new(program, args).in_dir(dir)
}

fn install(client: Client, program: &Path, cwd: &Path, args: &[String], skips: bool, verb: &[&str]) -> Plan {
    let mut with_token = Step::new(program, verb);
    with_token.args.extend(args.iter().map(OsString::from));
    if skips {
        // Asked for no scripts: nothing to run afterwards.
        return Plan::Direct(with_token);
    }
    let with_token = with_flag(with_token, ignore_flag(client));
    let root = super::project_root(cwd).unwrap_or_else(|| cwd.to_owned());
    let global = args.iter().any(|a| a == "-g" || a == "--global");
    let own = |names: &[&str]| -> Vec<Step> {
        if global {
            Vec::new()
        } else {
            scripts(&root, names).iter().map(|s| run_script(client, program, &root, s)).collect()
        }
    };
    let mut after = match client {
        Client::Npm if global => vec![Step::new(program, &["rebuild", "--global"])],
        // npm rebuild runs the project's install scripts too, but not `prepare`.
        Client::Npm => [vec![Step::new(program, &["rebuild"])], own(&["prepare"])].concat(),
        Client::Pnpm(major) if major <= 10 => vec![Step::new(program, &["rebuild"])],
        Client::Pnpm(_) => {
            [vec![Step::new(program, &["rebuild"])], own(&["preinstall", "install", "postinstall", "prepare"])].concat()
        }
        // Classic yarn has no rebuild: a forced offline install from its cache runs every
        // script, the project's too, and needs no registry.
        Client::YarnClassic => {
            let mut step = Step::new(program, &["install", "--force", "--offline"]);
            let kept = [
                "--production",
                "--prod",
                "--frozen-lockfile",
                "--pure-lockfile",
                "--ignore-optional",
                "--ignore-engines",
                "--non-interactive",
            ];
            step.args.extend(args.iter().filter(|a| kept.contains(&a.as_str())).map(OsString::from));
            vec![step]
        }
        Client::YarnBerry => vec![Step::new(program, &["rebuild"])],
    };
    if global && client != Client::Npm {
        after.clear();
    }
    Plan::Install { with_token, after }
}

fn publish(client: Client, program: &Path, dir: &Path, pack_dir: &Path) -> Plan {
    let tarball = pack_dir.join("package.tgz");
    let tarball = tarball.to_string_lossy();
    let pack_dir = pack_dir.to_string_lossy();
    // What each client's own publish runs before it packs, then its pack command.
    let (early, pack): (&[&str], Vec<&str>) = match client {
        Client::Npm => (&["prepublishOnly"], vec!["pack", "--pack-destination", &pack_dir]),
        Client::Pnpm(_) => (&["prepublishOnly"], vec!["pack", "--pack-destination", &pack_dir]),
        Client::YarnClassic => (&["prepare", "prepublishOnly"], vec!["pack", "--filename", &tarball]),
        Client::YarnBerry => (&["prepublish"], vec!["pack", "--out", &tarball]),
    };
    let mut before: Vec<Step> = scripts(dir, early).iter().map(|s| run_script(client, program, dir, s)).collect();
    before.push(Step::new(program, &pack).in_dir(dir));
    let late: &[&str] = if client == Client::YarnBerry { &[] } else { &["publish", "postpublish"] };
    let after = scripts(dir, late).iter().map(|s| run_script(client, program, dir, s)).collect();
    Plan::Publish { before, after }
}

/// The upload of `tarball` with the token and scripts off: the user's flags, the tarball
/// in place of the directory. For berry, `npm` uploads to `registry`.
pub(super) fn upload(
    client: Client,
    program: &Path,
    npm: Option<&Path>,
    args: &[String],
    tarball: &Path,
    registry: &url::Url,
) -> Result<Step, Refusal> {
    let dir_arg = positionals(args, NPM_VALUED).into_iter().filter(|w| *w != "npm").nth(1);
    let flags: Vec<&str> =
        args.iter().map(String::as_str).filter(|a| Some(*a) != dir_arg && !["npm", "publish"].contains(a)).collect();
    let tarball = tarball.to_string_lossy();
    let step = match client {
        Client::YarnBerry => {
            let npm = npm.ok_or_else(|| {
                Refusal::Failed("`yarn npm publish` uploads with npm, and there is no `npm` on PATH".into())
            })?;
            let mut step = Step::new(npm, &["publish", &tarball, "--ignore-scripts", "--registry", registry.as_str()]);
            for name in ["--access", "--tag", "--otp"] {
                if let Some(value) = flag(args, &[name]) {
                    step.args.extend([OsString::from(name), value.into()]);
                }
            }
            for name in ["--provenance", "--dry-run"] {
                if args.iter().any(|a| a == name) {
                    step.args.push(name.into());
                }
            }
            step
        }
        _ => {
            let mut step = Step::new(program, &["publish", &tarball]);
            step.args.extend(flags.iter().map(OsString::from));
            with_flag(step, "--ignore-scripts")
        }
    };
    Ok(step)
}

/// Every scope's registry in berry's `npmScopes` (`yarn config get npmScopes --json`).
pub(super) fn berry_scopes(scopes: &str) -> Vec<String> {
    let scopes: serde_json::Value = serde_json::from_str(scopes).unwrap_or_default();
    let scopes = scopes.as_object().into_iter().flatten();
    scopes.filter_map(|(_, s)| s["npmRegistryServer"].as_str().filter(|t| !t.is_empty()).map(str::to_owned)).collect()
}

/// The registry berry would use, from its settings (`yarn config --json`: one object per
/// setting with its `effective` value, though maps come out empty) and its `npmScopes`:
/// `publishConfig.registry` when publishing, then the scope's, then the publish registry
/// when publishing, then `npmRegistryServer`.
pub(super) fn berry_registry(settings: &str, scopes: &str, need: &Need, scope: Option<&str>) -> Option<String> {
    let values: std::collections::BTreeMap<String, serde_json::Value> = settings
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["key"].as_str()?.to_owned(), v["effective"].clone())))
        .collect();
    let text = |v: &serde_json::Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    let scopes: serde_json::Value = serde_json::from_str(scopes).unwrap_or_default();
    let scoped = scope.map(|s| scopes[s].clone()).unwrap_or_default();
    let publishing = need.operation == crate::Operation::Publish;
    let publish_config = need.publish_config.clone().filter(|_| publishing);
    let global = |key: &str| values.get(key).and_then(text);
    publish_config
        .or_else(|| publishing.then(|| text(&scoped["npmPublishRegistry"])).flatten())
        .or_else(|| text(&scoped["npmRegistryServer"]))
        .or_else(|| publishing.then(|| global("npmPublishRegistry")).flatten())
        .or_else(|| global("npmRegistryServer"))
}
