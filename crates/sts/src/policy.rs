//! The decision: may this workload have this audience and these scopes, for how long?
//!
//! Behind one trait, so policy as code (Cedar), approvals and revocation checks slot in
//! without touching the server.

use std::collections::BTreeMap;
use std::time::Duration;

use mayfly_core::pattern::{Kind, matches};

use crate::OAuthError;
use serde_json::{Map, Value};

use crate::verify::VerifiedSubject;

/// What the workload asks for.
#[derive(Clone, Copy, Debug)]
pub struct ExchangeAsk<'a> {
    /// The verified subject token.
    pub subject: &'a VerifiedSubject,
    /// The audience asked for.
    pub audience: &'a str,
    /// The scopes asked for.
    pub scopes: &'a [String],
    /// The lifetime asked for, if any.
    pub ttl: Option<Duration>,
    /// The intent the client sent (command, tool, operation), if any.
    pub intent: Option<&'a Value>,
    /// Who acts for the subject, when the request carried an actor token (or opens a
    /// session naming its agent). Rules ignore it; Cedar sees it as `context.actor`.
    pub actor: Option<Acting<'a>>,
    /// Whether a person approved the request; Cedar sees it as `context.approval`.
    pub approval: ApprovalState<'a>,
}

/// The approval state of a request, as `context.approval` shows it to policies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ApprovalState<'a> {
    /// No one approved it (`state == "none"`).
    #[default]
    None,
    /// A person approved it (`state == "approved"`); `approver` is their `ISSUER#SUBJECT`,
    /// `None` when the exchange asks whether an approval would let the request through.
    Approved {
        /// Who approved it.
        approver: Option<&'a str>,
    },
}

/// What a grant still waits for: a person of `group` to approve it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalNeed {
    /// The approver group the `@approval("...")` forbids name.
    pub group: String,
    /// The forbids that hold the request back.
    pub policies: Vec<String>,
    /// What needs approval, for the client: `write on HOST/PATH needs approval (policy ID)`.
    pub description: String,
    /// The operation held back (`write`), for announcements.
    pub operation: String,
    /// What it is on (`HOST/PATH`), for announcements.
    pub target: String,
}

/// A scope an `@approval` forbid holds back.
struct Held {
    group: String,
    policy: String,
    /// `write on HOST/PATH`.
    asked: String,
    operation: String,
    target: String,
}

/// Who acts for the subject (RFC 8693 delegation), as a policy sees it.
#[derive(Clone, Copy, Debug)]
pub struct Acting<'a> {
    /// The `act` claim the token would carry: the current actor outermost, the chain that
    /// reached it nested inside.
    pub act: &'a Value,
    /// Who vouches for the current actor: its ID token's issuer, or this exchange for an
    /// agent a session declared.
    pub issuer: &'a str,
}

/// A yes.
#[derive(Debug, PartialEq, Eq)]
pub struct Grant {
    /// Scopes granted (all of those asked).
    pub scopes: Vec<String>,
    /// Lifetime granted.
    pub ttl: Duration,
    /// Which rule allowed it (empty when Cedar policies alone did).
    pub rule: String,
    /// The Cedar policies that permitted it, for the audit line.
    pub policies: Vec<String>,
    /// Set when the grant holds only once a person approves it: an `@approval` forbid
    /// applies now and the request passes when re-evaluated as approved.
    pub approval: Option<ApprovalNeed>,
}

/// A no, with its RFC 6749 / RFC 8693 error code.
#[derive(Debug, PartialEq, Eq)]
pub struct Denial {
    /// `invalid_request`, `invalid_target` or `invalid_scope`.
    pub code: OAuthError,
    /// Why, for the client and the audit log.
    pub reason: String,
    /// The Cedar policies that forbade it, for the audit line.
    pub policies: Vec<String>,
}

