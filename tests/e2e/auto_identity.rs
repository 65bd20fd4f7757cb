//! `kind = "auto"`: the identity source found in the environment, with each source's own
//! delivery: GitHub Actions' endpoint, the CI tools' commands (stand-in `buildkite-agent`
//! and `circleci` printing tokens the stack's issuer minted), Azure Pipelines' HTTP
//! exchange against its stand-in, and the cloud metadata servers (GCE's and Azure IMDS's
//! stand-ins, probed last).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use mayfly_core::IdentityEntry;
use mayfly_devstack::{
    AZURE_AUDIENCE, AZURE_IMDS_TOKEN_PATH, AZURE_OIDC_PATH, AzureRequest, GCE_IDENTITY_PATH, MetadataRequest,
    MetadataServer,
};
use mayfly_tests::{Stack, bin, mayfly_lines, password_of};
use serde_json::Value;

/// The variables GitHub Actions sets, which the stack's environment carries.
const GITHUB_VARS: [&str; 2] = ["ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN"];

/// The stack's config with one more identity, `auto` (`kind = "auto"`, audience
/// `mayfly-sts`, these settings), and a read route to `org/app` from it.
fn write_auto_config(stack: &Stack, entry: IdentityEntry) {
    let mut config = stack.base_config();
    let entry = IdentityEntry { kind: "auto".into(), audience: Some("mayfly-sts".into()), ..entry };
    config.identities.insert("auto".into(), entry);
    stack.write_config_text(&format!("{}\n{}", config.to_toml(), stack.route("org/app", &["read"], "auto")));
}

/// A loopback address nothing listens on (a port bound, then let go).
fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    listener.local_addr().expect("its address").to_string()
}

/// The stack's environment without GitHub Actions' variables, with the metadata servers
/// at an address nothing answers (so the machine's own are never probed), with `extra`.
fn env_without_github(stack: &Stack, extra: &[(&str, String)]) -> Vec<(String, String)> {
    let dead = dead_address();
    let mut env: Vec<(String, String)> =
        stack.env().into_iter().filter(|(k, _)| !GITHUB_VARS.contains(&k.as_str())).collect();
    env.push(("GCE_METADATA_HOST".into(), dead.clone()));
    env.push(("AZURE_POD_IDENTITY_AUTHORITY_HOST".into(), format!("http://{dead}")));
    for (k, v) in extra {
        env.retain(|(name, _)| name != k);
        env.push(((*k).to_owned(), v.clone()));
    }
    env
}

/// `git-credential-mayfly get` for `org/app.git` in this environment.
fn helper_get(stack: &Stack, env: &[(String, String)]) -> Output {
    let request = format!("protocol=https\nhost={}\npath=org/app.git\n", stack.git_host());
    assert_cmd::Command::new(bin("git-credential-mayfly"))
        .arg("get")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .write_stdin(request)
        .output()
        .expect("the helper runs")
}

