//! `@approval("GROUP")` forbids: a request they hold back is granted on condition of a
//! person's approval, only when it would pass once approved; a forbid without the
//! annotation still refuses; an unknown group stops the load.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mayfly_sts::cedar::{Handle, Sources};
use mayfly_sts::{ApprovalState, ExchangeAsk, OAuthError, Policy, Rule, Rules, Staged, VerifiedSubject};
use serde_json::json;

const ISSUER: &str = "https://issuer";
const GIT: &str = "https://git.example";

const POLICIES: &str = r#"
@id("release")
@approval("release-managers")
forbid(principal, action == Action::"write", resource is GitRepository)
when { resource.path == "org/release" }
unless { context.approval.state == "approved" };

@id("hotfix")
@approval("security")
forbid(principal, action == Action::"write", resource is GitRepository)
when { resource.path == "org/hotfix" }
unless { context.approval.state == "approved" };

@id("frozen")
forbid(principal, action == Action::"write", resource is GitRepository)
when { resource.path == "org/frozen" }
unless { context.approval.state == "approved" };

@id("stubborn")
@approval("release-managers")
forbid(principal, action == Action::"write", resource is GitRepository)
when { resource.path == "org/stubborn" };

@id("only-alice")
@approval("release-managers")
forbid(principal, action == Action::"publish", resource is GitRepository)
when { resource.path == "org/release" }
unless { context.approval.state == "approved" && context.approval has approver && context.approval.approver == "https://issuer#user:alice" };
"#;

fn subject() -> VerifiedSubject {
    let claims = json!({"iss": ISSUER, "sub": "user:bob", "email": "bob@example.com"});
    VerifiedSubject { issuer: ISSUER.into(), subject: "user:bob".into(), claims: claims.as_object().unwrap().clone() }
}

fn sources(dir: &Path, groups: Option<&[&str]>) -> Sources {
    Sources {
        policies: vec![dir.to_owned()],
        schema: None,
        approval_groups: groups.map(|g| g.iter().map(|s| (*s).to_owned()).collect()),
    }
}

fn staged(dir: &Path) -> Staged {
    std::fs::write(dir.join("approval.cedar"), POLICIES).unwrap();
    let handle = Arc::new(Handle::load(sources(dir, Some(&["release-managers", "security"]))).unwrap());
    let rules = Rules {
        rules: vec![Rule {
            name: "org repositories".into(),
            issuer: ISSUER.into(),
            claims: Default::default(),
            audiences: vec![GIT.into()],
            scopes: vec!["repo:org/*:*".into()],
            max_ttl: Duration::from_secs(900),
        }],
        default_ttl: Duration::from_secs(600),
    };
    Staged { rules, max_ttl: Duration::from_secs(3600), cedar: Some(handle), people: vec![] }
}

fn ask<'a>(subject: &'a VerifiedSubject, scopes: &'a [String]) -> ExchangeAsk<'a> {
    ExchangeAsk { subject, audience: GIT, scopes, ttl: None, intent: None, actor: None, approval: ApprovalState::None }
}

