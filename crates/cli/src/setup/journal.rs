//! What `mayfly setup` changed, kept so `--undo` restores every file byte for byte (or
//! removes what setup created).
//!
//! The journal lives in `$XDG_STATE_HOME/mayfly/setup/` (0700): a JSON list of the paths
//! setup touched with, for each, a private copy (0600) of the file as it was before the
//! first change, and the SHA-256 of what setup left there. A file changed since is not
//! overwritten by `--undo` unless forced. Setup writes no secret, but a file it edits may
//! already hold one (a docker config with `auths`): its copy is as private as the file.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Default, Serialize, Deserialize)]
struct Entries {
    entries: Vec<Entry>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Entry {
    path: PathBuf,
    /// The copy of the original, when the file existed.
    backup: Option<PathBuf>,
    /// Its permission bits.
    mode: Option<u32>,
    /// What setup left there: the file's SHA-256, or the symlink's target.
    after: String,
    /// Directories setup created for it, outermost first.
    created_dirs: Vec<PathBuf>,
}

/// The journal of one HOME.
pub(crate) struct Journal {
    dir: PathBuf,
    entries: Entries,
}

fn digest(bytes: &[u8]) -> String {
    hex_string(&Sha256::digest(bytes))
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a path holds now, as the journal records it.
fn state_of(path: &Path) -> Option<String> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if meta.file_type().is_symlink() {
        return std::fs::read_link(path).ok().map(|t| format!("symlink:{}", t.display()));
    }
    std::fs::read(path).ok().map(|b| digest(&b))
}

impl Journal {
    /// Opens (or starts) the journal in `dir`.
    pub(crate) fn open(dir: &Path) -> anyhow::Result<Self> {
        let file = dir.join("journal.json");
        let entries = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("`{}` is damaged", file.display()))?,
            Err(_) => Entries::default(),
        };
        Ok(Self { dir: dir.to_owned(), entries })
    }

    /// True when setup has changed nothing (yet).
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.entries.is_empty()
    }

    fn private_dir(&self) -> anyhow::Result<()> {
        Ok(mayfly_core::files::create_private_dir(&self.dir.join("backups"))?)
    }

    /// Call before the first change to `path` in this run: keeps its original (once ever)
    /// and creates its directory, remembering which directories were new.
    pub(crate) fn before(&mut self, path: &Path) -> anyhow::Result<()> {
        if self.entries.entries.iter().any(|e| e.path == path) {
            return Ok(());
        }
        self.private_dir()?;
        let (backup, mode) = match std::fs::read(path) {
            Ok(bytes) => {
                let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
                let name = self.dir.join("backups").join(format!(
                    "{}-{}",
                    self.entries.entries.len(),
                    digest(path.as_os_str().as_encoded_bytes())
                ));
                write_private(&name, &bytes)?;
                (Some(name), Some(mode))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, None),
            Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", path.display())),
        };
        let mut created_dirs = Vec::new();
        if let Some(parent) = path.parent() {
            for dir in parent.ancestors().collect::<Vec<_>>().into_iter().rev() {
                if !dir.as_os_str().is_empty() && !dir.exists() {
                    std::fs::DirBuilder::new().mode(0o700).create(dir)?;
                    created_dirs.push(dir.to_owned());
                }
            }
        }
        self.entries.entries.push(Entry { path: path.to_owned(), backup, mode, after: String::new(), created_dirs });
        Ok(())
    }

    /// Call after changing `path`: records what setup left there, and saves the journal.
    pub(crate) fn after(&mut self, path: &Path) -> anyhow::Result<()> {
        let state = state_of(path).unwrap_or_default();
        if let Some(entry) = self.entries.entries.iter_mut().find(|e| e.path == path) {
            entry.after = state;
        }
        self.save()
    }

    fn save(&self) -> anyhow::Result<()> {
        self.private_dir()?;
        write_private(&self.dir.join("journal.json"), &serde_json::to_vec_pretty(&self.entries)?)
    }

    /// Puts everything back, newest change first. Returns what was restored and what was
    /// left alone because it changed since setup (unless `force`).
    pub(crate) fn undo(self, force: bool) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let (mut done, mut kept) = (Vec::new(), Vec::new());
        let mut remaining = Vec::new();
        for entry in self.entries.entries.iter().rev() {
            let path = &entry.path;
            if !force && state_of(path).unwrap_or_default() != entry.after {
                kept.push(format!("{} changed since setup; left as it is (--force restores it)", path.display()));
                remaining.push(entry.clone());
                continue;
            }
            match &entry.backup {
                Some(backup) => {
                    let bytes =
                        std::fs::read(backup).with_context(|| format!("backup of `{}` is missing", path.display()))?;
                    let _ = std::fs::remove_file(path);
                    let mut file = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(entry.mode.unwrap_or(0o600))
                        .open(path)?;
                    std::io::Write::write_all(&mut file, &bytes)?;
                    // The mode given at creation is cut by the umask; set it exactly.
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(entry.mode.unwrap_or(0o600)))?;
                    done.push(format!("restored {}", path.display()));
                }
                None => {
                    if std::fs::symlink_metadata(path).is_ok() {
                        std::fs::remove_file(path)?;
                    }
                    done.push(format!("removed {}", path.display()));
                }
            }
            for dir in entry.created_dirs.iter().rev() {
                // Only if empty: something else may live there now.
                let _ = std::fs::remove_dir(dir);
            }
        }
        if remaining.is_empty() {
            std::fs::remove_dir_all(&self.dir).with_context(|| format!("cannot remove `{}`", self.dir.display()))?;
        } else {
            remaining.reverse();
            Self { dir: self.dir.clone(), entries: Entries { entries: remaining } }.save()?;
        }
        Ok((done, kept))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    mayfly_core::files::write_atomic(path, bytes, 0o600).with_context(|| format!("cannot write `{}`", path.display()))
}

