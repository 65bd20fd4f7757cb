//! `mayfly generate`: shell completions and man pages from the clap definitions, so they
//! can never drift from the commands they describe.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap_complete::Shell;

/// What to generate.
#[derive(clap::Subcommand)]
pub(crate) enum Generate {
    /// Shell completions on stdout
    Completions {
        /// The shell to complete for
        shell: Shell,
    },
    /// Man pages, one per command and subcommand (mayfly.1, mayfly-exec.1 ...), into DIR
    Man {
        /// Directory to write into (created if missing)
        dir: PathBuf,
    },
}

pub(crate) fn run(what: &Generate, command: clap::Command) -> anyhow::Result<ExitCode> {
    match what {
        Generate::Completions { shell } => {
            let mut command = command;
            let name = command.get_name().to_owned();
            // Into a buffer first: the generator panics on a write error such as a closed pipe.
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut command, name, &mut script);
            match std::io::stdout().lock().write_all(&script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e).context("cannot write"),
                _ => {}
            }
        }
        Generate::Man { dir } => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
            let written = man_pages(command, dir)?;
            for path in written {
                println!("{}", mayfly_core::sanitize_for_terminal(&path.display().to_string()));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes a page for the command and each (non-hidden) subcommand, named by their path
/// (`mayfly-generate-man.1`), and returns the files written.
fn man_pages(command: clap::Command, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    // Built once so subcommands carry their full names (`mayfly-exec`) and the help
    // subcommand is left out: `mayfly help X` is `man mayfly-X`.
    let mut command = command.disable_help_subcommand(true);
    command.build();
    let source = format!("{} {}", command.get_name(), command.get_version().unwrap_or_default());
    let mut written = Vec::new();
    let mut pending = vec![command];
    while let Some(command) = pending.pop() {
        pending.extend(command.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
        let page = clap_mangen::Man::new(command).source(source.clone());
        let path =
            page.generate_to(dir).with_context(|| format!("cannot write a man page into `{}`", dir.display()))?;
        written.push(path);
    }
    written.sort();
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> clap::Command {
        clap::Command::new("tool")
            .version("1.0")
            .subcommand(clap::Command::new("run").about("Runs").subcommand(clap::Command::new("fast")))
            .subcommand(clap::Command::new("secret").hide(true))
    }

    #[test]
    fn one_page_per_visible_command() {
        let dir = tempfile::tempdir().unwrap();
        let written = man_pages(command(), dir.path()).unwrap();
        let names: Vec<String> =
            written.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["tool-run-fast.1", "tool-run.1", "tool.1"]);
        let page = std::fs::read_to_string(dir.path().join("tool-run.1")).unwrap();
        assert!(page.contains(".TH tool-run 1") && page.contains("tool 1.0"), "{page}");
    }
}
