//! Human approval (step-up): requests that an `@approval("GROUP")` forbid holds back wait
//! here until a person of GROUP approves or denies them.
//!
//! The client is answered `authorization_pending` with an approval id (for the approver's
//! URL) and a code (for the client alone). It collects by repeating the same exchange with
//! `approval_code`; the approval is bound to that request (subject, actor chain, audience,
//! scopes, lifetime asked and the scrubbed intent) and yields one token. Only the code's
//! SHA-256 is kept.
//!
//! The store is a trait: [`Approvals`] keeps them in this process; with a PostgreSQL
//! revocation store they live in that database ([`crate::pg_shared`]), so a request held at
//! one replica can be decided and collected at any.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::verify::VerifiedSubject;

/// Most approvals waiting for a decision at once.
pub(crate) const MAX_PENDING: usize = 1_000;
/// Most approvals kept at all (decided ones are kept until they expire, to answer polls).
pub(crate) const MAX_KEPT: usize = 10_000;
/// How long an approval is kept after it expires, so a late poll reads `expired_token`
/// rather than an unknown code.
pub(crate) const KEPT_AFTER_EXPIRY: Duration = Duration::from_secs(600);
/// What `slow_down` adds to the interval (RFC 8628 section 3.5).
pub(crate) const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);
/// Longest reason an approver may give.
pub(crate) const MAX_REASON: usize = 300;

/// What an approval is for: the request it was asked for, and no other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Binding {
    pub(crate) issuer: String,
    pub(crate) subject: String,
    pub(crate) act: Option<Value>,
    pub(crate) audience: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) ttl: Option<u64>,
    intent_sha256: [u8; 32],
}

impl Binding {
    pub(crate) fn new(
        subject: &VerifiedSubject,
        act: Option<&Value>,
        audience: &str,
        scopes: &[String],
        ttl: Option<Duration>,
        intent: Option<&Value>,
    ) -> Self {
        let mut scopes = scopes.to_vec();
        scopes.sort();
        let intent = intent.map(canonical).unwrap_or_default();
        Self {
            issuer: subject.issuer.clone(),
            subject: subject.subject.clone(),
            act: act.cloned(),
            audience: audience.to_owned(),
            scopes,
            ttl: ttl.map(|t| t.as_secs()),
            intent_sha256: Sha256::digest(intent.as_bytes()).into(),
        }
    }
}

/// JSON with object keys sorted, so the same intent digests the same in any key order.
fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> =
                keys.into_iter().map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&map[k]))).collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(canonical).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

/// Who decided an approval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Approver {
    /// `ISSUER#SUBJECT`, as policies see it in `context.approval.approver`.
    pub(crate) id: String,
    /// Their email when the ID token has one, else their `sub`: what a requester reads.
    pub(crate) name: String,
    /// `{"iss", "sub", "email"?}` for audit lines.
    pub(crate) audit: Value,
}

impl Approver {
    pub(crate) fn of(token: &VerifiedSubject) -> Self {
        let email = token.claims.get("email").and_then(Value::as_str);
        let mut audit = serde_json::json!({"iss": token.issuer, "sub": token.subject});
        if let Some(email) = email {
            audit["email"] = Value::from(email);
        }
        Self {
            id: format!("{}#{}", token.issuer, token.subject),
            name: email.unwrap_or(&token.subject).to_owned(),
            audit,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Pending,
    Approved,
    Denied(Option<String>),
    Used,
}

/// What a new approval is about, besides its binding.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Request {
    pub(crate) binding: Binding,
    /// The scrubbed intent the client claimed, to show the approver.
    pub(crate) intent: Option<Value>,
    pub(crate) group: String,
    pub(crate) policies: Vec<String>,
    /// The operation held back (`write`) and what it is on (`HOST/PATH`), for announcements.
    pub(crate) operation: String,
    pub(crate) target: String,
    /// The requester's value of `same_person_claim`, when configured and present.
    pub(crate) person: Option<String>,
}

#[derive(Debug)]
struct Record {
    id: String,
    request: Request,
    expires_at: Instant,
    interval: Duration,
    last_poll: Instant,
    state: State,
    approver: Option<Approver>,
}

impl Record {
    fn status(&self, now: Instant) -> &'static str {
        let state = match &self.state {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Denied(_) => "denied",
            State::Used => "used",
        };
        status(state, now >= self.expires_at)
    }
}

