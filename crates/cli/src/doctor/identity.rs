//! The identity sources: whether each can give a subject token here, checked cheaply
//! (variables set, file readable, command on PATH), and the claims of the token where
//! reading it costs nothing (files and variables). The token itself is never shown.
//! A token that costs a request or a run (GitHub Actions, commands) is fetched only with
//! `--fetch-identity`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mayfly_core::{Config, Env, IdentityConfig, IdentityDetected, IdentityPresence, peek_claims};
use serde_json::Value;

use super::finding::{Finding, Severity};

/// Claims about where a CI token comes from, shown when present.
const CI_CLAIMS: [&str; 14] = [
    "repository",
    "ref",
    "ref_type",
    "sha",
    "workflow",
    "job_workflow_ref",
    "environment",
    "event_name",
    "actor",
    "run_id",
    "project_path",
    "namespace_path",
    "pipeline_source",
    "ci_config_ref_uri",
];

/// How long before a login ends doctor warns that it is about to.
const LOGIN_ENDING_SOON: i64 = 15 * 60;

/// One identity source and what could be learnt about it.
#[derive(Debug)]
pub(crate) struct Source {
    /// Its name in the config; `None` for one detected in the environment.
    pub(crate) name: Option<String>,
    pub(crate) kind: &'static str,
    /// Where the token comes from: a file, a variable, a command, an endpoint's host.
    pub(crate) origin: String,
    pub(crate) available: bool,
    pub(crate) claims: Option<Claims>,
    /// For `auto`: what was found here and which one is used.
    pub(crate) detected: Option<IdentityDetected>,
}

/// A token's claims, read without verification.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Claims {
    pub(crate) issuer: Option<String>,
    pub(crate) subject: Option<String>,
    pub(crate) audience: Vec<String>,
    pub(crate) expires: Option<i64>,
    /// CI claims (repository, ref ...) in [`CI_CLAIMS`] order.
    pub(crate) ci: Vec<(String, String)>,
}

pub(crate) fn check(env: &Env, config: Option<&Config>, fetch: bool, findings: &mut Vec<Finding>) -> Vec<Source> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let configured: Vec<&IdentityConfig> = config.map(|c| c.identities.values().collect()).unwrap_or_default();
    let mut sources = Vec::new();
    for identity in &configured {
        let (source, problem) = examine(identity, env, fetch);
        // A source no route uses is shown, but cannot break anything.
        if config.is_some_and(|c| c.routes.iter().any(|r| r.identity == identity.name)) {
            if identity.kind() == "oidc" {
                findings.extend(login_problems(identity, env, &source, now));
            } else {
                findings.extend(problems(&identity.name, &source, problem, now));
            }
            findings.extend(outranked(&identity.name, &source));
        }
        sources.push(source);
    }
    if configured.is_empty()
        && let Some(offered) = IdentityConfig::detect(env)
    {
        let (source, _) = examine(&offered, env, fetch);
        sources.push(Source { name: None, ..source });
    }
    sources
}

/// Several sources present for `auto`: the order picked one, which a reader may not expect.
fn outranked(name: &str, source: &Source) -> Option<Finding> {
    let detected = source.detected.as_ref()?;
    let chosen = detected.chosen.as_ref().filter(|_| !detected.outranked.is_empty())?;
    let fix = format!(
        "{chosen} is used: it comes first in `auto`'s order before {}; name a source's own kind to use another",
        detected.outranked.join("; ")
    );
    Some(Finding::new(Severity::Info, "identity-detected-several", format!("identity `{name}` (auto)"), fix))
}

/// What keeps a source from giving a token an exchange takes.
fn problems(name: &str, source: &Source, unavailable: Option<String>, now: i64) -> Vec<Finding> {
    let location = format!("identity `{name}` ({} {})", source.kind, source.origin);
    let mut findings = Vec::new();
    if let Some(why) = unavailable {
        findings.push(Finding::new(Severity::Warning, "identity-unavailable", location.clone(), why));
    }
    if let Some(expires) = source.claims.as_ref().and_then(|c| c.expires).filter(|e| *e <= now) {
        let fix = format!(
            "its token expired at {}: exchanges refuse it until the source hands out a fresh one",
            rfc3339(expires)
        );
        findings.push(Finding::new(Severity::Warning, "identity-expired", location, fix));
    }
    findings
}

