//! `mayfly-sts policy check` and `mayfly-sts policy test FILE`: the checks a policy
//! repository runs in its own CI, with the same decision code the exchange runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::OAuthError;
use crate::cedar::{Handle, Sources};
use crate::config::Config;
use crate::policy::{Acting, Denial, ExchangeAsk, Grant, Policy, Rules, Staged};
use crate::verify::VerifiedSubject;

/// Validates the config's policies against the schema: a line to print, or the error.
pub fn check(config: &Config) -> Result<String, String> {
    let handle = crate::server::policy_handle(config)?;
    let policies = handle.map_or(0, |h| h.current().len());
    Ok(format!(
        "ok: {} rules, {policies} Cedar policies valid against the {} schema",
        config.rules.len(),
        config.schema.as_ref().map_or("built-in".to_owned(), |s| format!("`{}`", s.display()))
    ))
}

/// A test file: the policies under test (unless a config names them) and the cases.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    /// Policy files or directories, relative to the test file.
    #[serde(default)]
    policies: Vec<PathBuf>,
    /// A schema replacing the built-in one, relative to the test file.
    schema: Option<PathBuf>,
    #[serde(default, rename = "case")]
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    issuer: String,
    subject: String,
    #[serde(default)]
    claims: BTreeMap<String, Value>,
    audience: String,
    scope: String,
    ttl: Option<String>,
    intent: Option<Value>,
    /// Who acts for the subject: the `act` claim a token would carry (`sub`, and `iss`,
    /// `declared`, `session`, `host`, a nested `act` as the exchange writes them).
    actor: Option<Value>,
    /// Who vouches for the actor: by default its `iss`, else this exchange (a declared agent).
    actor_issuer: Option<String>,
    expect: Expect,
    /// The policies expected to determine the decision (permits, or the forbids).
    policies: Option<Vec<String>>,
    /// The rule expected to grant.
    rule: Option<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Allow,
    Deny,
    /// Granted once a person of the group an `@approval` forbid names approves it.
    Approval,
}

/// The outcome of a test file: the table to print and whether every case passed.
pub struct Report {
    /// One line per case, with a header.
    pub table: String,
    /// Cases whose outcome differed from the expectation.
    pub failed: usize,
}

