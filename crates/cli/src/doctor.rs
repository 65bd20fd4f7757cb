//! `mayfly doctor`: finds long-lived credentials on disk and in the environment, and the
//! wiring problems that would let a tool use one instead of a route, and says how to fix
//! each.
//!
//! It reads what the tools read (their files, in the places and order they look) and
//! never prints a secret: a credential is named by where it is and by its fingerprint.
//! Checks stay cheap and local: no subject token is fetched unless asked, and the only
//! network traffic is a TCP connect to each exchange (skipped with `--offline`).

mod aws;
mod backups;
mod cargo;
mod environment;
mod exchange;
mod finding;
mod gh;
mod git;
mod git_chain;
mod hugging_face;
mod identity;
mod kube;
mod npm;
mod oci;
mod output;
mod pypi;
mod scope;
mod terraform;
mod urls;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use mayfly_core::{Config, Env, EnvVars};

use finding::{Finding, Severity};
use scope::Scope;

/// Arguments of `mayfly doctor`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Print one JSON document instead of a table
    #[arg(long)]
    json: bool,
    /// Do not try to reach the exchanges
    #[arg(long)]
    offline: bool,
    /// Fetch a subject token from sources whose token costs a request or a run (GitHub Actions, commands) to show its claims
    #[arg(long)]
    fetch_identity: bool,
    /// Look for credentials under this home directory instead of `$HOME`
    #[arg(long, value_name = "DIR")]
    home: Option<PathBuf>,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let mut env = Env::from_os();
    if let Some(home) = &args.home {
        let home = home.display().to_string();
        env = env.with(&[(EnvVars::HOME, home.as_str())]);
    }
    let home = env.path(EnvVars::HOME).context("no home directory: set `HOME` or pass `--home`")?;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let scope = Scope { env, home, cwd };

    let (findings, sources) = examine(&scope, args);
    let text = if args.json { output::json(&findings, &sources) } else { output::table(&findings, &sources) };
    print!("{text}");
    let failed = findings.iter().any(|f| f.severity.fails());
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Every check: credentials first, then wiring (the report keeps this order within a
/// severity).
fn examine(scope: &Scope, args: &Args) -> (Vec<Finding>, Vec<identity::Source>) {
    let mut findings = Vec::new();
    let config = match Config::load(&scope.env) {
        Ok(config) => Some(config),
        Err(e) => {
            let path = Config::default_path(&scope.env).map(|p| p.display().to_string()).unwrap_or_default();
            let fix = format!("fix the config: {}", mayfly_core::protocol::one_line(&e));
            findings.push(Finding::new(Severity::Error, "config-invalid", path, fix));
            None
        }
    };
    let config = config.as_ref();
    if let Some(note) = config.and_then(Config::missing_note) {
        let path = config.map(|c| c.path.display().to_string()).unwrap_or_default();
        findings.push(Finding::new(Severity::Info, "no-config", path, note));
    }
    let git = git::GitConfig::read(scope);

    git::check(scope, &git, config, &mut findings);
    oci::check(scope, config, &mut findings);
    npm::check(scope, config, &mut findings);
    cargo::check(scope, config, &mut findings);
    aws::check(scope, &mut findings);
    terraform::check(scope, config, &mut findings);
    gh::check(scope, config, &mut findings);
    pypi::check(scope, config, &mut findings);
    hugging_face::check(scope, config, &mut findings);
    kube::check(scope, config, &mut findings);
    backups::check(scope, config, &mut findings);
    environment::check(&scope.env, config, &mut findings);

    let routes = config.is_some_and(|c| !c.routes.is_empty());
    git_chain::check(&git, config, &mut findings);
    if routes {
        check_cache(&scope.env, &mut findings);
    }
    let sources = identity::check(&scope.env, config, args.fetch_identity, &mut findings);
    if let Some(config) = config
        && !args.offline
    {
        exchange::check(config, &mut findings);
    }
    findings.sort_by_key(|f| f.severity);
    (findings, sources)
}

/// Without a memory-backed place for the key the cache is off: every request exchanges.
/// With one, says which: the kernel keyring, or the runtime directory where there is none.
fn check_cache(env: &Env, findings: &mut Vec<Finding>) {
    match mayfly_core::Cache::open(env) {
        Ok(cache) => {
            let (place, why) = match cache.key_in_keyring() {
                true => (format!("the {}", cache.key_place()), ""),
                false => (cache.key_place(), " (not the kernel keyring)"),
            };
            let note = format!(
                "the cache key and logins are in {place}{why}: other users cannot read them, every process you run can"
            );
            findings.push(Finding::new(Severity::Info, "key-store", "cache key", note));
        }
        Err(e) => cache_unavailable(&e, findings),
    }
}

fn cache_unavailable(e: &mayfly_core::CacheError, findings: &mut Vec<Finding>) {
    let fix = format!(
        "tokens are not cached, so every request runs an exchange ({}); set `XDG_RUNTIME_DIR` to a tmpfs directory or mount `/dev/shm`",
        mayfly_core::protocol::one_line(e)
    );
    findings.push(Finding::new(Severity::Warning, "cache-unavailable", "cache key", fix));
}
