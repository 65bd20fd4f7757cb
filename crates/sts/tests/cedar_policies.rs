//! Cedar policies after the rules: validation at load, how the two stages combine,
//! reload, and the words a denied user reads.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mayfly_sts::cedar::{Handle, Sources};
use mayfly_sts::{Acting, ApprovalState, ExchangeAsk, OAuthError, Policy, Rule, Rules, Staged, VerifiedSubject};
use serde_json::json;

const ISSUER: &str = "https://issuer";
const GIT: &str = "https://git.example";

fn subject(git_ref: &str) -> VerifiedSubject {
    let claims = json!({"iss": ISSUER, "sub": "repo:org/app", "repository": "org/app", "ref": git_ref});
    VerifiedSubject {
        issuer: ISSUER.into(),
        subject: "repo:org/app".into(),
        claims: claims.as_object().unwrap().clone(),
    }
}

fn rules() -> Rules {
    Rules {
        rules: vec![Rule {
            name: "app pushes itself".into(),
            issuer: ISSUER.into(),
            claims: Default::default(),
            audiences: vec![GIT.into()],
            scopes: vec!["repo:{repository}:*".into()],
            max_ttl: Duration::from_secs(900),
        }],
        default_ttl: Duration::from_secs(600),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn staged(dir: &Path) -> (Staged, Arc<Handle>) {
    let handle = Arc::new(
        Handle::load(Sources { policies: vec![dir.to_owned()], schema: None, approval_groups: None }).unwrap(),
    );
    let staged =
        Staged { rules: rules(), max_ttl: Duration::from_secs(3600), cedar: Some(handle.clone()), people: vec![] };
    (staged, handle)
}

fn ask<'a>(subject: &'a VerifiedSubject, audience: &'a str, scopes: &'a [String]) -> ExchangeAsk<'a> {
    ExchangeAsk { subject, audience, scopes, ttl: None, intent: None, actor: None, approval: ApprovalState::None }
}

const NO_PUSH_TO_MAIN: &str = r#"
@id("no-push-from-main")
@reason("jobs on main may not push; push from a branch and open a pull request")
forbid(principal, action == Action::"write", resource is GitRepository)
when { principal.hasTag("ref") && principal.getTag("ref") == "refs/heads/main" };
"#;

const DOCS_WRITERS: &str = r#"
@id("docs-writers")
permit(principal is Workload, action in [Action::"read", Action::"write"], resource in Organisation::"git.example/org")
when { resource.path == "org/docs" && principal.hasTag("repository") && principal.getTag("repository") == "org/app" };
"#;

#[test]
fn a_forbid_wins_over_a_rule_grant_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "git.cedar", NO_PUSH_TO_MAIN);
    let (staged, _) = staged(dir.path());
    let write_app = vec!["repo:org/app:write".to_owned()];
    let main = subject("refs/heads/main");
    let denial = staged.decide(&ask(&main, GIT, &write_app)).unwrap_err();
    assert_eq!(denial.code, OAuthError::InvalidScope);
    assert_eq!(denial.policies, ["no-push-from-main"]);
    assert!(denial.reason.contains("repo:org/app:write"), "{}", denial.reason);
    assert!(denial.reason.contains("push from a branch and open a pull request"), "{}", denial.reason);
    // The rule still grants what no forbid touches, and names no policy.
    let branch = subject("refs/heads/fix");
    let grant = staged.decide(&ask(&branch, GIT, &write_app)).unwrap();
    assert_eq!((grant.rule.as_str(), grant.policies.len()), ("app pushes itself", 0));
    let read = vec!["repo:org/app:read".to_owned()];
    assert!(staged.decide(&ask(&main, GIT, &read)).is_ok());
}

#[test]
fn a_permit_grants_what_no_rule_does_for_its_host_only() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "docs.cedar", DOCS_WRITERS);
    let (staged, _) = staged(dir.path());
    let docs = vec!["repo:org/docs:write".to_owned()];
    let s = subject("refs/heads/fix");
    assert!(rules().decide(&ask(&s, GIT, &docs)).is_err(), "no rule grants it");
    let grant = staged.decide(&ask(&s, GIT, &docs)).unwrap();
    assert_eq!(grant.rule, "");
    assert_eq!(grant.policies, ["docs-writers"]);
    assert_eq!(grant.ttl, Duration::from_secs(600));
    // Another host's audience: the resource is on that host, which no policy names.
    let denial = staged.decide(&ask(&s, "https://other.example", &docs)).unwrap_err();
    assert!(
        denial.reason.contains("no policy permits `write` on GitRepository `other.example/org/docs`"),
        "{}",
        denial.reason
    );
    // Mixed: a scope neither a rule nor a permit grants refuses the request.
    let both = vec!["repo:org/docs:write".to_owned(), "repo:org/other:read".to_owned()];
    let denial = staged.decide(&ask(&s, GIT, &both)).unwrap_err();
    assert!(denial.reason.contains("repo:org/other:read"), "{}", denial.reason);
}

