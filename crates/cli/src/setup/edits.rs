//! The edit each tool's config needs, as pure functions from the file's current text (or
//! nothing, for a file that does not exist) to its new text. `None` means no change: the
//! wiring is already there, which is what makes `mayfly setup` idempotent.

use anyhow::Context;

/// `credHelpers` entries for these registries in a docker config or a containers auth
/// file; other keys and their order are kept, an existing `auths` entry is left alone
/// (`mayfly doctor` reports it).
pub(crate) fn cred_helpers(current: Option<&str>, registries: &[String]) -> anyhow::Result<Option<String>> {
    let mut document: serde_json::Value = match current.map(str::trim).filter(|t| !t.is_empty()) {
        Some(text) => serde_json::from_str(text).context("not JSON")?,
        None => serde_json::json!({}),
    };
    let object = document.as_object_mut().context("not a JSON object")?;
    let helpers = object.entry("credHelpers").or_insert_with(|| serde_json::json!({}));
    let helpers = helpers.as_object_mut().context("`credHelpers` is not an object")?;
    let mut changed = false;
    for registry in registries {
        if helpers.get(registry).and_then(|v| v.as_str()) != Some("mayfly") {
            helpers.insert(registry.clone(), "mayfly".into());
            changed = true;
        }
    }
    // docker writes its config indented with tabs.
    let mut text = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut serializer = serde_json::Serializer::with_formatter(&mut text, formatter);
    serde::Serialize::serialize(&document, &mut serializer)?;
    Ok(changed.then(|| String::from_utf8_lossy(&text).into_owned() + "\n"))
}

/// cargo: mayfly first among the global credential providers (it passes registries
/// without a route on, and `cargo:token` keeps working for them).
pub(crate) fn cargo_providers(current: Option<&str>, provider: &str) -> anyhow::Result<Option<String>> {
    let mut document: toml_edit::DocumentMut = current.unwrap_or("").parse().context("not TOML")?;
    let registry = document.entry("registry").or_insert(toml_edit::table());
    let registry = registry.as_table_like_mut().context("`registry` is not a table")?;
    let existing: Vec<String> = registry
        .get("global-credential-providers")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    // Later entries take precedence.
    if existing.last().map(String::as_str) == Some(provider) {
        return Ok(None);
    }
    let mut providers: Vec<String> = existing.into_iter().filter(|p| p != provider).collect();
    if providers.is_empty() {
        providers.push("cargo:token".into());
    }
    providers.push(provider.to_owned());
    let array: toml_edit::Array = providers.iter().map(String::as_str).collect();
    registry.insert("global-credential-providers", toml_edit::value(array));
    Ok(Some(document.to_string()))
}

/// AWS: a `credential_process` for each route's profile: appended as a new profile, or
/// added to an existing one that has no credentials of its own (a profile that only sets
/// a region or an endpoint). A profile with another credential source is left alone and
/// reported.
pub(crate) fn aws_profiles(
    current: Option<&str>,
    profiles: &[(String, String)],
) -> anyhow::Result<(Option<String>, Vec<String>)> {
    const SOURCES: [&str; 7] = [
        "credential_process",
        "aws_access_key_id",
        "role_arn",
        "web_identity_token_file",
        "sso_session",
        "sso_start_url",
        "credential_source",
    ];
    let text = current.unwrap_or("");
    let mut out = text.to_owned();
    let mut conflicts = Vec::new();
    for (name, command) in profiles {
        let header = if name == "default" { "[default]".to_owned() } else { format!("[profile {name}]") };
        let lines: Vec<&str> = out.lines().collect();
        let Some(start) = lines.iter().position(|l| l.trim() == header) else {
            if !out.is_empty() && !out.ends_with("\n\n") {
                out.push_str(if out.ends_with('\n') { "\n" } else { "\n\n" });
            }
            out.push_str(&format!("{header}\ncredential_process = {command}\n"));
            continue;
        };
        let end = lines[start + 1..]
            .iter()
            .position(|l| l.trim_start().starts_with('['))
            .map_or(lines.len(), |i| start + 1 + i);
        let keys: Vec<(&str, &str)> = lines[start + 1..end].iter().filter_map(|l| key_value(l)).collect();
        if keys.contains(&("credential_process", command.as_str())) {
            continue;
        }
        if let Some((key, _)) = keys.iter().find(|(k, _)| SOURCES.contains(k)) {
            conflicts.push(format!("AWS profile `{name}` already has `{key}`; left alone"));
            continue;
        }
        let mut new: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
        new.insert(start + 1, format!("credential_process = {command}"));
        out = new.join("\n") + if out.ends_with('\n') || out.is_empty() { "\n" } else { "" };
    }
    Ok(((out != text).then_some(out), conflicts))
}

