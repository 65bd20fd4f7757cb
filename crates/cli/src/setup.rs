//! `mayfly setup`: wires each routed target into its tool's own config, once, and
//! `--undo` puts every file back byte for byte.
//!
//! Each tool is changed the way its own documentation says: git through `git config`,
//! docker and containers tools through `credHelpers`, cargo through its global credential
//! providers, AWS through a `credential_process` profile, Terraform through
//! `credentials_helper` and its plugin directory, npm/pnpm/yarn/twine through the shims.
//! No secret is written. Running it twice changes nothing the second time.
//!
//! `--ci` is for a CI job's setup step: on GitHub Actions the git wiring and `PATH` go to
//! `$GITHUB_ENV` and `$GITHUB_PATH` so later steps inherit them, on CircleCI to
//! `$BASH_ENV`, on Azure Pipelines as `##vso[task.setvariable]` and `##vso[task.prependpath]`
//! logging commands on stdout, elsewhere (GitLab, Buildkite, Bitbucket Pipelines) as
//! `export` lines on stdout for `eval`. It says which identity source the job offers (found
//! as `kind = "auto"` finds one). It never writes into the job's workspace, where files end
//! up in artifacts and images.

mod edits;
pub(crate) use edits::unsafe_for_shell;
mod guard_hooks;
mod journal;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::Context;
use mayfly_core::{Config, Env, Tool};

use crate::exec::wiring::{git_vars, route_hosts, route_urls};
use journal::{Journal, replace_file};

/// The tools `--tools` can name.
const TOOLS: [&str; 9] = ["git", "oci", "cargo", "aws", "kube", "terraform", "vault", "npm", "hf"];

/// Arguments of `mayfly setup`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Only these tools (comma-separated: git, oci, cargo, aws, kube, terraform, vault, npm, hf;
    /// npm covers the npm, pnpm, yarn, twine and gem shims, hf the hf shim)
    #[arg(long, value_delimiter = ',')]
    tools: Vec<String>,
    /// Say what would change, change nothing
    #[arg(long)]
    dry_run: bool,
    /// Put back every file setup changed, byte for byte, and remove what it created
    #[arg(long, conflicts_with_all = ["ci", "dry_run", "tools"])]
    undo: bool,
    /// With --undo: also restore files changed since setup
    #[arg(long, requires = "undo")]
    force: bool,
    /// CI mode: wire later steps through the CI's environment files; write nothing into
    /// the workspace
    #[arg(long)]
    ci: bool,
    /// Only install `mayfly guard` as this repository's pre-commit and pre-push hooks,
    /// chaining the hooks already there (with --undo: remove them, restoring those)
    #[arg(long, conflicts_with_all = ["ci", "dry_run", "tools", "force"])]
    guard: bool,
    /// With --guard: the repository (default: the current directory's)
    #[arg(long, requires = "guard", value_name = "PATH")]
    repo: Option<PathBuf>,
}

/// Where the CI lets a step hand environment to later steps.
enum Handoff {
    /// `$GITHUB_ENV` and `$GITHUB_PATH`.
    GitHub { env_file: PathBuf, path_file: PathBuf },
    /// A shell file sourced before each step (CircleCI's `$BASH_ENV`).
    ShellFile(PathBuf),
    /// `export` lines on stdout, for `eval "$(mayfly setup --ci)"`.
    Stdout,
    /// Azure Pipelines' logging commands on stdout, which the agent applies to later steps.
    AzurePipelines,
}

/// What a run found to do.
#[derive(Default)]
struct Plan {
    /// Lines for the user.
    changes: Vec<String>,
    /// Things left alone, and why.
    notes: Vec<String>,
    /// Variables for later CI steps.
    vars: Vec<(String, String)>,
    /// Directories for the front of PATH.
    path: Vec<PathBuf>,
}