/// The token the helper hands git, failing the test with its stderr if there is none.
fn helper_token(stack: &Stack, env: &[(String, String)]) -> String {
    let out = helper_get(stack, env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    password_of(&String::from_utf8(out.stdout).expect("UTF-8 answer"))
}

/// `mayfly ARGS` in this environment.
fn mayfly(stack: &Stack, env: &[(String, String)], args: &[&str]) -> Output {
    Command::new(bin("mayfly"))
        .args(args)
        .current_dir(&stack.work)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .expect("mayfly runs")
}

/// The lines of the exchange's audit that issued a token.
fn issued_for(stack: &Stack) -> Vec<Value> {
    stack.sts_audit().into_iter().filter(|l| l["outcome"] == "issued").collect()
}

#[test]
fn auto_takes_the_github_actions_job_token_and_says_why_it_won() {
    let stack = Stack::builder().git().start();
    write_auto_config(&stack, IdentityEntry::default());
    // Buildkite's marker too: the order puts GitHub Actions first.
    let env: Vec<(String, String)> =
        stack.env().into_iter().chain([("BUILDKITE".to_owned(), "true".to_owned())]).collect();
    let before = stack.issuer.issued();
    let token = helper_token(&stack, &env);
    assert!(!token.is_empty());
    assert_eq!(stack.issuer.issued(), before + 1, "one ID token from the job's endpoint");
    assert_eq!(issued_for(&stack).len(), 1);

    let out = mayfly(&stack, &env, &["explain", "git", &stack.repo_url("org/app.git")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("`auto` (auto github-actions 127.0.0.1:"), "{text}");
    assert!(
        text.contains(
            "GitHub Actions (`ACTIONS_ID_TOKEN_REQUEST_URL` and `ACTIONS_ID_TOKEN_REQUEST_TOKEN` are set), first in the order before Buildkite (`BUILDKITE=true`), also present"
        ),
        "{text}"
    );

    let out = mayfly(&stack, &env, &["doctor", "--json", "--offline"]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("doctor's JSON");
    let auto = report["identity"]["sources"].as_array().unwrap().iter().find(|s| s["name"] == "auto").unwrap().clone();
    assert_eq!((auto["kind"].as_str(), auto["available"].as_bool()), (Some("auto"), Some(true)));
    assert_eq!(auto["detected"]["outranked"], serde_json::json!(["Buildkite (`BUILDKITE=true`)"]));
    let several = report["findings"].as_array().unwrap().iter().any(|f| f["kind"] == "identity-detected-several");
    assert!(several, "{report:#}");
}

/// The directory of the stand-in CI tools.
fn ci_tools() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("support/ci-tools")
}

#[test]
fn auto_runs_buildkite_agent_for_the_audience_and_names_what_it_looked_for_when_nothing_is_there() {
    let stack = Stack::builder().git().start();
    write_auto_config(&stack, IdentityEntry::default());
    let tokens = stack.dir.path().join("ci-tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    std::fs::write(tokens.join("mayfly-sts"), stack.issuer.mint("mayfly-sts", &Value::Null)).unwrap();
    // Nothing in the environment: one line naming what was looked for.
    let env = env_without_github(&stack, &[]);
    let out = helper_get(&stack, &env);
    assert!(!out.status.success());
    let lines = mayfly_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("no identity source found: looked for GitHub Actions"), "{lines:?}");
    assert!(lines[0].contains("Buildkite (`BUILDKITE=true`)"), "{lines:?}");
    assert!(lines[0].contains("the GCE and Azure metadata servers (no answer within 300 ms)"), "{lines:?}");

    let path = format!("{}:{}", ci_tools().display(), std::env::var("PATH").unwrap_or_default());
    let env = env_without_github(
        &stack,
        &[("BUILDKITE", "true".into()), ("PATH", path), ("MAYFLY_TEST_TOKENS", tokens.display().to_string())],
    );
    let before = stack.issuer.issued();
    let token = helper_token(&stack, &env);
    assert!(!token.is_empty());
    let argv = std::fs::read_to_string(tokens.join("argv")).unwrap();
    assert_eq!(argv, "oidc request-token --audience mayfly-sts\n");
    assert_eq!(stack.issuer.issued(), before, "nothing asked of GitHub Actions' endpoint");
    assert_eq!(issued_for(&stack).len(), 1);
}

#[test]
fn auto_asks_the_circleci_cli_for_the_audience_the_identity_names() {
    let stack = Stack::builder().git().start();
    write_auto_config(&stack, IdentityEntry::default());
    let tokens = stack.dir.path().join("ci-tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    std::fs::write(tokens.join("mayfly-sts"), stack.issuer.mint("mayfly-sts", &Value::Null)).unwrap();
    let path = format!("{}:{}", ci_tools().display(), std::env::var("PATH").unwrap_or_default());
    let env = env_without_github(
        &stack,
        &[
            ("CIRCLECI", "true".into()),
            // The project-audience token the job carries is not the one asked for.
            ("CIRCLE_OIDC_TOKEN_V2", stack.issuer.mint("circleci-project", &Value::Null)),
            ("PATH", path),
            ("MAYFLY_TEST_TOKENS", tokens.display().to_string()),
        ],
    );
    let token = helper_token(&stack, &env);
    assert!(!token.is_empty());
    let argv = std::fs::read_to_string(tokens.join("argv")).unwrap();
    assert_eq!(argv, "run oidc get --claims {\"aud\":\"mayfly-sts\"}\n");
    assert_eq!(issued_for(&stack).len(), 1);
}

#[test]
fn auto_asks_azure_pipelines_oidc_endpoint_for_the_service_connection() {
    let stack = Stack::builder()
        .git()
        .sts_config(|config, _| config.trusted_issuers[0].audiences.push(AZURE_AUDIENCE.into()))
        .start();
    let entry = IdentityEntry { azure_service_connection: Some("c0ffee-1".into()), ..IdentityEntry::default() };
    write_auto_config(&stack, entry);
    let env = env_without_github(
        &stack,
        &[
            ("SYSTEM_OIDCREQUESTURI", stack.issuer.azure_request_uri()),
            ("SYSTEM_ACCESSTOKEN", stack.issuer.request_token().to_owned()),
        ],
    );
    let token = helper_token(&stack, &env);
    assert!(!token.is_empty());
    assert_eq!(
        stack.issuer.azure_requests(),
        [AzureRequest {
            method: "POST".into(),
            path: AZURE_OIDC_PATH.into(),
            query: "api-version=7.1&serviceConnectionId=c0ffee-1".into(),
            authorization: Some(format!("Bearer {}", stack.issuer.request_token())),
        }]
    );
    assert_eq!(issued_for(&stack).len(), 1);
}

/// A metadata server request as the stand-in records it.
fn metadata_request(path: &str, query: &str, marker: Option<&str>) -> MetadataRequest {
    MetadataRequest { path: path.into(), query: query.into(), marker: marker.map(str::to_owned) }
}

#[test]
fn auto_probes_the_gce_metadata_server_last_and_asks_it_for_the_audience() {
    let stack = Stack::builder().git().start();
    let metadata = MetadataServer::start(stack.runtime(), &stack.issuer).expect("the metadata stand-in starts");
    write_auto_config(&stack, IdentityEntry::default());
    let env = env_without_github(&stack, &[("GCE_METADATA_HOST", metadata.host.clone())]);
    let token = helper_token(&stack, &env);
    assert!(!token.is_empty());
    assert_eq!(
        metadata.requests(),
        [
            metadata_request("/", "", Some("Google")),
            metadata_request(GCE_IDENTITY_PATH, "audience=mayfly-sts&format=full", Some("Google")),
        ],
        "one probe, then the identity asked for the route's audience"
    );
    assert_eq!(issued_for(&stack).len(), 1);

    let out = mayfly(&stack, &env, &["explain", "git", &stack.repo_url("org/app.git")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("`auto` (auto gce-metadata {};", metadata.host)), "{text}");
    assert!(text.contains(&format!("the GCE metadata server (`{}` answered)", metadata.host)), "{text}");

    let out = mayfly(&stack, &env, &["doctor", "--json", "--offline"]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("doctor's JSON");
    let auto = report["identity"]["sources"].as_array().unwrap().iter().find(|s| s["name"] == "auto").unwrap().clone();
    assert_eq!(auto["detected"]["used"], format!("the GCE metadata server (`{}` answered)", metadata.host));
    // A variable-based source comes first, and the metadata server is not even probed.
    let before = metadata.requests().len();
    let bitbucket = env_without_github(
        &stack,
        &[
            ("GCE_METADATA_HOST", metadata.host.clone()),
            ("BITBUCKET_STEP_OIDC_TOKEN", stack.issuer.mint("mayfly-sts", &Value::Null)),
        ],
    );
    let out = mayfly(&stack, &bitbucket, &["explain", "git", &stack.repo_url("org/app.git")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("`auto` (auto env $BITBUCKET_STEP_OIDC_TOKEN;"), "{text}");
    assert_eq!(metadata.requests().len(), before, "no probe when a variable names the source");
}

#[test]
fn auto_takes_azure_imds_managed_identity_when_no_gce_server_answers() {
    let stack = Stack::builder().git().start();
    let metadata = MetadataServer::start(stack.runtime(), &stack.issuer).expect("the metadata stand-in starts");
    write_auto_config(&stack, IdentityEntry::default());
    let env = env_without_github(&stack, &[("AZURE_POD_IDENTITY_AUTHORITY_HOST", metadata.base_url())]);
    let token = helper_token(&stack, &env);
    assert!(!token.is_empty());
    assert_eq!(
        metadata.requests(),
        [
            metadata_request(AZURE_IMDS_TOKEN_PATH, "api-version=2018-02-01", None),
            metadata_request(AZURE_IMDS_TOKEN_PATH, "api-version=2018-02-01&resource=mayfly-sts", Some("true")),
        ],
        "the SDKs' probe without `Metadata: true`, then the token asked with it"
    );
    assert_eq!(issued_for(&stack).len(), 1);
    let out = mayfly(&stack, &env, &["doctor", "--json", "--offline"]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("doctor's JSON");
    let auto = report["identity"]["sources"].as_array().unwrap().iter().find(|s| s["name"] == "auto").unwrap().clone();
    assert_eq!((auto["kind"].as_str(), auto["available"].as_bool()), (Some("auto"), Some(true)));
    assert_eq!(auto["source"], format!("azure-imds {}", metadata.host));
}

#[test]
fn a_named_gce_metadata_source_refuses_an_answer_without_its_flavor() {
    let stack = Stack::builder().git().start();
    let metadata = MetadataServer::start(stack.runtime(), &stack.issuer).expect("the metadata stand-in starts");
    let mut config = stack.base_config();
    let entry =
        IdentityEntry { kind: "gce-metadata".into(), audience: Some("mayfly-sts".into()), ..IdentityEntry::default() };
    config.identities.insert("gce".into(), entry);
    stack.write_config_text(&format!("{}\n{}", config.to_toml(), stack.route("org/app", &["read"], "gce")));
    let env = env_without_github(&stack, &[("GCE_METADATA_HOST", metadata.host.clone())]);
    metadata.set_flavor(false);
    let out = helper_get(&stack, &env);
    assert!(!out.status.success());
    let lines = mayfly_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("the answer has no `Metadata-Flavor: Google`: not a GCE metadata server"), "{lines:?}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("eyJ"), "no token in the message");
    assert_eq!(issued_for(&stack).len(), 0, "nothing exchanged");

    metadata.set_flavor(true);
    assert!(!helper_token(&stack, &env).is_empty());
    let paths: Vec<String> = metadata.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, [GCE_IDENTITY_PATH, GCE_IDENTITY_PATH], "a named source is asked, never probed");
}