fn key_value(line: &str) -> Option<(&str, &str)> {
    let (k, v) = line.split_once('=')?;
    Some((k.trim(), v.trim()))
}

/// Terraform's CLI config: `credentials_helper "mayfly" {}`, appended. Another helper
/// already configured wins in Terraform (only one is allowed), so it is reported instead.
pub(crate) fn terraform_helper(current: Option<&str>) -> anyhow::Result<(Option<String>, Option<String>)> {
    let text = current.unwrap_or("");
    let configured = text.lines().map(str::trim).find(|l| l.starts_with("credentials_helper"));
    match configured {
        Some(line) if line.contains("\"mayfly\"") => Ok((None, None)),
        Some(_) => Ok((None, Some("Terraform already has another credentials_helper; left alone".into()))),
        None => {
            let mut out = text.to_owned();
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str("credentials_helper \"mayfly\" {}\n");
            Ok((Some(out), None))
        }
    }
}

/// A Vault or OpenBao CLI config with `token_helper` naming `helper`, or `None` when it
/// does already, and a note when it names another helper or is JSON (left alone either way).
pub(crate) fn vault_token_helper(current: Option<&str>, helper: &str) -> (Option<String>, Option<String>) {
    let text = current.unwrap_or("");
    let value = serde_json::Value::from(helper);
    if text.trim_start().starts_with('{') {
        let ours = serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| v["token_helper"] == value);
        let note = format!(
            "the Vault/OpenBao CLI config is JSON, which setup does not edit: add \"token_helper\": {value} to it"
        );
        return (None, (!ours).then_some(note));
    }
    let configured = text.lines().find_map(|line| {
        let (key, v) = line.split_once('=')?;
        let key = key.trim();
        (key == "token_helper" || key == "\"token_helper\"").then(|| v.trim())
    });
    match configured {
        Some(configured) if serde_json::from_str::<serde_json::Value>(configured).is_ok_and(|v| v == value) => {
            (None, None)
        }
        Some(_) => (None, Some("the Vault/OpenBao CLI config already names another token_helper; left alone".into())),
        None => {
            let mut out = text.to_owned();
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&format!("token_helper = {value}\n"));
            (Some(out), None)
        }
    }
}

