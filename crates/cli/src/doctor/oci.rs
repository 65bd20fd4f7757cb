//! docker and the containers tools (podman, skopeo, buildah): `auths` entries that hold a
//! password or identity token, and `auths` entries that shadow mayfly's `credHelpers`.

use std::path::{Path, PathBuf};

use mayfly_core::{Config, EnvVars, Tool, normalize_host};
use serde_json::Value;

use super::finding::{Finding, Severity, at, replace};
use super::scope::{Contents, Scope, push_unique, read};

/// The auth files, in the order the tools read them: docker's config, then the
/// containers tools' `REGISTRY_AUTH_FILE`, runtime and user files.
fn files(scope: &Scope) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let docker = scope.path_var("DOCKER_CONFIG").unwrap_or_else(|| scope.home.join(".docker"));
    files.push(docker.join("config.json"));
    if let Some(file) = scope.path_var("REGISTRY_AUTH_FILE") {
        push_unique(&mut files, file);
    }
    if let Some(runtime) = scope.path_var(EnvVars::XDG_RUNTIME_DIR) {
        push_unique(&mut files, runtime.join("containers/auth.json"));
    }
    push_unique(&mut files, scope.xdg_config().join("containers/auth.json"));
    files
}

pub(crate) fn check(scope: &Scope, config: Option<&Config>, findings: &mut Vec<Finding>) {
    for (index, path) in files(scope).iter().enumerate() {
        let document = match read(path) {
            Contents::Missing => continue,
            Contents::Unreadable(why) => {
                findings.push(Finding::unreadable(path, &format!("cannot read it: {why}")));
                continue;
            }
            Contents::Text(text) => match serde_json::from_str::<Value>(&text) {
                Ok(document) => document,
                Err(_) => {
                    findings.push(Finding::unreadable(path, "not valid JSON"));
                    continue;
                }
            },
        };
        findings.extend(auths(path, &document, config));
        if let Some(config) = config {
            findings.extend(wiring(path, &document, config, index == 0));
        }
    }
}

/// `auths.<registry>.auth` (base64 `user:password`) and `identitytoken` (an OAuth refresh
/// token), each a long-lived credential.
pub(crate) fn auths(path: &Path, document: &Value, config: Option<&Config>) -> Vec<Finding> {
    let mut findings = Vec::new();
    let Some(auths) = document.get("auths").and_then(Value::as_object) else { return findings };
    for (registry, entry) in auths {
        let host = registry_host(registry);
        for (field, kind) in [
            ("auth", "docker-auth"),
            ("identitytoken", "docker-identity-token"),
            ("registrytoken", "docker-identity-token"),
        ] {
            let Some(secret) = entry.get(field).and_then(Value::as_str).filter(|s| !s.is_empty()) else { continue };
            let fix = format!("`docker logout {host}`, then {}", replace(config, Tool::Oci, Some(&host)));
            findings.push(Finding::secret(kind, at(path, &format!("auths.{host}.{field}")), secret, fix));
        }
    }
    findings
}

/// For each registry a route serves: an `auths` entry next to `credHelpers` (some clients
/// take the entry and never ask the helper), and, in docker's own config, no
/// `credHelpers` entry naming mayfly.
pub(crate) fn wiring(path: &Path, document: &Value, config: &Config, docker: bool) -> Vec<Finding> {
    let mut findings = Vec::new();
    let helpers = document.get("credHelpers").and_then(Value::as_object);
    let auths = document.get("auths").and_then(Value::as_object);
    let mut registries: Vec<&str> =
        config.routes.iter().filter(|r| r.tool == Tool::Oci).map(|r| r.host.as_str()).collect();
    registries.sort_unstable();
    registries.dedup();
    for registry in registries {
        let helper = helpers.and_then(|h| h.iter().find(|(k, _)| registry_host(k) == registry)).map(|(_, v)| v);
        let shadow = auths.and_then(|a| a.keys().find(|k| registry_host(k) == registry));
        if let (Some(_), Some(key)) = (helper, shadow) {
            let fix = format!("remove `auths.{key}`: some clients use it and never ask the `credHelpers` entry");
            findings.push(Finding::new(
                Severity::Warning,
                "oci-auths-shadows-helper",
                at(path, &format!("auths.{registry}")),
                fix,
            ));
        }
        if docker && helper.and_then(Value::as_str) != Some("mayfly") {
            let fix = format!(
                "docker does not ask mayfly for {registry}; `mayfly setup` wires `credHelpers`, or run the command under `mayfly exec`"
            );
            findings.push(Finding::new(
                Severity::Info,
                "oci-not-wired",
                at(path, &format!("credHelpers.{registry}")),
                fix,
            ));
        }
    }
    findings
}

/// An `auths` key as a registry host: `https://index.docker.io/v1/` -> `index.docker.io`.
fn registry_host(key: &str) -> String {
    let rest = key.split_once("://").map_or(key, |(_, rest)| rest);
    let host = rest.split('/').next().unwrap_or(rest);
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    normalize_host("https", host).unwrap_or_else(|_| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_keys_become_hosts() {
        assert_eq!(registry_host("https://index.docker.io/v1/"), "index.docker.io");
        assert_eq!(registry_host("Registry.Example:5000"), "registry.example:5000");
        assert_eq!(registry_host("registry.example:443"), "registry.example");
    }

    #[test]
    fn passwords_and_identity_tokens_are_found_empty_entries_are_not() {
        let document: Value = serde_json::from_str(
            r#"{"auths": {"https://index.docker.io/v1/": {"auth": "dTpw"}, "ghcr.io": {"identitytoken": "rt"}, "quay.io": {}}, "credsStore": "desktop"}"#,
        )
        .unwrap();
        let found = auths(Path::new("c.json"), &document, None);
        let mut kinds: Vec<_> = found.iter().map(|f| (f.kind, f.location.as_str(), f.fingerprint.clone())).collect();
        kinds.sort_by_key(|k| k.0);
        let fingerprint = |s| Some(mayfly_core::Fingerprint::of(s));
        assert_eq!(
            kinds,
            [
                ("docker-auth", "c.json: auths.index.docker.io.auth", fingerprint("dTpw")),
                ("docker-identity-token", "c.json: auths.ghcr.io.identitytoken", fingerprint("rt")),
            ]
        );
    }
}
