//! Writing files the way every part of mayfly must: private directories, and contents
//! replaced atomically (a temporary file beside the target, synced, renamed into place),
//! so a reader never sees half a file and a crash never leaves one (cache files are not
//! synced: see [`write_cache_file`]). And reading files someone else may have put in
//! place (a project's `.npmrc`, a worktree's `.git`): see [`read_regular`].

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Reads `path` if it is a regular file on a real file system of at most `max` bytes.
/// Links are followed (a dotfile may be one), but what was opened is checked: a FIFO is
/// never waited on (`O_NONBLOCK`), and a device (`/dev/zero`, `/dev/stdin`) or a kernel
/// file (`/proc/self/environ`) is refused, never read. The null device reads as empty, as
/// a config pointed at `/dev/null` means. A missing file is `NotFound`.
pub fn read_regular(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind};
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let not_regular = || Error::new(ErrorKind::InvalidInput, "is not a regular file");
    // Checked before opening too: opening a device runs its driver (a serial line's
    // open resets the board on it), even when nothing is read.
    let before = std::fs::metadata(path)?;
    if before.file_type().is_char_device() && before.rdev() == nix::libc::makedev(1, 3) {
        return Ok(Vec::new());
    }
    if before.is_dir() {
        return Err(Error::new(ErrorKind::IsADirectory, "is a folder"));
    }
    if !before.file_type().is_file() {
        return Err(not_regular());
    }
    let file =
        std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY).open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() || (meta.dev(), meta.ino()) != (before.dev(), before.ino()) {
        return Err(not_regular());
    }
    refuse_kernel_fs(&file)?;
    // Sized from the file (`take` hides the size from `read_to_end`), at most a megabyte
    // ahead: a sparse file can claim any size.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len().min(max).min(1 << 20)).unwrap_or(0) + 1);
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(Error::new(ErrorKind::FileTooLarge, format!("is larger than {max} bytes")));
    }
    Ok(bytes)
}

/// Opens the entry `name` of the folder `parent` for reading if it is a regular file on a
/// real file system, never following a link (`O_NOFOLLOW`) nor waiting on a FIFO
/// (`O_NONBLOCK`): the descriptor is checked, so an entry swapped between a caller's check
/// and the open is refused, not read. A link, a FIFO, a device or a kernel file is
/// `InvalidInput`, its message saying which.
pub fn open_regular_at(parent: &impl AsFd, name: &std::ffi::OsStr) -> std::io::Result<std::fs::File> {
    use nix::fcntl::OFlag;
    use std::io::{Error, ErrorKind};
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    let fd = nix::fcntl::openat(parent, name, flags, nix::sys::stat::Mode::empty()).map_err(|e| match e {
        nix::errno::Errno::ELOOP => Error::new(ErrorKind::InvalidInput, "is a symbolic link"),
        e => Error::from(e),
    })?;
    refuse_kernel_fs(&fd)?;
    let file = std::fs::File::from(fd);
    if !file.metadata()?.file_type().is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "is not a regular file"));
    }
    Ok(file)
}

/// [`open_regular_at`] for a path: its last component is never followed (the folders on
/// the way are: they are the path the user named).
pub fn open_regular_path(path: &Path) -> std::io::Result<std::fs::File> {
    use nix::fcntl::OFlag;
    let path: std::path::PathBuf = path.components().collect();
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "is not a file"));
    };
    let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let parent = nix::dir::Dir::open(parent, flags, nix::sys::stat::Mode::empty())?;
    open_regular_at(&parent, name)
}