#[test]
fn without_policies_rules_decide_alone() {
    let staged = Staged { rules: rules(), max_ttl: Duration::from_secs(3600), cedar: None, people: vec![] };
    let s = subject("refs/heads/main");
    let app = vec!["repo:org/app:write".to_owned()];
    assert_eq!(staged.decide(&ask(&s, GIT, &app)), rules().decide(&ask(&s, GIT, &app)));
    let docs = vec!["repo:org/docs:write".to_owned()];
    assert_eq!(staged.decide(&ask(&s, GIT, &docs)), rules().decide(&ask(&s, GIT, &docs)));
    assert!(!staged.grants_shape("npm:x:read") && !staged.grants_shape("cluster:h"));
}

#[test]
fn invalid_policies_name_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.cedar", DOCS_WRITERS);
    // A misspelt attribute on line 4.
    write(
        dir.path(),
        "b.cedar",
        "// comment\n\n@id(\"typo\")\npermit(principal, action, resource) when { resource.pth == \"x\" };\n",
    );
    let error = Handle::load(Sources { policies: vec![dir.path().to_owned()], schema: None, approval_groups: None })
        .unwrap_err();
    assert!(error.contains("b.cedar` line 4"), "{error}");
    assert!(error.contains("typo") && error.contains("pth"), "{error}");
    // A syntax error.
    write(dir.path(), "b.cedar", "permit(principal, action, resource)\nwhen { true }\n");
    let error = Handle::load(Sources { policies: vec![dir.path().to_owned()], schema: None, approval_groups: None })
        .unwrap_err();
    assert!(error.contains("b.cedar` line"), "{error}");
    // An unknown action, and the same id twice.
    write(dir.path(), "b.cedar", "\npermit(principal, action == Action::\"delete\", resource);\n");
    let error = Handle::load(Sources { policies: vec![dir.path().to_owned()], schema: None, approval_groups: None })
        .unwrap_err();
    assert!(error.contains("b.cedar` line 2") && error.contains("delete"), "{error}");
    write(dir.path(), "b.cedar", DOCS_WRITERS);
    let error = Handle::load(Sources { policies: vec![dir.path().to_owned()], schema: None, approval_groups: None })
        .unwrap_err();
    assert!(error.contains("`docs-writers` is already used at"), "{error}");
}

#[test]
fn a_failed_reload_keeps_the_policies_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "git.cedar", NO_PUSH_TO_MAIN);
    let (staged, handle) = staged(dir.path());
    let write_app = vec!["repo:org/app:write".to_owned()];
    let main = subject("refs/heads/main");
    assert!(handle.reload_if_changed().is_none(), "nothing changed");
    std::fs::write(&file, "forbid(principal, action, resource) when { principal.nope };\n").unwrap();
    let error = handle.reload().unwrap_err();
    assert!(error.contains("keeping the 1 policies in force") && error.contains("git.cedar` line 1"), "{error}");
    assert_eq!(staged.decide(&ask(&main, GIT, &write_app)).unwrap_err().policies, ["no-push-from-main"]);
    // A good file replaces them.
    std::fs::write(&file, DOCS_WRITERS).unwrap();
    assert!(handle.reload().unwrap().contains("1 in force"));
    assert!(staged.decide(&ask(&main, GIT, &write_app)).is_ok());
}

#[test]
fn intent_and_time_reach_the_context() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "agents.cedar",
        r#"@id("agents-do-not-push")
