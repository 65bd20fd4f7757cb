//! The token cache: short-lived tokens only, each entry age-encrypted to a key that lives
//! only in memory-backed storage, so a copy of the cache directory (backup, artifact,
//! image layer) holds nothing usable. Where no memory-backed place exists, the cache is
//! off rather than on disk.
//!
//! One exchange per key across processes: callers take a per-key file lock, re-check,
//! and only then exchange (single-flight). Writes are temp + rename (not synced: a lost
//! entry costs one exchange). An entry that cannot be read or decrypted is a miss.
//!
//! An entry's path is fixed by what asks for it, so a `get` opens one file whatever the
//! cache holds: `<key>.<session-tag>.age`, the key a hash of the request and the session
//! tag a hash of the session id (`0` outside a session). What sweeping and listing need
//! beyond the name is the file's modification time, set to the expiry rounded up to
//! [`EXPIRY_BUCKET`] seconds before the file is put in place: neither decrypts anything.
//! Entries named the older ways (`<key>.age`, `<key>.<tag>.<bucket>.age`) are misses,
//! removed by the next sweep.
//!
//! An entry's file is one line stating its refresh time and expiry in clear
//! (`mayfly-entry/1 <refresh_at> <expires_at>`), then the age file. The line is a hint, not
//! a trust anchor: an entry is served only on the times sealed inside it; what the line
//! decides without decrypting is that an entry is due for a refresh (its sealed bytes go to
//! whoever revokes the old token, after the tool has its answer) or expired (removed).
//! Whoever could change the line could as well delete the file. Entries written before the
//! line existed are plain age files, opened to learn their times.
//!
//! Lock files (`<key>.lock`) are removed only by a process that holds the lock (each holder
//! removes its own as it lets go, so the directory holds entries, not locks), and a
//! process that takes a lock checks the file it locked is still the one at the path (else
//! it locks again), so a removed lock file can never let two processes mint at once.
//!
//! A full sweep `stat`s every entry, so it runs at most once per [`EXPIRY_BUCKET`] (the
//! time of the last one is the mtime of `.swept`): in between, entries of other sessions
//! are counted by name, and an entry expired since the last sweep is at worst counted.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use age::secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::keyring::{self, KeyStore};
use crate::seal::SealingKey;
use crate::{Env, EnvVars, Secret};

/// Largest entry read back; anything bigger is corrupt.
const MAX_ENTRY: u64 = 64 * 1024;

/// Expiry granularity in entry names: coarse, so a name says little about the token.
const EXPIRY_BUCKET: i64 = 300;

/// What an entry's file name and time say: no plaintext, no need to decrypt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The entry's key.
    pub key: String,
    /// Hash of the session that minted it ([`Cache::session_tag`]).
    pub session_tag: String,
    /// Expiry rounded up to [`EXPIRY_BUCKET`]: expired once this has passed.
    pub expiry_bucket: i64,
}

/// What [`Cache::lookup`] finds for a key.
pub(crate) enum Lookup {
    /// An entry to serve.
    Servable(Box<CacheEntry>),
    /// An entry inside its refresh margin: still valid, to be replaced.
    Stale(Stale),
    /// Nothing usable.
    Miss,
}

/// An entry inside its refresh margin, still sealed, and the file it was read from, kept
/// open ([`Cache::still_holds`], [`Cache::take`]): a refresh decrypts it only where the old
/// token is revoked, after the answer.
pub(crate) struct Stale {
    sealed: Vec<u8>,
    path: PathBuf,
    file: File,
}

/// The first line of an entry's file, before its times.
const HEADER: &str = "mayfly-entry/1 ";

/// An entry's refresh time and expiry as its file's first line states them (unsealed, so
/// only a hint), and the age file after it; no times for a file without the line.
fn split_header(bytes: &[u8]) -> (Option<(i64, i64)>, &[u8]) {
    let Some(rest) = bytes.strip_prefix(HEADER.as_bytes()) else { return (None, bytes) };
    let Some(end) = rest.iter().position(|&b| b == b'\n') else { return (None, bytes) };
    let times = std::str::from_utf8(&rest[..end]).ok().and_then(|line| {
        let (refresh_at, expires_at) = line.split_once(' ')?;
        Some((refresh_at.parse().ok()?, expires_at.parse().ok()?))
    });
    (times, &rest[end + 1..])
}

/// The parts of an entry's file name, `<key>.<session-tag>.age`.
fn parse_name(name: &str) -> Option<(&str, &str)> {
    let (key, tag) = name.strip_suffix(".age")?.split_once('.')?;
    (!key.is_empty() && !tag.is_empty() && !tag.contains('.')).then_some((key, tag))
}

fn file_name(key: &str, session_tag: &str) -> String {
    format!("{key}.{session_tag}.age")
}

/// The expiry an entry's file time carries: rounded up, so never before the expiry.
fn expiry_bucket(expires_at: i64) -> i64 {
    expires_at.div_euclid(EXPIRY_BUCKET).saturating_add(1).saturating_mul(EXPIRY_BUCKET)
}

impl Listed {
    fn file_name(&self) -> String {
        file_name(&self.key, &self.session_tag)
    }

    /// True when the entry is certainly expired at `now`.
    pub fn expired(&self, now: i64) -> bool {
        self.expiry_bucket <= now
    }
}

/// Why the cache could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No memory-backed directory for the key: the cache is off.
    #[error("no memory-backed directory for the cache key ({0})")]
    NoKeyStore(String),
    /// A file operation failed.
    #[error("cache {what} `{path}`")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A directory exists where the key or the entries belong but is not safe to use
    /// (another user's, readable by others, a symlink, not memory-backed).
    #[error("cache directory `{path}` cannot be used safely: {why}")]
    Unsafe {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Encryption failed.
    #[error("cache encryption failed: {0}")]
    Crypto(String),
    /// The kernel keyring was chosen but cannot hold the key.
    #[error("{0}")]
    Keyring(String),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + use<'a> {
    move |source| Error::Io { what, path: path.to_owned(), source }
}

/// A cached token and what the audit trail needs about it.
#[derive(Clone, Debug)]
pub struct CacheEntry {
    /// The token.
    pub token: Secret,
    /// Expiry, unix seconds.
    pub expires_at: i64,
    /// Served until this time (expiry minus the refresh margin), unix seconds.
    pub refresh_at: i64,
    /// Token id (`jti`) if it has one.
    pub token_id: Option<String>,
    /// Scope granted.
    pub scope: Option<String>,
    /// Subject token issuer.
    pub issuer: Option<String>,
    /// Subject token subject.
    pub subject: Option<String>,
    /// What it is for (`git https://host/path write`), for `mayfly status`.
    pub label: String,
    /// Session that minted it.
    pub session: Option<String>,
    /// Route and exchange that minted it (revocation and `erase` find it by them).
    pub origin: Option<Origin>,
    /// [Digests](crate::Process::digest) of the chain that asked for it, parent first: a
    /// later hit's audit line refers to the `issued` line for the part they share.
    pub issuing_chain: Vec<String>,
}

