//! The real kubectl, through `mayfly-kube-credential`, against an API server that accepts
//! only tokens minted for that cluster.

use base64::Engine;
use mayfly_tests::{Stack, bin, mayfly_lines, require_tool};

/// A kubeconfig whose only user runs the plugin (or presents a fixed token).
fn kubeconfig(stack: &Stack, api_version: &str, static_token: Option<&str>) -> std::path::PathBuf {
    let ca = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&stack.ca.ca_cert).unwrap());
    let user = match static_token {
        Some(token) => format!("    token: {token}\n"),
        None => format!(
            "    exec:\n      apiVersion: {api_version}\n      command: {}\n      interactiveMode: Never\n      provideClusterInfo: true\n",
            bin("mayfly-kube-credential").display()
        ),
    };
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: dev\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: mayfly\n  user:\n{user}contexts:\n- name: dev\n  context:\n    cluster: dev\n    user: mayfly\ncurrent-context: dev\n",
        stack.kube().base_url
    );
    let path = stack.dir.path().join(format!("kubeconfig-{}", api_version.rsplit('/').next().unwrap()));
    std::fs::write(&path, config).unwrap();
    path
}

fn kubectl(stack: &Stack, config: &std::path::Path) -> std::process::Output {
    std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(config)
        .args(["get", "--raw", "/version"])
        .env_clear()
        .envs(stack.env())
        .output()
        .unwrap()
}

#[test]
#[cfg_attr(missing = "kubectl", ignore = "needs kubectl, which is not installed")]
fn kubectl_gets_a_cluster_token_for_v1_and_v1beta1() {
    if !require_tool("kubectl") {
        return;
    }
    let stack = Stack::builder().git().kube().start();
    for api_version in ["client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"] {
        let out = kubectl(&stack, &kubeconfig(&stack, api_version, None));
        assert!(out.status.success(), "{api_version}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("v1.32.0-mayfly-dev"));
    }
    let audit = stack.client_audit();
    assert!(audit.iter().all(|l| l["tool"] == "kubectl"
        && l["scope"] == format!("cluster:{}", stack.kube().base_url.trim_start_matches("https://"))));
    assert_eq!(audit.iter().filter(|l| l["outcome"] == "issued").count(), 1, "later runs come from the cache");
    assert_eq!(stack.sts_issued(), 1);
    stack.assert_no_tokens_on_disk();
}

#[test]
#[cfg_attr(missing = "kubectl", ignore = "needs kubectl, which is not installed")]
fn the_api_server_refuses_anything_but_a_minted_token() {
    if !require_tool("kubectl") {
        return;
    }
    let stack = Stack::builder().git().kube().start();
    let out = kubectl(&stack, &kubeconfig(&stack, "static", Some("not-a-minted-token")));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthorized"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
#[cfg_attr(missing = "kubectl", ignore = "needs kubectl, which is not installed")]
fn an_unrouted_cluster_fails_with_one_line() {
    if !require_tool("kubectl") {
        return;
    }
    let stack = Stack::builder().git().kube().start();
    stack.write_config(&stack.route("org/app", &["read"], "ci"));
    let out = kubectl(&stack, &kubeconfig(&stack, "client.authentication.k8s.io/v1", None));
    assert!(!out.status.success());
    let lines = mayfly_lines(&out.stderr);
    assert!(!lines.is_empty() && lines.iter().all(|l| l.contains("no mayfly route for kubectl cluster")), "{lines:?}");
    assert_eq!(stack.sts_issued(), 0);
}

#[test]
fn a_server_flag_that_disagrees_with_client_go_gets_nothing() {
    let stack = Stack::builder().git().kube().start();
    let info = |server: &str| {
        format!(
            r#"{{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{{"cluster":{{"server":"{server}"}}}}}}"#
        )
    };
    let run = |server_flag: &str, actual: &str| {
        assert_cmd::Command::new(bin("mayfly-kube-credential"))
            .args(["--server", server_flag])
            .env_clear()
            .envs(stack.env())
            .env("KUBERNETES_EXEC_INFO", info(actual))
            .output()
            .unwrap()
    };
    let kube = stack.kube().base_url.clone();
    let agreed = run(&kube, &format!("{kube}/"));
    assert!(agreed.status.success(), "{}", String::from_utf8_lossy(&agreed.stderr));
    for other in ["https://127.0.0.1:1", "https://evil.example:6443", &kube.replace("https://", "http://")] {
        let out = run(&kube, other);
        assert_eq!(out.status.code(), Some(1), "{other}");
        assert!(out.stdout.is_empty(), "{other}");
        let lines = mayfly_lines(&out.stderr);
        assert!(lines.len() == 1 && lines[0].contains("refusing"), "{other}: {lines:?}");
    }
    assert_eq!(stack.sts_issued(), 1, "only the agreeing request was exchanged");
}
