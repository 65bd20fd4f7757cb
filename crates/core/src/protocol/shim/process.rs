//! The binary's [`Runner`]: real processes.

use std::ffi::OsString;

use super::{Runner, Step};

/// Starts real processes.
pub struct Processes;

impl Runner for Processes {
    fn run(&mut self, step: &Step, vars: &[(String, String)]) -> Result<i32, String> {
        let status =
            command(step, vars).status().map_err(|e| format!("cannot run `{}`: {e}", step.program.display()))?;
        // A tool killed by a signal: the shell's convention.
        Ok(status.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            128 + status.signal().unwrap_or(0)
        }))
    }

    fn output(&mut self, step: &Step, vars: &[(String, String)]) -> Option<String> {
        let out =
            command(step, vars).stdin(std::process::Stdio::null()).stderr(std::process::Stdio::null()).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn exec(&mut self, steps: &[Step], vars: &[(String, String)]) -> String {
        use std::os::unix::process::CommandExt;
        let error = match steps {
            [one] => command(one, vars).exec(),
            // Several steps: a shell runs them in order and stops at the first failure. The
            // words reach it as positional parameters, never inside the script text.
            _ => {
                let mut script = String::from("set -e");
                let mut words: Vec<OsString> = Vec::new();
                for step in steps {
                    script.push('\n');
                    if let Some(dir) = &step.dir {
                        words.push(dir.clone().into_os_string());
                        script.push_str(&format!("cd \"${{{}}}\" && ", words.len()));
                    }
                    for word in
                        std::iter::once(step.program.as_os_str()).chain(step.args.iter().map(OsString::as_os_str))
                    {
                        words.push(word.to_owned());
                        script.push_str(&format!("\"${{{}}}\" ", words.len()));
                    }
                }
                let mut shell = std::process::Command::new("/bin/sh");
                for name in steps.iter().flat_map(|s| &s.unset) {
                    shell.env_remove(name);
                }
                shell.arg("-c").arg(script).arg("mayfly-shim").args(words).envs(vars.iter().cloned()).exec()
            }
        };
        format!("cannot run `{}`: {error}", steps.first().map_or_else(String::new, |s| s.program.display().to_string()))
    }
}

fn command(step: &Step, vars: &[(String, String)]) -> std::process::Command {
    let mut command = std::process::Command::new(&step.program);
    for name in &step.unset {
        command.env_remove(name);
    }
    command.args(&step.args).envs(vars.iter().cloned());
    if let Some(dir) = &step.dir {
        command.current_dir(dir);
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_runs_without_its_unset_variables_and_with_its_own() {
        let step = Step {
            program: "/usr/bin/env".into(),
            args: Vec::new(),
            dir: None,
            unset: vec!["PATH".into(), "MAYFLY_T".into()],
        };
        assert!(std::env::var_os("PATH").is_some(), "the test needs PATH to remove");
        let out = Processes.output(&step, &[("MAYFLY_T".into(), "set".into())]).unwrap();
        assert!(!out.lines().any(|l| l.starts_with("PATH=")), "{out}");
        assert!(out.lines().any(|l| l == "MAYFLY_T=set"), "a variable set wins over its removal: {out}");
    }
}
