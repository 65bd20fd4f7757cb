//! The protocol-agnostic centre: a target in, a token (or a reason) out.
//!
//! Every helper calls the same steps: resolve the route, serve from the cache if a
//! fresh entry exists, else take the key's lock, fetch the subject token, exchange it,
//! cache the result, and write one audit line for the decision.

use std::time::Duration;

use crate::audit::{AuditEvent, AuditLog, Outcome, ProcessRef, rfc3339};
use crate::cache::{Cache, CacheEntry, Lookup, Origin};
use crate::config::{Config, ExchangeConfig, IdentityConfig, Route, Scheme};
use crate::exchange::{Ask, Intent};
use crate::http::HttpClient;
use crate::identity::{self, SubjectToken};
use crate::{Env, EnvVars, Fingerprint, Operation, Process, Scope, Secret, Target};

/// How long a subject token fetch may take, end to end.
const IDENTITY_TIMEOUT: Duration = Duration::from_secs(15);

/// Revocations in flight at once when a session ends.
const REVOKING_AT_ONCE: usize = 8;

/// Why no token was handed out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The route does not allow this operation.
    #[error("route `{route}` does not allow {operation} (allowed: {allowed})")]
    OperationNotAllowed {
        /// Route name.
        route: String,
        /// What was asked.
        operation: Operation,
        /// What the route allows.
        allowed: String,
    },
    /// No subject token.
    #[error("route `{route}`: {source}")]
    Identity {
        /// Route name.
        route: String,
        /// The cause.
        #[source]
        source: identity::Error,
    },
    /// The exchange refused or failed.
    #[error("route `{route}`: {source}")]
    Exchange {
        /// Route name.
        route: String,
        /// The cause.
        #[source]
        source: crate::exchange::Error,
    },
    /// The exchange would not open this delegated session.
    #[error("route `{route}`: no session for agent `{agent}`: {source}")]
    Session {
        /// Route name.
        route: String,
        /// The agent the session declares.
        agent: String,
        /// The cause.
        #[source]
        source: Box<crate::exchange::Error>,
    },
    /// A value from the tool cannot go into the route's scope.
    #[error("route `{route}`: {source}")]
    Scope {
        /// Route name.
        route: String,
        /// The cause.
        #[source]
        source: crate::scope::Error,
    },
    /// The HTTP client could not be built.
    #[error("route `{route}`: {source}")]
    Http {
        /// Route name.
        route: String,
        /// The cause.
        #[source]
        source: crate::http::Error,
    },
}

/// What ending a session did.
#[derive(Debug, Default)]
pub struct Ended {
    /// Tokens revoked at their issuer.
    pub revoked: usize,
    /// Tokens only dropped from the cache: their issuer cannot revoke (AWS, npm, PyPI,
    /// an exchange without `revocation_endpoint`); they live until they expire.
    pub dropped: usize,
    /// Revocations that failed, one line each.
    pub failures: Vec<String>,
    /// The cache was off (no memory-backed key store): tokens were handed out uncached,
    /// so none could be found to revoke.
    pub cache_off: bool,
}

/// What a target resolves to.
#[derive(Debug)]
pub enum Resolution<'a> {
    /// No route: the tool's own "not found", with no network and no cache access.
    NoRoute,
    /// A route serves the host but binds tokens to repository paths, and the request
    /// carried none (git without `credential.useHttpPath`).
    NeedsPath,
    /// The route to use.
    Route(&'a Route),
}

/// A token ready to hand to the tool.
#[derive(Debug)]
pub struct Issued {
    /// The token.
    pub token: Secret,
    /// Expiry, unix seconds, when known.
    pub expires_at: Option<i64>,
    /// Token id, when the token has one.
    pub token_id: Option<String>,
    /// How to present it.
    pub scheme: Scheme,
    /// Username for Basic.
    pub username: String,
    /// True when served from the cache.
    pub from_cache: bool,
}

/// The broker: config, environment and audit log of one helper invocation.
pub struct Broker {
    env: Env,
    config: Config,
    audit: AuditLog,
    /// The subject token the request carries, in place of the routes' identities.
    given_subject: Option<SubjectToken>,
}

/// The route name session tokens are filed under: no config route has it, so erasing a
/// route's tokens leaves the session's own token alone.
const SESSION_ROUTE: &str = "(session)";

/// This machine's name, for a delegated session's token.
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

