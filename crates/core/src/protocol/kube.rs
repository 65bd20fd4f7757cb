//! kubectl's exec credential plugin protocol (`client.authentication.k8s.io/v1` and
//! `v1beta1`), as client-go speaks it.
//!
//! The cluster comes from `KUBERNETES_EXEC_INFO` (`provideClusterInfo: true`) or from
//! `--server URL` in the plugin's args. The answer echoes the requested `apiVersion`, which
//! client-go insists on, and carries `expirationTimestamp` a little before the token's
//! real expiry, because client-go has no skew margin of its own.

use std::io::Write;

use serde::Deserialize;
use serde_json::json;

use crate::{Env, EnvVars, Operation, Process, Target, Tool};

/// API versions client-go accepts from exec plugins.
const API_VERSIONS: [&str; 2] = ["client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"];
/// How much earlier than the token's expiry kubectl is told to come back.
const EXPIRY_SKEW_SECS: i64 = 30;
/// Largest `KUBERNETES_EXEC_INFO` accepted.
const MAX_EXEC_INFO: usize = 64 * 1024;

#[derive(Deserialize)]
struct ExecInfo {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<String>,
    spec: Option<Spec>,
}

#[derive(Deserialize)]
struct Spec {
    cluster: Option<Cluster>,
}

#[derive(Deserialize)]
struct Cluster {
    server: Option<String>,
}

/// The `mayfly-kube-credential` binary.
pub const HOOK: crate::protocol::Hook = crate::protocol::Hook {
    name: "mayfly-kube-credential",
    help: r#"kubectl's exec credential plugin: answers with a token for the cluster client-go names
(provideClusterInfo), or the one `--server URL` names; never for another.

Wire it in a kubeconfig user:
  exec: {apiVersion: client.authentication.k8s.io/v1, command: mayfly-kube-credential,
         interactiveMode: Never, provideClusterInfo: true}
"#,
    serve: |args, _stdin, stdout, env, ancestry| serve(args, stdout, env, ancestry),
};

/// Runs one plugin invocation; returns the exit code.
pub fn serve(args: &[String], stdout: &mut dyn Write, env: Env, ancestry: &dyn Fn() -> Vec<Process>) -> i32 {
    match handle(args, &env, ancestry).and_then(|answer| {
        let mut line = serde_json::to_vec(&answer).map_err(|e| e.to_string())?;
        line.push(b'\n');
        stdout.write_all(&line).and_then(|()| stdout.flush()).map_err(|e| e.to_string())
    }) {
        Ok(()) => 0,
        Err(message) => {
            crate::protocol::warn(&message);
            1
        }
    }
}

fn handle(args: &[String], env: &Env, ancestry: &dyn Fn() -> Vec<Process>) -> Result<serde_json::Value, String> {
    let info = match env.get(EnvVars::KUBERNETES_EXEC_INFO) {
        Some(raw) if raw.len() > MAX_EXEC_INFO => {
            return Err("KUBERNETES_EXEC_INFO is too large".into());
        }
        Some(raw) => Some(
            serde_json::from_str::<ExecInfo>(raw)
                .map_err(|_| "KUBERNETES_EXEC_INFO is not an ExecCredential".to_owned())?,
        ),
        None => None,
    };
    if info.as_ref().and_then(|i| i.kind.as_deref()).is_some_and(|k| k != "ExecCredential") {
        return Err("KUBERNETES_EXEC_INFO is not an ExecCredential".into());
    }
    let api_version = info.as_ref().and_then(|i| i.api_version.clone()).unwrap_or_else(|| API_VERSIONS[0].to_owned());
    if !API_VERSIONS.contains(&api_version.as_str()) {
        return Err(format!(
            "unsupported exec credential apiVersion `{}` (v1 or v1beta1)",
            crate::sanitize_for_terminal(&api_version)
        ));
    }
    let named = server_arg(args)?.map(|s| cluster(&s)).transpose()?;
    let talking_to = info.and_then(|i| i.spec?.cluster?.server).map(|s| cluster(&s)).transpose()?;
    // A token for the cluster `--server` names must not go to another one client-go is
    // talking to (a kubeconfig whose user entry is shared by several clusters).
    let target = match (named, talking_to) {
        (Some(named), Some(actual)) if named != actual => {
            return Err(format!(
                "`--server` names {} but kubectl is talking to {}: refusing to hand out a token for another cluster",
                named.display(),
                actual.display()
            ));
        }
        (Some(target), _) | (None, Some(target)) => target,
        (None, None) => {
            return Err(
                "no cluster server: set `provideClusterInfo: true` in the kubeconfig, or pass `--server URL`".into()
            );
        }
    };
    let issued = crate::protocol::token_for(&target, &|_| Operation::Read, env.clone(), ancestry)?
        .ok_or_else(|| format!("no mayfly route for kubectl cluster {}", target.display()))?;
    let mut status = json!({"token": issued.token.expose()});
    if let Some(expiry) = issued.expires_at {
        status["expirationTimestamp"] = json!(crate::audit::rfc3339(expiry - EXPIRY_SKEW_SECS));
    }
    Ok(json!({"apiVersion": api_version, "kind": "ExecCredential", "status": status}))
}

