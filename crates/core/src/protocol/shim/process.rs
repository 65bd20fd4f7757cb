//! The binary's [`Runner`]: real processes.

use std::ffi::OsString;

use super::{Runner, Step};

/// Starts real processes.
pub struct Processes;

impl Runner for Processes {
    fn run(&mut self, step: &Step, vars: &[(String, String)]) -> Result<i32, String> {
        let held = hold_terminal_signals();
        let status = command(step, vars).status();
        for id in held {
            signal_hook::low_level::unregister(id);
        }
        let status = status.map_err(|e| format!("cannot run `{}`: {e}", step.program.display()))?;
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
                environ(&mut shell, steps.iter().flat_map(|s| &s.unset), vars);
                shell.arg("-c").arg(script).arg("mayfly-shim").args(words).exec()
            }
        };
        format!("cannot run `{}`: {error}", steps.first().map_or_else(String::new, |s| s.program.display().to_string()))
    }
}

fn command(step: &Step, vars: &[(String, String)]) -> std::process::Command {
    let mut command = std::process::Command::new(&step.program);
    environ(&mut command, &step.unset, vars);
    command.args(&step.args);
    if let Some(dir) = &step.dir {
        command.current_dir(dir);
    }
    command
}

/// As `system()` does while its child runs: Ctrl-C and Ctrl-\\ (which the terminal sends
/// to the whole foreground group) stop the tool but not the shim, which outlives it to
/// remove what it staged. Caught, not ignored: a caught signal is back to its default in
/// the tool once it execs, an ignored one would stay ignored there.
fn hold_terminal_signals() -> Vec<signal_hook::SigId> {
    use std::sync::{Arc, atomic::AtomicBool};
    let caught = Arc::new(AtomicBool::new(false));
    [signal_hook::consts::SIGINT, signal_hook::consts::SIGQUIT]
        .into_iter()
        .filter_map(|signal| signal_hook::flag::register(signal, Arc::clone(&caught)).ok())
        .collect()
}

/// A variable that makes Python's and Node's TLS write each session's keys to a file: with
/// it, whoever reads the file can decrypt the traffic that carries the token.
const KEY_LOG: &str = "SSLKEYLOGFILE";

/// A step's environment: the shim's without `unset`, with `vars`; and without
/// [`KEY_LOG`] when `vars` carry a value (a token).
fn environ<'a>(
    command: &mut std::process::Command,
    unset: impl IntoIterator<Item = &'a String>,
    vars: &[(String, String)],
) {
    for name in unset {
        command.env_remove(name);
    }
    if vars.iter().any(|(_, value)| !value.is_empty()) {
        command.env_remove(KEY_LOG);
    }
    command.envs(vars.iter().cloned());
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

    #[test]
    fn a_step_that_holds_a_token_runs_without_a_tls_key_log() {
        let step = Step { program: "/usr/bin/env".into(), args: Vec::new(), dir: None, unset: Vec::new() };
        let removed = |vars: &[(String, String)]| {
            let command = command(&step, vars);
            command.get_envs().any(|(name, value)| name == KEY_LOG && value.is_none())
        };
        assert!(removed(&[("HF_TOKEN".into(), "hf_x".into())]), "a token's step keeps no key log");
        assert!(!removed(&[]), "a tool run untouched keeps the caller's");
        assert!(!removed(&super::super::phases::quiet()), "nor does a step without a token");
    }

    #[test]
    fn ctrl_c_stops_the_tool_and_not_the_shim_that_waits_for_it() {
        // The tool sends SIGINT to the shim (this test), then to itself.
        let script = "kill -INT $PPID; kill -INT $$; exit 3";
        let step =
            Step { program: "/bin/sh".into(), args: vec!["-c".into(), script.into()], dir: None, unset: Vec::new() };
        assert_eq!(Processes.run(&step, &[]), Ok(130), "the tool gets SIGINT's default and dies of it");
    }
}