/// What is wrong with a `mayfly login`: none, one that ended (or never began), or one
/// ending within [`LOGIN_ENDING_SOON`], naming the store that holds it. An expired ID
/// token alone is not a problem: the login refreshes it.
fn login_problems(identity: &IdentityConfig, env: &Env, source: &Source, now: i64) -> Vec<Finding> {
    let name = &identity.name;
    let location = format!("identity `{name}` (oidc {})", source.origin);
    let again = format!("run `mayfly login {name}`");
    let finding = match mayfly_core::login::status(identity, env, now) {
        Err(why) => Finding::new(Severity::Warning, "identity-unavailable", location, why),
        Ok(None) => {
            let place = mayfly_core::login::place(identity, env).unwrap_or_else(|e| e);
            let fix =
                format!("no login in the {place}: it ended (idle or at its maximum lifetime) or never began; {again}");
            Finding::new(Severity::Warning, "login-ended", location, fix)
        }
        Ok(Some(login)) => {
            let (end, why) = if login.until <= login.idle_until {
                (login.until, "its maximum lifetime (`max_login`)")
            } else {
                (login.idle_until, "its idle time (`idle`) unless used before")
            };
            if end - now > LOGIN_ENDING_SOON {
                return Vec::new();
            }
            let fix = format!(
                "the login kept in the {} ends at {} (in {}), at {why}; {again} to start a fresh one",
                login.store,
                rfc3339(end),
                crate::status::span(end - now)
            );
            Finding::new(Severity::Warning, "login-ending", location, fix)
        }
    };
    vec![finding]
}

/// A source, and what keeps it from giving a token, if anything. A token read at no cost
/// (a file, a variable) shows its claims; one that costs a request or a run (GitHub
/// Actions, a command) is fetched only when asked.
fn examine(identity: &IdentityConfig, env: &Env, fetch: bool) -> (Source, Option<String>) {
    let mut source = Source {
        name: Some(identity.name.clone()),
        kind: identity.kind(),
        origin: identity.origin(env),
        available: true,
        claims: None,
        detected: identity.detected(env),
    };
    let problem = match identity.look(env) {
        IdentityPresence::Token(token) => {
            source.claims = claims(token.expose());
            None
        }
        IdentityPresence::Ready if fetch => match mayfly_core::fetch_subject(identity, env) {
            Ok(subject) => {
                source.claims = claims(subject.token.expose());
                None
            }
            Err(e) => Some(format!("fetching a token failed: {}", mayfly_core::protocol::one_line(&e))),
        },
        IdentityPresence::Ready => None,
        IdentityPresence::Absent(why) => Some(why),
    };
    source.available = problem.is_none();
    (source, problem)
}