/// Where a cached token came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// Route name.
    pub route: String,
    /// Exchange name.
    pub exchange: String,
    /// Target URL.
    pub target: String,
    /// The tool that asked (`git`, `oci` ...); empty in entries written before it was kept.
    #[serde(default)]
    pub tool: String,
    /// The operation the token was minted for; empty in older entries.
    #[serde(default)]
    pub operation: String,
}

/// An entry as sealed in the cache.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredEntry {
    token: String,
    expires_at: i64,
    refresh_at: i64,
    token_id: Option<String>,
    scope: Option<String>,
    issuer: Option<String>,
    subject: Option<String>,
    label: String,
    session: Option<String>,
    #[serde(default)]
    origin: Option<Origin>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    issuing_chain: Vec<String>,
}

impl From<&CacheEntry> for StoredEntry {
    fn from(entry: &CacheEntry) -> Self {
        Self {
            token: entry.token.expose().to_owned(),
            expires_at: entry.expires_at,
            refresh_at: entry.refresh_at,
            token_id: entry.token_id.clone(),
            scope: entry.scope.clone(),
            issuer: entry.issuer.clone(),
            subject: entry.subject.clone(),
            label: entry.label.clone(),
            session: entry.session.clone(),
            origin: entry.origin.clone(),
            issuing_chain: entry.issuing_chain.clone(),
        }
    }
}

impl From<StoredEntry> for CacheEntry {
    fn from(stored: StoredEntry) -> Self {
        Self {
            token: Secret::new(stored.token),
            expires_at: stored.expires_at,
            refresh_at: stored.refresh_at,
            token_id: stored.token_id,
            scope: stored.scope,
            issuer: stored.issuer,
            subject: stored.subject,
            label: stored.label,
            session: stored.session,
            origin: stored.origin,
            issuing_chain: stored.issuing_chain,
        }
    }
}

/// An open cache: the entry directory and the key.
pub struct Cache {
    dir: PathBuf,
    key_dir: PathBuf,
    identity: SealingKey,
    store: KeyStore,
}

/// Held while a key is being refreshed; writing an entry requires it. Letting go removes
/// the lock file (while still holding it): a waiter on it then finds it is no longer the
/// file at the path and locks afresh.
pub struct KeyLock {
    file: File,
    path: PathBuf,
}

impl Drop for KeyLock {
    fn drop(&mut self) {
        unlink_held(&self.path, &self.file);
    }
}

/// The file whose mtime is the time of the last full sweep.
const SWEPT: &str = ".swept";

/// What one read of the entry directory found ([`Cache::scan`]).
#[derive(Default)]
struct Scan {
    entries: Vec<Listed>,
    skipped: Vec<String>,
    others: Vec<String>,
}

impl Cache {
    /// Opens the cache, creating the key on first use.
    pub fn open(env: &Env) -> Result<Self, Error> {
        let Sealing { runtime_dir: key_dir, identity, store } = sealing_key(env)?;
        let dir = Self::dir_for(env).ok_or_else(|| Error::NoKeyStore("no HOME".into()))?;
        private_dir(&dir)?;
        Ok(Self { dir, key_dir, identity, store })
    }

    /// Where the entries of this environment live (`$MAYFLY_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/mayfly/tokens`), whether or not the cache can be opened.
    pub fn dir_for(env: &Env) -> Option<PathBuf> {
        env.path(EnvVars::MAYFLY_CACHE_DIR).or_else(|| Some(env.cache_dir()?.join("tokens")))
    }

    /// The entry directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The memory-backed directory for the key's lock (and the key itself without a
    /// keyring), for `mayfly status`.
    pub fn key_dir(&self) -> &Path {
        &self.key_dir
    }

    /// True when the key lives in the kernel keyring.
    pub fn key_in_keyring(&self) -> bool {
        self.store == KeyStore::Keyring
    }

    /// Where the key lives, as shown to people.
    pub fn key_place(&self) -> String {
        match self.store {
            KeyStore::Keyring => "kernel user keyring".into(),
            KeyStore::Runtime => format!("memory-backed `{}`", self.key_dir.join("cache.key").display()),
        }
    }

    /// The key for a request: a hash, so file names say nothing about targets.
    pub fn key(parts: &[&str]) -> String {
        let mut hash = Sha256::new();
        for part in parts {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        hex::encode(&hash.finalize()[..20])
    }

    /// The tag that groups a session's entries in their file names: a hash, so names
    /// do not carry the session id.
    pub fn session_tag(session: Option<&str>) -> String {
        match session {
            None => "0".into(),
            Some(session) => Self::key(&["session", session])[..16].to_owned(),
        }
    }

    fn lock_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.lock"))
    }

    /// Takes the cross-process lock for one key (blocks until free).
    pub fn lock(&self, key: &str) -> Result<KeyLock, Error> {
        let path = self.lock_path(key);
        Ok(KeyLock { file: lock_file(&path)?, path })
    }

    /// Every entry as its file name and time describe it, decrypting nothing: one read of
    /// the directory and a `stat` per entry. Names of another form (older layouts, temp
    /// and lock files) are left out.
    pub fn list(&self) -> Vec<Listed> {
        self.scan(|_| true).entries
    }

    /// One read of the directory: the entries whose session tag is `wanted` (only those
    /// are `stat`ed), the session tags of the others, and the names of files that are not
    /// entries.
    fn scan(&self, wanted: impl Fn(&str) -> bool) -> Scan {
        let mut scan = Scan::default();
        let Ok(dir) = fs::read_dir(&self.dir) else {
            return scan;
        };
        let Scan { entries, skipped, others } = &mut scan;
        for found in dir.flatten() {
            let Ok(name) = found.file_name().into_string() else { continue };
            let Some((key, tag)) = parse_name(&name) else {
                others.push(name);
                continue;
            };
            if !wanted(tag) {
                skipped.push(tag.to_owned());
                continue;
            }
            // Gone since the directory was read: someone removed it.
            let Some(modified) = found.metadata().ok().and_then(|m| m.modified().ok()) else { continue };
            let expiry_bucket = match modified.duration_since(std::time::UNIX_EPOCH) {
                Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
                Err(_) => 0,
            };
            entries.push(Listed { key: key.into(), session_tag: tag.into(), expiry_bucket });
        }
        scan
    }

    fn path(&self, key: &str, session: Option<&str>) -> PathBuf {
        self.dir.join(file_name(key, &Self::session_tag(session)))
    }

    /// The entry for a key, minted in `session`, if it is still servable at `now`;
    /// anything else is a miss. An expired entry found here is removed.
    pub fn get(&self, key: &str, session: Option<&str>, now: i64) -> Option<CacheEntry> {
        match self.lookup(key, session, now) {
            Lookup::Servable(entry) => Some(*entry),
            Lookup::Stale(_) | Lookup::Miss => None,
        }
    }

