//! Approvals and sessions in PostgreSQL, beside the revocations, so that every replica of
//! the exchange sees the same ones: a request held at one replica is decided and collected
//! at any, and a session's idle time counts its uses at all of them.
//!
//! Times are the database's clock (milliseconds), so replicas whose clocks drift still
//! agree. Each call is one short transaction; spending an approval is one conditional
//! `UPDATE`, so two replicas collecting at once yield one token. A store that cannot be
//! reached fails the call, and the exchange answers 503.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::approval::{
    ApprovalStore, Approver, Binding, Created, DecideError, KEPT_AFTER_EXPIRY, MAX_KEPT, MAX_PENDING, Poll, Request,
    SLOW_DOWN_STEP, View,
};
use crate::postgres::PgStore;
use crate::sessions::SessionStore;

/// The database's clock, in milliseconds (the same through one transaction).
macro_rules! now_ms {
    () => {
        "(extract(epoch from now()) * 1000)::bigint"
    };
}

/// Serialises opening approvals across replicas, so the cap on pending ones holds.
const CREATE_LOCK: i64 = 0x6d61_7966_6c79 + 1;
/// Expired sessions are dropped at most this often (by each replica).
const PRUNE_EVERY_SECS: i64 = 60;

const APPROVALS: &str = "approval store";
const SESSIONS: &str = "session store";

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 4)
}

fn duration(millis: i64) -> Duration {
    Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

/// An approval's status, from a row's state, expiry and the database's clock.
fn status(state: &str, expires_at: i64, now: i64) -> &'static str {
    crate::approval::status(state, now >= expires_at)
}

/// A stored JSON column, or an error naming it (never its content).
fn decode<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> Result<T, String> {
    // serde_json's message may quote a value: only where it failed.
    serde_json::from_str(text).map_err(|e| {
        format!("approval store (PostgreSQL): unreadable `{column}` (line {}, column {})", e.line(), e.column())
    })
}

/// Approvals in PostgreSQL.
pub(crate) struct PgApprovals {
    store: Arc<PgStore>,
    ttl: Duration,
    interval: Duration,
}

impl PgApprovals {
    pub(crate) fn new(store: Arc<PgStore>, ttl: Duration, interval: Duration) -> Self {
        Self { store, ttl, interval }
    }
}

/// The row a poll reads.
struct Polled {
    id: String,
    request: String,
    state: String,
    approver: Option<String>,
    reason: Option<String>,
    expires_at: i64,
    interval: i64,
    last_poll: i64,
    now: i64,
}

impl ApprovalStore for PgApprovals {
    fn pending(&self, _now: Instant) -> Result<usize, String> {
        let count: i64 = self.store.call(APPROVALS, async |client| {
            let select = client
                .prepare_cached(concat!(
                    "SELECT count(*) FROM mayfly_approvals WHERE state = 'pending' AND expires_at > ",
                    now_ms!()
                ))
                .await?;
            Ok(client.query_one(&select, &[]).await?.get(0))
        })?;
        Ok(usize::try_from(count).unwrap_or(0))
    }

    fn create(&self, request: Request, _now: Instant) -> Result<Created, String> {
        let id = hex::encode(crate::approval::random::<16>());
        let code = hex::encode(crate::approval::random::<32>());
        let digest: [u8; 32] = Sha256::digest(code.as_bytes()).into();
        let json = serde_json::to_string(&request).map_err(|e| format!("approval store: {e}"))?;
        let (ttl, interval, kept) = (millis(self.ttl), millis(self.interval), millis(KEPT_AFTER_EXPIRY));
        let counts = self.store.call(APPROVALS, async |client| {
            let txn = client.transaction().await?;
            txn.execute("SELECT pg_advisory_xact_lock($1)", &[&CREATE_LOCK]).await?;
            let purge = txn
                .prepare_cached(concat!("DELETE FROM mayfly_approvals WHERE expires_at + $1 <= ", now_ms!()))
                .await?;
            txn.execute(&purge, &[&kept]).await?;
            let count = txn
                .prepare_cached(concat!(
                    "SELECT count(*) FILTER (WHERE state = 'pending' AND expires_at > ",
                    now_ms!(),
                    "), count(*) FROM mayfly_approvals"
                ))
                .await?;
            let row = txn.query_one(&count, &[]).await?;
            let (pending, kept): (i64, i64) = (row.get(0), row.get(1));
            if pending >= MAX_PENDING as i64 || kept >= MAX_KEPT as i64 {
                return Ok(Some(pending));
            }
            let insert = txn
                .prepare_cached(concat!(
                    "INSERT INTO mayfly_approvals (id, code_sha256, request, state, expires_at, interval_ms, last_poll) ",
                    "VALUES ($1, $2, $3, 'pending', ",
                    now_ms!(),
                    " + $4, $5, ",
                    now_ms!(),
                    ")"
                ))
                .await?;
            txn.execute(&insert, &[&id, &digest.as_slice(), &json, &ttl, &interval]).await?;
            txn.commit().await?;
            Ok(None)
        })?;
        if let Some(pending) = counts {
            return Err(format!("{pending} approvals are waiting already; try again once some are decided"));
        }
        Ok(Created { id, code, interval: self.interval, expires_in: self.ttl })
    }