/// The claims of a JWT; `None` for anything else (an opaque token has none to show).
pub(crate) fn claims(token: &str) -> Option<Claims> {
    let peeked = peek_claims(token)?;
    let payload: Value = token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let audience = match payload.get("aud") {
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    let mut ci: Vec<(String, String)> =
        CI_CLAIMS.iter().filter_map(|name| Some((name.to_string(), scalar(payload.get(*name)?)?))).collect();
    // Kubernetes service account tokens name their workload in a nested claim.
    if let Some(kubernetes) = payload.get("kubernetes.io") {
        for (name, pointer) in [("namespace", "/namespace"), ("serviceaccount", "/serviceaccount/name")] {
            if let Some(value) = kubernetes.pointer(pointer).and_then(scalar) {
                ci.push((format!("kubernetes.io/{name}"), value));
            }
        }
    }
    Some(Claims { issuer: peeked.iss, subject: peeked.sub, audience, expires: peeked.exp, ci })
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(crate) fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn jwt(payload: &str) -> String {
        format!("e30.{}.c2ln", URL_SAFE_NO_PAD.encode(payload))
    }

    #[test]
    fn claims_of_a_ci_token() {
        let token = jwt(
            r#"{"iss":"https://token.actions.githubusercontent.com","sub":"repo:o/r:ref:refs/heads/main","aud":["a","b"],"exp":100,"repository":"o/r","ref":"refs/heads/main","run_id":7,"other":"x"}"#,
        );
        let claims = claims(&token).unwrap();
        assert_eq!(claims.issuer.as_deref(), Some("https://token.actions.githubusercontent.com"));
        assert_eq!(claims.audience, ["a", "b"]);
        assert_eq!(claims.expires, Some(100));
        assert_eq!(
            claims.ci,
            [
                ("repository".into(), "o/r".into()),
                ("ref".into(), "refs/heads/main".into()),
                ("run_id".into(), "7".into())
            ]
        );
        assert!(super::claims("opaque-token").is_none());
    }

    #[test]
    fn kubernetes_claims_are_nested() {
        let token = jwt(
            r#"{"sub":"system:serviceaccount:ci:builder","aud":"sts","kubernetes.io":{"namespace":"ci","serviceaccount":{"name":"builder"}}}"#,
        );
        let claims = claims(&token).unwrap();
        assert_eq!(claims.audience, ["sts"]);
        assert_eq!(
            claims.ci,
            [
                ("kubernetes.io/namespace".into(), "ci".into()),
                ("kubernetes.io/serviceaccount".into(), "builder".into())
            ]
        );
    }

    #[test]
    fn sources_are_checked_without_fetching() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, jwt(r#"{"iss":"i","exp":1}"#)).unwrap();
        let mut text = format!(
            "[identities.f]\nkind = \"file\"\npath = \"{}\"\n[identities.e]\nkind = \"env\"\nvar = \"NOPE\"\n[identities.c]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"exit 1\"]\n[identities.gh]\nkind = \"github-actions\"\n[identities.unused]\nkind = \"env\"\nvar = \"NOPE\"\n[exchanges.x]\nkind = \"rfc8693\"\ntoken_endpoint = \"https://sts.example/t\"\n",
            file.display()
        );
        for (i, identity) in ["f", "e", "c", "gh"].iter().enumerate() {
            text += &format!(
                "[[routes]]\ntool = \"git\"\nhost = \"h{i}.example\"\nidentity = \"{identity}\"\nexchange = \"x\"\n"
            );
        }
        let config = Config::parse(&text, Path::new("t.toml")).unwrap();
        let env = Env::from_pairs([("PATH", "/usr/bin:/bin")]);
        let mut findings = Vec::new();
        let sources = check(&env, Some(&config), false, &mut findings);
        let seen: Vec<_> = sources.iter().map(|s| (s.kind, s.available)).collect();
        assert_eq!(
            seen,
            [("command", true), ("env", false), ("file", true), ("github-actions", false), ("env", false)]
        );
        assert_eq!(sources[2].claims.as_ref().unwrap().issuer.as_deref(), Some("i"));
        let kinds: Vec<_> = findings.iter().map(|f| f.kind).collect();
        // `unused` is unavailable too, but no route depends on it.
        assert_eq!(kinds, ["identity-unavailable", "identity-expired", "identity-unavailable"]);
    }

    #[test]
    fn auto_says_what_it_found_and_which_won() {
        let text = "[identities.ci]\nkind = \"auto\"\npath = \"/nonexistent/token\"\nmetadata_servers = false\n[exchanges.x]\nkind = \"rfc8693\"\ntoken_endpoint = \"https://sts.example/t\"\n[[routes]]\ntool = \"git\"\nhost = \"h.example\"\nidentity = \"ci\"\nexchange = \"x\"\n";
        let config = Config::parse(text, Path::new("t.toml")).unwrap();
        let token = jwt(r#"{"iss":"https://gitlab.example","exp":4102444800}"#);
        let env = Env::from_pairs([
            ("PATH", "/nonexistent"),
            ("GITLAB_CI", "true"),
            ("MAYFLY_ID_TOKEN", token.as_str()),
            ("BUILDKITE", "true"),
        ]);
        let mut findings = Vec::new();
        let sources = check(&env, Some(&config), false, &mut findings);
        let source = &sources[0];
        assert_eq!((source.kind, source.origin.as_str(), source.available), ("auto", "env $MAYFLY_ID_TOKEN", true));
        assert_eq!(source.claims.as_ref().unwrap().issuer.as_deref(), Some("https://gitlab.example"));
        let detected = source.detected.as_ref().unwrap();
        assert_eq!(
            (detected.chosen.as_deref(), detected.outranked.as_slice()),
            (Some("GitLab CI (`GITLAB_CI=true`)"), ["Buildkite (`BUILDKITE=true`)".to_owned()].as_slice())
        );
        let kinds: Vec<_> = findings.iter().map(|f| (f.kind, f.fix.as_str())).collect();
        assert_eq!(
            kinds,
            [(
                "identity-detected-several",
                "GitLab CI (`GITLAB_CI=true`) is used: it comes first in `auto`'s order before Buildkite (`BUILDKITE=true`); name a source's own kind to use another"
            )]
        );

        let mut findings = Vec::new();
        let sources = check(&Env::default(), Some(&config), false, &mut findings);
        assert_eq!(sources[0].origin, "nothing detected");
        assert!(
            findings[0].fix.starts_with("no identity source found: looked for GitHub Actions"),
            "{:?}",
            findings[0]
        );
    }
}