@reason("an agent session may not push; ask a person to push")
forbid(principal, action == Action::"write", resource)
when { context.claimed_intent has agent || (context.claimed_intent has command && context.claimed_intent.command like "*--force*") };
@id("short-tokens")
forbid(principal, action, resource) when { context.ttl > 1200 && context.now > 0 };
"#,
    );
    let (staged, _) = staged(dir.path());
    let s = subject("refs/heads/fix");
    let app = vec!["repo:org/app:write".to_owned()];
    let agent = json!({"tool": "git", "agent": "some-agent", "command": ["git", "push"]});
    let forced = json!({"tool": "git", "command": ["git", "push", "--force"]});
    for intent in [&agent, &forced] {
        let denial = staged.decide(&ExchangeAsk { intent: Some(intent), ..ask(&s, GIT, &app) }).unwrap_err();
        assert_eq!(denial.policies, ["agents-do-not-push"]);
    }
    let plain = json!({"tool": "git", "command": ["git", "push"]});
    assert!(staged.decide(&ExchangeAsk { intent: Some(&plain), ..ask(&s, GIT, &app) }).is_ok());
    let long = ExchangeAsk { ttl: Some(Duration::from_secs(1800)), ..ask(&s, GIT, &app) };
    assert_eq!(staged.decide(&long).unwrap_err().policies, ["short-tokens"]);
}

#[test]
fn scopes_map_to_typed_resources() {
    use mayfly_sts::cedar::Target;
    let t = Target::of("oci:127.0.0.1:5000/test/hello:write", "127.0.0.1:5000").unwrap();
    assert_eq!(
        (t.kind_type, t.action, t.host.as_str(), t.path.as_str()),
        ("ImageRepository", "write", "127.0.0.1:5000", "test/hello")
    );
    let t = Target::of("cluster:kube.example:6443", "https://kube.example:6443").unwrap();
    assert_eq!((t.kind_type, t.action, t.entity_id()), ("Cluster", "access", "kube.example:6443".to_owned()));
    let t = Target::of("crate:mayfly-hello:publish", "http://127.0.0.1:8080").unwrap();
    assert_eq!((t.kind_type, t.entity_id()), ("Crate", "127.0.0.1:8080/mayfly-hello".to_owned()));
    let t = Target::of("npm:@scope/pkg:read", "https://registry.npmjs.org/").unwrap();
    assert_eq!((t.kind_type, t.entity_id()), ("Package", "registry.npmjs.org/@scope/pkg".to_owned()));
    assert!(Target::of("repo:org/app:*", GIT).unwrap_err().contains("names no operation"));
}

#[test]
fn the_actor_reaches_the_context_and_a_forbid_on_session_refuses_one() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "agents.cedar",
        r#"
@id("no sessions from shared hosts")
@reason("open agent sessions from your own machine")
forbid (principal, action == Action::"session", resource)
when { context has actor && context.actor has host && context.actor.host == "shared" };

@id("declared agents read only")
forbid (principal, action == Action::"write", resource)
when { context has actor && context.actor has declared && context.actor.declared };
"#,
    );
    let (staged, _handle) = staged(dir.path());
    let s = subject("refs/heads/main");
    let declared = json!({"sub": "agent:claude", "declared": true, "host": "laptop"});
    let agent = Acting { act: &declared, issuer: "https://sts.example" };
    let session = vec!["session".to_owned()];
    let opening = ExchangeAsk { actor: Some(agent), ..ask(&s, "https://sts.example", &session) };
    assert_eq!(staged.decide_session(&opening), Ok(vec![]), "no rule is needed to open a session");
    let shared = json!({"sub": "agent:claude", "declared": true, "host": "shared"});
    let denial =
        staged.decide_session(&ExchangeAsk { actor: Some(Acting { act: &shared, ..agent }), ..opening }).unwrap_err();
    assert_eq!(denial.code, OAuthError::InvalidScope);
    assert_eq!(
        denial.reason,
        "scope `session` is refused: policy `no sessions from shared hosts`: open agent sessions from your own machine"
    );
    assert_eq!(denial.policies, ["no sessions from shared hosts"]);

    let write_app = vec!["repo:org/app:write".to_owned()];
    let read_app = vec!["repo:org/app:read".to_owned()];
    let through_agent = |scopes| ExchangeAsk { actor: Some(agent), ..ask(&s, GIT, scopes) };
    assert!(staged.decide(&through_agent(&read_app)).is_ok());
    let denial = staged.decide(&through_agent(&write_app)).unwrap_err();
    assert_eq!(denial.policies, ["declared agents read only"]);
    assert!(staged.decide(&ask(&s, GIT, &write_app)).is_ok(), "without an actor the rule grants");
    let workload = json!({"sub": "bot", "iss": ISSUER});
    let attested = ExchangeAsk { actor: Some(Acting { act: &workload, issuer: ISSUER }), ..ask(&s, GIT, &write_app) };
    assert!(staged.decide(&attested).is_ok(), "an actor with its own identity is not declared");
}
