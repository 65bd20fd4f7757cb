//! `bazel-credential-mayfly`, driven as Bazel drives a credential helper (`get`, the
//! request on stdin), with the specification's request shapes, against a loopback HTTPS
//! file server (the module proxy) that takes only tokens minted for each file's path. Bazel
//! itself is not installable here, so the HTTP request Bazel would make with the answer's
//! headers is made by the test.

use mayfly_core::RouteEntry;
use mayfly_devstack::{GO_MODULES, GO_VERSION};
use mayfly_tests::{Stack, bin, mayfly_lines, routes_toml};
use serde_json::Value;

/// A stack with a route `tool = "http"` for the greeting module's files on the proxy,
/// bound to each file by the scope the proxy checks.
fn stack() -> Stack {
    let stack = Stack::builder().go_proxy().start();
    let host = stack.go_proxy().base_url.trim_start_matches("https://").to_owned();
    stack.write_config(&routes_toml(vec![RouteEntry {
        tool: "http".into(),
        host: Some(host),
        path: Some(GO_MODULES[0].into()),
        identity: "ci".into(),
        exchange: "sts".into(),
        scope: Some("repo:{path}:{operation}".into()),
        ..Default::default()
    }]));
    stack
}

fn helper(stack: &Stack, args: &[&str], request: &str) -> std::process::Output {
    assert_cmd::Command::new(bin("bazel-credential-mayfly"))
        .args(args)
        .env_clear()
        .envs(stack.env())
        .write_stdin(request)
        .output()
        .expect("the helper runs")
}

fn file_url(stack: &Stack, module: &str, suffix: &str) -> String {
    format!("{}/{module}/@v/{GO_VERSION}{suffix}", stack.go_proxy().base_url)
}

#[test]
fn get_answers_an_authorization_header_the_server_takes_for_that_uri_only() {
    let stack = stack();
    let zip = file_url(&stack, GO_MODULES[0], ".zip");
    let out = helper(&stack, &["get"], &format!(r#"{{"uri": "{zip}"}}"#));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).expect("a JSON answer");
    let headers = answer["headers"]["Authorization"].as_array().expect("an Authorization header list");
    assert_eq!(headers.len(), 1);
    let authorization = headers[0].as_str().unwrap();
    assert!(authorization.starts_with("Bearer "), "{answer}");
    let expires = answer["expires"].as_str().expect("expires");
    let expires = time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339)
        .expect("expires is RFC 3339");
    assert!(expires > time::OffsetDateTime::now_utc());

    // The request Bazel makes with the answer's headers.
    let client = stack.https_client();
    let response = client.get(&zip).header("authorization", authorization).send().unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.bytes().unwrap().starts_with(b"PK\x03\x04"));
    // The token is bound to that file: the module's other files are refused with it.
    let other = file_url(&stack, GO_MODULES[0], ".mod");
    let response = client.get(&other).header("authorization", authorization).send().unwrap();
    assert_eq!(response.status(), 403);

    let audit = stack.client_audit();
    let line = audit.iter().find(|l| l["outcome"] == "issued").expect("an issued line");
    assert_eq!(line["tool"], "http");
    assert_eq!(line["target"], zip.as_str());
    assert_eq!(line["operation"], "read");
    assert_eq!(stack.sts_issued(), 1);

    // Asked again (Bazel asks per URI when it did not cache): the cached token.
    let again = helper(&stack, &["get"], &format!(r#"{{"uri": "{zip}"}}"#));
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["headers"]["Authorization"][0], authorization);
    assert_eq!(stack.sts_issued(), 1);
    stack.assert_no_tokens_on_disk();
}

#[test]
fn a_uri_no_route_serves_gets_no_headers_and_exit_0() {
    let stack = stack();
    for uri in [
        "https://example.com/foo/bar.tar.gz".to_owned(),
        file_url(&stack, GO_MODULES[1], ".zip"),
        format!("{}/", stack.go_proxy().base_url),
    ] {
        let out = helper(&stack, &["get"], &format!(r#"{{"uri": "{uri}"}}"#));
        assert_eq!(out.status.code(), Some(0), "{uri}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "{}\n", "{uri}");
        assert!(out.stderr.is_empty(), "{uri}: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(stack.sts_audit().is_empty(), "the exchange was asked: {:?}", stack.sts_audit());
    // Bazel's request without headers is refused by the server, as it would be anyway.
    let response = stack.https_client().get(file_url(&stack, GO_MODULES[1], ".zip")).send().unwrap();
    assert_eq!(response.status(), 401);
}

#[test]
fn malformed_input_is_one_line_on_stderr_and_exit_1() {
    let stack = stack();
    let zip = file_url(&stack, GO_MODULES[0], ".zip");
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["get"], String::new()),
        (vec!["get"], "not json".into()),
        (vec!["get"], format!(r#"{{"url": "{zip}"}}"#)),
        (vec!["get"], r#"{"uri": ["https://example.com/x"]}"#.into()),
        (vec!["get"], format!(r#"{{"uri": "{zip}?ghp_secret=evil"}}"#)),
        (vec!["get"], format!(r#"{{"uri": "{}"}}"#, zip.replace("https://", "https://ghp_secret@"))),
        (vec!["get"], r#"{"uri": "https://example.com/x\u001b[2J"}"#.into()),
        (vec!["teleport"], format!(r#"{{"uri": "{zip}"}}"#)),
        (vec![], format!(r#"{{"uri": "{zip}"}}"#)),
    ];
    for (args, request) in &cases {
        let out = helper(&stack, args, request);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?} {request:?}");
        assert!(out.stdout.is_empty(), "{args:?} {request:?}: {}", String::from_utf8_lossy(&out.stdout));
        assert_eq!(mayfly_lines(&out.stderr).len(), 1, "{args:?} {request:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(!stderr.contains("ghp_") && !stderr.contains("evil") && !stderr.contains('\u{1b}'), "{stderr}");
    }
    assert_eq!(stack.sts_issued(), 0);
}
