//! AWS: access keys in the shared credentials and config files. `AKIA…` keys are an IAM
//! user's and live until someone deletes them; `ASIA…` keys with a session token are
//! temporary, but still sit on disk.

use std::path::{Path, PathBuf};

use super::finding::{Finding, Severity, at, replace};
use super::scope::{Contents, Scope, read};
use mayfly_core::ini::{Dialect, parse};

fn files(scope: &Scope) -> Vec<PathBuf> {
    vec![
        scope.path_var("AWS_SHARED_CREDENTIALS_FILE").unwrap_or_else(|| scope.home.join(".aws/credentials")),
        scope.path_var("AWS_CONFIG_FILE").unwrap_or_else(|| scope.home.join(".aws/config")),
    ]
}

pub(crate) fn check(scope: &Scope, findings: &mut Vec<Finding>) {
    for path in files(scope) {
        match read(&path) {
            Contents::Missing => {}
            Contents::Unreadable(why) => findings.push(Finding::unreadable(&path, &format!("cannot read it: {why}"))),
            Contents::Text(text) => findings.extend(keys(&path, &text)),
        }
    }
}

/// One finding per profile that holds a secret access key.
pub(crate) fn keys(path: &Path, text: &str) -> Vec<Finding> {
    let entries = parse(text, Dialect::Python);
    let mut profiles: Vec<Option<&str>> = Vec::new();
    for entry in &entries {
        if !profiles.contains(&entry.section.as_deref()) {
            profiles.push(entry.section.as_deref());
        }
    }
    let mut findings = Vec::new();
    for profile in profiles {
        let get = |key: &str| {
            entries
                .iter()
                .filter(|e| e.section.as_deref() == profile && e.key.eq_ignore_ascii_case(key))
                .map(|e| e.value.as_str())
                .find(|v| !v.is_empty())
        };
        let Some(secret) = get("aws_secret_access_key") else { continue };
        let location = at(path, &format!("[{}]", profile.unwrap_or_default()));
        let id = get("aws_access_key_id").unwrap_or_default();
        let session = get("aws_session_token").or(get("aws_security_token"));
        findings.push(if id.starts_with("ASIA") && session.is_some() {
            let fix = "temporary, but on disk until it is overwritten: delete it; a route with tool = \"aws\" hands out keys through `credential_process`";
            Finding::secret("aws-temporary-key", location, secret, fix).with_severity(Severity::Warning)
        } else {
            Finding::secret("aws-static-key", location, secret, replace(None, mayfly_core::Tool::Aws, None))
        });
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_and_temporary_keys() {
        let text = "[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = s1\n\n[profile temp]\naws_access_key_id=ASIAEXAMPLE\naws_secret_access_key=s2\naws_session_token=t\n[sso]\nsso_start_url = https://x\n";
        let found = keys(Path::new("creds"), text);
        let kinds: Vec<_> = found.iter().map(|f| (f.kind, f.severity, f.location.as_str())).collect();
        assert_eq!(
            kinds,
            [
                ("aws-static-key", Severity::Error, "creds: [default]"),
                ("aws-temporary-key", Severity::Warning, "creds: [profile temp]"),
            ]
        );
        assert_eq!(found[1].fingerprint, Some(mayfly_core::Fingerprint::of("s2")));
    }
}
