//! `mayfly demo` runs `mayfly-demo`, installed beside `mayfly`: the development servers
//! the demo starts stay out of the binary people put on their PATH.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use anyhow::Context;

/// Options of `mayfly demo`, passed on to `mayfly-demo`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Options for the demo (`--keep` keeps its files for inspection)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "OPTIONS")]
    options: Vec<OsString>,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    // Beside this binary, never through PATH: a hostile directory on PATH could shadow it.
    let exe = std::env::current_exe().context("cannot locate the mayfly executable")?;
    let demo = exe.with_file_name("mayfly-demo");
    anyhow::ensure!(
        demo.is_file(),
        "`{}` is not installed beside mayfly: run ./install.sh again (it installs mayfly-demo too)",
        demo.display()
    );
    let error = std::process::Command::new(&demo).args(&args.options).exec();
    Err(error).with_context(|| format!("cannot run `{}`", demo.display()))
}