/// The normalised target of a cluster server URL.
fn cluster(server: &str) -> Result<Target, String> {
    let invalid = || format!("invalid cluster server `{}`", crate::sanitize_for_terminal(server));
    let url = crate::target::strict_url(server).ok_or_else(invalid)?;
    let host = crate::target::host_port(&url).ok_or_else(invalid)?;
    Target::new(Tool::Kubectl, url.scheme(), &host, None).map_err(|e| e.to_string())
}

/// `--server URL` or `--server=URL`, the only argument the plugin takes.
fn server_arg(args: &[String]) -> Result<Option<String>, String> {
    match args {
        [] => Ok(None),
        [flag, url] if flag == "--server" => Ok(Some(url.clone())),
        [flag] if flag == "--server" => Err("`--server` needs a URL".into()),
        [arg] if arg.starts_with("--server=") => Ok(Some(arg["--server=".len()..].to_owned())),
        _ => Err(format!(
            "unknown arguments `{}` (expected `--server URL`)",
            crate::sanitize_for_terminal(&args.join(" "))
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], exec_info: Option<&str>) -> (i32, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "").unwrap();
        let mut pairs = vec![(EnvVars::MAYFLY_CONFIG.to_owned(), config.display().to_string())];
        if let Some(info) = exec_info {
            pairs.push((EnvVars::KUBERNETES_EXEC_INFO.to_owned(), info.to_owned()));
        }
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut out = Vec::new();
        let code = serve(&args, &mut out, Env::from_pairs(pairs), &Vec::new);
        (code, out)
    }

    #[test]
    fn malformed_or_missing_cluster_info_fails_with_nothing_on_stdout() {
        for (args, info) in [
            (vec![], None),
            (vec![], Some("not json")),
            (vec![], Some(r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"Secret"}"#)),
            (vec![], Some(r#"{"apiVersion":"client.authentication.k8s.io/v1alpha1","kind":"ExecCredential"}"#)),
            (
                vec![],
                Some(
                    r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{"interactive":false}}"#,
                ),
            ),
            (vec!["--server"], None),
            (vec!["--bogus"], None),
            (vec!["--server", "not a url"], None),
        ] {
            let (code, out) = run(&args, info);
            assert_eq!(code, 1, "{args:?} {info:?}");
            assert!(out.is_empty());
        }
    }

    #[test]
    fn an_unrouted_cluster_is_an_error_not_an_empty_credential() {
        let info = r#"{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","spec":{"cluster":{"server":"https://k8s.example.com:6443"}}}"#;
        let (code, out) = run(&[], Some(info));
        assert_eq!((code, out.len()), (1, 0));
    }
}