/// Decides one exchange.
pub trait Policy: Send + Sync {
    /// Grants or denies.
    fn decide(&self, ask: &ExchangeAsk<'_>) -> Result<Grant, Denial>;

    /// True when this policy could ever grant a scope of this shape; checked for every
    /// requested scope before the subject token is verified or any rule evaluated.
    fn grants_shape(&self, _scope: &str) -> bool {
        true
    }

    /// Whether the subject may open a session: a token for this exchange alone, which
    /// grants nothing by itself, so no rule is needed and only an explicit forbid refuses
    /// it. `Ok` carries the policies that permitted it, for the audit line.
    fn decide_session(&self, _ask: &ExchangeAsk<'_>) -> Result<Vec<String>, Denial> {
        Ok(Vec::new())
    }
}

/// One allow rule: issuer + claim matchers -> allowed audiences, scopes, max lifetime.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Name for audit lines.
    pub name: String,
    /// Exact subject token issuer.
    pub issuer: String,
    /// Claim name -> pattern (`*` matches within one `:`-separated part).
    pub claims: BTreeMap<String, String>,
    /// Audience patterns (`*` matches within one DNS label or one path segment).
    pub audiences: Vec<String>,
    /// Scope patterns; `{claim}` is replaced by the subject's claim, and `*` matches
    /// within one `:`-separated part.
    pub scopes: Vec<String>,
    /// Longest lifetime this rule grants.
    pub max_ttl: Duration,
}

/// Allow rules evaluated in order: the first rule that allows everything asked wins.
pub struct Rules {
    /// The rules.
    pub rules: Vec<Rule>,
    /// Lifetime when none was asked.
    pub default_ttl: Duration,
}

impl Policy for Rules {
    fn decide(&self, ask: &ExchangeAsk<'_>) -> Result<Grant, Denial> {
        let subject = ask.subject;
        if ask.scopes.is_empty() {
            return Err(Denial {
                code: OAuthError::InvalidScope,
                reason: "a scope is required".into(),
                policies: Vec::new(),
            });
        }
        let matching: Vec<&Rule> = self
            .rules
            .iter()
            .filter(|r| {
                r.issuer == subject.issuer
                    && r.claims
                        .iter()
                        .all(|(k, p)| claim_str(&subject.claims, k).is_some_and(|v| matches(Kind::Claim, p, &v)))
            })
            .collect();
        if matching.is_empty() {
            return Err(Denial {
                code: OAuthError::InvalidRequest,
                reason: format!("no rule allows subject `{}` of `{}`", subject.subject, subject.issuer),
                policies: Vec::new(),
            });
        }
        let for_audience: Vec<&Rule> = matching
            .into_iter()
            .filter(|r| r.audiences.iter().any(|p| matches(Kind::Audience, p, ask.audience)))
            .collect();
        if for_audience.is_empty() {
            return Err(Denial {
                code: OAuthError::InvalidTarget,
                reason: format!("audience `{}` is not allowed for subject `{}`", ask.audience, subject.subject),
                policies: Vec::new(),
            });
        }
        let allowed = |rule: &Rule, scope: &str| {
            rule.scopes.iter().any(|p| expand(p, &subject.claims).is_some_and(|p| matches(Kind::Scope, &p, scope)))
        };
        let Some(rule) = for_audience.iter().find(|r| ask.scopes.iter().all(|s| allowed(r, s))) else {
            let refused =
                ask.scopes.iter().find(|s| !for_audience.iter().any(|r| allowed(r, s))).cloned().unwrap_or_default();
            let reason = if refused.is_empty() {
                "no single rule allows all the scopes asked for".to_owned()
            } else {
                format!("scope `{refused}` is not allowed for subject `{}`", subject.subject)
            };
            return Err(Denial { code: OAuthError::InvalidScope, reason, policies: Vec::new() });
        };
        let ttl = ask.ttl.unwrap_or(self.default_ttl).min(rule.max_ttl);
        Ok(Grant { scopes: ask.scopes.to_vec(), ttl, rule: rule.name.clone(), policies: Vec::new(), approval: None })
    }

    /// The same kind (the part before the first `:`) and number of `:`-separated parts
    /// as one of the rules' scope patterns.
    fn grants_shape(&self, scope: &str) -> bool {
        let kind = scope.split(':').next().unwrap_or_default();
        let parts = scope.split(':').count();
        self.rules.iter().flat_map(|r| &r.scopes).any(|pattern| {
            let pattern_kind = pattern.split(':').next().unwrap_or_default();
            pattern.split(':').count() == parts && matches(Kind::Scope, pattern_kind, kind)
        })
    }
}