    /// What the cache holds for a key minted in `session` at `now`: an entry to serve, one
    /// inside its refresh margin (which the next token replaces), or nothing. An expired
    /// entry found here is removed. Decrypts at most one file, and only one its stated
    /// times say may be served.
    pub(crate) fn lookup(&self, key: &str, session: Option<&str>, now: i64) -> Lookup {
        let path = self.path(key, session);
        let Some((bytes, file)) = read_file(&path) else { return Lookup::Miss };
        let (stated, sealed) = split_header(&bytes);
        let times = match stated {
            Some((refresh_at, expires_at)) if now >= refresh_at => (refresh_at, expires_at),
            // Possibly servable: the sealed times decide.
            _ => match open_entry(&self.identity, sealed) {
                Some(entry) if entry.expires_at > now && now < entry.refresh_at => {
                    return Lookup::Servable(Box::new(entry));
                }
                Some(entry) => (entry.refresh_at, entry.expires_at),
                None => return Lookup::Miss,
            },
        };
        if times.1 <= now {
            // Unlocked: only the file read, not one another process has put in its place.
            if same_file(&path, &file) {
                let _ = fs::remove_file(&path);
            }
            return Lookup::Miss;
        }
        Lookup::Stale(Stale { sealed: sealed.to_vec(), path, file })
    }

    /// True when the file a stale entry was read from is still the one at its path: no
    /// other process has replaced or removed it since (writes rename a new file in place),
    /// so reading it again would give the same entry.
    pub(crate) fn still_holds(&self, stale: &Stale) -> bool {
        same_file(&stale.path, &stale.file)
    }

    /// Removes a stale entry the caller (holding its key's lock) replaces, returning it
    /// still sealed ([`Cache::open_sealed`] opens it), when its file is still the one at the
    /// path; `None` when another process has already removed or replaced it (and with it,
    /// answered for the old token).
    pub(crate) fn take(&self, stale: Stale) -> Option<Vec<u8>> {
        (self.still_holds(&stale) && fs::remove_file(&stale.path).is_ok()).then_some(stale.sealed)
    }

    /// An entry [`Cache::take`] returned, decrypted; `None` when it is not one of this key's.
    pub(crate) fn open_sealed(&self, sealed: &[u8]) -> Option<CacheEntry> {
        open_entry(&self.identity, sealed)
    }

    /// Decrypts a listed entry; `None` when it is gone or unreadable.
    pub fn read(&self, listed: &Listed) -> Option<CacheEntry> {
        read_sealed(&self.identity, &self.dir.join(listed.file_name()))
    }

    /// Writes an entry atomically: encrypt, write a 0600 temp file dated its expiry
    /// bucket, rename over the key's path (not synced: a lost entry is a miss).
    pub fn put(&self, key: &str, entry: &CacheEntry, _lock: &KeyLock) -> Result<(), Error> {
        let stored = StoredEntry::from(entry);
        let plain = Secret::new(serde_json::to_string(&stored).map_err(|e| Error::Crypto(e.to_string()))?);
        drop(stored);
        let header = format!("{HEADER}{} {}\n", entry.refresh_at, entry.expires_at);
        let mut sealed = header.into_bytes();
        sealed.extend(self.identity.seal(plain.expose().as_bytes()).map_err(|e| Error::Crypto(e.to_string()))?);
        let path = self.path(key, entry.session.as_deref());
        let bucket = u64::try_from(expiry_bucket(entry.expires_at)).unwrap_or(0);
        let dated = std::time::UNIX_EPOCH + std::time::Duration::from_secs(bucket);
        crate::files::write_cache_file(&path, &sealed, 0o600, dated).map_err(io("write", &path))
    }

    /// Drops the entry of a key minted in `session`, returning it; a missing entry is fine.
    pub fn remove(&self, key: &str, session: Option<&str>) -> Option<CacheEntry> {
        let path = self.path(key, session);
        let entry = read_sealed(&self.identity, &path);
        let _ = fs::remove_file(&path);
        entry
    }

    /// Drops an entry, and with the lock the caller holds, its lock file.
    pub fn discard(&self, key: &str, session: Option<&str>, lock: KeyLock) -> Option<CacheEntry> {
        let entry = self.remove(key, session);
        drop(lock);
        entry
    }

    /// Drops an entry, where its lock cannot be had, only when it is still one `wanted`
    /// accepts.
    pub fn remove_if(
        &self,
        key: &str,
        session: Option<&str>,
        wanted: &dyn Fn(&CacheEntry) -> bool,
    ) -> Option<CacheEntry> {
        let path = self.path(key, session);
        let entry = read_sealed(&self.identity, &path).filter(|entry| wanted(entry))?;
        let _ = fs::remove_file(&path);
        Some(entry)
    }

    /// Drops an entry only when, read again under the caller's lock, it is still one
    /// `wanted` accepts (a newer token minted since it was listed is left alone).
    pub fn discard_if(
        &self,
        key: &str,
        session: Option<&str>,
        lock: KeyLock,
        wanted: &dyn Fn(&CacheEntry) -> bool,
    ) -> Option<CacheEntry> {
        let path = self.path(key, session);
        let entry = read_sealed(&self.identity, &path)?;
        if !wanted(&entry) {
            return None;
        }
        self.discard(key, session, lock)
    }

    /// Every readable entry with its key (decrypts them all: `mayfly logout` alone).
    pub fn entries(&self) -> Vec<(String, CacheEntry)> {
        self.list().into_iter().filter_map(|listed| Some((listed.key.clone(), self.read(&listed)?))).collect()
    }

    /// The session's entries still live at `now` (`None`: those minted outside any
    /// session), decrypting only those; its expired ones are removed on the way.
    pub fn session_entries(&self, session: Option<&str>, now: i64) -> Vec<(String, CacheEntry)> {
        let tag = Self::session_tag(session);
        self.session_entries_of(&self.scan(|t| t == tag).entries, session, now)
    }

    /// [`Cache::session_entries`] among entries already listed.
    pub fn session_entries_of(&self, listed: &[Listed], session: Option<&str>, now: i64) -> Vec<(String, CacheEntry)> {
        let tag = Self::session_tag(session);
        listed
            .iter()
            .filter(|listed| listed.session_tag == tag)
            .filter(|listed| {
                let expired = listed.expired(now);
                if expired {
                    let _ = fs::remove_file(self.dir.join(listed.file_name()));
                }
                !expired
            })
            .filter_map(|listed| Some((listed.key.clone(), self.read(listed)?)))
            .filter(|(_, entry)| entry.session.as_deref() == session)
            .collect()
    }

