//! `mayfly setup`'s own copies: before its first change to a file, setup keeps a private
//! copy so `--undo` can restore it byte for byte. A file that held a long-lived secret
//! (a docker `auths` entry, a kubeconfig token) left that secret in the copy too, where
//! it outlives its removal from the original. Each is reported with where the copy came
//! from.

use std::path::Path;

use mayfly_core::Config;
use serde_json::Value;

use super::finding::Finding;
use super::scope::Scope;

pub(crate) fn check(scope: &Scope, config: Option<&Config>, findings: &mut Vec<Finding>) {
    let state = scope.path_var("XDG_STATE_HOME").unwrap_or_else(|| scope.home.join(".local/state"));
    let journal = state.join("mayfly/setup/journal.json");
    let Some(document) = std::fs::read_to_string(&journal).ok().and_then(|t| serde_json::from_str::<Value>(&t).ok())
    else {
        return;
    };
    for entry in document["entries"].as_array().into_iter().flatten() {
        let (Some(original), Some(backup)) = (entry["path"].as_str(), entry["backup"].as_str()) else { continue };
        let Ok(text) = std::fs::read_to_string(backup) else { continue };
        let fix = format!(
            "this is `mayfly setup`'s copy of {} from before setup; remove the secret there, then run `mayfly setup --undo` (or delete this copy)",
            mayfly_core::sanitize_for_terminal(original)
        );
        for mut finding in secrets_in(Path::new(original), Path::new(backup), &text, config) {
            finding.fix.clone_from(&fix);
            findings.push(finding);
        }
    }
}

/// The long-lived secrets a copy holds, read as the file it was copied from.
fn secrets_in(original: &Path, backup: &Path, text: &str, config: Option<&Config>) -> Vec<Finding> {
    let name = original.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let under = |dir: &str| original.components().any(|c| c.as_os_str() == dir);
    match name {
        "config.json" | "auth.json" => {
            serde_json::from_str(text).map(|d: Value| super::oci::auths(backup, &d, config)).unwrap_or_default()
        }
        "config" if under(".aws") => super::aws::keys(backup, text),
        "config.toml" => {
            toml::from_str(text).map(|t| super::cargo::credentials(backup, &t, config)).unwrap_or_default()
        }
        _ if under(".kube") => {
            serde_norway::from_str(text).map(|d: Value| super::kube::users(backup, &d, config)).unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copied_docker_config_with_auths_is_a_finding_by_fingerprint() {
        let text = r#"{"auths":{"registry.example":{"auth":"dXNlcjpzM2NyM3QtcGFzc3dvcmQ="}}}"#;
        let found = secrets_in(Path::new("/h/.docker/config.json"), Path::new("/s/backups/1-x"), text, None);
        assert_eq!(found.len(), 1);
        assert!(found[0].location.starts_with("/s/backups/1-x"));
        assert!(found[0].fingerprint.is_some());
        assert!(secrets_in(Path::new("/h/.gitconfig"), Path::new("/s/b"), "[user]\n", None).is_empty());
    }
}
