//! Delegation (RFC 8693 sections 4.1 and 4.4): sessions that name the agent acting for a
//! subject, actor tokens, the `act` chain a minted token carries and the subject's
//! `may_act`.
//!
//! A session token is minted here for the exchange itself (`aud` is its issuer, `scope` is
//! `session`) and names an agent the subject *declared*: nothing attests the name, so its
//! `act` entry says `declared: true`. An agent with a workload identity of its own presents
//! that ID token as the actor token instead, and is named by its issuer and subject.

use serde_json::{Value, json};

use crate::Sts;
use crate::audit::{Line, now_rfc3339};
use crate::oauth::OAuthError;
use crate::own_tokens::OwnToken;
use crate::server::{Refusal, invalid_request};
use crate::verify::VerifiedSubject;
use mayfly_core::{ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE};

/// The scope of a session token, and the only scope asked for with the exchange as audience.
pub(crate) const SESSION_SCOPE: &str = "session";
/// RFC 8693's generic JWT token type.
pub(crate) const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// The deepest `act` chain minted: the current actor and three before it. Each hop is a
/// request someone has to review; a longer chain is more likely a loop than a need.
pub(crate) const MAX_CHAIN: usize = 4;
/// Longest agent name, session or host a session may declare.
const MAX_DECLARED: usize = 128;

/// The actor of a request.
#[derive(Debug)]
pub(crate) struct Actor {
    /// The minted token's `act`: the current actor, with the chain that reached it nested.
    pub(crate) act: Value,
    /// Who vouches for the current actor: its ID token's issuer, or this exchange.
    pub(crate) issuer: String,
    /// The session token's `jti`, when the actor came through a session.
    pub(crate) sid: Option<String>,
    /// When that session ends (Unix seconds): nothing derived from it outlives it.
    pub(crate) until: Option<i64>,
}

/// The `act` entry of the agent a session declares: the intent's `agent` (required),
/// `session` and `host`, each short printable ASCII so it cannot smuggle a line or a
/// pattern into a log or a policy.
pub(crate) fn declared_agent(intent: Option<&Value>) -> Result<Value, String> {
    let field = |name: &str| -> Result<Option<&str>, String> {
        match intent.and_then(|i| i.get(name)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(v))
                if !v.is_empty() && v.len() <= MAX_DECLARED && v.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                Ok(Some(v))
            }
            Some(_) => Err(format!(
                "intent `{name}` must be 1 to {MAX_DECLARED} printable ASCII characters without whitespace"
            )),
        }
    };
    let agent = field("agent")?.ok_or_else(|| "a session names its agent (`agent` in the intent)".to_owned())?;
    let mut entry = json!({"sub": format!("agent:{agent}"), "declared": true});
    for name in ["session", "host"] {
        if let Some(value) = field(name)? {
            entry[name] = Value::from(value);
        }
    }
    Ok(entry)
}

/// How many actors a chain names; an error when an entry is not an object with a string
/// `sub`, or when the chain is deeper than [`MAX_CHAIN`].
pub(crate) fn chain_depth(act: &Value) -> Result<usize, String> {
    let mut entry = act;
    for depth in 1..=MAX_CHAIN {
        let Some(fields) = entry.as_object() else { return Err("an `act` entry is not an object".into()) };
        if !fields.get("sub").is_some_and(Value::is_string) {
            return Err("an `act` entry has no `sub`".into());
        }
        match fields.get("act") {
            Some(next) => entry = next,
            None => return Ok(depth),
        }
    }
    Err(format!("the actor chain is deeper than {MAX_CHAIN}"))
}

/// An actor presenting an ID token of a trusted issuer: `{sub, iss}`, with the token's own
/// `act` (whoever it acts for in turn) nested inside.
pub(crate) fn id_token_actor(actor: &VerifiedSubject) -> Result<Actor, String> {
    let mut act = json!({"sub": actor.subject, "iss": actor.issuer});
    if let Some(prior) = actor.claims.get("act") {
        act["act"] = prior.clone();
    }
    chain_depth(&act).map_err(|e| format!("actor token: {e}"))?;
    Ok(Actor { act, issuer: actor.issuer.clone(), sid: None, until: None })
}