fn scopes(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn an_approval_forbid_holds_the_request_for_its_group_and_the_approved_request_passes() {
    let dir = tempfile::tempdir().unwrap();
    let staged = staged(dir.path());
    let s = subject();
    let release = scopes(&["repo:org/release:write", "repo:org/release:read"]);
    let grant = staged.decide(&ask(&s, &release)).unwrap();
    let need = grant.approval.expect("held for approval");
    assert_eq!(need.group, "release-managers");
    assert_eq!(need.policies, ["release"]);
    assert_eq!(need.description, "write on git.example/org/release needs approval (policy release)");
    assert_eq!(grant.rule, "org repositories");
    let approved = ApprovalState::Approved { approver: Some("https://issuer#user:alice") };
    let grant = staged.decide(&ExchangeAsk { approval: approved, ..ask(&s, &release) }).unwrap();
    assert!(grant.approval.is_none());
    assert_eq!(grant.scopes, release);
    // What no @approval forbid touches is granted outright.
    assert!(staged.decide(&ask(&s, &scopes(&["repo:org/app:write"]))).unwrap().approval.is_none());
}

#[test]
fn a_forbid_without_approval_refuses_even_when_approved() {
    let dir = tempfile::tempdir().unwrap();
    let staged = staged(dir.path());
    let s = subject();
    let frozen = scopes(&["repo:org/frozen:write"]);
    let denial = staged.decide(&ask(&s, &frozen)).unwrap_err();
    assert_eq!((denial.code, denial.policies.as_slice()), (OAuthError::InvalidScope, &["frozen".to_owned()][..]));
    // A refused scope beside a held one refuses the whole request: no one is asked.
    let both = scopes(&["repo:org/frozen:write", "repo:org/release:write"]);
    assert_eq!(staged.decide(&ask(&s, &both)).unwrap_err().policies, ["frozen"]);
    let both = scopes(&["repo:org/release:write", "repo:org/frozen:write"]);
    assert_eq!(staged.decide(&ask(&s, &both)).unwrap_err().policies, ["frozen"]);
    // Nothing grants another org's repository: not sent for approval either.
    let outside = scopes(&["repo:other/release:write"]);
    assert!(staged.decide(&ask(&s, &outside)).is_err());
}

#[test]
fn a_request_that_approval_would_not_let_through_is_refused_now() {
    let dir = tempfile::tempdir().unwrap();
    let staged = staged(dir.path());
    let s = subject();
    let denial = staged.decide(&ask(&s, &scopes(&["repo:org/stubborn:write"]))).unwrap_err();
    assert!(denial.reason.contains("still refuses the approved request"), "{}", denial.reason);
    // Two groups at once: one approval cannot cover both.
    let two = scopes(&["repo:org/release:write", "repo:org/hotfix:write"]);
    let denial = staged.decide(&ask(&s, &two)).unwrap_err();
    assert!(denial.reason.contains("different groups (release-managers, security)"), "{}", denial.reason);
}

#[test]
fn policies_see_who_approved() {
    let dir = tempfile::tempdir().unwrap();
    let staged = staged(dir.path());
    let s = subject();
    let publish = scopes(&["repo:org/release:publish"]);
    // The hypothetical "approved by someone" pass names nobody: the request would not
    // pass by that alone, so nobody is asked.
    assert!(staged.decide(&ask(&s, &publish)).is_err());
    let by =
        |approver| ExchangeAsk { approval: ApprovalState::Approved { approver: Some(approver) }, ..ask(&s, &publish) };
    assert!(staged.decide(&by("https://issuer#user:alice")).is_ok());
    assert!(staged.decide(&by("https://issuer#user:carol")).is_err());
}

#[test]
fn opening_a_session_cannot_wait_for_approval() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("s.cedar"),
        "@id(\"sessions\") @approval(\"ops\") forbid(principal, action == Action::\"session\", resource) unless { context.approval.state == \"approved\" };",
    )
    .unwrap();
    let handle = Arc::new(Handle::load(sources(dir.path(), Some(&["ops"]))).unwrap());
    let staged = Staged {
        rules: Rules { rules: vec![], default_ttl: Duration::from_secs(600) },
        max_ttl: Duration::from_secs(3600),
        cedar: Some(handle),
        people: vec![],
    };
    let s = subject();
    let session = scopes(&["session"]);
    let ask = ExchangeAsk { audience: "https://sts.example", ..ask(&s, &session) };
    let denial = staged.decide_session(&ask).unwrap_err();
    assert!(denial.reason.contains("cannot wait for it"), "{}", denial.reason);
    assert_eq!(denial.policies, ["sessions"]);
}

#[test]
fn approval_annotations_are_checked_at_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("approval.cedar"), POLICIES).unwrap();
    let error = Handle::load(sources(dir.path(), Some(&["release-managers"]))).unwrap_err();
    assert!(error.contains("approver group `security` is not in [[approvers]]"), "{error}");
    assert!(error.contains("approval.cedar` line") && error.contains("`hotfix`"), "{error}");
    // Without a config (a policy test), only the annotation's shape is checked.
    assert!(Handle::load(sources(dir.path(), None)).is_ok());
    std::fs::write(
        dir.path().join("approval.cedar"),
        "@id(\"p\") @approval(\"release-managers\") permit(principal, action, resource);",
    )
    .unwrap();
    let error = Handle::load(sources(dir.path(), None)).unwrap_err();
    assert!(error.contains("`@approval` goes on a forbid"), "{error}");
    std::fs::write(
        dir.path().join("approval.cedar"),
        "@id(\"p\") @approval(\"\") forbid(principal, action, resource);",
    )
    .unwrap();
    assert!(Handle::load(sources(dir.path(), None)).unwrap_err().contains("names no group"));
}
