//! `mayfly`: the command people and CI steps run.

mod demo;
mod exec;

use clap::{Parser, Subcommand};

/// Just-in-time, narrowly scoped credentials for the tools you already use.
#[derive(Parser)]
#[command(name = "mayfly", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole git path on loopback: a development OIDC issuer, mayfly-sts and a
    /// git server; clone and push with tokens minted a second earlier
    Demo(demo::Args),
    /// Run a command with every routed tool wired to mayfly through its environment, as
    /// one session whose tokens are revoked when the command ends
    Exec(exec::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Exec(args) => exec::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("mayfly: {}", mayfly_core::sanitize_for_terminal(&format!("{error:#}")));
            std::process::ExitCode::FAILURE
        }
    }
}
