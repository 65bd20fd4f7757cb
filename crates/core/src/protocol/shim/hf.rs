//! `hf`, Hugging Face's CLI (huggingface_hub 2.x), which reads its token from `HF_TOKEN`.
//!
//! `hf upload REPO_ID [LOCAL_PATH] [PATH_IN_REPO]` gets a write token and `hf download
//! REPO_ID [FILES]...` a read token, each for the one repository the command names, on the
//! Hub `HF_ENDPOINT` names, when a git route for that host uses a `huggingface` exchange.
//! Every other command, and every Hub with no such route, runs the real `hf` untouched.
//!
//! The token reaches `hf` as `HF_TOKEN` with `HF_ENDPOINT` pinned to the Hub it is for;
//! the variables that would win over it, or start the library's own exchange, are removed,
//! and so are Python's own (`PYTHONPATH`, `PYTHONSTARTUP` ...), which could run the user's
//! code in the process that holds the token. An upload is staged first ([`stage`]), so
//! what goes up is a private copy of regular files: never `/proc/self/environ`, a link
//! or a device, which could carry the token itself.

use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};

use super::{Need, Step};
use crate::protocol::Refusal;
use crate::{Env, Operation};

/// The Hub when `HF_ENDPOINT` names none.
pub(super) const HUB: &str = "https://huggingface.co";
/// The Hub `HUGGINGFACE_CO_STAGING` selects, in place of `HF_ENDPOINT`.
const STAGING_HUB: &str = "https://hub-ci.huggingface.co";

/// Options of `hf upload` that take a value (`--every` and `--token` are refused).
const UPLOAD_VALUED: &[&str] = &[
    "--type",
    "--repo-type",
    "--revision",
    "--include",
    "--exclude",
    "--delete",
    "--commit-message",
    "--commit-description",
];
/// Flags of `hf upload`.
const UPLOAD_FLAGS: &[&str] = &["--private", "--no-private", "--create-pr", "--no-create-pr"];
/// Options of `hf download` that take a value (`--token` is refused).
const DOWNLOAD_VALUED: &[&str] =
    &["--type", "--repo-type", "--revision", "--include", "--exclude", "--cache-dir", "--local-dir", "--max-workers"];
/// Flags of `hf download`.
const DOWNLOAD_FLAGS: &[&str] = &["--force-download", "--no-force-download", "--dry-run", "--no-dry-run"];

/// The repository types `--repo-type` takes, and the prefix each gives the Hub's resource.
const REPO_TYPES: [(&str, &str); 4] =
    [("model", ""), ("dataset", "datasets/"), ("space", "spaces/"), ("kernel", "kernels/")];

/// Variables removed from the environment of an `hf` that holds a token: the ones the
/// library reads a token from ahead of `HF_TOKEN` or in its place (`HF_OIDC_RESOURCE`
/// runs its own exchange and wins over `HF_TOKEN`), the one that swaps the Hub for
/// another (`HUGGINGFACE_CO_STAGING`), and the one that keeps it from sending the token.
const HF_UNSET: [&str; 5] = [
    "HUGGING_FACE_HUB_TOKEN",
    "HF_OIDC_RESOURCE",
    "HF_OIDC_ID_TOKEN",
    "HUGGINGFACE_CO_STAGING",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN",
];

/// An `hf upload` or `hf download`, read from its command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Command {
    /// Write for an upload, read for a download.
    pub operation: Operation,
    /// The Hub's resource: `NS/NAME`, `datasets/NS/NAME`, `spaces/NS/NAME`, `kernels/NS/NAME`.
    pub resource: String,
    /// The Hub, with a trailing `/`.
    pub hub: url::Url,
    /// `upload` or `download`.
    subcommand: String,
    /// The options, each one `--name=value` token or a flag: no value can be read as an
    /// option, by click or by hf's own argv rewriting (which drops a bare `--json`, `-q`,
    /// `--format X` ... wherever it stands before `--`).
    options: Vec<String>,
    /// The positional arguments, in order.
    positionals: Vec<String>,
}

