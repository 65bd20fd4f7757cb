//! Where a login lives: only in memory-backed storage, sealed with age like cache entries.
//!
//! Beside the cache key ([`crate::keyring`]): one key per login in the kernel user
//! keyring, with a timeout of `min(idle, time left of max_login)` renewed on every use, so
//! an unused login disappears by itself; or, without a keyring, a 0600 file in the
//! memory-backed runtime directory. Never a file on disk.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::keyring::{self, KeyStore};
use crate::{Env, Secret};

/// Largest sealed login read back.
const MAX_RECORD: u64 = 32 * 1024;

/// A login: the tokens and what `mayfly status` shows about them.
#[derive(Clone, Debug)]
pub(crate) struct Record {
    /// The ID token: the subject token routes exchange.
    pub(crate) id_token: Secret,
    /// The refresh token, if the provider gave one.
    pub(crate) refresh_token: Option<Secret>,
    /// The ID token's expiry, unix seconds.
    pub(crate) id_token_exp: i64,
    /// When the ID token was received, unix seconds (its lifetime sets the refresh margin).
    pub(crate) id_token_at: i64,
    /// The provider's token endpoint (refresh).
    pub(crate) token_endpoint: String,
    /// The provider's revocation endpoint (RFC 7009), if it has one.
    pub(crate) revocation_endpoint: Option<String>,
    /// When the login happened, unix seconds.
    pub(crate) since: i64,
    /// When it ends whatever happens (`since + max_login`), unix seconds.
    pub(crate) until: i64,
    /// When it was last used, unix seconds (`idle` counts from here).
    pub(crate) last_used: i64,
    /// The ID token's `sub`.
    pub(crate) subject: Option<String>,
    /// The ID token's `email`, when present.
    pub(crate) email: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    id_token: String,
    refresh_token: Option<String>,
    id_token_exp: i64,
    id_token_at: i64,
    token_endpoint: String,
    revocation_endpoint: Option<String>,
    since: i64,
    until: i64,
    last_used: i64,
    subject: Option<String>,
    email: Option<String>,
}

/// The store of one login (one identity of one provider and client).
pub(crate) struct Store {
    backend: KeyStore,
    key: crate::seal::SealingKey,
    runtime_dir: PathBuf,
    /// The key's description in the keyring, and the file's stem in the runtime directory.
    slot: String,
    /// Seconds a login may go unused.
    idle: i64,
}

/// Held while a login is refreshed or dropped: refresh tokens rotate, so two processes
/// refreshing at once would spend the same one.
pub(crate) struct Lock {
    _file: File,
}

impl Store {
    /// The store for one login, named by the identity, the issuer and the client.
    pub(crate) fn open(env: &Env, parts: &[&str], idle: i64) -> Result<Self, String> {
        let sealing = crate::cache::sealing_key(env).map_err(|e| format!("no memory-backed storage: {e}"))?;
        let slot = format!("mayfly-login-{}", crate::Cache::key(parts));
        let (backend, key, runtime_dir) = (sealing.store, sealing.identity, sealing.runtime_dir);
        Ok(Self { backend, key, runtime_dir, slot, idle })
    }

    /// Where logins are kept, as shown to people.
    pub(crate) fn place(&self) -> String {
        match self.backend {
            KeyStore::Keyring => "kernel user keyring".into(),
            KeyStore::Runtime => format!("memory-backed `{}`", self.runtime_dir.display()),
        }
    }

    fn file(&self) -> PathBuf {
        self.runtime_dir.join(format!("{}.age", self.slot))
    }

    /// Takes the cross-process lock of this login (blocks until free).
    pub(crate) fn lock(&self) -> Result<Lock, String> {
        let path = self.runtime_dir.join(format!("{}.lock", self.slot));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .and_then(|file| file.lock().map(|()| file))
            .map_err(|e| format!("cannot lock `{}`: {e}", path.display()))?;
        Ok(Lock { _file: file })
    }

    /// The login, if there is one still in force at `now`; an expired, unreadable or
    /// undecryptable one is dropped and reads as none.
    pub(crate) fn load(&self, now: i64) -> Option<Record> {
        let sealed = match self.backend {
            KeyStore::Keyring => keyring::read(&self.slot)?,
            KeyStore::Runtime => {
                let mut sealed = Vec::new();
                File::open(self.file()).ok()?.take(MAX_RECORD).read_to_end(&mut sealed).ok()?;
                sealed
            }
        };
        let record =
            self.key.open(&sealed).and_then(|plain| serde_json::from_slice::<Stored>(&plain).ok()).map(Record::from);
        match record {
            Some(record) if now < record.until && now < record.last_used.saturating_add(self.idle) => Some(record),
            _ => {
                self.remove();
                None
            }
        }
    }

