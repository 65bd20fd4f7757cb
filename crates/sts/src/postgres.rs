//! Revocations in PostgreSQL, so that replicas of the exchange share them (and, through
//! the same pool, approvals and sessions: [`crate::pg_shared`]).
//!
//! Every check is one indexed query and nothing is cached here: a revocation answered by
//! one replica is seen by the next request at any replica. When the database cannot be
//! reached, every call fails and the exchange answers 503 (it never mints or vouches for a
//! token whose revocation it cannot record or check); the pool reconnects on the next call
//! once the database is back.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::runtime::Handle;

use crate::revocation::{PRUNE_EVERY_SECS, PRUNE_GRACE_SECS, RevocationStore, now};

/// How long one call may take (connecting included) before it counts as a failure.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Most connections one replica holds.
const POOL_SIZE: usize = 16;
/// Serialises migrations when several replicas start at once (any constant; "mayfly").
const MIGRATION_LOCK: i64 = 0x6d61_7966_6c79;
/// The schema, one step per version; a step never changes once released.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE mayfly_revoked (
        jti text PRIMARY KEY,
        expires_at bigint NOT NULL
    );
    CREATE INDEX mayfly_revoked_expires_at ON mayfly_revoked (expires_at);",
    // Times in milliseconds of the database's clock, but a session's `expires_at` (its
    // token's `exp`, Unix seconds). `request` and `approver` are JSON text, read back as
    // written; only the code's SHA-256 is kept.
    "CREATE TABLE mayfly_approvals (
        id text PRIMARY KEY,
        code_sha256 bytea NOT NULL UNIQUE,
        request text NOT NULL,
        state text NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'used')),
        approver text,
        reason text,
        expires_at bigint NOT NULL,
        interval_ms bigint NOT NULL,
        last_poll bigint NOT NULL
    );
    CREATE INDEX mayfly_approvals_expires_at ON mayfly_approvals (expires_at);
    CREATE TABLE mayfly_sessions (
        sid text PRIMARY KEY,
        last_use bigint NOT NULL,
        expires_at bigint NOT NULL
    );
    CREATE INDEX mayfly_sessions_expires_at ON mayfly_sessions (expires_at);",
];

/// Revocations in a PostgreSQL database named by a `postgres://` URL.
pub struct PgStore {
    pool: Pool,
    runtime: Handle,
    /// The schema is known to be current (set by the first call that reaches the database).
    migrated: AtomicBool,
    last_prune: AtomicI64,
}

/// Whether a configured store names a database rather than a file.
pub(crate) fn is_url(store: &str) -> bool {
    store.starts_with("postgres://") || store.starts_with("postgresql://")
}