impl Command {
    /// The command line hf runs with: the subcommand, the options, then `--` and
    /// `positionals`, so hf reads exactly what the shim read.
    pub(super) fn argv(&self, positionals: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
        std::iter::once(&self.subcommand)
            .chain(&self.options)
            .map(OsString::from)
            .chain(std::iter::once("--".into()))
            .chain(positionals)
            .collect()
    }

    /// The command line of a download.
    pub(super) fn download_argv(&self) -> Vec<OsString> {
        self.argv(self.positionals.iter().map(OsString::from))
    }
}

/// Reads an `hf` command line: `Ok(None)` for a command that gets no token (anything but
/// `upload` and `download`, and their `--help`).
pub(super) fn parse(args: &[String], env: &Env) -> Result<Option<Command>, Refusal> {
    let (operation, valued, flags): (_, &[&str], &[&str]) = match args.first().map(String::as_str) {
        Some("upload") => (Operation::Write, UPLOAD_VALUED, UPLOAD_FLAGS),
        Some("download") => (Operation::Read, DOWNLOAD_VALUED, DOWNLOAD_FLAGS),
        _ => return Ok(None),
    };
    let command = &args[0];
    let fail = |why: String| Err(Refusal::Failed(format!("`hf {command}`: {why}")));
    let mut positionals = Vec::new();
    let mut options = Vec::new();
    let mut repo_type = "model";
    let mut i = 1;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            positionals.extend(args[i + 1..].iter().cloned());
            break;
        }
        if !arg.starts_with('-') || arg == "-" {
            positionals.push(arg.clone());
            i += 1;
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if arg.starts_with("--") => (name, Some(value)),
            _ => (arg.as_str(), None),
        };
        if name == "-h" || name == "--help" {
            return Ok(None);
        }
        if name == "--token" {
            return fail("`--token` is not taken: the shim gives hf the token, in its environment".into());
        }
        if name == "--every" {
            return fail("`--every` is not taken: it uploads the folder again for as long as it runs".into());
        }
        let shown = crate::sanitize_for_terminal(name);
        if flags.contains(&name) {
            if inline.is_some() {
                return fail(format!("`{shown}` takes no value"));
            }
            options.push(name.to_owned());
            i += 1;
            continue;
        }
        if !valued.contains(&name) {
            return fail(format!("the option `{shown}` is not taken"));
        }
        let value = match inline {
            Some(value) => value,
            None => match args.get(i + 1) {
                Some(value) => {
                    i += 1;
                    value.as_str()
                }
                None => return fail(format!("`{shown}` has no value")),
            },
        };
        if name == "--type" || name == "--repo-type" {
            repo_type = value;
        }
        options.push(format!("{name}={value}"));
        i += 1;
    }
    let Some(prefix) = REPO_TYPES.iter().find(|(t, _)| *t == repo_type).map(|(_, p)| *p) else {
        return fail(format!(
            "`--repo-type {}`: not model, dataset, space or kernel",
            crate::sanitize_for_terminal(repo_type)
        ));
    };
    let Some(first) = positionals.first() else { return fail("no repository named".into()) };
    if operation == Operation::Write && positionals.len() > 3 {
        return fail("it takes REPO_ID [LOCAL_PATH] [PATH_IN_REPO]".into());
    }
    let resource =
        format!("{prefix}{}", repo_id(first).map_err(|why| Refusal::Failed(format!("`hf {command}`: {why}")))?);
    // PATH_IN_REPO and FILES name paths in the repository; LOCAL_PATH is replaced by the
    // staged copy's absolute path.
    let in_repo = if operation == Operation::Write { positionals.get(2..) } else { positionals.get(1..) };
    if let Some(dash) = in_repo.unwrap_or_default().iter().find(|p| p.starts_with('-')) {
        return fail(format!(
            "`{}`: a path in the repository cannot begin with `-`",
            crate::sanitize_for_terminal(dash)
        ));
    }
    let hub = hub(env)?;
    Ok(Some(Command { operation, resource, hub, subcommand: command.clone(), options, positionals }))
}

