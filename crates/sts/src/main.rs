//! `mayfly-sts`: serve the reference token exchange.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// mayfly's reference RFC 8693 token exchange.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Config file (TOML).
    #[arg(long, short, env = "MAYFLY_STS_CONFIG")]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = mayfly_sts::Config::load(&args.config)?;
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
