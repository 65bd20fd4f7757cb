//! cargo: tokens (and asymmetric secret keys) in `credentials.toml`, left by `cargo login`.

use std::path::{Path, PathBuf};

use mayfly_core::{Config, Tool};

use super::finding::{Finding, at, replace};
use super::scope::{Contents, Scope, push_unique, read};

/// crates.io's index, as cargo names it to credential providers and routes name it.
const CRATES_IO_INDEX: &str = "index.crates.io";

fn files(scope: &Scope) -> Vec<PathBuf> {
    let mut homes = vec![scope.home.join(".cargo")];
    if let Some(cargo_home) = scope.path_var("CARGO_HOME") {
        push_unique(&mut homes, cargo_home);
    }
    homes.iter().flat_map(|home| [home.join("credentials.toml"), home.join("credentials")]).collect()
}

pub(crate) fn check(scope: &Scope, config: Option<&Config>, findings: &mut Vec<Finding>) {
    for path in files(scope) {
        match read(&path) {
            Contents::Missing => {}
            Contents::Unreadable(why) => findings.push(Finding::unreadable(&path, &format!("cannot read it: {why}"))),
            Contents::Text(text) => match text.parse::<toml::Table>() {
                Ok(table) => findings.extend(credentials(&path, &table, config)),
                Err(_) => findings.push(Finding::unreadable(&path, "not valid TOML")),
            },
        }
    }
}

/// `[registry]` (crates.io) and `[registries.<name>]`, each with `token` or `secret-key`.
pub(crate) fn credentials(path: &Path, table: &toml::Table, config: Option<&Config>) -> Vec<Finding> {
    let mut sections = Vec::new();
    if let Some(registry) = table.get("registry").and_then(toml::Value::as_table) {
        sections.push(("registry".to_owned(), registry, Some(CRATES_IO_INDEX)));
    }
    for (name, registry) in table.get("registries").and_then(toml::Value::as_table).into_iter().flatten() {
        if let Some(registry) = registry.as_table() {
            sections.push((format!("registries.{name}"), registry, None));
        }
    }
    let mut findings = Vec::new();
    for (section, registry, host) in sections {
        for field in ["token", "secret-key"] {
            let Some(secret) = registry.get(field).and_then(toml::Value::as_str).filter(|s| !s.is_empty()) else {
                continue;
            };
            let fix = match host {
                Some(host) => format!("`cargo logout`, then {}", replace(config, Tool::Cargo, Some(host))),
                None => {
                    format!("`cargo logout --registry {}`, then {}", &section[11..], replace(config, Tool::Cargo, None))
                }
            };
            findings.push(Finding::secret("cargo-token", at(path, &format!("{section}.{field}")), secret, fix));
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_of_crates_io_and_named_registries() {
        let table: toml::Table =
            "[registry]\ntoken = \"cio_a\"\n[registries.corp]\nsecret-key = \"k3.secret.x\"\n[registries.empty]\n"
                .parse()
                .unwrap();
        let found = credentials(Path::new("c.toml"), &table, None);
        let kinds: Vec<_> = found.iter().map(|f| f.location.as_str()).collect();
        assert_eq!(kinds, ["c.toml: registry.token", "c.toml: registries.corp.secret-key"]);
        assert!(found[0].fix.contains("for index.crates.io"), "{}", found[0].fix);
        assert!(found[1].fix.starts_with("`cargo logout --registry corp`"), "{}", found[1].fix);
    }
}