impl Broker {
    /// A broker over an environment and its config.
    pub fn new(env: Env, config: Config) -> Self {
        let audit = AuditLog::from_env(&env).with_rotation(config.audit_max_size, config.audit_keep);
        Self { env, config, audit, given_subject: None }
    }

    /// This broker with the subject token the request itself carries (a kubelet's
    /// service account token for the pod) in place of the routes' identities: the
    /// exchange sees, and decides on, that subject. Refused when the token is empty,
    /// malformed or expired.
    ///
    /// Its tokens are cached under a hash of the whole subject token, never under its
    /// claims: the claims are unverified here, so a key made of `iss` and `sub` would hand
    /// a cached token to anyone presenting a forged token naming that subject, without the
    /// exchange seeing it. With the hash, a cache hit takes the very token the exchange
    /// verified, and two subjects never share an entry.
    pub fn with_subject(mut self, token: &str) -> Result<Self, identity::Error> {
        self.given_subject = Some(SubjectToken::new("the request's subject token", token.to_owned(), now())?);
        Ok(self)
    }

    /// The cache key part that ties an entry to the request's own subject token, if any.
    fn given_subject_key(&self) -> Option<String> {
        use sha2::Digest;
        let given = self.given_subject.as_ref()?;
        Some(format!("given-subject:{}", hex::encode(sha2::Sha256::digest(given.token.expose()))))
    }

    /// Loads the config named by the environment.
    pub fn from_env(env: Env) -> Result<Self, crate::ConfigError> {
        let config = Config::load(&env)?;
        Ok(Self::new(env, config))
    }