/// A repository id as the Hub's resource takes it: exactly `NS/NAME`, each a name.
fn repo_id(text: &str) -> Result<&str, String> {
    let shown = crate::sanitize_for_terminal(text);
    if text.starts_with("hf://") {
        return Err(format!("`{shown}`: give the repository as NS/NAME, not an hf:// URI"));
    }
    let segments: Vec<&str> = text.split('/').collect();
    if let [kind, _, _] = segments.as_slice()
        && let Some(singular) =
            ["models", "datasets", "spaces", "kernels"].contains(kind).then(|| kind.trim_end_matches('s'))
    {
        return Err(format!("`{shown}`: give NS/NAME with `--repo-type {singular}`"));
    }
    let named = |s: &&str| {
        !s.is_empty()
            && !s.starts_with('.')
            && !s.contains("..")
            && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match segments.as_slice() {
        [ns, name] if named(ns) && named(name) => Ok(text),
        _ => Err(format!("`{shown}` is not a repository id (NS/NAME)")),
    }
}

/// The Hub the library would talk to: the staging Hub when `HUGGINGFACE_CO_STAGING` is
/// true, else `HF_ENDPOINT`, else huggingface.co.
fn hub(env: &Env) -> Result<url::Url, Refusal> {
    let staging = env
        .get("HUGGINGFACE_CO_STAGING")
        .is_some_and(|v| ["1", "ON", "YES", "TRUE"].contains(&v.to_ascii_uppercase().as_str()));
    let text = if staging { STAGING_HUB } else { env.get("HF_ENDPOINT").filter(|v| !v.is_empty()).unwrap_or(HUB) };
    let shown = crate::sanitize_for_terminal(text);
    let mut url = crate::target::strict_url(text)
        .filter(|u| matches!(u.scheme(), "https" | "http") && u.query().is_none() && u.fragment().is_none())
        .ok_or_else(|| Refusal::Failed(format!("HF_ENDPOINT `{shown}` is not an http(s) URL")))?;
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// What the shim's [`super::need`] makes of an `hf` command line.
pub(super) fn need(args: &[String], env: &Env) -> Result<Option<Need>, Refusal> {
    Ok(parse(args, env)?.map(|command| Need {
        registry: command.hub,
        operation: command.operation,
        package: Some(command.resource),
        publish_config: None,
        scopes: Vec::new(),
    }))
}

/// The variables that carry the token: `HF_TOKEN`, with `HF_ENDPOINT` pinned to the Hub
/// it was minted for, and Python's user site (whose `.pth` files run code) off.
pub(super) fn token_vars(hub: &url::Url, token: String) -> Vec<(String, String)> {
    vec![
        ("HF_TOKEN".into(), token),
        ("HF_ENDPOINT".into(), hub.as_str().trim_end_matches('/').into()),
        ("PYTHONNOUSERSITE".into(), "1".into()),
    ]
}

/// The variables an `hf` holding a token runs without: [`HF_UNSET`] and every `PYTHON*`
/// of the caller's (`PYTHONPATH`, `PYTHONHOME`, `PYTHONSTARTUP`, `PYTHONWARNINGS` ... can
/// each make Python run code that is not hf's).
pub(super) fn unset(env: &Env) -> Vec<String> {
    let python = env.vars().map(|(k, _)| k).filter(|k| k.starts_with("PYTHON")).map(str::to_owned);
    HF_UNSET.iter().map(|s| (*s).to_owned()).chain(python).collect()
}

/// An upload's paths.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Upload {
    /// LOCAL_PATH, as given or defaulted.
    pub local: String,
    /// PATH_IN_REPO, as given or defaulted.
    pub path_in_repo: String,
}

/// An upload's paths, as `hf upload` 2.4 resolves them: LOCAL_PATH defaults to the file
/// or folder in the current directory named as the repository; PATH_IN_REPO defaults to
/// a file's name, or the repository's root for a folder. The staged copy keeps them.
pub(super) fn upload_paths(command: &Command, cwd: &Path) -> Result<Upload, Refusal> {
    let fail = |why: String| Refusal::Failed(format!("`hf upload`: {why}"));
    let at = |n: usize| command.positionals.get(n).cloned();
    let repo_name = at(0).unwrap_or_default().rsplit('/').next().unwrap_or_default().to_owned();
    let local = match at(1) {
        Some(local) => local,
        None if cwd.join(&repo_name).is_file() || cwd.join(&repo_name).is_dir() => repo_name,
        None => {
            return Err(fail(format!(
                "`{}` is not a file or folder here: name LOCAL_PATH",
                crate::sanitize_for_terminal(&repo_name)
            )));
        }
    };
    let exists = std::fs::symlink_metadata(cwd.join(&local)).is_ok();
    // hf takes an existing path literally, and any other as a pattern.
    if local.contains(['*', '?', '[']) && !exists {
        return Err(fail(format!(
            "`{}`: LOCAL_PATH is not taken as a pattern: name a file or folder, and use --include",
            crate::sanitize_for_terminal(&local)
        )));
    }
    if local.ends_with('/') && !cwd.join(&local).is_dir() {
        return Err(fail(format!("`{}` ends in `/` but is not a folder", crate::sanitize_for_terminal(&local))));
    }
    let path_in_repo = match at(2) {
        Some(given) => given,
        None if cwd.join(&local).is_file() => {
            Path::new(&local).file_name().map_or_else(|| local.clone(), |n| n.to_string_lossy().into_owned())
        }
        None => ".".into(),
    };
    Ok(Upload { local, path_in_repo })
}

/// The command line of the `hf upload` that runs with the token: the repository, the
/// staged copy and PATH_IN_REPO, after `--` and the options ([`Command::argv`]).
pub(super) fn staged_args(command: &Command, staged: &Path, path_in_repo: &str) -> Vec<OsString> {
    command.argv([command.positionals[0].clone().into(), staged.into(), path_in_repo.into()])
}

/// Copies LOCAL_PATH (a file, or a folder tree) into a new directory in `tmp` only this
/// user can enter, and returns it with the copy's path. Each file is opened with
/// `O_NOFOLLOW` and checked, through its descriptor, to be a regular file outside `/proc`
/// and `/sys`, so a file swapped for a link between the check and the open is not
/// followed; links, devices, FIFOs, sockets and anything under `/proc`, `/sys` or `/dev`
/// are refused, naming the path. Folders are walked through descriptors too (`openat`),
/// so a folder swapped for a link is not followed either. `.git` and `.cache/huggingface`,
/// which hf leaves out of every upload, are left out of the copy.
///
/// The cost: a full copy of the upload on the temporary directory's disk, made before hf
/// starts and removed when hf exits; an interrupted upload run again is copied again (hf
/// still resumes it: the Hub skips what was committed and deduplicates what was sent).
pub(super) fn stage(local: &str, cwd: &Path, tmp: &Path) -> Result<(tempfile::TempDir, PathBuf), Refusal> {
    let shown = crate::sanitize_for_terminal(local);
    let fail = |why: String| Refusal::Failed(format!("`hf upload`: {why}"));
    // Components, not the text: `link/` and `link/.` name the link itself.
    let path: PathBuf = cwd.join(local).components().collect();
    let meta = std::fs::symlink_metadata(&path).map_err(|e| fail(format!("`{shown}`: {e}")))?;
    let real = std::fs::canonicalize(&path).map_err(|e| fail(format!("`{shown}`: {e}")))?;
    if let Some(root) = ["/proc", "/sys", "/dev"].iter().find(|r| real.starts_with(r)) {
        return Err(fail(format!("`{shown}` is under {root}, which is not uploaded")));
    }
    let dir = tempfile::Builder::new()
        .prefix("mayfly-hf-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in(tmp)
        .map_err(|e| fail(format!("cannot make a directory to stage the upload in: {e}")))?;
    let copy = dir.path().join(path.file_name().unwrap_or(OsStr::new("upload")));
    let stage_id = std::fs::metadata(dir.path())
        .map(|m| (std::os::unix::fs::MetadataExt::dev(&m), std::os::unix::fs::MetadataExt::ino(&m)))
        .map_err(|e| fail(format!("cannot read the staging directory: {e}")))?;
    if meta.is_dir() {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let top = nix::dir::Dir::open(&path, flags, Mode::empty()).map_err(|e| fail(not_opened(e, &shown)))?;
        copy_dir(top, false, &copy, local, stage_id).map_err(fail)?;
    } else {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(fail(format!("`{shown}` is not a file or folder")));
        };
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let parent = nix::dir::Dir::open(parent, flags, Mode::empty())
            .map_err(|e| fail(format!("`{shown}`: cannot open its folder: {e}")))?;
        copy_entry(&parent, name, &copy, local, stage_id).map_err(fail)?;
    }
    Ok((dir, copy))
}

/// A file's identity: device and inode.
type Id = (u64, u64);

fn id(fd: &impl AsFd) -> nix::Result<Id> {
    let stat = nix::sys::stat::fstat(fd)?;
    Ok((stat.st_dev as u64, stat.st_ino as u64))
}

/// Why a folder could not be opened: `O_NOFOLLOW` on a link is `ELOOP` (`ENOTDIR` with
/// `O_DIRECTORY` on some kernels).
fn not_opened(e: nix::errno::Errno, shown: &str) -> String {
    match e {
        nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR => {
            format!("`{shown}` is a symbolic link, which is not uploaded")
        }
        e => format!("`{shown}` cannot be opened: {e}"),
    }
}

/// Copies the entry `name` of the folder `parent` to `to`; `shown` names it in errors.
fn copy_entry(parent: &impl AsFd, name: &OsStr, to: &Path, shown: &str, stage: Id) -> Result<(), String> {
    let named = crate::sanitize_for_terminal(shown);
    let stat =
        nix::sys::stat::fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| format!("`{named}`: {e}"))?;
    match SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFREG => copy_file(open_regular(parent, name).map_err(|why| format!("`{named}` {why}"))?, to, &named),
        SFlag::S_IFDIR => {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let dir = nix::dir::Dir::openat(parent, name, flags, Mode::empty()).map_err(|e| not_opened(e, &named))?;
            copy_dir(dir, name == ".cache", to, shown, stage)
        }
        SFlag::S_IFLNK => Err(format!("`{named}` is a symbolic link, which is not uploaded")),
        SFlag::S_IFIFO => Err(format!("`{named}` is a FIFO, which is not uploaded")),
        SFlag::S_IFSOCK => Err(format!("`{named}` is a socket, which is not uploaded")),
        _ => Err(format!("`{named}` is a device, which is not uploaded")),
    }
}

