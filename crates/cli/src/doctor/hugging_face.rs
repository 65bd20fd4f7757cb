//! Hugging Face: the token `hf auth login` stores, which hf sends whenever `HF_TOKEN` is
//! unset, and the named ones kept beside it (`stored_tokens`, `hf_token` in each
//! section). The file is `HF_TOKEN_PATH`, else `token` in `HF_HOME`, else in
//! `$XDG_CACHE_HOME/huggingface` or `~/.cache/huggingface`, as huggingface_hub finds it.

use std::path::PathBuf;

use mayfly_core::ini::{Dialect, parse};
use mayfly_core::{Config, Tool};

use super::finding::{Finding, at, replace};
use super::scope::{Contents, Scope, read};

pub(crate) fn check(scope: &Scope, config: Option<&Config>, findings: &mut Vec<Finding>) {
    let token = token_path(scope);
    let fix = format!("remove it (`hf auth logout`): {}", replace(config, Tool::Git, Some("huggingface.co")));
    match read(&token) {
        Contents::Missing => {}
        Contents::Unreadable(why) => findings.push(Finding::unreadable(&token, &format!("cannot read it: {why}"))),
        Contents::Text(text) if text.trim().is_empty() => {}
        Contents::Text(text) => {
            findings.push(Finding::secret("hf-token", token.display().to_string(), text.trim(), &fix))
        }
    }
    let stored = token.with_file_name("stored_tokens");
    match read(&stored) {
        Contents::Missing => {}
        Contents::Unreadable(why) => findings.push(Finding::unreadable(&stored, &format!("cannot read it: {why}"))),
        Contents::Text(text) => findings.extend(
            parse(&text, Dialect::Python).into_iter().filter(|e| e.key == "hf_token" && !e.value.is_empty()).map(|e| {
                let location = at(&stored, &format!("[{}] hf_token", e.section.unwrap_or_default()));
                Finding::secret("hf-token", location, &e.value, &fix)
            }),
        ),
    }
}

/// Where huggingface_hub keeps the token `hf auth login` stores.
fn token_path(scope: &Scope) -> PathBuf {
    let var = |name: &str| scope.env.get(name).filter(|v| !v.is_empty()).map(|v| expand_home(scope, v));
    var("HF_TOKEN_PATH").unwrap_or_else(|| {
        let home = var("HF_HOME")
            .unwrap_or_else(|| var("XDG_CACHE_HOME").unwrap_or_else(|| scope.home.join(".cache")).join("huggingface"));
        home.join("token")
    })
}

/// `~` and `~/...` in the home directory, as Python's `expanduser` reads them.
fn expand_home(scope: &Scope, path: &str) -> PathBuf {
    match path.strip_prefix('~') {
        Some("") => scope.home.clone(),
        Some(rest) if rest.starts_with('/') => scope.home.join(rest.trim_start_matches('/')),
        _ => PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mayfly_core::Env;

    #[test]
    fn the_stored_token_and_the_named_ones_are_found_where_hf_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_owned();
        let scope = |pairs: &[(&str, &str)]| Scope {
            env: Env::from_pairs(pairs.iter().copied()),
            home: home.clone(),
            cwd: home.clone(),
        };
        assert_eq!(token_path(&scope(&[])), home.join(".cache/huggingface/token"));
        assert_eq!(token_path(&scope(&[("XDG_CACHE_HOME", "/x")])), PathBuf::from("/x/huggingface/token"));
        assert_eq!(token_path(&scope(&[("HF_HOME", "~/hf"), ("XDG_CACHE_HOME", "/x")])), home.join("hf/token"));
        assert_eq!(token_path(&scope(&[("HF_TOKEN_PATH", "/t"), ("HF_HOME", "/h")])), PathBuf::from("/t"));
        let hf = home.join(".cache/huggingface");
        std::fs::create_dir_all(&hf).unwrap();
        std::fs::write(hf.join("token"), "hf_example_one\n").unwrap();
        std::fs::write(hf.join("stored_tokens"), "[ci]\nhf_token = hf_example_two\n\n[empty]\nhf_token =\n").unwrap();
        let mut findings = Vec::new();
        check(&scope(&[]), None, &mut findings);
        let found: Vec<(&str, String)> = findings.iter().map(|f| (f.kind, f.location.clone())).collect();
        assert_eq!(
            found,
            [
                ("hf-token", hf.join("token").display().to_string()),
                ("hf-token", format!("{}: [ci] hf_token", hf.join("stored_tokens").display())),
            ]
        );
        assert!(findings[0].fix.contains("`hf upload` and `hf download` through the shim"), "{}", findings[0].fix);
    }
}
