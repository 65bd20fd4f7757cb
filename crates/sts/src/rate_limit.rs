//! Rate limits on `POST /token`: per subject (the verified subject token's `iss` and
//! `sub`) and per client address, each a token bucket kept in this process.
//!
//! The client address is the socket peer, or the nearest untrusted address of
//! `X-Forwarded-For` when the peer is a configured trusted proxy. IPv6 addresses count
//! per /64. Memory is bounded: a full table first forgets the keys whose buckets have
//! refilled (they are as good as new), then the longest idle.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::audit::Line;
use crate::oauth::OAuthError;
use crate::server::{Refusal, Sts};

/// Keys one limit remembers at most.
const MAX_KEYS: usize = 100_000;

/// `[rate_limit]` as written.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitEntry {
    /// Exchanges one subject may ask for, as `N/s`, `N/min` or `N/h` (no limit when not set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_subject: Option<String>,
    /// Exchanges one client address may ask for, as `N/s`, `N/min` or `N/h` (no limit when not set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_address: Option<String>,
    /// How many requests a bucket holds, that is, how many may come at once (each
    /// limit's N when not set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Proxies (addresses or CIDRs) whose `X-Forwarded-For` names the client.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
}

/// A rate: `count` requests per `per`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Requests per period.
    pub count: u32,
    /// The period.
    pub per: Duration,
}

impl Rate {
    /// Parses `N/s`, `N/min`, `N/h` (also `sec`, `second`, `m`, `minute`, `hour`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("rate `{text}` is not N/s, N/min or N/h with N at least 1");
        let (count, unit) = text.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        if count == 0 {
            return Err(bad());
        }
        Ok(Self { count, per })
    }
}

/// The configured limits, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimit {
    /// Per subject.
    pub per_subject: Option<Rate>,
    /// Per client address.
    pub per_address: Option<Rate>,
    /// Bucket size, when set.
    pub burst: Option<u32>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
}