/// Opens the entry `name` of `parent` for reading as [`crate::files::open_regular_at`]
/// does, saying why one is refused in the words of an upload.
pub(super) fn open_regular(parent: &impl AsFd, name: &OsStr) -> Result<std::fs::File, String> {
    crate::files::open_regular_at(parent, name).map_err(not_uploaded)
}

fn not_uploaded(e: std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::InvalidInput => format!("{e}, which is not uploaded"),
        _ => format!("cannot be opened: {e}"),
    }
}

/// Refuses a descriptor on a kernel's pseudo file system (`/proc/PID/environ` is a
/// "regular file" there), wherever it is mounted.
fn pseudo(fd: &impl AsFd) -> Result<(), String> {
    crate::files::refuse_kernel_fs(fd).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidInput => format!("{e}, which is not uploaded"),
        _ => format!("cannot be read: {e}"),
    })
}

fn copy_file(mut from: std::fs::File, to: &Path, shown: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(|e| format!("cannot stage `{shown}`: {e}"))?;
    std::io::copy(&mut from, &mut out).map_err(|e| format!("cannot stage `{shown}`: {e}"))?;
    Ok(())
}

/// Copies the open folder `dir` to `to`; `cache` when it is a `.cache`, whose
/// `huggingface` hf leaves out.
fn copy_dir(mut dir: nix::dir::Dir, cache: bool, to: &Path, shown: &str, stage: Id) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::DirBuilderExt;
    let named = crate::sanitize_for_terminal(shown);
    if id(&dir).map_err(|e| format!("`{named}` cannot be read: {e}"))? == stage {
        // The staging directory itself, when LOCAL_PATH holds the temporary directory.
        return Ok(());
    }
    pseudo(&dir).map_err(|why| format!("`{named}` {why}"))?;
    std::fs::DirBuilder::new().mode(0o700).create(to).map_err(|e| format!("cannot stage `{named}`: {e}"))?;
    let mut names: Vec<OsString> = Vec::new();
    for entry in dir.iter() {
        let entry = entry.map_err(|e| format!("`{named}` cannot be read: {e}"))?;
        let entry = OsStr::from_bytes(entry.file_name().to_bytes());
        if entry != "." && entry != ".." && entry != ".git" && !(cache && entry == "huggingface") {
            names.push(entry.to_owned());
        }
    }
    for entry in names {
        let shown = format!("{}/{}", shown.trim_end_matches('/'), entry.to_string_lossy());
        copy_entry(&dir, &entry, &to.join(&entry), &shown, stage)?;
    }
    Ok(())
}

