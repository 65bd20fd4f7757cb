//! `mayfly-demo` (run as `mayfly demo`): the whole git path, end to end, on loopback,
//! with nothing configured. A binary of its own, so `mayfly` links no development server.
//!
//! It starts a development OIDC issuer (standing in for GitHub Actions), `mayfly-sts`
//! and a git server that accepts only tokens minted by that `mayfly-sts`; then, in a
//! private HOME, runs real `git clone`, `commit` and `push` through
//! `git-credential-mayfly`, and shows a push under a read-only route being refused.

mod report;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, bail};
use mayfly_devstack::{DevCa, DevIssuer, GitServer, StsClient};
use mayfly_sts::{Algorithm, ConfigFile, RuleEntry};
use serde_json::json;

use report::Report;

/// Runs the whole git path on loopback: a development OIDC issuer, mayfly-sts and a git
/// server; clones and pushes with tokens minted a second earlier.
#[derive(clap::Parser)]
#[command(name = "mayfly demo", version)]
struct Args {
    /// Keep the demo's private HOME and servers' files for inspection
    #[arg(long)]
    keep: bool,
}

/// Everything the demo started and where it lives.
struct Stage {
    root: PathBuf,
    home: PathBuf,
    helper: PathBuf,
    ca: DevCa,
    issuer: DevIssuer,
    git: GitServer,
    sts_audit: PathBuf,
    runtime_dir: Option<tempfile::TempDir>,
}

