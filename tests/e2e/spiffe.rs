//! `kind = "spiffe"`: JWT-SVIDs from a SPIFFE Workload API (a stand-in SPIRE agent on a
//! Unix socket, gRPC over HTTP/2) for the route's audience, exchanged at `mayfly-sts`,
//! which trusts the issuer that signs them; `auto` taking them when only
//! `SPIFFE_ENDPOINT_SOCKET` is set; and each way the API can fail.

use std::process::Output;

use mayfly_core::IdentityEntry;
use mayfly_devstack::{AgentMode, OTHER_SPIFFE_ID, SPIFFE_ID, SpiffeAgent, WorkloadRequest};
use mayfly_tests::{Stack, bin, mayfly_lines, password_of, require_tool};
use serde_json::Value;

/// A stack with a git server and a stand-in SPIRE agent on a socket in its directory.
fn stack_with_agent() -> (Stack, SpiffeAgent) {
    let stack = Stack::builder().git().start();
    let socket = stack.dir.path().join("agent.sock");
    let agent = SpiffeAgent::start(stack.runtime(), &stack.issuer, &socket).expect("the SPIFFE agent starts");
    (stack, agent)
}

/// Writes the config: identity `spire` (`kind`, audience `mayfly-sts`, these settings) and
/// a read route to `org/app` from it.
fn write_config(stack: &Stack, entry: IdentityEntry) {
    let mut config = stack.base_config();
    config.identities.insert("spire".into(), IdentityEntry { audience: Some("mayfly-sts".into()), ..entry });
    stack.write_config_text(&format!("{}\n{}", config.to_toml(), stack.route("org/app", &["read"], "spire")));
}

fn spiffe(socket: Option<String>, spiffe_id: Option<&str>) -> IdentityEntry {
    IdentityEntry { kind: "spiffe".into(), socket, spiffe_id: spiffe_id.map(str::to_owned), ..IdentityEntry::default() }
}

/// The stack's environment without GitHub Actions' variables and with these.
fn env(stack: &Stack, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> =
        stack.env().into_iter().filter(|(k, _)| !k.starts_with("ACTIONS_ID_TOKEN_REQUEST")).collect();
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    env
}

/// `git clone` of `org/app` in this environment.
fn clone(stack: &Stack, env: &[(String, String)], into: &str) -> Output {
    let mut git = stack.git_cmd(&stack.work, &["clone", &stack.repo_url("org/app.git"), into]);
    git.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
    git.output().expect("git runs")
}

/// The one request mayfly makes: the method, the security header, gRPC, the audience.
fn asked(spiffe_id: &str) -> WorkloadRequest {
    WorkloadRequest {
        path: "/SpiffeWorkloadAPI/FetchJWTSVID".into(),
        security_header: Some("true".into()),
        content_type: Some("application/grpc".into()),
        audience: vec!["mayfly-sts".into()],
        spiffe_id: spiffe_id.into(),
    }
}

