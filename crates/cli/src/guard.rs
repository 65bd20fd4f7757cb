//! `mayfly guard`: scans what is about to leave the machine for credentials: the staged
//! changes (pre-commit), the commits a push would send (pre-push), every tracked file, or
//! named files and stdin. It prints where each finding is (file, line, kind,
//! fingerprint), never the value.
//!
//! Exit codes: 0 clean, 1 something found, 2 a usage or I/O error (the hook then fails
//! closed too).
//!
//! In a repository, paths matching a glob in `.mayfly-guard-ignore` (at the top of the
//! work tree) are not scanned; files named on the command line always are.

mod diff;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::Context;
use mayfly_core::guard::{Finding, Guard, minted_fingerprints};
use mayfly_core::{AuditLog, Env, sanitize_for_terminal};

/// The file of path globs the guard skips, at the top of the work tree.
pub(crate) const IGNORE_FILE: &str = ".mayfly-guard-ignore";

/// Arguments of `mayfly guard`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Scan the staged changes, as a pre-commit hook (the default without files)
    #[arg(long, conflicts_with_all = ["pre_push", "tracked", "files"])]
    staged: bool,
    /// Scan the commits a push would send, reading git's pre-push lines on stdin
    #[arg(long, conflicts_with_all = ["tracked", "files"])]
    pre_push: bool,
    /// Scan every file git tracks in the work tree
    #[arg(long, conflicts_with = "files")]
    tracked: bool,
    /// Files to scan (`-` reads stdin)
    files: Vec<PathBuf>,
}

/// A finding and where it is.
struct Located {
    place: String,
    finding: Finding,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    match scan(args) {
        Ok(found) if found.is_empty() => Ok(ExitCode::SUCCESS),
        Ok(found) => {
            report(&found);
            Ok(ExitCode::from(1))
        }
        Err(error) => {
            eprintln!("mayfly guard: {}", sanitize_for_terminal(&format!("{error:#}")));
            Ok(ExitCode::from(2))
        }
    }
}

fn scan(args: &Args) -> anyhow::Result<Vec<Located>> {
    let env = Env::from_os();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let minted = match AuditLog::from_env(&env).path() {
        Some(log) => minted_fingerprints(log, now).with_context(|| format!("cannot read `{}`", log.display()))?,
        None => Default::default(),
    };
    let guard = Guard::new(minted);
    if !args.files.is_empty() {
        return args.files.iter().map(|path| scan_file(&guard, path)).collect::<Result<Vec<_>, _>>().map(flatten);
    }
    let ignore = ignore_globs()?;
    if args.pre_push {
        let mut lines = String::new();
        std::io::stdin().read_to_string(&mut lines).context("cannot read the pre-push lines on stdin")?;
        return diff::scan_push(&guard, &lines, &ignore);
    }
    if args.tracked {
        return scan_tracked(&guard, &ignore);
    }
    let staged = git(&["diff", "--cached", "-U0", "--no-color", "--no-ext-diff", "--no-textconv", "--no-prefix"])?;
    Ok(diff::scan_diff(&guard, &String::from_utf8_lossy(&staged), &ignore, ""))
}

fn flatten(lists: Vec<Vec<Located>>) -> Vec<Located> {
    lists.into_iter().flatten().collect()
}

fn scan_file(guard: &Guard, path: &Path) -> anyhow::Result<Vec<Located>> {
    let bytes = if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes).context("cannot read stdin")?;
        bytes
    } else {
        std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?
    };
    Ok(locate(guard, &path.display().to_string(), &bytes))
}

fn locate(guard: &Guard, place: &str, bytes: &[u8]) -> Vec<Located> {
    let text = String::from_utf8_lossy(bytes);
    guard.scan_text(&text).into_iter().map(|finding| Located { place: place.to_owned(), finding }).collect()
}

/// Every tracked regular file in the work tree (symlinks are not followed).
fn scan_tracked(guard: &Guard, ignore: &globset::GlobSet) -> anyhow::Result<Vec<Located>> {
    let top = PathBuf::from(String::from_utf8_lossy(&git(&["rev-parse", "--show-toplevel"])?).trim());
    let listed = git(&["-C", &top.display().to_string(), "ls-files", "-z"])?;
    let mut found = Vec::new();
    for name in listed.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name);
        let path = top.join(&*name);
        let is_file = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file());
        if ignore.is_match(&*name) || !is_file {
            continue;
        }
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read `{name}`"))?;
        found.extend(locate(guard, &name, &bytes));
    }
    Ok(found)
}

/// The globs of `.mayfly-guard-ignore` at the top of the work tree (none outside one).
fn ignore_globs() -> anyhow::Result<globset::GlobSet> {
    let mut set = globset::GlobSetBuilder::new();
    let top = git(&["rev-parse", "--show-toplevel"]).ok();
    let file = top.map(|top| PathBuf::from(String::from_utf8_lossy(&top).trim()).join(IGNORE_FILE));
    let text = match file.map(|f| mayfly_core::files::read_regular_text(&f, 1024 * 1024).map_err(|e| (f, e))) {
        Some(Ok(text)) => Some(text),
        Some(Err((_, e))) if e.kind() == std::io::ErrorKind::NotFound => None,
        Some(Err((f, e))) => anyhow::bail!("`{}` {e}", mayfly_core::sanitize_for_terminal(&f.display().to_string())),
        None => None,
    };
    if let Some(text) = text {
        for glob in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let glob = globset::GlobBuilder::new(glob)
                .literal_separator(true)
                .build()
                .with_context(|| format!("`{IGNORE_FILE}`: bad glob `{glob}`"))?;
            set.add(glob);
        }
    }
    Ok(set.build()?)
}

/// Runs git in the current directory and returns its stdout.
pub(crate) fn git(args: &[&str]) -> anyhow::Result<Vec<u8>> {
    let out = Command::new("git").args(["-c", "core.quotePath=false"]).args(args).output().context("cannot run git")?;
    anyhow::ensure!(
        out.status.success(),
        "git {}: {}",
        args.first().unwrap_or(&""),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(out.stdout)
}

fn report(found: &[Located]) {
    for Located { place, finding } in found {
        let fingerprint = finding.fingerprint.as_ref().map(|f| format!(" {f}")).unwrap_or_default();
        eprintln!("{}:{}: {}{fingerprint}", sanitize_for_terminal(place), finding.line, finding.kind);
    }
    eprintln!(
        "mayfly guard: {} possible credential{} found\n\n\
         hint: remove it and rotate it if it is real; a deliberate fake can stay with a \
         `{}` comment on its line or its path in `{IGNORE_FILE}`",
        found.len(),
        if found.len() == 1 { "" } else { "s" },
        mayfly_core::guard::ALLOW_MARKER,
    );
}