    /// The config in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Which route serves a target.
    pub fn resolve(&self, target: &Target) -> Resolution<'_> {
        match self.config.route_for(target) {
            Some(route) if route.needs_path() && target.path.is_none() => Resolution::NeedsPath,
            Some(route) => Resolution::Route(route),
            None if target.path.is_none() && self.config.serves_host(target.tool, &target.protocol, &target.host) => {
                Resolution::NeedsPath
            }
            None => Resolution::NoRoute,
        }
    }

    fn session(&self) -> Option<String> {
        self.env.get(EnvVars::MAYFLY_SESSION).map(str::to_owned)
    }

    fn cache_key(&self, route: &Route, target: &Target, operation: Operation, scope: &Scope) -> String {
        let session = self.session().unwrap_or_default();
        let given = self.given_subject_key();
        let display = target.display();
        let mut parts = vec![
            target.tool.as_str(),
            &route.name,
            &route.identity,
            &route.exchange,
            &route.audience,
            scope.as_str(),
            &display,
            operation.as_str(),
            &session,
        ];
        parts.extend(given.as_deref());
        Cache::key(&parts)
    }

    /// A token for a target under its route: from the cache, else freshly exchanged.
    pub fn token(
        &self,
        route: &Route,
        target: &Target,
        operation: Operation,
        chain: &[Process],
    ) -> Result<Issued, Error> {
        let now = now();
        let mut event = self.event(route, target, operation, chain, None);
        if let Some(given) = &self.given_subject {
            // Named on every line, a refusal's included.
            event.issuer.clone_from(&given.claims.iss);
            event.subject.clone_from(&given.claims.sub);
        }
        if !route.operations.contains(&operation) {
            let allowed = route.operations.iter().map(|o| o.as_str()).collect::<Vec<_>>().join(", ");
            let error = Error::OperationNotAllowed { route: route.name.clone(), operation, allowed };
            self.write(event.fail(Outcome::Denied, &error));
            return Err(error);
        }
        // The one scope of this request: the cache key, the exchange and the audit line
        // all take it from here.
        let scope = match route.scope_for(target, operation) {
            Ok(scope) => scope,
            Err(source) => {
                let error = Error::Scope { route: route.name.clone(), source };
                self.write(event.fail(Outcome::Denied, &error));
                return Err(error);
            }
        };
        event.scope = Some(scope.to_string());
        // The cache is off (not on disk) where no memory-backed key store exists; a key
        // directory that exists but is unsafe is said, once per request, not worked around.
        let cache = match Cache::open(&self.env) {
            Ok(cache) => Some(cache),
            Err(error @ crate::CacheError::Unsafe { .. }) => {
                crate::protocol::warn(&format!("{}; tokens are not cached", crate::protocol::one_line(&error)));
                None
            }
            Err(_) => None,
        };
        let key = self.cache_key(route, target, operation, &scope);
        let session = self.session();
        let session = session.as_deref();
        let mut stale = match cache.as_ref().map(|c| c.lookup(&key, session, now)) {
            Some(Lookup::Servable(hit)) => {
                return self.serve_cached(route, &mut event, *hit, cache.as_ref(), &key, chain, now);
            }
            Some(Lookup::Stale(found)) => Some(found),
            Some(Lookup::Miss) | None => None,
        };
        let _lock = cache.as_ref().and_then(|c| c.lock(&key).ok());
        if let Some(cache) = &cache
            && !stale.as_ref().is_some_and(|s| cache.still_holds(s))
        {
            // Another process refreshed (or removed) it while we waited for the lock; a
            // stale entry whose file is unchanged is not decrypted again.
            stale = match cache.lookup(&key, session, now) {
                Lookup::Servable(hit) => {
                    return self.serve_cached(route, &mut event, *hit, Some(cache), &key, chain, now);
                }
                Lookup::Stale(found) => Some(found),
                Lookup::Miss => None,
            };
        }
        if stale.is_some() {
            // A refresh: the copy that will revoke the replaced token starts during the
            // exchange, so handing it over after the answer is a write, not a process start.
            crate::deferred::start_early();
        }
        match self.mint(route, target, operation, &scope, chain, cache.as_ref(), now) {
            Ok(entry) => {
                if let (Some(cache), Some(lock)) = (&cache, &_lock)
                    && entry.expires_at > now
                {
                    // The token this one replaces may still be valid: end it rather than
                    // let it live on unrecorded, after the tool has its answer.
                    if let Some(old) = stale.and_then(|s| cache.take(s))
                        && !crate::deferred::hand_over(&old, entry.origin.as_ref(), chain)
                    {
                        self.end_sealed(Some(cache), &old, entry.origin.as_ref(), chain);
                    }
                    let _ = cache.put(&key, &entry, lock);
                }
                self.write(event.served(Outcome::Issued, &entry));
                Ok(issued(route, entry, false))
            }
            Err(error) => {
                let outcome = match &error {
                    Error::Exchange { source: crate::exchange::Error::Denied { .. }, .. } => Outcome::Denied,
                    Error::Session { source, .. } if matches!(**source, crate::exchange::Error::Denied { .. }) => {
                        Outcome::Denied
                    }
                    _ => Outcome::Failed,
                };
                self.write(event.fail(outcome, &error));
                Err(error)
            }
        }
    }

    /// A cached token, served while the identity that minted it still vouches for it: a
    /// login that ended takes its tokens with it (dropped and revoked where possible).
    #[allow(clippy::too_many_arguments)]
    fn serve_cached(
        &self,
        route: &Route,
        event: &mut AuditEvent,
        hit: CacheEntry,
        cache: Option<&Cache>,
        key: &str,
        chain: &[Process],
        now: i64,
    ) -> Result<Issued, Error> {
        let identity = &self.config.identities[&route.identity];
        if let Err(source) = identity.vouches_for_cached(&self.env, now) {
            if let Some(old) = cache.and_then(|c| c.remove(key, hit.session.as_deref())) {
                let _ = self.end_entry(old, chain);
            }
            let error = Error::Identity { route: route.name.clone(), source };
            self.write(event.fail(Outcome::Failed, &error));
            return Err(error);
        }
        event.served(Outcome::CacheHit, &hit);
        event.refer_to_issued(&hit.issuing_chain);
        self.write(event);
        Ok(issued(route, hit, true))
    }

    #[allow(clippy::too_many_arguments)]
    fn mint(
        &self,
        route: &Route,
        target: &Target,
        operation: Operation,
        scope: &Scope,
        chain: &[Process],
        cache: Option<&Cache>,
        now: i64,
    ) -> Result<CacheEntry, Error> {
        let identity_config = &self.config.identities[&route.identity];
        let exchange_config = &self.config.exchanges[&route.exchange];
        let http = HttpClient::new(exchange_config.timeout, exchange_config.ca_file.as_deref())
            .map_err(|source| Error::Http { route: route.name.clone(), source })?;
        let exchange_error = |source| Error::Exchange { route: route.name.clone(), source };
        let exchange = exchange_config.kind.protocol();
        let subject = if let Some(given) = &self.given_subject {
            Ok(given.clone())
        } else if exchange.fetches_subject_per_request() {
            // The exchange checks the ID token's audience itself (a registry takes each
            // one once).
            let audience = exchange.subject_audience(exchange_config, &http, route).map_err(exchange_error)?;
            let http = || HttpClient::new(IDENTITY_TIMEOUT, None);
            identity::fetch(identity_config, Some(&audience), &self.env, &http, now)
        } else {
            self.subject(identity_config, cache, now)
        }
        .map_err(|source| Error::Identity { route: route.name.clone(), source })?;
        let intent = Intent {
            tool: target.tool.as_str().into(),
            operation: operation.as_str().into(),
            target: target.display(),
            session: self.session(),
            command: crate::ancestry::command_of(target.tool.as_str(), chain),
            agent: self.agent(),
            host: self.agent().and_then(|_| host_name()),
        };
        let actor = match self.agent() {
            Some(_) => self.session_token(route, exchange_config, &http, &subject.token, &intent, cache, now)?,
            None => None,
        };
        let ask = Ask {
            config: exchange_config,
            http: &http,
            route,
            target,
            subject: &subject.token,
            scope,
            intent: &intent,
            actor: actor.as_ref(),
        };
        let response = exchange.request(&ask).map_err(exchange_error)?;
        // Unknown lifetime: handed out once, never cached.
        let lifetime = response.expires_in.map(|s| i64::try_from(s).unwrap_or(i64::MAX / 4));
        let claims = crate::peek_claims(response.access_token.expose()).unwrap_or_default();
        Ok(CacheEntry {
            expires_at: lifetime.map_or(0, |l| now + l),
            refresh_at: lifetime.map_or(0, |l| now + l - self.margin(l, target.tool.min_refresh_margin())),
            token_id: response.token_id.or(claims.jti),
            scope: response.scope.or_else(|| Some(scope.to_string())),
            issuer: subject.claims.iss.clone(),
            subject: subject.claims.sub.clone(),
            label: format!("{} {} {}", target.tool.as_str(), target.display(), operation.as_str()),
            session: self.session(),
            origin: Some(Origin {
                route: route.name.clone(),
                exchange: route.exchange.clone(),
                target: target.display(),
                tool: target.tool.as_str().into(),
                operation: operation.as_str().into(),
            }),
            issuing_chain: chain.iter().map(Process::digest).collect(),
            token: response.access_token,
        })
    }

    /// The token of this delegated session at this exchange (opened on first use, cached
    /// in the session and revoked at its end, which ends every token minted through it);
    /// `None` for an exchange that takes no actor tokens, whose tokens then name no agent.
    #[allow(clippy::too_many_arguments)]
    fn session_token(
        &self,
        route: &Route,
        exchange: &ExchangeConfig,
        http: &HttpClient,
        subject: &Secret,
        intent: &Intent,
        cache: Option<&Cache>,
        now: i64,
    ) -> Result<Option<Secret>, Error> {
        let session = self.session().unwrap_or_default();
        let agent = intent.agent.clone().unwrap_or_default();
        let given = self.given_subject_key();
        let mut parts = vec!["session-token", &route.exchange, &route.identity, &session, &agent];
        parts.extend(given.as_deref());
        let key = Cache::key(&parts);
        let lock = cache.and_then(|c| c.lock(&key).ok());
        if let Some(entry) = cache.and_then(|c| c.get(&key, self.session().as_deref(), now)) {
            return Ok(Some(entry.token));
        }
        let Some(opened) = exchange.kind.protocol().open_session(exchange, http, subject, intent) else {
            return Ok(None);
        };
        let response =
            opened.map_err(|source| Error::Session { route: route.name.clone(), agent, source: Box::new(source) })?;
        let lifetime = response.expires_in.map(|s| i64::try_from(s).unwrap_or(i64::MAX / 4));
        let claims = crate::peek_claims(response.access_token.expose()).unwrap_or_default();
        let entry = CacheEntry {
            expires_at: lifetime.map_or(0, |l| now + l),
            refresh_at: lifetime.map_or(0, |l| now + l - self.margin(l, 0)),
            token_id: claims.jti,
            scope: response.scope,
            issuer: claims.iss,
            subject: claims.sub,
            label: format!("session token of agent `{}`", intent.agent.as_deref().unwrap_or_default()),
            session: self.session(),
            origin: Some(Origin {
                route: SESSION_ROUTE.into(),
                exchange: route.exchange.clone(),
                target: exchange.token_endpoint.to_string(),
                tool: "session".into(),
                operation: "session".into(),
            }),
            issuing_chain: Vec::new(),
            token: response.access_token,
        };
        if let (Some(cache), Some(lock)) = (cache, &lock)
            && entry.expires_at > now
        {
            let _ = cache.put(&key, &entry, lock);
        }
        Ok(Some(entry.token))
    }

    fn agent(&self) -> Option<String> {
        self.env.get(EnvVars::MAYFLY_AGENT).filter(|a| !a.is_empty()).map(str::to_owned)
    }

    /// The refresh margin for a token of this lifetime: the configured margin (or the
    /// tool's minimum, if larger), but never more than half the lifetime, so short tokens
    /// are still worth caching.
    fn margin(&self, lifetime: i64, tool_minimum: i64) -> i64 {
        i64::try_from(self.config.refresh_margin.as_secs()).unwrap_or(i64::MAX).max(tool_minimum).min(lifetime / 2)
    }

    /// The subject token, cached like any other short-lived token when it cost a round trip.
    fn subject(
        &self,
        source: &IdentityConfig,
        cache: Option<&Cache>,
        now: i64,
    ) -> Result<SubjectToken, identity::Error> {
        let http = || HttpClient::new(IDENTITY_TIMEOUT, None);
        let cache = cache.filter(|_| source.cacheable(&self.env));
        let Some(cache) = cache else {
            return identity::fetch(source, None, &self.env, &http, now);
        };
        let key = Cache::key(&[
            "subject",
            &source.name,
            source.audience.as_deref().unwrap_or(""),
            &source.cache_key(&self.env),
        ]);
        let lock = cache.lock(&key).ok();
        if let Some(entry) = cache.get(&key, None, now) {
            let claims = crate::peek_claims(entry.token.expose()).unwrap_or_default();
            return Ok(SubjectToken { token: entry.token, claims });
        }
        let subject = identity::fetch(source, None, &self.env, &http, now)?;
        if let (Some(exp), Some(lock)) = (subject.claims.exp, &lock) {
            let entry = CacheEntry {
                token: subject.token.clone(),
                expires_at: exp,
                refresh_at: exp - self.margin(exp - now, 0),
                token_id: subject.claims.jti.clone(),
                scope: None,
                issuer: subject.claims.iss.clone(),
                subject: subject.claims.sub.clone(),
                label: format!("subject token of identity `{}`", source.name),
                session: None,
                origin: None,
                issuing_chain: Vec::new(),
            };
            let _ = cache.put(&key, &entry, lock);
        }
        Ok(subject)
    }

    /// Drops this session's cached tokens for a target, every operation (a target without
    /// a path: every target of the route), and revokes them where the issuer can. git
    /// calls `erase` after the server refused a token, cargo `logout`, docker `erase`.
    pub fn erase(&self, route: &Route, target: &Target, chain: &[Process]) -> usize {
        let session = self.session();
        let wanted = |entry: &CacheEntry| {
            entry.session == session
                && entry
                    .origin
                    .as_ref()
                    .is_some_and(|o| o.route == route.name && (target.path.is_none() || o.target == target.display()))
        };
        let ended = self.drop_entries(&|cache| cache.session_entries(session.as_deref(), now()), &wanted, chain);
        for failure in &ended.failures {
            crate::protocol::warn(failure);
        }
        ended.revoked + ended.dropped
    }

    /// Drops this session's cached token for a target whose fingerprint is `refused`, and
    /// revokes it: what a proxy does when the upstream refused exactly that token. Checked
    /// again under the key's lock, so a newer token (another request's fresh one, or one
    /// for another operation) is never touched. True when one was dropped.
    pub fn erase_refused(&self, route: &Route, target: &Target, refused: &Fingerprint, chain: &[Process]) -> bool {
        let session = self.session();
        let wanted = |entry: &CacheEntry| {
            entry.session == session
                && entry.token.fingerprint() == *refused
                && entry.origin.as_ref().is_some_and(|o| o.route == route.name && o.target == target.display())
        };
        let ended = self.drop_entries(&|cache| cache.session_entries(session.as_deref(), now()), &wanted, chain);
        for failure in &ended.failures {
            crate::protocol::warn(failure);
        }
        ended.revoked + ended.dropped > 0
    }

    /// Ends a session: revokes and drops every token minted in it (its expired ones are
    /// only removed: nothing to revoke).
    pub fn end_session(&self, session: &str, chain: &[Process]) -> Ended {
        self.drop_entries(&|cache| cache.session_entries(Some(session), now()), &|_| true, chain)
    }

    /// Ends a login's tokens: revokes and drops every token minted through the identity's
    /// routes, which the login that just ended vouched for (in any session: every entry is
    /// read).
    pub fn end_identity(&self, identity: &str, chain: &[Process]) -> Ended {
        let routes: Vec<&str> =
            self.config.routes.iter().filter(|r| r.identity == identity).map(|r| r.name.as_str()).collect();
        let wanted = |entry: &CacheEntry| entry.origin.as_ref().is_some_and(|o| routes.contains(&o.route.as_str()));
        self.drop_entries(&|cache| cache.entries(), &wanted, chain)
    }

    /// Drops the wanted ones among `candidates`, revoking each where its issuer can: at
    /// most [`REVOKING_AT_ONCE`] workers, each taking an entry out of the cache under its
    /// lock and revoking it on the process's shared client, so taking and revoking overlap.
    fn drop_entries(
        &self,
        candidates: &dyn Fn(&Cache) -> Vec<(String, CacheEntry)>,
        wanted: &(dyn Fn(&CacheEntry) -> bool + Sync),
        chain: &[Process],
    ) -> Ended {
        let Ok(cache) = Cache::open(&self.env) else {
            return Ended { cache_off: true, ..Ended::default() };
        };
        let listed: Vec<(String, CacheEntry)> =
            candidates(&cache).into_iter().filter(|(_, entry)| wanted(entry) && entry.origin.is_some()).collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..REVOKING_AT_ONCE.min(listed.len()) {
                scope.spawn(|| {
                    while let Some((key, entry)) = listed.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) {
                        let session = entry.session.as_deref();
                        let taken = match cache.lock(key) {
                            // Read again under the lock: the entry may have been replaced since.
                            Ok(lock) => cache.discard_if(key, session, lock, wanted),
                            Err(_) => cache.remove_if(key, session, wanted),
                        };
                        if let Some(entry) = taken {
                            let result = self.end_entry(entry, chain);
                            results.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(result);
                        }
                    }
                });
            }
        });
        let mut ended = Ended::default();
        for result in results.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner) {
            match result {
                Ok(true) => ended.revoked += 1,
                Ok(false) => ended.dropped += 1,
                Err(failure) => {
                    ended.dropped += 1;
                    ended.failures.push(failure);
                }
            }
        }
        ended
    }

    /// [`Broker::end_entry`] for an entry a refresh took out of the cache still sealed,
    /// `replacing` the origin of the token that replaced it (the same route, target and
    /// operation). One the cache key does not open is said on a `revoke-failed` line: its
    /// token, if it held one, lives on to its expiry. `cache` is the caller's open cache,
    /// if it has one (else it is opened here).
    pub(crate) fn end_sealed(
        &self,
        cache: Option<&Cache>,
        sealed: &[u8],
        replacing: Option<&Origin>,
        chain: &[Process],
    ) {
        let opened = match cache {
            Some(cache) => cache.open_sealed(sealed),
            None => Cache::open(&self.env).ok().and_then(|cache| cache.open_sealed(sealed)),
        };
        match opened {
            Some(entry) => {
                let _ = self.end_entry(entry, chain);
            }
            None => {
                let Some(origin) = replacing else { return };
                let mut event = self.origin_event(origin, self.session(), None, chain);
                let why = std::io::Error::other(
                    "the replaced cache entry does not open with the cache key (sealed under another key, or damaged)",
                );
                self.write(event.fail(Outcome::RevokeFailed, &why));
            }
        }
    }

    /// Revokes a token taken out of the cache where its issuer can, and audits it: true
    /// when revoked, false when only dropped, the reason when revoking failed.
    pub(crate) fn end_entry(&self, entry: CacheEntry, chain: &[Process]) -> Result<bool, String> {
        let Some(origin) = entry.origin.clone() else { return Ok(false) };
        let mut event = self.stored_event(&origin, &entry, chain);
        let exchange = self.config.exchanges.get(&origin.exchange);
        match exchange.filter(|e| e.revokes()).map(|e| self.revoke(e, &entry.token)) {
            None => {
                self.write(event.served(Outcome::Erased, &entry));
                Ok(false)
            }
            Some(Ok(())) => {
                self.write(event.served(Outcome::Revoked, &entry));
                Ok(true)
            }
            Some(Err(error)) => {
                event.served(Outcome::RevokeFailed, &entry);
                self.write(event.fail(Outcome::RevokeFailed, &error));
                Err(format!("could not revoke the token for {}: {}", origin.target, crate::protocol::one_line(&error)))
            }
        }
    }

    fn revoke(&self, exchange: &ExchangeConfig, token: &Secret) -> Result<(), crate::exchange::Error> {
        let http = HttpClient::new(exchange.timeout, exchange.ca_file.as_deref())
            .map_err(|source| crate::exchange::Error::Http { exchange: exchange.name.clone(), source })?;
        exchange.kind.protocol().revoke(exchange, &http, token)
    }

    /// The audit line for a cached entry, from what the entry recorded.
    fn stored_event(&self, origin: &Origin, entry: &CacheEntry, chain: &[Process]) -> AuditEvent {
        self.origin_event(origin, entry.session.clone(), entry.scope.clone(), chain)
    }

    /// The audit line for a token of a known origin, in a session, for a scope.
    fn origin_event(
        &self,
        origin: &Origin,
        session: Option<String>,
        scope: Option<String>,
        chain: &[Process],
    ) -> AuditEvent {
        AuditEvent {
            time: rfc3339(now()),
            session,
            agent: self.agent(),
            tool: origin.tool.clone(),
            target: origin.target.clone(),
            operation: origin.operation.clone(),
            route: origin.route.clone(),
            scope,
            process: chain.to_vec(),
            ..AuditEvent::default()
        }
    }

    fn event(
        &self,
        route: &Route,
        target: &Target,
        operation: Operation,
        chain: &[Process],
        scope: Option<String>,
    ) -> AuditEvent {
        AuditEvent {
            time: rfc3339(now()),
            session: self.session(),
            agent: self.agent(),
            tool: target.tool.as_str().into(),
            target: target.display(),
            operation: operation.as_str().into(),
            route: route.name.clone(),
            scope,
            process: chain.to_vec(),
            ..AuditEvent::default()
        }
    }

    fn write(&self, event: &AuditEvent) {
        if let Err(e) = self.audit.record(event) {
            let path = self.audit.path().map(|p| p.display().to_string()).unwrap_or_default();
            crate::protocol::warn(&format!("cannot write audit log `{path}`: {e}"));
        }
    }
}