/// An approval's status, from its state as stored (`pending`, `approved`, `denied` or
/// `used`) and whether it has expired: a used approval stays used; any other expires.
pub(crate) fn status(state: &str, expired: bool) -> &'static str {
    match state {
        "used" => "used",
        _ if expired => "expired",
        "approved" => "approved",
        "denied" => "denied",
        _ => "pending",
    }
}

/// A new approval: what the pending answer carries. The code exists only here and in
/// that answer.
#[derive(Debug)]
pub(crate) struct Created {
    pub(crate) id: String,
    pub(crate) code: String,
    pub(crate) interval: Duration,
    pub(crate) expires_in: Duration,
}

/// The answer to a client collecting with a code.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Poll {
    /// No approval has this code (never had, or forgotten long after it expired).
    Unknown,
    /// The code is for another request.
    OtherRequest,
    Pending {
        id: String,
        interval: Duration,
        expires_in: Duration,
    },
    SlowDown {
        id: String,
        interval: Duration,
    },
    Denied {
        by: String,
        reason: Option<String>,
    },
    Expired,
    Used,
    /// The store cannot be reached (the exchange answers 503).
    Unavailable(String),
    /// Approved: the client may have its token (after [`ApprovalStore::spend`]).
    Approved {
        id: String,
        approver: Approver,
        group: String,
        policies: Vec<String>,
    },
}

/// What an approver sees of an approval.
#[derive(Clone, Debug)]
pub(crate) struct View {
    pub(crate) status: &'static str,
    pub(crate) request: Request,
    pub(crate) expires_in: Duration,
}

/// Why an approver's decision was not recorded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DecideError {
    Unknown,
    Expired,
    AlreadyDecided(&'static str),
    /// The store cannot be reached.
    Unavailable(String),
}

/// Where approvals are kept. `now` is this process's clock, which [`Approvals`] goes by;
/// a store shared by replicas goes by its database's clock instead. `Err` (and
/// [`Poll::Unavailable`], [`DecideError::Unavailable`]) is the store failing: one line,
/// and the exchange answers 503.
pub(crate) trait ApprovalStore: Send + Sync {
    /// How many requests wait for a decision now.
    fn pending(&self, now: Instant) -> Result<usize, String>;
    /// Opens an approval; `Err` with a reason when too many are waiting or the store fails.
    fn create(&self, request: Request, now: Instant) -> Result<Created, String>;
    /// A client collecting with `code` for the request `binding` describes.
    fn poll(&self, code: &str, binding: &Binding, now: Instant) -> Poll;
    /// Marks an approved approval used: `Ok(true)` once, for the one token it yields, even
    /// when several collect at once.
    fn spend(&self, id: &str, now: Instant) -> Result<bool, String>;
    /// What an approver sees (`None`: no such approval, or forgotten).
    fn view(&self, id: &str, now: Instant) -> Result<Option<View>, String>;
    /// Records an approver's decision.
    fn decide(
        &self,
        id: &str,
        approver: Approver,
        approve: bool,
        reason: Option<String>,
        now: Instant,
    ) -> Result<(), DecideError>;
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<String, Record>,
    /// SHA-256 of the code -> id.
    by_code: HashMap<[u8; 32], String>,
}

/// The approvals of this process (one exchange, or no shared store).
pub(crate) struct Approvals {
    inner: Mutex<Inner>,
    ttl: Duration,
    interval: Duration,
}