struct Setup<'a> {
    env: &'a Env,
    config: &'a Config,
    home: PathBuf,
    bin: PathBuf,
    journal: Journal,
    dry_run: bool,
    /// The CI workspace, which setup must not write into.
    workspace: Option<PathBuf>,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    if args.guard {
        return guard(args);
    }
    let env = Env::from_os();
    let home = env.path(mayfly_core::EnvVars::HOME).or_else(dirs::home_dir).context("no HOME")?;
    let state = env
        .path(mayfly_core::EnvVars::XDG_STATE_HOME)
        .unwrap_or_else(|| home.join(".local/state"))
        .join("mayfly/setup");
    let journal = Journal::open(&state)?;
    if args.undo {
        if journal.is_empty() {
            eprintln!("mayfly setup --undo: nothing to undo");
            return Ok(ExitCode::SUCCESS);
        }
        let (done, kept) = journal.undo(args.force)?;
        done.iter().for_each(|line| eprintln!("{line}"));
        kept.iter().for_each(|line| eprintln!("mayfly: {line}"));
        return Ok(if kept.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    for tool in &args.tools {
        anyhow::ensure!(TOOLS.contains(&tool.as_str()), "--tools: unknown tool `{tool}` ({})", TOOLS.join(", "));
    }
    let config = Config::load(&env).map_err(|e| anyhow::anyhow!(mayfly_core::protocol::one_line(&e)))?;
    let exe = std::env::current_exe().context("cannot find the mayfly binary")?;
    let bin = exe.parent().context("the mayfly binary has no directory")?.to_owned();
    let handoff = if args.ci { Some(detect_ci(&env)?) } else { None };
    let identity_note = args.ci.then(|| identity_offered(&env));
    let workspace = [
        "GITHUB_WORKSPACE",
        "CI_PROJECT_DIR",
        "BUILDKITE_BUILD_CHECKOUT_PATH",
        "CIRCLE_WORKING_DIRECTORY",
        "BUILD_SOURCESDIRECTORY",
        "BITBUCKET_CLONE_DIR",
    ]
    .iter()
    .find_map(|v| env.path(v))
    .filter(|_| args.ci);
    let mut cx = Setup { env: &env, config: &config, home, bin, journal, dry_run: args.dry_run, workspace };
    let wanted = |tool: &str| args.tools.is_empty() || args.tools.iter().any(|t| t == tool);
    let mut plan = Plan::default();
    plan.notes.extend(identity_note);
    if wanted("git") {
        if handoff.is_some() {
            git_through_env(&cx, &mut plan);
        } else {
            wire_git(&mut cx, &mut plan)?;
        }
        plan.notes.extend(libgit2_notes(&config));
    }
    if wanted("oci") {
        wire_oci(&mut cx, &mut plan)?;
    }
    if wanted("cargo") {
        wire_cargo(&mut cx, &mut plan)?;
    }
    if wanted("aws") {
        wire_aws(&mut cx, &mut plan)?;
    }
    if wanted("kube") {
        wire_kube(&mut cx, &mut plan)?;
    }
    if wanted("terraform") {
        wire_terraform(&mut cx, &mut plan)?;
    }
    if wanted("vault") {
        wire_vault(&mut cx, &mut plan)?;
    }
    if wanted("npm") || wanted("hf") {
        let shims = |name: &str| if name == "hf" { wanted("hf") } else { wanted("npm") };
        wire_shims(&mut cx, &mut plan, &shims)?;
    }
    report(&cx, &plan, handoff.as_ref())
}

/// `--guard`: the hooks of one repository, outside the journal (see [`guard_hooks`]).
fn guard(args: &Args) -> anyhow::Result<ExitCode> {
    let repo = args.repo.clone().unwrap_or_else(|| PathBuf::from("."));
    let changes = if args.undo {
        guard_hooks::uninstall(&repo)?
    } else {
        guard_hooks::install(&repo, &std::env::current_exe().context("cannot find the mayfly binary")?)?
    };
    if changes.is_empty() {
        eprintln!("mayfly setup --guard: nothing to change");
    }
    changes.iter().for_each(|line| eprintln!("{line}"));
    Ok(ExitCode::SUCCESS)
}

fn detect_ci(env: &Env) -> anyhow::Result<Handoff> {
    if env.get(mayfly_core::EnvVars::GITHUB_ACTIONS) == Some("true") {
        let file = |name: &str| env.path(name).with_context(|| format!("GitHub Actions without `{name}`"));
        return Ok(Handoff::GitHub { env_file: file("GITHUB_ENV")?, path_file: file("GITHUB_PATH")? });
    }
    if env.get(mayfly_core::EnvVars::CIRCLECI) == Some("true") {
        return Ok(Handoff::ShellFile(
            env.path(mayfly_core::EnvVars::BASH_ENV).context("CircleCI without `BASH_ENV`")?,
        ));
    }
    if env.get("TF_BUILD").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(Handoff::AzurePipelines);
    }
    if env.get(mayfly_core::EnvVars::GITLAB_CI) == Some("true")
        || env.get(mayfly_core::EnvVars::BUILDKITE) == Some("true")
        || env.get("BITBUCKET_BUILD_NUMBER").is_some()
    {
        return Ok(Handoff::Stdout);
    }
    anyhow::bail!(
        "--ci: no known CI here (GitHub Actions, GitLab CI, Buildkite, CircleCI, Azure Pipelines, Bitbucket Pipelines)"
    )
}