/// Opens `relative` beneath the folder `root` as [`open_regular_at`] opens an entry,
/// following no link on the way either: each folder is opened from the one before with
/// `O_NOFOLLOW`, so a folder swapped for a link leads nowhere outside `root`. A link on
/// the way is `InvalidInput`, as one at the end is.
pub fn open_regular_beneath(root: &Path, relative: &Path) -> std::io::Result<std::fs::File> {
    use nix::fcntl::OFlag;
    use std::io::{Error, ErrorKind};
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut dir = nix::dir::Dir::open(root, flags, nix::sys::stat::Mode::empty())?;
    let mut parts = relative.components().peekable();
    while let Some(part) = parts.next() {
        let std::path::Component::Normal(name) = part else {
            return Err(Error::new(ErrorKind::InvalidInput, "is not a plain relative path"));
        };
        if parts.peek().is_none() {
            return open_regular_at(&dir, name);
        }
        let folder = nix::dir::Dir::openat(&dir, name, flags | OFlag::O_NOFOLLOW, nix::sys::stat::Mode::empty());
        dir = folder.map_err(|e| match e {
            nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR => {
                Error::new(ErrorKind::InvalidInput, "has a symbolic link or a file on the way")
            }
            e => Error::from(e),
        })?;
    }
    Err(Error::new(ErrorKind::InvalidInput, "is not a file"))
}

/// The largest user config (a kubeconfig, docker's `config.json`) read through
/// [`read_regular`].
pub const MAX_USER_CONFIG: u64 = 16 * 1024 * 1024;

/// [`read_regular`] as UTF-8 text.
pub fn read_regular_text(path: &Path, max: u64) -> std::io::Result<String> {
    String::from_utf8(read_regular(path, max)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "is not UTF-8 text"))
}

/// `InvalidInput` when the descriptor is on a kernel's pseudo file system ([`on_kernel_fs`]).
pub fn refuse_kernel_fs(fd: &impl AsFd) -> std::io::Result<()> {
    if on_kernel_fs(fd)? {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "is on a kernel file system (/proc, /sys ...)",
        ));
    }
    Ok(())
}

