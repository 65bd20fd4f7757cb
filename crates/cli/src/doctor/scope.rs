//! Where the tools look: the home directory, the environment's overrides of it, and the
//! current directory.

use std::path::{Path, PathBuf};

use mayfly_core::{Env, EnvVars};

/// Largest file read; credential files are small, and a bigger one is not one of them.
const MAX_FILE: u64 = 4 << 20;

/// What a check may look at.
pub(crate) struct Scope {
    /// The environment, with `HOME` replaced by `--home`.
    pub(crate) env: Env,
    /// The home directory.
    pub(crate) home: PathBuf,
    /// Where project files (`.npmrc`, `.git`) are looked for, upwards.
    pub(crate) cwd: PathBuf,
}

/// A file as read: absent, its text, or why it could not be read.
pub(crate) enum Contents {
    Missing,
    Text(String),
    Unreadable(String),
}

impl Scope {
    /// `$XDG_CONFIG_HOME`, else `~/.config` (a relative value is ignored, as the XDG
    /// spec asks).
    pub(crate) fn xdg_config(&self) -> PathBuf {
        self.env.path(EnvVars::XDG_CONFIG_HOME).filter(|p| p.is_absolute()).unwrap_or_else(|| self.home.join(".config"))
    }

    /// A path-valued variable, with `~/` expanded against the home directory.
    pub(crate) fn path_var(&self, name: &str) -> Option<PathBuf> {
        self.env.get(name).map(|v| self.expand(v))
    }

    /// `~/x` as the shell would expand it.
    pub(crate) fn expand(&self, path: &str) -> PathBuf {
        match path.strip_prefix("~/") {
            Some(rest) => self.home.join(rest),
            None if path == "~" => self.home.clone(),
            None => self.cwd.join(path),
        }
    }

    /// The current directory and each of its ancestors, nearest first.
    pub(crate) fn upwards(&self) -> impl Iterator<Item = &Path> {
        self.cwd.ancestors()
    }
}

/// Reads a small text file (a project may have planted it: a FIFO, device or kernel file
/// is unreadable, never waited on or read); a folder in its place is no file.
pub(crate) fn read(path: &Path) -> Contents {
    use std::io::ErrorKind;
    match mayfly_core::files::read_regular_text(path, MAX_FILE) {
        Ok(text) => Contents::Text(text),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::IsADirectory) => Contents::Missing,
        Err(e) => Contents::Unreadable(e.to_string()),
    }
}

/// Adds `path` unless it is already listed (two variables may name the same file).
pub(crate) fn push_unique(paths: &mut Vec<PathBuf>, path: PathBuf) {
    if !paths.contains(&path) {
        paths.push(path);
    }
}