/// Which identity source this job offers, found the way `kind = "auto"` finds one: one
/// line for the report.
fn identity_offered(env: &Env) -> String {
    match mayfly_core::IdentityConfig::detect(env) {
        Some(identity) => format!("identity: this job offers {} ({})", identity.kind(), identity.origin(env)),
        None => "identity: this job offers none that mayfly recognises; name one in the config".to_owned(),
    }
}

impl Setup<'_> {
    fn helper(&self, name: &str) -> String {
        self.bin.join(name).display().to_string()
    }

    fn routes(&self, tool: Tool) -> impl Iterator<Item = &mayfly_core::Route> {
        self.config.routes.iter().filter(move |r| r.tool == tool)
    }

    /// Refuses paths inside the CI workspace.
    fn check_outside_workspace(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(workspace) = &self.workspace {
            anyhow::ensure!(
                !path.starts_with(workspace),
                "`{}` is inside the CI workspace; setup writes nothing there",
                path.display()
            );
        }
        Ok(())
    }

    /// Writes `contents` to `path` through the journal (or only says so, in a dry run).
    fn write(&mut self, path: &Path, contents: &str, what: &str, plan: &mut Plan) -> anyhow::Result<()> {
        let path = &resolved(path);
        self.check_outside_workspace(path)?;
        plan.changes.push(format!("{}: {what}", path.display()));
        if self.dry_run {
            return Ok(());
        }
        self.journal.before(path)?;
        replace_file(path, contents)?;
        self.journal.after(path)
    }

    /// A symlink at `link` to `target`, through the journal.
    fn link(&mut self, link: &Path, target: &Path, plan: &mut Plan) -> anyhow::Result<()> {
        if std::fs::read_link(link).is_ok_and(|t| t == target) {
            return Ok(());
        }
        self.check_outside_workspace(link)?;
        if std::fs::symlink_metadata(link).is_ok() {
            plan.notes.push(format!("{} exists and is not mayfly's; left alone", link.display()));
            return Ok(());
        }
        plan.changes.push(format!("{}: link to {}", link.display(), target.display()));
        if self.dry_run {
            return Ok(());
        }
        self.journal.before(link)?;
        std::os::unix::fs::symlink(target, link).with_context(|| format!("cannot create `{}`", link.display()))?;
        self.journal.after(link)
    }
}

/// The file a path names: a dotfile linked into a dotfiles repository is edited (and
/// journaled, and restored) where it lives, and the link stays a link.
fn resolved(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

fn read(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read `{}`", path.display())),
    }
}

/// git's global config file, as `git config --global` picks it.
fn git_global_file(cx: &Setup<'_>) -> PathBuf {
    let classic = cx.home.join(".gitconfig");
    let xdg = cx
        .env
        .path(mayfly_core::EnvVars::XDG_CONFIG_HOME)
        .unwrap_or_else(|| cx.home.join(".config"))
        .join("git/config");
    if !classic.exists() && xdg.exists() { xdg } else { classic }
}