/// Gets the token a [`Need`] asks for: the variables that carry it, or `None` when no
/// route serves it.
pub(super) type Mint<'a> = dyn Fn(&Need) -> Result<Option<Vec<(String, String)>>, Refusal> + 'a;

/// Runs `hf` as the shim: `Ok(None)` when the command gets no token (the caller runs hf
/// untouched), else hf's exit code, or why it could not run.
pub(super) fn run(
    all: &Step,
    env: &Env,
    cwd: &Path,
    mint: &Mint<'_>,
    runner: &mut dyn super::Runner,
) -> Result<Option<i32>, Refusal> {
    let args: Vec<String> = all.args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let command = match parse(&args, env) {
        Ok(Some(command)) => command,
        Ok(None) => return Ok(None),
        // A Hub no route serves gets hf as it is, `--token` and all.
        Err(refusal) => return if hub_served(env)? { Err(refusal) } else { Ok(None) },
    };
    if all.args.iter().any(|a| a.to_str().is_none()) {
        return Err(Refusal::Failed(format!("`hf {}`: an argument is not UTF-8", args[0])));
    }
    if !served(&command, env)? {
        return Ok(None);
    }
    let need = Need {
        registry: command.hub.clone(),
        operation: command.operation,
        package: Some(command.resource.clone()),
        publish_config: None,
        scopes: Vec::new(),
    };
    let unset = unset(env);
    if command.operation == Operation::Read {
        let Some(vars) = mint(&need)? else { return Ok(None) };
        let step = Step { args: command.download_argv(), unset, ..all.clone() };
        return Err(Refusal::Failed(runner.exec(&[step], &vars)));
    }
    // Staged before the token exists: nothing the upload reads can be changed to hold it.
    let paths = upload_paths(&command, cwd)?;
    let (dir, staged) = stage(&paths.local, cwd, &std::env::temp_dir())?;
    let Some(vars) = mint(&need)? else { return Ok(None) };
    let step = Step { args: staged_args(&command, &staged, &paths.path_in_repo), unset, ..all.clone() };
    let code = runner.run(&step, &vars).map_err(Refusal::Failed)?;
    drop((vars, dir));
    Ok(Some(code))
}

