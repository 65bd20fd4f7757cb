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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mayfly-sts: {e:#}");
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

#[tokio::main]
async fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let config = load(config)?;
    let listener = match inherited_listener()? {
        Some(listener) => listener,
        None => std::net::TcpListener::bind(&config.listen)
            .with_context(|| format!("cannot listen on `{}`", config.listen))?,
    };
    if config.revocation_store.is_none() {
        eprintln!(
            "mayfly-sts: no `revocation_store` configured: revocations are kept in memory, lost on restart and not shared with other replicas"
        );
    }
    let sts = mayfly_sts::Sts::new(config, None).map_err(anyhow::Error::msg)?;
    eprintln!("mayfly-sts: listening on {}", listener.local_addr()?);
    mayfly_sts::serve(sts, listener).await?;
    Ok(())
}

/// A listening socket handed over by socket activation (systemd's `LISTEN_FDS`, fd 3), so a
/// service manager (or a test) binds the port and the exchange never races for it.
/// `listen` in the config is then ignored.
fn inherited_listener() -> anyhow::Result<Option<std::net::TcpListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    fds.take_tcp_listener(0).context("LISTEN_FDS is set but fd 3 is not a listening TCP socket")
}