    fn poll(&self, code: &str, binding: &Binding, _now: Instant) -> Poll {
        let digest: [u8; 32] = Sha256::digest(code.as_bytes()).into();
        let kept = millis(KEPT_AFTER_EXPIRY);
        let step = millis(SLOW_DOWN_STEP);
        let result = self.store.call(APPROVALS, async |client| {
            let txn = client.transaction().await?;
            let select = txn
                .prepare_cached(concat!(
                    "SELECT id, request, state, approver, reason, expires_at, interval_ms, last_poll, ",
                    now_ms!(),
                    " FROM mayfly_approvals WHERE code_sha256 = $1 AND expires_at + $2 > ",
                    now_ms!(),
                    " FOR UPDATE"
                ))
                .await?;
            let Some(row) = txn.query_opt(&select, &[&digest.as_slice(), &kept]).await? else {
                return Ok(None);
            };
            let polled = Polled {
                id: row.get(0),
                request: row.get(1),
                state: row.get(2),
                approver: row.get(3),
                reason: row.get(4),
                expires_at: row.get(5),
                interval: row.get(6),
                last_poll: row.get(7),
                now: row.get(8),
            };
            // Only a pending approval counts polls; the binding is checked before any
            // answer is given, so a poll for another request changes nothing visible.
            if status(&polled.state, polled.expires_at, polled.now) == "pending" {
                let interval = if polled.now - polled.last_poll < polled.interval {
                    polled.interval + step
                } else {
                    polled.interval
                };
                let update = txn
                    .prepare_cached("UPDATE mayfly_approvals SET last_poll = $2, interval_ms = $3 WHERE id = $1")
                    .await?;
                // A poll of another request leaves the approval as it was (rolled back).
                let request: Option<Request> = serde_json::from_str(&polled.request).ok();
                if request.is_some_and(|r| r.binding == *binding) {
                    txn.execute(&update, &[&polled.id, &polled.now, &interval]).await?;
                    txn.commit().await?;
                }
            }
            Ok(Some(polled))
        });
        let polled = match result {
            Ok(Some(polled)) => polled,
            Ok(None) => return Poll::Unknown,
            Err(e) => return Poll::Unavailable(e),
        };
        match answer(polled, binding, step) {
            Ok(poll) => poll,
            Err(e) => Poll::Unavailable(e),
        }
    }

    fn spend(&self, id: &str, _now: Instant) -> Result<bool, String> {
        self.store.call(APPROVALS, async |client| {
            let update = client
                .prepare_cached(concat!(
                    "UPDATE mayfly_approvals SET state = 'used' WHERE id = $1 AND state = 'approved' AND expires_at > ",
                    now_ms!(),
                    " RETURNING id"
                ))
                .await?;
            Ok(client.query_opt(&update, &[&id]).await?.is_some())
        })
    }

