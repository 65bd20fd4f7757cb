//! Sessions this process has seen: when each expires (so an administrator's revocation
//! lasts exactly as long as the session would have) and when it was last used (so a
//! session left idle ends on its next use).
//!
//! The store is a trait: [`Sessions`] keeps them in this process, which knows only the
//! uses it served; with a PostgreSQL revocation store they live in that database
//! ([`crate::pg_shared`]), so a session's idle time is the same at every replica.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Expired sessions are dropped at most this often.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Tracked {
    last_use: Instant,
    expires_at: i64,
}

#[derive(Debug)]
struct State {
    sessions: HashMap<String, Tracked>,
    last_prune: Instant,
}

/// Where sessions' last uses and expiries are kept. `now` and `unix_now` are this
/// process's clock, which [`Sessions`] goes by; a store shared by replicas goes by its
/// database's clock instead. The outer `Err` is the store failing (one line).
pub(crate) trait SessionStore: Send + Sync {
    /// A session was opened: opening is its first use.
    fn opened(&self, sid: &str, expires_at: i64, now: Instant, unix_now: i64) -> Result<(), String>;
    /// A session is used: records the use, or, when it was unused longer than allowed,
    /// answers how long it may idle (the caller ends it, then forgets it). A session not
    /// seen before starts now.
    fn used(&self, sid: &str, expires_at: i64, now: Instant, unix_now: i64) -> Result<Result<(), Duration>, String>;
    /// When a known session expires (Unix seconds).
    fn expires_at(&self, sid: &str) -> Result<Option<i64>, String>;
    /// Forgets a session (it was revoked).
    fn forget(&self, sid: &str) -> Result<(), String>;
}

impl SessionStore for Sessions {
    fn opened(&self, sid: &str, expires_at: i64, now: Instant, unix_now: i64) -> Result<(), String> {
        Self::opened(self, sid, expires_at, now, unix_now);
        Ok(())
    }

    fn used(&self, sid: &str, expires_at: i64, now: Instant, unix_now: i64) -> Result<Result<(), Duration>, String> {
        Ok(Self::used(self, sid, expires_at, now, unix_now))
    }

    fn expires_at(&self, sid: &str) -> Result<Option<i64>, String> {
        Ok(Self::expires_at(self, sid))
    }

    fn forget(&self, sid: &str) -> Result<(), String> {
        Self::forget(self, sid);
        Ok(())
    }
}

/// The sessions' last uses and expiries, by `sid`, in this process.
#[derive(Debug)]
pub(crate) struct Sessions {
    idle: Option<Duration>,
    state: Mutex<State>,
}

impl Sessions {
    /// Sessions that end after `idle` unused (never with `None`).
    pub(crate) fn new(idle: Option<Duration>) -> Self {
        Self { idle, state: Mutex::new(State { sessions: HashMap::new(), last_prune: Instant::now() }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A session was opened: opening is its first use.
    pub(crate) fn opened(&self, sid: &str, expires_at: i64, now: Instant, unix_now: i64) {
        let mut state = self.lock();
        prune(&mut state, now, unix_now);
        state.sessions.insert(sid.to_owned(), Tracked { last_use: now, expires_at });
    }

    /// A session is used: records the use, or, when it was unused longer than allowed,
    /// answers how long it may idle (the caller ends it, then forgets it). A session this
    /// process has not seen (opened before a restart, or by another replica) starts now.
    pub(crate) fn used(&self, sid: &str, expires_at: i64, now: Instant, unix_now: i64) -> Result<(), Duration> {
        let mut state = self.lock();
        prune(&mut state, now, unix_now);
        let tracked = state.sessions.entry(sid.to_owned()).or_insert(Tracked { last_use: now, expires_at });
        if let Some(idle) = self.idle
            && now.saturating_duration_since(tracked.last_use) > idle
        {
            return Err(idle);
        }
        tracked.last_use = now;
        Ok(())
    }

    /// When a session seen here expires (Unix seconds).
    pub(crate) fn expires_at(&self, sid: &str) -> Option<i64> {
        self.lock().sessions.get(sid).map(|t| t.expires_at)
    }

    /// Forgets a session (it was revoked).
    pub(crate) fn forget(&self, sid: &str) {
        self.lock().sessions.remove(sid);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().sessions.len()
    }
}

fn prune(state: &mut State, now: Instant, unix_now: i64) {
    if now.saturating_duration_since(state.last_prune) >= PRUNE_EVERY {
        state.sessions.retain(|_, t| t.expires_at > unix_now);
        state.last_prune = now;
    }
}

/// A duration as a config would write it: `1h`, `30m`, `90s`.
pub(crate) fn display(duration: Duration) -> String {
    match duration.as_secs() {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn a_session_used_within_its_idle_time_lives_and_one_left_idle_ends() {
        let sessions = Sessions::new(Some(10 * SEC));
        let start = Instant::now();
        sessions.opened("a", 1000, start, 0);
        assert_eq!(sessions.used("a", 1000, start + 9 * SEC, 9), Ok(()));
        assert_eq!(sessions.used("a", 1000, start + 18 * SEC, 18), Ok(()), "each use starts the idle time again");
        assert_eq!(sessions.used("a", 1000, start + 28 * SEC, 28), Ok(()), "exactly the idle time is allowed");
        assert_eq!(sessions.used("a", 1000, start + 39 * SEC, 39), Err(10 * SEC));
        assert_eq!(sessions.used("a", 1000, start + 40 * SEC, 40), Err(10 * SEC), "until it is ended, it stays idle");
    }

    #[test]
    fn opening_counts_as_a_use_and_an_unknown_session_starts_at_its_first_use() {
        let sessions = Sessions::new(Some(10 * SEC));
        let start = Instant::now();
        sessions.opened("a", 1000, start, 0);
        assert_eq!(sessions.used("a", 1000, start + 11 * SEC, 11), Err(10 * SEC), "never used since it was opened");
        assert_eq!(sessions.used("b", 500, start + 100 * SEC, 100), Ok(()));
        assert_eq!(sessions.expires_at("b"), Some(500));
        assert_eq!(sessions.used("b", 500, start + 105 * SEC, 105), Ok(()));
    }

    #[test]
    fn without_an_idle_time_sessions_never_idle_out_but_their_expiry_is_known() {
        let sessions = Sessions::new(None);
        let start = Instant::now();
        sessions.opened("a", 1000, start, 0);
        assert_eq!(sessions.used("a", 1000, start + 100_000 * SEC, 100), Ok(()));
        assert_eq!(sessions.expires_at("a"), Some(1000));
        sessions.forget("a");
        assert_eq!(sessions.expires_at("a"), None);
    }

    #[test]
    fn expired_sessions_are_pruned() {
        let sessions = Sessions::new(Some(3600 * SEC));
        let start = Instant::now();
        sessions.opened("old", 50, start, 0);
        sessions.opened("live", 5000, start, 0);
        sessions.opened("new", 5000, start + 61 * SEC, 100);
        assert_eq!(sessions.len(), 2);
        assert_eq!(sessions.expires_at("old"), None);
    }

    #[test]
    fn durations_read_as_written() {
        assert_eq!(display(3600 * SEC), "1h");
        assert_eq!(display(1800 * SEC), "30m");
        assert_eq!(display(90 * SEC), "90s");
        assert_eq!(display(SEC), "1s");
    }
}
