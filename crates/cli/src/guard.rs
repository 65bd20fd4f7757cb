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
    let place = path.display().to_string();
    if path == Path::new("-") {
        return scan_lines(guard, &place, std::io::stdin().lock()).context("cannot read stdin");
    }
    // A file named on the command line is read as named: a link or a FIFO
    // (`<(command)`) is what the user asked for.
    let file = std::fs::File::open(path).with_context(|| format!("cannot read `{place}`"))?;
    scan_lines(guard, &place, file).with_context(|| format!("cannot read `{place}`"))
}

/// The longest piece of a line scanned at once: a longer line (a minified bundle, a
/// binary) is scanned in pieces, so memory stays bounded whatever the file.
const MAX_PIECE: usize = 1024 * 1024;

/// How much of a piece the next piece of the same line scans again, before the word the
/// piece's end cut, so a value and the name it is assigned to are seen together.
const OVERLAP: usize = 16 * 1024;

/// Scans what `reader` gives, line by line, each value found once per line. A piece that
/// does not end its line is scanned up to its last whole word; the next piece starts with
/// the word that was cut (whole, up to a piece's size) and [`OVERLAP`] bytes before it, so
/// a value is never found cut. A line holding the allow marker in any piece is skipped
/// whole.
fn scan_lines(guard: &Guard, place: &str, reader: impl Read) -> std::io::Result<Vec<Located>> {
    use std::io::BufRead;
    let in_word = |b: &u8| b.is_ascii_alphanumeric() || b"-_.=+/".contains(b);
    let mut reader = std::io::BufReader::new(reader);
    let (mut piece, mut line, mut found) = (Vec::new(), 1, Vec::<Located>::new());
    let (mut first_of_line, mut allowed) = (0, false);
    // Where the word cut at the end of the last piece starts in `piece`: the bytes before
    // it were scanned then.
    let mut resume = 0;
    loop {
        let carried = !piece.is_empty();
        let read = (&mut reader).take(MAX_PIECE as u64).read_until(b'\n', &mut piece)?;
        if read == 0 && !carried {
            return Ok(found);
        }
        // Short of a full piece without a newline is the end of the input.
        let ended = piece.ends_with(b"\n") || read < MAX_PIECE;
        // The word the overlap starts inside was scanned whole last time: skip it, never
        // past the cut word.
        let start = piece[..resume].iter().position(|b| !in_word(b)).unwrap_or(resume);
        let end =
            if ended { piece.len() } else { piece.iter().rposition(|b| !in_word(b)).map_or(piece.len(), |at| at + 1) };
        let text = String::from_utf8_lossy(&piece[start.min(end)..end]);
        let text = text.strip_suffix('\n').map_or(&*text, |t| t.strip_suffix('\r').unwrap_or(t));
        if !allowed && text.contains(mayfly_core::guard::ALLOW_MARKER) {
            found.truncate(first_of_line);
            allowed = true;
        }
        for finding in guard.scan_line(line, text).into_iter().filter(|_| !allowed) {
            let again =
                |seen: &Located| seen.finding.kind == finding.kind && seen.finding.fingerprint == finding.fingerprint;
            if !found[first_of_line..].iter().any(again) {
                found.push(Located { place: place.to_owned(), finding });
            }
        }
        if ended {
            (line, first_of_line, allowed, resume) = (line + 1, found.len(), false, 0);
            piece.clear();
        } else {
            let keep_from = end.min(piece.len().saturating_sub(OVERLAP)).max(piece.len().saturating_sub(MAX_PIECE));
            piece.drain(..keep_from);
            resume = end.saturating_sub(keep_from);
        }
    }
}

/// The top of the work tree, as git names it (bytes, not text: any path works).
fn work_tree_top() -> anyhow::Result<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let top = git(&["rev-parse", "--show-toplevel"])?;
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(top.strip_suffix(b"\n").unwrap_or(&top))))
}