    fn view(&self, id: &str, _now: Instant) -> Result<Option<View>, String> {
        let kept = millis(KEPT_AFTER_EXPIRY);
        let row = self.store.call(APPROVALS, async |client| {
            let select = client
                .prepare_cached(concat!(
                    "SELECT request, state, expires_at, ",
                    now_ms!(),
                    " FROM mayfly_approvals WHERE id = $1 AND expires_at + $2 > ",
                    now_ms!()
                ))
                .await?;
            Ok(client.query_opt(&select, &[&id, &kept]).await?.map(|row| {
                let (request, state, expires_at, now): (String, String, i64, i64) =
                    (row.get(0), row.get(1), row.get(2), row.get(3));
                (request, state, expires_at, now)
            }))
        })?;
        let Some((request, state, expires_at, now)) = row else { return Ok(None) };
        Ok(Some(View {
            status: status(&state, expires_at, now),
            request: decode("request", &request)?,
            expires_in: duration(expires_at - now),
        }))
    }

    fn decide(
        &self,
        id: &str,
        approver: Approver,
        approve: bool,
        reason: Option<String>,
        _now: Instant,
    ) -> Result<(), DecideError> {
        let approver = serde_json::to_string(&approver).map_err(|e| DecideError::Unavailable(e.to_string()))?;
        let state = if approve { "approved" } else { "denied" };
        let reason = if approve { None } else { reason };
        let kept = millis(KEPT_AFTER_EXPIRY);
        let outcome = self.store.call(APPROVALS, async |client| {
            let update = client
                .prepare_cached(concat!(
                    "UPDATE mayfly_approvals SET state = $2, approver = $3, reason = $4 ",
                    "WHERE id = $1 AND state = 'pending' AND expires_at > ",
                    now_ms!(),
                    " RETURNING id"
                ))
                .await?;
            if client.query_opt(&update, &[&id, &state, &approver, &reason]).await?.is_some() {
                return Ok(None);
            }
            let select = client
                .prepare_cached(concat!(
                    "SELECT state, expires_at, ",
                    now_ms!(),
                    " FROM mayfly_approvals WHERE id = $1 AND expires_at + $2 > ",
                    now_ms!()
                ))
                .await?;
            Ok(Some(client.query_opt(&select, &[&id, &kept]).await?.map(|row| {
                let (state, expires_at, now): (String, i64, i64) = (row.get(0), row.get(1), row.get(2));
                status(&state, expires_at, now)
            })))
        });
        match outcome {
            Ok(None) => Ok(()),
            Ok(Some(None)) => Err(DecideError::Unknown),
            Ok(Some(Some("expired"))) => Err(DecideError::Expired),
            Ok(Some(Some(status))) => Err(DecideError::AlreadyDecided(status)),
            Err(e) => Err(DecideError::Unavailable(e)),
        }
    }
}

/// What a poll answers, from the row it read (before its own update).
fn answer(polled: Polled, binding: &Binding, step: i64) -> Result<Poll, String> {
    let request: Request = decode("request", &polled.request)?;
    if request.binding != *binding {
        return Ok(Poll::OtherRequest);
    }
    let by = |approver: Option<&String>| -> Result<Option<Approver>, String> {
        approver.map(|a| decode::<Approver>("approver", a)).transpose()
    };
    Ok(match status(&polled.state, polled.expires_at, polled.now) {
        "used" => Poll::Used,
        "expired" => Poll::Expired,
        "denied" => Poll::Denied {
            by: by(polled.approver.as_ref())?.map(|a| a.name).unwrap_or_default(),
            reason: polled.reason,
        },
        "approved" => Poll::Approved {
            id: polled.id,
            approver: by(polled.approver.as_ref())?
                .ok_or_else(|| "approval store (PostgreSQL): an approved approval names no approver".to_owned())?,
            group: request.group,
            policies: request.policies,
        },
        _ if polled.now - polled.last_poll < polled.interval => {
            Poll::SlowDown { id: polled.id, interval: duration(polled.interval + step) }
        }
        _ => Poll::Pending {
            id: polled.id,
            interval: duration(polled.interval),
            expires_in: duration(polled.expires_at - polled.now),
        },
    })
}

/// Sessions' last uses and expiries in PostgreSQL.
pub(crate) struct PgSessions {
    store: Arc<PgStore>,
    idle: Option<Duration>,
    last_prune: AtomicI64,
}

impl PgSessions {
    pub(crate) fn new(store: Arc<PgStore>, idle: Option<Duration>) -> Self {
        Self { store, idle, last_prune: AtomicI64::new(0) }
    }
}

