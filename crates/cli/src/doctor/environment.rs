//! Long-lived tokens in the environment, where every process the shell starts (and
//! anything that dumps its environment) can read them.

use mayfly_core::{Config, Env, Tool};

use super::finding::{Finding, Severity, replace};

/// Variables that hold a registry's or forge's token, with the tool whose route replaces them.
const TOKENS: [(&str, Tool, Option<&str>); 14] = [
    ("GITHUB_TOKEN", Tool::Git, Some("github.com")),
    ("GH_TOKEN", Tool::Git, Some("github.com")),
    ("GH_ENTERPRISE_TOKEN", Tool::Git, None),
    ("GITLAB_TOKEN", Tool::Git, None),
    ("NPM_TOKEN", Tool::Npm, Some("registry.npmjs.org")),
    ("NODE_AUTH_TOKEN", Tool::Npm, None),
    ("CARGO_REGISTRY_TOKEN", Tool::Cargo, Some("index.crates.io")),
    ("TWINE_PASSWORD", Tool::Pypi, None),
    ("PYPI_TOKEN", Tool::Pypi, None),
    ("GEM_HOST_API_KEY", Tool::Gem, None),
    ("NUGET_API_KEY", Tool::Nuget, Some("www.nuget.org")),
    ("DOCKER_PASSWORD", Tool::Oci, None),
    // The Hub's repositories are git's: a git route with a `huggingface` exchange serves hf.
    ("HF_TOKEN", Tool::Git, Some("huggingface.co")),
    ("HUGGING_FACE_HUB_TOKEN", Tool::Git, Some("huggingface.co")),
];

pub(crate) fn check(env: &Env, config: Option<&Config>, findings: &mut Vec<Finding>) {
    for (name, value) in env.vars().filter(|(_, v)| !v.is_empty()) {
        let Some((tool, host)) = classify(name) else { continue };
        let fix = format!("unset it: {}", replace(config, tool, host.as_deref()));
        findings.push(Finding::secret("env-token", name, value, fix).with_severity(Severity::Warning));
    }
    aws(env, findings);
}

/// The tool (and host, where the name says it) a variable holds a token for.
fn classify(name: &str) -> Option<(Tool, Option<String>)> {
    if let Some((_, tool, host)) = TOKENS.iter().find(|(n, _, _)| *n == name) {
        return Some((*tool, host.map(str::to_owned)));
    }
    if name.starts_with("CARGO_REGISTRIES_") && name.ends_with("_TOKEN") && name.len() > 23 {
        return Some((Tool::Cargo, None));
    }
    if let Some(host) = name.strip_prefix("TF_TOKEN_").filter(|h| !h.is_empty()) {
        return Some((Tool::Terraform, Some(terraform_host(host))));
    }
    // npm reads `npm_config_//host/:_authToken` (any case of the prefix) as config.
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("npm_config_") && ["_authtoken", "_auth", "_password"].iter().any(|k| lower.ends_with(k)) {
        return Some((
            Tool::Npm,
            name.get(11..).and_then(|k| k.strip_prefix("//")?.split('/').next()).map(str::to_owned),
        ));
    }
    None
}

/// `TF_TOKEN_app_terraform_io` -> `app.terraform.io` (`__` is `-`, `_` is `.`).
fn terraform_host(encoded: &str) -> String {
    encoded.split("__").map(|part| part.replace('_', ".")).collect::<Vec<_>>().join("-").to_ascii_lowercase()
}

/// `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY`: an IAM user's key unless it is a
/// temporary one (`ASIA…` with a session token).
fn aws(env: &Env, findings: &mut Vec<Finding>) {
    let (Some(id), Some(secret)) =
        (env.get(mayfly_core::EnvVars::AWS_ACCESS_KEY_ID), env.get(mayfly_core::EnvVars::AWS_SECRET_ACCESS_KEY))
    else {
        return;
    };
    let temporary = id.starts_with("ASIA") && env.get(mayfly_core::EnvVars::AWS_SESSION_TOKEN).is_some();
    let finding = if temporary {
        let fix = "temporary keys: fine where a job's role put them; a route with tool = \"aws\" hands them out through `credential_process`";
        Finding::secret("env-aws-temporary-key", "AWS_SECRET_ACCESS_KEY", secret, fix).with_severity(Severity::Info)
    } else {
        let fix = format!("unset it: {}", replace(None, Tool::Aws, None));
        Finding::secret("env-aws-static-key", "AWS_SECRET_ACCESS_KEY", secret, fix).with_severity(Severity::Warning)
    };
    findings.push(finding);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_variables_by_name() {
        assert_eq!(classify("GITHUB_TOKEN"), Some((Tool::Git, Some("github.com".into()))));
        assert_eq!(classify("CARGO_REGISTRIES_CORP_TOKEN"), Some((Tool::Cargo, None)));
        assert_eq!(classify("CARGO_REGISTRIES__TOKEN"), None);
        assert_eq!(classify("TF_TOKEN_app_terraform_io"), Some((Tool::Terraform, Some("app.terraform.io".into()))));
        assert_eq!(classify("TF_TOKEN_my__corp_example"), Some((Tool::Terraform, Some("my-corp.example".into()))));
        assert_eq!(classify("npm_config_//npm.example/:_authToken"), Some((Tool::Npm, Some("npm.example".into()))));
        assert_eq!(classify("NPM_CONFIG_REGISTRY"), None);
        assert_eq!(classify("HF_TOKEN"), Some((Tool::Git, Some("huggingface.co".into()))));
        assert_eq!(classify("HUGGING_FACE_HUB_TOKEN"), Some((Tool::Git, Some("huggingface.co".into()))));
        assert_eq!(classify("PATH"), None);
    }

    #[test]
    fn aws_keys_static_or_temporary() {
        let mut findings = Vec::new();
        aws(&Env::from_pairs([("AWS_ACCESS_KEY_ID", "AKIAX"), ("AWS_SECRET_ACCESS_KEY", "s")]), &mut findings);
        aws(
            &Env::from_pairs([
                ("AWS_ACCESS_KEY_ID", "ASIAX"),
                ("AWS_SECRET_ACCESS_KEY", "s"),
                ("AWS_SESSION_TOKEN", "t"),
            ]),
            &mut findings,
        );
        let kinds: Vec<_> = findings.iter().map(|f| (f.kind, f.severity)).collect();
        assert_eq!(kinds, [("env-aws-static-key", Severity::Warning), ("env-aws-temporary-key", Severity::Info)]);
    }
}