impl RateLimit {
    /// Checks `[rate_limit]`.
    pub fn from_entry(entry: RateLimitEntry) -> Result<Self, String> {
        let rate = |field: &str, v: Option<String>| {
            v.as_deref().map(Rate::parse).transpose().map_err(|e| format!("rate_limit: `{field}`: {e}"))
        };
        let per_subject = rate("per_subject", entry.per_subject)?;
        let per_address = rate("per_address", entry.per_address)?;
        if entry.burst == Some(0) {
            return Err("rate_limit: `burst` must be at least 1".into());
        }
        let trusted_proxies = entry
            .trusted_proxies
            .iter()
            .map(|p| {
                p.parse::<IpNet>()
                    .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("rate_limit: trusted proxy `{p}` is not an address or CIDR"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { per_subject, per_address, burst: entry.burst, trusted_proxies })
    }
}

/// A refusal: how long until the next request would be let through.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Limited {
    pub(crate) retry_after: Duration,
    /// Whether this is the first refusal since the key was last let through (audited once).
    pub(crate) first: bool,
}

struct Bucket {
    tokens: f64,
    last: Instant,
    refused: bool,
}

/// One keyed token bucket limit.
pub(crate) struct Limiter<K> {
    /// Tokens per second.
    rate: f64,
    capacity: f64,
    max_keys: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub(crate) fn new(rate: Rate, burst: Option<u32>, max_keys: usize) -> Self {
        Self {
            rate: f64::from(rate.count) / rate.per.as_secs_f64(),
            capacity: f64::from(burst.unwrap_or(rate.count)),
            max_keys,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`, or says how long until one is there.
    pub(crate) fn check(&self, key: &K, now: Instant) -> Result<(), Limited> {
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
            self.evict(&mut buckets, now);
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket { tokens: self.capacity, last: now, refused: false });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.capacity);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            bucket.refused = false;
            return Ok(());
        }
        let first = !bucket.refused;
        bucket.refused = true;
        let wait = (1.0 - bucket.tokens) / self.rate;
        Err(Limited { retry_after: Duration::from_secs(wait.ceil().max(1.0) as u64), first })
    }

    /// Forgets every key whose bucket is full again; if none is, the longest idle one.
    fn evict(&self, buckets: &mut HashMap<K, Bucket>, now: Instant) {
        let refill = self.capacity / self.rate;
        buckets.retain(|_, b| now.saturating_duration_since(b.last).as_secs_f64() < refill);
        if buckets.len() >= self.max_keys
            && let Some(oldest) = buckets.iter().min_by_key(|(_, b)| b.last).map(|(k, _)| k.clone())
        {
            buckets.remove(&oldest);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.lock().unwrap().len()
    }
}

/// The limits of a running exchange.
pub(crate) struct Limits {
    subject: Option<Limiter<(String, String)>>,
    address: Option<Limiter<IpAddr>>,
    trusted_proxies: Vec<IpNet>,
}

impl Limits {
    pub(crate) fn new(config: Option<&RateLimit>) -> Self {
        let Some(config) = config else { return Self { subject: None, address: None, trusted_proxies: Vec::new() } };
        Self {
            subject: config.per_subject.map(|r| Limiter::new(r, config.burst, MAX_KEYS)),
            address: config.per_address.map(|r| Limiter::new(r, config.burst, MAX_KEYS)),
            trusted_proxies: config.trusted_proxies.clone(),
        }
    }

    /// The limit on one subject.
    pub(crate) fn subject(&self, issuer: &str, subject: &str) -> Result<(), Limited> {
        match &self.subject {
            Some(limiter) => limiter.check(&(issuer.to_owned(), subject.to_owned()), Instant::now()),
            None => Ok(()),
        }
    }

    /// The limit on one client address (`None`: no address known, nothing to limit by).
    pub(crate) fn address(&self, client: Option<IpAddr>) -> Result<(), Limited> {
        match (&self.address, client) {
            (Some(limiter), Some(client)) => limiter.check(&bucket_of(client), Instant::now()),
            _ => Ok(()),
        }
    }

    /// Whether an address limit is configured (the client address is worth finding).
    pub(crate) fn limits_addresses(&self) -> bool {
        self.address.is_some()
    }

    /// The client's address: the peer, or when the peer is a trusted proxy, the last
    /// address of `X-Forwarded-For` that is not a trusted proxy itself.
    pub(crate) fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let trusted = |ip: &IpAddr| self.trusted_proxies.iter().any(|net| net.contains(&canonical(*ip)));
        if !trusted(&peer) {
            return peer;
        }
        let mut client = peer;
        let forwarded = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>();
        for hop in forwarded.iter().flat_map(|v| v.split(',')).rev() {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !trusted(&ip) {
                        break;
                    }
                }
                // A hop that is not an address ends what can be believed.
                Err(_) => break,
            }
        }
        client
    }
}

/// The answer to a request over a limit: `429` with `Retry-After` and an RFC 6749 style
/// body (`slow_down`). The first refusal of a run is audited (`denied`, `slow_down`); the
/// rest only counted, so a flood does not flood the audit log.
pub(crate) async fn refuse(sts: &Sts, limit: &'static str, limited: Limited, line: Line<'_>) -> Response {
    crate::metrics::rate_limited(limit);
    let seconds = limited.retry_after.as_secs();
    let reason = format!("too many requests for this {limit}; try again in {seconds}s");
    if limited.first {
        let refusal = Refusal { code: OAuthError::SlowDown, reason: format!("rate limit per {limit} reached") };
        crate::server::denied(sts, refusal, line).await;
    }
    let mut response = crate::server::oauth_error(StatusCode::TOO_MANY_REQUESTS, OAuthError::SlowDown, &reason);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// An IPv4-mapped IPv6 address as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What an address is counted as: itself (IPv4) or its /64 (IPv6, which one host has many of).
fn bucket_of(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(trusted: &[&str]) -> Limits {
        let entry = RateLimitEntry {
            per_address: Some("2/min".into()),
            trusted_proxies: trusted.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        };
        Limits::new(Some(&RateLimit::from_entry(entry).unwrap()))
    }

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().unwrap());
        headers
    }

    #[test]
    fn rates_parse_and_bad_ones_are_named() {
        assert_eq!(Rate::parse("60/min").unwrap(), Rate { count: 60, per: Duration::from_secs(60) });
        assert_eq!(Rate::parse("5/s").unwrap(), Rate { count: 5, per: Duration::from_secs(1) });
        assert_eq!(Rate::parse("1000/h").unwrap(), Rate { count: 1000, per: Duration::from_secs(3600) });
        for bad in ["60", "0/min", "x/min", "60/day", "-1/s"] {
            assert!(Rate::parse(bad).unwrap_err().contains(bad), "{bad}");
        }
        let error =
            RateLimit::from_entry(RateLimitEntry { trusted_proxies: vec!["10.0.0.0/33".into()], ..Default::default() })
                .unwrap_err();
        assert!(error.contains("10.0.0.0/33"), "{error}");
    }

    #[test]
    fn the_config_section_is_read_and_checked() {
        let base = "issuer = \"https://sts.example\"\n";
        assert!(crate::Config::parse(base).unwrap().rate_limit.is_none(), "no limits unless configured");
        let config = crate::Config::parse(&format!(
            "{base}[rate_limit]\nper_subject = \"60/min\"\nburst = 5\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n"
        ))
        .unwrap();
        let limits = config.rate_limit.unwrap();
        assert_eq!(limits.per_subject, Some(Rate { count: 60, per: Duration::from_secs(60) }));
        assert_eq!((limits.per_address, limits.burst, limits.trusted_proxies.len()), (None, Some(5), 2));
        for (section, expected) in [
            ("per_address = \"lots\"\n", "`per_address`"),
            ("burst = 0\n", "`burst`"),
            ("trusted_proxies = [\"proxy.example\"]\n", "proxy.example"),
            ("per_ip = \"1/s\"\n", "unknown field"),
        ] {
            let error = crate::Config::parse(&format!("{base}[rate_limit]\n{section}")).unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn a_bucket_refuses_past_its_size_and_refills_at_the_rate() {
        let limiter = Limiter::new(Rate::parse("60/min").unwrap(), Some(2), 10);
        let start = Instant::now();
        assert!(limiter.check(&"a", start).is_ok());
        assert!(limiter.check(&"a", start).is_ok());
        let refused = limiter.check(&"a", start).unwrap_err();
        assert_eq!(refused, Limited { retry_after: Duration::from_secs(1), first: true });
        assert!(!limiter.check(&"a", start).unwrap_err().first, "the second refusal in a row is not the first");
        assert!(limiter.check(&"b", start).is_ok(), "another key has its own bucket");
        assert!(limiter.check(&"a", start + Duration::from_secs(1)).is_ok(), "one token back after a second");
        assert!(limiter.check(&"a", start + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn a_full_table_forgets_refilled_keys_then_the_longest_idle() {
        let limiter = Limiter::new(Rate::parse("1/s").unwrap(), Some(1), 3);
        let start = Instant::now();
        for (i, key) in [1, 2, 3].iter().enumerate() {
            limiter.check(key, start + Duration::from_millis(100 * i as u64)).unwrap();
        }
        // All three are still refilling: the longest idle (1) goes.
        limiter.check(&4, start + Duration::from_millis(500)).unwrap();
        assert_eq!(limiter.len(), 3);
        assert!(limiter.check(&2, start + Duration::from_millis(500)).is_err(), "2 is remembered");
        assert!(limiter.check(&1, start + Duration::from_millis(500)).is_ok(), "1 was forgotten, so it is new");
        // Later every bucket is full again: all are forgotten at once.
        limiter.check(&5, start + Duration::from_secs(10)).unwrap();
        assert_eq!(limiter.len(), 1);
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_proxy() {
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let headers = forwarded("203.0.113.9, 198.51.100.7");
        assert_eq!(limits(&[]).client(peer, &headers), peer, "an untrusted peer's header is ignored");
        let trusted = limits(&["127.0.0.0/8"]);
        assert_eq!(trusted.client(peer, &headers), "198.51.100.7".parse::<IpAddr>().unwrap());
        let chain = limits(&["127.0.0.1", "198.51.100.0/24"]);
        assert_eq!(chain.client(peer, &headers), "203.0.113.9".parse::<IpAddr>().unwrap(), "trusted hops skipped");
        assert_eq!(trusted.client(peer, &forwarded("junk")), peer);
        assert_eq!(trusted.client(peer, &HeaderMap::new()), peer);
    }

    #[test]
    fn ipv6_addresses_count_per_64() {
        let limits = limits(&[]);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert!(limits.address(Some(a)).is_ok() && limits.address(Some(b)).is_ok());
        assert!(limits.address(Some(a)).is_err(), "one /64 shares one bucket");
        assert!(limits.address(Some("2001:db8:1:3::1".parse().unwrap())).is_ok());
    }
}