    /// Stores the login, used at `now`: the keyring key's timeout (or the file's
    /// `last_used`) starts again.
    pub(crate) fn save(&self, record: &Record, now: i64) -> Result<(), String> {
        let mut record = record.clone();
        record.last_used = now;
        let plain = Secret::new(serde_json::to_string(&Stored::from(&record)).map_err(|e| e.to_string())?);
        let sealed = self.key.seal(plain.expose().as_bytes()).map_err(|e| format!("cannot seal the login: {e}"))?;
        let left = (record.until - now).min(self.idle);
        if left <= 0 {
            self.remove();
            return Ok(());
        }
        match self.backend {
            KeyStore::Keyring => keyring::write(&self.slot, &sealed, u64::try_from(left).unwrap_or(0)),
            KeyStore::Runtime => {
                let path = self.file();
                crate::files::write_atomic(&path, &sealed, 0o600)
                    .map_err(|e| format!("cannot store the login in `{}`: {e}", path.display()))
            }
        }
    }

    /// Drops the login; none is fine.
    pub(crate) fn remove(&self) {
        match self.backend {
            KeyStore::Keyring => keyring::remove(&self.slot),
            KeyStore::Runtime => {
                let _ = std::fs::remove_file(self.file());
            }
        }
    }
}

impl From<Stored> for Record {
    fn from(s: Stored) -> Self {
        Self {
            id_token: Secret::new(s.id_token),
            refresh_token: s.refresh_token.map(Secret::new),
            id_token_exp: s.id_token_exp,
            id_token_at: s.id_token_at,
            token_endpoint: s.token_endpoint,
            revocation_endpoint: s.revocation_endpoint,
            since: s.since,
            until: s.until,
            last_used: s.last_used,
            subject: s.subject,
            email: s.email,
        }
    }
}

impl From<&Record> for Stored {
    fn from(r: &Record) -> Self {
        Self {
            id_token: r.id_token.expose().to_owned(),
            refresh_token: r.refresh_token.as_ref().map(|t| t.expose().to_owned()),
            id_token_exp: r.id_token_exp,
            id_token_at: r.id_token_at,
            token_endpoint: r.token_endpoint.clone(),
            revocation_endpoint: r.revocation_endpoint.clone(),
            since: r.since,
            until: r.until,
            last_used: r.last_used,
            subject: r.subject.clone(),
            email: r.email.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EnvVars;

    fn record(now: i64) -> Record {
        Record {
            id_token: Secret::new("id.token.sig"),
            refresh_token: Some(Secret::new("refresh-1")),
            id_token_exp: now + 300,
            id_token_at: now,
            token_endpoint: "http://127.0.0.1:9/token".into(),
            revocation_endpoint: None,
            since: now,
            until: now + 3600,
            last_used: now,
            subject: Some("alice".into()),
            email: None,
        }
    }

    fn env_for(dir: &std::path::Path, backend: &str) -> Env {
        Env::from_pairs([
            (EnvVars::MAYFLY_RUNTIME_DIR, dir.join("rt").display().to_string()),
            (EnvVars::MAYFLY_KEY_STORE, backend.to_owned()),
        ])
    }

    fn runtime_dir() -> tempfile::TempDir {
        tempfile::Builder::new().prefix("mayfly-login-test-").tempdir_in("/dev/shm").expect("/dev/shm")
    }

    #[test]
    fn a_login_in_the_runtime_directory_is_sealed_and_ends_when_idle_or_at_its_limit() {
        let dir = runtime_dir();
        let env = env_for(dir.path(), "runtime");
        let store = Store::open(&env, &["laptop", "https://idp.example", "cli", "runtime"], 600).unwrap();
        let now = 1_000_000;
        store.save(&record(now), now).unwrap();
        let sealed = std::fs::read(store.file()).unwrap();
        assert!(!String::from_utf8_lossy(&sealed).contains("refresh-1"));
        assert_eq!(store.load(now + 599).unwrap().refresh_token.unwrap().expose(), "refresh-1");
        // Used at +599: idle counts again from there.
        store.save(&store.load(now + 599).unwrap(), now + 599).unwrap();
        assert!(store.load(now + 1100).is_some());
        assert!(store.load(now + 1199).is_none(), "idle for 600 s");
        assert!(!store.file().exists(), "an ended login is dropped");
        store.save(&record(now), now).unwrap();
        assert!(store.load(now + 3600).is_none(), "past max_login");
    }

    #[test]
    fn a_login_in_the_keyring_reads_back_and_is_dropped() {
        let dir = runtime_dir();
        let env = env_for(dir.path(), "keyring");
        let unique = format!("{:?}", std::time::SystemTime::now());
        let store = Store::open(&env, &["laptop", "https://idp.example", "cli", &unique], 600).unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if let Err(e) = store.save(&record(now), now) {
            // A sandbox without keys: the runtime test covers the fallback.
            crate::keyring::unavailable(e);
            return;
        }
        assert_eq!(store.load(now).unwrap().subject.as_deref(), Some("alice"));
        assert!(!dir.path().join("rt").join(format!("{}.age", store.slot)).exists());
        store.remove();
        assert!(store.load(now).is_none());
    }
}
