//! A token never does more than its route and operation: values a tool supplies cannot
//! add, widen or open scopes, on the client or at the exchange.

use mayfly_tests::{Stack, bin};
use serde_json::{Value, json};

/// Encodings that git decodes into a repository path before it asks the helper, each of
/// which would end a scope, start another or widen one if pasted into `repo:{path}:read`.
const HOSTILE_PATH_TAILS: [&str; 11] = [
    "x%20repo:org/app:write",
    "x%09y",
    "x%0by",
    "x%3Awrite",
    "x%2A",
    "%2A",
    "x%7Bpath%7D",
    "x%C2%A0y",
    "x%E2%80%A8y",
    "x%E3%80%80y",
    "x%2520y",
];

#[test]
fn git_paths_that_would_change_the_scope_mint_nothing() {
    let stack = Stack::new();
    for tail in HOSTILE_PATH_TAILS {
        let url = stack.repo_url(&format!("org/docs/{tail}"));
        let out = stack.git(&stack.work, &["ls-remote", &url]);
        assert!(!out.status.success(), "{tail}: git reached the repository");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!mayfly_core::contains_jwt(stderr.as_bytes()), "{tail}: {stderr}");
    }
    assert!(stack.sts_audit().is_empty(), "a hostile path reached the exchange: {:?}", stack.sts_audit());
    let denied: Vec<Value> = stack.client_audit().into_iter().filter(|l| l["outcome"] == "denied").collect();
    // Control characters (`%09`, `%0b`) are refused by the protocol parser before any
    // route is looked at, so they leave no audit line; every other tail is denied at the scope.
    assert_eq!(denied.len(), HOSTILE_PATH_TAILS.len() - 2, "{denied:?}");
    assert!(denied.iter().all(|l| l["reason"].as_str().unwrap().contains("cannot go into a scope")), "{denied:?}");

    // The same route still works, and the token's scope is exactly the one intended.
    let out = stack.git(&stack.work, &["ls-remote", &stack.repo_url("org/docs")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let issued: Vec<Value> = stack.sts_audit().into_iter().filter(|l| l["outcome"] == "issued").collect();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0]["scope"], "repo:org/docs:read");
}

#[test]
fn cargo_crate_names_that_would_change_the_scope_mint_nothing() {
    let stack = Stack::builder().git().cargo().start();
    let index = stack.cargo().index_url.clone();
    let mut lines: Vec<String> = ["evil crate", "a*", "a:b", "a%20b", "a\u{2028}b", "{path}", "a\u{a0}b", "é"]
        .iter()
        .map(|name| {
            json!({"v": 1, "registry": {"index-url": index}, "kind": "get", "operation": "publish", "name": name, "vers": "1.0.0", "cksum": "00"})
                .to_string()
        })
        .collect();
    lines.push(String::new());
    let out = assert_cmd::Command::new(bin("cargo-credential-mayfly"))
        .arg("--cargo-plugin")
        .env_clear()
        .envs(stack.env())
        .write_stdin(lines.join("\n"))
        .output()
        .unwrap();
    let answers: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(answers.len(), 9, "{answers:?}");
    assert!(answers[1..].iter().all(|a| a.get("Err").is_some()), "{answers:?}");
    assert!(stack.sts_audit().is_empty(), "{:?}", stack.sts_audit());
}

fn exchange(stack: &Stack, audience: &str, scope: &str) -> (u16, Value) {
    mayfly_tests::post_exchange(&stack.https_client(), &stack.sts.url, &stack.issuer, audience, scope)
}

#[test]
fn the_exchange_takes_only_single_scopes_of_shapes_it_can_grant() {
    let stack = Stack::new();
    let git = stack.git_server().base_url.clone();
    let (status, body) = exchange(&stack, &git, "repo:org/app:write");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "repo:org/app:write");
    let long = format!("repo:org/{}:read", "a".repeat(300));
    let many = vec!["repo:org/app:read"; 33].join(" ");
    for scope in [
        "repo:org/app:read  repo:org/docs:read",
        "repo:org/app:read\trepo:org/app:write",
        "repo:org/app:read\u{a0}x",
        "repo:org/a*:write",
        "repo:org/app:write:extra",
        "admin:everything",
        "repo:org/{repository}:write",
        "repo:org/app%20x:write",
        long.as_str(),
        many.as_str(),
    ] {
        let (status, body) = exchange(&stack, &git, scope);
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_scope")), "{scope:?}: {body}");
    }
    let issued = stack.sts_issued();
    assert_eq!(issued, 1, "only the well-formed request was granted");
    // A huge audience is refused, and the audit log keeps only its start.
    let (status, body) = exchange(&stack, &format!("{git}/{}", "a".repeat(60_000)), "repo:org/app:read");
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_target")), "{body}");
    let longest = stack.sts_audit().iter().filter_map(|l| l["audience"].as_str().map(str::len)).max();
    assert!(longest.is_some_and(|n| n <= 512), "{longest:?}");
}