impl AuditEvent {
    fn served(&mut self, outcome: Outcome, entry: &CacheEntry) -> &Self {
        self.outcome = outcome;
        self.issuer.clone_from(&entry.issuer);
        self.subject.clone_from(&entry.subject);
        self.fingerprint = Some(entry.token.fingerprint());
        self.token_id.clone_from(&entry.token_id);
        self.expires = Some(rfc3339(entry.expires_at));
        if entry.scope.is_some() {
            self.scope.clone_from(&entry.scope);
        }
        self
    }

    /// Keeps only the part of this line's chain that differs from the chain that asked
    /// for the token first (`issuing`, digests), and refers to that `issued` line for the
    /// rest: hits inside one session repeat its long ancestry otherwise.
    fn refer_to_issued(&mut self, issuing: &[String]) {
        let own: Vec<String> = self.process.iter().map(Process::digest).collect();
        let shared = own.iter().rev().zip(issuing.iter().rev()).take_while(|(a, b)| a == b).count();
        if shared == 0 {
            return;
        }
        let Some(fingerprint) = self.fingerprint.clone() else { return };
        self.process.truncate(own.len() - shared);
        self.process_ref = Some(ProcessRef { issued: fingerprint, from: issuing.len() - shared });
    }

    fn fail(&mut self, outcome: Outcome, error: &dyn std::error::Error) -> &Self {
        self.outcome = outcome;
        self.reason = Some(crate::protocol::one_line(error));
        self
    }
}

fn issued(route: &Route, entry: CacheEntry, from_cache: bool) -> Issued {
    Issued {
        expires_at: (entry.expires_at > 0).then_some(entry.expires_at),
        token_id: entry.token_id,
        scheme: route.scheme,
        username: route.username.clone(),
        from_cache,
        token: entry.token,
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