/// An actor presenting a session token of this exchange (signature and expiry already
/// checked): it must be a session, for this exchange, of the very subject presenting it.
pub(crate) fn session_actor(own: &OwnToken, issuer: &str, subject: &VerifiedSubject) -> Result<Actor, String> {
    if own.claim("aud") != Some(issuer) {
        return Err("actor token: not a session token (its audience is not this exchange)".into());
    }
    if own.claim("scope") != Some(SESSION_SCOPE) {
        return Err("actor token: not a session token (its scope is not `session`)".into());
    }
    if own.claim("sub") != Some(subject.subject.as_str())
        || own.claim("subject_issuer") != Some(subject.issuer.as_str())
    {
        return Err("actor token: the session belongs to another subject".into());
    }
    let act = own.claims.get("act").cloned().ok_or_else(|| "actor token: the session names no agent".to_owned())?;
    chain_depth(&act).map_err(|e| format!("actor token: {e}"))?;
    Ok(Actor { act, issuer: issuer.to_owned(), sid: Some(own.jti.clone()), until: Some(own.expires_at) })
}

/// RFC 8693 section 4.4: when the subject token names who may act for it, the current
/// actor must be that one (`sub`, and `iss` when given). Without `may_act` the policy decides.
pub(crate) fn check_may_act(subject: &VerifiedSubject, actor: &Actor) -> Result<(), String> {
    let Some(may_act) = subject.claims.get("may_act") else { return Ok(()) };
    let mismatch = || "the subject's may_act does not name this actor".to_owned();
    let sub = actor.act.get("sub").and_then(Value::as_str);
    if sub.is_none() || may_act.get("sub").and_then(Value::as_str) != sub {
        return Err(mismatch());
    }
    match may_act.get("iss") {
        None => Ok(()),
        Some(Value::String(iss)) if *iss == actor.issuer => Ok(()),
        Some(_) => Err(mismatch()),
    }
}

/// Verifies an actor token: a session token of this exchange (`access_token`, or `jwt`
/// whose `iss` is this exchange) of this very subject, or an ID token of a trusted issuer
/// (`id_token`, or any other `jwt`). The subject's `may_act` is checked by the caller,
/// once the actor can be named in the audit line.
pub(crate) async fn resolve(
    sts: &Sts,
    token: &str,
    token_type: &str,
    subject: &VerifiedSubject,
) -> Result<Actor, Refusal> {
    let ours = match token_type {
        ACCESS_TOKEN_TYPE => true,
        ID_TOKEN_TYPE => false,
        _ => claimed_issuer(token).as_deref() == Some(sts.config.issuer.as_str()),
    };
    let actor = if ours {
        let own =
            crate::own_tokens::verify(sts, token, true).map_err(|e| invalid_request(format!("actor token: {e}")))?;
        let actor = session_actor(&own, &sts.config.issuer, subject).map_err(invalid_request)?;
        match crate::own_tokens::revoked_lineage(sts, &own.claims).await {
            Ok(false) => {}
            Ok(true) => return Err(invalid_request("actor token: the session has been revoked")),
            Err(_) => {
                return Err(Refusal {
                    code: OAuthError::TemporarilyUnavailable,
                    reason: "cannot check whether the session was revoked".into(),
                });
            }
        }
        let unix_now = time::OffsetDateTime::now_utc().unix_timestamp();
        match sts.lasting.sessions.used(&own.jti, own.expires_at, std::time::Instant::now(), unix_now) {
            Ok(Ok(())) => {}
            Ok(Err(idle)) => return Err(end_idle(sts, &own, subject, idle).await),
            Err(reason) => return Err(Refusal { code: OAuthError::TemporarilyUnavailable, reason }),
        }
        actor
    } else {
        let verified = sts.verifier.verify(token).await.map_err(|r| invalid_request(actor_words(&r.0)))?;
        id_token_actor(&verified).map_err(invalid_request)?
    };
    Ok(actor)
}

