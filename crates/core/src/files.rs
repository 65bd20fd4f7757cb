//! Writing files the way every part of mayfly must: private directories, and contents
//! replaced atomically (a temporary file beside the target, synced, renamed into place),
//! so a reader never sees half a file and a crash never leaves one (cache files are not
//! synced: see [`write_cache_file`]).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` and its missing parents, mode 0700 (an existing one is left as it is).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Replaces `path` with `bytes`, atomically, with file mode `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    write_atomic_with(path, bytes, mode, None, true)
}

/// [`write_atomic`] for a cache file, the file's modification time set to `modified`
/// before it appears at `path`, so a reader never sees it with another. Not synced: a
/// cache entry a crash loses or tears costs one more exchange (sealed entries that do not
/// open are misses), while a sync costs every cold `get` a disk flush.
pub fn write_cache_file(path: &Path, bytes: &[u8], mode: u32, modified: std::time::SystemTime) -> std::io::Result<()> {
    write_atomic_with(path, bytes, mode, Some(modified), false)
}

fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    modified: Option<std::time::SystemTime>,
    sync: bool,
) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".mayfly-")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    temp.write_all(bytes)?;
    if let Some(modified) = modified {
        temp.as_file().set_modified(modified)?;
    }
    if sync {
        temp.as_file().sync_all()?;
    }
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn writes_replace_whole_files_with_the_mode_asked() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("a/b");
        create_private_dir(&private).unwrap();
        assert_eq!(std::fs::metadata(&private).unwrap().mode() & 0o777, 0o700);
        let file = private.join("f");
        write_atomic(&file, b"one", 0o600).unwrap();
        write_atomic(&file, b"two", 0o640).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o640);
        assert_eq!(std::fs::read_dir(&private).unwrap().count(), 1, "no temporary file is left");
    }
}