    /// True when no full sweep ran in the last [`EXPIRY_BUCKET`] seconds before `now`.
    pub fn sweep_due(&self, now: i64) -> bool {
        let last = fs::metadata(self.dir.join(SWEPT)).and_then(|m| m.modified()).ok();
        let last = last.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs());
        last.and_then(|t| i64::try_from(t).ok()).is_none_or(|last| now < last || last + EXPIRY_BUCKET <= now)
    }

    /// The entries of the sessions tagged `tags`, as [`Cache::list`] describes them, and
    /// the session tag of every other entry, by its name alone (no `stat`).
    pub fn list_sessions(&self, tags: &[String]) -> (Vec<Listed>, Vec<String>) {
        let scan = self.scan(|tag| tags.iter().any(|t| t == tag));
        (scan.entries, scan.skipped)
    }

    /// Removes what can never be served again, decrypting nothing: expired entries,
    /// entries named the older ways, and lock files nobody holds. Returns how many files went, and the entries still live.
    pub fn sweep(&self, now: i64) -> (usize, Vec<Listed>) {
        let Scan { entries, others, .. } = self.scan(|_| true);
        let dated = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(now).unwrap_or(0));
        // Best effort: without the mark the next caller sweeps again.
        let _ = File::create(self.dir.join(SWEPT)).and_then(|f| f.set_modified(dated));
        let mut removed = 0;
        let mut live = Vec::with_capacity(entries.len());
        for listed in entries {
            if listed.expired(now) {
                removed += usize::from(fs::remove_file(self.dir.join(listed.file_name())).is_ok());
            } else {
                live.push(listed);
            }
        }
        for name in &others {
            // The older layouts: `<key>.age` and `<key>.<tag>.<bucket>.age`.
            let older = name.strip_suffix(".age").is_some_and(|stem| {
                let parts: Vec<&str> = stem.split('.').collect();
                parts[0].len() == 40 && (parts.len() == 1 || parts.len() == 3)
            });
            if older {
                removed += usize::from(fs::remove_file(self.dir.join(name)).is_ok());
                continue;
            }
            // Holders remove their lock files as they let go: one nobody holds is stale.
            let Some(key) = name.strip_suffix(".lock") else { continue };
            let path = self.lock_path(key);
            let Ok(file) = OpenOptions::new().write(true).open(&path) else { continue };
            // Held: someone is minting for this key right now.
            if file.try_lock().is_ok() {
                removed += usize::from(unlink_held(&path, &file));
            }
        }
        (removed, live)
    }
}

/// An entry's file, decrypted; `None` when it is missing, too big, or not ours.
fn read_sealed(identity: &SealingKey, path: &Path) -> Option<CacheEntry> {
    let (bytes, _) = read_file(path)?;
    open_entry(identity, split_header(&bytes).1)
}

/// An entry's file as read, and the file, still open: while it is, its inode cannot be
/// freed and reused, so [`same_file`] tells it from any file put at the path since.
fn read_file(path: &Path) -> Option<(Vec<u8>, File)> {
    let mut file = File::open(path).ok()?;
    let meta = file.metadata().ok()?;
    // Sized from the file: `take` hides the size from `read_to_end`, which would then read
    // in doubling steps from 32 bytes, a system call each.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len().min(MAX_ENTRY)).unwrap_or(0) + 1);
    (&mut file).take(MAX_ENTRY).read_to_end(&mut bytes).ok()?;
    Some((bytes, file))
}

/// The age file of an entry, decrypted.
fn open_entry(identity: &SealingKey, sealed: &[u8]) -> Option<CacheEntry> {
    let plain = identity.open(sealed)?;
    let stored: StoredEntry = serde_json::from_slice(&plain).ok()?;
    Some(stored.into())
}

/// Whether an open file is the one at a path now.
fn same_file(path: &Path, file: &File) -> bool {
    match (fs::symlink_metadata(path), file.metadata()) {
        (Ok(at_path), Ok(held)) => at_path.dev() == held.dev() && at_path.ino() == held.ino(),
        _ => false,
    }
}

/// Removes a lock file whose lock the caller holds, if it is still the one at the path.
fn unlink_held(path: &Path, file: &File) -> bool {
    same_file(path, file) && fs::remove_file(path).is_ok()
}

/// How long an unused cache key lives in the kernel keyring: renewed on every use, it only
/// ends for a user who has not used mayfly for a day (their entries would be stale anyway).
const KEY_TIMEOUT: u64 = 24 * 3600;

/// What seals every record of this environment (cache entries, and the stored login of an
/// `oidc` identity, [`crate::login`]): the key, where it lives, and the memory-backed
/// directory for locks and, without a keyring, the key file itself.
pub(crate) struct Sealing {
    pub(crate) runtime_dir: PathBuf,
    pub(crate) identity: SealingKey,
    pub(crate) store: KeyStore,
}

pub(crate) fn sealing_key(env: &Env) -> Result<Sealing, Error> {
    let runtime_dir = key_dir(env)?;
    let store = KeyStore::choose(env).map_err(Error::Keyring)?;
    let identity = match store {
        KeyStore::Keyring => load_or_create_keyring_key(&runtime_dir)?,
        KeyStore::Runtime => load_or_create_key(&runtime_dir)?,
    };
    Ok(Sealing { runtime_dir, identity, store })
}

/// The cache key's description in the keyring: one key per runtime directory, so that
/// environments kept apart by their runtime directory stay apart.
fn keyring_description(runtime_dir: &Path) -> String {
    format!("mayfly-cache-key-{}", Cache::key(&[&runtime_dir.display().to_string()]))
}

/// Where the public key is kept beside a secret (a keyring description or a file name):
/// apart from it, so the secret stays exactly as older versions read it.
fn public_of(secret_place: &str) -> String {
    format!("{secret_place}.public")
}

/// Reads the key from the user keyring, or creates it there under a lock, so two first
/// callers cannot each seal entries with a key of their own. A public key missing or not
/// the secret's is derived and stored again (any process may: each stores the one of the
/// secret it read, and a reader checks it against its own).
fn load_or_create_keyring_key(runtime_dir: &Path) -> Result<SealingKey, Error> {
    let description = keyring_description(runtime_dir);
    let public = public_of(&description);
    // Both keys are renewed on each use: a public key left to time out beside a secret in
    // use would be derived again, one curve multiplication more, once a day.
    let read = || {
        let secret = keyring::find(&description)?;
        let stored = keyring::find(&public);
        let (key, derived) = SealingKey::read(
            std::str::from_utf8(&secret.payload).ok()?,
            stored.as_ref().and_then(|p| std::str::from_utf8(&p.payload).ok()),
        )?;
        Some((key, secret, stored.filter(|_| !derived)))
    };
    let store_public = |key: &SealingKey| {
        let _ = keyring::write(&public, key.public_text().as_bytes(), KEY_TIMEOUT);
    };
    if let Some((key, secret, stored_public)) = read() {
        secret.renew(KEY_TIMEOUT);
        match stored_public {
            Some(stored) => stored.renew(KEY_TIMEOUT),
            None => store_public(&key),
        }
        return Ok(key);
    }
    let _lock = lock_file(&runtime_dir.join("cache.key.lock"))?;
    if let Some((key, ..)) = read() {
        return Ok(key);
    }
    let key = SealingKey::generate();
    keyring::write(&description, key.secret_text().expose_secret().as_bytes(), KEY_TIMEOUT).map_err(Error::Keyring)?;
    store_public(&key);
    Ok(key)
}