fn git(file: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .arg("config")
        .arg("--file")
        .arg(file)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .context("cannot run git")?;
    // `--get-all` of a missing key exits 1 with no output: that is an answer.
    anyhow::ensure!(
        out.status.success() || out.status.code() == Some(1) && out.stderr.is_empty(),
        "git config {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// git: for each routed host, the helper list reset, then mayfly, and `useHttpPath`.
fn wire_git(cx: &mut Setup<'_>, plan: &mut Plan) -> anyhow::Result<()> {
    let file = resolved(&git_global_file(cx));
    let helper = cx.helper("git-credential-mayfly");
    for url in route_urls(cx.config, Tool::Git) {
        let helpers = if file.exists() {
            git(&file, &["--get-all", &format!("credential.{url}.helper")])?
        } else {
            String::new()
        };
        let helpers: Vec<&str> = helpers.lines().collect();
        let wired = helpers.len() >= 2 && helpers[helpers.len() - 2..] == ["", helper.as_str()];
        let path_on =
            file.exists() && git(&file, &["--get", &format!("credential.{url}.useHttpPath")])?.trim() == "true";
        if wired && path_on {
            continue;
        }
        cx.check_outside_workspace(&file)?;
        plan.changes.push(format!("{}: credential helper for {url}", file.display()));
        if cx.dry_run {
            continue;
        }
        cx.journal.before(&file)?;
        if !wired {
            git(&file, &["--add", &format!("credential.{url}.helper"), ""])?;
            git(&file, &["--add", &format!("credential.{url}.helper"), &helper])?;
        }
        git(&file, &[&format!("credential.{url}.useHttpPath"), "true"])?;
        cx.journal.after(&file)?;
    }
    Ok(())
}

/// libgit2 (cargo's built-in git, and others) looks up `credential.https://HOST.helper`
/// without the port, so it never finds the helper of a git route on another port; wiring
/// the bare host would hand another service's credential requests to mayfly, so the user
/// hears how to have such callers run the git CLI instead.
fn libgit2_notes(config: &Config) -> Vec<String> {
    route_urls(config, Tool::Git)
        .into_iter()
        .filter(|url| url.rsplit_once(':').is_some_and(|(_, port)| port.chars().all(|c| c.is_ascii_digit())))
        .map(|url| {
            format!(
                "{url}: libgit2-based callers look up the helper without the port and will not find it; \
                 for cargo set `CARGO_NET_GIT_FETCH_WITH_CLI=true` (or `net.git-fetch-with-cli`)"
            )
        })
        .collect()
}

/// git in CI: the same entries as `GIT_CONFIG_*` variables for later steps.
fn git_through_env(cx: &Setup<'_>, plan: &mut Plan) {
    plan.vars.extend(git_vars(cx.config, cx.env, &cx.bin));
    if !plan.vars.is_empty() {
        plan.changes.push("git: credential helpers through GIT_CONFIG_* for later steps".into());
    }
}

/// docker and containers tools: `credHelpers` in the docker config, and in a containers
/// auth file when one exists (it is read first).
fn wire_oci(cx: &mut Setup<'_>, plan: &mut Plan) -> anyhow::Result<()> {
    let registries: Vec<String> = route_hosts(cx.config, Tool::Oci).into_iter().collect();
    if registries.is_empty() {
        return Ok(());
    }
    let docker =
        cx.env.path(mayfly_core::EnvVars::DOCKER_CONFIG).unwrap_or_else(|| cx.home.join(".docker")).join("config.json");
    let containers = cx
        .env
        .path("REGISTRY_AUTH_FILE")
        .or_else(|| cx.env.path(mayfly_core::EnvVars::XDG_CONFIG_HOME).map(|d| d.join("containers/auth.json")))
        .unwrap_or_else(|| cx.home.join(".config/containers/auth.json"));
    for (path, required) in [(docker, true), (containers, false)] {
        let current = read(&path)?;
        if current.is_none() && !required {
            continue;
        }
        let new =
            edits::cred_helpers(current.as_deref(), &registries).with_context(|| format!("`{}`", path.display()))?;
        if let Some(new) = new {
            cx.write(&path, &new, &format!("credHelpers for {}", registries.join(", ")), plan)?;
        }
    }
    plan.path.push(cx.bin.clone());
    Ok(())
}

/// cargo: mayfly among the global credential providers.
fn wire_cargo(cx: &mut Setup<'_>, plan: &mut Plan) -> anyhow::Result<()> {
    if cx.routes(Tool::Cargo).next().is_none() {
        return Ok(());
    }
    let path =
        cx.env.path(mayfly_core::EnvVars::CARGO_HOME).unwrap_or_else(|| cx.home.join(".cargo")).join("config.toml");
    let new = edits::cargo_providers(read(&path)?.as_deref(), &cx.helper("cargo-credential-mayfly"))
        .with_context(|| format!("`{}`", path.display()))?;
    if let Some(new) = new {
        cx.write(&path, &new, "mayfly as a global credential provider", plan)?;
    }
    Ok(())
}

/// AWS: a `credential_process` profile per route.
fn wire_aws(cx: &mut Setup<'_>, plan: &mut Plan) -> anyhow::Result<()> {
    let helper = cx.helper("mayfly-aws-credential");
    let profiles: Vec<(String, String)> =
        cx.routes(Tool::Aws).map(|r| (r.name.clone(), format!("{helper} {}", r.name))).collect();
    if profiles.is_empty() {
        return Ok(());
    }
    let path = cx.env.path(mayfly_core::EnvVars::AWS_CONFIG_FILE).unwrap_or_else(|| cx.home.join(".aws/config"));
    let (new, conflicts) = edits::aws_profiles(read(&path)?.as_deref(), &profiles)?;
    plan.notes.extend(conflicts);
    if let Some(new) = new {
        let names: Vec<&str> = profiles.iter().map(|(n, _)| n.as_str()).collect();
        cx.write(&path, &new, &format!("credential_process profiles {}", names.join(", ")), plan)?;
    }
    Ok(())
}

/// kubectl: a user running the exec plugin for each routed cluster, made the user of
/// every context whose cluster is that server, through `kubectl config`.
fn wire_kube(cx: &mut Setup<'_>, plan: &mut Plan) -> anyhow::Result<()> {
    let hosts = route_hosts(cx.config, Tool::Kubectl);
    if hosts.is_empty() {
        return Ok(());
    }
    let file = cx
        .env
        .get(mayfly_core::EnvVars::KUBECONFIG)
        .and_then(|k| k.split(':').find(|p| !p.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| cx.home.join(".kube/config"));
    let file = resolved(&file);
    let kubectl = |args: &[&str]| -> anyhow::Result<String> {
        let out =
            Command::new("kubectl").arg("--kubeconfig").arg(&file).args(args).output().context("cannot run kubectl")?;
        anyhow::ensure!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let view: serde_json::Value = if file.exists() {
        serde_json::from_str(&kubectl(&["config", "view", "-o", "json"])?).context("kubectl config view")?
    } else {
        serde_json::json!({})
    };
    let helper = cx.helper("mayfly-kube-credential");
    for host in hosts {
        let user = format!("mayfly-{host}");
        let server = format!("https://{host}");
        let users = view["users"].as_array().cloned().unwrap_or_default();
        let has_user =
            users.iter().any(|u| u["name"] == user.as_str() && u["user"]["exec"]["command"] == helper.as_str());
        let clusters: Vec<String> = view["clusters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["cluster"]["server"].as_str().map(|s| s.trim_end_matches('/')) == Some(server.as_str()))
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect();
        let contexts: Vec<String> = view["contexts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["context"]["cluster"].as_str().is_some_and(|n| clusters.iter().any(|k| k == n)))
            .filter(|c| c["context"]["user"] != user.as_str())
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect();
        if clusters.is_empty() {
            plan.notes.push(format!("kubeconfig has no cluster at {server}; add one, then run setup again"));
            continue;
        }
        if has_user && contexts.is_empty() {
            continue;
        }
        cx.check_outside_workspace(&file)?;
        plan.changes.push(format!("{}: user {user} for {}", file.display(), clusters.join(", ")));
        if cx.dry_run {
            continue;
        }
        cx.journal.before(&file)?;
        kubectl(&[
            "config",
            "set-credentials",
            &user,
            "--exec-api-version=client.authentication.k8s.io/v1",
            &format!("--exec-command={helper}"),
            "--exec-arg=--server",
            &format!("--exec-arg={server}"),
            "--exec-interactive-mode=Never",
        ])?;
        for context in &contexts {
            kubectl(&["config", "set-context", context, &format!("--user={user}")])?;
        }
        cx.journal.after(&file)?;
    }
    Ok(())
}

/// Terraform: `credentials_helper "mayfly"` in the CLI config, and the helper in the
/// plugin directory where Terraform looks for it.
fn wire_terraform(cx: &mut Setup<'_>, plan: &mut Plan) -> anyhow::Result<()> {
    if cx.routes(Tool::Terraform).next().is_none() {
        return Ok(());
    }
    let path = cx.env.path(mayfly_core::EnvVars::TF_CLI_CONFIG_FILE).unwrap_or_else(|| cx.home.join(".terraformrc"));
    let (new, note) = edits::terraform_helper(read(&path)?.as_deref())?;
    plan.notes.extend(note);
    if let Some(new) = new {
        cx.write(&path, &new, "credentials_helper \"mayfly\"", plan)?;
    }
    let name = "terraform-credentials-mayfly";
    let link = cx.home.join(".terraform.d/plugins").join(name);
    cx.link(&link, &cx.bin.join(name), plan)
}

/// vault and bao: `token_helper` in each CLI's config (`~/.vault`, `~/.bao`, or the
/// files `VAULT_CONFIG_PATH` and `BAO_CONFIG_PATH` name).
fn wire_vault(cx: &mut Setup<'_>, plan: &mut Plan) -> anyhow::Result<()> {
    if cx.routes(Tool::Vault).next().is_none() {
        return Ok(());
    }
    let helper = cx.bin.join("vault-token-helper-mayfly").display().to_string();
    if let Some(why) = edits::unsafe_for_shell(&helper) {
        anyhow::bail!("{why}");
    }
    let files = [(mayfly_core::EnvVars::VAULT_CONFIG_PATH, ".vault"), (mayfly_core::EnvVars::BAO_CONFIG_PATH, ".bao")];
    for (var, default) in files {
        let path = cx.env.path(var).unwrap_or_else(|| cx.home.join(default));
        let (new, note) = edits::vault_token_helper(read(&path)?.as_deref(), &helper);
        plan.notes.extend(note);
        if let Some(new) = new {
            cx.write(&path, &new, "token_helper", plan)?;
        }
    }
    Ok(())
}

/// npm, pnpm, yarn, twine, gem, hf: shims for the installed ones that have a route (and
/// that `chosen` takes), in a directory that goes first on PATH.
fn wire_shims(cx: &mut Setup<'_>, plan: &mut Plan, chosen: &dyn Fn(&str) -> bool) -> anyhow::Result<()> {
    let data = cx.env.path(mayfly_core::EnvVars::XDG_DATA_HOME).unwrap_or_else(|| cx.home.join(".local/share"));
    let shims = data.join("mayfly/shims");
    let path = cx.env.get(mayfly_core::EnvVars::PATH).unwrap_or_default().to_owned();
    let shim = cx.bin.join("mayfly-shim");
    let mut wanted = mayfly_core::protocol::shim::wanted(cx.config, &path, &shim);
    wanted.retain(|name| chosen(name));
    for name in &wanted {
        cx.link(&shims.join(name), &shim, plan)?;
    }
    if !wanted.is_empty() {
        plan.path.push(shims);
    }
    Ok(())
}

fn report(cx: &Setup<'_>, plan: &Plan, handoff: Option<&Handoff>) -> anyhow::Result<ExitCode> {
    let verb = if cx.dry_run { "would change" } else { "changed" };
    if plan.changes.is_empty() {
        eprintln!("mayfly setup: nothing to change");
        if let Some(note) = cx.config.missing_note() {
            eprintln!("mayfly setup: {note}");
        }
    }
    for change in &plan.changes {
        eprintln!("{verb} {change}");
    }
    for note in &plan.notes {
        eprintln!("mayfly: {note}");
    }
    let mut path = plan.path.clone();
    path.dedup();
    match handoff {
        None => {
            let current = cx.env.get(mayfly_core::EnvVars::PATH).unwrap_or_default();
            for dir in &path {
                if !std::env::split_paths(current).any(|p| &p == dir) {
                    eprintln!("next: put {} first on PATH", dir.display());
                }
            }
        }
        Some(_) if cx.dry_run => {}
        Some(Handoff::GitHub { env_file, path_file }) => {
            let vars: String = plan.vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            append(env_file, &vars)?;
            let dirs: String = path.iter().map(|d| format!("{}\n", d.display())).collect();
            append(path_file, &dirs)?;
        }
        Some(Handoff::ShellFile(file)) => append(file, &exports(&plan.vars, &path))?,
        Some(Handoff::Stdout) => print!("{}", exports(&plan.vars, &path)),
        Some(Handoff::AzurePipelines) => print!("{}", azure_logging_commands(&plan.vars, &path)),
    }
    Ok(ExitCode::SUCCESS)
}

/// `export` lines, quoted for POSIX shells.
fn exports(vars: &[(String, String)], path: &[PathBuf]) -> String {
    let quote = |v: &str| format!("'{}'", v.replace('\'', r"'\''"));
    let mut out: String = vars.iter().map(|(k, v)| format!("export {k}={}\n", quote(v))).collect();
    if !path.is_empty() {
        let dirs: Vec<String> = path.iter().map(|d| d.display().to_string()).collect();
        out += &format!("export PATH={}:\"$PATH\"\n", quote(&dirs.join(":")));
    }
    out
}

/// Azure Pipelines logging commands setting `vars` and putting `path` first on PATH for
/// later steps, their values escaped as the agent reads them.
fn azure_logging_commands(vars: &[(String, String)], path: &[PathBuf]) -> String {
    let escape = |v: &str| v.replace('%', "%AZP25").replace('\r', "%0D").replace('\n', "%0A");
    let property = |v: &str| escape(v).replace(']', "%5D").replace(';', "%3B");
    let mut out: String =
        vars.iter().map(|(k, v)| format!("##vso[task.setvariable variable={}]{}\n", property(k), escape(v))).collect();
    // Each prepended directory goes before the previous one: the first named ends first.
    for dir in path.iter().rev() {
        out += &format!("##vso[task.prependpath]{}\n", escape(&dir.display().to_string()));
    }
    out
}

fn append(file: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut handle = std::fs::OpenOptions::new().append(true).create(true).open(file)?;
    handle.write_all(text.as_bytes()).with_context(|| format!("cannot write `{}`", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_pipelines_logging_commands_escape_what_the_agent_reads() {
        let vars = [("GIT_CONFIG_KEY_0".to_owned(), "credential.https://h.example.helper".to_owned())];
        let path = [PathBuf::from("/opt/mayfly/bin"), PathBuf::from("/opt/mayfly/shims")];
        assert_eq!(
            azure_logging_commands(&vars, &path),
            "##vso[task.setvariable variable=GIT_CONFIG_KEY_0]credential.https://h.example.helper\n\
             ##vso[task.prependpath]/opt/mayfly/shims\n##vso[task.prependpath]/opt/mayfly/bin\n"
        );
        let odd = [("A;B]".to_owned(), "50%\nnext".to_owned())];
        assert_eq!(azure_logging_commands(&odd, &[]), "##vso[task.setvariable variable=A%3BB%5D]50%AZP25%0Anext\n");
    }

    #[test]
    fn ci_mode_knows_azure_pipelines_and_bitbucket() {
        assert!(matches!(detect_ci(&Env::from_pairs([("TF_BUILD", "True")])), Ok(Handoff::AzurePipelines)));
        assert!(matches!(detect_ci(&Env::from_pairs([("BITBUCKET_BUILD_NUMBER", "7")])), Ok(Handoff::Stdout)));
        let err = detect_ci(&Env::default()).err().unwrap().to_string();
        assert!(err.ends_with("Azure Pipelines, Bitbucket Pipelines)"), "{err}");
    }
}