/// Ends a session left idle: records its revocation (so what was minted through it dies
/// with it), writes the audit line and answers the refusal.
async fn end_idle(sts: &Sts, own: &OwnToken, subject: &VerifiedSubject, idle: std::time::Duration) -> Refusal {
    let idle = crate::sessions::display(idle);
    let reason = format!("actor token: the session ended after {idle} idle");
    let stored = sts.revoke(&own.jti, own.expires_at).await;
    if stored.is_ok() {
        // Revoked: a session left in the store only lingers until its expiry.
        let _ = sts.lasting.sessions.forget(&own.jti);
    }
    let store_reason = stored.as_ref().err().map(|e| format!("{reason}; recording its revocation failed: {e}"));
    sts.lasting
        .audit
        .record(&Line {
            time: now_rfc3339(),
            outcome: "session-idle-ended",
            reason: Some(store_reason.as_deref().unwrap_or(&reason)),
            issuer: Some(&subject.issuer),
            subject: Some(&subject.subject),
            act: own.claims.get("act"),
            jti: Some(&own.jti),
            sid: Some(&own.jti),
            ..Line::default()
        })
        .await;
    crate::github_app::end_session(sts, &own.jti).await;
    invalid_request(reason)
}

/// The unverified `iss` of a JWT, only to choose how to verify it.
fn claimed_issuer(token: &str) -> Option<String> {
    let payload = crate::verify::decode_part(token.split('.').nth(1)?)?;
    payload.get("iss")?.as_str().map(str::to_owned)
}