/// Replaces a file's contents atomically, keeping its mode (new files: 0600).
pub(crate) fn replace_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o600);
    mayfly_core::files::write_atomic(path, contents.as_bytes(), mode)
        .with_context(|| format!("cannot write `{}`", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undo_restores_bytes_and_modes_and_removes_what_was_created() {
        let home = tempfile::tempdir().unwrap();
        let state = home.path().join("state");
        let existing = home.path().join("existing.conf");
        std::fs::write(&existing, "original\r\nbytes").unwrap();
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o640)).unwrap();
        let created = home.path().join("new/dir/created.conf");

        let mut journal = Journal::open(&state).unwrap();
        for path in [&existing, &created] {
            journal.before(path).unwrap();
            replace_file(path, "changed by setup\n").unwrap();
            journal.after(path).unwrap();
        }
        // A second run keeps the first original.
        let mut again = Journal::open(&state).unwrap();
        again.before(&existing).unwrap();
        replace_file(&existing, "changed twice\n").unwrap();
        again.after(&existing).unwrap();

        let (done, kept) = Journal::open(&state).unwrap().undo(false).unwrap();
        assert_eq!((done.len(), kept.len()), (2, 0));
        assert_eq!(std::fs::read(&existing).unwrap(), b"original\r\nbytes");
        assert_eq!(std::fs::metadata(&existing).unwrap().permissions().mode() & 0o777, 0o640);
        assert!(!home.path().join("new").exists(), "created directories are gone");
        assert!(!state.exists());
    }

    #[test]
    fn files_changed_since_setup_are_left_alone_unless_forced() {
        let home = tempfile::tempdir().unwrap();
        let state = home.path().join("state");
        let file = home.path().join("f");
        let mut journal = Journal::open(&state).unwrap();
        journal.before(&file).unwrap();
        replace_file(&file, "setup\n").unwrap();
        journal.after(&file).unwrap();
        std::fs::write(&file, "the user's edit\n").unwrap();
        let (done, kept) = Journal::open(&state).unwrap().undo(false).unwrap();
        assert_eq!((done.len(), kept.len()), (0, 1));
        assert!(file.exists());
        let (done, _) = Journal::open(&state).unwrap().undo(true).unwrap();
        assert_eq!(done.len(), 1);
        assert!(!file.exists());
    }
}
