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

use crate::protocol::{Refusal, Reply};
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
    let (api_version, target) = match request(args, &env) {
        Ok(request) => request,
        Err(refusal) => return refuse(&refusal, None).write(stdout),
    };
    let issued = match crate::protocol::token_for(&target, &|_| Operation::Read, env.clone(), ancestry) {
        Ok(issued) => issued,
        Err(refusal) => return refuse(&refusal, Some(&target)).write(stdout),
    };
    let mut status = json!({"token": issued.token.expose()});
    if let Some(expiry) = issued.expires_at {
        status["expirationTimestamp"] = json!(crate::audit::rfc3339(expiry - EXPIRY_SKEW_SECS));
    }
    let answer = json!({"apiVersion": api_version, "kind": "ExecCredential", "status": status});
    let mut line = answer.to_string().into_bytes();
    line.push(b'\n');
    match stdout.write_all(&line).and_then(|()| stdout.flush()) {
        Ok(()) => 0,
        Err(e) => refuse(&Refusal::Failed(e.to_string()), Some(&target)).write(stdout),
    }
}

/// How client-go is answered without a token. An exec plugin has no "not found": any
/// exit but 0 fails the request and shows stderr, so every refusal is one line there, a
/// cluster no route serves included (an empty credential would be sent as is).
fn refuse(refusal: &Refusal, cluster: Option<&Target>) -> Reply {
    match refusal {
        Refusal::NotOurs | Refusal::NeedsPath { .. } => Reply::line(format!(
            "no mayfly route for kubectl cluster {}",
            cluster.map_or_else(String::new, Target::display)
        )),
        Refusal::Refused { .. } | Refusal::Failed(_) | Refusal::Unsupported(_) => Reply::line(refusal.to_string()),
    }
}

/// The `apiVersion` to answer in and the cluster the token is for.
fn request(args: &[String], env: &Env) -> Result<(String, Target), Refusal> {
    let not_exec_credential = || Refusal::Failed("KUBERNETES_EXEC_INFO is not an ExecCredential".into());
    let info = match env.get(EnvVars::KUBERNETES_EXEC_INFO) {
        Some(raw) if raw.len() > MAX_EXEC_INFO => {
            return Err(Refusal::Failed("KUBERNETES_EXEC_INFO is too large".into()));
        }
        Some(raw) => Some(serde_json::from_str::<ExecInfo>(raw).map_err(|_| not_exec_credential())?),
        None => None,
    };
    if info.as_ref().and_then(|i| i.kind.as_deref()).is_some_and(|k| k != "ExecCredential") {
        return Err(not_exec_credential());
    }
    let api_version = info.as_ref().and_then(|i| i.api_version.clone()).unwrap_or_else(|| API_VERSIONS[0].to_owned());
    if !API_VERSIONS.contains(&api_version.as_str()) {
        return Err(Refusal::Failed(format!(
            "unsupported exec credential apiVersion `{}` (v1 or v1beta1)",
            crate::sanitize_for_terminal(&api_version)
        )));
    }
    let named = server_arg(args)?.map(|s| cluster(&s)).transpose()?;
    let talking_to = info.and_then(|i| i.spec?.cluster?.server).map(|s| cluster(&s)).transpose()?;
    // A token for the cluster `--server` names must not go to another one client-go is
    // talking to (a kubeconfig whose user entry is shared by several clusters).
    match (named, talking_to) {
        (Some(named), Some(actual)) if named != actual => Err(Refusal::Failed(format!(
            "`--server` names {} but kubectl is talking to {}: refusing to hand out a token for another cluster",
            named.display(),
            actual.display()
        ))),
        (Some(target), _) | (None, Some(target)) => Ok((api_version, target)),
        (None, None) => Err(Refusal::Failed(
            "no cluster server: set `provideClusterInfo: true` in the kubeconfig, or pass `--server URL`".into(),
        )),
    }
}

/// The normalised target of a cluster server URL.
fn cluster(server: &str) -> Result<Target, Refusal> {
    let invalid = || Refusal::Failed(format!("invalid cluster server `{}`", crate::sanitize_for_terminal(server)));
    let url = crate::target::strict_url(server).ok_or_else(invalid)?;
    let host = crate::target::host_port(&url).ok_or_else(invalid)?;
    Target::new(Tool::Kubectl, url.scheme(), &host, None).map_err(|e| Refusal::Failed(e.to_string()))
}

/// `--server URL` or `--server=URL`, the only argument the plugin takes.
fn server_arg(args: &[String]) -> Result<Option<String>, Refusal> {
    match args {
        [] => Ok(None),
        [flag, url] if flag == "--server" => Ok(Some(url.clone())),
        [flag] if flag == "--server" => Err(Refusal::Failed("`--server` needs a URL".into())),
        [arg] if arg.starts_with("--server=") => Ok(Some(arg["--server=".len()..].to_owned())),
        _ => Err(Refusal::Unsupported(format!(
            "unknown arguments `{}` (expected `--server URL`)",
            crate::sanitize_for_terminal(&args.join(" "))
        ))),
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

    #[test]
    fn each_refusal_is_one_line_and_exit_1() {
        let target = cluster("https://k8s.example.com:6443").unwrap();
        let answers: Vec<Reply> =
            crate::protocol::every_refusal().iter().map(|refusal| refuse(refusal, Some(&target))).collect();
        let no_route = Reply::line("no mayfly route for kubectl cluster https://k8s.example.com:6443");
        assert_eq!(
            answers,
            [
                no_route.clone(),
                no_route,
                Reply::line("no token for https://h.example/org/app (git write): route `r` does not allow write"),
                Reply::line("the request is malformed"),
                Reply::line("unknown action"),
            ]
        );
    }
}