/// Opens (creating it 0600) and locks a lock file; blocks until the lock is free. A lock
/// file removed while we waited (its holder discarded it) is not the lock any more: lock
/// the one at the path now.
fn lock_file(path: &Path) -> Result<File, Error> {
    loop {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .map_err(io("lock", path))?;
        file.lock().map_err(io("lock", path))?;
        if same_file(path, &file) {
            return Ok(file);
        }
    }
}

/// The memory-backed directory that holds the key: `$MAYFLY_RUNTIME_DIR`, else
/// `$XDG_RUNTIME_DIR/mayfly`, else `/dev/shm/mayfly-<uid>`. It must be on tmpfs or ramfs.
fn key_dir(env: &Env) -> Result<PathBuf, Error> {
    let uid = rustix::process::geteuid().as_raw();
    let candidates = [
        env.path(EnvVars::MAYFLY_RUNTIME_DIR),
        env.path(EnvVars::XDG_RUNTIME_DIR).map(|d| d.join("mayfly")),
        Some(PathBuf::from(format!("/dev/shm/mayfly-{uid}"))),
    ];
    let explicit = env.get(EnvVars::MAYFLY_RUNTIME_DIR).is_some();
    for dir in candidates.into_iter().flatten().take(if explicit { 1 } else { 3 }) {
        let Some(parent) = dir.parent() else { continue };
        if parent.is_dir() && is_memory_backed(parent) {
            private_dir(&dir)?;
            return Ok(dir);
        }
        if explicit {
            return Err(Error::NoKeyStore(format!("`{}` is not on tmpfs or ramfs", dir.display())));
        }
    }
    Err(Error::NoKeyStore("set XDG_RUNTIME_DIR or mount /dev/shm".into()))
}

/// True when the path is on tmpfs or ramfs, per `statfs(2)`: one call, where reading the
/// mount table costs the kernel a line per mount.
fn is_memory_backed(path: &Path) -> bool {
    use nix::sys::statfs::{FsType, TMPFS_MAGIC, statfs};
    /// `RAMFS_MAGIC` of linux/magic.h, which nix does not name.
    const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);
    statfs(path).is_ok_and(|fs| [TMPFS_MAGIC, RAMFS_MAGIC].contains(&fs.filesystem_type()))
}

/// Creates a 0700 directory, or checks that an existing one is ours and private; says
/// exactly what is wrong when it is not.
fn private_dir(dir: &Path) -> Result<(), Error> {
    let unsafe_dir = |why: String| Error::Unsafe { path: dir.to_owned(), why };
    if fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(unsafe_dir("it is a symlink".into()));
    }
    crate::files::create_private_dir(dir).map_err(io("create", dir))?;
    let meta = fs::symlink_metadata(dir).map_err(io("inspect", dir))?;
    let uid = rustix::process::geteuid().as_raw();
    if meta.file_type().is_symlink() {
        return Err(unsafe_dir("it is a symlink".into()));
    }
    if !meta.is_dir() {
        return Err(unsafe_dir("it is not a directory".into()));
    }
    if meta.uid() != uid {
        return Err(unsafe_dir(format!("it is owned by uid {}, not by you (uid {uid})", meta.uid())));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(unsafe_dir(format!("its mode is {:04o}, not 0700", meta.mode() & 0o7777)));
    }
    Ok(())
}

/// Reads the key, or creates it: written to a temp file, then hard-linked into place so
/// two first callers cannot both create one. Its public key is a file beside it, stored
/// again as in the keyring.
fn load_or_create_key(dir: &Path) -> Result<SealingKey, Error> {
    let path = dir.join("cache.key");
    if let Some(key) = read_key(&path) {
        return Ok(key);
    }
    let key = SealingKey::generate();
    let mut temp = tempfile::Builder::new()
        .prefix(".key-")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(io("create key", &path))?;
    temp.write_all(key.secret_text().expose_secret().as_bytes()).map_err(io("create key", &path))?;
    match fs::hard_link(temp.path(), &path) {
        Ok(()) => {
            store_public_file(&path, &key);
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read_key(&path).ok_or_else(|| Error::Crypto("unreadable cache key".into()))
        }
        Err(e) => Err(io("create key", &path)(e)),
    }
}

fn read_key(path: &Path) -> Option<SealingKey> {
    let public = fs::read_to_string(public_of(&path.display().to_string())).ok();
    let (key, derived) = SealingKey::read(&fs::read_to_string(path).ok()?, public.as_deref())?;
    if derived {
        store_public_file(path, &key);
    }
    Some(key)
}