#[test]
fn oversize_requests_are_refused_before_parsing() {
    let stack = Stack::new();
    let client = stack.https_client();
    for path in ["/token", "/revoke", "/introspect", "/registry/token"] {
        let body = format!("scope={}", "a".repeat(64 * 1024 + 1));
        let response = client
            .post(format!("{}{path}", stack.sts.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 413, "{path}");
    }
    assert!(stack.sts_audit().is_empty(), "an oversize request was parsed: {:?}", stack.sts_audit());
}

#[test]
fn registry_tokens_take_only_distribution_names_and_die_with_their_parent() {
    let stack = Stack::builder().git().oci().start();
    let client = stack.https_client();
    let service = format!("127.0.0.1:{}", stack.oci_port());
    let parent = mayfly_tests::exchange_token(
        &client,
        &stack.sts.url,
        &stack.issuer,
        &service,
        &format!("oci:{service}/test/*:write"),
    );
    let registry_token = |scope: &str| -> Value {
        let response = client
            .get(format!("{}/registry/token", stack.sts.url))
            .query(&[("service", service.as_str()), ("scope", scope)])
            .basic_auth("mayfly", Some(&parent))
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        response.json().unwrap()
    };
    let access = |body: &Value| {
        let token = body["token"].as_str().unwrap();
        mayfly_core::peek_claims(token).unwrap();
        let payload = token.split('.').nth(1).unwrap();
        use base64::Engine;
        let claims: Value =
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        claims["access"].clone()
    };
    let good = registry_token("repository:test/hello:pull,push");
    assert_eq!(access(&good), json!([{"type": "repository", "name": "test/hello", "actions": ["pull", "push"]}]));
    for name in
        ["test/Hello", "test//x", "test/x:latest", "test/x@sha256", "test/a b", "test/*", "test/..", "test/x%20"]
    {
        let body = registry_token(&format!("repository:{name}:pull,push"));
        assert_eq!(access(&body), json!([]), "{name:?}");
    }

    // Revoking the exchange token ends the registry token derived from it.
    let introspect = |token: &str| -> Value {
        client
            .post(format!("{}/introspect", stack.sts.url))
            .bearer_auth(token)
            .form(&[("token", token)])
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let derived = good["token"].as_str().unwrap().to_owned();
    assert_eq!(introspect(&derived)["active"], true);
    let revoked = client.post(format!("{}/revoke", stack.sts.url)).form(&[("token", parent.as_str())]).send().unwrap();
    assert_eq!(revoked.status().as_u16(), 200);
    assert_eq!(introspect(&derived)["active"], false);
}

#[test]
#[cfg_attr(missing = "npm", ignore = "needs npm, which is not installed")]
fn shim_package_names_that_would_change_the_scope_mint_nothing() {
    if !mayfly_tests::require_tool("npm") {
        return;
    }
    let stack = Stack::new();
    stack.write_config(&format!(
        "{}\n[[routes]]\ntool = \"npm\"\nprotocol = \"http\"\nhost = \"127.0.0.1:9\"\nidentity = \"ci\"\nexchange = \"sts\"\noperations = [\"read\", \"publish\"]\n",
        stack.default_routes()
    ));
    let shims = stack.dir.path().join("shims");
    std::fs::create_dir_all(&shims).unwrap();
    std::os::unix::fs::symlink(bin("mayfly-shim"), shims.join("npm")).unwrap();
    for name in ["evil pkg", "pkg:write", "pkg*", "@org/{path}", "pkg\u{2028}x", "pkg%20x", "pkg\u{a0}x"] {
        let project = stack.work.join("project");
        std::fs::create_dir_all(&project).unwrap();
        std::fs::write(project.join("package.json"), json!({"name": name, "version": "1.0.0"}).to_string()).unwrap();
        let out = std::process::Command::new(shims.join("npm"))
            .args(["publish", "--registry", "http://127.0.0.1:9/"])
            .current_dir(&project)
            .env_clear()
            .envs(stack.env())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name:?}");
        let lines = mayfly_tests::mayfly_lines(&out.stderr);
        assert!(lines.len() == 1 && lines[0].contains("cannot go into a scope"), "{name:?}: {lines:?}");
    }
    assert!(stack.sts_audit().is_empty(), "{:?}", stack.sts_audit());
}
