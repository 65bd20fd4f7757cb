//! Hugging Face trusted publishers: a Hub repository trusts an issuer's ID tokens whose
//! claims match, and the Hub trades one for a token for that repository alone, valid one
//! hour, with no refresh.
//!
//! `POST https://huggingface.co/oauth/token` with JSON
//! `{"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
//! "subject_token_type": "urn:ietf:params:oauth:token-type:id_token", "subject_token",
//! "resource"}`; the ID token's audience is `https://huggingface.co`. `resource` is the
//! repository, `NS/NAME` for a model, `datasets/NS/NAME`, `spaces/NS/NAME` or
//! `kernels/NS/NAME`, or a user name for a read-only token for the user's gated
//! repositories. 200 `{"access_token": "hf_jwt_...", "token_type": "bearer",
//! "expires_in": 3600, "issued_token_type": ...}`; errors are 400 with an RFC 6749 body,
//! `invalid_request` or `invalid_grant` (huggingface/hub-docs `docs/hub/trusted-publishers.md`).

use serde_json::json;

use super::trusted_publishing::post;
use super::{Ask, Error, ExchangeResponse, ID_TOKEN_TYPE, Protocol, TOKEN_EXCHANGE_GRANT};
use crate::config::{ExchangeConfig, Scheme};
use crate::scope::ScopeTemplate;
use crate::{Tool, sanitize_for_terminal};

/// The Hub's token endpoint.
const ENDPOINT: &str = "https://huggingface.co/oauth/token";
/// The audience the Hub wants in ID tokens.
pub(crate) const AUDIENCE: &str = "https://huggingface.co";
/// The resource of a route when it names no scope: the repository git asks for.
const DEFAULT_SCOPE: &str = "{path}";
/// The repository kinds that prefix a resource; a model has none.
const REPO_KINDS: [&str; 3] = ["datasets", "spaces", "kernels"];

/// Hugging Face trusted publishers: a token for one Hub repository, for git.
pub(crate) struct HuggingFace;

impl Protocol for HuggingFace {
    fn name(&self) -> &'static str {
        "huggingface"
    }

    fn default_endpoint(&self) -> Option<&'static str> {
        Some(ENDPOINT)
    }

    fn serves(&self, tool: Tool) -> bool {
        tool == Tool::Git
    }

    fn fetches_subject_per_request(&self) -> bool {
        // Its audience is the Hub's, not the identity's own.
        true
    }

    fn default_audience(&self, _tool: Tool, _protocol: &str, _host: &str) -> String {
        String::new()
    }

    fn known_audience(&self, _config: &ExchangeConfig) -> Option<String> {
        Some(AUDIENCE.into())
    }

    fn default_scope(&self, _tool: Tool) -> Option<&'static str> {
        Some(DEFAULT_SCOPE)
    }

    fn check_scope(&self, template: &ScopeTemplate) -> Result<(), String> {
        match template.count() {
            1 => Ok(()),
            n => {
                Err(format!("a Hugging Face scope is one word, the repository or a user name, not {n} (`{template}`)"))
            }
        }
    }

    fn default_operations(&self) -> &'static [&'static str] {
        // A repository's publisher may push; a read-only one is refused by the Hub.
        &["read", "write"]
    }

    fn default_scheme(&self) -> Scheme {
        // git sends it as the password; the Hub ignores the user name.
        Scheme::Basic
    }

    fn request(&self, ask: &Ask<'_>) -> Result<ExchangeResponse, Error> {
        let resource = resource(ask.scope.as_str()).ok_or_else(|| Error::Denied {
            exchange: ask.config.name.clone(),
            code: "invalid scope".into(),
            description: Some(format!(
                "`{}` is not a Hub repository (NS/NAME, datasets/NS/NAME, spaces/NS/NAME) or a user name",
                sanitize_for_terminal(ask.scope.as_str())
            )),
        })?;
        let body = json!({
            "grant_type": TOKEN_EXCHANGE_GRANT,
            "subject_token_type": ID_TOKEN_TYPE,
            "subject_token": ask.subject.expose(),
            "resource": resource,
        });
        let (status, body) = post(ask.config, ask.http, &ask.config.token_endpoint, &|r| r.json(&body))?;
        super::rfc8693::parse(&ask.config.name, status, &body)
    }
}

/// The Hub's `resource` for a repository path as git names it (`acme/model.git`,
/// `datasets/acme/data`), or a user name; `None` for anything else.
pub(crate) fn resource(path: &str) -> Option<String> {
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    let named = |s: &&str| {
        !s.is_empty()
            && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !s.starts_with('.')
    };
    let fits = match segments.as_slice() {
        [user] => named(user),
        [ns, name] => !REPO_KINDS.contains(ns) && named(ns) && named(name),
        [kind, ns, name] => REPO_KINDS.contains(kind) && named(ns) && named(name),
        _ => false,
    };
    fits.then(|| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_paths_map_to_the_hubs_resources() {
        assert_eq!(resource("acme/model.git").as_deref(), Some("acme/model"));
        assert_eq!(resource("acme/model").as_deref(), Some("acme/model"));
        assert_eq!(resource("datasets/acme/data.git").as_deref(), Some("datasets/acme/data"));
        assert_eq!(resource("spaces/acme/demo").as_deref(), Some("spaces/acme/demo"));
        assert_eq!(resource("someone").as_deref(), Some("someone"));
        for bad in ["", "*", "a/b/c", "datasets/acme", "models/acme/x/y", "acme/../x", "acme/mo del"] {
            assert_eq!(resource(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_hubs_errors_become_one_line() {
        let body = br#"{"error":"invalid_grant","error_description":"No matching trusted publisher"}"#;
        let err = super::super::rfc8693::parse("hf", 400, body).unwrap_err().to_string();
        assert_eq!(err, "exchange `hf` refused: invalid_grant: No matching trusted publisher");
        let ok = br#"{"access_token":"hf_jwt_abc","token_type":"bearer","expires_in":3600,"issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}"#;
        let ok = super::super::rfc8693::parse("hf", 200, ok).unwrap();
        assert_eq!((ok.access_token.expose(), ok.expires_in), ("hf_jwt_abc", Some(3600)));
    }
}