impl PgStore {
    /// A store on the database `url` names. Nothing is connected yet: a database that is
    /// down at start only makes the exchange unready until it is up. Must be called within
    /// a Tokio runtime, which then carries the connections.
    ///
    /// TLS is rustls with the platform's roots, plus the CA file of `sslrootcert=FILE` in
    /// the URL (libpq's spelling); `sslmode=require` refuses a server without TLS. A URL
    /// without a password takes `PGPASSWORD`'s.
    pub fn open(url: &str) -> Result<Self, String> {
        let (config, ca_file) = parse(url)?;
        let tls = tls(ca_file.as_deref())?;
        let manager = Manager::from_config(config, tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CALL_TIMEOUT))
            .create_timeout(Some(CALL_TIMEOUT))
            .recycle_timeout(Some(CALL_TIMEOUT))
            .build()
            .map_err(|e| format!("revocation store: {e}"))?;
        let runtime =
            Handle::try_current().map_err(|_| "revocation store: no async runtime to connect on".to_owned())?;
        Ok(Self { pool, runtime, migrated: AtomicBool::new(false), last_prune: AtomicI64::new(0) })
    }

    /// Runs `call` on a pooled connection (migrating first if not yet done), from a thread
    /// that may block, within [`CALL_TIMEOUT`].
    fn run<T>(
        &self,
        call: impl AsyncFnOnce(&mut deadpool_postgres::Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, String> {
        self.run_as("revocation store", call)
    }

    /// [`Self::run`], its errors starting with `what`.
    fn run_as<T>(
        &self,
        what: &str,
        call: impl AsyncFnOnce(&mut deadpool_postgres::Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, String> {
        self.runtime.block_on(async {
            let work = async {
                let mut client = self.pool.get().await.map_err(|e| one_line(&e))?;
                if !self.migrated.load(Ordering::Acquire) {
                    migrate(&mut client).await.map_err(|e| format!("cannot migrate: {}", one_line(&e)))?;
                    self.migrated.store(true, Ordering::Release);
                }
                call(&mut client).await.map_err(|e| one_line(&e))
            };
            match tokio::time::timeout(CALL_TIMEOUT, work).await {
                Ok(result) => result.map_err(|e| format!("{what} (PostgreSQL): {e}")),
                Err(_) => Err(format!("{what} (PostgreSQL): no answer within {}s", CALL_TIMEOUT.as_secs())),
            }
        })
    }

    /// [`Self::run_as`] from anywhere: a thread that may block, or a worker of a
    /// multi-threaded runtime (which hands its other tasks on while this one waits).
    pub(crate) fn call<T>(
        &self,
        what: &str,
        call: impl AsyncFnOnce(&mut deadpool_postgres::Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, String> {
        use tokio::runtime::RuntimeFlavor;
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(RuntimeFlavor::CurrentThread) => {
                Err(format!("{what} (PostgreSQL): needs a multi-threaded async runtime"))
            }
            Ok(_) => tokio::task::block_in_place(|| self.run_as(what, call)),
            Err(_) => self.run_as(what, call),
        }
    }
}

impl RevocationStore for PgStore {
    fn revoke(&self, jti: &str, expires_at: i64) -> Result<(), String> {
        let now = now();
        let prune = now - self.last_prune.load(Ordering::Relaxed) >= PRUNE_EVERY_SECS;
        self.run(async |client| {
            let insert = client
                .prepare_cached(
                    "INSERT INTO mayfly_revoked (jti, expires_at) VALUES ($1, $2)
                     ON CONFLICT (jti) DO UPDATE SET expires_at = GREATEST(mayfly_revoked.expires_at, EXCLUDED.expires_at)",
                )
                .await?;
            client.execute(&insert, &[&jti, &expires_at]).await?;
            if prune {
                let purge = client.prepare_cached("DELETE FROM mayfly_revoked WHERE expires_at < $1").await?;
                client.execute(&purge, &[&(now - PRUNE_GRACE_SECS)]).await?;
            }
            Ok(())
        })?;
        if prune {
            self.last_prune.store(now, Ordering::Relaxed);
        }
        Ok(())
    }

    fn is_revoked(&self, jti: &str) -> Result<bool, String> {
        self.run(async |client| {
            let select = client.prepare_cached("SELECT 1 FROM mayfly_revoked WHERE jti = $1").await?;
            Ok(client.query_opt(&select, &[&jti]).await?.is_some())
        })
    }

    fn check(&self) -> Result<(), String> {
        self.run(async |client| client.simple_query("SELECT 1").await.map(drop))
    }
}

/// Brings the schema to the newest version, under a lock so replicas starting together
/// take turns; a version already applied is skipped.
async fn migrate(client: &mut deadpool_postgres::Client) -> Result<(), tokio_postgres::Error> {
    let txn = client.transaction().await?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    txn.batch_execute("CREATE TABLE IF NOT EXISTS mayfly_schema (version integer NOT NULL)").await?;
    let applied: i32 = txn.query_one("SELECT coalesce(max(version), 0) FROM mayfly_schema", &[]).await?.get(0);
    for (version, step) in (1..).zip(MIGRATIONS) {
        if version > applied {
            txn.batch_execute(step).await?;
            txn.execute("INSERT INTO mayfly_schema (version) VALUES ($1)", &[&version]).await?;
        }
    }
    txn.commit().await
}

/// The connection settings, and the CA file `sslrootcert` names (tokio-postgres does not
/// read that parameter itself).
fn parse(url: &str) -> Result<(tokio_postgres::Config, Option<String>), String> {
    // Never echo the URL: it may hold a password.
    let invalid = |why: &dyn std::fmt::Display| format!("revocation store: invalid PostgreSQL URL: {why}");
    let mut parsed = url::Url::parse(url).map_err(|e| invalid(&e))?;
    let mut ca_file = None;
    let rest: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(key, value)| {
            let root = key == "sslrootcert";
            if root {
                ca_file = Some(value.to_string());
            }
            !root
        })
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    parsed.set_query(None);
    if !rest.is_empty() {
        parsed.query_pairs_mut().extend_pairs(rest);
    }
    let mut config = tokio_postgres::Config::from_str(parsed.as_str()).map_err(|e| invalid(&one_line(&e)))?;
    // libpq's variable, so the password need not be in the config file.
    if config.get_password().is_none()
        && let Some(password) = std::env::var_os("PGPASSWORD")
    {
        config.password(password.as_encoded_bytes());
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CALL_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("mayfly-sts");
    }
    Ok((config, ca_file))
}

fn tls(ca_file: Option<&str>) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    let mut extra = Vec::new();
    if let Some(path) = ca_file {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("revocation store: cannot read CA file `{path}`: {e}"))?;
        if certs.is_empty() {
            return Err(format!("revocation store: `{path}` holds no PEM certificate"));
        }
        extra = certs;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
        .map_err(|e| format!("revocation store: cannot set up TLS: {e}"))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("revocation store: cannot set up TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// An error as one line (a server's message may carry a detail on a line of its own).
fn one_line(error: &dyn std::fmt::Display) -> String {
    error.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslrootcert_is_taken_out_of_the_url_and_the_rest_kept() {
        let (config, ca) =
            parse("postgres://mayfly:secret@db.example:6432/sts?sslmode=require&sslrootcert=/etc/ca.pem").unwrap();
        assert_eq!(ca.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(config.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        assert_eq!(config.get_ports(), &[6432]);
        assert_eq!(config.get_dbname(), Some("sts"));
        assert_eq!(config.get_connect_timeout(), Some(&CALL_TIMEOUT));
    }

    #[test]
    fn a_bad_url_is_refused_without_echoing_its_password() {
        let error = parse("postgres://mayfly:hunter2@db.example/sts?nonsense=1").unwrap_err();
        assert!(error.starts_with("revocation store: invalid PostgreSQL URL"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        assert!(is_url("postgresql://db/sts") && !is_url("/var/lib/mayfly/revoked.redb"));
    }
}