/// Rules first, then Cedar: the decision `mayfly-sts` makes when policies are configured.
///
/// A request is granted when a rule grants all of it (exactly as without policies) **or**
/// a Cedar permit applies to every scope asked, and in both cases no Cedar forbid applies
/// to any scope asked. So adding policies can only take away from what rules grant,
/// except through an explicit `permit`; and a forbid always wins.
pub struct Staged {
    /// The `[[rules]]`.
    pub rules: Rules,
    /// Upper bound on a lifetime granted by policies alone.
    pub max_ttl: Duration,
    /// The Cedar policies in force; `None` when none are configured.
    pub cedar: Option<std::sync::Arc<crate::cedar::Handle>>,
    /// Issuers whose subjects are people (`Person`); all others are `Workload`.
    pub people: Vec<String>,
}

impl Policy for Staged {
    fn decide(&self, ask: &ExchangeAsk<'_>) -> Result<Grant, Denial> {
        let by_rule = self.rules.decide(ask);
        let Some(cedar) = &self.cedar else {
            return by_rule;
        };
        if ask.scopes.is_empty() {
            return by_rule;
        }
        let original = ask;
        let policies = cedar.current();
        // Policies see the lifetime that would be granted before any rule's cap.
        let ttl = ask.ttl.unwrap_or(self.rules.default_ttl).min(self.max_ttl);
        let ask = ExchangeAsk { ttl: Some(ttl), ..*ask };
        let principal_type = if self.people.contains(&ask.subject.issuer) { "Person" } else { "Workload" };
        let mut permits = Vec::new();
        let mut unpermitted = None;
        let mut held: Vec<Held> = Vec::new();
        let scopes = policies.scopes(&ask, principal_type);
        for scope in ask.scopes {
            let decision = scopes.decide(scope, true).map_err(|reason| Denial {
                code: OAuthError::InvalidScope,
                reason,
                policies: Vec::new(),
            })?;
            if !decision.forbids.is_empty() {
                return Err(Denial {
                    code: OAuthError::InvalidScope,
                    reason: format!("scope `{scope}` is refused: {}", decision.forbid_reasons.join("; ")),
                    policies: decision.forbids,
                });
            }
            if !decision.approvals.is_empty() {
                held.extend(decision.approvals.into_iter().map(|(policy, group)| Held {
                    group,
                    policy,
                    asked: decision.asked.clone(),
                    operation: decision.operation.clone(),
                    target: decision.target.clone(),
                }));
                continue;
            }
            if decision.permits.is_empty() && unpermitted.is_none() {
                unpermitted = Some((scope, decision.described));
            }
            for id in decision.permits {
                if !permits.contains(&id) {
                    permits.push(id);
                }
            }
        }
        if let Some(Held { policy: id, .. }) = held.first() {
            if matches!(ask.approval, ApprovalState::Approved { .. }) {
                return Err(Denial {
                    code: OAuthError::InvalidScope,
                    reason: format!(
                        "policy `{id}` still refuses the approved request; its `unless` must accept `context.approval.state == \"approved\"`"
                    ),
                    policies: held.iter().map(|h| h.policy.clone()).collect(),
                });
            }
            return self.held_back(original, held);
        }
        match (by_rule, unpermitted) {
            (Ok(grant), _) => Ok(Grant { policies: permits, ..grant }),
            (Err(_), None) => {
                Ok(Grant { scopes: ask.scopes.to_vec(), ttl, rule: String::new(), policies: permits, approval: None })
            }
            (Err(denial), Some((scope, described))) => Err(Denial {
                reason: format!("{}, and no policy permits {described} for scope `{scope}`", denial.reason),
                ..denial
            }),
        }
    }

    fn decide_session(&self, ask: &ExchangeAsk<'_>) -> Result<Vec<String>, Denial> {
        let Some(cedar) = &self.cedar else {
            return Ok(Vec::new());
        };
        let principal_type = if self.people.contains(&ask.subject.issuer) { "Person" } else { "Workload" };
        let decision = cedar.current().decide_session(ask, principal_type).map_err(|reason| Denial {
            code: OAuthError::InvalidScope,
            reason,
            policies: Vec::new(),
        })?;
        // Opening a session cannot wait for a person: an `@approval` forbid refuses it.
        if let Some((id, group)) = decision.approvals.first()
            && decision.forbids.is_empty()
        {
            return Err(Denial {
                code: OAuthError::InvalidScope,
                reason: format!(
                    "scope `session` is refused: policy `{id}` asks for approval by `{group}`, and opening a session cannot wait for it"
                ),
                policies: decision.approvals.iter().map(|(id, _)| id.clone()).collect(),
            });
        }
        if decision.forbids.is_empty() {
            return Ok(decision.permits);
        }
        Err(Denial {
            code: OAuthError::InvalidScope,
            reason: format!("scope `session` is refused: {}", decision.forbid_reasons.join("; ")),
            policies: decision.forbids,
        })
    }