/// Whether any git route for the Hub `HF_ENDPOINT` names has a Hugging Face exchange.
fn hub_served(env: &Env) -> Result<bool, Refusal> {
    let Ok(hub) = hub(env) else { return Ok(false) };
    let Some(host) = crate::target::host_port(&hub) else { return Ok(false) };
    let Ok(target) = crate::Target::new(crate::Tool::Git, hub.scheme(), &host, None) else { return Ok(false) };
    let broker = crate::protocol::broker(env.clone())?;
    let config = broker.config();
    Ok(config
        .routes
        .iter()
        .any(|r| r.protocol == target.protocol && r.host == target.host && super::serves(config, r, super::Family::Hf)))
}

/// Whether a git route serves the command's Hub with a Hugging Face exchange.
fn served(command: &Command, env: &Env) -> Result<bool, Refusal> {
    let broker = crate::protocol::broker(env.clone())?;
    let Some(host) = crate::target::host_port(&command.hub) else { return Ok(false) };
    let Ok(target) = crate::Target::new(crate::Tool::Git, command.hub.scheme(), &host, Some(&command.resource)) else {
        return Ok(false);
    };
    Ok(match broker.resolve(&target) {
        crate::Resolution::Route(route) => broker
            .config()
            .exchanges
            .get(&route.exchange)
            .is_some_and(|e| e.kind == crate::config::ExchangeKind::HuggingFace),
        _ => false,
    })
}

#[cfg(test)]
mod tests;