/// Runs every case of a test file through the same decision as the exchange: the rules
/// (with `config`) and the Cedar policies (the config's, or those the file names).
pub fn test(file: &Path, config: Option<&Config>) -> Result<Report, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read `{}`: {e}", file.display()))?;
    let tests: TestFile = toml::from_str(&text).map_err(|e| format!("`{}`: {e}", file.display()))?;
    let base = file.parent().unwrap_or(Path::new("."));
    let cedar = if tests.policies.is_empty() {
        config.map(crate::server::policy_handle).transpose()?.flatten()
    } else {
        let sources = Sources {
            policies: tests.policies.iter().map(|p| base.join(p)).collect(),
            schema: tests.schema.as_ref().map(|s| base.join(s)),
            approval_groups: config.map(|c| c.approvers.iter().map(|a| a.name.clone()).collect()),
        };
        Some(std::sync::Arc::new(Handle::load(sources)?))
    };
    let (rules, default_ttl, max_ttl) = match config {
        Some(c) => (c.rules.clone(), c.default_ttl, c.max_ttl),
        None => (Vec::new(), Duration::from_secs(600), Duration::from_secs(3600)),
    };
    let staged = Staged {
        rules: Rules { rules, default_ttl },
        max_ttl,
        cedar,
        people: config.map(crate::server::people).unwrap_or_default(),
    };
    let mut rows = vec![["", "case", "expected", "got", "decided by", "reason"].map(str::to_owned)];
    let mut failed = 0;
    for case in &tests.cases {
        let mut claims: serde_json::Map<String, Value> = case.claims.clone().into_iter().collect();
        claims.entry("iss").or_insert_with(|| Value::String(case.issuer.clone()));
        claims.entry("sub").or_insert_with(|| Value::String(case.subject.clone()));
        let subject = VerifiedSubject { issuer: case.issuer.clone(), subject: case.subject.clone(), claims };
        let ttl = case
            .ttl
            .as_deref()
            .map(mayfly_core::parse_duration)
            .transpose()
            .map_err(|e| format!("case `{}`: ttl: {e}", case.name))?;
        let intent = case.intent.as_ref().map(mayfly_core::shape::scrub_intent);
        let actor = actor(case, config)?;
        let outcome: Result<Grant, Denial> = mayfly_core::scope::parse_requested(&case.scope)
            .map_err(|e| e.to_string())
            .and_then(|scopes| match &actor {
                // As the exchange does before any policy: the subject's `may_act` must name the actor.
                Some(actor) => crate::delegation::check_may_act(&subject, actor).map(|()| scopes),
                None => Ok(scopes),
            })
            .and_then(|scopes| match scopes.iter().find(|s| !staged.grants_shape(s)) {
                Some(s) => Err(format!("scope `{s}` is of a shape no rule or policy grants")),
                None => Ok(scopes.into_iter().map(str::to_owned).collect::<Vec<_>>()),
            })
            .map_err(|reason| Denial { code: OAuthError::InvalidScope, reason, policies: Vec::new() })
            .and_then(|scopes| {
                let ask = ExchangeAsk {
                    subject: &subject,
                    audience: &case.audience,
                    scopes: &scopes,
                    ttl,
                    intent: intent.as_ref(),
                    actor: actor.as_ref().map(|a| Acting { act: &a.act, issuer: &a.issuer }),
                    approval: crate::policy::ApprovalState::None,
                };
                staged.decide(&ask)
            });
        let (got, decided_by, determining, rule, reason) = match outcome {
            Ok(grant) => {
                let by: Vec<String> = (!grant.rule.is_empty())
                    .then(|| format!("rule `{}`", grant.rule))
                    .into_iter()
                    .chain(grant.policies.iter().map(|p| format!("policy `{p}`")))
                    .collect();
                match grant.approval {
                    Some(need) => {
                        let by = need.policies.iter().map(|p| format!("policy `{p}`")).collect::<Vec<_>>().join(", ");
                        let reason = format!("{} by `{}`", need.description, need.group);
                        (Expect::Approval, by, need.policies, Some(grant.rule), reason)
                    }
                    None => (Expect::Allow, by.join(", "), grant.policies, Some(grant.rule), String::new()),
                }
            }
            Err(denial) => {
                let by = if denial.policies.is_empty() {
                    "no rule or permit".to_owned()
                } else {
                    denial.policies.iter().map(|p| format!("policy `{p}`")).collect::<Vec<_>>().join(", ")
                };
                (Expect::Deny, by, denial.policies, None, denial.reason)
            }
        };
        let mut ok = got == case.expect;
        if let Some(expected) = &case.policies {
            ok &= {
                let (mut a, mut b) = (expected.clone(), determining.clone());
                a.sort();
                b.sort();
                a == b
            };
        }
        if let Some(expected) = &case.rule {
            ok &= rule.as_deref() == Some(expected.as_str());
        }
        if !ok {
            failed += 1;
        }
        let word = |e: Expect| {
            match e {
                Expect::Allow => "allow",
                Expect::Deny => "deny",
                Expect::Approval => "approval",
            }
            .to_owned()
        };
        rows.push([
            if ok { "ok" } else { "FAIL" }.to_owned(),
            case.name.clone(),
            word(case.expect),
            word(got),
            decided_by,
            reason,
        ]);
    }
    Ok(Report { table: table(&rows), failed })
}

/// The case's actor, checked as the exchange checks an `act` chain.
fn actor(case: &Case, config: Option<&Config>) -> Result<Option<crate::delegation::Actor>, String> {
    let Some(act) = &case.actor else {
        return match case.actor_issuer {
            Some(_) => Err(format!("case `{}`: `actor_issuer` without an `actor`", case.name)),
            None => Ok(None),
        };
    };
    crate::delegation::chain_depth(act).map_err(|e| format!("case `{}`: actor: {e}", case.name))?;
    let issuer = case
        .actor_issuer
        .clone()
        .or_else(|| act.get("iss").and_then(Value::as_str).map(str::to_owned))
        .or_else(|| config.map(|c| c.issuer.clone()))
        .unwrap_or_else(|| "mayfly-sts".to_owned());
    Ok(Some(crate::delegation::Actor { act: act.clone(), issuer, sid: None, until: None }))
}

fn table(rows: &[[String; 6]]) -> String {
    let mut widths = [0usize; 6];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (c, w))| if i == 5 { c.clone() } else { format!("{c:<w$}") })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
