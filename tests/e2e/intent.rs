//! Intent without secrets: the command lines above a helper reach the audit logs and the
//! exchange only as their shape.

use std::process::Command;

use mayfly_tests::Stack;
use serde_json::Value;

/// One secret of each kind an agent's or a job's command line may hold.
const SECRETS: [&str; 12] = [
    "hunter2-password",
    "ghp_abcdefghijklmnopqrstuvwxyz0123",
    "glpat-abcdefghijklmnopqrst",
    "npm_abcdefghijklmnopqrstuvwxyz0123",
    "pypi-AgEIcHlwaS5vcmcCJGFiY2RlZmdo",
    "AKIAIOSFODNN7EXAMPLE",
    "sk-ant-api03-abcdefghijklmnopqrstuv",
    "sk-proj-abcdefghijklmnopqrstuvwx",
    "xoxb-123456789012-abcdefghijklmnop",
    "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "s3cr3t-header-value",
];

#[test]
fn secrets_on_the_command_lines_above_a_helper_reach_no_log() {
    let stack = Stack::new();
    let [pw, ghp, glpat, npm, pypi, akia, ant, openai, slack, jwt, aws, header] = SECRETS;
    // An agent (bash, holding secrets in its argv) runs git with secrets in its options.
    let script = format!(
        r#"git -c "http.extraheader=X-Trace: Bearer {header}" -c "user.password={pw}" --config-env=core.x=TOKEN_VAR ls-remote "$1" >/dev/null"#
    );
    let agent_args = [
        stack.repo_url("org/app"),
        format!("--api-key={ant}"),
        "--password".into(),
        pw.into(),
        "-H".into(),
        format!("Authorization: Bearer {header}"),
        format!("GITHUB_TOKEN={ghp}"),
        format!("https://user:{pw}@git.example/org/app"),
        glpat.into(),
        npm.into(),
        pypi.into(),
        akia.into(),
        openai.into(),
        slack.into(),
        jwt.into(),
        aws.into(),
    ];
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .arg("agent")
        .args(&agent_args)
        .current_dir(&stack.work)
        .env_clear()
        .envs(stack.env())
        .env("TOKEN_VAR", "x")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let client = std::fs::read_to_string(stack.home.join(".local/state/mayfly/audit.jsonl")).unwrap();
    let exchange = std::fs::read_to_string(&stack.sts.audit).unwrap();
    for secret in SECRETS {
        assert!(!client.contains(secret), "the client audit log holds {secret}:\n{client}");
        assert!(!exchange.contains(secret), "the exchange's audit log holds {secret}:\n{exchange}");
    }
    // What remains is the shape: the program, the subcommand, the target.
    let issued: Vec<Value> = stack.sts_audit().into_iter().filter(|l| l["outcome"] == "issued").collect();
    assert_eq!(issued.len(), 1);
    let command: Vec<&str> =
        issued[0]["intent"]["command"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(command.first(), Some(&"git"));
    assert!(command.contains(&"ls-remote") && command.contains(&stack.repo_url("org/app").as_str()), "{command:?}");
    let line = stack.client_audit().into_iter().find(|l| l["outcome"] == "issued").unwrap();
    let agent = line["process"].as_array().unwrap().iter().find(|p| p["argv"][0] == "bash").unwrap().clone();
    assert!(agent["argv"].as_array().unwrap().iter().any(|a| a == "--api-key=[redacted]"), "{agent}");
}

#[test]
fn the_exchange_scrubs_an_intent_it_is_sent() {
    let stack = Stack::new();
    let subject = stack.issuer.mint("mayfly-sts", &Value::Null);
    let intent = serde_json::json!({
        "tool": "git",
        "command": ["git", "-c", "http.extraheader=Authorization: Bearer s3cr3t-header-value", "push", "https://u:hunter2-password@h/x"],
        "note": "ghp_abcdefghijklmnopqrstuvwxyz0123",
    });
    let form = [
        ("grant_type", mayfly_core::TOKEN_EXCHANGE_GRANT),
        ("subject_token", &subject),
        ("subject_token_type", mayfly_core::ID_TOKEN_TYPE),
        ("audience", &stack.git_server().base_url),
        ("scope", "repo:org/app:read"),
        ("intent", &intent.to_string()),
    ];
    let response = stack.https_client().post(format!("{}/token", stack.sts.url)).form(&form).send().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let exchange = std::fs::read_to_string(&stack.sts.audit).unwrap();
    for secret in ["s3cr3t-header-value", "hunter2-password", "ghp_abcdefghijklmnopqrstuvwxyz0123"] {
        assert!(!exchange.contains(secret), "{secret} in {exchange}");
    }
    assert!(exchange.contains("push"), "{exchange}");
}

#[test]
fn the_request_body_carries_only_the_shape() {
    use axum::routing::post;
    use std::sync::{Arc, Mutex};
    let runtime = mayfly_devstack::runtime().unwrap();
    let bodies: Arc<Mutex<Vec<String>>> = Arc::default();
    let recorded = bodies.clone();
    let app = axum::Router::new().route(
        "/token",
        post(move |body: String| {
            recorded.lock().unwrap().push(body);
            async { (axum::http::StatusCode::BAD_REQUEST, r#"{"error":"invalid_grant"}"#) }
        }),
    );
    let listener = mayfly_devstack::loopback_listener().unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    {
        let _guard = runtime.enter();
        runtime.spawn(axum_server::from_tcp(listener).unwrap().serve(app.into_make_service()));
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[identities.given]\nkind = \"env\"\nvar = \"SUBJECT\"\n\n[exchanges.x]\nkind = \"rfc8693\"\ntoken_endpoint = \"{url}\"\n\n[[routes]]\ntool = \"git\"\nhost = \"git.example.com\"\nidentity = \"given\"\nexchange = \"x\"\n"
        ),
    )
    .unwrap();
    let [pw, ghp, _, npm, _, akia, ant, ..] = SECRETS;
    let header = SECRETS[11];
    let script = format!(
        r#"printf 'protocol=https\nhost=git.example.com\npath=org/app.git\n\n' | git -c "credential.helper={helper}" -c credential.useHttpPath=true -c "http.extraheader=Authorization: Bearer {header}" -c "user.password={pw}" credential fill"#,
        helper = mayfly_tests::bin("git-credential-mayfly").display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .arg("agent")
        .args([format!("--api-key={ant}"), format!("GITHUB_TOKEN={ghp}"), npm.into(), akia.into()])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("MAYFLY_CONFIG", &config)
        .env("SUBJECT", "subject-token")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the exchange refused, so git has no credential");
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1, "one exchange request");
    for secret in SECRETS {
        assert!(!bodies[0].contains(secret), "{secret} in the request body {}", bodies[0]);
    }
    let intent: Value = url::form_urlencoded::parse(bodies[0].as_bytes())
        .find(|(k, _)| k == "intent")
        .map(|(_, v)| serde_json::from_str::<Value>(&v).unwrap())
        .unwrap();
    let command: Vec<&str> = intent["command"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(command.starts_with(&["git"]) && command.ends_with(&["credential", "fill"]), "{command:?}");
}
