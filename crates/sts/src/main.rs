//! `mayfly-sts`: serve the reference token exchange, or check and test its policies.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// mayfly's reference RFC 8693 token exchange.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Config file (TOML).
    #[arg(long, short, env = "MAYFLY_STS_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check or test the Cedar policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Act as an administrator of a running exchange.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Subcommand)]
enum AdminCommand {
    /// End a session and everything minted through it. The administrator's ID token is
    /// read from `--id-token-file` or MAYFLY_STS_ADMIN_TOKEN, never from the command line.
    Revoke {
        /// The session id (`sid` of its tokens, 32 hex digits).
        #[arg(long)]
        session: String,
        /// The exchange's base URL (its `issuer`).
        #[arg(long)]
        url: String,
        /// Extra CA certificates (PEM) to trust for the exchange.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// A file holding the administrator's ID token.
        #[arg(long)]
        id_token_file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate the config's rules and policies against the schema; exit 1 when invalid.
    Check,
    /// Run a table of requests with their expected decisions (TOML); exit 1 on a
    /// mismatch, 2 when the file or the policies are invalid.
    Test {
        /// The test file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        None => serve(args.config),
        Some(Command::Policy(PolicyCommand::Check)) => check(args.config),
        Some(Command::Policy(PolicyCommand::Test { file })) => return test(&file, args.config),
        Some(Command::Admin(AdminCommand::Revoke { session, url, ca_file, id_token_file })) => {
            admin_revoke(&session, &url, ca_file.as_deref(), id_token_file.as_deref())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Text unless the exchange started with `log_format = "json"`.
            mayfly_sts::log::error(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

fn load(config: Option<PathBuf>) -> anyhow::Result<mayfly_sts::Config> {
    let path = config.context("a config file is needed: `--config FILE` or MAYFLY_STS_CONFIG")?;
    Ok(mayfly_sts::Config::load(&path)?)
}

fn check(config: Option<PathBuf>) -> anyhow::Result<()> {
    let config = load(config)?;
    println!("{}", mayfly_sts::policy_tool::check(&config).map_err(anyhow::Error::msg)?);
    Ok(())
}

fn test(file: &std::path::Path, config: Option<PathBuf>) -> ExitCode {
    let config = match config.map(|c| load(Some(c))).transpose() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("mayfly-sts: {e:#}");
            return ExitCode::from(2);
        }
    };
    match mayfly_sts::policy_tool::test(file, config.as_ref()) {
        Ok(report) => {
            print!("{}", report.table);
            if report.failed == 0 {
                ExitCode::SUCCESS
            } else {
                eprintln!("mayfly-sts: {} case(s) did not decide as expected", report.failed);
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("mayfly-sts: {e}");
            ExitCode::from(2)
        }
    }
}

/// Where the administrator's ID token comes from when no file is named.
const ADMIN_TOKEN_VAR: &str = "MAYFLY_STS_ADMIN_TOKEN";

fn admin_revoke(
    session: &str,
    url: &str,
    ca_file: Option<&std::path::Path>,
    id_token_file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let token = match id_token_file {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read `{}`", path.display()))?,
        None => std::env::var(ADMIN_TOKEN_VAR)
            .map_err(|_| anyhow::anyhow!("no ID token: give `--id-token-file FILE` or set {ADMIN_TOKEN_VAR}"))?,
    };
    let token = token.trim();
    anyhow::ensure!(!token.is_empty(), "the administrator's ID token is empty");
    let base = url::Url::parse(url.trim_end_matches('/')).with_context(|| format!("`{url}` is not a URL"))?;
    let loopback = base.host_str().is_some_and(|h| matches!(h, "localhost" | "127.0.0.1" | "[::1]"));
    anyhow::ensure!(
        base.scheme() == "https" || (base.scheme() == "http" && loopback),
        "`{url}` is not https: an ID token is only sent over HTTPS (or plain HTTP to loopback)"
    );
    let mut client = reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(30));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|_| anyhow::anyhow!("`{}` holds no PEM certificate", path.display()))?;
        client = client.tls_certs_merge(certs);
    }
    let client = client.build().context("cannot set up HTTPS")?;
    let endpoint = format!("{}/admin/revoke", base.as_str().trim_end_matches('/'));
    let response = client.post(&endpoint).bearer_auth(token).form(&[("session", session)]).send().map_err(|e| {
        let cause = format!("{:#}", anyhow::Error::from(e));
        anyhow::anyhow!("cannot reach `{endpoint}`: {}", mayfly_core::sanitize_for_terminal(&cause))
    })?;
    let status = response.status();
    let body: serde_json::Value = response.json().unwrap_or_default();
    let said = |key: &str| body.get(key).and_then(serde_json::Value::as_str).map(mayfly_core::sanitize_for_terminal);
    if status.is_success() {
        let revoked = said("revoked").unwrap_or_else(|| session.to_owned());
        eprintln!("mayfly-sts: session {revoked} revoked; every token minted through it is dead");
        return Ok(());
    }
    let why = match (said("error"), said("error_description")) {
        (Some(code), Some(description)) => format!("{code}: {description}"),
        (Some(code), None) => code,
        _ => format!("HTTP {status}"),
    };
    anyhow::bail!("the exchange refused to revoke session {}: {why}", mayfly_core::sanitize_for_terminal(session))
}

#[tokio::main]
async fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let path = config.context("a config file is needed: `--config FILE` or MAYFLY_STS_CONFIG")?;
    let config = mayfly_sts::Config::load(&path)?;
    let listener = match inherited_listener()? {
        Some(listener) => listener,
        None => std::net::TcpListener::bind(&config.listen)
            .with_context(|| format!("cannot listen on `{}`", config.listen))?,
    };
    // `listen` was checked when the config loaded; a socket handed over is checked here.
    let bound = listener.local_addr().context("the listening socket has no address")?;
    anyhow::ensure!(
        config.tls.is_some() || bound.ip().is_loopback(),
        "the socket handed over (LISTEN_FDS) listens on `{bound}` without [tls]: plain HTTP is only allowed on loopback"
    );
    mayfly_sts::log::init(config.log_format);
    if config.revocation_store.is_none() {
        mayfly_sts::log::info(
            "no `revocation_store` configured: revocations are kept in memory, lost on restart and not shared with other replicas",
        );
    }
    let sts = mayfly_sts::Sts::new(config, None).map_err(anyhow::Error::msg)?;
    mayfly_sts::serve_until_stopped(sts, listener, path).await?;
    Ok(())
}

/// A listening socket handed over by socket activation (systemd's `LISTEN_FDS`, fd 3), so a
/// service manager (or a test) binds the port and the exchange never races for it.
/// `listen` in the config is then ignored.
fn inherited_listener() -> anyhow::Result<Option<std::net::TcpListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    fds.take_tcp_listener(0).context("LISTEN_FDS is set but fd 3 is not a listening TCP socket")
}
