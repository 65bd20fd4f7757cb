//! The lines a commit or a push adds, read from git's unified diffs (`-U0`, no prefixes),
//! and the commits a push would send, from git's pre-push lines.

use globset::GlobSet;
use mayfly_core::guard::Guard;

use super::{Located, git};

/// What git writes for a ref that does not exist on one side.
const ZERO: &str = "0000000000000000000000000000000000000000";

/// Findings on the added lines of a diff; `prefix` goes before each path (a commit id).
pub(super) fn scan_diff(guard: &Guard, diff: &str, ignore: &GlobSet, prefix: &str) -> Vec<Located> {
    let mut found = Vec::new();
    let mut path: Option<String> = None;
    let mut next_line = 0;
    let mut commit = prefix.to_owned();
    for line in diff.lines() {
        if let Some(id) = line.strip_prefix("commit ").filter(|id| is_object_id(id)) {
            commit = format!("{}:", &id[..12]);
        } else if let Some(name) = line.strip_prefix("+++ ") {
            let name = name.trim_matches('"');
            path = (name != "/dev/null" && !ignore.is_match(name)).then(|| name.to_owned());
        } else if let Some(hunk) = line.strip_prefix("@@ ") {
            next_line = new_start(hunk).unwrap_or(0);
        } else if let (Some(added), Some(path)) = (line.strip_prefix('+'), &path) {
            let place = format!("{commit}{path}");
            found.extend(
                guard.scan_line(next_line, added).into_iter().map(|finding| Located { place: place.clone(), finding }),
            );
            next_line += 1;
        }
    }
    found
}

/// The first new line of a hunk: `-a,b +c,d @@` gives `c`.
fn new_start(hunk: &str) -> Option<usize> {
    let new = hunk.split(' ').find_map(|part| part.strip_prefix('+'))?;
    new.split(',').next()?.parse().ok()
}

fn is_object_id(text: &str) -> bool {
    (text.len() == 40 || text.len() == 64) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Findings in the commits a push sends. Each pre-push line reads `<local ref> <local
/// id> <remote ref> <remote id>`: a deletion (local id all zeros) sends nothing; a new
/// branch (remote id all zeros), or a remote id this repository does not have, sends
/// the commits no remote-tracking ref holds; an update sends `remote..local`.
pub(super) fn scan_push(guard: &Guard, lines: &str, ignore: &GlobSet) -> anyhow::Result<Vec<Located>> {
    let mut found = Vec::new();
    for line in lines.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, local, _, remote] = fields[..] else {
            anyhow::bail!("not a pre-push line (`<local ref> <local id> <remote ref> <remote id>`)");
        };
        anyhow::ensure!(is_object_id(local) && is_object_id(remote), "not a pre-push line: bad object id");
        if local.bytes().all(|b| b == b'0') {
            continue;
        }
        let known = remote != ZERO && git(&["cat-file", "-e", &format!("{remote}^{{commit}}")]).is_ok();
        let not_remote = format!("^{remote}");
        let range: Vec<&str> = if known { vec![local, &not_remote] } else { vec![local, "--not", "--remotes"] };
        let mut args = vec!["log", "-p", "-U0", "--format=commit %H", "--no-color", "--no-ext-diff", "--no-textconv"];
        args.extend(["--no-prefix"]);
        args.extend(range);
        let log = git(&args)?;
        found.extend(scan_diff(guard, &String::from_utf8_lossy(&log), ignore, ""));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_lines_are_numbered_from_their_hunk_and_ignored_paths_skipped() {
        let token = format!("{}{}", "ghp_", "FAKE0000FAKE0000FAKE0000FAKE0000FAKE");
        let diff = format!(
            "commit {id}\ndiff --git src/a.rs src/a.rs\n--- src/a.rs\n+++ src/a.rs\n@@ -3,0 +4,2 @@\n+ok\n+let t = \"{token}\";\n\
             diff --git fixtures/x fixtures/x\n--- /dev/null\n+++ fixtures/x\n@@ -0,0 +1 @@\n+{token}\n",
            id = "a".repeat(40)
        );
        let ignore = {
            let mut set = globset::GlobSetBuilder::new();
            set.add(globset::Glob::new("fixtures/**").unwrap());
            set.build().unwrap()
        };
        let found = scan_diff(&Guard::default(), &diff, &ignore, "");
        let places: Vec<_> = found.iter().map(|l| (l.place.as_str(), l.finding.line, l.finding.kind)).collect();
        assert_eq!(places, [("aaaaaaaaaaaa:src/a.rs", 5, "github-token")]);
    }
}