/// Why `path` cannot be a Vault/OpenBao `token_helper`: the CLIs run it through
/// `$SHELL -c`, so a space or a shell metacharacter in it would run something else.
pub(crate) fn unsafe_for_shell(path: &str) -> Option<String> {
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+' | ',' | '@' | '%' | ':');
    (path.is_empty() || !path.chars().all(safe)).then(|| {
        format!(
            "the token helper's path `{}` has a space or shell metacharacter, and the vault and bao CLIs run it through a shell: install mayfly under a plain path",
            mayfly_core::sanitize_for_terminal(path)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_configs_get_the_token_helper_once() {
        let new = vault_token_helper(None, "/bin/vault-token-helper-mayfly").0.unwrap();
        assert_eq!(new, "token_helper = \"/bin/vault-token-helper-mayfly\"\n");
        assert_eq!(vault_token_helper(Some(&new), "/bin/vault-token-helper-mayfly"), (None, None), "idempotent");
        let (new, note) = vault_token_helper(Some("token_helper = \"/bin/other\""), "/bin/vault-token-helper-mayfly");
        assert!(new.is_none() && note.is_some());
        // The key exactly, bare or quoted.
        let quoted = "\"token_helper\" = \"/bin/other\"\n";
        let (new, note) = vault_token_helper(Some(quoted), "/bin/vault-token-helper-mayfly");
        assert!(new.is_none() && note.unwrap().contains("another token_helper"));
        let quoted = "\"token_helper\" = \"/bin/vault-token-helper-mayfly\"\n";
        assert_eq!(vault_token_helper(Some(quoted), "/bin/vault-token-helper-mayfly"), (None, None));
        let other_key = "token_helper_x = \"/bin/other\"\n";
        let new = vault_token_helper(Some(other_key), "/bin/vault-token-helper-mayfly").0.unwrap();
        assert!(new.ends_with("token_helper = \"/bin/vault-token-helper-mayfly\"\n"), "{new}");
        // JSON is left alone, with one line.
        let json = "{\"token_helper\": \"/bin/other\"}\n";
        let (new, note) = vault_token_helper(Some(json), "/bin/vault-token-helper-mayfly");
        assert!(new.is_none() && note.unwrap().contains("is JSON"));
        let json = "{\"token_helper\": \"/bin/vault-token-helper-mayfly\"}";
        assert_eq!(vault_token_helper(Some(json), "/bin/vault-token-helper-mayfly"), (None, None));
    }

    #[test]
    fn a_token_helper_path_the_shell_would_split_is_refused() {
        assert_eq!(unsafe_for_shell("/home/me/.local/bin/vault-token-helper-mayfly"), None);
        for bad in ["/home/my files/bin/h", "/x/$(id)/h", "/x/a;b", "/x/`id`", "/x/a'b", "/x/a\nb", ""] {
            assert!(unsafe_for_shell(bad).is_some_and(|e| e.contains("shell metacharacter")), "{bad:?}");
        }
    }

    #[test]
    fn docker_configs_keep_their_keys_and_order() {
        let current = "{\n\t\"auths\": {\"r.example\": {}},\n\t\"currentContext\": \"x\"\n}\n";
        let new = cred_helpers(Some(current), &["registry.example:5000".into()]).unwrap().unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&new).unwrap();
        assert_eq!(parsed["credHelpers"]["registry.example:5000"], "mayfly");
        assert_eq!(parsed["currentContext"], "x");
        assert!(new.find("auths").unwrap() < new.find("credHelpers").unwrap());
        assert_eq!(cred_helpers(Some(&new), &["registry.example:5000".into()]).unwrap(), None, "idempotent");
        assert!(cred_helpers(Some("[1]"), &["r".into()]).is_err());
        assert!(cred_helpers(None, &["r".into()]).unwrap().unwrap().contains("\"r\": \"mayfly\""));
    }

    #[test]
    fn cargo_keeps_comments_and_puts_mayfly_last() {
        let current = "# mine\n[registries.corp]\nindex = \"sparse+https://c.example/\"\n";
        let new = cargo_providers(Some(current), "/bin/cargo-credential-mayfly").unwrap().unwrap();
        assert!(new.starts_with("# mine\n[registries.corp]"), "{new}");
        assert!(
            new.contains(r#"global-credential-providers = ["cargo:token", "/bin/cargo-credential-mayfly"]"#),
            "{new}"
        );
        assert_eq!(cargo_providers(Some(&new), "/bin/cargo-credential-mayfly").unwrap(), None);
    }

    #[test]
    fn aws_profiles_are_appended_once_and_conflicts_reported() {
        let current = "[profile other]\nregion = eu-west-1\n";
        let profiles = vec![("deploy".to_owned(), "/bin/mayfly-aws-credential deploy".to_owned())];
        let (new, conflicts) = aws_profiles(Some(current), &profiles).unwrap();
        let new = new.unwrap();
        assert_eq!(
            new,
            "[profile other]\nregion = eu-west-1\n\n[profile deploy]\ncredential_process = /bin/mayfly-aws-credential deploy\n"
        );
        assert!(conflicts.is_empty());
        assert_eq!(aws_profiles(Some(&new), &profiles).unwrap(), (None, vec![]));
        let clash = "[profile deploy]\naws_access_key_id = x\n";
        let (new, conflicts) = aws_profiles(Some(clash), &profiles).unwrap();
        assert_eq!((new, conflicts.len()), (None, 1));
        let region_only = "[profile deploy]\nregion = us-east-1\n\n[profile other]\nregion = x\n";
        let (new, conflicts) = aws_profiles(Some(region_only), &profiles).unwrap();
        assert_eq!(
            new.unwrap(),
            "[profile deploy]\ncredential_process = /bin/mayfly-aws-credential deploy\nregion = us-east-1\n\n[profile other]\nregion = x\n"
        );
        assert!(conflicts.is_empty());
    }

    #[test]
    fn terraform_gets_one_helper() {
        let (new, note) = terraform_helper(Some("plugin_cache_dir = \"/x\"")).unwrap();
        assert_eq!(new.unwrap(), "plugin_cache_dir = \"/x\"\ncredentials_helper \"mayfly\" {}\n");
        assert_eq!(note, None);
        assert_eq!(terraform_helper(Some("credentials_helper \"mayfly\" {}\n")).unwrap(), (None, None));
        assert!(terraform_helper(Some("credentials_helper \"vault\" {}\n")).unwrap().1.is_some());
    }
}
