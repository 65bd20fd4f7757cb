//! Revoked tokens (RFC 7009): the one piece of state the exchange keeps.
//!
//! A token is remembered by its `jti` until its `exp`, after which it is refused anyway, so
//! the store stays as small as the set of live revoked tokens. The store is a trait:
//! [`RedbStore`] is the embedded one (one process), [`crate::PgStore`] the one replicas share.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// `jti` -> `exp` (Unix seconds).
const REVOKED: TableDefinition<'_, &str, i64> = TableDefinition::new("revoked");
/// Entries are kept this long past `exp`, so verifiers that allow clock skew on `exp`
/// still see them as revoked.
pub(crate) const PRUNE_GRACE_SECS: i64 = 300;
/// A long-running exchange prunes at most this often (on a revocation).
pub(crate) const PRUNE_EVERY_SECS: i64 = 3600;

/// Where revocations are kept.
pub trait RevocationStore: Send + Sync {
    /// Remembers `jti` as revoked until `expires_at` (Unix seconds). Revoking twice is fine.
    fn revoke(&self, jti: &str, expires_at: i64) -> Result<(), String>;
    /// Whether `jti` was revoked.
    fn is_revoked(&self, jti: &str) -> Result<bool, String>;
    /// Whether the store can be used now (`/readyz`, and before minting a token).
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
    /// Whether [`check`](Self::check) may block (a round trip to a database): it then runs
    /// off the async runtime. A store whose check answers at once says `false`, and is
    /// checked in place before each token, without a hand-off to another thread.
    fn check_blocks(&self) -> bool {
        true
    }
}

/// Where the exchange keeps its state: revocations, approvals and sessions.
pub(crate) struct Stores {
    pub(crate) revocations: Arc<dyn RevocationStore>,
    pub(crate) approvals: Arc<dyn crate::approval::ApprovalStore>,
    pub(crate) sessions: Arc<dyn crate::sessions::SessionStore>,
}

impl Stores {
    /// `revocations`, with approvals and sessions in this process.
    pub(crate) fn in_process(revocations: Arc<dyn RevocationStore>, config: &crate::Config) -> Self {
        Self {
            revocations,
            approvals: Arc::new(crate::approval::Approvals::new(config.approval_ttl, config.approval_interval)),
            sessions: Arc::new(crate::sessions::Sessions::new(config.session_idle)),
        }
    }
}

/// The stores the config's `revocation_store` names: a `postgres://` URL (revocations,
/// approvals and sessions all in that database, shared by replicas), a redb file, or
/// (none) memory; with no database, approvals and sessions are in this process. Opening a
/// database connects nothing yet.
pub(crate) fn open(config: &crate::Config) -> Result<Stores, String> {
    let Some(store) = config.revocation_store.as_deref() else {
        return Ok(Stores::in_process(Arc::new(RedbStore::in_memory()?), config));
    };
    match store.to_str() {
        Some(url) if crate::postgres::is_url(url) => {
            let db = Arc::new(crate::postgres::PgStore::open(url)?);
            Ok(Stores {
                revocations: db.clone(),
                approvals: Arc::new(crate::pg_shared::PgApprovals::new(
                    db.clone(),
                    config.approval_ttl,
                    config.approval_interval,
                )),
                sessions: Arc::new(crate::pg_shared::PgSessions::new(db, config.session_idle)),
            })
        }
        _ => Ok(Stores::in_process(Arc::new(RedbStore::open(store)?), config)),
    }
}

/// The embedded store: a redb file, or redb's in-memory backend.
pub struct RedbStore {
    db: Database,
    last_prune: AtomicI64,
}

impl RedbStore {
    /// Opens (or creates) the store file, dropping entries that have long expired.
    pub fn open(path: &Path) -> Result<Self, String> {
        let db =
            Database::create(path).map_err(|e| format!("cannot open revocation store `{}`: {e}", path.display()))?;
        Self::init(db)
    }