/// Every tracked regular file in the work tree. No link is followed, in the name or on
/// the way to it, and a file that is not regular (git checks out none) is skipped; each
/// is opened once, so one swapped after it was listed is refused by what was opened,
/// never waited on.
fn scan_tracked(guard: &Guard, ignore: &globset::GlobSet) -> anyhow::Result<Vec<Located>> {
    use std::os::unix::ffi::OsStrExt;
    let top = work_tree_top()?;
    // `:/` with `--full-name`: every tracked file, named from the top, wherever we are.
    let listed = git(&["ls-files", "-z", "--full-name", "--", ":/"])?;
    let mut found = Vec::new();
    for name in listed.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let path = Path::new(std::ffi::OsStr::from_bytes(name));
        let shown = String::from_utf8_lossy(name);
        if ignore.is_match(path) {
            continue;
        }
        let file = match mayfly_core::files::open_regular_beneath(&top, path) {
            Ok(file) => file,
            // Deleted in the work tree, a link, or not a file at all: nothing to read.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidInput) => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read `{shown}`")),
        };
        found.extend(scan_lines(guard, &shown, file).with_context(|| format!("cannot read `{shown}`"))?);
    }
    Ok(found)
}

/// The globs of `.mayfly-guard-ignore` at the top of the work tree (none outside one).
fn ignore_globs() -> anyhow::Result<globset::GlobSet> {
    let mut set = globset::GlobSetBuilder::new();
    let text = match work_tree_top().ok().map(|top| top.join(IGNORE_FILE)) {
        None => None,
        Some(file) => match mayfly_core::files::read_regular_text(&file, 1024 * 1024) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => anyhow::bail!("`{}` {e}", mayfly_core::sanitize_for_terminal(&file.display().to_string())),
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake token, assembled here so this file holds no token-shaped text.
    fn fake(body: char) -> String {
        ["gh", "p_FAKE", &body.to_string().repeat(4), "FAKE0000FAKE0000FAKE0000FAKE"].concat()
    }

    fn lines_found(text: &[u8]) -> Vec<usize> {
        let found = scan_lines(&Guard::default(), "f", text).unwrap();
        found.iter().map(|l| l.finding.line).collect()
    }

    #[test]
    fn lines_are_numbered_as_an_editor_numbers_them() {
        let text = format!("one\r\n{}\n\nfour {}", fake('0'), fake('1'));
        assert_eq!(lines_found(text.as_bytes()), [2, 4]);
    }

    #[test]
    fn a_value_cut_between_two_pieces_of_a_long_line_is_found_whole_and_once() {
        let piece = MAX_PIECE;
        for cut in [1, 10, fake('0').len() / 2, fake('0').len() - 1] {
            // Two values on the first line: one across the first cut, one 2 MiB on.
            let mut line = "x".repeat(piece - cut - 1);
            line.push_str(&format!(" {} ", fake('0')));
            line.push_str(&"y".repeat(piece * 2));
            line.push_str(&format!(" {} end\nnext {}\n", fake('1'), fake('2')));
            let found = scan_lines(&Guard::default(), "f", line.as_bytes()).unwrap();
            let found: Vec<_> = found.iter().map(|l| (l.finding.line, l.finding.kind)).collect();
            assert_eq!(found, [(1, "github-token"), (1, "github-token"), (2, "github-token")], "cut {cut} bytes in");
        }
        // The input ends with a full piece and no newline: its last word is still read.
        let last = format!("{} {}", "x".repeat(piece - fake('0').len() - 1), fake('0'));
        assert_eq!(last.len(), piece);
        assert_eq!(lines_found(last.as_bytes()), [1]);
    }

    #[test]
    fn a_value_longer_than_the_overlap_across_a_cut_is_still_found() {
        // A 20 KiB JWT-shaped value, 18 KiB of it before the first cut.
        let part = "a1".repeat(5 * 1024);
        let jwt = format!("eyJ{part}.eyJ{part}.sig0123");
        let line = format!("{} {jwt} tail\n", "x".repeat(MAX_PIECE - 18 * 1024 - 1));
        let found = scan_lines(&Guard::default(), "f", line.as_bytes()).unwrap();
        let kinds: Vec<_> = found.iter().map(|l| (l.finding.line, l.finding.kind)).collect();
        assert_eq!(kinds, [(1, "jwt")]);
    }

    #[test]
    fn the_allow_marker_in_any_piece_of_a_long_line_allows_the_whole_line() {
        let marker = mayfly_core::guard::ALLOW_MARKER;
        let long =
            format!("{} {} {} # {marker}\nnext {}\n", fake('0'), "x".repeat(3 * MAX_PIECE), fake('1'), fake('2'));
        assert_eq!(lines_found(long.as_bytes()), [2]);
    }
}