    /// A rule's shape, or with policies configured any scope that names a kind of
    /// resource the schema knows.
    fn grants_shape(&self, scope: &str) -> bool {
        self.rules.grants_shape(scope)
            || (self.cedar.is_some() && {
                let parts = scope.split(':').count();
                match scope.split(':').next().unwrap_or_default() {
                    "repo" | "crate" | "npm" | "pypi" => parts == 3,
                    "oci" => (3..=4).contains(&parts),
                    "cluster" | "registry" => (2..=3).contains(&parts),
                    _ => false,
                }
            })
    }
}

impl Staged {
    /// A request that `@approval` forbids hold back: granted on condition of approval when
    /// it would pass once approved, so no one is asked to approve what would be refused.
    fn held_back(&self, ask: &ExchangeAsk<'_>, held: Vec<Held>) -> Result<Grant, Denial> {
        let mut groups: Vec<&str> = held.iter().map(|h| h.group.as_str()).collect();
        groups.sort_unstable();
        groups.dedup();
        let mut policies: Vec<String> = held.iter().map(|h| h.policy.clone()).collect();
        policies.dedup();
        if groups.len() > 1 {
            return Err(Denial {
                code: OAuthError::InvalidScope,
                reason: format!(
                    "the scopes asked need approval by different groups ({}); ask for them in separate requests",
                    groups.join(", ")
                ),
                policies,
            });
        }
        let as_approved = ExchangeAsk { approval: ApprovalState::Approved { approver: None }, ..*ask };
        let grant = self.decide(&as_approved)?;
        let first = &held[0];
        let need = ApprovalNeed {
            group: first.group.clone(),
            policies,
            description: format!("{} needs approval (policy {})", first.asked, first.policy),
            operation: first.operation.clone(),
            target: first.target.clone(),
        };
        Ok(Grant { approval: Some(need), ..grant })
    }
}