fn main() -> std::process::ExitCode {
    let args = <Args as clap::Parser>::parse();
    match run(&args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("mayfly: {}", mayfly_core::sanitize_for_terminal(&format!("{error:#}")));
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<std::process::ExitCode> {
    let report = Report::new();
    let helper = helper_path()?;
    check_git()?;
    let workspace =
        tempfile::Builder::new().prefix("mayfly-demo-").tempdir().context("cannot create a temporary directory")?;
    let runtime = mayfly_devstack::runtime().context("cannot start the async runtime")?;
    let stage = start(&runtime, workspace.path(), helper, &report)?;
    let ok = scenario(&stage, &report)?;
    report.audit_trail(&stage.home.join(".local/state/mayfly/audit.jsonl"), &stage.sts_audit);
    report.summary(ok, &stage.root);
    if args.keep {
        let kept = workspace.keep();
        report.note(&format!("kept {}", kept.display()));
    }
    drop(stage.runtime_dir);
    Ok(if ok { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE })
}

/// `git-credential-mayfly` sits next to `mayfly` (as `install.sh` and cargo place them).
fn helper_path() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the mayfly executable")?;
    let helper = exe.with_file_name("git-credential-mayfly");
    if !helper.is_file() {
        bail!(
            "`git-credential-mayfly` is not next to `{}`\n\nhint: run ./install.sh, or `cargo build --workspace`",
            exe.display()
        );
    }
    Ok(helper)
}

fn check_git() -> anyhow::Result<()> {
    let out =
        Command::new("git").arg("--version").output().context("git is not installed (the demo drives the real git)")?;
    let version = String::from_utf8_lossy(&out.stdout);
    let number: Vec<u32> =
        version.split_whitespace().nth(2).unwrap_or("0").split('.').filter_map(|p| p.parse().ok()).collect();
    if number.as_slice() < [2, 46].as_slice() {
        bail!(
            "git {} is too old: mayfly needs git 2.46 or newer (credential capabilities)",
            number.iter().map(u32::to_string).collect::<Vec<_>>().join(".")
        );
    }
    Ok(())
}

fn start(runtime: &tokio::runtime::Runtime, root: &Path, helper: PathBuf, report: &Report) -> anyhow::Result<Stage> {
    let (home, srv, tls) = (root.join("home"), root.join("srv"), root.join("tls"));
    for dir in [&home, &srv, &tls] {
        std::fs::create_dir_all(dir)?;
    }
    report.heading("Starting three servers on loopback");
    let ca = DevCa::create(&tls).map_err(anyhow::Error::msg)?;
    let claims = json!({
        "sub": "repo:demo/app:ref:refs/heads/main",
        "repository": "demo/app",
        "repository_owner": "demo",
        "ref": "refs/heads/main",
        "workflow": "release",
        "actor": "octocat",
    });
    let issuer = DevIssuer::start(runtime, Algorithm::Rs256, claims, 300).map_err(anyhow::Error::msg)?;
    report.item(&format!(
        "development OIDC issuer  {}  (DEVELOPMENT ONLY: signs for anyone on this machine)",
        issuer.issuer()
    ));

    let sts_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let sts_url = format!("https://{}", sts_listener.local_addr()?);
    let sts_audit = root.join("sts-audit.jsonl");
    // The git server asks the exchange whether each token is still active, as this client.
    let client = StsClient::generate(&sts_url, "mayfly-demo-git");
    // The git server's URL is the audience the exchange mints for; bind it first.
    let git = GitServer::start(runtime, srv, &ca, &client).map_err(anyhow::Error::msg)?;
    let sts_config = sts_config(&sts_url, &issuer, &git.base_url, &ca, &client, &sts_audit);
    // Written for the curious (`--keep`); the demo serves the typed value itself.
    std::fs::write(
        root.join("sts.toml"),
        format!("# mayfly-sts config written by `mayfly demo`\n{}", sts_config.to_toml()),
    )?;
    let config = mayfly_sts::Config::from_file(sts_config).map_err(anyhow::Error::msg)?;
    let sts = mayfly_sts::Sts::new(config, None).map_err(anyhow::Error::msg)?;
    runtime.spawn(mayfly_sts::serve(sts, sts_listener));
    report.item(&format!("mayfly-sts (RFC 8693)    {sts_url}/token"));
    report.item(&format!("git server               {}  (accepts only tokens from that mayfly-sts)", git.base_url));

    git.create_repo("demo/app.git").map_err(anyhow::Error::msg)?;
    let docs = git.create_repo("demo/docs.git").map_err(anyhow::Error::msg)?;
    seed(&docs, root)?;

    let runtime_dir = memory_runtime_dir();
    let stage = Stage { root: root.to_owned(), home, helper, ca, issuer, git, sts_audit, runtime_dir };
    write_client_config(&stage, &sts_url)?;
    Ok(stage)
}

fn sts_config(
    sts_url: &str,
    issuer: &DevIssuer,
    git_url: &str,
    ca: &DevCa,
    client: &StsClient,
    audit: &Path,
) -> ConfigFile {
    let rule = |name: &str, scopes: &[&str], max_ttl: &str| RuleEntry {
        name: Some(name.into()),
        issuer: issuer.issuer().into(),
        claims: [("repository_owner".to_owned(), "demo".to_owned())].into(),
        audiences: vec![git_url.into()],
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        max_ttl: Some(max_ttl.into()),
    };
    ConfigFile {
        issuer: sts_url.into(),
        audit_log: Some(audit.into()),
        revocation_store: Some(audit.with_file_name("sts-revocations.redb")),
        max_ttl: Some("15m".into()),
        tls: Some(ca.sts_tls()),
        trusted_issuers: vec![issuer.trusted(&["mayfly-sts"])],
        rules: vec![
            rule(
                "a repository may read and push itself",
                &["repo:{repository}:read", "repo:{repository}:write"],
                "10m",
            ),
            rule("the demo org reads the docs", &["repo:demo/docs:read"], "5m"),
        ],
        introspection_clients: vec![client.config_entry()],
        ..Default::default()
    }
}

/// A memory-backed directory for the cache key, removed with the demo.
fn memory_runtime_dir() -> Option<tempfile::TempDir> {
    tempfile::Builder::new().prefix("mayfly-demo-").tempdir_in("/dev/shm").ok()
}

fn write_client_config(stage: &Stage, sts_url: &str) -> anyhow::Result<()> {
    let host = stage.git.base_url.trim_start_matches("https://");
    let config_dir = stage.home.join(".config/mayfly");
    std::fs::create_dir_all(&config_dir)?;
    let config = format!(
        r#"# mayfly config written by `mayfly demo`
[identities.ci]
kind = "github-actions"
audience = "mayfly-sts"

[exchanges.dev]
kind = "rfc8693"
token_endpoint = "{sts_url}/token"
ca_file = "{ca}"

[[routes]]
name = "demo/app (read + write)"
tool = "git"
host = "{host}"
path = "demo/app"
identity = "ci"
exchange = "dev"
operations = ["read", "write"]
ttl = "10m"

[[routes]]
name = "demo/docs (read-only)"
tool = "git"
host = "{host}"
path = "demo/docs"
identity = "ci"
exchange = "dev"
operations = ["read"]
ttl = "5m"
"#,
        ca = stage.ca.ca_cert.display(),
    );
    std::fs::write(config_dir.join("config.toml"), config)?;
    let url = &stage.git.base_url;
    let helper = stage.helper.display().to_string();
    for (key, value) in [
        ("user.name", "mayfly demo"),
        ("user.email", "demo@mayfly.invalid"),
        ("init.defaultBranch", "main"),
        (&format!("credential.{url}.helper"), ""),
        (&format!("credential.{url}.helper"), helper.as_str()),
        (&format!("credential.{url}.useHttpPath"), "true"),
    ] {
        let out = git(stage, None, &["config", "--global", "--add", key, value])?;
        if !out.status.success() {
            bail!("git config {key} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    Ok(())
}

/// Puts a first commit into a bare repository, straight through the file system.
fn seed(bare: &Path, root: &Path) -> anyhow::Result<()> {
    let work = root.join("seed");
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let status = Command::new("git")
            .args(args)
            .current_dir(&work)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "docs")
            .env("GIT_AUTHOR_EMAIL", "docs@mayfly.invalid")
            .env("GIT_COMMITTER_NAME", "docs")
            .env("GIT_COMMITTER_EMAIL", "docs@mayfly.invalid")
            .output()?
            .status;
        if !status.success() {
            bail!("seeding the docs repository failed at `git {}`", args.join(" "));
        }
        Ok(())
    };
    std::fs::create_dir_all(&work)?;
    run(&["init", "--quiet", "--initial-branch=main"])?;
    std::fs::write(work.join("README.md"), "# demo docs\n")?;
    run(&["add", "README.md"])?;
    run(&["commit", "--quiet", "-m", "docs: first page"])?;
    run(&["push", "--quiet", &bare.display().to_string(), "main"])?;
    std::fs::remove_dir_all(&work)?;
    Ok(())
}

/// Runs git as the demo's user: private HOME, nothing inherited but PATH.
fn git(stage: &Stage, dir: Option<&Path>, args: &[&str]) -> anyhow::Result<Output> {
    let mut command = Command::new("git");
    command
        .args(args)
        .current_dir(dir.unwrap_or(&stage.root))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &stage.home)
        .env("XDG_CONFIG_HOME", stage.home.join(".config"))
        .env("XDG_CACHE_HOME", stage.home.join(".cache"))
        .env("XDG_STATE_HOME", stage.home.join(".local/state"))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_SSL_CAINFO", &stage.ca.ca_cert)
        .env("ACTIONS_ID_TOKEN_REQUEST_URL", stage.issuer.request_url())
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", stage.issuer.request_token());
    if let Some(dir) = &stage.runtime_dir {
        command.env("MAYFLY_RUNTIME_DIR", dir.path().join("rt"));
    }
    command.output().with_context(|| format!("cannot run git {}", args.join(" ")))
}

/// The story, step by step. Returns whether every step ended as it should.
fn scenario(stage: &Stage, report: &Report) -> anyhow::Result<bool> {
    let url = &stage.git.base_url;
    let work = stage.root.join("work");
    std::fs::create_dir_all(&work)?;
    let app = work.join("app");
    let docs = work.join("docs");
    let mut ok = true;

    report.heading("1. Clone demo/app: git asks mayfly, mayfly mints a read token");
    ok &= report.expect(true, &git(stage, Some(&work), &["clone", &format!("{url}/demo/app.git"), "app"])?);
    report.last_decision(stage, "read");

    report.heading("2. Commit and push: `git push` above the helper means a write token");
    std::fs::write(app.join("hello.txt"), "minted a second ago, gone in ten minutes\n")?;
    git(stage, Some(&app), &["add", "hello.txt"])?;
    git(stage, Some(&app), &["commit", "--quiet", "-m", "hello from mayfly demo"])?;
    ok &= report.expect(true, &git(stage, Some(&app), &["push", "origin", "main"])?);
    report.last_decision(stage, "write");

    report.heading("3. Fetch again: the read token comes from the encrypted cache");
    ok &= report.expect(true, &git(stage, Some(&app), &["fetch", "origin"])?);
    report.last_decision(stage, "read");

    report.heading("4. Clone demo/docs under a read-only route");
    ok &= report.expect(true, &git(stage, Some(&work), &["clone", &format!("{url}/demo/docs.git"), "docs"])?);
    report.last_decision(stage, "read");

    report.heading("5. Push to demo/docs: the route allows only read, so no token, and git stops");
    std::fs::write(docs.join("README.md"), "# demo docs\n\nan edit that must not land\n")?;
    git(stage, Some(&docs), &["commit", "--quiet", "-am", "try to edit the docs"])?;
    ok &= report.expect(false, &git(stage, Some(&docs), &["push", "origin", "main"])?);

    ok &= report.no_tokens_on_disk(&stage.root, &stage.home);
    Ok(ok)
}
