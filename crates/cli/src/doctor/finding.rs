//! What the doctor reports: one finding per problem, each with where it is and its fix.

use std::path::Path;

use mayfly_core::{Config, Fingerprint, Tool, normalize_host};

/// How bad a finding is. Errors and warnings fail the run; information does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Severity {
    Error,
    Warning,
    Info,
}

impl Severity {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Info => "info",
        }
    }

    pub(crate) fn fails(self) -> bool {
        self != Self::Info
    }
}

/// One problem. `location` and `fix` never hold a secret: a credential is named by the
/// file and key (or variable) that hold it, and by its fingerprint.
#[derive(Debug)]
pub(crate) struct Finding {
    pub(crate) severity: Severity,
    pub(crate) kind: &'static str,
    pub(crate) location: String,
    pub(crate) fingerprint: Option<Fingerprint>,
    pub(crate) fix: String,
}

impl Finding {
    pub(crate) fn new(
        severity: Severity,
        kind: &'static str,
        location: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self { severity, kind, location: location.into(), fingerprint: None, fix: fix.into() }
    }

    /// A long-lived secret: an error, known by its fingerprint only.
    pub(crate) fn secret(
        kind: &'static str,
        location: impl Into<String>,
        secret: &str,
        fix: impl Into<String>,
    ) -> Self {
        Self { fingerprint: Some(Fingerprint::of(secret)), ..Self::new(Severity::Error, kind, location, fix) }
    }

    pub(crate) fn with_severity(self, severity: Severity) -> Self {
        Self { severity, ..self }
    }

    /// A credential file that exists but could not be read or parsed. The parser's own
    /// message is not repeated: some quote the offending text, which may be the secret.
    pub(crate) fn unreadable(path: &Path, why: &str) -> Self {
        let fix = format!("{why}; check it by hand for tokens");
        Self::new(Severity::Warning, "unreadable-file", path.display().to_string(), fix)
    }
}

/// `file: key`, the usual location of a credential.
pub(crate) fn at(path: &Path, key: &str) -> String {
    format!("{}: {key}", path.display())
}

/// The one-line fix for a long-lived credential that a route replaces: remove it, and
/// either name the route that already serves the host or say which route to add.
pub(crate) fn replace(config: Option<&Config>, tool: Tool, host: Option<&str>) -> String {
    let wiring = match tool {
        Tool::Git if host == Some("huggingface.co") => {
            "`mayfly setup` wires git, and `mayfly exec` runs `hf upload` and `hf download` through the shim"
        }
        Tool::Git => "`mayfly setup` wires the helper",
        Tool::Oci => "`mayfly setup` wires `credHelpers`",
        Tool::Cargo => "`mayfly setup` wires the credential provider",
        Tool::Terraform => "`mayfly setup` wires the credentials helper",
        Tool::Kubectl => "`mayfly setup` wires the exec plugin",
        Tool::Aws => "the profile's `credential_process = mayfly-aws-credential NAME` runs it",
        Tool::Npm => "`mayfly exec` runs npm through the shim",
        Tool::Pypi => "`mayfly exec` runs twine through the shim",
        Tool::Gem => "`mayfly exec` runs `gem push` through the shim",
        Tool::Vault => "`mayfly setup` wires the token helper",
        Tool::Nuget => "`mayfly exec --proxy` adds the key to `nuget push`",
        _ => "`mayfly setup` wires it",
    };
    let tool_name = tool.as_str();
    let Some(host) = host else {
        return format!("remove it and add a route with tool = \"{tool_name}\"; {wiring}");
    };
    let normalized = normalize_host("https", host).unwrap_or_else(|_| host.to_ascii_lowercase());
    let route = config.and_then(|c| c.routes.iter().find(|r| r.tool == tool && r.host == normalized));
    match route {
        Some(route) => format!("remove it: route `{}` already serves {normalized}; {wiring}", route.name),
        None => format!("remove it and add a route with tool = \"{tool_name}\" for {normalized}; {wiring}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixes_name_an_existing_route_or_the_one_to_add() {
        let text = "[identities.ci]\nkind = \"env\"\nvar = \"T\"\n[exchanges.x]\nkind = \"rfc8693\"\ntoken_endpoint = \"https://sts.example/t\"\n[[routes]]\ntool = \"git\"\nhost = \"git.example\"\nidentity = \"ci\"\nexchange = \"x\"\n";
        let config = Config::parse(text, Path::new("t.toml")).unwrap();
        let fix = replace(Some(&config), Tool::Git, Some("Git.Example:443"));
        assert_eq!(
            fix,
            "remove it: route `git:git.example` already serves git.example; `mayfly setup` wires the helper"
        );
        let fix = replace(Some(&config), Tool::Git, Some("github.com"));
        assert!(fix.starts_with("remove it and add a route with tool = \"git\" for github.com;"), "{fix}");
        assert!(replace(None, Tool::Npm, None).contains("shim"));
        assert!(
            replace(None, Tool::Git, Some("huggingface.co")).contains("`hf upload` and `hf download` through the shim")
        );
    }

    #[test]
    fn errors_sort_first_and_information_passes() {
        assert!(Severity::Error < Severity::Warning && Severity::Warning < Severity::Info);
        assert!(!Severity::Info.fails() && Severity::Warning.fails());
    }
}
