//! pip installs from an auth-required Python index, and curl calls a REST API, through
//! `mayfly exec --proxy`: neither holds a token, and neither needs a placeholder (both send
//! their first request without credentials, and the proxy adds the token to it).

use std::process::{Command, Output};

use mayfly_core::RouteEntry;
use mayfly_devstack::pypi_greeting;
use mayfly_tests::{Stack, bin, require_tool, routes_toml};
use serde_json::Value;

/// `mayfly exec --session NAME --proxy [FLAGS] -- sh -c SCRIPT` in the work tree.
fn exec(stack: &Stack, session: &str, flags: &[&str], script: &str) -> Output {
    Command::new(bin("mayfly"))
        .args(["exec", "--session", session, "--proxy"])
        .args(flags)
        .args(["--", "sh", "-c", script])
        .current_dir(&stack.work)
        .env_clear()
        .envs(stack.env())
        .output()
        .expect("mayfly exec runs")
}

fn proxy_lines(stack: &Stack, session: &str) -> Vec<Value> {
    stack.client_audit().into_iter().filter(|l| l["session"] == session && l["tool"] == "proxy").collect()
}

fn read(stack: &Stack, name: &str) -> String {
    std::fs::read_to_string(stack.work.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A route of `tool` to the server at `base_url`, for these operations.
fn route(tool: &str, base_url: &str, path: Option<&str>, operations: &[&str]) -> RouteEntry {
    RouteEntry {
        tool: tool.into(),
        host: Some(base_url.trim_start_matches("https://").into()),
        path: path.map(Into::into),
        identity: "ci".into(),
        exchange: "sts".into(),
        operations: Some(operations.iter().map(|o| (*o).to_owned()).collect()),
        ..Default::default()
    }
}

#[test]
#[cfg_attr(missing = "pip", ignore = "needs pip, which is not installed")]
fn pip_installs_from_an_auth_required_index_through_the_proxy() {
    if !require_tool("pip") {
        return;
    }
    let stack = Stack::builder().pypi_index().start();
    let index = stack.pypi_index();
    let host = index.base_url.trim_start_matches("https://").to_owned();
    // The route covers one project; the index has another.
    let mut entry = route("pypi", &index.base_url, Some("mayfly-demo"), &["read"]);
    entry.ca_file = Some(stack.ca.ca_cert.clone());
    stack.write_config(&routes_toml(vec![entry]));
    // No pip config but the session's (`/etc/pip.conf` may name a `cert`), no prompt.
    let pip = format!(
        "PIP_CONFIG_FILE=/dev/null pip install --no-input --no-cache-dir --disable-pip-version-check --no-deps --index-url {}",
        index.index_url
    );
    let script = format!(
        "set -e; {pip} --target site mayfly-demo > pip-out.txt 2>&1; \
         PYTHONPATH=site python3 -c 'import mayfly_demo; print(mayfly_demo.GREETING)'; \
         env > env.txt; \
         {pip} --target other mayfly-other > other-err.txt 2>&1 || echo other-refused"
    );
    let out = exec(&stack, "pip", &[], &script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(stack.work.join("pip-out.txt")).unwrap_or_default()
    );
    // The wheel came from the index, fetched with the proxy's token.
    assert!(stdout.contains(&pypi_greeting("mayfly-demo")), "{stdout}");
    assert!(index.served().iter().any(|p| p == "packages/mayfly_demo-1.0.0-py3-none-any.whl"), "{:?}", index.served());
    // No token, and no credential of any kind, in pip's environment.
    let env = read(&stack, "env.txt");
    assert!(env.contains("PIP_CERT="), "{env}");
    assert!(!env.contains("eyJ"), "the environment holds a JWT");
    assert!(!env.contains("PIP_INDEX_URL") && !env.contains("__token__"), "{env}");

    // The project the route does not cover went through untouched: the index answered 401
    // (which pip does not print without `-v`) and pip found nothing to install.
    assert!(stdout.contains("other-refused"), "{stdout}");
    let err = read(&stack, "other-err.txt");
    assert!(err.contains("No matching distribution found for mayfly-other"), "{err}");
    assert!(index.refused() >= 1);
    assert!(!index.served().iter().any(|p| p.contains("mayfly-other")), "{:?}", index.served());

    let lines = proxy_lines(&stack, "pip");
    let demo = format!("https://{host}/mayfly-demo");
    for path in ["/simple/mayfly-demo/", "/packages/mayfly_demo-1.0.0-py3-none-any.whl"] {
        assert!(
            lines.iter().any(|l| l["outcome"] == "proxied"
                && l["method"] == "GET"
                && l["path"] == path
                && l["operation"] == "read"
                && l["target"] == demo
                && l["fingerprint"].as_str().is_some_and(|f| f.starts_with("sha256:"))),
            "{path}: {lines:?}"
        );
    }
    assert!(
        lines.iter().any(|l| l["outcome"] == "tunnelled"
            && l["target"] == format!("https://{host}/mayfly-other")
            && l["reason"] == "upstream answered 401"),
        "{lines:?}"
    );

    // Under --deny-unrouted the proxy refuses it itself (403), and the index never sees it.
    let refused = index.refused();
    let out = exec(&stack, "pip-deny", &["--deny-unrouted"], &format!("{pip} --target other mayfly-other || true"));
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(all.contains("No matching distribution found for mayfly-other"), "{all}");
    assert_eq!(index.refused(), refused);
    let lines = proxy_lines(&stack, "pip-deny");
    assert!(
        lines.iter().any(|l| l["outcome"] == "denied"
            && l["target"] == format!("https://{host}/mayfly-other")
            && l["reason"] == "no route for this repository"),
        "{lines:?}"
    );
    stack.assert_no_tokens_on_disk();
}

#[test]
#[cfg_attr(missing = "curl", ignore = "needs curl, which is not installed")]
fn curl_calls_a_rest_api_through_the_proxy_by_method() {
    if !require_tool("curl") {
        return;
    }
    let stack = Stack::builder().kube().start();
    let api = stack.kube().base_url.clone();
    let mut entry = route("kubectl", &api, None, &["read"]);
    entry.ca_file = Some(stack.ca.ca_cert.clone());
    stack.write_config(&routes_toml(vec![entry]));
    let port = api.rsplit(':').next().unwrap().to_owned();
    // The same server as `localhost` is a host no route names, and this machine: the
    // proxy refuses to open it.
    let script = format!(
        "curl -sS -w '\\n%{{http_code}}\\n' {api}/version > get.txt 2>&1; \
         curl -sS -w '\\n%{{http_code}}\\n' -X POST -H 'content-type: application/json' -d '{{}}' {api}/api/v1/namespaces > post.txt 2>&1; \
         NO_PROXY= no_proxy= curl -sS -w '\\n%{{http_code}}\\n' --cacert {ca} https://localhost:{port}/version > unrouted.txt 2>&1; \
         env > env.txt",
        ca = stack.ca.ca_cert.display()
    );
    let out = exec(&stack, "rest", &[], &script);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let get = read(&stack, "get.txt");
    assert!(get.contains("v1.32.0-mayfly-dev") && get.trim_end().ends_with("200"), "{get}");
    assert_eq!(stack.kube().served.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The read-only route's refusal: 403 and the proxy's one line, as curl shows it.
    let post = read(&stack, "post.txt");
    let host = api.trim_start_matches("https://");
    assert_eq!(post, format!("mayfly: route `kubectl:{host}` does not allow write (allowed: read)\n\n403\n"), "{post}");
    let unrouted = read(&stack, "unrouted.txt");
    assert!(unrouted.contains("CONNECT tunnel failed") && unrouted.contains("403"), "{unrouted}");
    assert!(!read(&stack, "env.txt").contains("eyJ"), "the environment holds a JWT");

    let lines = proxy_lines(&stack, "rest");
    assert!(
        lines.iter().any(|l| l["outcome"] == "proxied"
            && l["method"] == "GET"
            && l["operation"] == "read"
            && l["fingerprint"].is_string()),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l["outcome"] == "denied" && l["method"] == "POST" && l["operation"] == "write"),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l["outcome"] == "denied" && l["target"] == format!("localhost:{port}")), "{lines:?}");
    stack.assert_no_tokens_on_disk();
}