/// A subject token verifier's reason, said of the actor token.
fn actor_words(reason: &str) -> String {
    match reason.strip_prefix("subject token") {
        Some(rest) => format!("actor token{rest}"),
        None => format!("actor token: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn subject(sub: &str, claims: Value) -> VerifiedSubject {
        let mut claims: Map<String, Value> = claims.as_object().cloned().unwrap_or_default();
        claims.insert("sub".into(), sub.into());
        VerifiedSubject { issuer: "https://ci.example".into(), subject: sub.into(), claims }
    }

    fn agent(name: &str) -> Actor {
        Actor {
            act: json!({"sub": format!("agent:{name}"), "declared": true}),
            issuer: "https://sts.example".into(),
            sid: None,
            until: None,
        }
    }

    #[test]
    fn a_declared_agent_needs_a_name_and_clean_fields() {
        let entry = declared_agent(Some(&json!({"agent": "claude", "session": "s1", "host": "laptop"}))).unwrap();
        assert_eq!(entry, json!({"sub": "agent:claude", "declared": true, "session": "s1", "host": "laptop"}));
        assert_eq!(
            declared_agent(Some(&json!({"agent": "claude"}))).unwrap(),
            json!({"sub": "agent:claude", "declared": true})
        );
        for intent in [None, Some(json!({"session": "s1"})), Some(json!({"agent": null}))] {
            assert_eq!(
                declared_agent(intent.as_ref()).unwrap_err(),
                "a session names its agent (`agent` in the intent)"
            );
        }
        let long = "a".repeat(129);
        for (field, bad) in [
            ("agent", json!("two words")),
            ("agent", json!("")),
            ("agent", json!(long)),
            ("agent", json!(7)),
            ("session", json!("s\n1")),
            ("host", json!("lapté")),
            ("host", json!("a\u{7f}")),
        ] {
            let mut intent = json!({"agent": "claude"});
            intent[field] = bad.clone();
            let error = declared_agent(Some(&intent)).unwrap_err();
            assert!(error.starts_with(&format!("intent `{field}` must be")), "{bad}: {error}");
        }
        assert!(declared_agent(Some(&json!({"agent": "a".repeat(128)}))).is_ok());
    }

    #[test]
    fn an_id_token_actor_nests_its_own_act_and_the_chain_is_capped() {
        let plain = subject("bot", json!({}));
        let actor = id_token_actor(&plain).unwrap();
        assert_eq!(actor.act, json!({"sub": "bot", "iss": "https://ci.example"}));
        assert_eq!((actor.issuer.as_str(), actor.sid.as_deref()), ("https://ci.example", None));

        let relayed = subject("bot", json!({"act": {"sub": "agent:claude", "declared": true}}));
        let actor = id_token_actor(&relayed).unwrap();
        assert_eq!(
            actor.act,
            json!({"sub": "bot", "iss": "https://ci.example", "act": {"sub": "agent:claude", "declared": true}}),
            "the current actor is outermost (RFC 8693 4.1)"
        );
        assert_eq!(chain_depth(&actor.act), Ok(2));

        let chain = |n: usize| {
            (0..n).fold(Value::Null, |inner, i| {
                let mut entry = json!({"sub": format!("a{i}")});
                if !inner.is_null() {
                    entry["act"] = inner;
                }
                entry
            })
        };
        assert_eq!(chain_depth(&chain(4)), Ok(4));
        assert!(id_token_actor(&subject("bot", json!({"act": chain(3)}))).is_ok(), "four deep is allowed");
        let error = id_token_actor(&subject("bot", json!({"act": chain(4)}))).unwrap_err();
        assert_eq!(error, "actor token: the actor chain is deeper than 4");
        for bad in [json!("agent"), json!({"iss": "x"}), json!({"sub": 1})] {
            assert!(id_token_actor(&subject("bot", json!({"act": bad}))).is_err(), "{bad}");
        }
    }

    #[test]
    fn may_act_must_name_the_actor_when_present() {
        let claude = agent("claude");
        assert!(check_may_act(&subject("s", json!({})), &claude).is_ok(), "absent: the policy decides");
        for may_act in [json!({"sub": "agent:claude"}), json!({"sub": "agent:claude", "iss": "https://sts.example"})] {
            assert!(check_may_act(&subject("s", json!({"may_act": may_act})), &claude).is_ok(), "{may_act}");
        }
        for may_act in [
            json!({"sub": "agent:codex"}),
            json!({"sub": "agent:claude", "iss": "https://other.example"}),
            json!({"iss": "https://sts.example"}),
            json!("agent:claude"),
            json!({"sub": "agent:claude", "iss": 5}),
        ] {
            assert_eq!(
                check_may_act(&subject("s", json!({"may_act": may_act})), &claude).unwrap_err(),
                "the subject's may_act does not name this actor",
                "{may_act}"
            );
        }
    }

    /// An exchange that keeps its revocations in memory and its audit log in a temp dir.
    fn sts() -> (Sts, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::Config::parse(&format!(
            "issuer = \"https://sts.example\"\naudit_log = \"{}\"\n",
            dir.path().join("audit.jsonl").display()
        ))
        .unwrap();
        (Sts::new(config, None).unwrap(), dir)
    }

    /// A session token of this exchange, with `changes` applied to its claims.
    fn session_token(sts: &Sts, changes: Value) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut claims = json!({
            "iss": sts.config.issuer, "sub": "repo:org/app", "subject_issuer": "https://ci.example",
            "aud": sts.config.issuer, "scope": "session", "iat": now, "nbf": now, "exp": now + 600,
            "jti": crate::server::random_id(),
            "act": {"sub": "agent:claude", "declared": true, "session": "s1"},
        });
        for (k, v) in changes.as_object().unwrap() {
            claims[k] = v.clone();
        }
        sts.keys.active().sign(Some("at+jwt"), &claims).unwrap()
    }

    async fn reason(sts: &Sts, token: &str, token_type: &str, subject: &VerifiedSubject) -> String {
        resolve(sts, token, token_type, subject).await.map(|a| format!("{a:?}")).unwrap_or_else(|r| r.reason)
    }

    #[tokio::test]
    async fn a_session_token_acts_only_for_its_own_live_subject() {
        let (sts, _dir) = sts();
        let owner = subject("repo:org/app", json!({}));
        let token = session_token(&sts, json!({}));
        for token_type in [ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE] {
            let actor = resolve(&sts, &token, token_type, &owner).await.unwrap();
            assert_eq!(actor.act, json!({"sub": "agent:claude", "declared": true, "session": "s1"}));
            assert_eq!(actor.issuer, "https://sts.example");
            let own = crate::own_tokens::verify(&sts, &token, true).unwrap();
            assert_eq!(actor.sid.as_deref(), Some(own.jti.as_str()));
            assert_eq!(actor.until, Some(own.expires_at));
        }

        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let cases = [
            (json!({"sub": "repo:org/other"}), "actor token: the session belongs to another subject"),
            (json!({"subject_issuer": "https://other.example"}), "actor token: the session belongs to another subject"),
            (
                json!({"aud": "https://git.example"}),
                "actor token: not a session token (its audience is not this exchange)",
            ),
            (json!({"scope": "repo:org/app:write"}), "actor token: not a session token (its scope is not `session`)"),
            (json!({"exp": now - 5}), "actor token: token has expired"),
            (json!({"act": null}), "actor token: an `act` entry is not an object"),
        ];
        for (changes, expected) in cases {
            let token = session_token(&sts, changes.clone());
            assert_eq!(reason(&sts, &token, ACCESS_TOKEN_TYPE, &owner).await, expected, "{changes}");
        }
        let stranger = foreign_token(&sts);
        assert_eq!(
            reason(&sts, &stranger, ACCESS_TOKEN_TYPE, &owner).await,
            "actor token: not a token signed by this exchange"
        );

        let own = crate::own_tokens::verify(&sts, &token, true).unwrap();
        sts.revoke(&own.jti, own.expires_at).await.unwrap();
        assert_eq!(reason(&sts, &token, ACCESS_TOKEN_TYPE, &owner).await, "actor token: the session has been revoked");
    }

    #[tokio::test]
    async fn may_act_is_checked_against_a_session_agent() {
        let (sts, _dir) = sts();
        let token = session_token(&sts, json!({}));
        let wants_codex = subject("repo:org/app", json!({"may_act": {"sub": "agent:codex"}}));
        let actor = resolve(&sts, &token, ACCESS_TOKEN_TYPE, &wants_codex).await.unwrap();
        assert_eq!(check_may_act(&wants_codex, &actor).unwrap_err(), "the subject's may_act does not name this actor");
        let wants_claude =
            subject("repo:org/app", json!({"may_act": {"sub": "agent:claude", "iss": "https://sts.example"}}));
        let actor = resolve(&sts, &token, ACCESS_TOKEN_TYPE, &wants_claude).await.unwrap();
        assert!(check_may_act(&wants_claude, &actor).is_ok());
    }

    #[tokio::test]
    async fn an_id_token_of_an_untrusted_issuer_is_refused_as_the_actor() {
        let (sts, _dir) = sts();
        let owner = subject("repo:org/app", json!({}));
        let token = foreign_token(&sts);
        assert_eq!(
            reason(&sts, &token, ID_TOKEN_TYPE, &owner).await,
            "actor token issuer `https://sts.example` is not trusted"
        );
        assert_eq!(reason(&sts, "garbage", ID_TOKEN_TYPE, &owner).await, "actor token is not a signed JWT");
    }

    /// A session-shaped token signed by a key that is not the exchange's.
    fn foreign_token(sts: &Sts) -> String {
        let stranger = crate::SigningKey::generate(crate::Algorithm::Es256).unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = json!({"iss": sts.config.issuer, "sub": "repo:org/app", "aud": sts.config.issuer,
                            "scope": "session", "exp": now + 60, "jti": "j", "subject_issuer": "https://ci.example"});
        stranger.sign(Some("at+jwt"), &claims).unwrap()
    }
}