/// The subjects the exchange issued tokens to.
fn issued_subjects(stack: &Stack) -> Vec<String> {
    let issued = stack.sts_audit().into_iter().filter(|l| l["outcome"] == "issued");
    issued.map(|l| l["subject"].as_str().unwrap_or_default().to_owned()).collect()
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn git_clones_with_a_jwt_svid_from_the_workload_api() {
    if !require_tool("git") {
        return;
    }
    let (stack, agent) = stack_with_agent();
    write_config(&stack, spiffe(None, None));
    let out = clone(&stack, &env(&stack, &[("SPIFFE_ENDPOINT_SOCKET", &agent.address())]), "app");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stack.work.join("app/.git").is_dir());
    assert_eq!(agent.requests(), [asked("")], "the security header, gRPC and the route's audience");
    assert_eq!(issued_subjects(&stack), [SPIFFE_ID], "the first SVID the API gave, exchanged");
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn a_configured_socket_and_spiffe_id_pick_one_identity() {
    if !require_tool("git") {
        return;
    }
    let (stack, agent) = stack_with_agent();
    write_config(&stack, spiffe(Some(agent.address().replace("unix://", "unix:")), Some(OTHER_SPIFFE_ID)));
    // The variable names a socket nothing listens on: the config's own wins.
    let out = clone(&stack, &env(&stack, &[("SPIFFE_ENDPOINT_SOCKET", "unix:///nonexistent/agent.sock")]), "app");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(agent.requests(), [asked(OTHER_SPIFFE_ID)]);
    assert_eq!(issued_subjects(&stack), [OTHER_SPIFFE_ID]);
}

#[test]
fn auto_takes_the_workload_api_when_only_its_socket_is_set() {
    let (stack, agent) = stack_with_agent();
    write_config(&stack, IdentityEntry { kind: "auto".into(), metadata_servers: Some(false), ..Default::default() });
    let address = agent.address();
    let env = env(&stack, &[("SPIFFE_ENDPOINT_SOCKET", &address)]);
    let request = format!("protocol=https\nhost={}\npath=org/app.git\n", stack.git_host());
    let out = assert_cmd::Command::new(bin("git-credential-mayfly"))
        .arg("get")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .write_stdin(request)
        .output()
        .expect("the helper runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!password_of(&String::from_utf8_lossy(&out.stdout)).is_empty());
    assert_eq!(agent.requests(), [asked("")]);
    assert_eq!(issued_subjects(&stack), [SPIFFE_ID]);

    let out = std::process::Command::new(bin("mayfly"))
        .args(["explain", "git", &stack.repo_url("org/app.git")])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("mayfly runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("`spire` (auto spiffe {address};")), "{text}");
    assert!(text.contains("a SPIFFE Workload API (`SPIFFE_ENDPOINT_SOCKET` is set)"), "{text}");
}

#[test]
#[cfg_attr(missing = "git", ignore = "needs git, which is not installed")]
fn each_failure_of_the_workload_api_is_one_line_and_git_fails() {
    if !require_tool("git") {
        return;
    }
    let (stack, agent) = stack_with_agent();
    write_config(&stack, spiffe(None, None));
    let address = agent.address();
    let missing = format!("unix://{}/gone.sock", stack.dir.path().display());
    let cases = [
        (
            missing.as_str(),
            AgentMode::Serve,
            format!("cannot reach the SPIFFE Workload API at `{missing}`: No such file or directory (os error 2)"),
        ),
        (
            address.as_str(),
            AgentMode::NoIdentity,
            format!("the SPIFFE Workload API at `{address}` refused: PermissionDenied (no identity issued)"),
        ),
        (
            address.as_str(),
            AgentMode::Empty,
            format!(
                "the SPIFFE Workload API at `{address}` gave no JWT-SVID for this workload and audience `mayfly-sts`"
            ),
        ),
        (
            address.as_str(),
            AgentMode::Garbage,
            format!(
                "the SPIFFE Workload API at `{address}` answered with no JWT-SVID response: wire type 4 is not one proto3 writes"
            ),
        ),
    ];
    for (i, (socket, mode, why)) in cases.iter().enumerate() {
        agent.set_mode(*mode);
        let out = clone(&stack, &env(&stack, &[("SPIFFE_ENDPOINT_SOCKET", socket)]), &format!("app{i}"));
        assert!(!out.status.success(), "{mode:?}: git must fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines = mayfly_lines(&out.stderr);
        assert_eq!(lines.len(), 1, "{mode:?}: {stderr}");
        assert!(lines[0].contains(&format!("identity `spire`: {why}")), "{mode:?}: {lines:?}");
        assert!(!stderr.contains("eyJ"), "{mode:?}: no token in the message");
    }
    assert!(issued_subjects(&stack).is_empty(), "nothing exchanged");
    let modes: Vec<Value> = agent.requests().iter().map(|r| Value::from(r.security_header.clone())).collect();
    assert_eq!(modes, vec![Value::from("true"); 3], "every request that arrived carried the security header");
}
