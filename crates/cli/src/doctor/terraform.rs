//! Terraform: API tokens that `terraform login` left in `credentials.tfrc.json`.

use std::path::Path;

use mayfly_core::{Config, Tool};
use serde_json::Value;

use super::finding::{Finding, at, replace};
use super::scope::{Contents, Scope, read};

pub(crate) fn check(scope: &Scope, config: Option<&Config>, findings: &mut Vec<Finding>) {
    let path = scope.home.join(".terraform.d/credentials.tfrc.json");
    match read(&path) {
        Contents::Missing => {}
        Contents::Unreadable(why) => findings.push(Finding::unreadable(&path, &format!("cannot read it: {why}"))),
        Contents::Text(text) => match serde_json::from_str::<Value>(&text) {
            Ok(document) => findings.extend(tokens(&path, &document, config)),
            Err(_) => findings.push(Finding::unreadable(&path, "not valid JSON")),
        },
    }
}

/// `{"credentials": {"<host>": {"token": "..."}}}`.
pub(crate) fn tokens(path: &Path, document: &Value, config: Option<&Config>) -> Vec<Finding> {
    let Some(hosts) = document.get("credentials").and_then(Value::as_object) else { return Vec::new() };
    hosts
        .iter()
        .filter_map(|(host, entry)| {
            let token = entry.get("token").and_then(Value::as_str).filter(|t| !t.is_empty())?;
            let fix = format!("`terraform logout {host}`, then {}", replace(config, Tool::Terraform, Some(host)));
            Some(Finding::secret("terraform-token", at(path, &format!("credentials.{host}.token")), token, fix))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_per_host() {
        let document = serde_json::json!({"credentials": {"app.terraform.io": {"token": "t.atlasv1.x"}, "empty": {}}});
        let found = tokens(Path::new("c.json"), &document, None);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].location, "c.json: credentials.app.terraform.io.token");
    }
}
