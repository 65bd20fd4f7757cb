//! `mayfly`: the command people and CI steps run.

mod approve;
mod audit;
mod demo;
mod doctor;
mod exec;
mod explain;
mod generate;
mod guard;
mod login;
mod setup;
mod status;

use clap::{CommandFactory, Parser, Subcommand};

/// Just-in-time, narrowly scoped credentials for the tools you already use.
#[derive(Parser)]
#[command(name = "mayfly", version, about, propagate_version = true)]
pub(crate) struct Cli {
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
    /// Wire every routed tool's own config to mayfly (and undo it, byte for byte)
    Setup(setup::Args),
    /// Find long-lived credentials on disk and wiring problems, and say how to fix each
    Doctor(doctor::Args),
    /// Scan staged changes, a push, or files for credentials (the session's minted tokens
    /// by fingerprint, known token formats, secrets assigned to secret names)
    Guard(guard::Args),
    /// Sign in at the organisation's OpenID provider (an `oidc` identity); the login's
    /// tokens stay in memory-backed storage
    Login(login::LoginArgs),
    /// Revoke the login's refresh token at the provider and drop the login
    Logout(login::LogoutArgs),
    /// Show cached tokens (never the tokens themselves) and the identity source
    Status(status::Args),
    /// Read and filter the audit log
    Audit(audit::Args),
    /// Approve a request an exchange holds for a person's approval, as yourself
    Approve(approve::Args),
    /// Deny a request an exchange holds for approval (say why with --reason)
    Deny(approve::Args),
    /// Dry-run a request: which route, identity and exchange, and what the exchange says
    Explain(explain::Args),
    /// Print shell completions or man pages
    #[command(subcommand)]
    Generate(generate::Generate),
    /// Inside `mayfly exec --isolate`'s sandbox: relay the proxy URL's port to the
    /// proxy's socket and run the command
    #[command(hide = true)]
    SandboxRelay(exec::RelayArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Exec(args) => exec::run(&args),
        Command::Setup(args) => setup::run(&args),
        Command::Doctor(args) => doctor::run(&args),
        Command::Guard(args) => guard::run(&args),
        Command::Login(args) => login::login(&args),
        Command::Logout(args) => login::logout(&args),
        Command::Status(args) => status::run(&args),
        Command::Audit(args) => audit::run(&args),
        Command::Approve(args) => approve::run(&args, true),
        Command::Deny(args) => approve::run(&args, false),
        Command::Explain(args) => explain::run(&args),
        Command::Generate(what) => generate::run(&what, Cli::command()),
        Command::SandboxRelay(args) => exec::relay(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("mayfly: {}", mayfly_core::sanitize_keeping_lines(&format!("{error:#}")));
            std::process::ExitCode::FAILURE
        }
    }
}
