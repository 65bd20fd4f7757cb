//! The real aws CLI through `credential_process = mayfly-aws-credential`, against moto on
//! loopback behind a gate that verifies the web identity token.

use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mayfly_devstack::AwsStsGate;
use mayfly_tests::{Stack, bin, free_port, mayfly_lines, require_tool};
use serde_json::Value;

pub(super) const ROLE: &str = "arn:aws:iam::123456789012:role/deploy";

/// moto's server, stopped on drop.
pub(super) struct Moto {
    child: Child,
    pub(super) url: String,
}

impl Moto {
    pub(super) fn start() -> Self {
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let moto = Self { child, url: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    /// From now on moto checks every request's SigV4 signature against credentials it
    /// issued itself.
    fn enforce_signatures(&self) {
        let client = reqwest::blocking::Client::builder().no_proxy().build().unwrap();
        let response = client
            .post(format!("{}/moto-api/reset-auth", self.url))
            .header("Content-Type", "application/octet-stream")
            .body("0")
            .send()
            .unwrap();
        assert!(response.status().is_success());
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stack with an aws route `deploy` through the gate, and an AWS config whose only
/// credential is `credential_process`.
fn setup(identity: &str) -> (Stack, Moto, AwsStsGate, std::path::PathBuf) {
    let stack = Stack::new();
    let moto = Moto::start();
    let gate = AwsStsGate::start(stack.runtime(), &stack.issuer, &moto.url).unwrap();
    stack.write_config(&format!(
        "{}\n[[routes]]\nname = \"deploy\"\ntool = \"aws\"\nidentity = \"{identity}\"\nexchange = \"aws\"\nrole_arn = \"{ROLE}\"\n\n[exchanges.aws]\nkind = \"aws-sts\"\ntoken_endpoint = \"{}\"\n\n[identities.aws]\nkind = \"github-actions\"\naudience = \"sts.amazonaws.com\"\n",
        stack.default_routes(),
        gate.url
    ));
    let aws_config = stack.dir.path().join("aws-config");
    std::fs::write(
        &aws_config,
        format!(
            "[profile deploy]\ncredential_process = {} deploy\nregion = us-east-1\nendpoint_url = {}\n",
            bin("mayfly-aws-credential").display(),
            moto.url
        ),
    )
    .unwrap();
    (stack, moto, gate, aws_config)
}

fn aws(stack: &Stack, config: &std::path::Path, args: &[&str]) -> Output {
    Command::new("aws")
        .args(args)
        .current_dir(&stack.work)
        .env_clear()
        .envs(stack.env())
        .env("AWS_CONFIG_FILE", config)
        .env("AWS_SHARED_CREDENTIALS_FILE", stack.dir.path().join("no-credentials-file"))
        .env("AWS_PROFILE", "deploy")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[cfg_attr(any(missing = "aws", missing = "moto_server"), ignore = "needs aws, moto_server: one is not installed")]
fn the_aws_cli_assumes_the_role_and_round_trips_s3_with_one_exchange() {
    if !require_tool("aws") || !require_tool("moto_server") {
        return;
    }
    let (stack, moto, gate, config) = setup("aws");
    let identity: Value =
        serde_json::from_str(&ok(&aws(&stack, &config, &["sts", "get-caller-identity", "--output", "json"]))).unwrap();
    let arn = identity["Arn"].as_str().unwrap();
    assert!(arn.contains("assumed-role/deploy/mayfly.aws.sts.get-caller-identity"), "{arn}");
    // moto authorises assumed-role credentials through the role's policies: give the role
    // one, then only credentials moto issued (and signed requests) pass.
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Federated":"mayfly-dev"},"Action":"sts:AssumeRoleWithWebIdentity"}]}"#;
    ok(&aws(&stack, &config, &["iam", "create-role", "--role-name", "deploy", "--assume-role-policy-document", trust]));
    let allow = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
    ok(&aws(
        &stack,
        &config,
        &["iam", "put-role-policy", "--role-name", "deploy", "--policy-name", "all", "--policy-document", allow],
    ));
    moto.enforce_signatures();
    let file = stack.work.join("hello.txt");
    std::fs::write(&file, "hello from mayfly\n").unwrap();
    ok(&aws(&stack, &config, &["s3", "mb", "s3://mayfly-e2e"]));
    ok(&aws(&stack, &config, &["s3", "cp", file.to_str().unwrap(), "s3://mayfly-e2e/hello.txt"]));
    let back = stack.work.join("back.txt");
    ok(&aws(&stack, &config, &["s3", "cp", "s3://mayfly-e2e/hello.txt", back.to_str().unwrap()]));
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "hello from mayfly\n");
    // The same request with made-up keys is refused: moto really checks.
    let forged = stack.dir.path().join("aws-config-static");
    std::fs::write(&forged, format!("[profile deploy]\naws_access_key_id = ASIAFORGEDFORGED1234\naws_secret_access_key = forged\nregion = us-east-1\nendpoint_url = {}\n", moto.url)).unwrap();
    assert!(!aws(&stack, &forged, &["s3", "cp", "s3://mayfly-e2e/hello.txt", "-"]).status.success());
    assert_eq!(gate.exchanges.load(Ordering::SeqCst), 1, "the CLI does not cache process credentials; mayfly does");
    let audit = stack.client_audit();
    assert!(audit.iter().all(|l| l["tool"] == "aws" && l["scope"] == ROLE));
    assert!(audit[0]["token_id"].as_str().is_some_and(|id| !id.is_empty()), "the access key id is audited");
    stack.assert_no_tokens_on_disk();
}

#[test]
#[cfg_attr(missing = "moto_server", ignore = "needs moto_server, which is not installed")]
fn credential_process_output_is_version_1_and_outlives_botocores_refresh_window() {
    if !require_tool("moto_server") {
        return;
    }
    let (stack, _moto, gate, _) = setup("aws");
    let children: Vec<_> = (0..8)
        .map(|_| {
            Command::new(bin("mayfly-aws-credential"))
                .arg("deploy")
                .env_clear()
                .envs(stack.env())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    assert_eq!(gate.exchanges.load(Ordering::SeqCst), 1, "parallel invocations cause one STS call");
    for out in outputs {
        let doc: Value = serde_json::from_str(&ok(&out)).unwrap();
        assert_eq!(doc["Version"], serde_json::json!(1));
        for key in ["AccessKeyId", "SecretAccessKey", "SessionToken"] {
            assert!(doc[key].as_str().is_some_and(|v| !v.is_empty()), "{key}");
        }
        let expiration = time::OffsetDateTime::parse(
            doc["Expiration"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert!(expiration - time::OffsetDateTime::now_utc() > time::Duration::minutes(30), "{expiration}");
    }
}

#[test]
#[cfg_attr(any(missing = "aws", missing = "moto_server"), ignore = "needs aws, moto_server: one is not installed")]
fn a_forged_web_identity_token_is_one_line_and_no_credentials() {
    if !require_tool("aws") || !require_tool("moto_server") {
        return;
    }
    let (stack, _moto, gate, config) = setup("given");
    let forged = mayfly_sts::SigningKey::generate(mayfly_sts::Algorithm::Es256)
        .unwrap()
        .sign(Some("JWT"), &serde_json::json!({"iss": stack.issuer.issuer(), "sub": "x", "aud": "sts.amazonaws.com", "exp": 4_000_000_000u64}))
        .unwrap();
    let out = Command::new(bin("mayfly-aws-credential"))
        .arg("deploy")
        .env_clear()
        .envs(stack.env())
        .env("MAYFLY_TEST_SUBJECT", &forged)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let lines = mayfly_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("refused: InvalidIdentityToken"), "{}", lines[0]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&forged));
    assert_eq!(gate.exchanges.load(Ordering::SeqCst), 0);
    let out = aws(&stack, &config, &["sts", "get-caller-identity"]);
    assert!(!out.status.success());
}