impl SessionStore for PgSessions {
    fn opened(&self, sid: &str, expires_at: i64, _now: Instant, unix_now: i64) -> Result<(), String> {
        let prune = unix_now - self.last_prune.load(Ordering::Relaxed) >= PRUNE_EVERY_SECS;
        self.store.call(SESSIONS, async |client| {
            let insert = client
                .prepare_cached(concat!(
                    "INSERT INTO mayfly_sessions (sid, last_use, expires_at) VALUES ($1, ",
                    now_ms!(),
                    ", $2) ON CONFLICT (sid) DO UPDATE SET last_use = EXCLUDED.last_use, expires_at = EXCLUDED.expires_at"
                ))
                .await?;
            client.execute(&insert, &[&sid, &expires_at]).await?;
            if prune {
                let purge = client.prepare_cached("DELETE FROM mayfly_sessions WHERE expires_at <= $1").await?;
                client.execute(&purge, &[&unix_now]).await?;
            }
            Ok(())
        })?;
        if prune {
            self.last_prune.store(unix_now, Ordering::Relaxed);
        }
        Ok(())
    }

    fn used(&self, sid: &str, expires_at: i64, _now: Instant, _unix_now: i64) -> Result<Result<(), Duration>, String> {
        let idle = self.idle.map_or(i64::MAX, millis);
        // One statement: a use within the idle time moves `last_use` to now; a late one
        // leaves it, so every replica sees the session idle from then on.
        let (last_use, now): (i64, i64) = self.store.call(SESSIONS, async |client| {
            let upsert = client
                .prepare_cached(concat!(
                    "INSERT INTO mayfly_sessions AS s (sid, last_use, expires_at) VALUES ($1, ",
                    now_ms!(),
                    ", $2) ON CONFLICT (sid) DO UPDATE SET last_use = CASE ",
                    "WHEN EXCLUDED.last_use - s.last_use > $3 THEN s.last_use ELSE EXCLUDED.last_use END ",
                    "RETURNING s.last_use, ",
                    now_ms!()
                ))
                .await?;
            let row = client.query_one(&upsert, &[&sid, &expires_at, &idle]).await?;
            Ok((row.get(0), row.get(1)))
        })?;
        match self.idle {
            Some(allowed) if now - last_use > idle => Ok(Err(allowed)),
            _ => Ok(Ok(())),
        }
    }

    fn expires_at(&self, sid: &str) -> Result<Option<i64>, String> {
        self.store.call(SESSIONS, async |client| {
            let select = client.prepare_cached("SELECT expires_at FROM mayfly_sessions WHERE sid = $1").await?;
            Ok(client.query_opt(&select, &[&sid]).await?.map(|row| row.get(0)))
        })
    }

    fn forget(&self, sid: &str) -> Result<(), String> {
        self.store.call(SESSIONS, async |client| {
            let delete = client.prepare_cached("DELETE FROM mayfly_sessions WHERE sid = $1").await?;
            client.execute(&delete, &[&sid]).await.map(drop)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_as_in_memory_records_do() {
        assert_eq!(status("pending", 1_000, 999), "pending");
        assert_eq!(status("pending", 1_000, 1_000), "expired", "expiry is exclusive");
        assert_eq!(status("approved", 1_000, 10), "approved");
        assert_eq!(status("approved", 1_000, 2_000), "expired", "approved but not collected in time");
        assert_eq!(status("denied", 1_000, 10), "denied");
        assert_eq!(status("used", 1_000, 2_000), "used", "used stays used");
    }

    #[test]
    fn durations_round_trip_through_milliseconds() {
        assert_eq!(millis(Duration::from_secs(600)), 600_000);
        assert_eq!(duration(millis(Duration::from_millis(1_500))), Duration::from_millis(1_500));
        assert_eq!(duration(-5), Duration::ZERO, "a time past is no time left");
    }

    #[test]
    fn an_unreadable_column_is_named_but_not_quoted() {
        let error = decode::<Request>("request", "{\"binding\": \"secret\"}").unwrap_err();
        assert!(error.starts_with("approval store (PostgreSQL): unreadable `request`"), "{error}");
        assert!(!error.contains("secret"), "{error}");
    }
}