/// True when the descriptor is on a kernel's pseudo file system, wherever it is mounted
/// (`/proc/PID/environ` is a "regular file" there, of length 0; reading a file of
/// configfs, efivarfs or a control file system can block, change state or leak). AppArmor's
/// own file system is listed beside securityfs, where it is usually reached.
pub fn on_kernel_fs(fd: &impl AsFd) -> std::io::Result<bool> {
    use nix::sys::statfs as fs;
    // Those nix does not name, from the kernel's `linux/magic.h`.
    const CONFIGFS_MAGIC: u32 = 0x6265_6570;
    const EFIVARFS_MAGIC: u32 = 0xde5e_81e4;
    const PSTOREFS_MAGIC: u32 = 0x6165_676c;
    const MQUEUE_MAGIC: u32 = 0x1980_0202;
    const BINFMTFS_MAGIC: u32 = 0x4249_4e4d;
    const FUSECTL_SUPER_MAGIC: u32 = 0x6573_5543;
    const ANON_INODE_FS_MAGIC: u32 = 0x0904_1934;
    const AAFS_MAGIC: u32 = 0x5a3c_69f0;
    let kind = fs::fstatfs(fd)?.filesystem_type();
    let named = [
        fs::PROC_SUPER_MAGIC,
        fs::SYSFS_MAGIC,
        fs::DEBUGFS_MAGIC,
        fs::TRACEFS_MAGIC,
        fs::SECURITYFS_MAGIC,
        fs::SELINUX_MAGIC,
        fs::SMACK_MAGIC,
        fs::DEVPTS_SUPER_MAGIC,
        fs::CGROUP_SUPER_MAGIC,
        fs::CGROUP2_SUPER_MAGIC,
        fs::BPF_FS_MAGIC,
        fs::RDTGROUP_SUPER_MAGIC,
        fs::NSFS_MAGIC,
        fs::OPENPROM_SUPER_MAGIC,
        fs::USBDEVICE_SUPER_MAGIC,
        fs::XENFS_SUPER_MAGIC,
    ];
    let unnamed = [
        CONFIGFS_MAGIC,
        EFIVARFS_MAGIC,
        PSTOREFS_MAGIC,
        MQUEUE_MAGIC,
        BINFMTFS_MAGIC,
        FUSECTL_SUPER_MAGIC,
        ANON_INODE_FS_MAGIC,
        AAFS_MAGIC,
    ];
    // The type is a signed or unsigned word by platform; the magics are 32-bit.
    Ok(named.contains(&kind) || unnamed.contains(&(kind.0 as u32)))
}

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

    #[test]
    fn only_a_bounded_regular_file_on_a_real_file_system_is_read() {
        use std::io::ErrorKind;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "twelve bytes").unwrap();
        assert_eq!(read_regular(&file, 12).unwrap(), b"twelve bytes");
        assert_eq!(read_regular(&file, 11).unwrap_err().kind(), ErrorKind::FileTooLarge);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read_regular_text(&link, 64).unwrap(), "twelve bytes", "a link to a file is followed");
        assert_eq!(read_regular(&dir.path().join("missing"), 64).unwrap_err().kind(), ErrorKind::NotFound);
        // A FIFO nobody writes to: a plain open would wait for a writer forever.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for refused in [fifo.as_path(), Path::new("/dev/zero"), Path::new("/proc/self/environ")] {
            let why = read_regular(refused, 1024 * 1024).unwrap_err();
            assert_eq!(why.kind(), ErrorKind::InvalidInput, "{}: {why}", refused.display());
        }
        assert_eq!(read_regular(dir.path(), 64).unwrap_err().kind(), ErrorKind::IsADirectory);
        assert_eq!(read_regular(Path::new("/dev/null"), 64).unwrap(), b"", "the null device is an empty config");
        std::fs::write(&file, [0xff, 0xfe]).unwrap();
        assert_eq!(read_regular_text(&file, 64).unwrap_err().kind(), ErrorKind::InvalidData);
    }

    #[test]
    fn open_regular_path_follows_no_last_link_and_waits_on_no_fifo() {
        use std::io::ErrorKind;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "ok").unwrap();
        std::os::unix::fs::symlink(&file, dir.path().join("link")).unwrap();
        nix::unistd::mkfifo(&dir.path().join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let why = |name: &str| open_regular_path(&dir.path().join(name)).unwrap_err();
        assert!(why("link").to_string().contains("symbolic link"), "{}", why("link"));
        assert!(why("fifo").to_string().contains("not a regular file"), "{}", why("fifo"));
        assert_eq!(why("missing").kind(), ErrorKind::NotFound);
        for refused in ["link", "fifo"] {
            assert_eq!(why(refused).kind(), ErrorKind::InvalidInput, "{refused}");
        }
        let kernel = open_regular_path(Path::new("/proc/self/status")).unwrap_err();
        assert!(kernel.to_string().contains("kernel file system"), "{kernel}");
        let mut text = String::new();
        open_regular_path(&file).unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "ok");
    }

    #[test]
    fn open_regular_beneath_follows_no_link_on_the_way() {
        use std::io::ErrorKind;
        let (root, elsewhere) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::create_dir(root.path().join("docs")).unwrap();
        std::fs::write(root.path().join("docs/a.txt"), "inside").unwrap();
        std::fs::write(elsewhere.path().join("a.txt"), "outside").unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), root.path().join("linked")).unwrap();
        let mut text = String::new();
        open_regular_beneath(root.path(), Path::new("docs/a.txt")).unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "inside");
        let why = open_regular_beneath(root.path(), Path::new("linked/a.txt")).unwrap_err();
        assert_eq!(why.kind(), ErrorKind::InvalidInput, "{why}");
        for odd in ["../a.txt", "/etc/passwd", "docs/../docs/a.txt"] {
            let why = open_regular_beneath(root.path(), Path::new(odd)).unwrap_err();
            assert_eq!(why.kind(), ErrorKind::InvalidInput, "{odd}: {why}");
        }
        let missing = open_regular_beneath(root.path(), Path::new("docs/none.txt")).unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::NotFound);
    }

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