/// Best effort: without it the public key is derived again.
fn store_public_file(secret_path: &Path, key: &SealingKey) {
    let _ = crate::files::write_atomic(
        Path::new(&public_of(&secret_path.display().to_string())),
        key.public_text().as_bytes(),
        0o600,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_cache() -> (tempfile::TempDir, tempfile::TempDir, Cache) {
        let runtime = tempfile::Builder::new().prefix("mayfly-test-").tempdir_in("/dev/shm").unwrap();
        let cache_dir = tempfile::tempdir().unwrap();
        let env = Env::from_pairs([
            (EnvVars::MAYFLY_RUNTIME_DIR, runtime.path().join("rt").display().to_string()),
            (EnvVars::MAYFLY_CACHE_DIR, cache_dir.path().join("tokens").display().to_string()),
        ]);
        let cache = Cache::open(&env).unwrap();
        (runtime, cache_dir, cache)
    }

    fn entry_path(cache: &Cache, key: &str) -> PathBuf {
        cache.path(key, None)
    }

    fn entry(token: &str, expires_at: i64, refresh_at: i64) -> CacheEntry {
        CacheEntry {
            token: Secret::new(token),
            expires_at,
            refresh_at,
            token_id: Some("jti-1".into()),
            scope: Some("repo:a:read".into()),
            issuer: None,
            subject: None,
            label: "git https://h/a read".into(),
            session: None,
            origin: Some(Origin {
                route: "r".into(),
                exchange: "e".into(),
                target: "https://h/a".into(),
                ..Origin::default()
            }),
            issuing_chain: Vec::new(),
        }
    }

    #[test]
    fn erase_by_fingerprint_leaves_a_newer_token_alone() {
        let (_rt, _dir, cache) = test_cache();
        let key = Cache::key(&["git", "h", "a", "read"]);
        let store = |token: &str| cache.put(&key, &entry(token, 200, 150), &cache.lock(&key).unwrap()).unwrap();
        let refused = Secret::new("tok-1").fingerprint();
        let matches = |e: &CacheEntry| e.token.fingerprint() == refused;
        // Another request already replaced the refused token with a fresh one.
        store("tok-1");
        store("tok-2");
        assert!(cache.discard_if(&key, None, cache.lock(&key).unwrap(), &matches).is_none());
        assert_eq!(cache.get(&key, None, 100).unwrap().token.expose(), "tok-2", "the newer token was dropped");
        // The refused token itself is dropped.
        store("tok-1");
        let taken = cache.discard_if(&key, None, cache.lock(&key).unwrap(), &matches).unwrap();
        assert_eq!(taken.token.expose(), "tok-1");
        assert!(cache.get(&key, None, 100).is_none());
    }

    #[test]
    fn a_stale_entry_is_taken_only_while_its_file_is_the_one_read() {
        let (_rt, _dir, cache) = test_cache();
        let key = Cache::key(&["git", "h", "a", "read"]);
        let store = |token: &str| cache.put(&key, &entry(token, 200, 150), &cache.lock(&key).unwrap()).unwrap();
        let stale = |now| match cache.lookup(&key, None, now) {
            Lookup::Stale(stale) => stale,
            _ => panic!("not a stale entry at {now}"),
        };
        store("tok-1");
        assert!(matches!(cache.lookup(&key, None, 100), Lookup::Servable(_)));
        assert!(cache.get(&key, None, 160).is_none(), "inside the margin, a get misses");
        // Unchanged: taken once, then gone.
        let old = stale(160);
        assert!(cache.still_holds(&old));
        assert_eq!(cache.open_sealed(&cache.take(old).unwrap()).unwrap().token.expose(), "tok-1");
        assert!(matches!(cache.lookup(&key, None, 160), Lookup::Miss));
        // Replaced by another process since it was read: neither taken nor removed.
        store("tok-1");
        let old = stale(160);
        store("tok-2");
        assert!(!cache.still_holds(&old));
        assert!(cache.take(old).is_none(), "another process already answered for the old token");
        assert_eq!(cache.get(&key, None, 100).unwrap().token.expose(), "tok-2");
        // Expired: a miss, and removed.
        assert!(matches!(cache.lookup(&key, None, 200), Lookup::Miss));
        assert!(!entry_path(&cache, &key).exists());
    }

    #[test]
    fn entries_round_trip_encrypted() {
        let (_rt, _dir, cache) = test_cache();
        let key = Cache::key(&["git", "h", "a", "read"]);
        let lock = cache.lock(&key).unwrap();
        cache.put(&key, &entry("tok-plaintext-marker", 200, 150), &lock).unwrap();
        let raw = fs::read(entry_path(&cache, &key)).unwrap();
        assert!(!raw.windows(20).any(|w| w == b"tok-plaintext-marker"), "entry is not encrypted");
        assert_eq!(fs::metadata(entry_path(&cache, &key)).unwrap().mode() & 0o777, 0o600);
        let got = cache.get(&key, None, 100).unwrap();
        assert_eq!(got.token.expose(), "tok-plaintext-marker");
        assert_eq!(got.token_id.as_deref(), Some("jti-1"));
        assert_eq!(got.origin.unwrap().exchange, "e");
    }

    #[test]
    fn the_key_lives_in_one_place_chosen_by_the_key_store() {
        let runtime = tempfile::Builder::new().prefix("mayfly-test-").tempdir_in("/dev/shm").unwrap();
        let cache_dir = tempfile::tempdir().unwrap();
        let env = |store: &str| {
            Env::from_pairs([
                (EnvVars::MAYFLY_RUNTIME_DIR, runtime.path().join("rt").display().to_string()),
                (EnvVars::MAYFLY_CACHE_DIR, cache_dir.path().join("tokens").display().to_string()),
                (EnvVars::MAYFLY_KEY_STORE, store.to_owned()),
            ])
        };
        let key_file = runtime.path().join("rt").join("cache.key");
        let on_file = Cache::open(&env("runtime")).unwrap();
        assert!(!on_file.key_in_keyring() && key_file.exists());
        fs::remove_file(&key_file).unwrap();
        let in_keyring = match Cache::open(&env("keyring")) {
            Ok(cache) => cache,
            Err(e) => {
                // A sandbox without keys: the runtime store above covers it.
                keyring::unavailable(e);
                return;
            }
        };
        assert!(in_keyring.key_in_keyring() && !key_file.exists(), "no key file beside a keyring key");
        let key = Cache::key(&["git", "h", "a", "read"]);
        let lock = in_keyring.lock(&key).unwrap();
        in_keyring.put(&key, &entry("tok-keyring", 200, 150), &lock).unwrap();
        drop(lock);
        // Another process of the same user opens the same key.
        let again = Cache::open(&env("keyring")).unwrap();
        assert_eq!(again.get(&key, None, 100).unwrap().token.expose(), "tok-keyring");
        // A key per runtime directory: another environment cannot read these entries.
        assert!(on_file.get(&key, None, 100).is_none());
        keyring::remove(&keyring_description(&runtime.path().join("rt")));
        keyring::remove(&public_of(&keyring_description(&runtime.path().join("rt"))));
        assert!(Cache::open(&env("keyring")).unwrap().get(&key, None, 100).is_none(), "a new key reads nothing");
    }

    #[test]
    fn the_secret_stays_as_older_versions_read_it_and_a_missing_public_key_is_stored_again() {
        let runtime = tempfile::Builder::new().prefix("mayfly-test-").tempdir_in("/dev/shm").unwrap();
        let cache_dir = tempfile::tempdir().unwrap();
        let rt = runtime.path().join("rt");
        let env = |store: &str| {
            Env::from_pairs([
                (EnvVars::MAYFLY_RUNTIME_DIR, rt.display().to_string()),
                (EnvVars::MAYFLY_CACHE_DIR, cache_dir.path().join("tokens").display().to_string()),
                (EnvVars::MAYFLY_KEY_STORE, store.to_owned()),
            ])
        };
        let key = Cache::key(&["k"]);
        let put = |cache: &Cache, token: &str| {
            let lock = cache.lock(&key).unwrap();
            cache.put(&key, &entry(token, 200, 150), &lock).unwrap();
        };
        let bare_secret = |text: &[u8]| {
            let text = std::str::from_utf8(text).unwrap();
            text.starts_with("AGE-SECRET-KEY-1") && text.trim().lines().count() == 1
        };

        let key_file = rt.join("cache.key");
        let public_file = rt.join("cache.key.public");
        put(&Cache::open(&env("runtime")).unwrap(), "on-file");
        assert!(bare_secret(&fs::read(&key_file).unwrap()), "the secret alone, as older versions read it");
        let public = fs::read_to_string(&public_file).unwrap();
        assert!(public.starts_with("age1"), "{public}");
        fs::remove_file(&public_file).unwrap();
        assert_eq!(Cache::open(&env("runtime")).unwrap().get(&key, None, 100).unwrap().token.expose(), "on-file");
        assert_eq!(fs::read_to_string(&public_file).unwrap(), public, "stored again");
        fs::remove_file(&key_file).unwrap();
        fs::remove_file(&public_file).unwrap();

        let description = keyring_description(&rt);
        let cache = match Cache::open(&env("keyring")) {
            Ok(cache) => cache,
            Err(e) => return keyring::unavailable(e),
        };
        put(&cache, "in-keyring");
        assert!(bare_secret(&keyring::read(&description).unwrap()));
        let public = keyring::read(&public_of(&description)).unwrap();
        keyring::remove(&public_of(&description));
        assert_eq!(Cache::open(&env("keyring")).unwrap().get(&key, None, 100).unwrap().token.expose(), "in-keyring");
        assert_eq!(keyring::read(&public_of(&description)).unwrap(), public, "stored again");
        // Each use renews both keys: neither times out while the other lives on.
        for place in [description.clone(), public_of(&description)] {
            let payload = keyring::read(&place).unwrap();
            keyring::write(&place, &payload, 60).unwrap();
            assert!(keyring::time_left(&place).unwrap().ends_with(['s', 'm']), "timed to a minute");
        }
        assert_eq!(Cache::open(&env("keyring")).unwrap().get(&key, None, 100).unwrap().token.expose(), "in-keyring");
        for place in [description.clone(), public_of(&description)] {
            let left = keyring::time_left(&place).unwrap();
            assert!(left.ends_with(['h', 'd']), "{place} renewed to a day, {left} left");
        }
        keyring::remove(&description);
        keyring::remove(&public_of(&description));
    }

    #[test]
    fn the_stated_times_decide_refreshes_and_removals_but_only_sealed_times_serve() {
        let (_rt, _dir, cache) = test_cache();
        let key = Cache::key(&["k"]);
        let path = entry_path(&cache, &key);
        cache.put(&key, &entry("tok", 200, 150), &cache.lock(&key).unwrap()).unwrap();
        let written = fs::read(&path).unwrap();
        assert!(written.starts_with(b"mayfly-entry/1 150 200\nage-encryption.org/v1\n"));
        let sealed = split_header(&written).1.to_vec();
        let with_line = |line: &str| [line.as_bytes(), &sealed].concat();

        // Due for a refresh by its line: stale, the sealed bytes unopened (garbage here).
        fs::write(&path, b"mayfly-entry/1 150 200\nnot an age file").unwrap();
        assert!(matches!(cache.lookup(&key, None, 160), Lookup::Stale(s) if s.sealed == b"not an age file"));
        // Expired by its line: removed unopened.
        assert!(matches!(cache.lookup(&key, None, 200), Lookup::Miss));
        assert!(!path.exists());

        // A line that claims more time than the sealed entry has serves nothing past it.
        fs::write(&path, with_line("mayfly-entry/1 9000 9999\n")).unwrap();
        assert!(matches!(cache.lookup(&key, None, 100), Lookup::Servable(e) if e.token.expose() == "tok"));
        assert!(matches!(cache.lookup(&key, None, 160), Lookup::Stale(_)));
        assert!(matches!(cache.lookup(&key, None, 200), Lookup::Miss));
        assert!(!path.exists());
        // A line that is not one, and a plain age file (an older version's entry): opened.
        for bytes in [with_line("mayfly-entry/1 x y\n"), sealed.clone()] {
            fs::write(&path, &bytes).unwrap();
            assert!(matches!(cache.lookup(&key, None, 100), Lookup::Servable(_)));
            assert_eq!(cache.get(&key, None, 100).unwrap().token.expose(), "tok");
            assert!(
                matches!(cache.lookup(&key, None, 160), Lookup::Stale(s) if cache.open_sealed(&s.sealed).is_some())
            );
        }
    }

    #[test]
    fn entries_inside_the_refresh_margin_are_misses() {
        let (_rt, _dir, cache) = test_cache();
        let key = Cache::key(&["k"]);
        let lock = cache.lock(&key).unwrap();
        cache.put(&key, &entry("t", 200, 150), &lock).unwrap();
        assert!(cache.get(&key, None, 149).is_some());
        assert!(cache.get(&key, None, 150).is_none());
        assert!(cache.get(&key, None, 199).is_none());
    }

    #[test]
    fn corrupt_and_foreign_entries_are_misses() {
        let (_rt, _dir, cache) = test_cache();
        let key = Cache::key(&["k"]);
        let path = cache.dir.join(format!("{key}.0.600.age"));
        fs::write(&path, b"garbage").unwrap();
        assert!(cache.get(&key, None, 0).is_none());
        let other = SealingKey::generate();
        let sealed = other.seal(b"{}").unwrap();
        fs::write(&path, sealed).unwrap();
        assert!(cache.get(&key, None, 0).is_none());
        assert!(cache.remove(&key, None).is_none());
    }

    #[test]
    fn key_dir_must_be_memory_backed() {
        let disk = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let env = Env::from_pairs([(EnvVars::MAYFLY_RUNTIME_DIR, disk.path().join("rt").display().to_string())]);
        let error = Cache::open(&env).err().unwrap();
        assert!(error.to_string().contains("is not on tmpfs or ramfs"), "{error}");
        assert!(is_memory_backed(Path::new("/dev/shm")));
    }

    #[test]
    fn an_unsafe_key_dir_is_named_with_what_is_wrong() {
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        let open = |dir: &Path| {
            let env = Env::from_pairs([(EnvVars::MAYFLY_RUNTIME_DIR, dir.display().to_string())]);
            Cache::open(&env).err().map(|e| e.to_string()).unwrap_or_default()
        };
        let elsewhere = shm.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let link = shm.path().join("link");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        assert!(open(&link).contains("is a symlink"), "{}", open(&link));
        let open_to_all = shm.path().join("open");
        fs::create_dir(&open_to_all).unwrap();
        fs::set_permissions(&open_to_all, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(open(&open_to_all).contains("its mode is 0777, not 0700"), "{}", open(&open_to_all));
        // Another user's directory (only root can make one to test with).
        let theirs = shm.path().join("theirs");
        crate::files::create_private_dir(&theirs).unwrap();
        if std::os::unix::fs::chown(&theirs, Some(54_321), None).is_ok() {
            assert!(open(&theirs).contains("owned by uid 54321"), "{}", open(&theirs));
        }
    }

    #[test]
    fn names_say_session_and_coarse_expiry_but_not_the_target() {
        let (_rt, _dir, cache) = test_cache();
        let key = Cache::key(&["k"]);
        let lock = cache.lock(&key).unwrap();
        let mut minted = entry("t", 1000, 900);
        minted.session = Some("session-secret-id".into());
        cache.put(&key, &minted, &lock).unwrap();
        let listed = cache.list();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].session_tag, Cache::session_tag(Some("session-secret-id")));
        assert_eq!(listed[0].expiry_bucket, 1200, "rounded up, so never before the expiry");
        assert!(!listed[0].expired(999) && listed[0].expired(1200));
        let path = cache.path(&key, Some("session-secret-id"));
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(!name.contains("session-secret-id") && !name.contains("h/a"), "{name}");
        assert_eq!(name, format!("{key}.{}.age", listed[0].session_tag), "one path per key and session");
        assert!(cache.get(&key, None, 500).is_none(), "another session's entry is not this one's");
        // A refresh with a later expiry replaces the file at the same path, dated anew.
        minted.token = Secret::new("t2");
        (minted.expires_at, minted.refresh_at) = (2000, 1900);
        cache.put(&key, &minted, &lock).unwrap();
        assert_eq!(cache.list().len(), 1);
        assert_eq!(cache.list()[0].expiry_bucket, 2100);
        assert_eq!(cache.get(&key, Some("session-secret-id"), 1000).unwrap().token.expose(), "t2");
    }

    #[test]
    fn a_get_that_finds_its_entry_expired_removes_it() {
        let (_rt, _dir, cache) = test_cache();
        let key = Cache::key(&["k"]);
        let lock = cache.lock(&key).unwrap();
        cache.put(&key, &entry("t", 1000, 900), &lock).unwrap();
        assert!(cache.get(&key, None, 950).is_none(), "inside the refresh margin: a miss");
        assert_eq!(cache.list().len(), 1, "not expired: kept for the refresh to replace");
        assert!(cache.get(&key, None, 1000).is_none());
        assert!(cache.list().is_empty(), "an expired entry is removed by the get that finds it");
    }

    #[test]
    fn session_entries_are_the_sessions_own_and_sweep_its_expired_ones() {
        let (_rt, _dir, cache) = test_cache();
        let put = |name: &str, session: Option<&str>, expires: i64| {
            let key = Cache::key(&[name]);
            let lock = cache.lock(&key).unwrap();
            let mut e = entry(name, expires, expires - 100);
            e.session = session.map(str::to_owned);
            cache.put(&key, &e, &lock).unwrap();
        };
        put("mine", Some("a"), 10_000);
        put("mine-expired", Some("a"), 1000);
        put("theirs", Some("b"), 10_000);
        put("none", None, 10_000);
        let tokens = |session| {
            let mut t: Vec<String> =
                cache.session_entries(session, 5000).into_iter().map(|(_, e)| e.token.expose().to_owned()).collect();
            t.sort();
            t
        };
        assert_eq!(tokens(Some("a")), ["mine"]);
        assert_eq!(tokens(None), ["none"]);
        assert_eq!(cache.list().len(), 3, "the session's expired entry went");
    }

    #[test]
    fn sweep_removes_expired_entries_old_names_and_unheld_stale_locks() {
        let (_rt, _dir, cache) = test_cache();
        let live = Cache::key(&["live"]);
        let dead = Cache::key(&["dead"]);
        let busy = Cache::key(&["busy"]);
        let lock = cache.lock(&live).unwrap();
        cache.put(&live, &entry("l", 10_000, 9000), &lock).unwrap();
        drop(lock);
        assert!(!cache.lock_path(&live).exists(), "letting go of a lock removes its file");
        let lock = cache.lock(&dead).unwrap();
        cache.put(&dead, &entry("d", 1000, 900), &lock).unwrap();
        drop(lock);
        // What a process that died holding a lock leaves behind.
        let stale = Cache::key(&["stale"]);
        fs::write(cache.lock_path(&stale), b"").unwrap();
        let held = cache.lock(&busy).unwrap();
        let old = cache.dir.join(format!("{}.age", Cache::key(&["old"])));
        fs::write(&old, b"sealed the old way").unwrap();
        let older = cache.dir.join(format!("{}.0.99999.age", Cache::key(&["older"])));
        fs::write(&older, b"named the next way").unwrap();
        // the expired entry, the stale lock, and the two entries of older layouts
        assert!(cache.sweep_due(5000));
        let (removed, live_entries) = cache.sweep(5000);
        assert_eq!(removed, 4);
        assert_eq!(live_entries.iter().map(|l| l.key.as_str()).collect::<Vec<_>>(), [live.as_str()]);
        assert!(!old.exists() && !older.exists() && !cache.lock_path(&stale).exists());
        assert!(cache.lock_path(&busy).exists(), "a held lock is never removed");
        assert_eq!(cache.get(&live, None, 5000).unwrap().token.expose(), "l");
        drop(held);
        assert!(!cache.lock_path(&busy).exists());
    }

    #[test]
    fn a_full_sweep_runs_at_most_once_per_expiry_bucket() {
        let (_rt, _dir, cache) = test_cache();
        let put = |name: &str, session: &str, expires: i64| {
            let key = Cache::key(&[name]);
            let lock = cache.lock(&key).unwrap();
            let mut e = entry(name, expires, expires - 100);
            e.session = Some(session.to_owned());
            cache.put(&key, &e, &lock).unwrap();
        };
        assert!(cache.sweep_due(5000), "never swept");
        cache.sweep(5000);
        assert!(!cache.sweep_due(5000) && !cache.sweep_due(5000 + EXPIRY_BUCKET - 1));
        assert!(cache.sweep_due(5000 + EXPIRY_BUCKET), "a bucket later");
        assert!(cache.sweep_due(4000), "a clock that went back");
        put("mine", "a", 10_000);
        put("theirs", "b", 10_000);
        put("also-theirs", "b", 10_000);
        put("elsewhere", "c", 10_000);
        let (listed, others) = cache.list_sessions(&[Cache::session_tag(Some("a"))]);
        assert_eq!(listed.iter().map(|l| l.key.as_str()).collect::<Vec<_>>(), [Cache::key(&["mine"]).as_str()]);
        let mut others = others;
        others.sort();
        let mut expected =
            [Cache::session_tag(Some("b")), Cache::session_tag(Some("b")), Cache::session_tag(Some("c"))];
        expected.sort();
        assert_eq!(others, expected, "the others by name, the directory's marker file left out");
    }

    #[test]
    fn a_lock_file_removed_while_waited_on_is_not_a_lock() {
        let (_rt, _dir, cache) = test_cache();
        let key = Cache::key(&["k"]);
        let first = cache.lock(&key).unwrap();
        cache.put(&key, &entry("t", 10_000, 9000), &first).unwrap();
        // A second process opened the lock file and waits on it ...
        let waiter = OpenOptions::new().write(true).open(cache.lock_path(&key)).unwrap();
        // ... while the holder discards the entry with its lock file.
        assert!(cache.discard(&key, None, first).is_some());
        assert!(!cache.lock_path(&key).exists() && cache.list().is_empty());
        // A third takes the lock at the path afresh; the waiter's flock on the old inode
        // succeeds, but it is not the file at the path, so lock_file would lock again.
        let third = cache.lock(&key).unwrap();
        waiter.lock().unwrap();
        assert!(!same_file(&cache.lock_path(&key), &waiter));
        assert!(same_file(&cache.lock_path(&key), &third.file));
        // The third still holds the lock: nobody else gets it.
        let other = OpenOptions::new().write(true).open(cache.lock_path(&key)).unwrap();
        assert!(other.try_lock().is_err());
    }
}