impl Approvals {
    pub(crate) fn new(ttl: Duration, interval: Duration) -> Self {
        Self { inner: Mutex::new(Inner::default()), ttl, interval }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl ApprovalStore for Approvals {
    fn pending(&self, now: Instant) -> Result<usize, String> {
        Ok(self.lock().by_id.values().filter(|r| r.state == State::Pending && now < r.expires_at).count())
    }

    fn create(&self, request: Request, now: Instant) -> Result<Created, String> {
        let mut inner = self.lock();
        purge(&mut inner, now);
        let pending = inner.by_id.values().filter(|r| r.state == State::Pending && now < r.expires_at).count();
        if pending >= MAX_PENDING || inner.by_id.len() >= MAX_KEPT {
            return Err(format!("{pending} approvals are waiting already; try again once some are decided"));
        }
        let id = hex::encode(random::<16>());
        let code = hex::encode(random::<32>());
        let digest: [u8; 32] = Sha256::digest(code.as_bytes()).into();
        inner.by_code.insert(digest, id.clone());
        inner.by_id.insert(
            id.clone(),
            Record {
                id: id.clone(),
                request,
                expires_at: now + self.ttl,
                interval: self.interval,
                last_poll: now,
                state: State::Pending,
                approver: None,
            },
        );
        Ok(Created { id, code, interval: self.interval, expires_in: self.ttl })
    }

    fn poll(&self, code: &str, binding: &Binding, now: Instant) -> Poll {
        let mut inner = self.lock();
        purge(&mut inner, now);
        let digest: [u8; 32] = Sha256::digest(code.as_bytes()).into();
        let Some(id) = inner.by_code.get(&digest).cloned() else {
            return Poll::Unknown;
        };
        let Some(record) = inner.by_id.get_mut(&id) else {
            return Poll::Unknown;
        };
        if record.request.binding != *binding {
            return Poll::OtherRequest;
        }
        match record.status(now) {
            "used" => Poll::Used,
            "expired" => Poll::Expired,
            "denied" => Poll::Denied {
                by: record.approver.as_ref().map(|a| a.name.clone()).unwrap_or_default(),
                reason: match &record.state {
                    State::Denied(reason) => reason.clone(),
                    _ => None,
                },
            },
            "approved" => Poll::Approved {
                id: record.id.clone(),
                approver: record.approver.clone().expect("an approved record names its approver"),
                group: record.request.group.clone(),
                policies: record.request.policies.clone(),
            },
            _ => {
                let since = now.saturating_duration_since(record.last_poll);
                record.last_poll = now;
                if since < record.interval {
                    record.interval += SLOW_DOWN_STEP;
                    return Poll::SlowDown { id: record.id.clone(), interval: record.interval };
                }
                Poll::Pending {
                    id: record.id.clone(),
                    interval: record.interval,
                    expires_in: record.expires_at.saturating_duration_since(now),
                }
            }
        }
    }

    fn spend(&self, id: &str, now: Instant) -> Result<bool, String> {
        let mut inner = self.lock();
        Ok(match inner.by_id.get_mut(id) {
            Some(record) if record.state == State::Approved && now < record.expires_at => {
                record.state = State::Used;
                true
            }
            _ => false,
        })
    }

    fn view(&self, id: &str, now: Instant) -> Result<Option<View>, String> {
        let mut inner = self.lock();
        purge(&mut inner, now);
        Ok(inner.by_id.get(id).map(|r| View {
            status: r.status(now),
            request: r.request.clone(),
            expires_in: r.expires_at.saturating_duration_since(now),
        }))
    }

    fn decide(
        &self,
        id: &str,
        approver: Approver,
        approve: bool,
        reason: Option<String>,
        now: Instant,
    ) -> Result<(), DecideError> {
        let mut inner = self.lock();
        let record = inner.by_id.get_mut(id).ok_or(DecideError::Unknown)?;
        match record.status(now) {
            "pending" => {}
            "expired" => return Err(DecideError::Expired),
            status => return Err(DecideError::AlreadyDecided(status)),
        }
        record.state = if approve { State::Approved } else { State::Denied(reason) };
        record.approver = Some(approver);
        Ok(())
    }
}

/// Forgets approvals long expired.
fn purge(inner: &mut Inner, now: Instant) {
    let before = inner.by_id.len();
    inner.by_id.retain(|_, r| now < r.expires_at + KEPT_AFTER_EXPIRY);
    if inner.by_id.len() != before {
        let Inner { by_id, by_code } = inner;
        by_code.retain(|_, id| by_id.contains_key(id));
    }
}

pub(crate) fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    bytes
}

/// Whether two claim values name the same person (emails compare without case).
pub(crate) fn same_person(a: &str, b: &str) -> bool {
    !a.is_empty() && a.eq_ignore_ascii_case(b)
}

/// An approver's reason: at most [`MAX_REASON`] characters of one printable line.
pub(crate) fn check_reason(reason: &str) -> Result<(), String> {
    if reason.chars().count() > MAX_REASON {
        return Err(format!("`reason` is longer than {MAX_REASON} characters"));
    }
    if reason.chars().any(char::is_control) {
        return Err("`reason` must be one line without control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn subject(sub: &str) -> VerifiedSubject {
        let claims = json!({"iss": "https://issuer", "sub": sub, "email": "bob@example.com"});
        VerifiedSubject {
            issuer: "https://issuer".into(),
            subject: sub.into(),
            claims: claims.as_object().unwrap().clone(),
        }
    }

    fn binding(scope: &str, intent: Option<&Value>) -> Binding {
        Binding::new(&subject("user:bob"), None, "https://git.example", &[scope.to_owned()], None, intent)
    }

    fn request(binding: Binding) -> Request {
        Request {
            binding,
            intent: None,
            group: "release".into(),
            policies: vec!["p".into()],
            operation: "write".into(),
            target: "git.example/org/r".into(),
            person: None,
        }
    }

    fn alice() -> Approver {
        let mut token = subject("user:alice");
        token.claims.insert("email".into(), json!("alice@example.com"));
        Approver::of(&token)
    }

    const SECS: Duration = Duration::from_secs(1);

    #[test]
    fn a_code_collects_only_the_request_it_was_asked_for() {
        let intent = json!({"tool": "git", "command": ["git", "push"]});
        let reordered = json!({"command": ["git", "push"], "tool": "git"});
        assert_eq!(binding("repo:org/r:write", Some(&intent)), binding("repo:org/r:write", Some(&reordered)));
        let store = Approvals::new(600 * SECS, 5 * SECS);
        let t0 = Instant::now();
        let created = store.create(request(binding("repo:org/r:write", Some(&intent))), t0).unwrap();
        assert_eq!((created.id.len(), created.code.len()), (32, 64));
        let later = t0 + 10 * SECS;
        let other = [
            binding("repo:org/r:read", Some(&intent)),
            binding("repo:org/r:write", None),
            binding("repo:org/r:write", Some(&json!({"tool": "git", "command": ["git", "push", "-f"]}))),
            Binding::new(
                &subject("user:eve"),
                None,
                "https://git.example",
                &["repo:org/r:write".into()],
                None,
                Some(&intent),
            ),
            Binding::new(
                &subject("user:bob"),
                Some(&json!({"sub": "agent:x"})),
                "https://git.example",
                &["repo:org/r:write".into()],
                None,
                Some(&intent),
            ),
            Binding::new(
                &subject("user:bob"),
                None,
                "https://git.example",
                &["repo:org/r:write".into()],
                Some(60 * SECS),
                Some(&intent),
            ),
            Binding::new(
                &subject("user:bob"),
                None,
                "https://other.example",
                &["repo:org/r:write".into()],
                None,
                Some(&intent),
            ),
        ];
        for other in &other {
            assert_eq!(store.poll(&created.code, other, later), Poll::OtherRequest, "{other:?}");
        }
        assert_eq!(store.poll(&"0".repeat(64), &binding("repo:org/r:write", Some(&intent)), later), Poll::Unknown);
        assert!(matches!(
            store.poll(&created.code, &binding("repo:org/r:write", Some(&intent)), later),
            Poll::Pending { .. }
        ));
    }

    #[test]
    fn an_approval_yields_one_token() {
        let store = Approvals::new(600 * SECS, 5 * SECS);
        let t0 = Instant::now();
        let created = store.create(request(binding("repo:org/r:write", None)), t0).unwrap();
        store.decide(&created.id, alice(), true, None, t0 + SECS).unwrap();
        assert_eq!(
            store.decide(&created.id, alice(), false, None, t0 + SECS),
            Err(DecideError::AlreadyDecided("approved"))
        );
        let Poll::Approved { id, approver, .. } =
            store.poll(&created.code, &binding("repo:org/r:write", None), t0 + SECS)
        else {
            panic!("not approved");
        };
        assert_eq!((approver.name.as_str(), approver.id.as_str()), ("alice@example.com", "https://issuer#user:alice"));
        assert!(store.spend(&id, t0 + SECS).unwrap());
        assert!(!store.spend(&id, t0 + SECS).unwrap());
        assert_eq!(store.poll(&created.code, &binding("repo:org/r:write", None), t0 + 2 * SECS), Poll::Used);
        assert_eq!(store.view(&id, t0 + 2 * SECS).unwrap().unwrap().status, "used");
    }

    #[test]
    fn a_denial_names_who_and_why() {
        let store = Approvals::new(600 * SECS, 5 * SECS);
        let t0 = Instant::now();
        let created = store.create(request(binding("repo:org/r:write", None)), t0).unwrap();
        store.decide(&created.id, alice(), false, Some("not during the freeze".into()), t0).unwrap();
        assert_eq!(
            store.poll(&created.code, &binding("repo:org/r:write", None), t0 + SECS),
            Poll::Denied { by: "alice@example.com".into(), reason: Some("not during the freeze".into()) }
        );
    }

    #[test]
    fn approvals_expire_and_are_forgotten_later() {
        let store = Approvals::new(60 * SECS, 5 * SECS);
        let t0 = Instant::now();
        let created = store.create(request(binding("repo:org/r:write", None)), t0).unwrap();
        let b = binding("repo:org/r:write", None);
        assert_eq!(store.view(&created.id, t0 + 61 * SECS).unwrap().unwrap().status, "expired");
        assert_eq!(store.decide(&created.id, alice(), true, None, t0 + 61 * SECS), Err(DecideError::Expired));
        assert_eq!(store.poll(&created.code, &b, t0 + 61 * SECS), Poll::Expired);
        // Approved but not collected in time: expired too, and it yields nothing.
        let late = store.create(request(b.clone()), t0).unwrap();
        store.decide(&late.id, alice(), true, None, t0 + 59 * SECS).unwrap();
        assert_eq!(store.poll(&late.code, &b, t0 + 60 * SECS), Poll::Expired);
        assert!(!store.spend(&late.id, t0 + 60 * SECS).unwrap());
        let forgotten = t0 + 60 * SECS + KEPT_AFTER_EXPIRY;
        assert_eq!(store.poll(&created.code, &b, forgotten), Poll::Unknown);
        assert!(store.view(&created.id, forgotten).unwrap().is_none());
        assert!(store.lock().by_code.is_empty());
    }

    #[test]
    fn polling_faster_than_the_interval_slows_the_client_down() {
        let store = Approvals::new(600 * SECS, 5 * SECS);
        let t0 = Instant::now();
        let created = store.create(request(binding("repo:org/r:write", None)), t0).unwrap();
        let b = binding("repo:org/r:write", None);
        let id = created.id.clone();
        assert_eq!(
            store.poll(&created.code, &b, t0 + 2 * SECS),
            Poll::SlowDown { id: id.clone(), interval: 10 * SECS }
        );
        // The new interval holds from then on.
        assert_eq!(
            store.poll(&created.code, &b, t0 + 9 * SECS),
            Poll::SlowDown { id: id.clone(), interval: 15 * SECS }
        );
        assert_eq!(
            store.poll(&created.code, &b, t0 + 24 * SECS),
            Poll::Pending { id, interval: 15 * SECS, expires_in: 576 * SECS }
        );
    }

    #[test]
    fn pending_approvals_are_bounded() {
        let store = Approvals::new(600 * SECS, 5 * SECS);
        let t0 = Instant::now();
        for _ in 0..MAX_PENDING {
            store.create(request(binding("repo:org/r:write", None)), t0).unwrap();
        }
        let error = store.create(request(binding("repo:org/r:write", None)), t0).unwrap_err();
        assert!(error.contains("1000 approvals are waiting"), "{error}");
        // Once they expire they no longer count.
        assert!(store.create(request(binding("repo:org/r:write", None)), t0 + 601 * SECS).is_ok());
    }

    #[test]
    fn same_person_and_reasons() {
        assert!(same_person("Bob@Example.com", "bob@example.com"));
        assert!(!same_person("", ""));
        assert!(!same_person("alice@example.com", "bob@example.com"));
        assert!(check_reason("not during the freeze").is_ok());
        assert!(check_reason(&"x".repeat(301)).is_err());
        assert!(check_reason("two\nlines").is_err());
    }
}