    /// A store that lives as long as the process (one replica, nothing survives a restart).
    pub fn in_memory() -> Result<Self, String> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| format!("cannot create in-memory revocation store: {e}"))?;
        Self::init(db)
    }

    fn init(db: Database) -> Result<Self, String> {
        let store = Self { db, last_prune: AtomicI64::new(0) };
        store.write(|_| Ok(()))?;
        Ok(store)
    }

    /// Runs `change` in a write transaction on the table (created if missing), pruning
    /// expired entries first when it is time to.
    fn write(
        &self,
        change: impl FnOnce(&mut redb::Table<'_, &str, i64>) -> Result<(), redb::Error>,
    ) -> Result<(), String> {
        let now = now();
        let prune = now - self.last_prune.load(Ordering::Relaxed) >= PRUNE_EVERY_SECS;
        let result = (|| -> Result<(), redb::Error> {
            let txn = self.db.begin_write()?;
            {
                let mut table = txn.open_table(REVOKED)?;
                if prune {
                    table.retain(|_, expires_at| expires_at + PRUNE_GRACE_SECS > now)?;
                }
                change(&mut table)?;
            }
            txn.commit()?;
            Ok(())
        })();
        result.map_err(|e| format!("revocation store: {e}"))?;
        if prune {
            self.last_prune.store(now, Ordering::Relaxed);
        }
        Ok(())
    }
}

impl RevocationStore for RedbStore {
    /// The embedded store is ready once open: its check is the default `Ok`.
    fn check_blocks(&self) -> bool {
        false
    }

    fn revoke(&self, jti: &str, expires_at: i64) -> Result<(), String> {
        self.write(|table| {
            let known = table.get(jti)?.map(|v| v.value());
            if known.is_none_or(|known| known < expires_at) {
                table.insert(jti, expires_at)?;
            }
            Ok(())
        })
    }

    fn is_revoked(&self, jti: &str) -> Result<bool, String> {
        let read = || -> Result<bool, redb::Error> {
            let txn = self.db.begin_read()?;
            Ok(txn.open_table(REVOKED)?.get(jti)?.is_some())
        };
        read().map_err(|e| format!("revocation store: {e}"))
    }
}

pub(crate) fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocations_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revoked.redb");
        {
            let store = RedbStore::open(&path).unwrap();
            assert!(!store.is_revoked("a").unwrap());
            store.revoke("a", now() + 600).unwrap();
            store.revoke("a", now() + 600).unwrap();
            assert!(store.is_revoked("a").unwrap());
        }
        let store = RedbStore::open(&path).unwrap();
        assert!(store.is_revoked("a").unwrap());
        assert!(!store.is_revoked("b").unwrap());
    }

    #[test]
    fn long_expired_entries_are_pruned_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revoked.redb");
        {
            let store = RedbStore::open(&path).unwrap();
            store.revoke("old", now() - PRUNE_GRACE_SECS - 10).unwrap();
            store.revoke("just-expired", now() - 10).unwrap();
            store.revoke("live", now() + 600).unwrap();
            assert!(store.is_revoked("old").unwrap(), "kept until the next prune");
        }
        let store = RedbStore::open(&path).unwrap();
        assert!(!store.is_revoked("old").unwrap());
        assert!(store.is_revoked("just-expired").unwrap(), "kept through the grace period");
        assert!(store.is_revoked("live").unwrap());
    }

    #[test]
    fn a_second_revocation_never_shortens_the_first() {
        let store = RedbStore::in_memory().unwrap();
        store.revoke("a", now() + 600).unwrap();
        store.revoke("a", now() - PRUNE_GRACE_SECS - 10).unwrap();
        store.last_prune.store(0, Ordering::Relaxed);
        store.revoke("b", now() + 600).unwrap();
        assert!(store.is_revoked("a").unwrap());
        assert!(store.is_revoked("b").unwrap());
    }

    #[test]
    fn the_in_memory_store_works_alike() {
        let store = RedbStore::in_memory().unwrap();
        assert!(!store.is_revoked("a").unwrap());
        store.revoke("a", now() + 60).unwrap();
        assert!(store.is_revoked("a").unwrap());
    }
}
