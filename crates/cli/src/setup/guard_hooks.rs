//! `mayfly setup --guard`: `mayfly guard` as the pre-commit and pre-push hooks of one
//! repository, with any hook already there moved aside to `<hook>.mayfly-chained` and
//! called after the guard with the same arguments and stdin.
//!
//! This does not use the setup journal: the journal is per HOME and `--undo` restores all
//! of it, while hooks belong to one repository. The chained hook is moved with a rename,
//! so `--undo` gives back the same file (bytes, mode, or symlink) by renaming it back.
//!
//! The hooks go where git runs them: the repository's hooks directory, or the
//! `core.hooksPath` the repository sets in its own config. A `core.hooksPath` set only
//! globally is refused rather than followed: hooks written there would run in every
//! repository, and hooks written in `.git/hooks` would never run.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

/// The hooks installed, and the `mayfly guard` mode each runs.
const HOOKS: [(&str, &str); 2] = [("pre-commit", "--staged"), ("pre-push", "--pre-push")];

/// The line that marks a hook as written by this module.
const MARK: &str = "# mayfly-guard hook: written by `mayfly setup --guard`";

/// Suffix of a hook that was there before, which mayfly's hook calls.
pub(crate) const CHAINED: &str = ".mayfly-chained";

/// Installs the hooks in the repository at `repo`; returns what changed (nothing when
/// they are already there).
pub(crate) fn install(repo: &Path, mayfly: &Path) -> anyhow::Result<Vec<String>> {
    let dir = hooks_dir(repo)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let mut changes = Vec::new();
    for (hook, mode) in HOOKS {
        let path = dir.join(hook);
        let chained = dir.join(format!("{hook}{CHAINED}"));
        let script = script(hook, mode, mayfly);
        let current = read_hook(&path);
        if current.as_deref() == Some(script.as_str()) {
            continue;
        }
        let ours = current.as_deref().is_some_and(|text| text.contains(MARK));
        if !ours && std::fs::symlink_metadata(&path).is_ok() {
            anyhow::ensure!(
                std::fs::symlink_metadata(&chained).is_err(),
                "`{}` exists and so does `{}`; not moving a hook over another\n\nhint: merge or remove one of them",
                path.display(),
                chained.display()
            );
            std::fs::rename(&path, &chained).with_context(|| format!("cannot move `{}` aside", path.display()))?;
            changes.push(format!("{}: moved to {} and chained", path.display(), chained.display()));
        }
        mayfly_core::files::write_atomic(&path, script.as_bytes(), 0o755)
            .with_context(|| format!("cannot write `{}`", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        changes.push(format!("{}: runs `mayfly guard {mode}`", path.display()));
    }
    Ok(changes)
}

/// A hook's text; `None` when absent or not a regular file of at most 1 MiB (a tracked
/// hooks folder may hold a link to a device or a FIFO: never read or waited on).
fn read_hook(path: &Path) -> Option<String> {
    mayfly_core::files::read_regular_text(path, 1024 * 1024).ok()
}

/// Removes mayfly's hooks and renames the chained ones back; returns what changed.
pub(crate) fn uninstall(repo: &Path) -> anyhow::Result<Vec<String>> {
    let dir = hooks_dir(repo)?;
    let mut changes = Vec::new();
    for (hook, _) in HOOKS {
        let path = dir.join(hook);
        let chained = dir.join(format!("{hook}{CHAINED}"));
        if !read_hook(&path).is_some_and(|text| text.contains(MARK)) {
            continue;
        }
        std::fs::remove_file(&path).with_context(|| format!("cannot remove `{}`", path.display()))?;
        if std::fs::symlink_metadata(&chained).is_ok() {
            std::fs::rename(&chained, &path).with_context(|| format!("cannot restore `{}`", path.display()))?;
            changes.push(format!("{}: restored the hook that was there before", path.display()));
        } else {
            changes.push(format!("{}: removed", path.display()));
        }
    }
    Ok(changes)
}

/// The directory git runs this repository's hooks from.
fn hooks_dir(repo: &Path) -> anyhow::Result<PathBuf> {
    let git = |args: &[&str]| -> anyhow::Result<(bool, String)> {
        let out = Command::new("git").arg("-C").arg(repo).args(args).output().context("cannot run git")?;
        Ok((out.status.success(), String::from_utf8_lossy(&out.stdout).trim().to_owned()))
    };
    let (is_repo, git_dir) = git(&["rev-parse", "--absolute-git-dir"])?;
    anyhow::ensure!(is_repo, "`{}` is not in a git repository\n\nhint: pass `--repo PATH`", repo.display());
    let (_, local) = git(&["config", "--local", "--get", "core.hooksPath"])?;
    if !local.is_empty() {
        // A relative hooksPath is relative to where hooks run: the top of the work tree.
        let (_, top) = git(&["rev-parse", "--show-toplevel"])?;
        let base = if top.is_empty() { PathBuf::from(&git_dir) } else { PathBuf::from(top) };
        return Ok(base.join(local));
    }
    let (_, any) = git(&["config", "--get", "core.hooksPath"])?;
    anyhow::ensure!(
        any.is_empty(),
        "`core.hooksPath` is set outside this repository (`{any}`), so git runs no hook from its own \
         hooks directory\n\nhint: set it for this repository (`git config --local core.hooksPath PATH`) and run again"
    );
    let (_, common) = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"])?;
    Ok(PathBuf::from(common).join("hooks"))
}

/// The hook: the guard first, then the chained hook with the same arguments and stdin.
/// Only pre-push gets stdin, so only it is kept in a variable to give to both.
fn script(hook: &str, mode: &str, mayfly: &Path) -> String {
    let mayfly = shell_quote(&mayfly.display().to_string());
    let (guard, chained) = if hook == "pre-push" {
        (
            format!(
                "input=$(cat)\nfeed() {{ if [ -n \"$input\" ]; then printf '%s\\n' \"$input\"; fi; }}\n\
                 feed | {mayfly} guard {mode} || exit $?"
            ),
            "feed | \"$chained\" \"$@\"",
        )
    } else {
        (format!("{mayfly} guard {mode} || exit $?"), "\"$chained\" \"$@\"")
    };
    format!(
        "#!/bin/sh\n{MARK}; `mayfly setup --guard --undo` removes it.\n{guard}\n\
         chained=\"$(dirname \"$0\")/{hook}{CHAINED}\"\n\
         if [ -x \"$chained\" ]; then\n    {chained}\nfi\n"
    )
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hook_quotes_the_binary_and_chains_with_arguments_and_stdin() {
        let script = script("pre-push", "--pre-push", Path::new("/opt/it's/mayfly"));
        assert!(script.starts_with("#!/bin/sh\n# mayfly-guard hook"), "{script}");
        assert!(script.contains(r"'/opt/it'\''s/mayfly' guard --pre-push || exit $?"), "{script}");
        assert!(script.contains("| \"$chained\" \"$@\""), "{script}");
    }
}