/// A claim's value as a string (strings, numbers and booleans); `None` otherwise.
pub(crate) fn claim_str(claims: &Map<String, Value>, name: &str) -> Option<String> {
    match claims.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Replaces `{claim}` with the subject's claim; `None` if a claim is missing or could
/// change the pattern's grammar: claim values obey the same rule as the values a client
/// puts into a scope ([`mayfly_core::scope::check_path`]), so no `*`, `:`, braces or
/// whitespace.
fn expand(pattern: &str, claims: &Map<String, Value>) -> Option<String> {
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(start) = rest.find('{') {
        let end = start + rest[start..].find('}')?;
        out.push_str(&rest[..start]);
        let value = claim_str(claims, &rest[start + 1..end])?;
        mayfly_core::scope::check_path(&value).ok()?;
        out.push_str(&value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn subject() -> VerifiedSubject {
        let claims = json!({"iss": "https://issuer", "sub": "repo:org/app:ref:refs/heads/main", "repository": "org/app", "ref": "refs/heads/main"});
        VerifiedSubject {
            issuer: "https://issuer".into(),
            subject: "repo:org/app:ref:refs/heads/main".into(),
            claims: claims.as_object().unwrap().clone(),
        }
    }

    fn rules() -> Rules {
        Rules {
            rules: vec![
                Rule {
                    name: "main may push its own repo".into(),
                    issuer: "https://issuer".into(),
                    claims: [("ref".to_owned(), "refs/heads/main".to_owned())].into(),
                    audiences: vec!["https://git.example".into()],
                    scopes: vec!["repo:{repository}:*".into()],
                    max_ttl: Duration::from_secs(900),
                },
                Rule {
                    name: "anyone reads docs".into(),
                    issuer: "https://issuer".into(),
                    claims: BTreeMap::new(),
                    audiences: vec!["https://git.example".into()],
                    scopes: vec!["repo:org/docs:read".into()],
                    max_ttl: Duration::from_secs(300),
                },
            ],
            default_ttl: Duration::from_secs(600),
        }
    }

    fn ask<'a>(
        subject: &'a VerifiedSubject,
        audience: &'a str,
        scopes: &'a [String],
        ttl: Option<u64>,
    ) -> ExchangeAsk<'a> {
        ExchangeAsk {
            subject,
            audience,
            scopes,
            ttl: ttl.map(Duration::from_secs),
            intent: None,
            actor: None,
            approval: ApprovalState::None,
        }
    }

    #[test]
    fn grants_the_first_rule_that_allows_everything() {
        let s = subject();
        let scopes = vec!["repo:org/app:write".to_owned()];
        let grant = rules().decide(&ask(&s, "https://git.example", &scopes, Some(3600))).unwrap();
        assert_eq!(grant.rule, "main may push its own repo");
        assert_eq!(grant.ttl, Duration::from_secs(900));
        let scopes = vec!["repo:org/docs:read".to_owned()];
        let grant = rules().decide(&ask(&s, "https://git.example", &scopes, None)).unwrap();
        assert_eq!((grant.rule.as_str(), grant.ttl.as_secs()), ("anyone reads docs", 300));
    }

    #[test]
    fn denies_with_the_right_code() {
        let s = subject();
        let other_repo = vec!["repo:org/other:read".to_owned()];
        let denial = rules().decide(&ask(&s, "https://git.example", &other_repo, None)).unwrap_err();
        assert_eq!(denial.code, OAuthError::InvalidScope);
        assert!(denial.reason.contains("repo:org/other:read"));
        let docs_write = vec!["repo:org/docs:write".to_owned()];
        assert_eq!(
            rules().decide(&ask(&s, "https://git.example", &docs_write, None)).unwrap_err().code,
            OAuthError::InvalidScope
        );
        let ok = vec!["repo:org/app:read".to_owned()];
        assert_eq!(
            rules().decide(&ask(&s, "https://evil.example", &ok, None)).unwrap_err().code,
            OAuthError::InvalidTarget
        );
        assert_eq!(
            rules().decide(&ask(&s, "https://git.example", &[], None)).unwrap_err().code,
            OAuthError::InvalidScope
        );
        let mut stranger = subject();
        stranger.issuer = "https://other".into();
        assert_eq!(
            rules().decide(&ask(&stranger, "https://git.example", &ok, None)).unwrap_err().code,
            OAuthError::InvalidRequest
        );
    }

    #[test]
    fn claim_patterns_do_not_cross_colons() {
        let mut rules = rules();
        rules.rules[0].claims = [("sub".to_owned(), "repo:org/*".to_owned())].into();
        let scopes = vec!["repo:org/app:write".to_owned()];
        // `repo:org/*` must not reach across `:ref:...` into the rest of the subject.
        let denial = rules.decide(&ask(&subject(), "https://git.example", &scopes, None)).unwrap_err();
        assert_eq!(denial.code, OAuthError::InvalidScope);
        rules.rules[0].claims = [("sub".to_owned(), "repo:org/*:ref:refs/heads/*".to_owned())].into();
        assert!(rules.decide(&ask(&subject(), "https://git.example", &scopes, None)).is_ok());
    }

    #[test]
    fn audience_patterns_do_not_cross_slashes() {
        let mut rules = rules();
        rules.rules[0].audiences = vec!["https://*.example".into()];
        let scopes = vec!["repo:org/app:write".to_owned()];
        assert!(rules.decide(&ask(&subject(), "https://git.example", &scopes, None)).is_ok());
        for audience in ["https://evil.test/.example", "https://evil.test#.example", "https://a.b.example"] {
            let denial = rules.decide(&ask(&subject(), audience, &scopes, None)).unwrap_err();
            assert_eq!(denial.code, OAuthError::InvalidTarget, "{audience}");
        }
    }

    #[test]
    fn scope_shapes_come_from_the_rules() {
        let rules = rules();
        assert!(rules.grants_shape("repo:org/x:read"));
        assert!(!rules.grants_shape("repo:org/x:read:extra"));
        assert!(!rules.grants_shape("admin:all:read"));
    }

    #[test]
    fn claim_values_cannot_widen_a_scope_pattern() {
        let mut s = subject();
        s.claims.insert("repository".into(), json!("*"));
        let scopes = vec!["repo:org/app:read".to_owned()];
        assert_eq!(
            rules().decide(&ask(&s, "https://git.example", &scopes, None)).unwrap_err().code,
            OAuthError::InvalidScope
        );
    }
}
