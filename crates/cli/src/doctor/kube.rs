//! kubectl: static credentials in kubeconfig users (`token`, `password`,
//! `client-key-data`, and the tokens a legacy `auth-provider` keeps), in each file of
//! `$KUBECONFIG` or in `~/.kube/config`.

use std::path::{Path, PathBuf};

use mayfly_core::{Config, Tool};
use serde_json::Value;

use super::finding::{Finding, at, replace};
use super::scope::{Contents, Scope, push_unique, read};
use super::urls::Url;

fn files(scope: &Scope) -> Vec<PathBuf> {
    let mut files = Vec::new();
    match scope.env.get(mayfly_core::EnvVars::KUBECONFIG) {
        Some(list) => list.split(':').filter(|p| !p.is_empty()).for_each(|p| push_unique(&mut files, scope.expand(p))),
        None => files.push(scope.home.join(".kube/config")),
    }
    files
}

pub(crate) fn check(scope: &Scope, config: Option<&Config>, findings: &mut Vec<Finding>) {
    for path in files(scope) {
        match read(&path) {
            Contents::Missing => {}
            Contents::Unreadable(why) => findings.push(Finding::unreadable(&path, &format!("cannot read it: {why}"))),
            Contents::Text(text) => match serde_norway::from_str::<Value>(&text) {
                Ok(document) => findings.extend(users(&path, &document, config)),
                Err(_) => findings.push(Finding::unreadable(&path, "not valid YAML")),
            },
        }
    }
}

pub(crate) fn users(path: &Path, document: &Value, config: Option<&Config>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for user in document.get("users").and_then(Value::as_array).into_iter().flatten() {
        let name = user.get("name").and_then(Value::as_str).unwrap_or_default();
        let Some(fields) = user.get("user") else { continue };
        let provider = fields.pointer("/auth-provider/config");
        let secrets = [
            ("token", "kubeconfig-token", fields.get("token")),
            ("password", "kubeconfig-password", fields.get("password")),
            ("client-key-data", "kubeconfig-client-key", fields.get("client-key-data")),
            ("auth-provider.config.id-token", "kubeconfig-token", provider.and_then(|p| p.get("id-token"))),
            ("auth-provider.config.refresh-token", "kubeconfig-token", provider.and_then(|p| p.get("refresh-token"))),
        ];
        for (field, kind, value) in secrets {
            let Some(secret) = value.and_then(Value::as_str).filter(|s| !s.is_empty()) else { continue };
            let server = server_of(document, name);
            let fix = format!(
                "replace the user's credentials with `exec: {{command: mayfly-kube-credential}}`: {}",
                replace(config, Tool::Kubectl, server.as_deref())
            );
            findings.push(Finding::secret(kind, at(path, &format!("users[{name}].user.{field}")), secret, fix));
        }
    }
    findings
}

/// The API server (`host:port`) of the first context that uses the user: what a route
/// for kubectl names as its host.
fn server_of(document: &Value, user: &str) -> Option<String> {
    let context = document
        .get("contexts")?
        .as_array()?
        .iter()
        .filter_map(|c| c.get("context"))
        .find(|c| c.get("user").and_then(Value::as_str) == Some(user))?;
    let name = context.get("cluster")?.as_str()?;
    let cluster =
        document.get("clusters")?.as_array()?.iter().find(|c| c.get("name").and_then(Value::as_str) == Some(name))?;
    let server = cluster.pointer("/cluster/server")?.as_str()?;
    Some(Url::split(server)?.host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECONFIG: &str = r#"
apiVersion: v1
kind: Config
clusters:
- name: prod
  cluster:
    server: https://k8s.example:6443
contexts:
- name: prod
  context: {cluster: prod, user: admin}
users:
- name: admin
  user:
    token: tok-1
    client-key-data: a2V5
- name: basic
  user: {username: u, password: pw}
- name: plugin
  user:
    exec: {apiVersion: client.authentication.k8s.io/v1, command: mayfly-kube-credential}
"#;

    #[test]
    fn static_credentials_and_the_server_they_are_for() {
        let document: Value = serde_norway::from_str(KUBECONFIG).unwrap();
        let found = users(Path::new("config"), &document, None);
        let kinds: Vec<_> = found.iter().map(|f| (f.kind, f.location.as_str())).collect();
        assert_eq!(
            kinds,
            [
                ("kubeconfig-token", "config: users[admin].user.token"),
                ("kubeconfig-client-key", "config: users[admin].user.client-key-data"),
                ("kubeconfig-password", "config: users[basic].user.password"),
            ]
        );
        assert!(found[0].fix.contains("for k8s.example:6443"), "{}", found[0].fix);
    }
}
